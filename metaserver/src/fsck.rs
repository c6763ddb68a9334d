//! `alluxio fsck`'s check of a namespace against itself, and the scan its check against
//! the store starts from.
//!
//! Every rule the namespace keeps, checked over one read transaction of the whole store:
//! - every entry names an existing directory as its parent and an existing inode;
//! - a directory has exactly one entry (the root none), reaches the root through its
//!   parents, and has `nlink` 2 plus its subdirectories;
//! - a non-directory's `nlink` is the number of entries naming it, and its primary link
//!   (`parent`, `name`, from which its key is derived) is one of them;
//! - an inode with no entries is an orphan (open when a daemon stopped) and is recorded
//!   as one; every recorded orphan exists and has no entries.
//!
//! A repair changes only what loses nothing: it removes entries that point nowhere,
//! sets link counts and primary links from the entries, and drops orphan records of
//! inodes that are gone or named again. An unnamed inode that is not recorded as an
//! orphan is dropped only when its bytes are not this namespace's alone (its object
//! is in the store, or it has none); a file whose bytes are pending in a journal, and
//! a directory cut off from the root, are reported and left as they are.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::MetaError;
use crate::namespace::{NO_PARENT, Namespace, ORPHAN_PREFIX, is_mount_point};
use crate::record::{FileKind, InodeNo, InodeRecord, ROOT_INO};
use crate::store::{NamespaceStore, StoreRead, StoreWrite};
use crate::version::ObjectVersion;

/// What the check found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// Inconsistencies found, one line each.
    pub problems: Vec<String>,
    /// What a repair changed, one line each (empty without `--repair`).
    pub repaired: Vec<String>,
    /// Regular files whose bytes should be in the store, for the check against it.
    pub files: Vec<StoreFile>,
    /// Directories reachable from the root and listed in the namespace's last epoch that
    /// listed them, with the names the namespace has in them.
    pub dirs: Vec<StoreDir>,
    /// Inodes scanned.
    pub inodes: u64,
    /// Directory entries scanned.
    pub entries: u64,
}

/// A file the store should hold at `path` (components from the root), of `size` bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreFile {
    /// Its inode.
    pub ino: InodeNo,
    /// Its primary link's path from the root.
    pub path: Vec<Vec<u8>>,
    /// Its size.
    pub size: u64,
    /// The store version the namespace has for it.
    pub version: String,
}

/// A directory at `path` and the names the namespace has in it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreDir {
    /// Its inode.
    pub ino: InodeNo,
    /// Its path from the root.
    pub path: Vec<Vec<u8>>,
    /// The names in it, ordered.
    pub names: Vec<Vec<u8>>,
}

