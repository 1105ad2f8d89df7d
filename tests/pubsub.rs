//! Pub/sub channels on real sockets (RFC 6202): long polling (§2), HTTP
//! streaming (§3) and Server-Sent Events (§4.3), and the best practices of
//! §5 that a server controls: pipelining behind a held request (§5.2), 204
//! on timeout (§5.5), no caching (§5.6) and graceful degradation under load
//! (§2.2). Every wait is on an event (a response, a chunk, a `/_status`
//! counter) bounded by `WAIT`; the only timers are the server's own, made
//! short with flags.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::{Reader, Response, Server, WAIT, find};

/// A keep-alive connection that publishes, one POST at a time.
struct Publisher {
    s: TcpStream,
    rd: Reader,
}

impl Publisher {
    fn connect(addr: SocketAddr) -> Publisher {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_write_timeout(Some(WAIT)).unwrap();
        Publisher { s, rd: Reader::new() }
    }

    /// POST `body` to `/pub/{channel}` with `extra` field lines.
    fn post(&mut self, channel: &str, body: &[u8], extra: &str) -> Response {
        let mut req =
            format!("POST /pub/{channel} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n{extra}\r\n", body.len())
                .into_bytes();
        // One write: head and body in separate small writes would meet
        // Nagle and the delayed ACK, 40 ms per publish.
        req.extend_from_slice(body);
        self.s.write_all(&req).unwrap();
        self.rd.response(&mut self.s, false).expect("publish response")
    }

    /// Publish and return `(id, subscribers)` from the acknowledgement.
    fn publish(&mut self, channel: &str, data: &str) -> (u64, u64) {
        let r = self.post(channel, data.as_bytes(), "");
        assert_eq!(r.status, 200, "publish to {channel}: {}", r.head);
        assert!(!r.closes(), "a publish keeps the connection");
        ack(&r)
    }
}

/// `{"id":N,"subscribers":K}\n` as `(N, K)`.
fn ack(r: &Response) -> (u64, u64) {
    assert_eq!(r.header("content-type"), Some("application/json"));
    let text = r.text();
    let rest = text.strip_prefix("{\"id\":").unwrap_or_else(|| panic!("ack {text:?}"));
    let (id, rest) = rest.split_once(",\"subscribers\":").unwrap_or_else(|| panic!("ack {text:?}"));
    let subscribers = rest.strip_suffix("}\n").unwrap_or_else(|| panic!("ack {text:?}"));
    (id.parse().unwrap(), subscribers.parse().unwrap())
}

/// The head of a response whose body is a stream, checked for what every
/// subscriber response carries; the body is left for `chunk()` or
/// `until_eof()`.
fn stream_head(rd: &mut Reader, s: &mut TcpStream) -> Response {
    let r = rd.response_head(s).expect("stream head");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("cache-control"), Some("no-cache"), "§5.6: {}", r.head);
    assert!(r.header("content-length").is_none(), "a stream has no length: {}", r.head);
    r
}

/// What one SSE block (the text up to a blank line) means to a client.
#[derive(Debug, PartialEq, Eq)]
enum Block {
    Retry(u64),
    Comment(String),
    Event { id: u64, data: String },
}

fn parse_block(text: &str) -> Block {
    let (mut id, mut data, mut retry, mut comment) = (None, Vec::new(), None, None);
    for line in text.split('\n') {
        if let Some(c) = line.strip_prefix(':') {
            comment = Some(c.trim_start().to_string());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.parse().unwrap_or_else(|_| panic!("id in {text:?}"))),
            "data" => data.push(value),
            "retry" => retry = Some(value.parse().unwrap()),
            _ => panic!("unexpected field {line:?} in {text:?}"),
        }
    }
    match (id, retry, comment) {
        (Some(id), None, None) => Block::Event { id, data: data.join("\n") },
        (None, Some(ms), None) if data.is_empty() => Block::Retry(ms),
        (None, None, Some(c)) if data.is_empty() => Block::Comment(c),
        _ => panic!("mixed or incomplete block {text:?}"),
    }
}

