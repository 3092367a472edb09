#!/usr/bin/env bash
# Proxy throughput with five `trellis observe --follow` attached against none,
# in the same run (issue 26: at least 0.95). The setup of
# scripts/bench-proxy-auth.sh (nginx backends on cpu1, wrk -t1 -c64 on cpu1,
# one Trellis node alone on cpu0 with flows on, as shipped), one service
# without auth; rounds alternate between no observer and five, one of which
# is stopped (SIGSTOP) for its whole round: a reader that never reads.
# Usage: bash scripts/bench-observers.sh [--rounds N] [-d 5s] [--no-install]
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${BENCH_DIR:-$PWD/../shared/bench}
source "$BENCH_DIR/lib.sh"
source scripts/lib.sh
ROUNDS=5 DURATION=5s WARMUP=1s CONNS=64 INSTALL=1
while (($#)); do
  case $1 in
    --rounds) ROUNDS=$2; shift 2;;
    -d) DURATION=$2; shift 2;;
    --no-install) INSTALL=0; shift;;
    *) die "unknown option: $1";;
  esac
done
((INSTALL)) || NO_INSTALL=1
ensure_pkgs nginx:nginx wrk:wrk curl:curl jq:jq taskset:util-linux
PROXY_CPU=${PROXY_CPU:-0} LOAD_CPU=${LOAD_CPU:-1}
BLUE_PORT=${BLUE_PORT:-18081} GREEN_PORT=${GREEN_PORT:-18082}
require_free_tcp "$BLUE_PORT" "$GREEN_PORT"
bench_setup observers
observers=()
stop_observers() {
  for p in "${observers[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  for p in "${observers[@]}"; do wait "$p" 2>/dev/null || true; done
  observers=()
}
trap 'stop_observers; bench_cleanup' EXIT

split_backends
start_control_plane "$WORK"
{
  split_yaml "127.0.0.1:$BLUE_PORT" "127.0.0.1:$GREEN_PORT"
  split_service 90/10
} >"$WORK/bench.yaml"
"$bin" apply -f "$WORK/bench.yaml" >/dev/null
URL="http://$("$bin" get service checkout -o json | jq -r .status.vip)/"
bench_node "$URL"

attach() {
  for _ in 1 2 3 4 5; do
    "$bin" observe --follow -o json --last 0 >"$WORK/observed-${#observers[@]}.json" 2>/dev/null &
    observers+=($!)
  done
  sleep 0.5
  kill -STOP "${observers[0]}"
}
seen() { cat "$WORK"/observed-*.json 2>/dev/null | wc -l; }

declare -A RPS P50 P99 ERR CPU
for ((round = 1; round <= ROUNDS; round++)); do
  # Alternate the order so neither side always runs on a warmer machine.
  if ((round % 2)); then
    wrk_round none "$PID_node" "$URL"
    attach; wrk_round observers "$PID_node" "$URL"; stop_observers
  else
    attach; wrk_round observers "$PID_node" "$URL"; stop_observers
    wrk_round none "$PID_node" "$URL"
  fi
done

echo
echo "observers: wrk -t1 -c$CONNS -d$DURATION, rounds=$ROUNDS (median), node on cpu$PROXY_CPU, flows on"
printf '%-10s %10s %8s %8s %7s %9s\n' observers req/s p50_us p99_us errors node_cpu%
for s in none observers; do
  printf '%-10s %10s %8s %8s %7s %9s\n' "$s" "$(fmt0 "$(median ${RPS[$s]})")" \
    "$(fmt0 "$(median ${P50[$s]})")" "$(fmt0 "$(median ${P99[$s]})")" "${ERR[$s]}" "$(median ${CPU[$s]})"
done
echo "flows the four reading observers printed in the last round: $(seen)"
echo "SUMMARY observers: five/none=$(ratio "$(median ${RPS[observers]})" "$(median ${RPS[none]})") errors none=${ERR[none]} observers=${ERR[observers]}"
