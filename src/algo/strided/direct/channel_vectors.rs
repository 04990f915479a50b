//! The direct kernel's forward pass on layers with many output channels a
//! group, group by group, with output channels in vectors: each tile of output,
//! six pixels by up to four vectors of output channels, is summed over
//! every input channel and tap in registers, per dtype through AVX-512
//! (or AVX2 with FMA, a vector of channels at a time),
//! reached through the hidden `Element::channel_vector_block`.
//!
//! A column matrix copies every window of the input before its GEMM
//! reads it, and the GEMM runs well below the FMA peak that a direct
//! kernel of this kind reaches (BENCHMARKS.md, "Channel vectors"). Here a
//! tap of a tile multiplies one vector of weights per block of output
//! channels by each of its six pixels' input values, broadcast straight
//! from the padded input planes: nothing is copied but the padding, and
//! the weights, once a call, into `[tap, output channel]` rows, a panel
//! of four vectors of output channels after another, so that the weights
//! a block of input channels reads are one run of memory that stays in
//! L1 (BENCHMARKS.md, "Channel-vector panels"). The pixels of a tile need
//! not share an output row, so a tile is never cut short by the row's
//! end; only the last tile of a band may repeat its last pixel. On small
//! images a lane's whole samples go as one stack, their tiles running on
//! from one sample into the next, so that each block of weights serves
//! every sample of the stack while it stays in L1. The tiles come out
//! pixel-major (`[pixel, output channel]`) and are transposed into the
//! NCHW output a chunk of output rows (or a stack) at a time, while the
//! chunk's tiles are still in L2.

use super::{copy_planes, padded_band, padded_samples};
use crate::element::Element;
use crate::lanes::Work;
use crate::layout::transpose::{transpose, transpose_on_pool};
use crate::operands::Forward;
use crate::spec::Geometry;
use crate::workspace::{Workspace, aligned_scratch, scratch};
use ndarray::{ArrayView4, ArrayViewMut4, s};

/// Pixels a tile: with four vectors of channels, 24 sums, four weight
/// vectors and a broadcast fill 29 of AVX-512's 32 registers (with AVX2,
/// one vector of two registers: 15 of 16).
pub(crate) const TILE_PIXELS: usize = 6;

/// Vectors of output channels a tile at most.
pub(crate) const TILE_VECTORS: usize = 4;

/// Bytes of a vector of channels: one AVX-512 register, two AVX2 ones.
const VECTOR_BYTES: usize = 64;

/// The most taps (`kh · kw`) a layer may have here: their offsets sit in
/// an array on the stack.
pub(crate) const MAX_TAPS: usize = 64;

/// Bytes of weights one block of input channels reads at most, a panel
/// of output channels at a time: small enough to stay in the L1 data
/// cache (32 KiB and more on the machines measured) while every tile of
/// a band reads them, large enough that the tiles' sums are stored and
/// loaded again rarely (BENCHMARKS.md, "Channel-vector panels").
const BLOCK_WEIGHT_BYTES: usize = 1 << 15;

/// Bytes of tiles a chunk of output rows holds at most: every block of a
/// chunk sums into its tiles and the chunk is transposed into the output
/// while they stay in L2 (half the smallest L2 among the machines
/// measured, Zen 4's 1 MiB), where a large image's tiles would go out to
/// L3 and memory between blocks (BENCHMARKS.md, "Channel-vector chunks").
const TILE_CHUNK_BYTES: usize = 1 << 19;

/// Whether this machine runs the kernel: a CPU with AVX-512 F, or with
/// AVX2 and FMA ([`avx2_fma`]).
pub(crate) fn available() -> bool {
    super::narrow_planes::available() || avx2_fma()
}

/// Whether the CPU has AVX2 and FMA, where a vector of channels is two
/// 32-byte registers and a tile sums one vector at a time: six pixels by
/// two registers are 12 sums, which with two weight registers and a
/// broadcast fill 15 of AVX2's 16 (four vectors at once, as with
/// AVX-512, would need 48).
pub(super) fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The kernel for this CPU of two builds of one kernel (this file's or
/// the weight gradient's): AVX-512 where it has it, else AVX2 with FMA,
/// else none.
#[cfg(target_arch = "x86_64")]
pub(super) fn kernel_for<K>(avx512: K, avx2: K) -> Option<K> {
    if super::narrow_planes::available() {
        Some(avx512)
    } else if avx2_fma() {
        Some(avx2)
    } else {
        None
    }
}

/// Whether the kernel computes `g` here (group by group): at most
/// [`MAX_TAPS`] taps, on a CPU with AVX-512 or AVX2 and FMA.
pub(crate) fn applies(g: &Geometry) -> bool {
    g.kh * g.kw <= MAX_TAPS && available()
}

/// Forward pass on validated operands where [`applies`]; writes every
/// element of `y`.
pub(crate) fn forward<T: Element>(
    op: Forward<'_, T>,
    y: ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
) {
    run(op, Layout::AsGiven, y, ws, Work::forward(op.g, 1));
}

/// A backward call's input gradient: the error `dy` convolved with the
/// turned, channel-swapped weights of `w` (the layer's own, `[c_out,
/// c_in, kh, kw]`) as the forward pass of `flipped` (the input gradient
/// as a forward geometry), scheduled as a backward pass. The weights are
/// turned as they are laid out, in one pass over them.
pub(crate) fn input_gradient<T: Element>(
    (dy, w): (ArrayView4<'_, T>, ArrayView4<'_, T>),
    flipped: &Geometry,
    dx: ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
) {
    let op = Forward {
        x: dy,
        w,
        bias: None,
        g: flipped,
    };
    run(
        op,
        Layout::Turned,
        dx,
        ws,
        Work::forward(flipped, 1).of_backward(),
    );
}

/// How a call's weights are laid out into `[tap, output channel]` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// As they are: `w` is the call's `[c_out, c_in, kh, kw]`.
    AsGiven,
    /// Turned and channel-swapped: `w` is `[c_in, c_out, kh, kw]` of the
    /// call (the layer's weights for its input gradient), each tap read
    /// from the opposite tap.
    Turned,
}

