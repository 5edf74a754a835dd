#!/usr/bin/env bash
# What one durable send costs the region, from the nodes' own counters: Raft entries and
# commands applied, WAL syncs, and peer RPCs by kind, per acknowledged send, for sends to
# conversations that exist (`--pairs existing`) and first contacts (`--pairs new`).
#
#   bench/write_cost.sh [--clients 64] [--duration 10] [--profile release|dev] [--no-build]
#   MERIDIAN_BIN_DIR=/path/to/other/build bench/write_cost.sh --no-build   # another build's binaries
#
# Starts a 3-node `meridian dev` region (bench/dev_region.sh), runs `meridian-bench send` once
# per pair mode, and prints one table: every counter summed over the three nodes, divided by
# the sends acknowledged in the measured window (warm-up excluded from neither: the counters
# cover the whole run, the sends are counted from the bench's own total). Results:
# docs/BENCHMARKS.md ("What one send costs").
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=64
DURATION=10
PROFILE=release
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) CLIENTS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
# shellcheck source=bench/dev_region.sh
source bench/dev_region.sh
locate_binaries
OUT=$(mktemp -d /tmp/meridian-write-cost.XXXXXX)
MERIDIAN_DIR="$OUT/region"
MERIDIAN_BASE_PORT=${MERIDIAN_BASE_PORT:-19101}
trap stop_dev_region EXIT
start_dev_region

metrics() {
  # Sum of each counter over the three nodes: name value lines.
  for n in 1 2 3; do
    port=$(sed -n 's/^http-listen = "127.0.0.1:\([0-9]*\)"/\1/p' "$MERIDIAN_DIR/node-$n.toml")
    curl -s "http://127.0.0.1:$port/metrics"
  done | grep -E '^meridian_(raft_entries_applied|commands_applied|wal_syncs|write_batches|peer_rpcs|peer_entries_sent)' |
    awk '{sum[$1] += $2} END {for (k in sum) print k, sum[k]}' | sort
}

# Each mode runs twice, for 3 s and for 3 + DURATION s, with the same set-up: the difference of
# the counters over the difference of the sends is the cost of the sends alone (the set-up —
# users created, conversations made — cancels out).
run() { # pairs seconds -> "ops counters..."
  local before after
  before=$(metrics)
  "$BENCH" send --clients "$CLIENTS" --conns 4 --duration "$2" --warmup 0 --users 4000 --pairs "$1" \
    --label "send-$1-$2" >"$OUT/send-$1-$2.json" 2>"$OUT/send-$1-$2.log"
  after=$(metrics)
  python3 - "$OUT/send-$1-$2.json" "$before" "$after" <<'PY'
import json, sys
line = [l for l in open(sys.argv[1]) if l.strip().startswith('{')][-1]
r = json.loads(line)
parse = lambda t: {k: float(v) for k, v in (l.rsplit(' ', 1) for l in t.strip().splitlines())}
b, a = parse(sys.argv[2]), parse(sys.argv[3])
print(json.dumps({'ops': r['ops'], 'ops_per_s': r['ops_per_s'], 'p50_ms': r.get('p50_ms'), 'd': {k: a[k] - b.get(k, 0) for k in a}}))
PY
}
printf '%-9s %8s %8s %9s %10s %10s %11s %10s %9s %9s\n' pairs sends/s p50-ms entries cmds/entry wal-syncs append-rpcs entries-tx proposes read-idx
for pairs in existing new; do
  short=$(run "$pairs" 3)
  long=$(run "$pairs" $((3 + DURATION)))
  python3 - "$pairs" "$short" "$long" <<'PY'
import json, sys
pairs, s, l = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
ops = l['ops'] - s['ops']
d = {k: l['d'].get(k, 0) - s['d'].get(k, 0) for k in l['d']}
per = lambda k: d.get(k, 0) / ops if ops > 0 else float('nan')
entries = d.get('meridian_raft_entries_applied_total', 0)
cmds = d.get('meridian_commands_applied_total', 0)
rpc = lambda kind: per('meridian_peer_rpcs_total{kind="%s"}' % kind)
print(f"{pairs:<9} {l['ops_per_s']:8.0f} {l['p50_ms'] or 0:8.2f} {per('meridian_raft_entries_applied_total') / 3:9.2f} "
      f"{cmds / entries if entries else float('nan'):10.2f} {per('meridian_wal_syncs_total'):10.2f} "
      f"{rpc('append_entries'):11.2f} {per('meridian_peer_entries_sent_total'):10.2f} {rpc('propose'):9.2f} {rpc('read_index'):9.2f}")
PY
done
echo "(per acknowledged send: entries = Raft entries applied per replica; the rest summed over the region's 3 nodes)"