/// An SSE subscription, read the way an EventSource reads it: the chunk
/// payloads form one text stream, cut into blocks at blank lines (an event
/// may span chunks, and one chunk may carry several events).
struct EventStream {
    s: TcpStream,
    rd: Reader,
    text: Vec<u8>,
}

impl EventStream {
    fn open(server: &Server, target: &str, last_event_id: Option<u64>) -> EventStream {
        let mut s = server.connect();
        let resume = last_event_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
        let req = format!("GET {target} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n{resume}\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut rd = Reader::new();
        let r = stream_head(&mut rd, &mut s);
        assert_eq!(r.header("content-type"), Some("text/event-stream; charset=utf-8"));
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        EventStream { s, rd, text: Vec::new() }
    }

    /// One raw chunk payload (the text buffer must be empty).
    fn chunk(&mut self) -> Option<Vec<u8>> {
        assert!(self.text.is_empty());
        self.rd.chunk(&mut self.s).expect("chunk")
    }

    /// The next block; `None` at the last chunk.
    fn block(&mut self) -> Option<Block> {
        loop {
            if let Some(i) = find(&self.text, b"\n\n") {
                let block: Vec<u8> = self.text.drain(..i + 2).collect();
                return Some(parse_block(std::str::from_utf8(&block[..i]).expect("UTF-8 event stream")));
            }
            match self.rd.chunk(&mut self.s).expect("chunk") {
                Some(data) => self.text.extend_from_slice(&data),
                None => {
                    assert!(self.text.is_empty(), "stream ended inside a block: {:?}", self.text);
                    return None;
                }
            }
        }
    }

    /// The next event, skipping comments (pings) and `retry:`.
    fn event(&mut self) -> (u64, String) {
        loop {
            match self.block().expect("an event before the end of the stream") {
                Block::Event { id, data } => return (id, data),
                Block::Retry(_) | Block::Comment(_) => {}
            }
        }
    }
}

/// §2.1: a long poll is held until a message arrives, then answered with
/// it, and the connection carries on. (The 204 on timeout is driven by the
/// clock in `tests/reactor.rs`.)
#[test]
fn long_poll_is_held_until_a_publish_and_answered_with_it() {
    let server = Server::start(&[]);
    let mut s = server.connect();
    let mut rd = Reader::new();
    s.write_all(b"GET /sub/news HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    server.wait_status("the long poll to be held", |st| st["held"] == 1);
    let mut publisher = Publisher::connect(server.addr);
    assert_eq!(publisher.publish("news", "hello \"world\"\nbye"), (1, 1), "the held poll counts as a subscriber");
    let r = rd.response(&mut s, false).unwrap();
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-cache"), "§5.6");
    assert!(!r.closes());
    assert_eq!(r.text(), "{\"last_id\":1,\"messages\":[{\"id\":1,\"data\":\"hello \\\"world\\\"\\nbye\"}]}\n");
    server.wait_status("the answered poll to leave the held list", |st| st["held"] == 0);

    // The next poll on the same connection, from where the last one ended.
    s.write_all(b"GET /sub/news?since=1 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    server.wait_status("the second poll to be held", |st| st["held"] == 1);
    assert_eq!(publisher.publish("news", "second"), (2, 1));
    let r = rd.response(&mut s, false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "{\"last_id\":2,\"messages\":[{\"id\":2,\"data\":\"second\"}]}\n", "only what is newer");
    s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let r = rd.response(&mut s, false).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"Hello, World!"[..]));
}

/// An HTTP/1.0 long poll pipelined behind a publish on a keep-alive
/// connection: the publish's answer keeps the connection (the poll is
/// still to be answered on it), and the poll's answer, written when the
/// message arrives, is the one that says close; then EOF. (The pure core
/// stops at the held poll, so the fuzz target cannot see that answer.)
#[test]
fn http10_long_poll_behind_a_keep_alive_answer_closes_with_its_own() {
    let server = Server::start(&[]);
    let mut s = server.connect();
    let mut rd = Reader::new();
    s.write_all(b"POST /pub/other HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabcGET /sub/news HTTP/1.0\r\n\r\n")
        .unwrap();
    let r = rd.response(&mut s, false).unwrap();
    assert_eq!((r.status, r.closes()), (200, false), "{}", r.head);
    server.wait_status("the long poll to be held", |st| st["held"] == 1);
    let mut publisher = Publisher::connect(server.addr);
    assert_eq!(publisher.publish("news", "late"), (1, 1));
    let r = rd.response(&mut s, false).unwrap();
    assert_eq!((r.status, r.closes()), (200, true), "{}", r.head);
    assert_eq!(r.text(), "{\"last_id\":1,\"messages\":[{\"id\":1,\"data\":\"late\"}]}\n");
    let (rest, end) = rd.until_eof(&mut s);
    assert!(rest.is_empty() && end.is_ok(), "a clean EOF after the poll's answer: {rest:?} {end:?}");
}

/// §2.2 (graceful degradation): messages queued for a client are delivered
/// in a batch within a single long-poll response. A client resuming with
/// `?since=` or `Last-Event-ID` gets all of them at once, not held.
#[test]
fn since_and_last_event_id_return_every_newer_message_at_once() {
    let server = Server::start(&[]);
    let mut publisher = Publisher::connect(server.addr);
    assert_eq!(publisher.publish("batch", "one"), (1, 0));
    assert_eq!(publisher.publish("batch", "two \"quoted\" \\ back"), (2, 0));
    assert_eq!(publisher.publish("batch", "three\r\nlines\ttabbed"), (3, 0));
    assert_eq!(publisher.publish("other", "elsewhere"), (1, 0));

    let (one, two, three) = (
        "{\"id\":1,\"data\":\"one\"}",
        "{\"id\":2,\"data\":\"two \\\"quoted\\\" \\\\ back\"}",
        "{\"id\":3,\"data\":\"three\\r\\nlines\\ttabbed\"}",
    );
    let newer_than_1 = format!("{{\"last_id\":3,\"messages\":[{two},{three}]}}\n");
    let newer_than_2 = format!("{{\"last_id\":3,\"messages\":[{three}]}}\n");
    let all = format!("{{\"last_id\":3,\"messages\":[{one},{two},{three}]}}\n");
    let mut s = server.connect();
    let mut rd = Reader::new();
    for (req, want) in [
        ("GET /sub/batch?since=1 HTTP/1.1\r\nHost: t\r\n\r\n", &newer_than_1),
        ("GET /sub/batch HTTP/1.1\r\nHost: t\r\nLast-Event-ID: 1\r\n\r\n", &newer_than_1),
        ("GET /sub/batch?since=2 HTTP/1.1\r\nHost: t\r\n\r\n", &newer_than_2),
        ("GET /sub/batch?since=0 HTTP/1.1\r\nHost: t\r\n\r\n", &all),
        ("GET /sub/batch HTTP/1.1\r\nHost: t\r\nLast-Event-ID: 0\r\n\r\n", &all),
    ] {
        // One connection for all: the answers come at once (a hold would
        // run into the 30 s default and the read timeout) and keep it open.
        s.write_all(req.as_bytes()).unwrap();
        let r = rd.response(&mut s, false).unwrap();
        assert_eq!(r.status, 200, "{req:?}: {}", r.head);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("cache-control"), Some("no-cache"), "§5.6");
        assert!(!r.closes());
        assert_eq!(&r.text(), want, "{req:?}");
    }
    assert_eq!(server.status()["held"], 0);
}

