//! The `alluxio` binary over every kind of store: one namespace with a local directory, S3,
//! Azure Blob and GCS side by side (servers started by scripts/ci.sh), and for the stores
//! without a server here, a registered scheme and a one-line error naming the service.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on failure by design"
)]

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

fn env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: run the tests through scripts/ci.sh, which starts the test servers"
        )
    })
}

fn host_of(endpoint: &str) -> String {
    let rest = endpoint.trim_start_matches("http://");
    rest.split('/').next().unwrap().to_string()
}

/// A local directory, S3, Azure Blob and GCS mounted side by side in one metaserver's
/// namespace: `find` lists what each holds, `cp` works between any two of them and leaves
/// the bytes in the target store's own key (read back with a plain HTTP GET), and the
/// mount table and `fs report` say each store's kind.
#[test]
fn cli_one_namespace_over_local_s3_azure_and_gcs() {
    let tag = format!("ns{}", std::process::id());
    let s3 = s3_bucket(&tag);
    let (az, gcs) = (
        env("ALLUXIO_TEST_AZURE_ENDPOINT"),
        env("ALLUXIO_TEST_GCS_ENDPOINT"),
    );
    let az_opts = format!(
        "endpoint={az},ufs.account_name={},ufs.account_key={}",
        env("ALLUXIO_TEST_AZURE_ACCOUNT"),
        env("ALLUXIO_TEST_AZURE_KEY")
    );
    let gcs_opts = format!("endpoint={gcs},ufs.skip_signature=true");
    let ms = Metaserver::start("four-stores");
    let msargs = ms.args();
    let msargs: Vec<&str> = msargs.iter().map(String::as_str).collect();
    let mut a = Env::new();
    let fs = |env: &Env, args: &[&str]| {
        let mut all = vec!["fs"];
        all.extend_from_slice(&msargs);
        all.extend_from_slice(args);
        let o = env.run(&all);
        assert!(
            o.status.success(),
            "fs {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let local = a.ufs();
    std::fs::write(local.join("local.txt"), b"from the local directory").unwrap();
    let stores = [
        ("s3", format!("s3://{tag}/pre"), s3_opts(&s3)),
        ("azure", format!("azblob://alluxio/{tag}"), az_opts),
        ("gcs", format!("gcs://alluxio/{tag}"), gcs_opts),
    ];
    fs(&a, &["mount", "/", local.to_str().unwrap()]);
    for (at, uri, opts) in &stores {
        fs(&a, &["mount", &format!("/{at}"), uri, "-o", opts]);
    }
    let table = fs(&a, &["mount"]);
    for (at, kind) in [("/s3", "s3"), ("/azure", "azblob"), ("/gcs", "gcs")] {
        let line = table.lines().find(|l| l.starts_with(at)).unwrap_or("");
        assert!(line.contains(kind), "{at} shows kind {kind}: {table}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("/ ") && l.contains("local")),
        "{table}"
    );
    assert!(!table.contains("s3cret"), "credentials printed: {table}");

    a.mount_on(None, &msargs);
    let m = a.mnt();
    // One file per store, written through the mount, of a size that spans pages.
    let dirs = ["", "s3", "azure", "gcs"];
    let body = |i: usize| pattern((1 << 20) + 4097 + i, i as u32 + 3);
    for (i, d) in dirs.iter().enumerate() {
        std::fs::write(m.join(d).join(format!("own{i}.bin")), body(i)).unwrap();
    }
    // cp from every store to every other.
    for (i, from) in dirs.iter().enumerate() {
        for (j, to) in dirs.iter().enumerate() {
            if i == j {
                continue;
            }
            let (src, dst) = (
                m.join(from).join(format!("own{i}.bin")),
                m.join(to).join(format!("cp{i}to{j}.bin")),
            );
            let o = Command::new("cp").arg(&src).arg(&dst).output().unwrap();
            assert!(
                o.status.success(),
                "cp {from} -> {to}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert_eq!(read_matches(&dst, &body(i)), "ok", "cp {from} -> {to}");
        }
    }
    let o = Command::new("find").arg(&m).output().unwrap();
    let listed = String::from_utf8_lossy(&o.stdout);
    let mut want = vec!["local.txt".to_string()];
    for (j, to) in dirs.iter().enumerate() {
        let sub = |n: String| {
            if to.is_empty() {
                n
            } else {
                format!("{to}/{n}")
            }
        };
        want.push(sub(format!("own{j}.bin")));
        for i in (0..dirs.len()).filter(|&i| i != j) {
            want.push(sub(format!("cp{i}to{j}.bin")));
        }
    }
    for p in &want {
        assert!(
            listed.contains(&format!("{}/{p}", m.display())),
            "find lacks {p}: {listed}"
        );
    }
    // Each copy is its target store's own object, 1:1 under the store's root.
    assert_eq!(std::fs::read(local.join("cp1to0.bin")).unwrap(), body(1));
    // S3 with boto3 (moto refuses unsigned GETs), the others with a plain GET.
    let o = Command::new("python3")
        .arg("-c")
        .arg(
            "import boto3, sys\n\
             s3 = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id='test', \
             aws_secret_access_key='test', region_name='us-east-1')\n\
             sys.stdout.buffer.write(s3.get_object(Bucket=sys.argv[2], Key=sys.argv[3])['Body'].read())",
        )
        .args([&s3, &tag, "pre/cp2to1.bin"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.stdout == body(2),
        "S3 object: {} bytes differ",
        o.stdout.len()
    );
    let checks = [
        (
            host_of(&az),
            format!("/devstoreaccount1/alluxio/{tag}/cp3to2.bin"),
            body(3),
        ),
        (
            host_of(&gcs),
            format!("/storage/v1/b/alluxio/o/{tag}%2Fcp0to3.bin?alt=media"),
            body(0),
        ),
    ];
    for (addr, path, want) in checks {
        let (status, got) = http_bytes(&addr, &path);
        assert!(status.contains(" 200"), "GET {path}: {status}");
        assert!(got == want, "GET {path}: {} bytes differ", got.len());
    }
    // `fs report`: this host's mount, and the mount table with each store's kind.
    let report = fs(&a, &["report"]);
    assert!(report.contains(&m.display().to_string()), "{report}");
    let table = report.split("mount table:").nth(1).unwrap_or("");
    for (at, kind) in [
        ("/ ", "local"),
        ("/s3", "s3"),
        ("/azure", "azblob"),
        ("/gcs", "gcs"),
    ] {
        let line = table.lines().find(|l| l.starts_with(at)).unwrap_or("");
        assert!(line.contains(kind), "{at} shows kind {kind}: {report}");
    }
}

/// The stores without a server here are compiled in: a mount over each, with an
/// endpoint where nothing listens, fails within its timeout with one line that names
/// the service, and leaves no mount behind.
#[test]
fn cli_stores_without_a_server_here_are_registered_and_fail_clearly() {
    let dead = free_addr();
    let cases = [
        (format!("hdfs://{dead}/data"), "hdfs-native", vec![]),
        (format!("webhdfs://{dead}/data"), "webhdfs", vec![]),
        (
            "azdls://fs/data".to_string(),
            "azdls",
            vec![
                format!("endpoint=http://{dead}"),
                "ufs.account_name=acct".into(),
                "ufs.account_key=a2V5".into(),
            ],
        ),
        (
            "oss://bkt/data".to_string(),
            "oss",
            vec![
                format!("endpoint=http://{dead}"),
                "access_key_id=id".into(),
                "secret_access_key=secret".into(),
            ],
        ),
        (
            "cos://bkt/data".to_string(),
            "cos",
            vec![
                format!("endpoint=http://{dead}"),
                "access_key_id=id".into(),
                "secret_access_key=secret".into(),
            ],
        ),
        (
            "obs://bkt/data".to_string(),
            "obs",
            vec![
                format!("endpoint=http://{dead}"),
                "access_key_id=id".into(),
                "secret_access_key=secret".into(),
            ],
        ),
        (
            "swift://ctr/data".to_string(),
            "swift",
            vec![
                format!("endpoint=http://{dead}/v1/AUTH_test"),
                "ufs.token=t".into(),
            ],
        ),
        (
            format!("sftp://nobody@{dead}/data"),
            "sftp",
            vec!["ufs.known_hosts_strategy=accept".into()],
        ),
    ];
    for (uri, service, opts) in cases {
        let a = Env::new();
        std::fs::create_dir_all(a.mnt()).unwrap();
        let mut c = a.cmd();
        c.args(["fuse", "mount"]).arg(a.mnt()).args(["--ufs", &uri]);
        c.args(["-o", "ufs_timeout=3"]);
        for o in &opts {
            c.args(["-o", o]);
        }
        let t = Instant::now();
        let o = with_timeout(c, Duration::from_secs(60));
        let took = t.elapsed();
        let err = String::from_utf8_lossy(&o.stderr);
        let line = err.trim();
        assert_eq!(o.status.code(), Some(1), "{uri}: {err}");
        assert!(
            !line.contains('\n') && line.contains(service),
            "{uri}: one line naming {service}: {err}"
        );
        assert!(
            !line.contains("not registered"),
            "{uri}: the service is compiled in: {err}"
        );
        assert!(
            mount_type(&a.mnt()).is_none(),
            "{uri}: no mount left behind"
        );
        eprintln!("{uri}: failed in {took:?}: {line}");
    }
}
