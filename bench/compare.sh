#!/usr/bin/env bash
# Compare linger with nginx, lighttpd, h2o and the yardstick (ceiling.c) on
# this machine.  One command:
#
#   bench/compare.sh                 # 3 rounds x 5 s per run, ~10 minutes
#   QUICK=1 bench/compare.sh         # 1 round x 2 s, smoke run
#
# Environment:
#   ROUNDS (3)  DURATION (5, seconds per run)  QUICK (unset)
#   IDLE_CONNS (10000)  BASE_PORT (18080: linger +1, nginx +2, lighttpd +3,
#   yardstick +4, h2o +5)  SERVER_CPU (0)  LOAD_CPU (1)  LINGER_BUILD (1; 0 skips
#   cargo build)  LINGER_BIN  LINGER_ARGS (extra flags for linger)
#   YARDSTICK (path to ceiling.c)  KEEP_WORK (keep the temp dir)
#   WIDE_PORT_RANGE ("20000 65535": the load side's ephemeral port range
#   for the run, see lib.sh; 0 leaves it alone)
#   PERF (1; 0 skips the syscall count, whose tracepoint costs every
#   syscall a little, for throughput-only runs)
#   ONLY (scenario ids, comma-separated, e.g. "hello-c10,hello-c1000": a
#   focused run while working on one figure)  ONLY_SERVERS (likewise,
#   e.g. "linger,yardstick")
#
# Servers are pinned to CPU $SERVER_CPU, load generators to CPU $LOAD_CPU, and
# runs are interleaved server by server within each round (A B C D A B C D).
# Output: bench/results/YYYY-MM-DD-compare.md and .svg.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

set_rounds
IDLE_CONNS=${IDLE_CONNS:-10000}
PIPE_DEPTH=${PIPE_DEPTH:-16}
SERVERS=(linger nginx lighttpd h2o yardstick)
if [[ -n ${ONLY_SERVERS:-} ]]; then
  IFS=, read -r -a SERVERS <<<"$ONLY_SERVERS"
fi

bench_setup

