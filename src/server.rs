//! The loop: one `mio::Poll`, one `Slab<Conn>`, no threads. One turn reads
//! as its own table of contents (Gettys & Freier §9, "modified round
//! robin"):
//!
//! 1. poll (timeout 0 while work is queued, else the earliest deadline)
//! 2. tick: fix the turn's clock (passed in, never read inside a phase)
//! 3. record events: set readiness flags, queue the connection; no I/O
//! 4. accept every pending connection (a capped share when workers share
//!    the listeners), making room by eviction when full (`admission.rs`)
//! 5. read: every queued connection reads what is available (bounded;
//!    this and steps 6 and 8 are in `phases.rs`)
//! 6. serve: round-robin passes, one request per connection per pass, at
//!    most `--quantum` per connection per turn
//! 7. deliver: what was published this turn goes to every subscriber
//!    (`delivery.rs`); once a second, the status JSON to every status
//!    feed (`feed.rs`)
//! 8. flush: one write (or sendfile) run per connection, bounded
//! 9. settle: decide each connection's next state (`conn/decide.rs`) and
//!    move it there (`transition.rs`)
//! 10. expire timers from the heads of the state lists (`transition.rs`)
//! 11. reap: free the records of connections closed during the turn
//! 12. publish (a worker): its live connections, and once a second its
//!     `/_status` figures, on the supervisor's board (`board.rs`)
//!
//! mio is edge-triggered: a connection that stops before WouldBlock (a
//! budget, the quantum) re-enters the run queue explicitly in step 9.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, UNIX_EPOCH};

use log::{info, warn};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::access_log::AccessLog;
use crate::admission::Budget;
use crate::board::Seat;
use crate::clock::Clock;
use crate::config::Config;
use crate::conn::{Conn, Kind};
use crate::cors::Cors;
use crate::feed::Feeds;
use crate::files::Files;
use crate::http::reply::DateCache;
use crate::listeners::{self, Bound, Listeners};
use crate::policy::{self, DRAIN_BUDGET, OUT_HIGH_WATER};
use crate::pool::BufPool;
use crate::privileges;
use crate::pubsub::{ChannelId, PubSub};
use crate::relay::{BROKER, News, Relay};
use crate::sched::Scheduler;
use crate::service::{Limits, Service};
use crate::session::Turn;
use crate::status::{Counters, Gauges, gauges_from};
use crate::sys;
use crate::systemd::{Notifier, notify};
use crate::timers::Timers;
use crate::tls::TlsConfig;

/// The signal pipe's token; the listeners' are just below it.
const SIGNALS: Token = Token(usize::MAX);
/// Events taken per poll. More wait for the next turn; nothing is lost.
const EVENTS: usize = 1024;
/// Longest sleep while the buffer pool holds sets a trim could give back.
const POOL_TRIM_WAKE_MS: u64 = 1000;

/// "No deadline" among the poll timeout's milliseconds.
pub(crate) const NEVER: u64 = u64::MAX;
/// The timed states, in the order their timers are expired.
pub(crate) const TIMED: [Kind; 7] =
    [Kind::Reading, Kind::Writing, Kind::Idle, Kind::Held, Kind::Streaming, Kind::AwaitFin, Kind::Lingering];

