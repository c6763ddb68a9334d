//! Durability under SIGKILL: what fsync (every write type) or close (ASYNC_THROUGH, as
//! docs/SEMANTICS.md promises) acknowledged reads back byte for byte after the daemon is
//! killed and mounted again, through the mount and, once uploaded, in the store. Each
//! test kills at one of the moments where a daemon holds state that is not yet durable:
//! right after fsync, right after close while the upload waits, while the upload runs,
//! and right after the upload landed.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on failure by design"
)]

mod support;

use std::time::{Duration, Instant};

use support::*;

/// CACHE_THROUGH: what fsync acknowledged is in the store at once, and a daemon killed
/// with SIGKILL loses none of it.
#[test]
fn cli_kill9_after_fsync_loses_nothing_cache_through() {
    let mut env = Env::new();
    env.mount(&[]);
    let data = pattern(5_000_000, 7);
    write_fsync(&env.mnt().join("f"), &data);
    assert_eq!(
        std::fs::read(env.ufs().join("f")).unwrap(),
        data,
        "complete in the UFS when fsync returns"
    );
    kill9(&mut env);
    env.mount(&[]);
    assert_eq!(std::fs::read(env.mnt().join("f")).unwrap(), data);
    assert_eq!(std::fs::read(env.ufs().join("f")).unwrap(), data);
}

/// ASYNC_THROUGH: fsync makes the bytes durable in the local journal (the store has
/// nothing yet); after SIGKILL and a restart the upload resumes and completes.
#[test]
fn cli_async_through_uploads_after_restart() {
    let mut env = Env::new();
    env.mount(&["-o", "write_type=ASYNC_THROUGH,upload_delay=600"]);
    let data = pattern(3_000_000, 9);
    write_fsync(&env.mnt().join("f"), &data);
    assert!(
        !env.ufs().join("f").exists(),
        "the upload must still be pending"
    );
    assert_eq!(
        std::fs::read(env.mnt().join("f")).unwrap(),
        data,
        "readable from the journal"
    );
    kill9(&mut env);
    env.mount(&["-o", "write_type=ASYNC_THROUGH"]);
    // Readable at once (from the journal), and uploaded in the background.
    assert_eq!(std::fs::read(env.mnt().join("f")).unwrap(), data);
    let start = Instant::now();
    while std::fs::read(env.ufs().join("f")).ok().as_deref() != Some(&data[..]) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "upload did not resume"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Once uploaded, the journal is empty.
    let journal: Vec<_> = std::fs::read_dir(env.base.path().join("home/mounts"))
        .unwrap()
        .flat_map(|m| std::fs::read_dir(m.unwrap().path().join("cache/journal")).unwrap())
        .collect();
    let start = Instant::now();
    let mut left = journal.len();
    while left > 0 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        left = std::fs::read_dir(env.base.path().join("home/mounts"))
            .unwrap()
            .flat_map(|m| std::fs::read_dir(m.unwrap().path().join("cache/journal")).unwrap())
            .count();
    }
    assert_eq!(left, 0, "journal entries left after upload");
}

/// ASYNC_THROUGH, killed the moment the background upload of an fsynced file has landed
/// and its journal entry is gone: the namespace's switch to the store's version must be
/// durable before the entry goes, or the file reads as ESTALE for ever.
#[test]
fn cli_kill9_async_through_just_after_the_upload_landed() {
    let mut env = Env::new();
    let opts = ["-o", "write_type=ASYNC_THROUGH,upload_delay=0"];
    env.mount(&opts);
    for i in 0..3u32 {
        let name = format!("f{i}");
        let data = pattern(2 << 20, 40 + i);
        {
            use std::io::Write;
            let mut f = std::fs::File::create(env.mnt().join(&name)).unwrap();
            f.write_all(&data).unwrap();
            f.sync_all().unwrap();
        }
        let ufs = env.ufs().join(&name);
        assert!(
            within(Duration::from_secs(20), || {
                journal_entries(&env) == 0 && std::fs::read(&ufs).ok().as_deref() == Some(&data[..])
            }),
            "upload of {name} did not land"
        );
        kill9(&mut env);
        env.mount(&opts);
        assert_eq!(
            read_matches(&env.mnt().join(&name), &data),
            "ok",
            "{name} after the kill"
        );
    }
}

