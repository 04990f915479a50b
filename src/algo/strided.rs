//! `Algorithm::Strided`: the fast path.
//!
//! Forward, per tile (one sample, several only when the output is tiny, or
//! a band of output rows of one sample when its column matrix would exceed
//! the cap):
//!
//! 1. **Source**: the tile's samples, read in place when unpadded, unstrided
//!    and contiguous, otherwise copied once into a zero-bordered buffer; for
//!    a column stride above 1 each row's columns are dealt into `sw` phases
//!    (`lower::SourceLayout`), so that every window row below is a
//!    contiguous run.
//! 2. **Window views**: per kernel column `j`, a zero-copy `(n, c, out_h, kh,
//!    out_w)` view of the source whose strides step over the image (ndarray
//!    allows overlapping windows in a read-only view), sliced to the tile's
//!    output rows.
//! 3. **Tile copy**: the views copied once, line by line, into an owned column
//!    matrix `cols[c·kh·kw, n·rows·out_w]`.
//! 4. **GEMM**: `W[c_out, c_in/g·kh·kw] · cols`, one per group for the whole
//!    tile.
//! 5. **Bias and layout**: for a one-sample tile the GEMM writes straight into
//!    the NCHW output; otherwise its `[c_out, n·pixels]` product is laid out
//!    as NCHW. Then the bias.
//!
//! Backward reuses steps 1 to 3 on the input. The weight gradient is a GEMM
//! reduction over the batch, `dW += dY_tile · cols_tileᵀ`, each lane summing
//! into its own partial, the partials added once at the end. The input
//! gradient is either (see [`InputGradient`]) col2im in the same pass,
//! `dcols = Wᵀ · dY_tile` added back onto a padded buffer (phased like the
//! source, so the adds are contiguous runs too), or a second
//! forward-like pass over the error dilated by the stride and padded
//! (`lower::dilate_and_pad_error`), lowered with stride 1 against the flipped,
//! channel-swapped weights.
//!
//! Parallelism: the batch is split into one contiguous block per rayon thread
//! (a "lane"), each lane running single-threaded GEMMs over its tiles. When
//! the batch is smaller than the thread count the spare threads go to the
//! GEMM instead, so the two levels are never nested.
//!
//! The other kernels of this algorithm live beside it and are chosen here
//! ([`resolve`]): `direct.rs` for depthwise-like groups (and, forward,
//! `direct_tiled.rs` for few output channels), `winograd.rs` for 3x3 at
//! stride 1 and `shifted.rs` for other kernels, both with many channels (no
//! column matrix at all).

use crate::element::Element;
use crate::gemm::matmul;
use crate::lower::{
    SourceLayout, Window, add_columns_to_windows, copy_windows_to_columns, crop_into,
    dilate_and_pad_error, flip_and_swap_weights, pad_into,
};
use crate::spec::{Geometry, Padding};
use crate::workspace::{InputGradient, Kernel, Workspace, scratch};
use ndarray::{
    ArrayBase, ArrayView1, ArrayView2, ArrayView4, ArrayViewMut1, ArrayViewMut2, ArrayViewMut4,
    Axis, Ix2, Ix3, RawData, ShapeBuilder, s,
};
use rayon::prelude::*;
use std::ops::Range;

/// How a batch is spread over threads and cut into tiles.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Parallel lanes, each owning a contiguous block of the batch.
    lanes: usize,
    /// Samples per lane block (the last block may be shorter).
    per_lane: usize,
    /// Samples per tile; when above 1, a tile spans all output rows.
    /// See [`MIN_TILE_COLUMNS`].
    samples_per_tile: usize,
    /// Output rows per tile (all of them unless one sample exceeds the cap).
    rows_per_tile: usize,
    out_h: usize,
    /// Threads each GEMM may use: 1 unless there are fewer lanes than threads.
    gemm_threads: usize,
}

/// Samples share a tile only until it has this many columns (output
/// pixels). One sample a tile lets the GEMM write straight into the output
/// and read the error in place, and keeps the column matrix in cache:
/// measured on `seed64`, 80 µs forward with one sample a tile against 130 µs
/// with the lane's 8 samples in one; on 8x8 images (16 channels, batch 64)
/// 0.30 ms against 0.40 ms forward and 0.6 ms against 1.4 ms backward. Tiny
/// outputs still gather samples, so that a GEMM is not called per pixel.
const MIN_TILE_COLUMNS: usize = 64;

