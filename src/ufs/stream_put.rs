//! A PUT whose body is read from the local file as it is sent, for WebDAV: the service
//! takes an object only in one request, and OpenDAL's WebDAV writer needs that request's
//! whole body in memory. Streamed, an upload holds one chunk at a time however large the
//! file, so the memory budget holds for WebDAV as for the multipart stores.
//!
//! Only the PUT itself is done here; the parent collections are made with OpenDAL's
//! `create_dir` first (MKCOL, as its own writer does), and the object's version is read
//! back with a stat.

use std::collections::BTreeMap;
use std::sync::Arc;

use opendal::ErrorKind;

/// Bytes read from the file per chunk of the body.
const CHUNK: usize = 1 << 20;

/// Where and how to PUT the objects of one WebDAV UFS.
pub(super) struct StreamPut {
    client: reqwest::Client,
    /// `endpoint` + root, without a trailing `/`.
    base: String,
    auth: Option<String>,
}

/// Percent-encodes a key for a URL path: every byte but unreserved ones and `/`.
fn encode_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl StreamPut {
    /// From the WebDAV service's options (`endpoint`, `root`, `username` + `password` or
    /// `token`). `None` without an endpoint (the service would refuse the config anyway).
    pub(super) fn new(options: &BTreeMap<String, String>) -> Option<Self> {
        use base64::Engine as _;
        let encode = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let endpoint = options.get("endpoint")?.trim_end_matches('/');
        let root = options
            .get("root")
            .map(|r| r.trim_matches('/'))
            .unwrap_or("");
        let base = if root.is_empty() {
            endpoint.to_string()
        } else {
            format!("{endpoint}/{}", encode_path(root))
        };
        let auth = match (options.get("token"), options.get("username")) {
            (Some(t), _) => Some(format!("Bearer {t}")),
            (None, Some(u)) => {
                let p = options.get("password").map(String::as_str).unwrap_or("");
                Some(format!("Basic {}", encode(format!("{u}:{p}").as_bytes())))
            }
            (None, None) => None,
        };
        Some(Self {
            client: reqwest::Client::new(),
            base,
            auth,
        })
    }

    /// PUTs `len` bytes of `file` as `key` (exact, not encoded), reading the body from the
    /// file as it is sent. A 409 (no parent collection: the mount's root itself is made
    /// only when first needed) makes the root's collections and sends the PUT again.
    pub(super) async fn put(
        &self,
        key: &str,
        file: Arc<std::fs::File>,
        len: u64,
    ) -> opendal::Result<()> {
        match self.put_once(key, file.clone(), len).await {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.make_root().await?;
                self.put_once(key, file, len).await
            }
            r => r,
        }
    }

    /// MKCOL of each collection on the way to the root (those that exist answer 405).
    async fn make_root(&self) -> opendal::Result<()> {
        let Some(at) = self.base.find("://").map(|i| i + 3) else {
            return Ok(());
        };
        let Some(slash) = self.base[at..].find('/').map(|i| at + i) else {
            return Ok(());
        };
        let mut url = self.base[..slash].to_string();
        for seg in self.base[slash..].split('/').filter(|s| !s.is_empty()) {
            url = format!("{url}/{seg}");
            let method = reqwest::Method::from_bytes(b"MKCOL")
                .map_err(|e| opendal::Error::new(ErrorKind::Unexpected, e.to_string()))?;
            let mut req = self.client.request(method, format!("{url}/"));
            if let Some(a) = &self.auth {
                req = req.header(reqwest::header::AUTHORIZATION, a);
            }
            let resp = req.send().await.map_err(|e| {
                opendal::Error::new(ErrorKind::Unexpected, format!("MKCOL {url}: {e}"))
                    .set_temporary()
            })?;
            let code = resp.status().as_u16();
            if !(resp.status().is_success() || code == 405) {
                return Err(opendal::Error::new(
                    ErrorKind::Unexpected,
                    format!("MKCOL {url}: HTTP {code}"),
                ));
            }
        }
        Ok(())
    }

    async fn put_once(&self, key: &str, file: Arc<std::fs::File>, len: u64) -> opendal::Result<()> {
        let body = futures::stream::unfold(0u64, move |off| {
            let file = file.clone();
            async move {
                if off >= len {
                    return None;
                }
                let n = (len - off).min(CHUNK as u64) as usize;
                let read =
                    tokio::task::spawn_blocking(move || crate::holes::read_at(&file, off, n))
                        .await
                        .map_err(std::io::Error::other)
                        .and_then(|r| r);
                Some((read, off + n as u64))
            }
        });
        let url = format!("{}/{}", self.base, encode_path(key));
        let mut req = self
            .client
            .put(&url)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(body));
        if let Some(a) = &self.auth {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        let resp = req.send().await.map_err(|e| {
            opendal::Error::new(ErrorKind::Unexpected, format!("PUT {url}: {e}")).set_temporary()
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let kind = match status.as_u16() {
            401 | 403 => ErrorKind::PermissionDenied,
            404 | 409 => ErrorKind::NotFound,
            _ => ErrorKind::Unexpected,
        };
        let mut e = opendal::Error::new(kind, format!("PUT {url}: HTTP {status}"));
        if status.is_server_error() {
            e = e.set_temporary();
        }
        Err(e)
    }
}
