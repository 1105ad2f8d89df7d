//! Named channels for long polling, streaming and Server-Sent Events (RFC
//! 6202), inside the one event loop. This module is the data: channels,
//! their history rings and subscriber lists, and the wire formats of each
//! mode. The reactor (`delivery.rs`) moves connections in and out of
//! subscriptions; the session writes what a subscriber receives.
//!
//! Costs: publish is O(1) here, delivery O(subscribers) (each gets the
//! message written into its output); subscribe and unsubscribe are O(1):
//! subscribers sit on an intrusive list per channel (`list.rs`), so leaving
//! needs no index kept anywhere else; a `since` query is O(history).

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use slab::Slab;

use crate::files::Fnv;
use crate::http::body::encode_chunk;
use crate::http::reply::push_decimal;
use crate::list::{Ends, Links};

/// All channels' messages together stay under this many bytes; past it the
/// oldest messages of the largest channel go first.
pub const MEMORY_BUDGET: usize = 32 << 20;
/// A published message is at most this large (413 past it).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// A channel with no subscribers and no message for this long is dropped.
pub const CHANNEL_IDLE_MS: u64 = 10 * 60 * 1000;
/// Longest channel name; names are `[A-Za-z0-9._-]`.
pub const MAX_NAME: usize = 64;
/// The reconnection delay SSE clients are told (`retry:`), in ms.
pub const SSE_RETRY_MS: u64 = 2000;

/// A channel's slot: stable while the channel exists (a channel with
/// subscribers or a fresh message is never dropped).
pub type ChannelId = u32;

pub struct Message {
    pub id: u64,
    pub data: Box<str>,
}

pub struct Channel {
    pub name: Box<str>,
    pub last_id: u64,
    history: VecDeque<Rc<Message>>,
    subscribers: Ends,
    last_activity: u64,
    /// The history and `last_id` are current. Always so for channels that
    /// live here; with a broker, a channel is filled from Redis after its
    /// first local subscriber arrives, and its subscribers wait till then.
    pub filled: bool,
}

impl Channel {
    /// Messages newer than `since`, oldest first. O(log history): ids
    /// increase along the ring (consecutively here; with gaps where a
    /// broker's stream had trimmed some).
    pub fn since(&self, since: u64) -> impl Iterator<Item = &Rc<Message>> {
        let skip = self.history.partition_point(|m| m.id <= since);
        self.history.range(skip..)
    }

    /// The newest message, if any is kept.
    pub fn newest(&self) -> Option<&Rc<Message>> {
        self.history.back()
    }

    /// The message with id `id`, if still in history.
    pub fn message(&self, id: u64) -> Option<&Rc<Message>> {
        self.since(id.saturating_sub(1)).next().filter(|m| m.id == id)
    }

    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    pub fn subscribers(&self) -> usize {
        self.subscribers.len()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Hold the request until a message (RFC 6202 §2).
    LongPoll,
    /// Chunked (or EOF-delimited for HTTP/1.0), one JSON message per line
    /// (§3).
    Stream,
    /// `text/event-stream` (§4.3).
    Sse,
}

/// Every channel exists: no new one may be made until some are dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyChannels;

pub struct PubSub {
    /// Channels live in a broker (`--broker`): ids are issued there, this
    /// is a cache of the channels with local subscribers.
    brokered: bool,
    /// Channels made (`true`) and dropped (`false`) since the broker was
    /// last told, in order (brokered mode only): it subscribes to a channel
    /// while there are local subscribers.
    changes: Vec<(Box<str>, bool)>,
    by_name: HashMap<Box<str>, ChannelId, std::hash::BuildHasherDefault<Fnv>>,
    channels: Slab<Channel>,
    /// Subscriber lists, one node per connection key (a connection
    /// subscribes to at most one channel at a time).
    subscribers: Links,
    history_limit: usize,
    max_channels: usize,
    memory: usize,
    /// Messages published this turn, for the deliver phase.
    fresh: Vec<(ChannelId, u64)>,
    pub published: u64,
    pub delivered: u64,
    pub dropped_slow: u64,
    /// Channels refused for want of room (`--max-channels`).
    pub refused: u64,
}

impl PubSub {
    pub fn new(history_limit: usize, max_channels: usize) -> PubSub {
        PubSub {
            brokered: false,
            changes: Vec::new(),
            by_name: HashMap::default(),
            channels: Slab::new(),
            subscribers: Links::default(),
            history_limit,
            max_channels,
            memory: 0,
            fresh: Vec::new(),
            published: 0,
            delivered: 0,
            dropped_slow: 0,
            refused: 0,
        }
    }

