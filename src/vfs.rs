//! The async core, with methods named after FUSE operations. It never imports `fuser`:
//! the adapter converts kernel types into these calls and results back.
//!
//! Invariants:
//! - the namespace is the source of truth for names and attributes; the UFS for bytes.
//!   Every mutation reaches the UFS first and the namespace second, so a failed UFS call
//!   leaves the namespace unchanged.
//! - a directory is listed from the UFS at most once per mount (see the namespace's load
//!   epoch); after that, lookups and readdir are answered from the namespace alone.
//! - a file open for writing has one staging file on the cache disk, shared by all its
//!   write handles; its bytes reach the UFS as one whole object on flush, fsync or the last
//!   close (`CACHE_THROUGH`), and only then are size and version committed to the namespace.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use alluxio_metaserver::{Lookup, NewNode, SetAttr, XattrMode, is_primary};
use tokio::runtime::Handle as RtHandle;

use crate::error::{FsError, blocking};
use crate::fetch::{Fetcher, PageSource};
use crate::meta::MetaClient;
use crate::metrics::Metrics;
use crate::page_cache::PageCache;
use crate::types::{DirEntry, FileHandle, FileKind, InodeNo, InodeRecord, Ownership, now_ns};
use crate::ufs::Ufs;

mod cluster;
mod deletes;
mod intents;
mod journal;
mod mounts;
mod peer_host;
mod read;
mod siblings;
mod sources;
mod ttl;
mod upload;
mod write;

pub use cluster::{LOAD_CHUNK_PAGES, LoadReport};
pub use write::OpenMode;

use write::OpenFile;

/// Settings of the vfs.
#[derive(Debug, Clone)]
pub struct VfsConfig {
    /// Owner and modes for objects other tools wrote.
    pub ownership: Ownership,
    /// Pages fetched ahead of a reader that misses.
    pub prefetch_pages: u64,
    /// Read-ahead GETs in flight at once, across the mount. More than the store can serve
    /// in parallel only adds contention: four cold sequential readers over the local S3
    /// server got 124-156 MB/s at 5 CPU-s/GiB of the daemon unbounded (up to 256 GETs),
    /// 136-188 MB/s at 3-4 CPU-s/GiB with 8-32.
    pub prefetch_gets: u64,
    /// Pages that may be fetched and not yet cached at once (the in-flight share of the
    /// memory budget).
    pub inflight_pages: u64,
    /// Directory for write staging files (on the cache disk).
    pub staging_dir: PathBuf,
    /// Refuse modifications with EROFS.
    pub read_only: bool,
    /// When written data reaches the UFS.
    pub write_type: crate::config::WriteType,
    /// ASYNC_THROUGH: directory of the local journal.
    pub journal_dir: PathBuf,
    /// The log of renames in flight (`intents`), finished at the next start after a
    /// crash; `None` for a vfs that does not outlive its process's work (`alluxio fs`).
    pub rename_log: Option<PathBuf>,
    /// ASYNC_THROUGH: delay before a journaled file is uploaded.
    pub upload_delay: std::time::Duration,
    /// How long a commit after a file's last close that failed is tried again
    /// ([`LAST_CLOSE_RETRY`] by default).
    pub last_close_retry: std::time::Duration,
    /// When loaded directories are listed from the UFS again.
    pub metadata_sync: crate::config::MetadataSync,
    /// Bytes of a directory's small files fetched in the background once readers open
    /// some of them cold (`siblings`); 0 turns it off.
    pub dir_prefetch_bytes: u64,
}

/// What `alluxio fs free` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Freed {
    /// Files whose pages were dropped.
    pub files: u64,
    /// Disk bytes freed here.
    pub bytes: u64,
    /// Files kept because the kernel reads them by passthrough.
    pub busy: usize,
    /// Disk bytes the other members freed.
    pub bytes_on_peers: u64,
    /// Members that did not answer (their pages stay until evicted).
    pub peers_unreachable: usize,
}

/// What `statfs` reports.
#[derive(Debug, Clone, Copy)]
pub struct StatFs {
    /// Total blocks of `bsize`.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Blocks available to unprivileged users.
    pub bavail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Block size.
    pub bsize: u32,
    /// Longest name.
    pub namelen: u32,
}

/// Changes requested by `setattr`.
#[derive(Debug, Clone, Default)]
pub struct SetAttrRequest {
    /// Truncate or extend to this size.
    pub size: Option<u64>,
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New atime (ns since the epoch).
    pub atime_ns: Option<i64>,
    /// New mtime (ns since the epoch).
    pub mtime_ns: Option<i64>,
    /// The handle the change came through (ftruncate, futimens): a size change through a
    /// handle open for writing is committed by that handle's next flush, fsync or close,
    /// as a write through it is.
    pub fh: Option<FileHandle>,
}

/// The version of a file's content that a read handle serves.
#[derive(Debug, Clone)]
struct ReadSnapshot {
    /// The version and where it is; `None` when the file has no object yet (it is empty).
    object: Option<Arc<crate::fetch::ObjectRead>>,
}

enum Handle {
    File {
        ino: InodeNo,
        writable: bool,
        snapshot: ReadSnapshot,
        /// Sequential-read detection for read-ahead.
        stream: Mutex<read::Stream>,
    },
    Dir {
        entries: Vec<DirEntry>,
    },
}

/// The virtual filesystem of one mount.
pub struct Vfs {
    meta: Arc<dyn MetaClient>,
    /// The stores by path: the daemon's own at the root, plus the namespace's mount table.
    mounts: mounts::Shared,
    cache: Arc<PageCache>,
    metrics: Arc<Metrics>,
    cfg: VfsConfig,
    rt: RtHandle,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    open_files: Mutex<HashMap<InodeNo, Arc<OpenFile>>>,
    /// Open handles per inode (files only).
    open_counts: Mutex<HashMap<InodeNo, usize>>,
    /// The version whose bytes the kernel may hold in its page cache for an inode (the
    /// version of its last read-only open). An open of the same version keeps the cache.
    /// An entry goes when the kernel forgets the inode (its page cache goes with it), so
    /// the table holds at most the inodes the kernel holds; it is also cleared at
    /// [`KERNEL_CACHED_MAX`] entries. Forgetting an entry only costs a re-read.
    kernel_cached: Mutex<HashMap<InodeNo, String>>,
    /// Inodes that lost their last name while open: dropped from the namespace at their
    /// last release (so that release need not ask the namespace for every file).
    orphans: Mutex<std::collections::HashSet<InodeNo>>,
    /// Staging kept for files unlinked while open: their object is gone from the UFS, so
    /// their bytes live here until the last close.
    pinned: Mutex<HashMap<InodeNo, Arc<OpenFile>>>,
    loading: Mutex<HashMap<InodeNo, Arc<tokio::sync::Mutex<()>>>>,
    /// When this daemon last listed each directory (for `metadata_sync`); bounded by
    /// clearing, which only costs extra listings.
    synced: Mutex<HashMap<InodeNo, std::time::Instant>>,
    /// The cache's tiers and the chain of page sources below them.
    fetcher: Arc<Fetcher>,
    /// Answers peers from this vfs's fetcher (`peer_host`).
    page_server: crate::peer::server::PageServer,
    /// Directory-level prefetch state (`siblings`).
    dir_prefetch: siblings::Dirs,
    /// The cluster this mount reads through, for cluster-wide loads, frees and reports.
    cluster: std::sync::OnceLock<Arc<crate::peer::client::Peers>>,
    /// Versions whose bytes are in local files (the first page source).
    local: Arc<sources::LocalCopies>,
    /// The store, the last page source (read-ahead runs ask it directly).
    ufs_source: Arc<sources::UfsSource>,
    /// Serializes UFS-visible changes per inode (uploads, renames, unlinks). Striped so
    /// memory stays bounded; acquired in stripe order, and before a staging lock.
    inode_locks: Vec<tokio::sync::Mutex<()>>,
    /// Keys come from paths, so a directory rename changes the key of everything below it
    /// at once, without the locks of those inodes. Every store change at keys derived
    /// from paths (an upload, an object moved or deleted, a directory marker made or
    /// removed) holds this shared from deriving its key to the namespace change that
    /// records it, and a rename that moves a directory holds it exclusively: an upload can
    /// never land under a directory's old prefix after the directory moved. Taken after
    /// any inode locks (`tree_shared`, `tree_exclusive`).
    tree: tokio::sync::RwLock<()>,
    /// Renames in flight, and those an earlier run left unfinished (`finish_renames`).
    renames: Option<intents::RenameLog>,
    unfinished_renames: Mutex<Vec<intents::Intent>>,
    /// ASYNC_THROUGH only.
    journal: Option<Arc<journal::Journal>>,
    /// ASYNC_THROUGH only: unlinks whose objects go in the background.
    deletes: Option<deletes::Deletes>,
    uploads: upload::Queue,
    /// ASYNC_THROUGH only: journal entries done with, waiting for a durable namespace.
    drops: upload::Drops,
    /// Commits after a last close in progress, and the unmount's signal ([`Vfs::shutdown`]).
    last_closes: LastCloses,
    /// This vfs, for work that outlives the call that starts it (a directory's listing
    /// that a lookup answered without, see [`Vfs::lookup_unlisted`]).
    me: std::sync::Weak<Vfs>,
}

