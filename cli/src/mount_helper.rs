//! `mount.fuse.alluxio SOURCE DIR [-o OPTS] [-n] [-s] [-f] [-v]`: the helper mount(8) runs
//! for `mount -t fuse.alluxio` and for `fuse.alluxio` lines in `/etc/fstab`. The same
//! binary answers to that name (`scripts/install.sh` links it as
//! `/sbin/mount.fuse.alluxio`).
//!
//! It starts `alluxio fuse mount` as a daemon in its own session, with its output in a log
//! file, and returns once the mount is live (exit 0) or the daemon has failed (the log's
//! last lines on stderr, exit 32, mount(8)'s "mount failure"). Usage errors exit 1.
//!
//! What mount(8) hands over is handled: it strips `PATH` (the daemon is this very
//! executable, found through /proc/self/exe, and gets a standard PATH), and its option
//! list holds generic options (`rw`, `dev`, `suid`, `relatime`, `_netdev`, `nofail`,
//! `noauto`, `x-systemd.*`, ...) beside ours. Options that are flags of `alluxio fuse
//! mount` in the CLI are spelled as options here: `cache_dir=`, `state_dir=`,
//! `cache_size=`, `mem_budget=`, `prefetch_pages=`, `token_file=`; plus `log=FILE` for
//! the daemon's log. SOURCE is a UFS URI, or `alluxio://HOST:PORT/` for a metaserver's
//! namespace (its root store from the mount table, or `-o ufs=URI`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use alluxio::config::{default_home, path_id};

/// The name this binary answers to as a mount helper.
pub const HELPER_NAME: &str = "mount.fuse.alluxio";

/// How long the helper waits for the daemon's mount before it gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// mount(8) exit codes.
const EXIT_USAGE: u8 = 1;
const EXIT_MOUNT_FAILURE: u8 = 32;

/// A parsed helper command line.
#[derive(Debug, Default, PartialEq, Eq)]
struct Request {
    source: String,
    dir: PathBuf,
    /// Flags for `alluxio fuse mount` (from options that are CLI flags there).
    flags: Vec<(String, String)>,
    /// Options passed on as `-o`.
    options: Vec<String>,
    /// `log=FILE`.
    log: Option<PathBuf>,
    /// The store: SOURCE, or `ufs=` with a metaserver SOURCE.
    ufs: String,
    /// `HOST:PORT` of a metaserver SOURCE (`alluxio://HOST:PORT/`).
    metaserver: Option<String>,
    /// `-f`: check everything, mount nothing.
    fake: bool,
    verbose: bool,
}

/// Options of fstab and mount(8) that mean nothing to the daemon.
fn ignored(opt: &str) -> bool {
    matches!(
        opt,
        "defaults" | "auto" | "noauto" | "user" | "users" | "nouser" | "owner" | "group" | "loop"
    ) || opt.starts_with("x-")
        || opt.starts_with("comment=")
        || opt.starts_with("fsname=")
        || opt.starts_with("subtype=")
        || opt.starts_with("helper=")
}

/// Options that are flags of `alluxio fuse mount`.
fn flag_of(key: &str) -> Option<&'static str> {
    Some(match key {
        "cache_dir" => "--cache-dir",
        "state_dir" => "--state-dir",
        "cache_size" => "--cache-size",
        "mem_budget" => "--mem-budget",
        "prefetch_pages" => "--prefetch-pages",
        "prefetch_gets" => "--prefetch-gets",
        "token_file" => "--token-file",
        _ => return None,
    })
}

