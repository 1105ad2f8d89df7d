//! The channel routes (RFC 6202): `POST /pub/NAME` publishes, `GET
//! /sub/NAME` answers from history or starts a long poll, a stream or an
//! event stream for the server to hold. With a broker (`--broker`) a
//! publish is answered once the broker has issued its id.

use super::*;

/// A request's Referer and User-Agent, kept for a log line written later.
pub(super) type LogFields = (Option<Box<[u8]>>, Option<Box<[u8]>>);

impl Service {
    /// Who may publish: loopback clients, or, with `--publish-token`, any
    /// client presenting it (and only those).
    pub(super) fn may_publish(&self, head: &Head<'_>, name: &str, ctx: &Ctx<'_>) -> Result<(), Status> {
        let allowed = match &self.publish_token {
            Some(token) => head.authorization.and_then(|a| a.strip_prefix(b"Bearer ")) == Some(token.as_bytes()),
            // Loopback, also as seen through a dual-stack `[::]` listener.
            None => admin::is_local(ctx.peer),
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
    /// With a broker, the publish is handed back to wait for its id.
    pub(super) fn publish_route(
        &mut self,
        head: &Head<'_>,
        name: &str,
        reply: &mut Reply<'_>,
        ctx: &mut Ctx<'_>,
    ) -> Option<Box<PendingPublish>> {
        match head.method {
            Method::Options => options(reply, PUB_ALLOW),
            // A POST whose body was empty (Content-Length: 0).
            Method::Post if ctx.channels.is_brokered() => {
                let request_line = format!("{} {} {}", head.method_str, head.target, head.version.as_str());
                let persist = reply.persist;
                let (channel, request_line) = (name.into(), request_line.into());
                let (referer, user_agent) = self.log_fields(head);
                return Some(Box::new(PendingPublish {
                    tag: 0,
                    channel,
                    data: String::new(),
                    persist,
                    close_after: None,
                    request_line,
                    referer,
                    user_agent,
                    cors: reply.cors.clone(),
                }));
            }
            Method::Post => self.publish(name, "", reply, ctx),
            _ => reply.simple(Status::METHOD_NOT_ALLOWED, PUB_ALLOW),
        }
        None
    }

    /// The body of a publish arrived: publish it and answer, or hand it
    /// back to wait for the broker.
    pub(super) fn finish_publish(
        &mut self,
        proto: &mut Proto,
        c: Collecting,
        out: &mut Output,
        ctx: &mut Ctx<'_>,
    ) -> Step {
        let text = String::from_utf8(c.body);
        if ctx.channels.is_brokered()
            && let Ok(data) = text
        {
            let (persist, close_after, request_line) = (c.persist, c.close_after, c.request_line);
            return Step::Publish(Box::new(PendingPublish {
                tag: 0,
                channel: c.target,
                data,
                persist,
                close_after,
                request_line,
                referer: c.referer,
                user_agent: c.user_agent,
                cors: c.cors,
            }));
        }
        if let Some(kind) = c.close_after {
            proto.finish(kind);
        }
        let mut reply = Reply::new(out, &ctx.turn.date, c.persist, false);
        reply.cors = c.cors;
        match &text {
            Ok(text) => self.publish(&c.target, text, &mut reply, ctx),
            Err(_) => reply.simple(Status::BAD_REQUEST, b""),
        }
        let fields = (c.referer.as_deref(), c.user_agent.as_deref());
        self.log_request_line(&c.request_line, fields, reply.status, reply.body_bytes, ctx);
        Step::Answered
    }

    /// The broker answered a publish (`Ok(id)`: stored under this id), or
    /// could not (`Err`: not connected, lost, too slow): answer it.
    pub fn publish_answered(
        &mut self,
        proto: &mut Proto,
        pending: PendingPublish,
        outcome: Result<u64, ()>,
        out: &mut Output,
        ctx: &mut Ctx<'_>,
    ) {
        if let Some(kind) = pending.close_after {
            proto.finish(kind);
        }
        let mut reply = Reply::new(out, &ctx.turn.date, pending.persist, false);
        reply.cors = pending.cors;
        match outcome {
            Ok(id) => {
                let reached = ctx.channels.channel(&pending.channel).map_or(0, |c| c.subscribers());
                published(&mut reply, id, reached);
            }
            Err(()) => reply.simple(Status::SERVICE_UNAVAILABLE, RETRY_LATER),
        }
        let fields = (pending.referer.as_deref(), pending.user_agent.as_deref());
        self.log_request_line(&pending.request_line, fields, reply.status, reply.body_bytes, ctx);
    }

    /// The Referer and User-Agent of a request answered later, kept only
    /// when the access log's format shows them (combined).
    pub(super) fn log_fields(&self, head: &Head<'_>) -> LogFields {
        let combined = self.log.as_ref().is_some_and(|l| l.format() == LogFormat::Combined);
        let keep = |v: Option<&[u8]>| if combined { v.map(Box::from) } else { None };
        (keep(head.referer), keep(head.user_agent))
    }

    /// Log a request answered after its head was gone: from its request
    /// line and the fields kept for it.
    fn log_request_line(
        &mut self,
        line: &str,
        (referer, user_agent): (Option<&[u8]>, Option<&[u8]>),
        status: Status,
        bytes: u64,
        ctx: &Ctx<'_>,
    ) {
        if let Some(log) = &mut self.log {
            let mut parts = line.splitn(3, ' ');
            let (m, t, v) = (parts.next().unwrap_or("-"), parts.next().unwrap_or("-"), parts.next().unwrap_or("-"));
            let req = access_log::Request { method: m, target: t, version: v, referer, user_agent };
            log.record_request(ctx.now_secs, ctx.peer, &req, status.code(), bytes);
        }
    }

    pub(super) fn publish(&mut self, name: &str, text: &str, reply: &mut Reply<'_>, ctx: &mut Ctx<'_>) {
        let Ok(channel) = ctx.channels.open(name, ctx.turn.now) else {
            return reply.simple(Status::SERVICE_UNAVAILABLE, RETRY_LATER);
        };
        let id = ctx.channels.publish(channel, text, ctx.turn.now);
        let reached = ctx.channels.get(channel).map_or(0, |c| c.subscribers());
        published(reply, id, reached);
    }
}

/// `{"id":N,"subscribers":M}`: the id the message got, and how many
/// subscribers here it reached.
fn published(reply: &mut Reply<'_>, id: u64, reached: usize) {
    {
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
}

impl Service {
    /// `GET /sub/NAME`: answer at once from history, or start a hold or a
    /// stream (RFC 6202). Returns the subscription for the server to keep.
    /// While shutting down nothing new is held: a long poll is answered at
    /// once and a stream sends what history it asked for, then ends.
    pub(super) fn subscribe(
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
        // Whether this node knows the channel's history: always when
        // channels live here; with a broker, once it has been filled.
        let known = ctx.channels.channel(name).map_or(!ctx.channels.is_brokered(), |c| c.filled);
        let http10 = head.version == parse::Version::Http10;
        if mode == Mode::LongPoll
            && let (Some(since), Some(channel)) = (since, ctx.channels.channel(name))
            && known
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
            filled: known,
            chunked,
            keep_alive: keep,
            http10,
            cors: None,
        };
        // Not known yet: the subscription waits for the history, and starts
        // after `since`, or from whatever is newest then. A `since` beyond
        // the newest id here is a restarted server's old id when channels
        // live here (clamped: it waits for the next message); with a broker
        // it is an id another node has handed out before this one heard of
        // it, which must not be delivered twice.
        let brokered = ctx.channels.is_brokered();
        let from = match (known, since) {
            (true, Some(since)) if brokered => Some(since),
            (true, since) => Some(newest.min(since.unwrap_or(newest))),
            (false, since) => since,
        };
        if mode == Mode::LongPoll {
            // Hold. A `since` from the future (a restarted server) waits for
            // the next message like no `since` at all.
            return channel.map(|c| start(c, from, false));
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
        let mut last = from;
        if let (Some(since), Some(history), true) = (since, ctx.channels.channel(name), known) {
            // Resume from history (Last-Event-ID). (A channel not known yet
            // replays it when its history arrives.)
            for m in history.since(since) {
                payload.extend_from_slice(&pubsub::stream_payload(mode, m));
            }
            last = Some(if brokered { newest.max(since) } else { newest });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::loopback;
    use crate::service::tests::{drive, service};

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
        assert_eq!((start.mode, start.last_id, start.chunked), (Mode::LongPoll, Some(0), false));
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
