//! The input gradient of a strided layer as one unit-stride forward pass
//! per phase of the stride.
//!
//! At stride `s` an input row `i = q·s + r` receives error only through
//! the kernel rows `k` with `k ≡ r + p (mod s)` (`p` the top padding), and
//! those rows' taps reach consecutive error rows. So the rows of one phase
//! `r`, every `s`-th row of the input gradient, are the error convolved at
//! unit stride with that subset of the turned, channel-swapped weights;
//! the same holds for columns. The `s_h · s_w` passes together do exactly
//! the input gradient's multiply-adds, none on inserted zeros, and each
//! writes its own rows and columns of the gradient, so none sums into
//! another's. They run on the direct register tiles, which sum every tap
//! in registers, where col2im multiplies each group's error by its
//! weights in a GEMM only as deep as the group's output channels and then
//! scatters every column back (BENCHMARKS.md, "Strided input gradients in
//! phases").

use super::direct;
use super::direct::tiled::PhasePass;
use crate::element::Element;
use crate::layout::nchw::flip_and_swap_weights;
use crate::spec::{Geometry, Padding};
use crate::workspace::{Workspace, scratch};
use ndarray::{ArrayView4, ArrayViewMut4, s};

/// One phase along one axis: which input-gradient lines it writes, which
/// kernel taps and error lines it reads, and the padding of its pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AxisPhase {
    /// The phase `r`: the pass writes input-gradient lines `r, r + s, …`.
    first_line: usize,
    /// The first kernel tap of the phase; its taps are every `s`-th from it.
    first_tap: usize,
    /// The phase's taps.
    taps: usize,
    /// Input-gradient lines the phase writes.
    lines: usize,
    /// Error lines left out before and after: no tap of the phase reaches
    /// them.
    crop: (usize, usize),
    /// Zero lines of the pass before and after the error lines it reads.
    padding: (usize, usize),
}

/// The phase `r` of an axis of `input` lines (the input gradient's), an
/// error of `error` lines, a kernel of `kernel` taps at stride `stride`
/// and unit dilation, padded by `before`; `None` where the phase writes no
/// line, reads no tap or no error line, or would pad a pass by a whole
/// kernel (a line no tap reaches, which the tiles do not compute).
fn axis_phase(
    r: usize,
    (input, error): (usize, usize),
    (kernel, stride, before): (usize, usize, usize),
) -> Option<AxisPhase> {
    let lines = input.checked_sub(r)?.div_ceil(stride);
    let first_tap = (r + before) % stride;
    let taps = kernel.checked_sub(first_tap)?.div_ceil(stride);
    if lines == 0 || taps == 0 {
        return None;
    }
    // Line q of the phase reads error lines q + reach - t for t < taps,
    // with reach = (r + before - first_tap) / s; as a forward pass over the
    // turned taps, its top padding is taps - 1 - reach.
    let reach = (r + before - first_tap) / stride;
    let (crop_front, pad_front) = match (taps - 1).checked_sub(reach) {
        Some(pad) => (0, pad),
        None => (reach - (taps - 1), 0),
    };
    // The pass's output length: read + padding - taps + 1 = lines.
    let needed =
        (lines + taps - 1) as isize - (error as isize - crop_front as isize) - pad_front as isize;
    let (crop_back, pad_back) = if needed >= 0 {
        (0, needed as usize)
    } else {
        (needed.unsigned_abs(), 0)
    };
    let read = error.checked_sub(crop_front + crop_back)?;
    if read == 0 || pad_front >= taps || pad_back >= taps {
        return None;
    }
    Some(AxisPhase {
        first_line: r,
        first_tap,
        taps,
        lines,
        crop: (crop_front, crop_back),
        padding: (pad_front, pad_back),
    })
}

/// One phase of the input gradient: its rows and columns, and its pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Phase {
    rows: AxisPhase,
    cols: AxisPhase,
    /// The phase's pass: the (cropped) error in, the phase's lines of the
    /// input gradient out, channels swapped, the phase's taps, unit stride.
    pub(crate) geometry: Geometry,
}

