#!/usr/bin/env bash
# Regenerates link/portcullis.profdata.xz, the profile every release build is optimised with
# (scripts/build-release.sh, `make build`; issue 16, docs/performance.md "Profile-guided build
# by default"), then link/symbol-order.txt from the new build, then builds again:
#   1. target/pgo-gen/release/portcullis, built with -Cprofile-generate;
#   2. trained on loopback (scripts/pgo-train.sh): three nginx backends, then plain HTTP through
#      a route with four filters, HTTPS, HTTP/2 over TLS, a TCP listener, metrics scrapes and
#      error replies, each bounded by wrk's or curl's duration;
#   3. merged with the toolchain's own llvm-profdata (rustup component llvm-tools) into
#      link/portcullis.profdata.xz (packed);
#   4. the release build with it; scripts/symbol-order.sh on that binary; the release build
#      again, linked in the new order; scripts/check-symbol-order.sh.
# Run it when the request path has changed much, or after a compiler upgrade, and commit both
# files. About 30 min on 2 cores (two full release builds, one relink, two training runs).
#   scripts/pgo.sh              all steps
#   SKIP_GEN=1 scripts/pgo.sh   keep the profile, redo step 4
# Needs wrk, nginx, curl, openssl and valgrind (../shared/bench/setup.sh --no-build installs
# wrk and nginx). Only 127.0.0.1 is used.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
data=$here/target/pgo-data
TRAIN_SECONDS=${TRAIN_SECONDS:-10}
for t in wrk nginx curl openssl valgrind; do command -v $t >/dev/null || { echo "pgo.sh: missing $t" >&2; exit 1; }; done
rustup component add llvm-tools >/dev/null 2>&1 || true
profdata=$(ls "$(rustc --print sysroot)"/lib/rustlib/*/bin/llvm-profdata 2>/dev/null | head -1)
[[ -x $profdata ]] || { echo "pgo.sh: no llvm-profdata in the toolchain (rustup component add llvm-tools)" >&2; exit 1; }

if [[ -z ${SKIP_GEN:-} ]]; then
  rm -rf "$data"; mkdir -p "$data/raw"
  RUSTFLAGS="-Cprofile-generate=$data/raw" cargo build --release --locked --bin portcullis \
    --target-dir target/pgo-gen
  # The build's own instrumented build scripts wrote profiles here too; only the gateway's count.
  rm -f "$data"/raw/*.profraw
  scripts/pgo-train.sh target/pgo-gen/release/portcullis "$TRAIN_SECONDS"
  # --sparse leaves out functions that never ran (the committed profile: 6.5 MB, not 22).
  "$profdata" merge --sparse -o "$data/merged.profdata" "$data"/raw/*.profraw
  xz -9 -c "$data/merged.profdata" >"$here/link/portcullis.profdata.xz"
fi
scripts/build-release.sh
scripts/symbol-order.sh
scripts/build-release.sh
scripts/check-symbol-order.sh
echo "pgo.sh: link/portcullis.profdata.xz and link/symbol-order.txt regenerated; commit them"
