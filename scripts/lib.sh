# Shared by the scripts in this folder; source it from the repository root.

# build_release: installs what is missing, builds the release binary, sets $bin.
build_release() {
  bash scripts/setup.sh
  cargo build --release --locked -q
  bin=$PWD/target/release/trellis
}

# start_control_plane DIR [FLAGS...]: runs `$bin control-plane` on a free
# loopback port with its store in DIR/cp, waits until it listens, exports
# TRELLIS_SERVER, TRELLIS_TOKEN_FILE and TRELLIS_CA_FILE and sets CP_PID. Its output goes to DIR/cp.out and DIR/cp.log.
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
  TRELLIS_TOKEN_FILE=$dir/cp/api-token
  TRELLIS_CA_FILE=$dir/cp/ca.pem
  export TRELLIS_SERVER TRELLIS_TOKEN_FILE TRELLIS_CA_FILE
}

# services_yaml N: network east, service network shop and N services, each
# forwarding 90/10 to two target groups of two targets (and /v2 to the
# second), as YAML on stdout.
services_yaml() {
  python3 - "$1" <<'PY'
import sys
n = int(sys.argv[1])
out = sys.stdout
out.write("apiVersion: trellis.dev/v1alpha1\nkind: Network\nmetadata: {name: east}\nspec: {}\n---\n")
out.write("apiVersion: trellis.dev/v1alpha1\nkind: ServiceNetwork\nmetadata: {name: shop}\nspec: {networks: [east]}\n")
for i in range(n):
    a, b = i // 250, i % 250
    for c in ("blue", "green"):
        out.write(f"---\napiVersion: trellis.dev/v1alpha1\nkind: TargetGroup\nmetadata: {{name: s{i}-{c}}}\n"
                  f"spec: {{network: east, port: 8080, targets: [{{address: 10.{a}.{b}.10}}, {{address: 10.{a}.{b}.11}}]}}\n")
    out.write(f"""---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {{name: s{i}}}
spec:
  serviceNetworks: [shop]
  listeners:
    - name: web
      protocol: HTTP
      defaultAction: {{forward: [{{targetGroup: s{i}-blue, weight: 90}}, {{targetGroup: s{i}-green, weight: 10}}]}}
      rules:
        - {{name: v2, priority: 10, match: {{path: {{prefix: /v2}}}}, action: {{forward: [{{targetGroup: s{i}-green}}]}}}}
""")
PY
}

# to_us "1.23ms" -> 1230: wrk's latency units to microseconds.
to_us() {
  awk -v v="$1" 'BEGIN{ n=v; sub(/[a-z]+$/,"",n); u=v; sub(/^[0-9.]+/,"",u)
    m = (u=="us")?1:(u=="ms")?1000:(u=="s")?1e6:1; printf "%.0f\n", n*m }'
}

