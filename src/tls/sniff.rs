//! Plain HTTP sent to a TLS port.
//!
//! A TLS connection opens with a handshake record: content type 22 (0x16),
//! then the record version 0x03 0x0X (RFC 8446 §5.1; RFC 5246 §6.2.1). A
//! request line opens with a method token and a space (RFC 9112 §3;
//! the method is a token, RFC 9110 §9.1). The two cannot be confused: no
//! TLS content type is a token character. A client that spoke plain HTTP
//! gets a plain-text `400` saying the port speaks HTTPS, as nginx does
//! (its 497, sent as 400), instead of a TLS alert it cannot read; anything
//! else that is not TLS is left to rustls, which fails it and queues an
//! alert.

use crate::http::Status;
use crate::http::reply;

/// Longest method token recognised (RFC 9110 §9.1 sets no limit; the
/// longest registered method, `UPDATEREDIRECTREF`, has 17 characters).
const MAX_METHOD: usize = 20;

/// What the first bytes of a connection say it speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Hand the bytes to rustls (a TLS record, or garbage rustls will fail).
    Tls,
    /// A request line: answer `plain_http_response` in the clear.
    PlainHttp,
    /// Token characters so far and no space yet: wait for more bytes.
    Undecided,
}

/// Whether `first` starts like an HTTP request line: a method token of at
/// most `MAX_METHOD` characters, then a space.
pub fn looks_like_plain_http(first: &[u8]) -> bool {
    let method = first.iter().take_while(|&&b| is_tchar(b)).count();
    (1..=MAX_METHOD).contains(&method) && first.get(method) == Some(&b' ')
}

/// Classify a connection's first bytes (`fd::FIRST_BYTES` at most).
pub fn classify(first: &[u8]) -> Verdict {
    if looks_like_plain_http(first) {
        return Verdict::PlainHttp;
    }
    let method = first.iter().take_while(|&&b| is_tchar(b)).count();
    if method == first.len() && method <= MAX_METHOD {
        // Empty, or a token still arriving ("GE" of "GET "). A TLS record
        // starts with a control byte, so a ClientHello never waits here.
        Verdict::Undecided
    } else {
        Verdict::Tls
    }
}

/// RFC 9110 §5.6.2: `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

const BODY: &[u8] = b"400 Bad Request: this port speaks HTTPS; use an https:// URL.\n";

/// The answer to plain HTTP on a TLS port, appended to `out`: a `400` with
/// `Connection: close` and a body that says why. It is written in the
/// clear, straight to the socket (never through the TLS session), and the
/// connection then closes like any server-first close: shut the write
/// half, drain, close.
pub fn plain_http_response(out: &mut Vec<u8>, date: &[u8; 29]) {
    reply::start(out, Status::BAD_REQUEST, date);
    out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
    reply::content_length(out, BODY.len() as u64);
    reply::persist(out, reply::Persist::Close);
    reply::end(out);
    out.extend_from_slice(BODY);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_plain_http() {
        for line in
            [&b"GET / HTTP/1.1\r\n"[..], b"HEAD /x HTTP/1.0", b"OPTIONS * HTTP/1.1", b"PROPFIND ", b"M-SEARCH *"]
        {
            assert!(looks_like_plain_http(line), "{:?}", String::from_utf8_lossy(line));
            assert_eq!(classify(line), Verdict::PlainHttp);
        }
    }

    #[test]
    fn tls_records_and_garbage_are_not() {
        let client_hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
        let sslv2_hello = [0x80, 0x2e, 0x01, 0x00, 0x02];
        for bytes in [&client_hello[..], &sslv2_hello, b" GET /", b"GET\t/", b"\r\nGET / HTTP/1.1", b"hello\n"] {
            assert!(!looks_like_plain_http(bytes), "{bytes:?}");
            assert_eq!(classify(bytes), Verdict::Tls, "{bytes:?}");
        }
        assert!(!looks_like_plain_http(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ /"), "token too long for a method");
        assert_eq!(classify(b"ABCDEFGHIJKLMNOPQRSTUVWX"), Verdict::Tls, "24 token bytes and no space");
    }

    #[test]
    fn a_token_still_arriving_waits() {
        assert_eq!(classify(b""), Verdict::Undecided);
        assert_eq!(classify(b"GE"), Verdict::Undecided);
        assert_eq!(classify(b"OPTIONS"), Verdict::Undecided);
        assert_eq!(classify(b"OPTIONS "), Verdict::PlainHttp);
    }

    #[test]
    fn the_refusal_is_a_complete_close_delimited_400() {
        let mut out = Vec::new();
        plain_http_response(&mut out, b"Thu, 01 Jan 1970 00:00:00 GMT");
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(head.contains("\r\nConnection: close"));
        assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())));
        assert!(body.contains("HTTPS"));
    }
}
