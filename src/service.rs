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
}

/// A subscription the server should hold open (`GET /sub/NAME`).
#[derive(Debug, PartialEq, Eq)]
pub struct SubStart {
    pub channel: ChannelId,
    pub mode: Mode,
    /// Messages up to this id were delivered (or are not wanted).
    pub last_id: u64,
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
    /// every request, and at 8 bytes it travels in a register (one
    /// allocation per subscription, which is held for long, is the price).
    Subscribe(Box<SubStart>),
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
}

/// The methods a static resource allows.
const STATIC_ALLOW: &[u8] = b"Allow: GET, HEAD, OPTIONS\r\n";
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
        Service { files, limits, log, publish_token: token, cors: Cors::default(), draining: false }
    }

    /// Let pages from other origins use the channels (`--cors-origin`).
    pub fn set_cors(&mut self, cors: Cors) {
        self.cors = cors;
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
                        self.finish_publish(proto, *c, out, ctx);
                        (fed.consumed, Step::Answered)
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
            let combined = self.log.as_ref().is_some_and(|l| l.format() == LogFormat::Combined);
            let keep = |v: Option<&[u8]>| if combined { v.map(Box::from) } else { None };
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
                referer: keep(head.referer),
                user_agent: keep(head.user_agent),
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
            (Some(status), Route::Publish(_)) => reply.simple(status, PUB_ALLOW),
            (Some(status), _) => reply.simple(status, b""),
            (None, Route::Admin(page)) => {
                if let Some(start) = admin::respond(page, head, &mut reply, ctx, keep, self.draining) {
                    step = Step::Subscribe(Box::new(start));
                }
            }
            (None, Route::Publish(name)) => self.publish_route(head, name, &mut reply, ctx),
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

    /// Who may publish: loopback clients, or, with `--publish-token`, any
    /// client presenting it (and only those).
    fn may_publish(&self, head: &Head<'_>, name: &str, ctx: &Ctx<'_>) -> Result<(), Status> {
        let allowed = match &self.publish_token {
            Some(token) => head.authorization.and_then(|a| a.strip_prefix(b"Bearer ")) == Some(token.as_bytes()),
            None => ctx.peer.ip().is_loopback(),
        };
        if !allowed {
            return Err(Status::FORBIDDEN);
        }
        if !pubsub::valid_name(name) {
            return Err(Status::BAD_REQUEST);
        }
        Ok(())
    }

    /// `/pub/NAME` with a method other than POST, or a POST without body.
    fn publish_route(&mut self, head: &Head<'_>, name: &str, reply: &mut Reply<'_>, ctx: &mut Ctx<'_>) {
        match head.method {
            Method::Options => options(reply, PUB_ALLOW),
            // A POST whose body was empty (Content-Length: 0).
            Method::Post => self.publish(name, "", reply, ctx),
            _ => reply.simple(Status::METHOD_NOT_ALLOWED, PUB_ALLOW),
        }
    }

    /// The body of a publish arrived: publish it and answer.
    fn finish_publish(&mut self, proto: &mut Proto, c: Collecting, out: &mut Output, ctx: &mut Ctx<'_>) {
        if let Some(kind) = c.close_after {
            proto.finish(kind);
        }
        let mut reply = Reply::new(out, &ctx.turn.date, c.persist, false);
        reply.cors = c.cors;
        match std::str::from_utf8(&c.body) {
            Ok(text) => self.publish(&c.target, text, &mut reply, ctx),
            Err(_) => reply.simple(Status::BAD_REQUEST, b""),
        }
        if let Some(log) = &mut self.log {
            let mut parts = c.request_line.splitn(3, ' ');
            let (m, t, v) = (parts.next().unwrap_or("-"), parts.next().unwrap_or("-"), parts.next().unwrap_or("-"));
            let (referer, user_agent) = (c.referer.as_deref(), c.user_agent.as_deref());
            let req = access_log::Request { method: m, target: t, version: v, referer, user_agent };
            log.record_request(ctx.now_secs, ctx.peer, &req, reply.status.code(), reply.body_bytes);
        }
    }

    fn publish(&mut self, name: &str, text: &str, reply: &mut Reply<'_>, ctx: &mut Ctx<'_>) {
        let Ok(channel) = ctx.channels.open(name, ctx.turn.now) else {
            return reply.simple(Status::SERVICE_UNAVAILABLE, RETRY_LATER);
        };
        let id = ctx.channels.publish(channel, text, ctx.turn.now);
        let reached = ctx.channels.get(channel).map_or(0, |c| c.subscribers());
        let mut body = b"{\"id\":".to_vec();
        reply::push_decimal(&mut body, id);
        body.extend_from_slice(b",\"subscribers\":");
        reply::push_decimal(&mut body, reached as u64);
        body.extend_from_slice(b"}\n");
        let buf = reply.start(Status::OK);
        buf.extend_from_slice(b"Content-Type: application/json\r\n");
        buf.extend_from_slice(NO_CACHE);
        reply.end_head(body.len() as u64);
        reply.body(&body);
    }

    /// `GET /sub/NAME`: answer at once from history, or start a hold or a
    /// stream (RFC 6202). Returns the subscription for the server to keep.
    /// While shutting down nothing new is held: a long poll is answered at
    /// once and a stream sends what history it asked for, then ends.
    fn subscribe(
        &mut self,
        head: &Head<'_>,
        name: &str,
        keep: bool,
        reply: &mut Reply<'_>,
        ctx: &mut Ctx<'_>,
    ) -> Option<SubStart> {
        match head.method {
            Method::Get => {}
            Method::Options => {
                options(reply, SUB_ALLOW);
                return None;
            }
            _ => {
                reply.simple(Status::METHOD_NOT_ALLOWED, SUB_ALLOW);
                return None;
            }
        }
        if !pubsub::valid_name(name) {
            reply.simple(Status::BAD_REQUEST, b"");
            return None;
        }
        // Query values are percent-encoded (RFC 3986 §2.1): `since=%31` is 1.
        let query = |key: &str| {
            head.query
                .split('&')
                .find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
                .and_then(|v| percent_decode(v.as_bytes()))
        };
        let mode = if head.accept_event_stream {
            Mode::Sse
        } else if query("mode").as_deref() == Some(b"stream".as_slice()) {
            Mode::Stream
        } else {
            Mode::LongPoll
        };
        // Last-Event-ID first: EventSource reconnects to the same URL, so a
        // `?since=` in it would replay history the client already has.
        let since = match head.last_event_id {
            Some(id) => parse::parse_decimal(parse::trim(id)),
            None => query("since").and_then(|v| parse::parse_decimal(parse::trim(&v))),
        };
        let newest = ctx.channels.channel(name).map_or(0, |c| c.last_id);
        let http10 = head.version == parse::Version::Http10;
        if mode == Mode::LongPoll
            && let (Some(since), Some(channel)) = (since, ctx.channels.channel(name))
            && since < newest
        {
            // Everything newer at once, in one response (§2.2).
            let body = pubsub::long_poll_body(channel.since(since), since);
            long_poll_reply(reply, &body);
            return None;
        }
        if mode == Mode::LongPoll && self.draining {
            long_poll_empty(reply);
            return None;
        }
        let channel = if self.draining {
            None
        } else {
            match ctx.channels.open(name, ctx.turn.now) {
                Ok(id) => Some(id),
                Err(_) => {
                    reply.simple(Status::SERVICE_UNAVAILABLE, RETRY_LATER);
                    return None;
                }
            }
        };
        let start = |channel, last_id, chunked| SubStart {
            channel,
            mode,
            last_id,
            chunked,
            keep_alive: keep,
            http10,
            cors: None,
        };
        if mode == Mode::LongPoll {
            // Hold. A `since` from the future (a restarted server) waits for
            // the next message like no `since` at all.
            return channel.map(|c| start(c, newest.min(since.unwrap_or(newest)), false));
        }
        let chunked = !http10;
        if !chunked {
            // HTTP/1.0: the stream ends when the connection does.
            reply.persist = Persist::Close;
        }
        let buf = reply.start(Status::OK);
        let content_type: &[u8] = match mode {
            Mode::Sse => b"Content-Type: text/event-stream; charset=utf-8\r\n",
            _ => b"Content-Type: application/x-ndjson; charset=utf-8\r\n",
        };
        buf.extend_from_slice(content_type);
        buf.extend_from_slice(NO_CACHE);
        if chunked {
            buf.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        reply.end_head_framed();
        let mut payload = Vec::new();
        if mode == Mode::Sse {
            payload.extend_from_slice(format!("retry: {}\n\n", pubsub::SSE_RETRY_MS).as_bytes());
        }
        let mut last = newest;
        if let (Some(since), Some(history)) = (since, ctx.channels.channel(name)) {
            // Resume from history (Last-Event-ID).
            for m in history.since(since) {
                payload.extend_from_slice(&pubsub::stream_payload(mode, m));
            }
            last = newest.max(since.min(newest));
        }
        pubsub::frame(reply.out.bytes(), &payload, chunked);
        match channel {
            Some(c) => Some(start(c, last, chunked)),
            None => {
                // Shutting down: what history there was, then the end.
                if chunked {
                    reply.out.bytes().extend_from_slice(LAST_CHUNK);
                }
                None
            }
        }
    }
}

fn options(reply: &mut Reply<'_>, allow: &[u8]) {
    let buf = reply.start(Status::OK);
    buf.extend_from_slice(allow);
    reply.end_head(0);
}

/// A long-poll answer carrying messages.
pub fn long_poll_reply(reply: &mut Reply<'_>, body: &[u8]) {
    let buf = reply.start(Status::OK);
    buf.extend_from_slice(b"Content-Type: application/json\r\n");
    buf.extend_from_slice(NO_CACHE);
    reply.end_head(body.len() as u64);
    reply.body(body);
}

/// A long poll that ends without a message (timeout, a pipelined request
/// behind it, or load shedding): `204` (RFC 6202 §5.5).
pub fn long_poll_empty(reply: &mut Reply<'_>) {
    reply.simple(Status::NO_CONTENT, NO_CACHE);
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
    use crate::replay::{World, loopback};

    fn service(max_requests: u32) -> World {
        World::new(Limits { max_head: 8192, max_body: 1024, max_requests })
    }

    /// Feed `input` in pieces of `piece` bytes, serving everything that
    /// becomes complete, as the server does; return all output.
    fn drive(svc: &mut World, input: &[u8], piece: usize) -> (String, Proto) {
        let mut proto = Proto::new();
        let mut out = Output::default();
        let mut buf = Vec::new();
        let mut consumed = 0;
        for chunk in input.chunks(piece.max(1)) {
            buf.extend_from_slice(chunk);
            loop {
                let (n, step) = svc.serve(&mut proto, &buf[consumed..], &mut out, loopback());
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

    #[test]
    fn publish_body_split_anywhere_then_long_poll_batches_history() {
        let mut svc = service(100);
        let input = b"POST /pub/news HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloPOST /pub/news HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n";
        for piece in 1..input.len() {
            let mut svc = service(100);
            let (text, _) = drive(&mut svc, input, piece);
            assert!(text.contains("{\"id\":1,\"subscribers\":0}"), "piece {piece}: {text}");
            assert!(text.contains("{\"id\":2,\"subscribers\":0}"), "piece {piece}: {text}");
        }
        let (_, _) = drive(&mut svc, input, input.len());
        let (text, _) = drive(&mut svc, b"GET /sub/news?since=0 HTTP/1.1\r\nHost: a\r\n\r\n", 1000);
        assert!(text.contains("Cache-Control: no-cache"));
        assert!(
            text.ends_with(
                "{\"last_id\":2,\"messages\":[{\"id\":1,\"data\":\"hello\"},{\"id\":2,\"data\":\"two\"}]}\n"
            )
        );
    }

    #[test]
    fn subscriptions_are_handed_to_the_server() {
        let mut svc = service(100);
        let mut proto = Proto::new();
        let mut out = Output::default();
        let (_, step) = svc.serve(&mut proto, b"GET /sub/a HTTP/1.1\r\nHost: a\r\n\r\n", &mut out, loopback());
        let Step::Subscribe(start) = step else { panic!("{step:?}") };
        assert_eq!((start.mode, start.last_id, start.chunked), (Mode::LongPoll, 0, false));
        assert!(out.is_empty(), "a held long poll writes nothing yet");
        let (_, step) = svc.serve(
            &mut proto,
            b"GET /sub/a HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n\r\n",
            &mut out,
            loopback(),
        );
        let Step::Subscribe(start) = step else { panic!("{step:?}") };
        assert_eq!(start.mode, Mode::Sse);
        let text = String::from_utf8(out.take_all()).unwrap();
        assert!(text.contains("Content-Type: text/event-stream") && text.contains("Transfer-Encoding: chunked"));
        assert!(text.ends_with("\r\n\r\nd\r\nretry: 2000\n\n\r\n"), "{text:?}");
        let far = "10.0.0.1:9".parse().unwrap();
        let (_, step) =
            svc.serve(&mut proto, b"POST /pub/a HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx", &mut out, far);
        assert_eq!(step, Step::Answered);
        assert!(String::from_utf8(out.take_all()).unwrap().starts_with("HTTP/1.1 403 Forbidden"));
    }

    /// Defect 14.9: a body with bad framing on a request whose handler
    /// does not read it was answered 200 with keep-alive, then the
    /// connection closed silently.
    #[test]
    fn a_body_nobody_reads_is_checked_before_the_answer() {
        for bad in ["zz\r\nab\r\n0\r\n\r\n", "2\rab\r\n0\r\n\r\n", "2\r\nabXX0\r\n\r\n"] {
            let mut svc = service(100);
            let req = format!("GET /hello.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{bad}");
            let (text, proto) = drive(&mut svc, req.as_bytes(), req.len());
            assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{bad:?}: {text}");
            assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{bad:?}: {text}");
            assert_eq!(proto.close_kind(), Some(CloseKind::ServerFirst));
        }
        let mut svc = service(100);
        let good = b"GET /hello.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n";
        for piece in [1, 7, good.len()] {
            let (text, proto) = drive(&mut svc, good, piece);
            assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.contains("Keep-Alive"), "{text}");
            assert!(proto.close_kind().is_none());
        }
        // Past --max-body-bytes while discarding: 413, close.
        let long = format!(
            "GET /hello.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n{}\r\n",
            "x".repeat(2048)
        );
        let (text, proto) = drive(&mut svc, long.as_bytes(), 100);
        assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
        assert_eq!(proto.close_kind(), Some(CloseKind::ServerFirst));
    }

    /// Defect 14.3: a subscription that starts during shutdown is not held.
    #[test]
    fn while_draining_subscriptions_are_answered_at_once() {
        let mut svc = service(100);
        svc.service.set_draining();
        let (text, proto) = drive(&mut svc, b"GET /sub/a HTTP/1.1\r\nHost: a\r\n\r\n", 1000);
        assert!(text.starts_with("HTTP/1.1 204 ") && text.contains("Connection: close"), "{text}");
        assert!(proto.is_done());
        let (text, proto) =
            drive(&mut svc, b"GET /sub/a HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n\r\n", 1000);
        assert!(text.starts_with("HTTP/1.1 200 ") && text.ends_with("retry: 2000\n\n\r\n0\r\n\r\n"), "{text:?}");
        assert!(proto.is_done());
        assert_eq!(svc.channels.channels(), 0, "nothing held, nothing made");
    }
}
