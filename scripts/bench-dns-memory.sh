#!/usr/bin/env bash
# Memory of `trellis dns` with many names: N services (default 50,000), each
# with a custom domain name, so the server holds 2N names and N+1 zones.
# Prints the DNS server's RSS once every name resolves, then makes five
# updates (a service added, with its custom domain) and prints, for each, the
# time from `trellis apply` returning to the new name answering (UDP, polled
# every 2 ms) and the RSS after it.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50000}
source scripts/lib.sh
build_release
work=$(mktemp -d /tmp/trellis-dns-mem.XXXXXX)
pids=()
cleanup() { trap '' INT TERM; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

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
"$bin" --log info --worker-threads 1 dns --listen 127.0.0.1:0 --network bench --data-dir "$work/dns" \
  --join-token "$("$bin" network join-token bench --role dns)" >"$work/dns.out" 2>"$work/dns.log" &
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
sleep 1
printf '%-40s %s MB (peak %s MB)\n' "trellis dns RSS" "$(rss VmRSS)" "$(rss VmHWM)"
for k in 1 2 3 4 5; do
  cat >"$work/extra.yaml" <<EOF
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: extra-$k}
spec: {serviceNetworks: [bench], customDomainName: extra-$k.example.com}
EOF
  ms=$(python3 - "$bin" "$work/extra.yaml" "$port" "extra-$k.example.com" <<'PY'
import socket, struct, subprocess, sys, time
binary, manifest, port, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
query = struct.pack(">HHHHHH", 0x7472, 0x0100, 1, 0, 0, 0)
query += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0\0\1\0\1"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.05)
subprocess.run([binary, "apply", "-f", manifest], check=True, stdout=subprocess.DEVNULL)
t0 = time.monotonic()
while time.monotonic() - t0 < 30:
    s.sendto(query, ("127.0.0.1", port))
    try:
        answer = s.recv(1500)
    except socket.timeout:
        continue
    # NOERROR with an answer: the name is in the view.
    if answer[3] & 0xF == 0 and struct.unpack(">H", answer[6:8])[0] > 0:
        print(round((time.monotonic() - t0) * 1000, 1))
        sys.exit(0)
    time.sleep(0.002)
sys.exit("the new name never answered")
PY
)
  sleep 0.5
  # Where the time went, from the server's log: the delta applied (and its
  # digest checked) and the view built.
  took() { grep "$1" "$work/dns.log" | tail -1 | sed -n 's/.*elapsed_ms=\([0-9]*\).*/\1/p'; }
  printf '%-40s %s ms to answer (delta %s ms, view %s ms), RSS %s MB (peak %s MB)\n' \
    "update $k (service added)" "$ms" "$(took "delta applied")" "$(took "view built")" "$(rss VmRSS)" "$(rss VmHWM)"
done
