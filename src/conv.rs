//! The functional API of 2-D convolution: `conv2d` and `conv2d_backward`
//! on any ndarray views.

use crate::algo::Algorithm;
use crate::element::Element;
use crate::error::ConvError;
use crate::gradients::{
    GradientSelection, Gradients, GradientsMut, SelectedGradients, SelectedGradientsMut,
};
use crate::operation;
use crate::spec::Conv2dSpec;
use crate::thread_workspace::with_thread_workspace;
use crate::workspace::Workspace;
use ndarray::{Array4, ArrayView, ArrayView1, ArrayViewMut4, Dimension};

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
    with_thread_workspace(|ws| conv2d_with_workspace(x, w, bias, spec, algorithm, ws))
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
    let y = operation::forward(spec, (x, w, bias), algorithm, workspace, None)?;
    Ok(y.expect("no output given, so one is made"))
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
    operation::forward(spec, (x, w, bias), algorithm, workspace, Some(y))?;
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
    with_thread_workspace(|ws| conv2d_backward_with_workspace(x, w, dy, spec, algorithm, ws))
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
    let g = operation::backward(
        spec,
        (x, w, dy),
        algorithm,
        workspace,
        GradientSelection::ALL,
    )?;
    Ok(Gradients {
        dx: g.dx.expect("selected"),
        dw: g.dw.expect("selected"),
        db: g.db.expect("selected"),
    })
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
    operation::backward_into(spec, (x, w, dy), algorithm, workspace, out.into())
}

/// [`conv2d_backward`] for the gradients `selection` names only: the work
/// for the others is skipped (the first layer of a network needs no input
/// gradient, a frozen layer no weight gradient).
///
/// ```
/// use gemmconv::{conv2d_backward, conv2d_backward_selected, Algorithm, Conv2dSpec, GradientSelection};
/// use gemmconv::ndarray::Array4;
/// let spec = Conv2dSpec::new(2, 3, (3, 3)).stride((2, 2));
/// let x = Array4::<f64>::from_shape_fn((2, 2, 7, 7), |(n, c, h, w)| (n + c + h * w) as f64);
/// let w = Array4::<f64>::from_elem((3, 2, 3, 3), 0.5);
/// let dy = Array4::<f64>::ones((2, 3, 3, 3));
/// let all = conv2d_backward(x.view(), w.view(), dy.view(), &spec, Algorithm::Strided)?;
/// let some = conv2d_backward_selected(x.view(), w.view(), dy.view(), &spec, Algorithm::Strided, GradientSelection::INPUT)?;
/// assert_eq!(some.dx.as_ref(), Some(&all.dx));
/// assert!(some.dw.is_none() && some.db.is_none());
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
pub fn conv2d_backward_selected<T: Element, Dx: Dimension, Dw: Dimension, Dy: Dimension>(
    x: ArrayView<'_, T, Dx>,
    w: ArrayView<'_, T, Dw>,
    dy: ArrayView<'_, T, Dy>,
    spec: &Conv2dSpec,
    algorithm: Algorithm,
    selection: GradientSelection,
) -> Result<SelectedGradients<T>, ConvError> {
    with_thread_workspace(|ws| operation::backward(spec, (x, w, dy), algorithm, ws, selection))
}

/// [`conv2d_backward_selected`] writing into the caller's arrays (any
/// layout), with caller-owned scratch memory: the gradients given are
/// overwritten, the others not computed.
///
/// ```
/// use gemmconv::{conv2d_backward_selected_into, Algorithm, Conv2dSpec, SelectedGradientsMut, Workspace};
/// use gemmconv::ndarray::{Array1, Array4};
/// let spec = Conv2dSpec::new(1, 1, (1, 1));
/// let x = Array4::<f32>::ones((2, 1, 2, 2));
/// let w = Array4::<f32>::from_elem((1, 1, 1, 1), 3.0);
/// let (mut dw, mut db) = (Array4::<f32>::zeros((1, 1, 1, 1)), Array1::<f32>::zeros(1));
/// let out = SelectedGradientsMut { dx: None, dw: Some(dw.view_mut()), db: Some(db.view_mut()) };
/// conv2d_backward_selected_into(x.view(), w.view(), x.view(), &spec, Algorithm::Strided, &mut Workspace::new(), out)?;
/// assert_eq!((dw[[0, 0, 0, 0]], db[0]), (8.0, 8.0));
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
pub fn conv2d_backward_selected_into<T: Element, Dx: Dimension, Dw: Dimension, Dy: Dimension>(
    x: ArrayView<'_, T, Dx>,
    w: ArrayView<'_, T, Dw>,
    dy: ArrayView<'_, T, Dy>,
    spec: &Conv2dSpec,
    algorithm: Algorithm,
    workspace: &mut Workspace<T>,
    out: SelectedGradientsMut<'_, T>,
) -> Result<(), ConvError> {
    operation::backward_into(spec, (x, w, dy), algorithm, workspace, out)
}
