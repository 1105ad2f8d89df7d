//! Counters and gauges, and `GET /_status`: flat JSON (DESIGN.md:
//! the field names are a contract; add, never rename).
//!
//! Counters are bumped where the event happens. Gauges are read from where
//! they live (the state lists' lengths, the pool, the channels) only when
//! `/_status` is asked for: nothing is copied per turn.
//!
//! With several workers, each answers for itself (`workers` is 1, `pid` its
//! own); `/_status?workers=all` adds the other live workers' figures from
//! the shared board (`board.rs`), each field combined by [`combine`].

use crate::config::Config;
use crate::conn::Kind;
use crate::http::reply::push_decimal;
use crate::metrics::Histogram;
use crate::pubsub::PubSub;
use crate::relay::RelayStats;
use crate::timers::Timers;

/// Monotonic counters, bumped where the event happens.
#[derive(Default, Debug, Clone)]
pub struct Counters {
    pub accepted: u64,
    pub requests: u64,
    /// Idle (or lingering, or slow-head) connections closed to make room.
    pub evicted: u64,
    /// Idle connections closed by the idle timeout.
    pub reaped: u64,
    /// Newcomers refused with 503 because no slot could be freed.
    pub rejected: u64,
    /// Closes that went through shutdown-and-drain.
    pub lingering_closes: u64,
    /// Closes where the client sent its FIN first.
    pub client_closes_first: u64,
    /// Slow request heads answered with 408.
    pub header_timeouts: u64,
    /// Connections that stopped reading their responses and were dropped.
    pub send_timeouts: u64,
    /// Reads skipped because a connection's queues were full.
    pub backpressure_stalls: u64,
    /// `accept` failures for want of descriptors.
    pub accept_errors: u64,
    /// Response times (`/_metrics` only: a histogram is not a flat field).
    pub response_time: Histogram,
}

/// Gauges: how things stand now. Each is a list length or a running
/// total, so reading them is O(1).
#[derive(Default, Debug, Clone, Copy)]
pub struct Gauges {
    pub active: usize,
    pub reading: usize,
    pub serving: usize,
    pub writing: usize,
    pub idle: usize,
    pub held: usize,
    pub streaming: usize,
    /// Closing: waiting for the client's FIN, or draining after ours.
    pub lingering: usize,
    pub max_conns: usize,
    pub idle_timeout_ms: u64,
    pub buffer_bytes: usize,
    pub max_buffer_bytes: usize,
    /// Buffer sets held by connections (idle ones hold none).
    pub buffers_held: usize,
    /// Access log lines dropped because the sink could not keep up.
    pub log_dropped: u64,
    /// The broker (`--broker`): connected (1) or not (0; always 0 without
    /// one), reconnections, messages recovered after gaps, publishes
    /// refused while it was away.
    pub broker_connected: bool,
    pub broker_reconnects: u64,
    pub broker_gaps_filled: u64,
    pub broker_refused: u64,
    /// The loop clock: milliseconds since start (rates on the server's
    /// clock, restarts seen).
    pub uptime_ms: u64,
    /// The idle timeout's range: `--idle-timeout` (quiet) and
    /// `--min-idle-timeout` (full occupancy).
    pub idle_timeout_max_ms: u64,
    pub idle_timeout_min_ms: u64,
}

/// How many fields `/_status` has.
pub const FIELDS: usize = 40;

/// One field of `/_status`: its name (a contract) and value.
pub type Field = (&'static str, u64);

/// Every field, in the order of the JSON object (new ones go last): the
/// JSON of `/_status`, the samples of `/_metrics` (`metrics.rs`) and a
/// worker's slot on the board.
pub fn fields(c: &Counters, g: &Gauges, ps: &PubSub) -> [Field; FIELDS] {
    [
        ("active", g.active as u64),
        ("reading", g.reading as u64),
        ("writing", g.writing as u64),
        ("idle", g.idle as u64),
        ("held", g.held as u64),
        ("streaming", g.streaming as u64),
        ("lingering", g.lingering as u64),
        ("accepted", c.accepted),
        ("requests", c.requests),
        ("evicted", c.evicted),
        ("reaped", c.reaped),
        ("rejected", c.rejected),
        ("lingering_closes", c.lingering_closes),
        ("client_closes_first", c.client_closes_first),
        ("header_timeouts", c.header_timeouts),
        ("send_timeouts", c.send_timeouts),
        ("backpressure_stalls", c.backpressure_stalls),
        ("accept_errors", c.accept_errors),
        ("idle_timeout_ms", g.idle_timeout_ms),
        ("max_conns", g.max_conns as u64),
        ("buffer_bytes", g.buffer_bytes as u64),
        ("max_buffer_bytes", g.max_buffer_bytes as u64),
        ("buffers_held", g.buffers_held as u64),
        ("pid", u64::from(std::process::id())),
        ("channels", ps.channels() as u64),
        ("published", ps.published),
        ("delivered", ps.delivered),
        ("slow_subscribers_dropped", ps.dropped_slow),
        ("serving", g.serving as u64),
        ("channels_refused", ps.refused),
        ("access_log_dropped", g.log_dropped),
        ("channel_bytes", ps.memory() as u64),
        ("broker_connected", u64::from(g.broker_connected)),
        ("broker_reconnects", g.broker_reconnects),
        ("broker_gaps_filled", g.broker_gaps_filled),
        ("broker_publishes_refused", g.broker_refused),
        // How many workers the figures cover: summed like a counter, so
        // `?workers=all` says how many were live.
        ("workers", 1),
        ("uptime_ms", g.uptime_ms),
        ("idle_timeout_max_ms", g.idle_timeout_max_ms),
        ("idle_timeout_min_ms", g.idle_timeout_min_ms),
    ]
}

/// Add `other` (another worker's values, in [`fields`] order) into `into`.
/// Counters, gauges and limits add up (`max_conns` is then the server's
/// slots); `pid` and `uptime_ms` stay the answering worker's, as do the
/// configured idle timeout bounds; `idle_timeout_ms` is the lowest in
/// force, the most loaded worker's.
pub fn combine(into: &mut [Field; FIELDS], other: &[u64; FIELDS]) {
    for ((name, value), &theirs) in into.iter_mut().zip(other) {
        match *name {
            "pid" | "uptime_ms" | "idle_timeout_max_ms" | "idle_timeout_min_ms" => {}
            "idle_timeout_ms" => *value = (*value).min(theirs),
            _ => *value = value.saturating_add(theirs),
        }
    }
}

/// Whether a `/_status` query asks for every worker (`?workers=all`).
pub fn wants_all_workers(query: &str) -> bool {
    query.split('&').any(|pair| pair == "workers=all")
}

/// The flat JSON object of one process's figures.
pub fn to_json(c: &Counters, g: &Gauges, ps: &PubSub) -> Vec<u8> {
    render(&fields(c, g, ps))
}

/// Render the flat JSON object.
pub fn render(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::with_capacity(768);
    out.push(b'{');
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        push_decimal(&mut out, *value);
    }
    out.extend_from_slice(b"}\n");
    out
}

