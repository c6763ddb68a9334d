//! The local page cache: a memory tier in front of a disk tier, both capacity-bounded, each
//! behind the one [`Tier`] trait.
//!
//! Pages are 1 MiB slices of store objects keyed by [`PageKey`]: (store, object key,
//! version, page index), the same name on every host. A new version of an object has new
//! keys, so a reader can never get bytes of two versions mixed. Cache failures never fail a
//! read: a broken or corrupt page is a miss, counted in the metrics and logged at WARN.
//!
//! A tier that is switched off (size 0) is [`NoTier`], which holds nothing: callers never
//! branch on whether a tier exists. Pages move between tiers only here: a disk hit is put
//! into memory ([`PageCache::get`]); a page fetched from a source below the cache is put
//! into memory and then on disk ([`PageCache::put_mem`], [`PageCache::put_disk`]), a page
//! offered by a peer into both ([`PageCache::put`]), a written file's pages into the disk
//! tier only.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use crate::metrics::Metrics;
use crate::object::ObjectId;
use crate::types::InodeNo;

pub mod disk;
pub mod io;
pub mod mem;

pub use crate::object::PageKey;
pub use disk::{Backing, DiskTier, PageFile};
pub use io::{EngineChoice, IoEngine};
pub use mem::MemTier;

/// One level of the local cache. `owner` is the inode a page is cached for (0 when none,
/// as on a cache node): bookkeeping for freeing and pinning by inode, never part of a
/// page's identity. The methods past `remove` concern tiers that keep files; a tier
/// without them keeps the defaults (nothing to free, pin, give back or hand out).
#[async_trait::async_trait]
pub trait Tier: Send + Sync {
    /// What the tier is called in logs and `fs report`.
    fn name(&self) -> &'static str;
    /// Whether the tier holds the page (no I/O, no counters).
    fn contains(&self, key: &PageKey) -> bool;
    /// The page, or `None` (absent, or unreadable: a miss either way).
    async fn get(&self, key: &PageKey) -> Option<Bytes>;
    /// Stores a page, evicting others to stay within capacity; may decline (no room).
    /// Failures are logged and counted, never returned.
    async fn put(&self, key: PageKey, owner: InodeNo, data: Bytes);
    /// Drops one page; returns whether the tier held it.
    fn remove(&self, key: &PageKey) -> bool;
    /// Drops every page cached for `owner`, all versions; returns (bytes freed, files kept
    /// because the kernel reads them by passthrough). Blocking.
    fn free_owner(&self, _owner: InodeNo) -> (u64, usize) {
        (0, 0)
    }
    /// Drops every page of `object` (one version), whoever cached it; returns (bytes
    /// freed, files kept because the kernel reads them by passthrough). Blocking.
    fn free_object(&self, _object: &ObjectId) -> (u64, usize) {
        (0, 0)
    }
    /// Sets the owners whose pages are never evicted (files under pinned paths).
    fn set_pinned(&self, _owners: HashSet<u64>) {}
    /// Evicts to give `need` bytes of the tier's filesystem to a write that found it full;
    /// returns the bytes freed. Blocking.
    fn release(&self, _need: u64) -> u64 {
        0
    }
    /// Takes `file`, all `size` bytes of `object`, whole (see [`DiskTier::adopt`]).
    /// Blocking.
    fn adopt(
        &self,
        _owner: InodeNo,
        _object: &Arc<ObjectId>,
        _file: &std::fs::File,
        _size: u64,
    ) -> bool {
        false
    }
    /// A file holding all of `object` for the kernel to read directly (passthrough).
    fn backing(
        self: Arc<Self>,
        _object: &Arc<ObjectId>,
        _size: u64,
        _rt: &tokio::runtime::Handle,
    ) -> Option<Backing> {
        None
    }
    /// The I/O engine, for tiers that do I/O.
    fn engine(&self) -> Option<&'static str> {
        None
    }
    /// The page as a pinned range of a file, to send from the file (see
    /// [`DiskTier::page_file`]), for tiers that keep files.
    fn page_file(&self, _key: &PageKey) -> Option<PageFile> {
        None
    }
}

/// A cached page on its way to a peer.
pub enum Outgoing {
    /// In memory.
    Bytes(Bytes),
    /// A range of a data file, with its checksum.
    File(PageFile),
}

