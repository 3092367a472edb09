#!/usr/bin/env bash
# Whole-program scale benchmark of the control plane (issue 2's targets):
# 10,000 services with two target groups each, applied with the real CLI
# (YAML parsing, HTTP, validation, VIP allocation, fsync'ed commit), one
# network's snapshot fetched over HTTP, and the control plane's RSS.
# Targets: apply < 5 s, snapshot < 200 ms, RSS < 300 MB.
# Usage: bash scripts/bench-control-plane.sh [SERVICES]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
source scripts/lib.sh
build_release

work=$(mktemp -d /tmp/trellis-bench.XXXXXX)
pid=""
cleanup() { trap '' INT TERM; [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

services_yaml "$n" >"$work/big.yaml"
echo "generated $(grep -c '^kind:' "$work/big.yaml") documents, $(du -h "$work/big.yaml" | cut -f1)" >&2

start_control_plane "$work" --vip-pool-v4 169.254.128.0/17
pid=$CP_PID
rss() { awk -v k="$1:" '$1 == k {print int($2/1024)}' /proc/$pid/status; }
echo "idle RSS: $(rss VmRSS) MB" >&2

ms() { local t0=$(date +%s%N); "$@" >/dev/null; echo $(( ($(date +%s%N) - t0) / 1000000 )); }
# "MS MB": wall time and the command's peak RSS.
ms_mb() {
  python3 -c 'import resource, subprocess, sys, time
t0 = time.monotonic()
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)
print(int((time.monotonic() - t0) * 1000), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)' "$@"
}
read -r apply_ms cli_mb < <(ms_mb "$bin" apply -f "$work/big.yaml")
reapply_ms=$(ms "$bin" apply -f "$work/big.yaml")
snap_url="$TRELLIS_SERVER/v1/networks/east/snapshot"
snap_cold=$(curl -s --cacert "$TRELLIS_CA_FILE" -H "authorization: Bearer $(cat "$TRELLIS_TOKEN_FILE")" -o "$work/snap.json" -w '%{time_total}' "$snap_url")
snap_warm=$(curl -s --cacert "$TRELLIS_CA_FILE" -H "authorization: Bearer $(cat "$TRELLIS_TOKEN_FILE")" -o /dev/null -w '%{time_total}' "$snap_url")
services=$(jq '.services | length' "$work/snap.json")
[ "$services" = "$n" ] || { echo "snapshot has $services services, expected $n" >&2; exit 1; }

printf '%-44s %s\n' "documents" "$(grep -c '^kind:' "$work/big.yaml")"
printf '%-44s %s ms\n' "apply (CLI, new objects)" "$apply_ms"
printf '%-44s %s MB\n' "trellis apply peak RSS" "$cli_mb"
printf '%-44s %s ms\n' "re-apply (CLI, all unchanged)" "$reapply_ms"
printf '%-44s %.0f ms (%s bytes)\n' "snapshot GET, first (compile + serialize)" "$(echo "$snap_cold*1000" | bc -l)" "$(stat -c %s "$work/snap.json")"
printf '%-44s %.0f ms\n' "snapshot GET, cached" "$(echo "$snap_warm*1000" | bc -l)"
printf '%-44s %s MB\n' "control plane peak RSS (VmHWM)" "$(rss VmHWM)"
sleep 2
printf '%-44s %s MB\n' "control plane RSS, 2 s idle after" "$(rss VmRSS)"
printf '%-44s %s\n' "store size" "$(du -h "$work/cp/state.redb" | cut -f1)"
