//! The read path: a staged file being written answers for its own bytes; everything else
//! is pages of the handle's version, from the [`crate::fetch::Fetcher`] (the cache's tiers, then the
//! chain of page sources: local copies, then the UFS).
//!
//! Each handle tracks whether it reads sequentially: while it does, a
//! read-ahead window of pages beyond the reader doubles on every read (up to
//! [`MAX_WINDOW`] pages) and is kept full of ranged GETs, so a cold sequential read keeps
//! the store busy instead of stalling at the end of each burst. A seek resets the window;
//! a non-sequential read prefetches only when it missed. Every prefetch takes a permit of
//! the fetch budget ([`crate::fetch::Fetcher::try_permit`]) or is skipped.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};

use super::{Handle, ReadSnapshot, Vfs, lock};
use crate::error::FsError;
use crate::fetch::ObjectRead;
use crate::metrics::Metrics;
use crate::object::PageKey;
use crate::page_cache::Backing;
use crate::types::{FileHandle, PAGE_SIZE};

/// Largest read-ahead window, in pages: 16 runs of [`RUN_PAGES`], so a sequential reader
/// keeps as many GETs in flight (the default `prefetch_gets`) against a store whose first
/// byte takes 20 ms and whose connections move 80 MB/s each (a run's GET then takes about
/// 125 ms: 16 in flight fill a gigabyte a second). The fetch budget bounds it further.
const MAX_WINDOW: u64 = 128;

/// Pages one read-ahead GET asks for when it goes straight to the store: against 20 ms to
/// the first byte and 80 MB/s a connection, a 1 MiB GET spends 60% of its time waiting
/// for the first byte, an 8 MiB one 16%, and eight times fewer requests cost the store
/// and the daemon eight times less per-request work.
const RUN_PAGES: u64 = 8;

/// Largest first read answered by its own ranged GET ([`Vfs::first_bytes`]).
const FIRST_BYTES_MAX: u64 = 256 << 10;

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
    /// Whether the reader reads sequentially (its window grew past `initial` since the
    /// last seek). Only then does read-ahead go in runs: a random reader's miss keeps the
    /// pages around it coming one GET each, as a run's GET holds its whole body in memory
    /// until it is complete (with 64 random readers and a 1 GiB budget, runs took the
    /// daemon to 1,136 MiB against a limit of 1,088).
    fn sequential(&self, initial: u64) -> bool {
        self.window > initial
    }

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
        self.read_snapshot(snapshot, stream, offset, size).await
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
        let object = snapshot.object.as_ref()?;
        let b = self
            .fetcher
            .cache()
            .backing(&object.id, object.size, &self.rt)?;
        Metrics::inc(&self.metrics.passthrough_opens);
        Some(b)
    }

    async fn read_snapshot(
        self: &Arc<Self>,
        snap: &ReadSnapshot,
        stream: &Mutex<Stream>,
        offset: u64,
        size: u32,
    ) -> Result<Bytes, FsError> {
        let Some(object) = &snap.object else {
            return Ok(Bytes::new()); // no object yet: the file is empty
        };
        if offset >= object.size || size == 0 {
            return Ok(Bytes::new());
        }
        let end = object.size.min(offset.saturating_add(u64::from(size)));
        let first = offset / PAGE_SIZE;
        let last = (end - 1) / PAGE_SIZE;
        if let Some(b) = self.first_bytes(object, stream, offset, end).await {
            return Ok(b);
        }
        let mut missed = false;
        let mut out: Option<BytesMut> = None;
        let mut single: Option<Bytes> = None;
        for idx in first..=last {
            let (page, hit) = self.fetcher.page(object, idx).await?;
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
            self.fetcher.used(&object.id, idx, (to - from) as u64);
            if first == last {
                single = Some(part);
            } else {
                out.get_or_insert_with(|| BytesMut::with_capacity((end - offset) as usize))
                    .extend_from_slice(&part);
            }
        }
        let mut st = lock(stream);
        if let Some(want) = st.plan(offset, end, object.pages(), missed, self.cfg.prefetch_pages) {
            let runs = st.sequential(self.cfg.prefetch_pages);
            st.ahead = self.prefetch(object, want.start, want.end, runs);
        }
        drop(st);
        Ok(single.unwrap_or_else(|| out.map(BytesMut::freeze).unwrap_or_default()))
    }

    /// The time to the first byte of a large file read cold: its first read, when small and
    /// on a page cached nowhere, is answered from a ranged GET of just those bytes while
    /// the page (and the read-ahead window behind it) is fetched whole in the background.
    /// A whole page at a real store's per-connection bandwidth (80 MB/s: 13 ms a MiB) adds
    /// more than half again to its 20 ms latency. `None`: read the ordinary way.
    ///
    /// Only for a version in the store and in no local file (a file just written is read
    /// from the file it was written from, never from the store), pinned to that version
    /// (its bytes or an error), and for files larger than [`super::siblings::SMALL_FILE`]
    /// (a small file is fetched whole at once anyway: the extra GET would double its
    /// requests).
    async fn first_bytes(
        self: &Arc<Self>,
        object: &Arc<ObjectRead>,
        stream: &Mutex<Stream>,
        offset: u64,
        end: u64,
    ) -> Option<Bytes> {
        let idx = offset / PAGE_SIZE;
        let (ufs, key) = object.store.as_ref()?;
        // Not without read-ahead (the mount then reads exactly what is asked), nor in a
        // cluster (the page may be a peer's, not the store's, to give).
        if self.cfg.prefetch_pages == 0
            || self.cluster.get().is_some()
            || object.size <= super::siblings::SMALL_FILE
            || end - offset > FIRST_BYTES_MAX
            || (end - 1) / PAGE_SIZE != idx
            || !object.id.version().in_store()
            || self.local.holds(&object.id)
            || lock(stream).next != 0
            || self.fetcher.has(&PageKey::new(&object.id, idx))
        {
            return None;
        }
        // The GET is sent first (the first poll of `join!` runs it to its first wait),
        // then the page and the window behind it are fetched in the background (within
        // the budget), so the reader's bytes do not queue behind the read-ahead.
        let get = ufs.read_range(key, offset..end, object.id.version_text());
        let ahead = async {
            let mut st = lock(stream);
            if let Some(want) = st.plan(offset, end, object.pages(), true, self.cfg.prefetch_pages)
            {
                let runs = st.sequential(self.cfg.prefetch_pages);
                st.ahead = self.prefetch(object, idx, want.end, runs);
            }
        };
        let (b, ()) = tokio::join!(get, ahead);
        let b = b.ok()?;
        if b.len() as u64 != end - offset {
            return None; // read it the ordinary way, which checks and says why
        }
        Metrics::inc(&self.metrics.first_byte_reads);
        Metrics::add(&self.metrics.bytes_from_ufs, b.len() as u64);
        Some(b)
    }

    /// Starts background fetches of pages `from..to` that are neither cached nor in
    /// flight, in runs for a sequential reader (`runs`). Returns the first page it did not
    /// get to (the fetch budget ran out).
    fn prefetch(self: &Arc<Self>, object: &Arc<ObjectRead>, from: u64, to: u64, runs: bool) -> u64 {
        if runs && self.reads_runs(object) {
            return self.prefetch_runs(object, from, to);
        }
        for idx in from..to {
            let key = PageKey::new(&object.id, idx);
            if self.fetcher.has(&key) {
                continue;
            }
            // Prefetch only within the memory budget: readers' own misses come first.
            let Some(permit) = self.fetcher.try_permit() else {
                Metrics::inc(&self.metrics.prefetch_skipped);
                return idx;
            };
            Metrics::inc(&self.metrics.prefetch_pages);
            let fetcher = self.fetcher.clone();
            let object = object.clone();
            self.rt.spawn(async move {
                if let Err(e) = fetcher.fetch(&object, key, Some(permit)).await {
                    tracing::debug!(error = %e, "prefetch failed; the reader will retry");
                }
            });
        }
        to
    }
}

