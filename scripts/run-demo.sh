#!/usr/bin/env bash
# `make run`: three demo backends on 127.0.0.1:9001-9003 and the gateway on 127.0.0.1:8080
# (config: conf/portcullis.yaml, metrics on 127.0.0.1:9100, status page and admin API on
# 127.0.0.1:9901). Ctrl-C stops everything started here.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/demo/portcullis}
CONF=${PORTCULLIS_CONF:-conf/portcullis.yaml}
[[ -x $BIN ]] || { echo "run-demo: $BIN is not built; use 'make run'" >&2; exit 1; }

busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in 8080 9001 9002 9003 9100 9901; do
  if busy "$port"; then
    echo "run-demo: port $port on 127.0.0.1 is in use; stop whatever holds it and retry" >&2
    exit 1
  fi
done

pids=()
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "stopping (pids ${pids[*]:-none})"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

i=0
for name in alpha beta gamma; do
  i=$((i + 1))
  "$BIN" demo-backend --name "$name" --listen "127.0.0.1:900$i" &
  pids+=($!)
done

"$BIN" -c "$CONF" &
pids+=($!)

for _ in $(seq 100); do busy 8080 && break; sleep 0.1; done
busy 8080 || { echo "run-demo: the gateway did not start" >&2; exit 1; }

cat <<'MSG'

portcullis is running on http://127.0.0.1:8080 (metrics: http://127.0.0.1:9100/metrics)

  status page: http://127.0.0.1:9901/  (live backends, reloads, transitions; the demo's admin
  token is "demo-admin-token-change-me", paste it on the page to get the drain/enable buttons)

  # round robin over alpha, beta, gamma
  for i in 1 2 3 4 5 6; do curl -s http://127.0.0.1:8080/; done

  # smooth weighted round robin, weights 5:1:1 (never 5 alphas in a row)
  for i in $(seq 14); do curl -s http://127.0.0.1:8080/weighted; done | tr '\n' ' '; echo

  # consistent hashing on the x-user header: the same user always lands on the same backend
  for u in ann bob cid ann bob cid; do curl -s -H "x-user: $u" http://127.0.0.1:8080/sticky; done

  # response headers: x-backend, x-request-id
  curl -si http://127.0.0.1:8080/ | head -8

  # the admin API behind the status page: drain alpha, then enable it again
  curl -s -X POST -H 'authorization: Bearer demo-admin-token-change-me' http://127.0.0.1:9901/upstreams/demo/backends/127.0.0.1:9001/drain
  curl -s -X POST -H 'authorization: Bearer demo-admin-token-change-me' http://127.0.0.1:9901/upstreams/demo/backends/127.0.0.1:9001/enable

  # metrics
  curl -s http://127.0.0.1:9100/metrics | grep '^portcullis_requests_total'

Access-log lines (JSON) appear below. Press Ctrl-C to stop everything.

MSG
wait "${pids[-1]}"