/// §3: HTTP streaming, one JSON line per message. HTTP/1.1 clients get
/// each message as a chunk; an HTTP/1.0 client cannot be sent chunks, so
/// its stream is delimited by the close (§3.2, framing). Both end after
/// `--stream-lifetime` (§3.2: periodic reconnection lets intermediaries
/// release what they buffered), the 1.1 one with the last chunk and the
/// connection kept.
#[test]
fn streams_are_chunked_for_http11_and_close_delimited_for_http10() {
    let server = Server::start(&["--stream-lifetime", "0.5"]);
    let started = Instant::now();
    let mut s11 = server.connect();
    let mut rd11 = Reader::new();
    s11.write_all(b"GET /sub/feed?mode=stream HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let r = stream_head(&mut rd11, &mut s11);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson; charset=utf-8"));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert!(!r.closes());

    let mut s10 = server.connect();
    let mut rd10 = Reader::new();
    s10.write_all(b"GET /sub/feed?mode=stream HTTP/1.0\r\nHost: t\r\n\r\n").unwrap();
    let r = stream_head(&mut rd10, &mut s10);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson; charset=utf-8"));
    assert!(r.header("transfer-encoding").is_none(), "no chunking for HTTP/1.0: {}", r.head);
    assert!(r.closes(), "the close delimits the body: {}", r.head);

    // Both heads are out, so both are subscribed.
    let mut publisher = Publisher::connect(server.addr);
    let lines = ["{\"id\":1,\"data\":\"a\"}\n", "{\"id\":2,\"data\":\"b \\\"c\\\"\"}\n", "{\"id\":3,\"data\":\"\"}\n"];
    assert_eq!(publisher.publish("feed", "a"), (1, 2));
    assert_eq!(publisher.publish("feed", "b \"c\""), (2, 2));
    assert_eq!(publisher.publish("feed", ""), (3, 2));

    for line in lines {
        let chunk = rd11.chunk(&mut s11).unwrap().expect("a message chunk");
        assert_eq!(String::from_utf8(chunk).unwrap(), line, "one message per chunk, in order");
    }
    let end = rd11.chunk(&mut s11).unwrap_or_else(|e| panic!("no end within {WAIT:?} of a 0.5 s lifetime: {e}"));
    assert_eq!(end, None, "the lifetime ends the stream with the last chunk");
    let lived = started.elapsed();
    assert!(lived >= Duration::from_millis(450), "ended after {lived:?}, before its lifetime");
    s11.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let r = rd11.response(&mut s11, false).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"Hello, World!"[..]), "the connection outlives the stream");

    let (body, end) = rd10.until_eof(&mut s10);
    assert!(end.is_ok(), "a clean EOF ends the HTTP/1.0 stream, not {end:?}");
    assert_eq!(String::from_utf8(body).unwrap(), lines.concat(), "raw lines, no chunk framing");
    server.wait_status("both streams to be gone", |st| st["streaming"] == 0);
}

