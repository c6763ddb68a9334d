//! The mount table as the vfs uses it: which store holds a path of the namespace, and the
//! key there. The daemon's own store (`--ufs`) is the root; the namespace's mount table
//! (`alluxio fs mount /PATH URI`) adds stores at deeper paths, and is fetched again every
//! [`REFRESH`], so every daemon of a metaserver follows `alluxio fs mount` and `unmount`.
//! The pin table (`alluxio fs pin`) is followed the same way, and the TTL table
//! (`alluxio fs setTtl`, see `ttl.rs`) checked.
//!
//! Invariants:
//! - a path belongs to the store mounted at its longest mounted prefix; the key is the rest
//!   of the path under that store's root, so each store keeps the 1:1 layout.
//! - an object never moves between stores by rename: a rename whose source and target
//!   are in different stores gets EXDEV (tools then copy, as across filesystems).
//! - changes under a read-only mount get EROFS.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use alluxio_metaserver::MountEntry;

use super::Vfs;
use crate::config::{MetadataSync, UfsConfig};
use crate::error::FsError;
use crate::fetch::ObjectRead;
use crate::object::ObjectId;
use crate::types::{FileKind, InodeNo};
use crate::ufs::{Ufs, dir_key, file_key};

/// How often the mount table is fetched again.
pub const REFRESH: Duration = Duration::from_secs(1);

/// One mounted store.
struct Store {
    /// Mount path components (empty for the root).
    parts: Vec<Vec<u8>>,
    /// The store, or why it cannot be used: paths under a mount whose store cannot be
    /// configured fail with EIO rather than fall through to the parent's store.
    ufs: Result<Arc<Ufs>, String>,
    readonly: bool,
    /// Its metadata sync policy, when the mount table sets one.
    sync: Option<MetadataSync>,
    /// The table entry it was built from (`None` for the daemon's own root store).
    entry: Option<MountEntry>,
}

/// A table entry's sync policy (`None` when unset or not understood, with a warning).
fn policy(e: &MountEntry) -> Option<MetadataSync> {
    let s = e.sync.as_deref()?;
    match s.parse() {
        Ok(p) => Some(p),
        Err(err) => {
            tracing::warn!(path = %e.path, sync = s, error = %err, "ignoring the mount's sync policy");
            None
        }
    }
}

/// The stores of the namespace, longest mount path first, the root last.
pub(super) struct MountTable {
    stores: Vec<Store>,
}

/// Where a node's object lives: the store holding its path, and its key there.
#[derive(Clone)]
pub(crate) struct Loc {
    pub(super) ufs: Arc<Ufs>,
    pub(super) key: String,
    readonly: bool,
}

impl std::fmt::Debug for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Loc").field(&self.key).finish()
    }
}

impl std::ops::Deref for Loc {
    type Target = str;
    fn deref(&self) -> &str {
        &self.key
    }
}

impl PartialEq for Loc {
    fn eq(&self, o: &Self) -> bool {
        self.same_store(o) && self.key == o.key
    }
}

impl Loc {
    /// The id of `version` of this object (see [`crate::object`]).
    pub(super) fn object(&self, version: &str) -> Arc<ObjectId> {
        self.ufs.object_id(&self.key, version)
    }

    /// `version` of this object, `size` bytes, as inode `owner` reads it.
    pub(super) fn read_of(&self, version: &str, size: u64, owner: InodeNo) -> Arc<ObjectRead> {
        Arc::new(ObjectRead {
            id: self.object(version),
            size,
            store: Some((self.ufs.clone(), self.key.clone())),
            owner,
            for_peer: false,
        })
    }

    /// Whether both are in one store (a rename between them can be done in the UFS).
    pub(super) fn same_store(&self, o: &Loc) -> bool {
        Arc::ptr_eq(&self.ufs, &o.ufs)
    }

    /// EXDEV unless `to` is in the same store.
    pub(super) fn check_same_store(&self, to: &Loc) -> Result<(), FsError> {
        if self.same_store(to) {
            Ok(())
        } else {
            Err(FsError::expected(
                libc::EXDEV,
                "source and target are in different mounted stores",
            ))
        }
    }
}

