//! `alluxio fs`: commands on a namespace. `load-metadata` goes to the daemon that serves
//! the mount holding PATH (through its control socket); `mount` and `unmount` change the
//! mount table of a metaserver (`--metaserver`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use crate::local_mount::mount_of;
use alluxio::config::stores::kind_of;
use alluxio::config::{MetaserverConfig, UfsConfig, parse_mount_options};
use alluxio::meta::RunOp;
use alluxio::meta::remote::RemoteMeta;
use alluxio_metaserver::MountEntry;
use alluxio_metaserver::rpc::{Op, Value};

/// `alluxio fs [--metaserver ADDR] COMMAND`.
#[derive(Args)]
pub struct FsArgs {
    /// The metaserver whose namespace to change (HOST:PORT).
    #[arg(long, global = true, env = "ALLUXIO_METASERVER")]
    metaserver: Option<String>,
    /// File holding the metaserver's token [default: ALLUXIO_TOKEN].
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    cmd: FsCmd,
}

/// `alluxio fs` subcommands.
#[derive(Subcommand)]
pub enum FsCmd {
    /// Mount a store at PATH of the namespace; with no arguments, list the mount table.
    /// `/` names the root store, which daemons started without --ufs use.
    Mount {
        /// Where in the namespace (`/` or a new directory whose parent exists).
        path: Option<String>,
        /// The store, as for `alluxio fuse mount --ufs`.
        uri: Option<String>,
        /// Store options, as for `alluxio fuse mount -o` (endpoint=, region=, keys,
        /// ufs.KEY=); may be repeated.
        #[arg(short = 'o', long = "option", value_name = "K=V[,K=V...]")]
        options: Vec<String>,
        /// Refuse changes under PATH (EROFS).
        #[arg(long)]
        readonly: bool,
        /// Metadata sync policy for this store: never, always, or seconds since a daemon
        /// last listed a directory [default: each daemon's -o metadata_sync].
        #[arg(long, value_name = "POLICY")]
        sync: Option<String>,
        /// Print the table as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove the store mounted at PATH (not `/`), with what the namespace knew below it.
    Unmount {
        /// The mount path.
        path: String,
    },
    /// List a directory of the namespace (or show one file).
    Ls {
        /// Absolute namespace path.
        path: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show a node's attributes.
    Stat {
        /// Absolute namespace path.
        path: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Write a file's bytes to stdout.
    Cat {
        /// Absolute namespace path.
        path: String,
    },
    /// Copy one file: into the namespace (`cp file:///local /path`), out of it
    /// (`cp /path file:///local`), or within it.
    Cp {
        /// Source: a namespace path, or file:///local/path.
        src: String,
        /// Target: a namespace path, or file:///local/path.
        dst: String,
    },
    /// Make a directory.
    Mkdir {
        /// Absolute namespace path.
        path: String,
        /// Also make missing parents; no error if it exists.
        #[arg(short = 'p', long)]
        parents: bool,
    },
    /// Remove a file (or with -R a directory tree).
    Rm {
        /// Absolute namespace path.
        path: String,
        /// Remove directories and their contents.
        #[arg(short = 'R', short_alias = 'r', long)]
        recursive: bool,
    },
    /// Rename (EXDEV between mounted stores).
    Mv {
        /// From.
        src: String,
        /// To.
        dst: String,
    },
    /// Cache the file at PATH, or a directory's files (with -R every file below it), in
    /// the cluster: each page on its owner, which reads it from the store (without peers,
    /// in this host's daemon); progress on stderr. Idempotent, and resumable: pages
    /// cached already cost a round trip, no store read.
    Load {
        /// A file or directory inside an alluxio mount.
        path: PathBuf,
        /// Every file below a directory, not only its own.
        #[arg(short = 'R', short_alias = 'r', long)]
        recursive: bool,
        /// JSON summary.
        #[arg(long)]
        json: bool,
    },
    /// Drop the cached pages of the file at PATH, or of every file below the directory
    /// there (a path in a local alluxio mount). Files the kernel is reading by
    /// passthrough right now are kept and counted as busy.
    Free {
        /// A file or directory inside an alluxio mount.
        path: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Pin PATH: every file at or below it keeps its cached pages (never evicted). PATH is
    /// a namespace path with --metaserver, else a path in a local alluxio mount.
    Pin {
        /// The path to pin.
        path: String,
    },
    /// Unpin PATH (as given to `pin`).
    Unpin {
        /// The path to unpin.
        path: String,
    },
    /// When DURATION (e.g. 90, 30s, 10m, 2h, 7d) has passed, free PATH's cached pages (in
    /// every daemon) or delete it (from the namespace and the store). PATH as for `pin`.
    #[command(name = "setTtl")]
    SetTtl {
        /// The path.
        path: String,
        /// Time from now.
        duration: String,
        /// What expiry does.
        #[arg(long, value_enum, default_value = "delete")]
        action: TtlActionArg,
    },
    /// Clear PATH's TTL.
    #[command(name = "unsetTtl")]
    UnsetTtl {
        /// The path.
        path: String,
    },
    /// Capacity, usage and hit rate of this host's alluxio mounts, and the mount table
    /// (with --metaserver).
    Report {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// List PATH's directory (or the directory of the file at PATH) from the store again,
    /// so objects changed or added by other tools show up with their new size and content.
    LoadMetadata {
        /// A path inside an alluxio mount.
        path: PathBuf,
        /// Also every directory below PATH that was listed before.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Connects to the metaserver named by `--metaserver` and runs `op` there.
fn remote(a: &FsArgs, op: Op) -> Result<Value> {
    let Some(addr) = a.metaserver.as_deref() else {
        bail!("the mount table lives in a metaserver: give --metaserver HOST:PORT");
    };
    let ms = MetaserverConfig::new(addr, a.token_file.as_deref())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let m = RemoteMeta::connect(&ms.addr, &ms.token)
            .await
            .map_err(anyhow::Error::msg)?;
        Ok(m.run(op).await?)
    })
}

fn print_mounts(entries: &[MountEntry], json: bool) {
    if json {
        let v: Vec<_> = entries
            .iter()
            .map(|e| {
                serde_json::json!({"path": e.path, "uri": e.uri, "readonly": e.readonly,
                "kind": kind_of(&e.uri),
                "option_keys": e.options.keys().collect::<Vec<_>>()})
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return;
    }
    for e in entries {
        // Option values may hold credentials: only their names are shown.
        let keys: Vec<&str> = e.options.keys().map(String::as_str).collect();
        println!(
            "{:<24} {:<8} {:<40} {}{}{}",
            e.path,
            kind_of(&e.uri),
            e.uri,
            if e.readonly { "ro" } else { "rw" },
            e.sync
                .as_deref()
                .map(|p| format!(" sync={p}"))
                .unwrap_or_default(),
            if keys.is_empty() {
                String::new()
            } else {
                format!(" options: {}", keys.join(","))
            }
        );
    }
}

fn client(a: &FsArgs) -> Result<crate::fs_client::Client> {
    let Some(addr) = a.metaserver.as_deref() else {
        bail!("namespace commands need a metaserver: give --metaserver HOST:PORT");
    };
    crate::fs_client::Client::connect(&MetaserverConfig::new(addr, a.token_file.as_deref())?)
}

fn kind_char(k: alluxio::types::FileKind) -> char {
    use alluxio::types::FileKind as K;
    match k {
        K::Dir => 'd',
        K::File => '-',
        K::Symlink => 'l',
        K::Fifo => 'p',
        K::CharDevice => 'c',
        K::BlockDevice => 'b',
        K::Socket => 's',
    }
}

fn rec_json(name: &str, r: &alluxio::types::InodeRecord) -> serde_json::Value {
    serde_json::json!({
        "name": name, "ino": r.ino.0, "kind": format!("{:?}", r.kind), "size": r.size,
        "mode": format!("{:o}", r.mode), "uid": r.uid, "gid": r.gid, "nlink": r.nlink,
        "mtime_ns": r.mtime_ns, "version": r.version,
    })
}

fn rec_line(name: &str, r: &alluxio::types::InodeRecord) -> String {
    let secs = r.mtime_ns.div_euclid(1_000_000_000);
    format!(
        "{}{:o} {:>5} {:>5} {:>12} {:>12} {name}",
        kind_char(r.kind),
        r.mode,
        r.uid,
        r.gid,
        r.size,
        secs
    )
}

/// A `file://` path, or `None` for a namespace path.
fn local(p: &str) -> Option<&Path> {
    p.strip_prefix("file://").map(Path::new)
}

/// This host's alluxio mounts with their daemons' counters, and the mount table.
fn report(a: &FsArgs, json: bool) -> Result<()> {
    let mut rows = Vec::new();
    for mp in alluxio::mount::alluxio_mounts() {
        let sock = alluxio::config::control_socket(&alluxio::config::default_run_dir(), &mp);
        let Ok(out) = alluxio::control::query(&sock, "stats", Duration::from_secs(5)) else {
            continue; // another user's daemon, or one that does not answer
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(out.trim()) else {
            continue;
        };
        let c = &v["counters"];
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        let hits = n("cache_hits_mem") + n("cache_hits_disk");
        let asked = hits + n("cache_misses");
        let cluster =
            alluxio::control::query(&sock, r#"{"op":"cluster"}"#, Duration::from_secs(10))
                .ok()
                .and_then(|o| serde_json::from_str::<serde_json::Value>(o.trim()).ok())
                .and_then(|v| v["nodes"].as_array().cloned())
                .unwrap_or_default();
        let nodes: Vec<_> = cluster.iter().map(node_row).collect();
        rows.push(serde_json::json!({
            "peers": nodes,
            "mountpoint": mp, "ufs": v["ufs"], "pid": v["pid"],
            "kind": kind_of(v["ufs"].as_str().unwrap_or("")),
            "disk_cache_bytes": n("disk_cache_bytes"), "mem_cache_bytes": n("mem_cache_bytes"),
            "disk_cache_capacity": n("disk_cache_capacity"),
            "disk_cache_limit": n("disk_cache_limit"),
            "mem_cache_capacity": n("mem_cache_capacity"),
            "hit_ratio": if asked == 0 { 0.0 } else { hits as f64 / asked as f64 },
            "bytes_from_cache": n("bytes_from_cache"), "bytes_from_ufs": n("bytes_from_ufs"),
            "ufs_errors": n("ufs_errors"),
        }));
    }
    let table = match a.metaserver {
        Some(_) => match remote(a, Op::Mounts)? {
            Value::Mounts(m) => Some(m),
            other => bail!("unexpected answer {other:?}"),
        },
        None => None,
    };
    if json {
        let t: Option<Vec<_>> = table.as_ref().map(|t| {
            t.iter()
                .map(|e| {
                    serde_json::json!({"path": e.path, "uri": e.uri, "readonly": e.readonly,
                    "kind": kind_of(&e.uri)})
                })
                .collect()
        });
        println!("{}", serde_json::json!({"mounts": rows, "mount_table": t}));
        return Ok(());
    }
    println!("alluxio mounts on this host: {}", rows.len());
    for r in &rows {
        let (cap, limit) = (
            r["disk_cache_capacity"].as_u64().unwrap_or(0),
            r["disk_cache_limit"].as_u64().unwrap_or(0),
        );
        // The tier's filesystem is short of room for the whole capacity (as of the last
        // page cached; 0 before the first). Pages in flight then may put the tier a little
        // over that figure: say the larger.
        let held = r["disk_cache_bytes"].as_u64().unwrap_or(0);
        let short = if limit > 0 && limit < cap {
            format!(
                " (its disk has room for about {} MiB)",
                limit.max(held) >> 20
            )
        } else {
            String::new()
        };
        println!(
            "  {}  ({} {})  cache: disk {} of {} MiB{}, memory {} of {} MiB  hit ratio {:.3}  from cache {} MiB, from store {} MiB, store errors {}",
            r["mountpoint"].as_str().unwrap_or("?"),
            r["kind"].as_str().unwrap_or("?"),
            r["ufs"].as_str().unwrap_or("?"),
            held >> 20,
            cap >> 20,
            short,
            r["mem_cache_bytes"].as_u64().unwrap_or(0) >> 20,
            r["mem_cache_capacity"].as_u64().unwrap_or(0) >> 20,
            r["hit_ratio"].as_f64().unwrap_or(0.0),
            r["bytes_from_cache"].as_u64().unwrap_or(0) >> 20,
            r["bytes_from_ufs"].as_u64().unwrap_or(0) >> 20,
            r["ufs_errors"].as_u64().unwrap_or(0),
        );
    }
    for r in &rows {
        let Some(nodes) = r["peers"].as_array().filter(|n| !n.is_empty()) else {
            continue;
        };
        println!(
            "  cluster of {} ({} other members):",
            r["mountpoint"].as_str().unwrap_or("?"),
            nodes.len()
        );
        for p in nodes {
            let addr = p["addr"].as_str().unwrap_or("?");
            if let Some(e) = p["error"].as_str() {
                println!("    {addr}  unreachable: {e}");
                continue;
            }
            let mib = |k: &str| p[k].as_u64().unwrap_or(0) >> 20;
            println!(
                "    {addr}  cache: disk {} of {} MiB, memory {} of {} MiB  hit ratio {:.3}  served to peers {} MiB ({} pages), from store {} MiB",
                mib("disk_cache_bytes"),
                mib("disk_cache_capacity"),
                mib("mem_cache_bytes"),
                mib("mem_cache_capacity"),
                p["hit_ratio"].as_f64().unwrap_or(0.0),
                mib("bytes_served_to_peers"),
                p["peer_pages_served"].as_u64().unwrap_or(0),
                mib("bytes_from_ufs"),
            );
        }
    }
    if let Some(t) = &table {
        println!("mount table:");
        print_mounts(t, false);
    }
    Ok(())
}

/// One member of a cluster in `fs report`: its address and the figures of its counters
/// (or why it did not answer).
fn node_row(n: &serde_json::Value) -> serde_json::Value {
    let addr = n["addr"].clone();
    let c = &n["counters"];
    if c.is_null() {
        return serde_json::json!({"addr": addr, "error": n["error"]});
    }
    let g = |k: &str| c[k].as_u64().unwrap_or(0);
    let hits = g("cache_hits_mem") + g("cache_hits_disk");
    let asked = hits + g("cache_misses");
    serde_json::json!({
        "addr": addr,
        "disk_cache_bytes": g("disk_cache_bytes"), "disk_cache_capacity": g("disk_cache_capacity"),
        "mem_cache_bytes": g("mem_cache_bytes"), "mem_cache_capacity": g("mem_cache_capacity"),
        "hit_ratio": if asked == 0 { 0.0 } else { hits as f64 / asked as f64 },
        "bytes_served_to_peers": g("bytes_served_to_peers"),
        "peer_pages_served": g("peer_pages_served"),
        "bytes_from_ufs": g("bytes_from_ufs"), "ufs_reads": g("ufs_reads"),
    })
}

/// Sends the request `make(path relative to its mount)` to the daemon serving the mount
/// that holds `path`, and returns its answer (an error answer becomes an error).
fn daemon_request(
    path: &Path,
    make: impl FnOnce(&str) -> serde_json::Value,
) -> Result<serde_json::Value> {
    let (mp, rel) = mount_of(path)?;
    let sock = alluxio::config::control_socket(&alluxio::config::default_run_dir(), &mp);
    let out = alluxio::control::query(&sock, &make(&rel).to_string(), Duration::from_secs(600))
        .with_context(|| format!("no alluxio daemon answers for {}", mp.display()))?;
    let v: serde_json::Value = serde_json::from_str(out.trim()).context("parse daemon answer")?;
    if let Some(e) = v.get("error") {
        bail!("{}: {}", path.display(), e.as_str().unwrap_or("failed"));
    }
    Ok(v)
}

/// `--action` of `setTtl`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum TtlActionArg {
    /// Drop cached pages.
    Free,
    /// Delete the path.
    Delete,
}

/// Milliseconds of a duration like `90`, `30s`, `10m`, `2h` or `7d`.
fn parse_duration_ms(s: &str) -> Result<u64> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .with_context(|| format!("duration {s:?}: expected a number with s, m, h or d"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => bail!("duration {s:?}: unit must be s, m, h or d"),
    };
    if !(0.0..=1e12).contains(&secs) {
        bail!("duration {s:?} is out of range");
    }
    Ok((secs * 1000.0) as u64)
}

/// Sends a TTL change to the metaserver (`--metaserver`) or the local daemon of PATH.
fn ttl_request(a: &FsArgs, path: &str, after_ms: Option<u64>, action: TtlActionArg) -> Result<()> {
    let action = match action {
        TtlActionArg::Free => alluxio_metaserver::TtlAction::Free,
        TtlActionArg::Delete => alluxio_metaserver::TtlAction::Delete,
    };
    if a.metaserver.is_some() {
        remote(
            a,
            Op::SetTtl {
                path: path.to_string(),
                after_ms,
                action,
            },
        )?;
    } else {
        daemon_request(
            Path::new(path),
            |rel| serde_json::json!({"op": "set-ttl", "path": rel, "after_ms": after_ms, "action": action}),
        )?;
    }
    Ok(())
}

/// Runs one `alluxio fs` command.
pub fn run(a: FsArgs) -> Result<()> {
    match &a.cmd {
        FsCmd::Ls { path, json } => {
            let c = client(&a)?;
            let rec = c.resolve(path).with_context(|| path.clone())?;
            let entries = if rec.kind == alluxio::types::FileKind::Dir {
                c.list(&rec).with_context(|| path.clone())?
            } else {
                vec![(path.rsplit('/').next().unwrap_or(path).to_string(), rec)]
            };
            if *json {
                let v: Vec<_> = entries.iter().map(|(n, r)| rec_json(n, r)).collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                for (n, r) in &entries {
                    println!("{}", rec_line(n, r));
                }
            }
            Ok(())
        }
        FsCmd::Stat { path, json } => {
            let c = client(&a)?;
            let rec = c.resolve(path).with_context(|| path.clone())?;
            if *json {
                println!("{}", rec_json(path, &rec));
            } else {
                println!("{}", rec_line(path, &rec));
                println!(
                    "inode {}  links {}  version {}",
                    rec.ino.0,
                    rec.nlink,
                    rec.version.as_deref().unwrap_or("-")
                );
            }
            Ok(())
        }
        FsCmd::Cat { path } => {
            let c = client(&a)?;
            let mut out = std::io::stdout().lock();
            c.read_to(path, &mut out).with_context(|| path.clone())?;
            Ok(())
        }
        FsCmd::Cp { src, dst } => {
            let c = client(&a)?;
            let n = match (local(src), local(dst)) {
                (Some(_), Some(_)) => bail!("one side of cp must be a namespace path"),
                (Some(from), None) => c.write_from(from, dst).with_context(|| dst.clone())?,
                (None, Some(to)) => {
                    let mut f =
                        std::fs::File::create(to).with_context(|| format!("{}", to.display()))?;
                    c.read_to(src, &mut f).with_context(|| src.clone())?
                }
                (None, None) => {
                    let tmp = tempfile::NamedTempFile::new()?;
                    c.read_to(src, &mut tmp.as_file())
                        .with_context(|| src.clone())?;
                    c.write_from(tmp.path(), dst).with_context(|| dst.clone())?
                }
            };
            println!("copied {n} bytes");
            Ok(())
        }
        FsCmd::Mkdir { path, parents } => {
            client(&a)?
                .mkdir(path, *parents)
                .with_context(|| path.clone())?;
            Ok(())
        }
        FsCmd::Rm { path, recursive } => {
            client(&a)?
                .remove(path, *recursive)
                .with_context(|| path.clone())?;
            Ok(())
        }
        FsCmd::Mv { src, dst } => {
            client(&a)?
                .rename(src, dst)
                .with_context(|| format!("{src} -> {dst}"))?;
            Ok(())
        }
        FsCmd::Pin { path } | FsCmd::Unpin { path } => {
            let pinned = matches!(a.cmd, FsCmd::Pin { .. });
            if a.metaserver.is_some() {
                remote(
                    &a,
                    Op::SetPin {
                        path: path.clone(),
                        pinned,
                    },
                )?;
            } else {
                daemon_request(
                    Path::new(path),
                    |rel| serde_json::json!({"op": "pin", "path": rel, "pinned": pinned}),
                )?;
            }
            println!("{} {path}", if pinned { "pinned" } else { "unpinned" });
            Ok(())
        }
        FsCmd::SetTtl {
            path,
            duration,
            action,
        } => {
            let ms = parse_duration_ms(duration)?;
            ttl_request(&a, path, Some(ms), *action)?;
            println!("{path} expires in {duration}");
            Ok(())
        }
        FsCmd::UnsetTtl { path } => {
            ttl_request(&a, path, None, TtlActionArg::Delete)?;
            println!("{path} has no TTL now");
            Ok(())
        }
        FsCmd::Load {
            path,
            recursive,
            json,
        } => crate::fs_load::run(path, *recursive, *json),
        FsCmd::Free { path, json } => {
            let v = daemon_request(path, |rel| serde_json::json!({"op": "free", "path": rel}))?;
            if *json {
                println!("{v}");
            } else {
                println!(
                    "freed {} bytes of {} files under {}{}{}",
                    v["bytes_freed"],
                    v["files"],
                    path.display(),
                    match v["busy"].as_u64() {
                        Some(n) if n > 0 => format!(" ({n} kept: in use by passthrough readers)"),
                        _ => String::new(),
                    },
                    match (
                        v["bytes_freed_on_peers"].as_u64(),
                        v["peers_unreachable"].as_u64()
                    ) {
                        (Some(b), Some(0)) if b > 0 => format!(", and {b} bytes on peers"),
                        (Some(b), Some(n)) if n > 0 =>
                            format!(", and {b} bytes on peers ({n} did not answer)"),
                        _ => String::new(),
                    }
                );
            }
            Ok(())
        }
        FsCmd::Report { json } => report(&a, *json),
        FsCmd::Mount {
            path: None, json, ..
        } => match remote(&a, Op::Mounts)? {
            Value::Mounts(m) => {
                print_mounts(&m, *json);
                Ok(())
            }
            other => bail!("unexpected answer {other:?}"),
        },
        FsCmd::Mount {
            path: Some(path),
            uri,
            options,
            readonly,
            sync,
            ..
        } => {
            if let Some(p) = sync {
                p.parse::<alluxio::config::MetadataSync>()?;
            }
            let uri = uri.as_deref().context("usage: alluxio fs mount PATH URI")?;
            let opts = parse_mount_options(options)?;
            // Refuse what a daemon could not use, before it is recorded.
            let cfg = UfsConfig::parse(uri, &opts.ufs)?;
            alluxio::ufs::Ufs::new(&cfg, Default::default())
                .map_err(|e| anyhow::anyhow!("{uri}: {e}"))?;
            let entry = MountEntry {
                path: path.clone(),
                uri: uri.to_string(),
                options: opts.ufs,
                readonly: *readonly,
                sync: sync.clone(),
            };
            remote(&a, Op::AddMount { entry })?;
            println!("mounted {uri} at {path}");
            Ok(())
        }
        FsCmd::Unmount { path } => {
            remote(&a, Op::RemoveMount { path: path.clone() })?;
            println!("unmounted {path}");
            Ok(())
        }
        FsCmd::LoadMetadata {
            path,
            recursive,
            json,
        } => {
            let (path, recursive, json) = (path.clone(), *recursive, *json);
            let v = daemon_request(
                &path,
                |rel| serde_json::json!({"op": "load-metadata", "path": rel, "recursive": recursive}),
            )?;
            if json {
                println!("{v}");
            } else {
                println!(
                    "loaded metadata of {} ({} director{} listed)",
                    path.display(),
                    v["listed"],
                    if v["listed"] == 1 { "y" } else { "ies" }
                );
            }
            Ok(())
        }
    }
}
