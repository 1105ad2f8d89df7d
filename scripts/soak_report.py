#!/usr/bin/env python3
"""Judge a soak run of scripts/soak.sh and print its Markdown summary.

    soak_report.py WORKDIR      (the environment carries soak.sh's figures)

Reads WORKDIR/samples.csv, wrk-*.txt, clients.json and server.err. Exits 1
if any check failed. The rules, and why they are what they are, are
written into the report itself (section "How the checks are judged").
"""

import csv
import json
import os
import re
import sys

work = sys.argv[1]
env = os.environ.get


def num(v, default=None):
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def mib(kb):
    return f"{kb / 1024:.1f} MiB" if kb is not None else "n/a"


def si(n):
    if n is None:
        return "n/a"
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e4:
        return f"{n / 1e3:.1f}k"
    return f"{n:.0f}"


secs = int(env("SOAK_SECS", "60"))
minutes = env("SOAK_MINUTES", "1")
checks = []  # (name, ok, detail)


def check(name, ok, detail):
    checks.append((name, bool(ok), detail))


# ------------------------------------------------------------------ samples

rows = []
with open(os.path.join(work, "samples.csv")) as f:
    for r in csv.DictReader(f):
        rows.append(r)
load_rows = [r for r in rows if r["phase"] == "load"]
warm_at = min(60, secs / 3)
warm_row = next((r for r in load_rows if num(r["t_s"]) >= warm_at), load_rows[-1] if load_rows else None)
after_warm = [r for r in load_rows if warm_row and num(r["t_s"]) >= num(warm_row["t_s"])]
base_rss = num(env("SOAK_BASE_RSS"))
base_fds = num(env("SOAK_BASE_FDS"))
final_rss = num(env("SOAK_FINAL_RSS"))
final_fds = num(env("SOAK_FINAL_FDS"))
warm_rss = num(warm_row["rss_kb"]) if warm_row else None
peak_rss = max((num(r["rss_kb"], 0) for r in after_warm), default=None)
peak_fds = max((num(r["fds"], 0) for r in rows), default=None)
end_load_row = load_rows[-1] if load_rows else None
end_rss = num(end_load_row["rss_kb"]) if end_load_row else None
requests_after_warm = None
if warm_row and end_load_row:
    a, b = num(warm_row["requests"]), num(end_load_row["requests"])
    if a is not None and b is not None:
        requests_after_warm = b - a

# Least-squares slope of RSS over the samples after warm-up, per minute.
slope = None
pts = [(num(r["t_s"]), num(r["rss_kb"])) for r in after_warm if num(r["rss_kb"]) is not None]
if len(pts) >= 3:
    n = len(pts)
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx > 0:
        slope = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx * 60

# ------------------------------------------------------------------ checks

died = env("SOAK_SERVER_DIED", "")
check("server stayed up", not died, died or "alive for the whole run")

if warm_rss is not None and final_rss is not None:
    limit = 1.5 * warm_rss + 4096
    sens = ""
    if requests_after_warm:
        sens = f"; a leak of {(limit - warm_rss) * 1024 / requests_after_warm:.1f} B per request would have crossed it"
    check(
        "RSS flat",
        final_rss <= limit and (peak_rss or 0) <= limit,
        f"after warm-up (t={warm_row['t_s']} s) {mib(warm_rss)}; peak after warm-up {mib(peak_rss)}; "
        f"after the drain {mib(final_rss)}; limit 1.5 x warm-up + 4 MiB = {mib(limit)}{sens}",
    )
else:
    limit = None
    check("RSS flat", False, "no samples")

fd_tol = 2
check(
    "descriptors back to the baseline",
    base_fds is not None and final_fds is not None and final_fds <= base_fds + fd_tol,
    f"baseline {base_fds:.0f}, after the drain {final_fds:.0f} (tolerance +{fd_tol}); peak during the run {peak_fds:.0f}",
)

st = {}
try:
    st = json.loads(env("SOAK_FINAL_STATUS") or "{}")
except ValueError:
    pass
