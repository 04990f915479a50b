//! `Algorithm::Strided`, the fast path: the kernel table.
//!
//! Every kernel computes the whole convolution, forward or backward, under
//! the lane scheduler (`lanes.rs`); this file alone decides which one runs
//! for a geometry and pass, and how the column-matrix kernel computes the
//! input gradient. The kernels never look at each other or at this table.
//!
//! | kernel | file | can compute | `Kernel::Auto` takes it for |
//! |---|---|---|---|
//! | direct loops | `direct/mod.rs` | everything | small groups, forward and backward |
//! | direct register tiles | `direct/tiled.rs` | forward, unit column stride | forward, few output channels |
//! | Winograd F(2x2, 3x3) | `winograd.rs` | 3x3, stride 1, one group | many channels, large enough outputs |
//! | shifted windows | `shifted.rs` | one group | other kernels above 1x1, many channels |
//! | column matrix | `column.rs` | everything | the rest |
//!
//! The thresholds are the measurements of BENCHMARKS.md, "Kernel choice".

pub(crate) mod choice;
mod column;
mod direct;
mod shifted;
mod simd;
mod winograd;

use crate::element::Element;
use crate::gradients::GradientsMut;
use crate::operands::{Backward, Forward};
use crate::spec::Geometry;
use crate::workspace::Workspace;
use choice::{InputGradient, Kernel};
use ndarray::ArrayViewMut4;

/// The direct loops suit layers with few multiply-adds per output pixel
/// (`c_in/groups · kh · kw`) and few output channels per group, such as
/// depthwise convolutions: a column matrix would be copied for little reuse.
fn direct_suits(g: &Geometry) -> bool {
    g.in_channels_per_group() * g.kh * g.kw <= 16 && g.out_channels_per_group() <= 4
}

/// The direct register tiles read a contiguous run of an input row per
/// tap: unit column stride.
fn direct_tiles_apply(g: &Geometry) -> bool {
    g.sw == 1
}

/// The direct register tiles beat the column matrix on the forward pass of
/// kernels above 1x1 (a 1x1 kernel's column matrix is often the input
/// itself) with at most 16 output channels a group.
fn direct_tiles_suit(g: &Geometry) -> bool {
    direct_tiles_apply(g) && g.kh * g.kw > 1 && g.out_channels_per_group() <= 16
}

/// The shifted kernel computes any geometry with one group.
fn shifted_applies(g: &Geometry) -> bool {
    g.groups == 1
}

/// The shifted kernel beats the column matrix on kernels above 1x1 (a 1x1
/// kernel's column matrix is the input itself) with at least 32 input and
/// output channels, so that each GEMM has a sizeable inner dimension; at
/// any stride.
fn shifted_suits(g: &Geometry) -> bool {
    shifted_applies(g) && g.kh * g.kw > 1 && g.in_channels >= 32 && g.out_channels >= 32
}

/// Winograd's F(2x2, 3x3) computes 3x3 kernels at stride 1 with one group,
/// any padding and dilation.
fn winograd_applies(g: &Geometry) -> bool {
    (g.kh, g.kw, g.sh, g.sw, g.groups) == (3, 3, 1, 1, 1)
}

/// Winograd beats the other kernels with at least 32 input and output
/// channels (its transforms cost per tile and channel what its GEMMs save
/// per channel pair), on outputs at least `8·d` pixels high and wide for a
/// dilation `d`: tiles come in blocks of `2·d` rows (columns), and the
/// pixels of the last block past the output are computed and dropped,
/// which stays under a quarter of the work there.
fn winograd_suits(g: &Geometry) -> bool {
    winograd_applies(g)
        && g.in_channels >= 32
        && g.out_channels >= 32
        && g.out_h >= 8 * g.dh
        && g.out_w >= 8 * g.dw
}

/// The kernel that runs the backward pass: `Kernel::Auto` resolved, and a
/// kernel that cannot compute the geometry replaced by the column matrix.
/// An input-gradient method other than `Auto` keeps `Auto` on the column
/// matrix, where the method applies, unless the direct loops suit.
fn backward_kernel(kernel: Kernel, method: InputGradient, g: &Geometry) -> Kernel {
    let any_kernel = method == InputGradient::Auto;
    match kernel {
        Kernel::Auto if direct_suits(g) => Kernel::Direct,
        Kernel::Auto if any_kernel && winograd_suits(g) => Kernel::Winograd,
        Kernel::Auto if any_kernel && shifted_suits(g) => Kernel::Shifted,
        Kernel::Shifted if shifted_applies(g) => Kernel::Shifted,
        Kernel::Winograd if winograd_applies(g) => Kernel::Winograd,
        Kernel::Direct => Kernel::Direct,
        _ => Kernel::Gemm,
    }
}

/// The kernel that runs the forward pass: as [`backward_kernel`], except
/// that `Kernel::Auto` also takes the direct register tiles where they
/// suit (the backward pass has no such tiles).
fn forward_kernel(kernel: Kernel, method: InputGradient, g: &Geometry) -> Kernel {
    match kernel {
        Kernel::Auto if direct_tiles_suit(g) => Kernel::Direct,
        _ => backward_kernel(kernel, method, g),
    }
}

