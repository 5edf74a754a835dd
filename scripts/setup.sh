#!/usr/bin/env bash
# Installs the system packages Meridian's build needs, on Debian 12, as root, and the
# S3-compatible server the archive tests run against. Idempotent: it touches apt only when a
# package is missing, and pip only when moto's server is missing.
#   clang, libclang-dev   RocksDB's C++ build and its bindgen bindings
#   protobuf-compiler     protoc, for the gRPC and durable schemas
#   build-essential       the C/C++ toolchain and make
#   nftables, faketime    the chaos suite's network partitions and clock skew
#   moto[server] (pip)    an S3-compatible server (`python3 -m moto.server`) for the archive tests
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

# moto's server: the S3-compatible object store of the archive tests (docs/archive.md).
MOTO_VERSION=5.2.1
if ! python3 -c "import moto.server, flask" >/dev/null 2>&1; then
  echo "setup: installing moto[server]==$MOTO_VERSION (S3-compatible server for the archive tests)"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    if [[ $(id -u) -ne 0 ]]; then
      echo "setup: python3 has no pip and this is not root: install python3-pip" >&2
      exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-pip
  fi
  # A Debian-managed python3 refuses plain pip installs (PEP 668); moto goes in beside it.
  python3 -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" ||
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "moto[server]==$MOTO_VERSION"
else
  echo "setup: moto's S3 server present"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found on PATH: install a Rust toolchain (1.88 or newer, e.g. with rustup)" >&2
  exit 1
fi
echo "setup: $(cargo --version)"
