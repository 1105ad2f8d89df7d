//! One request in, one response out: the step the scheduler runs once per
//! connection per pass. It consumes body bytes left from the previous
//! request, parses the next head, routes it (status, static files) and
//! writes the whole response into the connection's output, deciding
//! persistence first so the head says what will happen to the connection.
//!
//! No sockets and no clock: the server passes the time and the peer in,
//! which is what lets the tests and the fuzz target drive it with bytes.

use std::net::SocketAddr;

use log::{debug, warn};

use crate::access_log::AccessLog;
use crate::files::{Files, Miss};
use crate::http::body::BodyDecoder;
use crate::http::parse::{self, BodyLength, Head, Method, Parsed, Reject};
use crate::http::{CloseKind, Output, Persist, Proto, Reading, Reply, Status};
use crate::status::Stats;

/// The limits a request is held to.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_head: usize,
    pub max_body: u64,
    pub max_requests: u32,
}

/// What the world looks like for this request, passed in by the server.
pub struct Ctx<'a> {
    pub now_secs: u64,
    pub date: &'a [u8; 29],
    /// The idle timeout in force, for the `Keep-Alive` hint.
    pub idle_timeout_secs: u64,
    pub peer: SocketAddr,
    pub stats: &'a mut Stats,
}

/// What one call to [`Service::serve_one`] achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A request was answered (its response is in the output).
    Answered,
    /// No complete request in the input: wait for more bytes.
    NeedInput,
    /// No further request will be read on this connection.
    Done,
}

pub struct Service {
    pub files: Files,
    pub limits: Limits,
    pub log: Option<AccessLog>,
}

/// The methods a static resource allows.
const STATIC_ALLOW: &[u8] = b"Allow: GET, HEAD, OPTIONS\r\n";

impl Service {
    pub fn new(files: Files, limits: Limits, log: Option<AccessLog>) -> Service {
        Service { files, limits, log }
    }

    /// Consume input for at most one request: the rest of the previous
    /// request's body, then one head, answered at once.
    /// Returns the bytes consumed and what happened.
    pub fn serve_one(&mut self, proto: &mut Proto, input: &[u8], out: &mut Output, ctx: &mut Ctx<'_>) -> (usize, Step) {
        let mut pos = 0;
        if let Reading::Discard { decoder, left } = &mut proto.reading {
            let mut seen = 0u64;
            match decoder.feed(input, |data| seen += data.len() as u64) {
                Ok(fed) if seen <= *left => {
                    pos = fed.consumed;
                    *left -= seen;
                    if !fed.done {
                        return (pos, Step::NeedInput);
                    }
                    proto.reading = Reading::Head;
                }
                // The response went out already: all that is left is to
                // stop reading and close gracefully.
                Ok(_) | Err(_) => {
                    debug!("request body over limit or malformed while discarding");
                    proto.finish(CloseKind::ServerFirst);
                    return (input.len(), Step::Done);
                }
            }
        }
        if proto.is_done() {
            return (input.len(), Step::Done);
        }
        match parse::parse_head(&input[pos..], self.limits.max_head) {
            Ok(Parsed::Partial) => (pos, Step::NeedInput),
            Ok(Parsed::Head(head)) => {
                let len = head.len;
                self.answer(proto, &head, out, ctx);
                (pos + len, Step::Answered)
            }
            Ok(Parsed::Http2Preface) => {
                warn!("{}: HTTP/2 connection preface refused; linger speaks HTTP/1.1 (use h2load --h1)", ctx.peer);
                refuse_http2(out.bytes());
                proto.finish(CloseKind::ServerFirst);
                (input.len(), Step::Answered)
            }
            Err(reject) => {
                self.reject(proto, reject, out, ctx);
                (input.len(), Step::Answered)
            }
        }
    }

    /// Answer a head that could not be parsed, then close: after a framing
    /// error the next request cannot be found.
    pub fn reject(&mut self, proto: &mut Proto, reject: Reject, out: &mut Output, ctx: &mut Ctx<'_>) {
        debug!("{}: {} ({})", ctx.peer, reject.status.code(), reject.why);
        ctx.stats.counters.requests += 1;
        proto.served += 1;
        proto.finish(CloseKind::ServerFirst);
        let mut reply = Reply::new(out, ctx.date, Persist::Close, false);
        reply.simple(reject.status, b"");
        if let Some(log) = &mut self.log {
            log.record(ctx.now_secs, ctx.peer, "-", "-", "-", reject.status.code(), reply.body_bytes);
        }
    }