/// Whether the column-matrix kernel computes the input gradient by col2im
/// rather than by lowering the error: col2im unless asked otherwise,
/// faster where the lowering's GEMM grows with the stride squared and
/// level elsewhere (BENCHMARKS.md, "Input gradient method").
fn by_col2im(method: InputGradient) -> bool {
    match method {
        InputGradient::Auto | InputGradient::Col2im => true,
        InputGradient::ErrorLowering => false,
    }
}

/// The forward pass on validated operands; writes every element of `y`.
pub(crate) fn forward<T: Element>(
    op: Forward<'_, T>,
    y: ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
) {
    match forward_kernel(ws.kernel(), ws.input_gradient(), op.g) {
        Kernel::Direct if direct_tiles_apply(op.g) => direct::tiled::forward(op, y, ws),
        Kernel::Direct => direct::forward(op, y, ws),
        Kernel::Shifted => shifted::forward(op, y, ws),
        Kernel::Winograd => winograd::forward(op, y, ws),
        Kernel::Gemm | Kernel::Auto => column::forward(op, y, ws),
    }
}

/// The backward pass on validated operands; overwrites every gradient.
pub(crate) fn backward<T: Element>(
    op: Backward<'_, T>,
    grads: GradientsMut<'_, T>,
    ws: &mut Workspace<T>,
) {
    match backward_kernel(ws.kernel(), ws.input_gradient(), op.g) {
        Kernel::Direct => direct::backward(op, grads, ws),
        Kernel::Shifted => shifted::backward(op, grads, ws),
        Kernel::Winograd => winograd::backward(op, grads, ws),
        Kernel::Gemm | Kernel::Auto if by_col2im(ws.input_gradient()) => {
            column::backward_by_col2im(op, grads, ws)
        }
        Kernel::Gemm | Kernel::Auto => column::backward_by_error_lowering(op, grads, ws),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Conv2dSpec;
    use crate::suite;

    /// What `Kernel::Auto` runs on each suite row, forward and backward, as
    /// BENCHMARKS.md measured it.
    #[test]
    fn auto_kernels_of_the_suite() {
        let expected = [
            ("seed", Kernel::Direct, Kernel::Gemm),
            ("seed64", Kernel::Direct, Kernel::Gemm),
            ("r3x3", Kernel::Winograd, Kernel::Winograd),
            ("r3x3s2", Kernel::Shifted, Kernel::Shifted),
            ("r1x1", Kernel::Gemm, Kernel::Gemm),
            ("stem", Kernel::Gemm, Kernel::Gemm),
            ("dw", Kernel::Direct, Kernel::Direct),
            ("dil", Kernel::Winograd, Kernel::Winograd),
        ];
        let auto = (Kernel::Auto, InputGradient::Auto);
        for (id, forward, backward) in expected {
            let row = suite::row(id).unwrap();
            let g = Geometry::new(&row.spec, row.input).unwrap();
            assert_eq!(forward_kernel(auto.0, auto.1, &g), forward, "{id} forward");
            assert_eq!(
                backward_kernel(auto.0, auto.1, &g),
                backward,
                "{id} backward"
            );
        }
    }

    /// An input-gradient method keeps `Auto` off the kernels that ignore
    /// it, but the direct loops still take the layers they suit.
    #[test]
    fn an_input_gradient_method_keeps_auto_on_the_column_matrix() {
        for (id, expected) in [
            ("r3x3", Kernel::Gemm),
            ("r3x3s2", Kernel::Gemm),
            ("dw", Kernel::Direct),
        ] {
            let row = suite::row(id).unwrap();
            let g = Geometry::new(&row.spec, row.input).unwrap();
            for method in [InputGradient::Col2im, InputGradient::ErrorLowering] {
                assert_eq!(backward_kernel(Kernel::Auto, method, &g), expected, "{id}");
            }
        }
    }

    /// A kernel asked for where it cannot compute the geometry leaves it
    /// to the column matrix.
    #[test]
    fn kernels_that_do_not_apply_fall_back_to_the_column_matrix() {
        let grouped = Conv2dSpec::new(64, 64, (5, 5)).groups(2);
        let g = Geometry::new(&grouped, [1, 64, 20, 20]).unwrap();
        for kernel in [Kernel::Shifted, Kernel::Winograd, Kernel::Gemm] {
            assert_eq!(
                backward_kernel(kernel, InputGradient::Auto, &g),
                Kernel::Gemm
            );
        }
        assert_eq!(
            backward_kernel(Kernel::Direct, InputGradient::Auto, &g),
            Kernel::Direct
        );
    }

    fn dilated(dilation: usize, size: usize) -> Geometry {
        let spec = Conv2dSpec::new(32, 32, (3, 3))
            .dilation((dilation, dilation))
            .padding((dilation, dilation));
        Geometry::new(&spec, [1, 32, size, size]).unwrap()
    }

    #[test]
    fn auto_leaves_large_dilations_on_small_outputs_off_winograd() {
        assert!(winograd_suits(&dilated(2, 56)));
        assert!(winograd_suits(&dilated(2, 16)));
        assert!(!winograd_suits(&dilated(2, 15)));
        assert!(!winograd_suits(&dilated(100, 10)));
        assert!(winograd_applies(&dilated(100, 10)));
    }
}
