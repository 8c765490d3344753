#!/usr/bin/env bash
# The cost per request of the shared rate limit: local (in-process), sync and exact (Redis),
# through the release binary, interleaved by scripts/bench-ab.sh (nginx backends, proxy on
# CPU 1, wrk -t1 -c50 on CPU 0). Each limit is far above the load, so every request passes
# and only the limiter's cost differs. A redis-server on 127.0.0.1:16379 (pinned to CPU 0,
# no persistence) serves the store; it is stopped by its PID at the end.
#   scripts/bench-rate-limit.sh [ROUNDS]   (default 3; DURATION=10 seconds per run)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-3}
command -v redis-server >/dev/null || { echo "missing redis-server (scripts/deps.sh)" >&2; exit 1; }
W=$(mktemp -d /tmp/bench-rl.XXXXXX)
taskset -c 0 redis-server --port 16379 --bind 127.0.0.1 --save "" --appendonly no --dir "$W" >"$W/redis.log" 2>&1 &
redis=$!
trap 'kill "$redis" 2>/dev/null || true; rm -rf "$W"' EXIT
for _ in $(seq 50); do [[ $(redis-cli -p 16379 ping 2>/dev/null) == PONG ]] && break; sleep 0.1; done
ab=$here/benches/ab
"$here/scripts/bench-ab.sh" "$rounds" local="$ab/rl-local.yaml" sync="$ab/rl-sync.yaml" exact="$ab/rl-exact.yaml"
echo "# redis: $(redis-cli -p 16379 info commandstats | grep -E 'cmdstat_(evalsha|eval):' | tr '\r' ' ')"
