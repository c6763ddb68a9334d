#!/usr/bin/env bash
# The test command (README, .ci/run): installs test dependencies, checks formatting and
# lints, starts local servers for S3, Azure Blob, GCS and WebDAV, runs pjdfstest on the
# local disk and on mounts over a local directory, over S3 and over Azure Blob, a smoke
# run of the benchmark, short runs of the stress-ng filename stressor, the memory-budget
# check, the kill -9 campaign and the soak, the vfs tests as an unprivileged user with no
# /dev/fuse, then every test, including the ones that mount FUSE
# through the kernel. Must run as root (mounting needs
# /dev/fuse, mode 0600).
#
# Hangs cannot outlive their limits: nextest kills a test after 3 minutes
# (.config/nextest.toml), and on every exit this script stops the servers it started
# and detaches any FUSE mount left under its private temp directory.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
# The README's install step: the release binary and the mount(8) helper
# /sbin/mount.fuse.alluxio, which the `mount -t fuse.alluxio` and fstab tests use.
scripts/install.sh

echo "== fmt"
cargo fmt --all --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

work=$(mktemp -d /tmp/alluxio-ci.XXXXXX)
# pjdfstest switches to unprivileged users, which must be able to traverse the tree.
chmod 755 "$work"
s3_pid=
store_pids=()
cleanup() {
  local rc=$?
  if [ -n "$s3_pid" ]; then kill "$s3_pid" 2>/dev/null || true; fi
  for p in "${store_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # Detach mounts a killed test may have left (only ours: under $work).
  awk -v w="$work/" '$3 ~ /^fuse/ && index($2, w) == 1 {print $2}' /proc/mounts |
    while read -r mp; do umount -l "$mp" 2>/dev/null || true; done
  rm -rf "$work" 2>/dev/null || true
  exit $rc
}
trap cleanup EXIT INT TERM

eval "$(scripts/s3-server.sh "$work/s3.log")"
s3_pid=$S3_SERVER_PID
export ALLUXIO_TEST_S3_ENDPOINT
echo "== S3 server at $ALLUXIO_TEST_S3_ENDPOINT (pid $s3_pid)"
# Azure Blob (Azurite), Google Cloud Storage (gcp-storage-emulator) and WebDAV (wsgidav),
# each on its own port, its data under $work.
eval "$(TMPDIR="$work" scripts/store-server.sh azure "$work/azure.log")"
store_pids+=("$AZURE_SERVER_PID")
eval "$(TMPDIR="$work" scripts/store-server.sh gcs "$work/gcs.log")"
store_pids+=("$GCS_SERVER_PID")
eval "$(TMPDIR="$work" scripts/store-server.sh webdav "$work/webdav.log")"
store_pids+=("$WEBDAV_SERVER_PID")
export ALLUXIO_TEST_AZURE_ENDPOINT ALLUXIO_TEST_AZURE_ACCOUNT ALLUXIO_TEST_AZURE_KEY
export ALLUXIO_TEST_GCS_ENDPOINT ALLUXIO_TEST_WEBDAV_ENDPOINT
echo "== Azurite at $ALLUXIO_TEST_AZURE_ENDPOINT, GCS emulator at $ALLUXIO_TEST_GCS_ENDPOINT, WebDAV at $ALLUXIO_TEST_WEBDAV_ENDPOINT"

export TMPDIR="$work"
echo "== pjdfstest (local disk, mounts over a local directory, over S3 and over Azure Blob)"
cargo build --locked -p alluxio-cli
tests/posix/pjdfstest.sh target/debug/alluxio "$work/pjd"

echo "== benchmark smoke run (tiny sizes, crc32c-verified I/O; figures come from full runs)"
scripts/bench.sh --smoke --out "$work/bench"

echo "== stress-ng filename stressor, short (the full one: scripts/stress-names.sh --s3 ENDPOINT)"
scripts/stress-names.sh --timeout 5s --s3 "$ALLUXIO_TEST_S3_ENDPOINT"

echo "== memory budget, short (the full one: scripts/mem-budget.py)"
python3 scripts/mem-budget.py --size 512M --readers 16 --writers 16 --budgets 256MiB --runtime 3

echo "== kill -9 campaign, short (the full one: scripts/kill9-campaign.py --points 100)"
python3 scripts/kill9-campaign.py --points 4 --work "$work/kill9"

echo "== soak, short (the full one: scripts/soak.py --minutes 30)"
python3 scripts/soak.py --minutes 1 --workers 4 --work "$work/soak"

echo "== the vfs target as nobody, with no /dev/fuse (README: runs anywhere, as any user)"
scripts/vfs-tests-unprivileged.sh

echo "== tests"
cargo nextest run --workspace --locked --no-fail-fast
