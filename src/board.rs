//! The status board: every worker's `/_status` figures in one region of
//! memory that the supervisor maps before forking
//! (`mmap(MAP_SHARED | MAP_ANONYMOUS)`), so that `/_status?workers=all`
//! answers for the whole server from one request, with no messages between
//! processes and nothing for the supervisor to do.
//!
//! One slot per worker, written by that worker alone, at most once a second
//! (a turn ends with a comparison of the clock and a store of its live
//! connections, which the workers balance their accepts on: nothing per
//! request), and
//! read by whichever worker answers `?workers=all`; that worker's own
//! figures are taken live. A slot is a seqlock: its sequence is odd while
//! the writer is in the middle, and a reader that sees it change reads
//! again, so no answer mixes two publications of one worker. The supervisor
//! marks a slot vacant when it reaps the worker, so the sum is over live
//! workers: a replacement starts its counters from zero, as any restarted
//! process does.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering, fence};

use crate::metrics::{HISTOGRAM_CELLS, Histogram};
use crate::server::{NEVER, Server};
use crate::status::{self, FIELDS, Field};

/// How often a busy worker publishes: `?workers=all` sees the others'
/// figures at most this old.
pub const PUBLISH_MS: u64 = 1000;

/// Reads of one slot before taking what was read: a writer is in the
/// middle for a few dozen stores, so a second read nearly always succeeds.
const READ_TRIES: usize = 64;

/// One worker's figures. 128-byte aligned so that two workers never write
/// the same cache line (nor an adjacent pair, which x86 prefetches together).
#[repr(C, align(128))]
struct Slot {
    /// Even: stable; odd: being written.
    seq: AtomicU64,
    /// The worker's pid; 0: vacant.
    pid: AtomicU64,
    /// Its live connections, stored at the end of every turn (outside the
    /// seqlock: one number, read by the other workers when they accept).
    live: AtomicU64,
    /// In `status::fields` order.
    values: [AtomicU64; FIELDS],
    /// The response-time histogram (`Histogram::cells`), for `/_metrics`.
    response: [AtomicU64; HISTOGRAM_CELLS],
}

/// The shared region: `len` slots.
pub struct Board {
    slots: NonNull<Slot>,
    len: usize,
}

impl Board {
    /// Map a zeroed region of `workers` slots (zero is a vacant slot),
    /// shared with every process forked after this.
    pub fn new(workers: usize) -> io::Result<Board> {
        let len = workers.max(1);
        let bytes = len * std::mem::size_of::<Slot>();
        // SAFETY: an anonymous mapping of fresh pages; no file, no address
        // hint. The kernel zeroes them, and all-zero bytes are valid
        // `AtomicU64`s (same layout as `u64`).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // mmap returns page-aligned memory, aligned for `Slot`.
        let slots = NonNull::new(ptr.cast::<Slot>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Board { slots, len })
    }

    fn slot(&self, i: usize) -> Option<&Slot> {
        // SAFETY: `i < len` slots were mapped in `new` and stay mapped
        // until drop; the slots are only touched through atomics.
        (i < self.len).then(|| unsafe { &*self.slots.as_ptr().add(i) })
    }

