//! The consistent-hash ring that says which cache node owns a page.
//!
//! Each member gets virtual nodes in proportion to its weight (its cache capacity): a
//! member of the mean weight gets [`VNODES`], so shares follow capacity. A page is placed
//! by its object's digest and its *run*, [`RUN_PAGES`] consecutive pages: a large file's
//! runs spread over every node (parallel reads of one file), while a sequential reader
//! asks one owner for several pages in a row.
//!
//! Invariants:
//! - Placement is a pure function of the members (address and weight) and the page's
//!   shareable identity: every host that has the same membership computes the same owner
//!   (the hashes are fixed functions, never `std`'s randomly keyed hasher).
//! - A join moves only pages the new member now owns; a leave moves only the pages the
//!   member owned (consistent hashing: every other virtual node stays where it was).

use std::sync::Arc;

use crate::object::{ObjectId, digest};

/// Virtual nodes of the lightest member (Alluxio's default per worker is 2000). A
/// member's share then varies by about 1/sqrt(2000) = 2.2% around its weighted share, so
/// every node of 3 to 10 stays well within ±10% (`ring_balance` test).
pub const VNODES: u64 = 2000;

/// The most virtual nodes a ring holds (16 bytes each): members whose weights are far
/// apart get fewer than their ratio would give.
const MAX_POINTS: u128 = 200_000;

/// Pages placed together: a run of this many consecutive pages has one owner.
pub const RUN_PAGES: u64 = 4;

/// One member of the ring: where it listens and how much it may hold.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    /// Its peer address (`host:port`): also its identity on the ring.
    pub addr: String,
    /// Its weight (cache capacity in bytes; any unit, as long as all members use one).
    pub weight: u64,
}

/// A ring over a set of members.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    /// Virtual node hashes, sorted, with the index of their member.
    points: Vec<(u64, u32)>,
    members: Vec<Arc<Member>>,
}

