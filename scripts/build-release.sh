#!/usr/bin/env bash
# The release build of the gateway, as `make build`, the Dockerfile and CI make it
# (target/release/portcullis): fat LTO and one codegen unit (Cargo.toml), functions linked in
# the order of link/symbol-order.txt (build.rs), and optimised with the profile committed in
# link/portcullis.profdata.xz (-Cprofile-use; docs/performance.md, "Profile-guided build by
# default"). scripts/pgo.sh makes that profile. It is unpacked under target/, named by its
# hash, so that a new profile changes the compiler flags and rebuilds what it optimises. A function changed since the profile was made
# no longer matches it and is optimised as without one; the rest keep their profile.
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
RUSTFLAGS="${flags# }" exec "${CARGO:-cargo}" build --release --locked --bin portcullis "$@"
