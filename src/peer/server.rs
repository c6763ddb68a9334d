//! The peer listener: serves pages to other hosts of the cluster from a [`PeerHost`]
//! (the daemon's vfs, or a cache node's own cache).
//!
//! Invariants:
//! - A connection must send its HELLO with the token within [`HELLO_TIMEOUT`]; anything
//!   else (garbage, a wrong token, a length prefix past the bound) closes that connection
//!   only, and the listener goes on.
//! - Each page sent carries the CRC32C of the bytes sent (see `wire`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};

use super::wire::{self, Get, Kind};
use crate::error::FsError;
use crate::metrics::Metrics;

/// How long a new connection has to say HELLO.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// What a node serves pages from.
#[async_trait::async_trait]
pub trait PeerHost: Send + Sync + 'static {
    /// The page `get` names: `Ok(None)` when it is neither cached here nor readable from
    /// a store this host has.
    async fn page(&self, get: Get) -> Result<Option<Bytes>, FsError>;
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
    loop {
        let (kind, body) = match wire::read_frame(&mut c, wire::MAX_REQUEST).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => {
                Metrics::inc(&metrics.peer_refused);
                let _ = wire::write_frame(&mut c, Kind::Err, e.to_string().as_bytes()).await;
                return Err(e);
            }
        };
        if kind != Kind::Get {
            let _ = wire::write_frame(&mut c, Kind::Err, b"expected GET").await;
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "expected GET",
            ));
        }
        let get = match Get::decode(body) {
            Ok(g) => g,
            Err(e) => {
                Metrics::inc(&metrics.peer_refused);
                let _ = wire::write_frame(&mut c, Kind::Err, e.to_string().as_bytes()).await;
                return Err(e);
            }
        };
        match host.page(get).await {
            Ok(Some(page)) => {
                let mut body = Vec::with_capacity(4 + page.len());
                body.extend_from_slice(&crc32c::crc32c(&page).to_be_bytes());
                body.extend_from_slice(&page);
                wire::write_frame(&mut c, Kind::Page, &body).await?;
                Metrics::inc(&metrics.peer_pages_served);
                Metrics::add(&metrics.bytes_served_to_peers, page.len() as u64);
            }
            Ok(None) => wire::write_frame(&mut c, Kind::Miss, &[]).await?,
            Err(e) => wire::write_frame(&mut c, Kind::Err, e.to_string().as_bytes()).await?,
        }
    }
}