# id | label | kind | connections | path | yardstick runs it | short label
SCENARIOS=(
  "hello-c10|13 B file, 10 connections|wrk|10|/hello.txt|1|13 B, 10 conns"
  "hello-c100|13 B file, 100 connections|wrk|100|/hello.txt|1|13 B, 100 conns"
  "hello-c1000|13 B file, 1000 connections|wrk|1000|/hello.txt|1|13 B, 1000 conns"
  "4k-c100|4 KiB file, 100 connections|wrk|100|/4k.bin|0|4 KiB, 100 conns"
  "100k-c100|100 KiB file, 100 connections|wrk|100|/100k.bin|0|100 KiB, 100 conns"
  "100k-c1000|100 KiB file, 1000 connections|wrk|1000|/100k.bin|0|100 KiB, 1000 conns"
  "pipe-wrk|pipelined x$PIPE_DEPTH (wrk), 100 connections|wrk-pipe|100|/hello.txt|1|pipelined x$PIPE_DEPTH, wrk"
  "pipe-h2load|pipelined x$PIPE_DEPTH (h2load --h1), 100 connections|h2load|100|/hello.txt|1|pipelined x$PIPE_DEPTH, h2load"
  "close-c50|new connection per request, 50 connections (req/s = conn/s)|wrk-close|50|/hello.txt|0|new conn per request"
  "idle-10k|$IDLE_CONNS idle keep-alive connections|idle|$IDLE_CONNS|/hello.txt|0|$IDLE_CONNS idle conns"
)
if [[ -n ${ONLY:-} ]]; then
  chosen=()
  for spec in "${SCENARIOS[@]}"; do
    [[ ,$ONLY, == *,"${spec%%|*}",* ]] && chosen+=("$spec")
  done
  ((${#chosen[@]})) || die "ONLY=$ONLY matches no scenario"
  SCENARIOS=("${chosen[@]}")
fi

widen_port_range
build_ceiling
prepare_servers

mkdir -p "$RESULTS_DIR" "$WORK/runs"
DATE=$(date +%F)
OUT_MD=$RESULTS_DIR/$DATE-compare.md
OUT_SVG=$RESULTS_DIR/$DATE-compare.svg
RAW=$WORK/raw.tsv
printf 'scenario\tserver\tround\trps\tp50_ms\tp99_ms\tcpu_us_req\tsys_req\trss_kb\terrors\tbytes_per_conn\tnote\tload_busy\n' >"$RAW"
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
STAT0=$(cpu_stat)
T_START=$(date +%s)

for s in "${SERVERS[@]}"; do
  start_server "$s" || true
done

# Short warm-up so the first measured run does not pay for cold caches.
for s in "${SERVERS[@]}"; do
  [[ -n ${SPID[$s]:-} ]] || continue
  taskset -c "$LOAD_CPU" wrk -t1 -c10 -d1s "http://127.0.0.1:${PORT[$s]}/hello.txt" >/dev/null 2>&1 || true
done

na_row() { # scenario server round note
  printf '%s\t%s\t%s\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\t%s\tNA\n' "$1" "$2" "$3" "$4" >>"$RAW"
}

run_load() { # server scenario-spec round
  local server=$1 spec=$2 round=$3
  local id label kind conns path
  IFS='|' read -r id label kind conns path _ <<<"$spec"
  local port=${PORT[$server]} pid=${SPID[$server]}
  local url=http://127.0.0.1:$port$path
  local out=$WORK/runs/$id.$server.$round.txt
  local -a cmd
  case $kind in
    wrk) cmd=(wrk -t1 -c"$conns" -d"${DURATION}s" --latency -s "$BENCH_DIR/report.lua" "$url") ;;
    wrk-pipe) cmd=(wrk -t1 -c"$conns" -d"${DURATION}s" --latency -s "$BENCH_DIR/pipeline.lua" "$url" -- "$PIPE_DEPTH") ;;
    wrk-close) cmd=(wrk -t1 -c"$conns" -d"${DURATION}s" --latency -H "Connection: close" -s "$BENCH_DIR/report.lua" "$url") ;;
    h2load) cmd=(h2load --h1 -m "$PIPE_DEPTH" -c "$conns" -t 1 -D "$DURATION" "$url") ;;
  esac
  local shown
  shown=$(printf '%q ' taskset -c "$LOAD_CPU" "${cmd[@]}")
  record_cmd "${shown% }"

  local t0 t1 sys rss core0 core1
  t0=$(cpu_ticks "$pid")
  core0=$(core_stat "$LOAD_CPU")
  perf_start "$pid"
  taskset -c "$LOAD_CPU" "${cmd[@]}" >"$out" 2>&1 || true
  perf_stop
  sys=$PERF_COUNT
  t1=$(cpu_ticks "$pid")
  core1=$(core_stat "$LOAD_CPU")
  rss=$(rss_kb "$pid")

  local reqs dur_s p50 p99 errs
  if [[ $kind == h2load ]]; then
    reqs=$(awk '/^requests:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^succeeded/) print $i }' "$out" | head -1)
    dur_s=$(awk '/^finished in/ { v = $3; sub(/,$/, "", v);
              if (v ~ /ms$/) { sub(/ms$/, "", v); v /= 1000 } else sub(/s$/, "", v); print v }' "$out" | head -1)
    errs=$(awk '/^requests:/ { n = 0; for (i = 1; i <= NF; i++) if ($(i+1) ~ /^(failed|errored|timeout)/) n += $i; print n }' "$out" | head -1)
    p50=NA p99=NA
  else
    parse_wrk_result "$out" || true
    reqs=$R_REQS errs=$R_ERRS
    dur_s=NA p50=NA p99=NA
    [[ $R_DUR_US == NA ]] || dur_s=$(awk -v d="$R_DUR_US" 'BEGIN { print d / 1e6 }')
    [[ $R_P50_US == NA ]] || p50=$(awk -v v="$R_P50_US" 'BEGIN { printf "%.3f", v / 1000 }')
    [[ $R_P99_US == NA ]] || p99=$(awk -v v="$R_P99_US" 'BEGIN { printf "%.3f", v / 1000 }')
    # wrk's histogram sometimes reports 0 for the upper percentiles when a
    # pipelined batch completes very fast; a p99 below p50 is not a figure.
    if [[ $p50 != NA && $p99 != NA ]] && awk -v a="$p50" -v b="$p99" 'BEGIN { exit !(b < a) }'; then
      p99=NA
    fi
  fi
  if ! [[ ${reqs:-} =~ ^[0-9]+$ ]] || ((reqs == 0)) || [[ -z ${dur_s:-} || $dur_s == NA ]]; then
    warn "$server/$id round $round produced no result; see below"
    tail -5 "$out" >&2 || true
    na_row "$id" "$server" "$round" "no result"
    return 0
  fi
  awk -v id="$id" -v srv="$server" -v r="$round" -v reqs="$reqs" -v dur="$dur_s" \
    -v p50="$p50" -v p99="$p99" -v dt=$((t1 - t0)) -v hz="$CLK_TCK" -v sys="$sys" \
    -v rss="$rss" -v errs="${errs:-0}" -v busy="$(busy_percent "$core0" "$core1")" 'BEGIN {
      cpu = dt * 1e6 / hz / reqs
      sr = (sys == "NA") ? "NA" : sprintf("%.3f", sys / reqs)
      printf "%s\t%s\t%s\t%.1f\t%s\t%s\t%.3f\t%s\t%s\t%s\tNA\t\t%s\n", id, srv, r, reqs / dur, p50, p99, cpu, sr, rss, errs, busy
    }' >>"$RAW"
  log "  $server/$id: $(tail -1 "$RAW" | cut -f4) req/s"
}