    /// Write slot `i` under its seqlock. Only one process writes a slot at
    /// a time: its worker while alive, the supervisor once it is reaped.
    fn write(&self, i: usize, pid: u32, values: &[Field; FIELDS], response: &[u64; HISTOGRAM_CELLS]) {
        let Some(slot) = self.slot(i) else { return };
        let seq = slot.seq.load(Ordering::Relaxed);
        slot.seq.store(seq.wrapping_add(1) | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        for (cell, (_, value)) in slot.values.iter().zip(values) {
            cell.store(*value, Ordering::Relaxed);
        }
        for (cell, value) in slot.response.iter().zip(response) {
            cell.store(*value, Ordering::Relaxed);
        }
        slot.pid.store(u64::from(pid), Ordering::Relaxed);
        slot.seq.store((seq | 1).wrapping_add(1), Ordering::Release);
    }

    /// Slot `i` is no one's (the supervisor reaped its worker).
    pub fn vacate(&self, i: usize) {
        self.write(i, 0, &[("", 0); FIELDS], &[0; HISTOGRAM_CELLS]);
        if let Some(slot) = self.slot(i) {
            slot.live.store(0, Ordering::Relaxed);
        }
    }

    fn set_live(&self, i: usize, live: usize) {
        if let Some(slot) = self.slot(i) {
            slot.live.store(live as u64, Ordering::Relaxed);
        }
    }

    /// The fewest live connections among the occupied slots but `me`.
    fn fewest_live_but(&self, me: usize) -> Option<usize> {
        (0..self.len)
            .filter(|&i| i != me)
            .filter_map(|i| self.slot(i))
            .filter(|slot| slot.pid.load(Ordering::Relaxed) != 0)
            .map(|slot| slot.live.load(Ordering::Relaxed) as usize)
            .min()
    }

    /// Slot `i`'s values and histogram, `None` when vacant.
    fn read(&self, i: usize) -> Option<([u64; FIELDS], [u64; HISTOGRAM_CELLS])> {
        let slot = self.slot(i)?;
        let mut values = [0u64; FIELDS];
        let mut response = [0u64; HISTOGRAM_CELLS];
        let mut pid = 0;
        for _ in 0..READ_TRIES {
            let before = slot.seq.load(Ordering::Acquire);
            for (value, cell) in values.iter_mut().zip(&slot.values) {
                *value = cell.load(Ordering::Relaxed);
            }
            for (value, cell) in response.iter_mut().zip(&slot.response) {
                *value = cell.load(Ordering::Relaxed);
            }
            pid = slot.pid.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if before & 1 == 0 && slot.seq.load(Ordering::Relaxed) == before {
                break;
            }
        }
        (pid != 0).then_some((values, response))
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped; no reference into it
        // outlives `self`. Each process unmaps only its own view.
        unsafe {
            libc::munmap(self.slots.as_ptr().cast(), self.len * std::mem::size_of::<Slot>());
        }
    }
}

/// A worker's place on the board.
pub struct Seat {
    board: Board,
    index: usize,
    /// Loop clock of the last publication.
    published: u64,
    /// A turn has run since then: the slot may be behind.
    behind: bool,
}

impl Seat {
    pub fn new(board: Board, index: usize) -> Seat {
        Seat { board, index, published: 0, behind: true }
    }

    /// The fewest live connections among the other live workers, as they
    /// stood at the end of their last turns.
    pub fn fewest_elsewhere(&self) -> Option<usize> {
        self.board.fewest_live_but(self.index)
    }

    /// Add every other live worker's figures (and response times) to this
    /// worker's own.
    pub fn total(&self, fields: &mut [Field; FIELDS], response_time: &mut Histogram) {
        for i in (0..self.board.len).filter(|&i| i != self.index) {
            if let Some((theirs, response)) = self.board.read(i) {
                status::combine(fields, &theirs);
                response_time.add_cells(&response);
            }
        }
    }
}

impl Server {
    /// Take a seat on the supervisor's board and publish at once, so that
    /// this worker counts in `?workers=all` from its first turn.
    pub fn take_seat(&mut self, seat: Seat) {
        self.seat = Some(seat);
        self.publish_status(true);
    }

    /// End of a turn: store this worker's live connections (the others
    /// balance accepts on it), and publish its figures if a second has
    /// passed since the last time (or `now`).
    pub(crate) fn publish_status(&mut self, now: bool) {
        let Some(seat) = &self.seat else { return };
        seat.board.set_live(seat.index, self.live());
        if !now && self.now < seat.published + PUBLISH_MS {
            if let Some(seat) = &mut self.seat {
                seat.behind = true;
            }
            return;
        }
        let fields = status::fields(&self.stats, &self.gauges(), &self.channels);
        seat.board.write(seat.index, std::process::id(), &fields, &self.stats.response_time.cells());
        if let Some(seat) = &mut self.seat {
            seat.published = self.now;
            seat.behind = false;
        }
    }

