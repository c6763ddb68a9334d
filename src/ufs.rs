//! UFS access through OpenDAL: one `Operator` built from `(scheme, options)`, so any
//! OpenDAL service works without code changes.
//!
//! Layer stack (outermost first): Retry → Timeout → service. Retries happen only here, in
//! OpenDAL's `RetryLayer`, which retries temporary errors; `TimeoutLayer` sits inside it so
//! each attempt is bounded. Keys are 1:1 with namespace paths: file `a/b` is object `a/b`,
//! directory `a/` is the prefix (and marker) `a/`. Every request bumps `ufs_requests`.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use alluxio_metaserver::{ObjectVersion, UfsChild};
use bytes::Bytes;
use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{ErrorKind, Metadata, Operator};

use crate::config::stores::KeyLimit;
use crate::config::{UfsConfig, UploadShape};

mod exact_keys;
mod stream_put;

use crate::metrics::Metrics;
use crate::object::ObjectId;
use crate::types::FileKind;
use exact_keys::{ExactKeysLayer, encode};

/// A failed UFS request, with the operation and key it concerned.
#[derive(Debug, thiserror::Error)]
#[error("UFS {op} {path:?}: {source}")]
pub struct UfsError {
    op: &'static str,
    path: String,
    #[source]
    source: Box<opendal::Error>,
}

impl UfsError {
    /// Wraps an OpenDAL error.
    pub fn new(op: &'static str, path: impl Into<String>, source: opendal::Error) -> Self {
        Self {
            op,
            path: path.into(),
            source: Box::new(source),
        }
    }

    /// OpenDAL's classification of the failure.
    pub fn kind(&self) -> ErrorKind {
        self.source.kind()
    }

    /// Whether the store said the object (or the version asked for) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.kind() == ErrorKind::NotFound
    }

    /// Whether this is a refusal made before any request ([`Ufs::check_key`],
    /// [`Ufs::check_new_name`]).
    pub fn is_refusal(&self) -> bool {
        self.op == "check"
    }

    /// Whether the store said the object is not the version asked for (a 412 to an
    /// If-Match, a version that is gone, a local file changed underneath): the data set
    /// was refreshed, not a fault of the store.
    pub fn is_changed(&self) -> bool {
        self.kind() == ErrorKind::ConditionNotMatch
    }

    /// The operation and key, without the store's response (which for a 412 is a whole
    /// HTTP exchange).
    pub fn brief(&self) -> String {
        format!("{} {}", self.op, self.path)
    }
}

/// A multipart upload fed while its file is still being written, so that close or fsync
/// has only the tail left to send. Holds one upload slot until dropped. Must end with
/// [`Ufs::stream_finish`] or [`Ufs::stream_abort`]; dropped otherwise, its parts stay in
/// the store as an incomplete upload until the store's lifecycle rules remove them.
pub struct UploadStream {
    w: opendal::Writer,
    path: String,
    /// Bytes handed to the store so far.
    bytes: u64,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl UploadStream {
    /// The key being written.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Bytes handed to the store so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Size, modification time and version of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Content length.
    pub size: u64,
    /// Last modified, ns since the epoch (0 when unknown).
    pub mtime_ns: i64,
    /// ETag or version id when the store has one, else `size-mtime`.
    pub version: String,
}

/// Bytes of one chunk of the copies this process makes between objects.
const UPLOAD_CHUNK: usize = 8 << 20;

/// On a local-filesystem UFS, the directory under its root where objects are written
/// before they are renamed into place, so an object is never seen (or left by a crash)
/// half-written. Hidden from listings of the root; the name is refused there.
pub const FS_TMP_DIR: &str = ".alluxio.tmp";

static TMP_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Copies `len` bytes of `src` to the new file `dst` inside the kernel where it can
/// (copy_file_range), else through a buffer.
pub(crate) fn copy_file(src: &std::fs::File, dst: &std::fs::File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let mut off: u64 = 0;
    while off < len {
        let (mut i, mut o) = (off as libc::loff_t, off as libc::loff_t);
        let want = (len - off).min(1 << 30) as usize;
        // SAFETY: both descriptors are open; the offsets are ours.
        let n = unsafe {
            libc::copy_file_range(src.as_raw_fd(), &mut i, dst.as_raw_fd(), &mut o, want, 0)
        };
        if n > 0 {
            off += n as u64;
            continue;
        }
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP) => {
                let mut buf = vec![0u8; (len - off).min(UPLOAD_CHUNK as u64) as usize];
                while off < len {
                    let n = (len - off).min(buf.len() as u64) as usize;
                    src.read_exact_at(&mut buf[..n], off)?;
                    dst.write_all_at(&buf[..n], off)?;
                    off += n as u64;
                }
            }
            Some(libc::EINTR) => {}
            _ => return Err(e),
        }
    }
    Ok(())
}

/// The UFS of one mount.
pub struct Ufs {
    op: Operator,
    /// The operator without our layers, to build `op` again with another timeout.
    base: Operator,
    /// How long a store call may go without an answer, retries included (`ufs_timeout`):
    /// then it fails, so a stalled store gives EIO in bounded time.
    timeout: Duration,
    uri: String,
    /// The store's identity in page ids ([`UfsConfig::store_id`]).
    store_id: Arc<str>,
    /// The mount's prefix in the store ([`UfsConfig::key_prefix`]).
    key_prefix: String,
    metrics: Arc<Metrics>,
    native_rename: bool,
    native_copy: bool,
    /// Root directory when the service is a local filesystem: directories are renamed
    /// there natively (OpenDAL renames files only).
    local_root: Option<std::path::PathBuf>,
    /// Longest key the store accepts under our root, when it has a known limit.
    key_limit: Option<KeyLimit>,
    /// Whether names with ASCII control characters are refused at create (see
    /// [`crate::config::stores::Store::no_control_chars`]).
    no_control_chars: bool,
    /// Whether directories are real on the server and move with one native rename
    /// (WebDAV's MOVE; a local UFS has its own path, `local_root`).
    native_dir_rename: bool,
    /// Whether reads can be pinned to a version with If-Match (ETag-versioned stores).
    if_match: bool,
    /// Whether reads can name the object version (version ids, GCS generations).
    read_version: bool,
    /// Whether the service lists a whole tree in one listing (else it is walked).
    list_recursive: bool,
    /// Whether an object can be written in several parts (multipart, blocks, appends).
    /// Elsewhere (WebDAV, WebHDFS) an object is sent in one request.
    multi_write: bool,
    /// WebDAV: a PUT whose body is read from the file as it is sent (see `stream_put`).
    stream_put: Option<stream_put::StreamPut>,
    /// Multipart part size and parts in flight per upload (`set_upload_shape`).
    upload: UploadShape,
    /// Upload slots, one per running upload that holds part buffers: what bounds upload
    /// memory to `upload.slots * upload.bytes_per_upload()`. They are split in two so that
    /// a commit never waits for a slot held by a stream (a stream ends only when its own
    /// file commits, which may be after this one: waiting on it could deadlock). Commits
    /// wait for a commit slot, which only other commits hold; streams start only on a
    /// free stream slot. Uploads of at most one part take no slot: they buffer at most one
    /// part, and run on the FUSE thread that flushes (so at most one per thread).
    commit_slots: Arc<tokio::sync::Semaphore>,
    stream_slots: Arc<tokio::sync::Semaphore>,
    /// Whether a probe asks with a ranged GET (S3, Azure Blob: the response has the
    /// object's size, ETag and mtime, as a HEAD's does, and its first bytes).
    probe_by_read: bool,
    /// The first bytes that probes brought, for the reads that follow them.
    heads: Heads,
}

