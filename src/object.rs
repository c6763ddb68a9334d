//! What a cached page is a slice of, named so that the name means the same bytes on every
//! host (DESIGN decision 10).
//!
//! An [`ObjectId`] is (store, object key, version): the store is where the bytes live (a
//! service and its bucket, container or server, never a mount or a namespace), the key is
//! the object's full key in that store (the mount's prefix included), and the version is
//! the store's name for one content of the object. Two daemons that mount the same bucket
//! under different prefixes, or through different namespaces, name its pages alike. A
//! [`PageKey`] adds the page index.
//!
//! Invariants:
//! - Two different contents never share an id: the version changes with the content (see
//!   [`ObjectVersion`]), and the store and key pin which object it is a version of.
//! - An id whose version only this daemon can read ([`ObjectVersion::Pending`], a journal
//!   entry not uploaded yet) is not [`ObjectId::shareable`]: it must never be offered to or
//!   asked of another host.
//! - Nothing daemon-local (an inode number, a mount path) is part of the id. Which inode
//!   cached a page is kept beside it where the local cache needs it (freeing, pinning).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

pub use alluxio_metaserver::{ObjectVersion, digest};

use crate::types::PageIdx;

/// One version of one object in one store. Cheap to compare and hash: the 64-bit digest
/// of its parts is computed once, at construction.
#[derive(Debug, Clone)]
pub struct ObjectId {
    store: Arc<str>,
    key: Box<str>,
    version: ObjectVersion,
    /// The version's text form (what the store is asked for, and what the disk tier
    /// records), kept so the hot path never formats it.
    version_text: Box<str>,
    digest: u64,
}

impl ObjectId {
    /// The id of `version` of object `key` in `store` (see [`crate::ufs::Ufs::store_id`]).
    pub fn new(store: Arc<str>, key: &str, version: &str) -> Self {
        let digest = digest(&[store.as_bytes(), key.as_bytes(), version.as_bytes()]);
        Self {
            store,
            key: key.into(),
            version: ObjectVersion::parse(version),
            version_text: version.into(),
            digest,
        }
    }

    /// The store the bytes live in.
    pub fn store(&self) -> &str {
        &self.store
    }

    /// The object's full key in the store.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The version, typed.
    pub fn version(&self) -> &ObjectVersion {
        &self.version
    }

    /// The version's text form, as records and the store name it.
    pub fn version_text(&self) -> &str {
        &self.version_text
    }

    /// Whether another host may ask for or be given these bytes: only for versions the
    /// store holds.
    pub fn shareable(&self) -> bool {
        self.version.in_store()
    }

    /// A 64-bit digest of (store, key, version), stable across processes and hosts (the
    /// disk tier names its files by it).
    pub fn digest(&self) -> u64 {
        self.digest
    }
}

impl PartialEq for ObjectId {
    fn eq(&self, o: &Self) -> bool {
        self.digest == o.digest
            && self.version_text == o.version_text
            && self.key == o.key
            && self.store == o.store
    }
}

impl Eq for ObjectId {}

impl Hash for ObjectId {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64(self.digest);
    }
}

impl std::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}@{}", self.store, self.key, self.version_text)
    }
}

/// Identity of one cached page: a page of one version of one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageKey {
    /// What the page is a slice of.
    pub object: Arc<ObjectId>,
    /// Page index within the object.
    pub idx: PageIdx,
}

impl PageKey {
    /// Page `idx` of `object`.
    pub fn new(object: &Arc<ObjectId>, idx: u64) -> Self {
        Self {
            object: object.clone(),
            idx: PageIdx(idx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_equal_exactly_when_store_key_and_version_are() {
        let s: Arc<str> = Arc::from("s3://b@http://127.0.0.1:9000");
        let a = ObjectId::new(s.clone(), "data/x", "e:1");
        assert_eq!(a, ObjectId::new(s.clone(), "data/x", "e:1"));
        assert_ne!(a, ObjectId::new(s.clone(), "data/x", "e:2"));
        assert_ne!(a, ObjectId::new(s.clone(), "data/y", "e:1"));
        assert_ne!(a, ObjectId::new(Arc::from("s3://c"), "data/x", "e:1"));
        // Part boundaries count: ("ab", "c") is not ("a", "bc").
        assert_ne!(
            ObjectId::new(s.clone(), "ab", "c").digest(),
            ObjectId::new(s.clone(), "a", "bc").digest()
        );
        assert!(a.shareable());
        assert!(!ObjectId::new(s, "data/x", "pending:7.3").shareable());
    }
}
