//! Arbitrary bytes as a sequence of calls on one layer of any operation.

#![no_main]

// Each target uses its own part of the shared checks.
#[allow(dead_code)]
#[path = "../cases.rs"]
mod cases;

libfuzzer_sys::fuzz_target!(|data: &[u8]| cases::check_layer_calls(data));
