//! The FUSE adapter: `fuser::Filesystem` over the async [`Vfs`].
//!
//! Each callback copies its arguments into owned values, runs one `block_on` of the vfs
//! future on the session thread (concurrency is bounded by the session's thread count, and
//! backpressure reaches the kernel queue), converts the result and replies. No logic lives
//! here. Every operation has a tracing span; every error is logged once, here, at the level
//! the `FsError` carries, and counted.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle as FuseFh, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tokio::runtime::Handle as RtHandle;
use tracing::{Instrument, instrument};

use crate::error::FsError;
use crate::metrics::Metrics;
use crate::types::{FileHandle, FileKind, InodeNo, InodeRecord, now_ns};
use crate::vfs::{OpenMode, SetAttrRequest, Vfs};

mod iomode;

use iomode::IoModes;

/// The kernel-facing filesystem.
pub struct Adapter {
    vfs: Arc<Vfs>,
    rt: RtHandle,
    attr_ttl: Duration,
    entry_ttl: Duration,
    /// Ask the kernel for FUSE passthrough at init.
    passthrough: bool,
    /// Serve extended attributes (else ENOSYS, see [`crate::config::FuseConfig::xattr`]).
    xattr: bool,
    io: IoModes,
    /// Latency of each FUSE operation (Prometheus `alluxio_fuse_op_duration_seconds`).
    ops: Arc<crate::prom::OpHistograms>,
}

fn systime(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn time_ns(t: TimeOrNow) -> i64 {
    match t {
        TimeOrNow::Now => now_ns(),
        TimeOrNow::SpecificTime(st) => match st.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
        },
    }
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Socket => FileType::Socket,
    }
}

fn to_attr(r: &InodeRecord) -> FileAttr {
    FileAttr {
        ino: INodeNo(r.ino.0),
        size: r.size,
        blocks: r.size.div_ceil(512),
        atime: systime(r.atime_ns),
        mtime: systime(r.mtime_ns),
        ctime: systime(r.ctime_ns),
        crtime: systime(r.ctime_ns),
        kind: file_type(r.kind),
        perm: (r.mode & 0o7777) as u16,
        nlink: r.nlink,
        uid: r.uid,
        gid: r.gid,
        rdev: r.rdev,
        blksize: 4096,
        flags: 0,
    }
}

impl Adapter {
    /// An adapter over `vfs`, blocking on `rt`, with the kernel-facing options of `cfg`
    /// (TTLs; passthrough, which hands fully cached files to the kernel when it supports
    /// that; extended attributes).
    pub fn new(
        vfs: Arc<Vfs>,
        rt: RtHandle,
        cfg: &crate::config::FuseConfig,
        ops: Arc<crate::prom::OpHistograms>,
    ) -> Self {
        Self {
            vfs,
            rt,
            attr_ttl: cfg.attr_ttl,
            entry_ttl: cfg.entry_ttl,
            passthrough: cfg.passthrough,
            xattr: cfg.xattr,
            io: IoModes::default(),
            ops,
        }
    }

    /// ENOSYS for an xattr request on a mount without xattrs: the kernel remembers it per
    /// operation and sends no more of them (applications get EOPNOTSUPP).
    fn no_xattr(&self) -> Option<Errno> {
        if self.xattr {
            return None;
        }
        Metrics::inc(&self.metrics().fuse_requests);
        Some(Errno::ENOSYS)
    }

    fn metrics(&self) -> &Metrics {
        self.vfs.metrics()
    }

    /// Runs a vfs future to completion on this session thread, and records its latency
    /// under `op` (the FUSE operation).
    fn block<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, FsError>>,
    ) -> Result<T, FsError> {
        // Only session threads get here: they may block for the request (`offload`).
        crate::offload::enter_session_thread();
        Metrics::inc(&self.metrics().fuse_requests);
        Metrics::inc(&self.metrics().fuse_in_flight);
        let t0 = std::time::Instant::now();
        let r = self.rt.block_on(fut.in_current_span());
        self.metrics()
            .fuse_in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.ops.observe(op, t0.elapsed(), r.is_err());
        r
    }

    /// Logs an error once at its level, counts it and converts it for the kernel.
    /// Failures (WARN and ERROR) count in `fuse_errors`; an errno that is the normal
    /// answer (ENOENT of a lookup, ESTALE of an object that changed) in
    /// `fuse_expected_errors`, so an alert on the first fires on faults only.
    fn err(&self, e: FsError) -> Errno {
        match e.level() {
            tracing::Level::ERROR | tracing::Level::WARN => {
                Metrics::inc(&self.metrics().fuse_errors)
            }
            _ => Metrics::inc(&self.metrics().fuse_expected_errors),
        }
        match e.level() {
            tracing::Level::ERROR => tracing::error!(error = %e, "request failed"),
            tracing::Level::WARN => tracing::warn!(error = %e, "request failed"),
            tracing::Level::INFO => tracing::info!(error = %e, "request answered"),
            _ => tracing::debug!(error = %e, "request failed"),
        }
        Errno::from_i32(e.errno())
    }
}

