//! In-memory store for tests. A write transaction works on a copy of the maps and swaps it
//! in on success, which gives the abort-on-error rule for free at test-sized namespaces.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{NamespaceStore, StoreRead, StoreWrite};
use crate::error::MetaError;
use crate::record::{InodeNo, InodeRecord};

#[derive(Clone, Default)]
struct Maps {
    inodes: BTreeMap<u64, InodeRecord>,
    dentries: BTreeMap<(u64, Vec<u8>), u64>,
    counters: BTreeMap<String, u64>,
    xattrs: BTreeMap<(u64, Vec<u8>), Vec<u8>>,
}

/// A namespace store held in memory.
#[derive(Default)]
pub struct MemoryStore {
    maps: Mutex<Maps>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl StoreRead for Maps {
    fn inode(&self, ino: InodeNo) -> Result<Option<InodeRecord>, MetaError> {
        Ok(self.inodes.get(&ino.0).cloned())
    }
    fn dentry(&self, parent: InodeNo, name: &[u8]) -> Result<Option<InodeNo>, MetaError> {
        Ok(self
            .dentries
            .get(&(parent.0, name.to_vec()))
            .map(|c| InodeNo(*c)))
    }
    fn children(&self, parent: InodeNo) -> Result<Vec<(Vec<u8>, InodeNo)>, MetaError> {
        Ok(self
            .dentries
            .range((parent.0, Vec::new())..)
            .take_while(|((p, _), _)| *p == parent.0)
            .map(|((_, n), c)| (n.clone(), InodeNo(*c)))
            .collect())
    }
    fn all_inodes(&self) -> Result<Vec<InodeRecord>, MetaError> {
        Ok(self.inodes.values().cloned().collect())
    }
    fn all_dentries(&self) -> Result<Vec<(InodeNo, Vec<u8>, InodeNo)>, MetaError> {
        Ok(self
            .dentries
            .iter()
            .map(|((p, n), c)| (InodeNo(*p), n.clone(), InodeNo(*c)))
            .collect())
    }
    fn has_children(&self, parent: InodeNo) -> Result<bool, MetaError> {
        Ok(self
            .dentries
            .range((parent.0, Vec::new())..)
            .next()
            .is_some_and(|((p, _), _)| *p == parent.0))
    }
    fn counter(&self, key: &str) -> Result<u64, MetaError> {
        Ok(self.counters.get(key).copied().unwrap_or(0))
    }
    fn counters_with_prefix(&self, prefix: &str) -> Result<Vec<(String, u64)>, MetaError> {
        Ok(self
            .counters
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), *v))
            .collect())
    }
    fn xattr(&self, ino: InodeNo, name: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        Ok(self.xattrs.get(&(ino.0, name.to_vec())).cloned())
    }
    fn xattr_names(&self, ino: InodeNo) -> Result<Vec<Vec<u8>>, MetaError> {
        Ok(self
            .xattrs
            .range((ino.0, Vec::new())..)
            .take_while(|((i, _), _)| *i == ino.0)
            .map(|((_, n), _)| n.clone())
            .collect())
    }
}

impl StoreWrite for Maps {
    fn put_inode(&mut self, rec: &InodeRecord) -> Result<(), MetaError> {
        self.inodes.insert(rec.ino.0, rec.clone());
        Ok(())
    }
    fn remove_inode(&mut self, ino: InodeNo) -> Result<(), MetaError> {
        self.inodes.remove(&ino.0);
        Ok(())
    }
    fn put_dentry(
        &mut self,
        parent: InodeNo,
        name: &[u8],
        child: InodeNo,
    ) -> Result<(), MetaError> {
        self.dentries.insert((parent.0, name.to_vec()), child.0);
        Ok(())
    }
    fn remove_dentry(&mut self, parent: InodeNo, name: &[u8]) -> Result<(), MetaError> {
        self.dentries.remove(&(parent.0, name.to_vec()));
        Ok(())
    }
    fn set_counter(&mut self, key: &str, value: u64) -> Result<(), MetaError> {
        self.counters.insert(key.to_string(), value);
        Ok(())
    }
    fn remove_counter(&mut self, key: &str) -> Result<(), MetaError> {
        self.counters.remove(key);
        Ok(())
    }
    fn put_xattr(&mut self, ino: InodeNo, name: &[u8], value: &[u8]) -> Result<(), MetaError> {
        self.xattrs.insert((ino.0, name.to_vec()), value.to_vec());
        Ok(())
    }
    fn remove_xattr(&mut self, ino: InodeNo, name: &[u8]) -> Result<(), MetaError> {
        self.xattrs.remove(&(ino.0, name.to_vec()));
        Ok(())
    }
}

impl NamespaceStore for MemoryStore {
    fn read<R>(
        &self,
        f: impl FnOnce(&dyn StoreRead) -> Result<R, MetaError>,
    ) -> Result<R, MetaError> {
        let maps = self
            .maps
            .lock()
            .map_err(|_| MetaError::Storage("memory store lock poisoned".into()))?;
        f(&*maps)
    }

    fn write<R>(
        &self,
        f: impl FnOnce(&mut dyn StoreWrite) -> Result<R, MetaError>,
    ) -> Result<R, MetaError> {
        let mut maps = self
            .maps
            .lock()
            .map_err(|_| MetaError::Storage("memory store lock poisoned".into()))?;
        let mut copy = maps.clone();
        let r = f(&mut copy)?;
        *maps = copy;
        Ok(r)
    }

    fn sync(&self) -> Result<(), MetaError> {
        Ok(()) // nothing to persist
    }
}
