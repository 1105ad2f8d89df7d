//! A connection record and its socket I/O, bounded per call.
//!
//! The record's `side` says what may still be done with the socket, and
//! the types enforce it (seed 003: "under no circumstance further packets
//! may be written ... after the stream was closed"):
//!
//! - `Open`: reads requests, writes responses. The only variant with a
//!   write path.
//! - `AwaitFin`: the last response is out; waiting for the client's FIN so
//!   that it closes first (Gettys & Freier §7). Reads and discards.
//! - `Lingering`: write half shut (`shutdown(Write)`), reading and
//!   discarding until EOF or the linger limits (seed 000; §8: close each
//!   half independently). `SO_LINGER` is never set.
//!
//! Moving from `Open` consumes it: once a connection is `AwaitFin` or
//! `Lingering` there is no socket left that can write.

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;

use mio::net::TcpStream;

use crate::http::output::Seg;
use crate::http::{Output, Proto};
use crate::lru::{Link, Linked};
use crate::pubsub::Mode;
use crate::service::SubStart;
use crate::sys;

/// Per-connection buffers: taken from the pool when there is work, given
/// back when the connection goes idle, so an idle connection holds none.
pub struct Bufs {
    /// Input, read straight into the spare capacity: a fresh buffer costs
    /// an allocation, never a memset. Starts small (`INPUT_START`).
    pub input: Vec<u8>,
    /// Start of the unconsumed input.
    pub start: usize,
    pub out: Output,
}

impl Bufs {
    pub fn has_input(&self) -> bool {
        self.start < self.input.len()
    }

    /// Room to read more (after compaction, or by growing up to `limit`).
    pub fn has_room(&self, limit: usize) -> bool {
        self.start > 0 || self.input.len() < self.input.capacity() || self.input.capacity() < limit
    }

    /// Bytes of memory held, for the buffer-memory budget.
    pub fn memory(&self) -> usize {
        self.input.capacity() + self.out.capacity()
    }
}

/// A free list of buffer sets that follows the load.
///
/// Under steady load connections go idle and busy again all the time; with
/// a fixed small free list the sets beyond it were freed and allocated
/// again on every such swing (`malloc`/`free` were 3–5% of the server's
/// CPU at 1000 connections). So the list may hold as many sets as were out
/// at once recently, and once a second (`trim`) it gives back what the last
/// window did not need: a burst's buffers return to the allocator two or
/// three seconds after it, and never more sets exist than were in use at
/// one time (or the minimum kept free, if that is more).
pub struct BufPool {
    /// Sets currently held by connections.
    pub out: usize,
    // Boxed on purpose: a connection holds `Option<Box<Bufs>>` (8 bytes
    // when idle), and moving sets in and out of the pool keeps the box.
    #[allow(clippy::vec_box)]
    free: Vec<Box<Bufs>>,
    /// Bytes the free sets hold, kept as they come and go so the status
    /// gauge need not walk the list.
    free_bytes: usize,
    input_capacity: usize,
    /// Free sets kept whatever the recent peak.
    min_free: usize,
    /// Most sets out at once in the current window and the one before.
    peak: usize,
    prev_peak: usize,
}

impl BufPool {
    pub fn new(input_capacity: usize, min_free: usize) -> BufPool {
        BufPool { out: 0, free: Vec::new(), free_bytes: 0, input_capacity, min_free, peak: 0, prev_peak: 0 }
    }

    pub fn take(&mut self) -> Box<Bufs> {
        self.out += 1;
        self.peak = self.peak.max(self.out);
        match self.free.pop() {
            Some(bufs) => {
                self.free_bytes -= bufs.memory();
                bufs
            }
            // Input is reserved on the first read: a subscriber that is only
            // written to never needs an input buffer. Output starts with
            // room for a few small responses instead of doubling up to it.
            None => Box::new(Bufs { input: Vec::new(), start: 0, out: Output::with_capacity(OUTPUT_START) }),
        }
    }

    pub fn give(&mut self, mut bufs: Box<Bufs>) {
        self.out -= 1;
        let recent = self.peak.max(self.prev_peak);
        if self.free.len() < self.min_free || self.out + self.free.len() < recent {
            bufs.start = 0;
            bufs.input.clear();
            // A buffer grown for a large head (`--max-header-bytes` can be
            // big) or a large response is not worth keeping for everyone.
            if bufs.input.capacity() > POOL_KEEP_BYTES {
                bufs.input = Vec::new();
            }
            bufs.out.trim(POOL_KEEP_BYTES);
            self.free_bytes += bufs.memory();
            self.free.push(bufs);
        }
    }

