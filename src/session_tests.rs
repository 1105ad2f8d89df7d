//! Tests of `session.rs`.

use super::*;
use crate::pubsub::PubSub;

fn turn() -> Turn {
    Turn { date: reply::http_date(std::time::UNIX_EPOCH), now: 5, idle_timeout_secs: 7, max_requests: 10 }
}

fn text(s: &mut Session) -> String {
    String::from_utf8(s.output().map(|o| o.take_all()).unwrap_or_default()).unwrap()
}

fn held(mode: Mode, chunked: bool, keep_alive: bool) -> Session {
    let mut s = Session::new();
    let start = SubStart {
        channel: 0,
        mode,
        last_id: Some(0),
        filled: true,
        chunked,
        keep_alive,
        http10: !chunked,
        cors: None,
    };
    s.hold(start, 1);
    s
}

#[test]
fn a_held_long_poll_ends_with_204_and_keeps_the_connection() {
    let mut pool = BufPool::new(1024, 1);
    let mut s = held(Mode::LongPoll, false, true);
    assert!(s.end_sub(SubEnd::Empty, &turn(), &mut pool));
    let t = text(&mut s);
    assert!(t.starts_with("HTTP/1.1 204 No Content\r\n") && t.contains("Keep-Alive: timeout=7, max=10"), "{t}");
    assert!(s.close_kind().is_none() && s.subscription().is_none());
    assert!(!s.end_sub(SubEnd::Empty, &turn(), &mut pool), "only once");
}

#[test]
fn shedding_a_stream_writes_its_last_chunk_and_closes_server_first() {
    let mut pool = BufPool::new(1024, 1);
    let mut s = held(Mode::Sse, true, true);
    s.end_sub(SubEnd::Shed, &turn(), &mut pool);
    assert_eq!(text(&mut s), "0\r\n\r\n");
    assert_eq!(s.close_kind(), Some(CloseKind::ServerFirst));
}

#[test]
fn deliveries_frame_messages_and_fill_gaps_from_history() {
    let mut pool = BufPool::new(1024, 1);
    let mut ps = PubSub::new(10, 10);
    let id = ps.open("c", 0).unwrap();
    for data in ["a", "b"] {
        ps.publish(id, data, 0);
    }
    let ch = ps.get(id).unwrap();
    let m2 = ch.message(2).unwrap().clone();
    let enc = [pubsub::stream_payload(Mode::Stream, &m2), pubsub::stream_payload(Mode::Sse, &m2)];
    let mut s = held(Mode::Sse, true, true);
    assert_eq!(s.deliver(ch, &m2, &enc, &turn(), &mut pool), Delivery::Sent);
    let t = text(&mut s);
    assert!(t.contains("id: 1\ndata: a\n\nid: 2\ndata: b\n\n"), "gap filled: {t:?}");
    assert_eq!(s.deliver(ch, &m2, &enc, &turn(), &mut pool), Delivery::Skipped, "no duplicate");
    let mut poll = held(Mode::LongPoll, false, false);
    assert_eq!(poll.deliver(ch, &m2, &enc, &turn(), &mut pool), Delivery::Answered);
    let t = text(&mut poll);
    assert!(t.contains("Connection: close") && t.ends_with("\"data\":\"b\"}]}\n"), "{t}");
}

/// Defect 14.7: a subscriber dropped for being slow got the stream cut
/// in the middle of a chunk.
#[test]
fn a_slow_subscriber_is_let_go_on_a_chunk_boundary_with_the_last_chunk() {
    let mut pool = BufPool::new(1024, 1);
    let mut ps = PubSub::new(1000, 10);
    let id = ps.open("c", 0).unwrap();
    let mut s = held(Mode::Stream, true, true);
    let big = "x".repeat(8000);
    let mut ended = false;
    for _ in 0..200 {
        let n = ps.publish(id, &big, 0);
        let ch = ps.get(id).unwrap();
        let m = ch.message(n).unwrap().clone();
        let enc = [pubsub::stream_payload(Mode::Stream, &m), pubsub::stream_payload(Mode::Sse, &m)];
        if s.deliver(ch, &m, &enc, &turn(), &mut pool) == Delivery::LetGo {
            ended = true;
            break;
        }
        // The client reads a little of the first segment, mid-chunk.
        if n == 3
            && let Some(out) = s.output()
        {
            out.advance(100);
        }
    }
    assert!(ended);
    let rest = s.output().unwrap().take_all();
    assert!(rest.len() < 2 * SUB_SEGMENT, "the unsent queue was dropped");
    assert!(rest.ends_with(b"\r\n0\r\n\r\n"), "ends with the last chunk after a whole one");
}

#[test]
fn timeouts_answer_408_only_when_a_request_was_under_way() {
    let mut pool = BufPool::new(1024, 1);
    let mut silent = Session::new();
    assert!(!silent.timeout(&turn(), &mut pool));
    assert_eq!(silent.close_kind(), Some(CloseKind::ServerFirst));
    let mut slow = Session::new();
    slow.buffers(&mut pool).input.extend_from_slice(b"GET / HT");
    assert!(slow.eviction_notice(&turn().date).is_some());
    assert!(slow.timeout(&turn(), &mut pool));
    assert!(text(&mut slow).starts_with("HTTP/1.1 408 Request Timeout\r\n"));
    let refusal = String::from_utf8(Session::refusal(&turn().date)).unwrap();
    assert!(refusal.starts_with("HTTP/1.1 503 ") && refusal.contains("Retry-After: 1\r\n"));
}
