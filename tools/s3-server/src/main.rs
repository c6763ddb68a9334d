//! A local S3 server for benchmarks: s3s-fs serving a directory (its top-level directories
//! are buckets), with TCP_NODELAY set on every connection, and optionally shaped like a
//! real object store: a first-byte latency per request, a bandwidth cap per connection,
//! and a cap on requests per second.
//!
//! Why not the `s3s-fs` binary itself: version 0.14.1 leaves Nagle's algorithm on, so a
//! response whose last segment is small waits for the client's delayed ACK (about 40 ms).
//! Measured here through OpenDAL, ranged GETs of 8 MiB then ran at 3 MB/s on one stream
//! and 8 MB/s on four, which would make every cold-read figure a measurement of that
//! defect rather than of the store or of us.
//!
//! Why GETs are read here: s3s-fs streams an object's body through `tokio::fs` in 4 KiB
//! reads, one hop to the blocking pool each, which cost this server about 4 CPU-seconds per
//! GiB served, on the same 2 cores as the client it measures (a real store's CPU is not
//! the client's). Its GET is still what answers (headers, ranges, errors); only the body is
//! read here instead, in 256 KiB reads, when the file at the key is the one it described.
//!
//! Why shaped: a server on loopback answers in microseconds at gigabytes per second, while
//! S3, GCS and Azure answer in 10–30 ms to the first byte and cap a connection near
//! 80–100 MB/s. A cache's cold figures against the first measure the server's CPU; against
//! the second they measure what users see. Every request kind is shaped the same way.
//!
//! usage: alluxio-s3-server HOST:PORT ROOT ACCESS_KEY SECRET_KEY
//!            [--latency-ms N] [--conn-mb-per-s N] [--requests-per-s N]
//! Prints the bound address on its first line (PORT may be 0), then serves until killed.
//!
//! - `--latency-ms N`: every request waits N ms before it is handled, so its response's
//!   first byte leaves at least N ms after the request arrived.
//! - `--conn-mb-per-s N`: each connection moves at most N MB/s (10^6 bytes) each way
//!   (token bucket with 10 ms of burst): a GET's body down, a PUT's body up.
//! - `--requests-per-s N`: requests are admitted at most N per second, in arrival order,
//!   across all connections.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Request, S3Response, S3Result};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How every request and connection is shaped.
#[derive(Default)]
struct Shape {
    latency: Duration,
    conn_bytes_per_s: Option<f64>,
    /// Time between two admitted requests, and when the next may be admitted.
    interval: Option<Duration>,
    next: Mutex<Option<Instant>>,
}

impl Shape {
    /// Waits for the request's slot (the rate cap), then the first-byte latency.
    async fn admit(&self) {
        if let Some(interval) = self.interval {
            let at = {
                let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let at = next.map_or(now, |n| n.max(now));
                *next = Some(at + interval);
                at
            };
            tokio::time::sleep_until(at).await;
        }
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }
}

/// A token bucket for one direction of one connection.
struct Bucket {
    rate: f64,
    cap: f64,
    tokens: f64,
    last: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Bucket {
    fn new(rate: f64) -> Self {
        let cap = (rate / 100.0).max(16.0 * 1024.0);
        Self {
            rate,
            cap,
            tokens: cap,
            last: Instant::now(),
            sleep: None,
        }
    }

    /// How many of `want` bytes may move now; pending until at least a chunk may.
    fn poll_allow(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<usize> {
        loop {
            if let Some(s) = self.sleep.as_mut() {
                ready!(s.as_mut().poll(cx));
                self.sleep = None;
            }
            let now = Instant::now();
            let elapsed = now.duration_since(self.last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.cap);
            self.last = now;
            let chunk = (want as f64).clamp(1.0, 16.0 * 1024.0);
            if self.tokens >= chunk {
                return Poll::Ready((self.tokens as usize).min(want).max(1));
            }
            let wait = (chunk - self.tokens) / self.rate;
            self.sleep = Some(Box::pin(tokio::time::sleep(Duration::from_secs_f64(wait))));
        }
    }

    fn spend(&mut self, n: usize) {
        self.tokens -= n as f64;
    }
}

/// A connection whose reads and writes are each capped by a bucket.
struct Throttled<T> {
    inner: T,
    read: Option<Bucket>,
    write: Option<Bucket>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Throttled<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let Some(bucket) = this.read.as_mut() else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        let n = ready!(bucket.poll_allow(cx, buf.remaining()));
        let mut part = buf.take(n);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut part))?;
        let got = part.filled().len();
        // SAFETY: `part` is a view of `buf`'s unfilled part; its first `got` bytes were
        // initialized by the read above.
        unsafe { buf.assume_init(got) };
        buf.advance(got);
        bucket.spend(got);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Throttled<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let Some(bucket) = this.write.as_mut() else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        let n = ready!(bucket.poll_allow(cx, buf.len()));
        let sent = ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..n]))?;
        bucket.spend(sent);
        Poll::Ready(Ok(sent))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: alluxio-s3-server HOST:PORT ROOT ACCESS_KEY SECRET_KEY \
         [--latency-ms N] [--conn-mb-per-s N] [--requests-per-s N]"
    );
    std::process::exit(2);
}

