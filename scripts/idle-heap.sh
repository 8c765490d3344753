#!/usr/bin/env bash
# Where the memory of idle keep-alive client connections goes, by allocation site.
# Builds portcullis with the system allocator (cargo profile `heap`, feature
# `system-allocator`) and runs it twice under valgrind's dhat with one demo backend: once
# with N and once with 2N keep-alive client connections held idle (one request each). The
# difference of the heap at its peak between the two runs, per allocation site, divided by
# N, is what one more idle connection costs; start-up allocations cancel out.
# Only 127.0.0.1 is used; every process is stopped by its PID, every wait has a deadline.
#   scripts/idle-heap.sh [N] [LISTENER_KEYS]     e.g. scripts/idle-heap.sh 200 'buffers: {read: 65536}'
# BIN=path skips the build (it must use the system allocator and carry line tables).
# WS=BYTES: upgraded connections (a 101 echo backend); each client echoes BYTES bytes, then idles.
# TLS=1: an https listener with a throwaway self-signed certificate, and TLS clients.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-200}
keys=${2:-}
command -v valgrind >/dev/null || { echo "missing valgrind (apt-get install valgrind)" >&2; exit 1; }
if [[ -z ${BIN:-} ]]; then
  (cd "$here" && cargo build --quiet --locked --profile heap --features system-allocator --bin portcullis)
  BIN=$here/target/heap/portcullis
fi
W=$(mktemp -d /tmp/idle-heap.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
bport=$(free_port)
ws=${WS:-}
if [[ -n $ws ]]; then
  # An upgraded-connection backend: answers 101 and echoes every byte after it.
  python3 - "$bport" 2>"$W/backend.log" <<'PY' &
import socket, sys, threading
def serve(c):
    head = b""
    while b"\r\n\r\n" not in head:
        d = c.recv(4096)
        if not d:
            return
        head += d
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    while d := c.recv(65536):
        c.sendall(d)
l = socket.create_server(("127.0.0.1", int(sys.argv[1])), backlog=1024)
while True:
    threading.Thread(target=serve, args=(l.accept()[0],), daemon=True).start()
PY
else
  "$BIN" demo-backend --name b --listen "127.0.0.1:$bport" 2>"$W/backend.log" &
fi
pids+=($!)
ulimit -n $((n * 4 + 1024))
tls=${TLS:-}
if [[ -n $tls ]]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=heap.test -keyout "$W/k.pem" \
    -out "$W/c.pem" 2>/dev/null
  keys="protocol: https, http2: false, tls: { certificates: [{ cert: $W/c.pem, key: $W/k.pem }] }${keys:+, $keys}"
fi

run() {  # run CONNECTIONS OUT.json
  local gport gw
  gport=$(free_port)
  cat >"$W/c.yaml" <<YAML
server: { threads: 1, pid_file: $W/p.pid, upgrade_sock: $W/u.sock }
listeners: [{ name: web, address: "127.0.0.1:$gport"${keys:+, $keys} }]
access_log: off
routes: [{ name: all, upstream: pool }]
upstreams: [{ name: pool, backends: [{ address: "127.0.0.1:$bport" }] }]
YAML
  valgrind --tool=dhat --dhat-out-file="$2" "$BIN" --no-watch -c "$W/c.yaml" 2>"$W/gateway.log" &
  gw=$!
  pids+=("$gw")
  python3 - "$gport" "$1" "$tls" "$ws" <<'PY'
import socket, ssl, sys, time
port, n, tls, ws = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context()
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
def connect():
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    return ctx.wrap_socket(s, server_hostname="heap.test") if tls else s
deadline = time.time() + 120
while True:  # the gateway under valgrind starts slowly
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("the gateway did not listen within 120 s")
        time.sleep(0.2)
req = b"GET / HTTP/1.1\r\nHost: heap\r\n\r\n"
if ws:
    req = (b"GET /ws HTTP/1.1\r\nHost: heap\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
socks, ok = [], 0
for i in range(n):
    s = connect()
    s.sendall(req)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    if ws:  # upgraded: echo WS bytes through it, then hold it
        ok += head.startswith(b"HTTP/1.1 101")
        s.sendall(b"x" * int(ws))
        while len(body) < int(ws):
            body += s.recv(65536)
        socks.append(s)
        continue
    length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0])
    while len(body) < length:
        body += s.recv(65536)
    ok += head.startswith(b"HTTP/1.1 200")
    socks.append(s)
print(f"{ok} of {n} connections answered {101 if ws else 200} and are held idle")
if ok != n:
    sys.exit(1)
time.sleep(3)
PY
  kill -INT "$gw"
  for _ in $(seq 600); do kill -0 "$gw" 2>/dev/null || break; sleep 0.1; done
  wait "$gw" 2>/dev/null || true
  [[ -s $2 ]] || { echo "dhat wrote nothing; gateway log:" >&2; tail -20 "$W/gateway.log" >&2; exit 1; }
}
run "$n" "$W/a.json"
run $((2 * n)) "$W/b.json"
python3 - "$W/a.json" "$W/b.json" "$n" <<'PY'
import json, re, sys
from collections import defaultdict
n = int(sys.argv[3])
skip = re.compile(r"\((library/|/rustc/|in /usr/libexec/valgrind)|^\[root\]|__rust|^UnknownInlinedFun \(library")
def sites(path):
    d = json.load(open(path)); ftbl = d["ftbl"]
    def where(fs):
        names = []
        for i in fs:
            f = re.sub(r"^0x[0-9A-Fa-f]+: ", "", ftbl[i])
            if not skip.search(f):
                f = re.sub(r"::h[0-9a-f]{16}", "", f)
                f = re.sub(r"\(/[^()]*/(\.cargo/registry/src/[^/]+/|work/main/)", "(", f)
                names.append(f)
            if len(names) == 3:
                break
        return " <- ".join(names) or "?"
    out = defaultdict(lambda: [0, 0])
    for p in d["pps"]:
        s = out[where(p["fs"])]
        s[0] += p["gb"]; s[1] += p["gbk"]
    return out, sum(p["gb"] for p in d["pps"])
a, ta = sites(sys.argv[1]); b, tb = sites(sys.argv[2])
rows = sorted(((b[k][0] - a.get(k, [0, 0])[0], b[k][1] - a.get(k, [0, 0])[1], k) for k in b), reverse=True)
print(f"heap at its peak: {ta / 1024:.0f} KiB with {n} idle connections, {tb / 1024:.0f} KiB with {2 * n}: "
      f"{(tb - ta) / n / 1024:.2f} KiB per idle connection")
print(f"{'bytes/conn':>10} {'blocks/conn':>11}  site (sites of >= 0.25 blocks per connection)")
for db, dk, k in rows:
    if dk / n >= 0.25:
        print(f"{db / n:10.0f} {dk / n:11.2f}  {k[:260]}")
PY
