//! Wiring of one embedded mount: validates the configuration, builds UFS, namespace, page
//! cache and vfs, and mounts the FUSE session. Every failure before the kernel mount is a
//! one-line [`MountError`] and leaves nothing mounted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use alluxio_metaserver::{Namespace, RedbStore};
use fuser::{Config, MountOption, Session, SessionACL};
use tokio::runtime::Handle as RtHandle;

use crate::config::{ConfigError, MountConfig, control_socket, ensure_private_dir};
use crate::control::{ControlServer, MountInfo};
use crate::fuse::Adapter;
use crate::meta::MetaClient;
use crate::meta::embedded::EmbeddedMeta;
use crate::meta::remote::RemoteMeta;
use crate::metrics::Metrics;
use crate::page_cache::{PageCache, PageCacheConfig};
use crate::types::now_ns;
use crate::ufs::Ufs;
use crate::vfs::{Vfs, VfsConfig};

/// Why a mount could not be set up. Each message is one line for the user.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// Invalid configuration or unusable local directory.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The UFS could not be configured or reached.
    #[error("{0}")]
    Ufs(String),
    /// The namespace database could not be opened.
    #[error("{0}")]
    Namespace(String),
    /// The cache could not be set up.
    #[error("{0}")]
    Cache(String),
    /// The kernel mount failed.
    #[error("cannot mount {path}: {source}")]
    Fuse {
        /// Mountpoint.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// A mounted filesystem, not yet serving requests.
pub struct Mounted {
    session: Session<Adapter>,
    vfs: Arc<Vfs>,
    rt: RtHandle,
    mountpoint: PathBuf,
    _control: ControlServer,
}

/// How long the UFS may take to answer the startup probe.
const UFS_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Checks the mountpoint and returns its canonical path. A mount of ours whose daemon
/// died (kill -9: every call answers ENOTCONN) is detached first, so mounting again on
/// the same path needs no `umount -l`; any other filesystem there is left alone.
pub fn check_mountpoint(p: &Path) -> Result<PathBuf, ConfigError> {
    let md = match std::fs::metadata(p) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            let dead = p
                .parent()
                .and_then(|d| d.canonicalize().ok())
                .zip(p.file_name())
                .map(|(d, n)| d.join(n))
                .filter(|c| mount_type(c).as_deref() == Some("fuse.alluxio"));
            match dead {
                Some(c) => {
                    nix::mount::umount2(&c, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
                        ConfigError(format!(
                            "mountpoint {}: a dead mount is there and cannot be detached: {e}",
                            p.display()
                        ))
                    })?;
                    tracing::info!(mountpoint = %c.display(), "detached the dead mount a killed daemon left");
                    std::fs::metadata(p)
                }
                None => Err(e),
            }
        }
        r => r,
    }
    .map_err(|e| ConfigError(format!("mountpoint {}: {e}", p.display())))?;
    if !md.is_dir() {
        return Err(ConfigError(format!(
            "mountpoint {} is not a directory",
            p.display()
        )));
    }
    p.canonicalize()
        .map_err(|e| ConfigError(format!("mountpoint {}: {e}", p.display())))
}

