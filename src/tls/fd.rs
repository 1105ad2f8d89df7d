//! A raw non-blocking socket descriptor as the `Read` and `Write` that
//! rustls's `read_tls` and `write_tls` want, remembering what the last call
//! asked for and got, so the session can apply the edge-triggered rule of
//! `conn.rs`: a short read or write means the kernel has nothing more (or
//! no more room) and a new edge will come.
//!
//! It does not own the descriptor: the connection record does.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::RawFd;

/// How many of a connection's first bytes are kept for sniffing (see
/// `sniff`): enough for the longest method token we recognise and its space.
pub const FIRST_BYTES: usize = 24;

/// The first bytes the peer sent, copied as rustls reads them.
#[derive(Default)]
pub struct FirstBytes {
    pub bytes: [u8; FIRST_BYTES],
    pub len: u8,
}

impl FirstBytes {
    pub fn get(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    fn keep(&mut self, read: &[u8]) {
        let have = usize::from(self.len);
        let n = read.len().min(FIRST_BYTES - have);
        self.bytes[have..have + n].copy_from_slice(&read[..n]);
        // n <= FIRST_BYTES, which fits in a u8.
        self.len += n as u8;
    }
}

pub struct Fd<'a> {
    fd: RawFd,
    /// Bytes the last call asked for and moved.
    pub asked: usize,
    pub moved: usize,
    /// The last error came from the kernel (a `WouldBlock` too), not from
    /// rustls's own checks, which fail without calling us.
    pub kernel_error: bool,
    /// While sniffing, the bytes read are also copied here.
    first: Option<&'a mut FirstBytes>,
}

impl<'a> Fd<'a> {
    pub fn new(fd: RawFd, first: Option<&'a mut FirstBytes>) -> Fd<'a> {
        Fd { fd, asked: 0, moved: 0, kernel_error: false, first }
    }

    /// The last call moved less than it asked: on a stream socket the
    /// receive queue is empty (or the send buffer full) for now.
    pub fn short(&self) -> bool {
        self.moved < self.asked
    }

    fn record(&mut self, asked: usize, rc: isize) -> io::Result<usize> {
        self.asked = asked;
        if rc >= 0 {
            self.moved = rc as usize;
            Ok(self.moved)
        } else {
            self.moved = 0;
            let e = io::Error::last_os_error();
            self.kernel_error = true;
            Err(e)
        }
    }
}

impl Read for Fd<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: read(2) writes at most `buf.len()` bytes into a live
            // slice we hold exclusively for the call.
            let rc = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            match self.record(buf.len(), rc) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(n) => {
                    if let Some(first) = self.first.as_deref_mut() {
                        first.keep(&buf[..n]);
                    }
                    return Ok(n);
                }
                other => return other,
            }
        }
    }
}

/// `MSG_NOSIGNAL`: a peer that reset the connection is an `EPIPE` return,
/// never a signal. Elsewhere the server ignores `SIGPIPE` itself
/// (`sys::shutdown_signals`).
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd", target_os = "dragonfly"))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd", target_os = "dragonfly")))]
const SEND_FLAGS: libc::c_int = 0;

/// rustls hands over at most 64 queued records per `write_tls`; the kernel
/// takes at most `IOV_MAX` (1024 on Linux and the BSDs) in one call.
const MAX_IOV: usize = 64;

impl Write for Fd<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    /// One `sendmsg` for every record rustls has queued: a response and its
    /// TLS records leave in one system call, as the plain path's one write.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let bufs = &bufs[..bufs.len().min(MAX_IOV)];
        let asked = bufs.iter().map(|b| b.len()).sum();
        loop {
            // SAFETY: a zeroed msghdr is valid (no name, no control data);
            // IoSlice is ABI-compatible with iovec on Unix, and the slices
            // outlive the call.
            let rc = unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
                msg.msg_iovlen = bufs.len() as _;
                libc::sendmsg(self.fd, &msg, SEND_FLAGS)
            };
            match self.record(asked, rc) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn first_bytes_stop_at_the_window() {
        let mut first = FirstBytes::default();
        first.keep(b"GET / HTTP/1.1\r\n");
        first.keep(b"Host: example.test\r\n\r\n");
        assert_eq!(first.get().len(), FIRST_BYTES);
        assert_eq!(first.get(), b"GET / HTTP/1.1\r\nHost: ex");
    }

    #[test]
    fn short_reads_and_would_block_are_told_apart() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let mut first = FirstBytes::default();
        let mut fd = Fd::new(server.as_raw_fd(), Some(&mut first));
        let mut buf = [0u8; 64];
        let e = fd.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(fd.kernel_error);
        client.write_all(b"hello").unwrap();
        let mut got = 0;
        for _ in 0..1000 {
            match fd.read(&mut buf) {
                Ok(n) => {
                    got = n;
                    break;
                }
                Err(_) => std::thread::yield_now(),
            }
        }
        assert_eq!(got, 5);
        assert!(fd.short());
        assert_eq!(first.get(), b"hello");

        let mut fd = Fd::new(server.as_raw_fd(), None);
        let n = fd.write_vectored(&[IoSlice::new(b"ab"), IoSlice::new(b"cd")]).unwrap();
        assert_eq!(n, 4);
        assert!(!fd.short());
        let mut back = [0u8; 4];
        client.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"abcd");
    }
}
