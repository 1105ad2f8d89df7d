//! `GET /_metrics`: the counters and gauges of `/_status` in Prometheus'
//! text exposition format, version 0.0.4 (prometheus.io/docs/instrumenting/
//! exposition_formats), and the response-time histogram behind it.
//!
//! Names follow Prometheus' naming guide: `linger_` and the `/_status`
//! field, counters ending in `_total`, milliseconds turned into seconds
//! (`_seconds`, base units), the connection states one family with a
//! `state` label. `FAMILIES` is the whole mapping (a test checks that it
//! covers every `/_status` field), and it is a contract like `/_status`:
//! add, never rename.
//!
//! # The response-time histogram
//!
//! `linger_response_seconds`: from the turn in which a request's head was
//! complete (taken from the input) to the turn in which its response's last
//! byte was written, both on the loop clock. That clock is read once per
//! turn in whole milliseconds, so an observation is a whole number of
//! milliseconds, exact to the clock's resolution: the real time lies within
//! a millisecond (plus a turn's length) of it. The lowest bucket,
//! `le="0.0005"`, therefore holds exactly the responses written in the same
//! loop millisecond as their request arrived: in practice, within the same
//! turn. Finer than that the loop clock cannot tell, and reading a finer
//! clock per request would cost a system call (or a vDSO call) each.
//!
//! Recording costs no allocation and no system call: a connection keeps
//! the clock of its oldest unwritten responses (`Pending`, 16 bytes) and
//! records them when its output drains, which the flush phase sees anyway.
//! A response followed by others on the same connection counts as written
//! when the whole output is (for pipelined responses a turn or so late at
//! most); held long polls and streams are not timed (a subscription is
//! not a response time).

use crate::http::reply::push_decimal;
use crate::status::Field;

/// The Content-Type of the text format, version 0.0.4.
pub const CONTENT_TYPE: &[u8] = b"Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n";

/// Upper bounds of the histogram's buckets in loop milliseconds (an
/// observation is a whole number of them), and how Prometheus reads them.
const BOUNDS_MS: [u64; 8] = [0, 1, 5, 25, 100, 500, 2500, 10_000];
const BOUNDS_LABEL: [&str; 8] = ["0.0005", "0.001", "0.005", "0.025", "0.1", "0.5", "2.5", "10"];

/// Response times: a count per bucket (not cumulative: cumulated when
/// rendered) and the sum. Observing is a few compares and two adds.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    counts: [u64; BOUNDS_MS.len() + 1],
    sum_ms: u64,
}

impl Histogram {
    /// `n` responses that took `ms` milliseconds of loop clock.
    #[inline]
    pub fn observe(&mut self, ms: u64, n: u64) {
        let mut i = 0;
        // Most responses are written within their turn: the first compare.
        while i < BOUNDS_MS.len() && ms > BOUNDS_MS[i] {
            i += 1;
        }
        self.counts[i] += n;
        self.sum_ms += ms * n;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum_ms(&self) -> u64 {
        self.sum_ms
    }

    /// The buckets' counts and the sum, as one array: a worker's slot on
    /// the board (`board.rs`) carries them.
    pub fn cells(&self) -> [u64; HISTOGRAM_CELLS] {
        let mut cells = [0; HISTOGRAM_CELLS];
        cells[..BOUNDS_MS.len() + 1].copy_from_slice(&self.counts);
        cells[BOUNDS_MS.len() + 1] = self.sum_ms;
        cells
    }

    /// Add another worker's histogram (as `cells` gave it).
    pub fn add_cells(&mut self, cells: &[u64; HISTOGRAM_CELLS]) {
        for (count, theirs) in self.counts.iter_mut().zip(cells) {
            *count = count.saturating_add(*theirs);
        }
        self.sum_ms = self.sum_ms.saturating_add(cells[BOUNDS_MS.len() + 1]);
    }
}

/// The histogram as numbers: one count per bucket, then the sum.
pub const HISTOGRAM_CELLS: usize = BOUNDS_MS.len() + 2;

/// One connection's responses not yet written: two runs of equal start
/// stamps, so that the times are exact whenever the waiting responses
/// arrived within two distinct loop milliseconds (nearly always one). A
/// third is folded into the older run, overstating those few, never
/// understating any. Stamps are the loop clock's low 32 bits: differences
/// stay right for 49 days.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pending {
    old_at: u32,
    old_n: u32,
    new_at: u32,
    new_n: u32,
}

