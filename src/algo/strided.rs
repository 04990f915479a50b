//! `Algorithm::Strided`: the fast path.
//!
//! Forward, per batch chunk, in this order:
//!
//! 1. **Source**: the chunk of the input, read in place when it is unpadded
//!    and contiguous, otherwise copied once into a zero-bordered buffer.
//! 2. **Window view**: a zero-copy `(n, c, out_h, out_w, kh, kw)` view of the
//!    source whose strides step over the image (ndarray allows overlapping
//!    windows in a read-only view).
//! 3. **Chunk copy**: the view copied once into an owned column matrix
//!    `cols[c·kh·kw, n·out_h·out_w]`.
//! 4. **GEMM**: `W[c_out, c_in/g·kh·kw] · cols`, one per group for the whole
//!    chunk.
//! 5. **Bias and layout**: the `[c_out, n·pixels]` product written out as NCHW,
//!    plus the bias (for a one-sample chunk the GEMM writes NCHW directly).
//!
//! Backward reuses the same machinery. The weight gradient is a GEMM reduction
//! over the batch, `dW += dY_chunk · cols_chunk^T`, each lane summing into
//! its own partial that is added up once at the end. The input gradient is a
//! forward pass of the same kind: the error, dilated by the stride and padded
//! (`lower::dilate_and_pad_error`), lowered with stride 1 against the flipped,
//! channel-swapped weights.
//!
//! Parallelism: the batch is split into one contiguous block per rayon thread
//! (a "lane"), each lane running single-threaded GEMMs over its chunks. When
//! the batch is smaller than the thread count the spare threads go to the
//! GEMM instead, so the two levels are never nested.

use crate::element::Element;
use crate::gemm::matmul;
use crate::lower::{
    Window, copy_windows_to_columns, dilate_and_pad_error, flip_and_swap_weights, pad_into,
    window_view,
};
use crate::spec::{Geometry, Padding};
use crate::workspace::{Workspace, scratch};
use ndarray::{
    ArrayView1, ArrayView2, ArrayView4, ArrayViewMut1, ArrayViewMut2, ArrayViewMut4, Axis, s,
};
use rayon::prelude::*;
use std::ops::Range;

/// How a batch is spread over threads and cut into chunks.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Parallel lanes, each owning a contiguous block of the batch.
    lanes: usize,
    /// Samples per lane block (the last block may be shorter).
    per_lane: usize,
    /// Samples per chunk: one column matrix, one GEMM per group.
    chunk: usize,
    /// Threads each GEMM may use: 1 unless there are fewer lanes than threads.
    gemm_threads: usize,
}

impl Plan {
    fn new<T>(batch: usize, col_elements_per_sample: usize, cap_bytes: usize) -> Self {
        let threads = rayon::current_num_threads().max(1);
        let lanes = threads.min(batch).max(1);
        let per_lane = batch.div_ceil(lanes).max(1);
        let lanes = batch.div_ceil(per_lane);
        let sample_bytes = (col_elements_per_sample * std::mem::size_of::<T>()).max(1);
        Plan {
            lanes,
            per_lane,
            chunk: (cap_bytes / sample_bytes).clamp(1, per_lane),
            gemm_threads: (threads / lanes.max(1)).max(1),
        }
    }

    /// The chunks of lane `lane`, as sample ranges of the whole batch.
    fn chunks(&self, lane: usize, batch: usize) -> impl Iterator<Item = Range<usize>> {
        let start = lane * self.per_lane;
        let end = (start + self.per_lane).min(batch);
        let chunk = self.chunk;
        (start..end)
            .step_by(chunk)
            .map(move |n0| n0..(n0 + chunk).min(end))
    }
}

/// What a pass lowers: the input (forward, weight gradient) or the output
/// gradient (input gradient).
enum Source<'a, T> {
    Input {
        x: ArrayView4<'a, T>,
        padding: Padding,
    },
    Error {
        dy: ArrayView4<'a, T>,
        geometry: Geometry,
    },
}

impl<'a, T: Element> Source<'a, T> {
    /// `(channels, height, width)` of one prepared sample.
    fn sample_shape(&self) -> (usize, usize, usize) {
        match self {
            Source::Input { x, padding } => {
                let (_, c, h, w) = x.dim();
                (
                    c,
                    h + padding.top + padding.bottom,
                    w + padding.left + padding.right,
                )
            }
            Source::Error { geometry: g, .. } => (
                g.out_channels,
                g.in_h + (g.kh - 1) * g.dh,
                g.in_w + (g.kw - 1) * g.dw,
            ),
        }
    }

