#!/usr/bin/env bash
# Run every fuzz target in fuzz/ for a fixed time (default 60 s each), starting from the seed
# corpus in fuzz/corpus/. Stable toolchain: cargo-fuzz without a sanitizer (`-s none`), so a
# crash is a panic, an abort or a stack overflow. A crash fails the run and leaves its input
# in fuzz/artifacts/<target>/ to turn into a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --version 0.13.2 >/dev/null
fi
cd fuzz
cargo fuzz build -s none -O
for target in path_normalize config_compile route_match proxy_header; do
  mkdir -p "corpus/$target"
  work="$(mktemp -d)"
  cp -r "corpus/$target/." "$work/"
  echo "fuzz: $target for ${seconds}s" >&2
  # -rss_limit_mb: a config input must not make the compiler balloon either.
  log="$work.log"
  status=0
  cargo fuzz run -s none -O "$target" "$work" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  grep -E "DONE|stat::number_of_executed_units|==[0-9]+==|panicked|SUMMARY|artifact" "$log" || true
  if [[ $status -ne 0 ]]; then tail -40 "$log"; fi
  rm -rf "$work" "$log"
  if [[ $status -ne 0 ]]; then
    echo "fuzz: $target found a crash (see fuzz/artifacts/$target/)" >&2
    exit "$status"
  fi
done
echo "fuzz: every target ran ${seconds}s without a crash"
