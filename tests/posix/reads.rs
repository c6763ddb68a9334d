//! Reads through the mount: every size edge around the 1 MiB page, cold then warm; the warm
//! pass must be served from the cache with zero UFS requests.

use crate::harness::{Backend, Mount, MountDirs, TestUfs, data, drop_kernel_cache, sha256};
use crate::{backend_tests, store_tests};

const MIB: usize = 1 << 20;
const SIZES: [usize; 6] = [0, 1, MIB - 1, MIB, MIB + 1, 33 * MIB];

fn populate(ufs: &TestUfs) -> Vec<(String, String)> {
    SIZES
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let name = format!("sizes/f{n}");
            let d = data(n, i as u64 + 1);
            ufs.put(&name, &d);
            (name, sha256(&d))
        })
        .collect()
}

/// Reads every file through the daemon (the kernel's cached pages dropped first).
fn read_all(m: &Mount, files: &[(String, String)]) {
    for (name, want) in files {
        drop_kernel_cache(&m.p(name));
        let got = std::fs::read(m.p(name)).unwrap();
        assert_eq!(&sha256(&got), want, "{name}");
    }
}

/// Mounts with passthrough off, so every read reaches the daemon's tiers.
fn mount_without_passthrough(ufs: &TestUfs, dirs: &MountDirs, mem_cache_bytes: u64) -> Mount {
    let fuse = alluxio::config::FuseConfig {
        passthrough: false,
        ..Default::default()
    };
    Mount::with_fuse(ufs.config(), dirs, mem_cache_bytes, fuse)
}

/// Cold then warm through the daemon (passthrough off): the warm pass comes from the
/// cache tiers with zero UFS requests.
fn fuse_read_sizes_cold_then_warm(b: Backend) {
    let ufs = TestUfs::new(b);
    let files = populate(&ufs);
    let dirs = MountDirs::new();
    let m = mount_without_passthrough(&ufs, &dirs, 256 << 20);
    read_all(&m, &files);
    let cold = m.counters();
    assert!(
        cold["ufs_reads"] > 0,
        "cold pass must read from the UFS: {cold:?}"
    );
    // Every byte once in pages, plus the first read of a large file, which is answered
    // by a GET of its own bytes (at most 256 KiB each).
    let pages = SIZES.iter().sum::<usize>() as u64;
    let first = cold["first_byte_reads"];
    assert!(
        (pages..=pages + first * (256 << 10)).contains(&cold["bytes_from_ufs"]),
        "{cold:?}"
    );
    read_all(&m, &files);
    let warm = m.counters();
    assert_eq!(
        warm["ufs_reads"], cold["ufs_reads"],
        "warm pass read the UFS: {warm:?}"
    );
    assert_eq!(
        warm["ufs_requests"], cold["ufs_requests"],
        "warm pass touched the UFS: {warm:?}"
    );
    assert_eq!(warm["cache_misses"], cold["cache_misses"], "{warm:?}");
    // Every byte of the warm pass came from the cache. At least once: the kernel may ask
    // again for a few pages its readahead raced on (seen once: 16 KiB extra of 36 MiB).
    assert!(
        warm["bytes_from_cache"] - cold["bytes_from_cache"] >= SIZES.iter().sum::<usize>() as u64,
        "{warm:?}"
    );
}

/// The disk tier alone serves a warm pass through the daemon: a memory tier far smaller
/// than the data, and no passthrough (which `fuse_passthrough_*` covers).
fn fuse_warm_from_disk_tier(b: Backend) {
    let ufs = TestUfs::new(b);
    let files = populate(&ufs);
    let dirs = MountDirs::new();
    let m = mount_without_passthrough(&ufs, &dirs, 2 << 20);
    read_all(&m, &files);
    let cold = m.counters();
    read_all(&m, &files);
    let warm = m.counters();
    assert_eq!(warm["ufs_requests"], cold["ufs_requests"], "{warm:?}");
    assert!(
        warm["cache_hits_disk"] > cold["cache_hits_disk"] + 20,
        "{warm:?}"
    );
    assert!(warm["mem_cache_bytes"] <= 2 << 20, "{warm:?}");
}

