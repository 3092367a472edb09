#!/usr/bin/env bash
# Checks docs/grafana/trellis.json against a real Prometheus (Debian's
# `prometheus`, installed if missing) scraping the node of `trellis demo
# --keep-running` while traffic flows: every panel's query must be valid and
# answer, and the measured split Prometheus computes is printed beside the
# console's (/v1/traffic) for the same rule. Root (the demo's datapath).
# Everything it starts is stopped and removed on exit (Ctrl-C included).
# Usage: bash scripts/check-dashboard.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
build_release
command -v prometheus >/dev/null 2>&1 || {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null
}

work=$(mktemp -d /tmp/trellis-dashboard.XXXXXX)
pids=()
cleanup() {
  trap '' INT TERM # a second Ctrl-C must not cut the cleanup short
  # The demo stops what it started on TERM; Prometheus just stops.
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$bin" --log warn demo --keep-running > "$work/demo.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 240); do
  grep -q "Everything stays up" "$work/demo.out" && break
  sleep 0.5
done
grep -q "Everything stays up" "$work/demo.out" || { cat "$work/demo.out"; echo "the demo did not come up" >&2; exit 1; }
server=$(sed -n 's/.*export TRELLIS_SERVER=//p' "$work/demo.out")
token_file=$(sed -n 's/.*export TRELLIS_TOKEN_FILE=//p' "$work/demo.out")
ca_file=$(sed -n 's/.*export TRELLIS_CA_FILE=//p' "$work/demo.out")
metrics=$(sed -n 's|.*curl http://\(127.0.0.1:[0-9]*\)/metrics.*|\1|p' "$work/demo.out")
hello=$(sed -n 's|.*curl http://\(169\.[0-9.]*\)/ .*|\1|p' "$work/demo.out")
export TRELLIS_SERVER=$server TRELLIS_TOKEN_FILE=$token_file TRELLIS_CA_FILE=$ca_file
orders=$("$bin" get svc orders -o json | jq -r .status.vip)
echo "demo: control plane $server, node metrics $metrics, hello at $hello"

prom_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/prometheus.yml" <<EOF
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: trellis-node
    static_configs:
      - targets: ["$metrics"]
        labels: {network: local}
EOF
prometheus --config.file "$work/prometheus.yml" --storage.tsdb.path "$work/tsdb" \
  --web.listen-address "127.0.0.1:$prom_port" > "$work/prometheus.log" 2>&1 &
pids+=($!)

# Traffic for 40 s: hello's split, and one refused call a second.
python3 - "$hello" 40 <<'EOF' &
import http.client, sys, time
host, secs = sys.argv[1], float(sys.argv[2])
end = time.time() + secs
c = http.client.HTTPConnection(host, 80, timeout=5)
while time.time() < end:
    c.request("GET", "/"); c.getresponse().read()
    time.sleep(0.004)
EOF
pids+=($!)
for _ in $(seq 1 40); do
  curl -s -m 2 -o /dev/null "http://$orders/orders/1" || true
  sleep 1
done

query() {
  curl -s -G "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$1"
}
failed=0
while IFS= read -r expr; do
  expr=${expr//\$service/.*}
  answer=$(query "$expr")
  status=$(jq -r .status <<<"$answer")
  n=$(jq -r '.data.result | length' <<<"$answer" 2>/dev/null || echo 0)
  if [ "$status" != success ] || [ "$n" = 0 ]; then
    echo "FAIL ($status, $n series): $expr"
    jq -c .error <<<"$answer" 2>/dev/null || true
    failed=1
  else
    echo "ok   ($n series): ${expr:0:110}"
  fi
done < <(jq -r '.panels[].targets[].expr' docs/grafana/trellis.json)

echo
echo "hello's default rule, share of each target group:"
echo "  Prometheus (last minute):"
query "$(jq -r '.panels[] | select(.id == 4) | .targets[0].expr' docs/grafana/trellis.json | sed 's/\$service/hello/g')" |
  jq -r '.data.result[] | select(.metric.rule == "default") | "    \(.metric.target_group) \(.value[1] | tonumber * 1000 | round / 10)%"'
echo "  console (/v1/traffic, since the latest change):"
curl -s --cacert "$ca_file" -H "authorization: Bearer $(cat "$token_file")" "$server/v1/traffic" |
  jq -r '.services[] | select(.service == "hello") | .splits[] | select(.rule == "default") | .groups as $g | ($g | add) as $t | $g | to_entries[] | "    \(.key) \(.value * 1000 / $t | round / 10)%"'
exit $failed
