//! The three algorithms behind one dispatch: `naive.rs` (the definition),
//! `im2col.rs` (the notebook's per-sample lowering) and `strided/` (the fast
//! path: a table of kernels).

mod im2col;
pub(crate) mod naive;
pub(crate) mod strided;

use crate::element::Element;
use crate::gradients::Targets;
use crate::linger::InsideCall;
use crate::nonfinite::{self, all_finite};
use crate::operands::{Backward, Forward};
use crate::workspace::{Checks, Workspace};
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

/// The forward pass on validated operands, by `algorithm` (the strided
/// one's kernels as `choice` names them); writes every element of `y`.
pub(crate) fn forward_with<T: Element>(
    algorithm: Algorithm,
    choice: Choice,
    op: Forward<'_, T>,
    y: ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
) {
    let _inside = InsideCall::enter();
    forward_by(algorithm, choice, op, y, ws);
}

/// The backward pass on validated operands, by `algorithm` (the strided
/// one's kernels as `choice` names them); overwrites the gradients present.
pub(crate) fn backward_with<T: Element>(
    algorithm: Algorithm,
    choice: Choice,
    op: Backward<'_, T>,
    out: Targets<'_, T>,
    ws: &mut Workspace<T>,
) {
    let _inside = InsideCall::enter();
    backward_by(algorithm, choice, op, out, ws);
}

/// [`forward_with`], non-finite operands taken care of (`nonfinite.rs`).
///
/// A non-finite weight poisons, in every kernel, some output the naive sum
/// poisons (or it meets only padding, and then only the kernels that
/// multiply padding are poisoned, where the naive sum is not): so it shows
/// in the weights or in the output, whichever is the smaller to scan. A
/// kernel that transforms pixels together checks its output too, for a
/// non-finite input. Either sends the pass to the exact kernels, and a
/// non-finite weight to the repair.
fn forward_by<T: Element>(
    algorithm: Algorithm,
    choice: Choice,
    op: Forward<'_, T>,
    mut y: ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
) {
    let strided = match algorithm {
        Algorithm::Naive => return naive::forward(op, y),
        Algorithm::Im2col => false,
        Algorithm::Strided => true,
    };
    let scan_weights = !strided || op.w.len() <= y.len();
    let weights_finite = !scan_weights || all_finite(&op.w);
    let choice = if weights_finite {
        choice
    } else {
        Choice::EXACT
    };
    let finite = if !strided {
        im2col::forward(op, y.view_mut());
        true
    } else if !scan_weights || choice.forward_transforms(op.g) {
        let run = |ws: &mut Workspace<T>| strided::forward_with(choice, op, y.view_mut(), ws);
        ws.checking_outputs(Checks::Everything, run).1
    } else {
        strided::forward_with(choice, op, y.view_mut(), ws);
        true
    };
    let weights_finite = weights_finite && (finite || all_finite(&op.w));
    if !finite && choice.forward != Choice::EXACT.forward {
        strided::forward_with(Choice::EXACT, op, y.view_mut(), ws);
    }
    if !weights_finite {
        nonfinite::repair_output(&op, y);
    }
}

/// [`backward_with`], non-finite operands taken care of (`nonfinite.rs`).
///
/// Weights take part in the input gradient only, where a non-finite one
/// shows, as in the forward pass, in the weights or in `dx`, whichever is
/// the smaller to scan. A non-finite input or error poisons more than the
/// naive sum does only through transforms (`dx`, checked behind them) or
/// through products with zeros in the weight and bias gradients, whose
/// sums every pass checks. Any of these sends the pass to the exact
/// kernels, and weight-gradient taps that met a non-finite error in the
/// padding to the repair.
fn backward_by<T: Element>(
    algorithm: Algorithm,
    choice: Choice,
    op: Backward<'_, T>,
    out: Targets<'_, T>,
    ws: &mut Workspace<T>,
) {
    let Targets {
        mut dx,
        mut dw,
        mut db,
    } = out;
    let strided = match algorithm {
        Algorithm::Naive => return naive::backward(op, reborrow(&mut dx, &mut dw, &mut db)),
        Algorithm::Im2col => false,
        Algorithm::Strided => true,
    };
    let dx_len = dx.as_ref().map(|dx| dx.len());
    let scan_weights = dx_len.is_some_and(|len| !strided || op.w.len() <= len);
    let weights_finite = !scan_weights || all_finite(&op.w);
    let choice = if weights_finite {
        choice
    } else {
        Choice::EXACT
    };
    // Whether the pass's results came from the exact kernels, and whether
    // its weight gradient is then known to be finite: the exact kernels
    // write the sums they check, so a pass that ran on them once, and found
    // every checked sum finite, needs no second scan of `dw`.
    let (exact, dw_known_finite) = if !strided {
        im2col::backward(op, reborrow(&mut dx, &mut dw, &mut db));
        (true, false)
    } else {
        let checks = if choice.backward_transforms(op.g) || (dx_len.is_some() && !scan_weights) {
            Checks::Everything
        } else {
            Checks::Sums
        };
        let ((), finite) = ws.checking_outputs(checks, |ws| {
            strided::backward_with(choice, op, reborrow(&mut dx, &mut dw, &mut db), ws)
        });
        let exact = Choice::EXACT;
        let exact_already =
            (choice.backward, choice.by_col2im) == (exact.backward, exact.by_col2im);
        if !finite && !exact_already {
            strided::backward_with(Choice::EXACT, op, reborrow(&mut dx, &mut dw, &mut db), ws);
        }
        (!finite || exact_already, finite && exact_already)
    };
    if let (true, false, Some(dw)) = (exact, dw_known_finite, dw.as_mut())
        && !all_finite(&dw.view())
    {
        nonfinite::repair_weight_gradient(&op, dw.view_mut());
    }
}

/// Targets borrowed from `(dx, dw, db)` for one pass, so that another can
/// write them again.
fn reborrow<'b, T>(
    dx: &'b mut Option<ArrayViewMut4<'_, T>>,
    dw: &'b mut Option<ArrayViewMut4<'_, T>>,
    db: &'b mut Option<ndarray::ArrayViewMut1<'_, T>>,
) -> Targets<'b, T> {
    Targets {
        dx: dx.as_mut().map(|dx| dx.view_mut()),
        dw: dw.as_mut().map(|dw| dw.view_mut()),
        db: db.as_mut().map(|db| db.view_mut()),
    }
}
