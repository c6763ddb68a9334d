//! The stores a mount can sit on: how each one's URI looks, which OpenDAL service serves
//! it, which environment variables fill in what `-o` options leave out, and the limits of
//! its keys. One table, [`STORES`], so the URI parser, the UFS and `fs report` agree.
//!
//! Every URI has the form `SCHEME://AUTHORITY[/PATH]`. For object stores the authority is
//! the bucket (or container, or filesystem) and the path is the prefix under which the
//! mount's keys live; for hosts (HDFS, WebHDFS, WebDAV, SFTP) the authority is where the
//! server is and the path is the root directory on it.

use std::collections::BTreeMap;

use super::{ConfigError, err};

/// How a store's URI authority is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authority {
    /// The bucket (container, filesystem) named by this OpenDAL key; the path is a prefix.
    Bucket(&'static str),
    /// A server: the authority becomes the OpenDAL key given, through `format`
    /// (`{}` is the authority); the path is the root directory.
    Host {
        /// OpenDAL key of the server's address.
        key: &'static str,
        /// How the address is written (`http://{}`, `hdfs://{}`, ...).
        format: &'static str,
    },
}

/// The longest key a store accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLimit {
    /// Bytes of UTF-8.
    Bytes(usize),
    /// Unicode characters (Azure counts characters).
    Chars(usize),
}

/// One kind of store.
#[derive(Debug)]
pub struct Store {
    /// URI schemes that name it; the first is the one `fs report` shows.
    pub schemes: &'static [&'static str],
    /// The OpenDAL service that serves it.
    pub service: &'static str,
    /// How the authority of its URIs is read.
    pub authority: Authority,
    /// OpenDAL keys filled from environment variables when no option sets them, each with
    /// the variables tried in order.
    pub env: &'static [(&'static str, &'static [&'static str])],
    /// Options set when neither the user nor the environment set them.
    pub defaults: &'static [(&'static str, &'static str)],
    /// The generic mount options (`access_key_id=`, `secret_access_key=`) under the names
    /// this service uses for them.
    pub renames: &'static [(&'static str, &'static str)],
    /// What a mount needs that has no default, with the error shown when it is missing.
    pub required: &'static [(&'static str, &'static str)],
    /// The longest key the store accepts (under the mount's root), where it has a limit.
    pub max_key: Option<KeyLimit>,
    /// Whether names with ASCII control characters are refused at create: listings in
    /// XML (S3, Azure Blob, WebDAV, ...) cannot carry most of them, and GCS forbids CR
    /// and LF in object names.
    pub no_control_chars: bool,
    /// Whether a directory is a real directory on the server (not a prefix with a
    /// marker object), renamed natively with everything below it.
    pub native_dir_rename: bool,
}

const AWS_ENV: &[(&str, &[&str])] = &[
    ("endpoint", &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]),
    ("region", &["AWS_REGION", "AWS_DEFAULT_REGION"]),
    ("access_key_id", &["AWS_ACCESS_KEY_ID"]),
    ("secret_access_key", &["AWS_SECRET_ACCESS_KEY"]),
    ("session_token", &["AWS_SESSION_TOKEN"]),
];

const AZURE_ENV: &[(&str, &[&str])] = &[
    (
        "account_name",
        &["AZURE_STORAGE_ACCOUNT_NAME", "AZBLOB_ACCOUNT_NAME"],
    ),
    (
        "account_key",
        &["AZURE_STORAGE_ACCOUNT_KEY", "AZBLOB_ACCOUNT_KEY"],
    ),
    ("sas_token", &["AZURE_STORAGE_SAS_TOKEN"]),
];

/// What a store has unless its entry says otherwise: no environment, defaults, renames or
/// required options, no key limit, control characters allowed, directories as prefixes.
const PLAIN: Store = Store {
    schemes: &[],
    service: "",
    authority: Authority::Bucket(""),
    env: &[],
    defaults: &[],
    renames: &[],
    required: &[],
    max_key: None,
    no_control_chars: false,
    native_dir_rename: false,
};

