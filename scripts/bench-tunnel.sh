#!/usr/bin/env bash
# What the cross-network tunnel adds to a request, against direct local
# forwarding, in the same run (issue 7). Two Trellis nodes on this host:
# "east" (eBPF on the root cgroup, where wrk runs) and "west" (its gateway
# role; eBPF on an empty cgroup of its own). One nginx target serves both
# networks. `local` forwards to east's own target group; `remote` to west's,
# so each request goes east proxy -> mTLS HTTP/2 -> west gateway -> target.
# Both proxies share cpu0 (one worker each); nginx and wrk run on cpu1.
# Usage: bash scripts/bench-tunnel.sh [--rounds N] [-d 5s] [-c 16] [--no-install]
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${BENCH_DIR:-$PWD/../shared/bench}
source "$BENCH_DIR/lib.sh"
source scripts/lib.sh
ROUNDS=3 DURATION=5s WARMUP=1s CONNS=16 INSTALL=1
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
ensure_pkgs nginx:nginx wrk:wrk curl:curl jq:jq taskset:util-linux
PROXY_CPU=${PROXY_CPU:-0} LOAD_CPU=${LOAD_CPU:-1}
TARGET_PORT=${TARGET_PORT:-18181} EAST_GW=${EAST_GW:-15118} WEST_GW=${WEST_GW:-15128}
require_free_tcp "$TARGET_PORT" "$EAST_GW" "$WEST_GW" 15101 15111 15190 15191
bin=${TRELLIS_BIN:-$PWD/target/release/trellis}
[ -x "$bin" ] || die "build first: cargo build --release"

WORK=$(mktemp -d /tmp/bench-tunnel.XXXXXX)
pins_east=/sys/fs/bpf/trellis-bench-east-$$ pins_west=/sys/fs/bpf/trellis-bench-west-$$
cg_root=/run/trellis/cgroup2
cleanup() {
  trap '' INT TERM # a second Ctrl-C must not cut the cleanup short
  stop_all_bg
  for p in "$pins_east" "$pins_west"; do
    "$bin" node --network x --cleanup --bpf-pin-dir "$p" >/dev/null 2>&1 || true
  done
  rmdir "$west_cg" 2>/dev/null || true
  kill "${CP_PID:-}" 2>/dev/null || true
  rm -rf "$WORK"
}
west_cg=""
trap cleanup EXIT
trap 'exit 130' INT TERM

nginx_backend "$WORK/backend" "$TARGET_PORT:target"
start_bg backend "$WORK/backend.log" $(pin "$LOAD_CPU") nginx -p "$WORK/backend" -c nginx.conf -g 'daemon off;'
wait_tcp 127.0.0.1 "$TARGET_PORT"

start_control_plane "$WORK"
tg() { # name network
  printf -- '---\napiVersion: trellis.dev/v1alpha1\nkind: TargetGroup\nmetadata: {name: %s}\nspec: {network: %s, healthCheck: {enabled: false}, targets: [{address: 127.0.0.1, port: %s}]}\n' "$1" "$2" "$TARGET_PORT"
}
svc() { # name group
  printf -- '---\napiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {name: %s}\nspec:\n  serviceNetworks: [bench]\n  listeners: [{name: web, protocol: HTTP, defaultAction: {forward: [{targetGroup: %s}]}}]\n' "$1" "$2"
}
{
  printf 'apiVersion: trellis.dev/v1alpha1\nkind: Network\nmetadata: {name: east}\nspec: {gateways: [{address: "127.0.0.1:%s"}]}\n' "$EAST_GW"
  printf -- '---\napiVersion: trellis.dev/v1alpha1\nkind: Network\nmetadata: {name: west}\nspec: {gateways: [{address: "127.0.0.1:%s"}]}\n' "$WEST_GW"
  printf -- '---\napiVersion: trellis.dev/v1alpha1\nkind: ServiceNetwork\nmetadata: {name: bench}\nspec: {networks: [east, west]}\n'
  tg here east; tg there west; svc local here; svc remote there
} >"$WORK/bench.yaml"
"$bin" apply -f "$WORK/bench.yaml" >/dev/null
vip() { "$bin" get service "$1" -o json | jq -r .status.vip; }
LOCAL_URL="http://$(vip local)/" REMOTE_URL="http://$(vip remote)/"

