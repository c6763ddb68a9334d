//! Tests that mount through the kernel. Each test mounts in-process over a fresh UFS (a
//! temp directory, or a fresh bucket on the S3 server the test script starts), uses plain
//! `std::fs` calls on the mountpoint, and unmounts on every exit path (`Mount`'s Drop).
//! Per-test time limits come from `.config/nextest.toml`. What the kernel does not
//! decide is tested without it, in the `vfs` test target (`tests/vfs`).

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on failure by design"
)]

mod harness;
#[path = "../common/model.rs"]
mod model;

mod dirs;
mod errors;
mod names;
mod nodes;
mod reads;
mod reftest;
mod sync;
mod writes;