impl MountTable {
    /// Only the daemon's own store, at the root.
    pub(super) fn root_only(ufs: Arc<Ufs>) -> Self {
        Self {
            stores: vec![Store {
                parts: Vec::new(),
                ufs: Ok(ufs),
                readonly: false,
                sync: None,
                entry: None,
            }],
        }
    }

    fn root(&self) -> &Store {
        self.stores
            .last()
            .expect("the table always holds the root store")
    }

    /// The store holding `parts`, and the rest of the path under its root.
    fn resolve<'a>(&self, parts: &'a [Vec<u8>]) -> (&Store, &'a [Vec<u8>]) {
        for s in &self.stores {
            if parts.starts_with(&s.parts) {
                return (s, &parts[s.parts.len()..]);
            }
        }
        (self.root(), parts)
    }

    /// The multipart part size (every store gets the root store's upload shape).
    /// A mounted store that holds the object with full key `full` in store `store_id`,
    /// and the key under its root.
    pub(super) fn store_for(&self, store_id: &str, full: &str) -> Option<(Arc<Ufs>, String)> {
        self.stores.iter().find_map(|s| {
            let ufs = s.ufs.as_ref().ok()?;
            if ufs.store_id() != store_id {
                return None;
            }
            Some((ufs.clone(), ufs.key_under_root(full)?.to_string()))
        })
    }

    pub(super) fn part_bytes(&self) -> u64 {
        self.root_ufs().part_bytes()
    }

    fn root_ufs(&self) -> &Arc<Ufs> {
        self.root()
            .ufs
            .as_ref()
            .expect("the root store is always configured")
    }

    fn any_readonly(&self) -> bool {
        self.stores.iter().any(|s| s.readonly)
    }

    /// The table for `entries` (the root entry is ignored: the root store is the
    /// daemon's), reusing the stores of `self` whose entry is unchanged.
    fn rebuilt(
        &self,
        entries: Vec<MountEntry>,
        make: impl Fn(&MountEntry) -> Result<Ufs, String>,
    ) -> Self {
        let mut old: HashMap<&str, &Store> = self
            .stores
            .iter()
            .filter_map(|s| s.entry.as_ref().map(|e| (e.path.as_str(), s)))
            .collect();
        let mut stores = Vec::new();
        let mut root_sync = None;
        for e in entries {
            let Ok(parts) = e.components() else { continue };
            if parts.is_empty() {
                // The root store is the daemon's own; the table may set its policy.
                root_sync = policy(&e);
                continue;
            }
            if let Some(s) = old
                .remove(e.path.as_str())
                .filter(|s| s.entry.as_ref() == Some(&e))
            {
                stores.push(Store {
                    parts,
                    ufs: s.ufs.clone(),
                    readonly: s.readonly,
                    sync: s.sync,
                    entry: s.entry.clone(),
                });
                continue;
            }
            stores.push(Store {
                parts,
                ufs: make(&e).map(Arc::new),
                readonly: e.readonly,
                sync: policy(&e),
                entry: Some(e),
            });
        }
        stores.sort_by_key(|s| std::cmp::Reverse(s.parts.len()));
        let root = self.root();
        stores.push(Store {
            parts: Vec::new(),
            ufs: Ok(self.root_ufs().clone()),
            readonly: root.readonly,
            sync: root_sync,
            entry: None,
        });
        Self { stores }
    }

    fn same_entries(&self, entries: &[MountEntry]) -> bool {
        let mine: Vec<&MountEntry> = self
            .stores
            .iter()
            .filter_map(|s| s.entry.as_ref())
            .collect();
        let theirs: Vec<&MountEntry> = entries.iter().filter(|e| e.path != "/").collect();
        let root_sync = entries.iter().find(|e| e.path == "/").and_then(policy);
        mine.len() == theirs.len()
            && theirs.iter().all(|e| mine.contains(e))
            && self.root().sync == root_sync
    }

    /// Whether any store sets its own sync policy.
    fn any_sync_policy(&self) -> bool {
        self.stores.iter().any(|s| s.sync.is_some())
    }
}

