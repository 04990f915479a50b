//! `Kernel::Shifted`: stride-1 convolutions without a column matrix.
//!
//! Each sample is copied once, padded, into a pixel-major buffer (`[pixel,
//! channel]`, as HWC; the copy is a tiled transpose, see `transpose.rs`).
//! The GEMM's rows are output pixels counted over the image's row length
//! `w` (the pixels past the end of each output row are computed and
//! dropped; `Image::padded` keeps them few), so that tap `(i, j)` reads,
//! for output pixel `q`, the pixel `q + i·dh·w + j·dw`: its window is a row-major `[pixels, c]` matrix
//! with overlapping rows, a zero-copy view. With `dw = 1` the `kw` taps of a
//! kernel row are adjacent pixels, so their windows form one `[pixels,
//! kw·c]` view and one GEMM. So:
//!
//! - forward: `y = Σ_taps X_tap · W_tap`, `W_tap` the weights as `[(j, c),
//!   c_out]`; the product is then transposed back into NCHW;
//! - weight gradient: `dW_tap = X_tapᵀ · dY`, the error laid out like the
//!   product (its extra pixels zero);
//! - input gradient: the forward over the error padded by `(k - 1)·d - p`,
//!   against the flipped, channel-swapped weights. Its padded error also
//!   serves the weight gradient when the two are equally wide (the usual
//!   "same" padding).
//!
//! It applies to stride 1 with one group and padding at most `(k - 1)·d` on
//! every side. Measured per sample on the suite's r3x3, one thread, with
//! each GEMM's operands in cache: forward 2.09 ms against 2.53 for the
//! column matrix and its GEMM, dW 2.13 against 2.25, dX 2.10 against 2.33
//! (col2im). The lowering copy and the col2im scatter are gone, and every
//! GEMM runs in the orientation the `gemm` crate is fastest in (product
//! rows are pixels). BENCHMARKS.md has the whole-row figures.
//!
//! CBLAS cannot describe a matrix whose rows overlap (its leading dimension
//! must cover a row), so in a BLAS build this kernel's GEMMs, which all read
//! a window, run on the pure-Rust `gemm` crate (`gemm.rs` falls back by
//! itself).

use super::image::Image;
use crate::element::Element;
use crate::gemm::matmul;
use crate::spec::Geometry;
use crate::workspace::{Workspace, scratch};
use ndarray::{
    ArrayView1, ArrayView2, ArrayView4, ArrayViewMut1, ArrayViewMut2, ArrayViewMut3, ArrayViewMut4,
    Axis, ShapeBuilder, s,
};
use rayon::prelude::*;
use std::ops::Range;

/// Whether the shifted kernel can compute this geometry at all.
pub(crate) fn applies(g: &Geometry) -> bool {
    let (reach_h, reach_w) = ((g.kh - 1) * g.dh, (g.kw - 1) * g.dw);
    let p = g.padding;
    (g.sh, g.sw, g.groups) == (1, 1, 1)
        && p.top <= reach_h
        && p.bottom <= reach_h
        && p.left <= reach_w
        && p.right <= reach_w
}

/// Whether `Kernel::Auto` picks it: where it applies, the kernel is larger
/// than 1x1 (a 1x1 kernel's column matrix is already the input itself:
/// r1x1 measured 15% slower here) and both channel counts are at least 32,
/// so that each GEMM has a sizeable inner dimension. Measured: 5x slower
/// than the column matrix at one input channel (the seed row, whose one
/// GEMM covers every tap), 7–12% faster at 64 (r3x3); the threshold between
/// is a judgment, not a measurement.
pub(crate) fn suits(g: &Geometry) -> bool {
    applies(g) && g.kh * g.kw > 1 && g.in_channels >= 32 && g.out_channels >= 32
}

impl Image {
    /// The window of the kernel taps `run` for output rows `rows`:
    /// `[rows·w, run.len·c]`, a zero-copy view with overlapping rows.
    fn window<'a, T>(
        &self,
        data: &'a [T],
        run: TapRun,
        (dh, dw): (usize, usize),
        rows: Range<usize>,
    ) -> ArrayView2<'a, T> {
        let first = ((rows.start + run.i * dh) * self.w + run.j0 * dw) * self.c;
        let shape = (rows.len() * self.w, run.len * self.c);
        ArrayView2::from_shape(shape.strides((self.c, 1)), &data[first..])
            .expect("windows stay inside the image and its tail by construction")
    }
}

/// The taps one GEMM covers: kernel row `i`, columns `j0..j0 + len`.
#[derive(Clone, Copy, Debug)]
struct TapRun {
    i: usize,
    j0: usize,
    len: usize,
}

/// One run per kernel row when its taps are adjacent pixels (`dw = 1`),
/// one per tap otherwise.
fn tap_runs(g: &Geometry) -> impl Iterator<Item = TapRun> + use<> {
    let (kh, kw, fused) = (g.kh, g.kw, g.dw == 1);
    let len = if fused { kw } else { 1 };
    (0..kh * kw).step_by(len).map(move |t| TapRun {
        i: t / kw,
        j0: t % kw,
        len,
    })
}

