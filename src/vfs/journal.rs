//! The ASYNC_THROUGH journal: a file's bytes are kept on the local cache disk before
//! close/fsync returns, and uploaded in the background.
//!
//! Layout: `<cache-dir>/journal/<ino>.<seq>.data`, one file per flushed version: the
//! staging file itself, linked under that name, or else a copy written under a temporary
//! name and renamed into place, so an entry is either whole or absent. Close leaves the
//! entry in the kernel's hands (it outlives a kill of the daemon, as the namespace's redo
//! log does); fsync makes it durable ([`Journal::sync_entry`]: the entry, then the
//! directory). An entry's presence means "upload pending"; it is removed once the object is
//! in the UFS (or the data was superseded or unlinked). The namespace records the version
//! `pending:<ino>.<seq>` for such a file, so readers find the bytes here until the upload
//! lands, and a remount's reconcile leaves the file alone.
//!
//! An entry of no bytes (a file created and closed, the common case of a create) is not a
//! file: it is a line in `<cache-dir>/journal-empty.log` (an [`IntentLog`]), one write(2)
//! instead of a new inode on the cache disk. A filesystem allocates inodes slowly where
//! many were freed recently (ext4 without a journal scans past each one: measured here,
//! 0.1-0.8 ms an O_TMPFILE, most of an ASYNC_THROUGH create), and an empty entry needs no
//! bytes of its own. It is kept, synced and dropped like a file entry.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;

use alluxio_metaserver::ObjectVersion;

use super::intents::IntentLog;
use crate::types::InodeNo;

