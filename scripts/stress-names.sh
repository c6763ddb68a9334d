#!/usr/bin/env bash
# stress-ng's filename stressor on the mount, under every write type, over a local
# directory and (with --s3 ENDPOINT) over S3: it probes which bytes a name may hold, then
# creates, stats and unlinks names of every length up to 255 made of them. Each run must
# pass, log no warning, and leave nothing behind: after a remount the mount and the store
# are both empty.
#
# usage: scripts/stress-names.sh [--bin BIN] [--timeout 30s] [--s3 ENDPOINT]
# Runs as root (mounts). Unmounts on every exit path; stops only the daemons it started.
set -euo pipefail

bin=$(command -v alluxio || echo target/release/alluxio)
timeout=30s
s3=
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --s3) s3=$2; shift 2 ;;
    *) echo "usage: $0 [--bin BIN] [--timeout 30s] [--s3 ENDPOINT]" >&2; exit 2 ;;
  esac
done
command -v stress-ng >/dev/null || { echo "stress-ng is missing (scripts/install-test-deps.sh installs it)" >&2; exit 2; }

work=$(mktemp -d /tmp/alluxio-stress-names.XXXXXX)
pid=
cleanup() {
  local rc=$?
  if mountpoint -q "$work/mnt" 2>/dev/null; then
    "$bin" fuse unmount "$work/mnt" >/dev/null 2>&1 || umount -l "$work/mnt" 2>/dev/null || true
  fi
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT INT TERM
mkdir -p "$work/mnt"
export ALLUXIO_HOME="$work/home" ALLUXIO_RUN_DIR="$work/run"
unset ALLUXIO_LOG

mount_it() { # URI OPTS LOG
  "$bin" fuse mount "$work/mnt" --ufs "$1" -o "$2" >>"$3" 2>&1 </dev/null &
  pid=$!
  for _ in $(seq 1 300); do
    mountpoint -q "$work/mnt" && return 0
    kill -0 "$pid" 2>/dev/null || { echo "daemon exited; see $3" >&2; return 1; }
    sleep 0.1
  done
  echo "mount did not appear; see $3" >&2
  return 1
}
unmount_it() {
  "$bin" fuse unmount "$work/mnt" >/dev/null
  wait "$pid" || true
  pid=
}

stores=(local)
[ -n "$s3" ] && stores+=(s3)
failed=0
for store in "${stores[@]}"; do
  for wt in CACHE_THROUGH THROUGH ASYNC_THROUGH; do
    case "$store" in
      local) mkdir -p "$work/ufs-$wt"; uri="$work/ufs-$wt"; opts="write_type=$wt" ;;
      s3)
        bucket="stress-names-$(echo "$wt" | tr 'A-Z_' 'a-z-')-$$"
        curl -fsS -X PUT "$s3/$bucket" >/dev/null
        uri="s3://$bucket/p"
        opts="write_type=$wt,endpoint=$s3,region=us-east-1,access_key_id=test,secret_access_key=s3cret" ;;
    esac
    log="$work/$store-$wt.log"
    mount_it "$uri" "$opts" "$log"
    out=$(timeout 300 stress-ng --temp-path "$work/mnt" --filename 1 --timeout "$timeout" \
      --verify --metrics-brief 2>&1) && rc=0 || rc=$?
    unmount_it
    # What a remount shows is what the store holds: nothing may be left.
    mount_it "$uri" "$opts" "$log"
    left=$(find "$work/mnt" -mindepth 1 | head -5)
    unmount_it
    ops=$(echo "$out" | awk '/metrc:.* filename /{print $5 " ops, " $9 " ops/s"}')
    # The kernel drops a request whose caller was interrupted (stress-ng's own end of run)
    # and then refuses its reply with ENOENT; fuser logs that, and it is no fault.
    warns=$(grep ' WARN \| ERROR ' "$log" | grep -vc 'Failed to send FUSE reply: No such file or directory' || true)
    if [ "$rc" -ne 0 ] || [ -n "$left" ] || [ "$warns" -ne 0 ]; then
      echo "FAIL $store $wt: stress-ng exit $rc, left behind: ${left:-nothing}, $warns warnings"
      echo "$out" | grep -E 'fail|error' | head -5 || true
      grep -E ' WARN | ERROR ' "$log" | grep -v 'Failed to send FUSE reply: No such file' | cut -c1-400 | head -5 || true
      failed=1
    else
      echo "ok   $store $wt: $ops"
    fi
  done
done
exit $failed
