#!/usr/bin/env python3
"""Soak: mixed work through one mount for a long time; the daemon's memory and open
descriptors must not grow after warm-up, and every byte read must be right.

Workers (processes) write files of 0-8 MiB whose bytes follow from their names, read
random files whole and check them, rename and unlink (each keeps at most 24 files, so the
data set stays under 2 GiB for 8 workers), over a local-directory store, with a
cache far smaller than the data (so pages are evicted all the time) and a small memory
budget. Every SAMPLE seconds the daemon's RSS (VmRSS), its open descriptors and the
operations done so far are recorded.

Verdict: after the warm-up (the first quarter of the run), RSS and descriptors in the
last third may not exceed what they reached in the rest of the run after warm-up by more
than a margin (RSS: 10% + 16 MiB; descriptors: 10% + 8), and no read may return wrong
bytes. Exit 1 otherwise.

usage: scripts/soak.py [--minutes M] [--workers N] [--bin BIN] [--budget SIZE]
                       [--cache-size SIZE] [--work DIR] [--sample S]
Prints one table row per sample (time, RSS MiB, descriptors, operations) and the verdict.
Runs as root (mounts). Only processes it started are stopped, by PID.
"""
import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

MIB = 1 << 20
MAX_FILES = 24


def body(name, size):
    rnd = random.Random(hashlib.sha256(name.encode()).digest())
    block = rnd.randbytes(64 * 1024)
    return (block * (size // len(block) + 1))[:size]


def diagnose(path, got, want):
    """Where a wrong read differs, and what the store and a read past the kernel's page
    cache (O_DIRECT) hold: which layer served the wrong bytes."""
    first = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]),
                 min(len(got), len(want)))
    end = first
    while end < min(len(got), len(want)) and got[end] != want[end]:
        end += 1
    zeros = not any(got[first:end])
    out = (f"{len(got)} bytes read, {len(want)} expected; first difference at {first} "
           f"({end - first} bytes{' of zeros' if zeros else ''})")
    try:
        import mmap
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, 1 << 20)  # page-aligned, as O_DIRECT may want
        direct, off = b"", 0
        while True:
            n = os.preadv(fd, [buf], off)
            if not n:
                break
            direct += buf[:n]
            off += n
        os.close(fd)
        out += f"; O_DIRECT read {'right' if direct == want else 'wrong too'}"
    except OSError as e:
        out += f"; O_DIRECT read: {e.strerror}"
    again = open(path, "rb").read()
    out += f"; read again {'right' if again == want else 'wrong'}"
    ufs = path.replace(os.sep + "mnt" + os.sep, os.sep + "ufs" + os.sep, 1)
    try:
        stored = open(ufs, "rb").read()
        out += f"; the store holds {'the right bytes' if stored == want else 'wrong bytes too'}"
    except OSError as e:
        out += f"; the store: {e}"
    return out


def worker(mnt, wid, seconds, counter_path):
    """Writes, reads (checked), renames and unlinks in mnt/w{wid} until time is up."""
    rnd = random.Random(wid)
    root = os.path.join(mnt, f"w{wid}")
    os.makedirs(root, exist_ok=True)
    files = {}  # name -> size; at most MAX_FILES, so the data set stays bounded
    n = ops = bad = 0
    end = time.time() + seconds
    last_note = 0.0
    while time.time() < end:
        r = rnd.random()
        try:
            if len(files) >= MAX_FILES:
                r = 0.95  # unlink: the data set stays at most MAX_FILES x 8 MiB a worker
            if r < 0.35 or len(files) < 4:
                n += 1
                size = rnd.choice([0, 4096, MIB - 1, MIB, 3 * MIB + 5, rnd.randrange(8 * MIB)])
                name = f"f{n}-{size}"
                with open(os.path.join(root, name), "wb") as f:
                    f.write(body(name, size))
                files[name] = size
            elif r < 0.80:
                name = rnd.choice(list(files))
                with open(os.path.join(root, name), "rb") as f:
                    got = f.read()
                # A renamed file keeps the bytes of the name it was written under.
                want = body(name.split("~")[0], files[name])
                if got != want:
                    bad += 1
                    print(f"wrong bytes in {root}/{name}: {diagnose(os.path.join(root, name), got, want)}",
                          flush=True)
                    del files[name]  # kept as it is, for a look afterwards
            elif r < 0.90:
                name = rnd.choice(list(files))
                n += 1
                new = f"{name.split('~')[0]}~{n}"
                os.rename(os.path.join(root, name), os.path.join(root, new))
                files[new] = files.pop(name)
            else:
                name = rnd.choice(list(files))
                os.unlink(os.path.join(root, name))
                del files[name]
            ops += 1
        except OSError as e:
            bad += 1
            print(f"worker {wid}: {e}", flush=True)
            time.sleep(0.5)
        if time.time() - last_note > 1:
            note(counter_path, ops, bad)
            last_note = time.time()
    note(counter_path, ops, bad)


