#!/usr/bin/env bash
# A smoke run of each benchmark binary on tiny data: seconds, not figures.
# The benchmarks measure nothing CI could judge, but they break silently
# when the code under them changes; this runs every one of them once, from
# the debug build `scripts/test.sh` makes (`cargo build --workspace --bins
# --features mop/demo`), and fails when any exits nonzero or overruns its
# time limit, naming it and showing the end of its output.
#
# The benchmarks start their own PostgreSQL segments (devcluster, which runs
# them as an unprivileged OS user when this runs as root). `greenplum` runs
# only when HOPPER_GREENPLUM_URL is set (and HOPPER_GREENPLUM is not off).
# The PyTorch legs (HOPPER_TORCH_PYTHON) are not part of a smoke run.
#
#   scripts/bench-smoke.sh    # HOPPER_BENCH_SMOKE_TIMEOUT: seconds per binary (300)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bin="${CARGO_TARGET_DIR:-target}/debug"
limit="${HOPPER_BENCH_SMOKE_TIMEOUT:-300}"
logs="$(mktemp -d "${TMPDIR:-/tmp}/hopper-bench-smoke.XXXXXX")"
failed=()
began=$EPOCHREALTIME

# run NAME ARGS…: one benchmark binary, its output kept in $logs/NAME.log.
run() {
    local name=$1
    shift
    local exe="$bin/$name" log="$logs/$name.log" status=0 start=$EPOCHREALTIME
    if [[ ! -x "$exe" ]]; then
        echo "bench-smoke: $exe is missing; build it with" >&2
        echo "  cargo build --workspace --bins --features mop/demo" >&2
        failed+=("$name")
        return
    fi
    env -u HOPPER_TORCH_PYTHON timeout --kill-after=10 "$limit" "$exe" "$@" >"$log" 2>&1 ||
        status=$?
    local took
    took=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    if ((status == 0)); then
        printf '  %-10s ok %6s s   %s\n' "$name" "$took" "${*:-(its defaults)}"
    else
        local why="exit status $status"
        ((status == 124 || status == 137)) && why="over its time limit of $limit s"
        {
            echo "bench-smoke: FAILED: $name ($why, after $took s): $exe $*"
            echo "---- the last 40 lines of its output ($log) ----"
            tail -n 40 "$log"
            echo "---- end of $name ----"
        } >&2
        failed+=("$name")
    fi
}

run data-plane --smoke --unix-socket
run end-to-end --smoke
run hops --smoke
run search --smoke
run training --smoke
run quality --smoke
# scale computes on paper from its flags (no data, no timing): its defaults
# take milliseconds.
run scale
if [[ "${HOPPER_GREENPLUM:-}" == off ]]; then
    echo "  greenplum: NOT RUN (HOPPER_GREENPLUM=off)"
elif [[ -n "${HOPPER_GREENPLUM_URL:-}" ]]; then
    run greenplum --smoke
    echo "  greenplum: ran against ${HOPPER_GREENPLUM_URL##*@}"
else
    echo "  greenplum: NOT RUN (no HOPPER_GREENPLUM_URL)"
fi

total=$(awk -v a="$began" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
if ((${#failed[@]})); then
    echo "bench-smoke: ${#failed[@]} benchmark(s) FAILED: ${failed[*]} (logs in $logs)" >&2
    exit 1
fi
echo "  all benchmarks ran in $total s (their numbers are not figures)"
rm -rf "$logs"
