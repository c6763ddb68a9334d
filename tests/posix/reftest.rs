//! Differential reference test: random sequences of namespace and data operations are
//! applied to an alluxio mount and to a plain directory on the local disk, and after every
//! step the result (errno) and the whole tree (kinds, sizes, bytes, link counts, symlink
//! targets) must be identical. Operations pick their operands by index into the entries
//! that exist at that step, so proptest's shrinking keeps sequences meaningful. A shrunk
//! failure becomes a named `regression_*` test below.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use crate::harness::{Backend, Mount, MountDirs, TestUfs, data, sha256};

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

#[derive(Debug, Clone)]
enum Op {
    Create {
        dir: usize,
        name: usize,
        len: usize,
        seed: u64,
    },
    Write {
        file: usize,
        offset: u64,
        len: usize,
        seed: u64,
    },
    Truncate {
        file: usize,
        len: u64,
    },
    Mkdir {
        dir: usize,
        name: usize,
    },
    Unlink {
        entry: usize,
    },
    Rmdir {
        dir: usize,
    },
    Rename {
        entry: usize,
        dir: usize,
        name: usize,
    },
    Link {
        file: usize,
        dir: usize,
        name: usize,
    },
    Symlink {
        dir: usize,
        name: usize,
        target: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let i = 0usize..16;
    prop_oneof![
        (i.clone(), 0..4usize, 0..70_000usize, any::<u64>()).prop_map(|(dir, name, len, seed)| {
            Op::Create {
                dir,
                name,
                len,
                seed,
            }
        }),
        (i.clone(), 0..3_000_000u64, 0..70_000usize, any::<u64>()).prop_map(
            |(file, offset, len, seed)| Op::Write {
                file,
                offset,
                len,
                seed
            }
        ),
        (i.clone(), 0..2_100_000u64).prop_map(|(file, len)| Op::Truncate { file, len }),
        (i.clone(), 0..4usize).prop_map(|(dir, name)| Op::Mkdir { dir, name }),
        i.clone().prop_map(|entry| Op::Unlink { entry }),
        i.clone().prop_map(|dir| Op::Rmdir { dir }),
        (i.clone(), i.clone(), 0..4usize).prop_map(|(entry, dir, name)| Op::Rename {
            entry,
            dir,
            name
        }),
        (i.clone(), i.clone(), 0..4usize).prop_map(|(file, dir, name)| Op::Link {
            file,
            dir,
            name
        }),
        (i.clone(), 0..4usize, i).prop_map(|(dir, name, target)| Op::Symlink { dir, name, target }),
    ]
}

#[derive(Debug, PartialEq, Eq)]
enum Node {
    File { size: u64, sha: String, nlink: u64 },
    Dir { nlink: u64 },
    Symlink { target: PathBuf },
}

/// The tree below `root`, by relative path.
fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<String, Node>) {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let r = rel.join(e.file_name());
            let p = root.join(&r);
            let md = std::fs::symlink_metadata(&p).unwrap();
            let key = r.to_string_lossy().into_owned();
            if md.file_type().is_symlink() {
                out.insert(
                    key,
                    Node::Symlink {
                        target: std::fs::read_link(&p).unwrap(),
                    },
                );
            } else if md.is_dir() {
                out.insert(key, Node::Dir { nlink: md.nlink() });
                walk(root, &r, out);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.insert(
                    key,
                    Node::File {
                        size: md.len(),
                        sha: sha256(&bytes),
                        nlink: md.nlink(),
                    },
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

/// Paths in the reference tree, for picking operands: directories (with "" for the root),
/// files, and all entries.
fn operands(tree: &BTreeMap<String, Node>) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut dirs = vec![String::new()];
    let mut files = Vec::new();
    let mut all = Vec::new();
    for (p, n) in tree {
        all.push(p.clone());
        match n {
            Node::Dir { .. } => dirs.push(p.clone()),
            Node::File { .. } => files.push(p.clone()),
            Node::Symlink { .. } => {}
        }
    }
    (dirs, files, all)
}

fn pick(v: &[String], i: usize) -> Option<&String> {
    (!v.is_empty()).then(|| &v[i % v.len()])
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Applies `op` under `root`, returning the errno (0 for success).
fn apply(root: &Path, op: &Op, tree: &BTreeMap<String, Node>) -> Option<i32> {
    let (dirs, files, all) = operands(tree);
    let r = |p: &str| root.join(p);
    let res: std::io::Result<()> = match op {
        Op::Create {
            dir,
            name,
            len,
            seed,
        } => {
            let p = join(pick(&dirs, *dir)?, NAMES[*name]);
            std::fs::write(r(&p), data(*len, *seed))
        }
        Op::Write {
            file,
            offset,
            len,
            seed,
        } => {
            let p = pick(&files, *file)?;
            std::fs::OpenOptions::new()
                .write(true)
                .open(r(p))
                .and_then(|f| f.write_all_at(&data(*len, *seed), *offset))
        }
        Op::Truncate { file, len } => {
            let p = pick(&files, *file)?;
            std::fs::OpenOptions::new()
                .write(true)
                .open(r(p))
                .and_then(|f| f.set_len(*len))
        }
        Op::Mkdir { dir, name } => std::fs::create_dir(r(&join(pick(&dirs, *dir)?, NAMES[*name]))),
        Op::Unlink { entry } => std::fs::remove_file(r(pick(&all, *entry)?)),
        Op::Rmdir { dir } => std::fs::remove_dir(r(pick(&dirs[1..], *dir)?)),
        Op::Rename { entry, dir, name } => {
            let from = pick(&all, *entry)?;
            std::fs::rename(r(from), r(&join(pick(&dirs, *dir)?, NAMES[*name])))
        }
        Op::Link { file, dir, name } => {
            let from = pick(&files, *file)?;
            std::fs::hard_link(r(from), r(&join(pick(&dirs, *dir)?, NAMES[*name])))
        }
        Op::Symlink { dir, name, target } => {
            let t = pick(&all, *target)
                .cloned()
                .unwrap_or_else(|| "dangling".into());
            std::os::unix::fs::symlink(t, r(&join(pick(&dirs, *dir)?, NAMES[*name])))
        }
    };
    Some(
        res.err()
            .map(|e| e.raw_os_error().unwrap_or(-1))
            .unwrap_or(0),
    )
}

/// Runs one sequence in fresh subdirectories of the mount and of the reference.
fn run(mount_root: &Path, ref_root: &Path, ops: &[Op]) -> Result<(), TestCaseError> {
    std::fs::create_dir(mount_root).unwrap();
    std::fs::create_dir(ref_root).unwrap();
    for (i, op) in ops.iter().enumerate() {
        let before = snapshot(ref_root);
        let want = apply(ref_root, op, &before);
        let got = apply(mount_root, op, &before);
        prop_assert_eq!(got, want, "errno of step {} {:?}", i, op);
        let (m, r) = (snapshot(mount_root), snapshot(ref_root));
        prop_assert_eq!(m, r, "tree after step {} {:?}", i, op);
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
