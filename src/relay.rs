//! The broker connection inside the loop (`--broker`; DESIGN.md, "Sockets
//! that are not clients"): one more non-blocking socket in the same poll,
//! read in the turn's broker phase and written after the deliver phase,
//! reconnected on its own timer with back-off. Messages it brings go
//! through each channel's `ChannelOrder` (exactly once, in id order) into
//! the channel's history and the same deliver phase as a local publish.
//! The protocol is `broker::Link`'s (sans-IO); this file moves its bytes.
//!
//! While Redis is away: publishes get `503` with `Retry-After` (an id is
//! never issued here), subscribers stay connected and keep their pings,
//! and on the way back every channel with local subscribers is subscribed
//! again and its gap filled from the broker's history.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use bytes::Bytes;
use log::{debug, info, warn};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::broker::{Backoff, BrokerUrl, ChannelOrder, Event, Host, Link, State};
use crate::pubsub::{CHANNEL_IDLE_MS, PubSub};

/// The broker socket's poll token: below the listeners' (`listeners.rs`).
pub const BROKER: Token = Token(usize::MAX - 64);
/// Bytes read from the broker per turn: a burst of messages cannot hold
/// the clients' turn up for long; the rest is read next turn.
const READ_BUDGET: usize = 256 * 1024;
/// How often the keys of channels with local subscribers are refreshed:
/// well inside the broker's idle expiry, so a quiet channel with listeners
/// keeps its ids and history.
const TOUCH_MS: u64 = CHANNEL_IDLE_MS / 3;
/// The tag of the ranges that fill a channel's history (publishes are
/// tagged from 1 up).
const FILL: u64 = 0;

/// What the broker did, for `/_status`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RelayStats {
    pub connected: bool,
    pub reconnects: u64,
    /// Messages recovered from the broker's history after a gap (a lost
    /// connection, a lost push).
    pub gaps_filled: u64,
    /// Publishes answered `503` because the broker was away or too busy.
    pub refused: u64,
}

pub struct Relay {
    addrs: Vec<SocketAddr>,
    next_addr: usize,
    link: Link,
    sock: Option<TcpStream>,
    /// The TCP connect has completed (the link is handshaking or ready).
    connected: bool,
    pub readable: bool,
    pub writable: bool,
    /// The read budget ran out: read again next turn without an edge.
    pub more: bool,
    backoff: Backoff,
    /// When to try connecting again (loop clock).
    pub retry_at: Option<u64>,
    ever_ready: bool,
    orders: HashMap<Box<str>, ChannelOrder>,
    /// Channels whose history is to be asked for (new here, reconnected,
    /// a gap seen, a fill that failed).
    to_fill: Vec<Box<str>>,
    /// Publish tags waiting for the broker, and the connection each answers.
    publishes: HashMap<u64, usize>,
    next_tag: u64,
    last_touch: u64,
    changes: Vec<(Box<str>, bool)>,
    pub stats: RelayStats,
}

