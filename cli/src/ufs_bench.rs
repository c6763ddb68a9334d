//! `alluxio ufs-bench`: the store's own ceiling, measured through the same client stack the
//! daemon uses (OpenDAL with its retry and timeout layers), with no cache and no FUSE. It
//! reads one object whole with `--parallel` ranged GETs of `--chunk` bytes in flight, or
//! with `--put FILE` uploads a local file as the object (multipart, `--chunk` parts,
//! `--parallel` in flight), and prints one JSON object: bytes, seconds, MB/s and this
//! process's CPU seconds per GiB. `scripts/bench.sh --ufs s3` reports cold reads and
//! writes through the mount against it. With `--ops N` it measures the store's floor for
//! metadata instead: N empty PUTs then N DELETEs under the prefix KEY, one at a time, as a
//! create+close and an unlink through the mount must make them under CACHE_THROUGH.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use alluxio::config::{UfsConfig, parse_mount_options, parse_size};
use alluxio::metrics::Metrics;
use alluxio::ufs::Ufs;

/// Arguments of `alluxio ufs-bench`.
#[derive(Args)]
pub struct UfsBenchArgs {
    /// The store, as for `alluxio fuse mount --ufs`.
    #[arg(long)]
    ufs: String,
    /// Store options, as for `alluxio fuse mount -o` (endpoint=, region=, keys, ufs.KEY=).
    #[arg(short = 'o', value_name = "OPT[,OPT...]")]
    options: Vec<String>,
    /// The object to read, relative to the store's root.
    key: String,
    /// Ranged GETs in flight.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    /// Bytes per ranged GET (or per part with --put).
    #[arg(long, default_value = "8MiB")]
    chunk: String,
    /// Upload this local file as KEY instead of reading KEY.
    #[arg(long, value_name = "FILE")]
    put: Option<std::path::PathBuf>,
    /// Time N empty PUTs, then N DELETEs, one at a time, of keys under the prefix KEY.
    #[arg(long, value_name = "N", conflicts_with = "put")]
    ops: Option<usize>,
    /// Time N ranged GETs of KEY's first 4 KiB, one at a time: the store's time to the
    /// first byte.
    #[arg(long, value_name = "N", conflicts_with_all = ["put", "ops"])]
    first_byte: Option<usize>,
    /// Time N listings of the directory KEY (`a/b/`), one at a time.
    #[arg(long, value_name = "N", conflicts_with_all = ["put", "ops", "first_byte"])]
    list: Option<usize>,
}

/// This process's CPU seconds so far (user and system).
pub(crate) fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Prints one measurement as a JSON line: bytes, seconds, MB/s, and this process's
/// `cpu` seconds per GiB.
pub(crate) fn report(what: &str, bytes: u64, secs: f64, cpu: f64) {
    let gib = bytes as f64 / f64::from(1u32 << 30);
    println!(
        "{{\"what\":\"{what}\",\"bytes\":{bytes},\"seconds\":{secs:.3},\"mb_per_s\":{:.1},\"client_cpu_s_per_gib\":{:.3}}}",
        bytes as f64 / 1e6 / secs.max(1e-9),
        cpu / gib.max(1e-9)
    );
}

