#!/usr/bin/env bash
# How a region's cost grows with its data: fills a 3-node `meridian dev` region with sends to
# existing conversations up to each checkpoint (messages in the region), and at each one
# measures every node's memory (RSS now and at its peak), data on disk, the newest snapshot
# each shard built (size, time), a snapshot install on a node that fell behind a log purge
# (size, time), the send rate of a short closed-loop run, and the snapshots built so far
# (all nodes).
#
#   bench/growth.sh [--archive 60] [--no-build] [--clients 64] CHECKPOINT...
#   bench/growth.sh 100000 1000000
#
# Node 3 is paused (SIGSTOP) while the region fills to each checkpoint, so that when it runs
# again its shards are behind the leaders' purged logs and catch up by snapshot: the install
# measured is of the whole shard at that size. Snapshots are built every SNAPSHOT_EVERY
# (1,000) entries per shard here, keeping KEEP (100) behind them (`raft.snapshot-logs-since-last`
# and `raft.max-in-snapshot-log-to-keep`; the defaults are 20,000 and 1,000); PERCENT sets
# `raft.snapshot-log-size-percent` (unset: the default, 50; 0: the entry count alone), and
# MERIDIAN_BIN_DIR the binaries' directory (default target/release). `--archive SECONDS`
# switches the cold archive on with that hot window. Results: docs/BENCHMARKS.md ("Growth").
set -euo pipefail
cd "$(dirname "$0")/.."

ARCHIVE=""
BUILD=1
CLIENTS=64
CHECKPOINTS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --archive) ARCHIVE=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --clients) CLIENTS=$2; shift 2 ;;
    *) CHECKPOINTS+=("$1"); shift ;;
  esac