/// Inode numbers and cached pages survive a remount; the second mount reads nothing.
fn fuse_remount_keeps_inodes_and_pages(b: Backend) {
    use std::os::unix::fs::MetadataExt;
    let ufs = TestUfs::new(b);
    let files = populate(&ufs);
    let dirs = MountDirs::new();
    let inos: Vec<u64> = {
        let m = Mount::new(&ufs, &dirs);
        read_all(&m, &files);
        files
            .iter()
            .map(|(n, _)| std::fs::metadata(m.p(n)).unwrap().ino())
            .collect()
    };
    let m = Mount::new(&ufs, &dirs);
    let again: Vec<u64> = files
        .iter()
        .map(|(n, _)| std::fs::metadata(m.p(n)).unwrap().ino())
        .collect();
    assert_eq!(inos, again);
    let before = m.counter("ufs_reads");
    read_all(&m, &files);
    assert_eq!(m.counter("ufs_reads"), before, "{:?}", m.counters());
}

/// A cold file in a directory this mount never listed: its lookup asks for the file's own
/// key beside the listing (whichever answers first wins). Bytes are right either way, an
/// empty object included, and the listing still fills the directory.
fn fuse_a_cold_file_in_a_directory_never_listed(b: Backend) {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let ufs = TestUfs::new(b);
    let big = data(8 * MIB, 71);
    let small = data(1000, 72);
    ufs.put("cold/big", &big);
    ufs.put("cold/small", &small);
    ufs.put("cold/empty", b"");
    let dirs = MountDirs::new();
    let m = mount_without_passthrough(&ufs, &dirs, 64 << 20);
    let f = std::fs::File::open(m.p("cold/big")).unwrap();
    // No kernel readahead: the daemon sees the one 4 KiB read.
    // SAFETY: a valid descriptor; advice only.
    let advised = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    assert_eq!(advised, 0);
    let mut head = vec![0u8; 4096];
    f.read_exact_at(&mut head, 0).unwrap();
    assert!(head == big[..4096]);
    let mut got = Vec::new();
    std::fs::File::open(m.p("cold/small"))
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    assert!(got == small);
    assert_eq!(std::fs::read(m.p("cold/empty")).unwrap(), b"");
    let mut names: Vec<String> = std::fs::read_dir(m.p("cold"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["big", "empty", "small"]);
    drop_kernel_cache(&m.p("cold/big"));
    assert_eq!(
        sha256(&std::fs::read(m.p("cold/big")).unwrap()),
        sha256(&big)
    );
}

/// `Ufs::probe`, the lookup's question about one key, against the real server: the
/// object's size and the version a HEAD gives; nothing for a missing key or a prefix; on
/// S3 and Azure a ranged GET whose first bytes answer the reads that follow at that
/// version (no request of their own), never a read at another version.
fn ufs_probe_answers_like_a_head_and_keeps_the_first_bytes(b: Backend) {
    use std::sync::atomic::Ordering::Relaxed;
    let ufs = TestUfs::new(b);
    let big = data(8 * MIB, 73);
    let small = data(1000, 74);
    ufs.put("p/big", &big);
    ufs.put("p/small", &small);
    ufs.put("p/empty", b"");
    ufs.put("p/dir/x", b"x");
    let metrics = std::sync::Arc::new(alluxio::metrics::Metrics::default());
    let store = alluxio::ufs::Ufs::new(&ufs.config(), metrics.clone()).unwrap();
    // Workers that keep running between the calls: connections the HTTP client pools
    // (shared with the helpers' puts) are driven by the runtime that opened them.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let by_read = matches!(b, Backend::S3 | Backend::Azure);
    let info = rt.block_on(async {
        let info = store.probe("p/big").await.unwrap().expect("found");
        assert_eq!(info.size, big.len() as u64);
        assert_eq!(info.version, store.stat("p/big").await.unwrap().version);
        let reads = metrics.ufs_reads.load(Relaxed);
        let got = store
            .read_range("p/big", 0..4096, &info.version)
            .await
            .unwrap();
        assert!(got[..] == big[..4096]);
        let from_probe = u64::from(by_read);
        assert_eq!(metrics.probe_reads.load(Relaxed), from_probe);
        assert_eq!(metrics.ufs_reads.load(Relaxed), reads + 1 - from_probe);
        // Past what the probe kept: the store is asked.
        let got = store
            .read_range("p/big", 0..(1 << 20), &info.version)
            .await
            .unwrap();
        assert!(got[..] == big[..1 << 20]);
        assert_eq!(metrics.ufs_reads.load(Relaxed), reads + 2 - from_probe);
        let s = store.probe("p/small").await.unwrap().expect("found");
        assert_eq!(s.size, 1000);
        let got = store
            .read_range("p/small", 0..1000, &s.version)
            .await
            .unwrap();
        assert!(got[..] == small[..]);
        assert_eq!(
            store.probe("p/empty").await.unwrap().map(|i| i.size),
            Some(0)
        );
        assert_eq!(store.probe("p/nothing").await.unwrap(), None);
        assert_eq!(store.probe("p/dir").await.unwrap(), None);
        info
    });
    // The object replaced underneath: a read at the new version is never answered with
    // the bytes kept for the old one. (Of another size: WebDAV's ETag is inode, mtime in
    // seconds and size, so a same-size rewrite within the second keeps it.)
    let newer = data(8 * MIB + 1, 75);
    ufs.put("p/big", &newer);
    rt.block_on(async {
        let v2 = store.stat("p/big").await.unwrap().version;
        assert_ne!(v2, info.version);
        let hits = metrics.probe_reads.load(Relaxed);
        let got = store.read_range("p/big", 0..4096, &v2).await.unwrap();
        assert!(got[..] == newer[..4096]);
        assert_eq!(metrics.probe_reads.load(Relaxed), hits);
    });
}

backend_tests!(
    fuse_read_sizes_cold_then_warm,
    fuse_warm_from_disk_tier,
    fuse_remount_keeps_inodes_and_pages,
    fuse_a_cold_file_in_a_directory_never_listed,
    ufs_probe_answers_like_a_head_and_keeps_the_first_bytes
);
store_tests!(
    fuse_read_sizes_cold_then_warm,
    fuse_a_cold_file_in_a_directory_never_listed,
    ufs_probe_answers_like_a_head_and_keeps_the_first_bytes
);

/// Once loaded and cached, the tree is served while the UFS is gone entirely.
#[test]
fn fuse_warm_pass_with_ufs_unreachable() {
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("ufs");
    let moved = parent.path().join("ufs-away");
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    let d1 = data(3 * MIB + 17, 9);
    let d2 = data(1000, 10);
    std::fs::write(root.join("a/one"), &d1).unwrap();
    std::fs::write(root.join("a/b/two"), &d2).unwrap();
    let dirs = MountDirs::new();
    let cfg =
        alluxio::config::UfsConfig::parse(root.to_str().unwrap(), &Default::default()).unwrap();
    let m = Mount::with(cfg, &dirs, 64 << 20);
    assert_eq!(std::fs::read(m.p("a/one")).unwrap(), d1);
    assert_eq!(std::fs::read(m.p("a/b/two")).unwrap(), d2);
    std::fs::rename(&root, &moved).unwrap();
    let before = m.counter("ufs_requests");
    assert_eq!(std::fs::read(m.p("a/one")).unwrap(), d1);
    assert_eq!(std::fs::read(m.p("a/b/two")).unwrap(), d2);
    let names: Vec<_> = std::fs::read_dir(m.p("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2);
    assert_eq!(m.counter("ufs_requests"), before);
    std::fs::rename(&moved, &root).unwrap();
}

/// The mount's kernel readahead is raised to the configured 1 MiB (default 128 KiB).
#[test]
fn fuse_kernel_readahead_is_raised() {
    let ufs = TestUfs::new(Backend::Fs);
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);
    let want = m.path.to_string_lossy().to_string();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dev = mountinfo
        .lines()
        .rev()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[4] == want).then(|| f[2].to_string())
        })
        .unwrap();
    let ra = std::fs::read_to_string(format!("/sys/class/bdi/{dev}/read_ahead_kb")).unwrap();
    assert_eq!(ra.trim(), "1024");
}

