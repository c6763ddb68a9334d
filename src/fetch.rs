//! Where a page comes from: the local cache's tiers, then an ordered chain of
//! [`PageSource`]s, walked by one [`Fetcher`].
//!
//! ```text
//!   read ─► Fetcher::page ─► PageCache (memory tier, disk tier; a disk hit fills memory)
//!                │ miss
//!                ▼  coalesced per page, one fetch-budget permit per page buffer
//!           sources[0] ─► sources[1] ─► ... ─► sources[n-1]
//!           (local copies)  (peers, ...)          (the UFS)
//!                │ hit
//!                ▼
//!           length check ─► memory tier ─► answer every waiter ─► disk tier
//! ```
//!
//! Each source answers [`Fetched::Hit`], [`Fetched::Miss`] (ask the next), or
//! [`Fetched::Failed`], whose `try_next` says whether a later source may still answer (a
//! peer that timed out: yes; the store saying the version is gone: no). A source never
//! fills a tier itself: fills happen here, once. Adding a source is one implementation of
//! [`PageSource`] and one line where the chain is built (`Vfs::with_sources`).
//!
//! Invariants:
//! - Every waiter of one page gets the result of one fetch (single flight).
//! - A page buffer fetched from a source is covered by a fetch-budget permit until it is
//!   in both tiers, whose own capacity covers it from then on; read-ahead takes a permit
//!   or is skipped, a reader's own miss waits for one.
//! - A page's waiters are answered once it is in the memory tier; its disk write follows.
//!   A run's pages are written by the run's task, so no reader of them waits on the cache
//!   disk (whose data file of one object takes its writes one at a time); a single page
//!   is written by the call that fetched it, before that call returns.
//! - A page is served only at the length its object version has at that index; a source
//!   answering with another length is a changed object (ESTALE), never bytes.
//! - An EIO from the chain answers further fetches of the page at once for
//!   [`FAILED_FETCH_TTL`]: the kernel retries a failed read-ahead as the reader's own read,
//!   and the retry must not cost a second full timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};

use crate::error::{FsError, ReadError};
use crate::metrics::Metrics;
use crate::object::{ObjectId, PageKey};
use crate::page_cache::PageCache;
use crate::types::{InodeNo, PAGE_SIZE};
use crate::ufs::Ufs;

/// One version of one object as a reader sees it: its id, its size, where the store holds
/// it, and the inode reading it (local bookkeeping only).
pub struct ObjectRead {
    /// The version's shareable identity.
    pub id: Arc<ObjectId>,
    /// Bytes in this version.
    pub size: u64,
    /// The store holding it and its key under that store's root; `None` when no store
    /// holds this version's bytes under a known key.
    pub store: Option<(Arc<Ufs>, String)>,
    /// The local inode reading it (0 on a cache node).
    pub owner: InodeNo,
    /// Asked by a peer: the chain must not ask peers in turn (a page request travels one
    /// hop at most, so two nodes can never wait on each other).
    pub for_peer: bool,
}

impl std::fmt::Debug for ObjectRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectRead")
            .field("id", &self.id.to_string())
            .field("size", &self.size)
            .finish()
    }
}

impl ObjectRead {
    /// The byte range of page `idx`.
    pub fn page_range(&self, idx: u64) -> std::ops::Range<u64> {
        let start = idx.saturating_mul(PAGE_SIZE).min(self.size);
        start..self.size.min(start.saturating_add(PAGE_SIZE))
    }

    /// Pages in this version.
    pub fn pages(&self) -> u64 {
        self.size.div_ceil(PAGE_SIZE)
    }
}

/// One page asked of the sources.
pub struct PageRequest<'a> {
    /// The object version.
    pub object: &'a ObjectRead,
    /// The page's key (its object id and index).
    pub key: &'a PageKey,
    /// Whether read-ahead asks, rather than a reader waiting on it.
    pub read_ahead: bool,
}

impl PageRequest<'_> {
    /// The byte range of the object this page holds.
    pub fn range(&self) -> std::ops::Range<u64> {
        self.object.page_range(self.key.idx.0)
    }
}

