//! Counters of the daemon, readable without a debugger through `alluxio fuse stats`.
//!
//! Every fallback (cache miss, cache write failure) has a counter. Names are the field
//! names and are stable: scripts and tests read them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// All counters of one daemon.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[$doc])* pub $name: AtomicU64, )*
            /// Latency of each request to a peer (a GET, PUT, LOAD, FREE or STATS, from
            /// the connection to the answer), by the peer's address; failures and
            /// timeouts count as errors.
            pub peer_latency: crate::prom::OpHistograms,
        }

        impl Metrics {
            /// A point-in-time copy of every counter, by name.
            pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
                let mut m = BTreeMap::new();
                $( m.insert(stringify!($name), self.$name.load(Ordering::Relaxed)); )*
                m
            }
        }
    };
}

counters! {
    /// FUSE requests handled.
    fuse_requests,
    /// FUSE requests that failed (an error logged at WARN or ERROR).
    fuse_errors,
    /// FUSE requests answered with an errno that is the normal answer, not a failure
    /// (ENOENT of a lookup, EEXIST of O_EXCL, ESTALE of an object changed in the store).
    fuse_expected_errors,
    /// Pages served from the memory tier.
    cache_hits_mem,
    /// Pages served from the disk tier.
    cache_hits_disk,
    /// Pages not found in any tier (each becomes a UFS read).
    cache_misses,
    /// Bytes returned to readers from cached pages.
    bytes_from_cache,
    /// Bytes fetched from the UFS for reads.
    bytes_from_ufs,
    /// Bytes read for cache misses from a local file holding the version instead of the
    /// UFS: a pending version's journal entry, or the file a written version is being
    /// cached from.
    bytes_from_local,
    /// Bytes uploaded to the UFS.
    bytes_to_ufs,
    /// All UFS requests (reads, lists, stats, writes, deletes, renames).
    ufs_requests,
    /// UFS ranged reads.
    ufs_reads,
    /// UFS listings.
    ufs_lists,
    /// UFS stats.
    ufs_stats,
    /// UFS object writes (uploads, directory markers).
    ufs_writes,
    /// UFS deletes.
    ufs_deletes,
    /// UFS renames and copies.
    ufs_renames,
    /// UFS requests that failed after retries (a changed object apart).
    ufs_errors,
    /// UFS requests answered "not the version asked for" (a 412 to If-Match, a version
    /// that is gone, a local file changed underneath): the data set changed; the read
    /// gets ESTALE. Not a fault of the store, so not in `ufs_errors`.
    ufs_changed,
    /// Pages written to the disk tier.
    disk_cache_writes,
    /// Pages a written file brought into the disk tier by adoption: its local file linked
    /// in as the data file, not copied.
    disk_cache_adopted,
    /// Disk tier I/O errors (each becomes a miss).
    disk_cache_errors,
    /// 1 once a disk error other than a full filesystem made the disk tier stop writing
    /// (fail-stop; it still serves what it holds), else 0.
    disk_cache_failed,
    /// Disk tier pages whose header or checksum did not match (each becomes a miss).
    disk_cache_corrupt,
    /// Disk tier page logs found damaged, or missing beside their data file, when the tier
    /// opened: their pages were dropped (fetched again when read).
    disk_cache_damaged_logs,
    /// Fully cached data files found changed behind the daemon when about to be handed to
    /// the kernel for passthrough: checked again first (a mismatch drops the page).
    disk_cache_changed_files,
    /// Pages evicted from the disk tier.
    disk_cache_evictions,
    /// Bytes of cached pages the disk tier gave up because a write of staged or journaled
    /// bytes found the cache filesystem full.
    disk_cache_released_bytes,
    /// Bytes currently held by the disk tier.
    disk_cache_bytes,
    /// Bytes currently held by the memory tier.
    mem_cache_bytes,
    /// Capacity of the disk tier (0 without one).
    disk_cache_capacity,
    /// What the disk tier may hold as of its last reservation: its capacity, or less where
    /// its filesystem has no room for that while `cache_free_ratio` of it stays free.
    disk_cache_limit,
    /// Capacity of the memory tier (0 without one).
    mem_cache_capacity,
    /// Pages fetched ahead of the reader.
    prefetch_pages,
    /// Prefetches not started because the fetch budget was in use.
    prefetch_skipped,
    /// Fetched pages (read-ahead, or a read's own miss) dropped from the memory tier once
    /// reads used all their bytes (they stay on disk): a sequential scan, or a data set of
    /// small files read once, does not displace what the memory tier holds.
    readahead_released,
    /// Read-ahead GETs that waited for a slot (`--prefetch-gets` was binding).
    prefetch_waits,
    /// Small files fetched in the background because readers opened others of their
    /// directory cold (directory-level prefetch).
    dir_prefetch_files,
    /// First reads of a large cold file answered by a ranged GET of just their bytes while
    /// the page was fetched whole behind them (time to the first byte).
    first_byte_reads,
    /// Reads answered from the first bytes of an object that a lookup's probe (a ranged
    /// GET standing in for a HEAD) brought along: no request of their own.
    probe_reads,
    /// Opens served by FUSE passthrough from a fully cached data file.
    passthrough_opens,
    /// 1 when the disk tier does its I/O through io_uring, 0 for psync or no disk tier.
    disk_io_uring,
    /// Uploads that were fed while the file was written and completed at commit.
    streamed_uploads,
    /// Streamed uploads abandoned (a change below the bytes sent, a rename, a store
    /// error); the whole file is then uploaded at commit.
    streamed_aborts,
    /// Pages of a file's previous content copied into its staging because a change, a
    /// read or a commit needed their old bytes (pages that writes replace whole are never
    /// copied).
    staging_copied_pages,
    /// Writes dropped: the upload after a file's last close failed for good (logged at
    /// ERROR with the inode), so the file keeps its previous content.
    uploads_lost,
    /// Commits after a file's last close that failed (the namespace or the store out of
    /// reach) and were tried again later.
    close_commit_retries,
    /// Gauge: commits after a last close waiting to be tried again now.
    close_commits_waiting,
    /// ASYNC_THROUGH journal entries uploaded, cached under the store's version and
    /// removed.
    journal_uploads,
    /// FUSE requests being answered now (a gauge).
    fuse_in_flight,
    /// Members on this host's ring now (a gauge).
    peer_members,
    /// Pages read from a peer cache node.
    peer_hits,
    /// Bytes read from peer cache nodes.
    bytes_from_peers,
    /// Peer answers "not here" (the next source was asked).
    peer_misses,
    /// Peer requests that failed or timed out (the peer is then skipped a while).
    peer_errors,
    /// Pages this host served to peers.
    peer_pages_served,
    /// Of those, pages sent straight from the disk tier's data file (sendfile).
    peer_pages_sent_from_file,
    /// Bytes this host served to peers.
    bytes_served_to_peers,
    /// Pages of files written here pushed to their owners.
    peer_pushes,
    /// Pages pushed to this host as their owner, and taken.
    peer_pages_received,
    /// Peer connections or requests refused (wrong token, garbage, a length past the
    /// bound).
    peer_refused,
    /// File handles open now (a gauge: opens and creates add one, releases take it).
    open_file_handles,
}