done
[ ${#CHECKPOINTS[@]} -gt 0 ] || { echo "usage: bench/growth.sh [--archive SECONDS] CHECKPOINT..." >&2; exit 2; }
[ "$BUILD" = 1 ] && cargo build -q --release -p meridian-node -p meridian-bench
BIN_DIR=${MERIDIAN_BIN_DIR:-$PWD/target/release}
MERIDIAN="$BIN_DIR/meridian"
BENCH="$BIN_DIR/meridian-bench"
OUT=$(mktemp -d /tmp/meridian-growth.XXXXXX)
MERIDIAN_DIR="$OUT/region"
MERIDIAN_BASE_PORT=${MERIDIAN_BASE_PORT:-20101}
DEV_ARGS=""
[ -n "$ARCHIVE" ] && DEV_ARGS="--archive-hot-window $ARCHIVE"
# shellcheck source=bench/dev_region.sh
source bench/dev_region.sh
trap 'kill -CONT "$(cat "$MERIDIAN_DIR/node-3.pid" 2>/dev/null)" 2>/dev/null || true; stop_dev_region' EXIT

# First start writes the configs; snapshots more often (above), then start again.
start_dev_region
stop_dev_region
for n in 1 2 3; do
  python3 - "$MERIDIAN_DIR/node-$n.toml" "${SNAPSHOT_EVERY:-1000}" "${KEEP:-100}" "${PERCENT:-}" <<'PY'
import re, sys
p, every, keep, percent = sys.argv[1:5]
s = open(p).read()
s = re.sub(r'(?m)^(snapshot-logs-since-last|max-in-snapshot-log-to-keep|snapshot-log-size-percent) = .*\n', '', s)
if '[raft]\n' not in s:
    s += '\n[raft]\n'
extra = f'snapshot-log-size-percent = {percent}\n' if percent else ''
s = s.replace('[raft]\n', f'[raft]\nsnapshot-logs-since-last = {every}\nmax-in-snapshot-log-to-keep = {keep}\n{extra}', 1)
open(p, 'w').write(s)
PY
done
rm -f "$MERIDIAN_DIR/dev.env"
start_dev_region

pid() { cat "$MERIDIAN_DIR/node-$1.pid"; }
log() { echo "$MERIDIAN_DIR/node-$1.log"; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$(pid "$1")/status"; }

send() { # seconds label -> ops
  "$BENCH" send --clients "$CLIENTS" --conns 4 --users 2000 --duration "$1" --warmup 0 --pairs existing \
    --label "$2" >"$OUT/$2.json" 2>"$OUT/$2.log"
  python3 -c "import json,sys; l=[x for x in open(sys.argv[1]) if x.strip().startswith('{')][-1]; print(json.loads(l)['ops'])" "$OUT/$2.json"
}

TOTAL=0
ROUND=0
printf '%-9s %-8s %9s %9s %9s %9s %9s %9s %12s %12s %9s %7s %7s %7s\n' messages archive "rss1-MB" "rss2-MB" "rss3-MB" \
  "peak-MB" "disk-MB" "snap-MB" "build-ms" "install-ms" sends/s p50 p99 builds
for target in "${CHECKPOINTS[@]}"; do
  kill -STOP "$(pid 3)"
  installs_before=$(grep -c "installed snapshot" "$(log 3)" || true)
  while [ "$TOTAL" -lt "$target" ]; do
    ROUND=$((ROUND + 1))
    ops=$(send 20 "fill-$ROUND")
    # Each run's set-up sends one message to each of its 1,000 conversations.
    TOTAL=$((TOTAL + ops + 1000))
  done
  kill -CONT "$(pid 3)"
  # Node 3 catches up: by snapshot where its log was purged behind it (every shard, when
  # snapshots are frequent enough; give up waiting after 5 minutes).
  # Node 3 has caught up when every shard's applied index is within 100 of node 1's.
  applied() { # node -> "index index ..."
    port=$(sed -n 's/^http-listen = "127.0.0.1:\([0-9]*\)"/\1/p' "$MERIDIAN_DIR/node-$1.toml")
    curl -s "http://127.0.0.1:$port/metrics" | awk '/^meridian_shard_applied_index/ {print $2}' | tr '\n' ' '
  }
  for _ in $(seq 1 300); do
    # shellcheck disable=SC2046
    python3 -c 'import sys; a, b = sys.argv[1].split(), sys.argv[2].split(); sys.exit(0 if a and len(a) == len(b) and all(int(y) + 100 >= int(x) for x, y in zip(a, b)) else 1)' \
      "$(applied 1)" "$(applied 3)" && break
    sleep 1
  done
  sleep 5
  measure=$(send 8 "measure-$target")
  python3 - "$OUT/measure-$target.json" "$TOTAL" "${ARCHIVE:-off}" "$MERIDIAN_DIR" \
    "$(status_kb 1 VmRSS)" "$(status_kb 2 VmRSS)" "$(status_kb 3 VmRSS)" \
    "$(for n in 1 2 3; do status_kb "$n" VmHWM; done | sort -n | tail -1)" "$installs_before" <<'PY'
import glob, json, os, re, sys
j, total, archive, d = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rss = [int(x) / 1024 for x in sys.argv[5:8]]
peak = int(sys.argv[8]) / 1024
installs_before = int(sys.argv[9])
r = json.loads([l for l in open(j) if l.strip().startswith('{')][-1])
def du(p):
    return sum(os.path.getsize(os.path.join(a, f)) for a, _, fs in os.walk(p) for f in fs if os.path.exists(os.path.join(a, f)))
disk = max(du(p) for p in glob.glob(f'{d}/node-*/') if os.path.isdir(p)) / 2**20 if glob.glob(f'{d}/node-*/') else 0
snap = max((os.path.getsize(p) for p in glob.glob(f'{d}/**/shard-*.snap', recursive=True)), default=0) / 2**20
num = lambda k, l: int(re.search(k + r'=(\d+)', l).group(1)) if re.search(k + r'=(\d+)', l) else 0
built = sorted(l for n in (1, 2, 3) for l in open(f'{d}/node-{n}.log') if 'built snapshot' in l)
installed = [l for l in open(f'{d}/node-3.log') if 'installed snapshot' in l][installs_before:]
build_ms = max((num('elapsed_ms', l) for l in built[-4:]), default=0)
install_ms = max((num('elapsed_ms', l) for l in installed), default=0)
print(f"{total:<9} {archive:<8} {rss[0]:9.0f} {rss[1]:9.0f} {rss[2]:9.0f} {peak:9.0f} {disk:9.0f} {snap:9.1f} "
      f"{build_ms:12d} {install_ms:12d} {r['ops_per_s']:9.0f} {r['p50_ms']:7.2f} {r['p99_ms']:7.2f} {len(built):7d}")
PY
  TOTAL=$((TOTAL + measure + 1000))
done
echo "raw output: $OUT"
