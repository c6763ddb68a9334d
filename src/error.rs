//! `FsError`, the only error type that reaches the FUSE adapter, and every errno decision.
//!
//! Matches over our own enums are exhaustive (no `_` arm) so a new variant forces a
//! decision here. OpenDAL's `ErrorKind` is non-exhaustive; its wildcard arm maps to EIO.

use alluxio_metaserver::MetaError;
use tracing::Level;

use crate::ufs::UfsError;

/// An error carrying the errno the kernel will see, a message and the level to log it at.
#[derive(Debug, Clone)]
pub struct FsError {
    errno: i32,
    message: String,
    level: Level,
}

impl FsError {
    /// A new error logged at WARN.
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        Self {
            errno,
            message: message.into(),
            level: Level::WARN,
        }
    }

    /// An expected error (ENOENT from lookup, EEXIST from O_EXCL): logged at DEBUG.
    pub fn expected(errno: i32, message: impl Into<String>) -> Self {
        Self {
            errno,
            message: message.into(),
            level: Level::DEBUG,
        }
    }

    /// An error that is an answer, not a fault, and worth a line in the log (an object
    /// that changed in the store): logged at INFO, not counted as a failure.
    pub fn notice(errno: i32, message: impl Into<String>) -> Self {
        Self {
            errno,
            message: message.into(),
            level: Level::INFO,
        }
    }

    /// The errno.
    pub fn errno(&self) -> i32 {
        self.errno
    }

    /// The level this error is logged at when replied to the kernel.
    pub fn level(&self) -> Level {
        self.level
    }
}

impl std::fmt::Display for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (errno {})", self.message, self.errno)
    }
}

impl std::error::Error for FsError {}

impl From<MetaError> for FsError {
    fn from(e: MetaError) -> Self {
        let msg = e.to_string();
        match e {
            MetaError::NotFound(_) => FsError::expected(libc::ENOENT, msg),
            MetaError::AlreadyExists(_) => FsError::expected(libc::EEXIST, msg),
            MetaError::NotADirectory(_) => FsError::expected(libc::ENOTDIR, msg),
            MetaError::IsADirectory(_) => FsError::expected(libc::EISDIR, msg),
            MetaError::DirectoryNotEmpty(_) => FsError::expected(libc::ENOTEMPTY, msg),
            MetaError::NameTooLong(_) => FsError::expected(libc::ENAMETOOLONG, msg),
            MetaError::InvalidArgument(_) => FsError::expected(libc::EINVAL, msg),
            // The vfs loads the directory and retries; reaching the kernel is a bug.
            MetaError::Unloaded(_) => FsError::new(libc::EIO, msg),
            MetaError::Unsupported(_) => FsError::expected(libc::EOPNOTSUPP, msg),
            MetaError::NotPermitted(_) => FsError::expected(libc::EPERM, msg),
            MetaError::NoAttribute(_) => FsError::expected(libc::ENODATA, msg),
            MetaError::TooManyLinks(_) => FsError::expected(libc::EMLINK, msg),
            MetaError::Busy(_) => FsError::expected(libc::EBUSY, msg),
            MetaError::VersionMismatch(_) => FsError::new(libc::ESTALE, msg),
            MetaError::Storage(_) | MetaError::Corrupt(_) => FsError {
                errno: libc::EIO,
                message: msg,
                level: Level::ERROR,
            },
        }
    }
}

impl From<UfsError> for FsError {
    fn from(e: UfsError) -> Self {
        use opendal::ErrorKind as K;
        let msg = e.to_string();
        match e.kind() {
            K::NotFound => FsError::new(libc::ENOENT, msg),
            K::AlreadyExists => FsError::new(libc::EEXIST, msg),
            K::PermissionDenied => FsError::new(libc::EACCES, msg),
            K::IsADirectory => FsError::new(libc::EISDIR, msg),
            K::NotADirectory => FsError::new(libc::ENOTDIR, msg),
            // The object changed under an open handle (If-Match failed): the data set
            // was refreshed. Said briefly, at INFO: not a fault (the store's answer, a
            // whole HTTP exchange, is at DEBUG).
            K::ConditionNotMatch => {
                tracing::debug!(error = %msg, "object changed in the store");
                FsError::notice(
                    libc::ESTALE,
                    format!("{}: the object changed in the store", e.brief()),
                )
            }
            K::Unsupported => FsError::new(libc::EOPNOTSUPP, msg),
            kind => {
                // A local store reports OS errors as `Unexpected`: keep the OS's errno when
                // it is one a caller can act on (a name too long, a full or read-only disk).
                let errno = os_errno(&e).unwrap_or(libc::EIO);
                tracing::debug!(?kind, errno, "UFS error kind mapped to errno");
                if e.is_refusal() {
                    // Refused before any request (a key too long, a name the store cannot
                    // hold): the caller's input, not a fault.
                    FsError::expected(errno, msg)
                } else {
                    FsError::new(errno, msg)
                }
            }
        }
    }
}

/// Why a page could not be read, past what its sources said.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A source gave a page at another length than its version has there: the object
    /// changed (ESTALE; never served).
    #[error("{object} changed: a source gave page {idx} as {got} bytes, not {want}")]
    WrongLength {
        /// The object version.
        object: String,
        /// The page.
        idx: u64,
        /// Bytes the source gave.
        got: u64,
        /// Bytes the version has in that page.
        want: u64,
    },
    /// No source in the chain holds the page (EIO).
    #[error("no source holds page {idx} of {object}")]
    NoSource {
        /// The object version.
        object: String,
        /// The page.
        idx: u64,
    },
    /// The fetch budget was closed: the daemon is shutting down (EIO).
    #[error("fetch budget closed")]
    BudgetClosed,
}

