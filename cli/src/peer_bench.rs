//! `alluxio peer-bench`: the cluster's page transfer, measured with the daemon's own peer
//! client and nothing else (no FUSE, no local cache), against the physical limit of the
//! same loopback: a plain TCP stream of 1 MiB buffers between two processes.
//!
//! - `--tcp-serve ADDR` serves the plain stream (1 MiB writes for ever, per connection).
//! - `--tcp ADDR` reads `--bytes` from it over `--parallel` connections.
//! - `--grpc-serve ADDR` and `--grpc ADDR`: the same over tonic streaming
//!   (`grpc_bench`), the transport the peer protocol was chosen against.
//! - `--peers A,B,...` reads object KEY of `--ufs` whole, page by page, from the owners of
//!   its pages on the ring of those members, `--parallel` pages in flight (`--rounds`
//!   times: the first warms the nodes from the store, the others measure warm reads;
//!   with `--warm` every round is a warm one).
//!
//! - `--membership ADDR`: the metaserver serving a cluster's membership
//!   (`membership_bench`).
//!
//! Each measurement prints one JSON object: bytes, seconds, MB/s and this process's CPU
//! seconds per GiB (the node's own CPU is measured by the script from /proc).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use alluxio::config::{UfsConfig, parse_mount_options, parse_size, read_token};
use alluxio::fetch::{Fetched, ObjectRead, PageRequest, PageSource};
use alluxio::metrics::Metrics;
use alluxio::object::PageKey;
use alluxio::peer::client::{PeerConfig, Peers};
use alluxio::peer::ring::Member;
use alluxio::types::{InodeNo, PAGE_SIZE};
use alluxio::ufs::Ufs;

use crate::ufs_bench::{cpu_seconds, report};

