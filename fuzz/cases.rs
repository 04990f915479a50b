//! What the fuzz targets check, shared with `tests/fuzz_corpus.rs`, which
//! replays the checked-in corpus under `cargo test`: arbitrary bytes
//! decoded into a problem of any operation of the family (every option of
//! every spec, dtype, algorithm, kernel, workspace options, thread count and
//! small tensors, NaN and ±∞ among their values), run, and held to one
//! rule: a clean `Err` exactly where the naive reference errs, agreement
//! with it elsewhere (within rounding, and NaN and ±∞ exactly where it has
//! them).

use gemmconv::ndarray::{Array1, ArrayD, IxDyn};
use gemmconv::{
    Algorithm, Conv1dSpec, Conv2dSpec, ConvError, ConvTranspose2dSpec, Element, GradientSelection,
    InputGradient, Kernel, Padding, PaddingMode, SelectedGradients, SelectedGradientsMut,
    Workspace,
};
use std::sync::OnceLock;

/// The bytes being decoded; zeros once they run out.
pub struct Bytes<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data, at: 0 }
    }

    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.byte() as usize % (hi - lo + 1)
    }

    pub fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.byte() as usize % items.len()]
    }

    /// A value in [-2, 2) from the next byte (the three highest bytes are
    /// NaN, +∞ and -∞), or from a counter once the bytes run out (so that
    /// large tensors are not all zeros, nor all special).
    pub fn value(&mut self) -> f64 {
        let b = match self.data.get(self.at) {
            Some(&0xFF) => f64::NAN,
            Some(&0xFE) => f64::INFINITY,
            Some(&0xFD) => f64::NEG_INFINITY,
            Some(&b) => (b as f64 - 128.0) / 64.0,
            None => ((self.at.wrapping_mul(2654435761) >> 7) as u8 as f64 - 128.0) / 64.0,
        };
        self.at += 1;
        b
    }
}

/// One operation of the family, with its spec.
#[derive(Clone, Debug)]
pub enum Op {
    Conv2d(Conv2dSpec),
    Transposed(ConvTranspose2dSpec),
    Conv1d(Conv1dSpec),
}

/// A pool of `threads` threads, made once.
pub fn pool(threads: usize) -> &'static rayon::ThreadPool {
    static POOLS: OnceLock<Vec<rayon::ThreadPool>> = OnceLock::new();
    let pools = POOLS.get_or_init(|| {
        (1..=3)
            .map(|t| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .expect("a pool")
            })
            .collect()
    });
    &pools[threads - 1]
}

/// A random operation and its input shape; shapes may be invalid (an
/// input too small, output padding too large), as users' are.
pub fn decode_op(b: &mut Bytes) -> (Op, Vec<usize>) {
    let groups = b.range(1, 3);
    let (c_in, c_out) = (groups * b.range(1, 3), groups * b.range(1, 3));
    let batch = b.range(0, 3);
    let mode = b.pick(&[
        PaddingMode::Zeros,
        PaddingMode::Zeros,
        PaddingMode::Reflect,
        PaddingMode::Replicate,
        PaddingMode::Circular,
    ]);
    let bias = b.flag();
    match b.byte() % 3 {
        0 => {
            let padding = Padding {
                top: b.range(0, 4),
                bottom: b.range(0, 4),
                left: b.range(0, 4),
                right: b.range(0, 4),
            };
            let mut spec = Conv2dSpec::new(c_in, c_out, (b.range(1, 5), b.range(1, 5)))
                .stride((b.range(1, 3), b.range(1, 3)))
                .padding(padding)
                .dilation((b.range(1, 3), b.range(1, 3)))
                .groups(groups)
                .padding_mode(mode)
                .bias(bias);
            if b.byte().is_multiple_of(4) {
                spec = spec.same_padding();
            }
            (
                Op::Conv2d(spec),
                vec![batch, c_in, b.range(0, 10), b.range(0, 10)],
            )
        }
        1 => {
            let spec = ConvTranspose2dSpec::new(c_in, c_out, (b.range(1, 5), b.range(1, 5)))
                .stride((b.range(1, 3), b.range(1, 3)))
                .padding((b.range(0, 3), b.range(0, 3)))
                .output_padding((b.range(0, 2), b.range(0, 2)))
                .dilation((b.range(1, 3), b.range(1, 3)))
                .groups(groups)
                .bias(bias);
            (
                Op::Transposed(spec),
                vec![batch, c_in, b.range(0, 7), b.range(0, 7)],
            )
        }
        _ => {
            let mut spec = Conv1dSpec::new(c_in, c_out, b.range(1, 6))
                .stride(b.range(1, 3))
                .padding_ends(b.range(0, 4), b.range(0, 4))
                .dilation(b.range(1, 3))
                .groups(groups)
                .padding_mode(mode)
                .bias(bias);
            if b.byte().is_multiple_of(4) {
                spec = spec.same_padding();
            }
            (Op::Conv1d(spec), vec![batch, c_in, b.range(0, 16)])
        }
    }
}

