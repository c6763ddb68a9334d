//! Streamed uploads: a file written to an object store is uploaded part by part while the
//! application is still writing, so close and fsync have only the tail to send and the
//! upload to complete.
//!
//! Invariants:
//! - bytes `[0, sent)` of the staging file have been read and handed to the upload. They
//!   are read under the staging lock, and every change checks `sent` under that lock, so
//!   a change below `sent` (a rewrite, a truncate) can only come after the read; it breaks
//!   the stream: the upload is aborted and the commit uploads the whole file, as without
//!   streaming.
//! - only the written prefix (`Staging::filled`) is streamed, never a preallocated hole
//!   or bytes copied in from the previous version, which writes usually replace next.
//! - only a commit completes the upload. It holds the inode and staging locks and passes
//!   the final size, so the object is whole and holds exactly the committed content, or
//!   the commit falls back to a whole-file upload.
//! - a stream is tied to the key it started with; a commit under another key (the file
//!   was renamed) aborts it.
//! - the pump holds the file's state weakly: when the state goes (the file was closed
//!   with no commit left to do), the stream's sender drops with it and the upload is
//!   aborted, so no task or upload slot outlives the file.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};

use super::{OpenFile, Staging};
use crate::error::{CommitError, FsError, blocking};
use crate::metrics::Metrics;
use crate::types::InodeNo;
use crate::ufs::{ObjectInfo, Ufs, UploadStream};
use crate::vfs::Vfs;

/// The staging side of a streamed upload (kept in [`Staging`]).
pub(super) struct WriteStream {
    key: crate::vfs::mounts::Loc,
    /// Bytes `[0, sent)` are in the upload (see the module invariants).
    sent: u64,
    /// Tells the pump that more bytes are staged.
    wake: Arc<Notify>,
    /// Completes the upload; dropping it (with the stream) aborts the upload.
    done: oneshot::Sender<Finish>,
}

/// The commit's request to complete the upload with `[sent, len)` of `file` added.
struct Finish {
    file: Arc<std::fs::File>,
    sent: u64,
    len: u64,
    reply: oneshot::Sender<Result<ObjectInfo, FsError>>,
}

impl WriteStream {
    /// Whether a change at or after `offset` leaves the stream valid.
    pub(super) fn allows_change_at(&self, offset: u64) -> bool {
        offset >= self.sent
    }

    /// Called after bytes were staged: wakes the pump once a whole part is waiting.
    pub(super) fn staged(&self, size: u64, part: u64) {
        if size >= self.sent.saturating_add(part) {
            self.wake.notify_one();
        }
    }

    /// Whether this stream uploads to `key`.
    pub(super) fn key_is(&self, key: &crate::vfs::mounts::Loc) -> bool {
        self.key == *key
    }

    /// Completes the upload with the staged content (`len` bytes of `file`). Called with
    /// the staging lock held, so nothing changes meanwhile. An error means the object was
    /// not written; the caller uploads the whole file.
    pub(super) async fn finish(
        self,
        file: Option<Arc<std::fs::File>>,
        len: u64,
    ) -> Result<ObjectInfo, FsError> {
        let file = file.ok_or(CommitError::NoStaging)?;
        let (reply, rx) = oneshot::channel();
        let fin = Finish {
            file,
            sent: self.sent,
            len,
            reply,
        };
        if self.done.send(fin).is_err() {
            return Err(CommitError::UploadTaskEnded.into());
        }
        rx.await.map_err(|_| CommitError::UploadTaskEnded)?
    }
}

impl Vfs {
    /// Whether writes may be streamed: not ASYNC_THROUGH (whose durability is the local
    /// journal, uploaded later). Whether the file's store takes streams (an object store
    /// does, a local directory does not) is up to [`Ufs::start_stream`].
    pub(super) fn streams_writes(&self) -> bool {
        self.cfg.write_type != crate::config::WriteType::AsyncThrough
    }

    /// Starts streaming `ino`'s staged bytes to its object. `None` when no upload slot is
    /// free or the store refuses; the commit then uploads the whole file.
    pub(super) async fn start_stream(
        self: &Arc<Self>,
        ino: InodeNo,
        of: &Arc<OpenFile>,
    ) -> Option<WriteStream> {
        let key = self.key_of(ino, crate::types::FileKind::File).await.ok()?;
        let up = match key.ufs.start_stream(&key).await {
            Ok(u) => u?,
            Err(e) => {
                tracing::warn!(ino = ino.0, error = %e, "cannot start a streamed upload");
                return None;
            }
        };
        let wake = Arc::new(Notify::new());
        let (done, rx) = oneshot::channel();
        let pump = Pump {
            ufs: key.ufs.clone(),
            metrics: self.metrics.clone(),
            of: Arc::downgrade(of),
            wake: wake.clone(),
            up: Some(up),
        };
        self.rt.spawn(pump.run(rx));
        Some(WriteStream {
            key,
            sent: 0,
            wake,
            done,
        })
    }
}

