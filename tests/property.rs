//! Property test of the pure core: random requests, random mutations and
//! random bytes, split at random places, never panic the core and never
//! produce a malformed response; and request bodies, well-formed or not,
//! are framed before anything promises the connection a future.
//! Deterministic (a fixed-seed generator), so a failure reproduces; the
//! fuzz target (`fuzz/`) explores further.

use linger::http::{Proto, wellformed};
use linger::replay::{World, replay, replay_state};

/// xorshift64*: enough randomness for a test, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a [u8]]) -> &'a [u8] {
        items[self.below(items.len())]
    }
}

const REQUESTS: &[&[u8]] = &[
    b"GET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /style.css HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET /hello.txt HTTP/1.1\r\nHost: a\r\nRange: bytes=2-5\r\nIf-None-Match: \"x\"\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nT: v\r\n\r\n",
    b"GET /hello.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET /hello.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    b"POST /pub/c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"POST /pub/c HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /sub/c?since=0 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /_status HTTP/1.1\r\nHost: a\r\n\r\n",
    b"PUT /a HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
    b"GET /%2e%2e/x HTTP/1.1\r\nHost: a\r\n\r\n",
    b"BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n",
];

/// Interesting bytes for mutations.
const SPICE: &[u8] = b"\r\n\0\t :;,/%?#\"\\\x7f\xff0fF-";

fn mutate(rng: &mut Rng, mut input: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.below(4) {
        if input.is_empty() {
            break;
        }
        let at = rng.below(input.len());
        match rng.below(4) {
            0 => input[at] = SPICE[rng.below(SPICE.len())],
            1 => input.insert(at, SPICE[rng.below(SPICE.len())]),
            2 => {
                input.remove(at);
            }
            _ => input.truncate(at),
        }
    }
    input
}

fn split<'a>(rng: &mut Rng, input: &'a [u8]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let n = 1 + rng.below(rest.len().min(40));
        pieces.push(&rest[..n]);
        rest = &rest[n..];
    }
    pieces
}

#[test]
fn random_pipelines_split_anywhere_give_well_formed_responses() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for case in 0..20_000 {
        let mut input = Vec::new();
        for _ in 0..1 + rng.below(5) {
            let request = rng.pick(REQUESTS).to_vec();
            let request = if rng.below(3) == 0 { mutate(&mut rng, request) } else { request };
            input.extend_from_slice(&request);
        }
        let pieces = split(&mut rng, &input);
        let out = replay(&mut World::small(), &pieces);
        if let Err(e) = wellformed::check(&out) {
            panic!(
                "case {case}: {e}\ninput: {:?}\noutput: {:?}",
                String::from_utf8_lossy(&input),
                String::from_utf8_lossy(&out)
            );
        }
    }
}

#[test]
fn random_bytes_never_panic_and_any_output_is_well_formed() {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for case in 0..20_000 {
        let len = rng.below(300);
        let input: Vec<u8> = (0..len)
            .map(|_| if rng.below(2) == 0 { SPICE[rng.below(SPICE.len())] } else { rng.next() as u8 })
            .collect();
        let pieces = split(&mut rng, &input);
        let out = replay(&mut World::small(), &pieces);
        if let Err(e) = wellformed::check(&out) {
            panic!("case {case}: {e}\ninput: {input:?}\noutput: {:?}", String::from_utf8_lossy(&out));
        }
    }
}

/// The request lines a body is sent with: a static file (which uses no
/// body: `GET`, `HEAD`, and `POST`, which gets 405) and a publish (which
/// keeps it).
const BODY_HEADS: &[&[u8]] = &[
    b"GET /hello.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HEAD /hello.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST /hello.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST /pub/c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
];

/// Pipelined behind every body: answered after a well-formed one, never
/// after a broken one (its start cannot be known).
const FOLLOW: &[u8] = b"GET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n";

/// What a chunked body is, and so what must happen to its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// Well-formed and within every limit: answered, and the request
    /// behind it too.
    Good,
    /// Broken framing (RFC 9112 §7.1): the request cannot be answered as
    /// if nothing happened, nor the next one found.
    Broken,
    /// Well-formed but past the body limits (`World::small`: 4096 bytes
    /// discarded, 64 KiB published).
    TooLarge,
    /// The input ends inside the body: no answer may promise keep-alive
    /// before the body is read.
    Unfinished,
}

