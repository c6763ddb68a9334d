//! The ASYNC_THROUGH journal: a file's bytes are made durable on the local cache disk
//! before close/fsync returns, and uploaded in the background.
//!
//! Layout: `<cache-dir>/journal/<ino>.<seq>.data`, one file per flushed version. A file is
//! written under a temporary name, fsynced, renamed into place and the directory fsynced,
//! so an entry is either whole or absent. An entry's presence means "upload pending"; it is
//! removed once the object is in the UFS (or the data was superseded or unlinked). The
//! namespace records the version `pending:<ino>.<seq>` for such a file, so readers find the
//! bytes here until the upload lands, and a remount's reconcile leaves the file alone.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::types::InodeNo;

/// The journal directory.
pub(super) struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// Opens (creates, 0700) the journal and deletes temporary files of a crashed write.
    pub(super) fn open(dir: PathBuf) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            if e.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(Self { dir })
    }

    /// Path of an entry's data.
    pub(super) fn data_path(&self, ino: InodeNo, seq: u64) -> PathBuf {
        self.dir.join(format!("{}.{}.data", ino.0, seq))
    }

    /// Durably stores `len` bytes of `src` as entry `(ino, seq)` (blocking).
    pub(super) fn persist(
        &self,
        ino: InodeNo,
        seq: u64,
        src: &std::fs::File,
        len: u64,
    ) -> std::io::Result<()> {
        let path = self.data_path(ino, seq);
        let tmp = path.with_extension("data.tmp");
        let mut out = std::fs::File::create(&tmp)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        while off < len {
            let n = (len - off).min(buf.len() as u64) as usize;
            src.read_exact_at(&mut buf[..n], off)?;
            out.write_all(&buf[..n])?;
            off += n as u64;
        }
        out.sync_all()?;
        drop(out);
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// Pending entries, oldest first.
    pub(super) fn scan(&self) -> std::io::Result<Vec<(InodeNo, u64)>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let name = e?.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".data")
                && let Some((ino, seq)) = stem.split_once('.')
                && let (Ok(ino), Ok(seq)) = (ino.parse(), seq.parse())
            {
                out.push((InodeNo(ino), seq));
            }
        }
        out.sort_by_key(|(_, seq)| *seq);
        Ok(out)
    }

    /// Drops an entry.
    pub(super) fn remove(&self, ino: InodeNo, seq: u64) {
        let _ = std::fs::remove_file(self.data_path(ino, seq));
    }
}

/// A journal sequence number: nanoseconds since the epoch, strictly increasing within the
/// process, so entries sort by flush time across restarts too.
pub(super) fn next_seq() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = crate::types::now_ns().max(0) as u64;
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(l) => last = l,
        }
    }
}

/// The namespace version naming a journal entry.
pub(super) fn pending_tag(ino: InodeNo, seq: u64) -> String {
    format!("{}{}.{}", alluxio_metaserver::PENDING_PREFIX, ino.0, seq)
}

/// The journal entry a pending version names.
pub(super) fn parse_tag(version: &str) -> Option<(InodeNo, u64)> {
    let rest = version.strip_prefix(alluxio_metaserver::PENDING_PREFIX)?;
    let (ino, seq) = rest.split_once('.')?;
    Some((InodeNo(ino.parse().ok()?), seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persist_scan_remove() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(d.path().join("j")).unwrap();
        let src = tempfile::tempfile().unwrap();
        src.write_all_at(&vec![9u8; 3 << 20], 0).unwrap();
        j.persist(InodeNo(5), 7, &src, 3 << 20).unwrap();
        j.persist(InodeNo(6), 3, &src, 10).unwrap();
        std::fs::write(d.path().join("j/8.1.data.tmp"), b"half").unwrap();
        let j = Journal::open(d.path().join("j")).unwrap();
        assert_eq!(j.scan().unwrap(), vec![(InodeNo(6), 3), (InodeNo(5), 7)]);
        assert_eq!(
            std::fs::read(j.data_path(InodeNo(5), 7)).unwrap().len(),
            3 << 20
        );
        j.remove(InodeNo(5), 7);
        assert_eq!(j.scan().unwrap(), vec![(InodeNo(6), 3)]);
        assert_eq!(
            parse_tag(&pending_tag(InodeNo(6), 3)),
            Some((InodeNo(6), 3))
        );
        assert_eq!(parse_tag("e:abc"), None);
    }
}