fn show(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// Checks the namespace in `store`; with `repair`, fixes what loses nothing (see the
/// module comment) in one write transaction, after the scan.
pub fn check<S: NamespaceStore>(store: &S, repair: bool) -> Result<Report, MetaError> {
    let (mut report, fixes) = store.read(|t| scan(t))?;
    if repair && !fixes.is_empty() {
        store.write(|t| {
            for f in &fixes {
                f.apply(t)?;
            }
            Ok(())
        })?;
        report.repaired = fixes.iter().map(Fix::describe).collect();
    }
    Ok(report)
}

impl<S: NamespaceStore> Namespace<S> {
    /// [`check`] of this namespace's store.
    pub fn fsck(&self, repair: bool) -> Result<Report, MetaError> {
        check(self.store(), repair)
    }
}

/// One change a repair makes.
enum Fix {
    RemoveEntry(InodeNo, Vec<u8>),
    SetNlink(InodeNo, u32),
    SetPrimary(InodeNo, InodeNo, Vec<u8>),
    DropInode(InodeNo),
    DropOrphanRecord(InodeNo),
}

impl Fix {
    fn apply(&self, t: &mut dyn StoreWrite) -> Result<(), MetaError> {
        match self {
            Fix::RemoveEntry(p, n) => t.remove_dentry(*p, n),
            Fix::SetNlink(ino, n) => match t.inode(*ino)? {
                Some(mut r) => {
                    r.nlink = *n;
                    t.put_inode(&r)
                }
                None => Ok(()),
            },
            Fix::SetPrimary(ino, p, n) => match t.inode(*ino)? {
                Some(mut r) => {
                    r.links.retain(|(lp, ln)| !(lp == p && ln == n));
                    if r.parent != NO_PARENT && !(r.parent == *p && r.name == *n) {
                        r.links.push((r.parent, std::mem::take(&mut r.name)));
                    }
                    r.parent = *p;
                    r.name = n.clone();
                    t.put_inode(&r)
                }
                None => Ok(()),
            },
            Fix::DropInode(ino) => {
                for x in t.xattr_names(*ino)? {
                    t.remove_xattr(*ino, &x)?;
                }
                t.remove_inode(*ino)
            }
            Fix::DropOrphanRecord(ino) => t.remove_counter(&format!("{ORPHAN_PREFIX}{}", ino.0)),
        }
    }

    fn describe(&self) -> String {
        match self {
            Fix::RemoveEntry(p, n) => format!("removed the entry {:?} in {p}", show(n)),
            Fix::SetNlink(ino, n) => format!("set the link count of inode {ino} to {n}"),
            Fix::SetPrimary(ino, p, n) => {
                format!("made {:?} in {p} the primary link of inode {ino}", show(n))
            }
            Fix::DropInode(ino) => format!("dropped inode {ino}, which no name reached"),
            Fix::DropOrphanRecord(ino) => format!("dropped the orphan record of inode {ino}"),
        }
    }
}

fn scan(t: &dyn StoreRead) -> Result<(Report, Vec<Fix>), MetaError> {
    let inodes: BTreeMap<InodeNo, InodeRecord> =
        t.all_inodes()?.into_iter().map(|r| (r.ino, r)).collect();
    let entries = t.all_dentries()?;
    let orphans: BTreeSet<InodeNo> = t
        .counters_with_prefix(ORPHAN_PREFIX)?
        .into_iter()
        .filter_map(|(k, _)| k[ORPHAN_PREFIX.len()..].parse().ok().map(InodeNo))
        .collect();
    let mut r = Report {
        inodes: inodes.len() as u64,
        entries: entries.len() as u64,
        ..Default::default()
    };
    let mut fixes = Vec::new();
    // Names of each inode, and the tree of directories, from the entries that point
    // somewhere.
    let mut names: BTreeMap<InodeNo, Vec<(InodeNo, Vec<u8>)>> = BTreeMap::new();
    let mut children: BTreeMap<InodeNo, Vec<(Vec<u8>, InodeNo)>> = BTreeMap::new();
    for (parent, name, child) in &entries {
        let parent_ok = inodes.get(parent).is_some_and(|p| p.kind == FileKind::Dir);
        if !parent_ok || !inodes.contains_key(child) {
            let what = if parent_ok {
                format!("inode {child}, which does not exist")
            } else {
                format!("a parent {parent} that is no directory here")
            };
            r.problems.push(format!(
                "the entry {:?} in {parent} names {what}",
                show(name)
            ));
            fixes.push(Fix::RemoveEntry(*parent, name.clone()));
            continue;
        }
        names
            .entry(*child)
            .or_default()
            .push((*parent, name.clone()));
        children
            .entry(*parent)
            .or_default()
            .push((name.clone(), *child));
    }
    for (ino, rec) in &inodes {
        let named = names.get(ino).map(Vec::as_slice).unwrap_or_default();
        if *ino == ROOT_INO {
            if !named.is_empty() {
                r.problems
                    .push(format!("the root is named by {} entries", named.len()));
            }
            continue;
        }
        if named.is_empty() {
            if orphans.contains(ino) {
                continue; // open when its daemon stopped; the next open drops it
            }
            let pending = rec.kind == FileKind::File
                && rec
                    .version
                    .as_deref()
                    .is_some_and(|v| !ObjectVersion::parse(v).in_store());
            if rec.kind == FileKind::Dir || pending {
                r.problems.push(format!(
                    "inode {ino} ({:?}, {}) has no name and is no orphan; left as it is: {}",
                    show(&rec.name),
                    kind_name(rec.kind),
                    if pending {
                        "its bytes are only in a journal"
                    } else {
                        "a directory"
                    }
                ));
            } else {
                r.problems.push(format!(
                    "inode {ino} ({:?}) has no name and is no orphan",
                    show(&rec.name)
                ));
                fixes.push(Fix::DropInode(*ino));
            }
            continue;
        }
        if orphans.contains(ino) {
            r.problems.push(format!(
                "inode {ino} is recorded as an orphan but has a name"
            ));
            fixes.push(Fix::DropOrphanRecord(*ino));
        }
        if rec.kind == FileKind::Dir {
            if named.len() > 1 {
                r.problems
                    .push(format!("directory {ino} has {} entries", named.len()));
            }
            let subdirs = children.get(ino).map_or(0, |c| {
                c.iter()
                    .filter(|(_, c)| inodes.get(c).is_some_and(|r| r.kind == FileKind::Dir))
                    .count()
            });
            let want = 2 + subdirs as u32;
            if rec.nlink != want {
                r.problems.push(format!(
                    "directory {ino} has link count {}, not {want}",
                    rec.nlink
                ));
                fixes.push(Fix::SetNlink(*ino, want));
            }
        } else {
            let want = named.len() as u32;
            if rec.nlink != want {
                r.problems.push(format!(
                    "inode {ino} has link count {}, but {want} names",
                    rec.nlink
                ));
                fixes.push(Fix::SetNlink(*ino, want));
            }
        }
        if !named
            .iter()
            .any(|(p, n)| *p == rec.parent && *n == rec.name)
        {
            r.problems.push(format!(
                "inode {ino}'s primary link {:?} in {} is no entry",
                show(&rec.name),
                rec.parent
            ));
            let (p, n) = &named[0];
            fixes.push(Fix::SetPrimary(*ino, *p, n.clone()));
        }
    }
    for ino in &orphans {
        if !inodes.contains_key(ino) {
            r.problems.push(format!(
                "orphan record of inode {ino}, which does not exist"
            ));
            fixes.push(Fix::DropOrphanRecord(*ino));
        }
    }
    // What the root reaches, walked down its entries (each directory once, so a cycle
    // cannot loop); directories not reached are cut off.
    let mut reached = BTreeSet::from([ROOT_INO]);
    // `foreign`: below a mount point, whose objects are in another store.
    let mut todo = vec![(ROOT_INO, Vec::<Vec<u8>>::new(), false)];
    while let Some((dir, path, foreign)) = todo.pop() {
        let kids = children.get(&dir).cloned().unwrap_or_default();
        // A directory never listed (or marked to be listed again) is the next listing's
        // to reconcile: the store is not held to what the namespace has in it.
        let listed = inodes.get(&dir).is_some_and(|d| d.loaded_epoch != 0);
        if !foreign && listed {
            r.dirs.push(StoreDir {
                ino: dir,
                path: path.clone(),
                names: kids.iter().map(|(n, _)| n.clone()).collect(),
            });
        }
        for (name, child) in kids {
            let Some(c) = inodes.get(&child) else {
                continue;
            };
            let mut p = path.clone();
            p.push(name.clone());
            match c.kind {
                FileKind::Dir if reached.insert(child) => {
                    todo.push((child, p, foreign || is_mount_point(c)));
                }
                FileKind::File if !foreign && listed && c.parent == dir && c.name == name => {
                    if let Some(v) = c.version.as_deref()
                        && ObjectVersion::parse(v).in_store()
                    {
                        r.files.push(StoreFile {
                            ino: child,
                            path: p,
                            size: c.size,
                            version: v.to_string(),
                        });
                    }
                }
                _ => {}
            }
        }
    }
    for (ino, rec) in &inodes {
        if rec.kind == FileKind::Dir && !reached.contains(ino) && names.contains_key(ino) {
            r.problems.push(format!(
                "directory {ino} ({:?}) is not reached from the root (a cycle, or cut off)",
                show(&rec.name)
            ));
        }
    }
    Ok((r, fixes))
}

fn kind_name(k: FileKind) -> &'static str {
    match k {
        FileKind::Dir => "directory",
        FileKind::File => "file",
        _ => "special file",
    }
}
