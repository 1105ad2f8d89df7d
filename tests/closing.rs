//! Lingering close, the close handshake and half-close, checked from the
//! client's side byte for byte: no response is ever lost to a reset (seed
//! 000; Gettys & Freier §7-§8; XEP-0190). The same scenarios against the
//! test-only abortive mode show the reset, proving these tests can fail.

mod support;

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Reader, Server, WAIT};

const ABORTIVE: &[(&str, &str)] = &[("LINGER_TEST_ABORTIVE_CLOSE", "1")];

/// A request padded to a few KiB, so that on loopback some of a pipeline
/// is still unread in the server's socket when it decides to close.
fn padded_get(i: usize) -> String {
    format!("GET /hello.txt?n={i} HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n", "p".repeat(4000))
}

fn is_reset(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted)
}

/// Scenario 1: 15 pipelined requests, `--max-requests 5`. Returns the
/// responses read and how the stream ended.
fn pipeline_past_the_cap(server: &Server) -> (Vec<support::Response>, io::Result<()>) {
    let mut s = server.connect();
    let batch: String = (0..15).map(padded_get).collect();
    s.write_all(batch.as_bytes()).unwrap();
    let mut rd = Reader::new();
    let mut responses = Vec::new();
    loop {
        match rd.response(&mut s, false) {
            Ok(r) => responses.push(r),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                return (responses, if rd.leftover().is_empty() { Ok(()) } else { Err(e) });
            }
            Err(e) => return (responses, Err(e)),
        }
    }
}

#[test]
fn request_cap_answers_exactly_five_then_clean_eof() {
    let server = Server::start(&["--max-requests", "5"]);
    for _ in 0..5 {
        let (responses, end) = pipeline_past_the_cap(&server);
        assert!(end.is_ok(), "stream ended with {end:?}");
        assert_eq!(responses.len(), 5);
        for (i, r) in responses.iter().enumerate() {
            assert_eq!(r.status, 200);
            assert_eq!(r.body, b"Hello, World!");
            assert_eq!(r.closes(), i == 4, "only the 5th says Connection: close");
        }
        assert_eq!(responses[3].header("keep-alive"), Some("timeout=60, max=1"));
    }
}

/// Scenario 2: an 8 MiB body keeps arriving after the server answered 413.
/// Returns (the client's write result, the bytes read, how reading ended).
fn upload_past_the_limit(server: &Server) -> (io::Result<()>, Vec<u8>, io::Result<()>) {
    let mut s = server.connect();
    let body = vec![b'u'; 8 << 20];
    let head = format!("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len());
    let wrote = s.write_all(head.as_bytes()).and_then(|()| s.write_all(&body));
    let (bytes, end) = Reader::new().until_eof(&mut s);
    (wrote, bytes, end)
}

#[test]
fn early_413_reaches_a_client_still_sending_its_body() {
    let server = Server::start(&["--max-body-bytes", "1024"]);
    let (wrote, bytes, end) = upload_past_the_limit(&server);
    assert!(wrote.is_ok(), "the client could send its whole body: {wrote:?}");
    assert!(end.is_ok(), "clean EOF, not {end:?}");
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.starts_with("HTTP/1.1 413 Content Too Large\r\n"), "{text}");
    assert!(text.contains("Connection: close\r\n"));
    assert!(text.ends_with("\r\n\r\n413 Content Too Large\n"), "complete response: {text:?}");
    let s = server.status();
    assert!(s["lingering_closes"] >= 1);
}

#[test]
fn without_lingering_the_same_scenarios_show_the_reset() {
    let server = Server::start_env(&["--max-requests", "5", "--max-body-bytes", "1024"], ABORTIVE);
    let (responses, end) = pipeline_past_the_cap(&server);
    let lost = responses.len() < 5;
    assert!(
        lost || end.as_ref().is_err_and(is_reset),
        "expected a reset, got {} responses and {end:?}",
        responses.len()
    );
    let (wrote, bytes, end) = upload_past_the_limit(&server);
    let reset = wrote.as_ref().is_err_and(is_reset) || end.as_ref().is_err_and(is_reset);
    assert!(reset, "expected a reset: write {wrote:?}, read {end:?}, {} bytes", bytes.len());
}

#[test]
fn half_closed_client_gets_all_its_responses() {
    let server = Server::start(&[]);
    let mut s = server.connect();
    let batch: String = (0..3).map(padded_get).collect();
    s.write_all(batch.as_bytes()).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut rd = Reader::new();
    for _ in 0..3 {
        let r = rd.response(&mut s, false).unwrap();
        assert_eq!(r.body, b"Hello, World!");
    }
    let (rest, end) = rd.until_eof(&mut s);
    assert!(rest.is_empty() && end.is_ok(), "then the server closes: {end:?}");
}

