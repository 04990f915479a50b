//! The convolution family against references written from PyTorch's
//! definitions (transposed convolution as a scatter, padding modes as
//! index maps, 1-D convolution as loops), on random geometries, for every
//! algorithm and kernel, f32 and f64, every gradient alone and together.

mod common;

use common::{assert_close, random_array1, random_array4, rng};
use gemmconv::ndarray::{Array, Array1, Array3, Array4, Dimension};
use gemmconv::{
    Algorithm, Conv1d, Conv1dSpec, Conv2d, Conv2dSpec, ConvTranspose2d, ConvTranspose2dSpec,
    Element, GradientSelection, Gradients, InputGradient, Kernel, Layer, Operation, Padding,
    PaddingMode, Workspace,
};
use rand::RngExt;
use rand::rngs::StdRng;

// ---------------------------------------------------------------- references

/// One product of the transposed convolution's scatter, `y[y_at] +=
/// x[x_at] · w[w_at]`.
struct Term {
    x_at: [usize; 4],
    w_at: [usize; 4],
    y_at: [usize; 4],
}

/// Every product of PyTorch's `ConvTranspose2d` written as the scatter it
/// is: `y[n, g·c_out_g + o, ih·s - p + i·d, iw·s - p + j·d] += x[n, c, ih,
/// iw] · w[c, o, i, j]`, over the channels `c` of group `g`, for outputs
/// of shape `out`.
fn scatter(x: [usize; 4], spec: &ConvTranspose2dSpec, out: [usize; 4]) -> Vec<Term> {
    let [n, c_in, h, wd] = x;
    let (cin_g, cout_g) = (c_in / spec.get_groups(), out[1] / spec.get_groups());
    let (kh, kw) = spec.kernel();
    let ((sh, sw), (ph, pw), (dh, dw)) =
        (spec.get_stride(), spec.get_padding(), spec.get_dilation());
    let mut terms = Vec::new();
    for b in 0..n {
        for c in 0..c_in {
            for (ih, iw, o, i, j) in indices5(h, wd, cout_g, kh, kw) {
                let oh = (ih * sh + i * dh) as isize - ph as isize;
                let ow = (iw * sw + j * dw) as isize - pw as isize;
                if oh < 0 || ow < 0 || oh as usize >= out[2] || ow as usize >= out[3] {
                    continue;
                }
                terms.push(Term {
                    x_at: [b, c, ih, iw],
                    w_at: [c, o, i, j],
                    y_at: [b, c / cin_g * cout_g + o, oh as usize, ow as usize],
                });
            }
        }
    }
    terms
}

/// Every `(a, b, c, d, e)` below the five bounds, the last varying fastest.
fn indices5(
    a: usize,
    b: usize,
    c: usize,
    d: usize,
    e: usize,
) -> impl Iterator<Item = (usize, usize, usize, usize, usize)> {
    (0..a).flat_map(move |p| {
        (0..b).flat_map(move |q| {
            (0..c).flat_map(move |r| (0..d).flat_map(move |s| (0..e).map(move |t| (p, q, r, s, t))))
        })
    })
}

/// The transposed convolution by its scatter, then the bias.
fn transposed_reference<T: Element>(
    x: &Array4<T>,
    w: &Array4<T>,
    b: Option<&Array1<T>>,
    spec: &ConvTranspose2dSpec,
    out: [usize; 4],
) -> Array4<T> {
    let mut y = Array4::<T>::zeros(out);
    let shape = [x.dim().0, x.dim().1, x.dim().2, x.dim().3];
    for t in scatter(shape, spec, out) {
        y[t.y_at] += x[t.x_at] * w[t.w_at];
    }
    if let Some(b) = b {
        for (o, &v) in b.iter().enumerate() {
            y.slice_mut(gemmconv::ndarray::s![.., o, .., ..])
                .mapv_inplace(|e| e + v);
        }
    }
    y
}

/// The gradients of [`transposed_reference`]: each product's contribution
/// sent back to the two factors it came from.
fn transposed_backward_reference<T: Element>(
    x: &Array4<T>,
    w: &Array4<T>,
    dy: &Array4<T>,
    spec: &ConvTranspose2dSpec,
) -> Gradients<T> {
    let out = [dy.dim().0, dy.dim().1, dy.dim().2, dy.dim().3];
    let mut g = Gradients {
        dx: Array4::zeros(x.raw_dim()),
        dw: Array4::zeros(w.raw_dim()),
        db: Array1::zeros(out[1]),
    };
    let shape = [x.dim().0, x.dim().1, x.dim().2, x.dim().3];
    for t in scatter(shape, spec, out) {
        let e = dy[t.y_at];
        g.dx[t.x_at] += e * w[t.w_at];
        g.dw[t.w_at] += e * x[t.x_at];
    }
    g.db = dy
        .sum_axis(gemmconv::ndarray::Axis(3))
        .sum_axis(gemmconv::ndarray::Axis(2))
        .sum_axis(gemmconv::ndarray::Axis(0));
    g
}

/// The input index padding index `k` (counted from the input's first
/// pixel, negative before it) copies, as PyTorch's `F.pad` defines it.
fn source(mode: PaddingMode, k: isize, len: usize) -> usize {
    let len = len as isize;
    let index = match mode {
        PaddingMode::Reflect if k < 0 => -k,
        PaddingMode::Reflect if k >= len => 2 * len - 2 - k,
        PaddingMode::Replicate if k < 0 => 0,
        PaddingMode::Replicate if k >= len => len - 1,
        PaddingMode::Circular => ((k % len) + len) % len,
        _ => k,
    };
    index as usize
}

/// `x` padded in `mode`, as a plain array.
fn pad_reference<T: Element>(x: &Array4<T>, mode: PaddingMode, p: Padding) -> Array4<T> {
    let (n, c, h, w) = x.dim();
    Array4::from_shape_fn(
        (n, c, h + p.top + p.bottom, w + p.left + p.right),
        |(a, b, i, j)| {
            let si = source(mode, i as isize - p.top as isize, h);
            let sj = source(mode, j as isize - p.left as isize, w);
            x[[a, b, si, sj]]
        },
    )
}

