//! The functional API: `conv2d` and `conv2d_backward` on any ndarray views.

use crate::algo::Algorithm;
use crate::element::Element;
use crate::error::{ConvError, Operand};
use crate::gradients::{Gradients, GradientsMut};
use crate::output::zeroed;
use crate::plan::Plan;
use crate::spec::Conv2dSpec;
use crate::workspace::Workspace;
use ndarray::{Array1, Array4, ArrayView, ArrayView1, ArrayView4, ArrayViewMut4, Dimension, Ix4};

/// A view as rank 4, or the rank error naming `operand`.
pub(crate) fn rank4<'a, T, D: Dimension>(
    view: ArrayView<'a, T, D>,
    operand: Operand,
) -> Result<ArrayView4<'a, T>, ConvError> {
    if view.ndim() != 4 {
        return Err(ConvError::Rank {
            operand,
            expected: 4,
            got: view.ndim(),
            shape: view.shape().to_vec(),
        });
    }
    Ok(view
        .into_dimensionality::<Ix4>()
        .expect("rank checked above"))
}

pub(crate) fn expect_shape(
    operand: Operand,
    expected: &[usize],
    got: &[usize],
) -> Result<(), ConvError> {
    if expected == got {
        Ok(())
    } else {
        Err(ConvError::ShapeMismatch {
            operand,
            expected: expected.to_vec(),
            got: got.to_vec(),
        })
    }
}

pub(crate) fn check_bias<T>(
    bias: Option<&ArrayView1<'_, T>>,
    spec: &Conv2dSpec,
) -> Result<(), ConvError> {
    match bias {
        Some(_) if !spec.has_bias() => Err(ConvError::BiasPresence { expected: false }),
        None if spec.has_bias() => Err(ConvError::BiasPresence { expected: true }),
        Some(b) => expect_shape(Operand::Bias, &[spec.out_channels()], b.shape()),
        None => Ok(()),
    }
}

/// Validates the operands of a forward pass (ranks, shapes against the
/// spec, bias presence and length) and plans it under `ws`'s options.
#[allow(clippy::type_complexity)]
fn plan_forward<'a, T: Element, Dx: Dimension, Dw: Dimension>(
    (x, w, bias): (
        ArrayView<'a, T, Dx>,
        ArrayView<'a, T, Dw>,
        Option<&ArrayView1<'_, T>>,
    ),
    spec: &Conv2dSpec,
    algorithm: Algorithm,
    ws: &mut Workspace<T>,
) -> Result<(ArrayView4<'a, T>, ArrayView4<'a, T>, Plan), ConvError> {
    let x = rank4(x, Operand::Input)?;
    let w = rank4(w, Operand::Weight)?;
    let plan = Plan::new(spec, input_shape(&x), algorithm, ws)?;
    plan.check_input_and_weight(&x, &w)?;
    check_bias(bias, spec)?;
    Ok((x, w, plan))
}

/// Validates the operands of a backward pass and plans it under `ws`'s
/// options.
#[allow(clippy::type_complexity)]
fn plan_backward<'a, T: Element, Dx: Dimension, Dw: Dimension, Dy: Dimension>(
    (x, w, dy): (
        ArrayView<'a, T, Dx>,
        ArrayView<'a, T, Dw>,
        ArrayView<'a, T, Dy>,
    ),
    spec: &Conv2dSpec,
    algorithm: Algorithm,
    ws: &mut Workspace<T>,
) -> Result<
    (
        ArrayView4<'a, T>,
        ArrayView4<'a, T>,
        ArrayView4<'a, T>,
        Plan,
    ),
    ConvError,
> {
    let x = rank4(x, Operand::Input)?;
    let w = rank4(w, Operand::Weight)?;
    let dy = rank4(dy, Operand::OutputGradient)?;
    let plan = Plan::new(spec, input_shape(&x), algorithm, ws)?;
    plan.check_input_and_weight(&x, &w)?;
    expect_shape(
        Operand::OutputGradient,
        &plan.geometry.output_shape(),
        dy.shape(),
    )?;
    Ok((x, w, dy, plan))
}

/// The shape of a rank-4 view as an array.
pub(crate) fn input_shape<T>(x: &ArrayView4<'_, T>) -> [usize; 4] {
    let (n, c, h, w) = x.dim();
    [n, c, h, w]
}

