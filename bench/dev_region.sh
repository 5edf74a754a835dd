# Sourced by bench/compare.sh, bench/fanout.sh, bench/write_cost.sh and bench/stages.sh: the
# 3-node `meridian dev` region a benchmark runs against. Uses MERIDIAN (the binary), MERIDIAN_DIR, MERIDIAN_BASE_PORT, OUT and
# DEV_ARGS (extra `meridian dev` flags, optional).
# shellcheck shell=bash

DEV_PID=""

# Builds `meridian` and `meridian-bench` in PROFILE (release or dev) unless BUILD is 0, and
# points MERIDIAN and BENCH at them, or at the binaries in MERIDIAN_BIN_DIR (another build,
# for an A/B against an earlier commit).
locate_binaries() {
  local dir bin_dir
  dir=$([ "$PROFILE" = release ] && echo release || echo debug)
  if [ "$BUILD" = 1 ]; then
    if [ "$PROFILE" = release ]; then cargo build -q --release -p meridian-node -p meridian-bench; else cargo build -q -p meridian-node -p meridian-bench; fi
  fi
  bin_dir=${MERIDIAN_BIN_DIR:-$PWD/target/$dir}
  MERIDIAN="$bin_dir/meridian"
  BENCH="$bin_dir/meridian-bench"
}

# Starts the region and waits until it is ready; exports MERIDIAN_ENDPOINT and
# MERIDIAN_ADMIN_TOKEN (and the rest of its dev.env).
start_dev_region() {
  # shellcheck disable=SC2086 # DEV_ARGS: extra `meridian dev` flags, split on spaces.
  "$MERIDIAN" dev --dir "$MERIDIAN_DIR" --base-port "$MERIDIAN_BASE_PORT" ${DEV_ARGS:-} >>"$OUT/meridian-dev.log" 2>&1 &
  DEV_PID=$!
  for _ in $(seq 1 240); do
    [ -f "$MERIDIAN_DIR/dev.env" ] && break
    kill -0 "$DEV_PID" 2>/dev/null || { echo "meridian dev exited; see $OUT/meridian-dev.log" >&2; exit 1; }
    sleep 0.5
  done
  [ -f "$MERIDIAN_DIR/dev.env" ] || { echo "Meridian did not become ready; see $OUT/meridian-dev.log" >&2; exit 1; }
  # shellcheck disable=SC1091
  source "$MERIDIAN_DIR/dev.env"
  export MERIDIAN_ENDPOINT MERIDIAN_ADMIN_TOKEN
}

# Stops the region (gently, then by force) and any node it left behind.
stop_dev_region() {
  if [ -n "$DEV_PID" ] && kill -0 "$DEV_PID" 2>/dev/null; then
    kill -TERM "$DEV_PID"
    for _ in $(seq 1 40); do kill -0 "$DEV_PID" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$DEV_PID" 2>/dev/null || true
  fi
  if [ -f "$MERIDIAN_DIR/dev.env" ]; then
    for f in "$MERIDIAN_DIR"/node-*.pid; do
      [ -f "$f" ] || continue
      p=$(cat "$f")
      if [ "$(cat /proc/"$p"/comm 2>/dev/null)" = meridian ]; then kill -9 "$p" 2>/dev/null || true; fi
    done
  fi
  DEV_PID=""
  return 0
}
