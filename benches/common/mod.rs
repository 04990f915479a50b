//! What the conv and extended benches share: a row's operands and outputs,
//! and one call of each pass into them (the `_into` functions, so a timed
//! call allocates nothing of this crate's).

use gemmconv::ndarray::{Array1, Array4};
use gemmconv::suite::SuiteRow;
use gemmconv::{
    Algorithm, Conv2d, Element, Gradients, Workspace, conv2d_backward_into, conv2d_into,
};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use std::hint::black_box;

/// A row's input, Kaiming weights, bias and output gradient, random with a
/// fixed seed, and the arrays the passes write into.
pub struct Problem<T> {
    row: SuiteRow,
    x: Array4<T>,
    w: Array4<T>,
    b: Array1<T>,
    dy: Array4<T>,
    y: Array4<T>,
    grads: Gradients<T>,
}

impl<T: Element> Problem<T> {
    pub fn new(row: &SuiteRow) -> Self {
        let mut rng = SmallRng::seed_from_u64(1);
        let spec = &row.spec;
        let out = spec.output_shape(row.input).expect("suite rows are valid");
        let mut random4 = |shape| {
            Array4::from_shape_simple_fn(shape, || T::from_f64(rng.random_range(-1.0..1.0)))
        };
        let x = random4(row.input);
        let dy = random4(out);
        let layer = Conv2d::<T>::new_kaiming(spec.clone(), &mut rng).expect("valid");
        Problem {
            row: row.clone(),
            x,
            w: layer.weight().clone(),
            b: Array1::from_elem(spec.out_channels(), T::from_f64(0.1)),
            dy,
            y: Array4::zeros(out),
            grads: Gradients {
                dx: Array4::zeros(row.input),
                dw: Array4::zeros(spec.weight_shape()),
                db: Array1::zeros(spec.out_channels()),
            },
        }
    }

    /// The weights and the output gradient scaled into the subnormal range
    /// (every nonzero value below the smallest normal number).
    #[allow(dead_code)] // the cliffs bench's alone
    pub fn subnormal(mut self) -> Self {
        let scale = T::min_positive_value() * T::from_f64(0.5);
        self.w.mapv_inplace(|v| v * scale);
        self.dy.mapv_inplace(|v| v * scale);
        self
    }

    /// One forward pass into `y`.
    pub fn forward(&mut self, algorithm: Algorithm, ws: &mut Workspace<T>) {
        let spec = &self.row.spec;
        let (x, w, b) = (self.x.view(), self.w.view(), Some(self.b.view()));
        conv2d_into(x, w, b, spec, algorithm, ws, self.y.view_mut()).expect("valid");
        black_box(&self.y);
    }

    /// One backward pass into the gradients.
    pub fn backward(&mut self, algorithm: Algorithm, ws: &mut Workspace<T>) {
        let spec = &self.row.spec;
        let (x, w, dy) = (self.x.view(), self.w.view(), self.dy.view());
        conv2d_backward_into(x, w, dy, spec, algorithm, ws, self.grads.view_mut()).expect("valid");
        black_box(&self.grads);
    }
}
