#!/usr/bin/env bash
# Checks that a release binary was linked in the order of link/symbol-order.txt (build.rs):
# at least MIN_FOUND % (default 90) of the listed functions exist in it under the same name,
# and they sit in the listed order. Fails with what to do otherwise.
#   scripts/check-symbol-order.sh [BINARY]   (default target/release/portcullis)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$here/target/release/portcullis}
nm "$bin" | python3 -c '
import sys
order_file, min_found = sys.argv[1], float(sys.argv[2])
order = [l.strip() for l in open(order_file) if l.strip()]
addr = {}
for line in sys.stdin:
    p = line.split()
    if len(p) == 3 and p[1] in "tTwW":
        addr.setdefault(p[2], int(p[0], 16))
found = [addr[s] for s in order if s in addr]
pct = 100 * len(found) / len(order)
# Functions of one C object file share its section and move together, so count inversions
# rather than demand a strictly sorted list.
inversions = sum(1 for a, b in zip(found, found[1:]) if b < a)
print(f"symbol order: {len(found)} of {len(order)} listed functions found ({pct:.1f}%), "
      f"{inversions} out of order")
if pct < min_found:
    sys.exit(f"link/symbol-order.txt is stale (names carry hashes that change with dependencies "
             f"and the compiler): run scripts/symbol-order.sh, rebuild, and commit the file")
if inversions > len(found) // 20:
    sys.exit("the binary was not linked in the listed order (is build.rs passing "
             "--symbol-ordering-file, and is the linker LLD?)")
' "$here/link/symbol-order.txt" "${MIN_FOUND:-90}"
