//! The functional API of 1-D convolution: `conv1d` and its backward pass
//! on any ndarray views, as 2-D convolutions of images one row high.

use crate::algo::Algorithm;
use crate::conv1d_spec::Conv1dSpec;
use crate::element::Element;
use crate::error::ConvError;
use crate::gradients::{GradientSelection, Gradients, SelectedGradients, SelectedGradientsMut};
use crate::operation;
use crate::thread_workspace::with_thread_workspace;
use crate::workspace::Workspace;
use ndarray::{Array3, ArrayView, ArrayView1, ArrayViewMut3, Dimension, Ix3};

/// The forward pass of a 1-D convolution, PyTorch `F.conv1d` semantics:
/// input `[n, c_in, l]`, weight `[c_out, c_in / groups, k]`, output `[n,
/// c_out, lo]`. Runs on the 2-D kernels with images one row high, with no
/// copy. `bias` must be given exactly when `spec.has_bias()`.
///
/// ```
/// use gemmconv::{conv1d, Algorithm, Conv1dSpec};
/// use gemmconv::ndarray::{Array1, Array3};
/// let spec = Conv1dSpec::new(1, 1, 2);
/// let x = Array3::from_shape_vec((1, 1, 4), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
/// let w = Array3::from_shape_vec((1, 1, 2), vec![1.0, -1.0]).unwrap();
/// let y = conv1d(x.view(), w.view(), Some(Array1::from(vec![10.0]).view()), &spec, Algorithm::Strided)?;
/// assert_eq!(y.into_raw_vec_and_offset().0, [9.0, 9.0, 9.0]);
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
pub fn conv1d<T: Element, Dx: Dimension, Dw: Dimension>(
    x: ArrayView<'_, T, Dx>,
    w: ArrayView<'_, T, Dw>,
    bias: Option<ArrayView1<'_, T>>,
    spec: &Conv1dSpec,
    algorithm: Algorithm,
) -> Result<Array3<T>, ConvError> {
    let y =
        with_thread_workspace(|ws| operation::forward(spec, (x, w, bias), algorithm, ws, None))?;
    Ok(y.expect("no output given, so one is made"))
}

/// [`conv1d`] into `y` (any layout), which it overwrites, with
/// caller-owned scratch memory.
///
/// ```
/// use gemmconv::{conv1d_into, Algorithm, Conv1dSpec, Workspace};
/// use gemmconv::ndarray::Array3;
/// let spec = Conv1dSpec::new(2, 1, 3).padding(1).bias(false);
/// let mut y = Array3::<f32>::zeros((1, 1, 5));
/// conv1d_into(Array3::ones((1, 2, 5)).view(), Array3::ones((1, 2, 3)).view(), None, &spec, Algorithm::Strided, &mut Workspace::new(), y.view_mut())?;
/// assert_eq!(y.into_raw_vec_and_offset().0, [4.0, 6.0, 6.0, 6.0, 4.0]);
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
pub fn conv1d_into<T: Element, Dx: Dimension, Dw: Dimension>(
    x: ArrayView<'_, T, Dx>,
    w: ArrayView<'_, T, Dw>,
    bias: Option<ArrayView1<'_, T>>,
    spec: &Conv1dSpec,
    algorithm: Algorithm,
    workspace: &mut Workspace<T>,
    y: ArrayViewMut3<'_, T>,
) -> Result<(), ConvError> {
    operation::forward(spec, (x, w, bias), algorithm, workspace, Some(y))?;
    Ok(())
}

