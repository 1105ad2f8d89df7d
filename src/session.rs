//! The HTTP side of one connection, sans-IO: bytes in (its input buffer),
//! bytes out (its output queue), and what it wants next. It writes every
//! protocol byte the connection ever sends: responses (through `Service`),
//! and the ones the reactor asks for — the `204`, last chunk or ping that
//! end or keep a subscription, the message a subscriber receives, the
//! `408` of a timeout or an eviction, the `503` at the door. The reactor
//! never builds HTTP; it moves bytes and decides states.
//!
//! No socket, no clock, no slab: the turn's time comes in as a `Turn`, so
//! every step is tested with byte strings.

use crate::http::body::LAST_CHUNK;
use crate::http::reply;
use crate::http::{CloseKind, Output, Persist, Proto, Reading, Reply, Status, Version};
use crate::metrics::Histogram;
use crate::policy::{RETRY_AFTER_SECS, SUB_MAX_QUEUE, SUB_SEGMENT};
use crate::pool::{BufPool, Bufs};
use crate::pubsub::{self, Channel, ChannelId, Message, Mode};
use crate::service::{self, Ctx, PendingPublish, Service, Step, SubStart};

/// What a step needs to know about the turn, passed in.
#[derive(Clone, Copy)]
pub struct Turn {
    pub date: [u8; 29],
    /// Loop clock, milliseconds.
    pub now: u64,
    /// The idle timeout in force, for the `Keep-Alive` hint.
    pub idle_timeout_secs: u64,
    pub max_requests: u32,
}

/// A held long poll or an open stream (RFC 6202).
#[derive(Debug)]
pub struct Sub {
    pub channel: ChannelId,
    pub mode: Mode,
    /// The last message id this subscriber has been sent.
    pub last_id: u64,
    /// The stream is chunked (else delimited by closing: HTTP/1.0).
    pub chunked: bool,
    pub keep_alive: bool,
    pub http10: bool,
    /// Loop clock when the subscription started (stream lifetime).
    pub started: u64,
    /// The channel's history has not arrived yet (it lives in a broker):
    /// nothing is delivered until it has (`resolve`).
    pub waiting: bool,
    /// Start from whatever is newest once the history is here (no `since`).
    pub from_now: bool,
    /// CORS field lines for the responses that end it (`cors.rs`).
    pub cors: Option<std::rc::Rc<[u8]>>,
}

/// How a subscription ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubEnd {
    /// Timeout or lifetime: `204` for a long poll, the last chunk for a
    /// stream; the connection carries on as it would have.
    Empty,
    /// A request arrived behind it (RFC 6202 §5.2): as `Empty`, then that
    /// request is served.
    Superseded,
    /// Load shedding or shutdown: as `Empty`, and the connection closes.
    Shed,
}

/// What a delivery did to the subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The message is queued; the subscription goes on.
    Sent,
    /// Already had it, or it belongs to another channel.
    Skipped,
    /// A long poll was answered: the subscription is over and must leave
    /// the channel.
    Answered,
    /// A subscriber too far behind was let go: it must leave the channel.
    LetGo,
}

/// What a connection is held open for: a subscription, or a publish
/// waiting for the broker's id (nothing behind it is served before it is
/// answered: responses go in request order). One box for either, so a
/// connection holding neither pays one pointer.
enum Wait {
    Sub(Sub),
    Publish(PendingPublish),
}

pub struct Session {
    proto: Proto,
    bufs: Option<Box<Bufs>>,
    wait: Option<Box<Wait>>,
    /// The last serve step found no complete request in the input.
    need_input: bool,
    /// A request was answered (or a subscription started) this turn: the
    /// state's timer restarts.
    answered: bool,
}

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

impl Session {
    pub fn new() -> Session {
        Session { proto: Proto::new(), bufs: None, wait: None, need_input: false, answered: false }
    }

    // ---- buffers: bytes in, bytes out -------------------------------------

    /// The buffers to read into, taken from the pool if the session holds
    /// none.
    pub fn buffers(&mut self, pool: &mut BufPool) -> &mut Bufs {
        self.bufs.get_or_insert_with(|| pool.take())
    }