/// A piece of work: some samples, and some output rows of each.
#[derive(Clone, Debug)]
struct Tile {
    samples: Range<usize>,
    rows: Range<usize>,
}

/// Splits a batch into lanes, one per thread of the current rayon pool at
/// most: `(lanes, samples per lane)`, the last lane possibly shorter.
pub(super) fn split_batch(batch: usize) -> (usize, usize) {
    let threads = rayon::current_num_threads().max(1);
    let lanes = threads.min(batch).max(1);
    let per_lane = batch.div_ceil(lanes).max(1);
    (batch.div_ceil(per_lane), per_lane)
}

impl Plan {
    /// Tiles whose column matrix (`col_rows` rows, one column per output
    /// pixel) stays under `cap_bytes`, unless a single output row exceeds it.
    fn new<T>(
        batch: usize,
        (out_h, out_w): (usize, usize),
        col_rows: usize,
        cap_bytes: usize,
        single_samples: bool,
    ) -> Self {
        let threads = rayon::current_num_threads().max(1);
        let (lanes, per_lane) = split_batch(batch);
        let row_bytes = (col_rows * out_w * std::mem::size_of::<T>()).max(1);
        let sample_bytes = row_bytes.saturating_mul(out_h);
        let (samples_per_tile, rows_per_tile) = if single_samples {
            (1, out_h)
        } else if sample_bytes <= cap_bytes {
            let wanted = MIN_TILE_COLUMNS.div_ceil((out_h * out_w).max(1));
            (
                wanted.min(cap_bytes / sample_bytes).clamp(1, per_lane),
                out_h,
            )
        } else {
            (1, (cap_bytes / row_bytes).clamp(1, out_h.max(1)))
        };
        Plan {
            lanes,
            per_lane,
            samples_per_tile,
            rows_per_tile,
            out_h,
            gemm_threads: (threads / lanes.max(1)).max(1),
        }
    }

    /// The tiles of lane `lane`, in order: sample chunks, and within a
    /// one-sample chunk its bands of rows from top to bottom.
    fn tiles(&self, lane: usize, batch: usize) -> impl Iterator<Item = Tile> + use<> {
        let start = lane * self.per_lane;
        let end = (start + self.per_lane).min(batch);
        let Plan {
            samples_per_tile,
            rows_per_tile,
            out_h,
            ..
        } = *self;
        (start..end).step_by(samples_per_tile).flat_map(move |n0| {
            let samples = n0..(n0 + samples_per_tile).min(end);
            (0..out_h).step_by(rows_per_tile).map(move |r0| Tile {
                samples: samples.clone(),
                rows: r0..(r0 + rows_per_tile).min(out_h),
            })
        })
    }
}

/// `(c, h, w)` as a `[c, h·w]` matrix, if the layout allows it without a copy.
fn channel_matrix<S: RawData>(mut a: ArrayBase<S, Ix3>) -> Option<ArrayBase<S, Ix2>> {
    (a.merge_axes(Axis(1), Axis(2)) || a.len_of(Axis(1)) <= 1).then(|| a.remove_axis(Axis(1)))
}

/// What a pass lowers: the input (forward, weight gradient) or the output
/// gradient (input gradient by error lowering).
enum Source<'a, T> {
    Input {
        x: ArrayView4<'a, T>,
        padding: Padding,
        /// Column phases of the prepared copy: the column stride, so that
        /// the tile copy moves contiguous runs (see [`SourceLayout`]).
        phases: usize,
    },
    Error {
        dy: ArrayView4<'a, T>,
        geometry: Geometry,
    },
}

