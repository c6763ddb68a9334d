//! Renames in flight. A rename moves the store first and the namespace second (invariant
//! 2), so a crash between the two leaves the object (or a directory's objects, some or
//! all) at the new key while the namespace still names the old one. A listing would then
//! drop the old name and show the object as a new file: the inode's mode, owner, xattrs
//! and other links gone, and a replaced target's attributes kept over the moved bytes.
//!
//! So each rename is logged here before its store step and marked done after its
//! namespace step, and the next start finishes, before it serves anything, every rename
//! a crash cut: the namespace is moved to match (and the store step done again where it
//! had not happened). Either outcome is one rename(2) may have; finishing it keeps the
//! renamed inode whole.
//!
//! The log is `<cache-dir>/renames.log`: one JSON line per begin and per end, appended
//! with one write(2) each (kept through a crash of the process, as the namespace's redo
//! log is), and emptied whenever no rename is in flight. A torn last line is ignored: its
//! rename had not begun moving anything.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::types::InodeNo;

/// One rename, as the vfs was asked it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Intent {
    pub ino: u64,
    pub parent: u64,
    pub name: Vec<u8>,
    pub newparent: u64,
    pub newname: Vec<u8>,
}

impl Intent {
    pub(super) fn new(ino: InodeNo, parent: InodeNo, name: &[u8], np: InodeNo, nn: &[u8]) -> Self {
        Self {
            ino: ino.0,
            parent: parent.0,
            name: name.to_vec(),
            newparent: np.0,
            newname: nn.to_vec(),
        }
    }
}

#[derive(Serialize, Deserialize)]
enum Line {
    Begin { id: u64, intent: Intent },
    End { id: u64 },
}

struct Inner {
    file: std::fs::File,
    next: u64,
    open: usize,
}

/// The log of renames in flight.
pub(super) struct RenameLog {
    path: PathBuf,
    inner: Mutex<Inner>,
}

impl RenameLog {
    /// Opens (creates) the log and returns the renames it holds begun and not ended.
    pub(super) fn open(path: &Path) -> std::io::Result<(Self, Vec<Intent>)> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut begun: Vec<(u64, Intent)> = Vec::new();
        for line in text.split(|&b| b == b'\n') {
            match serde_json::from_slice::<Line>(line) {
                Ok(Line::Begin { id, intent }) => begun.push((id, intent)),
                Ok(Line::End { id }) => begun.retain(|(b, _)| *b != id),
                Err(_) => {} // a torn last line, or an empty one
            }
        }
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        let log = Self {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner {
                file,
                next: 1,
                open: 0,
            }),
        };
        Ok((log, begun.into_iter().map(|(_, i)| i).collect()))
    }

    fn append(inner: &mut Inner, line: &Line) -> std::io::Result<()> {
        let mut buf = serde_json::to_vec(line).map_err(std::io::Error::other)?;
        buf.push(b'\n');
        inner.file.write_all(&buf)
    }

    /// Logs a rename about to move the store; its id, for [`RenameLog::end`].
    pub(super) fn begin(&self, intent: Intent) -> std::io::Result<u64> {
        let mut g = super::lock(&self.inner);
        let id = g.next;
        g.next += 1;
        Self::append(&mut g, &Line::Begin { id, intent })?;
        g.open += 1;
        Ok(id)
    }

    /// Marks a rename done (its namespace step made, or its store step undone); empties
    /// the log when nothing else is in flight.
    pub(super) fn end(&self, id: u64) {
        let mut g = super::lock(&self.inner);
        g.open = g.open.saturating_sub(1);
        let res = if g.open == 0 {
            g.file.set_len(0)
        } else {
            Self::append(&mut g, &Line::End { id })
        };
        if let Err(e) = res {
            // A rename left marked in flight is finished again at the next start, where
            // finding it done already costs two lookups.
            tracing::warn!(path = %self.path.display(), error = %e, "rename log: cannot mark a rename done");
        }
    }

    /// Empties the log once the renames it held are finished.
    pub(super) fn clear(&self) -> std::io::Result<()> {
        super::lock(&self.inner).file.set_len(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begun_and_not_ended_renames_are_found_again() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("renames.log");
        let (log, pending) = RenameLog::open(&p).unwrap();
        assert!(pending.is_empty());
        let a = Intent::new(InodeNo(5), InodeNo(1), b"a", InodeNo(2), b"b\n");
        let b = Intent::new(InodeNo(6), InodeNo(1), b"c", InodeNo(1), b"d");
        let ia = log.begin(a.clone()).unwrap();
        let ib = log.begin(b.clone()).unwrap();
        log.end(ia);
        drop(log);
        let (log, pending) = RenameLog::open(&p).unwrap();
        assert_eq!(pending, vec![b.clone()]);
        let _ = ib;
        // A torn last line is no rename.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"{\"Begin\":{\"id\":9,\"int")
            .unwrap();
        drop(log);
        let (log, pending) = RenameLog::open(&p).unwrap();
        assert_eq!(pending, vec![b]);
        log.clear().unwrap();
        let id = log.begin(a).unwrap();
        log.end(id);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0, "emptied when idle");
        assert!(RenameLog::open(&p).unwrap().1.is_empty());
    }
}