    /// The output queue, if the session holds buffers.
    pub fn output(&mut self) -> Option<&mut Output> {
        self.bufs.as_mut().map(|b| &mut b.out)
    }

    /// Give the buffers back when they hold nothing: a connection with no
    /// work holds none.
    #[inline]
    pub fn release_if_empty(&mut self, pool: &mut BufPool, now: u64, times: &mut Histogram) {
        if self.bufs.as_ref().is_some_and(|b| !b.has_input() && b.out.is_empty())
            && let Some(mut bufs) = self.bufs.take()
        {
            if !bufs.timing.is_empty() {
                // Every response was handed to the socket (over TLS, some of
                // its records may still be on their way: within a turn).
                bufs.timing.written(now, times);
            }
            pool.give(bufs);
        }
    }

    /// Give the buffers back whatever they hold (the connection closes).
    pub fn release(&mut self, pool: &mut BufPool) {
        if let Some(bufs) = self.bufs.take() {
            pool.give(bufs);
        }
    }

    #[inline]
    pub fn has_input(&self) -> bool {
        self.bufs.as_ref().is_some_and(|b| b.has_input())
    }

    /// Room to read more input (buffers not held yet count as room).
    #[inline]
    pub fn input_room(&self, capacity: usize) -> bool {
        self.bufs.as_ref().is_none_or(|b| b.has_room(capacity))
    }

    /// Unsent output bytes, file ranges included.
    #[inline]
    pub fn pending(&self) -> u64 {
        self.bufs.as_ref().map_or(0, |b| b.out.pending())
    }

    /// Unsent output cost (memory, and a flat cost per file range): what
    /// back-pressure bounds.
    #[inline]
    pub fn pending_memory(&self) -> u64 {
        self.bufs.as_ref().map_or(0, |b| b.out.pending_memory())
    }

    #[inline]
    pub fn output_pending(&self) -> bool {
        self.bufs.as_ref().is_some_and(|b| !b.out.is_empty())
    }

    // ---- what it wants ----------------------------------------------------

    pub fn subscription(&self) -> Option<&Sub> {
        match self.wait.as_deref() {
            Some(Wait::Sub(sub)) => Some(sub),
            _ => None,
        }
    }

    /// A publish waits for the broker.
    pub fn publishing(&self) -> Option<&PendingPublish> {
        match self.wait.as_deref() {
            Some(Wait::Publish(publish)) => Some(publish),
            _ => None,
        }
    }

    fn sub_mut(&mut self) -> Option<&mut Sub> {
        match self.wait.as_deref_mut() {
            Some(Wait::Sub(sub)) => Some(sub),
            _ => None,
        }
    }

    /// End the wait for a subscription, handing it over.
    fn take_sub(&mut self) -> Option<Sub> {
        match self.wait.take().map(|w| *w) {
            Some(Wait::Sub(sub)) => Some(sub),
            other => {
                self.wait = other.map(Box::new);
                None
            }
        }
    }

    /// No further request will be read; how to close once output is out.
    pub fn close_kind(&self) -> Option<CloseKind> {
        self.proto.close_kind()
    }

    pub fn is_done(&self) -> bool {
        self.proto.is_done()
    }

    pub fn needs_input(&self) -> bool {
        self.need_input
    }

    /// Inside a request body (discarded or collected).
    pub fn in_body(&self) -> bool {
        matches!(self.proto.reading, Reading::Discard(_) | Reading::Collect(_))
    }

    /// A request is under way: some of it has arrived and it is not
    /// answered yet.
    pub fn request_under_way(&self) -> bool {
        !self.proto.is_done() && (self.has_input() || self.in_body())
    }

    pub fn served(&self) -> u32 {
        self.proto.served
    }

    /// Whether a request was answered since the last call.
    pub fn take_answered(&mut self) -> bool {
        std::mem::take(&mut self.answered)
    }

    // ---- steps ------------------------------------------------------------

