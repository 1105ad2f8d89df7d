#!/usr/bin/env bash
# Take docs/dashboard.png: the live dashboard (/_status.html) of a linger
# with 200 slots while wrk fills them in three steps (40, 120, then 190
# connections), so that the idle timeout is seen falling as slots fill.
#
#   scripts/dashboard-screenshot.sh [OUT.png]
#
# Needs wrk, chromium and python3; touches 127.0.0.1 only. About a minute.
set -euo pipefail

self=$(realpath "$0")
cd "$(dirname "$self")/.."
out=${1:-docs/dashboard.png}

for tool in wrk chromium python3; do
    command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 1; }
done
cargo build --release --quiet

work=$(mktemp -d)
linger_pid=
shot_pid=
cleanup() {
    [[ -n "$shot_pid" ]] && kill "$shot_pid" 2>/dev/null && wait "$shot_pid" 2>/dev/null
    [[ -n "$linger_pid" ]] && kill "$linger_pid" 2>/dev/null && wait "$linger_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

target/release/linger --listen 127.0.0.1:0 --max-conns 200 --idle-timeout 30 --min-idle-timeout 2 \
    >"$work/linger.out" 2>"$work/linger.err" &
linger_pid=$!
addr=
for _ in $(seq 50); do
    line=$(head -n1 "$work/linger.out" 2>/dev/null || true)
    [[ "$line" == "listening on http://"* ]] && { addr=${line#listening on http://}; break; }
    sleep 0.1
done
[[ -n "$addr" ]] || { echo "linger did not start" >&2; cat "$work/linger.err" >&2; exit 1; }
base="http://$addr"

# The page checks take some 5 s; the screenshot is taken 40 s after them,
# while the last step of the load runs.
timeout 120 python3 scripts/dashboard-test.py "$base" --screenshot "$out" --settle 40 --height 640 \
    >"$work/shot.log" 2>&1 &
shot_pid=$!
sleep 5
wrk -t1 -c40 -d10s "$base/hello.txt" >/dev/null
wrk -t1 -c120 -d10s "$base/hello.txt" >/dev/null
wrk -t1 -c190 -d25s "$base/hello.txt" >/dev/null
wait "$shot_pid" || { cat "$work/shot.log"; exit 1; }
shot_pid=
cat "$work/shot.log"
ls -l "$out"
