#!/usr/bin/env bash
# Soak test: a mixed load against one linger for MINUTES minutes, then
# checks that nothing leaked and nothing was lost.
#
#   scripts/soak.sh            # 1 minute (about 1.5 minutes in all when built)
#   scripts/soak.sh 10         # 10 minutes
#
# The server (pinned to CPU 0) serves a temporary docroot with
#   --header-timeout 2 --send-timeout 5 --longpoll-timeout 5 --sse-ping 2
# and gets, from CPU 1, for the whole run:
#   - wrk keep-alive, 20 connections, a fixed mix of /hello.txt, /4k.bin
#     and /1m.bin (scripts/soak.lua);
#   - wrk pipelining 16 requests per write, 10 connections;
#   - wrk with "Connection: close", 10 connections (a connection per request);
#   - scripts/soak_clients.py: publisher, long polls, SSE and NDJSON
#     subscribers that check ids for gaps, body verification, slow heads,
#     stalled readers and malformed requests (see its docstring).
# Every SAMPLE_EVERY seconds (default 5) the server's VmRSS, descriptor
# count and /_status gauges go into a CSV. After the load: a drain, the
# checks (scripts/soak_report.py explains each rule), GET /hello.txt,
# SIGTERM and the exit code. The Markdown summary goes to stdout and to
# bench/results/YYYY-MM-DD-soak-<MINUTES>m.md (samples: same name, .csv).
# Exits 1 if any check failed.
#
# Environment: SOAK_BUILD=0 skips cargo build; LINGER_BIN; SAMPLE_EVERY;
# SERVER_CPU (0) LOAD_CPU (1); RESULTS_DIR; KEEP_WORK=1 keeps the temp dir.
# All traffic goes to 127.0.0.1; every client stops by itself.
set -euo pipefail

SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$SCRIPTS_DIR")
RESULTS_DIR=${RESULTS_DIR:-$REPO_DIR/bench/results}
LINGER_BIN=${LINGER_BIN:-$REPO_DIR/target/release/linger}
SAMPLE_EVERY=${SAMPLE_EVERY:-5}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

