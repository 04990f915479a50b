//! The weight gradient on the channel vectors' tiles: each tile of the
//! gradient, six columns (pairs of an input channel and a tap) by up to
//! four vectors of output channels, is summed over a block of output
//! pixels in registers, per dtype through AVX-512 (or AVX2 with FMA, a
//! vector of channels at a time), reached through the hidden
//! `Element::channel_vector_gradient_block`; any groups, group by group.
//!
//! The column matrix's weight gradient copies every window of the input
//! into a matrix before its GEMM reads it. Here an output pixel of a tile
//! multiplies one vector of the error (the pixel's output channels, laid
//! out pixel-major once a sample) by each of its six columns' input
//! values, broadcast straight from the padded input planes: the windows
//! of the six columns are one window's taps and channels, so a pixel's
//! six values sit at one offset from six fixed starts. Pixels go in
//! blocks of whole output rows whose error stays in L1 while every tile
//! of the block reads it. The sums come out `[column, output channel]`
//! (each lane's partial, summed in part order) and are transposed into
//! the `[c_out, c_in/groups·kh·kw]` weight gradient.

use super::channel_vectors::{RawWindows, TILE_VECTORS, Windows};
use super::padded_band;
use crate::element::Element;
use crate::lanes::{Partials, Work};
use crate::layout::transpose::{transpose, transpose_on_pool};
use crate::operands::Backward;
use crate::spec::Geometry;
use crate::workspace::{Workspace, aligned_scratch};
use ndarray::{ArrayView3, ArrayViewMut1, ArrayViewMut4, s};
use std::ops::Range;

/// Columns a tile: with four vectors of channels, 24 sums, four error
/// vectors and a broadcast fill 29 of AVX-512's 32 registers (with AVX2,
/// one vector of two registers: 15 of 16).
pub(crate) const TILE_COLUMNS: usize = 6;

/// Bytes of a vector of channels: one AVX-512 register, two AVX2 ones.
const VECTOR_BYTES: usize = 64;

/// Bytes of error a block of output pixels holds for a tile's vectors at
/// most (whole rows, one at least): small enough to stay in L1 while
/// every tile of the block reads it, large enough that each tile's sums
/// are loaded and stored once a block for many pixels' products
/// (BENCHMARKS.md, "Channel-vector weight gradient").
const BLOCK_ERROR_BYTES: usize = 1 << 15;

/// Whether the kernel computes `g`'s weight gradient here: at most 64
/// taps, on a CPU with AVX-512 or AVX2 and FMA, any groups.
pub(crate) fn applies(g: &Geometry) -> bool {
    g.kh * g.kw <= super::channel_vectors::MAX_TAPS && available()
}

/// Whether this machine runs the kernel: as the forward pass's channel
/// vectors.
pub(crate) fn available() -> bool {
    super::channel_vectors::available()
}

