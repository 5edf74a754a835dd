#!/usr/bin/env bash
# RocksDB size with and without the cold archive (docs/BENCHMARKS.md). For each mode — the
# archive off, then on with a hot window — a fresh 3-node `meridian dev` region takes
# `meridian-bench send` load in chunks until N messages are acknowledged; after each chunk the
# bytes on disk of node 1's RocksDB directory (all of it, and its SST files alone: the WAL
# swings by up to 128 MiB) and of the archive directory are recorded.
#
#   bench/archive_size.sh [--messages 1000000] [--chunk 60] [--users 200] [--clients 64]
#                         [--window 30s] [--profile release|dev] [--out DIR] [--no-build]
#
# Rows go to DIR/sizes.tsv (mode, messages, rocksdb bytes, sst bytes, archive bytes, sends/s); the table
# is printed and written to DIR/table.md. Sizes, not speed, are the point: the dev profile
# (the one the tests build) is fine for them.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MESSAGES=1000000
CHUNK=60
USERS=200
CLIENTS=64
WINDOW=30s
PROFILE=release
OUT=""
BUILD=1
while [ $# -gt 0 ]; do
  case $1 in
    --messages) MESSAGES=$2; shift 2 ;;
    --chunk) CHUNK=$2; shift 2 ;;
    --users) USERS=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --window) WINDOW=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
case $PROFILE in
  release) TARGET=release; CARGO_PROFILE=(--release) ;;
  dev) TARGET=debug; CARGO_PROFILE=() ;;
  *) echo "--profile is release or dev" >&2; exit 2 ;;
esac
OUT=${OUT:-$ROOT/target/bench/archive-size-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/archive-size.log
say() { echo "== $*" | tee -a "$LOG" >&2; }

if [ "$BUILD" = 1 ]; then
  say "build ($PROFILE)"
  (cd "$ROOT" && cargo build "${CARGO_PROFILE[@]}" --locked -p meridian-node -p meridian-bench) >>"$LOG" 2>&1
fi
MERIDIAN=$ROOT/target/$TARGET/meridian
BENCH=$ROOT/target/$TARGET/meridian-bench
MERIDIAN_BASE_PORT=${MERIDIAN_BASE_PORT:-17301}
# shellcheck source=bench/dev_region.sh
source "$ROOT/bench/dev_region.sh"
trap stop_dev_region EXIT INT TERM

printf 'mode\tmessages\trocksdb_bytes\tsst_bytes\tarchive_bytes\tsends_per_s\n' > "$OUT/sizes.tsv"
for mode in off on; do
  MERIDIAN_DIR=$OUT/$mode
  DEV_ARGS=""
  [ "$mode" = on ] && DEV_ARGS="--archive-hot-window $WINDOW"
  say "archive $mode: start the region${DEV_ARGS:+ ($DEV_ARGS)}"
  start_dev_region
  total=0
  while [ "$total" -lt "$MESSAGES" ]; do
    line=$("$BENCH" send --clients "$CLIENTS" --users "$USERS" --duration "$CHUNK" --warmup 0 \
      --label "archive-$mode" 2>>"$LOG" | tail -1)
    read -r ops rate < <(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r["ops"], round(r["ops_per_s"]))' "$line")
    total=$((total + ops))
    db=$(du -sb "$MERIDIAN_DIR/node-1/db" | cut -f1)
    sst=$(find "$MERIDIAN_DIR/node-1/db" -name '*.sst' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
    archive=0
    [ -d "$MERIDIAN_DIR/archive" ] && archive=$(du -sb "$MERIDIAN_DIR/archive" | cut -f1)
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$total" "$db" "$sst" "$archive" "$rate" >> "$OUT/sizes.tsv"
    say "archive $mode: $total messages, node 1 RocksDB $((db / 1048576)) MiB (SST $((sst / 1048576)) MiB), archive $((archive / 1048576)) MiB ($rate sends/s)"
  done
  stop_dev_region
done

python3 - "$OUT/sizes.tsv" > "$OUT/table.md" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
mib = lambda b: f"{int(b) / 1048576:,.1f}"
print("| archive | messages acknowledged | node 1 RocksDB (MiB) | its SST files (MiB) | archive (MiB) | sends/s in the chunk |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for r in rows:
    print(f"| {r['mode']} | {int(r['messages']):,} | {mib(r['rocksdb_bytes'])} | {mib(r['sst_bytes'])} | {mib(r['archive_bytes'])} | {r['sends_per_s']} |")
PY
cat "$OUT/table.md"
