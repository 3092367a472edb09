#!/usr/bin/env bash
# Idle RSS of `trellis node` with N services (default 1,000) in its snapshot,
# each with an HTTP listener, a rule and a target group of two targets. The
# datapath is attached to an empty cgroup of its own, so nothing on the host is
# redirected; everything is removed on exit.
# Usage: bash scripts/bench-node-memory.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
n=${1:-1000}
build_release
work=$(mktemp -d /tmp/trellis-node-mem.XXXXXX)
cg=/run/trellis/cgroup2/trellis-mem-$$
pins=/sys/fs/bpf/trellis-mem-$$
node_pid=
mounted=
cleanup() {
  trap '' INT TERM # a second Ctrl-C must not cut the cleanup short
  [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null || true
  "$bin" node --network mem --cleanup --bpf-pin-dir "$pins" >/dev/null 2>&1 || true
  rmdir "$cg" 2>/dev/null || true
  # Only a mount this script made, and not while another run uses it.
  if [ -n "$mounted" ] && ! compgen -G "$(dirname "$cg")/trellis-mem-*" >/dev/null; then
    umount "$(dirname "$cg")" 2>/dev/null || true
  fi
  kill "${CP_PID:-}" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' INT TERM
start_control_plane "$work" --vip-pool-v4 10.96.0.0/16
{
  printf 'apiVersion: trellis.dev/v1alpha1\nkind: Network\nmetadata: {name: mem}\nspec: {}\n---\n'
  printf 'apiVersion: trellis.dev/v1alpha1\nkind: ServiceNetwork\nmetadata: {name: mem}\nspec: {networks: [mem]}\n'
  for i in $(seq "$n"); do
    printf -- '---\napiVersion: trellis.dev/v1alpha1\nkind: TargetGroup\nmetadata: {name: tg-%d}\nspec: {network: mem, healthCheck: {enabled: false}, targets: [{address: 10.1.%d.%d, port: 8080}, {address: 10.2.%d.%d, port: 8080}]}\n' \
      "$i" $((i / 250)) $((i % 250 + 1)) $((i / 250)) $((i % 250 + 1))
    printf -- '---\napiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {name: svc-%d}\nspec: {serviceNetworks: [mem], listeners: [{name: web, protocol: HTTP, defaultAction: {forward: [{targetGroup: tg-%d}]}, rules: [{name: api, priority: 1, match: {path: {prefix: /api}}, action: {fixedResponse: {statusCode: 404}}}]}]}\n' "$i" "$i"
  done
} >"$work/services.yaml"
"$bin" apply -f "$work/services.yaml" >/dev/null
mkdir -p "$(dirname "$cg")"
if [ "$(stat -fc %T "$(dirname "$cg")")" != cgroup2fs ]; then
  mount -t cgroup2 none "$(dirname "$cg")"
  mounted=1
fi
mkdir -p "$cg"
"$bin" --log warn --worker-threads 1 node --network mem --data-dir "$work/node" --cgroup "$cg" \
  --bpf-pin-dir "$pins" --datapath ebpf --admin-listen 127.0.0.1:0 --access-log off \
  --proxy-listen 127.0.0.1:15091 --join-token "$("$bin" network join-token mem)" >"$work/node.out" &
node_pid=$!
for _ in $(seq 200); do grep -q "admin listening" "$work/node.out" 2>/dev/null && break; sleep 0.1; done
admin=$(sed -n 's/.*admin listening on //p' "$work/node.out")
for _ in $(seq 200); do curl -sf "http://$admin/ready" >/dev/null && break; sleep 0.1; done
listeners=$(curl -s -H "authorization: Bearer $(cat "$work/node/admin-token")" "http://$admin/config" | jq '.snapshot.services | length')
sleep 7
[ -n "${KEEP_SECONDS:-}" ] && { echo "pid=$node_pid"; sleep "$KEEP_SECONDS"; }
rss=$(awk '/VmRSS/ {print $2}' "/proc/$node_pid/status")
echo "services=$listeners idle_rss_kb=$rss"
