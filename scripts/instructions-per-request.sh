#!/usr/bin/env bash
# Instructions per request, noise-free: the gateway under `valgrind --tool=callgrind`, one
# keep-alive client sending N1 then N2 requests (separate runs) to a loopback nginx backend;
# (Ir(N2) - Ir(N1)) / (N2 - N1) cancels start-up and shutdown.
#   scripts/instructions-per-request.sh [BINARY...]   (default: target/release/portcullis)
# Needs valgrind, nginx, python3. Only 127.0.0.1 is used; every run is bounded.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
N1=${N1:-500}; N2=${N2:-2500}
W=$(mktemp -d /tmp/ipr.XXXXXX)
ngx=""
cleanup() { [[ -n $ngx ]] && kill "$ngx" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
cat >"$W/nginx.conf" <<EOF2
daemon off; worker_processes 1; pid $W/nginx.pid; error_log $W/error.log warn;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $W/b; proxy_temp_path $W/p; fastcgi_temp_path $W/f; uwsgi_temp_path $W/u; scgi_temp_path $W/s;
  server { listen 127.0.0.1:19021; keepalive_requests 10000000; location / { return 200 "ok\n"; } } }
EOF2
cat >"$W/gw.yaml" <<EOF2
server: { threads: 1, pid_file: $W/pc.pid, upgrade_sock: $W/pc.sock, grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }
listeners: [{ name: bench, address: "127.0.0.1:18091" }]
access_log: { file: $W/access.log }
routes: [{ name: all, upstream: pool }]
upstreams: [{ name: pool, backends: [{ address: "127.0.0.1:19021" }] }]
EOF2
cat >"$W/client.py" <<'EOF2'
import socket, sys, time
n = int(sys.argv[1])
for _ in range(600):
    try:
        s = socket.create_connection(("127.0.0.1", 18091)); break
    except OSError: time.sleep(0.1)
s.settimeout(60)
req = b"GET /api/items?x=1 HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: ipr\r\nAccept: */*\r\n\r\n"
buf = b""
for i in range(n):
    s.sendall(req)
    while b"ok\n" not in buf:
        buf += s.recv(65536)
    buf = buf[buf.index(b"ok\n") + 3:]
EOF2
nginx -p "$W" -c "$W/nginx.conf" -e "$W/error.log" & ngx=$!
sleep 0.5
ir() { # BIN N -> total instructions
  local out=$W/cg.$2
  valgrind --tool=callgrind --callgrind-out-file="$out" "$1" -c "$W/gw.yaml" >/dev/null 2>"$W/vg.log" & local vp=$!
  timeout 600 python3 "$W/client.py" "$2"
  kill -INT $vp; wait $vp 2>/dev/null || true
  awk '/^summary:|^totals:/ {print $2; exit}' "$out"
}
[[ $# -gt 0 ]] || set -- "$here/target/release/portcullis"
for bin in "$@"; do
  a=$(ir "$bin" "$N1"); b=$(ir "$bin" "$N2")
  echo "$bin: $(( (b - a) / (N2 - N1) )) instructions per request"
done