impl Relay {
    /// A relay to the broker at `url`, whose host name (if any) resolves
    /// now, once, before the loop starts: the loop must never block.
    pub fn new(url: &BrokerUrl, history_len: usize, seed: u64) -> io::Result<Relay> {
        let addrs: Vec<SocketAddr> = match &url.host {
            Host::Ip(ip) => vec![SocketAddr::new(*ip, url.port)],
            Host::Name(name) => std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), url.port))?.collect(),
        };
        if addrs.is_empty() {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{url}: no address")));
        }
        Ok(Relay {
            addrs,
            next_addr: 0,
            link: Link::new(url.db, history_len, CHANNEL_IDLE_MS),
            sock: None,
            connected: false,
            readable: false,
            writable: false,
            more: false,
            backoff: Backoff::new(seed),
            retry_at: Some(0),
            ever_ready: false,
            orders: HashMap::new(),
            to_fill: Vec::new(),
            publishes: HashMap::new(),
            next_tag: FILL + 1,
            last_touch: 0,
            changes: Vec::new(),
            stats: RelayStats::default(),
        })
    }

    pub fn is_ready(&self) -> bool {
        self.link.is_ready()
    }

    /// Start connecting if the retry is due (non-blocking: the connect
    /// completes with a writable edge).
    pub fn connect_if_due(&mut self, now: u64, registry: &Registry) {
        if self.sock.is_some() || self.retry_at.is_none_or(|at| at > now) {
            return;
        }
        self.retry_at = None;
        let addr = self.addrs[self.next_addr % self.addrs.len()];
        self.next_addr += 1;
        match TcpStream::connect(addr) {
            Ok(mut sock) => match registry.register(&mut sock, BROKER, Interest::READABLE | Interest::WRITABLE) {
                Ok(()) => {
                    debug!("broker: connecting to {addr}");
                    self.sock = Some(sock);
                    self.connected = false;
                }
                Err(e) => self.lost(now, &format!("register: {e}"), registry),
            },
            Err(e) => self.lost(now, &format!("connect {addr}: {e}"), registry),
        }
    }

    /// The connection is gone (or could not be made): fail what waited on
    /// it and try again after the back-off.
    pub fn lost(&mut self, now: u64, why: &str, registry: &Registry) {
        if let Some(mut sock) = self.sock.take() {
            let _ = registry.deregister(&mut sock);
        }
        if self.connected || self.link.state() != State::Disconnected {
            warn!("broker: {why}; publishing is refused until it is back");
        } else {
            debug!("broker: {why}");
        }
        self.connected = false;
        self.stats.connected = false;
        self.link.on_disconnected();
        for order in self.orders.values_mut() {
            order.interrupted();
        }
        self.readable = false;
        self.writable = false;
        self.more = false;
        self.retry_at = Some(self.backoff.failed(now));
    }

    /// Read what the broker sent (bounded), handing it to the link.
    /// Returns an error description when the connection is to be dropped.
    fn read(&mut self) -> Result<(), String> {
        let Some(sock) = self.sock.as_mut() else { return Ok(()) };
        let mut chunk = [0u8; 16 * 1024];
        let mut taken = 0;
        self.more = false;
        while self.readable {
            if taken >= READ_BUDGET {
                self.more = true;
                break;
            }
            match sock.read(&mut chunk) {
                Ok(0) => return Err("the broker closed the connection".into()),
                Ok(n) => {
                    taken += n;
                    self.link.feed(&chunk[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        Ok(())
    }

    /// Write what the link has queued, until the socket is full.
    fn write(&mut self) -> Result<(), String> {
        let Some(sock) = self.sock.as_mut().filter(|_| self.connected) else { return Ok(()) };
        while self.writable && !self.link.output().is_empty() {
            match sock.write(self.link.output()) {
                Ok(n) => self.link.consumed(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        Ok(())
    }

    /// The connect finished (a writable edge while connecting): whether it
    /// succeeded.
    fn finish_connect(&mut self) -> Result<(), String> {
        let Some(sock) = self.sock.as_ref().filter(|_| !self.connected && self.writable) else { return Ok(()) };
        if let Ok(Some(e)) | Err(e) = sock.take_error() {
            return Err(format!("connect: {e}"));
        }
        match sock.peer_addr() {
            Ok(_) => {
                let _ = sock.set_nodelay(true);
                self.connected = true;
                self.link.on_connected();
                Ok(())
            }
            // Not yet: a spurious edge.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            Err(e) => Err(format!("connect: {e}")),
        }
    }

    /// Pull the socket's news into the link and return its events.
    pub fn poll(&mut self, now: u64, registry: &Registry, events: &mut Vec<Event>) {
        if self.sock.is_none() {
            return;
        }
        let mut result = self.finish_connect().and_then(|()| self.read());
        while let Some(e) = self.link.poll_event() {
            if let Event::Error { what } = &e {
                result = result.and(Err(what.clone()));
            }
            events.push(e);
        }
        if let Err(why) = result {
            // What was in flight fails now (its events follow).
            self.lost(now, &why, registry);
            while let Some(e) = self.link.poll_event() {
                events.push(e);
            }
        }
    }

    /// Send a publish; its answer comes back for connection `key` under
    /// the returned tag. `None`: refused now (not connected, too busy).
    pub fn publish(&mut self, channel: &str, data: &[u8], floor: u64, key: usize) -> Option<u64> {
        let tag = self.next_tag;
        match self.link.publish(channel, data, floor, tag) {
            Ok(()) => {
                self.next_tag += 1;
                self.publishes.insert(tag, key);
                Some(tag)
            }
            Err(why) => {
                debug!("broker: publish refused: {why}");
                self.stats.refused += 1;
                None
            }
        }
    }

    /// A publish timed out here: its answer, if it comes, is dropped.
    pub fn forget(&mut self, tag: u64) {
        self.publishes.remove(&tag);
    }

    /// Whether there is socket work for this turn.
    pub fn has_work(&self) -> bool {
        self.sock.is_some() && (self.readable || self.more || (self.writable && !self.connected))
    }

    /// The connection a publish answer is for.
    pub fn answered(&mut self, tag: u64) -> Option<usize> {
        self.publishes.remove(&tag)
    }

    /// Subscribe to the channels made here since the last call, leave the
    /// dropped ones, ask for what needs filling, keep keys alive, and
    /// write everything queued.
    pub fn flush(&mut self, channels: &mut PubSub, now: u64, registry: &Registry) {
        channels.take_changes(&mut self.changes);
        let ready = self.link.is_ready();
        for (name, made) in self.changes.drain(..) {
            if made {
                if ready {
                    let _ = self.link.subscribe(&name);
                }
                self.orders.insert(name.clone(), ChannelOrder::new(0));
                self.to_fill.push(name);
            } else {
                self.orders.remove(&name);
                if ready {
                    let _ = self.link.unsubscribe(&name);
                }
            }
        }
        if ready {
            for name in std::mem::take(&mut self.to_fill) {
                if let Some(order) = self.orders.get_mut(&name).filter(|o| !o.filling()) {
                    let after = order.fill();
                    if self.link.range(&name, after, after, FILL).is_err() {
                        order.interrupted();
                        self.to_fill.push(name);
                    }
                }
            }
            if now.saturating_sub(self.last_touch) >= TOUCH_MS {
                self.last_touch = now;
                for name in self.orders.keys() {
                    let _ = self.link.touch(name);
                }
            }
        }
        if let Err(why) = self.write() {
            self.lost(now, &why, registry);
        }
    }

    /// The link is ready (first time, or after a reconnect): subscribe to
    /// every channel that has local subscribers and fill its gap.
    fn ready(&mut self, channels: &PubSub) {
        self.backoff.succeeded();
        self.stats.connected = true;
        if self.ever_ready {
            self.stats.reconnects += 1;
            info!("broker: connected again; filling the gaps of {} channels", self.orders.len());
        } else {
            info!("broker: connected");
        }
        self.ever_ready = true;
        for (_, ch) in channels.iter() {
            let _ = self.link.subscribe(&ch.name);
            let order = self.orders.entry(ch.name.clone()).or_insert_with(|| ChannelOrder::new(ch.last_id));
            order.interrupted();
            self.to_fill.push(ch.name.clone());
        }
    }

    /// A message pushed to a subscribed channel, or a page of a fill:
    /// what may be delivered now, in order. Also returns whether the fill
    /// of that channel is complete, with the broker's last id then.
    fn deliverable(&mut self, event: Event, out: &mut Vec<(u64, Bytes)>) -> Option<(Box<str>, Option<u64>)> {
        match event {
            Event::Message { channel, id, data } => {
                let order = self.orders.get_mut(&channel)?;
                if let Some(after) = order.message(id, data, out) {
                    // A gap: ask the broker's history for what is missing.
                    if self.link.range(&channel, after, after, FILL).is_err() {
                        order.interrupted();
                        self.to_fill.push(channel.clone());
                    }
                }
                Some((channel, None))
            }
            Event::Range { tag: FILL, channel, last_id, messages, more } => {
                let order = self.orders.get_mut(&channel)?;
                order.range_page(messages, more, out);
                if more {
                    return Some((channel, None));
                }
                if last_id > order.last() {
                    // Ids the broker issued but no longer keeps: start after.
                    *order = ChannelOrder::new(last_id);
                }
                let last = order.last();
                Some((channel, Some(last)))
            }
            Event::QueryFailed { channel, error, .. } => {
                warn!("broker: history of {channel}: {error}");
                if let Some(order) = self.orders.get_mut(&channel) {
                    order.interrupted();
                    self.to_fill.push(channel);
                }
                None
            }
            _ => None,
        }
    }
}

/// What the broker phase hands the server.
pub enum News {
    /// A publish was stored (`Ok(id)`) or failed; answer connection `key`
    /// if it still waits for the publish tagged `tag`.
    Published { key: usize, tag: u64, outcome: Result<u64, ()> },
    /// Messages to keep and deliver on `channel`, in order; `filled`: the
    /// channel's history is complete here, up to that id.
    Messages { channel: Box<str>, messages: Vec<(u64, Bytes)>, filled: Option<u64> },
}

impl Relay {
    /// Turn the link's events into what the server acts on.
    pub fn news(&mut self, events: Vec<Event>, channels: &PubSub, news: &mut Vec<News>) {
        for event in events {
            match event {
                Event::Ready => self.ready(channels),
                Event::Published { tag, id, .. } => {
                    if let Some(key) = self.answered(tag) {
                        news.push(News::Published { key, tag, outcome: Ok(id) });
                    }
                }
                Event::PublishFailed { tag, error, .. } => {
                    debug!("broker: publish failed: {error}");
                    self.stats.refused += 1;
                    if let Some(key) = self.answered(tag) {
                        news.push(News::Published { key, tag, outcome: Err(()) });
                    }
                }
                Event::Error { what } => warn!("broker: {what}"),
                event => {
                    let refill = matches!(event, Event::Range { .. });
                    let mut messages = Vec::new();
                    if let Some((channel, filled)) = self.deliverable(event, &mut messages) {
                        let was_filled = channels.channel(&channel).is_some_and(|c| c.filled);
                        if refill && was_filled {
                            self.stats.gaps_filled += messages.len() as u64;
                        }
                        news.push(News::Messages { channel, messages, filled });
                    }
                }
            }
        }
    }
}
