//! The direct kernel's register tiles (`tiled.rs`) on CPUs with AVX2 and
//! FMA but no AVX-512, written with vector intrinsics, for `f32` (8 pixels
//! a vector) and `f64` (4).
//!
//! The portable tiles of `f64` hold 8 pixels a row (one AVX-512 vector):
//! six channels by two rows of them are 24 sums, which AVX2's 16 registers
//! cannot hold, so they spill; at 4 pixels the compiler does not vectorise
//! the portable loops and runs them one element at a time. The portable
//! tiles of `f32` at 8 pixels are vectorised, but the compiler keeps some of
//! their sums and weights on the stack. Here a tile is `CHANNELS` (6, 4, 2
//! or 1) output channels by two rows of one vector of pixels, at most 12
//! sums with the two input vectors and a broadcast weight beside them
//! (BENCHMARKS.md, "Register tiles of f64 on AVX2" and "Register tiles of
//! f32 on AVX2"). Each output's multiply-adds run in the portable tiles'
//! order (bias, then input channel, kernel row, tap), fused, so both give
//! the same bits.

use super::channel_vectors::avx2_fma;
use super::tiled::TILE_ROWS;

/// One group's tiles of `channels` output channels, as `tiled.rs` frames
/// them: the padded (or dealt) input channels of the group, the tiles'
/// packed weights (`[input channel, kernel row, tap][channel]`) and
/// biases, and where a tile's taps lie in the input.
#[derive(Clone, Copy)]
pub struct RawTiles<'a, T> {
    /// The group's input channels, `plane` elements apart.
    pub source: &'a [T],
    /// The tiles' weights, `channels` a tap.
    pub weights: &'a [T],
    /// Each channel's bias (zero where the layer has none).
    pub bias: &'a [T],
    /// Input channels of the group.
    pub c_in_g: usize,
    /// Elements from one input channel to the next.
    pub plane: usize,
    /// Elements from one output row's input row to the next's.
    pub row_step: usize,
    /// Elements from one kernel row's input row to the next's.
    pub kernel_row_step: usize,
    /// Kernel rows.
    pub kh: usize,
    /// Each tap's offset from its kernel row's first input element.
    pub taps: &'a [usize],
    /// Output rows of each plane.
    pub out_h: usize,
    /// Output columns of each plane.
    pub out_w: usize,
}

/// Writes the output planes of `tiles` (`out`, a plane `[out_h, out_w]` a
/// channel, as many as `tiles.bias`) with the AVX2 tiles of `f32`, where
/// the CPU has AVX2 and FMA and not AVX-512 F (whose own tiles are the
/// portable ones at 64 bytes) and the planes are at least a tile; returns
/// whether it did.
///
/// # Panics
/// If a slice is shorter than the frame describes.
pub(crate) fn planes_f32(tiles: RawTiles<'_, f32>, out: &mut [&mut [f32]]) -> bool {
    !crate::gemm_tail::avx512() && planes_f32_with_avx2(tiles, out)
}

/// [`planes_f32`] for `f64`.
///
/// # Panics
/// If a slice is shorter than the frame describes.
pub(crate) fn planes_f64(tiles: RawTiles<'_, f64>, out: &mut [&mut [f64]]) -> bool {
    !crate::gemm_tail::avx512() && planes_f64_with_avx2(tiles, out)
}

/// The tiles of one dtype wherever the CPU has AVX2 and FMA, AVX-512 or
/// not (so that the tests check them on any such CPU): `$name` runs the
/// kernels of module `$module`, `$pixels` a vector.
macro_rules! planes_with_avx2 {
    ($name:ident, $module:ident, $t:ty, $pixels:expr) => {
        #[doc = concat!("[`planes_", stringify!($t), "`] wherever the CPU has AVX2 and FMA.")]
        pub(crate) fn $name(tiles: RawTiles<'_, $t>, out: &mut [&mut [$t]]) -> bool {
            let fits = tiles.out_h >= TILE_ROWS && tiles.out_w >= $pixels;
            if !fits || !avx2_fma() {
                return false;
            }
            check_bounds(&tiles, out, $pixels);
            #[cfg(target_arch = "x86_64")]
            {
                use kernels::$module::planes;
                // SAFETY: `avx2_fma` found AVX2 and FMA, the only
                // features these builds enable; `check_bounds` checked
                // the reads and writes of the last tile, the furthest of
                // every tile's.
                unsafe {
                    match out {
                        [a, b, c, d, e, f] => planes(&tiles, [a, b, c, d, e, f]),
                        [a, b, c, d] => planes(&tiles, [a, b, c, d]),
                        [a, b] => planes(&tiles, [a, b]),
                        [a] => planes(&tiles, [a]),
                        _ => return false,
                    }
                }
                true
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                false
            }
        }
    };
}

