#!/usr/bin/env bash
# HTTP/2 clients through nginx, HAProxy and Trellis doing the same 90/10
# split, same run (issue 27: Trellis at least 1.0 of HAProxy for both
# shapes). A sibling of ../shared/bench/http-proxy.sh with its setup: an
# nginx backend answering "blue"/"green" and the load generator share cpu1;
# the proxy under test is alone on cpu0 with one worker. Clients speak
# cleartext HTTP/2 with prior knowledge (h2load's default for http://) and
# every proxy speaks HTTP/1.1 to the backend, as nginx can only do. Two
# shapes: many connections with one stream each (`-c64 -m1`: browsers and
# most gRPC clients of a busy service) and few connections with many
# streams (`-c4 -m32`: a gRPC channel's multiplexing). Trellis runs as a
# user runs it: the service applied from YAML, the node's eBPF redirect of
# the VIP, access log off. p50/p99 come from h2load's per-request log.
# Usage: bash scripts/bench-h2.sh [--rounds N] [-d SECONDS] [--shapes 64x1,4x32]
#   [--only nginx,haproxy,trellis] [--no-install]
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${BENCH_DIR:-$PWD/../shared/bench}
source "$BENCH_DIR/lib.sh"
source scripts/lib.sh
ROUNDS=3 DURATION=5 WARMUP=1 INSTALL=1 SPLIT_N=2000 SHAPES=64x1,4x32 ONLY=nginx,haproxy,trellis
while (($#)); do
  case $1 in
    --rounds) ROUNDS=$2; shift 2;;
    -d) DURATION=${2%s}; shift 2;;
    --shapes) SHAPES=$2; shift 2;;
    --only) ONLY=$2; shift 2;;
    --no-install) INSTALL=0; shift;;
    -h|--help) sed -n '2,15p' "$0"; exit 0;;
    *) die "unknown option: $1";;
  esac
done
((INSTALL)) || NO_INSTALL=1
ensure_pkgs nginx:nginx haproxy:haproxy h2load:nghttp2-client curl:curl jq:jq taskset:util-linux
PROXY_CPU=${PROXY_CPU:-0} LOAD_CPU=${LOAD_CPU:-1}
BLUE_PORT=${BLUE_PORT:-18081} GREEN_PORT=${GREEN_PORT:-18082}
NGINX_PORT=${NGINX_PORT:-18280} HAPROXY_PORT=${HAPROXY_PORT:-18290}
require_free_tcp "$BLUE_PORT" "$GREEN_PORT" "$NGINX_PORT" "$HAPROXY_PORT"
bench_setup h2

split_backends

