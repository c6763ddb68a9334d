//! The ASYNC_THROUGH uploader: one background task that uploads journaled files in order.
//!
//! Invariants: an entry is uploaded only while the namespace still names it as the file's
//! version (a newer flush or an unlink supersedes it); the namespace switches to the UFS
//! version with a compare-and-set on the pending version; the journal entry is dropped only
//! after that. A failed upload goes back to the queue with its own exponential backoff
//! (capped at 60 s), so an unreachable UFS delays uploads but loses nothing, and an entry
//! the UFS keeps refusing never holds up the others. At start the journal is scanned, so
//! uploads resume after a restart.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alluxio_metaserver::{MetaError, SetAttr};
use tokio::sync::mpsc;

use super::journal::pending_tag;
use super::write::LocalCopy;
use super::{Vfs, lock};
use crate::error::{FsError, blocking};
use crate::metrics::Metrics;
use crate::types::{FileKind, InodeNo};

/// What a queued item does.
#[derive(Clone)]
enum Job {
    /// Upload journal entry `(ino, seq)`.
    Upload { ino: InodeNo, seq: u64 },
    /// Carry out the pending delete of the object at this path (`deletes`).
    Delete(super::deletes::Parts),
}

/// A queued item: the job, when it may start, and how many attempts failed.
struct Item {
    job: Job,
    not_before: Instant,
    failures: u32,
}

/// The upload queue (sender side, and the receiver until the task takes it).
pub(super) struct Queue {
    tx: mpsc::UnboundedSender<Item>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Item>>>,
}

impl Queue {
    pub(super) fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    pub(super) fn push(&self, ino: InodeNo, seq: u64, delay: Duration) {
        self.send(Item {
            job: Job::Upload { ino, seq },
            not_before: Instant::now() + delay,
            failures: 0,
        });
    }

    /// Queues a pending delete (`deletes`), behind the uploads queued before it.
    pub(super) fn push_delete(&self, parts: super::deletes::Parts) {
        self.send(Item {
            job: Job::Delete(parts),
            not_before: Instant::now(),
            failures: 0,
        });
    }

    fn send(&self, item: Item) {
        // The receiver lives as long as the runtime; a send error means shutdown, and the
        // entry stays in the journal for the next start.
        let _ = self.tx.send(item);
    }
}

enum Outcome {
    Done,
    Retry,
}

/// How long a done journal entry waits for others to share its durable namespace commit.
const DROP_BATCH: Duration = Duration::from_millis(200);

/// Journal entries done with (uploaded and named by the namespace, or superseded), to be
/// removed once the namespace state that makes them unneeded is durable: one durable
/// commit for every entry done within [`DROP_BATCH`], not one each. A durable commit holds
/// every namespace writer back for its fsync, so one per upload (50 a second against a
/// store with 20 ms latency) stalled the creates and unlinks the uploads were behind.
#[derive(Default)]
pub(super) struct Drops {
    /// Each entry, and whether its upload landed (counted in `journal_uploads`).
    pending: Mutex<Vec<(InodeNo, u64, bool)>>,
    wake: tokio::sync::Notify,
}