/// The gradient of a padded input folded back onto the input.
fn fold_reference<T: Element>(
    gp: &Array4<T>,
    mode: PaddingMode,
    p: Padding,
    input: [usize; 4],
) -> Array4<T> {
    let mut dx = Array4::zeros(input);
    for ((a, b, i, j), &v) in gp.indexed_iter() {
        let si = source(mode, i as isize - p.top as isize, input[2]);
        let sj = source(mode, j as isize - p.left as isize, input[3]);
        dx[[a, b, si, sj]] += v;
    }
    dx
}

// ------------------------------------------------------------------ harness

/// The expected results of one problem.
struct Expected<T, D: Dimension> {
    y: Array<T, D>,
    dx: Array<T, D>,
    dw: Array<T, D>,
    db: Array1<T>,
}

/// The workspaces every operation runs under: each kernel of the strided
/// algorithm (a kernel that does not apply runs the column matrix), both
/// input-gradient methods, one-row tiles, and lanes cut to single rows.
fn configurations<T: Element>() -> Vec<(Algorithm, Workspace<T>, String)> {
    let mut list = vec![
        (Algorithm::Naive, Workspace::new(), "naive".to_string()),
        (Algorithm::Im2col, Workspace::new(), "im2col".to_string()),
    ];
    let kernels = [
        (Kernel::Auto, InputGradient::Auto, usize::MAX),
        (Kernel::Measure, InputGradient::Auto, usize::MAX),
        (Kernel::Gemm, InputGradient::Col2im, usize::MAX),
        (Kernel::Gemm, InputGradient::ErrorLowering, 1),
        (Kernel::Direct, InputGradient::Auto, usize::MAX),
        (Kernel::Shifted, InputGradient::Auto, 1),
        (Kernel::Winograd, InputGradient::Auto, usize::MAX),
        (Kernel::Winograd4x4, InputGradient::Auto, usize::MAX),
    ];
    for (kernel, method, cap) in kernels {
        let ws = Workspace::new()
            .with_kernel(kernel)
            .with_input_gradient(method)
            .with_column_cap_bytes(cap)
            .with_min_lane_flops(0);
        list.push((
            Algorithm::Strided,
            ws,
            format!("strided {kernel:?} {method:?} cap {cap}"),
        ));
    }
    list
}

/// Every configuration's layer on the problem: training forward, the
/// inference call, and backward with every selection of gradients.
/// A problem's operands: input, weight, bias, output gradient.
type Operands<'a, T, D> = (
    &'a Array<T, D>,
    &'a Array<T, D>,
    Option<&'a Array1<T>>,
    &'a Array<T, D>,
);

fn check_layers<T: Element, S: Operation>(
    spec: &S,
    (x, w, b, dy): Operands<'_, T, S::Dim>,
    expected: &Expected<T, S::Dim>,
    what: &str,
) {
    let selections = [
        GradientSelection::ALL,
        GradientSelection::INPUT,
        GradientSelection::PARAMETERS,
        GradientSelection {
            input: false,
            weight: true,
            bias: false,
        },
        GradientSelection {
            input: true,
            weight: false,
            bias: true,
        },
    ];
    for (algorithm, ws, label) in configurations::<T>() {
        let label = format!("{label} on {what} ({})", T::NAME);
        let mut layer = Layer::from_weights(spec.clone(), w.clone(), b.cloned())
            .unwrap()
            .with_algorithm(algorithm)
            .with_workspace(ws);
        assert_close(
            &layer.infer(x.view()).unwrap(),
            &expected.y,
            &format!("{label}: infer"),
        );
        for selection in selections {
            layer.zero_grad();
            let y = layer.forward(x.view()).unwrap();
            assert_close(&y, &expected.y, &format!("{label}: forward"));
            let dx = layer.backward_selected(dy.view(), selection).unwrap();
            let label = format!("{label}, {selection:?}");
            assert_eq!(dx.is_some(), selection.input, "{label}");
            if let Some(dx) = dx {
                assert_close(&dx, &expected.dx, &format!("{label}: dx"));
            }
            let zeros_w = Array::zeros(w.raw_dim());
            let want_w = if selection.weight {
                &expected.dw
            } else {
                &zeros_w
            };
            assert_close(layer.weight_grad(), want_w, &format!("{label}: dw"));
            if let Some(db) = layer.bias_grad() {
                let zeros_b = Array1::zeros(db.len());
                let want_b = if selection.bias {
                    &expected.db
                } else {
                    &zeros_b
                };
                assert_close(db, want_b, &format!("{label}: db"));
            }
        }
    }
}

// -------------------------------------------------------- transposed conv

fn random_transposed(rng: &mut StdRng) -> (ConvTranspose2dSpec, [usize; 4]) {
    loop {
        let groups = rng.random_range(1..=3);
        let (c_in, c_out) = (
            groups * rng.random_range(1..=3),
            groups * rng.random_range(1..=3),
        );
        let kernel = (rng.random_range(1..=4), rng.random_range(1..=4));
        let stride = (rng.random_range(1..=3), rng.random_range(1..=3));
        let dilation = (rng.random_range(1..=3), rng.random_range(1..=3));
        let padding = (rng.random_range(0..=3), rng.random_range(0..=3));
        let output_padding = (
            rng.random_range(0..stride.0.max(dilation.0)),
            rng.random_range(0..stride.1.max(dilation.1)),
        );
        let spec = ConvTranspose2dSpec::new(c_in, c_out, kernel)
            .stride(stride)
            .padding(padding)
            .output_padding(output_padding)
            .dilation(dilation)
            .groups(groups)
            .bias(rng.random_bool(0.7));
        let input = [
            rng.random_range(1..=3),
            c_in,
            rng.random_range(1..=6),
            rng.random_range(1..=6),
        ];
        if spec.output_shape(input).is_ok() {
            return (spec, input);
        }
    }
}

