//! One connection's TLS: rustls's sans-IO `ServerConnection` between a
//! non-blocking socket and the HTTP core, driven by the loop's phases.
//!
//! - read phase: `read` moves ciphertext from the socket into rustls and
//!   plaintext from rustls into the connection's input, bounded per call,
//!   with the same edge-triggered rules as `conn.rs`.
//! - flush phase: `write` moves plaintext from the `Output` queue into
//!   rustls (file ranges in bounded `pread` chunks: `sendfile` cannot pass
//!   through user-space encryption), `flush` writes the records; `send`
//!   alternates them within a budget.
//! - closing: `close_notify`, `flush` until `Flushed::all_out`, then the
//!   usual shut-write-and-drain on the raw socket.
//!
//! Memory: rustls holds what it is given, so this side bounds it. At most
//! `OUT_BOUND` bytes of records wait for the socket, at most one
//! `FILE_CHUNK` of a file is read at a time, and received plaintext is
//! left inside rustls (which stops reading at 16 KiB) while the input is
//! full.

use std::io::{self, BufRead, Write};
use std::os::fd::RawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use rustls::{ProtocolVersion, ServerConfig, ServerConnection};

use super::fd::{Fd, FirstBytes};
use super::outcome::{Fatal, Flushed, Sent, TlsRead};
use super::sniff::{self, Verdict};
use crate::http::Output;
use crate::http::output::Seg;

/// Ciphertext one `read` call takes from the socket before yielding, so
/// that one connection cannot hold the loop (the plain path's bound is one
/// input buffer; lighttpd's "so as not to monopolise").
pub const READ_BUDGET: usize = 64 * 1024;
/// Records waiting in rustls for the socket, at most (an estimate from the
/// plaintext given; `set_buffer_limit` enforces it with `LIMIT_SLACK`).
/// Two full records: each `flush` sends both in one `sendmsg`.
pub const OUT_BOUND: usize = 32 * 1024;
/// A file range is read in pieces of one full TLS record's plaintext
/// (2^14 bytes, RFC 8446 §5.1): never more of a file in memory at once.
pub const FILE_CHUNK: usize = 16 * 1024;
/// Room above `OUT_BOUND` for what the estimate does not count: record
/// headers and tags (22 bytes per TLS 1.3 record, 29 for TLS 1.2 GCM),
/// session tickets, alerts.
pub const LIMIT_SLACK: usize = 4 * 1024;

pub struct TlsSession {
    conn: ServerConnection,
    /// `close_notify` is queued: nothing more may be written.
    closed: bool,
    /// Plaintext given to rustls whose records may not have left yet.
    queued: usize,
    /// The connection's first bytes until `sniff` has decided.
    first: FirstBytes,
    sniffed: Option<Verdict>,
    /// Sticky ends, so that a later call neither reads nor reports less.
    peer_eof: bool,
    /// The peer's `close_notify` was processed (rustls tells it only in
    /// the state `process_new_packets` returns).
    peer_closed: bool,
    /// A fatal error was reported: nothing more is read.
    failed: bool,
}

impl TlsSession {
    /// A server session for one accepted connection. Fails only on a
    /// configuration rustls rejects, which `TlsConfig` never builds.
    pub fn new(config: Arc<ServerConfig>) -> Result<TlsSession, rustls::Error> {
        let mut conn = ServerConnection::new(config)?;
        conn.set_buffer_limit(Some(OUT_BOUND + LIMIT_SLACK));
        Ok(TlsSession {
            conn,
            closed: false,
            queued: 0,
            first: FirstBytes::default(),
            sniffed: None,
            peer_eof: false,
            peer_closed: false,
            failed: false,
        })
    }

