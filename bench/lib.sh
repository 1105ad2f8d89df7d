# shellcheck shell=bash disable=SC2034  # variables here are used by the sourcing scripts
# Shared helpers for the benchmark scripts in bench/: tool installation,
# docroot and config generation, starting/stopping pinned servers, and
# CPU/RSS/syscall sampling.  Sourced by compare.sh, fairness.sh and
# idle_memory.sh; not meant to be run directly.
#
# Conventions:
#   - servers run on CPU $SERVER_CPU (default 0), load generators on
#     CPU $LOAD_CPU (default 1), both via taskset;
#   - every server started here is stopped by the EXIT trap (bench_cleanup);
#   - all traffic goes to 127.0.0.1 only.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BASE_PORT=${BASE_PORT:-18080}
LINGER_BIN=${LINGER_BIN:-$REPO_DIR/target/release/linger}
YARDSTICK=${YARDSTICK:-$(dirname "$REPO_DIR")/shared/yardstick/ceiling.c}
NOFILE_WANT=${NOFILE_WANT:-65536}

declare -A PORT=(
  [linger]=$((BASE_PORT + 1))
  [nginx]=$((BASE_PORT + 2))
  [lighttpd]=$((BASE_PORT + 3))
  [yardstick]=$((BASE_PORT + 4))
  [h2o]=$((BASE_PORT + 5))
)
declare -A SPID=()       # server name -> pid of the process we started
declare -A SCMD=()       # server name -> exact command line
declare -A AVAILABLE=()  # server name -> 1 if it can be started
declare -A WHY_NOT=()    # server name -> reason it is unavailable
LINGER_EXTRA=()

WORK=$(mktemp -d /tmp/linger-bench.XXXXXX)
chmod 755 "$WORK"
DOCROOT=$WORK/docroot
COMMANDS_LOG=$WORK/commands.txt
: >"$COMMANDS_LOG"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { log "WARNING: $*"; }
die() { log "ERROR: $*"; exit 1; }

# Record a command line (deduplicated) for the "exact commands" section.
record_cmd() {
  local line="$*"
  grep -qxF -- "$line" "$COMMANDS_LOG" 2>/dev/null || printf '%s\n' "$line" >>"$COMMANDS_LOG"
}

# The report's "Commands" section: every command line recorded, once.
commands_section() {
  echo "## Commands"
  echo
  echo '```'
  cat "$COMMANDS_LOG"
  echo '```'
}

bench_cleanup() {
  local name
  restore_port_range
  if [[ -n ${PERF_PID:-} ]]; then
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
  fi
  for name in "${!SPID[@]}"; do
    stop_server "$name" || true
  done
  if [[ -n ${KEEP_WORK:-} ]]; then
    log "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
}

# What every comparison script does first: clean up on exit (servers,
# port range, work directory), install what is missing, raise the
# descriptor limit, write the docroot and build linger.
bench_setup() {
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
  ensure_tools
  raise_nofile
  make_docroot
  build_linger
}

# ---------------------------------------------------------------- tools