/// §4.3, Server-Sent Events: the event-stream type, a `retry:` hint, one
/// `data:` line per line of the message (CRLF, CR and LF all end a line in
/// the event-stream format), keep-alive comments, and resumption with
/// `Last-Event-ID` that replays exactly the events missed.
#[test]
fn server_sent_events_split_lines_and_resume_by_last_event_id() {
    // Pings are driven by the clock in `tests/reactor.rs`: none here.
    let server = Server::start(&["--sse-ping", "600"]);
    let mut publisher = Publisher::connect(server.addr);
    let mut es = EventStream::open(&server, "/sub/live", None);
    assert_eq!(es.chunk().unwrap(), b"retry: 2000\n\n", "the first chunk is the reconnection hint");

    assert_eq!(publisher.publish("live", "a\r\nb\rc\nd"), (1, 1));
    let event = loop {
        let chunk = es.chunk().expect("a chunk");
        if chunk != b": ping\n\n" {
            break chunk;
        }
    };
    assert_eq!(String::from_utf8(event).unwrap(), "id: 1\ndata: a\ndata: b\ndata: c\ndata: d\n\n");

    assert_eq!(publisher.publish("live", "second"), (2, 1));
    assert_eq!(es.event(), (2, "second".into()));
    drop(es);
    server.wait_status("the subscriber to be gone", |st| st["streaming"] == 0);
    assert_eq!(publisher.publish("live", "third"), (3, 0));
    assert_eq!(publisher.publish("live", "fourth\nfourth, line two"), (4, 0));
    assert_eq!(publisher.publish("live", "fifth"), (5, 0));

    let mut es = EventStream::open(&server, "/sub/live", Some(2));
    assert_eq!(es.block(), Some(Block::Retry(2000)), "the retry line comes first");
    assert_eq!(es.event(), (3, "third".into()), "the replay starts right after the last event seen");
    assert_eq!(es.event(), (4, "fourth\nfourth, line two".into()));
    assert_eq!(es.event(), (5, "fifth".into()));
    assert_eq!(publisher.publish("live", "sixth"), (6, 1));
    assert_eq!(es.event(), (6, "sixth".into()), "live again, nothing replayed twice");

    // `?since=` resumes the same way, for clients that cannot set headers.
    let mut es = EventStream::open(&server, "/sub/live?since=4", None);
    assert_eq!(es.event(), (5, "fifth".into()));
    assert_eq!(es.event(), (6, "sixth".into()));
    assert_eq!(publisher.publish("live", "seventh"), (7, 2));
    assert_eq!(es.event(), (7, "seventh".into()));
}

