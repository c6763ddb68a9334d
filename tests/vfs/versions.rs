//! Which bytes a handle gets when the object changes in the store underneath it.

use std::time::Duration;

use alluxio::types::ROOT_INO;

use crate::harness::{Env, MIB, Options, Store, data};

/// An object replaced underneath, at the same size, while a handle has it open: the
/// handle never gets the new object's bytes as the old version's. Pages it has cached
/// answer with the old bytes; a page it must fetch fails with ESTALE. After
/// `load-metadata`, a new handle reads the new object.
#[test]
fn vfs_a_handle_never_reads_another_versions_bytes() {
    let env = Env::with(Options {
        store: Store::Dir,
        ..Default::default()
    });
    let (old, new) = (data(3 * MIB, 1), data(3 * MIB, 2));
    env.put_underneath("f", &old);
    let fh = env.open(env.ino("f"), false, false).unwrap();
    assert!(env.read(fh, 0, MIB).unwrap() == old[..MIB], "first page");
    // Replaced with other bytes of the same size a moment later, so that the mtime (and
    // with it the version) moves even on a file system with coarse timestamps.
    std::thread::sleep(Duration::from_millis(20));
    env.put_underneath("f", &new);
    assert!(
        env.read(fh, 0, MIB).unwrap() == old[..MIB],
        "a cached page of the open version"
    );
    assert_eq!(
        env.read(fh, 2 * MIB, MIB).map(|b| b == old[2 * MIB..]),
        Err(libc::ESTALE),
        "a page of the open version the store no longer has"
    );
    env.vfs.release(fh);
    env.rt.block_on(env.vfs.load_metadata("/f", false)).unwrap();
    let ino = env.rt.block_on(env.vfs.lookup(ROOT_INO, b"f")).unwrap().ino;
    let fh = env.open(ino, false, false).unwrap();
    assert!(
        env.read(fh, 2 * MIB, MIB).unwrap() == new[2 * MIB..],
        "the new object"
    );
}

/// Pages are keyed by (store, object key, version): a renamed file is a new key, so its
/// pages are read from the store again, never served from the old key's pages.
#[test]
fn vfs_a_renamed_file_is_read_from_the_store_again() {
    let env = Env::new();
    let body = data(2 * MIB, 3);
    env.put_underneath("f", &body);
    // Pages no tier held (each then read from a source; the store here).
    let misses = || {
        env.metrics
            .cache_misses
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert!(env.read_all(env.ino("f")).unwrap() == body);
    assert_eq!(misses(), 2, "a cold read");
    assert!(env.read_all(env.ino("f")).unwrap() == body);
    assert_eq!(misses(), 2, "a warm read is served from the cache");
    env.rt
        .block_on(env.vfs.rename(ROOT_INO, b"f", ROOT_INO, b"g", false, false))
        .unwrap();
    assert!(env.read_all(env.ino("g")).unwrap() == body);
    assert_eq!(
        misses(),
        4,
        "the renamed file's pages were not in the cache"
    );
}

/// The kernel may keep its page cache for a read-only open of the version it last opened
/// read-only (FOPEN_KEEP_CACHE); once it forgets the inode (FORGET), that cache is gone
/// with it and nothing about the inode is kept here, so the next open does not keep it.
/// A new version is never kept.
#[test]
fn vfs_the_kernel_cache_is_kept_for_the_same_version_until_the_kernel_forgets_the_inode() {
    let env = Env::with(Options {
        store: Store::Dir,
        ..Default::default()
    });
    env.put_underneath("f", &data(MIB, 1));
    let ino = env.ino("f");
    let open = || {
        let read_only = alluxio::vfs::OpenMode {
            write: false,
            truncate: false,
        };
        let (fh, keep) = env.rt.block_on(env.vfs.open(ino, read_only)).unwrap();
        env.vfs.release(fh);
        keep
    };
    assert!(!open(), "a first open has nothing to keep");
    assert!(open(), "the same version again");
    env.vfs.forget(ino);
    assert!(!open(), "after the kernel forgot the inode");
    assert!(open(), "remembered again");
    let fh = env.open(ino, true, true).unwrap();
    env.write(fh, 0, b"new").unwrap();
    env.close(fh).unwrap();
    assert!(!open(), "a new version");
}
