//! The server's own pages, for loopback clients only: `GET /_status` (flat
//! JSON counters, `status.rs`; with `Accept: text/event-stream`, the same
//! JSON once a second as Server-Sent Events, `feed.rs`), `GET /_metrics`
//! (the same in Prometheus' text format, `metrics.rs`) and `GET
//! /_status.html` (the live dashboard, `site/status.html`, compiled in and
//! not part of the demo site). Like the rest of `service`, no sockets and
//! no clock: what they show comes in through `Ctx`.

use std::net::{IpAddr, SocketAddr};

use crate::http::parse::{self, Head, Method};
use crate::http::{Persist, Reply, Status};
use crate::metrics;
use crate::pubsub::{self, Mode};
use crate::service::{Ctx, SubStart};
use crate::status;

const ALLOW: &[u8] = b"Allow: GET, HEAD, OPTIONS\r\n";
const NO_CACHE: &[u8] = b"Cache-Control: no-cache\r\n";

/// The dashboard: one self-contained page (no external script, style or
/// font), drawn from the status feed.
static DASHBOARD: &[u8] = include_bytes!("../site/status.html");
/// The page's own inline script and style, and its event stream to this
/// origin: nothing else may load (a dashboard has no business fetching
/// from elsewhere).
const DASHBOARD_CSP: &[u8] = b"Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'\r\n";

/// Which page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    Status,
    Metrics,
    Dashboard,
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
            "/_status.html" => Some(Page::Dashboard),
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

/// Answer `head` for `page`; `keep` says whether the connection stays
/// open after it. Returns the subscription to hold when the status feed
/// was asked for (`Accept: text/event-stream`): the server then sends the
/// JSON once a second (`feed.rs`). While shutting down, nothing new is
/// held: the JSON is answered once.
pub fn respond(
    page: Page,
    head: &Head<'_>,
    reply: &mut Reply<'_>,
    ctx: &mut Ctx<'_>,
    keep: bool,
    draining: bool,
) -> Option<SubStart> {
    if !is_local(ctx.peer) {
        reply.simple(Status::FORBIDDEN, b"");
        return None;
    }
    match head.method {
        Method::Get | Method::Head => {}
        Method::Options => {
            let buf = reply.start(Status::OK);
            buf.extend_from_slice(ALLOW);
            reply.end_head(0);
            return None;
        }
        _ => {
            reply.simple(Status::METHOD_NOT_ALLOWED, ALLOW);
            return None;
        }
    }
    let gauges = (ctx.gauges)();
    let mut figures = status::fields(ctx.stats, &gauges, ctx.channels);
    let mut response_time = ctx.stats.response_time.clone();
    if status::wants_all_workers(head.query)
        && let Some(seat) = ctx.seat
    {
        // `?workers=all`: every live worker's figures, from the board.
        seat.total(&mut figures, &mut response_time);
    }
    let (content_type, body): (&[u8], Vec<u8>) = match page {
        Page::Status if head.accept_event_stream && head.method == Method::Get && !draining => {
            return Some(start_feed(head, reply, &status::render(&figures), keep));
        }
        Page::Status => (b"Content-Type: application/json\r\n", status::render(&figures)),
        Page::Metrics => (metrics::CONTENT_TYPE, metrics::render(&figures, &response_time)),
        Page::Dashboard => {
            let buf = reply.start(Status::OK);
            buf.extend_from_slice(b"Content-Type: text/html; charset=utf-8\r\n");
            buf.extend_from_slice(NO_CACHE);
            buf.extend_from_slice(DASHBOARD_CSP);
            reply.end_head(DASHBOARD.len() as u64);
            reply.body(DASHBOARD);
            return None;
        }
    };
    let buf = reply.start(Status::OK);
    buf.extend_from_slice(content_type);
    buf.extend_from_slice(NO_CACHE);
    reply.end_head(body.len() as u64);
    reply.body(&body);
    None
}

/// The status feed's head and first event, at once (the page draws
/// without waiting a second): an event stream like a channel's (RFC 6202
/// §4.3, the WHATWG `EventSource` format), chunked for HTTP/1.1,
/// delimited by closing for HTTP/1.0.
fn start_feed(head: &Head<'_>, reply: &mut Reply<'_>, json: &[u8], keep: bool) -> SubStart {
    let http10 = head.version == parse::Version::Http10;
    let chunked = !http10;
    if !chunked {
        reply.persist = Persist::Close;
    }
    let buf = reply.start(Status::OK);
    buf.extend_from_slice(b"Content-Type: text/event-stream; charset=utf-8\r\n");
    buf.extend_from_slice(NO_CACHE);
    if chunked {
        buf.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    reply.end_head_framed();
    let mut payload = format!("retry: {}\n\n", pubsub::SSE_RETRY_MS).into_bytes();
    event(&mut payload, json);
    pubsub::frame(reply.out.bytes(), &payload, chunked);
    SubStart {
        channel: crate::feed::STATUS_FEED,
        mode: Mode::Sse,
        last_id: Some(0),
        filled: true,
        chunked,
        keep_alive: keep,
        http10,
        cors: None,
    }
}

/// One SSE event carrying `json` (one line: the JSON has no newline but
/// its last).
pub fn event(out: &mut Vec<u8>, json: &[u8]) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json.strip_suffix(b"\n").unwrap_or(json));
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_other_paths() {
        assert_eq!(Page::of("/_status"), Some(Page::Status));
        assert_eq!(Page::of("/_metrics"), Some(Page::Metrics));
        assert_eq!(Page::of("/_status.html"), Some(Page::Dashboard));
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
