//! Helpers shared by the integration tests: random geometries and arrays,
//! and a comparison with a tolerance suited to the element type.

#![allow(dead_code)]

use gemmconv::ndarray::{Array1, Array4};
use gemmconv::{
    Algorithm, Conv2dSpec, DEFAULT_MIN_LANE_FLOPS, Element, InputGradient, Kernel, Padding,
    Workspace,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A random convolution problem: spec, input shape, and whether the bias is on.
#[derive(Clone, Debug)]
pub struct Case {
    pub spec: Conv2dSpec,
    pub input: [usize; 4],
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// A random geometry covering strides 1-3, dilation 1-3, asymmetric padding
/// (sometimes wider than the kernel), groups including depthwise, non-square
/// kernels and inputs, batch 1-4, with and without bias.
pub fn random_case(rng: &mut StdRng) -> Case {
    let groups = match rng.random_range(0..4) {
        0 | 1 => 1,
        2 => rng.random_range(2..=3),
        _ => 0, // depthwise, resolved below
    };
    let (c_in, c_out, groups) = if groups == 0 {
        let c = rng.random_range(1..=5);
        (c, c * rng.random_range(1..=2), c)
    } else {
        (
            groups * rng.random_range(1..=3),
            groups * rng.random_range(1..=3),
            groups,
        )
    };
    let kernel: (usize, usize) = (rng.random_range(1..=4), rng.random_range(1..=4));
    let stride = (rng.random_range(1..=3), rng.random_range(1..=3));
    let dilation: (usize, usize) = (rng.random_range(1..=3), rng.random_range(1..=3));
    let padding = Padding {
        top: rng.random_range(0..=3),
        bottom: rng.random_range(0..=3),
        left: rng.random_range(0..=3),
        right: rng.random_range(0..=3),
    };
    let extent_h = (kernel.0 - 1) * dilation.0 + 1;
    let extent_w = (kernel.1 - 1) * dilation.1 + 1;
    let min_h = extent_h.saturating_sub(padding.top + padding.bottom).max(1);
    let min_w = extent_w.saturating_sub(padding.left + padding.right).max(1);
    let h = rng.random_range(min_h..=min_h + 7);
    let w = rng.random_range(min_w..=min_w + 7);
    let spec = Conv2dSpec::new(c_in, c_out, kernel)
        .stride(stride)
        .padding(padding)
        .dilation(dilation)
        .groups(groups)
        .bias(rng.random_bool(0.7));
    Case {
        spec,
        input: [rng.random_range(1..=4), c_in, h, w],
    }
}

pub fn random_array4<T: Element>(rng: &mut StdRng, shape: [usize; 4]) -> Array4<T> {
    Array4::from_shape_simple_fn(shape, || T::from_f64(rng.random_range(-1.0..1.0)))
}

pub fn random_array1<T: Element>(rng: &mut StdRng, len: usize) -> Array1<T> {
    Array1::from_shape_simple_fn(len, || T::from_f64(rng.random_range(-1.0..1.0)))
}

/// Relative tolerance for results of sums of products of values in [-1, 1].
pub fn tolerance<T: Element>() -> f64 {
    if T::NAME == "f32" { 2e-5 } else { 1e-12 }
}

/// `max |got - want| / max(1, max |want|)`, the error relative to the
/// result's scale; NaN if any difference is NaN (`f64::max` would skip it,
/// and a NaN left in an output must fail the comparison).
pub fn relative_error<T: Element, D: gemmconv::ndarray::Dimension>(
    got: &gemmconv::ndarray::Array<T, D>,
    want: &gemmconv::ndarray::Array<T, D>,
) -> f64 {
    assert_eq!(got.shape(), want.shape(), "shapes differ");
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.into_f64().abs()));
    let diff = got.iter().zip(want.iter()).fold(0.0f64, |m, (a, b)| {
        let d = (a.into_f64() - b.into_f64()).abs();
        if m.is_nan() || d.is_nan() {
            f64::NAN
        } else {
            m.max(d)
        }
    });
    diff / scale
}

/// Asserts `got` matches `want` within the element type's tolerance.
pub fn assert_close<T: Element, D: gemmconv::ndarray::Dimension>(
    got: &gemmconv::ndarray::Array<T, D>,
    want: &gemmconv::ndarray::Array<T, D>,
    what: &str,
) {
    let err = relative_error(got, want);
    assert!(
        err <= tolerance::<T>(),
        "{what}: relative error {err:e} exceeds {:e}",
        tolerance::<T>()
    );
}

/// The operands of one problem: input, weight, bias, output gradient.
pub type Operands<T, D> = (
    gemmconv::ndarray::Array<T, D>,
    gemmconv::ndarray::Array<T, D>,
    Array1<T>,
    gemmconv::ndarray::Array<T, D>,
);

/// Every kernel of the strided algorithm, the column matrix with each
/// input-gradient method.
pub const KERNELS: [(Kernel, InputGradient); 7] = [
    (Kernel::Auto, InputGradient::Auto),
    (Kernel::Gemm, InputGradient::Col2im),
    (Kernel::Gemm, InputGradient::ErrorLowering),
    (Kernel::Direct, InputGradient::Auto),
    (Kernel::Shifted, InputGradient::Auto),
    (Kernel::Winograd, InputGradient::Auto),
    (Kernel::Winograd4x4, InputGradient::Auto),
];

/// Every algorithm, and the strided one with every kernel and
/// input-gradient method, each with the default least lane work and with
/// none (which cuts passes into as many parts as they allow), and a small
/// column cap (which cuts items into several tiles).
pub fn configurations<T: Element>() -> Vec<(Algorithm, Workspace<T>, String)> {
    let mut list = vec![
        (Algorithm::Naive, Workspace::new(), "naive".to_string()),
        (Algorithm::Im2col, Workspace::new(), "im2col".to_string()),
    ];
    for (kernel, method) in KERNELS {
        for least in [DEFAULT_MIN_LANE_FLOPS, 0] {
            let ws = Workspace::new()
                .with_kernel(kernel)
                .with_input_gradient(method)
                .with_min_lane_flops(least)
                .with_column_cap_bytes(64 << 10);
            let label = format!("strided {kernel:?} {method:?} least {least}");
            list.push((Algorithm::Strided, ws, label));
        }
    }
    list
}