/// [`forward`] as `work` schedules it.
fn run<T: Element>(
    op: Forward<'_, T>,
    layout: Layout,
    y: ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
    work: Work,
) {
    let Forward { x, w, bias, g } = op;
    let lanes = VECTOR_BYTES / std::mem::size_of::<T>();
    let taps = g.kh * g.kw;
    let (c_in, c_out) = (g.in_channels_per_group(), g.out_channels_per_group());
    let k = c_in * taps;
    let width = c_out.next_multiple_of(lanes);
    let panel_width = TILE_VECTORS * lanes;
    let most_stacked = samples_a_stack::<T>(g, width, ws.column_cap_bytes());
    let schedule = ws.schedule(work);
    let (packed_buf, memory) = ws.memory(&schedule);
    // Each group's weights, then its biases, in one run.
    let group_len = (k + 1) * width;
    let packed = aligned_scratch(packed_buf, g.groups * group_len);
    for (group, run_of_group) in packed.chunks_exact_mut(group_len).enumerate() {
        let (weights, biases) = run_of_group.split_at_mut(k * width);
        // The group's filters: its output channels' as given, its input
        // channels' turned (the first axis of the layer's weights).
        let channels = group * c_out..(group + 1) * c_out;
        match layout {
            Layout::AsGiven => {
                let filters = w.slice(s![channels.clone(), .., .., ..]);
                pack_weights(filters, weights, (width, panel_width));
            }
            Layout::Turned => {
                let filters = w.slice(s![group * c_in..(group + 1) * c_in, .., .., ..]);
                pack_turned_weights(filters, weights, (width, panel_width));
            }
        }
        biases.fill(T::zero());
        if let Some(bias) = bias {
            let bias = bias.slice(s![channels]);
            biases.iter_mut().zip(bias).for_each(|(b, &v)| *b = v);
        }
    }
    let packed: &[T] = packed;
    let wp = g.in_w + g.padding.left + g.padding.right;
    let mut tap_offsets = [0usize; MAX_TAPS];
    for (t, offset) in tap_offsets.iter_mut().enumerate().take(taps) {
        *offset = (t / g.kw) * g.dh * wp + (t % g.kw) * g.dw;
    }
    let tap_offsets = &tap_offsets[..taps];
    // Output rows a chunk: its tiles within `TILE_CHUNK_BYTES`.
    let row_bytes = g.out_w * width * std::mem::size_of::<T>();
    let chunk_rows = (TILE_CHUNK_BYTES / row_bytes.max(1)).max(1);
    schedule.run(memory, y, |item, mut y_item, buffers| {
        let [source_buf, tiles_buf, planes_buf] = buffers.split();
        if !item.is_band_of(g.out_h) && most_stacked > 1 && item.samples.len() > 1 {
            let stacks = item.samples.len().div_ceil(most_stacked);
            let stacked = item.samples.len().div_ceil(stacks);
            for first in (0..item.samples.len()).step_by(stacked) {
                let last = (first + stacked).min(item.samples.len());
                let samples = item.samples.start + first..item.samples.start + last;
                let (source, sample_step) = padded_samples(x, samples, g, source_buf);
                let y_stack = y_item.slice_mut(s![first..last, .., .., ..]);
                let windows = (source, sample_step, tap_offsets);
                let weights = (packed, group_len, bias.is_some());
                sum_stack(windows, g, weights, y_stack, [tiles_buf, planes_buf]);
            }
            return;
        }
        for (n, mut y_n) in item.samples.clone().zip(y_item.outer_iter_mut()) {
            let ((source, offset), band) = padded_band(x, n, g, &item.rows, source_buf);
            let plane = (band.in_h + band.padding.top + band.padding.bottom) * wp;
            let pixels = band.out_h * g.out_w;
            for (group, run_of_group) in packed.chunks_exact(group_len).enumerate() {
                let (weights, biases) = run_of_group.split_at(k * width);
                let first_plane = offset + group * c_in * plane;
                let mut y_group = y_n.slice_mut(s![group * c_out..(group + 1) * c_out, .., ..]);
                let contiguous = y_group.is_standard_layout();
                let planes: &mut [T] = if contiguous {
                    &mut []
                } else {
                    scratch(planes_buf, c_out * pixels)
                };
                for r0 in (0..band.out_h).step_by(chunk_rows) {
                    let chunk_px = chunk_rows.min(band.out_h - r0) * g.out_w;
                    let tiles =
                        aligned_scratch(tiles_buf, chunk_px.next_multiple_of(TILE_PIXELS) * width);
                    let chunk = Windows::of_one_sample(
                        (chunk_px, g.out_w),
                        (first_plane + r0 * g.sh * wp, g.sh * wp, g.sw),
                        tap_offsets,
                        (c_in, plane),
                    );
                    let biases = bias.map(|_| biases);
                    sum_chunk(
                        source,
                        chunk,
                        (weights, biases),
                        tiles,
                        (width, panel_width),
                    );
                    let tiles: &[T] = tiles;
                    let at = r0 * g.out_w;
                    let dst: &mut [T] = if contiguous {
                        y_group.as_slice_mut().expect("standard layout")
                    } else {
                        &mut *planes
                    };
                    transpose(tiles, width, &mut dst[at..], pixels, (chunk_px, c_out));
                }
                if !contiguous {
                    copy_planes(planes, y_group);
                }
            }
        }
    });
}

