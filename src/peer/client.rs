//! [`Peers`], the page source that asks the cache nodes: the page's owner on the ring,
//! then the next owner, each within one timeout; a peer that fails or times out is
//! skipped for [`DEAD_FOR`] (or until the membership changes), so a dead node costs at
//! most one timeout per [`DEAD_FOR`] and reads go on to the store.
//!
//! Invariants:
//! - Only shareable versions are asked for, and never on behalf of a peer
//!   ([`ObjectRead::for_peer`]): one hop at most.
//! - When this host is the page's owner it asks nobody: the owner reads the store, so the
//!   store is read once per page for the whole cluster.
//! - A page is accepted only at the length its version has there and with the CRC32C the
//!   node computed; anything else is a miss (the next source answers), never bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpStream;

use super::ring::{Member, Ring};
use super::wire::{self, Get, Kind};
use crate::fetch::{Fetched, ObjectRead, PageRequest, PageSource};
use crate::metrics::Metrics;
use crate::object::PageKey;

/// How long a peer that failed is skipped.
pub const DEAD_FOR: Duration = Duration::from_secs(10);

/// Default bound on one peer request, connection included.
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_millis(500);

/// Idle connections kept per peer.
const IDLE_PER_PEER: usize = 8;

/// How this host takes part.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The cluster token.
    pub token: String,
    /// Bound on one request to a peer, connection included.
    pub timeout: Duration,
    /// This host's own peer address, if it serves peers (it is then on the ring too).
    pub self_addr: Option<String>,
    /// Owners asked per page (the owner, then the next).
    pub tries: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The cache nodes, as one page source.
pub struct Peers {
    ring: RwLock<Arc<Ring>>,
    cfg: PeerConfig,
    idle: Mutex<HashMap<String, Vec<TcpStream>>>,
    dead: Mutex<HashMap<String, Instant>>,
    metrics: Arc<Metrics>,
}

enum Answer {
    Page(Bytes),
    Miss,
}

impl Peers {
    /// A source over `members`.
    pub fn new(members: Vec<Member>, cfg: PeerConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            ring: RwLock::new(Arc::new(Ring::new(members))),
            cfg,
            idle: Mutex::new(HashMap::new()),
            dead: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Replaces the membership; every peer is tried again.
    pub fn set_members(&self, members: Vec<Member>) {
        *self
            .ring
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(Ring::new(members));
        lock(&self.dead).clear();
    }

    /// The current ring.
    pub fn ring(&self) -> Arc<Ring> {
        self.ring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn is_dead(&self, addr: &str) -> bool {
        let mut dead = lock(&self.dead);
        match dead.get(addr) {
            Some(until) if Instant::now() < *until => true,
            Some(_) => {
                dead.remove(addr);
                false
            }
            None => false,
        }
    }

    async fn connect(&self, addr: &str) -> std::io::Result<TcpStream> {
        if let Some(c) = lock(&self.idle).get_mut(addr).and_then(Vec::pop) {
            return Ok(c);
        }
        let mut c = TcpStream::connect(addr).await?;
        c.set_nodelay(true)?;
        wire::write_frame(&mut c, Kind::Hello, self.cfg.token.as_bytes()).await?;
        match wire::read_frame(&mut c, wire::MAX_REQUEST).await? {
            (Kind::Ok, _) => Ok(c),
            (_, msg) => Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("peer {addr} refused: {}", String::from_utf8_lossy(&msg)),
            )),
        }
    }

    /// Marks a peer failed: skipped for [`DEAD_FOR`], its idle connections dropped.
    fn failed(&self, addr: &str, why: &dyn std::fmt::Display) {
        Metrics::inc(&self.metrics.peer_errors);
        tracing::warn!(peer = %addr, error = %why, "peer failed; skipping it for {} s", DEAD_FOR.as_secs());
        lock(&self.dead).insert(addr.to_string(), Instant::now() + DEAD_FOR);
        lock(&self.idle).remove(addr);
    }

    /// Returns a connection whose exchange completed to the idle pool.
    fn done_with(&self, addr: &str, c: TcpStream) {
        let mut idle = lock(&self.idle);
        let pool = idle.entry(addr.to_string()).or_default();
        if pool.len() < IDLE_PER_PEER {
            pool.push(c);
        }
    }

