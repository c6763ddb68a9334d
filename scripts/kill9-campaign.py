#!/usr/bin/env python3
"""Kill -9 campaign: nothing acknowledged is lost when the daemon (or the metaserver it
uses) gets SIGKILL, under every write type.

For each write type, each kill point:
  1. writers (separate processes), each in a directory of its own, run random operations:
     create-or-overwrite (then fsync, or close), append and truncate (then fsync), renames
     of files (onto other files too) and of directories holding files, hard links,
     unlinks, user xattrs, mkdir and fsyncdir. Each logs an operation as begun before it
     starts and as done once it returned (data: once fsync or close returned), to a log
     outside the mount;
  2. after a random delay the daemon (or, with --kill metaserver, the metaserver) gets
     SIGKILL by PID, the writers too;
  3. `alluxio fsck` checks the namespace the kill left against itself (the stopped
     daemon's state directory, or the restarted metaserver);
  4. the daemon mounts again with the same state and cache directories (after a
     metaserver kill: the same daemon goes on, with no remount) and each writer's tree is
     read through the mount: names, directories, bytes, hard links and xattrs must be
     exactly what the done operations left, with the one in flight either done or not
     (a write in flight may also have left the file empty; after a metaserver kill, where
     the daemon lives on, a write or append in flight may also have left the part of its
     bytes the killed writer wrote, which its last close commits once the metaserver is
     back);
  5. once uploads are done (the ASYNC_THROUGH journal is empty) every file's bytes are in
     the store at exactly one of its names, and (on a local directory) nothing else is.
The next round writes through the daemon mounted in step 4, after removing the round's
tree through the mount (so a long campaign does not fill the disk). At the end the last
round's trees are checked again, through a fresh mount and in the store.

SEMANTICS promises that every namespace change survives a kill of the daemon once it
returned, and that fsync and close acknowledge data under every write type.

usage: scripts/kill9-campaign.py [--bin BIN] [--points N] [--types T,...] [--seed S]
                                 [--kill daemon|metaserver] [--s3 ENDPOINT] [--work DIR]
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


SIZES = [0, 1, PAGE - 1, PAGE, PAGE + 1, 2 * PAGE + 17]
EMPTY = sha(b"")


class Tree:
    """A writer's tree as its acknowledged operations left it: paths (relative to the
    writer's directory) naming files, each file's content digest and user xattrs, and the
    directories. Hard links are paths naming one file."""

    def __init__(self):
        self.paths, self.dirs, self.files, self.next = {}, {""}, {}, 0

    def copy(self):
        t = Tree()
        t.paths, t.dirs, t.next = dict(self.paths), set(self.dirs), self.next
        t.files = {f: {"sha": v["sha"], "size": v["size"], "x": dict(v["x"])}
                   for f, v in self.files.items()}
        return t

    def _gc(self, fid):
        if fid is not None and fid not in self.paths.values():
            del self.files[fid]

    def apply(self, op):
        k, p = op["k"], op.get("p")
        if k == "write":
            fid = self.paths.get(p)
            if fid is None:
                fid, self.next = self.next, self.next + 1
                self.paths[p] = fid
                self.files[fid] = {"x": {}}
            self.files[fid].update(sha=op["sha"], size=op["size"])
        elif k in ("append", "truncate"):
            self.files[self.paths[p]].update(sha=op["sha"], size=op["size"])
        elif k == "rename":
            fid, old = self.paths.pop(p), self.paths.get(op["to"])
            self.paths[op["to"]] = fid
            self._gc(old)
        elif k == "link":
            self.paths[op["to"]] = self.paths[p]
        elif k == "unlink":
            self._gc(self.paths.pop(p))
        elif k == "setxattr":
            self.files[self.paths[p]]["x"][op["n"]] = op["v"]
        elif k == "mkdir":
            self.dirs.add(p)
        elif k == "renamedir":
            to = op["to"]
            moved = lambda q: to + q[len(p):] if q == p or q.startswith(p + "/") else q
            self.paths = {moved(q): f for q, f in self.paths.items()}
            self.dirs = {moved(d) for d in self.dirs}
        return self


def writer(mnt, log_path, seed, round_no, wid):
    """Runs random operations on r{round}/w{wid} until the daemon is gone. Logs each one
    as begun ({"i", "b": op}) before it starts and as done ({"i", "d"}) once it returned
    (data: once fsync, or close, returned), and an error with its time."""
    rnd = random.Random(seed)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    note = lambda **r: os.write(log, (json.dumps(r) + "\n").encode())
    root = os.path.join(mnt, f"r{round_no}", f"w{wid}")
    try:
        os.mkdir(root)
    except OSError:
        return
    t, content, n = Tree(), {}, 0
    real = lambda q: os.path.join(root, q) if q else root
    while True:
        n += 1
        files, dirs = sorted(t.paths), sorted(t.dirs)
        fresh = lambda: (lambda d: f"{d}/f{n}" if d else f"f{n}")(rnd.choice(dirs))
        r = rnd.random()
        if not files or r < 0.30:
            p = fresh() if not files or rnd.random() < 0.6 else rnd.choice(files)
            ps = rnd.getrandbits(48)
            data = pattern(ps, rnd.choice(SIZES) if rnd.random() < 0.5
                           else rnd.randrange(0, 2 * PAGE))
            op = {"k": "write", "p": p, "sha": sha(data), "size": len(data),
                  "how": "fsync" if rnd.random() < 0.6 else "close", "ps": ps}
        elif r < 0.40:
            p = rnd.choice(files)
            ps, tail = rnd.getrandbits(48), rnd.randrange(1, PAGE + 3)
            data = content[t.paths[p]] + pattern(ps, tail)
            op = {"k": "append", "p": p, "sha": sha(data), "size": len(data), "ps": ps,
                  "tail": tail}
        elif r < 0.48:
            p = rnd.choice(files)
            old = content[t.paths[p]]
            size = rnd.choice([0, len(old) // 2, len(old) + 4097])
            data = old[:size] + bytes(max(0, size - len(old)))
            op = {"k": "truncate", "p": p, "sha": sha(data), "size": size}
        elif r < 0.60:
            to = rnd.choice(files) if rnd.random() < 0.3 else fresh()
            op = {"k": "rename", "p": rnd.choice(files), "to": to}
            if op["to"] == op["p"]:
                continue
        elif r < 0.68:
            op = {"k": "link", "p": rnd.choice(files), "to": fresh()}
        elif r < 0.78:
            op = {"k": "unlink", "p": rnd.choice(files)}
        elif r < 0.86:
            op = {"k": "setxattr", "p": rnd.choice(files), "n": f"user.k{rnd.randrange(3)}",
                  "v": f"{rnd.getrandbits(32):08x}"}
        elif r < 0.91:
            if len(dirs) > 4:
                continue
            op = {"k": "mkdir", "p": f"d{n}"}
        elif r < 0.95:
            sub = [d for d in dirs if d]
            if not sub:
                continue
            op = {"k": "renamedir", "p": rnd.choice(sub), "to": f"d{n}"}
        else:
            op = {"k": "fsyncdir", "p": rnd.choice(dirs)}
        if op["k"] == "rename" and t.paths.get(op["to"]) == t.paths[op["p"]]:
            continue  # two links of one file: rename(2) changes nothing
        if op["k"] not in ("write", "append", "truncate"):
            data = None
        note(i=n, b=op)
        try:
            k, p = op["k"], real(op["p"])
            if k in ("write", "append", "truncate"):
                flags = {"write": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                         "append": os.O_WRONLY | os.O_APPEND, "truncate": os.O_WRONLY}[k]
                fd = os.open(p, flags, 0o644)
                if k == "truncate":
                    os.ftruncate(fd, op["size"])
                else:
                    view = memoryview(data if k == "write" else data[len(content[t.paths[op["p"]]]):])
                    while view:
                        view = view[os.write(fd, view[: 1 << 20]):]
                if op.get("how", "fsync") == "fsync":
                    os.fsync(fd)
                    note(i=n, d=1)
                    os.close(fd)
                else:
                    os.close(fd)
                    note(i=n, d=1)
            elif k in ("rename", "renamedir"):
                os.rename(p, real(op["to"]))
                note(i=n, d=1)
            elif k == "link":
                os.link(p, real(op["to"]))
                note(i=n, d=1)
            elif k == "unlink":
                os.unlink(p)
                note(i=n, d=1)
            elif k == "setxattr":
                os.setxattr(p, op["n"], op["v"].encode())
                note(i=n, d=1)
            elif k == "mkdir":
                os.mkdir(p)
                note(i=n, d=1)
            else:
                fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
                os.fsync(fd)
                os.close(fd)
                note(i=n, d=1)
        except OSError as e:
            note(i=n, e=e.errno, t=time.monotonic(), what=str(e))
            return  # the daemon is gone (or failed: the checker tells which by the time)
        t.apply(op)
        if data is not None:
            content[t.paths[op["p"]]] = data
        for gone in set(content) - set(t.files):
            del content[gone]


def replay(log_path):
    """(the tree the done operations left, the operation in flight or None, errors, the
    done operations)."""
    t, pending, errors, done = Tree(), None, [], []
    if not os.path.exists(log_path):
        return t, None, errors, done
    with open(log_path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue  # a torn last line of a killed writer
            if "b" in r:
                pending = r["b"]
            elif "d" in r:
                t.apply(pending)
                done.append(pending)
                pending = None
            elif "e" in r:
                errors.append(r)
    return t, pending, errors, done


def candidates(t, pending):
    """The trees the kill may have left: the operation in flight happened or not; a write
    in flight may also have left the file truncated (empty) by its open."""
    out = [t]
    if pending is not None:
        out.append(t.copy().apply(pending))
        if pending["k"] == "write":
            out.append(t.copy().apply({**pending, "sha": EMPTY, "size": 0}))
    return out


def scan(root):
    """The tree under `root` as (dirs, {path: (ino, sha, {user xattr: value})}) or an
    error string."""
    dirs, files, where = {""}, {}, root
    try:
        for d, subdirs, names in os.walk(root, onerror=lambda e: (_ for _ in ()).throw(e)):
            rel = os.path.relpath(d, root)
            rel = "" if rel == "." else rel
            dirs.update(os.path.join(rel, s) for s in subdirs)
            for nm in names:
                q = os.path.join(d, nm)
                where = q
                st = os.lstat(q)
                with open(q, "rb") as f:
                    digest = sha(f.read())
                x = {a: os.getxattr(q, a).decode() for a in os.listxattr(q) if a.startswith("user.")}
                files[os.path.join(rel, nm)] = (st.st_ino, digest, x, st.st_size)
    except OSError as e:
        return f"{os.path.relpath(where, root)}: {e}"
    return dirs, files


def differences(t, dirs, files):
    """How the scanned tree differs from `t` (empty: the same)."""
    out = []
    if dirs != t.dirs:
        out.append(f"directories {sorted(dirs ^ t.dirs)} differ")
    for p in sorted(set(files) | set(t.paths)):
        if p not in files:
            out.append(f"{p}: missing")
        elif p not in t.paths:
            out.append(f"{p}: a name no operation left")
        else:
            want = t.files[t.paths[p]]
            if files[p][1] != want["sha"]:
                out.append(f"{p}: wrong bytes ({files[p][3]} bytes, expected {want['size']})")
            if files[p][2] != want["x"]:
                out.append(f"{p}: xattrs {files[p][2]} != {want['x']}")
    if not out:
        by_ino, by_fid = {}, {}
        for p, (ino, *_) in files.items():
            by_ino.setdefault(ino, set()).add(p)
            by_fid.setdefault(t.paths[p], set()).add(p)
        if sorted(map(sorted, by_ino.values())) != sorted(map(sorted, by_fid.values())):
            out.append("hard links differ")
    return out


def partial(root, t, pending):
    """With the daemon alive (a metaserver kill), a writer killed in the middle of its
    write or append leaves what it wrote so far, which its last close (made by the kernel
    as the process dies) commits: the new bytes up to some length. The tree with that
    outcome, when the file at the in-flight operation's name holds one; else None."""
    if pending is None or pending["k"] not in ("write", "append") or "ps" not in pending:
        return None
    try:
        with open(os.path.join(root, pending["p"]), "rb") as f:
            got = f.read()
    except OSError:
        return None
    if pending["k"] == "write":
        new = pattern(pending["ps"], pending["size"])
        ok = len(got) <= len(new) and got == new[:len(got)]
    else:
        fid = t.paths.get(pending["p"])
        if fid is None:
            return None
        base = pending["size"] - pending["tail"]
        new = pattern(pending["ps"], pending["tail"])
        ok = (base <= len(got) <= pending["size"] and sha(got[:base]) == t.files[fid]["sha"]
              and got[base:] == new[:len(got) - base])
    return t.copy().apply({**pending, "sha": sha(got), "size": len(got)}) if ok else None


