//! Per-inode kernel I/O modes: which opens the kernel serves by FUSE passthrough.
//!
//! The kernel keeps one I/O mode per inode. While an inode has a passthrough open, every
//! open of it must be passthrough to the same backing file (anything else fails with
//! EINVAL/EIO), and a passthrough open is refused while a page-cached open exists. Our
//! backing file is the disk tier's copy of one version, which must never be written. So,
//! per inode:
//! - no open yet, read-only, whole version on the disk tier → passthrough, and the inode
//!   keeps that backing file (and its pin on the cache) until its last passthrough close;
//! - passthrough active → further read-only opens share it (the content cannot have
//!   changed, see next), while opens for writing and truncation get ETXTBSY, the errno
//!   Linux gives for writing a file that is being executed;
//! - otherwise → an ordinary page-cached open.
//!
//! Invariant: our counts never undercount the kernel's. A writer's page-cached open is
//! counted before the vfs opens anything, a reader's when we reply, and both are dropped
//! at RELEASE, which the kernel sends after it has dropped the mode itself. RELEASE is
//! asynchronous (close(2) returns before it reaches us), so a writer that finds a
//! passthrough open waits briefly for a release in flight before it is refused.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fuser::{BackingId, FileHandle as FuseFh, FopenFlags, ReplyOpen};

use crate::page_cache::Backing;
use crate::types::FileHandle;
use crate::vfs::Vfs;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Cached,
    Passthrough,
}

/// What [`IoModes::begin_open`] reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ticket {
    /// A writer, counted as page-cached already.
    Writer,
    /// A reader; its mode is chosen when it is answered.
    Reader,
}

struct Passthrough {
    id: BackingId,
    opens: u32,
    /// Holds the cache pin: no page of the backing file is evicted while the kernel
    /// reads it.
    _backing: Backing,
}

#[derive(Default)]
struct InodeIo {
    cached: u32,
    pt: Option<Passthrough>,
}

#[derive(Default)]
struct State {
    inodes: HashMap<u64, InodeIo>,
    handles: HashMap<u64, (u64, Mode)>,
}

/// How long a writer waits for passthrough readers' RELEASEs before ETXTBSY.
const RELEASE_WAIT: Duration = Duration::from_millis(250);

/// The I/O-mode table of one session.
#[derive(Default)]
pub(crate) struct IoModes {
    /// Whether the kernel accepted FUSE_PASSTHROUGH (and we still may use it).
    enabled: std::sync::atomic::AtomicBool,
    state: Mutex<State>,
    /// Signalled when a passthrough inode loses its last open.
    released: Condvar,
}

