//! The pure protocol core. Nothing here sees a socket, the slab, mio or the
//! clock: bytes and the time go in, response bytes and decisions come out,
//! so every state is testable with byte strings (see `service` for the
//! request-to-response step built on these pieces).

pub mod body;
pub mod output;
pub mod parse;
pub mod reply;
pub mod wellformed;

pub use body::BodyDecoder;
pub use output::Output;
pub use parse::{BodyLength, Head, Method, Parsed, Reject, Version};
pub use reply::{Persist, Status};

/// How a connection whose exchange is over should be closed. The choice
/// follows from who decided to close and how the last response is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseKind {
    /// An HTTP/1.1 client asked to close (`Connection: close`) and the last
    /// response is length-delimited: let the client close first so
    /// TIME_WAIT lands on its side (Gettys & Freier §7), then fall back to
    /// shutdown-and-drain.
    ClientFirst,
    /// The server decided (error, request cap, leftovers), or an HTTP/1.0
    /// client did not ask to keep the connection: shut the write half now
    /// and drain (seed 000, Gettys & Freier §8).
    ServerFirst,
}

impl CloseKind {
    /// The close a client's own request called for. An HTTP/1.1 client
    /// that says `close` must close after reading the response (RFC 9112
    /// §9.6), so waiting for it costs nothing. An HTTP/1.0 client may take
    /// the server's close as the end of the body (RFC 1945 §7.2.2) even
    /// when a length is given, and tools do (ApacheBench without `-k`
    /// reads until EOF): waiting for its FIN would stall every such
    /// exchange for the whole grace period, so the server closes first.
    pub fn asked_by_client(version: Version) -> CloseKind {
        match version {
            Version::Http11 => CloseKind::ClientFirst,
            Version::Http10 => CloseKind::ServerFirst,
        }
    }
}

/// Where one connection's request stream stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Reading {
    /// Expecting the next request head.
    Head,
    /// Inside a request body nobody consumes: decoded and dropped before
    /// the request is answered, so a malformed body gets its `400` instead
    /// of a response that promised to keep the connection.
    Discard(Box<Discarding>),
    /// Inside a request body kept for the application (a publish); the
    /// response is written when the body is complete.
    Collect(Box<Collecting>),
    /// No further request will be read; close once the output has drained.
    Done(CloseKind),
}

/// A body being read and dropped, and the head to answer once it is over.
#[derive(Debug, PartialEq, Eq)]
pub struct Discarding {
    pub decoder: BodyDecoder,
    /// Body bytes still allowed (`--max-body-bytes`).
    pub left: u64,
    /// The request head, kept as sent: parsed again and answered when the
    /// body is complete (heads are short, and bodies nobody reads rare).
    pub head: Box<[u8]>,
}

/// A body being kept, and what its request's response will need.
#[derive(Debug, PartialEq, Eq)]
pub struct Collecting {
    pub decoder: BodyDecoder,
    pub body: Vec<u8>,
    pub limit: usize,
    /// What the body is for (the channel name of a publish).
    pub target: Box<str>,
    pub persist: Persist,
    /// The connection closes after the response (decided with the head).
    pub close_after: Option<CloseKind>,
    /// For the access log.
    pub request_line: Box<str>,
    /// For the combined access log format (kept only when it is in use).
    pub referer: Option<Box<[u8]>>,
    pub user_agent: Option<Box<[u8]>>,
    /// The CORS field lines its response carries (`cors.rs`).
    pub cors: Option<std::rc::Rc<[u8]>>,
}

/// The per-connection protocol state: lives as long as the connection,
/// small enough to keep in every connection record.
#[derive(Debug)]
pub struct Proto {
    pub served: u32,
    pub reading: Reading,
}

impl Proto {
    pub fn new() -> Proto {
        Proto { served: 0, reading: Reading::Head }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.reading, Reading::Done(_))
    }

    pub fn close_kind(&self) -> Option<CloseKind> {
        match self.reading {
            Reading::Done(kind) => Some(kind),
            _ => None,
        }
    }

    /// Stop reading requests. A server-side reason wins over a client one.
    pub fn finish(&mut self, kind: CloseKind) {
        self.reading = match self.reading {
            Reading::Done(CloseKind::ServerFirst) => Reading::Done(CloseKind::ServerFirst),
            _ => Reading::Done(kind),
        };
    }
}

impl Default for Proto {
    fn default() -> Self {
        Proto::new()
    }
}

/// Writes one response into the output: the head with the fields every
/// response carries, then the body unless the request was HEAD.
pub struct Reply<'a> {
    pub out: &'a mut Output,
    pub date: &'a [u8; 29],
    pub persist: Persist,
    pub head_only: bool,
    /// Body bytes queued, for the access log.
    pub body_bytes: u64,
    pub status: Status,
    /// Field lines every head written through this reply carries (CORS on
    /// channel routes, `cors.rs`); `None` elsewhere.
    pub cors: Option<std::rc::Rc<[u8]>>,
}

impl<'a> Reply<'a> {
    pub fn new(out: &'a mut Output, date: &'a [u8; 29], persist: Persist, head_only: bool) -> Reply<'a> {
        Reply { out, date, persist, head_only, body_bytes: 0, status: Status::OK, cors: None }
    }

    /// Status line, `Server`, `Date`; returns the buffer for more fields.
    pub fn start(&mut self, status: Status) -> &mut Vec<u8> {
        self.status = status;
        let buf = self.out.bytes();
        reply::start(buf, status, self.date);
        if let Some(cors) = &self.cors {
            buf.extend_from_slice(cors);
        }
        buf
    }

    /// `Content-Length`, persistence fields and the blank line.
    pub fn end_head(&mut self, content_length: u64) {
        let persist = self.persist;
        let buf = self.out.bytes();
        reply::content_length(buf, content_length);
        reply::persist(buf, persist);
        reply::end(buf);
    }

    /// End a head whose framing the caller wrote (chunked, close-delimited,
    /// or a 304 with none).
    pub fn end_head_framed(&mut self) {
        let persist = self.persist;
        let buf = self.out.bytes();
        reply::persist(buf, persist);
        reply::end(buf);
    }

    pub fn body(&mut self, data: &[u8]) {
        if !self.head_only {
            self.out.bytes().extend_from_slice(data);
            self.body_bytes += data.len() as u64;
        }
    }

    pub fn body_file(&mut self, file: std::rc::Rc<std::fs::File>, off: u64, len: u64) {
        if !self.head_only {
            self.out.file(file, off, len);
            self.body_bytes += len;
        }
    }

    /// A complete short response: `extra` holds ready field lines.
    pub fn simple(&mut self, status: Status, extra: &[u8]) {
        self.status = status;
        let send_body = !self.head_only;
        match &self.cors {
            None => reply::simple(self.out.bytes(), status, self.date, self.persist, extra, send_body),
            Some(cors) => {
                // Channel routes only: not worth a second signature.
                let fields = [cors, extra].concat();
                reply::simple(self.out.bytes(), status, self.date, self.persist, &fields, send_body);
            }
        }
        if send_body && !status.has_no_body() {
            self.body_bytes = status.reason().len() as u64 + 5;
        }
    }
}
