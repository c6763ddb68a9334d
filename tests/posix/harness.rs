//! Test harness: UFS fixtures, an in-process mount with an unmounting guard, data helpers.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use crate::model::{data, sha256};
use alluxio::config::{FuseConfig, MountConfig, UfsConfig};
use alluxio::types::Ownership;

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Fs,
    S3,
    /// Azure Blob, on Azurite (scripts/store-server.sh azure).
    Azure,
    /// Google Cloud Storage, on gcp-storage-emulator (scripts/store-server.sh gcs).
    Gcs,
    /// WebDAV, on wsgidav (scripts/store-server.sh webdav).
    WebDav,
}

/// The container, or bucket, that scripts/store-server.sh creates; each test gets its own
/// prefix in it.
const SHARED_BUCKET: &str = "alluxio";

/// An environment variable the test script sets. Tests of that store fail (never skip)
/// without it.
fn test_env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: run the tests through scripts/ci.sh, which starts the test servers"
        )
    })
}

/// A name no other test uses: pid, sequence, clock.
fn unique_name() -> String {
    format!(
        "t{}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000
    )
}

/// Percent-encodes a key for a URL path (every byte but unreserved ones and, unless
/// `slash` is false, `/`).
pub fn url_path(key: &str, slash: bool) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes `%XX` escapes.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// A plain HTTP/1.1 request to `url` (`http://HOST:PORT/PATH`), with no client library
/// on the way: (status, body). The body may come chunked.
pub fn http(method: &str, url: &str, body: &[u8]) -> (u16, Vec<u8>) {
    http_with(method, url, "", body)
}

/// [`http`] with extra header lines (each ending in CRLF).
pub fn http_with(method: &str, url: &str, headers: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(hostport).expect("connect to the test server");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} /{path} HTTP/1.1\r\nHost: {hostport}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP header");
    let head = String::from_utf8_lossy(&resp[..end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("HTTP status");
    let mut body = resp[end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let (mut out, mut at) = (Vec::new(), 0);
        loop {
            let nl = at + body[at..].windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(
                String::from_utf8_lossy(&body[at..nl])
                    .split(';')
                    .next()
                    .unwrap()
                    .trim(),
                16,
            )
            .unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&body[nl + 2..nl + 2 + n]);
            at = nl + 2 + n + 2;
        }
        body = out;
    }
    (status, body)
}

/// A fresh, empty UFS.
pub struct TestUfs {
    pub backend: Backend,
    root: Option<tempfile::TempDir>,
    bucket: String,
    endpoint: String,
    op: Option<opendal::Operator>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// The S3 endpoint started by scripts/ci.sh. S3 tests fail (never skip) without it.
pub fn s3_endpoint() -> String {
    std::env::var("ALLUXIO_TEST_S3_ENDPOINT").expect(
        "ALLUXIO_TEST_S3_ENDPOINT is not set: run the tests through scripts/ci.sh, which starts a local S3 server",
    )
}

fn create_bucket(endpoint: &str, bucket: &str) {
    let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(hostport).expect("connect to the S3 server");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "PUT /{bucket} HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "create bucket {bucket}: {resp}"
    );
}

impl TestUfs {
    pub fn new(backend: Backend) -> Self {
        match backend {
            Backend::Fs => Self {
                backend,
                root: Some(tempfile::tempdir().unwrap()),
                bucket: String::new(),
                endpoint: String::new(),
                op: None,
            },
            Backend::S3 => {
                let endpoint = s3_endpoint();
                let bucket = unique_name();
                create_bucket(&endpoint, &bucket);
                opendal::init_default_registry();
                let op = opendal::Operator::via_iter(
                    "s3",
                    [
                        ("bucket".to_string(), bucket.clone()),
                        ("endpoint".to_string(), endpoint.clone()),
                        ("region".to_string(), "us-east-1".to_string()),
                        ("access_key_id".to_string(), "test".to_string()),
                        ("secret_access_key".to_string(), "test".to_string()),
                        ("root".to_string(), "/data".to_string()),
                    ],
                )
                .unwrap();
                Self {
                    backend,
                    root: None,
                    bucket,
                    endpoint,
                    op: Some(op),
                }
            }
            Backend::Azure | Backend::Gcs | Backend::WebDav => {
                let endpoint = test_env(match backend {
                    Backend::Azure => "ALLUXIO_TEST_AZURE_ENDPOINT",
                    Backend::Gcs => "ALLUXIO_TEST_GCS_ENDPOINT",
                    _ => "ALLUXIO_TEST_WEBDAV_ENDPOINT",
                });
                // `bucket` is this test's prefix in the shared container.
                let mut t = Self {
                    backend,
                    root: None,
                    bucket: unique_name(),
                    endpoint,
                    op: None,
                };
                let mut o: BTreeMap<String, String> = t.store_options();
                let (service, key) = match backend {
                    Backend::Azure => ("azblob", "container"),
                    Backend::Gcs => ("gcs", "bucket"),
                    _ => ("webdav", ""),
                };
                if !key.is_empty() {
                    o.insert(key.into(), SHARED_BUCKET.into());
                }
                o.insert("root".into(), format!("/{}", t.bucket));
                opendal::init_default_registry();
                t.op = Some(opendal::Operator::via_iter(service, o).unwrap());
                t
            }
        }
    }

