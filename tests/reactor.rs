//! The reactor driven turn by turn inside the test, on a manual clock: every
//! timer (idle, header, send, long poll, SSE ping, stream lifetime, the
//! client-first grace, linger) is tested by moving the clock, never by
//! sleeping. Clients are real sockets on 127.0.0.1.

mod support;

use std::time::{Duration, UNIX_EPOCH};

use support::TempDir;
use support::driven::{Client, Driven, WALL_AT_START_MS};

const GET: &[u8] = b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n";

/// A client that has been answered once and is now idle.
fn idle_client(d: &mut Driven) -> (Client, support::Response) {
    let mut c = d.connect();
    d.send(&mut c, GET);
    let r = d.response(&mut c);
    assert_eq!(r.status, 200);
    (c, r)
}

fn keep_alive_timeout(r: &support::Response) -> u64 {
    let ka = r.header("keep-alive").expect("Keep-Alive hint");
    ka.strip_prefix("timeout=").and_then(|v| v.split(',').next()).unwrap().parse().unwrap()
}

/// Seed 000 and Gettys & Freier §11: an idle connection is reaped on the
/// idle timeout, with the handshake (FIN, not a reset).
#[test]
fn an_idle_connection_is_reaped_on_the_idle_timeout_with_the_handshake() {
    let mut d = Driven::start(&["--idle-timeout", "0.3"]);
    let (mut c, _) = idle_client(&mut d);
    d.advance(299);
    assert!(d.silent(&mut c), "not before the timeout");
    d.advance(2);
    let (rest, end) = d.eof(&mut c);
    assert!(rest.is_empty() && end.is_ok(), "a clean EOF: {end:?}");
    assert_eq!(d.server.counters().reaped, 1);
}

/// A keep-alive connection in use is not idle: every answered request
/// starts its idle timer again (the timer used to run from the first time
/// the connection went idle, so a busy connection could be reaped).
#[test]
fn the_idle_timer_restarts_with_every_request() {
    let mut d = Driven::start(&["--idle-timeout", "1", "--min-idle-timeout", "1"]);
    let (mut c, _) = idle_client(&mut d);
    for _ in 0..6 {
        d.advance(600);
        d.send(&mut c, GET);
        let r = d.response(&mut c);
        assert_eq!(r.status, 200);
        assert!(!r.closes());
    }
    assert_eq!(d.server.counters().reaped, 0);
    d.advance(1001);
    assert!(d.eof(&mut c).1.is_ok());
    assert_eq!(d.server.counters().reaped, 1);
}

/// §11: the idle timeout (and its Keep-Alive hint) shrinks as slots fill,
/// and idle clients are then reaped on the shorter timeout.
#[test]
fn idle_timeout_and_keep_alive_hint_shrink_as_slots_fill() {
    let mut d = Driven::start(&["--max-conns", "20", "--idle-timeout", "10", "--min-idle-timeout", "0.1"]);
    assert_eq!(d.gauges().idle_timeout_ms, 10_000, "quiet: the full timeout");
    let mut clients = Vec::new();
    let mut hints = Vec::new();
    for _ in 0..19 {
        let (c, r) = idle_client(&mut d);
        hints.push(keep_alive_timeout(&r));
        clients.push(c);
    }
    assert_eq!(hints[0], 10);
    assert!(hints.windows(2).all(|w| w[1] <= w[0]), "hints never grow: {hints:?}");
    assert!(*hints.last().unwrap() < 5, "hint shrank: {hints:?}");
    let timeout = d.gauges().idle_timeout_ms;
    assert!(timeout < 2_000, "19 of 20 slots: {timeout} ms");
    d.advance(timeout + 1);
    for c in &mut clients {
        assert!(d.eof(c).1.is_ok(), "reaped on the short timeout");
    }
    assert_eq!(d.server.counters().reaped, 19);
}

