#!/usr/bin/env bash
# Proxy throughput with a route table of 100 rules (regexes, prefixes with
# headers, header regexes with query parameters) against one rule, in the
# same run (issue 25: at least 0.9). Every request (`GET /`) misses every
# rule and takes the 90/10 default: the most matching can cost a request.
# The setup of scripts/bench-observers.sh (nginx backends on cpu1, wrk -t1
# -c64 on cpu1, one Trellis node alone on cpu0 with the eBPF datapath);
# rounds alternate between the two tables, swapped by `trellis apply` on the
# running node.
# Usage: bash scripts/bench-rules.sh [--rounds N] [-d 5s] [--rules N] [--no-install]
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${BENCH_DIR:-$PWD/../shared/bench}
source "$BENCH_DIR/lib.sh"
source scripts/lib.sh
ROUNDS=5 DURATION=5s WARMUP=1s CONNS=64 INSTALL=1 RULES=100
while (($#)); do
  case $1 in
    --rounds) ROUNDS=$2; shift 2;;
    -d) DURATION=$2; shift 2;;
    --rules) RULES=$2; shift 2;;
    --no-install) INSTALL=0; shift;;
    *) die "unknown option: $1";;
  esac
done
((INSTALL)) || NO_INSTALL=1
ensure_pkgs nginx:nginx wrk:wrk curl:curl jq:jq taskset:util-linux
PROXY_CPU=${PROXY_CPU:-0} LOAD_CPU=${LOAD_CPU:-1}
BLUE_PORT=${BLUE_PORT:-18081} GREEN_PORT=${GREEN_PORT:-18082}
require_free_tcp "$BLUE_PORT" "$GREEN_PORT"
bench_setup rules

split_backends
start_control_plane "$WORK"
table() {
  {
    split_yaml "127.0.0.1:$BLUE_PORT" "127.0.0.1:$GREEN_PORT"
    split_service 90/10 "$1"
  } >"$WORK/rules-$1.yaml"
  "$bin" apply -f "$WORK/rules-$1.yaml" >/dev/null
  # The node has it within milliseconds; a second is plenty.
  sleep 1
}
table 1
URL="http://$("$bin" get service checkout -o json | jq -r .status.vip)/"
bench_node "$URL"

declare -A RPS P50 P99 ERR CPU
for ((round = 1; round <= ROUNDS; round++)); do
  # Alternate the order so neither side always runs on a warmer machine.
  if ((round % 2)); then
    table 1; wrk_round one "$PID_node" "$URL"
    table "$RULES"; wrk_round many "$PID_node" "$URL"
  else
    table "$RULES"; wrk_round many "$PID_node" "$URL"
    table 1; wrk_round one "$PID_node" "$URL"
  fi
done
# Still the default's 90/10 with the big table: nothing matched a rule.
table "$RULES"
blue=$(for _ in $(seq 200); do curl -s "$URL"; echo; done | grep -c blue || true)

echo
echo "rules: wrk -t1 -c$CONNS -d$DURATION, rounds=$ROUNDS (median), node on cpu$PROXY_CPU, $RULES rules vs 1"
printf '%-6s %10s %8s %8s %7s %9s\n' table req/s p50_us p99_us errors node_cpu%
for s in one many; do
  printf '%-6s %10s %8s %8s %7s %9s\n' "$s" "$(fmt0 "$(median ${RPS[$s]})")" \
    "$(fmt0 "$(median ${P50[$s]})")" "$(fmt0 "$(median ${P99[$s]})")" "${ERR[$s]}" "$(median ${CPU[$s]})"
done
echo "blue answers of 200 with $RULES rules: $blue"
echo "SUMMARY rules: many/one=$(ratio "$(median ${RPS[many]})" "$(median ${RPS[one]})") errors one=${ERR[one]} many=${ERR[many]}"
