//! The cluster cache through the real binary and the kernel: daemons that serve their
//! caches to each other (`--serve-peers`) on a static list (`-o peers=`), over one store.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on failure by design"
)]

mod support;

use std::time::Duration;

use support::*;

fn counter(env: &Env, name: &str) -> u64 {
    env.stats()["counters"][name].as_u64().unwrap()
}

/// Two embedded daemons with `--serve-peers` and a static peer list share what either has
/// read: each page is read from the store once for the pair (by its owner on the ring),
/// and a file one daemon has read is read whole and right through the other with no
/// store read of its own.
#[test]
fn cli_two_daemons_with_a_static_peer_list_share_what_either_has_read() {
    let (pa, pb) = (free_addr(), free_addr());
    let mut a = Env::new();
    let mut b = Env::new();
    let body = pattern(12 << 20, 7);
    std::fs::write(a.ufs().join("f"), &body).unwrap();
    let token = a.base.path().join("token");
    std::fs::write(&token, "cluster-secret\n").unwrap();
    // A long peer timeout: a slow answer on a loaded machine must not skip a peer here.
    let peers = format!("peers={pa},{pb},peer_timeout=10000");
    let args = |me: &str| {
        [
            "--serve-peers",
            me,
            "--token-file",
            token.to_str().unwrap(),
            "-o",
            &peers,
        ]
        .map(String::from)
    };
    let ufs = a.ufs();
    let (args_a, args_b) = (args(&pa), args(&pb));
    a.mount_on(
        Some(&ufs),
        &args_a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    b.mount_on(
        Some(&ufs),
        &args_b.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(
        std::fs::read(a.mnt().join("f")).unwrap() == body,
        "through A"
    );
    let (a1, b1) = (counter(&a, "ufs_reads"), counter(&b, "ufs_reads"));
    // Each page read once, by its owner: A's own pages by A, B's by B as it served A.
    let owned = owned_pages(&ufs, "f", 12, &[pa.as_str(), pb.as_str()]);
    assert_eq!(
        vec![a1, b1],
        owned,
        "store reads by A and B vs pages each owns"
    );
    assert_eq!(counter(&a, "peer_hits"), b1, "A got B's pages from B");
    assert!(
        std::fs::read(b.mnt().join("f")).unwrap() == body,
        "through B"
    );
    assert_eq!(counter(&b, "ufs_reads"), b1, "B's read cost no store read");
    assert_eq!(counter(&b, "peer_hits"), a1, "B got A's pages from A");
}

/// A wrong token on a peer's list: the daemons refuse each other, and each reads the
/// store itself; nothing is served across, no read fails.
#[test]
fn cli_daemons_with_different_tokens_do_not_share() {
    let (pa, pb) = (free_addr(), free_addr());
    let mut a = Env::new();
    let mut b = Env::new();
    let body = pattern(3 << 20, 8);
    std::fs::write(a.ufs().join("f"), &body).unwrap();
    let (ta, tb) = (a.base.path().join("t"), b.base.path().join("t"));
    std::fs::write(&ta, "one").unwrap();
    std::fs::write(&tb, "other").unwrap();
    let peers = format!("peers={pa},{pb}");
    let ufs = a.ufs();
    a.mount_on(
        Some(&ufs),
        &[
            "--serve-peers",
            &pa,
            "--token-file",
            ta.to_str().unwrap(),
            "-o",
            &peers,
        ],
    );
    b.mount_on(
        Some(&ufs),
        &[
            "--serve-peers",
            &pb,
            "--token-file",
            tb.to_str().unwrap(),
            "-o",
            &peers,
        ],
    );
    assert!(std::fs::read(a.mnt().join("f")).unwrap() == body);
    assert!(std::fs::read(b.mnt().join("f")).unwrap() == body);
    assert_eq!(counter(&a, "peer_hits") + counter(&b, "peer_hits"), 0);
    assert!(counter(&a, "peer_refused") + counter(&b, "peer_refused") > 0);
}

/// A running `alluxio cache-node`, killed on drop.
struct CacheNode {
    child: std::process::Child,
    addr: String,
    metrics: String,
    _dir: tempfile::TempDir,
}

impl CacheNode {
    fn start(ufs: &std::path::Path, token: &std::path::Path) -> Self {
        let mut args = vec!["--ufs".to_string(), ufs.to_str().unwrap().to_string()];
        args.extend(["--token-file".into(), token.to_str().unwrap().into()]);
        Self::start_with(&args)
    }

    /// A node that takes its stores from a metaserver and joins its membership.
    fn joined(ms: &Metaserver) -> Self {
        let mut args = ms.args();
        args.extend(["--lease".into(), "2".into()]);
        Self::start_with(&args)
    }

    fn start_with(extra: &[String]) -> Self {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let metrics = free_addr();
        let mut child = std::process::Command::new(BIN)
            .args([
                "cache-node",
                "--listen",
                "127.0.0.1:0",
                "--cache-size",
                "1GiB",
            ])
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(extra)
            .args(["--metrics-listen", &metrics])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("cache node said {line:?}"))
            .to_string();
        Self {
            child,
            addr,
            metrics,
            _dir: dir,
        }
    }

    fn counter(&self, name: &str) -> u64 {
        let (_, body) = http_get(&self.metrics, "/metrics");
        let key = format!("alluxio_{name} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in the node's metrics")) as u64
    }
}

