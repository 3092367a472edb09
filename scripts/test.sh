#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property and integration
# tests (the integration tests start real trellis processes).
set -euo pipefail
cd "$(dirname "$0")/.."
# A clean build gains nothing from incremental state, and it is the largest
# part of target/ (see the profile note in Cargo.toml).
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
bash scripts/setup.sh

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy -D warnings" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== fuzz targets compile (scripts/fuzz.sh runs them)" >&2
RUSTFLAGS="--cfg fuzzing" CARGO_TARGET_DIR=target/fuzz-check \
  cargo check --manifest-path fuzz/Cargo.toml --locked --bins
echo "== cargo test" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked 2>&1 | tee "$log" || status=$?
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