impl Op {
    /// The weight shape the spec asks for.
    pub fn weight_shape(&self) -> Vec<usize> {
        match self {
            Op::Conv2d(s) => s.weight_shape().to_vec(),
            Op::Transposed(s) => s.weight_shape().to_vec(),
            Op::Conv1d(s) => s.weight_shape().to_vec(),
        }
    }

    pub fn has_bias(&self) -> bool {
        match self {
            Op::Conv2d(s) => s.has_bias(),
            Op::Transposed(s) => s.has_bias(),
            Op::Conv1d(s) => s.has_bias(),
        }
    }

    pub fn out_channels(&self) -> usize {
        match self {
            Op::Conv2d(s) => s.out_channels(),
            Op::Transposed(s) => s.out_channels(),
            Op::Conv1d(s) => s.out_channels(),
        }
    }

    /// The forward pass with `algorithm` and `ws`.
    pub fn forward<T: Element>(
        &self,
        (x, w, b): (&ArrayD<T>, &ArrayD<T>, Option<&Array1<T>>),
        algorithm: Algorithm,
        ws: &mut Workspace<T>,
    ) -> Result<ArrayD<T>, ConvError> {
        let bias = b.map(|b| b.view());
        let (x, w) = (x.view(), w.view());
        Ok(match self {
            Op::Conv2d(s) => {
                gemmconv::conv2d_with_workspace(x, w, bias, s, algorithm, ws)?.into_dyn()
            }
            Op::Transposed(s) => {
                let shape = s.output_shape(four(x.shape())?)?;
                let mut y = gemmconv::ndarray::Array4::zeros(shape);
                gemmconv::conv_transpose2d_into(x, w, bias, s, algorithm, ws, y.view_mut())?;
                y.into_dyn()
            }
            Op::Conv1d(s) => {
                let shape = s.output_shape(three(x.shape())?)?;
                let mut y = gemmconv::ndarray::Array3::zeros(shape);
                gemmconv::conv1d_into(x, w, bias, s, algorithm, ws, y.view_mut())?;
                y.into_dyn()
            }
        })
    }

    /// The backward pass for the gradients `selection` names, with
    /// `algorithm` and `ws`.
    pub fn backward<T: Element>(
        &self,
        (x, w, dy): (&ArrayD<T>, &ArrayD<T>, &ArrayD<T>),
        algorithm: Algorithm,
        ws: &mut Workspace<T>,
        selection: GradientSelection,
    ) -> Result<SelectedGradients<T, IxDyn>, ConvError> {
        let (xv, wv, dyv) = (x.view(), w.view(), dy.view());
        let mut g = SelectedGradients::<T, IxDyn> {
            dx: selection
                .input
                .then(|| ArrayD::from_elem(x.shape(), T::from_f64(f64::NAN))),
            dw: selection
                .weight
                .then(|| ArrayD::from_elem(w.shape(), T::from_f64(f64::NAN))),
            db: selection
                .bias
                .then(|| Array1::from_elem(self.out_channels(), T::from_f64(f64::NAN))),
        };
        let out = g.view_mut();
        match self {
            Op::Conv2d(s) => gemmconv::conv2d_backward_selected_into(
                xv,
                wv,
                dyv,
                s,
                algorithm,
                ws,
                of_rank(out),
            )?,
            Op::Transposed(s) => gemmconv::conv_transpose2d_backward_into(
                xv,
                wv,
                dyv,
                s,
                algorithm,
                ws,
                of_rank(out),
            )?,
            Op::Conv1d(s) => {
                gemmconv::conv1d_backward_into(xv, wv, dyv, s, algorithm, ws, of_rank(out))?
            }
        }
        Ok(g)
    }
}

