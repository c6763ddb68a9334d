//! A local S3 server for benchmarks: s3s-fs serving a directory (its top-level directories
//! are buckets), with TCP_NODELAY set on every connection.
//!
//! Why not the `s3s-fs` binary itself: version 0.14.1 leaves Nagle's algorithm on, so a
//! response whose last segment is small waits for the client's delayed ACK (about 40 ms).
//! Measured here through OpenDAL, ranged GETs of 8 MiB then ran at 3 MB/s on one stream
//! and 8 MB/s on four, which would make every cold-read figure a measurement of that
//! defect rather than of the store or of us.
//!
//! usage: alluxio-s3-server HOST:PORT ROOT ACCESS_KEY SECRET_KEY
//! Prints the bound address on its first line (PORT may be 0), then serves until killed.

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, root, access_key, secret_key] = &args[..] else {
        eprintln!("usage: alluxio-s3-server HOST:PORT ROOT ACCESS_KEY SECRET_KEY");
        std::process::exit(2);
    };
    let fs = match s3s_fs::FileSystem::new(root) {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("alluxio-s3-server: {root}: {e:?}");
            std::process::exit(1);
        }
    };
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(access_key.as_str(), secret_key.as_str()));
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
        let conn = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
