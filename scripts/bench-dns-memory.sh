#!/usr/bin/env bash
# Memory of `trellis dns` with many names: N services (default 50,000), each
# with a custom domain name, so the server holds 2N names and N+1 zones.
# Prints the DNS server's RSS once every name resolves.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50000}
source scripts/lib.sh
build_release
work=$(mktemp -d /tmp/trellis-dns-mem.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT INT TERM

start_control_plane "$work" --vip-pool-v4 169.254.0.0/16
pids+=("$CP_PID")
python3 - "$n" >"$work/services.yaml" <<'PY'
import sys
n = int(sys.argv[1])
print("apiVersion: trellis.dev/v1alpha1\nkind: Network\nmetadata: {name: bench}\nspec: {}\n---")
print("apiVersion: trellis.dev/v1alpha1\nkind: ServiceNetwork\nmetadata: {name: bench}\nspec: {networks: [bench]}")
for i in range(1, n + 1):
    print(f"---\napiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {{name: svc-{i}}}\n"
          f"spec: {{serviceNetworks: [bench], customDomainName: svc-{i}.example.com}}")
PY
"$bin" apply -f "$work/services.yaml" >/dev/null
"$bin" --log warn --worker-threads 1 dns --listen 127.0.0.1:0 --network bench --data-dir "$work/dns" \
  --join-token "$("$bin" network join-token bench --role dns)" >"$work/dns.out" &
pids+=($!)
dns_pid=$!
for _ in $(seq 100); do grep -q listening "$work/dns.out" 2>/dev/null && break; sleep 0.1; done
port=$(sed -n 's/.*127.0.0.1://p' "$work/dns.out")
t0=$(date +%s%N)
until dig @127.0.0.1 -p "$port" +short "svc-$n.example.com" A | grep -q .; do sleep 0.1; done
load_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
rss() { awk -v k="$1:" '$1 == k {print int($2/1024)}' /proc/$dns_pid/status; }
printf '%-40s %s\n' "names (service + custom domain)" "$((2 * n))"
printf '%-40s %s ms\n' "first snapshot to all names resolving" "$load_ms"
printf '%-40s %s MB (peak %s MB)\n' "trellis dns RSS" "$(rss VmRSS)" "$(rss VmHWM)"
