#!/usr/bin/env bash
# Upstream connection churn under steady load: how often the gateway opens a new connection
# to a backend instead of reusing a pooled one, and how many "failed to acquire reusable
# stream" lines it logs. The issue-10 scenario: server.threads 2, three demo backends, an HTTP
# health check, wrk -c50 through the release binary, all on 127.0.0.1, bounded in time.
#   scripts/upstream-connects.sh [BINARY] [SECONDS]   (default: target/release/portcullis 20)
# Connects are counted by the backends themselves (connections that carried a proxied request,
# `GET /devserver/connections`), after a 3 s warm-up.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$here/target/release/portcullis}
secs=${2:-20}
W=$(mktemp -d /tmp/churn.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
ports=(19311 19312 19313)
for i in 0 1 2; do
  "$bin" demo-backend --name "b$i" --listen "127.0.0.1:${ports[$i]}" >/dev/null 2>&1 &
  pids+=("$!")
done
cat >"$W/gw.yaml" <<EOF2
server: { threads: 2, pid_file: $W/pc.pid, upgrade_sock: $W/pc.sock, grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }
listeners: [{ name: web, address: "127.0.0.1:19310" }]
access_log: off
routes: [{ name: all, upstream: pool }]
upstreams:
  - name: pool
    strategy: round_robin
    health_check: { kind: http, path: /healthz, interval: 1s }
    backends:
      - { address: "127.0.0.1:${ports[0]}" }
      - { address: "127.0.0.1:${ports[1]}" }
      - { address: "127.0.0.1:${ports[2]}" }
EOF2
"$bin" -c "$W/gw.yaml" --no-watch 2>"$W/gw.log" &
pids+=("$!")
for _ in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:19310/ && break; sleep 0.1; done
connects() {
  local sum=0
  for p in "${ports[@]}"; do sum=$((sum + $(curl -fs "http://127.0.0.1:$p/devserver/connections"))); done
  echo "$sum"
}
wrk -t2 -c50 -d3s http://127.0.0.1:19310/ >/dev/null
c0=$(connects); e0=$(grep -c "failed to acquire reusable stream" "$W/gw.log" || true)
out=$(wrk -t2 -c50 -d"${secs}s" http://127.0.0.1:19310/)
c1=$(connects); e1=$(grep -c "failed to acquire reusable stream" "$W/gw.log" || true)
reqs=$(echo "$out" | awk '/requests in/ {print $1}')
python3 - "$reqs" "$((c1 - c0))" "$((e1 - e0))" "$secs" "$bin" <<'EOF2'
import sys
reqs, conns, errs, secs, binary = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
print(f"{binary}: {reqs} requests in {secs}s, {conns} upstream connects "
      f"({1000*conns/max(reqs,1):.2f} per 1,000 requests), "
      f"{errs} 'failed to acquire reusable stream' lines ({60*errs/secs:.0f} a minute)")
EOF2
