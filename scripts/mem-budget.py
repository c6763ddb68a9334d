#!/usr/bin/env python3
"""Peak resident memory of the daemon against its --mem-budget, under concurrent readers.

For each budget and each number of readers: a fresh daemon over a local directory holding
`--size` bytes split into one file per reader, mounted with `-o nopassthrough` (so the
daemon, not the kernel, serves every read: the worst case for its memory), then fio
readers, sequential (1 MiB) and random (128 KiB), each cold (empty cache) and then warm
(everything cached). Then, for each number of writers, readers and writers at once over
an object store (tools/s3-server, built if needed, started here on 127.0.0.1): that many
fio writers each write a new file of `--size`/N bytes in 1 MiB writes and fsync it, which
streams multipart uploads and holds their part buffers, while as many readers read the
store's files cold. The peak RSS of each run (VmHWM, reset between runs through
/proc/PID/clear_refs) must stay within the budget + 64 MiB.

usage: scripts/mem-budget.py [--bin BIN] [--size 2G] [--budgets 256MiB,1GiB]
                             [--readers 16,64] [--writers 16,64] [--runtime 20]
Prints a table and exits 1 if any run went over. Runs as root (mounts); stops only the
daemons it started, by PID, and unmounts on every exit path.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

MIB = 1 << 20
SLACK = 64 * MIB


def parse_size(s):
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = s.strip().lower().removesuffix("ib").removesuffix("b")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def mounted(mnt):
    real = os.path.realpath(mnt)
    with open("/proc/mounts") as f:
        return any(l.split()[1] == real for l in f)


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


class S3Server:
    """tools/s3-server over `root` (its top-level directories are buckets), on 127.0.0.1."""

    def __init__(self, root):
        here = os.path.dirname(os.path.abspath(__file__))
        manifest = os.path.join(here, "..", "tools", "s3-server", "Cargo.toml")
        subprocess.run(["cargo", "build", "--release", "--locked", "-q", "--manifest-path",
                        manifest], check=True)
        binary = os.path.join(here, "..", "tools", "s3-server", "target", "release",
                              "alluxio-s3-server")
        self.addr_file = os.path.join(root, "s3.addr")
        self.root = os.path.join(root, "s3root")
        os.makedirs(os.path.join(self.root, "bench"))
        with open(self.addr_file, "w") as out, open(os.path.join(root, "s3.log"), "ab") as log:
            self.proc = subprocess.Popen(
                [binary, "127.0.0.1:0", self.root, "bench", "benchsecret"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=log)
        t0 = time.time()
        while True:
            with open(self.addr_file) as f:
                addr = f.readline().strip()
            if addr:
                break
            if self.proc.poll() is not None or time.time() - t0 > 30:
                raise SystemExit(f"S3 server did not start; see {root}/s3.log")
            time.sleep(0.1)
        self.port = addr.rsplit(":", 1)[1]

    def ufs_args(self, prefix):
        return ["--ufs", f"s3://bench/{prefix}", "-o",
                f"endpoint=http://127.0.0.1:{self.port},region=us-east-1,"
                "access_key_id=bench,secret_access_key=benchsecret"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


class Daemon:
    def __init__(self, binary, work, ufs, budget):
        self.work, self.mnt = work, os.path.join(work, "mnt")
        os.makedirs(self.mnt, exist_ok=True)
        env = dict(os.environ, ALLUXIO_HOME=os.path.join(work, "home"),
                   ALLUXIO_RUN_DIR=os.path.join(work, "run"))
        env.pop("ALLUXIO_LOG", None)
        self.env, self.binary = env, binary
        log = open(os.path.join(work, "daemon.log"), "ab")
        ufs = ufs if isinstance(ufs, list) else ["--ufs", ufs]
        self.proc = subprocess.Popen(
            [binary, "fuse", "mount", self.mnt, *ufs, "--mem-budget", str(budget),
             "--cache-size", "8GiB", "--cache-dir", os.path.join(work, "cache"),
             "--state-dir", os.path.join(work, "state"), "-o", "nopassthrough"],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        t0 = time.time()
        while not mounted(self.mnt):
            if self.proc.poll() is not None or time.time() - t0 > 30:
                raise SystemExit(f"daemon did not mount; see {work}/daemon.log")
            time.sleep(0.05)

    def reset_peak(self):
        with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS

    def peak(self):
        return status(self.proc.pid, "VmHWM")

    def stop(self):
        if self.proc.poll() is None:
            subprocess.run([self.binary, "fuse", "unmount", self.mnt], env=self.env,
                           capture_output=True, timeout=60)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if mounted(self.mnt):
            subprocess.run(["umount", "-l", self.mnt], capture_output=True)


def layout(directory, jobs, per_file):
    """fio's files for `jobs` readers, written straight into a store's directory (named as
    a run through the mount will look for them)."""
    os.makedirs(directory, exist_ok=True)
    for extra in (["--create_only=1"], ["--refill_buffers"]):
        subprocess.run(["fio", "--name=r", f"--directory={directory}", "--rw=write",
                        "--bs=1m", f"--numjobs={jobs}", f"--size={per_file}", *extra],
                       check=True, capture_output=True)


def mixed(mnt, jobs, per_file):
    """`jobs` readers of the layout at `mnt` and `jobs` writers of new files under
    `mnt`/w, at once; their bandwidths (B/s)."""
    os.makedirs(os.path.join(mnt, "w"), exist_ok=True)
    common = [f"--numjobs={jobs}", f"--size={per_file}", "--bs=1m", "--ioengine=psync",
              "--group_reporting", "--minimal"]
    r = subprocess.Popen(["fio", "--name=r", f"--directory={mnt}", "--rw=read",
                          "--invalidate=1", *common],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    w = subprocess.Popen(["fio", "--name=w", f"--directory={os.path.join(mnt, 'w')}",
                          "--rw=write", "--end_fsync=1", "--refill_buffers", *common],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = []
    for proc, field in ((r, 6), (w, 47)):
        so, se = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise SystemExit(f"fio failed: {se.strip()}")
        out.append(int(so.strip().split(";")[field]) * 1024)  # KiB/s -> B/s
    return out


def fio(directory, readers, per_file, pattern, runtime):
    rw, bs = ("read", "1m") if pattern == "seq" else ("randread", "128k")
    cmd = ["fio", "--name=r", f"--directory={directory}", f"--rw={rw}", f"--bs={bs}",
           f"--numjobs={readers}", f"--size={per_file}", "--ioengine=psync",
           "--invalidate=1", "--group_reporting", "--minimal"]
    if pattern == "rand":
        cmd += ["--time_based", f"--runtime={runtime}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"fio failed: {out.stderr.strip()}")
    f = out.stdout.strip().split(";")
    return int(f[6]) * 1024  # read bandwidth, KiB/s -> B/s


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", default=shutil.which("alluxio") or "target/release/alluxio")
    p.add_argument("--size", default="2G", help="bytes read per run, split over the readers")
    p.add_argument("--budgets", default="256MiB,1GiB")
    p.add_argument("--readers", default="16,64")
    p.add_argument("--writers", default="16,64",
                   help="writers (beside as many readers) over an object store; 0 skips")
    p.add_argument("--runtime", type=int, default=20, help="seconds of each random run")
    args = p.parse_args()
    binary = os.path.abspath(args.bin)
    total = parse_size(args.size)
    root = tempfile.mkdtemp(prefix="alluxio-mem.")
    rows, over = [], False
    daemon = server = None

    def stop(*_):
        if daemon:
            daemon.stop()
        if server:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
        sys.exit(130)

    signal.signal(signal.SIGTERM, stop)
    try:
        for readers in [int(r) for r in args.readers.split(",")]:
            per_file = total // readers
            ufs = os.path.join(root, f"ufs-{readers}")
            os.makedirs(ufs)
            # Every read through the mount is of an existing object.
            layout(ufs, readers, per_file)
            for budget_s in args.budgets.split(","):
                budget = parse_size(budget_s)
                for pattern in ["seq", "rand"]:
                    work = os.path.join(root, f"run-{readers}-{budget_s}-{pattern}")
                    os.makedirs(work)
                    daemon = Daemon(binary, work, ufs, budget)
                    for phase in ["cold", "warm"]:
                        daemon.reset_peak()
                        bw = fio(daemon.mnt, readers, per_file, pattern, args.runtime)
                        peak = daemon.peak()
                        ok = peak <= budget + SLACK
                        over |= not ok
                        rows.append((budget_s, readers, pattern, phase, bw, peak, budget, ok))
                        print(f"budget {budget_s}, {readers} readers, {pattern} {phase}: "
                              f"{bw / MIB:.0f} MiB/s, peak RSS {peak / MIB:.0f} MiB "
                              f"(limit {(budget + SLACK) / MIB:.0f}) {'ok' if ok else 'OVER'}",
                              flush=True)
                    daemon.stop()
                    daemon = None
                    shutil.rmtree(work, ignore_errors=True)
        writers = [int(w) for w in args.writers.split(",") if int(w) > 0]
        if writers:
            server = S3Server(root)
        for jobs in writers:
            per_file = total // jobs
            prefix = f"mixed-{jobs}"
            layout(os.path.join(server.root, "bench", prefix), jobs, per_file)
            for budget_s in args.budgets.split(","):
                budget = parse_size(budget_s)
                work = os.path.join(root, f"run-mixed-{jobs}-{budget_s}")
                os.makedirs(work)
                daemon = Daemon(binary, work, server.ufs_args(prefix), budget)
                daemon.reset_peak()
                rbw, wbw = mixed(daemon.mnt, jobs, per_file)
                peak = daemon.peak()
                ok = peak <= budget + SLACK
                over |= not ok
                rows.append((budget_s, f"{jobs} + {jobs} writers", "mixed, S3",
                             "cold", f"{rbw / MIB:.0f} r / {wbw / MIB:.0f} w", peak, budget,
                             ok))
                print(f"budget {budget_s}, {jobs} readers + {jobs} writers over S3: read "
                      f"{rbw / MIB:.0f} MiB/s, write {wbw / MIB:.0f} MiB/s, peak RSS "
                      f"{peak / MIB:.0f} MiB (limit {(budget + SLACK) / MIB:.0f}) "
                      f"{'ok' if ok else 'OVER'}", flush=True)
                daemon.stop()
                daemon = None
                shutil.rmtree(work, ignore_errors=True)
                # The next budget's writers start from an empty directory again.
                shutil.rmtree(os.path.join(server.root, "bench", prefix, "w"),
                              ignore_errors=True)
    finally:
        if daemon:
            daemon.stop()
        if server:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
    print("\n| budget | readers | pattern | phase | MiB/s | peak RSS MiB | limit MiB | |")
    print("|---|---|---|---|---|---|---|---|")
    for b, r, pat, ph, bw, peak, budget, ok in rows:
        bw = bw if isinstance(bw, str) else f"{bw / MIB:.0f}"
        print(f"| {b} | {r} | {pat} | {ph} | {bw} | {peak / MIB:.0f} | "
              f"{(budget + SLACK) / MIB:.0f} | {'ok' if ok else 'OVER'} |")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
