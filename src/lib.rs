//! alluxio core library: a FUSE-first POSIX caching filesystem over OpenDAL stores.
//!
//! Dependencies point one way: `fuse → vfs → meta · page_cache · ufs → types · error`.
//! `vfs` is the async core named after FUSE operations and never imports `fuser`; the
//! `fuse` adapter only converts types and blocks on `vfs` futures.

pub mod config;
pub mod control;
pub mod error;
pub mod fault;
pub mod fetch;
#[cfg(feature = "fuse")]
pub mod fuse;
pub mod holes;
pub mod meta;
pub mod metrics;
#[cfg(feature = "fuse")]
pub mod mount;
pub mod object;
pub mod offload;
pub mod page_cache;
pub mod peer;
pub mod prom;
pub mod types;
pub mod ufs;
pub mod vfs;
