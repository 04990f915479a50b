//! The functional API of 2-D transposed convolution: `conv_transpose2d`
//! and its backward pass on any ndarray views.

use crate::algo::Algorithm;
use crate::element::Element;
use crate::error::ConvError;
use crate::gradients::{GradientSelection, Gradients, SelectedGradients, SelectedGradientsMut};
use crate::operation;
use crate::thread_workspace::with_thread_workspace;
use crate::transposed_spec::ConvTranspose2dSpec;
use crate::workspace::Workspace;
use ndarray::{Array4, ArrayView, ArrayView1, ArrayViewMut4, Dimension};

/// The forward pass of a transposed convolution, PyTorch
/// `F.conv_transpose2d` semantics: input `[n, c_in, h, w]`, weight `[c_in,
/// c_out / groups, kh, kw]`, output `[n, c_out, ho, wo]`. Each input pixel
/// scatters its kernel-weighted values onto the output: the input gradient
/// of the convolution [`ConvTranspose2dSpec::conv_spec`], computed by the
/// same kernels. `bias` must be given exactly when `spec.has_bias()`.
///
/// ```
/// use gemmconv::{conv_transpose2d, Algorithm, ConvTranspose2dSpec};
/// use gemmconv::ndarray::{Array1, Array4};
/// // One pixel scattered through a 2x2 kernel at stride 2.
/// let spec = ConvTranspose2dSpec::new(1, 1, (2, 2)).stride((2, 2));
/// let x = Array4::from_shape_vec((1, 1, 1, 2), vec![1.0, 10.0]).unwrap();
/// let w = Array4::from_shape_vec((1, 1, 2, 2), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
/// let y = conv_transpose2d(x.view(), w.view(), Some(Array1::from(vec![0.5]).view()), &spec, Algorithm::Strided)?;
/// assert_eq!(y.shape(), &[1, 1, 2, 4]);
/// assert_eq!(y.into_raw_vec_and_offset().0, [1.5, 2.5, 10.5, 20.5, 3.5, 4.5, 30.5, 40.5]);
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
pub fn conv_transpose2d<T: Element, Dx: Dimension, Dw: Dimension>(
    x: ArrayView<'_, T, Dx>,
    w: ArrayView<'_, T, Dw>,
    bias: Option<ArrayView1<'_, T>>,
    spec: &ConvTranspose2dSpec,
    algorithm: Algorithm,
) -> Result<Array4<T>, ConvError> {
    let y =
        with_thread_workspace(|ws| operation::forward(spec, (x, w, bias), algorithm, ws, None))?;
    Ok(y.expect("no output given, so one is made"))
}

/// [`conv_transpose2d`] into `y` (any layout), which it overwrites, with
/// caller-owned scratch memory.
///
/// ```
/// use gemmconv::{conv_transpose2d_into, Algorithm, ConvTranspose2dSpec, Workspace};
/// use gemmconv::ndarray::Array4;
/// let spec = ConvTranspose2dSpec::new(2, 1, (3, 3)).bias(false);
/// let mut y = Array4::<f32>::zeros((1, 1, 4, 4));
/// let (x, w) = (Array4::ones((1, 2, 2, 2)), Array4::ones((2, 1, 3, 3)));
/// conv_transpose2d_into(x.view(), w.view(), None, &spec, Algorithm::Strided, &mut Workspace::new(), y.view_mut())?;
/// assert_eq!((y[[0, 0, 0, 0]], y[[0, 0, 1, 1]]), (2.0, 8.0));
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
pub fn conv_transpose2d_into<T: Element, Dx: Dimension, Dw: Dimension>(
    x: ArrayView<'_, T, Dx>,
    w: ArrayView<'_, T, Dw>,
    bias: Option<ArrayView1<'_, T>>,
    spec: &ConvTranspose2dSpec,
    algorithm: Algorithm,
    workspace: &mut Workspace<T>,
    y: ArrayViewMut4<'_, T>,
) -> Result<(), ConvError> {
    operation::forward(spec, (x, w, bias), algorithm, workspace, Some(y))?;
    Ok(())
}

