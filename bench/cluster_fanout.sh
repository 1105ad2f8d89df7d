#!/usr/bin/env bash
# SSE fan-out across two linger instances sharing channels through one
# Redis, beside one instance without a broker and one with it: 10 000
# subscribers, 100 messages published on one instance, every delivery
# checked exactly once and in order.
#
#   bench/cluster_fanout.sh              # 3 rounds, about 3 minutes
#   QUICK=1 bench/cluster_fanout.sh      # 1 round, 500 subscribers, 20 messages
#   QUIET_WAIT=1800 bench/cluster_fanout.sh
#                                        # first wait (up to 30 min) for a quiet machine
#
# Three configurations, interleaved within each round (the order rotates
# from round to round, so none always runs first on a cooled machine):
#   single         one linger, channels in-process, all subscribers on it
#   single-broker  one linger with --broker, all subscribers on it
#   cluster        two lingers with --broker on the same Redis; subscriber i
#                  on instance A when i is even, on B when odd; every
#                  message published on A
# Each run starts its linger(s) afresh and uses a channel name of its own,
# so no run sees history left by another. One redis-server serves the whole
# run: started here on a free loopback port with persistence off, stopped by
# its pid at exit.
#
# Pinning (2 cores): the lingers and redis-server on CPU $SERVER_CPU, the
# client (bench/fanout.c) on CPU $LOAD_CPU. The two instances then share
# one core, so deliveries/s says what one core does with the broker's extra
# work, not what two hosts would; the servers' CPU time per delivery is the
# steady figure, and it adds up the same way on separate hosts.
#
# Environment: ROUNDS (3) QUICK SUBS (10000) MSGS (100) INTERVAL_MS (20)
#   BATCH (250) SERVER_CPU (0) SERVER2_CPU (= SERVER_CPU: instance B)
#   REDIS_CPU (= SERVER_CPU) LOAD_CPU (1) QUIET_WAIT (0; seconds to wait,
#   at most, for the load average to stay under QUIET_LOAD, 0.7, for 30 s)
#   LINGER_BUILD (1; 0 uses the existing binary) LINGER_BIN LINGER_ARGS
#   RESULTS_DIR KEEP_WORK
# Output: bench/results/YYYY-MM-DD-cluster-fanout.md (dated in UTC)
set -euo pipefail

NOFILE_WANT=${NOFILE_WANT:-20000}
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ ${QUICK:-0} != 0 ]]; then
  ROUNDS=${ROUNDS:-1}
  SUBS=${SUBS:-500}
  MSGS=${MSGS:-20}
fi
ROUNDS=${ROUNDS:-3}
SUBS=${SUBS:-10000}
MSGS=${MSGS:-100}
INTERVAL_MS=${INTERVAL_MS:-20}
BATCH=${BATCH:-250}
SERVER2_CPU=${SERVER2_CPU:-$SERVER_CPU}
REDIS_CPU=${REDIS_CPU:-$SERVER_CPU}
CONFIGS=(single single-broker cluster)

declare -A LPID=() LPORT=() # instance (a, b) -> pid, port
REDIS_PID=""
REDIS_PORT=""

cluster_cleanup() {
  stop_lingers
  stop_redis
  bench_cleanup
}
trap cluster_cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- setup

for tool in cc taskset python3 cargo; do
  command -v "$tool" >/dev/null || die "$tool is required"
done
if ! command -v redis-server >/dev/null; then
  log "installing redis-server"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null ||
    die "could not install redis-server"
fi
raise_nofile
((NOFILE >= SUBS + 100)) || die "open-file limit $NOFILE is too low for $SUBS subscribers"

# Build only when the binary is missing or older than the sources (as
# fanout.sh does: others may build in this tree too).
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

# ---------------------------------------------------------------- redis

# A port that was free a moment ago; if another process takes it first,
# redis-server exits and start_redis tries another.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# PING over bash's /dev/tcp, in a subshell so that a refused connect
# leaves this shell's descriptors alone.
redis_ping() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" || exit 1
    printf 'PING\r\n' >&3
    read -r -t 1 reply <&3 && [[ $reply == +PONG* ]]
  ) 2>/dev/null
}

