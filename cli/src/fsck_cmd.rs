//! `alluxio fsck`: checks a namespace against itself (`alluxio_metaserver::fsck`) and
//! against its root store: every file the namespace says is in the store has its object
//! at its key, of its size; objects in listed directories that the namespace does not
//! know are listed (never deleted). Exit status as fsck(8): 0 clean, 1 inconsistencies
//! found and all repaired, 4 inconsistencies left, 8 the check itself failed.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};

use alluxio::config::{MetaserverConfig, UfsConfig, parse_mount_options};
use alluxio::meta::MetaClient;
use alluxio::meta::remote::RemoteMeta;
use alluxio::metrics::Metrics;
use alluxio::ufs::{Ufs, dir_key, file_key};
use alluxio_metaserver::fsck::Report;
use alluxio_metaserver::{FileKind, RedbStore};

/// Check a namespace against itself and against its store.
#[derive(clap::Args)]
pub struct FsckArgs {
    /// Fix what can be fixed without losing data, and say what was done.
    #[arg(long)]
    repair: bool,
    /// A stopped daemon's state directory (its namespace is locked while it runs: check a
    /// running one through its metaserver).
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "metaserver",
        requires = "ufs"
    )]
    state_dir: Option<PathBuf>,
    /// The store the namespace maps (with --metaserver: instead of its root store).
    #[arg(long, value_name = "URI")]
    ufs: Option<String>,
    /// Store options, as the mount takes them (`-o endpoint=...,region=...`).
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// A metaserver (HOST:PORT) whose namespace to check, against its root store.
    #[arg(long, value_name = "ADDR")]
    metaserver: Option<String>,
    /// File holding the metaserver's token [default: ALLUXIO_TOKEN].
    #[arg(long)]
    token_file: Option<PathBuf>,
}

/// Runs the check; the process's exit status.
pub fn run(a: FsckArgs) -> u8 {
    match check(a) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("alluxio fsck: {e:#}");
            8
        }
    }
}

fn check(a: FsckArgs) -> Result<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let opts = parse_mount_options(&a.options)?;
    let metrics = Arc::new(Metrics::default());
    let (report, ufs, store) = match (&a.state_dir, &a.metaserver) {
        (Some(dir), _) => {
            let path = dir.join("namespace.redb");
            anyhow::ensure!(path.exists(), "no namespace at {}", path.display());
            let store = RedbStore::open(&path).with_context(|| {
                format!(
                    "cannot open {} (a daemon running with this state directory holds it: stop it first)",
                    path.display()
                )
            })?;
            let report = alluxio_metaserver::fsck::check(&store, a.repair)?;
            if a.repair {
                alluxio_metaserver::NamespaceStore::sync(&store)?;
            }
            let uri = a
                .ufs
                .clone()
                .context("--ufs URI is required with --state-dir")?;
            (report, UfsConfig::parse(&uri, &opts.ufs)?, Some(store))
        }
        (None, Some(addr)) => {
            let ms = MetaserverConfig::new(addr, a.token_file.as_deref())?;
            let (report, root) = rt.block_on(async {
                let m = RemoteMeta::connect(&ms.addr, &ms.token)
                    .await
                    .map_err(anyhow::Error::msg)?;
                let report = m.fsck(a.repair).await?;
                let root = m.mounts().await?.into_iter().find(|e| e.path == "/");
                anyhow::Ok((report, root))
            })?;
            // As a daemon does: --ufs, else the mount table's root store.
            let cfg = match (&a.ufs, root) {
                (Some(u), _) => UfsConfig::parse(u, &opts.ufs)?,
                (None, Some(root)) => {
                    let mut o = root.options.clone();
                    o.extend(opts.ufs.clone());
                    UfsConfig::parse(&root.uri, &o)?
                }
                (None, None) => {
                    anyhow::bail!("metaserver {addr} has no root store: give --ufs URI")
                }
            };
            (report, cfg, None)
        }
        (None, None) => anyhow::bail!("give --state-dir DIR --ufs URI, or --metaserver ADDR"),
    };
    let ufs = Ufs::new(&ufs, metrics).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut left = report.problems.len() - report.repaired.len().min(report.problems.len());
    for p in &report.problems {
        println!("namespace: {p}");
    }
    for r in &report.repaired {
        println!("repaired: {r}");
    }
    let store_check = rt.block_on(against_store(&ufs, &report))?;
    for p in &store_check.problems {
        println!("store: {p}");
    }
    for u in &store_check.unknown {
        println!("not in the namespace: {u}");
    }
    let mut relisted = 0;
    if a.repair && !store_check.stale_dirs.is_empty() {
        match &store {
            // The directory is listed again at the next mount, and the listing is
            // reconciled by the usual rules: names whose objects are gone go, sizes
            // follow the store, files pending upload stay.
            Some(s) => {
                relisted = mark_unlisted(s, &store_check.stale_dirs)?;
                println!(
                    "repaired: {relisted} directories will be listed from the store again at the next mount"
                );
            }
            None => println!(
                "not repaired: run `alluxio fs --metaserver ADDR load-metadata PATH` for the directories above"
            ),
        }
    }
    if relisted == 0 {
        left += store_check.problems.len();
    }
    let found = report.problems.len() + store_check.problems.len();
    println!(
        "{} inodes, {} entries, {} files checked in the store: {found} inconsistencies, {} repaired; {} objects not in the namespace",
        report.inodes,
        report.entries,
        report.files.len(),
        found - left,
        store_check.unknown.len()
    );
    Ok(if found == 0 {
        0
    } else if left == 0 {
        1
    } else {
        4
    })
}

