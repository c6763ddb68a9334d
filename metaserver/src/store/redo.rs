//! The redo log beside the redb file: what makes a committed namespace change survive a
//! crash of the process (kill -9) without an fsync per change.
//!
//! redb commits every change with `Durability::None` (an fsync per change capped creates
//! near a thousand per second), and such a commit is lost with the process unless a durable
//! commit follows. So each commit's changes are also appended here, in commit order, with
//! one `write(2)`: the bytes are then the kernel's, which keeps them whatever becomes of
//! the process. A durable commit (`sync`) records the sequence number it covers and empties
//! the log; opening the store replays, in order, the records numbered after the durable
//! one. A crash of the host still loses what no durable commit covered (at most the
//! flusher's interval), never part of a commit.
//!
//! Record: `len: u32 LE`, `crc32c(payload): u32 LE`, `payload` = `seq: u64 LE` then the
//! changes, each a tag byte and its fields (integers LE, byte strings as a `u32 LE` length
//! and the bytes). A short or damaged record ends the log: only the last append can be
//! torn (one writer, appends in order), and it was never acknowledged. A whole record
//! (its checksum right) that does not decode is refused with an error, never skipped.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use crate::error::MetaError;
use crate::record::{InodeNo, InodeRecord};
use crate::store::StoreWrite;

const PUT_INODE: u8 = 1;
const REMOVE_INODE: u8 = 2;
const PUT_DENTRY: u8 = 3;
const REMOVE_DENTRY: u8 = 4;
const SET_COUNTER: u8 = 5;
const REMOVE_COUNTER: u8 = 6;
const PUT_XATTR: u8 = 7;
const REMOVE_XATTR: u8 = 8;

/// Largest record accepted when reading (a record is one commit's changes: a listing of a
/// directory of a million names stays well under it).
const MAX_RECORD: usize = 1 << 30;

/// The changes of one transaction, encoded as they are made.
#[derive(Default)]
pub(super) struct Changes {
    buf: Vec<u8>,
}

impl Changes {
    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    fn bytes(&mut self, b: &[u8]) {
        // Keys and values are bounded far below 4 GiB by the namespace (names 255 bytes,
        // xattr values 64 KiB, records a few KiB).
        self.buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(b);
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn put_inode(&mut self, rec: &InodeRecord) {
        self.buf.push(PUT_INODE);
        self.bytes(&rec.encode());
    }
    pub(super) fn remove_inode(&mut self, ino: InodeNo) {
        self.buf.push(REMOVE_INODE);
        self.u64(ino.0);
    }
    pub(super) fn put_dentry(&mut self, parent: InodeNo, name: &[u8], child: InodeNo) {
        self.buf.push(PUT_DENTRY);
        self.u64(parent.0);
        self.bytes(name);
        self.u64(child.0);
    }
    pub(super) fn remove_dentry(&mut self, parent: InodeNo, name: &[u8]) {
        self.buf.push(REMOVE_DENTRY);
        self.u64(parent.0);
        self.bytes(name);
    }
    pub(super) fn set_counter(&mut self, key: &str, value: u64) {
        self.buf.push(SET_COUNTER);
        self.bytes(key.as_bytes());
        self.u64(value);
    }
    pub(super) fn remove_counter(&mut self, key: &str) {
        self.buf.push(REMOVE_COUNTER);
        self.bytes(key.as_bytes());
    }
    pub(super) fn put_xattr(&mut self, ino: InodeNo, name: &[u8], value: &[u8]) {
        self.buf.push(PUT_XATTR);
        self.u64(ino.0);
        self.bytes(name);
        self.bytes(value);
    }
    pub(super) fn remove_xattr(&mut self, ino: InodeNo, name: &[u8]) {
        self.buf.push(REMOVE_XATTR);
        self.u64(ino.0);
        self.bytes(name);
    }
}

/// The log file, appended to by the one writer at a time.
pub(super) struct RedoLog {
    file: File,
}

impl RedoLog {
    /// Opens (creates) the log at `path`.
    pub(super) fn open(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        Ok(Self { file })
    }

    /// Appends commit `seq`'s changes in one write.
    pub(super) fn append(&mut self, seq: u64, changes: &Changes) -> std::io::Result<()> {
        let mut payload = Vec::with_capacity(8 + changes.buf.len());
        payload.extend_from_slice(&seq.to_le_bytes());
        payload.extend_from_slice(&changes.buf);
        let mut rec = Vec::with_capacity(8 + payload.len());
        let len = u32::try_from(payload.len())
            .map_err(|_| std::io::Error::other("a commit too large for the redo log"))?;
        rec.extend_from_slice(&len.to_le_bytes());
        rec.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        rec.extend_from_slice(&payload);
        self.file.write_all(&rec)
    }

    /// Empties the log (after a durable commit covered every record in it).
    pub(super) fn clear(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)
    }

    /// The whole records in the log, in order, as (seq, payload after the seq). Reading
    /// stops at the first short or damaged record.
    pub(super) fn records(&mut self) -> std::io::Result<Vec<(u64, Vec<u8>)>> {
        use std::io::Seek;
        let mut all = Vec::new();
        self.file.seek(std::io::SeekFrom::Start(0))?;
        self.file.read_to_end(&mut all)?;
        let mut out = Vec::new();
        let mut at = 0usize;
        while let Some(head) = all.get(at..at + 8) {
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            if !(8..=MAX_RECORD).contains(&len) {
                break;
            }
            let Some(payload) = all.get(at + 8..at + 8 + len) else {
                break;
            };
            if crc32c::crc32c(payload) != crc {
                break;
            }
            let (seq, rest) = payload.split_at(8);
            let seq = u64::from_le_bytes(seq.try_into().unwrap_or([0; 8]));
            out.push((seq, rest.to_vec()));
            at += 8 + len;
        }
        if at < all.len() {
            tracing::warn!(
                kept = at,
                dropped = all.len() - at,
                "namespace redo log: a torn last record was dropped (it was never acknowledged)"
            );
        }
        Ok(out)
    }
}

