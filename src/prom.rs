//! Prometheus metrics: latency histograms, the text exposition format, and a minimal
//! HTTP endpoint (`GET /metrics`) for the FUSE daemon and the metaserver, opt-in with
//! `--metrics-listen ADDR`.
//!
//! The endpoint answers one request per connection. A request head is read with a bound
//! (8 KiB, 5 s); anything but `GET /metrics` gets 404. Scrapes never block the data path:
//! rendering reads atomics only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upper bounds of the latency buckets, in seconds (then +Inf).
const BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    5.0,
];

/// One latency histogram.
#[derive(Debug, Default)]
struct Histogram {
    /// Per bucket (not cumulative), plus the +Inf bucket last.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
    errors: AtomicU64,
}

/// Latency histograms by one label's value (a FUSE operation, a peer's address).
#[derive(Debug, Default)]
pub struct OpHistograms {
    ops: RwLock<BTreeMap<String, Arc<Histogram>>>,
}

impl OpHistograms {
    /// Records one operation that took `took`; `failed` counts it as an error too.
    pub fn observe(&self, op: &str, took: Duration, failed: bool) {
        let h = {
            let known = self.ops.read().unwrap_or_else(|p| p.into_inner());
            known.get(op).cloned()
        };
        let h = match h {
            Some(h) => h,
            None => self
                .ops
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(op.to_string())
                .or_default()
                .clone(),
        };
        let secs = took.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        h.counts[i].fetch_add(1, Ordering::Relaxed);
        h.sum_ns.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if failed {
            h.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Appends `NAME_duration_seconds` (histogram) and `NAME_errors_total` (counter), one
    /// series per operation (label `op`), in the text exposition format.
    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        self.render_by(name, help, "op", out);
    }

    /// [`Self::render`] with the series labelled `label`.
    pub fn render_by(&self, name: &str, help: &str, label: &str, out: &mut String) {
        let ops = self.ops.read().unwrap_or_else(|p| p.into_inner());
        let esc = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(out, "# HELP {name}_duration_seconds {help}");
        let _ = writeln!(out, "# TYPE {name}_duration_seconds histogram");
        for (op, h) in ops.iter() {
            let mut cum = 0u64;
            for (i, c) in h.counts.iter().enumerate() {
                cum += c.load(Ordering::Relaxed);
                let le = BUCKETS
                    .get(i)
                    .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
                let _ = writeln!(
                    out,
                    "{name}_duration_seconds_bucket{{{label}=\"{v}\",le=\"{le}\"}} {cum}",
                    v = esc(op)
                );
            }
            let sum = h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
            let v = esc(op);
            let _ = writeln!(out, "{name}_duration_seconds_sum{{{label}=\"{v}\"}} {sum}");
            let _ = writeln!(
                out,
                "{name}_duration_seconds_count{{{label}=\"{v}\"}} {cum}"
            );
        }
        let _ = writeln!(out, "# HELP {name}_errors_total Operations that failed.");
        let _ = writeln!(out, "# TYPE {name}_errors_total counter");
        for (op, h) in ops.iter() {
            let e = h.errors.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_errors_total{{{label}=\"{}\"}} {e}", esc(op));
        }
    }
}

/// Appends one sample with its HELP and TYPE lines.
pub fn sample(out: &mut String, name: &str, kind: &str, help: &str, labels: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name}{labels} {v}");
}

/// Renders the document `render` builds.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Serves `GET /metrics` on `listener` until the runtime stops.
pub fn serve(listener: tokio::net::TcpListener, render: Render, rt: &tokio::runtime::Handle) {
    rt.spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let render = render.clone();
            tokio::spawn(async move {
                let mut head = Vec::with_capacity(512);
                let mut buf = [0u8; 1024];
                let read = tokio::time::timeout(Duration::from_secs(5), async {
                    while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                })
                .await;
                let ok = read.is_ok()
                    && (head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?"));
                let (status, body) = if ok {
                    ("200 OK", render())
                } else {
                    ("404 Not Found", "only GET /metrics is served\n".to_string())
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
}

/// Binds `addr` for [`serve`] (from outside or inside the runtime).
pub fn bind(
    addr: std::net::SocketAddr,
    rt: &tokio::runtime::Handle,
) -> std::io::Result<tokio::net::TcpListener> {
    let std = std::net::TcpListener::bind(addr)?;
    std.set_nonblocking(true)?;
    let _g = rt.enter();
    tokio::net::TcpListener::from_std(std)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets() {
        let h = OpHistograms::default();
        h.observe("read", Duration::from_micros(30), false);
        h.observe("read", Duration::from_millis(3), true);
        h.observe("read", Duration::from_secs(9), false);
        let mut out = String::new();
        h.render("x_op", "test", &mut out);
        assert!(out.contains("x_op_duration_seconds_bucket{op=\"read\",le=\"0.00005\"} 1"));
        assert!(out.contains("x_op_duration_seconds_bucket{op=\"read\",le=\"0.005\"} 2"));
        assert!(out.contains("x_op_duration_seconds_bucket{op=\"read\",le=\"+Inf\"} 3"));
        assert!(out.contains("x_op_duration_seconds_count{op=\"read\"} 3"));
        assert!(out.contains("x_op_errors_total{op=\"read\"} 1"));
    }
}