/// A 64-bit finalizer (splitmix64's): FNV-1a alone leaves the low bits poorly mixed.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Ring {
    /// The ring of `members` (duplicates by address keep the first; weight 0 members own
    /// nothing).
    pub fn new(members: impl IntoIterator<Item = Member>) -> Self {
        let mut ms: Vec<Member> = members.into_iter().collect();
        ms.sort();
        ms.dedup_by(|a, b| a.addr == b.addr);
        let live: Vec<&Member> = ms.iter().filter(|m| m.weight > 0).collect();
        // VNODES for the lightest member, the others in proportion; scaled down only if
        // the ring would pass MAX_POINTS (weights that far apart).
        let min = live.iter().map(|m| u128::from(m.weight)).min().unwrap_or(1);
        let want: Vec<u128> = live
            .iter()
            .map(|m| u128::from(m.weight) * u128::from(VNODES) / min)
            .collect();
        let sum: u128 = want.iter().sum();
        let scale = |n: u128| {
            let n = if sum > MAX_POINTS {
                n * MAX_POINTS / sum
            } else {
                n
            };
            u64::try_from(n).unwrap_or(u64::MAX).max(1)
        };
        let mut points = Vec::new();
        let mut members = Vec::new();
        for (m, n) in live.into_iter().zip(want) {
            let i = u32::try_from(members.len()).unwrap_or(u32::MAX);
            let base = digest(&[b"vnode", m.addr.as_bytes()]);
            for v in 0..scale(n) {
                points.push((mix(base ^ mix(v)), i));
            }
            members.push(Arc::new(m.clone()));
        }
        points.sort_unstable();
        Self { points, members }
    }

    /// The members, in address order.
    pub fn members(&self) -> &[Arc<Member>] {
        &self.members
    }

    /// Whether the ring has no member that owns anything.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Where page `idx` of `object` sits on the ring.
    pub fn position(object: &ObjectId, idx: u64) -> u64 {
        Self::position_in_runs(object, idx, RUN_PAGES)
    }

    /// Where page `idx` of `object` would sit with runs of `run` pages: every host uses
    /// [`RUN_PAGES`]; other lengths are for measuring the choice (`alluxio peer-bench
    /// --ring-spread`).
    pub fn position_in_runs(object: &ObjectId, idx: u64, run: u64) -> u64 {
        mix(object.digest() ^ mix((idx / run.max(1)).wrapping_add(0x9e37_79b9_7f4a_7c15)))
    }

    /// The first `n` distinct members clockwise from `position`: the owner first, then
    /// the members to try when it fails.
    pub fn owners_at(&self, position: u64, n: usize) -> Vec<Arc<Member>> {
        let mut out: Vec<Arc<Member>> = Vec::with_capacity(n.min(self.members.len()));
        if self.points.is_empty() {
            return out;
        }
        let start = self.points.partition_point(|(h, _)| *h < position);
        for k in 0..self.points.len() {
            if out.len() >= n || out.len() == self.members.len() {
                break;
            }
            let (_, i) = self.points[(start + k) % self.points.len()];
            let m = &self.members[i as usize];
            if !out.iter().any(|o| Arc::ptr_eq(o, m)) {
                out.push(m.clone());
            }
        }
        out
    }

    /// The owner of page `idx` of `object` and the members after it, `n` in all.
    pub fn owners(&self, object: &ObjectId, idx: u64, n: usize) -> Vec<Arc<Member>> {
        self.owners_at(Self::position(object, idx), n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(i: usize, weight: u64) -> Member {
        Member {
            addr: format!("127.0.0.1:{}", 7000 + i),
            weight,
        }
    }

    /// Owner addresses of `keys` sample positions.
    fn owners(ring: &Ring, keys: u64, seed: u64) -> Vec<String> {
        (0..keys)
            .map(|k| ring.owners_at(mix(seed ^ mix(k)), 1)[0].addr.clone())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Every member of 3 to 10, of weights 1 to 4, holds within ±10% of its weighted
        /// share of the keys.
        #[test]
        fn ring_balance(weights in proptest::collection::vec(1u64..=4, 3..=10), seed in any::<u64>()) {
            let ms: Vec<Member> = weights.iter().enumerate().map(|(i, w)| member(i, *w << 30)).collect();
            let ring = Ring::new(ms.clone());
            let keys = 200_000u64;
            let got = owners(&ring, keys, seed);
            let total: u64 = ms.iter().map(|m| m.weight).sum();
            for m in &ms {
                let share = got.iter().filter(|a| **a == m.addr).count() as f64 / keys as f64;
                let want = m.weight as f64 / total as f64;
                prop_assert!((share / want - 1.0).abs() <= 0.10, "{} holds {share:.4}, its share is {want:.4}", m.addr);
            }
        }

        /// A join moves only keys to the new member, at most 1.1 times its share; a leave
        /// moves only the leaving member's keys.
        #[test]
        fn ring_minimal_movement(n in 3usize..=10, seed in any::<u64>()) {
            let ms: Vec<Member> = (0..n).map(|i| member(i, 1 << 30)).collect();
            let before = Ring::new(ms.clone());
            let mut grown = ms.clone();
            grown.push(member(n, 1 << 30));
            let after = Ring::new(grown);
            let keys = 100_000u64;
            let (a, b) = (owners(&before, keys, seed), owners(&after, keys, seed));
            let new_addr = member(n, 0).addr;
            let mut moved = 0usize;
            for (x, y) in a.iter().zip(&b) {
                if x != y {
                    prop_assert_eq!(y, &new_addr, "a key moved between old members");
                    moved += 1;
                }
            }
            let frac = moved as f64 / keys as f64;
            prop_assert!(frac <= 1.1 / (n + 1) as f64, "join moved {frac:.4} with {} members", n + 1);
            // The leave is the same pair of rings read the other way.
            for (x, y) in b.iter().zip(&a) {
                if x != y {
                    prop_assert_eq!(x, &new_addr, "a leave moved a key it did not own");
                }
            }
        }
    }

    #[test]
    fn owners_are_distinct_and_the_same_on_every_host() {
        let ms: Vec<Member> = (0..3).map(|i| member(i, 1)).collect();
        let a = Ring::new(ms.clone());
        let mut rev = ms.clone();
        rev.reverse();
        let b = Ring::new(rev);
        let obj = ObjectId::new(Arc::from("s3:bucket"), "data/x", "e:1");
        for idx in 0..64 {
            let (x, y) = (a.owners(&obj, idx, 5), b.owners(&obj, idx, 5));
            assert_eq!(x, y, "membership order does not matter");
            assert_eq!(x.len(), 3, "at most one entry per member");
            assert_eq!(
                a.owners(&obj, idx - idx % RUN_PAGES, 1),
                x[..1],
                "a run has one owner"
            );
        }
        assert!(Ring::new(Vec::new()).owners(&obj, 0, 2).is_empty());
        assert!(
            Ring::new([member(0, 0)]).is_empty(),
            "weight 0 owns nothing"
        );
    }
}
