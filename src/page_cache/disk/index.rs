//! The in-memory index of the tier: which pages of which file ids are on disk, their
//! checksums, the LRU order, pins, and the puts in flight that eviction must respect.

use super::*;

#[derive(Clone, Copy)]
pub(in crate::page_cache) struct PageMeta {
    pub(in crate::page_cache) len: u32,
    pub(in crate::page_cache) crc: u32,
    pub(in crate::page_cache) tick: u64,
    pub(in crate::page_cache) verified: bool,
}

pub(in crate::page_cache) struct Entry {
    pub(in crate::page_cache) object: Arc<ObjectId>,
    /// The inode that cached it (0: none), for `free_inode` and path pins.
    pub(in crate::page_cache) owner: u64,
    pub(in crate::page_cache) pages: HashMap<u64, PageMeta>,
    /// Passthrough opens holding the data file; while > 0 no page is evicted.
    pub(in crate::page_cache) pins: u32,
    /// A background checksum pass over unverified pages is running.
    pub(in crate::page_cache) verifying: bool,
    /// When this process last wrote or verified one of the file's pages (ns since the
    /// epoch). A data file whose ctime is later was changed by someone else since: it is
    /// verified again before the kernel may read it directly (see [`DiskTier::backing`]).
    pub(in crate::page_cache) checked_ns: i64,
}

#[derive(Default)]
pub(in crate::page_cache) struct Index {
    pub(in crate::page_cache) files: HashMap<u64, Entry>,
    /// Inodes under a pinned path (`alluxio fs pin`): their pages are never evicted.
    pub(in crate::page_cache) pinned_inodes: std::collections::HashSet<u64>,
    /// LRU tick → (file id, page index)
    pub(in crate::page_cache) lru: BTreeMap<u64, (u64, u64)>,
    pub(in crate::page_cache) used: u64,
    /// Bytes reserved in `used` whose pages are not written yet: counted against the
    /// filesystem's free space too, which does not show them yet (see [`DiskTier::limit`]).
    pub(in crate::page_cache) unwritten: u64,
    /// Bytes of pages evicted from the index whose holes are not punched yet: out of
    /// `used` but still on the filesystem ([`Evicted`]). Without them, puts racing one
    /// another's evictions each saw less room than there was and evicted more, in a
    /// cascade that emptied the tier.
    pub(in crate::page_cache) unpunched: u64,
    /// Puts in progress per file id ([`Writing`]). A file with a put in progress keeps its
    /// data file and log even when its last indexed page goes: deleting them under the
    /// writer made its log append fail (ENOENT, which switched the tier off) or left its
    /// record in a fresh log whose data file lacks the page.
    pub(in crate::page_cache) writers: HashMap<u64, u32>,
    /// Evicted pages (file id, page) whose holes are decided but not punched yet. A put
    /// of such a page, or an adoption of its file, waits for the punch (it is skipped):
    /// the punch, done outside the lock, would otherwise take the new bytes away while
    /// the index listed them, and passthrough reads the data file unchecked.
    pub(in crate::page_cache) punching: HashMap<(u64, u64), u32>,
    /// Puts in progress per page (file id, page). Eviction passes such a page by: a
    /// second put of a page already indexed would write its bytes under the punch.
    pub(in crate::page_cache) filling: HashMap<(u64, u64), u32>,
    /// File ids whose data file an adoption is replacing: none of their pages is put,
    /// evicted or punched meanwhile (a punch would land in the adopted file).
    pub(in crate::page_cache) adopting: std::collections::HashSet<u64>,
    pub(in crate::page_cache) tick: u64,
}

/// Pages taken out of the index by an eviction, to punch or delete outside the lock
/// ([`DiskTier::apply`]). Each victim's bytes count in `Index::unpunched` until it is
/// applied (taken out of the count just before its hole is punched: the filesystem's free
/// space must never show them while the count still does, or the tier's limit comes out
/// over the disk's free share) or, for victims never applied, until this is dropped.
pub(in crate::page_cache) struct Evicted {
    pub(in crate::page_cache) victims: Vec<Victim>,
    pub(in crate::page_cache) bytes: u64,
    pub(in crate::page_cache) index: Arc<Mutex<Index>>,
}

impl Drop for Evicted {
    fn drop(&mut self) {
        let mut idx = lock(&self.index);
        // Victims still here were never applied: their holes will not be punched.
        for v in &self.victims {
            idx.unpunched = idx.unpunched.saturating_sub(v.bytes());
            if let Victim::Page(fid, page, _) = *v {
                idx.punched(fid, page);
            }
        }
    }
}

/// An adoption of a data file in progress (see `Index::adopting`); `None` when the file
/// has a punch pending or another adoption under way.
pub(in crate::page_cache) struct Adopting<'a> {
    index: &'a Mutex<Index>,
    fid: u64,
}

impl<'a> Adopting<'a> {
    pub(in crate::page_cache) fn begin(index: &'a Mutex<Index>, fid: u64) -> Option<Self> {
        let mut idx = lock(index);
        if idx.files.get(&fid).is_some_and(|e| e.pins > 0)
            || idx.punching.keys().any(|&(f, _)| f == fid)
            || !idx.adopting.insert(fid)
        {
            return None;
        }
        Some(Self { index, fid })
    }
}

impl Drop for Adopting<'_> {
    fn drop(&mut self) {
        lock(self.index).adopting.remove(&self.fid);
    }
}

