#!/usr/bin/env bash
# Slow-client attacks with slowhttptest against linger and nginx (one
# worker), side by side, while an ordinary client measures what a normal
# visitor gets during the attack.
#
#   bench/slowloris.sh                  # about 5 minutes
#   ATTACK_SECS=20 CONNS=500 bench/slowloris.sh
#
# Attacks (slowhttptest, -c $CONNS connections opened at $RATE per second,
# -l $ATTACK_SECS seconds, probe timeout -p $PROBE_SECS):
#   H  slowloris: an incomplete request head, a random header line of up
#      to 24 bytes every 5 s (-H -i 5 -x 24), GET /hello.txt;
#   B  slow body (R-U-Dead-Yet): a complete head announcing an 8 KiB body,
#      then up to 10 bytes every 5 s (-B -i 5 -x 10 -s 8192), to an endpoint
#      that reads bodies: linger POST /pub/slowbody, nginx PUT
#      /upload/slowbody (dav_methods PUT);
#   X  slow read: GET /100k.bin three times per connection, advertising a
#      512-1024 byte window and reading 32 bytes a second (-X -k 3 -n 1
#      -w 512 -y 1024 -z 32);
#   none: no attack, for reference.
# The ordinary client (bench/ordinary_client.py) starts a GET /hello.txt on
# a new connection every 100 ms from 2 s into the attack to 1 s before its
# end, each allowed 10 s. The report gives its figures over the requests
# that started while the attack held at least half of its connections
# (a server that closes attack connections ends the attack early:
# slowhttptest does not reopen them), and over the whole window.
#
# Settings, chosen so both servers work under the same rules: linger with
# its defaults (--header-timeout 10, --send-timeout 60, --idle-timeout 60,
# --linger-timeout 5, --max-conns 10000); nginx with client_header_timeout
# 10s, client_body_timeout 10s, send_timeout 60s, keepalive_timeout 60s,
# lingering_timeout 5s, one worker with worker_connections near the
# descriptor limit. Both have room for every attack connection.
#
# Environment: ATTACK_SECS (30, at most 60) CONNS (1000) RATE (200)
# PROBE_SECS (5) MODES ("none H B X") BASE_PORT (18380: linger +1, nginx
# +2) SERVER_CPU (0) LOAD_CPU (1) LINGER_BUILD (1; 0 skips cargo build)
# KEEP_WORK. Output: bench/results/YYYY-MM-DD-slowloris.md.
# Traffic stays on 127.0.0.1; each attack and client stops by itself.
set -euo pipefail

NOFILE_WANT=${NOFILE_WANT:-20000}
# Ports of its own, clear of compare.sh's (18080 + n) which may be running.
BASE_PORT=${BASE_PORT:-18380}
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ATTACK_SECS=$(seconds_of "${ATTACK_SECS:-30}")
((ATTACK_SECS >= 12 && ATTACK_SECS <= 60)) || die "ATTACK_SECS must be 12..60"
CONNS=${CONNS:-1000}
RATE=${RATE:-200}
PROBE_SECS=${PROBE_SECS:-5}
read -r -a MODES <<<"${MODES:-none H B X}"
SERVERS=(linger nginx)
BASELINE_SECS=10

trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- tools

