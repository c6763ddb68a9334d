//! Staging: one file per inode on the cache disk that every open handle of the inode
//! writes to, over the previous version's bytes, which are copied in only where needed
//! (`Base`). Its invariants are on `Base` and `Staging`.

use super::*;

static STAGING_SEQ: AtomicU64 = AtomicU64::new(0);

/// The previous version's bytes that a staging file does not hold yet.
///
/// A write to a file opened without O_TRUNC starts from its current content, but copying
/// all of it in at the first write reads and writes the whole file, mostly for nothing:
/// writers that preallocate and then write from the start (fio), or rewrite the file, replace
/// it. So a page is copied in only when something needs its old bytes in the staging file:
/// a write covering only part of it, an append (which makes everything before it final),
/// and whatever needs the whole content (a commit, moving the object or its directory,
/// deleting it while open). A read takes old bytes from the previous version without copying them.
///
/// Invariants: the staging file holds the file's bytes everywhere except, in a page that
/// starts below `len` and is in `missing`, from the written prefix's end
/// (`Staging::filled`) or the page's start, whichever is later, to `len`: those old bytes
/// are still only in the previous version. `len` never exceeds the staged size. A frozen
/// staging has no base (a commit copies everything in first).
pub(in crate::vfs) struct Base {
    /// The previous version (its key is looked up again at each copy: the file may have
    /// been moved with its directory since).
    pub(in crate::vfs) object: Arc<ObjectRead>,
    /// Bytes `[0, len)` of the previous version are still part of the file; a truncate
    /// lowers it (what lies past it is gone, or zeros from an extension).
    pub(in crate::vfs) len: u64,
    /// One bit per page: set while the page's old bytes are still only in the previous
    /// version.
    pub(in crate::vfs) missing: Vec<u64>,
    /// Set bits in `missing`.
    pub(in crate::vfs) left: u64,
}

impl Base {
    pub(in crate::vfs) fn new(object: Arc<ObjectRead>, len: u64) -> Self {
        let pages = len.div_ceil(PAGE_SIZE);
        let mut missing = vec![u64::MAX; pages.div_ceil(64) as usize];
        if !pages.is_multiple_of(64)
            && let Some(last) = missing.last_mut()
        {
            *last = (1u64 << (pages % 64)) - 1;
        }
        Self {
            object,
            len,
            missing,
            left: pages,
        }
    }

    pub(in crate::vfs) fn is_missing(&self, idx: u64) -> bool {
        self.missing
            .get((idx / 64) as usize)
            .is_some_and(|w| w & (1 << (idx % 64)) != 0)
    }

    pub(in crate::vfs) fn clear(&mut self, idx: u64) {
        if let Some(w) = self.missing.get_mut((idx / 64) as usize)
            && *w & (1 << (idx % 64)) != 0
        {
            *w &= !(1 << (idx % 64));
            self.left -= 1;
        }
    }

    /// Where page `idx` still has old bytes, given the written prefix `[0, filled)`: from
    /// the later of the page's start and `filled`, to the earlier of its end and `len`.
    /// `None` when it has none (see the invariants above).
    pub(in crate::vfs) fn old_range(&self, idx: u64, filled: u64) -> Option<(u64, u64)> {
        if !self.is_missing(idx) {
            return None;
        }
        let from = idx * PAGE_SIZE;
        let (lo, to) = (from.max(filled), (from + PAGE_SIZE).min(self.len));
        (lo < to).then_some((lo, to))
    }

    /// The written prefix grew from `filled` to `end`: pages wholly below `end` hold no
    /// old byte any more.
    pub(in crate::vfs) fn written_up_to(&mut self, filled: u64, end: u64) {
        let last = if end >= self.len {
            self.len.div_ceil(PAGE_SIZE)
        } else {
            end / PAGE_SIZE
        };
        for idx in filled / PAGE_SIZE..last {
            self.clear(idx);
        }
    }

    /// The file was cut to `size`: old bytes past it are no longer needed.
    pub(in crate::vfs) fn truncate(&mut self, size: u64) {
        if size >= self.len {
            return;
        }
        for idx in size.div_ceil(PAGE_SIZE)..self.len.div_ceil(PAGE_SIZE) {
            self.clear(idx);
        }
        self.len = size;
    }
}