/// An unchanged file reopened read-only keeps the kernel's page cache (FOPEN_KEEP_CACHE):
/// the warm pass never reaches the daemon. A write in between invalidates it.
#[test]
fn fuse_keep_cache_while_the_version_is_unchanged() {
    let ufs = TestUfs::new(Backend::Fs);
    let d = data(3 * MIB, 4);
    ufs.put("f", &d);
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);
    assert_eq!(std::fs::read(m.p("f")).unwrap(), d);
    let (from_cache, from_ufs) = (m.counter("bytes_from_cache"), m.counter("bytes_from_ufs"));
    for _ in 0..3 {
        assert_eq!(std::fs::read(m.p("f")).unwrap(), d);
    }
    // Served by the kernel's page cache: no byte came from the daemon's tiers or the UFS.
    assert_eq!(
        m.counter("bytes_from_cache"),
        from_cache,
        "{:?}",
        m.counters()
    );
    assert_eq!(m.counter("bytes_from_ufs"), from_ufs, "{:?}", m.counters());
    // A write through the mount changes the version: the next open must not serve stale
    // pages.
    std::fs::write(m.p("f"), b"new content").unwrap();
    assert_eq!(std::fs::read(m.p("f")).unwrap(), b"new content");
    assert_eq!(std::fs::read(m.p("f")).unwrap(), b"new content");
}

