//! Eviction: which pages give way (least recently used, never a pinned file's, never a
//! file under a put), and punching their holes or deleting their files outside the lock.

use super::*;

/// Carries out evictions: punches the holes of evicted pages, deletes emptied files.
pub(in crate::page_cache) fn apply_victims(
    dir: &Path,
    index: &Mutex<Index>,
    metrics: &Metrics,
    victims: Vec<Victim>,
) {
    for v in victims {
        Metrics::inc(&metrics.disk_cache_evictions);
        {
            let mut idx = lock(index);
            idx.unpunched = idx.unpunched.saturating_sub(v.bytes());
        }
        match v {
            Victim::Page(fid, page, _) => {
                if let Err(e) = punch(dir, fid, page, PAGE_SIZE as u32) {
                    tracing::debug!(error = %e, "could not punch an evicted page");
                }
                lock(index).punched(fid, page);
            }
            Victim::File(fid, _) => retire_files(dir, index, fid),
        }
    }
}

/// Deletes the data file and log of `fid`, which left the index, unless it is back: a put
/// of it began (it holds the files) or finished (it indexed a page in them) since the
/// decision. The check and taking the files' names away happen under the index lock, so
/// a put that begins after that makes fresh files; the deletion itself, which can wait on
/// the device, happens outside it.
pub(in crate::page_cache) fn retire_files(dir: &Path, index: &Mutex<Index>, fid: u64) {
    let (log, data) = (log_path(dir, fid), data_path(dir, fid));
    let parent = data.parent().unwrap_or(dir).to_path_buf();
    let gone = {
        let idx = lock(index);
        if idx.writers.contains_key(&fid) || idx.files.contains_key(&fid) {
            return;
        }
        [log, data].map(|p| {
            let t = temp_name(&parent);
            std::fs::rename(&p, &t).ok().map(|()| t)
        })
    };
    for t in gone.into_iter().flatten() {
        let _ = std::fs::remove_file(t);
    }
}

pub(in crate::page_cache) fn punch(
    dir: &Path,
    fid: u64,
    idx: u64,
    len: u32,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(data_path(dir, fid))?;
    // SAFETY: plain syscall on an owned descriptor.
    let r = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            (idx * PAGE_SIZE) as libc::off_t,
            libc::off_t::from(len),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    append(dir, fid, &record(REC_DROP, idx, 0, 0))
}

impl DiskTier {
    /// The filesystem's available bytes and the bytes the tier leaves free on it (`None`
    /// when `statvfs` fails: then only the capacity binds).
    pub(in crate::page_cache) fn fs_room(&self) -> Option<(u64, u64)> {
        let s = nix::sys::statvfs::statvfs(&self.dir).ok()?;
        let frsize = s.fragment_size() as u64;
        let total = (s.blocks() as u64).saturating_mul(frsize);
        let avail = (s.blocks_available() as u64).saturating_mul(frsize);
        Some((avail, (total as f64 * self.free_ratio) as u64))
    }

    /// What the tier may hold: the capacity, or what the filesystem has room for while
    /// `free_ratio` of it stays free. The tier occupies `used - unwritten + unpunched` of
    /// the filesystem now (reservations not written yet are not on it, evicted pages not
    /// punched yet still are); `on_disk` bytes of the coming reservation occupy it
    /// already (a file being adopted).
    pub(in crate::page_cache) fn limit(
        &self,
        idx: &Index,
        room: Option<(u64, u64)>,
        on_disk: u64,
    ) -> u64 {
        match room {
            Some((avail, reserve)) => self.capacity.min(
                (idx.used + idx.unpunched + avail + on_disk)
                    .saturating_sub(idx.unwritten + reserve),
            ),
            None => self.capacity,
        }
    }

    /// An eviction of nothing.
    pub(in crate::page_cache) fn nothing(&self) -> Evicted {
        Evicted {
            victims: Vec::new(),
            bytes: 0,
            index: self.index.clone(),
        }
    }