    /// The options a client of this store needs besides its bucket and root.
    fn store_options(&self) -> BTreeMap<String, String> {
        let mut o = BTreeMap::new();
        match self.backend {
            Backend::S3 => {
                o.insert("endpoint".to_string(), self.endpoint.clone());
                o.insert("access_key_id".to_string(), "test".to_string());
                o.insert("secret_access_key".to_string(), "test".to_string());
                o.insert("region".to_string(), "us-east-1".to_string());
            }
            Backend::Azure => {
                o.insert("endpoint".into(), self.endpoint.clone());
                o.insert(
                    "account_name".into(),
                    test_env("ALLUXIO_TEST_AZURE_ACCOUNT"),
                );
                o.insert("account_key".into(), test_env("ALLUXIO_TEST_AZURE_KEY"));
            }
            Backend::Gcs => {
                o.insert("endpoint".into(), self.endpoint.clone());
                o.insert("skip_signature".into(), "true".into());
            }
            Backend::WebDav => {
                o.insert("endpoint".into(), self.endpoint.clone());
            }
            Backend::Fs => {}
        }
        o
    }

    /// The URL a plain GET of `key` reads, with no client library (the Azure container is
    /// public; the emulator and the WebDAV server take no credentials).
    fn plain_url(&self, key: &str) -> String {
        let full = format!("{}/{key}", self.bucket);
        match self.backend {
            Backend::Azure => format!(
                "{}/{SHARED_BUCKET}/{}",
                self.endpoint,
                url_path(&full, true)
            ),
            Backend::Gcs => format!(
                "{}/storage/v1/b/{SHARED_BUCKET}/o/{}?alt=media",
                self.endpoint,
                url_path(&full, false)
            ),
            Backend::WebDav => format!("{}/{}", self.endpoint, url_path(&full, true)),
            _ => unreachable!("plain_url is for HTTP stores"),
        }
    }

    pub fn uri(&self) -> String {
        match self.backend {
            Backend::Fs => self
                .root
                .as_ref()
                .unwrap()
                .path()
                .to_str()
                .unwrap()
                .to_string(),
            Backend::S3 => format!("s3://{}/data", self.bucket),
            Backend::Azure => format!("azblob://{SHARED_BUCKET}/{}", self.bucket),
            Backend::Gcs => format!("gcs://{SHARED_BUCKET}/{}", self.bucket),
            Backend::WebDav => format!(
                "webdav://{}/{}",
                self.endpoint.trim_start_matches("http://"),
                self.bucket
            ),
        }
    }

    pub fn config(&self) -> UfsConfig {
        self.config_via(&self.endpoint)
    }

    /// The S3 server's endpoint (S3 only).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The mount's configuration, reaching the S3 server through `endpoint` (a
    /// [`StallProxy`] in front of it, say).
    pub fn config_via(&self, endpoint: &str) -> UfsConfig {
        let mut o = self.store_options();
        if o.contains_key("endpoint") {
            o.insert("endpoint".to_string(), endpoint.to_string());
        }
        UfsConfig::parse(&self.uri(), &o).unwrap()
    }

    /// `-o` options that mount this store from the command line.
    pub fn mount_options(&self) -> Vec<String> {
        self.store_options()
            .into_iter()
            .map(|(k, v)| match k.as_str() {
                "endpoint" | "region" | "access_key_id" | "secret_access_key" => format!("{k}={v}"),
                _ => format!("ufs.{k}={v}"),
            })
            .collect()
    }

