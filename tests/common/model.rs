//! The reference model shared by the kernel and the vfs reference tests: random sequences
//! of namespace and data operations, applied to a plain directory on the local disk (the
//! reference) and to the filesystem under test, compared after every step by errno and by
//! the whole tree (kinds, sizes, bytes, link counts, symlink targets). Operations pick
//! their operands by index into the entries that exist at that step, so proptest's
//! shrinking keeps sequences meaningful.

#![allow(dead_code, reason = "each test target uses its own part of the model")]

use std::collections::BTreeMap;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use sha2::{Digest, Sha256};

pub const NAMES: [&str; 4] = ["a", "b", "c", "d"];

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

pub fn sha256(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

#[derive(Debug, Clone)]
pub enum Op {
    /// Creates or truncates a file with `len` bytes (O_CREAT|O_TRUNC|O_NOFOLLOW: onto a
    /// symlink, ELOOP).
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

pub fn op() -> impl Strategy<Value = Op> {
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
pub enum Node {
    File { size: u64, sha: String, nlink: u64 },
    Dir { nlink: u64 },
    Symlink { target: PathBuf },
}

pub type Tree = BTreeMap<String, Node>;

/// The tree below `root` on a local file system (or a mount), by relative path.
pub fn snapshot(root: &Path) -> Tree {
    fn walk(root: &Path, rel: &Path, out: &mut Tree) {
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

/// Paths in the reference tree, for picking operands.
pub struct Operands {
    /// Directories, with "" for the root.
    pub dirs: Vec<String>,
    pub files: Vec<String>,
    pub all: Vec<String>,
}

impl Operands {
    pub fn of(tree: &Tree) -> Self {
        let mut o = Self {
            dirs: vec![String::new()],
            files: Vec::new(),
            all: Vec::new(),
        };
        for (p, n) in tree {
            o.all.push(p.clone());
            match n {
                Node::Dir { .. } => o.dirs.push(p.clone()),
                Node::File { .. } => o.files.push(p.clone()),
                Node::Symlink { .. } => {}
            }
        }
        o
    }
}

pub fn pick(v: &[String], i: usize) -> Option<&String> {
    (!v.is_empty()).then(|| &v[i % v.len()])
}

pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// The operands of `op` resolved against `tree`, as paths: what both sides act on.
/// `None` when the tree has nothing to pick.
#[derive(Debug)]
pub enum Step {
    Create {
        path: String,
        bytes: Vec<u8>,
    },
    Write {
        path: String,
        offset: u64,
        bytes: Vec<u8>,
    },
    Truncate {
        path: String,
        len: u64,
    },
    Mkdir {
        path: String,
    },
    Unlink {
        path: String,
    },
    Rmdir {
        path: String,
    },
    Rename {
        from: String,
        to: String,
    },
    Link {
        from: String,
        to: String,
    },
    Symlink {
        path: String,
        target: String,
    },
}

impl Op {
    pub fn step(&self, tree: &Tree) -> Option<Step> {
        let o = Operands::of(tree);
        Some(match self {
            Op::Create {
                dir,
                name,
                len,
                seed,
            } => Step::Create {
                path: join(pick(&o.dirs, *dir)?, NAMES[*name]),
                bytes: data(*len, *seed),
            },
            Op::Write {
                file,
                offset,
                len,
                seed,
            } => Step::Write {
                path: pick(&o.files, *file)?.clone(),
                offset: *offset,
                bytes: data(*len, *seed),
            },
            Op::Truncate { file, len } => Step::Truncate {
                path: pick(&o.files, *file)?.clone(),
                len: *len,
            },
            Op::Mkdir { dir, name } => Step::Mkdir {
                path: join(pick(&o.dirs, *dir)?, NAMES[*name]),
            },
            Op::Unlink { entry } => Step::Unlink {
                path: pick(&o.all, *entry)?.clone(),
            },
            Op::Rmdir { dir } => Step::Rmdir {
                path: pick(&o.dirs[1..], *dir)?.clone(),
            },
            Op::Rename { entry, dir, name } => Step::Rename {
                from: pick(&o.all, *entry)?.clone(),
                to: join(pick(&o.dirs, *dir)?, NAMES[*name]),
            },
            Op::Link { file, dir, name } => Step::Link {
                from: pick(&o.files, *file)?.clone(),
                to: join(pick(&o.dirs, *dir)?, NAMES[*name]),
            },
            Op::Symlink { dir, name, target } => Step::Symlink {
                path: join(pick(&o.dirs, *dir)?, NAMES[*name]),
                target: pick(&o.all, *target)
                    .cloned()
                    .unwrap_or_else(|| "dangling".into()),
            },
        })
    }
}

/// Applies `step` under `root` with plain system calls: the errno (0 for success).
pub fn apply_local(root: &Path, step: &Step) -> i32 {
    let r = |p: &str| root.join(p);
    let open_write = |p: &str| {
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(r(p))
    };
    let res: std::io::Result<()> = match step {
        Step::Create { path, bytes } => std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(r(path))
            .and_then(|f| f.write_all_at(bytes, 0)),
        Step::Write {
            path,
            offset,
            bytes,
        } => open_write(path).and_then(|f| f.write_all_at(bytes, *offset)),
        Step::Truncate { path, len } => open_write(path).and_then(|f| f.set_len(*len)),
        Step::Mkdir { path } => std::fs::create_dir(r(path)),
        Step::Unlink { path } => std::fs::remove_file(r(path)),
        Step::Rmdir { path } => std::fs::remove_dir(r(path)),
        Step::Rename { from, to } => std::fs::rename(r(from), r(to)),
        Step::Link { from, to } => std::fs::hard_link(r(from), r(to)),
        Step::Symlink { path, target } => std::os::unix::fs::symlink(target, r(path)),
    };
    res.err()
        .map(|e| e.raw_os_error().unwrap_or(-1))
        .unwrap_or(0)
}
