//! Storage engines behind the namespace.
//!
//! A store offers transactions over three maps: inodes (`ino → record`), dentries
//! (`(parent, name) → child`, ordered by name within a parent) and named counters.
//! Invariant: a `write` closure that returns `Err` leaves the store unchanged; one that
//! returns `Ok` is committed atomically before `write` returns, and durably once `sync`
//! returns (a store may also make it durable sooner; redb does within a second). A crash
//! loses at most the changes since the last durable commit, never part of a transaction.

use crate::error::MetaError;
use crate::record::{InodeNo, InodeRecord};

pub mod memory;
pub mod redb;
mod redo;

/// Read access inside a transaction.
pub trait StoreRead {
    /// The inode record, if present.
    fn inode(&self, ino: InodeNo) -> Result<Option<InodeRecord>, MetaError>;
    /// The child inode of `parent` named `name`, if present.
    fn dentry(&self, parent: InodeNo, name: &[u8]) -> Result<Option<InodeNo>, MetaError>;
    /// All children of `parent`, ordered by name.
    fn children(&self, parent: InodeNo) -> Result<Vec<(Vec<u8>, InodeNo)>, MetaError>;
    /// Whether `parent` has at least one child.
    fn has_children(&self, parent: InodeNo) -> Result<bool, MetaError>;
    /// A named counter (0 when never set).
    fn counter(&self, key: &str) -> Result<u64, MetaError>;
    /// Every counter whose name starts with `prefix`.
    fn counters_with_prefix(&self, prefix: &str) -> Result<Vec<(String, u64)>, MetaError>;
    /// One extended attribute.
    fn xattr(&self, ino: InodeNo, name: &[u8]) -> Result<Option<Vec<u8>>, MetaError>;
    /// All extended attribute names of an inode, ordered.
    fn xattr_names(&self, ino: InodeNo) -> Result<Vec<Vec<u8>>, MetaError>;
    /// Every inode record, by number (a whole scan, for `fsck`).
    fn all_inodes(&self) -> Result<Vec<InodeRecord>, MetaError>;
    /// Every directory entry as (parent, name, child), ordered (a whole scan, for `fsck`).
    fn all_dentries(&self) -> Result<Vec<(InodeNo, Vec<u8>, InodeNo)>, MetaError>;
}

/// Write access inside a transaction.
pub trait StoreWrite: StoreRead {
    /// Insert or replace an inode record.
    fn put_inode(&mut self, rec: &InodeRecord) -> Result<(), MetaError>;
    /// Remove an inode record.
    fn remove_inode(&mut self, ino: InodeNo) -> Result<(), MetaError>;
    /// Insert or replace a dentry.
    fn put_dentry(&mut self, parent: InodeNo, name: &[u8], child: InodeNo)
    -> Result<(), MetaError>;
    /// Remove a dentry.
    fn remove_dentry(&mut self, parent: InodeNo, name: &[u8]) -> Result<(), MetaError>;
    /// Set a named counter.
    fn set_counter(&mut self, key: &str, value: u64) -> Result<(), MetaError>;
    /// Remove a named counter.
    fn remove_counter(&mut self, key: &str) -> Result<(), MetaError>;
    /// Insert or replace an extended attribute.
    fn put_xattr(&mut self, ino: InodeNo, name: &[u8], value: &[u8]) -> Result<(), MetaError>;
    /// Remove an extended attribute.
    fn remove_xattr(&mut self, ino: InodeNo, name: &[u8]) -> Result<(), MetaError>;
}

/// A transactional store for the namespace.
pub trait NamespaceStore: Send + Sync + 'static {
    /// Run `f` in a read transaction (a consistent snapshot).
    fn read<R>(
        &self,
        f: impl FnOnce(&dyn StoreRead) -> Result<R, MetaError>,
    ) -> Result<R, MetaError>;
    /// Run `f` in a write transaction; commit if it returns `Ok`, abort otherwise.
    fn write<R>(
        &self,
        f: impl FnOnce(&mut dyn StoreWrite) -> Result<R, MetaError>,
    ) -> Result<R, MetaError>;
    /// Make every committed transaction durable (fsync, fsyncdir, syncfs, unmount).
    fn sync(&self) -> Result<(), MetaError>;
}

/// A shared store: a namespace over it while something else (`fsck`, a test) holds it too.
impl<S: NamespaceStore> NamespaceStore for std::sync::Arc<S> {
    fn read<R>(
        &self,
        f: impl FnOnce(&dyn StoreRead) -> Result<R, MetaError>,
    ) -> Result<R, MetaError> {
        (**self).read(f)
    }
    fn write<R>(
        &self,
        f: impl FnOnce(&mut dyn StoreWrite) -> Result<R, MetaError>,
    ) -> Result<R, MetaError> {
        (**self).write(f)
    }
    fn sync(&self) -> Result<(), MetaError> {
        (**self).sync()
    }
}
