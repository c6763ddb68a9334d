//! The read path, the one place that decides where bytes come from: a staged file being
//! written, else cached pages, else the UFS (then fill the cache).
//!
//! Concurrent misses on one page are coalesced: the first caller fetches, the others await
//! the same result. Each handle tracks whether it reads sequentially: while it does, a
//! read-ahead window of pages beyond the reader doubles on every read (up to
//! [`MAX_WINDOW`] pages) and is kept full of ranged GETs, so a cold sequential read keeps
//! the store busy instead of stalling at the end of each burst. A seek resets the window;
//! a non-sequential read prefetches only when it missed. Every prefetch takes a permit of
//! the fetch budget or is skipped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::sync::{OnceCell, OwnedSemaphorePermit};

use super::write::LocalCopy;
use super::{Handle, ReadSnapshot, Vfs, lock};
use crate::error::FsError;
use crate::metrics::Metrics;
use crate::page_cache::{Backing, PageKey};
use crate::types::{FileHandle, InodeNo, PAGE_SIZE, PageIdx};

type Fetch = Arc<OnceCell<Result<Bytes, FsError>>>;

/// Largest read-ahead window, in pages.
const MAX_WINDOW: u64 = 64;

/// Sequential-read state of one handle.
#[derive(Default)]
pub(super) struct Stream {
    /// Where a sequential reader reads next.
    next: u64,
    /// Read-ahead window in pages.
    window: u64,
    /// First page not yet asked for by read-ahead.
    ahead: u64,
}

