//! Subscriptions in the loop (RFC 6202): delivering what was published
//! this turn to every subscriber of its channel, and ending subscriptions
//! (timeout, stream lifetime, load shedding, shutdown). The session writes
//! the bytes; this module walks the channel lists and keeps them right.

use log::debug;

use crate::pubsub::{self, ChannelId, Message, Mode};
use crate::relay::News;
use crate::server::Server;
use crate::service::Ctx;
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

    /// The broker's news for this turn (`--broker`): messages pushed or
    /// filled into channels here (kept in history, delivered by the
    /// deliver phase like local publishes), channels whose history is now
    /// complete, publishes answered.
    pub(crate) fn broker_phase(&mut self) {
        let Some(relay) = self.relay.as_mut() else { return };
        if !relay.has_work() {
            return;
        }
        let mut events = std::mem::take(&mut self.broker_events);
        relay.poll(self.now, self.poll.registry(), &mut events);
        let mut news = std::mem::take(&mut self.news);
        relay.news(std::mem::take(&mut events), &self.channels, &mut news);
        for item in news.drain(..) {
            match item {
                News::Published { key, tag, outcome } => self.complete_publish(key, Some(tag), outcome),
                News::Messages { channel, messages, filled } => {
                    let Some(id) = self.channels.find(&channel) else { continue };
                    for (msg_id, data) in messages {
                        // Publishes are UTF-8 (checked when published).
                        if let Ok(text) = std::str::from_utf8(&data) {
                            self.channels.store(id, msg_id, text, self.now);
                        }
                    }
                    if let Some(last) = filled {
                        self.channel_filled(id, last);
                    }
                }
            }
        }
        self.news = news;
        self.broker_events = events;
    }

    /// A channel's history has arrived: its waiting subscribers start
    /// (the ones that asked for history get it with the deliveries).
    fn channel_filled(&mut self, id: ChannelId, last: u64) {
        let Some(ch) = self.channels.get_mut(id) else { return };
        ch.filled = true;
        ch.last_id = ch.last_id.max(last);
        let newest = ch.last_id;
        let mut next = self.channels.first_subscriber(id);
        while let Some(key) = next {
            next = self.channels.next_subscriber(key);
            if let Some(o) = self.conns.get_mut(key).and_then(|c| c.state.open_mut()) {
                o.session.resolve(newest);
            }
        }
    }

    /// Subscribe and unsubscribe with the broker as channels come and go
    /// here, fill histories, and write what the turn queued for it.
    pub(crate) fn broker_flush(&mut self) {
        if let Some(relay) = self.relay.as_mut() {
            relay.flush(&mut self.channels, self.now, self.poll.registry());
        }
    }

    /// Whether `key` waits for the broker's answer to a publish.
    pub(crate) fn awaits_broker(&self, key: usize) -> bool {
        self.conns.get(key).and_then(|c| c.state.open()).is_some_and(|o| o.session.publishing().is_some())
    }

    /// Answer `key`'s waiting publish: stored under an id, or not (`503`).
    /// `tag`: the broker's answer is for this tag (`None`: the wait is over
    /// here, whatever comes later).
    pub(crate) fn complete_publish(&mut self, key: usize, tag: Option<u64>, outcome: Result<u64, ()>) {
        let turn = self.turn_info();
        let gauges = self.gauges();
        let Server { conns, service, channels, stats, date, pool, relay, batch, seat, .. } = self;
        let Some(conn) = conns.get_mut(key) else { return };
        let peer = conn.peer.addr();
        let Some(o) = conn.state.open_mut() else { return };
        let Some(waiting) = o.session.publishing().map(|p| p.tag) else { return };
        match tag {
            Some(t) if t != waiting => return,
            Some(_) => {}
            None => {
                if let Some(relay) = relay.as_mut() {
                    relay.forget(waiting);
                }
            }
        }
        let view = || gauges;
        let seat = seat.as_ref();
        let mut ctx = Ctx { turn: &turn, now_secs: date.unix_secs(), peer, stats, channels, gauges: &view, seat };
        o.session.complete_publish(service, outcome, &mut ctx, pool);
        // Written and settled in this turn (a timer's caller settles it).
        if tag.is_some() && !conn.in_batch {
            conn.in_batch = true;
            batch.push(key);
        }
    }
}
