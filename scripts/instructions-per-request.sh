#!/usr/bin/env bash
# Instructions per request, noise-free: the gateway under `valgrind --tool=callgrind`, one
# keep-alive client sending N1 then N2 requests (separate runs) to a loopback nginx backend;
# (Ir(N2) - Ir(N1)) / (N2 - N1) cancels start-up and shutdown. Then the TOP (default 20)
# functions by their own instructions per request, computed the same way per function.
#   scripts/instructions-per-request.sh [BINARY...]   (default: target/release/portcullis)
# A binary named minimal-pingora (../shared/bench/minimal-pingora, the framework's floor) is
# run as `minimal-pingora LISTEN UPSTREAM`; any other as portcullis with a JSON access log.
# KEEP=DIR keeps each binary's N2 profile as DIR/NAME.callgrind, for
# `callgrind_annotate --tree=caller` (who calls a costly function).
# Needs valgrind, nginx, python3. Only 127.0.0.1 is used; every run is bounded.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/lib/nginx-backends.sh"
N1=${N1:-500}; N2=${N2:-2500}
W=$(mktemp -d /tmp/ipr.XXXXXX)
ngx=""
cleanup() { [[ -n $ngx ]] && kill "$ngx" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
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
nginx_backends "$W" 19021; ngx=$NGINX_PID
ir() { # BIN N -> total instructions
  local out=$W/cg.$2
  local args=(-c "$W/gw.yaml")
  [[ $(basename "$1") != minimal-pingora ]] || args=(127.0.0.1:18091 127.0.0.1:19021)
  valgrind --tool=callgrind --callgrind-out-file="$out" "$1" "${args[@]}" >/dev/null 2>"$W/vg.log" & local vp=$!
  timeout 600 python3 "$W/client.py" "$2"
  kill -INT $vp; wait $vp 2>/dev/null || true
  awk '/^summary:|^totals:/ {print $2; exit}' "$out"
}
top() { # self instructions per request of the TOP functions, from the N1 and N2 profiles
  callgrind_annotate --threshold=100 --inclusive=no --auto=no "$W/cg.$N1" >"$W/a.txt"
  callgrind_annotate --threshold=100 --inclusive=no --auto=no "$W/cg.$N2" >"$W/b.txt"
  python3 - "$W/a.txt" "$W/b.txt" $((N2 - N1)) "${TOP:-20}" <<'PY'
import re, sys
from collections import defaultdict
line = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*)$")
def costs(path):
    out, started = defaultdict(int), False
    for l in open(path):
        if "file:function" in l:
            started = True
            continue
        m = line.match(l) if started else None
        if m:  # "FILE:FUNCTION [OBJECT]": paths hold no ':', so the first one ends the file
            name = re.sub(r" \([\d,]+x\)$", "", m.group(2).split(" [")[0])  # "(N x)": calls
            name = re.sub(r"::h[0-9a-f]{16}", "", name.split(":", 1)[-1])
            out[name] += int(m.group(1).replace(",", ""))
    return out
a, b = costs(sys.argv[1]), costs(sys.argv[2])
n, top = int(sys.argv[3]), int(sys.argv[4])
rows = sorted(((b[k] - a.get(k, 0)) / n, k) for k in b)[::-1]
total = sum(r for r, _ in rows)
print(f"  {'per req':>8} {'share':>6}  function (self instructions; top {top})")
for r, k in rows[:top]:
    print(f"  {r:8.0f} {100 * r / total:5.1f}%  {k[:150]}")
PY
}
[[ $# -gt 0 ]] || set -- "$here/target/release/portcullis"
for bin in "$@"; do
  a=$(ir "$bin" "$N1"); b=$(ir "$bin" "$N2")
  echo "$bin: $(( (b - a) / (N2 - N1) )) instructions per request"
  top
  [[ -z ${KEEP:-} ]] || { mkdir -p "$KEEP"; cp "$W/cg.$N2" "$KEEP/$(basename "$bin").callgrind"; }
done
