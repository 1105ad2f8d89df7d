#!/usr/bin/env python3
"""Measure a server's resident memory per idle keep-alive connection.

Opens N connections to 127.0.0.1:PORT with non-blocking sockets (in batches,
so the listen backlog never overflows), sends one GET on each and reads the
complete response, then leaves all of them open and idle.  The server's RSS
(VmRSS summed over the process and its descendants, e.g. nginx's worker) is
read before and after; the difference divided by N is the per-connection cost.

"Before" is taken after one warm-up request on a separate connection, so
one-time allocations (file cache, first buffers) are not charged to the
idle connections.

Prints one line:  RESULT before_kb=.. after_kb=.. open=.. failed=.. \
                  closed_by_server=.. bytes_per_conn=.. seconds=..
Standard library only.
"""

import argparse
import errno
import os
import resource
import selectors
import socket
import sys
import time


def tree_pids(root):
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_kb(root):
    total = 0
    for p in tree_pids(root):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def response_complete(buf):
    """True once buf holds a full response with a Content-Length body."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    length = 0
    for line in buf[:head_end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return len(buf) >= head_end + 4 + length


def one_request(host, port, request, timeout=5.0):
    s = socket.create_connection((host, port), timeout=timeout)
    s.sendall(request)
    buf = b""
    while not response_complete(buf):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    s.close()
    return buf.startswith(b"HTTP/1.1 200")


def open_batch(host, port, request, count, deadline):
    """Open `count` connections, do one request on each; return the sockets."""
    sel = selectors.DefaultSelector()
    state = {}
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex((host, port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            continue
        state[s] = b""
        sel.register(s, selectors.EVENT_WRITE)
    done, failed = [], 0
    while state and time.monotonic() < deadline:
        for key, mask in sel.select(timeout=0.5):
            s = key.fileobj
            if mask & selectors.EVENT_WRITE:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    sel.unregister(s)
                    del state[s]
                    s.close()
                    failed += 1
                    continue
                s.send(request)  # small enough to go out in one piece
                sel.modify(s, selectors.EVENT_READ)
                continue
            try:
                chunk = s.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                sel.unregister(s)
                del state[s]
                s.close()
                failed += 1
                continue
            state[s] += chunk
            if response_complete(state[s]):
                sel.unregister(s)
                ok = state.pop(s).startswith(b"HTTP/1.1 200")
                if ok:
                    done.append(s)
                else:
                    s.close()
                    failed += 1
    for s in list(state):
        sel.unregister(s)
        s.close()
        failed += 1
    sel.close()
    return done, failed


def count_closed(socks):
    """Connections the server has closed meanwhile (readable with EOF)."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    closed = 0
    for key, _ in sel.select(timeout=0):
        try:
            if key.fileobj.recv(1, socket.MSG_PEEK) == b"":
                closed += 1
        except OSError:
            closed += 1
    sel.close()
    return closed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True, help="server pid (its descendants are included)")
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--path", default="/hello.txt")
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--settle", type=float, default=1.0, help="seconds to wait before the after-RSS")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("only loopback targets are allowed")

    need = args.conns + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
        except (ValueError, OSError):
            pass
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        print(f"warning: open-file limit {soft} < {need}", file=sys.stderr)

    request = f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    if not one_request(args.host, args.port, request):
        sys.exit("warm-up request failed")
    time.sleep(0.3)
    before = rss_kb(args.pid)

    t0 = time.monotonic()
    deadline = t0 + args.timeout
    socks, failed = [], 0
    while len(socks) + failed < args.conns and time.monotonic() < deadline:
        n = min(args.batch, args.conns - len(socks) - failed)
        try:
            ok, bad = open_batch(args.host, args.port, request, n, deadline)
        except OSError as e:  # e.g. EMFILE
            print(f"warning: {e}", file=sys.stderr)
            break
        socks.extend(ok)
        failed += bad
    elapsed = time.monotonic() - t0
    time.sleep(args.settle)
    after = rss_kb(args.pid)
    closed = count_closed(socks)
    per_conn = (after - before) * 1024.0 / len(socks) if socks else float("nan")
    print(
        f"RESULT before_kb={before} after_kb={after} open={len(socks)} failed={failed} "
        f"closed_by_server={closed} bytes_per_conn={per_conn:.0f} seconds={elapsed:.2f}"
    )
    sys.stdout.flush()
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