/// `dst[.., rows, ..] = Σ_i window_i · weights_i (+ bias)`, band by band so
/// that the product stays under `cap_bytes`; `weights` is `[(i, j, c),
/// c_dst]` and `image` holds `data`.
#[allow(clippy::too_many_arguments)]
fn multiply_sample<T: Element>(
    image: &Image,
    data: &[T],
    g: &Geometry,
    weights: ArrayView2<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    mut dst: ArrayViewMut3<'_, T>,
    product_buf: &mut Vec<T>,
    cap_bytes: usize,
    threads: usize,
) {
    let (c_dst, out_h, _) = dst.dim();
    let row_bytes = (image.w * c_dst * std::mem::size_of::<T>()).max(1);
    let band = (cap_bytes / row_bytes).clamp(1, out_h.max(1));
    for r0 in (0..out_h).step_by(band) {
        let rows = r0..(r0 + band).min(out_h);
        let product = scratch(product_buf, rows.len() * image.w * c_dst);
        let mut product_view =
            ArrayViewMut2::from_shape((rows.len() * image.w, c_dst), &mut *product)
                .expect("sized above");
        for (index, run) in tap_runs(g).enumerate() {
            let first = (run.i * g.kw + run.j0) * image.c;
            matmul(
                product_view.view_mut(),
                index > 0,
                image.window(data, run, (g.dh, g.dw), rows.clone()),
                weights.slice(s![first..first + run.len * image.c, ..]),
                threads,
            );
        }
        image.read(product, dst.view_mut(), rows, bias);
    }
}

/// `weights[(i, j, c), o]` from `w[o, c, i, j]`, flipped in `i` and `j` and
/// with `c` and `o` exchanged when `flip` (the input-gradient pass).
fn reorder_weights<'b, T: Element>(
    w: ArrayView4<'_, T>,
    flip: bool,
    buf: &'b mut Vec<T>,
) -> ArrayView2<'b, T> {
    let (c_out, c_in, kh, kw) = w.dim();
    let (inner, outer) = if flip { (c_out, c_in) } else { (c_in, c_out) };
    let data = scratch(buf, kh * kw * inner * outer);
    let mut view = ArrayViewMut4::from_shape((kh, kw, inner, outer), &mut *data).expect("sized");
    if flip {
        let flipped = w.slice(s![.., .., ..;-1, ..;-1]);
        view.assign(&flipped.permuted_axes([2, 3, 0, 1]));
    } else {
        view.assign(&w.permuted_axes([2, 3, 1, 0]));
    }
    let data: &'b [T] = data;
    ArrayView2::from_shape((kh * kw * inner, outer), data).expect("sized")
}

/// The image the forward pass reads: the input padded by `g.padding`.
fn input_image(g: &Geometry) -> Image {
    let p = g.padding;
    Image::padded(
        g.in_channels,
        (g.in_h, g.in_w),
        [p.top, p.bottom, p.left, p.right],
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
    let weights = reorder_weights(w, false, &mut weights_buf);
    let image = input_image(g);
    let (lanes, per_lane, threads) = plan(g.batch);
    let cap = ws.column_cap_bytes();
    ws.ensure_lanes(lanes);
    ws.lanes[..lanes]
        .par_iter_mut()
        .zip(y.axis_chunks_iter_mut(Axis(0), per_lane).into_par_iter())
        .enumerate()
        .for_each(|(lane_index, (lane, mut y_lane))| {
            for (local, y_n) in y_lane.outer_iter_mut().enumerate() {
                let x_n = x.index_axis(Axis(0), lane_index * per_lane + local);
                let data = image.fill(x_n, (g.padding.top, g.padding.left), &mut lane.source);
                multiply_sample(
                    &image,
                    data,
                    g,
                    weights,
                    bias,
                    y_n,
                    &mut lane.product,
                    cap,
                    threads,
                );
            }
        });
    ws.flipped_weights = weights_buf;
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
    let p = g.padding;
    let image = input_image(g);
    // The error placed so that input pixel (y, x) reads it at (y + i'·dh,
    // x + j'·dw) for flipped tap (i', j'); `applies` keeps this placement
    // non-negative.
    let (reach_h, reach_w) = ((g.kh - 1) * g.dh, (g.kw - 1) * g.dw);
    let error = Image::padded(
        c_out,
        (g.out_h, g.out_w),
        [
            reach_h - p.top,
            reach_h - p.bottom,
            reach_w - p.left,
            reach_w - p.right,
        ],
        reach_w,
    );
    let error_at = (reach_h - p.top, reach_w - p.left);
    // The error laid out like the forward product, for the weight gradient:
    // its own copy, or a view of `error` when that has rows as wide (its
    // shifted-in pixels are then padding, zero).
    let product_error = Image {
        c: c_out,
        h: g.out_h,
        w: image.w,
        tail: 0,
    };
    let shared = error.w == image.w;
    let pixels = g.out_h * image.w;
    let taps_len = g.kh * g.kw * c_in;
    let mut weights_buf = std::mem::take(&mut ws.flipped_weights);
    let weights = reorder_weights(w, true, &mut weights_buf);
    let (lanes, per_lane, threads) = plan(g.batch);
    let cap = ws.column_cap_bytes();
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
                let x_data =
                    image.fill(x.index_axis(Axis(0), n), (p.top, p.left), &mut lane.source);
                let error_data = error.fill(dy_n, error_at, &mut lane.accumulator);
                let dy_pixels = if shared {
                    let start = (error_at.0 * error.w + error_at.1) * c_out;
                    &error_data[start..start + pixels * c_out]
                } else {
                    &product_error.fill(dy_n, (0, 0), &mut lane.cols)[..pixels * c_out]
                };
                let dy_view = ArrayView2::from_shape((pixels, c_out), dy_pixels).expect("sized");
                for run in tap_runs(g) {
                    let first = (run.i * g.kw + run.j0) * c_in;
                    matmul(
                        dw_part.slice_mut(s![first..first + run.len * c_in, ..]),
                        true,
                        image
                            .window(x_data, run, (g.dh, g.dw), 0..g.out_h)
                            .reversed_axes(),
                        dy_view,
                        threads,
                    );
                }
                multiply_sample(
                    &error,
                    error_data,
                    g,
                    weights,
                    None,
                    dx_n,
                    &mut lane.product,
                    cap,
                    threads,
                );
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