/// Bytes a probe reads of an object's start: a small first read (the kernel's first
/// readahead of a file read from its start is 16 KiB, `head -c` and file-type sniffing
/// less) is then answered with no request of its own, for under 1 ms of transfer at a
/// store connection's 80 MB/s.
const PROBE_BYTES: u64 = 64 << 10;

/// Objects whose first bytes [`Heads`] keeps (at most 4 MiB in all): a lookup is followed
/// by its open and first read within milliseconds, or not at all.
const HEADS_KEPT: usize = 64;

/// The first bytes of objects probes read, by key and version, oldest dropped first.
/// A read is answered from here only for the version the bytes were read at, which is
/// the version the probe's answer gave the namespace: never another object's bytes.
#[derive(Default)]
struct Heads(std::sync::Mutex<std::collections::VecDeque<(String, String, Bytes)>>);

impl Heads {
    fn put(&self, key: &str, version: &str, bytes: Bytes) {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        q.retain(|(k, _, _)| k != key);
        if q.len() >= HEADS_KEPT {
            q.pop_front();
        }
        q.push_back((key.to_string(), version.to_string(), bytes));
    }

    /// `range` of `key` at `version`, when kept whole.
    fn get(&self, key: &str, version: &str, range: &Range<u64>) -> Option<Bytes> {
        let q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (_, _, b) = q.iter().find(|(k, v, _)| k == key && v == version)?;
        (range.start <= range.end && range.end <= b.len() as u64)
            .then(|| b.slice(range.start as usize..range.end as usize))
    }
}

fn mtime_ns(m: &Metadata) -> i64 {
    m.last_modified()
        .map(|t| {
            let t = t.into_inner();
            t.as_second()
                .saturating_mul(1_000_000_000)
                .saturating_add(i64::from(t.subsec_nanosecond()))
        })
        .unwrap_or(0)
}

/// The version of an object: its ETag (or version id) where the store reports one, else
/// size and mtime, which every store has. Pages are keyed by this, so a changed object
/// can never be served from pages of the old one.
fn version_of(m: &Metadata) -> String {
    let v = if let Some(v) = m.version() {
        ObjectVersion::Id(v.to_string())
    } else if let Some(e) = m.etag() {
        ObjectVersion::ETag(e.trim_matches('"').to_string())
    } else {
        ObjectVersion::SizeMtime {
            size: m.content_length(),
            mtime_ns: mtime_ns(m),
        }
    };
    v.to_string()
}

/// Alignment of the buffers [`Ufs::read_range`] returns: the disk tier can write a page
/// in such a buffer with O_DIRECT (see `page_cache::disk`).
pub const DIRECT_ALIGN: usize = 4096;

/// The bytes of `buf` in one contiguous buffer, starting at a [`DIRECT_ALIGN`] boundary
/// when its length lets the disk tier write it with O_DIRECT, which skips a copy into the
/// kernel's page cache (about a fifth of the daemon's CPU in a cold read, measured with
/// perf). A body of several chunks (an HTTP response) is gathered once either way, so
/// aligning it is free; a single chunk (a local file's read) is copied only when that
/// makes an O_DIRECT write possible. The buffer is a `Vec` with room for the offset,
/// sliced, so nothing here is unsafe and no byte is zeroed needlessly.
pub(crate) fn aligned_bytes(buf: opendal::Buffer) -> Bytes {
    let len = buf.len();
    let direct_sized = len >= DIRECT_ALIGN && len.is_multiple_of(DIRECT_ALIGN);
    if opendal::Buffer::count(&buf) == 1
        && (!direct_sized || buf.current().as_ptr().align_offset(DIRECT_ALIGN) == 0)
    {
        return buf.to_bytes(); // one chunk, used as it is
    }
    aligned_copy(buf)
}

/// The bytes of `buf` copied into one new buffer aligned for direct I/O.
fn aligned_copy(buf: opendal::Buffer) -> Bytes {
    let len = buf.len();
    let mut v: Vec<u8> = Vec::with_capacity(len + DIRECT_ALIGN);
    let off = v.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
    v.resize(off, 0);
    for chunk in buf {
        v.extend_from_slice(&chunk);
    }
    Bytes::from(v).slice(off..)
}

impl Ufs {
    /// Builds the operator for `cfg`. Fails on an unknown scheme or invalid configuration;
    /// does not touch the network (see [`Ufs::check`]).
    pub fn new(cfg: &UfsConfig, metrics: Arc<Metrics>) -> Result<Self, UfsError> {
        opendal::init_default_registry();
        let base = Operator::via_iter(&cfg.scheme, cfg.options.clone())
            .map_err(|e| UfsError::new("configure", cfg.uri.clone(), e))?;
        let op = layered(&base, DEFAULT_UFS_TIMEOUT);
        let cap = op.info().capability();
        Ok(Self {
            base,
            timeout: DEFAULT_UFS_TIMEOUT,
            native_rename: cap.rename,
            native_copy: cap.copy,
            local_root: (cfg.scheme == "fs")
                .then(|| cfg.options.get("root").map(std::path::PathBuf::from))
                .flatten(),
            key_limit: key_limit(cfg),
            no_control_chars: cfg.store().no_control_chars,
            native_dir_rename: cfg.store().native_dir_rename && cfg.scheme != "fs",
            if_match: cap.read_with_if_match && cfg.scheme != "fs",
            read_version: cap.read_with_version,
            list_recursive: cap.list_with_recursive,
            multi_write: cap.write_can_multi,
            stream_put: (cfg.scheme == "webdav")
                .then(|| stream_put::StreamPut::new(&cfg.options))
                .flatten(),
            upload: UploadShape::default(),
            commit_slots: Arc::new(tokio::sync::Semaphore::new(1)),
            stream_slots: Arc::new(tokio::sync::Semaphore::new(1)),
            probe_by_read: matches!(cfg.scheme.as_str(), "s3" | "azblob"),
            heads: Heads::default(),
            op,
            uri: cfg.uri.clone(),
            store_id: Arc::from(cfg.store_id()),
            key_prefix: cfg.key_prefix().to_string(),
            metrics,
        })
    }

    /// Sets the multipart part size (at least 5 MiB, S3's floor for all but the last
    /// part), the parts in flight per upload and the uploads running at once (each at
    /// least 1).
    pub fn set_upload_shape(&mut self, shape: UploadShape) {
        self.upload = UploadShape {
            part_bytes: shape.part_bytes.max(5 << 20),
            concurrency: shape.concurrency.max(1),
            slots: shape.slots.max(1),
        };
        let commits = (self.upload.slots / 2).max(1);
        self.commit_slots = Arc::new(tokio::sync::Semaphore::new(commits));
        self.stream_slots = Arc::new(tokio::sync::Semaphore::new(
            self.upload.slots.saturating_sub(commits),
        ));
    }

