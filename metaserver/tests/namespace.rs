//! Namespace semantics, run against both stores.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on failure by design"
)]

use alluxio_metaserver::{
    FileKind, InodeNo, Lookup, MemoryStore, MetaError, Namespace, NamespaceStore, NewNode,
    Ownership, PENDING_PREFIX, ROOT_INO, RedbStore, SetAttr, UfsChild,
};

const OWN: Ownership = Ownership {
    uid: 7,
    gid: 8,
    file_mode: 0o644,
    dir_mode: 0o755,
};

fn file(name: &str, size: u64, version: &str) -> UfsChild {
    UfsChild {
        name: name.as_bytes().to_vec(),
        kind: FileKind::File,
        size,
        mtime_ns: 1_000,
        version: Some(version.into()),
    }
}

fn dir(name: &str) -> UfsChild {
    UfsChild {
        name: name.as_bytes().to_vec(),
        kind: FileKind::Dir,
        size: 0,
        mtime_ns: 0,
        version: None,
    }
}

fn found<S: NamespaceStore>(
    ns: &Namespace<S>,
    parent: InodeNo,
    name: &str,
) -> alluxio_metaserver::InodeRecord {
    match ns.lookup(parent, name.as_bytes()).unwrap() {
        Lookup::Found(r) | Lookup::Stale(r) => r,
        other => panic!("{name}: {other:?}"),
    }
}