check(
    "connections drained",
    env("SOAK_DRAINED") == "1",
    f"active {st.get('active', '?')} (at most 1: the /_status request itself), lingering {st.get('lingering', '?')}, "
    f"held {st.get('held', '?')}, streaming {st.get('streaming', '?')}",
)

# wrk: one SOAK line per run.
WRK = [
    ("wrk-keepalive", "keep-alive, 20 conns, mix of 13 B / 4 KiB / 1 MiB", env("SOAK_KA_CMD")),
    ("wrk-pipelined", "pipelined x16, 10 conns, 13 B", env("SOAK_PIPE_CMD")),
    ("wrk-close", "Connection: close, 10 conns, 13 B", env("SOAK_CLOSE_CMD")),
]
wrk = {}
for name, _, _ in WRK:
    text = ""
    try:
        with open(os.path.join(work, f"{name}.txt")) as f:
            text = f.read()
    except OSError:
        pass
    m = re.search(r"^SOAK (.*)$", text, re.M)
    if m:
        wrk[name] = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    else:
        wrk[name] = None
        tail = " / ".join(text.strip().splitlines()[-3:])
        check(f"{name} ran", False, f"no summary line: {tail[:200]!r}")

for name, label, _ in WRK:
    w = wrk[name]
    if not w:
        continue
    socket_errors = w["connect"] + w["read"] + w["write"] + w["timeout"]
    check(
        f"{name}: every request answered",
        w["requests"] > 0 and socket_errors == 0 and w["status"] == 0,
        f"{w['requests']} responses; socket errors connect {w['connect']}, read {w['read']}, "
        f"write {w['write']}, timeout {w['timeout']}; status >= 400: {w['status']}",
    )

clients = {}
try:
    with open(os.path.join(work, "clients.json")) as f:
        clients = json.load(f)
except (OSError, ValueError):
    pass
kinds = clients.get("kinds", {})
silent = [k for k, v in kinds.items() if v.get("ok", 0) == 0]
expected = ["publish", "longpoll", "longpoll-204", "sse", "sse-ping", "stream", "verify", "slow-head",
            "stalled-read", "malformed"]
missing = [k for k in expected if k not in kinds]
check(
    "protocol clients: zero failures",
    clients and clients.get("failures", 1) == 0 and env("SOAK_PY_RC") == "0" and not silent and not missing,
    f"{sum(v.get('ok', 0) for v in kinds.values())} checks passed, {clients.get('failures', '?')} failed"
    + (f"; never succeeded: {', '.join(silent)}" if silent else "")
    + (f"; never ran: {', '.join(missing)}" if missing else "")
    + (f"; exit code {env('SOAK_PY_RC')}" if env("SOAK_PY_RC") != "0" else ""),
)

check(
    "no refusals at the door",
    st.get("rejected", 1) == 0 and st.get("accept_errors", 1) == 0,
    f"rejected {st.get('rejected', '?')}, accept_errors {st.get('accept_errors', '?')} (the run stays far below --max-conns)",
)

check("GET /hello.txt after the soak", env("SOAK_HELLO_OK") == "1", "200, 13 bytes" if env("SOAK_HELLO_OK") == "1" else "no correct answer")
check(
    "SIGTERM: exit code 0",
    env("SOAK_SIGTERM_RC") == "0",
    f"exit code {env('SOAK_SIGTERM_RC')} after {env('SOAK_SIGTERM_SECS')} s",
)

err_lines = []
try:
    with open(os.path.join(work, "server.err"), errors="replace") as f:
        err_lines = f.read().splitlines()
except OSError:
    pass
bad = [l for l in err_lines if "panicked" in l or re.search(r"\bERROR\b", l)]
check("no panic or error in the server's log", not bad, (bad[0][:160] if bad else f"{len(err_lines)} log lines, none an error"))

# ------------------------------------------------------------------ report

