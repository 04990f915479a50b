//! NaN and ±∞ in inputs, weights, bias or output gradients poison exactly
//! the outputs and gradients that the naive sum poisons, and poison them
//! alike (NaN, +∞ or -∞), through every algorithm and kernel of every
//! operation; every other element agrees with the naive sum within the
//! usual tolerance.

mod common;

use common::{Operands, configurations, random_array1, random_array4, random_case, rng, tolerance};
use gemmconv::ndarray::{Array, Dimension, Ix3, Ix4};
use gemmconv::{
    Algorithm, Conv1dSpec, Conv2dSpec, ConvTranspose2dSpec, Element, Layer, Operation, PaddingMode,
};
use rand::RngExt;
use rand::rngs::StdRng;

/// What an element is: NaN, +∞, -∞ or finite.
fn class(v: f64) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else if v == f64::INFINITY {
        "+inf"
    } else if v == f64::NEG_INFINITY {
        "-inf"
    } else {
        "finite"
    }
}

/// Asserts `got` is non-finite exactly where `want` is, alike, and close to
/// it elsewhere.
fn assert_alike<T: Element, D: Dimension>(got: &Array<T, D>, want: &Array<T, D>, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes");
    let mut scale = 1.0f64;
    for (index, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        let (g, w) = (g.into_f64(), w.into_f64());
        assert_eq!(
            class(g),
            class(w),
            "{what}: element {index} is {g}, the naive sum {w}"
        );
        if w.is_finite() {
            scale = scale.max(w.abs());
        }
    }
    for (g, w) in got.iter().zip(want.iter()) {
        let (g, w) = (g.into_f64(), w.into_f64());
        if w.is_finite() {
            let err = (g - w).abs() / scale;
            assert!(err <= tolerance::<T>(), "{what}: {g} against {w}");
        }
    }
}

/// Puts a few random NaN and ±∞ into `a`.
fn poison<T: Element, D: Dimension>(rng: &mut StdRng, a: &mut Array<T, D>) {
    let len = a.len();
    if len == 0 {
        return;
    }
    for _ in 0..rng.random_range(1..=3) {
        let special = match rng.random_range(0..3) {
            0 => f64::NAN,
            1 => f64::INFINITY,
            _ => f64::NEG_INFINITY,
        };
        let at = rng.random_range(0..len);
        if let Some(v) = a.iter_mut().nth(at) {
            *v = T::from_f64(special);
        }
    }
}

/// Poisons a random choice of the operands (one at least).
fn poison_some<T: Element, D: Dimension>(rng: &mut StdRng, operands: &mut Operands<T, D>) {
    let which: [bool; 4] = loop {
        let which = std::array::from_fn(|_| rng.random_bool(0.4));
        if which.iter().any(|&w| w) {
            break which;
        }
    };
    let (x, w, b, dy) = operands;
    if which[0] {
        poison(rng, x);
    }
    if which[1] {
        poison(rng, w);
    }
    if which[2] {
        poison(rng, b);
    }
    if which[3] {
        poison(rng, dy);
    }
}

/// Every configuration against the naive algorithm on one problem: the
/// forward pass, the inference call, and every gradient.
fn check<T: Element, S: Operation>(
    (spec, biased): (&S, bool),
    operands: &Operands<T, S::Dim>,
    what: &str,
) {
    let (x, w, b, dy) = operands;
    let bias = biased.then(|| b.clone());
    let results = |algorithm: Algorithm, ws| {
        let mut layer = Layer::from_weights(spec.clone(), w.clone(), bias.clone())
            .unwrap()
            .with_algorithm(algorithm)
            .with_workspace(ws);
        let inferred = layer.infer(x.view()).unwrap();
        let y = layer.forward(x.view()).unwrap();
        let dx = layer.backward(dy.view()).unwrap();
        let db = layer.bias_grad().cloned();
        (inferred, y, dx, layer.weight_grad().clone(), db)
    };
    let want = results(Algorithm::Naive, Default::default());
    for (algorithm, ws, label) in configurations::<T>() {
        let got = results(algorithm, ws);
        let label = format!("{what} ({}), {label}", T::NAME);
        assert_alike(&got.0, &want.1, &format!("{label}: infer"));
        assert_alike(&got.1, &want.1, &format!("{label}: y"));
        assert_alike(&got.2, &want.2, &format!("{label}: dx"));
        assert_alike(&got.3, &want.3, &format!("{label}: dw"));
        if let (Some(got), Some(want)) = (&got.4, &want.4) {
            assert_alike(got, want, &format!("{label}: db"));
        }
    }
}

