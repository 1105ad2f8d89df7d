//! Hostile and malformed requests, one table row each.
//!
//! Every row is sent on its own connection to one running server and is
//! judged on two things: the status, and what happens to the connection
//! afterwards. The second matters as much as the first. A server that
//! answers a smuggling attempt with the right status but keeps reading the
//! connection has lost track of where the next request starts (RFC 9112
//! §6.3, §11.2); a server that closes on a plain 404 throws away a healthy
//! connection.
//!
//! All rows run, and every mismatch is reported in one failure message, so
//! a single run shows the whole picture.

mod support;

use std::any::Any;
use std::io::{ErrorKind, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use support::{Reader, Server, TempDir};

/// The request every keep-alive row sends second, on the same connection.
/// Also used as the "smuggled" request after a broken body: it must never be
/// answered there.
const FOLLOW_UP: &[u8] = b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n";
const FOLLOW_UP_BODY: &[u8] = b"Hello, World!";

/// The body limit the main server runs with: small, so that the "body too
/// large" rows need only a few kilobytes on the wire.
const MAX_BODY: usize = 4096;

/// What must happen to the connection after the row's response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    /// The head was refused, the body will not be read, or the exchange is
    /// the last one anyway (HTTP/1.0): the response says
    /// `Connection: close`, then the server closes gracefully. The client
    /// reads a clean EOF (never a reset) and no further bytes.
    Close,
    /// The error leaves framing intact: the response carries `Keep-Alive`,
    /// and a second request on the same connection is answered.
    KeepAlive,
}

struct Row {
    name: &'static str,
    request: Vec<u8>,
    status: u16,
    after: After,
    /// A field the response must carry, such as `Allow` on a 405.
    field: Option<(&'static str, &'static str)>,
}

fn row(name: &'static str, request: impl AsRef<[u8]>, status: u16, after: After) -> Row {
    Row { name, request: request.as_ref().to_vec(), status, after, field: None }
}

impl Row {
    fn with(mut self, name: &'static str, value: &'static str) -> Row {
        self.field = Some((name, value));
        self
    }
}

fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: t\r\nUser-Agent: hostile-test\r\n\r\n").into_bytes()
}

/// A chunked POST to a static file with `body` as its (possibly broken)
/// chunked content, followed by a pipelined GET that must not be answered
/// if the body's framing is broken.
fn post_chunked(body: impl AsRef<[u8]>) -> Vec<u8> {
    let mut r =
        b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    r.extend_from_slice(body.as_ref());
    r.extend_from_slice(FOLLOW_UP);
    r
}

const ALLOW: &str = "GET, HEAD, OPTIONS";