pkgs=()
command -v slowhttptest >/dev/null || pkgs+=(slowhttptest)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || pkgs+=(nginx)
command -v python3 >/dev/null || pkgs+=(python3)
command -v curl >/dev/null || pkgs+=(curl)
command -v taskset >/dev/null || pkgs+=(util-linux)
command -v ps >/dev/null || pkgs+=(procps)
if ((${#pkgs[@]})); then
  log "installing missing packages: ${pkgs[*]}"
  sudo=()
  [[ $EUID -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi
export PATH=$PATH:/usr/sbin:/sbin
command -v slowhttptest >/dev/null || die "slowhttptest is not installed"

raise_nofile
((NOFILE >= CONNS + 200)) || die "open-file limit $NOFILE is too low for $CONNS connections"

# Servers are pinned by lib.sh's start_server; the clients go here.
ON_LOAD=()
(($(nproc) >= 2)) && ON_LOAD=(taskset -c "$LOAD_CPU")

# ---------------------------------------------------------------- servers

make_docroot
build_linger
# The attack runs against linger's defaults, not the throughput settings
# lib.sh gives it for compare.sh.
LINGER_EXTRA=()

write_nginx_slow_conf() {
  mkdir -p "$WORK/nginx/upload"
  NGINX_BACKLOG=1024
  NGINX_TUNING="    # The same rules as linger's defaults.
    client_header_timeout 10s;      # --header-timeout 10
    client_body_timeout 10s;        # (linger: the header timeout covers the body too)
    send_timeout 60s;               # --send-timeout 60
    keepalive_timeout 60s;          # --idle-timeout 60
    keepalive_requests 1000;        # --max-requests 1000
    lingering_timeout 5s;           # --linger-timeout 5
    client_max_body_size 64k;       # a published message is at most 64 KiB"
  NGINX_SERVER_EXTRA="        # An endpoint that reads request bodies, like linger's /pub/.
        location /upload/ {
            root $WORK/nginx;
            dav_methods PUT;
            create_full_put_path on;
        }
        location = /nginx_status {
            stub_status;
            allow 127.0.0.1;
            deny all;
        }"
  write_nginx_conf
}

write_nginx_slow_conf
SCMD[linger]="$LINGER_BIN --listen 127.0.0.1:${PORT[linger]} --root $DOCROOT"
SCMD[nginx]="nginx -e $WORK/nginx/error.log -c $WORK/nginx/nginx.conf"
AVAILABLE[nginx]=1
for name in "${SERVERS[@]}"; do
  if port_open "${PORT[$name]}"; then
    AVAILABLE[$name]=0
    WHY_NOT[$name]="port ${PORT[$name]} already in use (set BASE_PORT)"
    warn "${WHY_NOT[$name]}"
  fi
done

# Connections the server holds open, by its own count.
server_conns() {
  case $1 in
    linger) curl -s --max-time 3 "http://127.0.0.1:${PORT[linger]}/_status" |
      sed -n 's/.*"active":\([0-9]*\).*/\1/p' ;;
    nginx) curl -s --max-time 3 "http://127.0.0.1:${PORT[nginx]}/nginx_status" |
      sed -n 's/^Active connections: *\([0-9]*\).*/\1/p' ;;
  esac
}

# Sanity check of the slow-body endpoints before attacking them.
endpoint_ok() {
  case $1 in
    linger) curl -s -o /dev/null -w '%{http_code}' --max-time 3 -X POST --data x \
      "http://127.0.0.1:${PORT[linger]}/pub/slowbody-check" | grep -q '^200$' ;;
    nginx) curl -s -o /dev/null -w '%{http_code}' --max-time 3 -X PUT --data x \
      "http://127.0.0.1:${PORT[nginx]}/upload/check" | grep -Eq '^20[14]$' ;;
  esac
}

# ---------------------------------------------------------------- runs

attack_args() { # server mode
  local port=${PORT[$1]}
  case $2 in
    H) echo "-H -i 5 -x 24 -u http://127.0.0.1:$port/hello.txt" ;;
    B)
      if [[ $1 == linger ]]; then
        echo "-B -i 5 -x 10 -s 8192 -t POST -u http://127.0.0.1:$port/pub/slowbody"
      else
        echo "-B -i 5 -x 10 -s 8192 -t PUT -u http://127.0.0.1:$port/upload/slowbody"
      fi
      ;;
    X) echo "-X -k 3 -n 1 -w 512 -y 1024 -z 32 -u http://127.0.0.1:$port/100k.bin" ;;
  esac
}

declare -A RES=() # "server|mode|key" -> value