    /// One request to `addr` within `bound` (on an idle connection or a new one): the
    /// answer's kind and body. Timed into `peer_latency` under the peer's address; an
    /// error or a timeout there counts as failed (the caller decides whether the peer
    /// is skipped).
    async fn call(
        &self,
        addr: &str,
        kind: Kind,
        body: &[u8],
        max: u32,
        bound: Duration,
    ) -> std::io::Result<(Kind, Bytes)> {
        let t0 = Instant::now();
        let exchange = async {
            let mut c = self.connect(addr).await?;
            wire::write_frame(&mut c, kind, body).await?;
            let answer = wire::read_frame(&mut c, max).await?;
            self.done_with(addr, c);
            Ok(answer)
        };
        let r = match tokio::time::timeout(bound, exchange).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} ms", bound.as_millis()),
            )),
        };
        self.metrics
            .peer_latency
            .observe(addr, t0.elapsed(), r.is_err());
        r
    }

    /// One PUT to `addr`: whether the owner took the page.
    async fn put(&self, addr: &str, body: &[u8]) -> std::io::Result<bool> {
        let (kind, _) = self
            .call(addr, Kind::Put, body, wire::MAX_REQUEST, self.cfg.timeout)
            .await?;
        Ok(kind == Kind::Ok)
    }

    /// One GET to `addr`.
    async fn get(&self, addr: &str, get: &Get, want: u64) -> std::io::Result<Answer> {
        let body = get.encode()?;
        let (kind, body) = self
            .call(addr, Kind::Get, &body, wire::MAX_ANSWER, self.cfg.timeout)
            .await?;
        match kind {
            Kind::Page if body.len() >= 4 => {
                let crc = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                let page = body.slice(4..);
                if page.len() as u64 != want || crc32c::crc32c(&page) != crc {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("peer {addr} sent a page that fails its length or checksum"),
                    ));
                }
                Ok(Answer::Page(page))
            }
            Kind::Miss => Ok(Answer::Miss),
            other => Err(unexpected(addr, other, &body)),
        }
    }

    /// The members other than this host.
    fn others(&self) -> Vec<String> {
        self.ring()
            .members()
            .iter()
            .map(|m| m.addr.clone())
            .filter(|a| self.cfg.self_addr.as_deref() != Some(a.as_str()))
            .collect()
    }

    /// Has the owner of page `idx` of `object` cache it, reading it from the store if it
    /// must (`alluxio fs load` over the cluster: each node reads its own pages, and no
    /// bytes come back). Tries the owners as a read does; a peer that fails is skipped
    /// as it is for reads.
    pub async fn load(&self, object: &ObjectRead, idx: u64) -> Loaded {
        let id = &object.id;
        if !id.shareable() {
            return Loaded::Here;
        }
        let get = Get::page_of(id, idx, object.size);
        let Ok(body) = get.encode() else {
            return Loaded::Here;
        };
        for m in self.ring().owners(id, idx, self.cfg.tries.max(1)) {
            if self.cfg.self_addr.as_deref() == Some(m.addr.as_str()) {
                return Loaded::Here;
            }
            if self.is_dead(&m.addr) {
                continue;
            }
            let bound = self.cfg.timeout + LOAD_TIMEOUT;
            match self
                .call(&m.addr, Kind::Load, &body, wire::MAX_REQUEST, bound)
                .await
            {
                Ok((Kind::Ok, b)) => {
                    return if b.first() == Some(&1) {
                        Loaded::Held
                    } else {
                        Loaded::Read
                    };
                }
                Ok((Kind::Miss, _)) => Metrics::inc(&self.metrics.peer_misses),
                Ok((k, b)) => self.failed(&m.addr, &unexpected(&m.addr, k, &b)),
                Err(e) => self.failed(&m.addr, &e),
            }
        }
        Loaded::Here
    }

    /// Asks every other member to drop its pages of `object` (`alluxio fs free` over the
    /// cluster). Returns (bytes freed, members that did not answer).
    pub async fn free(&self, object: &ObjectRead) -> (u64, usize) {
        let id = &object.id;
        if !id.shareable() {
            return (0, 0);
        }
        let get = Get::page_of(id, 0, object.size);
        let Ok(body) = get.encode() else {
            return (0, 0);
        };
        let asks = self.others().into_iter().map(|addr| {
            let body = &body;
            async move {
                let r = self
                    .call(&addr, Kind::Free, body, wire::MAX_REQUEST, FREE_TIMEOUT)
                    .await;
                match r {
                    Ok((Kind::Ok, b)) if b.len() == 8 => {
                        Some(u64::from_be_bytes(b[..].try_into().unwrap_or([0; 8])))
                    }
                    _ => None,
                }
            }
        });
        let answers = futures::future::join_all(asks).await;
        let freed = answers.iter().flatten().sum();
        (freed, answers.iter().filter(|a| a.is_none()).count())
    }

    /// Every other member's counters (`alluxio fs report` over the cluster), by address:
    /// the counters, or why there are none.
    pub async fn stats(&self) -> Vec<(String, Result<serde_json::Value, String>)> {
        let asks = self.others().into_iter().map(|addr| async move {
            let r = match self
                .call(&addr, Kind::Stats, &[], wire::MAX_ANSWER, self.cfg.timeout)
                .await
            {
                Ok((Kind::Ok, b)) => serde_json::from_slice(&b).map_err(|e| e.to_string()),
                Ok((k, b)) => Err(unexpected(&addr, k, &b).to_string()),
                Err(e) => Err(e.to_string()),
            };
            (addr, r)
        });
        futures::future::join_all(asks).await
    }
}