    /// Channels live in a broker from now on (`--broker`).
    pub fn set_brokered(&mut self) {
        self.brokered = true;
    }

    pub fn is_brokered(&self) -> bool {
        self.brokered
    }

    /// Channels made (`true`) or dropped (`false`) since the last call, in
    /// order, appended to `into`.
    pub fn take_changes(&mut self, into: &mut Vec<(Box<str>, bool)>) {
        into.append(&mut self.changes);
    }

    /// Every channel, with its name (the broker subscribes to them again
    /// after a reconnect).
    pub fn iter(&self) -> impl Iterator<Item = (ChannelId, &Channel)> {
        self.channels.iter().map(|(id, c)| (id as ChannelId, c))
    }

    pub fn get_mut(&mut self, id: ChannelId) -> Option<&mut Channel> {
        self.channels.get_mut(id as usize)
    }

    pub fn find(&self, name: &str) -> Option<ChannelId> {
        self.by_name.get(name).copied()
    }

    pub fn get(&self, id: ChannelId) -> Option<&Channel> {
        self.channels.get(id as usize)
    }

    /// The channel named `name`, if it exists.
    pub fn channel(&self, name: &str) -> Option<&Channel> {
        self.find(name).and_then(|id| self.get(id))
    }

    pub fn channels(&self) -> usize {
        self.channels.len()
    }

    pub fn memory(&self) -> usize {
        self.memory
    }

    /// The channel named `name`, made if it does not exist and there is
    /// room for it (`--max-channels`: each channel costs a map entry and a
    /// record, and any client can name new ones).
    pub fn open(&mut self, name: &str, now: u64) -> Result<ChannelId, TooManyChannels> {
        if let Some(id) = self.find(name) {
            return Ok(id);
        }
        if self.channels.len() >= self.max_channels {
            self.refused += 1;
            return Err(TooManyChannels);
        }
        if self.brokered {
            self.changes.push((name.into(), true));
        }
        let id = self.channels.insert(Channel {
            name: name.into(),
            last_id: 0,
            history: VecDeque::new(),
            subscribers: Ends::default(),
            last_activity: now,
            filled: !self.brokered,
        }) as ChannelId;
        // One small allocation per new channel: not the hot path.
        self.by_name.insert(name.into(), id);
        Ok(id)
    }

    /// Store a message; returns its id. Ids increase by one per message in
    /// each channel. The deliver phase is told through `take_fresh`.
    pub fn publish(&mut self, id: ChannelId, data: &str, now: u64) -> u64 {
        let Some(msg_id) = self.channels.get(id as usize).map(|c| c.last_id + 1) else { return 0 };
        self.store(id, msg_id, data, now);
        self.published += 1;
        msg_id
    }

    /// A message the broker issued (`id`), delivered here in order: kept in
    /// the channel's history and handed to the deliver phase. Ids may jump
    /// (the broker's history was trimmed past a gap); never go back.
    pub fn store(&mut self, id: ChannelId, msg_id: u64, data: &str, now: u64) {
        let limit = self.history_limit;
        let Some(ch) = self.channels.get_mut(id as usize) else { return };
        if msg_id <= ch.last_id {
            return;
        }
        ch.last_id = msg_id;
        ch.last_activity = now;
        ch.history.push_back(Rc::new(Message { id: msg_id, data: data.into() }));
        let mut freed = 0;
        while ch.history.len() > limit {
            freed += ch.history.pop_front().map_or(0, |m| m.data.len());
        }
        self.memory = self.memory + data.len() - freed;
        self.fresh.push((id, msg_id));
        self.enforce_budget();
    }

    /// Past the budget, trim the channel holding the most history.
    fn enforce_budget(&mut self) {
        while self.memory > MEMORY_BUDGET {
            let Some((_, ch)) = self.channels.iter_mut().max_by_key(|(_, c)| c.history.len()) else { return };
            match ch.history.pop_front() {
                Some(m) => self.memory -= m.data.len(),
                None => return,
            }
        }
    }

    /// What was published since the last call, oldest first (swapped with
    /// `into`, which must be empty, so the two vectors are reused).
    pub fn take_fresh(&mut self, into: &mut Vec<(ChannelId, u64)>) {
        std::mem::swap(&mut self.fresh, into);
    }

    /// Add connection `key` to channel `id`'s subscribers. A key on
    /// another channel's list is moved.
    pub fn subscribe(&mut self, id: ChannelId, key: usize, now: u64) {
        self.unsubscribe(key, now);
        if let Some(ch) = self.channels.get_mut(id as usize) {
            self.subscribers.push_back(&mut ch.subscribers, id, key, now);
        }
    }

