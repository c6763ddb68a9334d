//! The cluster cache through the real binary and the kernel: daemons that serve their
//! caches to each other (`--serve-peers`) on a static list (`-o peers=`), over one store.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on failure by design"
)]

mod support;

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
    let peers = format!("peers={pa},{pb}");
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
    assert_eq!(
        a1 + b1,
        12,
        "each of the 12 pages read from the store once: A {a1}, B {b1}"
    );
    assert!(
        b1 > 0 && counter(&a, "peer_hits") > 0,
        "A got B's pages from B"
    );
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
