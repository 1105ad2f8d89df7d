//! The phases of a turn that do a connection's I/O and serve its requests
//! (steps 5, 6 and 8 of the loop, `server.rs`): read what is available,
//! answer in round-robin passes, write within a budget. Each works through
//! this turn's batch of connections; none blocks.

use log::warn;

use crate::conn::{Open, ReadOutcome};
use crate::feed;
use crate::http::Output;
use crate::policy::{DRAIN_BUDGET, FLUSH_THRESHOLD, OUT_HIGH_WATER, WRITE_BUDGET};
use crate::server::Server;
use crate::service::{Ctx, Step};
use crate::session::SubEnd;
use crate::status::gauges_from;

impl Server {
    /// Step 5: read everything available, up to one buffer per connection.
    pub(crate) fn read_phase(&mut self) {
        let capacity = self.pool.input_capacity();
        for &key in &self.batch {
            let Some(conn) = self.conns.get_mut(key) else { continue };
            if let Some(r) = conn.state.closing_mut() {
                r.drain(&mut self.scratch, DRAIN_BUDGET);
                continue;
            }
            let Some(o) = conn.state.open_mut() else { continue };
            if o.session.is_done() {
                // Nothing more will be answered, but reading on keeps the
                // client's late requests from meeting a reset. (The
                // test-only abortive mode behaves like a naive server.)
                if !self.cfg.abortive_close {
                    o.sock.discard(&mut self.scratch, DRAIN_BUDGET);
                }
                continue;
            }
            if !o.sock.readable || o.sock.eof || o.sock.failed {
                continue;
            }
            if o.session.pending_memory() >= OUT_HIGH_WATER {
                // Back-pressure: the client is not reading its responses, so
                // stop reading its requests.
                self.stats.backpressure_stalls += 1;
                continue;
            }
            let bufs = o.session.buffers(&mut self.pool);
            let before = bufs.input.len();
            if o.sock.read_input(bufs, capacity) == ReadOutcome::Full {
                self.stats.backpressure_stalls += 1;
            }
            if bufs.input.len() != before {
                o.session.input_arrived();
            }
            if std::mem::take(&mut o.sock.plain_http) {
                o.session.refuse_plain_http(self.date.text(), &mut self.pool);
            }
            if std::mem::take(&mut o.sock.tls_abort) {
                o.session.abort();
            }
        }
    }

    /// Step 6: round-robin passes over the connections with requests.
    pub(crate) fn serve_phase(&mut self) {
        let turn = self.turn_info();
        // The gauges are computed only if a `/_status` or `/_metrics`
        // request asks: from the lists, and a few values copied here (the
        // rest of the server is lent to the scheduler's closure).
        let copied = (self.pool.out, self.pool.memory(), self.idle_timeout_ms, self.service.log_dropped());
        let broker = self.relay.as_ref().map(|r| r.stats);
        let Server {
            sched,
            batch,
            conns,
            service,
            channels,
            feeds,
            stats,
            date,
            cfg,
            pool,
            now,
            relay,
            timers,
            seat,
            ..
        } = self;
        let (timers, limits, nominal, seat) = (&*timers, &*cfg, self.bufs_nominal, seat.as_ref());
        let now = *now;
        let gauges = move || gauges_from(timers, copied, nominal, limits, broker, now);
        let now_secs = date.unix_secs();
        sched.run(batch, cfg.quantum, |key| {
            let Some(conn) = conns.get_mut(key) else { return false };
            let peer = conn.peer.addr();
            let Some(o) = conn.state.open_mut() else { return false };
            if o.sock.failed {
                return false;
            }
            if o.session.subscription().is_some() && o.session.has_input() {
                // RFC 6202 §5.2 (BOSH): a request pipelined behind a held
                // long poll or a stream answers or ends it at once.
                o.session.end_sub(SubEnd::Superseded, &turn, pool);
                channels.unsubscribe(key, now);
            }
            if !o.session.may_serve(OUT_HIGH_WATER) {
                return false;
            }
            let mut ctx = Ctx { turn: &turn, now_secs, peer, stats, channels, gauges: &gauges, seat };
            match o.session.serve(service, &mut ctx) {
                Step::Answered => !o.session.is_done(),
                Step::NeedInput | Step::Done => false,
                Step::Subscribe(start) if start.channel == feed::STATUS_FEED => {
                    let admitted = feeds.add(key, now);
                    o.session.hold(*start, now);
                    if !admitted {
                        // Past MAX_FEEDS: the first event, then the end.
                        o.session.end_sub(SubEnd::Shed, &turn, pool);
                    }
                    false
                }
                Step::Subscribe(start) => {
                    channels.subscribe(start.channel, key, now);
                    o.session.hold(*start, now);
                    false
                }
                Step::Publish(publish) => {
                    // Ids come from the broker only: never issued here.
                    let floor = ctx.channels.channel(&publish.channel).map_or(0, |c| c.last_id);
                    let sent =
                        relay.as_mut().and_then(|r| r.publish(&publish.channel, publish.data.as_bytes(), floor, key));
                    o.session.await_publish(*publish, sent.unwrap_or(0));
                    if sent.is_none() {
                        o.session.complete_publish(service, Err(()), &mut ctx, pool);
                    }
                    false
                }
            }
        });
    }

    /// Step 8: write each connection's output, bounded per turn.
    pub(crate) fn flush_phase(&mut self) {
        for i in 0..self.batch.len() {
            let key = self.batch[i];
            let Some(o) = self.conns.get_mut(key).and_then(|c| c.state.open_mut()) else { continue };
            let s = &o.session;
            let queued = !s.needs_input() && !s.is_done() && s.has_input();
            if queued && s.pending() < FLUSH_THRESHOLD {
                // More requests wait for the next turn (the quantum ran out):
                // answer them together; settle re-queues the connection.
                continue;
            }
            let owed = s.is_done() && o.sock.owes_close_notify();
            if o.sock.writable && (s.output_pending() || o.sock.wants_write() || owed) {
                flush(key, o);
                if !o.sock.wants_write() {
                    o.session.record_written(self.now, &mut self.stats.response_time);
                }
            }
        }
    }

    /// Write what `key` has pending, within the per-turn budget.
    pub(crate) fn flush_open(&mut self, key: usize) {
        if let Some(o) = self.conns.get_mut(key).and_then(|c| c.state.open_mut()) {
            flush(key, o);
        }
    }
}

/// Write what `o` has pending, within the per-turn budget.
fn flush(key: usize, o: &mut Open) {
    let finishing = o.session.is_done();
    let done = match o.session.output() {
        Some(out) => o.sock.flush(out, WRITE_BUDGET, finishing),
        // TLS with nothing of HTTP to send: a handshake flight, an alert,
        // close_notify.
        None => o.sock.flush(&mut Output::default(), WRITE_BUDGET, finishing),
    };
    o.sock.wrote |= done.bytes > 0;
    if done.truncated {
        // The file shrank under a response whose length was already sent:
        // it cannot be completed. Stop, and close.
        warn!("#{key}: file truncated while being sent; closing the connection");
        o.session.abort();
    }
}
