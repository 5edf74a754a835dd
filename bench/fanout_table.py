#!/usr/bin/env python3
"""The table of bench/fanout.sh: per group size, Prosody MUC's and Meridian's medians over
the rounds, and the ratio Meridian / Prosody.

usage: fanout_table.py RESULTS.jsonl [NOTES.txt ...]

RESULTS holds one JSON line per run: xmpp_load.py's MUC line or meridian-bench's fanout
line, plus "system" (prosody | meridian), "label" ("<kind>-m<members>-r<round>"),
"server_cores" and "loadgen_cores" (CPU over the measured window, in cores). NOTES files are
copied under the table verbatim.
"""

import json
import statistics
import sys

# (field, title, digits, compare): compare says whether the row gets a Meridian / Prosody ratio.
ROWS = [
    ("msgs_per_s", "messages/s (fully delivered; Prosody: sent)", 0, True),
    ("deliveries_per_s", "deliveries/s (member receipts)", 0, True),
    ("fanout_done_p50_ms", "p50 ms, send → last member", 1, True),
    ("fanout_done_p99_ms", "p99 ms, send → last member", 1, True),
    ("delivery_p50_ms", "p50 ms, send → one member", 1, True),
    ("delivery_p99_ms", "p99 ms, send → one member", 1, True),
    ("server_cores", "server CPU, cores", 2, True),
    ("loadgen_cores", "load generator CPU, cores", 2, False),
    ("errors", "errors (sum over rounds)", 0, False),
    ("durable", "durable (fsync'd on a majority)", None, False),
]


def members_of(label):
    """The group size of a run label: `<kind>-m<members>[-w<window>]-r<round>`."""
    head, _, _round = label.rpartition("-r")
    return int(head.rpartition("-m")[2].split("-w")[0])


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    runs = {}
    with open(sys.argv[1], encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            runs.setdefault((r["system"], members_of(r["label"]), r.get("window")), []).append(r)

    def med(rs, field):
        values = [r[field] for r in rs if r.get(field) is not None]
        return statistics.median(values) if values else None

    def fmt(v, digits):
        return "–" if v is None else f"{v:,.{digits}f}"

    for members, window in sorted({(m, w) for (_, m, w) in runs}, key=lambda k: (k[0], k[1] or 0)):
        p, m = runs.get(("prosody", members, window), []), runs.get(("meridian", members, window), [])
        print(
            f"**{members} members, 1 sender, window {window}** "
            f"(medians of {len(p)} Prosody / {len(m)} Meridian runs)"
        )
        print()
        print("| | Prosody MUC | Meridian | Meridian / Prosody |")
        print("|---|---:|---:|---:|")
        for field, title, digits, compare in ROWS:
            if field == "errors":
                pv, mv = sum(r.get("errors", 0) for r in p), sum(r.get("errors", 0) for r in m)
                print(f"| {title} | {pv} | {mv} | |")
                continue
            if field == "durable":
                print(f"| {title} | no (in memory) | yes | |")
                continue
            pv, mv = med(p, field), med(m, field)
            ratio = f"{mv / pv:.2f}×" if compare and pv and mv is not None else ""
            print(f"| {title} | {fmt(pv, digits)} | {fmt(mv, digits)} | {ratio} |")
        print()
    for path in sys.argv[2:]:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read().strip()
        except OSError:
            continue
        print("```")
        print(text)
        print("```")


if __name__ == "__main__":
    main()
