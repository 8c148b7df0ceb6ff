#!/usr/bin/env bash
# A Python with MLflow for the tests that track runs in a real `mlflow
# server` (tests/tests/e2e/mlflow.rs): a venv of its own, since MLflow's
# server pulls in much that neither hopper nor its other tests need.
# Prints the venv's python; quick the second time.
#
#   HOPPER_MLFLOW_PYTHON="$(scripts/mlflow-venv.sh)" cargo nextest run … -E 'test(/mlflow/)'
set -euo pipefail
VERSION=3.17.2
VENV="${HOPPER_CACHE:-$HOME/.cache/hopper}/mlflow-venv"
if [[ ! -x "$VENV/bin/mlflow" ]] || [[ "$("$VENV/bin/python" -c 'import mlflow; print(mlflow.__version__)' 2>/dev/null)" != "$VERSION" ]]; then
    echo "mlflow-venv: installing mlflow==$VERSION from PyPI into $VENV" >&2
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "mlflow==$VERSION" >&2
fi
echo "$VENV/bin/python"
