//! Writes through the mount land as ordinary objects at their paths, byte for byte, before
//! close returns (CACHE_THROUGH), and namespace operations reach the UFS.

use std::io::Write;

use crate::harness::{Backend, Mount, MountDirs, TestUfs, Tmpfs, data, wait_for};
use crate::{backend_tests, store_tests};

fn fuse_write_then_read_back(b: Backend) {
    let ufs = TestUfs::new(b);
    ufs.put("existing", b"old content that is longer");
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);

    // A new file, written in odd-sized chunks across page boundaries.
    let d = data((5 << 20) / 2 + 3, 42);
    {
        let mut f = std::fs::File::create(m.p("new.bin")).unwrap();
        for c in d.chunks(77_777) {
            f.write_all(c).unwrap();
        }
    }
    assert_eq!(
        ufs.get("new.bin").as_deref(),
        Some(&d[..]),
        "object in the UFS after close"
    );
    assert_eq!(std::fs::read(m.p("new.bin")).unwrap(), d);
    assert_eq!(
        std::fs::metadata(m.p("new.bin")).unwrap().len(),
        d.len() as u64
    );

    // An empty file is an empty object.
    std::fs::File::create(m.p("empty")).unwrap();
    assert_eq!(ufs.get("empty").as_deref(), Some(&b""[..]));

    // Overwrite (O_TRUNC) of an object written by another tool.
    std::fs::write(m.p("existing"), b"new").unwrap();
    assert_eq!(ufs.get("existing").as_deref(), Some(&b"new"[..]));
    assert_eq!(std::fs::read(m.p("existing")).unwrap(), b"new");

    // Append to an existing object.
    {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(m.p("existing"))
            .unwrap();
        f.write_all(b"+more").unwrap();
    }
    assert_eq!(ufs.get("existing").as_deref(), Some(&b"new+more"[..]));

    // Truncate to a smaller size.
    std::fs::OpenOptions::new()
        .write(true)
        .open(m.p("new.bin"))
        .unwrap()
        .set_len(10)
        .unwrap();
    assert_eq!(ufs.get("new.bin").as_deref(), Some(&d[..10]));
    assert_eq!(std::fs::read(m.p("new.bin")).unwrap(), &d[..10]);

    // Written pages stay cached: reading back costs no UFS read.
    let reads = m.counter("ufs_reads");
    assert_eq!(std::fs::read(m.p("existing")).unwrap(), b"new+more");
    assert_eq!(m.counter("ufs_reads"), reads);
}

/// A file read right after it was written never waits on the store: while its pages are
/// being copied into the disk tier after close, a miss reads them from the file it was
/// written from. The tier here is smaller than the file, so it cannot adopt it whole and
/// copies it page by page, front to back; the last pages, read first and past the kernel's
/// page cache, are not in the tier yet. Read either way (the local file, or the tier once
/// the copy got there), no byte comes from the store.
fn fuse_files_read_right_after_writing_come_from_the_local_copy(b: Backend) {
    use alluxio::config::FuseConfig;
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const MIB: usize = 1 << 20;
    let ufs = TestUfs::new(b);
    let dirs = MountDirs::new();
    let m = Mount::with_config(ufs.config(), &dirs, 64 << 20, FuseConfig::default(), |c| {
        c.disk_cache_bytes = 32 << 20;
        if b == Backend::Gcs {
            // The GCS emulator has no XML API, so no multipart upload (501): one part.
            c.upload.part_bytes = 128 << 20;
        }
    });
    let d = data(64 * MIB + 123, 9);
    std::fs::write(m.p("ckpt"), &d).unwrap();
    let reads = m.counter("ufs_reads");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(m.p("ckpt"))
        .unwrap();
    let from = 61 * MIB;
    let mut back = vec![0u8; d.len() - from];
    for off in (from..d.len()).step_by(MIB).rev() {
        let end = d.len().min(off + MIB);
        f.read_exact_at(&mut back[off - from..end - from], off as u64)
            .unwrap();
    }
    assert!(back == d[from..], "bytes differ");
    assert_eq!(m.counter("ufs_reads"), reads, "no read reached the store");
    assert_eq!(m.counter("disk_cache_adopted"), 0, "too big to adopt");
    assert_eq!(ufs.get("ckpt").as_deref(), Some(&d[..]));
}

fn fuse_namespace_ops_reach_the_ufs(b: Backend) {
    let ufs = TestUfs::new(b);
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);

    std::fs::create_dir(m.p("d")).unwrap();
    assert!(ufs.dir_exists("d"));
    std::fs::create_dir_all(m.p("d/e/f")).unwrap();
    std::fs::write(m.p("d/e/f/x"), b"xx").unwrap();
    assert_eq!(ufs.get("d/e/f/x").as_deref(), Some(&b"xx"[..]));

    // rename of a file, also across directories and over an existing file.
    std::fs::rename(m.p("d/e/f/x"), m.p("d/y")).unwrap();
    assert_eq!(ufs.get("d/e/f/x"), None);
    assert_eq!(ufs.get("d/y").as_deref(), Some(&b"xx"[..]));
    std::fs::write(m.p("d/z"), b"zz").unwrap();
    std::fs::rename(m.p("d/z"), m.p("d/y")).unwrap();
    assert_eq!(ufs.get("d/y").as_deref(), Some(&b"zz"[..]));
    assert_eq!(ufs.get("d/z"), None);
    assert_eq!(std::fs::read(m.p("d/y")).unwrap(), b"zz");
    assert!(std::fs::metadata(m.p("d/z")).is_err());

    // rmdir of a non-empty directory fails; of an empty one succeeds.
    let e = std::fs::remove_dir(m.p("d/e")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY));
    std::fs::remove_dir(m.p("d/e/f")).unwrap();
    std::fs::remove_dir(m.p("d/e")).unwrap();
    assert!(!ufs.dir_exists("d/e"));

    // unlink.
    std::fs::remove_file(m.p("d/y")).unwrap();
    assert_eq!(ufs.get("d/y"), None);
    assert!(std::fs::metadata(m.p("d/y")).is_err());
    std::fs::remove_dir(m.p("d")).unwrap();
    assert_eq!(std::fs::read_dir(&m.path).unwrap().count(), 0);
}

