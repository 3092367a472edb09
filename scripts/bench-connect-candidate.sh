#!/usr/bin/env bash
# Candidate for ../shared/bench/connect-redirect.sh (--candidate-attach): attaches
# Trellis's eBPF datapath to $BENCH_CGROUP with $BENCH_VIP -> $BENCH_BACKEND and
# $BENCH_NVIPS - 1 more VIPs in its map, then waits until the harness stops it.
# On TERM, INT or any exit it detaches and unpins everything it made (the
# harness removes the cgroup, which detaches but leaves pins), and at start it
# removes the pins of earlier runs whose process is gone.
#   bash ../shared/bench/connect-redirect.sh --rounds 3 --candidate-name trellis-bpf \
#     --candidate-attach 'bash scripts/bench-connect-candidate.sh'
set -euo pipefail
bin=${TRELLIS_BIN:-$(dirname "$0")/../target/release/trellis}
pins=/sys/fs/bpf/trellis-bench-connect-$$
sleeper=
cleanup() {
  trap '' INT TERM # a second Ctrl-C must not cut the cleanup short
  [ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null || true
  "$bin" --log warn datapath cleanup --datapath ebpf --pin-dir "$pins" >/dev/null 2>&1 || true
  rm -rf "$pins" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 0' TERM INT
for old in /sys/fs/bpf/trellis-bench-connect-*; do
  [ -e "$old" ] || continue
  kill -0 "${old##*-}" 2>/dev/null && continue
  "$bin" --log warn datapath cleanup --datapath ebpf --pin-dir "$old" >/dev/null 2>&1 || true
  rm -rf "$old" 2>/dev/null || true
done
"$bin" --log warn datapath attach --datapath ebpf --cgroup "$BENCH_CGROUP" --pin-dir "$pins" \
  --proxy "$BENCH_BACKEND" --service "$BENCH_VIP" --dummy-vips $((${BENCH_NVIPS:-1} - 1))
# Waited on in the background so TERM is handled at once.
sleep infinity &
sleeper=$!
wait "$sleeper"
