//! Lookups in directories the mount has not listed yet: on a remote store the name's own
//! key is asked (one HEAD) beside the listing, so a file is found in one round trip however
//! large its directory, and the listing still reconciles the directory afterwards.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use alluxio::fault::{Call, Fault, Rule};
use alluxio::types::InodeNo;

use crate::harness::{Env, Options, Store, data, eventually};

/// The names in directory `dir`, sorted, without `.` and `..`.
fn names(env: &Env, dir: InodeNo) -> Vec<(String, InodeNo)> {
    let fh = env.rt.block_on(env.vfs.opendir(dir)).unwrap();
    let entries = env.vfs.readdir(fh, 0, usize::MAX).unwrap();
    env.vfs.releasedir(fh);
    let mut out: Vec<_> = entries
        .into_iter()
        .map(|(_, e)| (String::from_utf8(e.name).unwrap(), e.ino))
        .filter(|(n, _)| n != "." && n != "..")
        .collect();
    out.sort();
    out
}

/// A lookup on a background thread, so a test can tell an answer from a wait.
fn lookup_within(
    env: &Env,
    dir: InodeNo,
    name: &str,
    limit: Duration,
) -> Option<Result<InodeNo, i32>> {
    let vfs = env.vfs.clone();
    let name = name.as_bytes().to_vec();
    let (tx, rx) = std::sync::mpsc::channel();
    env.rt.spawn(async move {
        let _ = tx.send(
            vfs.lookup(dir, &name)
                .await
                .map(|r| r.ino)
                .map_err(|e| e.errno()),
        );
    });
    rx.recv_timeout(limit).ok()
}

#[test]
fn vfs_a_file_in_a_directory_not_listed_yet_is_found_while_its_listing_stalls() {
    let env = Env::new();
    let bodies: Vec<Vec<u8>> = (0..3).map(|i| data(1000 + i, 60 + i as u64)).collect();
    for (i, b) in bodies.iter().enumerate() {
        env.put_underneath(&format!("big/f{i}"), b);
    }
    env.put_underneath("big/sub/x", b"x");
    let big = env.ino("big");
    let lists = env.faults.calls(Call::List);
    env.faults.inject(Rule::new(Call::List, Fault::Stall(None)));
    let f1 = lookup_within(&env, big, "f1", Duration::from_secs(3))
        .expect("the lookup waited for the stalled listing")
        .unwrap();
    assert!(
        eventually(Duration::from_secs(3), || env.faults.calls(Call::List)
            > lists),
        "the listing was started too"
    );
    // Its bytes, by the version the HEAD gave.
    assert!(env.read_all(f1).unwrap() == bodies[1]);
    // A name that is no file (a directory, or nothing) is the listing's to answer.
    let sub = lookup_within(&env, big, "sub", Duration::from_millis(300));
    assert!(
        sub.is_none(),
        "a directory was answered before its parent's listing"
    );
    let none = lookup_within(&env, big, "nothing", Duration::from_millis(300));
    assert!(
        none.is_none(),
        "a missing name was answered before the listing"
    );
    env.faults.clear();
    // The listing reconciles the directory and keeps the inode the lookup handed out.
    assert!(eventually(Duration::from_secs(5), || {
        env.rt
            .block_on(env.vfs.lookup(big, b"nothing"))
            .err()
            .map(|e| e.errno())
            == Some(libc::ENOENT)
    }));
    let listed = names(&env, big);
    let want: Vec<&str> = vec!["f0", "f1", "f2", "sub"];
    assert_eq!(
        listed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        want
    );
    assert_eq!(listed[1].1, f1, "the listing kept the adopted inode");
    assert_eq!(
        env.resolve("big/sub/x").map(|i| env.read_all(i).unwrap()),
        Ok(b"x".to_vec())
    );
    for (i, b) in bodies.iter().enumerate() {
        assert!(env.read_all(env.ino(&format!("big/f{i}"))).unwrap() == *b);
    }
}

#[test]
fn vfs_a_failing_head_leaves_the_lookup_to_the_listing() {
    let env = Env::new();
    env.put_underneath("d/f", b"hello");
    let d = env.ino("d");
    env.faults
        .inject(Rule::new(Call::Stat, Fault::Fail { temporary: false }));
    // The listing answers a moment later, so the HEAD beside it is sent first (an
    // in-memory listing could otherwise finish before the lookup asks).
    env.faults.inject(Rule::new(
        Call::List,
        Fault::Stall(Some(Duration::from_millis(200))),
    ));
    assert_eq!(env.read_all(env.ino("d/f")).unwrap(), b"hello");
    assert!(env.faults.fired() > 0, "the HEAD was sent");
    assert_eq!(names(&env, d).len(), 1);
}

#[test]
fn vfs_a_local_directory_store_is_listed_not_probed() {
    let env = Env::with(Options {
        store: Store::Dir,
        ..Default::default()
    });
    env.put_underneath("d/f", b"hello");
    let stats = env.metrics.ufs_stats.load(Relaxed);
    let f = env.ino("d/f");
    assert_eq!(
        env.metrics.ufs_stats.load(Relaxed),
        stats,
        "no HEAD on a local store"
    );
    assert_eq!(env.read_all(f).unwrap(), b"hello");
}