impl Drop for CacheNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `f` whole through A, then through B, and checks both.
fn read_through_both(a: &Env, b: &Env, body: &[u8]) {
    assert!(
        std::fs::read(a.mnt().join("f")).unwrap() == body,
        "through A"
    );
    assert!(
        std::fs::read(b.mnt().join("f")).unwrap() == body,
        "through B"
    );
}

/// An env whose store holds `f` (`mib` MiB), a token file, and three cache nodes over
/// that store.
fn with_nodes(
    mib: usize,
    seed: u32,
) -> (
    Env,
    std::path::PathBuf,
    Vec<u8>,
    std::path::PathBuf,
    Vec<CacheNode>,
) {
    let a = Env::new();
    let ufs = a.ufs();
    let body = pattern(mib << 20, seed);
    std::fs::write(ufs.join("f"), &body).unwrap();
    let token = a.base.path().join("token");
    std::fs::write(&token, "cluster-secret").unwrap();
    let nodes = (0..3).map(|_| CacheNode::start(&ufs, &token)).collect();
    (a, ufs, body, token, nodes)
}

fn addrs(nodes: &[CacheNode]) -> Vec<&str> {
    nodes.iter().map(|n| n.addr.as_str()).collect()
}

/// A daemon's arguments to ask `nodes`.
fn daemon_args(token: &std::path::Path, nodes: &[CacheNode]) -> Vec<String> {
    let t = token.to_str().unwrap();
    ["--token-file", t, "-o", &peers_of(nodes)]
        .map(String::from)
        .to_vec()
}

/// `peers=` with the nodes' addresses.
fn peers_of(nodes: &[CacheNode]) -> String {
    let list: Vec<&str> = nodes.iter().map(|n| n.addr.as_str()).collect();
    format!("peers={},peer_timeout=10000", list.join(","))
}

/// Three cache nodes and two FUSE daemons that only ask: a file read through A is read
/// whole and right through B with zero store reads by B, and each page was read from the
/// store once, by its owning node.
#[test]
fn cli_three_cache_nodes_serve_two_daemons() {
    let (mut a, ufs, body, token, nodes) = with_nodes(16, 9);
    let mut b = Env::new();
    let args = daemon_args(&token, &nodes);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    a.mount_on(Some(&ufs), &args);
    b.mount_on(Some(&ufs), &args);
    read_through_both(&a, &b, &body);
    let node_reads: Vec<u64> = nodes.iter().map(|n| n.counter("ufs_reads")).collect();
    assert_eq!(
        (counter(&a, "ufs_reads"), counter(&b, "ufs_reads")),
        (0, 0),
        "the daemons read nothing from the store; the nodes read {node_reads:?}"
    );
    assert_eq!(
        node_reads.iter().sum::<u64>(),
        16,
        "each page once: {node_reads:?}"
    );
    let owned = owned_pages(&ufs, "f", 16, &addrs(&nodes));
    assert_eq!(node_reads, owned, "each node read the pages it owns");
    assert_eq!(counter(&b, "peer_hits"), 16);
}

