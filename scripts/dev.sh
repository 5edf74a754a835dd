#!/usr/bin/env bash
# Builds and starts a local 3-node region (see docs/dev-cluster.md). Arguments go to
# `meridian dev`, e.g. `./scripts/dev.sh --dir /tmp/meridian --base-port 9001`.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
exec cargo run -p meridian-node --bin meridian -- dev "$@"