/// The journal directory, and the log of its entries of no bytes.
pub(super) struct Journal {
    dir: PathBuf,
    empty_log: IntentLog<(u64, u64)>,
    /// The empty entries pending, with their ids in `empty_log`.
    empties: Mutex<HashMap<(InodeNo, u64), u64>>,
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
        let (empty_log, left) = IntentLog::open_with_ids(&dir.with_file_name("journal-empty.log"))?;
        let empties = left
            .into_iter()
            .map(|(id, (ino, seq))| ((InodeNo(ino), seq), id))
            .collect();
        Ok(Self {
            dir,
            empty_log,
            empties: Mutex::new(empties),
        })
    }

    /// Whether entry `(ino, seq)` is one of no bytes, pending (it has no data file).
    pub(super) fn is_empty_entry(&self, ino: InodeNo, seq: u64) -> bool {
        super::lock(&self.empties).contains_key(&(ino, seq))
    }

    /// Path of an entry's data.
    pub(super) fn data_path(&self, ino: InodeNo, seq: u64) -> PathBuf {
        self.dir.join(format!("{}.{}.data", ino.0, seq))
    }

    /// Stores `len` bytes of `src` as entry `(ino, seq)` (blocking), whole or not at all,
    /// safe from a crash of the process (not of the host: [`Journal::sync_entry`] is).
    /// No bytes: a line in the empty entries' log (`src` may be `None` then).
    /// Returns whether the entry *is* `src` (linked, not copied): the caller must then
    /// never change `src` again, because that would change the journaled bytes (see
    /// `Staging::frozen`).
    ///
    /// Linking is tried first: an unnamed (O_TMPFILE) staging file of exactly `len` bytes
    /// on the journal's filesystem gets the entry's name, so a commit costs one link
    /// instead of a copy of the whole file and a second write of it to disk. Anything else
    /// (a named-then-unlinked staging file, another filesystem) is copied under a
    /// temporary name and renamed.
    pub(super) fn persist(
        &self,
        ino: InodeNo,
        seq: u64,
        src: Option<&std::fs::File>,
        len: u64,
    ) -> std::io::Result<bool> {
        let Some(src) = src.filter(|_| len > 0) else {
            let id = self.empty_log.begin((ino.0, seq))?;
            super::lock(&self.empties).insert((ino, seq), id);
            return Ok(false);
        };
        let path = self.data_path(ino, seq);
        if src.metadata()?.len() == len {
            let fd = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(src));
            let linked = nix::unistd::linkat(
                nix::fcntl::AT_FDCWD,
                fd.as_str(),
                nix::fcntl::AT_FDCWD,
                &path,
                nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
            );
            if linked.is_ok() {
                return Ok(true);
            }
        }
        let tmp = path.with_extension("data.tmp");
        let copied = (|| {
            let mut out = std::fs::File::create(&tmp)?;
            let mut buf = vec![0u8; 1 << 20];
            let mut off = 0u64;
            while off < len {
                let n = (len - off).min(buf.len() as u64) as usize;
                src.read_exact_at(&mut buf[..n], off)?;
                out.write_all(&buf[..n])?;
                off += n as u64;
            }
            drop(out);
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = copied {
            // A failed copy (a full disk) gives its room back at once, not at the next start.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(false)
    }

    /// Makes entry `(ino, seq)` durable (blocking): its bytes and size, then its name.
    /// An entry already gone (uploaded and dropped) is fine: the store holds its bytes.
    pub(super) fn sync_entry(&self, ino: InodeNo, seq: u64) -> std::io::Result<()> {
        if self.is_empty_entry(ino, seq) {
            return self.empty_log.sync();
        }
        match std::fs::File::open(self.data_path(ino, seq)) {
            Ok(f) => f.sync_all()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
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
        out.extend(super::lock(&self.empties).keys().copied());
        out.sort_by_key(|(_, seq)| *seq);
        Ok(out)
    }

    /// Drops an entry (one already gone is dropped).
    pub(super) fn remove(&self, ino: InodeNo, seq: u64) -> std::io::Result<()> {
        if let Some(id) = super::lock(&self.empties).remove(&(ino, seq)) {
            self.empty_log.end(id);
            return Ok(());
        }
        match std::fs::remove_file(self.data_path(ino, seq)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
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
    ObjectVersion::Pending { ino, seq }.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persist_scan_remove() {
        use std::os::unix::fs::OpenOptionsExt;
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(d.path().join("j")).unwrap();
        // An unnamed staging file of exactly the entry's length: linked, not copied.
        let src = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o600)
            .open(d.path())
            .unwrap();
        src.write_all_at(&vec![9u8; 3 << 20], 0).unwrap();
        assert!(
            j.persist(InodeNo(5), 7, Some(&src), 3 << 20).unwrap(),
            "linked"
        );
        use std::os::unix::fs::MetadataExt;
        let entry = std::fs::metadata(j.data_path(InodeNo(5), 7)).unwrap();
        assert_eq!(entry.ino(), src.metadata().unwrap().ino(), "the same inode");
        // Only part of it: copied (the entry holds just that part).
        assert!(
            !j.persist(InodeNo(6), 3, Some(&src), 10).unwrap(),
            "a prefix is copied"
        );
        // A named file unlinked after creation cannot be linked back: copied.
        let named = d.path().join("named");
        let gone = std::fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&named)
            .unwrap();
        std::fs::remove_file(&named).unwrap();
        gone.write_all_at(b"abc", 0).unwrap();
        assert!(!j.persist(InodeNo(7), 1, Some(&gone), 3).unwrap(), "copied");
        assert_eq!(std::fs::read(j.data_path(InodeNo(7), 1)).unwrap(), b"abc");
        // A copy that fails (here the source is shorter than asked) leaves nothing behind.
        assert!(j.persist(InodeNo(9), 2, Some(&gone), 1 << 20).is_err());
        let left: Vec<_> = std::fs::read_dir(d.path().join("j"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("9."))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        std::fs::write(d.path().join("j/8.1.data.tmp"), b"half").unwrap();
        let j = Journal::open(d.path().join("j")).unwrap();
        assert_eq!(
            j.scan().unwrap(),
            vec![(InodeNo(7), 1), (InodeNo(6), 3), (InodeNo(5), 7)]
        );
        assert_eq!(
            std::fs::read(j.data_path(InodeNo(5), 7)).unwrap().len(),
            3 << 20
        );
        assert_eq!(
            std::fs::read(j.data_path(InodeNo(6), 3)).unwrap(),
            [9u8; 10]
        );
        j.sync_entry(InodeNo(5), 7).unwrap();
        j.remove(InodeNo(5), 7).unwrap();
        j.remove(InodeNo(7), 1).unwrap();
        j.sync_entry(InodeNo(7), 1).unwrap();
        assert_eq!(j.scan().unwrap(), vec![(InodeNo(6), 3)]);
        assert_eq!(
            ObjectVersion::parse(&pending_tag(InodeNo(6), 3)),
            ObjectVersion::Pending {
                ino: InodeNo(6),
                seq: 3
            }
        );
    }

    #[test]
    fn empty_entries_are_log_lines_kept_across_a_reopen() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(d.path().join("j")).unwrap();
        assert!(!j.persist(InodeNo(3), 10, None, 0).unwrap());
        assert!(!j.persist(InodeNo(4), 11, None, 0).unwrap());
        assert!(j.is_empty_entry(InodeNo(3), 10));
        assert_eq!(
            std::fs::read_dir(d.path().join("j")).unwrap().count(),
            0,
            "no files"
        );
        j.sync_entry(InodeNo(3), 10).unwrap();
        j.remove(InodeNo(3), 10).unwrap();
        drop(j);
        // Reopened (a kill): the one not removed is pending still, and goes like a file.
        let j = Journal::open(d.path().join("j")).unwrap();
        assert_eq!(j.scan().unwrap(), vec![(InodeNo(4), 11)]);
        assert!(j.is_empty_entry(InodeNo(4), 11));
        j.remove(InodeNo(4), 11).unwrap();
        assert!(j.scan().unwrap().is_empty());
        assert_eq!(
            std::fs::metadata(d.path().join("journal-empty.log"))
                .unwrap()
                .len(),
            0
        );
    }
}
