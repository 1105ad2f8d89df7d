//! `Link` driven with byte strings: no Redis, no socket.

use super::*;

const SHA_P: &str = "1111111111111111111111111111111111111111";
const SHA_R: &str = "2222222222222222222222222222222222222222";
const HELLO_REPLY: &[u8] = b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n";

fn blob(b: &[u8]) -> Vec<u8> {
    [format!("${}\r\n", b.len()).as_bytes(), b, b"\r\n"].concat()
}

fn push(kind: &str, channel: &str, last: &[u8]) -> Vec<u8> {
    [b">3\r\n".as_slice(), &blob(kind.as_bytes()), &blob(channel.as_bytes()), last].concat()
}

fn message(channel: &str, id: u64, data: &[u8]) -> Vec<u8> {
    let payload = [format!("{id}\n").as_bytes(), data].concat();
    push("message", &format!("linger:{{{channel}}}"), &blob(&payload))
}

fn confirm(kind: &str, channel: &str) -> Vec<u8> {
    push(kind, &format!("linger:{{{channel}}}"), b":1\r\n")
}

/// The range script's reply: `{last, {{"<id>-1", {"d", data}}, ...}}`.
fn range_reply(last: u64, ids: impl Iterator<Item = u64>) -> Vec<u8> {
    let entries: Vec<Vec<u8>> = ids
        .map(|id| {
            let data = format!("m{id}");
            [b"*2\r\n".as_slice(), &blob(format!("{id}-1").as_bytes()), b"*2\r\n", &blob(b"d"), &blob(data.as_bytes())]
                .concat()
        })
        .collect();
    [format!("*2\r\n:{last}\r\n*{}\r\n", entries.len()).as_bytes(), &entries.concat()].concat()
}

/// The commands in `bytes`, each as its arguments.
fn commands(bytes: &[u8]) -> Vec<Vec<Vec<u8>>> {
    let mut framer = Framer::default();
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(n) = framer.next_frame(&bytes[start..]).unwrap() {
        let buf = &bytes[start..start + n];
        let f = codec::decode(buf).unwrap();
        out.push(codec::elements(&f).unwrap().iter().map(|a| codec::bytes(a, buf).unwrap().to_vec()).collect());
        start += n;
    }
    assert_eq!(start, bytes.len(), "trailing bytes in the output");
    out
}

fn take_commands(link: &mut Link) -> Vec<Vec<Vec<u8>>> {
    let out = link.output().to_vec();
    link.consumed(out.len());
    commands(&out)
}

fn events(link: &mut Link) -> Vec<Event> {
    std::iter::from_fn(|| link.poll_event()).collect()
}

fn ready_link() -> Link {
    let mut link = Link::new(0, 100, 600_000);
    link.on_connected();
    take_commands(&mut link);
    link.feed(&[HELLO_REPLY, &blob(SHA_P.as_bytes()), &blob(SHA_R.as_bytes())].concat());
    assert_eq!(events(&mut link), [Event::Ready]);
    link
}

