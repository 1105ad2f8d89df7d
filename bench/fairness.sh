#!/usr/bin/env bash
# Fairness under greedy pipelining clients, for linger, nginx and lighttpd.
#
#   bench/fairness.sh                # 3 rounds x (1 s warm-up + 5 s) per phase
#   QUICK=1 bench/fairness.sh        # 1 round x 2 s, smoke run
#   ROUNDS=5 DURATION=10 bench/fairness.sh
#
# The load comes from bench/greedy.c (built here with cc -O2), one epoll
# loop on the load CPU driving two kinds of connections:
#   ordinary  ORDINARY keep-alive clients (default 50), one connection each,
#             one request at a time; every response's latency goes into a
#             1 us histogram and every client's responses are counted;
#   greedy    GREEDY_CONNS connections (default 4), each keeping a pipeline
#             of up to GREEDY_DEPTH requests (default 1024) in flight,
#             written GREEDY_BATCH (default 256) per write.
# The client is cheap per request, so the server core, not the load core,
# is the bottleneck; the report gives both cores' busy time to show it.
#
# For each server and round, two phases on the same server process:
#   alone   the ordinary clients only;
#   greedy  the same ordinary clients plus the greedy connections, in the
#           same loop, started together.
# Each phase runs WARMUP (1 s) + DURATION seconds; only the last DURATION
# seconds are counted.  Servers are interleaved within each round.
#
# Reported: the ordinary clients' p50/p99 latency in both phases and the
# ratio p99 with greedy / p99 alone (per round, then the median), their req/s,
# the greedy connections' req/s and share of all responses, Jain's fairness
# index J = (sum x)^2 / (n * sum x^2) over the ordinary clients' response
# counts and over ordinary clients plus greedy connections, and CPU busy %.
#
# linger runs with --max-requests 1000000 like nginx (keepalive_requests
# 1000000) and lighttpd (max-keep-alive-requests 65535, its maximum), so the
# keep-alive cap does not decide the outcome.  LINGER_DEFAULTS=1 (default)
# adds a row for linger at its defaults, whose cap of 1000 requests per
# connection also closes greedy connections regularly.
#
# Environment: ROUNDS (3) DURATION (5) WARMUP (1) QUICK ORDINARY (50)
#   GREEDY_CONNS (4) GREEDY_DEPTH (1024) GREEDY_BATCH (256)
#   FAIR_PATH (/hello.txt) LINGER_DEFAULTS (1) plus BASE_PORT, SERVER_CPU,
#   LOAD_CPU, LINGER_BUILD, LINGER_BIN, LINGER_ARGS, KEEP_WORK as in compare.sh.
# Output: bench/results/YYYY-MM-DD-fairness.md
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

set_rounds
WARMUP=$(seconds_of "${WARMUP:-1}")
ORDINARY=${ORDINARY:-50}
GREEDY_CONNS=${GREEDY_CONNS:-4}
GREEDY_DEPTH=${GREEDY_DEPTH:-1024}
GREEDY_BATCH=${GREEDY_BATCH:-256}
FAIR_PATH=${FAIR_PATH:-/hello.txt}
LINGER_DEFAULTS=${LINGER_DEFAULTS:-1}
SERVERS=(linger nginx lighttpd)

bench_setup
record_cmd "ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP ORDINARY=$ORDINARY GREEDY_CONNS=$GREEDY_CONNS GREEDY_DEPTH=$GREEDY_DEPTH GREEDY_BATCH=$GREEDY_BATCH LINGER_DEFAULTS=$LINGER_DEFAULTS BASE_PORT=$BASE_PORT bench/fairness.sh"

AVAILABLE[yardstick]=0
prepare_servers

# linger at its defaults (only --listen and --root), on a port of its own.
LD=linger-defaults
if [[ $LINGER_DEFAULTS != 0 ]]; then
  PORT[$LD]=$((BASE_PORT + 5))
  SCMD[$LD]="$LINGER_BIN --listen 127.0.0.1:${PORT[$LD]} --root $DOCROOT"
  AVAILABLE[$LD]=${AVAILABLE[linger]:-0}
  WHY_NOT[$LD]=${WHY_NOT[linger]:-}
  if port_open "${PORT[$LD]}"; then
    AVAILABLE[$LD]=0
    WHY_NOT[$LD]="port ${PORT[$LD]} already in use (set BASE_PORT)"
  fi
  SERVERS+=("$LD")
fi

# The load generator.
GREEDY_BIN=$WORK/greedy
cc -O2 -o "$GREEDY_BIN" "$BENCH_DIR/greedy.c" || die "bench/greedy.c did not compile"
record_cmd "cc -O2 -o $GREEDY_BIN $BENCH_DIR/greedy.c"