/// A tier that holds nothing: what a tier of size 0 is.
pub struct NoTier;

#[async_trait::async_trait]
impl Tier for NoTier {
    fn name(&self) -> &'static str {
        "none"
    }
    fn contains(&self, _: &PageKey) -> bool {
        false
    }
    async fn get(&self, _: &PageKey) -> Option<Bytes> {
        None
    }
    async fn put(&self, _: PageKey, _: InodeNo, _: Bytes) {}
    fn remove(&self, _: &PageKey) -> bool {
        false
    }
}

/// The least a write that found the cache filesystem full asks the disk tier to give
/// back: freeing a few pages per 1 MiB write would put every write of a large file
/// through another eviction.
pub const MIN_RELEASE: u64 = 16 << 20;

/// The longest [`PageCache::with_disk_room`] waits for held files to be given back.
pub const ROOM_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Sizes and places of the tiers.
#[derive(Debug, Clone)]
pub struct PageCacheConfig {
    /// Memory tier capacity in bytes (0 disables the tier).
    pub mem_bytes: u64,
    /// Disk tier capacity in bytes (0 disables the tier).
    pub disk_bytes: u64,
    /// Directory of the disk tier.
    pub disk_dir: PathBuf,
    /// How the disk tier does its I/O.
    pub io_engine: EngineChoice,
    /// Share of the disk tier's filesystem it leaves free (see [`DiskTier::open`]).
    pub disk_free_ratio: f64,
}

/// Memory tier + disk tier.
pub struct PageCache {
    mem: Arc<dyn Tier>,
    disk: Arc<dyn Tier>,
    metrics: Arc<Metrics>,
}

/// A cache that cannot be set up at all (the directory cannot be created or scanned).
#[derive(Debug, thiserror::Error)]
#[error("cache directory {dir}: {source}")]
pub struct CacheError {
    dir: PathBuf,
    #[source]
    source: std::io::Error,
}

impl PageCache {
    /// Builds the tiers; scans the disk tier so pages from earlier runs are reused.
    pub fn new(cfg: &PageCacheConfig, metrics: Arc<Metrics>) -> Result<Self, CacheError> {
        let mem: Arc<dyn Tier> = if cfg.mem_bytes > 0 {
            Arc::new(MemTier::new(cfg.mem_bytes, metrics.clone()))
        } else {
            Arc::new(NoTier)
        };
        let disk: Arc<dyn Tier> = if cfg.disk_bytes > 0 {
            let err = |source| CacheError {
                dir: cfg.disk_dir.clone(),
                source,
            };
            let engine = IoEngine::new(cfg.io_engine).map_err(err)?;
            let tier = DiskTier::open(
                cfg.disk_dir.clone(),
                cfg.disk_bytes,
                cfg.disk_free_ratio,
                metrics.clone(),
                engine,
            )
            .map_err(err)?;
            if tier.engine() == "io_uring" {
                metrics
                    .disk_io_uring
                    .store(1, std::sync::atomic::Ordering::Relaxed);
            }
            Arc::new(tier)
        } else {
            Arc::new(NoTier)
        };
        Ok(Self::with_tiers(mem, disk, cfg, metrics))
    }

    /// A cache over the given tiers (tests put failure-injecting tiers here).
    pub fn with_tiers(
        mem: Arc<dyn Tier>,
        disk: Arc<dyn Tier>,
        cfg: &PageCacheConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        metrics.disk_cache_capacity.store(cfg.disk_bytes, Relaxed);
        metrics.mem_cache_capacity.store(cfg.mem_bytes, Relaxed);
        Self { mem, disk, metrics }
    }

    /// Looks a page up in memory, then on disk (a disk hit is put into memory).
    pub async fn get(&self, key: &PageKey) -> Option<Bytes> {
        if let Some(b) = self.mem.get(key).await {
            Metrics::inc(&self.metrics.cache_hits_mem);
            return Some(b);
        }
        if let Some(b) = self.disk.get(key).await {
            Metrics::inc(&self.metrics.cache_hits_disk);
            self.mem.put(key.clone(), InodeNo(0), b.clone()).await;
            return Some(b);
        }
        Metrics::inc(&self.metrics.cache_misses);
        None
    }

