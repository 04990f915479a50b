//! `Kernel::Shifted`: convolutions without a column matrix.
//!
//! Each sample is copied once, padded, into a pixel-major buffer (`[pixel,
//! channel]`, as HWC; the copy is a tiled transpose, see `transpose.rs`),
//! its rows split by the row stride into row phases (`PhasedImage`; one
//! phase at row stride 1), so that kernel row `i` reads one row phase. The
//! GEMM's rows are output pixels counted over `row length / sw` (the pixels
//! past the end of each output row are computed and dropped;
//! `PhasedImage::padded` keeps them few), `sw` image pixels apart, so a
//! tap's window is a `[pixels, c]` matrix with overlapping rows, a
//! zero-copy view. With `dw = 1` the taps of a kernel row are adjacent
//! pixels at any stride, so their windows form one `[pixels, kw·c]` view and
//! one GEMM (a [`Run`]). So:
//!
//! - forward: `y = Σ_runs X_run · W_run`, `W_run` the run's weights as
//!   `[(tap, c), c_out]`; the product is then transposed back into NCHW;
//! - weight gradient: `dW_run = X_runᵀ · dY`, the error laid out like the
//!   product (its extra pixels zero);
//! - input gradient, phase by phase of the padded input: phase `(a, b)`
//!   receives only the taps in that phase, `dX_ab = Σ_runs E_run · W_runᵀ`,
//!   where `E` is the error padded so that each tap reads it at a fixed
//!   offset (a stride-1 "full" correlation; the sub-pixel form of the
//!   transposed convolution, which never multiplies the zeros that dilating
//!   the error would insert). Each phase's GEMMs write its pixels in place
//!   in a pixel-major copy of the input gradient (rows `sw` pixels apart),
//!   transposed into NCHW at the end. The padded error also serves the weight gradient when its rows
//!   are as wide as the input's phase rows (the usual "same" padding).
//!
//! It applies to any geometry with one group. Measured per sample on the
//! suite's r3x3, one thread, with each GEMM's operands in cache: forward
//! 2.09 ms against 2.53 for the column matrix and its GEMM, dW 2.13 against
//! 2.25, dX 2.10 against 2.33 (col2im). The lowering copy and the col2im
//! scatter are gone, and every GEMM runs in the orientation the `gemm`
//! crate is fastest in (product rows are pixels). BENCHMARKS.md has the
//! whole-row figures.
//!
//! CBLAS cannot describe a matrix whose rows overlap (its leading dimension
//! must cover a row), so in a BLAS build this kernel's GEMMs, which all read
//! a window, run on the pure-Rust `gemm` crate (`gemm.rs` falls back by
//! itself).

use super::image::{Image, PhasedImage};
use crate::element::Element;
use crate::gemm::matmul;
use crate::spec::Geometry;
use crate::workspace::{Workspace, scratch};
use ndarray::{
    ArrayView1, ArrayView2, ArrayView4, ArrayViewMut1, ArrayViewMut2, ArrayViewMut4, Axis,
    ShapeBuilder, s,
};
use rayon::prelude::*;
use std::ops::Range;

/// Whether the shifted kernel can compute this geometry: one group.
pub(crate) fn applies(g: &Geometry) -> bool {
    g.groups == 1
}

/// Whether `Kernel::Auto` picks it: a kernel larger than 1x1 (a 1x1
/// kernel's column matrix is already the input itself: r1x1 measured 15%
/// slower here) and both channel counts at least 32, so that each GEMM has
/// a sizeable inner dimension. Measured: 5x slower than the column matrix
/// at one input channel (the seed row, whose one GEMM covers every tap),
/// 7–12% faster at 64 (r3x3); the threshold between is a judgment, not a
/// measurement. Any stride: timed in turns with the column matrix in one
/// process (`gemmconv --row r3x3s2 --kernel gemm,shifted`, BENCHMARKS.md,
/// session 6), 0.82–0.93 of its time forward and 0.85–0.89 backward on
/// r3x3s2, and faster or level on every strided layer tried (16 to 256
/// channels, 3x3 and 5x5, strides 2 and 3).
pub(crate) fn suits(g: &Geometry) -> bool {
    applies(g) && g.kh * g.kw > 1 && g.in_channels >= 32 && g.out_channels >= 32
}

