//! Requests: what each one sends, and what it keeps to read its answer
//! (and, for a script, to send it again with EVAL after NOSCRIPT).

use bytes::Bytes;

use crate::broker::codec::push_command;
use crate::broker::script::{self, Script};

/// Entries per range reply (XRANGE COUNT): a full page of 64 KiB messages
/// is 4 MiB, half of [`MAX_FRAME`](crate::broker::codec::MAX_FRAME).
/// Longer ranges come in pages.
pub const RANGE_PAGE: usize = 64;

/// A request awaiting its answer.
#[derive(Debug)]
pub enum Pending {
    Hello,
    Select(u8),
    Load(Script),
    Publish {
        tag: u64,
        channel: Box<str>,
        data: Bytes,
        floor: u64,
        by_sha: bool,
    },
    Range {
        tag: u64,
        channel: Box<str>,
        after: u64,
        floor: u64,
        by_sha: bool,
    },
    LastId {
        tag: u64,
        channel: Box<str>,
    },
    Subscribe {
        channel: Box<str>,
    },
    Unsubscribe {
        channel: Box<str>,
    },
    /// PEXPIRE of one key: only an error is worth a word.
    Touch {
        key: String,
    },
}

/// What the commands are built from, fixed per connection.
#[derive(Debug, Default)]
pub struct Params {
    pub history_len: usize,
    pub idle_ms: u64,
    /// The scripts' SHA1s, as SCRIPT LOAD answered.
    pub publish_sha: String,
    pub range_sha: String,
}

impl Pending {
    /// Append this request's command to `out`.
    pub fn encode(&self, out: &mut Vec<u8>, params: &Params) {
        match self {
            Pending::Hello => push_command(out, &[b"HELLO", b"3"]),
            Pending::Select(db) => push_command(out, &[b"SELECT", db.to_string().as_bytes()]),
            Pending::Load(s) => push_command(out, &[b"SCRIPT", b"LOAD", s.source().as_bytes()]),
            Pending::Publish { channel, data, floor, by_sha, .. } => {
                let (floor, len) = (floor.to_string(), params.history_len.to_string());
                let (ms, name) = (params.idle_ms.to_string(), script::pubsub_channel(channel));
                let argv: [&[u8]; 5] = [data, floor.as_bytes(), len.as_bytes(), ms.as_bytes(), name.as_bytes()];
                run_script(out, params, Script::Publish, *by_sha, channel, &argv);
            }
            Pending::Range { channel, after, floor, by_sha, .. } => {
                let (start, count) = (script::range_start(*after), RANGE_PAGE.to_string());
                let (floor, ms) = (floor.to_string(), params.idle_ms.to_string());
                let argv: [&[u8]; 4] = [start.as_bytes(), count.as_bytes(), floor.as_bytes(), ms.as_bytes()];
                run_script(out, params, Script::Range, *by_sha, channel, &argv);
            }
            Pending::LastId { channel, .. } => push_command(out, &[b"GET", script::seq_key(channel).as_bytes()]),
            Pending::Subscribe { channel } => {
                push_command(out, &[b"SUBSCRIBE", script::pubsub_channel(channel).as_bytes()])
            }
            Pending::Unsubscribe { channel } => {
                push_command(out, &[b"UNSUBSCRIBE", script::pubsub_channel(channel).as_bytes()])
            }
            Pending::Touch { key } => {
                push_command(out, &[b"PEXPIRE", key.as_bytes(), params.idle_ms.to_string().as_bytes()])
            }
        }
    }

    /// Bytes of message data this request keeps until answered.
    pub fn held(&self) -> usize {
        match self {
            Pending::Publish { data, .. } => data.len(),
            _ => 0,
        }
    }

    /// The same script request sent with EVAL and its whole source, after
    /// a NOSCRIPT (EVAL also caches the script again, so later EVALSHAs
    /// succeed). `Err(self)` for anything else, or if it already was EVAL: a
    /// second NOSCRIPT is an ordinary failure, not a loop.
    pub fn by_source(self) -> Result<Pending, Pending> {
        match self {
            Pending::Publish { tag, channel, data, floor, by_sha: true } => {
                Ok(Pending::Publish { tag, channel, data, floor, by_sha: false })
            }
            Pending::Range { tag, channel, after, floor, by_sha: true } => {
                Ok(Pending::Range { tag, channel, after, floor, by_sha: false })
            }
            other => Err(other),
        }
    }
}

/// `EVALSHA sha 2 seq log argv...`, or `EVAL source 2 seq log argv...`.
fn run_script(out: &mut Vec<u8>, params: &Params, s: Script, by_sha: bool, channel: &str, argv: &[&[u8]]) {
    let (verb, body): (&[u8], &[u8]) = match (by_sha, s) {
        (true, Script::Publish) => (b"EVALSHA", params.publish_sha.as_bytes()),
        (true, Script::Range) => (b"EVALSHA", params.range_sha.as_bytes()),
        (false, _) => (b"EVAL", s.source().as_bytes()),
    };
    let (seq, log) = (script::seq_key(channel), script::log_key(channel));
    let mut args: Vec<&[u8]> = vec![verb, body, b"2", seq.as_bytes(), log.as_bytes()];
    args.extend_from_slice(argv);
    push_command(out, &args);
}
