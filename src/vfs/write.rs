//! The write path (`CACHE_THROUGH`): opens for writing share one staging file per inode on
//! the cache disk; flush, fsync, truncate and the last close upload it as one whole object
//! at the file's path, then commit size and version to the namespace, then keep the pages
//! cached under the new version.
//!
//! Invariant: the namespace's size and version of a file change only after the UFS holds
//! the complete object with that content. A crash before that leaves the previous,
//! complete state visible. Staging files are anonymous (unlinked at creation), so a
//! crashed daemon leaves nothing behind on the cache disk.

mod commit;
mod local_copy;
mod staging;
mod stream;

pub(super) use local_copy::{LocalCopy, pread};
pub(super) use staging::OpenFile;
use staging::Staging;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use alluxio_metaserver::{NewNode, SetAttr};
use bytes::Bytes;

use super::mounts::Loc;
use super::{Handle, KERNEL_CACHED_MAX, ReadSnapshot, Vfs, lock};

use crate::config::WriteType;
use crate::error::{FsError, blocking};
use crate::fetch::ObjectRead;
use crate::metrics::Metrics;
use crate::types::{FileHandle, FileKind, InodeNo, InodeRecord, PAGE_SIZE, now_ns};

/// What an open asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenMode {
    /// Opened for writing (O_WRONLY or O_RDWR).
    pub write: bool,
    /// O_TRUNC.
    pub truncate: bool,
}

