//! The Redis broker client (`--broker redis://HOST[:PORT][/DB]`): channels
//! shared by every worker on every host, with the ids, history and resume
//! rules of in-process channels. Sans-IO: this module never touches a
//! socket or a clock; the event loop drives it.
//!
//! | file | job |
//! | --- | --- |
//! | `url.rs` | parse `--broker`; an address only for IP literals |
//! | `script.rs` | the keys of a channel, the publish and range scripts, the payload encoding |
//! | `codec.rs` | commands out; frames in, delimited and bounded before `redis-protocol` decodes them |
//! | `link.rs` | `Link`: handshake, requests matched to replies, pushes, limits |
//! | `event.rs` | what a `Link` reports (`Event`) and why it refuses (`Refused`) |
//! | `request.rs` | each request's command, and what it keeps to read the answer |
//! | `reply.rs` | reading range replies and pushes out of decoded frames |
//! | `order.rs` | `ChannelOrder`: exactly once and in order across pushes, ranges and reconnects |
//! | `backoff.rs` | reconnect delays, 100 ms doubling to 5 s, jittered |
//!
//! # The data model (details in `script.rs`)
//! Channel NAME is `linger:{NAME}:seq` (last id issued), `linger:{NAME}:log`
//! (a stream of the last `--channel-history` messages, entry `<id>-1`,
//! field `d`) and the pub/sub channel `linger:{NAME}`, whose messages are
//! `<id>\n<data>`. A publish is one Lua script: next id (never below the
//! caller's floor nor the stream's newest entry), XADD with exact MAXLEN,
//! PEXPIRE of both keys to the idle time, PUBLISH. Every node's ids for a
//! channel therefore agree, and `?since=41` means the same everywhere.
//!
//! # Rules the reactor keeps
//! - **Never issue an id locally.** While the link is not `Ready`,
//!   requests are refused (`Refused::NotReady`): publishing answers `503`
//!   with `Retry-After`. A publish in flight when the connection drops
//!   fails with `PublishFailed` (503 too), though Redis may have run it:
//!   the publisher's retry then stores the message twice, under two ids.
//! - **Floors.** `publish(.., floor)` passes the highest id the node has
//!   seen on the channel; `range(.., floor)` after a reconnect passes the
//!   last id delivered there, which also raises Redis's counter to it. A
//!   Redis that came back empty thus continues from the highest id any
//!   node still holds once that node has reconnected. One window remains:
//!   a publish by a node that never saw the channel, landing after the
//!   restart and before the holders' fills, takes a low id that the
//!   holders then drop as a duplicate.
//! - **Subscriptions** follow local subscribers: SUBSCRIBE on a channel's
//!   first, UNSUBSCRIBE after its last. For each subscribed channel keep a
//!   `ChannelOrder` and feed it every `Message` and the `Range` pages of
//!   the fills it asked for (a range answering a client's `since` is told
//!   apart by its tag); deliver what it returns; when it returns
//!   `Some(after)`, call `range`.
//! - **Reconnect**: on `Ready`, for every channel with local subscribers,
//!   `subscribe` and then `range(channel, order.fill(), order.last(), tag)`,
//!   in that order: Redis runs them in order, so every message published
//!   after the range's snapshot arrives as a push, and the ones before come
//!   in the range. Ranges longer than `RANGE_PAGE` come in pages.
//! - **Keep-alive**: `touch` every subscribed channel at least twice per
//!   idle period (every 5 minutes or less), so a quiet channel with
//!   listeners keeps its ids and history, as it does in-process.
//! - Deliver pushed messages only from `Message` events, including the
//!   node's own publishes (they come back as pushes, even before their
//!   `Published`): `Published` only answers the HTTP publisher.
//!
//! # Plugging it into the loop
//! 1. Start-up: parse the URL; for a name, resolve it once here (blocking
//!    is allowed before the loop starts, never after). Connect failures are
//!    not fatal: schedule a retry.
//! 2. Connect with `mio::net::TcpStream::connect(addr)` (non-blocking: the
//!    connect is in progress) and register a `BROKER` token for READABLE |
//!    WRITABLE. The connect has finished when the socket turns writable:
//!    check `take_error()` and `peer_addr()` (`NotConnected` means not yet);
//!    on success set TCP_NODELAY and call `link.on_connected()`.
//! 3. Read phase: read until `WouldBlock` (with a per-turn budget, and put
//!    the token back on the run queue if the budget ran out: edge-triggered
//!    readiness does not repeat itself), `feed` each chunk, and drain
//!    `poll_event` after each. EOF or an error: close, `on_disconnected`
//!    (then drain its failure events), schedule a reconnect.
//! 4. Requests from the serve phase append to `output()`; flush phase:
//!    write `output()`, `consumed(n)`. Stop at `WouldBlock` and wait for the
//!    writable edge (keep WRITABLE registered; it costs nothing when idle
//!    under edge triggering).
//! 5. `Event::Error`: close, `on_disconnected`, reconnect as for EOF.
//! 6. Reconnect timer: `Backoff::failed(now)` gives the deadline; one more
//!    timer beside the per-class lists (a single deadline, checked when the
//!    poll timeout is computed). `Backoff::succeeded()` on `Ready`.
//! 7. `Event::Message` and `Event::Range` go through `ChannelOrder` into
//!    the same deliver phase as a local publish.

pub mod backoff;
pub mod codec;
pub mod event;
pub mod link;
pub mod order;
pub mod reply;
pub mod request;
pub mod script;
pub mod url;

pub use backoff::Backoff;
pub use link::{Event, Link, RANGE_PAGE, Refused, State};
pub use order::ChannelOrder;
pub use url::{BrokerUrl, Host};
