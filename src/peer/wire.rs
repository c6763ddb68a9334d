//! The peer protocol: plain framed TCP, one request and one answer at a time per
//! connection.
//!
//! ```text
//! frame   = magic "ALXP" | version u16 | kind u16 | len u32 | body (len bytes)
//! HELLO   body = the cluster token                  (the first frame; answered OK or ERR)
//! GET     body = store_len u16 | store | key_len u32 | key | version_len u16 | version
//!                | idx u64 | size u64             (size: the version's length in bytes)
//! PAGE    body = crc32c u32 | the page's bytes    (the answer to a GET that hit)
//! MISS    body = empty                            (not here and not readable from here)
//! ERR     body = a message (UTF-8)
//! PUT     body = get_len u32 | a GET body | crc32c u32 | the page's bytes
//!                                                 (a page just written, for its owner;
//!                                                  answered OK, or ERR when not taken)
//! LOAD    body = a GET body                       (make sure the page is cached there,
//!                                                  reading it through if need be;
//!                                                  answered OK with held u8: 1 when
//!                                                  it was cached already, MISS or ERR)
//! FREE    body = a GET body (idx ignored)         (drop every cached page of that
//!                                                  version; answered OK with the bytes
//!                                                  freed in both tiers, u64)
//! STATS   body = empty                            (answered OK with the node's counters,
//!                                                  a JSON object)
//! ```
//!
//! Invariants:
//! - Nothing is read past a frame's header before its length is checked: a request body
//!   is at most [`MAX_REQUEST`] bytes, an answer at most [`MAX_ANSWER`]; a larger prefix
//!   ends the connection, unread.
//! - A connection does nothing before a HELLO with the right token (compared in time
//!   independent of where it differs).
//! - A page travels with its CRC32C, computed by the node from the bytes it sends; the
//!   client checks it and the page's length, so a peer's fault is a miss, never bytes.

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// First bytes of every frame.
pub const MAGIC: &[u8; 4] = b"ALXP";
/// The protocol version this build speaks.
pub const VERSION: u16 = 1;
/// Largest request body: a GET names a store and a key (a key is at most a few KiB).
pub const MAX_REQUEST: u32 = 64 << 10;
/// Largest answer body: one page and its checksum.
pub const MAX_ANSWER: u32 = (crate::types::PAGE_SIZE as u32) + 4;
/// Largest PUT body: a GET, its length, and a page with its checksum.
pub const MAX_PUT: u32 = MAX_REQUEST + 4 + MAX_ANSWER;

/// A frame's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Kind {
    /// The token.
    Hello = 1,
    /// Accepted.
    Ok = 2,
    /// A page asked for.
    Get = 3,
    /// A page.
    Page = 4,
    /// Not here.
    Miss = 5,
    /// Refused or failed.
    Err = 6,
    /// A page offered to its owner.
    Put = 7,
    /// Cache a page here (no bytes back).
    Load = 8,
    /// Drop a version's pages.
    Free = 9,
    /// The node's counters.
    Stats = 10,
}

impl Kind {
    fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::Hello,
            2 => Self::Ok,
            3 => Self::Get,
            4 => Self::Page,
            5 => Self::Miss,
            6 => Self::Err,
            7 => Self::Put,
            8 => Self::Load,
            9 => Self::Free,
            10 => Self::Stats,
            _ => return None,
        })
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: Kind,
    body: &[u8],
) -> io::Result<()> {
    write_frame_parts(w, kind, &[], body).await
}

/// Writes one frame whose body is `prefix` then `body`, without joining them: a page is
/// sent from its own buffer, never copied into a frame first.
pub async fn write_frame_parts<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: Kind,
    prefix: &[u8],
    body: &[u8],
) -> io::Result<()> {
    let len = u32::try_from(prefix.len() + body.len()).map_err(|_| bad("frame too long"))?;
    // The header and a short prefix go in one write, so a small frame is one segment.
    let mut head = Vec::with_capacity(12 + prefix.len());
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_be_bytes());
    head.extend_from_slice(&(kind as u16).to_be_bytes());
    head.extend_from_slice(&len.to_be_bytes());
    head.extend_from_slice(prefix);
    w.write_all(&head).await?;
    w.write_all(body).await?;
    w.flush().await
}

