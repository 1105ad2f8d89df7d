//! The server's own pages, for loopback clients only: `GET /_status` (flat
//! JSON counters, `status.rs`), `GET /_metrics` (the same in Prometheus'
//! text format, `metrics.rs`). Like the rest of `service`, no sockets and
//! no clock: what they show comes in through `Ctx`.

use std::net::{IpAddr, SocketAddr};

use crate::http::parse::{Head, Method};
use crate::http::{Reply, Status};
use crate::metrics;
use crate::service::Ctx;
use crate::status;

const ALLOW: &[u8] = b"Allow: GET, HEAD, OPTIONS\r\n";
const NO_CACHE: &[u8] = b"Cache-Control: no-cache\r\n";

/// Which page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    Status,
    Metrics,
}

impl Page {
    /// The page `path` names, if any. Every other path is decided by its
    /// second byte alone: this runs for every request.
    #[inline]
    pub fn of(path: &str) -> Option<Page> {
        if path.as_bytes().get(1) != Some(&b'_') {
            return None;
        }
        match path {
            "/_status" => Some(Page::Status),
            "/_metrics" => Some(Page::Metrics),
            _ => None,
        }
    }
}

/// Loopback, including IPv4 loopback seen through an IPv6 socket
/// (`::ffff:127.0.0.1`, a dual-stack listener on `[::]`).
pub fn is_local(peer: SocketAddr) -> bool {
    match peer.ip() {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(v6.is_loopback(), |v4| v4.is_loopback()),
    }
}

/// Answer `head` for `page`.
pub fn respond(page: Page, head: &Head<'_>, reply: &mut Reply<'_>, ctx: &mut Ctx<'_>) {
    if !is_local(ctx.peer) {
        return reply.simple(Status::FORBIDDEN, b"");
    }
    match head.method {
        Method::Get | Method::Head => {}
        Method::Options => {
            let buf = reply.start(Status::OK);
            buf.extend_from_slice(ALLOW);
            return reply.end_head(0);
        }
        _ => return reply.simple(Status::METHOD_NOT_ALLOWED, ALLOW),
    }
    let gauges = (ctx.gauges)();
    let (content_type, body): (&[u8], Vec<u8>) = match page {
        Page::Status => (b"Content-Type: application/json\r\n", status::to_json(ctx.stats, &gauges, ctx.channels)),
        Page::Metrics => (metrics::CONTENT_TYPE, metrics::render(ctx.stats, &gauges, ctx.channels)),
    };
    let buf = reply.start(Status::OK);
    buf.extend_from_slice(content_type);
    buf.extend_from_slice(NO_CACHE);
    reply.end_head(body.len() as u64);
    reply.body(&body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_other_paths() {
        assert_eq!(Page::of("/_status"), Some(Page::Status));
        assert_eq!(Page::of("/_metrics"), Some(Page::Metrics));
        for other in ["/", "/hello.txt", "/_", "/_statu", "/_status/", "/x_status", "/_metrics?x"] {
            assert_eq!(Page::of(other), None, "{other}");
        }
    }

    #[test]
    fn loopback_through_either_family() {
        for (addr, local) in [
            ("127.0.0.1:1", true),
            ("127.3.0.9:1", true),
            ("[::1]:1", true),
            ("[::ffff:127.0.0.1]:1", true),
            ("10.0.0.1:1", false),
            ("[::ffff:10.0.0.1]:1", false),
            ("[2001:db8::1]:1", false),
        ] {
            assert_eq!(is_local(addr.parse().unwrap()), local, "{addr}");
        }
    }
}
