//! End-to-end tests of the `alluxio` binary: the real CLI mounts through the kernel, is
//! read with `sha256sum`, reports counters through `alluxio fuse stats`, and unmounts by
//! command and by signal. Bad input must give one line on stderr, a non-zero exit, no
//! panic and no mount left behind.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on failure by design"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_alluxio");

fn mount_type(p: &Path) -> Option<String> {
    let canon = p.canonicalize().ok()?;
    let want = canon.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/mounts")
        .ok()?
        .lines()
        .rev()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&want.as_str())).then(|| f[2].to_string())
        })
}

/// A temp home for one daemon; holds the child and cleans up on every exit path.
struct Env {
    base: tempfile::TempDir,
    child: Option<Child>,
}

impl Env {
    fn new() -> Self {
        let base = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(base.path().join("mnt")).unwrap();
        std::fs::create_dir_all(base.path().join("ufs")).unwrap();
        Self { base, child: None }
    }
    fn mnt(&self) -> PathBuf {
        self.base.path().join("mnt")
    }
    fn ufs(&self) -> PathBuf {
        self.base.path().join("ufs")
    }
    fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("ALLUXIO_HOME", self.base.path().join("home"))
            .env("ALLUXIO_RUN_DIR", self.base.path().join("run"))
            .env_remove("ALLUXIO_LOG")
            .stdin(Stdio::null());
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        let mut c = self.cmd();
        c.args(args);
        with_timeout(c, Duration::from_secs(60))
    }
    /// Starts `alluxio fuse mount` in the background and waits until the mount is live.
    fn mount(&mut self, extra: &[&str]) {
        let mut c = self.cmd();
        c.args(["fuse", "mount"])
            .arg(self.mnt())
            .arg("--ufs")
            .arg(self.ufs())
            .args(extra);
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        self.child = Some(c.spawn().unwrap());
        let start = Instant::now();
        while mount_type(&self.mnt()).as_deref() != Some("fuse.alluxio") {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited early: {st}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "mount did not appear"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    fn stats(&self) -> serde_json::Value {
        let o = self.run(&["fuse", "stats", self.mnt().to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }
    /// Waits for the daemon to exit; returns its status.
    fn wait(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_mut().unwrap();
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return st;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "daemon did not exit"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if mount_type(&self.mnt()).is_some() {
            let _ = nix::mount::umount2(&self.mnt(), nix::mount::MntFlags::MNT_DETACH);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn with_timeout(mut c: Command, limit: Duration) -> Output {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("command timed out: {c:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn sha256sum(root: &Path, files: &[String]) -> String {
    let o = Command::new("sha256sum")
        .current_dir(root)
        .args(files)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn write_tree(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for (i, (name, len)) in [
        ("empty", 0usize),
        ("one", 1),
        ("d/page-minus", (1 << 20) - 1),
        ("d/page", 1 << 20),
        ("d/e/page-plus", (1 << 20) + 1),
        ("d/e/big", 33 << 20),
    ]
    .iter()
    .enumerate()
    {
        let p = root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D ^ i as u64;
        let bytes: Vec<u8> = (0..*len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(&p, bytes).unwrap();
        files.push(name.to_string());
    }
    files
}

#[test]
fn cli_mount_sha256_stats_write_unmount() {
    let mut env = Env::new();
    let files = write_tree(&env.ufs());
    env.mount(&[]);
    let want = sha256sum(&env.ufs(), &files);
    assert_eq!(sha256sum(&env.mnt(), &files), want);
    let cold = env.stats();
    let cold_reads = cold["counters"]["ufs_reads"].as_u64().unwrap();
    assert!(cold_reads >= 36, "{cold}");
    assert_eq!(sha256sum(&env.mnt(), &files), want);
    let warm = env.stats();
    assert_eq!(
        warm["counters"]["ufs_reads"].as_u64().unwrap(),
        cold_reads,
        "{warm}"
    );
    assert_eq!(
        warm["counters"]["ufs_requests"], cold["counters"]["ufs_requests"],
        "{warm}"
    );

    // A file written through the mount is a plain file in the UFS, byte for byte.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(env.mnt().join("d/written"), &data).unwrap();
    assert_eq!(std::fs::read(env.ufs().join("d/written")).unwrap(), data);

    let o = env.run(&["fuse", "unmount", env.mnt().to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(env.wait().success());
    assert_eq!(mount_type(&env.mnt()), None);
}

#[test]
fn cli_signals_unmount_cleanly() {
    for sig in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ] {
        let mut env = Env::new();
        std::fs::write(env.ufs().join("f"), b"x").unwrap();
        env.mount(&["-o", "uid=1234,file_mode=640"]);
        {
            use std::os::unix::fs::MetadataExt;
            let md = std::fs::metadata(env.mnt().join("f")).unwrap();
            assert_eq!((md.uid(), md.mode() & 0o7777), (1234, 0o640));
        }
        let pid = nix::unistd::Pid::from_raw(env.child.as_ref().unwrap().id() as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
        assert!(env.wait().success(), "{sig}");
        assert_eq!(mount_type(&env.mnt()), None, "{sig}");
    }
}

/// Runs a bad invocation and checks: non-zero exit, one line on stderr naming the
/// problem, no panic, nothing mounted.
fn refused(env: &Env, args: &[&str], expect: &str) {
    let o = env.run(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} succeeded");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: expected one line, got {err:?}");
    assert!(
        lines[0].contains(expect),
        "{args:?}: {:?} lacks {expect:?}",
        lines[0]
    );
    assert_eq!(mount_type(&env.mnt()), None, "{args:?} left a mount");
}

#[test]
fn cli_bad_input_is_one_line_and_leaves_no_mount() {
    let env = Env::new();
    let mnt = env.mnt();
    let ufs = env.ufs();
    let (m, u) = (mnt.to_str().unwrap(), ufs.to_str().unwrap());
    let missing = env.base.path().join("nope");
    refused(
        &env,
        &["fuse", "mount", missing.to_str().unwrap(), "--ufs", u],
        "mountpoint",
    );
    refused(
        &env,
        &["fuse", "mount", m, "--ufs", "::not a uri"],
        "cannot parse UFS URI",
    );
    refused(
        &env,
        &["fuse", "mount", m, "--ufs", "/no/such/ufs/dir"],
        "does not exist",
    );
    refused(
        &env,
        &[
            "fuse",
            "mount",
            m,
            "--ufs",
            "s3://bucket/p",
            "-o",
            "endpoint=http://127.0.0.1:1,access_key_id=a,secret_access_key=b",
        ],
        "cannot reach UFS",
    );
    refused(
        &env,
        &[
            "fuse",
            "mount",
            m,
            "--ufs",
            u,
            "--cache-dir",
            "/proc/alluxio-cannot-exist",
        ],
        "cache directory",
    );
    let file = env.base.path().join("plainfile");
    std::fs::write(&file, b"").unwrap();
    let under_file = file.join("state");
    refused(
        &env,
        &[
            "fuse",
            "mount",
            m,
            "--ufs",
            u,
            "--state-dir",
            under_file.to_str().unwrap(),
        ],
        "state directory",
    );
    refused(
        &env,
        &["fuse", "mount", m, "--ufs", u, "-o", "frobnicate"],
        "unknown mount option",
    );
    refused(
        &env,
        &["fuse", "mount", m, "--ufs", u, "--cache-size", "lots"],
        "cache-size",
    );
    refused(&env, &["fuse", "unmount", m], "not a FUSE mount");
    refused(&env, &["fuse", "stats", m], "no alluxio daemon");
}

fn kill9(env: &mut Env) {
    let pid = nix::unistd::Pid::from_raw(env.child.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = env.wait();
    // The dead mount answers ENOTCONN until unmounted; `alluxio fuse unmount` clears it.
    let o = env.run(&["fuse", "unmount", env.mnt().to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(mount_type(&env.mnt()), None);
}

fn write_fsync(path: &Path, data: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
    // Deliberately no close before the caller kills the daemon.
    std::mem::forget(f);
}

fn pattern(len: usize, salt: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(31) ^ salt) as u8)
        .collect()
}

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

/// THROUGH: uploaded before close returns, and the written pages are not cached.
#[test]
fn cli_through_uploads_without_caching() {
    let mut env = Env::new();
    env.mount(&["-o", "write_type=THROUGH"]);
    let data = pattern(2_500_000, 3);
    std::fs::write(env.mnt().join("f"), &data).unwrap();
    assert_eq!(std::fs::read(env.ufs().join("f")).unwrap(), data);
    let before = env.stats()["counters"]["ufs_reads"].as_u64().unwrap();
    assert_eq!(std::fs::read(env.mnt().join("f")).unwrap(), data);
    let after = env.stats()["counters"]["ufs_reads"].as_u64().unwrap();
    assert!(
        after >= before + 3,
        "THROUGH must not have cached the pages ({before} -> {after})"
    );
}

/// Runs mount(8) or umount(8) as an operator would: absolute path, and mount(8)'s
/// environment has no PATH to lean on.
fn mount8(prog: &str, args: &[&str]) -> Output {
    let mut c = Command::new(prog);
    c.args(args).env_remove("PATH").stdin(Stdio::null());
    with_timeout(c, Duration::from_secs(120))
}

/// Waits until the daemon that served `log` has logged its exit after an unmount.
fn wait_logged_exit(log: &Path) {
    let start = Instant::now();
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains("unmounted; exiting")
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "daemon did not exit after umount"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `mount -t fuse.alluxio SOURCE DIR -o ...` and a `fuse.alluxio` fstab line mount through
/// the helper that scripts/install.sh links as /sbin/mount.fuse.alluxio: it backgrounds
/// once the mount is live, takes mount(8)'s generic options and no PATH, and `umount`
/// ends the daemon. A mount that cannot work fails with mount(8)'s exit code 32 and the
/// daemon's error, and leaves nothing mounted.
#[test]
fn cli_mount_t_fuse_alluxio_and_fstab() {
    assert!(
        Path::new("/sbin/mount.fuse.alluxio").exists(),
        "/sbin/mount.fuse.alluxio is missing: run scripts/install.sh (scripts/ci.sh does)"
    );
    let env = Env::new();
    std::fs::write(env.ufs().join("hello.txt"), b"hello\n").unwrap();
    let (m, u) = (env.mnt(), env.ufs());
    let (m, u) = (m.to_str().unwrap(), u.to_str().unwrap());
    let b = env.base.path();
    let log = b.join("daemon.log");
    let opts = format!(
        "cache_dir={},state_dir={},log={},mem_budget=256MiB",
        b.join("cache").display(),
        b.join("state").display(),
        log.display()
    );

    let o = mount8("/usr/bin/mount", &["-t", "fuse.alluxio", u, m, "-o", &opts]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(mount_type(&env.mnt()).as_deref(), Some("fuse.alluxio"));
    assert_eq!(
        std::fs::read(env.mnt().join("hello.txt")).unwrap(),
        b"hello\n"
    );
    std::fs::write(env.mnt().join("new.txt"), b"written").unwrap();
    assert_eq!(
        std::fs::read(env.ufs().join("new.txt")).unwrap(),
        b"written"
    );
    let o = mount8("/usr/bin/umount", &[m]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(mount_type(&env.mnt()), None);
    wait_logged_exit(&log);

    // The same through an fstab line (an alternative fstab file, so the host's is left
    // alone), with the options fstab lines usually carry.
    let fstab = b.join("fstab");
    std::fs::write(
        &fstab,
        format!("{u} {m} fuse.alluxio defaults,_netdev,nofail,noatime,{opts} 0 0\n"),
    )
    .unwrap();
    let _ = std::fs::remove_file(&log);
    let o = mount8("/usr/bin/mount", &["-T", fstab.to_str().unwrap(), m]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(mount_type(&env.mnt()).as_deref(), Some("fuse.alluxio"));
    assert_eq!(
        std::fs::read(env.mnt().join("new.txt")).unwrap(),
        b"written"
    );
    let o = mount8("/usr/bin/umount", &[m]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_logged_exit(&log);

    // A source that cannot be mounted: exit 32, the daemon's reason, nothing mounted.
    let missing = b.join("no-such-dir");
    let o = mount8(
        "/usr/bin/mount",
        &[
            "-t",
            "fuse.alluxio",
            missing.to_str().unwrap(),
            m,
            "-o",
            &opts,
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(32), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert_eq!(mount_type(&env.mnt()), None);
}
