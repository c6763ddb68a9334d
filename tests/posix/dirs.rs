//! Directory listing through the mount: a large directory (several readdir calls with
//! offsets) and a nested tree.

use std::collections::BTreeSet;
use std::path::Path;

use crate::backend_tests;
use crate::harness::{Backend, Mount, MountDirs, TestUfs, data};

fn fuse_readdir_1000_entries(b: Backend) {
    let ufs = TestUfs::new(b);
    let mut want = BTreeSet::new();
    for i in 0..1000 {
        let name = format!("entry-{i:04}-{}", "x".repeat(i % 40));
        ufs.put(&format!("big/{name}"), &[i as u8]);
        want.insert(name);
    }
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);
    let got: BTreeSet<String> = std::fs::read_dir(m.p("big"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(got, want);
    // A second listing is answered from the namespace.
    let lists = m.counter("ufs_lists");
    assert_eq!(std::fs::read_dir(m.p("big")).unwrap().count(), 1000);
    assert_eq!(m.counter("ufs_lists"), lists);
    assert_eq!(
        std::fs::read(m.p("big/entry-0007-xxxxxxx")).unwrap(),
        vec![7u8]
    );
}

fn walk(root: &Path, rel: &str, out: &mut BTreeSet<(String, u64)>) {
    for e in std::fs::read_dir(root.join(rel)).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        let r = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let md = e.metadata().unwrap();
        if md.is_dir() {
            out.insert((format!("{r}/"), 0));
            walk(root, &r, out);
        } else {
            out.insert((r, md.len()));
        }
    }
}

fn fuse_nested_tree(b: Backend) {
    let ufs = TestUfs::new(b);
    let mut want = BTreeSet::new();
    for (i, p) in [
        "top",
        "a/one",
        "a/b/two",
        "a/b/c/three",
        "a/b/c/d/e/four",
        "z/y/x/five",
    ]
    .iter()
    .enumerate()
    {
        ufs.put(p, &data(i * 100 + 1, i as u64));
        want.insert((p.to_string(), (i * 100 + 1) as u64));
        let mut acc = String::new();
        let parts: Vec<&str> = p.split('/').collect();
        for d in &parts[..parts.len() - 1] {
            acc.push_str(d);
            acc.push('/');
            want.insert((acc.clone(), 0));
        }
    }
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);
    let mut got = BTreeSet::new();
    walk(&m.path, "", &mut got);
    assert_eq!(got, want);
}

backend_tests!(fuse_readdir_1000_entries, fuse_nested_tree);