pub(in crate::vfs) struct Staging {
    /// The staged bytes. Created on the first change that needs it, so creating and
    /// closing an empty file allocates no staging inode (on ext4, churning anonymous
    /// inodes dominated create throughput). Invariant: `None` implies `size == 0`.
    pub(in crate::vfs) file: Option<Arc<std::fs::File>>,
    pub(in crate::vfs) size: u64,
    /// Bytes `[0, filled)` are the written prefix; beyond it the staging may hold a hole
    /// made by fallocate or an extending truncate, or bytes copied in from the previous
    /// version, which the application will often write next (fio and many writers
    /// preallocate, then write from 0). A stream sends only this prefix, so it does not
    /// send bytes that the writes then overwrite, which would break it. Invariant:
    /// `filled <= size`.
    pub(in crate::vfs) filled: u64,
    pub(in crate::vfs) dirty: bool,
    pub(in crate::vfs) mtime_ns: i64,
    pub(in crate::vfs) ctime_ns: i64,
    /// Bumped by every data change (under the staging lock).
    pub(in crate::vfs) generation: u64,
    /// The upload being fed while the file is written ([`stream`]).
    pub(super) stream: Option<stream::WriteStream>,
    /// Set when a change broke a stream: this file is not written sequentially, so no
    /// new stream starts for as long as the staging lives.
    pub(in crate::vfs) stream_broken: bool,
    /// The staging file is also an ASYNC_THROUGH journal entry (the journal linked it
    /// instead of copying it), so its bytes must never change: the next change works on
    /// a copy ([`Staging::file_to_change`]). Invariant: while set, nothing writes to,
    /// truncates or extends `file`.
    pub(in crate::vfs) frozen: bool,
    /// Old bytes not copied in yet ([`Base`]); `None` once there are none.
    pub(in crate::vfs) base: Option<Base>,
}

impl Staging {
    /// The staging file, to read, created now if there is none yet.
    pub(in crate::vfs) fn file(
        &mut self,
        dir: &Path,
        ino: InodeNo,
    ) -> std::io::Result<Arc<std::fs::File>> {
        if let Some(f) = &self.file {
            return Ok(f.clone());
        }
        let f = Arc::new(new_staging_file(dir, ino)?);
        self.file = Some(f.clone());
        Ok(f)
    }

    /// The staging file, to change: a frozen one (a journal entry) is first replaced by a
    /// copy of its `size` bytes, so the journaled bytes stay as they were. Blocking; runs
    /// on the FUSE thread of the change, like the write itself.
    pub(in crate::vfs) fn file_to_change(
        &mut self,
        dir: &Path,
        ino: InodeNo,
    ) -> std::io::Result<Arc<std::fs::File>> {
        if self.frozen
            && let Some(old) = self.file.take()
        {
            let new = new_staging_file(dir, ino)?;
            // The frozen file holds exactly `size` bytes (the journal links only then,
            // and nothing has changed it since).
            crate::ufs::copy_file(&old, &new, self.size)?;
            self.file = Some(Arc::new(new));
        }
        self.frozen = false;
        self.file(dir, ino)
    }

    /// Before bytes from `offset` on change: a change below what a stream already sent
    /// breaks it (dropping it aborts its upload).
    pub(in crate::vfs) fn changing_from(&mut self, offset: u64, metrics: &crate::metrics::Metrics) {
        if self
            .stream
            .as_ref()
            .is_some_and(|w| !w.allows_change_at(offset))
        {
            self.stream = None;
            self.stream_broken = true;
            crate::metrics::Metrics::inc(&metrics.streamed_aborts);
        }
    }

    /// Forgets the base once no page needs old bytes from it.
    pub(in crate::vfs) fn drop_spent_base(&mut self) {
        if self.base.as_ref().is_some_and(|b| b.left == 0) {
            self.base = None;
        }
    }

    /// Records a data change: mtime and ctime move to now.
    pub(in crate::vfs) fn touch(&mut self) {
        self.generation += 1;
        self.dirty = true;
        self.mtime_ns = now_ns();
        self.ctime_ns = self.mtime_ns;
    }
}

/// Per-inode write state shared by every open handle of the inode.
pub(in crate::vfs) struct OpenFile {
    pub(in crate::vfs) refs: AtomicUsize,
    pub(in crate::vfs) st: tokio::sync::Mutex<Option<Staging>>,
    /// Notified when the last reference goes ([`LocalCopy::settle`] waits for it).
    pub(in crate::vfs) closed: tokio::sync::Notify,
}

impl OpenFile {
    /// Size, mtime and ctime of the staged content, if staging is set up.
    pub(in crate::vfs) async fn staged_size(&self) -> Option<(u64, i64, i64)> {
        self.st
            .lock()
            .await
            .as_ref()
            .map(|s| (s.size, s.mtime_ns, s.ctime_ns))
    }

