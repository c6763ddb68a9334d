//! The embedded metadata client: the namespace in this process, on a redb file (or in
//! memory for tests).
//!
//! Point operations (lookups, creates, attribute changes) run inline on the calling
//! thread: a redb transaction that is not fsynced costs microseconds, less than the hop to
//! the blocking pool and back that used to dominate a create. They are called mostly from
//! FUSE session threads; on a runtime worker they block it for that long at most. Calls
//! that can take long, listing reconciliation, readdir of a whole directory and the
//! durable `sync`, run where blocking is allowed (`offload`: the blocking pool from a
//! runtime worker).

use std::sync::Arc;

use async_trait::async_trait;

use alluxio_metaserver::rpc::{Op, Value, dispatch};
use alluxio_metaserver::{MetaError, Namespace, NamespaceStore};

use super::RunOp;
use crate::types::now_ns;

/// A namespace served in-process.
pub struct EmbeddedMeta<S> {
    ns: Arc<Namespace<S>>,
}

impl<S: NamespaceStore> EmbeddedMeta<S> {
    /// Wraps an opened namespace.
    pub fn new(ns: Namespace<S>) -> Self {
        Self { ns: Arc::new(ns) }
    }

    async fn run_blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Namespace<S>) -> Result<R, MetaError> + Send + 'static,
    ) -> Result<R, MetaError> {
        let ns = self.ns.clone();
        crate::offload::run(move || f(&ns))
            .await
            .map_err(|e| MetaError::Storage(format!("namespace task failed: {e}")))?
    }
}

#[async_trait]
impl<S: NamespaceStore> RunOp for EmbeddedMeta<S> {
    async fn run(&self, op: Op) -> Result<Value, MetaError> {
        match op {
            // Calls that can take long run on the blocking pool (see the module comment).
            Op::LoadDir { .. }
            | Op::ResyncDir { .. }
            | Op::List { .. }
            | Op::Sync
            | Op::Fsck { .. } => {
                self.run_blocking(move |ns| dispatch(ns, op, now_ns()))
                    .await
            }
            _ => dispatch(&self.ns, op, now_ns()),
        }
    }
}