/// A write to a file opened without O_TRUNC starts from its old content, but old pages
/// are copied into staging only when their bytes are still needed: a rewrite from the
/// start (fio's preallocate-close-reopen-write) copies nothing, a small patch copies one
/// page, and reads, truncates, renames (of the file or its directory), unlinks and appends
/// of a partly rewritten file still see every old byte where it belongs.
fn fuse_rewrites_copy_in_only_the_old_pages_they_need(b: Backend) {
    use std::os::unix::fs::FileExt;
    const MIB: usize = 1 << 20;
    let ufs = TestUfs::new(b);
    let old = data(5 * MIB + 1234, 1);
    ufs.put("f", &old);
    ufs.put("q", &data(2 * MIB, 5));
    let under = data(3 * MIB, 9);
    ufs.put("d/h", &under);
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);
    let copied = || m.counter("staging_copied_pages");
    let rw = |name: &str| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.p(name))
            .unwrap()
    };

    // A whole rewrite in page-sized writes, the last one short like the old tail.
    let new = data(old.len(), 2);
    let c0 = copied();
    {
        let f = rw("f");
        for (i, c) in new.chunks(MIB).enumerate() {
            f.write_all_at(c, (i * MIB) as u64).unwrap();
        }
    }
    assert_eq!(copied() - c0, 0, "a whole rewrite copies no old page");
    assert_eq!(ufs.get("f").as_deref(), Some(&new[..]));

    // A patch inside one page copies that page only; the commit at close then needs
    // all the others (it uploads the staging file whole).
    let mut want = new.clone();
    let c0 = copied();
    {
        let f = rw("f");
        f.write_all_at(b"patch", (3 * MIB + 100) as u64).unwrap();
        assert_eq!(copied() - c0, 1, "a patch copies the page it lands in");
    }
    want[3 * MIB + 100..3 * MIB + 105].copy_from_slice(b"patch");
    assert_eq!(copied() - c0, 6, "the commit copies in the rest");
    assert_eq!(ufs.get("f").as_deref(), Some(&want[..]));
    assert_eq!(std::fs::read(m.p("f")).unwrap(), want);

    // Through one descriptor: a whole page written, old bytes read back from a page not
    // copied yet, a cut inside a page, an extension (zeros), then the commit.
    {
        let f = rw("f");
        let page1 = data(MIB, 3);
        f.write_all_at(&page1, MIB as u64).unwrap();
        want[MIB..2 * MIB].copy_from_slice(&page1);
        let (mut got, c0) = (vec![0u8; 300], copied());
        f.read_exact_at(&mut got, (4 * MIB + 5) as u64).unwrap();
        assert_eq!(got, want[4 * MIB + 5..4 * MIB + 305], "old bytes read back");
        // Read from the previous version, not copied in: a read does not write.
        assert_eq!(copied(), c0);
        // The written prefix grown from the start to the middle of page 2 (not at a
        // kernel page boundary, so the kernel asks for the bytes on both sides): a read
        // across its end gets new bytes, then old ones, and still nothing is copied in.
        let head = data(2 * MIB + MIB / 2 + 100, 8);
        f.write_all_at(&head, 0).unwrap();
        want[..head.len()].copy_from_slice(&head);
        let mut got = vec![0u8; 1000];
        f.read_exact_at(&mut got, (2 * MIB + MIB / 2 - 400) as u64)
            .unwrap();
        assert_eq!(got, want[2 * MIB + MIB / 2 - 400..2 * MIB + MIB / 2 + 600]);
        assert_eq!(copied(), c0);
        f.set_len((4 * MIB + 10) as u64).unwrap();
        f.set_len((6 * MIB) as u64).unwrap();
        want.truncate(4 * MIB + 10);
        want.resize(6 * MIB, 0);
    }
    assert_eq!(ufs.get("f").as_deref(), Some(&want[..]));

    // Renamed while partly rewritten: the old bytes follow the file.
    {
        let f = rw("f");
        f.write_all_at(b"R", (2 * MIB) as u64).unwrap();
        want[2 * MIB] = b'R';
        std::fs::rename(m.p("f"), m.p("g")).unwrap();
        f.write_all_at(b"S", 5).unwrap();
        want[5] = b'S';
    }
    assert_eq!(ufs.get("f"), None);
    assert_eq!(ufs.get("g").as_deref(), Some(&want[..]));

    // Its directory renamed while partly rewritten: the old bytes are copied in before
    // the directory moves (a copy-based move may give the objects new versions), and
    // follow the file.
    {
        let f = rw("d/h");
        f.write_all_at(b"D", 7).unwrap(); // copies in page 0
        let c0 = copied();
        std::fs::rename(m.p("d"), m.p("d2")).unwrap();
        assert_eq!(copied() - c0, 2, "pages 1 and 2 copied in before the move");
    }
    let mut moved = under.clone();
    moved[7] = b'D';
    assert_eq!(ufs.get("d/h"), None);
    assert_eq!(ufs.get("d2/h").as_deref(), Some(&moved[..]));

    // Unlinked while partly rewritten: the open descriptor keeps every old byte.
    {
        let f = rw("g");
        f.write_all_at(b"U", 0).unwrap();
        std::fs::remove_file(m.p("g")).unwrap();
        let mut got = vec![0u8; 1000];
        f.read_exact_at(&mut got, (3 * MIB) as u64).unwrap();
        assert_eq!(got, want[3 * MIB..3 * MIB + 1000]);
    }
    assert_eq!(ufs.get("g"), None);

    // Preallocated, closed, reopened and written from the start (fio's layout): the
    // zeros are never copied in.
    {
        let f = std::fs::File::create(m.p("p")).unwrap();
        preallocate(&f, 3 * MIB);
    }
    let c0 = copied();
    let fresh = data(3 * MIB, 4);
    {
        let f = rw("p");
        for (i, c) in fresh.chunks(MIB / 2).enumerate() {
            f.write_all_at(c, (i * MIB / 2) as u64).unwrap();
        }
        f.sync_all().unwrap();
    }
    assert_eq!(copied() - c0, 0, "the preallocated zeros are not copied in");
    assert_eq!(ufs.get("p").as_deref(), Some(&fresh[..]));

    // An append makes everything before it final: the old bytes are in the object.
    {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(m.p("p"))
            .unwrap();
        f.write_all(b"tail").unwrap();
    }
    let mut appended = fresh.clone();
    appended.extend_from_slice(b"tail");
    assert_eq!(ufs.get("p").as_deref(), Some(&appended[..]));
    assert_eq!(std::fs::read(m.p("p")).unwrap(), appended);

    // Replaced by another tool while old bytes not cached are still needed: the commit
    // fails with ESTALE rather than mix two versions, and the other tool's object stays.
    {
        let f = rw("q");
        f.write_all_at(b"Q", 10).unwrap(); // copies in page 0 only
        let other = data(2 * MIB, 6);
        ufs.put("q", &other);
        let e = f.sync_all().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESTALE));
        assert_eq!(ufs.get("q").as_deref(), Some(&other[..]));
    }
}

