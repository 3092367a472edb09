#!/usr/bin/env bash
# Proxy throughput with SIGV4 auth against the same proxy without it, in the
# same run (issue 6's target: at least 0.85). A sibling of
# ../shared/bench/http-proxy.sh with its setup (nginx backend "blue"/"green" on
# cpu1, wrk -t1 -c64 on cpu1, the proxy alone on cpu0, 90/10 split), but one
# Trellis node serving two services: `open` (no auth) and `signed` (SIGV4, a
# two-statement policy on the service, as benches/auth.rs). wrk sends the
# headers `curl --aws-sigv4` signed just before each run (valid for the 5 min
# clock skew), so every request is verified and evaluated in full. `workload`
# (issue 22) is SIGV4 too, with the same policy, called unsigned from a
# cgroup that identity `bench` selects: the caller is known without a
# signature.
# Usage: bash scripts/bench-proxy-auth.sh [--rounds N] [-d 5s] [--no-install]
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${BENCH_DIR:-$PWD/../shared/bench}
source "$BENCH_DIR/lib.sh"
source scripts/lib.sh
ROUNDS=3 DURATION=5s WARMUP=1s CONNS=64 INSTALL=1 HOLD=0
while (($#)); do
  case $1 in
    --rounds) ROUNDS=$2; shift 2;;
    -d) DURATION=$2; shift 2;;
    -c) CONNS=$2; shift 2;;
    --no-install) INSTALL=0; shift;;
    # Leave the setup up for profiling: print how to load it, wait for Ctrl-C.
    --hold) HOLD=1; shift;;
    *) die "unknown option: $1";;
  esac
done
((INSTALL)) || NO_INSTALL=1
ensure_pkgs nginx:nginx wrk:wrk curl:curl jq:jq taskset:util-linux
PROXY_CPU=${PROXY_CPU:-0} LOAD_CPU=${LOAD_CPU:-1}
BLUE_PORT=${BLUE_PORT:-18081} GREEN_PORT=${GREEN_PORT:-18082} ADMIN_PORT=${ADMIN_PORT:-15090}
require_free_tcp "$BLUE_PORT" "$GREEN_PORT" "$ADMIN_PORT"
bench_setup auth
# The cgroup v2 hierarchy the node redirects (its default: the unified root,
# wherever it is mounted; /sys/fs/cgroup/unified on a hybrid host).
CG2=$(findmnt -rn -t cgroup2 -o TARGET | head -1)
if [ -z "$CG2" ]; then
  CG2=/run/trellis/cgroup2
  mkdir -p "$CG2" && mount -t cgroup2 none "$CG2"
fi
WL_CG=$CG2/trellis-bench-wl-$$
mkdir "$WL_CG"
trap 'bench_cleanup; rmdir "$WL_CG" 2>/dev/null; true' EXIT

split_backends

start_control_plane "$WORK"
service() { # name authType extra-spec
  cat <<YAML
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: $1}
spec:
  serviceNetworks: [bench]
  authType: $2
$3
  listeners:
    - name: web
      protocol: HTTP
      defaultAction:
        forward: [{targetGroup: blue, weight: 90}, {targetGroup: green, weight: 10}]