    /// The local root (Fs only).
    pub fn root(&self) -> &Path {
        self.root.as_ref().expect("local UFS").path()
    }

    fn block<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// Writes an object straight into the UFS (not through the mount).
    pub fn put(&self, key: &str, data: &[u8]) {
        match self.backend {
            Backend::Fs => {
                let p = self.root().join(key);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, data).unwrap();
            }
            _ => {
                let op = self.op.clone().unwrap();
                let data = data.to_vec();
                let key = key.to_string();
                Self::block(async move { op.write(&key, data).await.unwrap() });
            }
        }
    }

    /// The ETag the store reports for `key` now (a stat by the test's own client).
    pub fn etag(&self, key: &str) -> Option<String> {
        let op = self.op.clone().unwrap();
        let key = key.to_string();
        Self::block(async move { op.stat(&key).await.ok()?.etag().map(str::to_string) })
    }

    /// Deletes an object straight in the UFS.
    pub fn remove(&self, key: &str) {
        match self.backend {
            Backend::Fs => std::fs::remove_file(self.root().join(key)).unwrap(),
            _ => {
                let op = self.op.clone().unwrap();
                let key = key.to_string();
                Self::block(async move { op.delete(&key).await.unwrap() });
            }
        }
    }

    /// Reads an object straight from the UFS with a plain client; `None` if absent.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self.backend {
            Backend::Fs => std::fs::read(self.root().join(key)).ok(),
            Backend::S3 => {
                let op = self.op.clone().unwrap();
                let key = key.to_string();
                Self::block(async move { op.read(&key).await.ok().map(|b| b.to_vec()) })
            }
            _ => match http("GET", &self.plain_url(key), b"") {
                (200, body) => Some(body),
                (404, _) => None,
                (code, body) => panic!(
                    "GET {key:?}: HTTP {code}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                ),
            },
        }
    }

    /// Whether a directory (prefix or marker) exists in the UFS.
    pub fn dir_exists(&self, key: &str) -> bool {
        match self.backend {
            Backend::Fs => self.root().join(key).is_dir(),
            Backend::WebDav => {
                let op = self.op.clone().unwrap();
                let key = format!("{}/", key.trim_end_matches('/'));
                Self::block(async move { op.stat(&key).await.is_ok_and(|m| m.is_dir()) })
            }
            _ => {
                let op = self.op.clone().unwrap();
                let key = format!("{}/", key.trim_end_matches('/'));
                Self::block(async move { !op.list(&key).await.unwrap_or_default().is_empty() })
            }
        }
    }
}

/// Local directories of one mount: mountpoint, namespace, cache, run dir.
pub struct MountDirs {
    base: tempfile::TempDir,
}

impl MountDirs {
    pub fn new() -> Self {
        Self {
            base: tempfile::tempdir().unwrap(),
        }
    }
    pub fn mountpoint(&self) -> PathBuf {
        self.base.path().join("mnt")
    }
    pub fn cache_dir(&self) -> PathBuf {
        self.base.path().join("cache")
    }
}

