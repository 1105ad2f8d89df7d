#!/usr/bin/env bash
# HTTPS: linger beside nginx and lighttpd, all three serving the same ECDSA
# P-256 certificate (a CA and a server certificate made with `openssl` at
# the start of the run), in one interleaved run:
#   (a) new TLS connections per second, one request each, with full
#       handshakes and with resumed ones (bench/tlsload.c, which controls
#       and counts resumption);
#   (b) keep-alive requests/s and server CPU per request over TLS (wrk,
#       13 B file, 100 connections), beside the same over plain HTTP;
#   (c) SSE over TLS: subscribers on one channel and a burst of messages
#       (bench/tlsload.c; nginx with the nchan module, lighttpd has no
#       pub/sub), beside the same over plain HTTP;
#   (d) server memory per idle keep-alive TLS connection, beside an idle
#       plain one.
#
#   bench/tls.sh                    # 3 rounds x 5 s per load run, ~12 minutes
#   QUICK=1 bench/tls.sh            # 1 round x 2 s, small counts: a smoke run
#
# Environment: ROUNDS (3) DURATION (5 s per load run) QUICK
#   CONN_CONNS (50: concurrent new-connection clients) KA_CONNS (100)
#   IDLE_CONNS (10000) SUBS (1000) MSGS (200)
#   QUIET_WAIT (0: seconds to wait, at most, for the load average to stay
#   under QUIET_LOAD (0.7) for 30 s before starting; polled every 15 s)
#   and BASE_PORT, SERVER_CPU, LOAD_CPU, LINGER_BUILD, LINGER_BIN,
#   LINGER_ARGS, KEEP_WORK, WIDE_PORT_RANGE as in compare.sh.
# Ports: plain as in lib.sh (BASE_PORT+1..3), TLS at BASE_PORT+11..13.
# Output: bench/results/YYYY-MM-DD-tls.md
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

set_rounds
if [[ ${QUICK:-0} != 0 ]]; then
  IDLE_CONNS=${IDLE_CONNS:-1000}
  SUBS=${SUBS:-200}
  MSGS=${MSGS:-50}
fi
CONN_CONNS=${CONN_CONNS:-50}
KA_CONNS=${KA_CONNS:-100}
IDLE_CONNS=${IDLE_CONNS:-10000}
SUBS=${SUBS:-1000}
MSGS=${MSGS:-200}
QUIET_WAIT=${QUIET_WAIT:-0}
QUIET_LOAD=${QUIET_LOAD:-0.7}
SERVERS=(linger nginx lighttpd)
declare -A TPORT=([linger]=$((BASE_PORT + 11)) [nginx]=$((BASE_PORT + 12)) [lighttpd]=$((BASE_PORT + 13)))
PKI=$WORK/pki

# linger serves HTTPS beside its plain listener: the plain one is what
# lib.sh's start_server checks, and the baseline of every plain figure.
LINGER_ARGS="${LINGER_ARGS:-} --tls-listen 127.0.0.1:${TPORT[linger]} --tls-cert $PKI/cert.pem --tls-key $PKI/key.pem"

bench_setup

# ---------------------------------------------------------------- tools