def check_mount(root, log_path, partial_ok=False):
    """(the tree found, or None; the tree of the acknowledged operations; the operation
    in flight; failures). With `partial_ok`, a write or append in flight may also have
    left part of its bytes (`partial`)."""
    t, pending, _, done = replay(log_path)
    if not done and not os.path.exists(root):
        return t, t, pending, []  # killed before the writer made its directory
    got = scan(root)
    if isinstance(got, str):
        return None, t, pending, [f"unreadable: {got}"]
    dirs, files = got
    cands = candidates(t, pending)
    if partial_ok and (c := partial(root, t, pending)) is not None:
        cands.append(c)
    for c in cands:
        if not differences(c, dirs, files):
            return c, t, pending, []
    diffs = [differences(c, dirs, files) for c in cands]
    return None, t, pending, [f"with {pending} in flight, against each outcome: "
                     + " | ".join("; ".join(d[:4]) for d in diffs)]


STORE_AHEAD_IN_FLIGHT = 0


def check_store(args, ufs_root, rel_root, t, pending, base=None):
    """Each file of `t` has its bytes at exactly one of its names in the store, and (on a
    local directory) the store holds nothing else under the writer's directory. A file the
    write in flight created and never flushed has no object yet (SEMANTICS: it reads as
    empty). A file the data operation in flight (write, append, truncate) changed may hold
    that operation's bytes in the store while the mount shows the namespace's older
    version: its upload landed and the namespace's commit did not (the metaserver was
    killed between them; close failed). That is the store being ahead, which fsck reports
    and the next listing reconciles, not a loss: counted in STORE_AHEAD_IN_FLIGHT."""
    global STORE_AHEAD_IN_FLIGHT
    ahead_shas = set()
    if base is not None and pending is not None and pending["k"] in ("write", "append", "truncate"):
        for c in candidates(base, pending):
            fid = c.paths.get(pending["p"])
            if fid is not None:
                ahead_shas.add((pending["p"], c.files[fid]["sha"]))
    bad = []
    unflushed = pending["p"] if pending and pending["k"] == "write" else None
    objects = {}
    if args.s3:
        for p in t.paths:
            body = read_store(args, None, f"{rel_root}/{p}")
            if body is not None:
                objects[p] = sha(body)
    else:
        root = os.path.join(ufs_root, rel_root)
        for d, _, names in os.walk(root):
            for nm in names:
                q = os.path.join(d, nm)
                with open(q, "rb") as f:
                    objects[os.path.relpath(q, root)] = sha(f.read())
    for fid, f in t.files.items():
        names = [p for p, x in t.paths.items() if x == fid]
        held = [p for p in names if p in objects]
        if not held and names == [unflushed] and f["sha"] == EMPTY:
            continue
        if (len(held) == 1 and objects[held[0]] != f["sha"]
                and any((p, objects[held[0]]) in ahead_shas for p in names)):
            STORE_AHEAD_IN_FLIGHT += 1
            continue
        if len(held) != 1 or objects[held[0]] != f["sha"]:
            bad.append(f"store: {sorted(names)} held at {held} "
                       f"{'with wrong bytes' if held and objects[held[0]] != f['sha'] else ''}")
    for p in sorted(set(objects) - set(t.paths)):
        bad.append(f"store: {p} is an object no name shows")
    return bad


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


