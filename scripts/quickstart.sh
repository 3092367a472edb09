#!/usr/bin/env bash
# Trellis's main job on this machine, until `trellis demo` lands: start the
# control plane on an embedded store, apply the blue/green sample, show the
# services with their VIPs and DNS names, east's compiled snapshot, a weight
# shift with `diff` and `apply`, and a located error. Cleans up on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
build_release

data=$(mktemp -d /tmp/trellis-quickstart.XXXXXX)
CP_PID=""
cleanup() {
  [ -n "$CP_PID" ] && kill "$CP_PID" 2>/dev/null && wait "$CP_PID" 2>/dev/null
  rm -rf "$data"
}
trap cleanup EXIT INT TERM
start_control_plane "$data"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

echo "control plane at $TRELLIS_SERVER (data dir $data)"
step "$bin" apply -f samples/blue-green.yaml
step "$bin" get services
step "$bin" get targetgroups
printf '\n\033[1m$ curl %s/v1/networks/east/snapshot\033[0m\n' "$TRELLIS_SERVER"
curl -s "$TRELLIS_SERVER/v1/networks/east/snapshot" | jq -r '
  "network \(.network) at revision \(.revision):",
  (.services[] | "  \(.dnsNames[0]) -> \(.vip)  (" +
    ([.listeners[0].defaultAction.forward[] | "\(.targetGroup) \(.weight)"] | join(", ")) + ")")'

shifted="$data/blue-green-shifted.yaml"
sed 's/weight: 90/weight: 0/; s/weight: 10/weight: 100/' samples/blue-green.yaml >"$shifted"
step "$bin" diff -f "$shifted"
step "$bin" apply -f "$shifted"

bad="$data/bad.yaml"
sed 's/weight: 100/weight: 1000/' "$shifted" >"$bad"
printf '\n\033[1m$ %s apply -f %s   # a mistake: weight 1000\033[0m\n' "$bin" "$bad"
if "$bin" apply -f "$bad"; then echo "expected a rejection" >&2; exit 1; fi

printf '\nDone. Next: read docs/architecture.md and docs/yaml-reference.md.\n'