    /// Whether a serve step may run now: input is there, the output is not
    /// backed up, and nothing holds the connection.
    #[inline]
    pub fn may_serve(&self, high_water: u64) -> bool {
        self.wait.is_none()
            && !self.proto.is_done()
            && self.bufs.as_ref().is_some_and(|b| b.has_input() && b.out.pending_memory() < high_water)
    }

    /// Answer at most one request from the input. On `Step::Subscribe` the
    /// caller puts the connection on the channel's list and calls `hold`.
    /// Inlined into the serve phase, its one caller: once per request.
    #[inline(always)]
    pub fn serve(&mut self, service: &mut Service, ctx: &mut Ctx<'_>) -> Step {
        let Some(bufs) = self.bufs.as_mut() else { return Step::NeedInput };
        let served = self.proto.served;
        let (n, step) = service.serve_one(&mut self.proto, &bufs.input[bufs.start..], &mut bufs.out, ctx);
        bufs.start += n;
        let heads = self.proto.served.wrapping_sub(served);
        if heads > 0 && !matches!(step, Step::Subscribe(_)) {
            // A head taken from the input this turn: its response is timed
            // until written (a subscription is not a response time). The
            // stamps live with the buffers, which a response needs anyway:
            // an idle connection pays nothing for them.
            bufs.timing.start(ctx.turn.now, heads);
        }
        match step {
            Step::Answered | Step::Subscribe(_) | Step::Publish(_) => self.answered = true,
            Step::NeedInput => self.need_input = true,
            Step::Done => {}
        }
        step
    }

    /// Record the waiting responses in `into` if the output has drained:
    /// they were all written by `now`. A request whose body is still
    /// arriving has no response yet, so nothing is recorded until it does.
    #[inline]
    pub fn record_written(&mut self, now: u64, into: &mut Histogram) {
        let in_body = self.in_body();
        if let Some(b) = self.bufs.as_mut()
            && !b.timing.is_empty()
            && b.out.is_empty()
            && !in_body
        {
            b.timing.written(now, into);
        }
    }

    /// Input arrived: whatever the last step found missing may be there.
    pub fn input_arrived(&mut self) {
        self.need_input = false;
    }

    /// Start holding the connection for `start`'s channel.
    pub fn hold(&mut self, start: SubStart, now: u64) {
        self.wait = Some(Box::new(Wait::Sub(Sub {
            channel: start.channel,
            mode: start.mode,
            last_id: start.last_id.unwrap_or(0),
            waiting: !start.filled,
            from_now: start.last_id.is_none(),
            chunked: start.chunked,
            keep_alive: start.keep_alive,
            http10: start.http10,
            started: now,
            cors: start.cors,
        })));
    }

    /// The channel's history has arrived (`newest` is its last id): the
    /// subscription starts where it asked, or from there (no `since`), and messages
    /// newer than its start are delivered from here on (a resumed stream
    /// replays its gap from history with the next delivery).
    pub fn resolve(&mut self, newest: u64) {
        if let Some(sub) = self.sub_mut().filter(|s| s.waiting) {
            sub.waiting = false;
            // A `since` beyond `newest` was handed out by another node first.
            if sub.from_now {
                sub.last_id = newest;
            }
        }
    }

    /// Wait for the broker's answer to `publish`, sent under `tag`.
    pub fn await_publish(&mut self, mut publish: PendingPublish, tag: u64) {
        publish.tag = tag;
        self.wait = Some(Box::new(Wait::Publish(publish)));
    }

    /// The broker answered the waiting publish (`Ok(id)`), or could not:
    /// write the answer.
    pub fn complete_publish(
        &mut self,
        service: &mut Service,
        outcome: Result<u64, ()>,
        ctx: &mut Ctx<'_>,
        pool: &mut BufPool,
    ) {
        let publish = match self.wait.take().map(|w| *w) {
            Some(Wait::Publish(publish)) => publish,
            other => {
                self.wait = other.map(Box::new);
                return;
            }
        };
        let out = &mut self.bufs.get_or_insert_with(|| pool.take()).out;
        service.publish_answered(&mut self.proto, publish, outcome, out, ctx);
    }

