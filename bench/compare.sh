#!/usr/bin/env bash
# Meridian side by side with the etcd peer, on this machine, in one run (docs/BENCHMARKS.md).
#
#   bench/compare.sh [--duration S] [--rounds N] [--clients "1 16 64 256"]
#                    [--read-clients "1 16 64"] [--out DIR] [--no-build]
#   MERIDIAN_BIN=/path/to/meridian bench/compare.sh --no-build   # another build of Meridian
#
# Sets everything up (system packages, etcd and its load generator from ../shared/peer-bench,
# a release build of `meridian` and `meridian-bench`), starts a 3-member etcd cluster and a
# 3-node Meridian region on loopback (both fsync on, 3 replicas), then runs, interleaved:
#   writes: for each round, for each client count: etcd puts, then Meridian sends;
#   reads:  for each round, for each client count: etcd 50-key linearizable range reads,
#           Meridian linearizable 50-message history pages, then the serializable / local pair.
# Every run's JSON line goes to DIR/results.jsonl; the table of medians and ratios is printed
# and written to DIR/table.md. Both clusters are stopped at the end, on error and on Ctrl-C.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEER=${PEER_BENCH:-$ROOT/../shared/peer-bench}
DUR=10
ROUNDS=2
CONCS="1 16 64 256"
READ_CONCS="1 16 64"
OUT=""
BUILD=1
while [ $# -gt 0 ]; do
  case $1 in
    --duration) DUR=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --clients) CONCS=$2; shift 2 ;;
    --read-clients) READ_CONCS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -d "$PEER" ] || { echo "the peer's scripts are not at $PEER (set PEER_BENCH)" >&2; exit 1; }
