#!/usr/bin/env bash
# Candidate for ../shared/bench/dns.sh: the real path, not a zone file. Starts
# a control plane, applies BENCH_RECORDS services svc-1..svc-N (their VIPs come
# out in the harness's formula because allocation is sequential; N <= 250 keeps
# them in one /24), then runs `trellis dns` on BENCH_LISTEN answering as that
# network. The harness kills the whole process group at the end; the trap
# then removes the work directory (it holds the CA key and an API token).
set -euo pipefail
bin=${TRELLIS_BIN:-$(dirname "$0")/../target/release/trellis}
n=${BENCH_RECORDS:?}
[ "$n" -le 250 ] || { echo "bench-dns-candidate: at most 250 records (one /24 of VIPs)" >&2; exit 1; }
work=
pids=()
cleanup() {
  trap '' INT TERM # a second Ctrl-C must not cut the cleanup short
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  [ -z "$work" ] || rm -rf "$work"
}
# Trapped before the directory exists: a TERM right after mktemp used to
# leave it.
trap cleanup EXIT
trap 'exit 143' INT TERM
work=$(mktemp -d /tmp/trellis-dns-bench.XXXXXX)
source "$(dirname "$0")/lib.sh"
start_control_plane "$work"
pids+=("$CP_PID")
{
  printf 'apiVersion: trellis.dev/v1alpha1\nkind: Network\nmetadata: {name: bench}\nspec: {}\n---\n'
  printf 'apiVersion: trellis.dev/v1alpha1\nkind: ServiceNetwork\nmetadata: {name: bench}\nspec: {networks: [bench]}\n'
  for i in $(seq "$n"); do
    printf -- '---\napiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {name: svc-%d}\nspec: {serviceNetworks: [bench]}\n' "$i"
  done
} >"$work/services.yaml"
"$bin" apply -f "$work/services.yaml" >/dev/null
# One worker thread: the same core budget as NSD's server-count 1.
# Not exec'd: this shell stays to remove the work directory when stopped.
"$bin" --log warn --worker-threads 1 dns --listen "${BENCH_LISTEN:?}" --network bench \
  --data-dir "$work/dns" --join-token "$("$bin" network join-token bench --role dns)" &
pids+=("$!")
wait "$!"