/// A file whose whole version is on the disk tier is opened with FUSE passthrough: the
/// kernel reads the cache's data file and no read reaches the daemon, for every size edge.
/// While a passthrough reader holds a file, writers and truncation get ETXTBSY (the
/// kernel allows no other open mode then); after its close they work and the next open
/// sees the new content.
#[test]
fn fuse_passthrough_serves_fully_cached_files() {
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    let ufs = TestUfs::new(Backend::Fs);
    let files = populate(&ufs);
    let d = data(5 * MIB + 7, 9);
    ufs.put("f", &d);
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);
    read_all(&m, &files);
    assert_eq!(std::fs::read(m.p("f")).unwrap(), d, "cold read");
    // RELEASE reaches the daemon after close(2) returns; an open racing it would be
    // page-cached (the kernel's mode rules), so let the cold pass's releases land.
    crate::harness::wait_for("the cold pass's handles were never released", || {
        m.counter("open_file_handles") == 0
    });
    let cold = m.counters();
    read_all(&m, &files);
    let warm = m.counters();
    assert_eq!(warm["ufs_requests"], cold["ufs_requests"], "{warm:?}");
    assert_eq!(
        warm["bytes_from_cache"], cold["bytes_from_cache"],
        "{warm:?}"
    );
    let nonempty = SIZES.iter().filter(|s| **s > 0).count() as u64;
    // Each file was passed through at least once (no byte came from the daemon, above).
    // read_all opens every file twice; the second open shares the first's backing file
    // when its RELEASE has not reached us yet, and then counts no new passthrough open.
    let opened = warm["passthrough_opens"] - cold["passthrough_opens"];
    assert!((nonempty..=2 * nonempty).contains(&opened), "{warm:?}");
    drop_kernel_cache(&m.p("f"));
    let from_cache = m.counter("bytes_from_cache");
    let mut reader = std::fs::File::open(m.p("f")).unwrap();
    let mut got = Vec::new();
    reader.read_to_end(&mut got).unwrap();
    assert!(got == d, "passthrough read differs");
    for off in [0u64, 4095, MIB as u64 - 3, 5 * MIB as u64] {
        let mut b = [0u8; 10];
        let n = reader.read_at(&mut b, off).unwrap();
        assert_eq!(&b[..n], &d[off as usize..(off as usize + 10).min(d.len())]);
    }
    let opens = m.counter("passthrough_opens");
    assert_eq!(std::fs::read(m.p("f")).unwrap(), d, "a second reader");
    assert_eq!(
        m.counter("passthrough_opens"),
        opens,
        "shares the backing file"
    );
    assert_eq!(
        m.counter("bytes_from_cache"),
        from_cache,
        "{:?}",
        m.counters()
    );
    // O_DIRECT on a passthrough file is a direct read of the cache's data file, under that
    // filesystem's rules: aligned reads work anywhere; an unaligned one gets EINVAL where
    // the filesystem demands alignment (ext4, xfs), as on a local disk, not on tmpfs.
    {
        use std::os::unix::fs::OpenOptionsExt;
        let direct = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(m.p("f"))
            .unwrap();
        let mut buf = vec![0u8; 3 * 4096];
        let at = buf.as_ptr().align_offset(4096);
        let n = direct.read_at(&mut buf[at..at + 4096], 4096).unwrap();
        assert!(buf[at..at + n] == d[4096..4096 + n], "aligned direct read");
        let unaligned = direct.read_at(&mut buf[at + 1..at + 1 + 4096], 4096);
        let tmpfs = nix::sys::statfs::statfs(&dirs.cache_dir())
            .unwrap()
            .filesystem_type()
            == nix::sys::statfs::TMPFS_MAGIC;
        match unaligned {
            Ok(n) => assert!(tmpfs && buf[at + 1..at + 1 + n] == d[4096..4096 + n]),
            Err(e) => assert!(!tmpfs && e.raw_os_error() == Some(libc::EINVAL), "{e}"),
        }
    }
    let busy = std::fs::OpenOptions::new().write(true).open(m.p("f"));
    assert_eq!(busy.unwrap_err().raw_os_error(), Some(libc::ETXTBSY));
    let t = std::fs::File::options()
        .read(true)
        .open(m.p("f"))
        .unwrap()
        .set_len(1);
    assert!(t.is_err(), "a read-only descriptor cannot truncate");
    let c = std::ffi::CString::new(m.p("f").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let r = unsafe { libc::truncate(c.as_ptr(), 1) };
    assert_eq!(r, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ETXTBSY)
    );
    drop(reader);
    std::fs::write(m.p("f"), b"new content").unwrap();
    assert_eq!(ufs.get("f").unwrap(), b"new content");
    assert_eq!(std::fs::read(m.p("f")).unwrap(), b"new content");
}