ensure_tools() {
  local -a pkgs=()
  command -v wrk >/dev/null || pkgs+=(wrk)
  command -v h2load >/dev/null || pkgs+=(nghttp2-client)
  command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || pkgs+=(nginx)
  command -v lighttpd >/dev/null || [[ -x /usr/sbin/lighttpd ]] || pkgs+=(lighttpd)
  command -v h2o >/dev/null || pkgs+=(h2o)
  command -v perf >/dev/null || pkgs+=(linux-perf)
  command -v python3 >/dev/null || pkgs+=(python3)
  command -v taskset >/dev/null || pkgs+=(util-linux)
  command -v ps >/dev/null || pkgs+=(procps)
  command -v cc >/dev/null || pkgs+=(gcc)
  command -v curl >/dev/null || pkgs+=(curl)
  if ((${#pkgs[@]})); then
    log "installing missing packages: ${pkgs[*]}"
    local sudo=()
    [[ $EUID -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  fi
  export PATH=$PATH:/usr/sbin:/sbin
  PERF_OK=0
  if [[ ${PERF:-1} == 0 ]]; then
    log "PERF=0: syscall counting disabled"
  elif command -v perf >/dev/null &&
    perf stat -x, -e raw_syscalls:sys_enter -o /dev/null -- true >/dev/null 2>&1; then
    PERF_OK=1
  else
    warn "perf cannot count raw_syscalls:sys_enter here; syscalls/request will be n/a"
  fi
}

# Raise the open-file limit as far as allowed (1000 and 10 000 connections
# need it for both the servers and the load generators, which inherit it).
raise_nofile() {
  local hard
  hard=$(ulimit -Hn)
  if [[ $hard != unlimited && $hard -lt $NOFILE_WANT ]]; then
    ulimit -Hn "$NOFILE_WANT" 2>/dev/null || true
    hard=$(ulimit -Hn)
  fi
  if [[ $hard == unlimited || $hard -ge $NOFILE_WANT ]]; then
    ulimit -n "$NOFILE_WANT"
  else
    ulimit -n "$hard"
  fi
  NOFILE=$(ulimit -n)
  ((NOFILE >= 10240)) || warn "open-file limit is only $NOFILE; 10 000-connection runs will fail"
}

# The load generator's ephemeral port range.  A server that lets the client
# close first (linger, when the client asked for Connection: close) leaves
# TIME_WAIT on the client, and connect() may reuse a TIME_WAIT port only
# once the second has turned (tcp_tw_reuse, tcp_twsk_unique), so one client
# host reaches at most (ports in range / 2) new connections per second to
# one server port: 14 116/s with Debian's default 32768-60999, with a
# tail of slow connects as the range runs out.  Load generators are tuned
# for this (many client hosts never meet it); widen_port_range does that for
# the run, for every server alike, and restore_port_range puts it back.
# bench/client_limits.sh measures both ranges.  The wide range starts above
# the benchmark's own server ports: a client port taken from among them
# would keep a server from binding when it restarts.
WIDE_PORT_RANGE=${WIDE_PORT_RANGE:-"20000 65535"}
widen_port_range() {
  PORT_RANGE_NOTE="net.ipv4.ip_local_port_range left at $(sysctl -n net.ipv4.ip_local_port_range 2>/dev/null | tr '\t' '-')"
  [[ ${WIDE_PORT_RANGE} != 0 ]] || return 0
  if ((BASE_PORT + 20 >= ${WIDE_PORT_RANGE%% *})); then
    warn "BASE_PORT $BASE_PORT is inside WIDE_PORT_RANGE $WIDE_PORT_RANGE; leaving the port range alone"
    return 0
  fi
  local now
  now=$(sysctl -n net.ipv4.ip_local_port_range 2>/dev/null) || return 0
  if sysctl -q -w net.ipv4.ip_local_port_range="$WIDE_PORT_RANGE" 2>/dev/null; then
    SAVED_PORT_RANGE=$now
    PORT_RANGE_NOTE="net.ipv4.ip_local_port_range widened from ${now//$'\t'/-} to ${WIDE_PORT_RANGE// /-} for the run (restored at exit)"
  else
    warn "cannot widen net.ipv4.ip_local_port_range (not root?); connection-per-request figures for linger will be capped near 14k/s by the client's port reuse"
  fi
  log "$PORT_RANGE_NOTE"
}
restore_port_range() {
  if [[ -n ${SAVED_PORT_RANGE:-} ]]; then
    sysctl -q -w net.ipv4.ip_local_port_range="$SAVED_PORT_RANGE" 2>/dev/null || true
    SAVED_PORT_RANGE=""
  fi
}

machine_info() {
  local model kernel
  model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
  kernel=$(uname -srm)
  printf '%s CPUs (nproc), %s, %s' "$(nproc)" "${model:-unknown CPU}" "$kernel"
}

tool_versions() {
  local v
  for v in "nginx -v" "lighttpd -v" "h2o --version" "wrk -v" "h2load --version" "perf --version" "python3 --version"; do
    # some of these (wrk -v) exit non-zero after printing their version
    printf -- '- %s\n' "$($v 2>&1 | head -1 | sed 's/ Copyright.*//' || true)"
  done
}

# CPU steal time (host contention in a VM), from the cpu line of /proc/stat.
cpu_stat() { awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t }' /proc/stat; }
# "idle total" jiffies of one CPU (idle includes iowait), and the busy
# percentage between two such readings: how saturated the load core was.
core_stat() { awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= 9; i++) t += $i; print $5 + $6, t }' /proc/stat; }
busy_percent() { # "idle total" at start, "idle total" at end
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ")
    d = y[2] - x[2]; printf "%.0f", (d > 0 ? 100 - 100 * (y[1] - x[1]) / d : 0) }'
}
steal_percent() { # "steal total" at start, "steal total" at end
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ")
    d = y[2] - x[2]; printf "%.1f", (d > 0 ? 100 * (y[1] - x[1]) / d : 0) }'
}

# Wait, at most QUIET_WAIT seconds (default 0: not at all), for the 1-minute
# load average to stay under QUIET_LOAD (0.7) for 30 s, polling every 15 s:
# other work on a shared machine moves every timed figure. Sets QUIET_NOTE,
# a sentence for the report saying what happened.
wait_quiet() {
  QUIET_WAIT=${QUIET_WAIT:-0}
  QUIET_LOAD=${QUIET_LOAD:-0.7}
  QUIET_NOTE="no wait for a quiet machine (QUIET_WAIT=0)"
  ((QUIET_WAIT > 0)) || return 0
  local start=$SECONDS under=0 load
  log "waiting up to $QUIET_WAIT s for the load average to stay under $QUIET_LOAD for 30 s"
  while ((SECONDS - start < QUIET_WAIT)); do
    load=$(cut -d' ' -f1 /proc/loadavg)
    if awk -v l="$load" -v m="$QUIET_LOAD" 'BEGIN { exit !(l < m) }'; then
      under=$((under + 1))
      if ((under >= 3)); then
        QUIET_NOTE="load average stayed under $QUIET_LOAD for 30 s before the run (waited $((SECONDS - start)) s)"
        return 0
      fi
    else
      under=0
    fi
    sleep 15
  done
  QUIET_NOTE="the load average did not stay under $QUIET_LOAD for 30 s within $QUIET_WAIT s; ran anyway (load $(cut -d' ' -f1-3 /proc/loadavg) at the start)"
  warn "$QUIET_NOTE"
}

# ---------------------------------------------------------------- docroot

make_docroot() {
  mkdir -p "$DOCROOT"
  printf 'Hello, World!' >"$DOCROOT/hello.txt"
  head -c 4096 /dev/urandom >"$DOCROOT/4k.bin"
  head -c 102400 /dev/urandom >"$DOCROOT/100k.bin"
  chmod -R a+rX "$DOCROOT"
  [[ $(stat -c %s "$DOCROOT/hello.txt") -eq 13 ]] || die "hello.txt is not 13 bytes"
}

# ---------------------------------------------------------------- builds

build_linger() {
  if [[ ${LINGER_BUILD:-1} != 0 ]]; then
    log "building linger (cargo build --release)"
    record_cmd "cargo build --release"
    if ! (cd "$REPO_DIR" && cargo build --release); then
      warn "cargo build --release failed; using $LINGER_BIN if it exists"
    fi
  fi
  if [[ ! -x $LINGER_BIN ]]; then
    AVAILABLE[linger]=0
    WHY_NOT[linger]="binary $LINGER_BIN not built"
    return 0
  fi
  # Use optional flags only if this build of linger knows them, so a run
  # never fails on a flag that does not exist yet.  Keep-alive timeout and
  # connection limit are raised like they are for nginx and lighttpd.
  local help
  help=$(timeout 3 "$LINGER_BIN" --help 2>&1 </dev/null || true)
  LINGER_EXTRA=()
  # Same limits as nginx/lighttpd get: keep-alive requests 1000000 (nginx
  # keepalive_requests), idle timeout 65 s, listen backlog 4096, and room
  # for the 10 000 idle connections.
  if grep -q -- '--max-conns' <<<"$help"; then LINGER_EXTRA+=(--max-conns 12000); fi
  if grep -q -- '--max-requests' <<<"$help"; then LINGER_EXTRA+=(--max-requests 1000000); fi
  if grep -q -- '--idle-timeout' <<<"$help"; then LINGER_EXTRA+=(--idle-timeout 65); fi
  if grep -q -- '--backlog' <<<"$help"; then LINGER_EXTRA+=(--backlog 4096); fi
  if [[ -n ${LINGER_ARGS:-} ]]; then
    # shellcheck disable=SC2206
    LINGER_EXTRA+=($LINGER_ARGS)
  fi
  AVAILABLE[linger]=1
}

build_ceiling() {
  if [[ ! -f $YARDSTICK ]]; then
    AVAILABLE[yardstick]=0
    WHY_NOT[yardstick]="yardstick source not found at $YARDSTICK (set YARDSTICK=/path/to/ceiling.c)"
    warn "${WHY_NOT[yardstick]}; the yardstick column will be n/a"
    return 0
  fi
  if cc -O2 -o "$WORK/ceiling" "$YARDSTICK"; then
    record_cmd "cc -O2 -o ceiling $YARDSTICK"
    AVAILABLE[yardstick]=1
  else
    AVAILABLE[yardstick]=0
    WHY_NOT[yardstick]="ceiling.c did not compile"
  fi
}

# ---------------------------------------------------------------- configs

# One nginx config for every script. Callers may set, before calling:
#   NGINX_TUNING        http-level directives after tcp_nodelay
#                       (default: open_file_cache on, 1M keep-alive requests)
#   NGINX_BACKLOG       listen backlog (default 4096)
#   NGINX_SERVER_EXTRA  extra directives inside the server block
write_nginx_conf() {
  local dir=$WORK/nginx
  mkdir -p "$dir/tmp"
  local user_line=""
  [[ $EUID -eq 0 ]] && user_line="user root;"
  local tuning=${NGINX_TUNING:-"    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    open_file_cache_errors on;
    keepalive_requests 1000000;
    keepalive_timeout 65;"}
  local server_extra=${NGINX_SERVER_EXTRA:-}
  [[ -n $server_extra ]] && server_extra=$'\n'$server_extra
  cat >"$dir/nginx.conf" <<EOF
$user_line
worker_processes 1;
worker_rlimit_nofile $NOFILE;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events {
    worker_connections $((NOFILE - 64));
    use epoll;
}
http {
    types {
        text/plain txt;
        application/octet-stream bin;
    }
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nodelay on;
$tuning
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen 127.0.0.1:${PORT[nginx]} backlog=${NGINX_BACKLOG:-4096};
        server_name localhost;
        root $DOCROOT;$server_extra
    }
}
EOF
}

write_lighttpd_conf() {
  local dir=$WORK/lighttpd
  mkdir -p "$dir"
  # lighttpd refuses more connections than max-fds/2;
  # max-keep-alive-requests is a 16-bit setting, 65535 is its maximum.
  local fds=$NOFILE
  cat >"$dir/lighttpd.conf" <<EOF
server.document-root = "$DOCROOT"
server.bind = "127.0.0.1"
server.port = ${PORT[lighttpd]}
server.pid-file = "$dir/lighttpd.pid"
server.errorlog = "$dir/error.log"
server.max-fds = $fds
server.max-connections = $((fds / 2))
server.max-keep-alive-requests = 65535
server.max-keep-alive-idle = 65
server.max-read-idle = 65
server.listen-backlog = 4096
server.network-backend = "sendfile"
mimetype.assign = (".txt" => "text/plain", ".bin" => "application/octet-stream")
EOF
}

# h2o as the others are set up: one thread (one core, like one nginx
# worker), no access log, sendfile-backed static files, keep-alive
# connections kept as long as nginx's and lighttpd's (65 s).
write_h2o_conf() {
  local dir=$WORK/h2o
  mkdir -p "$dir"
  local user_line=""
  [[ $EUID -eq 0 ]] && user_line="user: root"
  cat >"$dir/h2o.conf" <<EOF
$user_line
listen:
  host: 127.0.0.1
  port: ${PORT[h2o]}
num-threads: 1
max-connections: $((NOFILE - 64))
http1-request-timeout: 65
pid-file: $dir/h2o.pid
error-log: $dir/error.log
hosts:
  default:
    paths:
      /:
        file.dir: $DOCROOT
EOF
}

# Fill SCMD and AVAILABLE for every server; call after builds.
prepare_servers() {
  write_nginx_conf
  write_lighttpd_conf
  write_h2o_conf
  SCMD[linger]="$LINGER_BIN --listen 127.0.0.1:${PORT[linger]} --root $DOCROOT${LINGER_EXTRA[*]:+ ${LINGER_EXTRA[*]}}"
  SCMD[nginx]="nginx -e $WORK/nginx/error.log -c $WORK/nginx/nginx.conf"
  SCMD[lighttpd]="lighttpd -D -f $WORK/lighttpd/lighttpd.conf"
  SCMD[yardstick]="$WORK/ceiling ${PORT[yardstick]}"
  SCMD[h2o]="h2o -c $WORK/h2o/h2o.conf"
  AVAILABLE[nginx]=${AVAILABLE[nginx]:-1}
  AVAILABLE[lighttpd]=${AVAILABLE[lighttpd]:-1}
  if command -v h2o >/dev/null; then
    AVAILABLE[h2o]=${AVAILABLE[h2o]:-1}
  else
    AVAILABLE[h2o]=0
    WHY_NOT[h2o]="h2o is not installed"
  fi
  local name
  for name in linger nginx lighttpd yardstick h2o; do
    if port_open "${PORT[$name]}"; then
      AVAILABLE[$name]=0
      WHY_NOT[$name]="port ${PORT[$name]} already in use (set BASE_PORT)"
      warn "${WHY_NOT[$name]}"
    fi
  done
}

# ---------------------------------------------------------------- servers

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# GET /hello.txt and check for 200 and the 13-byte body.
http_ok() {
  local body
  body=$(curl -s --max-time 2 "http://127.0.0.1:$1/hello.txt" 2>/dev/null) || return 1
  [[ $body == "Hello, World!" ]]
}

start_server() {
  local name=$1
  [[ ${AVAILABLE[$name]:-0} == 1 ]] || return 1
  [[ -z ${SPID[$name]:-} ]] || return 0
  local out=$WORK/$name.out
  # shellcheck disable=SC2086
  taskset -c "$SERVER_CPU" ${SCMD[$name]} >"$out" 2>&1 </dev/null &
  SPID[$name]=$!
  record_cmd "taskset -c $SERVER_CPU ${SCMD[$name]}"
  local i
  for ((i = 0; i < 100; i++)); do
    if ! kill -0 "${SPID[$name]}" 2>/dev/null; then
      break
    fi
    if [[ $name == linger ]] && ! grep -q 'listening on' "$out" 2>/dev/null; then
      sleep 0.1
      continue
    fi
    if port_open "${PORT[$name]}" && http_ok "${PORT[$name]}"; then
      return 0
    fi
    sleep 0.1
  done
  local reason="did not start serving /hello.txt on port ${PORT[$name]}"
  if ! kill -0 "${SPID[$name]}" 2>/dev/null; then
    reason="exited at start: $(head -c 200 "$out" | tr '\n' ' ')"
  fi
  stop_server "$name" || true
  AVAILABLE[$name]=0
  WHY_NOT[$name]=$reason
  warn "$name $reason"
  return 1
}

stop_server() {
  local name=$1
  local pid=${SPID[$name]:-}
  [[ -n $pid ]] || return 0
  unset "SPID[$name]"
  kill -TERM "$pid" 2>/dev/null || return 0
  local i
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  # nginx workers exit with their master; give them a moment.
  sleep 0.2
}

restart_server() {
  stop_server "$1"
  start_server "$1"
}

# Make sure a server that crashed during a run is back for the next one.
ensure_running() {
  local name=$1
  [[ ${AVAILABLE[$name]:-0} == 1 ]] || return 1
  if [[ -n ${SPID[$name]:-} ]] && kill -0 "${SPID[$name]}" 2>/dev/null; then
    return 0
  fi
  if [[ -n ${SPID[$name]:-} ]]; then
    warn "$name (pid ${SPID[$name]}) died; restarting it"
    unset "SPID[$name]"
  fi
  start_server "$name"
}

# ---------------------------------------------------------------- sampling

# The server's process and all its descendants (nginx master + worker).
tree_pids() {
  local root=$1
  ps -e -o pid=,ppid= | awk -v root="$root" '
    { parent[$1] = $2; pids[NR] = $1 }
    END {
      keep[root] = 1; print root
      changed = 1
      while (changed) {
        changed = 0
        for (i in pids) { p = pids[i]
          if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; print p; changed = 1 } }
      }
    }'
}

# utime+stime in clock ticks, summed over the process tree (all threads:
# /proc/PID/stat of a process covers all of its threads).
cpu_ticks() {
  local total=0 p f
  for p in $(tree_pids "$1"); do
    f=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null) || continue
    # after "comm) " field 1 is state; utime/stime are fields 12/13
    # shellcheck disable=SC2086  # split the numeric fields on purpose
    set -- $f
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
}

