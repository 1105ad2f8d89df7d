#!/usr/bin/env bash
# Fairness under a greedy pipelining client, for linger, nginx and lighttpd.
#
#   bench/fairness.sh                # 3 rounds x 5 s per phase
#   QUICK=1 bench/fairness.sh        # 1 round x 2 s, smoke run
#
# For each server and round, two phases on the same server process:
#   alone   ORDINARY ordinary keep-alive clients (default 50): each one
#           connection, one request at a time (wrk -tN -cN with
#           bench/fairness.lua, so every wrk thread is one client and its
#           request count is reported);
#   greedy  the same, while one greedy client pipelines GREEDY_DEPTH
#           (default 64) requests per write on one connection as fast as the
#           server answers (wrk with bench/pipeline.lua), started at the
#           same time as the ordinary clients and for as long.
# Reported: the ordinary clients' p50/p99 latency in both phases, their total
# req/s, Jain's fairness index over their per-client request counts
# (J = (sum x)^2 / (n * sum x^2), 1 = perfectly even), and the greedy
# client's req/s and share of all responses.
#
# Environment: ROUNDS (3) DURATION (5) QUICK ORDINARY (50) GREEDY_DEPTH (64)
#   FAIR_PATH (/hello.txt) PACE_MS (0: ordinary clients wait N ms between
#   requests) plus BASE_PORT, SERVER_CPU, LOAD_CPU, LINGER_BUILD, LINGER_BIN,
#   LINGER_ARGS, KEEP_WORK as in compare.sh.
# Output: bench/results/YYYY-MM-DD-fairness.md
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ -n ${QUICK:-} && ${QUICK:-0} != 0 ]]; then
  ROUNDS=${ROUNDS:-1}
  DURATION=${DURATION:-2}
fi
ROUNDS=${ROUNDS:-3}
DURATION=$(seconds_of "${DURATION:-5}")
ORDINARY=${ORDINARY:-50}
GREEDY_DEPTH=${GREEDY_DEPTH:-64}
FAIR_PATH=${FAIR_PATH:-/hello.txt}
export PACE_MS=${PACE_MS:-0}
SERVERS=(linger nginx lighttpd)

trap bench_cleanup EXIT
trap 'exit 130' INT TERM

ensure_tools
raise_nofile
make_docroot
build_linger
AVAILABLE[yardstick]=0
prepare_servers

mkdir -p "$RESULTS_DIR" "$WORK/runs"
DATE=$(date +%F)
OUT_MD=$RESULTS_DIR/$DATE-fairness.md
RAW=$WORK/fairness.tsv
printf 'server\tround\tphase\tord_rps\tp50_ms\tp99_ms\tjain\tord_errors\tgreedy_rps\tgreedy_errors\tcounts\tnote\n' >"$RAW"
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
STAT0=$(cpu_stat)
T_START=$(date +%s)

for s in "${SERVERS[@]}"; do
  start_server "$s" || true
done