    /// Applies a setattr to the staged times: `mtime` if given, and ctime = `now`.
    pub(in crate::vfs) async fn set_times(&self, mtime: Option<i64>, now: i64) {
        if let Some(s) = self.st.lock().await.as_mut() {
            if let Some(m) = mtime {
                s.mtime_ns = m;
            }
            s.ctime_ns = now;
        }
    }
}

pub(in crate::vfs) fn new_staging_file(dir: &Path, ino: InodeNo) -> std::io::Result<std::fs::File> {
    let f = open_staging_file(dir, ino)?;
    // No read-ahead on staging: its reads (a streamed upload's parts, a commit's upload)
    // are of bytes just written, so in the page cache, and read-ahead past them runs into
    // the hole a preallocating writer left (fio fallocates the whole file, then writes from
    // 0), zero-filling folios the writer then has to take over: measured, a 1 GiB
    // fallocate-then-write cost the daemon 3.8 CPU-s instead of 1.0, 60% in memset.
    let _ = nix::fcntl::posix_fadvise(&f, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_RANDOM);
    Ok(f)
}

fn open_staging_file(dir: &Path, ino: InodeNo) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    // An unnamed file in the staging directory; where O_TMPFILE is unsupported, a named
    // one unlinked at once. Either way a crash leaves nothing behind.
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(dir)
    {
        Ok(f) => return Ok(f),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {}
        Err(e) => return Err(e),
    }
    let seq = STAGING_SEQ.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{}-{}-{}.staging", std::process::id(), ino.0, seq));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

impl Vfs {
    pub(in crate::vfs) fn acquire_open_file(&self, ino: InodeNo) -> Arc<OpenFile> {
        let mut m = lock(&self.open_files);
        let of = m
            .entry(ino)
            .or_insert_with(|| {
                Arc::new(OpenFile {
                    refs: AtomicUsize::new(0),
                    st: tokio::sync::Mutex::new(None),
                    closed: tokio::sync::Notify::new(),
                })
            })
            .clone();
        of.refs.fetch_add(1, Ordering::Relaxed);
        of
    }

    /// Makes `of`, whose last reference went, the open staging of `ino` again, with a
    /// reference for the caller: unless an open since has made one, which is kept (then
    /// false, and the caller holds no reference).
    pub(in crate::vfs) fn register_again(&self, ino: InodeNo, of: &Arc<OpenFile>) -> bool {
        let mut m = lock(&self.open_files);
        if m.contains_key(&ino) {
            return false;
        }
        of.refs.fetch_add(1, Ordering::Relaxed);
        m.insert(ino, of.clone());
        true
    }

