//! The namespace state machine: every POSIX namespace rule lives here.
//!
//! Invariants, each kept by every operation inside one store transaction:
//! - every dentry points at an existing inode, and every inode but the root is reachable
//!   through its primary link (`parent`, `name`);
//! - a directory's `nlink` is 2 plus its number of child directories; any other inode's
//!   is the number of names it has: its primary link (`parent`, `name`) plus `links`;
//! - an inode with no names left but still open is an orphan: `parent` is 0, and a counter
//!   `orphan:<ino>` records it so the next open of the namespace removes it after a crash;
//! - inode numbers come from a persistent counter and are never reused;
//! - a directory's children are authoritative only when its `loaded_epoch` equals the
//!   namespace epoch. The epoch is bumped each time the namespace is opened (each mount), so
//!   a directory is listed from the UFS at most once per mount, and a remount sees changes
//!   other tools made while keeping inode numbers of names that still exist.
//! - mutations that add names (create, rename's target) require the target directory to be
//!   loaded, so a later load can never race with them and drop a new name; and a listing
//!   applied with a token never undoes a change made after the token (`crate::recent`).

use crate::error::MetaError;
use crate::recent::Recent;
use crate::record::{DirEntry, FileKind, InodeNo, InodeRecord, Ownership, ROOT_INO};
use crate::store::{NamespaceStore, StoreRead, StoreWrite};
use crate::version::ObjectVersion;

/// Longest name accepted, in bytes (NAME_MAX).
pub const NAME_MAX: usize = 255;
/// Most names one inode may have (LINK_MAX, as on ext4).
pub const LINK_MAX: u32 = 65_000;
/// Deepest path accepted when deriving a UFS key; deeper means a corrupt parent chain.
const MAX_DEPTH: usize = 4096;
const NEXT_INO: &str = "next_ino";
const EPOCH: &str = "epoch";
pub(crate) const ORPHAN_PREFIX: &str = "orphan:";
/// The parent of an orphan (an inode with no names left).
pub const NO_PARENT: InodeNo = InodeNo(0);
const S_ISGID: u32 = 0o2000;

/// Whether a file's content is in the namespace's view only (no object yet, or an upload
/// still pending), so that a listing without its name must not remove it.
fn local_only(rec: &InodeRecord) -> bool {
    rec.kind == FileKind::File && rec.version.as_deref().is_none_or(is_pending_version)
}

/// Whether a file's bytes are in a client's journal, not in the store: a listing that
/// shows an object at its name must not replace them with the object's.
fn pending(rec: &InodeRecord) -> bool {
    rec.kind == FileKind::File && rec.version.as_deref().is_some_and(is_pending_version)
}

/// A version whose bytes are durable in a client's local journal but not yet in the UFS
/// (ASYNC_THROUGH). A reconcile never replaces or drops such a file.
fn is_pending_version(v: &str) -> bool {
    ObjectVersion::is_pending_text(v)
}

// A mount point's directory has the version `ObjectVersion::Mount`: it is backed by its own
// store (the mount table names it), not by its parent's, so listings of the parent neither
// remove nor shadow it. Directories otherwise have no version.

/// The mount table lives in the extended-attribute map under this inode number, which no
/// node ever has (inode numbers start at the root's, 1): name = mount path, value = the
/// entry as JSON. So it shares the store's transactions without a table of its own.
const MOUNT_TABLE: InodeNo = InodeNo(0);

/// Name prefix of the pin table's entries (beside the mount table's, under inode 0).
const PIN_PREFIX: &str = "pin:";

/// Name prefix of the TTL table's entries.
const TTL_PREFIX: &str = "ttl:";

/// Name prefix of the cluster membership's entries (cache nodes and daemons that serve
/// peers, each with its lease).
const MEMBER_PREFIX: &str = "member:";

/// One host that serves pages to its peers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ClusterMember {
    /// Its peer address (`host:port`), its identity on the ring.
    pub addr: String,
    /// Its weight on the ring (cache capacity in bytes).
    pub weight: u64,
}

/// The members whose lease has not expired, and a version that changes exactly when that
/// set (or a weight) changes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Membership {
    /// A digest of the live members: equal versions, equal memberships.
    pub version: u64,
    /// The live members, by address.
    pub members: Vec<ClusterMember>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct MemberEntry {
    member: ClusterMember,
    expires_ns: i64,
}

/// What happens to a path when its TTL expires (`alluxio fs setTtl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TtlAction {
    /// Drop its cached pages (every daemon, from then on).
    Free,
    /// Delete it, from the namespace and the store (one daemon does it).
    Delete,
}

/// Every membership entry, with its name.
fn member_entries(t: &dyn StoreRead) -> Result<Vec<(Vec<u8>, MemberEntry)>, MetaError> {
    let mut out = Vec::new();
    for n in t.xattr_names(MOUNT_TABLE)? {
        if !n.starts_with(MEMBER_PREFIX.as_bytes()) {
            continue;
        }
        let Some(v) = t.xattr(MOUNT_TABLE, &n)? else {
            continue;
        };
        let e = serde_json::from_slice(&v)
            .map_err(|e| MetaError::Corrupt(format!("member entry: {e}")))?;
        out.push((n, e));
    }
    Ok(out)
}

/// The live members at `now_ns` and their version.
fn membership(t: &dyn StoreRead, now_ns: i64) -> Result<Membership, MetaError> {
    let mut members: Vec<ClusterMember> = member_entries(t)?
        .into_iter()
        .filter(|(_, e)| e.expires_ns > now_ns)
        .map(|(_, e)| e.member)
        .collect();
    members.sort_by(|a, b| a.addr.cmp(&b.addr));
    let weights: Vec<[u8; 8]> = members.iter().map(|m| m.weight.to_le_bytes()).collect();
    let mut parts: Vec<&[u8]> = Vec::with_capacity(2 * members.len());
    for (m, w) in members.iter().zip(&weights) {
        parts.push(m.addr.as_bytes());
        parts.push(w);
    }
    // The digest the page ids use, so every server computes the same version for a set.
    let h = crate::version::digest(&parts);
    Ok(Membership {
        version: h,
        members,
    })
}

/// A TTL: when it expires and what to do then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ttl {
    /// Expiry, ns since the epoch (the metaserver's clock).
    pub expires_ns: i64,
    /// The action.
    pub action: TtlAction,
}

/// One entry of the mount table: a store mounted at a path of the namespace.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MountEntry {
    /// Absolute, normalized path in the namespace (`/` for the root store).
    pub path: String,
    /// The store's URI (as `alluxio fuse mount --ufs` takes it).
    pub uri: String,
    /// Store options (`-o` keys: endpoint, region, credentials, `ufs.KEY`).
    pub options: std::collections::BTreeMap<String, String>,
    /// Refuse changes under this path (EROFS).
    pub readonly: bool,
    /// Metadata sync policy for this store's directories (`never`, `always` or seconds);
    /// `None` leaves it to each daemon's `-o metadata_sync`.
    #[serde(default)]
    pub sync: Option<String>,
}

