//! Making a file durable: upload the staged content (or journal it, under
//! ASYNC_THROUGH), then commit size and version to the namespace (the invariant in the
//! parent module's comment), for flush, fsync and the last close.

use super::*;

impl Vfs {
    /// Uploads the staged content of `ino` if it changed, then commits it.
    pub(in crate::vfs) async fn commit(
        self: &Arc<Self>,
        ino: InodeNo,
        of: &Arc<OpenFile>,
    ) -> Result<(), FsError> {
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
            WriteType::CacheThrough | WriteType::Through => {
                Some((self.lock_inodes(&[ino]).await, self.tree_shared().await))
            }
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
                let seq = crate::vfs::journal::next_seq();
                // An empty file needs no staging file made for its entry (see `journal`).
                let size = st.size;
                let file = match size {
                    0 => None,
                    _ => Some(st.file(&self.cfg.staging_dir, ino)?),
                };
                let this = self.clone();
                let linked = blocking("journal", move || {
                    let held = || this.local.in_flight(ino);
                    this.cache.with_disk_room(size, held, || {
                        journal.persist(ino, seq, file.as_deref(), size)
                    })
                })
                .await??;
                st.frozen |= linked;
                queued = Some(seq);
                crate::vfs::journal::pending_tag(ino, seq)
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
        let named = self
            .meta
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
            .await;
        if let Err(e) = named {
            match (queued, self.journal.clone()) {
                // The namespace may have taken the change and only its answer been lost
                // (a metaserver killed between its commit and its reply): the entry stays
                // and is queued, and the uploader, which asks the namespace, uploads it if
                // the version names it and drops it as superseded if not. Removed here, a
                // version the namespace did take named an entry that was gone: the file
                // read ESTALE for ever (the metaserver kill campaign found that).
                (Some(seq), Some(_)) if matches!(e, alluxio_metaserver::MetaError::Storage(_)) => {
                    self.uploads.push(ino, seq, self.cfg.upload_delay);
                }
                // Refused: no version names the entry, which would otherwise wait for the
                // next start to be dropped as superseded; it goes now (the staging file
                // keeps the bytes, and the file stays dirty for the next flush).
                (Some(seq), Some(journal)) => {
                    let _ = blocking("journal", move || journal.remove(ino, seq)).await;
                }
                _ => {}
            }
            return Err(e.into());
        }
        // Queued only once the namespace names the entry: the uploader drops an entry
        // whose version the namespace does not hold as superseded, and this commit holds
        // no inode lock that would keep the uploader from looking in between.
        // Close acknowledges an ASYNC_THROUGH file (SEMANTICS): the entry and the version
        // naming it outlive a kill of the daemon without an fsync (the namespace commit is
        // in its redo log), and fsync makes both durable (`Vfs::fsync`).
        if let Some(seq) = queued {
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
    pub(in crate::vfs) async fn forget_reused_version(
        &self,
        ino: InodeNo,
        key: &Loc,
        version: &str,
    ) {
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
        if self.cfg.write_type == WriteType::AsyncThrough {
            // The journal entry this flush (or an earlier close) left, if its upload has
            // not replaced it yet: durable before the namespace naming it is.
            if let Ok(rec) = self.meta.get(ino).await
                && let Some(v) = rec.version.as_deref()
                && let alluxio_metaserver::ObjectVersion::Pending { ino: pino, seq } =
                    alluxio_metaserver::ObjectVersion::parse(v)
                && let Some(journal) = self.journal.clone()
            {
                blocking("journal", move || journal.sync_entry(pino, seq)).await??;
            }
            return self.sync_namespace().await;
        }
        self.sync_namespace().await?;
        match self.key_of(ino, FileKind::File).await {
            Ok(key) if key.ufs.is_local() => key.ufs.sync_object(&key).await?,
            Ok(_) => {} // an object store: a completed upload is durable
            Err(e) if e.errno() == libc::ENOENT => {} // unlinked: nothing to keep
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Makes every namespace change so far durable (fsyncdir, fsync, unmount).
    pub async fn sync_namespace(&self) -> Result<(), FsError> {
        Ok(self.meta.sync().await?)
    }
}
