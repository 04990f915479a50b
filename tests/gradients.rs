//! Backward passes against central finite differences of the forward pass,
//! in f64, on small geometries with stride, padding, dilation and groups.

mod common;

use common::{random_array1, random_array4, rng};
use gemmconv::ndarray::{Array1, Array4};
use gemmconv::{
    Algorithm, Conv2dSpec, Kernel, Padding, Workspace, conv2d, conv2d_backward,
    conv2d_backward_with_workspace,
};

/// `L = Σ y ⊙ r` for a fixed random `r`, so `∂L/∂y = r`.
fn loss(
    x: &Array4<f64>,
    w: &Array4<f64>,
    b: &Array1<f64>,
    r: &Array4<f64>,
    spec: &Conv2dSpec,
) -> f64 {
    let y = conv2d(x.view(), w.view(), Some(b.view()), spec, Algorithm::Naive).unwrap();
    (&y * r).sum()
}

/// Central difference of `L` with respect to every element of `param`.
fn numeric_gradient<D: gemmconv::ndarray::Dimension>(
    param: &gemmconv::ndarray::Array<f64, D>,
    mut loss_with: impl FnMut(&gemmconv::ndarray::Array<f64, D>) -> f64,
) -> gemmconv::ndarray::Array<f64, D> {
    const H: f64 = 1e-6;
    let mut grad = param.clone();
    let mut probe = param.clone();
    for (i, g) in grad.iter_mut().enumerate() {
        let original = *param.iter().nth(i).unwrap();
        *probe.iter_mut().nth(i).unwrap() = original + H;
        let plus = loss_with(&probe);
        *probe.iter_mut().nth(i).unwrap() = original - H;
        let minus = loss_with(&probe);
        *probe.iter_mut().nth(i).unwrap() = original;
        *g = (plus - minus) / (2.0 * H);
    }
    grad
}

fn assert_gradient<D: gemmconv::ndarray::Dimension>(
    analytic: &gemmconv::ndarray::Array<f64, D>,
    numeric: &gemmconv::ndarray::Array<f64, D>,
    what: &str,
) {
    for (a, n) in analytic.iter().zip(numeric) {
        assert!(
            (a - n).abs() <= 1e-6 * (1.0 + n.abs()),
            "{what}: analytic {a} vs finite difference {n}"
        );
    }
}

fn check(spec: Conv2dSpec, input: [usize; 4], seed: u64) {
    let mut rng = rng(seed);
    let x = random_array4::<f64>(&mut rng, input);
    let w = random_array4::<f64>(&mut rng, spec.weight_shape());
    let b = random_array1::<f64>(&mut rng, spec.out_channels());
    let r = random_array4::<f64>(&mut rng, spec.output_shape(input).unwrap());

    let dx = numeric_gradient(&x, |x| loss(x, &w, &b, &r, &spec));
    let dw = numeric_gradient(&w, |w| loss(&x, w, &b, &r, &spec));
    let db = numeric_gradient(&b, |b| loss(&x, &w, b, &r, &spec));
    for algo in Algorithm::ALL {
        let g = conv2d_backward(x.view(), w.view(), r.view(), &spec, algo).unwrap();
        let what = |part: &str| format!("{} {part} for {spec:?} on {input:?}", algo.name());
        assert_gradient(&g.dx, &dx, &what("dx"));
        assert_gradient(&g.dw, &dw, &what("dw"));
        assert_gradient(&g.db, &db, &what("db"));
    }
    // Every kernel of the strided algorithm (where one does not apply, the
    // column matrix runs in its place).
    for kernel in [
        Kernel::Gemm,
        Kernel::Direct,
        Kernel::Shifted,
        Kernel::Winograd,
        Kernel::Winograd4x4,
    ] {
        let mut ws = Workspace::new().with_kernel(kernel);
        let (x, w, r) = (x.view(), w.view(), r.view());
        let g =
            conv2d_backward_with_workspace(x, w, r, &spec, Algorithm::Strided, &mut ws).unwrap();
        let what = |part: &str| format!("strided ({kernel:?}) {part} for {spec:?} on {input:?}");
        assert_gradient(&g.dx, &dx, &what("dx"));
        assert_gradient(&g.dw, &dw, &what("dw"));
        assert_gradient(&g.db, &db, &what("db"));
    }
}

#[test]
fn plain() {
    check(Conv2dSpec::new(2, 3, (3, 3)), [2, 2, 5, 6], 10);
}

#[test]
fn stride_two_with_padding() {
    check(
        Conv2dSpec::new(2, 2, (3, 2)).stride((2, 3)).padding((1, 1)),
        [2, 2, 7, 8],
        11,
    );
}

#[test]
fn dilation_and_asymmetric_padding() {
    let padding = Padding {
        top: 2,
        bottom: 0,
        left: 1,
        right: 3,
    };
    check(
        Conv2dSpec::new(1, 2, (2, 3))
            .dilation((2, 2))
            .padding(padding),
        [1, 1, 6, 5],
        12,
    );
}

#[test]
fn groups_with_stride_and_dilation() {
    check(
        Conv2dSpec::new(4, 6, (3, 3))
            .groups(2)
            .stride((2, 2))
            .dilation((1, 2))
            .padding((1, 2)),
        [2, 4, 7, 7],
        13,
    );
}

#[test]
fn depthwise() {
    check(
        Conv2dSpec::new(3, 3, (3, 3))
            .groups(3)
            .padding((1, 1))
            .stride((1, 2)),
        [2, 3, 5, 5],
        14,
    );
}

#[test]
fn padding_wider_than_the_kernel() {
    check(
        Conv2dSpec::new(1, 2, (2, 2)).padding((3, 2)).stride((3, 2)),
        [1, 1, 3, 4],
        15,
    );
}

#[test]
fn three_by_three_dilated_with_uneven_padding() {
    // The Winograd kernel's geometry: a 3x3 kernel at stride 1, here with
    // dilation, padding beyond its reach on one side and odd output sizes.
    let padding = Padding {
        top: 1,
        bottom: 5,
        left: 0,
        right: 2,
    };
    check(
        Conv2dSpec::new(3, 2, (3, 3))
            .dilation((2, 1))
            .padding(padding),
        [2, 3, 6, 5],
        16,
    );
}
