//! The NAT engine's packet path: a sequence of frames both ways through a live table.
//! The harness (input format, invariants) is shared with the stable corpus replay test.
#![no_main]

#[path = "../../tests/fuzz_harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::packet_path(data);
});
