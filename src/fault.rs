//! Faults injected where they happen: in the store, under this crate's retry and timeout
//! layers ([`FaultLayer`]), and in a page source of the fetch chain ([`FaultySource`]).
//! Both obey one plan, [`Faults`], that a test (or a fault campaign) changes while the
//! vfs runs: fail the Nth call, stall until released, answer short, or say the version
//! asked for is gone.
//!
//! Invariants:
//! - A call that matches no rule is passed on untouched, so an empty plan is the store
//!   (or source) itself.
//! - Every call is counted, fault or not ([`Faults::calls`]); tests wait on these counts
//!   ([`Faults::wait_calls`]) instead of sleeping.
//! - A stalled call goes on as usual once the plan is cleared or its stall ends: a stall
//!   delays, it never answers by itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opendal::raw::*;
use opendal::*;
use tokio::sync::{Notify, watch};

use crate::error::FsError;
use crate::fetch::{Fetched, PageRequest, PageSource};

/// The kind of call a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    /// A read of an object's bytes.
    Read,
    /// A write: an object's upload (at its close) or a directory marker.
    Write,
    /// A stat.
    Stat,
    /// A listing.
    List,
    /// A delete.
    Delete,
    /// A page asked of a [`FaultySource`].
    Page,
}

/// What a matching call does instead of its usual answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The call fails. A temporary failure is one the store's retries may get past (and
    /// a source's failure after which the next source may be asked).
    Fail {
        /// Whether the failure is temporary.
        temporary: bool,
    },
    /// The call waits, for the duration or (`None`) until [`Faults::clear`], then goes
    /// on as usual.
    Stall(Option<Duration>),
    /// A read answers this many bytes fewer than asked (none, if it asked for fewer).
    Short(usize),
    /// The store says the version asked for is not its object any more (an If-Match
    /// that failed; a source that holds another version).
    Changed,
}

/// One rule of a plan: which calls it matches and what they do.
#[derive(Debug, Clone)]
pub struct Rule {
    call: Call,
    key: Option<String>,
    skip: u64,
    times: Option<u64>,
    fault: Fault,
}

impl Rule {
    /// Every `call`, on any key, does `fault`.
    pub fn new(call: Call, fault: Fault) -> Self {
        Self {
            call,
            key: None,
            skip: 0,
            times: None,
            fault,
        }
    }

    /// Only calls whose key contains `part`.
    pub fn on_key(mut self, part: impl Into<String>) -> Self {
        self.key = Some(part.into());
        self
    }

    /// The first `n` matching calls pass; the fault starts at call `n + 1` (so
    /// `after(2)` fails the third).
    pub fn after(mut self, n: u64) -> Self {
        self.skip = n;
        self
    }

    /// The fault fires on `n` calls, then the rule is spent.
    pub fn times(mut self, n: u64) -> Self {
        self.times = Some(n);
        self
    }

    fn matches(&self, call: Call, key: &str) -> bool {
        self.call == call && self.key.as_deref().is_none_or(|k| key.contains(k))
    }
}

struct Active {
    rule: Rule,
    seen: u64,
    fired: u64,
}

#[derive(Default)]
struct Inner {
    rules: Mutex<Vec<Active>>,
    calls: Mutex<HashMap<Call, u64>>,
    fired: Mutex<u64>,
    /// Bumped by `clear`: stalls end when it moves.
    epoch: watch::Sender<u64>,
    /// Woken on every call counted.
    counted: Notify,
}

/// A plan of faults, shared by the layers and sources that obey it. Cloning shares it.
#[derive(Clone, Default)]
pub struct Faults {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("rules", &lock(&self.inner.rules).len())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A fault decided for one call, with what a stall waits on.
struct Decision {
    fault: Fault,
    epoch: watch::Receiver<u64>,
}

impl Decision {
    /// Waits out a stall (until it ends or the plan is cleared); other faults return at
    /// once.
    async fn stall(&mut self) {
        let Fault::Stall(limit) = self.fault else {
            return;
        };
        let released = self.epoch.changed();
        match limit {
            Some(d) => {
                let _ = tokio::time::timeout(d, released).await;
            }
            None => {
                let _ = released.await;
            }
        }
    }
}

impl Faults {
    /// An empty plan: every call passes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rule. Rules are tried in the order added; the first that fires wins.
    pub fn inject(&self, rule: Rule) {
        lock(&self.inner.rules).push(Active {
            rule,
            seen: 0,
            fired: 0,
        });
    }

