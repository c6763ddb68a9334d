//! Every name the mount accepts maps to exactly its own key, byte for byte: names with
//! leading, trailing or only whitespace, tabs and newlines live next to their trimmed
//! twins, and create, read, rename, unlink and a remount each touch exactly their own
//! object (docs/SEMANTICS.md, "Names and keys").

use crate::harness::{Backend, Mount, MountDirs, TestUfs, write_closed};
use crate::{backend_tests, store_tests};

/// Names that differ from one another only by whitespace somewhere a normalizing client
/// would trim it, plus their plain twins.
const TWINS: &[&str] = &["a", " a", "a ", " a ", "  ", " ", "x", " x\u{3000}"];

/// Names with control characters: their own keys on a local directory; refused (EINVAL)
/// at create on the object stores and WebDAV (docs/SEMANTICS.md, "Refused").
const CONTROL: &[&str] = &["\t", "a\t", "\ta", "x\n", "\n", "x\r", "del\x7f", "\x01"];

fn content(name: &str) -> Vec<u8> {
    format!("content of {name:?}").into_bytes()
}

fn listed(m: &Mount, dir: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(m.p(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

fn fuse_names_map_to_exactly_their_own_keys(b: Backend) {
    let ufs = TestUfs::new(b);
    let dirs = MountDirs::new();
    let twins: Vec<&str> = match b {
        Backend::Fs => TWINS.iter().chain(CONTROL).copied().collect(),
        _ => TWINS.to_vec(),
    };
    let twins = &twins[..];
    {
        let m = Mount::new(&ufs, &dirs);
        for n in twins {
            write_closed(&m.p(n), &content(n)).unwrap();
        }
        if b != Backend::Fs {
            for n in CONTROL {
                let e = write_closed(&m.p(n), b"x").unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{n:?}: {e}");
                let e = std::fs::create_dir(m.p(n)).unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "mkdir {n:?}: {e}");
                let e = std::fs::rename(m.p("x"), m.p(n)).unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "rename to {n:?}: {e}");
            }
        }
        // A directory whose name has whitespace at both ends, with a file in it.
        std::fs::create_dir(m.p(" d ")).unwrap();
        std::fs::write(m.p(" d / f "), b"inner").unwrap();
        for n in twins {
            assert_eq!(
                ufs.get_exact(n),
                Some(content(n)),
                "object {n:?} (keys: {:?})",
                ufs.keys()
            );
            assert_eq!(std::fs::read(m.p(n)).unwrap(), content(n), "file {n:?}");
        }
        assert_eq!(ufs.get_exact(" d / f ").as_deref(), Some(&b"inner"[..]));
        let mut want: Vec<&str> = twins.to_vec();
        want.push(" d / f ");
        assert_eq!(
            ufs.keys(),
            sorted(&want),
            "one object per name, nothing else"
        );

        // A rename moves exactly its own object.
        std::fs::rename(m.p(" a"), m.p("b")).unwrap();
        assert_eq!(ufs.get_exact("b"), Some(content(" a")));
        assert_eq!(ufs.get_exact(" a"), None);
        assert_eq!(ufs.get_exact("a"), Some(content("a")), "the twin stays");
        // An unlink removes exactly its own object.
        std::fs::remove_file(m.p("a ")).unwrap();
        assert_eq!(ufs.get_exact("a "), None);
        assert_eq!(ufs.get_exact("a"), Some(content("a")), "the twin stays");
        std::fs::remove_file(m.p(" ")).unwrap();
        assert_eq!(ufs.get_exact(" "), None);
        assert_eq!(ufs.get_exact("  "), Some(content("  ")));
        // A directory with whitespace in its name moves with its contents.
        std::fs::rename(m.p(" d "), m.p("d2 ")).unwrap();
        assert_eq!(ufs.get_exact("d2 / f ").as_deref(), Some(&b"inner"[..]));
        assert_eq!(ufs.get_exact(" d / f "), None);
    }
    // After a remount, the mount and the store agree name by name.
    let m = Mount::new(&ufs, &dirs);
    let mut now: Vec<&str> = twins
        .iter()
        .copied()
        .filter(|n| ![" a", "a ", " "].contains(n))
        .collect();
    now.push("b");
    let mut with_dir = now.clone();
    with_dir.push("d2 ");
    assert_eq!(listed(&m, ""), sorted(&with_dir));
    for n in &now {
        let want = if *n == "b" { content(" a") } else { content(n) };
        assert_eq!(std::fs::read(m.p(n)).unwrap(), want, "file {n:?}");
    }
    assert_eq!(std::fs::read(m.p("d2 / f ")).unwrap(), b"inner");
    let mut keys = now.clone();
    keys.push("d2 / f ");
    assert_eq!(ufs.keys(), sorted(&keys));
}

backend_tests!(fuse_names_map_to_exactly_their_own_keys);
store_tests!(fuse_names_map_to_exactly_their_own_keys);

/// Keys other tools wrote that no POSIX name can carry (an empty component from `//`, a
/// leading `/`, a `.` or `..` component, NUL, a component over 255 bytes) are not shown and are never deleted behind the user's back:
/// rmdir of a directory whose prefix still holds them gets ENOTEMPTY. A rename of a
/// directory moves every key under it byte for byte, `//` ones included; one holding a
/// `.` or `..` component gets EOPNOTSUPP before anything moves (a request URL cannot name
/// such a key: the HTTP client resolves the segment, and would reach another key).
#[test]
fn fuse_s3_keys_that_are_not_paths_are_hidden_kept_and_moved() {
    let ufs = TestUfs::new(Backend::S3);
    let long = format!("h/{}", "x".repeat(300));
    let hidden = ["h/a//x", "h//double", long.as_str(), "h/nul\0x"];
    let dotted = ["d/a/../../escape", "d/./dot"];
    // A key with a leading `/` under the mount's root (`data//lead` in the bucket).
    let rooted = ["/lead"];
    for k in hidden.iter().chain(&dotted).chain(&rooted) {
        ufs.put_exact(k, k.as_bytes());
    }
    ufs.put_exact("h/ok", b"ok");
    ufs.put_exact("d/ok", b"ok");
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);
    assert_eq!(listed(&m, "h"), sorted(&["a", "ok"]));
    assert_eq!(listed(&m, "h/a"), Vec::<String>::new());
    assert_eq!(listed(&m, ""), sorted(&["d", "h"]));
    assert_eq!(listed(&m, "d"), sorted(&["a", "ok"]));
    let e = std::fs::remove_dir(m.p("h/a")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY), "{e}");
    assert!(m.p("h/a").is_dir(), "still there");
    let mut all: Vec<&str> = hidden
        .iter()
        .chain(&dotted)
        .chain(&rooted)
        .copied()
        .collect();
    all.extend(["h/ok", "d/ok"]);
    assert_eq!(ufs.keys(), sorted(&all), "nothing deleted");

    let e = std::fs::rename(m.p("d"), m.p("d2")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "{e}");
    assert_eq!(ufs.keys(), sorted(&all), "nothing moved");
    assert_eq!(listed(&m, "d"), sorted(&["a", "ok"]));

    std::fs::rename(m.p("h"), m.p("moved")).unwrap();
    let mut from: Vec<&str> = hidden.to_vec();
    from.push("h/ok");
    let mut now: Vec<String> = from.iter().map(|k| k.replacen("h/", "moved/", 1)).collect();
    now.extend(dotted.iter().chain(&rooted).map(|k| k.to_string()));
    now.push("d/ok".into());
    let now: Vec<&str> = now.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        ufs.keys(),
        sorted(&now),
        "every key moved with its directory"
    );
    for k in &from {
        let to = k.replacen("h/", "moved/", 1);
        let want = if *k == "h/ok" {
            b"ok".to_vec()
        } else {
            k.as_bytes().to_vec()
        };
        assert_eq!(ufs.get_exact(&to), Some(want), "{to:?}");
    }
    assert_eq!(std::fs::read(m.p("moved/ok")).unwrap(), b"ok");
}

/// A local directory's entry whose name is not UTF-8 cannot be a key: the mount shows
/// nothing for it, and the directory holding it is not empty to rmdir.
#[test]
fn fuse_local_names_that_are_not_utf8_are_hidden_and_kept() {
    use std::os::unix::ffi::OsStrExt;
    let ufs = TestUfs::new(Backend::Fs);
    std::fs::create_dir(ufs.root().join("d")).unwrap();
    let bad = ufs
        .root()
        .join("d")
        .join(std::ffi::OsStr::from_bytes(b"bad\xff"));
    std::fs::write(&bad, b"kept").unwrap();
    ufs.put("d/ok", b"ok");
    let dirs = MountDirs::new();
    let m = Mount::new(&ufs, &dirs);
    assert_eq!(listed(&m, "d"), sorted(&["ok"]));
    std::fs::remove_file(m.p("d/ok")).unwrap();
    let e = std::fs::remove_dir(m.p("d")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY), "{e}");
    assert_eq!(std::fs::read(&bad).unwrap(), b"kept");
}
