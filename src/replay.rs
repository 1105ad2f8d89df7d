//! Drive the service from byte pieces the way the server does (buffer,
//! serve until it needs input, consume what it says), with no sockets. The
//! property test and the fuzz target use it: bytes in, responses out.

use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use crate::files::Files;
use crate::http::reply::http_date;
use crate::http::{Output, Proto};
use crate::pubsub::PubSub;
use crate::service::{Ctx, Limits, Service, Step};
use crate::status::Stats;

/// A service over the built-in site with small limits, so that limits are
/// reached by small inputs.
pub fn small_service() -> Service {
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    // The built-in site needs no file system: cannot fail.
    let files = Files::new(None, now).unwrap_or_else(|e| panic!("built-in site: {e}"));
    let limits = Limits { max_head: 1024, max_body: 4096, max_requests: 50 };
    Service::new(files, limits, None, PubSub::new(8), None)
}

/// Feed `pieces` one after another; return everything written.
/// Panics if the service breaks its own contract (consumes more than it
/// was given), which is what a fuzzer should find.
pub fn replay(service: &mut Service, pieces: &[&[u8]]) -> Vec<u8> {
    let date = http_date(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let peer: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 9));
    let mut stats = Stats::default();
    let mut proto = Proto::new();
    let mut out = Output::default();
    let mut input = Vec::new();
    let mut start = 0;
    'pieces: for piece in pieces {
        input.extend_from_slice(piece);
        loop {
            let mut ctx =
                Ctx { now_secs: 1_700_000_000, now_ms: 0, date: &date, idle_timeout_secs: 60, peer, stats: &mut stats };
            let available = input.len() - start;
            let (n, step) = service.serve_one(&mut proto, &input[start..], &mut out, &mut ctx);
            assert!(n <= available, "consumed {n} of {available}");
            start += n;
            match step {
                Step::Answered => continue,
                Step::NeedInput => break,
                // Held or closing: nothing more is read.
                Step::Done | Step::Subscribe(_) => break 'pieces,
            }
        }
    }
    out.take_all()
}
