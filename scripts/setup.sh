#!/usr/bin/env bash
# Installs what building and testing Trellis needs on a fresh Debian machine
# (the Rust toolchain is expected; everything else comes from apt).
# Idempotent: only missing tools are installed.
set -euo pipefail

need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v jq >/dev/null 2>&1 || need+=(jq)
command -v bc >/dev/null 2>&1 || need+=(bc)
command -v cc >/dev/null 2>&1 || need+=(gcc)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing ${need[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "setup: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

command -v cargo >/dev/null 2>&1 || { echo "setup: cargo is missing; install the Rust toolchain (rustup)" >&2; exit 1; }
