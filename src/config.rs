//! Plain configuration structs, their parsing from user strings, and validation.
//!
//! Human units and URIs are parsed here, at the edge; components receive `*Config` values
//! with sizes in bytes and durations as `Duration`. Every check runs before mounting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::types::Ownership;

pub mod stores;

/// A configuration error, reported to the user as one line.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// Where the data lives: an OpenDAL scheme plus its configuration map.
#[derive(Clone, PartialEq, Eq)]
pub struct UfsConfig {
    /// The URI as the user gave it (shown in logs and errors; never holds secrets).
    pub uri: String,
    /// OpenDAL scheme (`fs`, `s3`, `memory`, ...).
    pub scheme: String,
    /// OpenDAL configuration keys for that scheme.
    pub options: BTreeMap<String, String>,
}

impl std::fmt::Debug for UfsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials live in `options`; print only the keys.
        f.debug_struct("UfsConfig")
            .field("uri", &self.uri)
            .field("scheme", &self.scheme)
            .field("option_keys", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl UfsConfig {
    /// Parses a UFS URI: a plain absolute path or `file:///path` (local directory), or
    /// `SCHEME://AUTHORITY[/PATH]` for a store of [`stores::STORES`] (`s3://bucket/prefix`,
    /// `gcs://bucket/prefix`, `hdfs://namenode:port/path`, ...). `extra` holds OpenDAL keys
    /// from `-o` options; each store's usual environment variables fill in what options
    /// leave out.
    pub fn parse(uri: &str, extra: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut options = extra.clone();
        if uri.contains('\0') {
            return err("UFS URI contains a NUL byte");
        }
        let local = if uri.starts_with('/') {
            Some(uri)
        } else {
            uri.strip_prefix("file://")
        };
        if let Some(path) = local {
            if !path.starts_with('/') {
                return err(format!("UFS path must be absolute: {uri:?}"));
            }
            let p = Path::new(path);
            if !p.is_dir() {
                return err(format!(
                    "UFS directory {path} does not exist or is not a directory"
                ));
            }
            let canon = p
                .canonicalize()
                .map_err(|e| ConfigError(format!("cannot resolve UFS directory {path}: {e}")))?;
            options.insert("root".into(), canon.to_string_lossy().into_owned());
            return Ok(Self {
                uri: uri.to_string(),
                scheme: "fs".into(),
                options,
            });
        }
        let Some((scheme, rest)) = uri.split_once("://") else {
            return err(format!(
                "cannot parse UFS URI {uri:?}: expected an absolute path or SCHEME://..., e.g. s3://bucket/prefix"
            ));
        };
        if scheme.is_empty()
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return err(format!(
                "cannot parse UFS URI {uri:?}: bad scheme {scheme:?}"
            ));
        }
        let scheme = scheme.to_ascii_lowercase();
        let (service, options) = stores::parse(uri, &scheme, rest, options)?;
        Ok(Self {
            uri: uri.into(),
            scheme: service.into(),
            options,
        })
    }

    /// What kind of store this is: its URI form, limits and environment.
    pub fn store(&self) -> &'static stores::Store {
        stores::by_service(&self.scheme).unwrap_or(&stores::LOCAL)
    }

    /// The store's identity in page ids ([`crate::object::ObjectId`]): the service and
    /// where its objects live (bucket or container, account, server or endpoint), never
    /// the mount's prefix, so every mount of one bucket names its objects alike. A local
    /// directory is this machine's only (`/etc/machine-id`): another host's directory of
    /// the same path holds other files. The root of a host store (WebDAV, HDFS, SFTP) is
    /// part of the key, as a bucket's prefix is.
    pub fn store_id(&self) -> String {
        let mut id = format!("{}:", self.scheme);
        if let stores::Authority::Bucket(k) | stores::Authority::Host { key: k, .. } =
            self.store().authority
            && let Some(v) = self.options.get(k)
        {
            id.push_str(v);
        }
        for k in ["account_name", "endpoint"] {
            if let Some(v) = self.options.get(k) {
                id.push('@');
                id.push_str(v);
            }
        }
        // A local directory is this machine's; an in-memory store is this process's.
        if self.scheme == "fs" || self.scheme == "memory" {
            let host = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
            id.push_str("@host=");
            id.push_str(host.trim());
        }
        if self.scheme == "memory" {
            id.push_str(&format!("@pid={}", std::process::id()));
        }
        id
    }

    /// The mount's prefix in the store (its root without slashes at either end): an
    /// object's full key is this, `/`, and its key under the mount.
    pub fn key_prefix(&self) -> &str {
        self.options.get("root").map_or("", |r| r.trim_matches('/'))
    }
}

