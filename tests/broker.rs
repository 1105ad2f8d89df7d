//! The broker client against a real `redis-server`: `Link` driven over a
//! blocking `TcpStream` with read timeouts (every wait is bounded by
//! `WAIT` and ends on an event, never on a sleep).

mod support;

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

use bytes::Bytes;
use linger::broker::codec::{self, Framer};
use linger::broker::{ChannelOrder, Event, Link, RANGE_PAGE, Refused, State};
use linger::pubsub::{CHANNEL_IDLE_MS, MAX_MESSAGE};
use support::WAIT;
use support::redis::Redis;

/// A `Link` on a blocking socket.
struct Client {
    link: Link,
    sock: Option<TcpStream>,
    /// Events read while waiting for another, in order.
    stash: VecDeque<Event>,
    tag: u64,
}

impl Client {
    fn connect(redis: &Redis, db: u8, history: usize) -> Client {
        let mut c =
            Client { link: Link::new(db, history, CHANNEL_IDLE_MS), sock: None, stash: VecDeque::new(), tag: 0 };
        c.reconnect(redis);
        c
    }

    fn reconnect(&mut self, redis: &Redis) {
        self.link.on_disconnected();
        self.stash.extend(std::iter::from_fn(|| self.link.poll_event()));
        let sock = TcpStream::connect(redis.addr()).expect("connect to redis");
        sock.set_read_timeout(Some(WAIT)).unwrap();
        sock.set_nodelay(true).unwrap();
        self.sock = Some(sock);
        self.link.on_connected();
        assert_eq!(self.wait(|e| matches!(e, Event::Ready)), Event::Ready);
    }

    /// Write the link's output; false if the connection is gone.
    fn flush(&mut self) -> bool {
        let sock = self.sock.as_mut().expect("connected");
        while !self.link.output().is_empty() {
            match sock.write(self.link.output()) {
                Ok(n) => self.link.consumed(n),
                Err(_) => return false,
            }
        }
        true
    }

    fn lost(&mut self) -> Option<Event> {
        self.link.on_disconnected();
        self.sock = None;
        self.link.poll_event()
    }

    /// The next event, reading as needed; `None` on EOF (after which the
    /// link has failed what was in flight: those events come next).
    fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.stash.pop_front().or_else(|| self.link.poll_event()) {
                return Some(e);
            }
            if !self.flush() {
                return self.lost();
            }
            let mut buf = [0u8; 16 * 1024];
            match self.sock.as_mut().expect("connected").read(&mut buf) {
                Ok(0) => return self.lost(),
                Ok(n) => self.link.feed(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return self.lost(),
                Err(e) => panic!("reading from redis: {e} (waited {WAIT:?})"),
            }
        }
    }

    /// The first event matching `want`; the others stay stashed in order.
    fn wait(&mut self, want: impl Fn(&Event) -> bool) -> Event {
        let mut passed = VecDeque::new();
        let found = loop {
            let e = self.next().expect("connection closed while waiting");
            if let Event::Error { what } = &e {
                panic!("broker error: {what}");
            }
            if want(&e) {
                break e;
            }
            passed.push_back(e);
        };
        passed.extend(self.stash.drain(..));
        self.stash = passed;
        found
    }

    fn next_tag(&mut self) -> u64 {
        self.tag += 1;
        self.tag
    }

    fn publish(&mut self, channel: &str, data: &[u8], floor: u64) -> u64 {
        let tag = self.next_tag();
        self.link.publish(channel, data, floor, tag).unwrap();
        match self
            .wait(|e| matches!(e, Event::Published { tag: t, .. } | Event::PublishFailed { tag: t, .. } if *t == tag))
        {
            Event::Published { id, .. } => id,
            e => panic!("publish failed: {e:?}"),
        }
    }

    /// Every page of a range: (last id, messages, pages).
    fn range(&mut self, channel: &str, after: u64, floor: u64) -> (u64, Vec<(u64, Bytes)>, usize) {
        let tag = self.next_tag();
        self.link.range(channel, after, floor, tag).unwrap();
        let (mut all, mut pages) = (Vec::new(), 0);
        loop {
            match self
                .wait(|e| matches!(e, Event::Range { tag: t, .. } | Event::QueryFailed { tag: t, .. } if *t == tag))
            {
                Event::Range { last_id, messages, more, .. } => {
                    pages += 1;
                    all.extend(messages);
                    if !more {
                        return (last_id, all, pages);
                    }
                }
                e => panic!("range failed: {e:?}"),
            }
        }
    }

    fn subscribe(&mut self, channel: &str) {
        self.link.subscribe(channel).unwrap();
        self.wait(|e| matches!(e, Event::Subscribed { channel: c } if &**c == channel));
    }

    fn message(&mut self) -> (Box<str>, u64, Bytes) {
        match self.wait(|e| matches!(e, Event::Message { .. })) {
            Event::Message { channel, id, data } => (channel, id, data),
            _ => unreachable!(),
        }
    }
}

