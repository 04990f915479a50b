//! `Kernel::Shifted`: convolutions without a column matrix.
//!
//! Each sample is copied once, padded, into a pixel-major buffer (`[pixel,
//! channel]`, as HWC; the copy is a tiled transpose, see `layout/transpose.rs`),
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
//! It computes any geometry with one group. Against the column matrix, the
//! lowering copy and the col2im scatter are gone, and every GEMM runs in
//! the orientation the `gemm` crate is fastest in (product rows are
//! pixels); BENCHMARKS.md, "Kernel choice", has the figures.
//!
//! CBLAS cannot describe a matrix whose rows overlap (its leading dimension
//! must cover a row), so in a BLAS build this kernel's GEMMs, which all read
//! a window, run on the pure-Rust `gemm` crate (`gemm.rs` falls back by
//! itself).

use crate::element::Element;
use crate::gemm::matmul;
use crate::gradients::{Targets, add_bias_gradient};
use crate::lanes::{Partials, Work};
use crate::layout::pixel_major::{Image, PhasedImage};
use crate::operands::{Backward, Forward};
use crate::spec::Geometry;
use crate::workspace::{Workspace, scratch};
use ndarray::{
    ArrayView2, ArrayView3, ArrayView4, ArrayViewMut2, ArrayViewMut4, Axis, ShapeBuilder, s,
};
use std::ops::Range;

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

/// The backward pass cuts the batch into whole samples only: the input
/// gradient of a sample gathers from all of its error.
pub(super) fn backward_row_granule(g: &Geometry) -> usize {
    g.out_h
}

/// The forward pass, see the module docs.
pub(crate) fn forward<T: Element>(
    op: Forward<'_, T>,
    y: ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
) {
    let Forward { x, w, bias, g } = op;
    let image = input_image(g);
    let row_pixels = image.row_outputs();
    let output = Image {
        c: g.out_channels,
        h: g.out_h,
        w: row_pixels,
        tail: 0,
    };
    // Bands of output rows whose GEMM product stays under the cap.
    let row_bytes = (row_pixels * g.out_channels * std::mem::size_of::<T>()).max(1);
    let band = (ws.column_cap_bytes() / row_bytes).clamp(1, g.out_h.max(1));
    let schedule = ws.schedule(Work::forward(g, 1));
    let (weights_buf, lanes) = ws.memory(&schedule);
    let taps = (0..g.kh).flat_map(|i| (0..g.kw).map(move |j| (i, j)));
    let weights = reorder_weights(w, taps, false, weights_buf);
    schedule.run(lanes, y, |item, mut y_item, buffers| {
        let [image_buf, product_buf, staging_buf] = buffers.split();
        for (n, mut y_n) in item.samples.clone().zip(y_item.outer_iter_mut()) {
            let data = image.fill(x.index_axis(Axis(0), n), image_buf);
            for r0 in item.rows.clone().step_by(band) {
                let rows = r0..(r0 + band).min(item.rows.end);
                let len = rows.len() * row_pixels * g.out_channels;
                let product = scratch(product_buf, len);
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
                    item.gemm_threads,
                );
                let local = rows.start - item.rows.start..rows.end - item.rows.start;
                output.read_band(product, y_n.slice_mut(s![.., local, ..]), bias, staging_buf);
            }
        }
    });
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

    /// The error of one sample laid out like the forward product (`[pixel,
    /// c_out]`, rows `image.row_outputs()` pixels long), for the weight
    /// gradient: a view of the padded error `error_data` when its rows are
    /// as wide (its pixels past each row are then padding, zero; the usual
    /// "same" padding), else a copy into `buf`.
    fn product_error<'e, T: Element>(
        &self,
        g: &Geometry,
        image: &PhasedImage,
        error_data: &'e [T],
        dy_n: ArrayView3<'_, T>,
        buf: &'e mut Vec<T>,
    ) -> ArrayView2<'e, T> {
        let (row_pixels, c_out) = (image.row_outputs(), g.out_channels);
        let pixels = g.out_h * row_pixels;
        let data = if self.error.w == row_pixels {
            let start = (self.at.0 * self.error.w + self.at.1) * c_out;
            &error_data[start..start + pixels * c_out]
        } else {
            let layout = Image {
                c: c_out,
                h: g.out_h,
                w: row_pixels,
                tail: 0,
            };
            &layout.fill(dy_n, (0, 0), buf)[..pixels * c_out]
        };
        ArrayView2::from_shape((pixels, c_out), data).expect("sized above")
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

