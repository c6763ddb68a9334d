//! alluxio namespace service.
//!
//! Owns the POSIX namespace: inodes, dentries and attributes. All namespace semantics
//! (resolution, create, rename, unlink, rmdir's emptiness rule, directory loading from UFS
//! listings) live in [`namespace`], a deterministic state machine over a [`NamespaceStore`].
//! Storage engines live in [`store`]: redb for the embedded default, memory for tests.
//!
//! This crate knows nothing about object stores or FUSE: callers hand it UFS listings as
//! plain data ([`UfsChild`]) and receive owned records back, so the same API can be served
//! over RPC without shared references into the store.

pub mod error;
pub mod fsck;
pub mod namespace;
pub mod ops;
pub mod recent;
pub mod record;
pub mod rpc;
pub mod store;
pub mod version;

pub use error::MetaError;
pub use namespace::{
    ClusterMember, Lookup, Membership, MountEntry, Namespace, NewNode, SetAttr, Ttl, TtlAction,
    UfsChild, XattrMode, is_mount_point, is_primary,
};
pub use record::{DirEntry, FileKind, InodeNo, InodeRecord, Ownership, ROOT_INO};
pub use store::{NamespaceStore, memory::MemoryStore, redb::RedbStore};
pub use version::{MOUNT_PREFIX, ObjectVersion, PENDING_PREFIX, digest};
