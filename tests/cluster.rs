//! Channels shared through a real Redis (`--broker`): two linger
//! processes stand for two hosts. Every message is seen exactly once and in
//! order wherever it was published, resume rules (`since`, `Last-Event-ID`)
//! hold across instances, and a Redis that goes away, or comes back empty,
//! loses nothing it had accepted and never makes ids go backwards.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::redis::Redis;
use support::{Reader, Response, Server, WAIT};

fn start(redis: &Redis, extra: &[&str]) -> Server {
    let url = format!("redis://127.0.0.1:{}", redis.port());
    let mut args = vec!["--broker", &url];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    server.wait_status("the broker connection", |s| s["broker_connected"] == 1);
    server
}

/// POST and return the response (one write: head and body together).
fn post(addr: SocketAddr, channel: &str, data: &str) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let req = format!(
        "POST /pub/{channel} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{data}",
        data.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    Reader::new().response(&mut s, false).unwrap()
}

/// The id a publish got.
fn published(addr: SocketAddr, channel: &str, data: &str) -> u64 {
    let r = post(addr, channel, data);
    assert_eq!(r.status, 200, "{}", r.head);
    let text = r.text();
    let id = text.strip_prefix("{\"id\":").and_then(|t| t.split(',').next()).unwrap_or_else(|| panic!("{text}"));
    id.parse().unwrap()
}

/// An event stream: `(id, data)` of each event, in arrival order.
struct Events {
    s: TcpStream,
    rd: Reader,
    text: String,
}

impl Events {
    fn open(addr: SocketAddr, channel: &str, last_event_id: Option<u64>) -> Events {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let resume = last_event_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
        let req = format!("GET /sub/{channel} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n{resume}\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut rd = Reader::new();
        let head = rd.response_head(&mut s).unwrap();
        assert_eq!(head.status, 200);
        Events { s, rd, text: String::new() }
    }

    /// The next event (pings and the retry hint skipped).
    fn next(&mut self) -> (u64, String) {
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let mut id = None;
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.parse().ok();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push(v);
                    }
                }
                if let Some(id) = id {
                    return (id, data.join("\n"));
                }
                continue;
            }
            let chunk = self.rd.chunk(&mut self.s).expect("a chunk").expect("the stream goes on");
            self.text.push_str(&String::from_utf8(chunk).unwrap());
        }
    }
}