    /// Take connection `key` off its channel's list, if it is on one. A
    /// channel left with no subscribers and no message is dropped at once:
    /// subscribing to a name nobody publishes to leaves nothing behind.
    pub fn unsubscribe(&mut self, key: usize, now: u64) {
        let Some(id) = self.subscribers.list_of(key) else { return };
        let Some(ch) = self.channels.get_mut(id as usize) else { return };
        self.subscribers.unlink(&mut ch.subscribers, id, key);
        ch.last_activity = now;
        // A channel with no message and no subscriber leaves nothing behind;
        // with a broker, the channel lives there: the local copy goes with
        // its last subscriber.
        if ch.subscribers.is_empty() && (ch.last_id == 0 || self.brokered) {
            self.drop_channel(id);
        }
    }

    /// The channel `key` is subscribed to.
    pub fn subscribed_to(&self, key: usize) -> Option<ChannelId> {
        self.subscribers.list_of(key)
    }

    /// The first subscriber of channel `id` (subscription order).
    pub fn first_subscriber(&self, id: ChannelId) -> Option<usize> {
        self.channels.get(id as usize).and_then(|c| c.subscribers.front())
    }

    /// The subscriber after `key` on its channel's list.
    pub fn next_subscriber(&self, key: usize) -> Option<usize> {
        self.subscribers.next(key)
    }

    fn drop_channel(&mut self, id: ChannelId) {
        if let Some(ch) = self.channels.try_remove(id as usize) {
            self.memory -= ch.history.iter().map(|m| m.data.len()).sum::<usize>();
            self.by_name.remove(&ch.name);
            if self.brokered {
                self.changes.push((ch.name, false));
            }
        }
    }

    /// Drop channels nobody listens to and nobody has written to lately.
    pub fn collect_idle(&mut self, now: u64) {
        let idle: Vec<ChannelId> = self
            .channels
            .iter()
            .filter(|(_, ch)| ch.subscribers.is_empty() && now.saturating_sub(ch.last_activity) >= CHANNEL_IDLE_MS)
            .map(|(id, _)| id as ChannelId)
            .collect();
        for id in idle {
            self.drop_channel(id);
        }
    }
}

/// `[A-Za-z0-9._-]{1,64}`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A JSON string literal.
pub fn push_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                let _ = std::io::Write::write_fmt(out, format_args!("\\u{:04x}", c as u32));
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// `{"id":N,"data":"..."}`
pub fn push_json_message(out: &mut Vec<u8>, m: &Message) {
    out.extend_from_slice(b"{\"id\":");
    push_decimal(out, m.id);
    out.extend_from_slice(b",\"data\":");
    push_json_string(out, &m.data);
    out.push(b'}');
}

/// The long-poll body: every message in one response (RFC 6202 §2.2,
/// batching) and the id to pass next as `since`.
pub fn long_poll_body<'a>(messages: impl Iterator<Item = &'a Rc<Message>>, last_id: u64) -> Vec<u8> {
    let mut out = b"{\"last_id\":".to_vec();
    let mut last = last_id;
    let mut body = Vec::new();
    for (i, m) in messages.enumerate() {
        if i > 0 {
            body.push(b',');
        }
        push_json_message(&mut body, m);
        last = last.max(m.id);
    }
    push_decimal(&mut out, last);
    out.extend_from_slice(b",\"messages\":[");
    out.extend_from_slice(&body);
    out.extend_from_slice(b"]}\n");
    out
}