fn transposed_sweep<T: Element>(seed: u64, cases: usize) {
    let mut rng = rng(seed);
    for _ in 0..cases {
        let (spec, input) = random_transposed(&mut rng);
        let out = spec.output_shape(input).unwrap();
        let x = random_array4::<T>(&mut rng, input);
        let w = random_array4::<T>(&mut rng, spec.weight_shape());
        let b = spec
            .has_bias()
            .then(|| random_array1::<T>(&mut rng, spec.out_channels()));
        let dy = random_array4::<T>(&mut rng, out);
        let g = transposed_backward_reference(&x, &w, &dy, &spec);
        let expected = Expected {
            y: transposed_reference(&x, &w, b.as_ref(), &spec, out),
            dx: g.dx,
            dw: g.dw,
            db: g.db,
        };
        let what = format!("{spec:?} on {input:?}");
        check_layers(&spec, (&x, &w, b.as_ref(), &dy), &expected, &what);
        // The functional calls, allocating and into caller arrays.
        let bias = b.as_ref().map(|b| b.view());
        let y = gemmconv::conv_transpose2d(x.view(), w.view(), bias, &spec, Algorithm::Strided)
            .unwrap();
        assert_close(&y, &expected.y, &format!("conv_transpose2d {what}"));
        let g = gemmconv::conv_transpose2d_backward(
            x.view(),
            w.view(),
            dy.view(),
            &spec,
            Algorithm::Strided,
        )
        .unwrap();
        assert_close(
            &g.dx,
            &expected.dx,
            &format!("conv_transpose2d_backward dx {what}"),
        );
        assert_close(
            &g.dw,
            &expected.dw,
            &format!("conv_transpose2d_backward dw {what}"),
        );
        assert_close(
            &g.db,
            &expected.db,
            &format!("conv_transpose2d_backward db {what}"),
        );
        let mut y_into = Array4::from_elem(out, T::from_f64(f64::NAN));
        let mut ws = Workspace::new();
        gemmconv::conv_transpose2d_into(
            x.view(),
            w.view(),
            bias,
            &spec,
            Algorithm::Strided,
            &mut ws,
            y_into.view_mut(),
        )
        .unwrap();
        assert_close(
            &y_into,
            &expected.y,
            &format!("conv_transpose2d_into {what}"),
        );
        let mut g_into = Gradients {
            dx: Array4::from_elem(input, T::from_f64(f64::NAN)),
            dw: Array4::from_elem(spec.weight_shape(), T::from_f64(f64::NAN)),
            db: Array1::from_elem(spec.out_channels(), T::from_f64(f64::NAN)),
        };
        gemmconv::conv_transpose2d_backward_into(
            x.view(),
            w.view(),
            dy.view(),
            &spec,
            Algorithm::Strided,
            &mut ws,
            g_into.view_mut(),
        )
        .unwrap();
        assert_close(
            &g_into.dx,
            &expected.dx,
            &format!("conv_transpose2d_backward_into dx {what}"),
        );
        assert_close(
            &g_into.dw,
            &expected.dw,
            &format!("conv_transpose2d_backward_into dw {what}"),
        );
    }
}

#[test]
fn transposed_convolution_agrees_with_the_scatter_f32() {
    transposed_sweep::<f32>(21, 40);
}

#[test]
fn transposed_convolution_agrees_with_the_scatter_f64() {
    transposed_sweep::<f64>(22, 40);
}

// ------------------------------------------------------------ padding modes

fn random_mode(rng: &mut StdRng) -> PaddingMode {
    [
        PaddingMode::Reflect,
        PaddingMode::Replicate,
        PaddingMode::Circular,
    ][rng.random_range(0..3)]
}

/// A convolution with a padding mode other than zeros, its padding (or
/// 'same') small enough for the mode.
fn random_padded(rng: &mut StdRng) -> (Conv2dSpec, [usize; 4]) {
    loop {
        let mut case = common::random_case(rng);
        let mode = random_mode(rng);
        let mut spec = case.spec.clone().padding_mode(mode);
        if rng.random_bool(0.3) {
            spec = spec.stride((1, 1)).same_padding();
        }
        case.spec = spec;
        let p = case.spec.get_padding();
        let (h, w) = (case.input[2], case.input[3]);
        let fits = |pad: usize, len: usize| match mode {
            PaddingMode::Reflect => pad < len,
            _ => pad <= len,
        };
        if fits(p.top.max(p.bottom), h)
            && fits(p.left.max(p.right), w)
            && case.spec.output_shape(case.input).is_ok()
        {
            return (case.spec, case.input);
        }
    }
}

fn padding_sweep<T: Element>(seed: u64, cases: usize) {
    let mut rng = rng(seed);
    for _ in 0..cases {
        let (spec, input) = random_padded(&mut rng);
        let mode = spec.get_padding_mode();
        let p = spec.get_padding();
        let x = random_array4::<T>(&mut rng, input);
        let w = random_array4::<T>(&mut rng, spec.weight_shape());
        let b = spec
            .has_bias()
            .then(|| random_array1::<T>(&mut rng, spec.out_channels()));
        let dy = random_array4::<T>(&mut rng, spec.output_shape(input).unwrap());
        // The reference: the input padded by index maps, then the naive
        // convolution with no padding; the gradient folded back.
        let plain = spec
            .clone()
            .padding((0, 0))
            .padding_mode(PaddingMode::Zeros);
        let xp = pad_reference(&x, mode, p);
        let bias = b.as_ref().map(|b| b.view());
        let y = gemmconv::conv2d(xp.view(), w.view(), bias, &plain, Algorithm::Naive).unwrap();
        let g = gemmconv::conv2d_backward(xp.view(), w.view(), dy.view(), &plain, Algorithm::Naive)
            .unwrap();
        let expected = Expected {
            y,
            dx: fold_reference(&g.dx, mode, p, input),
            dw: g.dw,
            db: g.db,
        };
        check_layers(
            &spec,
            (&x, &w, b.as_ref(), &dy),
            &expected,
            &format!("{spec:?} on {input:?}"),
        );
    }
}

#[test]
fn padding_modes_agree_with_padding_by_hand_f32() {
    padding_sweep::<f32>(23, 40);
}

#[test]
fn padding_modes_agree_with_padding_by_hand_f64() {
    padding_sweep::<f64>(24, 40);
}