start_redis() {
  local try i
  mkdir -p "$WORK/redis"
  for ((try = 0; try < 5; try++)); do
    REDIS_PORT=$(free_port)
    # Persistence off: nothing is written to disk during the run.
    taskset -c "$REDIS_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
      --daemonize no --dir "$WORK/redis" >"$WORK/redis/redis.log" 2>&1 </dev/null &
    REDIS_PID=$!
    for ((i = 0; i < 100; i++)); do
      kill -0 "$REDIS_PID" 2>/dev/null || break
      if redis_ping; then
        record_cmd "taskset -c $REDIS_CPU redis-server --port PORT --bind 127.0.0.1 --save '' --appendonly no --daemonize no --dir \$TMP/redis"
        return 0
      fi
      sleep 0.05
    done
    stop_redis
  done
  die "redis-server did not start: $(tail -3 "$WORK/redis/redis.log" | tr '\n' ' ')"
}

stop_redis() {
  [[ -n $REDIS_PID ]] || return 0
  local pid=$REDIS_PID i
  REDIS_PID=""
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# Redis's own accounting, reset before each run: the scripts linger runs
# (EVALSHA: the publish script, and the history range a new channel asks
# for) and the wall time Redis spent inside them, which counts time the
# process was preempted on its shared core, unlike the CPU figures.
redis_cmd() {
  command -v redis-cli >/dev/null || return 0
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@" 2>/dev/null || true
}
redis_script_stats() {
  redis_cmd info commandstats | tr -d '\r' | awk -F'[:=,]' '$1 == "cmdstat_evalsha" {
    printf "redis_evalsha_calls=%s redis_evalsha_us_per_call=%s", $3, $7 }'
}

# ---------------------------------------------------------------- linger

# Start instance NAME (a or b) on CPU CPU with extra flags; waits for its
# "listening on" line and, with --broker, for the broker connection.
start_linger() { # name cpu [flags...]
  local name=$1 cpu=$2 out=$WORK/linger-$1.out err=$WORK/linger-$1.err i
  shift 2
  # shellcheck disable=SC2206  # LINGER_ARGS is a list of flags on purpose
  local -a args=(--listen 127.0.0.1:0 --max-conns 12000 ${LINGER_ARGS:-} "$@")
  taskset -c "$cpu" "$LINGER_BIN" "${args[@]}" >"$out" 2>"$err" </dev/null &
  LPID[$name]=$!
  record_cmd "taskset -c $cpu target/release/linger ${args[*]/#redis:*/redis://127.0.0.1:REDIS_PORT}"
  LPORT[$name]=""
  for ((i = 0; i < 100; i++)); do
    if grep -q '^listening on http://' "$out" 2>/dev/null; then
      LPORT[$name]=$(sed -n '1s#^listening on http://.*:\([0-9]*\)$#\1#p' "$out")
      [[ -n ${LPORT[$name]} ]] && break
    fi
    kill -0 "${LPID[$name]}" 2>/dev/null || break
    sleep 0.05
  done
  [[ -n ${LPORT[$name]} ]] || die "linger $name did not start: $(head -c 300 "$err" | tr '\n' ' ')"
  [[ " $* " == *" --broker "* ]] || return 0
  for ((i = 0; i < 100; i++)); do
    if curl -s --max-time 2 "http://127.0.0.1:${LPORT[$name]}/_status" | grep -q '"broker_connected":1'; then
      return 0
    fi
    sleep 0.05
  done
  die "linger $name did not connect to the broker: $(tail -c 300 "$err" | tr '\n' ' ')"
}

