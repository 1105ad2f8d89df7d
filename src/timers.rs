//! One FIFO list per connection state: every connection is on exactly the
//! list of its state, and the transition function is what moves it.
//!
//! Every connection on one timed list has the same timeout, so the list is
//! already sorted by deadline: enter at the tail stamped with the turn's
//! clock, expire from the head, restart a timer by moving to the tail. All
//! O(1), no heap, no allocation (DESIGN.md, "Timers without a heap"). The
//! idle list doubles as the LRU used for eviction (Gettys & Freier §5, §9:
//! LRU is as good as anything), the list lengths are the `/_status` gauges,
//! and the `Closed` list is the reap queue freed at the end of the turn.

use crate::conn::Kind;
use crate::list::{Ends, Links};

pub struct Timers {
    links: Links,
    ends: [Ends; Kind::ALL.len()],
}

impl Default for Timers {
    fn default() -> Self {
        Timers { links: Links::default(), ends: [Ends::default(); Kind::ALL.len()] }
    }
}

impl Timers {
    /// The state list `key` is on.
    pub fn kind_of(&self, key: usize) -> Option<Kind> {
        self.links.list_of(key).and_then(|l| Kind::ALL.get(l as usize).copied())
    }

    /// When `key` entered its list: the stamp its timeout runs from.
    #[inline]
    pub fn since(&self, key: usize) -> u64 {
        self.links.since(key)
    }

    #[inline]
    pub fn len(&self, kind: Kind) -> usize {
        self.ends[kind as usize].len()
    }

    /// The connection that has been in `kind` longest.
    #[inline]
    pub fn front(&self, kind: Kind) -> Option<usize> {
        self.ends[kind as usize].front()
    }

    /// The next connection after `key` on its list (oldest first).
    pub fn next(&self, key: usize) -> Option<usize> {
        self.links.next(key)
    }

    /// The earliest stamp-plus-timeout among the heads of `kinds`' lists
    /// (each list is sorted, so its head is its earliest): `u64::MAX` when
    /// they are all empty. Asked once per turn, for the poll's timeout.
    #[inline]
    pub fn earliest(&self, kinds: &[Kind], timeout: impl Fn(Kind) -> u64) -> u64 {
        let mut due = u64::MAX;
        for &kind in kinds {
            if let Some(head) = self.ends[kind as usize].front() {
                due = due.min(self.links.since(head).saturating_add(timeout(kind)));
            }
        }
        due
    }

    /// Put `key` at the tail of `kind`'s list stamped `now`, leaving the
    /// list it was on. O(1).
    pub fn enter(&mut self, key: usize, kind: Kind, now: u64) {
        self.leave(key);
        self.links.push_back(&mut self.ends[kind as usize], kind as u32, key, now);
    }

    /// Restart `key`'s timer in `kind`, the list it is on. O(1).
    pub fn touch(&mut self, key: usize, kind: Kind, now: u64) {
        self.links.move_to_back(&mut self.ends[kind as usize], kind as u32, key, now);
    }

    /// Take `key` off its list. O(1).
    pub fn leave(&mut self, key: usize) {
        if let Some(list) = self.links.list_of(key)
            && let Some(ends) = self.ends.get_mut(list as usize)
        {
            self.links.unlink(ends, list, key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_follows_entry_order_and_a_restart_moves_to_the_tail() {
        let mut t = Timers::default();
        for (stamp, key) in [4usize, 1, 9].into_iter().enumerate() {
            t.enter(key, Kind::Idle, stamp as u64);
        }
        t.enter(4, Kind::Idle, 10);
        assert_eq!(t.front(Kind::Idle), Some(1));
        assert_eq!(t.next(1), Some(9));
        assert_eq!(t.next(9), Some(4));
        assert_eq!(t.since(4), 10);
        t.enter(1, Kind::Lingering, 11);
        assert_eq!((t.len(Kind::Idle), t.len(Kind::Lingering)), (2, 1));
        assert_eq!(t.kind_of(1), Some(Kind::Lingering));
        t.leave(1);
        t.leave(1);
        assert_eq!(t.kind_of(1), None);
        assert_eq!(t.len(Kind::Lingering), 0);
    }
}