/// 'same' keeps the input's size for every kernel and dilation, whichever
/// order the builder's calls come in, and matches explicit padding.
#[test]
fn same_padding_keeps_the_size_and_matches_explicit_padding() {
    let mut rng = rng(25);
    for (k, d) in [
        ((1, 1), (1, 1)),
        ((3, 3), (1, 1)),
        ((4, 2), (1, 3)),
        ((5, 6), (2, 1)),
    ] {
        let a = Conv2dSpec::new(2, 3, k).same_padding().dilation(d);
        let b = Conv2dSpec::new(2, 3, k).dilation(d).same_padding();
        assert_eq!(a.get_padding(), b.get_padding());
        let input = [2, 2, 13, 12];
        assert_eq!(a.output_shape(input).unwrap(), [2, 3, 13, 12]);
        let explicit = Conv2dSpec::new(2, 3, k)
            .dilation(d)
            .padding(a.get_padding());
        let x = random_array4::<f64>(&mut rng, input);
        let w = random_array4::<f64>(&mut rng, a.weight_shape());
        let bias = random_array1::<f64>(&mut rng, 3);
        let y = gemmconv::conv2d(
            x.view(),
            w.view(),
            Some(bias.view()),
            &a,
            Algorithm::Strided,
        )
        .unwrap();
        let want = gemmconv::conv2d(
            x.view(),
            w.view(),
            Some(bias.view()),
            &explicit,
            Algorithm::Naive,
        )
        .unwrap();
        assert_close(&y, &want, "same padding");
        let total = (d.0 * (k.0 - 1), d.1 * (k.1 - 1));
        let p = a.get_padding();
        assert_eq!((p.top + p.bottom, p.left + p.right), total);
        assert!(p.bottom >= p.top && p.right >= p.left);
    }
}

// ------------------------------------------------------------------- conv1d

/// `y[n, o, l] = b[o] + Σ_{c in group(o), k} xp[n, c, l·s + k·d] · w[o, c, k]`
/// on the input padded in `mode`.
fn conv1d_reference<T: Element>(
    x: &Array3<T>,
    w: &Array3<T>,
    b: Option<&Array1<T>>,
    spec: &Conv1dSpec,
) -> Array3<T> {
    let (n, c_in, l) = x.dim();
    let (before, after) = spec.get_padding();
    let mode = spec.get_padding_mode();
    let padded = Array3::from_shape_fn((n, c_in, l + before + after), |(a, c, i)| {
        let k = i as isize - before as isize;
        if mode == PaddingMode::Zeros && (k < 0 || k >= l as isize) {
            T::zero()
        } else {
            x[[a, c, source(mode, k, l)]]
        }
    });
    let out = spec.output_shape([n, c_in, l]).unwrap();
    let (cin_g, cout_g) = (
        c_in / spec.get_groups(),
        spec.out_channels() / spec.get_groups(),
    );
    Array3::from_shape_fn(out, |(a, o, i)| {
        let c0 = o / cout_g * cin_g;
        let mut acc = b.map_or(T::zero(), |b| b[o]);
        for c in 0..cin_g {
            for k in 0..spec.kernel() {
                acc += padded[[a, c0 + c, i * spec.get_stride() + k * spec.get_dilation()]]
                    * w[[o, c, k]];
            }
        }
        acc
    })
}

fn random_conv1d(rng: &mut StdRng) -> (Conv1dSpec, [usize; 3]) {
    loop {
        let groups = rng.random_range(1..=3);
        let spec = Conv1dSpec::new(
            groups * rng.random_range(1..=3),
            groups * rng.random_range(1..=3),
            rng.random_range(1..=5),
        )
        .stride(rng.random_range(1..=3))
        .dilation(rng.random_range(1..=3))
        .groups(groups)
        .bias(rng.random_bool(0.7));
        let spec = match rng.random_range(0..3) {
            0 => spec.padding_ends(rng.random_range(0..=3), rng.random_range(0..=3)),
            1 => spec
                .padding(rng.random_range(0..=3))
                .padding_mode(random_mode(rng)),
            _ => spec.stride(1).same_padding().padding_mode(random_mode(rng)),
        };
        let input = [
            rng.random_range(1..=3),
            spec.in_channels(),
            rng.random_range(1..=12),
        ];
        let (before, after) = spec.get_padding();
        let fits = match spec.get_padding_mode() {
            PaddingMode::Reflect => before.max(after) < input[2],
            _ => before.max(after) <= input[2],
        };
        if fits && spec.output_shape(input).is_ok() {
            return (spec, input);
        }
    }
}

/// The gradients of `L = Σ y ⊙ dy` by central differences (f64).
fn conv1d_gradients_by_differences(
    x: &Array3<f64>,
    w: &Array3<f64>,
    b: Option<&Array1<f64>>,
    dy: &Array3<f64>,
    spec: &Conv1dSpec,
) -> (Array3<f64>, Array3<f64>) {
    let loss = |x: &Array3<f64>, w: &Array3<f64>| (&conv1d_reference(x, w, b, spec) * dy).sum();
    let h = 1e-6;
    let diff = |a: &Array3<f64>, f: &dyn Fn(&Array3<f64>) -> f64| {
        let mut g = a.clone();
        for (i, gi) in g.iter_mut().enumerate() {
            let mut plus = a.clone();
            let mut minus = a.clone();
            *plus.iter_mut().nth(i).unwrap() += h;
            *minus.iter_mut().nth(i).unwrap() -= h;
            *gi = (f(&plus) - f(&minus)) / (2.0 * h);
        }
        g
    };
    (diff(x, &|x| loss(x, w)), diff(w, &|w| loss(x, w)))
}

