//! The async core, with methods named after FUSE operations. It never imports `fuser`:
//! the adapter converts kernel types into these calls and results back.
//!
//! Invariants:
//! - the namespace is the source of truth for names and attributes; the UFS for bytes.
//!   Every mutation reaches the UFS first and the namespace second, so a failed UFS call
//!   leaves the namespace unchanged.
//! - a directory is listed from the UFS at most once per mount (see the namespace's load
//!   epoch); after that, lookups and readdir are answered from the namespace alone.
//! - a file open for writing has one staging file on the cache disk, shared by all its
//!   write handles; its bytes reach the UFS as one whole object on flush, fsync or the last
//!   close (`CACHE_THROUGH`), and only then are size and version committed to the namespace.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use alluxio_metaserver::{Lookup, SetAttr};
use tokio::runtime::Handle as RtHandle;

use crate::error::FsError;
use crate::meta::MetaClient;
use crate::metrics::Metrics;
use crate::page_cache::PageCache;
use crate::types::{DirEntry, FileHandle, FileKind, InodeNo, InodeRecord, Ownership, now_ns};
use crate::ufs::{Ufs, dir_key, file_key};

mod read;
mod write;

pub use write::OpenMode;

use write::OpenFile;

/// Settings of the vfs.
#[derive(Debug, Clone)]
pub struct VfsConfig {
    /// Owner and modes for objects other tools wrote.
    pub ownership: Ownership,
    /// Pages fetched ahead of a reader that misses.
    pub prefetch_pages: u64,
    /// Directory for write staging files (on the cache disk).
    pub staging_dir: PathBuf,
    /// Refuse modifications with EROFS.
    pub read_only: bool,
}

/// What `statfs` reports.
#[derive(Debug, Clone, Copy)]
pub struct StatFs {
    /// Total blocks of `bsize`.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Blocks available to unprivileged users.
    pub bavail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Block size.
    pub bsize: u32,
    /// Longest name.
    pub namelen: u32,
}

/// Changes requested by `setattr`.
#[derive(Debug, Clone, Default)]
pub struct SetAttrRequest {
    /// Truncate or extend to this size.
    pub size: Option<u64>,
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New atime (ns since the epoch).
    pub atime_ns: Option<i64>,
    /// New mtime (ns since the epoch).
    pub mtime_ns: Option<i64>,
}

/// The version of a file's content that a read handle serves.
#[derive(Debug, Clone)]
struct ReadSnapshot {
    key: String,
    version: Option<Arc<str>>,
    size: u64,
}

enum Handle {
    File {
        ino: InodeNo,
        writable: bool,
        snapshot: ReadSnapshot,
    },
    Dir {
        entries: Vec<DirEntry>,
    },
}

/// The virtual filesystem of one mount.
pub struct Vfs {
    meta: Arc<dyn MetaClient>,
    ufs: Arc<Ufs>,
    cache: Arc<PageCache>,
    metrics: Arc<Metrics>,
    cfg: VfsConfig,
    rt: RtHandle,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    open_files: Mutex<HashMap<InodeNo, Arc<OpenFile>>>,
    loading: Mutex<HashMap<InodeNo, Arc<tokio::sync::Mutex<()>>>>,
    inflight: read::Inflight,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere already; the maps stay structurally valid.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Vfs {
    /// Wires the vfs; blocking work and prefetch tasks run on `rt`.
    pub fn new(
        meta: Arc<dyn MetaClient>,
        ufs: Arc<Ufs>,
        cache: Arc<PageCache>,
        metrics: Arc<Metrics>,
        cfg: VfsConfig,
        rt: RtHandle,
    ) -> Arc<Self> {
        Arc::new(Self {
            meta,
            ufs,
            cache,
            metrics,
            cfg,
            rt,
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            open_files: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
            inflight: Default::default(),
        })
    }

    /// The daemon's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn check_writable(&self) -> Result<(), FsError> {
        if self.cfg.read_only {
            return Err(FsError::expected(libc::EROFS, "read-only mount"));
        }
        Ok(())
    }

