#!/usr/bin/env bash
# Pub/sub fan-out: 10 000 SSE subscribers receiving a burst of 100 messages,
# and 10 000 held long polls answered by one publish.
#
#   bench/fanout.sh                 # 3 rounds, about 2 minutes
#   QUICK=1 bench/fanout.sh         # 1 round, 500 subscribers, 20 messages
#   ROUNDS=5 SUBS=10000 MSGS=100 INTERVAL_MS=20 bench/fanout.sh
#
# Every measurement starts linger afresh, pinned to CPU $SERVER_CPU:
#   taskset -c 0 target/release/linger --listen 127.0.0.1:0 --max-conns 12000
# and runs the client, bench/fanout.c (built here with cc -O2 into a
# temporary directory), pinned to CPU $LOAD_CPU. Each round does the SSE run
# then the long-poll run, each on its own fresh server.
#
# Environment: ROUNDS (3) QUICK SUBS (10000) MSGS (100) INTERVAL_MS (20)
#   BATCH (250: handshakes in flight / long polls per batch) SERVER_CPU (0)
#   LOAD_CPU (1) LINGER_BUILD (1; 0 uses the existing binary) LINGER_BIN
#   LINGER_ARGS (extra server flags) RESULTS_DIR KEEP_WORK
# Output: bench/results/YYYY-MM-DD-fanout.md (dated in UTC)
set -euo pipefail

NOFILE_WANT=${NOFILE_WANT:-20000}
# shellcheck shell=bash source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ -n ${QUICK:-} && ${QUICK:-0} != 0 ]]; then
  ROUNDS=${ROUNDS:-1}
  SUBS=${SUBS:-500}
  MSGS=${MSGS:-20}
fi
ROUNDS=${ROUNDS:-3}
SUBS=${SUBS:-10000}
MSGS=${MSGS:-100}
INTERVAL_MS=${INTERVAL_MS:-20}
BATCH=${BATCH:-250}

FAN_PID=""
fanout_cleanup() {
  stop_linger
  bench_cleanup
}
trap fanout_cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- setup

for tool in cc taskset python3 cargo; do
  command -v "$tool" >/dev/null || die "$tool is required"
done
raise_nofile
((NOFILE >= SUBS + 100)) || die "open-file limit $NOFILE is too low for $SUBS subscribers"

# Build only when the binary is missing or older than the sources (other
# people build in this tree too; cargo serialises concurrent builds).
if [[ ${LINGER_BUILD:-1} != 0 ]]; then
  if [[ ! -x $LINGER_BIN ]] ||
    [[ -n $(find "$REPO_DIR/src" "$REPO_DIR/Cargo.toml" "$REPO_DIR/Cargo.lock" -newer "$LINGER_BIN" -print -quit) ]]; then
    log "building linger (cargo build --release)"
    record_cmd "cargo build --release"
    (cd "$REPO_DIR" && cargo build --release) || die "cargo build --release failed"
  fi
fi
[[ -x $LINGER_BIN ]] || die "no linger binary at $LINGER_BIN"

CLIENT=$WORK/fanout
cc -O2 -Wall -o "$CLIENT" "$BENCH_DIR/fanout.c" || die "bench/fanout.c did not compile"
record_cmd "cc -O2 -Wall -o fanout bench/fanout.c"

# shellcheck disable=SC2206
SERVER_ARGS=(--listen 127.0.0.1:0 --max-conns 12000 ${LINGER_ARGS:-})

start_linger() {
  local out=$WORK/linger.out i
  taskset -c "$SERVER_CPU" "$LINGER_BIN" "${SERVER_ARGS[@]}" >"$out" 2>"$WORK/linger.err" </dev/null &
  FAN_PID=$!
  record_cmd "taskset -c $SERVER_CPU target/release/linger ${SERVER_ARGS[*]}"
  for ((i = 0; i < 100; i++)); do
    if grep -q '^listening on http://' "$out" 2>/dev/null; then
      FAN_PORT=$(sed -n '1s#^listening on http://.*:\([0-9]*\)$#\1#p' "$out")
      [[ -n $FAN_PORT ]] && return 0
    fi
    kill -0 "$FAN_PID" 2>/dev/null || break
    sleep 0.05
  done
  die "linger did not start: $(head -c 300 "$WORK/linger.err" | tr '\n' ' ')"
}