impl Vfs {
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
        let rec = self.with_primary_dir_listed(rec).await?;
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
        if !mode.write {
            self.note_open(&rec, snapshot.object.as_ref());
        }
        let keep_cache = {
            let writing = lock(&self.open_files).contains_key(&ino);
            let mut kc = lock(&self.kernel_cached);
            let keep = !mode.write
                && !writing
                && rec.version.is_some()
                && kc.get(&ino) == rec.version.as_ref();
            match (&rec.version, mode.write || writing) {
                (Some(v), false) => {
                    if kc.len() >= KERNEL_CACHED_MAX {
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
        let held = || self.local.in_flight(ino);
        self.cache.with_disk_room(n as u64, held, || {
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
        self.metrics
            .open_file_handles
            .fetch_sub(1, Ordering::Relaxed);
        let ino = *ino;
        if *writable {
            let of = lock(&self.open_files).get(&ino).cloned();
            if let Some(of) = of
                && self.release_open_file(ino, &of)
            {
                let (this, running) = (self.clone(), super::LastClose::begin(self.clone()));
                self.rt.spawn(async move {
                    this.commit_after_last_close(ino, of).await;
                    drop(running);
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

    /// The commit after a file's last close (writes after its last flush, e.g. through
    /// mmap, or a flush that failed). No one waits for it, so a failure with the
    /// namespace or the store out of reach (EIO) is tried again, after 1, 2, 4 ... 60
    /// seconds, for up to `last_close_retry` ([`super::LAST_CLOSE_RETRY`]), instead of
    /// dropping the bytes. While it waits, the staging is registered again as the file's
    /// open staging, unless an open since the close has one already: an open of the file in this mount then shares it,
    /// so reads there see these bytes and that handle's own commits carry them (this one
    /// then finds nothing to do). A retry goes ahead only while the namespace shows no
    /// content change newer than this staging's last (mtime): a later close, elsewhere
    /// or through a staging opened here meanwhile, wins over these older bytes. At
    /// unmount ([`Vfs::shutdown`]) a commit waiting to be tried again is tried once more
    /// at once, and not again.
    async fn commit_after_last_close(self: Arc<Self>, ino: InodeNo, of: Arc<OpenFile>) {
        let deadline = tokio::time::Instant::now() + self.cfg.last_close_retry;
        let mut wait = std::time::Duration::from_secs(1);
        let mut retry = false;
        let mut registered = false;
        let mut waiting = false;
        let closes = &self.last_closes;
        loop {
            let last_try = closes.closing.load(Ordering::SeqCst);
            let superseded = match retry {
                false => Ok(false),
                true => self.superseded(ino, &of).await,
            };
            let res = match superseded {
                Ok(true) => {
                    Metrics::inc(&self.metrics.uploads_lost);
                    tracing::error!(
                        ino = ino.0,
                        "the file changed elsewhere while its last close's commit waited to be tried again; these older bytes are dropped"
                    );
                    break;
                }
                Ok(false) => self.commit(ino, &of).await,
                Err(e) => Err(e),
            };
            match res {
                Ok(()) => break,
                Err(e)
                    if e.errno() == libc::EIO
                        && tokio::time::Instant::now() < deadline
                        && !last_try =>
                {
                    Metrics::inc(&self.metrics.close_commit_retries);
                    tracing::warn!(ino = ino.0, error = %e, retry_in_s = wait.as_secs(), "commit after last close failed; will try again");
                    registered = registered || self.register_again(ino, &of);
                    if !waiting {
                        waiting = true;
                        Metrics::inc(&self.metrics.close_commits_waiting);
                    }
                    let unmount = closes.woken.notified();
                    tokio::pin!(unmount);
                    unmount.as_mut().enable();
                    if !closes.closing.load(Ordering::SeqCst) {
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = unmount => {}
                        }
                    }
                    wait = (wait * 2).min(std::time::Duration::from_secs(60));
                    retry = true;
                }
                Err(e) => {
                    Metrics::inc(&self.metrics.uploads_lost);
                    tracing::error!(ino = ino.0, error = %e, at_unmount = last_try, "commit after last close failed; data of this file is lost");
                    break;
                }
            }
        }
        if registered {
            self.release_open_file(ino, &of);
        }
        if waiting {
            self.metrics
                .close_commits_waiting
                .fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Unmount: the commits after a last close still in progress go on, one waiting to be
    /// tried again is tried once more now, and this waits for them all, up to `bound`.
    /// Whatever is still running then is cut when the process ends: counted in
    /// `uploads_lost` and logged. Returns how many that was.
    pub async fn shutdown(&self, bound: std::time::Duration) -> usize {
        let closes = &self.last_closes;
        closes.closing.store(true, Ordering::SeqCst);
        closes.woken.notify_waiters();
        let all_done = async {
            loop {
                let idle = closes.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if closes.running.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        };
        let _ = tokio::time::timeout(bound, all_done).await;
        let left = closes.running.load(Ordering::SeqCst);
        if left > 0 {
            Metrics::add(&self.metrics.uploads_lost, left as u64);
            tracing::error!(
                left,
                waited_s = bound.as_secs(),
                "unmount: commits after a last close still in progress are cut; their files' last bytes are lost"
            );
        }
        left
    }

    /// Whether the namespace holds a content change of `ino` newer than the staged one
    /// (its mtime later than the staging's last change): a close elsewhere that came
    /// after. Name changes, attribute changes and an upload replacing a pending version
    /// leave mtime alone, and this mount's own commits (even one whose answer was lost)
    /// set it to the staging's. A file no longer there is not superseded: its commit
    /// finds that out and drops the bytes.
    async fn superseded(&self, ino: InodeNo, of: &OpenFile) -> Result<bool, FsError> {
        let rec = match self.meta.get(ino).await {
            Ok(r) => r,
            Err(alluxio_metaserver::MetaError::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let g = of.st.lock().await;
        Ok(g.as_ref()
            .is_some_and(|st| st.dirty && rec.mtime_ns > st.mtime_ns))
    }

    /// The kernel dropped its inode `ino` (FUSE FORGET), and its page cache with it: the
    /// next open has nothing to keep. Without this, the table of what the kernel caches
    /// would keep an entry for every file ever opened read-only, up to its bound.
    pub fn forget(&self, ino: InodeNo) {
        lock(&self.kernel_cached).remove(&ino);
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
            blocking("staging", move || f.set_len(end)).await??;
            st.size = end;
            st.touch();
        } else {
            st.ctime_ns = now_ns();
        }
        Ok(())
    }

    /// Truncates or extends a file to `size`; with `commit`, makes the result durable
    /// now, else leaves it staged and dirty for the next commit of a handle open for
    /// writing (the caller's).
    pub(super) async fn truncate(
        self: &Arc<Self>,
        ino: InodeNo,
        size: u64,
        commit: bool,
    ) -> Result<(), FsError> {
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
                blocking("staging", move || f.set_len(size)).await??;
                st.size = size;
                st.filled = st.filled.min(size);
                if let Some(b) = st.base.as_mut() {
                    b.truncate(size);
                }
                st.drop_spent_base();
                st.touch();
            }
            // Left to the writer only while it still holds the file (it does for the
            // whole ftruncate call; this is the guard should it not).
            if commit || of.refs.load(std::sync::atomic::Ordering::Acquire) == 1 {
                self.commit(ino, &of).await
            } else {
                Ok(())
            }
        }
        .await;
        self.release_open_file(ino, &of);
        res
    }
}