/// Bytes of tiles and padded input a stack of samples holds at most: the
/// smallest L2 among the machines measured (Zen 4's 1 MiB), so that each
/// panel of output channels reads the stack's input again from L2, and
/// the tiles stay there from one block of input channels to the next
/// (BENCHMARKS.md, "Stacked samples").
const STACK_BYTES: usize = 1 << 20;

/// The most whole samples whose windows one run of tiles takes, their
/// tiles (`width` output channels a pixel) and padded input within
/// [`STACK_BYTES`] and their padded input within `cap` bytes: each block
/// of weights then serves the tiles of several small images while it
/// stays in L1, and only the last tile of the run repeats a pixel, where
/// a 7x7 image's nine tiles would repeat five (BENCHMARKS.md, "Stacked
/// samples").
fn samples_a_stack<T>(g: &Geometry, width: usize, cap: usize) -> usize {
    let size = std::mem::size_of::<T>();
    let tiles = g.out_h * g.out_w * width * size;
    let wp = g.in_w + g.padding.left + g.padding.right;
    let hp = g.in_h + g.padding.top + g.padding.bottom;
    let input = g.in_channels * hp * wp * size;
    (STACK_BYTES / (tiles + input).max(1))
        .min(cap / input.max(1))
        .max(1)
}

/// Every group's tiles of the whole samples of `y` (a stack of them),
/// their windows in `source` (padded samples `sample_step` apart, taps at
/// `taps`), from the `packed` weights and biases (`group_len` a group;
/// the biases read where `with_bias`), transposed into `y` sample by
/// sample.
fn sum_stack<T: Element>(
    (source, sample_step, taps): (&[T], usize, &[usize]),
    g: &Geometry,
    (packed, group_len, with_bias): (&[T], usize, bool),
    mut y: ArrayViewMut4<'_, T>,
    [tiles_buf, planes_buf]: [&mut Vec<T>; 2],
) {
    let lanes = VECTOR_BYTES / std::mem::size_of::<T>();
    let (c_in, c_out) = (g.in_channels_per_group(), g.out_channels_per_group());
    let width = c_out.next_multiple_of(lanes);
    let k = c_in * taps.len();
    let wp = g.in_w + g.padding.left + g.padding.right;
    let plane = (g.in_h + g.padding.top + g.padding.bottom) * wp;
    let sample_pixels = g.out_h * g.out_w;
    let pixels = y.len_of(ndarray::Axis(0)) * sample_pixels;
    for (group, run_of_group) in packed.chunks_exact(group_len).enumerate() {
        let (weights, biases) = run_of_group.split_at(k * width);
        let tiles = aligned_scratch(tiles_buf, pixels.next_multiple_of(TILE_PIXELS) * width);
        let windows = Windows {
            pixels,
            sample_pixels,
            out_w: g.out_w,
            start: group * c_in * plane,
            sample_step,
            row_step: g.sh * wp,
            col_step: g.sw,
            taps,
            channels: c_in,
            plane,
        };
        let biases = with_bias.then_some(biases);
        sum_chunk(
            source,
            windows,
            (weights, biases),
            tiles,
            (width, TILE_VECTORS * lanes),
        );
        let channels = group * c_out..(group + 1) * c_out;
        let sample_tiles = tiles.chunks(sample_pixels * width);
        for (mut y_n, tiles) in y.outer_iter_mut().zip(sample_tiles) {
            let mut y_group = y_n.slice_mut(s![channels.clone(), .., ..]);
            match y_group.as_slice_mut() {
                Some(dst) => transpose(tiles, width, dst, sample_pixels, (sample_pixels, c_out)),
                None => {
                    let planes = scratch(planes_buf, c_out * sample_pixels);
                    transpose(tiles, width, planes, sample_pixels, (sample_pixels, c_out));
                    copy_planes(planes, y_group);
                }
            }
        }
    }
}

