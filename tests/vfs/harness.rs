//! A `Vfs` with nothing outside this process: the in-memory namespace store, an OpenDAL
//! UFS (an in-memory store, or a temporary directory) with a [`FaultLayer`] under this
//! crate's retry and timeout layers, and a memory-only page cache. No kernel, no
//! `/dev/fuse`, no root: the calls are the ones the FUSE adapter makes, made directly.
//! Where the kernel decides something before it calls the filesystem (name lookups,
//! EEXIST, EISDIR), the reference test says so beside the call (`reftest.rs`).

use std::sync::Arc;
use std::time::Duration;

use alluxio::config::{MetadataSync, UfsConfig, WriteType};
use alluxio::fault::{FaultLayer, Faults};
use alluxio::fetch::PageSource;
use alluxio::meta::embedded::EmbeddedMeta;
use alluxio::meta::{MetaClient, RunOp};
use alluxio::metrics::Metrics;
use alluxio::page_cache::{PageCache, PageCacheConfig};
use alluxio::peer::client::{PeerConfig, Peers};
use alluxio::peer::ring::Member;
use alluxio::peer::server::{PeerHost, serve};
use alluxio::types::{FileHandle, InodeNo, Ownership, ROOT_INO};
use alluxio::ufs::Ufs;
use alluxio::vfs::{OpenMode, Vfs, VfsConfig};
use alluxio_metaserver::rpc::{Op, Value};
use alluxio_metaserver::{MemoryStore, MetaError, Namespace, NamespaceStore, RedbStore};

pub use crate::model::data;

pub const MIB: usize = 1 << 20;

/// Where the UFS keeps its objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// OpenDAL's in-memory service: every call goes through OpenDAL (and the fault layer).
    Memory,
    /// A temporary directory: reads go through OpenDAL; stats, listings, uploads and
    /// renames are native file system calls.
    Dir,
}

/// How to build an [`Env`].
pub struct Options {
    pub store: Store,
    pub timeout: Duration,
    pub write_type: WriteType,
    pub prefetch_pages: u64,
    /// Page sources asked after the local copies and before the UFS.
    pub extra: Vec<Arc<dyn PageSource>>,
    /// A directory store at this path (shared by several envs), instead of a new one.
    pub dir: Option<std::path::PathBuf>,
    /// Taking part in a cluster: asking peers, and serving them if a listener is given.
    pub peer: Option<PeerOptions>,
    /// The memory and disk tiers' sizes in bytes (0: no tier).
    pub mem_cache: u64,
    pub disk_cache: u64,
    /// `VfsConfig::dir_prefetch_bytes` (default 0: off, so counts of store reads stay
    /// exact in other tests).
    pub dir_prefetch: u64,
    /// Outages of the namespace, as a metaserver that dies and comes back gives them.
    pub meta_outage: Option<MetaOutage>,
    /// The namespace in a redb file in the env's directory, so [`Env::restart`] finds it
    /// again (in memory otherwise).
    pub restartable: bool,
    /// `VfsConfig::upload_delay` (ASYNC_THROUGH).
    pub upload_delay: Duration,
    /// `VfsConfig::last_close_retry`.
    pub last_close_retry: Duration,
}

/// Outages of the namespace the env's vfs talks to: every call fails as one to a
/// metaserver that is down does (`MetaError::Storage`) while `down` is set, and the next
/// `renames_lost` renames are made and then reported failed (the answer lost on the way).
#[derive(Clone, Default)]
pub struct MetaOutage {
    pub down: Arc<std::sync::atomic::AtomicBool>,
    pub renames_lost: Arc<std::sync::atomic::AtomicU32>,
    /// Set down by the next rename, before it runs (the metaserver dies under it).
    pub down_at_next_rename: Arc<std::sync::atomic::AtomicBool>,
    /// The next this many attribute changes are made and then reported failed.
    pub set_attrs_lost: Arc<std::sync::atomic::AtomicU32>,
    /// The next this many unlinks are made and then reported failed.
    pub unlinks_lost: Arc<std::sync::atomic::AtomicU32>,
    /// The next rename is refused as a restarted metaserver refuses one into a directory
    /// its new epoch has not listed (`MetaError::Unloaded`), without being made.
    pub rename_unloaded: Arc<std::sync::atomic::AtomicBool>,
    /// Durable commits asked for (`Op::Sync`), counted.
    pub syncs: Arc<std::sync::atomic::AtomicU32>,
    /// The namespace without the outage: how another client, which still reaches it,
    /// sees it.
    /// Replaced at every (re)start of the env, so it is always the running namespace.
    direct: Arc<std::sync::Mutex<Option<Arc<dyn MetaClient>>>>,
}

