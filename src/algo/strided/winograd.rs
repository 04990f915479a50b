//! `Kernel::Winograd`: 3x3 stride-1 convolutions in Winograd's minimal
//! filtering F(2x2, 3x3) (Lavin and Gray, 2016), forward and backward.
//!
//! The output is cut into 2x2 tiles; each reads a 4x4 input tile. With
//! `V = Bᵀ d B` (input tile), `U = G g Gᵀ` (kernel) and `Y = Aᵀ M A`, the
//! tile's output is `Aᵀ [U ⊙ V] A`, so the sum over input channels becomes
//! 16 GEMMs (one per point `ξ` of the 4x4 transform domain), `M_ξ = V_ξ ·
//! U_ξ`, of `[tiles, c_in] x [c_in, c_out]`: 2.25x fewer multiply-adds than
//! the direct sum (16 per tile instead of 36).
//!
//! The backward pass runs the same maps' adjoints, with the same GEMMs:
//! `dM = A dY Aᵀ`; the weight gradient `dU_ξ = V_ξᵀ · dM_ξ` (summed over
//! tiles and samples, then `dg = Gᵀ dU G`); the input gradient `dV_ξ =
//! dM_ξ · U_ξᵀ`, whose tiles `B dV Bᵀ` are added onto the (overlapping)
//! input tiles.
//!
//! Dilation `d` spreads a tile: it covers output pixels `d` apart and reads
//! input pixels `d` apart, and the tiles of a block of `2d` rows (columns)
//! interleave. Every sample is copied once, padded, into a pixel-major
//! image (`layout/pixel_major.rs`), so that each tile's 16 inputs are contiguous runs
//! of channels and the transforms vectorise across channels. A lane given
//! a band of a sample's rows (a batch smaller than the lanes) copies only
//! the rows its tiles read, and adds its input gradient up over those rows
//! alone.
//!
//! Rounding: the transforms add up to 4 values before the GEMM and after
//! it, with coefficients 1 and 1/2, so the result differs from the direct
//! sum by a few units in the last place more (the agreement tests hold it
//! to the same tolerance as every other kernel).

use crate::algo::strided::simd::with_runtime_simd;
use crate::element::Element;
use crate::gemm::matmul;
use crate::gradients::{Targets, add_bias_gradient};
use crate::lanes::Work;
use crate::layout::pixel_major::Image;
use crate::nonfinite::all_finite;
use crate::operands::{Backward, Forward};
use crate::spec::Geometry;
use crate::workspace::{Workspace, scratch};
use ndarray::{ArrayView2, ArrayView4, ArrayViewMut2, ArrayViewMut4, Axis, s};
use std::ops::Range;

/// Points of the transform domain: a 4x4 tile.
const POINTS: usize = 16;

// The 1-D maps; each 2-D transform applies one along the rows and then one
// along the columns of a tile.

/// `Bᵀ d`, on an input tile's column or row.
#[inline(always)]
fn bt<T: Element>([d0, d1, d2, d3]: [T; 4]) -> [T; 4] {
    [d0 - d2, d1 + d2, d2 - d1, d1 - d3]
}

/// `B v`, the adjoint of [`bt`].
#[inline(always)]
fn b<T: Element>([v0, v1, v2, v3]: [T; 4]) -> [T; 4] {
    [v0, v1 - v2 + v3, v1 + v2 - v0, -v3]
}

/// `Aᵀ m`, from the transform domain to a 2-pixel output.
#[inline(always)]
fn at<T: Element>([m0, m1, m2, m3]: [T; 4]) -> [T; 2] {
    [m0 + m1 + m2, m1 - m2 - m3]
}

/// `A y`, the adjoint of [`at`].
#[inline(always)]
fn a<T: Element>([y0, y1]: [T; 2]) -> [T; 4] {
    [y0, y0 + y1, y0 - y1, -y1]
}

/// `G g`, a kernel row or column into the transform domain.
#[inline(always)]
fn g_map<T: Element>([g0, g1, g2]: [T; 3]) -> [T; 4] {
    let half = T::from_f64(0.5);
    [g0, (g0 + g1 + g2) * half, (g0 - g1 + g2) * half, g2]
}

/// `Gᵀ u`, the adjoint of [`g_map`].
#[inline(always)]
fn gt<T: Element>([u0, u1, u2, u3]: [T; 4]) -> [T; 3] {
    let half = T::from_f64(0.5);
    [
        u0 + (u1 + u2) * half,
        (u1 - u2) * half,
        (u1 + u2) * half + u3,
    ]
}

