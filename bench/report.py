#!/usr/bin/env python3
"""Turn the raw per-run TSV files of the bench/ scripts into Markdown tables.

    report.py compare  --raw RAW --scenarios SCEN [--chart-json OUT] [--svg-name NAME]
    report.py fairness --raw RAW
    report.py idle     --raw RAW [--conns N]

Figures are medians over rounds with (min–max) spread.  Ratios are taken
between medians.  Standard library only.
"""

import argparse
import csv
import json
import math
import statistics
import sys

ORDER = ["linger", "nginx", "lighttpd", "h2o", "yardstick"]
PEERS = ["nginx", "lighttpd", "h2o"]


def num(v):
    if v is None or v in ("", "NA", "nan"):
        return None
    try:
        x = float(v)
    except ValueError:
        return None
    return None if math.isnan(x) else x


def read_tsv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def values(rows, key):
    return [x for x in (num(r.get(key)) for r in rows) if x is not None]


def med(xs):
    return statistics.median(xs) if xs else None


def f_rate(x):
    if x is None:
        return "n/a"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def f_pct(x):
    return "n/a" if x is None else f"{x:.0f}"


def f_num(x, digits=2):
    if x is None:
        return "n/a"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.{digits}f}"


def f_ms(x):
    if x is None:
        return "n/a"
    return f"{x:.3f}" if x < 1 else f_num(x)


def spread(xs, fmt):
    """'median (min–max)', or just the value for a single run."""
    if not xs:
        return "n/a"
    m = fmt(med(xs))
    if len(xs) == 1:
        return m
    return f"{m} ({fmt(min(xs))}–{fmt(max(xs))})"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def f_ratio(x):
    return "n/a" if x is None else f"{x:.2f}"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


# ------------------------------------------------------------------ compare