mkdir -p "$WORK/nginx/tmp"
cat >"$WORK/nginx/nginx.conf" <<CONF
user root; worker_processes 1; pid nginx.pid; error_log nginx.err warn;
events { worker_connections 8192; multi_accept on; }
http {
  access_log off; keepalive_requests 1000000; keepalive_timeout 60s; default_type text/plain;
  http2_max_requests 1000000; http2_max_concurrent_streams 128;
  client_body_temp_path tmp/body; proxy_temp_path tmp/proxy; fastcgi_temp_path tmp/fcgi;
  uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;
  upstream split {
    server 127.0.0.1:$BLUE_PORT weight=90;
    server 127.0.0.1:$GREEN_PORT weight=10;
    keepalive 128; keepalive_requests 1000000; keepalive_timeout 60s;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT http2 backlog=4096;
    location / { proxy_pass http://split; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
start_bg nginx "$WORK/nginx.log" $(pin "$PROXY_CPU") nginx -p "$WORK/nginx" -c nginx.conf -g 'daemon off;'
wait_tcp 127.0.0.1 "$NGINX_PORT" || die "nginx did not start: $(cat "$WORK/nginx/nginx.err")"

haproxy_split "proto h2"

start_control_plane "$WORK"
{
  split_yaml "127.0.0.1:$BLUE_PORT" "127.0.0.1:$GREEN_PORT"
  split_service 90/10
} >"$WORK/bench.yaml"
"$bin" apply -f "$WORK/bench.yaml" >/dev/null
VIP=$("$bin" get service checkout -o json | jq -r .status.vip)
bench_node "http://$VIP/"
code=$(curl -sS -m 2 -o /dev/null -w '%{http_code} %{http_version}' --http2-prior-knowledge "http://$VIP/") || true
[ "$code" = "200 2" ] || die "Trellis answers an HTTP/2 client with '$code', not '200 2'"

declare -A URL=([nginx]="http://127.0.0.1:$NGINX_PORT/" [haproxy]="http://127.0.0.1:$HAPROXY_PORT/" [trellis]="http://$VIP/")
declare -A PG=([nginx]=$PID_nginx [haproxy]=$PID_haproxy [trellis]=$PID_node)
declare -A RPS P50 P99 ERR CPU SPLIT
IFS=, read -r -a NAMES <<<"$ONLY"

# N requests over one HTTP/2 connection (nghttp: curl 7.88 fails the
# second request of a reused prior-knowledge connection): blue/green
# percentages. Distinct queries, as nghttp fetches a URI once.
split_of() {
  local i urls=()
  for ((i = 0; i < SPLIT_N; i++)); do urls+=("${URL[$1]}?i=$i"); done
  { nghttp "${urls[@]}" 2>"$WORK/nghttp-$1.err" || true; } | grep -o 'blue\|green' |
    awk -v n="$SPLIT_N" '$0=="blue"{b++} $0=="green"{g++}
    END{ printf "%.1f/%.1f", 100*b/n, 100*g/n; if (b+g<n) printf " other=%d", n-b-g; print "" }'
}

# h2_round NAME CONNS STREAMS: a warm-up, then one measured h2load run of
# DURATION seconds on LOAD_CPU, with the CPU of NAME's process group.
h2_round() {
  local name=$1 key=$1-$2x$3 out="$WORK/h2load-$1-$2x$3-$round.txt" reqlog="$WORK/req-$1.log" c0 c1 t0 t1 rps err cpu p50 p99
  $(pin "$LOAD_CPU") h2load -t1 -c"$2" -m"$3" -D "$WARMUP" "${URL[$name]}" >/dev/null 2>&1 || true
  c0=$(group_ticks "${PG[$name]}") t0=$(now_s)
  $(pin "$LOAD_CPU") h2load -t1 -c"$2" -m"$3" -D "$DURATION" --log-file "$reqlog" "${URL[$name]}" >"$out" 2>&1 || true
  c1=$(group_ticks "${PG[$name]}") t1=$(now_s)
  cpu=$(cpu_pct $((c1 - c0)) "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')")
  rps=$(awk '/^finished in/{gsub(/,/,""); print $4}' "$out")
  # Failed, errored and timed-out requests, and answers other than 2xx.
  err=$(awk '/^requests:/{gsub(/,/,""); e+=$10+$12+$14} /^status codes:/{gsub(/,/,""); e+=$5+$7+$9} END{print e+0}' "$out")
  # The log: start time (µs), status, latency (µs) per request.
  read -r p50 p99 < <(cut -f3 "$reqlog" | sort -n | awk '{v[NR]=$1} END{ if (NR) printf "%d %d\n", v[int(NR*0.5)+1], v[int(NR*0.99)+1]; else print "0 0" }')
  rm -f "$reqlog"
  RPS[$key]="${RPS[$key]:-} ${rps:-0}" P50[$key]="${P50[$key]:-} $p50" P99[$key]="${P99[$key]:-} $p99"
  ERR[$key]=$((${ERR[$key]:-0} + err)) CPU[$key]="${CPU[$key]:-} $cpu"
  log "round $round $name -c$2 -m$3: ${rps:-0} req/s p50=${p50}us p99=${p99}us errors=$err cpu=$cpu%"
}

IFS=, read -r -a SHAPE_LIST <<<"$SHAPES"
log "h2load -t1 -D $DURATION over h2c, shapes ${SHAPES}, rounds=$ROUNDS; proxies on cpu$PROXY_CPU, h2load and backend on cpu$LOAD_CPU"
for ((round = 1; round <= ROUNDS; round++)); do
  for shape in "${SHAPE_LIST[@]}"; do
    # Rotate the order so nobody always runs on a warmer machine.
    for ((i = 0; i < ${#NAMES[@]}; i++)); do
      h2_round "${NAMES[$(((i + round) % ${#NAMES[@]}))]}" "${shape%x*}" "${shape#*x}"
    done
  done
done
for n in "${NAMES[@]}"; do SPLIT[$n]=$(split_of "$n"); done

echo
echo "h2-proxy: h2load -t1 -D $DURATION, h2c prior knowledge, HTTP/1.1 to the backend, rounds=$ROUNDS (median), split over $SPLIT_N reqs"
printf '%-8s %-6s %10s %8s %8s %7s %6s  %s\n' target shape req/s p50_us p99_us errors cpu% "split blue/green %"
summary=""
for shape in "${SHAPE_LIST[@]}"; do
  for n in "${NAMES[@]}"; do
    k=$n-$shape
    printf '%-8s %-6s %10s %8s %8s %7s %6s  %s\n' "$n" "$shape" "$(fmt0 "$(median ${RPS[$k]})")" "$(fmt0 "$(median ${P50[$k]})")" \
      "$(fmt0 "$(median ${P99[$k]})")" "${ERR[$k]}" "$(median ${CPU[$k]})" "${SPLIT[$n]}"
  done
  T=$(median ${RPS[trellis-$shape]:-})
  summary+=" $shape: trellis/nginx=$(ratio "$T" "$(median ${RPS[nginx-$shape]:-})") trellis/haproxy=$(ratio "$T" "$(median ${RPS[haproxy-$shape]:-})") p99 trellis/haproxy=$(ratio "$(median ${P99[trellis-$shape]:-})" "$(median ${P99[haproxy-$shape]:-})");"
done
echo "SUMMARY h2-proxy:$summary split trellis ${SPLIT[trellis]:-}"
