#!/usr/bin/env python3
"""An ordinary visitor, for bench/slowloris.sh: GET PATH on a new
connection every INTERVAL seconds (open loop: a request starts on time
whether or not the previous ones have finished), each allowed TIMEOUT
seconds from connect to the last byte of the body.

    ordinary_client.py --port 18081 --duration 25 [--interval 0.1]
        [--timeout 10] [--path /hello.txt] [--expect-bytes 13]

Prints one JSON object: attempted, succeeded, the failures by kind, and
the latency of the successful requests (p50, p99, max, in ms). With
--log FILE, also one line per request: start time (Unix seconds), outcome,
latency in ms, so a caller can take the figures over part of the window.
Python 3 standard library only; talks to 127.0.0.1 only.
"""

import argparse
import json
import socket
import threading
import time


def one(port, path, timeout, expect_bytes, results, lock):
    wall = time.time()
    t0 = time.perf_counter()
    deadline = t0 + timeout
    outcome = None
    sock = None
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            sock.settimeout(max(0.01, deadline - time.perf_counter()))
            piece = sock.recv(65536)
            if not piece:
                raise EOFError
            buf += piece
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        # Read by Content-Length and close: waiting for the server's FIN
        # would time the server's closing policy, not the response.
        while length is not None and len(body) < length:
            sock.settimeout(max(0.01, deadline - time.perf_counter()))
            piece = sock.recv(65536)
            if not piece:
                raise EOFError
            body += piece
        if status != 200:
            outcome = f"status_{status}"
        elif expect_bytes is not None and len(body) != expect_bytes:
            outcome = "short_body"
        else:
            outcome = "ok"
    except socket.timeout:
        outcome = "timeout"
    except ConnectionRefusedError:
        outcome = "refused"
    except ConnectionResetError:
        outcome = "reset"
    except EOFError:
        outcome = "eof"
    except (OSError, ValueError, IndexError) as e:
        outcome = type(e).__name__
    finally:
        if sock is not None:
            sock.close()
    took = time.perf_counter() - t0
    with lock:
        results.append((outcome, took, wall))


def pct(sorted_values, p):
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--timeout", type=float, default=10)
    ap.add_argument("--path", default="/hello.txt")
    ap.add_argument("--expect-bytes", type=int, default=13)
    ap.add_argument("--log", help="write one line per request here")
    a = ap.parse_args()

    results, lock, threads = [], threading.Lock(), []
    start = time.perf_counter()
    n = int(a.duration / a.interval)
    for i in range(n):
        delay = start + i * a.interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t = threading.Thread(target=one, args=(a.port, a.path, a.timeout, a.expect_bytes, results, lock))
        t.daemon = True
        t.start()
        threads.append(t)
    for t in threads:
        t.join(a.timeout + 5)

    if a.log:
        with open(a.log, "w") as f:
            for outcome, took, wall in sorted(results, key=lambda r: r[2]):
                f.write(f"{wall:.3f} {outcome} {took * 1000:.2f}\n")
    ok = sorted(took for outcome, took, _ in results if outcome == "ok")
    failures = {}
    for outcome, _, _ in results:
        if outcome != "ok":
            failures[outcome] = failures.get(outcome, 0) + 1
    ms = lambda v: None if v is None else round(v * 1000, 2)
    print(json.dumps({
        "attempted": n,
        "succeeded": len(ok),
        "failures": failures,
        "p50_ms": ms(pct(ok, 50)),
        "p99_ms": ms(pct(ok, 99)),
        "max_ms": ms(ok[-1] if ok else None),
    }))


if __name__ == "__main__":
    main()
