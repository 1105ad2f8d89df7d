//! A connection's pending output: runs of bytes (heads, small bodies) and
//! file ranges (large bodies, sent with `sendfile`), in response order.
//! Pipelined responses accumulate here and leave in as few writes as the
//! segments allow.

use std::collections::VecDeque;
use std::fs::File;
use std::rc::Rc;

/// What one queued file range counts for in `pending_memory`: with the
/// 64 KiB high-water mark, at most sixteen per connection.
pub const FILE_SEGMENT_COST: u64 = 4096;

pub enum Seg {
    Mem { buf: Vec<u8>, pos: usize },
    File { file: Rc<File>, off: u64, end: u64 },
}

impl Seg {
    pub fn remaining(&self) -> u64 {
        match self {
            Seg::Mem { buf, pos } => (buf.len() - pos) as u64,
            Seg::File { off, end, .. } => end - off,
        }
    }
}

#[derive(Default)]
pub struct Output {
    segs: VecDeque<Seg>,
    /// A drained byte buffer kept for reuse, so the steady state allocates
    /// nothing.
    spare: Vec<u8>,
}

impl Output {
    pub fn with_capacity(bytes: usize) -> Output {
        Output { segs: VecDeque::new(), spare: Vec::with_capacity(bytes) }
    }

    /// The byte buffer at the tail, where the next response bytes go.
    /// Inlined: a response's head and body each ask for it.
    #[inline]
    pub fn bytes(&mut self) -> &mut Vec<u8> {
        if !matches!(self.segs.back(), Some(Seg::Mem { .. })) {
            self.start_mem_segment();
        }
        match self.segs.back_mut() {
            Some(Seg::Mem { buf, .. }) => buf,
            // Just ensured the tail is a byte segment.
            _ => unreachable!("tail segment is Mem"),
        }
    }

    /// Once per response that starts an empty queue, or after a file.
    fn start_mem_segment(&mut self) {
        let buf = std::mem::take(&mut self.spare);
        self.segs.push_back(Seg::Mem { buf, pos: 0 });
    }

    /// As `bytes`, but a tail segment already holding `limit` bytes is left
    /// as it is and a new one started. A stream's frames are appended whole,
    /// so segment ends are frame ends: `truncate_after_front` can then drop
    /// what is unsent without cutting a frame.
    pub fn bytes_up_to(&mut self, limit: usize) -> &mut Vec<u8> {
        if let Some(Seg::Mem { buf, .. }) = self.segs.back()
            && buf.len() >= limit
        {
            self.segs.push_back(Seg::Mem { buf: std::mem::take(&mut self.spare), pos: 0 });
        }
        self.bytes()
    }

    /// Keep the front segment (it may be partly sent) and drop the rest.
    pub fn truncate_after_front(&mut self) {
        while self.segs.len() > 1 {
            if let Some(Seg::Mem { mut buf, .. }) = self.segs.pop_back()
                && buf.capacity() > self.spare.capacity()
            {
                buf.clear();
                self.spare = buf;
            }
        }
    }

    /// Queue `len` bytes of `file` from `off`.
    pub fn file(&mut self, file: Rc<File>, off: u64, len: u64) {
        if len > 0 {
            self.segs.push_back(Seg::File { file, off, end: off + len });
        }
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        // One segment or none is the common case: checked every turn for
        // every connection, so without walking the ring.
        match self.segs.len() {
            0 => true,
            1 => self.segs.front().is_none_or(|s| s.remaining() == 0),
            _ => self.segs.iter().all(|s| s.remaining() == 0),
        }
    }

    /// Unsent bytes, file ranges included: the back-pressure measure.
    #[inline]
    pub fn pending(&self) -> u64 {
        match self.segs.len() {
            0 => 0,
            1 => self.segs.front().map_or(0, Seg::remaining),
            _ => self.segs.iter().map(Seg::remaining).sum(),
        }
    }