/// ASYNC_THROUGH: once a file's upload lands, its pages are cached under the store's
/// version (copied from the journal entry), so reading it afterwards costs no UFS read.
fn fuse_async_through_files_stay_cached_after_upload(b: Backend) {
    use alluxio::config::{FuseConfig, WriteType};
    let ufs = TestUfs::new(b);
    let dirs = MountDirs::new();
    let m = Mount::with_config(ufs.config(), &dirs, 64 << 20, FuseConfig::default(), |c| {
        c.write_type = WriteType::AsyncThrough
    });
    let d = data((3 << 20) + 5, 7);
    let writes = m.counter("disk_cache_writes");
    std::fs::write(m.p("f"), &d).unwrap();
    wait_for("the upload never landed", || {
        ufs.get("f").as_deref() == Some(&d[..])
    });
    // Four pages, cached in the background after the upload (the journal entry adopted
    // whole, or copied page by page).
    wait_for("the uploaded pages were never cached", || {
        m.counter("disk_cache_writes") + m.counter("disk_cache_adopted") >= writes + 4
    });
    let reads = m.counter("ufs_reads");
    assert_eq!(std::fs::read(m.p("f")).unwrap(), d);
    assert_eq!(m.counter("ufs_reads"), reads, "read from the cache");
}

/// Every write type puts the file's exact bytes at its key, 1:1, and a rename moves them:
/// CACHE_THROUGH and THROUGH before close returns, ASYNC_THROUGH once its background
/// upload lands. Read back with the store's own client or a plain GET.
fn fuse_every_write_type_lands_in_the_store(b: Backend) {
    use alluxio::config::{FuseConfig, WriteType};
    let ufs = TestUfs::new(b);
    for (i, wt) in [
        WriteType::CacheThrough,
        WriteType::Through,
        WriteType::AsyncThrough,
    ]
    .into_iter()
    .enumerate()
    {
        let dirs = MountDirs::new();
        let m = Mount::with_config(ufs.config(), &dirs, 64 << 20, FuseConfig::default(), |c| {
            c.write_type = wt
        });
        let d = data((3 << 20) + 5 + i, 40 + i as u64);
        let (name, moved) = (format!("wt{i}/f"), format!("wt{i}/g"));
        std::fs::create_dir(m.p(&format!("wt{i}"))).unwrap();
        std::fs::write(m.p(&name), &d).unwrap();
        if wt != WriteType::AsyncThrough {
            assert!(
                ufs.get(&name).as_deref() == Some(&d[..]),
                "{wt:?}: at close"
            );
        }
        wait_for("the upload never landed", || {
            ufs.get(&name).as_deref() == Some(&d[..])
        });
        std::fs::rename(m.p(&name), m.p(&moved)).unwrap();
        assert!(
            ufs.get(&moved).as_deref() == Some(&d[..]),
            "{wt:?}: renamed"
        );
        assert_eq!(ufs.get(&name), None, "{wt:?}: the old key is gone");
        assert!(
            std::fs::read(m.p(&moved)).unwrap() == d,
            "{wt:?}: read back"
        );
    }
}

/// rmdir never deletes what it has not seen: on a store where deleting a directory
/// deletes everything under it (WebDAV's DELETE of a collection), or where a prefix holds
/// objects written since the directory was listed, rmdir of a directory the namespace
/// shows empty gets ENOTEMPTY while the store still holds objects under it, and those stay.
fn fuse_rmdir_keeps_objects_it_has_not_listed(b: Backend) {
    let ufs = TestUfs::new(b);
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);
    std::fs::create_dir(m.p("d")).unwrap();
    assert_eq!(std::fs::read_dir(m.p("d")).unwrap().count(), 0);
    ufs.put("d/late.txt", b"written by another tool");
    let e = std::fs::remove_dir(m.p("d")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY), "{e}");
    assert_eq!(
        ufs.get("d/late.txt").as_deref(),
        Some(&b"written by another tool"[..])
    );
}