def note(counter_path, ops, bad):
    """Writes a worker's counts whole (a sample never reads a half-written file)."""
    with open(counter_path + ".tmp", "w") as f:
        f.write(f"{ops} {bad}\n")
    os.replace(counter_path + ".tmp", counter_path)


def mounted(mnt):
    with open("/proc/mounts") as f:
        return any(l.split()[1] == mnt for l in f)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for l in f:
            if l.startswith("VmRSS:"):
                return int(l.split()[1]) / 1024
    return 0.0


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--bin", default=shutil.which("alluxio") or "target/release/alluxio")
    ap.add_argument("--budget", default="256MiB")
    ap.add_argument("--cache-size", default="512MiB")
    ap.add_argument("--sample", type=float, default=10)
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    work = os.path.realpath(a.work or tempfile.mkdtemp(prefix="alluxio-soak."))
    os.makedirs(work, exist_ok=True)
    ufs, mnt, home = (os.path.join(work, d) for d in ("ufs", "mnt", "home"))
    for d in (ufs, mnt, home):
        os.makedirs(d, exist_ok=True)
    env = dict(os.environ, ALLUXIO_HOME=home, ALLUXIO_RUN_DIR=os.path.join(home, "run"))
    env.pop("ALLUXIO_LOG", None)
    log = open(os.path.join(work, "daemon.log"), "ab")
    daemon = subprocess.Popen(
        [os.path.abspath(a.bin), "fuse", "mount", mnt, "--ufs", ufs, "--mem-budget", a.budget,
         "--cache-size", a.cache_size], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    t0 = time.time()
    while not mounted(mnt):
        if daemon.poll() is not None or time.time() - t0 > 30:
            sys.exit(f"the mount did not come up; see {work}/daemon.log")
        time.sleep(0.05)
    seconds = a.minutes * 60
    counters = [os.path.join(work, f"ops-{w}") for w in range(a.workers)]
    workers = [subprocess.Popen([sys.executable, __file__, "worker", mnt, str(w), str(seconds),
                                 counters[w]], stdin=subprocess.DEVNULL)
               for w in range(a.workers)]
    samples = []
    print("| minute | daemon RSS MiB | open descriptors | operations | failed |", flush=True)
    print("|---|---|---|---|---|", flush=True)
    start = time.time()
    try:
        while any(w.poll() is None for w in workers):
            time.sleep(a.sample)
            ops = bad = 0
            for c in counters:
                try:
                    o, b = open(c).read().split()
                    ops, bad = ops + int(o), bad + int(b)
                except (OSError, ValueError):
                    pass
            s = ((time.time() - start) / 60, rss_mib(daemon.pid),
                 len(os.listdir(f"/proc/{daemon.pid}/fd")), ops, bad)
            samples.append(s)
            print(f"| {s[0]:.1f} | {s[1]:.0f} | {s[2]} | {s[3]} | {s[4]} |", flush=True)
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
            w.wait()
        subprocess.run([os.path.abspath(a.bin), "fuse", "unmount", mnt], env=env,
                       capture_output=True, timeout=60)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.send_signal(signal.SIGKILL)
            daemon.wait()
    warm = [s for s in samples if s[0] >= a.minutes / 4]
    third = max(1, len(warm) // 3)
    early, late = warm[:-third], warm[-third:]
    fails = []
    if not early:
        fails.append("too short a run to judge growth")
    else:
        rss_cap = max(s[1] for s in early) * 1.10 + 16
        fd_cap = max(s[2] for s in early) * 1.10 + 8
        if max(s[1] for s in late) > rss_cap:
            fails.append(f"RSS grew: {max(s[1] for s in late):.0f} MiB late vs cap {rss_cap:.0f}")
        if max(s[2] for s in late) > fd_cap:
            fails.append(f"descriptors grew: {max(s[2] for s in late)} late vs cap {fd_cap:.0f}")
    if samples and samples[-1][4]:
        fails.append(f"{samples[-1][4]} operations failed or read wrong bytes")
    print(f"\nsoak: {a.minutes:.0f} min, {a.workers} workers, {samples[-1][3] if samples else 0} operations; "
          + ("; ".join(fails) if fails else "no growth of RSS or descriptors after warm-up, no wrong bytes"))
    if not fails and not a.work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
