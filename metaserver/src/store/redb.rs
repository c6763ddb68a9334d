//! redb store: the embedded default. One database file holds three tables.
//!
//! Write transactions commit with `Durability::None` (atomic and visible, not yet fsynced):
//! an fsync per namespace change capped creates and unlinks near a thousand per second.
//! Each commit's changes are also appended to the redo log beside the file (`redo.rs`), so
//! a committed change survives a crash of the process (kill -9) as soon as `write`
//! returns. Durability against a crash of the host comes from `sync` (called for fsync,
//! fsyncdir and unmount), from a flusher thread that makes pending commits durable within
//! [`FLUSH_INTERVAL`], and from drop: a host crash loses at most that last interval, never
//! part of a transaction; the UFS, which is always ahead of the namespace, is reconciled
//! at the next listing.

use std::path::Path;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::redo::{Changes, RedoLog};
use super::{NamespaceStore, StoreRead, StoreWrite};
use crate::error::MetaError;
use crate::record::{InodeNo, InodeRecord};

const INODES: TableDefinition<u64, &[u8]> = TableDefinition::new("inodes");
const DENTRIES: TableDefinition<(u64, &[u8]), u64> = TableDefinition::new("dentries");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const XATTRS: TableDefinition<(u64, &[u8]), &[u8]> = TableDefinition::new("xattrs");
/// The redo log's bookkeeping: `durable`, the last commit a durable commit covered.
const REDO: TableDefinition<&str, u64> = TableDefinition::new("redo");

/// How long a committed change may stay non-durable.
pub const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

