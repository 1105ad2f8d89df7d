//! Intrusive doubly linked lists over slab keys.
//!
//! The links live in a vector indexed by key, beside the slab rather than
//! inside its records: unlinking a key never needs its record (or its
//! neighbours' records), so a list cannot be corrupted or stalled by a
//! record that is missing, and one key can sit on lists of different
//! families at once (a timer list and a channel's subscriber list) without
//! the record knowing. Every operation is O(1); nothing allocates once the
//! vector has grown to the highest key in use (slab keys are dense, so that
//! is about the number of connections).
//!
//! Each node records which list of its family it is on, so an unlink is
//! checked against the list it names instead of trusting an index kept
//! somewhere else.
//!
//! A node is 16 bytes: the list number (24 bits: a state, or a channel id,
//! which `--max-channels` keeps below 10 million) shares a word with the
//! stamp (40 bits of milliseconds since start: 34 years), because one node
//! per connection slot is part of what every idle connection costs.

/// "No key".
const NIL: u32 = u32::MAX;
/// "On no list": the largest 24-bit list number.
const NO_LIST: u32 = (1 << 24) - 1;
const SINCE_BITS: u32 = 40;
const SINCE_MAX: u64 = (1 << SINCE_BITS) - 1;

#[derive(Clone, Copy, Debug)]
struct Node {
    prev: u32,
    next: u32,
    /// The list number (high 24 bits, `NO_LIST` when on none) and the loop
    /// clock (ms) when the key entered it (low 40 bits: the timer stamp).
    tag: u64,
}

impl Node {
    fn new(prev: u32, next: u32, list: u32, since: u64) -> Node {
        Node { prev, next, tag: (u64::from(list) << SINCE_BITS) | since.min(SINCE_MAX) }
    }

    fn list(&self) -> u32 {
        (self.tag >> SINCE_BITS) as u32
    }

    fn since(&self) -> u64 {
        self.tag & SINCE_MAX
    }

    fn restamp(&mut self, now: u64) {
        self.tag = (self.tag & !SINCE_MAX) | now.min(SINCE_MAX);
    }
}

const UNLINKED: Node = Node { prev: NIL, next: NIL, tag: (NO_LIST as u64) << SINCE_BITS };

/// Head, tail and length of one list.
#[derive(Clone, Copy, Debug)]
pub struct Ends {
    head: u32,
    tail: u32,
    len: usize,
}

impl Default for Ends {
    fn default() -> Self {
        Ends { head: NIL, tail: NIL, len: 0 }
    }
}

impl Ends {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The oldest key on the list.
    pub fn front(&self) -> Option<usize> {
        (self.head != NIL).then_some(self.head as usize)
    }
}

/// The nodes of one family of lists (every key is on at most one list of
/// the family).
#[derive(Default)]
pub struct Links {
    nodes: Vec<Node>,
}

impl Links {
    /// The list `key` is on, if any.
    #[inline]
    pub fn list_of(&self, key: usize) -> Option<u32> {
        self.nodes.get(key).map(Node::list).filter(|&l| l != NO_LIST)
    }

    /// When `key` entered its list (0 when on none).
    #[inline]
    pub fn since(&self, key: usize) -> u64 {
        self.nodes.get(key).map_or(0, Node::since)
    }

    /// The key after `key` on its list.
    pub fn next(&self, key: usize) -> Option<usize> {
        self.nodes.get(key).map(|n| n.next).filter(|&k| k != NIL).map(|k| k as usize)
    }

    /// Append `key` to list number `list`, whose ends are `ends`, stamped
    /// `now`. The key must be on no list of this family (callers unlink
    /// first); if it is, it is unlinked from the list it names first, which
    /// needs that list's ends: so this returns `false` and does nothing (as
    /// it does for a list number past 24 bits).
    pub fn push_back(&mut self, ends: &mut Ends, list: u32, key: usize, now: u64) -> bool {
        if key >= NIL as usize || list >= NO_LIST {
            return false;
        }
        if key >= self.nodes.len() {
            self.nodes.resize(key + 1, UNLINKED);
        }
        if self.nodes[key].list() != NO_LIST {
            return false;
        }
        let old_tail = ends.tail;
        self.nodes[key] = Node::new(old_tail, NIL, list, now);
        match self.nodes.get_mut(old_tail as usize) {
            Some(tail) if old_tail != NIL => tail.next = key as u32,
            _ => ends.head = key as u32,
        }
        ends.tail = key as u32;
        ends.len += 1;
        true
    }

