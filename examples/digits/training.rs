//! The training loop: mini-batches of the training set, in a fresh order
//! each epoch, one Adam step each; after each epoch, loss and accuracy on
//! both sets.

use crate::data::{Digits, shuffle};
use crate::network::{Adam, Network, argmax};
use gemmconv::ConvError;
use gemmconv::ndarray::Axis;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::time::Instant;

/// How the network is trained.
pub struct Config {
    pub epochs: usize,
    pub batch: usize,
    pub learning_rate: f32,
    pub seed: u64,
}

/// What an epoch ended with.
pub struct Epoch {
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub loss: f32,
    /// Percentages.
    pub train_accuracy: f32,
    pub test_accuracy: f32,
    /// Seconds since training began.
    pub seconds: f64,
}

/// The percentage of `indices` the network classifies right, and its
/// predictions for them.
pub fn accuracy(
    network: &Network,
    digits: &Digits,
    indices: &[usize],
) -> Result<(f32, Vec<usize>), ConvError> {
    let images = digits.images.select(Axis(0), indices);
    let predicted = argmax(&network.predict(images.view())?);
    let right = predicted
        .iter()
        .zip(indices)
        .filter(|&(&p, &i)| p == digits.labels[i])
        .count();
    Ok((100.0 * right as f32 / indices.len() as f32, predicted))
}

/// Trains a new network on `train`, reporting each batch done
/// (`on_batch`) and each epoch's figures (`on_epoch`).
pub fn train(
    digits: &Digits,
    (train, test): (&[usize], &[usize]),
    config: &Config,
    mut on_batch: impl FnMut(),
    mut on_epoch: impl FnMut(&Epoch),
) -> Result<Network, ConvError> {
    let mut network = Network::new(config.seed)?;
    let mut adam = Adam::new(config.learning_rate);
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut order = train.to_vec();
    let start = Instant::now();
    for epoch in 1..=config.epochs {
        shuffle(&mut order, &mut rng);
        let mut losses = Vec::new();
        for batch in order.chunks(config.batch) {
            let images = digits.images.select(Axis(0), batch);
            let labels: Vec<usize> = batch.iter().map(|&i| digits.labels[i]).collect();
            losses.push(network.train_step(images.view(), &labels, &mut adam)?);
            on_batch();
        }
        on_epoch(&Epoch {
            epoch,
            loss: losses.iter().sum::<f32>() / losses.len() as f32,
            train_accuracy: accuracy(&network, digits, train)?.0,
            test_accuracy: accuracy(&network, digits, test)?.0,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    Ok(network)
}
