//! One request in, one response out: the step the scheduler runs once per
//! connection per pass. It consumes body bytes left from the previous
//! request, parses the next head, routes it (status, static files) and
//! writes the whole response into the connection's output, deciding
//! persistence first so the head says what will happen to the connection.
//!
//! No sockets and no clock: the server passes the time and the peer in,
//! which is what lets the tests and the fuzz target drive it with bytes.

use std::net::SocketAddr;
use std::rc::Rc;

use log::{debug, warn};

use crate::access_log::{self, AccessLog, LogFormat};
use crate::admin;
use crate::board::Seat;
use crate::cors::{self, Cors};
use crate::files::{Files, Miss, percent_decode};
use crate::http::body::{BodyDecoder, LAST_CHUNK};
use crate::http::parse::{self, BodyLength, Head, Method, Parsed, Reject};
use crate::http::reply;
use crate::http::{CloseKind, Collecting, Discarding, Output, Persist, Proto, Reading, Reply, Status};
use crate::pubsub::{self, ChannelId, MAX_MESSAGE, Mode, PubSub};
use crate::session::Turn;
use crate::status::{Counters, Gauges};

/// The limits a request is held to.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_head: usize,
    pub max_body: u64,
    pub max_requests: u32,
}

/// What the world looks like for this request, passed in by the server.
pub struct Ctx<'a> {
    pub turn: &'a Turn,
    /// Unix seconds of the turn's `Date` (file revalidation, the log).
    pub now_secs: u64,
    pub peer: SocketAddr,
    pub stats: &'a mut Counters,
    pub channels: &'a mut PubSub,
    /// The gauges of `/_status`, computed only when asked for.
    pub gauges: &'a dyn Fn() -> Gauges,
    /// This worker's seat on the status board, for `/_status?workers=all`;
    /// `None` in a single process.
    pub seat: Option<&'a Seat>,
}

/// A subscription the server should hold open (`GET /sub/NAME`).
#[derive(Debug, PartialEq, Eq)]
pub struct SubStart {
    pub channel: ChannelId,
    pub mode: Mode,
    /// Messages up to this id were delivered (or are not wanted). `None`:
    /// from the newest once the channel is known here (it lives in a
    /// broker and its history has not arrived yet).
    pub last_id: Option<u64>,
    /// The channel's history is here; else the subscription waits for it.
    pub filled: bool,
    /// The stream is chunked (else delimited by closing: HTTP/1.0).
    pub chunked: bool,
    pub keep_alive: bool,
    pub http10: bool,
    /// CORS field lines for the responses that end it (`cors.rs`).
    pub cors: Option<Rc<[u8]>>,
}

/// What one call to [`Service::serve_one`] achieved.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A request was answered (its response is in the output), or its body
    /// is being read.
    Answered,
    /// No complete request in the input: wait for more bytes.
    NeedInput,
    /// No further request will be read on this connection.
    Done,
    /// The request subscribed: hold the connection (long poll) or keep
    /// streaming to it. Boxed: a step is returned through several calls for
    /// every request, and at 16 bytes it travels in two registers (one
    /// allocation per subscription, which is held for long, is the price).
    Subscribe(Box<SubStart>),
    /// A publish for the broker (`--broker`): answered when it has issued
    /// the message's id.
    Publish(Box<PendingPublish>),
}

/// A publish waiting for the broker, and what its answer will need.
#[derive(Debug, PartialEq, Eq)]
pub struct PendingPublish {
    /// The broker's tag for it, once sent (an answer for another tag, on a
    /// slab key since reused, is not this one's).
    pub tag: u64,
    pub channel: Box<str>,
    pub data: String,
    pub persist: Persist,
    /// The connection closes after the answer (decided with the head).
    pub close_after: Option<CloseKind>,
    /// For the access log.
    pub request_line: Box<str>,
    pub referer: Option<Box<[u8]>>,
    pub user_agent: Option<Box<[u8]>>,
    /// CORS field lines for the answer (`cors.rs`).
    pub cors: Option<Rc<[u8]>>,
}

pub struct Service {
    files: Files,
    limits: Limits,
    log: Option<AccessLog>,
    /// `--publish-token`: when set, publishing needs `Authorization: Bearer`.
    publish_token: Option<String>,
    /// `--cors-origin`: cross-origin access to the channel routes.
    cors: Cors,
    /// Shutting down: every response closes its connection, and nothing
    /// new is held open.
    draining: bool,
    /// Several workers and no broker: a channel would be split between
    /// processes, so `/pub/` and `/sub/` are refused instead.
    channels_refused: bool,
}