/// §5.2 (pipelined connections, as BOSH does it): a request that arrives
/// behind a held long poll makes the server answer the held one at once,
/// so the new request is not stuck behind it; behind a stream, the stream
/// ends with its last chunk. Either way the new request is then served.
#[test]
fn request_pipelined_behind_a_held_poll_or_stream_ends_it_and_is_served() {
    let server = Server::start(&[]);
    let mut s = server.connect();
    let mut rd = Reader::new();
    s.write_all(b"GET /sub/x HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    server.wait_status("the long poll to be held", |st| st["held"] == 1);
    let asked = Instant::now();
    s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let r = rd.response(&mut s, false).unwrap();
    assert_eq!(r.status, 204, "the held poll is answered first, and empty: {}", r.head);
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert!(!r.closes());
    let r = rd.response(&mut s, false).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"Hello, World!"[..]));
    assert!(asked.elapsed() < Duration::from_secs(5), "answered at once, not at the 30 s timeout");
    server.wait_status("the poll to be released", |st| st["held"] == 0);
    let mut publisher = Publisher::connect(server.addr);
    assert_eq!(publisher.publish("x", "late"), (1, 0), "the answered poll no longer subscribes");

    s.write_all(b"GET /sub/x?mode=stream HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    stream_head(&mut rd, &mut s);
    assert_eq!(publisher.publish("x", "streamed"), (2, 1));
    assert_eq!(rd.chunk(&mut s).unwrap().unwrap(), b"{\"id\":2,\"data\":\"streamed\"}\n");
    s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(rd.chunk(&mut s).unwrap(), None, "the stream ends with its last chunk");
    let r = rd.response(&mut s, false).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"Hello, World!"[..]));
    assert!(r.closes());
    let (rest, end) = rd.until_eof(&mut s);
    assert!(rest.is_empty() && end.is_ok(), "{rest:?} {end:?}");
    assert_eq!(server.status()["streaming"], 0);
}

/// The same as above when the client writes both requests at once: the
/// request behind the long poll is already in the server's input when the
/// poll would be held, and must not wait behind it (§5.2) or be lost.
#[test]
fn request_pipelined_in_the_same_write_as_a_long_poll_is_served() {
    let server = Server::start(&[]);
    let mut s = server.connect();
    let mut rd = Reader::new();
    s.write_all(b"GET /sub/y HTTP/1.1\r\nHost: t\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let r = rd.response(&mut s, false).expect("an answer to the long poll before the read timeout");
    assert_eq!(r.status, 204, "{}", r.head);
    let r = rd.response(&mut s, false).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"Hello, World!"[..]));
    assert_eq!(server.status()["held"], 0);
}

