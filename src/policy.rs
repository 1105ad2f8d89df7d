//! Connection-management policy in numbers: the adaptive idle timeout
//! (Gettys & Freier §11) and the bounds the loop enforces, each with its
//! reason. Pure functions, tested without sockets.

/// Stop serving a connection's queued requests while this much of its
/// output is unsent: a client that pipelines and never reads gets no more
/// work done for it, and stops being read too (back-pressure, §9).
pub const OUT_HIGH_WATER: u64 = 64 * 1024;
/// While a connection still has complete requests queued (its quantum ran
/// out), its responses wait for the next turn unless this much is already
/// pending: a pipeline of small responses then leaves in one write instead
/// of one per turn.
pub const FLUSH_THRESHOLD: u64 = 16 * 1024;
/// Bytes one connection may write per turn before yielding to the others
/// (lighttpd's "so as not to monopolise").
pub const WRITE_BUDGET: u64 = 512 * 1024;
/// Bytes one closing connection may drain per turn.
pub const DRAIN_BUDGET: usize = 64 * 1024;
/// A lingering connection is closed after draining this much, whatever the
/// time: the bound in bytes beside `--linger-timeout` (nginx has both).
/// Large enough for an ordinary upload to finish arriving after an early
/// error response, so the client still reads that response.
pub const LINGER_MAX_BYTES: u64 = 64 << 20;
/// How long a client that asked to close gets to close first (§7: the
/// TIME_WAIT state then lands on the client) before we shut down and drain.
pub const CLIENT_FIRST_GRACE_MS: u64 = 1000;
/// A request head in progress this long is "slow" and evicted before any
/// idle connection when slots run out.
pub const SLOW_HEAD_MS: u64 = 1000;
/// Free buffer sets always kept for reuse; beyond these the pool keeps what
/// the last second's peak needed (`BufPool`), so a burst's buffers are
/// given back to the allocator instead of staying resident.
pub const POOL_MIN_FREE: usize = 64;
/// A subscriber whose unsent output passes this is too slow: it is closed
/// gracefully (it can resume from history with `Last-Event-ID`) rather
/// than let its queue grow without bound.
pub const SUB_MAX_QUEUE: u64 = 256 * 1024;
/// A subscriber's queued output is kept in segments of about this size,
/// so that letting a slow one go can drop what is unsent without cutting
/// a message in half (`Output::truncate_after_front`).
pub const SUB_SEGMENT: usize = 16 * 1024;
/// Default `Retry-After` for 503s at the door, in seconds.
pub const RETRY_AFTER_SECS: u64 = 1;

/// Below this occupancy the server counts as quiet and idle connections get
/// the full `--idle-timeout`.
const QUIET_OCCUPANCY: f64 = 0.5;

/// The idle timeout in force (§11: "short timeout during overload, long
/// timeout during underload"):
///
/// ```text
/// occupancy = max(live slots / --max-conns, buffer memory / --max-buffer-memory)
/// pressure  = clamp((occupancy - 0.5) / 0.5, 0, 1)
/// timeout   = idle - (idle - min_idle) * pressure
/// ```
///
/// Full timeout up to half occupancy, then linear down to the minimum at
/// full occupancy. It is applied when reading the idle list's head, so the
/// list never needs re-sorting.
pub fn adaptive_idle_timeout(idle_ms: u64, min_idle_ms: u64, slots: f64, memory: f64) -> u64 {
    let occupancy = slots.max(memory);
    let pressure = ((occupancy - QUIET_OCCUPANCY) / (1.0 - QUIET_OCCUPANCY)).clamp(0.0, 1.0);
    let span = idle_ms.saturating_sub(min_idle_ms) as f64;
    idle_ms - (span * pressure).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_timeout_shrinks_with_occupancy() {
        assert_eq!(adaptive_idle_timeout(60_000, 2_000, 0.0, 0.0), 60_000);
        assert_eq!(adaptive_idle_timeout(60_000, 2_000, 0.5, 0.1), 60_000);
        assert_eq!(adaptive_idle_timeout(60_000, 2_000, 0.75, 0.0), 31_000);
        assert_eq!(adaptive_idle_timeout(60_000, 2_000, 1.0, 0.0), 2_000);
        // memory alone can drive it
        assert_eq!(adaptive_idle_timeout(60_000, 2_000, 0.1, 1.0), 2_000);
        assert_eq!(adaptive_idle_timeout(60_000, 2_000, 0.1, 7.0), 2_000);
    }
}
