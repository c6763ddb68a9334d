//! The disk tier: one file per page under `<dir>/<hh>/<hash>`, with an LRU index in memory.
//!
//! Page file layout (all integers little-endian):
//! ```text
//! magic "ALXPG001" | ino u64 | idx u64 | version_len u32 | version bytes
//! | data_len u32 | crc32c(data) u32 | crc32c(all header bytes before it) u32 | data
//! ```
//! A page is served only if its header names exactly the requested key and both
//! checksums match; anything else is a miss and the file is removed. Files are written
//! to a temporary name and renamed, so a crash leaves either a whole page or a temporary
//! file that the startup scan deletes. The index is rebuilt at startup from the files
//! (oldest mtime evicted first), so the tier survives remounts.
//!
//! Invariant: `used` is the sum of file sizes in the index and never exceeds `capacity`
//! after `put` returns. After an I/O error other than ENOSPC the tier stops accepting
//! writes (fail-stop), since the medium can no longer be trusted.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::PageKey;
use crate::config::path_id;
use crate::metrics::Metrics;

const MAGIC: &[u8; 8] = b"ALXPG001";

#[derive(Default)]
struct Index {
    /// name hash → (file size, LRU tick)
    entries: HashMap<u64, (u64, u64)>,
    /// LRU tick → name hash
    lru: BTreeMap<u64, u64>,
    used: u64,
    tick: u64,
}

impl Index {
    fn touch(&mut self, h: u64) {
        if let Some(e) = self.entries.get_mut(&h) {
            self.lru.remove(&e.1);
            self.tick += 1;
            e.1 = self.tick;
            self.lru.insert(self.tick, h);
        }
    }
    fn insert(&mut self, h: u64, size: u64) {
        self.remove(h);
        self.tick += 1;
        self.entries.insert(h, (size, self.tick));
        self.lru.insert(self.tick, h);
        self.used += size;
    }
    fn remove(&mut self, h: u64) -> bool {
        match self.entries.remove(&h) {
            Some((size, tick)) => {
                self.lru.remove(&tick);
                self.used -= size;
                true
            }
            None => false,
        }
    }
    fn pop_oldest(&mut self) -> Option<u64> {
        let (_, h) = self.lru.pop_first()?;
        if let Some((size, _)) = self.entries.remove(&h) {
            self.used -= size;
        }
        Some(h)
    }
}

/// The disk tier.
pub struct DiskTier {
    dir: PathBuf,
    capacity: u64,
    index: Arc<Mutex<Index>>,
    failed: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

fn key_hash(key: &PageKey) -> u64 {
    let id = path_id(&[
        &key.ino.0.to_le_bytes(),
        key.version.as_bytes(),
        &key.idx.0.to_le_bytes(),
    ]);
    u64::from_str_radix(&id, 16).unwrap_or(0)
}

fn file_path(dir: &Path, h: u64) -> PathBuf {
    dir.join(format!("{:02x}", h >> 56))
        .join(format!("{h:016x}"))
}

fn encode(key: &PageKey, data: &[u8]) -> Vec<u8> {
    let v = key.version.as_bytes();
    let mut b = Vec::with_capacity(48 + v.len() + data.len());
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&key.ino.0.to_le_bytes());
    b.extend_from_slice(&key.idx.0.to_le_bytes());
    b.extend_from_slice(&(v.len() as u32).to_le_bytes());
    b.extend_from_slice(v);
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
    let hcrc = crc32c::crc32c(&b);
    b.extend_from_slice(&hcrc.to_le_bytes());
    b.extend_from_slice(data);
    b
}

/// Returns the page data if `buf` is a valid page for exactly `key`.
fn decode(key: &PageKey, buf: &[u8]) -> Option<Bytes> {
    let v = key.version.as_bytes();
    let hlen = 8 + 8 + 8 + 4 + v.len() + 4 + 4;
    if buf.len() < hlen + 4 {
        return None;
    }
    let (hdr, rest) = buf.split_at(hlen);
    let (hcrc, data) = rest.split_at(4);
    let mut expect = Vec::with_capacity(hlen);
    expect.extend_from_slice(MAGIC);
    expect.extend_from_slice(&key.ino.0.to_le_bytes());
    expect.extend_from_slice(&key.idx.0.to_le_bytes());
    expect.extend_from_slice(&(v.len() as u32).to_le_bytes());
    expect.extend_from_slice(v);
    expect.extend_from_slice(&(data.len() as u32).to_le_bytes());
    expect.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
    if hdr != expect.as_slice() || hcrc != crc32c::crc32c(hdr).to_le_bytes() {
        return None;
    }
    Some(Bytes::copy_from_slice(data))
}

impl DiskTier {
    /// Opens the tier at `dir` (created 0700), indexing pages left by earlier runs and
    /// deleting temporary files.
    pub fn open(dir: PathBuf, capacity: u64, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let mut found = Vec::new();
        for sub in std::fs::read_dir(&dir)? {
            let sub = sub?;
            if !sub.file_type()?.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(sub.path())? {
                let f = f?;
                let name = f.file_name();
                let name = name.to_string_lossy();
                match u64::from_str_radix(&name, 16) {
                    Ok(h) if name.len() == 16 => {
                        let md = f.metadata()?;
                        found.push((md.modified().ok(), h, md.len()));
                    }
                    _ => {
                        let _ = std::fs::remove_file(f.path());
                    }
                }
            }
        }
        found.sort();
        let mut index = Index::default();
        for (_, h, size) in found {
            index.insert(h, size);
        }
        let tier = Self {
            dir,
            capacity,
            index: Arc::new(Mutex::new(index)),
            failed: Arc::new(AtomicBool::new(false)),
            metrics,
        };
        tier.evict_to_capacity();
        tracing::info!(dir = %tier.dir.display(), capacity, used = tier.used(), "disk cache tier ready");
        Ok(tier)
    }