impl Vfs {
    pub(super) fn mount_table(&self) -> Arc<MountTable> {
        self.mounts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The store and key of the node at path `parts`.
    pub(super) fn loc_of(&self, parts: &[Vec<u8>], kind: FileKind) -> Result<Loc, FsError> {
        let table = self.mount_table();
        let (store, rest) = table.resolve(parts);
        let key = match kind {
            FileKind::Dir => dir_key(rest),
            _ => file_key(rest),
        }
        .map_err(|_| {
            FsError::expected(
                libc::EINVAL,
                "name is not valid UTF-8; the UFS cannot store it",
            )
        })?;
        let ufs = store.ufs.as_ref().map_err(|e| {
            FsError::new(
                libc::EIO,
                format!("the store mounted here cannot be used: {e}"),
            )
        })?;
        ufs.check_key(&key)?;
        Ok(Loc {
            ufs: ufs.clone(),
            key,
            readonly: store.readonly,
        })
    }

    /// The metadata sync policy for directory `dir`: its store's, else the daemon's.
    pub(super) async fn sync_policy(&self, dir: InodeNo) -> MetadataSync {
        let table = self.mount_table();
        if !table.any_sync_policy() {
            return self.cfg.metadata_sync;
        }
        match self.meta.path(dir).await {
            Ok(parts) => table
                .resolve(&parts)
                .0
                .sync
                .unwrap_or(self.cfg.metadata_sync),
            Err(_) => self.cfg.metadata_sync,
        }
    }

    /// EROFS for a read-only daemon, or when `at` is under a read-only mount.
    pub(super) async fn check_writable(&self, at: InodeNo) -> Result<(), FsError> {
        if self.cfg.read_only {
            return Err(FsError::expected(libc::EROFS, "read-only mount"));
        }
        if self.mount_table().any_readonly() {
            let parts = self.meta.path(at).await?;
            if self.loc_of(&parts, FileKind::Dir)?.readonly {
                return Err(FsError::expected(libc::EROFS, "read-only mounted store"));
            }
        }
        Ok(())
    }

    /// Fetches the namespace's mount table and rebuilds the stores that changed.
    pub async fn refresh_mounts(&self) -> Result<(), FsError> {
        let entries = self.meta.mounts().await?;
        let table = self.mount_table();
        if table.same_entries(&entries) {
            return Ok(());
        }
        let (shape, timeout) = (table.root_ufs().upload_shape(), table.root_ufs().timeout());
        let metrics = self.metrics.clone();
        let fresh = table.rebuilt(entries, |e| {
            let made = UfsConfig::parse(&e.uri, &e.options)
                .map_err(|e| e.to_string())
                .and_then(|cfg| Ufs::new(&cfg, metrics.clone()).map_err(|e| e.to_string()));
            match made {
                Ok(mut u) => {
                    u.set_upload_shape(shape);
                    u.set_timeout(timeout);
                    tracing::info!(path = %e.path, uri = %e.uri, "store mounted");
                    Ok(u)
                }
                Err(err) => {
                    tracing::error!(path = %e.path, uri = %e.uri, error = %err, "cannot mount store; its paths get EIO");
                    Err(err)
                }
            }
        });
        *self.mounts.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        Ok(())
    }

    /// Fetches the pin table and gives the disk tier the inodes of every file at or below
    /// a pinned path (the loaded part of the namespace: what was never listed here is
    /// not cached here either). Returns how many inodes are pinned.
    pub async fn refresh_pins(&self) -> Result<usize, FsError> {
        let paths = self.meta.pins().await?;
        let mut pinned = std::collections::HashSet::new();
        for p in paths {
            let mut ino = alluxio_metaserver::ROOT_INO;
            let mut found = true;
            for c in p.split('/').filter(|c| !c.is_empty()) {
                match self.meta.lookup(ino, c.as_bytes().to_vec()).await? {
                    alluxio_metaserver::Lookup::Found(r) | alluxio_metaserver::Lookup::Stale(r) => {
                        ino = r.ino
                    }
                    _ => {
                        found = false;
                        break;
                    }
                }
            }
            let mut todo = if found { vec![ino] } else { Vec::new() };
            while let Some(i) = todo.pop() {
                let rec = self.meta.get(i).await?;
                if rec.kind == FileKind::Dir {
                    if !self.meta.needs_load(i).await? {
                        todo.extend(self.meta.list(i).await?.into_iter().map(|e| e.ino));
                    }
                } else {
                    pinned.insert(i.0);
                }
            }
        }
        let n = pinned.len();
        self.cache.set_pinned(pinned);
        Ok(n)
    }

    /// `alluxio fs pin` / `unpin` of `path` (relative to the mount root), applied to the
    /// disk tier at once.
    pub async fn pin(&self, path: &str, pinned: bool) -> Result<usize, FsError> {
        let abs = format!("/{}", path.trim_matches('/'));
        self.meta.set_pin(abs, pinned).await?;
        self.refresh_pins().await
    }

    /// Follows the mount table in the background (see [`REFRESH`]).
    pub(super) fn start_mount_refresh(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        self.rt.spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                let Some(vfs) = weak.upgrade() else { return };
                if let Err(e) = vfs.refresh_mounts().await {
                    tracing::warn!(error = %e, "cannot fetch the mount table");
                }
                if let Err(e) = vfs.refresh_pins().await {
                    tracing::warn!(error = %e, "cannot fetch the pin table");
                }
                if let Err(e) = vfs.apply_ttls().await {
                    tracing::warn!(error = %e, "cannot fetch the TTL table");
                }
            }
        });
    }
}

