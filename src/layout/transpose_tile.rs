//! The square register tiles of a transpose, per element type: the piece
//! of `transpose.rs` that knows the dtype, reached through
//! `Element::transpose_tiles`. Through AVX registers when the CPU has AVX
//! (runtime detection), else a scalar loop.

/// Whether `(rows, cols)` whole `tile`-square tiles fit `src` and `dst`
/// at their strides, every tile inside its slice: the last tile's last
/// source element is `(rows - 1)·src_stride + cols - 1`, and likewise for
/// the destination.
fn tiles_fit<T>(
    (src, src_stride): (&[T], usize),
    (dst, dst_stride): (&[T], usize),
    (rows, cols): (usize, usize),
    tile: usize,
) -> bool {
    rows.is_multiple_of(tile)
        && cols.is_multiple_of(tile)
        && src_stride >= cols
        && dst_stride >= rows
        && src.len() >= (rows - 1) * src_stride + cols
        && dst.len() >= (cols - 1) * dst_stride + rows
}

/// Source rows a band of the tile grid holds (a multiple of every tile's
/// side). The grid goes band by band, each band a column of tiles at a
/// time, so that a destination row takes a band's elements in one run,
/// whole cache lines, before the next. A row of tiles at a time writes 32
/// bytes into each of the destination's rows and comes back for the rest
/// a row of tiles later: on the channel vectors' tiles into a sample's
/// output planes that took up to 3.4x the time (BENCHMARKS.md,
/// "Transposes in bands").
const BAND_ROWS: usize = 64;

/// [`BAND_ROWS`] for destination rows a whole number of pages apart
/// (planes of 256x256 or 512x512 pixels): every row's run then falls in
/// the same cache sets as the others' and on pages of their own, and runs
/// of a quarter of a page keep the writes streaming where runs of 256
/// bytes took a fifth longer (BENCHMARKS.md, "Transposes into aliased
/// planes").
const ALIASED_BAND_ROWS: usize = 256;

// Every tile of a band starts on a multiple of its side (8 for `f32`, 4
// for `f64`), as the tile kernels' safety needs.
const _: () = assert!(BAND_ROWS.is_multiple_of(8) && ALIASED_BAND_ROWS.is_multiple_of(8));

/// Bytes of a page, the span over which the caches' set index and the
/// prefetchers' streams repeat.
const PAGE_BYTES: usize = 4096;

/// The band height for destination rows `dst_stride` elements of `T`
/// apart: [`ALIASED_BAND_ROWS`] when they lie whole pages apart, else
/// [`BAND_ROWS`].
fn band_rows<T>(dst_stride: usize) -> usize {
    let aliased = dst_stride.is_multiple_of(PAGE_BYTES / std::mem::size_of::<T>());
    if aliased {
        ALIASED_BAND_ROWS
    } else {
        BAND_ROWS
    }
}

/// A grid of `8 x 8` tiles of `f32`, through AVX when the CPU has it: the
/// feature test and the bounds check once a matrix, and the tiles inlined
/// into one loop (a call, a test and a check a tile took a third of the
/// transposes' time; BENCHMARKS.md, "Transposes").
pub(crate) fn transpose_tiles_f32(
    src: &[f32],
    src_stride: usize,
    dst: &mut [f32],
    dst_stride: usize,
    (rows, cols): (usize, usize),
) {
    if rows == 0 || cols == 0 {
        return;
    }
    let shape = (rows, cols);
    assert!(tiles_fit((src, src_stride), (dst, dst_stride), shape, 8));
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked just above), the assert above
        // keeps every load and store of every tile inside its slice, and
        // `band_rows` is one of the band heights, multiples of 8 (asserted
        // where they are defined).
        unsafe {
            avx::tiles_f32(
                src.as_ptr(),
                src_stride,
                dst.as_mut_ptr(),
                dst_stride,
                shape,
                band_rows::<f32>(dst_stride),
            )
        };
        return;
    }
    scalar_tiles(src, src_stride, dst, dst_stride, shape);
}

/// A grid of `4 x 4` tiles of `f64`, as [`transpose_tiles_f32`].
pub(crate) fn transpose_tiles_f64(
    src: &[f64],
    src_stride: usize,
    dst: &mut [f64],
    dst_stride: usize,
    (rows, cols): (usize, usize),
) {
    if rows == 0 || cols == 0 {
        return;
    }
    let shape = (rows, cols);
    assert!(tiles_fit((src, src_stride), (dst, dst_stride), shape, 4));
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: as for `transpose_tiles_f32`.
        unsafe {
            avx::tiles_f64(
                src.as_ptr(),
                src_stride,
                dst.as_mut_ptr(),
                dst_stride,
                shape,
                band_rows::<f64>(dst_stride),
            )
        };
        return;
    }
    scalar_tiles(src, src_stride, dst, dst_stride, shape);
}

