#!/usr/bin/env python3
"""Markdown tables for bench/fanout.sh from its raw result lines.

Each input line: "ROUND mode=sse|lp key=value ...".  Prints one table per
mode: every metric's median with (min–max) over the rounds, and each round.

    fanout_report.py RAW SUBS MSGS
"""

import statistics
import sys


def load(path):
    runs = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            rec = {"round": int(parts[0])}
            for kv in parts[1:]:
                k, _, v = kv.partition("=")
                try:
                    rec[k] = float(v)
                except ValueError:
                    rec[k] = v
            runs.append(rec)
    return runs


def fmt(v, digits):
    if v is None:
        return "n/a"
    if digits == 0:
        return f"{v:,.0f}".replace(",", " ")
    return f"{v:.{digits}f}"


def table(runs, rows):
    rounds = [r["round"] for r in runs]
    head = "| metric | median (min–max) | " + " | ".join(f"round {n}" for n in rounds) + " |"
    print(head)
    print("|---|---|" + "---|" * len(rounds))
    for label, key, digits, scale in rows:
        vals = [r.get(key) for r in runs]
        vals = [None if v is None or isinstance(v, str) else v * scale for v in vals]
        present = [v for v in vals if v is not None]
        if present:
            med = statistics.median(present)
            spread = f"{fmt(med, digits)} ({fmt(min(present), digits)}–{fmt(max(present), digits)})"
            if min(present) == max(present):
                spread = fmt(med, digits)
        else:
            spread = "n/a"
        print(f"| {label} | {spread} | " + " | ".join(fmt(v, digits) for v in vals) + " |")


def main():
    raw, subs, msgs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    runs = load(raw)
    sse = [r for r in runs if r.get("mode") == "sse"]
    lp = [r for r in runs if r.get("mode") == "lp"]
    kib = 1 / 1024

    print(f"## SSE fan-out: {subs} subscribers, {msgs} messages")
    print()
    if sse:
        table(sse, [
            ("subscriptions established (client)", "established", 0, 1),
            ("`streaming` in /_status after subscribing", "streaming", 0, 1),
            ("time to subscribe all, s", "subscribe_ms", 2, 1e-3),
            ("deliveries received in order, exactly once", "received", 0, 1),
            ("deliveries expected", "expected", 0, 1),
            ("subscribers with every message once, in order", "complete", 0, 1),
            ("duplicate deliveries", "dup", 0, 1),
            ("gaps in a subscriber's sequence", "gaps", 0, 1),
            ("messages missing", "missing", 0, 1),
            ("ids not consecutive from the first publish's id", "bad_id", 0, 1),
            ("bodies differing from what was published", "bad_data", 0, 1),
            ("subscriptions ended by the server", "closed", 0, 1),
            ("**fan-out latency p50** (publish → last delivery), ms", "fan_p50_ms", 1, 1),
            ("**fan-out latency p99**, ms", "fan_p99_ms", 1, 1),
            ("fan-out latency max, ms", "fan_max_ms", 1, 1),
            ("publish → first delivery p50, ms", "first_p50_ms", 2, 1),
            ("**per-delivery latency p50**, ms", "lat_p50_ms", 1, 1),
            ("**per-delivery latency p99**, ms", "lat_p99_ms", 1, 1),
            ("per-delivery latency max, ms", "lat_max_ms", 1, 1),
            ("first → last publish, s", "pub_span_s", 2, 1),
            ("burst: first publish → last delivery, s", "burst_s", 2, 1),
            ("**deliveries per second** during the burst", "deliveries_per_s", 0, 1),
            ("server CPU during the burst, ms (/proc/PID/stat)", "cpu_burst_ms", 0, 1),
            ("server CPU during the burst, ms (schedstat)", "cpu_burst_sched_ms", 0, 1),
            ("server CPU per delivery, µs", "cpu_us_per_delivery", 2, 1),
            ("server CPU to accept the subscriptions, ms", "cpu_subscribe_ms", 0, 1),
            ("client CPU during the burst, ms", "client_cpu_burst_ms", 0, 1),
            ("server RSS before, MiB", "rss_before_kb", 1, kib),
            ("server RSS with all subscribed, MiB", "rss_subscribed_kb", 1, kib),
            ("server RSS after the burst, MiB", "rss_after_kb", 1, kib),
            ("server RSS 2 s after the burst, MiB", "rss_settled_kb", 1, kib),
            ("**server RSS per subscriber, bytes**", "bytes_per_sub", 0, 1),
            ("`delivered` counter increase", "server_delivered", 0, 1),
            ("`slow_subscribers_dropped`", "server_dropped_slow", 0, 1),
            ("client's idle /_status connection closed by the server", "status_reconnects", 0, 1),
            ("CPU steal during the run, %", "steal_pct", 1, 1),
        ])
    else:
        print("No SSE run produced a result.")
    print()
    print(f"## Long-poll fan-out: {subs} held requests, one publish")
    print()
    if lp:
        table(lp, [
            ("requests sent", "sent", 0, 1),
            ("`held` in /_status before the publish", "held", 0, 1),
            ("time to hold all, s", "hold_ms", 2, 1e-3),
            ("answered `200` with the message", "ok", 0, 1),
            ("answered other than `200`", "non200", 0, 1),
            ("`200` without the message", "bad_body", 0, 1),
            ("**per-request latency p50**, ms", "lat_p50_ms", 1, 1),
            ("**per-request latency p99**, ms", "lat_p99_ms", 1, 1),
            ("**until the last answer** (max), ms", "all_ms", 1, 1),
            ("server CPU answering, ms (/proc/PID/stat)", "cpu_ms", 0, 1),
            ("server CPU answering, ms (schedstat)", "cpu_sched_ms", 0, 1),
            ("server CPU per answer, µs", "cpu_us_per_answer", 2, 1),
            ("client CPU while answers arrived, ms", "client_cpu_ms", 0, 1),
            ("server RSS before, MiB", "rss_before_kb", 1, kib),
            ("server RSS with all held, MiB", "rss_held_kb", 1, kib),
            ("server RSS after answering, MiB", "rss_after_kb", 1, kib),
            ("server RSS 2 s after answering, MiB", "rss_settled_kb", 1, kib),
            ("**server RSS per held request, bytes**", "bytes_per_held", 0, 1),
            ("`delivered` counter increase", "server_delivered", 0, 1),
            ("client's idle /_status connection closed by the server", "status_reconnects", 0, 1),
            ("CPU steal during the run, %", "steal_pct", 1, 1),
        ])
    else:
        print("No long-poll run produced a result.")


if __name__ == "__main__":
    main()