/// A source's answer.
pub enum Fetched {
    /// The page's bytes.
    Hit(Bytes),
    /// Not here: ask the next source.
    Miss,
    /// It failed; `try_next` says whether a later source may still answer.
    Failed {
        /// What went wrong (returned if no later source answers).
        error: FsError,
        /// Whether the next source may be tried.
        try_next: bool,
    },
}

/// A place pages can be fetched from on a cache miss.
#[async_trait::async_trait]
pub trait PageSource: Send + Sync {
    /// What the source is called in logs.
    fn name(&self) -> &'static str;
    /// Fetches one page. Never fills a cache tier (the fetcher does).
    async fn fetch(&self, req: &PageRequest<'_>) -> Fetched;
    /// Whether the source wants the pages of versions written here ([`Self::offer`]).
    fn shares_writes(&self) -> bool {
        false
    }
    /// Page `key.idx` of a version just written here (`size` bytes in all), for a source
    /// that shares pages (a peer cache takes it to its owner).
    async fn offer(&self, _key: &PageKey, _size: u64, _page: Bytes) {}
}

type Cell = Arc<OnceCell<Result<Bytes, FsError>>>;

/// The one GET of a run of read-ahead pages, shared by whoever asks first for any of its
/// pages: it answers one buffer per page.
pub type RunGet =
    futures::future::Shared<futures::future::BoxFuture<'static, Result<Arc<Vec<Bytes>>, FsError>>>;

/// Consecutive pages of one object registered in flight for one ranged read
/// ([`Fetcher::begin_run`], [`Fetcher::fetch_run`]).
pub struct Run {
    cells: Vec<(PageKey, Cell)>,
    permits: Vec<OwnedSemaphorePermit>,
    get: RunGet,
}

impl Run {
    /// Pages in the run.
    pub fn len(&self) -> u64 {
        self.cells.len() as u64
    }

    /// Whether the run has no page.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }
}

/// Bound on [`Fetcher::fresh`] and [`Fetcher::failed`].
const TABLE_MAX: usize = 1 << 16;

/// How long a page fetch's EIO answers further fetches of the page.
pub const FAILED_FETCH_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// The tiers, the chain of sources below them, and what walking them needs: the table of
/// fetches in flight, the fetch budget, and the read-ahead bookkeeping.
pub struct Fetcher {
    cache: Arc<PageCache>,
    sources: Vec<Arc<dyn PageSource>>,
    metrics: Arc<Metrics>,
    /// One permit per page buffer fetched and not yet in the cache.
    budget: Arc<Semaphore>,
    fetches: Mutex<HashMap<PageKey, Cell>>,
    /// Pages in flight as part of a run ([`Self::begin_run`]): the run's GET and the
    /// page's place in its answer. Whoever initializes such a page's cell (the run's task
    /// or a reader that came first) takes the page from that GET, so a page is never
    /// fetched twice. An entry goes when its page's fetch settles.
    run_pages: Mutex<HashMap<PageKey, (RunGet, usize)>>,
    /// Pages fetched into the cache (by read-ahead or for a read that missed), with how
    /// many of their bytes no read has asked for yet. Once reads have asked for as many
    /// bytes as the page holds, it leaves the memory tier (it stays on disk, and the
    /// kernel keeps the bytes it was given): a sequential scan, or a small file read
    /// whole, is read once, and keeping it in memory would only push out pages that are
    /// used again, and cost a fresh (faulted, zeroed) buffer for every page read. (A file
    /// read whole is then read from the disk tier, by passthrough once it is all there.)
    /// Counting bytes rather than requiring one read of the whole page makes this hold for
    /// any request size and alignment the kernel picks; a page only partly read (a random
    /// reader's) stays in memory. Bounded: cleared when it reaches [`TABLE_MAX`]
    /// (forgetting only means a scan page stays in memory, as any other page).
    fresh: Mutex<HashMap<PageKey, u64>>,
    /// Pages whose fetch failed with EIO just now, with the error and when (see the
    /// module's invariants). Bounded like `fresh`.
    failed: Mutex<HashMap<PageKey, (FsError, std::time::Instant)>>,
}

/// Page `i` of a run's answer; one a short answer lacks is empty (its length check
/// refuses it, as a short page's).
async fn run_page(get: RunGet, i: usize) -> Result<Bytes, FsError> {
    Ok(get.await?.get(i).cloned().unwrap_or_default())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Fetcher {
    /// A fetcher over `cache` and `sources` (asked in order), with `budget` page buffers
    /// in flight at most.
    pub fn new(
        cache: Arc<PageCache>,
        sources: Vec<Arc<dyn PageSource>>,
        budget: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            cache,
            sources,
            metrics,
            budget: Arc::new(Semaphore::new(budget.max(1))),
            fetches: Mutex::new(HashMap::new()),
            run_pages: Mutex::new(HashMap::new()),
            fresh: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
        }
    }

    /// The local cache.
    pub fn cache(&self) -> &Arc<PageCache> {
        &self.cache
    }

    /// Whether any source wants the pages of versions written here.
    pub fn shares_writes(&self) -> bool {
        self.sources.iter().any(|s| s.shares_writes())
    }

    /// Offers a page of a version written here to the sources that share pages.
    pub async fn offer(&self, key: &PageKey, size: u64, page: Bytes) {
        for s in self.sources.iter().filter(|s| s.shares_writes()) {
            s.offer(key, size, page.clone()).await;
        }
    }

    /// The names of the sources, in the order they are asked.
    pub fn source_names(&self) -> Vec<&'static str> {
        self.sources.iter().map(|s| s.name()).collect()
    }