failed = [c for c in checks if not c[1]]
out = []
w = out.append
w(f"# Soak: {minutes} min mixed load — {env('SOAK_STARTED_AT', '')[:10]}")
w("")
w(f"**{'PASS' if not failed else 'FAIL'}**: {len(checks) - len(failed)} of {len(checks)} checks passed.")
w("")
cpu0 = (env("SOAK_CPU_START") or "0 0").split()
cpu1 = (env("SOAK_CPU_END") or "0 0").split()
d = num(cpu1[1], 0) - num(cpu0[1], 0)
steal = 100 * (num(cpu1[0], 0) - num(cpu0[0], 0)) / d if d > 0 else 0
w(f"- Started {env('SOAK_STARTED_AT')}, commit {env('SOAK_COMMIT')}")
w(f"- Machine: {env('SOAK_MACHINE')}; load average at start {env('SOAK_LOAD_AVG_START')}, "
  f"at the end {env('SOAK_LOAD_AVG_END')}; CPU steal {steal:.1f}%")
w(f"- Load for {secs} s (all clients ended at t={env('SOAK_LOAD_END')} s); "
  + ("server pinned to CPU 0, every client to CPU 1" if env("SOAK_PINNED") == "1" else "no CPU pinning (fewer than 2 CPUs)"))
w(f"- Samples every {env('SOAK_SAMPLE_EVERY')} s in `{env('SOAK_CSV_NAME')}` beside this file")
w("")
w("| check | result | detail |")
w("| --- | --- | --- |")
for name, ok, detail in checks:
    w(f"| {name} | {'ok' if ok else '**FAILED**'} | {detail} |")
w("")

w("## Load")
w("")
w("| client | what | responses | per second | p50 / p99 ms | socket errors | status >= 400 |")
w("| --- | --- | --- | --- | --- | --- | --- |")
for name, label, _ in WRK:
    x = wrk[name]
    if not x:
        w(f"| {name} | {label} | n/a | | | | |")
        continue
    rate = x["requests"] / (x["duration_us"] / 1e6) if x["duration_us"] else 0
    se = x["connect"] + x["read"] + x["write"] + x["timeout"]
    lat = f"{x['p50_us'] / 1000:.2f} / {x['p99_us'] / 1000:.2f}"
    if name == "wrk-pipelined":
        lat += " (per batch of 16)"
    w(f"| {name} | {label} | {si(x['requests'])} | {si(rate)} | {lat} | {se} | {x['status']} |")
w(f"| server | `/_status` requests counter at the end | {si(st.get('requests'))} | | | | |")
w("")
w("Python protocol clients (`scripts/soak_clients.py`), checks passed / failed:")
w("")
w("| client | ok | failed | notes |")
w("| --- | --- | --- | --- |")
for k in expected + sorted(set(kinds) - set(expected)):
    v = kinds.get(k)
    if v is None:
        w(f"| {k} | 0 | 0 | did not run |")
        continue
    notes = ", ".join(f"{n} {v[n]}" for n in sorted(v) if n not in ("ok", "failed"))
    w(f"| {k} | {v.get('ok', 0)} | {v.get('failed', 0)} | {notes} |")
w("")
w(f"Messages published: {clients.get('published', 'n/a')}.")
if clients.get("first_failures"):
    w("")
    w("First failures:")
    w("")
    for line in clients["first_failures"]:
        w(f"- `{line}`")
w("")

w("## Resources")
w("")
w("| when | VmRSS | descriptors |")
w("| --- | --- | --- |")
w(f"| idle, after one GET of each file (baseline) | {mib(base_rss)} | {base_fds:.0f} |")
if warm_row:
    w(f"| end of warm-up, t={warm_row['t_s']} s | {mib(warm_rss)} | {warm_row['fds']} |")
w(f"| peak after warm-up | {mib(peak_rss)} | {peak_fds:.0f} (peak of the run) |")
if end_load_row:
    w(f"| last sample under load, t={end_load_row['t_s']} s | {mib(end_rss)} | {end_load_row['fds']} |")
w(f"| after the drain | {mib(final_rss)} | {final_fds:.0f} |")
w("")
if slope is not None:
    w(f"RSS trend after warm-up (least squares over {len(pts)} samples): {slope:+.0f} kB per minute.")
    w("")
