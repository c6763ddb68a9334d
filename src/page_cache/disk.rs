//! The disk tier: one sparse data file per object version ([`ObjectId`]) holding its bytes
//! at their own offsets, plus an append-only page log beside it, with an LRU of pages in
//! memory.
//!
//! Why this layout: once every page of a version is present, the data file *is* the
//! object, byte for byte, so the FUSE adapter can hand it to the kernel as a passthrough
//! backing file and the kernel reads it with no daemon round trip (measured against one
//! file per page in the closing note of issue 4). Pages are still the unit of caching and
//! eviction: an evicted page is a punched hole.
//!
//! Files under `<dir>/<hh>/`, named by a 64-bit hash of the key:
//! ```text
//! <fid>    data: page i at offset i * PAGE_SIZE, holes where pages are absent
//! <fid>.m  log:  "ALXCF002" | owner u64 | store_len u32 | store | key_len u32 | key
//!                | version_len u32 | version | crc32c(header) u32
//!                then records: kind u8 (1 page, 2 drop) | idx u64 | len u32
//!                | crc32c(page data) u32 | crc32c(record) u32
//! ```
//! Integers are little-endian. The file id is [`ObjectId::digest`]; `owner` is the inode
//! that cached the file (0 on a cache node), kept for freeing and pinning by inode and not
//! part of the identity. A page is served only if the log names exactly the requested
//! object (store, key and version), lists the page, and the data read back matches the page's
//! checksum; anything else is a miss. The log is replayed at startup (a torn tail record
//! is cut off), so the tier survives remounts. Nothing is fsynced: a crash can lose pages
//! or leave a log record whose data never landed, and the checksum turns that into a miss.
//! Logs of the earlier format (`ALXCF001`, keyed by inode) are dropped at startup.
//!
//! Invariants:
//! - `used` is the sum of indexed page lengths and never exceeds the tier's limit after
//!   `put` returns; a page that cannot be given room (every candidate is pinned) is not
//!   cached. The limit is `capacity`, or less where the filesystem cannot hold it: the
//!   tier leaves `free_ratio` of its filesystem free ([`DiskTier::limit`]), checked with
//!   `statvfs` on every reservation, so staging files, journal entries and other users of
//!   the disk find room, and the tier shrinks when they take it.
//! - Cached pages are clean copies of the store's bytes; staged and journaled bytes exist
//!   nowhere else. A write of those that finds the disk full takes room from the tier
//!   ([`DiskTier::release`]), never the other way round.
//! - A pinned file (one the kernel reads through passthrough) loses no page: eviction
//!   skips it, because a punched hole would read back as zeros.
//! - Pages loaded from an earlier run are unverified; a file is offered for passthrough
//!   only when all its pages have passed their checksum in this process.
//! - After an I/O error other than ENOSPC the tier stops accepting writes (fail-stop).
//!
//! Whole pages in buffers aligned to [`crate::ufs::DIRECT_ALIGN`] (what a UFS fetch
//! returns) are written with O_DIRECT: the bytes go from the buffer to the device without
//! a copy into the page cache, which was a fifth of the daemon's CPU in a cold read. Other
//! writes (a file's short last page, pages of written files) are buffered. If the
//! filesystem refuses O_DIRECT (EINVAL, e.g. tmpfs), the tier logs it once and writes
//! everything buffered from then on. Both kinds of write keep the page cache coherent, so
//! readers (the tier's own reads, the kernel's passthrough reads) never see stale bytes.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::io::IoEngine;
use crate::metrics::Metrics;
use crate::object::{ObjectId, PageKey};
use crate::types::{InodeNo, PAGE_SIZE};

mod adopt;
mod evict;
mod index;
mod log;

pub use adopt::{Backing, PageFile};
use evict::*;
use index::*;
use log::*;

/// The disk tier.
pub struct DiskTier {
    pub(in crate::page_cache) dir: PathBuf,
    pub(in crate::page_cache) capacity: u64,
    /// Share of the filesystem the tier leaves free (0 ≤ r < 1).
    pub(in crate::page_cache) free_ratio: f64,
    /// When "device full" was last logged (seconds since the epoch): once a minute.
    pub(in crate::page_cache) full_logged: std::sync::atomic::AtomicU64,
    pub(in crate::page_cache) index: Arc<Mutex<Index>>,
    pub(in crate::page_cache) failed: AtomicBool,
    /// Whole aligned pages are written with O_DIRECT (cleared if the filesystem refuses).
    pub(in crate::page_cache) direct: AtomicBool,
    pub(in crate::page_cache) metrics: Arc<Metrics>,
    pub(in crate::page_cache) engine: IoEngine,
}