    /// What unsent output costs the server: bytes held in memory, and a
    /// flat `FILE_SEGMENT_COST` per file range (its bytes cost nothing until
    /// `sendfile` sends them, but each holds a descriptor). This is what the
    /// back-pressure high-water mark bounds, so that a large file queued for
    /// `sendfile` does not stop the requests behind it from being answered,
    /// while a client pipelining many files still cannot pin descriptors
    /// without limit.
    #[inline]
    pub fn pending_memory(&self) -> u64 {
        let cost = |s: &Seg| match s {
            Seg::Mem { buf, pos } => (buf.len() - pos) as u64,
            Seg::File { .. } => FILE_SEGMENT_COST,
        };
        match self.segs.len() {
            0 => 0,
            1 => self.segs.front().map_or(0, cost),
            _ => self.segs.iter().map(cost).sum(),
        }
    }

    /// Bytes of memory this output holds (for the memory budget).
    pub fn capacity(&self) -> usize {
        let held: usize = self
            .segs
            .iter()
            .map(|s| match s {
                Seg::Mem { buf, .. } => buf.capacity(),
                Seg::File { .. } => 0,
            })
            .sum();
        held + self.spare.capacity()
    }

    pub fn front(&self) -> Option<&Seg> {
        self.segs.front()
    }

    /// The segment after the front one, to decide on `MSG_MORE`.
    pub fn second(&self) -> Option<&Seg> {
        self.segs.get(1)
    }

    /// Record that `n` bytes of the front segment were sent.
    pub fn advance(&mut self, n: u64) {
        let done = match self.segs.front_mut() {
            Some(Seg::Mem { buf, pos }) => {
                *pos += n as usize;
                *pos >= buf.len()
            }
            Some(Seg::File { off, end, .. }) => {
                *off += n;
                *off >= *end
            }
            None => false,
        };
        if done {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(Seg::Mem { mut buf, .. }) = self.segs.pop_front()
            && buf.capacity() > self.spare.capacity()
        {
            buf.clear();
            self.spare = buf;
        }
    }

    /// Drop everything unsent (the connection is being aborted).
    pub fn clear(&mut self) {
        while !self.segs.is_empty() {
            self.pop_front();
        }
    }

    /// Shrink what an idle connection would keep, bounding pooled memory.
    pub fn trim(&mut self, keep: usize) {
        self.clear();
        if self.spare.capacity() > keep {
            self.spare = Vec::new();
        }
    }

    /// Everything pending as one byte string (tests and the fuzz target:
    /// file ranges are read with `pread`).
    pub fn take_all(&mut self) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let mut all = Vec::new();
        while let Some(seg) = self.segs.front() {
            let n = seg.remaining();
            match seg {
                Seg::Mem { buf, pos } => all.extend_from_slice(&buf[*pos..]),
                Seg::File { file, off, end } => {
                    let mut chunk = vec![0; (end - off) as usize];
                    if file.read_exact_at(&mut chunk, *off).is_ok() {
                        all.extend_from_slice(&chunk);
                    }
                }
            }
            self.advance(n.max(1));
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_reuse_the_tail_and_spare() {
        let mut out = Output::default();
        out.bytes().extend_from_slice(b"abc");
        out.bytes().extend_from_slice(b"def");
        assert_eq!(out.pending(), 6);
        out.advance(4);
        assert_eq!(out.pending(), 2);
        out.advance(2);
        assert!(out.is_empty());
        assert!(out.capacity() >= 6, "drained buffer kept as spare");
        out.bytes().push(b'x');
        assert_eq!(out.take_all(), b"x");
    }

    #[test]
    fn segments_end_where_asked_and_the_unsent_tail_can_be_dropped() {
        let mut out = Output::default();
        for _ in 0..5 {
            out.bytes_up_to(8).extend_from_slice(b"frame\n");
        }
        assert_eq!(out.segs.len(), 3, "a new segment once one holds 8 bytes");
        out.advance(3);
        out.truncate_after_front();
        assert_eq!(out.take_all(), b"me\nframe\n");
    }
}