fn parse(args: &[OsString]) -> Result<Request, String> {
    let mut r = Request::default();
    let mut positional = Vec::new();
    let mut opts = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let a = a
            .to_str()
            .ok_or_else(|| format!("argument {a:?} is not UTF-8"))?;
        match a {
            "-o" => opts.push(
                it.next()
                    .and_then(|v| v.to_str())
                    .ok_or("-o needs a value")?
                    .to_string(),
            ),
            "-n" | "-s" => {} // no mtab to write; sloppy options are what we do anyway
            "-f" => r.fake = true,
            "-v" => r.verbose = true,
            _ if a.starts_with("-o") => opts.push(a[2..].to_string()),
            _ if a.starts_with('-') => return Err(format!("unknown flag {a}")),
            _ => positional.push(a.to_string()),
        }
    }
    let [source, dir] = <[String; 2]>::try_from(positional)
        .map_err(|_| "usage: mount.fuse.alluxio SOURCE DIR [-o OPTIONS]".to_string())?;
    r.source = source;
    r.dir = PathBuf::from(dir);
    for o in opts
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
    {
        if ignored(o) {
            continue;
        }
        let (k, v) = match o.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (o, None),
        };
        match (k, v, flag_of(k)) {
            ("log", Some(v), _) => r.log = Some(PathBuf::from(v)),
            ("ufs", Some(v), _) => r.ufs = v.to_string(),
            (_, Some(v), Some(flag)) => r.flags.push((flag.to_string(), v.to_string())),
            (_, None, Some(_)) | ("log", None, _) => {
                return Err(format!("mount option {k} needs a value"));
            }
            _ => r.options.push(o.to_string()),
        }
    }
    if let Some(rest) = r.source.strip_prefix("alluxio://") {
        let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
        if hostport.is_empty() {
            return Err(format!("{}: expected alluxio://HOST:PORT/", r.source));
        }
        if !path.is_empty() {
            return Err(format!(
                "{}: mounting a subtree of a metaserver namespace is not supported; use alluxio://{hostport}/",
                r.source
            ));
        }
        r.metaserver = Some(hostport.to_string());
    } else if r.ufs.is_empty() {
        r.ufs = r.source.clone();
    } else {
        return Err("ufs= is for alluxio:// sources; the SOURCE is the store".into());
    }
    Ok(r)
}

/// Runs the helper with the arguments after the program name.
pub fn run(args: &[OsString]) -> ExitCode {
    let req = match parse(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{HELPER_NAME}: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match mount(&req) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{HELPER_NAME}: {e}");
            ExitCode::from(EXIT_MOUNT_FAILURE)
        }
    }
}