/// Applies one record's changes to a write transaction.
pub(super) fn apply(payload: &[u8], w: &mut dyn StoreWrite) -> Result<(), MetaError> {
    let mut r = Reader { buf: payload };
    while !r.buf.is_empty() {
        match r.u8()? {
            PUT_INODE => {
                let rec = InodeRecord::decode(r.bytes()?)?;
                w.put_inode(&rec)?;
            }
            REMOVE_INODE => w.remove_inode(InodeNo(r.u64()?))?,
            PUT_DENTRY => {
                let parent = InodeNo(r.u64()?);
                let name = r.bytes()?;
                w.put_dentry(parent, name, InodeNo(r.u64()?))?;
            }
            REMOVE_DENTRY => {
                let parent = InodeNo(r.u64()?);
                w.remove_dentry(parent, r.bytes()?)?;
            }
            SET_COUNTER => {
                let key = r.str()?;
                w.set_counter(key, r.u64()?)?;
            }
            REMOVE_COUNTER => w.remove_counter(r.str()?)?,
            PUT_XATTR => {
                let ino = InodeNo(r.u64()?);
                let name = r.bytes()?;
                w.put_xattr(ino, name, r.bytes()?)?;
            }
            REMOVE_XATTR => {
                let ino = InodeNo(r.u64()?);
                w.remove_xattr(ino, r.bytes()?)?;
            }
            t => return Err(corrupt(&format!("unknown change tag {t}"))),
        }
    }
    Ok(())
}

fn corrupt(what: &str) -> MetaError {
    MetaError::Corrupt(format!("namespace redo log: {what}"))
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MetaError> {
        if self.buf.len() < n {
            return Err(corrupt("a change is cut short"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, MetaError> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, MetaError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }
    fn bytes(&mut self) -> Result<&'a [u8], MetaError> {
        let b = self.take(4)?;
        let n = u32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as usize;
        self.take(n)
    }
    fn str(&mut self) -> Result<&'a str, MetaError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| corrupt("a counter name is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NamespaceStore;
    use crate::store::memory::MemoryStore;

    #[test]
    fn records_round_trip_and_a_torn_or_damaged_tail_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns.redo");
        let mut log = RedoLog::open(&path).unwrap();
        let mut c = Changes::default();
        c.put_dentry(InodeNo(1), b"a", InodeNo(2));
        c.set_counter("next", 3);
        c.put_xattr(InodeNo(2), b"user.x", b"v");
        log.append(7, &c).unwrap();
        let mut d = Changes::default();
        d.remove_dentry(InodeNo(1), b"a");
        d.remove_counter("next");
        d.remove_xattr(InodeNo(2), b"user.x");
        d.remove_inode(InodeNo(2));
        log.append(8, &d).unwrap();
        let recs = log.records().unwrap();
        assert_eq!(recs.iter().map(|r| r.0).collect::<Vec<_>>(), vec![7, 8]);

        let store = MemoryStore::default();
        store.write(|w| apply(&recs[0].1, w)).unwrap();
        store
            .read(|r| {
                assert_eq!(r.dentry(InodeNo(1), b"a")?, Some(InodeNo(2)));
                assert_eq!(r.counter("next")?, 3);
                assert_eq!(r.xattr(InodeNo(2), b"user.x")?, Some(b"v".to_vec()));
                Ok(())
            })
            .unwrap();
        store.write(|w| apply(&recs[1].1, w)).unwrap();
        store
            .read(|r| {
                assert_eq!(r.dentry(InodeNo(1), b"a")?, None);
                assert_eq!(r.counter("next")?, 0);
                Ok(())
            })
            .unwrap();

        // A torn last append, then a flipped byte in the first record.
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 3]).unwrap();
        let mut log = RedoLog::open(&path).unwrap();
        assert_eq!(log.records().unwrap().len(), 1, "the torn record ends it");
        let mut bad = full.clone();
        bad[12] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let mut log = RedoLog::open(&path).unwrap();
        assert!(log.records().unwrap().is_empty());
        log.clear().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn a_whole_record_that_does_not_decode_is_an_error() {
        let store = MemoryStore::default();
        for payload in [
            &[99u8][..],
            &[PUT_DENTRY, 1, 2],
            &[SET_COUNTER, 2, 0, 0, 0, 0xff, 0xfe, 1, 0, 0, 0, 0, 0, 0, 0],
        ] {
            let e = store.write(|w| apply(payload, w)).unwrap_err();
            assert!(matches!(e, MetaError::Corrupt(_)), "{e:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("ns.redo");
            std::fs::write(&path, &bytes).unwrap();
            let mut log = RedoLog::open(&path).unwrap();
            for (_, payload) in log.records().unwrap() {
                let _ = MemoryStore::default().write(|w| apply(&payload, w));
            }
            let _ = MemoryStore::default().write(|w| apply(&bytes, w));
        }
    }
}