impl From<ReadError> for FsError {
    fn from(e: ReadError) -> Self {
        let errno = match e {
            ReadError::WrongLength { .. } => libc::ESTALE,
            ReadError::NoSource { .. } | ReadError::BudgetClosed => libc::EIO,
        };
        FsError::new(errno, e.to_string())
    }
}

/// Why a streamed upload (parts sent while the file is written) could not complete. Each
/// is EIO: the commit then reports the file as not durable.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The file's staging is gone.
    #[error("streamed file has no staging")]
    NoStaging,
    /// The task feeding the upload ended before the commit.
    #[error("the upload task ended")]
    UploadTaskEnded,
    /// A part sent earlier failed, so the upload was abandoned.
    #[error("an earlier part of the streamed upload failed")]
    EarlierPartFailed,
    /// The file was cut below what the upload already sent.
    #[error("staged size {staged} is below the {sent} bytes already sent")]
    BelowSent {
        /// The staged size.
        staged: u64,
        /// Bytes sent in parts.
        sent: u64,
    },
}

impl From<CommitError> for FsError {
    fn from(e: CommitError) -> Self {
        FsError::new(libc::EIO, e.to_string())
    }
}

/// The errno of an OS error in `e`'s source chain, if it is one that passes through.
fn os_errno(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.raw_os_error().filter(|n| {
                [
                    libc::EINVAL,
                    libc::ENAMETOOLONG,
                    libc::ENOSPC,
                    libc::EDQUOT,
                    libc::EROFS,
                    libc::EACCES,
                    libc::EPERM,
                    libc::EFBIG,
                    libc::ENOTEMPTY,
                ]
                .contains(n)
            });
        }
        cur = err.source();
    }
    None
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> Self {
        FsError::new(
            e.raw_os_error().unwrap_or(libc::EIO),
            format!("local I/O: {e}"),
        )
    }
}

/// Runs `f` where blocking is allowed (`offload`: file I/O that may wait on the device
/// must not hold a runtime thread). A task that panicked, or was cancelled by a runtime
/// shutting down, is EIO naming `what`; this is the one place a blocking task's failure
/// is mapped.
pub async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, FsError> {
    crate::offload::run(f).await.map_err(|e| FsError {
        errno: libc::EIO,
        message: format!("{what}: the blocking task failed: {e}"),
        level: Level::ERROR,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alluxio_metaserver::InodeNo;

    #[test]
    fn meta_errno_table() {
        let i = InodeNo(2);
        let table = [
            (MetaError::NotFound("x".into()), libc::ENOENT),
            (MetaError::AlreadyExists("x".into()), libc::EEXIST),
            (MetaError::NotADirectory(i), libc::ENOTDIR),
            (MetaError::IsADirectory(i), libc::EISDIR),
            (MetaError::DirectoryNotEmpty(i), libc::ENOTEMPTY),
            (MetaError::NameTooLong(300), libc::ENAMETOOLONG),
            (MetaError::InvalidArgument("x".into()), libc::EINVAL),
            (MetaError::Unloaded(i), libc::EIO),
            (MetaError::Unsupported("x".into()), libc::EOPNOTSUPP),
            (MetaError::NotPermitted("x".into()), libc::EPERM),
            (MetaError::NoAttribute("x".into()), libc::ENODATA),
            (MetaError::TooManyLinks(i), libc::EMLINK),
            (MetaError::Busy("/s3".into()), libc::EBUSY),
            (MetaError::VersionMismatch(i), libc::ESTALE),
            (MetaError::Storage("x".into()), libc::EIO),
            (MetaError::Corrupt("x".into()), libc::EIO),
        ];
        for (e, errno) in table {
            assert_eq!(FsError::from(e.clone()).errno(), errno, "{e:?}");
        }
    }

    #[test]
    fn ufs_errno_table() {
        use opendal::ErrorKind as K;
        let table = [
            (K::NotFound, libc::ENOENT),
            (K::AlreadyExists, libc::EEXIST),
            (K::PermissionDenied, libc::EACCES),
            (K::IsADirectory, libc::EISDIR),
            (K::NotADirectory, libc::ENOTDIR),
            (K::ConditionNotMatch, libc::ESTALE),
            (K::Unsupported, libc::EOPNOTSUPP),
            (K::Unexpected, libc::EIO),
            (K::RateLimited, libc::EIO),
            (K::ConfigInvalid, libc::EIO),
        ];
        for (kind, errno) in table {
            let e = UfsError::new("read", "a/b", opendal::Error::new(kind, "test"));
            assert_eq!(FsError::from(e).errno(), errno, "{kind:?}");
        }
    }

    #[test]
    fn os_errors_inside_ufs_errors_pass_through() {
        let io = std::io::Error::from_raw_os_error(libc::ENAMETOOLONG);
        let e = opendal::Error::new(opendal::ErrorKind::Unexpected, "delete").set_source(io);
        assert_eq!(
            FsError::from(UfsError::new("delete", "k", e)).errno(),
            libc::ENAMETOOLONG
        );
        let io = std::io::Error::from_raw_os_error(libc::EBADMSG);
        let e = opendal::Error::new(opendal::ErrorKind::Unexpected, "read").set_source(io);
        assert_eq!(
            FsError::from(UfsError::new("read", "k", e)).errno(),
            libc::EIO
        );
    }

    #[test]
    fn io_errors_keep_their_errno() {
        let e = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(FsError::from(e).errno(), libc::ENOSPC);
    }
}
