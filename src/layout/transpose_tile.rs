//! One square register tile of a transpose, per element type: the piece of
//! `transpose.rs` that knows the dtype, reached through
//! `Element::transpose_tile`. Through AVX registers when the CPU has AVX
//! (runtime detection), else a scalar loop.

/// One `8 x 8` tile of `f32`, through AVX when the CPU has it.
pub(crate) fn transpose_tile_f32(
    src: &[f32],
    src_stride: usize,
    dst: &mut [f32],
    dst_stride: usize,
) {
    assert!(src.len() > 7 * src_stride + 7 && dst.len() > 7 * dst_stride + 7);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked just above), and the assert
        // above keeps every load and store of the tile inside its slice.
        unsafe { avx::tile_f32(src.as_ptr(), src_stride, dst.as_mut_ptr(), dst_stride) };
        return;
    }
    scalar_tile(src, src_stride, dst, dst_stride, 8);
}

/// One `4 x 4` tile of `f64`, through AVX when the CPU has it.
pub(crate) fn transpose_tile_f64(
    src: &[f64],
    src_stride: usize,
    dst: &mut [f64],
    dst_stride: usize,
) {
    assert!(src.len() > 3 * src_stride + 3 && dst.len() > 3 * dst_stride + 3);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: as for `transpose_tile_f32`.
        unsafe { avx::tile_f64(src.as_ptr(), src_stride, dst.as_mut_ptr(), dst_stride) };
        return;
    }
    scalar_tile(src, src_stride, dst, dst_stride, 4);
}

fn scalar_tile<T: Copy>(src: &[T], src_stride: usize, dst: &mut [T], dst_stride: usize, n: usize) {
    for i in 0..n {
        for j in 0..n {
            dst[j * dst_stride + i] = src[i * src_stride + j];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must have AVX; `src + i·src_stride + j` and `dst +
    /// j·dst_stride + i` must be valid for `i, j < 8`.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn tile_f32(
        src: *const f32,
        src_stride: usize,
        dst: *mut f32,
        dst_stride: usize,
    ) {
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
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn tile_f64(
        src: *const f64,
        src_stride: usize,
        dst: *mut f64,
        dst_stride: usize,
    ) {
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
