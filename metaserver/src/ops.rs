//! Every namespace operation, written once: its client method, its wire variant, its
//! arguments, what it answers, and how the namespace carries it out. The wire's
//! `rpc::Op`, `Op::name` and `rpc::dispatch`, and the alluxio crate's
//! `MetaClient` trait with its one implementation over any `RunOp` (embedded or remote),
//! are all expanded from this table, so they cannot drift apart: adding an operation is
//! one entry here and its `Namespace` method.
//!
//! An entry reads
//!
//! ```text
//! /// docs
//! method Variant { field: Type, ... } -> Answer = |ns, now| body;
//! ```
//!
//! A variant without fields is written without braces (the wire form of a unit variant).
//! `body` runs on the server (or in process) with `ns: &Namespace<_>` and `now` (the
//! server's clock, ns), the fields bound by name, and returns `Result<Answer, MetaError>`.
//! Each answer type travels as its one [`Value`] variant ([`OpValue`]).

use serde::{Deserialize, Serialize};

use crate::error::MetaError;
use crate::namespace::{Lookup, Membership, MountEntry, Ttl};
use crate::record::{DirEntry, InodeRecord};

/// Calls `$m!` with the table of operations (see the module comment).
#[macro_export]
macro_rules! namespace_ops {
    ($m:ident) => {
        $m! {
            /// Attributes of an inode.
            get Get { ino: InodeNo } -> InodeRecord = |ns, _now| ns.get(ino);
            /// Resolve a name.
            lookup Lookup { parent: InodeNo, name: Vec<u8> } -> Lookup =
                |ns, _now| ns.lookup(parent, &name);
            /// Whether `dir` must be loaded from the UFS first.
            needs_load NeedsLoad { dir: InodeNo } -> bool = |ns, _now| ns.needs_load(dir);
            /// A token for a UFS listing about to be taken: the reconcile leaves alone what
            /// the namespace changed after it (see `alluxio_metaserver::recent`).
            begin_listing BeginListing -> u64 = |ns, _now| Ok(ns.begin_listing());
            /// The listing that began with `token` will not be applied.
            end_listing EndListing { token: u64 } -> () = |ns, _now| {
                ns.end_listing(token);
                Ok(())
            };
            /// Reconcile `dir` with a UFS listing taken since `token`.
            load_dir LoadDir {
                dir: InodeNo,
                listing: Vec<UfsChild>,
                defaults: Ownership,
                #[serde(default)]
                token: Option<u64>,
            } -> () = |ns, now| ns.apply_listing(dir, listing, defaults, now, token, false);
            /// Reconcile a loaded `dir` with a fresh UFS listing taken since `token`
            /// (metadata sync).
            resync_dir ResyncDir {
                dir: InodeNo,
                listing: Vec<UfsChild>,
                defaults: Ownership,
                #[serde(default)]
                token: Option<u64>,
            } -> () = |ns, now| ns.apply_listing(dir, listing, defaults, now, token, true);
            /// Add a file a HEAD found to a directory not listed yet (a lookup that does
            /// not wait for the listing).
            adopt_child AdoptChild { dir: InodeNo, child: UfsChild, defaults: Ownership } -> Lookup =
                |ns, _now| ns.adopt_child(dir, child, defaults);
            /// List a loaded directory.
            list List { dir: InodeNo } -> Vec<DirEntry> = |ns, _now| ns.list(dir);
            /// Create a node.
            create Create { parent: InodeNo, name: Vec<u8>, node: NewNode } -> InodeRecord =
                |ns, now| ns.create(parent, &name, node, now);
            /// Add a hard link.
            link Link { ino: InodeNo, newparent: InodeNo, newname: Vec<u8> } -> InodeRecord =
                |ns, now| ns.link(ino, newparent, &newname, now);
            /// Remove a non-directory name; `keep_open` keeps an inode without names as an
            /// orphan.
            unlink Unlink { parent: InodeNo, name: Vec<u8>, keep_open: bool } -> InodeRecord =
                |ns, now| ns.unlink(parent, &name, keep_open, now);
            /// Drop an orphan after its last close.
            remove_orphan RemoveOrphan { ino: InodeNo } -> () = |ns, _now| ns.remove_orphan(ino);
            /// Remove an empty directory.
            rmdir Rmdir { parent: InodeNo, name: Vec<u8> } -> InodeRecord =
                |ns, now| ns.rmdir(parent, &name, now);
            /// Rename, returning the replaced record as it is afterwards.
            rename Rename {
                parent: InodeNo,
                name: Vec<u8>,
                newparent: InodeNo,
                newname: Vec<u8>,
                noreplace: bool,
                keep_open: bool,
            } -> Option<InodeRecord> = |ns, now| {
                ns.rename(parent, &name, newparent, &newname, noreplace, keep_open, now)
            };
            /// Finish a rename a crash cut after its store step (see
            /// `Namespace::finish_rename`).
            finish_rename FinishRename {
                parent: InodeNo,
                name: Vec<u8>,
                newparent: InodeNo,
                newname: Vec<u8>,
            } -> Option<InodeRecord> = |ns, now| {
                ns.finish_rename(parent, &name, newparent, &newname, now)
            };
            /// Exchange two existing names (RENAME_EXCHANGE).
            exchange Exchange {
                parent: InodeNo,
                name: Vec<u8>,
                newparent: InodeNo,
                newname: Vec<u8>,
            } -> () = |ns, now| ns.exchange(parent, &name, newparent, &newname, now);
            /// Change attributes.
            set_attr SetAttr { ino: InodeNo, attr: SetAttr } -> InodeRecord =
                |ns, _now| ns.set_attr(ino, attr);
            /// Path components from the root.
            path Path { ino: InodeNo } -> Vec<Vec<u8>> = |ns, _now| ns.path(ino);
            /// One extended attribute.
            get_xattr GetXattr { ino: InodeNo, name: Vec<u8> } -> Vec<u8> =
                |ns, _now| ns.get_xattr(ino, &name);
            /// Set an extended attribute.
            set_xattr SetXattr {
                ino: InodeNo,
                name: Vec<u8>,
                value: Vec<u8>,
                mode: XattrMode,
            } -> () = |ns, now| ns.set_xattr(ino, &name, &value, mode, now);
            /// Extended attribute names.
            list_xattr ListXattr { ino: InodeNo } -> Vec<Vec<u8>> =
                |ns, _now| ns.list_xattr(ino);
            /// Remove an extended attribute.
            remove_xattr RemoveXattr { ino: InodeNo, name: Vec<u8> } -> () =
                |ns, now| ns.remove_xattr(ino, &name, now);
            /// Inodes allocated so far.
            inodes_allocated InodesAllocated -> u64 = |ns, _now| ns.inodes_allocated();
            /// Makes every acknowledged change durable (fsync, fsyncdir, unmount).
            sync Sync -> () = |ns, _now| ns.sync();
            /// The mount table.
            mounts Mounts -> Vec<MountEntry> = |ns, _now| ns.mounts();
            /// Add a mount point.
            add_mount AddMount { entry: MountEntry } -> () = |ns, now| ns.add_mount(entry, now);
            /// Remove a mount point.
            remove_mount RemoveMount { path: String } -> () =
                |ns, now| ns.remove_mount(&path, now);
            /// Pinned paths.
            pins Pins -> Vec<String> = |ns, _now| ns.pins();
            /// Pin or unpin an absolute path.
            set_pin SetPin { path: String, pinned: bool } -> () =
                |ns, _now| ns.set_pin(&path, pinned);
            /// The TTL table.
            ttls Ttls -> Vec<(String, Ttl)> = |ns, _now| ns.ttls();
            /// Set (to expire `after_ms` from now by the server's clock) or clear a
            /// path's TTL.
            set_ttl SetTtl { path: String, after_ms: Option<u64>, action: TtlAction } -> () =
                |ns, now| ns.set_ttl(&path, $crate::ops::ttl_after(now, after_ms, action));
            /// Claim an expired TTL (see `Namespace::take_ttl`).
            take_ttl TakeTtl { path: String, ttl: Ttl } -> bool =
                |ns, _now| ns.take_ttl(&path, ttl);
            /// Register a cluster member, or renew its lease, for `lease_ms` by the
            /// server's clock; answers the membership's version.
            register_member RegisterMember { member: ClusterMember, lease_ms: u64 } -> u64 =
                |ns, now| ns.register_member(member, lease_ms, now);
            /// Remove a cluster member now (a clean shutdown).
            leave_member LeaveMember { addr: String } -> () = |ns, _now| ns.leave_member(&addr);
            /// The cluster members whose lease has not expired.
            members Members -> Membership = |ns, now| ns.members(now);
            /// Check the namespace against itself (`alluxio fsck`); with `repair`, fix
            /// what loses nothing.
            fsck Fsck { repair: bool } -> $crate::fsck::Report = |ns, _now| ns.fsck(repair);
        }
    };
}