fn semantics<S: NamespaceStore>(ns: Namespace<S>) {
    // Before loading, the root's children are unknown.
    assert_eq!(ns.lookup(ROOT_INO, b"a").unwrap(), Lookup::Unloaded);
    assert!(matches!(ns.list(ROOT_INO), Err(MetaError::Unloaded(_))));
    assert!(matches!(
        ns.create(
            ROOT_INO,
            b"x",
            NewNode {
                kind: FileKind::File,
                mode: 0o600,
                uid: 0,
                gid: 0,
                rdev: 0,
                target: vec![]
            },
            1
        ),
        Err(MetaError::Unloaded(_))
    ));
    ns.load_dir(
        ROOT_INO,
        vec![
            file("a", 5, "e1"),
            dir("d"),
            file("a", 9, "dup"),
            file("..", 1, "bad"),
        ],
        OWN,
        1,
    )
    .unwrap();
    let a = found(&ns, ROOT_INO, "a");
    assert_eq!((a.size, a.mode, a.uid, a.gid, a.nlink), (5, 0o644, 7, 8, 1));
    assert_eq!(a.version.as_deref(), Some("e1"));
    assert_eq!(ns.lookup(ROOT_INO, b"zz").unwrap(), Lookup::Missing);
    let d = found(&ns, ROOT_INO, "d");
    assert_eq!((d.kind, d.mode, d.nlink), (FileKind::Dir, 0o755, 2));
    assert_eq!(ns.get(ROOT_INO).unwrap().nlink, 3);
    assert_eq!(ns.list(ROOT_INO).unwrap().len(), 2);
    assert!(ns.needs_load(d.ino).unwrap());

    // Names.
    assert!(matches!(
        ns.lookup(ROOT_INO, b"a/b"),
        Err(MetaError::InvalidArgument(_))
    ));
    assert!(matches!(
        ns.lookup(ROOT_INO, &[b'x'; 256]),
        Err(MetaError::NameTooLong(256))
    ));
    assert!(matches!(
        ns.lookup(a.ino, b"x"),
        Err(MetaError::NotADirectory(_))
    ));

    // create / mkdir / EEXIST.
    assert!(matches!(
        ns.create(
            ROOT_INO,
            b"a",
            NewNode {
                kind: FileKind::File,
                mode: 0o600,
                uid: 0,
                gid: 0,
                rdev: 0,
                target: vec![]
            },
            2
        ),
        Err(MetaError::AlreadyExists(_))
    ));
    let n = ns
        .create(
            ROOT_INO,
            b"new",
            NewNode {
                kind: FileKind::File,
                mode: 0o100640,
                uid: 1,
                gid: 2,
                rdev: 0,
                target: vec![],
            },
            2,
        )
        .unwrap();
    assert_eq!((n.mode, n.size, n.version.clone()), (0o640, 0, None));
    ns.load_dir(d.ino, vec![], OWN, 3).unwrap();
    let sub = ns
        .create(
            d.ino,
            b"sub",
            NewNode {
                kind: FileKind::Dir,
                mode: 0o700,
                uid: 0,
                gid: 0,
                rdev: 0,
                target: vec![],
            },
            3,
        )
        .unwrap();
    assert_eq!(ns.get(d.ino).unwrap().nlink, 3);
    assert_eq!(
        ns.path(sub.ino).unwrap(),
        vec![b"d".to_vec(), b"sub".to_vec()]
    );
    assert!(ns.get(ROOT_INO).unwrap().mtime_ns >= 2);

    // rmdir rules.
    assert!(matches!(
        ns.rmdir(ROOT_INO, b"d", 4),
        Err(MetaError::DirectoryNotEmpty(_))
    ));
    assert!(matches!(
        ns.rmdir(ROOT_INO, b"a", 4),
        Err(MetaError::NotADirectory(_))
    ));
    assert!(matches!(
        ns.unlink(ROOT_INO, b"d", false, 4),
        Err(MetaError::IsADirectory(_))
    ));

    // rename rules.
    assert!(matches!(
        ns.rename(ROOT_INO, b"d", sub.ino, b"x", false, false, 5),
        Err(MetaError::InvalidArgument(_))
    ));
    assert!(matches!(
        ns.rename(ROOT_INO, b"a", ROOT_INO, b"d", false, false, 5),
        Err(MetaError::IsADirectory(_))
    ));
    assert!(matches!(
        ns.rename(ROOT_INO, b"d", ROOT_INO, b"a", false, false, 5),
        Err(MetaError::NotADirectory(_))
    ));
    assert!(matches!(
        ns.rename(ROOT_INO, b"new", ROOT_INO, b"a", true, false, 5),
        Err(MetaError::AlreadyExists(_))
    ));
    let replaced = ns
        .rename(ROOT_INO, b"new", ROOT_INO, b"a", false, false, 5)
        .unwrap()
        .unwrap();
    assert_eq!(replaced.ino, a.ino);
    assert!(matches!(ns.get(a.ino), Err(MetaError::NotFound(_))));
    assert_eq!(found(&ns, ROOT_INO, "a").ino, n.ino);
    ns.rename(ROOT_INO, b"a", sub.ino, b"moved", false, false, 6)
        .unwrap();
    assert_eq!(
        ns.path(n.ino).unwrap(),
        vec![b"d".to_vec(), b"sub".to_vec(), b"moved".to_vec()]
    );
    // Directory move between parents keeps nlink right.
    let e = ns
        .create(
            ROOT_INO,
            b"e",
            NewNode {
                kind: FileKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                rdev: 0,
                target: vec![],
            },
            7,
        )
        .unwrap();
    ns.rename(d.ino, b"sub", e.ino, b"sub2", false, false, 7)
        .unwrap();
    assert_eq!(ns.get(d.ino).unwrap().nlink, 2);
    assert_eq!(ns.get(e.ino).unwrap().nlink, 3);

    // unlink and rmdir.
    ns.unlink(sub.ino, b"moved", false, 8).unwrap();
    assert!(matches!(ns.get(n.ino), Err(MetaError::NotFound(_))));
    ns.rmdir(e.ino, b"sub2", 8).unwrap();
    assert_eq!(ns.get(e.ino).unwrap().nlink, 2);

    // set_attr.
    let r = ns
        .set_attr(
            d.ino,
            SetAttr {
                mode: Some(0o40711),
                uid: Some(3),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!((r.mode, r.uid), (0o711, 3));
    assert!(matches!(
        ns.set_attr(
            d.ino,
            SetAttr {
                size: Some(1),
                ..Default::default()
            }
        ),
        Err(MetaError::IsADirectory(_))
    ));
}

#[test]
fn semantics_memory() {
    semantics(Namespace::open(MemoryStore::new(), OWN, 0).unwrap());
}

#[test]
fn semantics_redb() {
    let tmp = tempfile::tempdir().unwrap();
    semantics(
        Namespace::open(
            RedbStore::open(&tmp.path().join("ns.redb")).unwrap(),
            OWN,
            0,
        )
        .unwrap(),
    );
}

#[test]
fn reopen_keeps_inodes_and_reconciles_with_a_new_listing() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ns.redb");
    let (a, d, local) = {
        let ns = Namespace::open(RedbStore::open(&path).unwrap(), OWN, 0).unwrap();
        ns.load_dir(
            ROOT_INO,
            vec![file("a", 5, "e1"), file("gone", 1, "g"), dir("d")],
            OWN,
            1,
        )
        .unwrap();
        let local = ns
            .create(
                ROOT_INO,
                b"local",
                NewNode {
                    kind: FileKind::File,
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    rdev: 0,
                    target: vec![],
                },
                1,
            )
            .unwrap();
        // Created, then uploaded, but the commit that named the object's version was
        // lost with the daemon: the store is ahead of the namespace.
        ns.create(ROOT_INO, b"uploaded", node(FileKind::File), 1)
            .unwrap();
        // Written under ASYNC_THROUGH: its bytes are in a journal, not in the store.
        let p = ns
            .create(ROOT_INO, b"pending", node(FileKind::File), 1)
            .unwrap();
        ns.set_attr(
            p.ino,
            SetAttr {
                size: Some(3),
                version: Some(Some(format!("{PENDING_PREFIX}9.9"))),
                ..Default::default()
            },
        )
        .unwrap();
        (found(&ns, ROOT_INO, "a"), found(&ns, ROOT_INO, "d"), local)
    };
    let ns = Namespace::open(RedbStore::open(&path).unwrap(), OWN, 0).unwrap();
    // A new epoch: the root is listed again; existing names keep their inode numbers.
    assert!(ns.needs_load(ROOT_INO).unwrap());
    // A name known from the last epoch is answered as stale until the directory is
    // listed: the store may be ahead of it.
    match ns.lookup(ROOT_INO, b"a").unwrap() {
        Lookup::Stale(r) => assert_eq!(r.ino, a.ino),
        other => panic!("a before the load: {other:?}"),
    }
    ns.load_dir(
        ROOT_INO,
        vec![
            file("a", 7, "e2"),
            dir("d"),
            file("b", 1, "b"),
            file("uploaded", 9, "u1"),
            file("pending", 5, "older"),
        ],
        OWN,
        2,
    )
    .unwrap();
    let up = found(&ns, ROOT_INO, "uploaded");
    assert_eq!(
        (up.size, up.version.as_deref()),
        (9, Some("u1")),
        "a file with no version takes the object the listing shows"
    );
    let p = found(&ns, ROOT_INO, "pending");
    assert_eq!(
        (p.size, p.version),
        (3, Some(format!("{PENDING_PREFIX}9.9"))),
        "a pending upload is not replaced by the store's older object"
    );
    let a2 = found(&ns, ROOT_INO, "a");
    assert_eq!(
        (a2.ino, a2.size, a2.version.as_deref()),
        (a.ino, 7, Some("e2"))
    );
    assert_eq!(found(&ns, ROOT_INO, "d").ino, d.ino);
    assert_eq!(ns.lookup(ROOT_INO, b"gone").unwrap(), Lookup::Missing);
    // A file created through the mount but never uploaded survives the reconcile.
    assert_eq!(found(&ns, ROOT_INO, "local").ino, local.ino);
    let b = found(&ns, ROOT_INO, "b");
    assert!(b.ino.0 > local.ino.0, "inode numbers are never reused");
    // Loading twice in one epoch is a no-op.
    ns.load_dir(ROOT_INO, vec![], OWN, 3).unwrap();
    assert_eq!(ns.list(ROOT_INO).unwrap().len(), 6);
}

#[test]
fn kind_change_underneath_replaces_the_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ns.redb");
    {
        let ns = Namespace::open(RedbStore::open(&path).unwrap(), OWN, 0).unwrap();
        ns.load_dir(ROOT_INO, vec![dir("x")], OWN, 1).unwrap();
        let x = found(&ns, ROOT_INO, "x");
        ns.load_dir(x.ino, vec![file("inner", 1, "i")], OWN, 1)
            .unwrap();
    }
    let ns = Namespace::open(RedbStore::open(&path).unwrap(), OWN, 0).unwrap();
    ns.load_dir(ROOT_INO, vec![file("x", 3, "f")], OWN, 2)
        .unwrap();
    let x = found(&ns, ROOT_INO, "x");
    assert_eq!((x.kind, x.size), (FileKind::File, 3));
    assert_eq!(ns.get(ROOT_INO).unwrap().nlink, 2);
}

