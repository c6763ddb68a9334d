//! The namespace client behind `alluxio fs ls|stat|cat|cp|mkdir|rm|mv`: the same `Vfs`
//! the FUSE daemon runs, in this process, over a metaserver's namespace and the stores of
//! its mount table, with a small memory cache and a private staging directory. So every
//! command has exactly the daemon's semantics (1:1 keys, write types, EXDEV, EROFS).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use alluxio::config::{MetaserverConfig, UfsConfig, WriteType};
use alluxio::error::FsError;
use alluxio::meta::MetaClient;
use alluxio::meta::remote::RemoteMeta;
use alluxio::metrics::Metrics;
use alluxio::page_cache::{PageCache, PageCacheConfig};
use alluxio::types::{FileKind, InodeNo, InodeRecord, Ownership, ROOT_INO};
use alluxio::ufs::Ufs;
use alluxio::vfs::{OpenMode, Vfs, VfsConfig};

/// Bytes per read or write call.
const CHUNK: usize = 1 << 20;

/// A connected namespace.
pub struct Client {
    vfs: Arc<Vfs>,
    rt: tokio::runtime::Runtime,
    uid: u32,
    gid: u32,
    _scratch: tempfile::TempDir,
}

impl Client {
    /// Connects to the metaserver and mounts its stores (the table's root store is
    /// required).
    pub fn connect(ms: &MetaserverConfig) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let scratch = tempfile::tempdir().context("scratch directory")?;
        let metrics = Arc::new(Metrics::default());
        let (meta, root) = rt.block_on(async {
            let m = RemoteMeta::connect(&ms.addr, &ms.token)
                .await
                .map_err(anyhow::Error::msg)?;
            let root = m
                .mounts()
                .await?
                .into_iter()
                .find(|e| e.path == "/")
                .with_context(|| {
                    format!(
                        "metaserver {} has no root store (alluxio fs mount / URI)",
                        ms.addr
                    )
                })?;
            anyhow::Ok((m, root))
        })?;
        let ufs = Ufs::new(
            &UfsConfig::parse(&root.uri, &root.options)?,
            metrics.clone(),
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", root.uri))?;
        let cache = PageCache::new(
            &PageCacheConfig {
                mem_bytes: 64 << 20,
                disk_bytes: 0,
                disk_dir: scratch.path().join("pages"),
                io_engine: Default::default(),
                disk_free_ratio: 0.0,
            },
            metrics.clone(),
        )
        .map_err(|e| anyhow::anyhow!("cache: {e}"))?;
        let staging = scratch.path().join("staging");
        std::fs::create_dir_all(&staging)?;
        let (uid, gid) = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        let vfs = Vfs::new(
            Arc::new(meta),
            Arc::new(ufs),
            Arc::new(cache),
            metrics,
            VfsConfig {
                ownership: Ownership {
                    uid,
                    gid,
                    file_mode: 0o644,
                    dir_mode: 0o755,
                },
                prefetch_pages: 8,
                prefetch_gets: 16,
                inflight_pages: 16,
                staging_dir: staging,
                read_only: false,
                write_type: WriteType::CacheThrough,
                journal_dir: scratch.path().join("journal"),
                rename_log: None,
                upload_delay: Default::default(),
                last_close_retry: alluxio::vfs::LAST_CLOSE_RETRY,
                metadata_sync: Default::default(),
                dir_prefetch_bytes: 0,
            },
            rt.handle().clone(),
        )?;
        rt.block_on(vfs.refresh_mounts())?;
        Ok(Self {
            vfs,
            rt,
            uid,
            gid,
            _scratch: scratch,
        })
    }

    fn run<T>(&self, f: impl Future<Output = Result<T, FsError>>) -> Result<T, FsError> {
        self.rt.block_on(f)
    }

    /// The inode at an absolute namespace path.
    pub fn resolve(&self, path: &str) -> Result<InodeRecord, FsError> {
        let mut rec = self.run(self.vfs.getattr(ROOT_INO))?;
        for part in components(path) {
            rec = self.run(self.vfs.lookup(rec.ino, part.as_bytes()))?;
        }
        Ok(rec)
    }

