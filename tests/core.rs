//! The core server on real sockets: command line, HTTP/1.0 and 1.1
//! persistence, pipelining, methods, static files, conditional requests,
//! ranges, bodies, the access log.

mod support;

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Reader, Server, TempDir, WAIT};

fn linger(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_linger")).args(args).output().unwrap()
}

#[test]
fn help_lists_every_flag_with_defaults_and_bad_input_exits_2() {
    let out = linger(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen",
        "--root",
        "--backlog",
        "--max-conns",
        "--max-requests",
        "--idle-timeout",
        "--min-idle-timeout",
        "--header-timeout",
        "--linger-timeout",
        "--send-timeout",
        "--quantum",
        "--max-header-bytes",
        "--max-body-bytes",
        "--max-buffer-memory",
        "--access-log",
        "--help",
        "--version",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    for default in
        ["[127.0.0.1:8080]", "[1024]", "[10000]", "[1000]", "[60]", "[2]", "[5]", "[4]", "[8192]", "[1048576]"]
    {
        assert!(help.contains(default), "--help lacks default {default}");
    }
    for bad in [&["--max-conns", "lots"][..], &["--nope"], &["--listen", "8080"], &["--root", "/no/such/dir"]] {
        let out = linger(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "one line for {bad:?}: {err}");
        assert!(err.starts_with("linger: "), "{err}");
    }
    let out = linger(&["--version"]);
    assert!(String::from_utf8(out.stdout).unwrap().starts_with("linger "));
}

#[test]
fn built_in_site_with_date_server_and_length() {
    let server = Server::start(&[]);
    let r = server.get("/");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("<h1>linger</h1>"));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let date = r.header("date").expect("Date");
    assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    assert!(r.header("server").unwrap().starts_with("linger/"));
    assert_eq!(r.header("content-length").unwrap().parse::<usize>().unwrap(), r.body.len());
    let r = server.get("/hello.txt");
    assert_eq!(r.body, b"Hello, World!");
    assert_eq!(server.get("/missing").status, 404);
}

#[test]
fn http11_persists_by_default_and_honours_close() {
    let server = Server::start(&[]);
    let mut s = server.connect();
    let mut rd = Reader::new();
    for _ in 0..3 {
        s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let r = rd.response(&mut s, false).unwrap();
        assert_eq!(r.status, 200);
        assert!(!r.closes());
        assert!(r.header("keep-alive").unwrap().starts_with("timeout=60, max="));
    }
    s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let r = rd.response(&mut s, false).unwrap();
    assert!(r.closes());
    let (rest, end) = rd.until_eof(&mut s);
    assert!(rest.is_empty() && end.is_ok(), "clean EOF after Connection: close");
}

