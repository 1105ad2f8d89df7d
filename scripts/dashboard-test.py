#!/usr/bin/env python3
"""Check the live dashboard (/_status.html) in headless Chromium.

Usage: dashboard-test.py BASE_URL [--screenshot PNG] [--settle SECS]

BASE_URL is a running linger, e.g. http://127.0.0.1:8080 (loopback: the
status endpoints answer loopback clients only). Starts Chromium with the
DevTools protocol (the client is scripts/browser-live.py's), opens
BASE_URL/_status.html and checks that

  - the page loads nothing from anywhere but BASE_URL;
  - it connects to /_status with EventSource (not the polling fallback);
  - a chart was drawn: coloured pixels in a canvas, and data points;
  - a displayed number changes within two seconds while this script sends
    a few requests to BASE_URL/ (requests/s and the request total move).

With --screenshot it waits --settle seconds (default 0) for the charts to
fill, then saves a PNG of the whole page. Prints PASS/FAIL lines; exits
non-zero on any failure. Needs Debian's chromium; standard library only.
"""

import argparse
import base64
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def load_browser_live():
    """scripts/browser-live.py's WebSocket and DevTools client (its file
    name has a dash, so it is loaded by path)."""
    spec = importlib.util.spec_from_file_location("browser_live", os.path.join(HERE, "browser-live.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bl = load_browser_live()

CHROME_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
]

STATE_JS = (
    "(function(){var b=document.body;return b?{state:b.getAttribute('data-state'),"
    "mode:b.getAttribute('data-mode'),events:+b.getAttribute('data-events')}:null;})()"
)
VALUES_JS = (
    "(function(){var o={};document.querySelectorAll('[data-v]').forEach(function(e){"
    "o[e.getAttribute('data-v')]=e.textContent;});return o;})()"
)
# Per canvas: pixels that are clearly coloured (the series; the grid and
# the labels are grey), and how many data points the page says it drew.
PIXELS_JS = (
    "(function(){var o={};document.querySelectorAll('canvas.chart').forEach(function(c){"
    "var d=c.getContext('2d').getImageData(0,0,c.width,c.height).data,n=0;"
    "for(var i=0;i<d.length;i+=4){var mx=Math.max(d[i],d[i+1],d[i+2]),mn=Math.min(d[i],d[i+1],d[i+2]);"
    "if(d[i+3]>128&&mx-mn>60)n++;}"
    "o[c.id]={coloured:n,points:+(c.getAttribute('data-drawn')||0)};});return o;})()"
)
RESOURCES_JS = "performance.getEntriesByType('resource').map(function(e){return e.name;})"


def start_chromium(work):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not chromium:
        raise RuntimeError("chromium is not installed (Debian: apt-get install chromium)")
    err_path = os.path.join(work, "chromium.err")
    err = open(err_path, "w")
    proc = subprocess.Popen(
        [chromium, *CHROME_FLAGS, f"--user-data-dir={os.path.join(work, 'profile')}",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=err)
    pattern = re.compile(r"ws://127\.0\.0\.1:\d+/devtools/browser/[-0-9a-f]+")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with open(err_path) as f:
            m = pattern.search(f.read())
        if m:
            return proc, m.group(0)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    with open(err_path) as f:
        tail = f.read()[-500:]
    raise RuntimeError("chromium printed no DevTools endpoint: " + tail)


def load(base, stop, counter):
    """A few requests per second to BASE_URL/ until told to stop."""
    while not stop.is_set():
        try:
            with urllib.request.urlopen(base + "/", timeout=2) as res:
                res.read()
            counter[0] += 1
        except OSError:
            pass
        stop.wait(0.1)


def check(cdp, session, base, result, screenshot, settle):
    origin = "{0.scheme}://{0.netloc}".format(urllib.parse.urlsplit(base))
    try:
        st = bl.wait_for("page live", lambda: (lambda s: s if s and s["state"] == "live" else None)(
            cdp.evaluate(session, STATE_JS)), 15)
        result(True, f"page connected: state {st['state']}, mode {st['mode']}")
        result(st["mode"] == "sse", f"connected with EventSource to /_status (mode {st['mode']!r}; "
               "'poll' means /_status did not answer with an event stream)")
    except TimeoutError as e:
        result(False, f"page never showed live data: {e}")
        return
    try:
        bl.wait_for("three events", lambda: (cdp.evaluate(session, STATE_JS) or {}).get("events", 0) >= 3, 10)
        result(True, "three events received")
    except TimeoutError as e:
        result(False, f"events stopped arriving: {e}")

    charts = cdp.evaluate(session, PIXELS_JS)
    drawn = {k: v for k, v in charts.items() if v["coloured"] >= 50 and v["points"] > 0}
    result(len(charts) >= 6, f"{len(charts)} charts on the page")
    result(bool(drawn), "a chart was drawn: " + ", ".join(
        f"{k} {v['coloured']} coloured px / {v['points']} points" for k, v in charts.items()))

    before = cdp.evaluate(session, VALUES_JS)
    stop, sent = threading.Event(), [0]
    worker = threading.Thread(target=load, args=(base, stop, sent), daemon=True)
    worker.start()
    try:
        after = bl.wait_for("a displayed number to change", lambda: (lambda now: now if any(
            now.get(k) != v for k, v in before.items() if k.startswith(("requests_total", "req_rate"))) else None)(
            cdp.evaluate(session, VALUES_JS)), 2.5)
    except TimeoutError:
        after = cdp.evaluate(session, VALUES_JS)
    stop.set()
    worker.join()
    changed = {k: (before[k], after.get(k)) for k in before if after.get(k) != before[k]}
    moved = {k: v for k, v in changed.items() if k.startswith(("requests_total", "req_rate"))}
    result(bool(moved), f"numbers changed within 2 s while {sent[0]} requests were sent: "
           + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in sorted(changed.items())))

    foreign = [u for u in cdp.evaluate(session, RESOURCES_JS) if not u.startswith(origin + "/")]
    result(not foreign, "nothing loaded from elsewhere" + (f": {foreign}" if foreign else ""))

    if screenshot:
        time.sleep(settle)
        metrics = cdp.call("Page.getLayoutMetrics", session=session)
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = cdp.call("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}},
            session=session, timeout=30)
        with open(screenshot, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        result(True, f"screenshot saved to {screenshot}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("base", help="linger's base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--screenshot", help="save a PNG of the page here")
    ap.add_argument("--settle", type=float, default=0, help="seconds to wait before the screenshot")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=800)
    args = ap.parse_args()
    base = args.base.rstrip("/")
    failures = 0

    def result(ok, what):
        nonlocal failures
        print(("PASS" if ok else "FAIL") + ": " + what, flush=True)
        failures += 0 if ok else 1

    try:
        with urllib.request.urlopen(base + "/_status.html", timeout=5) as res:
            page = res.read()
            ctype = res.headers.get("Content-Type", "")
        result(ctype.startswith("text/html"), f"GET /_status.html: {len(page)} bytes, {ctype}")
        result(len(page) < 25 * 1024, f"page under 25 KB ({len(page)} bytes)")
    except OSError as e:
        result(False, f"GET /_status.html: {e}")
        return 1

    work = tempfile.mkdtemp(prefix="dashboard-test-")
    proc = None
    try:
        proc, ws_url = start_chromium(work)
        ws = bl.WebSocket(ws_url)
        cdp = bl.Cdp(ws)
        target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        cdp.call("Page.enable", session=session)
        cdp.call("Runtime.enable", session=session)
        cdp.call("Emulation.setDeviceMetricsOverride", {
            "width": args.width, "height": args.height, "deviceScaleFactor": 1, "mobile": False}, session=session)
        cdp.call("Page.navigate", {"url": base + "/_status.html"}, session=session)
        check(cdp, session, base, result, args.screenshot, args.settle)
        cdp.call("Target.closeTarget", {"targetId": target})
        ws.close()
    except (OSError, RuntimeError, TimeoutError, KeyError, json.JSONDecodeError) as e:
        result(False, f"browser session: {e}")
    finally:
        if proc:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    print("dashboard test: " + ("FAILED" if failures else "all passed"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
