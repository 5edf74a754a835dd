#!/usr/bin/env bash
# Installs the system packages Meridian's build needs, on Debian 12, as root. Idempotent: it
# touches apt only when a package is missing, and downloads nothing else.
#   clang, libclang-dev   RocksDB's C++ build and its bindgen bindings
#   protobuf-compiler     protoc, for the gRPC and durable schemas
#   build-essential       the C/C++ toolchain and make
#   nftables, faketime    the chaos suite's network partitions and clock skew
set -euo pipefail

packages=(clang libclang-dev protobuf-compiler build-essential nftables faketime)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg -s "$p" >/dev/null 2>&1; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} > 0)); then
  echo "setup: installing ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing packages (${missing[*]}) and not root: run as root, or install them with apt-get" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
else
  echo "setup: system packages present (${packages[*]})"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found on PATH: install a Rust toolchain (1.88 or newer, e.g. with rustup)" >&2
  exit 1
fi
echo "setup: $(cargo --version)"