/// Which I/O engine the disk cache tier uses (`-o cache_io=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineChoice {
    /// io_uring if the probe succeeds, else psync.
    #[default]
    Auto,
    /// io_uring, or an error if it cannot be set up.
    IoUring,
    /// Positional I/O on the blocking pool.
    Psync,
}

impl std::str::FromStr for EngineChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "io_uring" | "uring" => Ok(Self::IoUring),
            "psync" => Ok(Self::Psync),
            _ => Err(format!(
                "unknown cache I/O engine {s:?} (expected auto, io_uring or psync)"
            )),
        }
    }
}

/// When written data reaches the UFS (Alluxio's write types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteType {
    /// Upload before close/fsync returns and keep the written pages cached (default).
    #[default]
    CacheThrough,
    /// Upload before close/fsync returns; do not cache the written pages.
    Through,
    /// Make the data durable in a local journal before close/fsync returns; upload in the
    /// background, resuming after a restart.
    AsyncThrough,
}

impl std::str::FromStr for WriteType {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.to_ascii_uppercase().as_str() {
            "CACHE_THROUGH" => Ok(WriteType::CacheThrough),
            "THROUGH" => Ok(WriteType::Through),
            "ASYNC_THROUGH" => Ok(WriteType::AsyncThrough),
            _ => err(format!(
                "write_type={s}: expected CACHE_THROUGH, THROUGH or ASYNC_THROUGH"
            )),
        }
    }
}

/// Kernel-facing options of the FUSE session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuseConfig {
    /// Let users other than the mounter use the mount.
    pub allow_other: bool,
    /// Let root use a mount made by another user.
    pub allow_root: bool,
    /// Refuse every modification with EROFS.
    pub read_only: bool,
    /// Session threads serving kernel requests.
    pub threads: usize,
    /// How long the kernel may cache attributes.
    pub attr_ttl: Duration,
    /// How long the kernel may cache name lookups.
    pub entry_ttl: Duration,
    /// Kernel readahead for the mount in KiB, set through its bdi (0 keeps the kernel's
    /// default of 128 KiB).
    pub readahead_kb: u32,
    /// Serve fully cached files through FUSE passthrough (kernel ≥ 6.9, root).
    pub passthrough: bool,
    /// Extended attributes. Without them (`-o noxattr`) the first xattr request gets
    /// ENOSYS, the kernel asks no more and applications get EOPNOTSUPP, and each write(2)
    /// saves the kernel's question for `security.capability`.
    pub xattr: bool,
}

impl Default for FuseConfig {
    fn default() -> Self {
        Self {
            allow_other: false,
            allow_root: false,
            read_only: false,
            threads: 8,
            attr_ttl: Duration::from_secs(1),
            entry_ttl: Duration::from_secs(1),
            readahead_kb: 1024,
            passthrough: true,
            xattr: true,
        }
    }
}

/// Share of the cache directory's filesystem the disk tier leaves free by default, as
/// JuiceFS's `--free-space-ratio` does: room for staged writes and the journal, which take
/// precedence over cached pages, and for other users of the disk.
pub const DEFAULT_CACHE_FREE_RATIO: f64 = 0.1;

impl MountOptions {
    /// The disk tier's free share of its filesystem.
    pub fn cache_free_ratio(&self) -> f64 {
        self.cache_free_permille
            .map_or(DEFAULT_CACHE_FREE_RATIO, |p| f64::from(p) / 1000.0)
    }
}

