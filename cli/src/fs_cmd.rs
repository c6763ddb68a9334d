//! `alluxio fs`: commands on a namespace. `load-metadata` goes to the daemon that serves
//! the mount holding PATH (through its control socket); `mount` and `unmount` change the
//! mount table of a metaserver (`--metaserver`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

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
        /// Print the table as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove the store mounted at PATH (not `/`), with what the namespace knew below it.
    Unmount {
        /// The mount path.
        path: String,
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

/// The alluxio mount holding `path` (deepest first), and `path` relative to it.
fn mount_of(path: &Path) -> Result<(PathBuf, String)> {
    // The path itself may be gone from the namespace (deleted underneath): resolve its
    // parent then.
    let abs = match path.canonicalize() {
        Ok(p) => p,
        Err(_) => {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            let parent = parent.unwrap_or(Path::new("."));
            let name = path.file_name().context("PATH has no file name")?;
            parent
                .canonicalize()
                .with_context(|| format!("{}", path.display()))?
                .join(name)
        }
    };
    let mounts = std::fs::read_to_string("/proc/mounts").context("read /proc/mounts")?;
    let best = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"fuse.alluxio")).then(|| PathBuf::from(f[1].replace("\\040", " ")))
        })
        .filter(|mp| abs.starts_with(mp))
        .max_by_key(|mp| mp.components().count());
    let Some(mp) = best else {
        bail!("{} is not inside an alluxio mount", path.display());
    };
    let rel = abs
        .strip_prefix(&mp)
        .context("path outside its mount")?
        .to_str()
        .context("PATH is not UTF-8; the store cannot hold it")?
        .to_string();
    Ok((mp, rel))
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
            "{:<24} {:<40} {}{}",
            e.path,
            e.uri,
            if e.readonly { "ro" } else { "rw" },
            if keys.is_empty() {
                String::new()
            } else {
                format!(" options: {}", keys.join(","))
            }
        );
    }
}

/// Runs one `alluxio fs` command.
pub fn run(a: FsArgs) -> Result<()> {
    match &a.cmd {
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
            ..
        } => {
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
            let (mp, rel) = mount_of(&path)?;
            let sock = alluxio::config::control_socket(&alluxio::config::default_run_dir(), &mp);
            let req =
                serde_json::json!({"op": "load-metadata", "path": rel, "recursive": recursive});
            let out = alluxio::control::query(&sock, &req.to_string(), Duration::from_secs(600))
                .with_context(|| format!("no alluxio daemon answers for {}", mp.display()))?;
            let v: serde_json::Value =
                serde_json::from_str(out.trim()).context("parse daemon answer")?;
            if let Some(e) = v.get("error") {
                bail!("{}: {}", path.display(), e.as_str().unwrap_or("failed"));
            }
            if json {
                println!("{}", out.trim());
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
