//! A small CNN for 8x8 digits: two `gemmconv::Conv2d` layers, and the rest
//! (ReLU, max-pooling, a linear layer, softmax cross-entropy, Adam) kept
//! small and plain here: the library is a convolution library.
//!
//! conv 3x3 (1 → 16) → ReLU → conv 3x3 (16 → 32) → ReLU → max-pool 2x2 →
//! linear (512 → 10) → softmax cross-entropy

use gemmconv::ndarray::{Array1, Array2, Array4, ArrayView4, Axis, Ix2, Zip, s};
use gemmconv::{Conv2d, Conv2dSpec, ConvError, GradientSelection};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Adam's step size and decay rates.
pub struct Adam {
    pub learning_rate: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
    steps: i32,
}

impl Adam {
    pub fn new(learning_rate: f32) -> Self {
        Adam {
            learning_rate,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            steps: 0,
        }
    }
}

/// Adam's running moments of one parameter.
struct Moments {
    mean: Vec<f32>,
    square: Vec<f32>,
}

impl Moments {
    fn new(len: usize) -> Self {
        Moments {
            mean: vec![0.0; len],
            square: vec![0.0; len],
        }
    }

    /// One Adam update of `params` from `grads` (in the same order).
    fn update<'a>(
        &mut self,
        adam: &Adam,
        params: impl IntoIterator<Item = &'a mut f32>,
        grads: impl IntoIterator<Item = &'a f32>,
    ) {
        let t = adam.steps;
        let correction1 = 1.0 - adam.beta1.powi(t);
        let correction2 = 1.0 - adam.beta2.powi(t);
        let moments = self.mean.iter_mut().zip(self.square.iter_mut());
        for ((p, &g), (m, v)) in params.into_iter().zip(grads).zip(moments) {
            *m = adam.beta1 * *m + (1.0 - adam.beta1) * g;
            *v = adam.beta2 * *v + (1.0 - adam.beta2) * g * g;
            let step = (*m / correction1) / ((*v / correction2).sqrt() + adam.epsilon);
            *p -= adam.learning_rate * step;
        }
    }
}

/// The network's parameters and Adam's state for each.
pub struct Network {
    conv1: Conv2d<f32>,
    conv2: Conv2d<f32>,
    /// The linear layer, `[10, 512]`, and its bias.
    linear: Array2<f32>,
    linear_bias: Array1<f32>,
    linear_grad: Array2<f32>,
    linear_bias_grad: Array1<f32>,
    moments: Vec<Moments>,
}

/// What one training forward pass keeps for its backward pass.
struct Activations {
    /// Second convolution's output after ReLU, `[n, 32, 8, 8]`.
    relu2: Array4<f32>,
    /// First convolution's output after ReLU.
    relu1: Array4<f32>,
    /// Pooled features, flattened: `[n, 512]`.
    features: Array2<f32>,
}

/// Channels of the two convolutions.
const CHANNELS: (usize, usize) = (16, 32);
/// Features after pooling: 32 channels of 4x4.
const FEATURES: usize = CHANNELS.1 * 4 * 4;

impl Network {
    /// A network initialised as PyTorch initialises one, from `seed`.
    pub fn new(seed: u64) -> Result<Self, ConvError> {
        let mut rng = StdRng::seed_from_u64(seed);
        let spec1 = Conv2dSpec::new(1, CHANNELS.0, (3, 3)).padding((1, 1));
        let spec2 = Conv2dSpec::new(CHANNELS.0, CHANNELS.1, (3, 3)).padding((1, 1));
        let conv1 = Conv2d::new_pytorch_default(spec1, &mut rng)?;
        let conv2 = Conv2d::new_pytorch_default(spec2, &mut rng)?;
        let bound = 1.0 / (FEATURES as f32).sqrt();
        let mut uniform = || rng.random_range(-bound..bound);
        let linear = Array2::from_shape_simple_fn((10, FEATURES), &mut uniform);
        let linear_bias = Array1::from_shape_simple_fn(10, &mut uniform);
        let moments = [
            conv1.weight().len(),
            CHANNELS.0,
            conv2.weight().len(),
            CHANNELS.1,
        ]
        .into_iter()
        .chain([linear.len(), 10])
        .map(Moments::new)
        .collect();
        Ok(Network {
            conv1,
            conv2,
            linear_grad: Array2::zeros(linear.raw_dim()),
            linear_bias_grad: Array1::zeros(10),
            linear,
            linear_bias,
            moments,
        })
    }

    /// How many numbers the network learns.
    pub fn parameters(&self) -> usize {
        self.conv1.weight().len()
            + CHANNELS.0
            + self.conv2.weight().len()
            + CHANNELS.1
            + self.linear.len()
            + 10
    }

    /// Class scores `[n, 10]` for `images`, on the inference path (no input
    /// kept, `&self`).
    pub fn predict(&self, images: ArrayView4<'_, f32>) -> Result<Array2<f32>, ConvError> {
        let relu1 = relu(self.conv1.infer(images)?);
        let relu2 = relu(self.conv2.infer(relu1.view())?);
        Ok(self.classify(&pool(&relu2)))
    }

    fn classify(&self, features: &Array2<f32>) -> Array2<f32> {
        features.dot(&self.linear.t()) + &self.linear_bias
    }

