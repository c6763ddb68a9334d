//! The local page cache: a memory tier in front of a disk tier, both capacity-bounded.
//!
//! Pages are 1 MiB slices of UFS objects keyed by `(inode, UFS version, page index)`. A
//! new version of an object has new keys, so a reader can never get bytes of two versions
//! mixed. Cache failures never fail a read: a broken or corrupt page is a miss, counted in
//! the metrics and logged at WARN.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use crate::metrics::Metrics;
use crate::types::{InodeNo, PageIdx};

pub mod disk;
pub mod io;

pub use disk::{Backing, DiskTier};
pub use io::{EngineChoice, IoEngine};

/// Identity of one cached page.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageKey {
    /// The file.
    pub ino: InodeNo,
    /// The UFS version of the file's content.
    pub version: Arc<str>,
    /// Page index within the file.
    pub idx: PageIdx,
}

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
    mem: Option<foyer::Cache<PageKey, Bytes>>,
    disk: Option<Arc<DiskTier>>,
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
        let mem = (cfg.mem_bytes > 0).then(|| {
            // foyer splits capacity across shards and bounds each shard separately; keep a
            // shard at least 64 MiB so the total stays within `mem_bytes` even for small
            // budgets (a page larger than a shard would otherwise overshoot it).
            let shards = (cfg.mem_bytes / (64 << 20)).clamp(1, 8) as usize;
            foyer::CacheBuilder::new(usize::try_from(cfg.mem_bytes).unwrap_or(usize::MAX))
                .with_shards(shards)
                .with_weighter(|_k: &PageKey, v: &Bytes| v.len() + 64)
                .build()
        });
        let disk = if cfg.disk_bytes > 0 {
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
            Some(Arc::new(tier))
        } else {
            None
        };
        use std::sync::atomic::Ordering::Relaxed;
        metrics
            .disk_cache_capacity
            .store(if disk.is_some() { cfg.disk_bytes } else { 0 }, Relaxed);
        metrics.mem_cache_capacity.store(cfg.mem_bytes, Relaxed);
        Ok(Self { mem, disk, metrics })
    }

    /// Looks a page up in memory, then on disk (promoting disk hits to memory).
    pub async fn get(&self, key: &PageKey) -> Option<Bytes> {
        if let Some(mem) = &self.mem
            && let Some(e) = mem.get(key)
        {
            Metrics::inc(&self.metrics.cache_hits_mem);
            return Some(e.value().clone());
        }
        if let Some(disk) = &self.disk
            && let Some(b) = disk.get(key).await
        {
            Metrics::inc(&self.metrics.cache_hits_disk);
            self.put_mem(key.clone(), b.clone());
            return Some(b);
        }
        Metrics::inc(&self.metrics.cache_misses);
        None
    }

    /// Whether a page is cached in either tier (no counters, no I/O).
    pub fn contains(&self, key: &PageKey) -> bool {
        self.mem.as_ref().is_some_and(|m| m.contains(key))
            || self.disk.as_ref().is_some_and(|d| d.contains(key))
    }

    /// Drops the cached pages of `ino`: in memory those of `version` (`pages` of them),
    /// on disk every version. Returns (disk bytes freed, disk files kept because the
    /// kernel is reading them by passthrough).
    pub fn free(&self, ino: InodeNo, version: Option<&Arc<str>>, pages: u64) -> (u64, usize) {
        if let (Some(mem), Some(v)) = (&self.mem, version) {
            for idx in 0..pages {
                mem.remove(&PageKey {
                    ino,
                    version: v.clone(),
                    idx: crate::types::PageIdx(idx),
                });
            }
            self.metrics
                .mem_cache_bytes
                .store(mem.usage() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        match &self.disk {
            Some(d) => d.free_inode(ino),
            None => (0, 0),
        }
    }

    /// Drops one page from the memory tier if the disk tier also holds it (so nothing is
    /// lost but a copy in memory). Returns whether it did.
    pub fn release_mem(&self, key: &PageKey) -> bool {
        let (Some(mem), Some(disk)) = (&self.mem, &self.disk) else {
            return false;
        };
        if !disk.contains(key) || mem.remove(key).is_none() {
            return false;
        }
        self.metrics
            .mem_cache_bytes
            .store(mem.usage() as u64, std::sync::atomic::Ordering::Relaxed);
        true
    }

    /// Sets the inodes the disk tier never evicts (files under pinned paths).
    pub fn set_pinned(&self, inodes: std::collections::HashSet<u64>) {
        if let Some(d) = &self.disk {
            d.set_pinned(inodes);
        }
    }

    /// Evicts disk-tier pages to give at least `need` bytes of the cache filesystem to a
    /// write that found it full (see [`DiskTier::release`]); blocking. Returns the bytes
    /// freed, 0 when there was nothing to give.
    pub fn release_disk(&self, need: u64) -> u64 {
        let freed = self.disk.as_ref().map_or(0, |d| d.release(need));
        Metrics::add(&self.metrics.disk_cache_released_bytes, freed);
        freed
    }

    /// The disk tier's I/O engine, if there is a disk tier.
    pub fn disk_engine(&self) -> Option<&'static str> {
        self.disk.as_ref().map(|d| d.engine())
    }

    /// The disk tier's data file for a whole cached object, for passthrough (see
    /// [`DiskTier::backing`]).
    pub fn backing(
        &self,
        ino: InodeNo,
        version: &Arc<str>,
        size: u64,
        rt: &tokio::runtime::Handle,
    ) -> Option<Backing> {
        self.disk.as_ref()?.backing(ino, version, size, rt)
    }

    fn put_mem(&self, key: PageKey, data: Bytes) {
        if let Some(mem) = &self.mem {
            mem.insert(key, data);
            self.metrics
                .mem_cache_bytes
                .store(mem.usage() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Caches `file`, all `size` bytes of `(ino, version)`, by taking it as the disk
    /// tier's data file (see [`DiskTier::adopt`]). On the blocking pool.
    pub async fn adopt(
        &self,
        ino: InodeNo,
        version: &Arc<str>,
        file: &Arc<std::fs::File>,
        size: u64,
    ) -> bool {
        let Some(disk) = self.disk.clone() else {
            return false;
        };
        let (version, file) = (version.clone(), file.clone());
        tokio::task::spawn_blocking(move || disk.adopt(ino, &version, &file, size))
            .await
            .unwrap_or(false)
    }

    /// Stores a page in the disk tier only (pages of written files: they need not
    /// displace what readers keep in memory).
    pub async fn put_disk(&self, key: PageKey, data: Bytes) {
        if let Some(disk) = &self.disk {
            disk.put(key, data).await;
        }
    }

    /// Stores a page in both tiers. Disk failures are logged and counted, never returned.
    pub async fn put(&self, key: PageKey, data: Bytes) {
        self.put_mem(key.clone(), data.clone());
        if let Some(disk) = &self.disk {
            disk.put(key, data).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> PageKey {
        PageKey {
            ino: InodeNo(2),
            version: Arc::from("e:1"),
            idx: PageIdx(i),
        }
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
            c.put(key(i), Bytes::from(vec![i as u8; 1000])).await;
        }
        let snap = m.snapshot();
        assert!(snap["mem_cache_bytes"] <= 3 * 1024, "{snap:?}");
        assert!(snap["disk_cache_bytes"] <= 8 * 1100, "{snap:?}");
        assert!(snap["disk_cache_evictions"] >= 10, "{snap:?}");
        // The newest page is served; the oldest has been evicted from both tiers.
        assert_eq!(c.get(&key(19)).await.unwrap()[0], 19);
        assert!(c.get(&key(0)).await.is_none());
        // Another version of the same page is a different key.
        let other = PageKey {
            version: Arc::from("e:2"),
            ..key(19)
        };
        assert!(c.get(&other).await.is_none());
    }
}
