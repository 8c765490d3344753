#!/usr/bin/env bash
# What `make bench-tcp` compares against: HAProxy and nginx with its stream module (Debian
# packages haproxy, nginx, libnginx-mod-stream). Installs what is missing, with apt.
set -euo pipefail
need=()
command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || need+=(haproxy)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
[[ -f /usr/lib/nginx/modules/ngx_stream_module.so ]] || need+=(libnginx-mod-stream)
command -v taskset >/dev/null || need+=(util-linux)
((${#need[@]} == 0)) && exit 0
SUDO=; ((EUID == 0)) || SUDO=sudo
echo "installing ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
