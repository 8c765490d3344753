#!/usr/bin/env bash
# A `peers.sh --target` command: portcullis configured like the peer proxies (one worker
# thread, round robin over $PEERBENCH_UPSTREAMS, upstream keep-alive), with metrics and a JSON
# access log (to a file) on.
#   env: PEERBENCH_LISTEN, PEERBENCH_UPSTREAMS, PEERBENCH_DIR (set by peers.sh)
#        PORTCULLIS_BIN     binary (default: target/release/portcullis of this checkout)
#        BENCH_ROUTE_YAML   extra YAML appended to the route (e.g. its filters), optional
#        BENCH_LISTENER_YAML extra keys inside the listener's flow map, e.g.
#                           ', buffers: { read: 4096 }', optional
#        BENCH_EXTRA_YAML   a file of extra top-level YAML, optional
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${PORTCULLIS_BIN:-$here/target/release/portcullis}
dir=${PEERBENCH_DIR:?run me from peers.sh --target}
conf=$dir/portcullis.yaml
{
  cat <<EOF
server:
  threads: 1
  pid_file: $dir/portcullis.pid
  upgrade_sock: $dir/portcullis-upgrade.sock
  grace_period_seconds: 1
  graceful_shutdown_timeout_seconds: 1
listeners:
  - { name: bench, address: "$PEERBENCH_LISTEN"${BENCH_LISTENER_YAML:-} }
metrics: { address: "127.0.0.1:19100" }
access_log: { file: "$dir/access.log" }
routes:
  - name: all
    upstream: pool
${BENCH_ROUTE_YAML:-}
upstreams:
  - name: pool
    strategy: round_robin
    backends:
EOF
  for u in $PEERBENCH_UPSTREAMS; do echo "      - { address: \"$u\" }"; done
  if [[ -n ${BENCH_EXTRA_YAML:-} ]]; then cat "$BENCH_EXTRA_YAML"; fi
} >"$conf"
RUST_LOG=${RUST_LOG:-warn} exec "$bin" -c "$conf"