    /// Evicts least recently used unpinned pages until `need` more bytes fit, and
    /// reserves them: `(victims, true)`. When they cannot fit (no room on the filesystem,
    /// or every candidate is pinned) nothing is reserved, but a tier over its limit (other
    /// users took the disk) still shrinks to it: `(victims, false)`. `on_disk` of the
    /// bytes are on the tier's filesystem already (see [`Self::limit`]).
    pub(in crate::page_cache) fn make_room(&self, need: u64, on_disk: u64) -> (Evicted, bool) {
        // The filesystem is asked under the lock: a page write that completes and gives
        // back its `unwritten` in between would otherwise be counted twice (its bytes
        // still in this `avail`, no longer in `unwritten`), and with many pages filling at
        // once the limit came out megabytes over the disk's free share (ENOSPC for pages).
        let mut idx = lock(&self.index);
        let room = self.fs_room();
        let limit = self.limit(&idx, room, on_disk);
        if on_disk == 0 {
            self.metrics
                .disk_cache_limit
                .store(limit, Ordering::Relaxed);
        }
        if let Some(victims) = limit
            .checked_sub(need)
            .and_then(|target| self.evict_locked(&mut idx, target, false))
        {
            idx.used += need;
            idx.unwritten += need - on_disk.min(need);
            self.metrics
                .disk_cache_bytes
                .store(idx.used, Ordering::Relaxed);
            return (victims, true);
        }
        let shrink = if idx.used > limit {
            self.evict_locked(&mut idx, limit, true)
        } else {
            None
        };
        (shrink.unwrap_or_else(|| self.nothing()), false)
    }

    /// Removes least recently used unpinned pages from the index until it holds at most
    /// `target` bytes, and returns them for [`Self::apply`]. When the unpinned pages are
    /// not enough: `None` with nothing removed, or with `best_effort`, all of them.
    pub(in crate::page_cache) fn evict_locked(
        &self,
        idx: &mut Index,
        target: u64,
        best_effort: bool,
    ) -> Option<Evicted> {
        let mut chosen = Vec::new();
        let mut freed = 0u64;
        for (_, &(fid, page)) in idx.lru.iter() {
            if idx.used - freed <= target {
                break;
            }
            let Some(e) = idx.files.get(&fid) else {
                continue;
            };
            if e.pins > 0
                || idx.pinned_inodes.contains(&e.owner)
                || idx.filling.contains_key(&(fid, page))
                || idx.adopting.contains(&fid)
            {
                continue;
            }
            let len = e.pages.get(&page).map_or(0, |m| u64::from(m.len));
            freed += len;
            chosen.push((fid, page, len));
        }
        if idx.used - freed > target && !best_effort {
            return None;
        }
        let before = idx.used;
        let mut victims = Vec::with_capacity(chosen.len());
        for (fid, page, len) in chosen {
            match idx.remove_page(fid, page) {
                // A put in progress keeps the files (see `Index::writers`).
                Some(true) if !idx.writers.contains_key(&fid) => {
                    idx.files.remove(&fid);
                    victims.push(Victim::File(fid, len));
                }
                Some(_) => {
                    idx.punching(fid, page);
                    victims.push(Victim::Page(fid, page, len));
                }
                None => {}
            }
        }
        let bytes = before - idx.used;
        idx.unpunched += bytes;
        self.metrics
            .disk_cache_bytes
            .store(idx.used, Ordering::Relaxed);
        Some(Evicted {
            victims,
            bytes,
            index: self.index.clone(),
        })
    }

