//! A connection's socket and the I/O done on it, bounded per call.
//!
//! mio is edge-triggered: `Sock` remembers what the last edge said
//! (`readable`, `writable`) until a call returns WouldBlock, or a short read
//! or write, which on Linux and the BSDs guarantees a new edge for new data
//! (a FIN already queued has had its edge: see `fin_queued`).
//!
//! `ReadOnly` is a socket whose owner may only read and discard: it has no
//! write method and does not hand out its `Sock`, so once a connection is
//! closing nothing can be written (seed 003: "under no circumstance further
//! packets may be written ... after the stream was closed").

use std::io::{self, Read};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};

use mio::net::TcpStream;

use crate::http::Output;
use crate::http::output::Seg;
use crate::pool::{Bufs, INPUT_START};
use crate::sys;
use crate::tls::{Fatal, TlsSession};

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

/// What one flush did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    pub bytes: u64,
    /// `sendfile` found the file shorter than the response promised (it
    /// was truncated after its length was announced): the response cannot
    /// be completed.
    pub truncated: bool,
}

pub struct Sock {
    stream: TcpStream,
    /// HTTPS: the TLS session between the socket and the HTTP session,
    /// which sees plaintext only (DESIGN.md, "Transport under a
    /// connection"). Boxed: about 1.2 KiB, and plain connections hold none.
    tls: Option<Box<TlsSession>>,
    pub readable: bool,
    pub writable: bool,
    /// The last event said the client's FIN is queued: a short read is no
    /// longer a sign of "drained", since no new edge will follow it.
    pub fin_queued: bool,
    /// The client shut its write half (a read returned 0).
    pub eof: bool,
    /// The socket failed (reset, etc.): drop the connection.
    pub failed: bool,
    /// TLS: the exchange cannot go on (a fatal TLS error, whose alert may
    /// still be flushed; or a TLS 1.2 `close_notify`, which asks for ours at
    /// once, RFC 5246 §7.2.1): what is owed is dropped and the connection
    /// closes.
    pub tls_abort: bool,
    /// The first bytes on a TLS port were a plain HTTP request line: the
    /// TLS session is gone and the client is answered in the clear.
    pub plain_http: bool,
    /// Bytes went out this turn (restarts the send timer). Kept here, in
    /// the socket's padding, rather than beside it: every byte of a
    /// connection record is paid by each idle connection.
    pub wrote: bool,
}