impl Vfs {
    /// Whether read-ahead of `object` fetches runs of pages straight from its store
    /// ([`RUN_PAGES`] a GET): a version the store holds, in no local file, outside a
    /// cluster (whose owners, not the store, serve pages), not read for a peer.
    fn reads_runs(&self, object: &ObjectRead) -> bool {
        object.store.is_some()
            && object.id.version().in_store()
            && !object.for_peer
            && self.cluster.get().is_none()
            && !self.local.holds(&object.id)
    }

    /// [`Vfs::prefetch`] by runs of [`RUN_PAGES`] consecutive missing pages, each page
    /// with its fetch-budget permit, one ranged GET per run. Only whole runs go (but for
    /// the file's last): a stretch at the window's end shorter than a run goes as a whole
    /// run, reaching up to a run past the window: held back until the window moved past
    /// a whole run, it would leave only once the reader's own run arrived, so a reader
    /// blocked on its run would have one GET fewer in flight than the window holds.
    fn prefetch_runs(self: &Arc<Self>, object: &Arc<ObjectRead>, from: u64, to: u64) -> u64 {
        let pages = object.pages();
        let mut idx = from;
        while idx < to {
            if self.fetcher.has(&PageKey::new(&object.id, idx)) {
                idx += 1;
                continue;
            }
            let n = RUN_PAGES.min(pages - idx);
            let mut permits = Vec::with_capacity(n as usize);
            while (permits.len() as u64) < n {
                let Some(p) = self.fetcher.try_permit() else {
                    break;
                };
                permits.push(p);
            }
            if (permits.len() as u64) < n {
                Metrics::inc(&self.metrics.prefetch_skipped);
                return idx; // the budget ran out: readers' own misses come first
            }
            let (src, obj) = (self.ufs_source.clone(), object.clone());
            let get = move |range| {
                use futures::FutureExt;
                async move { src.get_run(&obj, range).await }.boxed()
            };
            let Some(run) = self.fetcher.begin_run(object, idx..idx + n, permits, get) else {
                idx += 1; // cached or in flight since the check above
                continue;
            };
            // A run cut short by a page in flight already: the rest of the stretch waits
            // for the next plan, which finds that page taken and starts after it.
            let got = run.len();
            Metrics::add(&self.metrics.prefetch_pages, got);
            let (fetcher, object) = (self.fetcher.clone(), object.clone());
            self.rt
                .spawn(async move { fetcher.fetch_run(&object, run).await });
            idx += got;
            if got < n {
                return idx;
            }
        }
        idx
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
        assert_eq!(s.plan(3 * MIB, 4 * MIB, 1000, false, 8), Some(67..132));
        s.ahead = 132;
        assert_eq!(s.window, 128);
        assert_eq!(s.plan(4 * MIB, 5 * MIB, 1000, false, 8), Some(132..133));
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