/// Taps that one GEMM covers: `order[taps]`, whose windows lie side by
/// side. Forward: the first reads row phase `phase.0` from row `at.0`,
/// pixel `at.1` on (`phase.1` is 0). Input gradient: all land in phase
/// `phase` of the padded input, the first at offset `at` (phase pixels).
#[derive(Clone, Debug)]
struct Run {
    taps: Range<usize>,
    phase: (usize, usize),
    at: (usize, usize),
}

/// The forward runs over the taps in their natural order `(i, j)`: kernel
/// row `i` reads row phase `i·dh mod sh` from its row `i·dh / sh` on, tap
/// `j` from pixel `j·dw` on; a row's taps are adjacent pixels, one run,
/// when `dw = 1`. (Iterators, not vectors: a warm call allocates nothing.)
fn forward_runs(g: &Geometry) -> impl Iterator<Item = Run> + use<> {
    let (kh, kw, dh, dw, sh) = (g.kh, g.kw, g.dh, g.dw, g.sh);
    let len = if dw == 1 { kw } else { 1 };
    (0..kh * kw).step_by(len).map(move |t| {
        let (i, j) = (t / kw, t % kw);
        Run {
            taps: t..t + len,
            phase: (i * dh % sh, 0),
            at: (i * dh / sh, j * dw),
        }
    })
}

/// The input gradient's kernel rows, phase by phase of the padded input:
/// `(phase, i, taps)`, the taps `j` of kernel row `i` that land in `phase`,
/// right to left. Phase pixel `(u, v)` reads the error at `(u - q_i, v -
/// q_j)` with `(q_i, q_j) = (i·dh / sh, j·dw / sw)`, so right to left the
/// taps' windows lie side by side when `q_j` falls by one from tap to tap,
/// which is when `dw` divides `sw`.
fn input_gradient_rows(
    g: Geometry,
) -> impl Iterator<Item = ((usize, usize), usize, impl Iterator<Item = usize> + Clone)> + use<> {
    let (sh, sw, kh, kw, dh, dw) = (g.sh, g.sw, g.kh, g.kw, g.dh, g.dw);
    (0..sh * sw).flat_map(move |phase| {
        let (a, b) = (phase / sw, phase % sw);
        (0..kh).filter(move |i| i * dh % sh == a).map(move |i| {
            let taps = (0..kw).rev().filter(move |j| j * dw % sw == b);
            ((a, b), i, taps)
        })
    })
}

/// The input gradient's taps in the order its weights are laid out in.
fn input_gradient_order(g: &Geometry) -> impl Iterator<Item = (usize, usize)> + use<> {
    input_gradient_rows(*g).flat_map(|(_, i, taps)| taps.map(move |j| (i, j)))
}

/// The input gradient's runs over [`input_gradient_order`]: a kernel row's
/// taps in one phase, or each tap alone when their windows are not side by
/// side; `at` is the run's first tap's `(q_i, q_j)`.
fn input_gradient_runs(g: &Geometry) -> impl Iterator<Item = Run> + use<> {
    let (sh, sw, dh, dw) = (g.sh, g.sw, g.dh, g.dw);
    let fused = sw % dw == 0;
    input_gradient_rows(*g)
        .scan(0, |next, (phase, i, taps)| {
            let first = *next;
            *next += taps.clone().count();
            Some((first, phase, i, taps))
        })
        .flat_map(move |(first, phase, i, taps)| {
            let count = taps.clone().count();
            let len = if fused { count } else { 1 }.max(1);
            (0..count).step_by(len).map(move |k| {
                let j = taps.clone().nth(k).expect("k < count");
                Run {
                    taps: first + k..first + k + len,
                    phase,
                    at: (i * dh / sh, j * dw / sw),
                }
            })
        })
}