/// One tile's 2-D transform, `out = cols(rows(in))`, on runs of `n`
/// channels: the input cell `(r, s)` starts at `src_at[r][s]` in `src`, the
/// output cell `(o, p)` at `dst_at[o][p]` in `dst` (written, or added when
/// `ACCUMULATE`; `None` drops it: an output pixel past the image's edge,
/// written into a run of `sinks`, which holds `OR · OC` runs). The
/// channels go a vector at a time, each through the whole 2-D transform
/// in registers, so that a tile's cells are loaded and stored once each
/// (BENCHMARKS.md, "Winograd transforms in SIMD builds").
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn transform_tile<
    T: Element,
    const ACCUMULATE: bool,
    const IR: usize,
    const IC: usize,
    const OR: usize,
    const OC: usize,
>(
    src: &[T],
    src_at: &[[usize; IC]; IR],
    dst: &mut [T],
    dst_at: &[[Option<usize>; OC]; OR],
    n: usize,
    sinks: &mut [T],
    rows: impl Fn([T; IR]) -> [T; OR],
    cols: impl Fn([T; IC]) -> [T; OC],
) {
    let mut outs = disjoint_grid(dst, dst_at, n, sinks);
    let ins: [[&[T]; IC]; IR] =
        std::array::from_fn(|r| std::array::from_fn(|s| &src[src_at[r][s]..src_at[r][s] + n]));
    // A vector of an AVX-512 register's lanes: 16 `f32`, 8 `f64`.
    if std::mem::size_of::<T>() == 4 {
        transform_channels::<T, ACCUMULATE, IR, IC, OR, OC, 16>(ins, &mut outs, (&rows, &cols));
    } else {
        transform_channels::<T, ACCUMULATE, IR, IC, OR, OC, 8>(ins, &mut outs, (&rows, &cols));
    }
}

/// [`transform_tile`] on its runs, `L` channels at a time (the last
/// chunk shorter): the chunk's cells are loaded into local arrays, mapped
/// along the rows and the columns lane by lane, and stored (or added).
#[allow(clippy::type_complexity)]
#[inline(always)]
fn transform_channels<
    T: Element,
    const ACCUMULATE: bool,
    const IR: usize,
    const IC: usize,
    const OR: usize,
    const OC: usize,
    const L: usize,
>(
    ins: [[&[T]; IC]; IR],
    outs: &mut [[&mut [T]; OC]; OR],
    (rows, cols): (&impl Fn([T; IR]) -> [T; OR], &impl Fn([T; IC]) -> [T; OC]),
) {
    let n = ins[0][0].len();
    let whole = n - n % L;
    // Whole chunks with `L` known here, so that their copies are vector
    // moves, not calls; then the rest.
    for k in (0..whole).step_by(L) {
        transform_chunk::<T, ACCUMULATE, IR, IC, OR, OC, L>(&ins, outs, k..k + L, (rows, cols));
    }
    if whole < n {
        transform_chunk::<T, ACCUMULATE, IR, IC, OR, OC, L>(&ins, outs, whole..n, (rows, cols));
    }
}

/// [`transform_channels`] on the channels `chunk`, at most `L` of them.
#[allow(clippy::type_complexity)]
#[inline(always)]
fn transform_chunk<
    T: Element,
    const ACCUMULATE: bool,
    const IR: usize,
    const IC: usize,
    const OR: usize,
    const OC: usize,
    const L: usize,
>(
    ins: &[[&[T]; IC]; IR],
    outs: &mut [[&mut [T]; OC]; OR],
    chunk: Range<usize>,
    (rows, cols): (&impl Fn([T; IR]) -> [T; OR], &impl Fn([T; IC]) -> [T; OC]),
) {
    let (k, len) = (chunk.start, chunk.len());
    let mut cells = [[[T::zero(); L]; IC]; IR];
    for (cell_row, in_row) in cells.iter_mut().zip(ins) {
        for (cell, run) in cell_row.iter_mut().zip(in_row) {
            cell[..len].copy_from_slice(&run[k..k + len]);
        }
    }
    // `half[s][o]`: the rows map of input column `s`.
    let mut half = [[[T::zero(); L]; OR]; IC];
    for (s, half_column) in half.iter_mut().enumerate() {
        for l in 0..L {
            let mapped = rows(std::array::from_fn(|r| cells[r][s][l]));
            for (cell, value) in half_column.iter_mut().zip(mapped) {
                cell[l] = value;
            }
        }
    }
    let mut mapped = [[[T::zero(); L]; OC]; OR];
    for (o, out_row) in mapped.iter_mut().enumerate() {
        for l in 0..L {
            let values = cols(std::array::from_fn(|s| half[s][o][l]));
            for (cell, value) in out_row.iter_mut().zip(values) {
                cell[l] = value;
            }
        }
    }
    for (out_row, mapped_row) in outs.iter_mut().zip(&mapped) {
        for (run, cell) in out_row.iter_mut().zip(mapped_row) {
            let run = &mut run[k..k + len];
            if ACCUMULATE {
                // In a local array, where the sums vectorise.
                let mut sums = [T::zero(); L];
                sums[..len].copy_from_slice(run);
                sums.iter_mut().zip(cell).for_each(|(d, &v)| *d += v);
                run.copy_from_slice(&sums[..len]);
            } else {
                run.copy_from_slice(&cell[..len]);
            }
        }
    }
}

