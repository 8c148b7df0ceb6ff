#!/usr/bin/env bash
# README's second command: install what the tests need, check style, run
# every test (unit, and end-to-end over real PostgreSQL, flight-server and
# trainer processes, and pyarrow).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== build"
# The same targets (so the same dependency features) as the test build; it
# also links the binaries the end-to-end tests start (see
# tests/src/lib.rs `binary`).
cargo build --workspace --all-targets --quiet
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast "$@"
fi
