//! Tests of `parse.rs`.

use super::*;

fn head(input: &[u8]) -> Head<'_> {
    match parse_head(input, 8192) {
        Ok(Parsed::Head(h)) => h,
        other => panic!("expected a head, got {other:?}"),
    }
}

fn reject(input: &[u8]) -> u16 {
    match parse_head(input, 8192) {
        Err(r) => r.status.code(),
        other => panic!("expected a reject, got {other:?}"),
    }
}

#[test]
fn origin_form_with_query() {
    let h = head(b"GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((h.path, h.query), ("/a/b", "x=1"));
    assert!(h.keep_alive);
    assert_eq!(h.body, BodyLength::None);
    assert_eq!(h.len, 34);
}

#[test]
fn fragment_and_query_split_whichever_comes_first() {
    for (target, path, query) in [
        ("/a", "/a", ""),
        ("/a?", "/a", ""),
        ("/a#f", "/a", ""),
        ("/a?x#f", "/a", "x"),
        ("/a#f?x", "/a", ""),
        ("/a?x?y#f#g", "/a", "x?y"),
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
        let h = head(request.as_bytes());
        assert_eq!((h.path, h.query), (path, query), "{target}");
    }
}

#[test]
fn absolute_form_drops_authority() {
    let h = head(b"GET http://example.com/x?y HTTP/1.0\r\n\r\n");
    assert_eq!((h.path, h.query), ("/x", "y"));
    let h = head(b"GET HTTP://example.com HTTP/1.0\r\n\r\n");
    assert_eq!(h.path, "/");
}

#[test]
fn persistence_follows_version_and_connection() {
    assert!(!head(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
    assert!(head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    assert!(!head(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
}

#[test]
fn framing_rules() {
    assert_eq!(head(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n").body, BodyLength::Length(5));
    assert_eq!(head(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n").body, BodyLength::Length(5));
    assert_eq!(head(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n").body, BodyLength::Chunked);
    assert_eq!(reject(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"), 400);
    assert_eq!(reject(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n"), 400);
    assert_eq!(reject(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n"), 400);
    assert_eq!(reject(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
    assert_eq!(reject(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"), 400);
    assert_eq!(reject(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 501);
}

#[test]
fn host_values() {
    for ok in ["h", "example.com:8080", "[::1]:80", "127.0.0.1", "a-b_c.d:", "[fe80::1]"] {
        assert!(valid_host(ok.as_bytes()), "{ok}");
    }
    for ok in ["", ":80", "h:", "[::1]:"] {
        assert!(valid_host(ok.as_bytes()), "{ok}");
    }
    for bad in ["user@h", "h:http", "h h", "h/x", "[::1", "[zz]", "[::1]x", "a:b:80", "h:8a", "h::80", "[::1]:8x"] {
        assert!(!valid_host(bad.as_bytes()), "{bad}");
    }
}

#[test]
fn versions_and_limits() {
    assert_eq!(reject(b"GET / HTTP/1.1\r\n\r\n"), 400);
    assert_eq!(reject(b"GET / HTTP/2.0\r\n\r\n"), 505);
    assert_eq!(reject(b"GET / HTTP/1.2\r\n\r\n"), 505);
    assert_eq!(reject(b"GET / FTP/1.1\r\n\r\n"), 400);
    assert_eq!(reject(b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(9000));
    assert_eq!(reject(long.as_bytes()), 414);
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(9000));
    assert_eq!(reject(big.as_bytes()), 431);
}

#[test]
fn h2_preface_is_recognised_even_split() {
    assert!(matches!(parse_head(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 8192), Ok(Parsed::Http2Preface)));
    assert!(matches!(parse_head(b"PRI * HT", 8192), Ok(Parsed::Partial)));
}

#[test]
fn every_split_is_partial_until_complete() {
    let full = b"GET /x HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1\r\n\r\n";
    for cut in 0..full.len() {
        assert!(matches!(parse_head(&full[..cut], 8192), Ok(Parsed::Partial)), "cut at {cut} should be partial");
    }
    assert_eq!(head(full).range, Some(&b"bytes=0-1"[..]));
}

#[test]
fn a_field_looked_up_again() {
    let raw = b"GET / HTTP/1.1\r\nHost: a\r\norigin:  https://a.example \r\nX: y\r\n\r\n";
    assert_eq!(field(raw, "origin"), Some(&b"https://a.example"[..]));
    assert_eq!(field(raw, "Origin"), Some(&b"https://a.example"[..]));
    assert_eq!(field(raw, "referer"), None);
    let twice = b"GET / HTTP/1.1\r\nHost: a\r\nOrigin: https://a.example\r\nOrigin: https://b.example\r\n\r\n";
    assert_eq!(field(twice, "origin"), None, "sent twice: neither");
}
