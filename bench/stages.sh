#!/usr/bin/env bash
# Where a send's time goes: the write path's stage histograms of every node (/metrics),
# read before and after a `meridian-bench send` run, as the mean time per event of each stage
# in that run.
#
#   bench/stages.sh [--clients 1] [--duration 8] [--pairs existing|new] [--preload 0]
#                   [--profile release|dev] [--no-build]
#   MERIDIAN_BIN_DIR=/path/to/other/build bench/stages.sh --no-build   # another build's binaries
#
# Starts a 3-node `meridian dev` region (bench/dev_region.sh; one shard unless DEV_ARGS says
# otherwise), runs the benchmark once to set up and once measured, and prints, per node (the
# shard leader first), each stage's mean milliseconds and events per send in a DURATION s
# window of the measured run. `--preload S`: before the measured run, S seconds of sends by 64
# clients, so that the nodes have written (and RocksDB has rotated) WAL files, as a node that
# has run a while has.
# Results: docs/BENCHMARKS.md ("Where one send's time goes").
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=1
DURATION=8
PAIRS=existing
PRELOAD=0
PROFILE=release
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) CLIENTS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --pairs) PAIRS=$2; shift 2 ;;
    --preload) PRELOAD=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
# shellcheck source=bench/dev_region.sh
source bench/dev_region.sh
locate_binaries
OUT=$(mktemp -d /tmp/meridian-stages.XXXXXX)
MERIDIAN_DIR="$OUT/region"
MERIDIAN_BASE_PORT=${MERIDIAN_BASE_PORT:-19301}
trap stop_dev_region EXIT
start_dev_region

scrape() { # file: every node's histogram sums and counts, as "node name value"
  for n in 1 2 3; do
    port=$(sed -n 's/^http-listen = "127.0.0.1:\([0-9]*\)"/\1/p' "$MERIDIAN_DIR/node-$n.toml")
    curl -s "http://127.0.0.1:$port/metrics" | grep -E '^meridian_[a-z_]+_seconds_(sum|count) ' | sed "s/^/$n /"
  done >"$1"
}

conns=$(( CLIENTS < 4 ? CLIENTS : 4 ))
bench() { # seconds label
  "$BENCH" send --clients "$CLIENTS" --conns "$conns" --duration "$1" --warmup 0 --users 4000 --pairs "$PAIRS" \
    --label "send-$PAIRS-c$CLIENTS-$2" >"$OUT/$2.json" 2>"$OUT/$2.log"
}
# A first run creates the users and conversations. The measured run finds them again (by
# their request ids); the histograms are read once its set-up is done and 2 s into its sends,
# and DURATION s later, while it still runs: no set-up or warm-up in the window.
bench 2 setup
if [ "$PRELOAD" != 0 ]; then
  "$BENCH" send --clients 64 --conns 4 --duration "$PRELOAD" --warmup 0 --users 4000 --pairs "$PAIRS" \
    --label preload >"$OUT/preload.json" 2>"$OUT/preload.log"
fi
bench $((DURATION + 6)) run &
BENCH_PID=$!
for _ in $(seq 1 600); do
  grep -q 'conversations in place' "$OUT/run.log" 2>/dev/null && break
  kill -0 "$BENCH_PID" 2>/dev/null || break
  sleep 0.1
done
sleep 2
scrape "$OUT/before"
sleep "$DURATION"
scrape "$OUT/after"
wait "$BENCH_PID"
for n in 1 2 3; do # the WAL files: how many, how large (recycled ones keep their size)
  echo "node $n WAL: $(find "$MERIDIAN_DIR" -path "*node-$n*" -name '*.log' -size +0 -printf '%s ' | tr ' ' '\n' | awk 'NF {n++; s += $1} END {printf "%d files, %.1f MB", n, s / 1e6}')"
done
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
def load(path):
    values = {}
    for line in open(path):
        node, name, value = line.split()
        values[(node, name)] = float(value)
    return values
before, after = load(f"{out}/before"), load(f"{out}/after")
d = {k: v - before.get(k, 0.0) for k, v in after.items()}
run = json.loads([l for l in open(f"{out}/run.json") if l.strip().startswith('{')][-1])
sends = sum(d.get((n, 'meridian_send_seconds_count'), 0) for n in '123')
stages = ['send', 'proposal', 'raft_write', 'wal_sync_wait', 'wal_sync', 'peer_append', 'peer_appended', 'apply']
leader = max('123', key=lambda n: d.get((n, 'meridian_raft_write_seconds_count'), 0))
print(f"{sends:.0f} sends in the window; the whole run: {run['ops_per_s']:.0f}/s, p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms")
print(f"{'node':<12}" + ''.join(f"{s:>16}" for s in stages))
for node in [leader] + [n for n in '123' if n != leader]:
    cells = []
    for s in stages:
        count = d.get((node, f'meridian_{s}_seconds_count'), 0)
        total = d.get((node, f'meridian_{s}_seconds_sum'), 0)
        cells.append(f"{total / count * 1000:.3f}ms/{count / sends:.2f}" if count > 0 and sends else '-')
    role = 'leader' if node == leader else 'follower'
    print(f"{node + ' ' + role:<12}" + ''.join(f"{c:>16}" for c in cells))
print("(each cell: mean per event / events per send served in the window)")
PY
