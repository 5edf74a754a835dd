#!/usr/bin/env bash
# Group fan-out: Meridian side by side with Prosody MUC, on this machine, in one run
# (docs/BENCHMARKS.md, "Group fan-out against Prosody MUC").
#
#   bench/fanout.sh [--duration S] [--rounds N] [--members "100 500"] [--windows "2 4"]
#                   [--out DIR] [--no-build]
#
# Sets everything up (system packages, Prosody from ../shared/peer-bench's setup.sh, a
# release build of `meridian` and `meridian-bench`), starts Prosody (one process, in memory)
# and a 3-node Meridian region on loopback (fsync on, 3 replicas), then for each round and
# each group size runs the peer's MUC load (`xmpp_load.py muc`, 1 sender) and then
# `meridian-bench fanout` with the same members, senders and window (window 4 at 100 members
# and 2 at 500, as the peer's suite runs them). Every run's JSON line goes to
# DIR/results.jsonl, with the server's and the load generator's CPU over the measured window;
# the table of medians and ratios is printed and written to DIR/table.md. Prosody and the
# region are stopped at the end, on error and on Ctrl-C.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEER=${PEER_BENCH:-$ROOT/../shared/peer-bench}
DUR=15
ROUNDS=2
MEMBERS="100 500"
# Messages each sender keeps in flight; empty: 4 at 100 members or fewer, 2 above (as the
# peer's suite runs them). With --windows, every group size runs every window listed.
WINDOWS=""
OUT=""
BUILD=1
while [ $# -gt 0 ]; do
  case $1 in
    --duration) DUR=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --members) MEMBERS=$2; shift 2 ;;
    --windows) WINDOWS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -d "$PEER/xmpp" ] || { echo "the peer's scripts are not at $PEER (set PEER_BENCH)" >&2; exit 1; }
