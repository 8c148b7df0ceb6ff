#!/usr/bin/env bash
# A Python with PyTorch for the end-to-end benchmark's PyTorch leg: the
# torch release whose libtorch hopper links (scripts/libtorch.sh), from
# PyPI, in a venv of its own (the CUDA wheels' libraries are several GB; the
# test venv stays small). Prints the venv's python; quick the second time.
#
#   HOPPER_TORCH_PYTHON="$(bench/torch-venv.sh)" cargo run --release -p hopper-bench --bin end-to-end -- --quick
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="$(sed -n 's/^TORCH_VERSION=//p' "$HERE/scripts/libtorch.sh")"
VENV="${HOPPER_CACHE:-$HOME/.cache/hopper}/torch-venv-$VERSION"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    echo "torch-venv: installing torch==$VERSION from PyPI into $VENV" >&2
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==$VERSION" numpy >&2
fi
echo "$VENV/bin/python"
