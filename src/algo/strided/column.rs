//! The column-matrix kernel ([`Kernel::Gemm`](crate::Kernel)): the input
//! lowered through zero-copy window views into a column matrix, one GEMM
//! per tile.
//!
//! Forward, per tile (one sample, several only when the output is tiny, or
//! a band of output rows of one sample when its column matrix would exceed
//! the cap), within the samples of a work item:
//!
//! 1. **Source**: the tile's samples, read in place when unpadded, unstrided
//!    and contiguous, otherwise copied once into a zero-bordered buffer; for
//!    a column stride above 1 each row's columns are dealt into `sw` phases
//!    (`SourceLayout`), so that every window row below is a contiguous run.
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
//! reduction over the batch, `dW += dY_tile · cols_tileᵀ`, into the lane's
//! partial sums, which the scheduler adds up. The input gradient is either
//! col2im in the same pass ([`backward_by_col2im`]: `dcols = Wᵀ · dY_tile`
//! added back onto a padded buffer, phased like the source so that the adds
//! are contiguous runs too), or a second forward-like pass over the error
//! dilated by the stride and padded, lowered with stride 1 against the
//! flipped, channel-swapped weights ([`backward_by_error_lowering`]).

use crate::element::Element;
use crate::gemm::{matmul, matmul_whole_columns};
use crate::gradients::Targets;
use crate::lanes::{Partials, Schedule, Work, WorkItem};
use crate::layout::nchw::{
    SourceLayout, Window, add_columns_to_windows, copy_windows_to_columns, crop_into,
    dilate_and_pad_error, flip_and_swap_weights, pad_into,
};
use crate::layout::transpose::transpose_on_pool;
use crate::nonfinite::{all_finite, all_finite_on_pool};
use crate::operands::{Backward, Forward};
use crate::spec::{Geometry, Padding};
use crate::workspace::{Checks, Memory, Workspace, scratch};
use ndarray::{
    ArrayBase, ArrayView1, ArrayView2, ArrayView4, ArrayViewMut1, ArrayViewMut2, ArrayViewMut3,
    ArrayViewMut4, Axis, Ix2, Ix3, RawData, ShapeBuilder, s,
};
use std::ops::Range;

/// How a work item's samples are cut into tiles.
#[derive(Clone, Copy, Debug)]
struct Tiling {
    /// Samples per tile; when above 1, a tile spans all output rows.
    /// See [`MIN_TILE_COLUMNS`].
    samples_per_tile: usize,
    /// Output rows per tile (all of them unless one sample exceeds the cap).
    rows_per_tile: usize,
}

/// Samples share a tile only until it has this many columns (output
/// pixels). One sample a tile lets the GEMM write straight into the output
/// and read the error in place, and keeps the column matrix in cache; tiny
/// outputs still gather samples, so that a GEMM is not called per pixel
/// (BENCHMARKS.md, "Column tiles").
const MIN_TILE_COLUMNS: usize = 64;

/// Output pixels from which a sample of a forward pass in blocks of
/// channels ([`splits_channels`]) is a tile of its own rather than
/// gathered up to [`MIN_TILE_COLUMNS`] columns, three vectors of `f32`: a
/// 7x7 sample (49 columns) alone hands its product's last column to dot
/// products (`gemm_tail.rs`), where two samples (98 columns) left 34 to
/// the `gemm` crate's 48-row microkernel; smaller samples still gather, as
/// one-sample products of 36 columns and fewer were level or slower
/// (BENCHMARKS.md, "Column tiles in blocks of channels").
const MIN_CHANNEL_BLOCK_SAMPLE_COLUMNS: usize = 48;

/// Samples a tile of the weight gradient's pass gathers until it has this
/// many columns, where its column matrix may grow as large as the part's
/// partial sums of the weight gradient ([`GatherLimits::gradient`]).
const MIN_GRADIENT_TILE_COLUMNS: usize = 512;

/// How far a tile gathers samples whose column matrix each fits under the
/// cap: until it has `columns` columns, within `bytes` of column matrix
/// (the cap or more).
#[derive(Clone, Copy, Debug)]
struct GatherLimits {
    columns: usize,
    bytes: usize,
    /// Whether samples are gathered even where one sample's column matrix
    /// is the input itself ([`Source::lowers_in_place`]), at the cost of a
    /// copy the in-place tile avoids.
    past_in_place: bool,
}

impl GatherLimits {
    /// Up to [`MIN_TILE_COLUMNS`] columns, within the cap.
    fn within(cap_bytes: usize) -> Self {
        GatherLimits {
            columns: MIN_TILE_COLUMNS,
            bytes: cap_bytes,
            past_in_place: false,
        }
    }

    /// The tiles of a forward pass in blocks of channels on samples of
    /// `sample_columns` output pixels: one sample a tile from
    /// [`MIN_CHANNEL_BLOCK_SAMPLE_COLUMNS`], else as [`Self::within`].
    fn in_channel_blocks(cap_bytes: usize, sample_columns: usize) -> Self {
        let columns = if sample_columns >= MIN_CHANNEL_BLOCK_SAMPLE_COLUMNS {
            1
        } else {
            MIN_TILE_COLUMNS
        };
        GatherLimits {
            columns,
            ..Self::within(cap_bytes)
        }
    }

    /// The tiles of the weight gradient's pass, for a weight gradient of
    /// `partial_bytes` (what each part of the pass holds in partial sums
    /// where the call asks for it). `dW += dY_tile ·
    /// cols_tileᵀ` is as deep as the tile has columns, and reads and
    /// writes all of a part's sums on every tile: on small images with
    /// large weights (a 7x7 image, 49 columns a sample, against 512 x 4608
    /// sums) tiles of one or two samples made the product stream the sums
    /// through memory for little arithmetic. Where the sums outgrow the
    /// cap, tiles gather up to [`MIN_GRADIENT_TILE_COLUMNS`] columns within
    /// the size of those sums (memory of the order the part already holds)
    /// and do a deeper product a pass over them, 1x1 layers too, whose
    /// one-sample tiles would otherwise be the input itself (BENCHMARKS.md,
    /// "Weight-gradient tiles").
    fn gradient(cap_bytes: usize, partial_bytes: usize) -> Self {
        if partial_bytes > cap_bytes {
            GatherLimits {
                columns: MIN_GRADIENT_TILE_COLUMNS,
                bytes: partial_bytes,
                past_in_place: true,
            }
        } else {
            Self::within(cap_bytes)
        }
    }
}

/// A piece of work: some samples, and some output rows of each.
#[derive(Clone, Debug)]
struct Tile {
    samples: Range<usize>,
    rows: Range<usize>,
    /// Whether the tile is the first (last) of its samples in its work item.
    first_band: bool,
    last_band: bool,
}

