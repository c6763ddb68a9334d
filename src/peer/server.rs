//! The peer listener: serves pages to other hosts of the cluster from a [`PeerHost`]
//! (the daemon's vfs, or a cache node's own cache).
//!
//! Invariants:
//! - A connection must send its HELLO with the token within [`HELLO_TIMEOUT`]; anything
//!   else (garbage, a wrong token, a length prefix past the bound) closes that connection
//!   only, and the listener goes on.
//! - Each page sent carries a CRC32C of its bytes (see `wire`): computed here from the
//!   buffer sent, or, for a page sent from the disk tier's data file, the one the tier
//!   recorded when it wrote and later checked the page, so the client checks the bytes
//!   against what the node last verified, end to end.
//! - A page is sent from the data file (sendfile: no copy through this process) only when
//!   the range is in the kernel's page cache, so a send never waits for the device on a
//!   runtime thread; other pages are read the ordinary way first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alluxio_metaserver::ObjectVersion;
use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};

use super::wire::{self, Get, Kind};
use crate::error::FsError;
use crate::fetch::{Fetched, Fetcher, ObjectRead, PageRequest, PageSource};
use crate::metrics::Metrics;
use crate::object::{ObjectId, PageKey};
use crate::page_cache::Outgoing;
use crate::types::{InodeNo, PAGE_SIZE};
use crate::ufs::Ufs;

/// How long a new connection has to say HELLO.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// What a node serves pages from.
#[async_trait::async_trait]
pub trait PeerHost: Send + Sync + 'static {
    /// The page `get` names: `Ok(None)` when it is neither cached here nor readable from
    /// a store this host has.
    async fn page(&self, get: Get) -> Result<Option<Outgoing>, FsError>;
    /// A page just written elsewhere, offered to this host as its owner: whether it was
    /// taken (into the cache).
    async fn offer(&self, get: Get, page: Bytes) -> Result<bool, FsError>;
    /// Makes sure the page `get` names is cached here: `Some(true)` when it was already,
    /// `Some(false)` when it was read now, `None` when this host cannot read it.
    async fn load(&self, get: Get) -> Result<Option<bool>, FsError>;
    /// Drops the cached pages of the version `get` names; returns the bytes freed.
    async fn free(&self, get: Get) -> Result<u64, FsError>;
}

/// Bound on the table of checked sizes (cleared when full).
const SIZES_MAX: usize = 1 << 16;

