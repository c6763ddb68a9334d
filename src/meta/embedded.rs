//! The embedded metadata client: the namespace in this process, on a redb file (or in
//! memory for tests).
//!
//! Point operations (lookups, creates, attribute changes) run inline on the calling
//! thread: a redb transaction that is not fsynced costs microseconds, less than the hop to
//! the blocking pool and back that used to dominate a create. They are called mostly from
//! FUSE session threads; on a runtime worker they block it for that long at most. Calls
//! that can take long, listing reconciliation, readdir of a whole directory and the
//! durable `sync`, still run on the blocking pool.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::runtime::Handle;

use alluxio_metaserver::{
    Lookup, MetaError, Namespace, NamespaceStore, NewNode, SetAttr, UfsChild, XattrMode,
};

use super::MetaClient;
use crate::types::{DirEntry, InodeNo, InodeRecord, Ownership, now_ns};

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

    /// Runs a point operation here and now (see the module comment).
    fn now<R>(
        &self,
        f: impl FnOnce(&Namespace<S>) -> Result<R, MetaError>,
    ) -> Result<R, MetaError> {
        f(&self.ns)
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
        self.now(move |ns| ns.get(ino))
    }
    async fn lookup(&self, parent: InodeNo, name: Vec<u8>) -> Result<Lookup, MetaError> {
        self.now(move |ns| ns.lookup(parent, &name))
    }
    async fn needs_load(&self, dir: InodeNo) -> Result<bool, MetaError> {
        self.now(move |ns| ns.needs_load(dir))
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
        node: NewNode,
    ) -> Result<InodeRecord, MetaError> {
        self.now(move |ns| ns.create(parent, &name, node, now_ns()))
    }
    async fn link(
        &self,
        ino: InodeNo,
        newparent: InodeNo,
        newname: Vec<u8>,
    ) -> Result<InodeRecord, MetaError> {
        self.now(move |ns| ns.link(ino, newparent, &newname, now_ns()))
    }
    async fn unlink(
        &self,
        parent: InodeNo,
        name: Vec<u8>,
        keep_open: bool,
    ) -> Result<InodeRecord, MetaError> {
        self.now(move |ns| ns.unlink(parent, &name, keep_open, now_ns()))
    }
    async fn remove_orphan(&self, ino: InodeNo) -> Result<(), MetaError> {
        self.now(move |ns| ns.remove_orphan(ino))
    }
    async fn rmdir(&self, parent: InodeNo, name: Vec<u8>) -> Result<InodeRecord, MetaError> {
        self.now(move |ns| ns.rmdir(parent, &name, now_ns()))
    }
    async fn rename(
        &self,
        parent: InodeNo,
        name: Vec<u8>,
        newparent: InodeNo,
        newname: Vec<u8>,
        noreplace: bool,
        keep_open: bool,
    ) -> Result<Option<InodeRecord>, MetaError> {
        self.now(move |ns| {
            ns.rename(
                parent,
                &name,
                newparent,
                &newname,
                noreplace,
                keep_open,
                now_ns(),
            )
        })
    }
    async fn exchange(
        &self,
        parent: InodeNo,
        name: Vec<u8>,
        newparent: InodeNo,
        newname: Vec<u8>,
    ) -> Result<(), MetaError> {
        self.now(move |ns| ns.exchange(parent, &name, newparent, &newname, now_ns()))
    }
    async fn set_attr(&self, ino: InodeNo, attr: SetAttr) -> Result<InodeRecord, MetaError> {
        self.now(move |ns| ns.set_attr(ino, attr))
    }
    async fn path(&self, ino: InodeNo) -> Result<Vec<Vec<u8>>, MetaError> {
        self.now(move |ns| ns.path(ino))
    }
    async fn get_xattr(&self, ino: InodeNo, name: Vec<u8>) -> Result<Vec<u8>, MetaError> {
        self.now(move |ns| ns.get_xattr(ino, &name))
    }
    async fn set_xattr(
        &self,
        ino: InodeNo,
        name: Vec<u8>,
        value: Vec<u8>,
        mode: XattrMode,
    ) -> Result<(), MetaError> {
        self.now(move |ns| ns.set_xattr(ino, &name, &value, mode, now_ns()))
    }
    async fn list_xattr(&self, ino: InodeNo) -> Result<Vec<Vec<u8>>, MetaError> {
        self.now(move |ns| ns.list_xattr(ino))
    }
    async fn remove_xattr(&self, ino: InodeNo, name: Vec<u8>) -> Result<(), MetaError> {
        self.now(move |ns| ns.remove_xattr(ino, &name, now_ns()))
    }
    async fn inodes_allocated(&self) -> Result<u64, MetaError> {
        self.now(|ns| ns.inodes_allocated())
    }

    async fn sync(&self) -> Result<(), MetaError> {
        self.run(|ns| ns.sync()).await
    }
}
