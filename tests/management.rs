//! Connection management on real sockets (Gettys & Freier §5, §7, §9,
//! §11): LRU eviction, 503 at the door, the adaptive idle timeout and its
//! Keep-Alive hint, and back-pressure on a greedy pipelining client.

mod support;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{Reader, Server, TempDir, WAIT};

fn idle_client(server: &Server) -> (TcpStream, support::Response) {
    let mut s = server.connect();
    s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let r = Reader::new().response(&mut s, false).unwrap();
    assert_eq!(r.status, 200);
    (s, r)
}

fn eof_within(s: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let (bytes, end) = Reader::new().until_eof(s);
    assert!(bytes.is_empty() && end.is_ok(), "clean EOF expected: {end:?}");
    started.elapsed()
}

#[test]
fn full_server_evicts_the_least_recently_used_idle_client() {
    let server = Server::start(&["--max-conns", "20"]);
    let mut clients: Vec<TcpStream> = (0..19).map(|_| idle_client(&server).0).collect();
    // Idle connections hold no buffers: the one set held is the status
    // request's own (gauges count the connection asking, as nginx's do).
    let status = server.status();
    assert_eq!((status["idle"], status["buffers_held"], status["reading"]), (19, 1, 1), "{status:?}");
    clients.push(idle_client(&server).0);
    // The 21st is served...
    let (_s, r) = idle_client(&server);
    assert_eq!(r.body, b"Hello, World!");
    // ...and the oldest idle client sees a clean EOF, the others nothing.
    eof_within(&mut clients[0], WAIT);
    for c in &mut clients[1..] {
        c.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let e = std::io::Read::read(c, &mut b).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::WouldBlock, "only the oldest is evicted");
    }
}

#[test]
fn newcomer_gets_503_with_retry_after_when_no_one_is_idle() {
    let dir = TempDir::new("busy");
    dir.write("big.bin", &vec![7u8; 4 << 20]);
    let server = Server::start(&["--root", dir.arg(), "--max-conns", "20"]);
    // 20 busy connections: each asked for a large file and reads nothing.
    let busy: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = server.connect();
            s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            s
        })
        .collect();
    let deadline = Instant::now() + WAIT;
    let r = loop {
        let mut s = server.connect();
        s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut rd = Reader::new();
        let r = rd.response(&mut s, false).unwrap();
        if r.status == 503 {
            let (rest, end) = rd.until_eof(&mut s);
            assert!(rest.is_empty() && end.is_ok(), "503 then a clean close: {end:?}");
            break r;
        }
        // The busy clients' requests may still be in flight: try again.
        assert!(Instant::now() < deadline, "never refused: {}", r.status);
    };
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.closes());
    drop(busy);
}

#[test]
fn greedy_pipeliner_is_back_pressured_while_others_are_served() {
    // A cap high enough that back-pressure, not the cap, is what stops it.
    let server = Arc::new(Server::start(&["--max-requests", "1000000"]));
    let rss_before = server.rss_kib();
    // 100 000 pipelined requests, never reading a response.
    let mut greedy = server.connect();
    greedy.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    let batch = b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n".repeat(1000);
    let mut sent = 0u64;
    while sent < 100_000 {
        match greedy.write_all(&batch) {
            Ok(()) => sent += 1000,
            // The server stopped reading: its window closed on us.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("greedy client: {e}"),
        }
    }
    // The server stops serving it once its unsent output is full.
    server.wait_status("the greedy client blocked", |s| s["writing"] >= 1 && s["backpressure_stalls"] >= 1);
    // 20 ordinary clients, 50 requests each, alongside.
    let ordinary: Vec<_> = (0..20)
        .map(|_| {
            let server = server.clone();
            std::thread::spawn(move || {
                let mut s = server.connect();
                let mut rd = Reader::new();
                let mut worst = Duration::ZERO;
                for _ in 0..50 {
                    let t = Instant::now();
                    s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
                    assert_eq!(rd.response(&mut s, false).unwrap().body, b"Hello, World!");
                    worst = worst.max(t.elapsed());
                }
                worst
            })
        })
        .collect();
    let worst = ordinary.into_iter().map(|h| h.join().unwrap()).max().unwrap();
    assert!(worst < Duration::from_secs(2), "an ordinary client waited {worst:?}");
    let grown = server.rss_kib().saturating_sub(rss_before);
    assert!(grown < 8 * 1024, "server RSS grew by {grown} KiB");
    let status = server.status();
    // Far from all of the greedy pipeline was answered: the server stopped
    // serving and reading it (status probes account for a few requests).
    let greedy_served = status["requests"] - 20 * 50;
    assert!(greedy_served < sent, "served {greedy_served} of {sent}: no back-pressure");
    drop(greedy);
}
