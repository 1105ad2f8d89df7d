//! Subscriptions in the loop (RFC 6202): delivering what was published
//! this turn to every subscriber of its channel, and ending subscriptions
//! (timeout, stream lifetime, load shedding, shutdown). The session writes
//! the bytes; this module walks the channel lists and keeps them right.

use log::debug;

use crate::pubsub::{self, ChannelId, Message, Mode};
use crate::server::Server;
use crate::session::{Delivery, SubEnd, Turn};

impl Server {
    /// Step 7: give what was published this turn to every subscriber of
    /// its channel: O(subscribers), one encoding per message and mode.
    pub(crate) fn deliver_phase(&mut self) {
        self.channels.take_fresh(&mut self.fresh);
        if self.fresh.is_empty() {
            return;
        }
        let turn = self.turn_info();
        for i in 0..self.fresh.len() {
            let (channel, id) = self.fresh[i];
            let Some(message) = self.channels.get(channel).and_then(|c| c.message(id)).cloned() else { continue };
            let encoded = [pubsub::stream_payload(Mode::Stream, &message), pubsub::stream_payload(Mode::Sse, &message)];
            let mut next = self.channels.first_subscriber(channel);
            while let Some(key) = next {
                // Read the next one first: this one may leave the list.
                next = self.channels.next_subscriber(key);
                self.deliver(key, channel, &message, &encoded, &turn);
            }
        }
        self.fresh.clear();
    }

    fn deliver(&mut self, key: usize, channel: ChannelId, message: &Message, encoded: &[Vec<u8>; 2], turn: &Turn) {
        let Some(ch) = self.channels.get(channel) else { return };
        let Some(conn) = self.conns.get_mut(key) else { return };
        let Some(o) = conn.state.open_mut() else { return };
        match o.session.deliver(ch, message, encoded, turn, &mut self.pool) {
            Delivery::Skipped => return,
            Delivery::Sent => self.channels.delivered += 1,
            Delivery::Answered => {
                self.channels.delivered += 1;
                self.channels.unsubscribe(key, self.now);
            }
            Delivery::LetGo => {
                debug!("#{key} subscriber too far behind: let go");
                self.channels.dropped_slow += 1;
                self.channels.unsubscribe(key, self.now);
            }
        }
        // Flush and settle it in this turn.
        if !conn.in_batch {
            conn.in_batch = true;
            self.batch.push(key);
        }
    }

    /// End `key`'s subscription with its last words, leave the channel,
    /// and move the connection on (its answer is written next).
    pub(crate) fn end_sub(&mut self, key: usize, how: SubEnd) {
        let turn = self.turn_info();
        let Some(o) = self.conns.get_mut(key).and_then(|c| c.state.open_mut()) else { return };
        if o.session.end_sub(how, &turn, &mut self.pool) {
            self.channels.unsubscribe(key, self.now);
        }
        self.settle(key);
    }

    /// A stream's ping timer: end it past its lifetime (§3.2), else keep
    /// intermediaries from cutting it with an SSE comment line.
    pub(crate) fn stream_tick(&mut self, key: usize) {
        let lifetime = self.cfg.stream_lifetime.as_millis() as u64;
        let now = self.now;
        let Some(o) = self.conns.get_mut(key).and_then(|c| c.state.open_mut()) else { return };
        if o.session.stream_expired(lifetime, now) {
            return self.end_sub(key, SubEnd::Empty);
        }
        o.session.ping(&mut self.pool);
        self.settle(key);
        // The ping timer restarts whether the ping left at once or waits.
        if self.timers.kind_of(key) == Some(crate::conn::Kind::Streaming) {
            self.timers.enter(key, crate::conn::Kind::Streaming, now);
        }
    }
}