impl DiskTier {
    /// Opens the tier at `dir` (created 0700), replaying the logs of earlier runs and
    /// deleting temporaries and data files without a valid log.
    /// `free_ratio` is the share of the filesystem the tier leaves free (clamped to
    /// `[0, 0.9]`).
    pub fn open(
        dir: PathBuf,
        capacity: u64,
        free_ratio: f64,
        metrics: Arc<Metrics>,
        engine: IoEngine,
    ) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let mut logs = Vec::new();
        let mut datas = Vec::new();
        for sub in std::fs::read_dir(&dir)? {
            let sub = sub?;
            if !sub.file_type()?.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(sub.path())? {
                let f = f?;
                let name = f.file_name().to_string_lossy().into_owned();
                let (stem, is_log) = match name.strip_suffix(".m") {
                    Some(s) => (s, true),
                    None => (name.as_str(), false),
                };
                match u64::from_str_radix(stem, 16) {
                    Ok(fid) if stem.len() == 16 && is_log => {
                        logs.push((f.metadata()?.modified().ok(), fid));
                    }
                    Ok(fid) if stem.len() == 16 => datas.push(fid),
                    _ => {
                        let _ = std::fs::remove_file(f.path());
                    }
                }
            }
        }
        logs.sort();
        let mut index = Index::default();
        // What an earlier run left damaged: said once here, and counted.
        let (mut damaged, mut torn, mut orphans) = (std::collections::HashSet::new(), 0u64, 0u64);
        let mut old_format = std::collections::HashSet::new();
        for (_, fid) in logs {
            let path = log_path(&dir, fid);
            let mut buf = Vec::new();
            let parsed = File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut buf))
                .ok()
                .and_then(|_| replay(&buf))
                .filter(|r| r.object.digest() == fid);
            let Some(r) = parsed else {
                if buf.starts_with(OLD_MAGIC) {
                    old_format.insert(fid);
                } else {
                    damaged.insert(fid);
                }
                let _ = std::fs::remove_file(&path);
                continue;
            };
            if r.valid_len < buf.len() {
                torn += 1;
                let _ = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(r.valid_len as u64));
            }
            let mut e = Entry {
                object: Arc::new(r.object),
                owner: r.owner,
                pages: HashMap::new(),
                pins: 0,
                verifying: false,
                checked_ns: 0,
            };
            for (idx, (len, crc)) in r.pages {
                let tick = index.next_tick();
                e.pages.insert(
                    idx,
                    PageMeta {
                        len,
                        crc,
                        tick,
                        verified: false,
                    },
                );
                index.lru.insert(tick, (fid, idx));
                index.used += u64::from(len);
            }
            index.files.insert(fid, e);
        }
        for fid in datas {
            if !index.files.contains_key(&fid) {
                orphans += u64::from(!damaged.contains(&fid) && !old_format.contains(&fid));
                let _ = std::fs::remove_file(data_path(&dir, fid));
            }
        }
        let damaged = damaged.len() as u64;
        if damaged + orphans > 0 {
            tracing::warn!(
                dir = %dir.display(),
                damaged_logs = damaged,
                data_files_without_a_log = orphans,
                "disk cache: page logs of an earlier run were damaged or missing; those files' pages are dropped and will be fetched again"
            );
        }
        if !old_format.is_empty() {
            tracing::info!(dir = %dir.display(), files = old_format.len(), "disk cache: dropped files cached by a release that keyed pages by inode; they will be fetched again");
        }
        if torn > 0 {
            tracing::info!(dir = %dir.display(), logs = torn, "disk cache: cut the torn tails of page logs an earlier run left mid-append");
        }
        Metrics::add(&metrics.disk_cache_damaged_logs, damaged + orphans);
        let tier = Self {
            dir,
            capacity,
            free_ratio: if free_ratio.is_finite() {
                free_ratio.clamp(0.0, 0.9)
            } else {
                0.0
            },
            full_logged: Default::default(),
            index: Arc::new(Mutex::new(index)),
            failed: AtomicBool::new(false),
            direct: AtomicBool::new(true),
            metrics,
            engine,
        };
        let (victims, _) = tier.make_room(0, 0);
        tier.apply(victims);
        let (used, limit) = {
            let room = tier.fs_room();
            let idx = lock(&tier.index);
            (idx.used, tier.limit(&idx, room, 0))
        };
        if limit < capacity {
            tracing::warn!(
                dir = %tier.dir.display(),
                capacity,
                holds = limit,
                free_ratio = tier.free_ratio,
                "the disk cache's filesystem cannot hold the configured capacity; the tier keeps free_ratio of it free and holds less"
            );
        }
        tracing::info!(
            dir = %tier.dir.display(),
            capacity,
            used,
            engine = tier.engine.name(),
            "disk cache tier ready"
        );
        Ok(tier)
    }

    /// The I/O engine in use.
    pub fn engine(&self) -> &'static str {
        self.engine.name()
    }

    /// Whether the index holds the page (no I/O).
    pub fn contains(&self, key: &PageKey) -> bool {
        let fid = key.object.digest();
        lock(&self.index)
            .files
            .get(&fid)
            .is_some_and(|e| e.object == key.object && e.pages.contains_key(&key.idx.0))
    }

    pub(in crate::page_cache) fn lookup(&self, key: &PageKey) -> Option<(u64, PageMeta)> {
        let fid = key.object.digest();
        let idx = lock(&self.index);
        let e = idx.files.get(&fid)?;
        if e.object != key.object {
            return None;
        }
        Some((fid, *e.pages.get(&key.idx.0)?))
    }

    /// Reads a page; any error or mismatch is a miss.
    pub async fn get(&self, key: &PageKey) -> Option<Bytes> {
        let (fid, meta) = self.lookup(key)?;
        match self.read_page(fid, key.idx.0, meta).await {
            Ok(b) => {
                let mut idx = lock(&self.index);
                let tick = idx.next_tick();
                if let Some(m) = idx
                    .files
                    .get_mut(&fid)
                    .and_then(|e| e.pages.get_mut(&key.idx.0))
                    .filter(|m| m.crc == meta.crc)
                {
                    let old = m.tick;
                    m.tick = tick;
                    m.verified = true;
                    idx.lru.remove(&old);
                    idx.lru.insert(tick, (fid, key.idx.0));
                    if let Some(e) = idx.files.get_mut(&fid) {
                        e.checked_ns = crate::types::now_ns();
                    }
                }
                Some(b)
            }
            Err(corrupt) => {
                // A page evicted while we read it is an ordinary miss, not corruption.
                if self.lookup(key).is_some_and(|(_, m)| m.crc == meta.crc) {
                    if corrupt {
                        tracing::warn!(
                            object = %key.object,
                            idx = key.idx.0,
                            "disk cache page failed its checksum; evicting"
                        );
                        Metrics::inc(&self.metrics.disk_cache_corrupt);
                    } else {
                        Metrics::inc(&self.metrics.disk_cache_errors);
                    }
                    self.drop_page(fid, key.idx.0);
                }
                None
            }
        }
    }

    /// Reads and checks one page. `Err(true)` is a checksum mismatch, `Err(false)` an
    /// I/O error.
    pub(in crate::page_cache) async fn read_page(
        &self,
        fid: u64,
        idx: u64,
        meta: PageMeta,
    ) -> Result<Bytes, bool> {
        let path = data_path(&self.dir, fid);
        let file = match File::open(&path) {
            Ok(f) => Arc::new(f),
            Err(e) => {
                tracing::warn!(error = %e, "disk cache read failed; treating as a miss");
                return Err(false);
            }
        };
        let buf = match self
            .engine
            .read_at(file, idx * PAGE_SIZE, meta.len as usize)
            .await
        {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(true),
            Err(e) => {
                tracing::warn!(error = %e, "disk cache read failed; treating as a miss");
                return Err(false);
            }
        };
        if crc32c::crc32c(&buf) != meta.crc {
            return Err(true);
        }
        Ok(Bytes::from(buf))
    }

    pub(in crate::page_cache) fn drop_page(&self, fid: u64, page: u64) {
        let emptied = {
            let mut idx = lock(&self.index);
            let mut r = idx.remove_page(fid, page);
            if r == Some(true) && idx.writers.contains_key(&fid) {
                r = Some(false); // a put in progress keeps the files
            }
            if r == Some(true) {
                idx.files.remove(&fid);
            }
            if r == Some(false)
                && (idx.filling.contains_key(&(fid, page)) || idx.adopting.contains(&fid))
            {
                // A put of the page is writing it afresh, or an adoption is replacing the
                // file: their bytes replace these, and a punch would take them away.
                r = None;
            } else if r == Some(false) {
                idx.punching(fid, page);
            }
            self.metrics
                .disk_cache_bytes
                .store(idx.used, Ordering::Relaxed);
            r
        };
        match emptied {
            Some(true) => self.remove_files(fid),
            Some(false) => {
                let _ = punch(&self.dir, fid, page, PAGE_SIZE as u32);
                lock(&self.index).punched(fid, page);
            }
            None => {}
        }
    }

    /// Writes a page (cached for inode `owner`, 0 for none), evicting the least recently
    /// used pages to stay within capacity.
    pub async fn put(&self, key: PageKey, owner: InodeNo, data: Bytes) {
        if self.failed.load(Ordering::Relaxed) || data.is_empty() || data.len() as u64 > PAGE_SIZE {
            return;
        }
        if self.contains(&key) {
            return; // same key, same bytes: a version never changes content
        }
        let fid = key.object.digest();
        let len = data.len() as u32;
        // A different object hashing to the same file id: the old one gives way.
        let clash = lock(&self.index)
            .files
            .get(&fid)
            .is_some_and(|e| e.object != key.object);
        if clash {
            self.drop_file(fid);
        }
        let Some(_filling) = Filling::begin(&self.index, fid, key.idx.0) else {
            return; // an eviction of this page has its hole still to punch
        };
        let _writing = Writing::begin(self, fid);
        let (victims, reserved) = self.make_room(u64::from(len), 0);
        if !reserved {
            self.apply_off_runtime(victims).await;
            return; // no room on the disk, or none without touching pinned files
        }
        let unwritten = Unwritten(&self.index, u64::from(len));
        self.apply_off_runtime(victims).await;
        let crc = crc32c::crc32c(&data);
        let written = self.write_page(fid, &key, owner, data, crc).await;
        drop(unwritten);
        match written {
            Ok(()) => {
                Metrics::inc(&self.metrics.disk_cache_writes);
                lock(&self.index).add_page(fid, &key.object, owner, key.idx.0, len, crc);
            }
            Err(e) => {
                {
                    let mut idx = lock(&self.index);
                    idx.used -= u64::from(len);
                    self.metrics
                        .disk_cache_bytes
                        .store(idx.used, Ordering::Relaxed);
                }
                Metrics::inc(&self.metrics.disk_cache_errors);
                if e.raw_os_error() == Some(libc::ENOSPC) {
                    // Something else filled the filesystem since the reservation; the next
                    // reservation sees it and evicts. Said once a minute, not per page.
                    let now = crate::types::now_ns().max(0) as u64 / 1_000_000_000;
                    let last = self.full_logged.load(Ordering::Relaxed);
                    if now >= last + 60
                        && self
                            .full_logged
                            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                            .is_ok()
                    {
                        tracing::warn!(dir = %self.dir.display(), "disk cache filesystem is full; pages are not cached until the tier has shrunk to fit (disk_cache_errors counts them)");
                    }
                } else if !self.failed.swap(true, Ordering::Relaxed) {
                    self.metrics.disk_cache_failed.store(1, Ordering::Relaxed);
                    tracing::error!(error = %e, dir = %self.dir.display(), "disk cache write failed; disabling the disk tier");
                }
            }
        }
    }

    pub(in crate::page_cache) async fn write_page(
        &self,
        fid: u64,
        key: &PageKey,
        owner: InodeNo,
        data: Bytes,
        crc: u32,
    ) -> std::io::Result<()> {
        create_log(&self.dir, fid, owner.0, &key.object)?;
        let len = data.len() as u32;
        let offset = key.idx.0 * PAGE_SIZE;
        let align = crate::ufs::DIRECT_ALIGN;
        let direct = self.direct.load(Ordering::Relaxed)
            && data.len().is_multiple_of(align)
            && data.as_ptr().align_offset(align) == 0;
        let written = match self.open_data(fid, direct) {
            Ok(file) => self.engine.write_at(file, offset, data.clone()).await,
            Err(e) => Err(e),
        };
        match written {
            Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => {
                if self.direct.swap(false, Ordering::Relaxed) {
                    tracing::info!(dir = %self.dir.display(), "the disk cache's filesystem refuses O_DIRECT; writing pages buffered");
                }
                let file = self.open_data(fid, false)?;
                self.engine.write_at(file, offset, data).await?;
            }
            r => r?,
        }
        // The record goes after the data: a record without its data is caught by the
        // checksum, data without a record is merely unindexed.
        append(&self.dir, fid, &record(REC_PAGE, key.idx.0, len, crc))
    }

    /// The data file of `fid` for writing, created if absent; `direct` opens it O_DIRECT.
    pub(in crate::page_cache) fn open_data(
        &self,
        fid: u64,
        direct: bool,
    ) -> std::io::Result<Arc<File>> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(if direct { libc::O_DIRECT } else { 0 })
            .open(data_path(&self.dir, fid))?;
        Ok(Arc::new(file))
    }

    pub(in crate::page_cache) fn drop_file(&self, fid: u64) {
        let mut idx = lock(&self.index);
        if idx.files.get(&fid).is_some_and(|e| e.pins > 0) {
            return;
        }
        if let Some(e) = idx.files.remove(&fid) {
            for m in e.pages.values() {
                idx.lru.remove(&m.tick);
                idx.used -= u64::from(m.len);
            }
            // A put in progress keeps the files; the last one to end deletes them if it
            // added no page.
            let writing = idx.writers.contains_key(&fid);
            drop(idx);
            if !writing {
                self.remove_files(fid);
            }
        }
    }
}

