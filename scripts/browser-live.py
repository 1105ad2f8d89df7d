#!/usr/bin/env python3
"""Live-delivery check for /live.html over the Chrome DevTools protocol.

Usage: browser-live.py WS_URL HTTP_ADDR PAGE_BASE [HISTORY_MESSAGE...]

WS_URL is the browser endpoint Chromium prints on stderr
("DevTools listening on ws://..."), HTTP_ADDR is linger's plain host:port
(the test publishes there), PAGE_BASE is where the page is loaded from
(http://HTTP_ADDR, or https://localhost:PORT for the same linger's TLS
listener), and the HISTORY_MESSAGEs are what channel demo already holds,
oldest first (none: ask the channel). Opens the page, waits until it
reports a connection and shows the history, publishes a fresh message, and
waits for it to appear in #messages. Standard library only: a minimal
WebSocket client (RFC 6455) is below.
"""

import base64
import json
import os
import socket
import struct
import sys
import time
import urllib.parse
import urllib.request


class WebSocket:
    def __init__(self, url, timeout=10.0):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "ws":
            raise ValueError("only ws:// is supported: " + url)
        host, port = u.hostname, u.port or 80
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = u.path + ("?" + u.query if u.query else "")
        # No Origin header: Chromium refuses DevTools connections from
        # origins it was not told to allow, and accepts ones with none.
        req = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(req.encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("connection closed during handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ConnectionError("handshake refused: " + status.decode(errors="replace"))

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send_frame(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send(self, text):
        self._send_frame(0x1, text.encode())

    def recv(self):
        """The next text message (pings answered, fragments joined)."""
        message = b""
        while True:
            b0, b1 = self._read(2)
            fin, opcode, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read(8))
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                raise ConnectionError("websocket closed by peer")
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            message += payload
            if fin:
                return message.decode()

    def close(self):
        try:
            self._send_frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()


class Cdp:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

    def call(self, method, params=None, session=None, timeout=10.0):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            # Events (no id) are not needed here.
        raise TimeoutError(method)

    def evaluate(self, session, expression):
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
        if "exceptionDetails" in r:
            raise RuntimeError(f"evaluate {expression!r}: {r['exceptionDetails']}")
        return r["result"].get("value")


def wait_for(what, fn, timeout):
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"{what} (last value: {value!r})")


STATUS_JS = (
    "(function(){var m=document.getElementById('mode'),d=document.getElementById('detail');"
    "return m&&d?m.textContent+' '+d.textContent:'';})()"
)
ITEMS_JS = (
    "Array.prototype.map.call(document.querySelectorAll('#messages li'),"
    "function(li){return [li.getAttribute('data-id'),li.textContent];})"
)


def find_js(text):
    return (
        "(function(t){var li=document.querySelectorAll('#messages li');"
        "for(var i=0;i<li.length;i++){if(li[i].textContent===t)return li[i].getAttribute('data-id');}"
        "return null;})(" + json.dumps(text) + ")"
    )


def publish(addr, text):
    req = urllib.request.Request(f"http://{addr}/pub/demo", data=text.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=5) as res:
        return json.loads(res.read())


def check_page(cdp, addr, base, history, mode, result, before_load=None, label=None):
    """Open base/live.html in a new tab and check it end to end."""
    label = (label or mode) + (" over https" if base.startswith("https:") else "")
    target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    cdp.call("Page.enable", session=session)
    cdp.call("Runtime.enable", session=session)
    if before_load:
        cdp.call("Page.addScriptToEvaluateOnNewDocument", {"source": before_load}, session=session)
    cdp.call("Page.navigate", {"url": f"{base}/live.html"}, session=session)

    try:
        status = wait_for(f"{label} page connected", lambda: (lambda s: s if s.endswith(" connected") else None)(
            cdp.evaluate(session, STATUS_JS) or ""), 15)
        result(status.startswith(mode + " "), f"{label}: page connected ({status})")
        # The page is what was asked for: over TLS, a secure context whose
        # certificate the browser accepted (no error page, no bypass).
        where = cdp.evaluate(session, "location.protocol + ' ' + window.isSecureContext")
        want = "https: true" if base.startswith("https:") else "http:"
        result(where.startswith(want), f"{label}: page loaded as {where!r}")
    except TimeoutError as e:
        result(False, f"{label}: page did not connect: {e}")
        cdp.call("Target.closeTarget", {"targetId": target})
        return

    try:
        items = wait_for("history", lambda: (lambda v: v if len(v) >= len(history) else None)(
            cdp.evaluate(session, ITEMS_JS)), 10)
    except TimeoutError as e:
        items = cdp.evaluate(session, ITEMS_JS)
        result(False, f"{label}: history did not arrive: {e}")
    texts = [t for _, t in items]
    for want in history:
        result(want in texts, f"{label}: history shows {want!r}")
    ids = [int(i) for i, _ in items]
    result(ids == sorted(set(ids)) and texts == history, f"{label}: history in order, no repeats: ids {ids}")

    count_js = "document.querySelectorAll('#messages li').length"
    before = cdp.evaluate(session, count_js)
    text = f"live message over {label} {os.getpid()}-{int(time.time() * 1000)}"
    reply = publish(addr, text)
    result(reply.get("subscribers", 0) >= 1, f"{label}: published {text!r}: {reply}")
    start = time.monotonic()
    try:
        got = wait_for("live message in #messages", lambda: cdp.evaluate(session, find_js(text)), 10)
        ms = (time.monotonic() - start) * 1000
        result(str(got) == str(reply.get("id")), f"{label}: live message appeared as data-id={got} after {ms:.0f} ms")
    except TimeoutError as e:
        result(False, f"{label}: live message never appeared: {e}")
    after = cdp.evaluate(session, count_js)
    result(after == before + 1, f"{label}: exactly one new list item ({before} -> {after})")

    # The form publishes too: type, submit, and wait for the round trip.
    form_text = f"typed into the form over {label} {os.getpid()}"
    cdp.evaluate(
        session,
        "(function(t){document.getElementById('text').value=t;"
        "document.getElementById('publish').requestSubmit();})(" + json.dumps(form_text) + ")",
    )
    try:
        got = wait_for("form message in #messages", lambda: cdp.evaluate(session, find_js(form_text)), 10)
        result(True, f"{label}: form publish appeared as data-id={got}")
    except TimeoutError as e:
        result(False, f"{label}: form publish never appeared: {e}")
    cdp.call("Target.closeTarget", {"targetId": target})


def channel_history(addr):
    """Everything channel demo holds, via a long poll that answers at once."""
    with urllib.request.urlopen(f"http://{addr}/sub/demo?since=0", timeout=5) as res:
        return [m["data"] for m in json.loads(res.read())["messages"]]


def main():
    ws_url, addr, base, history = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    history = history or channel_history(addr)
    failures = 0

    def result(ok, what):
        nonlocal failures
        print(("PASS" if ok else "FAIL") + ": " + what, flush=True)
        failures += 0 if ok else 1

    ws = WebSocket(ws_url)
    cdp = Cdp(ws)
    check_page(cdp, addr, base, history, "sse", result)
    # The fallback: the same page in a browser without EventSource.
    check_page(cdp, addr, base, channel_history(addr), "long-poll", result, before_load="delete window.EventSource;",
               label="long-poll without EventSource")
    # And an event stream that keeps failing (here: every one is a 404).
    broken = (
        "(function(E){window.EventSource=function(){return new E('/sub/');};"
        "window.EventSource.prototype=E.prototype;})(window.EventSource);"
    )
    check_page(cdp, addr, base, channel_history(addr), "long-poll", result, before_load=broken,
               label="long-poll after failing streams")
    ws.close()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