/// The task that moves staged parts into the upload.
struct Pump {
    ufs: Arc<Ufs>,
    metrics: Arc<Metrics>,
    of: Weak<OpenFile>,
    wake: Arc<Notify>,
    /// `None` once a part failed (the upload was aborted; the commit will fall back).
    up: Option<UploadStream>,
}

impl Pump {
    async fn run(mut self, mut done: oneshot::Receiver<Finish>) {
        let part = self.ufs.part_bytes();
        loop {
            tokio::select! {
                biased;
                fin = &mut done => return self.end(fin.ok()).await,
                _ = self.wake.notified() => {}
            }
            // Send every whole part staged beyond `sent`.
            while self.up.is_some() {
                let Some(of) = self.of.upgrade() else { break };
                let next = tokio::select! {
                    biased;
                    fin = &mut done => return self.end(fin.ok()).await,
                    g = of.st.lock() => self.take_part(g, part).await,
                };
                drop(of);
                let Some(buf) = next else { break };
                let up = self.up.as_mut().expect("checked by the loop");
                if let Err(e) = self.ufs.stream_write(up, buf).await {
                    tracing::warn!(key = %up.path(), error = %e, "streamed part failed; the file will be uploaded whole at commit");
                    self.abort(true).await;
                }
            }
        }
    }

    /// Reads the next whole part of the written prefix past `sent`, under the staging lock,
    /// and advances `sent`.
    async fn take_part(
        &self,
        mut g: tokio::sync::MutexGuard<'_, Option<Staging>>,
        part: u64,
    ) -> Option<Bytes> {
        let st = g.as_mut()?;
        let file = st.file.clone()?;
        let size = st.filled;
        let ws = st
            .stream
            .as_mut()
            .filter(|w| Arc::ptr_eq(&w.wake, &self.wake))?;
        if size < ws.sent.saturating_add(part) {
            return None;
        }
        let off = ws.sent;
        let read =
            tokio::task::spawn_blocking(move || crate::holes::read_at(&file, off, part as usize))
                .await;
        match read {
            Ok(Ok(b)) => {
                ws.sent += part;
                Some(b)
            }
            _ => {
                // Unreadable staging: drop the stream (its sender goes, so this task ends
                // with an abort); the commit will report the error when it reads too.
                st.stream = None;
                Metrics::inc(&self.metrics.streamed_aborts);
                None
            }
        }
    }

    /// Abandons the upload. `streamed_aborts` is counted where the decision is made: here
    /// for a failed part, at the staging side when it drops the stream.
    async fn abort(&mut self, failed_here: bool) {
        if let Some(up) = self.up.take() {
            if failed_here {
                Metrics::inc(&self.metrics.streamed_aborts);
            }
            self.ufs.stream_abort(up).await;
        }
    }

    /// The end: complete the upload for a commit, or abort it when the stream was dropped.
    async fn end(mut self, fin: Option<Finish>) {
        let Some(fin) = fin else {
            self.abort(false).await;
            return;
        };
        let res = match self.up.take() {
            Some(up) => self.complete(up, &fin).await,
            None => Err(CommitError::EarlierPartFailed.into()),
        };
        // The upload (and its slot) is gone by now, so a fallback upload can take the slot.
        let _ = fin.reply.send(res);
    }

    /// Sends `[fin.sent, fin.len)` and completes the upload.
    async fn complete(&self, mut up: UploadStream, fin: &Finish) -> Result<ObjectInfo, FsError> {
        let part = self.ufs.part_bytes();
        if fin.len < fin.sent {
            Metrics::inc(&self.metrics.streamed_aborts);
            self.ufs.stream_abort(up).await;
            return Err(CommitError::BelowSent {
                staged: fin.len,
                sent: fin.sent,
            }
            .into());
        }
        let mut off = fin.sent;
        while off < fin.len {
            let n = (fin.len - off).min(part) as usize;
            let f = fin.file.clone();
            let read = blocking("staging", move || crate::holes::read_at(&f, off, n)).await;
            let res = match read {
                Ok(Ok(b)) => self
                    .ufs
                    .stream_write(&mut up, b)
                    .await
                    .map_err(FsError::from),
                Ok(Err(e)) => Err(FsError::from(e)),
                Err(e) => Err(e),
            };
            if let Err(e) = res {
                Metrics::inc(&self.metrics.streamed_aborts);
                self.ufs.stream_abort(up).await;
                return Err(e);
            }
            off += n as u64;
        }
        Ok(self.ufs.stream_finish(up).await?)
    }
}
