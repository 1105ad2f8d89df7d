#!/usr/bin/env bash
# Load the live page (/live.html) in headless Chromium against a fresh
# linger on 127.0.0.1 and check that it shows the channel's history and
# receives a message published while it is open; then the live dashboard
# (/_status.html, scripts/dashboard-test.py): it connects, draws, and its
# numbers move under load; then channels across origins (--cors-origin,
# scripts/cors-test.py): EventSource, a preflighted fetch and a long poll
# from a page on another port, and the browser's refusal where the origin
# is not listed.
#
#   scripts/browser-test.sh
#
# Installs Debian's chromium if it is missing (needs root). Prints PASS/FAIL
# lines; exits non-zero on any failure. Touches 127.0.0.1 only.
set -euo pipefail

self=$(realpath "$0")
cd "$(dirname "$self")/.."

if ! command -v chromium >/dev/null; then
    echo "installing chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
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

cargo build --release --quiet

# --- linger -------------------------------------------------------------
target/release/linger --listen 127.0.0.1:0 >"$work/linger.out" 2>"$work/linger.err" &
linger_pid=$!
addr=
for _ in $(seq 100); do
    line=$(head -n1 "$work/linger.out" 2>/dev/null || true)
    if [[ "$line" == "listening on http://"* ]]; then
        addr=${line#listening on http://}
        break
    fi
    kill -0 "$linger_pid" 2>/dev/null || break
    sleep 0.1
done
if [[ -z "$addr" ]]; then
    echo "FAIL: linger did not start"; cat "$work/linger.err"; exit 1
fi
case "$addr" in 127.0.0.1:*) ;; *) echo "FAIL: unexpected address $addr"; exit 1 ;; esac
echo "linger on $addr"

base="http://$addr"
curl -fsS -o /dev/null "$base/live.html" && pass "GET /live.html" || fail "GET /live.html"

msg1='hello from curl 1'
msg2=$'hello from curl 2\nsecond line of message 2'
msg3='hello from curl 3 <b>not bold</b> & co'
for m in "$msg1" "$msg2" "$msg3"; do
    reply=$(curl -fsS --max-time 5 --data-binary "$m" "$base/pub/demo") || { fail "publish: curl failed"; continue; }
    [[ "$reply" == '{"id":'* ]] && pass "published: $reply" || fail "publish answered: $reply"
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
dom="$work/dom.html"
dumped=0
for attempt in 1 2 3 4 5; do
    if ! timeout 20 chromium "${chrome_flags[@]}" --user-data-dir="$(mktemp -d -p "$work")" \
        --dump-dom "$base/live.html" >"$dom" 2>"$work/dump.err"; then
        echo "chromium --dump-dom failed (attempt $attempt)"; tail -3 "$work/dump.err"
        continue
    fi
    if check_dom "$dom" "$((attempt == 5))"; then
        dumped=1
        pass "history in the dumped DOM (attempt $attempt)"
        break
    fi
done
((dumped)) || fail "history in the dumped DOM after 5 attempts"

# --- live delivery over the DevTools protocol --------------------------------
chromium "${chrome_flags[@]}" --user-data-dir="$(mktemp -d -p "$work")" \
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
    timeout 60 python3 scripts/browser-live.py "$ws" "$addr" "$msg1" "$msg2" "$msg3" || failures=$((failures + 1))
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
