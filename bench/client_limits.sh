#!/usr/bin/env bash
# Two experiments for the compare.sh figures that the load generator, not
# the server, may be setting.  On this 2-core machine wrk runs on the other
# core and saturates it first, so a server can only be as fast as wrk lets it
# be, and two things that wrk pays for depend on what the server sends:
#
#  1. Response size (pipelined x16).  wrk parses every response header byte
#     by byte.  Runs the yardstick with its canned 97-byte response, the same
#     yardstick compiled with linger's exact response bytes (captured from
#     the running linger), and linger itself.  If linger runs close to the
#     second, the gap to the first is the cost of the bytes in wrk.
#
#  2. Who closes first (a new connection per request).  Whichever side sends
#     the first FIN keeps the TIME_WAIT state (seed 001; seed 002 §7).
#     linger lets the client close first when it asked for Connection: close,
#     so TIME_WAIT lands on wrk, whose connect() must then search its
#     ephemeral ports past TIME_WAIT sockets.  Runs linger as shipped (wrk
#     sends Connection: close, linger waits for wrk's FIN), linger with
#     --max-requests 1 and no Connection: close from wrk (linger closes
#     first; the same code path that caps requests), nginx and lighttpd
#     (both close first), all with the load host's default ephemeral port
#     range, and linger as shipped once more with the range widened
#     (WIDE_PORT_RANGE, as compare.sh runs).  connect() may reuse a client
#     TIME_WAIT port only once the second has turned, so the default range
#     caps a client-first close near (ports / 2) connections per second.
#     Reports wrk's own CPU per connection, who holds the TIME_WAIT sockets,
#     and the share of the load core's samples in the kernel's port search
#     (perf record on that core).
#
#   bench/client_limits.sh            # 5 + 3 rounds, about 5 minutes
#   ROUNDS=3 DURATION=3 bench/client_limits.sh
#
# Environment as in lib.sh (BASE_PORT, SERVER_CPU, LOAD_CPU, LINGER_BUILD,
# YARDSTICK, KEEP_WORK).  Output: bench/results/YYYY-MM-DD-client-limits.md
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${ROUNDS:-5}
CLOSE_ROUNDS=${CLOSE_ROUNDS:-3}
DURATION=$(seconds_of "${DURATION:-5}")
CLOSE_DURATION=$(seconds_of "${CLOSE_DURATION:-8}")
PIPE_DEPTH=${PIPE_DEPTH:-16}
# Kernel functions of connect()'s ephemeral-port search over TIME_WAIT
# sockets (net/ipv4/inet_hashtables.c, tcp_ipv4.c).
PORT_SEARCH='^(__inet_hash_connect|__inet_check_established|tcp_twsk_unique|inet_bhash2_addr_any_conflict|inet_bind_conflict|__inet_bhash2_update_saddr)$'

bench_setup
build_ceiling
prepare_servers
[[ ${AVAILABLE[linger]:-0} == 1 ]] || die "linger is not available: ${WHY_NOT[linger]:-}"
[[ ${AVAILABLE[yardstick]:-0} == 1 ]] || die "the yardstick is not available: ${WHY_NOT[yardstick]:-}"

mkdir -p "$RESULTS_DIR"
OUT_MD=$RESULTS_DIR/$(date +%F)-client-limits.md
RAW=$WORK/raw.tsv
: >"$RAW"
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
DEFAULT_RANGE=$(sysctl -n net.ipv4.ip_local_port_range | tr '\t' '-')
STAT0=$(cpu_stat)

# Two more servers beside lib.sh's four.
PORT[sized]=$((BASE_PORT + 5))
PORT[linger-sf]=$((BASE_PORT + 6))
SCMD[linger-sf]=${SCMD[linger]/--listen 127.0.0.1:${PORT[linger]}/--listen 127.0.0.1:${PORT[linger-sf]}}
SCMD[linger-sf]=${SCMD[linger-sf]/--max-requests 1000000/--max-requests 1}
[[ ${SCMD[linger-sf]} == *"--max-requests 1"* ]] || SCMD[linger-sf]+=" --max-requests 1"
AVAILABLE[linger-sf]=1