impl<T: Element> Source<'_, T> {
    /// `(channels, height, width)` of one prepared sample.
    fn sample_shape(&self) -> (usize, usize, usize) {
        match self {
            Source::Input { x, padding, .. } => {
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

    /// Whether a sample chunk can be read where it lies, without a copy.
    fn in_place(&self, range: Range<usize>) -> Option<&[T]> {
        match self {
            Source::Input {
                x,
                padding,
                phases: 1,
            } if padding.is_zero() => x.slice(s![range, .., .., ..]).to_slice(),
            _ => None,
        }
    }

    /// How `samples` prepared samples lie in memory, in place or copied
    /// (only an unphased input is read in place, see [`Self::in_place`]).
    fn layout(&self, samples: usize) -> SourceLayout {
        let (c, h, w) = self.sample_shape();
        let phases = match self {
            Source::Input { phases, .. } => *phases,
            Source::Error { .. } => 1,
        };
        SourceLayout {
            phases,
            ..SourceLayout::plain((samples, c, h, w))
        }
    }

    /// Step 1: the samples `range` as a contiguous padded buffer, borrowed
    /// from the input when no copy is needed, else written into `buf`.
    fn prepare<'s>(&'s self, range: Range<usize>, buf: &'s mut Vec<T>) -> (&'s [T], SourceLayout) {
        let layout = self.layout(range.len());
        if let Some(in_place) = self.in_place(range.clone()) {
            return (in_place, layout);
        }
        let buf = scratch(buf, layout.len());
        match self {
            Source::Input { x, padding, phases } => {
                pad_into(x.slice(s![range, .., .., ..]), *padding, *phases, buf);
            }
            Source::Error { dy, geometry } => {
                dilate_and_pad_error(dy.slice(s![range, .., .., ..]), geometry, buf);
            }
        }
        (buf, layout)
    }

    /// Steps 1 to 3 for one tile: its column matrix, `[c·kh·kw,
    /// n·rows·out_w]`, in `cols_buf`. The source is prepared once per sample
    /// chunk (on the tile that starts at row 0) and kept in `source_buf` for
    /// the chunk's later bands.
    fn lower<'s>(
        &'s self,
        tile: &Tile,
        window: &Window,
        source_buf: &mut Vec<T>,
        cols_buf: &'s mut Vec<T>,
    ) -> ArrayView2<'s, T> {
        if let Some(cols) = self.lowered_in_place(tile, window) {
            return cols;
        }
        let (c, _, _) = self.sample_shape();
        let rows = c * window.kh * window.kw;
        let columns = tile.samples.len() * tile.rows.len() * window.out_w;
        let (source, layout) = if tile.rows.start == 0 {
            self.prepare(tile.samples.clone(), source_buf)
        } else {
            // A later band of the same chunk: prepared on its first band.
            let source = self.in_place(tile.samples.clone());
            (
                source.unwrap_or(&source_buf[..]),
                self.layout(tile.samples.len()),
            )
        };
        let cols = scratch(cols_buf, rows * columns);
        copy_windows_to_columns(source, layout, window, tile.rows.clone(), cols);
        ArrayView2::from_shape((rows, columns), &*cols).expect("column buffer sized above")
    }

    /// Whether every tile's column matrix is a view of the input itself: a
    /// 1x1 kernel with stride 1 and no padding reads each pixel once, in
    /// order, so `x[n]` as `[c, h·w]` already is the column matrix.
    fn lowers_in_place(&self, window: &Window) -> bool {
        let pointwise = (window.kh, window.kw, window.sh, window.sw) == (1, 1, 1, 1);
        matches!(self, Source::Input { padding, .. } if pointwise && padding.is_zero())
    }

    /// The column matrix of a one-sample tile as a view of the input, when
    /// [`lowers_in_place`](Self::lowers_in_place) and the layout allows.
    fn lowered_in_place(&self, tile: &Tile, window: &Window) -> Option<ArrayView2<'_, T>> {
        let Source::Input { x, .. } = self else {
            return None;
        };
        if !self.lowers_in_place(window) || tile.samples.len() != 1 {
            return None;
        }
        let sample = x.slice(s![tile.samples.start, .., .., ..]);
        let columns = tile.rows.start * window.out_w..tile.rows.end * window.out_w;
        channel_matrix(sample).map(|m| m.slice_move(s![.., columns]))
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
    let col_rows = c_src * window.kh * window.kw;
    let plan = Plan::new::<T>(
        batch,
        (window.out_h, window.out_w),
        col_rows,
        ws.column_cap_bytes(),
        source.lowers_in_place(window),
    );
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
            for tile in plan.tiles(lane_index, batch) {
                let cols = source.lower(&tile, window, &mut lane.source, &mut lane.cols);
                let local = tile.samples.start - lane_start..tile.samples.end - lane_start;
                let y_tile = y_lane.slice_mut(s![local, .., tile.rows.clone(), ..]);
                multiply_into_output(
                    weights,
                    cols,
                    bias,
                    groups,
                    y_tile,
                    &mut lane.product,
                    plan.gemm_threads,
                );
            }
        });
}