fn mount(req: &Request) -> Result<(), String> {
    let dir = alluxio::mount::check_mountpoint(&req.dir).map_err(|e| e.to_string())?;
    if alluxio::mount::mount_type(&dir).as_deref() == Some("fuse.alluxio") {
        return Err(format!("{} is already an alluxio mount", dir.display()));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let mut cmd = Command::new(&exe);
    cmd.args(["fuse", "mount"]).arg(&dir);
    // With a metaserver and no ufs=, the daemon takes the root store from its mount table.
    if !req.ufs.is_empty() {
        cmd.arg("--ufs").arg(&req.ufs);
    }
    if let Some(ms) = &req.metaserver {
        cmd.arg("--metaserver").arg(ms);
    }
    for (flag, v) in &req.flags {
        cmd.arg(flag).arg(v);
    }
    if !req.options.is_empty() {
        cmd.arg("-o").arg(req.options.join(","));
    }
    if std::env::var_os("PATH").is_none() {
        cmd.env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    }
    if req.fake {
        // Validate the configuration the daemon would get, without mounting.
        cmd.arg("--check");
        return match cmd.stdin(Stdio::null()).output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
            Err(e) => Err(format!("cannot run {}: {e}", exe.display())),
        };
    }
    let log = req
        .log
        .clone()
        .unwrap_or_else(|| default_log(&dir, &req.source));
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("log directory {}: {e}", parent.display()))?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| format!("log file {}: {e}", log.display()))?;
    let start_len = out.metadata().map(|m| m.len()).unwrap_or(0);
    let err = out
        .try_clone()
        .map_err(|e| format!("log file {}: {e}", log.display()))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // The daemon leads its own session, so the terminal's signals and hangup do not reach
    // it; it lives until unmounted.
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    if req.verbose {
        eprintln!(
            "{HELPER_NAME}: daemon pid {} for {}, log {}",
            child.id(),
            dir.display(),
            log.display()
        );
    }
    let t0 = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                return Err(format!(
                    "mount failed ({st}): {}\n(log: {})",
                    log_tail(&log, start_len),
                    log.display()
                ));
            }
            Ok(None) => {}
            Err(e) => return Err(format!("cannot watch the daemon: {e}")),
        }
        if alluxio::mount::mount_type(&dir).as_deref() == Some("fuse.alluxio") {
            return Ok(());
        }
        if t0.elapsed() > READY_TIMEOUT {
            // Ours to stop: the daemon this call started, by its PID.
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "no mount within {}s; stopped the daemon (log: {})",
                READY_TIMEOUT.as_secs(),
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The default log of the daemon for a mountpoint and source.
fn default_log(dir: &Path, source: &str) -> PathBuf {
    let id = path_id(&[dir.as_os_str().as_encoded_bytes(), source.as_bytes()]);
    default_home().join("log").join(format!("{id}.log"))
}

/// What the daemon wrote to `log` after `from`: its error lines.
fn log_tail(log: &Path, from: u64) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(0).min(text.len());
    let s = String::from_utf8_lossy(&text[start..]);
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    let keep = lines.len().saturating_sub(5);
    lines[keep..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    #[test]
    fn mount8_and_fstab_options_are_sorted_out() {
        let r = parse(&args(&[
            "s3://b/p",
            "/mnt/x",
            "-o",
            "rw,dev,suid,defaults,noauto,_netdev,x-systemd.automount,cache_dir=/c,mem_budget=2GiB,endpoint=http://h:9,log=/l",
            "-n",
            "-oallow_other",
        ]))
        .unwrap();
        assert_eq!(r.source, "s3://b/p");
        assert_eq!(r.dir, PathBuf::from("/mnt/x"));
        assert_eq!(
            r.flags,
            [
                ("--cache-dir".to_string(), "/c".to_string()),
                ("--mem-budget".to_string(), "2GiB".to_string())
            ]
        );
        // Generic options go on to the daemon's -o parser, which accepts them.
        assert_eq!(
            r.options,
            [
                "rw",
                "dev",
                "suid",
                "_netdev",
                "endpoint=http://h:9",
                "allow_other"
            ]
        );
        assert!(alluxio::config::parse_mount_options(&[r.options.join(",")]).is_ok());
        assert_eq!(r.log, Some(PathBuf::from("/l")));
    }

    #[test]
    fn bad_command_lines_are_refused() {
        assert!(parse(&args(&["only-one"])).is_err());
        assert!(parse(&args(&["a", "b", "c"])).is_err());
        assert!(parse(&args(&["a", "/m", "-o"])).is_err());
        assert!(parse(&args(&["a", "/m", "-q"])).is_err());
        assert!(parse(&args(&["a", "/m", "-o", "cache_dir"])).is_err());
        let r = parse(&args(&["alluxio://h:1/", "/m"])).unwrap();
        assert_eq!((r.metaserver.as_deref(), r.ufs.as_str()), (Some("h:1"), ""));
        let e = parse(&args(&["alluxio://h:1/sub", "/m", "-o", "ufs=/d"])).unwrap_err();
        assert!(e.contains("not supported"), "{e}");
        assert!(parse(&args(&["/d", "/m", "-o", "ufs=/e"])).is_err());
        let r = parse(&args(&[
            "alluxio://h:1/",
            "/m",
            "-o",
            "ufs=s3://b,token_file=/t",
        ]))
        .unwrap();
        assert_eq!(r.metaserver.as_deref(), Some("h:1"));
        assert_eq!(r.ufs, "s3://b");
        assert_eq!(r.flags, [("--token-file".to_string(), "/t".to_string())]);
    }
}
