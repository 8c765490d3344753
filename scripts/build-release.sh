#!/usr/bin/env bash
# The release build of the gateway, as `make build`, the Dockerfile and CI make it
# (target/release/portcullis): fat LTO and one codegen unit (Cargo.toml), functions linked in
# the order of link/symbol-order.txt (build.rs), and optimised with the profile committed in
# link/portcullis.profdata.xz (-Cprofile-use; docs/performance.md, "Profile-guided build by
# default"). scripts/pgo.sh makes that profile. The profile is unpacked under target/, named by
# its hash, so that a new profile changes the compiler flags and rebuilds what it optimises.
# A function edited since the profile was made no longer matches it: rustc warns "function
# control flow change detected (hash mismatch)" and builds that function as without a profile,
# while the rest keep theirs. This script counts those warnings at the end.
#   scripts/build-release.sh [CARGO ARGS...]
#   PORTCULLIS_PGO=off scripts/build-release.sh   the same build without the profile
# A plain `cargo build --release` also builds without the profile (and rebuilds every crate,
# as the compiler flags differ).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
packed=$here/link/portcullis.profdata.xz
flags=${RUSTFLAGS:-}
if [[ ${PORTCULLIS_PGO:-on} != off ]]; then
  [[ -s $packed ]] || { echo "build-release.sh: no $packed (scripts/pgo.sh makes it; PORTCULLIS_PGO=off builds without)" >&2; exit 1; }
  sum=$(sha256sum "$packed" | cut -c1-16)
  profile=$here/target/pgo-profile/$sum.profdata
  if [[ ! -s $profile ]]; then
    mkdir -p "$here/target/pgo-profile"
    xz -dc "$packed" >"$profile.tmp" && mv "$profile.tmp" "$profile"
  fi
  flags="$flags -Cprofile-use=$profile"
fi
log=$(mktemp /tmp/build-release.XXXXXX)
trap 'rm -f "$log"' EXIT
RUSTFLAGS="${flags# }" "${CARGO:-cargo}" build --release --locked --bin portcullis "$@" 2>&1 | tee "$log"
stale=$(grep -c "function control flow change detected" "$log" || true)
if [[ $stale -gt 0 ]]; then
  echo "build-release.sh: $stale functions changed since link/portcullis.profdata.xz was made and" \
    "were built without their profile; \`make pgo-profile\` makes a new one" >&2
fi