run_one() { # server mode
  local name=$1 mode=$2 tag="$1-$2"
  RES[$name|$mode|status]=ok
  if ! start_server "$name"; then
    RES[$name|$mode|status]="n/a: ${WHY_NOT[$name]:-did not start}"
    return 0
  fi
  if [[ $mode == B ]] && ! endpoint_ok "$name"; then
    warn "$name: the slow-body endpoint does not accept a body"
    RES[$name|$mode|note]="endpoint check failed"
  fi
  local pid=${SPID[$name]} port=${PORT[$name]}
  local rss_peak=0 conns_mid=NA conns_end=NA slow_pid="" client_secs start_delay
  if [[ $mode == none ]]; then
    client_secs=$BASELINE_SECS
    start_delay=0
  else
    local -a args
    read -r -a args <<<"$(attack_args "$name" "$mode")"
    local cmd=(slowhttptest "${args[@]}" -c "$CONNS" -r "$RATE" -l "$ATTACK_SECS" -p "$PROBE_SECS" -g -o "$WORK/$tag")
    record_cmd "${ON_LOAD[*]} ${cmd[*]//127.0.0.1:$port/127.0.0.1:PORT}"
    RES[$name|$mode|t0]=$(date +%s.%N)
    "${ON_LOAD[@]}" timeout $((ATTACK_SECS + 30)) "${cmd[@]}" >"$WORK/$tag.out" 2>&1 </dev/null &
    slow_pid=$!
    client_secs=$((ATTACK_SECS - 3))
    start_delay=2
  fi
  log "$name, attack ${mode}: ordinary client for ${client_secs}s"
  sleep "$start_delay"
  "${ON_LOAD[@]}" python3 "$BENCH_DIR/ordinary_client.py" --port "$port" --duration "$client_secs" \
    --interval 0.1 --timeout 10 --log "$WORK/$tag.client.log" >"$WORK/$tag.client.json" 2>"$WORK/$tag.client.err" &
  local client_pid=$! t=0 r
  while kill -0 "$client_pid" 2>/dev/null; do
    r=$(rss_kb "$pid")
    ((r > rss_peak)) && rss_peak=$r
    if ((t == client_secs / 2)); then conns_mid=$(server_conns "$name"); fi
    sleep 1
    t=$((t + 1))
  done
  wait "$client_pid" || warn "$name $mode: ordinary client exited with an error"
  conns_end=$(server_conns "$name")
  if [[ -n $slow_pid ]]; then
    wait "$slow_pid" || true
  fi
  RES[$name|$mode|rss_peak]=$rss_peak
  RES[$name|$mode|conns_mid]=${conns_mid:-NA}
  RES[$name|$mode|conns_end]=${conns_end:-NA}
  if [[ $name == linger ]]; then
    RES[$name|$mode|counters]=$(curl -s --max-time 3 "http://127.0.0.1:$port/_status" |
      python3 -c 'import json,sys; d=json.load(sys.stdin); print(", ".join(f"{k} {d[k]}" for k in ("header_timeouts","send_timeouts","lingering_closes","evicted","rejected")))' 2>/dev/null || echo "")
  fi
  stop_server "$name"
}

LOAD_AVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
CPU_START=$(cpu_stat)
T_START=$(date +%s)
DATE_LONG=$(date '+%Y-%m-%d %H:%M:%S %z')
# Interleaved: each attack against both servers before the next attack.
for mode in "${MODES[@]}"; do
  for name in "${SERVERS[@]}"; do
    run_one "$name" "$mode"
    sleep 2 # let TIME-WAIT and closing sockets settle between runs
  done
done
CPU_END=$(cpu_stat)
LOAD_AVG_END=$(cut -d' ' -f1-3 /proc/loadavg)
WALL=$(($(date +%s) - T_START))

# ---------------------------------------------------------------- report

# Everything slowhttptest said, without its colours.
slow_field() { # file pattern -> last value
  sed 's/\x1b\[[0-9;]*m//g' "$1" 2>/dev/null | sed -n "s/^$2[[:space:]]*//p" | tail -1
}
# Seconds in which slowhttptest's probe got an answer, of all seconds.
slow_available() { # csv
  awk -F, 'NR > 1 { n++; if ($5 > 0) a++ } END { if (n) printf "%d/%d s", a, n; else printf "n/a" }' "$1" 2>/dev/null
}
slow_peak() { # csv column
  awk -F, -v c="$2" 'NR > 1 && $c + 0 > m { m = $c + 0 } END { print m + 0 }' "$1" 2>/dev/null
}
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); v=d
for k in sys.argv[2].split("."): v=v.get(k) if isinstance(v, dict) else None
print("n/a" if v is None else (", ".join(f"{k} {n}" for k, n in v.items()) or "none") if isinstance(v, dict) else v)' "$1" "$2" 2>/dev/null || echo n/a; }

ms2() { awk -v v="$1" 'BEGIN { if (v ~ /^[0-9.]+$/) printf "%.2f", v; else printf "%s", v }'; }

mode_label() {
  case $1 in
    none) echo "none (reference)" ;;
    H) echo "slowloris (-H)" ;;
    B) echo "slow body (-B)" ;;
    X) echo "slow read (-X)" ;;
  esac
}