start_server linger || die "linger did not start: ${WHY_NOT[linger]:-}"

# The yardstick answering with linger's bytes: capture one response to
# GET /hello.txt (the one wrk's pipeline asks for) and compile it in.
python3 - "${PORT[linger]}" "$YARDSTICK" "$WORK/sized.c" "$WORK/linger-response.txt" <<'PY'
import re, socket, sys
port, src, dst, copy = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
    s.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    data = b""
    while not data.endswith(b"Hello, World!"):
        chunk = s.recv(4096)
        if not chunk:
            sys.exit("linger closed before a whole response")
        data += chunk
open(copy, "wb").write(data)
literal = '"' + "".join(
    c if c.isalnum() or c in " :;,.=/-_!()" else "\\x%02x" % ord(c) for c in data.decode("ascii")
) + '"'
# \xNN escapes swallow following hex digits, so end the literal after each.
literal = re.sub(r'(\\x[0-9a-f]{2})(?=[0-9a-fA-F])', r'\1" "', literal)
text = open(src).read()
pattern = re.compile(r"static const char RESP\[\] =.*?;", re.S)
if len(pattern.findall(text)) != 1:
    sys.exit("ceiling.c: expected exactly one RESP initializer")
open(dst, "w").write(pattern.sub(lambda _: "static const char RESP[] = " + literal + ";", text))
PY
cc -O2 -o "$WORK/sized" "$WORK/sized.c" || die "the sized yardstick did not compile"
SCMD[sized]="$WORK/sized ${PORT[sized]}"
AVAILABLE[sized]=1
record_cmd "cc -O2 -o sized sized.c   # ceiling.c with RESP = linger's response to GET /hello.txt"

YARD_BYTES=$(printf 'HTTP/1.1 200 OK\r\nServer: ceiling\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!' | wc -c)
LINGER_BYTES=$(wc -c <"$WORK/linger-response.txt")

for s in yardstick sized linger-sf nginx lighttpd; do
  start_server "$s" || warn "$s did not start; its rows will be missing"
done

# Runs "$@" on the load core and prints "user_ticks system_ticks" of it: the
# child times a shell collects when it waits for the command.
timed_load() { # out-file command...
  local out=$1
  shift
  # shellcheck disable=SC2016  # expanded by the inner shell
  taskset -c "$LOAD_CPU" bash -c '"$@" >"$0" 2>&1; read -r -a f </proc/$$/stat; echo "${f[15]} ${f[16]}"' "$out" "$@"
}

tw_count() { ss -Htan state time-wait "$@" | wc -l; }

# ------------------------------------------------ 1. response size
for ((round = 1; round <= ROUNDS; round++)); do
  log "response size: round $round/$ROUNDS"
  for s in yardstick sized linger; do
    [[ -n ${SPID[$s]:-} ]] || continue
    out=$WORK/pipe.$s.$round.txt
    cmd=(wrk -t1 -c100 -d"${DURATION}s" -s "$BENCH_DIR/pipeline.lua" "http://127.0.0.1:${PORT[$s]}/hello.txt" -- "$PIPE_DEPTH")
    record_cmd "taskset -c $LOAD_CPU ${cmd[*]}"
    t0=$(cpu_ticks "${SPID[$s]}")
    read -r wu ws < <(timed_load "$out" "${cmd[@]}")
    t1=$(cpu_ticks "${SPID[$s]}")
    parse_wrk_result "$out" || true
    printf 'pipe\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\tNA\tNA\n' "$s" "$round" "$R_REQS" "$R_DUR_US" "$R_P99_US" \
      $((t1 - t0)) "$wu" "$ws" >>"$RAW"
    log "  $s: $R_REQS responses"
  done
done