/// Builds every component and mounts. Must be called from outside the runtime `rt`.
pub fn mount(cfg: &MountConfig, rt: &RtHandle) -> Result<Mounted, MountError> {
    let mountpoint = check_mountpoint(&cfg.mountpoint)?;
    ensure_private_dir(&cfg.state_dir, "state directory")?;
    ensure_private_dir(&cfg.cache_dir, "cache directory")?;
    let staging_dir = cfg.cache_dir.join("staging");
    ensure_private_dir(&staging_dir, "staging directory")?;
    // The peer port first: a port in use fails the mount before anything is set up.
    let peer_listener = match cfg.cluster.as_ref().and_then(|c| c.serve.as_ref()) {
        Some(addr) => Some(
            {
                let _g = rt.enter();
                std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .and_then(tokio::net::TcpListener::from_std)
            }
            .map_err(|e| {
                MountError::Config(ConfigError(format!("cannot serve peers on {addr}: {e}")))
            })?,
        ),
        None => None,
    };

    let metrics = Arc::new(Metrics::default());
    let mut ufs = Ufs::new(&cfg.ufs, metrics.clone()).map_err(|e| {
        MountError::Ufs(format!(
            "cannot configure UFS {} ({}): {e}",
            cfg.ufs.uri, cfg.ufs.scheme
        ))
    })?;
    ufs.set_upload_shape(cfg.upload);
    ufs.set_timeout(cfg.ufs_timeout);
    let ufs = Arc::new(ufs);
    match rt.block_on(async { tokio::time::timeout(UFS_PROBE_TIMEOUT, ufs.check()).await }) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(MountError::Ufs(format!(
                "cannot reach UFS {} ({}): {e}",
                cfg.ufs.uri, cfg.ufs.scheme
            )));
        }
        Err(_) => {
            return Err(MountError::Ufs(format!(
                "cannot reach UFS {} ({}): no answer within {}s",
                cfg.ufs.uri,
                cfg.ufs.scheme,
                UFS_PROBE_TIMEOUT.as_secs()
            )));
        }
    }

    let meta: Arc<dyn MetaClient> = match &cfg.metaserver {
        Some(ms) => {
            let connect = RemoteMeta::connect(&ms.addr, &ms.token);
            let remote = rt
                .block_on(async { tokio::time::timeout(UFS_PROBE_TIMEOUT, connect).await })
                .map_err(|_| {
                    MountError::Namespace(format!(
                        "metaserver {}: no answer within {}s",
                        ms.addr,
                        UFS_PROBE_TIMEOUT.as_secs()
                    ))
                })?
                .map_err(MountError::Namespace)?;
            Arc::new(remote)
        }
        None => {
            let db_path = cfg.state_dir.join("namespace.redb");
            let store = RedbStore::open(&db_path).map_err(|e| {
                MountError::Namespace(format!("cannot open namespace {}: {e}", db_path.display()))
            })?;
            let ns = Namespace::open(store, cfg.ownership, now_ns()).map_err(|e| {
                MountError::Namespace(format!("cannot open namespace {}: {e}", db_path.display()))
            })?;
            Arc::new(EmbeddedMeta::new(ns))
        }
    };

    let cache = Arc::new(
        PageCache::new(
            &PageCacheConfig {
                mem_bytes: cfg.mem_cache_bytes,
                disk_bytes: cfg.disk_cache_bytes,
                disk_dir: cfg.cache_dir.join("pages"),
                io_engine: cfg.cache_io,
                disk_free_ratio: cfg.cache_free_ratio,
            },
            metrics.clone(),
        )
        .map_err(|e| MountError::Cache(format!("cannot set up cache: {e}")))?,
    );
    // The cluster: one more page source, before the store (see `peer`). With a
    // metaserver, its membership is followed; a static list (`-o peers=`) adds to it.
    let cluster = cfg.cluster.clone().or_else(|| {
        cfg.metaserver
            .as_ref()
            .map(|ms| crate::config::ClusterConfig {
                serve: None,
                peers: Vec::new(),
                token: ms.token.clone(),
                timeout: crate::peer::client::DEFAULT_PEER_TIMEOUT,
            })
    });
    let mut extra: Vec<Arc<dyn crate::fetch::PageSource>> = Vec::new();
    let mut peers = None;
    if let Some(c) = &cluster {
        // Listed members count as 1 GiB of cache each; members from the metaserver by
        // their capacity. This daemon serves with its disk tier's capacity.
        let member = |addr: &String, weight| crate::peer::ring::Member {
            addr: addr.clone(),
            weight,
        };
        let statics: Vec<_> = c.peers.iter().map(|a| member(a, 1 << 30)).collect();
        let weight = if cfg.metaserver.is_some() {
            cfg.disk_cache_bytes.max(1)
        } else {
            1 << 30
        };
        let me = c.serve.as_ref().map(|a| member(a, weight));
        let mut members = statics.clone();
        members.extend(me.clone());
        let pc = crate::peer::client::PeerConfig {
            token: c.token.clone(),
            timeout: c.timeout,
            self_addr: c.serve.clone(),
            tries: 2,
        };
        let p = Arc::new(crate::peer::client::Peers::new(
            members,
            pc,
            metrics.clone(),
        ));
        extra.push(p.clone());
        peers = Some((p, statics, me));
    }
    if let Some((p, statics, me)) = &peers
        && cfg.metaserver.is_some()
    {
        rt.spawn(crate::peer::membership::follow(
            meta.clone(),
            Some(p.clone()),
            statics.clone(),
            me.clone(),
            crate::peer::membership::DEFAULT_LEASE,
            metrics.clone(),
        ));
    }
    let vfs = Vfs::with_sources(
        meta,
        ufs,
        cache,
        metrics.clone(),
        VfsConfig {
            ownership: cfg.ownership,
            prefetch_pages: cfg.prefetch_pages,
            prefetch_gets: cfg.prefetch_gets,
            inflight_pages: cfg.inflight_pages,
            staging_dir,
            read_only: cfg.fuse.read_only,
            write_type: cfg.write_type,
            journal_dir: cfg.cache_dir.join("journal"),
            rename_log: Some(cfg.cache_dir.join("renames.log")),
            upload_delay: cfg.upload_delay,
            last_close_retry: crate::vfs::LAST_CLOSE_RETRY,
            metadata_sync: cfg.metadata_sync,
            dir_prefetch_bytes: cfg.dir_prefetch_bytes,
        },
        rt.clone(),
        extra,
    )
    .map_err(|e| MountError::Cache(format!("cannot open the write journal: {e}")))?;
    if let Some((p, _, _)) = &peers {
        vfs.set_cluster(p.clone());
    }
    if let Some(c) = &cluster
        && let Some(addr) = &c.serve
        && let Some(listener) = peer_listener
    {
        let host: Arc<dyn crate::peer::server::PeerHost> = vfs.clone();
        rt.spawn(crate::peer::server::serve(
            listener,
            host,
            Arc::from(c.token.as_str()),
            metrics.clone(),
        ));
        tracing::info!(%addr, peers = c.peers.len(), "serving pages to peers");
    }

    let ops = Arc::new(crate::prom::OpHistograms::default());
    if let Some(addr) = cfg.metrics_listen {
        let listener = crate::prom::bind(addr, rt).map_err(|e| {
            MountError::Config(ConfigError(format!("cannot serve metrics on {addr}: {e}")))
        })?;
        let (m, o) = (metrics.clone(), ops.clone());
        crate::prom::serve(listener, Arc::new(move || m.prometheus(&o)), rt);
        tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    }
    let adapter = Adapter::new(vfs.clone(), rt.clone(), &cfg.fuse, ops);
    let mut fc = Config::default();
    fc.mount_options = vec![
        MountOption::FSName(cfg.ufs.uri.replace(',', "_")),
        MountOption::Subtype("alluxio".into()),
        MountOption::DefaultPermissions,
        if cfg.fuse.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
    fc.acl = if cfg.fuse.allow_other {
        SessionACL::All
    } else if cfg.fuse.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    fc.n_threads = Some(cfg.fuse.threads);
    fc.clone_fd = true;

    let control = crate::control::serve(
        control_socket(&cfg.run_dir, &mountpoint),
        metrics,
        MountInfo {
            mountpoint: mountpoint.clone(),
            ufs: cfg.ufs.uri.clone(),
            state_dir: cfg.state_dir.clone(),
            cache_dir: cfg.cache_dir.clone(),
        },
        Some(vfs.clone()),
        rt,
    )
    .map_err(|e| {
        MountError::Config(ConfigError(format!(
            "cannot create control socket in {}: {e}",
            cfg.run_dir.display()
        )))
    })?;

    let session = if nix::unistd::geteuid().is_root() {
        let fd = kernel_mount(&mountpoint, &cfg.ufs.uri, cfg.fuse.read_only, fc.acl).map_err(
            |source| MountError::Fuse {
                path: mountpoint.clone(),
                source,
            },
        )?;
        Session::from_fd(adapter, fd, fc.acl, fc).map_err(|source| {
            let _ = nix::mount::umount2(&mountpoint, nix::mount::MntFlags::MNT_DETACH);
            MountError::Fuse {
                path: mountpoint.clone(),
                source,
            }
        })?
    } else {
        // Unprivileged: fuser goes through fusermount3, which honours the subtype.
        Session::new(adapter, &mountpoint, &fc).map_err(|source| MountError::Fuse {
            path: mountpoint.clone(),
            source,
        })?
    };
    if cfg.fuse.readahead_kb > 0 {
        set_readahead(&mountpoint, cfg.fuse.readahead_kb);
    }
    // The namespace's mounted stores, before the first request (then followed).
    if let Err(e) = rt.block_on(vfs.refresh_mounts()) {
        tracing::warn!(error = %e, "cannot read the mount table; only the root store is mounted");
    }
    // Renames a crash cut between the store and the namespace, before anything is served.
    rt.block_on(vfs.finish_renames());
    vfs.start_background();
    tracing::info!(mountpoint = %mountpoint.display(), ufs = %cfg.ufs.uri, write_type = ?cfg.write_type, "mounted");
    Ok(Mounted {
        session,
        vfs,
        rt: rt.clone(),
        mountpoint,
        _control: control,
    })
}

