//! `alluxio fuse mount`: arguments → `MountConfig` → mount → serve until unmounted or
//! signalled (SIGINT/SIGTERM unmount cleanly).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use alluxio::config::{
    MemoryPlan, MetaserverConfig, MountConfig, UfsConfig, default_home, default_run_dir,
    parse_mount_options, parse_size, path_id,
};
use alluxio::types::Ownership;

/// Arguments of `alluxio fuse mount`.
#[derive(Args)]
pub struct MountArgs {
    /// Directory to mount on.
    mountpoint: PathBuf,
    /// The store: /local/dir, file:///dir, s3://bucket/prefix, memory://, or any OpenDAL URI.
    /// With --metaserver it may be left out: the root store of its mount table is used.
    #[arg(long, env = "ALLUXIO_UFS")]
    ufs: Option<String>,
    /// Take the namespace from this metaserver (HOST:PORT) instead of a local database.
    #[arg(long, env = "ALLUXIO_METASERVER")]
    metaserver: Option<String>,
    /// File holding the metaserver's token [default: ALLUXIO_TOKEN].
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Namespace database directory [default: per-mount under ALLUXIO_HOME].
    #[arg(long, env = "ALLUXIO_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Disk cache and write staging directory [default: per-mount under ALLUXIO_HOME].
    #[arg(long, env = "ALLUXIO_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Disk cache capacity, e.g. 10GiB.
    #[arg(long, default_value = "4GiB", env = "ALLUXIO_CACHE_SIZE")]
    cache_size: String,
    /// Memory budget of the daemon, e.g. 2GiB: the memory tier, pages being fetched and
    /// per-thread buffers together.
    #[arg(long, default_value = "1GiB", env = "ALLUXIO_MEM_BUDGET")]
    mem_budget: String,
    /// Pages (1 MiB) fetched ahead of a sequential reader.
    #[arg(long, default_value_t = 8)]
    prefetch_pages: u64,
    /// Read-ahead GETs in flight at once (a reader's own misses are not held back).
    #[arg(long, default_value_t = 16)]
    prefetch_gets: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (HOST:PORT).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Serve this daemon's cache to peer daemons on ADDR (HOST:PORT, the address peers
    /// list in -o peers=); the cluster token comes from --token-file or ALLUXIO_TOKEN.
    #[arg(long, value_name = "ADDR")]
    serve_peers: Option<String>,
    /// Check the arguments and the mountpoint, then exit without mounting.
    #[arg(long)]
    check: bool,
    /// Mount options, comma-separated: uid=, gid=, file_mode=, dir_mode=, endpoint=,
    /// region=, access_key_id=, secret_access_key=, ufs.KEY=VALUE, allow_other, ro, ...
    #[arg(short = 'o', value_name = "OPT[,OPT...]")]
    options: Vec<String>,
}

/// A metaserver's mount table.
pub(crate) fn mounts_of(ms: &MetaserverConfig) -> Result<Vec<alluxio_metaserver::MountEntry>> {
    use alluxio::meta::MetaClient;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let m = alluxio::meta::remote::RemoteMeta::connect(&ms.addr, &ms.token)
            .await
            .map_err(anyhow::Error::msg)?;
        anyhow::Ok(m.mounts().await?)
    })
}

/// The root store recorded in a metaserver's mount table (`alluxio fs mount / URI`).
fn root_store_of(ms: &MetaserverConfig) -> Result<alluxio_metaserver::MountEntry> {
    mounts_of(ms)?
        .into_iter().find(|e| e.path == "/").with_context(|| {
        format!(
            "metaserver {} has no root store: give --ufs, or run `alluxio fs --metaserver {} mount / URI`",
            ms.addr, ms.addr
        )
    })
}

