//! The disk tier's I/O engine: io_uring when a ring can be made, else positional
//! reads and writes on the blocking pool (psync).
//!
//! The io_uring engine owns one ring on a dedicated thread. Callers send operations over a
//! channel and await a oneshot reply; the thread keeps up to `DEPTH` operations in flight,
//! so concurrent page reads and writes (prefetch, several readers) reach the device
//! together instead of one blocking-pool thread each.
//!
//! Invariant: a buffer handed to the kernel is owned by the ring thread (inside its
//! in-flight table) until the kernel has posted that operation's completion, so the
//! kernel never writes into or reads from freed memory. The thread exits only when every
//! sender is gone and nothing is in flight.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::mpsc;

use bytes::Bytes;
use tokio::sync::oneshot;

/// Operations kept in flight on the ring.
const DEPTH: u32 = 64;

pub use crate::config::EngineChoice;

enum Buf {
    /// A read of `want` bytes into `buf`'s spare capacity: `buf` has room for `want`
    /// bytes and length 0 until the kernel has filled all of them (then `want`), so no
    /// byte is zeroed first and none is ever seen uninitialised.
    Read {
        buf: Vec<u8>,
        want: usize,
    },
    Write(Bytes),
}

struct Op {
    file: Arc<File>,
    offset: u64,
    buf: Buf,
    /// Bytes already transferred (short transfers are resubmitted for the rest).
    done: usize,
    reply: oneshot::Sender<io::Result<Vec<u8>>>,
}

impl Op {
    fn len(&self) -> usize {
        match &self.buf {
            Buf::Read { want, .. } => *want,
            Buf::Write(b) => b.len(),
        }
    }

    fn finish(self, res: io::Result<()>) {
        let done = self.done;
        let out = res.map(|()| match self.buf {
            Buf::Read { mut buf, want } => {
                debug_assert!(done == want && buf.capacity() >= want);
                // SAFETY: finished without error means `done == want`: the kernel wrote
                // bytes `0..want` of the allocation, whose capacity is at least `want`.
                unsafe { buf.set_len(want.min(done)) };
                buf
            }
            Buf::Write(_) => Vec::new(),
        });
        let _ = self.reply.send(out);
    }
}

/// A disk I/O engine.
#[derive(Clone)]
pub struct IoEngine(Engine);

#[derive(Clone)]
enum Engine {
    /// One io_uring on a dedicated thread.
    Uring(mpsc::Sender<Op>),
    /// pread/pwrite on tokio's blocking pool.
    Psync,
}

impl std::fmt::Debug for IoEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl IoEngine {
    /// Sets up the engine asked for. `Auto` probes io_uring (a ring plus one no-op
    /// round trip) and falls back to psync, logging why.
    pub fn new(choice: EngineChoice) -> io::Result<Self> {
        match choice {
            EngineChoice::Psync => Ok(Self(Engine::Psync)),
            EngineChoice::IoUring => Self::uring(),
            EngineChoice::Auto => match Self::uring() {
                Ok(e) => Ok(e),
                Err(e) => {
                    tracing::warn!(error = %e, "io_uring unavailable; disk cache uses psync");
                    Ok(Self(Engine::Psync))
                }
            },
        }
    }

    /// The engine's name, as logged and reported in stats.
    pub fn name(&self) -> &'static str {
        match self.0 {
            Engine::Uring(_) => "io_uring",
            Engine::Psync => "psync",
        }
    }

    fn uring() -> io::Result<Self> {
        let mut ring = io_uring::IoUring::new(DEPTH)?;
        // Probe: a ring can exist while submissions are refused (seccomp, a sysctl), so
        // do one real round trip before trusting it.
        let nop = io_uring::opcode::Nop::new().build().user_data(u64::MAX);
        // SAFETY: a no-op references no memory.
        unsafe { ring.submission().push(&nop) }
            .map_err(|_| io::Error::other("io_uring submission queue full at probe"))?;
        ring.submit_and_wait(1)?;
        let probe = ring.completion().next();
        match probe {
            Some(c) if c.result() >= 0 => {}
            Some(c) => return Err(io::Error::from_raw_os_error(-c.result())),
            None => return Err(io::Error::other("io_uring probe got no completion")),
        }
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("alluxio-uring".into())
            .spawn(move || ring_loop(ring, rx))?;
        Ok(Self(Engine::Uring(tx)))
    }

    /// Reads exactly `len` bytes at `offset`; a short file is `UnexpectedEof`.
    pub async fn read_at(&self, file: Arc<File>, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        match &self.0 {
            Engine::Uring(tx) => {
                let buf = Buf::Read {
                    buf: Vec::with_capacity(len),
                    want: len,
                };
                submit(tx, file, offset, buf).await
            }
            Engine::Psync => {
                blocking(move || {
                    let mut b = vec![0u8; len];
                    file.read_exact_at(&mut b, offset).map(|()| b)
                })
                .await
            }
        }
    }

    /// Writes all of `data` at `offset`.
    pub async fn write_at(&self, file: Arc<File>, offset: u64, data: Bytes) -> io::Result<()> {
        match &self.0 {
            Engine::Uring(tx) => submit(tx, file, offset, Buf::Write(data)).await.map(drop),
            Engine::Psync => blocking(move || file.write_all_at(&data, offset)).await,
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(format!("disk I/O task failed: {e}"))))
}

