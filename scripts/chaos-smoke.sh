#!/usr/bin/env bash
# A short chaos campaign, as CI runs it: every fault kind against a 3-node region, then a
# 5-node region with the cold archive on (a 2 s hot window, so faults hit sealing and the
# final reads and replays cross the archive), then three linked regions, each judged by the
# history checker, then a leader deposed and overtaken by a snapshot on purpose, then the
# disaster-recovery drill (docs/dr.md). Expects the dev-profile binaries built
# (scripts/test.sh builds them). A long campaign: see docs/chaos.md.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -q -p meridian-node -p meridian-chaos
passed=0
failed=0
campaign() {
  if ./target/debug/meridian-chaos run "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
}
campaign --seed 1 --duration 60s --nodes 3
campaign --seed 2 --duration 60s --nodes 5 --archive-hot-window 2s
if ./target/debug/meridian-chaos regions --seed 3 --duration 45s; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
fi
if ./target/debug/meridian-chaos deposed; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
fi
if ./target/debug/meridian-chaos drill --region de --seed 4 --duration 30s; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
fi
echo "chaos: $passed passed, $failed failed"
((failed == 0))