/// Answers getxattr/listxattr: the size when asked with size 0, ERANGE when the buffer
/// is too small, else the bytes.
fn reply_xattr(reply: ReplyXattr, v: &[u8], size: u32, err: impl Fn(FsError) -> Errno) {
    if size == 0 {
        reply.size(v.len() as u32);
    } else if v.len() > size as usize {
        reply.error(err(FsError::expected(libc::ERANGE, "buffer too small")));
    } else {
        reply.data(v);
    }
}

impl Filesystem for Adapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Large requests cut per-request overhead; O_TRUNC arrives with open so truncation
        // and the following writes share one upload. Both are best effort.
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        let _ = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        let _ = config.set_max_background(64);
        // Passthrough needs a stacking depth of 1 (our backing files are on a plain local
        // filesystem). It is incompatible with the writeback cache, which we do not use.
        if self.passthrough {
            match config.add_capabilities(InitFlags::FUSE_PASSTHROUGH) {
                Ok(()) => {
                    let _ = config.set_max_stack_depth(1);
                    self.io.set_enabled(true);
                    tracing::info!("FUSE passthrough enabled for fully cached files");
                }
                Err(_) => {
                    tracing::info!("kernel offers no FUSE passthrough; reads go through the daemon")
                }
            }
        }
        Ok(())
    }

    /// Unmount: the commits after a last close still in progress end (bounded by
    /// [`crate::vfs::UNMOUNT_COMMIT_WAIT`]), then whatever the namespace has not made
    /// durable yet is made durable.
    #[instrument(level = "debug", skip_all)]
    fn destroy(&mut self) {
        self.rt
            .block_on(self.vfs.shutdown(crate::vfs::UNMOUNT_COMMIT_WAIT));
        if let Err(e) = self.rt.block_on(self.vfs.sync_namespace()) {
            tracing::error!(error = %e, "namespace: final durable commit at unmount failed");
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = parent.0, pid = req.pid()))]
    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.block(
            "lookup",
            self.vfs.lookup(InodeNo(parent.0), name.as_bytes()),
        ) {
            Ok(r) => reply.entry(&self.entry_ttl, &to_attr(&r), Generation(0)),
            Err(e) => reply.error(self.err(e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, pid = req.pid()))]
    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FuseFh>, reply: ReplyAttr) {
        match self.block("getattr", self.vfs.getattr(InodeNo(ino.0))) {
            Ok(r) => reply.attr(&self.attr_ttl, &to_attr(&r)),
            Err(e) => reply.error(self.err(e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, pid = req.pid()))]
    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FuseFh>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = SetAttrRequest {
            size,
            mode,
            uid,
            gid,
            atime_ns: atime.map(time_ns),
            mtime_ns: mtime.map(time_ns),
            fh: fh.map(|f| FileHandle(f.0)),
        };
        if size.is_some()
            && let Err(errno) = self.io.check_truncate(ino.0)
        {
            let e = FsError::expected(errno, "file is being read through passthrough");
            return reply.error(self.err(e));
        }
        match self.block("setattr", self.vfs.setattr(InodeNo(ino.0), r)) {
            Ok(r) => reply.attr(&self.attr_ttl, &to_attr(&r)),
            Err(e) => reply.error(self.err(e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = parent.0, pid = req.pid()))]
    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let fut = self.vfs.mknod(
            InodeNo(parent.0),
            name.as_bytes(),
            mode,
            rdev,
            req.uid(),
            req.gid(),
        );
        match self.block("mknod", fut) {
            Ok(r) => reply.entry(&self.entry_ttl, &to_attr(&r), Generation(0)),
            Err(e) => reply.error(self.err(e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = parent.0, pid = req.pid()))]
    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let fut = self.vfs.mkdir(
            InodeNo(parent.0),
            name.as_bytes(),
            mode,
            req.uid(),
            req.gid(),
        );
        match self.block("mkdir", fut) {
            Ok(r) => reply.entry(&self.entry_ttl, &to_attr(&r), Generation(0)),
            Err(e) => reply.error(self.err(e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = parent.0, pid = req.pid()))]
    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.block(
            "unlink",
            self.vfs.unlink(InodeNo(parent.0), name.as_bytes()),
        ) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.err(e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = parent.0, pid = req.pid()))]
    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.block("rmdir", self.vfs.rmdir(InodeNo(parent.0), name.as_bytes())) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.err(e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = parent.0, pid = req.pid()))]
    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let fut = self.vfs.symlink(
            InodeNo(parent.0),
            link_name.as_bytes(),
            target.as_os_str().as_bytes(),
            req.uid(),
            req.gid(),
        );
        match self.block("symlink", fut) {
            Ok(r) => reply.entry(&self.entry_ttl, &to_attr(&r), Generation(0)),
            Err(e) => reply.error(self.err(e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, pid = req.pid()))]
    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.block("readlink", self.vfs.readlink(InodeNo(ino.0))) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(self.err(e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = parent.0, pid = req.pid()))]
    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            // Whiteouts are for overlay filesystems' upper layers; not supported here.
            reply.error(self.err(FsError::expected(
                libc::EINVAL,
                "RENAME_WHITEOUT is not supported",
            )));
            return;
        }
        let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
        let fut = self.vfs.rename(
            InodeNo(parent.0),
            name.as_bytes(),
            InodeNo(newparent.0),
            newname.as_bytes(),
            noreplace,
            exchange,
        );
        match self.block("rename", fut) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.err(e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, pid = req.pid()))]
    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let fut = self
            .vfs
            .link(InodeNo(ino.0), InodeNo(newparent.0), newname.as_bytes());
        match self.block("link", fut) {
            Ok(r) => reply.entry(&self.entry_ttl, &to_attr(&r), Generation(0)),
            Err(e) => reply.error(self.err(e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, pid = req.pid()))]
    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let acc = flags.0 & libc::O_ACCMODE;
        let mode = OpenMode {
            write: acc == libc::O_WRONLY || acc == libc::O_RDWR,
            truncate: flags.0 & libc::O_TRUNC != 0,
        };
        let ticket = match self.io.begin_open(ino.0, mode.write) {
            Ok(t) => t,
            Err(errno) => {
                let e = FsError::expected(errno, "file is being read through passthrough");
                return reply.error(self.err(e));
            }
        };
        match self.block("open", self.vfs.open(InodeNo(ino.0), mode)) {
            Ok((fh, keep_cache)) => self
                .io
                .reply_open(reply, &self.vfs, ino.0, fh, ticket, keep_cache),
            Err(e) => {
                self.io.abort_open(ino.0, ticket);
                reply.error(self.err(e))
            }
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, fh = fh.0, pid = req.pid()))]
    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FuseFh,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.block("read", self.vfs.read(FileHandle(fh.0), offset, size)) {
            Ok(b) => reply.data(&b),
            Err(e) => reply.error(self.err(e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, fh = fh.0, pid = req.pid()))]
    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FuseFh,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.block("write", self.vfs.write(FileHandle(fh.0), offset, data)) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(self.err(e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, fh = fh.0, pid = req.pid()))]
    fn flush(&self, req: &Request, ino: INodeNo, fh: FuseFh, _lo: LockOwner, reply: ReplyEmpty) {
        match self.block("flush", self.vfs.flush(FileHandle(fh.0))) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.err(e)),
        }
    }

    /// Also answers BATCH_FORGET: fuser's default `batch_forget` calls this for each inode
    /// (its argument type is private to fuser, so it cannot be overridden).
    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0))]
    fn forget(&self, req: &Request, ino: INodeNo, _nlookup: u64) {
        Metrics::inc(&self.metrics().fuse_requests);
        self.vfs.forget(InodeNo(ino.0));
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, fh = fh.0, pid = req.pid()))]
    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FuseFh,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        Metrics::inc(&self.metrics().fuse_requests);
        self.io.released(FileHandle(fh.0));
        self.vfs.release(FileHandle(fh.0));
        reply.ok();
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, fh = fh.0, pid = req.pid()))]
    fn fsync(&self, req: &Request, ino: INodeNo, fh: FuseFh, _datasync: bool, reply: ReplyEmpty) {
        match self.block("fsync", self.vfs.fsync(FileHandle(fh.0))) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.err(e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, pid = req.pid()))]
    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.block("opendir", self.vfs.opendir(InodeNo(ino.0))) {
            Ok(fh) => reply.opened(FuseFh(fh.0), FopenFlags::empty()),
            Err(e) => reply.error(self.err(e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, fh = fh.0, pid = req.pid()))]
    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FuseFh,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        Metrics::inc(&self.metrics().fuse_requests);
        // A reply buffer (one page) holds at most ~170 entries of the shortest names.
        match self.vfs.readdir(FileHandle(fh.0), offset, 256) {
            Ok(entries) => {
                for (off, e) in entries {
                    let name = OsStr::from_bytes(&e.name);
                    if reply.add(INodeNo(e.ino.0), off, file_type(e.kind), name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(self.err(e)),
        }
    }

    /// Entries with their attributes, as lookups would return them, so listing a
    /// directory with `ls -l`, `find` or `os.scandir` plus a stat of each entry costs one
    /// request per buffer instead of one per entry (the kernel asks for this when the
    /// listing is followed by lookups: READDIRPLUS_AUTO). An entry gone since opendir is
    /// left out (POSIX leaves it unspecified whether it is listed).
    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, fh = fh.0, pid = req.pid()))]
    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FuseFh,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        // One page holds at most ~26 entries with attributes.
        let entries = match self.vfs.readdir(FileHandle(fh.0), offset, 64) {
            Ok(e) => e,
            Err(e) => return reply.error(self.err(e)),
        };
        // Entry and attributes share one timeout here: the shorter of the two.
        let ttl = self.entry_ttl.min(self.attr_ttl);
        let vfs = &self.vfs;
        let filled = self.block("readdirplus", async {
            for (off, e) in entries {
                let dot = e.name == b"." || e.name == b"..";
                let mut attr = match vfs.getattr(e.ino).await {
                    Ok(r) => to_attr(&r),
                    // "." and ".." stay listed (the kernel links neither, and takes the
                    // entry's inode number from the attributes).
                    Err(_) if dot => to_attr(&vfs.getattr(InodeNo(ino.0)).await?),
                    Err(err) if err.errno() == libc::ENOENT => continue,
                    Err(err) => return Err(err),
                };
                attr.ino = INodeNo(e.ino.0);
                let name = OsStr::from_bytes(&e.name);
                if reply.add(INodeNo(e.ino.0), off, name, &ttl, &attr, Generation(0)) {
                    break;
                }
            }
            Ok(())
        });
        match filled {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.err(e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, fh = fh.0, pid = req.pid()))]
    fn releasedir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FuseFh,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        Metrics::inc(&self.metrics().fuse_requests);
        self.vfs.releasedir(FileHandle(fh.0));
        reply.ok();
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, fh = fh.0, pid = req.pid()))]
    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FuseFh,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.block("fsyncdir", self.vfs.sync_namespace()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.err(e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, pid = req.pid()))]
    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        match self.block("statfs", self.vfs.statfs()) {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
            ),
            Err(e) => reply.error(self.err(e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, pid = req.pid()))]
    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        if let Some(e) = self.no_xattr() {
            return reply.error(e);
        }
        match self.block(
            "setxattr",
            self.vfs
                .setxattr(InodeNo(ino.0), name.as_bytes(), value, flags),
        ) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.err(e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, pid = req.pid()))]
    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if let Some(e) = self.no_xattr() {
            return reply.error(e);
        }
        match self.block(
            "getxattr",
            self.vfs.getxattr(InodeNo(ino.0), name.as_bytes()),
        ) {
            Ok(v) => reply_xattr(reply, &v, size, |e| self.err(e)),
            Err(e) => reply.error(self.err(e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, pid = req.pid()))]
    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if let Some(e) = self.no_xattr() {
            return reply.error(e);
        }
        match self.block("listxattr", self.vfs.listxattr(InodeNo(ino.0))) {
            Ok(v) => reply_xattr(reply, &v, size, |e| self.err(e)),
            Err(e) => reply.error(self.err(e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, pid = req.pid()))]
    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if let Some(e) = self.no_xattr() {
            return reply.error(e);
        }
        match self.block(
            "removexattr",
            self.vfs.removexattr(InodeNo(ino.0), name.as_bytes()),
        ) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.err(e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, fh = fh.0, pid = req.pid()))]
    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FuseFh,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // No ioctls are defined on this filesystem (isatty() and friends probe with them).
        Metrics::inc(&self.metrics().fuse_requests);
        reply.error(Errno::ENOTTY);
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, fh = fh.0, pid = req.pid()))]
    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FuseFh,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.block(
            "fallocate",
            self.vfs.fallocate(FileHandle(fh.0), offset, length, mode),
        ) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.err(e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = ino.0, pid = req.pid()))]
    fn access(&self, req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Permissions are checked by the kernel (default_permissions); access(2) only
        // reaches us for existence checks.
        match self.block("access", self.vfs.getattr(InodeNo(ino.0))) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(self.err(e)),
        }
    }

    #[instrument(level = "debug", skip_all, fields(req = req.unique().0, ino = parent.0, pid = req.pid()))]
    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let fut = self.vfs.create(
            InodeNo(parent.0),
            name.as_bytes(),
            mode,
            req.uid(),
            req.gid(),
        );
        match self.block("create", fut) {
            Ok((r, fh)) => {
                self.io.created(r.ino.0, fh);
                reply.created(
                    &self.entry_ttl,
                    &to_attr(&r),
                    Generation(0),
                    FuseFh(fh.0),
                    FopenFlags::empty(),
                )
            }
            Err(e) => reply.error(self.err(e)),
        }
    }
}