/// A written file is cached by taking its staging file into the disk tier once every
/// descriptor is closed, not by writing its bytes a second time, and reading it then costs
/// no UFS read. Under ASYNC_THROUGH a file still open when its upload lands is not taken:
/// its journal entry is then the open file's staging, which eviction must never punch
/// holes in; it is taken after its last close.
fn fuse_written_files_are_cached_by_adopting_their_staging(b: Backend) {
    use alluxio::config::{FuseConfig, WriteType};
    use std::os::unix::fs::FileExt;
    let ufs = TestUfs::new(b);
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);
    let d = data((64 << 20) + 5, 3);
    let adopted = m.counter("disk_cache_adopted");
    std::fs::write(m.p("f"), &d).unwrap();
    wait_for("the written file was never adopted", || {
        m.counter("disk_cache_adopted") == adopted + 65
    });
    let reads = m.counter("ufs_reads");
    assert!(std::fs::read(m.p("f")).unwrap() == d, "bytes differ");
    assert_eq!(m.counter("ufs_reads"), reads, "read from the adopted file");
    // Small files too: the copy into the tier starts at the close's FLUSH and waits for
    // its RELEASE, so not even a file's first page is copied before the adoption.
    let small: Vec<Vec<u8>> = (0..20).map(|i| data(100_000 + i, 10 + i as u64)).collect();
    for (i, s) in small.iter().enumerate() {
        std::fs::write(m.p(&format!("s{i}")), s).unwrap();
    }
    wait_for("the small files were never adopted", || {
        m.counter("disk_cache_adopted") == adopted + 65 + 20
    });
    assert_eq!(m.counter("disk_cache_writes"), 0, "no page was copied");
    for (i, s) in small.iter().enumerate() {
        assert!(&read_direct(&m.p(&format!("s{i}"))) == s, "s{i} differs");
    }
    drop(m);

    let dirs = MountDirs::new();
    let m = Mount::with_config(ufs.config(), &dirs, 64 << 20, FuseConfig::default(), |c| {
        c.write_type = WriteType::AsyncThrough
    });
    let mut v1 = data((4 << 20) + 3, 4);
    let f = std::fs::File::create(m.p("g")).unwrap();
    f.write_all_at(&v1, 0).unwrap();
    f.sync_all().unwrap();
    wait_for("the upload never landed", || {
        ufs.get("g").as_deref() == Some(&v1[..])
    });
    // The uploader caches the journaled bytes right after the upload: let it finish (and
    // so have had its chance to wrongly adopt the open file).
    wait_for("the uploader never finished the entry", || {
        m.counter("journal_uploads") >= 1
    });
    assert_eq!(m.counter("disk_cache_adopted"), 0, "open: not adopted");
    f.write_all_at(b"XYZ", 1 << 20).unwrap();
    v1[1 << 20..(1 << 20) + 3].copy_from_slice(b"XYZ");
    drop(f);
    wait_for("the second upload never landed", || {
        ufs.get("g").as_deref() == Some(&v1[..])
    });
    wait_for("the closed file was never adopted", || {
        m.counter("disk_cache_adopted") == 5
    });
    let reads = m.counter("ufs_reads");
    assert!(std::fs::read(m.p("g")).unwrap() == v1, "bytes differ");
    assert_eq!(m.counter("ufs_reads"), reads, "read from the adopted entry");
}

/// Adoption under a disk tier smaller than what is written. An adopted file whose pages
/// are later evicted (holes punched in the very file it was written to) reads back whole,
/// the evicted pages from the store; a file bigger than the tier is never adopted, and is
/// cached page by page, evicting as it goes. Every read bypasses the kernel's cache.
fn fuse_adopted_files_read_back_whole_after_eviction(b: Backend) {
    use alluxio::config::FuseConfig;
    let ufs = TestUfs::new(b);
    let dirs = MountDirs::new();
    let m = Mount::with_config(ufs.config(), &dirs, 64 << 20, FuseConfig::default(), |c| {
        c.disk_cache_bytes = 64 << 20
    });
    let direct = |name: &str| read_direct(&m.p(name));
    let a = data((48 << 20) + 1, 1);
    std::fs::write(m.p("a"), &a).unwrap();
    wait_for("a was never adopted", || {
        m.counter("disk_cache_adopted") == 49
    });
    let bb = data(32 << 20, 2);
    std::fs::write(m.p("b"), &bb).unwrap();
    wait_for("b was never adopted", || {
        m.counter("disk_cache_adopted") == 81
    });
    assert!(
        m.counter("disk_cache_evictions") >= 17,
        "b took room from a"
    );
    let reads = m.counter("ufs_reads");
    assert!(direct("a") == a, "a differs after eviction");
    assert!(
        m.counter("ufs_reads") > reads,
        "a's evicted pages came from the store"
    );
    let big = data(80 << 20, 3);
    std::fs::write(m.p("big"), &big).unwrap();
    assert!(direct("big") == big, "big differs");
    assert!(direct("b") == bb, "b differs");
    assert!(direct("a") == a, "a differs");
    assert_eq!(m.counter("disk_cache_adopted"), 81, "big was never adopted");
}

