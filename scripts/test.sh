#!/usr/bin/env bash
# The full check, as CI runs it: formatting, clippy (warnings are errors), then every test of
# the workspace. One dev-profile build serves clippy, the tests and the `meridian` binary
# that the cluster tests start. Every step runs even if an earlier one failed, so one run
# shows every problem; the summary at the end lists each step's outcome.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never
# A clean checkout (as CI has) compiles everything once: incremental compilation only adds
# work there. A tree that has built before keeps it, for quick reruns.
if [ ! -d target/debug ]; then
  export CARGO_INCREMENTAL=0
fi

./scripts/setup.sh

steps=()
failed=0
run_step() {
  local name=$1
  shift
  local start=$SECONDS
  echo "==> $name: $*"
  if "$@"; then
    steps+=("ok      $name ($((SECONDS - start))s)")
  else
    steps+=("FAILED  $name ($((SECONDS - start))s): $*")
    failed=1
  fi
}

run_step fmt cargo fmt --all -- --check
run_step clippy cargo clippy --workspace --all-targets -- -D warnings
run_step test cargo test --workspace
run_step chaos ./scripts/chaos-smoke.sh

echo
echo "==> summary"
printf '  %s\n' "${steps[@]}"
if ((failed)); then
  echo "==> some checks failed"
  exit 1
fi
echo "==> all checks passed"