    /// Sets how long a store call may go without an answer, retries included
    /// (`-o ufs_timeout=`, at least 1 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout.max(Duration::from_secs(1));
        self.op = layered(&self.base, self.timeout);
    }

    /// Puts `wrap` around the store's own operator, inside this crate's layers (retry,
    /// timeout, exact keys): a layer added so sees each attempt as the service would, with
    /// paths as exact keys. For fault injection ([`crate::fault::FaultLayer`]). A local
    /// directory's stats, listings, uploads, deletes and directory renames go to the
    /// file system directly and pass no layer; its reads do.
    pub fn wrap_store(&mut self, wrap: impl FnOnce(Operator) -> Operator) {
        self.base = wrap(self.base.clone());
        self.op = layered(&self.base, self.timeout);
    }

    /// See [`Self::set_timeout`].
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `f`, failing once `ufs_timeout` passes with no answer: the retries inside it stop
    /// there too. The error says so, and maps to EIO.
    async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = opendal::Result<T>>,
    ) -> opendal::Result<T> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(opendal::Error::new(
                ErrorKind::Unexpected,
                format!(
                    "no answer from the store within {} s (ufs_timeout)",
                    self.timeout.as_secs_f64()
                ),
            )
            .set_temporary()),
        }
    }

    /// The upload shape in force.
    pub fn upload_shape(&self) -> UploadShape {
        self.upload
    }

    /// The multipart part size.
    pub fn part_bytes(&self) -> u64 {
        self.upload.part_bytes
    }

    /// The URI this UFS was built from.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The store's identity in page ids ([`UfsConfig::store_id`]).
    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    /// The key under this mount's root of the object whose full key in the store is
    /// `full`, if it is under the root (the inverse of [`Self::object_id`]'s key).
    pub fn key_under_root<'a>(&self, full: &'a str) -> Option<&'a str> {
        if self.key_prefix.is_empty() {
            return Some(full);
        }
        full.strip_prefix(self.key_prefix.as_str())?
            .strip_prefix('/')
    }

    /// The id of `version` of the object at `key` (under this UFS's root): the name its
    /// pages have on every host (see [`crate::object`]).
    pub fn object_id(&self, key: &str, version: &str) -> Arc<ObjectId> {
        let full = if self.key_prefix.is_empty() {
            std::borrow::Cow::Borrowed(key)
        } else {
            std::borrow::Cow::Owned(format!("{}/{key}", self.key_prefix))
        };
        Arc::new(ObjectId::new(self.store_id.clone(), &full, version))
    }

    /// Refuses a key longer than the store accepts, before any request: such a request
    /// can only fail, and some services report that as a retryable error.
    pub fn check_key(&self, key: &str) -> Result<(), UfsError> {
        if self.local_root.is_some()
            && key.trim_end_matches('/').split('/').next() == Some(FS_TMP_DIR)
        {
            return Err(UfsError::new(
                "check",
                key.chars().take(64).collect::<String>(),
                opendal::Error::new(ErrorKind::Unexpected, "name reserved for atomic writes")
                    .set_source(std::io::Error::from_raw_os_error(libc::EPERM)),
            ));
        }
        let too_long = match self.key_limit {
            Some(KeyLimit::Bytes(max)) => key.len() > max,
            Some(KeyLimit::Chars(max)) => key.chars().count() > max,
            None => false,
        };
        if too_long {
            return Err(UfsError::new(
                "check",
                key.chars().take(64).collect::<String>(),
                opendal::Error::new(ErrorKind::Unexpected, "key longer than the store accepts")
                    .set_source(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG)),
            ));
        }
        Ok(())
    }

    /// Refuses, before it is created, a name this store cannot hold as a key component.
    /// On S3 that is a name with an ASCII control character (0x01-0x1F, 0x7F): AWS lists
    /// them among the characters that need special handling (they cannot appear in its
    /// XML listings as they are), and S3 servers disagree on them (moto answers a PUT of
    /// a key with a newline with 404). Existing objects with such names stay usable.
    pub fn check_new_name(&self, name: &[u8]) -> Result<(), UfsError> {
        if self.no_control_chars && name.iter().any(|&b| b < 0x20 || b == 0x7f) {
            return Err(UfsError::new(
                "check",
                String::from_utf8_lossy(name).into_owned(),
                opendal::Error::new(
                    ErrorKind::Unexpected,
                    "this store cannot hold a control character in a name",
                )
                .set_source(std::io::Error::from_raw_os_error(libc::EINVAL)),
            ));
        }
        Ok(())
    }

    /// Whether the UFS is a local directory.
    pub fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    /// On a local-directory UFS, makes object `key` and its name durable (fsync of the
    /// file and its directory). Elsewhere a completed write is durable already.
    pub async fn sync_object(&self, key: &str) -> Result<(), UfsError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let path = root.join(key);
        crate::offload::run(move || {
            std::fs::File::open(&path)?.sync_all()?;
            match path.parent() {
                Some(dir) => std::fs::File::open(dir)?.sync_all(),
                None => Ok(()),
            }
        })
        .await
        .map_err(|e| opendal::Error::new(ErrorKind::Unexpected, e.to_string()))
        .and_then(|r| {
            r.map_err(|e| {
                opendal::Error::new(ErrorKind::Unexpected, format!("fsync: {e}")).set_source(e)
            })
        })
        .map_err(|e| self.fail("fsync", key, e))
    }

    /// Whether the service renames natively (else rename is copy + delete).
    pub fn native_rename(&self) -> bool {
        self.native_rename
    }

    fn count(&self, which: &std::sync::atomic::AtomicU64) {
        Metrics::inc(&self.metrics.ufs_requests);
        Metrics::inc(which);
    }

    /// Counts a failed call (a changed object apart: see [`UfsError::is_changed`]).
    fn fail(&self, op: &'static str, path: &str, e: opendal::Error) -> UfsError {
        let e = UfsError::new(op, path, e);
        if e.is_changed() {
            Metrics::inc(&self.metrics.ufs_changed);
        } else {
            Metrics::inc(&self.metrics.ufs_errors);
        }
        e
    }

    /// Verifies the store is reachable and the root is listable.
    pub async fn check(&self) -> Result<(), UfsError> {
        use futures::StreamExt;
        self.count(&self.metrics.ufs_lists);
        // One page only: `list_with(..).limit(1)` collects the whole listing one key per
        // page, which took over 30 s against a 2,000-object bucket.
        let first = self.bounded(async {
            let mut l = self.op.lister_with("/").await?;
            l.next().await.transpose()
        });
        match first.await {
            Err(e) => Err(self.fail("list", "/", e)),
            Ok(_) => Ok(()),
        }
    }

    /// Lists the direct children of directory key `dir` (`""` for the root, else ending
    /// in `/`).
    pub async fn list_dir(&self, dir: &str) -> Result<Vec<UfsChild>, UfsError> {
        self.count(&self.metrics.ufs_lists);
        if let Some(root) = &self.local_root {
            // Natively: OpenDAL's local lister trims whitespace off the names it returns.
            let (root, key) = (root.clone(), dir.to_string());
            return blocking(move || local_list(&root, &key))
                .await
                .map_err(|e| self.fail("list", dir, e));
        }
        let path = if dir.is_empty() { "/" } else { dir };
        let entries = match self.bounded(self.op.list(&encode(path))).await {
            Ok(e) => e,
            // A directory that exists only in the namespace's view (e.g. removed
            // underneath) lists as empty.
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(self.fail("list", dir, e)),
        };
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let p = e.path();
            if p == dir || p == path || p.is_empty() {
                continue; // the directory itself
            }
            let Some(rel) = p.strip_prefix(dir) else {
                continue;
            };
            let (name, kind) = match rel.strip_suffix('/') {
                Some(n) => (n, FileKind::Dir),
                None => (rel, FileKind::File),
            };
            if name.is_empty() || name.contains('/') {
                continue;
            }
            let m = e.metadata();
            let (size, version) = match kind {
                FileKind::Dir => (0, None),
                _ => (m.content_length(), Some(version_of(m))),
            };
            out.push(UfsChild {
                name: name.as_bytes().to_vec(),
                kind,
                size,
                mtime_ns: mtime_ns(m),
                version,
            });
        }
        Ok(out)
    }

    /// Whether the store holds any object below directory key `dir` (ending in `/`) other
    /// than its own marker. Called once the namespace shows the directory empty, so what
    /// it finds are keys no name can show. A local directory answers with its own rmdir.
    pub async fn holds_hidden_objects(&self, dir: &str) -> Result<bool, UfsError> {
        use futures::StreamExt;
        if self.local_root.is_some() {
            return Ok(false);
        }
        self.count(&self.metrics.ufs_lists);
        if !self.list_recursive {
            return match self.walk(dir).await {
                Ok(entries) => Ok(entries.iter().any(|e| e.path() != dir)),
                Err(e) => Err(self.fail("list", dir, e)),
            };
        }
        let found = self.bounded(async {
            let mut l = self.op.lister_with(&encode(dir)).recursive(true).await?;
            while let Some(e) = l.next().await {
                if e?.path() != dir {
                    return Ok(true); // anything but the marker
                }
            }
            Ok(false)
        });
        match found.await {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.fail("list", dir, e)),
        }
    }

    /// Stats a file key.
    pub async fn stat(&self, path: &str) -> Result<ObjectInfo, UfsError> {
        self.count(&self.metrics.ufs_stats);
        if let Some(root) = &self.local_root {
            // Natively, as listings are, so the two agree on the version to the nanosecond.
            let (root, key) = (root.clone(), path.to_string());
            return blocking(move || local_stat(&root.join(key)))
                .await
                .map_err(|e| self.fail("stat", path, e));
        }
        let m = self
            .bounded(self.op.stat(&encode(path)))
            .await
            .map_err(|e| self.fail("stat", path, e))?;
        Ok(ObjectInfo {
            size: m.content_length(),
            mtime_ns: mtime_ns(&m),
            version: version_of(&m),
        })
    }

    /// Whether a lookup of a name in a directory not listed yet should ask the store for
    /// that one key ([`Ufs::probe`]) beside the listing: on a remote store a HEAD is one
    /// round trip however large the directory, while its listing is one per 1,000 keys
    /// and more. A local directory lists natively, faster than the probe would answer.
    pub fn probes_keys(&self) -> bool {
        self.local_root.is_none()
    }

    /// The object at key `path` if there is one (a HEAD): `None` when the store has no
    /// such object, which here is an answer, not a failure (not counted as an error).
    pub async fn probe(&self, path: &str) -> Result<Option<ObjectInfo>, UfsError> {
        self.count(&self.metrics.ufs_stats);
        if self.probe_by_read
            && let Some(answer) = self.probe_read(path).await
        {
            return Ok(answer);
        }
        match self.bounded(self.op.stat(&encode(path))).await {
            Ok(m) if m.mode().is_file() => Ok(Some(ObjectInfo {
                size: m.content_length(),
                mtime_ns: mtime_ns(&m),
                version: version_of(&m),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.fail("stat", path, e)),
        }
    }

    /// [`Ufs::probe`] by a ranged GET of the object's first [`PROBE_BYTES`]: its response
    /// says all a HEAD says (the size from Content-Range, the ETag or version id, the
    /// mtime), and the bytes are kept for the reads that follow ([`Heads`]), so a cold
    /// file's lookup, open and first read cost one round trip, not two. `None`: this did
    /// not tell (no strong version in the response, an empty object's 416, a failure);
    /// ask with a HEAD.
    async fn probe_read(&self, path: &str) -> Option<Option<ObjectInfo>> {
        let key = encode(path);
        let r = match self.bounded(self.op.reader(&key)).await {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::NotFound => return Some(None),
            Err(_) => return None,
        };
        let body = self.bounded(r.read(0..PROBE_BYTES)).await;
        if let Err(e) = &body
            && e.kind() == ErrorKind::NotFound
        {
            return Some(None);
        }
        // Known from the response's headers even when the body fell short (an object
        // smaller than the range answers only what it has).
        let m = r.metadata()?;
        if !m.mode().is_file() || (m.etag().is_none() && m.version().is_none()) {
            return None;
        }
        let info = ObjectInfo {
            size: m.content_length(),
            mtime_ns: mtime_ns(m),
            version: version_of(m),
        };
        if let Ok(b) = body {
            let b = aligned_bytes(b);
            if b.len() as u64 == info.size.min(PROBE_BYTES) {
                self.heads.put(path, &info.version, b);
            }
        }
        Some(Some(info))
    }

    /// Reads `range` of object `path` at `version`. On ETag-versioned stores the read is
    /// pinned with If-Match, so a changed object fails with ESTALE instead of returning
    /// bytes of another version. A local directory is checked after the read instead: if
    /// the file's version is not `version` any more, the bytes may be another version's,
    /// and the read fails with ESTALE.
    pub async fn read_range(
        &self,
        path: &str,
        range: Range<u64>,
        version: &str,
    ) -> Result<Bytes, UfsError> {
        Ok(aligned_bytes(self.read_buffer(path, range, version).await?))
    }

    /// [`Self::read_range`] answered as consecutive pieces of `piece` bytes (the last may
    /// be shorter), each in its own aligned buffer: one GET for several cache pages, each
    /// page then cached and freed on its own.
    pub async fn read_pieces(
        &self,
        path: &str,
        range: Range<u64>,
        version: &str,
        piece: u64,
    ) -> Result<Vec<Bytes>, UfsError> {
        let buf = self.read_buffer(path, range, version).await?;
        let piece = usize::try_from(piece.max(1)).unwrap_or(usize::MAX);
        // Each piece is copied into its own buffer (unless it is the whole answer): a slice
        // of a larger chunk (a local file is read in one) would keep that chunk alive for
        // as long as any one page of it stays cached, while the memory tier counts only
        // that page. (An answer in many small chunks, as HTTP bodies come, is copied
        // anyway, into one aligned page.)
        let whole = buf.len() <= piece;
        let mut out = Vec::with_capacity(buf.len().div_ceil(piece));
        let mut at = 0;
        while at < buf.len() {
            let n = (buf.len() - at).min(piece);
            let part = buf.slice(at..at + n);
            out.push(match whole {
                true => aligned_bytes(part),
                false => aligned_copy(part),
            });
            at += n;
        }
        Ok(out)
    }

    /// The bytes of [`Self::read_range`] as the store's client answered them (in chunks).
    async fn read_buffer(
        &self,
        path: &str,
        range: Range<u64>,
        version: &str,
    ) -> Result<opendal::Buffer, UfsError> {
        if let Some(b) = self.heads.get(path, version, &range) {
            Metrics::inc(&self.metrics.probe_reads);
            return Ok(opendal::Buffer::from(b));
        }
        self.count(&self.metrics.ufs_reads);
        let encoded = encode(path);
        let mut req = self.op.read_with(&encoded).range(range);
        let mut by_version = false;
        let typed = ObjectVersion::parse(version);
        match &typed {
            ObjectVersion::ETag(etag) if self.if_match => req = req.if_match(etag),
            ObjectVersion::Id(v) if self.read_version => {
                // The named version (an S3 version id, a GCS generation): its bytes even
                // if the object changed since, or NotFound once that version is gone.
                req = req.version(v);
                by_version = true;
            }
            _ => {}
        }
        let buf = match self.bounded(req.into_future()).await {
            Ok(b) => b,
            Err(e) if by_version && e.kind() == ErrorKind::NotFound => {
                let e = opendal::Error::new(
                    ErrorKind::ConditionNotMatch,
                    format!("version {version} is gone: {e}"),
                );
                return Err(self.fail("read", path, e));
            }
            Err(e) => return Err(self.fail("read", path, e)),
        };
        // Only a local directory is checked: there a listing and a stat read the same
        // metadata, so the version strings agree. (Object stores may list without ETags
        // and answer HEAD with them, or list mtimes finer than HEAD's; their versions
        // from the two cannot be compared.) A pending (ASYNC_THROUGH) version is not the
        // store's: the caller reads the store only once that version was uploaded.
        if self.local_root.is_some() && typed.in_store() {
            // One stat after the read is enough: a change before or during the read moves
            // the version (size, mtime or ETag) seen here.
            let now = self.stat(path).await?;
            if now.version != version {
                let e = opendal::Error::new(
                    ErrorKind::ConditionNotMatch,
                    format!(
                        "changed underneath: version {version} is now {}",
                        now.version
                    ),
                );
                return Err(self.fail("read", path, e));
            }
        }
        Ok(buf)
    }

    /// Uploads `len` bytes of a local file as object `path`, streaming in chunks, and
    /// returns the new object's info. The object is complete in the store on return.
    /// `None` uploads an empty object (`len` is then ignored).
    pub async fn upload_file(
        &self,
        path: &str,
        file: Option<Arc<std::fs::File>>,
        len: u64,
    ) -> Result<ObjectInfo, UfsError> {
        let len = if file.is_some() { len } else { 0 };
        self.count(&self.metrics.ufs_writes);
        if let Some(root) = &self.local_root {
            let (root, key) = (root.clone(), path.to_string());
            let res = crate::offload::run(move || local_upload(&root, &key, file.as_deref(), len))
                .await
                .map_err(|e| opendal::Error::new(ErrorKind::Unexpected, e.to_string()))
                .and_then(|r| {
                    r.map_err(|e| {
                        let kind = ErrorKind::Unexpected;
                        opendal::Error::new(kind, format!("write: {e}")).set_source(e)
                    })
                });
            res.map_err(|e| self.fail("write", path, e))?;
            Metrics::add(&self.metrics.bytes_to_ufs, len);
            return self.stat(path).await;
        }
        // More than one part: wait for a commit slot (see `commit_slots`).
        let _slot = if len > self.upload.part_bytes {
            self.commit_slots.clone().acquire_owned().await.ok()
        } else {
            None
        };
        if !self.multi_write {
            return self.upload_whole(path, file, len).await;
        }
        let mut w = self.writer(path).await?;
        let mut off = 0u64;
        while let Some(file) = file.as_ref().filter(|_| off < len) {
            let n = (len - off).min(self.upload.part_bytes) as usize;
            let f = file.clone();
            let chunk = tokio::task::spawn_blocking(move || crate::holes::read_at(&f, off, n))
                .await
                .map_err(|e| opendal::Error::new(ErrorKind::Unexpected, e.to_string()))
                .and_then(|r| {
                    r.map_err(|e| {
                        opendal::Error::new(ErrorKind::Unexpected, format!("staging read: {e}"))
                    })
                });
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = self.bounded(w.abort()).await;
                    return Err(self.fail("write", path, e));
                }
            };
            // Bounded per part: an upload may take long, but never long without progress.
            if let Err(e) = self.bounded(w.write(chunk)).await {
                let _ = self.bounded(w.abort()).await;
                return Err(self.fail("write", path, e));
            }
            off += n as u64;
        }
        let written = match self.bounded(w.close()).await {
            Ok(m) => m,
            Err(e) => {
                let _ = self.bounded(w.abort()).await;
                return Err(self.fail("write", path, e));
            }
        };
        Metrics::add(&self.metrics.bytes_to_ufs, len);
        self.written(path, &written, len).await
    }

    /// Uploads a file in one request, for services that take an object only whole (WebDAV's
    /// PUT, WebHDFS's CREATE). On WebDAV a file of more than one part is streamed from the
    /// file as it is sent. Elsewhere the file is read into memory first, in chunks of one
    /// part; uploads of more than one part hold a commit slot, which bounds how many such
    /// files are in memory at once (one per slot), not their size.
    async fn upload_whole(
        &self,
        path: &str,
        file: Option<Arc<std::fs::File>>,
        len: u64,
    ) -> Result<ObjectInfo, UfsError> {
        if let (Some(put), Some(f)) = (&self.stream_put, &file)
            && len > self.upload.part_bytes
        {
            // The parent collections first, as OpenDAL's own writer makes them.
            if let Some((parent, _)) = path.rsplit_once('/') {
                self.create_dir(&format!("{parent}/")).await?;
            }
            // Bounded as a multipart upload is: a part's time per part.
            let parts = len.div_ceil(self.upload.part_bytes) as u32;
            let limit = self.timeout.saturating_mul(parts);
            match tokio::time::timeout(limit, put.put(path, f.clone(), len)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(self.fail("write", path, e)),
                Err(_) => {
                    let e = opendal::Error::new(
                        ErrorKind::Unexpected,
                        format!("no answer from the store within {} s", limit.as_secs()),
                    );
                    return Err(self.fail("write", path, e));
                }
            }
            Metrics::add(&self.metrics.bytes_to_ufs, len);
            return self.stat(path).await;
        }
        let chunk = self.upload.part_bytes;
        let body = match file {
            None => opendal::Buffer::new(),
            Some(f) => tokio::task::spawn_blocking(move || {
                let mut parts = Vec::new();
                let mut off = 0u64;
                while off < len {
                    let n = (len - off).min(chunk) as usize;
                    parts.push(crate::holes::read_at(&f, off, n)?);
                    off += n as u64;
                }
                Ok::<_, std::io::Error>(opendal::Buffer::from(parts))
            })
            .await
            .map_err(|e| opendal::Error::new(ErrorKind::Unexpected, e.to_string()))
            .and_then(|r| {
                r.map_err(|e| {
                    opendal::Error::new(ErrorKind::Unexpected, format!("staging read: {e}"))
                })
            })
            .map_err(|e| self.fail("write", path, e))?,
        };
        let written = self
            .bounded(self.op.write(&encode(path), body))
            .await
            .map_err(|e| self.fail("write", path, e))?;
        Metrics::add(&self.metrics.bytes_to_ufs, len);
        self.written(path, &written, len).await
    }

    /// What an upload of `len` bytes to `path` stored, from the metadata the store returned
    /// for the write. Object stores answer a PutObject or CompleteMultipartUpload with the
    /// object's ETag (and version id where versioned), which is the ETag every later HEAD,
    /// GET and If-Match uses, so no HEAD is needed: that HEAD was a third of the cost of
    /// creating an empty file on S3. A store that returns neither is asked with a stat.
    async fn written(
        &self,
        path: &str,
        written: &Metadata,
        len: u64,
    ) -> Result<ObjectInfo, UfsError> {
        if written.version().is_none() && written.etag().is_none() {
            return self.stat(path).await;
        }
        Ok(ObjectInfo {
            size: len,
            mtime_ns: mtime_ns(written),
            version: version_of(written),
        })
    }

    /// A multipart writer of `path` with this store's part size and parts in flight.
    async fn writer(&self, path: &str) -> Result<opendal::Writer, UfsError> {
        let key = encode(path);
        let w = self
            .op
            .writer_with(&key)
            .chunk(self.upload.part_bytes as usize)
            .concurrent(self.upload.concurrency);
        self.bounded(w.into_future())
            .await
            .map_err(|e| self.fail("write", path, e))
    }

    /// Starts an upload of `path` that is fed while the file is still being written
    /// ([`UploadStream`]). `None` when streaming gains nothing (a local directory, written
    /// by one copy at commit) or every upload slot is taken (the caller then uploads the
    /// whole file at commit, as without streaming).
    pub async fn start_stream(&self, path: &str) -> Result<Option<UploadStream>, UfsError> {
        if self.local_root.is_some() || !self.multi_write {
            return Ok(None);
        }
        let Ok(slot) = self.stream_slots.clone().try_acquire_owned() else {
            return Ok(None);
        };
        Ok(Some(UploadStream {
            w: self.writer(path).await?,
            path: path.to_string(),
            bytes: 0,
            _slot: slot,
        }))
    }

    /// Hands the next bytes of a streamed upload to the store; waits while all of its
    /// parts are in flight.
    pub async fn stream_write(&self, s: &mut UploadStream, buf: Bytes) -> Result<(), UfsError> {
        let n = buf.len() as u64;
        self.bounded(s.w.write(buf))
            .await
            .map_err(|e| self.fail("write", &s.path, e))?;
        s.bytes += n;
        Metrics::add(&self.metrics.bytes_to_ufs, n);
        Ok(())
    }

    /// Completes a streamed upload: the object is whole in the store on return.
    pub async fn stream_finish(&self, mut s: UploadStream) -> Result<ObjectInfo, UfsError> {
        self.count(&self.metrics.ufs_writes);
        let written = match self.bounded(s.w.close()).await {
            Ok(m) => m,
            Err(e) => {
                let _ = self.bounded(s.w.abort()).await;
                return Err(self.fail("write", &s.path, e));
            }
        };
        Metrics::inc(&self.metrics.streamed_uploads);
        self.written(&s.path, &written, s.bytes).await
    }

    /// Abandons a streamed upload; parts already stored are discarded by the store.
    pub async fn stream_abort(&self, mut s: UploadStream) {
        if let Err(e) = self.bounded(s.w.abort()).await {
            tracing::warn!(path = %s.path, error = %e, "cannot abort a streamed upload");
        }
    }

    /// Creates the directory key `dir` (ending in `/`).
    pub async fn create_dir(&self, dir: &str) -> Result<(), UfsError> {
        self.count(&self.metrics.ufs_writes);
        self.bounded(self.op.create_dir(&encode(dir)))
            .await
            .map_err(|e| self.fail("create_dir", dir, e))
    }

    /// Deletes a file key, or an empty directory key (ending in `/`). Deleting a key that
    /// does not exist succeeds.
    pub async fn delete(&self, path: &str) -> Result<(), UfsError> {
        self.count(&self.metrics.ufs_deletes);
        if let Some(root) = &self.local_root
            && path.ends_with('/')
        {
            // Natively: OpenDAL reports a directory that is not empty as a temporary
            // error, and its retries made such an rmdir take 11 s before ENOTEMPTY.
            let dir = root.join(path.trim_end_matches('/'));
            return match blocking(move || std::fs::remove_dir(dir)).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Err(e) => Err(self.fail("delete", path, e)),
            };
        }
        match self.bounded(self.op.delete(&encode(path))).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.fail("delete", path, e)),
        }
    }

    /// Renames file key `from` to `to` (natively; else server-side copy + delete; else a
    /// streamed copy in chunks + delete), returning the new object's info.
    pub async fn rename_file(&self, from: &str, to: &str) -> Result<ObjectInfo, UfsError> {
        self.count(&self.metrics.ufs_renames);
        if self.native_rename {
            self.bounded(self.op.rename(&encode(from), &encode(to)))
                .await
                .map_err(|e| self.fail("rename", from, e))?;
        } else {
            if self.native_copy {
                self.bounded(self.op.copy(&encode(from), &encode(to)))
                    .await
                    .map_err(|e| self.fail("copy", from, e))?;
            } else {
                self.stream_copy(from, to).await?;
            }
            self.delete(from).await?;
        }
        self.stat(to).await
    }

    /// Renames directory key `from` to `to` (both ending in `/`) with everything below it:
    /// natively on a local filesystem, else object by object (copy, then delete the
    /// sources). The copy is not atomic in the store; the namespace switches only after it
    /// completed.
    pub async fn rename_dir(&self, from: &str, to: &str) -> Result<(), UfsError> {
        self.count(&self.metrics.ufs_renames);
        if let Some(root) = &self.local_root {
            let (a, b) = (
                root.join(from.trim_end_matches('/')),
                root.join(to.trim_end_matches('/')),
            );
            return crate::offload::run(move || std::fs::rename(a, b))
                .await
                .map_err(|e| opendal::Error::new(ErrorKind::Unexpected, e.to_string()))
                .and_then(|r| {
                    r.map_err(|e| {
                        let kind = match e.kind() {
                            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
                            _ => ErrorKind::Unexpected,
                        };
                        opendal::Error::new(kind, format!("rename: {e}"))
                    })
                })
                .map_err(|e| self.fail("rename", from, e));
        }
        if self.native_dir_rename {
            // One MOVE of the collection, which replaces an (empty) target.
            let (a, b) = (from.trim_end_matches('/'), to.trim_end_matches('/'));
            return self
                .bounded(self.op.rename(&encode(a), &encode(b)))
                .await
                .map_err(|e| self.fail("rename", from, e));
        }
        self.count(&self.metrics.ufs_lists);
        let entries = match self.list_tree(from).await {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(self.fail("list", from, e)),
        };
        // A key with a `.` or `..` component (written by another tool) cannot be named in
        // a request: the HTTP client resolves such segments in the URL, so the copy would
        // read or write another key. Refused before anything moves.
        if let Some(e) = entries.iter().find(|e| has_dot_component(e.path())) {
            return Err(UfsError::new(
                "rename",
                e.path().to_string(),
                opendal::Error::new(
                    ErrorKind::Unsupported,
                    "a key under this directory has a '.' or '..' component, which requests cannot name",
                ),
            ));
        }
        self.create_dir(to).await?;
        let mut sources = Vec::new();
        for e in entries {
            let p = e.path().to_string();
            let Some(rel) = p.strip_prefix(from) else {
                continue;
            };
            if rel.is_empty() {
                continue;
            }
            let dst = format!("{to}{rel}");
            if p.ends_with('/') {
                self.create_dir(&dst).await?;
            } else if self.native_copy {
                self.count(&self.metrics.ufs_writes);
                self.bounded(self.op.copy(&encode(&p), &encode(&dst)))
                    .await
                    .map_err(|e| self.fail("copy", &p, e))?;
            } else {
                self.stream_copy(&p, &dst).await?;
            }
            sources.push(p);
        }
        // Delete deepest keys first so directory markers go after their contents.
        sources.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in sources {
            self.delete(&p).await?;
        }
        self.delete(from).await
    }

    /// Every key below directory key `dir` (ending in `/`, with the marker where there is
    /// one), in one recursive listing where the service has it, else by [`Self::walk`].
    async fn list_tree(&self, dir: &str) -> opendal::Result<Vec<opendal::Entry>> {
        if !self.list_recursive {
            return self.walk(dir).await;
        }
        let prefix = encode(dir);
        let listing = self.op.list_with(&prefix).recursive(true);
        self.bounded(listing.into_future()).await
    }

    /// Every key below directory key `dir`, listing one directory at a time (services
    /// without recursive listing: WebDAV, WebHDFS, HDFS, SFTP). Each listing is bounded
    /// by `ufs_timeout`; a directory that is gone lists as empty.
    async fn walk(&self, dir: &str) -> opendal::Result<Vec<opendal::Entry>> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_string()];
        while let Some(d) = todo.pop() {
            let entries = match self.bounded(self.op.list(&encode(&d))).await {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for e in entries {
                let p = e.path();
                if p == d || p.is_empty() || p == "/" {
                    if p == dir {
                        out.push(e); // the directory itself, once
                    }
                    continue;
                }
                if p.ends_with('/') && p.starts_with(d.as_str()) {
                    todo.push(p.to_string());
                }
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Copies an object through this process, one chunk in memory at a time.
    async fn stream_copy(&self, from: &str, to: &str) -> Result<(), UfsError> {
        let len = self.stat(from).await?.size;
        let dst = encode(to);
        if !self.multi_write {
            // Whole, as this service takes objects (see `upload_whole`).
            self.count(&self.metrics.ufs_reads);
            let body = self
                .bounded(self.op.read(&encode(from)))
                .await
                .map_err(|e| self.fail("read", from, e))?;
            self.count(&self.metrics.ufs_writes);
            return self
                .bounded(self.op.write(&dst, body))
                .await
                .map(|_| ())
                .map_err(|e| self.fail("write", to, e));
        }
        let writer = self.op.writer_with(&dst).chunk(UPLOAD_CHUNK);
        let mut w = self
            .bounded(writer.into_future())
            .await
            .map_err(|e| self.fail("write", to, e))?;
        let (src, mut off) = (encode(from), 0u64);
        while off < len {
            let end = len.min(off + UPLOAD_CHUNK as u64);
            self.count(&self.metrics.ufs_reads);
            let read = self.op.read_with(&src).range(off..end);
            let chunk = match self.bounded(read.into_future()).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = self.bounded(w.abort()).await;
                    return Err(self.fail("read", from, e));
                }
            };
            if let Err(e) = self.bounded(w.write(chunk)).await {
                let _ = self.bounded(w.abort()).await;
                return Err(self.fail("write", to, e));
            }
            off = end;
        }
        if let Err(e) = self.bounded(w.close()).await {
            let _ = self.bounded(w.abort()).await;
            return Err(self.fail("write", to, e));
        }
        Ok(())
    }
}