fn node(kind: FileKind) -> NewNode {
    NewNode {
        kind,
        mode: 0o644,
        uid: 1,
        gid: 2,
        rdev: 0,
        target: vec![],
    }
}

#[test]
fn links_promote_the_next_name_and_orphans_survive_until_released() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ns.redb");
    let ino = {
        let ns = Namespace::open(RedbStore::open(&path).unwrap(), OWN, 0).unwrap();
        ns.load_dir(ROOT_INO, vec![], OWN, 1).unwrap();
        let d = ns.create(ROOT_INO, b"d", node(FileKind::Dir), 1).unwrap();
        let f = ns.create(ROOT_INO, b"f", node(FileKind::File), 1).unwrap();
        let l = ns.link(f.ino, d.ino, b"g", 2).unwrap();
        assert_eq!(
            (l.nlink, l.links.clone()),
            (2, vec![(d.ino, b"g".to_vec())])
        );
        assert!(matches!(
            ns.link(d.ino, ROOT_INO, b"x", 2),
            Err(MetaError::NotPermitted(_))
        ));
        assert!(matches!(
            ns.link(f.ino, ROOT_INO, b"f", 2),
            Err(MetaError::AlreadyExists(_))
        ));
        // Unlinking the primary promotes the other name; the path follows it.
        let after = ns.unlink(ROOT_INO, b"f", false, 3).unwrap();
        assert_eq!(
            (after.nlink, after.parent, after.name.clone()),
            (1, d.ino, b"g".to_vec())
        );
        assert_eq!(ns.path(f.ino).unwrap(), vec![b"d".to_vec(), b"g".to_vec()]);
        // The last name goes while open: an orphan with no path.
        let gone = ns.unlink(d.ino, b"g", true, 4).unwrap();
        assert_eq!(gone.nlink, 0);
        assert_eq!(ns.get(f.ino).unwrap().nlink, 0);
        assert!(matches!(ns.path(f.ino), Err(MetaError::NotFound(_))));
        f.ino
    };
    // A crash before the last close: the next open drops the orphan.
    let ns = Namespace::open(RedbStore::open(&path).unwrap(), OWN, 0).unwrap();
    assert!(matches!(ns.get(ino), Err(MetaError::NotFound(_))));
}

