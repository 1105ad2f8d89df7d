#!/usr/bin/env python3
"""Markdown tables for bench/tls.sh from its raw result lines.

Each input line: "scenario=ID server=S round=R key=value ...". Figures are
medians over the rounds with (min–max); ratios are taken between medians.
Standard library only.

    tls_report.py RAW --conn-conns N --ka-conns N --idle-conns N --subs N --msgs N --duration S
"""

import argparse
import statistics

SERVERS = ["linger", "nginx", "lighttpd"]


def load(path):
    runs = []
    with open(path) as f:
        for line in f:
            rec = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            if rec:
                runs.append(rec)
    return runs


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


class Data:
    def __init__(self, runs):
        self.runs = runs

    def rows(self, sid, srv):
        return [r for r in self.runs if r["scenario"] == sid and r["server"] == srv and "note" not in r]

    def vals(self, sid, srv, key):
        return [x for x in (num(r.get(key)) for r in self.rows(sid, srv)) if x is not None]

    def med(self, sid, srv, key):
        v = self.vals(sid, srv, key)
        return statistics.median(v) if v else None

    def note(self, sid, srv):
        notes = sorted({r["note"] for r in self.runs if r["scenario"] == sid and r["server"] == srv and "note" in r})
        return ", ".join(n.replace("_", " ") for n in notes)

    def first(self, sid, srv, key):
        for r in self.rows(sid, srv):
            if key in r:
                return r[key]
        return None


def f_num(x):
    if x is None:
        return "n/a"
    if abs(x) >= 100:
        return f"{x:,.0f}".replace(",", " ")
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def f_int(x):
    return "n/a" if x is None else f"{x:,.0f}".replace(",", " ")


def spread(vals, fmt=f_num):
    if not vals:
        return "n/a"
    m = fmt(statistics.median(vals))
    return m if len(vals) == 1 else f"{m} ({fmt(min(vals))}–{fmt(max(vals))})"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def f_ratio(x):
    return "n/a" if x is None else f"{x:.2f}"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    print("\n".join(out))