/// Everything a mount needs.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// Where the filesystem is mounted.
    pub mountpoint: PathBuf,
    /// The store behind it.
    pub ufs: UfsConfig,
    /// Directory for the namespace database (0700); unused with a metaserver.
    pub state_dir: PathBuf,
    /// A metaserver to take the namespace from, instead of the embedded database.
    pub metaserver: Option<MetaserverConfig>,
    /// Directory for the disk cache tier and write staging (0700).
    pub cache_dir: PathBuf,
    /// Capacity of the disk tier.
    pub disk_cache_bytes: u64,
    /// Capacity of the memory tier.
    pub mem_cache_bytes: u64,
    /// Pages fetched ahead of a reader that misses.
    pub prefetch_pages: u64,
    /// Read-ahead GETs in flight at once.
    pub prefetch_gets: u64,
    /// Pages fetched and not yet cached at once (see [`MemoryPlan`]).
    pub inflight_pages: u64,
    /// Owner and modes for objects written by other tools.
    pub ownership: Ownership,
    /// Kernel session options.
    pub fuse: FuseConfig,
    /// Directory holding the control socket (`alluxio fuse stats`).
    pub run_dir: PathBuf,
    /// When written data reaches the UFS.
    pub write_type: WriteType,
    /// ASYNC_THROUGH: how long a journaled file waits before its upload starts.
    pub upload_delay: Duration,
    /// The disk tier's I/O engine.
    pub cache_io: EngineChoice,
    /// Share of the cache directory's filesystem the disk tier leaves free
    /// ([`DEFAULT_CACHE_FREE_RATIO`] unless `-o cache_free_ratio=` says otherwise).
    pub cache_free_ratio: f64,
    /// Multipart upload shape and how many uploads hold buffers at once.
    pub upload: UploadShape,
    /// When loaded directories are listed again.
    pub metadata_sync: MetadataSync,
    /// Bytes of a directory's small files prefetched once readers open some cold
    /// (`-o dir_prefetch=SIZE`, 0 off; [`DEFAULT_DIR_PREFETCH`]).
    pub dir_prefetch_bytes: u64,
    /// How long a store call may go without an answer, retries included, before it fails
    /// with EIO (`-o ufs_timeout=`; [`crate::ufs::DEFAULT_UFS_TIMEOUT`]).
    pub ufs_timeout: Duration,
    /// Serve Prometheus metrics (`GET /metrics`) on this address.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Sharing pages with peer cache nodes, when configured.
    pub cluster: Option<ClusterConfig>,
}

/// How a daemon takes part in the cluster cache.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Serve this daemon's cache to peers on this address (`--serve-peers`); it is then on
    /// the ring too, under this address as written (give the one peers use).
    pub serve: Option<String>,
    /// The static membership (`-o peers=HOST:PORT,...`), this daemon's address included
    /// or not.
    pub peers: Vec<String>,
    /// The cluster token (`--token-file` or `ALLUXIO_TOKEN`).
    pub token: String,
    /// Bound on one peer request (`-o peer_timeout=MS`).
    pub timeout: Duration,
}

/// Reads a token from `file` if given, else from `ALLUXIO_TOKEN`, for `what`; surrounding
/// whitespace is not part of it, and an empty one is refused.
pub fn read_token(file: Option<&Path>, what: &str) -> Result<String, ConfigError> {
    let token = match file {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| ConfigError(format!("token file {}: {e}", p.display())))?,
        None => std::env::var("ALLUXIO_TOKEN").map_err(|_| {
            ConfigError(format!(
                "{what} needs a token: --token-file FILE or ALLUXIO_TOKEN"
            ))
        })?,
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        return err(format!("the {what} token is empty"));
    }
    Ok(token)
}

/// Bytes of a directory's small files fetched in the background once readers open some of
/// them cold (see `vfs::siblings`): a quarter of the default disk tier's worth of a data set
/// at a time would be far more than a trigger needs; 256 MiB keeps 16 GETs busy for several
/// seconds at a real store's speed.
pub const DEFAULT_DIR_PREFETCH: u64 = 256 << 20;

/// When a loaded directory is listed from the UFS again (`-o metadata_sync=`), so that
/// objects changed by other tools show up. A directory is always listed on first access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetadataSync {
    /// Never again (until `alluxio fs load-metadata`).
    #[default]
    Never,
    /// On every lookup and readdir.
    Always,
    /// On a lookup or readdir when this daemon last listed it longer ago than this.
    Every(Duration),
}

impl std::str::FromStr for MetadataSync {
    type Err = ConfigError;
    fn from_str(v: &str) -> Result<Self, ConfigError> {
        match v.to_ascii_lowercase().as_str() {
            "never" => Ok(Self::Never),
            "always" | "0" | "0s" => Ok(Self::Always),
            other => {
                let secs =
                    parse_secs("metadata_sync", other.trim_end_matches('s')).map_err(|_| {
                        ConfigError(format!(
                            "mount option metadata_sync={v}: expected never, always or seconds"
                        ))
                    })?;
                Ok(Self::Every(Duration::from_secs_f64(secs)))
            }
        }
    }
}

/// Where a remote namespace is, and the token its metaserver wants.
#[derive(Clone, PartialEq, Eq)]
pub struct MetaserverConfig {
    /// `HOST:PORT`.
    pub addr: String,
    /// The shared token (never logged).
    pub token: String,
}

impl std::fmt::Debug for MetaserverConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaserverConfig")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MetaserverConfig {
    /// Reads the token from `file` if given, else from `ALLUXIO_TOKEN`; surrounding
    /// whitespace (a trailing newline) is not part of it. An empty token is refused.
    pub fn new(addr: &str, token_file: Option<&Path>) -> Result<Self, ConfigError> {
        let token = read_token(token_file, "a metaserver")?;
        if addr.is_empty() || addr.contains('/') {
            return err(format!("metaserver address {addr:?}: expected HOST:PORT"));
        }
        Ok(Self {
            addr: addr.to_string(),
            token,
        })
    }
}