/// `weights[(t, c), o] = w[o, c, i, j]` for tap `order[t] = (i, j)`; with
/// `swap`, `weights[(t, o), c]` (the input-gradient pass).
fn reorder_weights<'b, T: Element>(
    w: ArrayView4<'_, T>,
    order: impl Iterator<Item = (usize, usize)>,
    swap: bool,
    buf: &'b mut Vec<T>,
) -> ArrayView2<'b, T> {
    let (c_out, c_in, kh, kw) = w.dim();
    let (inner, outer) = if swap { (c_out, c_in) } else { (c_in, c_out) };
    let data = scratch(buf, kh * kw * inner * outer);
    for ((i, j), block) in order.zip(data.chunks_exact_mut(inner * outer)) {
        let tap = w.slice(s![.., .., i, j]);
        let mut block = ArrayViewMut2::from_shape((inner, outer), block).expect("sized");
        if swap {
            block.assign(&tap);
        } else {
            block.assign(&tap.t());
        }
    }
    let data: &'b [T] = data;
    ArrayView2::from_shape((kh * kw * inner, outer), data).expect("sized")
}

/// The window of `taps` adjacent taps from element `start` of `data`:
/// `[pixels, taps·c]`, its rows `step` pixels apart (overlapping).
fn window<T>(
    data: &[T],
    start: usize,
    (pixels, step): (usize, usize),
    c: usize,
    taps: usize,
) -> ArrayView2<'_, T> {
    ArrayView2::from_shape((pixels, taps * c).strides((step * c, 1)), &data[start..])
        .expect("windows stay inside the image and its tail by construction")
}

/// `product = Σ_runs window(start_of(run)) · weights_run`; `data` has `c`
/// channels a pixel and its windows' rows are `step` pixels apart.
fn sum_of_runs<T: Element>(
    mut product: ArrayViewMut2<'_, T>,
    (data, c, step): (&[T], usize, usize),
    runs: impl Iterator<Item = Run>,
    start_of: impl Fn(&Run) -> usize,
    weights: ArrayView2<'_, T>,
    threads: usize,
) {
    let pixels = product.nrows();
    for (index, run) in runs.enumerate() {
        matmul(
            product.view_mut(),
            index > 0,
            window(data, start_of(&run), (pixels, step), c, run.taps.len()),
            weights.slice(s![run.taps.start * c..run.taps.end * c, ..]),
            threads,
        );
    }
}

/// The row phases the forward pass reads: the input padded by `g.padding`,
/// rows long enough for an output row, with a tail for the windows of the
/// last row's dropped pixels.
fn input_image(g: &Geometry) -> PhasedImage {
    let p = g.padding;
    PhasedImage::padded(
        g.in_channels,
        (g.in_h, g.in_w),
        [p.top, p.bottom, p.left, p.right],
        (g.sh, g.sw),
        g.out_w,
        (g.kw - 1) * g.dw,
    )
}

/// Lanes (one per thread at most, each a contiguous block of the batch) and
/// the threads each lane's GEMMs may use.
pub(super) fn plan(batch: usize) -> (usize, usize, usize) {
    let (lanes, per_lane) = super::strided::split_batch(batch);
    (
        lanes,
        per_lane,
        (rayon::current_num_threads() / lanes).max(1),
    )
}