#[test]
fn xattrs_and_exchange() {
    let ns = Namespace::open(MemoryStore::new(), OWN, 0).unwrap();
    ns.load_dir(ROOT_INO, vec![], OWN, 1).unwrap();
    let a = ns.create(ROOT_INO, b"a", node(FileKind::File), 1).unwrap();
    let d = ns.create(ROOT_INO, b"d", node(FileKind::Dir), 1).unwrap();
    let s = ns
        .create(
            d.ino,
            b"s",
            NewNode {
                target: b"t".to_vec(),
                ..node(FileKind::Symlink)
            },
            1,
        )
        .unwrap();
    assert_eq!((s.size, s.target.clone()), (1, b"t".to_vec()));

    use alluxio_metaserver::XattrMode;
    ns.set_xattr(a.ino, b"user.k", b"v", XattrMode::Create, 5)
        .unwrap();
    assert!(matches!(
        ns.set_xattr(a.ino, b"user.k", b"w", XattrMode::Create, 6),
        Err(MetaError::AlreadyExists(_))
    ));
    assert!(matches!(
        ns.set_xattr(a.ino, b"user.z", b"w", XattrMode::Replace, 6),
        Err(MetaError::NoAttribute(_))
    ));
    assert_eq!(ns.get_xattr(a.ino, b"user.k").unwrap(), b"v");
    assert_eq!(ns.list_xattr(a.ino).unwrap(), vec![b"user.k".to_vec()]);
    assert_eq!(ns.get(a.ino).unwrap().ctime_ns, 5);
    ns.remove_xattr(a.ino, b"user.k", 7).unwrap();
    assert!(matches!(
        ns.get_xattr(a.ino, b"user.k"),
        Err(MetaError::NoAttribute(_))
    ));

    // Exchange a file in the root with a directory: names swap, parents' nlink follow.
    let root_nlink = ns.get(ROOT_INO).unwrap().nlink;
    ns.exchange(ROOT_INO, b"a", d.ino, b"s", 8).unwrap();
    assert!(matches!(ns.lookup(ROOT_INO, b"a").unwrap(), Lookup::Found(r) if r.ino == s.ino));
    assert!(matches!(ns.lookup(d.ino, b"s").unwrap(), Lookup::Found(r) if r.ino == a.ino));
    assert_eq!(ns.path(a.ino).unwrap(), vec![b"d".to_vec(), b"s".to_vec()]);
    ns.exchange(ROOT_INO, b"d", d.ino, b"s", 9).unwrap_err();
    let e = ns.create(ROOT_INO, b"e", node(FileKind::Dir), 9).unwrap();
    ns.exchange(ROOT_INO, b"a", d.ino, b"s", 9).unwrap();
    ns.exchange(ROOT_INO, b"a", ROOT_INO, b"e", 10).unwrap();
    assert_eq!(ns.get(ROOT_INO).unwrap().nlink, root_nlink + 1);
    assert!(matches!(ns.lookup(ROOT_INO, b"a").unwrap(), Lookup::Found(r) if r.ino == e.ino));
}

fn entry(path: &str, uri: &str) -> alluxio_metaserver::MountEntry {
    alluxio_metaserver::MountEntry {
        path: path.into(),
        uri: uri.into(),
        options: Default::default(),
        readonly: false,
        sync: None,
    }
}