/// Sums the tiles of a chunk's windows (every input channel of a group)
/// into `tiles` (`[pixel, output channel]` rows, `width` apart), panel by
/// panel of `panel_width` output channels and block by block of input
/// channels, from the group's packed `weights` and its `biases` (or zero).
fn sum_chunk<T: Element>(
    source: &[T],
    chunk: Windows<'_>,
    (weights, biases): (&[T], Option<&[T]>),
    tiles: &mut [T],
    (width, panel_width): (usize, usize),
) {
    let lanes = VECTOR_BYTES / std::mem::size_of::<T>();
    let taps = chunk.taps.len();
    let k = chunk.channels * taps;
    for (first, pw) in panels(width, panel_width) {
        let vectors = pw / lanes;
        let panel = &weights[first * k..];
        let block_channels = block_channels(chunk.channels, taps * vectors * VECTOR_BYTES);
        for c0 in (0..chunk.channels).step_by(block_channels) {
            let windows = Windows {
                start: chunk.start + c0 * chunk.plane,
                channels: block_channels.min(chunk.channels - c0),
                ..chunk
            };
            let start = match (c0, biases) {
                (0, Some(biases)) => Start::Bias(&biases[first..]),
                (0, None) => Start::Zero,
                _ => Start::Output,
            };
            let weights = (&panel[c0 * taps * pw..], pw);
            let out = (&mut tiles[first..], width);
            let raw = (windows.to_raw(), start.into_raw());
            let done = T::channel_vector_block(source, raw, weights, out, vectors);
            assert!(done, "the kernel applies only where the CPU runs it");
        }
    }
}

/// Input channels a block of a panel takes: the fewest blocks whose
/// weights (`channel_bytes` a channel) stay within [`BLOCK_WEIGHT_BYTES`],
/// the channels shared out evenly among them.
fn block_channels(c_in: usize, channel_bytes: usize) -> usize {
    let blocks = (c_in * channel_bytes)
        .div_ceil(BLOCK_WEIGHT_BYTES)
        .clamp(1, c_in.max(1));
    c_in.div_ceil(blocks).max(1)
}

/// Each panel's share of `[tap, output channel]` rows: `(width,
/// panel_width)` are the output channels rounded up to a vector and the
/// channels of a full panel. Panel `p` (output channels `p · panel_width`
/// on, `pw` of them, fewer in the last) holds its rows one after another,
/// `pw` long, from element `p · panel_width · k` (`k` rows of taps), so
/// that a block's weights are one run of memory.
fn panels(width: usize, panel_width: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..width)
        .step_by(panel_width)
        .map(move |first| (first, panel_width.min(width - first)))
}

/// `w` (`[c_out, c_in, kh, kw]`) as [`panels`] of `[tap, output channel]`
/// rows, the columns past the output channels zero.
fn pack_weights<T: Element>(
    w: ndarray::ArrayView4<'_, T>,
    packed: &mut [T],
    (width, panel_width): (usize, usize),
) {
    let c_out = w.len_of(ndarray::Axis(0));
    let k = w.len() / c_out.max(1);
    for (first, pw) in panels(width, panel_width) {
        let panel = &mut packed[first * k..(first + pw) * k];
        let real = pw.min(c_out - first);
        match w.as_slice() {
            Some(w) => transpose_on_pool(&w[first * k..], k, panel, pw, (real, k)),
            None => {
                let filters = w.slice(s![first..first + real, .., .., ..]);
                for (co, filter) in filters.outer_iter().enumerate() {
                    for (kk, &value) in filter.iter().enumerate() {
                        panel[kk * pw + co] = value;
                    }
                }
            }
        }
        if pw > real {
            for row in panel.chunks_exact_mut(pw) {
                row[real..].fill(T::zero());
            }
        }
    }
}

/// `w` (`[c_in, c_out, kh, kw]` of the call: a layer's weights, for its
/// input gradient) turned and channel-swapped, as [`pack_weights`] lays
/// out the call's weights: row `c·taps + t` of a panel holds, for each of
/// its output channels `o`, `w[c, o]`'s tap `taps - 1 - t`. Each input
/// channel of the call is a transpose of its `[pw, taps]` block with the
/// rows taken in reverse, on the pool; the columns past the output
/// channels are zero.
fn pack_turned_weights<T: Element>(
    w: ndarray::ArrayView4<'_, T>,
    packed: &mut [T],
    (width, panel_width): (usize, usize),
) {
    use rayon::prelude::*;
    let (c_in, c_out, kh, kw) = w.dim();
    let taps = kh * kw;
    let k = c_in * taps;
    for (first, pw) in panels(width, panel_width) {
        let rows = &mut packed[first * k..(first + pw) * k];
        let real = pw.min(c_out - first);
        let turn = |(c, block): (usize, &mut [T])| {
            let filters = w.slice(s![c, first..first + real, .., ..]);
            match filters.as_slice() {
                Some(filters) => transpose(filters, taps, block, pw, (real, taps)),
                None => {
                    for (o, filter) in filters.outer_iter().enumerate() {
                        for (t, &value) in filter.iter().enumerate() {
                            block[t * pw + o] = value;
                        }
                    }
                }
            }
            for t in 0..taps / 2 {
                let (head, tail) = block.split_at_mut((taps - 1 - t) * pw);
                head[t * pw..(t + 1) * pw].swap_with_slice(&mut tail[..pw]);
            }
            for row in block.chunks_exact_mut(pw) {
                row[real..].fill(T::zero());
            }
        };
        let block_len = (taps * pw).max(1);
        if crate::output::worth_parallel_pass(rows.len()) {
            rows.par_chunks_mut(block_len).enumerate().for_each(turn);
        } else {
            rows.chunks_mut(block_len).enumerate().for_each(turn);
        }
    }
}

