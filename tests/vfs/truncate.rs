//! When a size change reaches the store.

use std::sync::atomic::Ordering::Relaxed;

use alluxio::vfs::SetAttrRequest;

use crate::harness::{Env, MIB, data};

/// ftruncate(2) through a handle open for writing is committed with that handle's writes
/// (at its flush, fsync or close), as a write through it is: a file sized before it is
/// written (fio, databases, downloaders) is uploaded once, at close, not once at its new
/// size (holes and all) and again at close. truncate(2) with no such handle rewrites the
/// object at once.
#[test]
fn vfs_ftruncate_through_a_writer_is_committed_with_its_writes() {
    let env = Env::new();
    let old = data(MIB, 1);
    let ino = env.put("f", &old);
    let (writes, sent) = (
        || env.metrics.ufs_writes.load(Relaxed),
        || env.metrics.bytes_to_ufs.load(Relaxed),
    );
    let (w0, b0) = (writes(), sent());

    // Through the writer's handle: staged, not uploaded.
    let fh = env.open(ino, true, true).unwrap();
    let sized = SetAttrRequest {
        size: Some(3 * MIB as u64),
        fh: Some(fh),
        ..Default::default()
    };
    let rec = env.rt.block_on(env.vfs.setattr(ino, sized)).unwrap();
    assert_eq!(rec.size, 3 * MIB as u64, "the new size is seen at once");
    assert_eq!(
        (writes(), sent()),
        (w0, b0),
        "nothing uploaded by ftruncate"
    );
    assert!(env.rt.block_on(env.store.read("f")).unwrap().to_vec() == old);
    let new = data(3 * MIB, 2);
    env.write(fh, 0, &new).unwrap();
    env.close(fh).unwrap();
    assert_eq!(writes(), w0 + 1, "one upload, at close");
    assert_eq!(sent(), b0 + 3 * MIB as u64);
    assert!(env.rt.block_on(env.store.read("f")).unwrap().to_vec() == new);

    // truncate(2) by path (no handle): the object is rewritten before it returns.
    let by_path = SetAttrRequest {
        size: Some(1000),
        ..Default::default()
    };
    env.rt.block_on(env.vfs.setattr(ino, by_path)).unwrap();
    assert_eq!(writes(), w0 + 2);
    assert!(env.rt.block_on(env.store.read("f")).unwrap().to_vec() == new[..1000]);

    // A read-only handle does not defer it either.
    let ro = env.open(ino, false, false).unwrap();
    let through_reader = SetAttrRequest {
        size: Some(10),
        fh: Some(ro),
        ..Default::default()
    };
    env.rt
        .block_on(env.vfs.setattr(ino, through_reader))
        .unwrap();
    env.vfs.release(ro);
    assert!(env.rt.block_on(env.store.read("f")).unwrap().to_vec() == new[..10]);
}