#[test]
fn http10_closes_unless_keep_alive_asked() {
    let server = Server::start(&[]);
    let mut s = server.connect();
    let mut rd = Reader::new();
    s.write_all(b"GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    let r = rd.response(&mut s, false).unwrap();
    assert_eq!(r.header("connection"), Some("keep-alive"));
    assert!(r.header("keep-alive").is_some());
    // absolute-form target, and 1.0 needs no Host
    s.write_all(b"GET http://example.org/hello.txt HTTP/1.0\r\n\r\n").unwrap();
    let r = rd.response(&mut s, false).unwrap();
    assert_eq!(r.body, b"Hello, World!");
    assert!(r.closes());
    let (rest, end) = rd.until_eof(&mut s);
    assert!(rest.is_empty() && end.is_ok());
}

#[test]
fn hundred_pipelined_requests_in_one_write_answer_in_order() {
    let dir = TempDir::new("pipeline");
    for i in 0..100 {
        dir.write(&format!("f{i}.txt"), format!("file number {i}").as_bytes());
    }
    let server = Server::start(&["--root", dir.arg()]);
    let mut s = server.connect();
    let mut batch = String::new();
    for i in 0..100 {
        // Mix HEAD in so a body-less response sits between bodies.
        let method = if i % 7 == 3 { "HEAD" } else { "GET" };
        batch.push_str(&format!("{method} /f{i}.txt HTTP/1.1\r\nHost: t\r\n\r\n"));
    }
    s.write_all(batch.as_bytes()).unwrap();
    let mut rd = Reader::new();
    for i in 0..100 {
        let head = i % 7 == 3;
        let r = rd.response(&mut s, head).unwrap();
        assert_eq!(r.status, 200, "response {i}");
        let expected = format!("file number {i}");
        assert_eq!(r.header("content-length").unwrap(), expected.len().to_string());
        if !head {
            assert_eq!(r.text(), expected, "response {i} out of order");
        }
    }
}

#[test]
fn methods_head_options_405_501() {
    let server = Server::start(&[]);
    let get = server.get("/hello.txt");
    let head = server.request("HEAD /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    for name in ["content-length", "content-type", "etag", "last-modified", "accept-ranges"] {
        assert_eq!(head.header(name), get.header(name), "{name}");
    }
    let r = server.request("OPTIONS /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"));
    for m in ["POST", "PUT", "DELETE", "TRACE"] {
        let r = server
            .request(&format!("{m} /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"));
        // Content-Length: 0 is a length: the method is what is refused.
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"), "{m}");
        assert!(!r.body.is_empty(), "error responses have a short body");
    }
    let r = server.request("BREW /pot HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 501);
    let r = server.request("GET / HTTP/1.2\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 505);
}

#[test]
fn http2_preface_is_refused_clearly() {
    let server = Server::start(&[]);
    let mut s = server.connect();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    let (bytes, end) = Reader::new().until_eof(&mut s);
    assert!(end.is_ok());
    // SETTINGS frame, then GOAWAY (type 7) with HTTP_1_1_REQUIRED (0xd).
    assert_eq!(&bytes[..9], &[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    assert_eq!(bytes[12], 7);
    assert_eq!(&bytes[18..26], &[0, 0, 0, 0, 0, 0, 0, 0x0d]);
    assert!(String::from_utf8_lossy(&bytes).contains("use h2load --h1"));
}

#[test]
fn static_files_directories_mime_and_confinement() {
    let dir = TempDir::new("static");
    dir.write("index.html", b"<p>root</p>");
    dir.write("docs/index.html", b"<p>docs</p>");
    dir.write("a b.css", b"body{}");
    dir.write("data.json", b"{}");
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("escape")).unwrap();
    let server = Server::start(&["--root", dir.arg()]);
    assert_eq!(server.get("/").text(), "<p>root</p>");
    let r = server.get("/docs");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/docs/"));
    assert_eq!(server.get("/docs/").text(), "<p>docs</p>");
    let r = server.get("/a%20b.css");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(server.get("/data.json").header("content-type"), Some("application/json"));
    assert_eq!(server.get("/escape").status, 404, "symlink out of the root");
    assert_eq!(server.get("/docs/../../etc/passwd").status, 400);
    assert_eq!(server.get("/%2e%2e/%2e%2e/etc/passwd").status, 400);
}

#[test]
fn conditional_get_and_ranges() {
    let dir = TempDir::new("cond");
    let body: Vec<u8> = (0..100u8).collect();
    dir.write("f.bin", &body);
    let server = Server::start(&["--root", dir.arg()]);
    let r = server.get("/f.bin");
    let etag = r.header("etag").unwrap().to_string();
    let lm = r.header("last-modified").unwrap().to_string();
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    let req =
        |extra: &str| server.request(&format!("GET /f.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n"));
    let r = req(&format!("If-None-Match: {etag}\r\n"));
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(req(&format!("If-Modified-Since: {lm}\r\n")).status, 304);
    assert_eq!(req("If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n").status, 200);
    assert_eq!(req("If-Match: \"nope\"\r\n").status, 412);
    assert_eq!(req(&format!("If-Match: {etag}\r\n")).status, 200);
    assert_eq!(req("If-Unmodified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n").status, 412);
    let r = req("Range: bytes=10-19\r\n");
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/100"));
    assert_eq!(r.body, &body[10..20]);
    let r = req("Range: bytes=-5\r\n");
    assert_eq!(r.body, &body[95..]);
    let r = req("Range: bytes=200-\r\n");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */100"));
}

#[test]
fn large_files_go_out_whole_and_ranged() {
    let dir = TempDir::new("large");
    let body: Vec<u8> = (0..(3 << 20)).map(|i: u32| (i * 7 % 251) as u8).collect();
    dir.write("big.bin", &body);
    let server = Server::start(&["--root", dir.arg()]);
    let before = server.rss_kib();
    let mut s = server.connect();
    let mut rd = Reader::new();
    s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=1000000-1000999\r\n\r\n").unwrap();
    let r = rd.response(&mut s, false).unwrap();
    assert_eq!(r.body.len(), body.len());
    assert!(r.body == body, "large body intact");
    let r = rd.response(&mut s, false).unwrap();
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &body[1_000_000..1_001_000]);
    // sendfile: the file never passes through the server's memory.
    assert!(server.rss_kib() < before + 2048, "RSS grew by more than 2 MiB sending a 3 MiB file");
}

#[test]
fn request_bodies_are_discarded_and_the_connection_kept() {
    let server = Server::start(&["--max-body-bytes", "1024"]);
    let mut s = server.connect();
    let mut rd = Reader::new();
    s.write_all(b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123456789").unwrap();
    assert_eq!(rd.response(&mut s, false).unwrap().status, 405);
    s.write_all(b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n").unwrap();
    assert_eq!(rd.response(&mut s, false).unwrap().status, 405);
    s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(rd.response(&mut s, false).unwrap().body, b"Hello, World!");
    s.write_all(b"POST / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(rd.response(&mut s, false).unwrap().status, 411);
    s.write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4096\r\n\r\n").unwrap();
    let r = rd.response(&mut s, false).unwrap();
    assert_eq!(r.status, 413);
    assert!(r.closes());
}

#[test]
fn expect_100_continue_on_a_refused_request_gets_the_final_status_only() {
    let server = Server::start(&[]);
    let mut s = server.connect();
    s.write_all(b"PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n").unwrap();
    let r = Reader::new().response(&mut s, false).unwrap();
    assert_eq!(r.status, 405);
    assert!(r.closes(), "the body may or may not follow: close");
}

#[test]
fn access_log_in_common_log_format() {
    let dir = TempDir::new("log");
    let log = dir.path().join("access.log");
    let server = Server::start(&["--access-log", log.to_str().unwrap()]);
    server.get("/hello.txt");
    server.get("/missing?q=\"x\"");
    let deadline = Instant::now() + WAIT;
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 2 || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("127.0.0.1 - - ["), "{}", lines[0]);
    assert!(lines[0].ends_with("] \"GET /hello.txt HTTP/1.1\" 200 13"), "{}", lines[0]);
    assert!(lines[1].ends_with("\"GET /missing?q=\\x22x\\x22 HTTP/1.1\" 404 14"), "{}", lines[1]);
}

#[test]
fn a_request_split_across_many_writes_is_served() {
    let server = Server::start(&[]);
    let mut s = server.connect();
    s.set_nodelay(true).unwrap();
    for b in b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n" {
        s.write_all(&[*b]).unwrap();
    }
    let r = Reader::new().response(&mut s, false).unwrap();
    assert_eq!(r.body, b"Hello, World!");
    let mut one = [0u8; 1];
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    assert!(s.read(&mut one).is_err(), "nothing more, connection still open");
}

/// Input buffers start small and grow: a head several times the first
/// buffer's size, written in one piece with two more requests pipelined
/// behind it, and another written in pieces, are all answered.
#[test]
fn heads_larger_than_the_first_input_buffer_are_read_whole() {
    let server = Server::start(&["--max-header-bytes", "8192"]);
    let big = format!("GET /hello.txt HTTP/1.1\r\nHost: t\r\nCookie: {}\r\n\r\n", "c".repeat(7000));
    let small = "GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut s = server.connect();
    s.write_all(format!("{big}{small}{big}").as_bytes()).unwrap();
    let mut rd = Reader::new();
    for _ in 0..3 {
        let r = rd.response(&mut s, false).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"Hello, World!"[..]));
    }
    for chunk in big.as_bytes().chunks(997) {
        s.write_all(chunk).unwrap();
    }
    let r = rd.response(&mut s, false).unwrap();
    assert_eq!(r.status, 200);
}
