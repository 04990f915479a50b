//! One test per `ConvError` variant, and non-contiguous views.

mod common;

use common::{assert_close, random_array1, random_array4, rng};
use gemmconv::ndarray::{Array1, Array4, ArrayD, IxDyn, s};
use gemmconv::{
    Algorithm, Conv2d, Conv2dSpec, ConvError, InputGradient, Kernel, Operand, Workspace, conv2d,
    conv2d_backward, conv2d_backward_with_workspace, conv2d_with_workspace,
};

fn zeros(shape: [usize; 4]) -> Array4<f32> {
    Array4::zeros(shape)
}

#[test]
fn wrong_rank() {
    let spec = Conv2dSpec::new(1, 1, (1, 1)).bias(false);
    let x = ArrayD::<f32>::zeros(IxDyn(&[1, 4, 4]));
    let err = conv2d(
        x.view(),
        zeros([1, 1, 1, 1]).view(),
        None,
        &spec,
        Algorithm::Strided,
    )
    .unwrap_err();
    assert_eq!(
        err,
        ConvError::Rank {
            operand: Operand::Input,
            expected: 4,
            got: 3,
            shape: vec![1, 4, 4]
        }
    );
    assert_eq!(
        err.to_string(),
        "input: expected a rank-4 array, got rank 3 (shape [1, 4, 4])"
    );
}

#[test]
fn wrong_channel_count() {
    let spec = Conv2dSpec::new(3, 2, (1, 1)).bias(false);
    let err = conv2d(
        zeros([1, 2, 4, 4]).view(),
        zeros([2, 3, 1, 1]).view(),
        None,
        &spec,
        Algorithm::Naive,
    )
    .unwrap_err();
    assert_eq!(
        err,
        ConvError::ChannelMismatch {
            operand: Operand::Input,
            expected: 3,
            got: 2
        }
    );
}

#[test]
fn wrong_weight_bias_and_gradient_shapes() {
    let spec = Conv2dSpec::new(2, 4, (3, 3));
    let x = zeros([1, 2, 5, 5]);
    let b = Array1::<f32>::zeros(4);
    let err = conv2d(
        x.view(),
        zeros([4, 2, 3, 2]).view(),
        Some(b.view()),
        &spec,
        Algorithm::Strided,
    )
    .unwrap_err();
    assert_eq!(
        err,
        ConvError::ShapeMismatch {
            operand: Operand::Weight,
            expected: vec![4, 2, 3, 3],
            got: vec![4, 2, 3, 2]
        }
    );
    let w = zeros([4, 2, 3, 3]);
    let short = Array1::<f32>::zeros(3);
    let err = conv2d(
        x.view(),
        w.view(),
        Some(short.view()),
        &spec,
        Algorithm::Strided,
    )
    .unwrap_err();
    assert_eq!(
        err,
        ConvError::ShapeMismatch {
            operand: Operand::Bias,
            expected: vec![4],
            got: vec![3]
        }
    );
    let err = conv2d_backward(
        x.view(),
        w.view(),
        zeros([1, 4, 3, 4]).view(),
        &spec,
        Algorithm::Strided,
    )
    .unwrap_err();
    assert_eq!(
        err,
        ConvError::ShapeMismatch {
            operand: Operand::OutputGradient,
            expected: vec![1, 4, 3, 3],
            got: vec![1, 4, 3, 4]
        }
    );
}

#[test]
fn zero_parameters() {
    let x = zeros([1, 1, 4, 4]);
    let w = zeros([1, 1, 1, 1]);
    let cases = [
        (
            Conv2dSpec::new(1, 1, (1, 1)).stride((1, 0)),
            "stride (width)",
        ),
        (
            Conv2dSpec::new(1, 1, (1, 1)).dilation((0, 1)),
            "dilation (height)",
        ),
        (Conv2dSpec::new(1, 1, (1, 1)).groups(0), "groups"),
        (Conv2dSpec::new(1, 1, (0, 1)), "kernel (height)"),
        (Conv2dSpec::new(0, 1, (1, 1)), "in_channels"),
    ];
    for (spec, parameter) in cases {
        let spec = spec.bias(false);
        let err = conv2d(x.view(), w.view(), None, &spec, Algorithm::Strided).unwrap_err();
        assert_eq!(err, ConvError::ZeroParameter { parameter });
    }
}

