//! CORS on the channel routes, on real sockets: the responses that end a
//! held long poll (a message, or the timeout's 204) carry the fields as
//! its own head would have; an event stream's head carries them. The
//! browser's side is scripts/cors-test.py (headless Chromium).

mod support;

use std::io::Write;

use support::{Reader, Server};

const PAGE: &str = "http://127.0.0.1:8081";

fn from(origin: &str) -> String {
    format!("Origin: {origin}\r\n")
}

#[test]
fn a_held_long_poll_is_answered_with_the_fields() {
    let server = Server::start(&["--cors-origin", PAGE, "--longpoll-timeout", "0.3"]);
    // Answered by a message.
    let mut s = server.connect();
    s.write_all(format!("GET /sub/news HTTP/1.1\r\nHost: t\r\n{}\r\n", from(PAGE)).as_bytes()).unwrap();
    server.wait_status("the long poll held", |st| st["held"] == 1);
    let r = server.request("POST /pub/news HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None, "a publish without Origin gets none");
    assert_eq!(r.header("vary"), Some("Origin"));
    let mut rd = Reader::new();
    let r = rd.response(&mut s, false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(PAGE));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert!(r.text().contains("\"data\":\"hello\""));
    // Answered by the timeout: 204, with the fields.
    s.write_all(format!("GET /sub/news?since=1 HTTP/1.1\r\nHost: t\r\n{}\r\n", from(PAGE)).as_bytes()).unwrap();
    let r = rd.response(&mut s, false).unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some(PAGE));
    // An origin not listed: the same answers, without CORS fields.
    s.write_all(b"GET /sub/news?since=1 HTTP/1.1\r\nHost: t\r\nOrigin: http://127.0.0.1:9\r\n\r\n").unwrap();
    let r = rd.response(&mut s, false).unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("vary"), Some("Origin"));
}

#[test]
fn an_event_stream_and_a_preflight() {
    let server = Server::start(&["--cors-origin", "*"]);
    let mut s = server.connect();
    s.write_all(b"GET /sub/news HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\nOrigin: https://x.example\r\n\r\n")
        .unwrap();
    let head = Reader::new().response_head(&mut s).unwrap();
    assert_eq!(head.header("content-type"), Some("text/event-stream; charset=utf-8"));
    assert_eq!(head.header("access-control-allow-origin"), Some("*"));
    assert_eq!(head.header("access-control-allow-credentials"), None);
    let r = server.request(
        "OPTIONS /pub/news HTTP/1.1\r\nHost: t\r\nOrigin: https://x.example\r\nAccess-Control-Request-Method: POST\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-methods"), Some("POST, OPTIONS"));
    assert_eq!(r.header("access-control-allow-headers"), Some("Authorization, Content-Type, Last-Event-ID"));
    assert_eq!(r.header("access-control-max-age"), Some("7200"));
    // The hot path is untouched: static files carry nothing of it.
    let r =
        server.request("GET /hello.txt HTTP/1.1\r\nHost: t\r\nOrigin: https://x.example\r\nConnection: close\r\n\r\n");
    assert!(r.headers.iter().all(|(k, _)| !k.to_ascii_lowercase().starts_with("access-control")), "{:?}", r.headers);
}

#[test]
fn bad_origins_are_one_line_and_exit_2() {
    for value in ["example.com", "https://example.com/"] {
        let out =
            std::process::Command::new(env!("CARGO_BIN_EXE_linger")).args(["--cors-origin", value]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.starts_with("linger: invalid value") && stderr.lines().count() == 1, "{stderr}");
    }
}
