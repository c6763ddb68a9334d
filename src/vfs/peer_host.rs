//! The vfs as a [`PeerHost`]: a daemon that serves peers (`--serve-peers`) answers from
//! its own tiers, and reads a page it does not hold through from a store it mounts, so
//! it caches what it owns on the ring.
//!
//! A request names the version's length, which decides each page's length. It is
//! checked before the store is read for a peer: against the size in a size+mtime
//! version, else once per version with a stat of the object (whose version must be the
//! one asked for). A wrong length could otherwise put a cut page in this host's cache.

use std::sync::Arc;

use alluxio_metaserver::ObjectVersion;
use bytes::Bytes;

use super::{Vfs, lock};
use crate::error::FsError;
use crate::fetch::ObjectRead;
use crate::object::{ObjectId, PageKey};
use crate::peer::server::PeerHost;
use crate::peer::wire::Get;
use crate::types::{InodeNo, PAGE_SIZE};
use crate::ufs::Ufs;

/// Bound on the table of checked sizes (cleared when full).
const SIZES_MAX: usize = 1 << 16;

impl Vfs {
    /// Whether `size` is the length of `id` in `ufs`.
    async fn peer_size_ok(&self, id: &Arc<ObjectId>, ufs: &Ufs, key: &str, size: u64) -> bool {
        if let ObjectVersion::SizeMtime { size: s, .. } = id.version() {
            return *s == size;
        }
        if let Some(s) = lock(&self.peer_sizes).get(id) {
            return *s == size;
        }
        match ufs.stat(key).await {
            Ok(info) if info.version == id.version_text() => {
                let mut m = lock(&self.peer_sizes);
                if m.len() >= SIZES_MAX {
                    m.clear();
                }
                m.insert(id.clone(), info.size);
                info.size == size
            }
            _ => false,
        }
    }
}

#[async_trait::async_trait]
impl PeerHost for Vfs {
    async fn page(&self, get: Get) -> Result<Option<Bytes>, FsError> {
        let id = Arc::new(ObjectId::new(
            Arc::from(get.store.as_str()),
            &get.key,
            &get.version,
        ));
        if !id.shareable() {
            return Err(FsError::expected(
                libc::EINVAL,
                "a version only its own host can read",
            ));
        }
        if get.idx >= get.size.div_ceil(PAGE_SIZE) {
            return Err(FsError::expected(libc::EINVAL, "page past the end"));
        }
        let key = PageKey::new(&id, get.idx);
        let mut store = self.mount_table().store_for(&get.store, &get.key);
        if let Some((ufs, k)) = &store
            && !self.fetcher.has(&key)
            && !self.peer_size_ok(&id, ufs, k, get.size).await
        {
            // Not the version this host can read (changed since, or a wrong length).
            store = None;
        }
        if store.is_none() && !self.fetcher.has(&key) {
            return Ok(None);
        }
        let object = ObjectRead {
            id,
            size: get.size,
            store,
            owner: InodeNo(0),
            for_peer: true,
        };
        match self.fetcher.page(&object, get.idx).await {
            Ok((b, _)) => Ok(Some(b)),
            Err(e) => Err(e),
        }
    }
}