tls_tools() {
  local -a pkgs=()
  command -v openssl >/dev/null || pkgs+=(openssl)
  [[ -f /usr/include/openssl/ssl.h ]] || pkgs+=(libssl-dev)
  [[ -f /usr/lib/lighttpd/mod_openssl.so ]] || pkgs+=(lighttpd-mod-openssl)
  [[ -f /usr/lib/nginx/modules/ngx_nchan_module.so ]] || pkgs+=(libnginx-mod-nchan)
  if ((${#pkgs[@]})); then
    log "installing missing packages: ${pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null ||
      warn "could not install ${pkgs[*]}"
  fi
  command -v openssl >/dev/null || die "openssl is required"
}
tls_tools

CLIENT=$WORK/tlsload
cc -O2 -Wall -o "$CLIENT" "$BENCH_DIR/tlsload.c" -lssl -lcrypto || die "bench/tlsload.c did not compile"
record_cmd "cc -O2 -Wall -o tlsload bench/tlsload.c -lssl -lcrypto"

# One CA, one ECDSA P-256 server certificate for localhost and 127.0.0.1,
# served by all three. The chain file is the leaf alone, as usual (the
# client has the CA).
make_pki() {
  mkdir -p "$PKI"
  (
    cd "$PKI"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key
    openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=linger bench CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out key.pem
    openssl req -new -key key.pem -subj "/CN=localhost" -out server.csr
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
      "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -sha256 \
      -extfile server.ext -out cert.pem
  ) >"$WORK/pki.log" 2>&1 || die "openssl could not make the certificates: $(tail -3 "$WORK/pki.log")"
  chmod -R a+rX "$PKI"
  CERT_DESC=$(openssl x509 -in "$PKI/cert.pem" -noout -text |
    awk '/Public Key Algorithm|NIST CURVE|Signature Algorithm/ { sub(/^ +/, ""); print }' | sort -u | paste -sd';' -)
}
make_pki
record_cmd "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 (CA key, server key); openssl req -x509 (CA); openssl x509 -req (server certificate, SAN localhost and 127.0.0.1)"

# ---------------------------------------------------------------- configs

# nginx: the same server block answers plain and TLS. TLS 1.2 and 1.3, a
# shared session cache and tickets; no ssl_ciphers line, so OpenSSL's
# default suites; no http2, so ALPN settles on http/1.1.
NGINX_SERVER_EXTRA="        listen 127.0.0.1:${TPORT[nginx]} ssl backlog=4096;
        ssl_certificate $PKI/cert.pem;
        ssl_certificate_key $PKI/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        ssl_session_tickets on;"
prepare_servers
# The pub/sub run needs nchan; the other runs use nginx without it, so no
# module that they do not use is loaded.
NCHAN_SO=/usr/lib/nginx/modules/ngx_nchan_module.so
NGINX_PLAIN_SCMD=${SCMD[nginx]}
if [[ -f $NCHAN_SO ]]; then
  {
    echo "load_module $NCHAN_SO;"
    sed "s#^\( *root $DOCROOT;\)#\1\n        location ~ ^/sub/(\\\\w+)\$ { nchan_subscriber eventsource; nchan_channel_id \$1; }\n        location ~ ^/pub/(\\\\w+)\$ { nchan_publisher; nchan_channel_id \$1; }#" \
      "$WORK/nginx/nginx.conf"
  } >"$WORK/nginx/nginx-nchan.conf"
  NGINX_NCHAN_SCMD="nginx -e $WORK/nginx/error.log -c $WORK/nginx/nginx-nchan.conf"
else
  NGINX_NCHAN_SCMD=""
fi
# lighttpd: mod_openssl on a second socket; its defaults are TLS 1.2 and
# 1.3 and session tickets (its own rotating keys); HTTP/2 off.
cat >>"$WORK/lighttpd/lighttpd.conf" <<EOF
server.modules += ("mod_openssl")
server.feature-flags += ("server.h2proto" => "disable")
\$SERVER["socket"] == "127.0.0.1:${TPORT[lighttpd]}" {
    ssl.engine = "enable"
    ssl.pemfile = "$PKI/cert.pem"
    ssl.privkey = "$PKI/key.pem"
    ssl.openssl.ssl-conf-cmd = ("MinProtocol" => "TLSv1.2")
}
EOF
for s in "${SERVERS[@]}"; do
  if port_open "${TPORT[$s]}"; then
    AVAILABLE[$s]=0
    WHY_NOT[$s]="port ${TPORT[$s]} already in use (set BASE_PORT)"
  fi
done

# start_server checks the plain port; check HTTPS with the test CA too.
start_tls() {
  start_server "$1" || return 1
  local body i
  for ((i = 0; i < 30; i++)); do
    body=$(curl -s --max-time 2 --cacert "$PKI/ca.pem" --resolve "localhost:${TPORT[$1]}:127.0.0.1" \
      "https://localhost:${TPORT[$1]}/hello.txt" 2>/dev/null || true)
    [[ $body == "Hello, World!" ]] && return 0
    sleep 0.1
  done
  warn "$1 does not answer over HTTPS on ${TPORT[$1]}"
  stop_server "$1"
  return 1
}

# ---------------------------------------------------------------- runs

mkdir -p "$RESULTS_DIR" "$WORK/runs"
DATE=$(date +%F)
OUT_MD=$RESULTS_DIR/$DATE-tls.md
RAW=$WORK/raw.txt
: >"$RAW"

pids_of() { tree_pids "${SPID[$1]}" | paste -sd, -; }

# One result line: "scenario=ID server=S round=R key=value ...".
emit() { # id server round line-of-key=value
  printf 'scenario=%s server=%s round=%s %s\n' "$1" "$2" "$3" "$4" >>"$RAW"
  log "  $2/$1: $4"
}

# The load core's busy share around a command.
LOAD_BUSY=NA
timed_busy() {
  local c0 c1
  c0=$(core_stat "$LOAD_CPU")
  "$@"
  c1=$(core_stat "$LOAD_CPU")
  LOAD_BUSY=$(busy_percent "$c0" "$c1")
}

run_tlsload() { # id server round port tlsload-args...
  local id=$1 server=$2 round=$3 port=$4 rc=0
  shift 4
  local out=$WORK/runs/$id.$server.$round.txt
  local -a cmd=("$CLIENT" "$@" --port "$port" --ca "$PKI/ca.pem" --pids "$(pids_of "$server")")
  local args="$*"
  record_cmd "taskset -c $LOAD_CPU ./tlsload ${args//--channel r$round/--channel rROUND} --port PORT --ca ca.pem --pids SERVER_PIDS"
  timed_busy taskset -c "$LOAD_CPU" timeout 300 "${cmd[@]}" >"$out" 2>"$out.err" || rc=$?
  local line
  line=$(grep -m1 '^RESULT ' "$out" || true)
  if [[ -z $line ]]; then
    warn "$server/$id round $round: no result (exit $rc): $(tail -3 "$out.err" | tr '\n' ' ')"
    emit "$id" "$server" "$round" "note=no_result"
    return 0
  fi
  emit "$id" "$server" "$round" "${line#RESULT } load_busy=$LOAD_BUSY exit=$rc"
}

run_wrk() { # id server round url
  local id=$1 server=$2 round=$3 url=$4 pid=${SPID[$2]}
  local out=$WORK/runs/$id.$server.$round.txt
  local -a cmd=(wrk -t1 -c"$KA_CONNS" -d"${DURATION}s" --latency -s "$BENCH_DIR/report.lua" "$url")
  record_cmd "taskset -c $LOAD_CPU ${cmd[*]}"
  local t0 t1
  t0=$(cpu_ticks "$pid")
  perf_start "$pid"
  timed_busy taskset -c "$LOAD_CPU" "${cmd[@]}" >"$out" 2>&1 || true
  perf_stop
  t1=$(cpu_ticks "$pid")
  if ! parse_wrk_result "$out" || [[ $R_REQS == NA || $R_REQS == 0 ]]; then
    warn "$server/$id round $round: wrk produced no result: $(tail -2 "$out" | tr '\n' ' ')"
    emit "$id" "$server" "$round" "note=no_result"
    return 0
  fi
  emit "$id" "$server" "$round" "$(awk -v n="$R_REQS" -v d="$R_DUR_US" -v p50="$R_P50_US" -v p99="$R_P99_US" \
    -v e="$R_ERRS" -v dt=$((t1 - t0)) -v hz="$CLK_TCK" -v sys="$PERF_COUNT" -v busy="$LOAD_BUSY" 'BEGIN {
      printf "requests=%d per_s=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d server_cpu_us_per_req=%.3f syscalls_per_req=%s load_busy=%s",
        n, n * 1e6 / d, p50 / 1000, p99 / 1000, e, dt * 1e6 / hz / n, (sys == "NA" ? "NA" : sprintf("%.3f", sys / n)), busy }')"
}

# A fresh server for memory and pub/sub runs: nothing left from earlier
# runs is counted, and no channel carries history from the last one.
fresh() { # server [nginx command line]
  stop_server "$1"
  if [[ $1 == nginx ]]; then SCMD[nginx]=${2:-$NGINX_PLAIN_SCMD}; fi
  start_tls "$1"
}

# Per round, each scenario runs every server in turn (A B C A B C ...).
SCENARIOS=(conn-full conn-resumed ka-tls ka-plain sse-tls sse-plain idle-tls idle-plain)

wait_quiet
widen_port_range
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
STAT0=$(cpu_stat)
T_START=$(date +%s)
for s in "${SERVERS[@]}"; do start_tls "$s" || true; done
for s in "${SERVERS[@]}"; do # warm-up: caches, and each server's first handshakes
  [[ -n ${SPID[$s]:-} ]] || continue
  taskset -c "$LOAD_CPU" "$CLIENT" conn --port "${TPORT[$s]}" --ca "$PKI/ca.pem" --conns 10 --seconds 1 >/dev/null 2>&1 || true
done

for ((round = 1; round <= ROUNDS; round++)); do
  for id in "${SCENARIOS[@]}"; do
    log "round $round/$ROUNDS: $id"
    for s in "${SERVERS[@]}"; do
      if [[ $id == sse-* && $s == lighttpd ]]; then
        continue # no pub/sub module
      fi
      if [[ $id == sse-* && $s == nginx && -z $NGINX_NCHAN_SCMD ]]; then
        emit "$id" "$s" "$round" "note=nchan_module_missing"
        continue
      fi
      case $id in
        sse-* | idle-*)
          if [[ $id == sse-* ]]; then fresh "$s" "$NGINX_NCHAN_SCMD"; else fresh "$s"; fi || {
            emit "$id" "$s" "$round" "note=${WHY_NOT[$s]:-did_not_start}"
            continue
          }
          ;;
        *)
          if [[ ${SCMD[nginx]} != "$NGINX_PLAIN_SCMD" && $s == nginx ]]; then fresh nginx || true; fi
          ensure_running "$s" || {
            emit "$id" "$s" "$round" "note=not_running"
            continue
          }
          ;;
      esac
      plain=()
      port=${TPORT[$s]}
      if [[ $id == *-plain ]]; then
        plain=(--plain)
        port=${PORT[$s]}
      fi
      case $id in
        conn-full) run_tlsload "$id" "$s" "$round" "$port" conn --conns "$CONN_CONNS" --seconds "$DURATION" ;;
        conn-resumed) run_tlsload "$id" "$s" "$round" "$port" conn --resume --conns "$CONN_CONNS" --seconds "$DURATION" ;;
        ka-tls) run_wrk "$id" "$s" "$round" "https://127.0.0.1:$port/hello.txt" ;;
        ka-plain) run_wrk "$id" "$s" "$round" "http://127.0.0.1:$port/hello.txt" ;;
        sse-*) run_tlsload "$id" "$s" "$round" "$port" sse "${plain[@]}" --subs "$SUBS" --msgs "$MSGS" \
          --pub-port "${PORT[$s]}" --channel "r$round" ;;
        idle-*) run_tlsload "$id" "$s" "$round" "$port" idle "${plain[@]}" --conns "$IDLE_CONNS" ;;
      esac
      # 20 000 closed connections a run: let the sockets settle.
      [[ $id == idle-* || $id == sse-* ]] && sleep 1
    done
  done