/// The weight and bias gradients of validated operands where the kernel
/// [`applies`], group by group; overwrites those given.
pub(crate) fn weight_gradient<T: Element>(
    op: Backward<'_, T>,
    (dw, db): (Option<ArrayViewMut4<'_, T>>, Option<ArrayViewMut1<'_, T>>),
    ws: &mut Workspace<T>,
) {
    let Backward { x, dy, g, .. } = op;
    let lanes = VECTOR_BYTES / std::mem::size_of::<T>();
    let taps = g.kh * g.kw;
    let (c_in_g, c_out_g) = (g.in_channels_per_group(), g.out_channels_per_group());
    // Each group's sums: `columns` rows of `width`.
    let columns = c_in_g * taps;
    let width = c_out_g.next_multiple_of(lanes);
    let group_len = columns * width;
    let schedule = ws.schedule(Work::weight_gradient(g, 1));
    let (_, memory) = ws.memory(&schedule);
    let dw_len = if dw.is_some() {
        g.groups * group_len
    } else {
        0
    };
    let db_len = if db.is_some() { g.out_channels } else { 0 };
    let wp = g.in_w + g.padding.left + g.padding.right;
    let mut tap_offsets = [0usize; super::channel_vectors::MAX_TAPS];
    for (t, offset) in tap_offsets.iter_mut().enumerate().take(taps) {
        *offset = (t / g.kw) * g.dh * wp + (t % g.kw) * g.dw;
    }
    let tap_offsets = &tap_offsets[..taps];
    let row_bytes = (g.out_w * TILE_VECTORS * VECTOR_BYTES).max(1);
    let block_rows = (BLOCK_ERROR_BYTES / row_bytes).max(1);
    let sums = schedule.run_summing(
        memory,
        None,
        (dw_len, db_len),
        |item, _, buffers, partials| {
            let Partials { weight, bias } = partials;
            let [source_buf, error_buf] = buffers.split();
            // One group's error at a time, for every sample of the item.
            // The columns past a group's output channels (lanes no channel
            // fills) take part in no result; they are zeroed so that what
            // the buffer held before (subnormals, say) cannot slow the
            // products, once an item, since every group's panels put them
            // in the same places and [`error_panels`] leaves them: a fill
            // of each pixel's few columns, a call to `memset` a pixel,
            // cost a tenth of the pass (BENCHMARKS.md, "Error panels of
            // narrow groups").
            let pixels = item.rows.len() * g.out_w;
            let error: &mut [T] = if dw_len == 0 {
                &mut []
            } else {
                aligned_scratch(error_buf, pixels * width)
            };
            if width > c_out_g {
                error.fill(T::zero());
            }
            for n in item.samples.clone() {
                if dw_len == 0 {
                    let dy_band = dy.slice(s![n, .., item.rows.clone(), ..]);
                    for (b, channel) in bias.iter_mut().zip(dy_band.outer_iter()) {
                        *b += channel.sum();
                    }
                    continue;
                }
                let ((source, offset), band) = padded_band(x, n, g, &item.rows, source_buf);
                debug_assert_eq!(band.out_h * g.out_w, pixels);
                let plane = (band.in_h + band.padding.top + band.padding.bottom) * wp;
                for (group, weight) in weight.chunks_exact_mut(group_len).enumerate() {
                    let channels = group * c_out_g..(group + 1) * c_out_g;
                    let dy_group = dy.slice(s![n, channels.clone(), .., ..]);
                    error_panels(dy_group, &item.rows, error, (width, TILE_VECTORS * lanes));
                    if db_len > 0 {
                        let bias = &mut bias[channels.clone()];
                        add_error_sums(
                            error,
                            (pixels, g.out_w),
                            (width, TILE_VECTORS * lanes),
                            bias,
                        );
                    }
                    for first in (0..width).step_by(TILE_VECTORS * lanes) {
                        let vectors = ((width - first) / lanes).min(TILE_VECTORS);
                        for row in (0..band.out_h).step_by(block_rows) {
                            let rows = block_rows.min(band.out_h - row);
                            let windows = Windows::of_one_sample(
                                (rows * g.out_w, g.out_w),
                                (
                                    offset + row * g.sh * wp + group * c_in_g * plane,
                                    g.sh * wp,
                                    g.sw,
                                ),
                                tap_offsets,
                                (c_in_g, plane),
                            );
                            // The block's panel, `pixels · first` in, and its
                            // rows of the pixel block.
                            let panel_width = vectors * lanes;
                            let at = (band.out_h * first + row * panel_width) * g.out_w;
                            let error = (&error[at..], panel_width);
                            let out = (&mut weight[first..], width);
                            let done = T::channel_vector_gradient_block(
                                source,
                                windows.to_raw(),
                                error,
                                out,
                                vectors,
                            );
                            assert!(done, "the kernel applies only where the CPU runs it");
                        }
                    }
                }
            }
        },
    );
    if let Some(mut dw) = dw {
        let group_sums = sums.weight.chunks_exact(group_len);
        match dw.as_slice_mut() {
            Some(dst) => {
                for (sums, dst) in group_sums.zip(dst.chunks_exact_mut(c_out_g * columns)) {
                    transpose_on_pool(sums, width, dst, columns, (columns, c_out_g));
                }
            }
            None => {
                for (co, mut filter) in dw.outer_iter_mut().enumerate() {
                    let (group, o) = (co / c_out_g, co % c_out_g);
                    let sums = &sums.weight[group * group_len..];
                    for (column, value) in filter.iter_mut().enumerate() {
                        *value = sums[column * width + o];
                    }
                }
            }
        }
    }
    if let Some(mut db) = db {
        db.assign(&sums.bias);
    }
}