    /// Step 1: the samples `range` as a contiguous padded buffer, borrowed
    /// from the input when no copy is needed, else written into `buf`.
    fn prepare<'s>(
        &'s self,
        range: Range<usize>,
        buf: &'s mut Vec<T>,
    ) -> (&'s [T], (usize, usize, usize, usize)) {
        let (c, h, w) = self.sample_shape();
        let shape = (range.len(), c, h, w);
        let len = shape.0 * c * h * w;
        match self {
            Source::Input { x, padding } => {
                let chunk = x.slice(s![range, .., .., ..]);
                if padding.is_zero() {
                    if let Some(in_place) = chunk.to_slice() {
                        return (in_place, shape);
                    }
                }
                let buf = scratch(buf, len);
                pad_into(chunk, *padding, buf);
                (buf, shape)
            }
            Source::Error { dy, geometry } => {
                let buf = scratch(buf, len);
                dilate_and_pad_error(dy.slice(s![range, .., .., ..]), geometry, buf);
                (buf, shape)
            }
        }
    }

    /// Steps 1 to 3 for the samples `range`: the chunk's column matrix,
    /// `[c·kh·kw, n·out_h·out_w]`, in `cols_buf`.
    fn lower<'s>(
        &self,
        range: Range<usize>,
        window: &Window,
        source_buf: &mut Vec<T>,
        cols_buf: &'s mut Vec<T>,
    ) -> ArrayView2<'s, T> {
        let (c, _, _) = self.sample_shape();
        let rows = c * window.kh * window.kw;
        let columns = range.len() * window.out_h * window.out_w;
        let (source, shape) = self.prepare(range, source_buf);
        let cols = scratch(cols_buf, rows * columns);
        copy_windows_to_columns(window_view(source, shape, window), cols);
        ArrayView2::from_shape((rows, columns), &*cols).expect("column buffer sized above")
    }
}

/// `y = lower(source) ⋆ weights (+ bias)` for the whole batch: the forward
/// pass, and the input-gradient pass when `source` is the error.
/// `weights` is `[c_dst, c_src/groups·kh·kw]`; `y` is `(n, c_dst, out_h, out_w)`.
fn lower_and_multiply<T: Element>(
    source: &Source<'_, T>,
    weights: ArrayView2<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    window: &Window,
    groups: usize,
    mut y: ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
) {
    let batch = y.len_of(Axis(0));
    if batch == 0 {
        return;
    }
    let (c_src, _, _) = source.sample_shape();
    let col_elements = c_src * window.kh * window.kw * window.out_h * window.out_w;
    let plan = Plan::new::<T>(batch, col_elements, ws.column_cap_bytes());
    ws.ensure_lanes(plan.lanes);
    ws.lanes[..plan.lanes]
        .par_iter_mut()
        .zip(
            y.axis_chunks_iter_mut(Axis(0), plan.per_lane)
                .into_par_iter(),
        )
        .enumerate()
        .for_each(|(lane_index, (lane, mut y_lane))| {
            let lane_start = lane_index * plan.per_lane;
            for range in plan.chunks(lane_index, batch) {
                let local = range.start - lane_start..range.end - lane_start;
                let cols = source.lower(range, window, &mut lane.source, &mut lane.cols);
                multiply_into_output(
                    weights,
                    cols,
                    bias,
                    groups,
                    y_lane.slice_mut(s![local, .., .., ..]),
                    &mut lane.product,
                    plan.gemm_threads,
                );
            }
        });
}

/// Steps 4 and 5: `y_chunk = weights · cols (+ bias)`, group by group.
fn multiply_into_output<T: Element>(
    weights: ArrayView2<'_, T>,
    cols: ArrayView2<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    groups: usize,
    mut y: ArrayViewMut4<'_, T>,
    product_buf: &mut Vec<T>,
    threads: usize,
) {
    let (n, c_dst, out_h, out_w) = y.dim();
    let pixels = out_h * out_w;
    let multiply = |mut product: ArrayViewMut2<'_, T>| {
        let (c_dst_g, rows_g) = (c_dst / groups, cols.nrows() / groups);
        for group in 0..groups {
            let out_rows = group * c_dst_g..(group + 1) * c_dst_g;
            matmul(
                product.slice_mut(s![out_rows.clone(), ..]),
                false,
                weights.slice(s![out_rows, ..]),
                cols.slice(s![group * rows_g..(group + 1) * rows_g, ..]),
                threads,
            );
        }
    };
    if n == 1 && y.is_standard_layout() {
        // One sample: its [c_dst, pixels] block of y is the GEMM's output.
        let mut y_mat = y
            .view_mut()
            .into_shape_with_order((c_dst, pixels))
            .expect("standard layout checked");
        multiply(y_mat.view_mut());
        if let Some(bias) = bias {
            for (mut row, &b) in y_mat.outer_iter_mut().zip(bias) {
                row += b;
            }
        }
        return;
    }
    let product = scratch(product_buf, c_dst * n * pixels);
    let mut product = ArrayViewMut2::from_shape((c_dst, n * pixels), product)
        .expect("product buffer sized above");
    multiply(product.view_mut());
    let product = product
        .into_shape_with_order((c_dst, n, out_h, out_w))
        .expect("product is contiguous")
        .permuted_axes([1, 0, 2, 3]);
    y.assign(&product);
    if let Some(bias) = bias {
        for mut sample in y.outer_iter_mut() {
            for (mut channel, &b) in sample.outer_iter_mut().zip(bias) {
                channel += b;
            }
        }
    }
}