fn parse_shape(flags: &[String]) -> Shape {
    let mut shape = Shape::default();
    let mut it = flags.iter();
    while let Some(flag) = it.next() {
        let Some(v) = it
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| *v >= 0.0)
        else {
            eprintln!("alluxio-s3-server: {flag} wants a number");
            usage();
        };
        match flag.as_str() {
            "--latency-ms" => shape.latency = Duration::from_secs_f64(v / 1e3),
            "--conn-mb-per-s" if v > 0.0 => shape.conn_bytes_per_s = Some(v * 1e6),
            "--requests-per-s" if v > 0.0 => {
                shape.interval = Some(Duration::from_secs_f64(1.0 / v))
            }
            _ => usage(),
        }
    }
    shape
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        usage();
    }
    let [addr, root, access_key, secret_key] = [&args[1], &args[2], &args[3], &args[4]];
    let shape = Arc::new(parse_shape(&args[5..]));
    let fs = match s3s_fs::FileSystem::new(root) {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("alluxio-s3-server: {root}: {e:?}");
            std::process::exit(1);
        }
    };
    let fs = Fs {
        inner: fs,
        root: std::path::PathBuf::from(root),
    };
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(
        access_key.as_str(),
        secret_key.as_str(),
    ));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind(addr.as_str()).await?;
    println!("{}", listener.local_addr()?);
    let http = Builder::new(TokioExecutor::new());
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        // The point of this binary: responses leave at once instead of waiting for ACKs.
        if let Err(e) = socket.set_nodelay(true) {
            eprintln!("TCP_NODELAY: {e}");
        }
        let io = Throttled {
            inner: socket,
            read: shape.conn_bytes_per_s.map(Bucket::new),
            write: shape.conn_bytes_per_s.map(Bucket::new),
        };
        let (svc, shape) = (service.clone(), shape.clone());
        let shaped = hyper::service::service_fn(move |req| {
            let (svc, shape) = (svc.clone(), shape.clone());
            async move {
                shape.admit().await;
                hyper::service::Service::call(&svc, req).await
            }
        });
        let conn = http.serve_connection(TokioIo::new(io), shaped).into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

/// s3s-fs, with GET bodies read in large chunks (see the module comment).
struct Fs {
    inner: s3s_fs::FileSystem,
    root: std::path::PathBuf,
}

/// Bytes read from an object's file per chunk of a GET body.
const READ_CHUNK: u64 = 256 << 10;

/// Bytes `start..start + len` of `file`, read in [`READ_CHUNK`]s by a blocking task that
/// stays at most two chunks ahead of the connection.
fn body(
    file: std::fs::File,
    start: u64,
    len: u64,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static {
    use std::os::unix::fs::FileExt;
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        let mut off = 0;
        while off < len {
            let n = (len - off).min(READ_CHUNK) as usize;
            let mut b = vec![0u8; n];
            let r = file
                .read_exact_at(&mut b, start + off)
                .map(|()| Bytes::from(b));
            let failed = r.is_err();
            if tx.blocking_send(r).is_err() || failed {
                return;
            }
            off += n as u64;
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
}

/// The first byte and the object's size from a `Content-Range` of `bytes A-B/T`.
fn range_of(cr: &str) -> Option<(u64, u64)> {
    let (span, total) = cr.strip_prefix("bytes ")?.split_once('/')?;
    Some((span.split_once('-')?.0.parse().ok()?, total.parse().ok()?))
}

macro_rules! delegate {
    ($($name:ident: $input:ty => $output:ty;)*) => {
        $(
            // Written as `async_trait` expands an `async fn` (it does not see into macros).
            fn $name<'life0, 'async_trait>(
                &'life0 self,
                req: S3Request<$input>,
            ) -> Pin<Box<dyn Future<Output = S3Result<S3Response<$output>>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                self.inner.$name(req)
            }
        )*
    };
}

#[async_trait::async_trait]
impl S3 for Fs {
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        // Opened before s3s-fs opens its own, and used only if it is the file s3s-fs
        // described (its size); otherwise s3s-fs's own body is sent.
        let path = self.root.join(&req.input.bucket).join(&req.input.key);
        let file = std::fs::File::open(&path).ok();
        let mut resp = self.inner.get_object(req).await?;
        let (Some(file), Some(len)) = (file, resp.output.content_length) else {
            return Ok(resp);
        };
        let len = u64::try_from(len).unwrap_or(0);
        let (start, total) = match resp.output.content_range.as_deref() {
            Some(cr) => match range_of(cr) {
                Some(r) => r,
                None => return Ok(resp),
            },
            None => (0, len),
        };
        if file.metadata().map(|m| m.len()).ok() == Some(total) {
            resp.output.body = Some(StreamingBlob::wrap(body(file, start, len)));
        }
        Ok(resp)
    }

    delegate! {
        create_bucket: CreateBucketInput => CreateBucketOutput;
        copy_object: CopyObjectInput => CopyObjectOutput;
        delete_bucket: DeleteBucketInput => DeleteBucketOutput;
        delete_object: DeleteObjectInput => DeleteObjectOutput;
        delete_objects: DeleteObjectsInput => DeleteObjectsOutput;
        get_bucket_location: GetBucketLocationInput => GetBucketLocationOutput;
        head_bucket: HeadBucketInput => HeadBucketOutput;
        head_object: HeadObjectInput => HeadObjectOutput;
        list_buckets: ListBucketsInput => ListBucketsOutput;
        list_objects: ListObjectsInput => ListObjectsOutput;
        list_objects_v2: ListObjectsV2Input => ListObjectsV2Output;
        put_object: PutObjectInput => PutObjectOutput;
        create_multipart_upload: CreateMultipartUploadInput => CreateMultipartUploadOutput;
        upload_part: UploadPartInput => UploadPartOutput;
        upload_part_copy: UploadPartCopyInput => UploadPartCopyOutput;
        list_parts: ListPartsInput => ListPartsOutput;
        complete_multipart_upload: CompleteMultipartUploadInput => CompleteMultipartUploadOutput;
        abort_multipart_upload: AbortMultipartUploadInput => AbortMultipartUploadOutput;
    }
}