pub struct Server {
    pub(crate) poll: Poll,
    events: Events,
    /// Closed once shutting down: no more connections are accepted.
    pub(crate) listeners: Listeners,
    /// Where the server listens (kept after the listeners close).
    listening: Vec<(SocketAddr, bool)>,
    /// The certificate and key TLS listeners serve (reloaded on SIGHUP).
    pub(crate) tls: Option<TlsConfig>,
    /// The read end of the signal self-pipe, when signals are watched.
    signals: Option<OwnedFd>,
    /// sd_notify(3) to the service manager (a no-op without one).
    pub(crate) notifier: Notifier,
    /// Shutting down: the loop clock by which to be gone.
    pub(crate) draining: Option<u64>,
    pub(crate) conns: Slab<Conn>,
    /// Every connection is on the list of its state.
    pub(crate) timers: Timers,
    /// Connections with work for the next turn (deduplicated by `in_runq`).
    pub(crate) runq: Vec<usize>,
    /// This turn's snapshot of the run queue.
    pub(crate) batch: Vec<usize>,
    pub(crate) sched: Scheduler,
    pub(crate) pool: BufPool,
    /// Nominal bytes of one buffer set, for the memory occupancy.
    pub(crate) bufs_nominal: usize,
    pub(crate) service: Service,
    pub(crate) channels: PubSub,
    /// What the deliver phase works through (reused every turn).
    pub(crate) fresh: Vec<(ChannelId, u64)>,
    /// The broker connection (`--broker`), and the buffers its phase reuses.
    pub(crate) relay: Option<Relay>,
    pub(crate) broker_events: Vec<crate::broker::Event>,
    pub(crate) news: Vec<News>,
    /// Connections following the status feed (`feed.rs`).
    pub(crate) feeds: Feeds,
    pub(crate) stats: Counters,
    pub(crate) cfg: Config,
    /// The configured timeouts in milliseconds, per state.
    timeouts: [u64; Kind::ALL.len()],
    clock: Clock,
    /// Milliseconds since start, fixed for the whole turn.
    pub(crate) now: u64,
    pub(crate) date: DateCache,
    /// Loop clock at which the wall clock's second may next turn: the
    /// `Date` text only changes then, so the wall clock is read once a
    /// second instead of every turn.
    wall_due: u64,
    pub(crate) idle_timeout_ms: u64,
    /// Live connections and buffers out when the idle timeout was last
    /// computed.
    idle_inputs: (usize, usize),
    /// The second of the last once-a-second chores.
    chores_secs: u64,
    pub(crate) budget: Budget,
    pub(crate) scratch: Box<[u8]>,
    shutdown_requested: bool,
    reload_requested: bool,
    reopen_requested: bool,
    /// Accept failed for want of descriptors; retry when one closes.
    pub(crate) accept_starved: bool,
    pub(crate) reserve: Option<File>,
    /// A worker among several that is nearly full, or ahead of the others:
    /// the loop clock since which it has left waiting connections to them
    /// (`admission.rs`).
    pub(crate) accept_deferred: Option<u64>,
    /// A deferral ran out and connections were still waiting: the other
    /// workers are not keeping up, so until the queue is empty this one
    /// accepts as if alone.
    pub(crate) accept_alone: bool,
    /// This worker's slot on the supervisor's status board (`board.rs`);
    /// `None` for a single process.
    pub(crate) seat: Option<Seat>,
}

/// What a server is built from beside its configuration.
pub struct Setup {
    pub clock: Clock,
    /// Listeners already bound (inherited from systemd, or from a
    /// supervisor); `None`: bind what the configuration names.
    pub listeners: Option<Vec<Bound>>,
    /// The TLS certificate and key, loaded by the caller (so that a bad
    /// pair is one line and exit code 2); `None`: loaded here if needed.
    pub tls: Option<TlsConfig>,
}

impl Setup {
    pub fn with_clock(clock: Clock) -> Setup {
        Setup { clock, listeners: None, tls: None }
    }
}

impl Server {
    /// A server on the system clock, binding its listeners.
    pub fn new(cfg: Config) -> io::Result<Server> {
        Server::with_setup(cfg, Setup::with_clock(Clock::system()))
    }

    /// A server on `clock` (tests drive a manual one turn by turn).
    pub fn with_clock(cfg: Config, clock: Clock) -> io::Result<Server> {
        Server::with_setup(cfg, Setup::with_clock(clock))
    }