# ------------------------------------------------ 2. who closes first
for ((round = 1; round <= CLOSE_ROUNDS; round++)); do
  log "who closes first: round $round/$CLOSE_ROUNDS"
  for row in linger linger-wide linger-sf nginx lighttpd; do
    s=${row%-wide}
    [[ -n ${SPID[$s]:-} ]] || continue
    if [[ $row == *-wide ]]; then
      widen_port_range
      [[ -n ${SAVED_PORT_RANGE:-} ]] || continue
    fi
    # TIME_WAIT sockets over a second old are reusable for a new connect()
    # (tcp_tw_reuse), so the last run's leftovers cost this one nothing.
    sleep 2
    hdr=(-H "Connection: close")
    [[ $s == linger-sf ]] && hdr=()
    out=$WORK/close.$row.$round.txt
    cmd=(wrk -t1 -c50 -d"${CLOSE_DURATION}s" --latency "${hdr[@]}" -s "$BENCH_DIR/report.lua" "http://127.0.0.1:${PORT[$s]}/hello.txt")
    record_cmd "$(printf '%q ' taskset -c "$LOAD_CPU" "${cmd[@]}")"
    t0=$(cpu_ticks "${SPID[$s]}")
    timed_load "$out" "${cmd[@]}" >"$WORK/times" &
    load_pid=$!
    sleep 1
    perf record -q -C "$LOAD_CPU" -o "$WORK/perf.data" -- sleep $((CLOSE_DURATION - 3)) >/dev/null 2>&1 || true
    tw_server=$(tw_count "( sport = :${PORT[$s]} )")
    tw_client=$(tw_count "( dport = :${PORT[$s]} )")
    wait "$load_pid" || true
    t1=$(cpu_ticks "${SPID[$s]}")
    read -r wu ws <"$WORK/times"
    share=$(perf report -q -i "$WORK/perf.data" --sort sym 2>/dev/null |
      awk -v re="$PORT_SEARCH" '{ p = $1; sub(/%/, "", p); if ($3 ~ re) t += p } END { printf "%.1f", t }') || share=NA
    restore_port_range
    parse_wrk_result "$out" || true
    printf 'close\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$row" "$round" "$R_REQS" "$R_DUR_US" "$R_P99_US" \
      $((t1 - t0)) "$wu" "$ws" "$tw_server/$tw_client" "$share" >>"$RAW"
    log "  $row: $R_REQS connections, port search $share% of the load core"
  done
done

STEAL=$(steal_percent "$STAT0" "$(cpu_stat)")
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$RAW" "$CLK_TCK" >"$WORK/tables.md" <<'PY'
import statistics, sys
raw, hz = sys.argv[1], int(sys.argv[2])
rows = {}
for line in open(raw):
    kind, srv, rnd, reqs, dur, p99, sticks, wu, ws, tw, share = line.rstrip("\n").split("\t")
    if reqs == "NA" or int(reqs) == 0:
        continue
    n, secs = int(reqs), int(dur) / 1e6
    rows.setdefault((kind, srv), []).append(dict(
        rps=n / secs, p99=int(p99) / 1000, srv_us=int(sticks) * 1e6 / hz / n,
        wrk_us=(int(wu) + int(ws)) * 1e6 / hz / n, wrk_busy=100 * (int(wu) + int(ws)) / hz / secs,
        wrk_sys=100 * int(ws) / max(1, int(wu) + int(ws)), tw=tw, share=share))

def med(vals, fmt):
    vals = sorted(vals)
    return f"{fmt.format(statistics.median(vals))} ({fmt.format(vals[0])}–{fmt.format(vals[-1])})"

