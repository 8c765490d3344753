#!/usr/bin/env bash
# Heap allocations per proxied request, by allocation site, noise-free: portcullis built with
# the system allocator (cargo profile `heap`, feature `system-allocator`) under valgrind's
# dhat, with one keep-alive client sending N1 and then N2 requests (separate runs) to a
# loopback nginx backend, the JSON access log on (the set-up of
# scripts/instructions-per-request.sh). Per site, (blocks(N2) - blocks(N1)) / (N2 - N1):
# start-up cancels out. Sites are named by their first frames outside the standard library.
#   scripts/allocations-per-request.sh [DEPTH]      DEPTH: frames per site (default 2)
# BIN=path skips the build (system allocator, line tables). TOP=N rows (default 40).
# Only 127.0.0.1 is used; every process is stopped by its PID, every run is bounded.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/lib/nginx-backends.sh"
depth=${1:-2}
N1=${N1:-500}; N2=${N2:-2500}
command -v valgrind >/dev/null || { echo "missing valgrind (apt-get install valgrind)" >&2; exit 1; }
if [[ -z ${BIN:-} ]]; then
  (cd "$here" && cargo build --quiet --locked --profile heap --features system-allocator --bin portcullis)
  BIN=$here/target/heap/portcullis
fi
W=$(mktemp -d /tmp/apr.XXXXXX)
ngx=""
cleanup() { [[ -n $ngx ]] && kill "$ngx" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
# The gateway config and the client of instructions-per-request.sh, so both count one request.
ipr=$here/scripts/instructions-per-request.sh
sed -n '/^cat >"\$W\/gw.yaml" <<EOF2/,/^EOF2/p' "$ipr" | sed '1d;$d' | sed "s|\$W|$W|g" >"$W/gw.yaml"
sed -n "/^cat >\"\$W\/client.py\" <<'EOF2'/,/^EOF2/p" "$ipr" | sed '1d;$d' >"$W/client.py"
[[ -s $W/gw.yaml && -s $W/client.py ]] || { echo "could not read the set-up from $ipr" >&2; exit 1; }
nginx_backends "$W" 19021; ngx=$NGINX_PID
for n in "$N1" "$N2"; do
  valgrind --tool=dhat --dhat-out-file="$W/dhat.$n" "$BIN" -c "$W/gw.yaml" >/dev/null 2>"$W/vg.$n" & vp=$!
  timeout 600 python3 "$W/client.py" "$n"
  kill -INT $vp; wait $vp 2>/dev/null || true
  [[ -s $W/dhat.$n ]] || { echo "dhat wrote nothing:" >&2; tail -20 "$W/vg.$n" >&2; exit 1; }
done
python3 - "$W/dhat.$N1" "$W/dhat.$N2" $((N2 - N1)) "$depth" "${TOP:-40}" <<'PY'
import json, re, sys
from collections import defaultdict
SKIP = re.compile(r"library/(alloc|core|std)/|vgpreload|/rust/deps/|^in ")
PLUMBING = re.compile(r"^(aligned_malloc|alloc|realloc|__rustc::.*|__rust_.*)$")
def frame(f):
    m = re.match(r"0x[0-9A-F]+: (.*) \((.*?)\)$", f)
    if not m or SKIP.search(m.group(2)) or PLUMBING.match(m.group(1)):
        return None
    fn, path = m.groups()
    loc = re.sub(r".*/(src/)", r"\1", path)
    fn = "" if fn == "UnknownInlinedFun" else " " + fn[:70]
    return f"{loc}{fn}"
def load(path, depth):
    d = json.load(open(path)); ftbl = d["ftbl"]
    out = defaultdict(lambda: [0, 0])
    for pp in d["pps"]:
        keep = []
        for i in pp["fs"]:
            f = frame(ftbl[i])
            if f and (not keep or keep[-1] != f):
                keep.append(f)
            if len(keep) == depth:
                break
        k = " <- ".join(keep)
        out[k][0] += pp["tb"]; out[k][1] += pp["tbk"]
    return out
a, b = load(sys.argv[1], int(sys.argv[4])), load(sys.argv[2], int(sys.argv[4]))
n, top = int(sys.argv[3]), int(sys.argv[5])
rows = sorted((((v[1] - a.get(k, [0, 0])[1]) / n, (v[0] - a.get(k, [0, 0])[0]) / n, k) for k, v in b.items()), reverse=True)
rows = [r for r in rows if r[0] >= 0.05]
print(f"{sum(r[0] for r in rows):.1f} allocations and {sum(r[1] for r in rows):,.0f} bytes per request")
print(f"  {'allocs':>6} {'bytes':>7}  site (first {sys.argv[4]} frames outside std)")
for blocks, size, k in rows[:top]:
    print(f"  {blocks:6.2f} {size:7.0f}  {k[:200]}")
PY
