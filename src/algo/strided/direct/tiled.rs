//! The direct kernel's forward pass with register tiles: each tile of
//! output, a few output channels by two output rows of a vector of pixels,
//! is summed over every tap in registers and stored once. At column
//! strides above 1 each group's input rows are first dealt into the
//! stride's phases ([`Columns`]), so that a tap's pixels are contiguous
//! again.
//!
//! For layers with few output channels (the notebook's 6 filters of one
//! input channel, depthwise groups) a column matrix is copied for little
//! reuse: its copy costs as much as its GEMM. Here nothing is copied but
//! the padding (and, at column strides above 1, the deal): a tap of a
//! tile is one contiguous run of an input row times one weight per channel
//! of the tile.
//! The weights are packed once per call so that a tap's weights for the
//! tile's channels sit side by side.

use super::stencil::{self, Planes};
use super::tiled_avx2::RawTiles;
use super::{PaddedPlanes, band_input, copy_planes, copy_row, padded_band};
use crate::algo::strided::simd::with_runtime_simd;
use crate::element::Element;
use crate::lanes::Work;
use crate::operands::Forward;
use crate::spec::Geometry;
use crate::workspace::{Workspace, scratch};
use ndarray::{
    ArrayView1, ArrayView2, ArrayView3, ArrayView4, ArrayViewMut3, ArrayViewMut4, Axis, s,
};
use std::array::from_fn;

/// Output channels per tile at most. With two rows of one vector of pixels
/// a tile, 6 channels are 12 AVX-512 accumulators, enough independent sums
/// to keep both FMA pipes busy with registers to spare for the input.
const MAX_TILE_CHANNELS: usize = 6;

/// The tiles' channel counts for `channels` output channels of a group:
/// full tiles of [`MAX_TILE_CHANNELS`], then the remainder as 4, 2 and 1
/// (the only other sizes compiled), except that a remainder of 2 after a
/// full tile makes two tiles of 4 with it: a tile of 2 channels has 4
/// accumulators, too few to cover the FMA latency, where 4 channels have
/// 8 (BENCHMARKS.md, "Strided input gradients in phases").
fn channel_tiles(channels: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut full = channels / MAX_TILE_CHANNELS * MAX_TILE_CHANNELS;
    let rest = channels - full;
    let rest_sizes = if rest == 2 && full >= MAX_TILE_CHANNELS {
        full -= MAX_TILE_CHANNELS;
        [4, 4, 0]
    } else {
        [rest & 4, rest & 2, rest & 1]
    };
    let full_tiles = (0..full)
        .step_by(MAX_TILE_CHANNELS)
        .map(|start| (start, MAX_TILE_CHANNELS));
    let rest_tiles = rest_sizes
        .into_iter()
        .filter(|&size| size > 0)
        .scan(full, |start, size| {
            let tile = (*start, size);
            *start += size;
            Some(tile)
        });
    full_tiles.chain(rest_tiles)
}

/// Packs `w` (`[c_out, c_in/g, kh, kw]`) tile by tile: for the tile of
/// `len` channels starting at output channel `co`, the `len` weights of
/// each tap side by side, at offset `co · taps`.
fn pack_weights<T: Element>(w: ArrayView4<'_, T>, g: &Geometry, packed: &mut [T]) {
    let taps = g.in_channels_per_group() * g.kh * g.kw;
    let c_out_g = g.out_channels_per_group();
    for group in 0..g.groups {
        for (start, len) in channel_tiles(c_out_g) {
            let co = group * c_out_g + start;
            let tile = &mut packed[co * taps..(co + len) * taps];
            // A slice, not `outer_iter().skip(co)`: skipping steps through
            // every earlier filter, quadratic in the groups of a depthwise
            // layer.
            let filters = w.slice(s![co..co + len, .., .., ..]);
            for (cb, filter) in filters.outer_iter().enumerate() {
                for (tap, &weight) in filter.iter().enumerate() {
                    tile[tap * len + cb] = weight;
                }
            }
        }
    }
}

/// Forward pass on validated operands with `g.sw == 1`; writes every
/// element of `y`.
pub(crate) fn forward<T: Element>(
    op: Forward<'_, T>,
    y: ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
) {
    run(op, y, ws, Work::forward(op.g, 1));
}

/// [`forward`] computing a backward call's input gradient (the error
/// convolved with the turned weights), scheduled as a backward pass.
pub(crate) fn input_gradient<T: Element>(
    op: Forward<'_, T>,
    dx: ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
) {
    run(op, dx, ws, Work::forward(op.g, 1).of_backward());
}

/// [`forward`] as `work` schedules it.
fn run<T: Element>(op: Forward<'_, T>, y: ArrayViewMut4<'_, T>, ws: &mut Workspace<T>, work: Work) {
    let Forward { x, w, bias, g } = op;
    assert!(
        g.kw <= MAX_KERNEL_WIDTH,
        "the table keeps wider kernels off the tiles"
    );
    let taps = g.in_channels_per_group() * g.kh * g.kw;
    let schedule = ws.schedule(work);
    let (packed_buf, lanes) = ws.memory(&schedule);
    let packed = scratch(packed_buf, g.out_channels * taps);
    pack_weights(w, g, packed);
    let packed: &[T] = packed;
    schedule.run(lanes, y, |item, mut y_item, buffers| {
        let [source_buf, plane_buf, dealt_buf, line_buf] = buffers.split();
        for (n, mut y_n) in item.samples.clone().zip(y_item.outer_iter_mut()) {
            let (input_rows, band) = band_input(g, &item.rows);
            if g.out_channels_per_group() == 1 && stencil::fits::<T>(&band) {
                let x_band = x.slice(s![n, .., input_rows, ..]);
                let buffers = (&mut *source_buf, &mut *plane_buf);
                group_stencils(x_band, &band, packed, bias, buffers, y_n);
                continue;
            }
            if g.sw > 1 {
                let buffers = (&mut *dealt_buf, &mut *line_buf, &mut *plane_buf);
                dealt_groups((x, n), g, &item.rows, (packed, bias), buffers, y_n);
                continue;
            }
            // A band of a sample (its channels' rows apart) is computed in
            // pieces, each with its own padded input rows, small enough
            // that every channel tile finds them in cache (and, for an
            // output whose planes are not each one run, that the buffer
            // the tiles store into stays there until its copy out).
            let pieces = if y_n.is_standard_layout() {
                1
            } else {
                band_pieces::<T>(g, item.rows.len())
            };
            for piece in split_evenly(item.rows.len(), pieces) {
                let rows = item.rows.start + piece.start..item.rows.start + piece.end;
                let (source, band) = padded_band(x, n, g, &rows, source_buf);
                let y_piece = y_n.slice_mut(s![.., piece, ..]);
                let mut taps = [0; MAX_KERNEL_WIDTH];
                let columns = Columns::unit_stride(&band, &mut taps);
                forward_sample(source, packed, bias, (&band, columns), y_piece, plane_buf);
            }
        }
    });
}

