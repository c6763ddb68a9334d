//! What the mount refuses, and with which errno (docs/SEMANTICS.md).

use crate::harness::{Backend, Mount, MountDirs, TestUfs, renameat2};

fn errno<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    r.unwrap_err().raw_os_error().unwrap()
}

#[test]
fn fuse_unsupported_operations_get_clean_errnos() {
    let ufs = TestUfs::new(Backend::Fs);
    ufs.put("f", b"x");
    ufs.put("dir/inner", b"y");
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);
    // No xattr of that name; hard links to directories are refused.
    assert_eq!(errno(xattr_get(&m.p("f"))), libc::ENODATA);
    assert_eq!(
        errno(std::fs::hard_link(m.p("dir"), m.p("dirlink"))),
        libc::EPERM
    );
    // renameat2: NOREPLACE is honoured (EXCHANGE is tested in nodes.rs); WHITEOUT is refused.
    std::fs::write(m.p("g"), b"g").unwrap();
    assert_eq!(
        errno(renameat2(&m.p("g"), &m.p("f"), libc::RENAME_NOREPLACE)),
        libc::EEXIST
    );
    assert_eq!(
        errno(renameat2(&m.p("g"), &m.p("f"), libc::RENAME_WHITEOUT)),
        libc::EINVAL
    );
    std::fs::remove_file(m.p("g")).unwrap();
    // A name that is not UTF-8 cannot be an object key.
    {
        use std::os::unix::ffi::OsStrExt;
        let bad = m.path.join(std::ffi::OsStr::from_bytes(b"bad-\xff-name"));
        assert_eq!(errno(std::fs::write(&bad, b"")), libc::EINVAL);
        assert_eq!(errno(std::fs::create_dir(&bad)), libc::EINVAL);
    }
    // Ordinary POSIX errors.
    assert_eq!(errno(std::fs::read(m.p("missing"))), libc::ENOENT);
    assert_eq!(errno(std::fs::remove_dir(m.p("f"))), libc::ENOTDIR);
    assert_eq!(errno(std::fs::remove_file(m.p("dir"))), libc::EISDIR);
    assert_eq!(errno(std::fs::create_dir(m.p("dir"))), libc::EEXIST);
    let long = "n".repeat(256);
    assert_eq!(errno(std::fs::write(m.p(&long), b"")), libc::ENAMETOOLONG);
    // Nothing above changed the UFS.
    assert_eq!(ufs.get("f").as_deref(), Some(&b"x"[..]));
    assert!(ufs.dir_exists("dir"));
}

fn xattr_get(p: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let name = std::ffi::CString::new("user.test").unwrap();
    let mut buf = [0u8; 16];
    // SAFETY: both strings are NUL-terminated and the buffer length matches the buffer.
    let r = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[test]
fn fuse_statfs_reports_space() {
    let ufs = TestUfs::new(Backend::Fs);
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);
    let st = nix::sys::statvfs::statvfs(&m.path).unwrap();
    assert!(st.blocks() > 0 && st.blocks_available() > 0);
    assert_eq!(st.name_max(), 255);
}

#[test]
fn fuse_read_only_mount_refuses_changes() {
    let ufs = TestUfs::new(Backend::Fs);
    ufs.put("f", b"data");
    let dirs = MountDirs::new();
    let fuse = alluxio::config::FuseConfig {
        read_only: true,
        ..Default::default()
    };
    let m = Mount::with_fuse(ufs.config(), &dirs, 64 << 20, fuse);
    assert_eq!(std::fs::read(m.p("f")).unwrap(), b"data");
    assert_eq!(errno(std::fs::write(m.p("f"), b"x")), libc::EROFS);
    assert_eq!(errno(std::fs::write(m.p("new"), b"x")), libc::EROFS);
    assert_eq!(errno(std::fs::create_dir(m.p("d"))), libc::EROFS);
    assert_eq!(errno(std::fs::remove_file(m.p("f"))), libc::EROFS);
    assert_eq!(ufs.get("f").as_deref(), Some(&b"data"[..]));
}

/// chmod, chown and utimens change the namespace only; the object is untouched.
#[test]
fn fuse_attribute_changes_stay_in_the_namespace() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let ufs = TestUfs::new(Backend::Fs);
    ufs.put("f", b"data");
    let before = std::fs::metadata(ufs.root().join("f")).unwrap();
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);
    std::fs::set_permissions(m.p("f"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(m.p("f"), Some(4321), Some(8765)).unwrap();
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_000_000_000, 123_456_789);
    std::fs::File::options()
        .write(true)
        .open(m.p("f"))
        .unwrap()
        .set_modified(t)
        .unwrap();
    let md = std::fs::metadata(m.p("f")).unwrap();
    assert_eq!(
        (md.mode() & 0o7777, md.uid(), md.gid()),
        (0o600, 4321, 8765)
    );
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_000_000_000, 123_456_789));
    let after = std::fs::metadata(ufs.root().join("f")).unwrap();
    assert_eq!(
        (after.mode(), after.uid(), after.mtime()),
        (before.mode(), before.uid(), before.mtime())
    );
    assert_eq!(std::fs::read(m.p("f")).unwrap(), b"data");
}

/// A store that accepts connections and never answers: a cold read and a close each fail
/// with EIO once `ufs_timeout` (here 2 s) has passed, not after minutes (before: 20 s per
/// attempt times four attempts, then the kernel sent the read again). Once the store
/// answers again, the mount works without a remount.
#[test]
fn fuse_a_stalled_store_gives_eio_within_ufs_timeout() {
    use crate::harness::{StallProxy, data, write_closed};
    use std::time::{Duration, Instant};
    let ufs = TestUfs::new(Backend::S3);
    let cold = data(3 << 20, 7);
    ufs.put("cold", &cold);
    let proxy = StallProxy::new(ufs.endpoint());
    let dirs = MountDirs::new();
    let m = Mount::with_config(
        ufs.config_via(&proxy.endpoint()),
        &dirs,
        64 << 20,
        Default::default(),
        |c| c.ufs_timeout = Duration::from_secs(2),
    );
    assert_eq!(
        std::fs::metadata(m.p("cold")).unwrap().len(),
        cold.len() as u64
    );
    proxy.pause();
    // Each within a bound far below the old behaviour (about 90 s inside the daemon, twice
    // that for the application) and well above 2 s, so a slow machine does not fail it.
    let limit = Duration::from_secs(20);
    let t0 = Instant::now();
    let e = std::fs::read(m.p("cold")).unwrap_err();
    let read_took = t0.elapsed();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    eprintln!("stalled read: EIO after {read_took:?}");
    assert!(read_took < limit, "a stalled read took {read_took:?}");
    let t0 = Instant::now();
    let e = write_closed(&m.p("new"), b"written while the store stalls").unwrap_err();
    let close_took = t0.elapsed();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    eprintln!("stalled close: EIO after {close_took:?}");
    assert!(close_took < limit, "a stalled close took {close_took:?}");
    proxy.resume();
    // Recovered: the failed read's EIO is not remembered past a moment.
    let t0 = Instant::now();
    loop {
        match std::fs::read(m.p("cold")) {
            Ok(b) => {
                assert!(b == cold, "wrong bytes after recovery");
                break;
            }
            Err(e) => assert!(t0.elapsed() < limit, "no recovery: {e}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    write_closed(&m.p("after"), b"the store answers again").unwrap();
    assert_eq!(
        ufs.get("after").as_deref(),
        Some(&b"the store answers again"[..])
    );
}
