//! Arbitrary bytes as a problem of any operation of the family, through the
//! functional API: a clean `Err` where naive errs, agreement elsewhere.

#![no_main]

// Each target uses its own part of the shared checks.
#[allow(dead_code)]
#[path = "../cases.rs"]
mod cases;

libfuzzer_sys::fuzz_target!(|data: &[u8]| cases::check_operation(data));
