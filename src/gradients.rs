//! The gradients a backward pass computes, owned or as caller views, and
//! which of them a call asks for.

use crate::algo::strided::simd::with_runtime_simd;
use crate::element::Element;
use ndarray::{Array, Array1, ArrayView3, ArrayViewMut, ArrayViewMut1, Dimension, Ix4};

/// The gradients of a convolution's inputs, from [`conv2d_backward`](crate::conv2d_backward)
/// (and, with `D = Ix3`, from [`conv1d_backward`](crate::conv1d_backward)).
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
pub struct Gradients<T, D: Dimension = Ix4> {
    /// Gradient of the input, shaped like the input.
    pub dx: Array<T, D>,
    /// Gradient of the weight, shaped like the weight.
    pub dw: Array<T, D>,
    /// Gradient of the bias, `[out_channels]` (the sum of the output
    /// gradient over batch and pixels, given whether or not the spec has a bias).
    pub db: Array1<T>,
}

impl<T, D: Dimension> Gradients<T, D> {
    /// Mutable views of the three gradients, for [`conv2d_backward_into`](crate::conv2d_backward_into).
    ///
    /// ```
    /// use gemmconv::Gradients;
    /// use gemmconv::ndarray::{Array1, Array4};
    /// let mut g = Gradients { dx: Array4::<f32>::zeros((1, 1, 2, 2)), dw: Array4::zeros((1, 1, 1, 1)), db: Array1::zeros(1) };
    /// g.view_mut().db[0] = 1.0;
    /// assert_eq!(g.db[0], 1.0);
    /// ```
    pub fn view_mut(&mut self) -> GradientsMut<'_, T, D> {
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
pub struct GradientsMut<'a, T, D: Dimension = Ix4> {
    /// Gradient of the input, shaped like the input.
    pub dx: ArrayViewMut<'a, T, D>,
    /// Gradient of the weight, shaped like the weight.
    pub dw: ArrayViewMut<'a, T, D>,
    /// Gradient of the bias, `[out_channels]`.
    pub db: ArrayViewMut1<'a, T>,
}

/// Which gradients a backward pass computes: the work for the others is
/// skipped. The first layer of a network needs no input gradient, a
/// frozen layer no weight gradient.
///
/// ```
/// use gemmconv::GradientSelection;
/// assert!(GradientSelection::ALL.input && GradientSelection::ALL.weight && GradientSelection::ALL.bias);
/// assert!(!GradientSelection::PARAMETERS.input);
/// assert_eq!(GradientSelection::INPUT, GradientSelection { input: true, weight: false, bias: false });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GradientSelection {
    /// The input gradient `dx`.
    pub input: bool,
    /// The weight gradient `dw`.
    pub weight: bool,
    /// The bias gradient `db`.
    pub bias: bool,
}

impl GradientSelection {
    /// Every gradient.
    pub const ALL: Self = GradientSelection {
        input: true,
        weight: true,
        bias: true,
    };
    /// The parameters' gradients, `dw` and `db`: what the first layer of a
    /// network needs.
    pub const PARAMETERS: Self = GradientSelection {
        input: false,
        weight: true,
        bias: true,
    };
    /// The input gradient alone: what a frozen layer needs.
    pub const INPUT: Self = GradientSelection {
        input: true,
        weight: false,
        bias: false,
    };
}

/// The gradients a backward pass computed: those not asked for are `None`
/// (see [`GradientSelection`]).
///
/// ```
/// use gemmconv::{conv2d_backward_selected, Algorithm, Conv2dSpec, GradientSelection};
/// use gemmconv::ndarray::Array4;
/// let spec = Conv2dSpec::new(1, 2, (3, 3)).padding((1, 1));
/// let x = Array4::<f32>::ones((1, 1, 4, 4));
/// let w = Array4::<f32>::ones((2, 1, 3, 3));
/// let dy = Array4::<f32>::ones((1, 2, 4, 4));
/// let g = conv2d_backward_selected(x.view(), w.view(), dy.view(), &spec, Algorithm::Strided, GradientSelection::PARAMETERS)?;
/// assert!(g.dx.is_none());
/// assert_eq!(g.db.unwrap()[1], 16.0);
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct SelectedGradients<T, D: Dimension = Ix4> {
    /// Gradient of the input, if asked for.
    pub dx: Option<Array<T, D>>,
    /// Gradient of the weight, if asked for.
    pub dw: Option<Array<T, D>>,
    /// Gradient of the bias, if asked for.
    pub db: Option<Array1<T>>,
}

impl<T, D: Dimension> SelectedGradients<T, D> {
    /// Mutable views of the gradients present.
    ///
    /// ```
    /// use gemmconv::SelectedGradients;
    /// use gemmconv::ndarray::{Array1, Array4};
    /// let mut g = SelectedGradients::<f32> { dx: None, dw: Some(Array4::zeros((1, 1, 1, 1))), db: Some(Array1::zeros(1)) };
    /// assert!(g.view_mut().dx.is_none());
    /// ```
    pub fn view_mut(&mut self) -> SelectedGradientsMut<'_, T, D> {
        SelectedGradientsMut {
            dx: self.dx.as_mut().map(|a| a.view_mut()),
            dw: self.dw.as_mut().map(|a| a.view_mut()),
            db: self.db.as_mut().map(|a| a.view_mut()),
        }
    }

    /// All three gradients, when all three are present.
    pub(crate) fn into_complete(self) -> Option<Gradients<T, D>> {
        Some(Gradients {
            dx: self.dx?,
            dw: self.dw?,
            db: self.db?,
        })
    }
}

