#!/usr/bin/env bash
# Candidate for ../shared/bench/http-proxy.sh: the real path. Starts a control
# plane, applies a service whose default action splits BENCH_WEIGHTS between
# target groups on BENCH_BLUE and BENCH_GREEN, and runs `trellis node` with the
# eBPF datapath on the unified cgroup root, so wrk's connections to the VIP
# (169.254.171.1:80, the first VIP of the pool) are redirected to the proxy on
# 127.0.0.1:15001 at connect() time. One runtime worker thread, as nginx has
# one worker. On TERM the datapath is detached and unpinned.
# Env: TRELLIS_ACCESS_LOG (default off, as the nginx peer has access_log off),
# TRELLIS_FLOWS (default true: flow records for `trellis observe`, as shipped),
# TRELLIS_OBSERVERS (default 0: that many `trellis observe --follow` attached
# for the whole run, the first of them stopped (SIGSTOP) once it has begun,
# as a reader that never reads), TRELLIS_RULES (default 0: that many rules,
# regexes among them, before the default action; every request misses all
# of them, the most matching a request can cost).
set -euo pipefail
bin=${TRELLIS_BIN:-$(dirname "$0")/../target/release/trellis}
work=$(mktemp -d /tmp/trellis-proxy-bench.XXXXXX)
pins=/sys/fs/bpf/trellis-bench-$$
node_pid=
observers=()
# The harness SIGKILLs what is left 3 s after its TERM: the datapath is
# detached and the work directory removed first, while the node drains, so
# nothing stays attached to the cgroup root redirecting the VIP to a dead
# port, and no directory (with its CA key and token) is left behind.
cleanup() {
  trap '' INT TERM # a second Ctrl-C must not cut the cleanup short
  for p in "${observers[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  # Under `set -e`: every step may fail (its process already gone) and
  # must not end the cleanup.
  [ -z "$node_pid" ] || kill -TERM "$node_pid" 2>/dev/null || true
  "$bin" node --network bench --cleanup --bpf-pin-dir "$pins" >/dev/null 2>&1 || true
  kill "${CP_PID:-}" 2>/dev/null || true
  rm -rf "$work"
  [ -z "$node_pid" ] || wait "$node_pid" 2>/dev/null || true
}
trap cleanup EXIT
# What an earlier run could not remove (it was SIGKILLed): its pins still
# redirect the VIP, to a proxy that is gone.
for old in /sys/fs/bpf/trellis-bench-*; do
  [ -e "$old" ] || continue
  kill -0 "${old##*-}" 2>/dev/null && continue
  "$bin" node --network bench --cleanup --bpf-pin-dir "$old" >/dev/null 2>&1 || true
done
trap 'exit 0' TERM INT
source "$(dirname "$0")/lib.sh"
start_control_plane "$work"
weights=${BENCH_WEIGHTS:-90/10}
{
  split_yaml "$BENCH_BLUE" "$BENCH_GREEN"
  split_service "$weights" "${TRELLIS_RULES:-0}"
} >"$work/bench.yaml"
"$bin" apply -f "$work/bench.yaml" >/dev/null
"$bin" --log warn --worker-threads 1 node --network bench --data-dir "$work/node" \
  --bpf-pin-dir "$pins" --datapath ebpf --admin-listen 127.0.0.1:0 \
  --access-log "${TRELLIS_ACCESS_LOG:-off}" --flows "${TRELLIS_FLOWS:-true}" --drain-seconds 1 \
  --join-token "$("$bin" network join-token bench)" &
node_pid=$!
for i in $(seq 1 "${TRELLIS_OBSERVERS:-0}"); do
  "$bin" observe --follow -o json --last 0 >/dev/null 2>&1 &
  observers+=($!)
done
if [ ${#observers[@]} -gt 0 ]; then
  sleep 0.5
  kill -STOP "${observers[0]}"
fi
wait "$node_pid"