west_cg=$cg_root/trellis-bench-west-$$
[ -d "$cg_root/cgroup.procs" ] || [ -f "$cg_root/cgroup.procs" ] || { mkdir -p "$cg_root"; mount -t cgroup2 none "$cg_root"; }
mkdir -p "$west_cg"
start_bg west "$WORK/west.log" $(pin "$PROXY_CPU") "$bin" --log warn --worker-threads 1 node \
  --network west --data-dir "$WORK/west" --bpf-pin-dir "$pins_west" --datapath ebpf --cgroup "$west_cg" \
  --proxy-listen 127.0.0.1:15111 --admin-listen 127.0.0.1:15191 --gateway-listen "127.0.0.1:$WEST_GW" \
  --join-token "$("$bin" network join-token west)" --access-log off --drain-seconds 1
start_bg east "$WORK/east.log" $(pin "$PROXY_CPU") "$bin" --log warn --worker-threads 1 node \
  --network east --data-dir "$WORK/east" --bpf-pin-dir "$pins_east" --datapath ebpf \
  --proxy-listen 127.0.0.1:15101 --admin-listen 127.0.0.1:15190 \
  --join-token "$("$bin" network join-token east)" --access-log off --drain-seconds 1
for url in "$LOCAL_URL" "$REMOTE_URL"; do
  for _ in $(seq 100); do
    [ "$(curl -s -m 1 -o /dev/null -w '%{http_code}' "$url")" = 200 ] && break
    sleep 0.1
  done
  [ "$(curl -s -m 1 "$url")" = target ] || die "$url does not answer; see $WORK/*.log"
done

run() { # name url: one wrk run, appended to RPS P50 P99 ERR
  local name=$1 url=$2 out="$WORK/wrk-$1-$round.txt"
  $(pin "$LOAD_CPU") wrk -t1 -c"$CONNS" -d"$WARMUP" "$url" >/dev/null 2>&1 || true
  $(pin "$LOAD_CPU") wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$url" >"$out" 2>&1 || true
  local rps p50 p99 err
  rps=$(awk '/^Requests\/sec:/{print $2}' "$out")
  p50=$(to_us "$(awk '$1=="50%"{print $2}' "$out")") p99=$(to_us "$(awk '$1=="99%"{print $2}' "$out")")
  err=$(awk '/Socket errors:/{gsub(/,/,""); e+=$4+$6+$8+$10} /Non-2xx/{e+=$NF} END{print e+0}' "$out")
  RPS[$name]="${RPS[$name]:-} ${rps:-0}" P50[$name]="${P50[$name]:-} $p50" P99[$name]="${P99[$name]:-} $p99"
  ERR[$name]=$((${ERR[$name]:-0} + err))
  log "round $round $name: ${rps:-0} req/s p50=${p50}us p99=${p99}us errors=$err"
}

declare -A RPS P50 P99 ERR
for ((round = 1; round <= ROUNDS; round++)); do
  # Alternate the order so neither side always runs on a warmer machine.
  if ((round % 2)); then run local "$LOCAL_URL"; run remote "$REMOTE_URL"
  else run remote "$REMOTE_URL"; run local "$LOCAL_URL"; fi
done

echo
echo "tunnel: wrk -t1 -c$CONNS -d$DURATION, rounds=$ROUNDS (median), both proxies on cpu$PROXY_CPU"
printf '%-7s %10s %8s %8s %7s\n' path req/s p50_us p99_us errors
for s in local remote; do
  printf '%-7s %10s %8s %8s %7s\n' "$s" "$(fmt0 "$(median ${RPS[$s]})")" \
    "$(fmt0 "$(median ${P50[$s]})")" "$(fmt0 "$(median ${P99[$s]})")" "${ERR[$s]}"
done
add50=$(awk -v a="$(median ${P50[remote]})" -v b="$(median ${P50[local]})" 'BEGIN{printf "%.0f", a-b}')
add99=$(awk -v a="$(median ${P99[remote]})" -v b="$(median ${P99[local]})" 'BEGIN{printf "%.0f", a-b}')
echo "SUMMARY tunnel: added p50=${add50}us p99=${add99}us remote/local req/s=$(ratio "$(median ${RPS[remote]})" "$(median ${RPS[local]})") errors local=${ERR[local]} remote=${ERR[remote]}"