    /// Drops every rule and releases the calls stalled now.
    pub fn clear(&self) {
        lock(&self.inner.rules).clear();
        self.inner.epoch.send_modify(|e| *e += 1);
    }

    /// Calls of kind `call` seen so far, faulted or not.
    pub fn calls(&self, call: Call) -> u64 {
        lock(&self.inner.calls).get(&call).copied().unwrap_or(0)
    }

    /// Faults fired so far.
    pub fn fired(&self) -> u64 {
        *lock(&self.inner.fired)
    }

    /// Waits until at least `n` calls of kind `call` were seen, or `timeout` passes;
    /// returns whether they were.
    pub async fn wait_calls(&self, call: Call, n: u64, timeout: Duration) -> bool {
        let seen = async {
            loop {
                let woken = self.inner.counted.notified();
                if self.calls(call) >= n {
                    return;
                }
                woken.await;
            }
        };
        tokio::time::timeout(timeout, seen).await.is_ok()
    }

    /// Counts a call and decides its fault, if a rule fires.
    fn decide(&self, call: Call, key: &str) -> Option<Decision> {
        *lock(&self.inner.calls).entry(call).or_default() += 1;
        self.inner.counted.notify_waiters();
        let mut rules = lock(&self.inner.rules);
        let fault = rules.iter_mut().find_map(|a| {
            if !a.rule.matches(call, key) {
                return None;
            }
            a.seen += 1;
            let spent = a.rule.times.is_some_and(|t| a.fired >= t);
            if a.seen <= a.rule.skip || spent {
                return None;
            }
            a.fired += 1;
            Some(a.rule.fault.clone())
        })?;
        drop(rules);
        *lock(&self.inner.fired) += 1;
        Some(Decision {
            fault,
            epoch: self.inner.epoch.subscribe(),
        })
    }

    /// Decides a store call's fault and waits out a stall: `Err` for a call that fails
    /// now, else the fault the call still has to apply (a short read).
    async fn store_call(&self, call: Call, key: &str) -> Result<Option<Fault>> {
        let Some(mut d) = self.decide(call, key) else {
            return Ok(None);
        };
        d.stall().await;
        match d.fault {
            Fault::Fail { temporary } => Err(injected(key, temporary)),
            Fault::Changed => Err(Error::new(
                ErrorKind::ConditionNotMatch,
                format!("injected fault: {key} changed"),
            )),
            Fault::Stall(_) => Ok(None),
            f @ Fault::Short(_) => Ok(Some(f)),
        }
    }
}

fn injected(key: &str, temporary: bool) -> Error {
    let e = Error::new(ErrorKind::Unexpected, format!("injected fault on {key}"));
    if temporary { e.set_temporary() } else { e }
}

/// The OpenDAL layer that applies a [`Faults`] plan to a store's calls (install it with
/// [`crate::ufs::Ufs::wrap_store`]).
#[derive(Debug, Clone)]
pub struct FaultLayer(pub Faults);

impl Layer for FaultLayer {
    fn apply_service(&self, inner: Servicer) -> Servicer {
        Arc::new(FaultService {
            inner,
            faults: self.0.clone(),
        })
    }
}

#[derive(Debug)]
struct FaultService {
    inner: Servicer,
    faults: Faults,
}

impl Service for FaultService {
    type Reader = FaultReader;
    type Writer = FaultWriter;
    type Lister = FaultLister;
    type Deleter = FaultDeleter;
    type Copier = oio::Copier;
    type Composer = oio::Composer;

    fn info(&self) -> ServiceInfo {
        self.inner.info()
    }

    fn capability(&self) -> Capability {
        self.inner.capability()
    }

    async fn create_dir(
        &self,
        ctx: &OperationContext,
        path: &str,
        args: OpCreateDir,
    ) -> Result<RpCreateDir> {
        self.faults.store_call(Call::Write, path).await?;
        self.inner.create_dir(ctx, path, args).await
    }