/// Arguments of `alluxio peer-bench`.
#[derive(Args)]
pub struct PeerBenchArgs {
    /// Serve a plain TCP stream of 1 MiB buffers on ADDR (the physical baseline).
    #[arg(long, value_name = "ADDR")]
    tcp_serve: Option<String>,
    /// Read `--bytes` from a `--tcp-serve` stream at ADDR.
    #[arg(long, value_name = "ADDR")]
    tcp: Option<String>,
    /// Serve a tonic (gRPC) stream of 1 MiB messages on ADDR (the alternative transport).
    #[arg(long, value_name = "ADDR")]
    grpc_serve: Option<String>,
    /// Read `--bytes` from a `--grpc-serve` stream at ADDR.
    #[arg(long, value_name = "ADDR")]
    grpc: Option<String>,
    /// Measure the metaserver at ADDR serving a membership of `--members` nodes: lease
    /// renewals and membership reads, `--parallel` clients, for `--seconds`.
    #[arg(long, value_name = "ADDR")]
    membership: Option<String>,
    /// Members registered for `--membership`.
    #[arg(long, default_value_t = 100)]
    members: u64,
    /// How long `--membership` runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Instead of peers, read KEY from a disk tier in DIR (filled from the store first):
    /// the daemon's own disk-tier read, `--rounds` times (`disk-tier`).
    #[arg(long, value_name = "DIR")]
    disk_tier: Option<std::path::PathBuf>,
    /// Compute, on the real ring, how the run length spreads one file's pages over 3, 10
    /// and 100 equal members (no network): the hot-file parallelism of each choice.
    #[arg(long)]
    ring_spread: bool,
    /// The nodes are warm already: every round counts as warm (`peers-warm`).
    #[arg(long)]
    warm: bool,
    /// Bytes to read from the plain stream.
    #[arg(long, default_value = "4GiB")]
    bytes: String,
    /// Read KEY from these cache nodes (HOST:PORT,...).
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// The store KEY is in (its page ids name it).
    #[arg(long)]
    ufs: Option<String>,
    /// Store options.
    #[arg(short = 'o', value_name = "OPT[,OPT...]")]
    options: Vec<String>,
    /// The object, relative to the store's root.
    #[arg(long)]
    key: Option<String>,
    /// File holding the cluster token [default: ALLUXIO_TOKEN].
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// Pages (or plain connections) in flight.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    /// Whole reads of KEY; the first warms the nodes.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// Runs the measurement.
pub fn run(a: PeerBenchArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start runtime")?;
    let parallel = a.parallel.clamp(1, 256);
    if let Some(addr) = &a.tcp_serve {
        return rt.block_on(tcp_serve(addr));
    }
    if let Some(addr) = &a.tcp {
        let total = parse_size(&a.bytes).context("--bytes")?;
        return rt.block_on(tcp_read(addr, total, parallel));
    }
    if a.ring_spread {
        ring_spread();
        return Ok(());
    }
    if let Some(addr) = &a.membership {
        let token = read_token(a.token_file.as_deref(), "the metaserver")?;
        return rt.block_on(crate::membership_bench::run(
            addr, &token, a.members, parallel, a.seconds,
        ));
    }
    if let Some(addr) = &a.grpc_serve {
        return rt.block_on(crate::grpc_bench::serve(addr));
    }
    if let Some(addr) = &a.grpc {
        let total = parse_size(&a.bytes).context("--bytes")?;
        return rt.block_on(crate::grpc_bench::read(addr, total, parallel));
    }
    let (Some(ufs), Some(key)) = (&a.ufs, &a.key) else {
        bail!("give --tcp-serve, --tcp, or --peers with --ufs and --key");
    };
    let opts = parse_mount_options(&a.options)?;
    let metrics = Arc::new(Metrics::default());
    let store = Ufs::new(&UfsConfig::parse(ufs, &opts.ufs)?, metrics.clone())?;
    if let Some(dir) = &a.disk_tier {
        return rt.block_on(disk_tier(dir, &store, key, parallel, a.rounds, metrics));
    }
    if a.peers.is_empty() {
        bail!("--peers is empty");
    }
    let cfg = PeerConfig {
        token: read_token(a.token_file.as_deref(), "the peer cluster")?,
        timeout: std::time::Duration::from_secs(30),
        self_addr: None,
        tries: 1,
    };
    let members = a
        .peers
        .iter()
        .map(|p| Member {
            addr: p.clone(),
            weight: 1,
        })
        .collect();
    let peers = Arc::new(Peers::new(members, cfg, metrics.clone()));
    rt.block_on(async {
        let info = store.stat(key).await?;
        let object = Arc::new(ObjectRead {
            id: store.object_id(key, &info.version),
            size: info.size,
            store: None,
            owner: InodeNo(0),
            for_peer: false,
        });
        for round in 0..a.rounds.max(1) {
            let (t0, c0) = (Instant::now(), cpu_seconds());
            let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let mut tasks = Vec::new();
            for _ in 0..parallel {
                let (peers, object, next) = (peers.clone(), object.clone(), next.clone());
                tasks.push(tokio::spawn(async move {
                    let mut got = 0u64;
                    loop {
                        let idx = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if idx >= object.pages() {
                            return anyhow::Ok(got);
                        }
                        let key = PageKey::new(&object.id, idx);
                        let req = PageRequest {
                            object: &object,
                            key: &key,
                            read_ahead: false,
                        };
                        match peers.fetch(&req).await {
                            Fetched::Hit(b) => got += b.len() as u64,
                            _ => bail!("page {idx}: no peer answered"),
                        }
                    }
                }));
            }
            let mut bytes = 0;
            for t in tasks {
                bytes += t.await??;
            }
            let what = if round == 0 && !a.warm {
                "peers-first"
            } else {
                "peers-warm"
            };
            report(what, bytes, t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
        }
        anyhow::Ok(())
    })
}

/// For run lengths 1 to 16 pages, members 3, 10 and 100 (equal weights) and files of
/// 64 MiB, 1 GiB and 10 GiB (averaged over 20 files): the pages on the busiest member
/// over the mean, and the file's pages over the busiest member's (how many members'
/// worth of bandwidth readers of the whole file get at once). One JSON line each.
fn ring_spread() {
    use alluxio::peer::ring::Ring;
    for members in [3usize, 10, 100] {
        let ring = Ring::new((0..members).map(|i| Member {
            addr: format!("10.0.{}.{}:7080", i / 256, i % 256),
            weight: 1,
        }));
        let index: std::collections::HashMap<&str, usize> = ring
            .members()
            .iter()
            .enumerate()
            .map(|(i, m)| (m.addr.as_str(), i))
            .collect();
        for pages in [64u64, 1024, 10240] {
            for run in [1u64, 2, 4, 8, 16] {
                let (mut over_mean, mut parallel) = (0.0, 0.0);
                let files = 20;
                for f in 0..files {
                    let id = alluxio::object::ObjectId::new(
                        Arc::from("s3:bucket@http://store"),
                        &format!("data/shard-{f:05}"),
                        "e:0123456789abcdef",
                    );
                    let mut per = vec![0u64; members];
                    for idx in 0..pages {
                        let at = Ring::position_in_runs(&id, idx, run);
                        if let Some(o) = ring.owners_at(at, 1).first() {
                            per[index[o.addr.as_str()]] += 1;
                        }
                    }
                    let max = per.iter().copied().max().unwrap_or(1).max(1) as f64;
                    over_mean += max / (pages as f64 / members as f64);
                    parallel += pages as f64 / max;
                }
                println!(
                    "{{\"what\":\"ring-spread\",\"members\":{members},\"file_mib\":{pages},\"run_pages\":{run},\"busiest_over_mean\":{:.2},\"parallelism\":{:.1}}}",
                    over_mean / f64::from(files),
                    parallel / f64::from(files)
                );
            }
        }
    }
}

/// The daemon's own disk-tier read of KEY: a tier with no memory tier above it in `dir`,
/// filled from the store, then read whole `rounds` times, `parallel` pages in flight.
async fn disk_tier(
    dir: &std::path::Path,
    store: &Ufs,
    key: &str,
    parallel: usize,
    rounds: usize,
    metrics: Arc<Metrics>,
) -> Result<()> {
    use alluxio::page_cache::{PageCache, PageCacheConfig};
    let info = store.stat(key).await?;
    let id = store.object_id(key, &info.version);
    let cache = Arc::new(PageCache::new(
        &PageCacheConfig {
            mem_bytes: 0,
            disk_bytes: info.size.saturating_mul(2).max(1 << 30),
            disk_dir: dir.to_path_buf(),
            io_engine: Default::default(),
            disk_free_ratio: alluxio::config::DEFAULT_CACHE_FREE_RATIO,
        },
        metrics,
    )?);
    let pages = info.size.div_ceil(PAGE_SIZE);
    for idx in 0..pages {
        let start = idx * PAGE_SIZE;
        let end = info.size.min(start + PAGE_SIZE);
        let b = store.read_range(key, start..end, &info.version).await?;
        cache.put_disk(PageKey::new(&id, idx), InodeNo(0), b).await;
    }
    for _ in 0..rounds.max(1) {
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..parallel {
            let (cache, id, next) = (cache.clone(), id.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut got = 0u64;
                loop {
                    let idx = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if idx >= pages {
                        return anyhow::Ok(got);
                    }
                    match cache.get(&PageKey::new(&id, idx)).await {
                        Some(b) => got += b.len() as u64,
                        None => bail!("page {idx} not in the disk tier"),
                    }
                }
            }));
        }
        let mut bytes = 0;
        for t in tasks {
            bytes += t.await??;
        }
        report(
            "disk-tier",
            bytes,
            t0.elapsed().as_secs_f64(),
            cpu_seconds() - c0,
        );
    }
    Ok(())
}

async fn tcp_serve(addr: &str) -> Result<()> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on {}", l.local_addr()?);
    loop {
        let (mut c, _) = l.accept().await?;
        c.set_nodelay(true)?;
        tokio::spawn(async move {
            let buf = vec![0x5au8; PAGE_SIZE as usize];
            while c.write_all(&buf).await.is_ok() {}
        });
    }
}

async fn tcp_read(addr: &str, total: u64, parallel: usize) -> Result<()> {
    let (t0, c0) = (Instant::now(), cpu_seconds());
    let each = total / parallel as u64;
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let addr = addr.to_string();
        tasks.push(tokio::spawn(async move {
            let mut c = tokio::net::TcpStream::connect(addr).await?;
            c.set_nodelay(true)?;
            let mut buf = vec![0u8; PAGE_SIZE as usize];
            let mut got = 0u64;
            while got < each {
                let n = c.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
            anyhow::Ok(got)
        }));
    }
    let mut bytes = 0;
    for t in tasks {
        bytes += t.await??;
    }
    report("tcp", bytes, t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
    Ok(())
}