impl MetaOutage {
    /// The namespace as another client reaches it, outage or not (set once the env is
    /// built, and again at each restart).
    pub fn direct(&self) -> Arc<dyn MetaClient> {
        let d = self.direct.lock().unwrap();
        d.clone().expect("the env is built")
    }
}

struct OutageMeta<R> {
    inner: Arc<R>,
    outage: MetaOutage,
}

#[async_trait::async_trait]
impl<R: RunOp> RunOp for OutageMeta<R> {
    async fn run(&self, op: Op) -> Result<Value, MetaError> {
        use std::sync::atomic::Ordering::SeqCst;
        let rename = matches!(op, Op::Rename { .. });
        if matches!(op, Op::Sync) {
            self.outage.syncs.fetch_add(1, SeqCst);
        }
        // The calls whose answers the plan loses: the next `n` of each kind.
        let lost = match &op {
            Op::Rename { .. } => Some(&self.outage.renames_lost),
            Op::SetAttr { .. } => Some(&self.outage.set_attrs_lost),
            Op::Unlink { .. } => Some(&self.outage.unlinks_lost),
            _ => None,
        };
        if rename && self.outage.down_at_next_rename.swap(false, SeqCst) {
            self.outage.down.store(true, SeqCst);
        }
        if let Op::Rename { newparent, .. } = &op
            && self.outage.rename_unloaded.swap(false, SeqCst)
        {
            return Err(MetaError::Unloaded(*newparent));
        }
        if self.outage.down.load(SeqCst) {
            return Err(MetaError::Storage(
                "metaserver unreachable (test outage)".into(),
            ));
        }
        let r = self.inner.run(op).await;
        if r.is_ok()
            && lost.is_some_and(|n| n.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok())
        {
            return Err(MetaError::Storage("answer lost (test outage)".into()));
        }
        r
    }
}

/// The namespace over `store`, as the env's vfs reaches it.
fn meta_client<S: NamespaceStore + 'static>(
    store: S,
    own: Ownership,
    outage: Option<MetaOutage>,
) -> Arc<dyn MetaClient> {
    let ns = Namespace::open(store, own, 1).unwrap();
    let meta = Arc::new(EmbeddedMeta::new(ns));
    match outage {
        Some(outage) => {
            let direct: Arc<dyn MetaClient> = meta.clone();
            *outage.direct.lock().unwrap() = Some(direct);
            Arc::new(OutageMeta {
                inner: meta,
                outage,
            })
        }
        None => meta,
    }
}

/// How an env takes part in a cluster.
pub struct PeerOptions {
    /// Bound already, so that every member's address is known before any env is built.
    pub listener: Option<std::net::TcpListener>,
    pub members: Vec<Member>,
    pub timeout: Duration,
}

pub const TOKEN: &str = "test-cluster-token";

/// A listener on a free loopback port, and the ring member it makes.
pub fn peer_listener() -> (std::net::TcpListener, Member) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, Member { addr, weight: 1 })
}

impl Default for Options {
    fn default() -> Self {
        Self {
            store: Store::Memory,
            timeout: Duration::from_secs(5),
            write_type: WriteType::CacheThrough,
            // No read-ahead: each read fetches only what it asks for, so counts are exact.
            prefetch_pages: 0,
            extra: Vec::new(),
            dir: None,
            peer: None,
            mem_cache: 64 << 20,
            disk_cache: 0,
            dir_prefetch: 0,
            meta_outage: None,
            restartable: false,
            upload_delay: Duration::ZERO,
            last_close_retry: alluxio::vfs::LAST_CLOSE_RETRY,
        }
    }
}

