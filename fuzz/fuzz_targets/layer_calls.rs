//! Arbitrary bytes as a sequence of calls on one layer of any operation.

#![no_main]

#[path = "../cases.rs"]
mod cases;

libfuzzer_sys::fuzz_target!(|data: &[u8]| cases::check_layer_calls(data));