    fn answer(&mut self, proto: &mut Proto, head: &Head<'_>, out: &mut Output, ctx: &mut Ctx<'_>) {
        proto.served += 1;
        ctx.stats.counters.requests += 1;
        // Decide what happens to the body and the connection before writing
        // a byte, so the head can say it.
        let mut server_close = proto.served >= self.limits.max_requests;
        let mut early: Option<Status> = None;
        match head.body {
            BodyLength::None if head.method.expects_content() => early = Some(Status::LENGTH_REQUIRED),
            BodyLength::Length(n) if n > self.limits.max_body => {
                early = Some(Status::CONTENT_TOO_LARGE);
                server_close = true;
            }
            BodyLength::None | BodyLength::Length(0) => {}
            BodyLength::Length(_) | BodyLength::Chunked => {
                if head.expect_continue {
                    // We answer without reading the body and never sent 100:
                    // the client may or may not send it, so the next request
                    // cannot be found (RFC 9110 §10.1.1). Close.
                    server_close = true;
                } else {
                    let decoder = match head.body {
                        BodyLength::Length(n) => BodyDecoder::length(n),
                        _ => BodyDecoder::chunked(),
                    };
                    proto.reading = Reading::Discard { decoder, left: self.limits.max_body };
                }
            }
        }
        let keep = head.keep_alive && !server_close;
        let persist = if keep {
            Persist::KeepAlive {
                timeout_secs: ctx.idle_timeout_secs,
                max: self.limits.max_requests.saturating_sub(proto.served),
                http10: head.version == parse::Version::Http10,
            }
        } else {
            Persist::Close
        };
        let mut reply = Reply::new(out, ctx.date, persist, head.method == Method::Head);
        match early {
            Some(status) => reply.simple(status, b""),
            None => self.route(head, &mut reply, ctx),
        }
        if !keep {
            proto.finish(if server_close { CloseKind::ServerFirst } else { CloseKind::ClientFirst });
        }
        if let Some(log) = &mut self.log {
            let (m, t, v) = (head.method_str, head.target, head.version.as_str());
            log.record(ctx.now_secs, ctx.peer, m, t, v, reply.status.code(), reply.body_bytes);
        }
    }

    fn route(&mut self, head: &Head<'_>, reply: &mut Reply<'_>, ctx: &mut Ctx<'_>) {
        if head.path == "/_status" {
            return status(head, reply, ctx);
        }
        match head.method {
            Method::Get | Method::Head => {}
            Method::Options => {
                let buf = reply.start(Status::OK);
                buf.extend_from_slice(STATIC_ALLOW);
                return reply.end_head(0);
            }
            Method::Other => return reply.simple(Status::NOT_IMPLEMENTED, b""),
            _ => return reply.simple(Status::METHOD_NOT_ALLOWED, STATIC_ALLOW),
        }
        match self.files.lookup(head.path, ctx.now_secs) {
            Ok(entry) => self.files.respond(head, &entry, reply),
            Err(Miss::NotFound) => reply.simple(Status::NOT_FOUND, b""),
            Err(Miss::BadPath) => reply.simple(Status::BAD_REQUEST, b""),
            Err(Miss::Redirect(location)) => {
                let mut extra = b"Location: ".to_vec();
                extra.extend_from_slice(location.as_bytes());
                if !head.query.is_empty() {
                    extra.push(b'?');
                    extra.extend_from_slice(head.query.as_bytes());
                }
                extra.extend_from_slice(b"\r\n");
                reply.simple(Status::MOVED_PERMANENTLY, &extra);
            }
        }
    }
}

/// `GET /_status`: the counters as flat JSON, for loopback clients only.
fn status(head: &Head<'_>, reply: &mut Reply<'_>, ctx: &mut Ctx<'_>) {
    if !ctx.peer.ip().is_loopback() {
        return reply.simple(Status::FORBIDDEN, b"");
    }
    match head.method {
        Method::Get | Method::Head => {}
        Method::Options => {
            let buf = reply.start(Status::OK);
            buf.extend_from_slice(STATIC_ALLOW);
            return reply.end_head(0);
        }
        _ => return reply.simple(Status::METHOD_NOT_ALLOWED, STATIC_ALLOW),
    }
    let json = ctx.stats.to_json();
    let buf = reply.start(Status::OK);
    buf.extend_from_slice(b"Content-Type: application/json\r\nCache-Control: no-cache\r\n");
    reply.end_head(json.len() as u64);
    reply.body(&json);
}

