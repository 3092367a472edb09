#!/usr/bin/env bash
# Proxy throughput from a container's network namespace against the same
# from the host's (issue 21), in the same run. The setup of
# ../shared/bench/http-proxy.sh (nginx backend "blue"/"green" and wrk -t1 -c64
# on cpu1, `trellis node` alone on cpu0 with one worker, eBPF redirect, 90/10
# split, access log off), with a bridge in the host namespace (10.89.0.1/24)
# and a "container": a netns joined to it by a veth pair (10.89.0.2). The
# proxy and the backend listen on the bridge address, where both reach them.
# Rows: `host` (wrk in the host namespace -> VIP -> proxy), `container` (wrk in
# the container -> VIP -> veth -> proxy), and the same two straight to the
# backend (`host-direct`, `container-direct`): the cost of the veth hop alone.
# Usage: bash scripts/bench-containers.sh [--rounds N] [-d 5s] [--no-install]
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${BENCH_DIR:-$PWD/../shared/bench}
source "$BENCH_DIR/lib.sh"
source scripts/lib.sh
ROUNDS=3 DURATION=5s WARMUP=1s CONNS=64 INSTALL=1
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
ensure_pkgs nginx:nginx wrk:wrk curl:curl jq:jq taskset:util-linux ip:iproute2
PROXY_CPU=${PROXY_CPU:-0} LOAD_CPU=${LOAD_CPU:-1}
BLUE_PORT=${BLUE_PORT:-18081} GREEN_PORT=${GREEN_PORT:-18082}
BRIDGE_IP=10.89.0.1 CONTAINER_IP=10.89.0.2
NS=trellis-bench-ct-$$ BR=trbr$$ VETH=trve$$
bench_setup containers
# The bridge and the container go too, on every way out.
trap 'bench_cleanup; ip netns del "$NS" 2>/dev/null; ip link del "$BR" 2>/dev/null; true' EXIT
ip -br addr | grep -q "10\.89\.0\." && die "10.89.0.0/24 is in use on this host"
ip link add "$BR" type bridge
ip addr add "$BRIDGE_IP/24" dev "$BR"
ip link set "$BR" up
ip netns add "$NS"
ip -n "$NS" link set lo up
ip link add "$VETH" type veth peer name eth0 netns "$NS"
ip link set "$VETH" master "$BR"
ip link set "$VETH" up
ip -n "$NS" addr add "$CONTAINER_IP/24" dev eth0
ip -n "$NS" link set eth0 up
ip -n "$NS" route add default via "$BRIDGE_IP"

BACKEND_IP=$BRIDGE_IP nginx_backend "$WORK/backend" "$BLUE_PORT:blue" "$GREEN_PORT:green"
start_bg backend "$WORK/backend.log" $(pin "$LOAD_CPU") nginx -p "$WORK/backend" -c nginx.conf -g 'daemon off;'
wait_tcp "$BRIDGE_IP" "$BLUE_PORT"

start_control_plane "$WORK"
{
  split_yaml "$BRIDGE_IP:$BLUE_PORT" "$BRIDGE_IP:$GREEN_PORT"
  split_service 90/10
} >"$WORK/bench.yaml"
"$bin" apply -f "$WORK/bench.yaml" >/dev/null
VIP=$("$bin" get service checkout -o json | jq -r .status.vip)
# The unified root: every process on the host is redirected, the
# container's included (its cgroup is below it).
start_bg node "$WORK/node.log" $(pin "$PROXY_CPU") "$bin" --log warn --worker-threads 1 node \
  --network bench --data-dir "$WORK/node" --bpf-pin-dir "$pins" --datapath ebpf \
  --proxy-listen "$BRIDGE_IP:15001" --admin-listen 127.0.0.1:0 --access-log off \
  --drain-seconds 1 --join-token "$("$bin" network join-token bench)"
for _ in $(seq 100); do
  [ "$(ip netns exec "$NS" curl -s -m 1 "http://$VIP/")" = blue ] && break
  sleep 0.1
done
[ "$(ip netns exec "$NS" curl -s -m 1 "http://$VIP/")" = blue ] || die "the container does not reach the service"

declare -A RPS P50 P99 ERR CPU
run() { # name netns url pid
  WRK_NETNS=$2 wrk_round "$1" "$4" "$3"
}
for ((round = 1; round <= ROUNDS; round++)); do
  rows=(host container host-direct container-direct)
  ((round % 2)) || rows=(container-direct host-direct container host)
  for r in "${rows[@]}"; do
    case $r in
      host) run host "" "http://$VIP/" "$PID_node";;
      container) run container "$NS" "http://$VIP/" "$PID_node";;
      host-direct) run host-direct "" "http://$BRIDGE_IP:$BLUE_PORT/" "$PID_backend";;
      container-direct) run container-direct "$NS" "http://$BRIDGE_IP:$BLUE_PORT/" "$PID_backend";;
    esac
  done
done

echo
echo "containers: wrk -t1 -c$CONNS -d$DURATION, rounds=$ROUNDS (median), node on cpu$PROXY_CPU"
printf '%-17s %10s %8s %8s %7s %6s\n' row req/s p50_us p99_us errors cpu%
for r in host container host-direct container-direct; do
  printf '%-17s %10s %8s %8s %7s %6s\n' "$r" "$(fmt0 "$(median ${RPS[$r]})")" \
    "$(fmt0 "$(median ${P50[$r]})")" "$(fmt0 "$(median ${P99[$r]})")" "${ERR[$r]}" "$(median ${CPU[$r]})"
done
proxied=$(ratio "$(median ${RPS[container]})" "$(median ${RPS[host]})")
direct=$(ratio "$(median ${RPS[container-direct]})" "$(median ${RPS[host-direct]})")
echo "SUMMARY containers: container/host through the proxy $proxied, straight to the backend $direct"
