//! Who gets in: accepting, the slot and descriptor budget, and making room
//! when every slot is taken (Gettys & Freier §5, §9: a newcomer is never
//! locked out while someone merely idles). Eviction order: a slow request
//! head, then the least recently used idle connection, then a held long
//! poll answered early (RFC 6202 §2.2); only when none exists is the
//! newcomer refused, with `503` and `Retry-After`.
//!
//! With several workers on one listening socket, each takes at most
//! [`ACCEPT_CAP`] connections a turn, and one that is nearly full or ahead
//! of the least loaded worker leaves them to the others for a while
//! ([`accept_quota`]).

use std::io;
use std::net::SocketAddr;

use log::{debug, trace, warn};
use mio::net::TcpStream;
use mio::{Interest, Token};

use crate::conn::{Conn, Kind, ReadOnly};
use crate::policy::SLOW_HEAD_MS;
use crate::server::{NEVER, Server};
use crate::session::{Session, SubEnd};
use crate::sys;
use crate::tls::TlsSession;

/// Descriptors kept back from connections and files: listener, poll,
/// log, reserve, signal pipe, and whatever the next versions add.
pub const SPARE_FDS: u64 = 64;

/// How the descriptors are shared: open connections, closing ones, and
/// the large files the file cache keeps open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub slots: usize,
    /// Closing connections (lingering, or awaiting the client's FIN)
    /// allowed beside the live slots: a close must not wait for a slot.
    pub closing: usize,
    /// Descriptors the file cache may keep open (`files::MAX_OPEN_FILES`,
    /// or an eighth of the limit when that is smaller).
    pub files: usize,
}

impl Budget {
    /// Fit `max_conns` slots, a quarter more for closing connections, the
    /// file cache's descriptors and the spare ones under `nofile`. When they
    /// do not fit, slots and closing shrink (4:1) and the reason is
    /// returned for the log.
    pub fn fit(max_conns: usize, nofile: u64) -> (Budget, Option<String>) {
        let files = (nofile / 8).clamp(1, crate::files::MAX_OPEN_FILES as u64);
        let reserved = SPARE_FDS + files;
        let closing = (max_conns / 4).max(64);
        let needed = (max_conns + closing) as u64 + reserved;
        let files = files as usize;
        if needed <= nofile {
            return (Budget { slots: max_conns, closing, files }, None);
        }
        let room = nofile.saturating_sub(reserved) as usize;
        let slots = (room * 4 / 5).max(1);
        let closing = room.saturating_sub(slots).max(1);
        let why = format!(
            "descriptor limit {nofile} is below what --max-conns {max_conns} needs ({needed}); using {slots} slots (+{closing} closing)"
        );
        (Budget { slots, closing, files }, Some(why))
    }
}

/// Connections one worker accepts per turn when several share the
/// listeners, and how far ahead of the least loaded worker it may get.
/// Every worker is woken by the same edge, but the one that runs first
/// could take the whole queue (a burst of a hundred arrives in well under a
/// millisecond) and then serve its catch alone while the others idle.
pub const ACCEPT_CAP: usize = 16;

/// How long a worker leaves waiting connections to the others (nearly
/// full, or ahead of them) before taking some after all. nginx's
/// `accept_disabled` counts loop iterations; a time does not depend on how
/// busy the loop is. A worker with room is woken by the same edge and
/// takes them well within it; one that does not (stopped, or starved of
/// CPU) costs newcomers this much once, not a connection.
pub const ACCEPT_DEFER_MS: u64 = 10;

/// What decides how many connections a worker accepts in a turn.
#[derive(Clone, Copy, Debug)]
pub struct Door {
    pub workers: usize,
    /// This worker's live connections, and its slots.
    pub live: usize,
    pub slots: usize,
    /// The fewest live connections among the other live workers (from the
    /// status board); `None` when unknown, or when they have not kept up.
    pub elsewhere: Option<usize>,
    /// For how long this worker has left connections to the others; `None`
    /// when it has not.
    pub deferred_ms: Option<u64>,
}

