//! The Redis data model of a channel and the Lua scripts that change it.
//!
//! For channel NAME (`[A-Za-z0-9._-]{1,64}`, so it never holds a brace):
//!
//! | key or channel          | type    | holds |
//! | ----------------------- | ------- | ----- |
//! | `linger:{NAME}:seq`     | string  | the last id issued (an integer) |
//! | `linger:{NAME}:log`     | stream  | the last N messages, entry id `<id>-1`, field `d` = the bytes |
//! | `linger:{NAME}`         | pub/sub | every message as `<id>\n<bytes>` |
//!
//! `{NAME}` is a Redis Cluster hash tag: both keys of a channel hash to one
//! slot, which a script touching both requires there. Both keys expire
//! after the idle time (10 min) unless a publish or [`touch`] refreshes
//! them, as an in-process channel is dropped when idle.
//!
//! Publish is one script, so it is atomic: no other client sees the id
//! taken but the message not yet stored or published.
//!
//! Ids: Lua numbers are doubles, so ids are exact up to 2^53 (a channel
//! publishing a million messages a second reaches that in 285 years).
//!
//! [`touch`]: crate::broker::Link::touch

/// Prefix of every key and pub/sub channel linger uses.
pub const PREFIX: &str = "linger:{";

/// KEYS[1] = seq, KEYS[2] = log.
/// ARGV[1] = data, ARGV[2] = floor (the highest id the caller has seen on
/// this channel), ARGV[3] = history length, ARGV[4] = idle expiry in ms,
/// ARGV[5] = the pub/sub channel. Returns the id.
///
/// The floor and the stream's newest entry both bound the id from below:
/// a Redis restarted without persistence comes back empty and INCR starts
/// again at 1, but ids a subscriber already holds must not be issued
/// twice. The stream check (O(1): the newest entry of a radix tree) also
/// keeps XADD from failing should `seq` alone have been lost.
/// `string.format('%d')` because Lua 5.1 prints numbers of 15 digits and
/// more in exponent form.
pub const PUBLISH_LUA: &str = r"local floor = tonumber(ARGV[2])
local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
if top then
  local t = tonumber(string.match(top[1], '^%d+'))
  if t > floor then floor = t end
end
local id = redis.call('INCR', KEYS[1])
if id <= floor then
  id = floor + 1
  redis.call('SET', KEYS[1], string.format('%d', id))
end
local sid = string.format('%d', id)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], sid .. '-1', 'd', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[5], sid .. '\n' .. ARGV[1])
return id
";

/// KEYS[1] = seq, KEYS[2] = log.
/// ARGV[1] = first entry id wanted (`<after+1>-0`), ARGV[2] = page size,
/// ARGV[3] = floor, ARGV[4] = idle expiry in ms.
/// Returns `{last id issued, {{entry id, {'d', data}}, ...}}`.
///
/// One script rather than XRANGE and GET, so the last id and the entries
/// are one snapshot: entries end at the last id unless the page is full.
/// A floor above `seq` raises it (and sets its expiry): a node that holds
/// ids from before Redis lost its data puts them back as the starting
/// point for every publisher, whichever node that is.
pub const RANGE_LUA: &str = r"local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
if seq < tonumber(ARGV[3]) then
  seq = tonumber(ARGV[3])
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
return {seq, redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', ARGV[2])}
";

/// Which script a request runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    Publish,
    Range,
}

impl Script {
    pub fn source(self) -> &'static str {
        match self {
            Script::Publish => PUBLISH_LUA,
            Script::Range => RANGE_LUA,
        }
    }
}

/// `linger:{NAME}:seq`
pub fn seq_key(channel: &str) -> String {
    format!("{PREFIX}{channel}}}:seq")
}

/// `linger:{NAME}:log`
pub fn log_key(channel: &str) -> String {
    format!("{PREFIX}{channel}}}:log")
}

/// `linger:{NAME}`, the pub/sub channel.
pub fn pubsub_channel(channel: &str) -> String {
    format!("{PREFIX}{channel}}}")
}

/// NAME from a pub/sub channel `linger:{NAME}`; `None` for anything else
/// (another application's channel, or a name linger would not accept).
pub fn channel_name(pubsub: &[u8]) -> Option<&str> {
    let name = pubsub.strip_prefix(PREFIX.as_bytes())?.strip_suffix(b"}")?;
    let name = std::str::from_utf8(name).ok()?;
    crate::pubsub::valid_name(name).then_some(name)
}

/// `<id>\n<data>` as PUBLISH carries it: the id in decimal, a newline, then
/// the data bytes untouched (binary-safe: only the first newline counts).
pub fn decode_payload(payload: &[u8]) -> Option<(u64, &[u8])> {
    let nl = payload.iter().position(|&b| b == b'\n')?;
    Some((parse_decimal(&payload[..nl])?, &payload[nl + 1..]))
}

/// The message id of a stream entry id `<id>-<seq>`.
pub fn entry_id(entry: &[u8]) -> Option<u64> {
    let dash = entry.iter().position(|&b| b == b'-')?;
    parse_decimal(&entry[..dash])
}

/// `<after+1>-0`: the first stream entry id newer than message `after`.
pub fn range_start(after: u64) -> String {
    format!("{}-0", after.saturating_add(1))
}

/// A decimal `u64` with no sign, no spaces and no leading `+`.
pub fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_payloads() {
        assert_eq!(seq_key("news"), "linger:{news}:seq");
        assert_eq!(log_key("a.b-c_d"), "linger:{a.b-c_d}:log");
        assert_eq!(pubsub_channel("news"), "linger:{news}");
        assert_eq!(channel_name(b"linger:{news}"), Some("news"));
        assert_eq!(channel_name(b"linger:{news}:seq"), None);
        assert_eq!(channel_name(b"linger:{a/b}"), None);
        assert_eq!(channel_name(b"other"), None);
        assert_eq!(decode_payload(b"42\nhello\nworld"), Some((42, &b"hello\nworld"[..])));
        assert_eq!(decode_payload(b"7\n"), Some((7, &b""[..])));
        assert_eq!(decode_payload(b"x\nhello"), None);
        assert_eq!(decode_payload(b"12"), None);
        assert_eq!(decode_payload(b"+1\n"), None);
        assert_eq!(entry_id(b"17-1"), Some(17));
        assert_eq!(entry_id(b"17"), None);
        assert_eq!(range_start(41), "42-0");
        assert_eq!(range_start(u64::MAX), format!("{}-0", u64::MAX));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
    }
}