impl Tiling {
    /// Tiles whose column matrix (`col_rows` rows, one column per output
    /// pixel) stays under `cap_bytes`, unless a single output row exceeds it;
    /// samples that fit under the cap are gathered as `gather` allows. A
    /// source that lowers `in_place` keeps one sample a tile unless
    /// `gather` reaches past it.
    fn new<T>(
        (out_h, out_w): (usize, usize),
        col_rows: usize,
        (cap_bytes, gather): (usize, GatherLimits),
        in_place: bool,
    ) -> Self {
        let row_bytes = (col_rows * out_w * std::mem::size_of::<T>()).max(1);
        let sample_bytes = row_bytes.saturating_mul(out_h);
        let (samples_per_tile, rows_per_tile) = if sample_bytes <= cap_bytes {
            let wanted = gather.columns.div_ceil((out_h * out_w).max(1));
            let fit = gather.bytes / sample_bytes;
            // A sample that is its own column matrix stays in place, unless
            // the gathering is worth its copy.
            let gathers = !in_place || gather.past_in_place;
            let samples = if gathers { wanted.min(fit).max(1) } else { 1 };
            (samples, out_h)
        } else if in_place {
            (1, out_h)
        } else {
            (1, (cap_bytes / row_bytes).clamp(1, out_h.max(1)))
        };
        Tiling {
            samples_per_tile,
            rows_per_tile,
        }
    }

    /// The tiles of a work item, in order: sample chunks, and within a
    /// one-sample chunk its bands of the item's rows from top to bottom.
    fn tiles(&self, item: &WorkItem) -> impl Iterator<Item = Tile> + use<> {
        let Tiling {
            samples_per_tile,
            rows_per_tile,
            ..
        } = *self;
        let end = item.samples.end;
        let rows = item.rows.clone();
        item.samples
            .clone()
            .step_by(samples_per_tile)
            .flat_map(move |n0| {
                let samples = n0..(n0 + samples_per_tile).min(end);
                let rows = rows.clone();
                rows.clone().step_by(rows_per_tile).map(move |r0| {
                    let r1 = (r0 + rows_per_tile).min(rows.end);
                    Tile {
                        samples: samples.clone(),
                        rows: r0..r1,
                        first_band: r0 == rows.start,
                        last_band: r1 == rows.end,
                    }
                })
            })
    }
}

/// Where a pass runs: its schedule, the cap on a lane's column matrix, and
/// the lanes' memory.
struct Lanes<'m, T> {
    schedule: Schedule,
    cap_bytes: usize,
    memory: Memory<'m, T>,
}

