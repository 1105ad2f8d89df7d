//! Property test of the pure core: random requests, random mutations and
//! random bytes, split at random places, never panic the core and never
//! produce a malformed response. Deterministic (a fixed-seed generator), so
//! a failure reproduces; the fuzz target (`fuzz/`) explores further.

use linger::http::wellformed;
use linger::replay::{World, replay};

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
