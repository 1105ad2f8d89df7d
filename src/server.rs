//! The loop: one `mio::Poll`, one `Slab<Conn>`, no threads. One turn reads
//! as its own table of contents (Gettys & Freier §9, "modified round
//! robin"):
//!
//! 1. poll (timeout 0 while work is queued, else the earliest deadline)
//! 2. record events: set readiness flags, queue the connection; no I/O
//! 3. accept every pending connection, making room by eviction when full
//! 4. read: every queued connection reads what is available (bounded)
//! 5. serve: round-robin passes, one request per connection per pass, at
//!    most `--quantum` per connection per turn
//! 6. flush: one write (or sendfile) run per connection
//! 7. settle: decide each connection's next place (run queue, a timer
//!    list, idle, closing)
//! 8. expire timers from the heads of the FIFO lists
//!
//! mio is edge-triggered: a connection that stops before WouldBlock (a
//! budget, the quantum) re-enters the run queue explicitly in step 7.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, info, trace, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::conn::{BufPool, Conn, ReadOutcome, Side, Sub};
use crate::files::Files;
use crate::http::reply::{self, DateCache};
use crate::http::{CloseKind, Persist, Reading, Reply, Status, Version};
use crate::lru::{CLASSES, Class, Lists};
use crate::policy::{
    self, CLIENT_FIRST_GRACE_MS, DRAIN_BUDGET, FLUSH_THRESHOLD, LINGER_MAX_BYTES, OUT_HIGH_WATER, SUB_MAX_QUEUE,
    WRITE_BUDGET,
};
use crate::pubsub::{self, Message, Mode, PubSub};
use crate::sched::Scheduler;
use crate::service::{self, Ctx, Limits, Service, Step};
use crate::status::Stats;
use crate::sys;

const LISTENER: Token = Token(usize::MAX);
const SIGNALS: Token = Token(usize::MAX - 1);
/// Events taken per poll. More wait for the next turn; nothing is lost.
const EVENTS: usize = 1024;
/// Descriptors kept back from connections: listener, poll, log, reserve,
/// files being served.
const SPARE_FDS: u64 = 64;
/// Longest sleep while the buffer pool holds sets a trim could give back.
const POOL_TRIM_WAKE: Duration = Duration::from_millis(1000);

pub struct Server {
    poll: Poll,
    events: Events,
    /// `None` once shutting down: no more connections are accepted.
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    /// The read end of the signal self-pipe.
    signals: Option<std::os::fd::OwnedFd>,
    /// Shutting down: the loop clock by which to be gone.
    draining: Option<u64>,
    conns: Slab<Conn>,
    /// Connections with work for the next turn (deduplicated by `in_runq`).
    runq: Vec<usize>,
    /// This turn's snapshot of the run queue.
    batch: Vec<usize>,
    sched: Scheduler,
    lists: Lists,
    pool: BufPool,
    /// Nominal bytes of one buffer set, for the memory occupancy.
    bufs_nominal: usize,
    service: Service,
    stats: Stats,
    cfg: Config,
    started: Instant,
    /// Milliseconds since start, fixed for the whole turn.
    now: u64,
    date: DateCache,
    /// Loop clock at which the wall clock's second may next turn: the
    /// `Date` text only changes then, so the wall clock is read once a
    /// second instead of every turn.
    wall_due: u64,
    idle_timeout_ms: u64,
    /// The configured durations in milliseconds, converted once: every
    /// turn consults them.
    millis: Millis,
    /// The second of the last channel collection.
    gc_secs: u64,
    /// Closing connections (lingering or awaiting the client's FIN) allowed
    /// beside the live slots.
    max_closing: usize,
    scratch: Box<[u8]>,
    accept_ready: bool,
    /// Accepted sockets inherit `TCP_NODELAY` from the listener.
    inherited_nodelay: bool,
    shutdown_requested: bool,
    /// Accept failed for want of descriptors; retry when one closes.
    accept_starved: bool,
    reserve: Option<File>,
}

