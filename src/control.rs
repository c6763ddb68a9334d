//! The control socket: a Unix socket per mount that answers `stats` with the daemon's
//! counters as JSON (`alluxio fuse stats MOUNTPOINT`), and runs `load-metadata`
//! (`alluxio fs load-metadata PATH`), `load` (`alluxio fs load`: pages of one file, on
//! their owners), `free` (`alluxio fs free PATH`) and `cluster` (the other members'
//! counters, for `alluxio fs report`).
//!
//! Protocol: the client sends one line, `stats` or a JSON object
//! `{"op":"load-metadata","path":"a/b","recursive":false}`; the server answers one JSON
//! document and closes. Requests are capped at 8 KiB; anything else gets an error object.
//! The socket is created 0600 inside a 0700 directory, so only the daemon's user (root)
//! can use it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use crate::metrics::Metrics;
use crate::vfs::Vfs;

/// What the stats answer says about the mount besides counters.
#[derive(Debug, Clone)]
pub struct MountInfo {
    /// Mountpoint.
    pub mountpoint: PathBuf,
    /// UFS URI.
    pub ufs: String,
    /// Namespace directory.
    pub state_dir: PathBuf,
    /// Cache directory.
    pub cache_dir: PathBuf,
}

/// A running control server; removes its socket when dropped.
pub struct ControlServer {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

fn stats_json(metrics: &Metrics, info: &MountInfo) -> String {
    serde_json::json!({
        "mountpoint": info.mountpoint,
        "ufs": info.ufs,
        "state_dir": info.state_dir,
        "cache_dir": info.cache_dir,
        "pid": std::process::id(),
        "counters": metrics.snapshot(),
    })
    .to_string()
}

fn all_pages() -> u64 {
    u64::MAX
}

#[derive(serde::Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
enum Request {
    LoadMetadata {
        path: String,
        #[serde(default)]
        recursive: bool,
    },
    Free {
        path: String,
    },
    Load {
        path: String,
        #[serde(default)]
        first: u64,
        #[serde(default = "all_pages")]
        count: u64,
    },
    Cluster,
    Pin {
        path: String,
        pinned: bool,
    },
    SetTtl {
        path: String,
        after_ms: Option<u64>,
        action: alluxio_metaserver::TtlAction,
    },
}

async fn answer(line: &str, metrics: &Metrics, info: &MountInfo, vfs: Option<&Vfs>) -> String {
    if line == "stats" {
        return stats_json(metrics, info);
    }
    match (serde_json::from_str::<Request>(line), vfs) {
        (Ok(Request::LoadMetadata { path, recursive }), Some(vfs)) => {
            match vfs.load_metadata(&path, recursive).await {
                Ok(n) => serde_json::json!({ "listed": n }).to_string(),
                Err(e) => serde_json::json!({ "error": e.to_string(), "errno": e.errno() })
                    .to_string(),
            }
        }
        (
            Ok(Request::SetTtl {
                path,
                after_ms,
                action,
            }),
            Some(vfs),
        ) => match vfs.set_ttl(&path, after_ms, action).await {
            Ok(()) => serde_json::json!({ "ok": true }).to_string(),
            Err(e) => serde_json::json!({ "error": e.to_string(), "errno": e.errno() }).to_string(),
        },
        (Ok(Request::Pin { path, pinned }), Some(vfs)) => match vfs.pin(&path, pinned).await {
            Ok(n) => serde_json::json!({ "pinned_files": n }).to_string(),
            Err(e) => serde_json::json!({ "error": e.to_string(), "errno": e.errno() }).to_string(),
        },
        (Ok(Request::Free { path }), Some(vfs)) => match vfs.free(&path).await {
            Ok(f) => serde_json::json!({
                "files": f.files, "bytes_freed": f.bytes, "busy": f.busy,
                "bytes_freed_on_peers": f.bytes_on_peers, "peers_unreachable": f.peers_unreachable,
            })
            .to_string(),
            Err(e) => serde_json::json!({ "error": e.to_string(), "errno": e.errno() }).to_string(),
        },
        (
            Ok(Request::Load {
                path,
                first,
                count,
            }),
            Some(vfs),
        ) => match vfs.load(&path, first, count).await {
            Ok(r) => serde_json::json!(r).to_string(),
            Err(e) => serde_json::json!({ "error": e.to_string(), "errno": e.errno() }).to_string(),
        },
        (Ok(Request::Cluster), Some(vfs)) => {
            let nodes: Vec<_> = vfs
                .cluster_report()
                .await
                .into_iter()
                .map(|(addr, r)| match r {
                    Ok(counters) => serde_json::json!({ "addr": addr, "counters": counters }),
                    Err(e) => serde_json::json!({ "addr": addr, "error": e }),
                })
                .collect();
            serde_json::json!({ "nodes": nodes }).to_string()
        }
        _ => serde_json::json!({"error": "unknown request; send \"stats\" or a load-metadata, load, free or cluster object"})
            .to_string(),
    }
}

/// Binds the socket at `path` (replacing a stale one) and serves it on `rt`; `vfs` runs
/// the requests that act on the mount.
pub fn serve(
    path: PathBuf,
    metrics: Arc<Metrics>,
    info: MountInfo,
    vfs: Option<Arc<Vfs>>,
    rt: &tokio::runtime::Handle,
) -> std::io::Result<ControlServer> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let _ = std::fs::remove_file(&path);
    let listener = {
        let _g = rt.enter();
        UnixListener::bind(&path)?
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let task = rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            let info = info.clone();
            let vfs = vfs.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut line = String::new();
                let mut r = BufReader::new(r.take(8192));
                let read =
                    tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line)).await;
                let reply = match read {
                    Ok(Ok(_)) => answer(line.trim(), &metrics, &info, vfs.as_deref()).await,
                    _ => serde_json::json!({"error": "no request line"}).to_string(),
                };
                let _ = w.write_all(reply.as_bytes()).await;
                let _ = w.write_all(b"\n").await;
            });
        }
    });
    Ok(ControlServer { path, task })
}

/// Sends `cmd` to the control socket at `path` and returns the answer (blocking; the
/// answer must come within `timeout`).
pub fn query(path: &Path, cmd: &str, timeout: Duration) -> std::io::Result<String> {
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(cmd.as_bytes())?;
    s.write_all(b"\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stats_round_trip_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        Metrics::add(&m.ufs_reads, 3);
        let info = MountInfo {
            mountpoint: "/mnt/x".into(),
            ufs: "memory://".into(),
            state_dir: "/s".into(),
            cache_dir: "/c".into(),
        };
        let sock = dir.path().join("run/x.sock");
        let _srv = serve(
            sock.clone(),
            m,
            info,
            None,
            &tokio::runtime::Handle::current(),
        )
        .unwrap();
        let s2 = sock.clone();
        let out = tokio::task::spawn_blocking(move || query(&s2, "stats", Duration::from_secs(5)))
            .await
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["counters"]["ufs_reads"], 3);
        let out =
            tokio::task::spawn_blocking(move || query(&sock, "bogus", Duration::from_secs(5)))
                .await
                .unwrap()
                .unwrap();
        assert!(out.contains("error"));
    }
}
