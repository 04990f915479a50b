//! Every algorithm against `Naive` on random geometries, forward and
//! backward, f32 and f64.

mod common;

use common::{Case, assert_close, random_array1, random_array4, random_case, rng};
use gemmconv::ndarray::{Array1, Array4, ArrayView1};
use gemmconv::{
    Algorithm, Conv2dPlan, Conv2dSpec, Element, Gradients, InputGradient, Kernel,
    SelectedGradientsMut, Workspace, conv2d, conv2d_backward, conv2d_backward_selected_into,
    conv2d_backward_with_workspace, conv2d_with_workspace,
};
use rand::rngs::StdRng;
use std::ops::RangeInclusive;

/// One case's random operands and the naive reference's results, computed
/// in `f64` from the same values and rounded to `T`: an `f32` reference
/// summed in `f32` would carry its own rounding (several units in 1e-6 on
/// the weight gradient of a large image) into every comparison.
struct Problem<T: Element> {
    x: Array4<T>,
    w: Array4<T>,
    b: Option<Array1<T>>,
    dy: Array4<T>,
    y_ref: Array4<T>,
    g_ref: Gradients<T>,
}

impl<T: Element> Problem<T> {
    fn new(case: &Case, rng: &mut StdRng) -> Self {
        let spec = &case.spec;
        let x = random_array4::<T>(rng, case.input);
        let w = random_array4::<T>(rng, spec.weight_shape());
        let b = spec
            .has_bias()
            .then(|| random_array1::<T>(rng, spec.out_channels()));
        let dy = random_array4::<T>(rng, spec.output_shape(case.input).unwrap());
        let wide = |a: &Array4<T>| a.mapv(|v| v.into_f64());
        let (x64, w64, dy64) = (wide(&x), wide(&w), wide(&dy));
        let b64 = b.as_ref().map(|b| b.mapv(|v| v.into_f64()));
        let bias = b64.as_ref().map(|b| b.view());
        let narrow = |a: Array4<f64>| a.mapv(T::from_f64);
        let y_ref = narrow(conv2d(x64.view(), w64.view(), bias, spec, Algorithm::Naive).unwrap());
        let g64 =
            conv2d_backward(x64.view(), w64.view(), dy64.view(), spec, Algorithm::Naive).unwrap();
        let g_ref = Gradients {
            dx: narrow(g64.dx),
            dw: narrow(g64.dw),
            db: g64.db.mapv(T::from_f64),
        };
        Problem {
            x,
            w,
            b,
            dy,
            y_ref,
            g_ref,
        }
    }

    fn bias(&self) -> Option<ArrayView1<'_, T>> {
        self.b.as_ref().map(|b| b.view())
    }

    /// The forward output and the gradients against the reference.
    fn assert_matches(&self, y: &Array4<T>, g: &Gradients<T>, label: &str) {
        assert_close(y, &self.y_ref, &format!("{label}: forward"));
        assert_close(&g.dx, &self.g_ref.dx, &format!("{label}: dx"));
        assert_close(&g.dw, &self.g_ref.dw, &format!("{label}: dw"));
        assert_close(&g.db, &self.g_ref.db, &format!("{label}: db"));
    }

    /// The strided algorithm with workspace `ws`, against the reference.
    fn check_strided(&self, spec: &Conv2dSpec, ws: &mut Workspace<T>, label: &str) {
        let (x, w, dy) = (self.x.view(), self.w.view(), self.dy.view());
        let y = conv2d_with_workspace(x, w, self.bias(), spec, Algorithm::Strided, ws).unwrap();
        let g = conv2d_backward_with_workspace(x, w, dy, spec, Algorithm::Strided, ws).unwrap();
        self.assert_matches(&y, &g, label);
    }
}

/// Runs one case through every algorithm (and the strided one in each of its
/// configurations) and compares each with the naive reference.
fn check_case<T: Element>(case: &Case, seed: u64) {
    let mut rng = rng(seed);
    let spec = &case.spec;
    let p = Problem::<T>::new(case, &mut rng);
    let what = |algo: &str| format!("{algo} on {case:?} ({})", T::NAME);
    for algo in [Algorithm::Im2col, Algorithm::Strided] {
        let y = conv2d(p.x.view(), p.w.view(), p.bias(), spec, algo).unwrap();
        let g = conv2d_backward(p.x.view(), p.w.view(), p.dy.view(), spec, algo).unwrap();
        p.assert_matches(&y, &g, &what(algo.name()));
    }

    // The strided algorithm's other configurations: the GEMM path with each
    // input-gradient method, with no cap (several samples a tile where the
    // output is small, as it is in most cases here) and with one output row
    // per tile; the direct kernel; and the shifted kernel with bands of every
    // size and of one row (where it does not apply, with groups, it runs the
    // column matrix, which is then checked twice).
    let mut configurations = vec![
        (Kernel::Measure, InputGradient::Auto, usize::MAX),
        (Kernel::Direct, InputGradient::Auto, usize::MAX),
        (Kernel::Shifted, InputGradient::Auto, usize::MAX),
        (Kernel::Shifted, InputGradient::Auto, 1),
        (Kernel::Winograd, InputGradient::Auto, usize::MAX),
        (Kernel::Winograd, InputGradient::Auto, 1),
        (Kernel::Winograd4x4, InputGradient::Auto, usize::MAX),
        (Kernel::Winograd4x4, InputGradient::Auto, 1),
    ];
    for method in [InputGradient::Col2im, InputGradient::ErrorLowering] {
        for cap in [usize::MAX, 1] {
            configurations.push((Kernel::Gemm, method, cap));
        }
    }
    for (kernel, method, cap) in configurations {
        // No least work a lane: every pass is cut into as many lanes as
        // the pool has threads, bands of a sample's rows at small batch.
        let mut ws = Workspace::new()
            .with_column_cap_bytes(cap)
            .with_input_gradient(method)
            .with_kernel(kernel)
            .with_min_lane_flops(0);
        let label = format!("strided ({kernel:?}, {method:?}, column cap {cap})");
        p.check_strided(spec, &mut ws, &what(&label));
    }
    for (algorithm, kernel) in [
        (Algorithm::Im2col, Kernel::Auto),
        (Algorithm::Strided, Kernel::Auto),
        (Algorithm::Strided, Kernel::Measure),
    ] {
        check_plan(&p, case, algorithm, kernel);
    }
}

/// [`check_case`] inside a pool of `threads` threads, which cuts the
/// passes at other places than the default pool does.
fn check_on_pool<T: Element>(case: &Case, threads: usize, seed: u64) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| check_case::<T>(case, seed));
}

/// A plan of the case, run twice forward and backward (its workspace and
/// choice reused), against the reference.
fn check_plan<T: Element>(p: &Problem<T>, case: &Case, algorithm: Algorithm, kernel: Kernel) {
    let ws = Workspace::new().with_kernel(kernel).with_min_lane_flops(0);
    let mut plan = Conv2dPlan::with_workspace(&case.spec, case.input, algorithm, ws).unwrap();
    let label = format!(
        "plan ({}, {kernel:?}) on {case:?} ({})",
        algorithm.name(),
        T::NAME
    );
    for _ in 0..2 {
        let y = plan.forward(p.x.view(), p.w.view(), p.bias()).unwrap();
        let g = plan.backward(p.x.view(), p.w.view(), p.dy.view()).unwrap();
        p.assert_matches(&y, &g, &label);
    }
}

fn sweep<T: Element>(seed: u64, cases: usize) {
    let mut rng = rng(seed);
    for i in 0..cases {
        let case = random_case(&mut rng);
        check_case::<T>(&case, seed * 1000 + i as u64);
    }
}

#[test]
fn algorithms_agree_with_naive_f32() {
    sweep::<f32>(1, 150);
}

#[test]
fn algorithms_agree_with_naive_f64() {
    sweep::<f64>(2, 150);
}

/// Uneven lanes: three and seven threads over batches of 1 to 4 cut
/// samples into bands of rows at uneven places, several bands of one sample
/// in a lane's first and last items, and (where a sample has fewer rows
/// than the pool has threads) spare threads for the GEMM.
#[test]
fn algorithms_agree_with_naive_on_three_and_seven_threads() {
    for (threads, seed) in [(3, 3), (7, 9)] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| sweep::<f64>(seed, 40));
    }
}

/// Geometries the random sweep rarely draws but that take their own paths:
/// pointwise (read in place), pointwise with a stride, depthwise with a
/// channel multiplier (the direct kernel), a kernel as large as the padded
/// input, and a batch larger than the thread count with one-row tiles.
#[test]
fn special_geometries_agree_with_naive() {
    use gemmconv::{Conv2dSpec, Padding};
    let cases = [
        (Conv2dSpec::new(6, 5, (1, 1)), [5, 6, 7, 9]),
        (Conv2dSpec::new(6, 5, (1, 1)).bias(false), [1, 6, 1, 1]),
        (Conv2dSpec::new(4, 3, (1, 1)).stride((2, 3)), [3, 4, 7, 8]),
        (
            Conv2dSpec::new(4, 8, (3, 3)).groups(4).padding((1, 1)),
            [3, 4, 6, 5],
        ),
        (
            Conv2dSpec::new(2, 3, (5, 4)).padding(Padding {
                top: 1,
                bottom: 0,
                left: 0,
                right: 1,
            }),
            [2, 2, 4, 3],
        ),
        (
            Conv2dSpec::new(3, 4, (3, 3))
                .stride((2, 2))
                .dilation((2, 1)),
            [7, 3, 11, 9],
        ),
    ];
    for (i, (spec, input)) in cases.into_iter().enumerate() {
        let case = Case { spec, input };
        check_case::<f64>(&case, 500 + i as u64);
        check_case::<f32>(&case, 600 + i as u64);
    }
}

