#!/usr/bin/env bash
# One worker process against two: linger (--workers 1 and 2), nginx
# (worker_processes 1 and 2) and lighttpd (server.max-worker = 0 and 2),
# 13 B at 100 keep-alive connections, interleaved round by round.
#
#   bench/workers.sh                 # 3 rounds x 5 s per run, about 3 minutes
#   ROUNDS=5 DURATION=10 bench/workers.sh
#
# Environment: ROUNDS (3)  DURATION (5)  QUICK  BASE_PORT (18080; this
# script uses +11 to +16)  SERVER_CPU ("0,1")  LOAD_CPU (1)  LINGER_BUILD
# LINGER_BIN  LINGER_ARGS  KEEP_WORK  CONNS (100)
#
# A machine with two cores cannot give two workers a core each and the
# load generator a third: the servers may run on both cores (taskset
# 0,1, for one worker as for two, so only the worker count differs) and wrk
# is pinned to CPU 1, where it competes with whichever worker the kernel
# puts there. req/s then says more about that competition than about the
# server; the server's CPU time per request is the steady figure.
# Output: bench/results/YYYY-MM-DD-workers.md.
set -euo pipefail

SERVER_CPU=${SERVER_CPU:-0,1}
LOAD_CPU=${LOAD_CPU:-1}
PERF=0
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

set_rounds
CONNS=${CONNS:-100}
SERVERS=(linger-1 linger-2 nginx-1 nginx-2 lighttpd-1 lighttpd-2)
i=11
for s in "${SERVERS[@]}"; do
  PORT[$s]=$((BASE_PORT + i))
  i=$((i + 1))
done

bench_setup
mkdir -p "$RESULTS_DIR" "$WORK/runs"
write_nginx_conf
write_lighttpd_conf

# One config per worker count, derived from lib.sh's (same tuning as
# compare.sh) with its own port, pid file and logs.
for n in 1 2; do
  mkdir -p "$WORK/nginx-$n/tmp" "$WORK/lighttpd-$n"
  sed -e "s#$WORK/nginx/#$WORK/nginx-$n/#g" \
    -e "s#listen 127.0.0.1:${PORT[nginx]} #listen 127.0.0.1:${PORT[nginx-$n]} #" \
    -e "s#^worker_processes 1;#worker_processes $n;#" \
    "$WORK/nginx/nginx.conf" >"$WORK/nginx-$n/nginx.conf"
  sed -e "s#$WORK/lighttpd/#$WORK/lighttpd-$n/#g" \
    -e "s#^server.port = .*#server.port = ${PORT[lighttpd-$n]}#" \
    "$WORK/lighttpd/lighttpd.conf" >"$WORK/lighttpd-$n/lighttpd.conf"
  # lighttpd: 0 is its single process (no workers forked), as shipped.
  echo "server.max-worker = $([[ $n == 1 ]] && echo 0 || echo "$n")" >>"$WORK/lighttpd-$n/lighttpd.conf"
  SCMD[nginx-$n]="nginx -e $WORK/nginx-$n/error.log -c $WORK/nginx-$n/nginx.conf"
  SCMD[lighttpd-$n]="lighttpd -D -f $WORK/lighttpd-$n/lighttpd.conf"
  SCMD[linger-$n]="$LINGER_BIN --listen 127.0.0.1:${PORT[linger-$n]} --root $DOCROOT --workers $n${LINGER_EXTRA[*]:+ ${LINGER_EXTRA[*]}}"
done
for s in "${SERVERS[@]}"; do
  AVAILABLE[$s]=1
  [[ ${s%-*} != linger || ${AVAILABLE[linger]:-0} == 1 ]] || { AVAILABLE[$s]=0; WHY_NOT[$s]=${WHY_NOT[linger]:-not built}; }
  if port_open "${PORT[$s]}"; then
    AVAILABLE[$s]=0
    WHY_NOT[$s]="port ${PORT[$s]} already in use (set BASE_PORT)"
  fi
done