#[test]
fn groups_that_do_not_divide() {
    let spec = Conv2dSpec::new(4, 6, (1, 1)).groups(4).bias(false);
    let err = conv2d(
        zeros([1, 4, 2, 2]).view(),
        zeros([6, 1, 1, 1]).view(),
        None,
        &spec,
        Algorithm::Strided,
    )
    .unwrap_err();
    assert_eq!(
        err,
        ConvError::GroupsDoNotDivide {
            groups: 4,
            in_channels: 4,
            out_channels: 6
        }
    );
    assert!(err.to_string().contains("groups = 4"));
}

#[test]
fn kernel_larger_than_padded_input() {
    let spec = Conv2dSpec::new(1, 1, (3, 3))
        .dilation((1, 2))
        .padding((0, 1))
        .bias(false);
    let err = conv2d(
        zeros([1, 1, 5, 2]).view(),
        zeros([1, 1, 3, 3]).view(),
        None,
        &spec,
        Algorithm::Strided,
    )
    .unwrap_err();
    assert_eq!(
        err,
        ConvError::KernelLargerThanInput {
            axis: "width",
            kernel_extent: 5,
            padded_input: 4
        }
    );
}

#[test]
fn sizes_that_overflow() {
    // A kernel whose dilated extent overflows usize.
    let spec = Conv2dSpec::new(1, 1, (3, 1)).dilation((usize::MAX / 2 + 1, 1));
    assert!(matches!(
        spec.output_shape([1, 1, 4, 4]),
        Err(ConvError::SizeOverflow { .. })
    ));
    // Shapes whose column matrix would not fit in memory addressing.
    let spec = Conv2dSpec::new(1 << 20, 1, (1 << 10, 1 << 10)).padding((1 << 10, 1 << 10));
    let err = spec.output_shape([1 << 20, 1 << 20, 1, 1]).unwrap_err();
    assert!(matches!(err, ConvError::SizeOverflow { .. }), "{err:?}");
}

#[test]
fn bias_presence_must_match_the_spec() {
    let x = zeros([1, 1, 2, 2]);
    let w = zeros([1, 1, 1, 1]);
    let b = Array1::<f32>::zeros(1);
    let with = Conv2dSpec::new(1, 1, (1, 1));
    let err = conv2d(x.view(), w.view(), None, &with, Algorithm::Strided).unwrap_err();
    assert_eq!(err, ConvError::BiasPresence { expected: true });
    let without = with.bias(false);
    let err = conv2d(
        x.view(),
        w.view(),
        Some(b.view()),
        &without,
        Algorithm::Strided,
    )
    .unwrap_err();
    assert_eq!(err, ConvError::BiasPresence { expected: false });
}

#[test]
fn backward_before_forward() {
    let spec = Conv2dSpec::new(1, 1, (1, 1)).bias(false);
    let mut layer = Conv2d::from_weights(spec, zeros([1, 1, 1, 1]), None).unwrap();
    assert_eq!(
        layer.backward(zeros([1, 1, 2, 2]).view()),
        Err(ConvError::BackwardBeforeForward)
    );
}

#[test]
fn layer_rejects_an_input_of_the_wrong_shape() {
    let spec = Conv2dSpec::new(2, 1, (3, 3)).bias(false);
    let mut layer = Conv2d::from_weights(spec, zeros([1, 2, 3, 3]), None).unwrap();
    assert!(matches!(
        layer.forward(zeros([1, 3, 5, 5]).view()),
        Err(ConvError::ChannelMismatch { .. })
    ));
    layer.forward(zeros([1, 2, 5, 5]).view()).unwrap();
    assert!(matches!(
        layer.backward(zeros([1, 1, 2, 3]).view()),
        Err(ConvError::ShapeMismatch { .. })
    ));
}

#[test]
fn empty_batch_gives_empty_results() {
    let spec = Conv2dSpec::new(2, 3, (3, 3)).padding((1, 1));
    let b = Array1::<f32>::zeros(3);
    for algo in Algorithm::ALL {
        let y = conv2d(
            zeros([0, 2, 4, 4]).view(),
            zeros([3, 2, 3, 3]).view(),
            Some(b.view()),
            &spec,
            algo,
        )
        .unwrap();
        assert_eq!(y.shape(), &[0, 3, 4, 4]);
        let g = conv2d_backward(
            zeros([0, 2, 4, 4]).view(),
            zeros([3, 2, 3, 3]).view(),
            y.view(),
            &spec,
            algo,
        )
        .unwrap();
        assert_eq!(g.dw, zeros([3, 2, 3, 3]));
    }
}

