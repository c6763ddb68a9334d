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

/// A listing hands the kernel each entry's attributes with it (READDIRPLUS), so `ls -l`
/// of 200 entries the kernel has never seen costs no lookup per entry, and the sizes it
/// shows are the objects'.
#[test]
fn fuse_listing_with_attributes_needs_no_lookup_per_entry() {
    use alluxio::config::FuseConfig;
    let ufs = TestUfs::new(Backend::Fs);
    for i in 0..200 {
        ufs.put(&format!("d/f{i:03}"), &vec![b'x'; i]);
    }
    let dirs = MountDirs::new();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let m = Mount::with_config(ufs.config(), &dirs, 64 << 20, FuseConfig::default(), |c| {
        c.metrics_listen = Some(addr)
    });
    let lookups = || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix("alluxio_fuse_op_duration_seconds_count{op=\"lookup\"} "))
            .map_or(0.0, |v| v.parse::<f64>().unwrap())
    };
    let before = lookups();
    let out = std::process::Command::new("timeout")
        .args(["30", "ls", "-ln"])
        .arg(m.p("d"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let sizes: Vec<u64> = text
        .lines()
        .skip(1) // "total N"
        .map(|l| l.split_whitespace().nth(4).unwrap().parse().unwrap())
        .collect();
    assert_eq!(sizes, (0..200).collect::<Vec<u64>>());
    let after = lookups();
    assert!(after - before <= 2.0, "{} lookups", after - before);
}