OUT=${OUT:-$ROOT/target/bench/fanout-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RESULTS=$OUT/results.jsonl
: > "$RESULTS"
export PEER_BENCH_WORK=${PEER_BENCH_WORK:-/tmp/peer-bench}
PROSODY_BASE=$OUT/prosody
MERIDIAN_DIR=$OUT/meridian
MERIDIAN_BASE_PORT=${MERIDIAN_BASE_PORT:-17201}
LOG=$OUT/fanout.log
# How long the peer's MUC load waits after the joins, as a multiple of its default
# (1 + M^2/20000 s): joining M occupants makes Prosody broadcast ~M^2/2 presence stanzas, and
# with the default a 500-member room on a busy 2-core machine was still draining them through
# the whole window (no message delivered); 3x drained it.
SETTLE_FACTOR=${SETTLE_FACTOR:-3}


say() { echo "== $*" | tee -a "$LOG" >&2; }
window_for() { if [ "$1" -le 100 ]; then echo 4; else echo 2; fi; }

# ---------------------------------------------------------------- set-up
say "set-up: system packages, the peer (prosody), release build"
"$ROOT/scripts/setup.sh" >>"$LOG" 2>&1
"$PEER/setup.sh" --with-prosody >>"$LOG" 2>&1
if [ "$BUILD" = 1 ]; then
  (cd "$ROOT" && cargo build --release --locked -p meridian-node -p meridian-bench) >>"$LOG" 2>&1
fi
MERIDIAN=$ROOT/target/release/meridian
BENCH=$ROOT/target/release/meridian-bench
for f in "$MERIDIAN" "$BENCH"; do [ -x "$f" ] || { echo "missing $f" >&2; exit 1; }; done
command -v prosody >/dev/null || { echo "prosody is not installed" >&2; exit 1; }

# shellcheck source=bench/dev_region.sh
source "$ROOT/bench/dev_region.sh"
SAMPLER_PID=""
cleanup() {
  set +e
  [ -n "$SAMPLER_PID" ] && kill "$SAMPLER_PID" 2>/dev/null
  stop_dev_region
  [ -f "$PROSODY_BASE/pid" ] && BASE=$PROSODY_BASE "$PEER/xmpp/stop_prosody.sh" >/dev/null 2>&1
}
trap cleanup EXIT
trap 'exit 130' INT TERM

{
  echo "host: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB, kernel $(uname -r), $(date -u)"
  echo "prosody: $(dpkg-query -W -f='${Version}' prosody 2>/dev/null); meridian: $("$MERIDIAN" --version)"
  echo "duration ${DUR}s per run, ${ROUNDS} rounds, members: $MEMBERS, 1 sender, window ${WINDOWS:-4 (<= 100 members) or 2}"
  echo "prosody settle after the joins: $SETTLE_FACTOR x (1 + M^2/20000) s"
} | tee -a "$LOG" > "$OUT/host.txt"

# ---------------------------------------------------------------- servers
say "starting Prosody and Meridian (3 nodes) on loopback"
NUSERS=600 BASE=$PROSODY_BASE "$PEER/xmpp/start_prosody.sh" >>"$LOG" 2>&1
PROSODY_PID=$(cat "$PROSODY_BASE/pid")
start_dev_region

TCK=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# The peer's MUC load (it bounds its own run: duration + 60 s). Its measured window is the
# last DUR seconds before it stops sending (then it waits 0.3 s and prints), after the
# log-ins, the settle and a 1 s warm-up; so Prosody's and the generator's CPU are sampled
# every 0.25 s and read over that window afterwards.
prosody_run() {
  local label=$1 members=$2 window=$3 load_pid samples=$OUT/tmp/cpu-$1.txt settle
  mkdir -p "$OUT/tmp"
  settle=$(python3 -c "print(round($SETTLE_FACTOR * (1 + $members ** 2 / 20000), 1))")
  (cd "$PEER/xmpp" && exec python3 xmpp_load.py muc --members "$members" --senders 1 \
    --window "$window" --duration "$DUR" --settle "$settle" > "$OUT/tmp/$label.out" 2>>"$LOG") &
  load_pid=$!
  (while kill -0 "$load_pid" 2>/dev/null; do
     echo "$(date +%s.%N) $(ticks "$PROSODY_PID") $(ticks "$load_pid")"; sleep 0.25
   done) > "$samples" &
  SAMPLER_PID=$!
  wait "$load_pid" || { echo "xmpp_load.py failed for $label; see $LOG" >&2; return 1; }
  local ended; ended=$(date +%s.%N)
  wait "$SAMPLER_PID" 2>/dev/null || true
  SAMPLER_PID=""
  python3 - "$OUT/tmp/$label.out" "$samples" "$ended" "$DUR" "$TCK" "$label" >> "$RESULTS" <<'EOF'
import json, sys
out, samples, ended, dur, tck, label = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
r = json.loads(open(out).read().strip().splitlines()[-1])
rows = [tuple(map(float, l.split())) for l in open(samples) if len(l.split()) == 3]
# The window ends ~0.3 s (the drain) plus the time to close and print before the exit.
end = ended - 0.35
start = end - dur
def at(t):
    return min(rows, key=lambda row: abs(row[0] - t))
a, b = at(start), at(end)
span = b[0] - a[0]
r.update(label=label, system="prosody", workload="fanout", durable=False,
         msgs_per_s=r["sent_per_s"],
         server_cores=round((b[1] - a[1]) / tck / span, 2) if span > 0 else None,
         loadgen_cores=round((b[2] - a[2]) / tck / span, 2) if span > 0 else None)
print(json.dumps(r))
EOF
  tail -1 "$RESULTS" | tee -a "$LOG" >&2
}

meridian_run() {
  local label=$1 members=$2 window=$3 out
  out=$("$BENCH" fanout --label "$label" --members "$members" --senders 1 --window "$window" \
    --duration "$DUR" --warmup 1 2>>"$LOG")
  echo "$out" | head -1 | tee -a "$LOG" >&2
  echo "$out" | tail -1 | python3 -c '
import json, sys
r = json.load(sys.stdin); r["system"] = "meridian"
e = r["elapsed_s"]
r["server_cores"] = round(r["server_cpu_s"] / e, 2) if r.get("server_cpu_s") is not None and e else None
r["loadgen_cores"] = round(r["loadgen_cpu_s"] / e, 2) if r.get("loadgen_cpu_s") is not None and e else None
print(json.dumps(r))' >> "$RESULTS"
}

# ---------------------------------------------------------------- runs
# Set-up of Meridian's users and groups once, outside the rounds (the runs reuse them).
for m in $MEMBERS; do
  say "Meridian set-up: $m members"
  "$BENCH" fanout --label "setup-m$m" --members "$m" --duration 1 --warmup 0 >>"$LOG" 2>&1
done
for r in $(seq 1 "$ROUNDS"); do
  for m in $MEMBERS; do
    for w in ${WINDOWS:-$(window_for "$m")}; do
      say "round $r, $m members, window $w: Prosody MUC, then Meridian"
      prosody_run "muc-m$m-w$w-r$r" "$m" "$w"
      meridian_run "fanout-m$m-w$w-r$r" "$m" "$w"
    done
  done
done

python3 "$ROOT/bench/fanout_table.py" "$RESULTS" "$OUT/host.txt" | tee "$OUT/table.md"
echo "results: $RESULTS, table: $OUT/table.md, log: $LOG" >&2
