#!/usr/bin/env bash
# graphile-worker (Node.js + PostgreSQL) baseline on this machine, printed as key=value lines,
# alternating round by round with brigade's own `bench` on PostgreSQL and on SQLite, so that the
# figures come from one run.
# Usage: run.sh [N] [ROUNDS]   (N noop jobs per throughput run, default 100000; ROUNDS default 2)
# Environment:
#   PG_ADMIN   a PostgreSQL URL (default postgres://postgres@127.0.0.1:5432/postgres); each run
#              makes its own database on that server and drops it
#   BRIGADE    brigade's binary (default: release/brigade under $CARGO_TARGET_DIR, else under
#              the repository's target/); BRIGADE= skips brigade (scripts/bench-vs-celery runs
#              brigade itself)
#   LATENCY_RUNS  round trips per latency run (default 500)
#   GRAPHILE_CONFIGS          throughput runs, "CONCURRENCY MODE" comma-separated
#                             (default "10 default,24 default,10 tuned,24 tuned")
#   GRAPHILE_LATENCY_CONFIGS  latency runs, the same way (default "10 default,24 tuned")
# Needs node, npm and psql: installs nodejs/npm with apt when missing and running as root, else
# says why and exits 3 (skipped). Installs graphile-worker (npm ci, from this directory's
# package-lock.json) into $GRAPHILE_BENCH_DIR (default /tmp/brigade-graphile-bench).
# Every line of round R starts "rR_".
set -eu
N=${1:-100000}
ROUNDS=${2:-2}
K=${LATENCY_RUNS:-500}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${GRAPHILE_BENCH_DIR:-/tmp/brigade-graphile-bench}
export ADMIN_URL=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
brigade=${BRIGADE-${CARGO_TARGET_DIR:-$root/target}/release/brigade}
IFS=, read -r -a configs <<<"${GRAPHILE_CONFIGS:-10 default,24 default,10 tuned,24 tuned}"
IFS=, read -r -a latency_configs <<<"${GRAPHILE_LATENCY_CONFIGS:-10 default,24 tuned}"

skip() { echo "graphile-worker baseline skipped: $*" >&2; exit 3; }
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Node.js (Debian packages nodejs, npm)" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm) >/dev/null 2>&1 ||
      skip "node/npm are missing and apt-get could not install nodejs and npm"
  else
    skip "node and npm are needed (install Node.js 18 or later)"
  fi
fi
command -v psql >/dev/null || skip "psql is needed (Debian package postgresql-client)"
mkdir -p "$work"
if ! cmp -s "$here/package-lock.json" "$work/package-lock.json" || [ ! -d "$work/node_modules/graphile-worker" ]; then
  cp "$here/package.json" "$here/package-lock.json" "$work/"
  (cd "$work" && npm ci --no-audit --no-fund --loglevel=error) >/dev/null || skip "npm ci could not install graphile-worker"
fi
export NODE_PATH="$work/node_modules"
psql_() { psql "$ADMIN_URL" -XAtq "$@"; }
psql_ -c 'select 1' >/dev/null || skip "PostgreSQL does not answer at $ADMIN_URL"

echo "graphile_worker_version=$(node -p 'require("graphile-worker/package.json").version')"
echo "node_version=$(node --version)"
echo "pg_version=$(psql_ -c 'show server_version' | cut -d' ' -f1)"
for s in fsync synchronous_commit wal_sync_method full_page_writes shared_buffers max_connections; do
  echo "pg_$s=$(psql_ -c "show $s")"
done
[ -n "$brigade" ] && [ -x "$brigade" ] && echo "brigade_version=$("$brigade" --version | cut -d' ' -f2)"
echo "nproc=$(nproc)"
echo "machine_cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo | tr -s ' ')"
f=$(mktemp "${TMPDIR:-/tmp}/graphile-dsync.XXXXXX")
s=$(dd if=/dev/zero of="$f" bs=4k count=500 oflag=dsync 2>&1 | awk '/copied/ {for (i=1;i<=NF;i++) if ($i ~ /^s,?$/) print $(i-1)}')
rm -f "$f"
[ -n "$s" ] && awk -v s="$s" 'BEGIN {printf "machine_dsync_write_ms=%.3f\n", s * 1000 / 500}'

load() { read -r a b c _ </proc/loadavg; echo "${1}load_1m=$a"; echo "${1}load_5m=$b"; }
gw() { node "$here/bench.js" "$@"; }          # bench.js stops the workers it starts, by PID
checkpoint() { psql_ -c checkpoint; }          # the same clean start for every run
brig() {                                       # brig PREFIX SCENARIO [ARGS...]
  local prefix=$1 db="" url=()
  shift
  if [ "$prefix" = brigade_pg_ ]; then
    db=brigade_bench_$$_$((dbn++))
    psql_ -c "create database $db"
    url=(--database-url "${ADMIN_URL%/*}/$db")
  fi
  checkpoint
  "$brigade" bench "$@" "${url[@]}" 2>>"$work/brigade.log" | sed "s/^/$prefix/" || echo "${prefix}failed=$*"
  [ -n "$db" ] && psql_ -c "drop database if exists $db with (force)"
  return 0
}
dbn=0
load machine_
for r in $(seq "$ROUNDS"); do
  {
    load ""
    for cfg in "${configs[@]}"; do
      checkpoint; gw throughput "$N" $cfg
    done
    for cfg in "${latency_configs[@]}"; do
      checkpoint; gw latency "$K" $cfg
    done
    if [ -n "$brigade" ] && [ -x "$brigade" ]; then
      brig brigade_pg_ throughput --tasks "$N" --workers 2 --capacity 256
      brig brigade_pg_ latency --latency-runs "$K"
      brig brigade_sqlite_ throughput --tasks "$N" --workers 2 --capacity 256
      brig brigade_sqlite_ latency --latency-runs "$K"
    fi
  } | sed -u "s/^/r${r}_/"
done
load end_