# ---------------------------------------------------------------------------------------
# The campaign.


def mounted(mnt):
    real = os.path.realpath(mnt)
    with open("/proc/mounts") as f:
        return any(line.split()[1] == real and line.split()[2].startswith("fuse") for line in f)


class Daemon:
    def __init__(self, args, home, mnt, ufs, opts, meta=None):
        self.args, self.home, self.mnt, self.ufs, self.opts = args, home, mnt, ufs, opts
        self.meta, self.proc = meta, None

    def meta_args(self):
        return ["--metaserver", self.meta.addr, "--token-file", self.meta.token] if self.meta else []

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
             "--state-dir", self.state_dir()] + self.meta_args(),
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
        where = (["--metaserver", self.meta.addr, "--token-file", self.meta.token] if self.meta
                 else ["--state-dir", self.state_dir()])
        r = subprocess.run([self.args.bin, "fsck"] + where + ["--ufs", self.ufs, "-o", self.opts],
                           env=self.env(), stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=300)
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

    def counters(self):
        r = subprocess.run([self.args.bin, "fuse", "stats", self.mnt, "--json"], env=self.env(),
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        try:
            return json.loads(r.stdout)["counters"]
        except (ValueError, KeyError):
            return {}

    def settle(self, limit=60):
        """Waits until the daemon is idle: no request in flight, no file open (a killed
        writer's descriptors are released, and their last close commits what they wrote),
        no such commit waiting to be tried again, and nothing sent to the store for a
        second."""
        t0, last, since = time.time(), None, time.time()
        while time.time() - t0 < limit:
            c = self.counters()
            now = (c.get("bytes_to_ufs"), c.get("ufs_writes"), c.get("fuse_requests"))
            idle = (c.get("fuse_in_flight", 1) == 0 and c.get("open_file_handles", 1) == 0
                    and c.get("close_commits_waiting", 0) == 0)
            if now != last or not idle:
                last, since = now, time.time()
            elif time.time() - since > 1.0:
                return True
            time.sleep(0.1)
        return False

    def journal_entries(self):
        """Uploads and deletes (ASYNC_THROUGH) not done yet."""
        n = 0
        mounts = os.path.join(self.home, "mounts")
        for m in os.listdir(mounts) if os.path.isdir(mounts) else []:
            j = os.path.join(mounts, m, "cache", "journal")
            if os.path.isdir(j):
                n += len(os.listdir(j))
            d = os.path.join(mounts, m, "cache", "deletes.log")
            if os.path.exists(d) and os.path.getsize(d) > 0:
                n += 1
        return n


def wait_uploads(daemon, limit=120):
    t0 = time.time()
    while daemon.journal_entries() > 0:
        if time.time() - t0 > limit:
            return False
        time.sleep(0.1)
    return True


class Metaserver:
    """`alluxio metaserver` on a fixed port of 127.0.0.1, restartable on the same port."""

    def __init__(self, args, home):
        self.args, self.home, self.proc = args, home, None
        self.token = os.path.join(home, "token")
        with open(self.token, "w") as f:
            f.write(f"kill9-{os.getpid()}\n")
        self.addr = None

    def start(self):
        listen = self.addr or "127.0.0.1:0"
        log = open(os.path.join(self.home, "metaserver.log"), "ab")
        self.proc = subprocess.Popen(
            [self.args.bin, "metaserver", "--listen", listen, "--data-dir",
             os.path.join(self.home, "meta"), "--token-file", self.token],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("listening on "):
            sys.exit(f"metaserver did not start: {line!r}; see {self.home}/metaserver.log")
        self.addr = line.split()[-1]

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


def campaign(args, wtype, work, rnd):
    """One write type: `args.points` kill points of the daemon (or, with --kill
    metaserver, of the metaserver the daemon uses)."""
    # A fresh start: objects an earlier campaign left in the directory would read as
    # bytes no operation wrote.
    shutil.rmtree(os.path.join(work, wtype), ignore_errors=True)
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
    meta = None
    if args.kill == "metaserver":
        meta = Metaserver(args, home)
        meta.start()
    stats = {"points": 0, "ops": 0, "data_ops": 0, "acked_bytes": 0, "ns_ops": 0,
             "failures": [], "store_ahead": 0, "ahead_at": STORE_AHEAD_IN_FLIGHT}
    last = []
    daemon = None
    try:
        for point in range(args.points):
            delay = rnd.choice([0, 0, 1]) if wtype == "ASYNC_THROUGH" else 0
            opts = f"write_type={wtype},upload_delay={delay}{extra}"
            if daemon is None or daemon.opts != opts:
                if daemon is not None:
                    daemon.stop()
                daemon = Daemon(args, home, mnt, ufs, opts, meta)
                daemon.start()
            os.makedirs(os.path.join(mnt, f"r{point}"), exist_ok=True)
            logs = [os.path.join(work, wtype, f"log-{point}-{wid}.jsonl") for wid in range(args.writers)]
            writers = [subprocess.Popen([sys.executable, __file__, "writer", mnt, lp,
                                         str(rnd.getrandbits(48)), str(point), str(wid)],
                                        stdin=subprocess.DEVNULL)
                       for wid, lp in enumerate(logs)]
            kill_after = rnd.uniform(0.05, args.max_run)
            time.sleep(kill_after)
            killed_at = time.monotonic()
            (meta or daemon).kill9()
            for w in writers:
                try:
                    w.kill()
                except ProcessLookupError:
                    pass
                w.wait()
            bad = []
            if meta is None:
                # The namespace the kill left must check clean against itself.
                ns_bad, ahead = daemon.fsck()
                daemon.start()
            else:
                meta.start()
                # The daemon goes on: what the killed writers left open is committed at
                # their last close, once the metaserver answers again.
                if not daemon.settle():
                    bad.append("the daemon did not settle within 60 s of the metaserver's restart")
                ns_bad, ahead = daemon.fsck()
            stats["store_ahead"] += len(ahead)
            bad += [f"fsck: {b}" for b in ns_bad]
            # Listing a directory the store is ahead of (a crash between an upload and its
            # namespace change) updates the file's inode, which the kernel may have cached
            # for another of its names for up to attr_ttl (1 s): one walk lists them all,
            # then the check waits that out.
            for wid in range(args.writers):
                scan(os.path.join(mnt, f"r{point}", f"w{wid}"))
            time.sleep(1.2)
            found = []
            for wid, lp in enumerate(logs):
                rel = f"r{point}/w{wid}"
                _, _, errors, done = replay(lp)
                bad += [f"{rel}: {e['what']} {e['t'] - killed_at:.2f} s before the kill"
                        for e in errors if e["t"] < killed_at - 0.05]
                tree, t, pending, wbad = check_mount(os.path.join(mnt, rel), lp,
                                                     partial_ok=meta is not None)
                bad += [f"mount {rel}: {b}" for b in wbad]
                found.append((rel, tree or t, pending, t))
                for op in done:
                    stats["ops"] += 1
                    if op["k"] in ("write", "append", "truncate"):
                        stats["data_ops"] += 1
                        stats["acked_bytes"] += op["size"]
                    else:
                        stats["ns_ops"] += 1
            if not wait_uploads(daemon):
                bad.append("uploads did not finish within 120 s")
            for rel, tree, pending, base in found:
                bad += [f"{rel} {b}" for b in check_store(args, ufs_dir, rel, tree, pending, base)]
            stats["points"] += 1
            stats["failures"] += [f"point {point}: {b}" for b in bad]
            if bad and args.stop_on_failure:
                print(f"stopping at the first failure; state kept in {work}", flush=True)
                for b in bad:
                    print(f"    {b}")
                break
            # The round's files go (through the mount: unlinks and rmdirs under test too),
            # so a long campaign does not fill the disk; the final check covers the last.
            if point < args.points - 1:
                shutil.rmtree(os.path.join(mnt, f"r{point}"), ignore_errors=True)
                for lp in filter(os.path.exists, logs):
                    os.remove(lp)
            else:
                last = found
            print(f"{wtype} point {point + 1}/{args.points}: {args.kill} killed after {kill_after:.2f} s "
                  f"(upload_delay {delay}), {stats['ops']} acknowledged operations so far, "
                  f"{len(bad)} failures" + "".join(f"\n    {b}" for b in bad[:5]), flush=True)
        if args.stop_on_failure and stats["failures"]:
            return stats
        # The last round again, through a fresh mount and in the store.
        daemon.stop()
        daemon.start()
        for rel, tree, pending, base in last:
            if not os.path.exists(os.path.join(mnt, rel)) and not tree.paths and tree.dirs == {""}:
                continue  # killed before the writer made its directory, as the round found
            got = scan(os.path.join(mnt, rel))
            if isinstance(got, str):
                stats["failures"].append(f"final: mount {rel}: {got}")
                continue
            # The tree the round found, or (a store that was ahead, now listed) another
            # outcome of the operation in flight.
            diffs = [differences(c, *got) for c in [tree] + candidates(base, pending)]
            if all(diffs):
                stats["failures"] += [f"final: mount {rel}: {d}" for d in diffs[0]]
        wait_uploads(daemon)
        for rel, tree, pending, base in last:
            stats["failures"] += [f"final: {rel} {b}"
                                  for b in check_store(args, ufs_dir, rel, tree, pending, base)]
    finally:
        if daemon is not None:
            daemon.stop()
        if meta is not None:
            meta.stop()
    stats["store_ahead_in_flight"] = STORE_AHEAD_IN_FLIGHT - stats.pop("ahead_at")
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
    p.add_argument("--kill", choices=["daemon", "metaserver"], default="daemon",
                   help="what gets SIGKILL: the FUSE daemon (embedded namespace), or the "
                        "metaserver a daemon uses (the daemon then carries on without a remount)")
    args = p.parse_args()
    args.bin = os.path.abspath(args.bin)
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    rnd = random.Random(seed)
    work = args.work or tempfile.mkdtemp(prefix="alluxio-kill9.")
    print(f"kill9 campaign: seed {seed}, {args.points} points per type, work {work}", flush=True)
    results = {}
    for wtype in args.types.split(","):
        results[wtype] = campaign(args, wtype, work, rnd)
    print(f"\n| write type | {args.kill} kill points | acknowledged operations | of them data (fsync/close) | namespace | acknowledged MiB written | store ahead: fsck lines (+ in-flight writes uploaded, not committed) | lost or wrong |")
    print("|---|---|---|---|---|---|---|---|")
    failed = False
    for wtype, s in results.items():
        print(f"| {wtype} | {s['points']} | {s['ops']} | {s['data_ops']} | {s['ns_ops']} | "
              f"{s['acked_bytes'] / PAGE:.1f} | {s['store_ahead']} (+{s.get('store_ahead_in_flight', 0)}) | "
              f"{len(s['failures'])} |")
        failed |= bool(s["failures"])
    for wtype, s in results.items():
        for f in s["failures"]:
            print(f"FAIL {wtype} {f}")
    if not args.work and not failed:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
