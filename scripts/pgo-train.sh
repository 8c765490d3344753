#!/usr/bin/env bash
# The training run of scripts/pgo.sh: drives BINARY (built with -Cprofile-generate) through the
# paths a deployment serves, on 127.0.0.1 only, then stops it with SIGINT so that it writes its
# profile at exit.
#   scripts/pgo-train.sh BINARY [SECONDS]
# Three nginx backends; one gateway with a plain HTTP listener (a route with rate_limit,
# circuit_breaker, canary and headers filters, consistent hashing on a second route, a route
# to a dead backend for 502s), an HTTPS listener with HTTP/2, a TCP listener, metrics and the
# JSON access log. Each load step is bounded by wrk's -d or a fixed request count, and each curl
# transfer by -m 5.
set -euo pipefail
bin=$1; secs=${2:-10}
. "$(dirname "$0")/lib/nginx-backends.sh"
W=$(mktemp -d /tmp/pgo-train.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done; sleep 0.5
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
read -r p1 p2 p3 dead web tls tcp metrics < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(8)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
nginx_backends "$W" "$p1" "$p2" "$p3"; pids+=("$NGINX_PID")
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=pgo.test -keyout "$W/k.pem" \
  -out "$W/c.pem" 2>/dev/null
cat >"$W/gw.yaml" <<EOF
server: { threads: 1, pid_file: $W/gw.pid, upgrade_sock: $W/gw.sock, grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }
listeners:
  - { name: web, address: "127.0.0.1:$web" }
  - { name: tls, address: "127.0.0.1:$tls", protocol: https, tls: { certificates: [{ cert: $W/c.pem, key: $W/k.pem }] } }
  - { name: tcp, address: "127.0.0.1:$tcp", protocol: tcp, upstream: pool }
metrics: { address: "127.0.0.1:$metrics" }
access_log: { file: $W/access.log }
routes:
  - name: dead
    match: { path: { prefix: /dead } }
    upstream: dead
  - name: hashed
    match: { path: { prefix: /user } }
    upstream: hashed
  - name: all
    upstream: pool
    filters:
      - { kind: rate_limit, rate: 100000000, per: second, key: client_ip }
      - { kind: circuit_breaker }
      - { kind: canary, upstream: canary, header: { name: x-canary }, weight: 0 }
      - { kind: headers, request: { set: { x-bench: "1" } }, response: { set: { x-gateway: portcullis } } }
upstreams:
  - name: pool
    strategy: round_robin
    backends: [{ address: "127.0.0.1:$p1" }, { address: "127.0.0.1:$p2" }, { address: "127.0.0.1:$p3" }]
  - name: hashed
    strategy: { kind: consistent_hash, key: "header:x-user" }
    backends: [{ address: "127.0.0.1:$p1" }, { address: "127.0.0.1:$p2" }, { address: "127.0.0.1:$p3" }]
  - name: canary
    backends: [{ address: "127.0.0.1:$p1" }]
  - name: dead
    timeouts: { connect: 100ms }
    backends: [{ address: "127.0.0.1:$dead" }]
EOF
RUST_LOG=warn "$bin" --no-watch -c "$W/gw.yaml" >"$W/gw.log" 2>&1 & gw=$!; pids+=($gw)
for _ in $(seq 300); do curl -m 5 -sf -o /dev/null "http://127.0.0.1:$web/" && break; sleep 0.1; done
[[ $(curl -m 5 -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$web/") == 200 ]] || { cat "$W/gw.log"; exit 1; }
half=$(( (secs + 1) / 2 ))
wrk -t1 -c50 -d"${secs}s" "http://127.0.0.1:$web/" | grep -E 'Requests/sec|Non-2xx' || true
wrk -t1 -c50 -d"${half}s" -H 'x-user: alice' "http://127.0.0.1:$web/user/1" | grep -E 'Requests/sec|Non-2xx' || true
wrk -t1 -c50 -d"${half}s" "https://127.0.0.1:$tls/" | grep -E 'Requests/sec|Non-2xx' || true
curl -m 5 -sk --http2 -o /dev/null "https://127.0.0.1:$tls/h2/[1-2000]"
wrk -t1 -c20 -d"${half}s" "http://127.0.0.1:$tcp/" | grep -E 'Requests/sec|Non-2xx' || true
for _ in $(seq 200); do curl -m 5 -s -o /dev/null "http://127.0.0.1:$tcp/"; done
curl -m 5 -s -o /dev/null "http://127.0.0.1:$web/dead/[1-300]"
curl -m 5 -s -o /dev/null "http://127.0.0.1:$metrics/metrics?[1-50]"
kill -INT $gw; wait $gw 2>/dev/null || true
echo "pgo-train.sh: $(wc -l <"$W/access.log") access-log lines"