/// The runs of `n` values at `starts` in `dst` (increasing along each row
/// and from one row to the next, at least `n` apart), or runs of `sinks`
/// where a start is `None`.
#[inline(always)]
fn disjoint_grid<'a, T, const R: usize, const C: usize>(
    dst: &'a mut [T],
    starts: &[[Option<usize>; C]; R],
    n: usize,
    sinks: &'a mut [T],
) -> [[&'a mut [T]; C]; R] {
    let mut rest = dst;
    let mut consumed = 0;
    let mut spare = sinks.chunks_exact_mut(n);
    std::array::from_fn(|o| {
        std::array::from_fn(|p| match starts[o][p] {
            Some(at) => {
                let tail = std::mem::take(&mut rest);
                let (run, after) = tail[at - consumed..].split_at_mut(n);
                rest = after;
                consumed = at + n;
                run
            }
            None => spare.next().expect("a spare run per output"),
        })
    })
}

/// The tiling of one geometry: which pixels each tile covers, and the
/// images the passes read and write.
#[derive(Clone, Copy, Debug)]
struct Tiling {
    /// Tiles down and across: whole blocks of `2·d` rows (columns), each
    /// holding `d` interleaved tiles.
    tiles_h: usize,
    tiles_w: usize,
    dh: usize,
    dw: usize,
    /// The padded input (and input gradient) image: every tile's 4x4
    /// reads fall inside it.
    input: Image,
    /// The output gradient, pixel-major, zero past the output's edge.
    error: Image,
    out_h: usize,
    out_w: usize,
}

impl Tiling {
    fn new(g: &Geometry) -> Self {
        let blocks_h = g.out_h.div_ceil(2 * g.dh);
        let blocks_w = g.out_w.div_ceil(2 * g.dw);
        Tiling {
            tiles_h: blocks_h * g.dh,
            tiles_w: blocks_w * g.dw,
            dh: g.dh,
            dw: g.dw,
            input: Image {
                c: g.in_channels,
                h: 2 * g.dh * (blocks_h + 1),
                w: 2 * g.dw * (blocks_w + 1),
                tail: 0,
            },
            error: Image {
                c: g.out_channels,
                h: 2 * g.dh * blocks_h,
                w: 2 * g.dw * blocks_w,
                tail: 0,
            },
            out_h: g.out_h,
            out_w: g.out_w,
        }
    }

    fn tiles(&self) -> usize {
        self.tiles_h * self.tiles_w
    }

    /// The part of the images that the tiles of output rows `rows` (a band
    /// that starts on a block) read and write.
    fn row_band(&self, rows: &Range<usize>) -> RowBand {
        let block = 2 * self.dh;
        let blocks = rows.start / block..rows.end.div_ceil(block);
        let first_row = blocks.start * block;
        RowBand {
            tiles: blocks.start * self.dh * self.tiles_w
                ..(blocks.end * self.dh * self.tiles_w).min(self.tiles()),
            first_row,
            input: Image {
                h: block * (blocks.len() + 1),
                ..self.input
            },
            error: Image {
                h: block * blocks.len(),
                ..self.error
            },
        }
    }

    /// The tile's first output pixel; its others are `d` apart.
    #[inline(always)]
    fn origin(&self, tile: usize) -> (usize, usize) {
        let (tr, tc) = (tile / self.tiles_w, tile % self.tiles_w);
        (
            2 * self.dh * (tr / self.dh) + tr % self.dh,
            2 * self.dw * (tc / self.dw) + tc % self.dw,
        )
    }

    /// Where the `R x C` pixels of `tile` start in the image of `band`
    /// (pixel-major), whose first row is the band's first.
    #[inline(always)]
    fn cells<const R: usize, const C: usize>(
        &self,
        tile: usize,
        (band, image): (&RowBand, &Image),
    ) -> [[usize; C]; R] {
        let (y0, x0) = self.origin(tile);
        let y0 = y0 - band.first_row;
        std::array::from_fn(|r| {
            std::array::from_fn(|s| ((y0 + self.dh * r) * image.w + x0 + self.dw * s) * image.c)
        })
    }

    /// Where the tile's 2x2 output pixels go in a pixel-major buffer of
    /// `c` channels holding the output rows from the first of `band` on;
    /// `None` past the output's edge.
    #[inline(always)]
    fn outputs(&self, tile: usize, band: &RowBand, c: usize) -> [[Option<usize>; 2]; 2] {
        let (y0, x0) = self.origin(tile);
        std::array::from_fn(|a| {
            std::array::from_fn(|b| {
                let (y, x) = (y0 + self.dh * a, x0 + self.dw * b);
                (y < self.out_h && x < self.out_w)
                    .then_some(((y - band.first_row) * self.out_w + x) * c)
            })
        })
    }
}

/// The tiles of a band of output rows and the rows of the images they
/// reach: a lane working on a band of a sample (a batch smaller than the
/// lanes) copies, transforms and adds up those rows alone, not the whole
/// sample's (BENCHMARKS.md, "Winograd bands").
#[derive(Clone, Debug)]
struct RowBand {
    tiles: Range<usize>,
    /// The band's first row: a block's first, in the output, the error and
    /// the padded input alike.
    first_row: usize,
    /// The padded input's (and input gradient's) rows from `first_row` on
    /// that the band's tiles read.
    input: Image,
    /// The error's rows from `first_row` on that the band's tiles read.
    error: Image,
}

impl RowBand {
    /// The rows of an `in_h`-row sample, padded by `top`, in the band's
    /// input image, and the image row the first of them goes to (the
    /// padding left above the band).
    fn sample_rows(&self, top: usize, in_h: usize) -> (Range<usize>, usize) {
        let start = self.first_row.saturating_sub(top).min(in_h);
        let end = (self.first_row + self.input.h)
            .saturating_sub(top)
            .min(in_h);
        (start..end.max(start), top.saturating_sub(self.first_row))
    }

    /// The rows of an `out_h`-row error in the band's error image, from
    /// its first row on.
    fn error_rows(&self, out_h: usize) -> Range<usize> {
        let start = self.first_row.min(out_h);
        start..(self.first_row + self.error.h).min(out_h)
    }
}

/// Where the 16 transform-domain values of tile `local` of a band start,
/// in a band buffer laid out `[point, tile, channel]`.
#[inline(always)]
fn points(band: usize, local: usize, c: usize) -> [[usize; 4]; 4] {
    std::array::from_fn(|u| std::array::from_fn(|v| ((u * 4 + v) * band + local) * c))
}

/// `points`, as destinations that are all kept.
#[inline(always)]
fn kept(at: [[usize; 4]; 4]) -> [[Option<usize>; 4]; 4] {
    std::array::from_fn(|u| std::array::from_fn(|v| Some(at[u][v])))
}

/// What the backward pass divides among lanes: its bands of rows write
/// only the input rows they reach, as a band's images hold only the rows
/// its tiles read.
pub(super) fn backward_work(g: &Geometry) -> Work {
    Work::backward(g, row_granule(g)).with_reached_rows_only()
}

/// Output rows come in blocks of `2·d` (`d` interleaved tiles each): the
/// scheduler cuts a sample's rows at multiples of it.
pub(super) fn row_granule(g: &Geometry) -> usize {
    2 * g.dh
}

/// The transformed kernel, `[point, c_in, c_out]`: `U_ξ[c, o] = (G
/// w[o, c] Gᵀ)_ξ`.
fn transform_weights<'b, T: Element>(w: ArrayView4<'_, T>, buf: &'b mut Vec<T>) -> &'b [T] {
    let (c_out, c_in, _, _) = w.dim();
    let u = scratch(buf, POINTS * c_in * c_out);
    for o in 0..c_out {
        for c in 0..c_in {
            let k = |i: usize, j: usize| w[[o, c, i, j]];
            // Each kernel row mapped along its columns, then each column of
            // those along the rows.
            let rows: [[T; 4]; 3] = std::array::from_fn(|i| g_map([k(i, 0), k(i, 1), k(i, 2)]));
            for v in 0..4 {
                let point_column = g_map([rows[0][v], rows[1][v], rows[2][v]]);
                for (uu, value) in point_column.into_iter().enumerate() {
                    u[((uu * 4 + v) * c_in + c) * c_out + o] = value;
                }
            }
        }
    }
    u
}

/// The most a band's two transform-domain buffers take together, below the
/// workspace cap: a core's L2, so that the GEMMs find the transformed tiles
/// in it (BENCHMARKS.md, "Winograd bands").
const BAND_BYTES: usize = 1 << 20;

/// Tiles per band: the band's two transform-domain buffers (`[point, tile,
/// channel]` for the inputs and for the outputs of its GEMMs) under
/// `cap_bytes` and [`BAND_BYTES`].
fn band_tiles<T>(g: &Geometry, tiling: &Tiling, cap_bytes: usize) -> usize {
    let per_tile = POINTS * (g.in_channels + g.out_channels) * std::mem::size_of::<T>();
    (cap_bytes.min(BAND_BYTES) / per_tile.max(1)).clamp(1, tiling.tiles().max(1))
}

/// The 16 GEMMs of a band: `dst_ξ = lhs_ξ · rhs_ξ`, `lhs_ξ` and `dst_ξ`
/// `[tiles, ·]` slices of band buffers, `rhs_ξ` from `rhs(ξ)`.
fn point_gemms<'r, T: Element>(
    lhs: &[T],
    (rows, inner): (usize, usize),
    rhs: impl Fn(usize) -> ArrayView2<'r, T>,
    dst: &mut [T],
    threads: usize,
) {
    for xi in 0..POINTS {
        let r = rhs(xi);
        let cols = r.ncols();
        let l = point(lhs, xi, (rows, inner));
        matmul(point_mut(dst, xi, (rows, cols)), false, l, r, threads);
    }
}