run_idle() { # server scenario-spec round
  local server=$1 spec=$2 round=$3
  local id conns path
  IFS='|' read -r id _ _ conns path _ <<<"$spec"
  # A fresh process, so that buffers kept from earlier runs are not counted
  # as already there.
  restart_server "$server" || { na_row "$id" "$server" "$round" "did not start"; return 0; }
  local out=$WORK/runs/$id.$server.$round.txt
  local -a cmd=(python3 "$BENCH_DIR/idle_conns.py" --port "${PORT[$server]}" --pid "${SPID[$server]}" --conns "$conns" --path "$path")
  record_cmd "taskset -c $LOAD_CPU python3 bench/idle_conns.py --port ${PORT[$server]} --pid PID --conns $conns --path $path"
  taskset -c "$LOAD_CPU" "${cmd[@]}" >"$out" 2>&1 || true
  local line
  line=$(grep -m1 '^RESULT ' "$out" || true)
  if [[ -z $line ]]; then
    warn "$server/$id round $round: $(tail -2 "$out" | tr '\n' ' ')"
    na_row "$id" "$server" "$round" "no result"
    return 0
  fi
  local before after open failed closed bpc
  eval "$(sed 's/^RESULT //; s/ /\n/g' <<<"$line" | grep -E '^(before_kb|after_kb|open|failed|closed_by_server|bytes_per_conn)=[-0-9.a-z]+$' |
    sed 's/^before_kb/before/; s/^after_kb/after/; s/^closed_by_server/closed/; s/^bytes_per_conn/bpc/')"
  local note="open=$open failed=$failed closed_by_server=$closed before_kb=$before after_kb=$after"
  printf '%s\t%s\t%s\tNA\tNA\tNA\tNA\tNA\t%s\t%s\t%s\t%s\tNA\n' "$id" "$server" "$round" "$after" "$((failed + closed))" "$bpc" "$note" >>"$RAW"
  log "  $server/$id: $bpc bytes/conn ($note)"
}

for ((round = 1; round <= ROUNDS; round++)); do
  for spec in "${SCENARIOS[@]}"; do
    IFS='|' read -r id label kind _ _ yard _ <<<"$spec"
    log "round $round/$ROUNDS: $label"
    for server in "${SERVERS[@]}"; do
      if [[ $server == yardstick && $yard != 1 ]]; then
        continue
      fi
      if ! ensure_running "$server"; then
        na_row "$id" "$server" "$round" "${WHY_NOT[$server]:-not running}"
        continue
      fi
      if [[ $kind == idle ]]; then
        run_idle "$server" "$spec" "$round"
      else
        run_load "$server" "$spec" "$round"
      fi
    done
  done
done

T_END=$(date +%s)
STEAL=$(steal_percent "$STAT0" "$(cpu_stat)")
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
SCEN_FILE=$WORK/scenarios.tsv
for spec in "${SCENARIOS[@]}"; do
  IFS='|' read -r id label kind _ _ yard short <<<"$spec"
  printf '%s\t%s\t%s\t%s\t%s\n' "$id" "$label" "$kind" "$yard" "$short"