impl MountEntry {
    /// The path's components (none for `/`), after checking that it is absolute and
    /// normalized and that each component is a valid name.
    pub fn components(&self) -> Result<Vec<Vec<u8>>, MetaError> {
        path_components(&self.path)
    }
}

/// The components of an absolute, normalized namespace path (none for `/`), each a valid
/// name.
fn path_components(path: &str) -> Result<Vec<Vec<u8>>, MetaError> {
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| MetaError::InvalidArgument(format!("path {path:?} is not absolute")))?;
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    rest.split('/')
        .map(|c| {
            validate_name(c.as_bytes()).map_err(|_| {
                MetaError::InvalidArgument(format!("path {path:?}: bad component {c:?}"))
            })?;
            Ok(c.as_bytes().to_vec())
        })
        .collect()
}

/// Whether `rec` is a mount point's directory.
pub fn is_mount_point(rec: &InodeRecord) -> bool {
    rec.kind == FileKind::Dir
        && rec
            .version
            .as_deref()
            .is_some_and(|v| matches!(ObjectVersion::parse(v), ObjectVersion::Mount(_)))
}

/// A node to create.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewNode {
    /// Its kind.
    pub kind: FileKind,
    /// Permission bits (file-type bits are ignored).
    pub mode: u32,
    /// Owner (the caller).
    pub uid: u32,
    /// Group (the caller's; replaced by the parent's when the parent is setgid).
    pub gid: u32,
    /// Device number, for device nodes.
    pub rdev: u32,
    /// Symlink target, for symlinks.
    pub target: Vec<u8>,
}

/// How `set_xattr` treats an existing attribute (XATTR_CREATE / XATTR_REPLACE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum XattrMode {
    /// Create or replace.
    Any,
    /// Fail with `AlreadyExists` if it exists.
    Create,
    /// Fail with `NoAttribute` if it does not exist.
    Replace,
}

/// One child found in a UFS listing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UfsChild {
    /// Entry name (one path component).
    pub name: Vec<u8>,
    /// File or directory (a common prefix).
    pub kind: FileKind,
    /// Object size (0 for directories).
    pub size: u64,
    /// Object modification time, ns since the epoch (0 when the store has none).
    pub mtime_ns: i64,
    /// Object version (ETag, version id, or size+mtime).
    pub version: Option<String>,
}

/// Result of a lookup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Lookup {
    /// The name exists.
    Found(InodeRecord),
    /// The directory is loaded and has no such name.
    Missing,
    /// The directory must be loaded from the UFS before the answer is known.
    Unloaded,
    /// The name exists as an earlier load (or this client's changes) left it, but the
    /// directory is not loaded in this epoch: the store may have changed it since (an
    /// upload a crash kept from being recorded, another tool), so the caller loads the
    /// directory first, and falls back to this record only when the store cannot be
    /// listed.
    Stale(InodeRecord),
}

/// Attribute changes; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SetAttr {
    /// New size.
    pub size: Option<u64>,
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New access time.
    pub atime_ns: Option<i64>,
    /// New modification time.
    pub mtime_ns: Option<i64>,
    /// New change time (callers pass "now" for every change).
    pub ctime_ns: Option<i64>,
    /// New UFS version (`Some(None)` clears it).
    pub version: Option<Option<String>>,
    /// Apply only if the current version equals this (else `VersionMismatch`).
    pub if_version: Option<Option<String>>,
}

/// The namespace over a store.
pub struct Namespace<S> {
    store: S,
    epoch: u64,
    /// What changed since listings in flight began.
    recent: Recent,
}