/// How long a store call may go without an answer by default (`-o ufs_timeout=`).
pub const DEFAULT_UFS_TIMEOUT: Duration = Duration::from_secs(30);

/// `base` with our layers (outermost first): Retry → Timeout → exact keys → service.
/// Each attempt is bounded by `timeout` (as a whole for control calls, per transfer for
/// reads and writes); [`Ufs::bounded`] bounds a call with its retries by the same.
fn layered(base: &Operator, timeout: Duration) -> Operator {
    base.clone()
        // Innermost: the paths below are exact keys (see `exact_keys`).
        .layer(ExactKeysLayer)
        .layer(
            TimeoutLayer::new()
                .with_timeout(timeout)
                .with_io_timeout(timeout),
        )
        .layer(RetryLayer::new().with_max_times(3).with_jitter())
}

/// Whether `key` has a `.` or `..` component.
fn has_dot_component(key: &str) -> bool {
    key.split('/').any(|c| c == "." || c == "..")
}

/// The longest key a store accepts under the configured root, as a limit on the keys the
/// mount names (the root's own length and its separator taken off).
fn key_limit(cfg: &UfsConfig) -> Option<KeyLimit> {
    let root = cfg
        .options
        .get("root")
        .map(|r| r.trim_matches('/'))
        .filter(|r| !r.is_empty());
    let local = cfg.scheme == "fs";
    Some(match cfg.store().max_key? {
        // A local path: the root is absolute (its leading '/' counts) and a separator
        // follows it.
        KeyLimit::Bytes(n) if local => {
            KeyLimit::Bytes(n.saturating_sub(root.map_or(0, |r| r.len() + 1) + 1))
        }
        KeyLimit::Bytes(n) => KeyLimit::Bytes(n.saturating_sub(root.map_or(0, |r| r.len() + 1))),
        KeyLimit::Chars(n) => {
            KeyLimit::Chars(n.saturating_sub(root.map_or(0, |r| r.chars().count() + 1)))
        }
    })
}