/// How uploads to an object store are cut into parts, and how many run at once. Each
/// running upload holds up to [`UploadShape::bytes_per_upload`] in memory; the memory
/// budget decides `slots`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadShape {
    /// Multipart part size (S3 needs at least 5 MiB for all but the last part).
    pub part_bytes: u64,
    /// Parts of one upload in flight at once.
    pub concurrency: usize,
    /// Uploads that may hold buffers at once (streamed and at commit together).
    pub slots: usize,
}

impl Default for UploadShape {
    fn default() -> Self {
        Self {
            part_bytes: 8 << 20,
            concurrency: 4,
            slots: 2,
        }
    }
}

impl UploadShape {
    /// Parts in flight per upload when it was not configured: 8 where the eighth of
    /// `budget` that uploads get holds three such uploads (a commit and two streams, as
    /// the default 4 does in the default 1 GiB budget), else 4. Against a store shaped like
    /// a real one (20 ms, 80 MB/s per connection), a 1 GiB write + fsync ran at 0.63x the
    /// store's multipart ceiling with 4 parts in flight and 0.76x with 8.
    pub fn for_budget(self, budget: u64) -> Self {
        let eight = Self {
            concurrency: 8,
            ..self
        };
        if budget / 8 >= 3 * eight.bytes_per_upload() {
            eight
        } else {
            self
        }
    }

    /// Memory one running upload may hold: the parts in flight plus the one being filled.
    pub fn bytes_per_upload(&self) -> u64 {
        self.part_bytes * (self.concurrency as u64 + 1)
    }
}

/// Options parsed out of `-o a,b=c` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// OpenDAL keys for the UFS.
    pub ufs: BTreeMap<String, String>,
    /// uid/gid/mode overrides for UFS objects.
    pub uid: Option<u32>,
    /// gid override.
    pub gid: Option<u32>,
    /// File mode override.
    pub file_mode: Option<u32>,
    /// Directory mode override.
    pub dir_mode: Option<u32>,
    /// Kernel session options.
    pub fuse: FuseConfig,
    /// Write type.
    pub write_type: WriteType,
    /// ASYNC_THROUGH upload delay.
    pub upload_delay: Duration,
    /// The disk tier's I/O engine.
    pub cache_io: EngineChoice,
    /// `cache_free_ratio=R`, in thousandths (`None`: [`DEFAULT_CACHE_FREE_RATIO`]).
    pub cache_free_permille: Option<u16>,
    /// Multipart part size and parts in flight (`slots` is set from the memory budget).
    pub upload: UploadShape,
    /// Whether `upload_concurrency=` was given (else [`UploadShape::for_budget`] picks it).
    pub upload_concurrency_set: bool,
    /// When loaded directories are listed again.
    pub metadata_sync: MetadataSync,
    /// `dir_prefetch=SIZE`: bytes of a directory's small files prefetched per trigger.
    pub dir_prefetch: Option<u64>,
    /// `ufs_timeout=SECONDS`: how long a store call may go without an answer.
    pub ufs_timeout: Option<Duration>,
    /// `peers=HOST:PORT,HOST:PORT,...`: the static cluster membership.
    pub peers: Vec<String>,
    /// `peer_timeout=MS`: bound on one peer request.
    pub peer_timeout: Option<Duration>,
}

fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, ConfigError> {
    v.parse()
        .map_err(|_| ConfigError(format!("mount option {key}={v}: not a number")))
}

fn parse_mode(key: &str, v: &str) -> Result<u32, ConfigError> {
    match u32::from_str_radix(v, 8) {
        Ok(m) if m != 0 && m <= 0o7777 => Ok(m),
        _ => err(format!(
            "mount option {key}={v}: expected a non-zero octal mode like 644"
        )),
    }
}