impl Sock {
    pub fn new(stream: TcpStream, tls: Option<Box<TlsSession>>) -> Sock {
        // Try a read at once: the request often follows the handshake
        // closely, and a miss costs one EAGAIN. (Waiting for the first edge
        // instead saved the EAGAIN, 3 reads in 4 with a connection per
        // request, but measured no cheaper: the connection then needs a
        // turn of its own.)
        Sock {
            stream,
            tls,
            readable: true,
            writable: true,
            fin_queued: false,
            eof: false,
            failed: false,
            tls_abort: false,
            plain_http: false,
            wrote: false,
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Encrypted records wait for the socket (a handshake flight, a
    /// ticket, an alert, `close_notify`): output pending, though the HTTP
    /// session has none.
    #[inline]
    pub fn wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// A TLS connection whose exchange is over still owes `close_notify`
    /// (RFC 8446 §6.1) before its write half may be shut.
    #[inline]
    pub fn owes_close_notify(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| !t.is_closed())
    }

    /// The transport's own goodbye before the socket stops writing: TLS
    /// sends `close_notify` if it can without waiting (an idle or answered
    /// connection's send buffer has room). Nothing for plain TCP.
    pub fn close_transport(&mut self) {
        if let Some(tls) = self.tls.as_mut()
            && !self.failed
        {
            if !tls.is_closed() {
                tls.close_notify();
            }
            let _ = tls.flush(self.stream.as_raw_fd());
        }
    }

    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// An event said the socket is readable; `fin_queued` if it also said
    /// the client's FIN has arrived (`EPOLLRDHUP`, `EV_EOF`).
    pub fn mark_readable(&mut self, fin_queued: bool) {
        self.readable = true;
        self.fin_queued |= fin_queued;
    }

    /// Whether bytes wait in the socket, whatever the edges said: one
    /// `ioctl`, asked only before closing a connection the client may just
    /// have sent a request on.
    pub fn input_waiting(&self) -> bool {
        sys::bytes_readable(self.stream.as_raw_fd()) > 0
    }

    /// Read what is available into the input buffer, up to `capacity`.
    pub fn read_input(&mut self, bufs: &mut Bufs, capacity: usize) -> ReadOutcome {
        let input = &mut bufs.input;
        if input.capacity() == 0 {
            input.reserve_exact(INPUT_START.min(capacity));
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
        if input.len() == input.capacity() && input.capacity() < capacity {
            // A long head or a deep pipeline: grow towards the full size.
            let grown = (input.capacity() * 2).min(capacity);
            input.reserve_exact(grown - input.len());
        }
        let spare = input.capacity() - input.len();
        if spare == 0 {
            return ReadOutcome::Full;
        }
        if self.tls.is_some() {
            return self.read_tls(input, capacity);
        }
        match sys::read_into_spare(self.stream.as_raw_fd(), input) {
            Ok(0) => {
                self.eof = true;
                self.readable = false;
                ReadOutcome::Progress
            }
            Ok(n) if n < spare && !self.fin_queued => {
                // Short read: drained; a new edge will come. Not so once
                // the FIN is queued: it made its edge already, so read on
                // to the EOF.
                self.readable = false;
                ReadOutcome::Progress
            }
            Ok(_) => ReadOutcome::Budget,
            Err(e) => {
                self.readable = false;
                self.failed |= !sys::is_would_block(&e);
                ReadOutcome::Progress
            }
        }
    }

    /// Read through the TLS session: ciphertext from the socket, plaintext
    /// into `input`, up to `capacity`.
    fn read_tls(&mut self, input: &mut Vec<u8>, capacity: usize) -> ReadOutcome {
        let fd = self.stream.as_raw_fd();
        let Some(tls) = self.tls.as_mut() else { return ReadOutcome::Progress };
        let r = tls.read(fd, input, capacity, self.fin_queued);
        if r.drained {
            self.readable = false;
        }
        if r.peer_eof || r.close_notify {
            self.eof = true;
            self.readable = false;
            self.tls_abort |= tls.reply_close_notify_at_once();
        }
        if r.plain_http {
            // Nothing was given to rustls and nothing is queued in it: from
            // here on the connection is plain, and answered in the clear.
            self.plain_http = true;
            self.readable = false;
            self.tls = None;
        }
        match r.fatal {
            Some(Fatal::Socket(_)) => self.failed = true,
            Some(Fatal::Tls(e)) => {
                log::debug!("TLS: {e}");
                self.tls_abort = true;
                self.readable = false;
            }
            None => {}
        }
        if r.more_plaintext {
            // Plaintext waits inside the session, not the socket: no edge
            // will announce it. Read again once the input has room.
            self.readable = true;
            return ReadOutcome::Full;
        }
        if self.readable { ReadOutcome::Budget } else { ReadOutcome::Progress }
    }

    /// Read and drop up to `budget` bytes (nothing more will be answered,
    /// but reading on keeps the client's late bytes from meeting a reset).
    pub fn discard(&mut self, scratch: &mut [u8], budget: usize) -> (ReadOutcome, u64) {
        let mut bytes = 0u64;
        while self.readable {
            if bytes >= budget as u64 {
                return (ReadOutcome::Budget, bytes);
            }
            match read_retrying(&mut self.stream, scratch) {
                Ok(0) => {
                    self.eof = true;
                    self.readable = false;
                }
                Ok(n) => {
                    bytes += n as u64;
                    if n < scratch.len() && !self.fin_queued {
                        self.readable = false;
                    }
                }
                Err(e) => {
                    self.readable = false;
                    self.failed |= !sys::is_would_block(&e);
                }
            }
        }
        (ReadOutcome::Progress, bytes)
    }

    /// Write pending output, at most `budget` bytes this call. `finishing`:
    /// the exchange is over, so once the output is out TLS adds its
    /// `close_notify` (the connection may only leave the open states after
    /// it has gone out).
    pub fn flush(&mut self, out: &mut Output, budget: u64, finishing: bool) -> Flushed {
        let fd = self.stream.as_raw_fd();
        let mut done = Flushed::default();
        if let Some(tls) = self.tls.as_mut() {
            match tls.send(fd, out, budget) {
                Ok(sent) => {
                    done.bytes = sent.bytes as u64;
                    if sent.blocked {
                        self.writable = false;
                    } else if finishing && out.is_empty() && !tls.is_closed() {
                        tls.close_notify();
                        match tls.flush(fd) {
                            Ok(f) => {
                                done.bytes += f.bytes as u64;
                                self.writable = f.all_out;
                            }
                            Err(_) => self.failed = true,
                        }
                    }
                }
                // A file that failed to read, or a socket that failed: the
                // response cannot be completed either way.
                Err(_) => {
                    self.failed = true;
                    self.writable = false;
                }
            }
            return done;
        }
        while self.writable && done.bytes < budget {
            let (want, from_file, result) = match out.front() {
                None => break,
                Some(Seg::Mem { buf, pos }) => {
                    let more = matches!(out.second(), Some(Seg::File { .. }));
                    let chunk = &buf[*pos..];
                    (chunk.len() as u64, false, sys::send(fd, chunk, more))
                }
                Some(Seg::File { file, off, end }) => {
                    let want = (end - off).min(budget - done.bytes);
                    (want, true, sys::sendfile(fd, file, *off, want))
                }
            };
            match result {
                Ok(0) if want > 0 && from_file => {
                    // `sendfile` returns 0 only at the end of the file: the
                    // file shrank, and no writable edge will ever follow.
                    done.truncated = true;
                    break;
                }
                Ok(n) => {
                    out.advance(n as u64);
                    done.bytes += n as u64;
                    if (n as u64) < want && !from_file {
                        // A short send on a non-blocking socket: its buffer
                        // is full, and a writable edge will follow. Not so
                        // for `sendfile`, which also stops short when a
                        // signal arrives while it reads the file: only
                        // WouldBlock proves the socket full there.
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
        done
    }

    fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

/// A closing socket: read and discard only.
pub struct ReadOnly {
    sock: Sock,
    /// Bytes discarded since the close began (bounded by
    /// `LINGER_MAX_BYTES`).
    pub drained: u64,
}

impl ReadOnly {
    /// Stop writing but keep the write half open (the client is expected
    /// to close first). The read state carries over: `readable`, and an EOF
    /// already read, which must close the socket rather than wait for an
    /// edge that will not come.
    pub fn keep(mut sock: Sock) -> ReadOnly {
        sock.close_transport();
        sock.tls = None;
        ReadOnly { sock, drained: 0 }
    }

    /// Shut the write half: the client sees our FIN after every byte we
    /// wrote, and its late requests meet a socket that still reads. A
    /// socket already drained gets a new edge when the client's next bytes
    /// or FIN arrive, so `readable` carries over as it is.
    pub fn shut(mut sock: Sock) -> ReadOnly {
        sock.close_transport();
        sock.tls = None;
        sock.failed |= sock.stream.shutdown(Shutdown::Write).is_err();
        ReadOnly { sock, drained: 0 }
    }

    /// `AwaitFin` to `Lingering`: the grace is over, shut the write half.
    pub fn shut_write(self) -> ReadOnly {
        let drained = self.drained;
        ReadOnly { drained, ..ReadOnly::shut(self.sock) }
    }

    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.sock.stream
    }

    pub fn mark_readable(&mut self, fin_queued: bool) {
        self.sock.mark_readable(fin_queued);
    }

    pub fn readable(&self) -> bool {
        self.sock.readable
    }

    pub fn eof(&self) -> bool {
        self.sock.eof
    }

    pub fn failed(&self) -> bool {
        self.sock.failed
    }

    /// Whether the next turn has anything to do for this socket: a drained
    /// one waits for its next edge instead of costing a read that finds
    /// nothing.
    pub fn needs_turn(&self) -> bool {
        self.sock.readable || self.sock.failed || self.sock.eof
    }

    /// Read and discard, up to `budget` bytes.
    pub fn drain(&mut self, scratch: &mut [u8], budget: usize) -> ReadOutcome {
        let (outcome, bytes) = self.sock.discard(scratch, budget);
        self.drained += bytes;
        outcome
    }

    /// Send a short answer on a socket that is about to be shut (a refusal
    /// at the door, an eviction notice). A fresh or idle socket's send
    /// buffer is empty, so the answer fits; if it does not, the rest is
    /// dropped rather than block. Returns whether it all went out.
    pub fn last_words(sock: &Sock, answer: &[u8]) -> bool {
        matches!(sys::send(sock.fd(), answer, false), Ok(n) if n == answer.len())
    }
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
    use crate::pool::BufPool;

    /// A connection whose client wrote its request and its FIN before the
    /// first event: the event says both, and a short read must not end the
    /// reading, since no further edge will announce the EOF.
    #[test]
    fn fin_announced_by_the_event_is_read_after_a_short_read() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (sock, _) = listener.accept().unwrap();
        sock.set_nonblocking(true).unwrap();
        client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        client.shutdown(Shutdown::Write).unwrap();

        let mut sock = Sock::new(TcpStream::from_std(sock), None);
        let mut pool = BufPool::new(1024, 1);
        let mut bufs = pool.take();
        sock.mark_readable(true);
        // Blocking-free but bounded: the bytes are on loopback already, yet
        // give the kernel a few tries to have queued them.
        let mut got = 0;
        for _ in 0..1000 {
            sock.read_input(&mut bufs, 1024);
            got = bufs.input.len();
            if got > 0 {
                break;
            }
            sock.readable = true;
            std::thread::yield_now();
        }
        assert!(got > 0, "request read");
        assert!(sock.readable, "short read with the FIN queued: keep reading");
        for _ in 0..1000 {
            if sock.eof {
                break;
            }
            sock.read_input(&mut bufs, 1024);
            std::thread::yield_now();
        }
        assert!(sock.eof, "the EOF is read without a new edge");
    }
}
