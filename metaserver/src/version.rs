//! The version of a file's (or a mount point's) content, typed.
//!
//! A version is what cached pages are keyed by, so two different contents must never share
//! one. It is kept in records and on the wire as its text form ([`ObjectVersion::to_string`],
//! parsed back by [`ObjectVersion::parse`]); code decides on the variant, never on string
//! prefixes. The text forms, which existing namespaces and caches hold, are:
//!
//! | variant | text | where it comes from |
//! |---|---|---|
//! | [`ObjectVersion::Id`] | `v:ID` | the store's version id (S3 versioning, OSS, COS) or GCS generation |
//! | [`ObjectVersion::ETag`] | `e:ETAG` | the store's ETag, unquoted |
//! | [`ObjectVersion::SizeMtime`] | `s:SIZE-MTIME_NS` | stores with neither (a local directory, HDFS, SFTP) |
//! | [`ObjectVersion::Pending`] | `pending:INO.SEQ` | an ASYNC_THROUGH journal entry of one daemon, not in the store yet |
//! | [`ObjectVersion::Mount`] | `mount:PATH` | a mount point's directory, backed by the store mounted there |
//!
//! Only `Id`, `ETag` and `SizeMtime` name bytes in the store; `Pending` names bytes only the
//! writing daemon has ([`ObjectVersion::in_store`]).

use crate::record::InodeNo;

/// See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObjectVersion {
    /// The store's version id, or GCS's generation: a read can name it.
    Id(String),
    /// The store's ETag (without quotes): a read can be pinned to it with If-Match.
    ETag(String),
    /// Size and modification time in ns, for stores with neither id nor ETag.
    SizeMtime {
        /// Content length.
        size: u64,
        /// Last modified, ns since the epoch (0 when unknown).
        mtime_ns: i64,
    },
    /// Journal entry `seq` of inode `ino` in the writing daemon (ASYNC_THROUGH).
    Pending {
        /// The inode whose entry it is.
        ino: InodeNo,
        /// The entry's sequence number.
        seq: u64,
    },
    /// A mount point's directory; `path` is the mount path.
    Mount(String),
    /// A text of no known form (written by a newer release): compared as it is, and
    /// treated as naming store bytes that cannot be pinned.
    Other(String),
}

/// Text prefix of [`ObjectVersion::Pending`].
pub const PENDING_PREFIX: &str = "pending:";
/// Text prefix of [`ObjectVersion::Mount`].
pub const MOUNT_PREFIX: &str = "mount:";

impl ObjectVersion {
    /// Reads a version's text form. Never fails: an unknown form is [`Self::Other`].
    pub fn parse(s: &str) -> Self {
        if let Some(v) = s.strip_prefix("v:") {
            return Self::Id(v.to_string());
        }
        if let Some(e) = s.strip_prefix("e:") {
            return Self::ETag(e.to_string());
        }
        if let Some(rest) = s.strip_prefix("s:")
            && let Some((size, mtime)) = rest.split_once('-')
            && let (Ok(size), Ok(mtime_ns)) = (size.parse(), mtime.parse())
        {
            return Self::SizeMtime { size, mtime_ns };
        }
        if let Some(rest) = s.strip_prefix(PENDING_PREFIX)
            && let Some((ino, seq)) = rest.split_once('.')
            && let (Ok(ino), Ok(seq)) = (ino.parse(), seq.parse())
        {
            return Self::Pending {
                ino: InodeNo(ino),
                seq,
            };
        }
        if let Some(p) = s.strip_prefix(MOUNT_PREFIX) {
            return Self::Mount(p.to_string());
        }
        Self::Other(s.to_string())
    }

    /// Whether the text `s` is a pending version (without allocating).
    pub fn is_pending_text(s: &str) -> bool {
        matches!(Self::parse(s), Self::Pending { .. })
    }

    /// Whether these bytes are in the store (any host can read them there), as opposed to
    /// one daemon's journal or a mount point's marker.
    pub fn in_store(&self) -> bool {
        !matches!(self, Self::Pending { .. } | Self::Mount(_))
    }
}

impl std::fmt::Display for ObjectVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id(v) => write!(f, "v:{v}"),
            Self::ETag(e) => write!(f, "e:{e}"),
            Self::SizeMtime { size, mtime_ns } => write!(f, "s:{size}-{mtime_ns}"),
            Self::Pending { ino, seq } => write!(f, "{PENDING_PREFIX}{}.{seq}", ino.0),
            Self::Mount(p) => write!(f, "{MOUNT_PREFIX}{p}"),
            Self::Other(s) => f.write_str(s),
        }
    }
}

/// FNV-1a over the parts, each followed by a NUL (a part never holds one: keys with NUL
/// are refused, and store names and versions are printable), so part boundaries count.
pub fn digest(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.iter().chain(std::iter::once(&0u8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        for v in [
            ObjectVersion::Id("3HL4kqtJlcpXroDTDmJ".into()),
            ObjectVersion::ETag("0x8DC1-abc".into()),
            ObjectVersion::SizeMtime {
                size: 11,
                mtime_ns: 1_700_000_000_123_456_789,
            },
            ObjectVersion::Pending {
                ino: InodeNo(6),
                seq: 3,
            },
            ObjectVersion::Mount("/s3".into()),
        ] {
            assert_eq!(ObjectVersion::parse(&v.to_string()), v, "{v}");
        }
        assert_eq!(
            ObjectVersion::parse("pending:6.3").to_string(),
            "pending:6.3"
        );
        // Malformed forms are kept as they are, never misread.
        for s in ["s:12", "s:x-1", "pending:6", "pending:a.b", "zz", ""] {
            assert_eq!(
                ObjectVersion::parse(s),
                ObjectVersion::Other(s.into()),
                "{s}"
            );
            assert_eq!(ObjectVersion::parse(s).to_string(), s);
        }
        assert!(ObjectVersion::is_pending_text("pending:1.2"));
        assert!(!ObjectVersion::is_pending_text("e:pending:1.2"));
        assert!(!ObjectVersion::parse("pending:1.2").in_store());
        assert!(!ObjectVersion::parse("mount:/x").in_store());
        assert!(ObjectVersion::parse("e:x").in_store());
    }
}
