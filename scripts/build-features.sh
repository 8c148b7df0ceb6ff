#!/usr/bin/env bash
# Which dependencies README's second command compiles again after its first.
#
# A crate built with other features is another crate to cargo: it and
# everything built on it compile again. README's first command builds the
# demo without flight-server's files source (DataFusion); the second builds
# the whole workspace, where DataFusion turns on features of crates the demo
# builds too. flight-server's Cargo.toml turns those on in every build; the
# tests' dev-dependencies must turn on nothing the build does not. This
# prints each crate that one build compiles with other features than the
# one before it, and exits 1 if there is one.
#
#   scripts/build-features.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# features EDGES PACKAGE-ARGS…: "crate version [features]", one line per
# crate built.
features() {
    local edges=$1
    shift
    cargo tree --quiet --prefix none --edges "$edges" --format '{p} [{f}]' "$@" |
        sed -e 's/ (\*)$//' -e 's/ (proc-macro)//' | sort -u
}
demo="$(features normal,build -p mop -p flight-server --no-default-features --features mop/demo)"
all="$(features normal,build --workspace --features mop/demo)"
tests="$(features normal,build,dev --workspace --features mop/demo)"
status=0
# Hopper's own crates are left out of the first comparison: the second
# command compiles them again anyway, linting them.
twice="$(comm -23 <(grep -v ' (/' <<<"$demo") <(grep -v ' (/' <<<"$all"))"
if [[ -n "$twice" ]]; then
    echo "build-features: the workspace's build compiles these again, with other features than the demo's:"
    sed 's/^/  /' <<<"$twice"
    status=1
fi
# The test build (dev-dependencies too) against the workspace's build: a
# dev-dependency that turns on a feature of one of hopper's crates has the
# tests compile that crate and all above it a second time.
twice="$(comm -23 <(echo "$all") <(echo "$tests"))"
if [[ -n "$twice" ]]; then
    echo "build-features: the test build compiles these again, with other features than the workspace's build:"
    sed 's/^/  /' <<<"$twice"
    status=1
fi
((status == 0)) && echo "build-features: the demo's build, the workspace's and the tests' share every crate they have in common"
exit $status