planes_with_avx2!(planes_f32_with_avx2, f32_tiles, f32, 8);
planes_with_avx2!(planes_f64_with_avx2, f64_tiles, f64, 4);

/// Panics unless every tile's reads lie in `tiles.source` and
/// `tiles.weights` and its writes in `out`. A tile's reads start from its
/// top row and left column, both at most those of the last tile (rows
/// `out_h - 2..out_h`, columns `out_w - pixels..out_w`), so that tile's
/// furthest read bounds them all; its writes likewise bound every tile's.
fn check_bounds<T>(tiles: &RawTiles<'_, T>, out: &[&mut [T]], pixels: usize) {
    assert!(
        tiles.c_in_g > 0 && tiles.kh > 0 && !tiles.taps.is_empty(),
        "a tile sums at least one tap"
    );
    let widest_tap = tiles.taps.iter().copied().max().unwrap_or(0);
    let furthest_read = (tiles.c_in_g - 1) * tiles.plane
        + (tiles.out_h - 1) * tiles.row_step
        + (tiles.kh - 1) * tiles.kernel_row_step
        + (tiles.out_w - pixels)
        + widest_tap
        + pixels;
    assert!(
        furthest_read <= tiles.source.len(),
        "the tiles read {furthest_read} elements of an input of {}",
        tiles.source.len()
    );
    let channels = out.len();
    assert_eq!(tiles.bias.len(), channels, "a bias an output plane");
    let weights = tiles.c_in_g * tiles.kh * tiles.taps.len() * channels;
    assert!(
        weights <= tiles.weights.len(),
        "the tiles read {weights} weights of {}",
        tiles.weights.len()
    );
    let outputs = tiles.out_h * tiles.out_w;
    for plane in out {
        assert!(
            outputs <= plane.len(),
            "the tiles write {outputs} outputs into a plane of {}",
            plane.len()
        );
    }
}