impl Pending {
    /// `n` requests taken from the input at loop clock `now`.
    #[inline]
    pub fn start(&mut self, now: u64, n: u32) {
        let at = now as u32;
        if self.old_n == 0 || (self.old_at == at && self.new_n == 0) {
            self.old_at = at;
            self.old_n += n;
        } else if self.new_n == 0 || self.new_at == at {
            self.new_at = at;
            self.new_n += n;
        } else {
            self.old_n += self.new_n;
            self.new_at = at;
            self.new_n = n;
        }
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.old_n == 0
    }

    /// Every waiting response was written by loop clock `now`.
    #[inline]
    pub fn written(&mut self, now: u64, into: &mut Histogram) {
        let now = now as u32;
        into.observe(u64::from(now.wrapping_sub(self.old_at)), u64::from(self.old_n));
        if self.new_n > 0 {
            into.observe(u64::from(now.wrapping_sub(self.new_at)), u64::from(self.new_n));
        }
        *self = Pending::default();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// How a `/_status` value becomes a sample value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Plain,
    /// Milliseconds, shown as seconds.
    Millis,
}

/// A metric family: its samples are `/_status` fields.
struct Family {
    name: &'static str,
    kind: Kind,
    unit: Unit,
    help: &'static str,
    samples: Samples,
}

enum Samples {
    /// One unlabelled sample: this field.
    One(&'static str),
    /// Labelled samples: each field with its labels.
    Labelled(&'static [(&'static str, &'static str)]),
}

const fn counter(name: &'static str, field: &'static str, help: &'static str) -> Family {
    Family { name, kind: Kind::Counter, unit: Unit::Plain, help, samples: Samples::One(field) }
}

const fn gauge(name: &'static str, field: &'static str, help: &'static str) -> Family {
    Family { name, kind: Kind::Gauge, unit: Unit::Plain, help, samples: Samples::One(field) }
}

const fn seconds(name: &'static str, field: &'static str, help: &'static str) -> Family {
    Family { name, kind: Kind::Gauge, unit: Unit::Millis, help, samples: Samples::One(field) }
}

/// Every `/_status` field but `pid` (a label of `linger_info`), as
/// Prometheus families (the contract: add, never rename).
const FAMILIES: &[Family] = &[
    Family {
        name: "linger_connections",
        kind: Kind::Gauge,
        unit: Unit::Plain,
        help: "Connections by state (reading to streaming hold a slot; lingering are closing).",
        samples: Samples::Labelled(&[
            ("reading", "state=\"reading\""),
            ("serving", "state=\"serving\""),
            ("writing", "state=\"writing\""),
            ("idle", "state=\"idle\""),
            ("held", "state=\"held\""),
            ("streaming", "state=\"streaming\""),
            ("lingering", "state=\"lingering\""),
        ]),
    },
    gauge("linger_connections_active", "active", "Connections in any state but closed."),
    gauge("linger_connections_max", "max_conns", "Connection slots (--max-conns, as fitted to the descriptor limit)."),
    seconds("linger_idle_timeout_seconds", "idle_timeout_ms", "Keep-alive idle timeout in force (it adapts to load)."),
    seconds("linger_idle_timeout_max_seconds", "idle_timeout_max_ms", "Idle timeout when quiet (--idle-timeout)."),
    seconds(
        "linger_idle_timeout_min_seconds",
        "idle_timeout_min_ms",
        "Idle timeout at full occupancy (--min-idle-timeout).",
    ),
    gauge("linger_buffer_bytes", "buffer_bytes", "Connection buffer memory counted for occupancy."),
    gauge(
        "linger_buffer_max_bytes",
        "max_buffer_bytes",
        "Buffer memory that counts as full occupancy (--max-buffer-memory).",
    ),
    gauge("linger_buffers_held", "buffers_held", "Buffer sets held by connections (idle ones hold none)."),
    seconds("linger_uptime_seconds", "uptime_ms", "Time since the server started, on the loop clock."),
    gauge("linger_channels", "channels", "Pub/sub channels in existence."),
    gauge("linger_channel_bytes", "channel_bytes", "Bytes of message history kept by all channels."),
    counter("linger_accepted_total", "accepted", "Connections accepted."),
    counter("linger_requests_total", "requests", "Requests read (answered or refused)."),
    counter("linger_evicted_total", "evicted", "Connections closed to make room for a newcomer."),
    counter("linger_reaped_total", "reaped", "Idle connections closed by the idle timeout."),
    counter("linger_rejected_total", "rejected", "Newcomers refused with 503 because no slot could be freed."),
    counter(
        "linger_lingering_closes_total",
        "lingering_closes",
        "Closes through shutdown-and-drain (lingering close).",
    ),
    counter("linger_client_closes_first_total", "client_closes_first", "Closes where the client sent its FIN first."),
    counter("linger_header_timeouts_total", "header_timeouts", "Request heads (or bodies) that took too long."),
    counter("linger_send_timeouts_total", "send_timeouts", "Clients dropped for not reading their responses."),
    counter(
        "linger_backpressure_stalls_total",
        "backpressure_stalls",
        "Reads skipped because a connection's queues were full.",
    ),
    counter("linger_accept_errors_total", "accept_errors", "accept() failures for want of descriptors."),
    counter("linger_published_total", "published", "Messages published."),
    counter("linger_delivered_total", "delivered", "Messages delivered to subscribers."),
    counter(
        "linger_slow_subscribers_dropped_total",
        "slow_subscribers_dropped",
        "Subscribers let go for falling too far behind.",
    ),
    counter("linger_channels_refused_total", "channels_refused", "Channels refused for want of room (--max-channels)."),
    counter(
        "linger_access_log_dropped_total",
        "access_log_dropped",
        "Access log lines dropped because the disk could not keep up.",
    ),
    gauge("linger_broker_connected", "broker_connected", "1 while connected to the broker (--broker), else 0."),
    counter(
        "linger_broker_reconnects_total",
        "broker_reconnects",
        "Connections to the broker made again after one was lost.",
    ),
    counter(
        "linger_broker_gaps_filled_total",
        "broker_gaps_filled",
        "Messages recovered from the broker's history after a gap.",
    ),
    counter(
        "linger_broker_publishes_refused_total",
        "broker_publishes_refused",
        "Publishes answered 503 because the broker was away.",
    ),
    gauge(
        "linger_workers",
        "workers",
        "Worker processes the figures cover (1, or the live workers with ?workers=all).",
    ),
];

/// The whole exposition: the families above (from `/_status`'s
/// `fields`, one process's or every worker's), `linger_info`, and the
/// response-time histogram. Built on request (a scrape every few seconds),
/// about 6 KiB.
pub fn render(fields: &[Field], response_time: &Histogram) -> Vec<u8> {
    let value = |name: &str| fields.iter().find(|(n, _)| *n == name).map_or(0, |&(_, v)| v);
    let mut out = Vec::with_capacity(8 * 1024);
    for f in FAMILIES {
        header(&mut out, f.name, f.help, if f.kind == Kind::Counter { "counter" } else { "gauge" });
        let mut sample = |labels: &str, v: u64| {
            out.extend_from_slice(f.name.as_bytes());
            if !labels.is_empty() {
                out.push(b'{');
                out.extend_from_slice(labels.as_bytes());
                out.push(b'}');
            }
            out.push(b' ');
            match f.unit {
                Unit::Plain => push_decimal(&mut out, v),
                Unit::Millis => push_millis_as_seconds(&mut out, v),
            }
            out.push(b'\n');
        };
        match f.samples {
            Samples::One(field) => sample("", value(field)),
            Samples::Labelled(list) => {
                for &(field, labels) in list {
                    sample(labels, value(field));
                }
            }
        }
    }
    header(&mut out, "linger_info", "The server's version and process id (a new pid is a restart).", "gauge");
    out.extend_from_slice(b"linger_info{version=\"");
    out.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    out.extend_from_slice(b"\",pid=\"");
    push_decimal(&mut out, value("pid"));
    out.extend_from_slice(b"\"} 1\n");
    histogram(&mut out, response_time);
    out
}

fn header(out: &mut Vec<u8>, name: &str, help: &str, kind: &str) {
    for part in ["# HELP ", name, " ", help, "\n# TYPE ", name, " ", kind, "\n"] {
        out.extend_from_slice(part.as_bytes());
    }
}

fn histogram(out: &mut Vec<u8>, h: &Histogram) {
    const NAME: &str = "linger_response_seconds";
    header(
        out,
        NAME,
        "From a request's complete head to its response's last byte written, on the loop clock \
         (whole milliseconds: le=\"0.0005\" is the same loop millisecond, in practice the same turn).",
        "histogram",
    );
    let mut cumulative = 0;
    for (i, label) in BOUNDS_LABEL.iter().chain(["+Inf"].iter()).enumerate() {
        cumulative += h.counts[i];
        for part in [NAME, "_bucket{le=\"", label, "\"} "] {
            out.extend_from_slice(part.as_bytes());
        }
        push_decimal(out, cumulative);
        out.push(b'\n');
    }
    out.extend_from_slice(NAME.as_bytes());
    out.extend_from_slice(b"_sum ");
    push_millis_as_seconds(out, h.sum_ms);
    out.push(b'\n');
    out.extend_from_slice(NAME.as_bytes());
    out.extend_from_slice(b"_count ");
    push_decimal(out, cumulative);
    out.push(b'\n');
}

/// Milliseconds as seconds with three decimals (`60.000`), exactly.
fn push_millis_as_seconds(out: &mut Vec<u8>, ms: u64) {
    push_decimal(out, ms / 1000);
    let frac = ms % 1000;
    out.push(b'.');
    out.extend_from_slice(&[b'0' + (frac / 100) as u8, b'0' + (frac / 10 % 10) as u8, b'0' + (frac % 10) as u8]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::PubSub;
    use crate::status::{self, Counters, Gauges};

    #[test]
    fn observations_land_in_their_buckets() {
        let mut h = Histogram::default();
        h.observe(0, 3);
        h.observe(1, 1);
        h.observe(2, 1);
        h.observe(10_000, 1);
        h.observe(10_001, 2);
        assert_eq!(h.counts, [3, 1, 1, 0, 0, 0, 0, 1, 2]);
        assert_eq!((h.count(), h.sum_ms()), (8, 1 + 2 + 10_000 + 20_002));
    }

    #[test]
    fn pending_responses_keep_two_runs_exact_and_fold_a_third_into_the_older() {
        let mut h = Histogram::default();
        let mut p = Pending::default();
        assert!(p.is_empty());
        p.start(100, 1);
        p.start(100, 2);
        p.written(100, &mut h);
        assert_eq!((h.counts[0], h.sum_ms), (3, 0), "same millisecond: the lowest bucket");
        p.start(200, 1);
        p.start(203, 1);
        p.written(205, &mut h);
        assert_eq!(h.sum_ms, 5 + 2, "two runs, each exact");
        p.start(300, 1);
        p.start(301, 1);
        p.start(302, 1);
        p.written(310, &mut h);
        assert_eq!(h.sum_ms, 7 + 10 + 10 + 8, "the middle one folded into the older run");
        assert!(p.is_empty());
        // The clock's low 32 bits wrap: differences stay right.
        p.start((1 << 32) - 1, 1);
        p.written(1 << 32, &mut h);
        assert_eq!(h.counts[1], 1, "one millisecond across the wrap");
    }

    #[test]
    fn histograms_of_workers_add_up_through_their_cells() {
        let (mut a, mut b) = (Histogram::default(), Histogram::default());
        a.observe(0, 2);
        b.observe(30, 1);
        b.observe(20_000, 1);
        a.add_cells(&b.cells());
        assert_eq!(a.counts, [2, 0, 0, 0, 1, 0, 0, 0, 1]);
        assert_eq!(a.sum_ms(), 20_030);
    }

    #[test]
    fn every_status_field_is_a_sample() {
        let c = Counters::default();
        let fields = status::fields(&c, &Gauges::default(), &PubSub::new(1, 1));
        assert_eq!(fields.len(), status::FIELDS);
        let mut covered: Vec<&str> = vec!["pid"];
        for f in FAMILIES {
            match f.samples {
                Samples::One(field) => covered.push(field),
                Samples::Labelled(list) => covered.extend(list.iter().map(|(field, _)| *field)),
            }
        }
        for (name, _) in fields.iter() {
            assert!(covered.contains(name), "/_status field {name} has no metric");
        }
        for name in &covered {
            assert!(fields.iter().any(|(n, _)| n == name), "metric for unknown field {name}");
        }
    }

    #[test]
    fn the_text_format() {
        let mut c = Counters { requests: 7, ..Counters::default() };
        c.response_time.observe(0, 5);
        c.response_time.observe(30, 2);
        let g = Gauges { idle_timeout_ms: 59_500, reading: 2, ..Gauges::default() };
        let fields = status::fields(&c, &g, &PubSub::new(1, 1));
        let text = String::from_utf8(render(&fields, &c.response_time)).unwrap();
        assert!(text.contains("# TYPE linger_requests_total counter\nlinger_requests_total 7\n"), "{text}");
        assert!(text.contains("\nlinger_idle_timeout_seconds 59.500\n"));
        assert!(text.contains("\nlinger_connections{state=\"reading\"} 2\n"));
        assert!(text.contains("linger_response_seconds_bucket{le=\"0.0005\"} 5\n"));
        assert!(text.contains("linger_response_seconds_bucket{le=\"0.025\"} 5\n"));
        assert!(text.contains("linger_response_seconds_bucket{le=\"0.1\"} 7\n"));
        assert!(text.contains("linger_response_seconds_bucket{le=\"+Inf\"} 7\n"));
        assert!(text.contains("linger_response_seconds_sum 0.060\nlinger_response_seconds_count 7\n"));
        // Every sample line follows its family's HELP and TYPE.
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
                assert!(typed.contains(family), "{line}");
            }
        }
    }
}