/// The forward pass written into an `(n, c, w, h)` buffer seen with its
/// last axes swapped, read back in NCHW.
fn forward_into_transposed(
    x: gemmconv::ndarray::ArrayView4<'_, f64>,
    w: gemmconv::ndarray::ArrayView4<'_, f64>,
    b: ArrayView1<'_, f64>,
    spec: &gemmconv::Conv2dSpec,
    algo: Algorithm,
    ws: &mut Workspace<f64>,
) -> Array4<f64> {
    let out = spec.output_shape(x.shape().try_into().unwrap()).unwrap();
    let mut y_buf = Array4::<f64>::zeros((out[0], out[1], out[3], out[2]));
    let y_view = y_buf.view_mut().permuted_axes([0, 1, 3, 2]);
    gemmconv::conv2d_into(x, w, Some(b), spec, algo, ws, y_view).unwrap();
    y_buf.view().permuted_axes([0, 1, 3, 2]).to_owned()
}

/// The column matrix's forward pass of the batch in blocks of channels (a
/// small image with weights beyond the column cap) writes into an output
/// whose planes merge but whose samples and channels lie apart: its
/// samples in reverse order, every other channel of a wider buffer.
#[test]
fn forward_of_the_batch_into_views_whose_planes_merge() {
    use gemmconv::Conv2dSpec;
    use gemmconv::ndarray::{Array4, s};
    let mut rng = rng(7);
    let spec = Conv2dSpec::new(256, 256, (3, 3)).padding((1, 1));
    let input = [2, 256, 3, 3];
    let x = random_array4::<f64>(&mut rng, input);
    let w = random_array4::<f64>(&mut rng, spec.weight_shape());
    let b = random_array1::<f64>(&mut rng, spec.out_channels());
    let y_ref = conv2d(x.view(), w.view(), Some(b.view()), &spec, Algorithm::Naive).unwrap();
    let mut ws = Workspace::new().with_kernel(Kernel::Gemm);
    let mut y_buf = Array4::<f64>::zeros((2, 512, 3, 3));
    let y_view = y_buf.slice_mut(s![..;-1, ..;2, .., ..]);
    gemmconv::conv2d_into(
        x.view(),
        w.view(),
        Some(b.view()),
        &spec,
        Algorithm::Strided,
        &mut ws,
        y_view,
    )
    .unwrap();
    let y = y_buf.slice(s![..;-1, ..;2, .., ..]).to_owned();
    assert_close(&y, &y_ref, "forward of the batch into a strided view");
    assert!(
        y_buf.slice(s![.., 1..;2, .., ..]).iter().all(|&v| v == 0.0),
        "the channels between stay untouched"
    );
}

/// `_into` writes correctly into outputs of any layout: transposed and
/// strided views, for every algorithm and strided kernel.
#[test]
fn into_non_contiguous_outputs() {
    use gemmconv::ndarray::{Array1, Array4, s};
    use gemmconv::{Conv2dSpec, GradientsMut, conv2d_backward_into};
    let mut rng = rng(99);
    for spec in [
        Conv2dSpec::new(4, 6, (3, 2))
            .stride((2, 1))
            .padding((1, 1))
            .groups(2),
        Conv2dSpec::new(3, 3, (3, 3)).groups(3).padding((1, 1)),
        Conv2dSpec::new(3, 5, (3, 3)).padding((1, 1)),
        Conv2dSpec::new(3, 20, (3, 3)).padding((1, 1)),
        // Groups of 16 output channels: the channel vectors' weight
        // gradient, group by group.
        Conv2dSpec::new(4, 32, (3, 3)).padding((1, 1)).groups(2),
        // Groups of 18 output channels: the channel vectors' forward pass,
        // group by group.
        Conv2dSpec::new(40, 36, (3, 3)).padding((1, 1)).groups(2),
    ] {
        let input = [3, spec.in_channels(), 7, 6];
        let out = spec.output_shape(input).unwrap();
        let x = random_array4::<f64>(&mut rng, input);
        let w = random_array4::<f64>(&mut rng, spec.weight_shape());
        let b = random_array1::<f64>(&mut rng, spec.out_channels());
        let dy = random_array4::<f64>(&mut rng, out);
        let y_ref = conv2d(x.view(), w.view(), Some(b.view()), &spec, Algorithm::Naive).unwrap();
        let g_ref =
            conv2d_backward(x.view(), w.view(), dy.view(), &spec, Algorithm::Naive).unwrap();
        let settings = [
            (Algorithm::Naive, Kernel::Auto),
            (Algorithm::Im2col, Kernel::Auto),
            (Algorithm::Strided, Kernel::Gemm),
            (Algorithm::Strided, Kernel::Direct),
            (Algorithm::Strided, Kernel::Shifted),
            (Algorithm::Strided, Kernel::Winograd),
            (Algorithm::Strided, Kernel::Winograd4x4),
        ];
        for (algo, kernel) in settings {
            let mut ws = Workspace::new().with_kernel(kernel);
            let y = forward_into_transposed(x.view(), w.view(), b.view(), &spec, algo, &mut ws);
            assert_close(
                &y,
                &y_ref,
                &format!("{algo:?}/{kernel:?} forward into a transposed view"),
            );

            // dx: every other element of a wider buffer; dw reversed; db strided.
            let mut dx_buf = Array4::<f64>::zeros((input[0], input[1], input[2], 2 * input[3]));
            let mut dw_buf = Array4::<f64>::zeros(spec.weight_shape());
            let mut db_buf = Array1::<f64>::zeros(2 * spec.out_channels());
            conv2d_backward_into(
                x.view(),
                w.view(),
                dy.view(),
                &spec,
                algo,
                &mut ws,
                GradientsMut {
                    dx: dx_buf.slice_mut(s![.., .., .., ..;2]),
                    dw: dw_buf.slice_mut(s![..;-1, .., .., ..]),
                    db: db_buf.slice_mut(s![..;2]),
                },
            )
            .unwrap();
            let label = format!("{algo:?}/{kernel:?} backward into strided views");
            assert_close(
                &dx_buf.slice(s![.., .., .., ..;2]).to_owned(),
                &g_ref.dx,
                &label,
            );
            assert_close(
                &dw_buf.slice(s![..;-1, .., .., ..]).to_owned(),
                &g_ref.dw,
                &label,
            );
            assert_close(&db_buf.slice(s![..;2]).to_owned(), &g_ref.db, &label);
        }
    }
}

/// A random geometry the shifted kernel applies to: one group, any kernel,
/// stride (also larger than the kernel, leaving input phases no tap
/// reads), dilation, channels and padding (also beyond the kernel's reach).
fn random_shifted_case(rng: &mut StdRng) -> Case {
    random_one_group_case(rng, (1..=6, 1..=6))
}

/// [`random_shifted_case`]'s geometries with input and output channels in
/// the ranges given.
fn random_one_group_case(
    rng: &mut StdRng,
    (in_channels, out_channels): (RangeInclusive<usize>, RangeInclusive<usize>),
) -> Case {
    use gemmconv::{Conv2dSpec, Padding};
    use rand::RngExt;
    let kernel: (usize, usize) = (rng.random_range(1..=4), rng.random_range(1..=4));
    let dilation: (usize, usize) = (rng.random_range(1..=3), rng.random_range(1..=3));
    let (reach_h, reach_w) = ((kernel.0 - 1) * dilation.0, (kernel.1 - 1) * dilation.1);
    let padding = Padding {
        top: rng.random_range(0..=reach_h + 1),
        bottom: rng.random_range(0..=reach_h + 1),
        left: rng.random_range(0..=reach_w + 1),
        right: rng.random_range(0..=reach_w + 1),
    };
    let stride: (usize, usize) = (rng.random_range(1..=4), rng.random_range(1..=4));
    let spec = Conv2dSpec::new(
        rng.random_range(in_channels),
        rng.random_range(out_channels),
        kernel,
    )
    .padding(padding)
    .stride(stride)
    .dilation(dilation)
    .bias(rng.random_bool(0.7));
    let min_h = (reach_h + 1)
        .saturating_sub(padding.top + padding.bottom)
        .max(1);
    let min_w = (reach_w + 1)
        .saturating_sub(padding.left + padding.right)
        .max(1);
    let input = [
        rng.random_range(1..=4),
        spec.in_channels(),
        rng.random_range(min_h..=min_h + 6),
        rng.random_range(min_w..=min_w + 6),
    ];
    Case { spec, input }
}

/// The shifted kernel on the geometries it applies to, which the general
/// sweep draws rarely: random kernels, strides, dilations, paddings and
/// channel counts, bands of every size and of one row, against the naive
/// reference.
#[test]
fn shifted_kernel_agrees_with_naive() {
    let mut rng = rng(4);
    for case_index in 0..100 {
        let case = random_shifted_case(&mut rng);
        check_case::<f64>(&case, 4000 + case_index);
    }
}

/// The column matrix in blocks of channels (one group, more output
/// channels than output pixels): the forward pass at any batch, the
/// backward pass at batch 1 (two cases in three here) in blocks of output
/// channels for the weight gradient and of input channels for the input
/// gradient; at batch 1 the lanes lower the sample together, each a block
/// of input channels, for the forward pass and the weight gradient. 33 to
/// 72 output channels, so that blocks of 16 leave a ragged last one, and 1
/// to 40 input channels, on pools of 2, 3 and 7 threads, which cut at
/// different blocks, against the naive reference.
#[test]
fn channel_blocks_agree_with_naive() {
    let mut rng = rng(12);
    for (case_index, threads) in (0..48).zip([2, 3, 7].into_iter().cycle()) {
        let mut case = random_one_group_case(&mut rng, (1..=40, 33..=72));
        if case_index % 3 != 2 {
            case.input[0] = 1;
        }
        check_on_pool::<f64>(&case, threads, 12_000 + case_index);
    }
}