    async fn stat(&self, ctx: &OperationContext, path: &str, args: OpStat) -> Result<RpStat> {
        self.faults.store_call(Call::Stat, path).await?;
        self.inner.stat(ctx, path, args).await
    }

    fn read(&self, ctx: &OperationContext, path: &str, args: OpRead) -> Result<Self::Reader> {
        Ok(FaultReader {
            inner: self.inner.read(ctx, path, args)?,
            faults: self.faults.clone(),
            path: path.to_string(),
        })
    }

    fn write(&self, ctx: &OperationContext, path: &str, args: OpWrite) -> Result<Self::Writer> {
        Ok(FaultWriter {
            inner: self.inner.write(ctx, path, args)?,
            faults: self.faults.clone(),
            path: path.to_string(),
        })
    }

    fn delete(&self, ctx: &OperationContext) -> Result<Self::Deleter> {
        Ok(FaultDeleter {
            inner: self.inner.delete(ctx)?,
            faults: self.faults.clone(),
        })
    }

    fn list(&self, ctx: &OperationContext, path: &str, args: OpList) -> Result<Self::Lister> {
        Ok(FaultLister {
            inner: self.inner.list(ctx, path, args)?,
            faults: self.faults.clone(),
            path: Some(path.to_string()),
        })
    }

    fn copy(
        &self,
        ctx: &OperationContext,
        from: &str,
        to: &str,
        args: OpCopy,
    ) -> Result<Self::Copier> {
        self.inner.copy(ctx, from, to, args)
    }

    fn compose(&self, ctx: &OperationContext, to: &str, args: OpCompose) -> Result<Self::Composer> {
        self.inner.compose(ctx, to, args)
    }

    async fn rename(
        &self,
        ctx: &OperationContext,
        from: &str,
        to: &str,
        args: OpRename,
    ) -> Result<RpRename> {
        self.faults.store_call(Call::Write, to).await?;
        self.inner.rename(ctx, from, to, args).await
    }

    async fn restore(
        &self,
        ctx: &OperationContext,
        path: &str,
        args: OpRestore,
    ) -> Result<RpRestore> {
        self.inner.restore(ctx, path, args).await
    }

    async fn presign(
        &self,
        ctx: &OperationContext,
        path: &str,
        args: OpPresign,
    ) -> Result<RpPresign> {
        self.inner.presign(ctx, path, args).await
    }
}

/// A reader whose reads obey the plan (one [`Call::Read`] per request).
struct FaultReader {
    inner: oio::Reader,
    faults: Faults,
    path: String,
}

fn shorten(mut buf: Buffer, by: usize) -> Buffer {
    buf.truncate(buf.len().saturating_sub(by));
    buf
}

impl oio::Read for FaultReader {
    async fn open(&self, range: BytesRange) -> Result<(RpRead, Box<dyn oio::ReadStreamDyn>)> {
        let fault = self.faults.store_call(Call::Read, &self.path).await?;
        let (rp, mut stream) = self.inner.open_dyn(range).await?;
        let Some(Fault::Short(by)) = fault else {
            return Ok((rp, stream));
        };
        let all = oio::ReadStream::read_all(&mut stream).await?;
        Ok((rp, Box::new(shorten(all, by))))
    }

    async fn read(&self, range: BytesRange) -> Result<(RpRead, Buffer)> {
        let fault = self.faults.store_call(Call::Read, &self.path).await?;
        let (rp, buf) = self.inner.read_dyn(range).await?;
        match fault {
            Some(Fault::Short(by)) => Ok((rp, shorten(buf, by))),
            _ => Ok((rp, buf)),
        }
    }
}

/// A writer whose close (the object landing in the store) obeys the plan.
struct FaultWriter {
    inner: oio::Writer,
    faults: Faults,
    path: String,
}

impl oio::Write for FaultWriter {
    async fn write(&mut self, bs: Buffer) -> Result<()> {
        self.inner.write_dyn(bs).await
    }

