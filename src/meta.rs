//! The metadata client: how the vfs reaches the namespace.
//!
//! `MetaClient` is remote-shaped: every call takes and returns owned values, so the
//! embedded implementation (`embedded`, a namespace in this process) and a future RPC
//! client are interchangeable.

use async_trait::async_trait;

use alluxio_metaserver::{Lookup, MetaError, NewNode, SetAttr, UfsChild, XattrMode};

use crate::types::{DirEntry, InodeNo, InodeRecord, Ownership};

pub mod embedded;

/// Namespace operations used by the vfs. Semantics are those of
/// `alluxio_metaserver::Namespace`.
#[async_trait]
pub trait MetaClient: Send + Sync + 'static {
    /// Attributes of an inode.
    async fn get(&self, ino: InodeNo) -> Result<InodeRecord, MetaError>;
    /// Resolve a name.
    async fn lookup(&self, parent: InodeNo, name: Vec<u8>) -> Result<Lookup, MetaError>;
    /// Whether `dir` must be loaded from the UFS first.
    async fn needs_load(&self, dir: InodeNo) -> Result<bool, MetaError>;
    /// Reconcile `dir` with a UFS listing.
    async fn load_dir(
        &self,
        dir: InodeNo,
        listing: Vec<UfsChild>,
        defaults: Ownership,
    ) -> Result<(), MetaError>;
    /// List a loaded directory.
    async fn list(&self, dir: InodeNo) -> Result<Vec<DirEntry>, MetaError>;
    /// Create a node.
    async fn create(
        &self,
        parent: InodeNo,
        name: Vec<u8>,
        node: NewNode,
    ) -> Result<InodeRecord, MetaError>;
    /// Add a hard link.
    async fn link(
        &self,
        ino: InodeNo,
        newparent: InodeNo,
        newname: Vec<u8>,
    ) -> Result<InodeRecord, MetaError>;
    /// Remove a non-directory name; `keep_open` keeps an inode without names as an orphan.
    async fn unlink(
        &self,
        parent: InodeNo,
        name: Vec<u8>,
        keep_open: bool,
    ) -> Result<InodeRecord, MetaError>;
    /// Drop an orphan after its last close.
    async fn remove_orphan(&self, ino: InodeNo) -> Result<(), MetaError>;
    /// Remove an empty directory.
    async fn rmdir(&self, parent: InodeNo, name: Vec<u8>) -> Result<InodeRecord, MetaError>;
    /// Rename, returning the replaced record as it is afterwards.
    #[allow(clippy::too_many_arguments)]
    async fn rename(
        &self,
        parent: InodeNo,
        name: Vec<u8>,
        newparent: InodeNo,
        newname: Vec<u8>,
        noreplace: bool,
        keep_open: bool,
    ) -> Result<Option<InodeRecord>, MetaError>;
    /// Exchange two existing names (RENAME_EXCHANGE).
    async fn exchange(
        &self,
        parent: InodeNo,
        name: Vec<u8>,
        newparent: InodeNo,
        newname: Vec<u8>,
    ) -> Result<(), MetaError>;
    /// Change attributes.
    async fn set_attr(&self, ino: InodeNo, attr: SetAttr) -> Result<InodeRecord, MetaError>;
    /// Path components from the root.
    async fn path(&self, ino: InodeNo) -> Result<Vec<Vec<u8>>, MetaError>;
    /// One extended attribute.
    async fn get_xattr(&self, ino: InodeNo, name: Vec<u8>) -> Result<Vec<u8>, MetaError>;
    /// Set an extended attribute.
    async fn set_xattr(
        &self,
        ino: InodeNo,
        name: Vec<u8>,
        value: Vec<u8>,
        mode: XattrMode,
    ) -> Result<(), MetaError>;
    /// Extended attribute names.
    async fn list_xattr(&self, ino: InodeNo) -> Result<Vec<Vec<u8>>, MetaError>;
    /// Remove an extended attribute.
    async fn remove_xattr(&self, ino: InodeNo, name: Vec<u8>) -> Result<(), MetaError>;
    /// Inodes allocated so far.
    async fn inodes_allocated(&self) -> Result<u64, MetaError>;
    /// Makes every acknowledged change durable (fsync, fsyncdir, unmount).
    async fn sync(&self) -> Result<(), MetaError>;
}