/// The forward pass: `y = x ⋆ w + b`, PyTorch `Conv2d` semantics
/// (cross-correlation, NCHW, weight `[c_out, c_in/groups, kh, kw]`).
///
/// `x` and `w` may be views of any layout (sliced, transposed) and of any
/// dimension type; rank 4 is checked at run time. `bias` must be given
/// exactly when `spec.has_bias()`.
///
/// ```
/// use gemmconv::{conv2d, Algorithm, Conv2dSpec};
/// use gemmconv::ndarray::{Array1, Array4};
///
/// let spec = Conv2dSpec::new(1, 2, (2, 2));
/// let x = Array4::from_shape_fn((1, 1, 3, 3), |(_, _, h, w)| (3 * h + w) as f64);
/// let w = Array4::from_elem((2, 1, 2, 2), 1.0);
/// let b = Array1::from(vec![0.0, 10.0]);
/// let y = conv2d(x.view(), w.view(), Some(b.view()), &spec, Algorithm::Strided)?;
/// assert_eq!(y.shape(), &[1, 2, 2, 2]);
/// assert_eq!(y[[0, 0, 0, 0]], 0.0 + 1.0 + 3.0 + 4.0);
/// assert_eq!(y[[0, 1, 1, 1]], 4.0 + 5.0 + 7.0 + 8.0 + 10.0);
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
pub fn conv2d<T: Element, Dx: Dimension, Dw: Dimension>(
    x: ArrayView<'_, T, Dx>,
    w: ArrayView<'_, T, Dw>,
    bias: Option<ArrayView1<'_, T>>,
    spec: &Conv2dSpec,
    algorithm: Algorithm,
) -> Result<Array4<T>, ConvError> {
    conv2d_with_workspace(x, w, bias, spec, algorithm, &mut Workspace::new())
}

/// [`conv2d`] with caller-owned scratch memory, reused across calls.
///
/// ```
/// use gemmconv::{conv2d_with_workspace, Algorithm, Conv2dSpec, Workspace};
/// use gemmconv::ndarray::Array4;
///
/// let spec = Conv2dSpec::new(2, 4, (3, 3)).padding((1, 1)).bias(false);
/// let x = Array4::<f32>::ones((2, 2, 8, 8));
/// let w = Array4::<f32>::ones((4, 2, 3, 3));
/// let mut ws = Workspace::new();
/// let y = conv2d_with_workspace(x.view(), w.view(), None, &spec, Algorithm::Strided, &mut ws)?;
/// assert_eq!(y[[1, 3, 4, 4]], 18.0);
/// assert!(ws.allocated_bytes() > 0);
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
pub fn conv2d_with_workspace<T: Element, Dx: Dimension, Dw: Dimension>(
    x: ArrayView<'_, T, Dx>,
    w: ArrayView<'_, T, Dw>,
    bias: Option<ArrayView1<'_, T>>,
    spec: &Conv2dSpec,
    algorithm: Algorithm,
    workspace: &mut Workspace<T>,
) -> Result<Array4<T>, ConvError> {
    let (x, w, plan) = plan_forward((x, w, bias.as_ref()), spec, algorithm, workspace)?;
    let mut y = zeroed(plan.geometry.output_shape());
    plan.forward((x, w, bias), y.view_mut(), workspace);
    Ok(y)
}

/// [`conv2d`] writing into a caller-provided output `y` (any layout), with
/// caller-owned scratch memory: with a warm workspace, a call allocates
/// nothing.
///
/// ```
/// use gemmconv::{conv2d_into, Algorithm, Conv2dSpec, Workspace};
/// use gemmconv::ndarray::Array4;
///
/// let spec = Conv2dSpec::new(1, 1, (2, 2)).bias(false);
/// let x = Array4::<f64>::ones((1, 1, 3, 3));
/// let w = Array4::<f64>::ones((1, 1, 2, 2));
/// let mut y = Array4::<f64>::zeros((1, 1, 2, 2));
/// conv2d_into(x.view(), w.view(), None, &spec, Algorithm::Strided, &mut Workspace::new(), y.view_mut())?;
/// assert_eq!(y.sum(), 16.0);
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
pub fn conv2d_into<T: Element, Dx: Dimension, Dw: Dimension>(
    x: ArrayView<'_, T, Dx>,
    w: ArrayView<'_, T, Dw>,
    bias: Option<ArrayView1<'_, T>>,
    spec: &Conv2dSpec,
    algorithm: Algorithm,
    workspace: &mut Workspace<T>,
    y: ArrayViewMut4<'_, T>,
) -> Result<(), ConvError> {
    let (x, w, plan) = plan_forward((x, w, bias.as_ref()), spec, algorithm, workspace)?;
    expect_shape(Operand::Output, &plan.geometry.output_shape(), y.shape())?;
    plan.forward((x, w, bias), y, workspace);
    Ok(())
}