    pub fn with_setup(mut cfg: Config, setup: Setup) -> io::Result<Server> {
        let Setup { clock, listeners, tls } = setup;
        let nofile = sys::raise_nofile_limit();
        let (budget, lowered) = Budget::fit(cfg.max_conns, nofile);
        if let Some(why) = lowered {
            warn!("{why}");
        }
        cfg.max_conns = budget.slots;
        let (bound, backlog) = match listeners {
            Some(bound) => (bound, cfg.backlog),
            None => listeners::bind_all(&cfg)?,
        };
        let tls = match tls {
            Some(t) => Some(t),
            None if bound.iter().any(|b| b.tls) => {
                let (cert, key) = (cfg.tls_cert.clone().unwrap_or_default(), cfg.tls_key.clone().unwrap_or_default());
                Some(TlsConfig::load(&cert, &key).map_err(io::Error::other)?)
            }
            None => None,
        };
        let mut channels = PubSub::new(cfg.channel_history, cfg.max_channels);
        let relay = match &cfg.broker {
            Some(url) => {
                channels.set_brokered();
                // Seeds the reconnect jitter: differs between processes.
                let seed = u64::from(std::process::id()) ^ clock.wall().elapsed().map_or(0, |d| d.as_nanos() as u64);
                Some(Relay::new(url, cfg.channel_history, seed)?)
            }
            None => None,
        };
        let poll = Poll::new()?;
        let listeners = Listeners::register(bound, poll.registry())?;
        if let Some(user) = &cfg.user {
            // Bound (or inherited) and the TLS key read: from here on, as
            // `--user`, before a single request (`launch.rs`). A failed
            // drop is an error, never a server still running as root.
            privileges::drop_to(user, cfg.group.as_deref()).map_err(io::Error::other)?;
            info!("serving as {user}{}", cfg.group.as_deref().map_or(String::new(), |g| format!(":{g}")));
        }
        let listening = listeners.addrs();
        let wall = clock.wall();
        let files = Files::with_open_files(cfg.root.as_deref(), wall, budget.files)?;
        // After the drop above: the log is opened, and its writer forked,
        // as the serving user (`log_writer.rs`).
        let log = cfg.access_log.as_deref().map(|t| AccessLog::open(t, cfg.access_log_format)).transpose()?;
        let limits =
            Limits { max_head: cfg.max_header_bytes, max_body: cfg.max_body_bytes, max_requests: cfg.max_requests };
        let mut service = Service::new(files, limits, log, cfg.publish_token.clone());
        if cfg.workers > 1 && cfg.broker.is_none() {
            // Each worker would hold its own copy of every channel.
            service.refuse_channels();
        }
        service.set_cors(Cors::new(&cfg.cors_origins));
        // The input buffer holds a whole head with room to spare, so an
        // oversized head is detected (431) before the buffer is full.
        let input_capacity = (16 * 1024).max(cfg.max_header_bytes + 1024);
        info!(
            "slots {} (+{} closing), descriptor limit {}, backlog {} (asked {}), serving {}",
            budget.slots,
            budget.closing,
            nofile,
            backlog,
            cfg.backlog,
            cfg.root.as_ref().map_or_else(|| "the built-in demo site".to_string(), |r| r.display().to_string())
        );
        Ok(Server {
            poll,
            events: Events::with_capacity(EVENTS),
            listeners,
            listening,
            tls,
            signals: None,
            notifier: Notifier::default(),
            draining: None,
            // All slots up front: growing by doubling would copy the records
            // and leave the old arrays' pages resident. Untouched capacity
            // costs address space, not memory. Records closed in a turn wait
            // for its end: room for a turn's worth of events beside.
            conns: Slab::with_capacity(budget.slots + budget.closing + EVENTS),
            timers: Timers::default(),
            runq: Vec::new(),
            batch: Vec::new(),
            sched: Scheduler::default(),
            pool: BufPool::new(input_capacity, policy::POOL_MIN_FREE),
            bufs_nominal: input_capacity + OUT_HIGH_WATER as usize,
            service,
            channels,
            fresh: Vec::new(),
            relay,
            broker_events: Vec::new(),
            news: Vec::new(),
            feeds: Feeds::default(),
            stats: Counters::default(),
            timeouts: timeouts(&cfg),
            now: clock.ms(),
            date: DateCache::new(wall),
            clock,
            wall_due: 0,
            idle_timeout_ms: cfg.idle_timeout.as_millis() as u64,
            idle_inputs: (usize::MAX, usize::MAX),
            chores_secs: 0,
            budget,
            scratch: vec![0; DRAIN_BUDGET].into_boxed_slice(),
            shutdown_requested: false,
            reload_requested: false,
            reopen_requested: false,
            accept_starved: false,
            reserve: sys::reserve_fd(),
            accept_deferred: None,
            accept_alone: false,
            seat: None,
            cfg,
        })
    }

