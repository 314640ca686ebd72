#!/usr/bin/env bash
# Fresh machine -> running local system on embedded defaults (SQLite + in-process queue):
# creates .venv and installs the project (scripts/bootstrap.sh), starts the apiserver and one nodemanager.
# Ctrl-C stops both. Data lives in ./data, agent workspaces in /tmp/agents-workspaces.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${APISERVER_PORT:-8080}
export APISERVER_HOST=${APISERVER_HOST:-127.0.0.1} APISERVER_PORT=$PORT
export API_SERVER_URL=${API_SERVER_URL:-http://127.0.0.1:$PORT}

./scripts/bootstrap.sh

mkdir -p data
IMAGE=agentnodes/busybox:latest
if docker info >/dev/null 2>&1 && ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "building the local example image $IMAGE (no registry needed)" >&2
    ./scripts/build-local-image.sh "$IMAGE" >/dev/null || echo "could not build $IMAGE; see scripts/build-local-image.sh" >&2
fi
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

.venv/bin/python -m server &
pids+=($!)
for _ in $(seq 1 100); do
    if .venv/bin/python - "$API_SERVER_URL/readyz" <<'PY' 2>/dev/null; then break; fi
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=1)
PY
    sleep 0.2
done

PROXY_PROBE_IMAGE=${PROXY_PROBE_IMAGE:-$IMAGE} .venv/bin/python -m nodemanager &
pids+=($!)

cat >&2 <<MSG

  apiserver   $API_SERVER_URL   (console: $API_SERVER_URL/, API docs: $API_SERVER_URL/schema)
  nodemanager NODE_ID=${NODE_ID:-dev-node-01}
  CLI         .venv/bin/nodectl nodes list
              .venv/bin/nodectl runs submit $IMAGE --wait -- echo hello

  Ctrl-C stops both.
MSG
wait -n "${pids[@]}"