#[test]
fn mount_table_persists_and_guards_its_mount_points() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("ns.redb");
    {
        let ns = Namespace::open(RedbStore::open(&db).unwrap(), OWN, 0).unwrap();
        assert!(ns.mounts().unwrap().is_empty());
        ns.add_mount(entry("/", "s3://root"), 1).unwrap();
        ns.add_mount(entry("/", "s3://root"), 1).unwrap(); // the same again: no-op
        assert!(matches!(
            ns.add_mount(entry("/", "s3://other"), 1),
            Err(MetaError::AlreadyExists(_))
        ));
        ns.add_mount(entry("/s3", "s3://b/p"), 2).unwrap();
        for bad in ["s3", "/a/../b", "/a//b", "/x/y"] {
            assert!(ns.add_mount(entry(bad, "memory://"), 2).is_err(), "{bad}");
        }
        ns.add_mount(entry("/s3/inner", "memory://"), 2).unwrap();
        ns.sync().unwrap();
    }
    let ns = Namespace::open(RedbStore::open(&db).unwrap(), OWN, 5).unwrap();
    let paths: Vec<String> = ns.mounts().unwrap().into_iter().map(|m| m.path).collect();
    assert_eq!(paths, ["/", "/s3", "/s3/inner"], "persisted, ordered");

    // The mount point is a directory the root store's listing neither removes nor
    // shadows, and it cannot be removed or renamed away.
    let mp = found(&ns, ROOT_INO, "s3");
    assert_eq!(mp.kind, FileKind::Dir);
    assert!(alluxio_metaserver::is_mount_point(&mp));
    ns.load_dir(ROOT_INO, vec![file("s3", 3, "e:1"), dir("d")], OWN, 6)
        .unwrap();
    assert_eq!(found(&ns, ROOT_INO, "s3").ino, mp.ino);
    assert!(matches!(
        ns.rmdir(ROOT_INO, b"s3", 7),
        Err(MetaError::Busy(_))
    ));
    assert!(matches!(
        ns.rename(ROOT_INO, b"s3", ROOT_INO, b"t", false, false, 7),
        Err(MetaError::Busy(_))
    ));
    assert!(matches!(
        ns.rename(ROOT_INO, b"d", ROOT_INO, b"s3", false, false, 7),
        Err(MetaError::Busy(_))
    ));

    // Unmount: never the root, never with mounts below.
    assert!(matches!(ns.remove_mount("/", 8), Err(MetaError::Busy(_))));
    assert!(matches!(ns.remove_mount("/s3", 8), Err(MetaError::Busy(_))));
    ns.remove_mount("/s3/inner", 8).unwrap();
    ns.remove_mount("/s3", 8).unwrap();
    assert!(matches!(
        ns.remove_mount("/s3", 8),
        Err(MetaError::NotFound(_))
    ));
    assert_eq!(ns.lookup(ROOT_INO, b"s3").unwrap(), Lookup::Missing);
    assert_eq!(ns.mounts().unwrap().len(), 1);
}

/// A listing taken while the namespace changes under it (an upload landing, a commit, an
/// unlink) never undoes those changes: the reconcile leaves alone every node changed, and
/// every name removed, after the listing's token.
#[test]
fn a_listing_never_undoes_changes_made_while_it_was_taken() {
    let ns = Namespace::open(MemoryStore::default(), OWN, 0).unwrap();
    ns.load_dir(
        ROOT_INO,
        vec![file("old", 5, "v1"), file("doomed", 1, "d")],
        OWN,
        1,
    )
    .unwrap();
    let old = found(&ns, ROOT_INO, "old");
    let doomed = found(&ns, ROOT_INO, "doomed");
    let token = ns.begin_listing();
    // While the store is being listed: a new file is created and its upload lands, an
    // existing file gets a new version, and another is unlinked.
    let fresh = ns
        .create(ROOT_INO, b"fresh", node(FileKind::File), 2)
        .unwrap();
    let commit = |_ino: InodeNo, size, v: &str| SetAttr {
        size: Some(size),
        version: Some(Some(v.into())),
        ..Default::default()
    };
    ns.set_attr(fresh.ino, commit(fresh.ino, 7, "f1")).unwrap();
    ns.set_attr(old.ino, commit(old.ino, 9, "v2")).unwrap();
    ns.unlink(ROOT_INO, b"doomed", false, 2).unwrap();
    // The listing saw none of that.
    ns.apply_listing(
        ROOT_INO,
        vec![file("old", 5, "v1"), file("doomed", 1, "d")],
        OWN,
        3,
        Some(token),
        true,
    )
    .unwrap();
    let f = found(&ns, ROOT_INO, "fresh");
    assert_eq!((f.size, f.version.as_deref()), (7, Some("f1")), "kept");
    let o = found(&ns, ROOT_INO, "old");
    assert_eq!(
        (o.size, o.version.as_deref()),
        (9, Some("v2")),
        "not rolled back"
    );
    assert_eq!(
        ns.lookup(ROOT_INO, b"doomed").unwrap(),
        Lookup::Missing,
        "not brought back (inode {} was unlinked)",
        doomed.ino
    );
    // A listing taken after those changes applies as usual.
    ns.apply_listing(
        ROOT_INO,
        vec![file("old", 4, "v3")],
        OWN,
        4,
        Some(ns.begin_listing()),
        true,
    )
    .unwrap();
    assert_eq!(found(&ns, ROOT_INO, "old").version.as_deref(), Some("v3"));
    assert_eq!(ns.lookup(ROOT_INO, b"fresh").unwrap(), Lookup::Missing);
}

