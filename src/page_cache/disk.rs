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

const MAGIC: &[u8; 8] = b"ALXCF002";
/// The format before page ids named the object: its logs are dropped, not counted damaged.
const OLD_MAGIC: &[u8; 8] = b"ALXCF001";
const REC_LEN: usize = 21;
const REC_PAGE: u8 = 1;
const REC_DROP: u8 = 2;

#[derive(Clone, Copy)]
struct PageMeta {
    len: u32,
    crc: u32,
    tick: u64,
    verified: bool,
}

struct Entry {
    object: Arc<ObjectId>,
    /// The inode that cached it (0: none), for `free_inode` and path pins.
    owner: u64,
    pages: HashMap<u64, PageMeta>,
    /// Passthrough opens holding the data file; while > 0 no page is evicted.
    pins: u32,
    /// A background checksum pass over unverified pages is running.
    verifying: bool,
    /// When this process last wrote or verified one of the file's pages (ns since the
    /// epoch). A data file whose ctime is later was changed by someone else since: it is
    /// verified again before the kernel may read it directly (see [`DiskTier::backing`]).
    checked_ns: i64,
}

#[derive(Default)]
struct Index {
    files: HashMap<u64, Entry>,
    /// Inodes under a pinned path (`alluxio fs pin`): their pages are never evicted.
    pinned_inodes: std::collections::HashSet<u64>,
    /// LRU tick → (file id, page index)
    lru: BTreeMap<u64, (u64, u64)>,
    used: u64,
    /// Bytes reserved in `used` whose pages are not written yet: counted against the
    /// filesystem's free space too, which does not show them yet (see [`DiskTier::limit`]).
    unwritten: u64,
    /// Bytes of pages evicted from the index whose holes are not punched yet: out of
    /// `used` but still on the filesystem ([`Evicted`]). Without them, puts racing one
    /// another's evictions each saw less room than there was and evicted more, in a
    /// cascade that emptied the tier.
    unpunched: u64,
    /// Puts in progress per file id ([`Writing`]). A file with a put in progress keeps its
    /// data file and log even when its last indexed page goes: deleting them under the
    /// writer made its log append fail (ENOENT, which switched the tier off) or left its
    /// record in a fresh log whose data file lacks the page.
    writers: HashMap<u64, u32>,
    tick: u64,
}

/// Pages taken out of the index by an eviction, to punch or delete outside the lock
/// ([`DiskTier::apply`]). Their bytes count in `Index::unpunched` until this is dropped,
/// after the holes are punched (or when the eviction is abandoned).
struct Evicted {
    victims: Vec<Victim>,
    bytes: u64,
    index: Arc<Mutex<Index>>,
}

impl Drop for Evicted {
    fn drop(&mut self) {
        let mut idx = lock(&self.index);
        idx.unpunched = idx.unpunched.saturating_sub(self.bytes);
    }
}

/// A put in progress on a file id (see `Index::writers`). When the last one ends and the
/// file has no page left in the index, its files are deleted then.
struct Writing<'a> {
    tier: &'a DiskTier,
    fid: u64,
}

impl<'a> Writing<'a> {
    fn begin(tier: &'a DiskTier, fid: u64) -> Self {
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
struct Unwritten<'a>(&'a Mutex<Index>, u64);

impl Drop for Unwritten<'_> {
    fn drop(&mut self) {
        let mut idx = lock(self.0);
        idx.unwritten = idx.unwritten.saturating_sub(self.1);
    }
}