/// Point `xi`'s `[rows, cols]` matrix in a buffer laid out `[point, row,
/// column]` (a band's tiles, or the transformed weights).
fn point<T>(buf: &[T], xi: usize, (rows, cols): (usize, usize)) -> ArrayView2<'_, T> {
    let len = rows * cols;
    ArrayView2::from_shape((rows, cols), &buf[xi * len..][..len])
        .expect("the buffer holds every point")
}

/// [`point`], writable.
fn point_mut<T>(buf: &mut [T], xi: usize, (rows, cols): (usize, usize)) -> ArrayViewMut2<'_, T> {
    let len = rows * cols;
    ArrayViewMut2::from_shape((rows, cols), &mut buf[xi * len..][..len])
        .expect("the buffer holds every point")
}

/// The forward pass, see the module docs.
pub(crate) fn forward<T: Element>(
    op: Forward<'_, T>,
    y: ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
) {
    let Forward { x, w, bias, g } = op;
    let (c_in, c_out) = (g.in_channels, g.out_channels);
    let tiling = Tiling::new(g);
    let band = band_tiles::<T>(g, &tiling, ws.column_cap_bytes());
    let output = Image {
        c: c_out,
        h: g.out_h,
        w: g.out_w,
        tail: 0,
    };
    let schedule = ws.schedule(Work::forward(g, row_granule(g)));
    let (u_buf, lanes) = ws.memory(&schedule);
    let u = transform_weights(w, u_buf);
    schedule.run_checked_by_kernel(lanes, y, |item, mut y_item, buffers, check| {
        let row_band = tiling.row_band(&item.rows);
        let item_tiles = row_band.tiles.clone();
        let [image_buf, pixels_buf, v_buf, m_buf, stage_buf] = buffers.split();
        let (rows, at_row) = row_band.sample_rows(g.padding.top, g.in_h);
        let mut finite = true;
        for (n, mut y_n) in item.samples.clone().zip(y_item.outer_iter_mut()) {
            let x_n = x.index_axis(Axis(0), n);
            let image = row_band.input.fill_rows(
                x_n,
                rows.clone(),
                (at_row, g.padding.left),
                (image_buf, stage_buf),
            );
            let pixels = scratch(
                pixels_buf,
                (item.rows.end - row_band.first_row) * g.out_w * c_out,
            );
            for t0 in item_tiles.clone().step_by(band) {
                let tiles = band.min(item_tiles.end - t0);
                let v = scratch(v_buf, POINTS * tiles * c_in);
                let band_tiles = t0..t0 + tiles;
                let places = (&tiling, &row_band);
                let inputs = (image, &mut *v);
                transform_tiles(
                    TileMap::Inputs,
                    places,
                    band_tiles.clone(),
                    inputs,
                    stage_buf,
                );
                let m = scratch(m_buf, POINTS * tiles * c_out);
                point_gemms(
                    v,
                    (tiles, c_in),
                    |xi| point(u, xi, (c_in, c_out)),
                    m,
                    item.gemm_threads,
                );
                let outputs = (&*m, &mut *pixels);
                transform_tiles(TileMap::Outputs, places, band_tiles, outputs, stage_buf);
            }
            let first = (item.rows.start - row_band.first_row) * g.out_w * c_out;
            output.read_band(&pixels[first..], y_n.view_mut(), bias, stage_buf);
            // Each sample while it is in cache: the scheduler's check of
            // the whole item would read it again from memory.
            finite &= !check || all_finite(&y_n.view());
        }
        finite
    });
}

