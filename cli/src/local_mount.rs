//! Paths in this host's alluxio mounts.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The alluxio mount holding `path` (deepest first), and `path` relative to it.
pub fn mount_of(path: &Path) -> Result<(PathBuf, String)> {
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
    let best = alluxio::mount::alluxio_mounts()
        .into_iter()
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
