//! The three algorithms, one file each, behind one dispatch.

mod direct;
mod direct_tiled;
mod im2col;
mod image;
mod naive;
mod shifted;
mod simd;
mod strided;
mod winograd;

use crate::conv::GradientsMut;
use crate::element::Element;
use crate::spec::Geometry;
use crate::workspace::Workspace;
use ndarray::{ArrayView1, ArrayView4, ArrayViewMut4};

/// Which implementation computes a convolution. All three give the same
/// results (up to floating-point rounding) for every geometry; they differ in
/// speed, and are kept side by side so the comparison can be reproduced.
///
/// ```
/// use gemmconv::Algorithm;
/// assert_eq!(Algorithm::default(), Algorithm::Strided);
/// assert_eq!(Algorithm::ALL.len(), 3);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Direct loops: the reference definition, slow.
    Naive,
    /// One column matrix per sample built with explicit loops, one GEMM per
    /// sample; the input gradient by col2im.
    Im2col,
    /// Zero-copy strided window views copied once per tile (a sample, or a
    /// band of its output rows) into a column matrix, one GEMM per tile,
    /// rayon across the batch; for stride 1 with many channels, GEMMs on
    /// overlapping windows of a pixel-major copy instead ([`Kernel`](crate::Kernel)).
    /// The fast path.
    #[default]
    Strided,
}

impl Algorithm {
    /// Every algorithm, slowest first.
    pub const ALL: [Algorithm; 3] = [Algorithm::Naive, Algorithm::Im2col, Algorithm::Strided];

    /// The lower-case name used in benchmark ids and on the command line.
    ///
    /// ```
    /// assert_eq!(gemmconv::Algorithm::Im2col.name(), "im2col");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Naive => "naive",
            Algorithm::Im2col => "im2col",
            Algorithm::Strided => "strided",
        }
    }
}

impl std::str::FromStr for Algorithm {
    type Err = String;

    /// Parses a name as printed by [`Algorithm::name`].
    ///
    /// ```
    /// let a: gemmconv::Algorithm = "naive".parse().unwrap();
    /// assert_eq!(a, gemmconv::Algorithm::Naive);
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| format!("unknown algorithm {s:?}: expected naive, im2col or strided"))
    }
}

/// Forward pass on validated operands; writes every element of `y`.
pub(crate) fn forward<T: Element>(
    algorithm: Algorithm,
    x: ArrayView4<'_, T>,
    w: ArrayView4<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    g: &Geometry,
    y: ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
) {
    match algorithm {
        Algorithm::Naive => naive::forward(x, w, bias, g, y),
        Algorithm::Im2col => im2col::forward(x, w, bias, g, y),
        Algorithm::Strided => strided::forward(x, w, bias, g, y, ws),
    }
}

/// Backward pass on validated operands; overwrites every gradient.
pub(crate) fn backward<T: Element>(
    algorithm: Algorithm,
    x: ArrayView4<'_, T>,
    w: ArrayView4<'_, T>,
    dy: ArrayView4<'_, T>,
    g: &Geometry,
    out: GradientsMut<'_, T>,
    ws: &mut Workspace<T>,
) {
    let GradientsMut { dx, dw, db } = out;
    match algorithm {
        Algorithm::Naive => naive::backward(x, w, dy, g, dx, dw, db),
        Algorithm::Im2col => im2col::backward(x, w, dy, g, dx, dw, db),
        Algorithm::Strided => strided::backward(x, w, dy, g, dx, dw, db, ws),
    }
}
