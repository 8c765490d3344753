#!/usr/bin/env bash
# Run the shared peer benchmark with portcullis as an extra row, side by side with nginx,
# HAProxy and minimal Pingora, with the memory per idle keep-alive connection (--idle), then
# the noise-free instruction counts per request of minimal Pingora and portcullis with their
# top 20 functions (scripts/instructions-per-request.sh). Extra arguments go to peers.sh
# (default: --repeat 3 --idle 3000 --only direct,nginx,haproxy,minimal-pingora).
#   scripts/bench-peers.sh [--repeat 3] [--only direct,nginx,minimal-pingora] ...
# NO_INSTRUCTIONS=1 skips the callgrind part (about 8 minutes).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
peers=${PEERS_SH:-$here/../shared/bench/peers.sh}
[[ -f $peers ]] || { echo "bench-peers: $peers not found (needs ../shared beside the checkout)" >&2; exit 1; }
args=("$@")
((${#args[@]})) || args=(--repeat 3 --idle 3000 --only direct,nginx,haproxy,minimal-pingora)
bash "$peers" "${args[@]}" --target "exec $here/scripts/bench-target.sh" --target-name "${BENCH_NAME:-portcullis}"
[[ -z ${NO_INSTRUCTIONS:-} ]] || exit 0
floor=$(dirname "$peers")/minimal-pingora/target/release/minimal-pingora
bins=("$here/target/release/portcullis")
if [[ -x $floor ]]; then bins=("$floor" "${bins[@]}"); else echo "# no $floor (../shared/bench/setup.sh builds it)" >&2; fi
echo "# instructions per request (valgrind --tool=callgrind)"
exec "$here/scripts/instructions-per-request.sh" "${bins[@]}"