/// The table type the vfs holds.
pub(super) type Shared = RwLock<Arc<MountTable>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> Ufs {
        let cfg = UfsConfig::parse("memory://", &Default::default()).unwrap();
        Ufs::new(&cfg, Default::default()).unwrap()
    }

    fn entry(path: &str, uri: &str) -> MountEntry {
        MountEntry {
            path: path.into(),
            uri: uri.into(),
            options: Default::default(),
            readonly: path == "/ro",
            sync: (path == "/a").then(|| "always".to_string()),
        }
    }

    fn parts(p: &[&str]) -> Vec<Vec<u8>> {
        p.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn longest_prefix_wins_and_a_broken_store_never_falls_through() {
        let root = Arc::new(memory());
        let t = MountTable::root_only(root.clone());
        let entries = vec![
            entry("/", "ignored://"),
            entry("/a", "memory://"),
            entry("/a/b", "memory://"),
            entry("/bad", "broken://"),
            entry("/ro", "memory://"),
        ];
        let make = |e: &MountEntry| {
            if e.uri == "broken://" {
                Err("no such service".to_string())
            } else {
                Ok(memory())
            }
        };
        let t = t.rebuilt(entries.clone(), make);
        let p1 = parts(&["a", "b", "k"]);
        let (s, rest) = t.resolve(&p1);
        assert_eq!(
            (s.parts.clone(), rest.to_vec()),
            (parts(&["a", "b"]), parts(&["k"]))
        );
        let p2 = parts(&["a", "bx"]);
        let (s, rest) = t.resolve(&p2);
        assert_eq!(
            (s.parts.clone(), rest.to_vec()),
            (parts(&["a"]), parts(&["bx"]))
        );
        let (s, _) = t.resolve(&parts(&["z"]));
        assert!(
            Arc::ptr_eq(s.ufs.as_ref().unwrap(), &root),
            "the root store"
        );
        let (s, _) = t.resolve(&parts(&["bad", "k"]));
        assert!(
            s.ufs.is_err(),
            "a broken store stays in the table, unusable"
        );
        assert!(t.any_readonly());
        assert!(t.any_sync_policy());
        let p3 = parts(&["a", "k"]);
        assert_eq!(t.resolve(&p3).0.sync, Some(MetadataSync::Always));
        // Unchanged entries keep their stores; the table compares equal to its entries.
        assert!(t.same_entries(&entries));
        let again = t.rebuilt(entries[..3].to_vec(), make);
        let (a1, _) = t.resolve(&parts(&["a", "k"]));
        let (a2, _) = again.resolve(&parts(&["a", "k"]));
        assert!(Arc::ptr_eq(
            a1.ufs.as_ref().unwrap(),
            a2.ufs.as_ref().unwrap()
        ));
        assert!(!again.same_entries(&entries));
    }
}