const INODE_LOCK_STRIPES: usize = 256;

/// The commits after a file's last close in progress (`Vfs::commit_after_last_close`),
/// which no caller waits for, and whether the mount is going away.
#[derive(Default)]
struct LastCloses {
    running: std::sync::atomic::AtomicUsize,
    /// Notified when `running` drops to 0.
    idle: tokio::sync::Notify,
    closing: std::sync::atomic::AtomicBool,
    /// Notified when `closing` is set: a commit waiting to be tried again tries at once.
    woken: tokio::sync::Notify,
}

/// One commit after a last close, counted in [`LastCloses::running`] from before its
/// task is spawned until it ends.
struct LastClose(Arc<Vfs>);

impl LastClose {
    fn begin(vfs: Arc<Vfs>) -> Self {
        vfs.last_closes.running.fetch_add(1, Ordering::SeqCst);
        Self(vfs)
    }
}

impl Drop for LastClose {
    fn drop(&mut self) {
        let l = &self.0.last_closes;
        if l.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            l.idle.notify_waiters();
        }
    }
}

/// How long an unmount waits for the commits after a last close still in progress
/// ([`Vfs::shutdown`]): two store calls' timeouts, so a commit that just began against
/// a stalled store still gets its own bounded answer.
pub const UNMOUNT_COMMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a commit after a file's last close is tried again, by default
/// (`Vfs::commit_after_last_close`).
pub const LAST_CLOSE_RETRY: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Bound on [`Vfs::kernel_cached`]: about 85 bytes an entry (the slot and an ETag-sized
/// version string), so at most about 22 MiB, inside the memory budget's slack. The kernel
/// forgetting its inodes keeps the table far smaller in the usual case; past the bound the
/// table is cleared, and the next open of each file drops the kernel's cached pages.
const KERNEL_CACHED_MAX: usize = 1 << 18;

/// Whether `rec`'s object is kept at the key of its name `name` in `parent`: a file with a
/// version (in the store, or pending upload) whose primary name that is.
fn keeps_object_at(rec: &InodeRecord, parent: InodeNo, name: &[u8]) -> bool {
    rec.kind.has_object() && rec.version.is_some() && is_primary(rec, parent, name)
}

/// Whether the file's latest bytes are in the local journal, not yet in the UFS.
fn is_pending(rec: &InodeRecord) -> bool {
    rec.version
        .as_deref()
        .is_some_and(alluxio_metaserver::ObjectVersion::is_pending_text)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere already; the maps stay structurally valid.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long a rename whose store step is done waits for an unreachable namespace to take
/// its namespace step ([`Vfs::rename_forward`]), and the pause between tries.
const RENAME_FORWARD_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
const RENAME_FORWARD_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

impl Vfs {
    /// Wires the vfs; blocking work, prefetch and upload tasks run on `rt`. Fails only when
    /// the ASYNC_THROUGH journal directory cannot be opened. Call
    /// [`Vfs::start_background`] once mounted.
    pub fn new(
        meta: Arc<dyn MetaClient>,
        ufs: Arc<Ufs>,
        cache: Arc<PageCache>,
        metrics: Arc<Metrics>,
        cfg: VfsConfig,
        rt: RtHandle,
    ) -> std::io::Result<Arc<Self>> {
        Self::with_sources(meta, ufs, cache, metrics, cfg, rt, Vec::new())
    }

    /// [`Vfs::new`] with `extra` page sources, asked in order after the local copies and
    /// before the UFS (peer caches; failure-injecting sources in tests).
    pub fn with_sources(
        meta: Arc<dyn MetaClient>,
        ufs: Arc<Ufs>,
        cache: Arc<PageCache>,
        metrics: Arc<Metrics>,
        cfg: VfsConfig,
        rt: RtHandle,
        extra: Vec<Arc<dyn PageSource>>,
    ) -> std::io::Result<Arc<Self>> {
        let journal = match cfg.write_type {
            crate::config::WriteType::AsyncThrough => {
                Some(Arc::new(journal::Journal::open(cfg.journal_dir.clone())?))
            }
            _ => None,
        };
        let deletes = match &journal {
            Some(_) => Some(deletes::Deletes::open(
                &cfg.journal_dir.with_file_name("deletes.log"),
            )?),
            None => None,
        };
        let (renames, unfinished) = match &cfg.rename_log {
            Some(p) => {
                let (log, pending) = intents::RenameLog::open(p)?;
                (Some(log), pending)
            }
            None => (None, Vec::new()),
        };
        let prefetch_gets = usize::try_from(cfg.prefetch_gets)
            .unwrap_or(usize::MAX)
            .max(1);
        let local = Arc::new(sources::LocalCopies::new(journal.clone(), metrics.clone()));
        let ufs_source = Arc::new(sources::UfsSource {
            meta: meta.clone(),
            metrics: metrics.clone(),
            slots: Arc::new(tokio::sync::Semaphore::new(prefetch_gets)),
        });
        // The chain of page sources, in the order a miss asks them.
        let mut chain: Vec<Arc<dyn PageSource>> = vec![local.clone()];
        chain.extend(extra);
        chain.push(ufs_source.clone());
        let fetcher = Arc::new(Fetcher::new(
            cache.clone(),
            chain,
            usize::try_from(cfg.inflight_pages).unwrap_or(usize::MAX),
            metrics.clone(),
        ));
        Ok(Arc::new_cyclic(|me| Self {
            me: me.clone(),
            meta,
            mounts: std::sync::RwLock::new(Arc::new(mounts::MountTable::root_only(ufs))),
            cache,
            metrics,
            cfg,
            rt,
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            open_files: Mutex::new(HashMap::new()),
            open_counts: Mutex::new(HashMap::new()),
            kernel_cached: Mutex::new(HashMap::new()),
            last_closes: LastCloses::default(),
            orphans: Mutex::new(Default::default()),
            pinned: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
            synced: Mutex::new(HashMap::new()),
            page_server: crate::peer::server::PageServer::new(fetcher.clone()),
            cluster: std::sync::OnceLock::new(),
            dir_prefetch: Default::default(),
            fetcher,
            local,
            ufs_source,
            journal,
            deletes,
            renames,
            unfinished_renames: Mutex::new(unfinished),
            uploads: upload::Queue::new(),
            drops: upload::Drops::default(),
            inode_locks: (0..INODE_LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            tree: tokio::sync::RwLock::new(()),
        }))
    }

    /// The daemon's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Locks the given inodes (deduplicated, in stripe order, so two callers cannot
    /// deadlock) for a change that touches their UFS objects.
    async fn lock_inodes(&self, inos: &[InodeNo]) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = inos
            .iter()
            .map(|i| (i.0 as usize) % INODE_LOCK_STRIPES)
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for s in stripes {
            guards.push(self.inode_locks[s].lock().await);
        }
        guards
    }

    /// The tree lock, shared: for a store change at one path-derived key (see `tree`).
    async fn tree_shared(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.tree.read().await
    }

    /// The tree lock, exclusive: for a rename that moves a directory's whole prefix.
    async fn tree_exclusive(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.tree.write().await
    }

    /// Logs a rename about to move the store (`intents`); the guard marks it done.
    fn log_rename(
        &self,
        ino: InodeNo,
        parent: InodeNo,
        name: &[u8],
        newparent: InodeNo,
        newname: &[u8],
    ) -> Result<Option<RenameLogged<'_>>, FsError> {
        let Some(log) = &self.renames else {
            return Ok(None);
        };
        let id = log.begin(intents::Intent::new(ino, parent, name, newparent, newname))?;
        Ok(Some(RenameLogged {
            log,
            id,
            keep: false,
        }))
    }

    /// Finishes the renames an earlier run began and a crash cut between their store step
    /// and their namespace step (`intents`): each is made in the namespace, and in the
    /// store too where it had not moved yet. Runs once, before the mount serves.
    pub async fn finish_renames(self: &Arc<Self>) {
        let pending = std::mem::take(&mut *lock(&self.unfinished_renames));
        let Some(log) = &self.renames else { return };
        if pending.is_empty() {
            return;
        }
        for i in &pending {
            match self.finish_rename(i).await {
                Ok(true) => {
                    tracing::info!(ino = i.ino, from = ?String::from_utf8_lossy(&i.name), to = ?String::from_utf8_lossy(&i.newname), "finished a rename a crash cut short")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(ino = i.ino, error = %e, "cannot finish a rename a crash cut short; the next listing reconciles")
                }
            }
        }
        if let Err(e) = log.clear() {
            tracing::warn!(error = %e, "rename log: cannot empty it");
        }
    }

    /// One rename of `finish_renames`: whether it had to be finished.
    async fn finish_rename(self: &Arc<Self>, i: &intents::Intent) -> Result<bool, FsError> {
        let named = |l: Lookup| match l {
            Lookup::Found(r) | Lookup::Stale(r) => Some(r),
            _ => None,
        };
        let (parent, newparent) = (InodeNo(i.parent), InodeNo(i.newparent));
        if named(self.meta.lookup(newparent, i.newname.clone()).await?)
            .is_some_and(|r| r.ino.0 == i.ino)
        {
            return Ok(false); // the namespace made it
        }
        let Some(src) =
            named(self.meta.lookup(parent, i.name.clone()).await?).filter(|r| r.ino.0 == i.ino)
        else {
            return Ok(false); // nothing of it is left to finish
        };
        let target = named(self.meta.lookup(newparent, i.newname.clone()).await?);
        let _tree = self.tree_exclusive().await;
        let mut delete_after = None;
        if src.kind == FileKind::Dir {
            let from = self.key_of(src.ino, FileKind::Dir).await?;
            let to = self.child_key(newparent, &i.newname, FileKind::Dir).await?;
            if let Some(t) = &target {
                let k = self.key_of(t.ino, FileKind::Dir).await?;
                ignore_not_found(k.ufs.delete(&k).await)?;
            }
            // Moved again: what is still under the old prefix moves (a store that moves a
            // prefix object by object may have moved part of it), nothing when all did.
            ignore_not_found(from.ufs.rename_dir(&from, &to).await)?;
        } else {
            let to = self
                .child_key(newparent, &i.newname, FileKind::File)
                .await?;
            // The target's object is dealt with whatever the source is: when this was its
            // primary name and it has others, its bytes go to the next of them (unless the
            // rename had moved them), as the rename does before its own store step. Tied
            // to the source's move, a source with nothing to move (not uploaded yet, a
            // second link) left the target's other name on a key with no object (ENOENT),
            // and the source's upload then overwrote the target's bytes.
            let target_owns = target
                .as_ref()
                .is_some_and(|t| keeps_object_at(t, newparent, &i.newname));
            let target_next = match target.as_ref().and_then(|t| t.links.first()) {
                Some((np, nn)) if target_owns => {
                    Some(self.child_key(*np, nn, FileKind::File).await?)
                }
                _ => None,
            };
            if let Some(next) = &target_next
                && !store_holds(next).await?
            {
                ignore_not_found(to.ufs.rename_file(&to, next).await.map(|_| ()))?;
            }
            let src_moves = keeps_object_at(&src, parent, &i.name);
            let mut replaced = false;
            if src_moves {
                let from = self.key_of(src.ino, FileKind::File).await?;
                // Still at its old key: the store had not moved it (or had only copied it).
                if store_holds(&from).await? {
                    from.ufs.rename_file(&from, &to).await?;
                    replaced = true;
                }
            }
            // Nothing replaced the new key now: what is there is the target's old object
            // (the source had none to move), which goes once the namespace renamed, as in
            // a rename; or, for a pending source, an older object of its own that its
            // upload replaces anyway. A source moved before the crash keeps its object.
            if target_owns && target_next.is_none() && !replaced && (!src_moves || is_pending(&src))
            {
                delete_after = Some(to);
            }
        }
        self.meta
            .finish_rename(parent, i.name.clone(), newparent, i.newname.clone())
            .await?;
        if let Some(to) = &delete_after {
            ignore_not_found(to.ufs.delete(to).await)?;
        }
        // The store's version of the moved object (a copy-based move may give a new one).
        if src.kind == FileKind::File && !is_pending(&src) {
            let to = self
                .child_key(newparent, &i.newname, FileKind::File)
                .await?;
            if let Ok(info) = to.ufs.stat(&to).await {
                self.record_move(src.ino, &src, Some(info)).await?;
            }
        }
        Ok(true)
    }

    /// Registers an open handle; file handles are counted per inode (see `release`).
    fn add_handle(&self, h: Handle) -> FileHandle {
        if let Handle::File { ino, .. } = &h {
            *lock(&self.open_counts).entry(*ino).or_default() += 1;
            Metrics::inc(&self.metrics.open_file_handles);
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Arc::new(h));
        FileHandle(fh)
    }

    fn handle(&self, fh: FileHandle) -> Result<Arc<Handle>, FsError> {
        lock(&self.handles)
            .get(&fh.0)
            .cloned()
            .ok_or_else(|| FsError::new(libc::EBADF, format!("unknown file handle {}", fh.0)))
    }

    async fn key_of(&self, ino: InodeNo, kind: FileKind) -> Result<mounts::Loc, FsError> {
        let parts = self.meta.path(ino).await?;
        self.loc_of(&parts, kind)
    }

    async fn child_key(
        &self,
        parent: InodeNo,
        name: &[u8],
        kind: FileKind,
    ) -> Result<mounts::Loc, FsError> {
        let mut parts = self.meta.path(parent).await?;
        parts.push(name.to_vec());
        self.loc_of(&parts, kind)
    }

    /// [`Self::child_key`] for a name about to be made (create, mkdir, link, a rename's
    /// target): also refuses, with EINVAL, a name its store cannot hold, before anything
    /// changes. Names that exist already (objects other tools wrote) stay usable.
    async fn new_child_key(
        &self,
        parent: InodeNo,
        name: &[u8],
        kind: FileKind,
    ) -> Result<mounts::Loc, FsError> {
        let loc = self.child_key(parent, name, kind).await?;
        loc.ufs.check_new_name(name)?;
        Ok(loc)
    }

    /// Lists `dir` from the UFS into the namespace if this mount has not done so yet, or
    /// if its metadata sync policy wants it listed again now. Concurrent callers for one
    /// directory wait for a single listing.
    async fn ensure_loaded(&self, dir: InodeNo) -> Result<(), FsError> {
        let policy = self.sync_policy(dir).await;
        if !self.meta.needs_load(dir).await? && !self.sync_due(dir, policy) {
            return Ok(());
        }
        self.list_into(dir, false, policy).await
    }

    /// Whether `policy` wants the loaded directory `dir` listed again now.
    fn sync_due(&self, dir: InodeNo, policy: crate::config::MetadataSync) -> bool {
        use crate::config::MetadataSync;
        match policy {
            MetadataSync::Never => false,
            MetadataSync::Always => true,
            MetadataSync::Every(d) => lock(&self.synced)
                .get(&dir)
                .is_none_or(|t| t.elapsed() >= d),
        }
    }

    /// Lists `dir` from the UFS into the namespace: a first load, or a resync when it is
    /// loaded already (due by its sync `policy`, or `force`d by `load-metadata`). One
    /// listing at a time per directory; a caller that waited for another's listing uses
    /// it unless `force`.
    async fn list_into(
        &self,
        dir: InodeNo,
        force: bool,
        policy: crate::config::MetadataSync,
    ) -> Result<(), FsError> {
        let gate = lock(&self.loading).entry(dir).or_default().clone();
        let _g = gate.lock().await;
        let res = async {
            let unloaded = self.meta.needs_load(dir).await?;
            if !unloaded && !force && !self.sync_due(dir, policy) {
                return Ok(()); // loaded or synced while we waited
            }
            let key = self.key_of(dir, FileKind::Dir).await?;
            // Taken before the listing: what the namespace changes while the store is
            // being listed (an upload landing, a commit, an unlink) is newer than the
            // listing, and the reconcile leaves it alone.
            let token = self.meta.begin_listing().await?;
            let mut listing = match key.ufs.list_dir(&key).await {
                Ok(l) => l,
                Err(e) => {
                    let _ = self.meta.end_listing(token).await;
                    return Err(e.into());
                }
            };
            // Objects whose unlink is done and delete pending (`deletes`) are not shown.
            let gone = self.pending_in(&self.meta.path(dir).await?);
            if !gone.is_empty() {
                listing.retain(|c| c.kind != FileKind::File || !gone.contains(&c.name));
            }
            if unloaded {
                self.meta
                    .load_dir(dir, listing, self.cfg.ownership, Some(token))
                    .await?;
            } else {
                self.meta
                    .resync_dir(dir, listing, self.cfg.ownership, Some(token))
                    .await?;
            }
            if policy != crate::config::MetadataSync::Never {
                let mut m = lock(&self.synced);
                if m.len() >= 1 << 20 {
                    m.clear();
                }
                m.insert(dir, std::time::Instant::now());
            }
            Ok::<(), FsError>(())
        }
        .await;
        lock(&self.loading).remove(&dir);
        res
    }

    /// `alluxio fs free`: drops the cached pages of the file at `path` (relative to the
    /// mount root), or of every file below the directory there, here and, when this
    /// mount has peers, on every other member.
    pub async fn free(&self, path: &str) -> Result<Freed, FsError> {
        let ino = self.resolve(path).await?.ino;
        let mut freed = Freed::default();
        let mut todo = vec![ino];
        while let Some(i) = todo.pop() {
            let rec = self.meta.get(i).await?;
            match rec.kind {
                FileKind::Dir => {
                    if self.meta.needs_load(i).await? {
                        continue; // never listed here: nothing below it is cached
                    }
                    todo.extend(self.meta.list(i).await?.into_iter().map(|e| e.ino));
                }
                FileKind::File => {
                    let object = match &rec.version {
                        // Without a key (its mount is gone) only the disk tier frees it.
                        Some(v) => self
                            .key_of(i, FileKind::File)
                            .await
                            .ok()
                            .map(|l| l.read_of(v, rec.size, i)),
                        None => None,
                    };
                    if let (Some(peers), Some(o)) = (self.cluster.get(), &object) {
                        let (bytes, unreachable) = peers.free(o).await;
                        freed.bytes_on_peers += bytes;
                        freed.peers_unreachable = freed.peers_unreachable.max(unreachable);
                    }
                    let pages = rec.size.div_ceil(crate::types::PAGE_SIZE);
                    // Deleting cached files can wait on the device (see
                    // `DiskTier::apply_off_runtime`): not on a runtime thread.
                    let cache = self.cache.clone();
                    let id = object.map(|o| o.id.clone());
                    let (b, k) =
                        blocking("free", move || cache.free(i, id.as_ref(), pages)).await?;
                    freed.files += 1;
                    freed.bytes += b;
                    freed.busy += k;
                }
                _ => {}
            }
        }
        Ok(freed)
    }

    /// `alluxio fs load-metadata`: lists the directory at `path` (relative to the mount
    /// root), or the parent of the file there, from the UFS again, and with `recursive`
    /// every loaded directory below it. Returns how many directories were listed.
    pub async fn load_metadata(&self, path: &str, recursive: bool) -> Result<u64, FsError> {
        let mut ino = alluxio_metaserver::ROOT_INO;
        let mut parent = ino;
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            parent = ino;
            // The name may be new in the UFS: resync its directory when it is not found.
            let rec = match self.lookup(ino, part.as_bytes()).await {
                Err(e) if e.errno() == libc::ENOENT => {
                    self.list_into(ino, true, self.sync_policy(ino).await)
                        .await?;
                    self.lookup(ino, part.as_bytes()).await?
                }
                r => r?,
            };
            ino = rec.ino;
        }
        let rec = self.meta.get(ino).await?;
        if rec.kind != FileKind::Dir {
            self.list_into(parent, true, self.sync_policy(parent).await)
                .await?;
            return Ok(1);
        }
        let mut todo = vec![ino];
        let mut listed = 0u64;
        while let Some(dir) = todo.pop() {
            self.list_into(dir, true, self.sync_policy(dir).await)
                .await?;
            listed += 1;
            if recursive {
                for e in self.meta.list(dir).await? {
                    if e.kind == FileKind::Dir && !self.meta.needs_load(e.ino).await? {
                        todo.push(e.ino);
                    }
                }
            }
        }
        Ok(listed)
    }

    /// Attributes as the kernel must see them: a file being written shows its staged size.
    async fn overlay(&self, mut rec: InodeRecord) -> InodeRecord {
        let of = lock(&self.open_files).get(&rec.ino).cloned();
        if let Some(of) = of
            && let Some((size, mtime, ctime)) = of.staged_size().await
        {
            rec.size = size;
            rec.mtime_ns = mtime;
            rec.ctime_ns = rec.ctime_ns.max(ctime);
        }
        rec
    }

    /// Resolves `name` in `parent`.
    pub async fn lookup(&self, parent: InodeNo, name: &[u8]) -> Result<InodeRecord, FsError> {
        let policy = self.sync_policy(parent).await;
        if self.sync_due(parent, policy) {
            self.list_into(parent, false, policy).await?;
        }
        for _ in 0..2 {
            match self.meta.lookup(parent, name.to_vec()).await? {
                Lookup::Found(rec) => return Ok(self.overlay(rec).await),
                Lookup::Missing => {
                    return Err(FsError::expected(libc::ENOENT, "no such entry"));
                }
                Lookup::Unloaded => {
                    if let Some(rec) = self.lookup_unlisted(parent, name).await? {
                        return Ok(self.overlay(rec).await);
                    }
                }
                // Known from an earlier mount: the store is listed first, since it may be
                // ahead (see `Lookup::Stale`); when it cannot be listed, the name is
                // answered as that mount left it.
                Lookup::Stale(rec) => {
                    if let Err(e) = self.ensure_loaded(parent).await {
                        tracing::debug!(dir = parent.0, error = %e, "store not listable; answering from the namespace");
                        return Ok(self.overlay(rec).await);
                    }
                    // A second link of a file whose object lives under its primary name:
                    // that directory is listed too, or a store ahead of the namespace there
                    // (a crash between an upload and its commit) would read as ESTALE
                    // through this name until something lists it.
                    if rec.kind == FileKind::File
                        && rec.parent != parent
                        && !is_primary(&rec, parent, name)
                        && let Err(e) = self.ensure_loaded(rec.parent).await
                    {
                        tracing::debug!(dir = rec.parent.0, error = %e, "the primary link's directory is not listable");
                    }
                }
            }
        }
        Err(FsError::new(libc::EIO, "directory could not be loaded"))
    }

    /// A lookup in a directory this mount has not listed yet: its listing starts, and on
    /// a remote store the name's own key is asked beside it (one HEAD). The first decisive
    /// answer wins: a file the HEAD found is added to the namespace and returned while the
    /// listing goes on in the background (it reconciles the directory and keeps this
    /// inode); otherwise the listing is waited for and `None` says "look it up again".
    /// A name in a directory of 100,000 keys is then one round trip, not 100 listing
    /// pages, and so is a cold file's open on a fresh mount.
    async fn lookup_unlisted(
        &self,
        parent: InodeNo,
        name: &[u8],
    ) -> Result<Option<InodeRecord>, FsError> {
        let pending = self.deletes.is_some() && {
            let mut parts = self.meta.path(parent).await?;
            parts.push(name.to_vec());
            self.delete_pending(&parts)
        };
        let probe = match (
            self.me.upgrade(),
            self.child_key(parent, name, FileKind::File).await,
        ) {
            // An object whose delete is pending is the listing's to leave out.
            (Some(me), Ok(loc)) if loc.ufs.probes_keys() && !loc.key.is_empty() && !pending => {
                Some((me, loc))
            }
            _ => None,
        };
        let Some((me, loc)) = probe else {
            self.ensure_loaded(parent).await?;
            return Ok(None);
        };
        // Spawned, so that the listing is not cut off when the probe answers first.
        let mut listing = self.rt.spawn(async move { me.ensure_loaded(parent).await });
        let found = tokio::select! {
            biased;
            r = &mut listing => {
                r.map_err(|e| FsError::new(libc::EIO, format!("listing task failed: {e}")))??;
                return Ok(None);
            }
            p = loc.ufs.probe(&loc.key) => p,
        };
        let info = match found {
            Ok(Some(info)) => info,
            // Not a file (a directory, or nothing), or the HEAD failed: the listing says.
            Ok(None) | Err(_) => {
                listing
                    .await
                    .map_err(|e| FsError::new(libc::EIO, format!("listing task failed: {e}")))??;
                return Ok(None);
            }
        };
        let child = alluxio_metaserver::UfsChild {
            name: name.to_vec(),
            kind: FileKind::File,
            size: info.size,
            mtime_ns: info.mtime_ns,
            version: Some(info.version),
        };
        match self
            .meta
            .adopt_child(parent, child, self.cfg.ownership)
            .await
        {
            Ok(Lookup::Found(rec) | Lookup::Stale(rec)) => Ok(Some(rec)),
            Ok(Lookup::Missing) => Err(FsError::expected(libc::ENOENT, "no such entry")),
            // Loaded meanwhile, or a namespace that cannot adopt (an older metaserver):
            // the listing answers.
            Ok(Lookup::Unloaded) | Err(_) => {
                listing
                    .await
                    .map_err(|e| FsError::new(libc::EIO, format!("listing task failed: {e}")))??;
                Ok(None)
            }
        }
    }

    /// Attributes of an inode.
    pub async fn getattr(&self, ino: InodeNo) -> Result<InodeRecord, FsError> {
        let rec = self.meta.get(ino).await?;
        let rec = self.with_primary_dir_listed(rec).await?;
        Ok(self.overlay(rec).await)
    }

    /// A file with other names may be reached through one of them (a listing answers an
    /// open or a getattr by inode, with no lookup in the object's directory): that
    /// directory is listed first in this epoch, or a store ahead of the namespace there (a
    /// crash between an upload and its commit) would show the old size and read as ESTALE
    /// until something lists it. Costs nothing for a file with one name.
    pub(crate) async fn with_primary_dir_listed(
        &self,
        rec: InodeRecord,
    ) -> Result<InodeRecord, FsError> {
        if rec.kind != FileKind::File
            || rec.links.is_empty()
            || !self.meta.needs_load(rec.parent).await.unwrap_or(false)
        {
            return Ok(rec);
        }
        if let Err(e) = self.ensure_loaded(rec.parent).await {
            tracing::debug!(dir = rec.parent.0, error = %e, "the primary link's directory is not listable");
            return Ok(rec);
        }
        Ok(self.meta.get(rec.ino).await?)
    }

    /// Changes attributes. A size change rewrites the object now (truncate(2)), or, when
    /// it comes through a handle open for writing (ftruncate(2)), with that handle's
    /// writes: at its next flush, fsync or close. An application that sizes a file before
    /// writing it (fio, databases, downloaders) would otherwise upload the file at its new
    /// size, holes and all, only to upload it again at close.
    pub async fn setattr(
        self: &Arc<Self>,
        ino: InodeNo,
        req: SetAttrRequest,
    ) -> Result<InodeRecord, FsError> {
        self.check_writable(ino).await?;
        if let Some(size) = req.size {
            let through_writer = req.fh.and_then(|fh| self.handle(fh).ok()).is_some_and(
                |h| matches!(&*h, Handle::File { ino: i, writable: true, .. } if *i == ino),
            );
            self.truncate(ino, size, !through_writer).await?;
        }
        let now = now_ns();
        let meta_change = SetAttr {
            mode: req.mode,
            uid: req.uid,
            gid: req.gid,
            atime_ns: req.atime_ns,
            mtime_ns: req.mtime_ns,
            ctime_ns: Some(now),
            ..Default::default()
        };
        let rec = self.meta.set_attr(ino, meta_change).await?;
        let of = lock(&self.open_files).get(&ino).cloned();
        if let Some(of) = of {
            of.set_times(req.mtime_ns, now).await;
        }
        Ok(self.overlay(rec).await)
    }

    /// Creates a directory (in the UFS first, then in the namespace).
    pub async fn mkdir(
        &self,
        parent: InodeNo,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<InodeRecord, FsError> {
        self.check_writable(parent).await?;
        self.ensure_loaded(parent).await?;
        if let Lookup::Found(_) = self.meta.lookup(parent, name.to_vec()).await? {
            return Err(FsError::expected(libc::EEXIST, "entry exists"));
        }
        let mut parts = self.meta.path(parent).await?;
        parts.push(name.to_vec());
        // A file's object at this path whose delete is pending goes first (a local
        // directory cannot hold both).
        self.flush_deletes_under(&parts).await?;
        let _tree = self.tree_shared().await;
        let key = self.new_child_key(parent, name, FileKind::Dir).await?;
        key.ufs.create_dir(&key).await?;
        let node = NewNode {
            kind: FileKind::Dir,
            mode,
            uid,
            gid,
            rdev: 0,
            target: Vec::new(),
        };
        Ok(self.meta.create(parent, name.to_vec(), node).await?)
    }

    /// Creates a node that lives in the namespace only: symlink, FIFO, device or socket.
    async fn create_namespace_node(
        &self,
        parent: InodeNo,
        name: &[u8],
        node: NewNode,
    ) -> Result<InodeRecord, FsError> {
        self.check_writable(parent).await?;
        self.ensure_loaded(parent).await?;
        Ok(self.meta.create(parent, name.to_vec(), node).await?)
    }

    /// Creates a symlink (namespace only; the UFS holds nothing for it).
    pub async fn symlink(
        &self,
        parent: InodeNo,
        name: &[u8],
        target: &[u8],
        uid: u32,
        gid: u32,
    ) -> Result<InodeRecord, FsError> {
        if target.is_empty() || target.len() > 4095 {
            return Err(FsError::expected(
                libc::ENAMETOOLONG,
                "symlink target length",
            ));
        }
        let node = NewNode {
            kind: FileKind::Symlink,
            mode: 0o777,
            uid,
            gid,
            rdev: 0,
            target: target.to_vec(),
        };
        self.create_namespace_node(parent, name, node).await
    }

    /// The target of a symlink.
    pub async fn readlink(&self, ino: InodeNo) -> Result<Vec<u8>, FsError> {
        let rec = self.meta.get(ino).await?;
        if rec.kind != FileKind::Symlink {
            return Err(FsError::expected(libc::EINVAL, "not a symlink"));
        }
        Ok(rec.target)
    }

    /// mknod: a regular file (an empty object), or a FIFO, device or socket node
    /// (namespace only).
    #[allow(clippy::too_many_arguments)]
    pub async fn mknod(
        self: &Arc<Self>,
        parent: InodeNo,
        name: &[u8],
        mode: u32,
        rdev: u32,
        uid: u32,
        gid: u32,
    ) -> Result<InodeRecord, FsError> {
        let kind = match mode & libc::S_IFMT {
            0 | libc::S_IFREG => {
                let (_, fh) = self.create(parent, name, mode, uid, gid).await?;
                self.flush(fh).await?;
                self.release(fh);
                return self.lookup(parent, name).await;
            }
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            libc::S_IFSOCK => FileKind::Socket,
            _ => return Err(FsError::expected(libc::EINVAL, "unknown node type")),
        };
        let rdev = if matches!(kind, FileKind::CharDevice | FileKind::BlockDevice) {
            rdev
        } else {
            0
        };
        let node = NewNode {
            kind,
            mode,
            uid,
            gid,
            rdev,
            target: Vec::new(),
        };
        self.create_namespace_node(parent, name, node).await
    }

    /// Adds a hard link. The UFS object stays at the primary link's path; the new name
    /// exists in the namespace only.
    pub async fn link(
        &self,
        ino: InodeNo,
        newparent: InodeNo,
        newname: &[u8],
    ) -> Result<InodeRecord, FsError> {
        self.check_writable(newparent).await?;
        self.ensure_loaded(newparent).await?;
        // The name must be storable should it become the primary link later.
        self.new_child_key(newparent, newname, FileKind::File)
            .await?;
        let rec = self.meta.link(ino, newparent, newname.to_vec()).await?;
        Ok(self.overlay(rec).await)
    }

    /// Records an inode kept as an orphan for its open handles. If the last handle closed
    /// meanwhile, drops it now.
    async fn note_orphan(&self, ino: InodeNo) {
        lock(&self.orphans).insert(ino);
        if !self.is_open(ino) && lock(&self.orphans).remove(&ino) {
            self.drop_orphan(ino).await;
        }
    }

    /// Removes an orphan from the namespace (a failure leaves it to the next mount).
    async fn drop_orphan(&self, ino: InodeNo) {
        if let Err(e) = self.meta.remove_orphan(ino).await {
            tracing::warn!(ino = ino.0, error = %e, "cannot drop unlinked inode; it is dropped at next mount");
        }
    }

    fn is_open(&self, ino: InodeNo) -> bool {
        lock(&self.open_counts).get(&ino).is_some_and(|n| *n > 0)
    }

    /// The UFS side of a non-directory name going away (unlink, or replaced by rename).
    /// A primary link with other names moves its object to the next name's path; the last
    /// name deletes the object, after copying the bytes to local staging if the file is
    /// still open. Returns the moved object's info, whose version the caller records.
    async fn name_going_away(
        self: &Arc<Self>,
        parent: InodeNo,
        name: &[u8],
        rec: &InodeRecord,
    ) -> Result<Option<crate::ufs::ObjectInfo>, FsError> {
        if !keeps_object_at(rec, parent, name) {
            return Ok(None);
        }
        let key = self.key_of(rec.ino, FileKind::File).await?;
        if let Some((np, nn)) = rec.links.first() {
            let to = self.child_key(*np, nn, FileKind::File).await?;
            return self.move_object(rec, &key, &to).await;
        }
        if self.is_open(rec.ino) {
            self.pin_staging(rec.ino).await?;
        }
        key.ufs.delete(&key).await?;
        Ok(None)
    }

    /// Keeps a local copy of an open file's bytes until its last close.
    async fn pin_staging(self: &Arc<Self>, ino: InodeNo) -> Result<(), FsError> {
        if lock(&self.pinned).contains_key(&ino) {
            return Ok(());
        }
        let rec = self.meta.get(ino).await?;
        let of = self.acquire_open_file(ino);
        // A local copy of every byte: the old ones are copied in now, before the object
        // they would be read from goes.
        let staged = match self.init_staging(&of, &rec, false).await {
            Ok(()) => self.materialize_staging(ino).await,
            Err(e) => Err(e),
        };
        if let Err(e) = staged {
            self.release_open_file(ino, &of);
            return Err(e);
        }
        if let Some(old) = lock(&self.pinned).insert(ino, of) {
            self.release_open_file(ino, &old);
        }
        // The last handle may have closed while the copy was made (the kernel sends
        // RELEASE after close returns, so an unlink right after a close can find the file
        // still open): that release found nothing pinned to let go, so it goes here. Kept
        // pinned, its staging file and descriptor stayed for the life of the daemon (the
        // soak saw one per such unlink).
        if !self.is_open(ino)
            && let Some(of) = lock(&self.pinned).remove(&ino)
        {
            self.release_open_file(ino, &of);
        }
        Ok(())
    }

    /// Moves a file's object from `from` to `to`. A file whose upload is still pending
    /// (ASYNC_THROUGH) may have no object yet, or an older one: both are fine, the
    /// uploader writes the journaled bytes to whatever path the file has then.
    async fn move_object(
        self: &Arc<Self>,
        rec: &InodeRecord,
        from: &mounts::Loc,
        to: &mounts::Loc,
    ) -> Result<Option<crate::ufs::ObjectInfo>, FsError> {
        from.check_same_store(to)?;
        // An open staging's old bytes are read from the object under its current version,
        // which a copy-based move may change.
        self.materialize_staging(rec.ino).await?;
        match from.ufs.rename_file(from, to).await {
            Ok(i) => {
                // Pages cached under the destination key and the moved object's version
                // are another object's: an object that was there before with the same
                // version text (a store without ETags gives size + mtime, and two writes
                // of one size within its clock's granularity share it). Dropped before the
                // namespace names the version, so no read can be served them.
                let (cache, id, size) = (self.cache.clone(), to.object(&i.version), rec.size);
                blocking("free", move || cache.free_object(&id, size)).await?;
                Ok(Some(i))
            }
            Err(e) if e.is_not_found() && is_pending(rec) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn record_move(
        &self,
        ino: InodeNo,
        old: &InodeRecord,
        moved: Option<crate::ufs::ObjectInfo>,
    ) -> Result<(), FsError> {
        if is_pending(old) {
            return Ok(()); // the pending version stays until the uploader replaces it
        }
        if let Some(info) = moved
            && old.version.as_deref() != Some(info.version.as_str())
        {
            // Copy-based renames may give the object a new ETag: record it so reads stay
            // pinned to what the store now holds.
            self.meta
                .set_attr(
                    ino,
                    SetAttr {
                        version: Some(Some(info.version)),
                        ..Default::default()
                    },
                )
                .await?;
        }
        Ok(())
    }

    /// Removes a non-directory name (object first, then name).
    pub async fn unlink(self: &Arc<Self>, parent: InodeNo, name: &[u8]) -> Result<(), FsError> {
        self.check_writable(parent).await?;
        let rec = self.lookup(parent, name).await?;
        if rec.kind == FileKind::Dir {
            return Err(FsError::expected(libc::EISDIR, "is a directory"));
        }
        // ASYNC_THROUGH: the object of a file's last name goes in the background
        // (`deletes`), so the unlink changes no store key and waits for no round trip,
        // nor for the inode lock, which the uploader holds for a whole upload (a loop of
        // creates then unlinks ran in step with the uploads). An upload of this file in
        // flight lands before the delete, which is queued behind it.
        if self.deletes.is_some()
            && keeps_object_at(&rec, parent, name)
            && rec.links.is_empty()
            && !self.is_open(rec.ino)
        {
            let mut parts = self.meta.path(parent).await?;
            parts.push(name.to_vec());
            self.defer_delete(parts.clone())?;
            let res = self.unlink_deferred(parent, name, &rec, &parts).await;
            // Queued whatever happened, and only now (a link made meanwhile has moved the
            // object by now): the uploader asks the namespace before it deletes, so a
            // failed namespace step, made with its answer lost or not made at all, is
            // settled either way, and the logged delete is never left pending (hiding
            // the path from listings) until the next start.
            self.uploads.push_delete(parts);
            return res;
        }
        let _locks = self.lock_inodes(&[rec.ino]).await;
        let _tree = self.tree_shared().await;
        let rec = self.lookup(parent, name).await?;
        let open = self.is_open(rec.ino);
        let moved = self.name_going_away(parent, name, &rec).await?;
        let after = self.meta.unlink(parent, name.to_vec(), open).await?;
        if open && after.nlink == 0 {
            self.note_orphan(rec.ino).await;
        }
        self.record_move(rec.ino, &rec, moved).await
    }

    /// The namespace step of an ASYNC_THROUGH unlink whose delete is logged at `parts`.
    async fn unlink_deferred(
        self: &Arc<Self>,
        parent: InodeNo,
        name: &[u8],
        rec: &InodeRecord,
        parts: &deletes::Parts,
    ) -> Result<(), FsError> {
        let after = self.meta.unlink(parent, name.to_vec(), false).await?;
        if after.nlink > 0 && after.ino == rec.ino {
            // A link made meanwhile (from another directory): the object moves to the
            // name that is now primary, as `name_going_away` does, not away.
            self.settle_delete(parts).await;
            let _locks = self.lock_inodes(&[rec.ino]).await;
            let _tree = self.tree_shared().await;
            let from = self.loc_of(parts, FileKind::File)?;
            let to = self.key_of(rec.ino, FileKind::File).await?;
            let moved = self.move_object(rec, &from, &to).await?;
            return self.record_move(rec.ino, rec, moved).await;
        }
        Ok(())
    }

    /// Removes an empty directory.
    pub async fn rmdir(&self, parent: InodeNo, name: &[u8]) -> Result<(), FsError> {
        self.check_writable(parent).await?;
        let rec = self.lookup(parent, name).await?;
        if rec.kind != FileKind::Dir {
            return Err(FsError::expected(libc::ENOTDIR, "not a directory"));
        }
        self.ensure_loaded(rec.ino).await?;
        if !self.meta.list(rec.ino).await?.is_empty() {
            return Err(FsError::expected(libc::ENOTEMPTY, "directory not empty"));
        }
        self.flush_deletes_under(&self.meta.path(rec.ino).await?)
            .await?;
        let _tree = self.tree_shared().await;
        let key = self.key_of(rec.ino, FileKind::Dir).await?;
        // Objects under the prefix that no name shows (keys with an empty, `.` or `..`
        // component, written by other tools) keep the directory from being empty, as a
        // local directory's own rmdir would say.
        if key.ufs.holds_hidden_objects(&key).await? {
            return Err(FsError::expected(
                libc::ENOTEMPTY,
                "the store holds objects under this directory that the mount cannot show",
            ));
        }
        key.ufs.delete(&key).await?;
        self.meta.rmdir(parent, name.to_vec()).await?;
        Ok(())
    }

    /// Renames a file, directory or namespace-only node, replacing a compatible target, or
    /// exchanges two names (RENAME_EXCHANGE).
    #[allow(clippy::too_many_arguments)]
    pub async fn rename(
        self: &Arc<Self>,
        parent: InodeNo,
        name: &[u8],
        newparent: InodeNo,
        newname: &[u8],
        noreplace: bool,
        exchange: bool,
    ) -> Result<(), FsError> {
        self.check_writable(parent).await?;
        self.check_writable(newparent).await?;
        if exchange {
            return self.exchange(parent, name, newparent, newname).await;
        }
        let src = self.lookup(parent, name).await?;
        if alluxio_metaserver::is_mount_point(&src) {
            return Err(FsError::expected(libc::EBUSY, "a mount point cannot move"));
        }
        // Objects never move between mounted stores (EXDEV, before anything changes).
        self.key_of(src.ino, src.kind)
            .await?
            .check_same_store(&self.new_child_key(newparent, newname, src.kind).await?)?;
        self.ensure_loaded(newparent).await?;
        let target = match self.meta.lookup(newparent, newname.to_vec()).await? {
            Lookup::Found(t) => Some(t),
            _ => None,
        };
        if let Some(t) = &target {
            if t.ino == src.ino {
                return Ok(()); // two names of one inode: POSIX says do nothing
            }
            if noreplace {
                return Err(FsError::expected(libc::EEXIST, "target exists"));
            }
            match (src.kind == FileKind::Dir, t.kind == FileKind::Dir) {
                (true, false) => {
                    return Err(FsError::expected(
                        libc::ENOTDIR,
                        "target is not a directory",
                    ));
                }
                (false, true) => {
                    return Err(FsError::expected(libc::EISDIR, "target is a directory"));
                }
                (true, true) => {
                    self.ensure_loaded(t.ino).await?;
                    if !self.meta.list(t.ino).await?.is_empty() {
                        return Err(FsError::expected(
                            libc::ENOTEMPTY,
                            "target directory not empty",
                        ));
                    }
                }
                (false, false) => {}
            }
        }
        // Refuse a move into its own subtree before touching the UFS.
        if src.kind == FileKind::Dir && self.is_within(newparent, src.ino).await? {
            return Err(FsError::expected(
                libc::EINVAL,
                "cannot move a directory into itself",
            ));
        }
        let _locks = self
            .lock_inodes(&[src.ino, target.as_ref().map_or(src.ino, |t| t.ino)])
            .await;
        // Pending deletes (ASYNC_THROUGH unlinks) below a directory that moves are carried
        // out first; one at a file's new path must not take the object moving there.
        let mut to_parts = self.meta.path(newparent).await?;
        to_parts.push(newname.to_vec());
        if src.kind == FileKind::Dir {
            self.flush_deletes_under(&self.meta.path(src.ino).await?)
                .await?;
            self.flush_deletes_under(&to_parts).await?;
        } else {
            self.settle_delete(&to_parts).await;
        }
        let (_shared, _exclusive) = if src.kind == FileKind::Dir {
            (None, Some(self.tree_exclusive().await))
        } else {
            (Some(self.tree_shared().await), None)
        };
        // Re-read both under the locks: an upload may have changed versions meanwhile.
        let src = self.lookup(parent, name).await?;
        let target = match self.meta.lookup(newparent, newname.to_vec()).await? {
            Lookup::Found(t) => Some(t),
            _ => None,
        };
        // Logged before the store moves, done once the namespace has (or the store is
        // back): a crash in between is finished at the next start (`intents`).
        let mut logged = self.log_rename(src.ino, parent, name, newparent, newname)?;
        // UFS first. What moved there, to be put back if the namespace refuses.
        let mut moved = None;
        let mut target_moved = None;
        let mut target_delete = None;
        let mut undo = None;
        match src.kind {
            FileKind::Dir => {
                let mut tkey = None;
                if let Some(t) = &target {
                    let k = self.key_of(t.ino, FileKind::Dir).await?;
                    k.ufs.delete(&k).await?;
                    tkey = Some(k);
                }
                let from = self.key_of(src.ino, FileKind::Dir).await?;
                let to = self.child_key(newparent, newname, FileKind::Dir).await?;
                self.materialize_under(src.ino).await?;
                from.ufs.rename_dir(&from, &to).await?;
                undo = Some((from, to, tkey));
            }
            _ => {
                let to = self.child_key(newparent, newname, FileKind::File).await?;
                let mut target_key = None;
                let src_moves = keeps_object_at(&src, parent, name);
                // Every namespace answer the store step needs comes before the store
                // changes: a namespace that stops answering in between (a metaserver
                // killed) must not leave a step half done.
                let from = match src_moves {
                    true => Some(self.key_of(src.ino, FileKind::File).await?),
                    false => None,
                };
                if let Some(t) = &target {
                    if keeps_object_at(t, newparent, newname) && t.links.is_empty() {
                        // The target's object goes only once nothing can fail before it
                        // would have: the source's object replaces it in one store step
                        // (a rename or copy onto its key), or it is deleted after the
                        // namespace renamed. Deleted first, a failure in between left the
                        // target's name with no bytes (the metaserver-kill campaign lost
                        // replaced targets that way). An open target keeps a local copy.
                        if self.is_open(t.ino) {
                            self.pin_staging(t.ino).await?;
                        }
                        target_key = Some(self.key_of(t.ino, FileKind::File).await?);
                    } else {
                        target_moved = self.name_going_away(newparent, newname, t).await?;
                    }
                }
                if let Some(from) = from {
                    moved = self.move_object(&src, &from, &to).await?;
                    if moved.is_some() {
                        undo = Some((from, to, None));
                    }
                }
                // What the store step did not replace (a source with no object, or one
                // whose version is pending upload and has none yet) goes once the
                // namespace renamed: left, it would show as a file again once the name
                // moves on before the upload lands.
                if moved.is_none() {
                    target_delete = target_key;
                }
            }
        }
        let keep_open = target.as_ref().is_some_and(|t| self.is_open(t.ino));
        let replaced = match self
            .meta
            .rename(
                parent,
                name.to_vec(),
                newparent,
                newname.to_vec(),
                noreplace,
                keep_open,
            )
            .await
        {
            Ok(r) => r,
            Err(e) => match self
                .rename_forward(&e, src.ino, parent, name, newparent, newname)
                .await
            {
                Some(r) => r,
                None => {
                    // The store moved and the namespace did not, and will not: the move goes
                    // back, so the name the namespace still has finds its object, with its
                    // inode's attributes, xattrs and links, instead of a listing later
                    // dropping that name and showing the object as a new file. A target the
                    // store replaced stays replaced (its bytes are gone from the store).
                    if let Some((from, to, tkey)) = undo {
                        let back = match src.kind {
                            FileKind::Dir => match from.ufs.rename_dir(&to, &from).await {
                                Ok(()) => match &tkey {
                                    Some(k) => k.ufs.create_dir(k).await,
                                    None => Ok(()),
                                },
                                Err(e) => Err(e),
                            },
                            _ => from.ufs.rename_file(&to, &from).await.map(|_| ()),
                        };
                        if let Err(b) = back {
                            tracing::error!(error = %b, from = %to.key, to = %from.key, "rename: the namespace refused and moving the object back failed; the next start finishes the rename");
                            if let Some(l) = logged.as_mut() {
                                l.keep = true;
                            }
                        }
                    }
                    return Err(e.into());
                }
            },
        };
        if let Some(r) = replaced
            && keep_open
            && r.nlink == 0
            && r.kind != FileKind::Dir
        {
            self.note_orphan(r.ino).await;
        }
        if let Some(k) = target_delete {
            match k.ufs.delete(&k).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(key = %k.key, error = %e, "rename: the replaced target's object could not be deleted");
                    return Err(e.into());
                }
            }
        }
        self.record_move(src.ino, &src, moved).await?;
        if let Some(t) = &target {
            self.record_move(t.ino, t, target_moved).await?;
        }
        Ok(())
    }

    /// After a rename's namespace step failed with its store step done: when the namespace
    /// could not be reached (a metaserver down or restarting: `MetaError::Storage`), or
    /// came back in a new epoch with the target directory not listed (`Unloaded`), takes
    /// the namespace step again until it answers, for at most [`RENAME_FORWARD_WAIT`], as
    /// the next start would after a crash. Moving the store back instead loses a replaced
    /// target: the store step replaced (or deleted) its object, so the name the namespace
    /// keeps would have no bytes (the metaserver campaign found that). `Some` with what
    /// the namespace replaced once the rename is made (`None` inside when the failed call
    /// had made it and only its answer was lost); `None` when the namespace refused for
    /// another reason or stayed out of reach, and the caller moves the store back.
    async fn rename_forward(
        &self,
        e: &alluxio_metaserver::MetaError,
        ino: InodeNo,
        parent: InodeNo,
        name: &[u8],
        newparent: InodeNo,
        newname: &[u8],
    ) -> Option<Option<InodeRecord>> {
        use alluxio_metaserver::MetaError;
        // Out of reach, or back after a restart that began a new epoch, in which the
        // target directory is not listed yet (`Unloaded`): neither refuses the rename.
        if !matches!(e, MetaError::Storage(_) | MetaError::Unloaded(_)) {
            return None;
        }
        tracing::warn!(error = %e, "rename: the namespace is out of reach after the store step; finishing the rename when it answers");
        let deadline = tokio::time::Instant::now() + RENAME_FORWARD_WAIT;
        loop {
            match self.meta.lookup(newparent, newname.to_vec()).await {
                Ok(Lookup::Found(r) | Lookup::Stale(r)) if r.ino == ino => return Some(None),
                Ok(_) => match self
                    .meta
                    .finish_rename(parent, name.to_vec(), newparent, newname.to_vec())
                    .await
                {
                    Ok(r) => return Some(r),
                    Err(MetaError::Storage(_)) => {}
                    Err(_) => return None,
                },
                Err(MetaError::Storage(_)) => {}
                Err(_) => return None,
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(RENAME_FORWARD_PAUSE).await;
        }
    }

    /// Moves what the UFS holds for the name `name_of` of `rec` from key `from` to key `to`:
    /// a directory's whole prefix, a file's object if this is its primary name, nothing for
    /// namespace-only nodes and secondary links.
    async fn move_name_data(
        self: &Arc<Self>,
        rec: &InodeRecord,
        name_of: (InodeNo, &[u8]),
        from: &mounts::Loc,
        to: &mounts::Loc,
    ) -> Result<Option<crate::ufs::ObjectInfo>, FsError> {
        from.check_same_store(to)?;
        match rec.kind {
            FileKind::Dir => {
                self.materialize_under(rec.ino).await?;
                from.ufs.rename_dir(from, to).await?;
                Ok(None)
            }
            FileKind::File if rec.version.is_some() && is_primary(rec, name_of.0, name_of.1) => {
                self.move_object(rec, from, to).await
            }
            _ => Ok(None),
        }
    }

    /// RENAME_EXCHANGE: swaps the two names. In the UFS the swap goes through a temporary
    /// key next to the first name (three moves), so it is not atomic there; the namespace
    /// swaps atomically once the store has completed all three.
    async fn exchange(
        self: &Arc<Self>,
        parent: InodeNo,
        name: &[u8],
        newparent: InodeNo,
        newname: &[u8],
    ) -> Result<(), FsError> {
        let a = self.lookup(parent, name).await?;
        self.ensure_loaded(newparent).await?;
        let b = self.lookup(newparent, newname).await?;
        if a.ino == b.ino {
            return Ok(());
        }
        for (dir, node) in [(&a, newparent), (&b, parent)] {
            if dir.kind == FileKind::Dir && self.is_within(node, dir.ino).await? {
                return Err(FsError::expected(
                    libc::EINVAL,
                    "cannot move a directory into itself",
                ));
            }
        }
        let _locks = self.lock_inodes(&[a.ino, b.ino]).await;
        for ino in [a.ino, b.ino] {
            self.flush_deletes_under(&self.meta.path(ino).await?)
                .await?;
        }
        let _tree = self.tree_exclusive().await;
        let a = self.lookup(parent, name).await?;
        let b = self.lookup(newparent, newname).await?;
        let tmp_name = format!(".alluxio-exchange-{}", now_ns());
        let tmp = self.child_key(parent, tmp_name.as_bytes(), a.kind).await?;
        let a_here = self.child_key(parent, name, a.kind).await?;
        let a_there = self.child_key(newparent, newname, a.kind).await?;
        let b_here = self.child_key(newparent, newname, b.kind).await?;
        let b_there = self.child_key(parent, name, b.kind).await?;
        self.move_name_data(&a, (parent, name), &a_here, &tmp)
            .await?;
        let moved_b = self
            .move_name_data(&b, (newparent, newname), &b_here, &b_there)
            .await?;
        let moved_a = self
            .move_name_data(&a, (parent, name), &tmp, &a_there)
            .await?;
        self.meta
            .exchange(parent, name.to_vec(), newparent, newname.to_vec())
            .await?;
        self.record_move(a.ino, &a, moved_a).await?;
        self.record_move(b.ino, &b, moved_b).await
    }

    /// Whether `node` is `dir` or lies below it.
    async fn is_within(&self, node: InodeNo, dir: InodeNo) -> Result<bool, FsError> {
        let mut cur = node;
        loop {
            if cur == dir {
                return Ok(true);
            }
            if cur == crate::types::ROOT_INO {
                return Ok(false);
            }
            cur = self.meta.get(cur).await?.parent;
        }
    }

    /// One extended attribute (`size` 0 asks for the length only).
    pub async fn getxattr(&self, ino: InodeNo, name: &[u8]) -> Result<Vec<u8>, FsError> {
        xattr_namespace_served(name)?;
        Ok(self.meta.get_xattr(ino, name.to_vec()).await?)
    }

    /// Sets an extended attribute (flags: XATTR_CREATE, XATTR_REPLACE).
    pub async fn setxattr(
        &self,
        ino: InodeNo,
        name: &[u8],
        value: &[u8],
        flags: i32,
    ) -> Result<(), FsError> {
        xattr_namespace_served(name)?;
        self.check_writable(ino).await?;
        let mode = if flags & libc::XATTR_CREATE != 0 {
            XattrMode::Create
        } else if flags & libc::XATTR_REPLACE != 0 {
            XattrMode::Replace
        } else {
            XattrMode::Any
        };
        Ok(self
            .meta
            .set_xattr(ino, name.to_vec(), value.to_vec(), mode)
            .await?)
    }

    /// Extended attribute names, each NUL-terminated, as listxattr(2) returns them.
    pub async fn listxattr(&self, ino: InodeNo) -> Result<Vec<u8>, FsError> {
        let mut out = Vec::new();
        for n in self.meta.list_xattr(ino).await? {
            if xattr_namespace_served(&n).is_err() {
                continue; // stored by an older mount; never served now
            }
            out.extend_from_slice(&n);
            out.push(0);
        }
        Ok(out)
    }

    /// Removes an extended attribute.
    pub async fn removexattr(&self, ino: InodeNo, name: &[u8]) -> Result<(), FsError> {
        xattr_namespace_served(name)?;
        self.check_writable(ino).await?;
        Ok(self.meta.remove_xattr(ino, name.to_vec()).await?)
    }

    /// Opens a directory, taking a snapshot of its entries for stable readdir offsets.
    pub async fn opendir(&self, ino: InodeNo) -> Result<FileHandle, FsError> {
        let rec = self.meta.get(ino).await?;
        if rec.kind != FileKind::Dir {
            return Err(FsError::expected(libc::ENOTDIR, "not a directory"));
        }
        self.ensure_loaded(ino).await?;
        let mut entries = vec![
            DirEntry {
                name: b".".to_vec(),
                ino,
                kind: FileKind::Dir,
            },
            DirEntry {
                name: b"..".to_vec(),
                ino: rec.parent,
                kind: FileKind::Dir,
            },
        ];
        entries.extend(self.meta.list(ino).await?);
        Ok(self.add_handle(Handle::Dir { entries }))
    }

    /// Up to `limit` entries of an open directory from `offset` on; each entry's offset
    /// is its index + 1. A kernel request takes what fits in one reply buffer, so the
    /// adapter asks for about that many: copying out every remaining entry on each call
    /// would make listing a large directory quadratic.
    pub fn readdir(
        &self,
        fh: FileHandle,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<(u64, DirEntry)>, FsError> {
        match &*self.handle(fh)? {
            Handle::Dir { entries } => Ok(entries
                .iter()
                .enumerate()
                .skip(usize::try_from(offset).unwrap_or(usize::MAX))
                .take(limit)
                .map(|(i, e)| (i as u64 + 1, e.clone()))
                .collect()),
            Handle::File { .. } => Err(FsError::new(libc::EBADF, "not a directory handle")),
        }
    }

    /// Closes a directory handle.
    pub fn releasedir(&self, fh: FileHandle) {
        lock(&self.handles).remove(&fh.0);
    }

    /// Filesystem statistics: space of the cache disk (where writes are staged) and the
    /// namespace's inode count.
    pub async fn statfs(&self) -> Result<StatFs, FsError> {
        let dir = self.cfg.staging_dir.clone();
        let st = blocking("statfs", move || nix::sys::statvfs::statvfs(&dir))
            .await?
            .map_err(|e| FsError::new(e as i32, format!("statvfs: {e}")))?;
        let used = self.meta.inodes_allocated().await?;
        let frsize = st.fragment_size().max(1);
        Ok(StatFs {
            blocks: st.blocks() * frsize / 4096,
            bfree: st.blocks_free() * frsize / 4096,
            bavail: st.blocks_available() * frsize / 4096,
            files: used + 1_000_000_000,
            ffree: 1_000_000_000,
            bsize: 4096,
            namelen: alluxio_metaserver::namespace::NAME_MAX as u32,
        })
    }
}

/// A rename in the log of renames in flight; marked done when dropped, unless `keep`
/// (its store moved and could not be moved back: the next start finishes it).
struct RenameLogged<'a> {
    log: &'a intents::RenameLog,
    id: u64,
    keep: bool,
}

impl Drop for RenameLogged<'_> {
    fn drop(&mut self) {
        if !self.keep {
            self.log.end(self.id);
        }
    }
}

/// Whether the store holds the object at `loc`.
async fn store_holds(loc: &mounts::Loc) -> Result<bool, FsError> {
    match loc.ufs.stat(loc).await {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A store call whose object may be gone already (a step done before a crash).
fn ignore_not_found(r: Result<(), crate::ufs::UfsError>) -> Result<(), FsError> {
    match r {
        Err(e) if e.is_not_found() => Ok(()),
        r => Ok(r?),
    }
}

/// Whether the mount serves extended attributes of `name`'s namespace: `user.` and
/// `trusted.` (the kernel checks who may use each). `security.` (LSM labels, file
/// capabilities) and `system.` (POSIX ACLs) get EOPNOTSUPP: the mount enforces neither
/// (FUSE_POSIX_ACL is not negotiated, so a stored ACL would be shown and never applied),
/// and the answer lets `ls -l` stop asking. It asks `security.selinux` and
/// `system.posix_acl_access` of every entry until one says the device does not support
/// them, then never again on that device: two round trips for a whole tree, not two per
/// entry.
fn xattr_namespace_served(name: &[u8]) -> Result<(), FsError> {
    if name.starts_with(b"security.") || name.starts_with(b"system.") {
        return Err(FsError::expected(
            libc::EOPNOTSUPP,
            "security.* and system.* extended attributes are not supported",
        ));
    }
    Ok(())
}
