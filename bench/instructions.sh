#!/usr/bin/env bash
# User-space instructions per request, counted by callgrind: linger, nginx,
# lighttpd and the yardstick serving the same fixed load. Unlike time, an
# instruction count does not move with CPU steal or frequency, so on a
# noisy machine it shows a change of a few percent that compare.sh's
# timings cannot. It leaves out the kernel (read, write, epoll, TCP), which
# is half or more of each server's cost: compare.sh's CPU time per request
# is still the measure of record.
#
#   bench/instructions.sh            # about 2 minutes
#
# Environment: SERIAL (2000 requests), CONCURRENT (20000, a multiple of
# 100), PIPELINED (32000, a multiple of 1600), ONLY_SERVERS (e.g. "linger,yardstick"), BASE_PORT,
# LINGER_BUILD, LINGER_BIN, LINGER_ARGS, YARDSTICK, KEEP_WORK as in
# compare.sh.
#
# Scenarios (bench/instructions.py): "serial", one connection sending one
# request at a time, so every request pays a whole turn of the event loop;
# "concurrent", 100 connections with one request written on each at once,
# so turns are shared as with wrk at 100 connections; "pipelined", 100
# connections with 16 requests written at once on each.
# Each server is warmed up first (file caches, dates), its counters are
# zeroed, the scenario runs, and the counters are dumped: start-up costs
# are not in the figures. Output: bench/results/YYYY-MM-DD-instructions.md.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SERIAL=${SERIAL:-2000}
CONCURRENT=${CONCURRENT:-20000}
PIPELINED=${PIPELINED:-32000}
SERVERS=(linger nginx lighttpd yardstick)
if [[ -n ${ONLY_SERVERS:-} ]]; then
  IFS=, read -r -a SERVERS <<<"$ONLY_SERVERS"
fi
((CONCURRENT % 100 == 0)) || die "CONCURRENT must be a multiple of 100"
((PIPELINED % 1600 == 0)) || die "PIPELINED must be a multiple of 1600"

