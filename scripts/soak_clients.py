#!/usr/bin/env python3
"""Protocol clients for scripts/soak.sh (Python 3 standard library only).

Runs, for --duration seconds, a set of threads against one linger server
and checks every answer, not just that one came:

  publisher     POST /pub/soak every ~50 ms; ids must rise by exactly one.
  longpoll      GET /sub/soak?since=L on a keep-alive connection; every
                answer must carry exactly the messages L+1..last_id.
  longpoll-204  GET /sub/<quiet channel>: 204 after --longpoll-timeout.
  sse           Accept: text/event-stream on /sub/soak; ids must arrive in
                order without gaps or repeats. One subscriber drops its
                connection every few seconds on purpose and resumes with
                Last-Event-ID; all resume when the server ends a stream.
  sse-ping      an SSE subscriber on a quiet channel: `: ping` comments at
                --sse-ping intervals.
  stream        ?mode=stream (chunked NDJSON) on /sub/soak, same checks.
  verify        keep-alive GETs whose bodies are compared with the files
                (full, Range, If-None-Match, HEAD, three pipelined); only
                the --max-requests-th response may close the connection.
  slow-head     a partial request head (idle, or trickled a byte at a
                time), and a connection that sends nothing: 408 (or, for
                the silent one, no bytes) after --header-timeout, then a
                clean EOF.
  stalled-read  GET /1m.bin with a 4 KiB receive buffer: read 64 KiB, stop
                reading for a second and close mid-response; or ask for it
                eight times over (more than the socket buffers hold) and
                read nothing for --send-timeout + 2 s: the server must drop
                the connection.
  malformed     a handful of bad request heads, one per connection: a
                4xx/5xx response, then a clean EOF, never a reset.

At the end the publisher stops and every subscriber must have seen its
last message. Writes a JSON report (--out) and exits 1 on any failure.
"""

import argparse
import codecs
import json
import os
import random
import socket
import sys
import threading
import time

CHANNEL = "soak"
PUBLISH_EVERY = 0.05
MAX_FAILURES_KEPT = 40


class Failure(Exception):
    pass


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.kinds = {}
        self.failures = []
        self.failure_count = 0
        self.started = time.monotonic()

    def kind(self, name):
        with self.lock:
            return self.kinds.setdefault(name, {"ok": 0, "failed": 0})

    def ok(self, name, n=1):
        with self.lock:
            self.kinds.setdefault(name, {"ok": 0, "failed": 0})["ok"] += n

    def note(self, name, key, n=1):
        with self.lock:
            k = self.kinds.setdefault(name, {"ok": 0, "failed": 0})
            k[key] = k.get(key, 0) + n

    def peak(self, name, key, value):
        with self.lock:
            k = self.kinds.setdefault(name, {"ok": 0, "failed": 0})
            k[key] = round(max(k.get(key, value), value), 3)

    def low(self, name, key, value):
        with self.lock:
            k = self.kinds.setdefault(name, {"ok": 0, "failed": 0})
            k[key] = round(min(k.get(key, value), value), 3)

    def fail(self, name, msg):
        with self.lock:
            self.kinds.setdefault(name, {"ok": 0, "failed": 0})["failed"] += 1
            self.failure_count += 1
            if len(self.failures) < MAX_FAILURES_KEPT:
                t = time.monotonic() - self.started
                self.failures.append(f"t={t:.1f}s {name}: {msg}")


STATS = Stats()