impl Vfs {
    /// Starts background work: following the mount table, and the ASYNC_THROUGH uploader,
    /// fed first with the journal's pending entries from earlier runs.
    pub fn start_background(self: &Arc<Self>) {
        self.start_mount_refresh();
        let Some(journal) = &self.journal else { return };
        let Some(mut rx) = self.uploads.rx.lock().ok().and_then(|mut g| g.take()) else {
            return;
        };
        // Deletes an earlier run logged and did not carry out, first: their objects must
        // not stay in the store (a listing would bring the files back).
        if let Some(d) = &self.deletes {
            for parts in d.all() {
                self.uploads.push_delete(parts);
            }
        }
        match journal.scan() {
            Ok(pending) => {
                if !pending.is_empty() {
                    tracing::info!(entries = pending.len(), "resuming uploads from the journal");
                }
                for (ino, seq) in pending {
                    self.uploads.push(ino, seq, self.cfg.upload_delay);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot scan the write journal"),
        }
        let this = self.clone();
        self.rt.spawn(async move {
            loop {
                this.drops.wake.notified().await;
                tokio::time::sleep(DROP_BATCH).await;
                if !this.drop_done_entries().await {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    this.drops.wake.notify_one();
                }
            }
        });
        let this = self.clone();
        self.rt.spawn(async move {
            while let Some(item) = rx.recv().await {
                tokio::time::sleep_until(item.not_before.into()).await;
                let res = match &item.job {
                    Job::Upload { ino, seq } => this.upload_journaled(*ino, *seq).await,
                    Job::Delete(parts) => this.run_delete(parts).await.map(|()| Outcome::Done),
                };
                match res {
                    Ok(Outcome::Done) => {}
                    res @ (Ok(Outcome::Retry) | Err(_)) => {
                        if let Err(e) = res {
                            match &item.job {
                                Job::Upload { ino, seq } => tracing::warn!(ino = ino.0, seq, error = %e, "background upload failed; will retry with backoff"),
                                Job::Delete(parts) => tracing::warn!(path = ?parts.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect::<Vec<_>>(), error = %e, "background delete failed; will retry with backoff"),
                            }
                        }
                        // Back of the queue, with this entry's own backoff: an entry the UFS
                        // keeps refusing must not hold up the others.
                        let failures = item.failures + 1;
                        let delay = Duration::from_millis(500 << failures.min(7))
                            .min(Duration::from_secs(60));
                        let retry = Item {
                            not_before: Instant::now() + delay,
                            failures,
                            ..item
                        };
                        let this2 = this.clone();
                        this.rt.spawn(async move {
                            tokio::time::sleep(delay).await;
                            this2.uploads.send(retry);
                        });
                    }
                }
            }
        });
    }

    async fn upload_journaled(
        self: &Arc<Self>,
        ino: InodeNo,
        seq: u64,
    ) -> Result<Outcome, FsError> {
        let journal = self
            .journal
            .as_ref()
            .expect("uploader runs only with a journal");
        let tag = pending_tag(ino, seq);
        // Serialized with renames, unlinks and commits of this inode (invariant 9): an
        // upload racing a rename could otherwise land at, or move the object from, a name
        // the namespace no longer has. A faster close made that race common enough to
        // fail pjdfstest's rename::preserve_metadata now and then.
        let _lock = self.lock_inodes(&[ino]).await;
        let _tree = self.tree_shared().await;
        let rec = match self.meta.get(ino).await {
            Ok(r) => r,
            Err(MetaError::NotFound(_)) => {
                tracing::debug!(
                    ino = ino.0,
                    seq,
                    "journal entry of an inode that is gone: dropped"
                );
                return Ok(self.drop_entry(ino, seq));
            }
            Err(e) => return Err(e.into()),
        };
        if rec.version.as_deref() != Some(tag.as_str()) {
            tracing::debug!(ino = ino.0, seq, version = ?rec.version, "journal entry superseded: dropped");
            return Ok(self.drop_entry(ino, seq));
        }
        let mut key = match self.key_of(ino, FileKind::File).await {
            Ok(k) => k,
            Err(e) if e.errno() == libc::ENOENT => {
                tracing::debug!(
                    ino = ino.0,
                    seq,
                    "journal entry of an unlinked file: dropped"
                );
                return Ok(self.drop_entry(ino, seq));
            }
            Err(e) => return Err(e),
        };
        // An entry of no bytes has no file (see `journal`).
        let file = if journal.is_empty_entry(ino, seq) {
            None
        } else {
            let path = journal.data_path(ino, seq);
            match blocking("journal", move || std::fs::File::open(path)).await? {
                Ok(f) => Some(Arc::new(f)),
                Err(e) => {
                    Metrics::inc(&self.metrics.uploads_lost);
                    tracing::error!(ino = ino.0, seq, error = %e, "journal entry unreadable; its upload is lost");
                    return Ok(Outcome::Done);
                }
            }
        };
        let len = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        let mut info = match key.ufs.upload_file(&key, file.clone(), len).await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(ino = ino.0, error = %e, "background upload failed; will retry with backoff");
                return Ok(Outcome::Retry);
            }
        };
        // A rename while uploading: follow the name.
        loop {
            let now = match self.key_of(ino, FileKind::File).await {
                Ok(k) => k,
                Err(e) if e.errno() == libc::ENOENT => {
                    // Unlinked while uploading (an unlink does not wait for the upload):
                    // its delete, queued behind this, removes the object.
                    tracing::debug!(ino = ino.0, seq, "unlinked while uploading: entry dropped");
                    return Ok(self.drop_entry(ino, seq));
                }
                Err(e) => return Err(e),
            };
            if now == key {
                break;
            }
            key.check_same_store(&now)?;
            info = key.ufs.rename_file(&key, &now).await?;
            key = now;
        }
        let cas = SetAttr {
            version: Some(Some(info.version.clone())),
            if_version: Some(Some(tag)),
            ..Default::default()
        };
        // Offered before the namespace names the store's version (see `LocalCopies::offer`).
        let object = key.object(&info.version);
        // Pages cached under this version now can only be of older bytes the store gave the
        // same version (see `forget_reused_version`): readers read the pending version
        // until the namespace names this one.
        self.cache.free(
            ino,
            Some(&object),
            info.size.div_ceil(crate::types::PAGE_SIZE),
        );
        let offered = file.map(|f| self.local.offer(ino, object, LocalCopy::immutable(f)));
        match self.meta.set_attr(ino, cas).await {
            Ok(_) => {
                let Some(offered) = offered else {
                    // No bytes to cache.
                    self.queue_drop(ino, seq, true);
                    return Ok(Outcome::Done);
                };
                // The journaled bytes are the store's version now: cache them under it, so
                // reads after the upload stay local. The entry goes only after that: the
                // disk tier adopts it by linking it, which its name must still allow (the
                // open descriptor serves a page-by-page copy either way). A crash before
                // the removal leaves an entry the next start drops as superseded.
                let this = self.clone();
                self.rt.spawn(async move {
                    this.fill_pages(offered, len).await;
                    this.queue_drop(ino, seq, true);
                });
                return Ok(Outcome::Done);
            }
            Err(e @ (MetaError::VersionMismatch(_) | MetaError::NotFound(_))) => {
                tracing::debug!(ino = ino.0, seq, error = %e, "uploaded, but a newer flush or an unlink came first: entry dropped");
            }
            Err(e) => return Err(e.into()),
        }
        Ok(self.drop_entry(ino, seq))
    }