fn conv1d_sweep<T: Element>(seed: u64, cases: usize) {
    let mut rng = rng(seed);
    for _ in 0..cases {
        let (spec, input) = random_conv1d(&mut rng);
        let to3 = |a: Array4<T>| a.into_shape_with_order(input).unwrap();
        let x = to3(random_array4::<T>(
            &mut rng,
            [input[0], input[1], 1, input[2]],
        ));
        let [o, i, k] = spec.weight_shape();
        let w = random_array4::<T>(&mut rng, [o, i, 1, k])
            .into_shape_with_order([o, i, k])
            .unwrap();
        let b = spec
            .has_bias()
            .then(|| random_array1::<T>(&mut rng, spec.out_channels()));
        let out = spec.output_shape(input).unwrap();
        let dy = random_array4::<T>(&mut rng, [out[0], out[1], 1, out[2]])
            .into_shape_with_order(out)
            .unwrap();
        // The reference gradients: finite differences of the reference in
        // f64, of the layer's own f64 pass (checked by them) in f32.
        let to64 = |a: &Array3<T>| a.mapv(|v| v.into_f64());
        let b64 = b.as_ref().map(|b| b.mapv(|v| v.into_f64()));
        let (dx, dw) =
            conv1d_gradients_by_differences(&to64(&x), &to64(&w), b64.as_ref(), &to64(&dy), &spec);
        let from64 = |a: Array3<f64>| a.mapv(T::from_f64);
        let sums = dy
            .sum_axis(gemmconv::ndarray::Axis(2))
            .sum_axis(gemmconv::ndarray::Axis(0));
        let expected = Expected {
            y: conv1d_reference(&x, &w, b.as_ref(), &spec),
            dx: from64(dx),
            dw: from64(dw),
            db: sums,
        };
        let what = format!("{spec:?} on {input:?}");
        // Finite differences hold to about 1e-8 of the result's scale.
        if T::NAME == "f64" {
            let g =
                gemmconv::conv1d_backward(x.view(), w.view(), dy.view(), &spec, Algorithm::Strided)
                    .unwrap();
            for (got, want, part) in [(&g.dx, &expected.dx, "dx"), (&g.dw, &expected.dw, "dw")] {
                let err = common::relative_error(got, want);
                assert!(err < 1e-7, "conv1d_backward {part} {what}: {err:e}");
            }
            continue;
        }
        check_layers(&spec, (&x, &w, b.as_ref(), &dy), &expected, &what);
        let y = gemmconv::conv1d(
            x.view(),
            w.view(),
            b.as_ref().map(|b| b.view()),
            &spec,
            Algorithm::Strided,
        )
        .unwrap();
        assert_close(&y, &expected.y, &format!("conv1d {what}"));
    }
}

#[test]
fn conv1d_agrees_with_loops_and_finite_differences_f32() {
    conv1d_sweep::<f32>(26, 30);
}

#[test]
fn conv1d_agrees_with_finite_differences_f64() {
    conv1d_sweep::<f64>(27, 30);
}

/// With the gradients checked by differences in f64, every configuration
/// of the 1-D layer in f64 against the f64 functional call.
#[test]
fn conv1d_layers_agree_in_f64() {
    let mut rng = rng(28);
    for _ in 0..15 {
        let (spec, input) = random_conv1d(&mut rng);
        let x = random_array4::<f64>(&mut rng, [input[0], input[1], 1, input[2]])
            .into_shape_with_order(input)
            .unwrap();
        let [o, i, k] = spec.weight_shape();
        let w = random_array4::<f64>(&mut rng, [o, i, 1, k])
            .into_shape_with_order([o, i, k])
            .unwrap();
        let b = spec
            .has_bias()
            .then(|| random_array1::<f64>(&mut rng, spec.out_channels()));
        let out = spec.output_shape(input).unwrap();
        let dy = random_array4::<f64>(&mut rng, [out[0], out[1], 1, out[2]])
            .into_shape_with_order(out)
            .unwrap();
        let g = gemmconv::conv1d_backward(x.view(), w.view(), dy.view(), &spec, Algorithm::Naive)
            .unwrap();
        let expected = Expected {
            y: conv1d_reference(&x, &w, b.as_ref(), &spec),
            dx: g.dx,
            dw: g.dw,
            db: g.db,
        };
        check_layers(
            &spec,
            (&x, &w, b.as_ref(), &dy),
            &expected,
            &format!("{spec:?} on {input:?}"),
        );
    }
}

// ------------------------------------------- finite differences, 2-D family

fn numeric<D: Dimension>(a: &Array<f64, D>, f: impl Fn(&Array<f64, D>) -> f64) -> Array<f64, D> {
    let h = 1e-6;
    let mut g = a.clone();
    for (i, gi) in g.iter_mut().enumerate() {
        let (mut plus, mut minus) = (a.clone(), a.clone());
        *plus.iter_mut().nth(i).unwrap() += h;
        *minus.iter_mut().nth(i).unwrap() -= h;
        *gi = (f(&plus) - f(&minus)) / (2.0 * h);
    }
    g
}

fn assert_differences<D: Dimension>(got: &Array<f64, D>, want: &Array<f64, D>, what: &str) {
    for (a, n) in got.iter().zip(want) {
        assert!(
            (a - n).abs() <= 1e-6 * (1.0 + n.abs()),
            "{what}: analytic {a} vs difference {n}"
        );
    }
}

/// Every gradient of a layer against central differences of its own
/// forward pass, in f64.
fn check_differences<S: Operation<Dim = gemmconv::ndarray::Ix4>>(
    spec: S,
    input: [usize; 4],
    seed: u64,
) {
    let mut rng = rng(seed);
    let layer = Layer::<f64, S>::new_pytorch_default(spec.clone(), &mut rng).unwrap();
    let x = random_array4::<f64>(&mut rng, input);
    let y = layer.infer(x.view()).unwrap();
    let r = random_array4::<f64>(
        &mut rng,
        [y.shape()[0], y.shape()[1], y.shape()[2], y.shape()[3]],
    );
    let b = layer.bias().cloned();
    let loss = |x: &Array4<f64>, w: &Array4<f64>, b: &Option<Array1<f64>>| {
        let l = Layer::<f64, S>::from_weights(spec.clone(), w.clone(), b.clone()).unwrap();
        (&l.infer(x.view()).unwrap() * &r).sum()
    };
    let w = layer.weight().clone();
    let dx = numeric(&x, |x| loss(x, &w, &b));
    let dw = numeric(&w, |w| loss(&x, w, &b));
    for (algorithm, ws, label) in configurations::<f64>() {
        let mut l = layer.clone().with_algorithm(algorithm).with_workspace(ws);
        l.forward(x.view()).unwrap();
        let got = l.backward(r.view()).unwrap();
        assert_differences(&got, &dx, &format!("{label} dx of {spec:?}"));
        assert_differences(l.weight_grad(), &dw, &format!("{label} dw of {spec:?}"));
    }
}