    /// The persistence fields of a subscriber's last response.
    fn persist(&self, sub: &Sub, turn: &Turn) -> Persist {
        Persist::after(sub.keep_alive, turn.idle_timeout_secs, turn.max_requests, self.proto.served, sub.http10)
    }

    /// End the subscription with its last words (`204` for a long poll,
    /// the last chunk of a stream). Returns whether there was one; the
    /// caller takes the connection off the channel's list.
    pub fn end_sub(&mut self, how: SubEnd, turn: &Turn, pool: &mut BufPool) -> bool {
        let Some(mut sub) = self.take_sub() else { return false };
        if how == SubEnd::Shed {
            sub.keep_alive = false;
        }
        let persist = self.persist(&sub, turn);
        let out = &mut self.bufs.get_or_insert_with(|| pool.take()).out;
        match sub.mode {
            Mode::LongPoll => {
                let mut reply = Reply::new(out, &turn.date, persist, false);
                reply.cors = sub.cors.clone();
                service::long_poll_empty(&mut reply);
            }
            Mode::Stream | Mode::Sse if sub.chunked => out.bytes().extend_from_slice(LAST_CHUNK),
            // Delimited by the close itself.
            Mode::Stream | Mode::Sse => sub.keep_alive = false,
        }
        if !sub.keep_alive {
            let kind = if how == SubEnd::Shed || !sub.chunked {
                CloseKind::ServerFirst
            } else {
                CloseKind::asked_by_client(if sub.http10 { Version::Http10 } else { Version::Http11 })
            };
            self.proto.finish(kind);
        }
        true
    }

    /// Forget the subscription without writing anything (the connection is
    /// closing).
    pub fn drop_sub(&mut self) -> bool {
        self.take_sub().is_some()
    }

    /// Whether a stream has outlived `lifetime` (RFC 6202 §3.2: end it so
    /// the client reconnects and intermediaries let go of what they keep).
    pub fn stream_expired(&self, lifetime_ms: u64, now: u64) -> bool {
        self.subscription().is_some_and(|s| s.started + lifetime_ms <= now)
    }

    /// Keep an event stream's intermediaries from cutting it: an SSE
    /// comment line. Other modes have nothing that a client would ignore.
    pub fn ping(&mut self, pool: &mut BufPool) {
        let Some(sub) = self.subscription() else { return };
        if sub.mode == Mode::Sse {
            let chunked = sub.chunked;
            let out = &mut self.bufs.get_or_insert_with(|| pool.take()).out;
            pubsub::frame(out.bytes_up_to(SUB_SEGMENT), b": ping\n\n", chunked);
        }
    }

