//! `alluxio fs`: commands on the namespace of a mount, sent to the daemon that serves the
//! mount holding PATH (through its control socket).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

/// `alluxio fs` subcommands.
#[derive(Subcommand)]
pub enum FsCmd {
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

/// Runs one `alluxio fs` command.
pub fn run(cmd: FsCmd) -> Result<()> {
    match cmd {
        FsCmd::LoadMetadata {
            path,
            recursive,
            json,
        } => {
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
