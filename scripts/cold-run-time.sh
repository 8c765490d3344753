#!/usr/bin/env bash
# How long a cold `make run` takes: clone REV (default HEAD) of this repository into a
# temporary directory, run `make run` there with an empty target directory, and time it
# until the demo gateway on 127.0.0.1:8080 answers. Crates already downloaded to
# ~/.cargo/registry are reused (downloads are the network's speed, not ours); nothing else
# is. Stops everything it started and removes the clone.
#   scripts/cold-run-time.sh [REV]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
rev=${1:-HEAD}
dir=$(mktemp -d /tmp/portcullis-cold.XXXXXX)
log=$dir.log
cleanup() {
  if [[ -n ${pid:-} ]]; then
    kill -INT -- "-$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -TERM -- "-$pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
trap "exit 130" INT TERM
git clone -q "$here" "$dir"
git -C "$dir" checkout -q "$rev"
cd "$dir"
start=$(date +%s.%N)
setsid make run >"$log" 2>&1 &
pid=$!
deadline=$((SECONDS + 3600))
until curl -sf -m 1 http://127.0.0.1:8080/ >/dev/null 2>&1; do
  kill -0 "$pid" 2>/dev/null || { echo "cold-run-time: make run stopped; see $log" >&2; exit 1; }
  ((SECONDS < deadline)) || { echo "cold-run-time: no answer within an hour" >&2; exit 1; }
  sleep 0.5
done
end=$(date +%s.%N)
echo "cold make run of $(git rev-parse --short HEAD): $(echo "$end - $start" | bc) s to the first answer on :8080 ($(nproc) cores; log $log)"
