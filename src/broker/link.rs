//! `Link`: one connection to Redis as a sans-IO state machine. Bytes read
//! from the socket go in through [`Link::feed`]; bytes to write come out of
//! [`Link::output`]; what happened comes out of [`Link::poll_event`]. No
//! socket, no clock, no blocking: the event loop owns all three.
//!
//! Requests and replies: Redis answers the commands of one connection in
//! the order they were sent, so every command that gets a reply is queued
//! in `pending` and each reply answers the oldest. RESP3 push frames (`>`)
//! are not replies: a pushed `message` never touches the queue. The one
//! exception is by design of RESP3: SUBSCRIBE and UNSUBSCRIBE get no reply
//! but a `subscribe`/`unsubscribe` push in their place, in order, so such
//! a push answers a pending (UN)SUBSCRIBE for the same channel (and an ACL
//! refusal arrives as an ordinary error reply to it).
//!
//! Memory, bounded per link: the input holds at most one partial frame
//! (`codec::MAX_FRAME`, 8 MiB) beside what the last `feed` brought; the
//! output and the publish data kept for NOSCRIPT retries together stay
//! under [`MAX_QUEUED_BYTES`] (8 MiB: new requests are refused past it;
//! only a range's next page and the handshake are sent regardless); at
//! most [`MAX_PENDING`] requests are in flight; events hold what one
//! `feed` decoded until the caller drains them. Buffers larger than 64 KiB
//! are released once empty.
//!
//! States: `Disconnected` → (`on_connected`) `Handshaking` → (every
//! handshake reply OK) `Ready` → (`on_disconnected`) `Disconnected`. A
//! protocol error or a refused handshake makes it `Broken` until the caller
//! closes the socket and calls `on_disconnected`.

use std::collections::VecDeque;

use bytes::Bytes;
use log::{debug, trace, warn};
use redis_protocol::resp3::types::RangeFrame;

use crate::broker::codec::{self, Framer};
pub use crate::broker::event::{Event, Refused};
use crate::broker::reply::{self, Push};
pub use crate::broker::request::RANGE_PAGE;
use crate::broker::request::{Params, Pending};
use crate::broker::script::{self, Script};
use crate::pubsub::{MAX_MESSAGE, valid_name};

/// Requests in flight at most; past it requests are refused (`Busy`). A
/// publish waits for its reply in an HTTP request, so this is also the
/// most publishes one node has outstanding.
pub const MAX_PENDING: usize = 4096;
/// Bytes of unsent commands plus the publish data kept for a NOSCRIPT
/// retry, at most: 128 full-size messages. Past it requests are refused.
pub const MAX_QUEUED_BYTES: usize = 8 << 20;
/// Buffers emptied while larger than this are given back: one big range
/// reply or a burst of publishes should not pin megabytes for good.
const KEEP_BUFFER: usize = 64 * 1024;

/// Where the connection stands; see the module doc for the transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Disconnected,
    Handshaking,
    Ready,
    Broken,
}

pub struct Link {
    db: u8,
    params: Params,
    state: State,
    /// Unsent bytes are `out[sent..]`.
    out: Vec<u8>,
    sent: usize,
    /// Received bytes not yet decoded: at most one partial frame
    /// ([`codec::MAX_FRAME`]) plus what the last `feed` brought.
    input: Vec<u8>,
    framer: Framer,
    pending: VecDeque<Pending>,
    /// Publish data held in `pending` for a NOSCRIPT retry.
    held_bytes: usize,
    events: VecDeque<Event>,
}