/// Two instances on one Redis: publish on one; SSE, chunked-stream and
/// long-poll subscribers on the other see every message once, in order;
/// `since` and `Last-Event-ID` resume across instances.
#[test]
fn two_instances_share_channels_through_redis() {
    let Some(redis) = Redis::start() else { return };
    let a = start(&redis, &[]);
    let b = start(&redis, &[]);
    assert_eq!(published(a.addr, "news", "before"), 1);

    let mut sse = Events::open(b.addr, "news", None);
    let mut stream = TcpStream::connect(b.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(b"GET /sub/news?mode=stream HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut stream_rd = Reader::new();
    assert_eq!(stream_rd.response_head(&mut stream).unwrap().status, 200);
    b.wait_status("both subscribers", |s| s["streaming"] == 2 && s["channels"] == 1);

    for i in 2..=20 {
        assert_eq!(published(if i % 2 == 0 { a.addr } else { b.addr }, "news", &format!("m{i}")), i);
    }
    for i in 2..=20 {
        assert_eq!(sse.next(), (i, format!("m{i}")), "SSE on the other instance");
        let line = String::from_utf8(stream_rd.chunk(&mut stream).unwrap().unwrap()).unwrap();
        assert_eq!(line, format!("{{\"id\":{i},\"data\":\"m{i}\"}}\n"), "chunked stream");
    }

    // A long poll resumes with `since` on either instance.
    for server in [&a, &b] {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(b"GET /sub/news?since=18 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let r = Reader::new().response(&mut s, false).unwrap();
        assert_eq!(
            r.text(),
            "{\"last_id\":20,\"messages\":[{\"id\":19,\"data\":\"m19\"},{\"id\":20,\"data\":\"m20\"}]}\n"
        );
    }
    // A held long poll on A is answered by a publish on B.
    let mut held = TcpStream::connect(a.addr).unwrap();
    held.set_read_timeout(Some(WAIT)).unwrap();
    held.write_all(b"GET /sub/news?since=20 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    a.wait_status("the poll held", |s| s["held"] == 1);
    assert_eq!(published(b.addr, "news", "m21"), 21);
    let r = Reader::new().response(&mut held, false).unwrap();
    assert_eq!(r.text(), "{\"last_id\":21,\"messages\":[{\"id\":21,\"data\":\"m21\"}]}\n");
    // Last-Event-ID resumes on the instance that never saw the stream.
    let mut resumed = Events::open(a.addr, "news", Some(19));
    assert_eq!(resumed.next(), (20, "m20".into()));
    assert_eq!(resumed.next(), (21, "m21".into()));
    assert_eq!(sse.next(), (21, "m21".into()));
}

/// Redis killed and restarted (empty: no persistence) while subscribers
/// are connected: publishes during the outage get `503`; the subscribers
/// stay, keep their stream, and get every message published after the
/// restart; ids never go backwards.
#[test]
fn redis_going_away_and_coming_back_empty_loses_nothing_accepted() {
    let Some(mut redis) = Redis::start() else { return };
    let a = start(&redis, &[]);
    let b = start(&redis, &["--sse-ping", "0.2"]);
    let mut sse = Events::open(b.addr, "c", None);
    b.wait_status("the subscriber", |s| s["streaming"] == 1);
    for i in 1..=5 {
        assert_eq!(published(a.addr, "c", &format!("m{i}")), i);
    }
    for i in 1..=5 {
        assert_eq!(sse.next().0, i);
    }
    redis.kill();
    a.wait_status("A to notice", |s| s["broker_connected"] == 0);
    let r = post(a.addr, "c", "lost");
    assert_eq!(r.status, 503, "{}", r.head);
    assert_eq!(r.header("retry-after"), Some("1"));
    redis.restart();
    a.wait_status("A back", |s| s["broker_connected"] == 1);
    b.wait_status("B back", |s| s["broker_connected"] == 1 && s["broker_reconnects"] >= 1);
    // B, still holding id 5, raises the empty Redis's counter when it
    // subscribes again, so the next id is 6, not 1.
    let deadline = Instant::now() + WAIT;
    let first = loop {
        let r = post(a.addr, "c", "m6");
        if r.status == 200 {
            break r.text();
        }
        assert!(Instant::now() < deadline, "publishing never came back");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(first.starts_with("{\"id\":6,"), "ids never go backwards: {first}");
    for i in 7..=10 {
        assert_eq!(published(a.addr, "c", &format!("m{i}")), i);
    }
    for i in 6..=10 {
        assert_eq!(sse.next(), (i, format!("m{i}")), "the same stream, no reconnect by hand");
    }
    assert!(b.status()["broker_publishes_refused"] == 0 && a.status()["broker_publishes_refused"] >= 1);
}

/// 1000 messages published alternately on two instances while subscribers
/// on both reconnect six times (resuming by `Last-Event-ID`): each sees
/// every message exactly once and in order.
#[test]
fn a_thousand_messages_across_instances_and_reconnects_arrive_once_in_order() {
    let Some(redis) = Redis::start() else { return };
    // History is the stream's length, set by whoever publishes: the same
    // on both, and long enough to replay every gap.
    let servers = [start(&redis, &["--channel-history", "1000"]), start(&redis, &["--channel-history", "1000"])];
    let addrs = [servers[0].addr, servers[1].addr];
    let publisher = std::thread::spawn(move || {
        for i in 1..=1000u64 {
            assert_eq!(published(addrs[(i % 2) as usize], "firehose", &format!("n{i}")), i);
        }
    });
    let readers: Vec<_> = (0..2)
        .map(|r| {
            std::thread::spawn(move || {
                let mut last = 0;
                let mut seen = Vec::new();
                for round in 0..7 {
                    // Six reconnections, alternating instances.
                    let addr = addrs[(r + round) % 2];
                    // From the start of history the first time (the
                    // publisher may be ahead), then from the last seen.
                    let mut ev = Events::open(addr, "firehose", Some(last));
                    let until = if round < 6 { (round as u64 + 1) * 140 } else { 1000 };
                    while last < until {
                        let (id, data) = ev.next();
                        assert_eq!(data, format!("n{id}"));
                        seen.push(id);
                        last = id;
                    }
                }
                seen
            })
        })
        .collect();
    publisher.join().unwrap();
    for r in readers {
        let seen = r.join().unwrap();
        assert_eq!(seen, (1..=1000).collect::<Vec<u64>>(), "every message once, in order");
    }
}

/// A Redis that is down at start is not fatal: linger serves, refuses to
/// publish, and connects when Redis comes up. A malformed `--broker` is.
#[test]
fn a_broker_down_at_start_is_not_fatal_but_a_bad_url_is() {
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_linger")).args(["--broker", "redis://x:y"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim().lines().count(), 1);
    let Some(mut redis) = Redis::start() else { return };
    redis.kill();
    let url = format!("redis://127.0.0.1:{}", redis.port());
    let server = Server::start(&["--broker", &url]);
    assert_eq!(server.get("/hello.txt").status, 200);
    assert_eq!(post(server.addr, "x", "no").status, 503);
    redis.restart();
    server.wait_status("the broker", |s| s["broker_connected"] == 1);
    assert_eq!(published(server.addr, "x", "yes"), 1);
    let mut rest = Vec::new();
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /sub/x?since=0 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    s.read_to_end(&mut rest).unwrap();
    assert!(String::from_utf8_lossy(&rest).ends_with("{\"last_id\":1,\"messages\":[{\"id\":1,\"data\":\"yes\"}]}\n"));
}

/// With `--broker`, worker processes share channels like hosts do: a
/// publish answered by one worker reaches subscribers held by the others.
#[test]
fn workers_share_channels_through_the_broker() {
    let Some(redis) = Redis::start() else { return };
    let server = start(&redis, &["--workers", "2"]);
    // Fresh connections are spread over both workers; each subscriber asks
    // for everything after id 0, so when its worker's subscription begins
    // does not matter.
    let mut streams: Vec<Events> = (0..8).map(|_| Events::open(server.addr, "w", Some(0))).collect();
    for i in 1..=5 {
        assert_eq!(published(server.addr, "w", &format!("m{i}")), i);
    }
    for ev in &mut streams {
        for i in 1..=5 {
            assert_eq!(ev.next(), (i, format!("m{i}")), "every subscriber, whichever worker holds it");
        }
    }
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /_status?workers=all HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let text = Reader::new().response(&mut s, false).unwrap().text();
    assert!(text.contains("\"workers\":2"), "{text}");
}