/// The backward pass, see the module docs: each lane sums its samples'
/// weight gradient (in the transform domain) and bias gradient into its
/// partials; their sum is mapped back to the kernel once. Overwrites the
/// gradients present, skipping the transforms and GEMMs of the others.
pub(crate) fn backward<T: Element>(
    op: Backward<'_, T>,
    grads: Targets<'_, T>,
    ws: &mut Workspace<T>,
) {
    let Backward { x, w, dy, g } = op;
    let Targets { dx, dw, db } = grads;
    let (want_dw, want_db) = (dw.is_some(), db.is_some());
    let (c_in, c_out) = (g.in_channels, g.out_channels);
    let p = g.padding;
    let tiling = Tiling::new(g);
    let band = band_tiles::<T>(g, &tiling, ws.column_cap_bytes());
    let schedule = ws.schedule(backward_work(g));
    let (u_buf, lanes) = ws.memory(&schedule);
    let want_dx = dx.is_some();
    let u: &[T] = if want_dx {
        transform_weights(w, u_buf)
    } else {
        &[]
    };
    let dw_len = if want_dw { POINTS * c_in * c_out } else { 0 };
    let db_len = if want_db { c_out } else { 0 };
    let sums = schedule.run_summing_checked_by_kernel(
        lanes,
        dx,
        (dw_len, db_len),
        |item, mut dx_item, buffers, partials, check| {
            let [image_buf, error_buf, grad_buf, v_buf, dm_buf, stage_buf] = buffers.split();
            let du = partials.weight;
            let row_band = tiling.row_band(&item.rows);
            let item_tiles = row_band.tiles.clone();
            let (rows, at_row) = row_band.sample_rows(p.top, g.in_h);
            let mut finite = true;
            for (local, n) in item.samples.clone().enumerate() {
                let dy_n = dy.index_axis(Axis(0), n);
                if want_db {
                    add_bias_gradient(dy_n.slice(s![.., item.rows.clone(), ..]), partials.bias);
                }
                if !(want_dw || want_dx) {
                    continue;
                }
                let image: &[T] = if want_dw {
                    row_band.input.fill_rows(
                        x.index_axis(Axis(0), n),
                        rows.clone(),
                        (at_row, p.left),
                        (image_buf, stage_buf),
                    )
                } else {
                    &[]
                };
                let error = row_band.error.fill_rows(
                    dy_n,
                    row_band.error_rows(g.out_h),
                    (0, 0),
                    (error_buf, stage_buf),
                );
                let grad_len = if want_dx { row_band.input.len() } else { 0 };
                let grad = scratch(grad_buf, grad_len);
                grad.fill(T::zero());
                for t0 in item_tiles.clone().step_by(band) {
                    let tiles = t0..(t0 + band).min(item_tiles.end);
                    let v = scratch(v_buf, POINTS * tiles.len() * c_in);
                    let dm = scratch(dm_buf, POINTS * tiles.len() * c_out);
                    let channels = (c_in, c_out);
                    transform_band(
                        (&tiling, &row_band),
                        tiles.clone(),
                        (want_dw.then_some(image), error),
                        (v, dm),
                        channels,
                        stage_buf,
                    );
                    if want_dw {
                        add_weight_gradient(tiles.len(), (v, dm), du, channels, item.gemm_threads);
                    }
                    if want_dx {
                        add_input_gradient(
                            (&tiling, &row_band),
                            tiles,
                            (dm, u),
                            (v, grad),
                            channels,
                            (stage_buf, item.gemm_threads),
                        );
                    }
                }
                if let Some(dx_item) = &mut dx_item {
                    // `dx_item` holds the rows `held` of the sample, which
                    // start `at_row + held.start - rows.start` rows into the
                    // band's image.
                    let held = schedule.gradient_rows(item, g.in_h);
                    let first = at_row + held.start - rows.start;
                    let start = (first * row_band.input.w + p.left) * c_in;
                    let mut dx_n = dx_item.index_axis_mut(Axis(0), local);
                    row_band
                        .input
                        .read(&grad[start..], dx_n.view_mut(), 0..held.len(), None);
                    // Each sample while it is in cache, as in the forward
                    // pass.
                    finite &= !check || all_finite(&dx_n.view());
                }
            }
            finite
        },
    );
    if let Some(dw) = dw {
        weight_gradient_from_transform(sums.weight, (c_in, c_out), dw);
    }
    if let Some(mut db) = db {
        db.assign(&sums.bias);
    }
}