/// The backward pass of the column matrix in blocks of channels at batch 2
/// to 4, where the layer has more output channels than its batch has
/// output pixels and weights larger than the column cap (here set just
/// below them): the weight gradient in blocks of output channels, the
/// batch lowered once by the lanes together where it is one tile, else
/// summed over tiles of samples (the second on added onto the first); the
/// input gradient in blocks of input channels, a tile's samples cropped
/// out one by one. Random kernels, strides, dilations and paddings, 33 to
/// 72 output channels and 1 to 40 input channels, and layers of 600
/// output channels whose batch has more than a tile's 512 columns, on
/// pools of 2, 3 and 7 threads, each also through every configuration of
/// [`check_case`], against the naive reference.
#[test]
fn batch_channel_blocks_agree_with_naive() {
    use rand::RngExt;
    let mut draws = rng(44);
    let mut cases = Vec::new();
    while cases.len() < 30 {
        let mut case = random_one_group_case(&mut draws, (1..=40, 33..=72));
        case.input[0] = draws.random_range(2..=4);
        let [n, c_out, out_h, out_w] = case.spec.output_shape(case.input).unwrap();
        if c_out > n * out_h * out_w {
            cases.push(case);
        }
    }
    for (kernel, padding, input) in [
        (1, 0, [3, 2, 12, 15]),
        (3, 1, [4, 3, 10, 14]),
        (2, 0, [2, 5, 17, 18]),
    ] {
        let spec = Conv2dSpec::new(input[1], 600, (kernel, kernel)).padding((padding, padding));
        cases.push(Case { spec, input });
    }
    for (case_index, case) in cases.iter().enumerate() {
        let threads = [2, 3, 7][case_index % 3];
        let seed = 44_000 + case_index as u64;
        check_on_pool::<f64>(case, threads, seed);
        let weight_bytes = case.spec.weight_shape().iter().product::<usize>() * 8;
        let mut ws = Workspace::new()
            .with_column_cap_bytes(weight_bytes - 1)
            .with_kernel(Kernel::Gemm)
            .with_input_gradient(InputGradient::Col2im)
            .with_min_lane_flops(0);
        let p = Problem::<f64>::new(case, &mut rng(seed));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let label = format!("column matrix in blocks of channels on {case:?}");
        pool.install(|| p.check_strided(&case.spec, &mut ws, &label));
    }
}

/// The column matrix in blocks of channels on one sample with more output
/// pixels than output channels, up to 16 a channel, and 128 channels or
/// more in and out: 1x1 kernels at stride 1 (the input is its own column
/// matrix) and 2, and padded 3x3 kernels whose column matrix fits one tile
/// (lowered once by the lanes together), forward and backward on pools of
/// 2, 3 and 7 threads, against the naive reference.
#[test]
fn one_sample_channel_blocks_agree_with_naive() {
    use gemmconv::Conv2dSpec;
    use rand::RngExt;
    let mut rng = rng(41);
    for (case_index, threads) in (0..6).zip([2, 3, 7].into_iter().cycle()) {
        let (in_channels, out_channels) =
            (rng.random_range(128..=150), rng.random_range(128..=140));
        let (spec, side) = match case_index % 3 {
            0 => (
                Conv2dSpec::new(in_channels, out_channels, (1, 1)),
                rng.random_range(12..=20),
            ),
            1 => (
                Conv2dSpec::new(in_channels, out_channels, (1, 1)).stride((2, 2)),
                rng.random_range(24..=40),
            ),
            _ => (
                Conv2dSpec::new(in_channels, out_channels, (3, 3)).padding((1, 1)),
                12,
            ),
        };
        let case = Case {
            spec: spec.bias(rng.random_bool(0.5)),
            input: [1, in_channels, side, side + rng.random_range(0..=2)],
        };
        check_on_pool::<f64>(&case, threads, 41_000 + case_index);
    }
}

/// The input gradient of pointwise layers (1x1, unit stride, unpadded),
/// which the column matrix's GEMM writes in place: 1 to 4 samples (at
/// batch 1 with more output channels than pixels, in blocks of input
/// channels), one or two groups, images from one pixel to 9x9 cut into
/// bands on pools of 1 to 7 threads, against the naive reference; and
/// into a gradient every other element of a wider buffer, whole samples
/// and blocks of channels.
#[test]
fn pointwise_input_gradients_agree_with_naive() {
    use gemmconv::ndarray::s;
    use gemmconv::{GradientsMut, conv2d_backward_into};
    use rand::RngExt;
    let mut rng = rng(13);
    for (case_index, threads) in (0..24).zip([1, 2, 3, 7].into_iter().cycle()) {
        let groups = rng.random_range(1..=2);
        let spec = Conv2dSpec::new(
            groups * rng.random_range(1..=20),
            groups * rng.random_range(1..=36),
            (1, 1),
        )
        .groups(groups)
        .bias(rng.random_bool(0.5));
        let input = [
            rng.random_range(1..=4),
            spec.in_channels(),
            rng.random_range(1..=9),
            rng.random_range(1..=9),
        ];
        check_on_pool::<f64>(&Case { spec, input }, threads, 13_000 + case_index);
    }
    for batch in [1, 3] {
        let spec = Conv2dSpec::new(40, 48, (1, 1));
        let input = [batch, 40, 6, 7];
        let x = random_array4::<f64>(&mut rng, input);
        let w = random_array4::<f64>(&mut rng, spec.weight_shape());
        let dy = random_array4::<f64>(&mut rng, spec.output_shape(input).unwrap());
        let reference =
            conv2d_backward(x.view(), w.view(), dy.view(), &spec, Algorithm::Naive).unwrap();
        let mut ws = Workspace::new()
            .with_kernel(Kernel::Gemm)
            .with_min_lane_flops(0);
        let mut dx_buf = Array4::<f64>::zeros((batch, 40, 6, 14));
        let mut dw = Array4::<f64>::zeros(spec.weight_shape());
        let mut db = Array1::<f64>::zeros(48);
        let grads = GradientsMut {
            dx: dx_buf.slice_mut(s![.., .., .., ..;2]),
            dw: dw.view_mut(),
            db: db.view_mut(),
        };
        // Three lanes: blocks of 16 input channels, the last ragged.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| {
            let (x, w, dy) = (x.view(), w.view(), dy.view());
            conv2d_backward_into(x, w, dy, &spec, Algorithm::Strided, &mut ws, grads).unwrap()
        });
        let dx = dx_buf.slice(s![.., .., .., ..;2]).to_owned();
        let label = format!("pointwise input gradient into a strided view, batch {batch}");
        assert_close(&dx, &reference.dx, &label);
        assert_close(&dw, &reference.dw, &label);
    }
}

/// The direct kernel's tiles of output channels in vectors, where the CPU
/// runs them (elsewhere the kernels they stand in for): the forward pass
/// and the weight gradient on one group with more than 16 output
/// channels, and the input gradient by error lowering on one group at
/// unit stride with 16 input channels or more and 512 input pixels or
/// more (else by col2im). Channel counts that leave each
/// number of vectors in the last block of either precision (and some
/// spanning several panels of output channels), images whose tiles take
/// several chunks of output rows, kernels up to
/// the 64 taps of an 8x8 one, any stride, dilation and padding, a batch of
/// 1 to 4 cut into bands on pools of 1 to 3 threads, against the naive
/// reference.
#[test]
fn channel_vectors_agree_with_naive() {
    let mut draws = rng(21);
    let configurations = [
        (Kernel::Direct, InputGradient::Auto),
        (Kernel::Auto, InputGradient::Auto),
        (Kernel::Gemm, InputGradient::ErrorLowering),
    ];
    for (case_index, threads) in (0..18).zip([1, 2, 3].into_iter().cycle()) {
        let mut case = random_one_group_case(&mut draws, (17..=24, 17..=40));
        let (c_in, c_out) = (case.spec.in_channels(), case.spec.out_channels());
        match case_index % 3 {
            0 => {
                let spec = Conv2dSpec::new(c_in, c_out, (8, 8 - case_index % 2));
                case.spec = spec.padding((2, 3)).stride((1 + case_index % 2, 1));
                case.input = [1, c_in, 9 + case_index % 4, 8];
            }
            // Unit stride, enough input pixels for the input gradient; one
            // case in two with one vector of input channels.
            1 => {
                let c_in = if case_index % 6 == 1 { 16 } else { c_in };
                let k = 2 + case_index % 4;
                let spec = Conv2dSpec::new(c_in, c_out, (k, k + case_index % 2));
                case.spec = spec.padding((k / 2, (k - 1) / 2)).bias(case_index % 2 == 0);
                case.input = [2, c_in, 16, 16 + case_index % 3];
            }
            // Output channels (and, for the input gradient, input
            // channels) over several panels of four vectors, the last
            // panel part-filled.
            _ if case_index % 6 == 5 => {
                let c_in = 66 + case_index;
                let spec = Conv2dSpec::new(c_in, 130 + case_index, (3, 3));
                case.spec = spec.padding((1, 1)).stride((1, 1 + case_index % 4 / 2));
                case.input = [2, c_in, 16, 17];
            }
            // An image whose tiles take several chunks of output rows
            // (two in f32, four in f64), whole and in bands.
            _ if case_index % 6 == 2 => {
                let c_in = 3 + case_index % 4;
                let spec = Conv2dSpec::new(c_in, 33 + case_index, (3, 3));
                case.spec = spec.padding((1, 1)).bias(case_index % 4 == 2);
                case.input = [1 + case_index % 4 / 2, c_in, 72, 70];
            }
            _ => {}
        }
        let seed = 21_000 + case_index as u64;
        in_both_precisions_on_pool(&case, threads, seed, |p32, p64| {
            for (kernel, method) in configurations {
                let label = |name| {
                    format!("{kernel:?}, {method:?} on {case:?} ({name}, {threads} threads)")
                };
                let mut ws = Workspace::new()
                    .with_kernel(kernel)
                    .with_input_gradient(method)
                    .with_min_lane_flops(0);
                p32.check_strided(&case.spec, &mut ws, &label("f32"));
                let mut ws = Workspace::new()
                    .with_kernel(kernel)
                    .with_input_gradient(method)
                    .with_min_lane_flops(0);
                p64.check_strided(&case.spec, &mut ws, &label("f64"));
            }
        });
    }
}