impl IoModes {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state once `ino` has no passthrough open, waiting up to [`RELEASE_WAIT`] for
    /// releases in flight; ETXTBSY if it still has one.
    fn without_passthrough(&self, ino: u64) -> Result<MutexGuard<'_, State>, i32> {
        let deadline = Instant::now() + RELEASE_WAIT;
        let mut st = self.state();
        while st.inodes.get(&ino).is_some_and(|io| io.pt.is_some()) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(libc::ETXTBSY);
            }
            st = self
                .released
                .wait_timeout(st, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        Ok(st)
    }

    /// Records whether passthrough was negotiated at init.
    pub(crate) fn set_enabled(&self, on: bool) {
        self.enabled.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    fn enabled(&self) -> bool {
        self.enabled.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Admits an open before the vfs sees it: a writer is refused with ETXTBSY while the
    /// kernel reads the inode through passthrough, and otherwise counted as page-cached.
    pub(crate) fn begin_open(&self, ino: u64, write: bool) -> Result<Ticket, i32> {
        if !write {
            return Ok(Ticket::Reader);
        }
        let mut st = self.without_passthrough(ino)?;
        st.inodes.entry(ino).or_default().cached += 1;
        Ok(Ticket::Writer)
    }

    /// Undoes [`Self::begin_open`] when the vfs refused the open.
    pub(crate) fn abort_open(&self, ino: u64, ticket: Ticket) {
        if ticket == Ticket::Writer {
            let mut st = self.state();
            if let Some(io) = st.inodes.get_mut(&ino) {
                io.cached = io.cached.saturating_sub(1);
                if io.cached == 0 && io.pt.is_none() {
                    st.inodes.remove(&ino);
                }
            }
        }
    }

    /// Whether the inode's size may change now (not while read through passthrough).
    pub(crate) fn check_truncate(&self, ino: u64) -> Result<(), i32> {
        self.without_passthrough(ino).map(drop)
    }

    /// Replies to OPEN for handle `fh` of `ino`, choosing a reader's mode.
    pub(crate) fn reply_open(
        &self,
        reply: ReplyOpen,
        vfs: &Vfs,
        ino: u64,
        fh: FileHandle,
        ticket: Ticket,
        keep_cache: bool,
    ) {
        // A read-only handle has nothing to flush (flush only uploads staged writes, and
        // locks are kernel-local), so the kernel need not send FLUSH at each close: one
        // round trip less per file opened, which is most of a small-file read.
        let reader = if ticket == Ticket::Reader {
            FopenFlags::FOPEN_NOFLUSH
        } else {
            FopenFlags::empty()
        };
        let cached_flags = if keep_cache {
            FopenFlags::FOPEN_KEEP_CACHE | reader
        } else {
            reader
        };
        let mut st = self.state();
        let io = st.inodes.entry(ino).or_default();
        let mode = if ticket == Ticket::Writer {
            reply.opened(FuseFh(fh.0), cached_flags);
            Mode::Cached
        } else if let Some(pt) = &mut io.pt {
            // Writers and truncation are refused while `pt` exists, so the backing file
            // still holds the inode's current content.
            pt.opens += 1;
            reply.opened_passthrough(FuseFh(fh.0), reader, &pt.id);
            Mode::Passthrough
        } else if let Some(backing) = (io.cached == 0 && self.enabled())
            .then(|| vfs.passthrough_backing(fh))
            .flatten()
        {
            match reply.open_backing(&backing.file) {
                Ok(id) => {
                    reply.opened_passthrough(FuseFh(fh.0), reader, &id);
                    io.pt = Some(Passthrough {
                        id,
                        opens: 1,
                        _backing: backing,
                    });
                    Mode::Passthrough
                }
                Err(e) => {
                    // Not permitted here (no CAP_SYS_ADMIN, a backing fs the kernel will
                    // not stack on): stop trying, serve through the daemon.
                    tracing::warn!(error = %e, "FUSE passthrough refused; reads go through the daemon");
                    self.set_enabled(false);
                    io.cached += 1;
                    reply.opened(FuseFh(fh.0), cached_flags);
                    Mode::Cached
                }
            }
        } else {
            io.cached += 1;
            reply.opened(FuseFh(fh.0), cached_flags);
            Mode::Cached
        };
        st.handles.insert(fh.0, (ino, mode));
    }

    /// Records a handle opened by CREATE (always page-cached: the inode is new).
    pub(crate) fn created(&self, ino: u64, fh: FileHandle) {
        let mut st = self.state();
        st.inodes.entry(ino).or_default().cached += 1;
        st.handles.insert(fh.0, (ino, Mode::Cached));
    }

    /// Forgets a released handle; the inode's backing file goes with its last
    /// passthrough handle.
    pub(crate) fn released(&self, fh: FileHandle) {
        let mut st = self.state();
        let Some((ino, mode)) = st.handles.remove(&fh.0) else {
            return;
        };
        let Some(io) = st.inodes.get_mut(&ino) else {
            return;
        };
        match mode {
            Mode::Cached => io.cached = io.cached.saturating_sub(1),
            Mode::Passthrough => {
                if let Some(pt) = &mut io.pt {
                    pt.opens = pt.opens.saturating_sub(1);
                    if pt.opens == 0 {
                        io.pt = None;
                        self.released.notify_all();
                    }
                }
            }
        }
        if io.cached == 0 && io.pt.is_none() {
            st.inodes.remove(&ino);
        }
    }
}
