#!/usr/bin/env bash
# The store-fault and cache-damage table (issue: reliability campaign): every fault kind
# of tests/vfs/fault_table.rs, N times each (default 30), through the vfs with faults
# injected where they happen (no kernel, no root, no server). Prints one markdown table:
# the answers seen, wrong bytes (must be 0), answers of another kind (must be 0), the time
# to the answer (p50 / max; a stall must end in EIO within the store timeout) and how many
# iterations recovered with no remount. CI runs each row twice
# (vfs_every_fault_kind_is_answered_right_and_recovers).
#
# usage: scripts/fault-table.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
FAULT_ITERATIONS=${1:-30} cargo test --locked -q -p alluxio --test vfs \
  fault_table::vfs_fault_table -- --ignored --nocapture --test-threads 1 2>&1 |
  grep -E '^\||test result|panicked|wrong'