/// The channel vectors on stacks of whole small images, whose tiles run
/// on from one sample into the next: batches of 2 to 9 images of 3 to 9
/// pixels a side, 1 or 2 groups of 17 to 40 output channels and 1 to 24
/// input channels, kernels of 1 to 3 taps a side (above 1x1), strides 1
/// and 2, dilation 1 and 2, with and without padding (the input read in
/// place or copied); `Kernel::Direct` forward and backward (the input
/// gradient on the channel vectors at unit stride), f32 and f64, on pools
/// of 1 to 3 threads, against the naive reference; and the forward pass
/// from an input view whose samples lie apart (copied where it could be
/// read in place) into an output view whose samples and channels lie
/// apart.
#[test]
fn channel_vectors_on_stacked_samples_agree_with_naive() {
    use gemmconv::ndarray::s;
    use rand::RngExt;
    let mut draws = rng(47);
    for (case_index, threads) in (0..12).zip([1, 2, 3].into_iter().cycle()) {
        let groups = 1 + case_index % 2;
        let (c_in_g, c_out_g) = (draws.random_range(1..=24), draws.random_range(17..=40));
        let kernel = match case_index % 3 {
            0 => (3, 3),
            1 => (1, 2 + case_index % 2),
            _ => (2, 1 + case_index % 3),
        };
        let dilation = 1 + case_index % 4 / 3;
        let padded = case_index % 4 != 1;
        let padding = if padded {
            (kernel.0 / 2 * dilation, (kernel.1 - 1) * dilation)
        } else {
            (0, 0)
        };
        let spec = Conv2dSpec::new(groups * c_in_g, groups * c_out_g, kernel)
            .groups(groups)
            .stride((1 + case_index % 5 / 4, 1 + case_index % 7 / 5))
            .padding(padding)
            .dilation((dilation, dilation))
            .bias(case_index % 3 != 2);
        let size = draws.random_range(3..=9);
        let input = [
            draws.random_range(2..=9),
            groups * c_in_g,
            size.max(kernel.0 * dilation),
            (size + 1).max(kernel.1 * dilation),
        ];
        let case = Case { spec, input };
        let seed = 47_000 + case_index as u64;
        in_both_precisions_on_pool(&case, threads, seed, |p32, p64| {
            let label = |name| format!("Direct on {case:?} ({name}, {threads} threads)");
            let mut ws = Workspace::new().with_kernel(Kernel::Direct);
            p32.check_strided(&case.spec, &mut ws, &label("f32"));
            let mut ws = Workspace::new().with_kernel(Kernel::Direct);
            p64.check_strided(&case.spec, &mut ws, &label("f64"));
            // Every other sample of a wider batch, reversed, into every
            // other channel of a wider output, reversed.
            let [n, c, h, w] = case.input;
            let mut wide_x = Array4::<f64>::zeros((2 * n, c, h, w));
            wide_x.slice_mut(s![..;-2, .., .., ..]).assign(&p64.x);
            let x = wide_x.slice(s![..;-2, .., .., ..]);
            let out = case.spec.output_shape(case.input).unwrap();
            let mut y_buf = Array4::<f64>::zeros((out[0], 2 * out[1], out[2], out[3]));
            let y_view = y_buf.slice_mut(s![..;-1, ..;2, .., ..]);
            let mut ws = Workspace::new().with_kernel(Kernel::Direct);
            let (w, b) = (p64.w.view(), p64.bias());
            gemmconv::conv2d_into(x, w, b, &case.spec, Algorithm::Strided, &mut ws, y_view)
                .unwrap();
            let y = y_buf.slice(s![..;-1, ..;2, .., ..]).to_owned();
            assert_close(&y, &p64.y_ref, &label("f64 views"));
            assert!(
                y_buf.slice(s![.., 1..;2, .., ..]).iter().all(|&v| v == 0.0),
                "{}: the channels between stay untouched",
                label("f64 views")
            );
        });
    }
}

/// The weight gradient on the channel vectors' tiles for grouped layers,
/// where the CPU runs them (elsewhere the kernels they stand in for): 2 to
/// 4 groups of 8 to 25 output channels (half a vector of `f32` and every
/// count of vectors in a group's last block of either precision) and 1 to
/// 13 input channels, kernels up to 4x4 at row strides 1 and 2 (some at
/// column stride 2) with dilation and padding, a batch
/// of 1 to 3 cut into bands on pools of 1 to 3 threads, images large enough
/// for `Kernel::Auto` to take them on some cases; `Kernel::Direct` and
/// `Kernel::Auto`, f32 and f64, against the naive reference.
#[test]
fn grouped_channel_vector_gradients_agree_with_naive() {
    use rand::RngExt;
    let mut draws = rng(23);
    for (case_index, threads) in (0..12).zip([1, 2, 3].into_iter().cycle()) {
        let groups = 2 + case_index % 3;
        let (c_in_g, c_out_g) = (draws.random_range(1..=13), draws.random_range(8..=25));
        let kernel = (1 + case_index % 4, 1 + (case_index / 2) % 4);
        let dilation = 1 + case_index % 3 / 2;
        let spec = Conv2dSpec::new(groups * c_in_g, groups * c_out_g, kernel)
            .groups(groups)
            .stride((1 + case_index % 2, 1 + usize::from(case_index % 4 == 1)))
            .padding((kernel.0 / 2 * dilation, kernel.1 / 2 * dilation))
            .dilation((dilation, dilation))
            .bias(case_index % 2 == 0);
        let size = if case_index % 3 == 0 { 16 } else { 7 };
        let input = [
            1 + case_index % 3,
            groups * c_in_g,
            size + case_index % 4,
            size + 1,
        ];
        let case = Case { spec, input };
        check_direct_and_auto(&case, threads, 23_000 + case_index as u64);
    }
}

/// The input gradient of grouped layers at strides above 1 in phases of
/// the stride (where the kernel is at most twice the stride and groups
/// have 2 to 16 input channels): 2 to 6 groups of 1 to 16 input channels
/// and 1 to 24 output channels, kernels of 1 to 5 taps a side (2 to 5
/// wide) at strides of 1 to 3, 2 or 3 across (some kernels smaller than
/// the stride, whose layers keep col2im), padding of up to the kernel's
/// reach on each side apart, images of 3 to 13 pixels a side (some of
/// whose last rows no output reads); the column matrix by error lowering,
/// `Kernel::Direct` and `Kernel::Auto`, f32 and f64, on pools of 1 to 3
/// threads, against the naive reference.
#[test]
fn strided_input_gradients_in_phases_agree_with_naive() {
    use gemmconv::Padding;
    use rand::RngExt;
    let mut draws = rng(43);
    for (case_index, threads) in (0..32).zip([2, 3, 1].into_iter().cycle()) {
        let groups = draws.random_range(2..=6);
        let (c_in_g, c_out_g) = (draws.random_range(1..=16), draws.random_range(1..=24));
        let kernel = (draws.random_range(1..=5), draws.random_range(2..=5));
        // Mostly strides no larger than the kernel, whose every phase
        // reads a tap; every eighth case any stride up to 3.
        let largest = |taps: usize| if case_index % 8 == 7 { 3 } else { taps.min(3) };
        let stride = (
            draws.random_range(1..=largest(kernel.0)),
            draws.random_range(2..=largest(kernel.1).max(2)),
        );
        let padding = Padding {
            top: draws.random_range(0..kernel.0),
            bottom: draws.random_range(0..kernel.0),
            left: draws.random_range(0..kernel.1),
            right: draws.random_range(0..kernel.1),
        };
        let spec = Conv2dSpec::new(groups * c_in_g, groups * c_out_g, kernel)
            .groups(groups)
            .stride(stride)
            .padding(padding)
            .bias(case_index % 2 == 0);
        let input = [
            1 + case_index % 3,
            groups * c_in_g,
            kernel.0 + draws.random_range(2..=8),
            kernel.1 + draws.random_range(2..=8),
        ];
        let case = Case { spec, input };
        let seed = 43_000 + case_index as u64;
        check_direct_and_auto(&case, threads, seed);
        in_both_precisions_on_pool(&case, threads, seed, |p32, p64| {
            let label = |name| format!("error lowering on {case:?} ({name}, {threads} threads)");
            let method = InputGradient::ErrorLowering;
            let mut ws = column_matrix(method, usize::MAX);
            p32.check_strided(&case.spec, &mut ws, &label("f32"));
            let mut ws = column_matrix(method, usize::MAX);
            p64.check_strided(&case.spec, &mut ws, &label("f64"));
        });
    }
}

