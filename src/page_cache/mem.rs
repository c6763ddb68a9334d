//! The memory tier: pages in a foyer in-memory cache, bounded by bytes.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use super::{PageKey, Tier};
use crate::metrics::Metrics;
use crate::types::InodeNo;

/// Pages in memory, least recently used out first.
pub struct MemTier {
    cache: foyer::Cache<PageKey, Bytes>,
    metrics: Arc<Metrics>,
}

impl MemTier {
    /// A tier of at most `bytes` (each page weighs its length plus 64 bytes of entry).
    pub fn new(bytes: u64, metrics: Arc<Metrics>) -> Self {
        // foyer splits capacity across shards and bounds each shard separately; keep a
        // shard at least 64 MiB so the total stays within `bytes` even for small budgets
        // (a page larger than a shard would otherwise overshoot it).
        let shards = (bytes / (64 << 20)).clamp(1, 8) as usize;
        let cache = foyer::CacheBuilder::new(usize::try_from(bytes).unwrap_or(usize::MAX))
            .with_shards(shards)
            .with_weighter(|_k: &PageKey, v: &Bytes| v.len() + 64)
            .build();
        Self { cache, metrics }
    }

    fn report(&self) {
        self.metrics
            .mem_cache_bytes
            .store(self.cache.usage() as u64, Relaxed);
    }
}

#[async_trait::async_trait]
impl Tier for MemTier {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn contains(&self, key: &PageKey) -> bool {
        self.cache.contains(key)
    }

    async fn get(&self, key: &PageKey) -> Option<Bytes> {
        self.cache.get(key).map(|e| e.value().clone())
    }

    async fn put(&self, key: PageKey, _owner: InodeNo, data: Bytes) {
        self.cache.insert(key, data);
        self.report();
    }

    fn remove(&self, key: &PageKey) -> bool {
        let removed = self.cache.remove(key).is_some();
        if removed {
            self.report();
        }
        removed
    }
}
