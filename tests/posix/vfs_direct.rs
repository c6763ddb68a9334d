//! The vfs driven directly, with no kernel and no mount: what the kernel does not decide
//! (which bytes a handle gets when the object changes or the store stalls) is checked at
//! the vfs itself, with the fault injected where it happens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alluxio::config::{MetadataSync, WriteType};
use alluxio::meta::embedded::EmbeddedMeta;
use alluxio::metrics::Metrics;
use alluxio::page_cache::{PageCache, PageCacheConfig};
use alluxio::types::{InodeNo, Ownership, ROOT_INO};
use alluxio::ufs::Ufs;
use alluxio::vfs::{OpenMode, Vfs, VfsConfig};
use alluxio_metaserver::{MemoryStore, Namespace};

use crate::harness::{Backend, StallProxy, TestUfs, data};

const MIB: usize = 1 << 20;

/// A vfs over `ufs` with an in-memory namespace and a memory-only page cache.
struct Direct {
    vfs: Arc<Vfs>,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Direct {
    fn new(cfg: alluxio::config::UfsConfig, timeout: Duration) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let mut ufs = Ufs::new(&cfg, metrics.clone()).unwrap();
        ufs.set_timeout(timeout);
        let own = Ownership {
            uid: 0,
            gid: 0,
            file_mode: 0o644,
            dir_mode: 0o755,
        };
        let ns = Namespace::open(MemoryStore::new(), own, 1).unwrap();
        let meta = EmbeddedMeta::new(ns, rt.handle().clone());
        let cache = PageCache::new(
            &PageCacheConfig {
                mem_bytes: 64 << 20,
                disk_bytes: 0,
                disk_dir: dir.path().join("pages"),
                io_engine: Default::default(),
                disk_free_ratio: 0.0,
            },
            metrics.clone(),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("staging")).unwrap();
        let vfs = Vfs::new(
            Arc::new(meta),
            Arc::new(ufs),
            Arc::new(cache),
            metrics,
            VfsConfig {
                ownership: own,
                // No read-ahead: each read fetches only what it asks for.
                prefetch_pages: 0,
                prefetch_gets: 1,
                inflight_pages: 16,
                staging_dir: dir.path().join("staging"),
                read_only: false,
                write_type: WriteType::CacheThrough,
                journal_dir: dir.path().join("journal"),
                upload_delay: Duration::ZERO,
                metadata_sync: MetadataSync::default(),
            },
            rt.handle().clone(),
        )
        .unwrap();
        Self { vfs, rt, _dir: dir }
    }

    fn ino(&self, name: &str) -> InodeNo {
        self.rt
            .block_on(self.vfs.lookup(ROOT_INO, name.as_bytes()))
            .unwrap()
            .ino
    }

    /// Reads `len` bytes at `off` through handle `fh`: the bytes, or the errno.
    fn read(&self, fh: alluxio::types::FileHandle, off: usize, len: usize) -> Result<Vec<u8>, i32> {
        self.rt
            .block_on(self.vfs.read(fh, off as u64, len as u32))
            .map(|b| b.to_vec())
            .map_err(|e| e.errno())
    }

    fn open(&self, ino: InodeNo) -> alluxio::types::FileHandle {
        self.rt
            .block_on(self.vfs.open(ino, OpenMode::default()))
            .unwrap()
            .0
    }
}

/// An object replaced underneath, at the same size, while a handle has it open: the
/// handle never gets the new object's bytes as the old version's. Pages it has cached
/// answer with the old bytes; a page it must fetch fails with ESTALE. After
/// `load-metadata`, a new handle reads the new object.
#[test]
fn vfs_a_handle_never_reads_another_versions_bytes() {
    let ufs = TestUfs::new(Backend::Fs);
    let (old, new) = (data(3 * MIB, 1), data(3 * MIB, 2));
    ufs.put("f", &old);
    let d = Direct::new(ufs.config(), Duration::from_secs(5));
    let ino = d.ino("f");
    let fh = d.open(ino);
    assert!(d.read(fh, 0, MIB).unwrap() == old[..MIB], "first page");
    // Replaced with other bytes of the same size, a moment later (a new mtime).
    std::thread::sleep(Duration::from_millis(20));
    ufs.put("f", &new);
    assert!(
        d.read(fh, 0, MIB).unwrap() == old[..MIB],
        "a cached page of the open version"
    );
    assert_eq!(
        d.read(fh, 2 * MIB, MIB).map(|b| b == old[2 * MIB..]),
        Err(libc::ESTALE),
        "a page of the open version the store no longer has"
    );
    d.vfs.release(fh);
    d.rt.block_on(d.vfs.load_metadata("/f", false)).unwrap();
    let fh = d.open(d.ino("f"));
    assert!(
        d.read(fh, 2 * MIB, MIB).unwrap() == new[2 * MIB..],
        "the new object"
    );
}

/// A store that stops answering in the middle of a read: the read fails with EIO within
/// `ufs_timeout`, not later and never with wrong bytes; once the store answers again the
/// same handle reads the right bytes, with no remount.
#[test]
fn vfs_a_stalled_store_gives_eio_in_bounded_time_and_recovers() {
    let ufs = TestUfs::new(Backend::S3);
    let body = data(2 * MIB + 7, 3);
    ufs.put("f", &body);
    let proxy = StallProxy::new(ufs.endpoint());
    let d = Direct::new(ufs.config_via(&proxy.endpoint()), Duration::from_secs(2));
    let fh = d.open(d.ino("f"));
    assert!(d.read(fh, 0, MIB).unwrap() == body[..MIB]);
    proxy.pause();
    let t = Instant::now();
    let r = d.read(fh, MIB, MIB);
    let took = t.elapsed();
    assert_eq!(r.map(|_| ()), Err(libc::EIO));
    assert!(took < Duration::from_secs(10), "EIO after {took:?}");
    proxy.resume();
    // Past the 2 s in which a failed page answers with the same EIO.
    std::thread::sleep(Duration::from_millis(2100));
    assert!(
        d.read(fh, MIB, MIB).unwrap() == body[MIB..2 * MIB],
        "recovered"
    );
}