YAML
}
{
  split_yaml "127.0.0.1:$BLUE_PORT" "127.0.0.1:$GREEN_PORT"
  cat <<YAML
---
apiVersion: trellis.dev/v1alpha1
kind: Identity
metadata: {name: bench}
spec:
  workloads: [{network: bench, cgroup: /${WL_CG#"$CG2"/}}]
YAML
  service open NONE ""
  for name in signed workload; do
  service "$name" SIGV4 '  authPolicy:
    Version: "2012-10-17"
    Statement:
      - Sid: bench-reads
        Effect: Allow
        Principal: {AWS: "trellis:identity/bench"}
        Action: "vpc-lattice-svcs:Invoke"
        Resource: "*"
        Condition:
          StringEquals: {"vpc-lattice-svcs:RequestMethod": [GET, POST]}
          StringNotEqualsIgnoreCase: {"aws:PrincipalType": anonymous}
      - Sid: no-admin
        Effect: Deny
        Principal: "*"
        Action: "*"
        Resource: "trellis:service/signed/admin*"'
  done
} >"$WORK/bench.yaml"
"$bin" apply -f "$WORK/bench.yaml" >/dev/null
creds=$("$bin" identity add-key bench -o json)
key=$(jq -r .AccessKeyId <<<"$creds") secret=$(jq -r .SecretAccessKey <<<"$creds")
vip() { "$bin" get service "$1" -o json | jq -r .status.vip; }
OPEN_URL="http://$(vip open)/" SIGNED_URL="http://$(vip signed)/" WORKLOAD_URL="http://$(vip workload)/"

start_bg node "$WORK/node.log" $(pin "$PROXY_CPU") "$bin" --log warn --worker-threads 1 node \
  --network bench --data-dir "$WORK/node" --bpf-pin-dir "$pins" --datapath ebpf \
  --admin-listen "127.0.0.1:$ADMIN_PORT" --access-log off --drain-seconds 1 \
  --join-token "$("$bin" network join-token bench)"
for _ in $(seq 100); do
  [ "$(curl -s -m 1 -o /dev/null -w '%{http_code}' "$OPEN_URL")" = 200 ] && break
  sleep 0.1
done

# The headers curl signs for a GET of SIGNED_URL, as wrk -H arguments.
signed_headers() {
  SIG_ARGS=()
  local line
  while IFS= read -r line; do
    SIG_ARGS+=(-H "$line")
  done < <(curl -sv -m 2 -o /dev/null --aws-sigv4 "aws:amz:us-east-1:vpc-lattice-svcs" \
    --user "$key:$secret" "$SIGNED_URL" 2>&1 | tr -d '\r' |
    sed -n 's/^> \(Authorization: .*\|[Xx]-[Aa]mz-[A-Za-z0-9-]*: .*\)$/\1/p')
  ((${#SIG_ARGS[@]} >= 4)) || die "curl did not sign a request"
  local code
  code=$(curl -s -m 2 -o /dev/null -w '%{http_code}' "${SIG_ARGS[@]}" "$SIGNED_URL")
  [ "$code" = 200 ] || die "signed request answered $code"
  code=$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$SIGNED_URL")
  [ "$code" = 403 ] || die "unsigned request answered $code, not 403"
}

allowed() { # requests the signed service allowed so far
  curl -s -m 2 "http://127.0.0.1:$ADMIN_PORT/metrics" |
    awk '/^trellis_proxy_auth_decisions_total.*service="signed".*outcome="allow"/{n+=$2} END{print n+0}'
}

run() { # name url [headers...]
  WRK_CGROUP=$WL_CG wrk_round "$1" "$PID_node" "$2" "${@:3}"
}

declare -A RPS P50 P99 ERR CPU
if ((HOLD)); then
  signed_headers
  log "node pid $PID_node; open: $OPEN_URL; signed: $SIGNED_URL with headers (valid 5 min):"
  printf ' %q' "${SIG_ARGS[@]}" >&2
  echo >&2
  sleep infinity &
  wait $!
fi
allowed0=$(allowed)
for ((round = 1; round <= ROUNDS; round++)); do
  signed_headers
  # Alternate the order so neither side always runs on a warmer machine.
  if ((round % 2)); then
    run open "$OPEN_URL"; run open+sig "$OPEN_URL" "${SIG_ARGS[@]}"; run signed "$SIGNED_URL" "${SIG_ARGS[@]}"
    run workload "$WORKLOAD_URL"
  else
    run workload "$WORKLOAD_URL"
    run signed "$SIGNED_URL" "${SIG_ARGS[@]}"; run open+sig "$OPEN_URL" "${SIG_ARGS[@]}"; run open "$OPEN_URL"
  fi
done

echo
echo "proxy-auth: wrk -t1 -c$CONNS -d$DURATION, rounds=$ROUNDS (median), node on cpu$PROXY_CPU"
printf '%-9s %10s %8s %8s %7s %9s\n' service req/s p50_us p99_us errors node_cpu%
for s in open open+sig signed workload; do
  printf '%-9s %10s %8s %8s %7s %9s\n' "$s" "$(fmt0 "$(median ${RPS[$s]})")" \
    "$(fmt0 "$(median ${P50[$s]})")" "$(fmt0 "$(median ${P99[$s]})")" "${ERR[$s]}" "$(median ${CPU[$s]})"
done
echo "signed requests verified and allowed during the runs (warm-ups included): $(($(allowed) - allowed0))"
echo "SUMMARY proxy-auth: signed/open=$(ratio "$(median ${RPS[signed]})" "$(median ${RPS[open]})") workload/open=$(ratio "$(median ${RPS[workload]})" "$(median ${RPS[open]})") errors open=${ERR[open]} signed=${ERR[signed]} workload=${ERR[workload]}"
