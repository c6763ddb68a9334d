//! The embedded metadata client: the namespace in this process, on a redb file (or in
//! memory for tests). Every call runs on the blocking pool, since redb transactions do
//! synchronous I/O and must not stall runtime threads.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::runtime::Handle;

use alluxio_metaserver::{Lookup, MetaError, Namespace, NamespaceStore, SetAttr, UfsChild};

use super::MetaClient;
use crate::types::{DirEntry, FileKind, InodeNo, InodeRecord, Ownership, now_ns};

/// A namespace served in-process.
pub struct EmbeddedMeta<S> {
    ns: Arc<Namespace<S>>,
    rt: Handle,
}

impl<S: NamespaceStore> EmbeddedMeta<S> {
    /// Wraps an opened namespace; blocking work is spawned on `rt`.
    pub fn new(ns: Namespace<S>, rt: Handle) -> Self {
        Self {
            ns: Arc::new(ns),
            rt,
        }
    }

    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Namespace<S>) -> Result<R, MetaError> + Send + 'static,
    ) -> Result<R, MetaError> {
        let ns = self.ns.clone();
        self.rt
            .spawn_blocking(move || f(&ns))
            .await
            .map_err(|e| MetaError::Storage(format!("namespace task failed: {e}")))?
    }
}

#[async_trait]
impl<S: NamespaceStore> MetaClient for EmbeddedMeta<S> {
    async fn get(&self, ino: InodeNo) -> Result<InodeRecord, MetaError> {
        self.run(move |ns| ns.get(ino)).await
    }
    async fn lookup(&self, parent: InodeNo, name: Vec<u8>) -> Result<Lookup, MetaError> {
        self.run(move |ns| ns.lookup(parent, &name)).await
    }
    async fn needs_load(&self, dir: InodeNo) -> Result<bool, MetaError> {
        self.run(move |ns| ns.needs_load(dir)).await
    }
    async fn load_dir(
        &self,
        dir: InodeNo,
        listing: Vec<UfsChild>,
        defaults: Ownership,
    ) -> Result<(), MetaError> {
        self.run(move |ns| ns.load_dir(dir, listing, defaults, now_ns()))
            .await
    }
    async fn list(&self, dir: InodeNo) -> Result<Vec<DirEntry>, MetaError> {
        self.run(move |ns| ns.list(dir)).await
    }
    async fn create(
        &self,
        parent: InodeNo,
        name: Vec<u8>,
        kind: FileKind,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<InodeRecord, MetaError> {
        self.run(move |ns| ns.create(parent, &name, kind, mode, uid, gid, now_ns()))
            .await
    }
    async fn unlink(&self, parent: InodeNo, name: Vec<u8>) -> Result<InodeRecord, MetaError> {
        self.run(move |ns| ns.unlink(parent, &name, now_ns())).await
    }
    async fn rmdir(&self, parent: InodeNo, name: Vec<u8>) -> Result<InodeRecord, MetaError> {
        self.run(move |ns| ns.rmdir(parent, &name, now_ns())).await
    }
    async fn rename(
        &self,
        parent: InodeNo,
        name: Vec<u8>,
        newparent: InodeNo,
        newname: Vec<u8>,
        noreplace: bool,
    ) -> Result<Option<InodeRecord>, MetaError> {
        self.run(move |ns| ns.rename(parent, &name, newparent, &newname, noreplace, now_ns()))
            .await
    }
    async fn set_attr(&self, ino: InodeNo, attr: SetAttr) -> Result<InodeRecord, MetaError> {
        self.run(move |ns| ns.set_attr(ino, attr)).await
    }
    async fn path(&self, ino: InodeNo) -> Result<Vec<Vec<u8>>, MetaError> {
        self.run(move |ns| ns.path(ino)).await
    }
    async fn inodes_allocated(&self) -> Result<u64, MetaError> {
        self.run(|ns| ns.inodes_allocated()).await
    }
}