impl Mounted {
    /// The canonical mountpoint.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The vfs (for counters).
    pub fn vfs(&self) -> &Arc<Vfs> {
        &self.vfs
    }

    /// Serves requests on this thread until the filesystem is unmounted.
    pub fn run(self) -> std::io::Result<()> {
        let Mounted {
            session,
            _control,
            vfs,
            rt,
            ..
        } = self;
        let r = session.run();
        drop(_control);
        // Unmount sends DESTROY, which waits for the commits after a last close; a
        // connection the kernel tore down (below) does not, so they are waited for here
        // (at once when DESTROY did).
        rt.block_on(vfs.shutdown(crate::vfs::UNMOUNT_COMMIT_WAIT));
        match r {
            // The kernel ended the connection. A read of the device answers ENODEV then
            // (fuser takes it as the end) or, seen on Linux 6.18 when the last close of a
            // detached mount (SIGTERM with files open) tears the connection down while a
            // RELEASE is in flight, ECONNABORTED: the same end, not a failure. Every
            // FLUSH, which commits under each write type, was answered before that close
            // returned.
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {
                tracing::info!("FUSE connection ended by the kernel: {e}");
                Ok(())
            }
            r => r,
        }
    }

    /// Serves requests on a background thread; dropping or `umount_and_join` ends it.
    pub fn spawn(self) -> std::io::Result<(fuser::BackgroundSession, ControlServer)> {
        let Mounted {
            session, _control, ..
        } = self;
        Ok((session.spawn()?, _control))
    }
}