fn random_operands4<T: Element>(
    rng: &mut StdRng,
    (input, weight, output): ([usize; 4], [usize; 4], [usize; 4]),
) -> Operands<T, Ix4> {
    (
        random_array4(rng, input),
        random_array4(rng, weight),
        random_array1(rng, output[1]),
        random_array4(rng, output),
    )
}

fn conv2d_sweep<T: Element>(seed: u64, cases: usize) {
    let mut rng = rng(seed);
    for case in 0..cases {
        let c = random_case(&mut rng);
        let mode = match case % 4 {
            0 => PaddingMode::Reflect,
            _ => PaddingMode::Zeros,
        };
        let spec = c.spec.clone().padding_mode(mode);
        let Ok(output) = spec.output_shape(c.input) else {
            continue;
        };
        let shapes = (c.input, spec.weight_shape(), output);
        let mut operands = random_operands4::<T>(&mut rng, shapes);
        let (x, w, _, _) = &operands;
        if gemmconv::conv2d(x.view(), w.view(), None, &spec, Algorithm::Naive).is_err() {
            continue; // padding the input cannot reflect
        }
        poison_some(&mut rng, &mut operands);
        let what = format!("case {case}: {spec:?} on {:?}", c.input);
        check((&spec, spec.has_bias()), &operands, &what);
    }
}

#[test]
fn conv2d_poisons_what_the_naive_sum_poisons_f32() {
    conv2d_sweep::<f32>(1, 150);
}

#[test]
fn conv2d_poisons_what_the_naive_sum_poisons_f64() {
    conv2d_sweep::<f64>(2, 150);
}

/// 3x3 layers at stride 1, where the Winograd kernel runs, with one
/// special value at a time in each operand.
#[test]
fn winograd_transforms_poison_nothing_more() {
    let mut rng = rng(3);
    let spec = Conv2dSpec::new(3, 4, (3, 3)).padding((1, 1));
    let input = [2, 3, 9, 10];
    let shapes = (
        input,
        spec.weight_shape(),
        spec.output_shape(input).unwrap(),
    );
    for operand in 0..4 {
        for special in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut operands = random_operands4::<f32>(&mut rng, shapes);
            let (x, w, b, dy) = &mut operands;
            match operand {
                0 => x[[1, 2, 4, 0]] = special,
                1 => w[[2, 1, 0, 2]] = special,
                2 => b[3] = special,
                _ => dy[[0, 3, 8, 5]] = special,
            }
            check(
                (&spec, true),
                &operands,
                &format!("{special} in operand {operand}"),
            );
        }
    }
}

#[test]
fn transposed_and_1d_convolutions_poison_what_the_naive_sum_poisons() {
    let mut rng = rng(4);
    for case in 0..30 {
        let spec = ConvTranspose2dSpec::new(2, 3, (rng.random_range(1..=3), 3))
            .stride((rng.random_range(1..=3), 2))
            .padding((rng.random_range(0..=1), 1))
            .dilation((1, rng.random_range(1..=2)));
        let input = [2, 2, rng.random_range(2..=6), 5];
        let Ok(output) = spec.output_shape(input) else {
            continue;
        };
        let shapes = (input, spec.weight_shape(), output);
        let mut operands = random_operands4::<f64>(&mut rng, shapes);
        poison_some(&mut rng, &mut operands);
        check(
            (&spec, true),
            &operands,
            &format!("transposed case {case}: {spec:?}"),
        );

        let spec = Conv1dSpec::new(2, 3, rng.random_range(1..=4))
            .padding(rng.random_range(0..=2))
            .stride(rng.random_range(1..=2));
        let length = rng.random_range(4..=12);
        let Ok(out) = spec.output_shape([2, 2, length]) else {
            continue;
        };
        let to3 = |a: Array<f64, Ix4>| -> Array<f64, Ix3> {
            let (n, c, _, l) = a.dim();
            a.into_shape_with_order((n, c, l)).unwrap()
        };
        let k = spec.weight_shape()[2];
        let mut operands = (
            to3(random_array4(&mut rng, [2, 2, 1, length])),
            to3(random_array4(&mut rng, [3, 2, 1, k])),
            random_array1(&mut rng, 3),
            to3(random_array4(&mut rng, [out[0], out[1], 1, out[2]])),
        );
        poison_some(&mut rng, &mut operands);
        check(
            (&spec, true),
            &operands,
            &format!("1-D case {case}: {spec:?}"),
        );
    }
}