/// Gradients of dynamic rank as the operation's rank (already checked to
/// be the input's and the weight's).
fn of_rank<T, D: gemmconv::ndarray::Dimension>(
    out: SelectedGradientsMut<'_, T, IxDyn>,
) -> SelectedGradientsMut<'_, T, D> {
    SelectedGradientsMut {
        dx: out
            .dx
            .map(|a| a.into_dimensionality().expect("rank checked")),
        dw: out
            .dw
            .map(|a| a.into_dimensionality().expect("rank checked")),
        db: out.db,
    }
}

fn four(shape: &[usize]) -> Result<[usize; 4], ConvError> {
    shape.try_into().map_err(|_| rank_error(4, shape))
}

fn three(shape: &[usize]) -> Result<[usize; 3], ConvError> {
    shape.try_into().map_err(|_| rank_error(3, shape))
}

fn rank_error(expected: usize, shape: &[usize]) -> ConvError {
    ConvError::Rank {
        operand: gemmconv::Operand::Input,
        expected,
        got: shape.len(),
        shape: shape.to_vec(),
    }
}

/// Asserts `got` is within rounding of `want` (relative to `want`'s
/// scale), naming `what`.
pub fn assert_close<T: Element>(got: &ArrayD<T>, want: &ArrayD<T>, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes");
    let finite = want.iter().map(|v| v.into_f64()).filter(|v| v.is_finite());
    let scale = finite.fold(1.0f64, |m, v| m.max(v.abs()));
    let tolerance = if T::NAME == "f32" { 1e-4 } else { 1e-10 };
    for (a, b) in got.iter().zip(want) {
        let (a, b) = (a.into_f64(), b.into_f64());
        if !b.is_finite() {
            // NaN and ±∞ exactly where the naive sum has them, alike.
            let alike = (a.is_nan() && b.is_nan()) || a == b;
            assert!(alike, "{what}: {a} where naive has {b}");
            continue;
        }
        let d = (a - b).abs() / scale;
        assert!(d <= tolerance, "{what}: {a} vs {b} (relative {d:e})");
    }
}

/// The strided configurations a problem may run under.
fn workspace<T: Element>(b: &mut Bytes) -> Workspace<T> {
    Workspace::new()
        .with_kernel(b.pick(&[
            Kernel::Auto,
            Kernel::Gemm,
            Kernel::Direct,
            Kernel::Shifted,
            Kernel::Winograd,
            Kernel::Winograd4x4,
        ]))
        .with_input_gradient(b.pick(&[
            InputGradient::Auto,
            InputGradient::Col2im,
            InputGradient::ErrorLowering,
        ]))
        .with_column_cap_bytes(b.pick(&[usize::MAX, 1, 4096]))
        .with_min_lane_flops(b.pick(&[0, gemmconv::DEFAULT_MIN_LANE_FLOPS]))
}

/// One fuzz input through the functional API: see the module docs.
pub fn check_operation(data: &[u8]) {
    let mut b = Bytes::new(data);
    if b.flag() {
        check_operation_as::<f32>(&mut b)
    } else {
        check_operation_as::<f64>(&mut b)
    }
}

