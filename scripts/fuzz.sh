#!/usr/bin/env bash
# Fuzz the HTTP API from its own OpenAPI document with Schemathesis.
#
# Starts `brigade server` (open mode, loopback, a temporary SQLite file) and one
# worker, then runs `schemathesis run` over /openapi.json with a bounded budget.
# Exits non-zero when a check fails (a 5xx, a status code, content type or body
# that the document does not describe).
#
# Environment:
#   FUZZ_VENV          virtualenv for schemathesis (default: target dir/fuzz-venv)
#   FUZZ_MAX_EXAMPLES  test cases per operation (default 50)
#   FUZZ_MAX_TIME      time budget in seconds for the whole run (default 540)
#   FUZZ_CHECKS        schemathesis checks (default: the four that fit this API)
#   FUZZ_SEED          fixed seed for a reproducible run
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
venv="${FUZZ_VENV:-$target/fuzz-venv}"
max_examples="${FUZZ_MAX_EXAMPLES:-50}"
max_time="${FUZZ_MAX_TIME:-540}"
checks="${FUZZ_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance}"

if [ ! -x "$venv/bin/schemathesis" ]; then
  echo "== installing schemathesis into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet schemathesis
fi
"$venv/bin/schemathesis" --version

echo "== building brigade"
cargo build --quiet --bin brigade
bin="$target/debug/brigade"

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"
RUST_LOG=warn "$bin" server --listen "127.0.0.1:$port" --database-url "sqlite://$work/fuzz.db" \
  >"$work/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do
  curl -fsS "$url/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$url/readyz" >/dev/null || { echo "server did not start"; cat "$work/server.log"; exit 1; }
RUST_LOG=warn "$bin" worker --server "$url" --name fuzz-worker --capacity 4 >"$work/worker.log" 2>&1 &
pids+=($!)

echo "== schemathesis against $url (max $max_examples examples per operation, ${max_time}s budget)"
args=(
  run "$url/openapi.json"
  --checks "$checks"
  --max-examples "$max_examples"
  --max-time "$max_time"
  --workers 2
  --request-timeout 90
  # The event streams never end by design (SSE) or need an upgrade (WebSocket).
  --exclude-path-regex '^/v1/events'
  --report ndjson --report-ndjson-path "$work/events.ndjson"
  --no-color
)
[ -n "${FUZZ_SEED:-}" ] && args+=(--seed "$FUZZ_SEED")
set +e
"$venv/bin/schemathesis" "${args[@]}" 2>&1 | tee "$work/out.txt"
status=${PIPESTATUS[0]}
set -e

cases="$(grep -Eo '[0-9]+ generated' "$work/out.txt" | tail -1 | grep -Eo '[0-9]+' || true)"
echo "== schemathesis exit $status; test cases run: ${cases:-unknown}"
if grep -qi "panicked" "$work/server.log"; then
  echo "== the server panicked:"; grep -i -A5 panicked "$work/server.log"; status=1
fi
if [ -n "${FUZZ_KEEP_REPORT:-}" ]; then cp "$work/events.ndjson" "$FUZZ_KEEP_REPORT"; fi
exit "$status"