impl Metrics {
    /// The Prometheus document of a FUSE daemon: these counters, the derived cache hit
    /// ratio and bytes by source, and the FUSE operation latencies in `ops`.
    pub fn prometheus(&self, ops: &crate::prom::OpHistograms) -> String {
        use crate::prom::sample;
        let c = self.snapshot();
        let mut out = String::new();
        let hits = c["cache_hits_mem"] + c["cache_hits_disk"];
        let lookups = hits + c["cache_misses"];
        let ratio = if lookups == 0 {
            0.0
        } else {
            hits as f64 / lookups as f64
        };
        sample(
            &mut out,
            "alluxio_cache_hit_ratio",
            "gauge",
            "Pages served from a cache tier over all pages asked of the daemon (reads the kernel serves by passthrough never reach it).",
            "",
            ratio,
        );
        out.push_str(
            "# HELP alluxio_bytes_served_total Bytes served to readers, by where they came from.
# TYPE alluxio_bytes_served_total counter
",
        );
        for (source, v) in [
            ("cache", c["bytes_from_cache"]),
            ("ufs", c["bytes_from_ufs"]),
            ("local", c["bytes_from_local"]),
            ("peer", c["bytes_from_peers"]),
        ] {
            out.push_str(&format!(
                "alluxio_bytes_served_total{{source=\"{source}\"}} {v}\n"
            ));
        }
        sample(
            &mut out,
            "alluxio_ufs_errors_total",
            "counter",
            "Store requests that failed after retries.",
            "",
            c["ufs_errors"] as f64,
        );
        for (name, v) in &c {
            let kind = match *name {
                "disk_cache_bytes"
                | "mem_cache_bytes"
                | "disk_cache_capacity"
                | "disk_cache_limit"
                | "disk_cache_failed"
                | "mem_cache_capacity"
                | "disk_io_uring"
                | "fuse_in_flight"
                | "peer_members"
                | "open_file_handles"
                | "close_commits_waiting" => "gauge",
                _ => "counter",
            };
            sample(
                &mut out,
                &format!("alluxio_{name}"),
                kind,
                "See README, Counters.",
                "",
                *v as f64,
            );
        }
        ops.render(
            "alluxio_fuse_op",
            "Latency of FUSE operations served by the daemon.",
            &mut out,
        );
        self.peer_latency.render_by(
            "alluxio_peer_request",
            "Latency of requests to each peer cache node, connection included.",
            "peer",
            &mut out,
        );
        out
    }

    /// Add `n` to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Increment a counter.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}
