#!/usr/bin/env bash
# Coverage-guided fuzzing of Trellis's parsers with libFuzzer (cargo fuzz,
# --sanitizer none, which runs on the stable toolchain). Targets (fuzz/):
#   http_head    HTTP/1.1 heads and request targets, differential with `http`
#   sigv4        the SigV4 Authorization parser and canonical request pieces
#   policy       auth policy parsing, compilation and evaluation
#   dns_message  the DNS message handler behind UDP and TCP
#   yaml         the YAML front end and the validator behind `trellis apply`
# Usage: bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Default: 60 s each, every target. Each run starts from fuzz/seeds/TARGET and
# the corpus it grew before (fuzz/corpus/TARGET, not committed); a crash
# leaves its input in fuzz/artifacts/TARGET and fails the script. Prints one
# line per target: executions, coverage, corpus size.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(http_head sigv4 policy dns_message yaml)

bash scripts/setup.sh
command -v c++ >/dev/null 2>&1 || { echo "fuzz: libFuzzer needs a C++ compiler: apt-get install g++" >&2; exit 1; }
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  log=$(mktemp)
  result="no crash"
  echo "== fuzz $t for ${seconds}s" >&2
  if ! (cd fuzz && cargo fuzz run --sanitizer none --release "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1) >"$log" 2>&1; then
    status=1
    result=FAILED
    tail -40 "$log" >&2
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  corpus=$(ls "fuzz/corpus/$t" | wc -l)
  echo "fuzz $t: ${runs:-?} executions in ${seconds}s, coverage ${cov:-?} edges, corpus $corpus, $result"
  rm -f "$log"
done
exit "$status"