/// Answers peers' GETs from a fetcher: its tiers, then a read-through from the store the
/// caller found for the page. A request names the version's length, which decides each
/// page's length; it is checked before the store is read (against the size in a
/// size+mtime version, else once per version with a stat whose version must be the one
/// asked for), since a wrong length would put a cut page in this host's cache.
pub struct PageServer {
    fetcher: Arc<Fetcher>,
    sizes: Mutex<HashMap<Arc<ObjectId>, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PageServer {
    /// Serves from `fetcher` (whose chain must end with a source that reads
    /// `ObjectRead::store`).
    pub fn new(fetcher: Arc<Fetcher>) -> Self {
        Self {
            fetcher,
            sizes: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `size` is the length of `id` in `ufs`.
    async fn size_ok(&self, id: &Arc<ObjectId>, ufs: &Ufs, key: &str, size: u64) -> bool {
        if let ObjectVersion::SizeMtime { size: s, .. } = id.version() {
            return *s == size;
        }
        if let Some(s) = lock(&self.sizes).get(id) {
            return *s == size;
        }
        match ufs.stat(key).await {
            Ok(info) if info.version == id.version_text() => {
                let mut m = lock(&self.sizes);
                if m.len() >= SIZES_MAX {
                    m.clear();
                }
                m.insert(id.clone(), info.size);
                info.size == size
            }
            _ => false,
        }
    }

    /// Takes `page`, offered as page `get.idx` of `get`'s version, into the cache, if it
    /// is one: a shareable version this host can check (`store`), whose length gives the
    /// page exactly this length. Anything else is refused, never cached.
    pub async fn offer(
        &self,
        get: Get,
        page: Bytes,
        store: Option<(Arc<Ufs>, String)>,
    ) -> Result<bool, FsError> {
        let id = Arc::new(ObjectId::new(
            Arc::from(get.store.as_str()),
            &get.key,
            &get.version,
        ));
        let start = get.idx.saturating_mul(PAGE_SIZE);
        let want = get
            .size
            .min(start.saturating_add(PAGE_SIZE))
            .saturating_sub(start);
        if !id.shareable() || start >= get.size || page.len() as u64 != want {
            return Ok(false);
        }
        let Some((ufs, key)) = store else {
            return Ok(false);
        };
        if !self.size_ok(&id, &ufs, &key, get.size).await {
            return Ok(false);
        }
        let key = PageKey::new(&id, get.idx);
        if !self.fetcher.has(&key) {
            self.fetcher.cache().put(key, InodeNo(0), page).await;
        }
        Ok(true)
    }

    /// The page `get` names, with `store` (a store this host reads and the key under its
    /// root) to read it through from: `None` when it is neither cached nor readable here.
    /// A cached page comes as the cache hands it out to send ([`PageCache::page_to_send`]).
    ///
    /// [`PageCache::page_to_send`]: crate::page_cache::PageCache::page_to_send
    pub async fn page(
        &self,
        get: Get,
        store: Option<(Arc<Ufs>, String)>,
    ) -> Result<Option<Outgoing>, FsError> {
        let (id, key) = identity(&get)?;
        if let Some(out) = self.fetcher.cache().page_to_send(&key).await {
            return Ok(Some(out));
        }
        Ok(self
            .read_through(&get, id, &key, store)
            .await?
            .map(Outgoing::Bytes))
    }

    /// Makes sure the page `get` names is cached here (`alluxio fs load` over a cluster:
    /// the owner reads its own pages from the store): `Some(true)` when it already was,
    /// `Some(false)` when it was read now, `None` when it cannot be read here.
    pub async fn load(
        &self,
        get: Get,
        store: Option<(Arc<Ufs>, String)>,
    ) -> Result<Option<bool>, FsError> {
        let (id, key) = identity(&get)?;
        if self.fetcher.has(&key) {
            return Ok(Some(true));
        }
        Ok(self
            .read_through(&get, id, &key, store)
            .await?
            .map(|_| false))
    }

    /// Drops every cached page of the version `get` names (its index is ignored).
    /// Returns the bytes freed, memory and disk tiers together.
    pub async fn free(&self, get: Get) -> Result<u64, FsError> {
        let id = Arc::new(ObjectId::new(
            Arc::from(get.store.as_str()),
            &get.key,
            &get.version,
        ));
        let cache = self.fetcher.cache().clone();
        // Deleting cache files can wait on the device: not on a runtime thread.
        tokio::task::spawn_blocking(move || cache.free_object(&id, get.size).0)
            .await
            .map_err(|e| FsError::from(std::io::Error::other(e.to_string())))
    }

    /// The page through the fetcher (its tiers, then `store`), after checking that
    /// `store` holds the version at the length asked for.
    async fn read_through(
        &self,
        get: &Get,
        id: Arc<ObjectId>,
        key: &PageKey,
        mut store: Option<(Arc<Ufs>, String)>,
    ) -> Result<Option<Bytes>, FsError> {
        let cached = self.fetcher.has(key);
        if let Some((ufs, k)) = &store
            && !cached
            && !self.size_ok(&id, ufs, k, get.size).await
        {
            // Not the version this host can read (changed since, or a wrong length).
            store = None;
        }
        if store.is_none() && !cached {
            return Ok(None);
        }
        let object = ObjectRead {
            id,
            size: get.size,
            store,
            owner: InodeNo(0),
            for_peer: true,
        };
        Ok(Some(self.fetcher.page(&object, get.idx).await?.0))
    }
}

/// The page's id and key, for a shareable version and a page inside it.
fn identity(get: &Get) -> Result<(Arc<ObjectId>, PageKey), FsError> {
    let id = Arc::new(ObjectId::new(
        Arc::from(get.store.as_str()),
        &get.key,
        &get.version,
    ));
    if !id.shareable() {
        return Err(FsError::expected(
            libc::EINVAL,
            "a version only its own host can read",
        ));
    }
    if get.idx >= get.size.div_ceil(PAGE_SIZE) {
        return Err(FsError::expected(libc::EINVAL, "page past the end"));
    }
    let key = PageKey::new(&id, get.idx);
    Ok((id, key))
}

/// The page source of a host that only serves peers: reads the page from the store the
/// request names.
pub struct StoreSource;

#[async_trait::async_trait]
impl PageSource for StoreSource {
    fn name(&self) -> &'static str {
        "store"
    }

    async fn fetch(&self, req: &PageRequest<'_>) -> Fetched {
        let Some((ufs, key)) = &req.object.store else {
            return Fetched::Miss;
        };
        match ufs
            .read_range(key, req.range(), req.key.object.version_text())
            .await
        {
            Ok(b) => Fetched::Hit(b),
            Err(e) => Fetched::Failed {
                error: e.into(),
                try_next: false,
            },
        }
    }
}

/// Serves peers on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    host: Arc<dyn PeerHost>,
    token: Arc<str>,
    metrics: Arc<Metrics>,
) {
    loop {
        let (conn, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "peer listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (host, token, metrics) = (host.clone(), token.clone(), metrics.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(conn, &*host, &token, &metrics).await {
                tracing::debug!(peer = %from, error = %e, "peer connection ended");
            }
        });
    }
}