/// Members live while their lease runs, by the server's clock; the version changes
/// exactly when the live set does; expired entries are dropped at the next registration;
/// a leave takes effect at once.
#[test]
fn members_live_for_their_lease_and_the_version_follows_the_set() {
    use alluxio_metaserver::ClusterMember;
    let ns = Namespace::open(MemoryStore::new(), OWN, 0).unwrap();
    let m = |a: &str, w: u64| ClusterMember {
        addr: a.into(),
        weight: w,
    };
    const S: i64 = 1_000_000_000;
    let empty = ns.members(0).unwrap();
    assert!(empty.members.is_empty());
    let v1 = ns.register_member(m("n1:1", 10), 5_000, 0).unwrap();
    let v2 = ns.register_member(m("n2:1", 10), 5_000, S).unwrap();
    assert_ne!(v1, v2);
    assert_ne!(empty.version, v1);
    let live = ns.members(2 * S).unwrap();
    assert_eq!(live.version, v2);
    assert_eq!(live.members, [m("n1:1", 10), m("n2:1", 10)]);
    // A renewal that changes nothing keeps the version.
    assert_eq!(ns.register_member(m("n2:1", 10), 5_000, 3 * S).unwrap(), v2);
    // n1's lease (to 5 s) has run out at 6 s; n2's (to 8 s) has not.
    let later = ns.members(6 * S).unwrap();
    assert_eq!(later.members, [m("n2:1", 10)]);
    assert_ne!(later.version, v2);
    // The same set gets the same version however it came about.
    ns.leave_member("n2:1").unwrap();
    ns.leave_member("gone:1").unwrap();
    assert_eq!(ns.members(6 * S).unwrap(), empty);
    assert!(ns.register_member(m("", 1), 5_000, 0).is_err());
}

