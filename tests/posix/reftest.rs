//! Differential reference test through the kernel: random sequences of namespace and
//! data operations (`tests/common/model.rs`) are applied to an alluxio mount and to a
//! plain directory on the local disk with the same system calls, and after every step the
//! result (errno) and the whole tree must be identical. A shrunk failure becomes a named
//! `regression_*` test below.

use std::path::Path;

use proptest::prelude::*;

use crate::harness::{Backend, Mount, MountDirs, TestUfs};
use crate::model::{Op, apply_local, op, snapshot};

/// Runs one sequence in fresh subdirectories of the mount and of the reference.
fn run(mount_root: &Path, ref_root: &Path, ops: &[Op]) -> Result<(), TestCaseError> {
    std::fs::create_dir(mount_root).unwrap();
    std::fs::create_dir(ref_root).unwrap();
    for (i, op) in ops.iter().enumerate() {
        let Some(step) = op.step(&snapshot(ref_root)) else {
            continue;
        };
        let want = apply_local(ref_root, &step);
        let got = apply_local(mount_root, &step);
        prop_assert_eq!(got, want, "errno of step {} {:?}", i, step);
        let (m, r) = (snapshot(mount_root), snapshot(ref_root));
        prop_assert_eq!(m, r, "tree after step {} {:?}", i, step);
    }
    Ok(())
}

fn reftest(b: Backend, cases: u32) {
    let ufs = TestUfs::new(b);
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);
    let reference = tempfile::tempdir().unwrap();
    let seq = std::cell::Cell::new(0u32);
    let cfg = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(cfg, |(ops in proptest::collection::vec(op(), 1..24))| {
        let n = seq.get();
        seq.set(n + 1);
        run(&m.p(&format!("case{n}")), &reference.path().join(format!("case{n}")), &ops)?;
    });
}

#[test]
fn reftest_fuse_against_local_disk_fs() {
    reftest(Backend::Fs, 48);
}

#[test]
fn reftest_fuse_against_local_disk_s3() {
    reftest(Backend::S3, 12);
}

/// Replays one fixed sequence (for shrunk failures).
fn regression(ops: &[Op]) {
    let ufs = TestUfs::new(Backend::Fs);
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);
    let reference = tempfile::tempdir().unwrap();
    run(&m.p("case"), &reference.path().join("case"), ops).unwrap();
}

#[test]
fn regression_write_past_eof_into_sparse_file() {
    regression(&[
        Op::Create {
            dir: 0,
            name: 0,
            len: 10,
            seed: 1,
        },
        Op::Write {
            file: 0,
            offset: 2_500_000,
            len: 100,
            seed: 2,
        },
        Op::Truncate {
            file: 0,
            len: 1_000_001,
        },
    ]);
}

#[test]
fn regression_rename_primary_link_then_unlink() {
    regression(&[
        Op::Create {
            dir: 0,
            name: 0,
            len: 5,
            seed: 1,
        },
        Op::Link {
            file: 0,
            dir: 0,
            name: 1,
        },
        Op::Rename {
            entry: 0,
            dir: 0,
            name: 2,
        },
        Op::Unlink { entry: 0 },
    ]);
}