/// Output rows `rows` of one sample's error (`[c_out, out_h, out_w]`) as
/// panels of `block` output channels (the channels rounded up to `width`,
/// the last panel narrower), each `[pixel, output channel]` rows of the
/// panel's width, one after another; the columns past the output channels
/// are left as they are (the caller zeroes them once for every group,
/// whose panels all put them in the same places). A tile reads its
/// vectors from consecutive rows of one panel: rows of the whole `width`
/// would put a tile's vectors a multiple of 1 KiB apart on the wide
/// layers, where they fall into a few of L1's sets and evict each other.
fn error_panels<T: Element>(
    dy: ArrayView3<'_, T>,
    rows: &Range<usize>,
    error: &mut [T],
    (width, block): (usize, usize),
) {
    let (c_out, out_h, out_w) = dy.dim();
    let pixels = rows.len() * out_w;
    let band = dy.slice(s![.., rows.clone(), ..]);
    let planes = dy.as_slice();
    for first in (0..width).step_by(block) {
        let panel_width = block.min(width - first);
        let channels = panel_width.min(c_out - first);
        let panel = &mut error[first * pixels..(first + panel_width) * pixels];
        match planes {
            Some(planes) => transpose(
                &planes[first * out_h * out_w + rows.start * out_w..],
                out_h * out_w,
                panel,
                panel_width,
                (channels, pixels),
            ),
            None => {
                let channel_planes = band.slice(s![first..first + channels, .., ..]);
                for (co, plane) in channel_planes.outer_iter().enumerate() {
                    for (pixel, &value) in plane.iter().enumerate() {
                        panel[pixel * panel_width + co] = value;
                    }
                }
            }
        }
    }
}

/// Adds each output channel's error over the pixels of the panels
/// [`error_panels`] wrote (`pixels` of them, in rows of `out_w`) onto
/// `bias`, the group's channels: the panels are in cache, where a sum of
/// the error planes would read them from memory once more (BENCHMARKS.md,
/// "Bias sums from the error panels"). Each row of pixels is summed on its
/// own before it is added, so that the rounding grows with the row and
/// the rows, not with the band's pixels.
fn add_error_sums<T: Element>(
    error: &[T],
    (pixels, out_w): (usize, usize),
    (width, block): (usize, usize),
    bias: &mut [T],
) {
    // The widest panel, of `f32`.
    const MOST_BLOCK: usize = TILE_VECTORS * VECTOR_BYTES / std::mem::size_of::<f32>();
    assert!(block <= MOST_BLOCK, "panels of {block} channels");
    for first in (0..width).step_by(block) {
        let panel_width = block.min(width - first);
        let channels = panel_width.min(bias.len().saturating_sub(first));
        let panel = &error[first * pixels..(first + panel_width) * pixels];
        let mut sums = [T::zero(); MOST_BLOCK];
        for row in panel.chunks(out_w.max(1) * panel_width) {
            let mut row_sums = [T::zero(); MOST_BLOCK];
            // Panels of whole vectors (of `f32` and of `f64`) as arrays of
            // a fixed width: the compiler adds each pixel's row in whole
            // vectors.
            match panel_width {
                64 => add_pixels::<T, 64>(row, &mut row_sums),
                48 => add_pixels::<T, 48>(row, &mut row_sums),
                32 => add_pixels::<T, 32>(row, &mut row_sums),
                24 => add_pixels::<T, 24>(row, &mut row_sums),
                16 => add_pixels::<T, 16>(row, &mut row_sums),
                8 => add_pixels::<T, 8>(row, &mut row_sums),
                _ => {
                    for pixel in row.chunks_exact(panel_width) {
                        for (sum, &value) in row_sums.iter_mut().zip(pixel) {
                            *sum += value;
                        }
                    }
                }
            }
            for (sum, row_sum) in sums.iter_mut().zip(row_sums) {
                *sum += row_sum;
            }
        }
        for (b, sum) in bias[first..first + channels].iter_mut().zip(sums) {
            *b += sum;
        }
    }
}