/// Forward pass, see the module docs.
pub(crate) fn forward<T: Element>(
    x: ArrayView4<'_, T>,
    w: ArrayView4<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    g: &Geometry,
    mut y: ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
) {
    if g.batch == 0 {
        return;
    }
    let mut weights_buf = std::mem::take(&mut ws.flipped_weights);
    let taps = (0..g.kh).flat_map(|i| (0..g.kw).map(move |j| (i, j)));
    let weights = reorder_weights(w, taps, false, &mut weights_buf);
    let image = input_image(g);
    let row_pixels = image.row_outputs();
    let output = Image {
        c: g.out_channels,
        h: g.out_h,
        w: row_pixels,
        tail: 0,
    };
    let row_bytes = (row_pixels * g.out_channels * std::mem::size_of::<T>()).max(1);
    let band = (ws.column_cap_bytes() / row_bytes).clamp(1, g.out_h.max(1));
    let (lanes, per_lane, threads) = plan(g.batch);
    ws.ensure_lanes(lanes);
    ws.lanes[..lanes]
        .par_iter_mut()
        .zip(y.axis_chunks_iter_mut(Axis(0), per_lane).into_par_iter())
        .enumerate()
        .for_each(|(lane_index, (lane, mut y_lane))| {
            for (local, mut y_n) in y_lane.outer_iter_mut().enumerate() {
                let x_n = x.index_axis(Axis(0), lane_index * per_lane + local);
                let data = image.fill(x_n, &mut lane.source);
                for r0 in (0..g.out_h).step_by(band) {
                    let rows = r0..(r0 + band).min(g.out_h);
                    let len = rows.len() * row_pixels * g.out_channels;
                    let product = scratch(&mut lane.product, len);
                    sum_of_runs(
                        ArrayViewMut2::from_shape(
                            (rows.len() * row_pixels, g.out_channels),
                            &mut *product,
                        )
                        .expect("sized above"),
                        (data, g.in_channels, g.sw),
                        forward_runs(g),
                        |run| image.offset(run.phase.0, (r0 + run.at.0, run.at.1)),
                        weights,
                        threads,
                    );
                    output.read(product, y_n.view_mut(), rows, bias);
                }
            }
        });
    ws.flipped_weights = weights_buf;
}

/// The input gradient's side of the backward pass: which phase pixels of
/// the padded input are input pixels, the padded error every phase reads,
/// and the image the phases are written into.
struct InputGradientPlan {
    geometry: Geometry,
    /// The error image; `dy[oh, ow]` lies at its pixel `at + (oh, ow)`.
    error: Image,
    at: (usize, usize),
    /// The input gradient as the forward pass's input image, with rows
    /// `sw·error.w` pixels long: a phase's GEMM then writes its pixels in
    /// place, rows `sw` pixels apart.
    gradient: PhasedImage,
}

/// The positions `u` of phase `phase` of a stride (holding the padded
/// positions `phase + stride·u`) that are input positions, `pad .. pad +
/// len` in padded terms.
fn inside(phase: usize, stride: usize, pad: usize, len: usize) -> Range<usize> {
    pad.saturating_sub(phase).div_ceil(stride)..(pad + len).saturating_sub(phase).div_ceil(stride)
}

impl InputGradientPlan {
    /// Row phase `a`'s rows that hold input rows.
    fn rows(&self, a: usize) -> Range<usize> {
        let g = &self.geometry;
        inside(a, g.sh, g.padding.top, g.in_h)
    }

    /// Column phase `b`'s pixels that are input columns.
    fn cols(&self, b: usize) -> Range<usize> {
        let g = &self.geometry;
        inside(b, g.sw, g.padding.left, g.in_w)
    }

