//! End-to-end tests of the `alluxio` binary: the real CLI mounts through the kernel, is
//! read with `sha256sum`, reports counters through `alluxio fuse stats`, and unmounts by
//! command and by signal. Bad input must give one line on stderr, a non-zero exit, no
//! panic and no mount left behind.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on failure by design"
)]

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn sha256sum(root: &Path, files: &[String]) -> String {
    let o = Command::new("sha256sum")
        .current_dir(root)
        .args(files)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn write_tree(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for (i, (name, len)) in [
        ("empty", 0usize),
        ("one", 1),
        ("d/page-minus", (1 << 20) - 1),
        ("d/page", 1 << 20),
        ("d/e/page-plus", (1 << 20) + 1),
        ("d/e/big", 33 << 20),
    ]
    .iter()
    .enumerate()
    {
        let p = root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D ^ i as u64;
        let bytes: Vec<u8> = (0..*len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(&p, bytes).unwrap();
        files.push(name.to_string());
    }
    files
}

#[test]
fn cli_mount_sha256_stats_write_unmount() {
    let mut env = Env::new();
    let files = write_tree(&env.ufs());
    env.mount(&[]);
    let want = sha256sum(&env.ufs(), &files);
    assert_eq!(sha256sum(&env.mnt(), &files), want);
    let cold = env.stats();
    let cold_reads = cold["counters"]["ufs_reads"].as_u64().unwrap();
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(env.ufs().join(f)).unwrap().len())
        .sum();
    assert!(cold_reads > 0, "{cold}");
    assert!(
        cold["counters"]["bytes_from_ufs"].as_u64().unwrap() >= total,
        "every byte came from the store: {cold}"
    );
    assert_eq!(sha256sum(&env.mnt(), &files), want);
    let warm = env.stats();
    assert_eq!(
        warm["counters"]["ufs_reads"].as_u64().unwrap(),
        cold_reads,
        "{warm}"
    );
    assert_eq!(
        warm["counters"]["ufs_requests"], cold["counters"]["ufs_requests"],
        "{warm}"
    );

    // A file written through the mount is a plain file in the UFS, byte for byte.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(env.mnt().join("d/written"), &data).unwrap();
    assert_eq!(std::fs::read(env.ufs().join("d/written")).unwrap(), data);

    let o = env.run(&["fuse", "unmount", env.mnt().to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(env.wait().success());
    assert_eq!(mount_type(&env.mnt()), None);
}

#[test]
fn cli_signals_unmount_cleanly() {
    for sig in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ] {
        let mut env = Env::new();
        std::fs::write(env.ufs().join("f"), b"x").unwrap();
        env.mount(&["-o", "uid=1234,file_mode=640"]);
        {
            use std::os::unix::fs::MetadataExt;
            let md = std::fs::metadata(env.mnt().join("f")).unwrap();
            assert_eq!((md.uid(), md.mode() & 0o7777), (1234, 0o640));
        }
        let pid = nix::unistd::Pid::from_raw(env.child.as_ref().unwrap().id() as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
        assert!(env.wait().success(), "{sig}");
        assert_eq!(mount_type(&env.mnt()), None, "{sig}");
    }
}

/// SIGTERM with files open: the mount leaves the namespace at once, the open files go on
/// working (a read handle reads, a write handle's bytes reach the store at its close), and
/// the daemon exits cleanly after the last close.
#[test]
fn cli_sigterm_with_files_open_detaches_and_serves_them_to_the_end() {
    use std::io::{Read, Write};
    let mut env = Env::new();
    std::fs::write(env.ufs().join("r"), b"read me").unwrap();
    env.mount(&[]);
    let mut r = std::fs::File::open(env.mnt().join("r")).unwrap();
    let mut head = [0u8; 4];
    r.read_exact(&mut head).unwrap();
    let mut w = std::fs::File::create(env.mnt().join("w")).unwrap();
    w.write_all(b"written before the signal").unwrap();
    let pid = nix::unistd::Pid::from_raw(env.child.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(
        within(Duration::from_secs(10), || mount_type(&env.mnt()).is_none()),
        "still mounted after SIGTERM"
    );
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b" me");
    w.write_all(b", and after").unwrap();
    drop(w);
    drop(r);
    assert!(env.wait().success());
    assert_eq!(
        std::fs::read(env.ufs().join("w")).unwrap(),
        b"written before the signal, and after"
    );
}

/// A daemon killed with SIGKILL leaves a mount that answers ENOTCONN; mounting again on
/// the same path detaches it (no `umount -l`).
#[test]
fn cli_a_new_mount_clears_the_dead_mount_of_a_killed_daemon() {
    let mut env = Env::new();
    std::fs::write(env.ufs().join("f"), b"x").unwrap();
    env.mount(&[]);
    let pid = nix::unistd::Pid::from_raw(env.child.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = env.wait();
    assert_eq!(
        std::fs::metadata(env.mnt()).unwrap_err().raw_os_error(),
        Some(libc::ENOTCONN)
    );
    // (The dead mount has our type too, so the helper's wait for it ends at once.)
    env.mount(&[]);
    assert!(
        within(Duration::from_secs(20), || std::fs::read(
            env.mnt().join("f")
        )
        .is_ok_and(|b| b == b"x")),
        "the new mount did not replace the dead one"
    );
    let o = env.run(&["fuse", "unmount", env.mnt().to_str().unwrap()]);
    assert!(o.status.success());
    assert!(env.wait().success());
    assert_eq!(mount_type(&env.mnt()), None, "the dead mount is gone too");
}

#[test]
fn cli_bad_input_is_one_line_and_leaves_no_mount() {
    let env = Env::new();
    let mnt = env.mnt();
    let ufs = env.ufs();
    let (m, u) = (mnt.to_str().unwrap(), ufs.to_str().unwrap());
    let missing = env.base.path().join("nope");
    refused(
        &env,
        &["fuse", "mount", missing.to_str().unwrap(), "--ufs", u],
        "mountpoint",
    );
    refused(
        &env,
        &["fuse", "mount", m, "--ufs", "::not a uri"],
        "cannot parse UFS URI",
    );
    refused(
        &env,
        &["fuse", "mount", m, "--ufs", "/no/such/ufs/dir"],
        "does not exist",
    );
    refused(
        &env,
        &[
            "fuse",
            "mount",
            m,
            "--ufs",
            "s3://bucket/p",
            "-o",
            "endpoint=http://127.0.0.1:1,access_key_id=a,secret_access_key=b",
        ],
        "cannot reach UFS",
    );
    refused(
        &env,
        &[
            "fuse",
            "mount",
            m,
            "--ufs",
            u,
            "--cache-dir",
            "/proc/alluxio-cannot-exist",
        ],
        "cache directory",
    );
    let file = env.base.path().join("plainfile");
    std::fs::write(&file, b"").unwrap();
    let under_file = file.join("state");
    refused(
        &env,
        &[
            "fuse",
            "mount",
            m,
            "--ufs",
            u,
            "--state-dir",
            under_file.to_str().unwrap(),
        ],
        "state directory",
    );
    refused(
        &env,
        &["fuse", "mount", m, "--ufs", u, "-o", "frobnicate"],
        "unknown mount option",
    );
    refused(
        &env,
        &["fuse", "mount", m, "--ufs", u, "--cache-size", "lots"],
        "cache-size",
    );
    refused(&env, &["fuse", "unmount", m], "not a FUSE mount");
    refused(&env, &["fuse", "stats", m], "no alluxio daemon");
}

/// THROUGH: uploaded before close returns, and the written pages are not cached.
#[test]
fn cli_through_uploads_without_caching() {
    let mut env = Env::new();
    env.mount(&["-o", "write_type=THROUGH"]);
    let data = pattern(2_500_000, 3);
    std::fs::write(env.mnt().join("f"), &data).unwrap();
    assert_eq!(std::fs::read(env.ufs().join("f")).unwrap(), data);
    let before = env.stats()["counters"]["bytes_from_ufs"].as_u64().unwrap();
    assert_eq!(std::fs::read(env.mnt().join("f")).unwrap(), data);
    let after = env.stats()["counters"]["bytes_from_ufs"].as_u64().unwrap();
    assert!(
        after >= before + data.len() as u64,
        "THROUGH must not have cached the pages ({before} -> {after} bytes from the store)"
    );
}

/// Runs mount(8) or umount(8) as an operator would: absolute path, and mount(8)'s
/// environment has no PATH to lean on.
fn mount8(prog: &str, args: &[&str]) -> Output {
    let mut c = Command::new(prog);
    c.args(args).env_remove("PATH").stdin(Stdio::null());
    with_timeout(c, Duration::from_secs(120))
}

/// Waits until the daemon that served `log` has logged its exit after an unmount.
fn wait_logged_exit(log: &Path) {
    let start = Instant::now();
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains("unmounted; exiting")
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "daemon did not exit after umount"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `mount -t fuse.alluxio SOURCE DIR -o ...` and a `fuse.alluxio` fstab line mount through
/// the helper that scripts/install.sh links as /sbin/mount.fuse.alluxio: it backgrounds
/// once the mount is live, takes mount(8)'s generic options and no PATH, and `umount`
/// ends the daemon. A mount that cannot work fails with mount(8)'s exit code 32 and the
/// daemon's error, and leaves nothing mounted.
#[test]
fn cli_mount_t_fuse_alluxio_and_fstab() {
    assert!(
        Path::new("/sbin/mount.fuse.alluxio").exists(),
        "/sbin/mount.fuse.alluxio is missing: run scripts/install.sh (scripts/ci.sh does)"
    );
    let env = Env::new();
    std::fs::write(env.ufs().join("hello.txt"), b"hello\n").unwrap();
    let (m, u) = (env.mnt(), env.ufs());
    let (m, u) = (m.to_str().unwrap(), u.to_str().unwrap());
    let b = env.base.path();
    let log = b.join("daemon.log");
    let opts = format!(
        "cache_dir={},state_dir={},log={},mem_budget=256MiB",
        b.join("cache").display(),
        b.join("state").display(),
        log.display()
    );

    let o = mount8("/usr/bin/mount", &["-t", "fuse.alluxio", u, m, "-o", &opts]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(mount_type(&env.mnt()).as_deref(), Some("fuse.alluxio"));
    assert_eq!(
        std::fs::read(env.mnt().join("hello.txt")).unwrap(),
        b"hello\n"
    );
    std::fs::write(env.mnt().join("new.txt"), b"written").unwrap();
    assert_eq!(
        std::fs::read(env.ufs().join("new.txt")).unwrap(),
        b"written"
    );
    let o = mount8("/usr/bin/umount", &[m]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(mount_type(&env.mnt()), None);
    wait_logged_exit(&log);

    // The same through an fstab line (an alternative fstab file, so the host's is left
    // alone), with the options fstab lines usually carry.
    let fstab = b.join("fstab");
    std::fs::write(
        &fstab,
        format!("{u} {m} fuse.alluxio defaults,_netdev,nofail,noatime,{opts} 0 0\n"),
    )
    .unwrap();
    let _ = std::fs::remove_file(&log);
    let o = mount8("/usr/bin/mount", &["-T", fstab.to_str().unwrap(), m]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(mount_type(&env.mnt()).as_deref(), Some("fuse.alluxio"));
    assert_eq!(
        std::fs::read(env.mnt().join("new.txt")).unwrap(),
        b"written"
    );
    let o = mount8("/usr/bin/umount", &[m]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_logged_exit(&log);

    // A source that cannot be mounted: exit 32, the daemon's reason, nothing mounted.
    let missing = b.join("no-such-dir");
    let o = mount8(
        "/usr/bin/mount",
        &[
            "-t",
            "fuse.alluxio",
            missing.to_str().unwrap(),
            m,
            "-o",
            &opts,
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(32), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert_eq!(mount_type(&env.mnt()), None);
}

/// Two FUSE daemons on two mountpoints share one namespace through a metaserver: a file
/// written and closed through one is read whole through the other, and a rename or an
/// overwrite in one is seen in the other within the kernel TTL (1 s by default, see
/// docs/SEMANTICS.md).
#[test]
fn cli_metaserver_two_daemons_share_one_namespace() {
    let ms = Metaserver::start("two-daemons-token");
    let args = ms.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut a = Env::new();
    let mut b = Env::new();
    a.mount(&args);
    b.mount_on(Some(&a.ufs()), &args);
    let (ma, mb) = (a.mnt(), b.mnt());

    let d = pattern((5 << 20) + 7, 1);
    std::fs::write(ma.join("f.bin"), &d).unwrap();
    assert_eq!(std::fs::read(mb.join("f.bin")).unwrap(), d);
    assert_eq!(
        std::fs::read(a.ufs().join("f.bin")).unwrap(),
        d,
        "1:1 in the UFS"
    );

    let ttl = Duration::from_millis(1500); // the 1 s TTL, plus scheduling slack
    std::fs::create_dir(ma.join("d")).unwrap();
    std::fs::rename(ma.join("f.bin"), ma.join("d/g.bin")).unwrap();
    assert!(
        within(ttl, || mb.join("d/g.bin").exists()
            && !mb.join("f.bin").exists()),
        "rename not seen through the other mount"
    );
    assert_eq!(std::fs::read(mb.join("d/g.bin")).unwrap(), d);

    std::fs::write(mb.join("d/g.bin"), b"second version").unwrap();
    assert!(
        within(ttl, || std::fs::read(ma.join("d/g.bin")).ok().as_deref()
            == Some(&b"second version"[..])),
        "overwrite not seen through the other mount"
    );

    // A third daemon through mount(8): `alluxio://HOST:PORT/` with the store in ufs=.
    let c = Env::new();
    let log = c.base.path().join("daemon.log");
    let opts = format!(
        "ufs={},token_file={},cache_dir={},log={}",
        a.ufs().display(),
        ms.token_file.display(),
        c.base.path().join("cache").display(),
        log.display()
    );
    let src = format!("alluxio://{}/", ms.addr);
    let mc = c.mnt();
    let o = mount8(
        "/usr/bin/mount",
        &[
            "-t",
            "fuse.alluxio",
            &src,
            mc.to_str().unwrap(),
            "-o",
            &opts,
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(mc.join("d/g.bin")).unwrap(),
        b"second version"
    );
    let o = mount8("/usr/bin/umount", &[mc.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_logged_exit(&log);
}

/// Sends one gRPC request frame over raw HTTP/2 and returns the grpc-status it gets. The
/// stream is ended after the frame only if the frame is whole (its length prefix matches),
/// so a lying prefix must be refused from the prefix alone.
async fn raw_grpc(addr: &str, auth: Option<&str>, frame: bytes::Bytes) -> Option<String> {
    let whole = frame.len() >= 5
        && u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize == frame.len() - 5;
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (client, conn) = h2::client::handshake(tcp).await.ok()?;
    tokio::spawn(conn);
    let mut client = client.ready().await.ok()?;
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/alluxio.meta.v1.Meta/Call"))
        .header("content-type", "application/grpc+json")
        .header("te", "trailers");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let (resp, mut send) = client.send_request(req.body(()).unwrap(), false).ok()?;
    let _ = send.send_data(frame, whole);
    let resp = resp.await.ok()?;
    if let Some(s) = resp.headers().get("grpc-status") {
        return Some(s.to_str().ok()?.to_string());
    }
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        let _ = chunk.ok()?;
    }
    let trailers = body.trailers().await.ok()??;
    Some(trailers.get("grpc-status")?.to_str().ok()?.to_string())
}

fn grpc_frame(len_prefix: u32, body: &[u8]) -> bytes::Bytes {
    let mut f = vec![0u8];
    f.extend_from_slice(&len_prefix.to_be_bytes());
    f.extend_from_slice(body);
    f.into()
}

/// The metaserver's port refuses a wrong or missing token, answers a malformed message and
/// a 1 GiB length prefix with errors, shrugs off garbage bytes, and keeps serving.
#[test]
fn cli_metaserver_rejects_bad_tokens_and_survives_garbage() {
    use std::io::{Read, Write};
    let token = "the-right-token";
    let mut ms = Metaserver::start(token);
    let env = Env::new();
    let (m, u) = (env.mnt(), env.ufs());
    let (m, u) = (m.to_str().unwrap(), u.to_str().unwrap());

    // A daemon with the wrong token: one clear line, nothing mounted.
    let bad = env.base.path().join("bad-token");
    std::fs::write(&bad, "not-the-token").unwrap();
    let o = env.run(&[
        "fuse",
        "mount",
        m,
        "--ufs",
        u,
        "--metaserver",
        &ms.addr,
        "--token-file",
        bad.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("wrong token"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(mount_type(&env.mnt()), None);

    // Raw gRPC: no token, a wrong one, a malformed message, a 1 GiB length prefix.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let right = format!("Bearer {token}");
    let call = br#"{"version":1,"op":"InodesAllocated"}"#;
    let limit = Duration::from_secs(20);
    let status = |auth: Option<&str>, frame: bytes::Bytes| {
        rt.block_on(async { tokio::time::timeout(limit, raw_grpc(&ms.addr, auth, frame)).await })
            .expect("the server answers in time")
    };
    let framed = grpc_frame(call.len() as u32, call);
    assert_eq!(status(Some(&right), framed.clone()).as_deref(), Some("0"));
    assert_eq!(status(None, framed.clone()).as_deref(), Some("16")); // UNAUTHENTICATED
    assert_eq!(status(Some("Bearer nope"), framed).as_deref(), Some("16"));
    // Without the token, even a huge message is refused from the headers alone.
    assert_eq!(
        status(Some("Bearer nope"), grpc_frame(1 << 30, b"x")).as_deref(),
        Some("16")
    );
    let junk = b"{not json";
    assert_eq!(
        status(Some(&right), grpc_frame(junk.len() as u32, junk)).as_deref(),
        Some("3") // INVALID_ARGUMENT
    );
    let huge = status(Some(&right), grpc_frame(1 << 30, b"{\"version\":1"));
    assert!(
        matches!(huge.as_deref(), Some(s) if s != "0"),
        "1 GiB prefix got {huge:?}"
    );

    // Garbage bytes straight on the port: that connection fails, nothing else.
    let mut s = std::net::TcpStream::connect(&ms.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(&pattern(1 << 20, 9));
    let _ = s.read(&mut [0u8; 1024]);
    drop(s);

    assert!(ms.alive(), "the metaserver died");
    let mut env = env;
    let args = ms.args();
    env.mount(&args.iter().map(String::as_str).collect::<Vec<_>>());
    std::fs::write(env.mnt().join("still.txt"), b"serving").unwrap();
    assert_eq!(
        std::fs::read(env.ufs().join("still.txt")).unwrap(),
        b"serving"
    );
}

/// `alluxio fs load-metadata PATH` makes a file changed in the store by another tool read
/// new through the mount (the default sync policy never lists a directory twice); a path
/// outside any alluxio mount is refused with exit code 1.
#[test]
fn cli_fs_load_metadata_shows_changes_made_underneath() {
    let mut env = Env::new();
    std::fs::create_dir_all(env.ufs().join("d")).unwrap();
    std::fs::write(env.ufs().join("d/f"), b"old content").unwrap();
    env.mount(&[]);
    let f = env.mnt().join("d/f");
    assert_eq!(std::fs::read(&f).unwrap(), b"old content");
    std::fs::write(env.ufs().join("d/f"), b"new, longer content").unwrap();
    std::fs::write(env.ufs().join("d/g"), b"g").unwrap();
    assert!(!env.mnt().join("d/g").exists(), "listed once, by policy");

    let o = env.run(&["fs", "load-metadata", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("1 directory listed"));
    assert!(within(Duration::from_secs(3), || {
        std::fs::read(&f).ok().as_deref() == Some(&b"new, longer content"[..])
    }));
    assert_eq!(std::fs::read(env.mnt().join("d/g")).unwrap(), b"g");

    let o = env.run(&[
        "fs",
        "load-metadata",
        "-R",
        env.mnt().to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["listed"], 2, "{v}");

    let o = env.run(&["fs", "load-metadata", env.ufs().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not inside an alluxio mount"));
}

/// One namespace over two stores: a metaserver's mount table holds a local directory at
/// `/` and an S3 bucket at `/s3`. A daemon started without --ufs serves both: `find` lists
/// both, `cp` works both ways, and the bytes really are in each store (a second daemon
/// with an empty cache reads them). Renames across stores get EXDEV, the mount point
/// cannot be moved, and `alluxio fs unmount` takes the store away from running daemons.
#[test]
fn cli_metaserver_mount_table_two_stores() {
    let bucket = format!("mt{}", std::process::id());
    let endpoint = s3_bucket(&bucket);
    let ms = Metaserver::start("mount-table-token");
    let msargs = ms.args();
    let msargs: Vec<&str> = msargs.iter().map(String::as_str).collect();
    let mut a = Env::new();
    let fs = |env: &Env, args: &[&str]| {
        let mut all = vec!["fs"];
        all.extend_from_slice(&msargs);
        all.extend_from_slice(args);
        env.run(&all)
    };
    let ufs = a.ufs();
    std::fs::create_dir_all(ufs.join("dir")).unwrap();
    std::fs::write(ufs.join("dir/local.txt"), b"from the local store").unwrap();

    let o = fs(&a, &["mount", "/", ufs.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s3_opts = s3_opts(&endpoint);
    let uri = format!("s3://{bucket}/pre");
    let o = fs(&a, &["mount", "/s3", &uri, "-o", &s3_opts]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = fs(&a, &["mount"]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("/s3") && table.contains(&uri), "{table}");
    assert!(
        !table.contains("s3cret"),
        "credentials must not be printed: {table}"
    );
    let o = fs(&a, &["mount", "/s3", "memory://"]);
    assert_eq!(o.status.code(), Some(1), "a second store at /s3");
    let ro = a.base.path().join("ro-store");
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("keep.txt"), b"read me").unwrap();
    let o = fs(
        &a,
        &[
            "mount",
            "/ro",
            ro.to_str().unwrap(),
            "--readonly",
            "--sync",
            "always",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = a.run(&["fs", "mount"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--metaserver"));

    a.mount_on(None, &msargs);
    let m = a.mnt();
    let big = pattern((3 << 20) + 5, 7);
    std::fs::write(m.join("s3/big.bin"), &big).unwrap();
    std::fs::copy(m.join("dir/local.txt"), m.join("s3/copied.txt")).unwrap();
    std::fs::copy(m.join("s3/big.bin"), m.join("dir/big.bin")).unwrap();
    assert_eq!(
        std::fs::read(ufs.join("dir/big.bin")).unwrap(),
        big,
        "1:1 in the local store"
    );

    let o = Command::new("find").arg(&m).output().unwrap();
    let listed = String::from_utf8_lossy(&o.stdout);
    for p in [
        "dir/local.txt",
        "dir/big.bin",
        "s3/big.bin",
        "s3/copied.txt",
    ] {
        assert!(
            listed.contains(&format!("{}/{p}", m.display())),
            "find lacks {p}: {listed}"
        );
    }

    assert_eq!(std::fs::read(m.join("ro/keep.txt")).unwrap(), b"read me");
    for err in [
        std::fs::write(m.join("ro/new.txt"), b"x").unwrap_err(),
        std::fs::remove_file(m.join("ro/keep.txt")).unwrap_err(),
        std::fs::create_dir(m.join("ro/d")).unwrap_err(),
    ] {
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    }
    assert_eq!(
        std::fs::read_dir(&ro).unwrap().count(),
        1,
        "the read-only store is untouched"
    );
    // Per-mount sync policy: /ro lists again on lookups (`always`); the root store keeps
    // the daemon's default (`never`).
    std::fs::write(ro.join("later.txt"), b"added underneath").unwrap();
    std::fs::write(ufs.join("dir/later.txt"), b"added underneath").unwrap();
    assert!(
        within(Duration::from_secs(4), || m.join("ro/later.txt").exists()),
        "the always-synced mount did not show a new object"
    );
    assert!(!m.join("dir/later.txt").exists(), "root store: listed once");
    let o = fs(&a, &["mount"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("sync=always"));
    let o = fs(&a, &["mount", "/x", "memory://", "--sync", "sometimes"]);
    assert_eq!(o.status.code(), Some(1), "a bad policy is refused");
    let err = std::fs::rename(m.join("dir/local.txt"), m.join("s3/moved.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EXDEV));
    let err = std::fs::rename(m.join("s3"), m.join("s4")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EBUSY));

    // A second daemon with an empty cache: the bytes are in S3.
    let mut b = Env::new();
    b.mount_on(None, &msargs);
    assert_eq!(std::fs::read(b.mnt().join("s3/big.bin")).unwrap(), big);
    assert_eq!(
        std::fs::read(b.mnt().join("s3/copied.txt")).unwrap(),
        b"from the local store"
    );
    assert!(
        !ufs.join("s3").exists(),
        "nothing of /s3 in the local store"
    );

    let o = fs(&a, &["unmount", "/s3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        within(Duration::from_secs(4), || !m.join("s3").exists()),
        "the store stayed mounted"
    );
    let o = fs(&a, &["unmount", "/"]);
    assert_eq!(o.status.code(), Some(1), "the root store stays");
}

/// The value of the first sample line that starts with `series ` (name and labels).
fn metric(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
        .parse()
        .unwrap()
}

/// `--metrics-listen` serves Prometheus text on the daemon (hit ratio, bytes by source,
/// UFS errors, FUSE op latency histograms) and on the metaserver (per-operation latency).
#[test]
fn cli_prometheus_metrics_on_daemon_and_metaserver() {
    let maddr = free_addr();
    let ms = Metaserver::start_with("metrics-token", &["--metrics-listen", &maddr]);
    let daddr = free_addr();
    let mut env = Env::new();
    let data = pattern(3 << 20, 11);
    std::fs::write(env.ufs().join("f.bin"), &data).unwrap();
    let mut args = ms.args();
    // No passthrough: the second read must reach the daemon to count as its cache hits.
    args.extend([
        "--metrics-listen".to_string(),
        daddr.clone(),
        "-o".to_string(),
        "nopassthrough".to_string(),
    ]);
    env.mount(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(std::fs::read(env.mnt().join("f.bin")).unwrap(), data);
    // Again past the kernel's page cache: every page is a hit of the daemon's cache.
    assert_eq!(read_direct(&env.mnt().join("f.bin")), data);

    let (status, body) = http_get(&daddr, "/metrics");
    assert!(status.contains("200"), "{status}");
    let ratio = metric(&body, "alluxio_cache_hit_ratio");
    assert!(ratio > 0.0 && ratio <= 1.0, "{ratio}");
    assert!(metric(&body, "alluxio_bytes_served_total{source=\"cache\"}") >= data.len() as f64);
    assert!(metric(&body, "alluxio_bytes_served_total{source=\"ufs\"}") >= data.len() as f64);
    assert_eq!(metric(&body, "alluxio_ufs_errors_total"), 0.0);
    assert!(metric(&body, "alluxio_fuse_op_duration_seconds_count{op=\"read\"}") >= 1.0);
    assert!(
        metric(
            &body,
            "alluxio_fuse_op_duration_seconds_count{op=\"lookup\"}"
        ) >= 1.0
    );
    assert!(body.contains("alluxio_fuse_op_duration_seconds_bucket{op=\"read\",le=\"+Inf\"}"));
    let (status, _) = http_get(&daddr, "/other");
    assert!(status.contains("404"), "{status}");

    let (status, body) = http_get(&maddr, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert!(
        metric(
            &body,
            "alluxio_meta_rpc_duration_seconds_count{op=\"Lookup\"}"
        ) >= 1.0
    );
    assert!(metric(&body, "alluxio_meta_inodes_allocated") >= 2.0);
}

/// `alluxio fs` namespace commands run the daemon's own vfs in the CLI process against a
/// metaserver: ls/stat (human and --json), cp in and out, cat, mkdir -p, mv, rm -R, with
/// exit code 1 and the errno on failure; `load` caches a tree through a local mount
/// (idempotent), and `report` shows the host's mounts and the mount table.
#[test]
fn cli_fs_namespace_commands() {
    let ms = Metaserver::start("fs-cmd-token");
    let msargs = ms.args();
    let msargs: Vec<&str> = msargs.iter().map(String::as_str).collect();
    let env = Env::new();
    let fs = |env: &Env, args: &[&str]| {
        let mut all = vec!["fs"];
        all.extend_from_slice(&msargs);
        all.extend_from_slice(args);
        let o = env.run(&all);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    std::fs::write(env.ufs().join("seed.txt"), b"seed").unwrap();
    let u = env.ufs();
    assert_eq!(fs(&env, &["mount", "/", u.to_str().unwrap()]).0, Some(0));

    let local = env.base.path().join("local.bin");
    let data = pattern((2 << 20) + 3, 5);
    std::fs::write(&local, &data).unwrap();
    assert_eq!(fs(&env, &["mkdir", "-p", "/a/b"]).0, Some(0));
    let (code, _, err) = fs(
        &env,
        &["cp", &format!("file://{}", local.display()), "/a/b/f.bin"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        std::fs::read(u.join("a/b/f.bin")).unwrap(),
        data,
        "1:1 in the store"
    );

    let (_, out, _) = fs(&env, &["ls", "/a/b", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["name"], "f.bin");
    assert_eq!(v[0]["size"], data.len() as u64);
    let (_, out, _) = fs(&env, &["stat", "/seed.txt", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["kind"].as_str(), v["size"].as_u64()),
        (Some("File"), Some(4))
    );

    let back = env.base.path().join("back.bin");
    assert_eq!(
        fs(
            &env,
            &["cp", "/a/b/f.bin", &format!("file://{}", back.display())]
        )
        .0,
        Some(0)
    );
    assert_eq!(std::fs::read(&back).unwrap(), data);
    let (_, out, _) = fs(&env, &["cat", "/seed.txt"]);
    assert_eq!(out, "seed");
    assert_eq!(fs(&env, &["mv", "/a/b/f.bin", "/a/g.bin"]).0, Some(0));
    assert!(u.join("a/g.bin").exists() && !u.join("a/b/f.bin").exists());

    let (code, _, err) = fs(&env, &["cat", "/missing"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("errno 2"), "{err}");
    let (code, _, err) = fs(&env, &["rm", "/a"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("use -R"), "{err}");
    assert_eq!(fs(&env, &["rm", "-R", "/a"]).0, Some(0));
    assert!(!u.join("a").exists());

    // load and report through a daemon of the same namespace.
    let mut d = Env::new();
    d.mount_on(None, &msargs);
    std::fs::create_dir_all(d.mnt().join("t")).unwrap();
    std::fs::write(d.mnt().join("t/x.bin"), &data).unwrap();
    let (code, out, err) = fs(&d, &["load", d.mnt().join("t").to_str().unwrap(), "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["files"].as_u64(), v["bytes"].as_u64()),
        (Some(1), Some(data.len() as u64))
    );
    assert_eq!(
        fs(&d, &["load", d.mnt().join("t").to_str().unwrap()]).0,
        Some(0),
        "idempotent"
    );
    let (code, out, err) = fs(&d, &["report", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mine = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountpoint"].as_str() == d.mnt().to_str())
        .expect("this mount in the report");
    assert!(mine["hit_ratio"].as_f64().is_some());
    assert_eq!(
        mine["disk_cache_capacity"],
        4u64 << 30,
        "the default --cache-size"
    );
    assert!(mine["mem_cache_capacity"].as_u64().unwrap() > 0);
    assert_eq!(v["mount_table"][0]["path"], "/");
    let (code, _, err) = fs(&d, &["load", env.ufs().to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not inside an alluxio mount"), "{err}");
}

/// `alluxio fs free PATH` drops a file's (or a tree's) cached pages from the daemon's
/// tiers: the disk tier shrinks by them, and the next read of the file is served from
/// the store again.
#[test]
fn cli_fs_free_drops_cached_pages() {
    let mut env = Env::new();
    let data = pattern(3 << 20, 17);
    std::fs::create_dir_all(env.ufs().join("d")).unwrap();
    std::fs::write(env.ufs().join("d/f.bin"), &data).unwrap();
    env.mount(&["-o", "nopassthrough"]);
    let f = env.mnt().join("d/f.bin");
    assert_eq!(std::fs::read(&f).unwrap(), data);
    let counter = |env: &Env, k: &str| env.stats()["counters"][k].as_u64().unwrap();
    assert!(
        within(Duration::from_secs(5), || counter(&env, "disk_cache_bytes")
            >= data.len() as u64),
        "the read was not cached on disk"
    );
    let o = env.run(&[
        "fs",
        "free",
        env.mnt().join("d").to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["files"], 1, "{v}");
    assert!(
        v["bytes_freed"].as_u64().unwrap() >= data.len() as u64,
        "{v}"
    );
    assert_eq!(counter(&env, "disk_cache_bytes"), 0);
    let misses = counter(&env, "cache_misses");
    // Past the kernel's own page cache (O_DIRECT), the pages come from the store again.
    use std::os::unix::fs::OpenOptionsExt;
    let mut h = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&f)
        .unwrap();
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut h, &mut back).unwrap();
    assert_eq!(back, data);
    assert!(
        counter(&env, "cache_misses") > misses,
        "read after free hit a cache"
    );
    let o = env.run(&["fs", "free", env.ufs().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
}

/// Reads a whole file with O_DIRECT (past the kernel's page cache, so every page is asked
/// of the daemon).
fn read_direct(p: &Path) -> Vec<u8> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut h = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(p)
        .unwrap();
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut h, &mut out).unwrap();
    out
}

/// `alluxio fs pin PATH` keeps a file's pages in the disk tier when other reads need the
/// room; after `unpin` they are evicted like any others. (What stays on disk is measured
/// with `alluxio fs free`, which reports the bytes it dropped.)
#[test]
fn cli_fs_pin_keeps_pages_under_eviction_pressure() {
    let mut env = Env::new();
    let (a, b, c) = (
        pattern(3 << 20, 21),
        pattern(3 << 20, 22),
        pattern(3 << 20, 23),
    );
    for (n, d) in [("a.bin", &a), ("b.bin", &b), ("c.bin", &c)] {
        std::fs::write(env.ufs().join(n), d).unwrap();
    }
    env.mount(&["--cache-size", "5MiB", "-o", "nopassthrough"]);
    let p = |n: &str| env.mnt().join(n);
    let counter = |env: &Env, k: &str| env.stats()["counters"][k].as_u64().unwrap();
    let on_disk_after_free = |env: &Env, n: &str| {
        let o = env.run(&["fs", "free", env.mnt().join(n).to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["bytes_freed"].as_u64().unwrap()
    };
    let o = env.run(&["fs", "pin", p("a.bin").to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(p("a.bin")).unwrap(), a);
    assert_eq!(std::fs::read(p("b.bin")).unwrap(), b);
    assert_eq!(std::fs::read(p("c.bin")).unwrap(), c);
    assert!(
        counter(&env, "disk_cache_evictions") > 0,
        "no pressure on the disk tier"
    );
    assert_eq!(
        on_disk_after_free(&env, "a.bin"),
        3 << 20,
        "a pinned page was evicted"
    );

    let o = env.run(&["fs", "unpin", p("a.bin").to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // b and c leave both tiers, so reading them again needs disk room.
    on_disk_after_free(&env, "b.bin");
    on_disk_after_free(&env, "c.bin");
    read_direct(&p("a.bin"));
    read_direct(&p("b.bin"));
    read_direct(&p("c.bin"));
    assert!(
        on_disk_after_free(&env, "a.bin") < 3 << 20,
        "unpinned pages should give way"
    );
    let o = env.run(&["fs", "unpin", p("a.bin").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "not pinned any more");
}

/// `alluxio fs setTtl PATH DURATION --action delete|free`: when the TTL expires a daemon
/// deletes the path from the namespace and the store, or drops its cached pages (the
/// file stays). `unsetTtl` cancels one; bad durations are refused.
#[test]
fn cli_fs_set_ttl_deletes_or_frees_on_expiry() {
    let mut env = Env::new();
    let data = pattern(2 << 20, 31);
    std::fs::create_dir_all(env.ufs().join("gone/sub")).unwrap();
    std::fs::write(env.ufs().join("gone/sub/x"), b"x").unwrap();
    std::fs::write(env.ufs().join("keep.bin"), &data).unwrap();
    std::fs::write(env.ufs().join("stays"), b"s").unwrap();
    env.mount(&["-o", "nopassthrough"]);
    let m = env.mnt();
    assert_eq!(std::fs::read(m.join("keep.bin")).unwrap(), data);
    assert_eq!(std::fs::read(m.join("gone/sub/x")).unwrap(), b"x");
    let disk = |env: &Env| {
        env.stats()["counters"]["disk_cache_bytes"]
            .as_u64()
            .unwrap()
    };
    assert!(within(Duration::from_secs(5), || disk(&env) >= data.len() as u64));

    let ttl = |args: &[&str]| env.run(&[&["fs"], args].concat());
    assert_eq!(
        ttl(&["setTtl", m.join("gone").to_str().unwrap(), "1s"])
            .status
            .code(),
        Some(0)
    );
    let o = ttl(&[
        "setTtl",
        m.join("keep.bin").to_str().unwrap(),
        "1",
        "--action",
        "free",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        ttl(&["setTtl", m.join("stays").to_str().unwrap(), "1h"])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        ttl(&["unsetTtl", m.join("stays").to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        ttl(&["setTtl", m.join("stays").to_str().unwrap(), "soon"])
            .status
            .code(),
        Some(1)
    );

    assert!(
        within(Duration::from_secs(6), || !env.ufs().join("gone").exists()),
        "the expired tree is still in the store"
    );
    assert!(within(Duration::from_secs(3), || !m.join("gone").exists()));
    // (The deleted tree's own page may stay cached until evicted: it is unreachable.)
    assert!(
        within(Duration::from_secs(6), || disk(&env) < data.len() as u64),
        "pages not freed"
    );
    assert_eq!(
        std::fs::read(m.join("keep.bin")).unwrap(),
        data,
        "free keeps the file"
    );
    assert!(m.join("stays").exists() && env.ufs().join("stays").exists());
}

/// `alluxio ufs-bench` measures the store the benchmark compares against: `--put` uploads a
/// file, a plain run reads it back whole with parallel ranged GETs, and `--ops` times empty
/// PUTs and DELETEs one at a time (the floor for create and unlink under CACHE_THROUGH)
/// and leaves none of its keys behind.
#[test]
fn cli_ufs_bench_measures_ceiling_and_metadata_floor() {
    let bucket = format!("ub{}", std::process::id());
    let endpoint = s3_bucket(&bucket);
    let opts = s3_opts(&endpoint);
    let uri = format!("s3://{bucket}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let bench = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["ufs-bench", "--ufs", &uri, "-o", &opts];
        all.extend_from_slice(args);
        let o = Command::new(BIN).args(&all).output().unwrap();
        assert!(
            o.status.success(),
            "ufs-bench {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let put = bench(&["obj", "--put", file.to_str().unwrap(), "--chunk", "1MiB"]);
    assert_eq!(put["bytes"], 3_000_000, "{put}");
    let get = bench(&["obj", "--chunk", "1MiB", "--parallel", "4"]);
    assert_eq!(get["bytes"], 3_000_000, "{get}");
    assert!(get["mb_per_s"].as_f64().unwrap() > 0.0, "{get}");

    let ops = bench(&["floor", "--ops", "20"]);
    assert_eq!(ops["ops"], 20, "{ops}");
    for k in [
        "put_empty_per_s",
        "put_empty_p50_us",
        "delete_per_s",
        "delete_p50_us",
    ] {
        assert!(ops[k].as_f64().unwrap() > 0.0, "{k}: {ops}");
    }
    // Every key it made is gone: reading one fails.
    let o = Command::new(BIN)
        .args(["ufs-bench", "--ufs", &uri, "-o", &opts, "floor/op000000"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "the floor's keys must be deleted");
}
