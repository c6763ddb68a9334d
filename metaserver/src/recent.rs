//! Changes a directory listing in flight cannot know about.
//!
//! A client lists a directory in the store, then hands the listing to
//! [`crate::Namespace::load_dir`] or `resync_dir`. Between the two, the namespace may
//! change under the listing's feet: an upload lands and its file gets the store's version
//! (the listing, taken before, does not show the object), a commit replaces a version (the
//! listing shows the older one), a name is unlinked (the listing still shows its object).
//! Applying the listing as it is would then drop a file that exists, roll a version back,
//! or bring a removed name back.
//!
//! So a listing starts with a token ([`Recent::begin`]), and every change to a name or to a
//! node's content takes a sequence number. The reconcile leaves alone every node changed,
//! and every name removed, at or after its token: the namespace knows better than the
//! listing about those. Changes are remembered only while some listing is outstanding, and
//! for at most [`TOKEN_LIFETIME`] per listing (a client that died mid-listing never ends
//! its token). A token older than what is remembered is answered conservatively: every
//! node counts as changed, so such a late listing only adds names it alone knows.
//!
//! This state is in memory: listings and changes race only within one process's life. The
//! sequence starts above every token a previous process handed out (it is seeded from the
//! load epoch), so a token from before a restart is older than anything remembered.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::record::InodeNo;

/// How long an outstanding listing keeps changes remembered.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(600);

/// What changed since outstanding listings began.
pub(crate) struct Recent(Mutex<Inner>);

struct Inner {
    /// The sequence number of the next change.
    next: u64,
    /// Last change of each node's names or content.
    touched: HashMap<InodeNo, u64>,
    /// Last removal of each `(directory, name)`.
    removed: HashMap<(InodeNo, Vec<u8>), u64>,
    /// Outstanding tokens: how many listings hold each, and when it was first handed out.
    listings: BTreeMap<u64, (usize, Instant)>,
    /// Changes before this were forgotten (no listing needed them).
    horizon: u64,
}

impl Recent {
    /// Starts the sequence at `base`, above every number an earlier process used.
    pub(crate) fn new(base: u64) -> Self {
        Self(Mutex::new(Inner {
            next: base,
            touched: HashMap::new(),
            removed: HashMap::new(),
            listings: BTreeMap::new(),
            horizon: base,
        }))
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves only counters and maps behind, which stay
        // consistent; keep going with them.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A token for a listing that starts now: every change from now on is newer.
    pub(crate) fn begin(&self) -> u64 {
        let mut g = self.inner();
        g.prune(Instant::now());
        let t = g.next;
        let e = g.listings.entry(t).or_insert((0, Instant::now()));
        e.0 += 1;
        t
    }

    /// The listing that held `token` is done (applied or abandoned).
    pub(crate) fn end(&self, token: u64) {
        let mut g = self.inner();
        if let Some(e) = g.listings.get_mut(&token) {
            e.0 -= 1;
            if e.0 == 0 {
                g.listings.remove(&token);
            }
        }
        g.prune(Instant::now());
    }

    /// `ino`'s names or content changed.
    pub(crate) fn touch(&self, ino: InodeNo) {
        let mut g = self.inner();
        if let Some(seq) = g.seq() {
            g.touched.insert(ino, seq);
        }
    }

    /// The name `dir/name` went away.
    pub(crate) fn remove(&self, dir: InodeNo, name: &[u8]) {
        let mut g = self.inner();
        if let Some(seq) = g.seq() {
            g.removed.insert((dir, name.to_vec()), seq);
        }
    }

    /// Whether `ino` changed at or after `token` (or may have: the token is older than what
    /// is remembered).
    pub(crate) fn touched_since(&self, ino: InodeNo, token: u64) -> bool {
        let g = self.inner();
        token < g.horizon || g.touched.get(&ino).is_some_and(|s| *s >= token)
    }

    /// Whether `dir/name` was removed at or after `token`.
    pub(crate) fn removed_since(&self, dir: InodeNo, name: &[u8], token: u64) -> bool {
        let g = self.inner();
        // Only what is remembered: a listing older than that may add back a name removed
        // meanwhile, which the next listing removes again (its object is gone).
        g.removed
            .get(&(dir, name.to_vec()))
            .is_some_and(|s| *s >= token)
    }
}

impl Inner {
    /// A sequence number for a change, or `None` when no listing is outstanding (no one
    /// could be misled by it, so there is nothing to remember).
    fn seq(&mut self) -> Option<u64> {
        let s = self.next;
        self.next += 1;
        if self.listings.is_empty() {
            self.horizon = self.next;
            return None;
        }
        Some(s)
    }

    /// Ends tokens past their lifetime and forgets changes no outstanding token needs.
    fn prune(&mut self, now: Instant) {
        self.listings
            .retain(|_, (_, since)| now.duration_since(*since) < TOKEN_LIFETIME);
        let keep = self.listings.keys().next().copied().unwrap_or(self.next);
        if keep > self.horizon {
            self.horizon = keep;
            self.touched.retain(|_, s| *s >= keep);
            self.removed.retain(|_, s| *s >= keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_only_what_outstanding_listings_need() {
        let r = Recent::new(100);
        r.touch(InodeNo(1)); // no listing yet: nothing to remember
        let t = r.begin();
        assert!(!r.touched_since(InodeNo(1), t));
        r.touch(InodeNo(2));
        r.remove(InodeNo(1), b"x");
        assert!(r.touched_since(InodeNo(2), t));
        assert!(r.removed_since(InodeNo(1), b"x", t));
        assert!(!r.removed_since(InodeNo(1), b"y", t));
        let later = r.begin();
        assert!(
            !r.touched_since(InodeNo(2), later),
            "changed before it began"
        );
        r.end(t);
        r.end(later);
        assert!(
            r.0.lock().unwrap().touched.is_empty(),
            "forgotten once no one needs it"
        );
        // A token older than what is remembered: everything may have changed.
        assert!(r.touched_since(InodeNo(3), t));
        assert!(!r.touched_since(InodeNo(3), r.begin()));
    }
}
