//! A linger server inside the test process, driven turn by turn on a
//! manual clock: timeouts are tested by moving the clock, never by
//! sleeping. Clients are non-blocking sockets on 127.0.0.1, read between
//! turns; every wait is a bounded number of turns.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, UNIX_EPOCH};

use linger::clock::Clock;
use linger::config::{self, Command};
use linger::server::Server;
use linger::status::Gauges;

use super::{Reader, Response};

/// Turns any one wait may take. A turn polls for at most a millisecond of
/// real time (only so that the kernel can move loopback bytes), so a wait
/// is bounded in real time too.
const TURNS: usize = 3000;

/// The wall clock at the server's start: half a second into a second, so
/// when `Date` turns is known.
pub const WALL_AT_START_MS: u64 = 1_800_000_000_500;

pub struct Driven {
    pub server: Server,
    /// The loop clock, milliseconds since start.
    pub now: u64,
}

impl Driven {
    /// A server on 127.0.0.1:0 with these flags, its clock at 0.
    pub fn start(args: &[&str]) -> Driven {
        let mut all = vec!["--listen".to_string(), "127.0.0.1:0".to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        let Ok(Command::Run(cfg)) = config::parse(&all) else { panic!("bad flags {args:?}") };
        let wall = UNIX_EPOCH + Duration::from_millis(WALL_AT_START_MS);
        let server = Server::with_clock(*cfg, Clock::manual(wall)).expect("server starts");
        Driven { server, now: 0 }
    }

    pub fn connect(&mut self) -> Client {
        let sock = TcpStream::connect(self.server.local_addr()).expect("connect");
        sock.set_nonblocking(true).unwrap();
        self.turn();
        Client { sock, buf: Vec::new(), eof: None }
    }

    /// One turn of the loop at the current clock.
    pub fn turn(&mut self) {
        self.server.turn(Some(Duration::from_millis(1))).expect("turn");
    }

    /// Move the clock forward by `ms`, then take a few turns (what the
    /// timers did is then written out and read by the clients).
    pub fn advance(&mut self, ms: u64) {
        self.now += ms;
        self.server.set_clock(self.now);
        for _ in 0..3 {
            self.turn();
        }
    }

    /// Turn until `done` says so (bounded).
    pub fn until(&mut self, what: &str, mut done: impl FnMut(&mut Driven) -> bool) {
        for _ in 0..TURNS {
            if done(self) {
                return;
            }
            self.turn();
        }
        panic!("{what}: not within {TURNS} turns; gauges {:?}", self.gauges());
    }

    /// A client writes `bytes` (all of them: the loop turns while the
    /// socket is full).
    pub fn send(&mut self, c: &mut Client, mut bytes: &[u8]) {
        for _ in 0..TURNS {
            match c.sock.write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("write: {e}"),
            }
            self.turn();
            if bytes.is_empty() {
                return;
            }
        }
        panic!("could not send within {TURNS} turns");
    }

    /// Turn until a whole response has arrived on `c`.
    pub fn response(&mut self, c: &mut Client) -> Response {
        self.try_response(c).unwrap_or_else(|| panic!("no response; received {:?}", String::from_utf8_lossy(&c.buf)))
    }

    /// Send `request` on `c` and turn until its response arrives.
    pub fn response_to(&mut self, c: &mut Client, request: &[u8]) -> Response {
        self.send(c, request);
        self.response(c)
    }

    /// Turn until a whole response arrives on `c`, or `c` sees EOF.
    pub fn try_response(&mut self, c: &mut Client) -> Option<Response> {
        for _ in 0..TURNS {
            c.pump();
            if let Some(r) = c.parse(false) {
                return Some(r);
            }
            if c.eof.is_some() {
                return None;
            }
            self.turn();
        }
        panic!("neither a response nor EOF within {TURNS} turns");
    }

    /// Turn until `c` sees the end of the stream: what arrived before it,
    /// and whether it was a clean EOF.
    pub fn eof(&mut self, c: &mut Client) -> (Vec<u8>, io::Result<()>) {
        self.until("the end of the stream", |_| {
            c.pump();
            c.eof.is_some()
        });
        let end = match c.eof.take() {
            Some(Ok(())) => Ok(()),
            Some(Err(kind)) => Err(kind.into()),
            None => unreachable!("waited for it"),
        };
        (std::mem::take(&mut c.buf), end)
    }

    /// Whether `c` has seen nothing more after a few turns.
    pub fn silent(&mut self, c: &mut Client) -> bool {
        for _ in 0..3 {
            self.turn();
        }
        c.pump();
        c.buf.is_empty() && c.eof.is_none()
    }

    pub fn gauges(&self) -> Gauges {
        self.server.gauges()
    }
}

/// A non-blocking client socket and what it has received.
pub struct Client {
    pub sock: TcpStream,
    pub buf: Vec<u8>,
    /// How the stream ended, once it has: a clean EOF, or an error kind.
    eof: Option<Result<(), ErrorKind>>,
}

impl Client {
    /// Read everything available now.
    pub fn pump(&mut self) {
        let mut chunk = [0u8; 65536];
        while self.eof.is_none() {
            match self.sock.read(&mut chunk) {
                Ok(0) => self.eof = Some(Ok(())),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => self.eof = Some(Err(e.kind())),
            }
        }
    }

    /// A whole response at the front of what arrived, taken off it.
    fn parse(&mut self, head_request: bool) -> Option<Response> {
        let mut rest: &[u8] = &self.buf;
        let mut rd = Reader::new();
        let resp = rd.response(&mut rest, head_request).ok()?;
        let consumed = self.buf.len() - rest.len() - rd.leftover().len();
        self.buf.drain(..consumed);
        Some(resp)
    }

    /// The head of a streamed response, once it has arrived.
    pub fn take_head(&mut self) -> Option<Response> {
        let mut rest: &[u8] = &self.buf;
        let mut rd = Reader::new();
        let resp = rd.response_head(&mut rest).ok()?;
        let consumed = self.buf.len() - rest.len() - rd.leftover().len();
        self.buf.drain(..consumed);
        Some(resp)
    }
}