/// Caller-provided arrays a backward pass writes into, any layout: the
/// gradients given (`Some`) are computed and overwritten, the work for the
/// others is skipped. A [`GradientsMut`] converts into one with all three.
///
/// ```
/// use gemmconv::{conv2d_backward_selected_into, Algorithm, Conv2dSpec, SelectedGradientsMut, Workspace};
/// use gemmconv::ndarray::Array4;
/// let spec = Conv2dSpec::new(1, 1, (1, 1)).bias(false);
/// let x = Array4::<f64>::ones((1, 1, 2, 2));
/// let w = Array4::<f64>::from_elem((1, 1, 1, 1), 3.0);
/// let mut dx = Array4::<f64>::zeros((1, 1, 2, 2));
/// let out = SelectedGradientsMut { dx: Some(dx.view_mut()), dw: None, db: None };
/// conv2d_backward_selected_into(x.view(), w.view(), x.view(), &spec, Algorithm::Strided, &mut Workspace::new(), out)?;
/// assert_eq!(dx[[0, 0, 1, 1]], 3.0);
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
#[derive(Debug)]
pub struct SelectedGradientsMut<'a, T, D: Dimension = Ix4> {
    /// Where the input gradient goes, if it is wanted.
    pub dx: Option<ArrayViewMut<'a, T, D>>,
    /// Where the weight gradient goes, if it is wanted.
    pub dw: Option<ArrayViewMut<'a, T, D>>,
    /// Where the bias gradient goes, if it is wanted.
    pub db: Option<ArrayViewMut1<'a, T>>,
}

impl<'a, T, D: Dimension> From<GradientsMut<'a, T, D>> for SelectedGradientsMut<'a, T, D> {
    fn from(g: GradientsMut<'a, T, D>) -> Self {
        SelectedGradientsMut {
            dx: Some(g.dx),
            dw: Some(g.dw),
            db: Some(g.db),
        }
    }
}

impl<T, D: Dimension> SelectedGradientsMut<'_, T, D> {
    /// Which gradients are present.
    ///
    /// ```
    /// use gemmconv::{GradientSelection, SelectedGradientsMut};
    /// let none = SelectedGradientsMut::<f32> { dx: None, dw: None, db: None };
    /// assert_eq!(none.selection(), GradientSelection { input: false, weight: false, bias: false });
    /// ```
    pub fn selection(&self) -> GradientSelection {
        GradientSelection {
            input: self.dx.is_some(),
            weight: self.dw.is_some(),
            bias: self.db.is_some(),
        }
    }
}

/// What the kernels write a backward pass into: rank-4 gradients, each
/// present when asked for.
pub(crate) type Targets<'a, T> = SelectedGradientsMut<'a, T, Ix4>;

/// `db += Σ_pixels dy`, channel by channel, for one sample's error `dy`
/// (`[c_out, out_h, out_w]`): the bias gradient's share of a sample.
pub(crate) fn add_bias_gradient<T: Element>(dy: ArrayView3<'_, T>, db: &mut [T]) {
    for (b, plane) in db.iter_mut().zip(dy.outer_iter()) {
        *b += match plane.as_slice() {
            Some(values) => {
                let mut sum = T::zero();
                sum_into(values, &mut sum);
                sum
            }
            None => plane.sum(),
        };
    }
}

/// `sum = Σ values`, in the SIMD build the CPU runs: ndarray's sum would
/// run in the baseline build, where it takes a few percent of a Winograd
/// backward pass (BENCHMARKS.md, "Bias sums in SIMD builds").
fn sum_into<T: Element>(values: &[T], sum: &mut T) {
    with_runtime_simd!(
        sum_avx512, sum_avx2, sum_body::<T>, sum_body::<T>,
        values: &[T], sum: &mut T,
    );
}

/// [`sum_into`] as the SIMD builds compile it: 32 running sums (two
/// AVX-512 registers of `f32`, so that the adds overlap), added up at the
/// end.
#[inline(always)]
fn sum_body<T: Element>(values: &[T], sum: &mut T) {
    const LANES: usize = 32;
    let mut sums = [T::zero(); LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        sums.iter_mut().zip(chunk).for_each(|(s, &v)| *s += v);
    }
    let tail = rest.iter().fold(T::zero(), |s, &v| s + v);
    *sum = sums.iter().fold(tail, |s, &v| s + v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    /// The bias sums of contiguous planes (the SIMD sum, every length
    /// around its 32 running sums) and of strided ones (ndarray's) match
    /// the sums in `f64`.
    #[test]
    fn bias_sums_match_sums_in_f64() {
        for width in [0, 1, 7, 31, 32, 33, 64, 95, 200] {
            let dy = Array3::from_shape_fn((3, 2, width), |(c, y, x)| {
                ((c * 7 + y * 13 + x * 5) % 17) as f32 / 16.0 - 0.5
            });
            let planes = [dy.view(), dy.slice(ndarray::s![.., .., ..;2])];
            for (which, view) in planes.into_iter().enumerate() {
                let mut db = [1.0f32; 3];
                add_bias_gradient(view, &mut db);
                for (c, &got) in db.iter().enumerate() {
                    let plane = view.index_axis(ndarray::Axis(0), c);
                    let want = 1.0 + plane.iter().map(|&v| f64::from(v)).sum::<f64>();
                    let err = (f64::from(got) - want).abs();
                    assert!(
                        err < 1e-5,
                        "width {width}, view {which}, channel {c}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