# VmRSS in kB summed over the process tree.
rss_kb() {
  local total=0 p v
  for p in $(tree_pids "$1"); do
    v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null) || continue
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

CLK_TCK=$(getconf CLK_TCK)

# perf counting raw_syscalls:sys_enter on the server tree, stopped with SIGINT.
perf_start() {
  PERF_PID=""
  PERF_OUT=$WORK/perf.$$.out
  [[ ${PERF_OK:-0} == 1 ]] || return 0
  local pids
  pids=$(tree_pids "$1" | paste -sd, -)
  taskset -c "$LOAD_CPU" perf stat -x, -e raw_syscalls:sys_enter -p "$pids" -o "$PERF_OUT" >/dev/null 2>&1 &
  PERF_PID=$!
  sleep 0.3
}

# Sets PERF_COUNT to the syscall count, or NA.  Must not run in a subshell
# ($(...)): it waits for perf, which is a child of this shell.
perf_stop() {
  PERF_COUNT=NA
  [[ -n ${PERF_PID:-} ]] || return 0
  kill -INT "$PERF_PID" 2>/dev/null || true
  wait "$PERF_PID" 2>/dev/null || true
  PERF_PID=""
  local n
  n=$(awk -F, '/raw_syscalls:sys_enter/ {print $1}' "$PERF_OUT" 2>/dev/null | head -1)
  [[ $n =~ ^[0-9]+$ ]] && PERF_COUNT=$n
  return 0
}