/// ASYNC_THROUGH, killed 0.3 s after close while the upload still waits out its delay:
/// close acknowledged the file, so the name and its journal entry both survive, and the
/// upload resumes at the next mount.
#[test]
fn cli_kill9_async_through_just_after_close_with_an_upload_delay() {
    let mut env = Env::new();
    env.mount(&["-o", "write_type=ASYNC_THROUGH,upload_delay=5"]);
    let data = pattern(2 << 20, 11);
    std::fs::create_dir(env.mnt().join("d")).unwrap();
    std::fs::write(env.mnt().join("d/closed"), &data).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(!env.ufs().join("d/closed").exists(), "uploaded too early");
    kill9(&mut env);
    env.mount(&["-o", "write_type=ASYNC_THROUGH,upload_delay=0"]);
    assert_eq!(
        read_matches(&env.mnt().join("d/closed"), &data),
        "ok",
        "through the mount after the kill"
    );
    let ufs = env.ufs().join("d/closed");
    assert!(
        within(Duration::from_secs(30), || std::fs::read(&ufs)
            .ok()
            .as_deref()
            == Some(&data[..])),
        "the upload did not resume"
    );
}

/// ASYNC_THROUGH on S3, killed while a 48 MiB multipart upload runs: after the restart
/// the file reads whole from the journal and the upload completes in the store.
#[test]
fn cli_kill9_async_through_while_the_upload_runs() {
    // A bucket of its own: the server outlives test runs, and an earlier run's object
    // or unfinished upload must not count.
    let bucket = format!("kill-during-upload-{}", std::process::id());
    let endpoint = s3_bucket(&bucket);
    let hostport = endpoint.trim_start_matches("http://").to_string();
    let opts = format!(
        "write_type=ASYNC_THROUGH,upload_delay=0,{}",
        s3_opts(&endpoint)
    );
    let mut env = Env::new();
    let uri = format!("s3://{bucket}/p");
    env.mount_uri(&uri, &["-o", &opts]);
    let data = pattern(48 << 20, 5);
    std::fs::write(env.mnt().join("big"), &data).unwrap();
    // The kill comes once the store shows the multipart upload in progress.
    assert!(
        within(Duration::from_secs(20), || {
            let (_, body) = http_bytes(&hostport, &format!("/{bucket}?uploads"));
            String::from_utf8_lossy(&body).contains("<UploadId>")
        }),
        "no multipart upload started"
    );
    let (status, _) = http_bytes(&hostport, &format!("/{bucket}/p/big"));
    assert!(!status.contains(" 200"), "the upload finished already");
    kill9(&mut env);
    env.mount_uri(&uri, &["-o", &opts]);
    assert_eq!(
        read_matches(&env.mnt().join("big"), &data),
        "ok",
        "through the mount after the kill"
    );
    assert!(
        within(Duration::from_secs(60), || {
            let (status, body) = http_bytes(&hostport, &format!("/{bucket}/p/big"));
            status.contains(" 200") && body == data
        }),
        "the upload did not complete in the store"
    );
}

