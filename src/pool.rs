//! Buffer sets for connections with work: taken from the pool when a
//! connection has bytes to read or write, given back as soon as it has
//! none, so an idle connection holds no buffers ("every allocation on the
//! hot path is a decision").

use crate::http::Output;
use crate::metrics::Pending;

/// Per-connection buffers: taken from the pool when there is work, given
/// back when the connection goes idle, so an idle connection holds none.
pub struct Bufs {
    /// Input, read straight into the spare capacity: a fresh buffer costs
    /// an allocation, never a memset. Starts small (`INPUT_START`).
    pub input: Vec<u8>,
    /// Start of the unconsumed input.
    pub start: usize,
    pub out: Output,
    /// When the responses not yet written were asked for (the
    /// response-time histogram, `metrics.rs`).
    pub timing: Pending,
}

impl Bufs {
    #[inline]
    pub fn has_input(&self) -> bool {
        self.start < self.input.len()
    }

    /// Room to read more (after compaction, or by growing up to `limit`).
    #[inline]
    pub fn has_room(&self, limit: usize) -> bool {
        self.start > 0 || self.input.len() < self.input.capacity() || self.input.capacity() < limit
    }

    /// Bytes of memory held, for the buffer-memory budget.
    pub fn memory(&self) -> usize {
        self.input.capacity() + self.out.capacity()
    }
}

/// A free list of buffer sets that follows the load.
///
/// Under steady load connections go idle and busy again all the time; with
/// a fixed small free list the sets beyond it were freed and allocated
/// again on every such swing (`malloc`/`free` were 3–5% of the server's
/// CPU at 1000 connections). So the list may hold as many sets as were out
/// at once recently, and once a second (`trim`) it gives back what the last
/// window did not need: a burst's buffers return to the allocator two or
/// three seconds after it, and never more sets exist than were in use at
/// one time (or the minimum kept free, if that is more).
pub struct BufPool {
    /// Sets currently held by connections.
    pub out: usize,
    // Boxed on purpose: a connection holds `Option<Box<Bufs>>` (8 bytes
    // when idle), and moving sets in and out of the pool keeps the box.
    #[allow(clippy::vec_box)]
    free: Vec<Box<Bufs>>,
    /// Bytes the free sets hold, kept as they come and go so the status
    /// gauge need not walk the list.
    free_bytes: usize,
    input_capacity: usize,
    /// Free sets kept whatever the recent peak.
    min_free: usize,
    /// Most sets out at once in the current window and the one before.
    peak: usize,
    prev_peak: usize,
}

impl BufPool {
    pub fn new(input_capacity: usize, min_free: usize) -> BufPool {
        BufPool { out: 0, free: Vec::new(), free_bytes: 0, input_capacity, min_free, peak: 0, prev_peak: 0 }
    }

    pub fn take(&mut self) -> Box<Bufs> {
        self.out += 1;
        self.peak = self.peak.max(self.out);
        match self.free.pop() {
            Some(bufs) => {
                self.free_bytes -= bufs.memory();
                bufs
            }
            // Input is reserved on the first read: a subscriber that is only
            // written to never needs an input buffer. Output starts with
            // room for a few small responses instead of doubling up to it.
            None => Box::new(Bufs {
                input: Vec::new(),
                start: 0,
                out: Output::with_capacity(OUTPUT_START),
                timing: Pending::default(),
            }),
        }
    }

    pub fn give(&mut self, mut bufs: Box<Bufs>) {
        self.out -= 1;
        let recent = self.peak.max(self.prev_peak);
        if self.free.len() < self.min_free || self.out + self.free.len() < recent {
            bufs.start = 0;
            bufs.timing = Pending::default();
            bufs.input.clear();
            // A buffer grown for a large head (`--max-header-bytes` can be
            // big) or a large response is not worth keeping for everyone.
            if bufs.input.capacity() > POOL_KEEP_BYTES {
                bufs.input = Vec::new();
            }
            bufs.out.trim(POOL_KEEP_BYTES);
            self.free_bytes += bufs.memory();
            self.free.push(bufs);
        }
    }

    /// Close the current window (call once a second): keep only the free
    /// sets the window just ended could have used.
    pub fn trim(&mut self) {
        self.prev_peak = self.peak;
        self.peak = self.out;
        let keep = self.min_free.max(self.prev_peak.saturating_sub(self.out));
        while self.free.len() > keep {
            if let Some(bufs) = self.free.pop() {
                self.free_bytes -= bufs.memory();
            }
        }
        if self.free.capacity() > 2 * keep.max(self.min_free) {
            self.free.shrink_to(keep);
        }
    }

