#!/usr/bin/env bash
# README's first command: install what hopper needs, build it, run the demo.
# Arguments go to `mop demo` (see `mop demo --help`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
# What the demo runs and nothing more: `mop` (with `mop demo`) and the
# flight-server without its files source — DataFusion is more than half of a
# cold build, and the demo reads PostgreSQL. README's second command runs
# this same build first (scripts/test.sh), so CI compiles the demo exactly as
# it runs here. Not --quiet: a cold build takes minutes; cargo says how many.
cargo build -p mop -p flight-server --no-default-features --features mop/demo
exec "${CARGO_TARGET_DIR:-target}/debug/mop" demo "$@"