/// A put of one page in progress (see `Index::filling`); `None` when the page waits for
/// a punch and must not be written now.
pub(in crate::page_cache) struct Filling<'a> {
    index: &'a Mutex<Index>,
    key: (u64, u64),
}

impl<'a> Filling<'a> {
    pub(in crate::page_cache) fn begin(
        index: &'a Mutex<Index>,
        fid: u64,
        page: u64,
    ) -> Option<Self> {
        let mut idx = lock(index);
        if idx.punching.contains_key(&(fid, page)) || idx.adopting.contains(&fid) {
            return None;
        }
        *idx.filling.entry((fid, page)).or_default() += 1;
        Some(Self {
            index,
            key: (fid, page),
        })
    }
}

impl Drop for Filling<'_> {
    fn drop(&mut self) {
        let mut idx = lock(self.index);
        if let Some(n) = idx.filling.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                idx.filling.remove(&self.key);
            }
        }
    }
}

/// A put in progress on a file id (see `Index::writers`). When the last one ends and the
/// file has no page left in the index, its files are deleted then.
pub(in crate::page_cache) struct Writing<'a> {
    pub(in crate::page_cache) tier: &'a DiskTier,
    pub(in crate::page_cache) fid: u64,
}

impl<'a> Writing<'a> {
    pub(in crate::page_cache) fn begin(tier: &'a DiskTier, fid: u64) -> Self {
        *lock(&tier.index).writers.entry(fid).or_default() += 1;
        Self { tier, fid }
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let orphaned = {
            let mut idx = lock(&self.tier.index);
            let last = match idx.writers.get_mut(&self.fid) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                _ => {
                    idx.writers.remove(&self.fid);
                    true
                }
            };
            let empty = idx
                .files
                .get(&self.fid)
                .is_none_or(|e| e.pages.is_empty() && e.pins == 0);
            if last && empty {
                idx.files.remove(&self.fid);
            }
            last && empty
        };
        if orphaned {
            // Rare (an eviction emptied the file while this put ran, and the put failed):
            // its pages were punched already, so the files are small to delete.
            self.tier.remove_files(self.fid);
        }
    }
}

/// A put's reservation not yet written; dropped when the write ends, however it ends.
pub(in crate::page_cache) struct Unwritten<'a>(
    pub(in crate::page_cache) &'a Mutex<Index>,
    pub(in crate::page_cache) u64,
);

impl Drop for Unwritten<'_> {
    fn drop(&mut self) {
        let mut idx = lock(self.0);
        idx.unwritten = idx.unwritten.saturating_sub(self.1);
    }
}

impl Index {
    pub(in crate::page_cache) fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Indexes a verified page whose bytes (and room) are in place, as the newest in the
    /// LRU. Another put of the same page may have raced this one: one reservation is kept.
    pub(in crate::page_cache) fn add_page(
        &mut self,
        fid: u64,
        object: &Arc<ObjectId>,
        owner: InodeNo,
        page: u64,
        len: u32,
        crc: u32,
    ) {
        let tick = self.next_tick();
        let meta = PageMeta {
            len,
            crc,
            tick,
            verified: true,
        };
        let e = self.files.entry(fid).or_insert_with(|| Entry {
            object: object.clone(),
            owner: owner.0,
            pages: HashMap::new(),
            pins: 0,
            verifying: false,
            checked_ns: 0,
        });
        e.checked_ns = crate::types::now_ns();
        if let Some(old) = e.pages.insert(page, meta) {
            self.lru.remove(&old.tick);
            self.used -= u64::from(old.len);
        }
        self.lru.insert(tick, (fid, page));
    }

    /// Marks `page` of `fid` as waiting for its hole to be punched.
    pub(in crate::page_cache) fn punching(&mut self, fid: u64, page: u64) {
        *self.punching.entry((fid, page)).or_default() += 1;
    }

    /// The punch marked by [`Self::punching`] is done (or abandoned).
    pub(in crate::page_cache) fn punched(&mut self, fid: u64, page: u64) {
        if let Some(n) = self.punching.get_mut(&(fid, page)) {
            *n -= 1;
            if *n == 0 {
                self.punching.remove(&(fid, page));
            }
        }
    }

    /// Removes a page from the index; returns whether its entry is now empty.
    pub(in crate::page_cache) fn remove_page(&mut self, fid: u64, idx: u64) -> Option<bool> {
        let e = self.files.get_mut(&fid)?;
        let m = e.pages.remove(&idx)?;
        self.lru.remove(&m.tick);
        self.used -= u64::from(m.len);
        Some(e.pages.is_empty())
    }
}

/// What eviction decided; done outside the index lock.
pub(in crate::page_cache) enum Victim {
    /// Punch the page's hole and log the drop: file id, page, the page's bytes.
    Page(u64, u64, u64),
    /// The file has no pages left: delete it (file id, the bytes its last page held).
    File(u64, u64),
}

impl Victim {
    /// The bytes of the filesystem it gives back (counted in `Index::unpunched` until then).
    pub(in crate::page_cache) fn bytes(&self) -> u64 {
        match *self {
            Victim::Page(_, _, n) | Victim::File(_, n) => n,
        }
    }
}

pub(in crate::page_cache) fn lock(m: &Mutex<Index>) -> MutexGuard<'_, Index> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
