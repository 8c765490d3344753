#!/usr/bin/env bash
# Resting memory of a gateway: start BINARY (default target/release/portcullis) on a small
# config (one listener, one route, metrics on, access log off, 1 thread), wait 2 s, and print
# its VmRSS, anonymous RSS and the part of it in transparent huge pages; ROUNDS times
# (default 3). Only 127.0.0.1 is used; each process is stopped by its PID.
#   scripts/resting-rss.sh [BINARY] [ROUNDS]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$here/target/release/portcullis}
rounds=${2:-3}
W=$(mktemp -d /tmp/resting-rss.XXXXXX)
trap 'rm -rf "$W"' EXIT
cat >"$W/c.yaml" <<YAML
server: { threads: 1, pid_file: $W/p.pid, upgrade_sock: $W/u.sock }
listeners: [{ name: web, address: "127.0.0.1:18281" }]
metrics: { address: "127.0.0.1:18282" }
access_log: off
routes: [{ name: all, upstream: pool }]
upstreams: [{ name: pool, backends: [{ address: "127.0.0.1:9" }] }]
YAML
kb() { awk -v k="$1:" '$1 == k {print $2}' "$2"; }
for r in $(seq "$rounds"); do
  "$bin" --no-watch -c "$W/c.yaml" >/dev/null 2>&1 &
  p=$!
  sleep 2
  kill -0 "$p" 2>/dev/null || { echo "$bin exited (ports 18281/18282 busy?)" >&2; exit 1; }
  echo "$(basename "$bin") round $r: VmRSS $(kb VmRSS /proc/$p/status) kB, RssAnon $(kb RssAnon /proc/$p/status) kB, AnonHugePages $(kb AnonHugePages /proc/$p/smaps_rollup) kB"
  kill -INT "$p"; wait "$p" 2>/dev/null || true
done