    /// The first listener's address (tests: the port asked as 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listening.first().map_or(crate::config::DEFAULT_LISTEN, |l| l.0)
    }

    /// Every listener: its address (the real port when 0 was asked) and
    /// whether it speaks TLS.
    pub fn listening(&self) -> &[(SocketAddr, bool)] {
        &self.listening
    }

    /// Watch the read end of the shutdown self-pipe (`sys::shutdown_signals`):
    /// a byte on it starts a graceful shutdown.
    pub fn watch_signals(&mut self, fd: OwnedFd) -> io::Result<()> {
        self.poll.registry().register(&mut mio::unix::SourceFd(&fd.as_raw_fd()), SIGNALS, Interest::READABLE)?;
        self.signals = Some(fd);
        Ok(())
    }

    /// Tell the service manager about the server's state changes
    /// (`READY=1`, `STOPPING=1`, `RELOADING=1`; `systemd.rs`).
    pub fn set_notifier(&mut self, notifier: Notifier) {
        self.notifier = notifier;
    }

    /// Run until a shutdown has finished: every connection gone, or
    /// `--shutdown-timeout` passed.
    pub fn run(&mut self) -> io::Result<()> {
        // The listeners are open and privileges dropped: systemd may start
        // what is ordered after this unit.
        notify(self.notifier.ready(), "READY=1");
        loop {
            let wait = self.poll_timeout();
            self.turn(wait)?;
            if self.finished() {
                return Ok(());
            }
        }
    }

    /// Whether a shutdown has finished.
    pub fn finished(&self) -> bool {
        match self.draining {
            Some(_) if self.conns.is_empty() => {
                info!("shutdown complete");
                true
            }
            Some(deadline) if self.now >= deadline => {
                warn!("shutdown timeout: closing {} connections", self.conns.len());
                true
            }
            _ => false,
        }
    }

    /// SIGHUP: load the certificate and key again. New handshakes use the
    /// new pair; connections keep theirs; a bad pair is refused and the
    /// old one kept.
    pub fn reload_tls(&mut self) {
        let Some(tls) = self.tls.as_mut() else { return };
        // sd_notify(3): RELOADING=1 now, READY=1 once done (refused or not,
        // the server goes on serving), so `systemctl reload` waits for it.
        notify(self.notifier.reloading(), "RELOADING=1");
        match tls.reload() {
            Ok(()) => info!("TLS certificate and key reloaded"),
            Err(e) => warn!("TLS reload refused, the old certificate stays: {e}"),
        }
        notify(self.notifier.ready(), "READY=1");
    }

    /// Move a manual clock to `ms` since start (tests).
    pub fn set_clock(&mut self, ms: u64) {
        self.clock.set(ms);
    }

    /// How long the next poll may sleep: not at all while work is queued,
    /// else until the earliest deadline.
    pub fn poll_timeout(&self) -> Option<Duration> {
        // Work queued: poll without waiting, nothing can be sooner.
        if !self.runq.is_empty() || self.relay.as_ref().is_some_and(|r| r.more) {
            return Some(Duration::ZERO);
        }
        // Whole milliseconds from now, `NEVER` for no deadline: this runs
        // every turn, and folding plain integers costs a fraction of
        // folding `Option<Duration>`s.
        let mut wait = self.next_deadline_ms().min(self.accept_wake_ms()).min(self.publish_wake_ms());
        if self.pool.wants_trim() {
            // Wake for the once-a-second trim, or an idle server would keep
            // a burst's buffers until the next event.
            wait = wait.min(POOL_TRIM_WAKE_MS);
        }
        if let Some(deadline) = self.draining {
            wait = wait.min(deadline.saturating_sub(self.now) + 1);
        }
        if !self.feeds.is_empty() {
            wait = wait.min(self.feeds.wait_ms(self.now));
        }
        (wait != NEVER).then(|| Duration::from_millis(wait))
    }

    /// One turn of the loop, polling for at most `wait`.
    pub fn turn(&mut self, wait: Option<Duration>) -> io::Result<()> {
        match self.poll.poll(&mut self.events, wait) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        self.tick();
        self.record_events();
        if std::mem::take(&mut self.shutdown_requested) {
            self.shutdown();
        }
        if std::mem::take(&mut self.reload_requested) {
            self.reload_tls();
        }
        if std::mem::take(&mut self.reopen_requested) {
            info!("SIGUSR1: reopening the access log");
            self.service.reopen_log();
        }
        if self.listeners.any_ready() {
            self.accept_phase();
        }
        self.take_batch();
        self.read_phase();
        self.broker_phase();
        self.serve_phase();
        self.deliver_phase();
        if !self.feeds.is_empty() {
            self.feed_phase();
        }
        self.broker_flush();
        self.flush_phase();
        self.settle_phase();
        self.expire_phase();
        self.reap_phase();
        self.service.flush_log();
        self.publish_status(false);
        Ok(())
    }

    /// Fix the clock for the turn and refresh what depends on it.
    fn tick(&mut self) {
        self.now = self.clock.ms();
        if self.now >= self.wall_due {
            let wall = self.clock.wall();
            self.date.update(wall);
            // Both clocks are whole milliseconds rounded down, so the second
            // may turn up to 1 ms before `now + 1000 - into_second`: check
            // from a millisecond early (a few more reads, never a stale
            // `Date`).
            let into_second = wall.duration_since(UNIX_EPOCH).map_or(0, |d| u64::from(d.subsec_millis()));
            self.wall_due = self.now + (999 - into_second);
        }
        // The adaptive idle timeout depends on the slots and buffers in
        // use alone: recomputed (in floating point) only when they moved.
        let inputs = (self.live(), self.pool.out);
        if inputs != self.idle_inputs {
            self.idle_inputs = inputs;
            let slots = inputs.0 as f64 / self.cfg.max_conns as f64;
            let memory = (inputs.1 * self.bufs_nominal) as f64 / self.cfg.max_buffer_memory as f64;
            self.idle_timeout_ms =
                policy::adaptive_idle_timeout(self.timeouts_idle(), self.min_idle_ms(), slots, memory);
        }
        if let Some(relay) = self.relay.as_mut() {
            relay.connect_if_due(self.now, self.poll.registry());
        }
        if self.date.unix_secs() != self.chores_secs {
            // Once a second: give back idle buffers, drop unused channels.
            self.chores_secs = self.date.unix_secs();
            self.pool.trim();
            self.channels.collect_idle(self.now);
        }
    }

    fn timeouts_idle(&self) -> u64 {
        self.timeouts[Kind::Idle as usize]
    }

    fn min_idle_ms(&self) -> u64 {
        self.cfg.min_idle_timeout.as_millis() as u64
    }

    /// Connections holding a slot: the open states.
    pub(crate) fn live(&self) -> usize {
        Kind::ALL.iter().filter(|k| k.is_open()).map(|&k| self.timers.len(k)).sum()
    }

    /// Connections closing: awaiting the client's FIN, or lingering.
    pub(crate) fn closing(&self) -> usize {
        self.timers.len(Kind::AwaitFin) + self.timers.len(Kind::Lingering)
    }

    /// The timeout of a state's timer; the idle timeout adapts to load.
    pub(crate) fn timeout_ms(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Idle => self.idle_timeout_ms,
            _ => self.timeouts[kind as usize],
        }
    }

    /// The earliest deadline among the lists' heads (each list is sorted),
    /// from the clock of the turn that just ended: a timer fires late by
    /// at most that turn's length.
    fn next_deadline_ms(&self) -> u64 {
        let (timeouts, idle) = (&self.timeouts, self.idle_timeout_ms);
        let timers = self.timers.earliest(&TIMED, |k| if k == Kind::Idle { idle } else { timeouts[k as usize] });
        let due = timers.min(self.relay.as_ref().and_then(|r| r.retry_at).unwrap_or(NEVER));
        if due == NEVER { NEVER } else { due.saturating_sub(self.now).saturating_add(1) }
    }

    /// What a session step needs to know about this turn.
    pub(crate) fn turn_info(&self) -> Turn {
        Turn {
            date: *self.date.text(),
            now: self.now,
            idle_timeout_secs: (self.idle_timeout_ms / 1000).max(1),
            max_requests: self.cfg.max_requests,
        }
    }

    /// The `/_status` gauges, from the state lists and the pool.
    pub fn gauges(&self) -> Gauges {
        let copied = (self.pool.out, self.pool.memory(), self.idle_timeout_ms, self.service.log_dropped());
        gauges_from(&self.timers, copied, self.bufs_nominal, &self.cfg, self.relay.as_ref().map(|r| r.stats), self.now)
    }

    pub fn counters(&self) -> &Counters {
        &self.stats
    }

    pub fn channels(&self) -> &PubSub {
        &self.channels
    }

    fn record_events(&mut self) {
        let mut signalled = false;
        for event in self.events.iter() {
            match event.token() {
                SIGNALS => signalled = true,
                BROKER => {
                    if let Some(relay) = self.relay.as_mut() {
                        relay.readable |= event.is_readable() || event.is_read_closed() || event.is_error();
                        relay.writable |= event.is_writable() || event.is_write_closed();
                    }
                }
                token if listeners::index_of(token).is_some() => {
                    self.listeners.mark_ready(listeners::index_of(token).unwrap_or(0));
                }
                Token(key) => {
                    let Some(conn) = self.conns.get_mut(key) else { continue };
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        conn.mark_readable(event.is_read_closed() || event.is_error());
                    }
                    if event.is_writable() || event.is_write_closed() {
                        conn.mark_writable();
                    }
                    if !conn.in_runq {
                        conn.in_runq = true;
                        self.runq.push(key);
                    }
                }
            }
        }
        if signalled {
            self.read_signals();
        }
    }

    /// Which signals arrived: read their bytes off the pipe.
    fn read_signals(&mut self) {
        let Some(fd) = &self.signals else { return };
        let mut bytes = [0u8; 64];
        // SAFETY: read(2) into a local buffer from our own pipe.
        let n = unsafe { libc::read(fd.as_raw_fd(), bytes.as_mut_ptr().cast(), bytes.len()) };
        for &b in &bytes[..n.max(0) as usize] {
            if sys::SIG_SHUTDOWN.contains(&b) {
                self.shutdown_requested = true;
            } else if b == sys::SIG_RELOAD {
                self.reload_requested = true;
            } else if b == sys::SIG_REOPEN {
                self.reopen_requested = true;
            }
        }
    }

    /// Append to the run queue; the caller has set `in_runq`.
    pub(crate) fn runq_push(&mut self, key: usize) {
        self.runq.push(key);
    }

    pub(crate) fn push_runq(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key)
            && !conn.in_runq
        {
            conn.in_runq = true;
            self.runq.push(key);
        }
    }

    fn take_batch(&mut self) {
        std::mem::swap(&mut self.batch, &mut self.runq);
        self.runq.clear();
        for &key in &self.batch {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.in_runq = false;
                conn.in_batch = true;
            }
        }
    }
}

/// The configured timeouts in milliseconds, per state. The idle timeout
/// adapts to load (`Server::timeout_ms`); `Serving` and `Closed` have none.
fn timeouts(cfg: &Config) -> [u64; Kind::ALL.len()] {
    let ms = |d: Duration| d.as_millis() as u64;
    let mut t = [u64::MAX; Kind::ALL.len()];
    t[Kind::Reading as usize] = ms(cfg.header_timeout);
    t[Kind::Writing as usize] = ms(cfg.send_timeout);
    t[Kind::Idle as usize] = ms(cfg.idle_timeout);
    t[Kind::Held as usize] = ms(cfg.longpoll_timeout);
    // One timer serves both the ping and the lifetime: a stream ends within
    // one tick of its lifetime, and a lifetime shorter than the ping
    // interval is not overshot.
    t[Kind::Streaming as usize] = ms(cfg.sse_ping.min(cfg.stream_lifetime));
    t[Kind::AwaitFin as usize] = policy::CLIENT_FIRST_GRACE_MS;
    t[Kind::Lingering as usize] = ms(cfg.linger_timeout);
    t
}
