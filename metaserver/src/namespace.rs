//! The namespace state machine: every POSIX namespace rule lives here.
//!
//! Invariants, each kept by every operation inside one store transaction:
//! - every dentry points at an existing inode, and every inode but the root is reachable
//!   through its primary link (`parent`, `name`);
//! - a directory's `nlink` is 2 plus its number of child directories; a file's is 1;
//! - inode numbers come from a persistent counter and are never reused;
//! - a directory's children are authoritative only when its `loaded_epoch` equals the
//!   namespace epoch. The epoch is bumped each time the namespace is opened (each mount), so
//!   a directory is listed from the UFS at most once per mount, and a remount sees changes
//!   other tools made while keeping inode numbers of names that still exist.
//! - mutations that add names (create, rename's target) require the target directory to be
//!   loaded, so a later load can never race with them and drop a new name.

use crate::error::MetaError;
use crate::record::{DirEntry, FileKind, InodeNo, InodeRecord, Ownership, ROOT_INO};
use crate::store::{NamespaceStore, StoreRead, StoreWrite};

/// Longest name accepted, in bytes (NAME_MAX).
pub const NAME_MAX: usize = 255;
/// Deepest path accepted when deriving a UFS key; deeper means a corrupt parent chain.
const MAX_DEPTH: usize = 4096;
const NEXT_INO: &str = "next_ino";
const EPOCH: &str = "epoch";

/// One child found in a UFS listing.
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The name exists.
    Found(InodeRecord),
    /// The directory is loaded and has no such name.
    Missing,
    /// The directory must be loaded from the UFS before the answer is known.
    Unloaded,
}

/// Attribute changes; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
}

