//! Directory-level prefetch: a data set of many small files read file by file (a
//! training job's shuffled epoch) pays one store round trip per file in series for each
//! reader, since no single file is large enough for read-ahead to help. When readers
//! open, cold, [`TRIGGER`] small files of one directory, the directory's other small files
//! are fetched in the background, [`PARALLEL`] at a time, so the store's latency overlaps
//! across files and the epoch runs at the store's bandwidth.
//!
//! Invariants:
//! - Only within budget: at most [`PARALLEL`] fetches of this kind at once in the mount
//!   (however many directories are being prefetched), each holding
//!   one permit of the fetch budget like a reader's miss (so readers always have the
//!   rest), and at most `VfsConfig::dir_prefetch_bytes` per trigger; a directory larger
//!   than that is continued from where it stopped on its next trigger.
//! - Only where it can land: with no disk tier it never runs (memory alone would evict
//!   what it fetched before a reader came), and only files of at most [`SMALL_FILE`]
//!   bytes whose version is in the store are fetched (never a pending upload's).
//! - A fetched page is an ordinary cached page of its version: read whole, it leaves the
//!   memory tier as any fetched page does, and it is never served for another version.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;

use super::{Vfs, lock};
use crate::fetch::ObjectRead;
use crate::metrics::Metrics;
use crate::object::PageKey;
use crate::types::{FileKind, InodeNo, InodeRecord, PAGE_SIZE};

/// Cold opens of small files in one directory that start its prefetch.
pub const TRIGGER: u32 = 2;

/// Largest file prefetched with its directory (larger ones have read-ahead).
pub const SMALL_FILE: u64 = 4 * PAGE_SIZE;

/// Fetches of this kind in flight at once.
pub const PARALLEL: usize = 16;

/// Directories tracked at once (cleared when full: forgetting only delays a prefetch).
const DIRS_MAX: usize = 4096;

/// What the prefetcher knows of one directory.
#[derive(Default)]
pub(super) struct DirState {
    /// Cold small-file opens since the last prefetch of it started.
    cold: u32,
    /// A prefetch of it is running.
    running: bool,
    /// Entries of its listing already gone through.
    cursor: usize,
}

/// The prefetcher's state: per directory, and the slots its fetches share across the
/// mount (so that many directories triggered at once still make [`PARALLEL`] fetches).
pub(super) struct Dirs {
    dirs: std::sync::Mutex<HashMap<InodeNo, DirState>>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Default for Dirs {
    fn default() -> Self {
        Self {
            dirs: Default::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(PARALLEL)),
        }
    }
}

impl Vfs {
    /// Notes a read-only open of `rec` at `object` (its snapshot's version): a cold small
    /// file counts towards its directory's prefetch, which starts in the background on
    /// the [`TRIGGER`]th.
    pub(super) fn note_open(self: &Arc<Self>, rec: &InodeRecord, object: Option<&Arc<ObjectRead>>) {
        if self.cfg.dir_prefetch_bytes == 0 || self.cache.disk_engine().is_none() || !small(rec) {
            return;
        }
        let Some(object) = object else { return };
        if super::is_pending(rec) || self.fetcher.has(&PageKey::new(&object.id, 0)) {
            return; // a pending upload's, or not cold
        }
        let (parent, ino) = (rec.parent, rec.ino);
        let start = {
            let mut dirs = lock(&self.dir_prefetch.dirs);
            if dirs.len() >= DIRS_MAX && !dirs.contains_key(&parent) {
                dirs.clear();
            }
            let d = dirs.entry(parent).or_default();
            d.cold += 1;
            if d.cold >= TRIGGER && !d.running {
                d.cold = 0;
                d.running = true;
                Some(d.cursor)
            } else {
                None
            }
        };
        if let Some(cursor) = start {
            let vfs = self.clone();
            self.rt.spawn(async move {
                let next = vfs.prefetch_dir(parent, cursor, ino).await;
                let mut dirs = lock(&vfs.dir_prefetch.dirs);
                let d = dirs.entry(parent).or_default();
                d.running = false;
                d.cursor = next;
            });
        }
    }

    /// Fetches the small files of `dir` from entry `cursor` on, up to the configured
    /// bytes, but `opened` (its reader is fetching it); returns where to go on next time
    /// (the listing's length once done).
    async fn prefetch_dir(self: &Arc<Self>, dir: InodeNo, cursor: usize, opened: InodeNo) -> usize {
        let (Ok(parts), Ok(entries)) = (self.meta.path(dir).await, self.meta.list(dir).await)
        else {
            return cursor;
        };
        let mut budget = self.cfg.dir_prefetch_bytes;
        let mut next = cursor;
        let mut picked = Vec::new();
        for e in entries.iter().skip(cursor) {
            if budget == 0 {
                break;
            }
            next += 1;
            if e.kind != FileKind::File || e.ino == opened {
                continue;
            }
            let Ok(rec) = self.meta.get(e.ino).await else {
                continue;
            };
            let Some(version) = rec.version.clone().filter(|_| small(&rec)) else {
                continue;
            };
            if super::is_pending(&rec) {
                continue;
            }
            let mut p = parts.clone();
            p.push(e.name.clone());
            let Ok(loc) = self.loc_of(&p, FileKind::File) else {
                continue;
            };
            let object = loc.read_of(&version, rec.size, rec.ino);
            if self.fetcher.has(&PageKey::new(&object.id, 0)) {
                continue;
            }
            budget = budget.saturating_sub(rec.size);
            picked.push(object);
        }
        let pages = picked
            .into_iter()
            .flat_map(|o| (0..o.pages()).map(move |idx| (o.clone(), idx)));
        futures::stream::iter(pages)
            .for_each_concurrent(PARALLEL, |(object, idx)| async move {
                if idx == 0 {
                    Metrics::inc(&self.metrics.dir_prefetch_files);
                }
                let Ok(_slot) = self.dir_prefetch.slots.acquire().await else {
                    return;
                };
                let key = PageKey::new(&object.id, idx);
                if self.fetcher.has(&key) {
                    return;
                }
                if let Err(e) = self.fetcher.fetch(&object, key, None).await {
                    tracing::debug!(error = %e, "directory prefetch failed; the reader will retry");
                }
            })
            .await;
        next
    }
}

fn small(rec: &InodeRecord) -> bool {
    rec.kind == FileKind::File && rec.size > 0 && rec.size <= SMALL_FILE
}
