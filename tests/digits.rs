//! End to end: the digits example's CNN, trained for a few epochs with a
//! fixed seed, classifies held-out digits well; its data loader rejects bad
//! lines with their number.

// The example's own modules; what only its main uses goes unused here.
#[path = "../examples/digits/data.rs"]
mod data;
#[allow(dead_code)]
#[path = "../examples/digits/network.rs"]
mod network;
#[allow(dead_code)]
#[path = "../examples/digits/training.rs"]
mod training;

use std::path::Path;
use training::{Config, accuracy, train};

#[test]
fn a_short_run_learns_to_read_held_out_digits() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits.csv.gz");
    let digits = data::load(&path).unwrap();
    assert_eq!(digits.labels.len(), 1797);
    let (train_set, test_set) = data::stratified_split(&digits.labels, 0.2, 0);
    assert_eq!(train_set.len() + test_set.len(), 1797);
    // Stratified: every digit is about a fifth of its images in the test set.
    for digit in 0..10 {
        let all = digits.labels.iter().filter(|&&l| l == digit).count();
        let held = test_set
            .iter()
            .filter(|&&i| digits.labels[i] == digit)
            .count();
        assert!(
            (held as f64 - all as f64 * 0.2).abs() <= 1.0,
            "digit {digit}"
        );
    }
    let config = Config {
        epochs: 4,
        batch: 32,
        learning_rate: 2e-3,
        seed: 0,
    };
    let mut losses = Vec::new();
    let network = train(
        &digits,
        (&train_set, &test_set),
        &config,
        || {},
        |e| losses.push(e.loss),
    )
    .unwrap();
    assert!(
        losses.windows(2).all(|w| w[1] < w[0]),
        "the loss falls every epoch: {losses:?}"
    );
    let (test_accuracy, _) = accuracy(&network, &digits, &test_set).unwrap();
    assert!(test_accuracy >= 90.0, "test accuracy {test_accuracy}%");
}