/// A cache disk the tier has filled still takes writes. The tier is configured larger
/// than its filesystem and leaves `cache_free_ratio` of it free, so reading a file larger
/// than the disk never meets ENOSPC. A write larger than that free share takes room from
/// cached pages (copies of the store's bytes) instead of failing. A write larger than the
/// whole disk fails with ENOSPC, keeps what was written before, as a full local disk
/// would, and the mount goes on working.
fn fuse_a_full_cache_disk_gives_way_to_writes(b: Backend) {
    use alluxio::config::FuseConfig;
    let ufs = TestUfs::new(b);
    let dirs = MountDirs::new();
    let disk = Tmpfs::mount(&dirs.cache_dir(), 48 << 20);
    let m = Mount::with_config(ufs.config(), &dirs, 8 << 20, FuseConfig::default(), |c| {
        assert!(c.disk_cache_bytes >= 1 << 30, "a tier larger than its disk")
    });
    let direct = |name: &str| read_direct(&m.p(name));
    let cold = data(64 << 20, 1);
    ufs.put("cold", &cold);
    assert!(direct("cold") == cold, "cold differs");
    let held = m.counter("disk_cache_bytes");
    assert!(held >= 24 << 20, "the tier filled the disk: {held}");
    // The disk less its free share (4.8 MiB) and the filesystem's own use.
    let limit = m.counter("disk_cache_limit");
    assert!(limit > 0 && limit <= 44 << 20, "limit {limit}");
    assert!(held <= 44 << 20, "the tier holds {held}");
    assert_eq!(
        m.counter("disk_cache_errors"),
        0,
        "no page write met ENOSPC"
    );
    assert!(
        disk.avail() >= 2 << 20,
        "the tier left its free share: {} bytes free",
        disk.avail()
    );

    let w = data(24 << 20, 2);
    std::fs::write(m.p("w"), &w).expect("cached pages give way to a write");
    assert!(
        m.counter("disk_cache_released_bytes") > 0,
        "the write took room from the tier"
    );
    assert!(ufs.get("w").as_deref() == Some(&w[..]), "w in the store");

    let big = data(64 << 20, 3);
    let mut f = std::fs::File::create(m.p("big")).unwrap();
    let mut written = 0;
    let err = loop {
        match f.write_all(&big[written..written + (1 << 20)]) {
            Ok(()) => written += 1 << 20,
            Err(e) => break e,
        }
        assert!(written < big.len(), "64 MiB fit on a 48 MiB disk");
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(written >= 32 << 20, "only {written} bytes fit");
    f.sync_all().expect("what was written is uploaded");
    drop(f);
    assert!(
        ufs.get("big").as_deref() == Some(&big[..written]),
        "big holds what was written before ENOSPC"
    );

    std::fs::write(m.p("after"), b"still works").unwrap();
    assert_eq!(std::fs::read(m.p("after")).unwrap(), b"still works");
    assert!(direct("w") == w, "w differs");
    assert!(direct("cold") == cold, "cold differs at the end");
    assert!(
        ufs.get("w").as_deref() == Some(&w[..]),
        "w kept in the store"
    );
}

/// Other users of the cache disk come first: once they leave it less than the tier's free
/// share, the tier gives its pages back at its next reservation, even when it then has no
/// room for the page it was reserving, and caches again once there is room.
#[test]
fn fuse_the_disk_tier_gives_room_back_when_others_fill_its_disk() {
    use alluxio::config::FuseConfig;
    let ufs = TestUfs::new(Backend::Fs);
    let dirs = MountDirs::new();
    let disk = Tmpfs::mount(&dirs.cache_dir(), 32 << 20);
    let m = Mount::with_config(ufs.config(), &dirs, 8 << 20, FuseConfig::default(), |_| {});
    let (a, b, c) = (data(4 << 20, 1), data(2 << 20, 2), data(2 << 20, 3));
    ufs.put("a", &a);
    ufs.put("b", &b);
    ufs.put("c", &c);
    assert!(read_direct(&m.p("a")) == a, "a differs");
    // Pages are written to the tier after they are served: wait for all four, so the
    // free space measured next is what stays.
    wait_for("a was never cached", || m.counter("disk_cache_writes") == 4);
    assert_eq!(m.counter("disk_cache_bytes"), 4 << 20, "a cached");
    // Another user takes all but 64 KiB of the disk: less than the free share (3.2 MiB)
    // less what the tier holds, so the tier has no room for even one more page.
    let other = dirs.cache_dir().join("other");
    std::fs::write(&other, vec![1u8; (disk.avail() - (64 << 10)) as usize]).unwrap();
    assert!(read_direct(&m.p("b")) == b, "b differs");
    assert_eq!(
        m.counter("disk_cache_bytes"),
        0,
        "the tier gave its pages back"
    );
    assert!(disk.avail() >= 4 << 20, "{} bytes free", disk.avail());
    assert_eq!(
        m.counter("disk_cache_errors"),
        0,
        "no page write met ENOSPC"
    );
    std::fs::remove_file(&other).unwrap();
    assert!(read_direct(&m.p("c")) == c, "c differs");
    assert_eq!(
        m.counter("disk_cache_bytes"),
        2 << 20,
        "room again: c cached"
    );
}

backend_tests!(
    fuse_a_full_cache_disk_gives_way_to_writes,
    fuse_async_through_files_stay_cached_after_upload,
    fuse_write_then_read_back,
    fuse_files_read_right_after_writing_come_from_the_local_copy,
    fuse_namespace_ops_reach_the_ufs,
    fuse_rewrites_copy_in_only_the_old_pages_they_need,
    fuse_written_files_are_cached_by_adopting_their_staging,
    fuse_adopted_files_read_back_whole_after_eviction,
    fuse_every_write_type_lands_in_the_store,
    fuse_rmdir_keeps_objects_it_has_not_listed
);
store_tests!(
    fuse_write_then_read_back,
    fuse_namespace_ops_reach_the_ufs,
    fuse_files_read_right_after_writing_come_from_the_local_copy,
    fuse_every_write_type_lands_in_the_store,
    fuse_rmdir_keeps_objects_it_has_not_listed
);

/// On a local-directory UFS an object is written beside its key and renamed into place,
/// so it is never seen half-written. The staging area under the root is invisible through
/// the mount, its name is refused, and nothing is left in it after the writes.
#[test]
fn fuse_local_ufs_writes_are_atomic_renames() {
    let ufs = TestUfs::new(Backend::Fs);
    ufs.put("f", b"old");
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);
    let d = data(3 << 20, 5);
    std::fs::write(m.p("f"), &d).unwrap();
    std::fs::create_dir(m.p("sub")).unwrap();
    std::fs::write(m.p("sub/g"), b"g").unwrap();
    assert_eq!(ufs.get("f").as_deref(), Some(&d[..]));
    assert_eq!(ufs.get("sub/g").as_deref(), Some(&b"g"[..]));
    let tmp = ufs.root().join(alluxio::ufs::FS_TMP_DIR);
    assert!(tmp.is_dir(), "writes go through the staging area");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "nothing left behind"
    );
    let mut names: Vec<_> = std::fs::read_dir(m.p(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["f", "sub"]);
    let e = std::fs::create_dir(m.p(alluxio::ufs::FS_TMP_DIR)).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    let e = std::fs::write(m.p(alluxio::ufs::FS_TMP_DIR), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));
}