/// The namespace over a store.
pub struct Namespace<S> {
    store: S,
    epoch: u64,
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

/// Removes `ino` and, for a directory, everything below it.
fn remove_subtree(t: &mut dyn StoreWrite, ino: InodeNo) -> Result<(), MetaError> {
    let mut stack = vec![ino];
    while let Some(cur) = stack.pop() {
        for (name, child) in t.children(cur)? {
            t.remove_dentry(cur, &name)?;
            stack.push(child);
        }
        t.remove_inode(cur)?;
    }
    Ok(())
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
                })?;
            }
            let epoch = t.counter(EPOCH)? + 1;
            t.set_counter(EPOCH, epoch)?;
            Ok(epoch)
        })?;
        Ok(Self { store, epoch })
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
            match t.dentry(parent, name)? {
                Some(child) => Ok(Lookup::Found(get(t, child)?)),
                None if dir.loaded_epoch == self.epoch => Ok(Lookup::Missing),
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
        self.store.write(|t| {
            let mut d = get_dir(t, dir)?;
            if d.loaded_epoch == self.epoch {
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
                    let mut rec = get(t, ino)?;
                    if rec.kind == c.kind {
                        if rec.kind == FileKind::File
                            && rec.version.is_some()
                            && rec.version != c.version
                        {
                            rec.size = c.size;
                            rec.mtime_ns = c.mtime_ns;
                            rec.ctime_ns = c.mtime_ns;
                            rec.version = c.version;
                            t.put_inode(&rec)?;
                        }
                        continue;
                    }
                    // The kind changed underneath: drop the old entry, then add as new.
                    if rec.kind == FileKind::Dir {
                        d.nlink -= 1;
                    }
                    t.remove_dentry(dir, &c.name)?;
                    remove_subtree(t, ino)?;
                }
                let ino = alloc_ino(t)?;
                let (mode, nlink, loaded_epoch) = match c.kind {
                    FileKind::File => (defaults.file_mode, 1, 0),
                    FileKind::Dir => {
                        d.nlink += 1;
                        (defaults.dir_mode, 2, 0)
                    }
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
                })?;
                t.put_dentry(dir, &c.name, ino)?;
            }
            for (name, ino) in existing {
                if seen.contains(&name) {
                    continue;
                }
                let rec = get(t, ino)?;
                if rec.kind == FileKind::File && rec.version.is_none() {
                    continue; // written through this mount, not uploaded yet
                }
                if rec.kind == FileKind::Dir {
                    d.nlink -= 1;
                }
                t.remove_dentry(dir, &name)?;
                remove_subtree(t, ino)?;
            }
            d.loaded_epoch = self.epoch;
            let _ = now_ns;
            t.put_inode(&d)
        })
    }

    /// Creates a file or directory named `name` in the loaded directory `parent`.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &self,
        parent: InodeNo,
        name: &[u8],
        kind: FileKind,
        mode: u32,
        uid: u32,
        gid: u32,
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
            let (nlink, loaded_epoch) = match kind {
                FileKind::File => (1, 0),
                FileKind::Dir => {
                    dir.nlink += 1;
                    (2, self.epoch)
                }
            };
            let rec = InodeRecord {
                ino,
                kind,
                parent,
                name: name.to_vec(),
                size: 0,
                mode: mode & 0o7777,
                uid,
                gid,
                atime_ns: now_ns,
                mtime_ns: now_ns,
                ctime_ns: now_ns,
                nlink,
                version: None,
                loaded_epoch,
            };
            t.put_inode(&rec)?;
            t.put_dentry(parent, name, ino)?;
            touch_dir(t, &mut dir, now_ns)?;
            Ok(rec)
        })
    }

    /// Removes the non-directory `name` from `parent`; returns the removed record.
    pub fn unlink(
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
            let mut rec = get(t, ino)?;
            if rec.kind == FileKind::Dir {
                return Err(MetaError::IsADirectory(ino));
            }
            t.remove_dentry(parent, name)?;
            rec.nlink = rec.nlink.saturating_sub(1);
            rec.ctime_ns = now_ns;
            if rec.nlink == 0 {
                t.remove_inode(ino)?;
            } else {
                t.put_inode(&rec)?;
            }
            touch_dir(t, &mut dir, now_ns)?;
            Ok(rec)
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
            if rec.loaded_epoch != self.epoch {
                return Err(MetaError::Unloaded(ino));
            }
            if t.has_children(ino)? {
                return Err(MetaError::DirectoryNotEmpty(ino));
            }
            t.remove_dentry(parent, name)?;
            t.remove_inode(ino)?;
            dir.nlink -= 1;
            touch_dir(t, &mut dir, now_ns)?;
            Ok(rec)
        })
    }

    /// Renames `parent/name` to `newparent/newname`, replacing a compatible target.
    /// Returns the replaced record, if any. Fails with `Unloaded(d)` when directory `d`
    /// must be loaded first (the new parent, or a target directory whose emptiness matters).
    #[allow(clippy::too_many_arguments)]
    pub fn rename(
        &self,
        parent: InodeNo,
        name: &[u8],
        newparent: InodeNo,
        newname: &[u8],
        noreplace: bool,
        now_ns: i64,
    ) -> Result<Option<InodeRecord>, MetaError> {
        validate_name(name)?;
        validate_name(newname)?;
        self.store.write(|t| {
            get_dir(t, parent)?;
            let np = get_dir(t, newparent)?;
            if np.loaded_epoch != self.epoch {
                return Err(MetaError::Unloaded(newparent));
            }
            let ino = t
                .dentry(parent, name)?
                .ok_or_else(|| MetaError::NotFound(String::from_utf8_lossy(name).into_owned()))?;
            let mut rec = get(t, ino)?;
            if rec.kind == FileKind::Dir {
                // Refuse to move a directory into itself or below itself.
                let mut cur = newparent;
                for _ in 0..MAX_DEPTH {
                    if cur == ino {
                        return Err(MetaError::InvalidArgument(
                            "cannot move a directory into its own subtree".into(),
                        ));
                    }
                    if cur == ROOT_INO {
                        break;
                    }
                    cur = get(t, cur)?.parent;
                }
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
                let trec = get(t, target)?;
                match (rec.kind, trec.kind) {
                    (FileKind::Dir, FileKind::File) => {
                        return Err(MetaError::NotADirectory(target));
                    }
                    (FileKind::File, FileKind::Dir) => return Err(MetaError::IsADirectory(target)),
                    (FileKind::Dir, FileKind::Dir) => {
                        if trec.loaded_epoch != self.epoch {
                            return Err(MetaError::Unloaded(target));
                        }
                        if t.has_children(target)? {
                            return Err(MetaError::DirectoryNotEmpty(target));
                        }
                    }
                    (FileKind::File, FileKind::File) => {}
                }
                t.remove_dentry(newparent, newname)?;
                t.remove_inode(target)?;
                if trec.kind == FileKind::Dir {
                    let mut np = get(t, newparent)?;
                    np.nlink -= 1;
                    t.put_inode(&np)?;
                }
                replaced = Some(trec);
            }
            t.remove_dentry(parent, name)?;
            t.put_dentry(newparent, newname, ino)?;
            rec.parent = newparent;
            rec.name = newname.to_vec();
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

    /// Applies attribute changes.
    pub fn set_attr(&self, ino: InodeNo, a: SetAttr) -> Result<InodeRecord, MetaError> {
        self.store.write(|t| {
            let mut rec = get(t, ino)?;
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
            if let Some(v) = a.version {
                rec.version = v;
            }
            t.put_inode(&rec)?;
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
                let rec = get(t, cur)?;
                parts.push(rec.name);
                cur = rec.parent;
            }
            Err(MetaError::Corrupt(format!(
                "parent chain of inode {ino} too deep"
            )))
        })
    }

    /// Number of inodes ever allocated (an upper bound on live inodes).
    pub fn inodes_allocated(&self) -> Result<u64, MetaError> {
        self.store
            .read(|t| Ok(t.counter(NEXT_INO)?.saturating_sub(1)))
    }
}
