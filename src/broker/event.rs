//! What a `Link` reports, and why it may refuse a request.

use std::fmt;

use bytes::Bytes;

/// Messages as `(id, data)`, in id order.
pub type Messages = Vec<(u64, Bytes)>;

/// What happened; see each variant for what the caller does with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The handshake is done: requests are accepted. Subscribe again and
    /// fill gaps now (see the module doc of `broker`).
    Ready,
    /// A publish was stored and published with this id.
    Published {
        tag: u64,
        channel: Box<str>,
        id: u64,
    },
    /// A publish got an error reply, or its connection was lost before the
    /// reply (then it may or may not have been stored).
    PublishFailed {
        tag: u64,
        channel: Box<str>,
        error: String,
    },
    /// One page of a range: messages newer than the range's `after`, in
    /// id order, each `(id, data)`. `last_id` is the last id issued on the
    /// channel when the page was read (0: Redis has no such channel). When
    /// `more`, another page follows under the same tag (the link asks for
    /// it itself). History starts at the first message's id: anything
    /// between `after` and it has been trimmed or expired.
    Range {
        tag: u64,
        channel: Box<str>,
        last_id: u64,
        messages: Messages,
        more: bool,
    },
    /// The last id issued on a channel (0: none).
    LastId {
        tag: u64,
        channel: Box<str>,
        id: u64,
    },
    /// A range or last-id request got an error reply or was lost with the
    /// connection.
    QueryFailed {
        tag: u64,
        channel: Box<str>,
        error: String,
    },
    /// A message pushed to a subscribed channel (including those this node
    /// published: they come back too).
    Message {
        channel: Box<str>,
        id: u64,
        data: Bytes,
    },
    Subscribed {
        channel: Box<str>,
    },
    Unsubscribed {
        channel: Box<str>,
    },
    /// The connection is unusable (protocol error, refused handshake or
    /// subscription): close the socket, call `on_disconnected`, reconnect
    /// after the back-off.
    Error {
        what: String,
    },
}

/// Why a request was not queued; nothing was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not `Ready`: publishing answers 503 with `Retry-After`.
    NotReady,
    /// Too much in flight ([`MAX_PENDING`](crate::broker::link::MAX_PENDING), [`MAX_QUEUED_BYTES`](crate::broker::link::MAX_QUEUED_BYTES)): 503.
    Busy,
    /// Not `[A-Za-z0-9._-]{1,64}`.
    BadChannel,
    /// Over [`MAX_MESSAGE`](crate::pubsub::MAX_MESSAGE).
    TooLarge,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refused::NotReady => "the broker is not connected",
            Refused::Busy => "too many broker requests in flight",
            Refused::BadChannel => "invalid channel name",
            Refused::TooLarge => "message too large",
        })
    }
}