/// Adds the pixels of `row`, each `N` values, onto the first `N` of
/// `sums`.
fn add_pixels<T: Element, const N: usize>(row: &[T], sums: &mut [T]) {
    let sums: &mut [T; N] = (&mut sums[..N]).try_into().expect("N sums");
    for pixel in row.chunks_exact(N) {
        let pixel: &[T; N] = pixel.try_into().expect("chunks of N");
        for (sum, &value) in sums.iter_mut().zip(pixel) {
            *sum += value;
        }
    }
}

/// The sums of a block's tiles over its pixels for `f32` (16 lanes a
/// vector): see [`block_with`]. Returns whether it did: where the CPU has
/// AVX-512, or AVX2 and FMA.
pub(crate) fn block_f32(
    source: &[f32],
    windows: RawWindows<'_>,
    error: (&[f32], usize),
    out: (&mut [f32], usize),
    vectors: usize,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    let kernel = super::channel_vectors::kernel_for::<RawBlock<f32>>(
        avx512::f32_kernels::block,
        avx2::f32_kernels::block,
    );
    #[cfg(not(target_arch = "x86_64"))]
    let kernel = None;
    block_with(
        source,
        Windows::from_raw(windows),
        error,
        out,
        (vectors, 16),
        kernel,
    )
}

/// [`block_f32`] for `f64` (8 lanes a vector).
pub(crate) fn block_f64(
    source: &[f64],
    windows: RawWindows<'_>,
    error: (&[f64], usize),
    out: (&mut [f64], usize),
    vectors: usize,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    let kernel = super::channel_vectors::kernel_for::<RawBlock<f64>>(
        avx512::f64_kernels::block,
        avx2::f64_kernels::block,
    );
    #[cfg(not(target_arch = "x86_64"))]
    let kernel = None;
    block_with(
        source,
        Windows::from_raw(windows),
        error,
        out,
        (vectors, 8),
        kernel,
    )
}

