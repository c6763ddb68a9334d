//! The metadata client: how the vfs reaches the namespace.
//!
//! `MetaClient` is remote-shaped: every call takes and returns owned values. Each call is
//! one `rpc::Op`, run by a [`RunOp`]: the embedded client (`embedded`, a namespace in this
//! process) or the metaserver client (`remote`), so both behave alike by construction.

use async_trait::async_trait;

use alluxio_metaserver::rpc::{Op, Value};
use alluxio_metaserver::{
    Lookup, MetaError, MountEntry, NewNode, SetAttr, Ttl, TtlAction, UfsChild, XattrMode,
};

use crate::types::{DirEntry, InodeNo, InodeRecord, Ownership};

pub mod embedded;
pub mod remote;

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
    /// A token for a UFS listing about to be taken: the reconcile leaves alone what the
    /// namespace changed after it (see `alluxio_metaserver::recent`).
    async fn begin_listing(&self) -> Result<u64, MetaError>;
    /// The listing that began with `token` will not be applied.
    async fn end_listing(&self, token: u64) -> Result<(), MetaError>;
    /// Reconcile `dir` with a UFS listing taken since `token`.
    async fn load_dir(
        &self,
        dir: InodeNo,
        listing: Vec<UfsChild>,
        defaults: Ownership,
        token: u64,
    ) -> Result<(), MetaError>;
    /// Reconcile a loaded `dir` with a fresh UFS listing taken since `token` (metadata
    /// sync).
    async fn resync_dir(
        &self,
        dir: InodeNo,
        listing: Vec<UfsChild>,
        defaults: Ownership,
        token: u64,
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
    /// The mount table.
    async fn mounts(&self) -> Result<Vec<MountEntry>, MetaError>;
    /// Pinned paths.
    async fn pins(&self) -> Result<Vec<String>, MetaError>;
    /// Pin or unpin an absolute path.
    async fn set_pin(&self, path: String, pinned: bool) -> Result<(), MetaError>;
    /// The TTL table.
    async fn ttls(&self) -> Result<Vec<(String, Ttl)>, MetaError>;
    /// Set (`after_ms` from now) or clear a path's TTL.
    async fn set_ttl(
        &self,
        path: String,
        after_ms: Option<u64>,
        action: TtlAction,
    ) -> Result<(), MetaError>;
    /// Claim an expired TTL (see `Namespace::take_ttl`).
    async fn take_ttl(&self, path: String, ttl: Ttl) -> Result<bool, MetaError>;
}

/// How a client runs one namespace operation: in process ([`embedded`]) or over the wire
/// ([`remote`]). Every [`MetaClient`] call is one [`Op`], so both clients share one
/// mapping (below) and the wire carries exactly what the embedded client runs.
#[async_trait]
pub trait RunOp: Send + Sync + 'static {
    /// Runs `op` against the namespace.
    async fn run(&self, op: Op) -> Result<Value, MetaError>;
}

fn unexpected(v: Value) -> MetaError {
    MetaError::Storage(format!(
        "metaserver answered with an unexpected value: {v:?}"
    ))
}

macro_rules! expect {
    ($v:expr, $pat:ident) => {
        match $v {
            Value::$pat(x) => Ok(x),
            other => Err(unexpected(other)),
        }
    };
    ($v:expr) => {
        match $v {
            Value::Unit => Ok(()),
            other => Err(unexpected(other)),
        }
    };
}