/// The element-by-element fallback (the tile grid is the whole matrix).
fn scalar_tiles<T: Copy>(
    src: &[T],
    src_stride: usize,
    dst: &mut [T],
    dst_stride: usize,
    (rows, cols): (usize, usize),
) {
    for i in 0..rows {
        for j in 0..cols {
            dst[j * dst_stride + i] = src[i * src_stride + j];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    /// Every tile of a `rows x cols` grid of `8 x 8` tiles, in bands of
    /// `band_rows` source rows (a multiple of 8).
    ///
    /// # Safety
    /// The CPU must have AVX; `src + i·src_stride + j` and `dst +
    /// j·dst_stride + i` must be valid for `i < rows`, `j < cols`, both
    /// multiples of 8, and `band_rows` a multiple of 8 (so that every tile
    /// starts on a multiple of 8).
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn tiles_f32(
        src: *const f32,
        src_stride: usize,
        dst: *mut f32,
        dst_stride: usize,
        (rows, cols): (usize, usize),
        band_rows: usize,
    ) {
        for band in (0..rows).step_by(band_rows) {
            for j in (0..cols).step_by(8) {
                for i in (band..rows.min(band + band_rows)).step_by(8) {
                    // SAFETY: tile (i, j) lies inside the grid the caller
                    // guarantees valid.
                    unsafe {
                        tile_f32(
                            src.add(i * src_stride + j),
                            src_stride,
                            dst.add(j * dst_stride + i),
                            dst_stride,
                        )
                    };
                }
            }
        }
    }

    /// Every tile of a `rows x cols` grid of `4 x 4` tiles.
    ///
    /// # Safety
    /// As [`tiles_f32`], multiples of 4.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn tiles_f64(
        src: *const f64,
        src_stride: usize,
        dst: *mut f64,
        dst_stride: usize,
        (rows, cols): (usize, usize),
        band_rows: usize,
    ) {
        for band in (0..rows).step_by(band_rows) {
            for j in (0..cols).step_by(4) {
                for i in (band..rows.min(band + band_rows)).step_by(4) {
                    // SAFETY: as in `tiles_f32`.
                    unsafe {
                        tile_f64(
                            src.add(i * src_stride + j),
                            src_stride,
                            dst.add(j * dst_stride + i),
                            dst_stride,
                        )
                    };
                }
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX; `src + i·src_stride + j` and `dst +
    /// j·dst_stride + i` must be valid for `i, j < 8`.
    #[inline]
    #[target_feature(enable = "avx")]
    unsafe fn tile_f32(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
        // SAFETY: the caller guarantees the eight rows of eight are readable.
        let r: [__m256; 8] =
            std::array::from_fn(|k| unsafe { _mm256_loadu_ps(src.add(k * src_stride)) });
        // Interleave pairs of rows, then pairs of pairs, then the 128-bit
        // halves: the classic three-stage 8x8 transpose.
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let columns = [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ];
        for (k, column) in columns.into_iter().enumerate() {
            // SAFETY: the caller guarantees the eight rows of eight are writable.
            unsafe { _mm256_storeu_ps(dst.add(k * dst_stride), column) };
        }
    }

    /// # Safety
    /// As [`tile_f32`], for `i, j < 4`.
    #[inline]
    #[target_feature(enable = "avx")]
    unsafe fn tile_f64(src: *const f64, src_stride: usize, dst: *mut f64, dst_stride: usize) {
        // SAFETY: the caller guarantees the four rows of four are readable.
        let r: [__m256d; 4] =
            std::array::from_fn(|k| unsafe { _mm256_loadu_pd(src.add(k * src_stride)) });
        let t0 = _mm256_unpacklo_pd(r[0], r[1]);
        let t1 = _mm256_unpackhi_pd(r[0], r[1]);
        let t2 = _mm256_unpacklo_pd(r[2], r[3]);
        let t3 = _mm256_unpackhi_pd(r[2], r[3]);
        let columns = [
            _mm256_permute2f128_pd::<0x20>(t0, t2),
            _mm256_permute2f128_pd::<0x20>(t1, t3),
            _mm256_permute2f128_pd::<0x31>(t0, t2),
            _mm256_permute2f128_pd::<0x31>(t1, t3),
        ];
        for (k, column) in columns.into_iter().enumerate() {
            // SAFETY: the caller guarantees the four rows of four are writable.
            unsafe { _mm256_storeu_pd(dst.add(k * dst_stride), column) };
        }
    }
}