mkdir -p "$RESULTS_DIR" "$WORK/runs"
DATE=$(date +%F)
OUT_MD=$RESULTS_DIR/$DATE-fairness.md
RAW=$WORK/fairness.tsv
printf 'server\tround\tphase\tord_rps\tp50_ms\tp90_ms\tp99_ms\tp999_ms\tmax_ms\tjain\tord_errors\tord_reconnects\tgreedy_rps\tgreedy_errors\tgreedy_reconnects\tjain_all\tsrv_cpu\tcpu_server\tcpu_load\tcounts\tgcounts\tnote\n' >"$RAW"
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
STAT0=$(cpu_stat)
T_START=$(date +%s)

for s in "${SERVERS[@]}"; do
  start_server "$s" || true
done

# "busy total" jiffies of one CPU from /proc/stat (busy = all but idle and iowait).
cpu_busy() {
  awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}
busy_percent() { # "busy total" at start, "busy total" at end
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ")
    d = y[2] - x[2]; printf "%.0f", (d > 0 ? 100 * (y[1] - x[1]) / d : 0) }'
}

na_row() { # server round phase note: a row without figures
  { printf '%s\t%s\t%s' "$1" "$2" "$3"; printf '\tNA%.0s' {1..18}; printf '\t%s\n' "$4"; } >>"$RAW"
}

run_phase() { # server round phase
  local server=$1 round=$2 phase=$3
  local out=$WORK/runs/$server.$round.$phase.txt
  local -a cmd=("$GREEDY_BIN" -p "${PORT[$server]}" -u "$FAIR_PATH" -n "$ORDINARY" -d "$DURATION" -w "$WARMUP")
  if [[ $phase == greedy ]]; then
    cmd+=(-g "$GREEDY_CONNS" -D "$GREEDY_DEPTH" -b "$GREEDY_BATCH")
  else
    cmd+=(-g 0)
  fi
  local shown
  shown=$(printf '%q ' taskset -c "$LOAD_CPU" "${cmd[@]}")
  record_cmd "${shown% }"
  # Busy time of both cores and the server's CPU time over the measured
  # seconds only (sampled after the warm-up, by the clock, so approximate).
  taskset -c "$LOAD_CPU" "${cmd[@]}" >"$out" 2>&1 &
  local cpid=$! s0 l0 t0 s1 l1 t1
  sleep "$WARMUP"
  s0=$(cpu_busy "$SERVER_CPU") l0=$(cpu_busy "$LOAD_CPU") t0=$(cpu_ticks "${SPID[$server]}")
  sleep "$DURATION"
  s1=$(cpu_busy "$SERVER_CPU") l1=$(cpu_busy "$LOAD_CPU") t1=$(cpu_ticks "${SPID[$server]}")
  wait "$cpid" || true
  local cpu_s cpu_l srv_cpu
  cpu_s=$(busy_percent "$s0" "$s1")
  cpu_l=$(busy_percent "$l0" "$l1")
  srv_cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" -v d="$DURATION" 'BEGIN { printf "%.0f", 100 * (b - a) / hz / d }')

  local line gline counts gcounts
  line=$(grep -m1 '^RESULT ' "$out" || true)
  if [[ -z $line ]]; then
    warn "$server round $round $phase: no result: $(tail -3 "$out" | tr '\n' ' ')"
    na_row "$server" "$round" "$phase" "no result"
    return 0
  fi
  gline=$(grep -m1 '^GREEDY ' "$out" || true)
  counts=$(grep -m1 '^COUNTS ' "$out" | cut -d' ' -f2)
  gcounts=$(grep -m1 '^GCOUNTS ' "$out" | cut -d' ' -f2 || true)
  awk -v srv="$server" -v r="$round" -v ph="$phase" -v line="$line" -v gline="$gline" \
    -v c="$counts" -v gc="$gcounts" -v cs="$cpu_s" -v cl="$cpu_l" -v sc="$srv_cpu" '
    function kv(s, key,   n, a, i) {
      n = split(s, a, " ")
      for (i = 1; i <= n; i++) if (index(a[i], key "=") == 1) return substr(a[i], length(key) + 2)
      return "NA"
    }
    function jain(list,   k, x, i, s, s2) {
      k = split(list, x, ","); s = 0; s2 = 0
      for (i = 1; i <= k; i++) { s += x[i]; s2 += x[i] * x[i] }
      return (k > 0 && s2 > 0) ? sprintf("%.4f", s * s / (k * s2)) : "NA"
    }
    BEGIN {
      d = kv(line, "duration_us") / 1e6
      ord = kv(line, "requests") / d
      g = "NA"; ge = "NA"; gr = "NA"; all = c
      if (gline != "") {
        g = sprintf("%.1f", kv(gline, "responses") / kv(gline, "duration_us") * 1e6)
        ge = kv(gline, "errors"); gr = kv(gline, "reconnects")
        if (gc != "") all = c "," gc
      }
      printf "%s\t%s\t%s\t%.1f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
        srv, r, ph, ord, kv(line, "p50_us") / 1000, kv(line, "p90_us") / 1000, kv(line, "p99_us") / 1000,
        kv(line, "p999_us") / 1000, kv(line, "max_us") / 1000, jain(c), kv(line, "errors"),
        kv(line, "reconnects"), g, ge, gr, jain(all), sc, cs, cl, c, gc
    }' >>"$RAW"
  log "  $server $phase: ordinary $(tail -1 "$RAW" | cut -f4) req/s, p50 $(tail -1 "$RAW" | cut -f5) ms, p99 $(tail -1 "$RAW" | cut -f7) ms, Jain $(tail -1 "$RAW" | cut -f10), greedy $(tail -1 "$RAW" | cut -f13) req/s, CPU $SERVER_CPU/$LOAD_CPU busy $cpu_s/$cpu_l%"
}

