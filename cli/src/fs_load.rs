//! `alluxio fs load PATH [-R]`: caches the files at or below PATH (in a local alluxio
//! mount) in the cluster. The CLI walks the tree through the mount and hands the
//! daemon one request per file or per [`LOAD_CHUNK_PAGES`] pages of a large one, a few
//! at a time; the daemon sends each page to its owner on the ring, which reads it from
//! the store itself (without peers the daemon caches it locally). Progress (files,
//! bytes, rate) goes to stderr.
//!
//! Idempotent and resumable: a page its owner holds already costs one round trip and no
//! store read, so running the same load again after an interruption goes on where it
//! stopped at the speed of those round trips.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use alluxio::types::PAGE_SIZE;
use alluxio::vfs::{LOAD_CHUNK_PAGES, LoadReport};

/// Requests in flight at once (each of up to [`LOAD_CHUNK_PAGES`] pages, which the
/// daemon asks of their owners in parallel).
const WORKERS: usize = 4;

/// One request: pages `first..first + count` of the file at `rel` in the mount.
struct Chunk {
    rel: String,
    first: u64,
    count: u64,
    /// The file's first chunk (the file counts as done when all its chunks are).
    starts_file: bool,
}

#[derive(Default)]
struct Totals {
    files: u64,
    report: LoadReport,
    failed: Vec<String>,
}

/// Runs `alluxio fs load`.
pub fn run(root: &Path, recursive: bool, json: bool) -> Result<()> {
    use std::io::IsTerminal;
    let (mp, _) = crate::local_mount::mount_of(root)?;
    let sock = alluxio::config::control_socket(&alluxio::config::default_run_dir(), &mp);
    let (files, total) = walk(root, recursive)?;
    let mut chunks = VecDeque::new();
    for (p, size) in &files {
        let abs = p
            .canonicalize()
            .with_context(|| format!("{}", p.display()))?;
        let rel = abs
            .strip_prefix(&mp)
            .context("a file outside its mount")?
            .to_str()
            .with_context(|| format!("{}: not UTF-8; the store cannot hold it", p.display()))?
            .to_string();
        let pages = size.div_ceil(PAGE_SIZE);
        let mut first = 0;
        loop {
            let count = (pages - first).min(LOAD_CHUNK_PAGES);
            chunks.push_back(Chunk {
                rel: rel.clone(),
                first,
                count,
                starts_file: first == 0,
            });
            first += count;
            if first >= pages {
                break;
            }
        }
    }
    let queue = Mutex::new(chunks);
    let totals = Mutex::new(Totals::default());
    let t0 = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let every = Duration::from_millis(if tty { 200 } else { 2000 });
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| -> Result<()> {
        let mut workers = Vec::new();
        for _ in 0..WORKERS {
            workers.push(s.spawn(|| -> Result<()> {
                loop {
                    let Some(c) = lock(&queue).pop_front() else {
                        return Ok(());
                    };
                    let req = serde_json::json!({"op": "load", "path": c.rel,
                        "first": c.first, "count": c.count});
                    let answer =
                        alluxio::control::query(&sock, &req.to_string(), Duration::from_secs(600))
                            .with_context(|| {
                                format!("no alluxio daemon answers for {}", mp.display())
                            })?;
                    let v: serde_json::Value =
                        serde_json::from_str(answer.trim()).context("parse daemon answer")?;
                    let mut t = lock(&totals);
                    if let Some(e) = v.get("error") {
                        t.failed
                            .push(format!("{}: {}", c.rel, e.as_str().unwrap_or("failed")));
                        continue;
                    }
                    let r: LoadReport = LoadReport {
                        pages: v["pages"].as_u64().unwrap_or(0),
                        cached_before: v["cached_before"].as_u64().unwrap_or(0),
                        read_by_peers: v["read_by_peers"].as_u64().unwrap_or(0),
                        read_here: v["read_here"].as_u64().unwrap_or(0),
                        bytes: v["bytes"].as_u64().unwrap_or(0),
                        size: 0,
                    };
                    t.files += u64::from(c.starts_file);
                    t.report.pages += r.pages;
                    t.report.cached_before += r.cached_before;
                    t.report.read_by_peers += r.read_by_peers;
                    t.report.read_here += r.read_here;
                    t.report.bytes += r.bytes;
                }
            }));
        }
        s.spawn(|| {
            let mut last = Instant::now();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                if last.elapsed() < every {
                    continue;
                }
                last = Instant::now();
                let t = lock(&totals);
                let end = if tty { "\r" } else { "\n" };
                eprint!("{}{end}", progress(&t, files.len(), total, t0.elapsed()));
            }
        });
        let mut first_err = None;
        for w in workers {
            let r = w.join().unwrap_or_else(|_| bail!("a load worker failed"));
            if first_err.is_none() {
                first_err = r.err();
            }
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        first_err.map_or(Ok(()), Err)
    })?;
    let t = totals.into_inner().unwrap_or_else(|p| p.into_inner());
    let secs = t0.elapsed().as_secs_f64();
    if tty {
        eprintln!("{}", progress(&t, files.len(), total, t0.elapsed()));
    }
    for f in &t.failed {
        eprintln!("alluxio fs load: {f}");
    }
    let r = &t.report;
    if json {
        println!(
            "{}",
            serde_json::json!({"files": t.files, "bytes": r.bytes, "pages": r.pages,
                "cached_before": r.cached_before, "read_by_peers": r.read_by_peers,
                "read_here": r.read_here, "seconds": secs, "failed": t.failed.len()})
        );
    } else {
        println!(
            "loaded {} files, {} bytes in {secs:.1} s: {} pages cached already, {} read by their owners, {} read here",
            t.files, r.bytes, r.cached_before, r.read_by_peers, r.read_here
        );
    }
    if !t.failed.is_empty() {
        bail!("{} of {} files failed to load", t.failed.len(), files.len());
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn progress(t: &Totals, files: usize, total: u64, took: Duration) -> String {
    let b = t.report.bytes;
    let pct = (b * 100).checked_div(total).unwrap_or(100);
    let rate = b as f64 / 1e6 / took.as_secs_f64().max(1e-3);
    format!(
        "loading: {pct:>3}%  {}/{files} files  {} of {} MiB  {rate:.0} MB/s  ({} MiB cached already)",
        t.files,
        b >> 20,
        total >> 20,
        (t.report.cached_before * PAGE_SIZE) >> 20,
    )
}

/// The regular files at `root` (a file, a directory's own files, or with `recursive`
/// every file below it) with their sizes, and their total.
fn walk(root: &Path, recursive: bool) -> Result<(Vec<(PathBuf, u64)>, u64)> {
    let mut files = Vec::new();
    let md = std::fs::metadata(root).with_context(|| format!("{}", root.display()))?;
    if md.is_file() {
        files.push((root.to_path_buf(), md.len()));
    } else {
        let mut todo = vec![root.to_path_buf()];
        while let Some(dir) = todo.pop() {
            for e in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
                let e = e?;
                let md = e
                    .metadata()
                    .with_context(|| format!("{}", e.path().display()))?;
                if md.is_dir() && recursive {
                    todo.push(e.path());
                } else if md.is_file() {
                    files.push((e.path(), md.len()));
                }
            }
        }
    }
    let total = files.iter().map(|f| f.1).sum();
    Ok((files, total))
}
