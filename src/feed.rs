//! The status feed: `GET /_status` with `Accept: text/event-stream` (from
//! loopback) is answered with an event stream that carries the `/_status`
//! JSON once a second; the dashboard (`/_status.html`) draws from it.
//!
//! How it fits the loop: a feed is a subscription like a channel's, to a
//! pseudo-channel no channel can be (`STATUS_FEED`): the connection is in
//! `Streaming` like any SSE subscriber, so the states, the ping and
//! lifetime timer, back-pressure, a pipelined request ending it, and the
//! shutdown all work unchanged. What differs is where its events come
//! from: not a publish but the loop's own clock. The server keeps the
//! feeds' keys (at most `MAX_FEEDS`) and a deadline; the poll wakes for it
//! while there are feeds, and the feed phase (after delivery, before the
//! flush) renders the JSON once and writes it to each, then lets flush and
//! settle do the rest, as delivery does. A publish-based design (an
//! internal channel the server publishes into) would put status samples
//! into channel history, the pub/sub counters, and a broker's traffic.
//!
//! Costs: nothing per request; per turn, one comparison; per second with
//! feeds, one JSON render and O(feeds) writes.

use log::debug;

use crate::admin;
use crate::policy::{SUB_MAX_QUEUE, SUB_SEGMENT};
use crate::pubsub::{self, ChannelId};
use crate::server::{NEVER, Server};
use crate::status;

/// The pseudo-channel of status feeds: channel ids are slab keys, dense
/// from 0 and bounded by `--max-channels`, so none is ever this.
pub const STATUS_FEED: ChannelId = ChannelId::MAX;
/// Feeds at once: dashboards are few, and a bound keeps the once-a-second
/// pass and `add`'s duplicate check short. Past it a feed gets its first
/// event and the end of the stream (EventSource retries).
pub const MAX_FEEDS: usize = 64;
/// One event a second, what the dashboard's charts are drawn at.
pub const TICK_MS: u64 = 1000;

/// The connections following the feed, and when it next ticks.
#[derive(Debug, Default)]
pub struct Feeds {
    /// Slab keys. A key whose connection has gone (or was reused by one
    /// that is not a feed) is dropped at the next tick.
    keys: Vec<usize>,
    /// Loop clock of the next tick.
    due: u64,
}

impl Feeds {
    /// Follow the feed on `key`; false when `MAX_FEEDS` are taken.
    pub fn add(&mut self, key: usize, now: u64) -> bool {
        if self.keys.contains(&key) {
            return true;
        }
        if self.keys.len() >= MAX_FEEDS {
            return false;
        }
        if self.keys.is_empty() {
            self.due = now + TICK_MS;
        }
        self.keys.push(key);
        true
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many milliseconds the poll may sleep before the next tick;
    /// `NEVER` without feeds.
    #[inline]
    pub fn wait_ms(&self, now: u64) -> u64 {
        if self.keys.is_empty() { NEVER } else { self.due.saturating_sub(now) }
    }
}

impl Server {
    /// Step 7b: once a second, the status JSON to every feed. Out of line:
    /// the loop calls it only while there are feeds.
    #[inline(never)]
    pub(crate) fn feed_phase(&mut self) {
        if self.feeds.keys.is_empty() || self.now < self.feeds.due {
            return;
        }
        self.feeds.due = self.now + TICK_MS;
        let json = status::to_json(&self.stats, &self.gauges(), &self.channels);
        let mut payload = Vec::with_capacity(json.len() + 8);
        admin::event(&mut payload, &json);
        let mut i = 0;
        while i < self.feeds.keys.len() {
            let key = self.feeds.keys[i];
            let Some(conn) = self.conns.get_mut(key) else {
                self.feeds.keys.swap_remove(i);
                continue;
            };
            let Some(o) = conn.state.open_mut() else {
                self.feeds.keys.swap_remove(i);
                continue;
            };
            let chunked = match o.session.subscription() {
                Some(sub) if sub.channel == STATUS_FEED => sub.chunked,
                _ => {
                    self.feeds.keys.swap_remove(i);
                    continue;
                }
            };
            i += 1;
            if o.session.pending() > SUB_MAX_QUEUE {
                // Not reading: it misses this second rather than have the
                // samples queue up (a chart wants the latest one).
                debug!("#{key} status feed: client behind, sample skipped");
                continue;
            }
            pubsub::frame(o.session.buffers(&mut self.pool).out.bytes_up_to(SUB_SEGMENT), &payload, chunked);
            if !conn.in_batch {
                conn.in_batch = true;
                self.batch.push(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kept_once_and_bounded() {
        let mut f = Feeds::default();
        assert_eq!(f.wait_ms(0), NEVER);
        assert!(f.add(3, 500));
        assert!(f.add(3, 600), "again: kept once");
        assert_eq!((f.len(), f.wait_ms(700)), (1, 800));
        for key in 10..10 + MAX_FEEDS - 1 {
            assert!(f.add(key, 700));
        }
        assert!(!f.add(999, 700), "full");
        assert_eq!(f.wait_ms(5000), 0, "overdue: poll at once");
    }
}