/// posix_fallocate(0, len): the size grows, with no data written.
fn preallocate(f: &std::fs::File, len: usize) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on an open descriptor.
    let r = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, len as libc::off_t) };
    assert_eq!(r, 0, "posix_fallocate");
}

/// Waits until `counter` reaches `at_least` (bounded: a stuck upload fails the test).
fn wait_counter(m: &Mount, counter: &str, at_least: u64) {
    let t0 = std::time::Instant::now();
    while m.counter(counter) < at_least {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "{counter} stayed at {} (waiting for {at_least})",
            m.counter(counter)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// On an object store, a file written sequentially is uploaded part by part while it is
/// still open: parts reach the store before close, and close completes the upload with
/// the tail. A rewrite or truncate below the bytes already sent, or a rename, abandons the
/// stream and close uploads the whole file; the object is right in every case.
#[test]
fn fuse_s3_sequential_writes_stream_parts_before_close() {
    use std::os::unix::fs::FileExt;
    const MIB: usize = 1 << 20;
    let ufs = TestUfs::new(Backend::S3);
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);
    let part = 8 * MIB as u64; // the harness's default part size

    // Sequential: three parts leave while the file is open.
    let d = data(29 * MIB + 123, 1);
    let mut f = std::fs::File::create(m.p("seq")).unwrap();
    f.write_all(&d[..27 * MIB]).unwrap();
    wait_counter(&m, "bytes_to_ufs", 3 * part);
    assert_eq!(ufs.get("seq"), None, "not visible before close");
    f.write_all(&d[27 * MIB..]).unwrap();
    drop(f);
    assert_eq!(ufs.get("seq").as_deref(), Some(&d[..]));
    assert_eq!(m.counter("streamed_uploads"), 1);
    assert_eq!(m.counter("streamed_aborts"), 0);
    assert_eq!(
        m.counter("bytes_to_ufs"),
        d.len() as u64,
        "each byte sent once"
    );

    // A rewrite below the bytes sent: the object still has the rewrite.
    let mut d2 = data(20 * MIB, 2);
    let base = m.counter("bytes_to_ufs");
    let f = std::fs::File::create(m.p("rewrite")).unwrap();
    f.write_all_at(&d2, 0).unwrap();
    wait_counter(&m, "bytes_to_ufs", base + part);
    f.write_all_at(b"REWRITTEN", 5).unwrap();
    d2[5..14].copy_from_slice(b"REWRITTEN");
    drop(f);
    assert_eq!(ufs.get("rewrite").as_deref(), Some(&d2[..]));
    assert_eq!(m.counter("streamed_aborts"), 1);

    // A truncate below the bytes sent, then more writes.
    let d3 = data(20 * MIB, 3);
    let base = m.counter("bytes_to_ufs");
    let mut f = std::fs::File::create(m.p("trunc")).unwrap();
    f.write_all(&d3).unwrap();
    wait_counter(&m, "bytes_to_ufs", base + part);
    f.set_len(3 * MIB as u64).unwrap();
    f.write_all_at(b"tail", 3 * MIB as u64).unwrap();
    drop(f);
    let mut want = d3[..3 * MIB].to_vec();
    want.extend_from_slice(b"tail");
    assert_eq!(ufs.get("trunc").as_deref(), Some(&want[..]));
    assert_eq!(m.counter("streamed_aborts"), 2);

    // Renamed while streaming: the object lands at the new name only.
    let d4 = data(20 * MIB, 4);
    let base = m.counter("bytes_to_ufs");
    let mut f = std::fs::File::create(m.p("before")).unwrap();
    f.write_all(&d4[..12 * MIB]).unwrap();
    wait_counter(&m, "bytes_to_ufs", base + part);
    std::fs::rename(m.p("before"), m.p("after")).unwrap();
    f.write_all(&d4[12 * MIB..]).unwrap();
    drop(f);
    assert_eq!(ufs.get("after").as_deref(), Some(&d4[..]));
    assert_eq!(ufs.get("before"), None);
    assert_eq!(m.counter("streamed_aborts"), 3);
    assert_eq!(std::fs::read(m.p("after")).unwrap(), d4);

    // Preallocated first (posix_fallocate, as fio and many writers do), then written from
    // the start: the parts still stream, and no byte is sent twice.
    let d5 = data(20 * MIB + 7, 5);
    // Writes `d` through `f` from offset 0: two parts must leave before close, the stream
    // must hold, and every byte is sent once.
    let stream_over = |mut f: std::fs::File, name: &str, d: &[u8]| {
        let (base, aborts) = (m.counter("bytes_to_ufs"), m.counter("streamed_aborts"));
        f.write_all(&d[..17 * MIB]).unwrap();
        wait_counter(&m, "bytes_to_ufs", base + 2 * part);
        assert_ne!(
            ufs.get(name).as_deref(),
            Some(d),
            "{name}: visible before close"
        );
        f.write_all(&d[17 * MIB..]).unwrap();
        drop(f);
        assert_eq!(ufs.get(name).as_deref(), Some(d), "{name}");
        assert_eq!(
            m.counter("streamed_aborts"),
            aborts,
            "{name}: the stream held"
        );
        let sent = m.counter("bytes_to_ufs") - base;
        assert_eq!(sent, d.len() as u64, "{name}: each byte sent once");
    };
    let f = std::fs::File::create(m.p("prealloc")).unwrap();
    preallocate(&f, d5.len());
    stream_over(f, "prealloc", &d5);

    // As fio lays out a file: preallocated and closed (an object of zeros), then reopened
    // and rewritten from the start. The old bytes are not streamed ahead of the writes.
    let d6 = data(20 * MIB + 3, 6);
    preallocate(&std::fs::File::create(m.p("laid-out")).unwrap(), d6.len());
    assert_eq!(ufs.get("laid-out"), Some(vec![0u8; d6.len()]));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.p("laid-out"));
    stream_over(f.unwrap(), "laid-out", &d6);

    // Streams never starve a commit: with two files streaming (or trying to) and open,
    // a third, large file still closes.
    let (a, b, c) = (data(10 * MIB, 5), data(10 * MIB, 6), data(17 * MIB, 7));
    let mut fa = std::fs::File::create(m.p("a")).unwrap();
    fa.write_all(&a).unwrap();
    let mut fb = std::fs::File::create(m.p("b")).unwrap();
    fb.write_all(&b).unwrap();
    std::fs::write(m.p("c"), &c).unwrap();
    assert_eq!(ufs.get("c").as_deref(), Some(&c[..]));
    drop((fa, fb));
    assert_eq!(ufs.get("a").as_deref(), Some(&a[..]));
    assert_eq!(ufs.get("b").as_deref(), Some(&b[..]));
}

