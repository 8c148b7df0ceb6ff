#!/usr/bin/env bash
# Installs what hopper needs to build, test and run the demo, from the
# project's own files: Debian packages, libtorch (PyPI wheels, cached in
# ~/.cache/hopper), and a Python venv with pyarrow for the Flight client
# tests and examples. Quick the second time: every step checks first.
#
#   source scripts/setup.sh     # exports LIBTORCH, HOPPER_PYTHON
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${HOPPER_CACHE:-$HOME/.cache/hopper}"
mkdir -p "$CACHE"

say() { echo "setup: $*" >&2; }

# --- Debian packages: PostgreSQL server, a C++ compiler, shellcheck -----------
need=()
command -v pg_config >/dev/null 2>&1 || need+=(postgresql-common)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)   # the deployment scripts' test
command -v patchelf >/dev/null 2>&1 || need+=(patchelf)       # scripts/package.sh
if ((${#need[@]})); then
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    say "installing ${need[*]}"
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >&2
    # The package starts a cluster of its own; hopper starts its own instances.
    $SUDO service postgresql stop >/dev/null 2>&1 || true
fi

# --- libtorch -----------------------------------------------------------------
LIBTORCH="$("$HERE/libtorch.sh")"
export LIBTORCH
export LIBTORCH_BYPASS_VERSION_CHECK=1

# --- Python venv with pyarrow (the Flight client we did not write) ------------
VENV="$CACHE/venv"
if [[ ! -x "$VENV/bin/python" ]] || ! cmp -s "$HERE/requirements.txt" "$VENV/.hopper-requirements"; then
    say "preparing $VENV (pyarrow, pandas, PyYAML)"
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$HERE/requirements.txt" >&2
    cp "$HERE/requirements.txt" "$VENV/.hopper-requirements"
fi
export HOPPER_PYTHON="$VENV/bin/python"
say "LIBTORCH=$LIBTORCH HOPPER_PYTHON=$HOPPER_PYTHON"
