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
# The binaries the end-to-end tests start, built the way the tests' own
# check builds them (tests/src/lib.rs `binary`), so none is built mid-run.
cargo build --workspace --bins --quiet
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast "$@"
fi
