//! Named channels for long polling, streaming and Server-Sent Events (RFC
//! 6202), inside the one event loop. This module is the data: channels,
//! their history rings and subscriber lists, and the wire formats of each
//! mode. The server moves connections in and out of subscriptions.
//!
//! Costs: publish is O(subscribers) (each gets the message written into
//! its output); subscribe and unsubscribe are O(1) (a subscriber knows its
//! index in the channel's list and `swap_remove` fixes the moved one); a
//! `since` query is O(history).

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use crate::files::Fnv;
use crate::http::body::encode_chunk;
use crate::http::reply::push_decimal;

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

pub struct Message {
    pub id: u64,
    pub data: Box<str>,
}

pub struct Channel {
    pub last_id: u64,
    history: VecDeque<Rc<Message>>,
    /// Connection keys of the subscribers.
    pub subscribers: Vec<usize>,
    last_activity: u64,
}

impl Channel {
    /// Messages newer than `since`, oldest first.
    pub fn since(&self, since: u64) -> impl Iterator<Item = &Rc<Message>> {
        // ids are consecutive within the ring: skip straight to the first.
        let first = self.history.front().map_or(0, |m| m.id);
        let skip = since.saturating_sub(first.saturating_sub(1)) as usize;
        self.history.iter().skip(skip)
    }

    pub fn history_len(&self) -> usize {
        self.history.len()
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

#[derive(Default)]
pub struct PubSub {
    channels: HashMap<Box<str>, Channel, std::hash::BuildHasherDefault<Fnv>>,
    history_limit: usize,
    memory: usize,
    pub published: u64,
    pub delivered: u64,
    pub dropped_slow: u64,
}

impl PubSub {
    pub fn new(history_limit: usize) -> PubSub {
        PubSub { history_limit, ..PubSub::default() }
    }

    pub fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels.get(name)
    }

    pub fn channels(&self) -> usize {
        self.channels.len()
    }

    pub fn memory(&self) -> usize {
        self.memory
    }

    fn entry(&mut self, name: &str, now: u64) -> &mut Channel {
        // One small allocation per publish or subscribe: neither is the
        // hot path, and the entry API keeps this panic-free.
        self.channels.entry(name.into()).or_insert_with(|| Channel {
            last_id: 0,
            history: VecDeque::new(),
            subscribers: Vec::new(),
            last_activity: now,
        })
    }

    /// Store a message; returns its id. Ids increase strictly per channel.
    pub fn publish(&mut self, name: &str, data: &str, now: u64) -> u64 {
        let limit = self.history_limit;
        let ch = self.entry(name, now);
        ch.last_id += 1;
        let id = ch.last_id;
        ch.last_activity = now;
        ch.history.push_back(Rc::new(Message { id, data: data.into() }));
        let mut freed = 0;
        while ch.history.len() > limit {
            freed += ch.history.pop_front().map_or(0, |m| m.data.len());
        }
        self.memory = self.memory + data.len() - freed;
        self.published += 1;
        self.enforce_budget();
        id
    }

    /// Past the budget, trim the channel holding the most history.
    fn enforce_budget(&mut self) {
        while self.memory > MEMORY_BUDGET {
            let Some(ch) = self.channels.values_mut().max_by_key(|c| c.history.len()) else { return };
            match ch.history.pop_front() {
                Some(m) => self.memory -= m.data.len(),
                None => return,
            }
        }
    }

    /// Add a subscriber; returns its index in the channel's list.
    pub fn subscribe(&mut self, name: &str, key: usize, now: u64) -> usize {
        let ch = self.entry(name, now);
        ch.subscribers.push(key);
        ch.subscribers.len() - 1
    }

    /// Remove the subscriber at `index`; returns the key that moved into
    /// that index (its stored index must be updated), if any.
    pub fn unsubscribe(&mut self, name: &str, index: usize, now: u64) -> Option<usize> {
        let ch = self.channels.get_mut(name)?;
        if index >= ch.subscribers.len() {
            return None;
        }
        ch.subscribers.swap_remove(index);
        ch.last_activity = now;
        ch.subscribers.get(index).copied()
    }

    /// Drop channels nobody listens to and nobody has written to lately.
    pub fn collect_idle(&mut self, now: u64) {
        let mut freed = 0;
        self.channels.retain(|_, ch| {
            let keep = !ch.subscribers.is_empty() || now.saturating_sub(ch.last_activity) < CHANNEL_IDLE_MS;
            if !keep {
                freed += ch.history.iter().map(|m| m.data.len()).sum::<usize>();
            }
            keep
        });
        self.memory -= freed;
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

    #[test]
    fn ids_increase_per_channel_and_history_is_a_ring() {
        let mut ps = PubSub::new(3);
        assert_eq!(ps.publish("a", "1", 0), 1);
        assert_eq!(ps.publish("a", "2", 0), 2);
        assert_eq!(ps.publish("b", "x", 0), 1);
        for i in 3..=5 {
            ps.publish("a", &i.to_string(), 0);
        }
        let ch = ps.channel("a").unwrap();
        let ids: Vec<u64> = ch.since(0).map(|m| m.id).collect();
        assert_eq!(ids, [3, 4, 5]);
        assert_eq!(ch.since(4).map(|m| m.id).collect::<Vec<_>>(), [5]);
        assert_eq!(ch.since(5).count(), 0);
        assert_eq!(ch.since(99).count(), 0);
        assert_eq!(ps.memory(), 4);
    }

    #[test]
    fn subscribers_swap_remove() {
        let mut ps = PubSub::new(10);
        assert_eq!(ps.subscribe("c", 7, 0), 0);
        assert_eq!(ps.subscribe("c", 8, 0), 1);
        assert_eq!(ps.subscribe("c", 9, 0), 2);
        assert_eq!(ps.unsubscribe("c", 0, 0), Some(9));
        assert_eq!(ps.channel("c").unwrap().subscribers, [9, 8]);
        assert_eq!(ps.unsubscribe("c", 1, 0), None);
    }

    #[test]
    fn idle_channels_are_collected() {
        let mut ps = PubSub::new(10);
        ps.publish("old", "m", 0);
        ps.subscribe("watched", 1, 0);
        ps.collect_idle(CHANNEL_IDLE_MS + 1);
        assert!(ps.channel("old").is_none());
        assert!(ps.channel("watched").is_some());
        assert_eq!(ps.memory(), 0);
    }

    #[test]
    fn memory_budget_drops_oldest() {
        let mut ps = PubSub::new(usize::MAX);
        let big = "x".repeat(MAX_MESSAGE);
        for _ in 0..(MEMORY_BUDGET / MAX_MESSAGE + 10) {
            ps.publish("a", &big, 0);
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