#[test]
fn transposed_gradients_match_finite_differences() {
    check_differences(
        ConvTranspose2dSpec::new(2, 3, (3, 2))
            .stride((2, 3))
            .padding((1, 1))
            .output_padding((1, 2)),
        [2, 2, 3, 3],
        30,
    );
    check_differences(
        ConvTranspose2dSpec::new(4, 2, (3, 3))
            .groups(2)
            .dilation((2, 1))
            .output_padding((1, 0)),
        [1, 4, 3, 4],
        31,
    );
}

#[test]
fn padding_mode_gradients_match_finite_differences() {
    for (mode, seed) in [
        (PaddingMode::Reflect, 32),
        (PaddingMode::Replicate, 33),
        (PaddingMode::Circular, 34),
    ] {
        let padding = Padding {
            top: 2,
            bottom: 1,
            left: 0,
            right: 3,
        };
        check_differences(
            Conv2dSpec::new(2, 2, (3, 3))
                .padding(padding)
                .padding_mode(mode)
                .stride((1, 2)),
            [2, 2, 4, 5],
            seed,
        );
        check_differences(
            Conv2dSpec::new(1, 2, (2, 3))
                .same_padding()
                .padding_mode(mode),
            [1, 1, 4, 4],
            seed + 10,
        );
    }
}

// --------------------------------------------------------- hand-worked cases