/// The weight gradient asked for alone (no input gradient, so no check of
/// every output a lane writes, and no bias gradient, whose sums would show
/// a non-finite error) on a layer with more output channels than the batch
/// has output pixels, which the column matrix runs in blocks of channels of
/// the whole batch, with one special value in the input or the error:
/// padding zeros meet it in the lowered columns.
#[test]
fn weight_gradient_alone_poisons_what_the_naive_sum_poisons() {
    let mut rng = rng(5);
    let spec = Conv2dSpec::new(32, 64, (3, 3)).padding((1, 1));
    let input = [2, 32, 3, 3];
    let output = spec.output_shape(input).unwrap();
    let shapes = (input, spec.weight_shape(), output);
    for case in 0..12 {
        let mut operands = random_operands4::<f32>(&mut rng, shapes);
        let (x, _, _, dy) = &mut operands;
        let special = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][case % 3];
        if case % 2 == 0 {
            x[[0, rng.random_range(0..32), 0, rng.random_range(0..3)]] = special;
        } else {
            dy[[1, rng.random_range(0..64), rng.random_range(0..3), 2]] = special;
        }
        check_alone(&spec, &operands, Gradient::Weight, &format!("case {case}"));
    }
}

/// Which gradient [`check_alone`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gradient {
    Input,
    Weight,
}

/// The gradient `which`, asked for alone, from every configuration against
/// the naive algorithm's.
fn check_alone(spec: &Conv2dSpec, operands: &Operands<f32, Ix4>, which: Gradient, what: &str) {
    let (x, w, _, dy) = operands;
    let alone = |algorithm: Algorithm, ws: &mut gemmconv::Workspace<f32>| {
        let input = x.raw_dim();
        let (mut dx, mut dw) = (Array::zeros(input), Array::zeros(spec.weight_shape()));
        let out = gemmconv::SelectedGradientsMut {
            dx: (which == Gradient::Input).then(|| dx.view_mut()),
            dw: (which == Gradient::Weight).then(|| dw.view_mut()),
            db: None,
        };
        gemmconv::conv2d_backward_selected_into(
            x.view(),
            w.view(),
            dy.view(),
            spec,
            algorithm,
            ws,
            out,
        )
        .unwrap();
        match which {
            Gradient::Input => dx,
            Gradient::Weight => dw,
        }
    };
    let want = alone(Algorithm::Naive, &mut Default::default());
    for (algorithm, mut ws, label) in configurations::<f32>() {
        let got = alone(algorithm, &mut ws);
        assert_alike(&got, &want, &format!("{what}, {label}: {which:?} gradient"));
    }
}

/// The input gradient asked for alone (no weight or bias gradient, whose
/// sums would show a non-finite error) on 3x3 layers at stride 1, where the
/// Winograd kernel runs, with one special value in the error or the
/// weights: its transforms spread it over neighbouring pixels, which only
/// the check of every output a lane writes finds.
#[test]
fn input_gradient_alone_poisons_what_the_naive_sum_poisons() {
    let mut rng = rng(6);
    let spec = Conv2dSpec::new(3, 4, (3, 3)).padding((1, 1));
    let input = [3, 3, 9, 10];
    let output = spec.output_shape(input).unwrap();
    let shapes = (input, spec.weight_shape(), output);
    for case in 0..12 {
        let mut operands = random_operands4::<f32>(&mut rng, shapes);
        let (_, w, _, dy) = &mut operands;
        let special = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][case % 3];
        if case % 2 == 0 {
            let n = rng.random_range(0..3);
            dy[[n, rng.random_range(0..4), rng.random_range(0..9), 5]] = special;
        } else {
            w[[rng.random_range(0..4), rng.random_range(0..3), 1, 2]] = special;
        }
        check_alone(&spec, &operands, Gradient::Input, &format!("case {case}"));
    }
}