/// Whether `g`'s input gradient runs in phases on the direct register
/// tiles: grouped layers at a stride above 1 and unit dilation whose
/// groups have 2 to 16 input channels (the tiles' output channels there),
/// where every phase reads one or two taps a side (a kernel at most twice
/// the stride: the tiles' one-channel stencils, which take 3x3 and 5x5
/// kernels on planes of 8 rows or more, never run, so a band's results do
/// not depend on where the lanes cut it) and at least one error line.
/// Depthwise layers have kernels of their own.
pub(crate) fn applies(g: &Geometry) -> bool {
    let strided = g.sh > 1 || g.sw > 1;
    let suits = g.groups > 1
        && strided
        && (g.dh, g.dw) == (1, 1)
        && (2..=16).contains(&g.in_channels_per_group())
        && g.kh <= 2 * g.sh
        && g.kw <= 2 * g.sw;
    suits && (0..g.sh * g.sw).all(|index| phase(g, index).is_some())
}

/// Phase `index` of `g`'s input gradient: rows from `index / s_w`,
/// columns from `index % s_w`, every stride-th; `None` where it reads no
/// tap or no error line.
pub(crate) fn phase(g: &Geometry, index: usize) -> Option<Phase> {
    let (r_h, r_w) = (index / g.sw, index % g.sw);
    let rows = axis_phase(r_h, (g.in_h, g.out_h), (g.kh, g.sh, g.padding.top))?;
    let cols = axis_phase(r_w, (g.in_w, g.out_w), (g.kw, g.sw, g.padding.left))?;
    let geometry = Geometry {
        in_channels: g.out_channels,
        in_h: g.out_h - rows.crop.0 - rows.crop.1,
        in_w: g.out_w - cols.crop.0 - cols.crop.1,
        out_channels: g.in_channels,
        out_h: rows.lines,
        out_w: cols.lines,
        kh: rows.taps,
        kw: cols.taps,
        sh: 1,
        sw: 1,
        dh: 1,
        dw: 1,
        padding: Padding {
            top: rows.padding.0,
            bottom: rows.padding.1,
            left: cols.padding.0,
            right: cols.padding.1,
        },
        ..*g
    };
    Some(Phase {
        rows,
        cols,
        geometry,
    })
}