/// One phase of a strided layer's input gradient as the tiles compute it
/// (`phases.rs`): a unit-stride pass `g` over the error `x` with the
/// turned weights `w`, packed from element `packed_at` of all phases'
/// packed weights (as many as `w` has; the phases' weights one after
/// another). Phase `(r_h, r_w)` writes every stride-th row and column of
/// the gradient from row `r_h` and column `r_w`.
pub(crate) struct PhasePass<'a, T> {
    pub(crate) x: ArrayView4<'a, T>,
    pub(crate) w: ArrayView4<'a, T>,
    pub(crate) g: Geometry,
    pub(crate) packed_at: usize,
}

impl<T> PhasePass<'_, T> {
    /// Where the phase's packed weights lie among all phases'.
    fn packed(&self) -> std::ops::Range<usize> {
        self.packed_at..self.packed_at + self.w.len()
    }
}

/// Overwrites `dx`, the input gradient of the layer `g`, with its phases
/// (`pass(r_h · s_w + r_w)` for phase `(r_h, r_w)`). Each lane takes bands
/// of the gradient's rows at multiples of the row stride and computes them
/// in pieces small enough to stay in cache: each phase's rows of a piece
/// into a buffer, then woven into the piece's rows, so every line of `dx`
/// is written once and whole.
pub(crate) fn input_gradient_in_phases<'a, T: Element>(
    pass: &(dyn Fn(usize) -> PhasePass<'a, T> + Sync),
    g: &Geometry,
    dx: ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
) {
    let (sh, sw) = (g.sh, g.sw);
    let schedule = ws.schedule(Work::input_gradient(g, sh));
    let (packed_buf, lanes) = ws.memory(&schedule);
    let phases = sh * sw;
    let packed = scratch(packed_buf, pass(phases - 1).packed().end);
    for phase in 0..phases {
        let this = pass(phase);
        pack_weights(this.w, &this.g, &mut packed[this.packed()]);
    }
    let packed: &[T] = packed;
    // Rows of the gradient a piece holds: its phases' buffers, a row of
    // every channel each, within `BAND_PIECE_BYTES`, at least a tile high
    // in each phase.
    let row_bytes = g.in_channels * g.in_w * std::mem::size_of::<T>();
    let piece_rows = (BAND_PIECE_BYTES / row_bytes.max(1)).max(TILE_ROWS * sh) / sh * sh;
    schedule.run(lanes, dx, |item, mut dx_item, buffers| {
        let [source_buf, plane_buf, phases_buf, _] = buffers.split();
        for (n, mut dx_n) in item.samples.clone().zip(dx_item.outer_iter_mut()) {
            let mut start = item.rows.start;
            while start < item.rows.end {
                let end = (start + piece_rows).min(item.rows.end);
                let base = start - item.rows.start;
                let dx_piece = dx_n.slice_mut(s![.., base..base + end - start, ..]);
                phase_piece(
                    (pass, packed),
                    (n, start..end),
                    (sh, sw),
                    dx_piece,
                    [&mut *source_buf, &mut *plane_buf, &mut *phases_buf],
                );
                start = end;
            }
        }
    });
}

/// The rows `rows` (from a multiple of the row stride) of sample `n`'s
/// input gradient, `dx` (`[c_in, rows, in_w]`), from every phase: see
/// [`input_gradient_in_phases`].
fn phase_piece<'a, T: Element>(
    (pass, packed): (&(dyn Fn(usize) -> PhasePass<'a, T> + Sync), &[T]),
    (n, rows): (usize, std::ops::Range<usize>),
    (sh, sw): (usize, usize),
    mut dx: ArrayViewMut3<'_, T>,
    [source_buf, plane_buf, phases_buf]: [&mut Vec<T>; 3],
) {
    let (channels, _, width) = dx.dim();
    // Column phase r_w's width, and where its rows start in the buffer
    // (`[r_w][channel][row][column]`), for `q_len` rows.
    let phase_width = |r_w: usize| (width - r_w).div_ceil(sw);
    let phase_start = |r_w: usize, q_len: usize| -> usize {
        (0..r_w).map(phase_width).sum::<usize>() * channels * q_len
    };
    for r_h in 0..sh {
        // The phase's rows q with q·sh + r_h within `rows`.
        let q_rows = rows.start / sh..(rows.end.saturating_sub(r_h)).div_ceil(sh);
        if q_rows.is_empty() {
            continue;
        }
        let q_len = q_rows.len();
        let all = scratch(phases_buf, width * channels * q_len);
        for r_w in 0..sw {
            let phase = r_h * sw + r_w;
            let this = pass(phase);
            let out_w = this.g.out_w;
            debug_assert_eq!(out_w, phase_width(r_w));
            debug_assert!(q_rows.end <= this.g.out_h);
            let start = phase_start(r_w, q_len);
            let out = &mut all[start..start + channels * q_len * out_w];
            let (source, band) = padded_band(this.x, n, &this.g, &q_rows, source_buf);
            let mut taps = [0; MAX_KERNEL_WIDTH];
            let columns = Columns::unit_stride(&band, &mut taps);
            let y = ArrayViewMut3::from_shape((channels, q_len, out_w), out).expect("sized above");
            let weights = &packed[this.packed()];
            forward_sample(source, weights, None, (&band, columns), y, plane_buf);
        }
        let all: &[T] = all;
        for (c, mut plane) in dx.outer_iter_mut().enumerate() {
            for (i, q) in q_rows.clone().enumerate() {
                let mut dst = plane.row_mut(q * sh + r_h - rows.start);
                let line = |r_w: usize| {
                    let len = phase_width(r_w);
                    let start = phase_start(r_w, q_len) + (c * q_len + i) * len;
                    &all[start..start + len]
                };
                if sw == 2
                    && let Some(dst) = dst.as_slice_mut()
                {
                    let (even, odd) = (line(0), line(1));
                    let pairs = 2 * odd.len();
                    if !T::weave_pairs(&even[..odd.len()], odd, &mut dst[..pairs]) {
                        for ((pair, &e), &o) in dst[..pairs].chunks_exact_mut(2).zip(even).zip(odd)
                        {
                            pair[0] = e;
                            pair[1] = o;
                        }
                    }
                    if width % 2 == 1 {
                        dst[width - 1] = even[odd.len()];
                    }
                    continue;
                }
                for r_w in 0..sw {
                    for (j, &value) in line(r_w).iter().enumerate() {
                        dst[j * sw + r_w] = value;
                    }
                }
            }
        }
    }
}

/// The widest kernel the tiles take: its taps' column offsets sit in an
/// array on the stack.
pub(crate) const MAX_KERNEL_WIDTH: usize = 16;

/// Where the tiles find a tap's run of input in a padded row: rows `wp`
/// long, and the offset of each tap of a kernel row from the run of the
/// row's first tap. At unit column stride a row is the padded input row and
/// tap `j` starts `j · dw` along; at column stride `s` each row is dealt
/// into `s` phases (columns `p, p + s, p + 2s, ...` one after another, each
/// phase `⌈wp / s⌉` long), so that the pixels of a tap are contiguous again:
/// output column `o` reads padded column `o · s + j · dw`, which is element
/// `o + ⌊j · dw / s⌋` of phase `j · dw mod s`.
#[derive(Clone, Copy)]
struct Columns<'a> {
    wp: usize,
    taps: &'a [usize],
}