MINUTES=${1:-1}
[[ $MINUTES =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "usage: $0 [MINUTES]" >&2; exit 2; }
SECS=$(awk -v m="$MINUTES" 'BEGIN { printf "%d", m * 60 + 0.5 }')
((SECS >= 15)) || { echo "MINUTES must be at least 0.25" >&2; exit 2; }

# Server flags the soak is defined with; the clients are told the same.
HEADER_TIMEOUT=2 SEND_TIMEOUT=5 LONGPOLL_TIMEOUT=5 SSE_PING=2

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

WORK=$(mktemp -d /tmp/linger-soak.XXXXXX)
DOCROOT=$WORK/docroot
SERVER_PID=""
LOAD_PIDS=()

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local p
  for p in "${LOAD_PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  wait 2>/dev/null || true
  if [[ -n ${KEEP_WORK:-} ]]; then
    log "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- tools

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
command -v taskset >/dev/null || need+=(util-linux)
if ((${#need[@]})); then
  log "installing missing packages: ${need[*]}"
  sudo=()
  [[ $EUID -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Pin only where there are two CPUs to pin to.
ON_SERVER=() ON_LOAD=()
if command -v taskset >/dev/null && (($(nproc) >= 2)); then
  ON_SERVER=(taskset -c "$SERVER_CPU")
  ON_LOAD=(taskset -c "$LOAD_CPU")
fi

if [[ ${SOAK_BUILD:-1} != 0 ]]; then
  log "building linger (cargo build --release)"
  (cd "$REPO_DIR" && cargo build --release --quiet) || die "cargo build --release failed"
fi
[[ -x $LINGER_BIN ]] || die "no linger binary at $LINGER_BIN"

# ---------------------------------------------------------------- server

mkdir -p "$DOCROOT" "$RESULTS_DIR"
printf 'Hello, World!' >"$DOCROOT/hello.txt"
head -c 4096 /dev/urandom >"$DOCROOT/4k.bin"
head -c 1048576 /dev/urandom >"$DOCROOT/1m.bin"

SERVER_ARGS=(--listen 127.0.0.1:0 --root "$DOCROOT" --header-timeout "$HEADER_TIMEOUT"
  --send-timeout "$SEND_TIMEOUT" --longpoll-timeout "$LONGPOLL_TIMEOUT" --sse-ping "$SSE_PING")
"${ON_SERVER[@]}" "$LINGER_BIN" "${SERVER_ARGS[@]}" >"$WORK/server.out" 2>"$WORK/server.err" </dev/null &
SERVER_PID=$!
ADDR=""
for _ in $(seq 100); do
  ADDR=$(sed -n '1s#^listening on http://##p' "$WORK/server.out" 2>/dev/null)
  [[ -n $ADDR ]] && break
  kill -0 "$SERVER_PID" 2>/dev/null || die "linger exited at start: $(head -c 300 "$WORK/server.err")"
  sleep 0.1
done
[[ $ADDR == 127.0.0.1:* ]] || die "linger printed no listening address"
URL=http://$ADDR
log "linger pid $SERVER_PID on $URL"

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status" 2>/dev/null || echo NA; }
fd_count() { find "/proc/$SERVER_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
status_json() { curl -s --max-time 3 "$URL/_status" 2>/dev/null || true; }
field() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" <<<"$2"; }
time_wait() {
  if command -v ss >/dev/null; then
    ss -tan state time-wait 2>/dev/null | tail -n +2 | wc -l
  else
    awk 'NR > 1 && $4 == "06"' /proc/net/tcp 2>/dev/null | wc -l
  fi
}
cpu_stat() { awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t }' /proc/stat; }

# Every file once, so the file cache (which keeps a descriptor for large
# files) is in its steady state before the baseline is taken.
for f in hello.txt 4k.bin 1m.bin; do
  curl -s --max-time 5 -o /dev/null "$URL/$f" || die "priming GET /$f failed"
done
sleep 0.5
BASE_RSS=$(rss_kb)
BASE_FDS=$(fd_count)
log "baseline: VmRSS $BASE_RSS kB, $BASE_FDS descriptors"

CSV=$WORK/samples.csv
echo "t_s,phase,rss_kb,fds,active,idle,held,streaming,lingering,requests,time_wait" >"$CSV"
sample() { # phase t
  local st
  st=$(status_json)
  printf '%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n' "$2" "$1" "$(rss_kb)" "$(fd_count)" \
    "$(field active "$st")" "$(field idle "$st")" "$(field held "$st")" "$(field streaming "$st")" \
    "$(field lingering "$st")" "$(field requests "$st")" "$(time_wait)" >>"$CSV"
}
sample baseline 0

# ---------------------------------------------------------------- load

# 60 x 13 B, 3 x 4 KiB, 1 x 1 MiB per 64 requests.
MIX=()
for i in $(seq 64); do
  if ((i == 64)); then MIX+=(/1m.bin); elif ((i % 20 == 0)); then MIX+=(/4k.bin); else MIX+=(/hello.txt); fi
done
WRK=(wrk -t1 -d"${SECS}s" --timeout 5s -s "$SCRIPTS_DIR/soak.lua")
KA_CMD=("${WRK[@]}" -c20 "$URL/hello.txt" -- 1 "${MIX[@]}")
PIPE_CMD=("${WRK[@]}" -c10 "$URL/hello.txt" -- 16 /hello.txt)
CLOSE_CMD=("${WRK[@]}" -c10 -H "Connection: close" "$URL/hello.txt" -- 1 /hello.txt)
PY_CMD=(python3 "$SCRIPTS_DIR/soak_clients.py" --addr "$ADDR" --docroot "$DOCROOT" --duration "$SECS"
  --header-timeout "$HEADER_TIMEOUT" --send-timeout "$SEND_TIMEOUT"
  --longpoll-timeout "$LONGPOLL_TIMEOUT" --sse-ping "$SSE_PING" --out "$WORK/clients.json")

LOAD_AVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
CPU_START=$(cpu_stat)
STARTED_AT=$(date '+%Y-%m-%d %H:%M:%S %z')
log "load for ${SECS}s"
T0=$(date +%s.%N)
# A hard bound on every client, on top of their own durations.
BOUND=$((SECS + 60))
"${ON_LOAD[@]}" timeout "$BOUND" "${PY_CMD[@]}" >"$WORK/clients.log" 2>&1 &
LOAD_PIDS+=($!)
PY_PID=$!
"${ON_LOAD[@]}" timeout "$BOUND" "${KA_CMD[@]}" >"$WORK/wrk-keepalive.txt" 2>&1 &
LOAD_PIDS+=($!)
"${ON_LOAD[@]}" timeout "$BOUND" "${PIPE_CMD[@]}" >"$WORK/wrk-pipelined.txt" 2>&1 &
LOAD_PIDS+=($!)
"${ON_LOAD[@]}" timeout "$BOUND" "${CLOSE_CMD[@]}" >"$WORK/wrk-close.txt" 2>&1 &
LOAD_PIDS+=($!)

elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
SERVER_DIED=""
next=$SAMPLE_EVERY
while :; do
  now=$(elapsed)
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    SERVER_DIED="linger exited during the load at t=${now}s"
    log "$SERVER_DIED"
    break
  fi
  busy=0
  for p in "${LOAD_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && busy=1; done
  ((busy)) || break
  if awk -v n="$now" -v t="$next" 'BEGIN { exit !(n >= t) }'; then
    phase=load
    awk -v n="$now" -v s="$SECS" 'BEGIN { exit !(n > s) }' && phase=finishing
    sample "$phase" "$now"
    next=$(awk -v t="$next" -v e="$SAMPLE_EVERY" 'BEGIN { print t + e }')
    minute=$(awk -v n="$now" 'BEGIN { printf "%d", n / 60 }')
    if [[ $phase == load && $minute != "${logged_minute:-0}" ]]; then
      logged_minute=$minute
      log "t=${now}s VmRSS $(rss_kb) kB, $(fd_count) descriptors"
    fi
  fi
  sleep 0.5
done
PY_RC=0
wait "$PY_PID" || PY_RC=$?
for p in "${LOAD_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
LOAD_PIDS=()
LOAD_END=$(elapsed)
CPU_END=$(cpu_stat)
log "load over at t=${LOAD_END}s; waiting for connections to drain"

# ---------------------------------------------------------------- drain

DRAINED=0
if [[ -z $SERVER_DIED ]]; then
  # Lingering closes last up to --linger-timeout (5 s); allow 20 s.
  for _ in $(seq 40); do
    st=$(status_json)
    # active counts the /_status request itself once the gauge (computed
    # once per turn) has caught up with it.
    a=$(field active "$st")
    if [[ -n $a ]] && ((a <= 1)) && [[ $(field lingering "$st") == 0 ]]; then
      DRAINED=1
      break
    fi
    sleep 0.5
  done
  sleep 2
  for i in 1 2 3; do
    sample drained "$(elapsed)"
    sleep 1
  done
fi
FINAL_RSS=$(rss_kb)
FINAL_FDS=$(fd_count)
FINAL_STATUS=$(status_json)

HELLO_OK=0
if [[ -z $SERVER_DIED ]] && [[ $(curl -s --max-time 5 "$URL/hello.txt") == "Hello, World!" ]]; then
  HELLO_OK=1
fi

SIGTERM_RC=NA
SIGTERM_SECS=NA
if kill -0 "$SERVER_PID" 2>/dev/null; then
  t=$(date +%s.%N)
  kill -TERM "$SERVER_PID"
  # --shutdown-timeout is 10 s; give it 15.
  for _ in $(seq 150); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    SIGTERM_RC="still running after 15 s"
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  rc=0
  wait "$SERVER_PID" 2>/dev/null || rc=$?
  [[ $SIGTERM_RC == NA ]] && SIGTERM_RC=$rc
  SIGTERM_SECS=$(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
else
  wait "$SERVER_PID" 2>/dev/null || true
fi
SERVER_PID=""

# ---------------------------------------------------------------- report

STAMP=$(date +%F)
TAG=${MINUTES}m
OUT_MD=$RESULTS_DIR/$STAMP-soak-$TAG.md
OUT_CSV=$RESULTS_DIR/$STAMP-soak-$TAG.csv
cp "$CSV" "$OUT_CSV"

export SOAK_MINUTES=$MINUTES SOAK_SECS=$SECS SOAK_LOAD_END=$LOAD_END SOAK_STARTED_AT=$STARTED_AT
export SOAK_BASE_RSS=$BASE_RSS SOAK_BASE_FDS=$BASE_FDS SOAK_FINAL_RSS=$FINAL_RSS SOAK_FINAL_FDS=$FINAL_FDS
export SOAK_FINAL_STATUS=$FINAL_STATUS SOAK_DRAINED=$DRAINED SOAK_HELLO_OK=$HELLO_OK
export SOAK_SIGTERM_RC=$SIGTERM_RC SOAK_SIGTERM_SECS=$SIGTERM_SECS SOAK_SERVER_DIED=$SERVER_DIED
SOAK_CSV_NAME=$(basename "$OUT_CSV")
SOAK_LOAD_AVG_END=$(cut -d' ' -f1-3 /proc/loadavg)
export SOAK_PY_RC=$PY_RC SOAK_SAMPLE_EVERY=$SAMPLE_EVERY SOAK_CSV_NAME SOAK_LOAD_AVG_START=$LOAD_AVG_START SOAK_LOAD_AVG_END
export SOAK_CPU_START=$CPU_START SOAK_CPU_END=$CPU_END
export SOAK_PINNED=$((${#ON_SERVER[@]} > 0))
SOAK_COMMIT="$(cd "$REPO_DIR" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$REPO_DIR" && git diff --quiet HEAD -- src 2>/dev/null || echo ' (src/ modified)')"
SOAK_MACHINE="$(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -srm)"
export SOAK_COMMIT SOAK_MACHINE
export SOAK_SERVER_CMD="${ON_SERVER[*]:+${ON_SERVER[*]} }linger ${SERVER_ARGS[*]/#$DOCROOT/DOCROOT}"
export SOAK_KA_CMD="${ON_LOAD[*]:+${ON_LOAD[*]} }wrk -t1 -c20 -d${SECS}s --timeout 5s -s scripts/soak.lua URL/hello.txt -- 1 MIX"
export SOAK_PIPE_CMD="${ON_LOAD[*]:+${ON_LOAD[*]} }wrk -t1 -c10 -d${SECS}s --timeout 5s -s scripts/soak.lua URL/hello.txt -- 16 /hello.txt"
export SOAK_CLOSE_CMD="${ON_LOAD[*]:+${ON_LOAD[*]} }wrk -t1 -c10 -d${SECS}s --timeout 5s -H 'Connection: close' -s scripts/soak.lua URL/hello.txt -- 1 /hello.txt"
export SOAK_PY_CMD="${ON_LOAD[*]:+${ON_LOAD[*]} }python3 scripts/soak_clients.py --addr ADDR --docroot DOCROOT --duration $SECS --header-timeout $HEADER_TIMEOUT --send-timeout $SEND_TIMEOUT --longpoll-timeout $LONGPOLL_TIMEOUT --sse-ping $SSE_PING"

RC=0
python3 "$SCRIPTS_DIR/soak_report.py" "$WORK" >"$OUT_MD" || RC=$?
cat "$OUT_MD"
log "summary: $OUT_MD (samples: $OUT_CSV)"
if ((RC != 0)); then
  log "soak FAILED"
  cp "$WORK/server.err" "$RESULTS_DIR/$STAMP-soak-$TAG.server-stderr.txt" 2>/dev/null || true
fi
exit "$RC"