fn check_operation_as<T: Element>(b: &mut Bytes) {
    let (op, input) = decode_op(b);
    let algorithm = b.pick(&[Algorithm::Im2col, Algorithm::Strided, Algorithm::Strided]);
    let mut ws = workspace::<T>(b);
    let threads = b.range(1, 3);
    let selection = GradientSelection {
        input: b.flag(),
        weight: b.flag(),
        bias: b.flag(),
    };
    let mut weight_shape = op.weight_shape();
    // Now and then a weight of the wrong shape: both sides must refuse it.
    if b.byte().is_multiple_of(8) {
        let axis = b.range(0, weight_shape.len() - 1);
        weight_shape[axis] += 1;
    }
    let x = ArrayD::from_shape_simple_fn(IxDyn(&input), || T::from_f64(b.value()));
    let w = ArrayD::from_shape_simple_fn(IxDyn(&weight_shape), || T::from_f64(b.value()));
    let bias = op
        .has_bias()
        .then(|| Array1::from_shape_simple_fn(op.out_channels(), || T::from_f64(b.value())));
    let what = format!(
        "{op:?} on {input:?} ({}, {algorithm:?}, {ws:?}, {threads} threads)",
        T::NAME
    );
    let reference = op.forward(
        (&x, &w, bias.as_ref()),
        Algorithm::Naive,
        &mut Workspace::new(),
    );
    let got = pool(threads).install(|| op.forward((&x, &w, bias.as_ref()), algorithm, &mut ws));
    let y = match (reference, got) {
        (Err(want), got) => {
            assert_eq!(got.err(), Some(want), "{what}: forward");
            return;
        }
        (Ok(want), got) => {
            let got =
                got.unwrap_or_else(|e| panic!("{what}: forward erred ({e}) where naive did not"));
            assert_close(&got, &want, &format!("{what}: forward"));
            want
        }
    };
    let dy = ArrayD::from_shape_simple_fn(y.raw_dim(), || T::from_f64(b.value()));
    let want = op
        .backward(
            (&x, &w, &dy),
            Algorithm::Naive,
            &mut Workspace::new(),
            selection,
        )
        .unwrap();
    let got = pool(threads)
        .install(|| op.backward((&x, &w, &dy), algorithm, &mut ws, selection))
        .unwrap_or_else(|e| panic!("{what}: backward erred ({e}) where naive did not"));
    for (got, want, part) in [(&got.dx, &want.dx, "dx"), (&got.dw, &want.dw, "dw")] {
        assert_eq!(got.is_some(), want.is_some(), "{what}: {part} presence");
        if let (Some(got), Some(want)) = (got, want) {
            assert_close(got, want, &format!("{what}: {part}"));
        }
    }
    if let (Some(got), Some(want)) = (&got.db, &want.db) {
        assert_close(
            &got.clone().into_dyn(),
            &want.clone().into_dyn(),
            &format!("{what}: db"),
        );
    }
}

/// One fuzz input as a sequence of calls on one layer (forward, backward
/// of any selection, `zero_grad`, inference, a new algorithm), the input
/// shape changing between calls and one workspace reused: every result
/// against the naive functional call, the accumulated gradients against
/// their sums.
pub fn check_layer_calls(data: &[u8]) {
    let mut b = Bytes::new(data);
    let (op, input) = decode_op(&mut b);
    match op.clone() {
        Op::Conv2d(s) => layer_calls::<gemmconv::Conv2dSpec>(s, &op, input, &mut b),
        Op::Transposed(s) => layer_calls::<ConvTranspose2dSpec>(s, &op, input, &mut b),
        Op::Conv1d(s) => layer_calls::<Conv1dSpec>(s, &op, input, &mut b),
    }
}