fn args(cmd: &[Vec<u8>]) -> Vec<String> {
    cmd.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

#[test]
fn handshake_then_ready() {
    let mut link = Link::new(3, 100, 600_000);
    assert_eq!(link.publish("c", b"x", 0, 1), Err(Refused::NotReady));
    link.on_connected();
    assert_eq!(link.state(), State::Handshaking);
    let cmds = take_commands(&mut link);
    assert_eq!(args(&cmds[0]), ["HELLO", "3"]);
    assert_eq!(args(&cmds[1]), ["SELECT", "3"]);
    assert_eq!(args(&cmds[2])[..2], ["SCRIPT", "LOAD"]);
    assert_eq!(cmds[2][2], script::PUBLISH_LUA.as_bytes());
    assert_eq!(cmds[3][2], script::RANGE_LUA.as_bytes());
    assert_eq!(link.subscribe("c"), Err(Refused::NotReady));
    link.feed(HELLO_REPLY);
    link.feed(b"+OK\r\n");
    link.feed(&blob(SHA_P.as_bytes()));
    assert_eq!(events(&mut link), []);
    link.feed(&blob(SHA_R.as_bytes()));
    assert_eq!(events(&mut link), [Event::Ready]);
    assert!(link.is_ready());
    // Database 0 needs no SELECT.
    let mut link = Link::new(0, 100, 600_000);
    link.on_connected();
    assert_eq!(take_commands(&mut link).len(), 3);
}

#[test]
fn refused_handshakes_are_fatal() {
    for (reply, what) in [
        (&b"-ERR unknown command 'HELLO'\r\n"[..], "HELLO 3 refused"),
        (b"-NOAUTH Authentication required.\r\n", "HELLO 3 refused"),
    ] {
        let mut link = Link::new(0, 100, 600_000);
        link.on_connected();
        link.feed(reply);
        let ev = events(&mut link);
        assert!(matches!(&ev[..], [Event::Error { what: w }] if w.contains(what)), "{ev:?}");
        assert_eq!(link.state(), State::Broken);
    }
    let mut link = Link::new(0, 100, 600_000);
    link.on_connected();
    link.feed(&[HELLO_REPLY, b"$3\r\nabc\r\n"].concat());
    assert!(matches!(&events(&mut link)[..], [Event::Error { what }] if what.contains("SHA1")));
}

#[test]
fn publish_sends_the_script_and_returns_the_id() {
    let mut link = ready_link();
    link.publish("news", b"a\r\n\0b", 41, 7).unwrap();
    let cmds = take_commands(&mut link);
    assert_eq!(
        args(&cmds[0]),
        [
            "EVALSHA",
            SHA_P,
            "2",
            "linger:{news}:seq",
            "linger:{news}:log",
            "a\r\n\0b",
            "41",
            "100",
            "600000",
            "linger:{news}"
        ]
    );
    link.feed(b":42\r\n");
    assert_eq!(events(&mut link), [Event::Published { tag: 7, channel: "news".into(), id: 42 }]);
    link.publish("news", b"x", 0, 8).unwrap();
    link.feed(b"-ERR wrong kind of value\r\n");
    assert_eq!(
        events(&mut link),
        [Event::PublishFailed { tag: 8, channel: "news".into(), error: "ERR wrong kind of value".into() }]
    );
    assert!(link.is_ready(), "an error reply is not a protocol error");
}

#[test]
fn noscript_falls_back_to_eval() {
    let mut link = ready_link();
    link.publish("c", b"one", 0, 1).unwrap();
    link.range("c", 5, 0, 2).unwrap();
    take_commands(&mut link);
    link.feed(b"-NOSCRIPT No matching script. Please use EVAL.\r\n");
    link.feed(b"-NOSCRIPT No matching script. Please use EVAL.\r\n");
    assert_eq!(events(&mut link), []);
    let cmds = take_commands(&mut link);
    assert_eq!(args(&cmds[0])[..3], ["EVAL", script::PUBLISH_LUA, "2"]);
    assert_eq!(args(&cmds[0])[5], "one");
    assert_eq!(args(&cmds[1])[..3], ["EVAL", script::RANGE_LUA, "2"]);
    assert_eq!(args(&cmds[1])[5], "6-0");
    link.feed(b":1\r\n");
    link.feed(&range_reply(1, std::iter::empty()));
    assert_eq!(
        events(&mut link),
        [
            Event::Published { tag: 1, channel: "c".into(), id: 1 },
            Event::Range { tag: 2, channel: "c".into(), last_id: 1, messages: vec![], more: false },
        ]
    );
    // A second NOSCRIPT for an EVAL is an ordinary failure, not a loop.
    link.publish("c", b"two", 0, 3).unwrap();
    link.feed(b"-NOSCRIPT x\r\n");
    link.feed(b"-NOSCRIPT x\r\n");
    assert!(matches!(&events(&mut link)[..], [Event::PublishFailed { tag: 3, .. }]));
}

#[test]
fn pushes_interleave_with_replies_without_consuming_them() {
    let mut link = ready_link();
    link.subscribe("c").unwrap();
    link.publish("c", b"hi", 0, 1).unwrap();
    link.last_id("c", 2).unwrap();
    let cmds = take_commands(&mut link);
    assert_eq!(args(&cmds[0]), ["SUBSCRIBE", "linger:{c}"]);
    assert_eq!(args(&cmds[2]), ["GET", "linger:{c}:seq"]);
    // Redis 7.0 writes the script's own PUBLISH before the script's reply.
    let wire = [
        confirm("subscribe", "c"),
        message("c", 1, b"hi"),
        b":1\r\n".to_vec(),
        message("c", 2, b"from elsewhere"),
        b"$1\r\n2\r\n".to_vec(),
    ]
    .concat();
    link.feed(&wire);
    assert_eq!(
        events(&mut link),
        [
            Event::Subscribed { channel: "c".into() },
            Event::Message { channel: "c".into(), id: 1, data: Bytes::from_static(b"hi") },
            Event::Published { tag: 1, channel: "c".into(), id: 1 },
            Event::Message { channel: "c".into(), id: 2, data: Bytes::from_static(b"from elsewhere") },
            Event::LastId { tag: 2, channel: "c".into(), id: 2 },
        ]
    );
    link.last_id("none", 3).unwrap();
    link.unsubscribe("c").unwrap();
    link.feed(&[b"_\r\n".to_vec(), message("c", 3, b"late"), confirm("unsubscribe", "c")].concat());
    assert_eq!(
        events(&mut link),
        [
            Event::LastId { tag: 3, channel: "none".into(), id: 0 },
            Event::Message { channel: "c".into(), id: 3, data: Bytes::from_static(b"late") },
            Event::Unsubscribed { channel: "c".into() },
        ]
    );
}

/// Everything a busy connection might receive, split in two at every byte
/// boundary, gives the same events as fed whole.
#[test]
fn split_at_every_byte_boundary() {
    let setup = |link: &mut Link| {
        link.subscribe("c").unwrap();
        link.publish("c", b"x", 0, 1).unwrap();
        link.range("c", 0, 0, 2).unwrap();
        link.last_id("c", 3).unwrap();
    };
    let wire = [
        confirm("subscribe", "c"),
        message("c", 1, b"a\r\nb\0"),
        b":1\r\n".to_vec(),
        range_reply(1, 1..=1),
        message("c", 2, b""),
        b"$1\r\n2\r\n".to_vec(),
    ]
    .concat();
    let mut whole = ready_link();
    setup(&mut whole);
    whole.feed(&wire);
    let want = events(&mut whole);
    assert_eq!(want.len(), 6);
    for cut in 0..=wire.len() {
        let mut link = ready_link();
        setup(&mut link);
        link.feed(&wire[..cut]);
        let mut got = events(&mut link);
        link.feed(&wire[cut..]);
        got.extend(events(&mut link));
        assert_eq!(got, want, "cut at {cut}");
    }
    // And one byte at a time.
    let mut link = ready_link();
    setup(&mut link);
    let mut got = Vec::new();
    for b in &wire {
        link.feed(std::slice::from_ref(b));
        got.extend(events(&mut link));
    }
    assert_eq!(got, want);
}

#[test]
fn ranges_come_in_pages() {
    let mut link = ready_link();
    link.range("c", 10, 10, 9).unwrap();
    let cmds = take_commands(&mut link);
    assert_eq!(args(&cmds[0])[3..], ["linger:{c}:seq", "linger:{c}:log", "11-0", "64", "10", "600000"]);
    let first = 11..11 + RANGE_PAGE as u64;
    link.feed(&range_reply(100, first.clone()));
    let ev = events(&mut link);
    let [Event::Range { tag: 9, last_id: 100, messages, more: true, .. }] = &ev[..] else { panic!("{ev:?}") };
    assert_eq!(messages.iter().map(|m| m.0).collect::<Vec<_>>(), first.collect::<Vec<_>>());
    assert_eq!(messages[0].1, Bytes::from_static(b"m11"));
    // The link asked for the next page itself, without raising the floor.
    let cmds = take_commands(&mut link);
    assert_eq!(args(&cmds[0])[5..], ["75-0", "64", "0", "600000"]);
    link.feed(&range_reply(100, 75..=100));
    let ev = events(&mut link);
    assert!(matches!(&ev[..], [Event::Range { tag: 9, more: false, messages, .. }] if messages.len() == 26));
    link.range("c", 0, 0, 10).unwrap();
    link.feed(b"*2\r\n:1\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*0\r\n");
    assert!(matches!(&events(&mut link)[..], [Event::Error { what }] if what.contains("malformed range")));
}

#[test]
fn touch_refreshes_both_keys() {
    let mut link = ready_link();
    link.touch("c").unwrap();
    let cmds = take_commands(&mut link);
    assert_eq!(args(&cmds[0]), ["PEXPIRE", "linger:{c}:seq", "600000"]);
    assert_eq!(args(&cmds[1]), ["PEXPIRE", "linger:{c}:log", "600000"]);
    link.feed(b":1\r\n:0\r\n");
    assert_eq!(events(&mut link), []);
    assert_eq!(link.in_flight(), 0);
}

#[test]
fn disconnect_fails_what_is_in_flight() {
    let mut link = ready_link();
    link.publish("c", b"x", 0, 1).unwrap();
    link.range("c", 0, 0, 2).unwrap();
    link.last_id("c", 3).unwrap();
    link.subscribe("c").unwrap();
    link.feed(b":5");
    link.on_disconnected();
    let ev = events(&mut link);
    assert!(matches!(
        &ev[..],
        [Event::PublishFailed { tag: 1, .. }, Event::QueryFailed { tag: 2, .. }, Event::QueryFailed { tag: 3, .. }]
    ));
    assert_eq!((link.state(), link.output(), link.in_flight()), (State::Disconnected, &b""[..], 0));
    assert_eq!(link.publish("c", b"x", 0, 4), Err(Refused::NotReady));
    // A fresh handshake on the next connection, nothing left from before.
    link.on_connected();
    assert_eq!(args(&take_commands(&mut link)[0]), ["HELLO", "3"]);
}

#[test]
fn protocol_errors_break_the_link() {
    let cases: [(&[u8], &str); 5] = [
        (b":1\r\n", "a reply to no request"),
        (b"@oops\r\n", "0x40"),
        (b"$99999999999\r\n", "limit"),
        (b">3\r\n$9\r\nsubscribe\r\n$10\r\nlinger:{c}\r\n:1\r\n", "unexpected subscribe push"),
        (b">2\r\n$7\r\nmessage\r\n$10\r\nlinger:{c}\r\n", "malformed message push"),
    ];
    for (wire, what) in cases {
        let mut link = ready_link();
        link.feed(wire);
        let ev = events(&mut link);
        assert!(matches!(&ev[..], [Event::Error { what: w }] if w.contains(what)), "{what}: {ev:?}");
        assert_eq!(link.state(), State::Broken);
        link.feed(b":1\r\n");
        assert_eq!(events(&mut link), [], "a broken link reads nothing more");
        assert_eq!(link.touch("c"), Err(Refused::NotReady));
    }
    // A refused SUBSCRIBE (ACLs) is an error reply, and fatal.
    let mut link = ready_link();
    link.subscribe("c").unwrap();
    link.feed(b"-NOPERM this user has no permissions to access one of the channels\r\n");
    assert!(matches!(&events(&mut link)[..], [Event::Error { what }] if what.contains("NOPERM")));
}

#[test]
fn foreign_pushes_are_ignored() {
    let mut link = ready_link();
    link.feed(
        &[
            message("c", 1, b"ok"),
            push("message", "linger:{c}", &blob(b"no id")),
            push("message", "other", &blob(b"1\nx")),
        ]
        .concat(),
    );
    link.feed(b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n");
    assert_eq!(events(&mut link), [Event::Message { channel: "c".into(), id: 1, data: Bytes::from_static(b"ok") }]);
    assert!(link.is_ready());
}

#[test]
fn requests_are_bounded() {
    let mut link = ready_link();
    assert_eq!(link.publish("a/b", b"x", 0, 1), Err(Refused::BadChannel));
    assert_eq!(link.subscribe(""), Err(Refused::BadChannel));
    assert_eq!(link.publish("c", &vec![0; MAX_MESSAGE + 1], 0, 1), Err(Refused::TooLarge));
    let big = vec![7u8; MAX_MESSAGE];
    let mut n = 0;
    while link.publish("c", &big, 0, n).is_ok() {
        n += 1;
    }
    assert_eq!(link.publish("c", &big, 0, n), Err(Refused::Busy));
    assert_eq!(n as usize, MAX_QUEUED_BYTES / MAX_MESSAGE / 2, "output and held data both count");
    // Writing the output frees half of the budget; replies free the rest.
    let len = link.output().len();
    link.consumed(len);
    assert!(link.publish("c", &big, 0, n).is_ok());
    let mut link = ready_link();
    while link.last_id("c", 0).is_ok() {}
    assert_eq!(link.in_flight(), MAX_PENDING - 1);
}

#[test]
fn output_is_written_in_pieces() {
    let mut link = ready_link();
    link.publish("c", b"hello", 0, 1).unwrap();
    link.publish("c", b"world", 0, 2).unwrap();
    let all = link.output().to_vec();
    let mut written = Vec::new();
    while !link.output().is_empty() {
        let n = link.output().len().min(7);
        written.extend_from_slice(&link.output()[..n]);
        link.consumed(n);
    }
    assert_eq!(written, all);
    assert_eq!(commands(&written).len(), 2);
}