/// Mounts the FUSE device on `mountpoint` with type `fuse.alluxio` (mount(2) directly, as
/// root) and returns the device fd for the session. The kernel checks permissions
/// (`default_permissions`); `nosuid,nodev` as for every FUSE mount.
fn kernel_mount(
    mountpoint: &Path,
    source: &str,
    read_only: bool,
    acl: SessionACL,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::{OFlag, open};
    use nix::mount::{MsFlags, mount};
    use std::os::fd::AsRawFd;
    let fd = open(
        "/dev/fuse",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let mut opts = format!(
        "fd={},rootmode=40000,user_id={},group_id={},default_permissions",
        fd.as_raw_fd(),
        nix::unistd::getuid(),
        nix::unistd::getgid()
    );
    if acl != SessionACL::Owner {
        opts.push_str(",allow_other");
    }
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    let source = source.replace([',', ' '], "_");
    mount(
        Some(source.as_str()),
        mountpoint,
        Some("fuse.alluxio"),
        flags,
        Some(opts.as_str()),
    )?;
    Ok(fd)
}

/// Raises the kernel readahead of the mount through its bdi (FUSE starts at 128 KiB; the
/// session offers up to 1 MiB per request). The device number comes from
/// /proc/self/mountinfo: stat'ing the mount root here would wait for the session, which is
/// not serving yet. Best effort: without the permission, the kernel default stays.
fn set_readahead(mountpoint: &Path, kb: u32) {
    let want = mountpoint.to_string_lossy().replace(' ', "\\040");
    let dev = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|m| {
            m.lines().rev().find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(4) == Some(&want.as_str()))
                    .then(|| f.get(2).map(|d| d.to_string()))
                    .flatten()
            })
        });
    let Some(dev) = dev else {
        tracing::warn!(mountpoint = %mountpoint.display(), "mount not found in mountinfo; readahead unchanged");
        return;
    };
    let path = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    match std::fs::write(&path, kb.to_string()) {
        Ok(()) => tracing::info!(readahead_kb = kb, bdi = %dev, "kernel readahead set"),
        Err(e) => {
            tracing::warn!(error = %e, path, "cannot set kernel readahead; keeping the default")
        }
    }
}

