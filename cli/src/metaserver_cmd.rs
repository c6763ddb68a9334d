//! `alluxio metaserver --listen ADDR --data-dir DIR --token-file FILE`: serves the
//! namespace (a redb database in DIR) over gRPC to FUSE daemons and `alluxio fs` on other
//! hosts or mountpoints. Prints `listening on HOST:PORT` once it accepts connections (so
//! `--listen 127.0.0.1:0` works for scripts), and on SIGINT/SIGTERM stops accepting,
//! finishes the calls in flight and makes the namespace durable.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use alluxio::config::MetaserverConfig;
use alluxio::types::Ownership;
use alluxio_metaserver::rpc::Service;
use alluxio_metaserver::{Namespace, RedbStore};

/// Arguments of `alluxio metaserver`.
#[derive(Args)]
pub struct MetaserverArgs {
    /// Address to listen on, HOST:PORT (port 0 picks a free one).
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// Directory of the namespace database (created 0700).
    #[arg(long)]
    data_dir: PathBuf,
    /// File holding the shared token clients must present [default: ALLUXIO_TOKEN].
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (HOST:PORT).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
}

/// Serves until signalled.
pub fn run(a: MetaserverArgs) -> Result<()> {
    // The same token rules as the clients' (file or ALLUXIO_TOKEN, trimmed, non-empty).
    let token = MetaserverConfig::new("server", a.token_file.as_deref())?.token;
    alluxio::config::ensure_private_dir(&a.data_dir, "data directory")?;
    let db = a.data_dir.join("namespace.redb");
    let store =
        RedbStore::open(&db).with_context(|| format!("cannot open namespace {}", db.display()))?;
    let root = Ownership {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        file_mode: 0o644,
        dir_mode: 0o755,
    };
    let ns = Namespace::open(store, root, alluxio::types::now_ns())
        .with_context(|| format!("cannot open namespace {}", db.display()))?;
    let ops = std::sync::Arc::new(alluxio::prom::OpHistograms::default());
    let o = ops.clone();
    let service =
        Service::new(ns, &token).with_observer(std::sync::Arc::new(move |op, took, failed| {
            o.observe(op, took, failed)
        }));
    let namespace = service.namespace();
    crate::mount_cmd::init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("alluxio-meta")
        .enable_all()
        .build()
        .context("start runtime")?;
    if let Some(addr) = a.metrics_listen {
        let listener = alluxio::prom::bind(addr, rt.handle())
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        let ns = namespace.clone();
        let render = move || {
            let mut out = String::new();
            let inodes = ns.inodes_allocated().unwrap_or(0);
            alluxio::prom::sample(
                &mut out,
                "alluxio_meta_inodes_allocated",
                "gauge",
                "Inode numbers handed out so far.",
                "",
                inodes as f64,
            );
            ops.render(
                "alluxio_meta_rpc",
                "Latency of metaserver calls, by namespace operation.",
                &mut out,
            );
            out
        };
        alluxio::prom::serve(listener, std::sync::Arc::new(render), rt.handle());
    }
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("cannot listen on {}", a.listen))?;
        let addr = listener.local_addr()?;
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        // Installed before "listening": a signal sent as soon as a script sees that line
        // shuts down cleanly instead of killing with the default action.
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
        alluxio::mount::start_allocator_trim();
        println!("listening on {addr}");
        tracing::info!(%addr, data_dir = %a.data_dir.display(), "metaserver serving");
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("signal received; shutting down");
        };
        tonic::transport::Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .context("serve")?;
        namespace.sync().context("make the namespace durable")?;
        anyhow::Ok(())
    })
}