run_phase() { # server round phase
  local server=$1 round=$2 phase=$3
  local url=http://127.0.0.1:${PORT[$server]}$FAIR_PATH
  local oout=$WORK/runs/$server.$round.$phase.ordinary.txt
  local gout=$WORK/runs/$server.$round.$phase.greedy.txt
  local -a ocmd=(wrk -t"$ORDINARY" -c"$ORDINARY" -d"${DURATION}s" -s "$BENCH_DIR/fairness.lua" "$url")
  local -a gcmd=(wrk -t1 -c1 -d"${DURATION}s" -s "$BENCH_DIR/pipeline.lua" "$url" -- "$GREEDY_DEPTH")
  local shown gpid=""
  shown=$(printf '%q ' taskset -c "$LOAD_CPU" "${ocmd[@]}")
  record_cmd "${PACE_MS:+PACE_MS=$PACE_MS }${shown% }"
  if [[ $phase == greedy ]]; then
    shown=$(printf '%q ' taskset -c "$LOAD_CPU" "${gcmd[@]}")
    record_cmd "${shown% }  # greedy client, runs alongside the ordinary clients"
    taskset -c "$LOAD_CPU" "${gcmd[@]}" >"$gout" 2>&1 &
    gpid=$!
  fi
  taskset -c "$LOAD_CPU" "${ocmd[@]}" >"$oout" 2>&1 || true
  local grps=NA gerr=NA
  if [[ -n $gpid ]]; then
    wait "$gpid" || true
    if parse_wrk_result "$gout"; then
      grps=$(awk -v n="$R_REQS" -v d="$R_DUR_US" 'BEGIN { printf "%.1f", n / (d / 1e6) }')
      gerr=$R_ERRS
    fi
  fi
  if ! parse_wrk_result "$oout" || [[ $R_REQS == 0 ]]; then
    warn "$server round $round $phase: no result: $(tail -3 "$oout" | tr '\n' ' ')"
    printf '%s\t%s\t%s\tNA\tNA\tNA\tNA\tNA\t%s\t%s\t\tno result\n' "$server" "$round" "$phase" "$grps" "$gerr" >>"$RAW"
    return 0
  fi
  local counts
  counts=$(grep -m1 '^COUNTS ' "$oout" | cut -d' ' -f2)
  awk -v srv="$server" -v r="$round" -v ph="$phase" -v n="$R_REQS" -v d="$R_DUR_US" \
    -v p50="$R_P50_US" -v p99="$R_P99_US" -v e="$R_ERRS" -v g="$grps" -v ge="$gerr" -v c="$counts" 'BEGIN {
      k = split(c, x, ","); s = 0; s2 = 0
      for (i = 1; i <= k; i++) { s += x[i]; s2 += x[i] * x[i] }
      j = (k > 0 && s2 > 0) ? sprintf("%.4f", s * s / (k * s2)) : "NA"
      printf "%s\t%s\t%s\t%.1f\t%.3f\t%.3f\t%s\t%s\t%s\t%s\t%s\t\n", srv, r, ph, n / (d / 1e6), p50 / 1000, p99 / 1000, j, e, g, ge, c
    }' >>"$RAW"
  log "  $server $phase: ordinary $(tail -1 "$RAW" | cut -f4) req/s, p99 $(tail -1 "$RAW" | cut -f6) ms, Jain $(tail -1 "$RAW" | cut -f7), greedy $grps req/s"
}

for ((round = 1; round <= ROUNDS; round++)); do
  log "round $round/$ROUNDS"
  for server in "${SERVERS[@]}"; do
    for phase in alone greedy; do
      if ! ensure_running "$server"; then
        printf '%s\t%s\t%s\tNA\tNA\tNA\tNA\tNA\tNA\tNA\t\t%s\n' "$server" "$round" "$phase" "${WHY_NOT[$server]:-not running}" >>"$RAW"
        continue
      fi
      run_phase "$server" "$round" "$phase"
    done
  done
done
T_END=$(date +%s)
STEAL=$(steal_percent "$STAT0" "$(cpu_stat)")
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

{
  echo "# Fairness under a greedy pipelining client — $DATE"
  echo
  echo "- Date: $(date '+%F %T %z')"
  echo "- Machine: $(machine_info)"
  echo "- Load average at start: $START_LOAD, at the end: $END_LOAD (anything above the benchmark's own ~2 means other work shared the cores); wall time $((T_END - T_START)) s; CPU steal during the run: $STEAL% (time the hypervisor gave to other guests; a high value means noisy figures)"
  echo "- Rounds: $ROUNDS, $DURATION s per phase, servers interleaved within each round; medians with (min–max) over rounds"
  echo "- Servers pinned to CPU $SERVER_CPU, all clients to CPU $LOAD_CPU (taskset)"
  echo "- Ordinary clients: $ORDINARY keep-alive connections, one request at a time each, GET $FAIR_PATH$([[ $PACE_MS == 0 ]] || echo ", $PACE_MS ms pause between requests")"
  echo "- Greedy client: 1 connection pipelining $GREEDY_DEPTH requests per write, started together with the ordinary clients for the same duration"
  echo "- Jain's index J = (Σx)² / (n·Σx²) over the ordinary clients' completed requests (1 = perfectly even, 1/n = one client got everything)"
  echo "- Note: the ordinary and greedy clients share CPU $LOAD_CPU, so part of the latency is client-side scheduling, the same for every server"
  echo
  echo "Tools:"
  echo
  tool_versions
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
  echo "## Commands"
  echo
  echo '```'
  cat "$COMMANDS_LOG"
  echo '```'
  echo
  echo "<details><summary>Raw per-run figures (counts = requests per ordinary client)</summary>"
  echo
  echo '```'
  cat "$RAW"
  echo '```'
  echo "</details>"
} | sed -e "s#$WORK#\$TMP#g" -e "s#$REPO_DIR/##g" >"$OUT_MD"
log "wrote $OUT_MD"
