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
# The eBPF datapath: clang compiles bpf/*.c at build time against libbpf's
# headers; the root tests use bpftool, iproute2 and python3.
command -v clang-19 >/dev/null 2>&1 || command -v "${CLANG:-clang-19}" >/dev/null 2>&1 || need+=(clang-19)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
command -v bpftool >/dev/null 2>&1 || need+=(bpftool)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables)
# DNS tests query with the real dig.
command -v dig >/dev/null 2>&1 || need+=(bind9-dnsutils)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# The etcd store: etcd-client (the crate) compiles etcd's protobufs with
# protoc; the shared-store tests run a three-member etcd on loopback.
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
# The web console is tested in a real headless Chromium through ChromeDriver.
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
# gRPC routing is tested with grpcio clients and servers (a real gRPC core),
# run by Debian's python3 (the one python3-grpcio installs into).
/usr/bin/python3 -c 'import grpc' >/dev/null 2>&1 || need+=(python3-grpcio)

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