    async fn close(&mut self) -> Result<Metadata> {
        if let Err(e) = self.faults.store_call(Call::Write, &self.path).await {
            let _ = self.inner.abort_dyn().await;
            return Err(e);
        }
        self.inner.close_dyn().await
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort_dyn().await
    }
}

/// A lister whose first entry obeys the plan (one [`Call::List`] per listing).
struct FaultLister {
    inner: oio::Lister,
    faults: Faults,
    /// The listed path, until the listing's call was counted.
    path: Option<String>,
}

impl oio::List for FaultLister {
    async fn next(&mut self) -> Result<Option<oio::Entry>> {
        if let Some(path) = self.path.take() {
            self.faults.store_call(Call::List, &path).await?;
        }
        self.inner.next_dyn().await
    }
}

/// A deleter whose deletes obey the plan, one [`Call::Delete`] each.
struct FaultDeleter {
    inner: oio::Deleter,
    faults: Faults,
}

impl oio::Delete for FaultDeleter {
    async fn delete(&mut self, path: &str, args: OpDelete) -> Result<()> {
        self.faults.store_call(Call::Delete, path).await?;
        self.inner.delete_dyn(path, args).await
    }

    async fn close(&mut self) -> Result<()> {
        self.inner.close_dyn().await
    }
}

/// A page source that asks `inner` for pages under a plan, one [`Call::Page`] per page
/// (matched by the object's key): a failure is `Failed` (temporary: the next source may
/// answer), a stall delays, a short answer is the hit cut short, a changed version is
/// `Failed` with ESTALE and no next source.
pub struct FaultySource {
    inner: Arc<dyn PageSource>,
    faults: Faults,
}

impl FaultySource {
    /// `inner` under `faults`.
    pub fn new(inner: Arc<dyn PageSource>, faults: Faults) -> Self {
        Self { inner, faults }
    }
}

#[async_trait::async_trait]
impl PageSource for FaultySource {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn fetch(&self, req: &PageRequest<'_>) -> Fetched {
        let key = req.key.object.key();
        let Some(mut d) = self.faults.decide(Call::Page, key) else {
            return self.inner.fetch(req).await;
        };
        d.stall().await;
        match d.fault {
            Fault::Fail { temporary } => Fetched::Failed {
                error: FsError::new(libc::EIO, format!("injected fault on page of {key}")),
                try_next: temporary,
            },
            Fault::Changed => Fetched::Failed {
                error: FsError::new(libc::ESTALE, format!("injected fault: {key} changed")),
                try_next: false,
            },
            Fault::Stall(_) => self.inner.fetch(req).await,
            Fault::Short(by) => match self.inner.fetch(req).await {
                Fetched::Hit(b) => Fetched::Hit(b.slice(..b.len().saturating_sub(by))),
                other => other,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_fire_from_the_nth_matching_call_for_their_count() {
        let f = Faults::new();
        f.inject(
            Rule::new(Call::Read, Fault::Fail { temporary: false })
                .on_key("x")
                .after(2)
                .times(2),
        );
        let fired: Vec<bool> = ["x", "y", "x", "x", "ax", "x"]
            .iter()
            .map(|k| f.decide(Call::Read, k).is_some())
            .collect();
        // The third and fourth calls on a key with "x" fire; "y" is not matched.
        assert_eq!(fired, [false, false, false, true, true, false]);
        assert!(f.decide(Call::Stat, "x").is_none());
        assert_eq!(
            (f.calls(Call::Read), f.calls(Call::Stat), f.fired()),
            (6, 1, 2)
        );
    }

    #[tokio::test]
    async fn a_stall_ends_when_the_plan_is_cleared() {
        let f = Faults::new();
        f.inject(Rule::new(Call::Stat, Fault::Stall(None)));
        let g = f.clone();
        let call = tokio::spawn(async move { g.store_call(Call::Stat, "k").await });
        assert!(f.wait_calls(Call::Stat, 1, Duration::from_secs(5)).await);
        assert!(!call.is_finished(), "stalled");
        f.clear();
        let r = tokio::time::timeout(Duration::from_secs(5), call).await;
        assert!(matches!(r, Ok(Ok(Ok(None)))), "released, then passed");
    }
}
