//! The gradients a backward pass computes, owned or as caller views.

use crate::element::Element;
use ndarray::{Array1, Array4, ArrayView3, ArrayViewMut1, ArrayViewMut4};

/// The gradients of a convolution's inputs, from [`conv2d_backward`](crate::conv2d_backward).
///
/// ```
/// use gemmconv::{conv2d_backward, Algorithm, Conv2dSpec};
/// use gemmconv::ndarray::Array4;
/// let spec = Conv2dSpec::new(2, 3, (3, 3)).padding((1, 1));
/// let x = Array4::<f64>::ones((1, 2, 5, 5));
/// let w = Array4::<f64>::ones((3, 2, 3, 3));
/// let g = conv2d_backward(x.view(), w.view(), Array4::ones((1, 3, 5, 5)).view(), &spec, Algorithm::Strided)?;
/// assert_eq!((g.dx.shape(), g.dw.shape(), g.db.len()), (x.shape(), w.shape(), 3));
/// assert_eq!(g.db[0], 25.0); // the output gradient summed over its 5x5 pixels
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Gradients<T> {
    /// Gradient of the input, shaped like the input.
    pub dx: Array4<T>,
    /// Gradient of the weight, shaped like the weight.
    pub dw: Array4<T>,
    /// Gradient of the bias, `[out_channels]` (the sum of the output
    /// gradient over batch and pixels, given whether or not the spec has a bias).
    pub db: Array1<T>,
}

impl<T> Gradients<T> {
    /// Mutable views of the three gradients, for [`conv2d_backward_into`](crate::conv2d_backward_into).
    ///
    /// ```
    /// use gemmconv::Gradients;
    /// use gemmconv::ndarray::{Array1, Array4};
    /// let mut g = Gradients { dx: Array4::<f32>::zeros((1, 1, 2, 2)), dw: Array4::zeros((1, 1, 1, 1)), db: Array1::zeros(1) };
    /// g.view_mut().db[0] = 1.0;
    /// assert_eq!(g.db[0], 1.0);
    /// ```
    pub fn view_mut(&mut self) -> GradientsMut<'_, T> {
        GradientsMut {
            dx: self.dx.view_mut(),
            dw: self.dw.view_mut(),
            db: self.db.view_mut(),
        }
    }
}

/// Caller-provided arrays a backward pass writes into (see
/// [`conv2d_backward_into`](crate::conv2d_backward_into)); any layout is accepted.
///
/// ```
/// use gemmconv::{conv2d_backward_into, Algorithm, Conv2dSpec, GradientsMut, Workspace};
/// use gemmconv::ndarray::{Array1, Array4, s};
/// let spec = Conv2dSpec::new(1, 1, (1, 1));
/// let x = Array4::<f32>::ones((2, 1, 2, 2));
/// let w = Array4::<f32>::from_elem((1, 1, 1, 1), 3.0);
/// // dx written into every other column of a wider array.
/// let mut wide = Array4::<f32>::zeros((2, 1, 2, 4));
/// let (mut dw, mut db) = (Array4::<f32>::zeros((1, 1, 1, 1)), Array1::<f32>::zeros(1));
/// let out = GradientsMut { dx: wide.slice_mut(s![.., .., .., ..;2]), dw: dw.view_mut(), db: db.view_mut() };
/// conv2d_backward_into(x.view(), w.view(), x.view(), &spec, Algorithm::Strided, &mut Workspace::new(), out)?;
/// assert_eq!((wide[[1, 0, 1, 2]], wide[[1, 0, 1, 3]], db[0]), (3.0, 0.0, 8.0));
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
#[derive(Debug)]
pub struct GradientsMut<'a, T> {
    /// Gradient of the input, shaped like the input.
    pub dx: ArrayViewMut4<'a, T>,
    /// Gradient of the weight, shaped like the weight.
    pub dw: ArrayViewMut4<'a, T>,
    /// Gradient of the bias, `[out_channels]`.
    pub db: ArrayViewMut1<'a, T>,
}

/// `db += Σ_pixels dy`, channel by channel, for one sample's error `dy`
/// (`[c_out, out_h, out_w]`): the bias gradient's share of a sample.
pub(crate) fn add_bias_gradient<T: Element>(dy: ArrayView3<'_, T>, db: &mut [T]) {
    for (b, plane) in db.iter_mut().zip(dy.outer_iter()) {
        *b += plane.sum();
    }
}
