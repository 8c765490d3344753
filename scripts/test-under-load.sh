#!/usr/bin/env bash
# Run `make test` N times in a row (default 5) with a CPU hog beside it: one busy loop per
# core, each bounded by `timeout` so it stops by itself. Stops at the first failure.
# Shows whether the suite depends on how fast the machine is.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
make build >/dev/null
cargo test --workspace --locked --no-run >/dev/null 2>&1
hogs=()
cleanup() { for p in "${hogs[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
for _ in $(seq "$(nproc)"); do
  timeout 3600 sh -c 'while :; do :; done' &
  hogs+=("$!")
done
for i in $(seq "$runs"); do
  start=$(date +%s)
  if make test >"/tmp/portcullis-test-under-load-$i.log" 2>&1; then
    echo "run $i: passed in $(( $(date +%s) - start )) s"
  else
    echo "run $i: FAILED after $(( $(date +%s) - start )) s (log: /tmp/portcullis-test-under-load-$i.log)"
    grep -E "panicked|FAILED" "/tmp/portcullis-test-under-load-$i.log" | head -20
    exit 1
  fi
done
echo "$runs runs passed with $(nproc) busy loops beside them"