/// The backward pass: given `dy = ∂L/∂y` for `y = conv2d(x, w, b)`, returns
/// `∂L/∂x`, `∂L/∂w` and `∂L/∂b`. The bias does not enter the gradients, so it
/// is not an argument.
///
/// ```
/// use gemmconv::{conv2d_backward, Algorithm, Conv2dSpec};
/// use gemmconv::ndarray::Array4;
///
/// let spec = Conv2dSpec::new(1, 1, (2, 2));
/// let x = Array4::from_shape_fn((1, 1, 3, 3), |(_, _, h, w)| (3 * h + w + 1) as f64);
/// let w = Array4::from_shape_vec((1, 1, 2, 2), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
/// let dy = Array4::ones((1, 1, 2, 2));
/// let g = conv2d_backward(x.view(), w.view(), dy.view(), &spec, Algorithm::Strided)?;
/// assert_eq!(g.db[0], 4.0);
/// assert_eq!(g.dw.as_slice().unwrap(), &[12.0, 16.0, 24.0, 28.0]);
/// assert_eq!(g.dx[[0, 0, 1, 1]], 10.0);
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
pub fn conv2d_backward<T: Element, Dx: Dimension, Dw: Dimension, Dy: Dimension>(
    x: ArrayView<'_, T, Dx>,
    w: ArrayView<'_, T, Dw>,
    dy: ArrayView<'_, T, Dy>,
    spec: &Conv2dSpec,
    algorithm: Algorithm,
) -> Result<Gradients<T>, ConvError> {
    conv2d_backward_with_workspace(x, w, dy, spec, algorithm, &mut Workspace::new())
}

/// [`conv2d_backward`] with caller-owned scratch memory, reused across calls.
///
/// ```
/// use gemmconv::{conv2d_backward_with_workspace, Algorithm, Conv2dSpec, Workspace};
/// use gemmconv::ndarray::Array4;
///
/// let spec = Conv2dSpec::new(1, 1, (1, 1));
/// let x = Array4::<f32>::ones((2, 1, 2, 2));
/// let w = Array4::<f32>::from_elem((1, 1, 1, 1), 3.0);
/// let dy = Array4::<f32>::ones((2, 1, 2, 2));
/// let mut ws = Workspace::new();
/// let g = conv2d_backward_with_workspace(x.view(), w.view(), dy.view(), &spec, Algorithm::Strided, &mut ws)?;
/// assert_eq!(g.dw[[0, 0, 0, 0]], 8.0);
/// assert_eq!(g.dx[[1, 0, 1, 1]], 3.0);
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
pub fn conv2d_backward_with_workspace<T: Element, Dx: Dimension, Dw: Dimension, Dy: Dimension>(
    x: ArrayView<'_, T, Dx>,
    w: ArrayView<'_, T, Dw>,
    dy: ArrayView<'_, T, Dy>,
    spec: &Conv2dSpec,
    algorithm: Algorithm,
    workspace: &mut Workspace<T>,
) -> Result<Gradients<T>, ConvError> {
    let (x, w, dy, plan) = plan_backward((x, w, dy), spec, algorithm, workspace)?;
    let g = &plan.geometry;
    let mut grads = Gradients {
        dx: zeroed(g.input_shape()),
        dw: Array4::zeros(g.weight_shape()),
        db: Array1::zeros(g.out_channels),
    };
    plan.backward((x, w, dy), grads.view_mut(), workspace);
    Ok(grads)
}

/// [`conv2d_backward`] writing into caller-provided gradients (any layout),
/// with caller-owned scratch memory: with a warm workspace, a call allocates
/// nothing. The gradients are overwritten, not accumulated.
///
/// ```
/// use gemmconv::{conv2d_backward_into, Algorithm, Conv2dSpec, Gradients, Workspace};
/// use gemmconv::ndarray::{Array1, Array4};
///
/// let spec = Conv2dSpec::new(1, 1, (1, 1));
/// let x = Array4::<f32>::ones((2, 1, 2, 2));
/// let w = Array4::<f32>::from_elem((1, 1, 1, 1), 3.0);
/// let dy = Array4::<f32>::ones((2, 1, 2, 2));
/// let mut g = Gradients { dx: Array4::zeros((2, 1, 2, 2)), dw: Array4::zeros((1, 1, 1, 1)), db: Array1::zeros(1) };
/// let mut ws = Workspace::new();
/// conv2d_backward_into(x.view(), w.view(), dy.view(), &spec, Algorithm::Strided, &mut ws, g.view_mut())?;
/// assert_eq!((g.dw[[0, 0, 0, 0]], g.db[0], g.dx[[1, 0, 1, 1]]), (8.0, 8.0, 3.0));
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
pub fn conv2d_backward_into<T: Element, Dx: Dimension, Dw: Dimension, Dy: Dimension>(
    x: ArrayView<'_, T, Dx>,
    w: ArrayView<'_, T, Dw>,
    dy: ArrayView<'_, T, Dy>,
    spec: &Conv2dSpec,
    algorithm: Algorithm,
    workspace: &mut Workspace<T>,
    out: GradientsMut<'_, T>,
) -> Result<(), ConvError> {
    let (x, w, dy, plan) = plan_backward((x, w, dy), spec, algorithm, workspace)?;
    plan.check_gradients(&out)?;
    plan.backward((x, w, dy), out, workspace);
    Ok(())
}