impl Link {
    /// `history_len`: messages kept per channel (`--channel-history`);
    /// `idle_ms`: how long an untouched channel lives in Redis
    /// ([`CHANNEL_IDLE_MS`](crate::pubsub::CHANNEL_IDLE_MS)).
    pub fn new(db: u8, history_len: usize, idle_ms: u64) -> Link {
        Link {
            db,
            params: Params { history_len, idle_ms, ..Params::default() },
            state: State::Disconnected,
            out: Vec::new(),
            sent: 0,
            input: Vec::new(),
            framer: Framer::default(),
            pending: VecDeque::new(),
            held_bytes: 0,
            events: VecDeque::new(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// Requests awaiting a reply.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    fn set_state(&mut self, to: State) {
        trace!("broker {:?}=>{:?}", self.state, to);
        self.state = to;
    }

    /// The TCP connection is established: queue the handshake. `HELLO 3`
    /// first, so pushes and replies share this one connection (in RESP2 a
    /// subscribed connection may send nothing but (UN)SUBSCRIBE and PING);
    /// then the database and both scripts.
    pub fn on_connected(&mut self) {
        self.reset();
        self.set_state(State::Handshaking);
        self.send(Pending::Hello);
        if self.db != 0 {
            self.send(Pending::Select(self.db));
        }
        self.send(Pending::Load(Script::Publish));
        self.send(Pending::Load(Script::Range));
    }

    /// The connection is gone (or the caller closed it after `Error`):
    /// every request in flight fails with an event, buffers are dropped.
    pub fn on_disconnected(&mut self) {
        for p in std::mem::take(&mut self.pending) {
            let error = "connection to the broker lost".to_string();
            match p {
                Pending::Publish { tag, channel, .. } => {
                    self.events.push_back(Event::PublishFailed { tag, channel, error })
                }
                Pending::Range { tag, channel, .. } | Pending::LastId { tag, channel } => {
                    self.events.push_back(Event::QueryFailed { tag, channel, error })
                }
                _ => {}
            }
        }
        self.reset();
        self.set_state(State::Disconnected);
    }

    fn reset(&mut self) {
        self.out = Vec::new();
        self.sent = 0;
        self.input = Vec::new();
        self.framer = Framer::default();
        self.pending.clear();
        self.held_bytes = 0;
    }

    /// Bytes to write to the socket.
    pub fn output(&self) -> &[u8] {
        &self.out[self.sent..]
    }

    /// `n` bytes of [`output`](Link::output) were written.
    pub fn consumed(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.out.len());
        if self.sent == self.out.len() {
            if self.out.capacity() > KEEP_BUFFER {
                self.out = Vec::new();
            }
            self.out.clear();
            self.sent = 0;
        } else if self.sent > self.out.len() / 2 {
            // Compact once the written part is the larger: each byte moves
            // at most once on average.
            self.out.drain(..self.sent);
            self.sent = 0;
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Publish `data` on `channel`. `floor`: the highest id this node has
    /// seen on the channel (delivered or published), so ids never go
    /// backwards if Redis lost its data. Answered by `Published` or
    /// `PublishFailed` with `tag`.
    pub fn publish(&mut self, channel: &str, data: &[u8], floor: u64, tag: u64) -> Result<(), Refused> {
        self.admit(channel, data.len().min(MAX_MESSAGE))?;
        if data.len() > MAX_MESSAGE {
            return Err(Refused::TooLarge);
        }
        let data = Bytes::copy_from_slice(data);
        self.send(Pending::Publish { tag, channel: channel.into(), data, floor, by_sha: true });
        Ok(())
    }

    /// Messages newer than `after` (from the stream), answered by one or
    /// more `Range` pages or `QueryFailed`. A `floor` above Redis's last id
    /// raises it (pass the node's last delivered id after a reconnect; 0
    /// otherwise).
    pub fn range(&mut self, channel: &str, after: u64, floor: u64, tag: u64) -> Result<(), Refused> {
        self.admit(channel, 0)?;
        self.send(Pending::Range { tag, channel: channel.into(), after, floor, by_sha: true });
        Ok(())
    }

    /// The last id issued on `channel`, answered by `LastId`.
    pub fn last_id(&mut self, channel: &str, tag: u64) -> Result<(), Refused> {
        self.admit(channel, 0)?;
        self.send(Pending::LastId { tag, channel: channel.into() });
        Ok(())
    }

    /// Start receiving `channel`'s messages; answered by `Subscribed`.
    pub fn subscribe(&mut self, channel: &str) -> Result<(), Refused> {
        self.admit(channel, 0)?;
        self.send(Pending::Subscribe { channel: channel.into() });
        Ok(())
    }

    /// Stop receiving `channel`'s messages; answered by `Unsubscribed`.
    /// Messages already on their way may still arrive before it.
    pub fn unsubscribe(&mut self, channel: &str) -> Result<(), Refused> {
        self.admit(channel, 0)?;
        self.send(Pending::Unsubscribe { channel: channel.into() });
        Ok(())
    }

    /// Keep a channel's keys alive for another idle period: call it for
    /// every channel with local subscribers at least twice per idle period,
    /// so a quiet channel that still has listeners keeps its ids and
    /// history, as it does in-process. No event unless it fails (logged).
    pub fn touch(&mut self, channel: &str) -> Result<(), Refused> {
        self.admit(channel, 0)?;
        for key in [script::seq_key(channel), script::log_key(channel)] {
            self.send(Pending::Touch { key });
        }
        Ok(())
    }

    /// Whether a request about `channel` carrying `bytes` of data may be
    /// queued now.
    fn admit(&self, channel: &str, bytes: usize) -> Result<(), Refused> {
        if self.state != State::Ready {
            return Err(Refused::NotReady);
        }
        if !valid_name(channel) {
            return Err(Refused::BadChannel);
        }
        let queued = self.output().len() + self.held_bytes + bytes;
        if self.pending.len() + 2 > MAX_PENDING || queued > MAX_QUEUED_BYTES {
            return Err(Refused::Busy);
        }
        Ok(())
    }

    fn send(&mut self, p: Pending) {
        p.encode(&mut self.out, &self.params);
        self.held_bytes += p.held();
        self.pending.push_back(p);
    }

    /// Bytes read from the socket. Decodes every complete frame at once
    /// into events: drain [`poll_event`](Link::poll_event) after each call,
    /// so events hold no more than what one read brought.
    pub fn feed(&mut self, bytes: &[u8]) {
        if !matches!(self.state, State::Handshaking | State::Ready) {
            return;
        }
        self.input.extend_from_slice(bytes);
        let mut start = 0;
        let result = loop {
            match self.framer.next_frame(&self.input[start..]) {
                Ok(Some(len)) => {
                    let decoded = codec::decode(&self.input[start..start + len]);
                    // The frame's ranges point into `input`, which the
                    // handler reads while it changes the rest of `self`.
                    let input = std::mem::take(&mut self.input);
                    let handled = decoded.and_then(|f| self.on_frame(&f, &input[start..start + len]));
                    self.input = input;
                    if let Err(e) = handled {
                        break Err(e);
                    }
                    start += len;
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.input.drain(..start);
        if self.input.is_empty() && self.input.capacity() > KEEP_BUFFER {
            self.input = Vec::new();
        }
        if let Err(what) = result {
            self.fail(what);
        }
    }

    fn fail(&mut self, what: String) {
        warn!("broker: {what}");
        self.events.push_back(Event::Error { what });
        self.input = Vec::new();
        self.set_state(State::Broken);
    }

    fn on_frame(&mut self, f: &RangeFrame, buf: &[u8]) -> Result<(), String> {
        if let RangeFrame::Push { data, .. } = f {
            return self.on_push(data, buf);
        }
        let Some(p) = self.pending.pop_front() else {
            return Err("a reply to no request".into());
        };
        self.held_bytes -= p.held();
        let error = codec::error_text(f, buf);
        let p = match (&error, p.by_source()) {
            (Some(e), Ok(again)) if e.starts_with("NOSCRIPT") => {
                debug!("broker: script not cached, sending it with EVAL");
                self.send(again);
                return Ok(());
            }
            (_, Ok(p) | Err(p)) => p,
        };
        match p {
            Pending::Hello => match error {
                Some(e) => return Err(format!("HELLO 3 refused (Redis 6 or later is needed): {e}")),
                None => debug!("broker: RESP3 on"),
            },
            Pending::Select(_) => {
                if let Some(e) = error {
                    return Err(format!("SELECT {} refused: {e}", self.db));
                }
            }
            Pending::Load(s) => {
                let sha = codec::bytes(f, buf).and_then(|b| std::str::from_utf8(b).ok());
                match (error, sha) {
                    (Some(e), _) => return Err(format!("SCRIPT LOAD refused: {e}")),
                    (None, Some(sha)) if sha.len() == 40 => match s {
                        Script::Publish => self.params.publish_sha = sha.to_owned(),
                        Script::Range => self.params.range_sha = sha.to_owned(),
                    },
                    _ => return Err("SCRIPT LOAD answered without a SHA1".into()),
                }
            }
            Pending::Publish { tag, channel, .. } => match error {
                Some(error) => self.events.push_back(Event::PublishFailed { tag, channel, error }),
                None => {
                    let id = codec::integer(f, buf).ok_or("publish answered without an id")?;
                    self.events.push_back(Event::Published { tag, channel, id });
                }
            },
            Pending::Range { tag, channel, .. } => match error {
                Some(error) => self.events.push_back(Event::QueryFailed { tag, channel, error }),
                None => {
                    let (last_id, messages) =
                        reply::range(f, buf).map_err(|e| format!("malformed range reply for {channel}: {e}"))?;
                    let more = messages.len() >= RANGE_PAGE;
                    if more {
                        let after = messages.last().map_or(0, |m| m.0);
                        // The next page bypasses `admit`: it replaces the
                        // request just answered, adding nothing in flight.
                        self.send(Pending::Range { tag, channel: channel.clone(), after, floor: 0, by_sha: true });
                    }
                    self.events.push_back(Event::Range { tag, channel, last_id, messages, more });
                }
            },
            Pending::LastId { tag, channel } => match error {
                Some(error) => self.events.push_back(Event::QueryFailed { tag, channel, error }),
                None => {
                    let id = match f {
                        RangeFrame::Null => 0,
                        _ => codec::integer(f, buf).ok_or("GET of a channel's seq is not a number")?,
                    };
                    self.events.push_back(Event::LastId { tag, channel, id });
                }
            },
            Pending::Subscribe { channel } | Pending::Unsubscribe { channel } => {
                let e = error.unwrap_or_else(|| "a reply that is not a push".into());
                return Err(format!("(UN)SUBSCRIBE {channel} refused: {e}"));
            }
            Pending::Touch { key } => {
                if let Some(e) = error {
                    warn!("broker: PEXPIRE {key} refused: {e}");
                }
            }
        }
        if self.state == State::Handshaking && self.pending.is_empty() {
            self.set_state(State::Ready);
            self.events.push_back(Event::Ready);
        }
        Ok(())
    }

    fn on_push(&mut self, items: &[RangeFrame], buf: &[u8]) -> Result<(), String> {
        let (subscribing, channel) = match reply::push(items, buf)? {
            Push::Message { channel, id, data } => {
                let data = Bytes::copy_from_slice(data);
                self.events.push_back(Event::Message { channel: channel.into(), id, data });
                return Ok(());
            }
            Push::Subscribe(channel) => (true, channel),
            Push::Unsubscribe(channel) => (false, channel),
            Push::Other => return Ok(()),
        };
        // RESP3 answers (UN)SUBSCRIBE with this push, in the reply's place.
        let answers = match self.pending.front() {
            Some(Pending::Subscribe { channel: c }) => subscribing && **c == *channel,
            Some(Pending::Unsubscribe { channel: c }) => !subscribing && **c == *channel,
            _ => false,
        };
        if !answers {
            let kind = if subscribing { "subscribe" } else { "unsubscribe" };
            return Err(format!("an unexpected {kind} push for {channel}"));
        }
        self.pending.pop_front();
        let channel: Box<str> = channel.into();
        self.events.push_back(if subscribing {
            Event::Subscribed { channel }
        } else {
            Event::Unsubscribed { channel }
        });
        Ok(())
    }
}

#[cfg(test)]
#[path = "link_tests.rs"]
mod tests;