/// A vfs and what a test needs beside it.
pub struct Env {
    pub vfs: Arc<Vfs>,
    pub rt: tokio::runtime::Runtime,
    /// The plan the store's fault layer obeys.
    pub faults: Faults,
    pub metrics: Arc<Metrics>,
    /// The store without any layer of ours: what another writer of the bucket sees.
    pub store: opendal::Operator,
    pub uid: u32,
    pub gid: u32,
    /// This env's peer listener, while it serves (abort it to take the node down).
    pub peer_server: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        Self::with(Options::default())
    }

    pub fn with(o: Options) -> Self {
        Self::build(o, tempfile::tempdir().unwrap())
    }

    /// The daemon killed and started again: the vfs and its runtime go without any
    /// clean-up of their own (what they had in flight is dropped), and a new vfs opens
    /// the same namespace (a new epoch), store directory, cache directory and logs, and
    /// finishes what the logs say was cut short, as a mount does before it serves.
    /// Needs `restartable` and [`Store::Dir`] in both runs' options.
    pub fn restart(self, o: Options) -> Self {
        assert!(
            o.restartable && o.store == Store::Dir,
            "restart needs a durable env"
        );
        let Env {
            vfs,
            rt,
            peer_server,
            _dir,
            ..
        } = self;
        drop(peer_server);
        drop(vfs);
        rt.shutdown_timeout(Duration::from_secs(5));
        Self::build(o, _dir)
    }

    fn build(o: Options, dir: tempfile::TempDir) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let metrics = Arc::new(Metrics::default());
        let cfg = match o.store {
            Store::Memory => UfsConfig::parse("memory://", &Default::default()).unwrap(),
            Store::Dir => {
                let root = o.dir.clone().unwrap_or_else(|| dir.path().join("ufs"));
                std::fs::create_dir_all(&root).unwrap();
                UfsConfig::parse(root.to_str().unwrap(), &Default::default()).unwrap()
            }
        };
        let faults = Faults::new();
        let mut ufs = Ufs::new(&cfg, metrics.clone()).unwrap();
        let mut store = None;
        ufs.wrap_store(|op| {
            store = Some(op.clone());
            op.layer(FaultLayer(faults.clone()))
        });
        ufs.set_timeout(o.timeout);
        // SAFETY: getuid and getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let own = Ownership {
            uid,
            gid,
            file_mode: 0o644,
            dir_mode: 0o755,
        };
        let meta = match o.restartable {
            true => meta_client(
                RedbStore::open(&dir.path().join("namespace.redb")).unwrap(),
                own,
                o.meta_outage,
            ),
            false => meta_client(MemoryStore::new(), own, o.meta_outage),
        };
        let cache = PageCache::new(
            &PageCacheConfig {
                mem_bytes: o.mem_cache,
                disk_bytes: o.disk_cache,
                disk_dir: dir.path().join("pages"),
                io_engine: Default::default(),
                disk_free_ratio: 0.0,
            },
            metrics.clone(),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("staging")).unwrap();
        let mut extra = o.extra;
        let mut listener = None;
        let mut cluster = None;
        if let Some(p) = o.peer {
            let self_addr = p
                .listener
                .as_ref()
                .map(|l| l.local_addr().unwrap().to_string());
            let cfg = PeerConfig {
                token: TOKEN.into(),
                timeout: p.timeout,
                self_addr,
                tries: 2,
            };
            let peers = Arc::new(Peers::new(p.members, cfg, metrics.clone()));
            cluster = Some(peers.clone());
            extra.push(peers);
            listener = p.listener;
        }
        let vfs = Vfs::with_sources(
            meta,
            Arc::new(ufs),
            Arc::new(cache),
            metrics.clone(),
            VfsConfig {
                ownership: own,
                prefetch_pages: o.prefetch_pages,
                prefetch_gets: 1,
                inflight_pages: 16,
                staging_dir: dir.path().join("staging"),
                read_only: false,
                write_type: o.write_type,
                journal_dir: dir.path().join("journal"),
                rename_log: Some(dir.path().join("renames.log")),
                upload_delay: o.upload_delay,
                last_close_retry: o.last_close_retry,
                metadata_sync: MetadataSync::default(),
                dir_prefetch_bytes: o.dir_prefetch,
            },
            rt.handle().clone(),
            extra,
        )
        .unwrap();
        if let Some(p) = cluster {
            vfs.set_cluster(p);
        }
        rt.block_on(vfs.finish_renames());
        let peer_server = {
            let _g = rt.enter();
            vfs.start_background();
            listener.map(|l| {
                let l = tokio::net::TcpListener::from_std(l).unwrap();
                let host: Arc<dyn PeerHost> = vfs.clone();
                rt.spawn(serve(l, host, Arc::from(TOKEN), metrics.clone()))
            })
        };
        Self {
            vfs,
            rt,
            faults,
            metrics,
            store: store.unwrap(),
            uid,
            gid,
            peer_server,
            _dir: dir,
        }
    }

    /// The env's own directory (its cache tiers, staging and journal are under it).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// The inode at `path` (components split on '/'), or the errno of the lookup.
    pub fn resolve(&self, path: &str) -> Result<InodeNo, i32> {
        let mut ino = ROOT_INO;
        for c in path.split('/').filter(|c| !c.is_empty()) {
            ino = self
                .rt
                .block_on(self.vfs.lookup(ino, c.as_bytes()))
                .map_err(|e| e.errno())?
                .ino;
        }
        Ok(ino)
    }

    pub fn ino(&self, path: &str) -> InodeNo {
        self.resolve(path).unwrap()
    }

    pub fn open(&self, ino: InodeNo, write: bool, truncate: bool) -> Result<FileHandle, i32> {
        self.rt
            .block_on(self.vfs.open(ino, OpenMode { write, truncate }))
            .map(|(fh, _)| fh)
            .map_err(|e| e.errno())
    }

    /// Reads `len` bytes at `off` through `fh`: the bytes, or the errno.
    pub fn read(&self, fh: FileHandle, off: usize, len: usize) -> Result<Vec<u8>, i32> {
        self.rt
            .block_on(self.vfs.read(fh, off as u64, len as u32))
            .map(|b| b.to_vec())
            .map_err(|e| e.errno())
    }

    /// Reads a whole file through a fresh handle, 128 KiB a call (the kernel's usual
    /// request size without read-ahead).
    pub fn read_all(&self, ino: InodeNo) -> Result<Vec<u8>, i32> {
        let fh = self.open(ino, false, false)?;
        let mut out = Vec::new();
        let res = loop {
            match self.read(fh, out.len(), 128 << 10) {
                Ok(b) if b.is_empty() => break Ok(()),
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => break Err(e),
            }
        };
        self.vfs.release(fh);
        res.map(|()| out)
    }

    /// Writes `bytes` at `off` through `fh` in 128 KiB calls.
    pub fn write(&self, fh: FileHandle, off: u64, bytes: &[u8]) -> Result<(), i32> {
        for (i, chunk) in bytes.chunks(128 << 10).enumerate() {
            let at = off + (i * (128 << 10)) as u64;
            self.rt
                .block_on(self.vfs.write(fh, at, chunk))
                .map_err(|e| e.errno())?;
        }
        Ok(())
    }

    /// flush then release, as close(2) does: the flush's errno.
    pub fn close(&self, fh: FileHandle) -> Result<(), i32> {
        let r = self.rt.block_on(self.vfs.flush(fh)).map_err(|e| e.errno());
        self.vfs.release(fh);
        r
    }

    /// Creates (or truncates) the file `name` in the root with `bytes` through the vfs.
    pub fn put(&self, name: &str, bytes: &[u8]) -> InodeNo {
        let (rec, fh) = self
            .rt
            .block_on(
                self.vfs
                    .create(ROOT_INO, name.as_bytes(), 0o644, self.uid, self.gid),
            )
            .unwrap();
        self.write(fh, 0, bytes).unwrap();
        self.close(fh).unwrap();
        rec.ino
    }

    /// Writes object `key` in the store directly, as another client of the bucket would.
    pub fn put_underneath(&self, key: &str, bytes: &[u8]) {
        self.rt
            .block_on(self.store.write(key, bytes.to_vec()))
            .unwrap();
    }
}

/// Polls `cond` until it holds or `limit` passes (for state another task changes, where
/// no event can be awaited): whether it held.
/// Waits until `value` has not changed for `quiet`, or `limit` passed; true when it
/// settled (background work such as read-ahead has finished).
pub fn settled(limit: Duration, quiet: Duration, mut value: impl FnMut() -> u64) -> bool {
    let end = std::time::Instant::now() + limit;
    let mut last = value();
    let mut since = std::time::Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let now = value();
        if now != last {
            (last, since) = (now, std::time::Instant::now());
        } else if since.elapsed() >= quiet {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
    }
}

pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
