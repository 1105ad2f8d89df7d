//! Reading our replies and Redis's pushes out of decoded frames. Pure: a
//! frame and the bytes its ranges point into go in, plain values come out.

use bytes::Bytes;
use log::{debug, warn};
use redis_protocol::resp3::types::RangeFrame;

use crate::broker::codec;
use crate::broker::event::Messages;
use crate::broker::script;

/// A RESP3 push, as far as linger cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Push<'a> {
    /// `message linger:{NAME} <id>\n<data>`
    Message { channel: &'a str, id: u64, data: &'a [u8] },
    /// The answer to SUBSCRIBE `linger:{NAME}`.
    Subscribe(&'a str),
    /// The answer to UNSUBSCRIBE `linger:{NAME}`.
    Unsubscribe(&'a str),
    /// Not ours: client tracking's `invalidate`, or a message on one of
    /// our channel names that linger did not publish.
    Other,
}

/// The items of a push frame.
pub fn push<'a>(items: &[RangeFrame], buf: &'a [u8]) -> Result<Push<'a>, String> {
    let kind = items.first().and_then(|k| codec::bytes(k, buf)).unwrap_or_default();
    let name = items.get(1).and_then(|c| codec::bytes(c, buf));
    match kind {
        b"message" => {
            let (Some(name), Some(payload)) = (name, items.get(2).and_then(|p| codec::bytes(p, buf))) else {
                return Err("malformed message push".into());
            };
            // Someone else's PUBLISH on our channel names is not worth
            // dropping the connection (and every node's with it).
            match (script::channel_name(name), script::decode_payload(payload)) {
                (Some(channel), Some((id, data))) => Ok(Push::Message { channel, id, data }),
                _ => {
                    warn!("broker: ignoring a message on {:?} not published by linger", String::from_utf8_lossy(name));
                    Ok(Push::Other)
                }
            }
        }
        b"subscribe" | b"unsubscribe" => {
            let Some(channel) = name.and_then(script::channel_name) else {
                return Err(format!("a {} push for a channel linger never names", String::from_utf8_lossy(kind)));
            };
            Ok(if kind == b"subscribe" { Push::Subscribe(channel) } else { Push::Unsubscribe(channel) })
        }
        other => {
            debug!("broker: ignoring a {:?} push", String::from_utf8_lossy(other));
            Ok(Push::Other)
        }
    }
}

/// The range script's reply, `{last id, {{"<id>-1", {"d", data}}, ...}}`:
/// the last id and the messages, data copied out of the read buffer (one
/// copy, so the buffer is free to be reused at once).
pub fn range(f: &RangeFrame, buf: &[u8]) -> Result<(u64, Messages), &'static str> {
    let [last, entries] = codec::elements(f).ok_or("not an array")? else { return Err("not a pair") };
    let last_id = codec::integer(last, buf).ok_or("no last id")?;
    let entries = codec::elements(entries).ok_or("entries not an array")?;
    let mut messages = Vec::with_capacity(entries.len());
    for entry in entries {
        let [id, fields] = codec::elements(entry).ok_or("entry not an array")? else { return Err("entry not a pair") };
        let id = codec::bytes(id, buf).and_then(script::entry_id).ok_or("bad entry id")?;
        let fields = codec::elements(fields).ok_or("fields not an array")?;
        // Field `d` holds the data; others (none today) are ignored.
        let data = fields
            .chunks(2)
            .find(|kv| kv.len() == 2 && codec::bytes(&kv[0], buf) == Some(b"d"))
            .and_then(|kv| codec::bytes(&kv[1], buf))
            .ok_or("entry without field d")?;
        messages.push((id, Bytes::copy_from_slice(data)));
    }
    Ok((last_id, messages))
}