# Parse the "RESULT ..." line our wrk Lua scripts print from done().
# Sets: R_REQS R_DUR_US R_P50_US R_P99_US R_ERRS
parse_wrk_result() {
  local line
  line=$(grep -m1 '^RESULT ' "$1" || true)
  R_REQS=NA R_DUR_US=NA R_P50_US=NA R_P99_US=NA R_ERRS=NA
  [[ -n $line ]] || return 1
  local kv
  for kv in ${line#RESULT }; do
    case $kv in
      requests=*) R_REQS=${kv#*=} ;;
      duration_us=*) R_DUR_US=${kv#*=} ;;
      p50_us=*) R_P50_US=${kv#*=} ;;
      p99_us=*) R_P99_US=${kv#*=} ;;
      errors=*) R_ERRS=${kv#*=} ;;
    esac
  done
}

# ROUNDS (3) and DURATION (5, whole seconds per run) from the environment;
# QUICK=1 makes them 1 round x 2 s unless they are given.
set_rounds() {
  if [[ ${QUICK:-0} != 0 ]]; then
    ROUNDS=${ROUNDS:-1}
    DURATION=${DURATION:-2}
  fi
  ROUNDS=${ROUNDS:-3}
  DURATION=$(seconds_of "${DURATION:-5}")
}

# Pretty "N s" duration handling: DURATION may be "5" or "5s".
seconds_of() {
  local d=${1%s}
  [[ $d =~ ^[0-9]+$ ]] || die "duration must be whole seconds, got '$1'"
  echo "$d"
}
