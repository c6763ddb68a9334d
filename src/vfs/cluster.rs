//! The vfs's part in cluster-wide cache commands: `alluxio fs load` spreads a file's
//! pages over their owners on the ring (each owner reads its own pages from the store,
//! and no bytes come back here), and `alluxio fs report` asks each member for its
//! counters. `fs free` (in `vfs.rs`) asks every member to drop a file's pages too.
//!
//! Invariant: a load never leaves a page less cached than it was; a page no owner takes
//! (this host owns it, its owners are down, its version is not shareable) is loaded into
//! this host's own tiers, so a load ends with every page cached somewhere.

use std::sync::Arc;

use futures::StreamExt;

use super::Vfs;
use crate::error::FsError;
use crate::object::PageKey;
use crate::peer::client::{Loaded, Peers};
use crate::types::{FileKind, PAGE_SIZE};

/// Pages asked for at once by one load request (each owner reads its share in parallel;
/// a page loaded here holds its buffer until cached, so this bounds the memory too).
const LOAD_PARALLEL: usize = 16;

/// What one load request did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LoadReport {
    /// Pages asked for.
    pub pages: u64,
    /// Of those, cached already (here or by their owner).
    pub cached_before: u64,
    /// Read from the store by their owner on another host.
    pub read_by_peers: u64,
    /// Read into this host's tiers.
    pub read_here: u64,
    /// Bytes of the pages asked for.
    pub bytes: u64,
    /// The file's size.
    pub size: u64,
}

impl Vfs {
    /// Has this mount take part in a cluster: loads and frees then go to the owners.
    pub fn set_cluster(&self, peers: Arc<Peers>) {
        let _ = self.cluster.set(peers);
    }

    /// The inode at `path` (relative to the mount root).
    pub(super) async fn resolve(&self, path: &str) -> Result<crate::types::InodeRecord, FsError> {
        let mut rec = self.meta.get(alluxio_metaserver::ROOT_INO).await?;
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            rec = self.lookup(rec.ino, part.as_bytes()).await?;
        }
        Ok(rec)
    }

    /// `alluxio fs load`: makes sure pages `first..first + count` (clamped to the file)
    /// of the regular file at `path` are cached in the cluster: on their owners when this
    /// mount has peers, else here.
    pub async fn load(&self, path: &str, first: u64, count: u64) -> Result<LoadReport, FsError> {
        let rec = self.resolve(path).await?;
        match rec.kind {
            FileKind::File => {}
            FileKind::Dir => return Err(FsError::expected(libc::EISDIR, "a directory")),
            _ => return Err(FsError::expected(libc::EINVAL, "not a regular file")),
        }
        let mut report = LoadReport {
            size: rec.size,
            ..LoadReport::default()
        };
        let Some(version) = rec.version.as_deref().filter(|_| rec.size > 0) else {
            return Ok(report); // empty, or nothing stored: nothing to cache
        };
        let loc = self.key_of(rec.ino, FileKind::File).await?;
        let object = loc.read_of(version, rec.size, rec.ino);
        let end = object.pages().min(first.saturating_add(count));
        let cluster = self.cluster.get();
        let mut pages = futures::stream::iter(first.min(end)..end)
            .map(|idx| {
                let object = object.clone();
                async move {
                    let len = object.page_range(idx);
                    let len = len.end - len.start;
                    if let Some(peers) = cluster {
                        match peers.load(&object, idx).await {
                            Loaded::Held => return Ok((len, Some(true), false)),
                            Loaded::Read => return Ok((len, Some(false), false)),
                            Loaded::Here => {}
                        }
                    }
                    if self.fetcher.has(&PageKey::new(&object.id, idx)) {
                        return Ok((len, None, true));
                    }
                    self.fetcher.page(&object, idx).await?;
                    Ok::<_, FsError>((len, None, false))
                }
            })
            .buffer_unordered(LOAD_PARALLEL);
        while let Some(r) = pages.next().await {
            let (len, by_peer, held_here) = r?;
            report.pages += 1;
            report.bytes += len;
            match (by_peer, held_here) {
                (Some(true), _) | (None, true) => report.cached_before += 1,
                (Some(false), _) => report.read_by_peers += 1,
                (None, false) => report.read_here += 1,
            }
        }
        Ok(report)
    }

    /// `alluxio fs report` over the cluster: each other member's counters (or why there
    /// are none), by address; empty without peers.
    pub async fn cluster_report(&self) -> Vec<(String, Result<serde_json::Value, String>)> {
        match self.cluster.get() {
            Some(p) => p.stats().await,
            None => Vec::new(),
        }
    }
}

/// Pages per `alluxio fs load` request: a request's answer must come within the control
/// socket's bound however slow the store, and progress is reported per request.
pub const LOAD_CHUNK_PAGES: u64 = (256 << 20) / PAGE_SIZE;