stop_lingers() {
  local name pid i
  for name in "${!LPID[@]}"; do
    pid=${LPID[$name]}
    unset "LPID[$name]"
    kill -TERM "$pid" 2>/dev/null || continue
    for ((i = 0; i < 150; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

# ---------------------------------------------------------------- runs

# One configuration, one round, on fresh instances; appends
# "round config=C key=value ..." to RAW (the client's RESULT and RESULT+
# lines joined).
run_config() { # round config
  local round=$1 config=$2 out=$WORK/runs/$2.$1.txt rc=0
  local broker=redis://127.0.0.1:$REDIS_PORT
  # --drain-s: with a broker a burst may take many seconds to fan out; a
  # short drain would count late deliveries as missing.
  local -a client=(sse --subs "$SUBS" --msgs "$MSGS" --interval-ms "$INTERVAL_MS" --batch "$BATCH"
    --drain-s 120 --channel "fan-$config-$round")
  # the command as the report shows it: ports and pids vary from run to run
  local shown="./fanout ${client[*]/%-$round/-ROUND} --port PORT_A"
  case $config in
    single) start_linger a "$SERVER_CPU" ;;
    single-broker)
      start_linger a "$SERVER_CPU" --broker "$broker"
      client+=(--redis-pid "$REDIS_PID")
      shown+=" --redis-pid REDIS_PID"
      ;;
    cluster)
      start_linger a "$SERVER_CPU" --broker "$broker"
      start_linger b "$SERVER2_CPU" --broker "$broker"
      client+=(--port2 "${LPORT[b]}" --redis-pid "$REDIS_PID")
      shown+=" --port2 PORT_B --redis-pid REDIS_PID"
      ;;
  esac
  local steal0 steal1 load1
  load1=$(cut -d' ' -f1 /proc/loadavg)
  steal0=$(cpu_stat)
  redis_cmd config resetstat >/dev/null
  record_cmd "taskset -c $LOAD_CPU $shown"
  taskset -c "$LOAD_CPU" timeout 300 "$CLIENT" "${client[@]}" --port "${LPORT[a]}" >"$out" 2>&1 || rc=$?
  steal1=$(cpu_stat)
  local scripts
  scripts=$(redis_script_stats)
  local name
  for name in "${!LPID[@]}"; do
    kill -0 "${LPID[$name]}" 2>/dev/null ||
      warn "$config round $round: linger $name exited during the run: $(tail -c 300 "$WORK/linger-$name.err" | tr '\n' ' ')"
    cp "$WORK/linger-$name.err" "$WORK/runs/$config.$round.$name.server.log" 2>/dev/null || true
  done
  stop_lingers
  sed -n 's/^# /    /p' "$out" >&2
  local line extra
  line=$(grep -m1 '^RESULT ' "$out" || true)
  extra=$(grep -m1 '^RESULT+ ' "$out" || true)
  if [[ -z $line ]]; then
    warn "$config round $round: no result (exit $rc): $(tail -3 "$out" | tr '\n' ' ')"
    return 0
  fi
  printf '%s config=%s %s %s %s steal_pct=%s load1=%s exit=%s\n' "$round" "$config" "${line#RESULT }" \
    "${extra#RESULT+ }" "$scripts" "$(steal_percent "$steal0" "$steal1")" "$load1" "$rc" >>"$RAW"
  ((rc == 0)) || warn "$config round $round: checks failed (exit $rc), see the report"
  # Let the closed sockets settle before the next fresh server.
  sleep 1
}

mkdir -p "$RESULTS_DIR" "$WORK/runs"
DATE=$(date -u +%F)
OUT_MD=$RESULTS_DIR/$DATE-cluster-fanout.md
RAW=$WORK/cluster.raw
: >"$RAW"

wait_quiet
start_redis
log "redis-server pid $REDIS_PID on 127.0.0.1:$REDIS_PORT (CPU $REDIS_CPU)"
T_START=$(date +%s)
STARTED_AT=$(date -u '+%F %T UTC')
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
STAT0=$(cpu_stat)