/// 60 KiB of text tagged with its number, so a cut is visible.
fn big_message(i: u64) -> String {
    let mut m = format!("{i:06}:");
    m.push_str(&"x".repeat(60 * 1024 - m.len()));
    m
}

/// §2.2 (allocated resources): a subscriber that stops reading must not
/// make the server buffer without bound. Past 256 KiB of unsent output it
/// is closed gracefully (it can resume by `Last-Event-ID`); the server's
/// memory stays flat and everybody else is served as before.
#[test]
fn slow_subscriber_is_dropped_gracefully_and_memory_stays_bounded() {
    // Little history, so the memory measured is the subscriber's queue.
    let server = Server::start(&["--channel-history", "8"]);
    let mut slow = server.connect();
    slow.write_all(b"GET /sub/firehose HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n").unwrap();
    server.wait_status("the slow subscriber to stream", |st| st["streaming"] == 1);
    let before = server.rss_kib();

    // 400 x 60 KiB = 24 MiB: more than loopback socket buffers hold, and
    // more than the bound below if the server queued it all.
    let mut publisher = Publisher::connect(server.addr);
    let total = 400;
    for i in 1..=total {
        let (id, subscribers) = publisher.publish("firehose", &big_message(i));
        assert_eq!(id, i);
        if i == 1 {
            assert_eq!(subscribers, 1);
        }
    }
    let st = server.wait_status("the slow subscriber to be dropped", |st| st["slow_subscribers_dropped"] >= 1);
    assert_eq!(st["slow_subscribers_dropped"], 1, "{st:?}");
    assert_eq!(st["streaming"], 0, "{st:?}");
    let grew = server.rss_kib().saturating_sub(before);
    assert!(grew < 16 * 1024, "RSS grew by {grew} KiB");

    let asked = Instant::now();
    let r = server.get("/hello.txt");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"Hello, World!"[..]));
    assert!(asked.elapsed() < Duration::from_secs(2), "served in {:?}", asked.elapsed());

    // The slow client finally reads: whole chunks, the last chunk, then a
    // clean EOF (never a reset). What was partly sent is finished, what
    // was queued behind it dropped: the stream stays well-formed, and the
    // client resumes from history by Last-Event-ID.
    let (bytes, end) = Reader::new().until_eof(&mut slow);
    assert!(end.is_ok(), "clean EOF, not {end:?}");
    let head_end = find(&bytes, b"\r\n\r\n").expect("the head arrived") + 4;
    let head = String::from_utf8_lossy(&bytes[..head_end]);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("Transfer-Encoding: chunked"), "{head}");
    let mut rest = &bytes[head_end..];
    let mut text = Vec::new();
    loop {
        let eol = find(rest, b"\r\n").expect("a chunk-size line");
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap(), 16).expect("chunk size");
        let data = &rest[eol + 2..];
        assert!(data.len() >= size + 2, "the stream was cut inside a chunk");
        assert_eq!(&data[size..size + 2], b"\r\n");
        if size == 0 {
            assert!(data.len() == 2, "nothing after the last chunk");
            break;
        }
        text.extend_from_slice(&data[..size]);
        rest = &data[size + 2..];
    }
    let text = String::from_utf8_lossy(&text);
    let mut blocks: Vec<&str> = text.split("\n\n").collect();
    blocks.pop(); // after the last blank line: a partial event, or nothing
    assert_eq!(blocks.first(), Some(&"retry: 2000"));
    let mut next = 1;
    for block in &blocks[1..] {
        match parse_block(block) {
            Block::Event { id, data } => {
                assert_eq!(id, next, "events in order, none missing");
                assert!(data == big_message(id), "event {id} intact");
                next += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(next > 1 && next <= total, "{} complete events reached the slow client", next - 1);
}

/// §2.2 (graceful degradation): with every slot taken and no idle
/// connection to evict, a newcomer is served by answering a held long
/// poll early (204, close), not refused with 503. The client of that poll
/// simply polls again, which is what it does after any answer.
#[test]
fn full_server_answers_a_held_poll_early_to_admit_a_newcomer() {
    let server = Server::start(&["--max-conns", "5"]);
    // Four polls, each confirmed held before the next, so the first is the
    // oldest. Each `/_status` probe takes the fifth slot only briefly: its
    // `Connection: close` answer moves it to the closing connections.
    let mut polls = Vec::new();
    for n in 1..=4 {
        let mut s = server.connect();
        s.write_all(b"GET /sub/crowd HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        server.wait_status("the poll to be held", |st| st["held"] == n);
        polls.push(s);
    }
    // The fifth poll fills the last slot; no probe can confirm it without
    // itself being the newcomer. It is accepted before the newcomer below
    // (the listen queue is FIFO), held or still being read: either way
    // all slots are in use and none is idle.
    let mut fifth = server.connect();
    fifth.write_all(b"GET /sub/crowd HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    polls.push(fifth);

    let r = server.get("/hello.txt");
    assert_eq!(r.status, 200, "the newcomer is served, not refused: {}", r.head);
    assert_eq!(r.body, b"Hello, World!");

    let mut rd = Reader::new();
    let r = rd.response(&mut polls[0], false).unwrap();
    assert_eq!(r.status, 204, "the oldest held poll is answered early: {}", r.head);
    assert!(r.closes(), "and its slot freed: {}", r.head);
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    let (rest, end) = rd.until_eof(&mut polls[0]);
    assert!(rest.is_empty() && end.is_ok(), "{rest:?} {end:?}");

    let st = server.wait_status("the other four polls to be held", |st| st["held"] == 4);
    assert_eq!(st["rejected"], 0, "{st:?}");
    let mut publisher = Publisher::connect(server.addr);
    assert_eq!(publisher.publish("crowd", "for the four"), (1, 4));
    for s in &mut polls[1..] {
        let r = Reader::new().response(s, false).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "{\"last_id\":1,\"messages\":[{\"id\":1,\"data\":\"for the four\"}]}\n");
    }
}

fn numbered(i: u64) -> String {
    if i.is_multiple_of(10) { format!("message {i}\nits second line") } else { format!("message {i}") }
}

/// §4.3: an SSE client that loses its connection reconnects with the last
/// event id it saw and, with enough history, misses nothing and sees
/// nothing twice, however the disconnects fall against the publisher.
#[test]
fn reconnecting_subscriber_sees_every_message_exactly_once() {
    // The publisher sends all 1000 on one connection: lift the request cap
    // (1000 by default) that would otherwise close it at the last one.
    let server = Server::start(&["--channel-history", "2000", "--max-requests", "5000"]);
    let total = 1000;
    let mut es = EventStream::open(&server, "/sub/ledger", None);
    let addr = server.addr;
    let publishing = std::thread::spawn(move || {
        let mut publisher = Publisher::connect(addr);
        for i in 1..=total {
            let (id, _) = publisher.publish("ledger", &numbered(i));
            assert_eq!(id, i, "ids increase strictly, one at a time");
        }
    });

    let mut last = 0;
    let mut connections = 1;
    for cut in [1, 137, 138, 500, 733, 999, total] {
        while last < cut {
            let (id, data) = es.event();
            assert_eq!(id, last + 1, "in order, none missing, none twice");
            assert_eq!(data, numbered(id));
            last = id;
        }
        if last < total {
            // Gone with events possibly unread in the socket, as a client
            // losing its network would be.
            drop(es);
            es = EventStream::open(&server, "/sub/ledger", Some(last));
            connections += 1;
        }
    }
    publishing.join().expect("publisher");
    assert_eq!((last, connections), (total, 7));
    let st = server.status();
    assert_eq!(st["published"], total, "{st:?}");
}

/// Publishing: per-channel ids, who may publish, and what may be
/// published.
#[test]
fn publish_ids_authorization_names_sizes_and_expect_continue() {
    let server = Server::start(&[]);
    let mut p = Publisher::connect(server.addr);
    let ids: Vec<u64> = ["a", "b", "a", "a", "b", "c", "a"].iter().map(|ch| p.publish(ch, ch).0).collect();
    assert_eq!(ids, [1, 1, 2, 3, 2, 1, 4], "ids increase strictly per channel");

    for bad in ["no/slash", "", "sp%20ace", "a:b", &"x".repeat(65)] {
        let r = Publisher::connect(server.addr).post(bad, b"m", "");
        assert_eq!(r.status, 400, "channel {bad:?}: {}", r.head);
    }
    assert_eq!(p.publish(&"x".repeat(64), "longest name"), (1, 0));
    assert_eq!(p.publish("A-z_0.9", "every kind of character"), (1, 0));

    assert_eq!(p.post("a", b"caf\xc3\xa9 ok", "").status, 200);
    let r = p.post("a", b"caf\xe9 latin-1", "");
    assert_eq!(r.status, 400, "invalid UTF-8: {}", r.head);
    assert!(!r.closes(), "the body was read whole, so the connection carries on");

    assert_eq!(p.post("a", &[b'm'; 64 * 1024], "").status, 200, "64 KiB is allowed");
    assert_eq!(p.publish("a", "after the big one"), (7, 0));
    let r = p.post("a", &[b'm'; 64 * 1024 + 1], "");
    assert_eq!(r.status, 413, "{}", r.head);
    assert!(r.closes());

    // Chunked, over the limit only once the chunks add up.
    let mut s = server.connect();
    let chunk = format!("8000\r\n{}\r\n", "m".repeat(0x8000));
    let req = format!(
        "POST /pub/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}1\r\nm\r\n0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let r = Reader::new().response(&mut s, false).unwrap();
    assert_eq!(r.status, 413, "{}", r.head);

    // RFC 9110 §10.1.1: 100 Continue, then the answer once the body is in.
    let mut s = server.connect();
    let mut rd = Reader::new();
    s.write_all(b"POST /pub/a HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\nExpect: 100-continue\r\n\r\n").unwrap();
    let r = rd.response(&mut s, false).unwrap();
    assert_eq!(r.status, 100, "{}", r.head);
    s.write_all(b"waited!").unwrap();
    let r = rd.response(&mut s, false).unwrap();
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(ack(&r), (8, 0));
    s.write_all(b"GET /sub/a?since=7 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let r = rd.response(&mut s, false).unwrap();
    assert_eq!(r.text(), "{\"last_id\":8,\"messages\":[{\"id\":8,\"data\":\"waited!\"}]}\n");
    drop(server);

    let server = Server::start(&["--publish-token", "s3cret"]);
    let mut p = Publisher::connect(server.addr);
    for auth in ["", "Authorization: Bearer wrong\r\n", "Authorization: s3cret\r\n", "Authorization: Basic s3cret\r\n"]
    {
        let r = p.post("t", b"m", auth);
        assert_eq!(r.status, 403, "with a token set, even loopback needs it ({auth:?}): {}", r.head);
    }
    let r = p.post("t", b"m", "Authorization: Bearer s3cret\r\n");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(ack(&r), (1, 0), "refused publishes took no id");
    let r = server.get("/sub/t?since=0");
    assert_eq!(r.text(), "{\"last_id\":1,\"messages\":[{\"id\":1,\"data\":\"m\"}]}\n", "subscribing needs no token");
}