/// The backward pass's first step on a band of tiles: each input tile
/// (when the weight gradient needs them) into the transform domain, `V =
/// Bᵀ d B`, into `v`, and each 2x2 tile of
/// the error through the adjoint of the output map, `dM = A dY Aᵀ`, into
/// `dm` (both laid out `[point, tile, channel]`).
fn transform_band<T: Element>(
    (tiling, row_band): (&Tiling, &RowBand),
    tiles: Range<usize>,
    (image, error): (Option<&[T]>, &[T]),
    (v, dm): (&mut [T], &mut [T]),
    (c_in, c_out): (usize, usize),
    stage_buf: &mut Vec<T>,
) {
    let places = (tiling, row_band);
    let images = (image, error);
    let transforms = (v, dm);
    let channels = (c_in, c_out);
    with_runtime_simd!(
        transform_band_avx512, transform_band_avx2,
        transform_band_body::<T>, transform_band_body::<T>,
        places: (&Tiling, &RowBand), tiles: Range<usize>, images: (Option<&[T]>, &[T]),
        transforms: (&mut [T], &mut [T]), channels: (usize, usize), stage_buf: &mut Vec<T>,
    );
}

/// [`transform_band`] as the SIMD builds compile it.
#[inline(always)]
fn transform_band_body<T: Element>(
    (tiling, row_band): (&Tiling, &RowBand),
    tiles: Range<usize>,
    (image, error): (Option<&[T]>, &[T]),
    (v, dm): (&mut [T], &mut [T]),
    (c_in, c_out): (usize, usize),
    stage_buf: &mut Vec<T>,
) {
    let band = tiles.len();
    // Spare runs for the outputs past the image's edge, once a band.
    let sinks = scratch(stage_buf, POINTS * c_in.max(c_out));
    for (local_tile, tile) in tiles.enumerate() {
        if let Some(image) = image {
            transform_tile::<_, false, _, _, _, _>(
                image,
                &tiling.cells::<4, 4>(tile, (row_band, &row_band.input)),
                v,
                &kept(points(band, local_tile, c_in)),
                c_in,
                &mut *sinks,
                bt,
                bt,
            );
        }
        transform_tile::<_, false, _, _, _, _>(
            error,
            &tiling.cells::<2, 2>(tile, (row_band, &row_band.error)),
            dm,
            &kept(points(band, local_tile, c_out)),
            c_out,
            &mut *sinks,
            a,
            a,
        );
    }
}