    fn add_handle(&self, h: Handle) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Arc::new(h));
        FileHandle(fh)
    }

    fn handle(&self, fh: FileHandle) -> Result<Arc<Handle>, FsError> {
        lock(&self.handles)
            .get(&fh.0)
            .cloned()
            .ok_or_else(|| FsError::new(libc::EBADF, format!("unknown file handle {}", fh.0)))
    }

    async fn key_of(&self, ino: InodeNo, kind: FileKind) -> Result<String, FsError> {
        let parts = self.meta.path(ino).await?;
        let k = match kind {
            FileKind::File => file_key(&parts),
            FileKind::Dir => dir_key(&parts),
        };
        k.map_err(|_| {
            FsError::expected(
                libc::EINVAL,
                "name is not valid UTF-8; the UFS cannot store it",
            )
        })
    }

    async fn child_key(
        &self,
        parent: InodeNo,
        name: &[u8],
        kind: FileKind,
    ) -> Result<String, FsError> {
        let mut parts = self.meta.path(parent).await?;
        parts.push(name.to_vec());
        let k = match kind {
            FileKind::File => file_key(&parts),
            FileKind::Dir => dir_key(&parts),
        };
        k.map_err(|_| {
            FsError::expected(
                libc::EINVAL,
                "name is not valid UTF-8; the UFS cannot store it",
            )
        })
    }

    /// Lists `dir` from the UFS into the namespace if this mount has not done so yet.
    /// Concurrent callers for one directory wait for a single listing.
    async fn ensure_loaded(&self, dir: InodeNo) -> Result<(), FsError> {
        if !self.meta.needs_load(dir).await? {
            return Ok(());
        }
        let gate = lock(&self.loading).entry(dir).or_default().clone();
        let _g = gate.lock().await;
        if self.meta.needs_load(dir).await? {
            let key = self.key_of(dir, FileKind::Dir).await?;
            let listing = self.ufs.list_dir(&key).await?;
            self.meta.load_dir(dir, listing, self.cfg.ownership).await?;
        }
        lock(&self.loading).remove(&dir);
        Ok(())
    }

    /// Attributes as the kernel must see them: a file being written shows its staged size.
    async fn overlay(&self, mut rec: InodeRecord) -> InodeRecord {
        let of = lock(&self.open_files).get(&rec.ino).cloned();
        if let Some(of) = of
            && let Some((size, mtime)) = of.staged_size().await
        {
            rec.size = size;
            rec.mtime_ns = mtime;
        }
        rec
    }

    /// Resolves `name` in `parent`.
    pub async fn lookup(&self, parent: InodeNo, name: &[u8]) -> Result<InodeRecord, FsError> {
        for _ in 0..2 {
            match self.meta.lookup(parent, name.to_vec()).await? {
                Lookup::Found(rec) => return Ok(self.overlay(rec).await),
                Lookup::Missing => {
                    return Err(FsError::expected(libc::ENOENT, "no such entry"));
                }
                Lookup::Unloaded => self.ensure_loaded(parent).await?,
            }
        }
        Err(FsError::new(libc::EIO, "directory could not be loaded"))
    }

    /// Attributes of an inode.
    pub async fn getattr(&self, ino: InodeNo) -> Result<InodeRecord, FsError> {
        let rec = self.meta.get(ino).await?;
        Ok(self.overlay(rec).await)
    }

    /// Changes attributes; a size change rewrites the object.
    pub async fn setattr(
        self: &Arc<Self>,
        ino: InodeNo,
        req: SetAttrRequest,
    ) -> Result<InodeRecord, FsError> {
        self.check_writable()?;
        if let Some(size) = req.size {
            self.truncate(ino, size).await?;
        }
        let meta_change = SetAttr {
            mode: req.mode,
            uid: req.uid,
            gid: req.gid,
            atime_ns: req.atime_ns,
            mtime_ns: req.mtime_ns,
            ctime_ns: Some(now_ns()),
            ..Default::default()
        };
        let rec = self.meta.set_attr(ino, meta_change).await?;
        if let Some(m) = req.mtime_ns {
            let of = lock(&self.open_files).get(&ino).cloned();
            if let Some(of) = of {
                of.set_mtime(m).await;
            }
        }
        Ok(self.overlay(rec).await)
    }

    /// Creates a directory (in the UFS first, then in the namespace).
    pub async fn mkdir(
        &self,
        parent: InodeNo,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<InodeRecord, FsError> {
        self.check_writable()?;
        self.ensure_loaded(parent).await?;
        if let Lookup::Found(_) = self.meta.lookup(parent, name.to_vec()).await? {
            return Err(FsError::expected(libc::EEXIST, "entry exists"));
        }
        let key = self.child_key(parent, name, FileKind::Dir).await?;
        self.ufs.create_dir(&key).await?;
        Ok(self
            .meta
            .create(parent, name.to_vec(), FileKind::Dir, mode, uid, gid)
            .await?)
    }

    /// Removes a file (object first, then name).
    pub async fn unlink(&self, parent: InodeNo, name: &[u8]) -> Result<(), FsError> {
        self.check_writable()?;
        let rec = self.lookup(parent, name).await?;
        if rec.kind == FileKind::Dir {
            return Err(FsError::expected(libc::EISDIR, "is a directory"));
        }
        if rec.version.is_some() {
            let key = self.key_of(rec.ino, FileKind::File).await?;
            self.ufs.delete(&key).await?;
        }
        self.meta.unlink(parent, name.to_vec()).await?;
        Ok(())
    }

    /// Removes an empty directory.
    pub async fn rmdir(&self, parent: InodeNo, name: &[u8]) -> Result<(), FsError> {
        self.check_writable()?;
        let rec = self.lookup(parent, name).await?;
        if rec.kind != FileKind::Dir {
            return Err(FsError::expected(libc::ENOTDIR, "not a directory"));
        }
        self.ensure_loaded(rec.ino).await?;
        if !self.meta.list(rec.ino).await?.is_empty() {
            return Err(FsError::expected(libc::ENOTEMPTY, "directory not empty"));
        }
        let key = self.key_of(rec.ino, FileKind::Dir).await?;
        self.ufs.delete(&key).await?;
        self.meta.rmdir(parent, name.to_vec()).await?;
        Ok(())
    }

    /// Renames a file. Directories get EXDEV (so `mv` falls back to copy + delete), and
    /// RENAME_EXCHANGE gets EINVAL; both are in docs/SEMANTICS.md.
    pub async fn rename(
        &self,
        parent: InodeNo,
        name: &[u8],
        newparent: InodeNo,
        newname: &[u8],
        noreplace: bool,
        exchange: bool,
    ) -> Result<(), FsError> {
        self.check_writable()?;
        if exchange {
            return Err(FsError::expected(
                libc::EINVAL,
                "RENAME_EXCHANGE is not supported",
            ));
        }
        let src = self.lookup(parent, name).await?;
        self.ensure_loaded(newparent).await?;
        match self.meta.lookup(newparent, newname.to_vec()).await? {
            Lookup::Found(t) if t.ino == src.ino => return Ok(()),
            Lookup::Found(_) if noreplace => {
                return Err(FsError::expected(libc::EEXIST, "target exists"));
            }
            Lookup::Found(t) if t.kind == FileKind::Dir => {
                let errno = if src.kind == FileKind::Dir {
                    libc::EXDEV
                } else {
                    libc::EISDIR
                };
                return Err(FsError::expected(errno, "target is a directory"));
            }
            _ => {}
        }
        if src.kind == FileKind::Dir {
            return Err(FsError::expected(
                libc::EXDEV,
                "directory rename is not supported; copy instead",
            ));
        }
        let to = self.child_key(newparent, newname, FileKind::File).await?;
        let moved = if src.version.is_some() {
            let from = self.key_of(src.ino, FileKind::File).await?;
            Some(self.ufs.rename_file(&from, &to).await?)
        } else {
            None
        };
        self.meta
            .rename(
                parent,
                name.to_vec(),
                newparent,
                newname.to_vec(),
                noreplace,
            )
            .await?;
        if let Some(info) = moved
            && src.version.as_deref() != Some(info.version.as_str())
        {
            // Copy-based renames may give the object a new ETag: record it so reads stay
            // pinned to what the store now holds.
            self.meta
                .set_attr(
                    src.ino,
                    SetAttr {
                        version: Some(Some(info.version)),
                        ..Default::default()
                    },
                )
                .await?;
        }
        Ok(())
    }

    /// Opens a directory, taking a snapshot of its entries for stable readdir offsets.
    pub async fn opendir(&self, ino: InodeNo) -> Result<FileHandle, FsError> {
        let rec = self.meta.get(ino).await?;
        if rec.kind != FileKind::Dir {
            return Err(FsError::expected(libc::ENOTDIR, "not a directory"));
        }
        self.ensure_loaded(ino).await?;
        let mut entries = vec![
            DirEntry {
                name: b".".to_vec(),
                ino,
                kind: FileKind::Dir,
            },
            DirEntry {
                name: b"..".to_vec(),
                ino: rec.parent,
                kind: FileKind::Dir,
            },
        ];
        entries.extend(self.meta.list(ino).await?);
        Ok(self.add_handle(Handle::Dir { entries }))
    }

    /// Entries of an open directory from `offset` on; each entry's offset is its index + 1.
    pub fn readdir(&self, fh: FileHandle, offset: u64) -> Result<Vec<(u64, DirEntry)>, FsError> {
        match &*self.handle(fh)? {
            Handle::Dir { entries } => Ok(entries
                .iter()
                .enumerate()
                .skip(usize::try_from(offset).unwrap_or(usize::MAX))
                .map(|(i, e)| (i as u64 + 1, e.clone()))
                .collect()),
            Handle::File { .. } => Err(FsError::new(libc::EBADF, "not a directory handle")),
        }
    }

    /// Closes a directory handle.
    pub fn releasedir(&self, fh: FileHandle) {
        lock(&self.handles).remove(&fh.0);
    }

    /// Filesystem statistics: space of the cache disk (where writes are staged) and the
    /// namespace's inode count.
    pub async fn statfs(&self) -> Result<StatFs, FsError> {
        let dir = self.cfg.staging_dir.clone();
        let st = tokio::task::spawn_blocking(move || nix::sys::statvfs::statvfs(&dir))
            .await
            .map_err(|e| FsError::new(libc::EIO, e.to_string()))?
            .map_err(|e| FsError::new(e as i32, format!("statvfs: {e}")))?;
        let used = self.meta.inodes_allocated().await?;
        let frsize = st.fragment_size().max(1);
        Ok(StatFs {
            blocks: st.blocks() * frsize / 4096,
            bfree: st.blocks_free() * frsize / 4096,
            bavail: st.blocks_available() * frsize / 4096,
            files: used + 1_000_000_000,
            ffree: 1_000_000_000,
            bsize: 4096,
            namelen: alluxio_metaserver::namespace::NAME_MAX as u32,
        })
    }
}
