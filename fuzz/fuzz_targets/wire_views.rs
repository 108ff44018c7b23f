//! Every `wire` view, the offload helpers and fragmentation on arbitrary bytes.
//! The harness is shared with the stable corpus replay test.
#![no_main]

#[path = "../../tests/fuzz_harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::wire_views(data);
});