    /// Drops a journal entry once the namespace state that makes it unneeded (the store's
    /// version, a newer flush, an unlink) is durable: after a kill, a pending version
    /// whose entry is gone would read as ESTALE for ever. Queued for the next batch
    /// (`Drops`); a crash before it runs leaves an entry the next start drops as
    /// superseded.
    fn drop_entry(&self, ino: InodeNo, seq: u64) -> Outcome {
        self.queue_drop(ino, seq, false);
        Outcome::Done
    }

    fn queue_drop(&self, ino: InodeNo, seq: u64, uploaded: bool) {
        lock(&self.drops.pending).push((ino, seq, uploaded));
        self.drops.wake.notify_one();
    }

    /// Removes the queued done entries after one durable namespace commit covering them.
    /// `false` when that commit failed: they stay queued, and are tried again. The
    /// removals run where blocking is allowed: deleting a file frees its blocks, which
    /// waits on the device where the filesystem discards synchronously (see
    /// `DiskTier::apply_off_runtime`), and must not stall a runtime thread.
    async fn drop_done_entries(&self) -> bool {
        let batch = std::mem::take(&mut *lock(&self.drops.pending));
        if batch.is_empty() {
            return true;
        }
        if let Err(e) = self.meta.sync().await {
            tracing::warn!(entries = batch.len(), error = %e, "namespace sync failed; done journal entries stay, and are tried again");
            lock(&self.drops.pending).extend(batch);
            return false;
        }
        let Some(j) = self.journal.clone() else {
            return true;
        };
        let uploaded = batch.iter().filter(|(_, _, u)| *u).count() as u64;
        let removed = blocking("journal", move || {
            for (ino, seq, _) in batch {
                if let Err(e) = j.remove(ino, seq) {
                    tracing::warn!(ino = ino.0, seq, error = %e, "a done journal entry stays; the next start drops it as superseded");
                }
            }
        })
        .await;
        if let Err(e) = removed {
            tracing::warn!(error = %e, "done journal entries stay; the next start drops them as superseded");
        }
        Metrics::add(&self.metrics.journal_uploads, uploaded);
        true
    }
}
