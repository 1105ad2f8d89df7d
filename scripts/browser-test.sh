#!/usr/bin/env bash
# Load the live page (/live.html) in headless Chromium against a fresh
# linger on 127.0.0.1 and check that it shows the channel's history and
# receives a message published while it is open: over plain HTTP, then over
# HTTPS from the same linger's TLS listener (https://localhost:PORT, with a
# CA and an ECDSA P-256 certificate made here with openssl). The browser
# trusts that CA through an NSS database in a HOME of its own, as a user
# who imported it would; only if certutil cannot be had does it fall back
# to --ignore-certificate-errors (the output says which). Then the live
# dashboard (/_status.html, scripts/dashboard-test.py): it connects, draws,
# and its numbers move under load; then channels across origins
# (--cors-origin, scripts/cors-test.py): EventSource, a preflighted fetch
# and a long poll from a page on another port, and the browser's refusal
# where the origin is not listed.
#
#   scripts/browser-test.sh
#
# Installs Debian's chromium, openssl and libnss3-tools (certutil) if they
# are missing (needs root). Prints PASS/FAIL lines; exits non-zero on any
# failure. Touches 127.0.0.1 only.
set -euo pipefail

self=$(realpath "$0")
cd "$(dirname "$self")/.."

need=()
command -v chromium >/dev/null || need+=(chromium)
command -v openssl >/dev/null || need+=(openssl)
command -v certutil >/dev/null || need+=(libnss3-tools)
if ((${#need[@]})); then
    echo "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # certutil only spares the TLS run a certificate-error bypass: its
    # absence is not fatal.
    apt-get install -y -qq "${need[@]}" >/dev/null || apt-get install -y -qq chromium openssl >/dev/null
fi

# The run is bounded: give up after four minutes whatever happens. (The
# one-time install above is not: stopping dpkg half-way would do harm.)
if [[ -z "${BROWSER_TEST_CHILD:-}" ]]; then
    BROWSER_TEST_CHILD=1 exec timeout --kill-after=5 240 bash "$self" "$@"
fi

failures=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

work=$(mktemp -d)
linger_pid=
chromium_pid=
cleanup() {
    [[ -n "$chromium_pid" ]] && kill "$chromium_pid" 2>/dev/null && wait "$chromium_pid" 2>/dev/null
    [[ -n "$linger_pid" ]] && kill "$linger_pid" 2>/dev/null && wait "$linger_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v python3 >/dev/null || { echo "FAIL: python3 is needed"; exit 1; }

command -v openssl >/dev/null || { echo "FAIL: openssl is needed"; exit 1; }

cargo build --release --quiet

# --- a CA, a server certificate, and a browser that trusts the CA ----------
pki="$work/pki"
mkdir -p "$pki"
if ! (
    cd "$pki"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key
    openssl req -x509 -new -key ca.key -sha256 -days 1 -subj "/CN=linger browser-test CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out key.pem
    openssl req -new -key key.pem -subj "/CN=localhost" -out server.csr
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -sha256 \
        -extfile server.ext -out cert.pem
) >"$work/pki.log" 2>&1; then
    echo "FAIL: openssl could not make the test certificates"; tail -5 "$work/pki.log"; exit 1
fi
# Chromium on Linux takes user-trusted roots from $HOME/.pki/nssdb.
browser_home="$work/home"
mkdir -p "$browser_home/.pki/nssdb"
tls_trust=()
if command -v certutil >/dev/null &&
    certutil -d "sql:$browser_home/.pki/nssdb" -N --empty-password 2>/dev/null &&
    certutil -d "sql:$browser_home/.pki/nssdb" -A -t "C,," -n "linger browser-test CA" -i "$pki/ca.pem"; then
    echo "TLS: the test CA is trusted through an NSS database (no certificate-error bypass)"
else
    tls_trust=(--ignore-certificate-errors)
    echo "TLS: certutil unavailable; Chromium runs with --ignore-certificate-errors"
fi

# --- linger: one process, a plain and a TLS listener -------------------------
: >"$work/linger.out" # read below before linger may have opened it
target/release/linger --listen 127.0.0.1:0 --tls-listen 127.0.0.1:0 \
    --tls-cert "$pki/cert.pem" --tls-key "$pki/key.pem" >"$work/linger.out" 2>"$work/linger.err" &
linger_pid=$!
addr=
tls_addr=
for _ in $(seq 100); do
    while read -r line; do
        case "$line" in
            "listening on http://"*) addr=${line#listening on http://} ;;
            "listening on https://"*) tls_addr=${line#listening on https://} ;;
        esac
    done <"$work/linger.out"
    [[ -n "$addr" && -n "$tls_addr" ]] && break
    kill -0 "$linger_pid" 2>/dev/null || break
    sleep 0.1
done
if [[ -z "$addr" || -z "$tls_addr" ]]; then
    echo "FAIL: linger did not start"; cat "$work/linger.err"; exit 1
fi
case "$addr $tls_addr" in 127.0.0.1:*" "127.0.0.1:*) ;; *) echo "FAIL: unexpected addresses $addr $tls_addr"; exit 1 ;; esac
echo "linger on http://$addr and https://$tls_addr"

base="http://$addr"
# The certificate names localhost; the browser resolves it to loopback.
tls_base="https://localhost:${tls_addr##*:}"
if curl -fsS -o /dev/null "$base/live.html"; then pass "GET /live.html"; else fail "GET /live.html"; fi
if curl -fsS -o /dev/null --cacert "$pki/ca.pem" --resolve "localhost:${tls_addr##*:}:127.0.0.1" "$tls_base/live.html"; then
    pass "GET $tls_base/live.html (curl --cacert)"
else
    fail "GET $tls_base/live.html (curl --cacert)"
fi

msg1='hello from curl 1'
msg2=$'hello from curl 2\nsecond line of message 2'
msg3='hello from curl 3 <b>not bold</b> & co'
for m in "$msg1" "$msg2" "$msg3"; do
    reply=$(curl -fsS --max-time 5 --data-binary "$m" "$base/pub/demo") || { fail "publish: curl failed"; continue; }
    if [[ "$reply" == '{"id":'* ]]; then pass "published: $reply"; else fail "publish answered: $reply"; fi
done

chrome_flags=(
    --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
    --disable-background-networking --disable-component-update --disable-sync
)

# --- history replay through the page (since=0) ------------------------------
# --dump-dom serializes the page soon after its load event, which races the
# first events of the stream, so take a few dumps and keep the first that
# shows all three. (--virtual-time-budget is the usual way to wait, but
# virtual time stands still while a request is open, and an event stream
# stays open: with it, Chromium never dumps at all.)
check_dom() { # FILE VERBOSE: exit 0 if the dump shows the history
    python3 - "$1" "$2" "$msg1" "$msg2" "$msg3" <<'PY'
import html, re, sys
dom, verbose, want = open(sys.argv[1], encoding="utf-8").read(), sys.argv[2] == "1", sys.argv[3:]
items = re.findall(r'<li data-id="(\d+)">(.*?)</li>', dom, re.S)
texts = [html.unescape(t) for _, t in items]
ids = [int(i) for i, _ in items]
mode = re.search(r'<span id="mode"[^>]*>([^<]*)</span>', dom)
mode = mode.group(1) if mode else None
checks = [(w in texts, "dumped DOM shows " + repr(w)) for w in want]
checks.append((ids == list(range(1, len(want) + 1)), f"dumped DOM has ids in order, no repeats: {ids}"))
checks.append(("<b>" not in dom.split('id="messages"', 1)[-1], "message text went in as text, not markup"))
checks.append((mode == "sse", f"dumped DOM mode: {mode!r}"))
ok = all(c for c, _ in checks)
if ok or verbose:
    for c, what in checks:
        print(("PASS" if c else "FAIL") + ": " + what)
sys.exit(0 if ok else 1)
PY
}
# Both dumps come before any live check publishes, so both see ids 1-3.
dom="$work/dom.html"
for page in "$base" "$tls_base"; do
    dumped=0
    for attempt in 1 2 3 4 5; do
        if ! HOME="$browser_home" timeout 20 chromium "${chrome_flags[@]}" "${tls_trust[@]}" \
            --user-data-dir="$(mktemp -d -p "$work")" --dump-dom "$page/live.html" >"$dom" 2>"$work/dump.err"; then
            echo "chromium --dump-dom $page failed (attempt $attempt)"; tail -3 "$work/dump.err"
            continue
        fi
        if check_dom "$dom" "$((attempt == 5))"; then
            dumped=1
            pass "history in the dumped DOM of $page/live.html (attempt $attempt)"
            break
        fi
    done
    ((dumped)) || fail "history in the dumped DOM of $page/live.html after 5 attempts"
done

# --- live delivery over the DevTools protocol --------------------------------
HOME="$browser_home" chromium "${chrome_flags[@]}" "${tls_trust[@]}" --user-data-dir="$(mktemp -d -p "$work")" \
    --remote-debugging-address=127.0.0.1 --remote-debugging-port=0 about:blank \
    >"$work/chromium.out" 2>"$work/chromium.err" &
chromium_pid=$!
ws=
for _ in $(seq 150); do
    ws=$(grep -so 'ws://127\.0\.0\.1:[0-9]*/devtools/browser/[-0-9a-f]*' "$work/chromium.err" | head -n1 || true)
    [[ -n "$ws" ]] && break
    kill -0 "$chromium_pid" 2>/dev/null || break
    sleep 0.1
done
if [[ -z "$ws" ]]; then
    fail "chromium printed no DevTools endpoint"; tail -5 "$work/chromium.err"
else
    timeout 60 python3 scripts/browser-live.py "$ws" "$addr" "$base" "$msg1" "$msg2" "$msg3" || failures=$((failures + 1))
    # Over HTTPS: the history is whatever the plain run left on the channel.
    timeout 60 python3 scripts/browser-live.py "$ws" "$addr" "$tls_base" || failures=$((failures + 1))
fi

# --- the live dashboard ------------------------------------------------------
# Its own Chromium, against the same linger.
if timeout 90 python3 scripts/dashboard-test.py "$base"; then
    pass "dashboard (/_status.html)"
else
    fail "dashboard (/_status.html)"
fi

# --- channels across origins --------------------------------------------------
# Lingers of its own: a page server and two APIs.
if timeout 90 python3 scripts/cors-test.py target/release/linger; then
    pass "cross-origin channels (--cors-origin)"
else
    fail "cross-origin channels (--cors-origin)"
fi

if kill -0 "$linger_pid" 2>/dev/null; then pass "linger still running"; else fail "linger died"; fi

if ((failures)); then
    echo "browser test: FAILED ($failures failing step(s))"
    exit 1
fi
echo "browser test: all passed"
