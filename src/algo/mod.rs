//! The three algorithms behind one dispatch: `naive.rs` (the definition),
//! `im2col.rs` (the notebook's per-sample lowering) and `strided/` (the fast
//! path: a table of kernels).

mod im2col;
mod naive;
pub(crate) mod strided;

use crate::element::Element;
use crate::gradients::Targets;
use crate::operands::{Backward, Forward};
use crate::workspace::Workspace;
use ndarray::ArrayViewMut4;
use strided::Choice;

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
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Algorithm {
    /// Direct loops: the reference definition, slow.
    Naive,
    /// One column matrix per sample built with explicit loops, one GEMM per
    /// sample; the input gradient by col2im.
    Im2col,
    /// The fast path: for each geometry and pass, the kernel the
    /// workspace's [`Kernel`](crate::Kernel) option picks (by default the
    /// one measured fastest on such layers). The column-matrix kernel
    /// copies zero-copy strided window views once per tile (some samples,
    /// or a band of one sample's output rows) into a column matrix and runs
    /// one GEMM per tile; the others run GEMMs on shifted windows or on
    /// Winograd-transformed tiles of a pixel-major copy, or direct loops.
    /// The work is spread over rayon's threads.
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
    op: Forward<'_, T>,
    y: ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
) {
    match algorithm {
        Algorithm::Naive => naive::forward(op, y),
        Algorithm::Im2col => im2col::forward(op, y),
        Algorithm::Strided => strided::forward(op, y, ws),
    }
}

/// Backward pass on validated operands; overwrites the gradients present.
pub(crate) fn backward<T: Element>(
    algorithm: Algorithm,
    op: Backward<'_, T>,
    out: Targets<'_, T>,
    ws: &mut Workspace<T>,
) {
    match algorithm {
        Algorithm::Naive => naive::backward(op, out),
        Algorithm::Im2col => im2col::backward(op, out),
        Algorithm::Strided => strided::backward(op, out, ws),
    }
}

/// [`forward`] with the strided algorithm's choice already made.
pub(crate) fn forward_with<T: Element>(
    algorithm: Algorithm,
    choice: Choice,
    op: Forward<'_, T>,
    y: ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
) {
    match algorithm {
        Algorithm::Strided => strided::forward_with(choice, op, y, ws),
        _ => forward(algorithm, op, y, ws),
    }
}

/// [`backward`] with the strided algorithm's choice already made.
pub(crate) fn backward_with<T: Element>(
    algorithm: Algorithm,
    choice: Choice,
    op: Backward<'_, T>,
    out: Targets<'_, T>,
    ws: &mut Workspace<T>,
) {
    match algorithm {
        Algorithm::Strided => strided::backward_with(choice, op, out, ws),
        _ => backward(algorithm, op, out, ws),
    }
}