    /// Close the current window (call once a second): keep only the free
    /// sets the window just ended could have used.
    pub fn trim(&mut self) {
        self.prev_peak = self.peak;
        self.peak = self.out;
        let keep = self.min_free.max(self.prev_peak.saturating_sub(self.out));
        while self.free.len() > keep {
            if let Some(bufs) = self.free.pop() {
                self.free_bytes -= bufs.memory();
            }
        }
        if self.free.capacity() > 2 * keep.max(self.min_free) {
            self.free.shrink_to(keep);
        }
    }

    pub fn memory(&self) -> usize {
        self.free_bytes
    }

    /// Whether a `trim` may still give something back: the loop must not
    /// sleep past the next one while it could.
    pub fn wants_trim(&self) -> bool {
        self.free.len() > self.min_free
    }

    /// The input buffer size connections read into.
    pub fn input_capacity(&self) -> usize {
        self.input_capacity
    }
}

/// The most a pooled set keeps of each of its buffers.
const POOL_KEEP_BYTES: usize = 16 * 1024;
/// Output capacity of a fresh buffer set: a few small responses' worth.
const OUTPUT_START: usize = 1024;
/// Input capacity of a fresh buffer set, doubled up to the full size when
/// a read fills it (nginx starts at 1 KiB for the same reason). Most request
/// heads fit, and a burst of newcomers then touches a few KiB each instead
/// of a 16 KiB buffer's worth of pages: with 10 000 connections opened 250
/// at a time, that burst was most of the memory measured per idle
/// connection.
const INPUT_START: usize = 2048;

/// What a read or drain call found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Read something, or nothing was there.
    Progress,
    /// The buffer is full: back-pressure, stop reading (the client's TCP
    /// window closes, Gettys & Freier §9).
    Full,
    /// The per-turn budget ran out with data still coming.
    Budget,
}

pub struct Open {
    sock: TcpStream,
    /// mio is edge-triggered: these remember what the last edge said until
    /// a call returns WouldBlock (or a short read/write, which on Linux and
    /// the BSDs guarantees a new edge for new data; a FIN already queued
    /// has had its edge, see `fin_queued`).
    pub readable: bool,
    pub writable: bool,
    /// The last event said the client's FIN is queued: a short read is no
    /// longer a sign of "drained", since no new edge will follow it.
    pub fin_queued: bool,
    /// The client shut its write half (read returned 0).
    pub peer_eof: bool,
    /// The socket failed (reset, etc.): drop the connection.
    pub failed: bool,
    /// The last serve step found no complete request in the input.
    pub need_input: bool,
    /// A request was answered this turn (restarts the header timer).
    pub progress: bool,
    pub proto: Proto,
    pub bufs: Option<Box<Bufs>>,
    /// A pub/sub subscription this connection is held open for.
    pub sub: Option<Box<Sub>>,
}

/// A held long poll or an open stream (RFC 6202).
pub struct Sub {
    pub channel: Box<str>,
    pub mode: Mode,
    /// The last message id this subscriber has been sent.
    pub last_id: u64,
    /// Index in the channel's subscriber list.
    pub index: usize,
    pub chunked: bool,
    pub keep_alive: bool,
    pub http10: bool,
    /// Loop clock when the subscription started (stream lifetime).
    pub started: u64,
}

impl Sub {
    pub fn new(start: SubStart, index: usize, now: u64) -> Sub {
        Sub {
            channel: start.channel,
            mode: start.mode,
            last_id: start.last_id,
            index,
            chunked: start.chunked,
            keep_alive: start.keep_alive,
            http10: start.http10,
            started: now,
        }
    }
}

/// Socket whose owner may only read and discard: no write method exists.
pub struct ReadOnly {
    sock: TcpStream,
    pub readable: bool,
    /// As `Open::fin_queued`.
    pub fin_queued: bool,
    pub eof: bool,
    pub failed: bool,
    pub drained: u64,
}

pub enum Side {
    Open(Open),
    AwaitFin(ReadOnly),
    Lingering(ReadOnly),
    /// Transitional placeholder while moving between sides; a record is
    /// never left in it across phases.
    Gone,
}

pub struct Conn {
    pub link: Link,
    pub peer: SocketAddr,
    pub in_runq: bool,
    /// In this turn's batch (so a delivery does not add it twice).
    pub in_batch: bool,
    pub side: Side,
}

impl Linked for Conn {
    fn link(&self) -> &Link {
        &self.link
    }
    fn link_mut(&mut self) -> &mut Link {
        &mut self.link
    }
}