/// The column matrix's weight-gradient tiles that gather samples beyond
/// the column cap, up to the size of the weight gradient's partial sums:
/// a cap of one sample's column matrix, layers with 2.4 to 48 times that
/// in weights on images of 2x3 to 4x5 pixels, 3x3 at stride 1 or 2 and
/// 1x1 (whose samples are read in place unless gathered), groups 1 or 2,
/// a batch of 3 to 9 cut into tiles of several samples and a last,
/// shorter one; both input-gradient methods, f32 and f64, on pools of 1
/// to 3 threads, against the naive reference.
#[test]
fn gathered_weight_gradient_tiles_agree_with_naive() {
    use rand::RngExt;
    let mut draws = rng(37);
    for (case_index, threads) in (0..9).zip([1, 2, 3].into_iter().cycle()) {
        let groups = 1 + case_index % 2;
        let c_in = groups * draws.random_range(8..=16);
        let c_out = groups * draws.random_range(48..=96);
        // 3x3 at stride 1 and 2, then 1x1 layers, whose one-sample tiles
        // would be the input itself.
        let (kernel, stride, padding) = [(3, 1, 1), (3, 2, 1), (1, 1, 0)][case_index / 3];
        let spec = Conv2dSpec::new(c_in, c_out, (kernel, kernel))
            .groups(groups)
            .stride((stride, stride))
            .padding((padding, padding))
            .bias(case_index % 2 == 0);
        let image = 2 + case_index % 3;
        let batch = 3 + draws.random_range(0..=6);
        let case = Case {
            spec,
            input: [batch, c_in, image, image + 1],
        };
        let sample_columns =
            c_in * kernel * kernel * image.div_ceil(stride) * (image + 1).div_ceil(stride);
        let seed = 37_000 + case_index as u64;
        in_both_precisions_on_pool(&case, threads, seed, |p32, p64| {
            for method in [InputGradient::Col2im, InputGradient::ErrorLowering] {
                let label = |name| format!("{method:?} on {case:?} ({name})");
                let cap = |bytes| sample_columns * bytes;
                p32.check_strided(
                    &case.spec,
                    &mut column_matrix(method, cap(4)),
                    &label("f32"),
                );
                p64.check_strided(
                    &case.spec,
                    &mut column_matrix(method, cap(8)),
                    &label("f64"),
                );
                // The input gradient alone comes out bit for bit as it does
                // beside the others: the tiles depend on the geometry alone.
                let mut ws = column_matrix::<f32>(method, cap(4));
                let (x, w, dy) = (p32.x.view(), p32.w.view(), p32.dy.view());
                let all = conv2d_backward_with_workspace(
                    x,
                    w,
                    dy,
                    &case.spec,
                    Algorithm::Strided,
                    &mut ws,
                )
                .unwrap();
                let mut dx = Array4::<f32>::zeros(all.dx.raw_dim());
                let out = SelectedGradientsMut {
                    dx: Some(dx.view_mut()),
                    dw: None,
                    db: None,
                };
                conv2d_backward_selected_into(
                    x,
                    w,
                    dy,
                    &case.spec,
                    Algorithm::Strided,
                    &mut ws,
                    out,
                )
                .unwrap();
                assert_eq!(dx, all.dx, "{}: dx alone", label("f32"));
            }
        });
    }
}

/// A workspace of the column-matrix kernel with the input-gradient method
/// `method` and a column cap of `cap_bytes`, every pass cut into lanes.
fn column_matrix<T>(method: InputGradient, cap_bytes: usize) -> Workspace<T> {
    Workspace::new()
        .with_kernel(Kernel::Gemm)
        .with_input_gradient(method)
        .with_min_lane_flops(0)
        .with_column_cap_bytes(cap_bytes)
}

/// The channel vectors' weight gradient on layers of one group with 8 to
/// 16 output channels (half a vector to a vector of `f32`), which
/// `Kernel::Auto` takes on 512 output pixels or more: 1 to 20 input
/// channels, kernels up to 5x5 (some one row or column high), stride 1 or
/// 2, a batch of 1 or 2 on images tall enough to be cut into many bands of
/// rows (the weight gradient's bands keep no input gradient), on pools of
/// 1 to 3 threads; `Kernel::Direct` and `Kernel::Auto`, f32 and f64,
/// against the naive reference.
#[test]
fn narrow_channel_vector_gradients_agree_with_naive() {
    use rand::RngExt;
    let mut draws = rng(31);
    for (case_index, threads) in (0..8).zip([2, 3, 1].into_iter().cycle()) {
        let (c_in, c_out) = (draws.random_range(1..=20), draws.random_range(8..=16));
        let kernel = (1 + (case_index + 1) % 5, 1 + (case_index + 2) % 3);
        let stride = 1 + usize::from(case_index % 4 == 3);
        let spec = Conv2dSpec::new(c_in, c_out, kernel)
            .stride((stride, stride))
            .padding((kernel.0 / 2, kernel.1 / 2))
            .bias(case_index % 2 == 1);
        let input = [
            1 + case_index % 2,
            c_in,
            40 + 3 * case_index,
            26 + case_index % 3,
        ];
        let case = Case { spec, input };
        check_direct_and_auto(&case, threads, 31_000 + case_index as u64);
    }
}

/// The channel vectors group by group: forward passes of 2 to 4 groups of
/// 17 to 40 output channels, and input gradients (the error lowered on
/// the channel vectors, the weights turned group by group) of groups of
/// 17 to 40 input channels, kernels up to 5x5 with dilation and padding, at
/// unit stride and some at stride 2, on images of 512 pixels or more so
/// that `Kernel::Auto` takes them too; `Kernel::Direct` and `Kernel::Auto`,
/// f32 and f64, on pools of 1 to 3 threads, against the naive reference.
#[test]
fn grouped_channel_vectors_agree_with_naive() {
    use rand::RngExt;
    let mut draws = rng(29);
    for (case_index, threads) in (0..8).zip([1, 2, 3].into_iter().cycle()) {
        let groups = 2 + case_index % 3;
        let (c_in_g, c_out_g) = (draws.random_range(17..=40), draws.random_range(17..=40));
        let kernel = (1 + case_index % 5, 1 + (case_index + 2) % 5);
        let dilation = 1 + case_index % 2;
        let spec = Conv2dSpec::new(groups * c_in_g, groups * c_out_g, kernel)
            .groups(groups)
            .stride((1 + usize::from(case_index == 5), 1))
            .padding((kernel.0 / 2 * dilation, kernel.1 / 2 * dilation))
            .dilation((dilation, dilation))
            .bias(case_index % 2 == 0);
        let input = [1 + case_index % 2, groups * c_in_g, 24 + case_index, 23];
        let case = Case { spec, input };
        check_direct_and_auto(&case, threads, 29_000 + case_index as u64);
    }
}

/// The input gradient of layers of one input channel with 5x5 kernels and
/// at most 8 output channels, which the column-matrix kernel computes as
/// the error convolved on the stencils: 1 to 8 output channels, padding 0
/// to 2, planes of 8 to 30 rows and 16 to 40 columns (as narrow as the
/// stencils take in either precision) and a few smaller ones, a batch of
/// 1 to 3 on pools of 1 to 3 threads; `Kernel::Gemm` and `Kernel::Auto`
/// (which takes the stencil gradients there), f32 and f64, against the
/// naive reference.
#[test]
fn one_channel_input_gradients_on_stencils_agree_with_naive() {
    use rand::RngExt;
    let mut draws = rng(31);
    for (case_index, threads) in (0..12).zip([1, 2, 3].into_iter().cycle()) {
        let pad = draws.random_range(0..=2);
        let spec = Conv2dSpec::new(1, draws.random_range(1..=8), (5, 5))
            .padding((pad, pad))
            .bias(case_index % 2 == 0);
        let (h, w) = if case_index % 4 == 3 {
            (draws.random_range(5..=8), draws.random_range(5..=16))
        } else {
            (draws.random_range(8..=30), draws.random_range(16..=40))
        };
        let input = [1 + case_index % 3, 1, h, w];
        let case = Case { spec, input };
        check_kernel_and_auto(Kernel::Gemm, &case, threads, 31_000 + case_index as u64);
    }
}

/// `Kernel::Direct` and `Kernel::Auto` on `case`, f32 and f64, against the
/// naive reference, in a pool of `threads` threads, with no least work a
/// lane (so that small calls are cut into bands too).
fn check_direct_and_auto(case: &Case, threads: usize, seed: u64) {
    check_kernel_and_auto(Kernel::Direct, case, threads, seed);
}

/// [`check_direct_and_auto`] with `kernel` in place of `Kernel::Direct`.
fn check_kernel_and_auto(kernel: Kernel, case: &Case, threads: usize, seed: u64) {
    in_both_precisions_on_pool(case, threads, seed, |p32, p64| {
        for kernel in [kernel, Kernel::Auto] {
            let label = |name| format!("{kernel:?} on {case:?} ({name}, {threads} threads)");
            let mut ws = Workspace::new().with_kernel(kernel).with_min_lane_flops(0);
            p32.check_strided(&case.spec, &mut ws, &label("f32"));
            let mut ws = Workspace::new().with_kernel(kernel).with_min_lane_flops(0);
            p64.check_strided(&case.spec, &mut ws, &label("f64"));
        }
    });
}

/// `check` on the problems of `case` drawn from `seed` in `f32` and
/// `f64`, inside a pool of `threads` threads.
fn in_both_precisions_on_pool(
    case: &Case,
    threads: usize,
    seed: u64,
    check: impl Fn(&Problem<f32>, &Problem<f64>) + Send + Sync,
) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let p32 = Problem::<f32>::new(case, &mut rng(seed));
        let p64 = Problem::<f64>::new(case, &mut rng(seed));
        check(&p32, &p64);
    });
}

/// The ranges a random geometry for the register tiles draws from.
struct TileRanges {
    groups: usize,
    kernel_w: usize,
    in_per_group: usize,
    out_per_group: RangeInclusive<usize>,
    padding_w: usize,
    /// Draws the column stride.
    column_stride: fn(&mut StdRng) -> usize,
    row_stride: usize,
    extra_width: usize,
}