    /// One step of Adam on a mini-batch: forward, loss, backward, update.
    /// Returns the batch's mean loss.
    pub fn train_step(
        &mut self,
        images: ArrayView4<'_, f32>,
        labels: &[usize],
        adam: &mut Adam,
    ) -> Result<f32, ConvError> {
        let relu1 = relu(self.conv1.forward(images)?);
        let relu2 = relu(self.conv2.forward(relu1.view())?);
        let activations = Activations {
            features: pool(&relu2),
            relu2,
            relu1,
        };
        let logits = self.classify(&activations.features);
        let (loss, dlogits) = softmax_cross_entropy(&logits, labels);
        self.backward(&activations, &dlogits)?;
        adam.steps += 1;
        self.update(adam);
        Ok(loss)
    }

    /// Gradients of every parameter, zeroed first: the layers accumulate
    /// theirs, so a step clears them.
    fn backward(&mut self, a: &Activations, dlogits: &Array2<f32>) -> Result<(), ConvError> {
        self.linear_grad = dlogits.t().dot(&a.features);
        self.linear_bias_grad = dlogits.sum_axis(Axis(0));
        let dfeatures = dlogits.dot(&self.linear);
        let drelu2 = unpool(&a.relu2, &dfeatures);
        let dconv2 = relu_backward(&a.relu2, drelu2);
        self.conv1.zero_grad();
        self.conv2.zero_grad();
        let drelu1 = self.conv2.backward(dconv2.view())?;
        let dconv1 = relu_backward(&a.relu1, drelu1);
        // The first layer: no gradient of the images is needed.
        let none = self
            .conv1
            .backward_selected(dconv1.view(), GradientSelection::PARAMETERS)?;
        debug_assert!(none.is_none());
        Ok(())
    }

    fn update(&mut self, adam: &Adam) {
        let [w1, b1, w2, b2, wl, bl] = &mut self.moments[..] else {
            unreachable!("six parameters")
        };
        for (layer, (w, b)) in [(&mut self.conv1, (w1, b1)), (&mut self.conv2, (w2, b2))] {
            let p = layer.parameters_mut();
            w.update(adam, p.weight, p.weight_grad);
            if let (Some(bias), Some(grad)) = (p.bias, p.bias_grad) {
                b.update(adam, bias, grad);
            }
        }
        wl.update(adam, &mut self.linear, &self.linear_grad);
        bl.update(adam, &mut self.linear_bias, &self.linear_bias_grad);
    }
}

fn relu(mut a: Array4<f32>) -> Array4<f32> {
    a.mapv_inplace(|v| v.max(0.0));
    a
}

/// The gradient through a ReLU whose output was `out`.
fn relu_backward(out: &Array4<f32>, mut grad: Array4<f32>) -> Array4<f32> {
    Zip::from(&mut grad).and(out).for_each(|g, &o| {
        if o <= 0.0 {
            *g = 0.0
        }
    });
    grad
}

/// 2x2 max-pooling of `[n, c, 8, 8]`, flattened to `[n, c·16]`.
fn pool(a: &Array4<f32>) -> Array2<f32> {
    let (n, c, h, w) = a.dim();
    let pooled = Array4::from_shape_fn((n, c, h / 2, w / 2), |(i, ch, y, x)| {
        a.slice(s![i, ch, 2 * y..2 * y + 2, 2 * x..2 * x + 2])
            .fold(f32::NEG_INFINITY, |m, &v| m.max(v))
    });
    pooled
        .into_shape_with_order((n, c * h / 2 * w / 2))
        .expect("contiguous")
        .into_dimensionality::<Ix2>()
        .expect("rank 2")
}

/// The gradient of [`pool`]: each window's gradient to its largest input
/// (the first, on ties).
fn unpool(a: &Array4<f32>, grad: &Array2<f32>) -> Array4<f32> {
    let (n, c, h, w) = a.dim();
    let grad = grad
        .view()
        .into_shape_with_order((n, c, h / 2, w / 2))
        .expect("the pooled shape");
    let mut out = Array4::zeros(a.raw_dim());
    for ((i, ch, y, x), &g) in grad.indexed_iter() {
        let window = a.slice(s![i, ch, 2 * y..2 * y + 2, 2 * x..2 * x + 2]);
        let (mut best, mut at) = (f32::NEG_INFINITY, (0, 0));
        for ((dy, dx), &v) in window.indexed_iter() {
            if v > best {
                (best, at) = (v, (dy, dx));
            }
        }
        out[[i, ch, 2 * y + at.0, 2 * x + at.1]] = g;
    }
    out
}

/// The mean cross-entropy of softmax(`logits`) against `labels`, and its
/// gradient with respect to the logits.
fn softmax_cross_entropy(logits: &Array2<f32>, labels: &[usize]) -> (f32, Array2<f32>) {
    let n = labels.len() as f32;
    let mut grad = logits.clone();
    let mut loss = 0.0;
    for (mut row, &label) in grad.outer_iter_mut().zip(labels) {
        let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        row.mapv_inplace(|v| (v - max).exp());
        let sum = row.sum();
        row /= sum;
        loss -= row[label].max(f32::MIN_POSITIVE).ln();
        row[label] -= 1.0;
    }
    grad /= n;
    (loss / n, grad)
}

/// The predicted class of each row of scores.
pub fn argmax(scores: &Array2<f32>) -> Vec<usize> {
    scores
        .outer_iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 { (i, v) } else { best }
                })
                .0
        })
        .collect()
}
