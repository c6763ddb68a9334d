//! Helpers shared by the CLI's test targets: a daemon in a temp home that is always
//! unmounted and stopped, a metaserver child, and small HTTP and polling helpers.

#![allow(dead_code, reason = "each test target uses a different part")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_alluxio");

pub fn mount_type(p: &Path) -> Option<String> {
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
pub struct Env {
    pub base: tempfile::TempDir,
    pub child: Option<Child>,
}

impl Env {
    pub fn new() -> Self {
        let base = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(base.path().join("mnt")).unwrap();
        std::fs::create_dir_all(base.path().join("ufs")).unwrap();
        Self { base, child: None }
    }
    pub fn mnt(&self) -> PathBuf {
        self.base.path().join("mnt")
    }
    pub fn ufs(&self) -> PathBuf {
        self.base.path().join("ufs")
    }
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("ALLUXIO_HOME", self.base.path().join("home"))
            .env("ALLUXIO_RUN_DIR", self.base.path().join("run"))
            .env_remove("ALLUXIO_LOG")
            .stdin(Stdio::null());
        c
    }
    pub fn run(&self, args: &[&str]) -> Output {
        let mut c = self.cmd();
        c.args(args);
        with_timeout(c, Duration::from_secs(60))
    }
    /// Starts `alluxio fuse mount` in the background and waits until the mount is live.
    pub fn mount(&mut self, extra: &[&str]) {
        self.mount_on(Some(&self.ufs()), extra);
    }
    /// The same over another UFS directory, or with none (a metaserver's root store).
    /// The same over a store URI (`s3://...`).
    pub fn mount_uri(&mut self, uri: &str, extra: &[&str]) {
        self.mount_on(Some(Path::new(uri)), extra);
    }
    pub fn mount_on(&mut self, ufs: Option<&Path>, extra: &[&str]) {
        let mut c = self.cmd();
        c.args(["fuse", "mount"]).arg(self.mnt());
        if let Some(u) = ufs {
            c.arg("--ufs").arg(u);
        }
        c.args(extra);
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
    pub fn stats(&self) -> serde_json::Value {
        let o = self.run(&["fuse", "stats", self.mnt().to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }
    /// Waits for the daemon to exit; returns its status.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_mut().unwrap();
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                if !st.success() {
                    // The daemon's own words say why; the test's output shows them.
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut err);
                    }
                    eprintln!("daemon exited with {st}; its stderr:\n{err}");
                }
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

pub fn with_timeout(mut c: Command, limit: Duration) -> Output {
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

pub fn kill9(env: &mut Env) {
    let pid = nix::unistd::Pid::from_raw(env.child.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = env.wait();
    // The dead mount answers ENOTCONN until unmounted; `alluxio fuse unmount` clears it.
    let o = env.run(&["fuse", "unmount", env.mnt().to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(mount_type(&env.mnt()), None);
}

pub fn write_fsync(path: &Path, data: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
    // Deliberately no close before the caller kills the daemon.
    std::mem::forget(f);
}

pub fn pattern(len: usize, salt: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(31) ^ salt) as u8)
        .collect()
}

/// A metaserver child on a free port of 127.0.0.1; stopped, by its PID, on drop.
pub struct Metaserver {
    child: Child,
    pub addr: String,
    pub token_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Metaserver {
    pub fn start(token: &str) -> Self {
        Self::start_with(token, &[])
    }

    pub fn start_with(token: &str, extra: &[&str]) -> Self {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        let mut child = Command::new(BIN)
            .args(["metaserver", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--token-file")
            .arg(&token_file)
            .args(extra)
            .env_remove("ALLUXIO_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            panic!("metaserver did not start: {line:?}");
        };
        Self {
            addr: addr.to_string(),
            child,
            token_file,
            _dir: dir,
        }
    }

    pub fn args(&self) -> Vec<String> {
        vec![
            "--metaserver".into(),
            self.addr.clone(),
            "--token-file".into(),
            self.token_file.to_str().unwrap().into(),
        ]
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Metaserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a bad invocation and checks: non-zero exit, one line on stderr naming the
/// problem, no panic, nothing mounted.
pub fn refused(env: &Env, args: &[&str], expect: &str) {
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

/// Polls `ok` until it holds or `limit` passes; returns whether it held.
pub fn within(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    loop {
        if ok() {
            return true;
        }
        if t0.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Creates a bucket on the test S3 server (started by scripts/ci.sh) and returns the
/// endpoint.
pub fn s3_bucket(bucket: &str) -> String {
    let endpoint = std::env::var("ALLUXIO_TEST_S3_ENDPOINT").expect(
        "ALLUXIO_TEST_S3_ENDPOINT is not set: run the tests through scripts/ci.sh, which starts a local S3 server",
    );
    let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let (status, body) = http(hostport, "PUT", &format!("/{bucket}"));
    assert!(
        status.starts_with("HTTP/1.1 200"),
        "create bucket {bucket}: {status} {body}"
    );
    endpoint
}

/// `-o` options for a store on the test S3 server at `endpoint`.
pub fn s3_opts(endpoint: &str) -> String {
    format!("endpoint={endpoint},region=us-east-1,access_key_id=test,secret_access_key=s3cret")
}

/// A free port on 127.0.0.1 (bound and released; good enough for a test).
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// GET http://addr/path: (status line, body).
pub fn http_get(addr: &str, path: &str) -> (String, String) {
    http(addr, "GET", path)
}

/// One bodiless HTTP/1.1 request: (status line, body).
pub fn http(addr: &str, method: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    let (head, body) = r.split_once("\r\n\r\n").unwrap_or((&r, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// Entries in the ASYNC_THROUGH journals of `env`'s mounts.
pub fn journal_entries(env: &Env) -> usize {
    std::fs::read_dir(env.base.path().join("home/mounts"))
        .map(|d| {
            d.flat_map(|m| std::fs::read_dir(m.unwrap().path().join("cache/journal")).ok())
                .flatten()
                .count()
        })
        .unwrap_or(0)
}

/// GET http://addr/path with its body as bytes: (status line, body). For objects of the
/// test S3 server, which takes unsigned requests.
pub fn http_bytes(addr: &str, path: &str) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = Vec::new();
    s.read_to_end(&mut r).unwrap();
    let split = r
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(r.len());
    let head = String::from_utf8_lossy(&r[..split]).to_string();
    let body = r.get(split + 4..).unwrap_or_default().to_vec();
    (head.lines().next().unwrap_or("").to_string(), body)
}

/// What reading `path` gave, against `want`: `"ok"`, or a short description (the errno, or
/// the length and first differing offset), so a failed assertion never prints the bytes.
pub fn read_matches(path: &Path, want: &[u8]) -> String {
    match std::fs::read(path) {
        Err(e) => format!("error: {e}"),
        Ok(got) if got == want => "ok".into(),
        Ok(got) => {
            let at = got.iter().zip(want).position(|(a, b)| a != b);
            format!(
                "{} bytes where {} were expected, first difference at {:?}",
                got.len(),
                want.len(),
                at
            )
        }
    }
}
