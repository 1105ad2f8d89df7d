//! `ChannelOrder`: the delivery rule of one channel on one node, pure.
//! Messages reach local subscribers exactly once and in id order whether
//! they come pushed, from a range, or both, across reconnects.
//!
//! - A message at or below the last delivered id is a duplicate: dropped.
//! - The next id is delivered at once.
//! - A message further ahead means some were missed (a reconnect, or pushes
//!   lost with a connection): it is held, and the caller asks the link for
//!   a range after the last delivered id. While that range is answered,
//!   pushes are held too; each page is merged with them in id order.
//! - A range that jumps ahead (its first id past the next one) means the
//!   stream no longer has the ones between: trimmed past the history
//!   length, or expired. They cannot be recovered; delivery continues from
//!   there, as a late in-process subscriber finds history starting there.
//!
//! Why holding is bounded and still exact: Redis runs commands one at a
//! time, so every push that reaches this node before a range page was
//! published before that page was read, and the page holds it (unless it
//! was already trimmed, and then the held copy is the only one left, which
//! is why pushes are held rather than dropped). Past [`MAX_HELD`] the
//! newest are dropped: the range still returns them.

use std::collections::VecDeque;

use bytes::Bytes;

/// Pushes held per channel while a range is answered, at most.
pub const MAX_HELD: usize = 1024;

#[derive(Debug, Default)]
pub struct ChannelOrder {
    last: u64,
    filling: bool,
    held: VecDeque<(u64, Bytes)>,
}

impl ChannelOrder {
    /// `last`: the last id delivered locally (0 for a channel new here,
    /// which then takes the whole history: call [`fill`](Self::fill)).
    pub fn new(last: u64) -> ChannelOrder {
        ChannelOrder { last, ..ChannelOrder::default() }
    }

    /// The last id delivered: the `floor` to publish and fill with.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// A range is being answered.
    pub fn filling(&self) -> bool {
        self.filling
    }

    /// Start a fill (on the first local subscriber, and after every
    /// reconnect once subscribed again): returns `after` for
    /// `Link::range(channel, after, floor = after, tag)`.
    pub fn fill(&mut self) -> u64 {
        self.filling = true;
        self.last
    }

    /// A pushed message. What may be delivered now is appended to `out`;
    /// `Some(after)` asks the caller to request a range (and it is then
    /// filling).
    pub fn message(&mut self, id: u64, data: Bytes, out: &mut Vec<(u64, Bytes)>) -> Option<u64> {
        if id <= self.last {
            return None;
        }
        if self.filling {
            self.hold(id, data);
            return None;
        }
        if id == self.last + 1 {
            self.last = id;
            out.push((id, data));
            return None;
        }
        self.hold(id, data);
        Some(self.fill())
    }

    fn hold(&mut self, id: u64, data: Bytes) {
        // Pushes arrive in id order (Redis runs one script at a time), so
        // the queue stays sorted by appending.
        if self.held.len() < MAX_HELD && self.held.back().is_none_or(|h| h.0 < id) {
            self.held.push_back((id, data));
        }
    }

    /// One page of the range asked for. Deliverable messages, page and held
    /// merged in id order, are appended to `out`. On the last page
    /// (`more == false`) the fill is over.
    pub fn range_page(&mut self, messages: Vec<(u64, Bytes)>, more: bool, out: &mut Vec<(u64, Bytes)>) {
        for (id, data) in messages {
            while self.held.front().is_some_and(|h| h.0 < id) {
                if let Some((hid, hdata)) = self.held.pop_front() {
                    self.deliver(hid, hdata, out);
                }
            }
            self.deliver(id, data, out);
        }
        if !more {
            // What is still held came after the range was read, or was
            // trimmed from it: all of it is new here.
            while let Some((id, data)) = self.held.pop_front() {
                self.deliver(id, data, out);
            }
            self.filling = false;
        }
    }

    fn deliver(&mut self, id: u64, data: Bytes, out: &mut Vec<(u64, Bytes)>) {
        if id > self.last {
            self.last = id;
            out.push((id, data));
        }
    }

    /// The range failed or the connection was lost: drop what is held (the
    /// next fill after reconnecting asks for all of it again).
    pub fn interrupted(&mut self) {
        self.held.clear();
        self.filling = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u64) -> (u64, Bytes) {
        (id, Bytes::from(id.to_string()))
    }

    fn ids(out: &[(u64, Bytes)]) -> Vec<u64> {
        out.iter().map(|m| m.0).collect()
    }

    #[test]
    fn in_order_duplicates_and_gaps() {
        let mut o = ChannelOrder::new(5);
        let mut out = Vec::new();
        assert_eq!(o.message(6, m(6).1, &mut out), None);
        assert_eq!(o.message(6, m(6).1, &mut out), None);
        assert_eq!(o.message(3, m(3).1, &mut out), None);
        assert_eq!(ids(&out), [6]);
        // 7 and 8 were missed: 9 is held and a range after 6 asked for.
        assert_eq!(o.message(9, m(9).1, &mut out), Some(6));
        assert!(o.filling());
        assert_eq!(o.message(10, m(10).1, &mut out), None);
        assert_eq!(ids(&out), [6]);
        o.range_page(vec![m(7), m(8), m(9), m(10)], false, &mut out);
        assert_eq!(ids(&out), [6, 7, 8, 9, 10]);
        assert!(!o.filling());
        assert_eq!(o.last(), 10);
    }

    #[test]
    fn reconnect_fill_in_pages_merged_with_pushes() {
        let mut o = ChannelOrder::new(10);
        let mut out = Vec::new();
        assert_eq!(o.fill(), 10);
        // Pushes published while the pages were read.
        o.message(75, m(75).1, &mut out);
        o.range_page((11..=74).map(m).collect(), true, &mut out);
        o.message(76, m(76).1, &mut out);
        o.range_page(vec![m(75), m(76)], false, &mut out);
        assert_eq!(ids(&out), (11..=76).collect::<Vec<_>>());
        // Afterwards, pushes flow straight through.
        o.message(77, m(77).1, &mut out);
        assert_eq!(o.last(), 77);
    }

    #[test]
    fn trimmed_history_jumps_and_held_copies_survive() {
        let mut o = ChannelOrder::new(0);
        let mut out = Vec::new();
        o.fill();
        // 3 was pushed, then trimmed from the stream before the range read.
        o.message(3, m(3).1, &mut out);
        o.range_page(vec![m(5), m(6)], false, &mut out);
        assert_eq!(ids(&out), [3, 5, 6]);
    }

    #[test]
    fn interrupted_fill_forgets_held() {
        let mut o = ChannelOrder::new(1);
        let mut out = Vec::new();
        assert_eq!(o.message(4, m(4).1, &mut out), Some(1));
        o.interrupted();
        assert!(!o.filling());
        assert_eq!(o.fill(), 1);
        o.range_page(vec![m(2), m(3), m(4)], false, &mut out);
        assert_eq!(ids(&out), [2, 3, 4]);
    }

    #[test]
    fn holding_is_bounded() {
        let mut o = ChannelOrder::new(0);
        let mut out = Vec::new();
        o.fill();
        for id in 1..=(MAX_HELD as u64 + 100) {
            o.message(id, m(id).1, &mut out);
        }
        assert_eq!(o.held.len(), MAX_HELD);
        o.range_page((1..=MAX_HELD as u64 + 100).map(m).collect(), false, &mut out);
        assert_eq!(out.len(), MAX_HELD + 100);
    }
}
