#!/usr/bin/env python3
"""The table of bench/compare.sh: per workload and client count, each system's median over
the rounds, and the ratio Meridian / etcd.

usage: compare_table.py RESULTS.jsonl [NOTES.txt ...]

RESULTS holds one JSON line per run, as etcd-load and meridian-bench print them, plus
"system" (etcd | meridian). Labels are "<kind>-c<clients>-r<round>". NOTES files are copied
under the table verbatim (host, fsync probes).
"""

import json
import statistics
import sys

# (etcd kind, Meridian kind, row title)
PAIRS = [
    ("put", "send", "durable write: etcd put / Meridian send (200 B) to an existing conversation"),
    ("put", "sendnew", "durable write: etcd put / Meridian send (200 B), every send a first contact"),
    ("range-lin", "history-lin", "50-item read, linearizable: etcd range / Meridian history page"),
    ("range-ser", "history-local", "50-item read, serializable / local replica"),
]


def kind_and_clients(label):
    head, _, _round = label.rpartition("-r")
    kind, _, clients = head.rpartition("-c")
    return kind, int(clients)


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
            kind, clients = kind_and_clients(r["label"])
            runs.setdefault((r["system"], kind, clients), []).append(r)

    def med(rs, field):
        values = [r[field] for r in rs if r.get(field) is not None]
        return statistics.median(values) if values else None

    def cpu_per_op_us(rs):
        per = [r["server_cpu_s"] / r["ops"] * 1e6 for r in rs if r.get("ops") and r.get("server_cpu_s") is not None]
        return statistics.median(per) if per else None

    def fmt(v, digits=0):
        if v is None:
            return "–"
        return f"{v:,.{digits}f}"

    def ratio(a, b):
        if a is None or b is None or b == 0:
            return "–"
        return f"{a / b:.2f}×"

    print("| workload | clients | etcd ops/s | Meridian ops/s | ratio | etcd p50 ms | Meridian p50 ms "
          "| etcd p99 ms | Meridian p99 ms | errors (etcd / Meridian) | server CPU µs/op (etcd / Meridian) | runs |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for etcd_kind, our_kind, title in PAIRS:
        clients = sorted({c for (_, k, c) in runs if k in (etcd_kind, our_kind)})
        for c in clients:
            e = runs.get(("etcd", etcd_kind, c), [])
            m = runs.get(("meridian", our_kind, c), [])
            e_ops, m_ops = med(e, "ops_per_s"), med(m, "ops_per_s")
            errors = f"{sum(r.get('errors', 0) for r in e)} / {sum(r.get('errors', 0) for r in m)}"
            cpu = f"{fmt(cpu_per_op_us(e))} / {fmt(cpu_per_op_us(m))}"
            print(f"| {title} | {c} | {fmt(e_ops)} | {fmt(m_ops)} | {ratio(m_ops, e_ops)} "
                  f"| {fmt(med(e, 'p50_ms'), 2)} | {fmt(med(m, 'p50_ms'), 2)} "
                  f"| {fmt(med(e, 'p99_ms'), 2)} | {fmt(med(m, 'p99_ms'), 2)} | {errors} | {cpu} | {len(e)} / {len(m)} |")
    for path in sys.argv[2:]:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read().strip()
        except OSError:
            continue
        print()
        print("```")
        print(text)
        print("```")


if __name__ == "__main__":
    main()
