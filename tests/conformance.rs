//! Conformance defects: request bodies checked before the answer (RFC 9112
//! §6-§7), redirects that stay on this server, queries that reach the
//! handler, and a response for every request the server gives up on. Each
//! test reproduces a defect from outside, on real sockets against the real
//! binary, and asserts what RFC 9112 and linger's README promise.

mod support;

use std::io::{self, ErrorKind, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::{Reader, Response, Server, TempDir};

/// The request pipelined behind every broken body: after a framing error
/// the server cannot know where it starts, so it must never be answered.
const FOLLOW_UP: &[u8] = b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n";

/// The body limit the servers here run with, so that "too large" is a few
/// KiB on the wire.
const MAX_BODY: &str = "4096";

/// A request for `/hello.txt` with `Transfer-Encoding: chunked` and `body`
/// as its chunked content, followed by [`FOLLOW_UP`].
fn chunked(method: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
    r.extend_from_slice(body);
    r.extend_from_slice(FOLLOW_UP);
    r
}

/// What a client sees: the first response (or why there was none), then
/// every byte up to the end of the connection and how it ended.
struct Outcome {
    first: io::Result<Response>,
    after: Vec<u8>,
    end: io::Result<()>,
}

fn exchange(server: &Server, request: &[u8], patience: Duration) -> Outcome {
    let mut s = server.connect();
    s.set_read_timeout(Some(patience)).unwrap();
    s.write_all(request).unwrap();
    let mut rd = Reader::new();
    let first = rd.response(&mut s, false);
    let (after, end) = rd.until_eof(&mut s);
    Outcome { first, after, end }
}

fn show(bytes: &[u8]) -> String {
    let text = bytes[..bytes.len().min(160)].escape_ascii().to_string();
    if bytes.len() > 160 { format!("{text}... ({} bytes)", bytes.len()) } else { text }
}

/// Defect 14.9: `GET` with a chunked body whose framing is broken. The
/// server must read the body before it answers, so bad framing gets `400`
/// and a close (a clean EOF, the pipelined request never answered), never
/// `200`. Today the `200` goes out at once announcing keep-alive, and the
/// connection is then closed silently when the body turns out broken.
/// Sizes past `--max-body-bytes` get `413` and a close. A well-formed body
/// is the control: `200`, and the next request on the connection answered.
#[test]
fn broken_chunked_body_on_get_gets_400_and_a_close() {
    let server = Server::start(&["--max-body-bytes", MAX_BODY, "--header-timeout", "2"]);
    #[rustfmt::skip]
    let rows: &[(&str, &[u8], u16)] = &[
        ("chunk size `zz`", b"zz\r\nhello\r\n0\r\n\r\n", 400),
        ("chunk-size line ended by a bare CR", b"5\rhello\r\n0\r\n\r\n", 400),
        ("chunk data not followed by CRLF", b"5\r\nhelloXX0\r\n\r\n", 400),
        ("chunk size that overflows 64 bits", b"1ffffffffffffffff\r\nhello\r\n0\r\n\r\n", 400),
        ("chunk larger than --max-body-bytes", b"100000\r\nhello\r\n", 413),
    ];
    let mut failures = Vec::new();
    for &(name, body, want) in rows {
        let o = exchange(&server, &chunked("GET", body), Duration::from_secs(3));
        let mut problems = Vec::new();
        match &o.first {
            Ok(r) if r.status != want => problems.push(format!("{} (expected {want})", r.head.lines().next().unwrap())),
            Ok(r) if !r.closes() => problems.push(format!("{want} without Connection: close")),
            Ok(_) => {}
            Err(e) => problems.push(format!("no response: {e}")),
        }
        if !o.after.is_empty() {
            problems.push(format!("{} bytes after it: {}", o.after.len(), show(&o.after)));
        }
        if let Err(e) = &o.end {
            problems.push(format!("ended by {e}, not a clean EOF"));
        }
        if !problems.is_empty() {
            let announced = o.first.as_ref().ok().and_then(|r| r.header("keep-alive")).unwrap_or("-");
            failures.push(format!("{name}: {} (Keep-Alive: {announced})", problems.join("; ")));
        }
    }
    // The control: the same request with a well-formed body.
    let mut s = server.connect();
    s.write_all(&chunked("GET", b"5\r\nhello\r\n0\r\n\r\n")).unwrap();
    let mut rd = Reader::new();
    for n in 1..=2 {
        let r = rd.response(&mut s, false).unwrap_or_else(|e| panic!("control, response {n}: {e}"));
        assert_eq!((r.status, r.body.as_slice()), (200, &b"Hello, World!"[..]), "control, response {n}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} broken bodies:\n  - {}",
        failures.len(),
        rows.len(),
        failures.join("\n  - ")
    );
}

/// Defect 14.9, the same on `POST` (a static file, so `405`) and for a
/// body that never ends (no last chunk): a response may go out before the
/// body is read only if it says `Connection: close` (then the server
/// lingers); never one that promises keep-alive followed by silence. Today
/// both get a response announcing keep-alive, then a silent close (the
/// second only at `--header-timeout`).
#[test]
fn broken_or_unfinished_body_never_gets_keep_alive_then_silence() {
    let server = Server::start(&["--max-body-bytes", MAX_BODY, "--header-timeout", "1"]);
    let rows: &[(&str, Vec<u8>)] = &[
        ("POST, chunk size `zz`", chunked("POST", b"zz\r\nhello\r\n0\r\n\r\n")),
        ("POST, data not followed by CRLF", chunked("POST", b"5\r\nhelloXX0\r\n\r\n")),
        (
            "GET, no last chunk",
            b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec(),
        ),
        (
            "POST, no last chunk",
            b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec(),
        ),
    ];
    let mut failures = Vec::new();
    for (name, request) in rows {
        let o = exchange(&server, request, Duration::from_secs(3));
        let promise = match &o.first {
            Ok(r) if !r.closes() => Some(r.head.lines().next().unwrap().to_string()),
            _ => None,
        };
        match (promise, &o.end) {
            (Some(status), Ok(())) if o.after.is_empty() => {
                failures.push(format!("{name}: {status} announcing keep-alive, then a silent close"))
            }
            (_, Err(e)) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                failures.push(format!("{name}: ended by {e}"))
            }
            _ => {}
        }
        if o.first.as_ref().is_ok_and(|r| r.closes()) && !o.after.is_empty() {
            failures.push(format!("{name}: bytes after a Connection: close response: {}", show(&o.after)));
        }
    }
    assert!(failures.is_empty(), "{} of {} requests:\n  - {}", failures.len(), rows.len(), failures.join("\n  - "));
}

/// A server with a directory `dir`, one named like a host, and a file.
fn tree() -> (TempDir, Server) {
    let dir = TempDir::new("conformance");
    dir.write("dir/index.html", b"<p>dir</p>\n");
    dir.write("evil.example/index.html", b"<p>not a host</p>\n");
    dir.write("a.txt", b"a\n");
    let server = Server::start(&["--root", dir.arg()]);
    (dir, server)
}

/// Defect 14.10, open redirect: a directory named without its trailing
/// slash is redirected to the name with it. Requested as `//dir` (or
/// `///evil.example`), the `Location` must still be a path on this server
/// (`/dir/`): a value starting `//` is a network-path reference that
/// browsers follow to another host. Today it is the raw path plus `/`.
#[test]
fn directory_redirect_never_leaves_the_server() {
    let (_dir, server) = tree();
    let mut bad = Vec::new();
    for (target, want) in
        [("//dir", "/dir/"), ("///evil.example", "/evil.example/"), ("//evil.example?x=1", "/evil.example/?x=1")]
    {
        let r = server.get(target);
        let location = r.header("location").unwrap_or("").to_string();
        if r.status != 301 || location != want {
            bad.push(format!("GET {target} -> {} Location: {location:?} (expected 301 {want:?})", r.status));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// One request on a fresh connection, with a short read timeout: an
/// answer that does not come at once is a hold, reported as such.
fn ask(server: &Server, raw: &str) -> io::Result<Response> {
    let mut s: TcpStream = server.connect();
    s.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    Reader::new().response(&mut s, false)
}

fn publish(server: &Server, channel: &str, data: &str) {
    let r = server.request(&format!(
        "POST /pub/{channel} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{data}",
        data.len()
    ));
    assert_eq!(r.status, 200, "publish: {}", r.head);
}

/// Defect 14.10, absolute-form: a request target `http://host/path?query`
/// (RFC 9112 §3.2.2) must reach the handler with its query, as the
/// origin-form does: `?since=0` answers a long poll at once from history,
/// and a directory redirect keeps the query. (This holds today: of the
/// absolute forms only `http://host?query`, with no path, drops its query,
/// and that target is `/`, where no handler reads one.)
#[test]
fn absolute_form_target_keeps_its_query() {
    let (_dir, server) = tree();
    publish(&server, "abs", "one");
    let r = ask(&server, "GET http://t/sub/abs?since=0 HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = r.unwrap_or_else(|e| panic!("held instead of answered from history: {e}"));
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.text(), "{\"last_id\":1,\"messages\":[{\"id\":1,\"data\":\"one\"}]}\n");
    let r = server.get("http://t/dir?x=1");
    assert_eq!((r.status, r.header("location")), (301, Some("/dir/?x=1")), "{}", r.head);
}

/// Defect 14.10, percent-encoding: `since=%31` is `since=1` (a query is
/// percent-encoded, RFC 3986 §2.1): a long poll with it is answered at
/// once with what is newer than 1. Today the value is not decoded, the
/// poll counts as having no `since`, and it is held (until a 204 after
/// `--longpoll-timeout`).
#[test]
fn percent_encoded_since_is_decoded() {
    let server = Server::start(&["--longpoll-timeout", "1"]);
    publish(&server, "pct", "one");
    publish(&server, "pct", "two");
    let r = ask(&server, "GET /sub/pct?since=%31 HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = r.unwrap_or_else(|e| panic!("no answer: {e}"));
    assert_eq!(r.status, 200, "held instead of answered at once: {}", r.head);
    assert_eq!(r.text(), "{\"last_id\":2,\"messages\":[{\"id\":2,\"data\":\"two\"}]}\n");
}

/// Defect 14.10, a publisher cut off: with every slot taken, a newcomer
/// evicts a request head (or body) that has taken more than a second. A
/// publisher evicted in the middle of its body must still get a response
/// saying why (`408` or `503`, with `Connection: close`), then a graceful
/// close. Today it gets a FIN and nothing else.
#[test]
fn publisher_evicted_in_the_middle_of_its_body_gets_a_response() {
    let server = Server::start(&["--max-conns", "2", "--header-timeout", "5"]);
    let mut idle = server.connect();
    idle.write_all(FOLLOW_UP).unwrap();
    assert_eq!(Reader::new().response(&mut idle, false).unwrap().status, 200);
    let mut publisher = server.connect();
    publisher.write_all(b"POST /pub/slow HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789").unwrap();
    // "More than a second" is the server's constant, not a flag: it has to
    // be waited out.
    std::thread::sleep(Duration::from_millis(1200));
    let mut newcomer = server.connect();
    newcomer.write_all(FOLLOW_UP).unwrap();
    assert_eq!(Reader::new().response(&mut newcomer, false).unwrap().status, 200);
    publisher.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut rd = Reader::new();
    let r = rd.response(&mut publisher, false).unwrap_or_else(|e| panic!("the evicted publisher: {e}"));
    assert!(matches!(r.status, 408 | 503), "{}", r.head);
    assert!(r.closes(), "{}", r.head);
    let (rest, end) = rd.until_eof(&mut publisher);
    assert!(rest.is_empty() && end.is_ok(), "then EOF: {} bytes, {end:?}", rest.len());
}