    /// Drops one reference; returns true when it was the last (the entry is then gone).
    pub(in crate::vfs) fn release_open_file(&self, ino: InodeNo, of: &Arc<OpenFile>) -> bool {
        let mut m = lock(&self.open_files);
        if of.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
            if m.get(&ino).is_some_and(|e| Arc::ptr_eq(e, of)) {
                m.remove(&ino);
            }
            of.closed.notify_waiters();
            return true;
        }
        false
    }

    /// Sets up staging for `rec` if needed: empty for a truncating open or a file with no
    /// object yet, else a copy of the current content (through the page cache).
    pub(in crate::vfs) async fn init_staging(
        self: &Arc<Self>,
        of: &OpenFile,
        rec: &InodeRecord,
        truncate: bool,
    ) -> Result<(), FsError> {
        let mut g = of.st.lock().await;
        if let Some(s) = g.as_mut() {
            if truncate {
                s.changing_from(0, &self.metrics);
                if s.frozen {
                    // Nothing of the journaled bytes is needed: start over empty.
                    s.file = None;
                    s.frozen = false;
                } else if let Some(f) = s.file.clone() {
                    blocking("staging", move || f.set_len(0)).await??;
                }
                s.size = 0;
                s.filled = 0;
                s.base = None;
                s.touch();
            }
            return Ok(());
        }
        let ino = rec.ino;
        let copy = !truncate && rec.size > 0 && rec.version.is_some();
        // One syscall (O_TMPFILE), plus a sparse extension to the old size when the old
        // bytes are kept: cheaper here than a hop to the blocking pool (this runs on the
        // FUSE session thread of an open, create, truncate or unlink).
        let (file, base) = if copy {
            let f = new_staging_file(&self.cfg.staging_dir, ino)?;
            f.set_len(rec.size)?;
            let object = self.snapshot_of(rec).await?.object;
            let base = Base::new(object.expect("copy implies a version"), rec.size);
            (Some(Arc::new(f)), Some(base))
        } else {
            (None, None)
        };
        let size = if truncate || file.is_none() {
            0
        } else {
            rec.size
        };
        let mut st = Staging {
            size,
            // Copied-in bytes count as written only once a write appends right after
            // them (see `write`): an open of an existing file followed by a rewrite from
            // the start (fio lays out a file with fallocate, closes, then reopens and
            // writes it) must not stream the old bytes first.
            filled: 0,
            file,
            dirty: rec.version.is_none(),
            mtime_ns: rec.mtime_ns,
            ctime_ns: rec.ctime_ns,
            generation: 0,
            stream: None,
            stream_broken: false,
            frozen: false,
            base,
        };
        // A version still pending upload (ASYNC_THROUGH) lives in a journal entry that goes
        // once it is uploaded: its bytes are copied in now, while they are there.
        if crate::vfs::is_pending(rec) {
            self.copy_in(ino, &mut st, 0, u64::MAX, None).await?;
        }
        if truncate && rec.size > 0 {
            st.touch();
        } else if truncate {
            st.dirty = true;
        }
        *g = Some(st);
        Ok(())
    }

    /// Copies into the staging file the old bytes of every missing page that overlaps
    /// `[start, end)` ([`Base`]); only those at or past the written prefix, which holds the
    /// file's bytes already. A page whose old bytes all lie inside `overwritten` (what a
    /// write is about to replace) is only marked present. Runs under the staging lock, so
    /// nothing sees a page half copied.
    pub(in crate::vfs) async fn copy_in(
        self: &Arc<Self>,
        ino: InodeNo,
        st: &mut Staging,
        start: u64,
        end: u64,
        overwritten: Option<(u64, u64)>,
    ) -> Result<(), FsError> {
        let filled = st.filled;
        let Some(base) = st.base.as_mut() else {
            return Ok(());
        };
        let last = end.min(base.len).div_ceil(PAGE_SIZE);
        let mut key_fresh = false;
        for idx in start / PAGE_SIZE..last {
            if !base.is_missing(idx) {
                continue;
            }
            let Some((lo, to)) = base
                .old_range(idx, filled)
                .filter(|&(lo, to)| !overwritten.is_some_and(|(a, b)| a <= lo && to <= b))
            else {
                base.clear(idx);
                continue;
            };
            let page = self.base_page(ino, base, &mut key_fresh, idx).await?;
            let from = idx * PAGE_SIZE;
            let (a, b) = ((lo - from) as usize, ((to - from) as usize).min(page.len()));
            let f = st
                .file
                .clone()
                .ok_or_else(|| FsError::new(libc::EIO, "staging with a base has no file"))?;
            if a < b {
                let this = self.clone();
                blocking("staging", move || {
                    let held = || this.local.in_flight(ino);
                    this.cache
                        .with_disk_room((b - a) as u64, held, || f.write_all_at(&page[a..b], lo))
                })
                .await??;
            }
            base.clear(idx);
            crate::metrics::Metrics::inc(&self.metrics.staging_copied_pages);
        }
        st.drop_spent_base();
        Ok(())
    }

    /// Page `idx` of the previous version. The first call for one operation looks the
    /// key up again: the file may have moved (with its directory) since the base was taken.
    pub(in crate::vfs) async fn base_page(
        self: &Arc<Self>,
        ino: InodeNo,
        base: &mut Base,
        key_fresh: &mut bool,
        idx: u64,
    ) -> Result<Bytes, FsError> {
        if !*key_fresh {
            let loc = self.key_of(ino, FileKind::File).await?;
            let old = &base.object;
            base.object = loc.read_of(old.id.version_text(), old.size, ino);
            *key_fresh = true;
        }
        let (page, _) = self.fetcher.page(&base.object, idx).await?;
        Ok(page)
    }

    /// Copies in every old byte of `ino`'s open staging, if it has one: before its object
    /// moves or goes, its old bytes must be read while they are where the base says.
    pub(in crate::vfs) async fn materialize_staging(
        self: &Arc<Self>,
        ino: InodeNo,
    ) -> Result<(), FsError> {
        let of = lock(&self.open_files).get(&ino).cloned();
        let Some(of) = of else { return Ok(()) };
        let mut g = of.st.lock().await;
        match g.as_mut() {
            Some(st) => self.copy_in(ino, st, 0, u64::MAX, None).await,
            None => Ok(()),
        }
    }

    /// Copies in the old bytes of every open staging under directory `dir`, before the
    /// directory moves: a copy-based move may give its objects new versions (ETags), and
    /// the bases name the old ones.
    pub(in crate::vfs) async fn materialize_under(
        self: &Arc<Self>,
        dir: InodeNo,
    ) -> Result<(), FsError> {
        let open: Vec<InodeNo> = lock(&self.open_files).keys().copied().collect();
        for ino in open {
            // An inode that left the tree (unlinked while open) moves with nothing.
            if self.is_within(ino, dir).await.unwrap_or(false) {
                self.materialize_staging(ino).await?;
            }
        }
        Ok(())
    }

    /// Reads from `ino`'s staged content; `None` when there is no staging yet.
    pub(in crate::vfs) async fn read_staged(
        self: &Arc<Self>,
        ino: InodeNo,
        of: &OpenFile,
        offset: u64,
        size: u32,
    ) -> Result<Option<Bytes>, FsError> {
        let mut g = of.st.lock().await;
        let Some(s) = g.as_mut() else { return Ok(None) };
        if offset >= s.size {
            return Ok(Some(Bytes::new()));
        }
        let n = (s.size - offset).min(u64::from(size)) as usize;
        let Some(f) = s.file.clone() else {
            return Ok(Some(Bytes::new())); // no file means no bytes
        };
        let mut buf = blocking("staging", move || pread(&f, offset, offset + n as u64)).await??;
        // Old bytes not copied in yet are read from the previous version over the staged
        // hole, not copied in: a read need not write (see `Base` for where they are).
        let (end, filled) = (offset + n as u64, s.filled);
        if let Some(base) = s.base.as_mut() {
            let mut key_fresh = false;
            for idx in offset / PAGE_SIZE..end.min(base.len).div_ceil(PAGE_SIZE) {
                let Some((lo, hi)) = base
                    .old_range(idx, filled)
                    .map(|(lo, to)| (lo.max(offset), to.min(end)))
                    .filter(|(lo, hi)| lo < hi)
                else {
                    continue;
                };
                let page = self.base_page(ino, base, &mut key_fresh, idx).await?;
                let from = idx * PAGE_SIZE;
                let old = page
                    .get((lo - from) as usize..(hi - from) as usize)
                    .ok_or_else(|| FsError::new(libc::ESTALE, "previous version is short"))?;
                buf[(lo - offset) as usize..(hi - offset) as usize].copy_from_slice(old);
            }
        }
        Ok(Some(Bytes::from(buf)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::ObjectId;

    fn base(len: u64) -> Base {
        let object = ObjectRead {
            id: Arc::new(ObjectId::new(Arc::from("s"), "k", "v")),
            size: len,
            store: None,
            owner: InodeNo(2),
            for_peer: false,
        };
        Base::new(Arc::new(object), len)
    }

    fn missing(b: &Base) -> Vec<u64> {
        (0..b.len.div_ceil(PAGE_SIZE) + 2)
            .filter(|i| b.is_missing(*i))
            .collect()
    }

    #[test]
    fn base_tracks_the_pages_still_to_copy() {
        // 130 pages and a bit: three bitmap words, the last one partial.
        let len = 130 * PAGE_SIZE + 7;
        let mut b = base(len);
        assert_eq!(b.left, 131);
        assert_eq!(missing(&b), (0..131).collect::<Vec<_>>());

        // The written prefix reaching into page 2 frees pages 0 and 1 only.
        b.written_up_to(0, 2 * PAGE_SIZE + 1);
        assert_eq!(b.left, 129);
        assert!(!b.is_missing(1) && b.is_missing(2));
        // Clearing twice counts once.
        b.clear(1);
        assert_eq!(b.left, 129);
        // Old bytes: none in a cleared page; in page 2 only past the prefix; in the last
        // page only up to the old length.
        assert_eq!(b.old_range(1, 2 * PAGE_SIZE + 1), None);
        assert_eq!(
            b.old_range(2, 2 * PAGE_SIZE + 1),
            Some((2 * PAGE_SIZE + 1, 3 * PAGE_SIZE))
        );
        assert_eq!(b.old_range(130, 0), Some((130 * PAGE_SIZE, len)));
        assert_eq!(b.old_range(3, 4 * PAGE_SIZE), None, "all below the prefix");

        // A cut inside page 100 drops pages 101..; page 100 still has old bytes.
        b.truncate(100 * PAGE_SIZE + 5);
        assert_eq!(b.len, 100 * PAGE_SIZE + 5);
        assert_eq!(b.left, 99);
        assert!(b.is_missing(100) && !b.is_missing(101) && !b.is_missing(130));
        // Growing never brings old bytes back.
        b.truncate(len);
        assert_eq!(b.len, 100 * PAGE_SIZE + 5);

        // A prefix reaching the old length frees its last, short page too.
        b.written_up_to(2 * PAGE_SIZE, 100 * PAGE_SIZE + 5);
        assert_eq!(b.left, 0);
        assert!(missing(&b).is_empty());
    }
}