impl Index {
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Indexes a verified page whose bytes (and room) are in place, as the newest in the
    /// LRU. Another put of the same page may have raced this one: one reservation is kept.
    fn add_page(
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

    /// Removes a page from the index; returns whether its entry is now empty.
    fn remove_page(&mut self, fid: u64, idx: u64) -> Option<bool> {
        let e = self.files.get_mut(&fid)?;
        let m = e.pages.remove(&idx)?;
        self.lru.remove(&m.tick);
        self.used -= u64::from(m.len);
        Some(e.pages.is_empty())
    }
}

/// What eviction decided; done outside the index lock.
enum Victim {
    /// Punch the page's hole and log the drop.
    Page(u64, u64),
    /// The file has no pages left: delete it.
    File(u64),
}

/// The disk tier.
pub struct DiskTier {
    dir: PathBuf,
    capacity: u64,
    /// Share of the filesystem the tier leaves free (0 ≤ r < 1).
    free_ratio: f64,
    /// When "device full" was last logged (seconds since the epoch): once a minute.
    full_logged: std::sync::atomic::AtomicU64,
    index: Arc<Mutex<Index>>,
    failed: AtomicBool,
    /// Whole aligned pages are written with O_DIRECT (cleared if the filesystem refuses).
    direct: AtomicBool,
    metrics: Arc<Metrics>,
    engine: IoEngine,
}

/// A fully cached, verified data file handed out for passthrough. While it lives, the
/// file's pages are not evicted.
pub struct Backing {
    /// The data file, opened read-only.
    pub file: File,
    index: Arc<Mutex<Index>>,
    fid: u64,
}

impl Drop for Backing {
    fn drop(&mut self) {
        if let Some(e) = lock(&self.index).files.get_mut(&self.fid) {
            e.pins = e.pins.saturating_sub(1);
        }
    }
}

fn lock(m: &Mutex<Index>) -> MutexGuard<'_, Index> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn data_path(dir: &Path, fid: u64) -> PathBuf {
    dir.join(format!("{:02x}", fid >> 56))
        .join(format!("{fid:016x}"))
}

fn log_path(dir: &Path, fid: u64) -> PathBuf {
    data_path(dir, fid).with_extension("m")
}

fn header(owner: u64, object: &ObjectId) -> Vec<u8> {
    let parts = [object.store(), object.key(), object.version_text()];
    let mut b = Vec::with_capacity(32 + parts.iter().map(|p| p.len()).sum::<usize>());
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&owner.to_le_bytes());
    for p in parts {
        b.extend_from_slice(&(p.len() as u32).to_le_bytes());
        b.extend_from_slice(p.as_bytes());
    }
    let c = crc32c::crc32c(&b);
    b.extend_from_slice(&c.to_le_bytes());
    b
}

fn record(kind: u8, idx: u64, len: u32, crc: u32) -> [u8; REC_LEN] {
    let mut r = [0u8; REC_LEN];
    r[0] = kind;
    r[1..9].copy_from_slice(&idx.to_le_bytes());
    r[9..13].copy_from_slice(&len.to_le_bytes());
    r[13..17].copy_from_slice(&crc.to_le_bytes());
    let c = crc32c::crc32c(&r[..17]);
    r[17..].copy_from_slice(&c.to_le_bytes());
    r
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A replayed log: the key it names, its pages, and the length of its valid prefix.
struct Replayed {
    owner: u64,
    object: ObjectId,
    pages: BTreeMap<u64, (u32, u32)>,
    valid_len: usize,
}

/// Parses a page log; `None` when its header is not intact. Replay stops at the first
/// damaged record (a torn append).
fn replay(buf: &[u8]) -> Option<Replayed> {
    if buf.get(..8)? != MAGIC {
        return None;
    }
    let owner = u64_at(buf, 8)?;
    let mut hlen = 16usize;
    let mut parts = [""; 3];
    for p in &mut parts {
        let len = u32_at(buf, hlen)? as usize;
        let start = hlen + 4;
        hlen = start.checked_add(len)?;
        *p = std::str::from_utf8(buf.get(start..hlen)?).ok()?;
    }
    if u32_at(buf, hlen)? != crc32c::crc32c(&buf[..hlen]) {
        return None;
    }
    let object = ObjectId::new(Arc::from(parts[0]), parts[1], parts[2]);
    let mut at = hlen + 4;
    let mut pages = BTreeMap::new();
    while let Some(r) = buf.get(at..at + REC_LEN) {
        if u32_at(r, 17)? != crc32c::crc32c(&r[..17]) {
            break;
        }
        let idx = u64_at(r, 1)?;
        match r[0] {
            REC_PAGE => {
                let len = u32_at(r, 9)?;
                if len == 0 || u64::from(len) > PAGE_SIZE {
                    break;
                }
                pages.insert(idx, (len, u32_at(r, 13)?));
            }
            REC_DROP => {
                pages.remove(&idx);
            }
            _ => break,
        }
        at += REC_LEN;
    }
    Some(Replayed {
        owner,
        object,
        pages,
        valid_len: at,
    })
}

/// When `f`'s inode last changed (ns since the epoch).
fn ctime_ns(f: &File) -> Option<i64> {
    use std::os::unix::fs::MetadataExt;
    let m = f.metadata().ok()?;
    Some(
        m.ctime()
            .saturating_mul(1_000_000_000)
            .saturating_add(m.ctime_nsec()),
    )
}

/// Appends one record to a file's log.
fn append(dir: &Path, fid: u64, rec: &[u8; REC_LEN]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(log_path(dir, fid))?;
    f.write_all(rec)
}

/// Creates a file's log with its header, atomically: written under a temporary name and
/// hard-linked into place, so a concurrent appender never sees a headerless log.
fn create_log(dir: &Path, fid: u64, owner: u64, object: &ObjectId) -> std::io::Result<()> {
    let path = log_path(dir, fid);
    if path.exists() {
        return Ok(());
    }
    let parent = path.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent)?;
    let mut tmp = tempfile_in(parent)?;
    tmp.1.write_all(&header(owner, object))?;
    let res = match std::fs::hard_link(&tmp.0, &path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        r => r,
    };
    let _ = std::fs::remove_file(&tmp.0);
    res
}