/// Polls `ok` until it holds; a minute without it fails the test with `what`.
/// A whole file read with O_DIRECT: every byte is asked of the daemon (or, for a file it
/// hands to the kernel, of the passthrough backing file), none comes from the page cache.
/// Reads are 1 MiB at aligned offsets into an aligned buffer, as a passthrough read is a
/// direct read of the cache file, which its filesystem may require.
fn read_direct(path: &std::path::Path) -> Vec<u8> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const CHUNK: usize = 1 << 20;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap();
    let mut buf = vec![0u8; CHUNK + 4096];
    let at = buf.as_ptr().align_offset(4096);
    let buf = &mut buf[at..at + CHUNK];
    let mut v = Vec::new();
    loop {
        let n = f.read_at(buf, v.len() as u64).unwrap();
        v.extend_from_slice(&buf[..n]);
        if n < CHUNK {
            return v;
        }
    }
}

/// ASYNC_THROUGH: close returns once the bytes are in the local journal, without waiting
/// for the background uploader, even while the store stalls in the middle of an upload of
/// the same file (the uploader holds that file's inode lock for the whole upload). Once
/// the store answers again, the last version written is the object.
#[test]
fn fuse_async_through_close_does_not_wait_for_a_stalled_upload() {
    use crate::harness::StallProxy;
    use alluxio::config::{FuseConfig, WriteType};
    let ufs = TestUfs::new(Backend::S3);
    let proxy = StallProxy::new(ufs.endpoint());
    let dirs = MountDirs::new();
    let m = Mount::with_config(
        ufs.config_via(&proxy.endpoint()),
        &dirs,
        64 << 20,
        FuseConfig::default(),
        |c| c.write_type = WriteType::AsyncThrough,
    );
    let v1 = data(3 << 20, 1);
    std::fs::write(m.p("f"), &v1).unwrap();
    wait_for("the first version was never uploaded", || {
        ufs.get("f").as_deref() == Some(&v1[..])
    });

    // The store stalls; the next version's upload starts and hangs there.
    proxy.pause();
    let v2 = data(3 << 20, 2);
    std::fs::write(m.p("f"), &v2).unwrap();
    wait_for("the second upload never reached the store", || {
        proxy.held() > 0
    });
    // Meanwhile: a clean close, a rewrite and its close, and a read, all of the same file.
    let (tx, rx) = std::sync::mpsc::channel();
    let (p, v3) = (m.p("f"), data(3 << 20, 3));
    let v3c = v3.clone();
    std::thread::spawn(move || {
        drop(std::fs::OpenOptions::new().write(true).open(&p).unwrap());
        std::fs::write(&p, &v3c).unwrap();
        let _ = tx.send(std::fs::read(&p).unwrap() == v3c);
    });
    let res = rx.recv_timeout(std::time::Duration::from_secs(15));
    proxy.resume();
    assert_eq!(
        res,
        Ok(true),
        "close waited for the stalled upload (or read back wrong bytes)"
    );
    wait_for("the last version never replaced the object", || {
        ufs.get("f").as_deref() == Some(&v3[..])
    });
    assert_eq!(std::fs::read(m.p("f")).unwrap(), v3);

    // A rename during a stalled upload of the file: the object ends up at the new name
    // only, never left behind at the old one.
    let held = proxy.held();
    proxy.pause();
    let v4 = data(3 << 20, 4);
    std::fs::write(m.p("f"), &v4).unwrap();
    let t0 = std::time::Instant::now();
    while proxy.held() <= held {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "the fourth upload never reached the store: held {} (was {held}), journal {:?}, {:?}",
            proxy.held(),
            std::fs::read_dir(dirs.cache_dir().join("journal"))
                .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>()),
            m.counters()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (from, to) = (m.p("f"), m.p("g"));
    let busy = m.counter("fuse_in_flight");
    let renamer = std::thread::spawn(move || std::fs::rename(from, to));
    // The rename waits in the daemon for the stalled upload of its inode.
    wait_for("the rename never reached the daemon", || {
        m.counter("fuse_in_flight") > busy
    });
    proxy.resume();
    renamer.join().unwrap().unwrap();
    wait_for("the renamed file's object is not at its new name", || {
        ufs.get("g").as_deref() == Some(&v4[..])
    });
    assert_eq!(ufs.get("f"), None, "an object was left at the old name");
    assert_eq!(std::fs::read(m.p("g")).unwrap(), v4);
}