def compare(args):
    raw = read_tsv(args.raw)
    scenarios = []
    with open(args.scenarios) as f:
        for line in f:
            sid, label, kind, yard, *rest = line.rstrip("\n").split("\t")
            scenarios.append({"id": sid, "label": label, "kind": kind, "yard": yard == "1",
                              "short": rest[0] if rest and rest[0] else label})

    def runs(sid, server):
        return [r for r in raw if r["scenario"] == sid and r["server"] == server]

    def servers_for(s):
        return [x for x in ORDER if x != "yardstick" or s["yard"]]

    med_of = {}  # (sid, server, key) -> median
    rows = []
    for s in scenarios:
        if s["kind"] == "idle":
            continue
        for srv in servers_for(s):
            rr = runs(s["id"], srv)
            ok = [r for r in rr if num(r["rps"]) is not None]
            for key in ("rps", "p50_ms", "p99_ms", "cpu_us_req", "sys_req", "rss_kb", "load_busy"):
                med_of[(s["id"], srv, key)] = med(values(ok, key))
            errs = values(ok, "errors")
            note = ""
            if not ok:
                notes = sorted({r.get("note", "") for r in rr if r.get("note")})
                note = "; ".join(notes) or "not run"
            rows.append([
                s["label"], srv,
                spread(values(ok, "rps"), f_rate),
                f_ms(med(values(ok, "p50_ms"))),
                spread(values(ok, "p99_ms"), f_ms),
                spread(values(ok, "cpu_us_req"), f_num),
                f_num(med(values(ok, "sys_req"))),
                f_num(med([v / 1024 for v in values(ok, "rss_kb")]), 1),
                f_pct(med(values(ok, "load_busy"))),
                (f"{sum(errs):.0f}" if errs else "n/a") + (f" — {note}" if note else ""),
            ])
    print("## Results")
    print()
    print("req/s, p99 and CPU/request: median (min–max) over rounds; other columns: median. "
          "h2load reports no latency percentiles (n/a). Load core busy: how much of the load "
          "generator's core was in use during the run; when it is near full, the client, not the server, "
          "sets req/s, and CPU per request is the server's figure to compare.")
    print()
    print(table(["Scenario", "Server", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "syscalls/req",
                 "RSS MiB", "load core busy %", "errors"], rows))

    idle = [s for s in scenarios if s["kind"] == "idle"]
    for s in idle:
        print()
        print(f"### {s['label']}: server memory per connection")
        print()
        irows = []
        for srv in servers_for(s):
            rr = runs(s["id"], srv)
            ok = [r for r in rr if num(r["bytes_per_conn"]) is not None]
            bpc = values(ok, "bytes_per_conn")
            med_of[(s["id"], srv, "bpc")] = med(bpc)
            notes = [dict(kv.split("=", 1) for kv in r["note"].split()) for r in ok if r.get("note")]
            before = med([float(n["before_kb"]) / 1024 for n in notes if "before_kb" in n])
            after = med([float(n["after_kb"]) / 1024 for n in notes if "after_kb" in n])
            opened = med([float(n["open"]) for n in notes if "open" in n])
            lost = med([float(n["failed"]) + float(n["closed_by_server"]) for n in notes if "failed" in n])
            if not ok:
                why = "; ".join(sorted({r.get("note", "") for r in rr if r.get("note")})) or "not run"
                irows.append([srv, "n/a", "n/a", "n/a", "n/a", why])
                continue
            irows.append([srv, spread(bpc, lambda x: f"{x:.0f}"), f_num(before, 1), f_num(after, 1),
                          f"{opened:.0f}" if opened is not None else "n/a",
                          f"{lost:.0f} failed or closed by the server" if lost else ""])
        print(table(["Server", "bytes/conn", "RSS before MiB", "RSS after MiB", "conns open", "notes"], irows))

    # Ratios: linger against each other server, or nginx as the subject if
    # linger produced nothing (so the report is still useful).
    subject = "linger"
    if not any(med_of.get((s["id"], "linger", "rps")) for s in scenarios):
        subject = "nginx"
    # linger is left out when it produced nothing and nginx is the subject
    others = [x for x in ORDER if x not in (subject, "linger")]
    print()
    print(f"## Ratios ({subject} ÷ other)")
    print()
    if subject != "linger":
        print("linger produced no figures, so nginx stands in as the subject of the ratios.")
        print()
    print(f"req/s: above 1 means {subject} is faster. CPU/request and memory: below 1 means {subject} uses less.")
    print()
    rrows = []
    chart_tp, chart_cpu, chart_mem = [], [], []
    for s in scenarios:
        if s["kind"] == "idle":
            continue
        tp = {o: ratio(med_of.get((s["id"], subject, "rps")), med_of.get((s["id"], o, "rps"))) for o in others}
        cpu = {o: ratio(med_of.get((s["id"], subject, "cpu_us_req")), med_of.get((s["id"], o, "cpu_us_req")))
               for o in others}
        rrows.append([s["label"]] + [f_ratio(tp[o]) for o in others] + [f_ratio(cpu[o]) for o in others])
        chart_tp.append({"label": s["short"], "bars": [{"series": o, "value": tp[o]} for o in others]})
        chart_cpu.append({"label": s["short"], "bars": [{"series": o, "value": cpu[o]} for o in others]})
    print(table(["Scenario"] + [f"{subject}/{o} req/s" for o in others]
                + [f"{subject} CPU per request / {o}" for o in others], rrows))
    for s in idle:
        mo = [o for o in others if o != "yardstick" or s["yard"]]
        mem = {o: ratio(med_of.get((s["id"], subject, "bpc")), med_of.get((s["id"], o, "bpc"))) for o in mo}
        print()
        print(table(["Idle memory", *[f"{subject}/{o} bytes per connection" for o in mo]],
                    [[s["label"], *[f_ratio(mem[o]) for o in mo]]]))
        chart_mem.append({"label": s["short"], "bars": [{"series": o, "value": mem[o]} for o in mo]})
    if args.svg_name:
        print()
        print(f"![{subject} ratios]({args.svg_name})")
    if subject == "linger":
        targets(scenarios, med_of)

    if args.chart_json:
        chart = {
            "title": f"{subject} relative to the other servers (ratio of medians)",
            "series": others,
            "panels": [
                {"title": f"Throughput: {subject} req/s ÷ other req/s (higher is better for {subject})",
                 "groups": chart_tp},
                {"title": f"CPU time per request: {subject} ÷ other (lower is better for {subject})",
                 "groups": chart_cpu},
            ],
        }
        if chart_mem:
            chart["panels"].append({
                "title": f"Memory per idle connection: {subject} ÷ other (lower is better for {subject})",
                "groups": chart_mem})
        with open(args.chart_json, "w") as f:
            json.dump(chart, f, indent=1)


