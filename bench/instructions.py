#!/usr/bin/env python3
"""Drive a fixed, deterministic request load for bench/instructions.sh.

usage: instructions.py PORT SCENARIO COUNT

SCENARIO is "serial" (one connection, one request at a time: every request
costs a whole loop turn), "concurrent" (100 connections, one request on
each written at once, all answered before the next round: turns shared by
many connections, as with wrk at 100 connections) or "pipelined" (100
connections, 16 requests written at once on each). COUNT is the number of
requests, a multiple of 100 for "concurrent" and of 1600 for "pipelined". Every response
must be a 200 carrying the 13-byte /hello.txt, or the script fails: a count
of instructions means nothing over failed requests.
"""

import socket
import sys

BODY = b"Hello, World!"
CONNS = 100
DEPTH = 16


def responses_in(buf):
    """Complete responses at the start of buf, and the bytes they take."""
    count, pos = 0, 0
    while True:
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0:
            return count, pos
        head = buf[pos:end].decode("latin-1")
        if not head.startswith("HTTP/1.1 200 "):
            sys.exit(f"unexpected response: {head.splitlines()[0]!r}")
        length = None
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if length != len(BODY):
            sys.exit(f"unexpected Content-Length {length}")
        if len(buf) < end + 4 + length:
            return count, pos
        if buf[end + 4 : end + 4 + length] != BODY:
            sys.exit("unexpected body")
        count, pos = count + 1, end + 4 + length


def await_responses(sock, want):
    buf = b""
    got = 0
    while got < want:
        data = sock.recv(65536)
        if not data:
            sys.exit(f"connection closed after {got} of {want} responses")
        buf += data
        n, used = responses_in(buf)
        got, buf = got + n, buf[used:]
    if buf:
        sys.exit(f"{len(buf)} unexpected bytes after the responses")


def main():
    port, scenario, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    request = b"GET /hello.txt HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port
    if scenario == "serial":
        sock = socket.create_connection(("127.0.0.1", port))
        for _ in range(count):
            sock.sendall(request)
            await_responses(sock, 1)
    elif scenario in ("concurrent", "pipelined"):
        depth = DEPTH if scenario == "pipelined" else 1
        if count % (CONNS * depth):
            sys.exit(f"{scenario} COUNT must be a multiple of {CONNS * depth}")
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(CONNS)]
        for _ in range(count // (CONNS * depth)):
            for sock in socks:
                sock.sendall(request * depth)
            for sock in socks:
                await_responses(sock, depth)
    else:
        sys.exit(f"unknown scenario {scenario}")


if __name__ == "__main__":
    main()
