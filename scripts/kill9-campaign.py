#!/usr/bin/env python3
"""Kill -9 campaign: acknowledged data survives SIGKILL of the daemon, under every write type.

For each write type, each kill point:
  1. writers (separate processes) create and overwrite files of 0-5 MiB in the mount. Each
     logs an operation as acknowledged only once fsync (`fsync`) or close (`close`)
     returned, and logs `begin` before it starts, to a log outside the mount;
  2. after a random delay the daemon gets SIGKILL (by PID), the writers too;
  3. the dead mount is cleared with `alluxio fuse unmount`, and the daemon mounts again with
     the same state and cache directories;
  4. every file of the round is read through the mount. Its bytes must be those of its last
     acknowledged write, or, when a write began after that, the previous acknowledged
     bytes, nothing, or that write's bytes (never a mix, never anything else);
  5. once uploads are done (the ASYNC_THROUGH journal is empty) the store holds the same.
The next round writes through the daemon mounted in step 3, after removing the round's
files through the mount (so a long campaign does not fill the disk). At the end the last
round's files are checked again, through a fresh mount and in the store.

SEMANTICS promises both kinds of acknowledgement for every type (close uploads the whole
object under CACHE_THROUGH and THROUGH, and journals it under ASYNC_THROUGH), so both count.

usage: scripts/kill9-campaign.py [--bin BIN] [--points N] [--types T,...] [--seed S]
                                 [--s3 ENDPOINT] [--work DIR]
Prints one line per kill point and a summary table; exits 1 if anything acknowledged was
lost or wrong. Runs as root (mounts). Only processes it started are killed, by PID.
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

PAGE = 1 << 20


def pattern(seed, size):
    """Deterministic bytes for one write: seed-dependent, so two writes never match."""
    rnd = random.Random(seed)
    block = rnd.randbytes(64 * 1024)
    reps = size // len(block) + 1
    return (block * reps)[:size]


def sha(b):
    return hashlib.sha256(b).hexdigest()


# ---------------------------------------------------------------------------------------
# The writer: runs as its own process so SIGKILL of the daemon leaves it blocked or failing
# in a syscall, as an application would be.


def writer(mnt, log_path, seed, round_no, wid):
    rnd = random.Random(seed)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def note(**rec):
        os.write(log, (json.dumps(rec) + "\n").encode())

    names = []
    sizes = [0, 1, PAGE - 1, PAGE, PAGE + 1, 3 * PAGE + 17, 5 * PAGE]
    n = 0
    while True:
        n += 1
        if names and rnd.random() < 0.3:
            name = rnd.choice(names)
        else:
            name = f"r{round_no}/w{wid}-{n}"
            names.append(name)
        size = rnd.choice(sizes) if rnd.random() < 0.5 else rnd.randrange(0, 5 * PAGE)
        wseed = rnd.getrandbits(48)
        data = pattern(wseed, size)
        how = "fsync" if rnd.random() < 0.6 else "close"
        note(op="begin", name=name, sha=sha(data), size=size)
        try:
            fd = os.open(os.path.join(mnt, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            view = memoryview(data)
            while view:
                w = os.write(fd, view[: 1 << 20])
                view = view[w:]
            ino = os.fstat(fd).st_ino
            if how == "fsync":
                os.fsync(fd)
                note(op="ack", name=name, sha=sha(data), size=size, by="fsync", ino=ino)
            os.close(fd)
            if how == "close":
                note(op="ack", name=name, sha=sha(data), size=size, by="close", ino=ino)
        except OSError:
            return  # the daemon is gone


# ---------------------------------------------------------------------------------------
# The campaign.


def mounted(mnt):
    real = os.path.realpath(mnt)
    with open("/proc/mounts") as f:
        return any(line.split()[1] == real and line.split()[2].startswith("fuse") for line in f)


class Daemon:
    def __init__(self, args, home, mnt, ufs, opts):
        self.args, self.home, self.mnt, self.ufs, self.opts = args, home, mnt, ufs, opts
        self.proc = None

    def env(self):
        e = dict(os.environ)
        e["ALLUXIO_HOME"] = self.home
        e["ALLUXIO_RUN_DIR"] = os.path.join(self.home, "run")
        e.pop("ALLUXIO_LOG", None)
        if self.args.log:
            e["ALLUXIO_LOG"] = self.args.log
        return e

    def start(self):
        log = open(os.path.join(self.home, "daemon.log"), "ab")
        self.proc = subprocess.Popen(
            [self.args.bin, "fuse", "mount", self.mnt, "--ufs", self.ufs, "-o", self.opts,
             "--state-dir", self.state_dir()],
            env=self.env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        t0 = time.time()
        while not mounted(self.mnt):
            if self.proc.poll() is not None:
                sys.exit(f"daemon exited early ({self.proc.returncode}); see {self.home}/daemon.log")
            if time.time() - t0 > 30:
                sys.exit("mount did not appear within 30 s")
            time.sleep(0.02)

    def state_dir(self):
        return os.path.join(self.home, "state")

    def fsck(self):
        """`alluxio fsck` of the stopped daemon's namespace: (namespace problems, lines
        where the store is ahead of it, which the next listing reconciles)."""
        r = subprocess.run([self.args.bin, "fsck", "--state-dir", self.state_dir(), "--ufs",
                            self.ufs, "-o", self.opts], env=self.env(), stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=300)
        if r.returncode == 8:
            return [f"fsck could not run: {r.stderr.strip()}"], []
        lines = r.stdout.splitlines()
        return ([l for l in lines if l.startswith("namespace:")],
                [l for l in lines if l.startswith("store:")])

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.unmount_dead()

    def unmount_dead(self):
        subprocess.run([self.args.bin, "fuse", "unmount", self.mnt], env=self.env(),
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        if mounted(self.mnt):
            subprocess.run(["umount", "-l", self.mnt], capture_output=True)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            subprocess.run([self.args.bin, "fuse", "unmount", self.mnt], env=self.env(),
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if mounted(self.mnt):
            subprocess.run(["umount", "-l", self.mnt], capture_output=True)

    def journal_entries(self):
        n = 0
        mounts = os.path.join(self.home, "mounts")
        for m in os.listdir(mounts) if os.path.isdir(mounts) else []:
            j = os.path.join(mounts, m, "cache", "journal")
            if os.path.isdir(j):
                n += len(os.listdir(j))
        return n


def expectations(log_path):
    """name -> (acked sha or None, set of shas of writes begun after the last ack)."""
    exp = {}
    if not os.path.exists(log_path):
        return exp
    with open(log_path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue  # a torn last line of a killed writer
            acked, since = exp.get(r["name"], (None, set()))
            if r["op"] == "begin":
                since = since | {r["sha"]}
                exp[r["name"]] = (acked, since)
            else:
                exp[r["name"]] = ((r["sha"], r["size"]), set())
    return exp


EMPTY = sha(b"")


def judge(content, acked, since):
    """'ok', or why not. `content` is None when the file is absent, an OSError when it
    could not be read."""
    if isinstance(content, OSError):
        return f"unreadable: {content}"
    got = None if content is None else sha(content)
    if acked is None:
        # Never acknowledged: absent, empty or whole are all states it went through.
        return "ok" if got is None or got == EMPTY or got in since else "bytes of no write"
    if got == acked[0]:
        return "ok"
    if since and (got == EMPTY or got in since):
        return "ok"  # an unacknowledged overwrite began after the ack: truncated or whole
    if got is None:
        return "lost (absent)"
    return f"wrong bytes ({len(content)} bytes, expected {acked[1]})"


def read_mount(mnt, name):
    try:
        with open(os.path.join(mnt, name), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        return e  # judged as a failure, with its errno


def read_store(args, ufs_dir, name):
    if args.s3:
        url = f"{args.s3}/{args.bucket}/{name}"
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise
    try:
        with open(os.path.join(ufs_dir, name), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def check(args, daemon, ufs_dir, exp, where):
    """Checks every expected file; returns (acked files, acked bytes, failures)."""
    files = bytes_ = 0
    bad = []
    for name, (acked, since) in sorted(exp.items()):
        if acked is not None:
            files += 1
            bytes_ += acked[1]
        content = read_mount(daemon.mnt, name) if where == "mount" else read_store(args, ufs_dir, name)
        verdict = judge(content, acked, since)
        if verdict != "ok":
            if where == "mount":
                try:
                    st = os.stat(os.path.join(daemon.mnt, name))
                    verdict += f" (stat: size {st.st_size}, ino {st.st_ino})"
                except OSError as e:
                    verdict += f" (stat: {e})"
            bad.append(f"{where} {name}: {verdict}")
    return files, bytes_, bad


def wait_uploads(daemon, limit=120):
    t0 = time.time()
    while daemon.journal_entries() > 0:
        if time.time() - t0 > limit:
            return False
        time.sleep(0.1)
    return True


def campaign(args, wtype, work, rnd):
    home = os.path.join(work, wtype, "home")
    mnt = os.path.join(work, wtype, "mnt")
    os.makedirs(home, exist_ok=True)
    os.makedirs(mnt, exist_ok=True)
    if args.s3:
        args.bucket = f"kill9-{wtype.lower().replace('_', '-')}-{os.getpid()}"
        req = urllib.request.Request(f"{args.s3}/{args.bucket}", method="PUT")
        urllib.request.urlopen(req, timeout=30).read()
        ufs, ufs_dir = f"s3://{args.bucket}", None
        extra = f",endpoint={args.s3},region=us-east-1,access_key_id=test,secret_access_key=s3cret"
    else:
        ufs_dir = os.path.join(work, wtype, "ufs")
        os.makedirs(ufs_dir, exist_ok=True)
        ufs, extra = ufs_dir, ""
    stats = {"points": 0, "acked_files": 0, "acked_bytes": 0, "fsync_acks": 0, "close_acks": 0,
             "failures": [], "store_ahead": 0}
    all_exp = {}
    daemon = None
    try:
        for point in range(args.points):
            delay = rnd.choice([0, 0, 1]) if wtype == "ASYNC_THROUGH" else 0
            opts = f"write_type={wtype},upload_delay={delay}{extra}"
            if daemon is None or daemon.opts != opts:
                if daemon is not None:
                    daemon.stop()
                daemon = Daemon(args, home, mnt, ufs, opts)
                daemon.start()
            os.makedirs(os.path.join(mnt, f"r{point}"), exist_ok=True)
            logs = []
            writers = []
            for wid in range(args.writers):
                lp = os.path.join(work, wtype, f"log-{point}-{wid}.jsonl")
                logs.append(lp)
                writers.append(subprocess.Popen(
                    [sys.executable, __file__, "writer", mnt, lp, str(rnd.getrandbits(48)),
                     str(point), str(wid)], stdin=subprocess.DEVNULL))
            kill_after = rnd.uniform(0.05, args.max_run)
            time.sleep(kill_after)
            daemon.kill9()
            for w in writers:
                try:
                    w.kill()
                except ProcessLookupError:
                    pass
                w.wait()
            exp = {}
            for lp in logs:
                exp.update(expectations(lp))
            for lp in filter(os.path.exists, logs):
                with open(lp) as f:
                    for line in f:
                        try:
                            r = json.loads(line)
                        except ValueError:
                            continue
                        if r["op"] == "ack":
                            stats["fsync_acks" if r["by"] == "fsync" else "close_acks"] += 1
            # The namespace the kill left must check clean against itself.
            ns_bad, ahead = daemon.fsck()
            stats["store_ahead"] += len(ahead)
            daemon.start()
            files, nbytes, bad = check(args, daemon, ufs_dir, exp, "mount")
            bad = [f"fsck: {b}" for b in ns_bad] + bad
            if not wait_uploads(daemon):
                bad.append("uploads did not finish within 120 s")
            _, _, bad_store = check(args, daemon, ufs_dir, exp, "store")
            bad += bad_store
            stats["points"] += 1
            stats["acked_files"] += files
            stats["acked_bytes"] += nbytes
            stats["failures"] += [f"point {point}: {b}" for b in bad]
            if bad and args.stop_on_failure:
                print(f"stopping at the first failure; state kept in {work}", flush=True)
                for b in bad:
                    print(f"    {b}")
                break
            # The round's files go (through the mount: unlinks under test too), so a long
            # campaign does not fill the disk; the final check covers the last round kept.
            if point < args.points - 1:
                shutil.rmtree(os.path.join(mnt, f"r{point}"), ignore_errors=True)
            else:
                all_exp.update(exp)
            for lp in filter(os.path.exists, logs):
                os.remove(lp)
            print(f"{wtype} point {point + 1}/{args.points}: killed after {kill_after:.2f} s "
                  f"(upload_delay {delay}), {files} acknowledged files, "
                  f"{len(bad)} failures" + "".join(f"\n    {b}" for b in bad[:5]), flush=True)
        # Every round again, through a fresh mount and in the store.
        if args.stop_on_failure and stats["failures"]:
            return stats
        daemon.stop()
        daemon.start()
        _, _, bad = check(args, daemon, ufs_dir, all_exp, "mount")
        wait_uploads(daemon)
        _, _, bad_store = check(args, daemon, ufs_dir, all_exp, "store")
        stats["failures"] += [f"final: {b}" for b in bad + bad_store]
    finally:
        if daemon is not None:
            daemon.stop()
    return stats


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "writer":
        mnt, log_path, seed, round_no, wid = sys.argv[2:7]
        writer(mnt, log_path, int(seed), int(round_no), int(wid))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", default=shutil.which("alluxio") or "target/release/alluxio")
    p.add_argument("--points", type=int, default=100, help="kill points per write type")
    p.add_argument("--types", default="CACHE_THROUGH,THROUGH,ASYNC_THROUGH")
    p.add_argument("--writers", type=int, default=2)
    p.add_argument("--max-run", type=float, default=2.5, help="latest kill, s after start")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--s3", default=None, help="S3 endpoint (unsigned, e.g. moto); default: a local directory")
    p.add_argument("--work", default=None)
    p.add_argument("--stop-on-failure", action="store_true",
                   help="keep the state of the first failing kill point for inspection")
    p.add_argument("--log", default=None, help="the daemons' ALLUXIO_LOG filter (e.g. alluxio=debug)")
    args = p.parse_args()
    args.bin = os.path.abspath(args.bin)
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    rnd = random.Random(seed)
    work = args.work or tempfile.mkdtemp(prefix="alluxio-kill9.")
    print(f"kill9 campaign: seed {seed}, {args.points} points per type, work {work}", flush=True)
    results = {}
    for wtype in args.types.split(","):
        results[wtype] = campaign(args, wtype, work, rnd)
    print("\n| write type | kill points | acknowledged files | acknowledged MiB | by fsync | by close | fsck: store ahead | lost or wrong |")
    print("|---|---|---|---|---|---|---|---|")
    failed = False
    for wtype, s in results.items():
        print(f"| {wtype} | {s['points']} | {s['acked_files']} | {s['acked_bytes'] / PAGE:.1f} | "
              f"{s['fsync_acks']} | {s['close_acks']} | {s['store_ahead']} | {len(s['failures'])} |")
        failed |= bool(s["failures"])
    for wtype, s in results.items():
        for f in s["failures"]:
            print(f"FAIL {wtype} {f}")
    if not args.work and not failed:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