/// The backward pass, see the module docs: one pass over the batch, each
/// lane summing its samples' weight and bias gradients into its partials.
/// Overwrites the gradients present, skipping the GEMMs of the others.
pub(crate) fn backward<T: Element>(
    op: Backward<'_, T>,
    grads: Targets<'_, T>,
    ws: &mut Workspace<T>,
) {
    let Backward { x, w, dy, g } = op;
    let Targets { dx, dw, db } = grads;
    let (want_dx, want_dw, want_db) = (dx.is_some(), dw.is_some(), db.is_some());
    let (c_in, c_out) = (g.in_channels, g.out_channels);
    let image = input_image(g);
    let plan_dx = InputGradientPlan::new(g);
    let taps_len = g.kh * g.kw * c_in;
    let schedule = ws.schedule(Work::backward(g, backward_row_granule(g)));
    let (weights_buf, lanes) = ws.memory(&schedule);
    let weights = if want_dx {
        reorder_weights(w, input_gradient_order(g), true, weights_buf)
    } else {
        ArrayView2::from_shape((0, 0), &[][..]).expect("empty")
    };
    let dw_len = if want_dw { taps_len * c_out } else { 0 };
    let db_len = if want_db { c_out } else { 0 };
    let sums = schedule.run_summing(
        lanes,
        dx,
        (dw_len, db_len),
        |item, mut dx_item, buffers, mut partials| {
            let [image_buf, error_buf, product_error_buf, gradient_buf] = buffers.split();
            for (local, n) in item.samples.clone().enumerate() {
                let dy_n = dy.index_axis(Axis(0), n);
                if want_db {
                    add_bias_gradient(dy_n, partials.bias);
                }
                if !(want_dw || want_dx) {
                    continue;
                }
                let error_data = plan_dx.error.fill(dy_n, plan_dx.at, error_buf);
                if want_dw {
                    let x_data = image.fill(x.index_axis(Axis(0), n), image_buf);
                    let product_error =
                        plan_dx.product_error(g, &image, error_data, dy_n, product_error_buf);
                    add_weight_gradient(
                        (x_data, &image),
                        product_error,
                        g,
                        &mut partials,
                        item.gemm_threads,
                    );
                }
                if let Some(dx_item) = &mut dx_item {
                    let gradient = input_gradient_sample(
                        &plan_dx,
                        error_data,
                        g,
                        weights,
                        gradient_buf,
                        item.gemm_threads,
                    );
                    plan_dx
                        .gradient
                        .read(gradient, dx_item.index_axis_mut(Axis(0), local));
                }
            }
        },
    );
    if let Some(mut dw) = dw {
        let part = ArrayView4::from_shape((g.kh, g.kw, c_in, c_out), sums.weight)
            .expect("sized by the schedule");
        dw.assign(&part.permuted_axes([3, 2, 0, 1]));
    }
    if let Some(mut db) = db {
        db.assign(&sums.bias);
    }
}

/// `dW_run += X_runᵀ · dY` for every forward run, into the partial laid
/// out `[(tap, c_in), c_out]`; `dy` is the error laid out like the forward
/// product.
fn add_weight_gradient<T: Element>(
    (x_data, image): (&[T], &PhasedImage),
    dy: ArrayView2<'_, T>,
    g: &Geometry,
    partials: &mut Partials<'_, T>,
    threads: usize,
) {
    let c_in = g.in_channels;
    let mut dw =
        ArrayViewMut2::from_shape((g.kh * g.kw * c_in, g.out_channels), &mut *partials.weight)
            .expect("sized by the schedule");
    for run in forward_runs(g) {
        let start = image.offset(run.phase.0, run.at);
        matmul(
            dw.slice_mut(s![run.taps.start * c_in..run.taps.end * c_in, ..]),
            true,
            window(x_data, start, (dy.nrows(), g.sw), c_in, run.taps.len()).reversed_axes(),
            dy,
            threads,
        );
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
