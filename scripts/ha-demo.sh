#!/usr/bin/env bash
# The control plane without a single machine, on one machine: a three-member
# etcd (Debian's etcd-server) and three `trellis control-plane` replicas on
# loopback. It applies samples/blue-green.yaml through the list of every
# replica's URL, SIGKILLs one etcd member and one replica, shifts the
# weights through the same list, brings both back and shows every replica
# at the same revision with the same weights. Everything it starts is
# stopped and removed on exit (Ctrl-C included).
# Usage: bash scripts/ha-demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
build_release

work=$(mktemp -d /tmp/trellis-ha.XXXXXX)
pids=()
cleanup() {
  trap '' INT TERM # a second Ctrl-C must not cut the cleanup short
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

etcd_cluster "$work"
pids+=("${ETCD_PIDS[@]}")
endpoints=$ETCD_ENDPOINTS
echo "etcd: three members at $endpoints"

# The first replica puts a new CA and admin token in etcd; the others are
# given its secrets key and find the rest there.
urls=""
cp_pids=()
for r in 0 1 2; do
  mkdir -p "$work/r$r/cp"
  [ "$r" = 0 ] || cp "$work/r0/cp/secrets.key" "$work/r$r/cp/secrets.key"
  start_control_plane "$work/r$r" --etcd-endpoints "$endpoints"
  cp_pids[r]=$CP_PID
  pids+=("$CP_PID")
  urls+="${urls:+,}$TRELLIS_SERVER"
done
export TRELLIS_SERVER=$urls
echo "control plane: three replicas, TRELLIS_SERVER=$urls"

"$bin" apply -f samples/blue-green.yaml
weights() { "$bin" get service checkout -o json | jq -c '[.spec.listeners[0].defaultAction.forward[] | {(.targetGroup): .weight}] | add'; }
echo "weights: $(weights)"

echo "SIGKILL: etcd member m1 and the first replica"
kill -9 "${ETCD_PIDS[1]}" "${cp_pids[0]}"
wait "${ETCD_PIDS[1]}" "${cp_pids[0]}" 2>/dev/null || true
sed 's/weight: 90/weight: 10/; t; s/weight: 10/weight: 90/' samples/blue-green.yaml >"$work/shifted.yaml"
"$bin" apply -f "$work/shifted.yaml"
echo "weights after the shift, through whichever replica answered: $(weights)"

etcd_member 1
pids+=("${ETCD_PIDS[1]}")
# The replica comes back on its address and loads the state from etcd.
first=${urls%%,*}
"$bin" control-plane --data-dir "$work/r0/cp" --listen "${first#https://}" \
  --etcd-endpoints "$endpoints" >"$work/r0/cp.out" 2>>"$work/r0/cp.log" &
pids+=($!)
until grep -q listening "$work/r0/cp.out" 2>/dev/null; do sleep 0.1; done
sleep 0.5
for r in 0 1 2; do
  url=$(sed -n 's/.*listening on //p' "$work/r$r/cp.out")
  echo "replica $r ($url): revision $(TRELLIS_SERVER=$url "$bin" get service checkout -o json | jq .status.revision), weights $(TRELLIS_SERVER=$url weights)"
done
