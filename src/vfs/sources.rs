//! The vfs's page sources (see [`crate::fetch`]): local files that hold a version
//! ([`LocalCopies`]), then the store ([`UfsSource`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::journal::Journal;
use super::write::{LocalCopy, pread};
use super::{Vfs, lock};
use crate::error::FsError;
use crate::fetch::{Fetched, PageRequest, PageSource};
use crate::meta::MetaClient;
use crate::metrics::Metrics;
use crate::object::{ObjectId, ObjectVersion, PageKey};
use crate::types::{InodeNo, PAGE_SIZE};

/// Versions whose bytes are in a local file: a pending (ASYNC_THROUGH) version's journal
/// entry, and committed versions being copied into the disk tier from the file they were
/// written from (their staging file, or their uploaded journal entry). A read that misses
/// the cache reads these before the store, so a file read right after it was written never
/// waits on the store.
pub(super) struct LocalCopies {
    /// Each offered version, with the inode it is a version of.
    offered: Mutex<HashMap<Arc<ObjectId>, Offer>>,
    /// Local copies whose copy has ended and whose file is being closed on the blocking
    /// pool (closing frees its blocks). Together with `offered`, what a write that found
    /// the cache disk full waits for (see `PageCache::with_disk_room`).
    pub(super) closing: Arc<AtomicUsize>,
    journal: Option<Arc<Journal>>,
    metrics: Arc<Metrics>,
}

type Offer = (InodeNo, Arc<LocalCopy>);

/// Keeps a [`LocalCopy`] offered to readers until dropped.
pub(super) struct Offered {
    copies: Arc<LocalCopies>,
    ino: InodeNo,
    object: Arc<ObjectId>,
    src: Arc<LocalCopy>,
}

impl Offered {
    /// The file, its version, and the copy offered.
    pub(super) fn parts(&self) -> (InodeNo, &Arc<ObjectId>, &Arc<LocalCopy>) {
        (self.ino, &self.object, &self.src)
    }
}

impl Drop for Offered {
    fn drop(&mut self) {
        let mut m = lock(&self.copies.offered);
        if m.get(&self.object)
            .is_some_and(|(_, s)| Arc::ptr_eq(s, &self.src))
        {
            m.remove(&self.object);
        }
    }
}

impl LocalCopies {
    pub(super) fn new(journal: Option<Arc<Journal>>, metrics: Arc<Metrics>) -> Self {
        Self {
            offered: Mutex::new(HashMap::new()),
            closing: Arc::new(AtomicUsize::new(0)),
            journal,
            metrics,
        }
    }

    /// Offers `src`, the bytes of `object` (a version of `ino`), to readers until the
    /// returned guard is dropped. Made before the namespace names the version to readers
    /// (or at least before the write's close or fsync returns), so no read of it can miss
    /// both the cache and the local copy.
    pub(super) fn offer(
        self: &Arc<Self>,
        ino: InodeNo,
        object: Arc<ObjectId>,
        src: LocalCopy,
    ) -> Offered {
        let src = Arc::new(src);
        lock(&self.offered).insert(object.clone(), (ino, src.clone()));
        Offered {
            copies: self.clone(),
            ino,
            object,
            src,
        }
    }

    /// Whether a local file holds `object` (a written version being copied into the disk
    /// tier): its misses are read from there, never from the store.
    pub(super) fn holds(&self, object: &ObjectId) -> bool {
        lock(&self.offered).contains_key(object)
    }

    /// Whether a written version of a file other than `except` is being copied into the
    /// disk tier from its local file, or a copied file is still being closed.
    pub(super) fn in_flight(&self, except: InodeNo) -> bool {
        self.closing.load(Ordering::Acquire) > 0
            || lock(&self.offered).values().any(|(ino, _)| *ino != except)
    }