/// Parses `-o` values (each may hold a comma-separated list).
pub fn parse_mount_options(values: &[String]) -> Result<MountOptions, ConfigError> {
    let mut o = MountOptions::default();
    let mut in_peers = false;
    for opt in values
        .iter()
        .flat_map(|v| v.split(','))
        .filter(|s| !s.is_empty())
    {
        let (key, val) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        // `peers=a:1,b:2`: the list's later entries arrive as options of their own.
        if val.is_none() && in_peers && key.contains(':') {
            o.peers.push(key.to_string());
            continue;
        }
        in_peers = key == "peers";
        match (key, val) {
            ("peers", Some(v)) => {
                o.peers
                    .extend(v.split(';').filter(|p| !p.is_empty()).map(String::from));
                if o.peers.iter().any(|p| !p.contains(':')) {
                    return err(format!(
                        "mount option peers={v}: expected HOST:PORT entries"
                    ));
                }
            }
            ("peer_timeout", Some(v)) => {
                let ms: u64 = parse_num(key, v.trim_end_matches("ms"))?;
                if !(1..=60_000).contains(&ms) {
                    return err("mount option peer_timeout must be between 1 and 60000 ms");
                }
                o.peer_timeout = Some(Duration::from_millis(ms));
            }
            ("uid", Some(v)) => o.uid = Some(parse_num(key, v)?),
            ("gid", Some(v)) => o.gid = Some(parse_num(key, v)?),
            ("file_mode", Some(v)) => o.file_mode = Some(parse_mode(key, v)?),
            ("dir_mode", Some(v)) => o.dir_mode = Some(parse_mode(key, v)?),
            (
                "endpoint" | "region" | "access_key_id" | "secret_access_key" | "session_token",
                Some(v),
            ) => {
                o.ufs.insert(key.into(), v.into());
            }
            (k, Some(v)) if k.starts_with("ufs.") && k.len() > 4 => {
                o.ufs.insert(k[4..].into(), v.into());
            }
            ("threads", Some(v)) => {
                let n: usize = parse_num(key, v)?;
                if n == 0 || n > 256 {
                    return err("mount option threads must be between 1 and 256");
                }
                o.fuse.threads = n;
            }
            ("attr_timeout", Some(v)) => {
                o.fuse.attr_ttl = Duration::from_secs_f64(parse_secs(key, v)?)
            }
            ("entry_timeout", Some(v)) => {
                o.fuse.entry_ttl = Duration::from_secs_f64(parse_secs(key, v)?)
            }
            ("write_type", Some(v)) => o.write_type = v.parse()?,
            ("readahead_kb", Some(v)) => {
                let kb: u32 = parse_num(key, v)?;
                if kb > 1 << 20 {
                    return err("mount option readahead_kb must be at most 1048576");
                }
                o.fuse.readahead_kb = kb;
            }
            ("upload_delay", Some(v)) => {
                o.upload_delay = Duration::from_secs_f64(parse_secs(key, v.trim_end_matches('s'))?)
            }
            ("cache_io", Some(v)) => o.cache_io = v.parse().map_err(ConfigError)?,
            ("cache_free_ratio", Some(v)) => match v.parse::<f64>() {
                Ok(r) if (0.0..=0.9).contains(&r) => {
                    o.cache_free_permille = Some((r * 1000.0).round() as u16)
                }
                _ => {
                    return err(format!(
                        "mount option {key}={v}: expected a share of the disk between 0 and 0.9"
                    ));
                }
            },
            ("metadata_sync", Some(v)) => o.metadata_sync = v.parse()?,
            ("dir_prefetch", Some(v)) => {
                o.dir_prefetch = Some(
                    parse_size(v).map_err(|e| ConfigError(format!("mount option {key}: {e}")))?,
                )
            }
            ("ufs_timeout", Some(v)) => {
                let secs = parse_secs(key, v.trim_end_matches('s'))?;
                if secs < 1.0 {
                    return err("mount option ufs_timeout must be at least 1 second");
                }
                o.ufs_timeout = Some(Duration::from_secs_f64(secs));
            }
            ("upload_part_size", Some(v)) => {
                let n =
                    parse_size(v).map_err(|e| ConfigError(format!("mount option {key}: {e}")))?;
                if !(5 << 20..=5 << 30).contains(&n) {
                    return err("mount option upload_part_size must be between 5MiB and 5GiB");
                }
                o.upload.part_bytes = n;
            }
            ("upload_concurrency", Some(v)) => {
                let n: usize = parse_num(key, v)?;
                if n == 0 || n > 64 {
                    return err("mount option upload_concurrency must be between 1 and 64");
                }
                o.upload.concurrency = n;
                o.upload_concurrency_set = true;
            }
            ("passthrough", None) => o.fuse.passthrough = true,
            ("nopassthrough", None) => o.fuse.passthrough = false,
            ("xattr", None) => o.fuse.xattr = true,
            ("noxattr", None) => o.fuse.xattr = false,
            ("allow_other", None) => o.fuse.allow_other = true,
            ("allow_root", None) => o.fuse.allow_root = true,
            ("ro", None) => o.fuse.read_only = true,
            ("rw", None) => o.fuse.read_only = false,
            // Accepted for mount(8)/fstab compatibility; they do not change our behaviour
            // (permissions are always checked by the kernel: default_permissions).
            (
                "default_permissions"
                | "dev"
                | "nodev"
                | "suid"
                | "nosuid"
                | "exec"
                | "noexec"
                | "atime"
                | "noatime"
                | "relatime"
                | "strictatime"
                | "nodiratime"
                | "_netdev"
                | "nofail"
                | "auto"
                | "noauto"
                | "user"
                | "nouser"
                | "users"
                | "async",
                None,
            ) => {}
            _ => return err(format!("unknown mount option {opt:?}")),
        }
    }
    Ok(o)
}