done >"$SCEN_FILE"
UNAVAIL=$WORK/unavailable.txt
: >"$UNAVAIL"
for s in "${SERVERS[@]}"; do
  if [[ ${AVAILABLE[$s]:-0} != 1 ]]; then
    printf -- '- %s: n/a (%s)\n' "$s" "${WHY_NOT[$s]:-unavailable}" >>"$UNAVAIL"
  fi
done

{
  echo "# linger vs nginx vs lighttpd vs h2o vs yardstick — $DATE"
  echo
  echo "- Date: $(date '+%F %T %z')"
  echo "- Machine: $(machine_info)"
  echo "- Load average at start: $START_LOAD, at the end: $END_LOAD (anything above the benchmark's own ~2 means other work shared the cores); wall time $((T_END - T_START)) s; CPU steal during the run: $STEAL% (time the hypervisor gave to other guests; a high value means noisy figures)"
  echo "- Rounds: $ROUNDS, $DURATION s per run, servers interleaved within each round; figures are medians with (min–max) over the rounds"
  echo "- Servers pinned to CPU $SERVER_CPU, load generators to CPU $LOAD_CPU (taskset); open-file limit $NOFILE"
  echo "- req/s moves with anything else running on the machine; CPU time per request is the steadier figure when the spread is wide"
  echo "- CPU/request: utime+stime of the server process tree (/proc/PID/stat, CLK_TCK=$CLK_TCK) over the run ÷ responses completed"
  echo "- Syscalls/request: perf stat -e raw_syscalls:sys_enter on the server tree over the run ÷ responses completed$([[ $PERF_OK == 1 ]] || echo ' (perf unavailable or PERF=0: n/a)'). perf runs during the measured run, so its tracepoint overhead is included in every server's req/s and CPU figures alike"
  echo "- RSS: VmRSS of the server tree at the end of the run; idle memory: (RSS with $IDLE_CONNS idle keep-alive connections, each after one request − RSS before) ÷ connections, on a freshly started server"
  echo "- The yardstick (ceiling.c) answers every request with a canned 13-byte response, so it only runs the 13-byte and pipelining scenarios"
  echo "- Load generator: $PORT_RANGE_NOTE. linger lets a client that sent Connection: close close first, so TIME_WAIT lands on the client; with the default range that caps one client host near 14k new connections/s (see bench/client_limits.sh)"
  echo "- Keep-alive limits: nginx keepalive_requests 1000000; linger --max-requests 1000000 (if this build has the flag); lighttpd 65535 requests per connection (its maximum), after which wrk reconnects; h2o has no per-connection request limit"
  echo "- wrk records latency once per pipelined batch, and its histogram sometimes returns 0 for high percentiles of very fast batches; such p99 values are shown as n/a"
  echo
  echo "Tools:"
  echo
  tool_versions
  if [[ -s $UNAVAIL ]]; then
    echo
    echo "Not measured:"
    echo
    cat "$UNAVAIL"
  fi
  echo
  python3 "$BENCH_DIR/report.py" compare --raw "$RAW" --scenarios "$SCEN_FILE" \
    --chart-json "$WORK/chart.json" --svg-name "$(basename "$OUT_SVG")"
  echo
  commands_section
  echo
  echo "<details><summary>nginx.conf</summary>"
  echo
  echo '```nginx'
  cat "$WORK/nginx/nginx.conf"
  echo '```'
  echo "</details>"
  echo
  echo "<details><summary>lighttpd.conf</summary>"
  echo
  echo '```'
  cat "$WORK/lighttpd/lighttpd.conf"
  echo '```'
  echo "</details>"
  echo
  if [[ -f $WORK/h2o/h2o.conf ]]; then
    echo "<details><summary>h2o.conf</summary>"
    echo
    echo '```yaml'
    cat "$WORK/h2o/h2o.conf"
    echo '```'
    echo "</details>"
    echo
  fi
  echo "<details><summary>Raw per-run figures</summary>"
  echo
  echo '```'
  column -t -s $'\t' "$RAW" 2>/dev/null || cat "$RAW"
  echo '```'
  echo "</details>"
} | sed -e "s#$WORK#\$TMP#g" -e "s#$REPO_DIR/##g" >"$OUT_MD"

python3 "$BENCH_DIR/chart.py" "$WORK/chart.json" "$OUT_SVG"
log "wrote $OUT_MD and $OUT_SVG"
