#!/usr/bin/env bash
# README's first command: install what hopper needs, build it, run the demo.
# Arguments go to `mop demo` (see `mop demo --help`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
# Without flight-server's files source: the demo reads PostgreSQL (or
# Greenplum), and DataFusion is more than half of a cold build.
cargo build --release --quiet -p mop -p flight-server --no-default-features --features mop/demo
exec "${CARGO_TARGET_DIR:-target}/release/mop" demo "$@"