/// Where a block's windows lie in a padded input (`channels` planes
/// `plane` apart): output pixels `pixels`, whole samples of
/// `sample_pixels` (whole rows of `out_w`) one after another, the window
/// of a sample's pixel at `start + sample·sample_step + row·row_step +
/// column·col_step`, and its taps at `taps` from there.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Windows<'a> {
    pub pixels: usize,
    pub sample_pixels: usize,
    pub out_w: usize,
    pub start: usize,
    pub sample_step: usize,
    pub row_step: usize,
    pub col_step: usize,
    pub taps: &'a [usize],
    pub channels: usize,
    pub plane: usize,
}

/// [`Windows`] as the hidden `Element` methods pass them: the taps and
/// the other fields in order.
pub(crate) type RawWindows<'a> = (&'a [usize], [usize; 9]);

impl<'a> Windows<'a> {
    /// The windows of one sample's output rows: `pixels` whole rows of
    /// `out_w`, a window at `start + row·row_step + column·col_step`.
    pub(crate) fn of_one_sample(
        (pixels, out_w): (usize, usize),
        (start, row_step, col_step): (usize, usize, usize),
        taps: &'a [usize],
        (channels, plane): (usize, usize),
    ) -> Self {
        Windows {
            pixels,
            sample_pixels: pixels,
            out_w,
            start,
            sample_step: 0,
            row_step,
            col_step,
            taps,
            channels,
            plane,
        }
    }

    /// The windows as `Element::channel_vector_block` passes them.
    pub(crate) fn to_raw(self) -> RawWindows<'a> {
        let w = self;
        let fields = [
            w.pixels,
            w.sample_pixels,
            w.out_w,
            w.start,
            w.sample_step,
            w.row_step,
            w.col_step,
            w.channels,
            w.plane,
        ];
        (self.taps, fields)
    }

    /// The windows from [`Windows::to_raw`]'s form.
    pub(crate) fn from_raw((taps, fields): RawWindows<'a>) -> Self {
        let [
            pixels,
            sample_pixels,
            out_w,
            start,
            sample_step,
            row_step,
            col_step,
            channels,
            plane,
        ] = fields;
        Windows {
            pixels,
            sample_pixels,
            out_w,
            start,
            sample_step,
            row_step,
            col_step,
            taps,
            channels,
            plane,
        }
    }
}

impl Windows<'_> {
    /// Checks the windows, for a block of `vectors` vectors, against a
    /// source of `len` elements; returns whether they hold a pixel and a
    /// channel. Panics unless there are 1 to [`TILE_VECTORS`] vectors and
    /// 1 to [`MAX_TAPS`] taps, the pixels are whole samples of whole
    /// output rows, and every window's taps of every channel lie within the
    /// source.
    pub(crate) fn check(&self, len: usize, vectors: usize) -> bool {
        assert!((1..=TILE_VECTORS).contains(&vectors), "1 to 4 vectors");
        let taps = self.taps.len();
        assert!((1..=MAX_TAPS).contains(&taps), "1 to 64 taps");
        if self.pixels == 0 || self.channels == 0 {
            return false;
        }
        let (out_w, sample_pixels) = (self.out_w, self.sample_pixels);
        assert!(
            out_w > 0
                && sample_pixels > 0
                && sample_pixels.is_multiple_of(out_w)
                && self.pixels.is_multiple_of(sample_pixels),
            "whole samples of whole output rows"
        );
        let (samples, rows) = (self.pixels / sample_pixels, sample_pixels / out_w);
        let last_window = self.start
            + (samples - 1) * self.sample_step
            + (rows - 1) * self.row_step
            + (out_w - 1) * self.col_step;
        let reach = self.taps.iter().max().expect("taps") + (self.channels - 1) * self.plane;
        assert!(last_window + reach < len, "windows within the source");
        true
    }
}

/// What a block's sums start from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Start<'a, T> {
    /// Zero.
    Zero,
    /// The biases of the block's output channels, one each.
    Bias(&'a [T]),
    /// The values already in the output.
    Output,
}

impl<'a, T> Start<'a, T> {
    /// The start as `Element::channel_vector_block` passes it.
    pub(crate) fn into_raw(self) -> (Option<&'a [T]>, bool) {
        match self {
            Start::Zero => (None, false),
            Start::Bias(bias) => (Some(bias), false),
            Start::Output => (None, true),
        }
    }

    /// The start from [`Start::into_raw`]'s form.
    pub(crate) fn from_raw(raw: (Option<&'a [T]>, bool)) -> Self {
        match raw {
            (_, true) => Start::Output,
            (Some(bias), false) => Start::Bias(bias),
            (None, false) => Start::Zero,
        }
    }
}

/// Weights as `[tap, output channel]` rows (`stride` apart), from the
/// block's first tap and output channel.
pub(crate) type Weights<'a, T> = (&'a [T], usize);

/// The output tiles, `[pixel, output channel]` rows (`stride` apart) from
/// the block's first output channel; rows up to the pixels rounded up to a
/// tile are written.
pub(crate) type Tiles<'a, T> = (&'a mut [T], usize);