# The ordinary requests that started while the attack held at least half
# of its connections (by slowhttptest's per-second CSV, second k being
# [t0 + k, t0 + k + 1)): "ok/attempted|p50|p99|max|seconds held".
under_attack() { # client.log attack.csv t0
  python3 - "$1" "$2" "$3" "$CONNS" <<'PY' 2>/dev/null || echo "n/a|n/a|n/a|n/a|n/a"
import csv, sys
log, csv_path, t0, conns = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
held = set()
with open(csv_path) as f:
    for row in csv.DictReader(f):
        if int(row["Connected"]) >= conns / 2:
            held.add(int(row["Seconds"]))
ok, n = [], 0
for line in open(log):
    start, outcome, ms = line.split()
    if int(float(start) - t0) in held:
        n += 1
        if outcome == "ok":
            ok.append(float(ms))
ok.sort()
pick = lambda p: f"{ok[min(len(ok) - 1, max(0, int(round(p / 100 * len(ok) + 0.5)) - 1))]:.2f}" if ok else "n/a"
print(f"{len(ok)} / {n}|{pick(50)}|{pick(99)}|{pick(100)}|{len(held)} s")
PY
}

mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/$(date +%F)-slowloris.md
{
  echo "# Slow-client attacks (slowhttptest): linger and nginx — $(date +%F)"
  echo
  echo "- Date: $DATE_LONG; wall time ${WALL} s"
  echo "- Machine: $(machine_info)"
  echo "- Load average at start: $LOAD_AVG_START, at the end: $LOAD_AVG_END; CPU steal during the runs: $(steal_percent "$CPU_START" "$CPU_END")%"
  echo "- Servers pinned to CPU $SERVER_CPU, slowhttptest and the ordinary client to CPU $LOAD_CPU (taskset); open-file limit $NOFILE for all"
  echo "- Each attack: $CONNS connections opened at $RATE per second, ${ATTACK_SECS} s (-l), probe timeout ${PROBE_SECS} s (-p); each server freshly started for each run, attacks interleaved (linger, nginx, next attack)"
  echo "- Ordinary client: GET /hello.txt on a new connection every 100 ms, open loop, from 2 s into the attack to 1 s before its end ($(((ATTACK_SECS - 3) * 10)) requests; ${BASELINE_SECS} s without an attack), each allowed 10 s; latency is connect to last body byte; p50/p99 are over the requests that succeeded"
  echo "- $(slowhttptest -h 2>&1 | grep -m1 -o 'version [0-9.]*' | sed 's/^/slowhttptest /'); $(nginx -v 2>&1); $(python3 --version)"
  echo
  echo "## Same rules for both servers"
  echo
  echo "| setting | linger (its defaults) | nginx |"
  echo "| --- | --- | --- |"
  echo "| request head | --header-timeout 10: the whole head within 10 s of the connection's first byte (trickling does not extend it); 408 | client_header_timeout 10s; 408 |"
  echo "| request body | the same 10 s deadline covers the body | client_body_timeout 10s, between two successive reads |"
  echo "| slow reader | --send-timeout 60: dropped after 60 s without reading anything | send_timeout 60s, between two successive writes |"
  echo "| idle keep-alive | --idle-timeout 60 (adaptive, shorter when slots run short) | keepalive_timeout 60s |"
  echo "| closing | lingering close, --linger-timeout 5 | lingering_timeout 5s |"
  echo "| capacity | --max-conns 10000 | one worker, worker_connections $((NOFILE - 64)) |"
  echo "| slow-body target | POST /pub/slowbody (a publish: the body is read before answering) | PUT /upload/slowbody (dav_methods PUT: likewise) |"
  echo
  echo "## What an ordinary client got"
  echo
  echo "\"Under attack\": the requests that started while slowhttptest held at least half of its $CONNS connections"
  echo "open (for how long is the last column). \"Whole window\": every request of the client's window."
  echo
  echo "| server | attack | under attack: ok / attempted | p50 ms | p99 ms | max ms | whole window: ok / attempted | p50 ms | p99 ms | max ms | failures | attack held >= half its connections |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  for mode in "${MODES[@]}"; do
    for name in "${SERVERS[@]}"; do
      tag="$name-$mode"
      st=${RES[$name|$mode|status]:-n/a}
      if [[ $st != ok ]]; then
        echo "| $name | $(mode_label "$mode") | $st | | | | | | | | | |"
        continue
      fi
      cj=$WORK/$tag.client.json
      whole="$(jget "$cj" succeeded) / $(jget "$cj" attempted) | $(ms2 "$(jget "$cj" p50_ms)") | $(ms2 "$(jget "$cj" p99_ms)") | $(ms2 "$(jget "$cj" max_ms)")"
      if [[ $mode == none ]]; then
        during="— | — | — | —"
        held="—"
      else
        IFS='|' read -r a b c d held <<<"$(under_attack "$WORK/$tag.client.log" "$WORK/$tag.csv" "${RES[$name|$mode|t0]}")"
        during="$a | $b | $c | $d"
      fi
      echo "| $name | $(mode_label "$mode") | $during | $whole | $(jget "$cj" failures) | $held |"
    done
  done
  echo
  echo "## The attack as slowhttptest saw it"
  echo
  echo "| server | attack | service available (final; seconds with an answer) | attack connections: peak open / closed by the server | test exit status | server conns mid / end | server peak RSS |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  for mode in "${MODES[@]}"; do
    [[ $mode == none ]] && continue
    for name in "${SERVERS[@]}"; do
      tag="$name-$mode"
      st=${RES[$name|$mode|status]:-n/a}
      if [[ $st != ok ]]; then
        echo "| $name | $(mode_label "$mode") | $st | | | | |"
        continue
      fi
      avail="$(slow_field "$WORK/$tag.out" 'service available:') ($(slow_available "$WORK/$tag.csv"))"
      conns="$(slow_peak "$WORK/$tag.csv" 4) / $(slow_peak "$WORK/$tag.csv" 2)"
      exitst="$(slow_field "$WORK/$tag.out" 'Exit status:'), $(sed 's/\x1b\[[0-9;]*m//g' "$WORK/$tag.out" | grep -o 'Test ended on [0-9]*[a-z]* second' | tail -1 | sed 's/Test //')"
      rss=$(awk -v k="${RES[$name|$mode|rss_peak]:-0}" 'BEGIN { printf "%.1f MiB", k / 1024 }')
      echo "| $name | $(mode_label "$mode") | $avail | $conns | $exitst | ${RES[$name|$mode|conns_mid]} / ${RES[$name|$mode|conns_end]} | $rss |"
    done
  done
  echo
  echo "Server conns: the server's own count of open connections (linger \`/_status\` active, nginx stub_status"
  echo "\"Active connections\", which includes the status request itself), halfway through the ordinary client's"
  echo "window and at its end. Peak RSS: the server's process tree (nginx: master and worker), sampled every second."
  echo
  echo "linger's counters after each run (\`/_status\`):"
  echo
  for mode in "${MODES[@]}"; do
    [[ -n ${RES[linger|$mode|counters]:-} ]] && echo "- $(mode_label "$mode"): ${RES[linger|$mode|counters]}"
  done
  echo
  echo "## Reading the table"
  echo
  echo "- slowhttptest's verdict comes from its probe: one ordinary request per second on a new connection;"
  echo "  the service counts as available in a second if the probe got an answer within ${PROBE_SECS} s. \"Final\" is"
  echo "  its last status line; the count is over the seconds of its CSV report."
  echo "- \"closed by the server\" is slowhttptest's count of attack connections that were closed on it. A test"
  echo "  that ends with \"No open connections left\" before ${ATTACK_SECS} s was ended by the server closing every attack"
  echo "  connection (slowhttptest does not reopen them); \"Hit test time limit\" means connections were still open."
  echo "- Slowloris and slow body are bounded in linger by one deadline from the first byte; in nginx the body"
  echo "  timeout is between reads, so a body trickled every 5 s is never cut by client_body_timeout 10s. Slow"
  echo "  readers that keep reading are, by design, not dropped by either server's send timeout."
  echo
  echo "## Commands"
  echo
  echo '```'
  sed -e "s#$WORK#\$WORK#g" "$COMMANDS_LOG"
  echo "${ON_LOAD[*]} python3 bench/ordinary_client.py --port PORT --duration $((ATTACK_SECS - 3)) --interval 0.1 --timeout 10"
  echo '```'
} >"$OUT"
cat "$OUT"
log "wrote $OUT"
