#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine (root, no stdin):
#   fuse3       fusermount3, for unmounting as a non-root user
#   fio         the benchmark's smoke run
#   stress-ng   its filename stressor (scripts/stress-names.sh)
#   curl        bucket creation in scripts/stress-names.sh
#   moto        a local S3-compatible server (moto's server mode) the S3 tests talk to
#   azurite     (npm) Microsoft's Azure Storage emulator; its blob service stands in for
#               Azure Blob Storage (scripts/store-server.sh azure)
#   azure-storage-blob  Microsoft's Python client: creates the Azurite container and
#               lets tests read blobs back independently of the Rust client
#   gcp-storage-emulator  a local Google Cloud Storage JSON-API server
#               (scripts/store-server.sh gcs)
#   wsgidav, cheroot  a local WebDAV server over a directory, and the WSGI server it
#               runs on (scripts/store-server.sh webdav)
#   nodejs, npm to install and run azurite
#   cargo-nextest, rustfmt, clippy
# Idempotent: anything already present is left alone.
set -euo pipefail

MOTO_VERSION=5.2.1
AZURITE_VERSION=3.37.0
AZURE_STORAGE_BLOB_VERSION=12.31.1
GCP_STORAGE_EMULATOR_VERSION=2026.7.19
WSGIDAV_VERSION=4.4.0
CHEROOT_VERSION=11.1.2

need_apt=()
command -v fusermount3 >/dev/null 2>&1 || need_apt+=(fuse3)
command -v sha256sum >/dev/null 2>&1 || need_apt+=(coreutils)
command -v fio >/dev/null 2>&1 || need_apt+=(fio)
command -v stress-ng >/dev/null 2>&1 || need_apt+=(stress-ng)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" </dev/null
fi

if ! python3 -c "import moto.server, importlib.metadata as m; assert m.version('moto') == '$MOTO_VERSION'" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    "moto[server]==$MOTO_VERSION" </dev/null
fi

if ! python3 -c "
import importlib.metadata as m
want = {'azure-storage-blob': '$AZURE_STORAGE_BLOB_VERSION',
        'gcp-storage-emulator': '$GCP_STORAGE_EMULATOR_VERSION',
        'wsgidav': '$WSGIDAV_VERSION', 'cheroot': '$CHEROOT_VERSION'}
assert all(m.version(p) == v for p, v in want.items())" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    "azure-storage-blob==$AZURE_STORAGE_BLOB_VERSION" \
    "gcp-storage-emulator==$GCP_STORAGE_EMULATOR_VERSION" \
    "wsgidav==$WSGIDAV_VERSION" "cheroot==$CHEROOT_VERSION" </dev/null
fi

if [ "$(azurite-blob --version 2>/dev/null)" != "$AZURITE_VERSION" ]; then
  npm install -g --silent "azurite@$AZURITE_VERSION" </dev/null
fi

cargo nextest --version >/dev/null 2>&1 || cargo install cargo-nextest --locked
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