/// The methods a static resource allows.
pub(crate) const STATIC_ALLOW: &[u8] = b"Allow: GET, HEAD, OPTIONS\r\n";
const PUB_ALLOW: &[u8] = b"Allow: POST, OPTIONS\r\n";
const SUB_ALLOW: &[u8] = b"Allow: GET, OPTIONS\r\n";
/// Subscriber responses must not be cached (RFC 6202 §5.6).
const NO_CACHE: &[u8] = b"Cache-Control: no-cache\r\n";
/// Refused for want of room (channels, descriptors): try again later.
const RETRY_LATER: &[u8] = b"Retry-After: 1\r\n";

/// Which part of the server a path belongs to.
enum Route<'a> {
    /// `/_status`, `/_metrics` (`admin.rs`).
    Admin(admin::Page),
    Publish(&'a str),
    Subscribe(&'a str),
    Static,
}

impl<'a> Route<'a> {
    #[inline]
    fn of(path: &'a str) -> Route<'a> {
        if let Some(page) = admin::Page::of(path) {
            Route::Admin(page)
        } else if let Some(name) = path.strip_prefix("/pub/") {
            Route::Publish(name)
        } else if let Some(name) = path.strip_prefix("/sub/") {
            Route::Subscribe(name)
        } else {
            Route::Static
        }
    }
}

impl Service {
    pub fn new(files: Files, limits: Limits, log: Option<AccessLog>, token: Option<String>) -> Service {
        Service {
            files,
            limits,
            log,
            publish_token: token,
            cors: Cors::default(),
            draining: false,
            channels_refused: false,
        }
    }

    /// Let pages from other origins use the channels (`--cors-origin`).
    pub fn set_cors(&mut self, cors: Cors) {
        self.cors = cors;
    }

    /// Refuse `/pub/` and `/sub/` (several workers, no broker): a message
    /// published in one worker would never reach a subscriber in another,
    /// and saying so beats losing it silently.
    pub fn refuse_channels(&mut self) {
        self.channels_refused = true;
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Shutting down: from now on every response says `Connection: close`
    /// and subscriptions are answered at once instead of held.
    pub fn set_draining(&mut self) {
        self.draining = true;
    }

    /// Write what the access log buffered this turn (never blocks).
    pub fn flush_log(&mut self) {
        if let Some(log) = &mut self.log {
            log.flush();
        }
    }

    /// Access log lines dropped because the sink could not keep up.
    pub fn log_dropped(&self) -> u64 {
        self.log.as_ref().map_or(0, |l| l.dropped())
    }

    /// SIGUSR1: reopen the access log (logrotate's convention).
    pub fn reopen_log(&mut self) {
        if let Some(log) = &mut self.log {
            log.reopen();
        }
    }

    /// Consume input for at most one request: the rest of a body being
    /// read, or one head, answered at once (or when its body is in).
    /// Returns the bytes consumed and what happened.
    pub fn serve_one(&mut self, proto: &mut Proto, input: &[u8], out: &mut Output, ctx: &mut Ctx<'_>) -> (usize, Step) {
        match &mut proto.reading {
            Reading::Discard(d) => {
                let mut seen = 0u64;
                let fed = d.decoder.feed(input, |data| seen += data.len() as u64);
                let over = seen + d.decoder.announced() > d.left;
                return match fed {
                    // Nothing was answered yet: the status can say why.
                    Ok(_) if over => {
                        self.fail(proto, Reject::new(Status::CONTENT_TOO_LARGE, "body over limit"), out, ctx);
                        (input.len(), Step::Answered)
                    }
                    Ok(fed) if !fed.done => {
                        d.left -= seen;
                        (fed.consumed, Step::NeedInput)
                    }
                    Ok(fed) => {
                        let Reading::Discard(d) = std::mem::replace(&mut proto.reading, Reading::Head) else {
                            unreachable!("matched Discard above")
                        };
                        (fed.consumed, self.answer_after_body(proto, &d.head, out, ctx))
                    }
                    Err(e) => {
                        self.fail(proto, Reject::new(Status::BAD_REQUEST, e.why()), out, ctx);
                        (input.len(), Step::Answered)
                    }
                };
            }
            Reading::Collect(c) => {
                let limit = c.limit;
                let body = &mut c.body;
                let mut over = false;
                let fed = c.decoder.feed(input, |data| {
                    over |= body.len() + data.len() > limit;
                    if !over {
                        body.extend_from_slice(data);
                    }
                });
                over |= c.body.len() as u64 + c.decoder.announced() > limit as u64;
                return match fed {
                    Ok(fed) if !over && !fed.done => (fed.consumed, Step::NeedInput),
                    Ok(fed) if !over => {
                        let Reading::Collect(c) = std::mem::replace(&mut proto.reading, Reading::Head) else {
                            unreachable!("matched Collect above")
                        };
                        (fed.consumed, self.finish_publish(proto, *c, out, ctx))
                    }
                    Ok(_) => {
                        self.fail(proto, Reject::new(Status::CONTENT_TOO_LARGE, "message too large"), out, ctx);
                        (input.len(), Step::Answered)
                    }
                    Err(e) => {
                        self.fail(proto, Reject::new(Status::BAD_REQUEST, e.why()), out, ctx);
                        (input.len(), Step::Answered)
                    }
                };
            }
            Reading::Done(_) => return (input.len(), Step::Done),
            Reading::Head => {}
        }
        if input.is_empty() {
            // Everything read is answered: the usual end of a turn's work
            // on a connection, not worth a parse of nothing.
            return (0, Step::NeedInput);
        }
        match parse::parse_head(input, self.limits.max_head) {
            Ok(Parsed::Partial) => (0, Step::NeedInput),
            // By reference: the head is a few hundred bytes, and moving it
            // out of the result is a memcpy per request.
            Ok(Parsed::Head(ref head)) => {
                let len = head.len;
                let step = self.answer(proto, head, &input[..len], out, ctx);
                if matches!(proto.reading, Reading::Collect(_) | Reading::Discard(_)) {
                    // A body already here completes in this same step: one
                    // scheduler pass per request, as for any other (a
                    // fan-out must not fall behind its publisher).
                    let (n, body_step) = self.serve_one(proto, &input[len..], out, ctx);
                    let step = if body_step == Step::NeedInput { step } else { body_step };
                    return (len + n, step);
                }
                (len, step)
            }
            Ok(Parsed::Http2Preface) if proto.served > 0 => {
                // The preface means HTTP/2 only as a connection's first
                // bytes (RFC 9113 §3.4). After an HTTP/1.1 exchange the
                // client reads HTTP/1.1 responses, and binary frames where
                // it expects a status line would be a malformed one: this
                // is a request for a version we do not speak.
                proto.served += 1;
                ctx.stats.requests += 1;
                let reject = Reject::new(Status::VERSION_NOT_SUPPORTED, "HTTP/2 preface after an HTTP/1.1 request");
                self.fail(proto, reject, out, ctx);
                (input.len(), Step::Answered)
            }
            Ok(Parsed::Http2Preface) => {
                warn!("{}: HTTP/2 connection preface refused; linger speaks HTTP/1.1 (use h2load --h1)", ctx.peer);
                refuse_http2(out.bytes());
                proto.finish(CloseKind::ServerFirst);
                (input.len(), Step::Answered)
            }
            Err(reject) => {
                proto.served += 1;
                ctx.stats.requests += 1;
                self.fail(proto, reject, out, ctx);
                (input.len(), Step::Answered)
            }
        }
    }

    /// Answer a request that cannot be read on (malformed head or body),
    /// then close: after a framing error the next request cannot be found.
    fn fail(&mut self, proto: &mut Proto, reject: Reject, out: &mut Output, ctx: &mut Ctx<'_>) {
        debug!("{}: {} ({})", ctx.peer, reject.status.code(), reject.why);
        proto.finish(CloseKind::ServerFirst);
        let mut reply = Reply::new(out, &ctx.turn.date, Persist::Close, false);
        reply.simple(reject.status, b"");
        if let Some(log) = &mut self.log {
            log.record(ctx.now_secs, ctx.peer, "-", "-", "-", reject.status.code(), reply.body_bytes);
        }
    }

    /// A new request head: count it, decide what happens to its body, and
    /// answer it now or once its body is in.
    fn answer(&mut self, proto: &mut Proto, head: &Head<'_>, raw: &[u8], out: &mut Output, ctx: &mut Ctx<'_>) -> Step {
        proto.served += 1;
        ctx.stats.requests += 1;
        let route = Route::of(head.path);
        let mut early = self.early_status(head, &route, ctx);
        let publish = early.is_none() && head.method == Method::Post && matches!(route, Route::Publish(_));
        let limit = if publish { MAX_MESSAGE as u64 } else { self.limits.max_body };
        let mut server_close = false;
        let mut collect = None;
        match head.body {
            BodyLength::None if head.method.expects_content() => early = Some(Status::LENGTH_REQUIRED),
            BodyLength::Length(n) if n > limit => {
                early = Some(Status::CONTENT_TOO_LARGE);
                server_close = true;
            }
            BodyLength::None | BodyLength::Length(0) => {}
            BodyLength::Length(_) | BodyLength::Chunked => {
                let decoder = match head.body {
                    BodyLength::Length(n) => BodyDecoder::length(n),
                    _ => BodyDecoder::chunked(),
                };
                if publish {
                    collect = Some(decoder);
                } else if head.expect_continue {
                    // We answer without reading the body and never sent 100:
                    // the client may or may not send it, so the next request
                    // cannot be found (RFC 9110 §10.1.1). Close.
                    server_close = true;
                } else {
                    // Read the body to its end before answering: a body with
                    // bad framing then gets 400 and a close, never a
                    // response that promised to keep the connection.
                    let left = self.limits.max_body;
                    proto.reading = Reading::Discard(Box::new(Discarding { decoder, left, head: raw.into() }));
                    return Step::Answered;
                }
            }
        }
        self.respond(proto, head, raw, route, early, server_close, collect, out, ctx)
    }

    /// A request whose body was read and dropped: answer it now from its
    /// kept head.
    fn answer_after_body(&mut self, proto: &mut Proto, raw: &[u8], out: &mut Output, ctx: &mut Ctx<'_>) -> Step {
        let Ok(Parsed::Head(head)) = parse::parse_head(raw, self.limits.max_head) else {
            // It parsed once; it cannot fail now. Fail safe all the same.
            self.fail(proto, Reject::new(Status::BAD_REQUEST, "request head"), out, ctx);
            return Step::Answered;
        };
        let route = Route::of(head.path);
        let early = self.early_status(&head, &route, ctx);
        self.respond(proto, &head, raw, route, early, false, None, out, ctx)
    }

    /// The CORS field lines for a response on a channel route
    /// (`cors.rs`); the request's Origin is looked up in its raw head only
    /// then. Out of line, and called only for channel routes: the static
    /// hot path neither calls it nor grows for it.
    #[inline(never)]
    fn cors_grant(&self, head: &Head<'_>, raw: &[u8], route: &Route<'_>) -> Option<Rc<[u8]>> {
        if !self.cors.is_on() {
            return None;
        }
        let kind = match (route, head.method) {
            (Route::Publish(_), Method::Options) => cors::Kind::PreflightPublish,
            (Route::Subscribe(_), Method::Options) => cors::Kind::PreflightSubscribe,
            _ => cors::Kind::Plain,
        };
        self.cors.grant(parse::field(raw, "origin"), kind)
    }

    /// A publish refused before its body is read (RFC 9110 §15.5.4).
    #[inline]
    fn early_status(&self, head: &Head<'_>, route: &Route<'_>, ctx: &Ctx<'_>) -> Option<Status> {
        match route {
            // Not collected: its answer is the refusal whatever it says.
            Route::Publish(_) if self.channels_refused => Some(Status::SERVICE_UNAVAILABLE),
            Route::Publish(name) if head.method == Method::Post => self.may_publish(head, name, ctx).err(),
            _ => None,
        }
    }

    /// Write the response to `head`, its persistence decided first so the
    /// head can say what happens to the connection.
    #[allow(clippy::too_many_arguments)]
    fn respond(
        &mut self,
        proto: &mut Proto,
        head: &Head<'_>,
        raw: &[u8],
        route: Route<'_>,
        early: Option<Status>,
        server_close: bool,
        collect: Option<BodyDecoder>,
        out: &mut Output,
        ctx: &mut Ctx<'_>,
    ) -> Step {
        let server_close = server_close || proto.served >= self.limits.max_requests || self.draining;
        let keep = head.keep_alive && !server_close;
        let http10 = head.version == parse::Version::Http10;
        let persist = Persist::after(keep, ctx.turn.idle_timeout_secs, self.limits.max_requests, proto.served, http10);
        if !keep {
            proto.finish(if server_close { CloseKind::ServerFirst } else { CloseKind::asked_by_client(head.version) });
        }
        if let Some(decoder) = collect {
            if head.expect_continue {
                out.bytes().extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            let close_after = proto.close_kind();
            let (referer, user_agent) = self.log_fields(head);
            let name = match route {
                Route::Publish(name) => name,
                _ => "",
            };
            // The response waits for the body; a close decided now happens
            // after it (`finish_publish` restores it).
            proto.reading = Reading::Collect(Box::new(Collecting {
                decoder,
                body: Vec::new(),
                limit: MAX_MESSAGE,
                target: name.into(),
                persist,
                close_after,
                request_line: format!("{} {} {}", head.method_str, head.target, head.version.as_str()).into(),
                referer,
                user_agent,
                cors: self.cors_grant(head, raw, &route),
            }));
            return Step::Answered;
        }
        let mut reply = Reply::new(out, &ctx.turn.date, persist, head.method == Method::Head);
        if matches!(route, Route::Publish(_) | Route::Subscribe(_)) {
            reply.cors = self.cors_grant(head, raw, &route);
        }
        let mut step = Step::Answered;
        match (early, route) {
            (_, Route::Publish(_) | Route::Subscribe(_)) if self.channels_refused => channels_refused(&mut reply),
            (Some(status), Route::Publish(_)) => reply.simple(status, PUB_ALLOW),
            (Some(status), _) => reply.simple(status, b""),
            (None, Route::Admin(page)) => {
                if let Some(start) = admin::respond(page, head, &mut reply, ctx, keep, self.draining) {
                    step = Step::Subscribe(Box::new(start));
                }
            }
            (None, Route::Publish(name)) => {
                if let Some(pending) = self.publish_route(head, name, &mut reply, ctx) {
                    // Answered (and logged) when the broker has issued its id.
                    return Step::Publish(pending);
                }
            }
            (None, Route::Subscribe(name)) => {
                if let Some(mut start) = self.subscribe(head, name, keep, &mut reply, ctx) {
                    start.cors = reply.cors.clone();
                    step = Step::Subscribe(Box::new(start));
                }
            }
            (None, Route::Static) => self.static_route(head, &mut reply, ctx),
        }
        if let Some(log) = &mut self.log {
            let req = access_log::Request {
                method: head.method_str,
                target: head.target,
                version: head.version.as_str(),
                referer: head.referer,
                user_agent: head.user_agent,
            };
            log.record_request(ctx.now_secs, ctx.peer, &req, reply.status.code(), reply.body_bytes);
        }
        step
    }

    fn static_route(&mut self, head: &Head<'_>, reply: &mut Reply<'_>, ctx: &mut Ctx<'_>) {
        match head.method {
            Method::Get | Method::Head => {}
            Method::Options => return options(reply, STATIC_ALLOW),
            Method::Other => return reply.simple(Status::NOT_IMPLEMENTED, b""),
            _ => return reply.simple(Status::METHOD_NOT_ALLOWED, STATIC_ALLOW),
        }
        match self.files.lookup(head.path, ctx.now_secs) {
            Ok(entry) => self.files.respond(head, &entry, reply),
            Err(Miss::NotFound) => reply.simple(Status::NOT_FOUND, b""),
            Err(Miss::BadPath) => reply.simple(Status::BAD_REQUEST, b""),
            Err(Miss::Unavailable) => reply.simple(Status::SERVICE_UNAVAILABLE, RETRY_LATER),
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

pub(crate) fn options(reply: &mut Reply<'_>, allow: &[u8]) {
    let buf = reply.start(Status::OK);
    buf.extend_from_slice(allow);
    reply.end_head(0);
}

/// `/pub/` or `/sub/` with several workers and no broker: `503`, saying why.
/// No `Retry-After`: asking again will not help.
fn channels_refused(reply: &mut Reply<'_>) {
    const WHY: &[u8] = b"503 Service Unavailable\nchannels need --broker when linger runs more than one worker \
        process (--workers): each worker would hold a separate copy of every channel\n";
    let buf = reply.start(Status::SERVICE_UNAVAILABLE);
    buf.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
    buf.extend_from_slice(NO_CACHE);
    reply.end_head(WHY.len() as u64);
    reply.body(WHY);
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

mod channels;

pub use channels::{long_poll_empty, long_poll_reply};

#[cfg(test)]
mod tests;
