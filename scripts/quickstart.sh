#!/usr/bin/env bash
# Trellis's main job on this machine, until `trellis demo` lands: start the
# control plane on an embedded store, apply the blue/green sample, show the
# services with their VIPs and DNS names, east's compiled snapshot, a weight
# shift with `diff` and `apply`, and a located error. Then real traffic (as
# root): two local backends, `trellis node` with the eBPF datapath and the
# node-local DNS, a name resolved, 100 requests split 90/10 through the VIP, a
# shift to 0/100. Cleans up on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
build_release

data=$(mktemp -d /tmp/trellis-quickstart.XXXXXX)
CP_PID="" NODE_PID="" BACKENDS=()
pins=/sys/fs/bpf/trellis-quickstart-$$
cleanup() {
  [ -n "$NODE_PID" ] && kill "$NODE_PID" 2>/dev/null && wait "$NODE_PID" 2>/dev/null
  [ -n "$NODE_PID" ] && "$bin" node --network local --cleanup --bpf-pin-dir "$pins" >/dev/null 2>&1
  for p in "${BACKENDS[@]}"; do kill "$p" 2>/dev/null; done
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

if [ "$(id -u)" != 0 ]; then
  printf '\nNot root: skipping the part with real traffic (eBPF needs root).\n'
  exit 0
fi

# Real traffic: a service "hello" in network "local", blue and green
# backends on this machine, split 90/10.
for colour in blue green; do
  mkdir -p "$data/www-$colour" && echo "$colour" >"$data/www-$colour/index.html"
done
python3 -m http.server 18091 --bind 127.0.0.1 --directory "$data/www-blue" >/dev/null 2>&1 &
BACKENDS+=($!)
python3 -m http.server 18092 --bind 127.0.0.1 --directory "$data/www-green" >/dev/null 2>&1 &
BACKENDS+=($!)
for port in 18091 18092; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
done
hello() {
  cat <<YAML
apiVersion: trellis.dev/v1alpha1
kind: Network
metadata: {name: local}
spec: {}
---
apiVersion: trellis.dev/v1alpha1
kind: ServiceNetwork
metadata: {name: local-apps}
spec: {networks: [local]}
---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: hello-blue}
spec: {network: local, healthCheck: {intervalSeconds: 2, timeoutSeconds: 1}, targets: [{address: 127.0.0.1, port: 18091}]}
---
apiVersion: trellis.dev/v1alpha1
kind: TargetGroup
metadata: {name: hello-green}
spec: {network: local, healthCheck: {intervalSeconds: 2, timeoutSeconds: 1}, targets: [{address: 127.0.0.1, port: 18092}]}
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: hello}
spec:
  serviceNetworks: [local-apps]
  listeners:
    - name: web
      protocol: HTTP
      defaultAction:
        forward: [{targetGroup: hello-blue, weight: $1}, {targetGroup: hello-green, weight: $2}]
YAML
}
hello 90 10 >"$data/hello.yaml"
step "$bin" apply -f "$data/hello.yaml"
printf '\n\033[1m$ %s node --network local --datapath ebpf --dns-listen 127.0.0.1:15353 ... &\033[0m\n' "$bin"
"$bin" --log warn node --network local --data-dir "$data/node" --bpf-pin-dir "$pins" --datapath ebpf \
  --dns-listen 127.0.0.1:15353 --admin-listen 127.0.0.1:0 --access-log "$data/access.log" >"$data/node.out" &
NODE_PID=$!
for _ in $(seq 100); do grep -q "admin listening" "$data/node.out" 2>/dev/null && break; sleep 0.1; done
admin=$(sed -n 's/.*admin listening on //p' "$data/node.out")
for _ in $(seq 100); do curl -sf "http://$admin/ready" >/dev/null && break; sleep 0.1; done
step dig @127.0.0.1 -p 15353 +short hello.trellis.internal
vip=$(dig @127.0.0.1 -p 15353 +short hello.trellis.internal A)
count() {
  printf '\n\033[1m$ for i in $(seq 100); do curl -s http://%s/; done | sort | uniq -c\033[0m\n' "$vip"
  for _ in $(seq 100); do curl -s -m 2 "http://$vip/"; done | sort | uniq -c
}
count
hello 0 100 >"$data/hello.yaml"
step "$bin" apply -f "$data/hello.yaml"
sleep 0.5
count
printf '\n\033[1mThe last access log line:\033[0m\n'
sleep 0.3
tail -1 "$data/access.log" | jq -c '{service, target_group, target, status, duration_ms}'

printf '\nDone. Next: read docs/architecture.md, docs/routing.md and docs/yaml-reference.md.\n'