    /// Move `key`, on list number `list`, to its tail stamped `now`: a
    /// timer restarted. The tail itself is only restamped (the common case
    /// of a connection alone on its list costs a store).
    pub fn move_to_back(&mut self, ends: &mut Ends, list: u32, key: usize, now: u64) {
        let Some(node) = self.nodes.get(key).copied().filter(|n| n.list() == list && list != NO_LIST) else { return };
        let k = key as u32;
        if ends.tail == k {
            self.nodes[key].restamp(now);
            return;
        }
        // Not the tail, so it has a next; unlink and append in one go (this
        // runs once per request: every answered request restarts a timer).
        match self.nodes.get_mut(node.prev as usize) {
            Some(prev) if node.prev != NIL => prev.next = node.next,
            _ => ends.head = node.next,
        }
        if let Some(next) = self.nodes.get_mut(node.next as usize) {
            next.prev = node.prev;
        }
        if let Some(tail) = self.nodes.get_mut(ends.tail as usize) {
            tail.next = k;
        }
        self.nodes[key] = Node::new(ends.tail, NIL, list, now);
        ends.tail = k;
    }

    /// Take `key` off list number `list` (whose ends are `ends`). A key that
    /// is not on that list is left alone: returns whether it was unlinked.
    pub fn unlink(&mut self, ends: &mut Ends, list: u32, key: usize) -> bool {
        let Some(node) = self.nodes.get(key).copied() else { return false };
        if node.list() != list || list == NO_LIST {
            return false;
        }
        self.nodes[key] = UNLINKED;
        match self.nodes.get_mut(node.prev as usize) {
            Some(prev) if node.prev != NIL => prev.next = node.next,
            _ => ends.head = node.next,
        }
        match self.nodes.get_mut(node.next as usize) {
            Some(next) if node.next != NIL => next.prev = node.prev,
            _ => ends.tail = node.prev,
        }
        ends.len -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(links: &Links, ends: &Ends) -> Vec<usize> {
        let mut out = Vec::new();
        let mut key = ends.front();
        while let Some(k) = key {
            out.push(k);
            key = links.next(k);
        }
        out
    }

    #[test]
    fn fifo_order_unlink_anywhere_and_checked_membership() {
        let mut links = Links::default();
        let (mut a, mut b) = (Ends::default(), Ends::default());
        for (t, k) in [3usize, 0, 7, 2].into_iter().enumerate() {
            assert!(links.push_back(&mut a, 0, k, t as u64));
        }
        assert!(links.push_back(&mut b, 1, 5, 9));
        assert_eq!(order(&links, &a), [3, 0, 7, 2]);
        assert_eq!(links.since(7), 2);
        // Already on a list: refused, nothing changes.
        assert!(!links.push_back(&mut b, 1, 7, 10));
        // Unlinking from a list the key is not on is refused.
        assert!(!links.unlink(&mut b, 1, 7));
        assert!(!links.unlink(&mut a, 0, 99));
        links.move_to_back(&mut a, 0, 0, 20);
        assert_eq!(order(&links, &a), [3, 7, 2, 0]);
        links.move_to_back(&mut a, 0, 0, 21);
        assert_eq!((order(&links, &a), links.since(0)), (vec![3, 7, 2, 0], 21));
        assert!(links.unlink(&mut a, 0, 7));
        assert!(links.unlink(&mut a, 0, 3));
        assert_eq!(order(&links, &a), [2, 0]);
        assert!(links.unlink(&mut a, 0, 2));
        assert!(links.unlink(&mut a, 0, 0));
        assert!(a.is_empty() && a.front().is_none());
        assert_eq!(links.list_of(5), Some(1));
        assert_eq!(links.list_of(7), None);
        assert_eq!(order(&links, &b), [5]);
    }

    #[test]
    fn a_node_is_sixteen_bytes_and_keeps_list_and_stamp_apart() {
        assert_eq!(std::mem::size_of::<Node>(), 16);
        let mut links = Links::default();
        let mut ends = Ends::default();
        let big = NO_LIST - 1;
        assert!(links.push_back(&mut ends, big, 3, SINCE_MAX + 5));
        assert_eq!((links.list_of(3), links.since(3)), (Some(big), SINCE_MAX));
        links.move_to_back(&mut ends, big, 3, 7);
        assert_eq!((links.list_of(3), links.since(3)), (Some(big), 7));
        assert!(!links.push_back(&mut ends, NO_LIST, 4, 0));
        assert!(links.unlink(&mut ends, big, 3));
        assert_eq!(links.list_of(3), None);
    }

    /// Random pushes and unlinks over several lists against a model.
    #[test]
    fn random_operations_match_a_model() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut links = Links::default();
        let mut ends = [Ends::default(); 3];
        let mut model: [Vec<usize>; 3] = Default::default();
        for step in 0..20_000u64 {
            let key = next(64) as usize;
            let list = next(3) as usize;
            match model.iter().position(|m| m.contains(&key)) {
                Some(on) => {
                    assert!(links.unlink(&mut ends[on], on as u32, key));
                    model[on].retain(|&k| k != key);
                }
                None => {
                    assert!(links.push_back(&mut ends[list], list as u32, key, step));
                    model[list].push(key);
                }
            }
            for l in 0..3 {
                assert_eq!(order(&links, &ends[l]), model[l]);
                assert_eq!(ends[l].len(), model[l].len());
            }
        }
    }
}