    /// A page to send to a peer: as a range of the disk tier's data file (sent from the
    /// file, see [`DiskTier::page_file`]) when that range is in the kernel's page cache,
    /// which costs this process no copy and no checksum; else from memory when the memory
    /// tier holds it. `None` when neither: the caller reads it the ordinary way
    /// ([`Self::get`], whose disk read also puts the range in the page cache). A range
    /// not in the page cache is never sent from the file: the send would wait for the
    /// device on the caller's (runtime) thread.
    pub async fn page_to_send(&self, key: &PageKey) -> Option<Outgoing> {
        if let Some(f) = self.disk.page_file(key)
            && io::resident(&f.backing.file, f.offset, u64::from(f.len))
        {
            Metrics::inc(&self.metrics.cache_hits_disk);
            return Some(Outgoing::File(f));
        }
        let b = self.mem.get(key).await?;
        Metrics::inc(&self.metrics.cache_hits_mem);
        Some(Outgoing::Bytes(b))
    }

    /// Whether a page is cached in either tier (no counters, no I/O).
    pub fn contains(&self, key: &PageKey) -> bool {
        self.mem.contains(key) || self.disk.contains(key)
    }

    /// Drops the cached pages of `ino`: in memory those of `object` (`pages` of them), on
    /// disk every version. Returns (disk bytes freed, disk files kept because the kernel
    /// is reading them by passthrough). Blocking.
    pub fn free(&self, ino: InodeNo, object: Option<&Arc<ObjectId>>, pages: u64) -> (u64, usize) {
        if let Some(o) = object {
            for idx in 0..pages {
                self.mem.remove(&PageKey::new(o, idx));
            }
        }
        self.disk.free_owner(ino)
    }

    /// Drops every cached page of the `size`-byte version `object`, whoever cached it:
    /// what a peer asks of its owner (`alluxio fs free` over a cluster). Returns (bytes
    /// freed in the two tiers together, disk files kept because the kernel reads them).
    /// Blocking.
    pub fn free_object(&self, object: &Arc<ObjectId>, size: u64) -> (u64, usize) {
        let mut mem = 0;
        for idx in 0..size.div_ceil(crate::types::PAGE_SIZE) {
            if self.mem.remove(&PageKey::new(object, idx)) {
                let start = idx * crate::types::PAGE_SIZE;
                mem += size.min(start + crate::types::PAGE_SIZE) - start;
            }
        }
        let (disk, busy) = self.disk.free_object(object);
        (mem + disk, busy)
    }

    /// Drops one page from the memory tier if the disk tier also holds it (so nothing is
    /// lost but a copy in memory). Returns whether it did.
    pub fn release_mem(&self, key: &PageKey) -> bool {
        self.disk.contains(key) && self.mem.remove(key)
    }

    /// Sets the inodes the disk tier never evicts (files under pinned paths).
    pub fn set_pinned(&self, inodes: HashSet<u64>) {
        self.disk.set_pinned(inodes);
    }

    /// Evicts disk-tier pages to give at least `need` bytes of the cache filesystem to a
    /// write that found it full (see [`DiskTier::release`]); blocking. Returns the bytes
    /// freed, 0 when there was nothing to give.
    pub fn release_disk(&self, need: u64) -> u64 {
        let freed = self.disk.release(need);
        Metrics::add(&self.metrics.disk_cache_released_bytes, freed);
        freed
    }