#[async_trait]
impl<T: RunOp> MetaClient for T {
    async fn get(&self, ino: InodeNo) -> Result<InodeRecord, MetaError> {
        expect!(self.run(Op::Get { ino }).await?, Record)
    }
    async fn lookup(&self, parent: InodeNo, name: Vec<u8>) -> Result<Lookup, MetaError> {
        expect!(self.run(Op::Lookup { parent, name }).await?, Lookup)
    }
    async fn needs_load(&self, dir: InodeNo) -> Result<bool, MetaError> {
        expect!(self.run(Op::NeedsLoad { dir }).await?, Bool)
    }
    async fn begin_listing(&self) -> Result<u64, MetaError> {
        expect!(self.run(Op::BeginListing).await?, Count)
    }
    async fn end_listing(&self, token: u64) -> Result<(), MetaError> {
        expect!(self.run(Op::EndListing { token }).await?)
    }
    async fn load_dir(
        &self,
        dir: InodeNo,
        listing: Vec<UfsChild>,
        defaults: Ownership,
        token: u64,
    ) -> Result<(), MetaError> {
        let op = Op::LoadDir {
            dir,
            listing,
            defaults,
            token: Some(token),
        };
        expect!(self.run(op).await?)
    }
    async fn resync_dir(
        &self,
        dir: InodeNo,
        listing: Vec<UfsChild>,
        defaults: Ownership,
        token: u64,
    ) -> Result<(), MetaError> {
        let op = Op::ResyncDir {
            dir,
            listing,
            defaults,
            token: Some(token),
        };
        expect!(self.run(op).await?)
    }
    async fn list(&self, dir: InodeNo) -> Result<Vec<DirEntry>, MetaError> {
        expect!(self.run(Op::List { dir }).await?, Entries)
    }
    async fn create(
        &self,
        parent: InodeNo,
        name: Vec<u8>,
        node: NewNode,
    ) -> Result<InodeRecord, MetaError> {
        expect!(self.run(Op::Create { parent, name, node }).await?, Record)
    }
    async fn link(
        &self,
        ino: InodeNo,
        newparent: InodeNo,
        newname: Vec<u8>,
    ) -> Result<InodeRecord, MetaError> {
        let op = Op::Link {
            ino,
            newparent,
            newname,
        };
        expect!(self.run(op).await?, Record)
    }
    async fn unlink(
        &self,
        parent: InodeNo,
        name: Vec<u8>,
        keep_open: bool,
    ) -> Result<InodeRecord, MetaError> {
        let op = Op::Unlink {
            parent,
            name,
            keep_open,
        };
        expect!(self.run(op).await?, Record)
    }
    async fn remove_orphan(&self, ino: InodeNo) -> Result<(), MetaError> {
        expect!(self.run(Op::RemoveOrphan { ino }).await?)
    }
    async fn rmdir(&self, parent: InodeNo, name: Vec<u8>) -> Result<InodeRecord, MetaError> {
        expect!(self.run(Op::Rmdir { parent, name }).await?, Record)
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
        let op = Op::Rename {
            parent,
            name,
            newparent,
            newname,
            noreplace,
            keep_open,
        };
        expect!(self.run(op).await?, MaybeRecord)
    }
    async fn exchange(
        &self,
        parent: InodeNo,
        name: Vec<u8>,
        newparent: InodeNo,
        newname: Vec<u8>,
    ) -> Result<(), MetaError> {
        let op = Op::Exchange {
            parent,
            name,
            newparent,
            newname,
        };
        expect!(self.run(op).await?)
    }
    async fn set_attr(&self, ino: InodeNo, attr: SetAttr) -> Result<InodeRecord, MetaError> {
        expect!(self.run(Op::SetAttr { ino, attr }).await?, Record)
    }
    async fn path(&self, ino: InodeNo) -> Result<Vec<Vec<u8>>, MetaError> {
        expect!(self.run(Op::Path { ino }).await?, Names)
    }
    async fn get_xattr(&self, ino: InodeNo, name: Vec<u8>) -> Result<Vec<u8>, MetaError> {
        expect!(self.run(Op::GetXattr { ino, name }).await?, Bytes)
    }
    async fn set_xattr(
        &self,
        ino: InodeNo,
        name: Vec<u8>,
        value: Vec<u8>,
        mode: XattrMode,
    ) -> Result<(), MetaError> {
        let op = Op::SetXattr {
            ino,
            name,
            value,
            mode,
        };
        expect!(self.run(op).await?)
    }
    async fn list_xattr(&self, ino: InodeNo) -> Result<Vec<Vec<u8>>, MetaError> {
        expect!(self.run(Op::ListXattr { ino }).await?, Names)
    }
    async fn remove_xattr(&self, ino: InodeNo, name: Vec<u8>) -> Result<(), MetaError> {
        expect!(self.run(Op::RemoveXattr { ino, name }).await?)
    }
    async fn inodes_allocated(&self) -> Result<u64, MetaError> {
        expect!(self.run(Op::InodesAllocated).await?, Count)
    }
    async fn sync(&self) -> Result<(), MetaError> {
        expect!(self.run(Op::Sync).await?)
    }
    async fn mounts(&self) -> Result<Vec<MountEntry>, MetaError> {
        expect!(self.run(Op::Mounts).await?, Mounts)
    }
    async fn pins(&self) -> Result<Vec<String>, MetaError> {
        expect!(self.run(Op::Pins).await?, Paths)
    }
    async fn set_pin(&self, path: String, pinned: bool) -> Result<(), MetaError> {
        expect!(self.run(Op::SetPin { path, pinned }).await?)
    }
    async fn ttls(&self) -> Result<Vec<(String, Ttl)>, MetaError> {
        expect!(self.run(Op::Ttls).await?, Ttls)
    }
    async fn set_ttl(
        &self,
        path: String,
        after_ms: Option<u64>,
        action: TtlAction,
    ) -> Result<(), MetaError> {
        let op = Op::SetTtl {
            path,
            after_ms,
            action,
        };
        expect!(self.run(op).await?)
    }
    async fn take_ttl(&self, path: String, ttl: Ttl) -> Result<bool, MetaError> {
        expect!(self.run(Op::TakeTtl { path, ttl }).await?, Bool)
    }
}
