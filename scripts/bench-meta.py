#!/usr/bin/env python3
"""Metadata benchmark: create, stat and unlink N files in one directory, then `ls -lR` of a
tree of M entries. Prints one JSON object of operations per second.

usage: bench-meta.py DIR [--files N] [--tree M]
Each phase runs in a fresh subdirectory of DIR; DIR is left as it was found.
"""
import argparse
import json
import os
import subprocess
import time


def rate(n, secs):
    return n / secs if secs > 0 else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--tree", type=int, default=10000)
    a = ap.parse_args()
    base = os.path.join(a.dir, f"meta.{os.getpid()}")
    os.mkdir(base)
    flat = os.path.join(base, "flat")
    os.mkdir(flat)
    names = [os.path.join(flat, f"f{i:05d}") for i in range(a.files)]
    out = {}

    t = time.perf_counter()
    for p in names:
        os.close(os.open(p, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644))
    out["create_per_s"] = rate(a.files, time.perf_counter() - t)

    t = time.perf_counter()
    for p in names:
        os.stat(p)
    out["stat_per_s"] = rate(a.files, time.perf_counter() - t)

    t = time.perf_counter()
    for p in names:
        os.unlink(p)
    out["unlink_per_s"] = rate(a.files, time.perf_counter() - t)

    # A tree of 100 directories holding the rest as files: 10,000 entries by default.
    tree = os.path.join(base, "tree")
    os.mkdir(tree)
    dirs = max(1, a.tree // 100)
    per = max(0, a.tree // dirs - 1)
    for d in range(dirs):
        dp = os.path.join(tree, f"d{d:03d}")
        os.mkdir(dp)
        for i in range(per):
            os.close(os.open(os.path.join(dp, f"f{i:03d}"), os.O_CREAT | os.O_WRONLY, 0o644))
    entries = dirs * (per + 1)
    # Listing sees what the kernel does not cache yet: drop dentries and attributes.
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    t = time.perf_counter()
    subprocess.run(["ls", "-lR", tree], check=True, stdout=subprocess.DEVNULL)
    secs = time.perf_counter() - t
    out["ls_lR_entries"] = entries
    out["ls_lR_seconds"] = secs
    out["ls_lR_entries_per_s"] = rate(entries, secs)

    subprocess.run(["rm", "-rf", base], check=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
