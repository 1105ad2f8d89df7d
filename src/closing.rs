//! The closing path beyond a single connection's mechanics (those are in
//! `conn` and `transition.rs`): the bound on closing connections, the
//! graceful shutdown of the whole server, and the refusal of a socket that
//! never got a slot.
//!
//! Seed 000 and Gettys & Freier §8: whenever the server closes while the
//! client may still send, it writes what it owes, shuts the write half, and
//! reads until EOF or a timeout. `SO_LINGER` is never set.

use std::net::Shutdown;

use log::info;
use mio::net::TcpStream;

use crate::conn::{Kind, Sock};
use crate::policy::DRAIN_BUDGET;
use crate::server::Server;
use crate::session::SubEnd;

impl Server {
    /// Closing connections are bounded too: past the bound, the one that
    /// has drained longest is closed outright.
    pub(crate) fn make_closing_room(&mut self) {
        if self.closing() >= self.budget.closing
            && let Some(oldest) = self.timers.front(Kind::Lingering).or_else(|| self.timers.front(Kind::AwaitFin))
        {
            self.set_state(oldest, Kind::Closed, false);
        }
    }

    /// SIGTERM or SIGINT: accept what waits in the backlog (it is answered
    /// with `Connection: close`), stop accepting, answer held long polls,
    /// end streams, close idle connections with the handshake, and let
    /// in-flight exchanges finish (their responses say `Connection: close`).
    pub fn shutdown(&mut self) {
        if self.draining.is_some() {
            return;
        }
        info!("shutting down: {} connections to finish", self.conns.len());
        crate::systemd::notify(self.notifier.stopping(), "STOPPING=1");
        self.draining = Some(self.now + self.cfg.shutdown_timeout.as_millis() as u64);
        self.service.set_draining();
        // Clients already in the backlog connected before we stopped: they
        // get their answer rather than a reset when the listeners close.
        self.listeners.mark_all_ready();
        self.accept_phase();
        self.listeners.close(self.poll.registry());
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let Some(conn) = self.conns.get(key) else { continue };
            match conn.kind() {
                // A publish waiting for the broker is answered as it comes.
                Kind::Held if self.awaits_broker(key) => {}
                Kind::Held | Kind::Streaming => self.end_sub(key, SubEnd::Shed),
                Kind::Idle | Kind::Reading => {
                    let open = conn.state.open();
                    let quiet = open.is_some_and(|o| !o.session.request_under_way());
                    if quiet && !conn.in_runq && !conn.state.input_waiting() {
                        self.set_state(key, Kind::Lingering, false);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Answer a socket that never got a slot, then close it without a reset:
/// shut the write half, read what the client already sent (unread bytes at
/// close would make the kernel send a reset, which can destroy the answer
/// before the client reads it), then close. Used when descriptors have run
/// out, so the socket cannot linger in a slot of its own.
pub fn close_after(stream: TcpStream, answer: &[u8], scratch: &mut [u8]) {
    let mut sock = Sock::new(stream, None);
    if !answer.is_empty() {
        crate::conn::ReadOnly::last_words(&sock, answer);
    }
    let _ = sock.stream_mut().shutdown(Shutdown::Write);
    sock.discard(scratch, DRAIN_BUDGET);
}