def targets(scenarios, med_of):
    """The performance targets, each as a ratio of medians inside this run:
    against the yardstick, or against the best peer (nginx, lighttpd, h2o)
    in that measure (most req/s, least CPU, lowest p99)."""
    ids = {s["id"] for s in scenarios}

    def get(sid, srv, key):
        return med_of.get((sid, srv, key))

    def best(sid, key, pick):
        have = [(get(sid, p, key), p) for p in PEERS if get(sid, p, key) is not None]
        return pick(have) if have else (None, None)

    rows = []

    def check(sid, what, mine, theirs, who, limit, lower_is_better):
        if sid not in ids:
            return
        r = ratio(mine, theirs)
        met = "n/a" if r is None else ("met" if (r <= limit if lower_is_better else r >= limit) else "not met")
        bound = f"≤ {limit}" if lower_is_better else f"≥ {limit}"
        rows.append([sid, what, who or "n/a", f_ratio(r), bound, met])

    for sid in ("hello-c10", "hello-c100", "hello-c1000"):
        check(sid, "CPU/request ÷ yardstick", get(sid, "linger", "cpu_us_req"),
              get(sid, "yardstick", "cpu_us_req"), "yardstick", 1.10, True)
    for sid in ("pipe-wrk", "pipe-h2load"):
        check(sid, "CPU/request ÷ yardstick", get(sid, "linger", "cpu_us_req"),
              get(sid, "yardstick", "cpu_us_req"), "yardstick", 1.6, True)
    p99, who = best("hello-c1000", "p99_ms", min)
    check("hello-c1000", "p99 ÷ best peer's", get("hello-c1000", "linger", "p99_ms"), p99, who, 0.8, True)
    for sid in ("100k-c100", "100k-c1000", "close-c50"):
        rps, who = best(sid, "rps", max)
        check(sid, "req/s ÷ best peer's", get(sid, "linger", "rps"), rps, who, 1.1, False)
        if sid != "close-c50":
            cpu, who = best(sid, "cpu_us_req", min)
            check(sid, "CPU/request ÷ best peer's", get(sid, "linger", "cpu_us_req"), cpu, who, 0.9, True)
        p99, who = best(sid, "p99_ms", min)
        check(sid, "p99 ÷ best peer's", get(sid, "linger", "p99_ms"), p99, who, 1.0, True)
    for s in scenarios:
        if s["kind"] == "idle":
            bpc = get(s["id"], "linger", "bpc")
            rows.append([s["id"], "bytes per idle connection", "–", "n/a" if bpc is None else f"{bpc:.0f}",
                         "≤ 150", "n/a" if bpc is None else ("met" if bpc <= 150 else "not met")])
    if rows:
        print()
        print("## Targets")
        print()
        print("Each a ratio of linger's median to the yardstick's, or to the best peer's in that measure "
              "(most req/s, least CPU per request, lowest p99), inside this run.")
        print()
        print(table(["Scenario", "measure", "against", "ratio", "target", "verdict"], rows))


# ------------------------------------------------------------------ fairness


def jain(xs):
    xs = [x for x in xs if x is not None]
    if not xs or sum(x * x for x in xs) == 0:
        return None
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs))