/// `dU_ξ += V_ξᵀ · dM_ξ` for the 16 points of a band of `tiles` tiles: the
/// weight gradient in the transform domain, `[point, c_in, c_out]`.
fn add_weight_gradient<T: Element>(
    tiles: usize,
    (v, dm): (&[T], &[T]),
    du: &mut [T],
    (c_in, c_out): (usize, usize),
    threads: usize,
) {
    for xi in 0..POINTS {
        matmul(
            point_mut(du, xi, (c_in, c_out)),
            true,
            point(v, xi, (tiles, c_in)).t(),
            point(dm, xi, (tiles, c_out)),
            threads,
        );
    }
}

/// The input gradient of a band: `dV_ξ = dM_ξ · U_ξᵀ` (into `v`, whose
/// input tiles are spent), then each tile's `B dV Bᵀ` added onto the
/// band's rows of the padded input gradient `grad`, where the tiles
/// overlap.
fn add_input_gradient<T: Element>(
    (tiling, row_band): (&Tiling, &RowBand),
    tiles: Range<usize>,
    (dm, u): (&[T], &[T]),
    (v, grad): (&mut [T], &mut [T]),
    (c_in, c_out): (usize, usize),
    (stage_buf, threads): (&mut Vec<T>, usize),
) {
    let band = tiles.len();
    point_gemms(
        dm,
        (band, c_out),
        |xi| point(u, xi, (c_in, c_out)).reversed_axes(),
        v,
        threads,
    );
    let places = (tiling, row_band);
    transform_tiles(
        TileMap::AddInputGradient,
        places,
        tiles,
        (v, grad),
        stage_buf,
    );
}

/// Which of a band's tile transforms [`transform_tiles`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TileMap {
    /// Input tiles into the transform domain, `V = Bᵀ d B`: from the
    /// band's pixel-major input image into `[point, tile, channel]`.
    Inputs,
    /// Output tiles from the products, `Y = Aᵀ M A`: from `[point, tile,
    /// channel]` into the band's output rows, pixel-major.
    Outputs,
    /// The input gradient's tiles, `B dV Bᵀ`: from `[point, tile,
    /// channel]` added onto the band's pixel-major input gradient.
    AddInputGradient,
}

