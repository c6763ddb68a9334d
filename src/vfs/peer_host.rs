//! The vfs as a [`PeerHost`]: a daemon that serves peers (`--serve-peers`) answers from
//! its own tiers, and reads a page it does not hold through from a store it mounts, so it
//! caches what it owns on the ring (see [`PageServer`]).

use bytes::Bytes;

use super::Vfs;
use crate::error::FsError;
use crate::page_cache::Outgoing;
use crate::peer::server::PeerHost;
use crate::peer::wire::Get;

#[async_trait::async_trait]
impl PeerHost for Vfs {
    async fn page(&self, get: Get) -> Result<Option<Outgoing>, FsError> {
        let store = self.mount_table().store_for(&get.store, &get.key);
        self.page_server.page(get, store).await
    }

    async fn offer(&self, get: Get, page: Bytes) -> Result<bool, FsError> {
        let store = self.mount_table().store_for(&get.store, &get.key);
        self.page_server.offer(get, page, store).await
    }

    async fn load(&self, get: Get) -> Result<Option<bool>, FsError> {
        let store = self.mount_table().store_for(&get.store, &get.key);
        self.page_server.load(get, store).await
    }

    async fn free(&self, get: Get) -> Result<u64, FsError> {
        self.page_server.free(get).await
    }
}
