#!/usr/bin/env bash
# Make sure the build's system dependencies are present: cmake (zlib-ng in pingora's flate2),
# pkg-config and OpenSSL headers (pingora's openssl feature), a C compiler (mimalloc).
# The tests' real servers: redis-server and redis-cli (the shared rate limit, alone and as a
# cluster), dnsmasq (DNS discovery), chromium (the status page's browser test) and prometheus
# with promtool (the Grafana dashboard's queries and the alert rules, tested against it).
# Installs them with apt-get when running as root; otherwise prints the exact command.
set -euo pipefail

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v xz >/dev/null 2>&1 || missing+=(xz-utils)   # unpacks link/portcullis.profdata.xz (make build)
if ! pkg-config --exists openssl 2>/dev/null; then missing+=(libssl-dev); fi
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v dnsmasq >/dev/null 2>&1 || missing+=(dnsmasq-base)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)

if ((${#missing[@]} == 0)); then
  exit 0
fi

cmd="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "deps: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "deps: missing ${missing[*]}. Install them with:" >&2
  echo "  sudo sh -c '$cmd'" >&2
  exit 1
fi