/// Writes a PAGE frame whose bytes are `len` bytes at `offset` of `file`, sent by the
/// kernel from the file's page cache (sendfile): no copy through this process. An error
/// after the header has gone leaves the frame cut short: the caller must drop the
/// connection (the peer reads a cut frame as an error, never as a page).
pub async fn write_page_from_file(
    c: &mut tokio::net::TcpStream,
    crc: u32,
    file: &std::fs::File,
    offset: u64,
    len: usize,
) -> io::Result<()> {
    use std::os::fd::AsFd;
    let body_len = u32::try_from(len + 4).map_err(|_| bad("frame too long"))?;
    let mut head = [0u8; 16];
    head[..4].copy_from_slice(MAGIC);
    head[4..6].copy_from_slice(&VERSION.to_be_bytes());
    head[6..8].copy_from_slice(&(Kind::Page as u16).to_be_bytes());
    head[8..12].copy_from_slice(&body_len.to_be_bytes());
    head[12..].copy_from_slice(&crc.to_be_bytes());
    c.write_all(&head).await?;
    let mut off = libc::off_t::try_from(offset).map_err(|_| bad("offset too large"))?;
    let mut left = len;
    while left > 0 {
        c.writable().await?;
        let sent = c.try_io(tokio::io::Interest::WRITABLE, || {
            let sock = c.as_fd();
            nix::sys::sendfile::sendfile(sock, file, Some(&mut off), left).map_err(io::Error::from)
        });
        match sent {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "data file shorter than its page",
                ));
            }
            Ok(n) => left -= n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads one frame whose body is at most `max` bytes; a bad magic, another version, an
/// unknown kind or a longer body is an error, with the body left unread.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: u32) -> io::Result<(Kind, Bytes)> {
    read_frame_by(r, |_| max).await
}

/// [`read_frame`] with a bound per kind.
pub async fn read_frame_by<R: AsyncRead + Unpin>(
    r: &mut R,
    max: impl Fn(Kind) -> u32,
) -> io::Result<(Kind, Bytes)> {
    let mut head = [0u8; 12];
    r.read_exact(&mut head).await?;
    if &head[..4] != MAGIC {
        return Err(bad("not an alluxio peer frame"));
    }
    let version = u16::from_be_bytes([head[4], head[5]]);
    if version != VERSION {
        return Err(bad(format!(
            "peer protocol version {version}, this build speaks {VERSION}"
        )));
    }
    let kind = Kind::from_u16(u16::from_be_bytes([head[6], head[7]]))
        .ok_or_else(|| bad("unknown frame kind"))?;
    let len = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
    let max = max(kind);
    if len > max {
        return Err(bad(format!("frame of {len} bytes; at most {max}")));
    }
    // Filled by the reads themselves: a 1 MiB page is not zeroed first.
    let mut body = BytesMut::with_capacity(len as usize);
    while body.len() < len as usize {
        let left = len as usize - body.len();
        let mut part = (&mut body).limit(left);
        if r.read_buf(&mut part).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "frame cut short",
            ));
        }
    }
    Ok((kind, body.freeze()))
}

/// A page asked for: its shareable identity and the length of its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Get {
    /// The store (`UfsConfig::store_id`).
    pub store: String,
    /// The object's full key in the store.
    pub key: String,
    /// The version's text form.
    pub version: String,
    /// The page index.
    pub idx: u64,
    /// Bytes in the version.
    pub size: u64,
}

impl Get {
    /// Page `idx` of `id`, a version of `size` bytes.
    pub fn page_of(id: &crate::object::ObjectId, idx: u64, size: u64) -> Self {
        Self {
            store: id.store().to_string(),
            key: id.key().to_string(),
            version: id.version_text().to_string(),
            idx,
            size,
        }
    }

    /// The GET body.
    pub fn encode(&self) -> io::Result<Vec<u8>> {
        let mut b = Vec::with_capacity(32 + self.store.len() + self.key.len() + self.version.len());
        let s16 = |s: &str| u16::try_from(s.len()).map_err(|_| bad("field too long"));
        b.put_u16(s16(&self.store)?);
        b.put_slice(self.store.as_bytes());
        b.put_u32(u32::try_from(self.key.len()).map_err(|_| bad("key too long"))?);
        b.put_slice(self.key.as_bytes());
        b.put_u16(s16(&self.version)?);
        b.put_slice(self.version.as_bytes());
        b.put_u64(self.idx);
        b.put_u64(self.size);
        Ok(b)
    }