/// The raw form of a block call: the source, the windows, the error and
/// its stride, the sums and their stride, the vectors.
type RawBlock<T> = unsafe fn(*const T, &Windows<'_>, (*const T, usize), (*mut T, usize), usize);

/// Adds into `out` (`[column, output channel]` rows, `out_stride` apart,
/// a column for each of the windows' channels and taps in that order)
/// the products of `vectors` vectors of output channels of the error
/// (`[pixel, output channel]` rows, `error_stride` apart, a row for each
/// of the windows' pixels) with each column's input values at the
/// windows' pixels, through `kernel` where there is one and the CPU
/// allows it. Panics if a slice is shorter than its description.
fn block_with<T>(
    source: &[T],
    windows: Windows<'_>,
    (error, error_stride): (&[T], usize),
    (out, out_stride): (&mut [T], usize),
    (vectors, lanes): (usize, usize),
    kernel: Option<RawBlock<T>>,
) -> bool {
    let width = vectors * lanes;
    if !windows.check(source.len(), vectors) {
        return available();
    }
    let pixels = windows.pixels;
    assert_eq!(pixels, windows.sample_pixels, "the windows of one sample");
    assert!(
        error_stride >= width && (pixels - 1) * error_stride + width <= error.len(),
        "error for every pixel"
    );
    let columns = windows.channels * windows.taps.len();
    assert!(
        out_stride >= width && (columns - 1) * out_stride + width <= out.len(),
        "sums for every column"
    );
    let Some(kernel) = kernel else {
        return false;
    };
    // SAFETY: the CPU has the features of `kernel`
    // (`channel_vectors::kernel_for`). Every window the kernel reads, with
    // its taps and channels, lies within `source` (`Windows::check`). It
    // reads `vectors` vectors from each of the `pixels` error rows, and
    // reads and writes as many from each of the `columns` rows of `out`,
    // within `error` and `out`.
    unsafe {
        kernel(
            source.as_ptr(),
            &windows,
            (error.as_ptr(), error_stride),
            (out.as_mut_ptr(), out_stride),
            vectors,
        )
    };
    true
}

/// The kernel of one dtype and instruction set, in module `$module`: see
/// [`block_with`]. As the forward pass's (`channel_vectors.rs`), a pass
/// of a tile sums every vector of the block at once where a vector of
/// channels is one register (AVX-512), one vector at a time where it is
/// two (AVX2).
#[cfg(target_arch = "x86_64")]
macro_rules! gradient_kernels {
    ($module:ident, $feature:literal, $t:ty, $lanes:expr, $vec:ty, $set1:ident, $load:ident,
     $store:ident, $fmadd:ident) => {
        pub(super) mod $module {
            use super::super::{TILE_COLUMNS, VECTOR_BYTES, Windows};
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
            /// error and sums are as `block_with` checks them.
            pub(in super::super) unsafe fn block(
                source: *const $t,
                windows: &Windows<'_>,
                error: (*const $t, usize),
                out: (*mut $t, usize),
                vectors: usize,
            ) {
                // SAFETY: as the caller promises.
                unsafe {
                    match (REGISTERS, vectors) {
                        (1, 1) => block_of::<1>(source, windows, error, out, 1),
                        (1, 2) => block_of::<2>(source, windows, error, out, 1),
                        (1, 3) => block_of::<3>(source, windows, error, out, 1),
                        (1, _) => block_of::<4>(source, windows, error, out, 1),
                        _ => block_of::<REGISTERS>(source, windows, error, out, vectors),
                    }
                }
            }

            /// The tiles in `passes` passes of `R` registers of
            /// channels each.
            #[target_feature(enable = $feature)]
            unsafe fn block_of<const R: usize>(
                source: *const $t,
                windows: &Windows<'_>,
                (error, error_stride): (*const $t, usize),
                (out, out_stride): (*mut $t, usize),
                passes: usize,
            ) {
                let taps = windows.taps.len();
                let columns = windows.channels * taps;
                let rows = windows.pixels / windows.out_w;
                for first in (0..columns).step_by(TILE_COLUMNS) {
                    let in_tile = TILE_COLUMNS.min(columns - first);
                    // Each column's start: its channel's plane and its
                    // tap, the last column's for those past the end.
                    let starts: [*const $t; TILE_COLUMNS] = std::array::from_fn(|j| {
                        let column = first + j.min(in_tile - 1);
                        let (channel, tap) = (column / taps, column % taps);
                        let at = windows.start + channel * windows.plane + windows.taps[tap];
                        // SAFETY: within the source (`block_with`).
                        unsafe { source.add(at) }
                    });
                    for pass in 0..passes {
                        let first_lane = pass * R * LANES;
                        // SAFETY: rows `first ..+ in_tile` are within
                        // `out`, the pass's lanes within its vectors
                        // (`block_with`).
                        let tile_out = unsafe { out.add(first * out_stride + first_lane) };
                        let mut sums: [[$vec; R]; TILE_COLUMNS] = std::array::from_fn(|j| {
                            let j = j.min(in_tile - 1);
                            std::array::from_fn(|v| unsafe {
                                $load(tile_out.add(j * out_stride + v * LANES))
                            })
                        });
                        let mut e = unsafe { error.add(first_lane) };
                        for row in 0..rows {
                            let mut at = row * windows.row_step;
                            for _ in 0..windows.out_w {
                                // SAFETY: an error row of the block
                                // (`block_with`).
                                let e_row: [$vec; R] =
                                    std::array::from_fn(|v| unsafe { $load(e.add(v * LANES)) });
                                for (j, row_sums) in sums.iter_mut().enumerate() {
                                    // SAFETY: a tap of a channel of a
                                    // window (`block_with`).
                                    let x = $set1(unsafe { *starts[j].add(at) });
                                    for (sum, &ev) in row_sums.iter_mut().zip(&e_row) {
                                        *sum = $fmadd(x, ev, *sum);
                                    }
                                }
                                at += windows.col_step;
                                e = unsafe { e.add(error_stride) };
                            }
                        }
                        for (j, row_sums) in sums.iter().enumerate().take(in_tile) {
                            for (v, &sum) in row_sums.iter().enumerate() {
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
    gradient_kernels!(
        f32_kernels,
        "avx512f",
        f32,
        16,
        __m512,
        _mm512_set1_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_fmadd_ps
    );
    gradient_kernels!(
        f64_kernels,
        "avx512f",
        f64,
        8,
        __m512d,
        _mm512_set1_pd,
        _mm512_loadu_pd,
        _mm512_storeu_pd,
        _mm512_fmadd_pd
    );
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    gradient_kernels!(
        f32_kernels,
        "avx2,fma",
        f32,
        8,
        __m256,
        _mm256_set1_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_fmadd_ps
    );
    gradient_kernels!(
        f64_kernels,
        "avx2,fma",
        f64,
        4,
        __m256d,
        _mm256_set1_pd,
        _mm256_loadu_pd,
        _mm256_storeu_pd,
        _mm256_fmadd_pd
    );
}

#[cfg(test)]
mod tests {
    use super::available;
    use super::{RawWindows, TILE_COLUMNS, block_f64};
    use crate::algo::strided::direct::channel_vectors::tests::windows;

    /// Every number of vectors, and column counts that fill the last tile
    /// or leave it short, against the sums written out: small integers,
    /// so that every order of summation is exact.
    #[test]
    fn blocks_add_every_pixel_of_every_column() {
        if !available() {
            return;
        }
        check_block(block_f64);
    }

    /// [`blocks_add_every_pixel_of_every_column`] on the AVX2 kernels,
    /// which a CPU with AVX-512 does not otherwise run.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_blocks_add_every_pixel_of_every_column() {
        use super::{RawBlock, Windows, avx2, block_with};
        if !crate::algo::strided::direct::channel_vectors::avx2_fma() {
            return;
        }
        check_block(|source, windows, error, out, vectors| {
            let kernel = Some(avx2::f64_kernels::block as RawBlock<f64>);
            let windows = Windows::from_raw(windows);
            block_with(source, windows, error, out, (vectors, 8), kernel)
        });
    }

    /// A block call as `block_f64` takes it.
    type BlockCall =
        fn(&[f64], RawWindows<'_>, (&[f64], usize), (&mut [f64], usize), usize) -> bool;

    fn check_block(block: BlockCall) {
        let taps = [0, 1, 6, 7];
        for channels in [1, 2, 3] {
            let columns = channels * taps.len();
            assert!(channels < 3 || columns % TILE_COLUMNS == 0);
            let source: Vec<f64> = (0..channels * 30).map(|v| (v % 7) as f64 - 3.0).collect();
            for vectors in 1..=4 {
                let width = vectors * 8 + 3;
                let error: Vec<f64> = (0..8 * width).map(|v| (v % 5) as f64 - 2.0).collect();
                let before: Vec<f64> = (0..columns * width).map(|v| (v % 3) as f64).collect();
                let mut out = before.clone();
                let w = windows(&taps, channels);
                let done = block(
                    &source,
                    w.to_raw(),
                    (&error, width),
                    (&mut out, width),
                    vectors,
                );
                assert!(done);
                for c in 0..channels {
                    for (t, &tap) in taps.iter().enumerate() {
                        let column = c * taps.len() + t;
                        for channel in 0..width {
                            let mut sum = before[column * width + channel];
                            if channel < vectors * 8 {
                                for pixel in 0..8 {
                                    let at = (pixel / 4) * 6 + pixel % 4;
                                    let x = source[c * 30 + at + tap];
                                    sum += x * error[pixel * width + channel];
                                }
                            }
                            // Channels past the block's vectors are not
                            // written.
                            assert_eq!(
                                out[column * width + channel],
                                sum,
                                "{channels} channels, {vectors} vectors, column {column}, channel {channel}"
                            );
                        }
                    }
                }
            }
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
        let error = vec![0.0; 8 * 8];
        let mut out = vec![0.0; 8 * 8];
        block_f64(
            &source,
            windows(&taps, 2).to_raw(),
            (&error, 8),
            (&mut out, 8),
            1,
        );
    }

    /// An error one row short of the block's pixels is refused before any
    /// load.
    #[test]
    #[should_panic(expected = "error for every pixel")]
    fn error_short_of_the_pixels_panics() {
        let taps = [0, 1, 6, 7];
        let source = vec![0.0; 60];
        let error = vec![0.0; 7 * 8];
        let mut out = vec![0.0; 8 * 8];
        block_f64(
            &source,
            windows(&taps, 2).to_raw(),
            (&error, 8),
            (&mut out, 8),
            1,
        );
    }
}
