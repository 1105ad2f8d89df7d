//! The loop's clock, passed in rather than read inside the phases: the
//! server reads it once per turn, and a test can drive it by hand, turn by
//! turn, so that timeouts are tested without sleeping.

use std::time::{Duration, Instant, SystemTime};

pub enum Clock {
    /// The monotonic clock since start, and the system's wall clock.
    System { started: Instant },
    /// Set by the caller: milliseconds since start, and the wall clock that
    /// goes with them (the wall time at start plus those milliseconds).
    Manual { ms: u64, wall_at_start: SystemTime },
}

impl Clock {
    pub fn system() -> Clock {
        Clock::System { started: Instant::now() }
    }

    /// A manual clock at 0 ms, whose wall clock starts at `wall_at_start`.
    pub fn manual(wall_at_start: SystemTime) -> Clock {
        Clock::Manual { ms: 0, wall_at_start }
    }

    /// Milliseconds since start (the loop clock every timer runs on).
    pub fn ms(&self) -> u64 {
        match self {
            Clock::System { started } => started.elapsed().as_millis() as u64,
            Clock::Manual { ms, .. } => *ms,
        }
    }

    /// The wall clock (`Date`, file times, the access log).
    pub fn wall(&self) -> SystemTime {
        match self {
            Clock::System { .. } => SystemTime::now(),
            Clock::Manual { ms, wall_at_start } => *wall_at_start + Duration::from_millis(*ms),
        }
    }

    /// Move a manual clock to `ms` (never backwards); no effect on the
    /// system clock.
    pub fn set(&mut self, to: u64) {
        if let Clock::Manual { ms, .. } = self {
            *ms = (*ms).max(to);
        }
    }
}