/// A live mount; unmounts and joins the session on drop.
pub struct Mount {
    pub path: PathBuf,
    vfs: std::sync::Arc<alluxio::vfs::Vfs>,
    run_dir: PathBuf,
    session: Option<fuser::BackgroundSession>,
    _control: Option<alluxio::control::ControlServer>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Mount {
    pub fn new(ufs: &TestUfs, dirs: &MountDirs) -> Self {
        Self::with(ufs.config(), dirs, 64 << 20)
    }

    pub fn with(ufs: UfsConfig, dirs: &MountDirs, mem_cache_bytes: u64) -> Self {
        Self::with_fuse(ufs, dirs, mem_cache_bytes, FuseConfig::default())
    }

    pub fn with_fuse(
        ufs: UfsConfig,
        dirs: &MountDirs,
        mem_cache_bytes: u64,
        fuse: FuseConfig,
    ) -> Self {
        Self::with_config(ufs, dirs, mem_cache_bytes, fuse, |_| {})
    }

    /// A mount whose configuration `tweak` adjusts before mounting.
    pub fn with_config(
        ufs: UfsConfig,
        dirs: &MountDirs,
        mem_cache_bytes: u64,
        fuse: FuseConfig,
        tweak: impl FnOnce(&mut MountConfig),
    ) -> Self {
        let mp = dirs.mountpoint();
        std::fs::create_dir_all(&mp).unwrap();
        let mut cfg = MountConfig {
            mountpoint: mp.clone(),
            ufs,
            state_dir: dirs.base.path().join("state"),
            metaserver: None,
            cache_dir: dirs.cache_dir(),
            disk_cache_bytes: 1 << 30,
            mem_cache_bytes,
            prefetch_pages: 4,
            prefetch_gets: 16,
            inflight_pages: 16,
            ownership: Ownership {
                uid: 0,
                gid: 0,
                file_mode: 0o644,
                dir_mode: 0o755,
            },
            fuse,
            run_dir: dirs.base.path().join("run"),
            write_type: Default::default(),
            upload_delay: Default::default(),
            upload: Default::default(),
            metadata_sync: Default::default(),
            dir_prefetch_bytes: 0,
            ufs_timeout: alluxio::ufs::DEFAULT_UFS_TIMEOUT,
            metrics_listen: None,
            cluster: None,
            cache_io: Default::default(),
            cache_free_ratio: alluxio::config::DEFAULT_CACHE_FREE_RATIO,
        };
        tweak(&mut cfg);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mounted = alluxio::mount::mount(&cfg, rt.handle()).expect("mount");
        let vfs = mounted.vfs().clone();
        let path = mounted.mountpoint().to_path_buf();
        let (session, control) = mounted.spawn().unwrap();
        assert_eq!(
            alluxio::mount::mount_type(&path).as_deref(),
            Some("fuse.alluxio")
        );
        Self {
            path,
            vfs,
            run_dir: cfg.run_dir.clone(),
            session: Some(session),
            _control: Some(control),
            rt: Some(rt),
        }
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    pub fn counters(&self) -> BTreeMap<&'static str, u64> {
        self.vfs.metrics().snapshot()
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.counters()[name]
    }

    /// Sends one request to the mount's control socket, as `alluxio fs` does.
    pub fn control(&self, request: &serde_json::Value) -> serde_json::Value {
        let sock = alluxio::config::control_socket(&self.run_dir, &self.path);
        let out =
            alluxio::control::query(&sock, &request.to_string(), Duration::from_secs(60)).unwrap();
        serde_json::from_str(out.trim()).unwrap()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if alluxio::mount::is_fuse_mount(&self.path)
            && let Err(e) = alluxio::mount::unmount(&self.path)
        {
            eprintln!("unmount {}: {e}", self.path.display());
            let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        }
        if let Some(s) = self.session.take() {
            // Join with a bound so a wedged session cannot hang the test run.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = s.join();
                let _ = tx.send(());
            });
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// Drops the kernel's cached pages of one file (clean pages only), so the next read
/// reaches the daemon even where the mount lets the kernel keep its cache.
pub fn drop_kernel_cache(path: &Path) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: a valid open fd; advice on the whole file has no memory effects for us.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0, "posix_fadvise");
}

/// renameat2(2) with `flags` (RENAME_NOREPLACE, RENAME_EXCHANGE, ...).
pub fn renameat2(from: &Path, to: &Path, flags: u32) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let a = std::ffi::CString::new(from.as_os_str().as_bytes()).unwrap();
    let b = std::ffi::CString::new(to.as_os_str().as_bytes()).unwrap();
    // SAFETY: both paths are NUL-terminated C strings that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Deterministic pseudo-random bytes (xorshift), different per seed.