/// `fsck` finds every kind of damage a crash or a bug could leave, repairs what loses
/// nothing, and leaves a namespace that checks clean (run on both stores).
fn fsck_finds_and_repairs<S: NamespaceStore>(store: S) {
    use alluxio_metaserver::fsck::check;
    use std::sync::Arc;
    let store = Arc::new(store);
    let ns = Namespace::open(store.clone(), OWN, 0).unwrap();
    ns.load_dir(ROOT_INO, vec![file("o", 5, "e:o")], OWN, 1)
        .unwrap();
    let d = ns.create(ROOT_INO, b"d", node(FileKind::Dir), 1).unwrap();
    let f = ns.create(d.ino, b"f", node(FileKind::File), 1).unwrap();
    let g = ns.create(d.ino, b"g", node(FileKind::File), 1).unwrap();
    ns.link(f.ino, ROOT_INO, b"h", 2).unwrap();
    let clean = check(&*store, false).unwrap();
    assert!(clean.problems.is_empty(), "{:?}", clean.problems);
    assert_eq!(clean.inodes, 5);
    // The file with an object in the store is the one the store check looks at.
    assert_eq!(
        clean
            .files
            .iter()
            .map(|f| f.path.clone())
            .collect::<Vec<_>>(),
        vec![vec![b"o".to_vec()]]
    );
    let o = match ns.lookup(ROOT_INO, b"o").unwrap() {
        Lookup::Found(r) => r,
        other => panic!("{other:?}"),
    };
    // Damage: an entry to nowhere, a wrong link count, a lost name (g's entry gone, so g
    // is unnamed and not an orphan), an orphan record of nothing, a wrong directory count.
    store
        .write(|t| {
            t.put_dentry(d.ino, b"ghost", InodeNo(999))?;
            let mut fr = t.inode(f.ino)?.unwrap();
            fr.nlink = 7;
            t.put_inode(&fr)?;
            t.remove_dentry(d.ino, b"g")?;
            t.set_counter("orphan:4242", 1)?;
            let mut dr = t.inode(d.ino)?.unwrap();
            dr.nlink = 9;
            t.put_inode(&dr)?;
            let mut or = t.inode(o.ino)?.unwrap();
            or.name = b"elsewhere".to_vec();
            t.put_inode(&or)
        })
        .unwrap();
    let found = check(&*store, false).unwrap();
    let text = found.problems.join("\n");
    for want in [
        "\"ghost\"",
        "link count 7, but 2 names",
        &format!("inode {} (\"g\") has no name", g.ino),
        "orphan record of inode 4242",
        "link count 9, not 2",
        "primary link \"elsewhere\"",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    assert_eq!(found.problems.len(), 6, "{text}");
    assert!(found.repaired.is_empty());
    let fixed = check(&*store, true).unwrap();
    assert_eq!(fixed.repaired.len(), 6, "{:?}", fixed.repaired);
    let again = check(&*store, false).unwrap();
    assert!(again.problems.is_empty(), "{:?}", again.problems);
    assert_eq!(ns.get(f.ino).unwrap().nlink, 2);
    assert_eq!(ns.get(d.ino).unwrap().nlink, 2);
    assert!(ns.get(g.ino).is_err(), "the unnamed inode was dropped");
    assert_eq!(ns.path(o.ino).unwrap(), vec![b"o".to_vec()]);
    // What a repair must not drop: a file whose bytes are only in a journal.
    let p = ns.create(d.ino, b"p", node(FileKind::File), 3).unwrap();
    store
        .write(|t| {
            let mut pr = t.inode(p.ino)?.unwrap();
            pr.version = Some(format!("{PENDING_PREFIX}{}.1", p.ino.0));
            t.put_inode(&pr)?;
            t.remove_dentry(d.ino, b"p")
        })
        .unwrap();
    let r = check(&*store, true).unwrap();
    assert!(
        r.problems.join("\n").contains("only in a journal"),
        "{:?}",
        r.problems
    );
    assert!(ns.get(p.ino).is_ok(), "journaled bytes were dropped");
}

#[test]
fn fsck_memory() {
    fsck_finds_and_repairs(MemoryStore::new());
}

#[test]
fn fsck_redb() {
    let tmp = tempfile::tempdir().unwrap();
    fsck_finds_and_repairs(RedbStore::open(&tmp.path().join("ns.redb")).unwrap());
}

/// The child side of `commits_survive_a_kill_of_the_process`: makes namespace changes under
/// `$ALLUXIO_REDO_CRASH_DIR`, then dies without dropping anything (no durable commit).
#[test]
#[ignore = "run as a child process by commits_survive_a_kill_of_the_process"]
fn redo_crash_child() {
    let Ok(dir) = std::env::var("ALLUXIO_REDO_CRASH_DIR") else {
        return;
    };
    let path = std::path::Path::new(&dir).join("ns.redb");
    let ns = Namespace::open(RedbStore::open(&path).unwrap(), OWN, 0).unwrap();
    ns.load_dir(ROOT_INO, vec![], OWN, 1).unwrap();
    let d = ns.create(ROOT_INO, b"d", node(FileKind::Dir), 1).unwrap();
    for i in 0..300 {
        ns.create(d.ino, format!("f{i}").as_bytes(), node(FileKind::File), 1)
            .unwrap();
    }
    let f0 = found(&ns, d.ino, "f0");
    ns.set_attr(
        f0.ino,
        SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
    )
    .unwrap();
    ns.set_xattr(
        f0.ino,
        b"user.k",
        b"v",
        alluxio_metaserver::XattrMode::Any,
        1,
    )
    .unwrap();
    ns.rename(d.ino, b"f1", ROOT_INO, b"moved", false, false, 1)
        .unwrap();
    ns.unlink(d.ino, b"f2", false, 1).unwrap();
    std::process::abort();
}

#[test]
fn commits_survive_a_kill_of_the_process() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "redo_crash_child", "--ignored", "--nocapture"])
        .env("ALLUXIO_REDO_CRASH_DIR", tmp.path())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the child was to die: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = tmp.path().join("ns.redb");
    assert!(
        std::fs::metadata(path.with_extension("redo"))
            .unwrap()
            .len()
            > 0,
        "the child died with its changes in the redo log only"
    );
    let ns = Namespace::open(RedbStore::open(&path).unwrap(), OWN, 0).unwrap();
    let d = found(&ns, ROOT_INO, "d");
    for i in (0..300).filter(|i| ![1, 2].contains(i)) {
        found(&ns, d.ino, &format!("f{i}"));
    }
    let f0 = found(&ns, d.ino, "f0");
    assert_eq!(f0.mode & 0o777, 0o600);
    assert_eq!(ns.get_xattr(f0.ino, b"user.k").unwrap(), b"v");
    found(&ns, ROOT_INO, "moved");
    for gone in [&b"f1"[..], b"f2"] {
        assert!(matches!(
            ns.lookup(d.ino, gone).unwrap(),
            Lookup::Missing | Lookup::Unloaded
        ));
    }
    drop(ns);
    assert_eq!(
        std::fs::metadata(path.with_extension("redo"))
            .unwrap()
            .len(),
        0,
        "replayed, made durable, and the log emptied"
    );
}

mod hostile {
    //! Calls a client may send, whatever they hold: every one goes through the wire form
    //! (JSON) and `dispatch` as the metaserver runs it. None may panic, and whatever each
    //! answers, the namespace afterwards checks clean (`fsck`: entries, link counts,
    //! primary links, orphans, reachability).