/// ASYNC_THROUGH journals a staged file by giving it a name (no copy); a change after that
/// works on a copy of it, so every journal entry keeps exactly the bytes its fsync
/// committed, through overwrites, appends, truncation and O_TRUNC.
#[test]
fn fuse_async_through_journal_entries_keep_their_bytes() {
    use alluxio::config::{FuseConfig, WriteType};
    use std::os::unix::fs::FileExt;
    let ufs = TestUfs::new(Backend::Fs);
    let dirs = MountDirs::new();
    let m = Mount::with_config(ufs.config(), &dirs, 64 << 20, FuseConfig::default(), |c| {
        c.write_type = WriteType::AsyncThrough;
        c.upload_delay = std::time::Duration::from_secs(600); // entries stay put
    });
    // The entries' contents, oldest first (names are <ino>.<seq>.data).
    let entries = || {
        let mut e: Vec<(u64, Vec<u8>)> = std::fs::read_dir(dirs.cache_dir().join("journal"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "data"))
            .map(|p| {
                let seq = p.file_stem().unwrap().to_str().unwrap();
                let seq = seq.rsplit('.').next().unwrap().parse().unwrap();
                (seq, std::fs::read(&p).unwrap())
            })
            .collect();
        e.sort();
        e.into_iter().map(|(_, b)| b).collect::<Vec<_>>()
    };
    let v1 = data(3 << 20, 1);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.p("f"))
        .unwrap();
    f.write_all(&v1).unwrap();
    f.sync_all().unwrap();
    assert_eq!(entries(), vec![v1.clone()]);

    // An overwrite in the middle and an append, through the same descriptor.
    let mut v2 = v1.clone();
    v2[100..107].copy_from_slice(b"CHANGED");
    v2.extend_from_slice(b"tail");
    f.write_all_at(b"CHANGED", 100).unwrap();
    f.write_all_at(b"tail", v1.len() as u64).unwrap();
    f.sync_all().unwrap();
    assert_eq!(entries(), vec![v1.clone(), v2.clone()]);
    let mut back = vec![0u8; v2.len()];
    f.read_exact_at(&mut back, 0).unwrap();
    assert!(back == v2, "read back through the descriptor");

    // Truncation, then an extension with a write past the end.
    f.set_len(10).unwrap();
    f.sync_all().unwrap();
    f.write_all_at(b"x", 20).unwrap();
    f.sync_all().unwrap();
    let v3 = v2[..10].to_vec();
    let mut v4 = v3.clone();
    v4.extend_from_slice(&[0u8; 10]);
    v4.push(b'x');
    let four = vec![v1, v2, v3, v4];
    assert_eq!(entries(), four);
    drop(f);

    // A truncating open of the journaled file starts from nothing.
    std::fs::write(m.p("f"), b"new").unwrap();
    let now = entries();
    assert_eq!(now[..4], four[..], "earlier entries unchanged");
    assert_eq!(now[4..], [b"new".to_vec()]);
    assert_eq!(std::fs::read(m.p("f")).unwrap(), b"new");
}

/// A store whose version does not change with the bytes (wsgidav's ETag is inode, size and
/// mtime in seconds) gives a same-size rewrite within a second the old version. The
/// rewrite through the mount still reads back new: the commit drops the pages of the old
/// bytes cached under that version (memory tier included) before it caches the new ones.
#[test]
fn fuse_webdav_same_size_rewrite_within_a_second_reads_new() {
    use crate::harness::drop_kernel_cache;
    let ufs = TestUfs::new(Backend::WebDav);
    let dirs = MountDirs::new();
    let fuse = alluxio::config::FuseConfig {
        passthrough: false,
        ..Default::default()
    };
    let m = Mount::with_fuse(ufs.config(), &dirs, 64 << 20, fuse);
    let mut same_version = 0;
    for round in 0..5u64 {
        let (old, new) = (data(100_000, 2 * round), data(100_000, 2 * round + 1));
        std::fs::write(m.p("f"), &old).unwrap();
        drop_kernel_cache(&m.p("f"));
        assert!(
            std::fs::read(m.p("f")).unwrap() == old,
            "round {round}: old"
        );
        let v1 = ufs.etag("f");
        std::fs::write(m.p("f"), &new).unwrap();
        same_version += usize::from(ufs.etag("f") == v1);
        drop_kernel_cache(&m.p("f"));
        assert!(
            std::fs::read(m.p("f")).unwrap() == new,
            "round {round}: the rewrite reads back its own bytes"
        );
    }
    // The case under test happened (else the server's ETags changed and this proves less).
    assert!(same_version > 0, "the server never reused an ETag");
}

/// WebDAV takes an object only in one PUT. A file of many parts goes in one PUT whose body
/// is read from the staging file as it is sent (memory: one chunk, not the file), and
/// lands byte for byte (a plain GET), under every write type that uploads at close.
#[test]
fn fuse_webdav_large_files_go_in_one_streamed_put() {
    let ufs = TestUfs::new(Backend::WebDav);
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);
    let d = data((40 << 20) + 3, 77);
    std::fs::create_dir(m.p("deep")).unwrap();
    std::fs::create_dir(m.p("deep/er")).unwrap();
    crate::harness::write_closed(&m.p("deep/er/big.bin"), &d).unwrap();
    let got = ufs.get("deep/er/big.bin").expect("the object");
    assert!(
        got == d,
        "{} bytes in the store, {} written",
        got.len(),
        d.len()
    );
    assert_eq!(m.counter("bytes_to_ufs"), d.len() as u64);
}
