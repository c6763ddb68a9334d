//! `alluxio cache-node --listen ADDR --cache-dir DIR --cache-size SIZE ...`: a peer cache
//! node. Daemons list it in `-o peers=`; it serves pages from its tiers and reads a page
//! it does not hold through from the stores it is given (`--ufs`, or the mount table of
//! `--metaserver`). Prints `listening on HOST:PORT` once it accepts connections, and stops
//! on SIGINT/SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use alluxio::config::{MetaserverConfig, UfsConfig, parse_mount_options, parse_size, read_token};

/// Arguments of `alluxio cache-node`.
#[derive(Args)]
pub struct CacheNodeArgs {
    /// Address to serve peers on, HOST:PORT (port 0 picks a free one).
    #[arg(long)]
    listen: String,
    /// Directory of the disk tier (created 0700).
    #[arg(long)]
    cache_dir: PathBuf,
    /// Disk tier capacity, e.g. 100GiB.
    #[arg(long)]
    cache_size: String,
    /// Memory tier capacity.
    #[arg(long, default_value = "256MiB")]
    mem_cache_size: String,
    /// A store it may read pages through from (repeatable); its options in -o.
    #[arg(long)]
    ufs: Vec<String>,
    /// Take the stores from this metaserver's mount table, and join its cluster
    /// membership (HOST:PORT).
    #[arg(long)]
    metaserver: Option<String>,
    /// The address daemons reach this node at, as registered with the metaserver
    /// [default: the address it listens on].
    #[arg(long)]
    advertise: Option<String>,
    /// Seconds the node stays a member without renewing its lease (it renews every
    /// second): a node that dies leaves the ring after this.
    #[arg(long, default_value_t = 5.0)]
    lease: f64,
    /// File holding the cluster token (the metaserver's too) [default: ALLUXIO_TOKEN].
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (HOST:PORT).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Store options for --ufs (endpoint=, region=, ufs.KEY=VALUE, ufs_timeout=, ...).
    #[arg(short = 'o', value_name = "OPT[,OPT...]")]
    options: Vec<String>,
}

/// Serves until signalled.
pub fn run(a: CacheNodeArgs) -> Result<()> {
    let token = read_token(a.token_file.as_deref(), "a cache node")?;
    let opts = parse_mount_options(&a.options)?;
    let mut stores = Vec::new();
    for u in &a.ufs {
        stores.push(UfsConfig::parse(u, &opts.ufs)?);
    }
    let ms = a
        .metaserver
        .as_deref()
        .map(|addr| MetaserverConfig::new(addr, a.token_file.as_deref()))
        .transpose()?;
    if let Some(ms) = &ms {
        for e in crate::mount_cmd::mounts_of(ms)? {
            stores.push(UfsConfig::parse(&e.uri, &e.options)?);
        }
    }
    if !(0.5..=3600.0).contains(&a.lease) {
        anyhow::bail!("--lease must be between 0.5 and 3600 seconds");
    }
    crate::mount_cmd::init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("alluxio-node")
        .enable_all()
        .build()
        .context("start runtime")?;
    alluxio::config::ensure_private_dir(&a.cache_dir, "cache directory")?;
    let mem = parse_size(&a.mem_cache_size).context("--mem-cache-size")?;
    let cfg = alluxio_cache_node::NodeConfig {
        cache_dir: a.cache_dir.clone(),
        cache_bytes: parse_size(&a.cache_size).context("--cache-size")?,
        mem_bytes: mem,
        inflight_pages: 64,
        stores,
        ufs_timeout: opts
            .ufs_timeout
            .unwrap_or(alluxio::ufs::DEFAULT_UFS_TIMEOUT),
    };
    let metrics = Arc::new(alluxio::metrics::Metrics::default());
    let node = alluxio_cache_node::Node::new(&cfg, metrics.clone()).map_err(anyhow::Error::msg)?;
    if let Some(addr) = a.metrics_listen {
        let listener = alluxio::prom::bind(addr, rt.handle())
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        let ops = Arc::new(alluxio::prom::OpHistograms::default());
        let m = metrics.clone();
        alluxio::prom::serve(listener, Arc::new(move || m.prometheus(&ops)), rt.handle());
    }
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&a.listen)
            .await
            .with_context(|| format!("cannot listen on {}", a.listen))?;
        let addr = listener.local_addr()?;
        let advertised = a.advertise.clone().unwrap_or_else(|| addr.to_string());
        let mut member = None;
        if let Some(ms) = &ms {
            let meta = alluxio::meta::remote::RemoteMeta::connect(&ms.addr, &ms.token)
                .await
                .map_err(anyhow::Error::msg)?;
            let meta: Arc<dyn alluxio::meta::MetaClient> = Arc::new(meta);
            let me = alluxio::peer::ring::Member {
                addr: advertised.clone(),
                weight: cfg.cache_bytes.max(1),
            };
            tokio::spawn(alluxio::peer::membership::follow(
                meta.clone(),
                None,
                Vec::new(),
                Some(me),
                std::time::Duration::from_secs_f64(a.lease),
                metrics.clone(),
            ));
            member = Some(meta);
        }
        // Installed before "listening" (see the metaserver's).
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("signal handler")?;
        let mut int = signal(SignalKind::interrupt()).context("signal handler")?;
        alluxio::mount::start_allocator_trim();
        println!("listening on {addr}");
        tracing::info!(%addr, stores = cfg.stores.len(), "cache node serving");
        let host: Arc<dyn alluxio::peer::server::PeerHost> = node;
        let serve =
            alluxio::peer::server::serve(listener, host, Arc::from(token.as_str()), metrics);
        tokio::select! {
            _ = serve => {}
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("cache node stopping");
        if let Some(meta) = member
            && let Err(e) = meta.leave_member(advertised).await
        {
            tracing::warn!(error = %e, "cannot leave the cluster membership; it expires with the lease");
        }
        anyhow::Ok(())
    })
}
