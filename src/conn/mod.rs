//! A connection record and its state.
//!
//! The state is one enum whose variants carry what the state owns: the
//! open states carry the socket and the HTTP session (`Open`), the closing
//! states only a read-only socket (`ReadOnly`), so a connection that has
//! begun to close cannot write another byte (seed 003), and `Closed` owns
//! nothing (its socket is already closed; the record waits for the reap
//! phase at the end of the turn, so its slab key is not reused within the
//! turn's batch of events).
//!
//! ```text
//! Reading   waiting for a request head or the rest of a body  (header timer)
//! Serving   complete requests queued: on the run queue          (no timer)
//! Writing   output pending, the client has not taken it yet    (send timer)
//! Idle      keep-alive, nothing pending, holds no buffers      (idle timer: the LRU)
//! Held      a long poll waiting for a message                  (long-poll timer)
//! Streaming a chunked stream or SSE                            (ping timer)
//! AwaitFin  last response out; the client is to close first    (grace timer)
//! Lingering write half shut, draining input                    (linger timer)
//! Closed    socket closed; freed at the end of the turn
//! ```
//!
//! Where a connection goes after a turn is decided by `decide::decide`, a
//! pure function of the connection's facts; `Server::set_state` carries it
//! out. The picture of every transition is in `docs/states.md`.

pub mod decide;
pub mod io;

use std::net::{IpAddr, SocketAddr};

use mio::net::TcpStream;

pub use io::{Flushed, ReadOnly, ReadOutcome, Sock};

use crate::policy::{LINGER_MAX_BYTES, OUT_HIGH_WATER};
use crate::pool::BufPool;
use crate::session::Session;
use crate::tls::TlsSession;
use decide::Facts;

/// The state names (the state without its data): the index of the state's
/// list in `Timers`, what `#7 Reading=>Writing` traces print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Reading = 0,
    Serving = 1,
    Writing = 2,
    Idle = 3,
    Held = 4,
    Streaming = 5,
    AwaitFin = 6,
    Lingering = 7,
    Closed = 8,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Reading,
        Kind::Serving,
        Kind::Writing,
        Kind::Idle,
        Kind::Held,
        Kind::Streaming,
        Kind::AwaitFin,
        Kind::Lingering,
        Kind::Closed,
    ];

    /// States whose socket can still write: they hold a slot.
    pub fn is_open(self) -> bool {
        !matches!(self, Kind::AwaitFin | Kind::Lingering | Kind::Closed)
    }

    pub fn is_closing(self) -> bool {
        matches!(self, Kind::AwaitFin | Kind::Lingering)
    }
}

/// The open side: the socket and the HTTP session over it.
pub struct Open {
    pub sock: Sock,
    pub session: Session,
}

pub enum State {
    Reading(Open),
    Serving(Open),
    Writing(Open),
    Idle(Open),
    Held(Open),
    Streaming(Open),
    AwaitFin(ReadOnly),
    Lingering(ReadOnly),
    Closed,
}

impl State {
    pub fn kind(&self) -> Kind {
        match self {
            State::Reading(_) => Kind::Reading,
            State::Serving(_) => Kind::Serving,
            State::Writing(_) => Kind::Writing,
            State::Idle(_) => Kind::Idle,
            State::Held(_) => Kind::Held,
            State::Streaming(_) => Kind::Streaming,
            State::AwaitFin(_) => Kind::AwaitFin,
            State::Lingering(_) => Kind::Lingering,
            State::Closed => Kind::Closed,
        }
    }

    pub fn open(&self) -> Option<&Open> {
        match self {
            State::Reading(o)
            | State::Serving(o)
            | State::Writing(o)
            | State::Idle(o)
            | State::Held(o)
            | State::Streaming(o) => Some(o),
            _ => None,
        }
    }

    pub fn open_mut(&mut self) -> Option<&mut Open> {
        match self {
            State::Reading(o)
            | State::Serving(o)
            | State::Writing(o)
            | State::Idle(o)
            | State::Held(o)
            | State::Streaming(o) => Some(o),
            _ => None,
        }
    }

    /// Whether a request is on its way in that an eviction, a reap or a
    /// shutdown must not throw away: bytes buffered, or bytes in the socket
    /// no event has told of yet.
    pub fn input_waiting(&self) -> bool {
        self.open().is_some_and(|o| o.session.has_input() || o.sock.input_waiting())
    }

    pub fn closing_mut(&mut self) -> Option<&mut ReadOnly> {
        match self {
            State::AwaitFin(r) | State::Lingering(r) => Some(r),
            _ => None,
        }
    }

    /// An open state of kind `kind` carrying `open`.
    fn open_as(kind: Kind, open: Open) -> State {
        match kind {
            Kind::Serving => State::Serving(open),
            Kind::Writing => State::Writing(open),
            Kind::Idle => State::Idle(open),
            Kind::Held => State::Held(open),
            Kind::Streaming => State::Streaming(open),
            _ => State::Reading(open),
        }
    }
}

/// The client's address, kept compact: a `SocketAddr` is 32 bytes (an IPv6
/// one carries flow and scope fields nothing here reads), this is 20, and
/// every idle connection pays for its record.
#[derive(Clone, Copy)]
pub struct Peer {
    ip: IpAddr,
    port: u16,
}

