//! Moving connections between states: `settle` asks `decide` where a
//! connection goes after its turn, `set_state` is the one function that
//! moves it (the record's variant, its state list and timer stamp, what it
//! gives back, the trace line), and `expire` is what each state's timer
//! does when it runs out.

use log::{debug, trace};

use crate::conn::Kind;
use crate::conn::decide::{Note, decide};
use crate::server::{Server, TIMED};
use crate::session::SubEnd;

impl Server {
    /// Decide where `key` goes after its turn, and move it there.
    pub(crate) fn settle(&mut self, key: usize) {
        let capacity = self.pool.input_capacity();
        let (draining, abortive) = (self.draining.is_some(), self.cfg.abortive_close);
        let Some(conn) = self.conns.get_mut(key) else { return };
        let from = conn.kind();
        let next = decide(&conn.facts(capacity, draining, abortive));
        if next.end_sub {
            return self.end_sub(key, SubEnd::Shed);
        }
        match next.note {
            Note::Nothing => {}
            Note::ClientClosedFirst => self.stats.client_closes_first += 1,
            Note::Stalled => self.stats.backpressure_stalls += 1,
        }
        if next.kind == from {
            // Staying put, the usual case for a busy connection: only the
            // buffers and the timer may change (`set_state`'s own fast path,
            // without looking the record up again).
            if let Some(o) = conn.state.open_mut() {
                o.session.release_if_empty(&mut self.pool, self.now, &mut self.stats.response_time);
            }
            if next.restamp {
                self.timers.touch(key, from, self.now);
            }
            if next.requeue && !conn.in_runq {
                conn.in_runq = true;
                self.runq_push(key);
            }
            return;
        }
        self.set_state(key, next.kind, next.restamp);
        if next.requeue {
            self.push_runq(key);
        }
    }

    /// The one transition function: move `key` to `to`, restarting its
    /// state's timer if it changes state or `restamp` says so. Leaving the
    /// open states takes the connection off its channel and gives its
    /// buffers back; an open state with nothing buffered holds none. Traced
    /// at `RUST_LOG=trace` as `#7 Reading=>Writing`.
    pub(crate) fn set_state(&mut self, key: usize, to: Kind, restamp: bool) {
        let Some(from) = self.conns.get(key).map(|c| c.kind()) else { return };
        if from == to {
            if let Some(o) = self.conns.get_mut(key).and_then(|c| c.state.open_mut()) {
                o.session.release_if_empty(&mut self.pool, self.now, &mut self.stats.response_time);
            }
            if restamp {
                self.timers.touch(key, to, self.now);
            }
            return;
        }
        {
            trace!("#{key} {from:?}=>{to:?}");
            if to.is_closing() && !from.is_closing() {
                self.make_closing_room();
            }
            if to == Kind::Lingering {
                self.stats.lingering_closes += 1;
            }
            let Some(conn) = self.conns.get_mut(key) else { return };
            let subscribed = conn.state.open().is_some_and(|o| o.session.subscription().is_some());
            if !subscribed || !to.is_open() {
                if let Some(o) = conn.state.open_mut() {
                    o.session.drop_sub();
                }
                self.channels.unsubscribe(key, self.now);
            }
            conn.become_(to, &mut self.pool);
            if to == Kind::Closed && self.accept_starved {
                // A descriptor is free again: accept what waits (if still
                // accepting: once shutting down there is nothing to accept).
                self.accept_starved = false;
                self.listeners.mark_all_ready();
            }
        }
        if let Some(o) = self.conns.get_mut(key).and_then(|c| c.state.open_mut()) {
            o.session.release_if_empty(&mut self.pool, self.now, &mut self.stats.response_time);
        }
        self.timers.enter(key, to, self.now);
    }

    /// `key`'s timer in state `kind` ran out.
    pub(crate) fn expire(&mut self, key: usize, kind: Kind) {
        trace!("#{key} {kind:?} timeout");
        match kind {
            Kind::Reading => {
                // A request head (or body) took too long: 408 if one was
                // under way, then close; a silent connection is just closed.
                self.stats.header_timeouts += 1;
                let turn = self.turn_info();
                let pool = &mut self.pool;
                let open = self.conns.get_mut(key).and_then(|c| c.state.open_mut());
                let answered = open.is_some_and(|o| o.session.timeout(&turn, pool));
                if answered {
                    self.settle(key);
                } else {
                    self.set_state(key, Kind::Lingering, false);
                }
            }
            Kind::Idle => {
                if self.conns.get(key).is_some_and(|c| c.state.input_waiting()) {
                    // Its next request is arriving as the timer runs out:
                    // serve it rather than close on it.
                    self.set_state(key, Kind::Idle, true);
                    if let Some(conn) = self.conns.get_mut(key) {
                        conn.mark_readable(false);
                    }
                    self.push_runq(key);
                } else {
                    // §11: reap on the adaptive timeout, FIN first.
                    self.stats.reaped += 1;
                    self.set_state(key, Kind::Lingering, false);
                }
            }
            Kind::Writing => {
                debug!("#{key} send timeout: the client stopped reading");
                self.stats.send_timeouts += 1;
                self.set_state(key, Kind::Closed, false);
            }
            Kind::AwaitFin => self.set_state(key, Kind::Lingering, false),
            Kind::Lingering => self.set_state(key, Kind::Closed, false),
            // A publish the broker did not answer in time: 503.
            Kind::Held if self.awaits_broker(key) => {
                self.complete_publish(key, None, Err(()));
                self.settle(key);
            }
            // RFC 6202 §5.5: nothing arrived in time, answer 204.
            Kind::Held => self.end_sub(key, SubEnd::Empty),
            Kind::Streaming => self.stream_tick(key),
            Kind::Serving | Kind::Closed => {}
        }
    }
}

impl Server {
    /// Step 9: decide where each connection goes next.
    pub(crate) fn settle_phase(&mut self) {
        for i in 0..self.batch.len() {
            let key = self.batch[i];
            if let Some(conn) = self.conns.get_mut(key) {
                conn.in_batch = false;
                self.settle(key);
            }
        }
    }

    /// Step 10: expire the heads of the state lists.
    pub(crate) fn expire_phase(&mut self) {
        for kind in TIMED {
            let timeout = self.timeout_ms(kind);
            // Each connection at most once per turn: a handler that leaves
            // one on the list (restarting its timer) cannot spin the loop.
            let mut budget = self.timers.len(kind);
            while budget > 0
                && let Some(key) = self.timers.front(kind)
            {
                let since = self.timers.since(key);
                if since.saturating_add(timeout) > self.now {
                    break;
                }
                budget -= 1;
                if !self.conns.contains(key) {
                    // Cannot happen (records leave their list when reaped);
                    // if it did, the list must not stall every timer behind.
                    self.timers.leave(key);
                    continue;
                }
                self.expire(key, kind);
                if self.timers.front(kind) == Some(key) && self.timers.since(key) == since {
                    self.timers.enter(key, kind, self.now);
                }
            }
        }
    }

    /// Step 11: free the records of connections closed during the turn.
    /// Closing late and in one place means a slab key is never reused
    /// within one batch of events.
    pub(crate) fn reap_phase(&mut self) {
        let mut queued = false;
        while let Some(key) = self.timers.front(Kind::Closed) {
            self.timers.leave(key);
            if let Some(conn) = self.conns.try_remove(key) {
                queued |= conn.in_runq;
            }
        }
        if queued {
            // One pass for the whole turn's closes, not one per close.
            let conns = &self.conns;
            self.runq.retain(|&k| conns.contains(k));
        }
    }
}