/// RFC 9110 §15.5.9: a request head that takes too long gets 408 and a
/// close; trickling bytes does not restart the timer; a connection that
/// sends nothing is closed without a response.
#[test]
fn a_slow_head_gets_408_trickling_does_not_help_and_silence_is_closed() {
    let mut d = Driven::start(&["--header-timeout", "0.3"]);
    let mut slow = d.connect();
    d.send(&mut slow, b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nX-Slow: ");
    let mut trickle = d.connect();
    d.send(&mut trickle, b"GET /");
    let mut silent = d.connect();
    for _ in 0..2 {
        d.advance(100);
        d.send(&mut trickle, b"a");
    }
    d.advance(99);
    assert!(d.silent(&mut slow) && d.silent(&mut trickle) && d.silent(&mut silent), "not before 300 ms");
    d.advance(1);
    for c in [&mut slow, &mut trickle] {
        let r = d.response(c);
        assert_eq!(r.status, 408);
        assert!(r.closes());
        let (rest, end) = d.eof(c);
        assert!(rest.is_empty() && end.is_ok(), "{end:?}");
    }
    let (bytes, end) = d.eof(&mut silent);
    assert!(bytes.is_empty() && end.is_ok(), "closed without a response: {:?}", String::from_utf8_lossy(&bytes));
    assert_eq!(d.server.counters().header_timeouts, 3);
}

/// A body nobody reads is read to its end before the answer; one that
/// never ends is bounded by the header timeout like a slow head.
#[test]
fn a_slow_body_is_bounded_by_the_header_timeout() {
    let mut d = Driven::start(&["--header-timeout", "0.3"]);
    let mut c = d.connect();
    d.send(&mut c, b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n0123456789");
    d.advance(299);
    assert!(d.silent(&mut c));
    d.advance(1);
    let r = d.response(&mut c);
    assert_eq!((r.status, r.closes()), (408, true));
    assert!(d.eof(&mut c).1.is_ok());
}

/// A client that stops reading its response is dropped after the send
/// timeout, and the unread response was never held in memory.
#[test]
fn a_client_that_stops_reading_is_dropped_after_the_send_timeout() {
    let dir = TempDir::new("driven-slowreader");
    dir.write("big.bin", &vec![1u8; 32 << 20]);
    let mut d = Driven::start(&["--root", dir.arg(), "--send-timeout", "0.5"]);
    let mut slow = d.connect();
    // A fixed receive buffer: the kernel would otherwise grow it now and
    // then, and each growth would be progress that restarts the timer.
    let small: libc::c_int = 64 * 1024;
    // SAFETY: setsockopt on our own socket with a pointer to a live c_int.
    unsafe {
        use std::os::fd::AsRawFd;
        let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        libc::setsockopt(
            slow.sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            size,
        );
    }
    d.send(&mut slow, b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    d.until("the socket to fill", |d| d.gauges().writing == 1);
    for _ in 0..20 {
        d.turn();
    }
    assert!(d.gauges().buffer_bytes < 1 << 20, "the file is not read into memory");
    d.advance(499);
    assert_eq!(d.gauges().writing, 1);
    d.advance(2);
    assert_eq!((d.gauges().writing, d.gauges().active), (0, 0));
    assert_eq!(d.server.counters().send_timeouts, 1);
}

/// Gettys & Freier §5, §9: when every slot is taken, a request head under
/// way for over a second is evicted before an idle client, and is told why.
#[test]
fn a_slow_head_is_evicted_before_an_idle_client() {
    let mut d = Driven::start(&["--max-conns", "3", "--header-timeout", "30"]);
    let (mut idle, _) = idle_client(&mut d);
    let mut slow = d.connect();
    d.send(&mut slow, b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nX-Slow: ");
    d.advance(1100);
    let (_second_idle, _) = idle_client(&mut d);
    let (_newcomer, r) = idle_client(&mut d);
    assert_eq!(r.status, 200);
    let notice = d.response(&mut slow);
    assert_eq!((notice.status, notice.closes()), (408, true));
    assert!(d.eof(&mut slow).1.is_ok());
    assert!(d.silent(&mut idle), "the idle client keeps its connection");
    assert_eq!(d.server.counters().evicted, 1);
}

/// RFC 6202 §5.5: a held long poll that no message answers gets 204 when
/// its timeout runs out, and the connection carries on.
#[test]
fn a_long_poll_is_answered_204_on_its_timeout() {
    let mut d = Driven::start(&["--longpoll-timeout", "0.3"]);
    let mut c = d.connect();
    for round in 0..2 {
        d.send(&mut c, b"GET /sub/quiet HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(d.gauges().held, 1);
        d.advance(299);
        assert!(d.silent(&mut c), "round {round}: held for the whole timeout");
        d.advance(1);
        let r = d.response(&mut c);
        assert_eq!(r.status, 204, "round {round}: {}", r.head);
        assert_eq!(r.header("cache-control"), Some("no-cache"), "§5.6");
        assert!(r.header("content-length").is_none() && r.header("transfer-encoding").is_none(), "{}", r.head);
        assert!(!r.closes(), "a timeout does not end the connection");
    }
    assert_eq!(d.server.channels().channels(), 0, "a channel nobody published to leaves nothing");
    d.send(&mut c, b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = d.response(&mut c);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"Hello, World!"[..]), "no stray bytes after the 204s");
}

/// §4.3 and §3.2: an event stream gets a keep-alive comment every
/// `--sse-ping`, and ends with its last chunk after `--stream-lifetime`.
#[test]
fn event_streams_ping_then_end_after_their_lifetime() {
    let mut d = Driven::start(&["--sse-ping", "0.2", "--stream-lifetime", "1"]);
    let mut c = d.connect();
    d.send(&mut c, b"GET /sub/live HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n");
    d.until("the stream's head", |_| {
        c.pump();
        c.take_head().is_some()
    });
    c.buf.clear();
    for _ in 0..4 {
        d.advance(199);
        c.pump();
        assert!(c.buf.is_empty() || c.buf.starts_with(b"d\r\nretry"), "no ping early: {:?}", c.buf);
        c.buf.clear();
        d.advance(1);
        c.pump();
        assert_eq!(c.buf, b"8\r\n: ping\n\n\r\n");
        c.buf.clear();
    }
    d.advance(200);
    c.pump();
    assert_eq!(c.buf, b"0\r\n\r\n", "the lifetime ends the stream with its last chunk");
    // The connection itself carries on: the client may ask again on it.
    assert_eq!((d.gauges().streaming, d.gauges().idle), (0, 1));
    c.buf.clear();
    assert_eq!(d.response_to(&mut c, GET).status, 200);
}

/// The `Date` of every response names the second it was sent in: the
/// server reads the wall clock only when its second may have turned.
#[test]
fn date_follows_the_wall_clock_second_by_second() {
    let mut d = Driven::start(&[]);
    let (mut c, _) = idle_client(&mut d);
    let secs = |r: &support::Response| {
        let date = httpdate::parse_http_date(r.header("date").expect("Date")).unwrap();
        date.duration_since(UNIX_EPOCH).unwrap().as_secs()
    };
    let start_secs = WALL_AT_START_MS / 1000;
    // Wall time starts 500 ms into a second: step by 100 ms across two turns.
    for step in 1..=25u64 {
        d.advance(100);
        d.send(&mut c, GET);
        let r = d.response(&mut c);
        let wall_ms = WALL_AT_START_MS + step * 100;
        assert_eq!(secs(&r), wall_ms / 1000, "step {step}");
    }
    assert!(secs(&d.response_to(&mut c, GET)) >= start_secs + 3);
}

/// The file cache revalidates a file at most once a second: a change on
/// disk is served from the next second on, never a mix of old and new.
#[test]
fn cached_files_follow_changes_on_disk_within_a_second() {
    let dir = TempDir::new("driven-revalidate");
    dir.write("f.txt", b"first version");
    let mut d = Driven::start(&["--root", dir.arg()]);
    let mut c = d.connect();
    let get = b"GET /f.txt HTTP/1.1\r\nHost: t\r\n\r\n";
    assert_eq!(d.response_to(&mut c, get).text(), "first version");
    dir.write("f.txt", b"second, longer version");
    d.advance(1000);
    let r = d.response_to(&mut c, get);
    assert_eq!((r.text().as_str(), r.header("content-length")), ("second, longer version", Some("22")));
    std::fs::remove_file(dir.path().join("f.txt")).unwrap();
    d.advance(1000);
    assert_eq!(d.response_to(&mut c, get).status, 404);
}

/// Gettys & Freier §7: a client that asked to close gets a second to close
/// first; past it the server shuts its write half, and past the linger
/// timeout it closes outright.
#[test]
fn a_client_that_asked_to_close_gets_a_grace_then_the_linger_timeout() {
    let mut d = Driven::start(&["--linger-timeout", "2"]);
    let mut c = d.connect();
    d.send(&mut c, b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(d.response(&mut c).status, 200);
    d.advance(999);
    assert!(d.silent(&mut c), "waits for the client's FIN first");
    assert_eq!(d.gauges().lingering, 1);
    d.advance(1);
    assert!(d.eof(&mut c).1.is_ok(), "then sends its own");
    d.advance(1999);
    assert_eq!(d.gauges().lingering, 1, "draining");
    d.advance(1);
    assert_eq!(d.gauges().active, 0, "closed after the linger timeout");
}

/// A graceful shutdown: held polls are answered, idle connections closed
/// with the handshake, a request already in flight is answered with
/// `Connection: close`, and the server is done when all are gone.
#[test]
fn shutdown_answers_held_polls_closes_idle_ones_and_finishes() {
    let mut d = Driven::start(&[]);
    let (mut idle, _) = idle_client(&mut d);
    let mut poll = d.connect();
    d.send(&mut poll, b"GET /sub/x HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut late = d.connect();
    d.send(&mut late, b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n");
    d.server.shutdown();
    assert!(d.eof(&mut idle).1.is_ok());
    let r = d.response(&mut poll);
    assert_eq!((r.status, r.closes()), (204, true));
    d.send(&mut late, b"\r\n");
    let r = d.response(&mut late);
    assert_eq!((r.status, r.closes()), (200, true));
    // The clients close once answered; the server is then done.
    drop((idle, poll, late));
    d.until("every connection gone", |d| d.server.finished());
    assert_ne!(d.server.poll_timeout(), Some(Duration::ZERO));
}