struct Shared {
    db: Database,
    /// Commits made so far (each `write` that committed bumps it), counted on from the
    /// last durable commit of earlier runs: a commit's number is its redo record's.
    committed: AtomicU64,
    /// The value of `committed` that the last durable commit covered. Only moved under
    /// `syncing`.
    durable: AtomicU64,
    /// Held while a durable commit runs. A caller of `sync` returns only once a durable
    /// commit that began after its own commits has finished: a caller that found the
    /// lock taken waits, then finds its commits covered (group commit) or runs one more.
    syncing: Mutex<()>,
    /// Held by each writer from its transaction's start to its record's append, and by a
    /// durable commit until the log is emptied: records are in commit order, and emptying
    /// the log drops only records the durable commit covered.
    log: Mutex<RedoLog>,
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
        let mut log = self.lock_log()?;
        self.durable_commit(&mut log)
    }

    fn lock_log(&self) -> Result<std::sync::MutexGuard<'_, RedoLog>, MetaError> {
        self.log
            .lock()
            .map_err(|_| MetaError::Storage("namespace redo log lock poisoned".into()))
    }

    /// A durable commit covering every commit so far, then an empty log. With the log
    /// held, no commit is in progress: `committed` counts exactly what this one covers.
    fn durable_commit(&self, log: &mut RedoLog) -> Result<(), MetaError> {
        let covers = self.committed.load(Ordering::Acquire);
        // An Immediate commit persists every earlier None commit.
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| MetaError::Storage(e.to_string()))?;
        txn.open_table(REDO)?.insert("durable", covers)?;
        txn.commit()?;
        self.durable.store(covers, Ordering::Release);
        // A failure here leaves records the next start skips (numbered up to `covers`).
        if let Err(e) = log.clear() {
            tracing::warn!(error = %e, "namespace redo log: cannot empty it after a durable commit");
        }
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
    /// Open (or create) the database at `path` and make sure every table exists. Commits
    /// of an earlier run that its redo log (`path` with the extension `redo`) holds and
    /// no durable commit covered are applied again first, in order.
    pub fn open(path: &Path) -> Result<Self, MetaError> {
        let db = Database::create(path)?;
        let mut log = RedoLog::open(&path.with_extension("redo"))
            .map_err(|e| MetaError::Storage(format!("namespace redo log: {e}")))?;
        let records = log
            .records()
            .map_err(|e| MetaError::Storage(format!("namespace redo log: {e}")))?;
        let mut txn = db.begin_write()?;
        let durable = {
            txn.open_table(INODES)?;
            txn.open_table(DENTRIES)?;
            txn.open_table(COUNTERS)?;
            txn.open_table(XATTRS)?;
            let mut redo = txn.open_table(REDO)?;
            let durable = redo.get("durable")?.map(|v| v.value()).unwrap_or(0);
            let mut last = durable;
            let replay: Vec<_> = records.iter().filter(|(seq, _)| *seq > durable).collect();
            if !replay.is_empty() {
                let mut tables = Tables {
                    inodes: txn.open_table(INODES)?,
                    dentries: txn.open_table(DENTRIES)?,
                    counters: txn.open_table(COUNTERS)?,
                    xattrs: txn.open_table(XATTRS)?,
                };
                for (seq, payload) in &replay {
                    super::redo::apply(payload, &mut tables)?;
                    last = *seq;
                }
                tracing::info!(
                    commits = replay.len(),
                    "namespace: commits of the last run not yet durable were replayed from the redo log"
                );
            }
            redo.insert("durable", last)?;
            last
        };
        txn.set_durability(Durability::Immediate)
            .map_err(|e| MetaError::Storage(e.to_string()))?;
        txn.commit()?;
        log.clear()
            .map_err(|e| MetaError::Storage(format!("namespace redo log: {e}")))?;
        let shared = Arc::new(Shared {
            db,
            committed: AtomicU64::new(durable),
            durable: AtomicU64::new(durable),
            syncing: Mutex::new(()),
            log: Mutex::new(log),
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

/// A write transaction's tables that record each change for the redo log as it is made.
struct Logged<'c, T> {
    tables: T,
    changes: &'c mut Changes,
}

impl<T: StoreRead> StoreRead for Logged<'_, T> {
    fn inode(&self, ino: InodeNo) -> Result<Option<InodeRecord>, MetaError> {
        self.tables.inode(ino)
    }
    fn dentry(&self, parent: InodeNo, name: &[u8]) -> Result<Option<InodeNo>, MetaError> {
        self.tables.dentry(parent, name)
    }
    fn children(&self, parent: InodeNo) -> Result<Vec<(Vec<u8>, InodeNo)>, MetaError> {
        self.tables.children(parent)
    }
    fn has_children(&self, parent: InodeNo) -> Result<bool, MetaError> {
        self.tables.has_children(parent)
    }
    fn counter(&self, key: &str) -> Result<u64, MetaError> {
        self.tables.counter(key)
    }
    fn counters_with_prefix(&self, prefix: &str) -> Result<Vec<(String, u64)>, MetaError> {
        self.tables.counters_with_prefix(prefix)
    }
    fn xattr(&self, ino: InodeNo, name: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        self.tables.xattr(ino, name)
    }
    fn xattr_names(&self, ino: InodeNo) -> Result<Vec<Vec<u8>>, MetaError> {
        self.tables.xattr_names(ino)
    }
    fn all_inodes(&self) -> Result<Vec<InodeRecord>, MetaError> {
        self.tables.all_inodes()
    }
    fn all_dentries(&self) -> Result<Vec<(InodeNo, Vec<u8>, InodeNo)>, MetaError> {
        self.tables.all_dentries()
    }
}

impl<T: StoreWrite> StoreWrite for Logged<'_, T> {
    fn put_inode(&mut self, rec: &InodeRecord) -> Result<(), MetaError> {
        self.tables.put_inode(rec)?;
        self.changes.put_inode(rec);
        Ok(())
    }
    fn remove_inode(&mut self, ino: InodeNo) -> Result<(), MetaError> {
        self.tables.remove_inode(ino)?;
        self.changes.remove_inode(ino);
        Ok(())
    }
    fn put_dentry(
        &mut self,
        parent: InodeNo,
        name: &[u8],
        child: InodeNo,
    ) -> Result<(), MetaError> {
        self.tables.put_dentry(parent, name, child)?;
        self.changes.put_dentry(parent, name, child);
        Ok(())
    }
    fn remove_dentry(&mut self, parent: InodeNo, name: &[u8]) -> Result<(), MetaError> {
        self.tables.remove_dentry(parent, name)?;
        self.changes.remove_dentry(parent, name);
        Ok(())
    }
    fn set_counter(&mut self, key: &str, value: u64) -> Result<(), MetaError> {
        self.tables.set_counter(key, value)?;
        self.changes.set_counter(key, value);
        Ok(())
    }
    fn remove_counter(&mut self, key: &str) -> Result<(), MetaError> {
        self.tables.remove_counter(key)?;
        self.changes.remove_counter(key);
        Ok(())
    }
    fn put_xattr(&mut self, ino: InodeNo, name: &[u8], value: &[u8]) -> Result<(), MetaError> {
        self.tables.put_xattr(ino, name, value)?;
        self.changes.put_xattr(ino, name, value);
        Ok(())
    }
    fn remove_xattr(&mut self, ino: InodeNo, name: &[u8]) -> Result<(), MetaError> {
        self.tables.remove_xattr(ino, name)?;
        self.changes.remove_xattr(ino, name);
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
        let mut log = self.shared.lock_log()?;
        let mut txn = self.shared.db.begin_write()?;
        txn.set_durability(Durability::None)
            .map_err(|e| MetaError::Storage(e.to_string()))?;
        let mut changes = Changes::default();
        let r = {
            let mut tables = Logged {
                tables: Tables {
                    inodes: txn.open_table(INODES)?,
                    dentries: txn.open_table(DENTRIES)?,
                    counters: txn.open_table(COUNTERS)?,
                    xattrs: txn.open_table(XATTRS)?,
                },
                changes: &mut changes,
            };
            f(&mut tables)
        };
        match r {
            Ok(v) => {
                txn.commit()?;
                let seq = self.shared.committed.fetch_add(1, Ordering::AcqRel) + 1;
                if !changes.is_empty()
                    && let Err(e) = log.append(seq, &changes)
                {
                    // Not in the log: only a durable commit keeps it now.
                    tracing::warn!(error = %e, "namespace redo log: append failed; committing durably instead");
                    self.shared.durable_commit(&mut log)?;
                }
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