#[derive(Default)]
struct StoreCheck {
    problems: Vec<String>,
    unknown: Vec<String>,
    /// Directories (inode numbers) holding a file the store disagrees with.
    stale_dirs: BTreeSet<u64>,
}

/// The store's side, 16 stats in flight.
async fn against_store(ufs: &Ufs, report: &Report) -> Result<StoreCheck> {
    use futures::StreamExt;
    let mut out = StoreCheck::default();
    let parent_of: std::collections::BTreeMap<Vec<Vec<u8>>, u64> = report
        .dirs
        .iter()
        .map(|d| (d.path.clone(), d.ino.0))
        .collect();
    let stats = futures::stream::iter(report.files.iter().map(|f| async move {
        let key = file_key(&f.path).ok()?;
        Some((f, key.clone(), ufs.stat(&key).await))
    }))
    .buffer_unordered(16)
    .collect::<Vec<_>>()
    .await;
    for (f, key, got) in stats.into_iter().flatten() {
        let bad = match got {
            Ok(info) if info.size == f.size => None,
            Ok(info) => Some(format!(
                "{key}: the namespace has {} bytes, the store {}",
                f.size, info.size
            )),
            Err(e) if e.is_not_found() => Some(format!("{key}: no object in the store")),
            Err(e) => anyhow::bail!("{key}: {e}"),
        };
        if let Some(b) = bad {
            out.problems.push(b);
            let parent = f.path[..f.path.len() - 1].to_vec();
            if let Some(d) = parent_of.get(&parent) {
                out.stale_dirs.insert(*d);
            }
        }
    }
    for d in &report.dirs {
        let Ok(key) = dir_key(&d.path) else { continue };
        let listing = ufs
            .list_dir(&key)
            .await
            .map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
        let known: BTreeSet<&[u8]> = d.names.iter().map(Vec::as_slice).collect();
        for c in listing {
            if !known.contains(c.name.as_slice()) {
                let slash = if c.kind == FileKind::Dir { "/" } else { "" };
                out.unknown
                    .push(format!("{key}{}{slash}", String::from_utf8_lossy(&c.name)));
            }
        }
    }
    out.problems.sort();
    out.unknown.sort();
    Ok(out)
}

/// Marks directories as not listed, so the next mount lists and reconciles them.
fn mark_unlisted(store: &RedbStore, dirs: &BTreeSet<u64>) -> Result<usize> {
    use alluxio_metaserver::{InodeNo, NamespaceStore};
    let n = store.write(|t| {
        let mut n = 0;
        for d in dirs {
            if let Some(mut r) = t.inode(InodeNo(*d))? {
                r.loaded_epoch = 0;
                t.put_inode(&r)?;
                n += 1;
            }
        }
        Ok(n)
    })?;
    store.sync()?;
    Ok(n)
}
