//! What the mount refuses, and with which errno (docs/SEMANTICS.md).

use crate::harness::{Backend, Mount, MountDirs, TestUfs};

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
    assert_eq!(
        errno(std::os::unix::fs::symlink("f", m.p("l"))),
        libc::EPERM
    );
    assert_eq!(errno(std::fs::hard_link(m.p("f"), m.p("h"))), libc::EPERM);
    assert_eq!(
        errno(
            nix::unistd::mkfifo(
                &m.p("fifo"),
                nix::sys::stat::Mode::from_bits_truncate(0o644)
            )
            .map_err(std::io::Error::from)
        ),
        libc::EPERM
    );
    // Directory rename gives EXDEV, so mv(1) falls back to copy + delete.
    assert_eq!(errno(std::fs::rename(m.p("dir"), m.p("dir2"))), libc::EXDEV);
    assert_eq!(errno(xattr_get(&m.p("f"))), libc::EOPNOTSUPP);
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
