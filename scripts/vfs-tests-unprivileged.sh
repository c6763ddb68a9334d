#!/usr/bin/env bash
# Runs the `vfs` test target (tests/vfs: the reference model and the fault-injection
# tests) the way the README promises it runs anywhere: as an unprivileged user (nobody),
# in a mount namespace whose /dev has no fuse device. Run as root (it needs unshare and
# setpriv to drop to nobody); CI calls it. Exits with the tests' status.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$(cargo test --locked -p alluxio --test vfs --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "vfs" and m.get("executable"):
        print(m["executable"])')
[ -x "$bin" ] || { echo "vfs-tests-unprivileged: no test binary built" >&2; exit 1; }

work=$(mktemp -d /tmp/alluxio-vfs.XXXXXX)
trap 'rm -rf "$work"' EXIT
# Copied where nobody can reach it (the checkout may sit under a private home).
chmod 755 "$work"
cp "$bin" "$work/vfs-tests"
mkdir -m 1777 "$work/tmp"

# A private /dev with only null, zero, random and urandom: no /dev/fuse to open.
unshare --mount --propagation private -- bash -euo pipefail -c '
  mount -t tmpfs -o mode=755 nodev /dev
  mknod -m 666 /dev/null c 1 3
  mknod -m 666 /dev/zero c 1 5
  mknod -m 666 /dev/random c 1 8
  mknod -m 666 /dev/urandom c 1 9
  if [ -e /dev/fuse ]; then echo "vfs-tests-unprivileged: /dev/fuse still there" >&2; exit 1; fi
  cd "$1"
  exec setpriv --reuid=nobody --regid=nogroup --clear-groups --inh-caps=-all \
    env -i PATH=/usr/bin:/bin HOME="$1/tmp" TMPDIR="$1/tmp" \
    sh -c "id -u; exec ./vfs-tests --test-threads 2"
' _ "$work"