impl Peer {
    pub fn addr(self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

impl From<SocketAddr> for Peer {
    fn from(addr: SocketAddr) -> Peer {
        Peer { ip: addr.ip(), port: addr.port() }
    }
}

pub struct Conn {
    pub peer: Peer,
    /// On the run queue for the next turn (deduplicates it).
    pub in_runq: bool,
    /// In this turn's batch (so a delivery does not add it twice).
    pub in_batch: bool,
    pub state: State,
}

impl Conn {
    /// A new connection: reading its first request (over TLS when `tls`
    /// holds a session: the handshake comes first, on the same timer).
    pub fn new(stream: TcpStream, peer: SocketAddr, tls: Option<Box<TlsSession>>) -> Conn {
        let open = Open { sock: Sock::new(stream, tls), session: Session::new() };
        Conn { peer: peer.into(), in_runq: false, in_batch: false, state: State::Reading(open) }
    }

    /// A newcomer refused at the door: `answer` sent (if any: a TLS client
    /// could not read one before a handshake), then the same graceful
    /// close as everyone else.
    pub fn refused(stream: TcpStream, peer: SocketAddr, answer: Option<&[u8]>) -> Conn {
        let sock = Sock::new(stream, None);
        if let Some(answer) = answer {
            ReadOnly::last_words(&sock, answer);
        }
        Conn { peer: peer.into(), in_runq: false, in_batch: false, state: State::Lingering(ReadOnly::shut(sock)) }
    }

    pub fn kind(&self) -> Kind {
        self.state.kind()
    }

    /// An event said the socket is readable; `fin_queued` if it also said
    /// the client's FIN has arrived.
    pub fn mark_readable(&mut self, fin_queued: bool) {
        match &mut self.state {
            State::AwaitFin(r) | State::Lingering(r) => r.mark_readable(fin_queued),
            state => {
                if let Some(o) = state.open_mut() {
                    o.sock.mark_readable(fin_queued);
                }
            }
        }
    }

    pub fn mark_writable(&mut self) {
        if let Some(o) = self.state.open_mut() {
            o.sock.writable = true;
        }
    }

    /// What `decide` needs to know, taking this turn's progress flags.
    #[inline]
    pub fn facts(&mut self, input_capacity: usize, draining: bool, abortive: bool) -> Facts {
        let mut f = Facts::quiet(self.kind());
        f.draining = draining;
        f.abortive = abortive;
        match &mut self.state {
            State::AwaitFin(r) | State::Lingering(r) => {
                f.readable = r.readable();
                f.eof = r.eof();
                f.failed = r.failed();
                f.drained_past_limit = r.drained > LINGER_MAX_BYTES;
            }
            state => {
                if let Some(o) = state.open_mut() {
                    let s = &mut o.session;
                    let pending_memory = s.pending_memory();
                    f.readable = o.sock.readable;
                    f.writable = o.sock.writable;
                    f.eof = o.sock.eof;
                    f.failed = o.sock.failed;
                    f.sub = s.subscription().map(|sub| sub.mode);
                    f.awaiting = s.publishing().is_some();
                    f.done = s.close_kind();
                    f.pending = s.output_pending() || o.sock.wants_write();
                    f.out_room = pending_memory < OUT_HIGH_WATER;
                    f.has_input = s.has_input();
                    f.need_input = s.needs_input();
                    f.in_room = s.input_room(input_capacity);
                    f.in_body = s.in_body();
                    f.served_any = s.served() > 0;
                    f.answered = s.take_answered();
                    f.wrote = std::mem::take(&mut o.sock.wrote);
                }
            }
        }
        f
    }

    /// The mechanics of a state change: carry the socket and session into
    /// the new variant, give back what the new state may not hold. Leaving
    /// the open states returns the buffers (the session's subscription
    /// must have been taken off its channel by the caller); `Lingering`
    /// shuts the write half; `Closed` drops the socket, which closes it and
    /// takes it out of the poller.
    pub fn become_(&mut self, to: Kind, pool: &mut BufPool) {
        let from = self.kind();
        if from == to {
            return;
        }
        self.state = match std::mem::replace(&mut self.state, State::Closed) {
            State::Closed => State::Closed,
            State::AwaitFin(r) => match to {
                Kind::Lingering => State::Lingering(r.shut_write()),
                Kind::Closed => State::Closed,
                // A closing socket never opens again.
                _ => State::AwaitFin(r),
            },
            State::Lingering(r) => match to {
                Kind::Closed => State::Closed,
                _ => State::Lingering(r),
            },
            state => match open_of(state) {
                Some(open) if to.is_open() => State::open_as(to, open),
                Some(mut open) => {
                    open.session.release(pool);
                    match to {
                        Kind::AwaitFin => State::AwaitFin(ReadOnly::keep(open.sock)),
                        Kind::Lingering => State::Lingering(ReadOnly::shut(open.sock)),
                        _ => {
                            // Closing outright: TLS still says goodbye if it
                            // can (it answers a client's close_notify).
                            open.sock.close_transport();
                            State::Closed
                        }
                    }
                }
                None => State::Closed,
            },
        };
    }
}

fn open_of(state: State) -> Option<Open> {
    match state {
        State::Reading(o)
        | State::Serving(o)
        | State::Writing(o)
        | State::Idle(o)
        | State::Held(o)
        | State::Streaming(o) => Some(o),
        _ => None,
    }
}

#[cfg(test)]
mod size_tests {
    /// Every idle connection pays for its record (plus a 16-byte timer
    /// link): 104 bytes here, where the record with its links inside was
    /// 128. A field added to `Open`, `Sock` or `Session` should find room
    /// in padding or a box, not grow this.
    #[test]
    fn a_connection_record_stays_within_104_bytes() {
        assert!(std::mem::size_of::<super::Conn>() <= 104, "{}", std::mem::size_of::<super::Conn>());
        assert!(std::mem::size_of::<super::Peer>() <= 20);
    }
}
