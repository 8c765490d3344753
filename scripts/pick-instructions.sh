#!/usr/bin/env bash
# Instructions per pick, noise-free: benches/pick_instructions.rs under
# `valgrind --tool=callgrind` with N1 then N2 picks (separate runs); (Ir(N2) - Ir(N1)) / (N2 - N1)
# cancels the set-up. Prints one row per strategy, without and with slow start active.
#   scripts/pick-instructions.sh [N_MEMBERS] [STRATEGY...]   (default: 100, every default)
# Needs valgrind. Runs nothing on the network.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-100}; shift || true
strategies=("$@")
[[ ${#strategies[@]} -gt 0 ]] || strategies=(round_robin weighted_round_robin random least_conn fastest_response adaptive consistent_hash ip_hash)
N1=${N1:-20000}; N2=${N2:-220000}
cd "$here"
# A target directory of its own: with these overrides cargo would otherwise rebuild
# target/release/portcullis without LTO (a benchmark builds the package's binaries).
fast=${CARGO_TARGET_DIR:-$here/target/bench-fast}
CARGO_TARGET_DIR=$fast CARGO_PROFILE_BENCH_LTO=false CARGO_PROFILE_BENCH_CODEGEN_UNITS=16 \
  cargo bench --locked --bench pick_instructions --no-run 2>&1 | tail -1 >&2
bin=$(ls -t "$fast"/release/deps/pick_instructions-* | grep -v '\.d$' | head -1)
W=$(mktemp -d /tmp/pick-ir.XXXXXX)
trap 'rm -rf "$W"' EXIT
ir() { # strategy slow iterations
  valgrind --tool=callgrind --callgrind-out-file="$W/out" "$bin" "$1" "$n" "$2" "$3" >/dev/null 2>"$W/log"
  grep -E '^(summary|totals):' "$W/out" | head -1 | awk '{print $2}'
}
printf '%-22s %14s %14s %8s\n' "strategy ($n members)" "Ir/pick" "+slow_start" "change"
for s in "${strategies[@]}"; do
  row=()
  for slow in 0 1; do
    a=$(ir "$s" "$slow" "$N1"); b=$(ir "$s" "$slow" "$N2")
    row+=("$(python3 -c "print(f'{($b - $a) / ($N2 - $N1):.1f}')")")
  done
  pct=$(python3 -c "print(f'{(${row[1]} / ${row[0]} - 1) * 100:+.1f}%')")
  printf '%-22s %14s %14s %8s\n' "$s" "${row[0]}" "${row[1]}" "$pct"
done