/// How many connections to accept this turn: all there are for a single
/// process. Among several workers, at most [`ACCEPT_CAP`], and none while
/// this worker is nearly full (more than 7/8 of its slots live, nginx's
/// threshold) or [`ACCEPT_CAP`] ahead of the least loaded other worker,
/// until it has deferred for [`ACCEPT_DEFER_MS`].
pub fn accept_quota(d: &Door) -> usize {
    if d.workers <= 1 {
        return usize::MAX;
    }
    let nearly_full = d.live.saturating_mul(8) > d.slots.saturating_mul(7);
    // Up to the least loaded worker's count plus the cap: the workers
    // leapfrog each other in steps of at most the cap.
    let share = d.elsewhere.map_or(ACCEPT_CAP, |fewest| (fewest + ACCEPT_CAP).saturating_sub(d.live));
    let expired = d.deferred_ms.is_some_and(|ms| ms >= ACCEPT_DEFER_MS);
    match (nearly_full || share == 0, expired) {
        (true, false) => 0,
        (true, true) => ACCEPT_CAP,
        (false, _) => share.min(ACCEPT_CAP),
    }
}

impl Server {
    /// Step 4: accept pending connections, listener by listener, as many
    /// as [`accept_quota`] allows (all of them while shutting down: the
    /// backlog is answered before the listeners close).
    pub(crate) fn accept_phase(&mut self) {
        let mut quota = if self.draining.is_some() { usize::MAX } else { self.accept_quota() };
        while quota > 0
            && let Some(i) = self.listeners.next_ready()
        {
            match self.listeners.accept(i) {
                Ok((sock, peer, tls)) => {
                    quota -= 1;
                    self.admit(sock, peer, tls);
                }
                Err(e) if sys::is_would_block(&e) => {
                    self.listeners.drained(i);
                    self.accept_alone = false;
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                Err(e) if sys::is_out_of_descriptors(&e) => {
                    self.stats.accept_errors += 1;
                    self.shed_pending(i, &e);
                }
                Err(e) => {
                    warn!("accept: {e}");
                    self.listeners.drained(i);
                }
            }
        }
    }

    /// What this turn's quota depends on.
    fn door(&self) -> Door {
        Door {
            workers: self.cfg.workers,
            live: self.live(),
            slots: self.cfg.max_conns,
            elsewhere: self.seat.as_ref().filter(|_| !self.accept_alone).and_then(|s| s.fewest_elsewhere()),
            deferred_ms: self.accept_deferred.map(|since| self.now.saturating_sub(since)),
        }
    }

    /// This turn's quota, starting or ending a deferral. When a deferral
    /// ran out and connections were still waiting, the others did not take
    /// them: until the queue is empty, this worker stops looking at them.
    fn accept_quota(&mut self) -> usize {
        let door = self.door();
        let quota = accept_quota(&door);
        self.accept_deferred = match quota {
            0 => Some(self.accept_deferred.unwrap_or(self.now)),
            _ => None,
        };
        if quota > 0 && door.deferred_ms.is_some() {
            self.accept_alone = true;
        }
        quota
    }

    /// When the listeners next need a turn: at once while connections may
    /// wait and this worker takes them (or has yet to start deferring),
    /// at the end of a deferral, or not at all (`NEVER`): milliseconds.
    pub(crate) fn accept_wake_ms(&self) -> u64 {
        if !self.listeners.any_ready() {
            return NEVER;
        }
        if accept_quota(&self.door()) > 0 {
            return 0;
        }
        // Not deferring yet (this worker filled up during the turn): one
        // more turn starts the deferral's clock.
        let Some(since) = self.accept_deferred else { return 0 };
        (since + ACCEPT_DEFER_MS).saturating_sub(self.now)
    }

    /// Take a new connection into a slot, making room if all are in use.
    fn admit(&mut self, mut sock: TcpStream, peer: SocketAddr, tls: bool) {
        self.stats.accepted += 1;
        if self.live() >= self.cfg.max_conns && !self.make_room() {
            self.stats.rejected += 1;
            return self.refuse(sock, peer, tls);
        }
        // Responses are written whole, once per turn: Nagle would only
        // delay the last segment (on Linux the listener's setting is
        // inherited). Over TLS it matters more: tickets and alerts are
        // small records.
        if !self.listeners.inherited_nodelay {
            let _ = sock.set_nodelay(true);
        }
        let session = match (tls, &self.tls) {
            (false, _) => None,
            (true, Some(config)) => match TlsSession::new(config.server_config()) {
                Ok(session) => Some(Box::new(session)),
                Err(e) => return warn!("TLS session: {e}"),
            },
            (true, None) => return warn!("a TLS listener without a certificate"),
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(&mut sock, Token(key), Interest::READABLE | Interest::WRITABLE) {
            warn!("register: {e}");
            return;
        }
        entry.insert(Conn::new(sock, peer, session));
        trace!("#{key} accepted from {peer}{}", if tls { " (TLS)" } else { "" });
        self.timers.enter(key, Kind::Reading, self.now);
        self.push_runq(key);
    }

    /// Free a slot. Every candidate closes with the handshake, so its
    /// client sees a clean EOF, and one whose next request is already on
    /// its way is passed over.
    fn make_room(&mut self) -> bool {
        if let Some(key) = self.timers.front(Kind::Reading)
            && self.timers.since(key) + SLOW_HEAD_MS <= self.now
        {
            debug!("#{key} slow head evicted to make room");
            self.evict(key);
            return true;
        }
        let mut candidates = self.timers.len(Kind::Idle);
        while candidates > 0
            && let Some(key) = self.timers.front(Kind::Idle)
        {
            candidates -= 1;
            let busy = self.conns.get(key).is_some_and(|c| c.in_runq || c.state.input_waiting());
            if busy {
                // In use after all: it goes to the back of the LRU.
                self.set_state(key, Kind::Idle, true);
                continue;
            }
            debug!("#{key} idle connection evicted to make room");
            self.evict(key);
            return true;
        }
        // RFC 6202 §2.2, graceful degradation: answer a held long poll
        // early (204, close) before refusing anyone.
        let Some(held) = self.timers.front(Kind::Held).filter(|&k| !self.awaits_broker(k)) else { return false };
        debug!("#{held} long poll answered early to make room");
        self.end_sub(held, SubEnd::Shed);
        // Its answer fits an idle socket's buffer: write it now so that
        // the slot is free now.
        self.flush_open(held);
        self.settle(held);
        true
    }

    /// Close `key` to free its slot. A client whose request was under way
    /// (a slow head, or a body such as a publish) is told why first.
    fn evict(&mut self, key: usize) {
        self.stats.evicted += 1;
        let date = self.turn_info().date;
        if let Some(o) = self.conns.get(key).and_then(|c| c.state.open())
            && let Some(notice) = o.session.eviction_notice(&date)
        {
            ReadOnly::last_words(&o.sock, &notice);
        }
        self.set_state(key, Kind::Lingering, false);
    }

    /// No slot could be freed: `503` with `Retry-After`, then the same
    /// graceful close as everyone else. (A TLS client cannot read an answer
    /// before its handshake: it just gets the close.)
    fn refuse(&mut self, mut sock: TcpStream, peer: SocketAddr, tls: bool) {
        self.make_closing_room();
        let answer = Session::refusal(&self.turn_info().date);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if self.poll.registry().register(&mut sock, Token(key), Interest::READABLE).is_err() {
            return;
        }
        entry.insert(Conn::refused(sock, peer, (!tls).then_some(answer.as_slice())));
        self.stats.lingering_closes += 1;
        self.timers.enter(key, Kind::Lingering, self.now);
        self.push_runq(key);
    }

    /// Out of descriptors: spend the reserve to answer the waiting clients
    /// `503` and close them, rather than leave them to time out in the
    /// backlog, and stop accepting until a descriptor frees up.
    fn shed_pending(&mut self, listener: usize, e: &io::Error) {
        warn!("accept: {e}; refusing pending connections until descriptors free up");
        if let Some(reserve) = self.reserve.take() {
            drop(reserve);
            let answer = Session::refusal(&self.turn_info().date);
            while let Ok((sock, _, tls)) = self.listeners.accept(listener) {
                self.stats.rejected += 1;
                let answer = if tls { &[][..] } else { answer.as_slice() };
                crate::closing::close_after(sock, answer, &mut self.scratch);
            }
            self.reserve = sys::reserve_fd();
        }
        self.listeners.pause();
        self.accept_starved = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The review found that the closing budget was computed from the
    /// requested `--max-conns` before the descriptor limit lowered it, so
    /// closing connections could overrun the descriptors.
    #[test]
    fn slots_closing_and_spares_never_exceed_the_descriptor_limit() {
        for nofile in [SPARE_FDS + 16, 256, 1024, 4096, 20_000, 65_536, 1 << 20] {
            for max_conns in [1, 100, 1000, 10_000, 100_000] {
                let (b, lowered) = Budget::fit(max_conns, nofile);
                let used = (b.slots + b.closing + b.files) as u64 + SPARE_FDS;
                assert!(used <= nofile, "{max_conns} in {nofile}: {b:?} uses {used}");
                assert!(b.slots >= 1 && b.closing >= 1);
                assert!(lowered.is_some() || b.slots == max_conns, "{max_conns} in {nofile}");
            }
        }
        assert_eq!(Budget::fit(10_000, 1 << 20).0, Budget { slots: 10_000, closing: 2500, files: 256 });
        assert_eq!(Budget::fit(100, 256).0.files, 32, "an eighth of a small limit");
    }

    fn door(workers: usize, live: usize, slots: usize, elsewhere: Option<usize>, deferred_ms: Option<u64>) -> usize {
        accept_quota(&Door { workers, live, slots, elsewhere, deferred_ms })
    }

    #[test]
    fn one_process_accepts_everything_waiting() {
        assert_eq!(door(1, 0, 100, None, None), usize::MAX);
        assert_eq!(door(1, 100, 100, Some(0), None), usize::MAX, "full: it makes room by eviction");
    }

    #[test]
    fn workers_take_a_capped_share_per_turn() {
        assert_eq!(door(2, 0, 10_000, None, None), ACCEPT_CAP);
        assert_eq!(door(2, 0, 10_000, Some(0), None), ACCEPT_CAP);
        assert_eq!(door(8, 8750, 10_000, None, None), ACCEPT_CAP, "7/8 exactly is not above it");
        assert_eq!(door(2, 20, 10_000, Some(30), None), ACCEPT_CAP, "behind the others");
        assert_eq!(door(2, 40, 10_000, Some(30), None), 6, "up to the cap ahead of the least loaded");
    }

    #[test]
    fn workers_leapfrog_through_a_burst() {
        // Two workers, a hundred connections waiting, each turn taking its
        // quota from what is left: neither ends more than a cap ahead.
        let (mut live, mut waiting) = ([0usize; 2], 100usize);
        for turn in 0..100 {
            let (me, other) = (turn % 2, 1 - turn % 2);
            let quota = door(2, live[me], 10_000, Some(live[other]), None).min(waiting);
            live[me] += quota;
            waiting -= quota;
        }
        assert_eq!(waiting, 0);
        assert!(live[0].abs_diff(live[1]) <= ACCEPT_CAP, "{live:?}");
        // One worker alone (the other not running): it stops a cap ahead...
        assert_eq!(door(2, 16, 10_000, Some(0), None), 0);
        // ...for a while, then takes its cap again.
        assert_eq!(door(2, 16, 10_000, Some(0), Some(ACCEPT_DEFER_MS - 1)), 0);
        assert_eq!(door(2, 16, 10_000, Some(0), Some(ACCEPT_DEFER_MS)), ACCEPT_CAP);
    }

    #[test]
    fn a_nearly_full_worker_leaves_newcomers_to_the_others_for_a_while() {
        let (slots, nearly) = (10_000, 8751);
        assert_eq!(door(2, nearly, slots, None, None), 0, "starts deferring");
        assert_eq!(door(2, nearly, slots, Some(9000), None), 0, "even when the others are fuller");
        assert_eq!(door(2, nearly, slots, None, Some(ACCEPT_DEFER_MS - 1)), 0);
        assert_eq!(door(2, nearly, slots, None, Some(ACCEPT_DEFER_MS)), ACCEPT_CAP, "then takes some");
        assert_eq!(door(2, slots, slots, None, Some(ACCEPT_DEFER_MS)), ACCEPT_CAP, "and evicts to make room");
        assert_eq!(door(2, 18, 20, None, None), 0, "small servers too");
        assert_eq!(door(2, 17, 20, None, None), ACCEPT_CAP, "17 of 20 is below 7/8");
    }
}
