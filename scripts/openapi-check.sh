#!/usr/bin/env bash
# Checks that /openapi.json is a document generators can use:
#   1. starts a server (and a worker) on a temp SQLite file,
#   2. validates /openapi.json with openapi-spec-validator, and checks that
#      docs/api.md and it name the same paths and methods (openapi-check/docs.py),
#   3. generates a Python client with openapi-python-client,
#   4. submits a job, waits for it and reads its tasks through that client.
# Both tools come from PyPI into a venv under $CARGO_TARGET_DIR (or target/).
# The binary is $BRIGADE_BIN (default "${CARGO_TARGET_DIR:-target}/debug/brigade"),
# built with cargo when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)

say() { printf '\n==> %s\n' "$*" >&2; }

target=${CARGO_TARGET_DIR:-target}
bin=${BRIGADE_BIN:-$target/debug/brigade}
if [ ! -x "$bin" ]; then
  say "building the brigade binary ($bin is missing)"
  cargo build --bin brigade
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

mkdir -p "$target"
venv=$(cd "$target" && pwd)/openapi-venv
if [ ! -x "$venv/bin/python" ]; then
  say "creating a venv in $venv"
  "${PYTHON:-python3}" -m venv "$venv"
fi
say "installing openapi-spec-validator and openapi-python-client"
"$venv/bin/python" -m pip install --quiet openapi-spec-validator openapi-python-client

work=$(mktemp -d)
server_pid=""
worker_pid=""
cleanup() {
  [ -n "$worker_pid" ] && kill "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null || true
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
say "starting a server on $url"
"$bin" server --listen "127.0.0.1:$port" --database-url "sqlite://$work/brigade.db" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 300); do
  if "$venv/bin/python" -c "import urllib.request,sys; urllib.request.urlopen('$url/readyz', timeout=1)" 2>/dev/null; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then cat "$work/server.log" >&2; echo "error: the server died" >&2; exit 1; fi
  sleep 0.1
done
"$bin" worker --server "$url" --name openapi-check --capacity 4 >"$work/worker.log" 2>&1 &
worker_pid=$!

say "fetching and validating /openapi.json"
"$venv/bin/python" -c "import urllib.request; open('$work/openapi.json','wb').write(urllib.request.urlopen('$url/openapi.json').read())"
"$venv/bin/openapi-spec-validator" "$work/openapi.json"

say "docs/api.md and /openapi.json name the same operations"
"$venv/bin/python" scripts/openapi-check/docs.py "$url" docs/api.md

say "generating a Python client with openapi-python-client"
cd "$work"
# No post-generation hooks (they would want ruff on PATH).
printf 'post_hooks: []\n' >"$work/generator.yaml"
# --fail-on-warning: an operation the generator had to skip is a failure.
"$venv/bin/openapi-python-client" generate --path openapi.json --meta none --output-path brigade_client \
  --config "$work/generator.yaml" --fail-on-warning >"$work/generate.log" 2>&1 || { cat "$work/generate.log" >&2; echo "error: generation failed or warned" >&2; exit 1; }
cd "$here"

say "submit → wait → tasks through the generated client"
PYTHONPATH="$work" "$venv/bin/python" scripts/openapi-check/drive.py "$url"