/// Runs the measurement.
pub fn run(a: UfsBenchArgs) -> Result<()> {
    let opts = parse_mount_options(&a.options)?;
    let cfg = UfsConfig::parse(&a.ufs, &opts.ufs)?;
    let chunk = parse_size(&a.chunk).context("--chunk")?.max(1);
    let parallel = a.parallel.clamp(1, 256);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut ufs = Ufs::new(&cfg, Arc::new(Metrics::default()))?;
        if let Some(n) = a.ops {
            return metadata_ops(&ufs, &a.key, n.max(1)).await;
        }
        if let Some(n) = a.first_byte {
            let info = ufs.stat(&a.key).await?;
            let mut us = Vec::new();
            for _ in 0..n.max(1) {
                let t = Instant::now();
                ufs.read_range(&a.key, 0..info.size.min(4096), &info.version)
                    .await?;
                us.push(t.elapsed().as_secs_f64() * 1e6);
            }
            println!(
                "{}",
                serde_json::json!({"key": a.key, "gets": us.len(), "first_byte_p50_us": median(&mut us)})
            );
            return Ok(());
        }
        if let Some(n) = a.list {
            let (mut us, mut entries) = (Vec::new(), 0);
            for _ in 0..n.max(1) {
                let t = Instant::now();
                entries = ufs.list_dir(&a.key).await?.len();
                us.push(t.elapsed().as_secs_f64() * 1e6);
            }
            println!(
                "{}",
                serde_json::json!({"dir": a.key, "lists": us.len(), "entries": entries,
                    "list_p50_us": median(&mut us)})
            );
            return Ok(());
        }
        if let Some(file) = &a.put {
            ufs.set_upload_shape(alluxio::config::UploadShape {
                part_bytes: chunk,
                concurrency: parallel,
                slots: 1,
            });
            let f = std::fs::File::open(file).with_context(|| format!("{}", file.display()))?;
            let len = f.metadata()?.len();
            let (cpu0, t0) = (cpu_seconds(), Instant::now());
            ufs.upload_file(&a.key, Some(Arc::new(f)), len).await?;
            print_result(&a.key, len, t0, cpu0, parallel, chunk);
            return Ok(());
        }
        let ufs = Arc::new(ufs);
        let info = ufs.stat(&a.key).await?;
        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..parallel {
            let (ufs, next, key, version) = (
                ufs.clone(),
                next.clone(),
                a.key.clone(),
                info.version.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut got = 0u64;
                loop {
                    let start = next.fetch_add(chunk, std::sync::atomic::Ordering::Relaxed);
                    if start >= info.size {
                        return Ok::<u64, anyhow::Error>(got);
                    }
                    let end = info.size.min(start + chunk);
                    got += ufs.read_range(&key, start..end, &version).await?.len() as u64;
                }
            }));
        }
        let mut bytes = 0u64;
        for t in tasks {
            bytes += t.await??;
        }
        print_result(&a.key, bytes, t0, cpu0, parallel, chunk);
        Ok(())
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// One op at a time, as a single-threaded create or unlink loop through the mount makes
/// them: the rate and median latency of empty PUTs, then of DELETEs of the same keys.
async fn metadata_ops(ufs: &Ufs, prefix: &str, n: usize) -> Result<()> {
    let keys: Vec<String> = (0..n)
        .map(|i| format!("{}/op{i:06}", prefix.trim_end_matches('/')))
        .collect();
    let mut put = Vec::with_capacity(n);
    let t0 = Instant::now();
    for k in &keys {
        let t = Instant::now();
        ufs.upload_file(k, None, 0).await?;
        put.push(t.elapsed().as_secs_f64());
    }
    let put_secs = t0.elapsed().as_secs_f64();
    let mut del = Vec::with_capacity(n);
    let t0 = Instant::now();
    for k in &keys {
        let t = Instant::now();
        ufs.delete(k).await?;
        del.push(t.elapsed().as_secs_f64());
    }
    let del_secs = t0.elapsed().as_secs_f64();
    let p50_us = |v: &mut Vec<f64>| median(v) * 1e6;
    let out = serde_json::json!({
        "prefix": prefix,
        "ops": n,
        "put_empty_per_s": n as f64 / put_secs,
        "put_empty_p50_us": p50_us(&mut put),
        "delete_per_s": n as f64 / del_secs,
        "delete_p50_us": p50_us(&mut del),
    });
    println!("{out}");
    Ok(())
}

fn print_result(key: &str, bytes: u64, t0: Instant, cpu0: f64, parallel: usize, chunk: u64) {
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let gib = bytes as f64 / f64::from(1u32 << 30);
    let out = serde_json::json!({
        "key": key,
        "bytes": bytes,
        "seconds": secs,
        "mb_per_s": bytes as f64 / 1e6 / secs,
        "parallel": parallel,
        "chunk": chunk,
        "client_cpu_s_per_gib": if gib > 0.0 { cpu / gib } else { 0.0 },
    });
    println!("{out}");
}
