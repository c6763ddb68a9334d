#!/usr/bin/env bash
# Benchmarks the fio jobs in fio-jobs/ in one run on the local disk and through an alluxio
# mount over a local directory, and prints figures and ratios (mount / local disk).
#
#   local-direct   local disk, O_DIRECT (the device)
#   local-cached   local disk, page cache warm (memory)
#   mount-cold     fresh mount, empty cache, page cache dropped
#   mount-disk     remounted over the same cache (memory tier empty), page cache dropped
#   mount-mem      same mount again, pages in the memory tier
#
# usage: scripts/bench.sh [--smoke] [--size SIZE] [--out DIR]
#   --smoke   tiny sizes and short runtimes; every mount read is checked with crc32c
# Results: one JSON per (mode, job) and summary.json under --out (default target/bench).
# Not yet here: the S3 server's ceiling, JuiceFS peers (--peers), metadata script.
set -euo pipefail
cd "$(dirname "$0")/.."
smoke=0 size=1G runtime=10 nrfiles=2000 out=target/bench
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) smoke=1 size=16M runtime=2 nrfiles=64 ;;
    --size) size=$2; shift ;;
    --out) out=$2; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
command -v fio >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio </dev/null; }
if [ $smoke = 1 ]; then profile=debug; cargo build --locked -q -p alluxio-cli
else profile=release; cargo build --release --locked -q -p alluxio-cli; fi
bin=$(pwd)/target/$profile/alluxio
mkdir -p "$out"
out=$(realpath "$out")
work=$(mktemp -d /var/tmp/alluxio-bench.XXXXXX)
ufs=$work/ufs mnt=$work/mnt
mkdir -p "$ufs" "$mnt"
pid=
stop() {
  if grep -q " $mnt fuse" /proc/mounts; then "$bin" fuse unmount "$mnt" || umount -l "$mnt"; fi
  if [ -n "$pid" ]; then wait "$pid" 2>/dev/null || true; fi
  pid=
}
trap 'stop; rm -rf "$work"' EXIT

export SIZE=$size RUNTIME=$runtime NRFILES=$nrfiles SMALL_TOTAL=$((nrfiles * 128))k
reads="seq_read_1m_1job seq_read_1m_4jobs rand_read_4k_qd1 rand_read_4k_qd16 small_files_128k"
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
run() { # MODE JOB DIR [fio args...]
  local mode=$1 job=$2 dir=$3
  shift 3
  DIR=$dir fio --output-format=json "$@" "fio-jobs/$job.fio" >"$out/$mode.$job.json"
}
mount_alluxio() { # CACHE_DIR
  ALLUXIO_HOME=$work/home ALLUXIO_RUN_DIR=$work/run "$bin" fuse mount "$mnt" --ufs "$ufs" \
    --cache-dir "$1" --state-dir "$work/state" --mem-cache-size 2GiB --cache-size 20GiB \
    >>"$work/daemon.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q " $mnt fuse.alluxio" /proc/mounts && return 0; sleep 0.1; done
  cat "$work/daemon.log" >&2
  return 1
}
rss_kb() { awk '/VmHWM/ {print $2}' "/proc/$pid/status"; }

echo "== laying out data ($size per file, $nrfiles small files) in $ufs"
for job in $reads; do DIR=$ufs fio --create_only=1 "fio-jobs/$job.fio" >/dev/null; done
verify=()
[ $smoke = 1 ] && verify=(--verify=crc32c --verify_only=0)

echo "== local disk"
for job in $reads; do drop; run local-direct "$job" "$ufs" --direct=1; done
# fio drops a file's page cache before each job unless told not to (invalidate=0).
for job in $reads; do
  run local-cached "$job" "$ufs" --invalidate=0
  run local-cached "$job" "$ufs" --invalidate=0
done

echo "== mount: cold, warm from the disk tier, warm in memory"
: >"$out/rss.txt"
for job in $reads; do
  stop; rm -rf "$work/cache" "$work/state"; mount_alluxio "$work/cache"
  drop; run mount-cold "$job" "$mnt"
  stop; mount_alluxio "$work/cache"
  drop; run mount-disk "$job" "$mnt"
  run mount-mem "$job" "$mnt" --invalidate=0
  echo "$job $(rss_kb)" >>"$out/rss.txt"
done
stop

echo "== write + fsync"
rm -f "$ufs/seq_write.dat"
run local-direct seq_write_fsync "$ufs" --direct=1
rm -rf "$work/cache" "$work/state"; mount_alluxio "$work/cache"
run mount-cold seq_write_fsync "$mnt"
echo "seq_write_fsync $(rss_kb)" >>"$out/rss.txt"
cmp -s <(head -c 1M "$ufs/seq_write.dat") <(head -c 1M "$mnt/seq_write.dat") || { echo "written data differs" >&2; exit 1; }
stop

if [ $smoke = 1 ]; then
  echo "== smoke: crc32c-verified write and read through a mount"
  rm -rf "$work/cache" "$work/state"; mount_alluxio "$work/cache"
  DIR=$mnt fio --name=verify --directory="$mnt" --rw=randwrite --bs=64k --size=8m \
    --verify=crc32c --do_verify=1 --output-format=terse >/dev/null
  stop
fi

python3 - "$out" $reads seq_write_fsync <<'PY'
import json, os, sys
out, jobs = sys.argv[1], sys.argv[2:]
modes = ["local-direct", "local-cached", "mount-cold", "mount-disk", "mount-mem"]
def fig(mode, job):
    p = os.path.join(out, f"{mode}.{job}.json")
    if not os.path.exists(p):
        return None
    j = json.load(open(p))["jobs"]
    if job.startswith("rand"):
        return sum(x["read"]["iops"] for x in j), "IOPS"
    key = "write" if "write" in job else "read"
    if job.startswith("small"):
        files = sum(x[key]["io_bytes"] for x in j) / (128 * 1024)
        secs = max(x[key]["runtime"] for x in j) / 1000 or 1
        return files / secs, "files/s"
    return sum(x[key]["bw_bytes"] for x in j) / 1e6, "MB/s"
rss = dict(l.split() for l in open(os.path.join(out, "rss.txt")) if l.strip())
summary = {}
print(f"{'job':<20}{'unit':>8}" + "".join(f"{m:>14}" for m in modes) + f"{'disk/direct':>13}{'mem/cached':>12}{'rss MiB':>9}")
for job in jobs:
    row = {m: fig(m, job) for m in modes}
    unit = next((v[1] for v in row.values() if v), "")
    vals = {m: (v[0] if v else None) for m, v in row.items()}
    ratio = lambda a, b: (vals[a] / vals[b]) if vals.get(a) and vals.get(b) else None
    r1 = ratio("mount-disk", "local-direct") or (ratio("mount-cold", "local-direct") if "write" in job else None)
    r2 = ratio("mount-mem", "local-cached")
    cells = "".join(f"{(f'{vals[m]:.0f}' if vals[m] else '-'):>14}" for m in modes)
    fmt = lambda r: f"{r:.2f}x" if r else "-"
    print(f"{job:<20}{unit:>8}{cells}{fmt(r1):>13}{fmt(r2):>12}{int(rss.get(job, 0)) // 1024:>9}")
    summary[job] = {"unit": unit, **vals, "mount_disk_over_local_direct": r1, "mount_mem_over_local_cached": r2, "daemon_peak_rss_kib": int(rss.get(job, 0))}
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
print(f"saved {os.path.join(out, 'summary.json')}")
PY
