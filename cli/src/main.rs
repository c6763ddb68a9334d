//! The one `alluxio` binary. Thin by design: parse arguments into library configs, set up
//! telemetry and the runtime, run, and turn failures into one-line errors with a non-zero
//! exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod cache_node_cmd;
mod fs_client;
mod fs_cmd;
mod fs_load;
mod fsck_cmd;
mod grpc_bench;
mod local_mount;
mod membership_bench;
mod metaserver_cmd;
mod mount_cmd;
mod mount_helper;
mod peer_bench;
mod ufs_bench;

#[derive(Parser)]
#[command(
    name = "alluxio",
    version,
    about = "FUSE-first POSIX caching filesystem over object stores"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// FUSE mounts on this host.
    Fuse {
        #[command(subcommand)]
        cmd: FuseCmd,
    },
    /// Work with a namespace: ls, stat, cat, cp, mkdir, rm, mv, mount, unmount,
    /// load-metadata, load, report.
    Fs(fs_cmd::FsArgs),
    /// Serve a namespace to FUSE daemons over the network.
    Metaserver(metaserver_cmd::MetaserverArgs),
    /// Serve pages to FUSE daemons as a peer cache node.
    CacheNode(cache_node_cmd::CacheNodeArgs),
    /// Check a namespace against itself and its store (exit 0 clean, 1 repaired, 4 not).
    Fsck(fsck_cmd::FsckArgs),
    /// Measure the store's own read ceiling (parallel ranged GETs, no cache, no FUSE).
    UfsBench(ufs_bench::UfsBenchArgs),
    /// Measure page transfer from cache nodes against a plain TCP stream.
    PeerBench(peer_bench::PeerBenchArgs),
}

#[derive(Subcommand)]
enum FuseCmd {
    /// Mount a UFS with a local cache (runs in the foreground until unmounted).
    Mount(Box<mount_cmd::MountArgs>),
    /// Unmount a mount made by `alluxio fuse mount`.
    Unmount {
        /// The mountpoint.
        mountpoint: PathBuf,
    },
    /// Show the counters of a running mount.
    Stats {
        /// The mountpoint.
        mountpoint: PathBuf,
        /// Print the raw JSON document.
        #[arg(long)]
        json: bool,
    },
}

fn stats(mountpoint: PathBuf, json: bool) -> Result<()> {
    let mp = mountpoint
        .canonicalize()
        .with_context(|| format!("mountpoint {}", mountpoint.display()))?;
    let sock = alluxio::config::control_socket(&alluxio::config::default_run_dir(), &mp);
    let out = alluxio::control::query(&sock, "stats", std::time::Duration::from_secs(5))
        .with_context(|| {
            format!(
                "no alluxio daemon answers for {} (socket {})",
                mp.display(),
                sock.display()
            )
        })?;
    let v: serde_json::Value = serde_json::from_str(out.trim()).context("parse daemon answer")?;
    if let Some(e) = v.get("error") {
        bail!("daemon answered: {e}");
    }
    if json {
        println!("{}", out.trim());
        return Ok(());
    }
    println!("mountpoint  {}", v["mountpoint"].as_str().unwrap_or("?"));
    println!("ufs         {}", v["ufs"].as_str().unwrap_or("?"));
    println!("pid         {}", v["pid"]);
    if let Some(c) = v["counters"].as_object() {
        for (k, n) in c {
            println!("{k:<22}{n}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    alluxio::mount::bound_allocator();
    // Run as /sbin/mount.fuse.alluxio by mount(8): the helper's own command line.
    let mut argv = std::env::args_os();
    let argv0 = argv.next().unwrap_or_default();
    if std::path::Path::new(&argv0).file_name() == Some(mount_helper::HELPER_NAME.as_ref()) {
        return mount_helper::run(&argv.collect::<Vec<_>>());
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let res = match cli.cmd {
        Cmd::Fsck(args) => return ExitCode::from(fsck_cmd::run(args)),
        Cmd::Fuse {
            cmd: FuseCmd::Mount(args),
        } => mount_cmd::run(*args),
        Cmd::Fuse {
            cmd: FuseCmd::Unmount { mountpoint },
        } => alluxio::mount::unmount(&mountpoint).map_err(anyhow::Error::msg),
        Cmd::Fuse {
            cmd: FuseCmd::Stats { mountpoint, json },
        } => stats(mountpoint, json),
        Cmd::UfsBench(args) => ufs_bench::run(args),
        Cmd::PeerBench(args) => peer_bench::run(args),
        Cmd::Metaserver(args) => metaserver_cmd::run(args),
        Cmd::CacheNode(args) => cache_node_cmd::run(args),
        Cmd::Fs(args) => fs_cmd::run(args),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alluxio: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
