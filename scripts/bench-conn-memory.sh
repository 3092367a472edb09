#!/usr/bin/env bash
# Memory per idle keep-alive client connection, and the target connections
# held for them, for nginx, HAProxy and Trellis in the same run (issue 27:
# Trellis at most 2 KB per connection and 200 target connections). Each proxy
# alone on cpu0 (nginx one worker, HAProxy nbthread 1, Trellis one worker
# thread, eBPF redirect of the VIP), the nginx backend of
# ../shared/bench/http-proxy.sh (blue/green, 90/10) on cpu1. In turn, each gets
# N client connections (default 5,000), each with one request answered, then
# left idle for SETTLE seconds (default 8: Trellis gives an idle connection's
# buffers and target connections back after 1 s, and its allocator returns
# freed pages every 5 s); then, every connection checked still open, its RSS (all its
# processes) against before the connections, per connection, and its
# established connections to the backend.
# Usage: bash scripts/bench-conn-memory.sh [-n 5000] [--settle 8] [--no-install]
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${BENCH_DIR:-$PWD/../shared/bench}
source "$BENCH_DIR/lib.sh"
source scripts/lib.sh
N=5000 SETTLE=8 INSTALL=1
while (($#)); do
  case $1 in
    -n) N=$2; shift 2;;
    --settle) SETTLE=$2; shift 2;;
    --no-install) INSTALL=0; shift;;
    *) die "unknown option: $1";;
  esac
done
((INSTALL)) || NO_INSTALL=1
ensure_pkgs nginx:nginx haproxy:haproxy curl:curl jq:jq taskset:util-linux
PROXY_CPU=${PROXY_CPU:-0} LOAD_CPU=${LOAD_CPU:-1}
BLUE_PORT=${BLUE_PORT:-18081} GREEN_PORT=${GREEN_PORT:-18082}
NGINX_PORT=${NGINX_PORT:-18090} HAPROXY_PORT=${HAPROXY_PORT:-18091}
require_free_tcp "$BLUE_PORT" "$GREEN_PORT" "$NGINX_PORT" "$HAPROXY_PORT"
ulimit -n "$(ulimit -Hn)"
bench_setup connmem
holder=
trap '[ -z "$holder" ] || kill "$holder" 2>/dev/null || true; bench_cleanup' EXIT

split_backends
mkdir -p "$WORK/nginx/tmp"
cat >"$WORK/nginx/nginx.conf" <<CONF
user root; worker_processes 1; worker_rlimit_nofile 16384; pid nginx.pid; error_log nginx.err warn;
events { worker_connections 16384; multi_accept on; }
http {
  access_log off; keepalive_requests 1000000; keepalive_timeout 300s; default_type text/plain;
  client_body_temp_path tmp/body; proxy_temp_path tmp/proxy; fastcgi_temp_path tmp/fcgi;
  uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;
  upstream split {
    server 127.0.0.1:$BLUE_PORT weight=90; server 127.0.0.1:$GREEN_PORT weight=10;
    keepalive 128; keepalive_requests 1000000; keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT backlog=4096;
    location / { proxy_pass http://split; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
start_bg nginx "$WORK/nginx.log" $(pin "$PROXY_CPU") nginx -p "$WORK/nginx/" -c nginx.conf -e nginx.err -g 'daemon off;'
wait_tcp 127.0.0.1 "$NGINX_PORT"
haproxy_split "" 300s
start_control_plane "$WORK"
# Idle connections kept 300 s, as the peers keep theirs (Trellis's default
# closes an idle keep-alive connection after 10 s).
{
  split_yaml "127.0.0.1:$BLUE_PORT" "127.0.0.1:$GREEN_PORT"
  split_service 90/10 | sed 's/^      protocol: HTTP$/&\n      timeouts: {headerReadSeconds: 300}/'
} >"$WORK/bench.yaml"
"$bin" apply -f "$WORK/bench.yaml" >/dev/null
VIP=$("$bin" get service checkout -o json | jq -r .status.vip)
bench_node "http://$VIP/"

# KB of RSS of every process of group $1.
rss_kb() { ps -o rss= -g "$1" | awk '{s += $1} END {print s + 0}'; }
# Established connections of group $1 to the backend ports.
to_backend() {
  local pids
  pids=$(ps -o pid= -g "$1" | tr -s ' \n' '|' | sed 's/^|//; s/|$//')
  ss -Htnp state established "( dport = :$BLUE_PORT or dport = :$GREEN_PORT )" |
    grep -cE "pid=($pids)," || true
}
# Established client connections on local port $1.
clients() { ss -Htn state established "( sport = :$1 )" | wc -l; }
declare -A BEFORE AFTER PER TARGETS
measure() {
  local name=$1 group=$2 host=$3 port=$4 local_port=$5 i
  for i in $(seq 20); do curl -s -o /dev/null "http://$host:$port/"; done
  sleep 1
  BEFORE[$name]=$(rss_kb "$group")
  python3 - "$host" "$port" "$N" >"$WORK/held-$name" <<'PY' &
import re, socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held = []
for _ in range(n):
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: checkout.example\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    want = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < want:
        body += s.recv(4096)
    held.append(s)
print("held", len(held), flush=True)
# Until killed (its stdin is /dev/null: reading it would end at once).
import signal
signal.pause()
PY
  holder=$!
  for i in $(seq 600); do grep -q held "$WORK/held-$name" 2>/dev/null && break; sleep 0.1; done
  grep -q "held $N" "$WORK/held-$name" || die "$name: the client did not hold $N connections"
  sleep "$SETTLE"
  AFTER[$name]=$(rss_kb "$group")
  TARGETS[$name]=$(to_backend "$group")
  # Every connection still open, or the figure means nothing.
  open=$(clients "$local_port")
  [ "$open" -ge "$N" ] || die "$name: only $open of $N client connections are still open"

  PER[$name]=$(awk -v a="${AFTER[$name]}" -v b="${BEFORE[$name]}" -v n="$N" 'BEGIN{printf "%.2f", (a - b) / n}')
  log "$name: RSS ${BEFORE[$name]} -> ${AFTER[$name]} KB, ${PER[$name]} KB per connection, ${TARGETS[$name]} to the backend"
  kill "$holder" 2>/dev/null || true
  wait "$holder" 2>/dev/null || true
  holder=
  sleep 2
}
measure nginx "$PID_nginx" 127.0.0.1 "$NGINX_PORT" "$NGINX_PORT"
measure haproxy "$PID_haproxy" 127.0.0.1 "$HAPROXY_PORT" "$HAPROXY_PORT"
# The VIP's connections arrive at the node's proxy port.
measure trellis "$PID_node" "$VIP" 80 15001

echo
echo "idle keep-alive connections: $N per proxy, one request each, idle ${SETTLE} s"
printf '%-8s %10s %10s %9s %16s\n' proxy rss_kb_0 rss_kb_n kb_per_conn target_conns
for p in nginx haproxy trellis; do
  printf '%-8s %10s %10s %9s %16s\n' "$p" "${BEFORE[$p]}" "${AFTER[$p]}" "${PER[$p]}" "${TARGETS[$p]}"
done
echo "SUMMARY connmem: trellis=${PER[trellis]} KB/conn ${TARGETS[trellis]} targets; nginx=${PER[nginx]} KB/conn ${TARGETS[nginx]}; haproxy=${PER[haproxy]} KB/conn ${TARGETS[haproxy]}"
