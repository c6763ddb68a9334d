//! Following the cluster's membership in the metaserver: a member that serves peers
//! renews its lease every [`HEARTBEAT`]; a host that asks peers reads the live members
//! every [`HEARTBEAT`] and rebuilds its ring when the membership's version changes (a
//! join, a leave, a lease that ran out). The membership lives in the namespace store, so
//! it moves with the namespace.

use std::sync::Arc;
use std::time::Duration;

use alluxio_metaserver::ClusterMember;

use super::client::Peers;
use super::ring::Member;
use crate::meta::MetaClient;
use crate::metrics::Metrics;

/// How often a member renews its lease and a client looks at the membership.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long a member stays without renewing (by default): then it leaves the ring.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);

/// Runs until the task is dropped: registers `me` (if this host serves) and keeps
/// `peers` (if this host asks) on the live members plus `statics`.
pub async fn follow(
    meta: Arc<dyn MetaClient>,
    peers: Option<Arc<Peers>>,
    statics: Vec<Member>,
    me: Option<Member>,
    lease: Duration,
    metrics: Arc<Metrics>,
) {
    let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
    let mut seen = None;
    let mut failing = false;
    loop {
        let mut res = Ok(());
        if let Some(me) = &me {
            let member = ClusterMember {
                addr: me.addr.clone(),
                weight: me.weight,
            };
            res = meta.register_member(member, lease_ms).await.map(|_| ());
        }
        if let (Ok(()), Some(peers)) = (&res, &peers) {
            match meta.members().await {
                Ok(m) if seen != Some(m.version) => {
                    seen = Some(m.version);
                    let mut all = statics.clone();
                    all.extend(m.members.into_iter().map(|c| Member {
                        addr: c.addr,
                        weight: c.weight,
                    }));
                    all.extend(me.clone());
                    peers.set_members(all);
                    let n = peers.ring().members().len() as u64;
                    metrics
                        .peer_members
                        .store(n, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(members = n, "cluster membership changed");
                }
                Ok(_) => {}
                Err(e) => res = Err(e),
            }
        }
        // Logged when it starts failing and when it recovers, not every second.
        match res {
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot reach the metaserver for the cluster membership; keeping the last one");
            }
            Ok(()) if failing => {
                failing = false;
                tracing::info!("cluster membership followed again");
            }
            _ => {}
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
}
