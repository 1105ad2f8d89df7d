//! HTTPS in the same loop: real clients (curl, `openssl s_client`, rustls)
//! against a certificate authority made at test time, and every closing
//! scenario of `closing.rs` over TLS: `close_notify`, then the write half
//! shut, then the drain; never a reset (seed 000; RFC 8446 §6.1).

mod support;

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::tls::{self, Pki, TlsStream};
use support::{Reader, Server, WAIT};

const GET: &[u8] = b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n";

fn start(pki: &Pki, extra: &[&str]) -> Server {
    let tls_args = pki.args();
    let mut args: Vec<&str> = tls_args.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn is_reset(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted)
}

/// Responses read off a TLS stream with the strict reader.
fn responses(s: &mut TlsStream, n: usize) -> Vec<support::Response> {
    let mut rd = Reader::new();
    (0..n).map(|i| rd.response(s, false).unwrap_or_else(|e| panic!("response {i}: {e}"))).collect()
}

#[test]
fn one_process_serves_http_and_https_and_curl_trusts_the_test_ca() {
    let pki = Pki::new("curl");
    let server = start(&pki, &[]);
    assert_eq!(server.get("/hello.txt").body, b"Hello, World!", "plain HTTP beside HTTPS");
    let Some(addr) = server.tls_addr else { panic!("no https line") };
    let url = format!("https://localhost:{}/hello.txt", addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", addr.port());
    let out = Command::new("curl")
        .args(["-sS", "--http1.1", "--cacert", pki.ca_path.to_str().unwrap(), "--resolve", &resolve, &url, &url])
        .output();
    let Ok(out) = out else {
        eprintln!("curl not found: skipped");
        return;
    };
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"Hello, World!Hello, World!", "two requests, one connection");
}

#[test]
fn openssl_s_client_completes_a_handshake_and_gets_an_answer() {
    let pki = Pki::new("openssl");
    let server = start(&pki, &[]);
    let addr = server.tls_addr.unwrap();
    let child = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", &addr.to_string(), "-CAfile", pki.ca_path.to_str().unwrap()])
        .args(["-servername", "localhost", "-verify_return_error", "-alpn", "http/1.1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("openssl not found: skipped");
        return;
    };
    child.stdin.take().unwrap().write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("Hello, World!"), "{text}\n{}", {
        String::from_utf8_lossy(&out.stderr)
    });
}

