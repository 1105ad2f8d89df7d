//! HTTPS: TLS terminated inside the loop with rustls's sans-IO
//! `ServerConnection` (crypto by *ring*). No threads, no async runtime:
//! the loop's read and flush phases drive it over the raw socket, and the
//! scheduler, the quantum, back-pressure and the HTTP core see plaintext
//! only.
//!
//! - `config`: PEM files to a rustls `ServerConfig`; `reload` on SIGHUP.
//! - `session`: one connection's TLS, bounded per call like `conn.rs`.
//! - `sniff`: plain HTTP sent to the TLS port gets a `400` in the clear.
//! - `outcome`: what the session's calls report.
//! - `fd`: the raw descriptor as the `Read`/`Write` rustls drives.
//!
//! # Driving a session from the loop (edge-triggered)
//!
//! Keep the session boxed in the connection record (`size_of` is about
//! 1.2 KiB) beside the plain path's flags: `readable`, `writable`,
//! `fin_queued`, `peer_eof`, `failed`. Accept: `TlsSession::new(cfg.
//! server_config())`, `readable = writable = true`, header timer running:
//! the handshake counts against `--header-timeout` (`TlsRead::handshaking`).
//!
//! Read phase, when `readable` (or re-queued), and the output is under its
//! high-water mark: compact the input, then
//! `read(fd, &mut input, capacity, fin_queued)`:
//! - `drained` → `readable = false` (a new edge will come).
//! - not drained, no end → re-queue (budget or full input), as
//!   `ReadOutcome::Budget`/`Full`; `more_plaintext` → re-queue once the
//!   serve phase has consumed input, without an edge.
//! - `peer_eof` or `close_notify` → the plain path's `peer_eof`: no more
//!   requests. On TLS 1.3 answer what is owed, then close; when
//!   `reply_close_notify_at_once()` (TLS 1.2, RFC 5246 §7.2.1) close now.
//! - `plain_http` → never flush the session (nothing is queued in it):
//!   drop it and go on as a plain connection that has answered with
//!   `sniff::plain_http_response` queued in its output (written by the
//!   plain flush) and closes server-first (shut the write half, drain).
//! - `fatal: Tls` → flush (an alert may be queued), then close server-first.
//!   `fatal: Socket` → drop the connection.
//! - then, if `wants_write()` (handshake flights, tickets, key-update
//!   answers, alerts), flush it in this turn's flush phase even with no
//!   response pending.
//!
//! Flush phase, when `writable`: `send(fd, &mut out, WRITE_BUDGET)`, or
//! `write` and `flush` in turn. `Sent::blocked` (or `!Flushed::all_out`) →
//! `writable = false`, wait for the edge under the send timeout; budget
//! spent with output left → re-queue; `Err` → abort (a file failed to
//! read: never send a short body). "Output pending" for settle, eviction and
//! the memory budget is `!out.is_empty() || session.wants_write()`.
//!
//! Close (every server-decided close, the client-first close, eviction,
//! the request cap, shutdown): only once the output is written,
//! `close_notify()` then `flush` until `all_out` (re-queue or wait for
//! `writable` as above, the connection stays `Open` meanwhile, bounded by
//! the send timeout). Then leave `Open` as today: `AwaitFin` (the client's
//! FIN comes first; over TLS our `close_notify` has already told it we are
//! done) or `Lingering` (`shutdown(Write)`, drain). The closing sides read
//! and discard raw ciphertext, the peer's `close_notify` included; the
//! session can be dropped on leaving `Open`, so nothing can be written
//! after `close_notify` (`write` is a no-op by then anyway). No
//! `SO_LINGER`.
//!
//! Idle (keep-alive, nothing pending): the session holds no plaintext
//! buffer and no record, but rustls keeps its 4 KiB read buffer and the
//! traffic keys: about 6.2 KiB of heap plus the 1.2 KiB box.

pub mod config;
pub mod fd;
pub mod outcome;
pub mod session;
pub mod sniff;

pub use config::TlsConfig;
pub use outcome::{Fatal, Flushed, Sent, TlsRead};
pub use session::TlsSession;

#[cfg(test)]
mod memory_tests;
#[cfg(test)]
mod openssl_tests;
#[cfg(test)]
mod session_tests;
#[cfg(test)]
mod testkit;