/// One SSE event: `id:` then one `data:` line per line of the message
/// (CRLF, CR and LF all split lines, as the SSE parser does), then a blank
/// line that dispatches it.
pub fn push_sse_event(out: &mut Vec<u8>, m: &Message) {
    out.extend_from_slice(b"id: ");
    push_decimal(out, m.id);
    out.push(b'\n');
    let data = m.data.replace("\r\n", "\n").replace('\r', "\n");
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// Frame `payload` for a stream: a chunk, or raw bytes when the stream is
/// delimited by closing the connection (HTTP/1.0).
pub fn frame(out: &mut Vec<u8>, payload: &[u8], chunked: bool) {
    if chunked {
        encode_chunk(out, payload);
    } else {
        out.extend_from_slice(payload);
    }
}

/// One message as the given streaming mode writes it.
pub fn stream_payload(mode: Mode, m: &Message) -> Vec<u8> {
    let mut payload = Vec::with_capacity(m.data.len() + 32);
    match mode {
        Mode::Sse => push_sse_event(&mut payload, m),
        _ => {
            push_json_message(&mut payload, m);
            payload.push(b'\n');
        }
    }
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(ps: &mut PubSub, name: &str, data: &str) -> u64 {
        let id = ps.open(name, 0).unwrap();
        ps.publish(id, data, 0)
    }

    #[test]
    fn ids_increase_per_channel_and_history_is_a_ring() {
        let mut ps = PubSub::new(3, 100);
        assert_eq!(publish(&mut ps, "a", "1"), 1);
        assert_eq!(publish(&mut ps, "a", "2"), 2);
        assert_eq!(publish(&mut ps, "b", "x"), 1);
        for i in 3..=5 {
            publish(&mut ps, "a", &i.to_string());
        }
        let ch = ps.channel("a").unwrap();
        let ids: Vec<u64> = ch.since(0).map(|m| m.id).collect();
        assert_eq!(ids, [3, 4, 5]);
        assert_eq!(ch.since(4).map(|m| m.id).collect::<Vec<_>>(), [5]);
        assert_eq!(ch.since(5).count(), 0);
        assert_eq!(ch.since(99).count(), 0);
        assert_eq!(ch.message(4).map(|m| m.id), Some(4));
        assert!(ch.message(2).is_none());
        assert_eq!(ps.memory(), 4);
        let mut fresh = Vec::new();
        ps.take_fresh(&mut fresh);
        assert_eq!(fresh.len(), 6);
    }

    #[test]
    fn subscribers_are_a_list_and_leaving_needs_no_index() {
        let mut ps = PubSub::new(10, 100);
        let c = ps.open("c", 0).unwrap();
        for key in [7, 8, 9] {
            ps.subscribe(c, key, 0);
        }
        ps.unsubscribe(7, 0);
        ps.unsubscribe(7, 0);
        let mut keys = Vec::new();
        let mut k = ps.first_subscriber(c);
        while let Some(key) = k {
            keys.push(key);
            k = ps.next_subscriber(key);
        }
        assert_eq!(keys, [8, 9]);
        assert_eq!(ps.get(c).unwrap().subscribers(), 2);
        assert_eq!(ps.subscribed_to(9), Some(c));
    }

    /// Defect 14.6: any client could create channels without limit, and a
    /// subscription to a channel nobody publishes to stayed for minutes.
    #[test]
    fn an_unused_channel_leaves_nothing_and_the_count_is_bounded() {
        let mut ps = PubSub::new(10, 2);
        let a = ps.open("a", 0).unwrap();
        ps.subscribe(a, 1, 0);
        assert_eq!(ps.channels(), 1);
        ps.unsubscribe(1, 0);
        assert_eq!(ps.channels(), 0, "no message, no subscriber: gone at once");
        publish(&mut ps, "kept", "m");
        ps.open("b", 0).unwrap();
        assert_eq!(ps.open("c", 0), Err(TooManyChannels));
        assert_eq!(ps.refused, 1);
        assert!(ps.open("kept", 0).is_ok(), "an existing channel is always found");
    }

    #[test]
    fn idle_channels_are_collected() {
        let mut ps = PubSub::new(10, 100);
        publish(&mut ps, "old", "m");
        publish(&mut ps, "watched", "m");
        let w = ps.find("watched").unwrap();
        ps.subscribe(w, 1, 0);
        ps.collect_idle(CHANNEL_IDLE_MS + 1);
        assert!(ps.channel("old").is_none());
        assert!(ps.channel("watched").is_some());
        assert_eq!(ps.memory(), 1);
    }

    #[test]
    fn memory_budget_drops_oldest() {
        let mut ps = PubSub::new(usize::MAX, 100);
        let big = "x".repeat(MAX_MESSAGE);
        for _ in 0..(MEMORY_BUDGET / MAX_MESSAGE + 10) {
            publish(&mut ps, "a", &big);
        }
        assert!(ps.memory() <= MEMORY_BUDGET);
        let ch = ps.channel("a").unwrap();
        assert_eq!(ch.since(0).next().unwrap().id, ch.last_id - ch.history_len() as u64 + 1);
    }

    #[test]
    fn sse_splits_lines_and_json_escapes() {
        let m = Message { id: 7, data: "a\r\nb\rc\nd".into() };
        let mut out = Vec::new();
        push_sse_event(&mut out, &m);
        assert_eq!(out, b"id: 7\ndata: a\ndata: b\ndata: c\ndata: d\n\n");
        let m = Message { id: 1, data: "q\"\\\n\u{1}é".into() };
        let mut out = Vec::new();
        push_json_message(&mut out, &m);
        assert_eq!(String::from_utf8(out).unwrap(), "{\"id\":1,\"data\":\"q\\\"\\\\\\n\\u0001é\"}");
        assert!(valid_name("news-1.a_b") && !valid_name("") && !valid_name("a/b") && !valid_name(&"x".repeat(65)));
    }
}