    /// The parent directory of `path` and its last component.
    fn parent_of<'a>(&self, path: &'a str) -> Result<(InodeNo, &'a str), FsError> {
        let parts = components(path);
        let Some((last, dirs)) = parts.split_last() else {
            return Err(FsError::expected(libc::EINVAL, "the root has no parent"));
        };
        let mut ino = ROOT_INO;
        for d in dirs {
            ino = self.run(self.vfs.lookup(ino, d.as_bytes()))?.ino;
        }
        Ok((ino, last))
    }

    /// The entries of a directory, with their attributes, by name.
    pub fn list(&self, dir: &InodeRecord) -> Result<Vec<(String, InodeRecord)>, FsError> {
        let fh = self.run(self.vfs.opendir(dir.ino))?;
        let entries = self.vfs.readdir(fh, 0, usize::MAX);
        self.vfs.releasedir(fh);
        let mut out = Vec::new();
        for (_, e) in entries? {
            if e.name == b"." || e.name == b".." {
                continue;
            }
            let rec = self.run(self.vfs.lookup(dir.ino, &e.name))?;
            out.push((String::from_utf8_lossy(&e.name).into_owned(), rec));
        }
        Ok(out)
    }

    /// Streams the file at `path` into `out`.
    pub fn read_to(&self, path: &str, out: &mut dyn std::io::Write) -> Result<u64> {
        let rec = self.resolve(path)?;
        let (fh, _) = self.run(self.vfs.open(rec.ino, OpenMode::default()))?;
        let res = (|| {
            let mut off = 0u64;
            loop {
                let b = self.run(self.vfs.read(fh, off, CHUNK as u32))?;
                if b.is_empty() {
                    return Ok(off);
                }
                out.write_all(&b)?;
                off += b.len() as u64;
            }
        })();
        self.vfs.release(fh);
        res
    }

    /// Writes `src` (a local file) as the new file `path`, complete in its store on return.
    pub fn write_from(&self, src: &Path, path: &str) -> Result<u64> {
        use std::io::Read;
        let mut f = std::fs::File::open(src).with_context(|| format!("{}", src.display()))?;
        let (parent, name) = self.parent_of(path)?;
        let exists = self.run(self.vfs.lookup(parent, name.as_bytes()));
        let fh = match exists {
            Ok(rec) if rec.kind == FileKind::Dir => bail!("{path} is a directory"),
            Ok(rec) => {
                let mode = OpenMode {
                    write: true,
                    truncate: true,
                };
                self.run(self.vfs.open(rec.ino, mode))?.0
            }
            Err(e) if e.errno() == libc::ENOENT => {
                let c = self
                    .vfs
                    .create(parent, name.as_bytes(), 0o644, self.uid, self.gid);
                self.run(c)?.1
            }
            Err(e) => return Err(e.into()),
        };
        let res = (|| {
            let mut buf = vec![0u8; CHUNK];
            let mut off = 0u64;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                self.run(self.vfs.write(fh, off, &buf[..n]))?;
                off += n as u64;
            }
            self.run(self.vfs.flush(fh))?;
            anyhow::Ok(off)
        })();
        self.vfs.release(fh);
        res
    }

    /// mkdir; with `parents`, also the missing directories on the way (and no error if
    /// the directory exists).
    pub fn mkdir(&self, path: &str, parents: bool) -> Result<(), FsError> {
        let mut ino = ROOT_INO;
        let parts = components(path);
        for (i, p) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            match self.run(self.vfs.lookup(ino, p.as_bytes())) {
                Ok(rec) if !last || parents => ino = rec.ino,
                Ok(_) => return Err(FsError::expected(libc::EEXIST, "exists")),
                Err(e) if e.errno() == libc::ENOENT && (last || parents) => {
                    let m = self.vfs.mkdir(ino, p.as_bytes(), 0o755, self.uid, self.gid);
                    ino = self.run(m)?.ino;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Removes a file, or with `recursive` a directory and everything in it.
    pub fn remove(&self, path: &str, recursive: bool) -> Result<(), FsError> {
        let rec = self.resolve(path)?;
        let (parent, name) = self.parent_of(path)?;
        if rec.kind == FileKind::Dir {
            if !recursive {
                return Err(FsError::expected(libc::EISDIR, "is a directory (use -R)"));
            }
            for (child, _) in self.list(&rec)? {
                self.remove(&format!("{}/{child}", path.trim_end_matches('/')), true)?;
            }
            return self.run(self.vfs.rmdir(parent, name.as_bytes()));
        }
        self.run(self.vfs.unlink(parent, name.as_bytes()))
    }

    /// rename(2) semantics (EXDEV between stores).
    pub fn rename(&self, from: &str, to: &str) -> Result<(), FsError> {
        let (p, n) = self.parent_of(from)?;
        let (np, nn) = self.parent_of(to)?;
        self.run(
            self.vfs
                .rename(p, n.as_bytes(), np, nn.as_bytes(), false, false),
        )
    }
}

fn components(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect()
}
