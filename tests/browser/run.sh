#!/usr/bin/env bash
# End-to-end browser test of the dashboard: a real server, two real workers, headless Chromium.
#
#   tests/browser/run.sh
#
# BRIGADE_BIN   the brigade binary (default: $CARGO_TARGET_DIR/debug/brigade, else target/debug/brigade)
# BRIGADE_URL   test a server that is already running instead of starting one (with its own workers)
# SCREENSHOT_DIR where screenshots go (default: target)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
  echo "installing chromium (Debian package)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

export SCREENSHOT_DIR="${SCREENSHOT_DIR:-$root/target}"
mkdir -p "$SCREENSHOT_DIR"

if [ -n "${BRIGADE_URL:-}" ]; then
  node "$here/dashboard.mjs"
  node "$here/run-page.mjs"
  node "$here/schedules-page.mjs"
  node "$here/limits-card.mjs"
  node "$here/graph-page.mjs"
  exec node "$here/failed-page.mjs"
fi

bin="${BRIGADE_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/brigade}"
if [ ! -x "$bin" ]; then
  echo "no brigade binary at $bin: run 'cargo build' or set BRIGADE_BIN" >&2
  exit 2
fi

tmp="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"

"$bin" server --listen "127.0.0.1:$port" --database-url "sqlite://$tmp/brigade.db" >"$tmp/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fsS "$url/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
if ! curl -fsS "$url/readyz" >/dev/null; then
  echo "server did not become ready; its log:" >&2
  cat "$tmp/server.log" >&2
  exit 1
fi

for n in w1 w2; do
  "$bin" worker --server "$url" --name "$n" --capacity 8 >"$tmp/worker-$n.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 1 100); do
  active="$(curl -fsS "$url/v1/workers" | python3 -c 'import json,sys; print(sum(w["state"] == "active" for w in json.load(sys.stdin)))' 2>/dev/null || echo 0)"
  [ "$active" -ge 2 ] && break
  sleep 0.1
done

status=0
BRIGADE_URL="$url" node "$here/dashboard.mjs" || status=$?
if [ "$status" -eq 0 ]; then
  BRIGADE_URL="$url" node "$here/run-page.mjs" || status=$?
fi
if [ "$status" -eq 0 ]; then
  BRIGADE_URL="$url" node "$here/schedules-page.mjs" || status=$?
fi
if [ "$status" -eq 0 ]; then
  BRIGADE_URL="$url" node "$here/limits-card.mjs" || status=$?
fi
if [ "$status" -eq 0 ]; then
  BRIGADE_URL="$url" node "$here/graph-page.mjs" || status=$?
fi
if [ "$status" -eq 0 ]; then
  BRIGADE_URL="$url" node "$here/failed-page.mjs" || status=$?
fi
if [ "$status" -ne 0 ]; then
  for f in "$tmp"/*.log; do echo "== $f" >&2; tail -n 40 "$f" >&2; done
fi
exit "$status"
