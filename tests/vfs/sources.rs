//! A page source injected into the fetch chain (between the local copies and the UFS, as
//! a peer cache will be), under a fault plan: what the fetcher does with its hits,
//! misses, failures, stalls and short answers.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use alluxio::fault::{Call, Fault, Faults, FaultySource, Rule};
use alluxio::fetch::{Fetched, PageRequest, PageSource};

use crate::harness::{Env, MIB, Options, data};

/// A source holding whole objects by key (a stand-in for a peer that has them).
struct Copies(HashMap<String, Vec<u8>>);

#[async_trait::async_trait]
impl PageSource for Copies {
    fn name(&self) -> &'static str {
        "copies"
    }

    async fn fetch(&self, req: &PageRequest<'_>) -> Fetched {
        let Some(b) = self.0.get(req.key.object.key()) else {
            return Fetched::Miss;
        };
        let r = req.range();
        Fetched::Hit(bytes::Bytes::copy_from_slice(
            &b[r.start as usize..r.end as usize],
        ))
    }
}

/// An env whose store holds `f` (3 pages and a bit) and whose chain has a source with a
/// copy of it, under the returned plan.
fn env() -> (Env, Faults, Vec<u8>) {
    let body = data(3 * MIB + 11, 5);
    let faults = Faults::new();
    let copies = Arc::new(Copies(HashMap::from([("f".to_string(), body.clone())])));
    let env = Env::with(Options {
        extra: vec![Arc::new(FaultySource::new(copies, faults.clone()))],
        ..Default::default()
    });
    env.put_underneath("f", &body);
    (env, faults, body)
}

fn store_reads(env: &Env) -> u64 {
    env.metrics.ufs_reads.load(Relaxed)
}

/// Pages the source has are not read from the store, and are put in the cache once: a
/// second read asks neither.
#[test]
fn vfs_pages_a_source_holds_never_reach_the_store_and_fill_the_cache() {
    let (env, faults, body) = env();
    let ino = env.ino("f");
    assert!(env.read_all(ino).unwrap() == body);
    assert_eq!((store_reads(&env), faults.calls(Call::Page)), (0, 4));
    assert!(env.read_all(ino).unwrap() == body);
    assert_eq!((store_reads(&env), faults.calls(Call::Page)), (0, 4));
}

/// A source that fails with "try the next" costs nothing but the attempt: the store
/// answers, with the right bytes.
#[test]
fn vfs_a_failing_source_falls_through_to_the_store() {
    let (env, faults, body) = env();
    faults.inject(Rule::new(Call::Page, Fault::Fail { temporary: true }));
    assert!(env.read_all(env.ino("f")).unwrap() == body);
    assert_eq!(store_reads(&env), 4);
}

/// A source that says the version is not the one it holds ends the walk with ESTALE:
/// the store is not asked for a version that is gone.
#[test]
fn vfs_a_source_that_says_changed_stops_the_walk() {
    let (env, faults, _) = env();
    faults.inject(Rule::new(Call::Page, Fault::Changed));
    let fh = env.open(env.ino("f"), false, false).unwrap();
    assert_eq!(env.read(fh, 0, 4096), Err(libc::ESTALE));
    assert_eq!(store_reads(&env), 0);
}

/// A page answered at the wrong length is a changed object: ESTALE, never the bytes, and
/// nothing is cached; asked again, the source's whole page is served.
#[test]
fn vfs_a_short_page_from_a_source_is_estale_and_not_cached() {
    let (env, faults, body) = env();
    faults.inject(Rule::new(Call::Page, Fault::Short(1)).times(1));
    let fh = env.open(env.ino("f"), false, false).unwrap();
    assert_eq!(env.read(fh, 0, 4096).map(|b| b.len()), Err(libc::ESTALE));
    assert!(env.read(fh, 0, MIB).unwrap() == body[..MIB]);
    assert_eq!(faults.calls(Call::Page), 2);
}

/// Readers of one page at once share one fetch: while the source stalls on the first
/// request, the other readers wait on it instead of asking again.
#[test]
fn vfs_concurrent_readers_of_a_page_share_one_fetch() {
    let (env, faults, body) = env();
    faults.inject(Rule::new(Call::Page, Fault::Stall(None)));
    let ino = env.ino("f");
    let readers = 4;
    let started = std::sync::Barrier::new(readers + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..readers)
            .map(|_| {
                s.spawn(|| {
                    let fh = env.open(ino, false, false).unwrap();
                    started.wait();
                    let r = env.read(fh, 0, MIB);
                    env.vfs.release(fh);
                    r
                })
            })
            .collect();
        started.wait();
        let rt = &env.rt;
        assert!(rt.block_on(faults.wait_calls(Call::Page, 1, Duration::from_secs(10))));
        // Had the readers not coalesced, each would have asked by now.
        let second = rt.block_on(faults.wait_calls(Call::Page, 2, Duration::from_millis(500)));
        // Released before any assertion, so that a failure cannot leave readers stalled.
        faults.clear();
        assert!(!second, "a second fetch of the page");
        for h in handles {
            assert!(h.join().unwrap().unwrap() == body[..MIB]);
        }
    });
    assert_eq!((faults.calls(Call::Page), store_reads(&env)), (1, 0));
}

/// A slow source delays the read and nothing else: the bytes are its, right.
#[test]
fn vfs_a_slow_source_delays_and_answers() {
    let (env, faults, body) = env();
    faults.inject(Rule::new(
        Call::Page,
        Fault::Stall(Some(Duration::from_millis(200))),
    ));
    assert!(env.read_all(env.ino("f")).unwrap() == body);
    assert_eq!((faults.calls(Call::Page), store_reads(&env)), (4, 0));
}