async fn submit(
    tx: &mpsc::Sender<Op>,
    file: Arc<File>,
    offset: u64,
    buf: Buf,
) -> io::Result<Vec<u8>> {
    let (reply, rx) = oneshot::channel();
    let op = Op {
        file,
        offset,
        buf,
        done: 0,
        reply,
    };
    tx.send(op)
        .map_err(|_| io::Error::other("io_uring thread is gone"))?;
    rx.await
        .unwrap_or_else(|_| Err(io::Error::other("io_uring thread dropped the request")))
}

/// Queues the remaining part of `op` on the ring under `id`.
fn push(ring: &mut io_uring::IoUring, id: u64, op: &mut Op) -> io::Result<()> {
    use io_uring::{opcode, types};
    let fd = types::Fd(op.file.as_raw_fd());
    let remaining = u32::try_from(op.len() - op.done).unwrap_or(u32::MAX);
    let off = op.offset + op.done as u64;
    let sqe = match &mut op.buf {
        Buf::Read { buf, .. } => {
            // SAFETY: `done < want <= capacity`, so the pointer stays inside the
            // allocation; the kernel writes the spare capacity, never read before.
            let p = unsafe { buf.as_mut_ptr().add(op.done) };
            opcode::Read::new(fd, p, remaining).offset(off).build()
        }
        Buf::Write(b) => {
            // SAFETY: as above, inside the buffer.
            let p = unsafe { b.as_ptr().add(op.done) };
            opcode::Write::new(fd, p, remaining).offset(off).build()
        }
    };
    // SAFETY: the buffer and the file are owned by `op`, which stays in the in-flight
    // table until this entry's completion is reaped (the module invariant).
    unsafe { ring.submission().push(&sqe.user_data(id)) }
        .map_err(|_| io::Error::other("io_uring submission queue full"))
}

fn ring_loop(mut ring: io_uring::IoUring, rx: mpsc::Receiver<Op>) {
    let mut inflight: HashMap<u64, Op> = HashMap::new();
    let mut ready: Vec<Op> = Vec::new();
    let mut next_id: u64 = 0;
    let mut open = true;
    loop {
        // Gather work: block only when nothing is in flight (then a completion could
        // never wake us).
        if inflight.is_empty() && ready.is_empty() {
            if !open {
                return;
            }
            match rx.recv() {
                Ok(op) => ready.push(op),
                Err(_) => return,
            }
        }
        while open && inflight.len() + ready.len() < DEPTH as usize {
            match rx.try_recv() {
                Ok(op) => ready.push(op),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => open = false,
            }
        }
        for mut op in ready.drain(..) {
            if op.len() == 0 {
                op.finish(Ok(()));
                continue;
            }
            next_id = next_id.wrapping_add(1);
            match push(&mut ring, next_id, &mut op) {
                Ok(()) => {
                    inflight.insert(next_id, op);
                }
                Err(e) => op.finish(Err(e)),
            }
        }
        if inflight.is_empty() {
            continue;
        }
        if let Err(e) = ring.submit_and_wait(1)
            && e.raw_os_error() != Some(libc::EINTR)
        {
            // The ring itself failed: fail everything in flight rather than hang callers.
            // Their buffers are dropped only after the kernel can no longer touch them,
            // which a failed io_uring_enter guarantees for unsubmitted entries; submitted
            // ones are drained below if completions still arrive.
            tracing::error!(error = %e, "io_uring submit failed");
        }
        let done: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (id, res) in done {
            let Some(mut op) = inflight.remove(&id) else {
                continue;
            };
            if res < 0 {
                let err = -res;
                if err == libc::EINTR || err == libc::EAGAIN {
                    ready.push(op);
                } else {
                    op.finish(Err(io::Error::from_raw_os_error(err)));
                }
            } else if res == 0 {
                op.finish(Err(io::Error::from(io::ErrorKind::UnexpectedEof)));
            } else {
                op.done += res as usize;
                if op.done < op.len() {
                    ready.push(op);
                } else {
                    op.finish(Ok(()));
                }
            }
        }
    }
}