/// Checks a name coming from the kernel, the network or a UFS listing.
pub fn validate_name(name: &[u8]) -> Result<(), MetaError> {
    if name.len() > NAME_MAX {
        return Err(MetaError::NameTooLong(name.len()));
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(MetaError::InvalidArgument(format!(
            "invalid name {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

fn get(t: &dyn StoreRead, ino: InodeNo) -> Result<InodeRecord, MetaError> {
    t.inode(ino)?
        .ok_or_else(|| MetaError::NotFound(format!("inode {ino}")))
}

fn get_dir(t: &dyn StoreRead, ino: InodeNo) -> Result<InodeRecord, MetaError> {
    let rec = get(t, ino)?;
    if rec.kind != FileKind::Dir {
        return Err(MetaError::NotADirectory(ino));
    }
    Ok(rec)
}

fn alloc_ino(t: &mut dyn StoreWrite) -> Result<InodeNo, MetaError> {
    let next = t.counter(NEXT_INO)?.max(ROOT_INO.0 + 1);
    t.set_counter(NEXT_INO, next + 1)?;
    Ok(InodeNo(next))
}

/// Removes an inode record and its extended attributes.
fn drop_inode(t: &mut dyn StoreWrite, ino: InodeNo) -> Result<(), MetaError> {
    for name in t.xattr_names(ino)? {
        t.remove_xattr(ino, &name)?;
    }
    t.remove_inode(ino)
}

/// Removes `ino` and, for a directory, everything below it. Inodes below that still have
/// other names elsewhere only lose the name.
fn remove_subtree(t: &mut dyn StoreWrite, ino: InodeNo) -> Result<(), MetaError> {
    let mut stack = vec![ino];
    while let Some(cur) = stack.pop() {
        for (name, child) in t.children(cur)? {
            t.remove_dentry(cur, &name)?;
            let mut rec = get(t, child)?;
            if rec.kind != FileKind::Dir && rec.nlink > 1 {
                unlink_name(&mut rec, cur, &name);
                t.put_inode(&rec)?;
            } else {
                stack.push(child);
            }
        }
        drop_inode(t, cur)?;
    }
    Ok(())
}

/// Whether `(parent, name)` is the primary link of `rec`.
pub fn is_primary(rec: &InodeRecord, parent: InodeNo, name: &[u8]) -> bool {
    rec.parent == parent && rec.name == name
}

/// Takes the name `(parent, name)` away from a non-directory: the first extra link is
/// promoted when the primary goes. Decrements `nlink`.
fn unlink_name(rec: &mut InodeRecord, parent: InodeNo, name: &[u8]) {
    if is_primary(rec, parent, name) {
        if rec.links.is_empty() {
            rec.parent = NO_PARENT;
            rec.name.clear();
        } else {
            let (p, n) = rec.links.remove(0);
            rec.parent = p;
            rec.name = n;
        }
    } else if let Some(i) = rec
        .links
        .iter()
        .position(|(p, n)| *p == parent && n == name)
    {
        rec.links.remove(i);
    }
    rec.nlink = rec.nlink.saturating_sub(1);
}

/// Moves the name `from` of `rec` to `to` (primary link, or one of the extra links).
fn move_name(rec: &mut InodeRecord, from: (InodeNo, &[u8]), to: (InodeNo, &[u8])) {
    if rec.kind == FileKind::Dir || is_primary(rec, from.0, from.1) {
        rec.parent = to.0;
        rec.name = to.1.to_vec();
    } else if let Some(l) = rec
        .links
        .iter_mut()
        .find(|(p, n)| *p == from.0 && n == from.1)
    {
        *l = (to.0, to.1.to_vec());
    }
}

/// Whether `anc` is `node` or one of its ancestors.
fn is_ancestor(t: &dyn StoreRead, anc: InodeNo, node: InodeNo) -> Result<bool, MetaError> {
    let mut cur = node;
    for _ in 0..MAX_DEPTH {
        if cur == anc {
            return Ok(true);
        }
        if cur == ROOT_INO || cur == NO_PARENT {
            return Ok(false);
        }
        cur = get(t, cur)?.parent;
    }
    Err(MetaError::Corrupt(format!(
        "parent chain of inode {node} too deep"
    )))
}

/// Drops a non-directory that lost its last name: kept as an orphan while open.
fn release_if_unlinked(
    t: &mut dyn StoreWrite,
    rec: &InodeRecord,
    keep_open: bool,
) -> Result<(), MetaError> {
    if rec.nlink > 0 {
        return t.put_inode(rec);
    }
    if keep_open {
        t.put_inode(rec)?;
        t.set_counter(&format!("{ORPHAN_PREFIX}{}", rec.ino.0), 1)
    } else {
        drop_inode(t, rec.ino)
    }
}

/// Whether the name `(dir, name)` of `rec` is one the UFS listing accounts for: the
/// primary link of a file, or a directory. Namespace-only kinds and secondary hard links
/// are not in the UFS.
fn backed_here(rec: &InodeRecord, dir: InodeNo, name: &[u8]) -> bool {
    match rec.kind {
        FileKind::Dir => !is_mount_point(rec),
        FileKind::File => is_primary(rec, dir, name),
        _ => false,
    }
}

fn touch_dir(t: &mut dyn StoreWrite, dir: &mut InodeRecord, now_ns: i64) -> Result<(), MetaError> {
    dir.mtime_ns = now_ns;
    dir.ctime_ns = now_ns;
    t.put_inode(dir)
}

impl<S: NamespaceStore> Namespace<S> {
    /// Opens the namespace: creates the root on first use and starts a new load epoch.
    pub fn open(store: S, root: Ownership, now_ns: i64) -> Result<Self, MetaError> {
        let epoch = store.write(|t| {
            if t.inode(ROOT_INO)?.is_none() {
                t.put_inode(&InodeRecord {
                    ino: ROOT_INO,
                    kind: FileKind::Dir,
                    parent: ROOT_INO,
                    name: Vec::new(),
                    size: 0,
                    mode: root.dir_mode,
                    uid: root.uid,
                    gid: root.gid,
                    atime_ns: now_ns,
                    mtime_ns: now_ns,
                    ctime_ns: now_ns,
                    nlink: 2,
                    version: None,
                    loaded_epoch: 0,
                    rdev: 0,
                    target: Vec::new(),
                    links: Vec::new(),
                })?;
            }
            let epoch = t.counter(EPOCH)? + 1;
            t.set_counter(EPOCH, epoch)?;
            // Orphans of a previous run: their last handle is gone with that process.
            for (key, _) in t.counters_with_prefix(ORPHAN_PREFIX)? {
                if let Ok(n) = key[ORPHAN_PREFIX.len()..].parse::<u64>()
                    && t.inode(InodeNo(n))?.is_some_and(|r| r.nlink == 0)
                {
                    drop_inode(t, InodeNo(n))?;
                }
                t.remove_counter(&key)?;
            }
            Ok(epoch)
        })?;
        tracing::debug!(epoch, "namespace opened");
        Ok(Self {
            store,
            epoch,
            // Above every token an earlier process handed out (2^40 changes each).
            recent: Recent::new(epoch << 40),
        })
    }

    /// The store under this namespace.
    pub(crate) fn store(&self) -> &S {
        &self.store
    }

    /// The current load epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The inode record.
    pub fn get(&self, ino: InodeNo) -> Result<InodeRecord, MetaError> {
        self.store.read(|t| get(t, ino))
    }

    /// Resolves `name` in `parent`.
    pub fn lookup(&self, parent: InodeNo, name: &[u8]) -> Result<Lookup, MetaError> {
        validate_name(name)?;
        self.store.read(|t| {
            let dir = get_dir(t, parent)?;
            let loaded = dir.loaded_epoch == self.epoch;
            match t.dentry(parent, name)? {
                Some(child) if loaded => Ok(Lookup::Found(get(t, child)?)),
                Some(child) => Ok(Lookup::Stale(get(t, child)?)),
                None if loaded => Ok(Lookup::Missing),
                None => Ok(Lookup::Unloaded),
            }
        })
    }

    /// Whether `dir` must be loaded from the UFS before its children are known.
    pub fn needs_load(&self, dir: InodeNo) -> Result<bool, MetaError> {
        self.store
            .read(|t| Ok(get_dir(t, dir)?.loaded_epoch != self.epoch))
    }

    /// Lists a loaded directory, ordered by name.
    pub fn list(&self, dir: InodeNo) -> Result<Vec<DirEntry>, MetaError> {
        self.store.read(|t| {
            let d = get_dir(t, dir)?;
            if d.loaded_epoch != self.epoch {
                return Err(MetaError::Unloaded(dir));
            }
            t.children(dir)?
                .into_iter()
                .map(|(name, ino)| {
                    let kind = get(t, ino)?.kind;
                    Ok(DirEntry { name, ino, kind })
                })
                .collect()
        })
    }

    /// Reconciles `dir` with a fresh UFS listing and marks it loaded for this epoch.
    ///
    /// Names that still exist keep their inode numbers; a file whose UFS version changed
    /// gets the new size, mtime and version; names gone from the UFS are removed, except
    /// files that have no UFS object yet (being written through this mount). Invalid
    /// names and duplicates (an object and a prefix of the same name) are skipped: the
    /// first one listed wins. A directory already loaded in this epoch is left untouched,
    /// so concurrent loads of one directory are harmless.
    pub fn load_dir(
        &self,
        dir: InodeNo,
        listing: Vec<UfsChild>,
        defaults: Ownership,
        now_ns: i64,
    ) -> Result<(), MetaError> {
        self.apply_listing(dir, listing, defaults, now_ns, None, false)
    }

    /// Reconciles `dir` with a fresh UFS listing even if it is loaded already (a metadata
    /// sync): the same rules as [`Namespace::load_dir`], in one transaction, so the
    /// directory never reads as unloaded or half-updated.
    pub fn resync_dir(
        &self,
        dir: InodeNo,
        listing: Vec<UfsChild>,
        defaults: Ownership,
        now_ns: i64,
    ) -> Result<(), MetaError> {
        self.apply_listing(dir, listing, defaults, now_ns, None, true)
    }

    /// A token for a UFS listing about to be taken, for [`Namespace::apply_listing`]: it
    /// leaves alone what changes after this (see [`crate::recent`]).
    pub fn begin_listing(&self) -> u64 {
        self.recent.begin()
    }

    /// The listing that began with `token` will not be applied.
    pub fn end_listing(&self, token: u64) {
        self.recent.end(token);
    }

    /// [`Namespace::load_dir`] (or, with `force`, [`Namespace::resync_dir`]) for a listing
    /// taken since `token` (`None`: taken with nothing else changing the namespace). A node
    /// changed at or after the token, and a name removed at or after it, are left as the
    /// namespace has them: the namespace knows better than the listing about those.
    pub fn apply_listing(
        &self,
        dir: InodeNo,
        listing: Vec<UfsChild>,
        defaults: Ownership,
        now_ns: i64,
        token: Option<u64>,
        force: bool,
    ) -> Result<(), MetaError> {
        let r = self.reconcile(dir, listing, defaults, now_ns, token, force);
        if let Some(t) = token {
            self.recent.end(t);
        }
        r
    }

    fn reconcile(
        &self,
        dir: InodeNo,
        listing: Vec<UfsChild>,
        defaults: Ownership,
        now_ns: i64,
        token: Option<u64>,
        force: bool,
    ) -> Result<(), MetaError> {
        let newer = |ino: InodeNo| token.is_some_and(|t| self.recent.touched_since(ino, t));
        let gone = |name: &[u8]| token.is_some_and(|t| self.recent.removed_since(dir, name, t));
        self.store.write(|t| {
            let mut d = get_dir(t, dir)?;
            if d.loaded_epoch == self.epoch && !force {
                return Ok(());
            }
            let existing: std::collections::BTreeMap<Vec<u8>, InodeNo> =
                t.children(dir)?.into_iter().collect();
            let mut seen = std::collections::BTreeSet::new();
            for c in listing {
                if validate_name(&c.name).is_err() || !seen.insert(c.name.clone()) {
                    tracing::warn!(dir = %dir, name = ?String::from_utf8_lossy(&c.name), "skipping UFS entry with an unusable or duplicate name");
                    continue;
                }
                if let Some(&ino) = existing.get(&c.name) {
                    if newer(ino) {
                        continue; // changed since the listing began
                    }
                    let mut rec = get(t, ino)?;
                    if !backed_here(&rec, dir, &c.name) {
                        // A namespace-only node or a secondary hard link owns this name;
                        // the object of the same name is shadowed.
                        tracing::warn!(dir = %dir, name = ?String::from_utf8_lossy(&c.name), "UFS entry shadowed by a namespace-only name");
                        continue;
                    }
                    if pending(&rec) {
                        continue; // written through a mount and not uploaded yet
                    }
                    // A file with no version that the listing shows was uploaded (the
                    // store is ahead of the namespace: a commit whose namespace change a
                    // crash lost), or written by another tool: either way it has the
                    // object's bytes now, as a file with an older version would.
                    if rec.kind == c.kind {
                        if rec.kind == FileKind::File && rec.version != c.version {
                            rec.size = c.size;
                            rec.mtime_ns = c.mtime_ns;
                            rec.ctime_ns = c.mtime_ns;
                            rec.version = c.version;
                            t.put_inode(&rec)?;
                        }
                        continue;
                    }
                    // The kind changed underneath: drop the old entry, then add as new.
                    t.remove_dentry(dir, &c.name)?;
                    if rec.kind == FileKind::Dir {
                        d.nlink -= 1;
                        remove_subtree(t, ino)?;
                    } else {
                        unlink_name(&mut rec, dir, &c.name);
                        release_if_unlinked(t, &rec, false)?;
                    }
                } else if gone(&c.name) {
                    continue; // removed since the listing began; its object is going
                }
                let ino = alloc_ino(t)?;
                let (mode, nlink, loaded_epoch) = match c.kind {
                    FileKind::Dir => {
                        d.nlink += 1;
                        (defaults.dir_mode, 2, 0)
                    }
                    _ => (defaults.file_mode, 1, 0),
                };
                t.put_inode(&InodeRecord {
                    ino,
                    kind: c.kind,
                    parent: dir,
                    name: c.name.clone(),
                    size: c.size,
                    mode,
                    uid: defaults.uid,
                    gid: defaults.gid,
                    atime_ns: c.mtime_ns,
                    mtime_ns: c.mtime_ns,
                    ctime_ns: c.mtime_ns,
                    nlink,
                    version: c.version,
                    loaded_epoch,
                    rdev: 0,
                    target: Vec::new(),
                    links: Vec::new(),
                })?;
                t.put_dentry(dir, &c.name, ino)?;
            }
            for (name, ino) in existing {
                if seen.contains(&name) || newer(ino) {
                    continue;
                }
                let mut rec = get(t, ino)?;
                if !backed_here(&rec, dir, &name) || local_only(&rec) {
                    continue; // namespace-only, or written through a mount and not uploaded yet
                }
                tracing::debug!(dir = %dir, ino = %ino, name = ?String::from_utf8_lossy(&name), version = ?rec.version, "not in the listing: removed");
                t.remove_dentry(dir, &name)?;
                match rec.kind {
                    FileKind::Dir => {
                        d.nlink -= 1;
                        remove_subtree(t, ino)?;
                    }
                    _ => {
                        unlink_name(&mut rec, dir, &name);
                        release_if_unlinked(t, &rec, false)?;
                    }
                }
            }
            d.loaded_epoch = self.epoch;
            let _ = now_ns;
            t.put_inode(&d)
        })
    }

    /// Adds one file found in the store (a HEAD of its key) to a directory not listed in
    /// this epoch, so a lookup there is answered without waiting for the listing. The
    /// directory stays unloaded: the listing still runs and reconciles it, keeping this
    /// inode for the name (and, for a listing begun before this, this node as it is,
    /// since it is at least as new). A name the namespace has already is answered as a
    /// lookup would; in a loaded directory the namespace's answer stands.
    pub fn adopt_child(
        &self,
        dir: InodeNo,
        child: UfsChild,
        defaults: Ownership,
    ) -> Result<Lookup, MetaError> {
        validate_name(&child.name)?;
        if child.kind != FileKind::File || child.version.is_none() {
            return Err(MetaError::InvalidArgument(
                "only a file with a version is adopted".into(),
            ));
        }
        self.store.write(|t| {
            let d = get_dir(t, dir)?;
            let loaded = d.loaded_epoch == self.epoch;
            match t.dentry(dir, &child.name)? {
                Some(ino) if loaded => return Ok(Lookup::Found(get(t, ino)?)),
                Some(ino) => return Ok(Lookup::Stale(get(t, ino)?)),
                None if loaded => return Ok(Lookup::Missing),
                None => {}
            }
            let ino = alloc_ino(t)?;
            let rec = InodeRecord {
                ino,
                kind: FileKind::File,
                parent: dir,
                name: child.name.clone(),
                size: child.size,
                mode: defaults.file_mode,
                uid: defaults.uid,
                gid: defaults.gid,
                atime_ns: child.mtime_ns,
                mtime_ns: child.mtime_ns,
                ctime_ns: child.mtime_ns,
                nlink: 1,
                version: child.version,
                loaded_epoch: 0,
                rdev: 0,
                target: Vec::new(),
                links: Vec::new(),
            };
            t.put_inode(&rec)?;
            t.put_dentry(dir, &child.name, ino)?;
            self.recent.touch(ino);
            Ok(Lookup::Found(rec))
        })
    }

    /// Creates a node named `name` in the loaded directory `parent`. In a setgid directory
    /// the new node takes the directory's group, and a new directory stays setgid.
    pub fn create(
        &self,
        parent: InodeNo,
        name: &[u8],
        node: NewNode,
        now_ns: i64,
    ) -> Result<InodeRecord, MetaError> {
        validate_name(name)?;
        self.store.write(|t| {
            let mut dir = get_dir(t, parent)?;
            if dir.loaded_epoch != self.epoch {
                return Err(MetaError::Unloaded(parent));
            }
            if t.dentry(parent, name)?.is_some() {
                return Err(MetaError::AlreadyExists(
                    String::from_utf8_lossy(name).into_owned(),
                ));
            }
            let ino = alloc_ino(t)?;
            let mut mode = node.mode & 0o7777;
            let mut gid = node.gid;
            if dir.mode & S_ISGID != 0 {
                gid = dir.gid;
                if node.kind == FileKind::Dir {
                    mode |= S_ISGID;
                }
            }
            let (nlink, loaded_epoch) = match node.kind {
                FileKind::Dir => {
                    dir.nlink += 1;
                    (2, self.epoch)
                }
                _ => (1, 0),
            };
            let size = match node.kind {
                FileKind::Symlink => node.target.len() as u64,
                _ => 0,
            };
            let rec = InodeRecord {
                ino,
                kind: node.kind,
                parent,
                name: name.to_vec(),
                size,
                mode,
                uid: node.uid,
                gid,
                atime_ns: now_ns,
                mtime_ns: now_ns,
                ctime_ns: now_ns,
                nlink,
                version: None,
                loaded_epoch,
                rdev: node.rdev,
                target: node.target,
                links: Vec::new(),
            };
            t.put_inode(&rec)?;
            t.put_dentry(parent, name, ino)?;
            touch_dir(t, &mut dir, now_ns)?;
            self.recent.touch(ino);
            Ok(rec)
        })
    }

    /// Adds the name `newparent/newname` to the non-directory `ino`.
    pub fn link(
        &self,
        ino: InodeNo,
        newparent: InodeNo,
        newname: &[u8],
        now_ns: i64,
    ) -> Result<InodeRecord, MetaError> {
        validate_name(newname)?;
        self.store.write(|t| {
            let mut dir = get_dir(t, newparent)?;
            if dir.loaded_epoch != self.epoch {
                return Err(MetaError::Unloaded(newparent));
            }
            let mut rec = get(t, ino)?;
            if rec.kind == FileKind::Dir {
                return Err(MetaError::NotPermitted("hard link to a directory".into()));
            }
            if rec.nlink == 0 {
                return Err(MetaError::NotFound(format!("inode {ino} has no names")));
            }
            if rec.nlink >= LINK_MAX {
                return Err(MetaError::TooManyLinks(ino));
            }
            if t.dentry(newparent, newname)?.is_some() {
                return Err(MetaError::AlreadyExists(
                    String::from_utf8_lossy(newname).into_owned(),
                ));
            }
            rec.links.push((newparent, newname.to_vec()));
            rec.nlink += 1;
            rec.ctime_ns = now_ns;
            t.put_inode(&rec)?;
            t.put_dentry(newparent, newname, ino)?;
            touch_dir(t, &mut dir, now_ns)?;
            self.recent.touch(ino);
            Ok(rec)
        })
    }

    /// Removes the non-directory name `name` from `parent`; returns the record as it is
    /// afterwards (`nlink` 0 when that was the last name). With `keep_open` an inode that
    /// lost its last name stays as an orphan until [`Namespace::remove_orphan`].
    pub fn unlink(
        &self,
        parent: InodeNo,
        name: &[u8],
        keep_open: bool,
        now_ns: i64,
    ) -> Result<InodeRecord, MetaError> {
        validate_name(name)?;
        self.store.write(|t| {
            let mut dir = get_dir(t, parent)?;
            let ino = t
                .dentry(parent, name)?
                .ok_or_else(|| MetaError::NotFound(String::from_utf8_lossy(name).into_owned()))?;
            let mut rec = get(t, ino)?;
            if rec.kind == FileKind::Dir {
                return Err(MetaError::IsADirectory(ino));
            }
            t.remove_dentry(parent, name)?;
            unlink_name(&mut rec, parent, name);
            rec.ctime_ns = now_ns;
            release_if_unlinked(t, &rec, keep_open)?;
            touch_dir(t, &mut dir, now_ns)?;
            self.recent.remove(parent, name);
            self.recent.touch(ino);
            Ok(rec)
        })
    }

    /// Removes an orphan (an inode without names) once its last handle is closed.
    pub fn remove_orphan(&self, ino: InodeNo) -> Result<(), MetaError> {
        self.store.write(|t| {
            if t.inode(ino)?.is_some_and(|r| r.nlink == 0) {
                drop_inode(t, ino)?;
            }
            t.remove_counter(&format!("{ORPHAN_PREFIX}{}", ino.0))
        })
    }

    /// Removes the empty directory `name` from `parent`. Fails with `Unloaded(child)` when
    /// the child's emptiness is not yet known.
    pub fn rmdir(
        &self,
        parent: InodeNo,
        name: &[u8],
        now_ns: i64,
    ) -> Result<InodeRecord, MetaError> {
        validate_name(name)?;
        self.store.write(|t| {
            let mut dir = get_dir(t, parent)?;
            let ino = t
                .dentry(parent, name)?
                .ok_or_else(|| MetaError::NotFound(String::from_utf8_lossy(name).into_owned()))?;
            let rec = get(t, ino)?;
            if rec.kind != FileKind::Dir {
                return Err(MetaError::NotADirectory(ino));
            }
            if is_mount_point(&rec) {
                return Err(MetaError::Busy(String::from_utf8_lossy(name).into_owned()));
            }
            if rec.loaded_epoch != self.epoch {
                return Err(MetaError::Unloaded(ino));
            }
            if t.has_children(ino)? {
                return Err(MetaError::DirectoryNotEmpty(ino));
            }
            t.remove_dentry(parent, name)?;
            drop_inode(t, ino)?;
            dir.nlink -= 1;
            touch_dir(t, &mut dir, now_ns)?;
            self.recent.remove(parent, name);
            Ok(rec)
        })
    }

    /// Renames `parent/name` to `newparent/newname`, replacing a compatible target.
    /// Returns the replaced record as it is afterwards, if any (`nlink` 0 when that was its
    /// last name; kept as an orphan with `keep_open`). Fails with `Unloaded(d)` when
    /// directory `d` must be loaded first (the new parent, or a target directory whose
    /// emptiness matters).
    #[allow(clippy::too_many_arguments)]
    pub fn rename(
        &self,
        parent: InodeNo,
        name: &[u8],
        newparent: InodeNo,
        newname: &[u8],
        noreplace: bool,
        keep_open: bool,
        now_ns: i64,
    ) -> Result<Option<InodeRecord>, MetaError> {
        self.rename_in(
            parent, name, newparent, newname, noreplace, keep_open, now_ns, true,
        )
    }

    /// Finishes a rename whose store step a crash left done (or half done) and whose
    /// namespace step it cut: as [`Namespace::rename`], also into a directory not listed
    /// in this epoch yet, whose names are then those the last epoch left. Listing such a
    /// directory first would reconcile the moved object away from the inode it belongs to.
    pub fn finish_rename(
        &self,
        parent: InodeNo,
        name: &[u8],
        newparent: InodeNo,
        newname: &[u8],
        now_ns: i64,
    ) -> Result<Option<InodeRecord>, MetaError> {
        self.rename_in(
            parent, name, newparent, newname, false, false, now_ns, false,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn rename_in(
        &self,
        parent: InodeNo,
        name: &[u8],
        newparent: InodeNo,
        newname: &[u8],
        noreplace: bool,
        keep_open: bool,
        now_ns: i64,
        listed: bool,
    ) -> Result<Option<InodeRecord>, MetaError> {
        validate_name(name)?;
        validate_name(newname)?;
        self.store.write(|t| {
            get_dir(t, parent)?;
            let np = get_dir(t, newparent)?;
            if listed && np.loaded_epoch != self.epoch {
                return Err(MetaError::Unloaded(newparent));
            }
            let ino = t
                .dentry(parent, name)?
                .ok_or_else(|| MetaError::NotFound(String::from_utf8_lossy(name).into_owned()))?;
            let mut rec = get(t, ino)?;
            if is_mount_point(&rec) {
                return Err(MetaError::Busy(String::from_utf8_lossy(name).into_owned()));
            }
            if let Some(target) = t.dentry(newparent, newname)?
                && is_mount_point(&get(t, target)?)
            {
                return Err(MetaError::Busy(
                    String::from_utf8_lossy(newname).into_owned(),
                ));
            }
            if rec.kind == FileKind::Dir && is_ancestor(t, ino, newparent)? {
                return Err(MetaError::InvalidArgument(
                    "cannot move a directory into its own subtree".into(),
                ));
            }
            let mut replaced = None;
            if let Some(target) = t.dentry(newparent, newname)? {
                if target == ino {
                    return Ok(None);
                }
                if noreplace {
                    return Err(MetaError::AlreadyExists(
                        String::from_utf8_lossy(newname).into_owned(),
                    ));
                }
                let mut trec = get(t, target)?;
                let src_dir = rec.kind == FileKind::Dir;
                let dst_dir = trec.kind == FileKind::Dir;
                if src_dir && !dst_dir {
                    return Err(MetaError::NotADirectory(target));
                }
                if !src_dir && dst_dir {
                    return Err(MetaError::IsADirectory(target));
                }
                t.remove_dentry(newparent, newname)?;
                if dst_dir {
                    if listed && trec.loaded_epoch != self.epoch {
                        return Err(MetaError::Unloaded(target));
                    }
                    if t.has_children(target)? {
                        return Err(MetaError::DirectoryNotEmpty(target));
                    }
                    drop_inode(t, target)?;
                    let mut np = get(t, newparent)?;
                    np.nlink -= 1;
                    t.put_inode(&np)?;
                    trec.nlink = 0;
                } else {
                    unlink_name(&mut trec, newparent, newname);
                    trec.ctime_ns = now_ns;
                    release_if_unlinked(t, &trec, keep_open)?;
                }
                self.recent.touch(target);
                replaced = Some(trec);
            }
            t.remove_dentry(parent, name)?;
            t.put_dentry(newparent, newname, ino)?;
            self.recent.remove(parent, name);
            self.recent.touch(ino);
            move_name(&mut rec, (parent, name), (newparent, newname));
            rec.ctime_ns = now_ns;
            t.put_inode(&rec)?;
            let mut op = get(t, parent)?;
            if rec.kind == FileKind::Dir && parent != newparent {
                op.nlink -= 1;
            }
            touch_dir(t, &mut op, now_ns)?;
            if parent != newparent {
                let mut np = get(t, newparent)?;
                if rec.kind == FileKind::Dir {
                    np.nlink += 1;
                }
                touch_dir(t, &mut np, now_ns)?;
            }
            Ok(replaced)
        })
    }

    /// Exchanges two existing names atomically (RENAME_EXCHANGE).
    pub fn exchange(
        &self,
        parent: InodeNo,
        name: &[u8],
        newparent: InodeNo,
        newname: &[u8],
        now_ns: i64,
    ) -> Result<(), MetaError> {
        validate_name(name)?;
        validate_name(newname)?;
        self.store.write(|t| {
            get_dir(t, parent)?;
            get_dir(t, newparent)?;
            let missing = |n: &[u8]| MetaError::NotFound(String::from_utf8_lossy(n).into_owned());
            let a = t.dentry(parent, name)?.ok_or_else(|| missing(name))?;
            let b = t
                .dentry(newparent, newname)?
                .ok_or_else(|| missing(newname))?;
            if a == b {
                return Ok(());
            }
            let (mut ra, mut rb) = (get(t, a)?, get(t, b)?);
            if (ra.kind == FileKind::Dir && is_ancestor(t, a, newparent)?)
                || (rb.kind == FileKind::Dir && is_ancestor(t, b, parent)?)
            {
                return Err(MetaError::InvalidArgument(
                    "cannot move a directory into its own subtree".into(),
                ));
            }
            t.put_dentry(parent, name, b)?;
            t.put_dentry(newparent, newname, a)?;
            self.recent.touch(a);
            self.recent.touch(b);
            move_name(&mut ra, (parent, name), (newparent, newname));
            move_name(&mut rb, (newparent, newname), (parent, name));
            ra.ctime_ns = now_ns;
            rb.ctime_ns = now_ns;
            t.put_inode(&ra)?;
            t.put_inode(&rb)?;
            let (da, db) = (
                u32::from(ra.kind == FileKind::Dir),
                u32::from(rb.kind == FileKind::Dir),
            );
            let mut p = get(t, parent)?;
            if parent != newparent {
                p.nlink = p.nlink + db - da;
            }
            touch_dir(t, &mut p, now_ns)?;
            if parent != newparent {
                let mut np = get(t, newparent)?;
                np.nlink = np.nlink + da - db;
                touch_dir(t, &mut np, now_ns)?;
            }
            Ok(())
        })
    }

    /// Applies attribute changes.
    pub fn set_attr(&self, ino: InodeNo, a: SetAttr) -> Result<InodeRecord, MetaError> {
        self.store.write(|t| {
            let mut rec = get(t, ino)?;
            if let Some(expect) = &a.if_version
                && *expect != rec.version
            {
                return Err(MetaError::VersionMismatch(ino));
            }
            if let Some(v) = a.size {
                if rec.kind == FileKind::Dir {
                    return Err(MetaError::IsADirectory(ino));
                }
                rec.size = v;
            }
            if let Some(v) = a.mode {
                rec.mode = v & 0o7777;
            }
            if let Some(v) = a.uid {
                rec.uid = v;
            }
            if let Some(v) = a.gid {
                rec.gid = v;
            }
            if let Some(v) = a.atime_ns {
                rec.atime_ns = v;
            }
            if let Some(v) = a.mtime_ns {
                rec.mtime_ns = v;
            }
            if let Some(v) = a.ctime_ns {
                rec.ctime_ns = v;
            }
            let content = a.size.is_some() || a.version.is_some();
            if let Some(v) = a.version {
                rec.version = v;
            }
            t.put_inode(&rec)?;
            if content {
                // Content a listing in flight may show older (or not at all).
                self.recent.touch(ino);
            }
            Ok(rec)
        })
    }

    /// The path components from the root to `ino` (empty for the root).
    pub fn path(&self, ino: InodeNo) -> Result<Vec<Vec<u8>>, MetaError> {
        self.store.read(|t| {
            let mut parts = Vec::new();
            let mut cur = ino;
            for _ in 0..MAX_DEPTH {
                if cur == ROOT_INO {
                    parts.reverse();
                    return Ok(parts);
                }
                if cur == NO_PARENT {
                    return Err(MetaError::NotFound(format!("inode {ino} has no names")));
                }
                let rec = get(t, cur)?;
                parts.push(rec.name);
                cur = rec.parent;
            }
            Err(MetaError::Corrupt(format!(
                "parent chain of inode {ino} too deep"
            )))
        })
    }

    /// One extended attribute's value.
    pub fn get_xattr(&self, ino: InodeNo, name: &[u8]) -> Result<Vec<u8>, MetaError> {
        self.store.read(|t| {
            get(t, ino)?;
            t.xattr(ino, name)?
                .ok_or_else(|| MetaError::NoAttribute(String::from_utf8_lossy(name).into_owned()))
        })
    }

    /// Sets an extended attribute; updates ctime.
    pub fn set_xattr(
        &self,
        ino: InodeNo,
        name: &[u8],
        value: &[u8],
        mode: XattrMode,
        now_ns: i64,
    ) -> Result<(), MetaError> {
        if name.is_empty() || name.len() > 255 {
            return Err(MetaError::InvalidArgument(
                "bad attribute name length".into(),
            ));
        }
        if value.len() > 65536 {
            return Err(MetaError::InvalidArgument(
                "attribute value larger than 64 KiB".into(),
            ));
        }
        self.store.write(|t| {
            let mut rec = get(t, ino)?;
            let exists = t.xattr(ino, name)?.is_some();
            match (mode, exists) {
                (XattrMode::Create, true) => {
                    return Err(MetaError::AlreadyExists(
                        String::from_utf8_lossy(name).into_owned(),
                    ));
                }
                (XattrMode::Replace, false) => {
                    return Err(MetaError::NoAttribute(
                        String::from_utf8_lossy(name).into_owned(),
                    ));
                }
                _ => {}
            }
            t.put_xattr(ino, name, value)?;
            rec.ctime_ns = now_ns;
            t.put_inode(&rec)
        })
    }

    /// Names of all extended attributes.
    pub fn list_xattr(&self, ino: InodeNo) -> Result<Vec<Vec<u8>>, MetaError> {
        self.store.read(|t| {
            get(t, ino)?;
            t.xattr_names(ino)
        })
    }

    /// Removes an extended attribute; updates ctime.
    pub fn remove_xattr(&self, ino: InodeNo, name: &[u8], now_ns: i64) -> Result<(), MetaError> {
        self.store.write(|t| {
            let mut rec = get(t, ino)?;
            if t.xattr(ino, name)?.is_none() {
                return Err(MetaError::NoAttribute(
                    String::from_utf8_lossy(name).into_owned(),
                ));
            }
            t.remove_xattr(ino, name)?;
            rec.ctime_ns = now_ns;
            t.put_inode(&rec)
        })
    }

    /// The mount table, ordered by path.
    pub fn mounts(&self) -> Result<Vec<MountEntry>, MetaError> {
        self.store.read(|t| {
            let mut out = Vec::new();
            // Mount entries are named by their path (`/...`); other names hold other
            // tables (pins).
            for name in t.xattr_names(MOUNT_TABLE)? {
                if !name.starts_with(b"/") {
                    continue;
                }
                let Some(v) = t.xattr(MOUNT_TABLE, &name)? else {
                    continue;
                };
                out.push(
                    serde_json::from_slice(&v)
                        .map_err(|e| MetaError::Corrupt(format!("mount table entry: {e}")))?,
                );
            }
            Ok(out)
        })
    }

    /// The TTL table: (absolute path, TTL).
    pub fn ttls(&self) -> Result<Vec<(String, Ttl)>, MetaError> {
        self.store.read(|t| {
            let mut out = Vec::new();
            for n in t.xattr_names(MOUNT_TABLE)? {
                let Some(p) = n.strip_prefix(TTL_PREFIX.as_bytes()) else {
                    continue;
                };
                let Some(v) = t.xattr(MOUNT_TABLE, &n)? else {
                    continue;
                };
                let ttl = serde_json::from_slice(&v)
                    .map_err(|e| MetaError::Corrupt(format!("ttl entry: {e}")))?;
                out.push((String::from_utf8_lossy(p).into_owned(), ttl));
            }
            Ok(out)
        })
    }

    /// Sets (the path must exist) or clears the TTL of an absolute path.
    pub fn set_ttl(&self, path: &str, ttl: Option<Ttl>) -> Result<(), MetaError> {
        let parts = path_components(path)?;
        let name = format!("{TTL_PREFIX}{path}");
        self.store.write(|t| match ttl {
            Some(ttl) => {
                let mut ino = ROOT_INO;
                for c in &parts {
                    ino = t
                        .dentry(ino, c)?
                        .ok_or_else(|| MetaError::NotFound(path.to_string()))?;
                }
                let v = serde_json::to_vec(&ttl)
                    .map_err(|e| MetaError::InvalidArgument(e.to_string()))?;
                t.put_xattr(MOUNT_TABLE, name.as_bytes(), &v)
            }
            None if t.xattr(MOUNT_TABLE, name.as_bytes())?.is_some() => {
                t.remove_xattr(MOUNT_TABLE, name.as_bytes())
            }
            None => Err(MetaError::NotFound(format!("{path} has no TTL"))),
        })
    }

    /// Removes the TTL entry of `path` if it is still `ttl`; true when this call removed
    /// it. The daemon that gets true carries out the expiry, so exactly one does.
    pub fn take_ttl(&self, path: &str, ttl: Ttl) -> Result<bool, MetaError> {
        let name = format!("{TTL_PREFIX}{path}");
        self.store.write(|t| {
            let Some(v) = t.xattr(MOUNT_TABLE, name.as_bytes())? else {
                return Ok(false);
            };
            if serde_json::from_slice::<Ttl>(&v).ok() != Some(ttl) {
                return Ok(false);
            }
            t.remove_xattr(MOUNT_TABLE, name.as_bytes())?;
            Ok(true)
        })
    }

    /// Registers `member` (or renews its lease) until `lease_ms` after `now_ns`, and drops
    /// members whose lease expired. Returns the membership's version.
    pub fn register_member(
        &self,
        member: ClusterMember,
        lease_ms: u64,
        now_ns: i64,
    ) -> Result<u64, MetaError> {
        if member.addr.is_empty() || member.addr.len() > 255 {
            return Err(MetaError::InvalidArgument("member address".into()));
        }
        let lease_ns = i64::try_from(lease_ms.min(3_600_000)).unwrap_or(0) * 1_000_000;
        let name = format!("{MEMBER_PREFIX}{}", member.addr);
        let entry = MemberEntry {
            member,
            expires_ns: now_ns.saturating_add(lease_ns),
        };
        let value = serde_json::to_vec(&entry)
            .map_err(|e| MetaError::InvalidArgument(format!("member: {e}")))?;
        self.store.write(|t| {
            for (n, e) in member_entries(t)? {
                if e.expires_ns <= now_ns {
                    t.remove_xattr(MOUNT_TABLE, &n)?;
                }
            }
            t.put_xattr(MOUNT_TABLE, name.as_bytes(), &value)?;
            Ok(membership(&*t, now_ns)?.version)
        })
    }

    /// Removes a member at once (a clean shutdown); one that is not there is no error.
    pub fn leave_member(&self, addr: &str) -> Result<(), MetaError> {
        let name = format!("{MEMBER_PREFIX}{addr}");
        self.store.write(|t| {
            if t.xattr(MOUNT_TABLE, name.as_bytes())?.is_some() {
                t.remove_xattr(MOUNT_TABLE, name.as_bytes())?;
            }
            Ok(())
        })
    }

    /// The members whose lease runs past `now_ns`.
    pub fn members(&self, now_ns: i64) -> Result<Membership, MetaError> {
        self.store.read(|t| membership(t, now_ns))
    }

    /// Pinned paths: every file at or below one keeps its cached pages in every daemon.
    pub fn pins(&self) -> Result<Vec<String>, MetaError> {
        self.store.read(|t| {
            Ok(t.xattr_names(MOUNT_TABLE)?
                .into_iter()
                .filter_map(|n| {
                    n.strip_prefix(PIN_PREFIX.as_bytes())
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                })
                .collect())
        })
    }

    /// Pins or unpins an absolute path (which must exist).
    pub fn set_pin(&self, path: &str, pinned: bool) -> Result<(), MetaError> {
        let parts = path_components(path)?;
        let name = format!("{PIN_PREFIX}{path}");
        self.store.write(|t| {
            let mut ino = ROOT_INO;
            for c in &parts {
                ino = t
                    .dentry(ino, c)?
                    .ok_or_else(|| MetaError::NotFound(path.to_string()))?;
            }
            if pinned {
                t.put_xattr(MOUNT_TABLE, name.as_bytes(), b"")
            } else if t.xattr(MOUNT_TABLE, name.as_bytes())?.is_some() {
                t.remove_xattr(MOUNT_TABLE, name.as_bytes())
            } else {
                Err(MetaError::NotFound(format!("{path} is not pinned")))
            }
        })
    }

    /// Adds a store to the mount table. `/` records the root store (again with the same
    /// URI is a no-op). Any other path names a new directory whose parent exists: it is
    /// created as the mount point, listed from the new store on first access.
    pub fn add_mount(&self, entry: MountEntry, now_ns: i64) -> Result<(), MetaError> {
        let parts = entry.components()?;
        let value = serde_json::to_vec(&entry)
            .map_err(|e| MetaError::InvalidArgument(format!("mount entry: {e}")))?;
        self.store.write(|t| {
            if let Some(old) = t.xattr(MOUNT_TABLE, entry.path.as_bytes())? {
                let old: MountEntry = serde_json::from_slice(&old)
                    .map_err(|e| MetaError::Corrupt(format!("mount table entry: {e}")))?;
                if old == entry {
                    return Ok(());
                }
                return Err(MetaError::AlreadyExists(format!(
                    "{} is mounted already",
                    entry.path
                )));
            }
            if let Some((last, dirs)) = parts.split_last() {
                let mut parent = ROOT_INO;
                for c in dirs {
                    parent = t.dentry(parent, c)?.ok_or_else(|| {
                        MetaError::NotFound(format!("{}: parent directory missing", entry.path))
                    })?;
                    get_dir(t, parent)?;
                }
                let mut dir = get_dir(t, parent)?;
                if t.dentry(parent, last)?.is_some() {
                    return Err(MetaError::AlreadyExists(format!(
                        "{}: the path exists; mount on a new name",
                        entry.path
                    )));
                }
                let ino = alloc_ino(t)?;
                t.put_inode(&InodeRecord {
                    ino,
                    kind: FileKind::Dir,
                    parent,
                    name: last.clone(),
                    size: 0,
                    mode: 0o755,
                    uid: dir.uid,
                    gid: dir.gid,
                    atime_ns: now_ns,
                    mtime_ns: now_ns,
                    ctime_ns: now_ns,
                    nlink: 2,
                    version: Some(ObjectVersion::Mount(entry.path.clone()).to_string()),
                    loaded_epoch: 0,
                    rdev: 0,
                    target: Vec::new(),
                    links: Vec::new(),
                })?;
                t.put_dentry(parent, last, ino)?;
                dir.nlink += 1;
                touch_dir(t, &mut dir, now_ns)?;
            }
            t.put_xattr(MOUNT_TABLE, entry.path.as_bytes(), &value)
        })
    }

    /// Removes a store from the mount table, with its mount point and everything the
    /// namespace knew below it. The root store and a mount with mounts below it stay.
    pub fn remove_mount(&self, path: &str, now_ns: i64) -> Result<(), MetaError> {
        let parts = path_components(path)?;
        let Some((last, dirs)) = parts.split_last() else {
            return Err(MetaError::Busy("/ (the root store)".into()));
        };
        self.store.write(|t| {
            if t.xattr(MOUNT_TABLE, path.as_bytes())?.is_none() {
                return Err(MetaError::NotFound(format!("{path} is not a mount point")));
            }
            let nested = format!("{path}/");
            if t.xattr_names(MOUNT_TABLE)?
                .iter()
                .any(|n| n.starts_with(nested.as_bytes()))
            {
                return Err(MetaError::Busy(format!("{path} (mounts below it)")));
            }
            let mut parent = ROOT_INO;
            for c in dirs {
                parent = t
                    .dentry(parent, c)?
                    .ok_or_else(|| MetaError::Corrupt(format!("{path}: parent missing")))?;
            }
            if let Some(ino) = t.dentry(parent, last)? {
                t.remove_dentry(parent, last)?;
                remove_subtree(t, ino)?;
                let mut dir = get_dir(t, parent)?;
                dir.nlink -= 1;
                touch_dir(t, &mut dir, now_ns)?;
            }
            t.remove_xattr(MOUNT_TABLE, path.as_bytes())
        })
    }
    /// Number of inodes ever allocated (an upper bound on live inodes).
    /// Makes every committed change durable.
    pub fn sync(&self) -> Result<(), MetaError> {
        self.store.sync()
    }

    /// Inodes allocated so far.
    pub fn inodes_allocated(&self) -> Result<u64, MetaError> {
        self.store
            .read(|t| Ok(t.counter(NEXT_INO)?.saturating_sub(1)))
    }
}