    /// When to wake to publish what the last turns changed: an idle worker
    /// would otherwise leave its last second unpublished until its next
    /// event.
    pub(crate) fn publish_wake_ms(&self) -> u64 {
        match self.seat.as_ref().filter(|s| s.behind) {
            Some(seat) => (seat.published + PUBLISH_MS).saturating_sub(self.now),
            None => NEVER,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::PubSub;
    use crate::status::{Counters, Gauges};

    fn values_of(requests: u64) -> [Field; FIELDS] {
        let c = Counters { requests, ..Counters::default() };
        status::fields(&c, &Gauges { idle_timeout_ms: 1000, ..Gauges::default() }, &PubSub::new(1, 1))
    }

    fn get(fields: &[Field], name: &str) -> u64 {
        fields.iter().find(|(n, _)| *n == name).map(|f| f.1).unwrap()
    }

    #[test]
    fn the_total_is_over_live_workers_and_a_vacated_slot_drops_out() {
        let board = Board::new(3).unwrap();
        board.write(1, 4242, &values_of(7), &[0; HISTOGRAM_CELLS]);
        board.write(2, 4343, &values_of(11), &[0; HISTOGRAM_CELLS]);
        let seat = Seat::new(board, 0);
        let mut mine = values_of(5);
        seat.total(&mut mine, &mut Histogram::default());
        assert_eq!((get(&mine, "requests"), get(&mine, "workers")), (23, 3));
        seat.board.set_live(1, 40);
        seat.board.set_live(2, 30);
        assert_eq!(seat.fewest_elsewhere(), Some(30));
        seat.board.vacate(2);
        assert_eq!(seat.fewest_elsewhere(), Some(40), "a vacant slot is no one's load");
        let mut mine = values_of(5);
        seat.total(&mut mine, &mut Histogram::default());
        assert_eq!((get(&mine, "requests"), get(&mine, "workers")), (12, 2));
        // A replacement in slot 2 starts from its own figures.
        seat.board.write(2, 4444, &values_of(1), &[0; HISTOGRAM_CELLS]);
        let mut mine = values_of(5);
        seat.total(&mut mine, &mut Histogram::default());
        assert_eq!((get(&mine, "requests"), get(&mine, "workers")), (13, 3));
    }

    #[test]
    fn a_slot_is_never_read_half_written() {
        let board = Board::new(2).unwrap();
        let slot = board.slot(1).unwrap();
        let requests = values_of(0).iter().position(|(n, _)| *n == "requests").unwrap();
        board.write(1, 9, &values_of(3), &[0; HISTOGRAM_CELLS]);
        assert_eq!(slot.seq.load(Ordering::Relaxed) % 2, 0, "stable after a write");
        // A writer caught in the middle (or killed there): the reader
        // retries, then takes what it has rather than wait (it never
        // blocks), and the next write leaves the slot stable again.
        let seq = slot.seq.load(Ordering::Relaxed);
        slot.seq.store(seq + 1, Ordering::Relaxed);
        assert_eq!(board.read(1).map(|(v, _)| v[requests]), Some(3));
        board.write(1, 9, &values_of(4), &[0; HISTOGRAM_CELLS]);
        assert_eq!(slot.seq.load(Ordering::Relaxed) % 2, 0);
        assert_eq!(board.read(1).map(|(v, _)| v[requests]), Some(4));
        assert!(board.read(5).is_none(), "no such slot");
        assert!(board.read(0).is_none(), "vacant");
    }

    #[test]
    fn a_forked_process_writes_where_its_parent_reads() {
        let board = Board::new(2).unwrap();
        let values = values_of(42);
        let mut h = Histogram::default();
        h.observe(3, 2);
        let response = h.cells();
        // SAFETY: the test harness has threads, so the child does nothing
        // but atomic stores and _exit (no allocation); the parent waits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            board.write(1, 77, &values, &response);
            // SAFETY: leave without running the test harness's exit path.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        let seat = Seat::new(board, 0);
        let mut mine = values_of(0);
        let mut times = Histogram::default();
        seat.total(&mut mine, &mut times);
        assert_eq!(get(&mine, "requests"), 42);
        assert_eq!((times.count(), times.sum_ms()), (2, 6), "the response times came along");
    }
}
