#!/usr/bin/env bash
# Builds alluxio in release mode and installs the binary to /usr/local/bin (root) or
# ~/.local/bin, plus fuse3 for fusermount3. As root it also links the binary as
# /sbin/mount.fuse.alluxio, the helper mount(8) runs for `mount -t fuse.alluxio` and for
# fuse.alluxio lines in /etc/fstab. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v fusermount3 >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 </dev/null
fi
cargo build --release --locked -p alluxio-cli
if [ "$(id -u)" = 0 ]; then dest=/usr/local/bin; else dest="$HOME/.local/bin"; fi
mkdir -p "$dest"
install -m 0755 target/release/alluxio "$dest/alluxio"
echo "installed $dest/alluxio"
if [ "$(id -u)" = 0 ]; then
  ln -sfn "$dest/alluxio" /sbin/mount.fuse.alluxio
  echo "linked /sbin/mount.fuse.alluxio -> $dest/alluxio"
fi
