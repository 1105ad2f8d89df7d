//! Counters and gauges, and the flat JSON of `GET /_status` (DESIGN.md:
//! the field names are a contract; add, never rename).
//!
//! Counters are bumped where the event happens. Gauges are read from where
//! they live (the state lists' lengths, the pool, the channels) only when
//! `/_status` is asked for: nothing is copied per turn.

use crate::http::reply::push_decimal;
use crate::metrics::Histogram;
use crate::pubsub::PubSub;

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
    /// The loop clock: milliseconds since start (rates on the server's
    /// clock, restarts seen).
    pub uptime_ms: u64,
    /// The idle timeout's range: `--idle-timeout` (quiet) and
    /// `--min-idle-timeout` (full occupancy).
    pub idle_timeout_max_ms: u64,
    pub idle_timeout_min_ms: u64,
}

/// Every field of `/_status`, in order: the JSON object, and the samples
/// of `/_metrics` (`metrics.rs`).
pub fn fields(c: &Counters, g: &Gauges, ps: &PubSub) -> [(&'static str, u64); 35] {
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
        ("uptime_ms", g.uptime_ms),
        ("idle_timeout_max_ms", g.idle_timeout_max_ms),
        ("idle_timeout_min_ms", g.idle_timeout_min_ms),
    ]
}

/// Render the flat JSON object.
pub fn to_json(c: &Counters, g: &Gauges, ps: &PubSub) -> Vec<u8> {
    let fields = fields(c, g, ps);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_flat_and_names_the_contract_fields() {
        let c = Counters { evicted: 3, ..Counters::default() };
        let g = Gauges { idle_timeout_ms: 60000, ..Gauges::default() };
        let text = String::from_utf8(to_json(&c, &g, &PubSub::new(1, 1))).unwrap();
        assert!(text.starts_with("{\"active\":0,"));
        assert!(text.contains("\"evicted\":3"));
        assert!(text.contains("\"idle_timeout_ms\":60000"));
        for name in ["reading", "writing", "held", "streaming", "lingering", "accepted", "requests", "reaped"] {
            assert!(text.contains(&format!("\"{name}\":")), "{name}");
        }
    }
}