/// Polls `ok` until it holds; fails the test after 60 s with `what`.
pub fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !ok() {
        assert!(t0.elapsed() < Duration::from_secs(60), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Generates one test per backend from `fn name(backend: Backend)`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod fs {
            $( #[test] fn $name() { super::$name($crate::harness::Backend::Fs) } )*
        }
        mod s3 {
            $( #[test] fn $name() { super::$name($crate::harness::Backend::S3) } )*
        }
    };
}

/// Generates one test per further store (Azure Blob, GCS, WebDAV) from `fn name(backend:
/// Backend)`, for the behaviour every store must show; [`backend_tests`] has the first two.
#[macro_export]
macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        mod azure {
            $( #[test] fn $name() { super::$name($crate::harness::Backend::Azure) } )*
        }
        mod gcs {
            $( #[test] fn $name() { super::$name($crate::harness::Backend::Gcs) } )*
        }
        mod webdav {
            $( #[test] fn $name() { super::$name($crate::harness::Backend::WebDav) } )*
        }
    };
}

/// A TCP proxy in front of a real server that can hold every byte in flight, in both
/// directions, until resumed: a store that stalls mid-request, for tests of what must not
/// wait on the store. Connections end when either side closes.
pub struct StallProxy {
    addr: String,
    state: std::sync::Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    paused: std::sync::Mutex<bool>,
    resumed: std::sync::Condvar,
    /// Chunks of bytes that arrived while paused (and were held).
    held: AtomicU64,
    stop: std::sync::atomic::AtomicBool,
}

impl StallProxy {
    /// Listens on 127.0.0.1 and forwards each connection to `upstream` (`http://host:port`).
    pub fn new(upstream: &str) -> Self {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let state = std::sync::Arc::new(ProxyState::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (st1, st2) = (st.clone(), st.clone());
                std::thread::spawn(move || pump(client, server, &st1));
                std::thread::spawn(move || pump(s2, c2, &st2));
            }
        });
        Self { addr, state }
    }

    /// The endpoint to give the mount.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Holds every byte from now on.
    pub fn pause(&self) {
        *self.state.paused.lock().unwrap() = true;
    }

    /// Lets held and new bytes through.
    pub fn resume(&self) {
        *self.state.paused.lock().unwrap() = false;
        self.state.resumed.notify_all();
    }

    /// Chunks held so far because they arrived while paused.
    pub fn held(&self) -> u64 {
        self.state.held.load(Ordering::SeqCst)
    }
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.resume();
        let _ = std::net::TcpStream::connect(&self.addr); // wakes the accept loop
    }
}

/// Copies `from` to `to` until either ends, holding each chunk while the proxy is paused.
fn pump(mut from: std::net::TcpStream, mut to: std::net::TcpStream, st: &ProxyState) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        {
            let mut paused = st.paused.lock().unwrap();
            if *paused {
                st.held.fetch_add(1, Ordering::SeqCst);
            }
            while *paused {
                paused = st.resumed.wait(paused).unwrap();
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// A small tmpfs mounted for one test (a cache disk that fills up), detached on drop so a
/// busy one can never hang the test. Tests run as root.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path, bytes: u64) -> Self {
        std::fs::create_dir_all(at).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={bytes},mode=0700").as_str()),
        )
        .expect("mount a tmpfs (the tests run as root)");
        Self(at.to_path_buf())
    }

    /// Bytes an unprivileged writer could still write.
    pub fn avail(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.0).unwrap();
        s.blocks_available() as u64 * s.fragment_size() as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Runs `script` under python3 with boto3 (the AWS SDK, installed with moto) against the
/// test S3 server: an S3 client that sends keys exactly as given.
fn boto3(endpoint: &str, bucket: &str, script: &str, args: &[&str]) -> std::process::Output {
    // Arguments travel as JSON strings: a key may hold NUL, which argv cannot.
    let prelude = format!(
        "import boto3, sys, json\n\
         sys.argv[1:] = [json.loads(a) for a in sys.argv[1:]]\n\
         s3 = boto3.client('s3', endpoint_url={endpoint:?}, aws_access_key_id='test', \
         aws_secret_access_key='test', region_name='us-east-1')\n\
         bucket = {bucket:?}\n"
    );
    std::process::Command::new("python3")
        .arg("-c")
        .arg(format!("{prelude}{script}"))
        .args(args.iter().map(|a| serde_json::to_string(a).unwrap()))
        .output()
        .expect("python3")
}

