//! A small CNN that learns to read handwritten digits, trained with
//! gemmconv: the UCI digits of `examples/data` (1,797 images of 8x8), a
//! stratified 80/20 split with a fixed seed, two `Conv2d` layers, Adam.
//! The data, the network and the training loop are the modules in
//! `examples/digits/`.
//!
//! `cargo run --release --example digits`

#[path = "digits/data.rs"]
mod data;
#[path = "digits/network.rs"]
mod network;
#[path = "digits/training.rs"]
mod training;

use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::process::ExitCode;
use training::{Config, accuracy, train};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let start = std::time::Instant::now();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits.csv.gz");
    let digits = data::load(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (train_set, test_set) = data::stratified_split(&digits.labels, 0.2, 0);
    let config = Config {
        epochs: 20,
        batch: 32,
        learning_rate: 2e-3,
        seed: 0,
    };
    let network = network::Network::new(config.seed)?;
    println!(
        "Data: {} handwritten digits of 8x8 pixels with 17 grey levels, from UCI (E. Alpaydin and \
         C. Kaynak, CC BY 4.0), read from examples/data/digits.csv.gz.",
        digits.labels.len()
    );
    println!(
        "Split: stratified 80/20 with seed 0: {} images to train on, {} held out to test on, \
         each digit in the same proportion in both.",
        train_set.len(),
        test_set.len()
    );
    println!(
        "Network: conv 3x3 (1 -> 16 channels, padding 1) -> ReLU -> conv 3x3 (16 -> 32) -> ReLU -> \
         max-pool 2x2 -> linear (512 -> 10) -> softmax cross-entropy; {} parameters, initialised \
         as PyTorch does. The convolutions are gemmconv::Conv2d layers.",
        network.parameters()
    );
    println!(
        "Training: Adam (learning rate {}), mini-batches of {}, {} epochs, f32, {} threads; the first \
         layer computes no input gradient, and the test set runs on the inference path.\n",
        config.learning_rate,
        config.batch,
        config.epochs,
        rayon::current_num_threads()
    );
    let batches = train_set.len().div_ceil(config.batch) as u64;
    let style = ProgressStyle::with_template("epoch {prefix:>2} [{bar:30}] {pos}/{len} batches")
        .expect("a valid template")
        .progress_chars("=> ");
    let bar = ProgressBar::new(batches).with_style(style).with_prefix("1");
    let network = train(
        &digits,
        (&train_set, &test_set),
        &config,
        || bar.inc(1),
        |e| {
            bar.suspend(|| {
                println!(
                    "epoch {:2}  loss {:.4}  train accuracy {:.1}%  test accuracy {:.1}%  time {:.1} s",
                    e.epoch, e.loss, e.train_accuracy, e.test_accuracy, e.seconds
                )
            });
            bar.reset();
            bar.set_prefix((e.epoch + 1).to_string());
        },
    )?;
    bar.finish_and_clear();

    let (test_accuracy, predicted) = accuracy(&network, &digits, &test_set)?;
    let mut confusion = [[0usize; 10]; 10];
    for (&i, &p) in test_set.iter().zip(&predicted) {
        confusion[digits.labels[i]][p] += 1;
    }
    println!("\nConfusion matrix of the test set (rows: true digit, columns: predicted):");
    println!(
        "      {}",
        (0..10).map(|d| format!("{d:4}")).collect::<String>()
    );
    for (digit, row) in confusion.iter().enumerate() {
        println!(
            "  {digit:2}  {}",
            row.iter().map(|n| format!("{n:4}")).collect::<String>()
        );
    }
    println!(
        "\nFinal test accuracy {test_accuracy:.1}% ({} of {}), {:.1} s in all.",
        predicted
            .iter()
            .zip(&test_set)
            .filter(|&(&p, &i)| p == digits.labels[i])
            .count(),
        test_set.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
