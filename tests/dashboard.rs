//! The live dashboard's server side: the status feed (`GET /_status` as
//! Server-Sent Events, one event a second on the loop's clock), driven
//! turn by turn; and `/_status.html` served whole. The page itself is
//! checked in Chromium by scripts/dashboard-test.py.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use support::driven::{Client, Driven};
use support::{Reader, Server, WAIT};

const FEED: &[u8] = b"GET /_status HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n";

/// The JSON of every `data:` line received so far, parsed flat.
fn events(c: &mut Client) -> Vec<HashMap<String, u64>> {
    c.pump();
    let text = String::from_utf8_lossy(&c.buf).into_owned();
    text.split("data: ")
        .skip(1)
        .map(|e| {
            let json = e.split('\n').next().unwrap();
            json.trim_matches(|c| c == '{' || c == '}')
                .split(',')
                .map(|kv| {
                    let (k, v) = kv.split_once(':').unwrap();
                    (k.trim_matches('"').to_string(), v.parse().unwrap())
                })
                .collect()
        })
        .collect()
}

#[test]
fn the_feed_sends_status_once_a_second_on_the_loop_clock() {
    let mut d = Driven::start(&[]);
    let mut c = d.connect();
    d.send(&mut c, FEED);
    d.until("the head", |_| {
        c.pump();
        c.buf.windows(4).any(|w| w == b"\r\n\r\n")
    });
    let head = c.take_head().unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream; charset=utf-8"));
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    assert_eq!(head.header("cache-control"), Some("no-cache"));
    // The first event at once, after the reconnection delay.
    d.until("the first event", |_| !events(&mut c).is_empty());
    assert!(String::from_utf8_lossy(&c.buf).contains("retry: 2000\n\n"));
    assert_eq!(events(&mut c).len(), 1);
    assert_eq!(d.gauges().streaming, 1, "a feed is a streaming connection");
    // Nothing before the second is up; then one event.
    d.advance(999);
    assert_eq!(events(&mut c).len(), 1);
    d.advance(1);
    d.until("the second event", |_| events(&mut c).len() == 2);
    let second = events(&mut c)[1].clone();
    assert_eq!(second["uptime_ms"], 1000);
    // What happens in between shows in the next one.
    let mut other = d.connect();
    let r = d.response_to(&mut other, b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200);
    d.advance(1000);
    d.until("the third event", |_| events(&mut c).len() == 3);
    let third = events(&mut c)[2].clone();
    assert_eq!(third["requests"], second["requests"] + 1);
    assert_eq!(third["uptime_ms"], 2000);
    // A request pipelined behind the feed ends it with its last chunk and
    // is answered (RFC 6202 §5.2, as for a channel's stream).
    d.send(&mut c, b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    d.until("the last chunk, then the response", |_| {
        c.pump();
        String::from_utf8_lossy(&c.buf).contains("0\r\n\r\nHTTP/1.1 200 OK\r\n")
    });
    assert_eq!(d.gauges().streaming, 0);
    // At the next tick the feed is forgotten: the loop no longer wakes
    // every second for it (the idle timers are a minute away).
    d.advance(1000);
    assert!(d.server.poll_timeout().is_some_and(|t| t > Duration::from_secs(1)), "{:?}", d.server.poll_timeout());
}

#[test]
fn shutdown_ends_a_feed_with_its_last_chunk() {
    let mut d = Driven::start(&[]);
    let mut c = d.connect();
    d.send(&mut c, FEED);
    d.until("the first event", |_| !events(&mut c).is_empty());
    d.server.shutdown();
    let (bytes, end) = d.eof(&mut c);
    assert!(end.is_ok());
    assert!(bytes.ends_with(b"0\r\n\r\n"), "{:?}", String::from_utf8_lossy(&bytes));
}

#[test]
fn the_feed_over_http10_is_delimited_by_the_close() {
    let mut d = Driven::start(&[]);
    let mut c = d.connect();
    d.send(&mut c, b"GET /_status HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n");
    d.until("the first event", |_| !events(&mut c).is_empty());
    let text = String::from_utf8_lossy(&c.buf).into_owned();
    assert!(text.contains("Connection: close") && !text.contains("chunked"), "{text}");
    d.advance(1000);
    d.until("the second event", |_| events(&mut c).len() == 2);
}

#[test]
fn the_dashboard_page_and_a_real_feed() {
    let server = Server::start(&[]);
    let r = server.get("/_status.html");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(r.header("content-security-policy").is_some_and(|v| v.contains("connect-src 'self'")));
    assert_eq!(r.body, std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/site/status.html")).unwrap());
    let r = server.request("POST /_status.html HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.status, 405);
    // Not part of the demo site.
    assert_eq!(server.get("/status.html").status, 404);
    // The feed on the system clock: the first event at once, the next
    // about a second later.
    let mut s = server.connect();
    s.write_all(FEED).unwrap();
    let mut rd = Reader::new();
    let head = rd.response_head(&mut s).unwrap();
    assert_eq!(head.status, 200);
    let started = std::time::Instant::now();
    let first = String::from_utf8(rd.chunk(&mut s).unwrap().unwrap()).unwrap();
    assert!(first.starts_with("retry: 2000\n\ndata: {\"active\":"), "{first}");
    let second = String::from_utf8(rd.chunk(&mut s).unwrap().unwrap()).unwrap();
    let waited = started.elapsed();
    assert!(second.starts_with("data: {") && second.ends_with("}\n\n"), "{second}");
    assert!(waited.as_millis() >= 900 && waited < WAIT, "{waited:?}");
}
