#!/usr/bin/env bash
# Server memory per idle keep-alive connection at 10 000 connections, for
# linger, nginx and lighttpd.
#
#   bench/idle_memory.sh             # 3 rounds
#   QUICK=1 bench/idle_memory.sh     # 1 round
#
# Each measurement starts the server afresh (pinned to CPU $SERVER_CPU), does
# one warm-up request, reads VmRSS of the server's process tree, then opens
# IDLE_CONNS connections from bench/idle_conns.py (pinned to CPU $LOAD_CPU),
# each doing one GET /hello.txt and then staying open and idle, and reads
# VmRSS again:  bytes/conn = (after - before) / connections.
#
# Environment: ROUNDS (3) QUICK IDLE_CONNS (10000) plus BASE_PORT, SERVER_CPU,
#   LOAD_CPU, LINGER_BUILD, LINGER_BIN, LINGER_ARGS, KEEP_WORK as in compare.sh.
# Output: bench/results/YYYY-MM-DD-idle-memory.md
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

set_rounds
IDLE_CONNS=${IDLE_CONNS:-10000}
SERVERS=(linger nginx lighttpd)

bench_setup
AVAILABLE[yardstick]=0
prepare_servers

mkdir -p "$RESULTS_DIR" "$WORK/runs"
DATE=$(date +%F)
OUT_MD=$RESULTS_DIR/$DATE-idle-memory.md
RAW=$WORK/idle.tsv
printf 'server\tround\tbefore_kb\tafter_kb\topen\tfailed\tclosed\tbytes_per_conn\tseconds\tnote\n' >"$RAW"
T_START=$(date +%s)

for ((round = 1; round <= ROUNDS; round++)); do
  log "round $round/$ROUNDS"
  for server in "${SERVERS[@]}"; do
    if [[ ${AVAILABLE[$server]:-0} != 1 ]] || ! restart_server "$server"; then
      printf '%s\t%s\tNA\tNA\tNA\tNA\tNA\tNA\tNA\t%s\n' "$server" "$round" "${WHY_NOT[$server]:-not running}" >>"$RAW"
      continue
    fi
    out=$WORK/runs/$server.$round.txt
    record_cmd "taskset -c $LOAD_CPU python3 bench/idle_conns.py --port ${PORT[$server]} --pid PID --conns $IDLE_CONNS"
    taskset -c "$LOAD_CPU" python3 "$BENCH_DIR/idle_conns.py" --port "${PORT[$server]}" \
      --pid "${SPID[$server]}" --conns "$IDLE_CONNS" >"$out" 2>&1 || true
    line=$(grep -m1 '^RESULT ' "$out" || true)
    if [[ -z $line ]]; then
      warn "$server round $round: $(tail -2 "$out" | tr '\n' ' ')"
      printf '%s\t%s\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tno result\n' "$server" "$round" >>"$RAW"
      continue
    fi
    # RESULT before_kb=.. after_kb=.. open=.. failed=.. closed_by_server=.. bytes_per_conn=.. seconds=..
    awk -v srv="$server" -v r="$round" '{
        for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", srv, r, v["before_kb"], v["after_kb"], v["open"],
          v["failed"], v["closed_by_server"], v["bytes_per_conn"], v["seconds"]
      }' <<<"$line" >>"$RAW"
    log "  $server: $line"
    stop_server "$server"
  done
done
T_END=$(date +%s)

{
  echo "# Memory per idle keep-alive connection — $DATE"
  echo
  echo "- Date: $(date '+%F %T %z')"
  echo "- Machine: $(machine_info)"
  echo "- Rounds: $ROUNDS, each on a freshly started server; medians with (min–max); wall time $((T_END - T_START)) s"
  echo "- Method: one warm-up request, VmRSS of the server process tree (nginx: master + worker), then $IDLE_CONNS connections each doing one GET /hello.txt and staying open idle, VmRSS again after 1 s; bytes/conn = ΔRSS ÷ connections"
  echo "- RSS counts user-space memory only; kernel socket buffers are not included"
  echo "- Servers pinned to CPU $SERVER_CPU, the client to CPU $LOAD_CPU (taskset); open-file limit $NOFILE"
  for s in "${SERVERS[@]}"; do
    if [[ ${AVAILABLE[$s]:-0} != 1 ]]; then
      echo "- Not measured: $s (${WHY_NOT[$s]:-unavailable})"
    fi
  done
  echo
  echo "## Results"
  echo
  python3 "$BENCH_DIR/report.py" idle --raw "$RAW"
  echo
  commands_section
  echo
  echo "<details><summary>Server configs</summary>"
  echo
  echo '```nginx'
  cat "$WORK/nginx/nginx.conf"
  echo '```'
  echo
  echo '```'
  cat "$WORK/lighttpd/lighttpd.conf"
  echo '```'
  echo "</details>"
} | sed -e "s#$WORK#\$TMP#g" -e "s#$REPO_DIR/##g" >"$OUT_MD"
log "wrote $OUT_MD"