def fairness(args):
    raw = read_tsv(args.raw)
    servers = []
    for r in raw:
        if r["server"] not in servers:
            servers.append(r["server"])

    def phase(srv, ph):
        return [r for r in raw if r["server"] == srv and r["phase"] == ph and num(r["ord_rps"])]

    def paired(srv):
        """(alone, greedy) rows of the same round."""
        al = {r["round"]: r for r in phase(srv, "alone")}
        return [(al[r["round"]], r) for r in phase(srv, "greedy") if r["round"] in al]

    def p99_ratios(srv):
        out = []
        for a, g in paired(srv):
            x = ratio(num(g["p99_ms"]), num(a["p99_ms"]))
            if x is not None:
                out.append(x)
        return out

    def share(rr):
        out = []
        for r in rr:
            g, o = num(r["greedy_rps"]), num(r["ord_rps"])
            if g is not None and o is not None and g + o > 0:
                out.append(100 * g / (g + o))
        return out

    def total(rr):
        return [num(r["ord_rps"]) + (num(r["greedy_rps"]) or 0) for r in rr]

    def j3(x):
        return f"{x:.3f}"

    def pct(x):
        return f"{x:.0f}"

    def cpu(rr):
        s, lo = med(values(rr, "cpu_server")), med(values(rr, "cpu_load"))
        return "n/a" if s is None or lo is None else f"{s:.0f} / {lo:.0f}"

    def notes(srv):
        rr = [r for r in raw if r["server"] == srv]
        out = []
        oe = sum(values(rr, "ord_errors")) + sum(values(rr, "greedy_errors"))
        if oe:
            out.append(f"{oe:.0f} errors")
        orc = med(values([r for r in rr if r["phase"] == "greedy"], "ord_reconnects"))
        grc = med(values(rr, "greedy_reconnects"))
        if orc:
            out.append(f"ordinary reconnects {orc:.0f}/run")
        if grc:
            out.append(f"greedy reconnects {grc:.0f}/run")
        failed = sorted({r.get("note", "") for r in rr if r.get("note")})
        return "; ".join(out + failed)

    lat, thr = [], []
    for srv in servers:
        alone, greedy = phase(srv, "alone"), phase(srv, "greedy")
        if not alone and not greedy:
            lat.append([srv] + ["n/a"] * 6)
            thr.append([srv] + ["n/a"] * 10 + [notes(srv) or "no result"])
            continue
        lat.append([
            srv,
            spread(values(alone, "p50_ms"), f_ms), spread(values(greedy, "p50_ms"), f_ms),
            spread(values(alone, "p99_ms"), f_ms), spread(values(greedy, "p99_ms"), f_ms),
            "**" + spread(p99_ratios(srv), f_ratio) + "**" if p99_ratios(srv) else "n/a",
            spread(values(greedy, "p999_ms"), f_ms),
        ])
        thr.append([
            srv,
            f_rate(med(values(alone, "ord_rps"))), f_rate(med(values(greedy, "ord_rps"))),
            f_rate(med(values(greedy, "greedy_rps"))), spread(share(greedy), pct) + "%",
            f_rate(med(total(alone))) + " / " + f_rate(med(total(greedy))),
            spread(values(alone, "jain"), j3), spread(values(greedy, "jain"), j3),
            spread(values(greedy, "jain_all"), j3),
            cpu(alone), cpu(greedy),
            notes(srv),
        ])
    print("Ordinary clients' latency (ms):")
    print()
    print(table(["Server", "p50 alone", "p50 with greedy", "p99 alone", "p99 with greedy",
                 "p99 ratio with/alone", "p99.9 with greedy"], lat))
    print()
    print("Throughput, shares and fairness:")
    print()
    print(table(["Server", "ordinary req/s alone", "ordinary req/s with greedy", "greedy req/s",
                 "greedy share of responses", "all req/s alone / with greedy", "Jain ordinary alone",
                 "Jain ordinary with greedy", "Jain incl. greedy conns", "CPU busy % server / load, alone",
                 "CPU busy % with greedy", "notes"], thr))

    # The question the benchmark answers: does linger's ordinary-client p99
    # degrade less than each peer's?
    subject = "linger"
    peers = [s for s in PEERS if s in servers]
    mine = {a["round"]: ratio(num(g["p99_ms"]), num(a["p99_ms"])) for a, g in paired(subject)}
    if mine and peers:
        print()
        parts = []
        for peer in peers:
            theirs = {a["round"]: ratio(num(g["p99_ms"]), num(a["p99_ms"])) for a, g in paired(peer)}
            rounds = [k for k in mine if k in theirs and mine[k] is not None and theirs[k] is not None]
            wins = sum(1 for k in rounds if mine[k] < theirs[k])
            m, t = med(p99_ratios(subject)), med(p99_ratios(peer))
            verdict = "less" if m is not None and t is not None and m < t else "not less"
            parts.append(f"vs {peer}: median p99 ratio {f_ratio(m)} vs {f_ratio(t)} ({verdict}); "
                         f"linger's ratio was lower in {wins} of {len(rounds)} rounds")
        print(f"{subject}'s ordinary-client p99 degradation " + "; ".join(parts) + ".")

# ------------------------------------------------------------------ idle


def idle(args):
    raw = read_tsv(args.raw)
    servers = [s for s in ORDER if any(r["server"] == s for r in raw)]
    rows, meds = [], {}
    for srv in servers:
        rr = [r for r in raw if r["server"] == srv]
        ok = [r for r in rr if num(r["bytes_per_conn"]) is not None]
        if not ok:
            why = "; ".join(sorted({r.get("note", "") for r in rr if r.get("note")})) or "no result"
            rows.append([srv, "n/a", "n/a", "n/a", "n/a", "n/a", why])
            continue
        bpc = values(ok, "bytes_per_conn")
        meds[srv] = med(bpc)
        lost = med([num(r["failed"]) + num(r["closed"]) for r in ok])
        rows.append([
            srv, spread(bpc, lambda x: f"{x:.0f}"),
            f_num(med([v / 1024 for v in values(ok, "before_kb")]), 1),
            f_num(med([v / 1024 for v in values(ok, "after_kb")]), 1),
            f"{med(values(ok, 'open')):.0f}",
            f"{med(values(ok, 'seconds')):.1f}",
            f"{lost:.0f} failed or closed by the server" if lost else "",
        ])
    print(table(["Server", "bytes/conn", "RSS before MiB", "RSS after MiB", "conns open", "open time s", "notes"],
                rows))
    subject = "linger" if meds.get("linger") else "nginx"
    others = [s for s in servers if s not in (subject, "yardstick") and (s != "linger" or subject == "linger")]
    if meds.get(subject):
        print()
        print(table([f"{subject}/{o} bytes per connection" for o in others],
                    [[f_ratio(ratio(meds.get(subject), meds.get(o))) for o in others]]))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--raw", required=True)
    c.add_argument("--scenarios", required=True)
    c.add_argument("--chart-json")
    c.add_argument("--svg-name")
    fa = sub.add_parser("fairness")
    fa.add_argument("--raw", required=True)
    i = sub.add_parser("idle")
    i.add_argument("--raw", required=True)
    args = ap.parse_args()
    {"compare": compare, "fairness": fairness, "idle": idle}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
