//! Intrusive doubly linked lists over slab keys, one per timeout class.
//!
//! Every connection in one class has the same timeout, so a FIFO list is
//! already sorted by deadline: insert at the tail, expire from the head,
//! touch = unlink + push to the tail. All O(1), no heap, no allocation: the
//! links live in the connection records. The idle list doubles as the LRU
//! used for eviction (Gettys & Freier §5, §9: LRU is as good as anything).

use slab::Slab;

const NIL: u32 = u32::MAX;

/// The timeout classes. A connection is on at most one list at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Waiting for (the rest of) a request head or body.
    Header = 0,
    /// Keep-alive, nothing pending: the LRU.
    Idle = 1,
    /// Output pending, the client is not reading.
    Send = 2,
    /// Response done, waiting for the client's FIN (it closes first).
    CloseWait = 3,
    /// Write half shut, draining input.
    Linger = 4,
    /// A long poll held for a message.
    Hold = 5,
    /// A stream or event stream; the timer is the next keep-alive ping.
    Stream = 6,
}

pub const CLASSES: [Class; 7] =
    [Class::Header, Class::Idle, Class::Send, Class::CloseWait, Class::Linger, Class::Hold, Class::Stream];

/// The links embedded in each record.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    prev: u32,
    next: u32,
    class: Option<Class>,
    /// Milliseconds (loop clock) when the record entered its list.
    pub since: u64,
}

impl Default for Link {
    fn default() -> Self {
        Link { prev: NIL, next: NIL, class: None, since: 0 }
    }
}

impl Link {
    pub fn class(&self) -> Option<Class> {
        self.class
    }
}

/// Records that carry a [`Link`].
pub trait Linked {
    fn link(&self) -> &Link;
    fn link_mut(&mut self) -> &mut Link;
}

#[derive(Clone, Copy, Debug)]
struct Ends {
    head: u32,
    tail: u32,
    len: usize,
}

/// One FIFO list per class.
pub struct Lists {
    ends: [Ends; CLASSES.len()],
}

impl Default for Lists {
    fn default() -> Self {
        Lists { ends: [Ends { head: NIL, tail: NIL, len: 0 }; CLASSES.len()] }
    }
}

impl Lists {
    pub fn len(&self, class: Class) -> usize {
        self.ends[class as usize].len
    }

    /// The oldest record of a class.
    pub fn front(&self, class: Class) -> Option<usize> {
        let head = self.ends[class as usize].head;
        (head != NIL).then_some(head as usize)
    }

    /// Put `key` at the tail of `class`, stamped `now`, leaving any list it
    /// was on. O(1).
    pub fn enter<T: Linked>(&mut self, slab: &mut Slab<T>, key: usize, class: Class, now: u64) {
        self.leave(slab, key);
        let ends = &mut self.ends[class as usize];
        let old_tail = ends.tail;
        ends.tail = key as u32;
        if old_tail == NIL {
            ends.head = key as u32;
        }
        ends.len += 1;
        if old_tail != NIL
            && let Some(t) = slab.get_mut(old_tail as usize)
        {
            t.link_mut().next = key as u32;
        }
        if let Some(rec) = slab.get_mut(key) {
            *rec.link_mut() = Link { prev: old_tail, next: NIL, class: Some(class), since: now };
        }
    }

    /// Enter `class` unless already on it (keeping the original stamp).
    pub fn stay<T: Linked>(&mut self, slab: &mut Slab<T>, key: usize, class: Class, now: u64) {
        if slab.get(key).and_then(|r| r.link().class) != Some(class) {
            self.enter(slab, key, class, now);
        }
    }

    /// Take `key` off whatever list it is on. O(1).
    pub fn leave<T: Linked>(&mut self, slab: &mut Slab<T>, key: usize) {
        let Some(rec) = slab.get_mut(key) else { return };
        let link = *rec.link();
        let Some(class) = link.class else { return };
        *rec.link_mut() = Link::default();
        let ends = &mut self.ends[class as usize];
        if link.prev == NIL {
            ends.head = link.next;
        } else if let Some(p) = slab.get_mut(link.prev as usize) {
            p.link_mut().next = link.next;
        }
        if link.next == NIL {
            ends.tail = link.prev;
        } else if let Some(n) = slab.get_mut(link.next as usize) {
            n.link_mut().prev = link.prev;
        }
        ends.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Rec(Link);
    impl Linked for Rec {
        fn link(&self) -> &Link {
            &self.0
        }
        fn link_mut(&mut self) -> &mut Link {
            &mut self.0
        }
    }

    fn drain(lists: &mut Lists, slab: &mut Slab<Rec>, class: Class) -> Vec<usize> {
        let mut order = Vec::new();
        while let Some(k) = lists.front(class) {
            lists.leave(slab, k);
            order.push(k);
        }
        order
    }

    #[test]
    fn expiry_follows_insertion_order_and_touch_moves_to_tail() {
        let mut slab = Slab::new();
        let keys: Vec<usize> = (0..5).map(|_| slab.insert(Rec::default())).collect();
        let mut lists = Lists::default();
        for (t, &k) in keys.iter().enumerate() {
            lists.enter(&mut slab, k, Class::Idle, t as u64);
        }
        // touch key 1: it becomes the youngest
        lists.enter(&mut slab, keys[1], Class::Idle, 10);
        assert_eq!(lists.len(Class::Idle), 5);
        assert_eq!(slab[keys[0]].0.since, 0);
        assert_eq!(drain(&mut lists, &mut slab, Class::Idle), vec![keys[0], keys[2], keys[3], keys[4], keys[1]]);
    }

    #[test]
    fn eviction_takes_the_oldest_and_lists_are_independent() {
        let mut slab = Slab::new();
        let a = slab.insert(Rec::default());
        let b = slab.insert(Rec::default());
        let c = slab.insert(Rec::default());
        let mut lists = Lists::default();
        lists.enter(&mut slab, a, Class::Idle, 1);
        lists.enter(&mut slab, b, Class::Header, 2);
        lists.enter(&mut slab, c, Class::Idle, 3);
        assert_eq!(lists.front(Class::Idle), Some(a));
        // a moves to Linger: it leaves Idle
        lists.enter(&mut slab, a, Class::Linger, 4);
        assert_eq!(lists.front(Class::Idle), Some(c));
        assert_eq!(lists.len(Class::Idle), 1);
        // stay keeps the original stamp
        lists.stay(&mut slab, b, Class::Header, 9);
        assert_eq!(slab[b].0.since, 2);
        lists.leave(&mut slab, c);
        lists.leave(&mut slab, c);
        assert_eq!(lists.front(Class::Idle), None);
        assert_eq!(lists.len(Class::Idle), 0);
    }
}
