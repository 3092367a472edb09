#!/usr/bin/env bash
# Trellis's main job on this machine: installs what is missing, builds, and
# runs `trellis demo` (control plane, sample backends, node with DNS and the
# eBPF datapath, real traffic: a name resolved, a 90/10 split measured over
# 1,000 requests, a path rule, a live weight change, a signed and an unsigned
# call). Root for the traffic part. Extra arguments go to `trellis demo`
# (e.g. --keep-running).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
build_release
exec "$bin" --log warn demo "$@"