    fn new(g: &Geometry) -> Self {
        let p = g.padding;
        let rows = (0..g.sh).map(|a| inside(a, g.sh, p.top, g.in_h));
        let cols = (0..g.sw).map(|b| inside(b, g.sw, p.left, g.in_w));
        // Phase pixel `(u, v)` reads the error at `(u - q_i, v - q_j) + at`,
        // which must not be negative for the first input pixel.
        let (reach_i, reach_j) = ((g.kh - 1) * g.dh / g.sh, (g.kw - 1) * g.dw / g.sw);
        let at = (
            reach_i.saturating_sub(rows.clone().map(|r| r.start).min().unwrap_or(0)),
            reach_j.saturating_sub(cols.clone().map(|c| c.start).min().unwrap_or(0)),
        );
        let end_row = rows.map(|r| r.end).max().unwrap_or(0);
        let end_col = cols.clone().map(|c| c.end).max().unwrap_or(0);
        let start_col = cols.map(|c| c.start).max().unwrap_or(0);
        let error = Image::padded(
            g.out_channels,
            (g.out_h, g.out_w),
            [
                at.0,
                end_row.saturating_sub(g.out_h),
                at.1,
                end_col.saturating_sub(g.out_w),
            ],
            // A phase's windows start `start - q_j + at.1` pixels into a
            // row: the last row's dropped pixels read that far past it.
            start_col + at.1,
        );
        // Rows exactly `sw·error.w` pixels long, which holds every input
        // column (`end(&cols)·sw ≥ left + in_w`).
        let gradient = PhasedImage {
            phase: Image {
                c: g.in_channels,
                h: (p.top + g.in_h + p.bottom).div_ceil(g.sh),
                w: g.sw * error.w,
                // The dropped pixels of a phase's last row are written up
                // to one stride past the next row's start, in its left
                // padding.
                tail: p.left + g.sw,
            },
            sh: g.sh,
            sw: g.sw,
            top: p.top,
            left: p.left,
        };
        InputGradientPlan {
            geometry: *g,
            error,
            at,
            gradient,
        }
    }
}

/// Backward pass, see the module docs: one pass over the batch, each lane
/// summing its samples' weight and bias gradients into its own partials,
/// added up at the end. Overwrites `dx`, `dw` and `db`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<T: Element>(
    x: ArrayView4<'_, T>,
    w: ArrayView4<'_, T>,
    dy: ArrayView4<'_, T>,
    g: &Geometry,
    mut dx: ArrayViewMut4<'_, T>,
    mut dw: ArrayViewMut4<'_, T>,
    mut db: ArrayViewMut1<'_, T>,
    ws: &mut Workspace<T>,
) {
    dw.fill(T::zero());
    db.fill(T::zero());
    if g.batch == 0 {
        return;
    }
    let (c_in, c_out) = (g.in_channels, g.out_channels);
    let image = input_image(g);
    let row_pixels = image.row_outputs();
    let plan_dx = InputGradientPlan::new(g);
    let error = plan_dx.error;
    // The error laid out like the forward product, for the weight gradient:
    // its own copy, or a view of `error` when that has rows as wide (its
    // pixels past each row are then padding, zero).
    let product_error = Image {
        c: c_out,
        h: g.out_h,
        w: row_pixels,
        tail: 0,
    };
    let shared = error.w == row_pixels;
    let pixels = g.out_h * row_pixels;
    let taps_len = g.kh * g.kw * c_in;
    let mut weights_buf = std::mem::take(&mut ws.flipped_weights);
    let weights = reorder_weights(w, input_gradient_order(g), true, &mut weights_buf);
    let (lanes, per_lane, threads) = plan(g.batch);
    ws.ensure_lanes(lanes);
    ws.lanes[..lanes]
        .par_iter_mut()
        .zip(dx.axis_chunks_iter_mut(Axis(0), per_lane).into_par_iter())
        .enumerate()
        .for_each(|(lane_index, (lane, mut dx_lane))| {
            let dw_len = taps_len * c_out;
            let mut dw_part =
                ArrayViewMut2::from_shape((taps_len, c_out), scratch(&mut lane.dw, dw_len))
                    .expect("sized");
            dw_part.fill(T::zero());
            let db_part = scratch(&mut lane.db, c_out);
            db_part.fill(T::zero());
            for (local, dx_n) in dx_lane.outer_iter_mut().enumerate() {
                let n = lane_index * per_lane + local;
                let dy_n = dy.index_axis(Axis(0), n);
                for (b, plane) in db_part.iter_mut().zip(dy_n.outer_iter()) {
                    *b += plane.sum();
                }
                let x_data = image.fill(x.index_axis(Axis(0), n), &mut lane.source);
                let error_data = error.fill(dy_n, plan_dx.at, &mut lane.accumulator);
                let dy_pixels = if shared {
                    let start = (plan_dx.at.0 * error.w + plan_dx.at.1) * c_out;
                    &error_data[start..start + pixels * c_out]
                } else {
                    &product_error.fill(dy_n, (0, 0), &mut lane.cols)[..pixels * c_out]
                };
                let dy_view = ArrayView2::from_shape((pixels, c_out), dy_pixels).expect("sized");
                for run in forward_runs(g) {
                    let start = image.offset(run.phase.0, run.at);
                    matmul(
                        dw_part.slice_mut(s![run.taps.start * c_in..run.taps.end * c_in, ..]),
                        true,
                        window(x_data, start, (pixels, g.sw), c_in, run.taps.len()).reversed_axes(),
                        dy_view,
                        threads,
                    );
                }
                let gradient = input_gradient_sample(
                    &plan_dx,
                    error_data,
                    g,
                    weights,
                    &mut lane.error,
                    threads,
                );
                plan_dx.gradient.read(gradient, dx_n);
            }
        });
    ws.flipped_weights = weights_buf;
    for lane in &ws.lanes[..lanes] {
        let part = ArrayView4::from_shape((g.kh, g.kw, c_in, c_out), &lane.dw[..taps_len * c_out])
            .expect("written by the lane");
        dw += &part.permuted_axes([3, 2, 0, 1]);
        db += &ArrayView1::from(&lane.db[..c_out]);
    }
}