for ((round = 1; round <= ROUNDS; round++)); do
  for ((k = 0; k < ${#CONFIGS[@]}; k++)); do
    config=${CONFIGS[$(((k + round - 1) % ${#CONFIGS[@]}))]}
    log "round $round/$ROUNDS: $config, $SUBS subscribers x $MSGS messages every $INTERVAL_MS ms"
    run_config "$round" "$config"
  done
done
T_END=$(date +%s)
STEAL=$(steal_percent "$STAT0" "$(cpu_stat)")
REDIS_VERSION=$(redis-server --version | sed 's/ sha=.*//')
stop_redis

# ---------------------------------------------------------------- report

LINGER_VERSION=$("$LINGER_BIN" --version 2>/dev/null || echo unknown)
GIT_REV=$(cd "$REPO_DIR" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
GIT_DIRTY=$(cd "$REPO_DIR" && git status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null | wc -l)
{
  echo "# SSE fan-out across two instances on one Redis: $SUBS subscribers, $MSGS messages — $DATE"
  echo
  echo "- Date: $STARTED_AT; wall time $((T_END - T_START)) s; rounds: $ROUNDS, the three configurations interleaved in each (order rotating), each run on freshly started linger instances and a channel of its own; medians with (min–max)"
  echo "- Machine: $(machine_info); open-file limit $NOFILE"
  echo "- Server: $LINGER_VERSION at $GIT_REV$( ((GIT_DIRTY > 0)) && echo " with $GIT_DIRTY modified source files"); $REDIS_VERSION, one process for the whole run, persistence off (\`--save '' --appendonly no\`); all traffic on 127.0.0.1"
  echo "- Pinning: linger instance A on CPU $SERVER_CPU, instance B on CPU $SERVER2_CPU, redis-server on CPU $REDIS_CPU, the client \`bench/fanout.c\` (one thread, epoll) on CPU $LOAD_CPU"
  echo "- Other load: $QUIET_NOTE; load average $LOAD_AT_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end (each run's 1-minute figure at its start is in the tables; the benchmark itself keeps about one core busy); CPU steal over the run $STEAL%"
  echo
  echo "## Method"
  echo
  echo "Configurations: **single** is one linger with channels in-process (today's \`bench/fanout.sh\` SSE run); **single-broker** is one linger with \`--broker redis://127.0.0.1:PORT\`; **cluster** is two linger instances, A and B, both with \`--broker\` on the same redis-server, subscriber *i* on A when *i* is even and on B when odd ($((SUBS - SUBS / 2)) and $((SUBS / 2))), every message published on A."
  echo
  echo "The client opens $SUBS \`GET /sub/CHANNEL\` requests with \`Accept: text/event-stream\` (at most $BATCH handshakes in flight) and waits until each instance's \`/_status\` shows \`streaming\` equal to its share. One keep-alive connection to A then publishes $MSGS messages with \`POST /pub/CHANNEL\`, one every $INTERVAL_MS ms on a timerfd, each body \`t=<CLOCK_MONOTONIC ns> seq=<k>\`. Every subscriber decodes the chunked framing and the SSE fields and checks that it got every message exactly once, in order, with the body published and ids consecutive from the id the first publish was answered with (with a broker, Redis issues the ids). *Fan-out latency* is a message's publish to its last delivery over all subscribers on both instances; percentiles are nearest-rank over the $MSGS messages (per-delivery ones over all deliveries). *Deliveries/s* = deliveries ÷ (first publish → last delivery)."
  echo
  echo "CPU, from just before the first publish until the last delivery: each linger's first field of \`/proc/PID/schedstat\` (ns on CPU; utime+stime from \`/proc/PID/stat\` agrees within a tick), per instance ÷ the deliveries its own subscribers received, and all instances together ÷ all deliveries (*server CPU per delivery*, the steady figure). **Redis CPU per message**: utime+stime of redis-server from \`/proc/PID/stat\` over the same interval ÷ $MSGS, and, as those are 10 ms ticks and the whole burst costs Redis only some of them, also the sum over its threads of \`/proc/PID/task/*/schedstat\` ÷ $MSGS. Redis's own idle cost (its 10 Hz cron, linger's keep-alive touches) is measured over 1 s just before the burst and shown beside it; it is not subtracted."
  echo
  python3 "$BENCH_DIR/cluster_fanout_report.py" "$RAW" "$SUBS" "$MSGS"
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
} | sed -e "s#$WORK#\$TMP#g" -e "s#$REPO_DIR/##g" >"$OUT_MD"
log "wrote $OUT_MD"
