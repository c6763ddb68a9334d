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
use crate::fetch::{Fetched, PageRequest, PageSource};
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

    /// One PUT to `addr`: whether the owner took the page.
    async fn put(&self, addr: &str, body: &[u8]) -> std::io::Result<bool> {
        let mut c = self.connect(addr).await?;
        wire::write_frame(&mut c, Kind::Put, body).await?;
        let (kind, _) = wire::read_frame(&mut c, wire::MAX_REQUEST).await?;
        self.done_with(addr, c);
        Ok(kind == Kind::Ok)
    }

    /// One GET to `addr`, on an idle connection or a new one.
    async fn get(&self, addr: &str, get: &Get, want: u64) -> std::io::Result<Answer> {
        let body = get.encode()?;
        let mut c = self.connect(addr).await?;
        wire::write_frame(&mut c, Kind::Get, &body).await?;
        let (kind, body) = wire::read_frame(&mut c, wire::MAX_ANSWER).await?;
        let answer = match kind {
            Kind::Page if body.len() >= 4 => {
                let crc = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                let page = body.slice(4..);
                if page.len() as u64 != want || crc32c::crc32c(&page) != crc {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("peer {addr} sent a page that fails its length or checksum"),
                    ));
                }
                Answer::Page(page)
            }
            Kind::Miss => Answer::Miss,
            Kind::Err => {
                return Err(std::io::Error::other(format!(
                    "peer {addr}: {}",
                    String::from_utf8_lossy(&body)
                )));
            }
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("peer {addr} answered out of turn"),
                ));
            }
        };
        self.done_with(addr, c);
        Ok(answer)
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
        let get = Get {
            store: id.store().to_string(),
            key: id.key().to_string(),
            version: id.version_text().to_string(),
            idx: req.key.idx.0,
            size: req.object.size,
        };
        for m in owners.iter() {
            if self.cfg.self_addr.as_deref() == Some(m.addr.as_str()) {
                // This host owns the page (or is next after a failed owner): it reads the
                // store itself.
                break;
            }
            if self.is_dead(&m.addr) {
                continue;
            }
            let t0 = Instant::now();
            match tokio::time::timeout(
                self.cfg.timeout,
                self.get(&m.addr, &get, range.end - range.start),
            )
            .await
            {
                Ok(Ok(Answer::Page(b))) => {
                    Metrics::inc(&self.metrics.peer_hits);
                    Metrics::add(&self.metrics.bytes_from_peers, b.len() as u64);
                    tracing::trace!(peer = %m.addr, took_us = t0.elapsed().as_micros() as u64, "page from a peer");
                    return Fetched::Hit(b);
                }
                Ok(Ok(Answer::Miss)) => {
                    Metrics::inc(&self.metrics.peer_misses);
                }
                Ok(Err(e)) => self.failed(&m.addr, &e),
                Err(_) => self.failed(&m.addr, &"no answer within peer_timeout"),
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
        let get = Get {
            store: id.store().to_string(),
            key: id.key().to_string(),
            version: id.version_text().to_string(),
            idx: key.idx.0,
            size,
        };
        let Ok(body) = wire::encode_put(&get, &page) else {
            return;
        };
        match tokio::time::timeout(self.cfg.timeout, self.put(&owner.addr, &body)).await {
            Ok(Ok(true)) => Metrics::inc(&self.metrics.peer_pushes),
            Ok(Ok(false)) => {
                tracing::debug!(peer = %owner.addr, "owner did not take a pushed page");
            }
            Ok(Err(e)) => self.failed(&owner.addr, &e),
            Err(_) => self.failed(&owner.addr, &"no answer within peer_timeout"),
        }
    }
}