OUT=${OUT:-$ROOT/target/bench/compare-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RESULTS=$OUT/results.jsonl
: > "$RESULTS"
export PEER_BENCH_WORK=${PEER_BENCH_WORK:-/tmp/peer-bench}
ETCD_BASE=$OUT/etcd
MERIDIAN_DIR=$OUT/meridian
MERIDIAN_BASE_PORT=${MERIDIAN_BASE_PORT:-17101}
LOG=$OUT/compare.log

say() { echo "== $*" | tee -a "$LOG" >&2; }

# ---------------------------------------------------------------- set-up
say "set-up: system packages, the peer (etcd, etcd-load), release build"
"$ROOT/scripts/setup.sh" >>"$LOG" 2>&1
"$PEER/setup.sh" >>"$LOG" 2>&1
ETCD_LOAD=$PEER_BENCH_WORK/target/release/etcd-load
if [ "$BUILD" = 1 ]; then
  (cd "$ROOT" && cargo build --release --locked -p meridian-node -p meridian-bench) >>"$LOG" 2>&1
fi
# MERIDIAN_BIN: another `meridian` binary to measure (an earlier commit's, for a before/after).
MERIDIAN=${MERIDIAN_BIN:-$ROOT/target/release/meridian}
BENCH=$ROOT/target/release/meridian-bench
for f in "$ETCD_LOAD" "$MERIDIAN" "$BENCH"; do [ -x "$f" ] || { echo "missing $f" >&2; exit 1; }; done

# shellcheck source=bench/dev_region.sh
source "$ROOT/bench/dev_region.sh"
cleanup() {
  set +e
  stop_dev_region
  [ -f "$ETCD_BASE/pids" ] && BASE=$ETCD_BASE "$PEER/stop_etcd_cluster.sh" >/dev/null 2>&1
}
trap cleanup EXIT
trap 'exit 130' INT TERM

{
  echo "host: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB, kernel $(uname -r), $(date -u)"
  echo "etcd: $(etcd --version | head -1); meridian: $("$MERIDIAN" --version)"
  echo "duration ${DUR}s per run, ${ROUNDS} rounds, write clients: $CONCS, read clients: $READ_CONCS"
} | tee -a "$LOG" > "$OUT/host.txt"

say "fsync probe before (200 B append + fdatasync, per second)"
mkdir -p "$OUT/tmp"
python3 "$PEER/fsync_timeline.py" "$OUT/tmp" 5 200 | tee -a "$LOG" > "$OUT/fsync-before.txt"

# ---------------------------------------------------------------- clusters
say "starting etcd (3 members) and Meridian (3 nodes) on loopback"
BASE=$ETCD_BASE "$PEER/start_etcd_cluster.sh" >>"$LOG" 2>&1
ETCD_PIDS=$(tr '\n' ',' < "$ETCD_BASE/pids" | sed 's/,$//')
start_dev_region

cpu_ticks() { local s=0 p; for p in ${1//,/ }; do set -- $(awk '{print $14, $15}' "/proc/$p/stat"); s=$((s + $1 + $2)); done; echo "$s"; }
TCK=$(getconf CLK_TCK)

# etcd-load run with the server CPU of the etcd members added to its JSON line.
etcd_run() {
  local label=$1; shift
  local leader c0 c1 out
  leader=$(EP=http://127.0.0.1:23791,http://127.0.0.1:23792,http://127.0.0.1:23793 "$PEER/leader_endpoint.sh")
  c0=$(cpu_ticks "$ETCD_PIDS")
  out=$("$ETCD_LOAD" --endpoints "$leader" --label "$label" "$@")
  c1=$(cpu_ticks "$ETCD_PIDS")
  echo "$out" | head -1 | tee -a "$LOG" >&2
  echo "$out" | tail -1 | python3 -c '
import json, sys
r = json.load(sys.stdin); r["system"] = "etcd"; r["server_cpu_s"] = (int(sys.argv[1]) - int(sys.argv[2])) / int(sys.argv[3])
print(json.dumps(r))' "$c1" "$c0" "$TCK" >> "$RESULTS"
}

meridian_run() {
  local label=$1; shift
  local out
  out=$("$BENCH" --label "$label" "$@")
  echo "$out" | head -1 | tee -a "$LOG" >&2
  echo "$out" | tail -1 | python3 -c '
import json, sys
r = json.load(sys.stdin); r["system"] = "meridian"
print(json.dumps(r))' >> "$RESULTS"
}

conns_for() { if [ "$1" -lt 16 ]; then echo 1; else echo $(($1 / 16)); fi; }

# Every node's WAL sync counters, summed: how many requests (appends, votes) shared one fsync.
wal_counters() {
  local i
  for i in 0 1 2; do curl -s "http://127.0.0.1:$((MERIDIAN_BASE_PORT + 1000 + i))/metrics" || true; done |
    awk '$1=="meridian_wal_syncs_total"{s+=$2} $1=="meridian_wal_sync_requests_total"{q+=$2} END{print s+0, q+0}'
}

# ---------------------------------------------------------------- writes
read -r SYNCS0 REQS0 <<<"$(wal_counters)"
for r in $(seq 1 "$ROUNDS"); do
  for c in $CONCS; do
    n=$(conns_for "$c")
    say "round $r, $c clients: etcd puts, Meridian sends"
    etcd_run "put-c$c-r$r" --op put --clients "$c" --conns "$n" --duration "$DUR" --warmup 1 --val-size 200
    # Sends to conversations that exist (most real traffic), then first contacts.
    meridian_run "send-c$c-r$r" send --clients "$c" --conns "$n" --duration "$DUR" --warmup 1 --pairs existing
    meridian_run "sendnew-c$c-r$r" send --clients "$c" --conns "$n" --duration "$DUR" --warmup 1 --pairs new
  done
done

read -r SYNCS1 REQS1 <<<"$(wal_counters)"
echo "write phase: $((SYNCS1 - SYNCS0)) WAL syncs for $((REQS1 - REQS0)) sync requests over 3 nodes" \
  | tee -a "$LOG" > "$OUT/wal-syncs.txt"

# ---------------------------------------------------------------- reads
say "preloading 200 conversations x 200 messages on both"
"$ETCD_LOAD" --endpoints "$(EP=http://127.0.0.1:23791,http://127.0.0.1:23792,http://127.0.0.1:23793 "$PEER/leader_endpoint.sh")" \
  --op preload --convs 200 --msgs 200 --clients 64 --conns 4 >>"$LOG" 2>&1
"$BENCH" history --convs 200 --msgs 200 --clients 64 --conns 4 --duration 1 --warmup 0 >>"$LOG" 2>&1
for r in $(seq 1 "$ROUNDS"); do
  for c in $READ_CONCS; do
    n=$(conns_for "$c")
    say "round $r, $c clients: 50-message pages, linearizable then serializable/local"
    etcd_run "range-lin-c$c-r$r" --op range --convs 200 --msgs 200 --limit 50 --serializable 0 \
      --clients "$c" --conns "$n" --duration "$DUR" --warmup 1
    meridian_run "history-lin-c$c-r$r" history --convs 200 --msgs 200 --limit 50 --consistency linearizable \
      --clients "$c" --conns "$n" --duration "$DUR" --warmup 1
    etcd_run "range-ser-c$c-r$r" --op range --convs 200 --msgs 200 --limit 50 --serializable 1 \
      --clients "$c" --conns "$n" --duration "$DUR" --warmup 1
    meridian_run "history-local-c$c-r$r" history --convs 200 --msgs 200 --limit 50 --consistency local \
      --clients "$c" --conns "$n" --duration "$DUR" --warmup 1
  done
done

say "fsync probe after"
python3 "$PEER/fsync_timeline.py" "$OUT/tmp" 5 200 | tee -a "$LOG" > "$OUT/fsync-after.txt"

python3 "$ROOT/bench/compare_table.py" "$RESULTS" "$OUT/host.txt" "$OUT/fsync-before.txt" "$OUT/fsync-after.txt" "$OUT/wal-syncs.txt" \
  | tee "$OUT/table.md"
echo "results: $RESULTS, table: $OUT/table.md, log: $LOG" >&2