/// A random geometry for the direct kernel's register tiles within
/// `ranges`: groups, kernels, dilation and padding, and an input at least
/// as large as the padded kernel's reach.
fn random_tiles_case(rng: &mut StdRng, ranges: TileRanges) -> Case {
    use gemmconv::{Conv2dSpec, Padding};
    use rand::RngExt;
    let groups = rng.random_range(1..=ranges.groups);
    let kernel: (usize, usize) = (
        rng.random_range(1..=5),
        rng.random_range(1..=ranges.kernel_w),
    );
    let dilation: (usize, usize) = (rng.random_range(1..=2), rng.random_range(1..=2));
    let padding = Padding {
        top: rng.random_range(0..=2),
        bottom: rng.random_range(0..=2),
        left: rng.random_range(0..=ranges.padding_w),
        right: rng.random_range(0..=ranges.padding_w),
    };
    let stride_w = (ranges.column_stride)(rng);
    let spec = Conv2dSpec::new(
        groups * rng.random_range(1..=ranges.in_per_group),
        groups * rng.random_range(ranges.out_per_group),
        kernel,
    )
    .groups(groups)
    .stride((rng.random_range(1..=ranges.row_stride), stride_w))
    .padding(padding)
    .dilation(dilation)
    .bias(rng.random_bool(0.7));
    let reach = |k: usize, d: usize, pad: usize| ((k - 1) * d + 1).saturating_sub(pad).max(1);
    let min_h = reach(kernel.0, dilation.0, padding.top + padding.bottom);
    let min_w = reach(kernel.1, dilation.1, padding.left + padding.right);
    let input = [
        rng.random_range(1..=3),
        spec.in_channels(),
        rng.random_range(min_h..=min_h + 6),
        rng.random_range(min_w..=min_w + ranges.extra_width),
    ];
    Case { spec, input }
}

/// A random geometry for the direct kernel's register tiles: few input
/// channels a group, output channel counts that need every tile size (6,
/// 4, 2 and 1 channels), rows from narrower than half a vector (the partial
/// path) to several vectors wide with a ragged end, planes one row high,
/// mostly unit column stride and sometimes 2 (rows dealt into phases).
fn random_direct_case(rng: &mut StdRng) -> Case {
    use rand::RngExt;
    let ranges = TileRanges {
        groups: 3,
        kernel_w: 5,
        in_per_group: 3,
        out_per_group: 1..=14,
        padding_w: 2,
        column_stride: |rng| if rng.random_bool(0.8) { 1 } else { 2 },
        row_stride: 3,
        extra_width: 44,
    };
    random_tiles_case(rng, ranges)
}

/// The direct kernel on the geometries its register tiles are built for,
/// which the general sweep (narrow images) reaches only in part, in both
/// precisions (their vectors hold different numbers of pixels).
#[test]
fn direct_kernel_agrees_with_naive() {
    let mut rng = rng(8);
    for case_index in 0..40 {
        let case = random_direct_case(&mut rng);
        check_case::<f64>(&case, 8000 + case_index);
        check_case::<f32>(&case, 8500 + case_index);
    }
}

/// A random geometry for the direct register tiles at column stride 2 or
/// 3 (each input row dealt into the stride's phases first): grouped, few
/// output channels a group (every tile size), kernels 1 to 7 wide, any
/// padding and dilation, rows narrower than half a vector to several
/// vectors wide.
fn random_dealt_tiles_case(rng: &mut StdRng) -> Case {
    use rand::RngExt;
    let ranges = TileRanges {
        groups: 4,
        kernel_w: 7,
        in_per_group: 4,
        out_per_group: 2..=16,
        padding_w: 3,
        column_stride: |rng| rng.random_range(2..=3),
        row_stride: 2,
        extra_width: 70,
    };
    random_tiles_case(rng, ranges)
}

/// The register tiles at column strides above 1 against the naive sum,
/// both precisions, on pools of 1 to 5 threads (bands of a sample); and
/// an input whose rows are not contiguous (its last axes swapped) into a
/// transposed output.
#[test]
fn dealt_register_tiles_agree_with_naive() {
    let mut rng = rng(19);
    for case_index in 0..24 {
        let case = random_dealt_tiles_case(&mut rng);
        check_direct_and_auto(&case, 1 + case_index % 5, 9500 + case_index as u64);
    }
    let spec = gemmconv::Conv2dSpec::new(12, 24, (3, 5))
        .groups(3)
        .stride((2, 3))
        .padding((1, 2));
    let x_buf = random_array4::<f64>(&mut rng, [2, 12, 47, 19]);
    let x = x_buf.view().permuted_axes([0, 1, 3, 2]);
    let w = random_array4::<f64>(&mut rng, spec.weight_shape());
    let b = random_array1::<f64>(&mut rng, 24);
    let y_ref = conv2d(x, w.view(), Some(b.view()), &spec, Algorithm::Naive).unwrap();
    on_direct_pool(3, |ws| {
        let y = forward_into_transposed(x, w.view(), b.view(), &spec, Algorithm::Strided, ws);
        assert_close(&y, &y_ref, "dealt tiles, transposed input and output");
    });
}

/// A random geometry for the direct kernel's stencils (one output channel
/// a tile, square 3x3 or 5x5 kernels, unit stride and dilation; backward,
/// depthwise layers): output
/// channel counts a group that leave a one-channel tile, one to three input
/// channels a group, any padding, planes at least a tile (eight rows, a
/// vector) and ragged on both edges, so that the last tiles shift back.
fn random_stencil_case(rng: &mut StdRng) -> Case {
    use gemmconv::{Conv2dSpec, Padding};
    use rand::RngExt;
    let k = if rng.random_bool(0.7) { 3 } else { 5 };
    let padding = Padding {
        top: rng.random_range(0..=2),
        bottom: rng.random_range(0..=2),
        left: rng.random_range(0..=2),
        right: rng.random_range(0..=2),
    };
    // Half of them depthwise, which the backward stencils compute in blocks
    // of 16 channels: up to 40 channels, so that blocks end short of it.
    let (groups, in_per_group, out_per_group) = if rng.random_bool(0.5) {
        (rng.random_range(1..=40), 1, 1)
    } else {
        let per_group = (rng.random_range(1..=3), [1, 7, 13][rng.random_range(0..3)]);
        (rng.random_range(1..=4), per_group.0, per_group.1)
    };
    let spec = Conv2dSpec::new(groups * in_per_group, groups * out_per_group, (k, k))
        .groups(groups)
        .padding(padding)
        .bias(rng.random_bool(0.7));
    // Planes of at most about 1500 pixels a batch, as in the other sweeps:
    // the bias gradient sums them all, and the naive sum in `f32` rounds
    // once per pixel.
    let input = [
        rng.random_range(1..=2),
        spec.in_channels(),
        rng.random_range(8 + k..=24),
        rng.random_range(16 + k..=36),
    ];
    Case { spec, input }
}

/// The stencils against the naive sum, in both precisions (their vectors
/// hold different numbers of pixels); batch 1 cuts samples into bands of
/// rows, which read only their rows of the padded input.
#[test]
fn stencils_agree_with_naive() {
    let mut rng = rng(12);
    for case_index in 0..40 {
        let case = random_stencil_case(&mut rng);
        check_case::<f64>(&case, 12_000 + case_index);
        check_case::<f32>(&case, 12_500 + case_index);
    }
}

/// The stencil gradients on one sample of 64 channels or more, which they
/// cut into blocks of channels (depthwise, and one input channel a group
/// with two or three output channels), and the depthwise forward pass in
/// blocks of whole planes on the stencils, 3x3 and 5x5, planes of 9 to 28
/// rows and 5 to 28 columns (under a vector of `f32` and over it, on AVX2
/// and on AVX-512), on pools of 1, 2, 3 and 7 threads, against
/// the naive sum; a few cases at batch 2, which cut samples rather than
/// channels.
#[test]
fn stencil_gradient_channel_blocks_agree_with_naive() {
    use gemmconv::Padding;
    use rand::RngExt;
    let mut rng = rng(16);
    for (case_index, threads) in (0..24).zip([1, 2, 3, 7].into_iter().cycle()) {
        let k = if rng.random_bool(0.6) { 3 } else { 5 };
        let groups = rng.random_range(64..=150);
        let out_per_group = [1, 1, 2, 3][rng.random_range(0..4)];
        let input_side = (
            rng.random_range(k + 6..=k + 23),
            rng.random_range(k + 2..=k + 23),
        );
        let spec = Conv2dSpec::new(groups, groups * out_per_group, (k, k))
            .groups(groups)
            .padding(Padding {
                top: rng.random_range(0..k),
                bottom: rng.random_range(0..k),
                left: rng.random_range(0..k),
                right: rng.random_range(0..k),
            })
            .bias(rng.random_bool(0.8));
        let batch = if case_index % 5 == 4 { 2 } else { 1 };
        let case = Case {
            spec,
            input: [batch, groups, input_side.0, input_side.1],
        };
        check_on_pool::<f32>(&case, threads, 16_000 + case_index);
        check_on_pool::<f64>(&case, threads, 16_500 + case_index);
    }
}

