#!/usr/bin/env bash
# README's first command: install what hopper needs, build it, run the demo.
# Arguments go to `mop demo` (see `mop demo --help`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
cargo build --release --quiet -p mop-runner -p flight-server
exec target/release/mop demo "$@"
