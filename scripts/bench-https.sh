#!/usr/bin/env bash
# HTTPS listeners under keep-alive load against nginx and HAProxy terminating
# TLS for the same 90/10 split, same run (issue 8's target: trellis/nginx at
# least 1.0). A sibling of ../shared/bench/http-proxy.sh with its setup: an
# nginx backend answering "blue"/"green" and wrk -t1 -c64 share cpu1; the
# proxy under test is alone on cpu0 with one worker. All three terminate
# TLS 1.3 with the same ECDSA P-256 certificate; wrk keeps its 64
# connections open, so this measures TLS records, not handshakes. Trellis
# runs as a user runs it: an HTTPS listener applied from YAML with
# certificateFile/keyFile, the node's eBPF redirect of the VIP, access log off.
# Usage: bash scripts/bench-https.sh [--rounds N] [-d 5s] [-c 64] [--no-install]
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${BENCH_DIR:-$PWD/../shared/bench}
source "$BENCH_DIR/lib.sh"
source scripts/lib.sh
ROUNDS=3 DURATION=5s WARMUP=1s CONNS=64 INSTALL=1 SPLIT_N=2000
while (($#)); do
  case $1 in
    --rounds) ROUNDS=$2; shift 2;;
    -d) DURATION=$2; shift 2;;
    -c) CONNS=$2; shift 2;;
    --no-install) INSTALL=0; shift;;
    *) die "unknown option: $1";;
  esac
done
((INSTALL)) || NO_INSTALL=1
ensure_pkgs nginx:nginx haproxy:haproxy wrk:wrk curl:curl jq:jq openssl:openssl taskset:util-linux
PROXY_CPU=${PROXY_CPU:-0} LOAD_CPU=${LOAD_CPU:-1}
BLUE_PORT=${BLUE_PORT:-18081} GREEN_PORT=${GREEN_PORT:-18082}
NGINX_PORT=${NGINX_PORT:-18443} HAPROXY_PORT=${HAPROXY_PORT:-18453}
require_free_tcp "$BLUE_PORT" "$GREEN_PORT" "$NGINX_PORT" "$HAPROXY_PORT"
bench_setup https

# One CA and one server certificate for everyone.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=bench-ca -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=checkout \
  -keyout "$WORK/server.key" -out "$WORK/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:checkout.trellis.internal,IP:127.0.0.1\n' >"$WORK/san.ext"
openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
  -CAcreateserial -days 2 -extfile "$WORK/san.ext" -out "$WORK/server.pem" 2>/dev/null
cat "$WORK/server.pem" "$WORK/server.key" >"$WORK/server.combined.pem"

split_backends

