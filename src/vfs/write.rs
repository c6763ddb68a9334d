//! The write path (`CACHE_THROUGH`): opens for writing share one staging file per inode on
//! the cache disk; flush, fsync, truncate and the last close upload it as one whole object
//! at the file's path, then commit size and version to the namespace, then keep the pages
//! cached under the new version.
//!
//! Invariant: the namespace's size and version of a file change only after the UFS holds
//! the complete object with that content. A crash before that leaves the previous,
//! complete state visible. Staging files are anonymous (unlinked at creation), so a
//! crashed daemon leaves nothing behind on the cache disk.

mod stream;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use alluxio_metaserver::{NewNode, SetAttr};
use bytes::Bytes;

use super::mounts::Loc;
use super::{Handle, ReadSnapshot, Vfs, lock};
use crate::config::WriteType;
use crate::error::FsError;
use crate::fetch::ObjectRead;
use crate::metrics::Metrics;
use crate::types::{FileHandle, FileKind, InodeNo, InodeRecord, PAGE_SIZE, now_ns};

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
struct Base {
    /// The previous version (its key is looked up again at each copy: the file may have
    /// been moved with its directory since).
    object: Arc<ObjectRead>,
    /// Bytes `[0, len)` of the previous version are still part of the file; a truncate
    /// lowers it (what lies past it is gone, or zeros from an extension).
    len: u64,
    /// One bit per page: set while the page's old bytes are still only in the previous
    /// version.
    missing: Vec<u64>,
    /// Set bits in `missing`.
    left: u64,
}