/// The raw windows and start that `Element::channel_vector_block` passes
/// ([`Windows::to_raw`], [`Start::into_raw`]).
pub(crate) type RawCall<'a, T> = (RawWindows<'a>, (Option<&'a [T]>, bool));

/// The sums of a block of `vectors` vectors of output channels over the
/// windows' input channels and every tap, for `f32` (16 lanes a vector),
/// into `out`. Returns whether it did: where [`available`]. Panics if a
/// slice is shorter than its description.
pub(crate) fn block_f32(
    source: &[f32],
    (windows, start): RawCall<'_, f32>,
    weights: Weights<'_, f32>,
    out: Tiles<'_, f32>,
    vectors: usize,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    let kernel = kernel_for::<RawBlock<f32>>(avx512::f32_kernels::block, avx2::f32_kernels::block);
    #[cfg(not(target_arch = "x86_64"))]
    let kernel = None;
    let (windows, start) = (Windows::from_raw(windows), Start::from_raw(start));
    block_with(source, windows, weights, out, (vectors, 16), start, kernel)
}

/// [`block_f32`] for `f64` (8 lanes a vector).
pub(crate) fn block_f64(
    source: &[f64],
    (windows, start): RawCall<'_, f64>,
    weights: Weights<'_, f64>,
    out: Tiles<'_, f64>,
    vectors: usize,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    let kernel = kernel_for::<RawBlock<f64>>(avx512::f64_kernels::block, avx2::f64_kernels::block);
    #[cfg(not(target_arch = "x86_64"))]
    let kernel = None;
    let (windows, start) = (Windows::from_raw(windows), Start::from_raw(start));
    block_with(source, windows, weights, out, (vectors, 8), start, kernel)
}

/// The raw form of a block call: the source, the windows, the weights and
/// their stride, the tiles and their stride, the vectors, the start (null
/// for zero) and whether the sums start from the output.
type RawBlock<T> =
    unsafe fn(*const T, &Windows<'_>, (*const T, usize), (*mut T, usize), usize, (*const T, bool));

/// `kernel` on the call's slices, where there is one and the CPU allows
/// it.
fn block_with<T>(
    source: &[T],
    windows: Windows<'_>,
    (weights, w_stride): Weights<'_, T>,
    (out, out_stride): Tiles<'_, T>,
    (vectors, lanes): (usize, usize),
    start: Start<'_, T>,
    kernel: Option<RawBlock<T>>,
) -> bool {
    let width = vectors * lanes;
    if !windows.check(source.len(), vectors) {
        return available();
    }
    let (pixels, k) = (windows.pixels, windows.channels * windows.taps.len());
    assert!(
        w_stride >= width && (k - 1) * w_stride + width <= weights.len(),
        "weights for every tap"
    );
    let rows = pixels.next_multiple_of(TILE_PIXELS);
    assert!(
        out_stride >= width && (rows - 1) * out_stride + width <= out.len(),
        "tiles for every pixel"
    );
    let (init, accumulate) = match start {
        Start::Zero => (std::ptr::null(), false),
        Start::Bias(bias) => {
            assert!(bias.len() >= width, "a bias per output channel");
            (bias.as_ptr(), false)
        }
        Start::Output => (std::ptr::null(), true),
    };
    let Some(kernel) = kernel else {
        return false;
    };
    // SAFETY: the CPU has the features of `kernel` (`kernel_for`). Every
    // window the kernel reads, with its taps and channels, lies within
    // `source` (`Windows::check`; the last tile repeats the last pixel's
    // window). It reads `vectors` vectors from each of the `k` weight rows
    // and writes (and with `accumulate` reads) as many from each of the
    // `rows` tile rows, within `weights` and `out`; `init`, when not null,
    // holds `width` biases.
    unsafe {
        kernel(
            source.as_ptr(),
            &windows,
            (weights.as_ptr(), w_stride),
            (out.as_mut_ptr(), out_stride),
            vectors,
            (init, accumulate),
        )
    };
    true
}

/// The kernel of one dtype and instruction set, in module `$module`: see
/// [`block_f32`]. A vector of channels is [`VECTOR_BYTES`]; a pass of a
/// tile sums every vector of the block at once where a vector is one
/// register (AVX-512), one vector at a time where it is two (AVX2), so
/// that a tile's sums stay in the registers.
#[cfg(target_arch = "x86_64")]
macro_rules! channel_vector_kernels {
    ($module:ident, $feature:literal, $t:ty, $lanes:expr, $vec:ty, $set1:ident, $zero:ident,
     $load:ident, $store:ident, $fmadd:ident) => {
        pub(super) mod $module {
            use super::super::{TILE_PIXELS, VECTOR_BYTES, Windows};
            use std::arch::x86_64::*;

            /// Lanes of a register.
            const LANES: usize = $lanes;

            /// Registers of a vector of channels: one or two.
            const REGISTERS: usize = VECTOR_BYTES / (LANES * size_of::<$t>());

            /// Every tile of a block with `vectors` vectors of
            /// channels; see [`super::super::block_with`] for what
            /// the pointers must hold.
            ///
            /// # Safety
            /// The CPU has the module's instruction set; the windows,
            /// weights, tiles and start are as `block_with` checks them.
            pub(in super::super) unsafe fn block(
                source: *const $t,
                windows: &Windows<'_>,
                weights: (*const $t, usize),
                out: (*mut $t, usize),
                vectors: usize,
                start: (*const $t, bool),
            ) {
                // SAFETY: as the caller promises.
                unsafe {
                    match (REGISTERS, vectors) {
                        (1, 1) => block_of::<1>(source, windows, weights, out, start, 1),
                        (1, 2) => block_of::<2>(source, windows, weights, out, start, 1),
                        (1, 3) => block_of::<3>(source, windows, weights, out, start, 1),
                        (1, _) => block_of::<4>(source, windows, weights, out, start, 1),
                        _ => block_of::<REGISTERS>(source, windows, weights, out, start, vectors),
                    }
                }
            }

            /// The tiles in `passes` passes of `R` registers of
            /// channels each.
            #[target_feature(enable = $feature)]
            unsafe fn block_of<const R: usize>(
                source: *const $t,
                windows: &Windows<'_>,
                (weights, w_stride): (*const $t, usize),
                (out, out_stride): (*mut $t, usize),
                (init, accumulate): (*const $t, bool),
                passes: usize,
            ) {
                let mut offsets = [0isize; super::super::MAX_TAPS];
                for (offset, &tap) in offsets.iter_mut().zip(windows.taps) {
                    *offset = tap as isize;
                }
                let taps = &offsets[..windows.taps.len()];
                let plane = windows.plane as isize;
                let rows = windows.sample_pixels / windows.out_w;
                for tile in 0..windows.pixels.div_ceil(TILE_PIXELS) {
                    // Each pixel's window, the last pixel's for those
                    // past the end: the first pixel's found by division,
                    // the others by stepping along its row, wrapping
                    // onto the next row and the next sample.
                    let first = tile * TILE_PIXELS;
                    let (sample, in_sample) =
                        (first / windows.sample_pixels, first % windows.sample_pixels);
                    let (mut row, mut column) =
                        (in_sample / windows.out_w, in_sample % windows.out_w);
                    let mut sample_at = windows.start + sample * windows.sample_step;
                    let mut at = sample_at + row * windows.row_step + column * windows.col_step;
                    let windows_at: [*const $t; TILE_PIXELS] = std::array::from_fn(|j| {
                        let here = at;
                        if first + j + 1 < windows.pixels {
                            column += 1;
                            at += windows.col_step;
                            if column == windows.out_w {
                                column = 0;
                                row += 1;
                                if row == rows {
                                    row = 0;
                                    sample_at += windows.sample_step;
                                }
                                at = sample_at + row * windows.row_step;
                            }
                        }
                        // SAFETY: within the source (`block_with`).
                        unsafe { source.add(here) }
                    });
                    for pass in 0..passes {
                        let first_lane = pass * R * LANES;
                        // SAFETY: tile rows `tile·6 ..+ 6` are within
                        // `out`, the pass's lanes within its vectors and
                        // the start within `init` (`block_with`).
                        let tile_out =
                            unsafe { out.add(tile * TILE_PIXELS * out_stride + first_lane) };
                        let init = if init.is_null() {
                            init
                        } else {
                            unsafe { init.add(first_lane) }
                        };
                        let mut sums = [[$zero(); R]; TILE_PIXELS];
                        for (j, row) in sums.iter_mut().enumerate() {
                            for (v, sum) in row.iter_mut().enumerate() {
                                if accumulate {
                                    *sum =
                                        unsafe { $load(tile_out.add(j * out_stride + v * LANES)) };
                                } else if !init.is_null() {
                                    *sum = unsafe { $load(init.add(v * LANES)) };
                                }
                            }
                        }
                        let mut w = unsafe { weights.add(first_lane) };
                        let mut channel_at = 0isize;
                        for _ in 0..windows.channels {
                            for &tap in taps {
                                let at = channel_at + tap;
                                // SAFETY: a weight row of the block
                                // (`block_with`).
                                let w_row: [$vec; R] =
                                    std::array::from_fn(|v| unsafe { $load(w.add(v * LANES)) });
                                for (j, row) in sums.iter_mut().enumerate() {
                                    // SAFETY: a tap of a channel of a
                                    // window (`block_with`).
                                    let x = $set1(unsafe { *windows_at[j].offset(at) });
                                    for (sum, &wv) in row.iter_mut().zip(&w_row) {
                                        *sum = $fmadd(x, wv, *sum);
                                    }
                                }
                                w = unsafe { w.add(w_stride) };
                            }
                            channel_at += plane;
                        }
                        for (j, row) in sums.iter().enumerate() {
                            for (v, &sum) in row.iter().enumerate() {
                                unsafe { $store(tile_out.add(j * out_stride + v * LANES), sum) };
                            }
                        }
                    }
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    channel_vector_kernels!(
        f32_kernels,
        "avx512f",
        f32,
        16,
        __m512,
        _mm512_set1_ps,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_fmadd_ps
    );
    channel_vector_kernels!(
        f64_kernels,
        "avx512f",
        f64,
        8,
        __m512d,
        _mm512_set1_pd,
        _mm512_setzero_pd,
        _mm512_loadu_pd,
        _mm512_storeu_pd,
        _mm512_fmadd_pd
    );
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    channel_vector_kernels!(
        f32_kernels,
        "avx2,fma",
        f32,
        8,
        __m256,
        _mm256_set1_ps,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_fmadd_ps
    );
    channel_vector_kernels!(
        f64_kernels,
        "avx2,fma",
        f64,
        4,
        __m256d,
        _mm256_set1_pd,
        _mm256_setzero_pd,
        _mm256_loadu_pd,
        _mm256_storeu_pd,
        _mm256_fmadd_pd
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{RawCall, Start, TILE_PIXELS, Windows, available, block_f64};

    /// A block over `channels` planes of 5x6 with the taps of a 2x2
    /// kernel, four output pixels a row at stride 1, two rows.
    pub(crate) fn windows(taps: &[usize], channels: usize) -> Windows<'_> {
        Windows::of_one_sample((8, 4), (0, 6, 1), taps, (channels, 30))
    }

    /// Every start and number of vectors, against the sums written out:
    /// small integers, so that every order of summation is exact.
    #[test]
    fn blocks_sum_every_tap_of_every_channel() {
        if !available() {
            return;
        }
        check_block(block_f64);
    }

    /// [`blocks_sum_every_tap_of_every_channel`] on the AVX2 kernels, which
    /// a CPU with AVX-512 does not otherwise run.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_blocks_sum_every_tap_of_every_channel() {
        use super::{avx2, avx2_fma, block_with};
        if !avx2_fma() {
            return;
        }
        check_block(|source, (windows, start), weights, out, vectors| {
            let (windows, start) = (Windows::from_raw(windows), Start::from_raw(start));
            let kernel = Some(avx2::f64_kernels::block as super::RawBlock<f64>);
            block_with(source, windows, weights, out, (vectors, 8), start, kernel)
        });
    }

    /// A block call: the source, windows and start, weights, tiles and
    /// vectors, as `block_f64` takes them.
    type BlockCall =
        fn(&[f64], RawCall<'_, f64>, (&[f64], usize), (&mut [f64], usize), usize) -> bool;

    fn check_block(block: BlockCall) {
        let taps = [0, 1, 6, 7];
        let channels = 3;
        let source: Vec<f64> = (0..channels * 30).map(|v| (v % 7) as f64 - 3.0).collect();
        for vectors in 1..=4 {
            let width = vectors * 8 + 3;
            let k = channels * taps.len();
            let weights: Vec<f64> = (0..k * width).map(|v| (v % 5) as f64 - 2.0).collect();
            let bias: Vec<f64> = (0..width).map(|v| v as f64).collect();
            let rows = 8usize.next_multiple_of(TILE_PIXELS);
            let before: Vec<f64> = (0..rows * width).map(|v| (v % 3) as f64).collect();
            for start in [Start::Zero, Start::Bias(&bias), Start::Output] {
                let mut out = before.clone();
                let w = windows(&taps, channels);
                let raw = (w.to_raw(), start.into_raw());
                let done = block(&source, raw, (&weights, width), (&mut out, width), vectors);
                assert!(done);
                for pixel in 0..8 {
                    let at = (pixel / 4) * 6 + pixel % 4;
                    for channel in 0..vectors * 8 {
                        let mut sum = match start {
                            Start::Zero => 0.0,
                            Start::Bias(b) => b[channel],
                            Start::Output => before[pixel * width + channel],
                        };
                        for c in 0..channels {
                            for (t, &tap) in taps.iter().enumerate() {
                                let x = source[c * 30 + at + tap];
                                sum += x * weights[(c * taps.len() + t) * width + channel];
                            }
                        }
                        assert_eq!(
                            out[pixel * width + channel],
                            sum,
                            "{vectors} vectors, pixel {pixel}, channel {channel}"
                        );
                    }
                    // Channels past the block's vectors are not written.
                    for channel in vectors * 8..width {
                        assert_eq!(
                            out[pixel * width + channel],
                            before[pixel * width + channel]
                        );
                    }
                }
            }
        }
    }

    /// Stacks are the most samples whose tiles and padded input fit
    /// `STACK_BYTES` and whose input fits the cap, one sample where even
    /// one does not: ResNet-50's 7x7 and 14x14 layers stack, its 56x56
    /// layer and a large cap-bound input do not.
    #[test]
    fn stacks_are_the_most_samples_within_their_bounds() {
        use super::{STACK_BYTES, samples_a_stack};
        use crate::{Conv2dSpec, DEFAULT_COLUMN_CAP_BYTES};
        let cap = DEFAULT_COLUMN_CAP_BYTES;
        for (channels, size, expected_stacks) in [
            (512, 7, true),
            (256, 14, true),
            (64, 56, false),
            (8, 512, false),
        ] {
            let spec = Conv2dSpec::new(channels, channels, (3, 3)).padding((1, 1));
            let g = crate::spec::Geometry::new(&spec, [8, channels, size, size]).unwrap();
            let width = channels.next_multiple_of(16);
            let tiles = size * size * width * 4;
            let input = channels * (size + 2) * (size + 2) * 4;
            let fits = |n: usize| n * (tiles + input) <= STACK_BYTES && n * input <= cap;
            let stack = samples_a_stack::<f32>(&g, width, cap);
            assert_eq!(
                stack > 1,
                expected_stacks,
                "{channels} channels of {size}x{size}"
            );
            assert!(
                stack == 1 || fits(stack),
                "{stack} samples of {size}x{size}"
            );
            assert!(
                !fits(stack + 1),
                "{} samples of {size}x{size} fit",
                stack + 1
            );
        }
    }

    /// Windows reaching past the source are refused before any load.
    #[test]
    #[should_panic(expected = "windows within the source")]
    fn windows_past_the_source_panic() {
        let taps = [0, 1, 6, 7];
        // The last window's last tap of the second channel is element
        // 9 + 7 + 30 = 46.
        let source = vec![0.0; 46];
        let weights = vec![0.0; 2 * 4 * 8];
        let mut out = vec![0.0; 12 * 8];
        let w = windows(&taps, 2);
        let raw = (w.to_raw(), (None, false));
        block_f64(&source, raw, (&weights, 8), (&mut out, 8), 1);
    }
}