/// Every store a URI can name, besides a local directory (`/path`, `file:///path`).
pub static STORES: &[Store] = &[
    Store {
        schemes: &["s3", "s3a"],
        service: "s3",
        authority: Authority::Bucket("bucket"),
        env: AWS_ENV,
        defaults: &[("region", "us-east-1")],
        // AWS and MinIO refuse keys over 1024 bytes.
        max_key: Some(KeyLimit::Bytes(1024)),
        no_control_chars: true,
        ..PLAIN
    },
    Store {
        schemes: &["gcs", "gs"],
        service: "gcs",
        authority: Authority::Bucket("bucket"),
        // GOOGLE_APPLICATION_CREDENTIALS is read by the service itself. STORAGE_EMULATOR_HOST
        // is what Google's own clients read to reach an emulator, which takes no signature.
        env: &[("endpoint", &["STORAGE_EMULATOR_HOST"])],
        max_key: Some(KeyLimit::Bytes(1024)),
        no_control_chars: true,
        ..PLAIN
    },
    Store {
        schemes: &["azblob", "wasb", "wasbs"],
        service: "azblob",
        authority: Authority::Bucket("container"),
        env: AZURE_ENV,
        max_key: Some(KeyLimit::Chars(1024)),
        no_control_chars: true,
        ..PLAIN
    },
    Store {
        schemes: &["azdls", "abfs", "abfss"],
        service: "azdls",
        authority: Authority::Bucket("filesystem"),
        env: AZURE_ENV,
        max_key: Some(KeyLimit::Chars(1024)),
        ..PLAIN
    },
    Store {
        schemes: &["hdfs"],
        service: "hdfs-native",
        authority: Authority::Host {
            key: "name_node",
            format: "hdfs://{}",
        },
        ..PLAIN
    },
    Store {
        schemes: &["webhdfs", "swebhdfs"],
        service: "webhdfs",
        authority: Authority::Host {
            key: "endpoint",
            format: "http://{}",
        },
        env: &[("user_name", &["HADOOP_USER_NAME"])],
        ..PLAIN
    },
    Store {
        schemes: &["webdav", "webdavs", "dav", "davs"],
        service: "webdav",
        authority: Authority::Host {
            key: "endpoint",
            format: "http://{}",
        },
        // PROPFIND answers are XML.
        no_control_chars: true,
        native_dir_rename: true,
        ..PLAIN
    },
    Store {
        schemes: &["oss"],
        service: "oss",
        authority: Authority::Bucket("bucket"),
        env: &[
            ("endpoint", &["OSS_ENDPOINT"]),
            (
                "access_key_id",
                &["ALIBABA_CLOUD_ACCESS_KEY_ID", "OSS_ACCESS_KEY_ID"],
            ),
            (
                "access_key_secret",
                &["ALIBABA_CLOUD_ACCESS_KEY_SECRET", "OSS_ACCESS_KEY_SECRET"],
            ),
        ],
        renames: &[("secret_access_key", "access_key_secret")],
        required: &[(
            "endpoint",
            "oss:// needs the region's endpoint: -o endpoint=https://oss-REGION.aliyuncs.com (or OSS_ENDPOINT)",
        )],
        max_key: Some(KeyLimit::Bytes(1023)),
        no_control_chars: true,
        ..PLAIN
    },
    Store {
        schemes: &["cos", "cosn"],
        service: "cos",
        authority: Authority::Bucket("bucket"),
        renames: &[
            ("access_key_id", "secret_id"),
            ("secret_access_key", "secret_key"),
        ],
        required: &[(
            "endpoint",
            "cos:// needs the region's endpoint: -o endpoint=https://cos.REGION.myqcloud.com",
        )],
        max_key: Some(KeyLimit::Bytes(850)),
        no_control_chars: true,
        ..PLAIN
    },
    Store {
        schemes: &["obs"],
        service: "obs",
        authority: Authority::Bucket("bucket"),
        required: &[(
            "endpoint",
            "obs:// needs the region's endpoint: -o endpoint=https://obs.REGION.myhuaweicloud.com",
        )],
        max_key: Some(KeyLimit::Bytes(1024)),
        no_control_chars: true,
        ..PLAIN
    },
    Store {
        schemes: &["swift"],
        service: "swift",
        authority: Authority::Bucket("container"),
        // python-swiftclient's variables for a pre-authenticated storage URL and token.
        env: &[
            ("endpoint", &["OS_STORAGE_URL"]),
            ("token", &["OS_AUTH_TOKEN"]),
        ],
        required: &[(
            "endpoint",
            "swift:// needs the account's storage URL: -o endpoint=https://HOST/v1/AUTH_ACCOUNT (or OS_STORAGE_URL)",
        )],
        max_key: Some(KeyLimit::Bytes(1024)),
        ..PLAIN
    },
    Store {
        schemes: &["sftp"],
        service: "sftp",
        authority: Authority::Host {
            key: "endpoint",
            format: "ssh://{}",
        },
        ..PLAIN
    },
    Store {
        schemes: &["memory"],
        service: "memory",
        authority: Authority::Bucket(""),
        ..PLAIN
    },
];

/// What a local-directory UFS is, for the same questions.
pub static LOCAL: Store = Store {
    schemes: &["file"],
    service: "fs",
    // A local path must fit in PATH_MAX with its NUL; the root's length is taken off.
    max_key: Some(KeyLimit::Bytes(4095)),
    native_dir_rename: true,
    ..PLAIN
};

