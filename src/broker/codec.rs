//! RESP3 on the wire: commands out, frames in, with bounds.
//!
//! Decoding is `redis-protocol`'s (`resp3::decode::complete::decode_range`:
//! it returns ranges into our buffer, so nothing is copied until a message
//! is handed out). Two of its properties need a guard in front of it:
//! it is recursive descent with no nesting limit (`*1\r\n` repeated a
//! hundred thousand times overflows the stack), and on a partial frame it
//! says only "incomplete", so a reply that never ends would be buffered
//! forever. [`Framer`] finds where each top-level frame ends first,
//! iteratively and resumably (each byte is looked at about once however
//! the frame is split), and refuses a frame deeper than [`MAX_DEPTH`],
//! with more than [`MAX_ELEMENTS`] elements, or longer than [`MAX_FRAME`]
//! bytes as soon as a header says so. Only a complete, bounded frame is
//! handed to the decoder.
//!
//! Commands are arrays of blob strings, the one piece of RESP that needs
//! no parser; [`push_command`] writes them straight into the output buffer
//! (no frame tree, one copy of each argument). The tests check the bytes
//! with the crate's decoder.

use redis_protocol::resp3::decode::complete::decode_range;
use redis_protocol::resp3::types::RangeFrame;

/// Longest frame accepted, in bytes. The largest legitimate one is a range
/// page: [`RANGE_PAGE`](crate::broker::RANGE_PAGE) entries of at most
/// 64 KiB each (4 MiB) plus their framing.
pub const MAX_FRAME: usize = 8 << 20;
/// Most elements in one frame (every nested element counts). A range page
/// has 6 per entry; HELLO's reply a few dozen. Bounds the decoder's frame
/// tree (about 64 bytes an element) to a few MiB.
pub const MAX_ELEMENTS: usize = 65_536;
/// Deepest nesting accepted. Ours is at most 4 (a range reply: script
/// result, entries, entry, fields).
pub const MAX_DEPTH: usize = 8;
/// Longest header or simple line (type byte to CRLF): error messages are
/// the longest, and Redis keeps them short.
pub const MAX_LINE: usize = 64 * 1024;