/// Whether all `len` bytes at `offset` (a multiple of the system page size) of `file` are
/// in the kernel's page cache, so reading or sending them does not wait for the device.
/// `false` when that cannot be told.
pub fn resident(file: &File, offset: u64, len: u64) -> bool {
    // SAFETY: sysconf has no preconditions.
    let sys_page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let (Ok(sys_page), Ok(len), Ok(off)) = (
        u64::try_from(sys_page),
        usize::try_from(len),
        libc::off_t::try_from(offset),
    ) else {
        return false;
    };
    if len == 0 || sys_page == 0 || !offset.is_multiple_of(sys_page) {
        return false;
    }
    // SAFETY: a fresh shared read-only mapping of `len` bytes of an open file; nothing
    // reads through it, and it is unmapped below on every path.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            off,
        )
    };
    if addr == libc::MAP_FAILED {
        return false;
    }
    let mut vec = vec![0u8; len.div_ceil(sys_page as usize)];
    // SAFETY: `addr` is the mapping of `len` bytes made above, `vec` holds one byte per
    // system page of it.
    let rc = unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) };
    // SAFETY: unmaps exactly the mapping made above.
    unsafe { libc::munmap(addr, len) };
    rc == 0 && vec.iter().all(|v| v & 1 == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn roundtrip(engine: IoEngine) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = Arc::new(
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&path)
                .unwrap(),
        );
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        // Many concurrent writes and reads at distinct offsets.
        let mut tasks = Vec::new();
        for i in 0..16u64 {
            let (e, f, d) = (engine.clone(), f.clone(), Bytes::from(data.clone()));
            tasks.push(tokio::spawn(async move { e.write_at(f, i << 20, d).await }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        for i in 0..16u64 {
            let got = engine
                .read_at(f.clone(), i << 20, data.len())
                .await
                .unwrap();
            assert!(got == data, "{} page {i} differs", engine.name());
        }
        // Reading past the end is an error, never a short buffer.
        let end = std::fs::metadata(&path).unwrap().len();
        let e = engine.read_at(f.clone(), end - 10, 20).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn psync_roundtrip() {
        roundtrip(IoEngine::new(EngineChoice::Psync).unwrap()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn uring_roundtrip_or_fallback() {
        let e = IoEngine::new(EngineChoice::Auto).unwrap();
        // This machine has io_uring enabled (see NOTES); elsewhere Auto must still work.
        roundtrip(e).await;
    }

    #[test]
    fn engine_names_parse() {
        assert_eq!("psync".parse(), Ok(EngineChoice::Psync));
        assert_eq!("io_uring".parse(), Ok(EngineChoice::IoUring));
        assert!("aio".parse::<EngineChoice>().is_err());
    }

    /// A range is resident once read; one pushed out of the page cache is not (where the
    /// filesystem lets it go: tmpfs keeps it), and an unaligned offset is never answered yes.
    #[test]
    fn residency_follows_the_page_cache() {
        use std::io::Write;
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![7u8; 3 << 20]).unwrap();
        f.sync_all().unwrap();
        let f = File::open(&path).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        f.read_exact_at(&mut buf, 1 << 20).unwrap();
        assert!(resident(&f, 1 << 20, 1 << 20));
        assert!(!resident(&f, (1 << 20) + 1, 100));
        assert!(!resident(&f, 0, 0));
        let tmpfs = nix::sys::statfs::statfs(dir.path())
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
        if !tmpfs {
            nix::fcntl::posix_fadvise(
                &f,
                0,
                3 << 20,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            )
            .unwrap();
            assert!(
                !resident(&f, 2 << 20, 1 << 20),
                "dropped from the page cache"
            );
            assert!(
                !resident(&f, 1 << 20, 1 << 20),
                "dropped from the page cache"
            );
        }
    }
}