    /// Give `message` of `channel` to this subscriber. `encoded` holds the
    /// message as a stream and as an SSE event, encoded once per publish.
    pub fn deliver(
        &mut self,
        channel: &Channel,
        message: &Message,
        encoded: &[Vec<u8>; 2],
        turn: &Turn,
        pool: &mut BufPool,
    ) -> Delivery {
        let Some(Wait::Sub(sub)) = self.wait.as_deref_mut() else { return Delivery::Skipped };
        if sub.waiting || sub.last_id >= message.id {
            return Delivery::Skipped;
        }
        let bufs = self.bufs.get_or_insert_with(|| pool.take());
        match sub.mode {
            Mode::LongPoll => {
                // Everything newer than what it has, batched (§2.2).
                let body = pubsub::long_poll_body(channel.since(sub.last_id), sub.last_id);
                let persist = Persist::after(
                    sub.keep_alive,
                    turn.idle_timeout_secs,
                    turn.max_requests,
                    self.proto.served,
                    sub.http10,
                );
                let mut reply = Reply::new(&mut bufs.out, &turn.date, persist, false);
                reply.cors = sub.cors.take();
                service::long_poll_reply(&mut reply, &body);
                if !sub.keep_alive {
                    let version = if sub.http10 { Version::Http10 } else { Version::Http11 };
                    self.proto.finish(CloseKind::asked_by_client(version));
                }
                self.wait = None;
                Delivery::Answered
            }
            Mode::Stream | Mode::Sse if bufs.out.pending() > SUB_MAX_QUEUE => {
                // Too slow to keep up: finish what is partly sent, drop the
                // rest, end the stream well-formed and close; the client
                // resumes from history by Last-Event-ID (a partial SSE event
                // is never dispatched, and a chunked stream ends with its
                // last chunk, not in the middle of one).
                bufs.out.truncate_after_front();
                if sub.chunked {
                    bufs.out.bytes().extend_from_slice(LAST_CHUNK);
                }
                self.proto.finish(CloseKind::ServerFirst);
                self.wait = None;
                Delivery::LetGo
            }
            Mode::Stream | Mode::Sse => {
                let out = bufs.out.bytes_up_to(SUB_SEGMENT);
                if sub.last_id + 1 == message.id {
                    pubsub::frame(out, &encoded[usize::from(sub.mode == Mode::Sse)], sub.chunked);
                } else {
                    // A gap (a resumed subscriber): fill it from history, up to
                    // the newest kept (further messages of this turn are then
                    // skipped, not sent twice).
                    let mut payload = Vec::new();
                    for m in channel.since(sub.last_id) {
                        payload.extend_from_slice(&pubsub::stream_payload(sub.mode, m));
                        sub.last_id = m.id;
                    }
                    pubsub::frame(out, &payload, sub.chunked);
                }
                sub.last_id = sub.last_id.max(message.id);
                Delivery::Sent
            }
        }
    }

    /// The request head (or body) took too long: `408` if a request was
    /// under way (RFC 9110 §15.5.9), then close. Returns whether anything
    /// was written; a connection that sent nothing is just closed.
    pub fn timeout(&mut self, turn: &Turn, pool: &mut BufPool) -> bool {
        let under_way = self.request_under_way();
        self.proto.finish(CloseKind::ServerFirst);
        if !under_way {
            return false;
        }
        let bufs = self.bufs.get_or_insert_with(|| pool.take());
        bufs.start = bufs.input.len();
        reply::simple(bufs.out.bytes(), Status::REQUEST_TIMEOUT, &turn.date, Persist::Close, b"", true);
        true
    }

    /// The response cannot be completed (its file shrank under it): send
    /// nothing more, close.
    pub fn abort(&mut self) {
        if let Some(bufs) = self.bufs.as_mut() {
            bufs.out.clear();
        }
        self.wait = None;
        self.proto.finish(CloseKind::ServerFirst);
    }

    /// Plain HTTP arrived on a TLS port: a `400` in the clear that says so
    /// (the TLS session is gone), then close.
    pub fn refuse_plain_http(&mut self, date: &[u8; 29], pool: &mut BufPool) {
        let bufs = self.bufs.get_or_insert_with(|| pool.take());
        bufs.start = bufs.input.len();
        crate::tls::sniff::plain_http_response(bufs.out.bytes(), date);
        self.proto.finish(CloseKind::ServerFirst);
    }

    /// A newcomer refused at the door: `503` with `Retry-After`, close.
    pub fn refusal(date: &[u8; 29]) -> Vec<u8> {
        let mut answer = Vec::with_capacity(192);
        let mut retry = b"Retry-After: ".to_vec();
        reply::push_decimal(&mut retry, RETRY_AFTER_SECS);
        retry.extend_from_slice(b"\r\n");
        reply::simple(&mut answer, Status::SERVICE_UNAVAILABLE, date, Persist::Close, &retry, true);
        answer
    }

    /// The bytes to send a connection evicted to make room while a request
    /// was under way (a slow head or body): the same `408` as a timeout.
    pub fn eviction_notice(&self, date: &[u8; 29]) -> Option<Vec<u8>> {
        if !self.request_under_way() {
            return None;
        }
        let mut answer = Vec::with_capacity(192);
        reply::simple(&mut answer, Status::REQUEST_TIMEOUT, date, Persist::Close, b"", true);
        Some(answer)
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