impl Stream {
    /// Records a read of `offset..end` (it `missed` the cache or not) in a file of `pages`
    /// pages and returns the pages read-ahead should ask for now. The caller sets `ahead`
    /// to the first page it actually got to.
    fn plan(
        &mut self,
        offset: u64,
        end: u64,
        pages: u64,
        missed: bool,
        initial: u64,
    ) -> Option<std::ops::Range<u64>> {
        // Near the stream position counts as sequential: the kernel's readahead requests
        // can arrive slightly out of order.
        let sequential = offset.abs_diff(self.next) <= 2 * PAGE_SIZE;
        self.next = if sequential { self.next.max(end) } else { end };
        if sequential {
            self.window = (self.window.max(initial) * 2).min(MAX_WINDOW);
        } else {
            self.window = initial;
            self.ahead = 0;
            if !missed {
                return None;
            }
        }
        let last = end.saturating_sub(1) / PAGE_SIZE;
        let from = (last + 1).max(self.ahead);
        let to = pages.min(last + 1 + self.window);
        (from < to).then_some(from..to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = PAGE_SIZE;

    #[test]
    fn window_grows_while_sequential_and_resets_on_a_seek() {
        let mut s = Stream::default();
        // Sequential 1 MiB reads: the window doubles up to the cap, and each read asks only
        // for pages not asked for before.
        assert_eq!(s.plan(0, MIB, 1000, true, 8), Some(1..17));
        s.ahead = 17;
        assert_eq!(s.plan(MIB, 2 * MIB, 1000, false, 8), Some(17..34));
        s.ahead = 34;
        assert_eq!(s.plan(2 * MIB, 3 * MIB, 1000, false, 8), Some(34..67));
        s.ahead = 67;
        assert_eq!(s.window, 64);
        assert_eq!(s.plan(3 * MIB, 4 * MIB, 1000, false, 8), Some(67..68));
        assert_eq!(s.window, MAX_WINDOW, "capped");
        // A seek far away: the window resets; a cache hit there asks for nothing.
        assert_eq!(s.plan(500 * MIB, 500 * MIB + 4096, 1000, false, 8), None);
        assert_eq!((s.window, s.ahead), (8, 0));
        // A miss after a seek prefetches the initial window behind it.
        assert_eq!(
            s.plan(700 * MIB, 700 * MIB + 4096, 1000, true, 8),
            Some(701..709)
        );
        // Never past the end of the file.
        let mut e = Stream::default();
        assert_eq!(e.plan(0, MIB, 3, true, 8), Some(1..3));
        assert_eq!(e.plan(0, 10, 1, true, 8), None);
    }
}

/// Page fetches in flight, for coalescing, and read-ahead pages not read yet.
#[derive(Default)]
pub(super) struct Inflight {
    fetches: Mutex<HashMap<PageKey, Fetch>>,
    /// Pages that read-ahead put in the cache, with how many of their bytes no read has
    /// asked for yet. Once reads have asked for as many bytes as the page holds, it leaves
    /// the memory tier (it stays on disk, and the kernel keeps the bytes it was given): a
    /// sequential scan is read once, and keeping it in memory would only push out pages
    /// that are used again, and cost a fresh (faulted, zeroed) buffer for every page read.
    /// Counting bytes rather than requiring one read of the whole page makes this hold for
    /// any request size and alignment the kernel picks; a page only partly read (a random
    /// reader's) stays in memory. Bounded: cleared when it reaches [`FRESH_MAX`]
    /// (forgetting only means a scan page stays in memory, as any other page).
    fresh: Mutex<HashMap<PageKey, u64>>,
    /// Committed versions whose bytes are in a local file while `fill_pages` copies them
    /// into the disk tier (see [`Vfs::read_local`]).
    pub(super) local: Mutex<HashMap<Version, Arc<LocalCopy>>>,
    /// Pages whose fetch from the store failed with EIO just now (a store that stalls
    /// past `ufs_timeout`, or errs after its retries), with the error and when. A fetch
    /// of such a page within [`FAILED_FETCH_TTL`] fails the same way at once: the kernel
    /// sends a failed read-ahead again as a read of the page its caller needs, and that
    /// retry must not cost the caller a second full timeout. Bounded like `fresh`.
    failed: Mutex<HashMap<PageKey, (FsError, std::time::Instant)>>,
    /// Local copies whose copy has ended and whose file is being closed on the blocking
    /// pool (closing frees its blocks). Together with `local`, what a write that found the
    /// cache disk full waits for (see `Vfs::with_disk_room`).
    pub(super) closing: Arc<std::sync::atomic::AtomicUsize>,
}

/// One version of one file.
type Version = (InodeNo, Arc<str>);

/// Bound on [`Inflight::fresh`] and [`Inflight::failed`].
const FRESH_MAX: usize = 1 << 16;

/// How long a page fetch's EIO answers further fetches of the page (see
/// [`Inflight::failed`]).
const FAILED_FETCH_TTL: std::time::Duration = std::time::Duration::from_secs(2);

impl Vfs {
    /// Reads up to `size` bytes at `offset` through an open handle.
    pub async fn read(
        self: &Arc<Self>,
        fh: FileHandle,
        offset: u64,
        size: u32,
    ) -> Result<Bytes, FsError> {
        let h = self.handle(fh)?;
        let Handle::File {
            ino,
            snapshot,
            stream,
            ..
        } = &*h
        else {
            return Err(FsError::new(libc::EISDIR, "read on a directory handle"));
        };
        let of = lock(&self.open_files).get(ino).cloned();
        if let Some(of) = of
            && let Some(b) = self.read_staged(*ino, &of, offset, size).await?
        {
            return Ok(b);
        }
        self.read_snapshot(*ino, snapshot, stream, offset, size)
            .await
    }

    /// The disk tier's data file for a read-only handle, when it holds the handle's whole
    /// version and nothing in this mount is writing the file: the kernel may then read it
    /// directly (FUSE passthrough).
    pub fn passthrough_backing(&self, fh: FileHandle) -> Option<Backing> {
        let h = self.handle(fh).ok()?;
        let Handle::File {
            ino,
            writable: false,
            snapshot,
            ..
        } = &*h
        else {
            return None;
        };
        if lock(&self.open_files).contains_key(ino) {
            return None;
        }
        let version = snapshot.version.as_ref()?;
        let b = self.cache.backing(*ino, version, snapshot.size, &self.rt)?;
        Metrics::inc(&self.metrics.passthrough_opens);
        Some(b)
    }

    async fn read_snapshot(
        self: &Arc<Self>,
        ino: InodeNo,
        snap: &ReadSnapshot,
        stream: &Mutex<Stream>,
        offset: u64,
        size: u32,
    ) -> Result<Bytes, FsError> {
        let Some(version) = &snap.version else {
            return Ok(Bytes::new()); // no object yet: the file is empty
        };
        if offset >= snap.size || size == 0 {
            return Ok(Bytes::new());
        }
        let end = snap.size.min(offset.saturating_add(u64::from(size)));
        let first = offset / PAGE_SIZE;
        let last = (end - 1) / PAGE_SIZE;
        let mut missed = false;
        let mut out: Option<BytesMut> = None;
        let mut single: Option<Bytes> = None;
        for idx in first..=last {
            let (page, hit) = self.page(ino, snap, version, PageIdx(idx)).await?;
            missed |= !hit;
            let pstart = idx * PAGE_SIZE;
            let from = (offset.max(pstart) - pstart) as usize;
            let to = ((end.min(pstart + PAGE_SIZE)) - pstart) as usize;
            if to > page.len() {
                return Err(FsError::new(
                    libc::ESTALE,
                    "cached page shorter than the file: object changed",
                ));
            }
            let part = page.slice(from..to);
            if hit {
                Metrics::add(&self.metrics.bytes_from_cache, part.len() as u64);
            }
            self.used_page(ino, version, idx, (to - from) as u64);
            if first == last {
                single = Some(part);
            } else {
                out.get_or_insert_with(|| BytesMut::with_capacity((end - offset) as usize))
                    .extend_from_slice(&part);
            }
        }
        let pages = snap.size.div_ceil(PAGE_SIZE);
        let mut st = lock(stream);
        if let Some(want) = st.plan(offset, end, pages, missed, self.cfg.prefetch_pages) {
            st.ahead = self.prefetch(ino, snap, version, want.start, want.end);
        }
        drop(st);
        Ok(single.unwrap_or_else(|| out.map(BytesMut::freeze).unwrap_or_default()))
    }

    /// Notes a read of `len` bytes of page `idx`: a read-ahead page whose bytes have all
    /// been asked for leaves the memory tier (see [`Inflight::fresh`]).
    fn used_page(&self, ino: InodeNo, version: &Arc<str>, idx: u64, len: u64) {
        let mut f = lock(&self.inflight.fresh);
        if f.is_empty() {
            return; // the common case of a warm read: no key built, no hashing
        }
        let key = PageKey {
            ino,
            version: version.clone(),
            idx: PageIdx(idx),
        };
        let Some(left) = f.get_mut(&key) else { return };
        *left = left.saturating_sub(len);
        // Released now if the disk tier holds it. If not, its disk write is still under
        // way (a reader may use a page as soon as it is in memory): the entry stays, used
        // up, and the fetch releases the page once that write is done (`release_read`).
        if *left == 0 && self.cache.release_mem(&key) {
            f.remove(&key);
            Metrics::inc(&self.metrics.readahead_released);
        }
    }

    /// After a read-ahead page's cache write: if reads have used all of it meanwhile, it
    /// leaves memory now (see [`Vfs::used_page`]); either way a used-up entry is dropped.
    fn release_read(&self, key: &PageKey) {
        let mut f = lock(&self.inflight.fresh);
        if f.get(key) != Some(&0) {
            return;
        }
        f.remove(key);
        if self.cache.release_mem(key) {
            Metrics::inc(&self.metrics.readahead_released);
        }
    }

    /// Returns a page and whether it came from the cache.
    pub(super) async fn page(
        self: &Arc<Self>,
        ino: InodeNo,
        snap: &ReadSnapshot,
        version: &Arc<str>,
        idx: PageIdx,
    ) -> Result<(Bytes, bool), FsError> {
        let key = PageKey {
            ino,
            version: version.clone(),
            idx,
        };
        if let Some(b) = self.cache.get(&key).await {
            return Ok((b, true));
        }
        Ok((self.fetch(key, snap, None).await?, false))
    }

    /// Fetches a page from the UFS into the cache, coalescing concurrent fetches. The
    /// page buffer is covered by a fetch-budget permit (`permit`, or one awaited here)
    /// until the page is in the cache, whose own capacity covers it from then on.
    async fn fetch(
        self: &Arc<Self>,
        key: PageKey,
        snap: &ReadSnapshot,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<Bytes, FsError> {
        let read_ahead = permit.is_some();
        if let Some((e, at)) = lock(&self.inflight.failed).get(&key)
            && at.elapsed() < FAILED_FETCH_TTL
        {
            return Err(e.clone());
        }
        let cell = lock(&self.inflight.fetches)
            .entry(key.clone())
            .or_default()
            .clone();
        let res = cell
            .get_or_init(|| async {
                // A fetch of this page (a prefetch) may have completed and left the
                // in-flight table between our cache miss and now: use its result.
                if self.cache.contains(&key)
                    && let Some(b) = self.cache.get(&key).await
                {
                    return Ok(b);
                }
                let _permit = match permit {
                    Some(p) => p,
                    None => self
                        .fetch_budget
                        .clone()
                        .acquire_owned()
                        .await
                        .map_err(|_| FsError::new(libc::EIO, "fetch budget closed"))?,
                };
                let start = key.idx.0 * PAGE_SIZE;
                let end = snap.size.min(start + PAGE_SIZE);
                let b = match self.read_local(&key, start, end).await {
                    Some(b) => b,
                    None => {
                        self.check_not_pending_elsewhere(&key).await?;
                        let loc = snap.key.as_ref().ok_or_else(|| {
                            FsError::new(libc::EIO, "read of a file that has no object")
                        })?;
                        // Read-ahead waits for a GET slot; a reader's own miss does not
                        // (it is what the reader is blocked on).
                        let slots = &self.prefetch_gets;
                        let _slot = if !read_ahead {
                            None
                        } else if let Ok(p) = slots.clone().try_acquire_owned() {
                            Some(p)
                        } else {
                            Metrics::inc(&self.metrics.prefetch_waits);
                            slots.clone().acquire_owned().await.ok()
                        };
                        let b = loc.ufs.read_range(loc, start..end, &key.version).await?;
                        Metrics::add(&self.metrics.bytes_from_ufs, b.len() as u64);
                        b
                    }
                };
                if b.len() as u64 != end - start {
                    return Err(FsError::new(
                        libc::ESTALE,
                        format!("{:?} changed in the UFS: short read", snap.key),
                    ));
                }
                if read_ahead {
                    // Before the page is visible, so no read can use it unmarked.
                    let mut f = lock(&self.inflight.fresh);
                    if f.len() >= FRESH_MAX {
                        f.clear();
                    }
                    f.insert(key.clone(), b.len() as u64);
                }
                self.cache.put(key.clone(), b.clone()).await;
                if read_ahead {
                    self.release_read(&key);
                }
                Ok(b)
            })
            .await
            .clone();
        let mut m = lock(&self.inflight.fetches);
        if m.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            m.remove(&key);
        }
        drop(m);
        let mut failed = lock(&self.inflight.failed);
        match &res {
            Err(e) if e.errno() == libc::EIO => {
                if failed.len() >= FRESH_MAX {
                    failed.retain(|_, (_, at)| at.elapsed() < FAILED_FETCH_TTL);
                    if failed.len() >= FRESH_MAX {
                        failed.clear();
                    }
                }
                failed.insert(key, (e.clone(), std::time::Instant::now()));
            }
            Ok(_) => {
                failed.remove(&key);
            }
            Err(_) => {}
        }
        res
    }

    /// A pending (ASYNC_THROUGH) version with no journal entry here is either uploaded
    /// already (the namespace moved on; the UFS holds its bytes) or still pending in
    /// another daemon's journal (through a shared metaserver): its bytes are nowhere this
    /// daemon can read, and the UFS may hold another version, so the read gets ESTALE
    /// rather than bytes of some other version.
    async fn check_not_pending_elsewhere(&self, key: &PageKey) -> Result<(), FsError> {
        if super::journal::parse_tag(&key.version).is_none() {
            return Ok(());
        }
        let rec = self.meta.get(key.ino).await?;
        if rec.version.as_deref() == Some(&*key.version) {
            return Err(FsError::expected(
                libc::ESTALE,
                "written through another client and not uploaded yet",
            ));
        }
        Ok(())
    }

    /// Reads a range of a version from a local file, if one holds it: the journal entry
    /// of a pending (ASYNC_THROUGH) version, or the file a committed version is being
    /// copied into the disk tier from (its staging file, or its uploaded journal entry).
    /// `None` sends the read to the UFS: the version is in no local file (a pending one
    /// whose entry is gone was uploaded, and the UFS object holds the same bytes).
    async fn read_local(&self, key: &PageKey, start: u64, end: u64) -> Option<Bytes> {
        let b = match super::journal::parse_tag(&key.version) {
            Some((ino, seq)) => {
                // An entry never changes: open and read in one trip to the blocking pool.
                let path = self.journal.as_ref()?.data_path(ino, seq);
                tokio::task::spawn_blocking(move || {
                    super::write::pread(&std::fs::File::open(path)?, start, end)
                })
                .await
                .ok()?
                .ok()?
            }
            None => {
                let src = lock(&self.inflight.local)
                    .get(&(key.ino, key.version.clone()))
                    .cloned()?;
                src.read(start, end, false).await?
            }
        };
        Metrics::add(&self.metrics.bytes_from_local, b.len() as u64);
        Some(Bytes::from(b))
    }

    /// Offers `src` to readers of `(ino, version)` until the guard drops. Made before the
    /// namespace names the version to readers (or at least before the write's close or
    /// fsync returns), so no read of it can miss both the cache and the local copy.
    /// Whether a written version of a file other than `except` is being copied into the
    /// disk tier from its local file, or a copied file is still being closed.
    pub(super) fn local_copies_in_flight(&self, except: InodeNo) -> bool {
        self.inflight
            .closing
            .load(std::sync::atomic::Ordering::Acquire)
            > 0
            || lock(&self.inflight.local)
                .keys()
                .any(|(ino, _)| *ino != except)
    }

    /// Starts background fetches of pages `from..to` that are neither cached nor in
    /// flight. Returns the first page it did not get to (the fetch budget ran out).
    fn prefetch(
        self: &Arc<Self>,
        ino: InodeNo,
        snap: &ReadSnapshot,
        version: &Arc<str>,
        from: u64,
        to: u64,
    ) -> u64 {
        for idx in from..to {
            let key = PageKey {
                ino,
                version: version.clone(),
                idx: PageIdx(idx),
            };
            if lock(&self.inflight.fetches).contains_key(&key) || self.cache.contains(&key) {
                continue;
            }
            // Prefetch only within the memory budget: readers' own misses come first.
            let Ok(permit) = self.fetch_budget.clone().try_acquire_owned() else {
                Metrics::inc(&self.metrics.prefetch_skipped);
                return idx;
            };
            Metrics::inc(&self.metrics.prefetch_pages);
            let this = self.clone();
            let snap = snap.clone();
            self.rt.spawn(async move {
                if let Err(e) = this.fetch(key, &snap, Some(permit)).await {
                    tracing::debug!(error = %e, "prefetch failed; the reader will retry");
                }
            });
        }
        to
    }
}
