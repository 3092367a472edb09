# Shared by the scripts in this folder; source it from the repository root.

# build_release: installs what is missing, builds the release binary, sets $bin.
build_release() {
  bash scripts/setup.sh
  cargo build --release --locked -q
  bin=$PWD/target/release/trellis
}

# start_control_plane DIR [FLAGS...]: runs `$bin control-plane` on a free
# loopback port with its store in DIR/cp, waits until it listens, exports
# TRELLIS_SERVER and sets CP_PID. Its output goes to DIR/cp.out and DIR/cp.log.
start_control_plane() {
  local dir=$1
  shift
  "$bin" control-plane --data-dir "$dir/cp" --listen 127.0.0.1:0 "$@" >"$dir/cp.out" 2>"$dir/cp.log" &
  CP_PID=$!
  for _ in $(seq 100); do grep -q listening "$dir/cp.out" 2>/dev/null && break; sleep 0.1; done
  TRELLIS_SERVER=$(sed -n 's/.*listening on //p' "$dir/cp.out")
  if [ -z "$TRELLIS_SERVER" ]; then
    cat "$dir/cp.log" >&2
    echo "the control plane did not start" >&2
    return 1
  fi
  export TRELLIS_SERVER
}

# to_us "1.23ms" -> 1230: wrk's latency units to microseconds.
to_us() {
  awk -v v="$1" 'BEGIN{ n=v; sub(/[a-z]+$/,"",n); u=v; sub(/^[0-9.]+/,"",u)
    m = (u=="us")?1:(u=="ms")?1000:(u=="s")?1e6:1; printf "%.0f\n", n*m }'
}

# nginx_backend DIR PORT:BODY...: writes DIR/nginx.conf for a one-worker
# nginx on 127.0.0.1 answering BODY on each PORT (the benchmarks' targets).
nginx_backend() {
  local dir=$1 spec servers=""
  shift
  for spec in "$@"; do
    servers+="  server { listen 127.0.0.1:${spec%%:*} backlog=4096; location / { return 200 \"${spec#*:}\"; } }"$'\n'
  done
  mkdir -p "$dir/tmp"
  cat >"$dir/nginx.conf" <<EOF
user root; worker_processes 1; pid backend.pid; error_log backend.err warn;
events { worker_connections 8192; multi_accept on; }
http {
  access_log off; keepalive_requests 1000000; keepalive_timeout 60s; default_type text/plain;
  client_body_temp_path tmp/body; proxy_temp_path tmp/proxy; fastcgi_temp_path tmp/fcgi;
  uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;
$servers}
EOF
}