# What else used the CPU when the run started (other work on the machine
# makes every figure noisier; the report says so).
OTHERS=$(ps -eo pcpu=,comm= --sort=-pcpu | awk '$1 >= 5 { printf "%s (%s%%), ", $2, $1 }' | sed 's/, $//')
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
STAT0=$(cpu_stat)
T_START=$(date +%s)

for s in "${SERVERS[@]}"; do
  start_server "$s" || true
done
for s in "${SERVERS[@]}"; do
  [[ -n ${SPID[$s]:-} ]] || continue
  taskset -c "$LOAD_CPU" wrk -t1 -c10 -d1s "http://127.0.0.1:${PORT[$s]}/hello.txt" >/dev/null 2>&1 || true
done

# "pid ticks" for every process of a server's tree.
tree_ticks() {
  local p f
  for p in $(tree_pids "$1"); do
    f=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null) || continue
    # shellcheck disable=SC2086  # split the numeric fields on purpose
    set -- $f
    echo "$p $((${12} + ${13}))"
  done
}

RAW=$WORK/raw.tsv
printf 'server\tround\trps\tp50_ms\tp99_ms\tcpu_us_req\tbusiest_share\tload_busy\terrors\n' >"$RAW"

run_one() { # server round
  local server=$1 round=$2 pid=${SPID[$1]}
  local out=$WORK/runs/$server.$round.txt
  local -a cmd=(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$BENCH_DIR/report.lua" "http://127.0.0.1:${PORT[$server]}/hello.txt")
  record_cmd "$(printf '%q ' taskset -c "$LOAD_CPU" "${cmd[@]}")"
  local before after core0 core1
  before=$(tree_ticks "$pid")
  core0=$(core_stat "$LOAD_CPU")
  taskset -c "$LOAD_CPU" "${cmd[@]}" >"$out" 2>&1 || true
  core1=$(core_stat "$LOAD_CPU")
  after=$(tree_ticks "$pid")
  parse_wrk_result "$out" || true
  if ! [[ $R_REQS =~ ^[0-9]+$ ]] || ((R_REQS == 0)); then
    warn "$server round $round produced no result"
    tail -3 "$out" >&2 || true
    printf '%s\t%s\tNA\tNA\tNA\tNA\tNA\tNA\tNA\n' "$server" "$round" >>"$RAW"
    return 0
  fi
  # The busiest process's share of the tree's CPU over the run: 100% for a
  # single process, 50% for two workers splitting the work evenly (nginx's
  # master and linger's supervisor use next to nothing).
  local share
  share=$(awk -v root="$pid" 'NR == FNR { b[$1] = $2; next }
    { d = $2 - ($1 in b ? b[$1] : 0); t += d; if (d > m) m = d }
    END { printf "%.0f", (t > 0 ? 100 * m / t : 0) }' <(echo "$before") <(echo "$after"))
  local dt
  dt=$(($(awk '{ s += $2 } END { print s + 0 }' <<<"$after") - $(awk '{ s += $2 } END { print s + 0 }' <<<"$before")))
  awk -v srv="$server" -v r="$round" -v reqs="$R_REQS" -v dur="$R_DUR_US" -v p50="$R_P50_US" -v p99="$R_P99_US" \
    -v dt="$dt" -v hz="$CLK_TCK" -v share="$share" -v busy="$(busy_percent "$core0" "$core1")" -v errs="$R_ERRS" 'BEGIN {
      printf "%s\t%s\t%.1f\t%.3f\t%.3f\t%.3f\t%s\t%s\t%s\n", srv, r, reqs / (dur / 1e6), p50 / 1000, p99 / 1000,
        dt * 1e6 / hz / reqs, share, busy, errs
    }' >>"$RAW"
  log "  $server: $(tail -1 "$RAW" | cut -f3) req/s, $(tail -1 "$RAW" | cut -f6) µs CPU/req, busiest $share%"
}

for ((round = 1; round <= ROUNDS; round++)); do
  log "round $round/$ROUNDS"
  for s in "${SERVERS[@]}"; do
    if ensure_running "$s"; then
      run_one "$s" "$round"
    else
      printf '%s\t%s\tNA\tNA\tNA\tNA\tNA\tNA\tNA\n' "$s" "$round" >>"$RAW"
    fi
  done
done

T_END=$(date +%s)
STEAL=$(steal_percent "$STAT0" "$(cpu_stat)")
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
OUT_MD=$RESULTS_DIR/$(date +%F)-workers.md

{
  echo "# One worker against two: linger, nginx, lighttpd — $(date +%F)"
  echo
  echo "- Date: $(date '+%F %T %z')"
  echo "- Machine: $(machine_info)"
  echo "- Load average at start: $START_LOAD, at the end: $END_LOAD; wall time $((T_END - T_START)) s; CPU steal during the run: $STEAL%"
  echo "- Processes above 5% CPU when the run started: ${OTHERS:-none}"
  echo "- Rounds: $ROUNDS, $DURATION s per run, the six servers interleaved within each round; medians with (min–max) over the rounds"
  echo "- Load: wrk, 1 thread, $CONNS keep-alive connections, GET of a 13-byte file, pinned to CPU $LOAD_CPU; servers on CPUs $SERVER_CPU (taskset), one worker as two, so only the worker count differs"
  echo "- With two cores, wrk shares a core with a server worker: req/s says how that competition went as much as what the server can do. CPU per request (utime+stime of the server's whole process tree over the run ÷ responses) is the steady figure"
  echo "- Busiest process: its share of the server tree's CPU over the run; 50% is an even split between two workers"
  echo "- $("$LINGER_BIN" --version 2>/dev/null || echo 'linger ?') with: ${LINGER_EXTRA[*]} (per worker: --max-conns is each worker's slots)"
  echo "- nginx: compare.sh's configuration with worker_processes 1 or 2 (one listening socket, nginx's default, no reuseport); lighttpd: compare.sh's with server.max-worker = 0 or 2"
  echo
  echo "Tools:"
  echo
  tool_versions
  echo
  python3 - "$RAW" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
order = ["linger-1", "linger-2", "nginx-1", "nginx-2", "lighttpd-1", "lighttpd-2"]
def values(server, key):
    out = []
    for r in rows:
        if r["server"] == server and r[key] not in ("NA", ""):
            out.append(float(r[key]))
    return out
def cell(v, fmt):
    if not v:
        return "n/a"
    return f"{fmt(statistics.median(v))} ({fmt(min(v))}–{fmt(max(v))})"
k = lambda x: f"{x / 1000:.1f}k"
us = lambda x: f"{x:.2f}"
ms = lambda x: f"{x:.2f}"
pc = lambda x: f"{x:.0f}%"
print("| server | req/s | CPU µs/req | p99 ms | busiest process | wrk's core busy |")
print("|---|---|---|---|---|---|")
for s in order:
    print(f"| {s} | {cell(values(s, 'rps'), k)} | {cell(values(s, 'cpu_us_req'), us)} | "
          f"{cell(values(s, 'p99_ms'), ms)} | {cell(values(s, 'busiest_share'), pc)} | {cell(values(s, 'load_busy'), pc)} |")
print()
print("Two workers ÷ one (ratio of the medians):")
print()
print("| server | req/s | CPU µs/req |")
print("|---|---|---|")
for name in ("linger", "nginx", "lighttpd"):
    one, two = f"{name}-1", f"{name}-2"
    def ratio(key):
        a, b = values(one, key), values(two, key)
        return f"{statistics.median(b) / statistics.median(a):.2f}" if a and b else "n/a"
    print(f"| {name} | {ratio('rps')} | {ratio('cpu_us_req')} |")
errors = sum(sum(values(s, "errors")) for s in order)
print()
print(f"wrk reported {errors:.0f} errors over all runs.")
PY
  echo
  commands_section
  echo
  echo "<details><summary>Raw per-run figures</summary>"
  echo
  echo '```'
  column -t -s $'\t' "$RAW" 2>/dev/null || cat "$RAW"
  echo '```'
  echo "</details>"
} | sed -e "s#$WORK#\$TMP#g" -e "s#$REPO_DIR/##g" >"$OUT_MD"
log "wrote $OUT_MD"