done
T_END=$(date +%s)
STEAL=$(steal_percent "$STAT0" "$(cpu_stat)")
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report

LINGER_VERSION=$("$LINGER_BIN" --version 2>/dev/null || echo unknown)
GIT_REV=$(cd "$REPO_DIR" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
  echo "# HTTPS: linger vs nginx vs lighttpd — $DATE"
  echo
  echo "- Date: $(date '+%F %T %z'); wall time $((T_END - T_START)) s"
  echo "- Machine: $(machine_info); open-file limit $NOFILE"
  echo "- Other load: $QUIET_NOTE; load average $START_LOAD at the start, $END_LOAD at the end (the benchmark itself keeps about 2 busy); CPU steal during the run: $STEAL%"
  echo "- linger: $LINGER_VERSION at $GIT_REV (rustls, ring provider); rounds: $ROUNDS, $DURATION s per load run, servers interleaved within each round; medians with (min–max)"
  echo "- Servers pinned to CPU $SERVER_CPU, clients to CPU $LOAD_CPU (taskset); one worker each (nginx worker_processes 1, lighttpd and linger are single-process); access logs off; all traffic on 127.0.0.1"
  echo "- Certificate: one CA and one server certificate made with openssl at the start of the run, served by all three ($CERT_DESC); the client verifies it against the CA and sends SNI localhost and ALPN http/1.1"
  echo "- TLS settings: TLS 1.2 and 1.3 on every server, each server's default cipher suites; nginx: shared session cache 10m and tickets; lighttpd: its default tickets; linger: tickets (rustls, ring) and a 1024-entry session cache. HTTP/2 off everywhere. The clients (tlsload and wrk) use OpenSSL's defaults, so TLS 1.3 is negotiated; the suite and group each run got are in the tables"
  echo "- $PORT_RANGE_NOTE"
  echo
  echo "Tools:"
  echo
  tool_versions
  printf -- '- %s\n' "$(openssl version)"
  for s in "${SERVERS[@]}"; do
    [[ ${AVAILABLE[$s]:-0} == 1 ]] || echo "- Not measured: $s (${WHY_NOT[$s]:-unavailable})"
  done
  [[ -n $NGINX_NCHAN_SCMD ]] || echo "- nginx's SSE run: n/a (libnginx-mod-nchan not installed)"
  echo
  python3 "$BENCH_DIR/tls_report.py" "$RAW" --conn-conns "$CONN_CONNS" --ka-conns "$KA_CONNS" \
    --idle-conns "$IDLE_CONNS" --subs "$SUBS" --msgs "$MSGS" --duration "$DURATION"
  echo
  commands_section
  echo
  echo "<details><summary>nginx.conf (the SSE run loads nchan and adds its two locations)</summary>"
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
  echo "<details><summary>Raw per-run results</summary>"
  echo
  echo '```'
  cat "$RAW"
  echo '```'
  echo "</details>"
} | sed -e "s#$WORK#\$TMP#g" -e "s#$REPO_DIR/##g" >"$OUT_MD"
log "wrote $OUT_MD"
