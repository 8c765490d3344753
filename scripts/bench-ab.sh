#!/usr/bin/env bash
# Interleaved A/B of portcullis configs, measured like ../shared/bench/peers.sh: three nginx
# backends on 127.0.0.1:19001-19003 (one worker), the proxy pinned to CPU 1, wrk -t1 -c50
# pinned to CPU 0, proxy CPU = utime+stime of its process tree. Rounds alternate the variants
# so both see the same machine state.
#   scripts/bench-ab.sh ROUNDS NAME=ROUTE_YAML_FILE[@BINARY] [NAME=ROUTE_YAML_FILE[@BINARY] ...]
# (@BINARY: run that portcullis binary for this variant, e.g. a build of an older commit, to
# compare two versions in one run.)
# Each variant runs scripts/bench-target.sh with BENCH_ROUTE_YAML (route filters) and
# BENCH_EXTRA_YAML (extra upstreams) from the files <file> and <file>.extra (if present), and
# BENCH_LISTENER_YAML (listener keys) from <file>.listener.
# SCHEME=https: wrk and the check use https:// (the variants' .listener files then carry
# `protocol: https` and a certificate).
# NAME=nginx (no file): nginx itself as the proxy, one worker, round robin over the same
# backends with upstream keep-alive and an access log to a file: a reference in the same run.
# Columns: req/s, p50 and p99 (ms), proxy CPU-s per 10k requests, and that CPU split into
# user and kernel microseconds per request.
# PERF_STAT=1 adds four columns: syscalls, context switches and page faults per request of the
# proxy's process tree during the measured run (perf stat: raw_syscalls:sys_enter,
# context-switches, page-faults), and TCP segments sent per request on the whole machine
# (nstat TcpOutSegs: client, proxy and backends; on loopback each segment is sent once).
# PERF_RECORD=DIR also records CPU 1 (where the proxy runs) during each measured run, with call
# graphs, into DIR/NAME-ROUND.data (perf record -C 1 -g), for perf report.
# Only 127.0.0.1 is used; every run is bounded by wrk's duration.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/lib/nginx-backends.sh"
rounds=$1; shift
DURATION=${DURATION:-10}
url=${SCHEME:-http}://127.0.0.1:18080/
for t in wrk nginx taskset; do command -v $t >/dev/null || { echo "missing $t (../shared/bench/setup.sh)" >&2; exit 1; }; done
W=$(mktemp -d /tmp/bench-ab.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done; sleep 0.5; for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
# An OTLP/HTTP sink beside the backends, for variants that export spans (benches/ab/otlp-*.yaml.extra).
NGINX_CPU=0 NGINX_EXTRA='  server { listen 127.0.0.1:19004; keepalive_requests 10000000; client_max_body_size 64m; location / { return 200 ""; } }' \
  nginx_backends "$W" 19001 19002 19003
pids+=("$NGINX_PID")
ticks() { # "user kernel" clock ticks of PID and its children
  local u=0 k=0 p a b
  for p in "$1" $(pgrep -P "$1" || true); do
    read -r a b < <(awk '{print $14, $15}' "/proc/$p/stat" 2>/dev/null || echo 0 0)
    u=$((u + a)); k=$((k + b))
  done
  echo "$u $k"
}
start_nginx_proxy() { # DIR: nginx as the proxy on 18080, pinned to CPU 1; sets gw
  mkdir -p "$1/tmp"
  cat >"$1/px.conf" <<NGX
daemon off; worker_processes 1; pid $1/px.pid; error_log $1/px-error.log warn;
events { worker_connections 4096; }
http {
  access_log $1/access.log; client_body_temp_path $1/tmp/b; proxy_temp_path $1/tmp/p;
  fastcgi_temp_path $1/tmp/f; uwsgi_temp_path $1/tmp/u; scgi_temp_path $1/tmp/s;
  upstream pool { server 127.0.0.1:19001; server 127.0.0.1:19002; server 127.0.0.1:19003; keepalive 64; }
  server { listen 127.0.0.1:18080; keepalive_requests 10000000;
    location / { proxy_pass http://pool; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
NGX
  taskset -c 1 nginx -p "$1" -c "$1/px.conf" -e "$1/px-error.log" >"$1/out.log" 2>&1 & gw=$!; pids+=($gw)
}
perf_start() { # PID: perf stat of PID's process tree for DURATION s, into $d/perf.csv
  local p; p=$(echo "$1" $(pgrep -P "$1" || true) | tr ' ' ',')
  perf stat -x, -e raw_syscalls:sys_enter,context-switches,page-faults -p "$p" -o "$d/perf.csv" -- sleep "$DURATION" 2>"$d/perf.err" & pstat=$!
}
segs() { nstat -az TcpOutSegs | awk '$1=="TcpOutSegs" {print $2}'; }
perf_cols() { # "syscalls context-switches page-faults" counted (after perf_start's run ended)
  [[ -n ${PERF_STAT:-} ]] || return 0
  awk -F, '$3=="raw_syscalls:sys_enter" {s=$1} $3=="context-switches" {c=$1} $3=="page-faults" {f=$1} END {print s+0, c+0, f+0}' "$d/perf.csv"
  [[ -s $d/perf.csv ]] || cat "$d/perf.err" >&2
}
printf '%-12s %8s %8s %8s %9s %8s %8s' name req/s p50ms p99ms cpu/10k user-us sys-us
[[ -n ${PERF_STAT:-} ]] && printf ' %8s %8s %8s %8s' sysc/req cs/req pf/req segs/req
echo
for r in $(seq "$rounds"); do
  for v in "$@"; do
    name=${v%%=*}; file=${v#*=}; bin=""
    if [[ $file == *@* ]]; then bin=${file#*@}; file=${file%%@*}; fi
    d=$W/$name-$r; mkdir -p "$d"
    route=""; extra=""; listener=""
    if [[ $file == nginx ]]; then start_nginx_proxy "$d"; else
    [[ -s $file ]] && route=$(cat "$file")
    [[ -s $file.extra ]] && extra=$file.extra
    [[ -s $file.listener ]] && listener=$(cat "$file.listener")
    PEERBENCH_LISTEN=127.0.0.1:18080 PEERBENCH_UPSTREAMS="127.0.0.1:19001 127.0.0.1:19002 127.0.0.1:19003" \
      PEERBENCH_DIR=$d BENCH_ROUTE_YAML=$route BENCH_EXTRA_YAML=$extra BENCH_LISTENER_YAML=$listener PORTCULLIS_BIN=${bin:-$here/target/release/portcullis} \
      taskset -c 1 "$here/scripts/bench-target.sh" >"$d/out.log" 2>&1 & gw=$!; pids+=($gw)
    fi
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/18080) 2>/dev/null && break; sleep 0.1; done
    [[ $(curl -sk -o /dev/null -w '%{http_code}' "$url") == 200 ]] || { echo "$name: not serving"; cat "$d/out.log"; exit 1; }
    timeout 30 taskset -c 0 wrk -t1 -c50 -d2s "$url" >/dev/null
    read -r u0 k0 < <(ticks $gw)
    [[ -n ${PERF_STAT:-} ]] && { perf_start $gw; seg0=$(segs); }
    if [[ -n ${PERF_RECORD:-} ]]; then
      mkdir -p "$PERF_RECORD"
      perf record -q -C 1 -g -o "$PERF_RECORD/$name-$r.data" -- sleep "$DURATION" >/dev/null 2>&1 & precord=$!
    fi
    timeout $((DURATION + 30)) taskset -c 0 wrk -t1 -c50 -d"${DURATION}s" --latency "$url" >"$d/wrk.out"
    read -r u1 k1 < <(ticks $gw)
    [[ -n ${PERF_STAT:-} ]] && { wait "$pstat" || true; }
    [[ -n ${PERF_RECORD:-} ]] && { wait "$precord" || true; }
    read -r sc cs pf < <(perf_cols; echo)
    [[ -n ${PERF_STAT:-} ]] && seg=$(($(segs) - seg0))
    kill -INT $gw; wait $gw 2>/dev/null || true
    awk -v name="$name" -v u="$((u1 - u0))" -v k="$((k1 - k0))" -v hz="$(getconf CLK_TCK)" \
      -v sc="${sc:-}" -v cs="${cs:-}" -v pf="${pf:-}" -v seg="${seg:-}" \
      'function ms(x){return x~/us$/?x/1000:x~/ms$/?x+0:x*1000}
      /requests in/ {n=$1} /^Requests\/sec/ {r=$2} $1=="50%" {p50=ms($2)} $1=="99%" {p99=ms($2)}
      END {printf "%-12s %8.0f %8.2f %8.2f %9.3f %8.2f %8.2f", name, r, p50, p99,
        (u + k) / hz * 10000 / n, u / hz * 1e6 / n, k / hz * 1e6 / n
        if (sc != "") printf " %8.2f %8.3f %8.3f %8.2f", sc / n, cs / n, pf / n, seg / n
        printf "\n"}' "$d/wrk.out" | tee -a "$W/rows"
  done
done
echo "# medians over $rounds rounds"
sort -k1,1 -s "$W/rows" | awk '{v[$1]=v[$1]" "$0} END {for (k in v) print k}' >/dev/null
python3 - "$W/rows" <<'EOF'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = line.split()
    rows[f[0]].append([float(x) for x in f[1:]])
for name, vals in rows.items():
    med = [statistics.median(c) for c in zip(*vals)]
    extra = "".join(f" {m:8.3f}" for m in med[6:])
    print(f"{name:12} {med[0]:8.0f} {med[1]:8.2f} {med[2]:8.2f} {med[3]:9.3f} {med[4]:8.2f} {med[5]:8.2f}{extra}")
EOF