impl Conn {
    pub fn new(sock: TcpStream, peer: SocketAddr) -> Conn {
        Conn {
            link: Link::default(),
            peer,
            in_runq: false,
            in_batch: false,
            side: Side::Open(Open {
                sock,
                // Try a read at once: the request often follows the
                // handshake closely, and a miss costs one EAGAIN. (Waiting
                // for the first edge instead saved the EAGAIN, 3 reads in 4
                // with a connection per request, but measured no cheaper:
                // the connection then needs a turn of its own.)
                readable: true,
                writable: true,
                fin_queued: false,
                peer_eof: false,
                failed: false,
                need_input: false,
                progress: false,
                proto: Proto::new(),
                bufs: None,
                sub: None,
            }),
        }
    }

    /// A newcomer refused at the door: answer, then linger like any close.
    pub fn refused(sock: TcpStream, peer: SocketAddr, answer: &[u8]) -> Conn {
        // A fresh socket's send buffer is empty: the short answer fits.
        let _ = sys::send(sock.as_raw_fd(), answer, false);
        Conn {
            link: Link::default(),
            peer,
            in_runq: false,
            in_batch: false,
            side: Side::Lingering(ReadOnly::shut(sock, true, false, false)),
        }
    }

    /// An event said the socket is readable; `fin_queued` if it also said
    /// the client's FIN has arrived (`EPOLLRDHUP`, `EV_EOF`).
    pub fn mark_readable(&mut self, fin_queued: bool) {
        match &mut self.side {
            Side::Open(o) => {
                o.readable = true;
                o.fin_queued |= fin_queued;
            }
            Side::AwaitFin(r) | Side::Lingering(r) => {
                r.readable = true;
                r.fin_queued |= fin_queued;
            }
            Side::Gone => {}
        }
    }

    pub fn mark_writable(&mut self) {
        if let Side::Open(o) = &mut self.side {
            o.writable = true;
        }
    }

    /// `Open` -> `AwaitFin`: stop writing, keep the write half open a little
    /// so the client's FIN comes first. Buffers must have been returned.
    pub fn await_fin(&mut self) {
        if let Side::Open(o) = std::mem::replace(&mut self.side, Side::Gone) {
            self.side = Side::AwaitFin(ReadOnly::keep(o.sock, o.readable, o.fin_queued, o.peer_eof));
        }
    }

    /// `Open` or `AwaitFin` -> `Lingering`: shut the write half.
    pub fn linger(&mut self) {
        self.side = match std::mem::replace(&mut self.side, Side::Gone) {
            Side::Open(o) => Side::Lingering(ReadOnly::shut(o.sock, o.readable, o.fin_queued, o.peer_eof)),
            Side::AwaitFin(r) => Side::Lingering(r.shut_write()),
            other => other,
        };
    }
}

impl Open {
    /// Read what is available into the input buffer, up to its capacity.
    pub fn read_input(&mut self, input_capacity: usize) -> ReadOutcome {
        let Some(bufs) = self.bufs.as_mut() else { return ReadOutcome::Progress };
        let input = &mut bufs.input;
        if input.capacity() == 0 {
            input.reserve_exact(INPUT_START.min(input_capacity));
        }
        if bufs.start == input.len() {
            input.clear();
            bufs.start = 0;
        } else if bufs.start > 0 && input.capacity() - input.len() < input.capacity() / 4 {
            // Compact only when the tail is short: one memmove of what is
            // left, amortised over many requests.
            input.drain(..bufs.start);
            bufs.start = 0;
        }
        if input.len() == input.capacity() && input.capacity() < input_capacity {
            // A long head or a deep pipeline: grow towards the full size.
            let grown = (input.capacity() * 2).min(input_capacity);
            input.reserve_exact(grown - input.len());
        }
        let spare = input.capacity() - input.len();
        if spare == 0 {
            return ReadOutcome::Full;
        }
        match sys::read_into_spare(self.sock.as_raw_fd(), input) {
            Ok(0) => {
                self.peer_eof = true;
                self.readable = false;
                ReadOutcome::Progress
            }
            Ok(n) => {
                self.need_input = false;
                if n < spare && !self.fin_queued {
                    // Short read: the socket is drained; a new edge will come.
                    // Not so once the FIN is queued: it made its edge already,
                    // so read on to the EOF.
                    self.readable = false;
                    ReadOutcome::Progress
                } else {
                    ReadOutcome::Budget
                }
            }
            Err(e) => {
                self.readable = false;
                if !sys::is_would_block(&e) {
                    self.failed = true;
                }
                ReadOutcome::Progress
            }
        }
    }