/// A fresh temporary name in `dir` (deleted at the next start if left behind).
fn temp_name(dir: &Path) -> PathBuf {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("tmp.{}.{n}", std::process::id()))
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, File)> {
    let p = temp_name(dir);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&p)?;
    Ok((p, f))
}

/// Carries out evictions: punches the holes of evicted pages, deletes emptied files.
fn apply_victims(dir: &Path, index: &Mutex<Index>, metrics: &Metrics, victims: Vec<Victim>) {
    for v in victims {
        Metrics::inc(&metrics.disk_cache_evictions);
        match v {
            Victim::Page(fid, idx) => {
                if let Err(e) = punch(dir, fid, idx, PAGE_SIZE as u32) {
                    tracing::debug!(error = %e, "could not punch an evicted page");
                }
            }
            Victim::File(fid) => retire_files(dir, index, fid),
        }
    }
}

/// Deletes the data file and log of `fid`, which left the index, unless it is back: a put
/// of it began (it holds the files) or finished (it indexed a page in them) since the
/// decision. The check and taking the files' names away happen under the index lock, so
/// a put that begins after that makes fresh files; the deletion itself, which can wait on
/// the device, happens outside it.
fn retire_files(dir: &Path, index: &Mutex<Index>, fid: u64) {
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

fn punch(dir: &Path, fid: u64, idx: u64, len: u32) -> std::io::Result<()> {
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

    /// The filesystem's available bytes and the bytes the tier leaves free on it (`None`
    /// when `statvfs` fails: then only the capacity binds).
    fn fs_room(&self) -> Option<(u64, u64)> {
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
    fn limit(&self, idx: &Index, room: Option<(u64, u64)>, on_disk: u64) -> u64 {
        match room {
            Some((avail, reserve)) => self.capacity.min(
                (idx.used + idx.unpunched + avail + on_disk)
                    .saturating_sub(idx.unwritten + reserve),
            ),
            None => self.capacity,
        }
    }

    /// An eviction of nothing.
    fn nothing(&self) -> Evicted {
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
    fn make_room(&self, need: u64, on_disk: u64) -> (Evicted, bool) {
        let room = self.fs_room();
        let mut idx = lock(&self.index);
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
    fn evict_locked(&self, idx: &mut Index, target: u64, best_effort: bool) -> Option<Evicted> {
        let mut chosen = Vec::new();
        let mut freed = 0u64;
        for (_, &(fid, page)) in idx.lru.iter() {
            if idx.used - freed <= target {
                break;
            }
            let Some(e) = idx.files.get(&fid) else {
                continue;
            };
            if e.pins > 0 || idx.pinned_inodes.contains(&e.owner) {
                continue;
            }
            freed += e.pages.get(&page).map_or(0, |m| u64::from(m.len));
            chosen.push((fid, page));
        }
        if idx.used - freed > target && !best_effort {
            return None;
        }
        let before = idx.used;
        let mut victims = Vec::with_capacity(chosen.len());
        for (fid, page) in chosen {
            match idx.remove_page(fid, page) {
                // A put in progress keeps the files (see `Index::writers`).
                Some(true) if !idx.writers.contains_key(&fid) => {
                    idx.files.remove(&fid);
                    victims.push(Victim::File(fid));
                }
                Some(_) => victims.push(Victim::Page(fid, page)),
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
    fn apply(&self, mut e: Evicted) {
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
    async fn apply_off_runtime(&self, mut e: Evicted) {
        if e.victims.is_empty() {
            return;
        }
        let (dir, metrics) = (self.dir.clone(), self.metrics.clone());
        let victims = std::mem::take(&mut e.victims);
        let index = self.index.clone();
        let _ = tokio::task::spawn_blocking(move || apply_victims(&dir, &index, &metrics, victims))
            .await;
    }

    fn remove_files(&self, fid: u64) {
        retire_files(&self.dir, &self.index, fid);
    }

    /// Sets the inodes whose pages are never evicted (files under pinned paths).
    pub fn set_pinned(&self, inodes: std::collections::HashSet<u64>) {
        lock(&self.index).pinned_inodes = inodes;
    }

    /// Drops every cached page of `ino` (all versions), except files the kernel is
    /// reading by passthrough right now. Returns (bytes freed, files kept because busy).
    pub fn free_inode(&self, ino: InodeNo) -> (u64, usize) {
        let (freed, busy, gone) = {
            let mut idx = lock(&self.index);
            let fids: Vec<(u64, bool)> = idx
                .files
                .iter()
                .filter(|(_, e)| e.owner == ino.0)
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

    /// Whether the index holds the page (no I/O).
    pub fn contains(&self, key: &PageKey) -> bool {
        let fid = key.object.digest();
        lock(&self.index)
            .files
            .get(&fid)
            .is_some_and(|e| e.object == key.object && e.pages.contains_key(&key.idx.0))
    }

    fn lookup(&self, key: &PageKey) -> Option<(u64, PageMeta)> {
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
    async fn read_page(&self, fid: u64, idx: u64, meta: PageMeta) -> Result<Bytes, bool> {
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

    fn drop_page(&self, fid: u64, page: u64) {
        let emptied = {
            let mut idx = lock(&self.index);
            let mut r = idx.remove_page(fid, page);
            if r == Some(true) && idx.writers.contains_key(&fid) {
                r = Some(false); // a put in progress keeps the files
            }
            if r == Some(true) {
                idx.files.remove(&fid);
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

    async fn write_page(
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
        if lock(&self.index)
            .files
            .get(&fid)
            .is_some_and(|e| e.pins > 0)
        {
            return false;
        }
        let mut pages = Vec::with_capacity(size.div_ceil(PAGE_SIZE) as usize);
        let mut buf = vec![0u8; PAGE_SIZE as usize];
        for i in 0..size.div_ceil(PAGE_SIZE) {
            let n = (size - i * PAGE_SIZE).min(PAGE_SIZE) as usize;
            if file.read_exact_at(&mut buf[..n], i * PAGE_SIZE).is_err() {
                return false;
            }
            pages.push((n as u32, crc32c::crc32c(&buf[..n])));
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
    fn link_in(
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

    /// The data file of `fid` for writing, created if absent; `direct` opens it O_DIRECT.
    fn open_data(&self, fid: u64, direct: bool) -> std::io::Result<Arc<File>> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(if direct { libc::O_DIRECT } else { 0 })
            .open(data_path(&self.dir, fid))?;
        Ok(Arc::new(file))
    }

    fn drop_file(&self, fid: u64) {
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