/// Unmounts `path` if it is a FUSE mount: a plain unmount first, a lazy one if the mount
/// is busy, and `fusermount3 -u` when not privileged.
pub fn unmount(path: &Path) -> Result<(), String> {
    use nix::mount::{MntFlags, umount2};
    let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    if !is_fuse_mount(&canon) {
        return Err(format!("{} is not a FUSE mount", path.display()));
    }
    match umount2(&canon, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => umount2(&canon, MntFlags::MNT_DETACH)
            .map_err(|e| format!("cannot unmount {}: {e}", path.display())),
        Err(nix::errno::Errno::EPERM) => {
            let st = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg(&canon)
                .status()
                .map_err(|e| format!("cannot run fusermount3: {e}"))?;
            if st.success() {
                Ok(())
            } else {
                Err(format!("fusermount3 -u {} failed", path.display()))
            }
        }
        Err(e) => Err(format!("cannot unmount {}: {e}", path.display())),
    }
}

/// Whether `/proc/mounts` lists a FUSE filesystem at `path` (canonical).
pub fn is_fuse_mount(path: &Path) -> bool {
    mount_type(path).is_some_and(|t| t.starts_with("fuse"))
}

/// The entries of `/proc/mounts` as (mountpoint, filesystem type), in mount order, with
/// the mountpoint's escapes (`\040` for a space) undone.
fn proc_mounts() -> Vec<(PathBuf, String)> {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return Vec::new();
    };
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let _src = f.next()?;
            let mp = f.next()?.replace("\\040", " ");
            Some((PathBuf::from(mp), f.next()?.to_string()))
        })
        .collect()
}

/// The filesystem type `/proc/mounts` shows for `path` (last matching entry).
pub fn mount_type(path: &Path) -> Option<String> {
    proc_mounts()
        .into_iter()
        .rev()
        .find_map(|(mp, ty)| (mp == path).then_some(ty))
}

/// The mountpoints of every `fuse.alluxio` mount on this host.
pub fn alluxio_mounts() -> Vec<PathBuf> {
    proc_mounts()
        .into_iter()
        .filter(|(_, ty)| ty == "fuse.alluxio")
        .map(|(mp, _)| mp)
        .collect()
}

/// Caps glibc's malloc arenas at 2, unless `MALLOC_ARENA_MAX` says otherwise. Call before
/// any thread starts.
///
/// Why: glibc gives busy threads arenas of their own, up to 8 per core, and keeps what an
/// arena once held. The daemon's session threads, runtime workers and blocking pool pass
/// 1 MiB page buffers around, so each arena grows to a share of the pages in flight and
/// stays there. Measured with `scripts/mem-budget.py` (16 readers over 2 GiB,
/// `--mem-budget 256MiB`, passthrough off, two alternated runs each): peak RSS 256-431
/// MiB with glibc's default of 16 arenas on 2 cores, 199-226 MiB with 2, 164-173 with one;
/// throughput no lower with 2 (cold sequential 1,146 and 1,071 MiB/s against 818 and 991,
/// warm 1,252 and 1,364 against 1,059 and 1,229).
pub fn bound_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before other threads.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// How often a long-running process hands the allocator's free memory back to the system.
pub const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts a thread that hands glibc's free memory back to the system every
/// [`TRIM_INTERVAL`] (`malloc_trim(0)`), for the processes that run for long: the FUSE
/// daemon, the metaserver and the cache node. Once per process; elsewhere a no-op.
///
/// Why: glibc returns a free chunk inside an arena's heap to the system only when it sits
/// at the top of that heap. The daemon frees page buffers, upload parts and staging state
/// in every order, so the pages of freed chunks stay resident: RSS tracks the highest
/// the heap ever got, each new coincidence of buffers in flight raises it, and it never
/// comes down. Measured with `scripts/soak.py` (16 minutes, budget 256 MiB): RSS rose
/// from 199 to 266 MiB; one `malloc_trim(0)` at the end brought it to 185 MiB. The walk
/// takes milliseconds every ten seconds, and a buffer allocated where pages were handed
/// back costs their page faults again (a fraction of a percent of one core at a gigabyte
/// a second).
pub fn start_allocator_trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static STARTED: std::sync::Once = std::sync::Once::new();
        STARTED.call_once(|| {
            let spawned = std::thread::Builder::new()
                .name("alluxio-trim".into())
                .spawn(|| {
                    loop {
                        std::thread::sleep(TRIM_INTERVAL);
                        let t0 = std::time::Instant::now();
                        // SAFETY: malloc_trim only walks the allocator's own free lists,
                        // under its own locks.
                        let released = unsafe { libc::malloc_trim(0) };
                        tracing::trace!(
                            released = released != 0,
                            micros = t0.elapsed().as_micros() as u64,
                            "malloc_trim"
                        );
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the allocator trim thread; RSS may stay at its highest");
            }
        });
    }
}
