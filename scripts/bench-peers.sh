#!/usr/bin/env bash
# The cluster's page transfer on this machine: a 1 GiB object read page by page from 1, 2
# and 3 cache nodes (`alluxio peer-bench`, the daemon's own peer client, no FUSE), warm
# after a first round that fills the nodes from the store, beside the physical limit of
# the same loopback (a plain TCP stream of 1 MiB buffers between two processes), and
# beside tonic (gRPC) streaming 1 MiB messages, the transport the peer protocol was
# chosen against. Prints MB/s, the client's and the servers' CPU seconds per GiB, and the
# ratios to the stream. The warm rounds are measured in a second invocation after a
# first one that fills the nodes and settles their page cache, so the nodes' CPU is
# counted over exactly the rounds whose bytes it is divided by.
#
# usage: scripts/bench-peers.sh [--size SIZE] [--parallel N] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
size=1G parallel=8 out=target/bench-peers
while [ $# -gt 0 ]; do
  case $1 in
    --size) size=$2; shift ;;
    --parallel) parallel=$2; shift ;;
    --out) out=$2; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
cargo build --release --locked -q -p alluxio-cli
bin=$(pwd)/target/release/alluxio
mkdir -p "$out"
out=$(realpath "$out")
work=$(mktemp -d /var/tmp/alluxio-peers.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/ufs"
head -c "$(numfmt --from=iec "$size")" /dev/urandom >"$work/ufs/obj"
echo "bench-token" >"$work/token"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

echo "== plain TCP stream, 1 MiB buffers, $parallel connections (the loopback's limit here)"
"$bin" peer-bench --tcp-serve 127.0.0.1:0 >"$work/tcp.addr" &
pids+=($!)
tcp_pid=$!
for _ in $(seq 50); do [ -s "$work/tcp.addr" ] && break; sleep 0.1; done
tcp_addr=$(sed -n 's/^listening on //p' "$work/tcp.addr")
t0=$(ticks "$tcp_pid")
"$bin" peer-bench --tcp "$tcp_addr" --bytes 4GiB --parallel "$parallel" | tee "$out/tcp.json"
echo "{\"server_cpu_s\": $(( $(ticks "$tcp_pid") - t0 ))}" | python3 -c "import json,sys; print(json.dumps({'server_cpu_s': json.load(sys.stdin)['server_cpu_s'] / $hz}))" >"$out/tcp-server.json"
kill "$tcp_pid"; wait "$tcp_pid" 2>/dev/null || true

echo "== tonic (gRPC) streaming 1 MiB messages, $parallel connections"
"$bin" peer-bench --grpc-serve 127.0.0.1:0 >"$work/grpc.addr" &
pids+=($!)
grpc_pid=$!
for _ in $(seq 50); do [ -s "$work/grpc.addr" ] && break; sleep 0.1; done
grpc_addr=$(sed -n 's/^listening on //p' "$work/grpc.addr")
t0=$(ticks "$grpc_pid")
"$bin" peer-bench --grpc "$grpc_addr" --bytes 4GiB --parallel "$parallel" | tee "$out/grpc.json"
echo "{\"server_cpu_s\": $(( $(ticks "$grpc_pid") - t0 ))}" | python3 -c "import json,sys; print(json.dumps({'server_cpu_s': json.load(sys.stdin)['server_cpu_s'] / $hz}))" >"$out/grpc-server.json"
kill "$grpc_pid"; wait "$grpc_pid" 2>/dev/null || true

for n in 1 2 3; do
  echo "== $n cache node(s)"
  addrs=() node_pids=()
  for i in $(seq "$n"); do
    "$bin" cache-node --listen 127.0.0.1:0 --cache-dir "$work/node$n.$i" --cache-size 4GiB \
      --mem-cache-size 256MiB --ufs "$work/ufs" --token-file "$work/token" >"$work/node$n.$i.addr" 2>>"$work/nodes.log" &
    node_pids+=($!)
    pids+=($!)
  done
  for i in $(seq "$n"); do
    for _ in $(seq 50); do [ -s "$work/node$n.$i.addr" ] && break; sleep 0.1; done
    addrs+=("$(sed -n 's/^listening on //p' "$work/node$n.$i.addr")")
  done
  list=$(IFS=,; echo "${addrs[*]}")
  # Fill from the store, then one warm round that brings the pages (written O_DIRECT,
  # so not in the page cache) up from the device.
  "$bin" peer-bench --peers "$list" --ufs "$work/ufs" --key obj --token-file "$work/token" \
    --parallel "$parallel" --rounds 2 | head -1 >"$out/nodes$n.first.json"
  mid=0; for p in "${node_pids[@]}"; do mid=$((mid + $(ticks "$p"))); done
  "$bin" peer-bench --peers "$list" --ufs "$work/ufs" --key obj --token-file "$work/token" \
    --parallel "$parallel" --rounds 3 --warm | grep peers-warm >"$out/nodes$n.warm.json" || true
  after=0; for p in "${node_pids[@]}"; do after=$((after + $(ticks "$p"))); done
  echo "{\"nodes\": $n, \"node_ticks_warm\": $((after - mid)), \"hz\": $hz}" >"$out/nodes$n.cpu.json"
  cat "$out/nodes$n.first.json" "$out/nodes$n.warm.json"
  for p in "${node_pids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
done

python3 - "$out" "$size" <<'PY'
import json, os, statistics, sys
out, size = sys.argv[1], sys.argv[2]
tcp = json.load(open(os.path.join(out, "tcp.json")))
tcp_srv = json.load(open(os.path.join(out, "tcp-server.json")))["server_cpu_s"] / (tcp["bytes"] / 2**30)
grpc = json.load(open(os.path.join(out, "grpc.json")))
grpc_srv = json.load(open(os.path.join(out, "grpc-server.json")))["server_cpu_s"] / (grpc["bytes"] / 2**30)
print(f"\nplain TCP stream: {tcp['mb_per_s']:.0f} MB/s, reader {tcp['client_cpu_s_per_gib']:.2f} CPU-s/GiB, server {tcp_srv:.2f}")
print(f"tonic streaming:  {grpc['mb_per_s']:.0f} MB/s ({grpc['mb_per_s'] / tcp['mb_per_s']:.2f}x the stream), reader {grpc['client_cpu_s_per_gib']:.2f} CPU-s/GiB, server {grpc_srv:.2f}")
print(f"{'nodes':>5} {'first MB/s':>11} {'warm MB/s':>10} {'warm/tcp':>9} {'warm/grpc':>10} {'client s/GiB':>13} {'nodes s/GiB':>12}")
summary = {"tcp": tcp, "tcp_server_cpu_s_per_gib": tcp_srv, "grpc": grpc,
           "grpc_server_cpu_s_per_gib": grpc_srv, "nodes": {}}
for n in (1, 2, 3):
    first = json.load(open(os.path.join(out, f"nodes{n}.first.json")))
    warm = [json.loads(l) for l in open(os.path.join(out, f"nodes{n}.warm.json")) if l.strip()]
    cpu = json.load(open(os.path.join(out, f"nodes{n}.cpu.json")))
    mb = statistics.median(w["mb_per_s"] for w in warm)
    cl = statistics.median(w["client_cpu_s_per_gib"] for w in warm)
    gib = sum(w["bytes"] for w in warm) / 2**30
    node = cpu["node_ticks_warm"] / cpu["hz"] / gib
    print(f"{n:>5} {first['mb_per_s']:>11.0f} {mb:>10.0f} {mb / tcp['mb_per_s']:>8.2f}x {mb / grpc['mb_per_s']:>9.2f}x {cl:>13.2f} {node:>12.2f}")
    summary["nodes"][n] = {"first": first, "warm_runs_mb_per_s": [w["mb_per_s"] for w in warm],
                           "warm_mb_per_s": mb, "client_cpu_s_per_gib": cl, "nodes_cpu_s_per_gib": node}
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
PY
