#!/usr/bin/env bash
# The Python SDK's test suite (sdk/python/tests) against the real server binary.
#   Creates a venv under $CARGO_TARGET_DIR (or target/), pip installs
#   ./sdk/python, pytest and mypy into it, type-checks the package and runs pytest. The binary is $BRIGADE_BIN,
#   default "${CARGO_TARGET_DIR:-target}/debug/brigade"; it is built with cargo
#   when missing. Extra arguments go to pytest (e.g. -k sigkill).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*" >&2; }

target=${CARGO_TARGET_DIR:-target}
bin=${BRIGADE_BIN:-$target/debug/brigade}
if [ ! -x "$bin" ]; then
  say "building the brigade binary ($bin is missing)"
  cargo build --bin brigade
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null; then
  echo "error: the Python SDK needs Python >= 3.10 ($python is $("$python" --version 2>&1))" >&2
  exit 1
fi
mkdir -p "$target"
venv=$(cd "$target" && pwd)/python-venv
if [ ! -x "$venv/bin/python" ]; then
  say "creating a venv in $venv"
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    # Debian ships venv apart from python3; a fresh machine may lack it.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      say "installing python3-venv"
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv) >/dev/null
      rm -rf "$venv"
      "$python" -m venv "$venv"
    else
      echo "error: cannot create a venv: install python3-venv" >&2
      exit 1
    fi
  fi
fi
say "installing ./sdk/python, pytest and mypy"
"$venv/bin/python" -m pip install --quiet ./sdk/python pytest mypy
# The same version number again: reinstall it, so the tests see this tree.
"$venv/bin/python" -m pip install --quiet --force-reinstall --no-deps ./sdk/python

cd sdk/python
say "mypy: the package is typed (py.typed), so its annotations must hold"
"$venv/bin/python" -m mypy --no-incremental src/brigade

say "pytest sdk/python/tests (server: $bin)"
# Run from the installed package, not the source tree, so packaging mistakes show.
BRIGADE_BIN="$bin" "$venv/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