#[test]
fn hand_worked_transposed_convolution() {
    // Input [[1, 2], [3, 4]] through the kernel [[1, 1], [1, 1]] at stride 2
    // with padding 1 and output padding 1: the full 4x4 scatter is
    // [[1 1 2 2] [1 1 2 2] [3 3 4 4] [3 3 4 4]]; padding drops the outer
    // ring, output padding keeps one more row and column at the end.
    let spec = ConvTranspose2dSpec::new(1, 1, (2, 2))
        .stride((2, 2))
        .padding((1, 1))
        .output_padding((1, 1))
        .bias(false);
    let x = Array4::from_shape_vec((1, 1, 2, 2), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    let w = Array4::<f64>::ones((1, 1, 2, 2));
    let y =
        gemmconv::conv_transpose2d(x.view(), w.view(), None, &spec, Algorithm::Strided).unwrap();
    assert_eq!(y.shape(), &[1, 1, 3, 3]);
    assert_eq!(
        y.into_raw_vec_and_offset().0,
        [1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 3.0, 4.0, 4.0]
    );
}

#[test]
fn hand_worked_reflect_gradient_folds_onto_its_sources() {
    // A 1x3 kernel of ones on [a b c] reflect-padded by one: the padded
    // row is [b a b c b]; each output sums three of it, so the output
    // gradient of ones gives each padded pixel a count, folded back:
    // a: 2 (its own two windows), b: 2 + 1 + 1 (the copies at both ends),
    // c: 2.
    let spec = Conv2dSpec::new(1, 1, (1, 3))
        .padding((0, 1))
        .padding_mode(PaddingMode::Reflect)
        .bias(false);
    let x = Array4::from_shape_vec((1, 1, 1, 3), vec![1.0, 2.0, 3.0]).unwrap();
    let w = Array4::<f64>::ones((1, 1, 1, 3));
    let g = gemmconv::conv2d_backward(
        x.view(),
        w.view(),
        Array4::ones((1, 1, 1, 3)).view(),
        &spec,
        Algorithm::Strided,
    )
    .unwrap();
    assert_eq!(g.dx.into_raw_vec_and_offset().0, [2.0, 5.0, 2.0]);
    // dw[j] = Σ_out padded[out + j]: [b+a+b, a+b+c, b+c+b] = [5, 6, 7].
    assert_eq!(g.dw.into_raw_vec_and_offset().0, [5.0, 6.0, 7.0]);
}

// -------------------------------------------------------------- error cases

#[test]
fn invalid_family_geometries_are_errors_that_say_why() {
    use gemmconv::ConvError;
    let x = Array4::<f32>::zeros((1, 2, 4, 4));
    let w = Array4::<f32>::zeros((2, 2, 3, 3));
    let spec = ConvTranspose2dSpec::new(2, 2, (3, 3))
        .stride((2, 2))
        .output_padding((2, 0))
        .bias(false);
    let err = gemmconv::conv_transpose2d(x.view(), w.view(), None, &spec, Algorithm::Strided)
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConvError::OutputPaddingTooLarge {
                axis: "height",
                output_padding: 2,
                stride: 2,
                dilation: 1
            }
        ),
        "{err}"
    );
    // Output padding may reach the dilation when it is larger than the stride.
    let spec = ConvTranspose2dSpec::new(2, 2, (3, 3))
        .dilation((3, 1))
        .output_padding((2, 0))
        .bias(false);
    assert!(
        gemmconv::conv_transpose2d(x.view(), w.view(), None, &spec, Algorithm::Strided).is_ok()
    );
    let spec = ConvTranspose2dSpec::new(2, 2, (1, 1))
        .padding((1, 0))
        .bias(false);
    let one = Array4::<f32>::zeros((2, 2, 1, 1));
    let err = gemmconv::conv_transpose2d(
        Array4::<f32>::zeros((1, 2, 2, 4)).view(),
        one.view(),
        None,
        &spec,
        Algorithm::Strided,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ConvError::EmptyAxis {
                axis: "height",
                input: 2,
                output: 0
            }
        ),
        "{err}"
    );
    let err = gemmconv::conv_transpose2d(
        Array4::<f32>::zeros((1, 3, 2, 4)).view(),
        one.view(),
        None,
        &spec,
        Algorithm::Strided,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ConvError::ChannelMismatch {
                expected: 2,
                got: 3,
                ..
            }
        ),
        "{err}"
    );

    let reflect = Conv2dSpec::new(2, 2, (3, 3))
        .padding((4, 1))
        .padding_mode(PaddingMode::Reflect)
        .bias(false);
    let err = gemmconv::conv2d(x.view(), w.view(), None, &reflect, Algorithm::Strided).unwrap_err();
    assert!(
        matches!(
            err,
            ConvError::PaddingTooLarge {
                mode: PaddingMode::Reflect,
                axis: "height",
                padding: 4,
                input: 4
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("longer than 4"), "{err}");
    let circular = reflect
        .clone()
        .padding((4, 4))
        .padding_mode(PaddingMode::Circular);
    assert!(gemmconv::conv2d(x.view(), w.view(), None, &circular, Algorithm::Strided).is_ok());
    let circular = circular.padding((5, 0));
    assert!(gemmconv::conv2d(x.view(), w.view(), None, &circular, Algorithm::Strided).is_err());

    // An image with no columns is refused, as PyTorch refuses it, even
    // where padding would give it an output.
    let padded = Conv2dSpec::new(2, 2, (3, 3)).padding((1, 2)).bias(false);
    let empty = Array4::<f32>::zeros((1, 2, 4, 0));
    let err =
        gemmconv::conv2d(empty.view(), w.view(), None, &padded, Algorithm::Strided).unwrap_err();
    assert!(
        matches!(
            err,
            ConvError::EmptyAxis {
                axis: "width",
                input: 0,
                output: 2
            }
        ),
        "{err}"
    );
    let err = gemmconv::conv1d(
        Array3::<f32>::zeros((1, 2, 0)).view(),
        Array3::<f32>::zeros((2, 2, 1)).view(),
        None,
        &Conv1dSpec::new(2, 2, 1).padding(1).bias(false),
        Algorithm::Strided,
    )
    .unwrap_err();
    assert!(
        matches!(err, ConvError::EmptyAxis { axis: "length", .. }),
        "{err}"
    );

    let same = Conv2dSpec::new(2, 2, (3, 3))
        .same_padding()
        .stride((2, 1))
        .bias(false);
    let err = gemmconv::conv2d(x.view(), w.view(), None, &same, Algorithm::Strided).unwrap_err();
    assert_eq!(err, ConvError::SamePaddingNeedsStrideOne { stride: (2, 1) });

    let spec = Conv1dSpec::new(2, 2, 5).bias(false);
    let x1 = Array3::<f32>::zeros((1, 2, 4));
    let w1 = Array3::<f32>::zeros((2, 2, 5));
    let err = gemmconv::conv1d(x1.view(), w1.view(), None, &spec, Algorithm::Strided).unwrap_err();
    assert!(
        matches!(err, ConvError::KernelLargerThanInput { axis: "length", .. }),
        "{err}"
    );
    let err = gemmconv::conv1d(x.view(), w1.view(), None, &spec, Algorithm::Strided).unwrap_err();
    assert!(
        matches!(
            err,
            ConvError::Rank {
                expected: 3,
                got: 4,
                ..
            }
        ),
        "{err}"
    );
    let err = gemmconv::conv1d(
        Array3::<f32>::zeros((1, 2, 9)).view(),
        w.view(),
        None,
        &spec,
        Algorithm::Strided,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ConvError::Rank {
                expected: 3,
                got: 4,
                ..
            }
        ),
        "{err}"
    );
    let err = gemmconv::conv1d(
        Array3::<f32>::zeros((1, 2, 9)).view(),
        Array3::<f32>::zeros((2, 2, 4)).view(),
        None,
        &spec,
        Algorithm::Strided,
    )
    .unwrap_err();
    assert!(matches!(err, ConvError::ShapeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("[2, 2, 5]"), "{err}");
}

// -------------------------------------------------------- layers and traits

#[test]
fn layers_are_clone_send_and_sync() {
    // And every other public type a program keeps: plans, workspaces, specs, errors.
    fn assert_traits<L: Clone + Send + Sync>() {}
    assert_traits::<Conv2d<f32>>();
    assert_traits::<Conv2d<f64>>();
    assert_traits::<ConvTranspose2d<f32>>();
    assert_traits::<Conv1d<f64>>();
    fn assert_send_sync<L: Send + Sync>() {}
    assert_send_sync::<gemmconv::Conv2dPlan<f32>>();
    assert_send_sync::<Workspace<f64>>();
    assert_send_sync::<Conv2dSpec>();
    assert_send_sync::<ConvTranspose2dSpec>();
    assert_send_sync::<Conv1dSpec>();
    assert_send_sync::<gemmconv::ConvError>();
}

/// Several threads infer on one shared layer at once, each getting what
/// the layer gives alone; a clone computes what its original does.
#[test]
fn one_layer_infers_from_several_threads_at_once() {
    let mut rng = rng(40);
    let spec = Conv2dSpec::new(8, 16, (3, 3))
        .padding((1, 1))
        .padding_mode(PaddingMode::Reflect);
    let layer = Conv2d::<f32>::new_pytorch_default(spec, &mut rng).unwrap();
    let inputs: Vec<_> = (0..4)
        .map(|_| random_array4::<f32>(&mut rng, [2, 8, 12, 12]))
        .collect();
    let alone: Vec<_> = inputs
        .iter()
        .map(|x| layer.infer(x.view()).unwrap())
        .collect();
    let together: Vec<_> = std::thread::scope(|s| {
        let runs: Vec<_> = inputs
            .iter()
            .map(|x| s.spawn(|| layer.infer(x.view()).unwrap()))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(alone, together);
    let mut clone = layer.clone();
    assert_eq!(clone.forward(inputs[0].view()).unwrap(), alone[0]);
}

/// PyTorch's default initialisation: weight and bias uniform on
/// `±1/√fan_in`, fan_in from the weight's second axis (for a transposed
/// layer, its output channels a group).
#[test]
fn pytorch_default_initialisation_has_pytorchs_bounds_and_spread() {
    let t = ConvTranspose2dSpec::new(4, 6, (3, 3)).groups(2);
    let layer = ConvTranspose2d::<f64>::new_pytorch_default(t, &mut rng(41)).unwrap();
    let bound = 1.0 / (3.0 * 9.0f64).sqrt();
    let w = layer.weight();
    assert!(w.iter().all(|v| v.abs() <= bound));
    // Uniform on ±bound: variance bound²/3.
    let var = w.mapv(|v| v * v).mean().unwrap();
    assert!(
        (var / (bound * bound / 3.0) - 1.0).abs() < 0.35,
        "variance {var}"
    );
    assert!(layer.bias().unwrap().iter().all(|v| v.abs() <= bound));
    let big =
        Conv2d::<f64>::new_pytorch_default(Conv2dSpec::new(16, 64, (3, 3)), &mut rng(42)).unwrap();
    let bound = 1.0 / (16.0 * 9.0f64).sqrt();
    let var = big.weight().mapv(|v| v * v).mean().unwrap();
    assert!(
        (var / (bound * bound / 3.0) - 1.0).abs() < 0.05,
        "variance {var}"
    );
    assert!(big.bias().unwrap().iter().any(|&v| v != 0.0));
}

#[test]
fn layers_round_trip_through_serde() {
    let mut rng = rng(43);
    let spec = Conv2dSpec::new(3, 4, (3, 3))
        .same_padding()
        .padding_mode(PaddingMode::Circular)
        .groups(1);
    let layer = Conv2d::<f32>::new_pytorch_default(spec, &mut rng)
        .unwrap()
        .with_algorithm(Algorithm::Im2col);
    let restored: Conv2d<f32> =
        serde_json::from_str(&serde_json::to_string(&layer).unwrap()).unwrap();
    assert_eq!(
        (
            restored.spec(),
            restored.weight(),
            restored.bias(),
            restored.algorithm()
        ),
        (
            layer.spec(),
            layer.weight(),
            layer.bias(),
            layer.algorithm()
        )
    );
    let t = ConvTranspose2d::<f64>::new_kaiming(
        ConvTranspose2dSpec::new(2, 3, (2, 2))
            .stride((2, 2))
            .bias(false),
        &mut rng,
    )
    .unwrap();
    let restored: ConvTranspose2d<f64> =
        serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
    let x = random_array4::<f64>(&mut rng, [1, 2, 3, 3]);
    assert_eq!(
        restored.infer(x.view()).unwrap(),
        t.infer(x.view()).unwrap()
    );
    let spec = Conv1dSpec::new(2, 2, 3).dilation(2);
    let json = serde_json::to_string(&spec).unwrap();
    assert_eq!(serde_json::from_str::<Conv1dSpec>(&json).unwrap(), spec);
}

/// Sliced and transposed views give what contiguous arrays give, for every
/// operation of the family, forward and backward.
#[test]
fn non_contiguous_views_give_the_results_of_contiguous_ones() {
    use gemmconv::ndarray::{Axis, s};
    let mut rng = rng(44);
    let strided = Algorithm::Strided;
    // Every other column of a wider array, and an array stored with its
    // height and width swapped.
    let wide = random_array4::<f64>(&mut rng, [2, 4, 5, 12]);
    let x = wide.slice(s![.., .., .., ..;2]);
    let swapped = random_array4::<f64>(&mut rng, [2, 4, 6, 5]);

    let t = ConvTranspose2dSpec::new(4, 6, (3, 2))
        .stride((1, 2))
        .padding((1, 0))
        .groups(2);
    let w = random_array4::<f64>(&mut rng, t.weight_shape());
    let b = random_array1::<f64>(&mut rng, 6);
    assert_eq!(t.output_shape([2, 4, 5, 6]).unwrap(), [2, 6, 5, 12]);
    let dy_wide = random_array4::<f64>(&mut rng, [2, 6, 5, 24]);
    let dy = dy_wide.slice(s![.., .., .., ..;2]);
    let y = gemmconv::conv_transpose2d(x, w.view(), Some(b.view()), &t, strided).unwrap();
    let y_c =
        gemmconv::conv_transpose2d(x.to_owned().view(), w.view(), Some(b.view()), &t, strided)
            .unwrap();
    assert_close(&y, &y_c, "transposed forward on a view");
    let g = gemmconv::conv_transpose2d_backward(x, w.view(), dy, &t, strided).unwrap();
    let g_c = gemmconv::conv_transpose2d_backward(
        x.to_owned().view(),
        w.view(),
        dy.to_owned().view(),
        &t,
        strided,
    )
    .unwrap();
    assert_close(&g.dx, &g_c.dx, "transposed dx on views");
    assert_close(&g.dw, &g_c.dw, "transposed dw on views");

    let reflect = Conv2dSpec::new(4, 3, (3, 3))
        .padding((2, 1))
        .padding_mode(PaddingMode::Reflect);
    let w = random_array4::<f64>(&mut rng, reflect.weight_shape());
    let b = random_array1::<f64>(&mut rng, 3);
    let xs = swapped.view().permuted_axes([0, 1, 3, 2]);
    let y = gemmconv::conv2d(xs, w.view(), Some(b.view()), &reflect, strided).unwrap();
    let y_c = gemmconv::conv2d(
        xs.to_owned().view(),
        w.view(),
        Some(b.view()),
        &reflect,
        strided,
    )
    .unwrap();
    assert_close(&y, &y_c, "reflect forward on a view");
    let g = gemmconv::conv2d_backward(xs, w.view(), y.view(), &reflect, strided).unwrap();
    let g_c =
        gemmconv::conv2d_backward(xs.to_owned().view(), w.view(), y.view(), &reflect, strided)
            .unwrap();
    assert_close(&g.dx, &g_c.dx, "reflect dx on a view");

    let c1 = Conv1dSpec::new(4, 2, 3).padding(1).stride(2);
    let seq = wide.index_axis(Axis(2), 1);
    let x1 = seq.slice(s![.., .., ..;2]);
    let w1 = random_array4::<f64>(&mut rng, [2, 4, 1, 3])
        .into_shape_with_order([2, 4, 3])
        .unwrap();
    let b1 = random_array1::<f64>(&mut rng, 2);
    let y = gemmconv::conv1d(x1, w1.view(), Some(b1.view()), &c1, strided).unwrap();
    let y_c = gemmconv::conv1d(
        x1.to_owned().view(),
        w1.view(),
        Some(b1.view()),
        &c1,
        strided,
    )
    .unwrap();
    assert_close(&y, &y_c, "conv1d forward on a view");
    let g = gemmconv::conv1d_backward(x1, w1.view(), y.view(), &c1, strided).unwrap();
    let g_c =
        gemmconv::conv1d_backward(x1.to_owned().view(), w1.view(), y.view(), &c1, strided).unwrap();
    assert_close(&g.dx, &g_c.dx, "conv1d dx on a view");
    assert_close(&g.dw, &g_c.dw, "conv1d dw on a view");
}