fn parse_secs(key: &str, v: &str) -> Result<f64, ConfigError> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=3600.0).contains(&s) => Ok(s),
        _ => err(format!(
            "mount option {key}={v}: expected seconds between 0 and 3600"
        )),
    }
}

/// Parses a size with optional unit: `4096`, `512MiB`, `4GiB`, `10G` (binary), `1GB`
/// (decimal).
pub fn parse_size(s: &str) -> Result<u64, ConfigError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return err(format!("cannot parse size {s:?}: unknown unit {unit:?}")),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| ConfigError(format!("cannot parse size {s:?}")))?;
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return err(format!("size {s:?} out of range"));
    }
    Ok(bytes as u64)
}

/// A stable short id for a path (FNV-1a 64), used to name per-mount directories and
/// sockets. Stable across builds and Rust versions, unlike `DefaultHasher`.
pub fn path_id(parts: &[&[u8]]) -> String {
    format!("{:016x}", crate::object::digest(parts))
}

/// The default base directory for per-mount state and cache.
pub fn default_home() -> PathBuf {
    if let Ok(h) = std::env::var("ALLUXIO_HOME") {
        return PathBuf::from(h);
    }
    if nix::unistd::geteuid().is_root() {
        PathBuf::from("/var/lib/alluxio")
    } else {
        let base = std::env::var("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|_| std::env::temp_dir());
        base.join("alluxio")
    }
}

/// The default directory for control sockets.
pub fn default_run_dir() -> PathBuf {
    if let Ok(h) = std::env::var("ALLUXIO_RUN_DIR") {
        return PathBuf::from(h);
    }
    if nix::unistd::geteuid().is_root() {
        PathBuf::from("/run/alluxio")
    } else {
        std::env::var("XDG_RUNTIME_DIR")
            .map(|d| PathBuf::from(d).join("alluxio"))
            .unwrap_or_else(|_| std::env::temp_dir().join("alluxio-run"))
    }
}

/// The control socket of the mount at `mountpoint` (canonical path expected).
pub fn control_socket(run_dir: &Path, mountpoint: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    run_dir.join(format!(
        "{}.sock",
        path_id(&[mountpoint.as_os_str().as_bytes()])
    ))
}

/// Creates `dir` (and parents) and makes it 0700; fails with a one-line message.
pub fn ensure_private_dir(dir: &Path, what: &str) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)
        .map_err(|e| ConfigError(format!("cannot create {what} {}: {e}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
        ConfigError(format!(
            "cannot set mode 0700 on {what} {}: {e}",
            dir.display()
        ))
    })
}

/// How one memory budget is divided (see [`MemoryPlan::from_budget`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Memory tier capacity.
    pub tier_bytes: u64,
    /// Pages (1 MiB) that may be fetched and not yet cached at once: demand misses and
    /// prefetch together.
    pub inflight_pages: u64,
    /// Held back for everything else: request and reply buffers of the session threads,
    /// the runtime, metadata and allocator slack.
    pub fixed_bytes: u64,
    /// Uploads that may hold part buffers at once, each `upload_bytes_each`.
    pub upload_slots: usize,
    /// Memory of one running upload ([`UploadShape::bytes_per_upload`]).
    pub upload_bytes_each: u64,
}