/// Append `*N\r\n` then `$len\r\narg\r\n` for each argument.
pub fn push_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let len: usize = args.iter().map(|a| a.len() + 24).sum();
    out.reserve(len + 16);
    push_header(out, b'*', args.len());
    for arg in args {
        push_header(out, b'$', arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

fn push_header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Finds the end of the next top-level frame, a piece at a time.
///
/// The buffer it scans always starts at a frame boundary; `pos` is how far
/// it has got, `open` the elements still owed by each open aggregate.
#[derive(Debug, Default)]
pub struct Framer {
    pos: usize,
    open: Vec<usize>,
    elements: usize,
}

impl Framer {
    /// Given everything buffered since the last frame ended (it may have
    /// grown since the previous call, never shrunk), the length of the
    /// first complete frame, `None` if it is not complete yet, or what is
    /// wrong with it.
    pub fn next_frame(&mut self, buf: &[u8]) -> Result<Option<usize>, String> {
        loop {
            let Some(&kind) = buf.get(self.pos) else { return Ok(None) };
            let Some((line, after)) = line_at(buf, self.pos + 1)? else { return Ok(None) };
            match kind {
                b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => self.pos = after,
                b'$' | b'!' | b'=' => match length(line)? {
                    None if kind == b'$' => self.pos = after, // RESP2's null
                    None => return Err("negative blob length".into()),
                    Some(n) => {
                        if n > MAX_FRAME {
                            return Err(format!("a {n}-byte string is past the {MAX_FRAME}-byte limit"));
                        }
                        let end = after + n;
                        if buf.len() < end + 2 {
                            // Keep `pos` at the header: it is read again,
                            // which costs a few bytes, not the whole blob.
                            self.check_size(end + 2)?;
                            return Ok(None);
                        }
                        if &buf[end..end + 2] != b"\r\n" {
                            return Err("a string is not followed by CRLF".into());
                        }
                        self.pos = end + 2;
                    }
                },
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let Some(n) = length(line)? else {
                        if kind == b'*' {
                            self.pos = after; // RESP2's null array
                            if let Some(len) = self.element_done() {
                                return Ok(Some(len));
                            }
                            continue;
                        }
                        return Err("negative aggregate length".into());
                    };
                    // A map holds n pairs; an attribute n pairs and then the
                    // value it annotates, counted here as its last element.
                    let owed = match kind {
                        b'%' => n.saturating_mul(2),
                        b'|' => n.saturating_mul(2).saturating_add(1),
                        _ => n,
                    };
                    self.elements = self.elements.saturating_add(owed);
                    if self.elements > MAX_ELEMENTS {
                        return Err(format!("a reply of more than {MAX_ELEMENTS} elements"));
                    }
                    self.pos = after;
                    if owed > 0 {
                        if self.open.len() >= MAX_DEPTH {
                            return Err(format!("a reply nested deeper than {MAX_DEPTH}"));
                        }
                        self.open.push(owed);
                        continue;
                    }
                }
                _ => return Err(format!("unexpected RESP type byte 0x{kind:02x}")),
            }
            if let Some(len) = self.element_done() {
                return Ok(Some(len));
            }
            self.check_size(self.pos)?;
        }
    }

    /// One element ended at `pos`: close every aggregate it completes. The
    /// frame's length when the top level closed.
    fn element_done(&mut self) -> Option<usize> {
        while let Some(owed) = self.open.last_mut() {
            *owed -= 1;
            if *owed > 0 {
                return None;
            }
            self.open.pop();
        }
        let len = self.pos;
        *self = Framer::default();
        Some(len)
    }

    fn check_size(&self, needed: usize) -> Result<(), String> {
        if needed > MAX_FRAME {
            return Err(format!("a reply longer than {MAX_FRAME} bytes"));
        }
        Ok(())
    }
}

/// The line starting at `start` (after the type byte) and the offset past
/// its CRLF; `None` while the CRLF has not arrived.
fn line_at(buf: &[u8], start: usize) -> Result<Option<(&[u8], usize)>, String> {
    let window = &buf[start.min(buf.len())..buf.len().min(start + MAX_LINE + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(n) => Ok(Some((&window[..n], start + n + 2))),
        None if window.len() >= MAX_LINE + 2 => Err(format!("a line longer than {MAX_LINE} bytes")),
        None => Ok(None),
    }
}

/// A length field: `None` for `-1` (RESP2's null), an error for `?`
/// (RESP3 streamed types, which Redis does not send to clients) and for
/// anything else that is not a decimal.
fn length(line: &[u8]) -> Result<Option<usize>, String> {
    if line == b"-1" {
        return Ok(None);
    }
    if line == b"?" {
        return Err("streamed RESP3 types are not supported".into());
    }
    match crate::broker::script::parse_decimal(line) {
        Some(n) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        None => Err(format!("bad length '{}'", String::from_utf8_lossy(line))),
    }
}

/// Decode one complete frame that [`Framer`] delimited.
pub fn decode(frame: &[u8]) -> Result<RangeFrame, String> {
    match decode_range(frame) {
        Ok(Some((f, n))) if n == frame.len() => Ok(f),
        Ok(Some(_)) | Ok(None) => Err("the decoder and the framer disagree on a frame's end".into()),
        Err(e) => Err(format!("undecodable reply: {e}")),
    }
}

/// The bytes of a string-like frame.
pub fn bytes<'a>(frame: &RangeFrame, buf: &'a [u8]) -> Option<&'a [u8]> {
    match frame {
        RangeFrame::BlobString { data, .. }
        | RangeFrame::SimpleString { data, .. }
        | RangeFrame::VerbatimString { data, .. } => buf.get(data.0..data.1),
        _ => None,
    }
}

/// The text of an error frame (`-ERR ...` or `!len ...`).
pub fn error_text(frame: &RangeFrame, buf: &[u8]) -> Option<String> {
    match frame {
        RangeFrame::SimpleError { data, .. } | RangeFrame::BlobError { data, .. } => {
            buf.get(data.0..data.1).map(|e| String::from_utf8_lossy(e).into_owned())
        }
        _ => None,
    }
}

/// A non-negative integer, sent as a number or as decimal digits.
pub fn integer(frame: &RangeFrame, buf: &[u8]) -> Option<u64> {
    match frame {
        RangeFrame::Number { data, .. } => u64::try_from(*data).ok(),
        _ => crate::broker::script::parse_decimal(bytes(frame, buf)?),
    }
}

