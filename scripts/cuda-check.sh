#!/usr/bin/env bash
# The CUDA build of hopper, checked on any machine, GPU or not.
#
#   scripts/cuda-check.sh
#
# 1. provisions libtorch with CUDA (HOPPER_TORCH_FLAVOR=cuda scripts/libtorch.sh:
#    torch and every CUDA library its wheel requires, from PyPI, 3.6 GB);
# 2. builds `mop` against it in target/cuda (the CPU build in target/ stays);
# 3. checks the binary loads libtorch_cuda and every library it needs;
# 4. starts `mop trainer`, which must name its device: `cuda:0 (…)` where
#    nvidia-smi lists a GPU, else `cpu (CUDA build, no GPU present)`;
# 5. trains a small MLP on that trainer through a flight-server over a CSV
#    file, and checks results.json and `mop status` name the same device.
#
# Prints "cuda-check: ok (<device>)" and exits 0, or says what failed.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "cuda-check: $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

LIBTORCH_CUDA="$(HOPPER_TORCH_FLAVOR=cuda scripts/libtorch.sh)"
[[ -f "$LIBTORCH_CUDA/lib/libtorch_cuda.so" ]] || fail "no libtorch_cuda.so in $LIBTORCH_CUDA"

say "building mop against $LIBTORCH_CUDA (target/cuda)"
LIBTORCH="$LIBTORCH_CUDA" CARGO_TARGET_DIR=target/cuda cargo build --quiet -p mop --bin mop
MOP=target/cuda/debug/mop
say "building flight-server (CPU build, target/)"
LIBTORCH="$(scripts/libtorch.sh)" cargo build --quiet -p flight-server --bin flight-server
SERVER=target/debug/flight-server

LINKED="$(ldd "$MOP")"
grep -q "libtorch_cuda.so => $LIBTORCH_CUDA" <<<"$LINKED" || fail "mop does not load libtorch_cuda.so from $LIBTORCH_CUDA"
if grep -q "not found" <<<"$LINKED"; then
    fail "libraries not found: $(grep 'not found' <<<"$LINKED" | tr -s ' \t' ' ')"
fi
for lib in libcudart libcublas libcudnn libnccl libcusparse; do
    grep -q "$lib" <<<"$LINKED" || fail "mop does not load $lib"
done

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    WANT="cuda:0"
else
    WANT="cpu (CUDA build, no GPU present)"
fi

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Waits up to 10 s for a line matching $2 in the log $1.
wait_for() {
    for _ in $(seq 100); do
        grep -q "$2" "$1" && return
        sleep 0.1
    done
}

# A trainer of the CUDA build, started as a user would start one.
"$MOP" trainer --bind 127.0.0.1:0 --threads 1 >"$WORK/trainer.log" 2>&1 &
PIDS+=($!)
wait_for "$WORK/trainer.log" '^device: '
ADDR="$(sed -n 's/^mop trainer listening on //p' "$WORK/trainer.log" | head -1)"
DEVICE="$(sed -n 's/^device: //p' "$WORK/trainer.log" | head -1)"
[[ -n "$ADDR" && -n "$DEVICE" ]] || fail "the trainer did not start: $(cat "$WORK/trainer.log")"
say "trainer at $ADDR reports device: $DEVICE"
[[ "$DEVICE" == "$WANT"* ]] || fail "the trainer reports '$DEVICE', expected '$WANT'"

# A Criteo-like CSV: the label follows i1, so a model can learn it.
mkdir -p "$WORK/data"
python3 - "$WORK/data/criteo.csv" <<'PY'
import random, sys
rng = random.Random(7)
cols = ["id", "label"] + [f"i{j}" for j in range(1, 14)] + [f"c{j}" for j in range(1, 27)]
with open(sys.argv[1], "w") as f:
    f.write(",".join(cols) + "\n")
    for i in range(3000):
        ints = [rng.randint(0, 100) for _ in range(13)]
        label = int(ints[0] > 50)
        cats = [format(rng.randint(0, 30), "08x") for _ in range(26)]
        f.write(",".join(map(str, [i, label] + ints + cats)) + "\n")
PY
"$SERVER" --files "$WORK/data" --auth none --bind 127.0.0.1:0 >"$WORK/server.log" 2>&1 &
PIDS+=($!)
wait_for "$WORK/server.log" 'listening on'
FLIGHT="$(sed -n 's/^flight-server listening on //p' "$WORK/server.log" | head -1)"
[[ -n "$FLIGHT" ]] || fail "flight-server did not start: $(cat "$WORK/server.log")"

cat >"$WORK/run.toml" <<EOF
[source]
flight = "$FLIGHT"
table = "criteo"

[train]
epochs = 2
seed = 3
threads = 1
addresses = ["$ADDR"]

[grid]
arch = [{ kind = "mlp", hidden = [16] }]
optimizer = [{ kind = "adam" }, { kind = "lazy_adam" }]
lr = [1e-2]
batch_size = [64]
input = { kind = "criteo", sparse = true }

[output]
dir = "$WORK/out"
EOF
"$MOP" train --config "$WORK/run.toml" >"$WORK/train.log" 2>&1 || fail "mop train: $(tail -20 "$WORK/train.log")"
grep -q "^devices: $WANT" "$WORK/train.log" || fail "mop train did not name the device: $(head -20 "$WORK/train.log")"
python3 - "$WORK/out/results.json" "$WANT" <<'PY' || fail "results.json"
import json, sys
r = json.load(open(sys.argv[1]))
devices = [p["device"] for p in r["partitions"]]
assert devices and all(d.startswith(sys.argv[2]) for d in devices), devices
assert len(r["models"]) == 2, r["models"]
print(f"cuda-check: results.json: devices {devices}, models {len(r['models'])}", file=sys.stderr)
PY
"$MOP" status --dir "$WORK/out" | grep -q "($WANT" || fail "mop status does not name the device"
echo "cuda-check: ok ($DEVICE)"