    /// Gives at least `need` bytes of the filesystem back for a write of bytes that exist
    /// nowhere else (staging, the journal), evicting least recently used unpinned pages:
    /// cached pages can be fetched again, those bytes cannot. Blocking (it punches the
    /// holes before returning, so the room is there when the write is retried). Returns
    /// the bytes freed; 0 when nothing is left to evict.
    pub fn release(&self, need: u64) -> u64 {
        let victims = {
            let mut idx = lock(&self.index);
            let target = idx.used.saturating_sub(need);
            self.evict_locked(&mut idx, target, true)
        }
        .unwrap_or_else(|| self.nothing());
        let freed = victims.bytes;
        if freed > 0 {
            tracing::info!(
                freed,
                "disk cache gave room to a write on its full filesystem"
            );
        }
        self.apply(victims);
        freed
    }

    /// Carries out evictions decided under the lock (blocking).
    pub(in crate::page_cache) fn apply(&self, mut e: Evicted) {
        apply_victims(
            &self.dir,
            &self.index,
            &self.metrics,
            std::mem::take(&mut e.victims),
        );
    }

    /// [`Self::apply`] on the blocking pool, for async callers. Punching a hole or
    /// deleting a file can wait on the device: on a filesystem mounted with `discard`
    /// the freed blocks are discarded synchronously (measured here: 0.26 ms per punched
    /// MiB, 46 ms per deleted 256 MiB file), which must not stall a runtime thread.
    /// Awaited, so the space is given back before the page that needed it is written.
    pub(in crate::page_cache) async fn apply_off_runtime(&self, mut e: Evicted) {
        if e.victims.is_empty() {
            return;
        }
        let (dir, metrics) = (self.dir.clone(), self.metrics.clone());
        let victims = std::mem::take(&mut e.victims);
        let index = self.index.clone();
        let _ = tokio::task::spawn_blocking(move || apply_victims(&dir, &index, &metrics, victims))
            .await;
    }

    pub(in crate::page_cache) fn remove_files(&self, fid: u64) {
        retire_files(&self.dir, &self.index, fid);
    }

    /// Sets the inodes whose pages are never evicted (files under pinned paths).
    pub fn set_pinned(&self, inodes: std::collections::HashSet<u64>) {
        lock(&self.index).pinned_inodes = inodes;
    }

    /// Drops every cached page of `ino` (all versions), except files the kernel is
    /// reading by passthrough right now. Returns (bytes freed, files kept because busy).
    pub fn free_inode(&self, ino: InodeNo) -> (u64, usize) {
        self.free_files(|_, e| e.owner == ino.0)
    }

    /// Drops every cached page of `object` (one version, whoever cached it), unless the
    /// kernel is reading its file by passthrough. Returns (bytes freed, files kept).
    pub fn free_object(&self, object: &ObjectId) -> (u64, usize) {
        let fid = object.digest();
        self.free_files(|f, _| f == fid)
    }

    fn free_files(&self, pick: impl Fn(u64, &Entry) -> bool) -> (u64, usize) {
        let (freed, busy, gone) = {
            let mut idx = lock(&self.index);
            let fids: Vec<(u64, bool)> = idx
                .files
                .iter()
                .filter(|(fid, e)| pick(**fid, e))
                .map(|(fid, e)| (*fid, e.pins > 0))
                .collect();
            let before = idx.used;
            let (mut busy, mut gone) = (0, Vec::new());
            for (fid, pinned) in fids {
                if pinned {
                    busy += 1;
                    continue;
                }
                let pages: Vec<u64> = idx
                    .files
                    .get(&fid)
                    .map(|e| e.pages.keys().copied().collect())
                    .unwrap_or_default();
                for p in pages {
                    idx.remove_page(fid, p);
                }
                idx.files.remove(&fid);
                // A put in progress keeps the files (see `Index::writers`).
                if !idx.writers.contains_key(&fid) {
                    gone.push(fid);
                }
            }
            self.metrics
                .disk_cache_bytes
                .store(idx.used, Ordering::Relaxed);
            (before - idx.used, busy, gone)
        };
        for fid in gone {
            self.remove_files(fid);
        }
        (freed, busy)
    }
}
