#!/usr/bin/env bash
# One closed-loop send run against a 3-node `meridian dev` region of a given `meridian`
# binary: for before/after comparisons of two builds, alternated in one session
# (docs/BENCHMARKS.md, "Each step, before and after").
#
#   bench/ab.sh BINARY LABEL CLIENTS SECONDS [meridian dev flags, e.g. --shards 8]
#   PAIRS=new bench/ab.sh ...          # every send a first contact (default: existing)
#
# Prints one line: sends/s, p50, p99, errors, the server CPU (user + system of the three
# nodes, from /proc) per send over the measured run, and the nodes' resident memory (VmRSS,
# summed) at its end. The load generator is this checkout's
# release `meridian-bench` (cargo build --release -p meridian-bench).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$1; LABEL=$2; CLIENTS=$3; DUR=$4; shift 4
export DEV_ARGS="$*"
BENCH=$ROOT/target/release/meridian-bench
OUT=$(mktemp -d /tmp/meridian-ab.XXXXXX)
MERIDIAN=$BIN
MERIDIAN_DIR=$OUT/region
MERIDIAN_BASE_PORT=${MERIDIAN_BASE_PORT:-18101}
# shellcheck source=bench/dev_region.sh
source "$ROOT/bench/dev_region.sh"
trap stop_dev_region EXIT
start_dev_region
PIDS=$(cat "$MERIDIAN_DIR"/node-*.pid | tr '\n' ' ')
cpu() { local s=0 p; for p in $PIDS; do set -- $(awk '{print $14, $15}' "/proc/$p/stat"); s=$((s + $1 + $2)); done; echo "$s"; }
CONNS=$((CLIENTS >= 16 ? CLIENTS / 16 : 1))
PAIRS=${PAIRS:-existing}
# A short run first: set-up (users, conversations) and warm-up.
"$BENCH" send --clients "$CLIENTS" --conns "$CONNS" --duration 2 --warmup 1 --pairs "$PAIRS" --label warm >/dev/null 2>&1
c0=$(cpu)
"$BENCH" send --clients "$CLIENTS" --conns "$CONNS" --duration "$DUR" --warmup 0 --pairs "$PAIRS" --label "$LABEL" \
  >"$OUT/run.json" 2>"$OUT/run.log"
c1=$(cpu)
rss=0; for p in $PIDS; do rss=$((rss + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status"))); done
python3 - "$OUT/run.json" "$c0" "$c1" "$LABEL" "$DEV_ARGS" "$rss" <<'PY'
import json, os, sys
line = [l for l in open(sys.argv[1]) if l.strip().startswith('{')][-1]
r = json.loads(line)
cpu = (int(sys.argv[3]) - int(sys.argv[2])) / os.sysconf('SC_CLK_TCK')
print(f"{sys.argv[4]:<12} {sys.argv[5]:<12} sends/s {r['ops_per_s']:8.0f} p50 {r['p50_ms']:6.2f} ms p99 {r['p99_ms']:7.2f} ms "
      f"errors {r['errors']} server CPU {cpu * 1e6 / max(r['ops'], 1):6.0f} us/send RSS {int(sys.argv[6]) / 1024:5.0f} MiB")
PY