# A condensed view: about a dozen rows.
step = max(1, len(rows) // 12)
keep = [r for i, r in enumerate(rows) if i % step == 0 or r["phase"] != "load" or i == len(rows) - 1]
seen = set()
w("| t (s) | phase | VmRSS kB | fds | active | held | streaming | lingering | requests | TIME-WAIT |")
w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for r in keep:
    if id(r) in seen:
        continue
    seen.add(id(r))
    w(f"| {r['t_s']} | {r['phase']} | {r['rss_kb']} | {r['fds']} | {r['active']} | {r['held']} | "
      f"{r['streaming']} | {r['lingering']} | {r['requests']} | {r['time_wait']} |")
w("")

w("## Server counters at the end")
w("")
w("`" + json.dumps(st, separators=(",", ":")) + "`")
w("")

w("## How the checks are judged")
w("")
w(f"- **RSS flat.** Warm-up is the first {warm_at:.0f} s of load (a third of the run, at most a minute): "
  "by then the buffer pool, the file cache, the channel histories (100 messages each) and the allocator's "
  "arenas have reached their working size, and everything else the server holds is bounded by the "
  "connection count, which the load keeps constant. So RSS must not grow after warm-up. The limit, "
  "1.5 x the warm-up RSS + 4 MiB, applies both to the peak under load and to the figure after the drain; "
  "the slack absorbs allocator fragmentation and page-granular RSS, and the table above gives the "
  "smallest per-request leak that would have crossed it (smaller in longer runs).")
w(f"- **Descriptors.** The baseline is taken idle after one GET of each file, because the file cache "
  f"keeps a descriptor open for large files. After the load, once `/_status` shows only its own "
  f"connection and nothing lingering, the count must be within +{fd_tol} of the baseline.")
w("- **wrk.** `status >= 400` is wrk's \"Non-2xx or 3xx responses\" (it counts statuses above 399); "
  "every request here is for an existing file, so it must be 0. Socket errors (connect, read, write, "
  "timeout over 5 s) must be 0 in all three runs. In the Connection: close run, wrk sees the "
  "`Connection: close` in each response and closes and reconnects itself before reading on, so the "
  "server's FIN is never counted as a read error, and linger waits for the client's FIN, so no request "
  "meets a reset. The only errors that run could legitimately show are connect errors from running out "
  "of local ports (EADDRNOTAVAIL, a client-side limit); the TIME-WAIT column shows how far from that "
  "the run stayed (net.ipv4.tcp_tw_reuse lets loopback reuse them), so they are not excused. Requests "
  "still in flight when wrk's duration ends are not counted by wrk at all; a connection's 1000th "
  "response (--max-requests) carries `Connection: close` and wrk reconnects, which is not an error "
  "either; in the pipelined run the unanswered rest of that batch is not counted, and a new batch goes out on the new connection.")
w("- **Protocol clients.** Every answer is checked: ids consecutive per subscriber across reconnects "
  "(Last-Event-ID / since), message bodies intact, file bodies byte-for-byte, 408 within "
  "[timeout - 0.5 s, timeout + 4 s] then a clean EOF, 204 at the long-poll timeout, pings at most "
  "2 x --sse-ping + 1 s apart, malformed heads answered 4xx/5xx then a clean EOF (a reset fails), "
  "stalled readers of 8 MiB dropped by the send timeout. At the end every subscriber must have seen "
  "the last published message. Any failure fails the soak.")
w("")
w("## Commands")
w("")
w("```")
for key in ("SOAK_SERVER_CMD", "SOAK_KA_CMD", "SOAK_PIPE_CMD", "SOAK_CLOSE_CMD", "SOAK_PY_CMD"):
    w(env(key, ""))
w("```")
w("")
w("MIX = 64 paths per cycle: 60 x /hello.txt, 3 x /4k.bin, 1 x /1m.bin. Run with "
  f"`scripts/soak.sh {minutes}`.")

print("\n".join(out))
sys.exit(1 if failed else 0)