/// Writes object `key` under a local root atomically: the bytes go to a file in
/// [`FS_TMP_DIR`], which is synced and then renamed over the key (and the rename synced).
fn local_upload(
    root: &std::path::Path,
    key: &str,
    src: Option<&std::fs::File>,
    len: u64,
) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let tmp_dir = root.join(FS_TMP_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&tmp_dir)?;
    let seq = TMP_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = tmp_dir.join(format!("{}-{seq}", std::process::id()));
    let dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)?;
    let target = root.join(key);
    // As OpenDAL's fs writer does: the key's directories are created if missing.
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let copied = match src {
        Some(src) => copy_file(src, &dst, len),
        None => Ok(()),
    };
    // The version of a local object is its size and mtime. A new file's mtime comes from
    // the kernel's coarse clock (a tick of up to 4 ms, on kernels without multigrain
    // timestamps), so two commits of the same size in one tick would share a version and
    // the second would be served the first's cached pages. The clock read here is
    // nanosecond-grained.
    let copied = copied.and_then(|()| dst.set_modified(std::time::SystemTime::now()));
    let res = copied.and_then(|()| std::fs::rename(&tmp, &target));
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

/// Runs blocking local-filesystem work where blocking is allowed (`offload`), as an
/// OpenDAL error.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, opendal::Error> {
    match crate::offload::run(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            let kind = match e.kind() {
                std::io::ErrorKind::NotFound => ErrorKind::NotFound,
                std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
                _ => ErrorKind::Unexpected,
            };
            Err(opendal::Error::new(kind, e.to_string()).set_source(e))
        }
        Err(e) => Err(opendal::Error::new(ErrorKind::Unexpected, e.to_string())),
    }
}