/// The `map` of tiles `tiles` of a band (of `tiling`), from `src` into
/// `dst`, in the SIMD build the CPU runs: the transforms are loops over
/// channels, which vectorise as widely as the CPU allows (BENCHMARKS.md,
/// "Winograd transforms in SIMD builds").
fn transform_tiles<T: Element>(
    map: TileMap,
    places: (&Tiling, &RowBand),
    tiles: Range<usize>,
    (src, dst): (&[T], &mut [T]),
    stage_buf: &mut Vec<T>,
) {
    with_runtime_simd!(
        transform_tiles_avx512, transform_tiles_avx2,
        transform_tiles_body::<T>, transform_tiles_body::<T>,
        map: TileMap, places: (&Tiling, &RowBand), tiles: Range<usize>, src: &[T], dst: &mut [T],
        stage_buf: &mut Vec<T>,
    );
}

/// [`transform_tiles`] as the SIMD builds compile it.
#[inline(always)]
fn transform_tiles_body<T: Element>(
    map: TileMap,
    (tiling, row_band): (&Tiling, &RowBand),
    tiles: Range<usize>,
    src: &[T],
    dst: &mut [T],
    stage_buf: &mut Vec<T>,
) {
    let band = tiles.len();
    let c = match map {
        TileMap::Outputs => row_band.error.c,
        TileMap::Inputs | TileMap::AddInputGradient => row_band.input.c,
    };
    // Spare runs for the outputs past the image's edge, once a band.
    let sinks = scratch(stage_buf, POINTS * c);
    let run = (src, dst, c, sinks);
    let image_cells = |tile| tiling.cells::<4, 4>(tile, (row_band, &row_band.input));
    let in_band = |local_tile| points(band, local_tile, c);
    // One loop a map, each with its transform inlined.
    match map {
        TileMap::Inputs => each_tile::<_, false, _, _, _, _>(
            tiles,
            run,
            |local_tile, tile| (image_cells(tile), kept(in_band(local_tile))),
            (bt, bt),
        ),
        TileMap::Outputs => each_tile::<_, false, _, _, _, _>(
            tiles,
            run,
            |local_tile, tile| (in_band(local_tile), tiling.outputs(tile, row_band, c)),
            (at, at),
        ),
        TileMap::AddInputGradient => each_tile::<_, true, _, _, _, _>(
            tiles,
            run,
            |local_tile, tile| (in_band(local_tile), kept(image_cells(tile))),
            (b, b),
        ),
    }
}

/// [`transform_tile`] on each of `tiles` (the band's `local`-th), its
/// cells in `src` and `dst` at `cells(local, tile)`.
#[allow(clippy::type_complexity)]
#[inline(always)]
fn each_tile<
    T: Element,
    const ACCUMULATE: bool,
    const IR: usize,
    const IC: usize,
    const OR: usize,
    const OC: usize,
>(
    tiles: Range<usize>,
    (src, dst, c, sinks): (&[T], &mut [T], usize, &mut [T]),
    cells: impl Fn(usize, usize) -> ([[usize; IC]; IR], [[Option<usize>; OC]; OR]),
    (rows, cols): (impl Fn([T; IR]) -> [T; OR], impl Fn([T; IC]) -> [T; OC]),
) {
    for (local_tile, tile) in tiles.enumerate() {
        let (src_at, dst_at) = cells(local_tile, tile);
        transform_tile::<_, ACCUMULATE, IR, IC, OR, OC>(
            src, &src_at, dst, &dst_at, c, sinks, &rows, &cols,
        );
    }
}

/// `dw[o, c] = Gᵀ dU[·, c, o] G`: the weight gradient from its transform,
/// laid out `[point, c_in, c_out]`.
fn weight_gradient_from_transform<T: Element>(
    du: &[T],
    (c_in, c_out): (usize, usize),
    mut dw: ArrayViewMut4<'_, T>,
) {
    for c in 0..c_in {
        for o in 0..c_out {
            let du = |uu: usize, vv: usize| du[((uu * 4 + vv) * c_in + c) * c_out + o];
            let rows: [[T; 3]; 4] =
                std::array::from_fn(|uu| gt([du(uu, 0), du(uu, 1), du(uu, 2), du(uu, 3)]));
            for j in 0..3 {
                let column = gt([rows[0][j], rows[1][j], rows[2][j], rows[3][j]]);
                for (i, value) in column.into_iter().enumerate() {
                    dw[[o, c, i, j]] = value;
                }
            }
        }
    }
}
