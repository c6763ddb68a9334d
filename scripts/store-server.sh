#!/usr/bin/env bash
# Starts a local object-store server for the tests on a free 127.0.0.1 port, with its
# data in a fresh directory under ${TMPDIR:-/tmp}, and prints, once it answers and
# holds what the tests need, lines for `eval`:
#   azure   Azurite's blob service, dev account devstoreaccount1, public container "alluxio"
#             ALLUXIO_TEST_AZURE_ENDPOINT=http://127.0.0.1:PORT/devstoreaccount1
#             ALLUXIO_TEST_AZURE_ACCOUNT=devstoreaccount1
#             ALLUXIO_TEST_AZURE_KEY=<the published dev key>
#             AZURE_SERVER_PID=PID  AZURE_SERVER_DIR=DIR
#   gcs     gcp-storage-emulator (JSON API, no auth), bucket "alluxio", data in memory
#             ALLUXIO_TEST_GCS_ENDPOINT=http://127.0.0.1:PORT
#             GCS_SERVER_PID=PID  GCS_SERVER_DIR=DIR
#   webdav  wsgidav over cheroot, DIR shared read-write at /, anonymous
#             ALLUXIO_TEST_WEBDAV_ENDPOINT=http://127.0.0.1:PORT
#             WEBDAV_SERVER_PID=PID  WEBDAV_SERVER_DIR=DIR
# PID is the server process itself: the caller stops it with `kill PID` and removes DIR.
# Usage: scripts/store-server.sh azure|gcs|webdav [LOG]
set -euo pipefail
kind=${1:-}
log=${2:-/dev/null}
case $kind in
  azure | gcs | webdav) ;;
  *) echo "usage: $0 azure|gcs|webdav [LOG]" >&2; exit 2 ;;
esac
KIND=$(printf %s "$kind" | tr a-z A-Z)

# Azurite's well-known development account (published in Azurite's README).
azure_account=devstoreaccount1
azure_key='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

# What each kind needs, checked first so that a missing tool fails at once.
missing=
case $kind in
  azure)
    command -v azurite-blob >/dev/null 2>&1 || missing="azurite (npm)"
    python3 -c 'import azure.storage.blob' 2>/dev/null || missing="${missing:+$missing, }azure-storage-blob (pip)"
    ;;
  gcs) python3 -c 'import gcp_storage_emulator' 2>/dev/null || missing="gcp-storage-emulator (pip)" ;;
  webdav) python3 -c 'import wsgidav, cheroot' 2>/dev/null || missing="wsgidav and cheroot (pip)" ;;
esac
if [ -n "$missing" ]; then
  echo "$kind server: $missing not installed; run scripts/install-test-deps.sh" >&2
  exit 1
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d "${TMPDIR:-/tmp}/alluxio-$kind-server.XXXXXX")
pid=

fail() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$dir"
  echo "$kind server: $*; see $log" >&2
  exit 1
}

# Each server is started directly in the background (or by a subshell that execs it),
# so $! is the server: azurite-blob is a `#!/usr/bin/env node` script and env execs node.
case $kind in
  azure)
    # --skipApiVersionCheck: clients may send an x-ms-version newer than Azurite knows
    # (azure-storage-blob 12.31.1 sends 2026-10-06; Azurite 3.37.0 knows up to
    # 2026-06-06 and refuses newer with 400 InvalidHeaderValue), and OpenDAL may too.
    # --loose: ignore headers and parameters Azurite does not support.
    azurite-blob --blobHost 127.0.0.1 --blobPort "$port" --location "$dir" \
      --silent --skipApiVersionCheck --loose --disableTelemetry >"$log" 2>&1 </dev/null &
    ;;
  gcs)
    # In memory: on disk the emulator keeps object "a/b" as the file .../alluxio/a/b, so
    # objects "a" and "a/b" cannot both exist (the second upload gets an empty reply).
    # It runs in DIR so that nothing lands in the caller's cwd; the subshell execs the
    # server, so $! is still the server.
    # Two bugs of the emulator are mended as it starts, where it differs from GCS:
    # - it reads an empty request body as None, and its media upload then fails on
    #   len(None): no zero-byte object (an empty file, a directory marker) could be made;
    #   such an upload gets an empty body instead;
    # - an upload sent without a Content-Type is stored with contentType null, which
    #   clients cannot parse; GCS stores application/octet-stream then.
    (cd "$dir" && exec python3 -c '
import sys
from gcp_storage_emulator import server
from gcp_storage_emulator.handlers import objects
from gcp_storage_emulator.__main__ import main
content_type = objects._content_type_from_request
objects._content_type_from_request = lambda request, default=None: (
    content_type(request, default) or "application/octet-stream")
read = server._read_data
def read_data(handler, query):
    data = read(handler, query)
    if data is None and query.get("uploadType") == ["media"]:
        return b""
    return data
server._read_data = read_data
sys.argv[0] = "gcp-storage-emulator"
sys.exit(main(sys.argv[1:]))
' start --host 127.0.0.1 --port "$port" --default-bucket alluxio --in-memory) >"$log" 2>&1 </dev/null &
    ;;
  webdav)
    # --no-config: ignore any wsgidav.yaml in the current directory.
    python3 -m wsgidav.server.server_cli --no-config --host 127.0.0.1 --port "$port" \
      --root "$dir" --auth anonymous --server cheroot >"$log" 2>&1 </dev/null &
    ;;
esac
pid=$!

# Up to 20 s until it answers HTTP (and, for Azure, until the container exists).
ready() {
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null || return 1
  case $kind in
    azure)
      python3 - "$port" "$azure_account" "$azure_key" <<'EOF' >>"$log" 2>&1
import sys
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
port, account, key = sys.argv[1:]
conn = (f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{account};")
svc = BlobServiceClient.from_connection_string(conn, retry_total=0, connection_timeout=2)
try:
    # Public access "container": blobs and listings can also be read with a plain GET.
    svc.create_container("alluxio", public_access="container")
except ResourceExistsError:
    pass
except Exception as e:
    sys.exit(f"creating container alluxio: {type(e).__name__}: {e}")
EOF
      ;;
    gcs)
      curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$port/storage/v1/b/alluxio"
      ;;
    webdav)
      curl -sf -o /dev/null --max-time 2 -X PROPFIND -H 'Depth: 0' "http://127.0.0.1:$port/"
      ;;
  esac
}
deadline=$((SECONDS + 20))
while [ "$SECONDS" -lt "$deadline" ]; do
  if ready 2>/dev/null; then
    echo "ALLUXIO_TEST_${KIND}_ENDPOINT=http://127.0.0.1:$port$([ "$kind" = azure ] && echo "/$azure_account")"
    if [ "$kind" = azure ]; then
      echo "ALLUXIO_TEST_AZURE_ACCOUNT=$azure_account"
      echo "ALLUXIO_TEST_AZURE_KEY=$azure_key"
    fi
    echo "${KIND}_SERVER_PID=$pid"
    printf '%s_SERVER_DIR=%q\n' "$KIND" "$dir"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || fail "exited before answering"
  sleep 0.2
done
fail "did not answer within 20 s"