    pub fn memory(&self) -> usize {
        self.free_bytes
    }

    /// Whether a `trim` may still give something back: the loop must not
    /// sleep past the next one while it could.
    pub fn wants_trim(&self) -> bool {
        self.free.len() > self.min_free
    }

    /// The input buffer size connections read into.
    pub fn input_capacity(&self) -> usize {
        self.input_capacity
    }
}

/// The most a pooled set keeps of each of its buffers.
const POOL_KEEP_BYTES: usize = 16 * 1024;
/// Output capacity of a fresh buffer set: a few small responses' worth.
const OUTPUT_START: usize = 1024;
/// Input capacity of a fresh buffer set, doubled up to the full size when
/// a read fills it (nginx starts at 1 KiB for the same reason). Most request
/// heads fit, and a burst of newcomers then touches a few KiB each instead
/// of a 16 KiB buffer's worth of pages: with 10 000 connections opened 250
/// at a time, that burst was most of the memory measured per idle
/// connection.
pub const INPUT_START: usize = 2048;

#[cfg(test)]
mod tests {
    use super::*;

    /// Take `n` sets at once, then give them all back.
    fn take_and_give(pool: &mut BufPool, n: usize) {
        #[allow(clippy::vec_box)] // the pool deals in boxes
        let sets: Vec<Box<Bufs>> = (0..n).map(|_| pool.take()).collect();
        for bufs in sets {
            pool.give(bufs);
        }
    }

    #[test]
    fn pool_keeps_the_recent_peak_then_gives_it_back() {
        let mut pool = BufPool::new(1024, 4);
        take_and_give(&mut pool, 100);
        assert_eq!(pool.out, 0);
        assert_eq!(pool.free.len(), 100, "every set of the peak is kept");
        assert!(pool.wants_trim());

        // Load swings between idle and busy: no fresh sets are made.
        #[allow(clippy::vec_box)] // the pool deals in boxes
        let sets: Vec<Box<Bufs>> = (0..100).map(|_| pool.take()).collect();
        assert!(pool.free.is_empty());
        for bufs in sets {
            pool.give(bufs);
        }

        pool.trim(); // the window that saw 100 out ends: still needed
        assert_eq!(pool.free.len(), 100);
        pool.trim(); // a quiet window: back to the minimum
        assert_eq!(pool.free.len(), 4);
        assert!(!pool.wants_trim());
        assert_eq!(pool.memory(), pool.free.iter().map(|b| b.memory()).sum::<usize>());
    }

    /// Random takes, growths, gives and trims: the byte count stays the
    /// real sum, `out` the number held, and two quiet trims end at the
    /// minimum.
    #[test]
    fn pool_accounting_holds_under_random_use() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut pool = BufPool::new(16 * 1024, 4);
        let mut held: Vec<Box<Bufs>> = Vec::new();
        for _ in 0..20_000 {
            match next(10) {
                0..=3 => held.push(pool.take()),
                4..=6 if !held.is_empty() => {
                    let i = next(held.len() as u64) as usize;
                    pool.give(held.swap_remove(i));
                }
                7 if !held.is_empty() => {
                    let i = next(held.len() as u64) as usize;
                    let grow = 1 + next(40 * 1024) as usize;
                    held[i].input.reserve_exact(grow);
                    held[i].out.bytes().extend(std::iter::repeat_n(b'x', grow / 4));
                }
                8 => pool.trim(),
                _ => {}
            }
            assert_eq!(pool.out, held.len());
            assert_eq!(pool.memory(), pool.free.iter().map(|b| b.memory()).sum::<usize>());
        }
        for bufs in held.drain(..) {
            pool.give(bufs);
        }
        pool.trim();
        pool.trim();
        assert!(pool.free.len() <= 4, "back to the minimum");
        assert!(!pool.wants_trim());
        assert!(pool.free.iter().all(|b| b.memory() <= 2 * POOL_KEEP_BYTES), "no oversized buffer kept");
    }

    #[test]
    fn pool_never_holds_more_sets_than_were_out_at_once() {
        let mut pool = BufPool::new(1024, 2);
        take_and_give(&mut pool, 10);
        pool.trim();
        pool.trim();
        // Peak is now 0 in both windows: only the minimum is kept.
        take_and_give(&mut pool, 5);
        assert_eq!(pool.free.len(), 5, "the current window's peak");
        pool.trim();
        pool.trim();
        assert_eq!(pool.free.len(), 2);
    }
}