/// The rows served by the built-in site. One row per line, so the table
/// reads as a table.
#[rustfmt::skip]
fn rows() -> Vec<Row> {
    use After::{Close, KeepAlive};
    let many_fields: String = (0..65).map(|i| format!("X-Field-{i}: {i}\r\n")).collect();
    vec![
        // --- Controls: the harness itself must pass these. ---
        row("plain GET", FOLLOW_UP, 200, KeepAlive),
        row("HEAD", b"HEAD /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n", 200, KeepAlive),
        // --- Message parsing and line endings (RFC 9112 §2.2). ---
        // §2.2: a server SHOULD ignore at least one empty line before the
        // request line (left over from a previous POST body, for instance).
        row("empty line before the request line", b"\r\nGET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n", 200, KeepAlive),
        // §2.2: a recipient MAY recognise a bare LF as a line terminator.
        row("bare LF line endings", b"GET /hello.txt HTTP/1.1\nHost: t\n\n", 200, KeepAlive),
        // §2.2: a bare CR anywhere but before LF is invalid.
        row("bare CR ends the request line", b"GET /hello.txt HTTP/1.1\rHost: t\r\n\r\n", 400, Close),
        row("bare CR inside a field value", b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 10.0.0.1\rX-Admin: 1\r\n\r\n", 400, Close),
        // RFC 9110 §5.5: NUL and other controls are not field-vchar.
        row("NUL in a field value", b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nCookie: id=1\x00admin=1\r\n\r\n", 400, Close),
        row("control byte in a field value", b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nUser-Agent: curl\x01\r\n\r\n", 400, Close),
        row("DEL in a field value", b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nUser-Agent: curl\x7f\r\n\r\n", 400, Close),
        // RFC 9110 §5.5: obs-text is tolerated in field values.
        row("obs-text in a field value", b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nUser-Agent: caf\xe9\r\n\r\n", 200, KeepAlive),
        // §5.2: a server MUST reject obs-fold (or replace it with SP); it
        // hides one field inside another.
        row("obs-fold continuation with a space", b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nX-Note: first\r\n second\r\n\r\n", 400, Close),
        row("obs-fold continuation with a tab", b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nX-Note: a\r\n\tTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", 400, Close),
        // §5.1: whitespace between field name and colon MUST be rejected
        // with 400; proxies disagree on whether such a field exists.
        row("space before the colon", b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc", 400, Close),
        row("tab before the colon", b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length\t: 3\r\n\r\nabc", 400, Close),
        // RFC 9110 §5.1: a field name is a token.
        row("space inside a field name", b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nX Forwarded For: 10.0.0.1\r\n\r\n", 400, Close),
        row("empty field name", b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n: orphan\r\n\r\n", 400, Close),
        row("field line without a colon", b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nNoColonHere\r\n\r\n", 400, Close),
        row("non-token byte in a field name", b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nX-(Admin): 1\r\n\r\n", 400, Close),
        // --- Size limits (RFC 9112 §3 and RFC 6585 §5). ---
        row("more than 64 header fields", format!("GET /hello.txt HTTP/1.1\r\nHost: t\r\n{many_fields}\r\n"), 431, Close),
        row("head over --max-header-bytes", format!("GET /hello.txt HTTP/1.1\r\nHost: t\r\nCookie: session={}\r\n\r\n", "a".repeat(9000)), 431, Close),
        // §3: a server that receives a request-target longer than any URI
        // it wishes to parse MUST respond 414.
        row("request line over --max-header-bytes", format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(9000)), 414, Close),
        // --- Request line and version (RFC 9112 §2.3, §3). ---
        // 505 for any other version is this server's policy. For HTTP/1.2,
        // RFC 9110 §2.5 suggests (SHOULD) serving it as 1.1 instead; the
        // parser only knows 1.0 and 1.1, so refusing clearly is the choice.
        row("HTTP/1.2", b"GET /hello.txt HTTP/1.2\r\nHost: t\r\n\r\n", 505, Close),
        row("HTTP/2.0 in an HTTP/1 request line", b"GET /hello.txt HTTP/2.0\r\nHost: t\r\n\r\n", 505, Close),
        row("HTTP/3.0", b"GET /hello.txt HTTP/3.0\r\nHost: t\r\n\r\n", 505, Close),
        row("HTTP/0.9 request without a version", b"GET /hello.txt\r\n\r\n", 400, Close),
        row("FTP/1.1 protocol name", b"GET /hello.txt FTP/1.1\r\nHost: t\r\n\r\n", 400, Close),
        row("garbage version", b"GET /hello.txt HTTP/one\r\nHost: t\r\n\r\n", 400, Close),
        // §2.3: HTTP-name is case-sensitive.
        row("lowercase http/1.1", b"GET /hello.txt http/1.1\r\nHost: t\r\n\r\n", 400, Close),
        row("trailing space after the version", b"GET /hello.txt HTTP/1.1 \r\nHost: t\r\n\r\n", 400, Close),
        // §3: an invalid request line SHOULD get 400 (or a 301 to the
        // properly encoded target); never a 505 for a good version token.
        row("space inside the target", b"GET /hello world.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400, Close),
        row("two spaces after the method", b"GET  /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400, Close),
        row("tab as the request line separator", b"GET\t/hello.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400, Close),
        row("control byte in the target", b"GET /hello\x01.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400, Close),
        row("NUL in the target", b"GET /hello.txt\x00.png HTTP/1.1\r\nHost: t\r\n\r\n", 400, Close),
        row("DEL in the target", b"GET /hello\x7f.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400, Close),
        // --- Request target forms (RFC 9112 §3.2). ---
        // §3.2.4: asterisk-form is only for OPTIONS.
        row("asterisk-form for GET", b"GET * HTTP/1.1\r\nHost: t\r\n\r\n", 400, Close),
        row("OPTIONS *", b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n", 200, KeepAlive).with("Allow", ALLOW),
        // §3.2.2: servers MUST accept absolute-form, and the authority in
        // the target wins over Host.
        row("absolute-form", b"GET http://t/hello.txt HTTP/1.1\r\nHost: t\r\n\r\n", 200, KeepAlive),
        row("absolute-form with a different Host", b"GET http://t/hello.txt HTTP/1.1\r\nHost: internal.example\r\n\r\n", 200, KeepAlive),
        row("absolute-form without Host", b"GET http://t/hello.txt HTTP/1.1\r\n\r\n", 400, Close),
        row("unsupported scheme in absolute-form", b"GET ftp://t/hello.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400, Close),
        // §3.2.3: authority-form is only for CONNECT.
        row("authority-form for GET", b"GET t:80 HTTP/1.1\r\nHost: t:80\r\n\r\n", 400, Close),
        row("target without a leading slash", b"GET hello.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400, Close),
        // --- Paths. A bad path is the resource's problem, not framing's. ---
        row("dot-dot segments", get("/../../etc/passwd"), 400, KeepAlive),
        row("dot-dot after a real segment", get("/css/../../etc/passwd"), 400, KeepAlive),
        row("dot-dot in the query is not a path", get("/hello.txt?file=../../etc/passwd"), 200, KeepAlive),
        row("dot file", get("/.git/config"), 404, KeepAlive),
        row("missing file", get("/wp-login.php"), 404, KeepAlive),
        // --- Methods (RFC 9110 §9, §15.5.6, §15.6.2). ---
        row("POST to a static file", b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello", 405, KeepAlive).with("Allow", ALLOW),
        row("PUT to a static file", b"PUT /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nowned", 405, KeepAlive).with("Allow", ALLOW),
        row("DELETE", b"DELETE /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n", 405, KeepAlive).with("Allow", ALLOW),
        row("PATCH with a body", b"PATCH /index.html HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", 405, KeepAlive).with("Allow", ALLOW),
        // Cross-site tracing: TRACE must not echo the Cookie back.
        row("TRACE", b"TRACE / HTTP/1.1\r\nHost: t\r\nCookie: session=secret\r\n\r\n", 405, KeepAlive).with("Allow", ALLOW),
        row("CONNECT in authority-form", b"CONNECT internal.example:443 HTTP/1.1\r\nHost: internal.example:443\r\n\r\n", 405, KeepAlive).with("Allow", ALLOW),
        // §9.1: an unrecognised method gets 501; method names are
        // case-sensitive, so "get" is unrecognised too.
        row("unknown method", b"BREW /pot HTTP/1.1\r\nHost: t\r\n\r\n", 501, KeepAlive),
        row("lowercase method", b"get /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n", 501, KeepAlive),
        row("non-token byte in the method", b"GE(T /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400, Close),
        // RFC 9110 §15.5.12: a POST with neither length nor chunking.
        row("POST without a length", b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n\r\n", 411, KeepAlive),
        // RFC 9110 §15.5.14: the body is not read, so the connection ends.
        row("Content-Length over --max-body-bytes", format!("POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1), 413, Close),
        // RFC 9110 §10.1.1: answering without a 100 Continue leaves the
        // client free to send the body or not, so the next request cannot
        // be found: close. (A 100 here would show up as the status.)
        row("Expect: 100-continue to a static file", b"PUT /upload.bin HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n", 405, Close),
        // RFC 9110 §10.1.1: an expectation the server cannot meet gets 417.
        row("unknown expectation", b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nExpect: 200-ok\r\n\r\n", 417, Close),
        row("Expect: 100-continue without a body", b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\r\n", 200, KeepAlive),
        // RFC 9110 §7.8: a server MAY ignore Upgrade; an h2c attempt is
        // simply answered in HTTP/1.1.
        row("h2c upgrade request", b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", 200, KeepAlive),
        // --- Host (RFC 9112 §3.2, RFC 9110 §7.2). ---
        // §3.2: a server MUST answer 400 to an HTTP/1.1 request without
        // Host, with more than one Host, or with an invalid Host value.
        row("HTTP/1.1 without Host", b"GET /hello.txt HTTP/1.1\r\nUser-Agent: x\r\n\r\n", 400, Close),
        row("two Host fields", b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nHost: internal.example\r\n\r\n", 400, Close),
        row("Host with a space", b"GET /hello.txt HTTP/1.1\r\nHost: t internal.example\r\n\r\n", 400, Close),
        row("Host with a slash", b"GET /hello.txt HTTP/1.1\r\nHost: t/admin\r\n\r\n", 400, Close),
        row("Host with userinfo", b"GET /hello.txt HTTP/1.1\r\nHost: user@t\r\n\r\n", 400, Close),
        row("Host with a non-numeric port", b"GET /hello.txt HTTP/1.1\r\nHost: t:http\r\n\r\n", 400, Close),
        // §3.2: an empty Host is what a client sends when the target has no
        // authority; it is valid.
        row("empty Host", b"GET /hello.txt HTTP/1.1\r\nHost:\r\n\r\n", 200, KeepAlive),
        // HTTP/1.0 has no Host requirement and closes by default (§9.3).
        row("HTTP/1.0 without Host", b"GET /hello.txt HTTP/1.0\r\n\r\n", 200, Close),
        // --- Body framing and smuggling (RFC 9112 §6.1, §6.3). ---
        // §6.3 (3): Content-Length with Transfer-Encoding is a smuggling
        // signature; this server refuses it outright and closes.
        row("Content-Length and Transfer-Encoding (CL.TE)", b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", 400, Close),
        row("Transfer-Encoding and Content-Length (TE.CL)", b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n", 400, Close),
        // §6.3 (5): differing lengths are unrecoverable.
        row("two different Content-Length fields", b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, Close),
        row("Content-Length list with different values", b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 6\r\n\r\nhello!", 400, Close),
        // §6.3 (5): identical repeated values MAY be accepted as one.
        row("two identical Content-Length fields", b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 405, KeepAlive),
        row("Content-Length list with identical values", b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello", 405, KeepAlive),
        // §6.3 (5) and RFC 9110 §8.6: Content-Length is 1*DIGIT.
        row("Content-Length with a plus sign", b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello", 400, Close),
        row("negative Content-Length", b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400, Close),
        row("hexadecimal Content-Length", b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 0x10\r\n\r\n0123456789abcdef", 400, Close),
        row("Content-Length with inner space", b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length:  5 5\r\n\r\nhello", 400, Close),
        row("Content-Length that overflows 64 bits", b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 18446744073709551621\r\n\r\nhello", 400, Close),
        row("empty Content-Length", b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: \r\n\r\n", 400, Close),
        // §6.3 (4): chunked not final means the length cannot be known:
        // 400 and close.
        row("Transfer-Encoding chunked, gzip", b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400, Close),
        row("Transfer-Encoding gzip alone", b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n", 400, Close),
        row("Transfer-Encoding identity", b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n", 400, Close),
        row("Transfer-Encoding with a lookalike coding", b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400, Close),
        row("two Transfer-Encoding fields", b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, Close),
        // §6.1: a coding the server does not implement gets 501.
        row("Transfer-Encoding gzip, chunked", b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, Close),
        // Coding names are case-insensitive (§7).
        row("Transfer-Encoding Chunked in mixed case", b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: ChUnKeD\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 405, KeepAlive),
        // §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty
        // framing; answer it, then close.
        row("HTTP/1.0 with Transfer-Encoding", b"POST /hello.txt HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 405, Close),
        // A body on GET or HEAD has no meaning (RFC 9110 §9.3.1) but its
        // framing is valid: it is read and discarded.
        row("GET with a body", b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", 200, KeepAlive),
        row("HEAD with a chunked body", b"HEAD /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 200, KeepAlive),
        // --- Chunked bodies (RFC 9112 §7.1). A body nobody reads is read to
        // its end before the answer: broken framing gets 400 and a close,
        // and the request pipelined behind it is never answered. ---
        row("valid chunked body with extension and trailer", b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;note=ok\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n", 405, KeepAlive),
        row("chunk size not hexadecimal", post_chunked(b"zz\r\nhello\r\n0\r\n\r\n"), 400, Close),
        row("chunk size of 17 hex digits", post_chunked(b"10000000000000005\r\nhello\r\n0\r\n\r\n"), 400, Close),
        row("negative chunk size", post_chunked(b"-5\r\nhello\r\n0\r\n\r\n"), 400, Close),
        row("chunk size line ended by bare LF", post_chunked(b"5\nhello\r\n0\r\n\r\n"), 400, Close),
        row("chunk data without CRLF after it", post_chunked(b"5\r\nhelloXX0\r\n\r\n"), 400, Close),
        row("chunk data longer than its size", post_chunked(b"3\r\nhello\r\n0\r\n\r\n"), 400, Close),
        row("chunk extension over 1024 bytes", post_chunked(format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(2000))), 400, Close),
        row("trailer section over 8192 bytes", post_chunked(format!("5\r\nhello\r\n0\r\nX-Pad: {}\r\n\r\n", "t".repeat(9000))), 400, Close),
        row("chunked body over --max-body-bytes", post_chunked(format!("{:x}\r\n{}\r\n0\r\n\r\n", MAX_BODY + 1000, "x".repeat(MAX_BODY + 1000))), 413, Close),
        // --- Conditionals and ranges: errors that keep framing. ---
        // RFC 9110 §14.2 / §15.5.17.
        row("unsatisfiable range", b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=100-200\r\n\r\n", 416, KeepAlive).with("Content-Range", "bytes */13"),
        // RFC 9110 §14.1.1: last < first makes the range invalid: ignored.
        row("reversed range", b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=5-2\r\n\r\n", 200, KeepAlive),
        // RFC 9110 §14.2: a server MAY ignore many overlapping ranges
        // (a bandwidth amplification attack).
        row("many overlapping ranges", format!("GET /hello.txt HTTP/1.1\r\nHost: t\r\nRange: bytes={}0-\r\n\r\n", "0-,".repeat(200)), 200, KeepAlive),
        // RFC 9110 §13.1.1.
        row("If-Match that does not match", b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nIf-Match: \"not-the-etag\"\r\n\r\n", 412, KeepAlive),
    ]
}

/// Send one row on a fresh connection and describe every way the outcome
/// differs from the row's expectation.
fn check(server: &Server, row: &Row) -> Result<(), String> {
    let mut s = server.connect();
    s.write_all(&row.request).map_err(|e| format!("writing the request failed: {e}"))?;
    let mut reader = Reader::new();
    let resp = reader.response(&mut s, row.request.starts_with(b"HEAD ")).map_err(|e| format!("no response: {e}"))?;
    let mut problems = Vec::new();
    if resp.status != row.status {
        problems.push(format!("status {} (expected {})", resp.status, row.status));
    }
    if let Some((name, value)) = row.field
        && resp.header(name) != Some(value)
    {
        problems.push(format!("{name}: {:?} (expected {value:?})", resp.header(name)));
    }
    match row.after {
        // A response that promises keep-alive where Close was expected
        // will not be followed by EOF: say so instead of waiting for it.
        After::Close if !resp.closes() => {
            problems.push("response lacks Connection: close".to_string());
        }
        After::Close => {
            let (extra, end) = reader.until_eof(&mut s);
            match end {
                Ok(()) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    problems.push(format!("no EOF within {:?}: the server kept the connection open", support::WAIT));
                }
                Err(e) => {
                    problems.push(format!("connection ended with {e} instead of a clean EOF"));
                }
            }
            if !extra.is_empty() {
                problems.push(format!("{} bytes after the response: {}", extra.len(), show(&extra)));
            }
        }
        After::KeepAlive => {
            if resp.closes() {
                problems.push("response says Connection: close (expected keep-alive)".to_string());
            } else if resp.header("keep-alive").is_none() {
                problems.push("response lacks Keep-Alive".to_string());
            }
            if problems.is_empty() {
                s.write_all(FOLLOW_UP).map_err(|e| format!("writing the second request failed: {e}"))?;
                match reader.response(&mut s, false) {
                    Ok(next) if next.status == 200 && next.body == FOLLOW_UP_BODY => {}
                    Ok(next) => problems.push(format!("second request got {} {:?}", next.status, next.text())),
                    Err(e) => problems.push(format!("second request got no response: {e}")),
                }
            }
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
}

/// Run every row concurrently (each on its own connection) and return one
/// line per failing row, in table order.
fn run_table(server: &Server, rows: &[Row]) -> Vec<String> {
    let mut names: Vec<&str> = rows.iter().map(|r| r.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), rows.len(), "row names must be unique");
    std::thread::scope(|scope| {
        let handles: Vec<_> = rows.iter().map(|row| scope.spawn(move || check(server, row))).collect();
        rows.iter()
            .zip(handles)
            .filter_map(|(row, handle)| {
                let outcome = handle.join().unwrap_or_else(|panic| Err(format!("panicked: {}", panic_text(&panic))));
                outcome.err().map(|why| format!("{}\n      request: {}\n      {why}", row.name, show(&row.request)))
            })
            .collect()
    })
}

fn assert_all_pass(table: &str, rows: &[Row], failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} of {} {table} rows failed:\n  - {}",
        failures.len(),
        rows.len(),
        failures.join("\n  - ")
    );
}

fn panic_text(panic: &Box<dyn Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(ToString::to_string))
        .unwrap_or_else(|| "(non-text panic)".to_string())
}

/// Bytes for a failure message: escaped, and shortened when long.
fn show(bytes: &[u8]) -> String {
    const SHOWN: usize = 160;
    let text = bytes[..bytes.len().min(SHOWN)].escape_ascii().to_string();
    if bytes.len() > SHOWN { format!("{text}... ({} bytes)", bytes.len()) } else { text }
}

#[test]
fn hostile_requests_get_the_right_status_and_connection_fate() {
    let server = Server::start(&["--max-header-bytes", "8192", "--max-body-bytes", &MAX_BODY.to_string()]);
    let rows = rows();
    assert!(rows.len() >= 70, "the table is meant to be broad: {} rows", rows.len());
    let failures = run_table(&server, &rows);
    assert_all_pass("hostile-request", &rows, &failures);
}

/// Rows that need a real directory: encoded traversal, hidden files that
/// exist, directories, and files that are not regular files or that resolve
/// outside the root. Bad paths keep the connection: framing is intact.
#[rustfmt::skip]
fn root_rows() -> Vec<Row> {
    use After::KeepAlive;
    vec![
        row("file in the root", get("/hello.txt"), 200, KeepAlive),
        row(
            "symlink that stays inside the root",
            get("/inside-link.txt"),
            200,
            KeepAlive,
        ),
        // RFC 3986 §5.2.4: clients remove dot-segments before sending, so
        // any that arrive, literal or percent-encoded, are an attack.
        row(
            "literal dot-dot",
            get("/../outside/secret.txt"),
            400,
            KeepAlive,
        ),
        row(
            "encoded dot-dot",
            get("/%2e%2e/%2e%2e/etc/passwd"),
            400,
            KeepAlive,
        ),
        row(
            "encoded dot-dot in upper case",
            get("/%2E%2E/%2E%2E/etc/passwd"),
            400,
            KeepAlive,
        ),
        row(
            "encoded dot-dot between segments",
            get("/docs/%2e%2e/hello.txt"),
            400,
            KeepAlive,
        ),
        row(
            "encoded slashes around dot-dot",
            get("/%2f..%2f..%2fetc%2fpasswd"),
            400,
            KeepAlive,
        ),
        row(
            "dot-dot with an encoded slash",
            get("/..%2f..%2fetc%2fpasswd"),
            400,
            KeepAlive,
        ),
        row(
            "half-encoded dot-dot",
            get("/.%2e/.%2e/etc/passwd"),
            400,
            KeepAlive,
        ),
        row(
            "dot-dot in absolute-form",
            b"GET http://t/%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: t\r\n\r\n",
            400,
            KeepAlive,
        ),
        // RFC 3986 §2.1: a percent sign must be followed by two hex digits.
        row(
            "invalid percent escape",
            get("/hello%zz.txt"),
            400,
            KeepAlive,
        ),
        row(
            "truncated percent escape",
            get("/hello.txt%2"),
            400,
            KeepAlive,
        ),
        row("encoded NUL", get("/hello.txt%00.html"), 400, KeepAlive),
        // Backslash is a separator on some systems and in some proxies.
        row(
            "backslash",
            get("/docs\\..\\..\\etc\\passwd"),
            400,
            KeepAlive,
        ),
        row(
            "encoded backslash",
            get("/docs%5c..%5chello.txt"),
            400,
            KeepAlive,
        ),
        // Hidden files are not published, even when they exist; the
        // well-known URIs of RFC 8615 are the exception.
        row("existing .git/config", get("/.git/config"), 404, KeepAlive),
        row("existing .env", get("/.env"), 404, KeepAlive),
        row("encoded dot file", get("/%2eenv"), 404, KeepAlive),
        row(
            ".well-known is published",
            get("/.well-known/security.txt"),
            200,
            KeepAlive,
        ),
        row("missing file", get("/nope.txt"), 404, KeepAlive),
        row(
            "file with a trailing slash",
            get("/hello.txt/"),
            404,
            KeepAlive,
        ),
        // RFC 9110 §15.4.2: the directory's URL is the one with the slash.
        row(
            "directory without trailing slash",
            get("/docs"),
            301,
            KeepAlive,
        )
        .with("Location", "/docs/"),
        row(
            "directory redirect keeps the query",
            get("/docs?page=2"),
            301,
            KeepAlive,
        )
        .with("Location", "/docs/?page=2"),
        row(
            "directory with trailing slash",
            get("/docs/"),
            200,
            KeepAlive,
        ),
        // Symlinks are followed only while they stay inside the root.
        row(
            "symlink to a file outside the root",
            get("/escape.txt"),
            404,
            KeepAlive,
        ),
        row(
            "symlink to a directory outside the root",
            get("/outdir/secret.txt"),
            404,
            KeepAlive,
        ),
        // /dev/null is a device and outside the root: refused either way.
        row("symlink to /dev/null", get("/null.txt"), 404, KeepAlive),
        // Opening a FIFO for reading blocks until a writer appears, which
        // would stall the one event loop; it must never be opened. The
        // second request on the connection proves the loop is still alive.
        row("FIFO in the root", get("/pipe.txt"), 404, KeepAlive),
        row(
            "symlink to a FIFO inside the root",
            get("/pipe-link.txt"),
            404,
            KeepAlive,
        ),
        row(
            "HEAD of a FIFO",
            b"HEAD /pipe.txt HTTP/1.1\r\nHost: t\r\n\r\n",
            404,
            KeepAlive,
        ),
    ]
}

fn symlink(target: impl AsRef<Path>, link: impl AsRef<Path>) {
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

fn mkfifo(path: &Path) {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo(3) only creates a node.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}: {}", path.display(), std::io::Error::last_os_error());
}

#[test]
fn path_safety_under_a_root_directory() {
    let root = TempDir::new("hostile-root");
    let outside = TempDir::new("hostile-outside");
    root.write("hello.txt", FOLLOW_UP_BODY);
    root.write("docs/index.html", b"<!doctype html><title>docs</title>\n");
    root.write(".git/config", b"[core]\n\trepositoryformatversion = 0\n");
    root.write(".env", b"DATABASE_PASSWORD=hunter2\n");
    root.write(".well-known/security.txt", b"Contact: mailto:security@example.com\n");
    let secret = outside.write("secret.txt", b"outside the root\n");
    symlink("hello.txt", root.path().join("inside-link.txt"));
    symlink(&secret, root.path().join("escape.txt"));
    symlink(outside.path(), root.path().join("outdir"));
    symlink("/dev/null", root.path().join("null.txt"));
    mkfifo(&root.path().join("pipe.txt"));
    symlink("pipe.txt", root.path().join("pipe-link.txt"));

    let server = Server::start(&["--max-header-bytes", "8192", "--root", root.arg()]);
    let rows = root_rows();
    let failures = run_table(&server, &rows);
    assert_all_pass("path-safety", &rows, &failures);
}

/// RFC 9113 §3.4: a client with prior knowledge opens with the HTTP/2
/// preface. The server answers in HTTP/2 (a SETTINGS frame, then GOAWAY
/// with HTTP_1_1_REQUIRED, RFC 9113 §7) so the client gets a clear error,
/// then closes gracefully.
#[test]
fn http2_prior_knowledge_is_refused_with_goaway() {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let server = Server::start(&["--max-header-bytes", "8192"]);
    // Whole, and split inside the first line (the server must wait for the
    // rest rather than call the fragment a bad HTTP/1 request).
    for split in [PREFACE.len(), 8] {
        let mut s = server.connect();
        s.set_nodelay(true).unwrap();
        s.write_all(&PREFACE[..split]).unwrap();
        if split < PREFACE.len() {
            std::thread::sleep(Duration::from_millis(50));
            s.write_all(&PREFACE[split..]).unwrap();
        }
        let (bytes, end) = Reader::new().until_eof(&mut s);
        assert!(end.is_ok(), "split {split}: connection ended with {end:?}, expected a clean EOF");
        // SETTINGS: empty payload, type 0x4, no flags, stream 0.
        assert!(bytes.len() > 18, "split {split}: too short: {}", show(&bytes));
        assert_eq!(&bytes[..9], &[0, 0, 0, 4, 0, 0, 0, 0, 0], "split {split}: SETTINGS frame");
        // GOAWAY: type 0x7, stream 0; payload is last-stream-id, error
        // code, debug data. Nothing may follow it.
        let goaway = &bytes[9..];
        let len = u32::from_be_bytes([0, goaway[0], goaway[1], goaway[2]]) as usize;
        assert_eq!(goaway[3], 7, "split {split}: GOAWAY frame type");
        assert_eq!(&goaway[5..9], &[0, 0, 0, 0], "split {split}: GOAWAY on stream 0");
        assert_eq!(goaway.len(), 9 + len, "split {split}: bytes after GOAWAY: {}", show(goaway));
        let payload = &goaway[9..];
        assert_eq!(&payload[..4], &[0, 0, 0, 0], "split {split}: last stream id");
        assert_eq!(&payload[4..8], &[0, 0, 0, 0x0d], "split {split}: HTTP_1_1_REQUIRED");
        let debug = String::from_utf8_lossy(&payload[8..]);
        assert!(debug.contains("use h2load --h1"), "split {split}: debug data {debug:?}");
    }
}