/// Forward pass, see the module docs.
pub(crate) fn forward<T: Element>(
    x: ArrayView4<'_, T>,
    w: ArrayView4<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    g: &Geometry,
    y: ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
) {
    let weights = w
        .to_shape((g.out_channels, g.col_rows() / g.groups))
        .expect("weight shape validated");
    let source = Source::Input {
        x,
        padding: g.padding,
    };
    lower_and_multiply(
        &source,
        weights.view(),
        bias,
        &Window::forward(g),
        g.groups,
        y,
        ws,
    );
}

/// Backward pass, see the module docs. Overwrites `dx`, `dw` and `db`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<T: Element>(
    x: ArrayView4<'_, T>,
    w: ArrayView4<'_, T>,
    dy: ArrayView4<'_, T>,
    g: &Geometry,
    dx: ArrayViewMut4<'_, T>,
    dw: ArrayViewMut4<'_, T>,
    db: ArrayViewMut1<'_, T>,
    ws: &mut Workspace<T>,
) {
    weight_and_bias_gradients(x, dy, g, dw, db, ws);

    let flipped = flip_and_swap_weights(w, g.groups);
    let weights = flipped
        .to_shape((g.in_channels, g.out_channels_per_group() * g.kh * g.kw))
        .expect("flipped weights are contiguous");
    let source = Source::Error { dy, geometry: *g };
    lower_and_multiply(
        &source,
        weights.view(),
        None,
        &Window::input_gradient(g),
        g.groups,
        dx,
        ws,
    );
}

/// `dW = Σ_chunks dY_chunk · cols_chunk^T` and `db = Σ dY`, each lane summing
/// its chunks into its own partials, added up once at the end.
fn weight_and_bias_gradients<T: Element>(
    x: ArrayView4<'_, T>,
    dy: ArrayView4<'_, T>,
    g: &Geometry,
    mut dw: ArrayViewMut4<'_, T>,
    mut db: ArrayViewMut1<'_, T>,
    ws: &mut Workspace<T>,
) {
    dw.fill(T::zero());
    db.fill(T::zero());
    if g.batch == 0 {
        return;
    }
    let (c_out, pixels) = (g.out_channels, g.out_pixels());
    let rows_g = g.col_rows() / g.groups;
    let c_out_g = g.out_channels_per_group();
    let plan = Plan::new::<T>(g.batch, g.col_rows() * pixels, ws.column_cap_bytes());
    let window = Window::forward(g);
    let source = Source::Input {
        x,
        padding: g.padding,
    };
    ws.ensure_lanes(plan.lanes);
    ws.lanes[..plan.lanes]
        .par_iter_mut()
        .enumerate()
        .for_each(|(lane_index, lane)| {
            let mut dw_part =
                ArrayViewMut2::from_shape((c_out, rows_g), scratch(&mut lane.dw, c_out * rows_g))
                    .expect("sized above");
            dw_part.fill(T::zero());
            let mut db_part =
                ArrayViewMut1::from_shape(c_out, scratch(&mut lane.db, c_out)).expect("sized");
            db_part.fill(T::zero());
            for range in plan.chunks(lane_index, g.batch) {
                let n = range.len();
                let dy_chunk = dy.slice(s![range.clone(), .., .., ..]);
                let cols = source.lower(range, &window, &mut lane.source, &mut lane.cols);
                // The chunk's error as a [c_out, n·pixels] matrix, matching
                // the columns of `cols`.
                let mut dy_mat = ArrayViewMut2::from_shape(
                    (c_out, n * pixels),
                    scratch(&mut lane.product, c_out * n * pixels),
                )
                .expect("sized above");
                dy_mat
                    .view_mut()
                    .into_shape_with_order((c_out, n, g.out_h, g.out_w))
                    .expect("contiguous")
                    .assign(&dy_chunk.permuted_axes([1, 0, 2, 3]));
                db_part += &dy_mat.sum_axis(Axis(1));
                for group in 0..g.groups {
                    let out_rows = group * c_out_g..(group + 1) * c_out_g;
                    matmul(
                        dw_part.slice_mut(s![out_rows.clone(), ..]),
                        true,
                        dy_mat.slice(s![out_rows, ..]),
                        cols.slice(s![group * rows_g..(group + 1) * rows_g, ..])
                            .reversed_axes(),
                        plan.gemm_threads,
                    );
                }
            }
        });
    let weight_shape = dw.raw_dim();
    for lane in &ws.lanes[..plan.lanes] {
        let part = ndarray::ArrayView4::from_shape(weight_shape, &lane.dw[..c_out * rows_g])
            .expect("written by the lane");
        dw += &part;
        db += &ArrayView1::from(&lane.db[..c_out]);
    }
}
