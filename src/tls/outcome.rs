//! What `TlsSession`'s calls report to the loop: the read side's ends and
//! edges, what a flush left, what went wrong for good.

use std::io;

/// What went wrong for good.
#[derive(Debug)]
pub enum Fatal {
    /// The peer broke the protocol (or offered nothing we speak). rustls
    /// has queued an alert when the error calls for one: `flush` it, then
    /// close (shut the write half and drain).
    Tls(rustls::Error),
    /// The socket failed (reset, ...): nothing more can be sent; drop it.
    Socket(io::Error),
}

/// What one `read` call did and found.
#[derive(Debug, Default)]
pub struct TlsRead {
    /// Plaintext bytes appended to the input.
    pub added: usize,
    /// The socket gave `WouldBlock` or a short read (and no FIN was queued,
    /// see `read`): its next bytes come with a new readable edge. Call
    /// `read` again without waiting for one when this is false and no end
    /// below is set (the budget ran out, or the input reached its limit),
    /// and when `more_plaintext` is set, once the input has room.
    pub drained: bool,
    /// The input reached `limit` with plaintext still inside rustls:
    /// back-pressure; read again once the input has room.
    pub more_plaintext: bool,
    /// The peer's TCP FIN was read. Without a `close_notify` before it the
    /// stream may have been truncated (RFC 8446 §6.1); for HTTP/1.1 a
    /// request cut short is incomplete either way, so treat it as the
    /// plain path's EOF.
    pub peer_eof: bool,
    /// The peer's `close_notify` has arrived (now or earlier): it sends no
    /// more (RFC 8446 §6.1: data after it is ignored). The plaintext before
    /// it has been delivered (or waits, see `more_plaintext`). Treat as the
    /// plain path's EOF; see `TlsSession::reply_close_notify_at_once`.
    pub close_notify: bool,
    /// The first bytes were an HTTP request line, not TLS: nothing was
    /// given to rustls and no alert is queued. Do not `flush`; answer
    /// `sniff::plain_http_response` on the socket in the clear, then close
    /// server-first (shut the write half, drain).
    pub plain_http: bool,
    /// Reported by the call that met it; later calls read nothing more.
    pub fatal: Option<Fatal>,
    /// The handshake is not finished yet (it counts against the header
    /// timeout, like a slow head).
    pub handshaking: bool,
}

/// What one `flush` call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Ciphertext bytes written to the socket.
    pub bytes: usize,
    /// Nothing is left in rustls. When false the socket's send buffer is
    /// full (`WouldBlock` or a short write): wait for the writable edge.
    pub all_out: bool,
}

/// What one `send` call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Plaintext bytes taken from the `Output`.
    pub plaintext: u64,
    /// Ciphertext bytes written to the socket.
    pub bytes: usize,
    /// The socket is full: wait for the writable edge.
    pub blocked: bool,
}
