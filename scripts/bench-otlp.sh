#!/usr/bin/env bash
# The cost of OTLP span export: no export, export of 1% of the traces, and of every trace,
# interleaved by scripts/bench-ab.sh (nginx backends, proxy on CPU 1, wrk -t1 -c50 on CPU 0;
# spans go to an nginx sink on 127.0.0.1:19004 that answers 200). Requests carry no
# traceparent, so the gateway starts a trace for each and samples by its id.
#   scripts/bench-otlp.sh [ROUNDS]   (default 3; DURATION=10 seconds per run)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
ab=$here/benches/ab
"$here/scripts/bench-ab.sh" "${1:-3}" off="$ab/no-filters.yaml" otlp-1pct="$ab/otlp-1pct.yaml" otlp-all="$ab/otlp-all.yaml"
