//! Drive the service from byte pieces the way the server does (buffer,
//! serve until it needs input, consume what it says), with no sockets. The
//! property test, the fuzz target and the service's own tests use it:
//! bytes in, responses out.

use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use crate::files::Files;
use crate::http::reply::http_date;
use crate::http::{Output, Proto};
use crate::pubsub::PubSub;
use crate::service::{Ctx, Limits, Service, Step};
use crate::session::Turn;
use crate::status::{Counters, Gauges};

/// A service and the state it works on, outside any server.
pub struct World {
    pub service: Service,
    pub channels: PubSub,
    pub stats: Counters,
    pub turn: Turn,
    pub now_secs: u64,
}

impl World {
    /// The built-in site with the given limits.
    pub fn new(limits: Limits) -> World {
        let now_secs = 1_700_000_000;
        let now = UNIX_EPOCH + Duration::from_secs(now_secs);
        // The built-in site needs no file system: cannot fail.
        let files = Files::new(None, now).unwrap_or_else(|e| panic!("built-in site: {e}"));
        World {
            service: Service::new(files, limits, None, None),
            channels: PubSub::new(8, 1000),
            stats: Counters::default(),
            turn: Turn { date: http_date(now), now: 0, idle_timeout_secs: 60, max_requests: limits.max_requests },
            now_secs,
        }
    }

    /// Small limits, so that limits are reached by small inputs.
    pub fn small() -> World {
        World::new(Limits { max_head: 1024, max_body: 4096, max_requests: 50 })
    }

    /// One serve step for a client at `peer`.
    pub fn serve(&mut self, proto: &mut Proto, input: &[u8], out: &mut Output, peer: SocketAddr) -> (usize, Step) {
        let gauges = Gauges::default;
        let mut ctx = Ctx {
            turn: &self.turn,
            now_secs: self.now_secs,
            peer,
            stats: &mut self.stats,
            channels: &mut self.channels,
            gauges: &gauges,
            seat: None,
        };
        self.service.serve_one(proto, input, out, &mut ctx)
    }
}

/// A loopback client, as most tests use.
pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9))
}

/// Feed `pieces` one after another; return everything written.
/// Panics if the service breaks its own contract (consumes more than it
/// was given), which is what a fuzzer should find.
pub fn replay(world: &mut World, pieces: &[&[u8]]) -> Vec<u8> {
    replay_state(world, pieces).0
}

/// As `replay`, also returning the protocol state at the end: done means
/// the connection will be closed, so the last response must have said so.
pub fn replay_state(world: &mut World, pieces: &[&[u8]]) -> (Vec<u8>, Proto) {
    let (out, proto, _) = replay_to_end(world, pieces);
    (out, proto)
}

/// As `replay_state`, also returning the step the replay ended on:
/// `NeedInput` (the pieces ran out), `Done`, `Subscribe` or `Publish`.
/// A long poll held at the end has its response still to come (the server
/// writes it when a message arrives or the poll times out), so the last
/// response in the output is then not the connection's last.
pub fn replay_to_end(world: &mut World, pieces: &[&[u8]]) -> (Vec<u8>, Proto, Step) {
    let mut proto = Proto::new();
    let mut out = Output::default();
    let mut input = Vec::new();
    let mut start = 0;
    let mut end = Step::NeedInput;
    'pieces: for piece in pieces {
        input.extend_from_slice(piece);
        loop {
            let available = input.len() - start;
            let (n, step) = world.serve(&mut proto, &input[start..], &mut out, loopback());
            assert!(n <= available, "consumed {n} of {available}");
            start += n;
            match step {
                Step::Answered => continue,
                Step::NeedInput => break,
                // Held or closing: nothing more is read.
                Step::Done | Step::Subscribe(_) | Step::Publish(_) => {
                    end = step;
                    break 'pieces;
                }
            }
        }
    }
    (out.take_all(), proto, end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::Mode;

    /// Found by the fuzz target, whose check was wrong: a publish answered
    /// with keep-alive, then an HTTP/1.0 long poll held. The connection is
    /// done reading, but it is not closing after the publish's response:
    /// the poll's own (with `Connection: close`) is still to come, and the
    /// end step says so.
    #[test]
    fn a_long_poll_held_at_the_end_is_reported_as_the_end() {
        let input = b"POST /pub/c HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /sub/quiet HTTP/1.0\r\nHost: a\r\n\r\n";
        for piece in [1, 32, input.len()] {
            let pieces: Vec<&[u8]> = input.chunks(piece).collect();
            let (out, proto, end) = replay_to_end(&mut World::small(), &pieces);
            let text = String::from_utf8_lossy(&out);
            assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
            assert!(text.contains("Keep-Alive: ") && text.ends_with("{\"id\":1,\"subscribers\":0}\n"), "{text}");
            assert!(proto.is_done(), "HTTP/1.0 without keep-alive: nothing is read after the poll");
            let Step::Subscribe(sub) = end else { panic!("ended on {end:?}") };
            assert_eq!((sub.mode, sub.keep_alive), (Mode::LongPoll, false));
        }
        let (_, _, end) = replay_to_end(&mut World::small(), &[b"GET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n"]);
        assert_eq!(end, Step::NeedInput);
    }
}
