//! The page log's format: a header naming the version (magic, owner, store, key,
//! version), then fixed-size records, one per page written or dropped, each with its
//! length and CRC32C; and the paths of a file id's data file and log.

use super::*;

pub(in crate::page_cache) const MAGIC: &[u8; 8] = b"ALXCF002";
/// The format before page ids named the object: its logs are dropped, not counted damaged.
pub(in crate::page_cache) const OLD_MAGIC: &[u8; 8] = b"ALXCF001";
pub(in crate::page_cache) const REC_LEN: usize = 21;
pub(in crate::page_cache) const REC_PAGE: u8 = 1;
pub(in crate::page_cache) const REC_DROP: u8 = 2;

pub(in crate::page_cache) fn data_path(dir: &Path, fid: u64) -> PathBuf {
    dir.join(format!("{:02x}", fid >> 56))
        .join(format!("{fid:016x}"))
}

pub(in crate::page_cache) fn log_path(dir: &Path, fid: u64) -> PathBuf {
    data_path(dir, fid).with_extension("m")
}

pub(in crate::page_cache) fn header(owner: u64, object: &ObjectId) -> Vec<u8> {
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

pub(in crate::page_cache) fn record(kind: u8, idx: u64, len: u32, crc: u32) -> [u8; REC_LEN] {
    let mut r = [0u8; REC_LEN];
    r[0] = kind;
    r[1..9].copy_from_slice(&idx.to_le_bytes());
    r[9..13].copy_from_slice(&len.to_le_bytes());
    r[13..17].copy_from_slice(&crc.to_le_bytes());
    let c = crc32c::crc32c(&r[..17]);
    r[17..].copy_from_slice(&c.to_le_bytes());
    r
}

pub(in crate::page_cache) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub(in crate::page_cache) fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A replayed log: the key it names, its pages, and the length of its valid prefix.
pub(in crate::page_cache) struct Replayed {
    pub(in crate::page_cache) owner: u64,
    pub(in crate::page_cache) object: ObjectId,
    pub(in crate::page_cache) pages: BTreeMap<u64, (u32, u32)>,
    pub(in crate::page_cache) valid_len: usize,
}

/// Parses a page log; `None` when its header is not intact. Replay stops at the first
/// damaged record (a torn append).
pub(in crate::page_cache) fn replay(buf: &[u8]) -> Option<Replayed> {
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
pub(in crate::page_cache) fn ctime_ns(f: &File) -> Option<i64> {
    use std::os::unix::fs::MetadataExt;
    let m = f.metadata().ok()?;
    Some(
        m.ctime()
            .saturating_mul(1_000_000_000)
            .saturating_add(m.ctime_nsec()),
    )
}

/// Appends one record to a file's log.
pub(in crate::page_cache) fn append(
    dir: &Path,
    fid: u64,
    rec: &[u8; REC_LEN],
) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(log_path(dir, fid))?;
    f.write_all(rec)
}

/// Creates a file's log with its header, atomically: written under a temporary name and
/// hard-linked into place, so a concurrent appender never sees a headerless log.
pub(in crate::page_cache) fn create_log(
    dir: &Path,
    fid: u64,
    owner: u64,
    object: &ObjectId,
) -> std::io::Result<()> {
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
pub(in crate::page_cache) fn temp_name(dir: &Path) -> PathBuf {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("tmp.{}.{n}", std::process::id()))
}

pub(in crate::page_cache) fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, File)> {
    let p = temp_name(dir);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&p)?;
    Ok((p, f))
}
