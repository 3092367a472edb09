#!/usr/bin/env bash
# Scale of the watch (issue 23): NODES simulated nodes (examples/watch_sim.rs:
# one process, each node its own TLS connection with a real node certificate
# doing the real watch) of a network seeing SERVICES services; one weight
# change applied with the CLI; per-node delivery time from `trellis apply`
# returning, bytes on the wire per node, and the control plane's CPU for the
# change. An unrelated `trellis apply` is timed while the watches are open.
# Targets: p99 < 1 s, < 10 KB per node, control-plane CPU < 1 s, the
# unrelated apply < 1 s.
# Usage: bash scripts/bench-watchers.sh [NODES] [SERVICES]
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${1:-1000}
n=${2:-10000}
source scripts/lib.sh
build_release
cargo build --release --locked -q --example watch_sim
sim=$PWD/target/release/examples/watch_sim

work=$(mktemp -d /tmp/trellis-bench-watch.XXXXXX)
pid=""
cleanup() { trap '' INT TERM; [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

services_yaml "$n" >"$work/big.yaml"
# The change: one service's weights, 90/10 -> 50/50.
python3 - "$work/big.yaml" >"$work/weight.yaml" <<'PY'
import sys
docs = open(sys.argv[1]).read().split("---\n")
s = next(d for d in docs if "kind: Service\n" in d and "name: s7}" in d)
print(s.replace("weight: 90", "weight: 50").replace("weight: 10", "weight: 50"), end="")
PY
printf 'apiVersion: trellis.dev/v1alpha1\nkind: Network\nmetadata: {name: unrelated}\nspec: {}\n' >"$work/unrelated.yaml"

start_control_plane "$work" --vip-pool-v4 169.254.128.0/17
pid=$CP_PID
"$bin" apply -f "$work/big.yaml" >/dev/null
mkdir -p "$work/sim"
"$sim" --control-plane "$TRELLIS_SERVER" --join-token "$("$bin" network join-token east)" \
  --network east --nodes "$nodes" --cp-pid "$pid" --dir "$work/sim" \
  --change "$bin apply -f $work/weight.yaml" --unrelated "$bin apply -f $work/unrelated.yaml" \
  | tee "$work/report.json"
echo "control plane peak RSS (VmHWM): $(awk '$1 == "VmHWM:" {print int($2/1024)}' /proc/$pid/status) MB" >&2