/// Chunked bodies of each kind.
fn bodies() -> Vec<(Framing, &'static str, Vec<u8>)> {
    use Framing::{Broken, Good, TooLarge, Unfinished};
    let big = 0x10001;
    let mut too_large = format!("{big:x}\r\n").into_bytes();
    too_large.extend(std::iter::repeat_n(b'x', big));
    too_large.extend_from_slice(b"\r\n0\r\n\r\n");
    vec![
        (Good, "one chunk", b"5\r\nhello\r\n0\r\n\r\n".to_vec()),
        (Good, "extension and trailer", b"5;e=1\r\nhello\r\n0\r\nT: v\r\n\r\n".to_vec()),
        (Good, "two chunks, upper-case hex", b"A\r\n0123456789\r\n3\r\nabc\r\n0\r\n\r\n".to_vec()),
        (Good, "empty body", b"0\r\n\r\n".to_vec()),
        (Broken, "chunk size zz", b"zz\r\nhello\r\n0\r\n\r\n".to_vec()),
        (Broken, "size line ended by a bare CR", b"5\rhello\r\n0\r\n\r\n".to_vec()),
        (Broken, "size line ended by a bare LF", b"5\nhello\r\n0\r\n\r\n".to_vec()),
        (Broken, "data not followed by CRLF", b"5\r\nhelloXX0\r\n\r\n".to_vec()),
        (Broken, "data longer than its size", b"3\r\nhello\r\n0\r\n\r\n".to_vec()),
        (Broken, "size overflows 64 bits", b"1ffffffffffffffff\r\nhello\r\n0\r\n\r\n".to_vec()),
        (Broken, "negative size", b"-5\r\nhello\r\n0\r\n\r\n".to_vec()),
        (Broken, "0x prefix", b"0x5\r\nhello\r\n0\r\n\r\n".to_vec()),
        (TooLarge, "one chunk past every limit", too_large),
        (Unfinished, "no last chunk", b"5\r\nhello\r\n".to_vec()),
        (Unfinished, "last chunk without its empty line", b"5\r\nhello\r\n0\r\n".to_vec()),
        (Unfinished, "inside a chunk", b"a\r\nhel".to_vec()),
    ]
}

/// The heads of the responses in `out` (already checked well-formed; no
/// chunked responses arise here). A length with no body after it is a HEAD
/// response.
fn heads(out: &[u8]) -> Vec<String> {
    let mut heads = Vec::new();
    let mut pos = 0;
    while let Some(end) = out[pos..].windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&out[pos..pos + end + 4]).into_owned();
        pos += end + 4;
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map_or(0, |v| v.trim().parse::<usize>().unwrap_or(0));
        if !(pos == out.len() || out[pos..].starts_with(b"HTTP/1.1 ")) {
            pos += length;
        }
        heads.push(head);
    }
    heads
}

/// Issue 14, item 9: a request body is framed before the connection is
/// promised a future. Every head of `BODY_HEADS` with every body of
/// `bodies()`, followed by a pipelined GET (except for unfinished bodies,
/// where the input simply ends), split at random places:
/// - always well-formed output;
/// - a good body: both requests answered, the connection kept;
/// - a broken or too large body: exactly one response, not a success,
///   saying `Connection: close`, and the connection done; never `200`
///   announcing keep-alive followed by silence;
/// - an unfinished body: no response yet, or one saying `Connection:
///   close` (an early answer must not promise keep-alive).
#[test]
fn request_bodies_are_framed_before_keep_alive_is_promised() {
    let mut rng = Rng(0x5851_f42d_4c95_7f2d);
    let mut failures = Vec::new();
    for &head in BODY_HEADS {
        for (framing, name, body) in bodies() {
            let mut input = [head, &body[..]].concat();
            if framing != Framing::Unfinished {
                input.extend_from_slice(FOLLOW);
            }
            // The whole input at once, then a few random splits.
            let mut first_failure = None;
            for round in 0..8 {
                let pieces = if round == 0 { vec![&input[..]] } else { split(&mut rng, &input) };
                let (out, proto) = replay_state(&mut World::small(), &pieces);
                let judged = judge(framing, &out, &proto);
                if let Err(why) = judged {
                    first_failure = Some(format!("{why} (split into {} pieces)", pieces.len()));
                    break;
                }
            }
            if let Some(why) = first_failure {
                let line =
                    String::from_utf8_lossy(&head[..head.iter().position(|&b| b == b'\r').unwrap()]).into_owned();
                failures.push(format!("{line} + {name} ({framing:?}): {why}"));
            }
        }
    }
    let cases = BODY_HEADS.len() * bodies().len();
    assert!(failures.is_empty(), "{} of {cases} cases:\n  - {}", failures.len(), failures.join("\n  - "));
}

fn judge(framing: Framing, out: &[u8], proto: &Proto) -> Result<(), String> {
    wellformed::check(out).map_err(|e| format!("malformed output: {e}"))?;
    let heads = heads(out);
    let status = |h: &String| h.get(9..12).unwrap_or("").to_string();
    let closes = |h: &String| h.contains("\r\nConnection: close\r\n");
    let statuses: Vec<String> = heads.iter().map(status).collect();
    match framing {
        Framing::Good => {
            if heads.len() != 2 || heads.iter().any(closes) || statuses[1] != "200" || proto.is_done() {
                return Err(format!("responses {statuses:?}, done: {}", proto.is_done()));
            }
        }
        Framing::Broken | Framing::TooLarge => match heads.as_slice() {
            [only] if closes(only) && !status(only).starts_with('2') && proto.is_done() => {}
            [only] if !closes(only) && proto.is_done() => {
                return Err(format!("{} announcing keep-alive, then the connection closes", status(only)));
            }
            _ => return Err(format!("responses {statuses:?}, done: {}", proto.is_done())),
        },
        Framing::Unfinished => {
            if let Some(h) = heads.iter().find(|h| !closes(h)) {
                return Err(format!("{} announcing keep-alive before the body is read", status(h)));
            }
        }
    }
    Ok(())
}
