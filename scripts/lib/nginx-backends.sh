# Sourced by the benchmark scripts: loopback nginx backends that answer "ok\n" to everything.
#   nginx_backends DIR PORT...
# writes DIR/nginx.conf (one worker, one server per port on 127.0.0.1, keep-alive without a
# request limit), starts nginx in the background, sets NGINX_PID and waits (at most 5 s) until
# every port accepts. NGINX_EXTRA: more server blocks for the http block. NGINX_CPU: pin nginx
# to that CPU with taskset. The caller stops it by NGINX_PID.
nginx_backends() {
  local dir=$1 p; shift
  mkdir -p "$dir/tmp"
  {
    printf 'daemon off; worker_processes 1; pid %s/nginx.pid; error_log %s/error.log warn;\n' "$dir" "$dir"
    printf 'events { worker_connections 4096; }\nhttp {\n  access_log off; default_type text/plain;\n'
    printf '  client_body_temp_path %s/tmp/b; proxy_temp_path %s/tmp/p; fastcgi_temp_path %s/tmp/f; uwsgi_temp_path %s/tmp/u; scgi_temp_path %s/tmp/s;\n' \
      "$dir" "$dir" "$dir" "$dir" "$dir"
    for p in "$@"; do
      printf '  server { listen 127.0.0.1:%s; keepalive_requests 10000000; location / { return 200 "ok\\n"; } }\n' "$p"
    done
    [[ -z ${NGINX_EXTRA:-} ]] || printf '%s\n' "$NGINX_EXTRA"
    printf '}\n'
  } >"$dir/nginx.conf"
  local pin=()
  [[ -z ${NGINX_CPU:-} ]] || pin=(taskset -c "$NGINX_CPU")
  "${pin[@]}" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" &
  NGINX_PID=$!
  for p in "$@"; do
    for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.1; done
  done
}
