//! Symlinks, hard links, special files, xattrs, directory rename and unlink of open files,
//! and what the store shows for each (docs/SEMANTICS.md, "Layout in the store").

use std::io::{Read, Seek, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crate::harness::{Backend, Mount, MountDirs, TestUfs, data, renameat2};
use crate::{backend_tests, store_tests};

fn fuse_symlinks_and_special_files_live_in_the_namespace(b: Backend) {
    let ufs = TestUfs::new(b);
    ufs.put("target", b"pointed-at");
    let dirs = MountDirs::new();
    {
        let m = Mount::new(&ufs, &dirs);
        std::os::unix::fs::symlink("target", m.p("sym")).unwrap();
        assert_eq!(
            std::fs::read_link(m.p("sym")).unwrap().to_str(),
            Some("target")
        );
        assert_eq!(std::fs::read(m.p("sym")).unwrap(), b"pointed-at");
        assert!(
            std::fs::symlink_metadata(m.p("sym"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        nix::unistd::mkfifo(
            &m.p("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o640),
        )
        .unwrap();
        assert!(
            std::fs::metadata(m.p("fifo"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        nix::sys::stat::mknod(
            &m.p("null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        let md = std::fs::metadata(m.p("null")).unwrap();
        assert!(md.file_type().is_char_device());
        assert_eq!(md.rdev(), nix::sys::stat::makedev(1, 3));
        // The store holds none of them.
        for k in ["sym", "fifo", "null"] {
            assert_eq!(ufs.get(k), None, "{k}");
        }
    }
    // They survive a remount (the namespace keeps them; the listing does not drop them).
    let m = Mount::new(&ufs, &dirs);
    assert_eq!(
        std::fs::read_link(m.p("sym")).unwrap().to_str(),
        Some("target")
    );
    assert!(
        std::fs::metadata(m.p("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(
        std::fs::metadata(m.p("null"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
}

fn fuse_hard_links_keep_one_object_at_the_primary_name(b: Backend) {
    let ufs = TestUfs::new(b);
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);
    std::fs::create_dir(m.p("d")).unwrap();
    std::fs::write(m.p("a"), b"shared").unwrap();
    std::fs::hard_link(m.p("a"), m.p("d/b")).unwrap();
    assert_eq!(std::fs::metadata(m.p("a")).unwrap().nlink(), 2);
    assert_eq!(
        std::fs::metadata(m.p("a")).unwrap().ino(),
        std::fs::metadata(m.p("d/b")).unwrap().ino()
    );
    assert_eq!(ufs.get("a").as_deref(), Some(&b"shared"[..]));
    assert_eq!(ufs.get("d/b"), None, "secondary links are namespace-only");
    // Writing through the second name updates the one object.
    std::fs::write(m.p("d/b"), b"changed").unwrap();
    assert_eq!(ufs.get("a").as_deref(), Some(&b"changed"[..]));
    assert_eq!(std::fs::read(m.p("a")).unwrap(), b"changed");
    // Removing the primary name moves the object to the remaining one.
    std::fs::remove_file(m.p("a")).unwrap();
    assert_eq!(ufs.get("a"), None);
    assert_eq!(ufs.get("d/b").as_deref(), Some(&b"changed"[..]));
    assert_eq!(std::fs::metadata(m.p("d/b")).unwrap().nlink(), 1);
    assert_eq!(std::fs::read(m.p("d/b")).unwrap(), b"changed");
}

fn fuse_directory_rename_moves_every_object(b: Backend) {
    let ufs = TestUfs::new(b);
    ufs.put("src/a", b"a");
    ufs.put("src/sub/b", &data(3 << 20, 5));
    ufs.put("src/sub/deeper/c", b"c");
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);
    // Load only the top of the tree: the rename must still move the unloaded parts.
    assert_eq!(std::fs::read(m.p("src/a")).unwrap(), b"a");
    std::os::unix::fs::symlink("a", m.p("src/link")).unwrap();
    std::fs::create_dir(m.p("dst")).unwrap();
    std::fs::rename(m.p("src"), m.p("dst/moved")).unwrap();
    assert!(std::fs::metadata(m.p("src")).is_err());
    assert_eq!(ufs.get("src/a"), None);
    assert_eq!(ufs.get("dst/moved/a").as_deref(), Some(&b"a"[..]));
    assert_eq!(ufs.get("dst/moved/sub/b").map(|v| v.len()), Some(3 << 20));
    assert_eq!(
        ufs.get("dst/moved/sub/deeper/c").as_deref(),
        Some(&b"c"[..])
    );
    assert_eq!(std::fs::read(m.p("dst/moved/sub/deeper/c")).unwrap(), b"c");
    assert_eq!(
        std::fs::read(m.p("dst/moved/sub/b")).unwrap(),
        data(3 << 20, 5)
    );
    assert_eq!(
        std::fs::read_link(m.p("dst/moved/link")).unwrap().to_str(),
        Some("a")
    );
    // Over an empty directory; onto a non-empty one is ENOTEMPTY.
    std::fs::create_dir(m.p("empty")).unwrap();
    std::fs::rename(m.p("dst/moved"), m.p("empty")).unwrap();
    assert_eq!(ufs.get("empty/a").as_deref(), Some(&b"a"[..]));
    std::fs::create_dir_all(m.p("full/x")).unwrap();
    let e = std::fs::rename(m.p("empty"), m.p("full")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY));
    let e = std::fs::rename(m.p("empty"), m.p("empty/sub")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
}

fn fuse_unlinked_open_file_keeps_its_data(b: Backend) {
    let ufs = TestUfs::new(b);
    let d = data((2 << 20) + 5, 8);
    ufs.put("f", &d);
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);
    let mut f = std::fs::File::options()
        .read(true)
        .write(true)
        .open(m.p("f"))
        .unwrap();
    std::fs::remove_file(m.p("f")).unwrap();
    assert_eq!(
        ufs.get("f"),
        None,
        "the name is gone from the store at unlink"
    );
    assert_eq!(f.metadata().unwrap().nlink(), 0);
    let mut got = Vec::new();
    f.read_to_end(&mut got).unwrap();
    assert_eq!(got, d);
    f.seek(std::io::SeekFrom::Start(0)).unwrap();
    f.write_all(b"HELLO").unwrap();
    f.seek(std::io::SeekFrom::Start(0)).unwrap();
    let mut head = [0u8; 5];
    f.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HELLO");
    drop(f);
    assert_eq!(
        ufs.get("f"),
        None,
        "closing an unlinked file uploads nothing"
    );
    assert!(std::fs::metadata(m.p("f")).is_err());
}

fn fuse_xattrs(b: Backend) {
    let ufs = TestUfs::new(b);
    ufs.put("f", b"x");
    let dirs = MountDirs::new();
    {
        let m = Mount::new(&ufs, &dirs);
        let p = m.p("f");
        xattr::set(&p, "user.a", b"1", 0).unwrap();
        xattr::set(&p, "user.b", &[7u8; 3000], 0).unwrap();
        assert_eq!(xattr::get(&p, "user.a").unwrap(), b"1");
        assert_eq!(
            xattr::list(&p).unwrap(),
            vec!["user.a".to_string(), "user.b".to_string()]
        );
        assert_eq!(
            xattr::set(&p, "user.a", b"2", libc::XATTR_CREATE).unwrap_err(),
            libc::EEXIST
        );
        assert_eq!(
            xattr::set(&p, "user.c", b"2", libc::XATTR_REPLACE).unwrap_err(),
            libc::ENODATA
        );
        xattr::remove(&p, "user.a").unwrap();
        assert_eq!(xattr::get(&p, "user.a").unwrap_err(), libc::ENODATA);
        assert_eq!(xattr::get_small(&p, "user.b").unwrap_err(), libc::ERANGE);
        // Nothing here enforces LSM labels or POSIX ACLs: those namespaces are refused,
        // and `ls -l` stops asking for them after the first refusal on the device (it
        // asked two or three names of every entry while the answer was ENODATA).
        for name in ["security.selinux", "system.posix_acl_access"] {
            assert_eq!(xattr::get(&p, name).unwrap_err(), libc::EOPNOTSUPP);
        }
        assert_eq!(
            xattr::set(&p, "security.x", b"1", 0).unwrap_err(),
            libc::EOPNOTSUPP
        );
        std::fs::create_dir(m.p("many")).unwrap();
        for i in 0..40 {
            std::fs::write(m.p(&format!("many/f{i}")), b"").unwrap();
        }
        let before = m.counter("fuse_expected_errors");
        let ls = std::process::Command::new("ls")
            .arg("-lR")
            .arg(m.p("many"))
            .output()
            .unwrap();
        assert!(ls.status.success());
        let refused = m.counter("fuse_expected_errors") - before;
        assert!(
            refused <= 4,
            "ls -lR of 41 entries had {refused} xattr requests refused"
        );
    }
    {
        let m = Mount::new(&ufs, &dirs);
        assert_eq!(xattr::get(&m.p("f"), "user.b").unwrap(), vec![7u8; 3000]);
        assert_eq!(
            ufs.get("f").as_deref(),
            Some(&b"x"[..]),
            "xattrs live in the namespace only"
        );
    }
    // -o noxattr: every xattr call gets EOPNOTSUPP, and after the first the kernel stops
    // asking (what `ls -l` costs per entry otherwise: security.selinux and
    // system.posix_acl_access). What is stored stays, for a mount with xattrs.
    let fuse = alluxio::config::FuseConfig {
        xattr: false,
        ..Default::default()
    };
    let m = Mount::with_fuse(ufs.config(), &dirs, 64 << 20, fuse);
    let p = m.p("f");
    std::fs::metadata(&p).unwrap();
    let before = m.counter("fuse_requests");
    for _ in 0..50 {
        assert_eq!(
            xattr::get(&p, "security.selinux").unwrap_err(),
            libc::EOPNOTSUPP
        );
    }
    assert_eq!(xattr::get(&p, "user.b").unwrap_err(), libc::EOPNOTSUPP);
    assert!(
        m.counter("fuse_requests") <= before + 1,
        "the kernel stopped asking: {} requests",
        m.counter("fuse_requests") - before
    );
    assert_eq!(
        xattr::set(&p, "user.c", b"1", 0).unwrap_err(),
        libc::EOPNOTSUPP
    );
    assert_eq!(xattr::remove(&p, "user.b").unwrap_err(), libc::EOPNOTSUPP);
    drop(m);
    let m = Mount::new(&ufs, &dirs);
    assert_eq!(xattr::get(&m.p("f"), "user.b").unwrap(), vec![7u8; 3000]);
}

/// Minimal xattr calls through libc.
mod xattr {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    fn c(p: &Path) -> CString {
        CString::new(p.as_os_str().as_bytes()).unwrap()
    }
    fn n(s: &str) -> CString {
        CString::new(s).unwrap()
    }
    fn err() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    }
    pub fn set(p: &Path, name: &str, v: &[u8], flags: i32) -> Result<(), i32> {
        // SAFETY: valid C strings and a buffer of the given length.
        let r = unsafe {
            libc::setxattr(
                c(p).as_ptr(),
                n(name).as_ptr(),
                v.as_ptr().cast(),
                v.len(),
                flags,
            )
        };
        if r < 0 { Err(err()) } else { Ok(()) }
    }
    fn get_n(p: &Path, name: &str, cap: usize) -> Result<Vec<u8>, i32> {
        let mut buf = vec![0u8; cap];
        // SAFETY: valid C strings and a buffer of the given length.
        let r = unsafe {
            libc::getxattr(
                c(p).as_ptr(),
                n(name).as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if r < 0 {
            return Err(err());
        }
        buf.truncate(r as usize);
        Ok(buf)
    }
    pub fn get(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
        get_n(p, name, 65536)
    }
    pub fn get_small(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
        get_n(p, name, 16)
    }
    pub fn list(p: &Path) -> Result<Vec<String>, i32> {
        let mut buf = vec![0u8; 4096];
        // SAFETY: a valid C string and a buffer of the given length.
        let r = unsafe { libc::listxattr(c(p).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r < 0 {
            return Err(err());
        }
        buf.truncate(r as usize);
        Ok(buf
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8(s.to_vec()).unwrap())
            .collect())
    }
    pub fn remove(p: &Path, name: &str) -> Result<(), i32> {
        // SAFETY: valid C strings.
        let r = unsafe { libc::removexattr(c(p).as_ptr(), n(name).as_ptr()) };
        if r < 0 { Err(err()) } else { Ok(()) }
    }
}

fn exchange(a: &std::path::Path, b: &std::path::Path) -> std::io::Result<()> {
    renameat2(a, b, libc::RENAME_EXCHANGE)
}

fn fuse_rename_exchange(b: Backend) {
    let ufs = TestUfs::new(b);
    ufs.put("x", b"content of x");
    ufs.put("y", b"content of y");
    ufs.put("d/inner", b"inner");
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);
    let ino = |p: &str| std::fs::symlink_metadata(m.p(p)).unwrap().ino();
    // file <-> file: the objects swap too.
    let (ix, iy) = (ino("x"), ino("y"));
    exchange(&m.p("x"), &m.p("y")).unwrap();
    assert_eq!((ino("x"), ino("y")), (iy, ix));
    assert_eq!(std::fs::read(m.p("x")).unwrap(), b"content of y");
    assert_eq!(ufs.get("x").as_deref(), Some(&b"content of y"[..]));
    assert_eq!(ufs.get("y").as_deref(), Some(&b"content of x"[..]));
    // file <-> directory: the object and the prefix trade places.
    exchange(&m.p("x"), &m.p("d")).unwrap();
    assert!(std::fs::metadata(m.p("x")).unwrap().is_dir());
    assert_eq!(std::fs::read(m.p("x/inner")).unwrap(), b"inner");
    assert_eq!(std::fs::read(m.p("d")).unwrap(), b"content of y");
    assert_eq!(ufs.get("x/inner").as_deref(), Some(&b"inner"[..]));
    assert_eq!(ufs.get("d").as_deref(), Some(&b"content of y"[..]));
    assert_eq!(ufs.get("d/inner"), None);
    // symlink <-> file: only the file has an object.
    std::os::unix::fs::symlink("target", m.p("s")).unwrap();
    exchange(&m.p("s"), &m.p("y")).unwrap();
    assert_eq!(std::fs::read(m.p("s")).unwrap(), b"content of x");
    assert_eq!(
        std::fs::read_link(m.p("y")).unwrap().to_str(),
        Some("target")
    );
    assert_eq!(ufs.get("s").as_deref(), Some(&b"content of x"[..]));
    assert_eq!(ufs.get("y"), None);
    // A missing name is ENOENT; a directory into itself is EINVAL.
    assert_eq!(
        exchange(&m.p("s"), &m.p("nope"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOENT)
    );
    std::fs::create_dir(m.p("x/sub")).unwrap();
    assert_eq!(
        exchange(&m.p("x"), &m.p("x/sub"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EINVAL)
    );
}

/// Keys longer than the store accepts are refused with ENAMETOOLONG before any request.
fn fuse_keys_longer_than_the_store_accepts(b: Backend) {
    let ufs = TestUfs::new(b);
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);
    let seg = "d".repeat(250);
    // S3 keys stop at 1024 bytes: five 250-byte levels are over; a local path is not.
    let mut p = m.path.clone();
    let mut refused = None;
    for level in 0..5 {
        p = p.join(&seg);
        if let Err(e) = std::fs::create_dir(&p) {
            refused = Some((level, e.raw_os_error()));
            break;
        }
    }
    match b {
        // Azure Blob and GCS hold 1024 characters or bytes too.
        Backend::S3 | Backend::Azure | Backend::Gcs => {
            assert_eq!(refused, Some((4, Some(libc::ENAMETOOLONG))))
        }
        Backend::Fs | Backend::WebDav => assert_eq!(refused, None),
    }
}

backend_tests!(
    fuse_keys_longer_than_the_store_accepts,
    fuse_rename_exchange,
    fuse_symlinks_and_special_files_live_in_the_namespace,
    fuse_hard_links_keep_one_object_at_the_primary_name,
    fuse_directory_rename_moves_every_object,
    fuse_unlinked_open_file_keeps_its_data,
    fuse_xattrs,
);
store_tests!(
    fuse_directory_rename_moves_every_object,
    fuse_rename_exchange,
    fuse_keys_longer_than_the_store_accepts
);