impl Server {
    pub fn new(mut cfg: Config) -> io::Result<Server> {
        let nofile = sys::raise_nofile_limit();
        let max_closing = (cfg.max_conns / 4).max(64);
        let needed = (cfg.max_conns + max_closing) as u64 + SPARE_FDS;
        if needed > nofile {
            let fit = nofile.saturating_sub(SPARE_FDS) * 4 / 5;
            warn!(
                "descriptor limit {nofile} is below what --max-conns {} needs ({needed}); using {fit} slots",
                cfg.max_conns
            );
            cfg.max_conns = (fit as usize).max(1);
        }
        let (std_listener, backlog) = sys::listen(cfg.listen, cfg.backlog)?;
        let inherited_nodelay = sys::nodelay_listener(&std_listener);
        let mut listener = TcpListener::from_std(std_listener);
        let local_addr = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let signals = sys::shutdown_signals()?;
        poll.registry().register(
            &mut mio::unix::SourceFd(&std::os::fd::AsRawFd::as_raw_fd(&signals)),
            SIGNALS,
            Interest::READABLE,
        )?;
        let now_wall = SystemTime::now();
        let files = Files::new(cfg.root.as_deref(), now_wall)?;
        let log = cfg.access_log.as_deref().map(AccessLog::open).transpose()?;
        let limits =
            Limits { max_head: cfg.max_header_bytes, max_body: cfg.max_body_bytes, max_requests: cfg.max_requests };
        // The input buffer holds a whole head with room to spare, so an
        // oversized head is detected (431) before the buffer is full.
        let input_capacity = (16 * 1024).max(cfg.max_header_bytes + 1024);
        info!(
            "slots {} (+{} closing), descriptor limit {}, backlog {} (asked {}), serving {}",
            cfg.max_conns,
            max_closing,
            nofile,
            backlog,
            cfg.backlog,
            cfg.root.as_ref().map_or_else(|| "the built-in demo site".to_string(), |r| r.display().to_string())
        );
        let mut stats = Stats::default();
        stats.gauges.max_conns = cfg.max_conns;
        stats.gauges.max_buffer_bytes = cfg.max_buffer_memory;
        let idle_timeout_ms = cfg.idle_timeout.as_millis() as u64;
        Ok(Server {
            poll,
            events: Events::with_capacity(EVENTS),
            listener: Some(listener),
            local_addr,
            signals: Some(signals),
            draining: None,
            // All slots up front: growing by doubling would copy the records
            // and leave the old arrays' pages resident. Untouched capacity
            // costs address space, not memory.
            conns: Slab::with_capacity(cfg.max_conns + max_closing),
            runq: Vec::new(),
            batch: Vec::new(),
            sched: Scheduler::default(),
            lists: Lists::default(),
            pool: BufPool::new(input_capacity, policy::POOL_MIN_FREE),
            bufs_nominal: input_capacity + OUT_HIGH_WATER as usize,
            service: Service::new(files, limits, log, PubSub::new(cfg.channel_history), cfg.publish_token.clone()),
            gc_secs: 0,
            stats,
            started: Instant::now(),
            now: 0,
            date: DateCache::new(now_wall),
            wall_due: 0,
            idle_timeout_ms,
            millis: Millis::of(&cfg),
            max_closing,
            scratch: vec![0; DRAIN_BUDGET].into_boxed_slice(),
            accept_ready: false,
            inherited_nodelay,
            shutdown_requested: false,
            accept_starved: false,
            reserve: sys::reserve_fd(),
            cfg,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Run until a shutdown signal has been handled: returns once every
    /// connection is gone or `--shutdown-timeout` has passed.
    pub fn run(&mut self) -> io::Result<()> {
        loop {
            self.turn()?;
            if let Some(deadline) = self.draining {
                if self.conns.is_empty() {
                    info!("shutdown complete");
                    return Ok(());
                }
                if self.now >= deadline {
                    warn!("shutdown timeout: closing {} connections", self.conns.len());
                    return Ok(());
                }
            }
        }
    }

    /// One turn of the loop.
    pub fn turn(&mut self) -> io::Result<()> {
        let mut timeout =
            if self.runq.is_empty() && !self.accept_ready { self.next_deadline() } else { Some(Duration::ZERO) };
        if self.pool.wants_trim() {
            // Wake for the once-a-second trim, or an idle server would keep
            // a burst's buffers until the next event.
            timeout = Some(timeout.map_or(POOL_TRIM_WAKE, |t| t.min(POOL_TRIM_WAKE)));
        }
        if let Some(deadline) = self.draining {
            let left = Duration::from_millis(deadline.saturating_sub(self.started.elapsed().as_millis() as u64) + 1);
            timeout = Some(timeout.map_or(left, |t| t.min(left)));
        }
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        self.tick();
        self.record_events();
        if std::mem::take(&mut self.shutdown_requested) {
            self.begin_shutdown();
        }
        self.accept_all();
        self.take_batch();
        self.read_phase();
        self.serve_phase();
        self.deliver_phase();
        self.flush_phase();
        self.settle_phase();
        self.expire_timers();
        if let Some(log) = &mut self.service.log {
            log.flush();
        }
        Ok(())
    }

    /// Fix the clock for the turn and refresh what depends on it.
    fn tick(&mut self) {
        self.now = self.started.elapsed().as_millis() as u64;
        if self.now >= self.wall_due {
            let wall = SystemTime::now();
            self.date.update(wall);
            // Both clocks are whole milliseconds rounded down, so the second
            // may turn up to 1 ms before `now + 1000 - into_second`: check
            // from a millisecond early (a few more reads, never a stale
            // `Date`).
            let into_second = wall.duration_since(UNIX_EPOCH).map_or(0, |d| u64::from(d.subsec_millis()));
            self.wall_due = self.now + (999 - into_second);
        }
        let slots = self.live() as f64 / self.cfg.max_conns as f64;
        let memory = (self.pool.out * self.bufs_nominal) as f64 / self.cfg.max_buffer_memory as f64;
        self.idle_timeout_ms = policy::adaptive_idle_timeout(self.millis.idle, self.millis.min_idle, slots, memory);
        let g = &mut self.stats.gauges;
        g.active = self.conns.len();
        g.reading = self.lists.len(Class::Header);
        g.writing = self.lists.len(Class::Send);
        g.idle = self.lists.len(Class::Idle);
        g.lingering = self.lists.len(Class::Linger) + self.lists.len(Class::CloseWait);
        g.idle_timeout_ms = self.idle_timeout_ms;
        g.buffer_bytes = self.pool.out * self.bufs_nominal + self.pool.memory();
        g.buffers_held = self.pool.out;
        g.held = self.lists.len(Class::Hold);
        g.streaming = self.lists.len(Class::Stream);
        let ps = &self.service.pubsub;
        g.channels = ps.channels();
        self.stats.counters.published = ps.published;
        self.stats.counters.delivered = ps.delivered;
        self.stats.counters.slow_subscribers_dropped = ps.dropped_slow;
        if self.date.unix_secs() != self.gc_secs {
            // Once a second: drop channels nobody uses any more.
            self.gc_secs = self.date.unix_secs();
            self.pool.trim();
            self.service.pubsub.collect_idle(self.now);
        }
    }

    /// Connections holding a slot: all but the closing ones.
    fn live(&self) -> usize {
        self.conns.len() - self.closing()
    }

    fn closing(&self) -> usize {
        self.lists.len(Class::Linger) + self.lists.len(Class::CloseWait)
    }

    fn timeout_ms(&self, class: Class) -> u64 {
        match class {
            Class::Idle => self.idle_timeout_ms,
            _ => self.millis.class[class as usize],
        }
    }

    /// The earliest deadline among the lists' heads (each list is sorted),
    /// from the clock of the turn that just ended: a timer fires late by
    /// at most that turn's length, and the clock is not read again.
    fn next_deadline(&self) -> Option<Duration> {
        let now = self.now;
        CLASSES
            .iter()
            .filter_map(|&class| {
                let key = self.lists.front(class)?;
                Some(self.conns.get(key)?.link.since + self.timeout_ms(class))
            })
            .min()
            .map(|due| Duration::from_millis(due.saturating_sub(now) + 1))
    }

    fn record_events(&mut self) {
        for event in self.events.iter() {
            if event.token() == LISTENER {
                self.accept_ready = true;
                continue;
            }
            if event.token() == SIGNALS {
                self.shutdown_requested = true;
                continue;
            }
            let key = event.token().0;
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
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

    fn push_runq(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key)
            && !conn.in_runq
        {
            conn.in_runq = true;
            self.runq.push(key);
        }
    }

    /// SIGTERM or SIGINT: stop accepting, answer held long polls, end
    /// streams, close idle connections with the handshake, and let
    /// in-flight exchanges finish (their responses say `Connection: close`).
    fn begin_shutdown(&mut self) {
        if let Some(fd) = &self.signals {
            let mut drain = [0u8; 64];
            // SAFETY: read(2) into a local buffer from our own pipe.
            unsafe { libc::read(std::os::fd::AsRawFd::as_raw_fd(fd), drain.as_mut_ptr().cast(), drain.len()) };
        }
        if self.draining.is_some() {
            return;
        }
        info!("shutting down: {} connections to finish", self.conns.len());
        self.draining = Some(self.now + self.cfg.shutdown_timeout.as_millis() as u64);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.accept_ready = false;
        self.service.draining = true;
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let Some(conn) = self.conns.get(key) else { continue };
            let class = conn.link.class();
            match &conn.side {
                Side::Open(o) if o.sub.is_some() => self.end_sub(key, SubEnd::Shed),
                Side::Open(o) if class == Some(Class::Idle) || (class == Some(Class::Header) && o.bufs.is_none()) => {
                    self.begin_linger(key)
                }
                _ => {}
            }
        }
    }

    fn accept_all(&mut self) {
        while self.accept_ready {
            let Some(listener) = &self.listener else { return };
            match listener.accept() {
                Ok((sock, peer)) => self.admit(sock, peer),
                Err(e) if sys::is_would_block(&e) => self.accept_ready = false,
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                Err(e) if sys::is_out_of_descriptors(&e) => {
                    self.stats.counters.accept_errors += 1;
                    self.shed_pending(&e);
                }
                Err(e) => {
                    warn!("accept: {e}");
                    self.accept_ready = false;
                }
            }
        }
    }

    /// Out of descriptors: spend the reserve to answer the waiting clients
    /// 503 and close them, rather than leave them to time out in the
    /// backlog, and stop accepting until a descriptor frees up.
    fn shed_pending(&mut self, e: &io::Error) {
        warn!("accept: {e}; refusing pending connections until descriptors free up");
        if let Some(reserve) = self.reserve.take() {
            drop(reserve);
            let mut answer = Vec::new();
            reply::simple(
                &mut answer,
                Status::SERVICE_UNAVAILABLE,
                self.date.text(),
                Persist::Close,
                b"Retry-After: 1\r\n",
                true,
            );
            while let Some(Ok((sock, _))) = self.listener.as_ref().map(|l| l.accept()) {
                self.stats.counters.rejected += 1;
                let _ = sys::send(std::os::fd::AsRawFd::as_raw_fd(&sock), &answer, false);
            }
            self.reserve = sys::reserve_fd();
        }
        self.accept_ready = false;
        self.accept_starved = true;
    }

    /// Take a new connection into a slot, making room if all are in use.
    fn admit(&mut self, mut sock: TcpStream, peer: SocketAddr) {
        self.stats.counters.accepted += 1;
        if self.live() >= self.cfg.max_conns && !self.make_room() {
            self.stats.counters.rejected += 1;
            return self.refuse(sock, peer);
        }
        // Responses are written whole, once per turn: Nagle would only
        // delay the last segment (on Linux the listener's setting is
        // inherited).
        if !self.inherited_nodelay {
            let _ = sock.set_nodelay(true);
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(&mut sock, Token(key), Interest::READABLE | Interest::WRITABLE) {
            warn!("register: {e}");
            return;
        }
        entry.insert(Conn::new(sock, peer));
        trace!("#{key} accepted from {peer}");
        self.lists.enter(&mut self.conns, key, Class::Header, self.now);
        self.push_runq(key);
    }

    /// Free a slot (Gettys & Freier §5, §9): a slow request head first,
    /// then the least recently used idle connection. Both close with the
    /// handshake, so the slot's client sees a clean EOF.
    fn make_room(&mut self) -> bool {
        let victim = self
            .lists
            .front(Class::Header)
            .filter(|&k| self.conns.get(k).is_some_and(|c| c.link.since + policy::SLOW_HEAD_MS <= self.now))
            .or_else(|| self.lists.front(Class::Idle));
        let Some(key) = victim else {
            // RFC 6202 §2.2, graceful degradation: answer a held long poll
            // early (204, close) before refusing anyone.
            let Some(held) = self.lists.front(Class::Hold) else {
                return false;
            };
            debug!("#{held} long poll answered early to make room");
            self.end_sub(held, SubEnd::Shed);
            return true;
        };
        debug!("#{key} evicted to make room");
        self.stats.counters.evicted += 1;
        self.begin_linger(key);
        true
    }

    /// No slot could be freed: `503` with `Retry-After`, then the same
    /// graceful close as everyone else.
    fn refuse(&mut self, mut sock: TcpStream, peer: SocketAddr) {
        self.make_closing_room();
        let mut answer = Vec::new();
        let retry = format!("Retry-After: {}\r\n", policy::RETRY_AFTER_SECS);
        reply::simple(
            &mut answer,
            Status::SERVICE_UNAVAILABLE,
            self.date.text(),
            Persist::Close,
            retry.as_bytes(),
            true,
        );
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if self.poll.registry().register(&mut sock, Token(key), Interest::READABLE).is_err() {
            return;
        }
        entry.insert(Conn::refused(sock, peer, &answer));
        self.stats.counters.lingering_closes += 1;
        self.lists.enter(&mut self.conns, key, Class::Linger, self.now);
        self.push_runq(key);
    }

    /// Closing connections are bounded too: past the bound, the one that
    /// has drained longest is closed outright.
    fn make_closing_room(&mut self) {
        if self.closing() >= self.max_closing
            && let Some(oldest) = self.lists.front(Class::Linger).or_else(|| self.lists.front(Class::CloseWait))
        {
            self.close_now(oldest);
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

    /// Step 4: read everything available, up to one buffer per connection.
    fn read_phase(&mut self) {
        for &key in &self.batch {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            match &mut conn.side {
                Side::Open(o) if o.proto.is_done() => {
                    // Nothing more will be answered, but reading on keeps the
                    // client's late requests from meeting a reset. (The
                    // test-only abortive mode behaves like a naive server.)
                    if !self.cfg.abortive_close {
                        o.discard_input(&mut self.scratch, DRAIN_BUDGET);
                    }
                }
                Side::Open(o) => {
                    if !o.readable || o.peer_eof || o.failed {
                        continue;
                    }
                    if o.bufs.as_ref().is_some_and(|b| b.out.pending() >= OUT_HIGH_WATER) {
                        // Back-pressure: the client is not reading its
                        // responses, so stop reading its requests.
                        self.stats.counters.backpressure_stalls += 1;
                        continue;
                    }
                    if o.bufs.is_none() {
                        o.bufs = Some(self.pool.take());
                    }
                    if o.read_input(self.pool.input_capacity()) == ReadOutcome::Full {
                        self.stats.counters.backpressure_stalls += 1;
                    }
                }
                Side::AwaitFin(r) | Side::Lingering(r) => {
                    r.drain(&mut self.scratch, DRAIN_BUDGET);
                }
                Side::Gone => {}
            }
        }
    }

    /// Step 5: round-robin passes over the connections with requests.
    fn serve_phase(&mut self) {
        let Server { sched, batch, conns, service, stats, date, cfg, idle_timeout_ms, pool, now, .. } = self;
        let idle_timeout_secs = (*idle_timeout_ms / 1000).max(1);
        let now = *now;
        let ending = Ending { date: *date.text(), idle_timeout_secs, max_requests: cfg.max_requests, now };
        sched.run(batch, cfg.quantum, |key| {
            let behind_sub = matches!(conns.get(key), Some(Conn { side: Side::Open(o), .. })
                if o.sub.is_some() && o.bufs.as_ref().is_some_and(|b| b.has_input()));
            if behind_sub {
                // RFC 6202 §5.2 (BOSH): a request pipelined behind a held
                // long poll or a stream answers or ends it at once.
                end_subscription(conns, &mut service.pubsub, pool, key, SubEnd::Superseded, &ending);
            }
            let Some(conn) = conns.get_mut(key) else {
                return false;
            };
            let peer = conn.peer;
            let Side::Open(o) = &mut conn.side else {
                return false;
            };
            if o.failed || o.proto.is_done() {
                return false;
            }
            let Some(bufs) = o.bufs.as_mut() else {
                return false;
            };
            if bufs.out.pending() >= OUT_HIGH_WATER {
                return false;
            }
            if o.sub.is_some() {
                return false;
            }
            let mut ctx =
                Ctx { now_secs: date.unix_secs(), now_ms: now, date: date.text(), idle_timeout_secs, peer, stats };
            let (n, step) = service.serve_one(&mut o.proto, &bufs.input[bufs.start..], &mut bufs.out, &mut ctx);
            bufs.start += n;
            match step {
                Step::Answered => {
                    o.progress = true;
                    !o.proto.is_done()
                }
                Step::NeedInput => {
                    o.need_input = true;
                    false
                }
                Step::Done => false,
                Step::Subscribe(start) => {
                    o.progress = true;
                    let index = service.pubsub.subscribe(&start.channel, key, now);
                    o.sub = Some(Box::new(Sub::new(start, index, now)));
                    false
                }
            }
        });
    }

    /// Step 6: write each connection's output, bounded per turn.
    fn flush_phase(&mut self) {
        for i in 0..self.batch.len() {
            let key = self.batch[i];
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let Side::Open(o) = &mut conn.side else {
                continue;
            };
            let queued = !o.need_input && !o.proto.is_done() && o.bufs.as_ref().is_some_and(|b| b.has_input());
            if queued && o.bufs.as_ref().is_some_and(|b| b.out.pending() < FLUSH_THRESHOLD) {
                // More requests wait for the next turn (the quantum ran out):
                // answer them together; settle re-queues the connection.
                continue;
            }
            if o.writable && o.output_pending() && o.flush(WRITE_BUDGET) > 0 && conn.link.class() == Some(Class::Send) {
                // Progress restarts the send timeout.
                self.lists.enter(&mut self.conns, key, Class::Send, self.now);
            }
        }
    }

    /// Step 7: decide where each connection goes next.
    fn settle_phase(&mut self) {
        for i in 0..self.batch.len() {
            let key = self.batch[i];
            self.settle(key);
        }
    }

    fn settle(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.in_batch = false;
        let class = conn.link.class();
        let o = match &mut conn.side {
            Side::Open(o) => o,
            Side::AwaitFin(r) => {
                if r.eof {
                    // The client closed first: TIME_WAIT is on its side.
                    self.stats.counters.client_closes_first += 1;
                    self.close_now(key);
                } else if r.failed {
                    self.close_now(key);
                } else if r.readable {
                    self.push_runq(key);
                }
                return;
            }
            Side::Lingering(r) => {
                if r.eof || r.failed || r.drained > LINGER_MAX_BYTES {
                    self.close_now(key);
                } else if r.readable {
                    self.push_runq(key);
                }
                return;
            }
            Side::Gone => return self.close_now(key),
        };
        if o.failed {
            return self.close_now(key);
        }
        let progress = std::mem::take(&mut o.progress);
        let pending = o.output_pending();
        if let Some(sub) = &o.sub {
            // Held or streaming: neither idle nor evictable as idle.
            let class = if sub.mode == Mode::LongPoll { Class::Hold } else { Class::Stream };
            if o.peer_eof {
                // The subscriber went away.
                return self.close_now(key);
            }
            if pending {
                let writable = o.writable;
                return self.await_output(key, writable);
            }
            let readable = o.readable;
            if o.bufs.as_ref().is_some_and(|b| b.has_input()) {
                // A request arrived behind the subscription (even in the
                // same read): the serve phase ends the subscription first.
                return self.push_runq(key);
            }
            self.release_bufs(key);
            if progress || self.conns.get(key).and_then(|c| c.link.class()) != Some(class) {
                self.lists.enter(&mut self.conns, key, class, self.now);
            }
            if readable {
                self.push_runq(key);
            }
            return;
        }
        if let Some(kind) = o.proto.close_kind() {
            if pending {
                let writable = o.writable;
                return self.await_output(key, writable);
            }
            // Everything owed is written: close, by the right handshake.
            if self.cfg.abortive_close {
                return self.close_now(key);
            }
            if o.peer_eof {
                self.stats.counters.client_closes_first += 1;
                return self.close_now(key);
            }
            return match kind {
                CloseKind::ClientFirst => self.begin_await_fin(key),
                CloseKind::ServerFirst => self.begin_linger(key),
            };
        }
        let (has_input, out_room, in_room) = match &o.bufs {
            Some(b) => (b.has_input(), b.out.pending() < OUT_HIGH_WATER, b.has_room(self.pool.input_capacity())),
            None => (false, true, true),
        };
        let (peer_eof, need_input, readable, writable) = (o.peer_eof, o.need_input, o.readable, o.writable);
        let served = o.proto.served;
        let in_body = matches!(o.proto.reading, Reading::Discard { .. } | Reading::Collect { .. });
        if peer_eof && !pending && (!has_input || need_input) {
            // The client finished sending and all it asked is answered.
            self.stats.counters.client_closes_first += 1;
            return self.close_now(key);
        }
        let more_read = readable && !peer_eof && in_room && out_room;
        if readable && !peer_eof && !more_read {
            // Back-pressure (§9): input is waiting but this connection's
            // queues are full; its TCP window closes until they drain.
            self.stats.counters.backpressure_stalls += 1;
        }
        let more_serve = has_input && !need_input && out_room;
        let more_write = pending && writable;
        if more_read || more_serve || more_write {
            self.push_runq(key);
        }
        if pending && !writable {
            self.lists.stay(&mut self.conns, key, Class::Send, self.now);
        } else if has_input || in_body {
            // A head or body in progress: the header timeout runs from when
            // it started, so a slowloris gains nothing by trickling.
            if progress || class != Some(Class::Header) {
                self.lists.enter(&mut self.conns, key, Class::Header, self.now);
            }
        } else if !pending && !more_read {
            if self.draining.is_some() {
                return self.begin_linger(key);
            }
            // Idle: give the buffers back; only the record stays.
            self.release_bufs(key);
            if served == 0 {
                // Nothing asked yet: the header timeout runs from accept, so
                // a client that connects and stays silent is not treated as
                // a keep-alive client.
                self.lists.stay(&mut self.conns, key, Class::Header, self.now);
            } else if class != Some(Class::Idle) {
                self.lists.enter(&mut self.conns, key, Class::Idle, self.now);
            }
        } else if class.is_some() && progress {
            self.lists.leave(&mut self.conns, key);
        }
    }

    /// Output is pending: write more next turn if the socket takes it, else
    /// wait for it under the send timeout.
    fn await_output(&mut self, key: usize, writable: bool) {
        if writable {
            self.push_runq(key);
        } else {
            self.lists.stay(&mut self.conns, key, Class::Send, self.now);
        }
    }

    /// Step 8: expire the heads of the timer lists.
    fn expire_timers(&mut self) {
        for class in CLASSES {
            let timeout = self.timeout_ms(class);
            while let Some(key) = self.lists.front(class) {
                let Some(conn) = self.conns.get(key) else {
                    // Cannot happen (records leave their list when removed);
                    // unlinking would need the record, so stop here.
                    break;
                };
                if conn.link.since + timeout > self.now {
                    break;
                }
                self.expire(key, class);
            }
        }
    }

    fn expire(&mut self, key: usize, class: Class) {
        trace!("#{key} {class:?} timeout");
        match class {
            Class::Header => self.header_timeout(key),
            Class::Idle => {
                // §11: reap on the adaptive timeout, FIN first.
                self.stats.counters.reaped += 1;
                self.begin_linger(key);
            }
            Class::Send => {
                self.stats.counters.send_timeouts += 1;
                self.close_now(key);
            }
            Class::CloseWait => self.begin_linger(key),
            Class::Linger => self.close_now(key),
            Class::Hold => {
                // RFC 6202 §5.5: nothing arrived in time, answer 204.
                self.end_sub(key, SubEnd::Empty);
            }
            Class::Stream => self.stream_tick(key),
        }
    }

    /// A stream's ping timer: end it past its lifetime (§3.2), else keep
    /// intermediaries from cutting it with an SSE comment line.
    fn stream_tick(&mut self, key: usize) {
        let lifetime = self.cfg.stream_lifetime.as_millis() as u64;
        let Some(Conn { side: Side::Open(o), .. }) = self.conns.get_mut(key) else {
            return self.close_now(key);
        };
        let Some(sub) = o.sub.as_ref() else {
            return self.lists.leave(&mut self.conns, key);
        };
        if sub.started + lifetime <= self.now {
            return self.end_sub(key, SubEnd::Empty);
        }
        if sub.mode == Mode::Sse {
            let chunked = sub.chunked;
            let bufs = o.bufs.get_or_insert_with(|| self.pool.take());
            pubsub::frame(bufs.out.bytes(), b": ping\n\n", chunked);
        }
        self.lists.enter(&mut self.conns, key, Class::Stream, self.now);
        self.push_runq(key);
    }

    /// End `key`'s subscription and schedule the connection for writing.
    fn end_sub(&mut self, key: usize, how: SubEnd) {
        let ending = self.ending();
        end_subscription(&mut self.conns, &mut self.service.pubsub, &mut self.pool, key, how, &ending);
        self.lists.leave(&mut self.conns, key);
        self.push_runq(key);
    }

    fn ending(&self) -> Ending {
        Ending {
            date: *self.date.text(),
            idle_timeout_secs: (self.idle_timeout_ms / 1000).max(1),
            max_requests: self.cfg.max_requests,
            now: self.now,
        }
    }

    /// Deliver what was published this turn to every subscriber of its
    /// channel: O(subscribers), one encoding per message and mode.
    fn deliver_phase(&mut self) {
        if self.service.fresh.is_empty() {
            return;
        }
        let fresh = std::mem::take(&mut self.service.fresh);
        let ending = self.ending();
        for (name, id) in fresh {
            let Some(channel) = self.service.pubsub.channel(&name) else { continue };
            let Some(message) = channel.since(id - 1).next().filter(|m| m.id == id).cloned() else { continue };
            let keys = channel.subscribers.clone();
            let encoded = [pubsub::stream_payload(Mode::Stream, &message), pubsub::stream_payload(Mode::Sse, &message)];
            for key in keys {
                self.deliver(key, &name, &message, &encoded, &ending);
            }
        }
    }

    fn deliver(&mut self, key: usize, name: &str, message: &Message, encoded: &[Vec<u8>; 2], ending: &Ending) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let Side::Open(o) = &mut conn.side else { return };
        let Some(sub) = o.sub.as_mut() else { return };
        if *sub.channel != *name || sub.last_id >= message.id {
            return;
        }
        let ps = &mut self.service.pubsub;
        let bufs = o.bufs.get_or_insert_with(|| self.pool.take());
        match sub.mode {
            Mode::LongPoll => {
                // Everything newer than what it has, batched (§2.2).
                let Some(channel) = ps.channel(name) else { return };
                let body = pubsub::long_poll_body(channel.since(sub.last_id), sub.last_id);
                let persist = ending.persist(sub, o.proto.served);
                let mut reply = Reply::new(&mut bufs.out, &ending.date, persist, false);
                service::long_poll_reply(&mut reply, &body);
                ps.delivered += 1;
                if !sub.keep_alive {
                    let version = if sub.http10 { Version::Http10 } else { Version::Http11 };
                    o.proto.finish(CloseKind::asked_by_client(version));
                }
                let (channel, index) = (sub.channel.clone(), sub.index);
                o.sub = None;
                unsubscribe(&mut self.conns, ps, &channel, index, ending.now);
                self.lists.leave(&mut self.conns, key);
            }
            Mode::Stream | Mode::Sse => {
                if bufs.out.pending() > SUB_MAX_QUEUE {
                    // Too slow to keep up: close gracefully; it resumes from
                    // history by Last-Event-ID (what was queued is dropped,
                    // and a partial event is never dispatched).
                    ps.dropped_slow += 1;
                    bufs.out.clear();
                    o.proto.finish(CloseKind::ServerFirst);
                    let (channel, index) = (sub.channel.clone(), sub.index);
                    o.sub = None;
                    unsubscribe(&mut self.conns, ps, &channel, index, ending.now);
                    self.lists.leave(&mut self.conns, key);
                } else {
                    let chunked = sub.chunked;
                    if sub.last_id + 1 == message.id {
                        let payload = &encoded[usize::from(sub.mode == Mode::Sse)];
                        pubsub::frame(bufs.out.bytes(), payload, chunked);
                    } else if let Some(channel) = ps.channel(name) {
                        // A gap (resumed subscriber): fill it from history.
                        let mut payload = Vec::new();
                        for m in channel.since(sub.last_id) {
                            payload.extend_from_slice(&pubsub::stream_payload(sub.mode, m));
                        }
                        pubsub::frame(bufs.out.bytes(), &payload, chunked);
                    }
                    sub.last_id = message.id;
                    ps.delivered += 1;
                }
            }
        }
        if let Some(conn) = self.conns.get_mut(key)
            && !conn.in_batch
        {
            conn.in_batch = true;
            self.batch.push(key);
        }
    }

    /// Drop `key`'s subscription without writing anything (the connection
    /// is going away).
    fn drop_sub(&mut self, key: usize) {
        let ending = self.ending();
        end_subscription(&mut self.conns, &mut self.service.pubsub, &mut self.pool, key, SubEnd::Drop, &ending);
    }

    /// A request head (or body) took too long: 408 if a head was under
    /// way, then close; a connection that sent nothing is just closed.
    fn header_timeout(&mut self, key: usize) {
        self.stats.counters.header_timeouts += 1;
        let date = *self.date.text();
        if let Some(Conn { side: Side::Open(o), .. }) = self.conns.get_mut(key) {
            let started_head = o.proto.reading == Reading::Head && o.bufs.as_ref().is_some_and(|b| b.has_input());
            if started_head {
                if let Some(bufs) = o.bufs.as_mut() {
                    reply::simple(bufs.out.bytes(), Status::REQUEST_TIMEOUT, &date, Persist::Close, b"", true);
                    bufs.start = bufs.input.len();
                }
                o.proto.finish(CloseKind::ServerFirst);
                self.lists.leave(&mut self.conns, key);
                self.push_runq(key);
                return;
            }
        }
        self.begin_linger(key);
    }

    /// Give back a connection's buffers (before it stops being `Open`).
    fn release_bufs(&mut self, key: usize) {
        if let Some(Conn { side: Side::Open(o), .. }) = self.conns.get_mut(key)
            && let Some(bufs) = o.bufs.take()
        {
            self.pool.give(bufs);
        }
    }

    /// The client asked to close and its last response is out: wait for
    /// its FIN before shutting down ourselves.
    fn begin_await_fin(&mut self, key: usize) {
        self.drop_sub(key);
        self.release_bufs(key);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.await_fin();
        trace!("#{key} Open=>AwaitFin");
        self.lists.enter(&mut self.conns, key, Class::CloseWait, self.now);
        self.push_if_closing_work(key);
    }

    /// The one graceful closing path (seed 000; Gettys & Freier §8):
    /// everything owed is written; shut the write half, drain, then close.
    fn begin_linger(&mut self, key: usize) {
        if self.cfg.abortive_close {
            return self.close_now(key);
        }
        if matches!(self.conns.get(key).map(|c| &c.side), Some(Side::Lingering(_)) | None) {
            return;
        }
        self.make_closing_room();
        self.drop_sub(key);
        self.release_bufs(key);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.linger();
        trace!("#{key} =>Lingering");
        self.stats.counters.lingering_closes += 1;
        self.lists.enter(&mut self.conns, key, Class::Linger, self.now);
        self.push_if_closing_work(key);
    }

    /// A closing socket needs a turn only if it may hold bytes or a FIN, or
    /// it is already done with (EOF read, shutdown failed); a drained one
    /// waits for its next edge instead of costing a read that finds nothing.
    fn push_if_closing_work(&mut self, key: usize) {
        if let Some(Conn { side: Side::AwaitFin(r) | Side::Lingering(r), .. }) = self.conns.get(key)
            && r.needs_turn()
        {
            self.push_runq(key);
        }
    }

    /// Free the record; dropping the socket closes it (and removes it from
    /// the poller).
    fn close_now(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        self.drop_sub(key);
        self.release_bufs(key);
        self.lists.leave(&mut self.conns, key);
        let conn = self.conns.remove(key);
        if conn.in_runq {
            self.runq.retain(|&k| k != key);
        }
        trace!("#{key} closed");
        if self.accept_starved {
            self.accept_starved = false;
            self.accept_ready = true;
        }
    }
}

/// How a subscription ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubEnd {
    /// Timeout or lifetime: `204` for a long poll, the last chunk for a
    /// stream; the connection carries on as it would have.
    Empty,
    /// A request arrived behind it: as `Empty`, then that request is served.
    Superseded,
    /// Load shedding: as `Empty`, and the connection closes.
    Shed,
    /// The connection is going away: write nothing.
    Drop,
}

/// The configured durations in milliseconds.
struct Millis {
    idle: u64,
    min_idle: u64,
    /// Per timer class (`Class as usize`); the idle timeout adapts and
    /// is not here.
    class: [u64; CLASSES.len()],
}

impl Millis {
    fn of(cfg: &Config) -> Millis {
        let ms = |d: Duration| d.as_millis() as u64;
        let mut class = [0; CLASSES.len()];
        for c in CLASSES {
            class[c as usize] = match c {
                Class::Header => ms(cfg.header_timeout),
                // Adapts to load: `Server::idle_timeout_ms`.
                Class::Idle => 0,
                Class::Send => ms(cfg.send_timeout),
                Class::CloseWait => CLIENT_FIRST_GRACE_MS,
                Class::Linger => ms(cfg.linger_timeout),
                Class::Hold => ms(cfg.longpoll_timeout),
                // One timer serves both the ping and the lifetime: a stream
                // ends within one tick of its lifetime, and a lifetime
                // shorter than the ping interval is not overshot.
                Class::Stream => ms(cfg.sse_ping.min(cfg.stream_lifetime)),
            };
        }
        Millis { idle: ms(cfg.idle_timeout), min_idle: ms(cfg.min_idle_timeout), class }
    }
}

/// What ending a subscription needs from the turn.
pub struct Ending {
    date: [u8; 29],
    idle_timeout_secs: u64,
    max_requests: u32,
    now: u64,
}

impl Ending {
    fn persist(&self, sub: &Sub, served: u32) -> Persist {
        if sub.keep_alive {
            Persist::KeepAlive {
                timeout_secs: self.idle_timeout_secs,
                max: self.max_requests.saturating_sub(served),
                http10: sub.http10,
            }
        } else {
            Persist::Close
        }
    }
}

/// End `key`'s subscription: write its last words, leave the channel.
/// A free function over the pieces it needs, so the serve phase can call it
/// while it holds the other parts of the server.
fn end_subscription(
    conns: &mut Slab<Conn>,
    pubsub: &mut PubSub,
    pool: &mut BufPool,
    key: usize,
    how: SubEnd,
    ending: &Ending,
) {
    let Some(Conn { side: Side::Open(o), .. }) = conns.get_mut(key) else { return };
    let Some(mut sub) = o.sub.take() else { return };
    if how != SubEnd::Drop {
        if how == SubEnd::Shed {
            sub.keep_alive = false;
        }
        let bufs = o.bufs.get_or_insert_with(|| pool.take());
        match sub.mode {
            Mode::LongPoll => {
                let persist = ending.persist(&sub, o.proto.served);
                let mut reply = Reply::new(&mut bufs.out, &ending.date, persist, false);
                service::long_poll_empty(&mut reply);
            }
            Mode::Stream | Mode::Sse if sub.chunked => {
                bufs.out.bytes().extend_from_slice(crate::http::body::LAST_CHUNK)
            }
            // Delimited by the close itself.
            Mode::Stream | Mode::Sse => sub.keep_alive = false,
        }
        if !sub.keep_alive {
            let kind =
                if how == SubEnd::Shed || !sub.chunked { CloseKind::ServerFirst } else { CloseKind::ClientFirst };
            o.proto.finish(kind);
        }
    }
    unsubscribe(conns, pubsub, &sub.channel, sub.index, ending.now);
}

/// Leave a channel in O(1): the subscriber moved into the freed index
/// learns its new place.
fn unsubscribe(conns: &mut Slab<Conn>, pubsub: &mut PubSub, channel: &str, index: usize, now: u64) {
    if let Some(moved) = pubsub.unsubscribe(channel, index, now)
        && let Some(Conn { side: Side::Open(o), .. }) = conns.get_mut(moved)
        && let Some(sub) = o.sub.as_mut()
    {
        sub.index = index;
    }
}