mkdir -p "$WORK/nginx/tmp"
cat >"$WORK/nginx/nginx.conf" <<CONF
user root; worker_processes 1; pid nginx.pid; error_log nginx.err warn;
events { worker_connections 8192; multi_accept on; }
http {
  access_log off; keepalive_requests 1000000; keepalive_timeout 60s; default_type text/plain;
  client_body_temp_path tmp/body; proxy_temp_path tmp/proxy; fastcgi_temp_path tmp/fcgi;
  uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;
  upstream split {
    server 127.0.0.1:$BLUE_PORT weight=90;
    server 127.0.0.1:$GREEN_PORT weight=10;
    keepalive 128; keepalive_requests 1000000; keepalive_timeout 60s;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT ssl backlog=4096;
    ssl_certificate $WORK/server.pem; ssl_certificate_key $WORK/server.key;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:bench:10m;
    location / { proxy_pass http://split; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
start_bg nginx "$WORK/nginx.log" $(pin "$PROXY_CPU") nginx -p "$WORK/nginx" -c nginx.conf -g 'daemon off;'
wait_tcp 127.0.0.1 "$NGINX_PORT" || die "nginx did not start: $(cat "$WORK/nginx/nginx.err")"

haproxy_split "ssl crt $WORK/server.combined.pem"

start_control_plane "$WORK"
{
  split_yaml "127.0.0.1:$BLUE_PORT" "127.0.0.1:$GREEN_PORT"
  cat <<YAML
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: checkout}
spec:
  serviceNetworks: [bench]
  listeners:
    - name: secure
      protocol: HTTPS
      tls:
        certificates: [{certificateFile: server.pem, keyFile: server.key}]
      defaultAction:
        forward: [{targetGroup: blue, weight: 90}, {targetGroup: green, weight: 10}]
YAML
} >"$WORK/bench.yaml"
"$bin" apply -f "$WORK/bench.yaml" >/dev/null
VIP=$("$bin" get service checkout -o json | jq -r .status.vip)
start_bg node "$WORK/node.log" $(pin "$PROXY_CPU") "$bin" --log warn --worker-threads 1 node \
  --network bench --data-dir "$WORK/node" --bpf-pin-dir "$pins" --datapath ebpf \
  --admin-listen 127.0.0.1:0 --access-log off --drain-seconds 1 \
  --join-token "$("$bin" network join-token bench)"
verified() { curl -sS -m 1 -o /dev/null --cacert "$WORK/ca.pem" -w '%{http_code}' \
  --resolve "checkout.trellis.internal:443:$VIP" https://checkout.trellis.internal/; }
for _ in $(seq 50); do [ "$(verified 2>/dev/null)" = 200 ] && break; sleep 0.1; done
code=$(verified) || true; [ "$code" = 200 ] || die "the HTTPS listener answers $code to a verifying client: $(curl -s -m 1 --cacert "$WORK/ca.pem" --resolve "checkout.trellis.internal:443:$VIP" https://checkout.trellis.internal/)"

declare -A URL=([nginx]="https://127.0.0.1:$NGINX_PORT/" [haproxy]="https://127.0.0.1:$HAPROXY_PORT/" [trellis]="https://$VIP/")
declare -A PG=([nginx]=$PID_nginx [haproxy]=$PID_haproxy [trellis]=$PID_node)
declare -A RPS P50 P99 ERR CPU SPLIT
NAMES=(nginx haproxy trellis)

# N requests over one verified keep-alive connection: blue/green percentages.
split_of() {
  local cfg="$WORK/curl-$1.cfg" i
  {
    echo silent; echo 'write-out = "\n"'; echo "cacert = \"$WORK/ca.pem\""
    for ((i = 0; i < SPLIT_N; i++)); do echo "url = \"${URL[$1]}\""; done
  } >"$cfg"
  [ "$1" = trellis ] && sed -i "s|https://$VIP/|https://checkout.trellis.internal/|; 3a resolve = \"checkout.trellis.internal:443:$VIP\"" "$cfg"
  curl -K "$cfg" 2>/dev/null | awk -v n="$SPLIT_N" '$0=="blue"{b++} $0=="green"{g++}
    END{ printf "%.1f/%.1f", 100*b/n, 100*g/n; if (b+g<n) printf " other=%d", n-b-g; print "" }'
}

run() { # name
  wrk_round "$1" "${PG[$1]}" "${URL[$1]}"
}

log "wrk -t1 -c$CONNS -d$DURATION over TLS, rounds=$ROUNDS; proxies on cpu$PROXY_CPU, wrk and backend on cpu$LOAD_CPU"
for ((round = 1; round <= ROUNDS; round++)); do
  # Rotate the order so nobody always runs on a warmer machine.
  for ((i = 0; i < ${#NAMES[@]}; i++)); do
    run "${NAMES[$(((i + round) % ${#NAMES[@]}))]}"
  done
done
for n in "${NAMES[@]}"; do SPLIT[$n]=$(split_of "$n"); done

echo
echo "https-proxy: wrk -t1 -c$CONNS -d$DURATION, keep-alive, TLS 1.3 ECDSA P-256, rounds=$ROUNDS (median), split over $SPLIT_N reqs"
printf '%-8s %10s %8s %8s %7s %6s  %s\n' target req/s p50_us p99_us errors cpu% "split blue/green %"
for n in "${NAMES[@]}"; do
  printf '%-8s %10s %8s %8s %7s %6s  %s\n' "$n" "$(fmt0 "$(median ${RPS[$n]})")" "$(fmt0 "$(median ${P50[$n]})")" \
    "$(fmt0 "$(median ${P99[$n]})")" "${ERR[$n]}" "$(median ${CPU[$n]})" "${SPLIT[$n]}"
done
T=$(median ${RPS[trellis]})
echo "SUMMARY https-proxy: trellis/nginx=$(ratio "$T" "$(median ${RPS[nginx]})") trellis/haproxy=$(ratio "$T" "$(median ${RPS[haproxy]})") split trellis ${SPLIT[trellis]}"
