//! Tests of the vfs with no kernel, no mount, no root and no server: `Vfs` over the
//! in-memory namespace and an OpenDAL UFS in this process (`harness`), called as the FUSE
//! adapter calls it. Faults are injected in the store (under the retry and timeout
//! layers) and in the chain of page sources, where they happen. Run as any user with
//! `cargo test -p alluxio --test vfs`.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on failure by design"
)]

mod harness;
#[path = "../common/model.rs"]
mod model;

mod fault_table;
mod faults;
mod lookups;
mod peers;
mod reftest;
mod sources;
mod tiers;
mod truncate;
mod versions;
mod xattrs;
