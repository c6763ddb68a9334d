//! ASYNC_THROUGH unlinks whose objects go in the background: the unlink returns once the
//! namespace has dropped the name and the delete is logged, without waiting for the
//! store's DELETE (one round trip of 10-30 ms to a real store); the uploader's task
//! deletes the object, in the queue's order with the uploads.
//!
//! Invariants:
//! - A pending delete is logged (`<cache-dir>/deletes.log`, kept through a crash
//!   of the process) before the namespace drops the name, and is carried out at the next
//!   start if a crash came first.
//! - The object is deleted only while no name is at its path: a file made there since (its
//!   upload will replace the object) or renamed there, or a directory, keeps it. Checked
//!   under the pending delete's own lock, which a rename onto the path takes too
//!   (`Vfs::settle_delete`), so the two never cross.
//! - Until it is carried out, a listing of its directory and a lookup there never show
//!   the object (`Vfs::delete_pending`), and a rmdir or rename of a directory above it
//!   carries it out first (`Vfs::flush_deletes_under`), so the object neither keeps the
//!   directory in the store nor moves with it.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::intents::IntentLog;
use super::{Vfs, lock};
use crate::error::FsError;
use crate::types::{FileKind, InodeNo, ROOT_INO};
use alluxio_metaserver::Lookup;

/// A path from the mount's root, component by component.
pub(super) type Parts = Vec<Vec<u8>>;

/// One pending delete. Its lock is held while the delete is decided and carried out;
/// `done` says it was (or was cancelled by a rename onto its path).
pub(super) struct Pending {
    id: u64,
    done: tokio::sync::Mutex<bool>,
}

/// The pending deletes of a mount.
pub(super) struct Deletes {
    log: IntentLog<Parts>,
    pending: std::sync::Mutex<BTreeMap<Parts, Arc<Pending>>>,
}

impl Deletes {
    /// Opens the log; the deletes an earlier run left are pending again.
    pub(super) fn open(path: &std::path::Path) -> std::io::Result<Self> {
        let (log, left) = IntentLog::open_with_ids(path)?;
        let pending = left
            .into_iter()
            .map(|(id, parts)| {
                (
                    parts,
                    Arc::new(Pending {
                        id,
                        done: tokio::sync::Mutex::new(false),
                    }),
                )
            })
            .collect();
        Ok(Self {
            log,
            pending: std::sync::Mutex::new(pending),
        })
    }

    /// Every pending path (for the queue at start).
    pub(super) fn all(&self) -> Vec<Parts> {
        lock(&self.pending).keys().cloned().collect()
    }

    fn get(&self, parts: &Parts) -> Option<Arc<Pending>> {
        lock(&self.pending).get(parts).cloned()
    }

    fn finish(&self, parts: &Parts, p: &Pending) {
        let mut m = lock(&self.pending);
        if m.get(parts).is_some_and(|q| q.id == p.id) {
            m.remove(parts);
        }
        drop(m);
        self.log.end(p.id);
    }
}

impl Vfs {
    /// Logs the delete of the object at `parts` to be carried out in the background.
    pub(super) fn defer_delete(&self, parts: Parts) -> Result<(), FsError> {
        let d = self
            .deletes
            .as_ref()
            .expect("deferred deletes need the journal");
        let id = d.log.begin(parts.clone())?;
        let p = Arc::new(Pending {
            id,
            done: tokio::sync::Mutex::new(false),
        });
        if let Some(old) = lock(&d.pending).insert(parts, p) {
            // The same path unlinked again before its first delete ran: one delete does.
            d.log.end(old.id);
        }
        Ok(())
    }

    /// Whether a delete of the object at `parts` is pending (listings and lookups leave
    /// it out).
    pub(super) fn delete_pending(&self, parts: &Parts) -> bool {
        self.deletes
            .as_ref()
            .is_some_and(|d| lock(&d.pending).contains_key(parts))
    }

    /// Paths of `dir`'s children with a pending delete, for a listing of `dir`.
    pub(super) fn pending_in(&self, dir: &Parts) -> Vec<Vec<u8>> {
        let Some(d) = &self.deletes else {
            return Vec::new();
        };
        lock(&d.pending)
            .keys()
            .filter(|k| k.len() == dir.len() + 1 && k.starts_with(dir))
            .filter_map(|k| k.last().cloned())
            .collect()
    }

    /// Carries out (now, whatever the queue's order) the pending deletes at `dir` or
    /// below: before a rmdir or a rename of it.
    pub(super) async fn flush_deletes_under(&self, dir: &Parts) -> Result<(), FsError> {
        let Some(d) = &self.deletes else {
            return Ok(());
        };
        let under: Vec<Parts> = lock(&d.pending)
            .keys()
            .filter(|k| k.starts_with(dir))
            .cloned()
            .collect();
        for parts in under {
            self.run_delete(&parts).await?;
        }
        Ok(())
    }

    /// A rename is about to move an object onto `parts`: a pending delete there must not
    /// take it. Waits for one being carried out.
    pub(super) async fn settle_delete(&self, parts: &Parts) {
        if let Some(p) = self.deletes.as_ref().and_then(|d| d.get(parts)) {
            *p.done.lock().await = true;
        }
    }

    /// Carries out the pending delete at `parts`, if it is still pending and no name is
    /// there now. An error leaves it pending (the queue tries again).
    pub(super) async fn run_delete(&self, parts: &Parts) -> Result<(), FsError> {
        let Some(d) = &self.deletes else {
            return Ok(());
        };
        let Some(p) = d.get(parts) else {
            return Ok(());
        };
        let mut done = p.done.lock().await;
        if !*done {
            let _tree = self.tree_shared().await;
            if !self.named(parts).await? {
                let loc = self.loc_of(parts, FileKind::File)?;
                match loc.ufs.delete(&loc).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            *done = true;
        }
        d.finish(parts, &p);
        Ok(())
    }

    /// Whether the namespace has at `parts` a file whose object is kept there, i.e. whose
    /// primary name it is (as far as it knows: a directory not listed in this epoch
    /// answers with what the last one left). A directory, a symlink or a second link
    /// there has no object at that key: the old one still goes.
    async fn named(&self, parts: &Parts) -> Result<bool, FsError> {
        let mut at: InodeNo = ROOT_INO;
        for (i, c) in parts.iter().enumerate() {
            match self.meta.lookup(at, c.clone()).await? {
                Lookup::Found(r) | Lookup::Stale(r) => {
                    if i + 1 == parts.len() {
                        return Ok(
                            r.kind == FileKind::File && alluxio_metaserver::is_primary(&r, at, c)
                        );
                    }
                    at = r.ino;
                }
                Lookup::Missing | Lookup::Unloaded => return Ok(false),
            }
        }
        Ok(false)
    }
}