    async fn read(&self, object: &ObjectId, start: u64, end: u64) -> Option<Vec<u8>> {
        match object.version() {
            ObjectVersion::Pending { ino, seq } => {
                // An entry never changes: open and read in one trip to the blocking pool.
                let path = self.journal.as_ref()?.data_path(*ino, *seq);
                tokio::task::spawn_blocking(move || pread(&std::fs::File::open(path)?, start, end))
                    .await
                    .ok()?
                    .ok()
            }
            _ => {
                let src = lock(&self.offered).get(object).map(|(_, s)| s.clone())?;
                src.read(start, end, false).await
            }
        }
    }
}

#[async_trait::async_trait]
impl PageSource for LocalCopies {
    fn name(&self) -> &'static str {
        "local"
    }

    /// A miss when no local file holds the version: a pending one whose entry is gone was
    /// uploaded, and the store holds the same bytes.
    async fn fetch(&self, req: &PageRequest<'_>) -> Fetched {
        let r = req.range();
        match self.read(&req.key.object, r.start, r.end).await {
            Some(b) => {
                Metrics::add(&self.metrics.bytes_from_local, b.len() as u64);
                Fetched::Hit(Bytes::from(b))
            }
            None => Fetched::Miss,
        }
    }
}

/// How long the copy of a just-committed version into the disk tier waits for its staging
/// to settle before copying page by page (see [`LocalCopy::settle`]). The wait ends at the
/// RELEASE that follows a close's FLUSH, so it costs nothing when that comes; this bounds
/// it when the file stays open. 100 ms was missed under load (1 of 12 runs of the
/// adoption test with two CPU hogs copied a small file instead of adopting it).
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

impl Vfs {
    /// Copies the pages of a committed version from `src` (its staging file, or its
    /// journal entry once uploaded) into the disk tier. Only bytes of that version may be
    /// cached under its key (see [`LocalCopy::read`]). The copy also stops once the file
    /// is opened for writing with another staging: this version is about to be replaced,
    /// and caching it would only compete with the writer. While it runs, the version's
    /// misses read `src` instead of the UFS ([`LocalCopies`]), so a file read right
    /// after it was written never waits on the store, whatever page the copy has reached.
    pub(super) async fn fill_pages(&self, offered: Offered, size: u64) {
        let (ino, object, src) = offered.parts();
        let src = src.clone();
        self.fill_from(ino, object, &src, size).await;
        // The written version's pages go to their owners in the cluster, so another host's
        // first read of a file just written comes from there.
        if object.shareable() && self.fetcher.shares_writes() {
            for idx in 0..size.div_ceil(PAGE_SIZE) {
                let start = idx * PAGE_SIZE;
                let Some(b) = src.read(start, size.min(start + PAGE_SIZE), true).await else {
                    break;
                };
                self.fetcher
                    .offer(&PageKey::new(object, idx), size, Bytes::from(b))
                    .await;
            }
        }
        // Counted as closing before the offer goes, so a write waiting for room never sees
        // neither (`LocalCopies::in_flight`).
        let closing = self.local.closing.clone();
        closing.fetch_add(1, Ordering::AcqRel);
        drop(offered);
        // Closing an unnamed staging file frees its blocks, which on a filesystem mounted
        // with `discard` waits on the device (see `DiskTier::apply_off_runtime`): the last
        // reference goes on the blocking pool, not on a runtime thread.
        tokio::task::spawn_blocking(move || {
            drop(src);
            closing.fetch_sub(1, Ordering::AcqRel);
        });
    }

    /// The body of [`Self::fill_pages`].
    async fn fill_from(
        &self,
        ino: InodeNo,
        object: &Arc<ObjectId>,
        src: &Arc<LocalCopy>,
        size: u64,
    ) {
        let mut adopt_tried = false;
        for idx in 0..size.div_ceil(PAGE_SIZE) {
            // Once the file can change no more, the disk tier takes it whole instead of a
            // copy. Not while this inode is open for writing: a journal entry may then be
            // that writer's (frozen) staging, which the disk tier would punch holes in on
            // eviction. A staging still open is copied page by page until it settles;
            // before the first page, the copy waits briefly for the RELEASE that follows
            // a close's FLUSH.
            let settled = !adopt_tried
                && if idx == 0 {
                    src.settle(SETTLE_WAIT).await
                } else {
                    src.settled().await
                };
            if settled && !lock(&self.open_files).contains_key(&ino) {
                adopt_tried = true;
                if self.cache.adopt(ino, object, &src.file, size).await {
                    return;
                }
            }
            let key = PageKey::new(object, idx);
            if self.cache.contains(&key) {
                continue; // a reader's miss cached it already (from `src`)
            }
            let start = idx * PAGE_SIZE;
            let Some(b) = src.read(start, size.min(start + PAGE_SIZE), true).await else {
                return;
            };
            if lock(&self.open_files)
                .get(&ino)
                .is_some_and(|o| !src.staged_in(o))
            {
                return;
            }
            self.cache.put_disk(key, ino, Bytes::from(b)).await;
        }
    }
}