    fn used(&self) -> u64 {
        self.index.lock().map(|i| i.used).unwrap_or(0)
    }

    fn evict_to_capacity(&self) {
        let mut victims = Vec::new();
        if let Ok(mut idx) = self.index.lock() {
            while idx.used > self.capacity {
                match idx.pop_oldest() {
                    Some(h) => victims.push(h),
                    None => break,
                }
            }
            self.metrics
                .disk_cache_bytes
                .store(idx.used, Ordering::Relaxed);
        }
        for h in victims {
            Metrics::inc(&self.metrics.disk_cache_evictions);
            let _ = std::fs::remove_file(file_path(&self.dir, h));
        }
    }

    /// Whether the index holds the page (no I/O).
    pub fn contains(&self, key: &PageKey) -> bool {
        let h = key_hash(key);
        self.index.lock().is_ok_and(|i| i.entries.contains_key(&h))
    }

    /// Reads a page; any error or mismatch is a miss.
    pub async fn get(&self, key: &PageKey) -> Option<Bytes> {
        let h = key_hash(key);
        if !self.index.lock().ok()?.entries.contains_key(&h) {
            return None;
        }
        let path = file_path(&self.dir, h);
        let read = tokio::task::spawn_blocking(move || std::fs::read(path)).await;
        let buf = match read {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "disk cache read failed; treating as a miss");
                Metrics::inc(&self.metrics.disk_cache_errors);
                self.drop_entry(h);
                return None;
            }
            Err(_) => return None,
        };
        match decode(key, &buf) {
            Some(b) => {
                if let Ok(mut idx) = self.index.lock() {
                    idx.touch(h);
                }
                Some(b)
            }
            None => {
                tracing::warn!(
                    ino = key.ino.0,
                    idx = key.idx.0,
                    "disk cache page failed its checksum or key check; evicting"
                );
                Metrics::inc(&self.metrics.disk_cache_corrupt);
                self.drop_entry(h);
                None
            }
        }
    }

    fn drop_entry(&self, h: u64) {
        if let Ok(mut idx) = self.index.lock()
            && idx.remove(h)
        {
            self.metrics
                .disk_cache_bytes
                .store(idx.used, Ordering::Relaxed);
        }
        let _ = std::fs::remove_file(file_path(&self.dir, h));
    }

    /// Writes a page, evicting the least recently used pages to stay within capacity.
    pub async fn put(&self, key: PageKey, data: Bytes) {
        if self.failed.load(Ordering::Relaxed) {
            return;
        }
        let h = key_hash(&key);
        let buf = encode(&key, &data);
        let size = buf.len() as u64;
        if size > self.capacity {
            return;
        }
        let path = file_path(&self.dir, h);
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let parent = path.parent().expect("page paths always have a parent");
            std::fs::create_dir_all(parent)?;
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let mut f = std::fs::File::create(&tmp)?;
            if let Err(e) = f.write_all(&buf) {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            std::fs::rename(&tmp, &path)
        })
        .await;
        match res {
            Ok(Ok(())) => {
                Metrics::inc(&self.metrics.disk_cache_writes);
                if let Ok(mut idx) = self.index.lock() {
                    idx.insert(h, size);
                }
                self.evict_to_capacity();
            }
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOSPC) => {
                Metrics::inc(&self.metrics.disk_cache_errors);
                tracing::warn!("disk cache device is full; page not cached");
            }
            Ok(Err(e)) => {
                Metrics::inc(&self.metrics.disk_cache_errors);
                if !self.failed.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %e, dir = %self.dir.display(), "disk cache write failed; disabling the disk tier");
                }
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{InodeNo, PageIdx};

    fn key(v: &str) -> PageKey {
        PageKey {
            ino: InodeNo(9),
            version: Arc::from(v),
            idx: PageIdx(3),
        }
    }

    #[test]
    fn encode_decode_checks_key_and_checksum() {
        let k = key("e:abc");
        let enc = encode(&k, b"payload");
        assert_eq!(&decode(&k, &enc).unwrap()[..], b"payload");
        assert!(decode(&key("e:abd"), &enc).is_none());
        let mut flipped = enc.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(decode(&k, &flipped).is_none());
        assert!(decode(&k, &enc[..enc.len() - 1]).is_none());
        assert!(decode(&k, &[]).is_none());
    }

    #[tokio::test]
    async fn corrupt_page_is_a_miss_and_pages_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        let t = DiskTier::open(dir.path().to_path_buf(), 1 << 20, m.clone()).unwrap();
        let k = key("e:1");
        t.put(k.clone(), Bytes::from_static(b"hello")).await;
        assert_eq!(&t.get(&k).await.unwrap()[..], b"hello");
        drop(t);
        let t = DiskTier::open(dir.path().to_path_buf(), 1 << 20, m.clone()).unwrap();
        assert_eq!(&t.get(&k).await.unwrap()[..], b"hello");
        // Flip a data byte on disk: the page must become a miss, never bad data.
        let p = file_path(dir.path(), key_hash(&k));
        let mut b = std::fs::read(&p).unwrap();
        let n = b.len() - 1;
        b[n] ^= 0xff;
        std::fs::write(&p, b).unwrap();
        assert!(t.get(&k).await.is_none());
        assert_eq!(m.snapshot()["disk_cache_corrupt"], 1);
        assert!(!p.exists());
    }
}
