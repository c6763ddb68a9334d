#!/usr/bin/env bash
# Starts a local S3-compatible server (moto) on a free 127.0.0.1 port and prints
#   ALLUXIO_TEST_S3_ENDPOINT=http://127.0.0.1:PORT
#   S3_SERVER_PID=PID
# once it answers. The caller stops it by PID.
set -euo pipefail
log=${1:-/dev/null}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m moto.server -H 127.0.0.1 -p "$port" >"$log" 2>&1 </dev/null &
pid=$!
for _ in $(seq 1 100); do
  if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
    echo "ALLUXIO_TEST_S3_ENDPOINT=http://127.0.0.1:$port"
    echo "S3_SERVER_PID=$pid"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || { echo "S3 server exited; see $log" >&2; exit 1; }
  sleep 0.1
done
kill "$pid" 2>/dev/null || true
echo "S3 server did not start within 10 s; see $log" >&2
exit 1