/// The disk tier as one of the cache's tiers: each method is the inherent one.
#[async_trait::async_trait]
impl super::Tier for DiskTier {
    fn name(&self) -> &'static str {
        "disk"
    }
    fn contains(&self, key: &PageKey) -> bool {
        DiskTier::contains(self, key)
    }
    async fn get(&self, key: &PageKey) -> Option<Bytes> {
        DiskTier::get(self, key).await
    }
    async fn put(&self, key: PageKey, owner: InodeNo, data: Bytes) {
        DiskTier::put(self, key, owner, data).await;
    }
    fn remove(&self, key: &PageKey) -> bool {
        let Some((fid, _)) = self.lookup(key) else {
            return false;
        };
        self.drop_page(fid, key.idx.0);
        true
    }
    fn free_owner(&self, owner: InodeNo) -> (u64, usize) {
        self.free_inode(owner)
    }
    fn free_object(&self, object: &ObjectId) -> (u64, usize) {
        DiskTier::free_object(self, object)
    }
    fn set_pinned(&self, owners: std::collections::HashSet<u64>) {
        DiskTier::set_pinned(self, owners);
    }
    fn release(&self, need: u64) -> u64 {
        DiskTier::release(self, need)
    }
    fn adopt(&self, owner: InodeNo, object: &Arc<ObjectId>, file: &File, size: u64) -> bool {
        DiskTier::adopt(self, owner, object, file, size)
    }
    fn backing(
        self: Arc<Self>,
        object: &Arc<ObjectId>,
        size: u64,
        rt: &tokio::runtime::Handle,
    ) -> Option<Backing> {
        DiskTier::backing(&self, object, size, rt)
    }
    fn engine(&self) -> Option<&'static str> {
        Some(DiskTier::engine(self))
    }
    fn page_file(&self, key: &PageKey) -> Option<PageFile> {
        DiskTier::page_file(self, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page_cache::io::EngineChoice;

    /// Version `v` of one object.
    fn obj(v: &str) -> Arc<ObjectId> {
        Arc::new(ObjectId::new(Arc::from("s3:b"), "dir/f", v))
    }

    fn key(v: &str, i: u64) -> PageKey {
        PageKey::new(&obj(v), i)
    }

    const OWNER: InodeNo = InodeNo(9);

    fn rt() -> tokio::runtime::Handle {
        tokio::runtime::Handle::current()
    }

    fn tier(dir: &Path, cap: u64, m: &Arc<Metrics>) -> Arc<DiskTier> {
        let e = IoEngine::new(EngineChoice::Auto).unwrap();
        Arc::new(DiskTier::open(dir.to_path_buf(), cap, 0.0, m.clone(), e).unwrap())
    }

    /// Whole pages in aligned buffers go to disk with O_DIRECT, other pages buffered, and
    /// the data file holds every byte where it belongs either way, on a disk filesystem and
    /// on tmpfs. Where the filesystem takes O_DIRECT, the tier must still be using it
    /// afterwards (a broken direct path would silently fall back to buffered writes).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn direct_and_buffered_pages_land_alike() {
        let disk = tempfile::tempdir().unwrap();
        let shm = std::path::Path::new("/dev/shm")
            .is_dir()
            .then(|| tempfile::tempdir_in("/dev/shm").unwrap());
        let page = |seed: u8, n: usize| -> Vec<u8> {
            (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
        };
        let (p0, p1, p2) = (
            page(1, PAGE_SIZE as usize),
            page(2, PAGE_SIZE as usize),
            page(3, 1000),
        );
        for dir in std::iter::once(disk.path()).chain(shm.as_ref().map(|d| d.path())) {
            let m = Arc::new(Metrics::default());
            let t = tier(&dir.join("pages"), 16 << 20, &m);
            // Page 0 as a UFS fetch returns it: gathered from chunks into an aligned buffer.
            let chunks: Vec<Bytes> = p0.chunks(70_000).map(Bytes::copy_from_slice).collect();
            let b0 = crate::ufs::aligned_bytes(opendal::Buffer::from(chunks));
            assert_eq!(b0.as_ptr().align_offset(crate::ufs::DIRECT_ALIGN), 0);
            assert_eq!(&b0[..], &p0[..]);
            // Page 1 deliberately misaligned; page 2 short (a file's last page).
            let mut v = vec![0u8];
            v.extend_from_slice(&p1);
            let b1 = Bytes::from(v).slice(1..);
            let v = "e:direct";
            t.put(key(v, 0), OWNER, b0).await;
            t.put(key(v, 1), OWNER, b1).await;
            t.put(key(v, 2), OWNER, Bytes::from(p2.clone())).await;
            for (i, want) in [&p0, &p1, &p2].into_iter().enumerate() {
                let got = t.get(&key(v, i as u64)).await.expect("page cached");
                assert_eq!(&got[..], &want[..], "page {i} in {}", dir.display());
            }
            let file = std::fs::read(data_path(&t.dir, obj(v).digest())).unwrap();
            assert_eq!(file, [&p0[..], &p1[..], &p2[..]].concat());
            assert_eq!(m.snapshot()["disk_cache_errors"], 0);
            let probe = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(libc::O_DIRECT)
                .open(dir.join("probe"));
            assert_eq!(
                t.direct.load(Ordering::Relaxed),
                probe.is_ok(),
                "O_DIRECT in use exactly where {} takes it",
                dir.display()
            );
        }
    }

    #[test]
    fn log_replay_checks_header_and_cuts_torn_tail() {
        let mut b = header(9, &obj("e:abc"));
        b.extend_from_slice(&record(REC_PAGE, 0, 5, 77));
        b.extend_from_slice(&record(REC_PAGE, 1, 5, 78));
        b.extend_from_slice(&record(REC_DROP, 0, 0, 0));
        let full = b.len();
        b.extend_from_slice(&record(REC_PAGE, 2, 5, 79)[..10]); // torn append
        let r = replay(&b).unwrap();
        assert_eq!((r.owner, &r.object), (9, &*obj("e:abc")));
        assert_eq!(r.pages.into_iter().collect::<Vec<_>>(), vec![(1, (5, 78))]);
        assert_eq!(r.valid_len, full);
        let mut bad = header(9, &obj("e:abc"));
        bad[9] ^= 1;
        assert!(replay(&bad).is_none());
        assert!(replay(&[]).is_none());
    }

    proptest::proptest! {
        /// Arbitrary bytes as a page log never panic the replay, and a log damaged
        /// anywhere after its header replays a prefix of its records.
        #[test]
        fn log_replay_of_arbitrary_bytes_never_panics(
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            flip in 0usize..200,
        ) {
            let _ = replay(&junk);
            let mut b = header(9, &obj("e:abc"));
            let hlen = b.len();
            for i in 0..4 {
                b.extend_from_slice(&record(REC_PAGE, i, 5, 70 + i as u32));
            }
            let at = hlen + flip % (b.len() - hlen);
            b[at] ^= 0x5a;
            let r = replay(&b).unwrap();
            proptest::prop_assert!(r.valid_len <= at + 1 || r.pages.len() == 4);
            proptest::prop_assert!(r.pages.len() <= 4);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn corrupt_page_is_a_miss_and_pages_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        let t = tier(dir.path(), 1 << 30, &m);
        t.put(
            key("e:1", 0),
            OWNER,
            Bytes::from(vec![7u8; PAGE_SIZE as usize]),
        )
        .await;
        t.put(key("e:1", 1), OWNER, Bytes::from_static(b"hello"))
            .await;
        assert_eq!(&t.get(&key("e:1", 1)).await.unwrap()[..], b"hello");
        drop(t);
        let t = tier(dir.path(), 1 << 30, &m);
        assert_eq!(&t.get(&key("e:1", 1)).await.unwrap()[..], b"hello");
        // The data file is the object itself: page 1 starts at PAGE_SIZE.
        let fid = obj("e:1").digest();
        let data = std::fs::read(data_path(dir.path(), fid)).unwrap();
        assert_eq!(data.len() as u64, PAGE_SIZE + 5);
        assert_eq!(&data[PAGE_SIZE as usize..], b"hello");
        // Flip a byte on disk: the page must become a miss, never bad data.
        let mut d = data;
        d[PAGE_SIZE as usize] ^= 0xff;
        std::fs::write(data_path(dir.path(), fid), d).unwrap();
        assert!(t.get(&key("e:1", 1)).await.is_none());
        assert_eq!(m.snapshot()["disk_cache_corrupt"], 1);
        assert!(!t.contains(&key("e:1", 1)));
        // Another version is another file.
        assert!(t.get(&key("e:2", 0)).await.is_none());
    }

    /// A fully cached file written to behind the daemon is not handed to the kernel for
    /// passthrough (which reads it with no checksum) until its pages are checked again;
    /// the changed page fails its check and goes, so the file is not handed out at all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_data_file_changed_behind_the_daemon_is_checked_before_passthrough() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        let t = tier(dir.path(), 1 << 30, &m);
        let v = obj("e:1");
        t.put(
            key("e:1", 0),
            OWNER,
            Bytes::from(vec![5u8; PAGE_SIZE as usize]),
        )
        .await;
        t.put(key("e:1", 1), OWNER, Bytes::from_static(b"tail"))
            .await;
        let size = PAGE_SIZE + 4;
        for _ in 0..3 {
            assert!(t.backing(&v, size, &rt()).is_some(), "unchanged");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(data_path(dir.path(), obj("e:1").digest()))
            .unwrap();
        f.write_all_at(b"X", 10).unwrap();
        drop(f);
        assert!(t.backing(&v, size, &rt()).is_none(), "changed");
        assert_eq!(m.snapshot()["disk_cache_changed_files"], 1);
        // The check finds page 0 wrong and drops it; the file is never handed out.
        for _ in 0..100 {
            if !t.contains(&key("e:1", 0)) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!t.contains(&key("e:1", 0)), "the changed page was dropped");
        assert!(t.backing(&v, size, &rt()).is_none());
        assert_eq!(&t.get(&key("e:1", 1)).await.unwrap()[..], b"tail");
    }

    /// A garbled page log, and a data file whose log is gone, are found at start: their
    /// pages are dropped (never served), counted, and the rest of the tier is kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn damaged_or_missing_logs_are_counted_and_their_pages_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        let t = tier(dir.path(), 1 << 30, &m);
        for v in ["e:garbled", "e:lost", "e:fine"] {
            t.put(key(v, 0), OWNER, Bytes::from(vec![3u8; 4096])).await;
        }
        drop(t);
        let garbled = log_path(dir.path(), obj("e:garbled").digest());
        std::fs::write(&garbled, b"not a page log at all").unwrap();
        std::fs::remove_file(log_path(dir.path(), obj("e:lost").digest())).unwrap();
        let m2 = Arc::new(Metrics::default());
        let t = tier(dir.path(), 1 << 30, &m2);
        assert_eq!(m2.snapshot()["disk_cache_damaged_logs"], 2);
        assert!(t.get(&key("e:garbled", 0)).await.is_none());
        assert!(t.get(&key("e:lost", 0)).await.is_none());
        assert!(!garbled.exists());
        let lost = data_path(dir.path(), obj("e:lost").digest());
        assert!(!lost.exists(), "a data file without its log is deleted");
        assert_eq!(
            &t.get(&key("e:fine", 0)).await.unwrap()[..],
            &[3u8; 4096][..]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn capacity_holds_and_pinned_files_keep_their_pages() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        let t = tier(dir.path(), 4 * PAGE_SIZE, &m);
        let page = Bytes::from(vec![1u8; PAGE_SIZE as usize]);
        t.put(key("a", 0), OWNER, page.clone()).await;
        t.put(key("a", 1), OWNER, Bytes::from_static(b"tail")).await;
        let b = t.backing(&obj("a"), PAGE_SIZE + 4, &rt()).unwrap();
        assert_eq!(b.file.metadata().unwrap().len(), PAGE_SIZE + 4);
        // Only a partially cached or wrongly sized object is refused.
        assert!(t.backing(&obj("a"), PAGE_SIZE + 5, &rt()).is_none());
        for i in 0..6 {
            t.put(key("b", i), OWNER, page.clone()).await;
        }
        let snap = m.snapshot();
        assert!(snap["disk_cache_bytes"] <= 4 * PAGE_SIZE, "{snap:?}");
        // The pinned file kept both pages; the newest "b" pages took the rest.
        assert!(t.contains(&key("a", 0)) && t.contains(&key("a", 1)));
        assert!(t.contains(&key("b", 5)) && !t.contains(&key("b", 0)));
        drop(b);
        assert_eq!(t.pinned_files(), 0);
        for i in 6..9 {
            t.put(key("b", i), OWNER, page.clone()).await;
        }
        assert!(
            !t.contains(&key("a", 0)),
            "unpinned pages are evictable again"
        );
        // Evicted pages are holes: the data file no longer takes their blocks.
        use std::os::unix::fs::MetadataExt;
        let fid = obj("b").digest();
        let md = std::fs::metadata(data_path(dir.path(), fid)).unwrap();
        assert!(md.blocks() * 512 <= 4 * PAGE_SIZE + 4096, "{}", md.blocks());
    }

    /// An eviction that empties a file while a put of that file is in progress keeps the
    /// file's data and log until the put ends: deleting them under it made the put's log
    /// append fail with ENOENT, which switched the whole tier off.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_eviction_never_deletes_a_file_under_a_put() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        let t = tier(dir.path(), 2 * PAGE_SIZE, &m);
        let page = Bytes::from(vec![7u8; PAGE_SIZE as usize]);
        t.put(key("a", 0), OWNER, page.clone()).await;
        let fid = obj("a").digest();
        // A put of "a" page 1 is under way while two pages of "b" evict "a" page 0.
        let writing = Writing::begin(&t, fid);
        t.put(key("b", 0), OWNER, page.clone()).await;
        t.put(key("b", 1), OWNER, page.clone()).await;
        assert!(!t.contains(&key("a", 0)), "evicted");
        assert!(
            data_path(dir.path(), fid).exists(),
            "data file kept for the put"
        );
        assert!(log_path(dir.path(), fid).exists(), "log kept for the put");
        // The put in progress lands in the files it found.
        t.write_page(
            fid,
            &key("a", 1),
            OWNER,
            page.clone(),
            crc32c::crc32c(&page),
        )
        .await
        .unwrap();
        drop(writing);
        assert!(
            !data_path(dir.path(), fid).exists(),
            "the last put deletes a file left with no indexed page"
        );
        // Many puts racing evictions in a tier smaller than the files: the tier never
        // switches itself off, and every page it serves is right.
        let t = tier(dir.path(), 4 * PAGE_SIZE, &m);
        let mut tasks = Vec::new();
        for v in 0..3u8 {
            let t = t.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0..4 {
                    for i in 0..16u64 {
                        let b = Bytes::from(vec![v ^ (i as u8); PAGE_SIZE as usize]);
                        t.put(key(&format!("v{v}"), i), OWNER, b).await;
                        if round > 0
                            && let Some(got) = t.get(&key(&format!("v{v}"), i)).await
                        {
                            assert!(got.iter().all(|&x| x == v ^ (i as u8)));
                        }
                    }
                }
            }));
        }
        for h in tasks {
            h.await.unwrap();
        }
        let snap = m.snapshot();
        assert_eq!(snap["disk_cache_failed"], 0, "{snap:?}");
        assert_eq!(snap["disk_cache_corrupt"], 0, "{snap:?}");
    }

    /// Every page the index lists is in its data file, whatever order evictions and puts
    /// of the same page run in. An eviction punches its pages' holes outside the index
    /// lock: a put of the same page between the decision and the punch (a reader's miss
    /// fetching it again), or an adoption of the version, had its bytes punched away while
    /// the index listed them, and passthrough, which reads the data file unchecked, served
    /// zeros (the soak found a file whose first page read as zeros).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_page_cached_again_is_never_punched_by_an_older_eviction() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        let t = tier(dir.path(), 8 * PAGE_SIZE, &m);
        let page = |i: u64| Bytes::from(vec![(i as u8) + 1; PAGE_SIZE as usize]);
        let listed_pages_are_in_the_file = |t: &DiskTier, v: &str| {
            let fid = obj(v).digest();
            let f = File::open(data_path(&t.dir, fid)).unwrap();
            for i in 0..2 {
                if t.contains(&key(v, i)) {
                    let mut b = vec![0u8; PAGE_SIZE as usize];
                    f.read_exact_at(&mut b, i * PAGE_SIZE).unwrap();
                    assert!(
                        b == page(i)[..],
                        "page {i} of {v} is listed but not in its file"
                    );
                }
            }
        };
        for v in ["a", "b"] {
            for i in 0..2 {
                t.put(key(v, i), OWNER, page(i)).await;
            }
        }
        // Page 0 of "a" is chosen; its hole is not punched yet when a miss caches it again.
        let ev = {
            let mut idx = lock(&t.index);
            let target = idx.used - PAGE_SIZE;
            t.evict_locked(&mut idx, target, false).unwrap()
        };
        assert!(!t.contains(&key("a", 0)));
        t.put(key("a", 0), OWNER, page(0)).await;
        t.apply(ev);
        listed_pages_are_in_the_file(&t, "a");
        // Once punched, the page can be cached again.
        t.put(key("a", 0), OWNER, page(0)).await;
        assert!(t.contains(&key("a", 0)));
        listed_pages_are_in_the_file(&t, "a");
        // The same with the version adopted whole while a punch of it is pending.
        let ev = {
            let mut idx = lock(&t.index);
            let target = idx.used - 2 * PAGE_SIZE;
            t.evict_locked(&mut idx, target, false).unwrap()
        };
        assert!(!t.contains(&key("b", 0)));
        let staged = dir.path().join("staged");
        std::fs::create_dir(&staged).unwrap();
        let f = unnamed(&staged, &[&page(0)[..], &page(1)[..]].concat());
        let adopted = t.adopt(OWNER, &obj("b"), &f, 2 * PAGE_SIZE);
        t.apply(ev);
        listed_pages_are_in_the_file(&t, "b");
        if !adopted {
            assert!(
                t.adopt(OWNER, &obj("b"), &f, 2 * PAGE_SIZE),
                "adopted once punched"
            );
            listed_pages_are_in_the_file(&t, "b");
        }
        // An abandoned eviction (never applied) leaves nothing pending.
        t.put(key("a", 1), OWNER, page(1)).await;
        let ev = {
            let mut idx = lock(&t.index);
            let target = idx.used - PAGE_SIZE;
            t.evict_locked(&mut idx, target, false).unwrap()
        };
        let Victim::Page(fid, p, _) = ev.victims[0] else {
            panic!("a page")
        };
        drop(ev);
        let v = if fid == obj("a").digest() { "a" } else { "b" };
        t.put(key(v, p), OWNER, page(p)).await;
        assert!(
            t.contains(&key(v, p)),
            "cached again after an abandoned eviction"
        );
        assert_eq!(m.snapshot()["disk_cache_corrupt"], 0);
    }

    /// A write that found the disk full gets room: the oldest unpinned pages go, holes
    /// punched before `release` returns; pinned pages stay, so less than asked may come
    /// back, and nothing at all once only pinned pages are left.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn release_gives_room_from_the_oldest_unpinned_pages() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        let t = tier(dir.path(), 16 * PAGE_SIZE, &m);
        let page = Bytes::from(vec![1u8; PAGE_SIZE as usize]);
        for i in 0..2 {
            t.put(key("a", i), OWNER, page.clone()).await;
        }
        let pinned = t.backing(&obj("a"), 2 * PAGE_SIZE, &rt()).unwrap();
        for i in 0..4 {
            t.put(key("b", i), OWNER, page.clone()).await;
        }
        assert_eq!(t.release(PAGE_SIZE + 1), 2 * PAGE_SIZE, "whole pages");
        assert!(!t.contains(&key("b", 0)) && !t.contains(&key("b", 1)));
        assert!(t.contains(&key("b", 2)) && t.contains(&key("a", 0)));
        let md = std::fs::metadata(data_path(dir.path(), obj("b").digest())).unwrap();
        assert!(md.blocks() * 512 <= 2 * PAGE_SIZE + 4096, "punched at once");
        assert_eq!(t.release(8 * PAGE_SIZE), 2 * PAGE_SIZE, "what there was");
        assert_eq!(t.release(PAGE_SIZE), 0, "only pinned pages left");
        assert!(t.contains(&key("a", 1)));
        assert_eq!(m.snapshot()["disk_cache_bytes"], 2 * PAGE_SIZE);
        drop(pinned);
        assert_eq!(t.release(PAGE_SIZE), PAGE_SIZE);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pages_from_an_earlier_run_are_verified_before_passthrough() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        let t = tier(dir.path(), 1 << 30, &m);
        t.put(key("v", 0), OWNER, Bytes::from_static(b"abc")).await;
        drop(t);
        let t = tier(dir.path(), 1 << 30, &m);
        let v = obj("v");
        assert!(
            t.backing(&v, 3, &rt()).is_none(),
            "unverified after restart"
        );
        for _ in 0..100 {
            if let Some(b) = t.backing(&v, 3, &rt()) {
                let mut s = String::new();
                let mut f = &b.file;
                f.read_to_string(&mut s).unwrap();
                assert_eq!(s, "abc");
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("background verification never completed");
    }

    /// An unnamed file on the tier's filesystem holding a whole version.
    fn unnamed(dir: &Path, bytes: &[u8]) -> File {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o600)
            .open(dir)
            .unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    /// A whole written file is taken as the data file: every page indexed and verified
    /// (ready for passthrough at once), the bytes the file's own, the pages cached before
    /// replaced, the capacity charged, and the log good for the next start. A file that
    /// is not exactly the object, or not linkable, or a version pinned by passthrough, is
    /// refused with nothing changed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_written_file_is_adopted_whole() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        let t = tier(dir.path(), 64 << 20, &m);
        let size = 2 * PAGE_SIZE as usize + 5;
        let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let v = obj("v");
        // A page cached before (by a reader's miss) gives way to the adopted file.
        t.put(
            key("v", 1),
            OWNER,
            Bytes::copy_from_slice(&bytes[PAGE_SIZE as usize..2 * PAGE_SIZE as usize]),
        )
        .await;
        let staged = dir.path().join("staged");
        std::fs::create_dir(&staged).unwrap();
        let f = unnamed(&staged, &bytes);
        assert!(!t.adopt(OWNER, &v, &f, size as u64 + 1), "size differs");
        assert!(t.adopt(OWNER, &v, &f, size as u64));
        assert_eq!(m.disk_cache_adopted.load(Ordering::Relaxed), 3);
        assert_eq!(lock(&t.index).used, size as u64, "one reservation per page");
        for i in 0..3 {
            let got = t.get(&key("v", i)).await.expect("adopted page");
            let from = i as usize * PAGE_SIZE as usize;
            assert_eq!(&got[..], &bytes[from..size.min(from + PAGE_SIZE as usize)]);
        }
        let b = t.backing(&v, size as u64, &rt()).expect("verified at once");
        let mut all = Vec::new();
        (&b.file).read_to_end(&mut all).unwrap();
        assert!(all == bytes, "the data file is the object");
        // Pinned by passthrough: another adoption of the version is refused.
        let g = unnamed(&staged, &bytes);
        assert!(!t.adopt(OWNER, &v, &g, size as u64));
        drop(b);
        // A named file that was unlinked cannot be linked in: refused, nothing changed.
        let w = obj("w");
        let p = staged.join("named");
        std::fs::write(&p, &bytes).unwrap();
        let named = File::open(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        assert!(!t.adopt(InodeNo(9), &w, &named, size as u64));
        assert!(t.get(&key("w", 0)).await.is_none());
        assert_eq!(lock(&t.index).used, size as u64, "reservation given back");
        // Too big for the tier: refused.
        let big = tier(&dir.path().join("small"), PAGE_SIZE, &m);
        assert!(!big.adopt(InodeNo(9), &v, &f, size as u64));
        // The log lists every page for the next start.
        drop(t);
        let t = tier(dir.path(), 64 << 20, &m);
        let got = t.get(&key("v", 2)).await.expect("after restart");
        assert_eq!(&got[..], &bytes[2 * PAGE_SIZE as usize..]);
    }
}