    /// Read and drop input (after the last request: nothing more is read).
    pub fn discard_input(&mut self, scratch: &mut [u8], budget: usize) -> ReadOutcome {
        let d = drain(&mut self.sock, &mut self.readable, self.fin_queued, scratch, budget);
        self.peer_eof |= d.eof;
        self.failed |= d.failed;
        d.outcome
    }

    /// Write pending output, at most `budget` bytes this turn. Returns
    /// bytes written.
    pub fn flush(&mut self, budget: u64) -> u64 {
        let Some(bufs) = self.bufs.as_mut() else {
            return 0;
        };
        let fd = self.sock.as_raw_fd();
        let mut written = 0u64;
        while self.writable && written < budget {
            let out = &mut bufs.out;
            let (want, result) = match out.front() {
                None => break,
                Some(Seg::Mem { buf, pos }) => {
                    let more = matches!(out.second(), Some(Seg::File { .. }));
                    let chunk = &buf[*pos..];
                    (chunk.len() as u64, sys::send(fd, chunk, more))
                }
                Some(Seg::File { file, off, end }) => {
                    let want = (end - off).min(budget - written);
                    (want, sys::sendfile(fd, file, *off, want))
                }
            };
            match result {
                Ok(n) => {
                    out.advance(n as u64);
                    written += n as u64;
                    if (n as u64) < want {
                        // Short write: the send buffer is full.
                        self.writable = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if sys::is_would_block(&e) => self.writable = false,
                Err(_) => {
                    self.failed = true;
                    self.writable = false;
                }
            }
        }
        written
    }

    pub fn output_pending(&self) -> bool {
        self.bufs.as_ref().is_some_and(|b| !b.out.is_empty())
    }
}

impl ReadOnly {
    /// The read state carries over from the open side: `readable` (see
    /// `shut`) and an EOF already read, which must close the socket rather
    /// than wait for an edge that will not come.
    fn keep(sock: TcpStream, readable: bool, fin_queued: bool, eof: bool) -> ReadOnly {
        ReadOnly { sock, readable, fin_queued, eof, failed: false, drained: 0 }
    }

    /// Shut the write half: the client sees our FIN after every byte we
    /// wrote, and its late requests meet a socket that still reads.
    /// `readable` carries over: a socket already drained gets a new edge
    /// when the client's next bytes or FIN arrive, so reading it now would
    /// only find nothing.
    fn shut(sock: TcpStream, readable: bool, fin_queued: bool, eof: bool) -> ReadOnly {
        let failed = sock.shutdown(Shutdown::Write).is_err();
        ReadOnly { sock, readable, fin_queued, eof, failed, drained: 0 }
    }

    fn shut_write(self) -> ReadOnly {
        let mut r = ReadOnly::shut(self.sock, self.readable, self.fin_queued, self.eof);
        r.drained = self.drained;
        r
    }

    /// Whether the next turn has anything to do for this socket.
    pub fn needs_turn(&self) -> bool {
        self.readable || self.failed || self.eof
    }

    /// Read and discard, up to `budget` bytes.
    pub fn drain(&mut self, scratch: &mut [u8], budget: usize) -> ReadOutcome {
        let d = drain(&mut self.sock, &mut self.readable, self.fin_queued, scratch, budget);
        self.eof |= d.eof;
        self.failed |= d.failed;
        self.drained += d.bytes;
        d.outcome
    }
}

/// What one drain call did.
struct Drained {
    outcome: ReadOutcome,
    bytes: u64,
    eof: bool,
    failed: bool,
}

fn drain(sock: &mut TcpStream, readable: &mut bool, fin_queued: bool, scratch: &mut [u8], budget: usize) -> Drained {
    let mut d = Drained { outcome: ReadOutcome::Progress, bytes: 0, eof: false, failed: false };
    while *readable {
        if d.bytes >= budget as u64 {
            d.outcome = ReadOutcome::Budget;
            break;
        }
        match read_retrying(sock, scratch) {
            Ok(0) => {
                d.eof = true;
                *readable = false;
            }
            Ok(n) => {
                d.bytes += n as u64;
                if n < scratch.len() && !fin_queued {
                    *readable = false;
                }
            }
            Err(e) => {
                *readable = false;
                d.failed = !sys::is_would_block(&e);
            }
        }
    }
    d
}

fn read_retrying(sock: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match sock.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection whose client wrote its request and its FIN before the
    /// first event: the event says both, and a short read must not end the
    /// reading, since no further edge will announce the EOF.
    #[test]
    fn fin_announced_by_the_event_is_read_after_a_short_read() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (sock, peer) = listener.accept().unwrap();
        sock.set_nonblocking(true).unwrap();
        client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        client.shutdown(Shutdown::Write).unwrap();

        let mut conn = Conn::new(TcpStream::from_std(sock), peer);
        let mut pool = BufPool::new(1024, 1);
        conn.mark_readable(true);
        let Side::Open(o) = &mut conn.side else { panic!("open") };
        o.bufs = Some(pool.take());
        // Blocking-free but bounded: the bytes are on loopback already, yet
        // give the kernel a few tries to have queued them.
        let mut got = 0;
        for _ in 0..1000 {
            o.read_input(1024);
            got = o.bufs.as_ref().map_or(0, |b| b.input.len());
            if got > 0 {
                break;
            }
            o.readable = true;
            std::thread::yield_now();
        }
        assert!(got > 0, "request read");
        assert!(o.readable, "short read with the FIN queued: keep reading");
        for _ in 0..1000 {
            if o.peer_eof {
                break;
            }
            o.read_input(1024);
            std::thread::yield_now();
        }
        assert!(o.peer_eof, "the EOF is read without a new edge");
    }

    /// Take `n` sets at once, then give them all back.
    fn take_and_give(pool: &mut BufPool, n: usize) {
        #[allow(clippy::vec_box)] // the pool deals in boxes
        let sets: Vec<Box<Bufs>> = (0..n).map(|_| pool.take()).collect();
        for bufs in sets {
            pool.give(bufs);
        }
    }

    #[test]
    fn pool_keeps_the_recent_peak_then_gives_it_back() {
        let mut pool = BufPool::new(1024, 4);
        take_and_give(&mut pool, 100);
        assert_eq!(pool.out, 0);
        assert_eq!(pool.free.len(), 100, "every set of the peak is kept");
        assert!(pool.wants_trim());

        // Load swings between idle and busy: no fresh sets are made.
        #[allow(clippy::vec_box)] // the pool deals in boxes
        let sets: Vec<Box<Bufs>> = (0..100).map(|_| pool.take()).collect();
        assert!(pool.free.is_empty());
        for bufs in sets {
            pool.give(bufs);
        }

        pool.trim(); // the window that saw 100 out ends: still needed
        assert_eq!(pool.free.len(), 100);
        pool.trim(); // a quiet window: back to the minimum
        assert_eq!(pool.free.len(), 4);
        assert!(!pool.wants_trim());
        assert_eq!(pool.memory(), pool.free.iter().map(|b| b.memory()).sum::<usize>());
    }

    /// Random takes, growths, gives and trims: the byte count stays the
    /// real sum, `out` the number held, and two quiet trims end at the
    /// minimum.
    #[test]
    fn pool_accounting_holds_under_random_use() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut pool = BufPool::new(16 * 1024, 4);
        let mut held: Vec<Box<Bufs>> = Vec::new();
        for _ in 0..20_000 {
            match next(10) {
                0..=3 => held.push(pool.take()),
                4..=6 if !held.is_empty() => {
                    let i = next(held.len() as u64) as usize;
                    pool.give(held.swap_remove(i));
                }
                7 if !held.is_empty() => {
                    let i = next(held.len() as u64) as usize;
                    let grow = 1 + next(40 * 1024) as usize;
                    held[i].input.reserve_exact(grow);
                    held[i].out.bytes().extend(std::iter::repeat_n(b'x', grow / 4));
                }
                8 => pool.trim(),
                _ => {}
            }
            assert_eq!(pool.out, held.len());
            assert_eq!(pool.memory(), pool.free.iter().map(|b| b.memory()).sum::<usize>());
        }
        for bufs in held.drain(..) {
            pool.give(bufs);
        }
        pool.trim();
        pool.trim();
        assert!(pool.free.len() <= 4, "back to the minimum");
        assert!(!pool.wants_trim());
        assert!(pool.free.iter().all(|b| b.memory() <= 2 * POOL_KEEP_BYTES), "no oversized buffer kept");
    }

    #[test]
    fn pool_never_holds_more_sets_than_were_out_at_once() {
        let mut pool = BufPool::new(1024, 2);
        take_and_give(&mut pool, 10);
        pool.trim();
        pool.trim();
        // Peak is now 0 in both windows: only the minimum is kept.
        take_and_give(&mut pool, 5);
        assert_eq!(pool.free.len(), 5, "the current window's peak");
        pool.trim();
        pool.trim();
        assert_eq!(pool.free.len(), 2);
    }
}
