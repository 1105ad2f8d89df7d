//! Tests of the service (`service/mod.rs`).

use super::*;
use crate::replay::{World, loopback};

pub(super) fn service(max_requests: u32) -> World {
    World::new(Limits { max_head: 8192, max_body: 1024, max_requests })
}

/// Feed `input` in pieces of `piece` bytes, serving everything that
/// becomes complete, as the server does; return all output.
pub(super) fn drive(svc: &mut World, input: &[u8], piece: usize) -> (String, Proto) {
    let mut proto = Proto::new();
    let mut out = Output::default();
    let mut buf = Vec::new();
    let mut consumed = 0;
    for chunk in input.chunks(piece.max(1)) {
        buf.extend_from_slice(chunk);
        loop {
            let (n, step) = svc.serve(&mut proto, &buf[consumed..], &mut out, loopback());
            consumed += n;
            if step != Step::Answered {
                break;
            }
        }
    }
    (String::from_utf8_lossy(&out.take_all()).into_owned(), proto)
}

#[test]
fn pipelined_requests_split_at_every_byte_give_the_same_responses() {
    let input = b"GET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcHEAD /hello.txt HTTP/1.1\r\nHost: a\r\n\r\nPOST /y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\nGET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let mut svc = service(100);
    let (whole, proto) = drive(&mut svc, input, input.len());
    let statuses: Vec<&str> = whole.split("HTTP/1.1 ").skip(1).map(|r| &r[..3]).collect();
    assert_eq!(statuses, ["200", "405", "200", "405", "404"]);
    assert!(whole.ends_with("Connection: close\r\n\r\n404 Not Found\n"));
    assert_eq!(proto.close_kind(), Some(CloseKind::ClientFirst));
    for piece in 1..input.len() {
        let (split, _) = drive(&mut svc, input, piece);
        let strip = |s: &str| s.replace(|c: char| c.is_ascii_digit(), "");
        assert_eq!(strip(&split), strip(&whole), "piece size {piece}");
    }
}

#[test]
fn request_cap_closes_server_first_and_stops_reading() {
    let mut svc = service(2);
    let one = b"GET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n";
    let (text, proto) = drive(&mut svc, &one.repeat(4), 1000);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2);
    assert!(text.contains("Keep-Alive: timeout=60, max=1\r\n"));
    assert_eq!(text.matches("Connection: close").count(), 1);
    assert_eq!(proto.close_kind(), Some(CloseKind::ServerFirst));
}

#[test]
fn oversized_body_gets_413_and_expect_closes() {
    let mut svc = service(100);
    let (text, proto) = drive(&mut svc, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n", 1000);
    assert!(text.starts_with("HTTP/1.1 413 Content Too Large\r\n"));
    assert_eq!(proto.close_kind(), Some(CloseKind::ServerFirst));
    let (text, proto) =
        drive(&mut svc, b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n", 1000);
    assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
    assert!(!text.contains("100 Continue"));
    assert_eq!(proto.close_kind(), Some(CloseKind::ServerFirst));
    let (text, _) = drive(&mut svc, b"POST / HTTP/1.1\r\nHost: a\r\n\r\n", 1000);
    assert!(text.starts_with("HTTP/1.1 411 Length Required\r\n"));
}

#[test]
fn chunked_body_over_limit_while_discarding_closes() {
    let mut svc = service(100);
    let body =
        format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n{}\r\n", "x".repeat(2048));
    let (text, proto) = drive(&mut svc, body.as_bytes(), 100);
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1);
    assert_eq!(proto.close_kind(), Some(CloseKind::ServerFirst));
}

#[test]
fn http2_preface_gets_goaway() {
    let mut svc = service(100);
    let (text, proto) = drive(&mut svc, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 1000);
    assert!(text.contains("use h2load --h1"));
    assert!(proto.is_done());
}

/// Found by the fuzz target: the preface after an HTTP/1.1 exchange got
/// the binary HTTP/2 refusal where the client reads a status line (a
/// malformed response). The preface is only one as a connection's first
/// bytes (RFC 9113 §3.4); later it is a request for HTTP/2.0: 505.
#[test]
fn http2_preface_after_a_request_gets_505() {
    let input = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    for piece in [1, 5, input.len()] {
        let mut svc = service(100);
        let (text, proto) = drive(&mut svc, input, piece);
        assert_eq!(crate::http::wellformed::check(text.as_bytes()), Ok(()), "{text}");
        let statuses: Vec<&str> = text.split("HTTP/1.1 ").skip(1).map(|r| &r[..3]).collect();
        assert_eq!(statuses, ["200", "505"], "{text}");
        assert!(text.ends_with("Connection: close\r\n\r\n505 HTTP Version Not Supported\n"), "{text}");
        assert_eq!(proto.close_kind(), Some(CloseKind::ServerFirst));
    }
}

/// Defect 14.9: a body with bad framing on a request whose handler
/// does not read it was answered 200 with keep-alive, then the
/// connection closed silently.
#[test]
fn a_body_nobody_reads_is_checked_before_the_answer() {
    for bad in ["zz\r\nab\r\n0\r\n\r\n", "2\rab\r\n0\r\n\r\n", "2\r\nabXX0\r\n\r\n"] {
        let mut svc = service(100);
        let req = format!("GET /hello.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{bad}");
        let (text, proto) = drive(&mut svc, req.as_bytes(), req.len());
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{bad:?}: {text}");
        assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{bad:?}: {text}");
        assert_eq!(proto.close_kind(), Some(CloseKind::ServerFirst));
    }
    let mut svc = service(100);
    let good = b"GET /hello.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n";
    for piece in [1, 7, good.len()] {
        let (text, proto) = drive(&mut svc, good, piece);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.contains("Keep-Alive"), "{text}");
        assert!(proto.close_kind().is_none());
    }
    // Past --max-body-bytes while discarding: 413, close.
    let long = format!(
        "GET /hello.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n{}\r\n",
        "x".repeat(2048)
    );
    let (text, proto) = drive(&mut svc, long.as_bytes(), 100);
    assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
    assert_eq!(proto.close_kind(), Some(CloseKind::ServerFirst));
}
