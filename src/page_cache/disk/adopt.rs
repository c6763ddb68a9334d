//! Data files handed out: a written file adopted as a version's data file (a hard link,
//! not a copy); a fully cached, verified one for passthrough; one verified page of one for
//! a peer, who is sent it from the file (sendfile) instead of from a buffer.

use super::*;

/// A fully cached, verified data file handed out for passthrough. While it lives, the
/// file's pages are not evicted.
pub struct Backing {
    /// The data file, opened read-only.
    pub file: File,
    pub(in crate::page_cache) index: Arc<Mutex<Index>>,
    pub(in crate::page_cache) fid: u64,
}

impl Drop for Backing {
    fn drop(&mut self) {
        if let Some(e) = lock(&self.index).files.get_mut(&self.fid) {
            e.pins = e.pins.saturating_sub(1);
        }
    }
}

/// One page of a data file, for sending straight from the file: the page's bytes are
/// `len` bytes at `offset` of `file`, and `crc` is the CRC32C they had when written. While
/// it lives the file's pages are not evicted (no hole is punched under the send).
pub struct PageFile {
    /// The data file and its pin.
    pub backing: Backing,
    /// Where the page starts in the file.
    pub offset: u64,
    /// Its length.
    pub len: u32,
    /// The CRC32C of its bytes, from the index.
    pub crc: u32,
}

impl DiskTier {
    /// Page `key` as a pinned range of its data file, if the index holds it and it has
    /// passed its checksum in this process (a page cached by an earlier run is read, and
    /// so checked, the ordinary way first). The bytes are not read here: whoever sends
    /// them sends `crc` with them and the receiver checks it, so a page damaged since its
    /// check is refused there, never served. Counts as a use (the LRU order).
    pub fn page_file(&self, key: &PageKey) -> Option<PageFile> {
        let fid = key.object.digest();
        let mut idx = lock(&self.index);
        let tick = idx.next_tick();
        let e = idx.files.get_mut(&fid)?;
        if e.object != key.object {
            return None;
        }
        let m = e.pages.get_mut(&key.idx.0).filter(|m| m.verified)?;
        let (len, crc, old) = (m.len, m.crc, m.tick);
        // Opened under the lock so eviction cannot punch the page between check and pin.
        let file = File::open(data_path(&self.dir, fid)).ok()?;
        m.tick = tick;
        e.pins += 1;
        idx.lru.remove(&old);
        idx.lru.insert(tick, (fid, key.idx.0));
        Some(PageFile {
            backing: Backing {
                file,
                index: self.index.clone(),
                fid,
            },
            offset: key.idx.0 * PAGE_SIZE,
            len,
            crc,
        })
    }

    /// Takes `file`, which holds all `size` bytes of `object` and is never written
    /// again (a written file's staging, or an uploaded journal entry), as the version's
    /// data file: hard-linked into place instead of copied page by page, so a written file
    /// is cached whole, ready for passthrough, without writing its bytes a second time.
    /// Every page is indexed as verified: its checksum is computed here from the bytes the
    /// file holds. Pages of the version cached already give way. `false` (nothing cached)
    /// when it cannot: a file of that version is pinned by passthrough, no room, or the
    /// file cannot be linked here (not an unnamed file on this filesystem); the caller then
    /// caches pages one by one. Blocking: it reads the whole file.
    pub fn adopt(&self, owner: InodeNo, object: &Arc<ObjectId>, file: &File, size: u64) -> bool {
        use std::os::unix::fs::FileExt;
        // The data file must be exactly the object: passthrough reads it to its own end.
        if self.failed.load(Ordering::Relaxed)
            || size == 0
            || file.metadata().map(|m| m.len()).ok() != Some(size)
        {
            return false;
        }
        let fid = object.digest();
        // Refused while the version's file is pinned, or a punch of its old file is
        // pending (it would land in the adopted one); holds off puts, evictions and
        // punches of the version until the adopted pages are indexed.
        let Some(_adopting) = Adopting::begin(&self.index, fid) else {
            return false;
        };
        let mut pages = Vec::with_capacity(size.div_ceil(PAGE_SIZE) as usize);
        let mut buf = vec![0u8; PAGE_SIZE as usize];
        for i in 0..size.div_ceil(PAGE_SIZE) {
            let n = (size - i * PAGE_SIZE).min(PAGE_SIZE) as usize;
            // A hole (a preallocated, never written stretch) is zeros with no read.
            let bytes = if crate::holes::is_hole(file, i * PAGE_SIZE, n as u64) {
                &crate::holes::zeros(n)[..]
            } else if file.read_exact_at(&mut buf[..n], i * PAGE_SIZE).is_ok() {
                &buf[..n]
            } else {
                return false;
            };
            pages.push((n as u32, crc32c::crc32c(bytes)));
        }
        self.drop_file(fid);
        // The file's blocks are on this filesystem already: linking it takes no new room.
        let (victims, reserved) = self.make_room(size, size);
        self.apply(victims);
        if !reserved {
            return false;
        }
        if let Err(e) = self.link_in(fid, owner, object, file, &pages) {
            tracing::debug!(error = %e, "cannot adopt a file into the disk cache; copying its pages");
            let mut idx = lock(&self.index);
            idx.used -= size;
            self.metrics
                .disk_cache_bytes
                .store(idx.used, Ordering::Relaxed);
            return false;
        }
        let mut idx = lock(&self.index);
        for (i, (len, crc)) in pages.into_iter().enumerate() {
            idx.add_page(fid, object, owner, i as u64, len, crc);
        }
        self.metrics
            .disk_cache_bytes
            .store(idx.used, Ordering::Relaxed);
        Metrics::add(&self.metrics.disk_cache_adopted, size.div_ceil(PAGE_SIZE));
        true
    }

