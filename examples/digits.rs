//! A convolution layer on real images: the UCI handwritten digits (8x8,
//! `examples/data`). First the three algorithms run the same edge filters
//! over every image and agree; then a `Conv2d` layer learns a Sobel filter
//! from its responses by gradient descent, using `backward`.
//!
//! `cargo run --release --example digits`

use flate2::read::GzDecoder;
use gemmconv::ndarray::{Array1, Array4, Axis, s};
use gemmconv::{Algorithm, Conv2d, Conv2dSpec, conv2d};
use std::io::Read;

/// Images `(n, 1, 8, 8)` scaled to [0, 1], and their labels.
fn load_digits() -> (Array4<f64>, Vec<usize>) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/digits.csv.gz");
    let mut text = String::new();
    GzDecoder::new(std::fs::File::open(path).expect("examples/data/digits.csv.gz"))
        .read_to_string(&mut text)
        .expect("gzip text");
    let rows: Vec<Vec<f64>> = text
        .lines()
        .map(|line| {
            line.split(',')
                .map(|v| v.trim().parse().expect("integer"))
                .collect()
        })
        .collect();
    let images = Array4::from_shape_fn((rows.len(), 1, 8, 8), |(n, _, h, w)| {
        rows[n][h * 8 + w] / 16.0
    });
    let labels = rows.iter().map(|r| r[64] as usize).collect();
    (images, labels)
}

fn main() -> Result<(), gemmconv::ConvError> {
    let (images, labels) = load_digits();
    println!("{} digits of 8x8 pixels", images.len_of(Axis(0)));

    // Four fixed 3x3 filters: Sobel x, Sobel y, Laplacian, box blur.
    let filters = [
        [-1.0, 0.0, 1.0, -2.0, 0.0, 2.0, -1.0, 0.0, 1.0],
        [-1.0, -2.0, -1.0, 0.0, 0.0, 0.0, 1.0, 2.0, 1.0],
        [0.0, 1.0, 0.0, 1.0, -4.0, 1.0, 0.0, 1.0, 0.0],
        [1.0 / 9.0; 9],
    ];
    let w = Array4::from_shape_fn((4, 1, 3, 3), |(f, _, i, j)| filters[f][i * 3 + j]);
    let spec = Conv2dSpec::new(1, 4, (3, 3)).padding((1, 1)).bias(false);
    let responses: Vec<_> = Algorithm::ALL
        .iter()
        .map(|&algo| conv2d(images.view(), w.view(), None, &spec, algo))
        .collect::<Result<_, _>>()?;
    let disagreement = responses[1..]
        .iter()
        .map(|r| {
            (r - &responses[0])
                .mapv(f64::abs)
                .fold(0.0f64, |m, &v| m.max(v))
        })
        .fold(0.0, f64::max);
    println!("naive, im2col and strided agree to {disagreement:.1e}");

    println!("\nmean |response| per digit class:\n  digit  sobel-x  sobel-y  laplace     blur");
    for digit in 0..10 {
        let members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == digit).collect();
        let picked = responses[2].select(Axis(0), &members);
        let means: Vec<f64> = (0..4)
            .map(|f| {
                picked
                    .slice(s![.., f, .., ..])
                    .mapv(f64::abs)
                    .mean()
                    .unwrap_or(0.0)
            })
            .collect();
        println!(
            "  {digit:5}  {:7.3}  {:7.3}  {:7.3}  {:7.3}",
            means[0], means[1], means[2], means[3]
        );
    }

    // Learn Sobel x back from its responses: a 1-in, 1-out layer with a zero
    // kernel, trained on the squared error with plain gradient descent.
    let target = responses[2].slice(s![.., 0..1, .., ..]).to_owned();
    let learn_spec = Conv2dSpec::new(1, 1, (3, 3)).padding((1, 1));
    let mut layer = Conv2d::from_weights(
        learn_spec,
        Array4::zeros((1, 1, 3, 3)),
        Some(Array1::zeros(1)),
    )?;
    let count = target.len() as f64;
    println!("\nlearning a 3x3 filter from the Sobel-x responses:");
    for step in 0..=60 {
        let y = layer.forward(images.view())?;
        let error = &y - &target;
        if step % 15 == 0 {
            println!(
                "  step {step:2}: mean squared error {:.6}",
                error.mapv(|e| e * e).sum() / count
            );
        }
        layer.zero_grad();
        layer.backward((error * (2.0 / count)).view())?;
        let (dw, db) = (
            layer.weight_grad().clone(),
            layer.bias_grad().cloned().unwrap_or_default(),
        );
        layer.weight_mut().scaled_add(-0.5, &dw);
        if let Some(mut b) = layer.bias_mut() {
            b.scaled_add(-0.5, &db);
        }
    }
    println!("learned kernel (Sobel x is [-1 0 1; -2 0 2; -1 0 1]):");
    for row in layer.weight().slice(s![0, 0, .., ..]).rows() {
        println!("  {:6.2} {:6.2} {:6.2}", row[0], row[1], row[2]);
    }
    Ok(())
}