/// An HTTP/2 client with prior knowledge gets a real HTTP/2 refusal: the
/// server preface (an empty SETTINGS frame) and GOAWAY with
/// HTTP_1_1_REQUIRED (RFC 9113 §7), whose debug data says what to do.
fn refuse_http2(out: &mut Vec<u8>) {
    const DEBUG: &[u8] = b"linger speaks HTTP/1.1 only; use h2load --h1";
    out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let len = 8 + DEBUG.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, 7, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x0d]);
    out.extend_from_slice(DEBUG);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn service(max_requests: u32) -> Service {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let files = Files::new(None, now).unwrap();
        Service::new(files, Limits { max_head: 8192, max_body: 1024, max_requests }, None)
    }

    /// Feed `input` in pieces of `piece` bytes, serving everything that
    /// becomes complete, as the server does; return all output.
    fn drive(svc: &mut Service, input: &[u8], piece: usize) -> (String, Proto) {
        let date = crate::http::reply::http_date(SystemTime::UNIX_EPOCH);
        let mut stats = Stats::default();
        let mut proto = Proto::new();
        let mut out = Output::default();
        let mut buf = Vec::new();
        let mut consumed = 0;
        for chunk in input.chunks(piece.max(1)) {
            buf.extend_from_slice(chunk);
            loop {
                let mut ctx = Ctx {
                    now_secs: 1,
                    date: &date,
                    idle_timeout_secs: 60,
                    peer: "127.0.0.1:9".parse().unwrap(),
                    stats: &mut stats,
                };
                let (n, step) = svc.serve_one(&mut proto, &buf[consumed..], &mut out, &mut ctx);
                consumed += n;
                if step != Step::Answered {
                    break;
                }
            }
        }
        (String::from_utf8_lossy(&out.take_all()).into_owned(), proto)
    }

    #[test]
    fn pipelined_requests_split_at_every_byte_give_the_same_responses() {
        let input = b"GET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcHEAD /hello.txt HTTP/1.1\r\nHost: a\r\n\r\nPOST /y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\nGET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        let mut svc = service(100);
        let (whole, proto) = drive(&mut svc, input, input.len());
        let statuses: Vec<&str> = whole.split("HTTP/1.1 ").skip(1).map(|r| &r[..3]).collect();
        assert_eq!(statuses, ["200", "405", "200", "405", "404"]);
        assert!(whole.ends_with("Connection: close\r\n\r\n404 Not Found\n"));
        assert_eq!(proto.close_kind(), Some(CloseKind::ClientFirst));
        for piece in 1..input.len() {
            let (split, _) = drive(&mut svc, input, piece);
            let strip = |s: &str| s.replace(|c: char| c.is_ascii_digit(), "");
            assert_eq!(strip(&split), strip(&whole), "piece size {piece}");
        }
    }

    #[test]
    fn request_cap_closes_server_first_and_stops_reading() {
        let mut svc = service(2);
        let one = b"GET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n";
        let (text, proto) = drive(&mut svc, &one.repeat(4), 1000);
        assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2);
        assert!(text.contains("Keep-Alive: timeout=60, max=1\r\n"));
        assert_eq!(text.matches("Connection: close").count(), 1);
        assert_eq!(proto.close_kind(), Some(CloseKind::ServerFirst));
    }

    #[test]
    fn oversized_body_gets_413_and_expect_closes() {
        let mut svc = service(100);
        let (text, proto) = drive(&mut svc, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n", 1000);
        assert!(text.starts_with("HTTP/1.1 413 Content Too Large\r\n"));
        assert_eq!(proto.close_kind(), Some(CloseKind::ServerFirst));
        let (text, proto) =
            drive(&mut svc, b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n", 1000);
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(!text.contains("100 Continue"));
        assert_eq!(proto.close_kind(), Some(CloseKind::ServerFirst));
        let (text, _) = drive(&mut svc, b"POST / HTTP/1.1\r\nHost: a\r\n\r\n", 1000);
        assert!(text.starts_with("HTTP/1.1 411 Length Required\r\n"));
    }

    #[test]
    fn chunked_body_over_limit_while_discarding_closes() {
        let mut svc = service(100);
        let body =
            format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n{}\r\n", "x".repeat(2048));
        let (text, proto) = drive(&mut svc, body.as_bytes(), 100);
        assert_eq!(text.matches("HTTP/1.1 ").count(), 1);
        assert_eq!(proto.close_kind(), Some(CloseKind::ServerFirst));
    }

    #[test]
    fn http2_preface_gets_goaway() {
        let mut svc = service(100);
        let (text, proto) = drive(&mut svc, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 1000);
        assert!(text.contains("use h2load --h1"));
        assert!(proto.is_done());
    }
}