# nginx_backend DIR PORT:BODY...: writes DIR/nginx.conf for a one-worker
# nginx on $BACKEND_IP (default 127.0.0.1) answering BODY on each PORT (the
# benchmarks' targets).
nginx_backend() {
  local dir=$1 spec servers=""
  shift
  for spec in "$@"; do
    servers+="  server { listen ${BACKEND_IP:-127.0.0.1}:${spec%%:*} backlog=4096; location / { return 200 \"${spec#*:}\"; } }"$'\n'
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

# wrk_round NAME PID URL [WRK_ARGS...]: a warm-up, then one measured
# `wrk -t1 -c$CONNS -d$DURATION --latency` pinned to $LOAD_CPU (run in the
# network namespace $WRK_NETNS, and in the cgroup v2 directory $WRK_CGROUP,
# when they are set), with the CPU
# of PID's process group over the run. Appends to the caller's associative
# arrays RPS P50 P99 CPU (space-separated, for `median`) and adds to ERR; the
# wrk output is kept in $WORK/wrk-NAME-$round.txt. Needs ../shared/bench/lib.sh.
wrk_round() {
  local name=$1 pg=$2 url=$3 out="$WORK/wrk-$1-$round.txt" c0 c1 t0 t1 rps p50 p99 err cpu
  shift 3
  local ns=()
  [ -n "${WRK_NETNS:-}" ] && ns=(ip netns exec "$WRK_NETNS")
  # shellcheck disable=SC2016 # $0 and $@ are the inner shell's
  [ -n "${WRK_CGROUP:-}" ] && ns+=(sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$WRK_CGROUP")
  "${ns[@]}" $(pin "$LOAD_CPU") wrk -t1 -c"$CONNS" -d"$WARMUP" "$@" "$url" >/dev/null 2>&1 || true
  c0=$(group_ticks "$pg") t0=$(now_s)
  "${ns[@]}" $(pin "$LOAD_CPU") wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$@" "$url" >"$out" 2>&1 || true
  c1=$(group_ticks "$pg") t1=$(now_s)
  cpu=$(cpu_pct $((c1 - c0)) "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')")
  rps=$(awk '/^Requests\/sec:/{print $2}' "$out")
  p50=$(to_us "$(awk '$1=="50%"{print $2}' "$out")") p99=$(to_us "$(awk '$1=="99%"{print $2}' "$out")")
  err=$(awk '/Socket errors:/{gsub(/,/,""); e+=$4+$6+$8+$10} /Non-2xx/{e+=$NF} END{print e+0}' "$out")
  RPS[$name]="${RPS[$name]:-} ${rps:-0}" P50[$name]="${P50[$name]:-} $p50" P99[$name]="${P99[$name]:-} $p99"
  ERR[$name]=$((${ERR[$name]:-0} + err)) CPU[$name]="${CPU[$name]:-} $cpu"
  log "round $round $name: ${rps:-0} req/s p50=${p50}us p99=${p99}us errors=$err cpu=$cpu%"
}

# bench_setup NAME: $bin (the release build), $WORK (a temp dir) and $pins
# (a node's bpffs pins); at exit, what start_bg started, the node's datapath,
# the control plane and $WORK are removed. Needs ../shared/bench/lib.sh.
bench_setup() {
  bin=${TRELLIS_BIN:-$PWD/target/release/trellis}
  [ -x "$bin" ] || die "build first: cargo build --release"
  WORK=$(mktemp -d "/tmp/bench-$1.XXXXXX")
  pins=/sys/fs/bpf/trellis-bench-$1-$$
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}
bench_cleanup() {
  trap '' INT TERM # a second Ctrl-C must not cut the cleanup short
  stop_all_bg
  "$bin" node --network bench --cleanup --bpf-pin-dir "$pins" >/dev/null 2>&1 || true
  kill "${CP_PID:-}" 2>/dev/null || true
  rm -rf "$WORK"
}

# split_backends: the shared harness's nginx backend on LOAD_CPU, answering
# `blue` on BLUE_PORT and `green` on GREEN_PORT (needs WORK and its lib).
split_backends() {
  nginx_backend "$WORK/backend" "$BLUE_PORT:blue" "$GREEN_PORT:green"
  start_bg backend "$WORK/backend.log" $(pin "$LOAD_CPU") nginx -p "$WORK/backend" -c nginx.conf -g 'daemon off;'
  wait_tcp 127.0.0.1 "$BLUE_PORT"
}

# haproxy_split BIND [TIMEOUT]: the HAProxy peer, nbthread 1 on PROXY_CPU,
# listening on 127.0.0.1:HAPROXY_PORT (BIND: the rest of its bind line,
# e.g. `proto h2` or `ssl crt FILE`), splitting 90/10 between BLUE_PORT and
# GREEN_PORT with `http-reuse always`; TIMEOUT (default 60s) for clients,
# servers and keep-alive. Returns once it listens (needs WORK and its lib).
haproxy_split() {
  cat >"$WORK/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 9000
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode http
  timeout connect 5s
  timeout client ${2:-60s}
  timeout server ${2:-60s}
  timeout http-keep-alive ${2:-60s}
  option http-keep-alive
frontend fe
  bind 127.0.0.1:$HAPROXY_PORT $1
  default_backend split
backend split
  balance roundrobin
  http-reuse always
  server blue  127.0.0.1:$BLUE_PORT  weight 90
  server green 127.0.0.1:$GREEN_PORT weight 10
CONF
  start_bg haproxy "$WORK/haproxy.log" $(pin "$PROXY_CPU") haproxy -db -f "$WORK/haproxy.cfg"
  wait_tcp 127.0.0.1 "$HAPROXY_PORT" || die "haproxy did not start: $(cat "$WORK/haproxy.log")"
}

# bench_node URL: `trellis node` of network `bench` alone on PROXY_CPU (one
# worker, eBPF datapath pinned at $pins, access log off, flows on as
# shipped), returning once URL answers 200 through it.
bench_node() {
  start_bg node "$WORK/node.log" $(pin "$PROXY_CPU") "$bin" --log warn --worker-threads 1 node \
    --network bench --data-dir "$WORK/node" --bpf-pin-dir "$pins" --datapath ebpf \
    --admin-listen 127.0.0.1:0 --access-log off --flows true --drain-seconds 1 \
    --join-token "$("$bin" network join-token bench)"
  for _ in $(seq 100); do
    [ "$(curl -s -m 1 -o /dev/null -w '%{http_code}' "$1")" = 200 ] && return 0
    sleep 0.1
  done
  die "the node never answered $1"
}

# split_yaml BLUE GREEN: network and service network `bench`, and target
# groups `blue` and `green` (health checks off) on host:port BLUE and GREEN.
split_yaml() {
  cat <<YAML
apiVersion: trellis.dev/v1alpha1
kind: Network
metadata: {name: bench}
spec: {}
---
apiVersion: trellis.dev/v1alpha1
kind: ServiceNetwork
metadata: {name: bench}
spec: {networks: [bench]}
---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: blue}
spec: {network: bench, healthCheck: {enabled: false}, targets: [{address: ${1%:*}, port: ${1##*:}}]}
---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: green}
spec: {network: bench, healthCheck: {enabled: false}, targets: [{address: ${2%:*}, port: ${2##*:}}]}
YAML
}

# split_service WEIGHTS [RULES]: service `checkout` in service network `bench`
# whose HTTP listener splits between `blue` and `green` by WEIGHTS (`90/10`),
# after RULES rules (default 0, at most 100) that a plain `GET /` misses
# every one of: a third path regexes, a third path prefixes with a header,
# a third header regexes with a query parameter, all forwarding to `green`.
split_service() {
  cat <<YAML
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: checkout}
spec:
  serviceNetworks: [bench]
  listeners:
    - name: web
      protocol: HTTP
      defaultAction:
        forward: [{targetGroup: blue, weight: ${1%/*}}, {targetGroup: green, weight: ${1#*/}}]
YAML
  local rules=${2:-0} i
  [ "$rules" -gt 0 ] || return 0
  echo "      rules:"
  for i in $(seq 1 "$rules"); do
    case $((i % 3)) in
      0) match="{path: {regex: \"/api/v[0-9]+/item-$i/.*\"}}" ;;
      1) match="{path: {prefix: /svc-$i/}, headers: [{name: x-tenant, exact: t$i}]}" ;;
      2) match="{headers: [{name: x-build, regex: \"b-$i-[a-f0-9]+\"}], query: [{name: v, exact: \"$i\"}]}" ;;
    esac
    echo "        - {name: r$i, priority: $i, match: $match, action: {forward: [{targetGroup: green}]}}"
  done
}

# etcd_cluster DIR [ETCD_FLAGS...]: three etcd members (Debian's etcd-server)
# on free loopback ports, their data in DIR/etcdN, each started with
# ETCD_FLAGS; healthy when it returns. Sets ETCD_ENDPOINTS and ETCD_PIDS (by
# member); `etcd_member N` starts member N again on its data. The caller
# kills ETCD_PIDS on exit.
etcd_cluster() {
  ETCD_DIR=$1
  shift
  ETCD_FLAGS=("$@")
  read -r -a ETCD_PORTS < <(python3 -c 'import socket
ss=[socket.socket() for _ in range(6)]
for s in ss: s.bind(("127.0.0.1",0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
  ETCD_CLUSTER="" ETCD_ENDPOINTS="" ETCD_PIDS=()
  local i
  for i in 0 1 2; do
    ETCD_CLUSTER+="${ETCD_CLUSTER:+,}m$i=http://127.0.0.1:${ETCD_PORTS[$((i + 3))]}"
    ETCD_ENDPOINTS+="${ETCD_ENDPOINTS:+,}http://127.0.0.1:${ETCD_PORTS[$i]}"
  done
  for i in 0 1 2; do etcd_member "$i"; done
  for _ in $(seq 150); do
    ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINTS" endpoint health >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "etcd did not become healthy" >&2
  return 1
}

etcd_member() {
  local i=$1 client=http://127.0.0.1:${ETCD_PORTS[$1]} peer=http://127.0.0.1:${ETCD_PORTS[$(($1 + 3))]}
  etcd --name "m$i" --data-dir "$ETCD_DIR/etcd$i" --listen-client-urls "$client" \
    --advertise-client-urls "$client" --listen-peer-urls "$peer" \
    --initial-advertise-peer-urls "$peer" --initial-cluster "$ETCD_CLUSTER" \
    --initial-cluster-token "trellis-$$" --initial-cluster-state new \
    --logger zap --log-level error "${ETCD_FLAGS[@]}" >>"$ETCD_DIR/etcd$i.log" 2>&1 &
  ETCD_PIDS[i]=$!
}
