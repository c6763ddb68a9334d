//! Metadata sync: objects changed in the store by other tools show up after
//! `load-metadata` (the control request `alluxio fs load-metadata` sends) or by the
//! `metadata_sync` policy, whole and new; an open handle keeps reading its old version or
//! gets ESTALE, never a mix.

use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

use alluxio::config::{FuseConfig, MetadataSync};

use crate::harness::{Backend, Mount, MountDirs, TestUfs, data};
use crate::{backend_tests, store_tests};

const MIB: usize = 1 << 20;

/// Reads `path` until it equals `want` (the kernel may keep the old size for its 1 s
/// attribute TTL); panics after 5 s.
fn read_until(path: &std::path::Path, want: &[u8]) {
    let t0 = Instant::now();
    loop {
        let got = std::fs::read(path).unwrap();
        if got == want {
            return;
        }
        assert!(
            got.len() == want.len() || t0.elapsed() < Duration::from_secs(5),
            "still {} bytes, want {}",
            got.len(),
            want.len()
        );
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "content never became new"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn fuse_overwrite_underneath_is_read_new_after_load_metadata(b: Backend) {
    let ufs = TestUfs::new(b);
    let old = data(5 * MIB / 2, 1);
    let new = data(7 * MIB / 2 + 11, 2);
    ufs.put("d/obj", &old);
    ufs.put("d/held", &data(4 * MIB, 3));
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);
    assert_eq!(std::fs::read(m.p("d/obj")).unwrap(), old);

    // A handle that has read only its first page of "held".
    let held_old = data(4 * MIB, 3);
    let mut h = std::fs::File::open(m.p("d/held")).unwrap();
    let mut first = vec![0u8; 4096];
    h.read_exact(&mut first).unwrap();
    assert_eq!(first, held_old[..4096]);

    ufs.put("d/obj", &new);
    ufs.put("d/held", &data(4 * MIB, 4));
    ufs.put("d/added", b"added by another tool");
    // Policy `never`: the namespace keeps what it listed (and the cache its pages).
    assert_eq!(std::fs::read(m.p("d/obj")).unwrap(), old);

    let v = m.control(&serde_json::json!({"op": "load-metadata", "path": "d/obj"}));
    assert_eq!(v["listed"], 1, "{v}");
    read_until(&m.p("d/obj"), &new);
    assert_eq!(
        std::fs::read(m.p("d/added")).unwrap(),
        b"added by another tool"
    );

    // The old handle: its version's bytes (cached or prefetched) or ESTALE, never new ones.
    h.seek(SeekFrom::Start(3 * MIB as u64)).unwrap();
    let mut rest = vec![0u8; MIB];
    match h.read_exact(&mut rest) {
        Ok(()) => assert_eq!(rest, held_old[3 * MIB..], "old handle read another version"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{e}"),
    }

    // A path that does not exist, and a recursive load from the root.
    let v = m.control(&serde_json::json!({"op": "load-metadata", "path": "nope/x"}));
    assert_eq!(v["errno"], libc::ENOENT, "{v}");
    let v = m.control(&serde_json::json!({"op": "load-metadata", "path": "", "recursive": true}));
    assert_eq!(v["listed"], 2, "root and d: {v}");
}

backend_tests!(fuse_overwrite_underneath_is_read_new_after_load_metadata);
store_tests!(fuse_overwrite_underneath_is_read_new_after_load_metadata);

#[test]
fn fuse_s3_metadata_sync_interval_picks_up_changes() {
    let ufs = TestUfs::new(Backend::S3);
    let old = data(MIB + 5, 5);
    let new = data(2 * MIB + 7, 6);
    ufs.put("obj", &old);
    let dirs = MountDirs::new();
    let sync = MetadataSync::Every(Duration::from_millis(200));
    let m = Mount::with_config(ufs.config(), &dirs, 64 << 20, FuseConfig::default(), |c| {
        c.metadata_sync = sync
    });
    assert_eq!(std::fs::read(m.p("obj")).unwrap(), old);
    ufs.put("obj", &new);
    ufs.put("later", b"x");
    // The next lookup after the kernel's entry TTL (1 s) and the 200 ms interval lists
    // the root again.
    read_until(&m.p("obj"), &new);
    assert!(m.p("later").exists());
}
