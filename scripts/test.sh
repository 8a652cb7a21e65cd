#!/usr/bin/env bash
# The whole test suite: formatting and lints are CI's; this runs the tests.
#   unit tests of every crate, and the end-to-end suite (real binary, real
#   worker processes, HTTP on 127.0.0.1) once on SQLite and once on PostgreSQL,
#   and the Python SDK's pytest suite against the same binary.
# PostgreSQL: uses the one answering on 127.0.0.1:5432 (or $BRIGADE_TEST_POSTGRES);
# when none answers, starts a throwaway one (initdb + pg_ctl in a temp dir) and
# stops it at the end. BRIGADE_SKIP_POSTGRES=1 skips the PostgreSQL pass.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*" >&2; }

if ! cargo nextest --version >/dev/null 2>&1; then
  say "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

pg_url=${BRIGADE_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}
pg_tmp=""
cleanup() {
  if [ -n "$pg_tmp" ]; then
    say "stopping the throwaway PostgreSQL"
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_tmp/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$pg_tmp"
  fi
}
trap cleanup EXIT

pg_answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

start_throwaway_pg() {
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      say "installing PostgreSQL (Debian package postgresql)"
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null
      pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    fi
  fi
  if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
    echo "error: no PostgreSQL answers on 127.0.0.1:5432 and initdb is not installed" >&2
    echo "       install the Debian package 'postgresql', point BRIGADE_TEST_POSTGRES at a server," >&2
    echo "       or run with BRIGADE_SKIP_POSTGRES=1 to test SQLite only" >&2
    exit 1
  fi
  id postgres >/dev/null 2>&1 || useradd --system --home /var/lib/postgresql postgres
  pg_tmp=$(mktemp -d /tmp/brigade-pg.XXXXXX)
  chown postgres "$pg_tmp"
  runuser -u postgres -- "$pg_bin/initdb" -D "$pg_tmp/data" -A trust -U postgres >/dev/null
  # A port below the ephemeral range, so no outgoing connection holds it; try a few.
  local port=25432 tries=0
  while :; do
    while pg_answers 127.0.0.1 "$port"; do port=$((port + 1)); done
    say "starting a throwaway PostgreSQL on 127.0.0.1:$port ($pg_tmp)"
    if runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_tmp/data" -l "$pg_tmp/log" -w \
      -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$pg_tmp -c fsync=off -c max_connections=400" \
      start >/dev/null; then
      break
    fi
    tries=$((tries + 1))
    if [ "$tries" -ge 5 ]; then
      echo "error: the throwaway PostgreSQL would not start; its log:" >&2
      cat "$pg_tmp/log" >&2
      exit 1
    fi
    port=$((port + 1))
  done
  pg_url="postgres://postgres@127.0.0.1:$port/postgres"
}

say "unit and end-to-end tests on SQLite"
env -u BRIGADE_TEST_POSTGRES cargo nextest run --workspace --no-fail-fast -E 'not binary(postgres)' "$@"

say "the Python SDK's tests (pytest, against the real binary)"
scripts/test-python.sh

if [ "${BRIGADE_SKIP_POSTGRES:-0}" = 1 ]; then
  say "skipping PostgreSQL (BRIGADE_SKIP_POSTGRES=1)"
  exit 0
fi
hostport=${pg_url#*@}; hostport=${hostport%%/*}
if ! pg_answers "${hostport%%:*}" "${hostport##*:}"; then
  start_throwaway_pg
fi
say "end-to-end tests on PostgreSQL ($pg_url)"
BRIGADE_TEST_POSTGRES=$pg_url cargo nextest run --workspace --no-fail-fast -E 'binary(e2e) | binary(postgres) | binary(chaos)' "$@"
