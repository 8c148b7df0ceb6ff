#!/usr/bin/env bash
# README's first command: install what hopper needs, build it, run the demo.
# Arguments go to `mop demo` (see `mop demo --help`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
# The build README's second command makes and tests (the dev profile, which
# optimizes; every binary, `mop demo` included), so the tests that follow a
# demo reuse it and CI compiles the demo exactly as it runs here.
# Not --quiet: a cold build takes minutes, and cargo's progress says how many.
cargo build --workspace --bins --features mop/demo
exec "${CARGO_TARGET_DIR:-target}/debug/mop" demo "$@"