impl<'a> Columns<'a> {
    /// The padded rows of `g` as they are (unit column stride).
    fn unit_stride(g: &Geometry, taps: &'a mut [usize; MAX_KERNEL_WIDTH]) -> Self {
        for (j, tap) in taps.iter_mut().enumerate().take(g.kw) {
            *tap = j * g.dw;
        }
        Columns {
            wp: g.in_w + g.padding.left + g.padding.right,
            taps: &taps[..g.kw],
        }
    }

    /// The padded rows of `g` dealt into phases of its column stride.
    fn dealt(g: &Geometry, taps: &'a mut [usize; MAX_KERNEL_WIDTH]) -> Self {
        let phase = dealt_phase_len(g);
        for (j, tap) in taps.iter_mut().enumerate().take(g.kw) {
            let column = j * g.dw;
            *tap = column % g.sw * phase + column / g.sw;
        }
        Columns {
            wp: g.sw * phase,
            taps: &taps[..g.kw],
        }
    }
}

/// The length of one phase of a dealt row of `g` (see [`Columns`]).
fn dealt_phase_len(g: &Geometry) -> usize {
    (g.in_w + g.padding.left + g.padding.right).div_ceil(g.sw)
}

/// A band (output rows `rows`) of sample `n` of a layer at column stride
/// above 1, group by group: each group's input rows, padded, are dealt
/// into the phases of the stride ([`Columns`]) just before its tiles read
/// them, a buffer of one group's planes that stays in cache, rather than
/// the whole band padded and dealt first and read back from memory.
fn dealt_groups<T: Element>(
    (x, n): (ArrayView4<'_, T>, usize),
    g: &Geometry,
    rows: &std::ops::Range<usize>,
    (packed, bias): (&[T], Option<ArrayView1<'_, T>>),
    (dealt_buf, line_buf, plane_buf): (&mut Vec<T>, &mut Vec<T>, &mut Vec<T>),
    mut y: ArrayViewMut3<'_, T>,
) {
    let (input_rows, band) = band_input(g, rows);
    let (c_in_g, c_out_g) = (g.in_channels_per_group(), g.out_channels_per_group());
    let group_band = Geometry {
        in_channels: c_in_g,
        out_channels: c_out_g,
        groups: 1,
        ..band
    };
    let mut taps = [0; MAX_KERNEL_WIDTH];
    let columns = Columns::dealt(&group_band, &mut taps);
    let plane_rows = band.in_h + band.padding.top + band.padding.bottom;
    let (left, phase) = (g.padding.left, dealt_phase_len(g));
    // Every group's planes put the input at the same places: the zeros
    // around it are written once, and each group overwrites the rest.
    let plane_len = plane_rows * columns.wp;
    let dealt = scratch(dealt_buf, c_in_g * plane_len);
    dealt.fill(T::zero());
    let weights_per_channel = c_in_g * g.kh * g.kw;
    for group in 0..g.groups {
        for (c, plane) in (group * c_in_g..).zip(dealt.chunks_exact_mut(plane_len)) {
            let interior = &mut plane[band.padding.top * columns.wp..];
            let rows = interior.chunks_exact_mut(columns.wp);
            let image = x.slice(s![n, c, input_rows.clone(), ..]);
            match image.as_slice() {
                Some(image) => {
                    for (line, out) in image.chunks_exact(g.in_w).zip(rows) {
                        deal_row(line, (left, g.sw, phase), out);
                    }
                }
                None => {
                    let line = scratch(line_buf, g.in_w);
                    for (source, out) in image.rows().into_iter().zip(rows) {
                        copy_row(source, line);
                        deal_row(line, (left, g.sw, phase), out);
                    }
                }
            }
        }
        let channels = group * c_out_g..(group + 1) * c_out_g;
        let weights =
            &packed[channels.start * weights_per_channel..channels.end * weights_per_channel];
        let bias = bias.map(|bias| bias.slice_move(s![channels.clone()]));
        let y_group = y.slice_mut(s![channels, .., ..]);
        let source = (&*dealt, 0);
        forward_sample(
            source,
            weights,
            bias,
            (&group_band, columns),
            y_group,
            plane_buf,
        );
    }
}

/// One input row `line` into its dealt row `out` (see [`Columns`]), as if
/// padded by `left` columns: input column `i` goes to element `(i + left)
/// / stride` of phase `(i + left) mod stride`. Only those elements are
/// written; the padding's stay as they are.
#[inline]
fn deal_row<T: Element>(line: &[T], (left, stride, phase): (usize, usize, usize), out: &mut [T]) {
    if stride == 2 {
        // Even input columns go to one phase, odd ones to the other.
        let pairs = line.len() / 2;
        let (first, second) = out.split_at_mut(phase);
        let (even_phase, odd_phase) = if left % 2 == 0 {
            (first, second)
        } else {
            (second, first)
        };
        let (even_start, odd_start) = (left / 2, left.div_ceil(2));
        let even = &mut even_phase[even_start..even_start + pairs];
        let odd = &mut odd_phase[odd_start..odd_start + pairs];
        if !T::split_pairs(&line[..2 * pairs], even, odd) {
            for ((pair, e), o) in line.chunks_exact(2).zip(even).zip(odd) {
                *e = pair[0];
                *o = pair[1];
            }
        }
        if line.len() % 2 == 1 {
            even_phase[even_start + pairs] = line[line.len() - 1];
        }
        return;
    }
    for (i, &value) in line.iter().enumerate() {
        let column = i + left;
        out[column % stride * phase + column / stride] = value;
    }
}

/// The most bytes of output a band's piece covers: a quarter of the
/// smallest L2 cache per core among the machines measured, so that its
/// padded input rows, and the buffer of an output whose planes are not each
/// one run, stay in L2 (BENCHMARKS.md, "Band pieces" and "Tiles stored in
/// place").
const BAND_PIECE_BYTES: usize = 1 << 18;

/// How many pieces a band of `rows` output rows is computed in: enough to
/// keep each piece's output within [`BAND_PIECE_BYTES`], each piece at
/// least [`TILE_ROWS`] rows (the tiles' height).
fn band_pieces<T>(g: &Geometry, rows: usize) -> usize {
    let row_bytes = g.out_channels * g.out_w * std::mem::size_of::<T>();
    let by_bytes = (rows * row_bytes).div_ceil(BAND_PIECE_BYTES);
    by_bytes.min(rows / TILE_ROWS).max(1)
}

/// `0..len` in `pieces` ranges whose lengths differ by one at most.
fn split_evenly(len: usize, pieces: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..pieces).map(move |piece| piece * len / pieces..(piece + 1) * len / pieces)
}

/// One sample's band (`band`, reading `x_band`, `[c_in, rows, in_w]`) of a
/// layer of one output channel a group, all by the stencils: each group's
/// input planes are padded into `planes_buf` just before its stencil reads
/// them, a few KiB that stay in L1, rather than the whole band padded
/// first and read back from L2. The buffer's border stays zero from one
/// group to the next, so only the interior rows are copied.
pub(super) fn group_stencils<T: Element>(
    x_band: ArrayView3<'_, T>,
    band: &Geometry,
    packed: &[T],
    bias: Option<ArrayView1<'_, T>>,
    (planes_buf, plane_buf): (&mut Vec<T>, &mut Vec<T>),
    mut y: ArrayViewMut3<'_, T>,
) {
    let c_in_g = band.in_channels_per_group();
    let taps = c_in_g * band.kh * band.kw;
    let shape = (band.in_h, band.in_w);
    let mut planes = PaddedPlanes::zeroed(planes_buf, c_in_g, shape, band.padding);
    let out_plane = band.out_h * band.out_w;
    let groups = x_band.axis_chunks_iter(Axis(0), c_in_g);
    for (co, (channels, mut y_c)) in groups.zip(y.outer_iter_mut()).enumerate() {
        for (index, channel) in channels.outer_iter().enumerate() {
            planes.fill(index, channel);
        }
        let source = Planes {
            source: planes.data(),
            plane_len: planes.plane_len(),
            wp: planes.wp(),
            c_in_g,
        };
        let b = bias.map_or(T::zero(), |b| b[co]);
        let weights = &packed[co * taps..(co + 1) * taps];
        // A band's rows of one channel are contiguous in a standard-layout
        // output even where the band's channels together are not.
        match y_c.as_slice_mut() {
            Some(out) => stencil::plane(source, weights, b, band, out),
            None => {
                let out = scratch(plane_buf, out_plane);
                stencil::plane(source, weights, b, band, out);
                let shape = (band.out_h, band.out_w);
                y_c.assign(&ArrayView2::from_shape(shape, &*out).expect("sized above"));
            }
        }
    }
}

/// One sample (or band, see [`row_band`]): `y` (`[c_out, out_h, out_w]`)
/// from its padded input.
fn forward_sample<T: Element>(
    source: (&[T], usize),
    packed: &[T],
    bias: Option<ArrayView1<'_, T>>,
    (g, columns): (&Geometry, Columns<'_>),
    y: ArrayViewMut3<'_, T>,
    plane_buf: &mut Vec<T>,
) {
    // A band of a standard-layout sample has each channel's rows in one
    // run: the tiles store into it in place. Other layouts go through a
    // buffer.
    if planes_contiguous(&y) {
        sample_planes(source, packed, bias, (g, columns), y);
        return;
    }
    let shape = (g.out_channels, g.out_h, g.out_w);
    let len = shape.0 * shape.1 * shape.2;
    let buffer = ArrayViewMut3::from_shape(shape, scratch(plane_buf, len)).expect("sized above");
    sample_planes(source, packed, bias, (g, columns), buffer);
    copy_planes(&plane_buf[..len], y);
}

/// Whether each channel's plane of `y` is one contiguous run, rows in
/// order (every channel's plane has the same strides).
fn planes_contiguous<T>(y: &ArrayViewMut3<'_, T>) -> bool {
    let (channels, rows, width) = y.dim();
    let strides = y.strides();
    let columns_in_order = width <= 1 || strides[2] == 1;
    let rows_in_order = rows <= 1 || strides[1] == width as isize;
    channels == 0 || (columns_in_order && rows_in_order)
}

/// [`forward_sample`] into planes that [`planes_contiguous`] holds.
fn sample_planes<T: Element>(
    source: (&[T], usize),
    packed: &[T],
    bias: Option<ArrayView1<'_, T>>,
    (g, columns): (&Geometry, Columns<'_>),
    mut y: ArrayViewMut3<'_, T>,
) {
    // One-channel tiles (a group's last output channel when it has an odd
    // count) go to the stencils where they apply, in a loop of their own:
    // a call among the channel tiles costs the multi-channel tiles their
    // registers.
    let by_stencil = stencil::fits::<T>(g);
    sample_dispatch(source, packed, bias, (g, columns, by_stencil), y.view_mut());
    if by_stencil {
        single_channel_stencils(source, packed, bias, g, y);
    }
}

/// The `CHANNELS` planes of `planes` (each one contiguous run, as
/// [`planes_contiguous`] checks) as slices.
fn channel_slices<'b, T, const CHANNELS: usize>(
    planes: &'b mut ArrayViewMut3<'_, T>,
) -> [&'b mut [T]; CHANNELS] {
    let mut channels = planes.outer_iter_mut();
    from_fn(|_| {
        channels
            .next()
            .and_then(|plane| plane.into_slice())
            .expect("a tile's channels, each plane one run")
    })
}

/// [`sample_body`] in the best SIMD build the CPU runs, with fused
/// multiply-adds there.
fn sample_dispatch<T: Element>(
    source: (&[T], usize),
    packed: &[T],
    bias: Option<ArrayView1<'_, T>>,
    geometry: (&Geometry, Columns<'_>, bool),
    y: ArrayViewMut3<'_, T>,
) {
    with_runtime_simd!(
        sample_avx512, sample_avx2, sample_body::<T, true>, sample_body::<T, false>,
        source: (&[T], usize), packed: &[T], bias: Option<ArrayView1<'_, T>>,
        geometry: (&Geometry, Columns<'_>, bool), y: ArrayViewMut3<'_, T>,
    );
}

/// Everything one tile needs to know about the sample and the layer.
#[derive(Clone, Copy)]
struct Frame<'a, T> {
    /// The padded input channels of the tile's group, `(c_in/g, hp, wp)`.
    source: &'a [T],
    /// The tile's packed weights, `[taps][channels]`.
    weights: &'a [T],
    c_in_g: usize,
    plane: usize,
    wp: usize,
    /// Each tap's column offset in a row of a kernel row ([`Columns`]).
    taps: &'a [usize],
    g: &'a Geometry,
}

#[inline(always)]
fn sample_body<T: Element, const FUSED: bool>(
    (source, offset): (&[T], usize),
    packed: &[T],
    bias: Option<ArrayView1<'_, T>>,
    (g, columns, by_stencil): (&Geometry, Columns<'_>, bool),
    mut y: ArrayViewMut3<'_, T>,
) {
    let wp = columns.wp;
    let hp = g.in_h + g.padding.top + g.padding.bottom;
    let (c_in_g, c_out_g) = (g.in_channels_per_group(), g.out_channels_per_group());
    let taps = c_in_g * g.kh * g.kw;
    let plane = hp * wp;
    for group in 0..g.groups {
        for (start, len) in channel_tiles(c_out_g) {
            let co = group * c_out_g + start;
            let frame = Frame {
                source: &source[group * c_in_g * plane + offset..(group + 1) * c_in_g * plane],
                weights: &packed[co * taps..(co + len) * taps],
                c_in_g,
                plane,
                wp,
                taps: columns.taps,
                g,
            };
            let bias = |cb: usize| bias.map_or(T::zero(), |b| b[co + cb]);
            if len == 1 && by_stencil {
                continue;
            }
            let planes = y.slice_mut(s![co..co + len, .., ..]);
            channel_tile_sized::<T, FUSED>(frame, len, bias, planes);
        }
    }
}

/// The one-channel tiles of every group, by the stencils of `stencil.rs`
/// (which [`stencil::fits`] `g`).
fn single_channel_stencils<T: Element>(
    (source, offset): (&[T], usize),
    packed: &[T],
    bias: Option<ArrayView1<'_, T>>,
    g: &Geometry,
    mut y: ArrayViewMut3<'_, T>,
) {
    let wp = g.in_w + g.padding.left + g.padding.right;
    let plane = (g.in_h + g.padding.top + g.padding.bottom) * wp;
    let (c_in_g, c_out_g) = (g.in_channels_per_group(), g.out_channels_per_group());
    let taps = c_in_g * g.kh * g.kw;
    let singles = channel_tiles(c_out_g).filter(|&(_, len)| len == 1);
    for (start, _) in singles {
        for group in 0..g.groups {
            let co = group * c_out_g + start;
            let planes = Planes {
                source: &source[group * c_in_g * plane + offset..(group + 1) * c_in_g * plane],
                plane_len: plane,
                wp,
                c_in_g,
            };
            let weights = &packed[co * taps..(co + 1) * taps];
            let b = bias.map_or(T::zero(), |b| b[co]);
            let mut plane = y.index_axis_mut(Axis(0), co);
            let out = plane.as_slice_mut().expect("a plane in one run");
            stencil::plane(planes, weights, b, g, out);
        }
    }
}

#[inline(always)]
fn channel_tile_sized<T: Element, const FUSED: bool>(
    frame: Frame<'_, T>,
    channels: usize,
    bias: impl Fn(usize) -> T,
    mut planes: ArrayViewMut3<'_, T>,
) {
    let planes = &mut planes;
    match channels {
        6 => channel_tile::<T, 6, FUSED>(frame, from_fn(bias), &mut channel_slices(planes)),
        4 => channel_tile::<T, 4, FUSED>(frame, from_fn(bias), &mut channel_slices(planes)),
        2 => channel_tile::<T, 2, FUSED>(frame, from_fn(bias), &mut channel_slices(planes)),
        1 => channel_tile::<T, 1, FUSED>(frame, from_fn(bias), &mut channel_slices(planes)),
        _ => unreachable!("channel_tiles yields 6, 4, 2 or 1 channels"),
    }
}

/// Output rows per tile: two, so that each weight loaded serves two
/// vectors of pixels.
pub(crate) const TILE_ROWS: usize = 2;

/// `CHANNELS` output planes (`out`, each `[out_h, out_w]`), two rows at a
/// time, a vector of 64 bytes' worth of pixels at a time (32 bytes without
/// AVX-512, in `tiled_avx2.rs`'s intrinsics where the CPU has AVX2 and
/// FMA; or half of one for a row's last few). A tile that would run past
/// the last row or column is shifted back to end on it (recomputing a few
/// pixels, each stored again with the same value); a plane narrower than
/// half a vector or one row high takes the slower partial path.
#[inline(always)]
fn channel_tile<T: Element, const CHANNELS: usize, const FUSED: bool>(
    frame: Frame<'_, T>,
    bias: [T; CHANNELS],
    out: &mut [&mut [T]; CHANNELS],
) {
    // AVX2 without AVX-512: the portable tiles spill its registers
    // (BENCHMARKS.md, "Register tiles of f64 on AVX2" and "Register tiles
    // of f32 on AVX2").
    if FUSED {
        let g = frame.g;
        let tiles = RawTiles {
            source: frame.source,
            weights: frame.weights,
            bias: &bias,
            c_in_g: frame.c_in_g,
            plane: frame.plane,
            row_step: g.sh * frame.wp,
            kernel_row_step: g.dh * frame.wp,
            kh: g.kh,
            taps: frame.taps,
            out_h: g.out_h,
            out_w: g.out_w,
        };
        if T::register_tile_planes(tiles, out) {
            return;
        }
    }
    // Kernels 3 or 5 wide at unit dilation and column stride take the
    // tiles with the width a constant (see [`full_tile`]); any other
    // kernel the general tiles.
    let width = if (frame.g.dw, frame.g.sw) == (1, 1) {
        frame.g.kw
    } else {
        0
    };
    match (std::mem::size_of::<T>(), width) {
        (4, _) if !crate::gemm_tail::avx512() => {
            f32_tiles_of_32_bytes::<T, CHANNELS, FUSED>(frame, bias, out)
        }
        (4, 3) => channel_tile_vectors::<T, CHANNELS, 16, 8, FUSED, 3>(frame, bias, out),
        (4, 5) => channel_tile_vectors::<T, CHANNELS, 16, 8, FUSED, 5>(frame, bias, out),
        (4, _) => channel_tile_vectors::<T, CHANNELS, 16, 8, FUSED, 0>(frame, bias, out),
        (_, 3) => channel_tile_vectors::<T, CHANNELS, 8, 4, FUSED, 3>(frame, bias, out),
        (_, 5) => channel_tile_vectors::<T, CHANNELS, 8, 4, FUSED, 5>(frame, bias, out),
        _ => channel_tile_vectors::<T, CHANNELS, 8, 4, FUSED, 0>(frame, bias, out),
    }
}

/// [`channel_tile`] for `f32` on a CPU without AVX-512: tiles of 8
/// pixels (one 32-byte vector) a row rather than 16. A tile of six
/// channels by two rows of 16 pixels needs 24 vectors of sums, more than
/// AVX2's 16 registers hold; of 8 pixels, 12 (BENCHMARKS.md, "Register
/// tiles without AVX-512"). With AVX2 and FMA both types take the tiles
/// of `tiled_avx2.rs` first (see [`channel_tile`]); these serve the planes
/// narrower than its vector and the CPUs without FMA.
#[inline(always)]
fn f32_tiles_of_32_bytes<T: Element, const CHANNELS: usize, const FUSED: bool>(
    frame: Frame<'_, T>,
    bias: [T; CHANNELS],
    out: &mut [&mut [T]; CHANNELS],
) {
    match (frame.g.dw, frame.g.sw, frame.g.kw) {
        (1, 1, 3) => channel_tile_vectors::<T, CHANNELS, 8, 4, FUSED, 3>(frame, bias, out),
        (1, 1, 5) => channel_tile_vectors::<T, CHANNELS, 8, 4, FUSED, 5>(frame, bias, out),
        _ => channel_tile_vectors::<T, CHANNELS, 8, 4, FUSED, 0>(frame, bias, out),
    }
}

#[inline(always)]
fn channel_tile_vectors<
    T: Element,
    const CHANNELS: usize,
    const VECTOR: usize,
    const HALF: usize,
    const FUSED: bool,
    const KW: usize,
>(
    frame: Frame<'_, T>,
    bias: [T; CHANNELS],
    out: &mut [&mut [T]; CHANNELS],
) {
    let g = frame.g;
    let (out_h, out_w) = (g.out_h, g.out_w);
    if out_h < TILE_ROWS || out_w < HALF {
        for oh in 0..out_h {
            let origin = oh * g.sh * frame.wp;
            for ow in (0..out_w).step_by(VECTOR) {
                let pixels = VECTOR.min(out_w - ow);
                let acc =
                    partial_tile::<T, CHANNELS, VECTOR, FUSED>(frame, bias, origin + ow, pixels);
                for (plane, sums) in out.iter_mut().zip(&acc) {
                    let at = oh * out_w + ow;
                    plane[at..at + pixels].copy_from_slice(&sums[..pixels]);
                }
            }
        }
        return;
    }
    let mut oh = 0;
    while oh < out_h {
        let top = oh.min(out_h - TILE_ROWS);
        let mut ow = 0;
        while ow < out_w {
            let left = out_w - ow;
            ow = if out_w >= VECTOR && left > HALF {
                let start = ow.min(out_w - VECTOR);
                let acc = full_tile::<T, CHANNELS, VECTOR, FUSED, KW>(frame, bias, top, start);
                store(&acc, out, out_w, (top, start));
                start + VECTOR
            } else {
                let start = ow.min(out_w - HALF);
                let acc = full_tile::<T, CHANNELS, HALF, FUSED, KW>(frame, bias, top, start);
                store(&acc, out, out_w, (top, start));
                start + HALF
            };
        }
        oh = top + TILE_ROWS;
    }
}

/// Writes a tile's sums at output row `top` and column `left` of each of
/// its channels' planes.
#[inline(always)]
fn store<T: Element, const CHANNELS: usize, const PIXELS: usize>(
    acc: &[[[T; PIXELS]; TILE_ROWS]; CHANNELS],
    out: &mut [&mut [T]; CHANNELS],
    out_w: usize,
    (top, left): (usize, usize),
) {
    for (plane, rows) in out.iter_mut().zip(acc) {
        for (r, sums) in rows.iter().enumerate() {
            let at = (top + r) * out_w + left;
            plane[at..at + PIXELS].copy_from_slice(sums);
        }
    }
}

/// `a · b + c`, fused where the caller was compiled with FMA.
#[inline(always)]
fn multiply_add<T: Element, const FUSED: bool>(a: T, b: T, c: T) -> T {
    if FUSED { a.mul_add(b, c) } else { a * b + c }
}

/// One tile's sums over every tap, all in registers: `PIXELS` outputs from
/// column `left` of the output rows `top..top + TILE_ROWS`, for `CHANNELS`
/// output channels. With the kernel's width `KW` a constant (3 or 5, unit
/// dilation; 0 for any other), each kernel row takes one bounds check a
/// tile row and its taps unroll with constant offsets into the row and its
/// weights; with the width read at run time, each tap costs a dozen scalar
/// instructions of addressing for its dozen multiply-adds
/// (BENCHMARKS.md, "Constant kernel widths").
#[inline(always)]
fn full_tile<
    T: Element,
    const CHANNELS: usize,
    const PIXELS: usize,
    const FUSED: bool,
    const KW: usize,
>(
    frame: Frame<'_, T>,
    bias: [T; CHANNELS],
    top: usize,
    left: usize,
) -> [[[T; PIXELS]; TILE_ROWS]; CHANNELS] {
    if KW == 0 {
        return full_tile_any::<T, CHANNELS, PIXELS, FUSED>(frame, bias, top, left);
    }
    let g = frame.g;
    debug_assert_eq!((g.kw, g.dw), (KW, 1), "the caller matched the width");
    let mut acc = biased_tile::<T, CHANNELS, PIXELS>(bias);
    let row_step = g.sh * frame.wp;
    let row_weights = KW * CHANNELS;
    for cl in 0..frame.c_in_g {
        for i in 0..g.kh {
            let row = cl * frame.plane + top * row_step + i * g.dh * frame.wp + left;
            // Written out rather than by `array::from_fn` (see
            // [`biased_tile`]).
            let line = |r: usize| &frame.source[row + r * row_step..][..PIXELS + KW - 1];
            let lines: [&[T]; TILE_ROWS] = [line(0), line(1)];
            let w = &frame.weights[(cl * g.kh + i) * row_weights..][..row_weights];
            kernel_tap::<T, CHANNELS, PIXELS, FUSED, 0>(lines, w, &mut acc);
            kernel_tap::<T, CHANNELS, PIXELS, FUSED, 1>(lines, w, &mut acc);
            kernel_tap::<T, CHANNELS, PIXELS, FUSED, 2>(lines, w, &mut acc);
            if KW == 5 {
                kernel_tap::<T, CHANNELS, PIXELS, FUSED, 3>(lines, w, &mut acc);
                kernel_tap::<T, CHANNELS, PIXELS, FUSED, 4>(lines, w, &mut acc);
            }
        }
    }
    acc
}

/// A tile's sums before its taps: each channel's bias. Filled by a loop:
/// `bias.map(..)` and `array::from_fn` compile to calls to the standard
/// library's `try_map` in these loops, a sixth of seed64's forward pass
/// (BENCHMARKS.md, "Constant kernel widths").
#[inline(always)]
fn biased_tile<T: Element, const CHANNELS: usize, const PIXELS: usize>(
    bias: [T; CHANNELS],
) -> [[[T; PIXELS]; TILE_ROWS]; CHANNELS] {
    let mut acc = [[[T::zero(); PIXELS]; TILE_ROWS]; CHANNELS];
    for (sums, &b) in acc.iter_mut().zip(&bias) {
        *sums = [[b; PIXELS]; TILE_ROWS];
    }
    acc
}

/// Tap `J` of a kernel row of [`full_tile`]: `lines` are the tile's input
/// rows from the tap's first column, `w` the kernel row's packed weights.
#[inline(always)]
fn kernel_tap<
    T: Element,
    const CHANNELS: usize,
    const PIXELS: usize,
    const FUSED: bool,
    const J: usize,
>(
    lines: [&[T]; TILE_ROWS],
    w: &[T],
    acc: &mut [[[T; PIXELS]; TILE_ROWS]; CHANNELS],
) {
    let w: &[T; CHANNELS] = w[J * CHANNELS..][..CHANNELS]
        .try_into()
        .expect("one packed weight per tap and channel");
    let run = |r: usize| -> &[T; PIXELS] {
        lines[r][J..J + PIXELS]
            .try_into()
            .expect("a tile's line holds each tap's run")
    };
    add_tap::<T, CHANNELS, PIXELS, FUSED>(w, [run(0), run(1)], acc);
}

/// `acc[cb][r] += w[cb] · x[r]`: one tap of a tile.
#[inline(always)]
fn add_tap<T: Element, const CHANNELS: usize, const PIXELS: usize, const FUSED: bool>(
    w: &[T; CHANNELS],
    x: [&[T; PIXELS]; TILE_ROWS],
    acc: &mut [[[T; PIXELS]; TILE_ROWS]; CHANNELS],
) {
    for cb in 0..CHANNELS {
        for r in 0..TILE_ROWS {
            for k in 0..PIXELS {
                acc[cb][r][k] = multiply_add::<T, FUSED>(w[cb], x[r][k], acc[cb][r][k]);
            }
        }
    }
}

/// [`full_tile`] for any kernel width and dilation.
#[inline(always)]
fn full_tile_any<T: Element, const CHANNELS: usize, const PIXELS: usize, const FUSED: bool>(
    frame: Frame<'_, T>,
    bias: [T; CHANNELS],
    top: usize,
    left: usize,
) -> [[[T; PIXELS]; TILE_ROWS]; CHANNELS] {
    let g = frame.g;
    let mut acc = biased_tile::<T, CHANNELS, PIXELS>(bias);
    let mut weights = frame.weights.chunks_exact(CHANNELS);
    let row_step = g.sh * frame.wp;
    for cl in 0..frame.c_in_g {
        for i in 0..g.kh {
            let row = cl * frame.plane + top * row_step + i * g.dh * frame.wp + left;
            for &tap in frame.taps {
                let at = row + tap;
                let run = |r: usize| -> &[T; PIXELS] {
                    let at = at + r * row_step;
                    frame.source[at..at + PIXELS]
                        .try_into()
                        .expect("a tile's run lies inside its input row")
                };
                let w: &[T; CHANNELS] = weights
                    .next()
                    .and_then(|w| w.try_into().ok())
                    .expect("one packed weight per tap and channel");
                add_tap::<T, CHANNELS, PIXELS, FUSED>(w, [run(0), run(1)], &mut acc);
            }
        }
    }
    acc
}

/// One row's `pixels ≤ PIXELS` outputs from `origin` (an offset into each
/// input channel of the frame), for planes too small for [`full_tile`]:
/// the same sums in the same order, fused alike, so that an output row
/// comes out the same whichever tile computes it (a band of one row here,
/// of several in [`full_tile`], as the thread count cuts the plane).
#[inline(always)]
fn partial_tile<T: Element, const CHANNELS: usize, const PIXELS: usize, const FUSED: bool>(
    frame: Frame<'_, T>,
    bias: [T; CHANNELS],
    origin: usize,
    pixels: usize,
) -> [[T; PIXELS]; CHANNELS] {
    let g = frame.g;
    let mut acc = bias.map(|b| [b; PIXELS]);
    let mut weights = frame.weights.chunks_exact(CHANNELS);
    for cl in 0..frame.c_in_g {
        for i in 0..g.kh {
            let row = cl * frame.plane + origin + i * g.dh * frame.wp;
            for &tap in frame.taps {
                let at = row + tap;
                let x = &frame.source[at..at + pixels];
                let w = weights.next().expect("one packed weight per tap");
                for (sums, &weight) in acc.iter_mut().zip(w) {
                    for (sum, &v) in sums.iter_mut().zip(x) {
                        *sum = multiply_add::<T, FUSED>(weight, v, *sum);
                    }
                }
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::{
        Columns, Frame, MAX_KERNEL_WIDTH, RawTiles, TILE_ROWS, band_pieces, channel_tile_vectors,
        channel_tiles, split_evenly,
    };
    use crate::element::Element;
    use crate::spec::{Conv2dSpec, Geometry};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    /// `flat` cut into `CHANNELS` planes of equal length, as the tiles
    /// take them.
    fn planes_of<T, const CHANNELS: usize>(flat: &mut [T]) -> [&mut [T]; CHANNELS] {
        let plane = flat.len() / CHANNELS;
        let mut planes = flat.chunks_exact_mut(plane);
        std::array::from_fn(|_| planes.next().expect("CHANNELS planes"))
    }

    /// A plane's rows computed one at a time (the partial tiles a band of
    /// one row takes) against the same rows computed together (the full
    /// tiles), and `f32`'s tiles of 16 pixels against those of 8: the same
    /// bits, fused or not, at kernel widths with a constant tile (3, 5) and
    /// without (7), whatever SIMD build the CPU runs, since the thread
    /// count decides how high a band is and the CPU how wide a tile.
    fn rows_alone_match_rows_together<T: Element, const FUSED: bool>(seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        for k in [3, 5, 7] {
            for _ in 0..20 {
                let c_in = rng.random_range(1..=3);
                let (in_h, in_w) = (
                    k - 1 + rng.random_range(2..=6),
                    k - 1 + rng.random_range(5..=40),
                );
                let spec = Conv2dSpec::new(c_in, 4, (k, k));
                let g = Geometry::new(&spec, [1, c_in, in_h, in_w]).unwrap();
                let value = |rng: &mut StdRng| T::from_f64(rng.random_range(-1.0..1.0));
                let source: Vec<T> = (0..c_in * in_h * in_w).map(|_| value(&mut rng)).collect();
                let weights: Vec<T> = (0..4 * c_in * k * k).map(|_| value(&mut rng)).collect();
                let bias: [T; 4] = std::array::from_fn(|_| value(&mut rng));
                let mut taps = [0; MAX_KERNEL_WIDTH];
                let columns = Columns::unit_stride(&g, &mut taps);
                let frame = |source, g| Frame {
                    source,
                    weights: &weights,
                    c_in_g: c_in,
                    plane: in_h * in_w,
                    wp: in_w,
                    taps: columns.taps,
                    g,
                };
                let run = |frame: Frame<'_, T>, out: &mut [T]| {
                    let out = &mut planes_of::<T, 4>(out);
                    match (std::mem::size_of::<T>(), k) {
                        (4, 3) => channel_tile_vectors::<T, 4, 16, 8, FUSED, 3>(frame, bias, out),
                        (4, 5) => channel_tile_vectors::<T, 4, 16, 8, FUSED, 5>(frame, bias, out),
                        (4, _) => channel_tile_vectors::<T, 4, 16, 8, FUSED, 0>(frame, bias, out),
                        (_, 3) => channel_tile_vectors::<T, 4, 8, 4, FUSED, 3>(frame, bias, out),
                        (_, 5) => channel_tile_vectors::<T, 4, 8, 4, FUSED, 5>(frame, bias, out),
                        _ => channel_tile_vectors::<T, 4, 8, 4, FUSED, 0>(frame, bias, out),
                    }
                };
                let (out_h, out_w) = (g.out_h, g.out_w);
                assert!(out_h >= TILE_ROWS);
                let mut together = vec![T::zero(); 4 * out_h * out_w];
                run(frame(&source, &g), &mut together);
                if std::mem::size_of::<T>() == 4 {
                    // The narrower tiles of `f32` on CPUs without AVX-512.
                    let mut narrow = vec![T::zero(); 4 * out_h * out_w];
                    super::f32_tiles_of_32_bytes::<T, 4, FUSED>(
                        frame(&source, &g),
                        bias,
                        &mut planes_of(&mut narrow),
                    );
                    let bits =
                        |v: &[T]| v.iter().map(|x| x.into_f64().to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&narrow),
                        bits(&together),
                        "k {k}, {c_in} channels, {in_h}x{in_w}"
                    );
                }
                let one_row = Geometry {
                    out_h: 1,
                    in_h: k,
                    ..g
                };
                for row in 0..out_h {
                    let mut alone = vec![T::zero(); 4 * out_w];
                    run(frame(&source[row * in_w..], &one_row), &mut alone);
                    for channel in 0..4 {
                        let at = (channel * out_h + row) * out_w;
                        let bits =
                            |v: &[T]| v.iter().map(|x| x.into_f64().to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            bits(&alone[channel * out_w..][..out_w]),
                            bits(&together[at..at + out_w]),
                            "{} k {k}, {c_in} channels, {in_h}x{in_w}, row {row}, channel {channel}",
                            T::NAME
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn rows_alone_match_rows_together_f32() {
        rows_alone_match_rows_together::<f32, true>(1);
        rows_alone_match_rows_together::<f32, false>(2);
    }

    #[test]
    fn rows_alone_match_rows_together_f64() {
        rows_alone_match_rows_together::<f64, true>(3);
        rows_alone_match_rows_together::<f64, false>(4);
    }

    /// The AVX2 tiles of `T` (`tiled_avx2.rs`, run by `avx2`) against the
    /// portable tiles of `CHANNELS` channels, fused: the same bits on
    /// random planes of every kernel width the tiles take, dilated or not,
    /// with rows and columns that leave the last tile shifted back, on an
    /// input exactly as long as the tiles read; planes narrower than a
    /// vector are left to the portable tiles.
    fn avx2_tiles_match_portable_tiles<T: Element, const CHANNELS: usize>(
        rng: &mut StdRng,
        avx2: fn(RawTiles<'_, T>, &mut [&mut [T]]) -> bool,
    ) {
        for k in [1, 2, 3, 5, 7] {
            for _ in 0..12 {
                let c_in = rng.random_range(1..=3);
                let dilation = rng.random_range(1..=2);
                let reach = (k - 1) * dilation;
                let (in_h, in_w) = (
                    reach + rng.random_range(2..=7),
                    reach + rng.random_range(4..=29),
                );
                let spec = Conv2dSpec::new(c_in, CHANNELS, (k, k)).dilation((dilation, dilation));
                let g = Geometry::new(&spec, [1, c_in, in_h, in_w]).unwrap();
                let value = |rng: &mut StdRng| T::from_f64(rng.random_range(-1.0..1.0));
                let source: Vec<T> = (0..c_in * in_h * in_w).map(|_| value(rng)).collect();
                let weights: Vec<T> = (0..CHANNELS * c_in * k * k).map(|_| value(rng)).collect();
                let bias: [T; CHANNELS] = std::array::from_fn(|_| value(rng));
                let mut taps = [0; MAX_KERNEL_WIDTH];
                let columns = Columns::unit_stride(&g, &mut taps);
                let frame = Frame {
                    source: &source,
                    weights: &weights,
                    c_in_g: c_in,
                    plane: in_h * in_w,
                    wp: in_w,
                    taps: columns.taps,
                    g: &g,
                };
                let len = CHANNELS * g.out_h * g.out_w;
                let mut portable = vec![T::zero(); len];
                let out = &mut planes_of(&mut portable);
                channel_tile_vectors::<T, CHANNELS, 8, 4, true, 0>(frame, bias, out);
                let tiles = RawTiles {
                    source: &source,
                    weights: &weights,
                    bias: &bias,
                    c_in_g: c_in,
                    plane: in_h * in_w,
                    row_step: in_w,
                    kernel_row_step: dilation * in_w,
                    kh: k,
                    taps: columns.taps,
                    out_h: g.out_h,
                    out_w: g.out_w,
                };
                let mut tiled = vec![T::from_f64(f64::NAN); len];
                let out = &mut planes_of::<T, CHANNELS>(&mut tiled);
                if !avx2(tiles, out) {
                    assert!(
                        !super::super::channel_vectors::avx2_fma()
                            || g.out_w * std::mem::size_of::<T>() < 32,
                        "the AVX2 tiles take {}x{} planes",
                        g.out_h,
                        g.out_w
                    );
                    continue;
                }
                let bits = |v: &[T]| v.iter().map(|x| x.into_f64().to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&tiled),
                    bits(&portable),
                    "{} {CHANNELS} channels, k {k}, dilation {dilation}, {c_in} inputs, {in_h}x{in_w}",
                    T::NAME
                );
            }
        }
    }

    #[test]
    fn avx2_f64_tiles_match_portable_tiles() {
        use super::super::tiled_avx2::planes_f64_with_avx2 as avx2;
        let mut rng = StdRng::seed_from_u64(5);
        avx2_tiles_match_portable_tiles::<f64, 6>(&mut rng, avx2);
        avx2_tiles_match_portable_tiles::<f64, 4>(&mut rng, avx2);
        avx2_tiles_match_portable_tiles::<f64, 2>(&mut rng, avx2);
        avx2_tiles_match_portable_tiles::<f64, 1>(&mut rng, avx2);
    }

    #[test]
    fn avx2_f32_tiles_match_portable_tiles() {
        use super::super::tiled_avx2::planes_f32_with_avx2 as avx2;
        let mut rng = StdRng::seed_from_u64(6);
        avx2_tiles_match_portable_tiles::<f32, 6>(&mut rng, avx2);
        avx2_tiles_match_portable_tiles::<f32, 4>(&mut rng, avx2);
        avx2_tiles_match_portable_tiles::<f32, 2>(&mut rng, avx2);
        avx2_tiles_match_portable_tiles::<f32, 1>(&mut rng, avx2);
    }

    #[test]
    fn channel_tiles_cover_every_channel_once_in_allowed_sizes() {
        for channels in 0..40 {
            let tiles: Vec<_> = channel_tiles(channels).collect();
            let mut next = 0;
            for &(start, len) in &tiles {
                assert_eq!(start, next, "{channels} channels: {tiles:?}");
                assert!([6, 4, 2, 1].contains(&len), "{channels}: {tiles:?}");
                // Two channels after tiles of 6 go with the last as two of 4.
                let two_after_six = channels > 6 && channels % 6 == 2;
                assert!(len != 2 || !two_after_six, "{channels}: {tiles:?}");
                next += len;
            }
            assert_eq!(next, channels, "{channels} channels: {tiles:?}");
        }
    }

    #[test]
    fn band_pieces_cover_the_band_in_tiles_of_bounded_output() {
        let spec = Conv2dSpec::new(3, 16, (3, 3)).padding((1, 1));
        let g = Geometry::new(&spec, [1, 3, 1024, 1024]).unwrap();
        for rows in [1, 2, 3, 7, 64, 511, 512, 1024] {
            let pieces = band_pieces::<f32>(&g, rows);
            let ranges: Vec<_> = split_evenly(rows, pieces).collect();
            assert_eq!(ranges.len(), pieces);
            let mut next = 0;
            for range in &ranges {
                assert_eq!(range.start, next, "{rows} rows: {ranges:?}");
                assert!(range.len() >= 2 || pieces == 1, "{rows} rows: {ranges:?}");
                let bytes = range.len() * 16 * 1024 * 4;
                assert!(
                    bytes <= 2 * super::BAND_PIECE_BYTES,
                    "{rows} rows: {ranges:?}"
                );
                next = range.end;
            }
            assert_eq!(next, rows);
        }
    }
}