/// The kernels of one dtype in module `$module`: `$lanes` pixels a
/// vector of type `$vec`, and the intrinsics that set, load, store and
/// multiply-add it.
macro_rules! register_tiles {
    ($module:ident, $t:ty, $lanes:expr, $vec:ty, $set1:ident, $load:ident, $store:ident,
     $fmadd:ident) => {
        pub(super) mod $module {
            use super::super::{RawTiles, TILE_ROWS};
            use std::arch::x86_64::*;

            /// Pixels a tile row: one vector.
            const PIXELS: usize = $lanes;

            /// Every tile of the planes: rows two at a time and columns a
            /// vector at a time, the last of each shifted back to end on
            /// the plane's edge (recomputing a few outputs, stored again
            /// with the same bits).
            ///
            /// # Safety
            /// The CPU has AVX2 and FMA; [`super::super::check_bounds`]
            /// passed for `tiles` and `out` with `PIXELS`.
            #[target_feature(enable = "avx2,fma")]
            pub(in super::super) unsafe fn planes<const CHANNELS: usize>(
                tiles: &RawTiles<'_, $t>,
                out: [&mut &mut [$t]; CHANNELS],
            ) {
                // SAFETY: as the caller promises.
                unsafe {
                    match tiles.taps {
                        [0, 1, 2] => planes_of_width::<CHANNELS, 3>(tiles, out),
                        [0, 1, 2, 3, 4] => planes_of_width::<CHANNELS, 5>(tiles, out),
                        _ => planes_of_width::<CHANNELS, 0>(tiles, out),
                    }
                }
            }

            /// [`planes`] with the kernel row's taps `0..KW` where `KW`
            /// is not 0, unrolled with constant offsets, or read from
            /// `tiles.taps` where it is.
            ///
            /// # Safety
            /// As for [`planes`]; `KW` is 0 or `tiles.taps` is `0..KW`.
            #[target_feature(enable = "avx2,fma")]
            unsafe fn planes_of_width<const CHANNELS: usize, const KW: usize>(
                tiles: &RawTiles<'_, $t>,
                out: [&mut &mut [$t]; CHANNELS],
            ) {
                let (out_h, out_w) = (tiles.out_h, tiles.out_w);
                let planes: [*mut $t; CHANNELS] = out.map(|plane| plane.as_mut_ptr());
                let mut oh = 0;
                while oh < out_h {
                    let top = oh.min(out_h - TILE_ROWS);
                    let mut ow = 0;
                    while ow < out_w {
                        let left = ow.min(out_w - PIXELS);
                        // SAFETY: `top ≤ out_h - 2` and `left ≤ out_w -
                        // PIXELS`, the last tile's, whose reads the
                        // caller checked.
                        let sums = unsafe { tile::<CHANNELS, KW>(tiles, top, left) };
                        for (&plane, rows) in planes.iter().zip(&sums) {
                            for (r, &sum) in rows.iter().enumerate() {
                                let at = (top + r) * out_w + left;
                                // SAFETY: a vector of the tile's row, at
                                // most the last tile's, inside each plane
                                // (`check_bounds`).
                                unsafe { $store(plane.add(at), sum) };
                            }
                        }
                        ow = left + PIXELS;
                    }
                    oh = top + TILE_ROWS;
                }
            }

            /// The sums of the tile at output row `top` and column `left`:
            /// each channel's bias, then over input channels, kernel rows
            /// and taps, the tap's two input vectors times the channel's
            /// broadcast weight.
            ///
            /// # Safety
            /// The CPU has AVX2 and FMA; the reads of this tile lie within
            /// those [`super::super::check_bounds`] checked (`top`, `left`
            /// at most the last tile's).
            #[target_feature(enable = "avx2,fma")]
            #[inline]
            unsafe fn tile<const CHANNELS: usize, const KW: usize>(
                tiles: &RawTiles<'_, $t>,
                top: usize,
                left: usize,
            ) -> [[$vec; TILE_ROWS]; CHANNELS] {
                let mut sums = [[$set1(0.0); TILE_ROWS]; CHANNELS];
                for (rows, &bias) in sums.iter_mut().zip(tiles.bias) {
                    *rows = [$set1(bias); TILE_ROWS];
                }
                let source = tiles.source.as_ptr();
                let mut weights = tiles.weights.as_ptr();
                let first_row = top * tiles.row_step + left;
                for cl in 0..tiles.c_in_g {
                    for i in 0..tiles.kh {
                        let row = first_row + cl * tiles.plane + i * tiles.kernel_row_step;
                        let taps = if KW == 0 { tiles.taps.len() } else { KW };
                        for t in 0..taps {
                            let tap = if KW == 0 { tiles.taps[t] } else { t };
                            // SAFETY: the two vectors are this tile's
                            // reads of the tap, and the weights its tap's
                            // `CHANNELS`, all within the bounds the caller
                            // checked.
                            unsafe {
                                let x0 = $load(source.add(row + tap));
                                let x1 = $load(source.add(row + tap + tiles.row_step));
                                for (cb, rows) in sums.iter_mut().enumerate() {
                                    let w = $set1(*weights.add(cb));
                                    rows[0] = $fmadd(w, x0, rows[0]);
                                    rows[1] = $fmadd(w, x1, rows[1]);
                                }
                                weights = weights.add(CHANNELS);
                            }
                        }
                    }
                }
                sums
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod kernels {
    register_tiles!(
        f32_tiles,
        f32,
        8,
        __m256,
        _mm256_set1_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_fmadd_ps
    );
    register_tiles!(
        f64_tiles,
        f64,
        4,
        __m256d,
        _mm256_set1_pd,
        _mm256_loadu_pd,
        _mm256_storeu_pd,
        _mm256_fmadd_pd
    );
}