    /// Page `idx` of `object`, and whether it came from the cache.
    pub async fn page(&self, object: &ObjectRead, idx: u64) -> Result<(Bytes, bool), FsError> {
        let key = PageKey::new(&object.id, idx);
        if let Some(b) = self.cache.get(&key).await {
            return Ok((b, true));
        }
        Ok((self.fetch(object, key, None).await?, false))
    }

    /// Whether a page is cached or being fetched (no I/O).
    pub fn has(&self, key: &PageKey) -> bool {
        lock(&self.fetches).contains_key(key) || self.cache.contains(key)
    }

    /// A permit for one read-ahead page, if the budget has one to spare: readers' own
    /// misses come first.
    pub fn try_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.budget.clone().try_acquire_owned().ok()
    }

    /// Fetches a page from the sources into the cache, coalescing concurrent fetches.
    /// `permit` (read-ahead's, from [`Self::try_permit`]) or one awaited here covers the
    /// page buffer until the page is in the cache.
    pub async fn fetch(
        &self,
        object: &ObjectRead,
        key: PageKey,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<Bytes, FsError> {
        let read_ahead = permit.is_some();
        if let Some((e, at)) = lock(&self.failed).get(&key)
            && at.elapsed() < FAILED_FETCH_TTL
        {
            return Err(e.clone());
        }
        let cell = lock(&self.fetches).entry(key.clone()).or_default().clone();
        // Set when this call fetched the page itself: its bytes and the permit covering
        // them until the disk write that follows the answer is done.
        let mut fetched: Option<(Bytes, OwnedSemaphorePermit)> = None;
        let res = cell
            .get_or_init(|| async {
                // A fetch of this page (a prefetch) may have completed and left the
                // in-flight table between our cache miss and now: use its result.
                if self.cache.contains(&key)
                    && let Some(b) = self.cache.get(&key).await
                {
                    return Ok(b);
                }
                // A page of a run: its bytes come from the run's GET (whose permits
                // cover them, and whose task writes them to disk), whoever asks first.
                let of_run = lock(&self.run_pages).get(&key).cloned();
                if let Some((get, i)) = of_run {
                    return self.admit(object, &key, run_page(get, i).await?).await;
                }
                let permit = match permit {
                    Some(p) => p,
                    None => self
                        .budget
                        .clone()
                        .acquire_owned()
                        .await
                        .map_err(|_| ReadError::BudgetClosed)?,
                };
                let req = PageRequest {
                    object,
                    key: &key,
                    read_ahead,
                };
                let b = self.admit(object, &key, self.walk(&req).await?).await?;
                fetched = Some((b.clone(), permit));
                Ok(b)
            })
            .await
            .clone();
        self.settle(&key, &cell, &res);
        if let Some((b, _permit)) = fetched {
            self.persist(key, object.owner, b).await;
        }
        res
    }

    /// A fetched page checked against the length its version has at that index, marked
    /// fresh and put in the memory tier, from where its waiters use it at once; whoever
    /// fetched it then writes it to disk ([`Self::persist`]). Answering only after
    /// that write would hold every reader of a cold sequential scan behind the disk
    /// writes of the whole read-ahead window, which a file's data file takes one at a
    /// time.
    async fn admit(&self, object: &ObjectRead, key: &PageKey, b: Bytes) -> Result<Bytes, FsError> {
        let want = object.page_range(key.idx.0);
        if b.len() as u64 != want.end - want.start {
            return Err(ReadError::WrongLength {
                object: key.object.to_string(),
                idx: key.idx.0,
                got: b.len() as u64,
                want: want.end - want.start,
            }
            .into());
        }
        // Before the page is visible, so no read can use it unmarked. A page fetched for a
        // peer is not read here: nothing would ever use it up.
        if !object.for_peer {
            let mut f = lock(&self.fresh);
            if f.len() >= TABLE_MAX {
                f.clear();
            }
            f.insert(key.clone(), b.len() as u64);
        }
        self.cache
            .put_mem(key.clone(), object.owner, b.clone())
            .await;
        Ok(b)
    }

    /// The disk write of a page [`Self::admit`] put in memory; then, if reads have used
    /// all of it meanwhile, it leaves memory ([`Self::release_read`]).
    async fn persist(&self, key: PageKey, owner: InodeNo, b: Bytes) {
        self.cache.put_disk(key.clone(), owner, b).await;
        self.release_read(&key);
    }

    /// After a page's fetch: out of the in-flight table, and an EIO remembered for
    /// [`FAILED_FETCH_TTL`].
    fn settle(&self, key: &PageKey, cell: &Cell, res: &Result<Bytes, FsError>) {
        let mut m = lock(&self.fetches);
        if m.get(key).is_some_and(|c| Arc::ptr_eq(c, cell)) {
            m.remove(key);
            lock(&self.run_pages).remove(key);
        }
        drop(m);
        let mut failed = lock(&self.failed);
        match res {
            Err(e) if e.errno() == libc::EIO => {
                if failed.len() >= TABLE_MAX {
                    failed.retain(|_, (_, at)| at.elapsed() < FAILED_FETCH_TTL);
                    if failed.len() >= TABLE_MAX {
                        failed.clear();
                    }
                }
                failed.insert(key.clone(), (e.clone(), std::time::Instant::now()));
            }
            Ok(_) => {
                failed.remove(key);
            }
            Err(_) => {}
        }
    }

    /// Registers in flight the pages of `want` of `object` as one run, fetched with one
    /// read of their whole byte range: `get`, given that range, answers one buffer per
    /// page (read-ahead of a version the store holds: one ranged GET of several pages
    /// costs the store and the daemon a fraction of one GET per page, and against a
    /// store's first-byte latency keeps far more bytes in flight per request). The run is
    /// the pages from `want.start` up to the first one cached, in flight or failed just
    /// now, one per permit of `permits` (each covers its page's buffer until the page is
    /// in the cache; those of pages not in the run are given back). `None` when no page
    /// is. From here on a reader of any of its pages waits for that read, never sends its
    /// own; [`Self::fetch_run`] carries the run out.
    pub fn begin_run(
        &self,
        object: &ObjectRead,
        want: std::ops::Range<u64>,
        mut permits: Vec<OwnedSemaphorePermit>,
        get: impl FnOnce(
            std::ops::Range<u64>,
        ) -> futures::future::BoxFuture<'static, Result<Vec<Bytes>, FsError>>,
    ) -> Option<Run> {
        use futures::FutureExt;
        let failed = lock(&self.failed);
        let mut m = lock(&self.fetches);
        let mut keys = Vec::new();
        for idx in want.start..want.end.min(want.start + permits.len() as u64) {
            let key = PageKey::new(&object.id, idx);
            let recent = failed
                .get(&key)
                .is_some_and(|(_, at)| at.elapsed() < FAILED_FETCH_TTL);
            if recent || m.contains_key(&key) || self.cache.contains(&key) {
                break;
            }
            keys.push(key);
        }
        let first = keys.first()?.idx.0;
        let last = first + keys.len() as u64 - 1;
        let bytes = object.page_range(first).start..object.page_range(last).end;
        let run_get: RunGet = get(bytes).map(|r| r.map(Arc::new)).boxed().shared();
        let mut runs = lock(&self.run_pages);
        let cells = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| {
                let cell = Cell::default();
                m.insert(key.clone(), cell.clone());
                runs.insert(key.clone(), (run_get.clone(), i));
                (key, cell)
            })
            .collect::<Vec<_>>();
        permits.truncate(cells.len());
        Some(Run {
            cells,
            permits,
            get: run_get,
        })
    }

    /// Carries out a run from [`Self::begin_run`]: each page is taken from the run's
    /// read, checked, cached and settled as [`Self::fetch`] does.
    pub async fn fetch_run(&self, object: &ObjectRead, run: Run) {
        let Run {
            cells,
            permits,
            get,
        } = run;
        let admits = cells.iter().enumerate().map(|(i, (key, cell))| {
            let get = get.clone();
            async move {
                let res = cell
                    .get_or_init(|| async move {
                        self.admit(object, key, run_page(get, i).await?).await
                    })
                    .await
                    .clone();
                self.settle(key, cell, &res);
                // Every page of the run goes to disk from here, whichever task took it
                // from the GET: the run's permits cover the buffers until then.
                if let Ok(b) = res {
                    self.persist(key.clone(), object.owner, b).await;
                }
            }
        });
        futures::future::join_all(admits).await;
        drop(permits);
    }

    /// Asks the sources in order until one answers.
    async fn walk(&self, req: &PageRequest<'_>) -> Result<Bytes, FsError> {
        let mut last = None;
        for s in &self.sources {
            match s.fetch(req).await {
                Fetched::Hit(b) => return Ok(b),
                Fetched::Miss => {}
                Fetched::Failed {
                    error,
                    try_next: true,
                } => {
                    tracing::debug!(source = s.name(), error = %error, "page source failed; trying the next");
                    last = Some(error);
                }
                Fetched::Failed { error, .. } => return Err(error),
            }
        }
        Err(last.unwrap_or_else(|| {
            ReadError::NoSource {
                object: req.key.object.to_string(),
                idx: req.key.idx.0,
            }
            .into()
        }))
    }

    /// Notes a read of `len` bytes of page `key`: a read-ahead page whose bytes have all
    /// been asked for leaves the memory tier (see [`Fetcher::fresh`]).
    pub fn used(&self, object: &Arc<ObjectId>, idx: u64, len: u64) {
        let mut f = lock(&self.fresh);
        if f.is_empty() {
            return; // the common case of a warm read: no key built, no hashing
        }
        let key = PageKey::new(object, idx);
        let Some(left) = f.get_mut(&key) else { return };
        *left = left.saturating_sub(len);
        // Released now if the disk tier holds it. If not, its disk write is still under
        // way (a reader may use a page as soon as it is in memory): the entry stays, used
        // up, and the fetch releases the page once that write is done (`release_read`).
        if *left == 0 && self.cache.release_mem(&key) {
            f.remove(&key);
            Metrics::inc(&self.metrics.readahead_released);
        }
    }

    /// After a read-ahead page's cache write: if reads have used all of it meanwhile, it
    /// leaves memory now (see [`Fetcher::used`]); either way a used-up entry is dropped.
    fn release_read(&self, key: &PageKey) {
        let mut f = lock(&self.fresh);
        if f.get(key) != Some(&0) {
            return;
        }
        f.remove(key);
        if self.cache.release_mem(key) {
            Metrics::inc(&self.metrics.readahead_released);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::page_cache::{EngineChoice, MemTier, PageCacheConfig, Tier};

    /// A disk tier whose writes wait until `open` is notified, then keep the page.
    #[derive(Default)]
    struct SlowDisk {
        open: tokio::sync::Notify,
        pages: Mutex<HashMap<PageKey, Bytes>>,
    }

    #[async_trait::async_trait]
    impl Tier for SlowDisk {
        fn name(&self) -> &'static str {
            "slow disk"
        }
        fn contains(&self, key: &PageKey) -> bool {
            lock(&self.pages).contains_key(key)
        }
        async fn get(&self, key: &PageKey) -> Option<Bytes> {
            lock(&self.pages).get(key).cloned()
        }
        async fn put(&self, key: PageKey, _: InodeNo, data: Bytes) {
            self.open.notified().await;
            lock(&self.pages).insert(key, data);
        }
        fn remove(&self, key: &PageKey) -> bool {
            lock(&self.pages).remove(key).is_some()
        }
    }

    /// A store of one object whose page `i` is `PAGE_SIZE` bytes of `i`.
    struct Pages;

    #[async_trait::async_trait]
    impl PageSource for Pages {
        fn name(&self) -> &'static str {
            "pages"
        }
        async fn fetch(&self, req: &PageRequest<'_>) -> Fetched {
            Fetched::Hit(page_bytes(req.key.idx.0))
        }
    }

    fn page_bytes(i: u64) -> Bytes {
        Bytes::from(vec![i as u8; PAGE_SIZE as usize])
    }

    fn setup() -> (Arc<Fetcher>, Arc<SlowDisk>, ObjectRead) {
        let metrics = Arc::new(Metrics::default());
        let disk = Arc::new(SlowDisk::default());
        let cfg = PageCacheConfig {
            mem_bytes: 64 * PAGE_SIZE,
            disk_bytes: 64 * PAGE_SIZE,
            disk_dir: std::path::PathBuf::new(),
            io_engine: EngineChoice::Auto,
            disk_free_ratio: 0.0,
        };
        let mem = Arc::new(MemTier::new(cfg.mem_bytes, metrics.clone()));
        let cache = Arc::new(PageCache::with_tiers(
            mem,
            disk.clone(),
            &cfg,
            metrics.clone(),
        ));
        let fetcher = Arc::new(Fetcher::new(cache, vec![Arc::new(Pages)], 64, metrics));
        let object = ObjectRead {
            id: Arc::new(ObjectId::new(Arc::from("s3:b"), "k", "e:1")),
            size: 16 * PAGE_SIZE,
            store: None,
            owner: InodeNo(2),
            for_peer: false,
        };
        (fetcher, disk, object)
    }

    /// A fetched page is answered from memory while its disk write is still under way: a
    /// reader waits for the store, never for the cache disk. The write then completes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fetched_page_is_answered_before_its_disk_write() {
        let (fetcher, disk, object) = setup();
        let object = Arc::new(object);
        // A page of its own (a reader's miss): once it is in memory, another reader of
        // it is answered, while the reader that fetched it waits for the disk write.
        let key = PageKey::new(&object.id, 3);
        let (f, o, k) = (fetcher.clone(), object.clone(), key.clone());
        let reader = tokio::spawn(async move { f.fetch(&o, k, None).await });
        let in_memory = async {
            while !fetcher.cache().contains(&key) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), in_memory)
            .await
            .expect("the page reaches memory");
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            fetcher.fetch(&object, key.clone(), None),
        )
        .await
        .expect("answered while the disk write waits")
        .unwrap();
        assert!(got == page_bytes(3));
        assert!(!disk.contains(&key), "the disk write is still waiting");
        disk.open.notify_one();
        assert!(reader.await.unwrap().unwrap() == page_bytes(3));
        assert!(disk.contains(&key), "then the page is on disk");

        // The pages of a run: each reader is answered as the run's read answers, while
        // the run's disk writes wait.
        let permits = (0..4).map(|_| fetcher.try_permit().unwrap()).collect();
        let get = |range: std::ops::Range<u64>| {
            use futures::FutureExt;
            async move {
                let pages = range.start / PAGE_SIZE..range.end.div_ceil(PAGE_SIZE);
                Ok(pages.map(page_bytes).collect())
            }
            .boxed()
        };
        let run = fetcher.begin_run(&object, 8..12, permits, get).unwrap();
        let (f, o) = (fetcher.clone(), object.clone());
        let task = tokio::spawn(async move { f.fetch_run(&o, run).await });
        for i in 8..12 {
            let b = tokio::time::timeout(
                Duration::from_secs(5),
                fetcher.fetch(&object, PageKey::new(&object.id, i), None),
            )
            .await
            .expect("a run's page is answered while its disk write waits")
            .unwrap();
            assert!(b == page_bytes(i));
        }
        assert!(!task.is_finished(), "the run's disk writes are waiting");
        let writes_done = async {
            while !task.is_finished() {
                disk.open.notify_one();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), writes_done)
            .await
            .expect("the run ends once its disk writes go through");
        for i in 8..12 {
            assert!(disk.contains(&PageKey::new(&object.id, i)));
        }
    }
}