/// Changes that live in the namespace only (modes, owners, xattrs, symlinks, hard links,
/// a FIFO, an empty directory's rename) are kept through a SIGKILL that comes right after
/// they returned, with no fsync: each commit is in the namespace's redo log before the
/// operation returns. (Before the log, a kill lost up to the last second of them.)
#[test]
fn cli_kill9_keeps_namespace_changes() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut env = Env::new();
    env.mount(&[]);
    let m = env.mnt().to_path_buf();
    std::fs::write(m.join("f"), b"data").unwrap();
    std::thread::sleep(Duration::from_millis(1500)); // the flusher made the file durable
    std::fs::set_permissions(m.join("f"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(m.join("f"), Some(4321), Some(1234)).unwrap();
    xattr_set(&m.join("f"), "user.tag", b"kept");
    std::os::unix::fs::symlink("f", m.join("link")).unwrap();
    std::fs::hard_link(m.join("f"), m.join("second")).unwrap();
    nix::unistd::mkfifo(
        &m.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    std::fs::create_dir(m.join("d1")).unwrap();
    std::fs::rename(m.join("d1"), m.join("d2")).unwrap();
    kill9(&mut env);
    env.mount(&[]);
    let md = std::fs::metadata(m.join("f")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o640);
    assert_eq!((md.uid(), md.gid()), (4321, 1234));
    assert_eq!(md.nlink(), 2);
    assert_eq!(xattr_get(&m.join("f"), "user.tag"), b"kept");
    assert_eq!(
        std::fs::read_link(m.join("link")).unwrap(),
        std::path::Path::new("f")
    );
    assert_eq!(std::fs::read(m.join("second")).unwrap(), b"data");
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(m.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(m.join("d2").is_dir() && !m.join("d1").exists());
}

/// A rename the daemon was killed in the middle of, between its store step and its
/// namespace step, is finished at the next mount before anything is served: the renamed
/// inode keeps its mode, xattrs and bytes under the new name (a listing alone would show
/// the moved object as a new file), for a file whose object moved, one over a target
/// whose object it replaced, and a directory that had not moved yet.
#[test]
fn cli_kill9_in_a_rename_is_finished_at_the_next_mount() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut env = Env::new();
    env.mount(&[]);
    let m = env.mnt().to_path_buf();
    for d in ["a", "b", "d", "k"] {
        std::fs::create_dir(m.join(d)).unwrap();
    }
    for (f, body) in [
        ("a/f1", "one"),
        ("a/f2", "two"),
        ("a/f3", "three"),
        ("d/x", "x"),
        ("k/y", "y"),
    ] {
        std::fs::write(m.join(f), body).unwrap();
    }
    std::fs::set_permissions(m.join("a/f1"), std::fs::Permissions::from_mode(0o600)).unwrap();
    xattr_set(&m.join("a/f1"), "user.k", b"v1");
    xattr_set(&m.join("a/f3"), "user.k", b"v3");
    let ino = |p: &str| std::fs::metadata(m.join(p)).unwrap().ino();
    let (a, b, root) = (ino("a"), ino("b"), ino("."));
    xattr_set(&m.join("k/y"), "user.k", b"vy");
    let (f1, f3, d, k) = (ino("a/f1"), ino("a/f3"), ino("d"), ino("k"));
    kill9(&mut env);
    // The crash states: f1, f3 (over f2's object) and k moved in the store, d not yet.
    let ufs = env.ufs();
    std::fs::rename(ufs.join("a/f1"), ufs.join("b/g")).unwrap();
    std::fs::rename(ufs.join("a/f3"), ufs.join("a/f2")).unwrap();
    std::fs::rename(ufs.join("k"), ufs.join("k2")).unwrap();
    let cache = std::fs::read_dir(env.base.path().join("home/mounts"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("cache");
    let line = |id: u64, ino: u64, parent: u64, name: &str, np: u64, nn: &str| {
        format!(
            "{{\"Begin\":{{\"id\":{id},\"intent\":{{\"ino\":{ino},\"parent\":{parent},\"name\":{:?},\"newparent\":{np},\"newname\":{:?}}}}}}}\n",
            name.as_bytes(),
            nn.as_bytes()
        )
    };
    std::fs::write(
        cache.join("renames.log"),
        [
            line(1, f1, a, "f1", b, "g"),
            line(2, f3, a, "f3", a, "f2"),
            line(3, d, root, "d", root, "e"),
            line(4, k, root, "k", root, "k2"),
        ]
        .concat(),
    )
    .unwrap();
    env.mount(&[]);
    assert_eq!(std::fs::read(m.join("b/g")).unwrap(), b"one");
    assert_eq!(ino("b/g"), f1, "the same inode");
    assert_eq!(
        std::fs::metadata(m.join("b/g")).unwrap().mode() & 0o777,
        0o600
    );
    assert_eq!(xattr_get(&m.join("b/g"), "user.k"), b"v1");
    assert!(!m.join("a/f1").exists());
    assert_eq!(std::fs::read(m.join("a/f2")).unwrap(), b"three");
    assert_eq!(ino("a/f2"), f3);
    assert_eq!(xattr_get(&m.join("a/f2"), "user.k"), b"v3");
    assert!(!m.join("a/f3").exists());
    assert_eq!(std::fs::read(m.join("e/x")).unwrap(), b"x");
    assert!(!m.join("d").exists());
    assert_eq!(xattr_get(&m.join("k2/y"), "user.k"), b"vy");
    assert!(!m.join("k").exists());
    assert_eq!(
        std::fs::read(ufs.join("e/x")).unwrap(),
        b"x",
        "moved in the store too"
    );
    assert_eq!(
        std::fs::metadata(cache.join("renames.log")).unwrap().len(),
        0
    );
}

/// Killed between an upload and the namespace change recording it: the store is ahead of
/// the namespace. A file read at the next mount through a second link, in another
/// directory than its object's, reads the store's bytes (its object's directory is
/// listed too), not ESTALE (found by the kill -9 campaign).
#[test]
fn cli_kill9_a_second_link_reads_what_the_store_has() {
    let mut env = Env::new();
    env.mount(&[]);
    let m = env.mnt().to_path_buf();
    std::fs::create_dir(m.join("d")).unwrap();
    std::fs::write(m.join("d/f"), b"old").unwrap();
    std::fs::hard_link(m.join("d/f"), m.join("g")).unwrap();
    assert_eq!(std::fs::read(m.join("g")).unwrap(), b"old");
    kill9(&mut env);
    // The upload of a rewrite landed; its namespace change did not.
    std::fs::write(env.ufs().join("d/f"), b"newer bytes").unwrap();
    env.mount(&[]);
    // Listed first, as `ls` or a directory walk does: the kernel may then open g by the
    // inode the listing gave, with no lookup.
    assert_eq!(std::fs::read_dir(&m).unwrap().count(), 2);
    assert_eq!(std::fs::read(m.join("g")).unwrap(), b"newer bytes");
    assert_eq!(std::fs::read(m.join("d/f")).unwrap(), b"newer bytes");
}

/// ASYNC_THROUGH, killed after an unlink returned and before its object's background
/// delete ran: the next mount never shows the file again (its listing leaves the object
/// out) and deletes the object.
#[test]
fn cli_kill9_async_through_after_an_unlink_its_delete_still_happens() {
    let mut env = Env::new();
    env.mount(&["-o", "write_type=ASYNC_THROUGH"]);
    std::fs::write(env.mnt().join("f"), b"to be unlinked").unwrap();
    assert!(
        within(Duration::from_secs(20), || env.ufs().join("f").exists()
            && journal_entries(&env) == 0),
        "f was not uploaded"
    );
    kill9(&mut env);
    // A queue held up by an upload's delay: the delete waits behind it.
    env.mount(&["-o", "write_type=ASYNC_THROUGH,upload_delay=30"]);
    std::fs::write(env.mnt().join("g"), b"g").unwrap();
    std::fs::remove_file(env.mnt().join("f")).unwrap();
    assert!(
        env.ufs().join("f").exists(),
        "the delete ran before the kill"
    );
    kill9(&mut env);
    env.mount(&["-o", "write_type=ASYNC_THROUGH"]);
    let names: Vec<_> = std::fs::read_dir(env.mnt())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.contains(&"f".to_string()), "{names:?}");
    assert_eq!(std::fs::read(env.mnt().join("g")).unwrap(), b"g");
    assert!(
        within(Duration::from_secs(20), || !env.ufs().join("f").exists()),
        "the object was not deleted after the restart"
    );
}

fn cpath(p: &std::path::Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

fn xattr_set(p: &std::path::Path, name: &str, value: &[u8]) {
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: NUL-terminated path and name, and a value buffer of the given length.
    let r = unsafe {
        libc::setxattr(
            cpath(p).as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr: {}", std::io::Error::last_os_error());
}

fn xattr_get(p: &std::path::Path, name: &str) -> Vec<u8> {
    let name = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: NUL-terminated path and name, and a buffer of the given length.
    let n = unsafe {
        libc::getxattr(
            cpath(p).as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert!(n >= 0, "getxattr: {}", std::io::Error::last_os_error());
    buf.truncate(n as usize);
    buf
}

/// CACHE_THROUGH and THROUGH, killed right after close: close uploaded the whole object,
/// and the namespace change that records it (not yet durable) dies with the daemon. The
/// next mount lists each directory before it answers a name in it, so it reads what the
/// store has: a new file whose create was durable (it reads as empty without that) and an
/// overwrite of an fsynced file (it reads the old size without that).
#[test]
fn cli_kill9_after_close_reads_what_the_store_has() {
    use std::io::Write;
    for wtype in ["CACHE_THROUGH", "THROUGH"] {
        let mut env = Env::new();
        let opts = format!("write_type={wtype}");
        env.mount(&["-o", &opts]);
        let old = pattern(3 << 20, 1);
        let new = pattern(1 << 20, 2);
        let fresh = pattern(2 << 20, 3);
        write_fsync(&env.mnt().join("over"), &old);
        // `fresh` is created, then another file's fsync makes its create durable; only
        // then are both written and closed.
        let mut f = std::fs::File::create(env.mnt().join("fresh")).unwrap();
        write_fsync(&env.mnt().join("sync"), b"s");
        f.write_all(&fresh).unwrap();
        drop(f);
        std::fs::write(env.mnt().join("over"), &new).unwrap();
        kill9(&mut env);
        env.mount(&["-o", &opts]);
        for (name, want) in [("fresh", &fresh), ("over", &new)] {
            assert_eq!(
                read_matches(&env.mnt().join(name), want),
                "ok",
                "{wtype}: {name} after the kill"
            );
        }
    }
}

/// `alluxio fsck` over a stopped daemon's state directory: clean after ordinary work;
/// an object deleted or rewritten underneath and one the namespace never saw are found
/// (exit 4, the unknown object listed and left alone); `--repair` marks their
/// directories to be listed again (exit 1), after which the check is clean and the next
/// mount shows the store's state.
#[test]
fn cli_fsck_checks_a_state_dir_against_its_store_and_repairs() {
    let mut env = Env::new();
    let state = env.base.path().join("state");
    let state_arg = state.to_str().unwrap().to_string();
    // Written, fsynced and closed (`write_fsync` keeps its file open, which would hold
    // the unmounted connection, and the daemon, alive).
    let put = |p: &std::path::Path, data: &[u8]| {
        let f = std::fs::File::create(p).unwrap();
        std::io::Write::write_all(&mut &f, data).unwrap();
        f.sync_all().unwrap();
    };
    env.mount(&["--state-dir", &state_arg]);
    std::fs::create_dir(env.mnt().join("a")).unwrap();
    std::fs::create_dir(env.mnt().join("b")).unwrap();
    put(&env.mnt().join("a/f1"), &pattern(3 << 20, 1));
    put(&env.mnt().join("a/f2"), b"two");
    std::fs::hard_link(env.mnt().join("a/f1"), env.mnt().join("b/h")).unwrap();
    put(&env.mnt().join("b/g"), b"gee");
    let o = env.run(&["fuse", "unmount", env.mnt().to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    env.wait();
    let ufs = env.ufs().to_str().unwrap().to_string();
    let fsck = |env: &Env, extra: &[&str]| {
        let mut args = vec!["fsck", "--state-dir", &state_arg, "--ufs", &ufs];
        args.extend_from_slice(extra);
        let o = env.run(&args);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        (o.status.code(), out + &String::from_utf8_lossy(&o.stderr))
    };
    let (code, out) = fsck(&env, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(" 0 inconsistencies"), "{out}");
    std::fs::remove_file(env.ufs().join("a/f2")).unwrap();
    std::fs::write(env.ufs().join("b/g"), b"longer now").unwrap();
    std::fs::write(env.ufs().join("a/extra"), b"x").unwrap();
    let (code, out) = fsck(&env, &[]);
    assert_eq!(code, Some(4), "{out}");
    for want in [
        "store: a/f2: no object in the store",
        "store: b/g: the namespace has 3 bytes, the store 10",
        "not in the namespace: a/extra",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    let (code, out) = fsck(&env, &["--repair"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("2 directories will be listed from the store again"),
        "{out}"
    );
    assert!(
        env.ufs().join("a/extra").exists(),
        "fsck never deletes objects"
    );
    let (code, out) = fsck(&env, &[]);
    assert_eq!(code, Some(0), "{out}");
    env.mount(&["--state-dir", &state_arg]);
    let mut names: Vec<String> = std::fs::read_dir(env.mnt().join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["extra", "f1"]);
    assert_eq!(std::fs::read(env.mnt().join("b/g")).unwrap(), b"longer now");
    assert_eq!(
        std::fs::read(env.mnt().join("b/h")).unwrap(),
        pattern(3 << 20, 1)
    );
    // A running daemon holds the namespace: fsck says so, and changes nothing.
    let (code, out) = fsck(&env, &[]);
    assert_eq!(code, Some(8), "{out}");
    assert!(out.contains("stop it first"), "{out}");
}

/// `alluxio fsck --metaserver`: a running namespace is checked through its metaserver,
/// against the store of its mount table's root, while daemons use it.
#[test]
fn cli_fsck_checks_a_running_metaserver() {
    let ms = Metaserver::start("fsck-token");
    let args = ms.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut env = Env::new();
    env.mount(&args);
    std::fs::create_dir(env.mnt().join("d")).unwrap();
    std::fs::write(env.mnt().join("d/f"), b"through the metaserver").unwrap();
    std::fs::write(env.ufs().join("d/other"), b"written by another tool").unwrap();
    let ufs = env.ufs().to_str().unwrap().to_string();
    let mut fsck = vec!["fsck", "--ufs", &ufs];
    fsck.extend_from_slice(&args);
    let o = env.run(&fsck);
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("not in the namespace: d/other"), "{out}");
    std::fs::remove_file(env.ufs().join("d/f")).unwrap();
    let o = env.run(&fsck);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(4), "{out}");
    assert!(out.contains("store: d/f: no object in the store"), "{out}");
}