    /// Puts `file` in place as `fid`'s data file, with a log listing `pages` (length and
    /// checksum of each). Both are made under temporary names and renamed into place, the
    /// data first: a data file without its log is deleted at the next start.
    pub(in crate::page_cache) fn link_in(
        &self,
        fid: u64,
        owner: InodeNo,
        object: &ObjectId,
        file: &File,
        pages: &[(u32, u32)],
    ) -> std::io::Result<()> {
        let data = data_path(&self.dir, fid);
        let parent = data.parent().unwrap_or(&self.dir).to_path_buf();
        std::fs::create_dir_all(&parent)?;
        let (tmp_log, mut log) = tempfile_in(&parent)?;
        let tmp_data = temp_name(&parent);
        let res = (|| {
            let mut buf = header(owner.0, object);
            for (i, &(len, crc)) in pages.iter().enumerate() {
                buf.extend_from_slice(&record(REC_PAGE, i as u64, len, crc));
            }
            log.write_all(&buf)?;
            let fd = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(file));
            nix::unistd::linkat(
                nix::fcntl::AT_FDCWD,
                fd.as_str(),
                nix::fcntl::AT_FDCWD,
                &tmp_data,
                nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
            )?;
            std::fs::rename(&tmp_data, &data)?;
            std::fs::rename(&tmp_log, log_path(&self.dir, fid))
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp_log);
            let _ = std::fs::remove_file(&tmp_data);
        }
        res
    }

    /// The data file of `object` if it holds the whole object of `size` bytes,
    /// every page verified in this process, for the kernel to read through passthrough.
    /// When the pages are all there but some are unverified (cached by an earlier run),
    /// starts a background checksum pass and returns `None`; a later open gets the file.
    pub fn backing(
        self: &Arc<Self>,
        object: &Arc<ObjectId>,
        size: u64,
        rt: &tokio::runtime::Handle,
    ) -> Option<Backing> {
        let pages = size.div_ceil(PAGE_SIZE);
        if pages == 0 {
            return None;
        }
        let fid = object.digest();
        let unverified = {
            let mut idx = lock(&self.index);
            let e = idx.files.get_mut(&fid)?;
            if e.object != *object || e.pages.len() as u64 != pages {
                return None;
            }
            let mut unverified: Vec<u64> = Vec::new();
            for i in 0..pages {
                let want = (size - i * PAGE_SIZE).min(PAGE_SIZE);
                let m = e.pages.get(&i)?;
                if u64::from(m.len) != want {
                    return None;
                }
                if !m.verified {
                    unverified.push(i);
                }
            }
            if unverified.is_empty() {
                // Open under the lock so eviction cannot run between check and pin.
                let file = File::open(data_path(&self.dir, fid)).ok()?;
                // The kernel reads this file with no checksum. Changed by anything but
                // this process since its pages were checked (the cache directory written
                // to): every page is checked again first, and this open is served by the
                // daemon, which checks each page it reads.
                if ctime_ns(&file).is_none_or(|c| c > e.checked_ns) {
                    tracing::warn!(
                        %object,
                        "a cached data file changed behind the daemon; checking it again before passthrough"
                    );
                    Metrics::inc(&self.metrics.disk_cache_changed_files);
                    for m in e.pages.values_mut() {
                        m.verified = false;
                    }
                    unverified = (0..pages).collect();
                } else {
                    e.pins += 1;
                    return Some(Backing {
                        file,
                        index: self.index.clone(),
                        fid,
                    });
                }
            }
            if e.verifying {
                return None;
            }
            e.verifying = true;
            unverified
        };
        let this = self.clone();
        let object = object.clone();
        rt.spawn(async move {
            for i in unverified {
                if this.get(&PageKey::new(&object, i)).await.is_none() {
                    break;
                }
            }
            if let Some(e) = lock(&this.index).files.get_mut(&fid) {
                e.verifying = false;
            }
        });
        None
    }

    /// Number of files currently pinned for passthrough (for tests and stats).
    pub fn pinned_files(&self) -> usize {
        lock(&self.index)
            .files
            .values()
            .filter(|e| e.pins > 0)
            .count()
    }
}
