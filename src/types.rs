//! Newtypes shared across modules. No logic lives here.

pub use alluxio_metaserver::{DirEntry, FileKind, InodeNo, InodeRecord, Ownership, ROOT_INO};

/// Size of one cache page. Reads are served and cached in pages of this size.
pub const PAGE_SIZE: u64 = 1 << 20;

/// An open-file handle number handed to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileHandle(pub u64);

/// Index of a page within a file (`offset / PAGE_SIZE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PageIdx(pub u64);

/// Nanoseconds since the Unix epoch for "now".
pub fn now_ns() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}