/// The version of a local file: its size and mtime to the nanosecond (see `version_of`).
fn local_info(m: &std::fs::Metadata) -> ObjectInfo {
    use std::os::unix::fs::MetadataExt;
    let mtime_ns = m
        .mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(m.mtime_nsec());
    ObjectInfo {
        size: m.len(),
        mtime_ns,
        version: ObjectVersion::SizeMtime {
            size: m.len(),
            mtime_ns,
        }
        .to_string(),
    }
}

/// Stats a local file (following symlinks, as reads do).
fn local_stat(path: &std::path::Path) -> std::io::Result<ObjectInfo> {
    let m = std::fs::metadata(path)?;
    if m.is_dir() {
        return Err(std::io::Error::from_raw_os_error(libc::EISDIR));
    }
    Ok(local_info(&m))
}

/// The children of directory key `dir` under a local root, with their exact names. Names
/// that are not UTF-8 cannot be keys and are skipped, and so are entries that are neither
/// files nor directories once symlinks are followed (sockets, FIFOs, dangling links). A
/// directory that does not exist lists as empty.
fn local_list(root: &std::path::Path, dir: &str) -> std::io::Result<Vec<UfsChild>> {
    let rd = match std::fs::read_dir(root.join(dir)) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else {
            tracing::warn!(dir, name = ?name, "skipping a local entry whose name is not UTF-8");
            continue;
        };
        if dir.is_empty() && name == FS_TMP_DIR {
            continue; // our own atomic-write area
        }
        let m = match std::fs::metadata(e.path()) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // gone, or dangling
            Err(e) => return Err(e),
        };
        let (kind, size, version) = if m.is_dir() {
            (FileKind::Dir, 0, None)
        } else if m.is_file() {
            let info = local_info(&m);
            (FileKind::File, info.size, Some(info.version))
        } else {
            continue;
        };
        out.push(UfsChild {
            name: name.as_bytes().to_vec(),
            kind,
            size,
            mtime_ns: local_info(&m).mtime_ns,
            version,
        });
    }
    Ok(out)
}