impl Base {
    fn new(object: Arc<ObjectRead>, len: u64) -> Self {
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

    fn is_missing(&self, idx: u64) -> bool {
        self.missing
            .get((idx / 64) as usize)
            .is_some_and(|w| w & (1 << (idx % 64)) != 0)
    }

    fn clear(&mut self, idx: u64) {
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
    fn old_range(&self, idx: u64, filled: u64) -> Option<(u64, u64)> {
        if !self.is_missing(idx) {
            return None;
        }
        let from = idx * PAGE_SIZE;
        let (lo, to) = (from.max(filled), (from + PAGE_SIZE).min(self.len));
        (lo < to).then_some((lo, to))
    }

    /// The written prefix grew from `filled` to `end`: pages wholly below `end` hold no
    /// old byte any more.
    fn written_up_to(&mut self, filled: u64, end: u64) {
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
    fn truncate(&mut self, size: u64) {
        if size >= self.len {
            return;
        }
        for idx in size.div_ceil(PAGE_SIZE)..self.len.div_ceil(PAGE_SIZE) {
            self.clear(idx);
        }
        self.len = size;
    }
}

struct Staging {
    /// The staged bytes. Created on the first change that needs it, so creating and
    /// closing an empty file allocates no staging inode (on ext4, churning anonymous
    /// inodes dominated create throughput). Invariant: `None` implies `size == 0`.
    file: Option<Arc<std::fs::File>>,
    size: u64,
    /// Bytes `[0, filled)` are the written prefix; beyond it the staging may hold a hole
    /// made by fallocate or an extending truncate, or bytes copied in from the previous
    /// version, which the application will often write next (fio and many writers
    /// preallocate, then write from 0). A stream sends only this prefix, so it does not
    /// send bytes that the writes then overwrite, which would break it. Invariant:
    /// `filled <= size`.
    filled: u64,
    dirty: bool,
    mtime_ns: i64,
    ctime_ns: i64,
    /// Bumped by every data change (under the staging lock).
    generation: u64,
    /// The upload being fed while the file is written ([`stream`]).
    stream: Option<stream::WriteStream>,
    /// Set when a change broke a stream: this file is not written sequentially, so no
    /// new stream starts for as long as the staging lives.
    stream_broken: bool,
    /// The staging file is also an ASYNC_THROUGH journal entry (the journal linked it
    /// instead of copying it), so its bytes must never change: the next change works on
    /// a copy ([`Staging::file_to_change`]). Invariant: while set, nothing writes to,
    /// truncates or extends `file`.
    frozen: bool,
    /// Old bytes not copied in yet ([`Base`]); `None` once there are none.
    base: Option<Base>,
}

impl Staging {
    /// The staging file, to read, created now if there is none yet.
    fn file(&mut self, dir: &Path, ino: InodeNo) -> std::io::Result<Arc<std::fs::File>> {
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
    fn file_to_change(&mut self, dir: &Path, ino: InodeNo) -> std::io::Result<Arc<std::fs::File>> {
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
    fn changing_from(&mut self, offset: u64, metrics: &crate::metrics::Metrics) {
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
    fn drop_spent_base(&mut self) {
        if self.base.as_ref().is_some_and(|b| b.left == 0) {
            self.base = None;
        }
    }

    /// Records a data change: mtime and ctime move to now.
    fn touch(&mut self) {
        self.generation += 1;
        self.dirty = true;
        self.mtime_ns = now_ns();
        self.ctime_ns = self.mtime_ns;
    }
}

/// A committed version's bytes in a local file: the staging file it was written from
/// (while its generation is unchanged), or its journal entry (which never changes).
/// Offered to readers while `fill_pages` copies it into the disk tier.
pub(super) struct LocalCopy {
    pub(super) file: Arc<std::fs::File>,
    staging: Option<(Arc<OpenFile>, u64)>,
}

impl LocalCopy {
    /// An immutable file (an uploaded journal entry).
    pub(super) fn immutable(file: Arc<std::fs::File>) -> Self {
        Self {
            file,
            staging: None,
        }
    }

    /// `of`'s staging file, holding the version committed at `generation`.
    pub(super) fn staged(file: Arc<std::fs::File>, of: Arc<OpenFile>, generation: u64) -> Self {
        Self {
            file,
            staging: Some((of, generation)),
        }
    }

    /// Whether the file can change no more: a journal entry, or a staging that every
    /// handle has closed (no handle, truncate or unlink holds it any more, and a later
    /// open gets a staging of its own), still at the committed generation.
    pub(super) async fn settled(&self) -> bool {
        match &self.staging {
            None => true,
            Some((of, generation)) => {
                of.refs.load(Ordering::Acquire) == 0
                    && of.st.lock().await.as_ref().map(|s| s.generation) == Some(*generation)
            }
        }
    }

    /// [`Self::settled`], waiting up to `within` for the staging's last handle to close.
    /// Close sends FLUSH, which commits the version and starts its copy into the disk
    /// tier, then RELEASE a moment later: a file written and closed settles right after
    /// its copy starts, and waiting for that lets the tier adopt it whole instead of
    /// copying pages that the adoption would then replace (all of a small file's).
    pub(super) async fn settle(&self, within: std::time::Duration) -> bool {
        let Some((of, _)) = &self.staging else {
            return true;
        };
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Registered before the check, so a close between the two is not missed.
            let closed = of.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.settled().await {
                return true;
            }
            if of.refs.load(Ordering::Acquire) == 0 {
                return false; // closed, but changed since the commit: never settles
            }
            if tokio::time::timeout_at(deadline, closed).await.is_err() {
                return false;
            }
        }
    }

    /// Whether this is `of`'s staging.
    pub(super) fn staged_in(&self, of: &Arc<OpenFile>) -> bool {
        self.staging
            .as_ref()
            .is_some_and(|(s, _)| Arc::ptr_eq(s, of))
    }

    /// Bytes `start..end` of the version, or `None` when the file no longer holds it (or
    /// cannot be read). A staging file holds it only while its generation is the
    /// committed one; the check comes after the read, and writes bump the generation under
    /// the staging lock, so bytes read before a successful check include no later write.
    /// With `wait` false, a staging still open and locked right now counts as changed: a
    /// reader never queues behind a writer, it goes to the UFS instead.
    pub(super) async fn read(&self, start: u64, end: u64, wait: bool) -> Option<Vec<u8>> {
        let f = self.file.clone();
        let b = tokio::task::spawn_blocking(move || pread(&f, start, end))
            .await
            .ok()?
            .ok()?;
        if let Some((of, generation)) = &self.staging {
            // Once every handle is closed nobody holds this lock for long (only the copy's
            // own checks), so a reader may wait for it: failing over to the store on such
            // brief contention sent reads right after a close to the UFS.
            let wait = wait || of.refs.load(Ordering::Acquire) == 0;
            let g = if wait {
                Some(of.st.lock().await)
            } else {
                of.st.try_lock().ok()
            };
            if g.as_ref().and_then(|g| g.as_ref()).map(|s| s.generation) != Some(*generation) {
                return None;
            }
        }
        Some(b)
    }
}

/// Bytes `start..end` of `f` (blocking).
pub(super) fn pread(f: &std::fs::File, start: u64, end: u64) -> std::io::Result<Vec<u8>> {
    let mut b = vec![0u8; end.saturating_sub(start) as usize];
    f.read_exact_at(&mut b, start).map(|_| b)
}

/// Per-inode write state shared by every open handle of the inode.
pub(super) struct OpenFile {
    refs: AtomicUsize,
    st: tokio::sync::Mutex<Option<Staging>>,
    /// Notified when the last reference goes ([`LocalCopy::settle`] waits for it).
    closed: tokio::sync::Notify,
}

impl OpenFile {
    /// Size, mtime and ctime of the staged content, if staging is set up.
    pub(super) async fn staged_size(&self) -> Option<(u64, i64, i64)> {
        self.st
            .lock()
            .await
            .as_ref()
            .map(|s| (s.size, s.mtime_ns, s.ctime_ns))
    }

    /// Applies a setattr to the staged times: `mtime` if given, and ctime = `now`.
    pub(super) async fn set_times(&self, mtime: Option<i64>, now: i64) {
        if let Some(s) = self.st.lock().await.as_mut() {
            if let Some(m) = mtime {
                s.mtime_ns = m;
            }
            s.ctime_ns = now;
        }
    }
}

/// What an open asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenMode {
    /// Opened for writing (O_WRONLY or O_RDWR).
    pub write: bool,
    /// O_TRUNC.
    pub truncate: bool,
}

/// The least a write that found the cache disk full asks the disk tier to give back:
/// freeing a few pages per 1 MiB write would put every write of a large file through
/// another eviction.
const MIN_RELEASE: u64 = 16 << 20;

/// The longest a write that found the cache disk full waits for copies into the tier to
/// give their local files back (see [`Vfs::with_disk_room`]).
const ROOM_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Vfs {
    /// Runs `write`, which writes `len` bytes of a file's own data (staging, a journal
    /// entry) to the cache disk. When the disk is full, cached pages give way: they are
    /// copies of what the store holds, these bytes are not. The disk tier evicts
    /// [`MIN_RELEASE`] or `len` bytes, whichever is more, and the write runs again, for as
    /// long as eviction frees anything; then ENOSPC stands. `write` must be safe to run
    /// again (a positional write, a rewrite of a temporary file). Blocking: call it on a
    /// FUSE thread or the blocking pool.
    ///
    /// Written versions still being copied into the tier hold their local files (bytes the
    /// store has now) until the copy ends and the file is closed, on the blocking pool a
    /// moment later. With nothing left to evict, the write waits for those, polling, and
    /// 250 ms more once none is left, at most [`ROOM_WAIT`] in all. Copies of `ino`
    /// itself are not waited for: the caller holds `ino`'s staging lock, which such a copy
    /// may be waiting on.
    pub(super) fn with_disk_room<T>(
        &self,
        ino: InodeNo,
        len: u64,
        mut write: impl FnMut() -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        use std::time::{Duration, Instant};
        const POLL: Duration = Duration::from_millis(10);
        // How long to go on polling once no copy is in flight: other brief holders of a
        // closed file (the commit task a RELEASE spawns, a reader's clone of a local copy)
        // let go within it.
        const QUIET: Duration = Duration::from_millis(250);
        let deadline = Instant::now() + ROOM_WAIT;
        let mut quiet_since = None;
        loop {
            match write() {
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                    if self.cache.release_disk(len.max(MIN_RELEASE)) > 0 {
                        continue;
                    }
                    let now = Instant::now();
                    if self.local.in_flight(ino) {
                        quiet_since = None;
                    } else if now - *quiet_since.get_or_insert(now) >= QUIET {
                        return Err(e);
                    }
                    if now >= deadline {
                        return Err(e);
                    }
                    std::thread::sleep(POLL);
                }
                r => return r,
            }
        }
    }
}

fn new_staging_file(dir: &Path, ino: InodeNo) -> std::io::Result<std::fs::File> {
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
    pub(super) fn acquire_open_file(&self, ino: InodeNo) -> Arc<OpenFile> {
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

    /// Drops one reference; returns true when it was the last (the entry is then gone).
    pub(super) fn release_open_file(&self, ino: InodeNo, of: &Arc<OpenFile>) -> bool {
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
    pub(super) async fn init_staging(
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
                    tokio::task::spawn_blocking(move || f.set_len(0))
                        .await
                        .map_err(|e| FsError::new(libc::EIO, e.to_string()))??;
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
        if super::is_pending(rec) {
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
    async fn copy_in(
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
                tokio::task::spawn_blocking(move || {
                    this.with_disk_room(ino, (b - a) as u64, || f.write_all_at(&page[a..b], lo))
                })
                .await
                .map_err(|e| FsError::new(libc::EIO, e.to_string()))??;
            }
            base.clear(idx);
            crate::metrics::Metrics::inc(&self.metrics.staging_copied_pages);
        }
        st.drop_spent_base();
        Ok(())
    }

    /// Page `idx` of the previous version. The first call for one operation looks the
    /// key up again: the file may have moved (with its directory) since the base was taken.
    async fn base_page(
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
    pub(super) async fn materialize_staging(self: &Arc<Self>, ino: InodeNo) -> Result<(), FsError> {
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
    pub(super) async fn materialize_under(self: &Arc<Self>, dir: InodeNo) -> Result<(), FsError> {
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
    pub(super) async fn read_staged(
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
        let mut buf = tokio::task::spawn_blocking(move || pread(&f, offset, offset + n as u64))
            .await
            .map_err(|e| FsError::new(libc::EIO, e.to_string()))??;
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

    async fn snapshot_of(&self, rec: &InodeRecord) -> Result<ReadSnapshot, FsError> {
        let object = match &rec.version {
            Some(v) => Some(
                self.key_of(rec.ino, FileKind::File)
                    .await?
                    .read_of(v, rec.size, rec.ino),
            ),
            None => None,
        };
        Ok(ReadSnapshot { object })
    }

    /// Opens a file.
    /// Opens a file. Returns the handle and whether the kernel may keep its page cache for
    /// the file (FOPEN_KEEP_CACHE): only for a read-only open of the same version as the
    /// last read-only open, with no write in progress in this mount.
    pub async fn open(
        self: &Arc<Self>,
        ino: InodeNo,
        mode: OpenMode,
    ) -> Result<(FileHandle, bool), FsError> {
        let rec = self.meta.get(ino).await?;
        if rec.kind == FileKind::Dir {
            return Err(FsError::expected(libc::EISDIR, "is a directory"));
        }
        if mode.write {
            self.check_writable(ino).await?;
            let of = self.acquire_open_file(ino);
            // Staging is set up at open only for O_TRUNC (cheap: empty); otherwise the
            // current content is copied in on the first write, so opening O_RDWR without
            // writing costs nothing.
            if mode.truncate
                && let Err(e) = self.init_staging(&of, &rec, true).await
            {
                self.release_open_file(ino, &of);
                return Err(e);
            }
        }
        let snapshot = self.snapshot_of(&rec).await?;
        let keep_cache = {
            let writing = lock(&self.open_files).contains_key(&ino);
            let mut kc = lock(&self.kernel_cached);
            let keep = !mode.write
                && !writing
                && rec.version.is_some()
                && kc.get(&ino) == rec.version.as_ref();
            match (&rec.version, mode.write || writing) {
                (Some(v), false) => {
                    if kc.len() >= 1 << 20 {
                        kc.clear(); // bounded: forgetting only costs a re-read
                    }
                    kc.insert(ino, v.clone());
                }
                _ => {
                    kc.remove(&ino);
                }
            }
            keep
        };
        let fh = self.add_handle(Handle::File {
            ino,
            writable: mode.write,
            snapshot,
            stream: Default::default(),
        });
        Ok((fh, keep_cache))
    }

    /// Creates and opens a new file.
    pub async fn create(
        self: &Arc<Self>,
        parent: InodeNo,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(InodeRecord, FileHandle), FsError> {
        self.check_writable(parent).await?;
        self.ensure_loaded(parent).await?;
        // Refuse names the UFS cannot store before anything is created.
        self.new_child_key(parent, name, FileKind::File).await?;
        let node = NewNode {
            kind: FileKind::File,
            mode,
            uid,
            gid,
            rdev: 0,
            target: Vec::new(),
        };
        let rec = self.meta.create(parent, name.to_vec(), node).await?;
        let of = self.acquire_open_file(rec.ino);
        if let Err(e) = self.init_staging(&of, &rec, true).await {
            self.release_open_file(rec.ino, &of);
            return Err(e);
        }
        let snapshot = ReadSnapshot { object: None };
        let fh = self.add_handle(Handle::File {
            ino: rec.ino,
            writable: true,
            snapshot,
            stream: Default::default(),
        });
        Ok((rec, fh))
    }

    /// For a change of `len` bytes at `offset` through handle `fh`: checks the handle is
    /// open for writing and the range fits in a file, and returns the inode's staging (set
    /// up with the current content on first use) and the range's end.
    async fn writable_staging(
        self: &Arc<Self>,
        fh: FileHandle,
        offset: u64,
        len: u64,
    ) -> Result<(Arc<OpenFile>, u64, InodeNo), FsError> {
        let h = self.handle(fh)?;
        let Handle::File {
            ino,
            writable: true,
            ..
        } = &*h
        else {
            return Err(FsError::new(libc::EBADF, "handle not open for writing"));
        };
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= i64::MAX as u64)
            .ok_or_else(|| FsError::expected(libc::EFBIG, "range past the largest file offset"))?;
        let of = lock(&self.open_files)
            .get(ino)
            .cloned()
            .ok_or_else(|| FsError::new(libc::EBADF, "no staging for a writable handle"))?;
        if of.staged_size().await.is_none() {
            let rec = self.meta.get(*ino).await?;
            self.init_staging(&of, &rec, false).await?;
        }
        Ok((of, end, *ino))
    }

    /// Writes `data` at `offset` into the staged file; returns the bytes written.
    ///
    /// Called only from a FUSE session thread blocking on this future (never from a
    /// runtime worker), so the pwrite runs right here, straight from the kernel's request
    /// buffer: no copy into an owned buffer and no hop to the blocking pool, which were
    /// most of a 1 MiB write's cost.
    pub async fn write(
        self: &Arc<Self>,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
    ) -> Result<u32, FsError> {
        let (of, end, ino) = self.writable_staging(fh, offset, data.len() as u64).await?;
        let mut g = of.st.lock().await;
        let st = g
            .as_mut()
            .ok_or_else(|| FsError::new(libc::EIO, "staging not initialised"))?;
        let n = data.len();
        st.changing_from(offset, &self.metrics);
        // The written prefix grows with a write that starts inside or right at its end,
        // or one that appends at the end of the file (then all before it counts as
        // final: an append to an existing file streams it whole, so its old bytes are
        // copied in first).
        let grows = offset <= st.filled || offset == st.size;
        if offset <= st.filled {
            // The written prefix grows to `end`: old bytes below it are no longer needed,
            // and a page only partly below it keeps needing just those past it.
            if let Some(b) = st.base.as_mut() {
                b.written_up_to(st.filled, end);
            }
            st.drop_spent_base();
        } else if grows {
            // An append past the written prefix: everything between becomes final.
            let filled = st.filled;
            self.copy_in(ino, st, filled, offset, None).await?;
        } else {
            self.copy_in(ino, st, offset, end, Some((offset, end)))
                .await?;
        }
        let dir = &self.cfg.staging_dir;
        self.with_disk_room(ino, n as u64, || {
            st.file_to_change(dir, ino)?.write_all_at(data, offset)
        })?;
        if grows {
            st.filled = st.filled.max(end);
        }
        st.size = st.size.max(end);
        st.touch();
        let part = self.mount_table().part_bytes();
        match &st.stream {
            Some(w) => w.staged(st.filled, part),
            // A file whose written prefix grows past one part, and has not been rewritten
            // below what a stream sent, starts streaming.
            None if !st.stream_broken && st.filled >= part && self.streams_writes() => {
                st.stream = self.start_stream(ino, &of).await;
                match &st.stream {
                    Some(w) => w.staged(st.filled, part),
                    // Not streamable (a local store, no free upload slot): the commit
                    // uploads this staging whole; do not ask again on every write.
                    None => st.stream_broken = true,
                }
            }
            None => {}
        }
        Ok(n as u32)
    }

    /// Uploads the staged content of `ino` if it changed, then commits it.
    async fn commit(self: &Arc<Self>, ino: InodeNo, of: &Arc<OpenFile>) -> Result<(), FsError> {
        // A clean file has nothing to commit: say so without waiting for the inode lock,
        // which a rename or a background upload of any inode in its stripe may hold for as
        // long as the store takes. (A write racing this check through another descriptor
        // is committed by that descriptor's own flush.)
        if !of.st.lock().await.as_ref().is_some_and(|st| st.dirty) {
            return Ok(());
        }
        // Inode lock before the staging lock (the order every path uses). An ASYNC_THROUGH
        // commit changes only the local journal and the namespace, never a UFS key, so
        // invariant 9 does not apply and it takes no inode lock: otherwise close would
        // wait for the uploader, which holds this inode's lock for a whole upload.
        let _lock = match self.cfg.write_type {
            WriteType::AsyncThrough => None,
            WriteType::CacheThrough | WriteType::Through => Some(self.lock_inodes(&[ino]).await),
        };
        let mut g = of.st.lock().await;
        let Some(st) = g.as_mut() else { return Ok(()) };
        if !st.dirty {
            return Ok(());
        }
        let key = match self.key_of(ino, FileKind::File).await {
            Ok(k) => k,
            Err(e) if e.errno() == libc::ENOENT => {
                // Unlinked while open: there is no name left to upload to.
                st.dirty = false;
                st.stream = None;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        // What is uploaded or journaled is the whole content.
        self.copy_in(ino, st, 0, u64::MAX, None).await?;
        let mut queued = None;
        let version = match self.cfg.write_type {
            WriteType::AsyncThrough => {
                let journal = self.journal.clone().expect("ASYNC_THROUGH has a journal");
                let seq = super::journal::next_seq();
                let (file, size) = (st.file(&self.cfg.staging_dir, ino)?, st.size);
                let this = self.clone();
                let linked = tokio::task::spawn_blocking(move || {
                    this.with_disk_room(ino, size, || journal.persist(ino, seq, &file, size))
                })
                .await
                .map_err(|e| FsError::new(libc::EIO, e.to_string()))??;
                st.frozen |= linked;
                queued = Some(seq);
                super::journal::pending_tag(ino, seq)
            }
            WriteType::CacheThrough | WriteType::Through => {
                let streamed = match st.stream.take() {
                    Some(w) if w.key_is(&key) => match w.finish(st.file.clone(), st.size).await {
                        Ok(info) => Some(info),
                        Err(e) => {
                            tracing::warn!(ino = ino.0, error = %e, "streamed upload failed; uploading the whole file");
                            None
                        }
                    },
                    Some(_) => {
                        // Renamed since the stream started: dropping it aborts the upload.
                        crate::metrics::Metrics::inc(&self.metrics.streamed_aborts);
                        None
                    }
                    None => None,
                };
                match streamed {
                    Some(info) => info.version,
                    None => {
                        key.ufs
                            .upload_file(&key, st.file.clone(), st.size)
                            .await?
                            .version
                    }
                }
            }
        };
        self.forget_reused_version(ino, &key, &version).await;
        self.meta
            .set_attr(
                ino,
                SetAttr {
                    size: Some(st.size),
                    version: Some(Some(version.clone())),
                    mtime_ns: Some(st.mtime_ns),
                    ctime_ns: Some(st.ctime_ns),
                    ..Default::default()
                },
            )
            .await?;
        // Queued only once the namespace names the entry: the uploader drops an entry
        // whose version the namespace does not hold as superseded, and this commit holds
        // no inode lock that would keep the uploader from looking in between.
        if let Some(seq) = queued {
            // Close acknowledges an ASYNC_THROUGH file (SEMANTICS): the name and the
            // version naming the entry must survive a kill as the entry does, or the next
            // start finds an entry no inode names and drops it as superseded.
            self.meta.sync().await?;
            self.uploads.push(ino, seq, self.cfg.upload_delay);
        }
        st.dirty = false;
        if self.cfg.write_type == WriteType::Through {
            return Ok(());
        }
        // CACHE_THROUGH keeps the written pages cached under the new version. That is best
        // effort and off the caller's path: the data is durable already, so fsync and close
        // do not wait for the copy. (ASYNC_THROUGH caches them once uploaded, under the
        // store's version: a pending version is read from its journal entry, and pages
        // under it would be useless once the upload lands.)
        if self.cfg.write_type == WriteType::AsyncThrough {
            return Ok(());
        }
        let Some(file) = st.file.clone() else {
            return Ok(()); // empty: nothing to cache
        };
        // Offered before close or fsync returns: a read right after must find the bytes
        // here or in the cache, never only in the store.
        let (size, generation) = (st.size, st.generation);
        let src = LocalCopy::staged(file, of.clone(), generation);
        let offered = self.local.offer(ino, key.object(&version), src);
        let this = self.clone();
        self.rt
            .spawn(async move { this.fill_pages(offered, size).await });
        Ok(())
    }

    /// Drops the cached pages of `version` of `ino` when the file has that version already:
    /// the store gave new bytes the version of the old ones. A version made of size and
    /// mtime in seconds (SFTP, many WebDAV servers' ETags) does that for a rewrite of the
    /// same size within a second, and pages of the old bytes must not answer for the new.
    pub(super) async fn forget_reused_version(&self, ino: InodeNo, key: &Loc, version: &str) {
        let Ok(rec) = self.meta.get(ino).await else {
            return;
        };
        if rec.version.as_deref() == Some(version) {
            tracing::info!(
                ino = ino.0,
                version,
                "the store gave a rewrite the version of the bytes it replaced; dropping their cached pages"
            );
            self.cache.free(
                ino,
                Some(&key.object(version)),
                rec.size.div_ceil(PAGE_SIZE),
            );
        }
    }

    /// `flush` (every close of a descriptor): uploads pending writes, so close returns
    /// only once the object is complete in the UFS.
    pub async fn flush(self: &Arc<Self>, fh: FileHandle) -> Result<(), FsError> {
        let h = self.handle(fh)?;
        if let Handle::File {
            ino,
            writable: true,
            ..
        } = &*h
        {
            let of = lock(&self.open_files).get(ino).cloned();
            if let Some(of) = of {
                self.commit(*ino, &of).await?;
            }
        }
        Ok(())
    }

    /// `fsync`: uploads like flush, then makes the result durable: the namespace, and on
    /// a local-directory UFS the object itself (close only makes it complete and visible,
    /// as close does on a local filesystem).
    pub async fn fsync(self: &Arc<Self>, fh: FileHandle) -> Result<(), FsError> {
        self.flush(fh).await?;
        let ino = match &*self.handle(fh)? {
            Handle::File { ino, .. } => *ino,
            Handle::Dir { .. } => return self.sync_namespace().await,
        };
        self.sync_namespace().await?;
        // ASYNC_THROUGH's durability is its journal, synced by the commit above.
        if self.cfg.write_type != WriteType::AsyncThrough {
            match self.key_of(ino, FileKind::File).await {
                Ok(key) if key.ufs.is_local() => key.ufs.sync_object(&key).await?,
                Ok(_) => {} // an object store: a completed upload is durable
                Err(e) if e.errno() == libc::ENOENT => {} // unlinked: nothing to keep
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Makes every namespace change so far durable (fsyncdir, fsync).
    pub async fn sync_namespace(&self) -> Result<(), FsError> {
        Ok(self.meta.sync().await?)
    }

    /// Closes a handle. Must not wait on the network: a last upload (writes after the last
    /// flush, e.g. through mmap) runs in the background, and so does dropping an inode that
    /// was unlinked while open.
    pub fn release(self: &Arc<Self>, fh: FileHandle) {
        let Some(h) = lock(&self.handles).remove(&fh.0) else {
            return;
        };
        let Handle::File { ino, writable, .. } = &*h else {
            return;
        };
        let ino = *ino;
        if *writable {
            let of = lock(&self.open_files).get(&ino).cloned();
            if let Some(of) = of
                && self.release_open_file(ino, &of)
            {
                let this = self.clone();
                self.rt.spawn(async move {
                    if let Err(e) = this.commit(ino, &of).await {
                        Metrics::inc(&this.metrics.uploads_lost);
                        tracing::error!(ino = ino.0, error = %e, "upload after last close failed; data of this file is lost");
                    }
                });
            }
        }
        let last = {
            let mut c = lock(&self.open_counts);
            match c.get_mut(&ino) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                _ => {
                    c.remove(&ino);
                    true
                }
            }
        };
        if last {
            let pinned = lock(&self.pinned).remove(&ino);
            if let Some(of) = pinned {
                self.release_open_file(ino, &of);
            }
            if lock(&self.orphans).remove(&ino) {
                let this = self.clone();
                self.rt.spawn(async move { this.drop_orphan(ino).await });
            }
        }
    }

    /// fallocate mode 0 (posix_fallocate): extends the file to cover the range. Other modes
    /// get EOPNOTSUPP.
    pub async fn fallocate(
        self: &Arc<Self>,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> Result<(), FsError> {
        if mode != 0 {
            return Err(FsError::expected(
                libc::EOPNOTSUPP,
                "only fallocate mode 0 is supported",
            ));
        }
        let (of, end, ino) = self.writable_staging(fh, offset, length).await?;
        let mut g = of.st.lock().await;
        let st = g
            .as_mut()
            .ok_or_else(|| FsError::new(libc::EIO, "staging not initialised"))?;
        if end > st.size {
            let f = st.file_to_change(&self.cfg.staging_dir, ino)?;
            tokio::task::spawn_blocking(move || f.set_len(end))
                .await
                .map_err(|e| FsError::new(libc::EIO, e.to_string()))??;
            st.size = end;
            st.touch();
        } else {
            st.ctime_ns = now_ns();
        }
        Ok(())
    }

    /// Truncates or extends a file to `size` and makes the result durable.
    pub(super) async fn truncate(self: &Arc<Self>, ino: InodeNo, size: u64) -> Result<(), FsError> {
        let rec = self.meta.get(ino).await?;
        if rec.kind == FileKind::Dir {
            return Err(FsError::expected(libc::EISDIR, "is a directory"));
        }
        let of = self.acquire_open_file(ino);
        let res = async {
            self.init_staging(&of, &rec, size == 0).await?;
            {
                let mut g = of.st.lock().await;
                let st = g
                    .as_mut()
                    .ok_or_else(|| FsError::new(libc::EIO, "staging missing"))?;
                st.changing_from(size, &self.metrics);
                let f = st.file_to_change(&self.cfg.staging_dir, ino)?;
                tokio::task::spawn_blocking(move || f.set_len(size))
                    .await
                    .map_err(|e| FsError::new(libc::EIO, e.to_string()))??;
                st.size = size;
                st.filled = st.filled.min(size);
                if let Some(b) = st.base.as_mut() {
                    b.truncate(size);
                }
                st.drop_spent_base();
                st.touch();
            }
            self.commit(ino, &of).await
        }
        .await;
        self.release_open_file(ino, &of);
        res
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
