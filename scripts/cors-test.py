#!/usr/bin/env python3
"""Cross-origin channels (--cors-origin) in headless Chromium.

Usage: cors-test.py LINGER_BINARY

Starts three lingers on 127.0.0.1: a page server (--root with one page),
an API that lists the page's origin (--cors-origin http://127.0.0.1:PAGE,
with an access log), and an API that lists another origin. The page, on
its own origin, then

  - subscribes to the first API with EventSource (withCredentials: the
    answer must name the origin and allow credentials);
  - publishes there with fetch and a JSON Content-Type, which makes the
    browser send a preflight OPTIONS first (checked in the access log);
  - long-polls there with fetch;
  - tries both on the second API, where the browser must refuse the page
    the answers (the stream fails, the fetch rejects).

Prints PASS/FAIL lines; exits non-zero on any failure. Needs Debian's
chromium; standard library only (the DevTools client is browser-live.py's).
"""

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def load(name, file):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, file))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bl = load("browser_live", "browser-live.py")
dt = load("dashboard_test", "dashboard-test.py")

PAGE = r"""<!doctype html>
<meta charset="utf-8">
<title>linger cross-origin check</title>
<script>
'use strict';
var q = new URLSearchParams(location.search), api = q.get('api'), denied = q.get('denied');
var result = window.result = { events: [], errors: 0 };
var es = new EventSource(api + '/sub/cors', { withCredentials: true });
es.onopen = function () {
  result.open = true;
  fetch(api + '/pub/cors', { method: 'POST', credentials: 'include',
    headers: { 'Content-Type': 'application/json' }, body: '{"from":"another origin"}' })
    .then(function (r) { return r.text().then(function (t) { result.publish = { status: r.status, body: t }; }); })
    .catch(function (e) { result.publish = { error: String(e) }; });
};
es.onmessage = function (e) { result.events.push(e.data); };
es.onerror = function () { result.errors += 1; };
function poll() {
  fetch(api + '/sub/cors?since=0').then(function (r) { return r.json(); })
    .then(function (j) { result.poll = j; }, function (e) { result.poll = { error: String(e) }; });
}
var bad = new EventSource(denied + '/sub/cors');
bad.onmessage = function (e) { result.deniedMessage = e.data; };
bad.onerror = function () { result.deniedState = bad.readyState; bad.close(); };
fetch(denied + '/sub/cors?since=0').then(function (r) { result.deniedFetch = 'read ' + r.status; },
  function (e) { result.deniedFetch = 'refused: ' + e; });
</script>
"""


def start(binary, args, work, name):
    out = open(os.path.join(work, name + ".out"), "w+")
    err = open(os.path.join(work, name + ".err"), "w")
    proc = subprocess.Popen([binary, "--listen", "127.0.0.1:0", *args], stdout=out, stderr=err)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out.seek(0)
        line = out.readline()
        if line.startswith("listening on http://"):
            return proc, line.strip().removeprefix("listening on http://")
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{name} did not start: {open(os.path.join(work, name + '.err')).read()}")


def main():
    binary = sys.argv[1]
    failures = 0

    def result(ok, what):
        nonlocal failures
        print(("PASS" if ok else "FAIL") + ": " + what, flush=True)
        failures += 0 if ok else 1

    work = tempfile.mkdtemp(prefix="cors-test-")
    procs = []
    try:
        root = os.path.join(work, "page")
        os.mkdir(root)
        with open(os.path.join(root, "cors.html"), "w") as f:
            f.write(PAGE)
        page_proc, page = start(binary, ["--root", root], work, "page")
        procs.append(page_proc)
        origin = "http://" + page
        log = os.path.join(work, "api.log")
        api_proc, api = start(binary, ["--cors-origin", origin, "--access-log", log], work, "api")
        procs.append(api_proc)
        # Its long polls end at once (204): the answer comes, and the
        # browser must still keep it from the page.
        other_proc, other = start(binary, ["--cors-origin", "http://127.0.0.1:1", "--longpoll-timeout", "0.2"], work, "other")
        procs.append(other_proc)
        url = f"{origin}/cors.html?api=http://{api}&denied=http://{other}"

        chromium, ws_url = dt.start_chromium(work)
        procs.append(chromium)
        cdp = bl.Cdp(bl.WebSocket(ws_url))
        target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        cdp.call("Runtime.enable", session=session)
        cdp.call("Page.navigate", {"url": url}, session=session)
        get = lambda: cdp.evaluate(session, "window.result ? JSON.parse(JSON.stringify(window.result)) : null") or {}

        try:
            r = bl.wait_for("the published message on the stream", lambda: (lambda r: r if r.get("events") else None)(get()), 15)
            result(True, f"EventSource from {origin} to http://{api} (withCredentials) received {r['events']}")
        except TimeoutError as e:
            result(False, f"no message on the cross-origin stream: {e}")
        r = get()
        pub = r.get("publish") or {}
        result(pub.get("status") == 200 and '"id":1' in pub.get("body", ""), f"fetch POST with a JSON Content-Type: {pub}")
        cdp.evaluate(session, "poll()")
        try:
            r = bl.wait_for("the long poll", lambda: (lambda r: r if r.get("poll") else None)(get()), 10)
            msgs = (r["poll"] or {}).get("messages", [])
            result(bool(msgs) and msgs[0].get("data") == '{"from":"another origin"}', f"cross-origin long poll: {r['poll']}")
        except TimeoutError as e:
            result(False, f"cross-origin long poll: {e}")
        try:
            r = bl.wait_for("the refusals", lambda: (lambda r: r if "deniedState" in r and "deniedFetch" in r else None)(get()), 10)
            result(r["deniedState"] == 2 and "deniedMessage" not in r,
                   f"an API that does not list the origin: EventSource closed (readyState {r['deniedState']})")
            result(r["deniedFetch"].startswith("refused"), f"... and fetch rejected: {r['deniedFetch']}")
        except TimeoutError as e:
            result(False, f"refusals: {e}; page state {get()}")
        # The preflight reached the API before the POST.
        deadline = time.monotonic() + 5
        lines = []
        while time.monotonic() < deadline:
            lines = open(log).read().splitlines() if os.path.exists(log) else []
            if any('"POST /pub/cors ' in l for l in lines):
                break
            time.sleep(0.05)
        methods = [l.split('"')[1].split(" ")[0] for l in lines if "/pub/cors" in l]
        result(methods[:2] == ["OPTIONS", "POST"], f"preflight then publish in the API's access log: {methods}")
        cdp.call("Target.closeTarget", {"targetId": target})
    except (OSError, RuntimeError, TimeoutError, KeyError) as e:
        result(False, f"cross-origin session: {e}")
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)
    print("cors test: " + ("FAILED" if failures else "all passed"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