/// Where [`Peers::load`] left a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// Its owner had it cached already.
    Held,
    /// Its owner read it from the store now.
    Read,
    /// This host is its owner, or no owner could take it: load it here.
    Here,
}

/// Bound on a LOAD's answer past the peer timeout: the owner may read the page through
/// from the store (whose own calls are bounded by the node's store timeout).
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Bound on a FREE's answer: the owner deletes cache files.
const FREE_TIMEOUT: Duration = Duration::from_secs(30);

fn unexpected(addr: &str, kind: Kind, body: &[u8]) -> std::io::Error {
    if kind == Kind::Err {
        std::io::Error::other(format!("peer {addr}: {}", String::from_utf8_lossy(body)))
    } else {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("peer {addr} answered {kind:?} out of turn"),
        )
    }
}

#[async_trait::async_trait]
impl PageSource for Peers {
    fn name(&self) -> &'static str {
        "peers"
    }

    async fn fetch(&self, req: &PageRequest<'_>) -> Fetched {
        let id = &req.key.object;
        if req.object.for_peer || !id.shareable() {
            return Fetched::Miss;
        }
        let ring = self.ring();
        let owners = ring.owners(id, req.key.idx.0, self.cfg.tries.max(1));
        let range = req.range();
        let get = Get::page_of(id, req.key.idx.0, req.object.size);
        for m in owners.iter() {
            if self.cfg.self_addr.as_deref() == Some(m.addr.as_str()) {
                // This host owns the page (or is next after a failed owner): it reads the
                // store itself.
                break;
            }
            if self.is_dead(&m.addr) {
                continue;
            }
            match self.get(&m.addr, &get, range.end - range.start).await {
                Ok(Answer::Page(b)) => {
                    Metrics::inc(&self.metrics.peer_hits);
                    Metrics::add(&self.metrics.bytes_from_peers, b.len() as u64);
                    return Fetched::Hit(b);
                }
                Ok(Answer::Miss) => Metrics::inc(&self.metrics.peer_misses),
                Err(e) => self.failed(&m.addr, &e),
            }
        }
        Fetched::Miss
    }

    fn shares_writes(&self) -> bool {
        true
    }

    /// Pushes a page written here to its owner (best effort: a failure only means the
    /// owner reads the page from the store when first asked).
    async fn offer(&self, key: &PageKey, size: u64, page: Bytes) {
        let id = &key.object;
        if !id.shareable() {
            return;
        }
        let Some(owner) = self.ring().owners(id, key.idx.0, 1).pop() else {
            return;
        };
        if self.cfg.self_addr.as_deref() == Some(owner.addr.as_str()) || self.is_dead(&owner.addr) {
            return;
        }
        let get = Get::page_of(id, key.idx.0, size);
        let Ok(body) = wire::encode_put(&get, &page) else {
            return;
        };
        match self.put(&owner.addr, &body).await {
            Ok(true) => Metrics::inc(&self.metrics.peer_pushes),
            Ok(false) => {
                tracing::debug!(peer = %owner.addr, "owner did not take a pushed page");
            }
            Err(e) => self.failed(&owner.addr, &e),
        }
    }
}