stop_linger() {
  [[ -n $FAN_PID ]] || return 0
  local pid=$FAN_PID i
  FAN_PID=""
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# One client run on a fresh server; appends "round mode key=value ..." to RAW.
run_client() {
  local round=$1 mode=$2 out=$WORK/runs/$2.$1.txt rc=0
  shift 2
  start_linger
  local steal0 steal1
  steal0=$(cpu_stat)
  record_cmd "taskset -c $LOAD_CPU ./fanout $mode --port PORT $*"
  taskset -c "$LOAD_CPU" timeout 300 "$CLIENT" "$mode" --port "$FAN_PORT" "$@" >"$out" 2>&1 || rc=$?
  steal1=$(cpu_stat)
  if ! kill -0 "$FAN_PID" 2>/dev/null; then
    warn "$mode round $round: linger exited during the run: $(tail -c 300 "$WORK/linger.err" | tr '\n' ' ')"
  fi
  stop_linger
  sed -n 's/^# /    /p' "$out" >&2
  local line
  line=$(grep -m1 '^RESULT ' "$out" || true)
  if [[ -z $line ]]; then
    warn "$mode round $round: no result (exit $rc): $(tail -3 "$out" | tr '\n' ' ')"
    return 0
  fi
  printf '%s %s steal_pct=%s exit=%s\n' "$round" "${line#RESULT }" "$(steal_percent "$steal0" "$steal1")" "$rc" >>"$RAW"
  ((rc == 0)) || warn "$mode round $round: checks failed (exit $rc), see the report"
  cp "$WORK/linger.err" "$WORK/runs/$mode.$round.server.log" 2>/dev/null || true
  # Let the closed sockets settle before the next fresh server.
  sleep 1
}

mkdir -p "$RESULTS_DIR" "$WORK/runs"
DATE=$(date -u +%F)
OUT_MD=$RESULTS_DIR/$DATE-fanout.md
RAW=$WORK/fanout.raw
: >"$RAW"
T_START=$(date +%s)
STARTED_AT=$(date -u '+%F %T UTC')
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)

for ((round = 1; round <= ROUNDS; round++)); do
  log "round $round/$ROUNDS: SSE, $SUBS subscribers x $MSGS messages every $INTERVAL_MS ms"
  run_client "$round" sse --subs "$SUBS" --msgs "$MSGS" --interval-ms "$INTERVAL_MS" --batch "$BATCH"
  log "round $round/$ROUNDS: long poll, $SUBS held requests"
  run_client "$round" lp --subs "$SUBS" --batch "$BATCH"
done
T_END=$(date +%s)

# ---------------------------------------------------------------- report

