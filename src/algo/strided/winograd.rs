//! `Kernel::Winograd` and `Kernel::Winograd4x4`: 3x3 stride-1 convolutions
//! in Winograd's minimal filtering F(2x2, 3x3) or F(4x4, 3x3) (Lavin and
//! Gray, 2016), forward and backward. The text below describes F(2x2, 3x3);
//! F(4x4, 3x3) is the same with 4x4 output tiles, 6x6 input tiles and 36
//! GEMMs, its 1-D maps in `winograd/maps.rs`.
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
//! interleave. The input is copied, padded, into a pixel-major image
//! (`layout/pixel_major.rs`), so that each tile's 16 inputs are contiguous
//! runs of channels and the transforms vectorise across channels. A lane
//! given a band of a sample's rows (a batch smaller than the lanes) copies
//! only the rows its tiles read, and adds its input gradient up over those
//! rows alone; both passes go further and take each sample through in
//! strips of rows, each copied, transformed and written out while it is in
//! L2 (the backward pass carries the input gradient's rows that a strip
//! shares with the next over to it).
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
use crate::workspace::{CACHE_LINE_BYTES, Workspace, scratch};
use ndarray::{ArrayView2, ArrayViewMut2, ArrayViewMut4, Axis, s};
use std::ops::Range;

mod maps;
mod weight_transform;

use maps::{F2, F4, MinimalFilter};
use weight_transform::{transform_weights, weight_gradient_from_transform};

/// Which of Winograd's algorithms a pass runs: output tiles of 2x2 pixels
/// from 4x4 input tiles, or of 4x4 from 6x6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Filter {
    /// F(2x2, 3x3): 16 products for 4 output pixels.
    F2x2,
    /// F(4x4, 3x3): 36 products for 16 output pixels.
    F4x4,
}

impl Filter {
    /// Output pixels along a tile's side.
    #[inline(always)]
    fn m(self) -> usize {
        match self {
            Filter::F2x2 => 2,
            Filter::F4x4 => 4,
        }
    }

    /// Input pixels along a tile's side.
    fn n(self) -> usize {
        self.m() + 2
    }

    /// Points of the transform domain: an input tile's pixels.
    fn points(self) -> usize {
        self.n() * self.n()
    }
}

/// Where the cells of a tile start in a buffer: cell `(r, s)` at `base +
/// r·row_step + s·col_step`, each the start of a run of the buffer's
/// channels. Every map's cells lie on such a grid: a tile's pixels in a
/// pixel-major image are `d` pixels apart along a row and `d` rows apart,
/// its transform-domain values a band's tiles apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CellGrid {
    base: usize,
    row_step: usize,
    col_step: usize,
}

impl CellGrid {
    /// Where cell `(r, s)` starts.
    #[inline(always)]
    fn at(&self, r: usize, s: usize) -> usize {
        self.base + r * self.row_step + s * self.col_step
    }
}

/// One tile's 2-D transform, `out = cols(rows(in))`, on runs of `n`
/// channels: the input cells on the grid `src_at` in `src`, the output
/// cells on `dst_at` in `dst` (written, or added when `ACCUMULATE`). The
/// channels go a vector at a time, each through the whole 2-D transform
/// in registers, so that a tile's cells are loaded and stored once each;
/// a chunk's cells are found from the grids' three numbers, not from
/// sixteen slices a tile (BENCHMARKS.md, "Winograd transforms in SIMD
/// builds", "Winograd tile grids").
#[inline(always)]
fn transform_tile<
    T: Element,
    const ACCUMULATE: bool,
    const IR: usize,
    const IC: usize,
    const OR: usize,
    const OC: usize,
>(
    src: (&[T], CellGrid),
    dst: (&mut [T], CellGrid),
    n: usize,
    maps: (&impl Fn([T; IR]) -> [T; OR], &impl Fn([T; IC]) -> [T; OC]),
) {
    // A vector of an AVX-512 register's lanes: 16 `f32`, 8 `f64`.
    if std::mem::size_of::<T>() == 4 {
        transform_channels::<T, ACCUMULATE, IR, IC, OR, OC, 16>(src, dst, n, maps);
    } else {
        transform_channels::<T, ACCUMULATE, IR, IC, OR, OC, 8>(src, dst, n, maps);
    }
}

