//! redb store: the embedded default. One database file holds three tables.
//!
//! Write transactions commit with `Durability::None` (atomic and visible, not yet fsynced):
//! an fsync per namespace change capped creates and unlinks near a thousand per second.
//! Durability comes from `sync` (called for fsync, fsyncdir and unmount), from a flusher
//! thread that makes pending commits durable within [`FLUSH_INTERVAL`], and from drop. A
//! crash of the host loses at most that last interval, never part of a transaction; the
//! UFS, which is always ahead of the namespace, is reconciled at the next listing.

use std::path::Path;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{NamespaceStore, StoreRead, StoreWrite};
use crate::error::MetaError;
use crate::record::{InodeNo, InodeRecord};

const INODES: TableDefinition<u64, &[u8]> = TableDefinition::new("inodes");
const DENTRIES: TableDefinition<(u64, &[u8]), u64> = TableDefinition::new("dentries");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const XATTRS: TableDefinition<(u64, &[u8]), &[u8]> = TableDefinition::new("xattrs");

/// How long a committed change may stay non-durable.
pub const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

struct Shared {
    db: Database,
    /// Commits made so far (each `write` that committed bumps it).
    committed: AtomicU64,
    /// The value of `committed` that the last durable commit covered. Only moved under
    /// `syncing`.
    durable: AtomicU64,
    /// Held while a durable commit runs. A caller of `sync` returns only once a durable
    /// commit that began after its own commits has finished: a caller that found the
    /// lock taken waits, then finds its commits covered (group commit) or runs one more.
    syncing: Mutex<()>,
}

impl Shared {
    fn sync(&self) -> Result<(), MetaError> {
        let want = self.committed.load(Ordering::Acquire);
        if self.durable.load(Ordering::Acquire) >= want {
            return Ok(());
        }
        let _g = self
            .syncing
            .lock()
            .map_err(|_| MetaError::Storage("namespace sync lock poisoned".into()))?;
        if self.durable.load(Ordering::Acquire) >= want {
            return Ok(()); // a durable commit that began after ours covered it
        }
        // Read before the durable commit begins: every write counted so far committed
        // before it, so it covers them all.
        let covers = self.committed.load(Ordering::Acquire);
        // An empty Immediate commit persists every earlier None commit.
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| MetaError::Storage(e.to_string()))?;
        txn.commit()?;
        self.durable.store(covers, Ordering::Release);
        Ok(())
    }
}

/// A namespace store in one redb file.
pub struct RedbStore {
    shared: Arc<Shared>,
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        if let Err(e) = self.shared.sync() {
            tracing::error!(error = %e, "namespace: final durable commit failed");
        }
    }
}

impl RedbStore {
    /// Open (or create) the database at `path` and make sure every table exists.
    pub fn open(path: &Path) -> Result<Self, MetaError> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        {
            txn.open_table(INODES)?;
            txn.open_table(DENTRIES)?;
            txn.open_table(COUNTERS)?;
            txn.open_table(XATTRS)?;
        }
        txn.commit()?;
        let shared = Arc::new(Shared {
            db,
            committed: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            syncing: Mutex::new(()),
        });
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("alluxio-ns-flush".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(FLUSH_INTERVAL);
                    let Some(s) = weak.upgrade() else { return };
                    if let Err(e) = s.sync() {
                        tracing::error!(error = %e, "namespace: durable commit failed");
                    }
                }
            })
            .map_err(|e| MetaError::Storage(e.to_string()))?;
        Ok(Self { shared })
    }
}

struct Tables<I, D, C, X> {
    inodes: I,
    dentries: D,
    counters: C,
    xattrs: X,
}

