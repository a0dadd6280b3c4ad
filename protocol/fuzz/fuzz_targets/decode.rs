//! Any bytes, fed in pieces of any size, into the decoder of every message
//! a peer reads: it must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The first byte picks the piece size, so that the fuzzer explores how
    // frames split across reads too.
    let Some((&piece, bytes)) = data.split_first() else { return };
    sluice_protocol::fuzzing::decode_every_message(bytes, usize::from(piece) + 1);
});