/// `range`, counted from `start`.
fn relative(range: &Range<usize>, start: usize) -> Range<usize> {
    range.start - start..range.end - start
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

impl<'a, T: Element> Source<'a, T> {
    /// The input of a forward (or weight-gradient) pass.
    fn of_input(x: ArrayView4<'a, T>, g: &Geometry) -> Self {
        Source::Input {
            x,
            padding: g.padding,
            phases: g.sw,
        }
    }

    /// The tiles of this source's column matrix through `window`, each
    /// lane's largest buffer within `cap_bytes`, samples gathered up to
    /// [`MIN_TILE_COLUMNS`] columns a tile.
    fn tiling(&self, window: &Window, cap_bytes: usize) -> Tiling {
        self.gathering_tiling(window, cap_bytes, GatherLimits::within(cap_bytes))
    }

    /// [`Self::tiling`] with samples gathered as `gather` allows.
    fn gathering_tiling(&self, window: &Window, cap_bytes: usize, gather: GatherLimits) -> Tiling {
        let (c_src, _, _) = self.sample_shape();
        Tiling::new::<T>(
            (window.out_h, window.out_w),
            c_src * window.kh * window.kw,
            (cap_bytes, gather),
            self.lowers_in_place(window),
        )
    }

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
    /// chunk and work item (on its first band) and kept in `source_buf` for
    /// the later bands.
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
        let (source, layout) = if tile.first_band {
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
    (window, groups): (&Window, usize),
    y: ArrayViewMut4<'_, T>,
    lanes: Lanes<'_, T>,
) {
    let tiling = source.tiling(window, lanes.cap_bytes);
    let schedule = lanes.schedule;
    schedule.run(lanes.memory, y, |item, mut y_item, buffers| {
        let [source_buf, cols_buf, product_buf] = buffers.split();
        for tile in tiling.tiles(item) {
            let cols = source.lower(&tile, window, source_buf, cols_buf);
            let local = relative(&tile.samples, item.samples.start);
            let rows = relative(&tile.rows, item.rows.start);
            let y_tile = y_item.slice_mut(s![local, .., rows, ..]);
            multiply_into_output(
                (weights, groups),
                cols,
                bias,
                y_tile,
                product_buf,
                (item.gemm_threads, false),
            );
        }
    });
}

/// [`lower_and_multiply`] with one group, each work item a block of output
/// channels of whole samples ([`splits_channels`]): the scheduler cuts
/// `y` with its channel and row axes swapped, and each item multiplies its
/// rows of the weights by its samples' whole column matrices.
fn lower_and_multiply_by_channels<T: Element>(
    source: &Source<'_, T>,
    weights: ArrayView2<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    window: &Window,
    y: ArrayViewMut4<'_, T>,
    lanes: Lanes<'_, T>,
) {
    let cap_bytes = lanes.cap_bytes;
    let gather = GatherLimits::in_channel_blocks(cap_bytes, window.out_h * window.out_w);
    let tiling = source.gathering_tiling(window, cap_bytes, gather);
    // One-sample tiles (whole samples, or bands cut by the column cap
    // alone) are the same on any thread count, which cuts only channels
    // and which samples a lane takes; tiles gathering several samples end
    // where lanes' shares do.
    let whole_columns = y.len_of(Axis(0)) == 1 || tiling.samples_per_tile == 1;
    let by_channel = y.permuted_axes([0, 2, 1, 3]);
    lanes
        .schedule
        .run(lanes.memory, by_channel, |item, y_item, buffers| {
            let [source_buf, cols_buf, product_buf] = buffers.split();
            let channels = item.rows.clone();
            let weights = weights.slice(s![channels.clone(), ..]);
            let bias = bias.map(|bias| bias.slice_move(s![channels]));
            let mut y_item = y_item.permuted_axes([0, 2, 1, 3]);
            let whole_samples = WorkItem {
                rows: 0..window.out_h,
                ..item.clone()
            };
            for tile in tiling.tiles(&whole_samples) {
                let cols = source.lower(&tile, window, source_buf, cols_buf);
                let local = relative(&tile.samples, item.samples.start);
                let y_tile = y_item.slice_mut(s![local, .., tile.rows.clone(), ..]);
                multiply_into_output(
                    (weights, 1),
                    cols,
                    bias,
                    y_tile,
                    product_buf,
                    (item.gemm_threads, whole_columns),
                );
            }
        });
}

/// The column matrix of all of `source`'s samples ([`lowers_once`]),
/// `[c_in·kh·kw, n·out_h·out_w]`, lowered into
/// `shared_buf` by `lanes` lanes together, each padding and lowering a
/// block of input channels (the matrix's rows of those channels) with its
/// own scratch `memory`.
fn lower_batch_on_lanes<'b, T: Element>(
    source: &Source<'_, T>,
    window: &Window,
    (lanes, memory): (usize, Memory<'_, T>),
    shared_buf: &'b mut Vec<T>,
) -> ArrayView2<'b, T> {
    let Source::Input { x, padding, phases } = *source else {
        unreachable!("only an input is lowered on lanes");
    };
    let (n, c_in) = (x.len_of(Axis(0)), x.len_of(Axis(1)));
    let channel_len = window.kh * window.kw * n * window.out_h * window.out_w;
    let cols = scratch(shared_buf, c_in * channel_len);
    let work = Work::channel_blocks(1, c_in, 1, 2 * channel_len);
    let lowering = Schedule::handing_off(work, lanes, 0, 0);
    let by_channel =
        ArrayViewMut4::from_shape((1, 1, c_in, channel_len), &mut *cols).expect("sized above");
    lowering.run(memory, by_channel, |item, mut rows, buffers| {
        let [source_buf] = buffers.split();
        let block = Source::Input {
            x: x.slice(s![.., item.rows.clone(), .., ..]),
            padding,
            phases,
        };
        let (prepared, layout) = block.prepare(0..n, source_buf);
        let rows = rows.as_slice_mut().expect("whole rows of the matrix");
        copy_windows_to_columns(prepared, layout, window, 0..window.out_h, rows);
    });
    let shape = (
        c_in * window.kh * window.kw,
        n * window.out_h * window.out_w,
    );
    ArrayView2::from_shape(shape, &*cols).expect("sized above")
}

/// The tiles of [`gradient_pass_by_channels`]: one sample's column matrix
/// a tile (or a band of it, under the cap) at batch 1; at larger batches
/// samples gathered as the weight gradient's pass gathers them
/// ([`GatherLimits::gradient`]), every lane's product then as deep (for
/// the weight gradient) and as wide (for the input gradient) as they
/// allow, each lane packing its block of the weights once a tile.
fn channel_blocks_tiling<T: Element>(
    source: &Source<'_, T>,
    g: &Geometry,
    cap_bytes: usize,
) -> Tiling {
    let window = Window::forward(g);
    if g.batch == 1 {
        return source.tiling(&window, cap_bytes);
    }
    let dw_bytes = g.out_channels * g.col_rows() * std::mem::size_of::<T>();
    source.gathering_tiling(
        &window,
        cap_bytes,
        GatherLimits::gradient(cap_bytes, dw_bytes),
    )
}

/// Whether the lanes of a pass in blocks of channels, on `lanes` lanes,
/// share one column matrix of all of `source`'s samples, lowered once
/// ([`lower_batch_on_lanes`]) rather than once a lane: on several lanes,
/// where the matrix is not the input itself and the samples are one tile
/// of `tiling` (BENCHMARKS.md, "Shared lowering", "Channel blocks of the
/// batch").
fn lowers_once<T: Element>(
    source: &Source<'_, T>,
    window: &Window,
    tiling: &Tiling,
    lanes: usize,
) -> bool {
    let Source::Input { x, .. } = source else {
        return false;
    };
    lanes > 1
        && !source.lowers_in_place(window)
        && tiling.samples_per_tile >= x.len_of(Axis(0))
        && tiling.rows_per_tile >= window.out_h
}

/// The lanes' scratch of `memory` lent for a pass before the one `memory`
/// is for (which keeps its parts and checks).
fn lent<'s, T>(memory: &'s mut Memory<'_, T>) -> Memory<'s, T> {
    Memory {
        lanes: &mut *memory.lanes,
        parts: &mut *memory.parts,
        finite: None,
    }
}

/// [`lower_and_multiply_by_channels`] on one sample, or on a batch that
/// [`forward_in_blocks_of_the_batch`] (`y`'s planes merge,
/// [`merges_planes`]), whose column matrix the lanes lower together into
/// `shared_buf` ([`lower_batch_on_lanes`]) before each multiplies its
/// block of output channels by the whole matrix, one GEMM as wide as the
/// batch has output pixels: the samples are padded and lowered once in
/// all, not once a lane.
fn lower_once_and_multiply_by_channels<T: Element>(
    (source, weights, bias): (&Source<'_, T>, ArrayView2<'_, T>, Option<ArrayView1<'_, T>>),
    window: &Window,
    y: ArrayViewMut4<'_, T>,
    lanes: Lanes<'_, T>,
    shared_buf: &mut Vec<T>,
) {
    let Lanes {
        schedule,
        mut memory,
        ..
    } = lanes;
    let lowering = (schedule.lanes(), lent(&mut memory));
    let cols = lower_batch_on_lanes(source, window, lowering, shared_buf);
    // The scheduler cuts the axis of rows of its output's samples: the
    // channels of one sample, `(1, out_h, c_out, out_w)`, any layout; or of
    // a single "sample" holding the whole batch, `(1, n, c_out, out_h ·
    // out_w)`.
    let n = y.len_of(Axis(0));
    let by_channel = if n == 1 {
        y.permuted_axes([0, 2, 1, 3])
    } else {
        let mut y = y;
        // Leaves the rows' axis one long where it does not merge (a
        // single row).
        y.merge_axes(Axis(2), Axis(3));
        y.remove_axis(Axis(2)).insert_axis(Axis(0))
    };
    schedule.run(memory, by_channel, |item, y_item, buffers| {
        let [product_buf] = buffers.split();
        let channels = item.rows.clone();
        let weights = weights.slice(s![channels.clone(), ..]);
        let bias = bias.map(|bias| bias.slice_move(s![channels]));
        // Back to `(n, c, rows, columns)`: each sample's block of channels
        // as one row of all its pixels where the item holds the batch.
        let y_item = if n == 1 {
            y_item.permuted_axes([0, 2, 1, 3])
        } else {
            y_item.index_axis_move(Axis(0), 0).insert_axis(Axis(2))
        };
        let gemm = (item.gemm_threads, true);
        multiply_into_output((weights, 1), cols, bias, y_item, product_buf, gemm);
    });
}

/// Whether the forward pass of `g` runs in blocks of output channels of
/// the whole batch, lowered once for all lanes
/// ([`lower_once_and_multiply_by_channels`]): where the backward pass
/// runs its weight gradient so ([`in_blocks_of_the_batch`]: more output
/// channels than the batch has output pixels, weights beyond the column
/// cap, each sample's column matrix within it), unless a sample's column
/// matrix is the input itself ([`pointwise`]), which the batch's would
/// copy. A sample of such a layer (a 7x7 image's 49 pixels) makes a GEMM
/// too narrow for the `gemm` crate's kernels to run near their rate; the
/// batch's makes one as wide as all of its samples (BENCHMARKS.md,
/// "Forward passes of the batch").
pub(crate) fn forward_in_blocks_of_the_batch<T>(g: &Geometry, cap_bytes: usize) -> bool {
    splits_channels::<T>(g, cap_bytes)
        && in_blocks_of_the_batch::<T>(g, cap_bytes)
        && !pointwise(&Window::forward(g), g)
}

/// Whether each plane of `y` (a sample's output channel) is one row of
/// `out_h · out_w` elements a fixed step apart, as the scheduler of
/// [`lower_once_and_multiply_by_channels`] cuts a batch's.
fn merges_planes<T>(y: &ArrayViewMut4<'_, T>) -> bool {
    let mut planes = y.view();
    planes.merge_axes(Axis(2), Axis(3)) || planes.len_of(Axis(2)) <= 1
}

/// `product = weights · cols`, group by group: group `g`'s output rows come
/// from its rows of `weights` and of `cols`. With `whole_columns`, the
/// columns are the same on any thread count ([`matmul_whole_columns`]).
fn grouped_matmul<T: Element>(
    mut product: ArrayViewMut2<'_, T>,
    accumulate: bool,
    weights: ArrayView2<'_, T>,
    cols: ArrayView2<'_, T>,
    groups: usize,
    (threads, whole_columns): (usize, bool),
) {
    let matmul = match whole_columns {
        true => matmul_whole_columns,
        false => matmul,
    };
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

/// Steps 4 and 5: `y_tile = weights · cols (+ bias)`, the GEMM on
/// `threads` and, with `whole_columns`, on columns that are the same on
/// any thread count (see [`grouped_matmul`]).
fn multiply_into_output<T: Element>(
    (weights, groups): (ArrayView2<'_, T>, usize),
    cols: ArrayView2<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    mut y: ArrayViewMut4<'_, T>,
    product_buf: &mut Vec<T>,
    gemm: (usize, bool),
) {
    let (n, c_dst, rows, out_w) = y.dim();
    if n == 1
        && let Some(mut y_mat) = channel_matrix(y.view_mut().index_axis_move(Axis(0), 0))
    {
        // One sample: its [c_dst, rows·out_w] block of y is the GEMM's output.
        grouped_matmul(y_mat.view_mut(), false, weights, cols, groups, gemm);
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
    grouped_matmul(product.view_mut(), false, weights, cols, groups, gemm);
    // Plane by plane, each one run of the product (see [`error_matrix`]).
    let plane = rows * out_w;
    let product: &[T] = product.into_slice().expect("product is contiguous");
    for (sample, mut y_sample) in y.outer_iter_mut().enumerate() {
        for (c, mut dst) in y_sample.outer_iter_mut().enumerate() {
            let source = &product[(c * n + sample) * plane..][..plane];
            match dst.as_slice_mut() {
                Some(dst) => dst.copy_from_slice(source),
                None => dst.iter_mut().zip(source).for_each(|(d, &v)| *d = v),
            }
        }
    }
    if let Some(bias) = bias {
        for mut sample in y.outer_iter_mut() {
            for (mut channel, &b) in sample.outer_iter_mut().zip(bias) {
                channel += b;
            }
        }
    }
}

/// Output channels a block of [`splits_channels`] holds, a multiple of:
/// 16 channels of an output row start on a cache line whatever the image
/// (64 bytes of `f32`), so that no two lanes write one line.
pub(crate) const CHANNEL_GRANULE: usize = 16;

/// Whether the forward pass cuts each sample into blocks of output
/// channels rather than bands of output rows: with one group, where a
/// sample has fewer output pixels than output channels, so that its weights
/// outweigh its column matrix. A band of a few rows of such an image (7x7,
/// 14x14) makes a GEMM a few dozen columns wide that still reads every
/// weight, lanes' bands end inside shared cache lines of the output, and a
/// 7-row image splits 4 to 3; a block of channels reads its share of the
/// weights, all of the (smaller) column matrix, and writes whole lines
/// (BENCHMARKS.md, "Channel blocks"). A single sample also runs in blocks
/// where [`splits_one_sample`]. `T` and `cap_bytes` (the workspace's
/// column cap) decide whether the column matrix fits one tile.
pub(crate) fn splits_channels<T>(g: &Geometry, cap_bytes: usize) -> bool {
    g.groups == 1
        && g.out_channels >= 2 * CHANNEL_GRANULE
        && (g.out_channels > g.out_h * g.out_w || splits_one_sample::<T>(g, cap_bytes))
}

/// Output pixels an output channel up to which a one-sample pass runs in
/// blocks of channels ([`splits_one_sample`]): rn50-28x512-1x1-256-b1
/// (3 pixels a channel) and rn50-56x256-1x1s2-512-b1 (1.5) ran faster in
/// blocks, rn50-56x256-1x1-128-b1 (24.5) level (BENCHMARKS.md, "Channel
/// blocks of one sample").
const BLOCK_PIXELS_PER_CHANNEL: usize = 16;

/// Blocks of [`CHANNEL_GRANULE`] channels, input and output, that a
/// one-sample pass in blocks needs ([`splits_one_sample`]): enough for 8
/// lanes; layers with one or two blocks of input channels ran slower in
/// blocks (BENCHMARKS.md, "Channel blocks of one sample"). The choice
/// between blocks and bands cannot follow the thread count, as results
/// would then differ in their last bits from one pool to another
/// (`tests/determinism.rs`).
const MIN_SAMPLE_BLOCKS: usize = 8;

/// Whether one sample with at least as many output pixels as output
/// channels still runs in blocks of channels, forward and backward: its
/// column matrix is read where it lies or lowered once for all lanes
/// ([`lowered_at_most_once`]), it has at most
/// [`BLOCK_PIXELS_PER_CHANNEL`] output pixels an output channel, and
/// [`MIN_SAMPLE_BLOCKS`] blocks of input and of output channels. In bands
/// of rows each lane packs all of the weights for a product as deep as
/// the band is wide, and the backward pass sums every lane's partial
/// weight gradient; in blocks each lane reads all of the column matrix
/// (and of the error), none of it copied again.
fn splits_one_sample<T>(g: &Geometry, cap_bytes: usize) -> bool {
    let blocks = |channels: usize| channels / CHANNEL_GRANULE;
    g.batch == 1
        && blocks(g.out_channels).min(blocks(g.in_channels)) >= MIN_SAMPLE_BLOCKS
        && BLOCK_PIXELS_PER_CHANNEL * g.out_channels >= g.out_h * g.out_w
        && lowered_at_most_once::<T>(g, cap_bytes)
}

/// Whether a one-sample pass in blocks of channels on several lanes reads
/// its column matrix where it lies (a 1x1 kernel at unit stride, no
/// padding: the input itself) or lowers it once for all of them
/// ([`lowers_once`]: it fits one tile of `cap_bytes`), rather than once a
/// lane.
fn lowered_at_most_once<T>(g: &Geometry, cap_bytes: usize) -> bool {
    let in_place = pointwise(&Window::forward(g), g);
    let gather = (cap_bytes, GatherLimits::within(cap_bytes));
    let tiling = Tiling::new::<T>((g.out_h, g.out_w), g.col_rows(), gather, in_place);
    in_place || tiling.rows_per_tile >= g.out_h
}

/// Whether the backward pass by col2im runs in blocks of channels
/// ([`gradient_pass_by_channels`]): a layer that [`splits_channels`], of
/// one sample or [`in_blocks_of_the_batch`]. At batch 1 the weight
/// gradient then has no sum across lanes, and at larger batches neither
/// does it.
pub(crate) fn splits_channels_backward<T>(g: &Geometry, cap_bytes: usize) -> bool {
    splits_channels::<T>(g, cap_bytes)
        && (g.batch == 1 || in_blocks_of_the_batch::<T>(g, cap_bytes))
}

/// Whether a layer of several samples that [`splits_channels`] runs in
/// blocks of channels of the whole batch in its backward pass, the batch
/// lowered once (where it is one tile) for all the lanes' products: where
/// its samples' column matrices each fit a tile, and its weights outweigh
/// the whole batch's column matrix (more output channels than the batch
/// has output pixels) and outgrow `cap_bytes`. Cut by samples, each lane
/// packs all of the weights for every tile of its samples, and the
/// backward pass streams weight-gradient sums as large as the weights
/// through memory, to add up after. Where the batch's column matrix is the
/// larger, or the weights fit the cap (as the weight gradient's tiles,
/// [`GatherLimits::gradient`], take them to), every lane reading all of the
/// column matrix costs more than that (BENCHMARKS.md, "Channel blocks of
/// the batch").
fn in_blocks_of_the_batch<T>(g: &Geometry, cap_bytes: usize) -> bool {
    let whole_samples = || {
        let tiling = Tiling::new::<T>(
            (g.out_h, g.out_w),
            g.col_rows(),
            (cap_bytes, GatherLimits::within(cap_bytes)),
            false,
        );
        tiling.rows_per_tile >= g.out_h
    };
    g.batch > 1
        && g.out_channels > g.batch * g.out_h * g.out_w
        && g.out_channels * g.col_rows() * std::mem::size_of::<T>() > cap_bytes
        && whole_samples()
}

/// The two passes of [`gradient_pass_by_channels`]: the weight gradient
/// over blocks of output channels, the input gradient over blocks of input
/// channels, each block of the whole batch.
pub(crate) fn backward_channel_works(g: &Geometry) -> [Work; 2] {
    let pixels = g.batch * g.out_h * g.out_w;
    [
        Work::channel_blocks(
            1,
            g.out_channels,
            CHANNEL_GRANULE,
            2 * pixels * g.col_rows(),
        )
        .of_backward(),
        Work::channel_blocks(
            1,
            g.in_channels,
            CHANNEL_GRANULE,
            2 * pixels * g.out_channels * g.kh * g.kw,
        )
        .of_backward(),
    ]
}

/// The forward pass, see the module docs.
pub(crate) fn forward<T: Element>(
    op: Forward<'_, T>,
    y: ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
) {
    let Forward { x, w, bias, g } = op;
    let weights = w
        .to_shape((g.out_channels, g.col_rows() / g.groups))
        .expect("weight shape validated");
    let cap_bytes = ws.column_cap_bytes();
    let by_channels = splits_channels::<T>(g, cap_bytes);
    let whole_batch = forward_in_blocks_of_the_batch::<T>(g, cap_bytes) && merges_planes(&y);
    let work = if whole_batch {
        Work::forward_by_channels_of_the_batch(g, CHANNEL_GRANULE)
    } else if by_channels {
        Work::forward_by_channels(g, CHANNEL_GRANULE)
    } else {
        Work::forward(g, 1)
    };
    let schedule = ws.schedule(work);
    // The weights are read in place, so the workspace's buffer for laid-out
    // weights holds a column matrix the lanes share instead.
    let (shared_buf, memory) = ws.memory(&schedule);
    let lanes = Lanes {
        schedule,
        cap_bytes,
        memory,
    };
    if whole_batch {
        let operands = (&Source::of_input(x, g), weights.view(), bias);
        let window = Window::forward(g);
        return lower_once_and_multiply_by_channels(operands, &window, y, lanes, shared_buf);
    }
    if by_channels {
        let source = Source::of_input(x, g);
        let window = Window::forward(g);
        let tiling = source.tiling(&window, cap_bytes);
        if g.batch == 1 && lowers_once(&source, &window, &tiling, lanes.schedule.lanes()) {
            let operands = (&source, weights.view(), bias);
            return lower_once_and_multiply_by_channels(operands, &window, y, lanes, shared_buf);
        }
        return lower_and_multiply_by_channels(&source, weights.view(), bias, &window, y, lanes);
    }
    lower_and_multiply(
        &Source::of_input(x, g),
        weights.view(),
        bias,
        (&Window::forward(g), g.groups),
        y,
        lanes,
    );
}

/// The backward pass with the input gradient by col2im, all in one pass
/// over the batch. Overwrites the gradients present.
pub(crate) fn backward_by_col2im<T: Element>(
    op: Backward<'_, T>,
    grads: Targets<'_, T>,
    ws: &mut Workspace<T>,
) {
    let Targets { dx, dw, db } = grads;
    gradient_pass(op, (dw, db), dx, ws);
}

/// The backward pass with the input gradient by error lowering: a pass for
/// the weight and bias gradients, then the error lowered against the
/// flipped, channel-swapped weights, or, where they suit that forward pass
/// ([`error_lowering_on_tiles`](super::error_lowering_on_tiles),
/// [`error_lowering_on_channel_vectors`](super::error_lowering_on_channel_vectors)),
/// the error convolved with them on the direct register tiles or channel
/// vectors. Overwrites the gradients present.
pub(crate) fn backward_by_error_lowering<T: Element>(
    op: Backward<'_, T>,
    grads: Targets<'_, T>,
    ws: &mut Workspace<T>,
) {
    let Targets { dx, dw, db } = grads;
    if dw.is_some() || db.is_some() {
        gradient_pass(op, (dw, db), None, ws);
    }
    let Some(dx) = dx else {
        return;
    };
    let Backward { w, dy, g, .. } = op;
    // The error lowering as a forward pass of its own, on the direct
    // register tiles (with the weights turned here) or on the channel
    // vectors (which turn them as they lay them out), where they take it.
    if let Some(flipped_g) = super::error_lowering_on_tiles(g) {
        let mut buf = ws.take_input_gradient_weights();
        let flipped = scratch(&mut buf, w.len());
        flip_and_swap_weights(w, g.groups, flipped);
        let shape = flipped_g.weight_shape();
        let flipped = ArrayView4::from_shape(shape, &*flipped).expect("sized above");
        let forward = Forward {
            x: dy,
            w: flipped,
            bias: None,
            g: &flipped_g,
        };
        super::direct::tiled::input_gradient(forward, dx, ws);
        ws.restore_input_gradient_weights(buf);
        return;
    }
    if super::phases::applies(g) {
        super::phases::input_gradient((dy, w), g, dx, ws);
        return;
    }
    if let Some(flipped_g) = super::error_lowering_on_channel_vectors(g) {
        super::direct::channel_vectors::input_gradient((dy, w), &flipped_g, dx, ws);
        return;
    }
    let schedule = ws.schedule(Work::input_gradient(g, 1));
    let cap_bytes = ws.column_cap_bytes();
    let (flipped_buf, memory) = ws.memory(&schedule);
    let len = g.in_channels * g.out_channels_per_group() * g.kh * g.kw;
    flip_and_swap_weights(w, g.groups, scratch(flipped_buf, len));
    let flipped = ArrayView2::from_shape(
        (g.in_channels, g.out_channels_per_group() * g.kh * g.kw),
        &flipped_buf[..len],
    )
    .expect("sized above");
    lower_and_multiply(
        &Source::Error { dy, geometry: *g },
        flipped,
        None,
        (&Window::input_gradient(g), g.groups),
        dx,
        Lanes {
            schedule,
            cap_bytes,
            memory,
        },
    );
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
    let plane = rows * out_w;
    let data = scratch(buf, c_out * n * plane);
    // Plane by plane: a sample's rows of a channel are one run of memory
    // where `dy`'s rows are, copied whole; an element-wise copy of the
    // permuted tile walks runs a row long, 7 elements on a 7x7 image
    // (BENCHMARKS.md, "Error matrices of the batch").
    let mut planes = data.chunks_exact_mut(plane.max(1));
    for channel in dy_tile.axis_iter(Axis(1)) {
        for (source, dst) in channel.outer_iter().zip(&mut planes) {
            match source.as_slice() {
                Some(source) => dst.copy_from_slice(source),
                None => dst.iter_mut().zip(&source).for_each(|(d, &v)| *d = v),
            }
        }
    }
    let data: &'a [T] = data;
    ArrayView2::from_shape((c_out, n * plane), data).expect("sized above")
}

/// One pass over the batch: `dW = Σ_tiles dY_tile · cols_tileᵀ` and `db =
/// Σ dY`, summed in the lanes' partials; and, when `dx` is given, the input
/// gradient by col2im, tile by tile. Each gradient only where given: without
/// `dw` no column matrix is built.
#[allow(clippy::type_complexity)]
fn gradient_pass<T: Element>(
    op: Backward<'_, T>,
    (dw, db): (Option<ArrayViewMut4<'_, T>>, Option<ArrayViewMut1<'_, T>>),
    dx: Option<ArrayViewMut4<'_, T>>,
    ws: &mut Workspace<T>,
) {
    let Backward { x, w, dy, g } = op;
    if splits_channels_backward::<T>(g, ws.column_cap_bytes())
        && dw.as_ref().is_none_or(|dw| dw.is_standard_layout())
        && dx
            .as_ref()
            .is_none_or(|dx| g.batch == 1 || dx.is_standard_layout())
    {
        let dw = dw.map(|dw| dw.into_slice().expect("standard layout"));
        return gradient_pass_by_channels(op, (dw, db), dx, ws);
    }
    let rows_g = g.col_rows() / g.groups;
    let weights = w
        .to_shape((g.out_channels, rows_g))
        .expect("weight shape validated");
    let weights = weights.view();
    let window = Window::forward(g);
    let source = Source::of_input(x, g);
    // The dW product packs one of its operands, `dY` (`c_out` rows a group)
    // or `cols` (`rows_g` rows), depending on the layout of its result:
    // column-major makes it pack `dY`, the smaller one is faster to pack
    // (BENCHMARKS.md, "Weight-gradient layout").
    let dw_column_major = g.out_channels_per_group() <= rows_g;
    let (want_dw, want_db) = (dw.is_some(), db.is_some());
    let sums_len = g.out_channels * rows_g;
    let dw_len = if want_dw { sums_len } else { 0 };
    // The tiles depend on the geometry alone, not on which gradients the
    // call asks for, so that each gradient comes out the same whatever the
    // others.
    let cap_bytes = ws.column_cap_bytes();
    let gather = GatherLimits::gradient(cap_bytes, sums_len * std::mem::size_of::<T>());
    let tiling = source.gathering_tiling(&window, cap_bytes, gather);
    let schedule = ws.schedule(Work::backward(g, 1));
    let (_, lanes) = ws.memory(&schedule);
    let db_len = if want_db { g.out_channels } else { 0 };
    let sums = schedule.run_summing(
        lanes,
        dx,
        (dw_len, db_len),
        |item, mut dx_item, buffers, partials| {
            let Partials { weight, bias } = partials;
            let mut dw_part = want_dw.then(|| {
                ArrayViewMut2::from_shape((g.out_channels, rows_g).set_f(dw_column_major), weight)
                    .expect("sized by the schedule")
            });
            let [source_buf, cols_buf, error_buf, dx_buf] = buffers.split();
            for tile in tiling.tiles(item) {
                let dy_mat = error_matrix(dy, &tile, error_buf);
                if want_db {
                    add_bias_gradient(dy_mat, bias);
                }
                if let Some(dw_part) = &mut dw_part {
                    let cols = source.lower(&tile, &window, source_buf, cols_buf);
                    add_weight_gradient(dy_mat, cols, g, dw_part.view_mut(), item.gemm_threads);
                }
                if let Some(dx_item) = &mut dx_item {
                    let local = relative(&tile.samples, item.samples.start);
                    let dx_tile = dx_item.slice_mut(s![local, .., .., ..]);
                    let input_gradient = InputGradientByCol2im {
                        weights,
                        geometry: g,
                        layout: source.layout(tile.samples.len()),
                        window,
                    };
                    input_gradient.add_tile(&tile, dy_mat, (cols_buf, dx_buf), dx_tile, item);
                }
            }
        },
    );
    if let Some(dw) = dw {
        write_weight_gradient(sums.weight, g, dw_column_major, dw);
    }
    if let Some(mut db) = db {
        db.assign(&sums.bias);
    }
}

/// [`gradient_pass`] on a layer with one group that
/// [`splits_channels_backward`], in blocks of channels of the whole batch
/// so that nothing is summed across lanes: the weight gradient by blocks
/// of output channels, `dW_block = Σ_tiles dY_block · colsᵀ` written in
/// place into `dw` (row-major, `[c_out, c_in·kh·kw]`), and the input
/// gradient by blocks of input channels, `dcols_block = W_blockᵀ · dY`
/// added onto the block's windows and cropped into `dx`, tile by tile.
/// Each lane reads its share of the weights and all of the column matrix
/// and the error, the column matrix lowered once by the lanes together
/// where the batch is one tile ([`lowers_once`]); the bias gradient,
/// one sum a channel, is summed on the calling thread. A row band of such
/// an image gives too little to cut the weight gradient's sums by
/// (BENCHMARKS.md, "Channel blocks", "Channel blocks of one sample",
/// "Channel blocks of the batch").
fn gradient_pass_by_channels<T: Element>(
    op: Backward<'_, T>,
    (dw, db): (Option<&mut [T]>, Option<ArrayViewMut1<'_, T>>),
    dx: Option<ArrayViewMut4<'_, T>>,
    ws: &mut Workspace<T>,
) {
    let Backward { x, w, dy, g } = op;
    let taps = g.kh * g.kw;
    let weights = w
        .to_shape((g.out_channels, g.col_rows()))
        .expect("weight shape validated");
    let weights = weights.view();
    let window = Window::forward(g);
    let source = Source::of_input(x, g);
    let tiling = channel_blocks_tiling::<T>(&source, g, ws.column_cap_bytes());
    // Every lane takes a block of channels of the whole batch.
    let whole_batch = |item: &WorkItem| WorkItem {
        samples: 0..g.batch,
        rows: 0..g.out_h,
        ..item.clone()
    };
    let [weight_work, input_work] = backward_channel_works(g);
    let mut finite = true;
    if let Some(dw) = dw {
        let schedule = ws.schedule(weight_work);
        // `dw` is written in place, so the workspace's buffer for laid-out
        // weights holds a column matrix the lanes share where they lower
        // the batch once.
        let (shared_buf, mut memory) = ws.memory(&schedule);
        // A call that checks every output has the lanes check their blocks
        // of `dw` (this schedule's output) as they finish them; a second
        // scan of all of `dw` would read it again from memory.
        let lanes_check = matches!(memory.finite, Some((Checks::Everything, _)));
        let shared = lowers_once(&source, &window, &tiling, schedule.lanes()).then(|| {
            let lowering = (schedule.lanes(), lent(&mut memory));
            lower_batch_on_lanes(&source, &window, lowering, shared_buf)
        });
        let dw_rows = ArrayViewMut4::from_shape((1, 1, g.out_channels, g.col_rows()), &mut *dw)
            .expect("dw holds c_out · c_in·kh·kw elements");
        schedule.run(memory, dw_rows, |item, dw_item, buffers| {
            let [source_buf, cols_buf, error_buf] = buffers.split();
            let channels = item.rows.clone();
            let mut dw_block = dw_item
                .index_axis_move(Axis(0), 0)
                .index_axis_move(Axis(0), 0);
            // The error of the lane's channels alone.
            let dy_block = dy.slice_move(s![.., channels.clone(), .., ..]);
            for (index, tile) in tiling.tiles(&whole_batch(item)).enumerate() {
                let dy_mat = error_matrix(dy_block, &tile, error_buf);
                let cols = match shared {
                    Some(cols) => cols,
                    None => source.lower(&tile, &window, source_buf, cols_buf),
                };
                matmul(
                    dw_block.view_mut(),
                    index > 0,
                    dy_mat,
                    cols.reversed_axes(),
                    item.gemm_threads,
                );
            }
        });
        if !lanes_check {
            finite &= all_finite_on_pool(dw);
        }
    }
    if let Some(mut db) = db {
        // Sample by sample: each sample's plane of a channel is one run of
        // memory, which `sum` takes a vector at a time; over the batch's
        // view of the channel it goes a row at a time.
        for (b, channel) in db.iter_mut().zip(dy.axis_iter(Axis(1))) {
            *b = channel
                .outer_iter()
                .fold(T::zero(), |sum, plane| sum + plane.sum());
        }
        finite &= all_finite(&db.view());
    }
    ws.record_finite(finite);
    let Some(dx) = dx else {
        return;
    };
    let schedule = ws.schedule(input_work);
    let (_, memory) = ws.memory(&schedule);
    // The scheduler cuts the axis of rows of its output's samples, which
    // holds the input channels here: of the one sample, `(1, in_h, c_in,
    // in_w)`, any layout; of a single "sample" holding the whole batch,
    // `(1, n, c_in, in_h·in_w)`, which takes whole planes (a standard
    // layout, see `gradient_pass`).
    let (n, c_in, in_h, in_w) = dx.dim();
    let dx_by_channel = if n == 1 {
        dx.permuted_axes([0, 2, 1, 3])
    } else {
        dx.into_shape_with_order((n, c_in, in_h * in_w))
            .expect("standard layout, see gradient_pass")
            .insert_axis(Axis(0))
    };
    schedule.run(memory, dx_by_channel, |item, mut dx_item, buffers| {
        let [error_buf, dcols_buf, padded_buf] = buffers.split();
        let channels = item.rows.clone();
        let block_weights = weights
            .slice(s![.., channels.start * taps..channels.end * taps])
            .reversed_axes();
        for tile in tiling.tiles(&whole_batch(item)) {
            let dy_mat = error_matrix(dy, &tile, error_buf);
            if pointwise(&window, g) && tile.samples.len() == 1 {
                // The GEMM writes the tile's rows of the sample in place
                // where they form a matrix.
                let rows = sample_planes(&mut dx_item, tile.samples.start, n, (in_h, in_w))
                    .slice_move(s![.., tile.rows.clone(), ..]);
                if let Some(dx_mat) = channel_matrix(rows) {
                    matmul(dx_mat, false, block_weights, dy_mat, item.gemm_threads);
                    continue;
                }
            }
            let layout = SourceLayout {
                c: channels.len(),
                ..source.layout(tile.samples.len())
            };
            let padded = scratch(padded_buf, layout.len());
            if tile.first_band {
                padded.fill(T::zero());
            }
            let columns = tile.samples.len() * tile.rows.len() * g.out_w;
            let rows = channels.len() * taps;
            let mut dcols =
                ArrayViewMut2::from_shape((rows, columns), scratch(dcols_buf, rows * columns))
                    .expect("sized above");
            matmul(
                dcols.view_mut(),
                false,
                block_weights,
                dy_mat,
                item.gemm_threads,
            );
            let band = Window {
                out_h: tile.rows.len(),
                ..window
            };
            add_columns_to_windows(dcols.view(), padded, layout, &band, tile.rows.start);
            if tile.last_band {
                let one = SourceLayout { n: 1, ..layout };
                let padded_samples = padded.chunks_exact(one.len());
                for (sample, padded) in tile.samples.clone().zip(padded_samples) {
                    let planes = sample_planes(&mut dx_item, sample, n, (in_h, in_w));
                    let planes = planes.insert_axis(Axis(0));
                    crop_into(padded, one, g.padding, planes);
                }
            }
        }
    });
}

/// `(block channels, in_h, in_w)` of sample `sample` in an item's output
/// of the input-gradient pass of [`gradient_pass_by_channels`] on `n`
/// samples: `(1, in_h, channels, in_w)` for one sample, `(1, n, channels,
/// in_h·in_w)` for more.
fn sample_planes<'a, T>(
    dx_item: &'a mut ArrayViewMut4<'_, T>,
    sample: usize,
    n: usize,
    (in_h, in_w): (usize, usize),
) -> ArrayViewMut3<'a, T> {
    let planes = dx_item.view_mut().index_axis_move(Axis(0), 0);
    if n == 1 {
        return planes.permuted_axes([1, 0, 2]);
    }
    let planes = planes.index_axis_move(Axis(0), sample);
    let channels = planes.len_of(Axis(0));
    planes
        .into_shape_with_order((channels, in_h, in_w))
        .expect("a block of whole planes is contiguous")
}

/// Whether the column matrix's rows are the input's channels, pixel for
/// pixel (a 1x1 kernel at unit stride, unpadded): col2im's `dcols` then is
/// the input gradient itself, which the GEMM writes in place rather than
/// into a buffer added onto a padded copy and cropped out (BENCHMARKS.md,
/// "Pointwise input gradient").
fn pointwise(window: &Window, g: &Geometry) -> bool {
    (window.kh, window.kw, window.sh, window.sw) == (1, 1, 1, 1) && g.padding.is_zero()
}

/// `db += Σ_pixels dY_tile`, channel by channel.
fn add_bias_gradient<T: Element>(dy_mat: ArrayView2<'_, T>, db: &mut [T]) {
    for (b, row) in db.iter_mut().zip(dy_mat.outer_iter()) {
        *b += row.sum();
    }
}

/// `dW += dY_tile · cols_tileᵀ`, group by group.
fn add_weight_gradient<T: Element>(
    dy_mat: ArrayView2<'_, T>,
    cols: ArrayView2<'_, T>,
    g: &Geometry,
    mut dw: ArrayViewMut2<'_, T>,
    threads: usize,
) {
    let (rows_g, c_out_g) = (g.col_rows() / g.groups, g.out_channels_per_group());
    for group in 0..g.groups {
        let out_rows = group * c_out_g..(group + 1) * c_out_g;
        matmul(
            dw.slice_mut(s![out_rows.clone(), ..]),
            true,
            dy_mat.slice(s![out_rows, ..]),
            cols.slice(s![group * rows_g..(group + 1) * rows_g, ..])
                .reversed_axes(),
            threads,
        );
    }
}

/// The input gradient by col2im, tile by tile: `dcols = Wᵀ · dY_tile`,
/// added back onto a padded buffer for the tile's samples, whose interior
/// is written out when a sample's last band is in.
struct InputGradientByCol2im<'a, 'w, T> {
    weights: ArrayView2<'w, T>,
    geometry: &'a Geometry,
    /// The layout of the tile's prepared input, which the padded input
    /// gradient shares.
    layout: SourceLayout,
    window: Window,
}

impl<T: Element> InputGradientByCol2im<'_, '_, T> {
    /// `dcols = Wᵀ · dY_tile`, group by group.
    fn multiply_error(
        &self,
        mut dcols: ArrayViewMut2<'_, T>,
        dy_mat: ArrayView2<'_, T>,
        threads: usize,
    ) {
        let g = self.geometry;
        let (rows_g, c_out_g) = (g.col_rows() / g.groups, g.out_channels_per_group());
        for group in 0..g.groups {
            let out_rows = group * c_out_g..(group + 1) * c_out_g;
            matmul(
                dcols.slice_mut(s![group * rows_g..(group + 1) * rows_g, ..]),
                false,
                self.weights.slice(s![out_rows.clone(), ..]).reversed_axes(),
                dy_mat.slice(s![out_rows, ..]),
                threads,
            );
        }
    }

    /// The tile's contribution to its samples' input gradient `dx_tile`:
    /// written in place for a pointwise layer's one-sample tile, else added
    /// onto the padded buffer, cropped into `dx_tile` on a sample's last
    /// band.
    fn add_tile(
        &self,
        tile: &Tile,
        dy_mat: ArrayView2<'_, T>,
        (dcols_buf, padded_buf): (&mut Vec<T>, &mut Vec<T>),
        mut dx_tile: ArrayViewMut4<'_, T>,
        item: &WorkItem,
    ) {
        let g = self.geometry;
        if pointwise(&self.window, g) && tile.samples.len() == 1 {
            let dx_rows = dx_tile
                .view_mut()
                .index_axis_move(Axis(0), 0)
                .slice_move(s![.., tile.rows.clone(), ..]);
            if let Some(dx_mat) = channel_matrix(dx_rows) {
                self.multiply_error(dx_mat, dy_mat, item.gemm_threads);
                return;
            }
        }
        let columns = tile.samples.len() * tile.rows.len() * g.out_w;
        let dcols = ArrayViewMut2::from_shape(
            (g.col_rows(), columns),
            scratch(dcols_buf, g.col_rows() * columns),
        )
        .expect("sized above");
        self.multiply_error(dcols, dy_mat, item.gemm_threads);
        let dcols = ArrayView2::from_shape(
            (g.col_rows(), columns),
            &dcols_buf[..g.col_rows() * columns],
        )
        .expect("sized above");
        let padded = scratch(padded_buf, self.layout.len());
        if tile.first_band {
            padded.fill(T::zero());
        }
        let band = Window {
            out_h: tile.rows.len(),
            ..self.window
        };
        add_columns_to_windows(dcols, padded, self.layout, &band, tile.rows.start);
        // `dx` needs no zeroing: every sample's last band in the item crops
        // its whole padded gradient into it.
        if tile.last_band {
            crop_into(padded, self.layout, g.padding, dx_tile);
        }
    }
}

/// `dw` from the summed partials, laid out `[c_out, c_in/g·kh·kw]`,
/// column-major when `column_major`.
fn write_weight_gradient<T: Element>(
    sums: &[T],
    g: &Geometry,
    column_major: bool,
    mut dw: ArrayViewMut4<'_, T>,
) {
    if column_major {
        let (c_out, rows_g) = (g.out_channels, g.col_rows() / g.groups);
        if let Some(dst) = dw.as_slice_mut() {
            // `[c_out, rows_g]` column-major is `[rows_g, c_out]` row-major:
            // a blocked transpose, as the element-by-element copy reads a
            // cache line per element once the weights exceed the cache.
            transpose_on_pool(sums, c_out, dst, rows_g, (rows_g, c_out));
            return;
        }
        // `[c_out, rows_g]` column-major is `[c_out, kw, kh, c]` column-major
        // with its last three axes reversed.
        let shape = (g.out_channels, g.kw, g.kh, g.in_channels_per_group()).f();
        dw.assign(
            &ArrayView4::from_shape(shape, sums)
                .expect("sized by the schedule")
                .permuted_axes([0, 3, 2, 1]),
        );
    } else {
        let shape = dw.raw_dim();
        dw.assign(&ArrayView4::from_shape(shape, sums).expect("sized by the schedule"));
    }
}
