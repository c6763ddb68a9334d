#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine (root, no stdin):
#   fuse3       fusermount3, for unmounting as a non-root user
#   fio         the benchmark's smoke run
#   stress-ng   its filename stressor (scripts/stress-names.sh)
#   curl        bucket creation in scripts/stress-names.sh
#   moto        a local S3-compatible server (moto's server mode) the S3 tests talk to
#   cargo-nextest, rustfmt, clippy
# Idempotent: anything already present is left alone.
set -euo pipefail

MOTO_VERSION=5.2.1

need_apt=()
command -v fusermount3 >/dev/null 2>&1 || need_apt+=(fuse3)
command -v sha256sum >/dev/null 2>&1 || need_apt+=(coreutils)
command -v fio >/dev/null 2>&1 || need_apt+=(fio)
command -v stress-ng >/dev/null 2>&1 || need_apt+=(stress-ng)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" </dev/null
fi

if ! python3 -c "import moto.server, importlib.metadata as m; assert m.version('moto') == '$MOTO_VERSION'" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    "moto[server]==$MOTO_VERSION" </dev/null
fi

cargo nextest --version >/dev/null 2>&1 || cargo install cargo-nextest --locked
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
