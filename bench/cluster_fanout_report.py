#!/usr/bin/env python3
"""Markdown tables for bench/cluster_fanout.sh from its raw result lines.

Each input line: "ROUND config=single|single-broker|cluster key=value ...".
Prints the configurations side by side (median and min–max over the
rounds), the cluster's ratios to the single instance, and each
configuration's rounds.

    cluster_fanout_report.py RAW SUBS MSGS
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fanout_report import fmt, load, table  # noqa: E402

CONFIGS = ["single", "single-broker", "cluster"]

# (label, key, digits, scale); a key a configuration lacks is left blank.
ROWS = [
    ("subscribers with every message once, in order", "complete", 0, 1),
    ("deliveries received in order, exactly once", "received", 0, 1),
    ("deliveries expected", "expected", 0, 1),
    ("duplicates / gaps / missing / bad ids / bad bodies", None, 0, 1),
    ("subscriptions ended by the server", "closed", 0, 1),
    ("**deliveries per second**", "deliveries_per_s", 0, 1),
    ("**fan-out latency p50** (publish → last delivery), ms", "fan_p50_ms", 1, 1),
    ("**fan-out latency p99**, ms", "fan_p99_ms", 1, 1),
    ("publish → first delivery p50, ms", "first_p50_ms", 2, 1),
    ("per-delivery latency p50, ms", "lat_p50_ms", 1, 1),
    ("per-delivery latency p99, ms", "lat_p99_ms", 1, 1),
    ("first → last publish, s", "pub_span_s", 2, 1),
    ("burst: first publish → last delivery, s", "burst_s", 2, 1),
    ("**server CPU per delivery**, all instances, µs", "cpu_us_per_delivery", 2, 1),
    ("instance A CPU per delivery (its subscribers'), µs", "a_cpu_us_per_delivery", 2, 1),
    ("instance B CPU per delivery (its subscribers'), µs", "b_cpu_us_per_delivery", 2, 1),
    ("server CPU during the burst, all instances, ms", "cpu_burst_sched_ms", 0, 1),
    ("instance A CPU during the burst, ms", "a_cpu_burst_sched_ms", 0, 1),
    ("instance B CPU during the burst, ms", "b_cpu_burst_sched_ms", 0, 1),
    ("**Redis CPU per message**, µs (utime+stime, 10 ms ticks)", "redis_cpu_us_per_msg", 0, 1),
    ("**Redis CPU per message**, µs (schedstat)", "redis_cpu_sched_us_per_msg", 1, 1),
    ("Redis CPU during the burst, ms (schedstat)", "redis_cpu_sched_ms", 2, 1),
    ("Redis CPU while idle before the burst, ms per s", "redis_idle_ms_per_s", 2, 1),
    ("scripts run in Redis (EVALSHA: publishes and history ranges)", "redis_evalsha_calls", 0, 1),
    ("Redis's time inside each script call, µs (commandstats, wall time)", "redis_evalsha_us_per_call", 1, 1),
    ("client CPU during the burst, ms", "client_cpu_burst_ms", 0, 1),
    ("deliveries per subscriber read (messages the server put in one write)", "deliveries_per_read", 2, 1),
    ("server RSS per subscriber, all instances, bytes", "bytes_per_sub", 0, 1),
    ("`delivered` counters' increase, all instances", "server_delivered", 0, 1),
    ("`slow_subscribers_dropped`", "server_dropped_slow", 0, 1),
    ("CPU steal during the run, %", "steal_pct", 1, 1),
    ("1-minute load average at the run's start", "load1", 2, 1),
]
ERROR_KEYS = ["dup", "gaps", "missing", "bad_id", "bad_data"]


def summary(vals, digits):
    present = [v for v in vals if isinstance(v, float)]
    if not present:
        return ""
    med = statistics.median(present)
    if min(present) == max(present):
        return fmt(med, digits)
    return f"{fmt(med, digits)} ({fmt(min(present), digits)}–{fmt(max(present), digits)})"


def median(runs, key):
    vals = [r[key] for r in runs if isinstance(r.get(key), float)]
    return statistics.median(vals) if vals else None


def main():
    raw, subs, msgs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    runs = load(raw)
    by = {c: [r for r in runs if r.get("config") == c] for c in CONFIGS}
    print(f"## Side by side: {subs} SSE subscribers, {msgs} messages")
    print()
    print("| metric | " + " | ".join(f"{c} ({len(by[c])} runs)" for c in CONFIGS) + " |")
    print("|---|" + "---|" * len(CONFIGS))
    for label, key, digits, scale in ROWS:
        cells = []
        for c in CONFIGS:
            if key is None:  # the error counts, one cell
                cells.append(" / ".join(fmt(max((r.get(k, 0.0) for r in by[c]), default=None), 0)
                                        for k in ERROR_KEYS) + " (max)" if by[c] else "")
                continue
            vals = [r.get(key) for r in by[c]]
            cells.append(summary([v * scale if isinstance(v, float) else v for v in vals], digits))
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()
    single, cluster = by["single"], by["cluster"]
    if single and cluster:
        parts = []
        for label, key in [("deliveries/s", "deliveries_per_s"), ("fan-out p50", "fan_p50_ms"),
                           ("fan-out p99", "fan_p99_ms"), ("server CPU per delivery", "cpu_us_per_delivery")]:
            s, c = median(single, key), median(cluster, key)
            if s and c is not None:
                parts.append(f"{label} {c / s:.2f}×")
        brk = by["single-broker"]
        if brk:
            s, b = median(single, "cpu_us_per_delivery"), median(brk, "cpu_us_per_delivery")
            if s and b is not None:
                parts.append(f"single-broker ÷ single server CPU per delivery {b / s:.2f}×")
        print("Ratios of the medians, cluster ÷ single: " + "; ".join(parts) + ".")
        print()
    for c in CONFIGS:
        if not by[c]:
            print(f"No {c} run produced a result.")
            print()
            continue
        print(f"### {c}, each round")
        print()
        table(by[c], [row for row in ROWS if row[1] and any(row[1] in r for r in by[c])]
              + [("client exit status (0: every check passed)", "exit", 0, 1)])
        print()


if __name__ == "__main__":
    main()