for ((round = 1; round <= ROUNDS; round++)); do
  log "round $round/$ROUNDS"
  for server in "${SERVERS[@]}"; do
    for phase in alone greedy; do
      if ! ensure_running "$server"; then
        na_row "$server" "$round" "$phase" "${WHY_NOT[$server]:-not running}"
        continue
      fi
      run_phase "$server" "$round" "$phase"
      sleep 0.5 # let the server drop the closed connections before the next phase
    done
  done
done
T_END=$(date +%s)
STEAL=$(steal_percent "$STAT0" "$(cpu_stat)")
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

{
  echo "# Fairness under greedy pipelining clients — $DATE"
  echo
  echo "- Date: $(date '+%F %T %z')"
  echo "- Machine: $(machine_info)"
  echo "- Load average at start: $START_LOAD, at the end: $END_LOAD (anything well above the benchmark's own ~2 means other work shared the cores); wall time $((T_END - T_START)) s; CPU steal during the run: $STEAL% (time the hypervisor gave to other guests; a high value means noisy figures)"
  echo "- Rounds: $ROUNDS, $WARMUP s warm-up + $DURATION s measured per phase, servers interleaved within each round (${SERVERS[*]}); medians with (min–max) over rounds"
  echo "- Servers pinned to CPU $SERVER_CPU, the load generator to CPU $LOAD_CPU (taskset)"
  echo "- Load generator: \`bench/greedy.c\` (cc -O2), one epoll loop for all connections"
  echo "- Ordinary clients: $ORDINARY keep-alive connections, one request at a time each, GET $FAIR_PATH; latency from the request's write to the end of its response, 1 µs histogram"
  echo "- Greedy clients: $GREEDY_CONNS keep-alive connections, each keeping up to $GREEDY_DEPTH requests in flight, $GREEDY_BATCH requests per write, same URL; started together with the ordinary clients"
  echo "- Keep-alive caps: linger --max-requests 1000000, nginx keepalive_requests 1000000, lighttpd server.max-keep-alive-requests 65535 (its maximum); a connection the server closes is reopened at once (reconnects are in the raw figures)$([[ $LINGER_DEFAULTS == 0 ]] || echo "; the row linger-defaults is linger with no options but --listen and --root, i.e. at most 1000 requests per connection")"
  echo "- p99 ratio = ordinary p99 with greedy ÷ ordinary p99 alone, taken per round (same server process, back to back), median (min–max) over rounds; lower means the greedy clients hurt the ordinary ones less"
  echo "- Jain's index J = (Σx)² / (n·Σx²) over per-client completed responses (1 = perfectly even, 1/n = one client got everything): over the $ORDINARY ordinary clients, and over those plus each greedy connection as one more client"
  echo "- CPU busy: share of the measured seconds that CPU $SERVER_CPU (server) and CPU $LOAD_CPU (load) were not idle, from /proc/stat; server CPU is utime+stime of the server's processes. A server core near 100% with the load core below it means the server was the bottleneck"
  echo
  echo "Tools:"
  echo
  tool_versions
  echo "- $(cc --version | head -1)"
  for s in "${SERVERS[@]}"; do
    if [[ ${AVAILABLE[$s]:-0} != 1 ]]; then
      echo
      echo "Not measured: $s (${WHY_NOT[$s]:-unavailable})"
    fi
  done
  echo
  echo "## Results"
  echo
  python3 "$BENCH_DIR/report.py" fairness --raw "$RAW"
  echo
  commands_section
  echo
  echo "<details><summary>Raw per-run figures (counts = responses per ordinary client, gcounts = per greedy connection)</summary>"
  echo
  echo '```'
  cat "$RAW"
  echo '```'
  echo "</details>"
} | sed -e "s#$WORK#\$TMP#g" -e "s#$REPO_DIR/##g" >"$OUT_MD"
log "wrote $OUT_MD"