/// Overwrites `dx` with the input gradient of the error `dy` through the
/// weights `w` of `g`, a layer that [`applies`], phase by phase, each phase
/// a forward pass of the direct register tiles into its rows and columns
/// of `dx`.
pub(crate) fn input_gradient<T: Element>(
    (dy, w): (ArrayView4<'_, T>, ArrayView4<'_, T>),
    g: &Geometry,
    dx: ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
) {
    let phases = g.sh * g.sw;
    let of = |index: usize| phase(g, index).expect("the layer applies");
    let len = |index: usize| of(index).geometry.weight_shape().iter().product::<usize>();
    let offset = |index: usize| (0..index).map(len).sum::<usize>();
    // Every phase's taps, every s-th from its first, turned and swapped as
    // the unit-stride error lowering's weights are, one after the other.
    let mut buf = ws.take_input_gradient_weights();
    let all = scratch(&mut buf, offset(phases));
    for index in 0..phases {
        let phase = of(index);
        let taps = w.slice(s![
            ..,
            ..,
            phase.rows.first_tap..;g.sh,
            phase.cols.first_tap..;g.sw
        ]);
        flip_and_swap_weights(taps, g.groups, &mut all[offset(index)..offset(index + 1)]);
    }
    let all: &[T] = all;
    let pass = |index: usize| {
        let phase = of(index);
        let (rows, cols) = (phase.rows, phase.cols);
        let packed_at = offset(index);
        let weights = &all[packed_at..packed_at + len(index)];
        PhasePass {
            x: dy.slice_move(s![
                ..,
                ..,
                rows.crop.0..g.out_h - rows.crop.1,
                cols.crop.0..g.out_w - cols.crop.1
            ]),
            w: ArrayView4::from_shape(phase.geometry.weight_shape(), weights).expect("sized above"),
            g: phase.geometry,
            packed_at,
        }
    };
    direct::tiled::input_gradient_in_phases(&pass, g, dx, ws);
    ws.restore_input_gradient_weights(buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every phase of an axis, followed tap by tap, reads the error line
    /// the stride's own arithmetic gives (`o·s + k - p = i`), and the
    /// phases together pair every input line with every (tap, error line)
    /// that reaches it, once: by brute force over kernels of 1 to 6 taps,
    /// strides of 2 to 4, paddings up to the kernel's reach and inputs of 1
    /// to 14 lines.
    #[test]
    fn axis_phases_pair_each_line_with_the_taps_that_reach_it() {
        let mut axes_in_phases = 0;
        for kernel in 1..=6 {
            for stride in 2..=4 {
                for before in 0..kernel {
                    for after in 0..kernel {
                        for input in 1..=14_usize {
                            let padded = input + before + after;
                            let Some(reach) = padded.checked_sub(kernel) else {
                                continue;
                            };
                            let error = reach / stride + 1;
                            let all: Option<Vec<_>> = (0..stride)
                                .map(|r| axis_phase(r, (input, error), (kernel, stride, before)))
                                .collect();
                            let Some(all) = all else { continue };
                            axes_in_phases += 1;
                            let mut by_phases = Vec::new();
                            for phase in &all {
                                let (crop, pad) = (phase.crop.0, phase.padding.0);
                                let read = error - phase.crop.0 - phase.crop.1;
                                assert_eq!(
                                    read + pad + phase.padding.1 + 1,
                                    phase.lines + phase.taps
                                );
                                for q in 0..phase.lines {
                                    for t in 0..phase.taps {
                                        let Some(line) = (q + t).checked_sub(pad) else {
                                            continue;
                                        };
                                        if line >= read {
                                            continue;
                                        }
                                        let tap = phase.first_tap + (phase.taps - 1 - t) * stride;
                                        let i = phase.first_line + q * stride;
                                        by_phases.push((i, tap, crop + line));
                                    }
                                }
                            }
                            let mut direct = Vec::new();
                            for o in 0..error {
                                for k in 0..kernel {
                                    if let Some(i) = (o * stride + k).checked_sub(before)
                                        && i < input
                                    {
                                        direct.push((i, k, o));
                                    }
                                }
                            }
                            by_phases.sort_unstable();
                            direct.sort_unstable();
                            let case = (kernel, stride, before, after, input);
                            assert_eq!(by_phases, direct, "{case:?}");
                        }
                    }
                }
            }
        }
        assert!(axes_in_phases > 500, "{axes_in_phases}");
    }

    /// The layer the phases are for: ResNeXt's strided 3x3 layer takes four
    /// passes, two with one tap a side and two with two; kernels smaller
    /// than the stride, layers of one group, dilation and groups of more
    /// than 16 input channels keep col2im.
    #[test]
    fn phases_take_grouped_strided_layers() {
        use crate::spec::Conv2dSpec;
        let spec = Conv2dSpec::new(256, 256, (3, 3))
            .stride((2, 2))
            .padding((1, 1))
            .groups(32);
        let g = Geometry::new(&spec, [8, 256, 56, 56]).unwrap();
        assert!(applies(&g), "a grouped strided 3x3 layer");
        let all: Vec<_> = (0..4).map(|index| phase(&g, index).unwrap()).collect();
        let taps: Vec<_> = all.iter().map(|p| (p.geometry.kh, p.geometry.kw)).collect();
        assert_eq!(taps, [(1, 1), (1, 2), (2, 1), (2, 2)]);
        assert!(
            all.iter()
                .all(|p| (p.geometry.out_h, p.geometry.out_w) == (28, 28))
        );
        let others = [
            Conv2dSpec::new(256, 256, (1, 1)).stride((2, 2)).groups(32),
            Conv2dSpec::new(256, 256, (3, 3))
                .stride((2, 2))
                .padding((1, 1)),
            spec.dilation((2, 2)),
            Conv2dSpec::new(256, 256, (3, 3)).stride((2, 2)).groups(8),
        ];
        for spec in others {
            let g = Geometry::new(&spec, [8, 256, 56, 56]).unwrap();
            assert!(!applies(&g), "{spec:?}");
        }
    }
}
