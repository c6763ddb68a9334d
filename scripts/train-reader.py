#!/usr/bin/env python3
"""A training-shaped reader: the shape of a PyTorch DataLoader over a directory of
samples, without PyTorch.

N worker processes (default 8) read whole files in a shuffled order (one order per
epoch, dealt to the workers batch by batch as a DataLoader's sampler does), check each
file's CRC32 against a manifest, and report files/s, MB/s and the time to the first
batch (from the start of the epoch until some worker has read its first BATCH files).

    train-reader.py layout DIR --manifest M [--files 10000] [--min-kib 64] [--max-kib 512]
    train-reader.py epoch  DIR --manifest M [--workers 8] [--batch 32] [--epoch N] [--json]

`layout` writes the data set (100 files per directory) and its manifest (kept outside
DIR, so that reading DIR through a mount never reads the manifest through it). `epoch`
exits 1 if any file is missing, short, or has the wrong checksum.
"""

import argparse
import json
import multiprocessing as mp
import os
import random
import sys
import time
import zlib


def layout(args):
    rng = random.Random(args.seed)
    entries = []
    os.makedirs(args.dir, exist_ok=True)
    for i in range(args.files):
        rel = f"d{i // 100:04d}/s{i:06d}.bin"
        path = os.path.join(args.dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        size = rng.randint(args.min_kib * 1024, args.max_kib * 1024)
        data = rng.randbytes(size)
        with open(path, "wb") as f:
            f.write(data)
        entries.append([rel, size, zlib.crc32(data)])
    with open(args.manifest, "w") as f:
        json.dump({"files": entries}, f)
    total = sum(e[1] for e in entries)
    print(f"laid out {len(entries)} files, {total} bytes in {args.dir}")


def worker(root, items, batch, start, out):
    first_batch = None
    files = nbytes = 0
    bad = []
    for n, (rel, size, crc) in enumerate(items, 1):
        try:
            with open(os.path.join(root, rel), "rb") as f:
                data = f.read()
        except OSError as e:
            bad.append(f"{rel}: {e}")
            continue
        if len(data) != size or zlib.crc32(data) != crc:
            bad.append(f"{rel}: {len(data)} bytes, crc {zlib.crc32(data):08x}; want {size}, {crc:08x}")
        files += 1
        nbytes += len(data)
        if n == batch:
            first_batch = time.monotonic() - start
    if first_batch is None and items:
        first_batch = time.monotonic() - start
    out.put({"files": files, "bytes": nbytes, "first_batch": first_batch, "bad": bad})


def epoch(args):
    with open(args.manifest) as f:
        entries = json.load(f)["files"]
    order = list(range(len(entries)))
    random.Random(args.seed * 1000 + args.epoch).shuffle(order)
    # Batches dealt round-robin to the workers, as a DataLoader with a shuffling sampler.
    shares = [[] for _ in range(args.workers)]
    for b, at in enumerate(range(0, len(order), args.batch)):
        shares[b % args.workers].extend(entries[i] for i in order[at:at + args.batch])
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    start = time.monotonic()
    procs = [ctx.Process(target=worker, args=(args.dir, s, args.batch, start, out)) for s in shares]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    took = time.monotonic() - start
    files = sum(r["files"] for r in results)
    nbytes = sum(r["bytes"] for r in results)
    bad = [b for r in results for b in r["bad"]]
    firsts = [r["first_batch"] for r in results if r["first_batch"] is not None]
    summary = {
        "epoch": args.epoch, "workers": args.workers, "files": files, "bytes": nbytes,
        "seconds": took, "files_per_s": files / took, "mb_per_s": nbytes / 1e6 / took,
        "first_batch_s": min(firsts) if firsts else None, "bad": len(bad),
    }
    for b in bad[:20]:
        print(f"train-reader: {b}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"epoch {args.epoch}: {files} files, {nbytes / 1e6:.0f} MB in {took:.2f} s: "
              f"{summary['files_per_s']:.0f} files/s, {summary['mb_per_s']:.0f} MB/s, "
              f"first batch after {summary['first_batch_s']:.3f} s, {len(bad)} bad")
    return 1 if bad or files != len(entries) else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["layout", "epoch"])
    ap.add_argument("dir")
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--min-kib", type=int, default=64)
    ap.add_argument("--max-kib", type=int, default=512)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epoch", type=int, default=1)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.mode == "layout":
        layout(args)
        return 0
    return epoch(args)


if __name__ == "__main__":
    sys.exit(main())