LINGER_VERSION=$("$LINGER_BIN" --version 2>/dev/null || echo unknown)
GIT_REV=$(cd "$REPO_DIR" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
GIT_DIRTY=$(cd "$REPO_DIR" && git status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null | wc -l)
{
  echo "# Pub/sub fan-out: $SUBS SSE subscribers and $SUBS held long polls — $DATE"
  echo
  echo "- Date: $STARTED_AT; wall time $((T_END - T_START)) s; rounds: $ROUNDS, each test on a freshly started server; medians with (min–max)"
  echo "- Machine: $(machine_info); open-file limit $NOFILE"
  echo "- Server: $LINGER_VERSION at $GIT_REV$( ((GIT_DIRTY > 0)) && echo " with $GIT_DIRTY modified source files"), pinned to CPU $SERVER_CPU; client \`bench/fanout.c\` (one thread, epoll, non-blocking sockets) pinned to CPU $LOAD_CPU; all traffic on 127.0.0.1"
  echo "- Other load on the machine: load average $LOAD_AT_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end; CPU steal per run is in the tables"
  echo
  echo "## Method"
  echo
  echo "**SSE fan-out.** The client opens $SUBS \`GET /sub/fan\` requests with \`Accept: text/event-stream\`, at most $BATCH handshakes in flight (a subscription counts once its response head and the first chunk, \`retry: 2000\`, have arrived), then polls \`/_status\` until \`streaming\` = $SUBS. Server VmRSS (\`/proc/PID/status\`) is read before the first subscription (after one \`/_status\` request) and 1 s after the last: bytes per subscriber = ΔRSS ÷ $SUBS. One keep-alive connection then publishes $MSGS messages with \`POST /pub/fan\`, one every $INTERVAL_MS ms on a timerfd (requests are not held back waiting for the previous answer); each body is \`t=<CLOCK_MONOTONIC ns> seq=<k>\`. Every subscriber decodes the chunked framing and the SSE fields (\`retry:\`, \`id:\`, \`data:\`, comments) and checks that it received every message exactly once, in order, with the exact body published and ids consecutive from the id the first publish was answered with. A delivery's latency is the time the client read it minus the publish time in its body (one clock, one process). Per message, *fan-out latency* is publish to its **last** delivery among the subscribers; percentiles are nearest-rank over the $MSGS messages, and over all deliveries for the per-delivery figures. *Deliveries/s* = deliveries ÷ (first publish → last delivery). Server CPU is utime+stime from \`/proc/PID/stat\` (10 ms ticks) and, finer, the first field of \`/proc/PID/schedstat\`, from just before the first publish until the last delivery arrived. VmRSS is read again right after the last delivery and 2 s later. *First → last publish* shows whether the publisher held its schedule (a publish due while the client was busy reading goes out late, stamped with the time it was actually sent)."
  echo
  echo "**Long-poll fan-out.** The client opens $SUBS \`GET /sub/lp\` requests (no Accept header) in batches of $BATCH; after each batch it waits for \`/_status\` \`held\` to count them all, so the listen backlog is never overrun. With \`held\` = $SUBS it waits 1 s, reads VmRSS (bytes per held request = ΔRSS ÷ $SUBS), publishes one message and times each request until its whole \`200\` response (Content-Length framed) has arrived, checking that the JSON body carries \`\"last_id\"\` and the published text. VmRSS is read again right after the last answer and 2 s later."
  echo
  echo "RSS counts user-space memory only; kernel socket buffers are not included. The client measures its own latency too: its CPU time during the burst is given so that a client-bound figure can be recognised (the client reads every delivery on the other core)."
  echo
  python3 "$BENCH_DIR/fanout_report.py" "$RAW" "$SUBS" "$MSGS"
  echo
  echo "## Server log"
  echo
  if grep -h -E 'WARN|ERROR' "$WORK"/runs/*.server.log >/dev/null 2>&1; then
    echo "Warnings and errors linger logged (first 20):"
    echo
    echo '```'
    grep -H -E 'WARN|ERROR' "$WORK"/runs/*.server.log | sed "s#^$WORK/runs/##" | head -20
    echo '```'
  else
    echo "linger logged no warnings or errors in any run."
  fi
  echo
  echo "## Commands"
  echo
  echo '```'
  echo "ulimit -n $NOFILE"
  cat "$COMMANDS_LOG"
  echo '```'
  echo
  echo "The client prints its own summary (\`# ...\` lines) and one \`RESULT key=value ...\` line; run it by hand against any running server: \`./fanout sse --port PORT --subs 500 --msgs 20\`."
} | sed -e "s#$WORK#\$TMP#g" -e "s#$REPO_DIR/##g" >"$OUT_MD"
log "wrote $OUT_MD"