/// The gauges, read from where they live: the state lists, and the pool's
/// sets out and free bytes, the idle timeout in force and the access log's
/// dropped lines (`copied`, in that order).
pub(crate) fn gauges_from(
    timers: &Timers,
    copied: (usize, usize, u64, u64),
    nominal: usize,
    cfg: &Config,
    broker: Option<RelayStats>,
    now: u64,
) -> Gauges {
    let (buffers_held, free_bytes, idle_timeout_ms, log_dropped) = copied;
    let len = |k| timers.len(k);
    let broker = broker.unwrap_or_default();
    Gauges {
        active: Kind::ALL.iter().filter(|&&k| k != Kind::Closed).map(|&k| len(k)).sum(),
        reading: len(Kind::Reading),
        serving: len(Kind::Serving),
        writing: len(Kind::Writing),
        idle: len(Kind::Idle),
        held: len(Kind::Held),
        streaming: len(Kind::Streaming),
        lingering: len(Kind::AwaitFin) + len(Kind::Lingering),
        max_conns: cfg.max_conns,
        idle_timeout_ms,
        buffer_bytes: buffers_held * nominal + free_bytes,
        max_buffer_bytes: cfg.max_buffer_memory,
        buffers_held,
        log_dropped,
        broker_connected: broker.connected,
        broker_reconnects: broker.reconnects,
        broker_gaps_filled: broker.gaps_filled,
        broker_refused: broker.refused,
        uptime_ms: now,
        idle_timeout_max_ms: cfg.idle_timeout.as_millis() as u64,
        idle_timeout_min_ms: cfg.min_idle_timeout.as_millis() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_flat_and_names_the_contract_fields() {
        let c = Counters { evicted: 3, ..Counters::default() };
        let g = Gauges { idle_timeout_ms: 60000, ..Gauges::default() };
        let text = String::from_utf8(render(&fields(&c, &g, &PubSub::new(1, 1)))).unwrap();
        assert!(text.starts_with("{\"active\":0,"));
        assert!(text.contains(",\"workers\":1,"), "{text}");
        assert!(text.contains("\"evicted\":3"));
        assert!(text.contains("\"idle_timeout_ms\":60000"));
        for name in ["reading", "writing", "held", "streaming", "lingering", "accepted", "requests", "reaped"] {
            assert!(text.contains(&format!("\"{name}\":")), "{name}");
        }
    }

    #[test]
    fn workers_combine_by_field() {
        let mine = Counters { requests: 5, accepted: 2, ..Counters::default() };
        let g = Gauges { idle_timeout_ms: 60_000, max_conns: 100, active: 3, ..Gauges::default() };
        let mut all = fields(&mine, &g, &PubSub::new(1, 1));
        let theirs = Counters { requests: 7, accepted: 4, ..Counters::default() };
        let tg = Gauges { idle_timeout_ms: 2_000, max_conns: 100, active: 1, ..Gauges::default() };
        let mut other = [0u64; FIELDS];
        for (slot, (_, v)) in other.iter_mut().zip(fields(&theirs, &tg, &PubSub::new(1, 1))) {
            *slot = v;
        }
        let pid = all.iter().position(|(n, _)| *n == "pid").unwrap();
        other[pid] = 99_999;
        combine(&mut all, &other);
        let get = |name: &str| all.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!((get("requests"), get("accepted"), get("active")), (12, 6, 4));
        assert_eq!(get("max_conns"), 200, "the server's slots");
        assert_eq!(get("idle_timeout_ms"), 2_000, "the lowest in force");
        assert_eq!(get("pid"), u64::from(std::process::id()), "the answering worker's");
        assert_eq!(get("workers"), 2);
    }

    #[test]
    fn only_workers_all_asks_for_every_worker() {
        for q in ["workers=all", "a=1&workers=all", "workers=all&x"] {
            assert!(wants_all_workers(q), "{q}");
        }
        for q in ["", "workers=al", "workers=all2", "xworkers=all", "workers"] {
            assert!(!wants_all_workers(q), "{q}");
        }
    }
}
