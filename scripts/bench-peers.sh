#!/usr/bin/env bash
# Run the shared peer benchmark with portcullis as an extra row, side by side with nginx and
# minimal Pingora. Extra arguments go to peers.sh (default: --repeat 3 --only direct,nginx,minimal-pingora).
#   scripts/bench-peers.sh [--repeat 3] [--only direct,nginx,minimal-pingora] ...
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
peers=${PEERS_SH:-$here/../shared/bench/peers.sh}
[[ -f $peers ]] || { echo "bench-peers: $peers not found (needs ../shared beside the checkout)" >&2; exit 1; }
args=("$@")
((${#args[@]})) || args=(--repeat 3 --only direct,nginx,minimal-pingora)
exec bash "$peers" "${args[@]}" --target "exec $here/scripts/bench-target.sh" --target-name "${BENCH_NAME:-portcullis}"