impl MemoryPlan {
    /// Divides `budget` bytes for a session with `threads` FUSE threads. The parts add up
    /// to at most `budget`, which is what the daemon's resident memory is meant to stay
    /// within (plus the binary itself).
    pub fn from_budget(
        budget: u64,
        threads: usize,
        upload: &UploadShape,
    ) -> Result<Self, ConfigError> {
        const MIB: u64 = 1 << 20;
        // Each session thread holds at most one request (≤ 1 MiB) and one reply.
        let fixed = 48 * MIB + threads as u64 * 2 * MIB;
        let inflight_pages = (budget / 8 / MIB).clamp(16, 256);
        // Uploads get an eighth of the budget, and always room for one.
        let each = upload.bytes_per_upload();
        let upload_slots = (budget / 8 / each).clamp(1, 16) as usize;
        let min = fixed + inflight_pages * MIB + upload_slots as u64 * each + 16 * MIB;
        if budget < min {
            return err(format!(
                "memory budget {budget} bytes is too small: at least {} MiB for {threads} threads and {} MiB upload parts",
                min.div_ceil(MIB),
                each.div_ceil(MIB)
            ));
        }
        Ok(Self {
            tier_bytes: budget - fixed - inflight_pages * MIB - upload_slots as u64 * each,
            inflight_pages,
            fixed_bytes: fixed,
            upload_slots,
            upload_bytes_each: each,
        })
    }
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        /// Arbitrary text as a URI, an option list or a size is refused with an error or
        /// parsed, never a panic.
        #[test]
        fn arbitrary_text_never_panics_a_parser(
            text in "\\PC{0,60}",
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..60),
        ) {
            let lossy = String::from_utf8_lossy(&raw).into_owned();
            for t in [text.as_str(), lossy.as_str()] {
                let _ = UfsConfig::parse(t, &Default::default());
                let _ = parse_mount_options(&[t.to_string()]);
                let _ = parse_mount_options(&t.split(',').map(String::from).collect::<Vec<_>>());
                let _ = parse_size(t);
                for scheme in ["s3://", "gcs://", "azblob://", "webdav://", "hdfs://", "file://"] {
                    let _ = UfsConfig::parse(&format!("{scheme}{t}"), &Default::default());
                }
                for key in ["cache_size=", "mem_budget=", "write_type=", "peers=", "upload_delay=", "metadata_sync=", "ufs."] {
                    let _ = parse_mount_options(&[format!("{key}{t}")]);
                }
            }
        }
    }

    use super::*;

    #[test]
    fn a_peer_list_spans_the_commas_of_an_option_list() {
        let o = parse_mount_options(&[
            "ro,peers=127.0.0.1:7001,127.0.0.1:7002,peer_timeout=300,allow_other".into(),
            "peers=h:9".into(),
        ])
        .unwrap();
        assert_eq!(o.peers, ["127.0.0.1:7001", "127.0.0.1:7002", "h:9"]);
        assert_eq!(o.peer_timeout, Some(Duration::from_millis(300)));
        assert!(o.fuse.read_only && o.fuse.allow_other);
        assert!(parse_mount_options(&["peers=nohost".into()]).is_err());
        assert!(parse_mount_options(&["peer_timeout=0".into()]).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn uris() {
        let e = BTreeMap::new();
        let d = tempfile::tempdir().unwrap();
        let p = d.path().to_str().unwrap();
        let c = UfsConfig::parse(p, &e).unwrap();
        assert_eq!(c.scheme, "fs");
        let c = UfsConfig::parse(&format!("file://{p}"), &e).unwrap();
        assert_eq!(c.scheme, "fs");
        assert!(UfsConfig::parse("/definitely/not/here", &e).is_err());
        assert!(UfsConfig::parse("relative/path", &e).is_err());
        assert!(UfsConfig::parse("::nope", &e).is_err());
        assert!(UfsConfig::parse("s3://", &e).is_err());
        let mut o = BTreeMap::new();
        o.insert("endpoint".to_string(), "http://127.0.0.1:9".to_string());
        let c = UfsConfig::parse("s3://bkt/a/b/", &o).unwrap();
        assert_eq!(c.scheme, "s3");
        assert_eq!(c.options["bucket"], "bkt");
        assert_eq!(c.options["root"], "/a/b");
        o.insert("endpoint".to_string(), "127.0.0.1:9".to_string());
        assert!(UfsConfig::parse("s3://bkt", &o).is_err());
        assert_eq!(UfsConfig::parse("memory://", &e).unwrap().scheme, "memory");
        assert_eq!(UfsConfig::parse("gcs://b/p", &e).unwrap().scheme, "gcs");
    }

    #[test]
    fn debug_hides_secrets() {
        let mut o = BTreeMap::new();
        o.insert("secret_access_key".to_string(), "hunter2".to_string());
        let c = UfsConfig::parse("s3://b", &o).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn mount_options() {
        let o = parse_mount_options(&[
            "uid=5,gid=6,file_mode=640".into(),
            "dir_mode=750,endpoint=http://x:1,ufs.foo=bar,allow_other,rw,dev,suid,_netdev".into(),
        ])
        .unwrap();
        assert_eq!(
            (o.uid, o.gid, o.file_mode, o.dir_mode),
            (Some(5), Some(6), Some(0o640), Some(0o750))
        );
        assert_eq!(o.ufs["endpoint"], "http://x:1");
        assert_eq!(o.ufs["foo"], "bar");
        assert!(o.fuse.allow_other);
        assert!(parse_mount_options(&["bogus".into()]).is_err());
        assert!(parse_mount_options(&["file_mode=0".into()]).is_err());
        assert!(parse_mount_options(&["file_mode=999".into()]).is_err());
        assert!(parse_mount_options(&["uid=x".into()]).is_err());
        assert!(parse_mount_options(&["threads=0".into()]).is_err());
        let free = |v: &str| {
            parse_mount_options(&[format!("cache_free_ratio={v}")]).map(|o| o.cache_free_ratio())
        };
        assert_eq!(free("0.25").unwrap(), 0.25);
        assert_eq!(free("0").unwrap(), 0.0);
        for bad in ["0.95", "-0.1", "NaN", "x"] {
            assert!(free(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_mount_options(&[]).unwrap().cache_free_ratio(),
            DEFAULT_CACHE_FREE_RATIO
        );
        let o =
            parse_mount_options(&["write_type=async_through,upload_delay=2.5s".into()]).unwrap();
        let u = parse_mount_options(&["upload_part_size=16MiB,upload_concurrency=8".into()])
            .unwrap()
            .upload;
        assert_eq!((u.part_bytes, u.concurrency), (16 << 20, 8));
        assert!(parse_mount_options(&["upload_part_size=1MiB".into()]).is_err());
        assert!(parse_mount_options(&["upload_concurrency=0".into()]).is_err());
        assert!(
            parse_mount_options(&["upload_concurrency=4".into()])
                .unwrap()
                .upload_concurrency_set
        );
        // Unset: 8 in flight once the budget holds three such uploads, else 4.
        let d = UploadShape::default();
        assert_eq!(d.for_budget(1 << 30).concurrency, 4);
        assert_eq!(d.for_budget(2 << 30).concurrency, 8);
        let plan = MemoryPlan::from_budget(2 << 30, 16, &d.for_budget(2 << 30)).unwrap();
        assert_eq!(plan.upload_slots, 3, "a commit and two streams");
        for (v, want) in [
            ("never", MetadataSync::Never),
            ("always", MetadataSync::Always),
            ("30", MetadataSync::Every(Duration::from_secs(30))),
            ("1.5s", MetadataSync::Every(Duration::from_millis(1500))),
        ] {
            let o = parse_mount_options(&[format!("metadata_sync={v}")]).unwrap();
            assert_eq!(o.metadata_sync, want, "{v}");
        }
        assert!(parse_mount_options(&["metadata_sync=soon".into()]).is_err());
        assert_eq!(o.write_type, WriteType::AsyncThrough);
        assert_eq!(o.upload_delay, Duration::from_millis(2500));
        assert_eq!(
            parse_mount_options(&["write_type=THROUGH".into()])
                .unwrap()
                .write_type,
            WriteType::Through
        );
        assert!(parse_mount_options(&["write_type=sometimes".into()]).is_err());
    }

    #[test]
    fn path_ids_are_stable() {
        assert_eq!(path_id(&[b"/mnt/a"]), path_id(&[b"/mnt/a"]));
        assert_ne!(path_id(&[b"/mnt/a"]), path_id(&[b"/mnt/b"]));
        assert_ne!(path_id(&[b"/mnt", b"a"]), path_id(&[b"/mnta"]));
    }

    #[test]
    fn memory_budget_splits_into_parts_that_fit() {
        for budget in [192u64 << 20, 1 << 30, 8 << 30] {
            let up = UploadShape::default();
            let p = MemoryPlan::from_budget(budget, 8, &up).unwrap();
            assert_eq!(
                p.tier_bytes
                    + p.inflight_pages * (1 << 20)
                    + p.fixed_bytes
                    + p.upload_slots as u64 * p.upload_bytes_each,
                budget
            );
            assert!(p.tier_bytes >= 16 << 20 && p.inflight_pages >= 16);
            assert!(p.upload_slots >= 1 && p.upload_bytes_each == 40 << 20);
        }
        let up = UploadShape::default();
        assert!(MemoryPlan::from_budget(64 << 20, 8, &up).is_err());
        assert!(MemoryPlan::from_budget(256 << 20, 200, &up).is_err());
        // Larger parts take their memory from the tier, and can exceed a small budget.
        let big = UploadShape {
            part_bytes: 64 << 20,
            concurrency: 8,
            slots: 0,
        };
        assert!(MemoryPlan::from_budget(512 << 20, 8, &big).is_err());
        let p = MemoryPlan::from_budget(8 << 30, 8, &big).unwrap();
        assert_eq!(p.upload_slots, 1);
    }
}
