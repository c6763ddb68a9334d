#!/usr/bin/env bash
# The cluster's page transfer on this machine: a 1 GiB object read page by page from 1, 2
# and 3 cache nodes (`alluxio peer-bench`, the daemon's own peer client, no FUSE), warm
# after a first round that fills the nodes from the store, beside the physical limit of
# the same loopback (a plain TCP stream of 1 MiB buffers between two processes) and
# beside tonic (gRPC) streaming 1 MiB messages, the transport the peer protocol was
# chosen against. The three are interleaved, round by round (this machine is noisy), and
# each figure is the median of its rounds. Prints MB/s, the reader's and the servers'
# CPU seconds per GiB (the servers' from /proc, over exactly the rounds they served),
# and the ratios.
#
# usage: scripts/bench-peers.sh [--size SIZE] [--parallel N] [--rounds N] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
size=1G parallel=8 rounds=5 out=target/bench-peers
while [ $# -gt 0 ]; do
  case $1 in
    --size) size=$2; shift ;;
    --parallel) parallel=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --out) out=$2; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
cargo build --release --locked -q -p alluxio-cli
bin=$(pwd)/target/release/alluxio
mkdir -p "$out"
out=$(realpath "$out")
rm -f "$out"/*.json
work=$(mktemp -d /var/tmp/alluxio-peers.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/ufs"
bytes=$(numfmt --from=iec "$size")
head -c "$bytes" /dev/urandom >"$work/ufs/obj"
echo "bench-token" >"$work/token"
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
hz=$(getconf CLK_TCK)
# start NAME ARGS...: a server that prints "listening on ADDR"; sets $addr and $pid.
start() {
  local name=$1; shift
  "$bin" "$@" >"$work/$name.addr" 2>>"$work/servers.log" &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 100); do [ -s "$work/$name.addr" ] && break; sleep 0.1; done
  addr=$(sed -n 's/^listening on //p' "$work/$name.addr")
}
# timed FILE PIDS -- CMD...: runs CMD, appends its JSON line to FILE with the ticks the
# server PIDS spent meanwhile.
timed() {
  local file=$1; shift
  local servers=()
  while [ "$1" != "--" ]; do servers+=("$1"); shift; done
  shift
  local t0 line
  t0=$(ticks "${servers[@]}")
  line=$("$@" | tail -1)
  echo "$line" | python3 -c "import json,sys; d=json.load(sys.stdin); d['server_ticks']=$(( $(ticks "${servers[@]}") - t0 )); print(json.dumps(d))" >>"$file"
  echo "$line"
}

start tcp peer-bench --tcp-serve 127.0.0.1:0; tcp_addr=$addr tcp_pid=$pid
start grpc peer-bench --grpc-serve 127.0.0.1:0; grpc_addr=$addr grpc_pid=$pid

for n in 1 2 3; do
  echo "== $n cache node(s), interleaved with the plain stream and tonic"
  addrs=() node_pids=()
  for i in $(seq "$n"); do
    start "node$n.$i" cache-node --listen 127.0.0.1:0 --cache-dir "$work/node$n.$i" \
      --cache-size 4GiB --mem-cache-size 256MiB --ufs "$work/ufs" --token-file "$work/token"
    addrs+=("$addr") node_pids+=("$pid")
  done
  list=$(IFS=,; echo "${addrs[*]}")
  peers=("$bin" peer-bench --peers "$list" --ufs "$work/ufs" --key obj --token-file "$work/token" --parallel "$parallel")
  # Fill from the store, then one warm round that brings the pages (written O_DIRECT,
  # so not in the page cache) up from the device.
  "${peers[@]}" --rounds 2 >"$work/fill.json"
  head -1 "$work/fill.json" | tee "$out/nodes$n.first.json"
  for _ in $(seq "$rounds"); do
    timed "$out/tcp$n.json" "$tcp_pid" -- "$bin" peer-bench --tcp "$tcp_addr" --bytes "$bytes" --parallel "$parallel"
    timed "$out/grpc$n.json" "$grpc_pid" -- "$bin" peer-bench --grpc "$grpc_addr" --bytes "$bytes" --parallel "$parallel"
    timed "$out/nodes$n.warm.json" "${node_pids[@]}" -- "${peers[@]}" --rounds 1 --warm
  done
  for p in "${node_pids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
done

python3 - "$out" "$hz" <<'PY'
import json, os, statistics, sys
out, hz = sys.argv[1], int(sys.argv[2])
def runs(name):
    return [json.loads(l) for l in open(os.path.join(out, name)) if l.strip()]
def med(rs, key):
    return statistics.median(r[key] for r in rs)
def server_s_per_gib(rs):
    return statistics.median(r["server_ticks"] / hz / (r["bytes"] / 2**30) for r in rs)
summary = {"nodes": {}}
print(f"\n{'nodes':>5} {'first':>6} {'warm':>6} {'tcp':>6} {'grpc':>6} {'warm/tcp':>9} {'warm/grpc':>10}"
      f" {'client s/GiB':>13} {'nodes s/GiB':>12} {'tcp rd/srv s/GiB':>17} {'grpc rd/srv s/GiB':>18}")
for n in (1, 2, 3):
    first = json.load(open(os.path.join(out, f"nodes{n}.first.json")))
    warm, tcp, grpc = runs(f"nodes{n}.warm.json"), runs(f"tcp{n}.json"), runs(f"grpc{n}.json")
    w, t, g = med(warm, "mb_per_s"), med(tcp, "mb_per_s"), med(grpc, "mb_per_s")
    row = {
        "first_mb_per_s": first["mb_per_s"], "warm_mb_per_s": w, "tcp_mb_per_s": t, "grpc_mb_per_s": g,
        "warm_runs": [r["mb_per_s"] for r in warm], "tcp_runs": [r["mb_per_s"] for r in tcp],
        "grpc_runs": [r["mb_per_s"] for r in grpc],
        "client_cpu_s_per_gib": med(warm, "client_cpu_s_per_gib"),
        "nodes_cpu_s_per_gib": server_s_per_gib(warm),
        "tcp_reader_cpu_s_per_gib": med(tcp, "client_cpu_s_per_gib"), "tcp_server_cpu_s_per_gib": server_s_per_gib(tcp),
        "grpc_reader_cpu_s_per_gib": med(grpc, "client_cpu_s_per_gib"), "grpc_server_cpu_s_per_gib": server_s_per_gib(grpc),
    }
    summary["nodes"][n] = row
    print(f"{n:>5} {row['first_mb_per_s']:>6.0f} {w:>6.0f} {t:>6.0f} {g:>6.0f} {w / t:>8.2f}x {w / g:>9.2f}x"
          f" {row['client_cpu_s_per_gib']:>13.2f} {row['nodes_cpu_s_per_gib']:>12.2f}"
          f" {row['tcp_reader_cpu_s_per_gib']:>8.2f}/{row['tcp_server_cpu_s_per_gib']:<8.2f}"
          f" {row['grpc_reader_cpu_s_per_gib']:>9.2f}/{row['grpc_server_cpu_s_per_gib']:<8.2f}")
print("(MB/s: medians of the interleaved rounds; first: the round that filled the nodes from the store)")
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
PY