/// Reads `f` to its end with `read` calls of `chunk` bytes.
fn read_in_chunks(mut f: std::fs::File, chunk: usize) -> Vec<u8> {
    use std::io::Read;
    let mut got = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return got;
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// A cold sequential reader keeps a growing read-ahead window in flight: nearly every page
/// is fetched ahead of it, each exactly once, and the bytes are right.
#[test]
fn fuse_sequential_read_ahead_window() {
    let ufs = TestUfs::new(Backend::Fs);
    let d = data(64 * MIB, 21);
    ufs.put("big", &d);
    let dirs = MountDirs::new();
    let m = mount_without_passthrough(&ufs, &dirs, 256 << 20);
    let got = read_in_chunks(std::fs::File::open(m.p("big")).unwrap(), MIB);
    assert!(got == d, "sequential read differs");
    let c = m.counters();
    // Read-ahead asks for runs of pages in one GET each: every byte once, in far fewer
    // requests than pages.
    assert_eq!(
        c["bytes_from_ufs"],
        64 * MIB as u64,
        "each page fetched once: {c:?}"
    );
    assert!(c["ufs_reads"] <= 24, "runs of pages per GET: {c:?}");
    assert!(c["prefetch_pages"] >= 48, "the window ran ahead: {c:?}");
}

/// `prefetch_gets` bounds read-ahead GETs: with one slot, read-ahead queues for it (and
/// the reader still gets every byte, each page fetched once); with plenty, none waits.
#[test]
fn fuse_prefetch_gets_bounds_read_ahead() {
    let ufs = TestUfs::new(Backend::Fs);
    let d = data(32 * MIB, 23);
    ufs.put("f", &d);
    for (gets, waits) in [(1, true), (1024, false)] {
        let dirs = MountDirs::new();
        let fuse = alluxio::config::FuseConfig {
            passthrough: false,
            ..Default::default()
        };
        // A first window of several runs, sent at once: with one GET slot all but one
        // wait for it.
        let m = Mount::with_config(ufs.config(), &dirs, 256 << 20, fuse, |c| {
            c.prefetch_gets = gets;
            c.prefetch_pages = 16;
            c.inflight_pages = 64;
        });
        let got = read_in_chunks(std::fs::File::open(m.p("f")).unwrap(), MIB);
        assert!(got == d, "prefetch_gets={gets}: bytes differ");
        let c = m.counters();
        assert_eq!(
            c["bytes_from_ufs"],
            32 * MIB as u64,
            "each page once: {c:?}"
        );
        assert!(c["prefetch_pages"] >= 16, "read-ahead ran: {c:?}");
        assert_eq!(
            c["prefetch_waits"] > 0,
            waits,
            "prefetch_gets={gets}: {c:?}"
        );
    }
}

/// A sequential scan does not fill the memory tier: a read-ahead page read whole once
/// leaves memory (it stays on disk, and a second pass is served from there, right and
/// without the UFS). Pages read in parts stay in memory, since their rest is read next.
#[test]
fn fuse_sequential_scan_bypasses_memory_tier() {
    use std::os::unix::fs::OpenOptionsExt;
    let ufs = TestUfs::new(Backend::Fs);
    let d = data(64 * MIB, 22);
    ufs.put("scan", &d);
    ufs.put("parts", &d);
    let dirs = MountDirs::new();
    let m = mount_without_passthrough(&ufs, &dirs, 256 << 20);
    let read = |name: &str, chunk: usize, direct: bool| {
        let mut o = std::fs::OpenOptions::new();
        o.read(true);
        if direct {
            // Straight to the daemon, in requests of at most half a page here.
            o.custom_flags(libc::O_DIRECT);
        }
        let got = read_in_chunks(o.open(m.p(name)).unwrap(), chunk);
        assert!(got == d, "{name}: bytes differ");
    };
    read("scan", MIB, false);
    let c = m.counters();
    assert!(
        c["readahead_released"] >= 48,
        "scan pages left memory: {c:?}"
    );
    assert!(
        c["mem_cache_bytes"] <= 16 * MIB as u64,
        "memory tier holds little of a 64 MiB scan: {c:?}"
    );
    // Second pass, kernel cache dropped: every byte from the disk tier.
    drop_kernel_cache(&m.p("scan"));
    read("scan", MIB, false);
    let c2 = m.counters();
    assert_eq!(
        c2["ufs_reads"], c["ufs_reads"],
        "no page fetched twice: {c2:?}"
    );
    assert_eq!(
        c2["bytes_from_ufs"],
        64 * MIB as u64,
        "no page fetched twice: {c2:?}"
    );
    assert!(
        c2["cache_hits_disk"] >= 48,
        "second pass served from disk: {c2:?}"
    );
    // O_DIRECT reads of the first half of every page: each read-ahead page is only partly
    // read, so it stays in memory ...
    let halves = |first: bool| {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(m.p("parts"))
            .unwrap();
        // FUSE takes O_DIRECT buffers at any alignment.
        let mut buf = vec![0u8; MIB / 2];
        for p in 0..64 {
            let off = p * MIB + if first { 0 } else { MIB / 2 };
            f.read_exact_at(&mut buf, off as u64).unwrap();
            assert!(buf[..] == d[off..off + MIB / 2], "parts: page {p} differs");
        }
    };
    halves(true);
    let c3 = m.counters();
    assert!(
        c3["readahead_released"] <= c2["readahead_released"] + 2,
        "pages read in part stay: {c3:?}"
    );
    assert!(
        c3["mem_cache_bytes"] >= c2["mem_cache_bytes"] + 48 * MIB as u64,
        "pages read in part are in memory: {c3:?}"
    );
    // ... and leaves it once its other half has been read too.
    halves(false);
    let c4 = m.counters();
    assert!(
        c4["readahead_released"] >= c3["readahead_released"] + 48,
        "pages read in two halves left memory: {c4:?}"
    );
    assert_eq!(
        c4["bytes_from_ufs"],
        128 * MIB as u64,
        "each page fetched once: {c4:?}"
    );
}

/// A disk tier much smaller than the files read through it, with several readers at once:
/// evictions race page writes of the same files all the time. Every read is right, no
/// page fails its checksum, and the tier never switches itself off (it did: an eviction
/// deleted a file's log under a page write, whose ENOENT looked like a disk failure).
#[test]
fn fuse_a_small_disk_tier_under_parallel_readers() {
    let ufs = TestUfs::new(Backend::Fs);
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("f{i}"), data(16 * MIB, 40 + i as u64)))
        .collect();
    for (n, d) in &files {
        ufs.put(n, d);
    }
    let dirs = MountDirs::new();
    let m = Mount::with_config(
        ufs.config(),
        &dirs,
        4 << 20,
        alluxio::config::FuseConfig {
            passthrough: false,
            ..Default::default()
        },
        |c| c.disk_cache_bytes = 4 << 20,
    );
    for round in 0..4 {
        std::thread::scope(|s| {
            for (n, d) in &files {
                let p = m.p(n);
                s.spawn(move || {
                    drop_kernel_cache(&p);
                    assert_eq!(
                        sha256(&std::fs::read(&p).unwrap()),
                        sha256(d),
                        "{n} round {round}"
                    );
                });
            }
        });
    }
    let c = m.counters();
    assert_eq!(c["disk_cache_failed"], 0, "{c:?}");
    assert_eq!(c["disk_cache_corrupt"], 0, "{c:?}");
    assert!(
        c["disk_cache_evictions"] > 0,
        "the tier was too small not to evict: {c:?}"
    );
}