/// The store: a ranged read pinned to the version (see [`crate::ufs::Ufs::read_range`]).
pub(super) struct UfsSource {
    pub(super) meta: Arc<dyn MetaClient>,
    pub(super) metrics: Arc<Metrics>,
    /// Read-ahead GETs in flight (`VfsConfig::prefetch_gets`).
    pub(super) slots: Arc<Semaphore>,
}

impl UfsSource {
    /// Bytes `range` of a version the store holds, in one ranged GET answered page by
    /// page, for a run of read-ahead pages (`Fetcher::fetch_run`). It waits for a
    /// read-ahead GET slot, as a read-ahead page's GET does.
    pub(super) async fn get_run(
        &self,
        object: &crate::fetch::ObjectRead,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<Bytes>, FsError> {
        let Some((ufs, key)) = &object.store else {
            return Err(FsError::new(libc::EIO, "read of a file that has no object"));
        };
        let _slot = match self.slots.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                Metrics::inc(&self.metrics.prefetch_waits);
                self.slots.clone().acquire_owned().await.ok()
            }
        };
        let pages = ufs
            .read_pieces(
                key,
                range,
                object.id.version_text(),
                crate::types::PAGE_SIZE,
            )
            .await?;
        let got = pages.iter().map(|p| p.len() as u64).sum();
        Metrics::add(&self.metrics.bytes_from_ufs, got);
        Ok(pages)
    }

    /// A version the store does not hold (a pending ASYNC_THROUGH one) whose journal entry
    /// is not here is either uploaded already (the namespace moved on; the store holds its
    /// bytes) or still pending in another daemon's journal (through a shared metaserver):
    /// its bytes are nowhere this daemon can read, and the store may hold another version,
    /// so the read gets ESTALE rather than bytes of some other version.
    async fn check_not_pending_elsewhere(&self, object: &ObjectId) -> Result<(), FsError> {
        let ObjectVersion::Pending { ino, .. } = object.version() else {
            return Ok(());
        };
        let rec = self.meta.get(*ino).await?;
        if rec.version.as_deref() == Some(object.version_text()) {
            return Err(FsError::expected(
                libc::ESTALE,
                "written through another client and not uploaded yet",
            ));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl PageSource for UfsSource {
    fn name(&self) -> &'static str {
        "ufs"
    }

    async fn fetch(&self, req: &PageRequest<'_>) -> Fetched {
        let failed = |error| Fetched::Failed {
            error,
            try_next: false,
        };
        if let Err(e) = self.check_not_pending_elsewhere(&req.key.object).await {
            return failed(e);
        }
        let Some((ufs, key)) = &req.object.store else {
            return failed(FsError::new(libc::EIO, "read of a file that has no object"));
        };
        // Read-ahead waits for a GET slot; a reader's own miss does not (it is what the
        // reader is blocked on).
        let _slot = if !req.read_ahead {
            None
        } else if let Ok(p) = self.slots.clone().try_acquire_owned() {
            Some(p)
        } else {
            Metrics::inc(&self.metrics.prefetch_waits);
            self.slots.clone().acquire_owned().await.ok()
        };
        match ufs
            .read_range(key, req.range(), req.key.object.version_text())
            .await
        {
            Ok(b) => {
                Metrics::add(&self.metrics.bytes_from_ufs, b.len() as u64);
                Fetched::Hit(b)
            }
            Err(e) => failed(e.into()),
        }
    }
}