def table(kind, servers, labels, extra):
    base = rows.get((kind, servers[0]))
    head = "| server | req/s median (min–max) | vs first row | p99 ms | server CPU µs/req | wrk CPU µs/req | wrk core busy % | wrk time in kernel % |"
    head += "".join(f" {h} |" for h, _ in extra)
    print(head)
    print("|" + " --- |" * (8 + len(extra)))
    for s in servers:
        r = rows.get((kind, s))
        if not r:
            print(f"| {labels[s]} |" + " n/a |" * (7 + len(extra)))
            continue
        ratio = statistics.median(x["rps"] for x in r) / statistics.median(x["rps"] for x in base) if base else float("nan")
        cells = [med([x["rps"] for x in r], "{:.0f}"), f"{ratio:.2f}", med([x["p99"] for x in r], "{:.2f}") if kind == "close" else "n/a",
                 med([x["srv_us"] for x in r], "{:.1f}"), med([x["wrk_us"] for x in r], "{:.1f}"),
                 f"{statistics.median(x['wrk_busy'] for x in r):.0f}", f"{statistics.median(x['wrk_sys'] for x in r):.0f}"]
        cells += [f(r) for _, f in extra]
        print(f"| {labels[s]} | " + " | ".join(cells) + " |")

print("### 1. Response size: pipelined x16, wrk, 100 connections\n")
table("pipe", ["yardstick", "sized", "linger"], {
    "yardstick": "yardstick, canned response (YB bytes)",
    "sized": "yardstick answering with linger's bytes (LB bytes)",
    "linger": "linger (LB bytes)"}, [])
print("\n### 2. Who closes first: a new connection per request, wrk, 50 connections\n")
print("Default client port range PORTRANGE unless the row says otherwise.\n")
table("close", ["linger", "linger-wide", "linger-sf", "nginx", "lighttpd"], {
    "linger": "linger, client closes first (wrk sends Connection: close)",
    "linger-wide": "the same, client port range widened (as compare.sh runs)",
    "linger-sf": "linger --max-requests 1, linger closes first",
    "nginx": "nginx (closes first)", "lighttpd": "lighttpd (closes first)"},
    [("TIME_WAIT server side / client side (last round)", lambda r: r[-1]["tw"]),
     ("load core in port search % (median, min–max)",
      lambda r: med([float(x["share"]) for x in r if x["share"] != "NA"] or [float("nan")], "{:.1f}"))])
PY

{
  echo "# Where the load generator sets the figure — $(date +%F)"
  echo
  echo "Machine: $(machine_info). Load average at start: $START_LOAD, at end: $END_LOAD. CPU steal during the run: $STEAL%."
  echo "Servers on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU. Response size: $ROUNDS rounds x $DURATION s; who closes first: $CLOSE_ROUNDS rounds x $CLOSE_DURATION s. Servers interleaved within each round; medians with min–max."
  echo
  sed -e "s/YB bytes/$YARD_BYTES bytes/" -e "s/LB bytes/$LINGER_BYTES bytes/g" \
    -e "s/PORTRANGE/$DEFAULT_RANGE, widened: ${WIDE_PORT_RANGE// /-}/" "$WORK/tables.md"
  echo
  echo "## linger's response to GET /hello.txt (compiled into the sized yardstick)"
  echo
  echo '```'
  tr -d '\r' <"$WORK/linger-response.txt"
  echo
  echo '```'
  echo
  echo "## How to read it"
  echo
  echo "- p99 is n/a for the pipelined runs: wrk's latency histogram for a pipelined batch often reads 0 at the upper percentiles."
  echo "- \"wrk core busy\" near 100% means wrk, not the server, limits req/s; server CPU per request is then the server's own cost."
  echo "- Port search: the share of all samples on the load core (perf record -C $LOAD_CPU) in $PORT_SEARCH, the kernel's search for a free ephemeral port past TIME_WAIT sockets in connect()."
  echo "- TIME_WAIT: sockets in that state whose local port is the server's (server side) or whose remote port is (client side), counted near the end of each run."
  echo
  commands_section
  echo
  echo "Tools:"
  tool_versions
} >"$OUT_MD"
log "wrote $OUT_MD"
cat "$OUT_MD"