/// The backward pass of [`conv1d`]: given `dy = ∂L/∂y`, returns `∂L/∂x`,
/// `∂L/∂w` (both rank 3) and `∂L/∂b`.
///
/// ```
/// use gemmconv::{conv1d_backward, Algorithm, Conv1dSpec};
/// use gemmconv::ndarray::Array3;
/// let spec = Conv1dSpec::new(1, 1, 2);
/// let x = Array3::from_shape_vec((1, 1, 3), vec![1.0, 2.0, 3.0]).unwrap();
/// let w = Array3::from_shape_vec((1, 1, 2), vec![1.0, -1.0]).unwrap();
/// let g = conv1d_backward(x.view(), w.view(), Array3::ones((1, 1, 2)).view(), &spec, Algorithm::Strided)?;
/// assert_eq!(g.dw.into_raw_vec_and_offset().0, [3.0, 5.0]);
/// assert_eq!(g.dx.into_raw_vec_and_offset().0, [1.0, 0.0, -1.0]);
/// assert_eq!(g.db[0], 2.0);
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
pub fn conv1d_backward<T: Element, Dx: Dimension, Dw: Dimension, Dy: Dimension>(
    x: ArrayView<'_, T, Dx>,
    w: ArrayView<'_, T, Dw>,
    dy: ArrayView<'_, T, Dy>,
    spec: &Conv1dSpec,
    algorithm: Algorithm,
) -> Result<Gradients<T, Ix3>, ConvError> {
    let g = conv1d_backward_selected(x, w, dy, spec, algorithm, GradientSelection::ALL)?;
    Ok(Gradients {
        dx: g.dx.expect("selected"),
        dw: g.dw.expect("selected"),
        db: g.db.expect("selected"),
    })
}

/// [`conv1d_backward`] for the gradients `selection` names only.
///
/// ```
/// use gemmconv::{conv1d_backward_selected, Algorithm, Conv1dSpec, GradientSelection};
/// use gemmconv::ndarray::Array3;
/// let spec = Conv1dSpec::new(1, 1, 2);
/// let (x, w, dy) = (Array3::<f64>::ones((1, 1, 3)), Array3::<f64>::ones((1, 1, 2)), Array3::<f64>::ones((1, 1, 2)));
/// let g = conv1d_backward_selected(x.view(), w.view(), dy.view(), &spec, Algorithm::Strided, GradientSelection::PARAMETERS)?;
/// assert!(g.dx.is_none());
/// assert_eq!(g.db.unwrap()[0], 2.0);
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
pub fn conv1d_backward_selected<T: Element, Dx: Dimension, Dw: Dimension, Dy: Dimension>(
    x: ArrayView<'_, T, Dx>,
    w: ArrayView<'_, T, Dw>,
    dy: ArrayView<'_, T, Dy>,
    spec: &Conv1dSpec,
    algorithm: Algorithm,
    selection: GradientSelection,
) -> Result<SelectedGradients<T, Ix3>, ConvError> {
    with_thread_workspace(|ws| operation::backward(spec, (x, w, dy), algorithm, ws, selection))
}

/// [`conv1d_backward`] into the caller's arrays (any layout), with
/// caller-owned scratch memory: a [`GradientsMut`](crate::GradientsMut) of
/// rank 3 for all three gradients, or a [`SelectedGradientsMut`] for some.
///
/// ```
/// use gemmconv::{conv1d_backward_into, Algorithm, Conv1dSpec, SelectedGradientsMut, Workspace};
/// use gemmconv::ndarray::Array3;
/// let spec = Conv1dSpec::new(1, 1, 1).bias(false);
/// let mut dx = Array3::<f32>::zeros((1, 1, 3));
/// let out = SelectedGradientsMut { dx: Some(dx.view_mut()), dw: None, db: None };
/// let (x, w) = (Array3::<f32>::ones((1, 1, 3)), Array3::<f32>::from_elem((1, 1, 1), 2.0));
/// conv1d_backward_into(x.view(), w.view(), x.view(), &spec, Algorithm::Strided, &mut Workspace::new(), out)?;
/// assert_eq!(dx.into_raw_vec_and_offset().0, [2.0, 2.0, 2.0]);
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
pub fn conv1d_backward_into<'o, T: Element, Dx: Dimension, Dw: Dimension, Dy: Dimension>(
    x: ArrayView<'_, T, Dx>,
    w: ArrayView<'_, T, Dw>,
    dy: ArrayView<'_, T, Dy>,
    spec: &Conv1dSpec,
    algorithm: Algorithm,
    workspace: &mut Workspace<T>,
    out: impl Into<SelectedGradientsMut<'o, T, Ix3>>,
) -> Result<(), ConvError> {
    operation::backward_into(spec, (x, w, dy), algorithm, workspace, out.into())
}