bench_setup
if ! command -v valgrind >/dev/null; then
  log "installing valgrind"
  sudo=()
  [[ $EUID -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi
build_ceiling
prepare_servers
# One nginx process: the worker is what serves, and callgrind then
# follows it without tracing children.
sed -i '1i master_process off;' "$WORK/nginx/nginx.conf"
DRIVER=$BENCH_DIR/instructions.py
SCENARIOS=(serial concurrent pipelined)
declare -A COUNT=([serial]=$SERIAL [concurrent]=$CONCURRENT [pipelined]=$PIPELINED)
declare -A LABEL=(
  [serial]="one request at a time, 1 connection"
  [concurrent]="one request at a time on each of 100 connections"
  [pipelined]="pipelined ×16, 100 connections"
)
declare -A IPR=() # "server scenario" -> instructions per request

# Start one server under callgrind, wait until it serves.
start_counted() {
  local name=$1
  SCMD["$name"]="valgrind --tool=callgrind --callgrind-out-file=$WORK/cg.$name --dump-instr=no ${SCMD[$name]}"
  start_server "$name" || return 1
  # start_server's own check may have been the first request: warm up
  # every scenario so caches and dates are in place before counting.
  python3 "$DRIVER" "${PORT[$name]}" serial 50
  python3 "$DRIVER" "${PORT[$name]}" concurrent 200
  python3 "$DRIVER" "${PORT[$name]}" pipelined 1600
}

# Dump the counts since the last zeroing: sets LAST_DUMP (the file) and
# LAST_TOTAL (instructions).
dump_counts() {
  local name=$1 pid=$2 before
  before=$(find "$WORK" -maxdepth 1 -name "cg.$name.*" | wc -l)
  callgrind_control -d "$pid" >/dev/null 2>&1
  # Callgrind numbers its dumps from 1: this one is the next number.
  LAST_DUMP=$WORK/cg.$name.$((before + 1))
  # The totals line comes last: wait for it, not just for the file.
  local i
  LAST_TOTAL=
  for ((i = 0; i < 100 && ${#LAST_TOTAL} == 0; i++)); do
    ((i == 0)) || sleep 0.1
    LAST_TOTAL=$(awk '/^totals:/ { print $2; exit }' "$LAST_DUMP" 2>/dev/null || true)
  done
  [[ -n $LAST_TOTAL ]] || die "callgrind wrote no complete dump $LAST_DUMP"
}

for name in "${SERVERS[@]}"; do
  log "counting $name"
  if ! start_counted "$name"; then
    warn "$name did not start under valgrind: ${WHY_NOT[$name]:-}"
    continue
  fi
  pid=${SPID[$name]}
  for scenario in "${SCENARIOS[@]}"; do
    callgrind_control -z "$pid" >/dev/null 2>&1
    python3 "$DRIVER" "${PORT[$name]}" "$scenario" "${COUNT[$scenario]}"
    dump_counts "$name" "$pid"
    IPR["$name $scenario"]=$((LAST_TOTAL / COUNT[$scenario]))
    log "$name $scenario: ${IPR["$name $scenario"]} instructions per request"
    if [[ $name == linger && $scenario == pipelined ]]; then
      cp "$LAST_DUMP" "$WORK/linger-pipelined.callgrind"
    fi
  done
  stop_server "$name"
done
record_cmd "python3 bench/instructions.py PORT serial $SERIAL"
record_cmd "python3 bench/instructions.py PORT concurrent $CONCURRENT"
record_cmd "python3 bench/instructions.py PORT pipelined $PIPELINED"
record_cmd "callgrind_control -z PID; (scenario); callgrind_control -d PID"

cell() { echo "${IPR["$1 $2"]:-n/a}"; }
ratio() {
  local a=${IPR["linger $1"]:-} b=${IPR["$2 $1"]:-}
  [[ -n $a && -n $b && $b != 0 ]] && awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }' || echo "n/a"
}

mkdir -p "$RESULTS_DIR"
out=$RESULTS_DIR/$(date +%F)-instructions.md
{
  echo "# User-space instructions per request ($(date +%F))"
  echo
  echo "Counted by callgrind (\`bench/instructions.sh\`) after a warm-up, start-up excluded;"
  echo "13-byte /hello.txt. The kernel's share (system calls, TCP) is not counted:"
  echo "CPU time per request in compare.sh remains the measure of record."
  echo
  echo "Machine: $(machine_info)."
  echo
  echo "| scenario | requests | linger | nginx | lighttpd | yardstick | linger ÷ yardstick | ÷ nginx | ÷ lighttpd |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for scenario in "${SCENARIOS[@]}"; do
    echo "| ${LABEL[$scenario]} | ${COUNT[$scenario]} | $(cell linger "$scenario") | $(cell nginx "$scenario") | $(cell lighttpd "$scenario") | $(cell yardstick "$scenario") | $(ratio "$scenario" yardstick) | $(ratio "$scenario" nginx) | $(ratio "$scenario" lighttpd) |"
  done
  if [[ -f $WORK/linger-pipelined.callgrind ]]; then
    echo
    echo "## Where linger's pipelined instructions go"
    echo
    echo "Inclusive instructions per request (a function's count includes its callees'), largest first."
    echo
    echo "| instructions/request | function |"
    echo "|---|---|"
    callgrind_annotate --inclusive=yes "$WORK/linger-pipelined.callgrind" 2>/dev/null |
      awk -v n="$PIPELINED" '
        # Read to the end (no early exit: callgrind_annotate would take
        # the closed pipe as a failure).
        /Auto-annotated source/ { done = 1 }
        done { next }
        /^ *[0-9,]+ +\(/ && !/PROGRAM TOTALS|\?\?\?|below main|libc_start|Server::run|linger::main|lang_start|backtrace/ {
          count = $1; gsub(",", "", count)
          fn = $0; sub(/^ *[0-9,]+ +\([^)]*\) +/, "", fn); sub(/^[^:]*:/, "", fn); sub(/ \[.*$/, "", fn)
          if (!(fn in seen)) { seen[fn] = 1; printf "| %d | `%s` |\n", count / n, fn; shown++ }
          if (shown == 20) done = 1
        }'
  fi
  echo
  echo "Tools:"
  echo
  tool_versions
  printf -- '- %s\n' "$(valgrind --version)"
  echo
  commands_section
} | sed -e "s#$WORK#\$TMP#g" -e "s#$REPO_DIR/##g" >"$out"
log "wrote $out"