async fn connection(
    mut c: TcpStream,
    host: &dyn PeerHost,
    token: &str,
    metrics: &Metrics,
) -> std::io::Result<()> {
    c.set_nodelay(true)?;
    // Anything but a HELLO with the token, in time, ends the connection (counted).
    let hello =
        tokio::time::timeout(HELLO_TIMEOUT, wire::read_frame(&mut c, wire::MAX_REQUEST)).await;
    let why = match &hello {
        Ok(Ok((Kind::Hello, t))) if wire::same_secret(t, token.as_bytes()) => None,
        Ok(Ok(_)) => Some("missing or wrong token".to_string()),
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("no HELLO in time".to_string()),
    };
    if let Some(why) = why {
        Metrics::inc(&metrics.peer_refused);
        let _ = wire::write_frame(&mut c, Kind::Err, why.as_bytes()).await;
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            why,
        ));
    }
    wire::write_frame(&mut c, Kind::Ok, &[]).await?;
    let bound = |k| {
        if k == Kind::Put {
            wire::MAX_PUT
        } else {
            wire::MAX_REQUEST
        }
    };
    loop {
        let (kind, body) = match wire::read_frame_by(&mut c, bound).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => {
                Metrics::inc(&metrics.peer_refused);
                let _ = wire::write_frame(&mut c, Kind::Err, e.to_string().as_bytes()).await;
                return Err(e);
            }
        };
        // Every request but STATS names a page (a PUT with its bytes).
        let parsed = match kind {
            Kind::Put => wire::decode_put(body).map(|(g, p)| (Some(g), Some(p))),
            Kind::Get | Kind::Load | Kind::Free => Get::decode(body).map(|g| (Some(g), None)),
            Kind::Stats => Ok((None, None)),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "expected a request",
            )),
        };
        let (get, page) = match parsed {
            Ok(p) => p,
            Err(e) => {
                Metrics::inc(&metrics.peer_refused);
                let _ = wire::write_frame(&mut c, Kind::Err, e.to_string().as_bytes()).await;
                return Err(e);
            }
        };
        let Some(get) = get else {
            let counters = serde_json::json!(metrics.snapshot()).to_string();
            wire::write_frame(&mut c, Kind::Ok, counters.as_bytes()).await?;
            continue;
        };
        match (kind, page) {
            (Kind::Put, Some(page)) => match host.offer(get, page).await {
                Ok(true) => {
                    Metrics::inc(&metrics.peer_pages_received);
                    wire::write_frame(&mut c, Kind::Ok, &[]).await?
                }
                Ok(false) => wire::write_frame(&mut c, Kind::Err, b"not taken").await?,
                Err(e) => wire::write_frame(&mut c, Kind::Err, e.to_string().as_bytes()).await?,
            },
            (Kind::Load, _) => match host.load(get).await {
                Ok(Some(held)) => wire::write_frame(&mut c, Kind::Ok, &[u8::from(held)]).await?,
                Ok(None) => wire::write_frame(&mut c, Kind::Miss, &[]).await?,
                Err(e) => wire::write_frame(&mut c, Kind::Err, e.to_string().as_bytes()).await?,
            },
            (Kind::Free, _) => match host.free(get).await {
                Ok(n) => wire::write_frame(&mut c, Kind::Ok, &n.to_be_bytes()).await?,
                Err(e) => wire::write_frame(&mut c, Kind::Err, e.to_string().as_bytes()).await?,
            },
            _ => serve_get(&mut c, host, get, metrics).await?,
        }
    }
}

/// Answers one GET: the page (from the data file where it can), MISS or ERR.
async fn serve_get(
    c: &mut TcpStream,
    host: &dyn PeerHost,
    get: Get,
    metrics: &Metrics,
) -> std::io::Result<()> {
    match host.page(get).await {
        Ok(Some(out)) => {
            let len = match out {
                Outgoing::Bytes(page) => {
                    let crc = crc32c::crc32c(&page).to_be_bytes();
                    wire::write_frame_parts(c, Kind::Page, &crc, &page).await?;
                    page.len()
                }
                Outgoing::File(f) => {
                    let len = f.len as usize;
                    wire::write_page_from_file(c, f.crc, &f.backing.file, f.offset, len).await?;
                    Metrics::inc(&metrics.peer_pages_sent_from_file);
                    len
                }
            };
            Metrics::inc(&metrics.peer_pages_served);
            Metrics::add(&metrics.bytes_served_to_peers, len as u64);
            Ok(())
        }
        Ok(None) => wire::write_frame(c, Kind::Miss, &[]).await,
        Err(e) => wire::write_frame(c, Kind::Err, e.to_string().as_bytes()).await,
    }
}