/// The elements of an array.
pub fn elements(frame: &RangeFrame) -> Option<&[RangeFrame]> {
    match frame {
        RangeFrame::Array { data, .. } => Some(data),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every frame length the framer finds in `input`, fed all at once.
    fn frames(input: &[u8]) -> Result<Vec<usize>, String> {
        let mut f = Framer::default();
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(n) = f.next_frame(&input[start..])? {
            out.push(n);
            start += n;
        }
        Ok(out)
    }

    #[test]
    fn commands_decode_as_arrays_of_blobs() {
        let mut out = Vec::new();
        push_command(&mut out, &[b"SET", b"k", b"a\r\n\0b", b""]);
        assert_eq!(out, b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\na\r\n\0b\r\n$0\r\n\r\n");
        let f = decode(&out).unwrap();
        let items = elements(&f).unwrap();
        assert_eq!(bytes(&items[2], &out), Some(&b"a\r\n\0b"[..]));
        assert_eq!(bytes(&items[3], &out), Some(&b""[..]));
    }

    #[test]
    fn frame_boundaries() {
        let hello = b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nmodules\r\n*0\r\n";
        assert_eq!(frames(hello).unwrap(), [hello.len()]);
        let mix =
            b"+OK\r\n:12\r\n_\r\n$-1\r\n*-1\r\n>3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$3\r\nx\ny\r\n,1.5\r\n#t\r\n(123\r\n";
        assert_eq!(frames(mix).unwrap(), [5, 5, 3, 5, 5, 33, 6, 4, 6]);
        // An attribute is followed by the value it annotates: one frame.
        let attr = b"|1\r\n+key\r\n+val\r\n:5\r\n+next\r\n";
        assert_eq!(frames(attr).unwrap(), [20, 7]);
        assert!(matches!(decode(&attr[..20]).unwrap(), RangeFrame::Number { data: 5, .. }));
        // Nested empties close their parents.
        assert_eq!(frames(b"*2\r\n*0\r\n%0\r\n").unwrap(), [12]);
    }

    #[test]
    fn split_at_every_byte_then_decoded() {
        let reply = b"*2\r\n:7\r\n*1\r\n*2\r\n$3\r\n7-1\r\n*2\r\n$1\r\nd\r\n$4\r\na\r\nb\r\n";
        for cut in 0..reply.len() {
            let mut f = Framer::default();
            let mut buf = reply[..cut].to_vec();
            assert_eq!(f.next_frame(&buf).unwrap(), None, "cut at {cut}");
            buf.extend_from_slice(&reply[cut..]);
            assert_eq!(f.next_frame(&buf).unwrap(), Some(reply.len()), "cut at {cut}");
        }
        // One byte at a time.
        let mut f = Framer::default();
        for end in 1..reply.len() {
            assert_eq!(f.next_frame(&reply[..end]).unwrap(), None);
        }
        assert_eq!(f.next_frame(reply).unwrap(), Some(reply.len()));
        let top = decode(reply).unwrap();
        let items = elements(&top).unwrap();
        assert_eq!(integer(&items[0], reply), Some(7));
    }

    #[test]
    fn bounds_are_errors_not_memory() {
        let deep = b"*1\r\n".repeat(100_000);
        assert!(frames(&deep).unwrap_err().contains("nested deeper"));
        assert!(frames(b"$9999999999\r\n").unwrap_err().contains("limit"));
        assert!(frames(b"*70000\r\n").unwrap_err().contains("elements"));
        assert!(frames(b"%40000\r\n").unwrap_err().contains("elements"));
        assert!(frames(&[b"+".as_slice(), &vec![b'x'; MAX_LINE + 8]].concat()).unwrap_err().contains("line"));
        assert!(frames(b"$3\r\nabcde\r\n").unwrap_err().contains("CRLF"));
        assert!(frames(b"$?\r\n").unwrap_err().contains("streamed"));
        assert!(frames(b"$x\r\n").unwrap_err().contains("bad length"));
        assert!(frames(b"@\r\n").unwrap_err().contains("0x40"));
        assert!(frames(b"~-1\r\n").unwrap_err().contains("negative"));
        // Many small strings filling past the byte limit.
        let mut f = Framer::default();
        let mut big = b"*60000\r\n".to_vec();
        let chunk = vec![b'y'; 200];
        while big.len() <= MAX_FRAME + 1024 {
            push_header(&mut big, b'$', chunk.len());
            big.extend_from_slice(&chunk);
            big.extend_from_slice(b"\r\n");
        }
        assert!(f.next_frame(&big).unwrap_err().contains("longer than"));
        // The decoder refuses what the framer cannot judge.
        assert!(decode(b"#x\r\n").unwrap_err().contains("undecodable"));
    }
}
