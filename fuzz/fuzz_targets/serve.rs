//! Bytes in, responses out: the pure core must never panic and never write
//! a malformed response, however the input is split. The first byte picks
//! the split size so the fuzzer explores partial reads too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linger::http::wellformed;
use linger::replay::{World, replay};

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else { return };
    let piece = usize::from(split % 64) + 1;
    let pieces: Vec<&[u8]> = input.chunks(piece).collect();
    let out = replay(&mut World::small(), &pieces);
    if let Err(e) = wellformed::check(&out) {
        panic!("malformed output: {e}");
    }
});