/// A random depthwise geometry for the direct kernel across channels
/// (stride 2, or rows under 16 pixels): channel counts from one to well
/// past its blocks of four vectors, so that whole blocks, single vectors
/// and the last few channels are all summed.
fn random_depthwise_case(rng: &mut StdRng, channels: RangeInclusive<usize>) -> Case {
    use gemmconv::{Conv2dSpec, Padding};
    use rand::RngExt;
    let channels = rng.random_range(channels);
    let k = rng.random_range(1..=5);
    let pad = rng.random_range(0..=2);
    let stride = if rng.random_bool(0.6) { 2 } else { 1 };
    let spec = Conv2dSpec::new(channels, channels, (k, k))
        .groups(channels)
        .stride((stride, stride))
        .padding(Padding {
            top: pad,
            bottom: rng.random_range(0..=2),
            left: pad,
            right: rng.random_range(0..=2),
        })
        .bias(rng.random_bool(0.7));
    let side = |rng: &mut StdRng| rng.random_range(k.max(3)..=14);
    let input = [rng.random_range(1..=2), channels, side(rng), side(rng)];
    Case { spec, input }
}

/// The depthwise kernel across channels against the naive sum, in both
/// precisions (their blocks hold different numbers of channels).
#[test]
fn depthwise_across_channels_agrees_with_naive() {
    let mut rng = rng(13);
    for case_index in 0..30 {
        let case = random_depthwise_case(&mut rng, 1..=150);
        check_case::<f64>(&case, 13_000 + case_index);
        check_case::<f32>(&case, 13_500 + case_index);
    }
}

/// The depthwise kernel across channels on layers it cuts into blocks of
/// 16 channels (64 or more), with a ragged last block, on pools of 2, 3
/// and 7 threads, which cut at different blocks, mostly at batch 1 (where
/// blocks of one sample are the only work to share), against the naive
/// sum.
#[test]
fn depthwise_channel_blocks_agree_with_naive() {
    let mut rng = rng(15);
    for (case_index, threads) in (0..24).zip([2, 3, 7].into_iter().cycle()) {
        let mut case = random_depthwise_case(&mut rng, 64..=150);
        if case_index % 3 != 2 {
            case.input[0] = 1;
        }
        check_on_pool::<f32>(&case, threads, 15_000 + case_index);
    }
}

/// A depthwise 3x3 layer of `channels` channels at stride 2, with any
/// padding up to 2 on each side, a bias seven times in ten, and a batch,
/// height and width drawn from the ranges given.
fn random_stride2_depthwise_case(
    rng: &mut StdRng,
    channels: usize,
    (batch, height, width): (
        RangeInclusive<usize>,
        RangeInclusive<usize>,
        RangeInclusive<usize>,
    ),
) -> Case {
    use gemmconv::Padding;
    use rand::RngExt;
    let padding = Padding {
        top: rng.random_range(0..=2),
        bottom: rng.random_range(0..=2),
        left: rng.random_range(0..=2),
        right: rng.random_range(0..=2),
    };
    let spec = Conv2dSpec::new(channels, channels, (3, 3))
        .groups(channels)
        .stride((2, 2))
        .padding(padding)
        .bias(rng.random_bool(0.7));
    let input = [
        rng.random_range(batch),
        channels,
        rng.random_range(height),
        rng.random_range(width),
    ];
    Case { spec, input }
}

/// Depthwise 3x3 layers at stride 2 on output rows of 16 pixels or more,
/// which the direct kernel computes from deinterleaved planes: any
/// padding on each side (odd and even widths, so that the last column
/// pair is or is not whole), bands of one to a few rows on pools of 2, 3
/// and 7 threads, in both precisions, against the naive sum.
#[test]
fn deinterleaved_depthwise_planes_agree_with_naive() {
    use rand::RngExt;
    let mut rng = rng(16);
    for (case_index, threads) in (0..18).zip([2, 3, 7].into_iter().cycle()) {
        let channels = rng.random_range(1..=20);
        let case = random_stride2_depthwise_case(&mut rng, channels, (1..=2, 7..=30, 33..=60));
        check_on_pool::<f32>(&case, threads, 16_000 + case_index);
        check_on_pool::<f64>(&case, threads, 16_500 + case_index);
    }
}

/// Depthwise 3x3 layers at stride 2 on planes narrower than the
/// deinterleaved planes' tiles (1 to 15 output pixels a row, 1 to 5
/// rows), which run on masked vectors in NCHW where the CPU has AVX-512
/// (elsewhere through the pixel-major kernel): any padding on each side, 1
/// to 80 channels (at batch 1 from 64 on, the backward pass in blocks of
/// channels), bands on pools of 1 to 7 threads, both precisions; and the
/// gradients into views whose rows are not contiguous, from an input that
/// is not either, against the naive sum.
#[test]
fn narrow_stride2_depthwise_planes_agree_with_naive() {
    use gemmconv::ndarray::s;
    use gemmconv::{Conv2dSpec, GradientsMut, conv2d_backward_into};
    use rand::RngExt;
    let mut rng = rng(18);
    for (case_index, threads) in (0..24).zip([1, 2, 3, 7].into_iter().cycle()) {
        let channels = if case_index % 4 == 3 {
            rng.random_range(64..=80)
        } else {
            rng.random_range(1..=20)
        };
        let case = random_stride2_depthwise_case(&mut rng, channels, (1..=3, 3..=11, 3..=31));
        check_on_pool::<f32>(&case, threads, 18_000 + case_index);
        check_on_pool::<f64>(&case, threads, 18_500 + case_index);
    }
    for batch in [1, 2] {
        let spec = Conv2dSpec::new(64, 64, (3, 3))
            .groups(64)
            .stride((2, 2))
            .padding((1, 1));
        // An input of batch x 64 x 13 x 27 stored with its last axes
        // swapped: 14 output pixels a row.
        let x_buf = random_array4::<f64>(&mut rng, [batch, 64, 27, 13]);
        let x = x_buf.view().permuted_axes([0, 1, 3, 2]);
        let w = random_array4::<f64>(&mut rng, spec.weight_shape());
        let dy = random_array4::<f64>(
            &mut rng,
            spec.output_shape(x.shape().try_into().unwrap()).unwrap(),
        );
        let reference = conv2d_backward(x, w.view(), dy.view(), &spec, Algorithm::Naive).unwrap();
        let mut dx_buf = Array4::<f64>::zeros((batch, 64, 13, 54));
        let mut dw = Array4::<f64>::zeros(spec.weight_shape());
        let mut db = Array1::<f64>::zeros(64);
        on_direct_pool(2, |ws| {
            let grads = GradientsMut {
                dx: dx_buf.slice_mut(s![.., .., .., ..;2]),
                dw: dw.view_mut(),
                db: db.view_mut(),
            };
            conv2d_backward_into(x, w.view(), dy.view(), &spec, Algorithm::Strided, ws, grads)
                .unwrap();
        });
        let label = format!("narrow planes at stride 2, batch {batch}, strided views");
        let dx = dx_buf.slice(s![.., .., .., ..;2]).to_owned();
        assert_close(&dx, &reference.dx, &label);
        assert_close(&dw, &reference.dw, &label);
        assert_close(&db, &reference.db, &label);
    }
}

/// The deinterleaved planes read an input whose rows are not contiguous
/// (a view with its last axes swapped) and write an output that is not
/// either, against the naive sum.
#[test]
fn deinterleaved_planes_take_any_layout() {
    let mut rng = rng(17);
    let spec = gemmconv::Conv2dSpec::new(5, 5, (3, 3))
        .groups(5)
        .stride((2, 2))
        .padding((1, 1));
    // An input of 2x5x21x40, stored with its last axes swapped.
    let x_buf = random_array4::<f64>(&mut rng, [2, 5, 40, 21]);
    let x = x_buf.view().permuted_axes([0, 1, 3, 2]);
    let w = random_array4::<f64>(&mut rng, spec.weight_shape());
    let b = random_array1::<f64>(&mut rng, 5);
    let y_ref = conv2d(x, w.view(), Some(b.view()), &spec, Algorithm::Naive).unwrap();
    let mut ws = Workspace::new().with_kernel(Kernel::Direct);
    let y = forward_into_transposed(x, w.view(), b.view(), &spec, Algorithm::Strided, &mut ws);
    assert_close(
        &y,
        &y_ref,
        "deinterleaved planes, transposed input and output",
    );
}

/// Runs `f` with a workspace on the direct kernel, every pass cut into as
/// many lanes as a pool of `threads` threads has, inside that pool.
fn on_direct_pool(threads: usize, f: impl FnOnce(&mut Workspace<f64>) + Send) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut ws = Workspace::new()
            .with_kernel(Kernel::Direct)
            .with_min_lane_flops(0);
        f(&mut ws);
    });
}

/// The stencils of one output channel a group read an input whose rows
/// are not contiguous (a view with its last axes swapped) and overwrite a
/// stale output that is not contiguous either, in bands and whole samples,
/// against the naive sum: depthwise 3x3 and two input channels a group
/// at 5x5, rows of whole blocks of copied pixels and a shifted last block
/// (21 and 37 columns, blocks of 8), bands of at least a tile's rows.
#[test]
fn group_stencils_take_any_layout() {
    let mut rng = rng(19);
    let cases = [
        (Conv2dSpec::new(5, 5, (3, 3)).groups(5).padding((1, 1)), 37),
        (Conv2dSpec::new(6, 3, (5, 5)).groups(3).padding((2, 1)), 21),
    ];
    for (spec, width) in cases {
        for (batch, threads) in [(2, 1), (1, 3)] {
            let input = [batch, spec.in_channels(), 40, width];
            let [n, c, h, w] = input;
            let x_t = random_array4::<f64>(&mut rng, [n, c, w, h]);
            let x = x_t.view().permuted_axes([0, 1, 3, 2]);
            let w_arr = random_array4::<f64>(&mut rng, spec.weight_shape());
            let b = random_array1::<f64>(&mut rng, spec.out_channels());
            let y_ref = conv2d(x, w_arr.view(), Some(b.view()), &spec, Algorithm::Naive).unwrap();
            let [on, oc, oh, ow] = spec.output_shape(input).unwrap();
            let mut y_t = Array4::from_elem([on, oc, ow, oh], f64::NAN);
            on_direct_pool(threads, |ws| {
                let y = y_t.view_mut().permuted_axes([0, 1, 3, 2]);
                gemmconv::conv2d_into(
                    x,
                    w_arr.view(),
                    Some(b.view()),
                    &spec,
                    Algorithm::Strided,
                    ws,
                    y,
                )
                .unwrap();
            });
            let y = y_t.view().permuted_axes([0, 1, 3, 2]).to_owned();
            let label = format!("group stencils, {spec:?} on {input:?}, {threads} threads");
            assert_close(&y, &y_ref, &label);
        }
    }
}