impl TestUfs {
    /// Reads the object at exactly `key`, byte for byte, with no client normalizing the
    /// path on the way (a raw GET on S3); `None` if absent.
    pub fn get_exact(&self, key: &str) -> Option<Vec<u8>> {
        match self.backend {
            Backend::Fs => std::fs::read(self.root().join(key)).ok(),
            Backend::S3 => {
                let script = "k = 'data/' + sys.argv[1]\n\
                    try:\n    body = s3.get_object(Bucket=bucket, Key=k)['Body'].read()\n\
                    except s3.exceptions.ClientError as e:\n    \
                    sys.exit(3 if e.response['Error']['Code'] in ('404', 'NoSuchKey') else 1)\n\
                    sys.stdout.buffer.write(body)\n";
                let out = boto3(&self.endpoint, &self.bucket, script, &[key]);
                match out.status.code() {
                    Some(0) => Some(out.stdout),
                    Some(3) => None,
                    _ => panic!("GET {key:?}: {}", String::from_utf8_lossy(&out.stderr)),
                }
            }
            _ => self.get(key),
        }
    }

    /// Writes an object at exactly `key` (S3: with boto3, no normalization on the way;
    /// a local directory: `std::fs`, which cannot hold keys that are not paths).
    pub fn put_exact(&self, key: &str, data: &[u8]) {
        match self.backend {
            Backend::Fs => self.put(key, data),
            Backend::S3 => {
                let script = "s3.put_object(Bucket=bucket, Key='data/' + sys.argv[1], \
                    Body=sys.argv[2].encode())\n";
                let data = std::str::from_utf8(data).expect("put_exact takes text");
                let out = boto3(&self.endpoint, &self.bucket, script, &[key, data]);
                assert!(
                    out.status.success(),
                    "PUT {key:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            _ => self.put(key, data),
        }
    }

    /// Every file key under the root, exactly as the store holds it (directory markers
    /// and the local store's own atomic-write area left out), sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self.backend {
            Backend::Fs => {
                let mut todo = vec![self.root().to_path_buf()];
                while let Some(d) = todo.pop() {
                    for e in std::fs::read_dir(&d).unwrap() {
                        let e = e.unwrap();
                        let rel = e.path().strip_prefix(self.root()).unwrap().to_path_buf();
                        let rel = rel.to_str().unwrap().to_string();
                        if rel == alluxio::ufs::FS_TMP_DIR {
                            continue;
                        }
                        if e.file_type().unwrap().is_dir() {
                            todo.push(e.path());
                        } else {
                            out.push(rel);
                        }
                    }
                }
            }
            Backend::S3 => {
                let script = "keys = []\n\
                    for page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix='data/'):\n    \
                    keys += [o['Key'][5:] for o in page.get('Contents', [])]\n\
                    print(json.dumps(keys))\n";
                let res = boto3(&self.endpoint, &self.bucket, script, &[]);
                assert!(
                    res.status.success(),
                    "{}",
                    String::from_utf8_lossy(&res.stderr)
                );
                let keys: Vec<String> = serde_json::from_slice(&res.stdout).unwrap();
                out.extend(keys.into_iter().filter(|k| !k.ends_with('/')));
            }
            Backend::WebDav => {
                // One PROPFIND of the whole tree, by plain HTTP: every href, decoded.
                let url = format!("{}/{}/", self.endpoint, self.bucket);
                let (code, body) = http_with("PROPFIND", &url, "Depth: infinity\r\n", b"");
                assert_eq!(code, 207, "PROPFIND: {}", String::from_utf8_lossy(&body));
                let xml = String::from_utf8(body).unwrap();
                let prefix = format!("/{}/", self.bucket);
                for part in xml.split("href>").skip(1).step_by(2) {
                    let href = percent_decode(part.split('<').next().unwrap());
                    if let Some(k) = href.strip_prefix(&prefix)
                        && !k.is_empty()
                        && !k.ends_with('/')
                    {
                        out.push(k.to_string());
                    }
                }
            }
            _ => {
                // One recursive listing from the root: no path goes in that a client
                // could normalize.
                let op = self.op.clone().unwrap();
                let entries = Self::block(async move {
                    let all = op.list_with("/").recursive(true).await.unwrap();
                    all.into_iter()
                        .map(|e| e.path().to_string())
                        .filter(|p| !p.ends_with('/'))
                        .collect::<Vec<_>>()
                });
                out.extend(entries);
            }
        }
        out.sort();
        out
    }
}

/// Writes `data` to a new file and closes it, reporting the close's error (which
/// `std::fs::write` drops): close is where the upload happens.
pub fn write_closed(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::fd::IntoRawFd;
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    let fd = f.into_raw_fd();
    // SAFETY: `fd` is ours (just taken from the file) and closed exactly once.
    if unsafe { libc::close(fd) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
