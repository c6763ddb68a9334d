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

use std::collections::BTreeMap;
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
enum Line<T> {
    Begin { id: u64, intent: T },
    End { id: u64 },
}

struct Inner {
    file: std::fs::File,
    next: u64,
    /// The begin line of each operation in flight, by id (what a compaction rewrites).
    open: BTreeMap<u64, Vec<u8>>,
    /// End lines in the file, dropped by the next compaction or emptying.
    ended: usize,
    /// Whether the log's name is durable in its directory ([`IntentLog::sync`]).
    named_durably: bool,
}

/// End lines that make a log rewritten with only its operations in flight, once they
/// also outnumber those (a log that is never idle stays bounded).
const COMPACT_AFTER: usize = 4096;

/// A log of operations in flight whose store step a crash could cut from the rest: one
/// JSON line per begin and per end, each one write(2) (kept through a crash of the
/// process), emptied whenever none is in flight. Renames use it (`Intent`), and so do the
/// ASYNC_THROUGH unlinks whose objects go in the background (`deletes`).
pub(super) struct IntentLog<T> {
    path: PathBuf,
    inner: Mutex<Inner>,
    _t: std::marker::PhantomData<fn(T) -> T>,
}

/// The log of renames in flight.
pub(super) type RenameLog = IntentLog<Intent>;

impl<T: Serialize + serde::de::DeserializeOwned> IntentLog<T> {
    /// Opens (creates) the log and returns what it holds begun and not ended, in order,
    /// with their ids.
    pub(super) fn open_with_ids(path: &Path) -> std::io::Result<(Self, Vec<(u64, T)>)> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut begun: BTreeMap<u64, (T, Vec<u8>)> = BTreeMap::new();
        for line in text.split(|&b| b == b'\n') {
            match serde_json::from_slice::<Line<T>>(line) {
                Ok(Line::Begin { id, intent }) => {
                    let mut raw = line.to_vec();
                    raw.push(b'\n');
                    begun.insert(id, (intent, raw));
                }
                Ok(Line::End { id }) => {
                    begun.remove(&id);
                }
                Err(_) => {} // a torn last line, or an empty one
            }
        }
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        let next = begun.keys().next_back().map_or(1, |id| id + 1);
        let mut open = BTreeMap::new();
        let mut out = Vec::with_capacity(begun.len());
        for (id, (intent, raw)) in begun {
            open.insert(id, raw);
            out.push((id, intent));
        }
        let log = Self {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner {
                file,
                next,
                open,
                ended: 0,
                named_durably: false,
            }),
            _t: std::marker::PhantomData,
        };
        Ok((log, out))
    }

    /// Opens (creates) the log and returns what it holds begun and not ended.
    pub(super) fn open(path: &Path) -> std::io::Result<(Self, Vec<T>)> {
        let (log, begun) = Self::open_with_ids(path)?;
        Ok((log, begun.into_iter().map(|(_, i)| i).collect()))
    }

    fn line(line: &Line<T>) -> std::io::Result<Vec<u8>> {
        let mut buf = serde_json::to_vec(line).map_err(std::io::Error::other)?;
        buf.push(b'\n');
        Ok(buf)
    }

    /// Logs an operation about to change the store; its id, for [`IntentLog::end`].
    pub(super) fn begin(&self, intent: T) -> std::io::Result<u64> {
        let mut g = super::lock(&self.inner);
        let id = g.next;
        let buf = Self::line(&Line::Begin { id, intent })?;
        g.file.write_all(&buf)?;
        g.next += 1;
        g.open.insert(id, buf);
        Ok(id)
    }

    /// Marks an operation done (or undone); empties the log when nothing else is in
    /// flight, and rewrites it with only what is when ended ones dominate it.
    pub(super) fn end(&self, id: u64) {
        let mut g = super::lock(&self.inner);
        g.open.remove(&id);
        let res = if g.open.is_empty() {
            g.ended = 0;
            g.file.set_len(0)
        } else if g.ended >= COMPACT_AFTER && g.ended > g.open.len() {
            self.compact(&mut g)
        } else {
            g.ended += 1;
            Self::line(&Line::End { id }).and_then(|b| g.file.write_all(&b))
        };
        if let Err(e) = res {
            // Left marked in flight, it is looked at again at the next start, where
            // finding it done already costs a lookup or two.
            tracing::warn!(path = %self.path.display(), error = %e, "intent log: cannot mark an operation done");
        }
    }

    /// Replaces the log by one holding only the operations in flight: written and made
    /// durable under a temporary name, then renamed over it, so a crash of the process
    /// or the host leaves the old log or the new one, each whole.
    fn compact(&self, g: &mut Inner) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = self.path.with_extension("compact");
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let all: Vec<u8> = g.open.values().flatten().copied().collect();
        f.write_all(&all)?;
        f.sync_data()?;
        std::fs::rename(&tmp, &self.path)?;
        g.file = f;
        g.ended = 0;
        g.named_durably = false;
        Ok(())
    }

    /// Makes what the log holds durable (fsync): its bytes, and its name once.
    pub(super) fn sync(&self) -> std::io::Result<()> {
        let mut g = super::lock(&self.inner);
        g.file.sync_data()?;
        if !g.named_durably {
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            g.named_durably = true;
        }
        Ok(())
    }

    /// Empties the log once what it held is finished.
    pub(super) fn clear(&self) -> std::io::Result<()> {
        let mut g = super::lock(&self.inner);
        g.open.clear();
        g.ended = 0;
        g.file.set_len(0)
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

    #[test]
    fn a_log_never_idle_is_compacted_to_what_is_in_flight() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.log");
        let (log, _) = IntentLog::<u64>::open(&p).unwrap();
        let kept = log.begin(7).unwrap();
        let mut longest = 0;
        for i in 0..3 * COMPACT_AFTER as u64 {
            let id = log.begin(100 + i).unwrap();
            log.end(id);
            longest = longest.max(std::fs::metadata(&p).unwrap().len());
        }
        let late = log.begin(8).unwrap();
        assert!(
            longest < 2 * COMPACT_AFTER as u64 * 40,
            "{longest} bytes: not compacted"
        );
        log.sync().unwrap();
        drop(log);
        let (log, left) = IntentLog::<u64>::open_with_ids(&p).unwrap();
        assert_eq!(left, vec![(kept, 7), (late, 8)]);
        // Ids go on after the highest in flight.
        assert!(log.begin(9).unwrap() > late);
    }
}