/// The deinterleaved gradients overwrite a stale input gradient, its rows
/// that no window reaches included, from an error whose rows are not
/// contiguous into gradients that are not either, whole samples and bands
/// alike, against the naive sum.
#[test]
fn deinterleaved_gradients_overwrite_stale_outputs() {
    use gemmconv::conv2d_backward_into;
    let mut rng = rng(18);
    // 32 rows without padding: the last input row is in no window. One
    // sample of 70 channels is cut into blocks of channels, the others
    // into samples and bands.
    for (batch, channels, threads) in [(2, 3, 1), (1, 3, 3), (1, 70, 2)] {
        let spec = Conv2dSpec::new(channels, channels, (3, 3))
            .groups(channels)
            .stride((2, 2));
        let case = Case {
            spec: spec.clone(),
            input: [batch, channels, 32, 40],
        };
        let p = Problem::<f64>::new(&case, &mut rng);
        let dy_t = p.dy.view().permuted_axes([0, 1, 3, 2]).to_owned();
        let dy = dy_t.view().permuted_axes([0, 1, 3, 2]);
        let [n, c, h, w] = case.input;
        let mut dx_t = Array4::from_elem([n, c, w, h], f64::NAN);
        let mut g = Gradients {
            dx: Array4::from_elem(case.input, f64::NAN),
            dw: Array4::from_elem(spec.weight_shape(), f64::NAN),
            db: Array1::from_elem(channels, f64::NAN),
        };
        on_direct_pool(threads, |ws| {
            let (x, wv) = (p.x.view(), p.w.view());
            let grads = gemmconv::GradientsMut {
                dx: dx_t.view_mut().permuted_axes([0, 1, 3, 2]),
                dw: g.dw.view_mut(),
                db: g.db.view_mut(),
            };
            conv2d_backward_into(x, wv, dy, &spec, Algorithm::Strided, ws, grads).unwrap();
        });
        g.dx.assign(&dx_t.view().permuted_axes([0, 1, 3, 2]));
        let label = format!("deinterleaved gradients, {batch}x{channels}, {threads} threads");
        assert_close(&g.dx, &p.g_ref.dx, &format!("{label}: dx"));
        assert_close(&g.dw, &p.g_ref.dw, &format!("{label}: dw"));
        assert_close(&g.db, &p.g_ref.db, &format!("{label}: db"));
    }
}

/// Batch-1 samples large enough (over 2^18 elements) that the bands of a
/// backward pass add up over the pool's threads: depthwise at stride 1
/// (the stencils, whose bands compute only the rows they reach, with and
/// without padding) and 2 (the kernel across channels, whose bands write
/// some rows of the gradient), and a dense layer with few channels (the
/// register tiles, whose forward pass computes each band in pieces).
#[test]
fn large_banded_samples_agree_with_naive() {
    use gemmconv::Conv2dSpec;
    let depthwise = |stride| {
        Conv2dSpec::new(24, 24, (3, 3))
            .groups(24)
            .stride((stride, stride))
            .padding((1, 1))
    };
    let cases = [
        Case {
            spec: depthwise(1),
            input: [1, 24, 112, 104],
        },
        Case {
            spec: depthwise(2),
            input: [1, 24, 112, 104],
        },
        // No padding: the weight gradient's bands read the sample in place.
        Case {
            spec: Conv2dSpec::new(24, 24, (3, 3)).groups(24),
            input: [1, 24, 112, 104],
        },
        Case {
            spec: Conv2dSpec::new(2, 3, (3, 3)).padding((1, 1)),
            input: [1, 2, 400, 360],
        },
    ];
    for (index, case) in cases.iter().enumerate() {
        check_case::<f64>(case, 14_000 + index as u64);
        check_case::<f32>(case, 14_500 + index as u64);
    }
}

/// A random geometry the Winograd kernel applies to: a 3x3 kernel, stride
/// 1, one group; any dilation and padding (also beyond the kernel's reach),
/// odd and even output sizes, and channel counts on both sides of the
/// transforms' 16-channel blocks.
fn random_winograd_case(rng: &mut StdRng) -> Case {
    use gemmconv::{Conv2dSpec, Padding};
    use rand::RngExt;
    let dilation: (usize, usize) = (rng.random_range(1..=3), rng.random_range(1..=3));
    let padding = Padding {
        top: rng.random_range(0..=5),
        bottom: rng.random_range(0..=5),
        left: rng.random_range(0..=5),
        right: rng.random_range(0..=5),
    };
    let channels = |rng: &mut StdRng| match rng.random_range(0..3) {
        0 => rng.random_range(1..=4),
        _ => rng.random_range(14..=35),
    };
    let spec = Conv2dSpec::new(channels(rng), channels(rng), (3, 3))
        .padding(padding)
        .dilation(dilation)
        .bias(rng.random_bool(0.7));
    let min_h = (2 * dilation.0 + 1)
        .saturating_sub(padding.top + padding.bottom)
        .max(1);
    let min_w = (2 * dilation.1 + 1)
        .saturating_sub(padding.left + padding.right)
        .max(1);
    let input = [
        rng.random_range(1..=3),
        spec.in_channels(),
        rng.random_range(min_h..=min_h + 9),
        rng.random_range(min_w..=min_w + 9),
    ];
    Case { spec, input }
}

/// The Winograd kernel on the geometries it applies to, which the general
/// sweep draws rarely, in both precisions, with bands of every size and of
/// one tile, on pools of 1 to 4 threads (so that a sample's rows are cut
/// into bands of several sizes and places).
#[test]
fn winograd_kernel_agrees_with_naive() {
    let mut rng = rng(7);
    for case_index in 0..40 {
        let case = random_winograd_case(&mut rng);
        let threads = 1 + case_index as usize % 4;
        check_on_pool::<f64>(&case, threads, 7000 + case_index);
        check_on_pool::<f32>(&case, threads, 7500 + case_index);
    }
}

/// One workspace serves a sequence of different geometries, as it does for
/// a network's layers: whatever a kernel left in its scratch buffers (an
/// image's data where the next geometry has padding, say) must not leak
/// into the next results.
#[test]
fn one_workspace_across_geometries() {
    let configurations = [
        (Kernel::Auto, InputGradient::Auto),
        (Kernel::Shifted, InputGradient::Auto),
        (Kernel::Winograd, InputGradient::Auto),
        (Kernel::Winograd4x4, InputGradient::Auto),
        (Kernel::Gemm, InputGradient::Col2im),
        (Kernel::Gemm, InputGradient::ErrorLowering),
        (Kernel::Direct, InputGradient::Auto),
    ];
    for (kernel, method) in configurations {
        let mut rng = rng(6);
        let mut ws = Workspace::new()
            .with_kernel(kernel)
            .with_input_gradient(method);
        for case_index in 0..40 {
            let case = match case_index % 3 {
                0 => random_shifted_case(&mut rng),
                1 => random_winograd_case(&mut rng),
                _ => random_case(&mut rng),
            };
            let p = Problem::<f64>::new(&case, &mut rng);
            let label = format!("case {case_index}, {kernel:?}, {method:?}, {case:?}");
            p.check_strided(&case.spec, &mut ws, &label);
        }
    }
}

/// The `_into` functions overwrite every element of their outputs: buffers
/// full of NaN from an earlier step must not leak into the results, whatever
/// kernel runs (none of them may rely on zeroed outputs).
#[test]
fn into_overwrites_stale_outputs() {
    use gemmconv::{conv2d_backward_into, conv2d_into};
    let mut rng = rng(5);
    let configurations = [
        (Kernel::Gemm, InputGradient::Col2im),
        (Kernel::Gemm, InputGradient::ErrorLowering),
        (Kernel::Direct, InputGradient::Auto),
        (Kernel::Shifted, InputGradient::Auto),
        (Kernel::Winograd, InputGradient::Auto),
        (Kernel::Winograd4x4, InputGradient::Auto),
    ];
    for case_index in 0..40 {
        let case = if case_index % 2 == 0 {
            random_winograd_case(&mut rng)
        } else {
            random_case(&mut rng)
        };
        let spec = &case.spec;
        let out = spec.output_shape(case.input).unwrap();
        let p = Problem::<f64>::new(&case, &mut rng);
        for (kernel, method) in configurations {
            let label = format!("case {case_index}, {kernel:?}, {method:?}, {case:?}");
            let mut ws = Workspace::new()
                .with_kernel(kernel)
                .with_input_gradient(method);
            let mut y = Array4::from_elem(out, f64::NAN);
            let (x, w) = (p.x.view(), p.w.view());
            let strided = Algorithm::Strided;
            conv2d_into(x, w, p.bias(), spec, strided, &mut ws, y.view_mut()).unwrap();
            let mut g = Gradients {
                dx: Array4::from_elem(case.input, f64::NAN),
                dw: Array4::from_elem(spec.weight_shape(), f64::NAN),
                db: Array1::from_elem(spec.out_channels(), f64::NAN),
            };
            conv2d_backward_into(x, w, p.dy.view(), spec, strided, &mut ws, g.view_mut()).unwrap();
            p.assert_matches(&y, &g, &label);
        }
    }
}