fn config(a: MountArgs) -> Result<MountConfig> {
    let opts = parse_mount_options(&a.options)?;
    let metaserver = a
        .metaserver
        .as_deref()
        .map(|addr| MetaserverConfig::new(addr, a.token_file.as_deref()))
        .transpose()?;
    let (uri, ufs) = match (&a.ufs, &metaserver) {
        (Some(u), _) => (u.clone(), UfsConfig::parse(u, &opts.ufs)?),
        (None, Some(ms)) => {
            let root = root_store_of(ms)?;
            // The table's options, then this daemon's -o store options over them.
            let mut o = root.options.clone();
            o.extend(opts.ufs.clone());
            (root.uri.clone(), UfsConfig::parse(&root.uri, &o)?)
        }
        (None, None) => anyhow::bail!("--ufs URI is required (or --metaserver with a root store)"),
    };
    let mp = alluxio::mount::check_mountpoint(&a.mountpoint)?;
    let per_mount = default_home().join("mounts").join(path_id(&[
        mp.as_os_str().as_encoded_bytes(),
        uri.as_bytes(),
    ]));
    let disk = parse_size(&a.cache_size).context("--cache-size")?;
    let budget = parse_size(&a.mem_budget).context("--mem-budget")?;
    let upload = if opts.upload_concurrency_set {
        opts.upload
    } else {
        opts.upload.for_budget(budget)
    };
    let plan =
        MemoryPlan::from_budget(budget, opts.fuse.threads, &upload).context("--mem-budget")?;
    let cache_free_ratio = opts.cache_free_ratio();
    let cluster = if a.serve_peers.is_some() || !opts.peers.is_empty() {
        Some(alluxio::config::ClusterConfig {
            serve: a.serve_peers.clone(),
            peers: opts.peers.clone(),
            token: alluxio::config::read_token(a.token_file.as_deref(), "the peer cluster")?,
            timeout: opts
                .peer_timeout
                .unwrap_or(alluxio::peer::client::DEFAULT_PEER_TIMEOUT),
        })
    } else {
        None
    };
    let euid = nix::unistd::geteuid().as_raw();
    let egid = nix::unistd::getegid().as_raw();
    Ok(MountConfig {
        mountpoint: mp,
        ufs,
        state_dir: a.state_dir.unwrap_or_else(|| per_mount.join("state")),
        metaserver,
        cache_dir: a.cache_dir.unwrap_or_else(|| per_mount.join("cache")),
        disk_cache_bytes: disk,
        mem_cache_bytes: plan.tier_bytes,
        prefetch_pages: a.prefetch_pages.min(256),
        prefetch_gets: a.prefetch_gets.clamp(1, 1024),
        inflight_pages: plan.inflight_pages,
        ownership: Ownership {
            uid: opts.uid.unwrap_or(euid),
            gid: opts.gid.unwrap_or(egid),
            file_mode: opts.file_mode.unwrap_or(0o644),
            dir_mode: opts.dir_mode.unwrap_or(0o755),
        },
        fuse: opts.fuse,
        run_dir: default_run_dir(),
        write_type: opts.write_type,
        upload_delay: opts.upload_delay,
        cache_io: opts.cache_io,
        cache_free_ratio,
        metadata_sync: opts.metadata_sync,
        dir_prefetch_bytes: opts
            .dir_prefetch
            .unwrap_or(alluxio::config::DEFAULT_DIR_PREFETCH),
        ufs_timeout: opts
            .ufs_timeout
            .unwrap_or(alluxio::ufs::DEFAULT_UFS_TIMEOUT),
        metrics_listen: a.metrics_listen,
        cluster,
        upload: alluxio::config::UploadShape {
            slots: plan.upload_slots,
            ..upload
        },
    })
}

/// Default log filter. OpenDAL's per-attempt retry warnings are left out: retries are
/// counted in `ufs_errors`, and a request that fails after its retries is logged once where
/// it is handled. `ALLUXIO_LOG=opendal=warn` brings them back.
const DEFAULT_LOG: &str =
    "warn,opendal=error,hdfs_native=error,alluxio=info,alluxio_metaserver=info";

pub(crate) fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("ALLUXIO_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Mounts and serves until unmounted.
pub fn run(args: MountArgs) -> Result<()> {
    let check = args.check;
    let cfg = config(args)?;
    if check {
        return Ok(());
    }
    init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .thread_name("alluxio-rt")
        .enable_all()
        .build()
        .context("start runtime")?;
    // The handlers are installed before the mount appears: a signal sent as soon as the
    // mount is visible must unmount, not kill the daemon with the default action.
    let (mut term, mut int) = {
        use tokio::signal::unix::{SignalKind, signal};
        let _rt = rt.enter();
        (
            signal(SignalKind::terminate()).context("install the SIGTERM handler")?,
            signal(SignalKind::interrupt()).context("install the SIGINT handler")?,
        )
    };
    let mounted = alluxio::mount::mount(&cfg, rt.handle())?;
    alluxio::mount::start_allocator_trim();
    let mp = mounted.mountpoint().to_path_buf();
    rt.spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!(mountpoint = %mp.display(), "signal received; unmounting");
        if let Err(e) = alluxio::mount::unmount(&mp) {
            tracing::error!("{e}");
        }
    });
    mounted.run().context("serve FUSE requests")?;
    tracing::info!("unmounted; exiting");
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    Ok(())
}