#[test]
fn keep_alive_and_a_hundred_pipelined_requests_over_tls() {
    let pki = Pki::new("pipeline");
    let server = start(&pki, &[]);
    let mut s = tls::connect(server.tls_addr.unwrap(), &pki.default_client());
    tls::send(&mut s, &GET.repeat(100)).unwrap();
    for (i, r) in responses(&mut s, 100).iter().enumerate() {
        assert_eq!((r.status, r.body.as_slice()), (200, &b"Hello, World!"[..]), "response {i}");
        assert!(!r.closes());
    }
    tls::send(&mut s, GET).unwrap();
    assert_eq!(responses(&mut s, 1)[0].status, 200, "the connection lives on");
    assert_eq!(s.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[test]
fn tls_1_2_and_1_3_both_work_and_sessions_resume() {
    let pki = Pki::new("versions");
    let server = start(&pki, &[]);
    let addr = server.tls_addr.unwrap();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let config = pki.client(&[version], &[b"http/1.1"]);
        for round in 0..2 {
            let mut s = tls::connect(addr, &config);
            tls::send(&mut s, b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
            assert_eq!(responses(&mut s, 1)[0].status, 200);
            let resumed = s.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            assert_eq!(resumed, round == 1, "{version:?} round {round}: {:?}", s.conn.handshake_kind());
            let (rest, end) = tls::until_end(&mut s);
            assert!(rest.is_empty() && end.is_ok(), "close_notify, then EOF: {end:?}");
        }
    }
}

#[test]
fn a_client_offering_only_h2_is_refused_cleanly() {
    let pki = Pki::new("alpn");
    let server = start(&pki, &[]);
    let mut s = tls::connect(server.tls_addr.unwrap(), &pki.client(rustls::DEFAULT_VERSIONS, &[b"h2"]));
    let e = tls::handshake(&mut s).expect_err("no protocol in common");
    assert!(e.to_string().contains("NoApplicationProtocol"), "{e}");
    let started = Instant::now();
    let mut rest = [0u8; 64];
    assert!(matches!(s.sock.read(&mut rest), Ok(0)), "then a clean close");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn garbage_instead_of_a_client_hello_is_closed_cleanly() {
    let pki = Pki::new("garbage");
    let server = start(&pki, &[]);
    let mut s = TcpStream::connect(server.tls_addr.unwrap()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap();
    let (bytes, end) = Reader::new().until_eof(&mut s);
    assert!(end.is_ok(), "an alert at most, then EOF, never a reset: {end:?}");
    assert!(bytes.len() < 64 && bytes.first().is_none_or(|&b| b == 0x15), "an alert record: {bytes:?}");
}

#[test]
fn plain_http_sent_to_the_tls_port_gets_a_400_in_the_clear() {
    let pki = Pki::new("plain");
    let server = start(&pki, &[]);
    let mut s = TcpStream::connect(server.tls_addr.unwrap()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(GET).unwrap();
    let mut rd = Reader::new();
    let r = rd.response(&mut s, false).unwrap();
    assert_eq!(r.status, 400);
    assert!(r.closes() && r.text().contains("HTTPS"), "{}", r.text());
    assert!(rd.until_eof(&mut s).1.is_ok());
}

#[test]
fn a_silent_or_stalled_handshake_is_reaped_by_the_header_timeout() {
    let pki = Pki::new("slowhello");
    let server = start(&pki, &["--header-timeout", "0.3"]);
    let addr = server.tls_addr.unwrap();
    let mut silent = TcpStream::connect(addr).unwrap();
    let mut stalled = TcpStream::connect(addr).unwrap();
    // The first bytes of a ClientHello record, then nothing.
    stalled.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]).unwrap();
    for s in [&mut silent, &mut stalled] {
        s.set_read_timeout(Some(WAIT)).unwrap();
        let started = Instant::now();
        let (_, end) = Reader::new().until_eof(s);
        assert!(end.is_ok(), "a clean close: {end:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "reaped by the header timeout");
    }
    assert!(server.status()["header_timeouts"] >= 2);
}

/// `closing.rs`, scenario 1, over TLS: 15 pipelined requests and
/// `--max-requests 5`: exactly five answers, then `close_notify` and EOF.
#[test]
fn request_cap_over_tls_answers_exactly_five_then_close_notify() {
    let pki = Pki::new("cap");
    let server = start(&pki, &["--max-requests", "5"]);
    for _ in 0..3 {
        let mut s = tls::connect(server.tls_addr.unwrap(), &pki.default_client());
        let batch: Vec<u8> = (0..15)
            .flat_map(|i| {
                format!("GET /hello.txt?n={i} HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n", "p".repeat(4000)).into_bytes()
            })
            .collect();
        tls::send(&mut s, &batch).unwrap();
        let rs = responses(&mut s, 5);
        assert!(rs.iter().enumerate().all(|(i, r)| r.status == 200 && r.closes() == (i == 4)));
        let (rest, end) = tls::until_end(&mut s);
        assert!(rest.is_empty(), "nothing after the fifth: {} bytes", rest.len());
        assert!(end.is_ok(), "close_notify then EOF, never a reset: {end:?}");
    }
}

/// Scenario 2 over TLS: the 413 reaches a client still sending its body.
#[test]
fn early_413_over_tls_reaches_a_client_still_sending_its_body() {
    let pki = Pki::new("413");
    let server = start(&pki, &["--max-body-bytes", "1024"]);
    let mut s = tls::connect(server.tls_addr.unwrap(), &pki.default_client());
    let body = vec![b'u'; 4 << 20];
    let head = format!("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len());
    let wrote = tls::send(&mut s, head.as_bytes()).and_then(|()| tls::send(&mut s, &body));
    assert!(wrote.is_ok(), "the whole body could be sent: {wrote:?}");
    let (bytes, end) = tls::until_end(&mut s);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 413 ") && text.ends_with("413 Content Too Large\n"), "{text}");
    assert!(end.is_ok(), "close_notify then EOF: {end:?}");
}

/// Scenario 3 over TLS: a client that sends its requests and then its
/// `close_notify` and FIN still gets every answer.
#[test]
fn half_closed_tls_client_gets_all_its_responses() {
    let pki = Pki::new("half");
    let server = start(&pki, &[]);
    let config = pki.client(&[&rustls::version::TLS13], &[b"http/1.1"]);
    let mut s = tls::connect(server.tls_addr.unwrap(), &config);
    tls::send(&mut s, &GET.repeat(3)).unwrap();
    tls::half_close(&mut s);
    assert!(responses(&mut s, 3).iter().all(|r| r.body == b"Hello, World!"));
    let (rest, end) = tls::until_end(&mut s);
    assert!(rest.is_empty() && end.is_ok(), "then the server's close_notify: {end:?}");
}

/// Scenario 4 over TLS: the client that asked to close closes first; the
/// server's `close_notify` tells it the exchange is over.
#[test]
fn a_tls_client_that_asked_to_close_is_told_with_close_notify() {
    let pki = Pki::new("clientfirst");
    let server = start(&pki, &[]);
    let mut s = tls::connect(server.tls_addr.unwrap(), &pki.default_client());
    tls::send(&mut s, b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let r = &responses(&mut s, 1)[0];
    assert!(r.closes());
    let started = Instant::now();
    let (rest, end) = tls::until_end(&mut s);
    assert!(rest.is_empty() && end.is_ok(), "{end:?}");
    assert!(started.elapsed() < Duration::from_millis(500), "close_notify comes with the answer");
    drop(s);
    server.wait_status("the client to close first", |st| st["client_closes_first"] >= 1);
}

/// Scenario 5 over TLS: idle connections reaped, or evicted for a
/// newcomer, get `close_notify` and a FIN, and a late request is drained.
#[test]
fn reaped_and_evicted_tls_connections_close_with_close_notify() {
    let pki = Pki::new("idle");
    let server = start(&pki, &["--idle-timeout", "0.3", "--max-conns", "3"]);
    let addr = server.tls_addr.unwrap();
    let config = pki.default_client();
    let idle = |_| {
        let mut s = tls::connect(addr, &config);
        tls::send(&mut s, GET).unwrap();
        responses(&mut s, 1);
        s
    };
    let mut reaped = idle(0);
    let (rest, end) = tls::until_end(&mut reaped);
    assert!(rest.is_empty() && end.is_ok(), "reaped: close_notify then EOF, {end:?}");
    let mut oldest = idle(0);
    let _others: Vec<TlsStream> = (0..2).map(idle).collect();
    let _newcomer = idle(0);
    let (rest, end) = tls::until_end(&mut oldest);
    assert!(rest.is_empty() && end.is_ok(), "evicted: close_notify then EOF, {end:?}");
    let late = oldest.sock.write_all(b"late bytes after the close");
    assert!(late.is_ok(), "drained, not reset: {late:?}");
    assert!(server.status()["evicted"] >= 1);
}

/// The upload scenario without lingering shows the reset: the TLS tests
/// above can fail.
#[test]
fn without_lingering_tls_shows_the_reset_too() {
    let pki = Pki::new("abortive");
    let mut args: Vec<String> = pki.args();
    args.extend(["--max-body-bytes".into(), "1024".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_env(&args, &[("LINGER_TEST_ABORTIVE_CLOSE", "1")]);
    let mut s = tls::connect(server.tls_addr.unwrap(), &pki.default_client());
    let body = vec![b'u'; 4 << 20];
    let head = format!("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len());
    let wrote = tls::send(&mut s, head.as_bytes()).and_then(|()| tls::send(&mut s, &body));
    let (_, end) = tls::until_end(&mut s);
    let reset = wrote.as_ref().is_err_and(is_reset) || end.as_ref().is_err_and(is_reset);
    assert!(reset, "expected a reset: write {wrote:?}, read {end:?}");
}

/// SIGHUP loads a renewed certificate: new handshakes present it, no
/// request fails meanwhile, and a bad pair is refused with the old kept.
#[test]
fn certificate_reload_under_load_loses_no_request() {
    let pki = Arc::new(Pki::new("reload"));
    let server = start(&pki, &[]);
    let addr = server.tls_addr.unwrap();
    let config = pki.default_client();
    let first = {
        let mut s = tls::connect(addr, &config);
        tls::handshake(&mut s).unwrap();
        tls::peer_subject(&s)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = (0..3)
        .map(|n| {
            let (stop, done, config) = (stop.clone(), done.clone(), config.clone());
            std::thread::spawn(move || -> Result<(), String> {
                while !stop.load(Ordering::Relaxed) {
                    // Even threads keep their connection, odd ones handshake each time.
                    let mut s = tls::connect(addr, &config);
                    for _ in 0..if n % 2 == 0 { 20 } else { 1 } {
                        tls::send(&mut s, GET).map_err(|e| format!("send: {e}"))?;
                        let r = Reader::new().response(&mut s, false).map_err(|e| format!("read: {e}"))?;
                        if r.status != 200 {
                            return Err(format!("status {}", r.status));
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            })
        })
        .collect();
    for round in 0..3 {
        pki.issue(&format!("renewed-{round}"));
        server.signal(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(100));
    }
    // A broken pair: the key of another certificate.
    let good_key = std::fs::read(&pki.key_path).unwrap();
    let other = Pki::new("reload-other");
    std::fs::write(&pki.key_path, std::fs::read(&other.key_path).unwrap()).unwrap();
    server.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap().unwrap_or_else(|e| panic!("a request failed during reloads: {e}"));
    }
    assert!(done.load(Ordering::Relaxed) > 50);
    // A fresh client: a resumed session would show the first certificate.
    let mut s = tls::connect(addr, &pki.default_client());
    tls::handshake(&mut s).expect("the last good pair still serves");
    assert_ne!(tls::peer_subject(&s), first, "new handshakes present the renewed certificate");
    std::fs::write(&pki.key_path, good_key).unwrap();
}

/// A certificate or key that cannot be used is a bad argument: one line
/// naming the file, exit code 2, before anything is bound.
#[test]
fn bad_certificates_or_keys_are_one_line_and_exit_2() {
    let pki = Pki::new("badfiles");
    let garbage = pki.dir.write("garbage.pem", b"not a certificate");
    let other = Pki::new("badfiles-other");
    let cases: [(&str, &std::path::Path, &std::path::Path); 3] = [
        ("missing", std::path::Path::new("/nonexistent/cert.pem"), &pki.key_path),
        ("garbage", &garbage, &pki.key_path),
        ("mismatched", &pki.cert_path, &other.key_path),
    ];
    for (what, cert, key) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_linger"))
            .args(["--tls-listen", "127.0.0.1:0", "--tls-cert", cert.to_str().unwrap(), "--tls-key"])
            .arg(key)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: one line: {err}");
        assert!(out.stdout.is_empty(), "{what}: nothing bound");
    }
}

/// `--tls-listen` alone serves HTTPS only: one `listening on https://`
/// line, and nothing on the default plain port.
#[test]
fn tls_listen_alone_serves_https_only() {
    let pki = Pki::new("only");
    let mut child = Command::new(env!("CARGO_BIN_EXE_linger"))
        .args(pki.args())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on https://").unwrap_or_else(|| panic!("{line:?}"));
    let mut s = tls::connect(addr.parse().unwrap(), &pki.default_client());
    tls::send(&mut s, GET).unwrap();
    assert_eq!(responses(&mut s, 1)[0].status, 200);
    let _ = child.kill();
    let _ = child.wait();
}
