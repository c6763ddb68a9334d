//! A cache node: a host that only serves pages to FUSE daemons (and to other nodes' read
//! paths), by their shareable identity (store, key, version, page). It reuses the
//! daemon's page tiers (memory, disk with io_uring, checksums, budgets) and fetcher (one
//! fetch per page however many peers ask at once); on a miss it reads the page through
//! from the store, once for the cluster, caches it and serves it.
//!
//! The stores it may read come from its configuration (`--ufs`, or a metaserver's mount
//! table): a page of a store it does not have is answered "miss" unless cached, and the
//! daemon that asked reads the store itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use alluxio::config::UfsConfig;
use alluxio::error::FsError;
use alluxio::fetch::{Fetcher, PageSource};
use alluxio::metrics::Metrics;
use alluxio::page_cache::{Outgoing, PageCache, PageCacheConfig};
use alluxio::peer::server::{PageServer, PeerHost, StoreSource};
use alluxio::peer::wire::Get;
use alluxio::ufs::Ufs;

/// What a node is.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Directory of the disk tier (created 0700).
    pub cache_dir: PathBuf,
    /// Disk tier capacity in bytes.
    pub cache_bytes: u64,
    /// Memory tier capacity in bytes.
    pub mem_bytes: u64,
    /// Pages being fetched at once (their buffers are outside the tiers).
    pub inflight_pages: usize,
    /// The stores it may read pages through from.
    pub stores: Vec<UfsConfig>,
    /// How long a store call may go without an answer.
    pub ufs_timeout: Duration,
}

/// A running node's state.
pub struct Node {
    server: PageServer,
    stores: Vec<Arc<Ufs>>,
    metrics: Arc<Metrics>,
}

impl Node {
    /// Opens the tiers and configures the stores (no network yet).
    pub fn new(cfg: &NodeConfig, metrics: Arc<Metrics>) -> Result<Arc<Self>, String> {
        let cache = PageCache::new(
            &PageCacheConfig {
                mem_bytes: cfg.mem_bytes,
                disk_bytes: cfg.cache_bytes,
                disk_dir: cfg.cache_dir.join("pages"),
                io_engine: Default::default(),
                disk_free_ratio: alluxio::config::DEFAULT_CACHE_FREE_RATIO,
            },
            metrics.clone(),
        )
        .map_err(|e| {
            format!(
                "cannot set up the cache in {}: {e}",
                cfg.cache_dir.display()
            )
        })?;
        let mut stores = Vec::new();
        for s in &cfg.stores {
            let mut ufs =
                Ufs::new(s, metrics.clone()).map_err(|e| format!("store {}: {e}", s.uri))?;
            ufs.set_timeout(cfg.ufs_timeout);
            stores.push(Arc::new(ufs));
        }
        let chain: Vec<Arc<dyn PageSource>> = vec![Arc::new(StoreSource)];
        let fetcher = Arc::new(Fetcher::new(
            Arc::new(cache),
            chain,
            cfg.inflight_pages,
            metrics.clone(),
        ));
        Ok(Arc::new(Self {
            server: PageServer::new(fetcher),
            stores,
            metrics,
        }))
    }

    /// The node's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A configured store holding `key` of store `store_id`, with the key under its root.
    fn store_for(&self, store_id: &str, key: &str) -> Option<(Arc<Ufs>, String)> {
        self.stores.iter().find_map(|u| {
            (u.store_id() == store_id)
                .then(|| u.key_under_root(key))
                .flatten()
                .map(|k| (u.clone(), k.to_string()))
        })
    }
}

#[async_trait::async_trait]
impl PeerHost for Node {
    async fn page(&self, get: Get) -> Result<Option<Outgoing>, FsError> {
        let store = self.store_for(&get.store, &get.key);
        self.server.page(get, store).await
    }

    async fn offer(&self, get: Get, page: Bytes) -> Result<bool, FsError> {
        let store = self.store_for(&get.store, &get.key);
        self.server.offer(get, page, store).await
    }

    async fn load(&self, get: Get) -> Result<Option<bool>, FsError> {
        let store = self.store_for(&get.store, &get.key);
        self.server.load(get, store).await
    }

    async fn free(&self, get: Get) -> Result<u64, FsError> {
        self.server.free(get).await
    }
}
