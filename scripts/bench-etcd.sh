#!/usr/bin/env bash
# The control plane on etcd against the embedded store, in the same run
# (issue 24): apply latency (p50/p99 of one-service weight changes, through
# the API), watch propagation (from sending the change until a node-style
# watcher holds it; on etcd the watcher asks a second replica, so the time
# includes one replica following the other's commit), and a 10,000-service
# apply with the real CLI, plus how long until the second replica serves it.
# etcd: three members on loopback (Debian's etcd-server), --max-txn-ops and
# --max-request-bytes raised so the big apply fits in one transaction.
# Usage: bash scripts/bench-etcd.sh [SERVICES] [CHANGES]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
changes=${2:-200}
source scripts/lib.sh
build_release
cargo build --release --locked -q --example apply_latency
latency=$PWD/target/release/examples/apply_latency

work=$(mktemp -d /tmp/trellis-bench-etcd.XXXXXX)
pids=()
cleanup() {
  trap '' INT TERM # a second Ctrl-C must not cut the cleanup short
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

etcd_cluster "$work" --max-txn-ops 100000 --max-request-bytes 67108864
pids+=("${ETCD_PIDS[@]}")
endpoints=$ETCD_ENDPOINTS
etcd_flags=(--etcd-endpoints "$endpoints" --etcd-max-txn-ops 100000 --etcd-max-request-bytes 67108864)
services_yaml "$n" >"$work/big.yaml"
echo "etcd $(etcd --version | head -1 | awk '{print $3}'), 3 members; $(grep -c '^kind:' "$work/big.yaml") documents for the big apply" >&2

ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }
# services DIR: how many services the control plane whose files are in DIR
# serves in east's snapshot.
services() {
  curl -s --cacert "$1/ca.pem" -H "authorization: Bearer $(cat "$1/api-token")" \
    "$2/v1/networks/east/snapshot" | jq '.services | length'
}

# run NAME APPLY_DIR WATCH_DIR: the latency run, then the big apply on
# APPLY_DIR's control plane, timed until WATCH_DIR's serves it.
run() {
  local name=$1 a=$2 w=$3 a_url w_url
  a_url=$(sed -n 's/.*listening on //p' "$a/cp.out")
  w_url=$(sed -n 's/.*listening on //p' "$w/cp.out")
  "$latency" --apply "$a_url" --watch "$w_url" --ca-file "$a/cp/ca.pem" \
    --token-file "$a/cp/api-token" --changes "$changes" >"$work/$name.json"
  local t0
  t0=$(date +%s%N)
  TRELLIS_SERVER=$a_url TRELLIS_CA_FILE=$a/cp/ca.pem TRELLIS_TOKEN_FILE=$a/cp/api-token \
    "$bin" apply -f "$work/big.yaml" >/dev/null
  local applied
  applied=$(ms_since "$t0")
  until [ "$(services "$w/cp" "$w_url")" -gt "$n" ]; do sleep 0.05; done
  local served
  served=$(ms_since "$t0")
  jq -r --arg name "$name" --arg applied "$applied" --arg served "$served" \
    '[$name, .apply.p50_ms, .apply.p99_ms, .watch_propagation.p50_ms, .watch_propagation.p99_ms, $applied, $served] | @tsv' \
    "$work/$name.json"
}

mkdir -p "$work/emb" "$work/a" "$work/b/cp"
start_control_plane "$work/emb" --vip-pool-v4 169.254.128.0/17
pids+=("$CP_PID")
emb=$(run embedded "$work/emb" "$work/emb")

start_control_plane "$work/a" --vip-pool-v4 169.254.128.0/17 "${etcd_flags[@]}"
pids+=("$CP_PID")
cp "$work/a/cp/secrets.key" "$work/b/cp/secrets.key"
start_control_plane "$work/b" --vip-pool-v4 169.254.128.0/17 "${etcd_flags[@]}"
pids+=("$CP_PID")
etc=$(run etcd "$work/a" "$work/b")

printf '%-9s %14s %14s %16s %16s %16s %18s\n' store "apply p50 ms" "apply p99 ms" "watch p50 ms" "watch p99 ms" "${n}-svc apply ms" "served by watched ms"
for row in "$emb" "$etc"; do
  IFS=$'\t' read -r name a50 a99 w50 w99 big served <<<"$row"
  printf '%-9s %14s %14s %16s %16s %16s %18s\n' "$name" "$a50" "$a99" "$w50" "$w99" "$big" "$served"
done
echo "($changes changes; on etcd the apply goes to one replica and the watcher asks the other)"