/// One sample's input gradient, phase by phase, each phase's GEMMs writing
/// its pixels in place in `buf` (laid out as `plan.gradient`), whose input
/// pixels it returns with the layout of the forward pass's input image.
fn input_gradient_sample<'b, T: Element>(
    plan: &InputGradientPlan,
    error_data: &[T],
    g: &Geometry,
    weights: ArrayView2<'_, T>,
    buf: &'b mut Vec<T>,
    threads: usize,
) -> &'b [T] {
    let (c_in, c_out) = (g.in_channels, g.out_channels);
    let (error, gradient) = (plan.error, plan.gradient);
    let data = scratch(buf, gradient.len());
    for a in 0..g.sh {
        for b in 0..g.sw {
            let (rows, cols) = (plan.rows(a), plan.cols(b));
            if rows.is_empty() || cols.is_empty() {
                continue;
            }
            // Phase pixel `(u, v)` of the product lies `((u - rows.start)·
            // error.w + v - cols.start)` rows down; in `data`, at column
            // `b + sw·v` of row `u`, rows `sw` pixels apart.
            let start = gradient.offset(a, (rows.start, b + g.sw * cols.start));
            let product_rows = rows.len() * error.w;
            let shape = (product_rows, c_in).strides((g.sw * c_in, 1));
            let mut product = ArrayViewMut2::from_shape(shape, &mut data[start..])
                .expect("the gradient image holds every phase's product");
            let mut phase_runs = input_gradient_runs(g)
                .filter(|r| r.phase == (a, b))
                .peekable();
            if phase_runs.peek().is_none() {
                // No tap lands in this phase: its input gradient is zero.
                product.fill(T::zero());
                continue;
            }
            sum_of_runs(
                product,
                (error_data, c_out, 1),
                phase_runs,
                |run| {
                    let row = rows.start + plan.at.0 - run.at.0;
                    (row * error.w + cols.start + plan.at.1 - run.at.1) * c_out
                },
                weights,
                threads,
            );
        }
    }
    data
}
