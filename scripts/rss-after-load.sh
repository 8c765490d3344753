#!/usr/bin/env bash
# Where a proxy's memory is after a load run, as peers.sh measures "RSS before the idle run":
# three loopback nginx backends, the proxy (portcullis through scripts/bench-target.sh, or
# minimal Pingora for the word "minimal"), `wrk -t1 -c50` for DURATION s (default 5), then
# REST s (default 1) of rest. Prints VmRSS, RssAnon, RssFile, AnonHugePages and, with TOP=N, the N largest
# mappings by resident size (/proc/PID/smaps). Loopback only; each process is stopped by PID.
#   [DURATION=5] [REST=1] [TOP=0] scripts/rss-after-load.sh BIN|minimal [ENV=VALUE...] ...
#   e.g. scripts/rss-after-load.sh minimal target/release/portcullis
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/lib/nginx-backends.sh"
DURATION=${DURATION:-5} TOP=${TOP:-0} REST=${REST:-1}
minimal=$here/../shared/bench/minimal-pingora/target/release/minimal-pingora
for t in wrk nginx; do command -v $t >/dev/null || { echo "missing $t (../shared/bench/setup.sh)" >&2; exit 1; }; done
W=$(mktemp -d /tmp/rss-after-load.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done; sleep 0.3; for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
nginx_backends "$W" 19001 19002 19003
pids+=("$NGINX_PID")
ups="127.0.0.1:19001 127.0.0.1:19002 127.0.0.1:19003"
kb() { awk -v k="$1:" '$1 == k {s += $2} END {print s + 0}' "$2"; }
n=0
for spec in "$@"; do
  n=$((n + 1)); d=$W/$n; mkdir -p "$d"
  # A spec is a binary followed by optional ENV=VALUE words: "target/release/portcullis MIMALLOC_ALLOW_THP=0".
  read -r bin envs <<<"$spec"
  if [[ $bin == minimal ]]; then
    # shellcheck disable=SC2086
    env $envs "$minimal" 127.0.0.1:18080 $ups >"$d/out.log" 2>&1 & gw=$!
  else
    # shellcheck disable=SC2086
    env $envs PEERBENCH_LISTEN=127.0.0.1:18080 PEERBENCH_UPSTREAMS="$ups" PEERBENCH_DIR=$d \
      PORTCULLIS_BIN="$bin" "$here/scripts/bench-target.sh" >"$d/out.log" 2>&1 & gw=$!
  fi
  pids+=("$gw")
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/18080) 2>/dev/null && break; sleep 0.1; done
  [[ $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18080/) == 200 ]] || { echo "$spec: not serving"; cat "$d/out.log"; exit 1; }
  timeout $((DURATION + 30)) wrk -t1 -c50 -d"${DURATION}s" http://127.0.0.1:18080/ >"$d/wrk.out"
  sleep "$REST"
  s=/proc/$gw/status
  printf '%-40s VmRSS %6d kB  RssAnon %6d  RssFile %6d  AnonHugePages %6d  threads %d  (%s req/s)\n' \
    "$spec" "$(kb VmRSS $s)" "$(kb RssAnon $s)" "$(kb RssFile $s)" "$(kb AnonHugePages /proc/$gw/smaps_rollup)" \
    "$(kb Threads $s)" "$(awk '/^Requests\/sec/ {printf "%.0f", $2}' "$d/wrk.out")"
  if ((TOP > 0)); then
    awk '/^[0-9a-f]+-[0-9a-f]+ / {m = $6 == "" ? "[anon]" : $6} $1 == "Rss:" {rss[m] += $2}
      END {for (m in rss) if (rss[m]) printf "    %8d kB  %s\n", rss[m], m}' "/proc/$gw/smaps" | sort -rn | head -"$TOP"
  fi
  kill -INT "$gw"; wait "$gw" 2>/dev/null || true
done