/// How many of the first `pages` pages of `key` each node owns on the ring the daemons
/// build from the list (computed as a daemon does: store, key, version, page).
fn owned_pages(ufs: &std::path::Path, key: &str, pages: u64, addrs: &[&str]) -> Vec<u64> {
    use alluxio::peer::ring::{Member, Ring};
    let cfg =
        alluxio::config::UfsConfig::parse(ufs.to_str().unwrap(), &Default::default()).unwrap();
    let store = alluxio::ufs::Ufs::new(&cfg, Default::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let info = rt.block_on(store.stat(key)).unwrap();
    let id = store.object_id(key, &info.version);
    let ring = Ring::new(addrs.iter().map(|a| Member {
        addr: a.to_string(),
        weight: 1,
    }));
    let mut owned = vec![0u64; addrs.len()];
    for p in 0..pages {
        let owner = &ring.owners(&id, p, 1)[0];
        owned[addrs.iter().position(|a| *a == owner.addr).unwrap()] += 1;
    }
    owned
}

/// Kill -9 one of three nodes in the middle of a read of a 64 MiB file: the read completes
/// with the right bytes. The store reads it causes are bounded by that node's share: the
/// survivors read the pages they own once each, plus at most the dead node's pages (read
/// by the next owner instead), never the whole file again; the daemon reads none itself.
/// After it failed, the node is not asked again.
#[test]
fn cli_a_cache_node_killed_mid_read_costs_only_its_share() {
    use std::io::Read;
    let (mut a, ufs, body, token, mut nodes) = with_nodes(64, 10);
    let other = pattern(8 << 20, 11);
    std::fs::write(ufs.join("g"), &other).unwrap();
    let peers = peers_of(&nodes);
    // No read-ahead past what the kernel asks: the pages after the kill are still to come.
    a.mount_on(
        Some(&ufs),
        &[
            "--token-file",
            token.to_str().unwrap(),
            "--prefetch-pages",
            "0",
            "-o",
            &peers,
        ],
    );
    let mut f = std::fs::File::open(a.mnt().join("f")).unwrap();
    let mut got = vec![0u8; 8 << 20];
    f.read_exact(&mut got).unwrap();
    let owned = owned_pages(&ufs, "f", 64, &addrs(&nodes));
    let victim = nodes.remove(1);
    drop(victim); // SIGKILL
    f.read_to_end(&mut got).unwrap();
    assert!(got == body, "the read completed with the right bytes");
    let survivors: u64 = nodes.iter().map(|n| n.counter("ufs_reads")).sum();
    let (own, dead) = (owned[0] + owned[2], owned[1]);
    assert!(
        (own..=own + dead).contains(&survivors),
        "survivors read {survivors} pages from the store; they own {own}, the dead node {dead}"
    );
    assert_eq!(
        counter(&a, "ufs_reads"),
        0,
        "the next owner read the dead node's pages"
    );
    // Once it failed, the dead node is not asked again: reading another file, with pages
    // it owned, adds no peer error.
    let errors = counter(&a, "peer_errors");
    assert!(errors > 0, "the dead node's pages were asked of it first");
    assert!(std::fs::read(a.mnt().join("g")).unwrap() == other);
    assert_eq!(
        counter(&a, "peer_errors"),
        errors,
        "the dead node was asked again"
    );
}

/// One metaserver, three cache nodes that join its membership, and two FUSE daemons on
/// it: a file read through A is read whole and right through B with zero store reads by
/// B, from the nodes. A node killed -9 leaves the ring once its lease (2 s) runs out, and
/// reads after that do not wait on it (no peer error at all).
#[test]
fn cli_metaserver_membership_three_nodes_two_daemons() {
    let ms = Metaserver::start("cluster-token");
    let mut a = Env::new();
    let mut b = Env::new();
    let ufs = a.ufs();
    let body = pattern(16 << 20, 12);
    std::fs::write(ufs.join("f"), &body).unwrap();
    let other = pattern(8 << 20, 13);
    std::fs::write(ufs.join("g"), &other).unwrap();
    let mut root = vec!["fs".to_string()];
    root.extend(ms.args());
    root.extend(["mount", "/", ufs.to_str().unwrap()].map(String::from));
    let o = a.run(&root.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut nodes: Vec<CacheNode> = (0..3).map(|_| CacheNode::joined(&ms)).collect();
    let mut args = ms.args();
    args.extend(["-o".into(), "peer_timeout=10000".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    a.mount_on(None, &args);
    b.mount_on(None, &args);
    for env in [&a, &b] {
        assert!(
            within(Duration::from_secs(20), || counter(env, "peer_members")
                == 3),
            "the daemon never saw the three nodes"
        );
    }
    read_through_both(&a, &b, &body);
    let node_reads: u64 = nodes.iter().map(|n| n.counter("ufs_reads")).sum();
    assert_eq!(
        (
            counter(&a, "ufs_reads"),
            counter(&b, "ufs_reads"),
            node_reads
        ),
        (0, 0, 16),
        "the daemons read nothing from the store; the nodes each page once"
    );
    // A node dies; once its lease runs out the daemons' rings no longer hold it.
    drop(nodes.remove(0));
    assert!(
        within(Duration::from_secs(20), || counter(&b, "peer_members") == 2),
        "the dead node stayed on B's ring"
    );
    let errors = counter(&b, "peer_errors");
    assert!(std::fs::read(b.mnt().join("g")).unwrap() == other);
    assert_eq!(
        counter(&b, "peer_errors"),
        errors,
        "a read waited on the dead node"
    );
    assert_eq!(
        counter(&b, "ufs_reads"),
        0,
        "g came from the two live nodes"
    );
}

/// A file written and closed through A is read by B from the cluster, not the store: once
/// durable, its pages were pushed to their owners (three cache nodes here), so neither B
/// nor the nodes read the store for it.
#[test]
fn cli_a_file_written_through_one_daemon_is_read_by_another_from_the_cluster() {
    let (mut a, ufs, _, token, nodes) = with_nodes(1, 14);
    let args = daemon_args(&token, &nodes);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    a.mount_on(Some(&ufs), &args);
    let written = pattern((10 << 20) + 5, 15);
    std::fs::write(a.mnt().join("w"), &written).unwrap();
    assert!(
        within(Duration::from_secs(30), || counter(&a, "peer_pushes") == 11),
        "pushed {} of 11 pages",
        counter(&a, "peer_pushes")
    );
    let taken: u64 = nodes.iter().map(|n| n.counter("peer_pages_received")).sum();
    assert_eq!(taken, 11, "the owners took the pages");
    let mut b = Env::new();
    b.mount_on(Some(&ufs), &args);
    assert!(
        std::fs::read(b.mnt().join("w")).unwrap() == written,
        "through B"
    );
    let node_reads: u64 = nodes.iter().map(|n| n.counter("ufs_reads")).sum();
    assert_eq!(
        (counter(&b, "ufs_reads"), node_reads),
        (0, 0),
        "B's read came from the owners' caches"
    );
    assert_eq!(counter(&b, "peer_hits"), 11);
}

/// Bad cluster input gets one line and leaves nothing running or mounted: a peer list
/// entry that is not HOST:PORT, a peer port already taken, a cache node without a token
/// or with a lease out of range.
#[test]
fn cli_bad_cluster_input_is_one_line() {
    let env = Env::new();
    let (m, u) = (env.mnt(), env.ufs());
    let (m, u) = (m.to_str().unwrap(), u.to_str().unwrap());
    let token = env.base.path().join("token");
    std::fs::write(&token, "t").unwrap();
    let t = token.to_str().unwrap();
    let mount = ["fuse", "mount", m, "--ufs", u, "--token-file", t];
    refused(
        &env,
        &[&mount[..], &["-o", "peers=nohost"]].concat(),
        "HOST:PORT",
    );
    refused(
        &env,
        &[&mount[..], &["-o", "peers=a:1,peer_timeout=0"]].concat(),
        "peer_timeout",
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    refused(
        &env,
        &[&mount[..], &["--serve-peers", &addr]].concat(),
        "cannot serve peers",
    );
    let mut no_token = env.cmd();
    no_token
        .args([
            "cache-node",
            "--listen",
            "127.0.0.1:0",
            "--cache-dir",
            u,
            "--cache-size",
            "1GiB",
        ])
        .env_remove("ALLUXIO_TOKEN");
    let o = with_timeout(no_token, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("needs a token"),
        "{err}"
    );
    let node = [
        "cache-node",
        "--listen",
        "127.0.0.1:0",
        "--cache-dir",
        u,
        "--cache-size",
        "1GiB",
    ];
    refused(
        &env,
        &[&node[..], &["--token-file", t, "--lease", "0"]].concat(),
        "--lease",
    );
    let bad_size = [
        "cache-node",
        "--listen",
        "127.0.0.1:0",
        "--cache-dir",
        u,
        "--cache-size",
        "lots",
        "--token-file",
        t,
    ];
    refused(&env, &bad_size, "--cache-size");
}

/// Runs `alluxio fs ARGS --json` and parses its answer.
fn fs_json(env: &Env, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["fs"];
    all.extend_from_slice(args);
    all.push("--json");
    let o = env.run(&all);
    assert!(
        o.status.success(),
        "fs {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `alluxio fs load -R` through a daemon that only asks: every page goes to its owning
/// node, which reads it from the store (the daemon reads nothing and no bytes come back
/// to it); a second daemon then reads the file whole with no store read; loading again
/// reads nothing; `fs report` lists the three nodes with their figures; `fs free` drops
/// the pages on the nodes.
#[test]
fn cli_fs_load_is_spread_over_the_nodes_and_report_and_free_cover_them() {
    let (mut a, ufs, body, token, nodes) = with_nodes(12, 23);
    let mut b = Env::new();
    let args = daemon_args(&token, &nodes);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    a.mount_on(Some(&ufs), &args);
    b.mount_on(Some(&ufs), &args);
    let mnt = a.mnt().to_str().unwrap().to_string();
    let v = fs_json(&a, &["load", "-R", &mnt]);
    assert_eq!(
        (
            v["files"].as_u64(),
            v["pages"].as_u64(),
            v["read_by_peers"].as_u64()
        ),
        (Some(1), Some(12), Some(12)),
        "{v}"
    );
    let node_reads: Vec<u64> = nodes.iter().map(|n| n.counter("ufs_reads")).collect();
    assert_eq!(node_reads, owned_pages(&ufs, "f", 12, &addrs(&nodes)));
    assert_eq!(counter(&a, "ufs_reads"), 0);
    assert_eq!(counter(&a, "bytes_from_peers"), 0, "no bytes came to A");
    let again = fs_json(&a, &["load", "-R", &mnt]);
    assert_eq!(again["cached_before"].as_u64(), Some(12), "{again}");

    assert!(std::fs::read(b.mnt().join("f")).unwrap() == body);
    assert_eq!(counter(&b, "ufs_reads"), 0, "B read it all from the nodes");
    let sum: u64 = nodes.iter().map(|n| n.counter("ufs_reads")).sum();
    assert_eq!(sum, 12, "the nodes read each page once in all");

    let r = fs_json(&a, &["report"]);
    let mine = r["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountpoint"].as_str() == a.mnt().to_str())
        .expect("A in the report")
        .clone();
    let peers = mine["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 3, "{mine}");
    let served: u64 = peers
        .iter()
        .map(|p| p["peer_pages_served"].as_u64().unwrap())
        .sum();
    assert_eq!(served, 12, "B's reads, as the nodes count them: {peers:?}");
    assert!(peers.iter().all(|p| p["disk_cache_capacity"] == 1u64 << 30));

    let f = a.mnt().join("f");
    let freed = fs_json(&a, &["free", f.to_str().unwrap()]);
    assert_eq!(freed["peers_unreachable"].as_u64(), Some(0), "{freed}");
    assert!(
        freed["bytes_freed_on_peers"].as_u64().unwrap() >= 12 << 20,
        "{freed}"
    );
    let again = fs_json(&a, &["load", f.to_str().unwrap()]);
    assert_eq!(
        (
            again["cached_before"].as_u64(),
            again["read_by_peers"].as_u64()
        ),
        (Some(0), Some(12)),
        "freed everywhere: {again}"
    );
}