    use super::OWN;
    use alluxio_metaserver::rpc::{Call, Op, WIRE_VERSION, dispatch};
    use alluxio_metaserver::{
        FileKind, InodeNo, MemoryStore, Namespace, NewNode, SetAttr, UfsChild, XattrMode,
    };
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => prop_oneof![Just(b"a".to_vec()), Just(b"b".to_vec()), Just(b"c".to_vec())],
            1 => prop_oneof![
                Just(Vec::new()),
                Just(b".".to_vec()),
                Just(b"..".to_vec()),
                Just(b"x/y".to_vec()),
                Just(b"n\0l".to_vec()),
                Just(vec![b'l'; 300]),
            ],
            1 => vec(any::<u8>(), 1..5),
        ]
    }

    fn ino() -> impl Strategy<Value = InodeNo> {
        prop_oneof![
            8 => (1u64..6).prop_map(InodeNo),
            2 => (0u64..12).prop_map(InodeNo),
            1 => Just(InodeNo(u64::MAX)),
        ]
    }

    fn kind() -> impl Strategy<Value = FileKind> {
        prop_oneof![
            Just(FileKind::File),
            Just(FileKind::Dir),
            Just(FileKind::Symlink),
            Just(FileKind::Fifo)
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        let listing = vec(
            (
                name(),
                prop_oneof![Just(FileKind::File), Just(FileKind::Dir)],
                0u64..9,
                proptest::option::of("[a-z0-9]{1,3}"),
            ),
            0..5,
        )
        .prop_map(|l| {
            l.into_iter()
                .map(|(name, kind, size, version)| UfsChild {
                    name,
                    kind,
                    size,
                    mtime_ns: 1,
                    version: (kind == FileKind::File).then_some(version).flatten(),
                })
                .collect::<Vec<_>>()
        });
        prop_oneof![
            (ino(), name()).prop_map(|(parent, name)| Op::Lookup { parent, name }),
            (ino(), name(), kind(), any::<u32>()).prop_map(|(parent, name, kind, mode)| {
                Op::Create {
                    parent,
                    name,
                    node: NewNode {
                        kind,
                        mode,
                        uid: 0,
                        gid: 0,
                        rdev: 0,
                        target: b"t".to_vec(),
                    },
                }
            }),
            (ino(), ino(), name()).prop_map(|(ino, newparent, newname)| Op::Link {
                ino,
                newparent,
                newname
            }),
            (ino(), name(), any::<bool>()).prop_map(|(parent, name, keep_open)| Op::Unlink {
                parent,
                name,
                keep_open
            }),
            (ino(), name()).prop_map(|(parent, name)| Op::Rmdir { parent, name }),
            (ino(), name(), ino(), name(), any::<bool>(), any::<bool>()).prop_map(
                |(parent, name, newparent, newname, noreplace, keep_open)| Op::Rename {
                    parent,
                    name,
                    newparent,
                    newname,
                    noreplace,
                    keep_open,
                }
            ),
            (ino(), name(), ino(), name()).prop_map(|(parent, name, newparent, newname)| {
                Op::Exchange {
                    parent,
                    name,
                    newparent,
                    newname,
                }
            }),
            (
                ino(),
                proptest::option::of(0u64..1 << 40),
                proptest::option::of(any::<u32>()),
                proptest::option::of(proptest::option::of("[a-z:0-9.]{0,8}")),
            )
                .prop_map(|(ino, size, mode, version)| Op::SetAttr {
                    ino,
                    attr: SetAttr {
                        size,
                        mode,
                        version,
                        ..Default::default()
                    },
                }),
            (ino(), name(), vec(any::<u8>(), 0..9)).prop_map(|(ino, name, value)| {
                Op::SetXattr {
                    ino,
                    name,
                    value,
                    mode: XattrMode::Any,
                }
            }),
            (ino(), name()).prop_map(|(ino, name)| Op::RemoveXattr { ino, name }),
            (ino(), listing).prop_map(|(dir, listing)| Op::LoadDir {
                dir,
                listing,
                defaults: OWN,
                token: None,
            }),
            ino().prop_map(|ino| Op::RemoveOrphan { ino }),
            ino().prop_map(|dir| Op::List { dir }),
            ino().prop_map(|ino| Op::Path { ino }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn hostile_calls_never_panic_and_leave_the_namespace_consistent(ops in vec(op(), 1..40)) {
            let ns = Namespace::open(MemoryStore::new(), OWN, 0).unwrap();
            // The root listed (empty), as a daemon's first call does; anything after that
            // is the client's.
            ns.load_dir(alluxio_metaserver::ROOT_INO, vec![], OWN, 1).unwrap();
            for op in ops {
                let wire = serde_json::to_vec(&Call { version: WIRE_VERSION, op }).unwrap();
                let call: Call = serde_json::from_slice(&wire).unwrap();
                let _ = dispatch(&ns, call.op, 1);
            }
            let report = ns.fsck(false).unwrap();
            prop_assert!(report.problems.is_empty(), "{:?}", report.problems);
        }
    }
}
