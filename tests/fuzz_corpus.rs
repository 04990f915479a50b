//! The fuzz targets' checks (`fuzz/cases.rs`) on their checked-in corpus
//! (`fuzz/corpus/`), so that `cargo test` catches a regression the fuzzers
//! once found or covered, and on a few thousand inputs from a fixed
//! generator.

#[allow(dead_code)]
#[path = "../fuzz/cases.rs"]
mod cases;

use std::path::Path;

/// Every file of `fuzz/corpus/<target>`, through `check`.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    for file in &files {
        let data = std::fs::read(file).unwrap();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("{} fails", file.display());
        }
    }
    files.len()
}

/// Byte strings from a fixed generator (xorshift), of lengths 0 to 600.
fn generated(count: usize, check: fn(&[u8])) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..count {
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let len = (next() % 600) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        check(&data);
    }
}

#[test]
fn the_operations_corpus_passes() {
    assert!(replay("operations", cases::check_operation) > 0);
    generated(2000, cases::check_operation);
}

#[test]
fn the_layer_calls_corpus_passes() {
    assert!(replay("layer_calls", cases::check_layer_calls) > 0);
    generated(500, cases::check_layer_calls);
}
