//! TTL expiry (`alluxio fs setTtl`): every daemon checks the namespace's TTL table each
//! refresh. An expired `free` TTL drops the path's cached pages in every daemon (and keeps
//! doing so while the entry stays); an expired `delete` TTL is claimed with a
//! compare-and-remove, so exactly one daemon deletes the path, from the namespace and
//! the store.

use std::sync::Arc;

use alluxio_metaserver::{Ttl, TtlAction};

use super::Vfs;
use crate::error::FsError;
use crate::types::{FileKind, InodeNo, ROOT_INO, now_ns};

impl Vfs {
    /// `alluxio fs setTtl` for `path` relative to the mount root: expires `after_ms`
    /// from now (`None` clears it).
    pub async fn set_ttl(
        &self,
        path: &str,
        after_ms: Option<u64>,
        action: TtlAction,
    ) -> Result<(), FsError> {
        let abs = format!("/{}", path.trim_matches('/'));
        Ok(self.meta.set_ttl(abs, after_ms, action).await?)
    }

    /// Carries out the TTLs that have expired.
    pub(super) async fn apply_ttls(self: &Arc<Self>) -> Result<(), FsError> {
        let now = now_ns();
        for (path, ttl) in self.meta.ttls().await? {
            if ttl.expires_ns > now {
                continue;
            }
            let res = match ttl.action {
                TtlAction::Free => self.free(&path).await.map(|_| ()),
                TtlAction::Delete => self.expire_delete(&path, ttl).await,
            };
            match res {
                Ok(()) => {}
                Err(e) if e.errno() == libc::ENOENT => {}
                Err(e) => {
                    tracing::warn!(%path, error = %e, "TTL expiry failed; retried next round")
                }
            }
        }
        Ok(())
    }

    async fn expire_delete(self: &Arc<Self>, path: &str, ttl: Ttl) -> Result<(), FsError> {
        if !self.meta.take_ttl(path.to_string(), ttl).await? {
            return Ok(()); // another daemon has it
        }
        tracing::info!(%path, "TTL expired: deleting");
        let mut parent = ROOT_INO;
        let mut name: Option<&str> = None;
        for c in path.split('/').filter(|c| !c.is_empty()) {
            if let Some(n) = name {
                parent = self.lookup(parent, n.as_bytes()).await?.ino;
            }
            name = Some(c);
        }
        let Some(name) = name else {
            return Err(FsError::expected(libc::EPERM, "the root cannot expire"));
        };
        self.remove_tree(parent, name.as_bytes()).await
    }

    /// Removes `parent/name`, and everything below it if it is a directory.
    async fn remove_tree(self: &Arc<Self>, parent: InodeNo, name: &[u8]) -> Result<(), FsError> {
        let rec = self.lookup(parent, name).await?;
        if rec.kind != FileKind::Dir {
            return self.unlink(parent, name).await;
        }
        self.ensure_loaded(rec.ino).await?;
        for e in self.meta.list(rec.ino).await? {
            Box::pin(self.remove_tree(rec.ino, &e.name)).await?;
        }
        self.rmdir(parent, name).await
    }
}