/// One command on a fresh RESP2 connection (after `SELECT db`), for
/// looking at Redis from outside the link: the last reply's raw bytes.
fn raw(redis: &Redis, db: u8, args: &[&str]) -> Vec<u8> {
    let mut s = TcpStream::connect(redis.addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut out = Vec::new();
    codec::push_command(&mut out, &[b"SELECT", db.to_string().as_bytes()]);
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    codec::push_command(&mut out, &args);
    s.write_all(&out).unwrap();
    let (mut buf, mut framer, mut replies) = (Vec::new(), Framer::default(), Vec::new());
    while replies.len() < 2 {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "redis closed");
        buf.extend_from_slice(&chunk[..n]);
        while let Some(len) = framer.next_frame(&buf).unwrap() {
            replies.push(buf.drain(..len).collect::<Vec<u8>>());
        }
    }
    replies.pop().unwrap()
}

/// How many times Redis ran `command` (from INFO commandstats).
fn calls(redis: &Redis, command: &str) -> u64 {
    let info = String::from_utf8(raw(redis, 0, &["INFO", "commandstats"])).unwrap();
    let key = format!("cmdstat_{command}:calls=");
    info.lines().find_map(|l| l.strip_prefix(&key)).map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

fn integer(reply: &[u8]) -> i64 {
    std::str::from_utf8(reply).unwrap().trim_end().strip_prefix(':').unwrap().parse().unwrap()
}

macro_rules! redis_or_skip {
    () => {
        match Redis::start() {
            Some(r) => r,
            None => return,
        }
    };
}

#[test]
fn handshake_and_contiguous_ids() {
    let redis = redis_or_skip!();
    let mut c = Client::connect(&redis, 0, 100);
    assert_eq!(c.link.state(), State::Ready);
    assert_eq!([c.publish("c", b"a", 0), c.publish("c", b"b", 0), c.publish("c", b"c", 0)], [1, 2, 3]);
    assert_eq!(c.publish("other", b"x", 0), 1, "ids are per channel");
    // A second node continues the same sequence.
    let mut d = Client::connect(&redis, 0, 100);
    assert_eq!(d.publish("c", b"d", 0), 4);
    let tag = d.next_tag();
    d.link.last_id("c", tag).unwrap();
    assert!(matches!(d.wait(|e| matches!(e, Event::LastId { .. })), Event::LastId { id: 4, .. }));
    d.link.last_id("never", tag).unwrap();
    assert!(matches!(d.wait(|e| matches!(e, Event::LastId { .. })), Event::LastId { id: 0, .. }));
}

#[test]
fn database_is_selected() {
    let redis = redis_or_skip!();
    let mut c = Client::connect(&redis, 3, 100);
    c.publish("c", b"x", 0);
    assert_eq!(integer(&raw(&redis, 3, &["EXISTS", "linger:{c}:seq", "linger:{c}:log"])), 2);
    assert_eq!(integer(&raw(&redis, 0, &["EXISTS", "linger:{c}:seq"])), 0);
}

#[test]
fn a_subscriber_gets_every_message_in_order() {
    let redis = redis_or_skip!();
    let mut sub = Client::connect(&redis, 0, 100);
    sub.subscribe("news");
    let mut publisher = Client::connect(&redis, 0, 100);
    for i in 1..=200u64 {
        // Pipelined: every publish is sent before any reply is read.
        publisher.link.publish("news", format!("m{i}").as_bytes(), 0, i).unwrap();
    }
    for i in 1..=200u64 {
        assert!(
            matches!(publisher.wait(|e| matches!(e, Event::Published { .. })), Event::Published { tag, id, .. } if tag == i && id == i)
        );
    }
    for i in 1..=200u64 {
        let (channel, id, data) = sub.message();
        assert_eq!((&*channel, id, &data[..]), ("news", i, format!("m{i}").as_bytes()));
    }
    // The publisher is not subscribed and got no pushes.
    assert!(publisher.stash.is_empty() && publisher.link.poll_event().is_none());
    sub.link.unsubscribe("news").unwrap();
    sub.wait(|e| matches!(e, Event::Unsubscribed { .. }));
}

#[test]
fn a_publishers_own_message_comes_back_before_its_reply() {
    let redis = redis_or_skip!();
    let mut c = Client::connect(&redis, 0, 100);
    c.subscribe("self");
    c.link.publish("self", b"echo", 0, 77).unwrap();
    let first = c.wait(|e| matches!(e, Event::Message { .. } | Event::Published { .. }));
    let second = c.wait(|e| matches!(e, Event::Message { .. } | Event::Published { .. }));
    // Redis 7.0 writes the script's PUBLISH to its subscribers, this
    // connection included, before the script's reply.
    assert!(matches!(first, Event::Message { id: 1, .. }), "{first:?}");
    assert!(matches!(second, Event::Published { tag: 77, id: 1, .. }), "{second:?}");
}

#[test]
fn ranges_after_an_id_in_pages() {
    let redis = redis_or_skip!();
    let mut c = Client::connect(&redis, 0, 1000);
    for i in 1..=150u64 {
        c.link.publish("r", format!("m{i}").as_bytes(), 0, i).unwrap();
    }
    for _ in 1..=150 {
        c.wait(|e| matches!(e, Event::Published { .. }));
    }
    let (last, messages, pages) = c.range("r", 4, 0);
    assert_eq!(last, 150);
    assert_eq!(messages.iter().map(|m| m.0).collect::<Vec<_>>(), (5..=150).collect::<Vec<_>>());
    assert_eq!(messages[0].1, Bytes::from_static(b"m5"));
    assert_eq!(pages, 146usize.div_ceil(RANGE_PAGE));
    let (last, messages, _) = c.range("r", 150, 0);
    assert_eq!((last, messages.len()), (150, 0));
    let (last, messages, _) = c.range("nothing-here", 0, 0);
    assert_eq!((last, messages.len()), (0, 0));
}

#[test]
fn history_is_trimmed_to_its_length() {
    let redis = redis_or_skip!();
    let mut c = Client::connect(&redis, 0, 5);
    for i in 1..=12u64 {
        assert_eq!(c.publish("t", format!("m{i}").as_bytes(), 0), i);
    }
    assert_eq!(integer(&raw(&redis, 0, &["XLEN", "linger:{t}:log"])), 5);
    let (last, messages, _) = c.range("t", 0, 0);
    // History starts at 8: 1-7 were trimmed.
    assert_eq!(last, 12);
    assert_eq!(messages.iter().map(|m| m.0).collect::<Vec<_>>(), [8, 9, 10, 11, 12]);
}

#[test]
fn keys_expire_when_idle_and_touch_refreshes_them() {
    let redis = redis_or_skip!();
    let mut c = Client::connect(&redis, 0, 100);
    c.publish("e", b"x", 0);
    for key in ["linger:{e}:seq", "linger:{e}:log"] {
        let ttl = integer(&raw(&redis, 0, &["PTTL", key]));
        assert!(ttl > CHANNEL_IDLE_MS as i64 - 60_000 && ttl <= CHANNEL_IDLE_MS as i64, "{key}: {ttl}");
        raw(&redis, 0, &["PEXPIRE", key, "5000"]);
    }
    c.link.touch("e").unwrap();
    // A round trip after the touch: its replies have been read by then.
    let tag = c.next_tag();
    c.link.last_id("e", tag).unwrap();
    c.wait(|e| matches!(e, Event::LastId { .. }));
    for key in ["linger:{e}:seq", "linger:{e}:log"] {
        assert!(integer(&raw(&redis, 0, &["PTTL", key])) > 5000, "{key} not refreshed");
    }
}

#[test]
fn a_64k_binary_message_round_trips() {
    let redis = redis_or_skip!();
    let mut sub = Client::connect(&redis, 0, 100);
    sub.subscribe("bin");
    let mut c = Client::connect(&redis, 0, 100);
    let data: Vec<u8> = (0..MAX_MESSAGE).map(|i| [b'\r', b'\n', 0, 255, b'x', (i % 251) as u8][i % 6]).collect();
    assert_eq!(c.publish("bin", &data, 0), 1);
    let (_, id, got) = sub.message();
    assert_eq!((id, got.len()), (1, data.len()));
    assert!(got == data[..], "pushed data differs");
    let (_, messages, _) = c.range("bin", 0, 0);
    assert!(messages.len() == 1 && messages[0].1 == data[..], "stored data differs");
    assert_eq!(c.link.publish("bin", &vec![0; MAX_MESSAGE + 1], 0, 1), Err(Refused::TooLarge));
}

#[test]
fn ids_never_go_backwards_when_redis_restarts_empty() {
    let mut redis = redis_or_skip!();
    let mut a = Client::connect(&redis, 0, 100);
    let mut b = Client::connect(&redis, 0, 100);
    for i in 1..=10 {
        assert_eq!(a.publish("f", b"x", 0), i);
    }
    redis.restart();
    assert_eq!(integer(&raw(&redis, 0, &["EXISTS", "linger:{f}:seq"])), 0, "redis came back empty");
    // The link sees the old connection end; in-flight requests fail.
    a.link.publish("f", b"lost", 0, 99).unwrap();
    let failed = a.next();
    assert!(matches!(failed, Some(Event::PublishFailed { tag: 99, .. })), "{failed:?}");
    assert_eq!(a.link.state(), State::Disconnected);
    assert_eq!(a.link.publish("f", b"x", 0, 1), Err(Refused::NotReady), "no id is issued while away");
    // Reconnected (the handshake loads the scripts again, so EVALSHA
    // works): node a publishes with its floor, 10.
    a.reconnect(&redis);
    assert_eq!(a.publish("f", b"after", 10), 11);
    assert_eq!((calls(&redis, "evalsha"), calls(&redis, "eval")), (1, 0), "no NOSCRIPT after a restart");
    // Node b never published here but holds id 20 on another channel from
    // before the restart: its fill raises the counter, and a publisher
    // that knows nothing (floor 0) continues above it.
    b.reconnect(&redis);
    let (last, _, _) = b.range("g", 20, 20);
    assert_eq!(last, 20);
    assert_eq!(a.publish("g", b"x", 0), 21);
}

#[test]
fn noscript_falls_back_to_eval() {
    let redis = redis_or_skip!();
    let mut c = Client::connect(&redis, 0, 100);
    assert_eq!(c.publish("n", b"one", 0), 1);
    raw(&redis, 0, &["SCRIPT", "FLUSH"]);
    // Two pipelined publishes: both get NOSCRIPT, both are sent again
    // with EVAL, which also caches the script for the next EVALSHA.
    c.link.publish("n", b"two", 0, 50).unwrap();
    c.link.publish("n", b"three", 0, 51).unwrap();
    c.wait(|e| matches!(e, Event::Published { tag: 50, id: 2, .. }));
    c.wait(|e| matches!(e, Event::Published { tag: 51, id: 3, .. }));
    assert_eq!(c.publish("n", b"four", 0), 4);
    raw(&redis, 0, &["SCRIPT", "FLUSH"]);
    let (last, messages, _) = c.range("n", 1, 0);
    assert_eq!((last, messages.len()), (4, 3));
    assert_eq!(messages[2].1, Bytes::from_static(b"four"));
    // Three NOSCRIPTs were answered with EVAL: two publishes and the range.
    assert_eq!(calls(&redis, "eval"), 3);
}

/// The reconnect procedure of the module doc, end to end: a subscriber's
/// connection drops, messages are published meanwhile, and after it
/// subscribes again and fills from its last delivered id, it has every
/// message exactly once and in order.
#[test]
fn a_reconnecting_subscriber_fills_its_gap() {
    let redis = redis_or_skip!();
    let mut sub = Client::connect(&redis, 0, 100);
    let mut publisher = Client::connect(&redis, 0, 100);
    let mut order = ChannelOrder::new(0);
    let mut delivered = Vec::new();
    sub.subscribe("g");
    let after = order.fill();
    let (_, messages, _) = sub.range("g", after, after);
    order.range_page(messages, false, &mut delivered);
    for i in 1..=5 {
        publisher.publish("g", format!("m{i}").as_bytes(), 0);
    }
    while order.last() < 5 {
        let (_, id, data) = sub.message();
        assert_eq!(order.message(id, data, &mut delivered), None);
    }
    // The subscriber's connection is lost (not Redis).
    sub.sock.take().unwrap().shutdown(std::net::Shutdown::Both).unwrap();
    for i in 6..=10 {
        publisher.publish("g", format!("m{i}").as_bytes(), 0);
    }
    sub.reconnect(&redis);
    order.interrupted();
    sub.subscribe("g");
    let tag = sub.next_tag();
    sub.link.range("g", order.fill(), order.last(), tag).unwrap();
    for i in 11..=15 {
        publisher.publish("g", format!("m{i}").as_bytes(), 0);
    }
    while order.last() < 15 {
        match sub.next().expect("connected") {
            Event::Message { id, data, .. } => {
                assert_eq!(order.message(id, data, &mut delivered), None);
            }
            Event::Range { messages, more, .. } => order.range_page(messages, more, &mut delivered),
            e => panic!("{e:?}"),
        }
    }
    let ids: Vec<u64> = delivered.iter().map(|m| m.0).collect();
    assert_eq!(ids, (1..=15).collect::<Vec<_>>());
    assert!(delivered.iter().all(|(id, data)| data == format!("m{id}").as_bytes()));
}

/// Lua 5.1 prints numbers of 15 digits and more in exponent form; the
/// scripts format ids with `%d`, exact up to 2^53.
#[test]
fn large_ids_keep_their_digits() {
    let redis = redis_or_skip!();
    let mut c = Client::connect(&redis, 0, 3);
    let floor = (1u64 << 53) - 10;
    assert_eq!(c.publish("big", b"x", floor), floor + 1);
    assert_eq!(c.publish("big", b"y", 0), floor + 2);
    let (last, messages, _) = c.range("big", floor, 0);
    assert_eq!(last, floor + 2);
    assert_eq!(messages.iter().map(|m| m.0).collect::<Vec<_>>(), [floor + 1, floor + 2]);
    assert_eq!(raw(&redis, 0, &["GET", "linger:{big}:seq"]), format!("${}\r\n{}\r\n", 16, floor + 2).into_bytes());
}