    /// Parses a GET body; anything malformed is an error, never a panic.
    pub fn decode(mut b: Bytes) -> io::Result<Self> {
        fn take(b: &mut Bytes, n: usize) -> io::Result<String> {
            if b.remaining() < n {
                return Err(bad("GET cut short"));
            }
            String::from_utf8(b.split_to(n).to_vec()).map_err(|_| bad("GET field not UTF-8"))
        }
        let need = |b: &Bytes, n: usize| {
            if b.remaining() < n {
                Err(bad("GET cut short"))
            } else {
                Ok(())
            }
        };
        need(&b, 2)?;
        let n = usize::from(b.get_u16());
        let store = take(&mut b, n)?;
        need(&b, 4)?;
        let n = b.get_u32() as usize;
        let key = take(&mut b, n)?;
        need(&b, 2)?;
        let n = usize::from(b.get_u16());
        let version = take(&mut b, n)?;
        need(&b, 16)?;
        let idx = b.get_u64();
        let size = b.get_u64();
        if b.has_remaining() {
            return Err(bad("GET has trailing bytes"));
        }
        Ok(Self {
            store,
            key,
            version,
            idx,
            size,
        })
    }
}

/// A PUT body: the page's GET, then its checksum and bytes.
pub fn encode_put(get: &Get, page: &[u8]) -> io::Result<Vec<u8>> {
    let g = get.encode()?;
    let mut b = Vec::with_capacity(8 + g.len() + page.len());
    b.put_u32(u32::try_from(g.len()).map_err(|_| bad("GET too long"))?);
    b.put_slice(&g);
    b.put_u32(crc32c::crc32c(page));
    b.put_slice(page);
    Ok(b)
}

/// Parses a PUT body: the GET and the page, whose checksum must match.
pub fn decode_put(mut b: Bytes) -> io::Result<(Get, Bytes)> {
    if b.remaining() < 4 {
        return Err(bad("PUT cut short"));
    }
    let n = b.get_u32() as usize;
    if b.remaining() < n + 4 {
        return Err(bad("PUT cut short"));
    }
    let get = Get::decode(b.split_to(n))?;
    let crc = b.get_u32();
    if crc32c::crc32c(&b) != crc {
        return Err(bad("PUT page fails its checksum"));
    }
    Ok((get, b))
}

/// Compares in time independent of where the inputs differ.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_get_round_trips_and_garbage_is_refused() {
        let g = Get {
            store: "s3:bucket@http://127.0.0.1:9000".into(),
            key: "data/x".into(),
            version: "e:abc".into(),
            idx: 7,
            size: 9 << 20,
        };
        let enc = g.encode().unwrap();
        assert_eq!(Get::decode(Bytes::from(enc.clone())).unwrap(), g);
        for cut in 0..enc.len() {
            assert!(
                Get::decode(Bytes::copy_from_slice(&enc[..cut])).is_err(),
                "cut at {cut}"
            );
        }
        let mut long = enc.clone();
        long.push(0);
        assert!(Get::decode(Bytes::from(long)).is_err());
        assert!(Get::decode(Bytes::from_static(&[0xff; 40])).is_err());
        let put = encode_put(&g, b"page bytes").unwrap();
        let (g2, page) = decode_put(Bytes::from(put.clone())).unwrap();
        assert_eq!((g2, &page[..]), (g, &b"page bytes"[..]));
        let mut bad = put.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(decode_put(Bytes::from(bad)).is_err(), "a flipped byte");
        for cut in 0..put.len() - 10 {
            assert!(decode_put(Bytes::copy_from_slice(&put[..cut])).is_err());
        }
    }

    proptest::proptest! {
        /// Arbitrary bytes from the network never panic a decoder: frames, GET bodies and
        /// PUT bodies are refused or decoded.
        #[test]
        fn arbitrary_bytes_never_panic_a_decoder(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let _ = rt.block_on(read_frame(&mut &bytes[..], MAX_REQUEST));
            let mut framed = b"ALXP".to_vec();
            framed.extend_from_slice(&bytes);
            let _ = rt.block_on(read_frame(&mut &framed[..], MAX_REQUEST));
            let _ = Get::decode(Bytes::copy_from_slice(&bytes));
            let _ = decode_put(Bytes::copy_from_slice(&bytes));
        }
    }

    #[tokio::test]
    async fn frames_round_trip_and_a_huge_length_is_refused_unread() {
        let mut buf = Vec::new();
        write_frame(&mut buf, Kind::Hello, b"token").await.unwrap();
        let (k, b) = read_frame(&mut &buf[..], MAX_REQUEST).await.unwrap();
        assert_eq!((k, &b[..]), (Kind::Hello, &b"token"[..]));
        let mut huge = buf[..8].to_vec();
        huge.extend_from_slice(&(1u32 << 30).to_be_bytes());
        let e = read_frame(&mut &huge[..], MAX_REQUEST).await.unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
        assert!(
            read_frame(&mut &b"GET / HTTP/1.1\r\n\r\n"[..], MAX_REQUEST)
                .await
                .is_err()
        );
    }
}