    /// Read what the socket has, decrypt it, and append plaintext to
    /// `input` while its length stays within `limit` (compact the input
    /// first: consumed bytes at its front count). At most `READ_BUDGET`
    /// bytes of ciphertext are read per call.
    ///
    /// `fin_queued`: the event that made the socket readable also said the
    /// peer's FIN has arrived (`EPOLLRDHUP`). A short read is then no sign
    /// of "drained", since no new edge will announce the EOF (`conn.rs`).
    ///
    /// After a call, flush if `wants_write()`: the handshake, session
    /// tickets, a key update's answer or an alert may be waiting.
    pub fn read(&mut self, fd: RawFd, input: &mut Vec<u8>, limit: usize, fin_queued: bool) -> TlsRead {
        let mut r = TlsRead { peer_eof: self.peer_eof, ..TlsRead::default() };
        let mut taken = 0;
        loop {
            let (added, left) = self.take_plaintext(input, limit);
            r.added += added;
            if left {
                r.more_plaintext = true;
                break;
            }
            if self.sniffed == Some(Verdict::PlainHttp) {
                r.plain_http = true;
                break;
            }
            r.close_notify = self.peer_closed;
            if self.failed || self.peer_eof || r.close_notify || r.drained || r.fatal.is_some() {
                break;
            }
            if input.len() >= limit || taken >= READ_BUDGET {
                break;
            }
            let sniffing = self.sniffed.is_none();
            let mut sock = Fd::new(fd, sniffing.then_some(&mut self.first));
            match self.conn.read_tls(&mut sock) {
                Ok(0) => {
                    self.peer_eof = true;
                    r.peer_eof = true;
                }
                Ok(n) => {
                    taken += n;
                    // Short read: the socket is drained and a new edge will
                    // come, unless the FIN made its edge already.
                    r.drained = sock.short() && !fin_queued;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => r.drained = true,
                Err(e) if sock.kernel_error => {
                    self.failed = true;
                    r.fatal = Some(Fatal::Socket(e));
                }
                // rustls's own refusal (a handshake message past its 64 KiB
                // cap): no alert is queued for it; close.
                Err(e) => {
                    self.failed = true;
                    r.fatal = Some(Fatal::Tls(rustls::Error::General(e.to_string())));
                }
            }
            if r.fatal.is_some() {
                break;
            }
            if sniffing {
                match sniff::classify(self.first.get()) {
                    // Wait for the rest of the token, unless no more comes.
                    Verdict::Undecided if !self.peer_eof => continue,
                    Verdict::PlainHttp => {
                        self.sniffed = Some(Verdict::PlainHttp);
                        continue;
                    }
                    _ => self.sniffed = Some(Verdict::Tls),
                }
            }
            match self.conn.process_new_packets() {
                Ok(state) => self.peer_closed = state.peer_has_closed(),
                Err(e) => {
                    self.failed = true;
                    r.fatal = Some(Fatal::Tls(e));
                }
            }
        }
        r.handshaking = self.conn.is_handshaking();
        r
    }

    /// Move received plaintext into `input` up to `limit`. Returns the
    /// bytes moved and whether plaintext is left inside rustls.
    fn take_plaintext(&mut self, input: &mut Vec<u8>, limit: usize) -> (usize, bool) {
        let mut added = 0;
        let mut reader = self.conn.reader();
        loop {
            // `WouldBlock`: none yet; `UnexpectedEof`: none will come; an
            // empty chunk: none after the peer's close_notify.
            let Ok(chunk) = reader.fill_buf() else { return (added, false) };
            if chunk.is_empty() {
                return (added, false);
            }
            let room = limit.saturating_sub(input.len());
            if room == 0 {
                return (added, true);
            }
            let n = chunk.len().min(room);
            grow(input, n, limit);
            input.extend_from_slice(&chunk[..n]);
            reader.consume(n);
            added += n;
        }
    }

    /// Move plaintext from `out` into rustls, at most `budget` bytes, and
    /// only while fewer than `OUT_BOUND` bytes of records wait for the
    /// socket: call `flush` after it. Memory segments are copied from
    /// where they are; file ranges are read with `pread`, `FILE_CHUNK` at a
    /// time, into a buffer on the stack. `out` advances by what was taken.
    ///
    /// After `close_notify` this does nothing and returns 0: nothing may be
    /// sent after it (RFC 8446 §6.1, RFC 5246 §7.2.1).
    ///
    /// An error means the response cannot be completed (a file that fails
    /// to read, or was cut short under us, or a session that already
    /// failed): abort the connection rather than send a short body.
    pub fn write(&mut self, out: &mut Output, budget: u64) -> io::Result<u64> {
        if self.closed {
            return Ok(0);
        }
        let mut taken = 0u64;
        // Zeroed only when a file range is met.
        let mut scratch: Option<[u8; FILE_CHUNK]> = None;
        while taken < budget {
            let room = OUT_BOUND.saturating_sub(self.queued) as u64;
            let most = room.min(budget - taken);
            if most == 0 {
                break;
            }
            let (want, accepted) = match out.front() {
                None => break,
                Some(Seg::Mem { buf, pos }) => {
                    let chunk = &buf[*pos..];
                    let want = chunk.len().min(most as usize);
                    (want, self.conn.writer().write(&chunk[..want])?)
                }
                Some(Seg::File { file, off, end }) => {
                    let want = (end - off).min(most).min(FILE_CHUNK as u64) as usize;
                    let buf = &mut scratch.get_or_insert([0; FILE_CHUNK])[..want];
                    // All of it: a file cut short while being served is an
                    // error (`UnexpectedEof`), never a short body.
                    file.read_exact_at(buf, *off)?;
                    (want, self.conn.writer().write(buf)?)
                }
            };
            out.advance(accepted as u64);
            taken += accepted as u64;
            self.queued += accepted;
            if accepted < want {
                // rustls's limit: only during the handshake, or when the
                // estimate ran short; the rest goes after a flush.
                break;
            }
        }
        Ok(taken)
    }

    /// Write the queued records to the socket until they are all out or it
    /// is full. The amount is bounded by what rustls holds (`OUT_BOUND`
    /// plus handshake and alert records), so no budget is needed.
    pub fn flush(&mut self, fd: RawFd) -> io::Result<Flushed> {
        let mut bytes = 0;
        while self.conn.wants_write() {
            let mut sock = Fd::new(fd, None);
            match self.conn.write_tls(&mut sock) {
                Ok(n) => {
                    bytes += n;
                    self.queued = self.queued.saturating_sub(n);
                    if n == 0 || sock.short() {
                        // The send buffer is full; the writable edge follows.
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        let all_out = !self.conn.wants_write();
        if all_out {
            self.queued = 0;
        }
        Ok(Flushed { bytes, all_out })
    }

    /// `write` and `flush` in turn until the output is empty, the socket is
    /// full, or `budget` bytes of plaintext were taken (then come back next
    /// turn: the writable edge will not remind us).
    pub fn send(&mut self, fd: RawFd, out: &mut Output, budget: u64) -> io::Result<Sent> {
        let mut sent = Sent { plaintext: 0, bytes: 0, blocked: false };
        loop {
            let taken = self.write(out, budget - sent.plaintext)?;
            sent.plaintext += taken;
            let f = self.flush(fd)?;
            sent.bytes += f.bytes;
            if !f.all_out {
                sent.blocked = true;
                return Ok(sent);
            }
            // No progress either way: still handshaking with rustls's
            // plaintext buffer full, or closed.
            if out.is_empty() || sent.plaintext >= budget || (taken == 0 && f.bytes == 0) {
                return Ok(sent);
            }
        }
    }

    /// Queue `close_notify` (RFC 8446 §6.1: each side sends it before
    /// closing its write side). From here on `write` is a no-op; `flush`
    /// sends the alert. rustls queues nothing if a fatal alert went first.
    pub fn close_notify(&mut self) {
        self.conn.send_close_notify();
        self.closed = true;
    }

    /// Whether `close_notify` has been queued.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Records wait for the socket.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The protocol ALPN chose (`http/1.1`), if the client offered any.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// The peer's `close_notify` arrived on TLS 1.2, where it closes both
    /// directions: RFC 5246 §7.2.1 asks for our own `close_notify` at once,
    /// discarding pending writes. TLS 1.3 closes only the peer's side
    /// (RFC 8446 §6.1), so responses already owed may still be sent.
    pub fn reply_close_notify_at_once(&self) -> bool {
        self.peer_closed && self.conn.protocol_version() == Some(ProtocolVersion::TLSv1_2)
    }
}

#[cfg(test)]
impl TlsSession {
    /// Ciphertext bytes rustls holds for the socket (tests only: asking
    /// rustls means calling `process_new_packets`).
    pub(super) fn tls_bytes_queued(&mut self) -> usize {
        self.conn.process_new_packets().map_or(0, |s| s.tls_bytes_to_write())
    }
}

/// Make room for `n` more bytes, doubling towards `limit` like the plain
/// path's input buffer (never past it).
fn grow(input: &mut Vec<u8>, n: usize, limit: usize) {
    let need = input.len() + n;
    if need > input.capacity() {
        let target = (input.capacity() * 2).min(limit).max(need);
        input.reserve_exact(target - input.len());
    }
}
