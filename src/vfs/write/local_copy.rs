//! A committed version's bytes in a local file, offered to readers while they are copied
//! into the disk tier.

use super::*;

/// A committed version's bytes in a local file: the staging file it was written from
/// (while its generation is unchanged), or its journal entry (which never changes).
/// Offered to readers while `fill_pages` copies it into the disk tier.
pub(in crate::vfs) struct LocalCopy {
    pub(in crate::vfs) file: Arc<std::fs::File>,
    pub(in crate::vfs) staging: Option<(Arc<OpenFile>, u64)>,
}

impl LocalCopy {
    /// An immutable file (an uploaded journal entry).
    pub(in crate::vfs) fn immutable(file: Arc<std::fs::File>) -> Self {
        Self {
            file,
            staging: None,
        }
    }

    /// `of`'s staging file, holding the version committed at `generation`.
    pub(in crate::vfs) fn staged(
        file: Arc<std::fs::File>,
        of: Arc<OpenFile>,
        generation: u64,
    ) -> Self {
        Self {
            file,
            staging: Some((of, generation)),
        }
    }

    /// Whether the file can change no more: a journal entry, or a staging that every
    /// handle has closed (no handle, truncate or unlink holds it any more, and a later
    /// open gets a staging of its own), still at the committed generation.
    pub(in crate::vfs) async fn settled(&self) -> bool {
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
    pub(in crate::vfs) async fn settle(&self, within: std::time::Duration) -> bool {
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
    pub(in crate::vfs) fn staged_in(&self, of: &Arc<OpenFile>) -> bool {
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
    pub(in crate::vfs) async fn read(&self, start: u64, end: u64, wait: bool) -> Option<Vec<u8>> {
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
pub(in crate::vfs) fn pread(f: &std::fs::File, start: u64, end: u64) -> std::io::Result<Vec<u8>> {
    let mut b = vec![0u8; end.saturating_sub(start) as usize];
    f.read_exact_at(&mut b, start).map(|_| b)
}