/// `product = weights · cols`, group by group: group `g`'s output rows come
/// from its rows of `weights` and of `cols`.
fn grouped_matmul<T: Element>(
    mut product: ArrayViewMut2<'_, T>,
    accumulate: bool,
    weights: ArrayView2<'_, T>,
    cols: ArrayView2<'_, T>,
    groups: usize,
    threads: usize,
) {
    let (rows_g, inner_g) = (product.nrows() / groups, cols.nrows() / groups);
    for group in 0..groups {
        let out_rows = group * rows_g..(group + 1) * rows_g;
        matmul(
            product.slice_mut(s![out_rows.clone(), ..]),
            accumulate,
            weights.slice(s![out_rows, ..]),
            cols.slice(s![group * inner_g..(group + 1) * inner_g, ..]),
            threads,
        );
    }
}

/// Steps 4 and 5: `y_tile = weights · cols (+ bias)`.
fn multiply_into_output<T: Element>(
    weights: ArrayView2<'_, T>,
    cols: ArrayView2<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    groups: usize,
    mut y: ArrayViewMut4<'_, T>,
    product_buf: &mut Vec<T>,
    threads: usize,
) {
    let (n, c_dst, rows, out_w) = y.dim();
    if n == 1
        && let Some(mut y_mat) = channel_matrix(y.view_mut().index_axis_move(Axis(0), 0))
    {
        // One sample: its [c_dst, rows·out_w] block of y is the GEMM's output.
        grouped_matmul(y_mat.view_mut(), false, weights, cols, groups, threads);
        if let Some(bias) = bias {
            for (mut row, &b) in y_mat.outer_iter_mut().zip(bias) {
                row += b;
            }
        }
        return;
    }
    let product = scratch(product_buf, c_dst * n * rows * out_w);
    let mut product = ArrayViewMut2::from_shape((c_dst, n * rows * out_w), product)
        .expect("product buffer sized above");
    grouped_matmul(product.view_mut(), false, weights, cols, groups, threads);
    let product = product
        .into_shape_with_order((c_dst, n, rows, out_w))
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

/// The kernel that runs the forward pass: [`resolve`], except that
/// `Kernel::Auto` also takes the direct kernel for the layers its register
/// tiles suit (few output channels; its backward has no such tiles).
fn resolve_forward(ws: &Workspace<impl Element>, g: &Geometry) -> Kernel {
    match ws.kernel() {
        Kernel::Auto if super::direct_tiled::suits(g) => Kernel::Direct,
        _ => resolve(ws, g),
    }
}

/// The kernel that runs: `Kernel::Auto` and `Kernel::Shifted` resolved.
fn resolve(ws: &Workspace<impl Element>, g: &Geometry) -> Kernel {
    match ws.kernel() {
        Kernel::Auto if super::direct::suits(g) => Kernel::Direct,
        Kernel::Auto if ws.input_gradient() == InputGradient::Auto && super::winograd::suits(g) => {
            Kernel::Winograd
        }
        Kernel::Auto if ws.input_gradient() == InputGradient::Auto && super::shifted::suits(g) => {
            Kernel::Shifted
        }
        Kernel::Shifted if super::shifted::applies(g) => Kernel::Shifted,
        Kernel::Winograd if super::winograd::applies(g) => Kernel::Winograd,
        Kernel::Direct => Kernel::Direct,
        _ => Kernel::Gemm,
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
    match resolve_forward(ws, g) {
        Kernel::Direct => return super::direct::forward(x, w, bias, g, y, ws),
        Kernel::Shifted => return super::shifted::forward(x, w, bias, g, y, ws),
        Kernel::Winograd => return super::winograd::forward(x, w, bias, g, y, ws),
        _ => {}
    }
    let weights = w
        .to_shape((g.out_channels, g.col_rows() / g.groups))
        .expect("weight shape validated");
    let source = Source::Input {
        x,
        padding: g.padding,
        phases: g.sw,
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

/// Whether the input gradient goes by col2im.
fn use_col2im(method: InputGradient) -> bool {
    match method {
        InputGradient::Col2im => true,
        InputGradient::ErrorLowering => false,
        // Measured on the suite (BENCHMARKS.md): col2im is clearly faster
        // where the lowering's GEMM grows with the stride squared (stem
        // 6.7x, r3x3s2 1.9x) and within the machine's noise elsewhere.
        InputGradient::Auto => true,
    }
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
    match resolve(ws, g) {
        Kernel::Direct => return super::direct::backward(x, w, dy, g, dx, dw, db, ws),
        Kernel::Shifted => return super::shifted::backward(x, w, dy, g, dx, dw, db, ws),
        Kernel::Winograd => return super::winograd::backward(x, w, dy, g, dx, dw, db, ws),
        _ => {}
    }
    if use_col2im(ws.input_gradient()) {
        weight_gradient_pass(x, w, dy, g, dw, db, Some(dx), ws);
        return;
    }
    weight_gradient_pass(x, w, dy, g, dw, db, None, ws);
    let len = g.in_channels * g.out_channels_per_group() * g.kh * g.kw;
    let mut flipped = std::mem::take(&mut ws.flipped_weights);
    flip_and_swap_weights(w, g.groups, scratch(&mut flipped, len));
    let weights = ArrayView2::from_shape(
        (g.in_channels, g.out_channels_per_group() * g.kh * g.kw),
        &flipped[..len],
    )
    .expect("sized above");
    let source = Source::Error { dy, geometry: *g };
    lower_and_multiply(
        &source,
        weights,
        None,
        &Window::input_gradient(g),
        g.groups,
        dx,
        ws,
    );
    ws.flipped_weights = flipped;
}

/// The error of one tile as a `[c_out, n·rows·out_w]` matrix matching the
/// columns of the tile's `cols`: a view of `dy` for a one-sample tile whose
/// layout allows it, else a copy into `buf`.
fn error_matrix<'a, T: Element>(
    dy: ArrayView4<'a, T>,
    tile: &Tile,
    buf: &'a mut Vec<T>,
) -> ArrayView2<'a, T> {
    let dy_tile = dy.slice_move(s![tile.samples.clone(), .., tile.rows.clone(), ..]);
    let (n, c_out, rows, out_w) = dy_tile.dim();
    if n == 1
        && let Some(view) = channel_matrix(dy_tile.index_axis_move(Axis(0), 0))
    {
        return view;
    }
    let len = c_out * n * rows * out_w;
    let data = scratch(buf, len);
    ArrayViewMut4::from_shape((c_out, n, rows, out_w), &mut *data)
        .expect("sized above")
        .assign(&dy_tile.permuted_axes([1, 0, 2, 3]));
    let data: &'a [T] = data;
    ArrayView2::from_shape((c_out, n * rows * out_w), data).expect("sized above")
}

/// One pass over the batch: `dW = Σ_tiles dY_tile · cols_tileᵀ` and
/// `db = Σ dY`, each lane summing into its own partials, added up once at
/// the end; and, when `dx` is given, the input gradient by col2im.
#[allow(clippy::too_many_arguments)]
fn weight_gradient_pass<T: Element>(
    x: ArrayView4<'_, T>,
    w: ArrayView4<'_, T>,
    dy: ArrayView4<'_, T>,
    g: &Geometry,
    mut dw: ArrayViewMut4<'_, T>,
    mut db: ArrayViewMut1<'_, T>,
    mut dx: Option<ArrayViewMut4<'_, T>>,
    ws: &mut Workspace<T>,
) {
    // `dx` needs no zeroing: every sample's last band crops its whole
    // accumulator into it (a validated geometry has at least one output row).
    dw.fill(T::zero());
    db.fill(T::zero());
    if g.batch == 0 {
        return;
    }
    let c_out = g.out_channels;
    let rows_g = g.col_rows() / g.groups;
    let weights = w.to_shape((c_out, rows_g)).expect("weight shape validated");
    let weights = weights.view();
    let window = Window::forward(g);
    let source = Source::Input {
        x,
        padding: g.padding,
        phases: g.sw,
    };
    // The dW product packs one of its operands, `dY` (`c_out` rows a group)
    // or `cols` (`rows_g` rows), depending on the layout of its result:
    // column-major makes it pack `dY`. Packing the smaller one measured
    // 111 against 84 GFLOP/s a thread on r3x3's product (64 against 576
    // rows), and 111 against 103 the other way round on r1x1's.
    let dw_column_major = g.out_channels_per_group() <= rows_g;
    let plan = Plan::new::<T>(
        g.batch,
        (g.out_h, g.out_w),
        g.col_rows(),
        ws.column_cap_bytes(),
        source.lowers_in_place(&window),
    );
    ws.ensure_lanes(plan.lanes);
    // Each lane gets its block of dx (or nothing, when dx is not computed here).
    let dx_blocks = dx.as_mut().map(|dx| {
        dx.axis_chunks_iter_mut(Axis(0), plan.per_lane)
            .into_par_iter()
            .map(Some)
    });
    let lane_work = |(lane_index, (lane, mut dx_lane)): (
        usize,
        (
            &mut crate::workspace::LaneBuffers<T>,
            Option<ArrayViewMut4<'_, T>>,
        ),
    )| {
        let mut dw_part = ArrayViewMut2::from_shape(
            (c_out, rows_g).set_f(dw_column_major),
            scratch(&mut lane.dw, c_out * rows_g),
        )
        .expect("sized above");
        dw_part.fill(T::zero());
        let mut db_part =
            ArrayViewMut1::from_shape(c_out, scratch(&mut lane.db, c_out)).expect("sized");
        db_part.fill(T::zero());
        let lane_start = lane_index * plan.per_lane;
        for tile in plan.tiles(lane_index, g.batch) {
            let cols = source.lower(&tile, &window, &mut lane.source, &mut lane.cols);
            let dy_mat = error_matrix(dy, &tile, &mut lane.product);
            for (b, row) in db_part.iter_mut().zip(dy_mat.outer_iter()) {
                *b += row.sum();
            }
            let c_out_g = g.out_channels_per_group();
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
            let Some(dx_lane) = &mut dx_lane else {
                continue;
            };
            // col2im: dcols = Wᵀ · dY (cols is spent, so its buffer is reused),
            // added back onto a padded buffer for the tile's samples.
            let n = tile.samples.len();
            let columns = n * tile.rows.len() * g.out_w;
            let mut dcols = ArrayViewMut2::from_shape(
                (g.col_rows(), columns),
                scratch(&mut lane.cols, g.col_rows() * columns),
            )
            .expect("sized above");
            for group in 0..g.groups {
                let cols_rows = group * rows_g..(group + 1) * rows_g;
                let out_rows = group * c_out_g..(group + 1) * c_out_g;
                matmul(
                    dcols.slice_mut(s![cols_rows, ..]),
                    false,
                    weights.slice(s![out_rows.clone(), ..]).reversed_axes(),
                    dy_mat.slice(s![out_rows, ..]),
                    plan.gemm_threads,
                );
            }
            // The input gradient of the tile's samples, laid out as their
            // prepared input is.
            let layout = source.layout(n);
            let accumulator = scratch(&mut lane.accumulator, layout.len());
            if tile.rows.start == 0 {
                accumulator.fill(T::zero());
            }
            let band = Window {
                out_h: tile.rows.len(),
                ..window
            };
            add_columns_to_windows(dcols.view(), accumulator, layout, &band, tile.rows.start);
            if tile.rows.end == g.out_h {
                let local = tile.samples.start - lane_start..tile.samples.end - lane_start;
                crop_into(
                    accumulator,
                    layout,
                    g.padding,
                    dx_lane.slice_mut(s![local, .., .., ..]),
                );
            }
        }
    };
    let lanes = ws.lanes[..plan.lanes].par_iter_mut().enumerate();
    match dx_blocks {
        Some(blocks) => lanes
            .zip(blocks)
            .map(|((i, lane), dx)| (i, (lane, dx)))
            .for_each(lane_work),
        None => lanes.map(|(i, lane)| (i, (lane, None))).for_each(lane_work),
    }
    for lane in &ws.lanes[..plan.lanes] {
        let part = &lane.dw[..c_out * rows_g];
        if dw_column_major {
            // `[c_out, rows_g]` column-major is `[c_out, kw, kh, c]`
            // column-major with its last three axes reversed.
            let shape = (c_out, g.kw, g.kh, g.in_channels_per_group()).f();
            dw += &ArrayView4::from_shape(shape, part)
                .expect("written by the lane")
                .permuted_axes([0, 3, 2, 1]);
        } else {
            dw += &ArrayView4::from_shape(dw.raw_dim(), part).expect("written by the lane");
        }
        db += &ArrayView1::from(&lane.db[..c_out]);
    }
}

#[cfg(test)]
mod tests {
    use super::{Kernel, Workspace, resolve, resolve_forward};
    use crate::spec::Geometry;
    use crate::suite;

    /// What `Kernel::Auto` runs on each suite row, forward and backward, as
    /// BENCHMARKS.md measured it.
    #[test]
    fn auto_kernels_of_the_suite() {
        let ws = Workspace::<f32>::new();
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
        for (id, forward, backward) in expected {
            let row = suite::row(id).unwrap();
            let g = Geometry::new(&row.spec, row.input).unwrap();
            assert_eq!(resolve_forward(&ws, &g), forward, "{id} forward");
            assert_eq!(resolve(&ws, &g), backward, "{id} backward");
        }
    }
}
