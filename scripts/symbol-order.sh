#!/usr/bin/env bash
# Regenerates link/symbol-order.txt, the function order of release builds (build.rs;
# docs/performance.md, "Resting memory: huge pages off, code layout, memory released when
# idle"): runs BINARY (default target/release/portcullis) under `valgrind --tool=callgrind`
# through scripts/pgo-train.sh's loopback workload (plain HTTP with filters, HTTPS, HTTP/2,
# TCP, metrics, error replies), and lists every function of the binary that ran, the most
# instructions first. Rebuild afterwards (`make build`) and check with
# scripts/check-symbol-order.sh. Run it again when that check reports the file stale: symbol
# names carry hashes that change when a dependency or the compiler changes.
#   scripts/symbol-order.sh [BINARY] [TRAIN_SECONDS]
# Needs valgrind, wrk, nginx, curl, openssl. Only 127.0.0.1 is used.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${1:-$here/target/release/portcullis}")
W=$(mktemp -d /tmp/symbol-order.XXXXXX)
trap 'rm -rf "$W"' EXIT
cat >"$W/wrap" <<EOF2
#!/bin/sh
exec valgrind --tool=callgrind --demangle=no --dump-instr=no --callgrind-out-file=$W/cg "$bin" "\$@"
EOF2
chmod +x "$W/wrap"
"$here/scripts/pgo-train.sh" "$W/wrap" "${2:-4}" >&2
python3 - "$W/cg" "$bin" >"$here/link/symbol-order.txt" <<'PY'
import collections, os, re, sys
# Self instructions per function of one object, from a callgrind file with name compression.
path, binary = sys.argv[1], os.path.realpath(sys.argv[2])
names = {"ob": {}, "fn": {}}
cost = collections.Counter()
ob = fn = None
skip = False
def name(kind, s):
    m = re.match(r"\((\d+)\)(?: (.*))?$", s)
    if not m:
        return s
    if m.group(2) is not None:
        names[kind][m.group(1)] = m.group(2)
    return names[kind].get(m.group(1), "?")
for line in open(path, errors="replace"):
    line = line.rstrip("\n")
    if skip:  # the inclusive cost of a call, not the caller's own
        skip = False
    elif line.startswith("ob="):
        ob = name("ob", line[3:])
    elif line.startswith("fn="):
        fn = name("fn", line[3:])
    elif line.startswith("cob="):
        name("ob", line[4:])
    elif line.startswith("cfn="):
        name("fn", line[4:])
    elif line.startswith("calls="):
        skip = True
    elif fn and ob == binary and line[:1] in set("0123456789+-*"):
        parts = line.split()
        if len(parts) >= 2:
            cost[re.sub(r"'\d+$", "", fn)] += int(parts[1])  # "'2": a recursion level
for f, _ in cost.most_common():
    print(f)
PY
echo "link/symbol-order.txt: $(wc -l <"$here/link/symbol-order.txt") functions" >&2