/// Sliced, transposed and reversed views give the same results as their
/// contiguous copies, for every algorithm.
#[test]
fn non_contiguous_views() {
    // A strided geometry (the column matrix) and a 3x3 stride-1 one (which
    // the shifted and Winograd kernels take).
    check_views(
        Conv2dSpec::new(3, 4, (3, 2)).stride((2, 1)).padding((1, 0)),
        9,
    );
    check_views(Conv2dSpec::new(3, 4, (3, 3)).padding((1, 1)), 9);
    // More output channels than the direct kernel's register tiles take:
    // its tiles of output channels in vectors, where the CPU runs them.
    check_views(Conv2dSpec::new(3, 20, (3, 3)).padding((1, 1)), 9);
    // And more input channels, on enough pixels that the input gradient
    // runs on them too, the weights turned as they are laid out.
    check_views(Conv2dSpec::new(20, 18, (3, 3)).padding((1, 1)), 18);
}

/// Checks `spec` on two samples of `rows` rows by `rows - 2` columns
/// (every other column of a wider image).
fn check_views(spec: Conv2dSpec, rows: usize) {
    let mut rng = rng(77);
    let c_in = spec.in_channels();
    // x: an NHWC buffer seen as NCHW (transposed), then every other column.
    let nhwc = random_array4::<f64>(&mut rng, [2, rows, 2 * rows - 4, c_in]);
    let x = nhwc.view().permuted_axes([0, 3, 1, 2]);
    let x = x.slice(s![.., .., .., ..;2]);
    // w: reversed along the output-channel and column axes.
    let [o, c, kh, kw] = spec.weight_shape();
    let w_buf = random_array4::<f64>(&mut rng, [o, c, kh, kw]);
    let w = w_buf.slice(s![..;-1, .., .., ..;-1]);
    // b: every other element of a longer vector.
    let b_buf = random_array1::<f64>(&mut rng, 2 * o);
    let b = b_buf.slice(s![..;2]);
    assert!(!x.is_standard_layout() && !w.is_standard_layout());
    let (xc, wc, bc) = (x.to_owned(), w.to_owned(), b.to_owned());
    let out_shape = spec.output_shape([2, c_in, rows, rows - 2]).unwrap();
    // dy: an (n, c, w, h) buffer with its last two axes swapped.
    let dy_buf = random_array4::<f64>(
        &mut rng,
        [out_shape[0], out_shape[1], out_shape[3], out_shape[2]],
    );
    let dy_view = dy_buf.view().permuted_axes([0, 1, 3, 2]);
    assert!(!dy_view.is_standard_layout());
    let dyc = dy_view.to_owned();

    let y_ref = conv2d(
        xc.view(),
        wc.view(),
        Some(bc.view()),
        &spec,
        Algorithm::Naive,
    )
    .unwrap();
    let g_ref = conv2d_backward(xc.view(), wc.view(), dyc.view(), &spec, Algorithm::Naive).unwrap();
    for algo in Algorithm::ALL {
        let y = conv2d(x, w, Some(b), &spec, algo).unwrap();
        assert_close(&y, &y_ref, &format!("{algo:?} forward on views"));
        let g = conv2d_backward(x, w, dy_view, &spec, algo).unwrap();
        assert_close(&g.dx, &g_ref.dx, &format!("{algo:?} dx on views"));
        assert_close(&g.dw, &g_ref.dw, &format!("{algo:?} dw on views"));
        assert_close(&g.db, &g_ref.db, &format!("{algo:?} db on views"));
    }
    // The strided algorithm's kernels and input-gradient methods, each of
    // which reads the operands its own way (the direct kernel reads error
    // planes in place when it can).
    for kernel in [
        Kernel::Gemm,
        Kernel::Direct,
        Kernel::Shifted,
        Kernel::Winograd,
        Kernel::Winograd4x4,
    ] {
        for method in [InputGradient::Col2im, InputGradient::ErrorLowering] {
            let label = format!("strided ({kernel:?}, {method:?}) on views");
            let mut ws = Workspace::new()
                .with_kernel(kernel)
                .with_input_gradient(method);
            let y =
                conv2d_with_workspace(x, w, Some(b), &spec, Algorithm::Strided, &mut ws).unwrap();
            assert_close(&y, &y_ref, &format!("{label}: forward"));
            let g =
                conv2d_backward_with_workspace(x, w, dy_view, &spec, Algorithm::Strided, &mut ws)
                    .unwrap();
            assert_close(&g.dx, &g_ref.dx, &format!("{label}: dx"));
            assert_close(&g.dw, &g_ref.dw, &format!("{label}: dw"));
            assert_close(&g.db, &g_ref.db, &format!("{label}: db"));
        }
    }
}
