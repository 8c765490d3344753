#!/usr/bin/env bash
# What the L4 read buffer of client connections costs and saves: CPU per request, throughput
# and p99 for each size, interleaved by scripts/bench-ab.sh (nginx backends, proxy on CPU 1,
# wrk -t1 -c50 on CPU 0), then the memory each idle keep-alive connection holds, measured by
# ../shared/bench/peers.sh --idle N: one run per size, each with nginx as the reference row.
#   scripts/bench-buffers.sh [ROUNDS] [IDLE]   (default 3 rounds, 3000 idle connections)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-3}
idle=${2:-3000}
ab=$here/benches/ab
sizes=(65536 16384 4096 0)
args=()
for s in "${sizes[@]}"; do args+=("read-$s=$ab/buf-$s.yaml"); done
"$here/scripts/bench-ab.sh" "$rounds" "${args[@]}"
peers=$here/../shared/bench/peers.sh
[[ -x $peers ]] || { echo "no $peers: skipping the idle-memory part" >&2; exit 1; }
for s in "${sizes[@]}"; do
  echo "# idle memory, read buffer $s"
  BENCH_LISTENER_YAML=", buffers: { read: $s }" "$peers" --only "nginx,read-$s" --target "$here/scripts/bench-target.sh" \
    --target-name "read-$s" --duration 5 --warmup 1 --idle "$idle" 2>&1 | grep -E "# idle|^(name|nginx|read-)" || true
done