/// The backward pass of [`conv_transpose2d`]: given `dy = ∂L/∂y`, returns
/// `∂L/∂x` (the convolution of `dy`), `∂L/∂w` and `∂L/∂b`, shaped like
/// `x`, `w` and the bias.
///
/// ```
/// use gemmconv::{conv_transpose2d_backward, Algorithm, ConvTranspose2dSpec};
/// use gemmconv::ndarray::Array4;
/// let spec = ConvTranspose2dSpec::new(3, 2, (3, 3)).stride((2, 2)).padding((1, 1)).output_padding((1, 1));
/// let x = Array4::<f64>::ones((2, 3, 5, 5));
/// let w = Array4::<f64>::ones((3, 2, 3, 3));
/// let dy = Array4::<f64>::ones((2, 2, 10, 10));
/// let g = conv_transpose2d_backward(x.view(), w.view(), dy.view(), &spec, Algorithm::Strided)?;
/// assert_eq!((g.dx.shape(), g.dw.shape(), g.db.len()), (x.shape(), w.shape(), 2));
/// assert_eq!(g.db[0], 200.0);
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
pub fn conv_transpose2d_backward<T: Element, Dx: Dimension, Dw: Dimension, Dy: Dimension>(
    x: ArrayView<'_, T, Dx>,
    w: ArrayView<'_, T, Dw>,
    dy: ArrayView<'_, T, Dy>,
    spec: &ConvTranspose2dSpec,
    algorithm: Algorithm,
) -> Result<Gradients<T>, ConvError> {
    let selection = GradientSelection::ALL;
    let g = conv_transpose2d_backward_selected(x, w, dy, spec, algorithm, selection)?;
    Ok(Gradients {
        dx: g.dx.expect("selected"),
        dw: g.dw.expect("selected"),
        db: g.db.expect("selected"),
    })
}

/// [`conv_transpose2d_backward`] for the gradients `selection` names only.
///
/// ```
/// use gemmconv::{conv_transpose2d_backward_selected, Algorithm, ConvTranspose2dSpec, GradientSelection};
/// use gemmconv::ndarray::Array4;
/// let spec = ConvTranspose2dSpec::new(1, 1, (2, 2)).bias(false);
/// let (x, w, dy) = (Array4::<f32>::ones((1, 1, 3, 3)), Array4::<f32>::ones((1, 1, 2, 2)), Array4::<f32>::ones((1, 1, 4, 4)));
/// let g = conv_transpose2d_backward_selected(x.view(), w.view(), dy.view(), &spec, Algorithm::Strided, GradientSelection::INPUT)?;
/// assert_eq!(g.dx.unwrap()[[0, 0, 1, 1]], 4.0);
/// assert!(g.dw.is_none());
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
pub fn conv_transpose2d_backward_selected<
    T: Element,
    Dx: Dimension,
    Dw: Dimension,
    Dy: Dimension,
>(
    x: ArrayView<'_, T, Dx>,
    w: ArrayView<'_, T, Dw>,
    dy: ArrayView<'_, T, Dy>,
    spec: &ConvTranspose2dSpec,
    algorithm: Algorithm,
    selection: GradientSelection,
) -> Result<SelectedGradients<T>, ConvError> {
    with_thread_workspace(|ws| operation::backward(spec, (x, w, dy), algorithm, ws, selection))
}

/// [`conv_transpose2d_backward`] into the caller's arrays (any layout),
/// with caller-owned scratch memory: a [`GradientsMut`](crate::GradientsMut)
/// for all three gradients, or a [`SelectedGradientsMut`] for some.
///
/// ```
/// use gemmconv::{conv_transpose2d_backward_into, Algorithm, ConvTranspose2dSpec, Gradients, Workspace};
/// use gemmconv::ndarray::{Array1, Array4};
/// let spec = ConvTranspose2dSpec::new(1, 1, (1, 1));
/// let (x, w, dy) = (Array4::<f64>::ones((2, 1, 2, 2)), Array4::<f64>::from_elem((1, 1, 1, 1), 3.0), Array4::<f64>::ones((2, 1, 2, 2)));
/// let mut g = Gradients { dx: Array4::zeros((2, 1, 2, 2)), dw: Array4::zeros((1, 1, 1, 1)), db: Array1::zeros(1) };
/// conv_transpose2d_backward_into(x.view(), w.view(), dy.view(), &spec, Algorithm::Strided, &mut Workspace::new(), g.view_mut())?;
/// assert_eq!((g.dx[[1, 0, 1, 1]], g.dw[[0, 0, 0, 0]], g.db[0]), (3.0, 8.0, 8.0));
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
pub fn conv_transpose2d_backward_into<
    'o,
    T: Element,
    Dx: Dimension,
    Dw: Dimension,
    Dy: Dimension,
>(
    x: ArrayView<'_, T, Dx>,
    w: ArrayView<'_, T, Dw>,
    dy: ArrayView<'_, T, Dy>,
    spec: &ConvTranspose2dSpec,
    algorithm: Algorithm,
    workspace: &mut Workspace<T>,
    out: impl Into<SelectedGradientsMut<'o, T>>,
) -> Result<(), ConvError> {
    operation::backward_into(spec, (x, w, dy), algorithm, workspace, out.into())
}