impl<I, D, C, X> StoreRead for Tables<I, D, C, X>
where
    I: ReadableTable<u64, &'static [u8]>,
    D: ReadableTable<(u64, &'static [u8]), u64>,
    C: ReadableTable<&'static str, u64>,
    X: ReadableTable<(u64, &'static [u8]), &'static [u8]>,
{
    fn inode(&self, ino: InodeNo) -> Result<Option<InodeRecord>, MetaError> {
        match self.inodes.get(ino.0)? {
            Some(v) => Ok(Some(InodeRecord::decode(v.value())?)),
            None => Ok(None),
        }
    }
    fn dentry(&self, parent: InodeNo, name: &[u8]) -> Result<Option<InodeNo>, MetaError> {
        Ok(self
            .dentries
            .get((parent.0, name))?
            .map(|v| InodeNo(v.value())))
    }
    fn children(&self, parent: InodeNo) -> Result<Vec<(Vec<u8>, InodeNo)>, MetaError> {
        let empty: &[u8] = &[];
        let mut out = Vec::new();
        for item in self.dentries.range((parent.0, empty)..)? {
            let (k, v) = item?;
            let (p, name) = k.value();
            if p != parent.0 {
                break;
            }
            out.push((name.to_vec(), InodeNo(v.value())));
        }
        Ok(out)
    }
    fn all_inodes(&self) -> Result<Vec<InodeRecord>, MetaError> {
        let mut out = Vec::new();
        for item in self.inodes.iter()? {
            let (_, v) = item?;
            out.push(InodeRecord::decode(v.value())?);
        }
        Ok(out)
    }
    fn all_dentries(&self) -> Result<Vec<(InodeNo, Vec<u8>, InodeNo)>, MetaError> {
        let mut out = Vec::new();
        for item in self.dentries.iter()? {
            let (k, v) = item?;
            let (p, name) = k.value();
            out.push((InodeNo(p), name.to_vec(), InodeNo(v.value())));
        }
        Ok(out)
    }
    fn has_children(&self, parent: InodeNo) -> Result<bool, MetaError> {
        let empty: &[u8] = &[];
        match self.dentries.range((parent.0, empty)..)?.next() {
            Some(item) => Ok(item?.0.value().0 == parent.0),
            None => Ok(false),
        }
    }
    fn counter(&self, key: &str) -> Result<u64, MetaError> {
        Ok(self.counters.get(key)?.map(|v| v.value()).unwrap_or(0))
    }
    fn counters_with_prefix(&self, prefix: &str) -> Result<Vec<(String, u64)>, MetaError> {
        let mut out = Vec::new();
        for item in self.counters.range(prefix..)? {
            let (k, v) = item?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_string(), v.value()));
        }
        Ok(out)
    }
    fn xattr(&self, ino: InodeNo, name: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        Ok(self.xattrs.get((ino.0, name))?.map(|v| v.value().to_vec()))
    }
    fn xattr_names(&self, ino: InodeNo) -> Result<Vec<Vec<u8>>, MetaError> {
        let empty: &[u8] = &[];
        let mut out = Vec::new();
        for item in self.xattrs.range((ino.0, empty)..)? {
            let (k, _) = item?;
            let (i, name) = k.value();
            if i != ino.0 {
                break;
            }
            out.push(name.to_vec());
        }
        Ok(out)
    }
}

impl StoreWrite
    for Tables<
        redb::Table<'_, u64, &'static [u8]>,
        redb::Table<'_, (u64, &'static [u8]), u64>,
        redb::Table<'_, &'static str, u64>,
        redb::Table<'_, (u64, &'static [u8]), &'static [u8]>,
    >
{
    fn put_inode(&mut self, rec: &InodeRecord) -> Result<(), MetaError> {
        self.inodes.insert(rec.ino.0, rec.encode().as_slice())?;
        Ok(())
    }
    fn remove_inode(&mut self, ino: InodeNo) -> Result<(), MetaError> {
        self.inodes.remove(ino.0)?;
        Ok(())
    }
    fn put_dentry(
        &mut self,
        parent: InodeNo,
        name: &[u8],
        child: InodeNo,
    ) -> Result<(), MetaError> {
        self.dentries.insert((parent.0, name), child.0)?;
        Ok(())
    }
    fn remove_dentry(&mut self, parent: InodeNo, name: &[u8]) -> Result<(), MetaError> {
        self.dentries.remove((parent.0, name))?;
        Ok(())
    }
    fn set_counter(&mut self, key: &str, value: u64) -> Result<(), MetaError> {
        self.counters.insert(key, value)?;
        Ok(())
    }
    fn remove_counter(&mut self, key: &str) -> Result<(), MetaError> {
        self.counters.remove(key)?;
        Ok(())
    }
    fn put_xattr(&mut self, ino: InodeNo, name: &[u8], value: &[u8]) -> Result<(), MetaError> {
        self.xattrs.insert((ino.0, name), value)?;
        Ok(())
    }
    fn remove_xattr(&mut self, ino: InodeNo, name: &[u8]) -> Result<(), MetaError> {
        self.xattrs.remove((ino.0, name))?;
        Ok(())
    }
}

impl NamespaceStore for RedbStore {
    fn read<R>(
        &self,
        f: impl FnOnce(&dyn StoreRead) -> Result<R, MetaError>,
    ) -> Result<R, MetaError> {
        let txn = self.shared.db.begin_read()?;
        let tables = Tables {
            inodes: txn.open_table(INODES)?,
            dentries: txn.open_table(DENTRIES)?,
            counters: txn.open_table(COUNTERS)?,
            xattrs: txn.open_table(XATTRS)?,
        };
        f(&tables)
    }

    fn write<R>(
        &self,
        f: impl FnOnce(&mut dyn StoreWrite) -> Result<R, MetaError>,
    ) -> Result<R, MetaError> {
        let mut txn = self.shared.db.begin_write()?;
        txn.set_durability(Durability::None)
            .map_err(|e| MetaError::Storage(e.to_string()))?;
        let r = {
            let mut tables = Tables {
                inodes: txn.open_table(INODES)?,
                dentries: txn.open_table(DENTRIES)?,
                counters: txn.open_table(COUNTERS)?,
                xattrs: txn.open_table(XATTRS)?,
            };
            f(&mut tables)
        };
        match r {
            Ok(v) => {
                txn.commit()?;
                self.shared.committed.fetch_add(1, Ordering::AcqRel);
                Ok(v)
            }
            Err(e) => {
                txn.abort()?;
                Err(e)
            }
        }
    }

    fn sync(&self) -> Result<(), MetaError> {
        self.shared.sync()
    }
}