/// [`transform_tile`] on its runs, `L` channels at a time (the last
/// chunk shorter).
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
    (src, src_at): (&[T], CellGrid),
    (dst, dst_at): (&mut [T], CellGrid),
    n: usize,
    maps: (&impl Fn([T; IR]) -> [T; OR], &impl Fn([T; IC]) -> [T; OC]),
) {
    let whole = n - n % L;
    // Whole chunks with `L` known here, so that their copies are vector
    // moves, not calls; then the rest.
    for k in (0..whole).step_by(L) {
        transform_chunk::<T, ACCUMULATE, IR, IC, OR, OC, L>(
            (src, src_at),
            (dst, dst_at),
            k..k + L,
            maps,
        );
    }
    if whole < n {
        transform_chunk::<T, ACCUMULATE, IR, IC, OR, OC, L>(
            (src, src_at),
            (dst, dst_at),
            whole..n,
            maps,
        );
    }
}

/// [`transform_channels`] on the channels `chunk`, at most `L` of them:
/// the chunk's cells are loaded into local arrays, mapped along the rows
/// and the columns lane by lane, and stored (or added).
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
    (src, src_at): (&[T], CellGrid),
    (dst, dst_at): (&mut [T], CellGrid),
    chunk: Range<usize>,
    (rows, cols): (&impl Fn([T; IR]) -> [T; OR], &impl Fn([T; IC]) -> [T; OC]),
) {
    let (k, len) = (chunk.start, chunk.len());
    let mut cells = [[[T::zero(); L]; IC]; IR];
    for (r, cell_row) in cells.iter_mut().enumerate() {
        for (s, cell) in cell_row.iter_mut().enumerate() {
            let at = src_at.at(r, s) + k;
            cell[..len].copy_from_slice(&src[at..at + len]);
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
    for (o, mapped_row) in mapped.iter().enumerate() {
        for (p, cell) in mapped_row.iter().enumerate() {
            let at = dst_at.at(o, p) + k;
            let run = &mut dst[at..at + len];
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

/// The tiling of one geometry: which pixels each tile covers, and the
/// images the passes read and write.
#[derive(Clone, Copy, Debug)]
struct Tiling {
    /// The algorithm, whose output tiles are `filter.m()` pixels a side.
    filter: Filter,
    /// Tiles down and across: whole blocks of `m·d` rows (columns), each
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
    fn new(g: &Geometry, filter: Filter) -> Self {
        let m = filter.m();
        let blocks_h = g.out_h.div_ceil(m * g.dh);
        let blocks_w = g.out_w.div_ceil(m * g.dw);
        Tiling {
            filter,
            tiles_h: blocks_h * g.dh,
            tiles_w: blocks_w * g.dw,
            dh: g.dh,
            dw: g.dw,
            input: Image {
                c: g.in_channels,
                h: m * g.dh * blocks_h + 2 * g.dh,
                w: m * g.dw * blocks_w + 2 * g.dw,
                tail: 0,
            },
            error: Image {
                c: g.out_channels,
                h: m * g.dh * blocks_h,
                w: m * g.dw * blocks_w,
                tail: 0,
            },
            out_h: g.out_h,
            out_w: g.out_w,
        }
    }

    fn tiles(&self) -> usize {
        self.tiles_h * self.tiles_w
    }

    /// The strips that the passes take output rows `rows` (starting on a
    /// block) through: whole blocks (`m·d` rows) whose tiles fill a band of
    /// `band` tiles, at least one block a strip. A strip's pixel-major
    /// rows then stay in L2 beside its band's transformed tiles from when
    /// they are written to when they are read, where a whole sample's
    /// would not (BENCHMARKS.md, "Winograd strips").
    fn strips(&self, rows: Range<usize>, band: usize) -> impl Iterator<Item = Range<usize>> {
        let block_tiles = self.dh * self.tiles_w;
        let strip_rows = self.filter.m() * self.dh * (band / block_tiles.max(1)).max(1);
        let end = rows.end;
        rows.step_by(strip_rows)
            .map(move |start| start..(start + strip_rows).min(end))
    }

    /// The part of the images that the tiles of output rows `rows` (a band
    /// that starts on a block) read and write.
    fn row_band(&self, rows: &Range<usize>) -> RowBand {
        let block = self.filter.m() * self.dh;
        let blocks = rows.start / block..rows.end.div_ceil(block);
        let first_row = blocks.start * block;
        RowBand {
            tiles: blocks.start * self.dh * self.tiles_w
                ..(blocks.end * self.dh * self.tiles_w).min(self.tiles()),
            first_row,
            input: Image {
                h: block * blocks.len() + 2 * self.dh,
                ..self.input
            },
            error: Image {
                h: block * blocks.len(),
                ..self.error
            },
        }
    }

    /// The first output pixels of `tiles`, in order; each of a tile's
    /// others is `d` rows or columns on. Stepped along a row of tiles, not
    /// divided out a tile.
    #[inline(always)]
    fn origins(&self, tiles: Range<usize>) -> impl Iterator<Item = (usize, usize)> + use<> {
        let (tr, tc) = (tiles.start / self.tiles_w, tiles.start % self.tiles_w);
        let (m, dh, dw, tiles_w) = (self.filter.m(), self.dh, self.dw, self.tiles_w);
        // A tile `t` along an axis of steps `d` starts at `m·d·(t / d) + t % d`.
        let start = |t: usize, d: usize| m * d * (t / d) + t % d;
        let (mut y0, mut x0, mut col, mut row_phase, mut col_phase) =
            (start(tr, dh), start(tc, dw), tc, tr % dh, tc % dw);
        tiles.map(move |_| {
            let origin = (y0, x0);
            col += 1;
            col_phase += 1;
            x0 += 1;
            if col_phase == dw {
                // Past a block's `d` interleaved tiles: on to the next block.
                col_phase = 0;
                x0 += (m - 1) * dw;
            }
            if col == tiles_w {
                (col, col_phase, x0) = (0, 0, 0);
                row_phase += 1;
                y0 += 1;
                if row_phase == dh {
                    row_phase = 0;
                    y0 += (m - 1) * dh;
                }
            }
            origin
        })
    }

    /// The grid of the `origin` tile's input pixels in the image of `band`
    /// (pixel-major), whose first row is the band's first.
    #[inline(always)]
    fn cells(&self, (y0, x0): (usize, usize), (band, image): (&RowBand, &Image)) -> CellGrid {
        CellGrid {
            base: ((y0 - band.first_row) * image.w + x0) * image.c,
            row_step: self.dh * image.w * image.c,
            col_step: self.dw * image.c,
        }
    }

    /// Whether all of the `origin` tile's output pixels lie in the
    /// output, not past its edge.
    #[inline(always)]
    fn inside(&self, (y0, x0): (usize, usize)) -> bool {
        let reach = self.filter.m() - 1;
        y0 + reach * self.dh < self.out_h && x0 + reach * self.dw < self.out_w
    }

    /// The grid of the `origin` tile's output pixels in a pixel-major
    /// buffer of `c` channels holding the output rows from the first of
    /// `band` on. Only its cells inside the output are pixels of it: one
    /// past the right edge would land on the next row.
    #[inline(always)]
    fn outputs(&self, (y0, x0): (usize, usize), band: &RowBand, c: usize) -> CellGrid {
        CellGrid {
            base: ((y0 - band.first_row) * self.out_w + x0) * c,
            row_step: self.dh * self.out_w * c,
            col_step: self.dw * c,
        }
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

/// Where the `n`x`n` transform-domain values of tile `local` of a band of
/// `band` tiles start, in a band buffer laid out `[point, tile, channel]`.
#[inline(always)]
fn points<T>(band: usize, local: usize, c: usize, n: usize) -> CellGrid {
    let stride = point_stride::<T>(band, c);
    CellGrid {
        base: local * c,
        row_step: n * stride,
        col_step: stride,
    }
}

/// Elements from one point's `[rows, cols]` matrix to the next in a
/// transform-domain buffer: the matrix rounded up to whole cache lines, an
/// odd number of them. A tile transform writes (or reads) a run of each of
/// its 16 or 36 points in turn; a whole multiple of 4 KiB apart (the
/// matrices of 64 or 128 channels), those runs all fall in one set of L1,
/// more of them than its ways, and evict each other before their lines are
/// filled (BENCHMARKS.md, "Winograd point strides").
fn point_stride<T>(rows: usize, cols: usize) -> usize {
    let line = (CACHE_LINE_BYTES / std::mem::size_of::<T>().max(1)).max(1);
    ((rows * cols).div_ceil(line) | 1) * line
}

/// The length of a transform-domain buffer of `points` matrices of `[rows,
/// cols]`, [`point_stride`] apart.
fn domain_len<T>(points: usize, (rows, cols): (usize, usize)) -> usize {
    points * point_stride::<T>(rows, cols)
}

/// What the backward pass divides among lanes: its bands of rows write
/// only the input rows they reach, as a band's images hold only the rows
/// its tiles read.
pub(super) fn backward_work(g: &Geometry, filter: Filter) -> Work {
    Work::backward(g, row_granule(g, filter)).with_reached_rows_only()
}

/// Output rows come in blocks of `m·d` (`d` interleaved tiles each): the
/// scheduler cuts a sample's rows at multiples of it.
pub(super) fn row_granule(g: &Geometry, filter: Filter) -> usize {
    filter.m() * g.dh
}

/// The most a band's two transform-domain buffers take together, below the
/// workspace cap: a core's L2, so that the GEMMs find the transformed tiles
/// in it (BENCHMARKS.md, "Winograd bands").
const BAND_BYTES: usize = 1 << 20;

/// Tiles per band: the band's two transform-domain buffers (`[point, tile,
/// channel]` for the inputs and for the outputs of its GEMMs) under
/// `cap_bytes` and [`BAND_BYTES`].
fn band_tiles<T>(g: &Geometry, tiling: &Tiling, cap_bytes: usize) -> usize {
    let per_tile =
        tiling.filter.points() * (g.in_channels + g.out_channels) * std::mem::size_of::<T>();
    (cap_bytes.min(BAND_BYTES) / per_tile.max(1)).clamp(1, tiling.tiles().max(1))
}

/// The GEMMs of a band, one a point: `dst_ξ = lhs_ξ · rhs_ξ`, `lhs_ξ`
/// and `dst_ξ` `[tiles, ·]` slices of band buffers, `rhs_ξ` from `rhs(ξ)`.
fn point_gemms<'r, T: Element>(
    points: usize,
    lhs: &[T],
    (rows, inner): (usize, usize),
    rhs: impl Fn(usize) -> ArrayView2<'r, T>,
    dst: &mut [T],
    threads: usize,
) {
    for xi in 0..points {
        let r = rhs(xi);
        let cols = r.ncols();
        let l = point(lhs, xi, (rows, inner));
        matmul(point_mut(dst, xi, (rows, cols)), false, l, r, threads);
    }
}

/// Point `xi`'s `[rows, cols]` matrix in a buffer laid out `[point, row,
/// column]` (a band's tiles, or the transformed weights).
fn point<T>(buf: &[T], xi: usize, (rows, cols): (usize, usize)) -> ArrayView2<'_, T> {
    let at = xi * point_stride::<T>(rows, cols);
    ArrayView2::from_shape((rows, cols), &buf[at..][..rows * cols])
        .expect("the buffer holds every point")
}

/// [`point`], writable.
fn point_mut<T>(buf: &mut [T], xi: usize, (rows, cols): (usize, usize)) -> ArrayViewMut2<'_, T> {
    let at = xi * point_stride::<T>(rows, cols);
    ArrayViewMut2::from_shape((rows, cols), &mut buf[at..][..rows * cols])
        .expect("the buffer holds every point")
}

/// The forward pass, see the module docs.
pub(crate) fn forward<T: Element>(
    op: Forward<'_, T>,
    y: ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
    filter: Filter,
) {
    let Forward { x, w, bias, g } = op;
    let (c_in, c_out) = (g.in_channels, g.out_channels);
    let points_n = filter.points();
    let tiling = Tiling::new(g, filter);
    let band = band_tiles::<T>(g, &tiling, ws.column_cap_bytes());
    let output = Image {
        c: c_out,
        h: g.out_h,
        w: g.out_w,
        tail: 0,
    };
    let schedule = ws.schedule(Work::forward(g, row_granule(g, filter)));
    let (u_buf, lanes) = ws.memory(&schedule);
    let u = transform_weights(w, u_buf, filter, schedule.lanes());
    schedule.run_checked_by_kernel(lanes, y, |item, mut y_item, buffers, check| {
        let [image_buf, pixels_buf, v_buf, m_buf, stage_buf] = buffers.split();
        let mut finite = true;
        for (n, mut y_n) in item.samples.clone().zip(y_item.outer_iter_mut()) {
            let x_n = x.index_axis(Axis(0), n);
            for strip in tiling.strips(item.rows.clone(), band) {
                let row_band = tiling.row_band(&strip);
                let (rows, at_row) = row_band.sample_rows(g.padding.top, g.in_h);
                let image = row_band.input.fill_rows(
                    x_n,
                    rows,
                    (at_row, g.padding.left),
                    (image_buf, stage_buf),
                );
                let pixels = scratch(
                    pixels_buf,
                    (strip.end - row_band.first_row) * g.out_w * c_out,
                );
                let strip_tiles = row_band.tiles.clone();
                for t0 in strip_tiles.clone().step_by(band) {
                    let tiles = band.min(strip_tiles.end - t0);
                    let v = scratch(v_buf, domain_len::<T>(points_n, (tiles, c_in)));
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
                    let m = scratch(m_buf, domain_len::<T>(points_n, (tiles, c_out)));
                    point_gemms(
                        points_n,
                        v,
                        (tiles, c_in),
                        |xi| point(u, xi, (c_in, c_out)),
                        m,
                        item.gemm_threads,
                    );
                    let outputs = (&*m, &mut *pixels);
                    transform_tiles(TileMap::Outputs, places, band_tiles, outputs, stage_buf);
                }
                let first = (strip.start - row_band.first_row) * g.out_w * c_out;
                let held = strip.start - item.rows.start..strip.end - item.rows.start;
                output.read_rows(
                    &pixels[first..],
                    y_n.view_mut(),
                    held.clone(),
                    bias,
                    stage_buf,
                );
                // Each strip's rows while they are in cache: a check of
                // the whole sample (64 MiB of a 512x512 image of 64
                // channels) would read it again from memory.
                finite &= !check || all_finite(&y_n.slice(s![.., held, ..]));
            }
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
    filter: Filter,
) {
    let Backward { x, w, dy, g } = op;
    let Targets { dx, dw, db } = grads;
    let (want_dw, want_db) = (dw.is_some(), db.is_some());
    let (c_in, c_out) = (g.in_channels, g.out_channels);
    let p = g.padding;
    let points_n = filter.points();
    let tiling = Tiling::new(g, filter);
    let band = band_tiles::<T>(g, &tiling, ws.column_cap_bytes());
    let schedule = ws.schedule(backward_work(g, filter));
    let (u_buf, lanes) = ws.memory(&schedule);
    let want_dx = dx.is_some();
    // `[point, c_out, c_in]`: the input gradient's GEMMs read each point's
    // rows in order, rather than packing a transposed matrix a band
    // (BENCHMARKS.md, "Winograd backward products").
    let u: &[T] = if want_dx {
        transform_weights(
            w.permuted_axes([1, 0, 2, 3]),
            u_buf,
            filter,
            schedule.lanes(),
        )
    } else {
        &[]
    };
    let dw_len = if want_dw { points_n * c_in * c_out } else { 0 };
    let db_len = if want_db { c_out } else { 0 };
    let sums = schedule.run_summing_checked_by_kernel(
        lanes,
        dx,
        (dw_len, db_len),
        |item, mut dx_item, buffers, partials, check| {
            let [
                image_buf,
                error_buf,
                grad_buf,
                v_buf,
                dm_buf,
                stage_buf,
                strip_du_buf,
            ] = buffers.split();
            let du = partials.weight;
            let held = schedule.gradient_rows(item, g.in_h);
            let mut finite = true;
            for (local, n) in item.samples.clone().enumerate() {
                let dy_n = dy.index_axis(Axis(0), n);
                let mut dx_n = dx_item
                    .as_mut()
                    .map(|dx_item| dx_item.index_axis_mut(Axis(0), local));
                // The input gradient rows that the strip before left for
                // this one: its last block of rows, which this strip's
                // tiles add to as well.
                let mut carried = 0;
                for strip in tiling.strips(item.rows.clone(), band) {
                    if want_db {
                        add_bias_gradient(dy_n.slice(s![.., strip.clone(), ..]), partials.bias);
                    }
                    if !(want_dw || want_dx) {
                        continue;
                    }
                    let row_band = tiling.row_band(&strip);
                    let image: &[T] = if want_dw {
                        let (rows, at_row) = row_band.sample_rows(p.top, g.in_h);
                        row_band.input.fill_rows(
                            x.index_axis(Axis(0), n),
                            rows,
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
                    let row_len = row_band.input.w * c_in;
                    let grad_len = if want_dx { row_band.input.len() } else { 0 };
                    let grad = scratch(grad_buf, grad_len);
                    grad[carried..].fill(T::zero());
                    let strip_tiles = row_band.tiles.clone();
                    // The strip's bands, their weight gradient into
                    // `strip_du` (onto what it holds with `add_first`).
                    let mut bands = |strip_du: &mut [T], add_first: bool| {
                        for (k, t0) in strip_tiles.clone().step_by(band).enumerate() {
                            let tiles = t0..(t0 + band).min(strip_tiles.end);
                            let v = scratch(v_buf, domain_len::<T>(points_n, (tiles.len(), c_in)));
                            let dm =
                                scratch(dm_buf, domain_len::<T>(points_n, (tiles.len(), c_out)));
                            let channels = (c_in, c_out);
                            transform_band(
                                (&tiling, &row_band),
                                tiles.clone(),
                                (want_dw.then_some(image), error),
                                (v, dm),
                                channels,
                            );
                            if want_dw {
                                add_weight_gradient(
                                    points_n,
                                    tiles.len(),
                                    (v, dm),
                                    (strip_du, add_first || k > 0),
                                    channels,
                                    item.gemm_threads,
                                );
                            }
                            if want_dx {
                                add_input_gradient(
                                    (&tiling, &row_band),
                                    tiles,
                                    (dm, u),
                                    (v, &mut *grad),
                                    channels,
                                    (&mut *stage_buf, item.gemm_threads),
                                );
                            }
                        }
                    };
                    if strip_tiles.len() <= band {
                        // One product: straight onto the lane's sum, which
                        // rounds as its own sum added would, and no strip
                        // sum to clear and add (BENCHMARKS.md, "Winograd
                        // backward products").
                        bands(&mut *du, true);
                    } else {
                        // The strip's weight gradient, summed on its own
                        // and then added to the lane's: over a sample's
                        // every tile at once, the rounding of values the
                        // transforms amplify would add up (BENCHMARKS.md,
                        // "Winograd F(4x4, 3x3)"); its first band writes
                        // it, so it is never cleared.
                        let strip_du = scratch(strip_du_buf, dw_len);
                        bands(&mut *strip_du, false);
                        du.iter_mut().zip(&*strip_du).for_each(|(d, &s)| *d += s);
                    }
                    let Some(dx_n) = &mut dx_n else {
                        continue;
                    };
                    // The strip's rows of the input gradient that no later
                    // strip adds to: all but its last block, unless it is
                    // the item's last strip.
                    let last = strip.end == item.rows.end;
                    let done_h = row_band.input.h - if last { 0 } else { 2 * g.dh };
                    let done = sample_rows_of(row_band.first_row, done_h, p.top, &held);
                    if !done.is_empty() {
                        let first = done.start + p.top - row_band.first_row;
                        let start = first * row_len + p.left * c_in;
                        let rows = done.start - held.start..done.end - held.start;
                        row_band
                            .input
                            .read(&grad[start..], dx_n.view_mut(), rows, None);
                    }
                    if !last {
                        grad.copy_within(done_h * row_len.., 0);
                        carried = grad.len() - done_h * row_len;
                    }
                }
                if let Some(dx_n) = &dx_n {
                    // Each sample while it is in cache, as in the forward
                    // pass.
                    finite &= !check || all_finite(&dx_n.view());
                }
            }
            finite
        },
    );
    if let Some(dw) = dw {
        weight_gradient_from_transform(sums.weight, dw, filter, schedule.lanes());
    }
    if let Some(mut db) = db {
        db.assign(&sums.bias);
    }
}

/// The rows of the sample that `h` rows of a padded image from its row
/// `first_row` on hold (`top` rows of padding above the sample), among the
/// rows `held`.
fn sample_rows_of(first_row: usize, h: usize, top: usize, held: &Range<usize>) -> Range<usize> {
    let start = first_row.saturating_sub(top).max(held.start);
    let end = (first_row + h).saturating_sub(top).min(held.end);
    start..end.max(start)
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
) {
    let places = (tiling, row_band);
    let images = (image, error);
    let transforms = (v, dm);
    let channels = (c_in, c_out);
    with_runtime_simd!(
        transform_band_avx512, transform_band_avx2,
        transform_band_body::<T>, transform_band_body::<T>,
        places: (&Tiling, &RowBand), tiles: Range<usize>, images: (Option<&[T]>, &[T]),
        transforms: (&mut [T], &mut [T]), channels: (usize, usize),
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
) {
    let places = (tiling, row_band);
    let transforms = (v, dm);
    let channels = (c_in, c_out);
    match tiling.filter {
        Filter::F2x2 => band_by::<T, F2, 2, 4>(places, tiles, (image, error), transforms, channels),
        Filter::F4x4 => band_by::<T, F4, 4, 6>(places, tiles, (image, error), transforms, channels),
    }
}

/// [`transform_band_body`] by the algorithm `F`.
#[inline(always)]
fn band_by<T: Element, F: MinimalFilter<M, N>, const M: usize, const N: usize>(
    (tiling, row_band): (&Tiling, &RowBand),
    tiles: Range<usize>,
    (image, error): (Option<&[T]>, &[T]),
    (v, dm): (&mut [T], &mut [T]),
    (c_in, c_out): (usize, usize),
) {
    let band = tiles.len();
    for (local_tile, origin) in tiling.origins(tiles).enumerate() {
        if let Some(image) = image {
            transform_tile::<_, false, _, _, _, _>(
                (image, tiling.cells(origin, (row_band, &row_band.input))),
                (&mut *v, points::<T>(band, local_tile, c_in, N)),
                c_in,
                (&F::bt, &F::bt),
            );
        }
        // The error image holds zeros past the output's edge: every tile's
        // output cells lie in it.
        transform_tile::<_, false, _, _, _, _>(
            (error, tiling.cells(origin, (row_band, &row_band.error))),
            (&mut *dm, points::<T>(band, local_tile, c_out, N)),
            c_out,
            (&F::a, &F::a),
        );
    }
}

/// `dU_ξ += V_ξᵀ · dM_ξ` (with `accumulate`, else `dU_ξ = V_ξᵀ · dM_ξ`)
/// for the points of a band of `tiles` tiles: the weight gradient in the
/// transform domain, `[point, c_in, c_out]`.
fn add_weight_gradient<T: Element>(
    points_n: usize,
    tiles: usize,
    (v, dm): (&[T], &[T]),
    (du, accumulate): (&mut [T], bool),
    (c_in, c_out): (usize, usize),
    threads: usize,
) {
    // Dense, unlike the band buffers: the lanes' sums are added up and
    // checked whole.
    let len = c_in * c_out;
    for xi in 0..points_n {
        let du_xi = &mut du[xi * len..][..len];
        matmul(
            ArrayViewMut2::from_shape((c_in, c_out), du_xi).expect("a point's matrix"),
            accumulate,
            point(v, xi, (tiles, c_in)).t(),
            point(dm, xi, (tiles, c_out)),
            threads,
        );
    }
}

/// The input gradient of a band: `dV_ξ = dM_ξ · U_ξᵀ` (into `v`, whose
/// input tiles are spent; `u` holds the transformed kernel as `[point,
/// c_out, c_in]`, each `U_ξᵀ`), then each tile's `B dV Bᵀ` added onto the
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
        tiling.filter.points(),
        dm,
        (band, c_out),
        |xi| point(u, xi, (c_out, c_in)),
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
    let places = (tiling, row_band);
    match tiling.filter {
        Filter::F2x2 => tiles_by::<T, F2, 2, 4>(map, places, tiles, (src, dst), stage_buf),
        Filter::F4x4 => tiles_by::<T, F4, 4, 6>(map, places, tiles, (src, dst), stage_buf),
    }
}

/// [`transform_tiles_body`] by the algorithm `F`.
#[inline(always)]
fn tiles_by<T: Element, F: MinimalFilter<M, N>, const M: usize, const N: usize>(
    map: TileMap,
    (tiling, row_band): (&Tiling, &RowBand),
    tiles: Range<usize>,
    (src, dst): (&[T], &mut [T]),
    stage_buf: &mut Vec<T>,
) {
    let band = tiles.len();
    let origins = tiling.origins(tiles);
    let image_cells = |origin| tiling.cells(origin, (row_band, &row_band.input));
    // One loop a map, each with its transform inlined.
    match map {
        TileMap::Inputs => {
            let c = row_band.input.c;
            for (local_tile, origin) in origins.enumerate() {
                transform_tile::<_, false, _, _, _, _>(
                    (src, image_cells(origin)),
                    (&mut *dst, points::<T>(band, local_tile, c, N)),
                    c,
                    (&F::bt, &F::bt),
                );
            }
        }
        TileMap::Outputs => {
            let c = row_band.error.c;
            // A tile reaching past the output's edge is transformed into a
            // tile of its own, whose pixels inside the output are then
            // copied there.
            let edge = scratch(stage_buf, M * M * c);
            let edge_cells = CellGrid {
                base: 0,
                row_step: M * c,
                col_step: c,
            };
            for (local_tile, origin) in origins.enumerate() {
                let products = (src, points::<T>(band, local_tile, c, N));
                let outputs = tiling.outputs(origin, row_band, c);
                if tiling.inside(origin) {
                    transform_tile::<_, false, _, _, _, _>(
                        products,
                        (&mut *dst, outputs),
                        c,
                        (&F::at, &F::at),
                    );
                    continue;
                }
                transform_tile::<_, false, _, _, _, _>(
                    products,
                    (&mut *edge, edge_cells),
                    c,
                    (&F::at, &F::at),
                );
                for (a, b) in (0..M).flat_map(|a| (0..M).map(move |b| (a, b))) {
                    let (y, x) = (origin.0 + tiling.dh * a, origin.1 + tiling.dw * b);
                    if y < tiling.out_h && x < tiling.out_w {
                        let (to, from) = (outputs.at(a, b), edge_cells.at(a, b));
                        dst[to..to + c].copy_from_slice(&edge[from..from + c]);
                    }
                }
            }
        }
        TileMap::AddInputGradient => {
            let c = row_band.input.c;
            for (local_tile, origin) in origins.enumerate() {
                transform_tile::<_, true, _, _, _, _>(
                    (src, points::<T>(band, local_tile, c, N)),
                    (&mut *dst, image_cells(origin)),
                    c,
                    (&F::b, &F::b),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Conv2dSpec;

    /// A point's matrix fits in its stride, which is whole cache lines, an
    /// odd number of them, so that the points of 64 or 128 channels fall in
    /// different sets of L1.
    #[test]
    fn point_strides_are_an_odd_number_of_lines() {
        for (rows, cols) in [(1, 1), (3, 5), (64, 128), (128, 128), (98, 64), (196, 256)] {
            for (stride, line) in [
                (point_stride::<f32>(rows, cols), 16),
                (point_stride::<f64>(rows, cols), 8),
            ] {
                let case = format!("{rows} x {cols}, {line} a line");
                assert!(stride >= rows * cols, "{case}: {stride}");
                assert!(stride < rows * cols + 2 * line, "{case}: {stride}");
                assert_eq!(stride % line, 0, "{case}: {stride}");
                assert_eq!((stride / line) % 2, 1, "{case}: {stride}");
            }
        }
        assert_eq!(domain_len::<f32>(16, (128, 128)), 16 * (128 * 128 + 16));
    }

    /// `origins` steps from any tile on to the pixels that dividing each
    /// tile's index out places it at.
    #[test]
    fn origins_step_as_division_places_the_tiles() {
        let shapes = [(5, 5), (8, 13), (13, 8), (20, 20)];
        for filter in [Filter::F2x2, Filter::F4x4] {
            for ((dh, dw), (h, w)) in [(1, 1), (2, 1), (1, 3), (2, 2)]
                .into_iter()
                .flat_map(|d| shapes.map(|shape| (d, shape)))
            {
                let spec = Conv2dSpec::new(4, 4, (3, 3))
                    .dilation((dh, dw))
                    .padding((dh, dw));
                let g = Geometry::new(&spec, [1, 4, h, w]).unwrap();
                let tiling = Tiling::new(&g, filter);
                let m = filter.m();
                let placed = |t: usize| {
                    let (tr, tc) = (t / tiling.tiles_w, t % tiling.tiles_w);
                    (m * dh * (tr / dh) + tr % dh, m * dw * (tc / dw) + tc % dw)
                };
                for start in [0, 1, tiling.tiles_w - 1, tiling.tiles_w + 1] {
                    let tiles = start..tiling.tiles();
                    let stepped: Vec<_> = tiling.origins(tiles.clone()).collect();
                    let divided: Vec<_> = tiles.map(placed).collect();
                    assert_eq!(
                        stepped, divided,
                        "{filter:?}, d = ({dh}, {dw}), {h}x{w}, from {start}"
                    );
                }
            }
        }
    }
}
