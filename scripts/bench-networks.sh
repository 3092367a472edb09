#!/usr/bin/env bash
# What one change costs the control plane when many networks are watched
# (issue 23, incremental compilation): NETS networks, each with its own
# service network and SERVICES services forwarding 90/10 to two target groups
# of its own; one `trellis dns` follows every network (one real watch each).
# Then three changes, the control plane's CPU for each (from /proc, over the
# change and the 2 s after it) and the views it compiled (from its log):
#   - one service's weights in the first network: reaches that network only;
#   - a new service in the first network: the same;
#   - a new identity: reaches every network, as every change did before
#     views were carried forward.
# Usage: bash scripts/bench-networks.sh [NETS] [SERVICES]
set -euo pipefail
cd "$(dirname "$0")/.."
nets=${1:-20}
n=${2:-1000}
source scripts/lib.sh
build_release
work=$(mktemp -d /tmp/trellis-bench-nets.XXXXXX)
pids=()
cleanup() { trap '' INT TERM; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

python3 - "$nets" "$n" >"$work/all.yaml" <<'PY'
import sys
nets, n = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout
def doc(kind, name, spec):
    out.write(f"---\napiVersion: trellis.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec: {spec}\n")
for k in range(nets):
    doc("Network", f"n{k}", "{}")
    doc("ServiceNetwork", f"sn{k}", f"{{networks: [n{k}]}}")
    for i in range(n):
        for c in ("blue", "green"):
            doc("TargetGroup", f"n{k}-s{i}-{c}",
                f"{{network: n{k}, port: 8080, targets: [{{address: 10.{k}.{i // 250}.{i % 250}}}]}}")
        doc("Service", f"n{k}-s{i}",
            f"{{serviceNetworks: [sn{k}], listeners: [{{name: web, protocol: HTTP, defaultAction: "
            f"{{forward: [{{targetGroup: n{k}-s{i}-blue, weight: 90}}, {{targetGroup: n{k}-s{i}-green, weight: 10}}]}}}}]}}")
PY
python3 - "$work/all.yaml" >"$work/weight.yaml" <<'PY'
import sys
docs = open(sys.argv[1]).read().split("---\n")
s = next(d for d in docs if "kind: Service\n" in d and "name: n0-s7}" in d)
print(s.replace("weight: 90", "weight: 50").replace("weight: 10", "weight: 50"), end="")
PY
cat >"$work/added.yaml" <<'YAML'
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: n0-added}
spec: {serviceNetworks: [sn0]}
YAML
cat >"$work/identity.yaml" <<'YAML'
apiVersion: trellis.dev/v1alpha1
kind: Identity
metadata: {name: bench-added}
spec: {}
YAML

start_control_plane "$work" --vip-pool-v4 169.254.0.0/16
pids+=("$CP_PID")
"$bin" apply -f "$work/all.yaml" >/dev/null
dns_args=()
for k in $(seq 0 $((nets - 1))); do
  dns_args+=(--source "10.$k.0.0/16=n$k" --join-token "n$k=$("$bin" network join-token "n$k" --role dns)")
done
"$bin" --log warn dns --listen 127.0.0.1:0 --data-dir "$work/dns" "${dns_args[@]}" >"$work/dns.out" 2>"$work/dns.log" &
pids+=($!)
# Every network's view compiled once for the DNS server's first watch.
for _ in $(seq 600); do
  [ "$(grep -c "view compiled" "$work/cp.log" || true)" -ge "$nets" ] && break
  sleep 0.1
done
sleep 2
cpu() { awk '{print $14 + $15}' "/proc/$CP_PID/stat"; }
tick=$(getconf CLK_TCK)
printf '%s networks x %s services, one DNS server watching every network\n' "$nets" "$n"
measure() {
  local what=$1 file=$2
  local compiled0 c0 c1
  compiled0=$(grep -c "view compiled" "$work/cp.log" || true)
  c0=$(cpu)
  "$bin" apply -f "$file" >/dev/null
  sleep 2
  c1=$(cpu)
  local compiled=$(( $(grep -c "view compiled" "$work/cp.log" || true) - compiled0 ))
  local ms
  ms=$(grep "view compiled" "$work/cp.log" | tail -n "$compiled" | sed -n 's/.*elapsed_ms=\([0-9.]*\).*/\1/p' | awk '{s += $1} END {printf "%.0f", s}')
  printf '%-44s control-plane CPU %4d ms, %3d views compiled (%s ms), %3d carried\n' \
    "$what" $(( (c1 - c0) * 1000 / tick )) "$compiled" "$ms" $(( nets - compiled ))
}
measure "one weight in n0" "$work/weight.yaml"
measure "a service added to n0" "$work/added.yaml"
measure "an identity (reaches every network)" "$work/identity.yaml"
