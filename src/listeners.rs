//! The listening sockets: bound from the command line (`--listen`,
//! `--tls-listen`, each repeatable), or handed over already bound (systemd
//! socket activation, a supervisor's workers). Each is plain or TLS; each
//! is one poll token, and one bit of the accept mask that remembers which
//! ones an edge said have connections waiting.

use std::io;
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::config::{Config, MAX_LISTENERS};
use crate::sys;

/// A bound, listening socket, before it joins a loop.
pub struct Bound {
    pub listener: std::net::TcpListener,
    pub tls: bool,
}

/// Bind every listener the configuration names. Returns them with the
/// backlog the kernel will really use (Linux caps it at `somaxconn`).
pub fn bind_all(cfg: &Config) -> io::Result<(Vec<Bound>, u32)> {
    let mut bound = Vec::new();
    let mut backlog = cfg.backlog;
    let plain = cfg.listen.iter().map(|a| (a, false));
    for (&addr, tls) in plain.chain(cfg.tls_listen.iter().map(|a| (a, true))) {
        let (listener, effective) =
            sys::listen(addr, cfg.backlog).map_err(|e| io::Error::new(e.kind(), format!("{addr}: {e}")))?;
        backlog = effective;
        bound.push(Bound { listener, tls });
    }
    Ok((bound, backlog))
}

struct Listener {
    sock: TcpListener,
    addr: SocketAddr,
    tls: bool,
}

pub struct Listeners {
    list: Vec<Listener>,
    /// Bit `i`: listener `i` may have connections waiting.
    ready: u64,
    /// Every listener passes `TCP_NODELAY` on to accepted sockets (Linux),
    /// saving a system call per connection.
    pub inherited_nodelay: bool,
}

/// The poll token of listener `i`; the highest tokens, far above any slab
/// key (`usize::MAX` itself is the signal pipe's).
pub fn token(i: usize) -> Token {
    Token(usize::MAX - 1 - i)
}

/// Which listener a token names, if any.
pub fn index_of(token: Token) -> Option<usize> {
    let i = (usize::MAX - 1).checked_sub(token.0)?;
    (i < MAX_LISTENERS).then_some(i)
}

impl Listeners {
    /// Take the bound sockets into the loop's poll. Each starts ready: an
    /// inherited listener may already have connections waiting.
    pub fn register(bound: Vec<Bound>, registry: &Registry) -> io::Result<Listeners> {
        let mut list = Vec::with_capacity(bound.len());
        let mut inherited_nodelay = true;
        for (i, b) in bound.into_iter().take(MAX_LISTENERS).enumerate() {
            b.listener.set_nonblocking(true)?;
            inherited_nodelay &= sys::nodelay_listener(&b.listener);
            let mut sock = TcpListener::from_std(b.listener);
            let addr = sock.local_addr()?;
            registry.register(&mut sock, token(i), Interest::READABLE)?;
            list.push(Listener { sock, addr, tls: b.tls });
        }
        let ready = if list.len() == 64 { u64::MAX } else { (1u64 << list.len()) - 1 };
        Ok(Listeners { list, ready, inherited_nodelay })
    }

    /// Each listener's address (the real port when 0 was asked) and
    /// whether it speaks TLS.
    pub fn addrs(&self) -> Vec<(SocketAddr, bool)> {
        self.list.iter().map(|l| (l.addr, l.tls)).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn mark_ready(&mut self, i: usize) {
        if i < self.list.len() {
            self.ready |= 1 << i;
        }
    }

    /// Look at every listener again (a descriptor freed up, or shutdown
    /// takes in what waits in the backlogs).
    pub fn mark_all_ready(&mut self) {
        for i in 0..self.list.len() {
            self.ready |= 1 << i;
        }
    }

    /// Whether any listener may have connections waiting.
    pub fn any_ready(&self) -> bool {
        self.ready != 0 && !self.list.is_empty()
    }

    /// The first listener that may have connections waiting.
    pub fn next_ready(&self) -> Option<usize> {
        (self.ready != 0).then(|| self.ready.trailing_zeros() as usize).filter(|&i| i < self.list.len())
    }

    /// Listener `i` has nothing more waiting (WouldBlock).
    pub fn drained(&mut self, i: usize) {
        self.ready &= !(1 << i);
    }

    /// Stop accepting on every listener for now (descriptors ran out).
    pub fn pause(&mut self) {
        self.ready = 0;
    }

    /// Accept a connection on listener `i`: the socket, its peer, and
    /// whether it is to speak TLS.
    pub fn accept(&self, i: usize) -> io::Result<(TcpStream, SocketAddr, bool)> {
        let l = self.list.get(i).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let (sock, peer) = l.sock.accept()?;
        Ok((sock, peer, l.tls))
    }

    /// Close every listener (shutdown): new clients are refused by the
    /// kernel from now on.
    pub fn close(&mut self, registry: &Registry) {
        for mut l in self.list.drain(..) {
            let _ = registry.deregister(&mut l.sock);
        }
        self.ready = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_indexes_round_trip_above_every_slab_key() {
        for i in 0..MAX_LISTENERS {
            assert_eq!(index_of(token(i)), Some(i));
        }
        assert_eq!(index_of(Token(usize::MAX)), None, "the signal pipe");
        assert_eq!(index_of(Token(7)), None, "a connection");
    }
}