def tls_of(d, sid, srv):
    p, c, g = d.first(sid, srv, "proto"), d.first(sid, srv, "cipher"), d.first(sid, srv, "group")
    return f"{p} {c} {g}" if p and p != "plain" else ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("raw")
    for opt in ("--conn-conns", "--ka-conns", "--idle-conns", "--subs", "--msgs", "--duration"):
        ap.add_argument(opt, type=int, required=True)
    a = ap.parse_args()
    d = Data(load(a.raw))

    # ---------------------------------------------------------------- headline
    heads = [
        ("New TLS connections/s, full handshake, one request each", "conn-full", "per_s", "higher"),
        ("Server CPU µs per new connection, full handshake", "conn-full", "server_cpu_us_per_conn", "lower"),
        ("New TLS connections/s, resumed (TLS 1.3 ticket)", "conn-resumed", "per_s", "higher"),
        ("Server CPU µs per new connection, resumed", "conn-resumed", "server_cpu_us_per_conn", "lower"),
        ("Keep-alive requests/s over TLS (13 B, %d conns)" % a.ka_conns, "ka-tls", "per_s", "higher"),
        ("Server CPU µs per keep-alive request over TLS", "ka-tls", "server_cpu_us_per_req", "lower"),
        ("Keep-alive requests/s, plain HTTP (baseline)", "ka-plain", "per_s", "higher"),
        ("Server CPU µs per keep-alive request, plain HTTP", "ka-plain", "server_cpu_us_per_req", "lower"),
        ("SSE over TLS: deliveries/s (%d subscribers × %d messages)" % (a.subs, a.msgs), "sse-tls",
         "deliveries_per_s", "higher"),
        ("SSE over TLS: server CPU µs per delivery", "sse-tls", "server_cpu_us_per_delivery", "lower"),
        ("SSE plain: server CPU µs per delivery (baseline)", "sse-plain", "server_cpu_us_per_delivery", "lower"),
        ("Bytes per idle keep-alive TLS connection (%d conns)" % a.idle_conns, "idle-tls", "bytes_per_conn", "lower"),
        ("Bytes per idle keep-alive plain connection (baseline)", "idle-plain", "bytes_per_conn", "lower"),
    ]
    print("## Summary")
    print()
    print("Medians over the rounds. Ratios are linger ÷ the other server: above 1 is better for linger in a "
          "rate, below 1 is better for linger in CPU or memory. nginx's SSE figures are nginx with the nchan "
          "module; lighttpd has no pub/sub (n/a).")
    print()
    rows = []
    for label, sid, key, better in heads:
        m = {s: d.med(sid, s, key) for s in SERVERS}
        rows.append([label] + [f_num(m[s]) for s in SERVERS]
                    + [f_ratio(ratio(m["linger"], m["nginx"])), f_ratio(ratio(m["linger"], m["lighttpd"]))])
    table(["Figure", "linger", "nginx", "lighttpd", "linger ÷ nginx", "linger ÷ lighttpd"], rows)
    print()
    cost = []
    for s in SERVERS:
        cost.append([
            s,
            f_ratio(ratio(d.med("ka-tls", s, "server_cpu_us_per_req"), d.med("ka-plain", s, "server_cpu_us_per_req"))),
            f_ratio(ratio(d.med("sse-tls", s, "server_cpu_us_per_delivery"),
                          d.med("sse-plain", s, "server_cpu_us_per_delivery"))),
            f_num(None if d.med("idle-tls", s, "bytes_per_conn") is None or d.med("idle-plain", s, "bytes_per_conn")
                  is None else d.med("idle-tls", s, "bytes_per_conn") - d.med("idle-plain", s, "bytes_per_conn")),
        ])
    print("What TLS adds, per server (TLS ÷ plain on the same server; memory as TLS − plain):")
    print()
    table(["Server", "CPU per keep-alive request", "CPU per SSE delivery", "bytes per idle connection"], cost)

    # ---------------------------------------------------------------- (a)
    print()
    print(f"## (a) New TLS connections, one request each ({a.conn_conns} concurrent clients, {a.duration} s)")
    print()
    print("`tlsload conn`: each of the clients connects, handshakes (verifying the certificate), sends `GET "
          "/hello.txt` with `Connection: close`, reads the whole response, sends close_notify and closes, then "
          "starts again. *Full*: no session is ever offered, so every handshake is a full one (ECDHE X25519 + "
          "an ECDSA P-256 signature by the server). *Resumed*: each client offers the session ticket of its "
          "previous connection (TLS 1.3 PSK with ECDHE: no signature, still a key exchange). The share of "
          "handshakes the server actually resumed is counted per connection (`SSL_session_reused`), not assumed. "
          "Server CPU is `/proc/PID/schedstat` over the run ÷ connections completed. Every handshake costs the "
          "client more than the server (it verifies two ECDSA signatures), so the load core is the limit "
          "when it is near 100% busy: then server CPU per connection is the figure to compare, not "
          "connections/s.")
    print()
    rows = []
    for sid, kind in (("conn-full", "full"), ("conn-resumed", "resumed")):
        for s in SERVERS:
            conns, reused = d.vals(sid, s, "conns"), d.vals(sid, s, "reused")
            share = [100 * r / c for r, c in zip(reused, conns) if c]
            rows.append([kind, s, spread(d.vals(sid, s, "per_s")), spread(d.vals(sid, s, "server_cpu_us_per_conn")),
                         spread(share, lambda x: f"{x:.1f}"), f_int(d.med(sid, s, "load_busy")),
                         f_int(sum(d.vals(sid, s, "failed"))) if d.rows(sid, s) else "n/a",
                         tls_of(d, sid, s) + (" " + d.note(sid, s) if d.note(sid, s) else "")])
    table(["Handshake", "Server", "connections/s", "server CPU µs/conn", "resumed %", "load core busy %",
           "failed", "negotiated"], rows)

    # ---------------------------------------------------------------- (b)
    print()
    print(f"## (b) Keep-alive requests over TLS (wrk -t1 -c{a.ka_conns}, 13 B file, {a.duration} s)")
    print()
    print("wrk (OpenSSL) opens its connections once and keeps them; the handshakes are a negligible part of "
          "the run. CPU/request: utime+stime of the server tree (`/proc/PID/stat`) ÷ responses; syscalls per "
          "request: `perf stat -e raw_syscalls:sys_enter` on the server tree.")
    print()
    rows = []
    for sid, kind in (("ka-tls", "TLS"), ("ka-plain", "plain")):
        for s in SERVERS:
            rows.append([kind, s, spread(d.vals(sid, s, "per_s")), f_num(d.med(sid, s, "p50_ms")),
                         spread(d.vals(sid, s, "p99_ms")), spread(d.vals(sid, s, "server_cpu_us_per_req")),
                         f_num(d.med(sid, s, "syscalls_per_req")), f_int(d.med(sid, s, "load_busy")),
                         f_int(sum(d.vals(sid, s, "errors"))) if d.rows(sid, s) else "n/a " + d.note(sid, s)])
    table(["", "Server", "req/s", "p50 ms", "p99 ms", "server CPU µs/req", "syscalls/req", "load core busy %",
           "errors"], rows)

    # ---------------------------------------------------------------- (c)
    print()
    print(f"## (c) Server-Sent Events over TLS ({a.subs} subscribers on one channel, {a.msgs} messages)")
    print()
    print(f"`tlsload sse`, on a freshly started server: {a.subs} `GET /sub/CH` requests with `Accept: "
          "text/event-stream` over HTTPS (at most 200 handshakes in flight); once every one has its response "
          f"head, {a.msgs} messages `m1`…`m{a.msgs}` are published back to back (each `POST /pub/CH` over "
          "plain HTTP on one keep-alive connection waits for the previous answer) while the same "
          "single-threaded client reads every subscriber. Each subscriber checks it read every `data: m<k>` "
          "line once and in order. *Deliveries/s* = deliveries ÷ (first publish → last delivery read). "
          "Server CPU: `/proc/PID/schedstat` from the first publish to the last delivery ÷ deliveries "
          "(publishing included). The same run over plain HTTP is the baseline.")
    print()
    rows = []
    for sid, kind in (("sse-tls", "TLS"), ("sse-plain", "plain")):
        for s in ("linger", "nginx"):
            name = s if s == "linger" else "nginx + nchan"
            if not d.rows(sid, s):
                rows.append([kind, name] + ["n/a"] * 7 + [d.note(sid, s)])
                continue
            rows.append([kind, name, spread(d.vals(sid, s, "deliveries_per_s")),
                         spread(d.vals(sid, s, "server_cpu_us_per_delivery")),
                         f"{d.med(sid, s, 'complete'):.0f} / {a.subs}",
                         f_int(sum(d.vals(sid, s, "out_of_order"))), f_num(d.med(sid, s, "burst_s")),
                         f_num(d.med(sid, s, "client_cpu_ms")), f_int(d.med(sid, s, "load_busy")),
                         f_num(d.med(sid, s, "subscribe_s"))])
    table(["", "Server", "deliveries/s", "server CPU µs/delivery", "subscribers with every message in order",
           "out of order or missing", "burst s", "client CPU ms in the burst", "load core busy % (whole run)",
           "subscribe all, s"], rows)

    # ---------------------------------------------------------------- (d)
    print()
    print(f"## (d) Memory per idle keep-alive connection ({a.idle_conns} connections)")
    print()
    print(f"`tlsload idle`, on a freshly started server: one warm-up request, server VmRSS (summed over its "
          f"process tree), then {a.idle_conns} connections each doing one `GET /hello.txt` (TLS: a full "
          "handshake first) and staying open and idle, VmRSS again 1 s later: bytes per connection = ΔRSS ÷ "
          "connections. RSS counts user-space memory only; kernel socket buffers are not included.")
    print()
    rows = []
    for sid, kind in (("idle-tls", "TLS"), ("idle-plain", "plain")):
        for s in SERVERS:
            lost = [(num(r.get("failed")) or 0) + (num(r.get("closed_by_server")) or 0) for r in d.rows(sid, s)]
            rows.append([kind, s, spread(d.vals(sid, s, "bytes_per_conn"), f_int),
                         f_num(d.med(sid, s, "before_kb") / 1024 if d.med(sid, s, "before_kb") else None),
                         f_num(d.med(sid, s, "after_kb") / 1024 if d.med(sid, s, "after_kb") else None),
                         f_int(d.med(sid, s, "open")), f_int(max(lost)) if lost else "n/a " + d.note(sid, s)])
    table(["", "Server", "bytes/conn", "RSS before MiB", "RSS after MiB", "connections open",
           "failed or closed by the server (max)"], rows)
    lt, lp = d.med("idle-tls", "linger", "bytes_per_conn"), d.med("idle-plain", "linger", "bytes_per_conn")
    print()
    print(f"linger's idle TLS connection ÷ its idle plain one: {f_ratio(ratio(lt, lp))}; ÷ nginx's idle TLS "
          f"connection: {f_ratio(ratio(lt, d.med('idle-tls', 'nginx', 'bytes_per_conn')))}; ÷ lighttpd's: "
          f"{f_ratio(ratio(lt, d.med('idle-tls', 'lighttpd', 'bytes_per_conn')))}.")


if __name__ == "__main__":
    main()
