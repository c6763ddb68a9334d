//! Errors of the namespace. Variants name what happened; the errno decision is made once,
//! in the core library's `error.rs`.

use crate::record::{DecodeError, InodeNo};

/// An error from a namespace operation.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MetaError {
    /// The inode or name does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The name already exists.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A path component or target that must be a directory is not one.
    #[error("not a directory: inode {0}")]
    NotADirectory(InodeNo),
    /// The operation needs a non-directory but got a directory.
    #[error("is a directory: inode {0}")]
    IsADirectory(InodeNo),
    /// rmdir or rename onto a directory that still has entries.
    #[error("directory not empty: inode {0}")]
    DirectoryNotEmpty(InodeNo),
    /// A name longer than the limit.
    #[error("name too long ({0} bytes)")]
    NameTooLong(usize),
    /// An argument the namespace refuses (empty name, `.`/`..`, `/` or NUL, a rename of a
    /// directory into its own subtree).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The directory's children have not been loaded from the UFS in this epoch; the caller
    /// must list the UFS and call `load_dir` first.
    #[error("directory {0} is not loaded")]
    Unloaded(InodeNo),
    /// The operation is not permitted on this object (hard link to a directory).
    #[error("not permitted: {0}")]
    NotPermitted(String),
    /// The inode already has the most links allowed.
    #[error("too many links: inode {0}")]
    TooManyLinks(InodeNo),
    /// A conditional change found another version than expected.
    #[error("inode {0} changed meanwhile")]
    VersionMismatch(InodeNo),
    /// No such extended attribute.
    #[error("no such attribute: {0}")]
    NoAttribute(String),
    /// The node is a mount point (of the mount table); it cannot be removed or renamed.
    #[error("busy: {0} is a mount point")]
    Busy(String),
    /// A feature the namespace deliberately does not provide (yet).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The storage engine failed (I/O, commit).
    #[error("namespace storage: {0}")]
    Storage(String),
    /// A stored record could not be decoded.
    #[error("corrupt namespace record: {0}")]
    Corrupt(String),
}

impl From<redb::Error> for MetaError {
    fn from(e: redb::Error) -> Self {
        MetaError::Storage(e.to_string())
    }
}

macro_rules! redb_into_meta {
    ($($t:ty),*) => {$(
        impl From<$t> for MetaError {
            fn from(e: $t) -> Self { MetaError::Storage(e.to_string()) }
        }
    )*};
}
redb_into_meta!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<DecodeError> for MetaError {
    fn from(e: DecodeError) -> Self {
        MetaError::Corrupt(e.0)
    }
}
