//! `alluxio peer-bench --membership ADDR`: the metaserver's side of a cluster's
//! membership, measured. `--members N` members are registered (with leases long enough
//! to outlive the run), then `--parallel` clients renew a member's lease and read the
//! membership back, as fast as the metaserver answers, for `--seconds`: each heartbeat
//! of a node is one renewal and one read, each daemon's one read. The metaserver's CPU
//! is measured by the script, from /proc.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use alluxio::meta::RunOp;
use alluxio::meta::remote::RemoteMeta;
use alluxio_metaserver::ClusterMember;
use alluxio_metaserver::rpc::{Op, Value};

fn member(i: u64) -> ClusterMember {
    ClusterMember {
        addr: format!(
            "10.{}.{}.{}:7080",
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff
        ),
        weight: 1 << 40,
    }
}

/// Runs the measurement against the metaserver at `addr`.
pub async fn run(addr: &str, token: &str, members: u64, parallel: usize, secs: u64) -> Result<()> {
    let lease_ms = (secs + 60) * 1000;
    let m = RemoteMeta::connect(addr, token)
        .await
        .map_err(anyhow::Error::msg)?;
    for i in 0..members {
        m.run(Op::RegisterMember {
            member: member(i),
            lease_ms,
        })
        .await?;
    }
    let (renewals, lists, listed_bytes) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let (t0, c0) = (Instant::now(), crate::ufs_bench::cpu_seconds());
    let until = t0 + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..parallel as u64 {
        let m = RemoteMeta::connect(addr, token)
            .await
            .map_err(anyhow::Error::msg)?;
        let (renewals, lists, listed_bytes) =
            (renewals.clone(), lists.clone(), listed_bytes.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while Instant::now() < until {
                m.run(Op::RegisterMember {
                    member: member(i % members.max(1)),
                    lease_ms,
                })
                .await?;
                renewals.fetch_add(1, Ordering::Relaxed);
                let Value::Membership(ms) = m.run(Op::Members).await? else {
                    bail!("unexpected answer to Members");
                };
                if ms.members.len() as u64 != members {
                    bail!("{} members listed, {members} registered", ms.members.len());
                }
                lists.fetch_add(1, Ordering::Relaxed);
                let bytes: usize = ms.members.iter().map(|c| c.addr.len() + 40).sum();
                listed_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                i += parallel as u64;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let took = t0.elapsed().as_secs_f64();
    let cpu = crate::ufs_bench::cpu_seconds() - c0;
    let (r, l) = (
        renewals.load(Ordering::Relaxed),
        lists.load(Ordering::Relaxed),
    );
    println!(
        "{}",
        serde_json::json!({
            "what": "membership", "members": members, "seconds": took,
            "renewals": r, "lists": l,
            "renewals_per_s": r as f64 / took, "lists_per_s": l as f64 / took,
            "approx_listed_bytes_per_list": listed_bytes.load(Ordering::Relaxed) / l.max(1),
            "client_cpu_s": cpu,
        })
    );
    Ok(())
}