/// The UFS key of a file from its path components.
pub fn file_key(parts: &[Vec<u8>]) -> Result<String, std::str::Utf8Error> {
    let mut s = String::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            s.push('/');
        }
        s.push_str(std::str::from_utf8(p)?);
    }
    Ok(s)
}

/// The UFS key of a directory from its path components (`""` for the root).
pub fn dir_key(parts: &[Vec<u8>]) -> Result<String, std::str::Utf8Error> {
    let mut s = file_key(parts)?;
    if !s.is_empty() {
        s.push('/');
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(
            file_key(&[b"a".to_vec(), b"b.txt".to_vec()]).unwrap(),
            "a/b.txt"
        );
        assert_eq!(dir_key(&[b"a".to_vec()]).unwrap(), "a/");
        assert_eq!(dir_key(&[]).unwrap(), "");
        assert!(file_key(&[vec![0xff]]).is_err());
    }

    #[tokio::test]
    async fn memory_round_trip_and_listing() {
        let m = Arc::new(Metrics::default());
        let cfg = UfsConfig::parse("memory://", &Default::default()).unwrap();
        let ufs = Ufs::new(&cfg, m.clone()).unwrap();
        ufs.check().await.unwrap();
        let tmp = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut &tmp, b"hello world").unwrap();
        let info = ufs
            .upload_file("d/f", Some(Arc::new(tmp)), 11)
            .await
            .unwrap();
        assert_eq!(info.size, 11);
        ufs.create_dir("d/sub/").await.unwrap();
        let mut l = ufs.list_dir("d/").await.unwrap();
        l.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(l.len(), 2, "{l:?}");
        assert_eq!(
            (l[0].name.as_slice(), l[0].kind, l[0].size),
            (&b"f"[..], FileKind::File, 11)
        );
        assert_eq!(
            (l[1].name.as_slice(), l[1].kind),
            (&b"sub"[..], FileKind::Dir)
        );
        let b = ufs.read_range("d/f", 6..11, &info.version).await.unwrap();
        assert_eq!(&b[..], b"world");
        let moved = ufs.rename_file("d/f", "d/g").await.unwrap();
        assert_eq!(moved.size, 11);
        assert!(ufs.stat("d/f").await.is_err());
        ufs.delete("d/g").await.unwrap();
        ufs.delete("d/g").await.unwrap();
        assert!(m.ufs_requests.load(std::sync::atomic::Ordering::Relaxed) >= 8);
    }

    /// Local objects are versioned by size and mtime: back-to-back uploads of the same size
    /// must still get distinct versions, or cached pages of one would serve the other.
    #[tokio::test]
    async fn local_uploads_of_one_size_get_distinct_versions() {
        let root = tempfile::tempdir().unwrap();
        let cfg = UfsConfig::parse(root.path().to_str().unwrap(), &Default::default()).unwrap();
        let ufs = Ufs::new(&cfg, Arc::new(Metrics::default())).unwrap();
        let mut seen = std::collections::HashSet::new();
        for i in 0..50u8 {
            let tmp = tempfile::tempfile().unwrap();
            std::io::Write::write_all(&mut &tmp, &[i; 100]).unwrap();
            let info = ufs
                .upload_file("f", Some(Arc::new(tmp)), 100)
                .await
                .unwrap();
            assert!(
                seen.insert(info.version.clone()),
                "version {} reused",
                info.version
            );
        }
    }
}