class Conn:
    """One client connection with a small buffered reader."""

    def __init__(self, addr, timeout, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(addr)
        except BaseException:
            self.sock.close()
            raise
        self.buf = bytearray()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed by the server")
        self.buf += data

    def readline(self, limit=65536):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                return line
            if len(self.buf) > limit:
                raise Failure("line too long")
            self.fill()

    def read_exact(self, n):
        while len(self.buf) < n:
            self.fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def head(self):
        """Status line and fields; returns (status, {lower name: value})."""
        line = self.readline()
        parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise Failure(f"bad status line {line[:80]!r}")
        fields = {}
        while True:
            line = self.readline().decode("latin-1").rstrip("\r\n")
            if not line:
                break
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        return int(parts[1]), fields

    def chunk(self):
        """One chunk's payload; b'' for the last chunk (trailers skipped).
        Consumes nothing until the whole chunk is buffered, so a read
        timeout in the middle of one can simply be retried."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                size = int(bytes(self.buf[:i]).decode("latin-1").strip().split(";")[0], 16)
                if size == 0:
                    # The last chunk: skip trailer lines up to the blank one.
                    at = i + 1
                    while True:
                        j = self.buf.find(b"\n", at)
                        if j < 0:
                            break
                        if not self.buf[at:j].strip():
                            del self.buf[: j + 1]
                            return b""
                        at = j + 1
                else:
                    end = i + 1 + size
                    if len(self.buf) >= end + 2:
                        if self.buf[end : end + 2] != b"\r\n":
                            raise Failure("chunk not followed by CRLF")
                        data = bytes(self.buf[i + 1 : end])
                        del self.buf[: end + 2]
                        return data
            elif len(self.buf) > 64:
                raise Failure(f"bad chunk size line {bytes(self.buf[:40])!r}")
            self.fill()

    def response(self, head_only=False):
        """(status, fields, body) of one response."""
        status, fields = self.head()
        if head_only or status in (204, 304) or 100 <= status < 200:
            return status, fields, b""
        if "chunked" in fields.get("transfer-encoding", "").lower():
            body = bytearray()
            while True:
                piece = self.chunk()
                if not piece:
                    return status, fields, bytes(body)
                body += piece
        if "content-length" in fields:
            return status, fields, self.read_exact(int(fields["content-length"]))
        body, err = self.until_eof()
        if err:
            raise Failure(f"body ended by {err}")
        return status, fields, body

    def until_eof(self):
        """Read to the end; returns (bytes, None) on a clean EOF, else the
        error (a reset, or a timeout) as a string."""
        data = bytearray(self.buf)
        self.buf.clear()
        try:
            while True:
                piece = self.sock.recv(65536)
                if not piece:
                    return bytes(data), None
                data += piece
        except ConnectionResetError:
            return bytes(data), "reset"
        except socket.timeout:
            return bytes(data), "timeout"
        except OSError as e:
            return bytes(data), f"error {e}"


def closes(fields):
    return "close" in fields.get("connection", "").lower()


def request(method, path, host="soak", extra=b"", body=None):
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n".encode() + extra
    if body is not None:
        head += f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n".encode()
        return head + b"\r\n" + body
    return head + b"\r\n"


def message_text(seq):
    # Every tenth message spans lines and carries JSON-escaped characters,
    # so the SSE line splitting and the JSON escaping are checked too.
    if seq % 10 == 0:
        return f'soak-{seq}\nline "two" \\ tab\tend'
    return f"soak-{seq}"


def parse_seq(text):
    if not text.startswith("soak-"):
        raise Failure(f"unexpected message data {text[:60]!r}")
    seq = int(text[5:].split("\n")[0])
    if text != message_text(seq):
        raise Failure(f"message {seq} altered: {text[:80]!r}")
    return seq


class Shared:
    def __init__(self, args):
        self.args = args
        self.addr = (args.host, args.port)
        self.stop = threading.Event()
        self.published_done = threading.Event()
        self.final_id = 0
        self.offset = None  # id - seq, fixed once the first publish is known
        self.offset_lock = threading.Lock()
        self.quiet = f"quiet-{os.getpid()}"

    def check_offset(self, kind, msg_id, seq):
        with self.offset_lock:
            if self.offset is None:
                self.offset = msg_id - seq
            elif msg_id - seq != self.offset:
                raise Failure(f"id {msg_id} carries message {seq}")
        return True

    def wait(self, seconds):
        """Sleep unless the run stops first; True if it stopped."""
        return self.stop.wait(seconds)


# ------------------------------------------------------------------ publisher


def publisher(sh):
    kind = "publish"
    conn = None
    seq = 0
    last_id = None
    next_at = time.monotonic()
    while not sh.stop.is_set():
        seq += 1
        try:
            if conn is None:
                conn = Conn(sh.addr, 10)
            conn.send(request("POST", f"/pub/{CHANNEL}", body=message_text(seq).encode()))
            status, fields, body = conn.response()
            if status != 200:
                raise Failure(f"status {status}")
            msg_id = json.loads(body)["id"]
            if last_id is not None and msg_id != last_id + 1:
                raise Failure(f"id {msg_id} after {last_id}")
            sh.check_offset(kind, msg_id, seq)
            last_id = msg_id
            sh.final_id = msg_id
            STATS.ok(kind)
            if closes(fields):
                STATS.note(kind, "server_closes")
                conn.close()
                conn = None
        except (Failure, OSError, EOFError, ValueError, KeyError) as e:
            STATS.fail(kind, f"message {seq}: {e!r}")
            if conn:
                conn.close()
            conn = None
        next_at += PUBLISH_EVERY
        delay = next_at - time.monotonic()
        if delay < -1:
            next_at = time.monotonic()
        elif delay > 0:
            sh.wait(delay)
    if conn:
        conn.close()
    sh.published_done.set()


# ------------------------------------------------------------------ long polls


def long_poller(sh, _idx):
    kind = "longpoll"
    conn = None
    since = None
    timeout = sh.args.longpoll_timeout + 10
    while not sh.stop.is_set():
        path = f"/sub/{CHANNEL}" + (f"?since={since}" if since is not None else "")
        try:
            if conn is None:
                conn = Conn(sh.addr, timeout)
            conn.send(request("GET", path))
            status, fields, body = conn.response()
            if status == 204:
                STATS.note(kind, "empty_204")
                STATS.ok(kind)
            elif status == 200:
                doc = json.loads(body)
                ids = [m["id"] for m in doc["messages"]]
                if not ids:
                    raise Failure(f"200 without messages for since={since}")
                first = since + 1 if since is not None else ids[0]
                if ids != list(range(first, first + len(ids))):
                    raise Failure(f"since={since}: ids {ids[:5]}... not consecutive from {first}")
                if doc["last_id"] != ids[-1]:
                    raise Failure(f"last_id {doc['last_id']} but last message {ids[-1]}")
                for m in doc["messages"]:
                    sh.check_offset(kind, m["id"], parse_seq(m["data"]))
                since = doc["last_id"]
                STATS.note(kind, "messages", len(ids))
                STATS.ok(kind)
            else:
                raise Failure(f"status {status}")
            if closes(fields):
                conn.close()
                conn = None
        except (Failure, OSError, EOFError, ValueError, KeyError, TypeError) as e:
            STATS.fail(kind, f"{path}: {e!r}")
            if conn:
                conn.close()
            conn = None
            sh.wait(0.2)
    if conn:
        conn.close()


def quiet_poller(sh):
    """Long polls on a channel nobody publishes to: 204 at the timeout."""
    kind = "longpoll-204"
    want = sh.args.longpoll_timeout
    conn = None
    while not sh.stop.is_set():
        try:
            if conn is None:
                conn = Conn(sh.addr, want + 10)
            t0 = time.monotonic()
            conn.send(request("GET", f"/sub/{sh.quiet}"))
            status, fields, _ = conn.response()
            took = time.monotonic() - t0
            if status != 204:
                raise Failure(f"status {status}, wanted 204")
            if not (want - 0.5 <= took <= want + 3):
                raise Failure(f"204 after {took:.2f}s, wanted ~{want}s")
            STATS.low(kind, "min_s", took)
            STATS.peak(kind, "max_s", took)
            STATS.ok(kind)
            if closes(fields):
                conn.close()
                conn = None
        except (Failure, OSError, EOFError, ValueError) as e:
            STATS.fail(kind, repr(e))
            if conn:
                conn.close()
            conn = None
            sh.wait(0.5)
    if conn:
        conn.close()


# ------------------------------------------------------------------ streams


class Subscriber:
    """An SSE or NDJSON subscriber that checks ids and resumes on drops."""

    def __init__(self, sh, kind, channel, sse, drop_every=None):
        self.sh = sh
        self.kind = kind
        self.channel = channel
        self.sse = sse
        self.drop_every = drop_every
        self.last = None
        self.conn = None
        self.close_after = False
        self.text = ""
        self.event = {}
        self.last_ping = None
        self.last_data = None
        self.max_ping_gap = 0.0

    def open(self):
        if self.conn is None:
            self.conn = Conn(self.sh.addr, 5)
        self.conn.sock.settimeout(5)
        if self.sse:
            extra = b"Accept: text/event-stream\r\n"
            if self.last is not None:
                extra += f"Last-Event-ID: {self.last}\r\n".encode()
            req = request("GET", f"/sub/{self.channel}", extra=extra)
        else:
            q = "?mode=stream" + (f"&since={self.last}" if self.last is not None else "")
            req = request("GET", f"/sub/{self.channel}{q}")
        self.conn.send(req)
        status, fields = self.conn.head()
        if status != 200:
            raise Failure(f"status {status}")
        ctype = fields.get("content-type", "")
        want = "text/event-stream" if self.sse else "application/x-ndjson"
        if not ctype.startswith(want):
            raise Failure(f"content-type {ctype!r}")
        if "chunked" not in fields.get("transfer-encoding", ""):
            raise Failure("stream is not chunked")
        self.close_after = closes(fields)
        self.text = ""
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.event = {}
        self.last_ping = self.last_data = time.monotonic()
        # Short reads from here on, so the stop flag is seen; stalls are
        # judged in run().
        self.conn.sock.settimeout(1)

    def drop(self):
        if self.conn:
            self.conn.close()
        self.conn = None

    def got(self, msg_id, data):
        if self.last is not None and msg_id != self.last + 1:
            raise Failure(f"id {msg_id} after {self.last} ({'gap' if msg_id > self.last else 'repeat'})")
        self.sh.check_offset(self.kind, msg_id, parse_seq(data))
        self.last = msg_id
        STATS.note(self.kind, "messages")

    def feed(self, piece):
        # A character may straddle two chunks.
        self.text += self.decoder.decode(piece)
        while True:
            i = self.text.find("\n")
            if i < 0:
                return
            line, self.text = self.text[:i], self.text[i + 1 :]
            if self.sse:
                self.sse_line(line)
            elif line.strip():
                doc = json.loads(line)
                self.got(doc["id"], doc["data"])

    def sse_line(self, line):
        if line == "":
            ev, self.event = self.event, {}
            if "data" in ev:
                if "id" not in ev:
                    raise Failure("event without id")
                self.got(int(ev["id"]), "\n".join(ev["data"]))
            return
        if line.startswith(":"):
            if line.strip() == ": ping":
                now = time.monotonic()
                self.max_ping_gap = max(self.max_ping_gap, now - self.last_ping)
                self.last_ping = now
                STATS.note(self.kind, "pings")
            return
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self.event.setdefault("data", []).append(value)
        elif name in ("id", "retry", "event"):
            self.event[name] = value
        else:
            raise Failure(f"unknown SSE field {line[:60]!r}")

    def run(self):
        next_drop = time.monotonic() + self.drop_every() if self.drop_every else None
        ending_by = None
        # Nothing at all for this long is a stall: SSE pings every
        # --sse-ping seconds, and the publisher writes every 50 ms.
        stall = max(3 * self.sh.args.sse_ping, 8)
        while True:
            if self.sh.stop.is_set():
                if ending_by is None:
                    ending_by = time.monotonic() + 10
                if self.sh.published_done.is_set() and (
                    self.channel != CHANNEL or (self.last or 0) >= self.sh.final_id
                ):
                    break
                if time.monotonic() > ending_by:
                    STATS.fail(self.kind, f"did not catch up: last id {self.last}, final {self.sh.final_id}")
                    break
            try:
                if self.conn is None or self.text is None:
                    self.open()
                try:
                    piece = self.conn.chunk()
                except socket.timeout:
                    idle = time.monotonic() - self.last_data
                    quiet_ok = self.sh.stop.is_set() or (not self.sse and self.channel != CHANNEL)
                    if idle > stall and not quiet_ok:
                        raise Failure(f"nothing for {idle:.1f}s")
                    continue
                self.last_data = time.monotonic()
                if not piece:
                    # The server ended the stream (its lifetime): resume.
                    STATS.note(self.kind, "server_ended")
                    if self.close_after:
                        self.drop()
                    self.text = None
                    continue
                self.feed(piece)
                if next_drop and time.monotonic() >= next_drop and not self.sh.stop.is_set():
                    STATS.note(self.kind, "deliberate_drops")
                    self.drop()
                    next_drop = time.monotonic() + self.drop_every()
            except (Failure, OSError, EOFError, ValueError, KeyError, UnicodeDecodeError) as e:
                STATS.fail(self.kind, f"last id {self.last}: {e!r}")
                self.drop()
                self.sh.wait(0.2)
        if self.last is not None or self.channel != CHANNEL:
            STATS.ok(self.kind)
        STATS.peak(self.kind, "max_ping_gap_s", self.max_ping_gap)
        self.drop()


def sse_subscriber(sh, idx):
    drop = (lambda: random.uniform(3, 8)) if idx == 0 else None
    Subscriber(sh, "sse", CHANNEL, True, drop).run()


def stream_subscriber(sh):
    Subscriber(sh, "stream", CHANNEL, False, lambda: random.uniform(5, 10)).run()


def ping_subscriber(sh):
    kind = "sse-ping"
    sub = Subscriber(sh, kind, sh.quiet, True)
    sub.run()
    limit = 2 * sh.args.sse_ping + 1
    if sub.max_ping_gap > limit:
        STATS.fail(kind, f"{sub.max_ping_gap:.2f}s between pings (limit {limit}s)")


# ------------------------------------------------------------------ verify


def verifier(sh):
    kind = "verify"
    root = sh.args.docroot
    files = {}
    for name in ("hello.txt", "4k.bin", "1m.bin"):
        with open(os.path.join(root, name), "rb") as f:
            files[name] = f.read()
    conn = None
    served = 0  # responses on this connection
    etag = None
    step = 0
    while not sh.stop.is_set():
        step += 1
        what = step % 7
        try:
            if conn is None:
                conn = Conn(sh.addr, 10)
                served = 0
            if what == 0:
                conn.send(request("GET", "/hello.txt") * 3)
                for _ in range(3):
                    status, fields, body = conn.response()
                    served += 1
                    if status != 200 or body != files["hello.txt"]:
                        raise Failure(f"pipelined: {status} {body[:20]!r}")
                    if closes(fields):
                        # The connection's last request (--max-requests):
                        # the ones pipelined behind it go unanswered, as
                        # RFC 9112 9.3.2 allows; a client resends them.
                        STATS.note(kind, "pipelined_cut_at_max_requests")
                        break
            elif what in (1, 2):
                name = "4k.bin" if what == 1 else "1m.bin"
                conn.send(request("GET", f"/{name}"))
                status, fields, body = conn.response()
                if status != 200 or body != files[name]:
                    raise Failure(f"/{name}: {status}, {len(body)} bytes, equal={body == files[name]}")
                if name == "4k.bin":
                    etag = fields.get("etag")
            elif what == 3:
                conn.send(request("GET", "/4k.bin", extra=b"Range: bytes=100-1123\r\n"))
                status, fields, body = conn.response()
                if status != 206 or body != files["4k.bin"][100:1124]:
                    raise Failure(f"range: {status}, {len(body)} bytes")
            elif what == 4 and etag:
                conn.send(request("GET", "/4k.bin", extra=f"If-None-Match: {etag}\r\n".encode()))
                status, fields, body = conn.response()
                if status != 304 or body:
                    raise Failure(f"If-None-Match: {status}")
            elif what == 5:
                conn.send(request("HEAD", "/1m.bin"))
                status, fields, body = conn.response(head_only=True)
                if status != 200 or fields.get("content-length") != str(len(files["1m.bin"])):
                    raise Failure(f"HEAD: {status} {fields.get('content-length')}")
            else:
                conn.send(request("GET", "/hello.txt"))
                status, fields, body = conn.response()
                if status != 200 or body != files["hello.txt"]:
                    raise Failure(f"/hello.txt: {status} {body[:20]!r}")
            if what != 0:
                served += 1
            STATS.ok(kind)
            if closes(fields):
                # Only the connection's --max-requests-th response may
                # close it.
                if served != sh.args.max_requests:
                    raise Failure(f"Connection: close after {served} responses (--max-requests {sh.args.max_requests})")
                STATS.note(kind, "closed_at_max_requests")
                conn.close()
                conn = None
        except (Failure, OSError, EOFError, ValueError) as e:
            STATS.fail(kind, f"step {what}: {e!r}")
            if conn:
                conn.close()
            conn = None
            sh.wait(0.2)
        sh.wait(0.01)
    if conn:
        conn.close()


# ------------------------------------------------------------------ slow clients


def slow_head(sh, idx):
    kind = "slow-head"
    want = sh.args.header_timeout
    variant = idx
    while not sh.stop.is_set():
        variant = (variant + 1) % 3
        conn = None
        try:
            conn = Conn(sh.addr, want + 10)
            t0 = time.monotonic()
            if variant == 2:
                # Sends nothing: closed without a response.
                data, err = conn.until_eof()
                took = time.monotonic() - t0
                if data or err:
                    raise Failure(f"silent connection: {len(data)} bytes, {err or 'EOF'}")
            else:
                conn.send(b"GET /hello.txt HTTP/1.1\r\nHost: soak\r\nX-Slow: ")
                if variant == 1:
                    # Trickle a byte every 300 ms: must not extend the deadline.
                    conn.sock.settimeout(0.3)
                    while True:
                        try:
                            conn.fill()
                            break
                        except socket.timeout:
                            conn.send(b"a")
                        if time.monotonic() - t0 > want + 10:
                            raise Failure("no answer while trickling")
                    conn.sock.settimeout(want + 10)
                status, fields = conn.head()
                took = time.monotonic() - t0
                if status != 408 or not closes(fields):
                    raise Failure(f"status {status}, connection {fields.get('connection')!r}")
                conn.read_exact(int(fields.get("content-length", "0")))
                rest, err = conn.until_eof()
                if err or rest:
                    raise Failure(f"after 408: {len(rest)} more bytes, {err or 'EOF'}")
            if not (want - 0.5 <= took <= want + 4):
                raise Failure(f"variant {variant}: closed after {took:.2f}s, wanted ~{want}s")
            STATS.low(kind, "min_s", took)
            STATS.peak(kind, "max_s", took)
            STATS.ok(kind)
        except BrokenPipeError:
            STATS.fail(kind, f"variant {variant}: reset while trickling")
        except (Failure, OSError, EOFError, ValueError) as e:
            STATS.fail(kind, f"variant {variant}: {e!r}")
        finally:
            if conn:
                conn.close()
        sh.wait(0.2)


def stalled_reader(sh):
    kind = "stalled-read"
    total = os.path.getsize(os.path.join(sh.args.docroot, "1m.bin"))
    variant = 0
    while not sh.stop.is_set():
        variant ^= 1
        conn = None
        try:
            conn = Conn(sh.addr, 10, rcvbuf=4096)
            conn.send(request("GET", "/1m.bin"))
            if variant == 0:
                status, fields = conn.head()
                if status != 200:
                    raise Failure(f"status {status}")
                got = len(conn.buf)
                while got < 65536:
                    piece = conn.sock.recv(65536)
                    if not piece:
                        raise Failure(f"EOF after {got} bytes")
                    got += len(piece)
                sh.wait(1.0)
                STATS.note(kind, "closed_mid_response")
            else:
                # Eight responses (8 MiB) are more than the socket buffers
                # hold: read nothing past the send timeout, and the server
                # must give up on us and close.
                conn.send(request("GET", "/1m.bin") * 7)
                time.sleep(sh.args.send_timeout + 2)
                conn.sock.settimeout(5)
                data, err = conn.until_eof()
                if err == "timeout":
                    raise Failure(f"not dropped: {len(data)} bytes, then nothing")
                if len(data) >= 8 * total:
                    raise Failure("all eight responses arrived: the send timeout never fired")
                STATS.note(kind, "dropped_by_server" + ("_reset" if err else ""))
            STATS.ok(kind)
        except (Failure, OSError, EOFError, ValueError) as e:
            STATS.fail(kind, f"variant {variant}: {e!r}")
        finally:
            if conn:
                conn.close()
        sh.wait(0.5)


# ------------------------------------------------------------------ malformed

MALFORMED = [
    ("no Host", b"GET /hello.txt HTTP/1.1\r\n\r\n"),
    ("HTTP/1.2", b"GET /hello.txt HTTP/1.2\r\nHost: t\r\n\r\n"),
    ("NUL in the target", b"GET /hello.txt\x00.png HTTP/1.1\r\nHost: t\r\n\r\n"),
    ("obs-fold", b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nX-Note: first\r\n second\r\n\r\n"),
    ("head over 8 KiB", b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nCookie: s=" + b"a" * 9000 + b"\r\n\r\n"),
    ("CL and TE", b"POST /pub/soak HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"),
    ("TLS ClientHello", bytes.fromhex("16030100a5010000a10303") + os.urandom(64)),
    ("bad head then 256 KiB", b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n" + b"x" * (256 << 10)),
]


def malformed(sh):
    kind = "malformed"
    i = 0
    while not sh.stop.is_set():
        name, data = MALFORMED[i % len(MALFORMED)]
        i += 1
        conn = None
        try:
            conn = Conn(sh.addr, 10)
            try:
                conn.send(data)
            except (BrokenPipeError, ConnectionResetError) as e:
                raise Failure(f"reset while sending: {e!r}")
            status, fields, _ = conn.response()
            if not 400 <= status <= 599:
                raise Failure(f"status {status}")
            rest, err = conn.until_eof()
            if err:
                raise Failure(f"{status}, then {err} instead of a clean EOF")
            if rest:
                raise Failure(f"{status}, then {len(rest)} unexpected bytes")
            STATS.note(kind, f"status_{status}")
            STATS.ok(kind)
        except (Failure, OSError, EOFError, ValueError) as e:
            STATS.fail(kind, f"{name}: {e!r}")
        finally:
            if conn:
                conn.close()
        sh.wait(0.25)


# ------------------------------------------------------------------ main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--addr", required=True, help="HOST:PORT of the server")
    ap.add_argument("--docroot", required=True, help="the server's --root (bodies are compared)")
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--out", help="JSON report path")
    ap.add_argument("--header-timeout", type=float, default=2)
    ap.add_argument("--send-timeout", type=float, default=5)
    ap.add_argument("--longpoll-timeout", type=float, default=5)
    ap.add_argument("--sse-ping", type=float, default=2)
    ap.add_argument("--max-requests", type=int, default=1000, help="the server's --max-requests")
    ap.add_argument("--longpollers", type=int, default=4)
    ap.add_argument("--sse", type=int, default=3)
    args = ap.parse_args()
    host, _, port = args.addr.rpartition(":")
    args.host, args.port = host, int(port)
    if args.host not in ("127.0.0.1", "localhost"):
        sys.exit("soak clients only talk to 127.0.0.1")

    sh = Shared(args)
    threads = [threading.Thread(target=publisher, args=(sh,), name="publisher")]
    # Subscribers first, so they are listening when the first message goes.
    subs = [threading.Thread(target=sse_subscriber, args=(sh, i), name=f"sse{i}") for i in range(args.sse)]
    subs += [
        threading.Thread(target=stream_subscriber, args=(sh,), name="stream"),
        threading.Thread(target=ping_subscriber, args=(sh,), name="sse-ping"),
    ]
    others = [threading.Thread(target=long_poller, args=(sh, i), name=f"lp{i}") for i in range(args.longpollers)]
    others += [
        threading.Thread(target=quiet_poller, args=(sh,), name="lp-quiet"),
        threading.Thread(target=verifier, args=(sh,), name="verify"),
        threading.Thread(target=slow_head, args=(sh, 0), name="slow0"),
        threading.Thread(target=slow_head, args=(sh, 1), name="slow1"),
        threading.Thread(target=stalled_reader, args=(sh,), name="stalled"),
        threading.Thread(target=malformed, args=(sh,), name="malformed"),
    ]
    for t in subs:
        t.daemon = True
        t.start()
    time.sleep(0.3)
    for t in threads + others:
        t.daemon = True
        t.start()
    sh.stop.wait(args.duration)
    sh.stop.set()
    # Everything in flight finishes within its own timeouts; the longest is
    # a stalled reader (send timeout + 2 s + reading) or a subscriber
    # catching up (10 s).
    limit = time.monotonic() + args.send_timeout + 20
    for t in threads + subs + others:
        t.join(max(0.1, limit - time.monotonic()))
        if t.is_alive():
            STATS.fail("harness", f"thread {t.name} did not finish")

    report = {
        "duration_s": round(time.monotonic() - STATS.started, 1),
        "published": sh.final_id,
        "kinds": STATS.kinds,
        "failures": STATS.failure_count,
        "first_failures": STATS.failures,
    }
    text = json.dumps(report, indent=1, sort_keys=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    sys.exit(1 if STATS.failure_count else 0)


if __name__ == "__main__":
    main()
