#!/usr/bin/env bash
# Profile-guided release build of the gateway (issue 16; figures in docs/performance.md,
# "Profile-guided build"):
#   1. build target/pgo-gen/release/portcullis with -Cprofile-generate;
#   2. train it on loopback: three nginx backends, then plain HTTP through a route with four
#      filters, HTTPS, HTTP/2 over TLS, a TCP listener, metrics scrapes and error replies,
#      each bounded by wrk's or curl's duration;
#   3. merge the profile with the toolchain's own llvm-profdata (rustup component llvm-tools);
#   4. build target/pgo/release/portcullis with -Cprofile-use.
#   scripts/pgo.sh            all four steps (two release builds: about 25 min on 2 cores)
#   SKIP_GEN=1 scripts/pgo.sh reuse the instrumented build and the profile in target/pgo-data
# Needs wrk, nginx, curl, openssl (../shared/bench/setup.sh --no-build installs wrk and nginx).
# Only 127.0.0.1 is used.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
data=$here/target/pgo-data
TRAIN_SECONDS=${TRAIN_SECONDS:-10}
for t in wrk nginx curl openssl; do command -v $t >/dev/null || { echo "pgo.sh: missing $t" >&2; exit 1; }; done
rustup component add llvm-tools >/dev/null 2>&1 || true
profdata=$(ls "$(rustc --print sysroot)"/lib/rustlib/*/bin/llvm-profdata 2>/dev/null | head -1)
[[ -x $profdata ]] || { echo "pgo.sh: no llvm-profdata in the toolchain (rustup component add llvm-tools)" >&2; exit 1; }

if [[ -z ${SKIP_GEN:-} ]]; then
  rm -rf "$data"; mkdir -p "$data/raw"
  RUSTFLAGS="-Cprofile-generate=$data/raw" cargo build --release --locked --bin portcullis \
    --target-dir target/pgo-gen
  scripts/pgo-train.sh target/pgo-gen/release/portcullis "$TRAIN_SECONDS"
  "$profdata" merge -o "$data/merged.profdata" "$data"/raw/*.profraw
fi
[[ -s $data/merged.profdata ]] || { echo "pgo.sh: no profile at $data/merged.profdata" >&2; exit 1; }
RUSTFLAGS="-Cprofile-use=$data/merged.profdata" cargo build --release --locked --bin portcullis \
  --target-dir target/pgo
echo "pgo.sh: target/pgo/release/portcullis"