/// The store a URI scheme names.
pub fn by_scheme(scheme: &str) -> Option<&'static Store> {
    STORES.iter().find(|s| s.schemes.contains(&scheme))
}

/// The store an OpenDAL service is.
pub fn by_service(service: &str) -> Option<&'static Store> {
    if service == LOCAL.service {
        return Some(&LOCAL);
    }
    STORES.iter().find(|s| s.service == service)
}

/// The kind of store a UFS URI names, as `fs report` shows it (`local`, `s3`, `gcs`,
/// `azblob`, ...), without checking anything else about the URI.
pub fn kind_of(uri: &str) -> &'static str {
    if uri.starts_with('/') || uri.starts_with("file://") {
        return "local";
    }
    uri.split_once("://")
        .and_then(|(scheme, _)| by_scheme(&scheme.to_ascii_lowercase()))
        .map(|s| s.schemes[0])
        .unwrap_or("unknown")
}

/// Every scheme a URI may use, for error messages.
fn known_schemes() -> String {
    let mut v: Vec<&str> = vec!["file"];
    v.extend(STORES.iter().flat_map(|s| s.schemes.iter().copied()));
    v.join(", ")
}

/// The OpenDAL service and options of `SCHEME://REST` (`scheme` already lower case).
pub(super) fn parse(
    uri: &str,
    scheme: &str,
    rest: &str,
    mut options: BTreeMap<String, String>,
) -> Result<(&'static str, BTreeMap<String, String>), ConfigError> {
    let Some(store) = by_scheme(scheme) else {
        return err(format!(
            "cannot parse UFS URI {uri:?}: unknown store {scheme:?}; known: {}",
            known_schemes()
        ));
    };
    // `rest` is AUTHORITY[/PATH]; a query or fragment has no meaning here.
    if rest.contains(['?', '#']) {
        return err(format!(
            "cannot parse UFS URI {uri:?}: '?' and '#' are not allowed; set options with -o"
        ));
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let root = format!("/{}", path.trim_matches('/'));
    match store.authority {
        Authority::Bucket("") => {} // memory://
        Authority::Bucket(key) => {
            // Hadoop's Azure forms: wasbs://CONTAINER@ACCOUNT.blob.core.windows.net/path,
            // abfss://FILESYSTEM@ACCOUNT.dfs.core.windows.net/path.
            let (bucket, host) = match authority.split_once('@') {
                Some((b, h)) if store.service.starts_with("az") => (b, Some(h)),
                _ => (authority, None),
            };
            if bucket.is_empty() {
                return err(format!(
                    "cannot parse UFS URI {uri:?}: missing the {key} name ({}://{}/prefix)",
                    scheme,
                    key.to_ascii_uppercase()
                ));
            }
            options.insert(key.into(), bucket.into());
            options.insert("root".into(), root);
            if let Some(host) = host {
                let tls = !matches!(scheme, "wasb" | "abfs");
                let proto = if tls { "https" } else { "http" };
                options
                    .entry("endpoint".into())
                    .or_insert_with(|| format!("{proto}://{host}"));
            }
        }
        Authority::Host { key, format } => {
            if authority.is_empty() {
                return err(format!(
                    "cannot parse UFS URI {uri:?}: missing the server ({scheme}://HOST[:PORT]/path)"
                ));
            }
            let tls = matches!(scheme, "webdavs" | "davs" | "swebhdfs");
            let addr = format.replace("{}", authority);
            let addr = if tls {
                addr.replacen("http://", "https://", 1)
            } else {
                addr
            };
            options.entry(key.into()).or_insert(addr);
            options.insert("root".into(), root);
        }
    }
    for (generic, own) in store.renames {
        if let Some(v) = options.remove(*generic) {
            options.entry((*own).into()).or_insert(v);
        }
    }
    for (key, vars) in store.env {
        if options.contains_key(*key) {
            continue;
        }
        if let Some(v) = vars.iter().find_map(|v| std::env::var(v).ok()) {
            options.insert((*key).into(), v);
        }
    }
    for (key, v) in store.defaults {
        options.entry((*key).into()).or_insert_with(|| (*v).into());
    }
    match store.service {
        "gcs" if std::env::var_os("STORAGE_EMULATOR_HOST").is_some() => {
            // An emulator takes no credentials; Google's clients skip them too.
            options
                .entry("skip_signature".into())
                .or_insert_with(|| "true".into());
        }
        "azblob" | "azdls" if !options.contains_key("endpoint") => {
            let Some(account) = options.get("account_name") else {
                return err(format!(
                    "{scheme}:// needs the storage account: -o ufs.account_name=NAME (or AZURE_STORAGE_ACCOUNT_NAME), or -o endpoint=URL"
                ));
            };
            let svc = if store.service == "azblob" {
                "blob"
            } else {
                "dfs"
            };
            let ep = format!("https://{account}.{svc}.core.windows.net");
            options.insert("endpoint".into(), ep);
        }
        _ => {}
    }
    for (key, msg) in store.required {
        if !options.contains_key(*key) {
            return err(*msg);
        }
    }
    if let Some(ep) = options.get("endpoint") {
        let ep = ep.trim_end_matches('/').to_string();
        let http = ep.starts_with("http://") || ep.starts_with("https://");
        if !http && store.service != "sftp" {
            // STORAGE_EMULATOR_HOST is often given as HOST:PORT.
            if store.service == "gcs" && !ep.contains("://") {
                options.insert("endpoint".into(), format!("http://{ep}"));
            } else {
                return err(format!(
                    "{} endpoint must start with http:// or https://: {ep:?}",
                    store.schemes[0]
                ));
            }
        } else {
            // Endpoints are joined with paths as they are: a trailing '/' would double.
            options.insert("endpoint".into(), ep);
        }
    }
    Ok((store.service, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(
        uri: &str,
        o: &[(&str, &str)],
    ) -> Result<(&'static str, BTreeMap<String, String>), ConfigError> {
        let (scheme, rest) = uri.split_once("://").unwrap();
        let o = o
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(uri, scheme, rest, o)
    }

    #[test]
    fn every_store_has_its_uri_form() {
        let (s, o) = p("gs://bkt/a/b/", &[("endpoint", "http://127.0.0.1:9")]).unwrap();
        assert_eq!(
            (s, o["bucket"].as_str(), o["root"].as_str()),
            ("gcs", "bkt", "/a/b")
        );
        let (s, o) = p(
            "azblob://c/p",
            &[("account_name", "acct"), ("account_key", "a2V5")],
        )
        .unwrap();
        assert_eq!(s, "azblob");
        assert_eq!(o["container"], "c");
        assert_eq!(o["endpoint"], "https://acct.blob.core.windows.net");
        let (s, o) = p("abfss://fs@acct.dfs.core.windows.net/x/y", &[]).unwrap();
        assert_eq!((s, o["filesystem"].as_str()), ("azdls", "fs"));
        assert_eq!(o["endpoint"], "https://acct.dfs.core.windows.net");
        assert_eq!(o["root"], "/x/y");
        let (s, o) = p("hdfs://nn:8020/warehouse", &[]).unwrap();
        assert_eq!(
            (s, o["name_node"].as_str()),
            ("hdfs-native", "hdfs://nn:8020")
        );
        assert_eq!(o["root"], "/warehouse");
        let (s, o) = p("webdavs://dav.example.com/share/", &[]).unwrap();
        assert_eq!(
            (s, o["endpoint"].as_str()),
            ("webdav", "https://dav.example.com")
        );
        assert_eq!(o["root"], "/share");
        let (s, o) = p("webhdfs://nn:9870/", &[]).unwrap();
        assert_eq!(
            (s, o["endpoint"].as_str(), o["root"].as_str()),
            ("webhdfs", "http://nn:9870", "/")
        );
        let (s, o) = p("sftp://me@host:2222/data", &[]).unwrap();
        assert_eq!((s, o["endpoint"].as_str()), ("sftp", "ssh://me@host:2222"));
        let (s, o) = p(
            "cos://b/p",
            &[
                ("endpoint", "https://cos.ap.myqcloud.com/"),
                ("access_key_id", "id"),
            ],
        )
        .unwrap();
        assert_eq!((s, o["secret_id"].as_str()), ("cos", "id"));
        assert_eq!(o["endpoint"], "https://cos.ap.myqcloud.com");
        assert!(!o.contains_key("access_key_id"));
    }

    #[test]
    fn what_a_store_cannot_do_without_is_said_in_one_line() {
        for (uri, says) in [
            ("oss://b/p", "endpoint"),
            ("swift://c/p", "storage URL"),
            ("azblob://c/p", "storage account"),
            ("gcs:///p", "BUCKET"),
            ("hdfs:///p", "HOST"),
            ("nfs://h/p", "unknown store"),
            ("gcs://b/p?x=1", "not allowed"),
        ] {
            let e = p(uri, &[]).unwrap_err().0;
            assert!(e.contains(says) && !e.contains('\n'), "{uri}: {e}");
        }
        let e = p("webdav://h/p", &[("endpoint", "h:1")]).unwrap_err().0;
        assert!(e.contains("http://"), "{e}");
    }

    #[test]
    fn kinds() {
        assert_eq!(kind_of("/data"), "local");
        assert_eq!(kind_of("gs://b/p"), "gcs");
        assert_eq!(kind_of("wasbs://c@a.blob.core.windows.net/"), "azblob");
        assert_eq!(kind_of("nope://x"), "unknown");
        for s in STORES {
            assert_eq!(by_service(s.service).map(|t| t.service), Some(s.service));
        }
    }
}