/// The TTL that expires `after_ms` after `now_ns` (`None`: no TTL).
pub fn ttl_after(
    now_ns: i64,
    after_ms: Option<u64>,
    action: crate::namespace::TtlAction,
) -> Option<Ttl> {
    after_ms.map(|ms| Ttl {
        expires_ns: now_ns.saturating_add(
            i64::try_from(ms)
                .unwrap_or(i64::MAX / 1_000_000)
                .saturating_mul(1_000_000),
        ),
        action,
    })
}

/// The value of a successful operation.
#[derive(Debug, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum Value {
    Unit,
    Bool(bool),
    Count(u64),
    Record(InodeRecord),
    MaybeRecord(Option<InodeRecord>),
    Lookup(Lookup),
    Entries(Vec<DirEntry>),
    Names(Vec<Vec<u8>>),
    Bytes(Vec<u8>),
    Mounts(Vec<MountEntry>),
    Paths(Vec<String>),
    Ttls(Vec<(String, Ttl)>),
    Membership(Membership),
    Fsck(crate::fsck::Report),
}

/// An operation's answer and the one [`Value`] variant that carries it.
pub trait OpValue: Sized {
    /// The answer as it travels.
    fn into_value(self) -> Value;
    /// The answer back from its value; any other variant is a server that does not
    /// speak this table (an error, never a guess).
    fn from_value(v: Value) -> Result<Self, MetaError>;
}

fn unexpected(v: Value) -> MetaError {
    MetaError::Storage(format!(
        "metaserver answered with an unexpected value: {v:?}"
    ))
}

macro_rules! op_values {
    ($($t:ty => $var:ident),* $(,)?) => {
        $(impl OpValue for $t {
            fn into_value(self) -> Value {
                Value::$var(self)
            }
            fn from_value(v: Value) -> Result<Self, MetaError> {
                match v {
                    Value::$var(x) => Ok(x),
                    other => Err(unexpected(other)),
                }
            }
        })*
    };
}

op_values! {
    bool => Bool,
    u64 => Count,
    InodeRecord => Record,
    Option<InodeRecord> => MaybeRecord,
    Lookup => Lookup,
    Vec<DirEntry> => Entries,
    Vec<Vec<u8>> => Names,
    Vec<u8> => Bytes,
    Vec<MountEntry> => Mounts,
    Vec<String> => Paths,
    Vec<(String, Ttl)> => Ttls,
    Membership => Membership,
    crate::fsck::Report => Fsck,
}

impl OpValue for () {
    fn into_value(self) -> Value {
        Value::Unit
    }
    fn from_value(v: Value) -> Result<Self, MetaError> {
        match v {
            Value::Unit => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}