    /// Runs `write`, which writes `len` bytes of a file's own data (staging, a journal
    /// entry) to the cache filesystem. When it is full, cached pages give way: they are
    /// copies of what the store holds, these bytes are not. The disk tier evicts
    /// [`MIN_RELEASE`] or `len` bytes, whichever is more, and the write runs again, for as
    /// long as eviction frees anything; then ENOSPC stands. `write` must be safe to run
    /// again (a positional write, a rewrite of a temporary file). Blocking: call it on a
    /// FUSE thread or the blocking pool.
    ///
    /// Space can also be held by files about to be closed: written versions still being
    /// copied into the tier hold their local files (bytes the store has now) until the
    /// copy ends. With nothing left to evict, the write waits while `held()` says such
    /// files are still open, polling, and 250 ms more once none is, at most
    /// [`ROOM_WAIT`] in all. (The caller leaves out copies it must not wait for, such as
    /// those of a file whose staging lock it holds.)
    pub fn with_disk_room<T>(
        &self,
        len: u64,
        held: impl Fn() -> bool,
        mut write: impl FnMut() -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        use std::time::{Duration, Instant};
        const POLL: Duration = Duration::from_millis(10);
        // How long to go on polling once nothing is held: other brief holders of a closed
        // file (the commit task a RELEASE spawns, a reader's clone of a local copy) let go
        // within it.
        const QUIET: Duration = Duration::from_millis(250);
        let deadline = Instant::now() + ROOM_WAIT;
        let mut quiet_since = None;
        loop {
            match write() {
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                    if self.release_disk(len.max(MIN_RELEASE)) > 0 {
                        continue;
                    }
                    let now = Instant::now();
                    if held() {
                        quiet_since = None;
                    } else if now - *quiet_since.get_or_insert(now) >= QUIET {
                        return Err(e);
                    }
                    if now >= deadline {
                        return Err(e);
                    }
                    std::thread::sleep(POLL);
                }
                r => return r,
            }
        }
    }

    /// The disk tier's I/O engine, if there is a disk tier.
    pub fn disk_engine(&self) -> Option<&'static str> {
        self.disk.engine()
    }

    /// The disk tier's data file for a whole cached object, for passthrough (see
    /// [`DiskTier::backing`]).
    pub fn backing(
        &self,
        object: &Arc<ObjectId>,
        size: u64,
        rt: &tokio::runtime::Handle,
    ) -> Option<Backing> {
        self.disk.clone().backing(object, size, rt)
    }

    /// Caches `file`, all `size` bytes of `object`, by taking it as the disk tier's data
    /// file (see [`DiskTier::adopt`]). On the blocking pool.
    pub async fn adopt(
        &self,
        owner: InodeNo,
        object: &Arc<ObjectId>,
        file: &Arc<std::fs::File>,
        size: u64,
    ) -> bool {
        let (disk, object, file) = (self.disk.clone(), object.clone(), file.clone());
        tokio::task::spawn_blocking(move || disk.adopt(owner, &object, &file, size))
            .await
            .unwrap_or(false)
    }

    /// Stores a page in the disk tier only (pages of written files: they need not
    /// displace what readers keep in memory).
    pub async fn put_disk(&self, key: PageKey, owner: InodeNo, data: Bytes) {
        self.disk.put(key, owner, data).await;
    }

    /// Stores a page in the memory tier only; [`Self::put_disk`] follows (a fetched page is
    /// answered to its readers from memory without waiting for its disk write).
    pub async fn put_mem(&self, key: PageKey, owner: InodeNo, data: Bytes) {
        self.mem.put(key, owner, data).await;
    }

    /// Stores a page in both tiers.
    pub async fn put(&self, key: PageKey, owner: InodeNo, data: Bytes) {
        self.mem.put(key.clone(), owner, data.clone()).await;
        self.disk.put(key, owner, data).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: &str) -> Arc<ObjectId> {
        Arc::new(ObjectId::new(Arc::from("s3:b"), "k", v))
    }

    fn key(i: u64) -> PageKey {
        PageKey::new(&obj("e:1"), i)
    }

    #[tokio::test]
    async fn tiers_fill_promote_and_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        let cfg = PageCacheConfig {
            mem_bytes: 3 * 1024,
            disk_bytes: 8 * 1100,
            disk_dir: dir.path().join("pages"),
            io_engine: EngineChoice::Auto,
            disk_free_ratio: 0.0,
        };
        let c = PageCache::new(&cfg, m.clone()).unwrap();
        for i in 0..20 {
            c.put(key(i), InodeNo(2), Bytes::from(vec![i as u8; 1000]))
                .await;
        }
        let snap = m.snapshot();
        assert!(snap["mem_cache_bytes"] <= 3 * 1024, "{snap:?}");
        assert!(snap["disk_cache_bytes"] <= 8 * 1100, "{snap:?}");
        assert!(snap["disk_cache_evictions"] >= 10, "{snap:?}");
        // The newest page is served; the oldest has been evicted from both tiers.
        assert_eq!(c.get(&key(19)).await.unwrap()[0], 19);
        assert!(c.get(&key(0)).await.is_none());
        // Another version of the same page is a different key.
        let other = PageKey::new(&obj("e:2"), 19);
        assert!(c.get(&other).await.is_none());
    }
}
