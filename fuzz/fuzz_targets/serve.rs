//! Bytes in, responses out: the pure core must never panic, never write a
//! malformed response, however the input is split, and never promise
//! keep-alive in the last response before it closes (a client told to keep
//! the connection would meet silence: issue 14, item 9). A long poll held
//! at the end is answered outside the core, so it is not judged here.
//!
//! The first byte steers: its low five bits pick the split size, so the
//! fuzzer explores partial reads; with its top bit set, the rest is framed
//! as a chunked request body behind one of `BODY_HEADS` (bits 5-6) and
//! followed by a pipelined GET, so the fuzzer spends time inside body
//! framing rather than rediscovering the head that leads there.
//!
//! `fuzz/seeds/` holds a few inputs made by hand in that format (request
//! shapes from the tests, each kind of body framing, past findings); give
//! it after the working corpus: `cargo fuzz run serve fuzz/corpus/serve
//! fuzz/seeds`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linger::http::wellformed;
use linger::pubsub::Mode;
use linger::replay::{World, replay_to_end};
use linger::service::Step;

/// Heads a body is sent behind: static files (the body is not used) and a
/// publish (it is kept).
const BODY_HEADS: [&[u8]; 4] = [
    b"GET /hello.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HEAD /hello.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST /hello.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST /pub/c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
];

const FOLLOW: &[u8] = b"GET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&steer, rest)) = data.split_first() else { return };
    let piece = usize::from(steer & 0x1f) + 1;
    let input = if steer & 0x80 != 0 {
        [BODY_HEADS[usize::from(steer >> 5 & 3)], rest, FOLLOW].concat()
    } else {
        rest.to_vec()
    };
    let pieces: Vec<&[u8]> = input.chunks(piece).collect();
    let (out, proto, end) = replay_to_end(&mut World::small(), &pieces);
    if let Err(e) = wellformed::check(&out) {
        panic!("malformed output: {e}");
    }
    // A long poll held at the end is answered later, by the server, and
    // that answer is the one that must say close: the last response here
    // is not the connection's last.
    let held = matches!(&end, Step::Subscribe(sub) if sub.mode == Mode::LongPoll);
    if proto.is_done()
        && !held
        && let Some(head) = last_head(&out)
        && !contains(head, b"\r\nConnection: close\r\n")
    {
        panic!("the connection closes after a response promising keep-alive: {}", String::from_utf8_lossy(head));
    }
});

/// The head of the last response in `out`, which `wellformed::check` has
/// accepted; `None` when there is none or the output ends in the HTTP/2
/// refusal (its own kind of close).
fn last_head(out: &[u8]) -> Option<&[u8]> {
    let mut pos = 0;
    let mut last = None;
    while pos < out.len() {
        if out[pos..].starts_with(&[0, 0, 0, 4]) {
            return None;
        }
        let head_len = find(&out[pos..], b"\r\n\r\n")? + 4;
        let head = &out[pos..pos + head_len];
        last = Some(head);
        pos += head_len;
        let status = &head[9..12];
        if status[0] == b'1' || status == b"204" || status == b"304" {
            continue;
        }
        if contains(head, b"\r\nTransfer-Encoding: chunked\r\n") {
            // A stream: chunks up to its last one, or to the end of the
            // output while it is open.
            while pos < out.len() {
                let line = find(&out[pos..], b"\r\n")?;
                let size = usize::from_str_radix(std::str::from_utf8(&out[pos..pos + line]).ok()?, 16).ok()?;
                pos += line + 2 + size + 2;
                if size == 0 {
                    break;
                }
            }
        } else if let Some(length) = field(head, b"Content-Length: ") {
            // A HEAD response has the length and no body.
            if !(pos == out.len() || out[pos..].starts_with(b"HTTP/1.1 ")) {
                pos += length;
            }
        }
    }
    last
}

fn field(head: &[u8], name: &[u8]) -> Option<usize> {
    let at = find(head, name)? + name.len();
    let end = find(&head[at..], b"\r\n")?;
    std::str::from_utf8(&head[at..at + end]).ok()?.parse().ok()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}