fn layer_calls<S: gemmconv::Operation>(spec: S, op: &Op, mut input: Vec<usize>, b: &mut Bytes) {
    type T = f64;
    let w = ArrayD::from_shape_simple_fn(IxDyn(&op.weight_shape()), || b.value());
    let bias = op
        .has_bias()
        .then(|| Array1::from_shape_simple_fn(op.out_channels(), || b.value()));
    let Ok(weight) = w.clone().into_dimensionality::<S::Dim>() else {
        unreachable!("the spec's weight shape has the spec's rank")
    };
    // An invalid spec is refused here, as the functional calls refuse it.
    let Ok(layer) = gemmconv::Layer::<T, S>::from_weights(spec, weight, bias.clone()) else {
        return;
    };
    let mut layer = layer.with_workspace(workspace(b));
    let mut last: Option<ArrayD<T>> = None;
    let mut dw_sum = ArrayD::<T>::zeros(w.shape());
    let mut db_sum = Array1::<T>::zeros(op.out_channels());
    for step in 0..b.range(1, 8) {
        let what = format!("{op:?}, step {step}");
        match b.byte() % 6 {
            0 | 1 => {
                // A new input shape now and then: batch and spatial sizes.
                if b.flag() {
                    input[0] = b.range(0, 3);
                    let last_axis = input.len() - 1;
                    input[last_axis] = b.range(1, 12);
                }
                let x = ArrayD::from_shape_simple_fn(IxDyn(&input), || b.value());
                let want = op.forward(
                    (&x, &w, bias.as_ref()),
                    Algorithm::Naive,
                    &mut Workspace::new(),
                );
                let got = layer.forward(x.view()).map(|y| y.into_dyn());
                match want {
                    Err(e) => assert_eq!(got.err(), Some(e), "{what}: forward"),
                    Ok(want) => {
                        assert_close(
                            &got.expect("naive computed it"),
                            &want,
                            &format!("{what}: forward"),
                        );
                        last = Some(x);
                    }
                }
            }
            2 | 3 => {
                let selection = GradientSelection {
                    input: b.flag(),
                    weight: b.flag(),
                    bias: b.flag(),
                };
                let Some(x) = &last else {
                    let dy = ArrayD::<T>::zeros(IxDyn(&input));
                    assert_eq!(
                        layer.backward_selected(dy.view(), selection).err(),
                        Some(ConvError::BackwardBeforeForward)
                    );
                    continue;
                };
                let y = op
                    .forward(
                        (x, &w, bias.as_ref()),
                        Algorithm::Naive,
                        &mut Workspace::new(),
                    )
                    .unwrap();
                let dy = ArrayD::from_shape_simple_fn(y.raw_dim(), || b.value());
                let want = op
                    .backward(
                        (x, &w, &dy),
                        Algorithm::Naive,
                        &mut Workspace::new(),
                        GradientSelection::ALL,
                    )
                    .unwrap();
                let dx = layer
                    .backward_selected(dy.view(), selection)
                    .expect("naive computed it");
                assert_eq!(dx.is_some(), selection.input, "{what}: dx presence");
                if let Some(dx) = dx {
                    assert_close(
                        &dx.into_dyn(),
                        want.dx.as_ref().unwrap(),
                        &format!("{what}: dx"),
                    );
                }
                if selection.weight {
                    dw_sum += want.dw.as_ref().unwrap();
                }
                if selection.bias && bias.is_some() {
                    db_sum += want.db.as_ref().unwrap();
                }
                assert_close(
                    &layer.weight_grad().clone().into_dyn(),
                    &dw_sum,
                    &format!("{what}: dw sum"),
                );
                if let Some(db) = layer.bias_grad() {
                    assert_close(
                        &db.clone().into_dyn(),
                        &db_sum.clone().into_dyn(),
                        &format!("{what}: db sum"),
                    );
                }
            }
            4 => {
                layer.zero_grad();
                dw_sum.fill(0.0);
                db_sum.fill(0.0);
            }
            _ => {
                let mut shape = input.clone();
                shape[0] = b.range(0, 3);
                let x = ArrayD::from_shape_simple_fn(IxDyn(&shape), || b.value());
                let want = op.forward(
                    (&x, &w, bias.as_ref()),
                    Algorithm::Naive,
                    &mut Workspace::new(),
                );
                let got = layer.infer(x.view()).map(|y| y.into_dyn());
                match want {
                    Err(e) => assert_eq!(got.err(), Some(e), "{what}: infer"),
                    Ok(want) => assert_close(
                        &got.expect("naive computed it"),
                        &want,
                        &format!("{what}: infer"),
                    ),
                }
                if b.flag() {
                    let algorithm =
                        b.pick(&[Algorithm::Naive, Algorithm::Im2col, Algorithm::Strided]);
                    layer = layer.with_algorithm(algorithm);
                }
            }
        }
    }
}