/// A kept-alive client sends its last request and its FIN back to back:
/// both are often queued before the server reads, so the readiness event
/// announces them together and no later edge will. The server must read on
/// to the EOF after the request instead of waiting for an edge that never
/// comes (which left such connections open until the idle timeout).
#[test]
fn request_and_fin_sent_together_are_both_seen() {
    let server = Server::start(&["--idle-timeout", "60"]);
    for _ in 0..20 {
        let mut s = idle_client(&server);
        s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut rd = Reader::new();
        assert_eq!(rd.response(&mut s, false).unwrap().status, 200);
        let (rest, end) = rd.until_eof(&mut s);
        assert!(rest.is_empty() && end.is_ok(), "closed at the client's FIN, not the idle timeout: {end:?}");
    }
}

/// After the server closed an idle connection: the client reads EOF, and
/// a request it sends right after meets EOF or nothing, never a reset.
fn assert_closed_gracefully(mut s: TcpStream) {
    let mut rd = Reader::new();
    let (bytes, end) = rd.until_eof(&mut s);
    assert!(bytes.is_empty() && end.is_ok(), "clean EOF, got {} bytes, {end:?}", bytes.len());
    let late = s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(late.is_ok(), "a late request is drained, not reset: {late:?}");
    let mut buf = [0u8; 64];
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("a response after the close: {:?}", &buf[..n]),
        Err(e) => assert!(matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{e}"),
    }
}

fn idle_client(server: &Server) -> TcpStream {
    let mut s = server.connect();
    s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let r = Reader::new().response(&mut s, false).unwrap();
    assert_eq!(r.status, 200);
    s
}

#[test]
fn evicted_idle_connection_closes_with_the_handshake() {
    let server = Server::start(&["--max-conns", "2"]);
    let oldest = idle_client(&server);
    let _newer = idle_client(&server);
    // Both are idle once their responses are out (the server settles a
    // connection in the turn that flushes it). A third client needs a slot.
    let mut s = server.connect();
    s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(Reader::new().response(&mut s, false).unwrap().status, 200);
    assert_closed_gracefully(oldest);
}

/// `ss -tan state time-wait` rows as (local port, peer port).
fn time_wait_pairs() -> Vec<(u16, u16)> {
    let out = Command::new("ss").args(["-tanH", "state", "time-wait"]).output().expect("ss (iproute2) is needed");
    let port = |s: &str| s.rsplit(':').next().and_then(|p| p.parse().ok());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // Recv-Q Send-Q Local Peer (state omitted when filtered)
            let n = cols.len();
            Some((port(cols.get(n.checked_sub(2)?)?)?, port(cols.get(n - 1)?)?))
        })
        .collect()
}

/// Send one request on a fresh connection, read the response and close.
/// `server_first`: wait for the server's FIN before closing. Returns the
/// client's port and whether the server holds a TIME_WAIT for it, once the
/// side expected to hold one (the first to close) shows it.
fn one_exchange_then_close(server: &Server, request: &str, server_first: bool) -> (u16, bool) {
    let mut s = server.connect();
    let client_port = s.local_addr().unwrap().port();
    let server_port = server.addr.port();
    s.write_all(request.as_bytes()).unwrap();
    let mut rd = Reader::new();
    let r = rd.response(&mut s, false).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.closes());
    if server_first {
        let (rest, end) = rd.until_eof(&mut s);
        assert!(rest.is_empty() && end.is_ok());
    }
    drop(s);
    let deadline = Instant::now() + WAIT;
    loop {
        let pairs = time_wait_pairs();
        let server_side = pairs.contains(&(server_port, client_port));
        let client_side = pairs.contains(&(client_port, server_port));
        if (server_first && server_side) || (!server_first && client_side) {
            return (client_port, server_side);
        }
        assert!(Instant::now() < deadline, "no TIME_WAIT for port {client_port} appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn client_that_asked_to_close_carries_the_time_wait() {
    let server = Server::start(&[]);
    for _ in 0..3 {
        let (port, server_side) =
            one_exchange_then_close(&server, "GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", false);
        assert!(!server_side, "server holds TIME_WAIT for client port {port}");
    }
    assert!(server.status()["client_closes_first"] >= 3);
    // Control: when the server decides to close (request cap), it shuts
    // down first and the TIME_WAIT lands on its side: the check can tell.
    let capped = Server::start(&["--max-requests", "1"]);
    let (_, server_side) = one_exchange_then_close(&capped, "GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n", true);
    assert!(server_side, "control: a server-first close leaves TIME_WAIT on the server");
}

/// An HTTP/1.0 client that did not ask to keep the connection may take the
/// server's close as the end of the body (RFC 1945 §7.2.2; ApacheBench
/// without `-k` reads until EOF): the server shuts down first at once
/// instead of waiting out the client-first grace (1 s) for a FIN that only
/// comes after its own.
#[test]
fn http10_client_reading_until_eof_is_not_kept_waiting() {
    let server = Server::start(&[]);
    let before = server.status()["lingering_closes"];
    let started = Instant::now();
    for _ in 0..5 {
        let (port, server_side) = one_exchange_then_close(&server, "GET /hello.txt HTTP/1.0\r\n\r\n", true);
        assert!(server_side, "the server closed first, so it holds the TIME_WAIT for client port {port}");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2500), "5 exchanges took {took:?}: EOF waited for the grace period");
    assert!(server.status()["lingering_closes"] >= before + 5);
}
