#!/usr/bin/env bash
# README's second command: install what the tests need, check style, run
# every test (unit, and end-to-end over real PostgreSQL, Greenplum,
# flight-server and trainer processes, and pyarrow).
#
# Greenplum: the tests that need one are #[ignore]d in plain `cargo test`
# and run here against HOPPER_GREENPLUM_URL — the URL you export (your own
# Greenplum 7 coordinator, a superuser's login), or else the cluster
# ../shared/greenplum/up.sh starts beside the checkout. HOPPER_GREENPLUM=
#   auto     (default) run them when a Greenplum is at hand, say so when not;
#   require  (the default under CI=true) fail when none is at hand;
#   off      do not run them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh

default_mode=auto
[[ "${CI:-}" == true ]] && default_mode=require
mode="${HOPPER_GREENPLUM:-$default_mode}"
if [[ "$mode" != off && -z "${HOPPER_GREENPLUM_URL:-}" && -x ../shared/greenplum/up.sh ]]; then
    echo "== greenplum: starting ../shared/greenplum"
    HOPPER_GREENPLUM_URL="$(../shared/greenplum/up.sh)"
    export HOPPER_GREENPLUM_URL
fi
greenplum=()
if [[ "$mode" != off && -n "${HOPPER_GREENPLUM_URL:-}" ]]; then
    greenplum=(--run-ignored all)
    echo "== greenplum: the Greenplum tests run against ${HOPPER_GREENPLUM_URL%%://*}://…@${HOPPER_GREENPLUM_URL##*@}"
elif [[ "$mode" == require ]]; then
    echo "test.sh: a Greenplum is required (HOPPER_GREENPLUM=require, or CI=true) but there is" >&2
    echo "  neither HOPPER_GREENPLUM_URL nor ../shared/greenplum/up.sh" >&2
    exit 1
else
    echo "== greenplum: NOT RUN (no HOPPER_GREENPLUM_URL and no ../shared/greenplum); the tests named greenplum stay ignored"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "== installing cargo-nextest"
    cargo install --locked --quiet cargo-nextest
fi

echo "== cargo fmt --check"
cargo fmt --all --check
# The build below reuses every dependency the demo's build compiled, and the
# tests' build every crate of the build below: a feature turned on in one
# and not the other compiles a crate, and all built on it, twice.
echo "== the builds share their crates"
scripts/build-features.sh

# README's first command's build, exactly as scripts/demo.sh runs it (before
# the wrapper below, which would make it another build): a no-op after the
# demo, and in CI the proof that the demo compiles.
echo "== scripts/demo.sh's build"
cargo build -p mop -p flight-server --no-default-features --features mop/demo --quiet
# One compile does clippy's work and the build's: clippy-driver compiles the
# workspace's crates (every target) as rustc would, linting them on the way,
# while the dependencies are built once by plain rustc. (`cargo clippy`
# would check every dependency a second time, in a mode no build can reuse:
# a third of a cold run.) Exported, so the tests' own builds (tests/src/lib.rs
# `binary`) and nextest's find the same artifacts. CLIPPY_ARGS is how
# `cargo clippy -- -D warnings` hands its arguments to clippy-driver.
RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)"
CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
export RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS
# `mop demo` included: the end-to-end tests run it.
features=(--features mop/demo)
# The binaries exactly as the tests' own check (tests/src/lib.rs `binary`)
# builds them: any other target set unifies
# features differently and would have the first end-to-end test build them
# again. nextest compiles (and so lints) the test targets.
echo "== clippy (-D warnings) and the build: every binary, the benchmarks' included"
cargo build --workspace --bins "${features[@]}" --quiet
echo "== benchmarks: a smoke run of each on tiny data (seconds, not figures)"
scripts/bench-smoke.sh
echo "== tests"
# A real `mlflow server` for the tracking tests, from a venv of its own.
HOPPER_MLFLOW_PYTHON="$(scripts/mlflow-venv.sh)"
export HOPPER_MLFLOW_PYTHON
# Measurements (tests named measure_*) are #[ignore]d and never run here.
cargo nextest run --workspace "${features[@]}" --no-fail-fast "${greenplum[@]}" -E 'not test(/measure_/)' "$@"
