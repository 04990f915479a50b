//! The forward pass of a depthwise 3x3 layer, at unit stride or stride 2,
//! on planes whose input rows fit in one AVX-512 vector and whose output
//! rows fit in half of one (MobileNet-v2's 7-pixel outputs in `f32`): two
//! output rows a vector, for the kernels of `narrow_planes.rs` and
//! `split_in_registers.rs`.
//!
//! A vector of one output row a row leaves more than half of its lanes
//! masked off on such planes, and the arithmetic of the masked lanes costs
//! as much as that of the kept ones (BENCHMARKS.md, "Two rows a vector").
//! Here the lower half of a vector holds an output row and the upper half
//! the next: each input row is loaded whole, once, under a mask that keeps
//! it within the row, and each tap is one permute of the two input rows
//! the halves read (zeros where a column lies in the padding) and one
//! multiply-add. Each output's nine multiply-adds run in the order of the
//! taps, after the bias, as in the kernels that call this one, so both give
//! the same bits.

/// Whether the kernels here compute a plane of rows `in_w` wide with
/// `out_w` outputs each, in vectors of `lanes`: each input row fits in a
/// vector, each output row in half of one.
#[cfg(target_arch = "x86_64")]
pub(super) fn fits(in_w: usize, out_w: usize, lanes: usize) -> bool {
    in_w <= lanes && out_w <= lanes / 2
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use super::super::split_in_registers::masks::lanes_within;

    /// The AVX-512 kernel of one dtype, in module `$module`.
    macro_rules! two_row_kernels {
        ($module:ident, $t:ty, $lanes:expr, $vec:ty, $mask:ty, $set1:ident, $zero:ident,
         $maskz_load:ident, $mask_store:ident, $fmadd:ident, $permute:ident, $index:ty,
         $load_index:ident, $swap_halves:ident) => {
            pub(in super::super) mod $module {
                use super::lanes_within;
                use std::arch::x86_64::*;

                const LANES: usize = $lanes;

                /// Lanes of an output row: the lower one in lanes
                /// `0..HALF`, the next in lanes `HALF..`.
                const HALF: usize = LANES / 2;

                /// Where a vector of two output rows finds a kernel row's
                /// taps in the two input rows its halves read (each loaded
                /// whole into a vector under `row`): for each tap column,
                /// the permute's index (the upper half's lanes index the
                /// second input row) and the lanes it keeps, those of
                /// outputs within the row whose column lies within the
                /// input; and the lanes of an output row, `stored`.
                struct Layout {
                    row: $mask,
                    index: [__m512i; 3],
                    lanes: [$mask; 3],
                    stored: $mask,
                }

                /// The [`Layout`] of rows `in_w` wide after `pad_left`
                /// zeros with `out_w` outputs, at stride `S`.
                #[target_feature(enable = "avx512f")]
                #[inline]
                fn layout<const S: usize>(pad_left: usize, in_w: usize, out_w: usize) -> Layout {
                    let mut index = [[0 as $index; LANES]; 3];
                    let mut lanes = [0u32; 3];
                    for kw in 0..3 {
                        for l in 0..LANES {
                            let (upper, ow) = (l / HALF, l % HALF);
                            // Output `ow` reads column `S·ow + kw` of the
                            // padded row.
                            let column = (S * ow + kw) as isize - pad_left as isize;
                            if ow < out_w && (0..in_w as isize).contains(&column) {
                                index[kw][l] = (column as usize + upper * LANES) as $index;
                                lanes[kw] |= 1 << l;
                            }
                        }
                    }
                    // SAFETY: each reads one vector of its array.
                    let index = index.map(|i| unsafe { $load_index(i.as_ptr()) });
                    Layout {
                        row: lanes_within(0, in_w, LANES) as $mask,
                        index,
                        lanes: lanes.map(|l| l as $mask),
                        stored: lanes_within(0, out_w, LANES) as $mask,
                    }
                }

                /// Channel `channel`'s nine taps and its bias (zero where
                /// `bias` is null), each in every lane.
                ///
                /// # Safety
                /// `taps` must be valid for `9 · (channel + 1)` reads,
                /// `bias` null or valid for `channel + 1`.
                #[target_feature(enable = "avx512f")]
                #[inline]
                pub(in super::super::super) unsafe fn filter(
                    taps: *const $t,
                    bias: *const $t,
                    channel: usize,
                ) -> ([$vec; 9], $vec) {
                    let mut w = [$zero(); 9];
                    for (t, w) in w.iter_mut().enumerate() {
                        // SAFETY: tap `t` of channel `channel`, within the
                        // caller's.
                        *w = $set1(unsafe { *taps.add(9 * channel + t) });
                    }
                    let bias = if bias.is_null() {
                        $zero()
                    } else {
                        // SAFETY: a non-null `bias` holds `channel + 1`.
                        $set1(unsafe { *bias.add(channel) })
                    };
                    (w, bias)
                }

                /// Row `row` of the padded plane, loaded whole under `mask`
                /// (zeros outside the plane).
                ///
                /// # Safety
                /// `input` must be valid for `in_h · in_w` reads, and
                /// `mask` keep lanes within `in_w`.
                #[target_feature(enable = "avx512f")]
                #[inline]
                unsafe fn padded_row(
                    (input, (in_h, in_w, pad_top)): (*const $t, (usize, usize, usize)),
                    mask: $mask,
                    row: usize,
                ) -> $vec {
                    match row.checked_sub(pad_top).filter(|&ih| ih < in_h) {
                        // SAFETY: the lanes of `mask` of row `ih < in_h`.
                        Some(ih) => unsafe { $maskz_load(mask, input.wrapping_add(ih * in_w)) },
                        None => $zero(),
                    }
                }

                /// Output rows `first_row..first_row + count` (each `out_w`
                /// wide) of each channel's plane at stride `S` (1 or 2),
                /// into `out`, one channel after another, on planes that
                /// [`super::super::fits`] a vector.
                ///
                /// # Safety
                /// The CPU must have AVX-512 F; `in_w ≤ LANES`, `out_w ≤
                /// HALF`; `input` valid for `channels · in_h · in_w` reads,
                /// `taps` for `9 · channels`, `bias` null or valid for
                /// `channels`, and `out` for `channels · count · out_w`
                /// writes.
                #[target_feature(enable = "avx512f")]
                pub(in super::super::super) unsafe fn rows<const S: usize>(
                    (input, in_h, in_w, (pad_top, pad_left)): (
                        *const $t,
                        usize,
                        usize,
                        (usize, usize),
                    ),
                    (taps, bias, channels): (*const $t, *const $t, usize),
                    (first_row, count, out_w): (usize, usize, usize),
                    out: *mut $t,
                ) {
                    let layout = layout::<S>(pad_left, in_w, out_w);
                    for channel in 0..channels {
                        let plane = (
                            input.wrapping_add(channel * in_h * in_w),
                            (in_h, in_w, pad_top),
                        );
                        // SAFETY: as this function's: channel `channel`'s
                        // filter, plane and output rows.
                        unsafe {
                            plane_rows::<S>(
                                plane,
                                filter(taps, bias, channel),
                                &layout,
                                (first_row, count, out_w),
                                out.wrapping_add(channel * count * out_w),
                            )
                        };
                    }
                }

                /// [`rows`] of one plane: a vector's lower half takes its
                /// taps from input rows `S·oh..S·oh + 3`, its upper half
                /// from the three `S` rows down, one permute a tap; the
                /// upper half is moved down to be stored.
                ///
                /// # Safety
                /// As [`rows`]'s, for one plane, `layout` made for it.
                #[target_feature(enable = "avx512f")]
                #[inline]
                unsafe fn plane_rows<const S: usize>(
                    plane: (*const $t, (usize, usize, usize)),
                    (w, bias): ([$vec; 9], $vec),
                    layout: &Layout,
                    (first_row, count, out_w): (usize, usize, usize),
                    out: *mut $t,
                ) {
                    let mut r = 0;
                    while r < count {
                        let top = S * (first_row + r);
                        // The `S + 3` padded rows the two output rows read.
                        let lines: [$vec; 5] = std::array::from_fn(|i| {
                            if i < S + 3 {
                                // SAFETY: as this function's.
                                unsafe { padded_row(plane, layout.row, top + i) }
                            } else {
                                $zero()
                            }
                        });
                        let mut sums = bias;
                        for kh in 0..3 {
                            let (lower, upper) = (lines[kh], lines[kh + S]);
                            for kw in 0..3 {
                                let tap =
                                    $permute(layout.lanes[kw], lower, layout.index[kw], upper);
                                sums = $fmadd(w[3 * kh + kw], tap, sums);
                            }
                        }
                        let row = out.wrapping_add(r * out_w);
                        // SAFETY: rows `r` and (where it is one of the
                        // caller's) `r + 1`, their lanes within `out_w`.
                        unsafe {
                            $mask_store(row, layout.stored, sums);
                            if r + 1 < count {
                                let upper = $swap_halves::<0b01_00_11_10>(sums, sums);
                                $mask_store(row.wrapping_add(out_w), layout.stored, upper);
                            }
                        }
                        r += 2;
                    }
                }
            }
        };
    }

    two_row_kernels!(
        f32_kernels,
        f32,
        16,
        __m512,
        __mmask16,
        _mm512_set1_ps,
        _mm512_setzero_ps,
        _mm512_maskz_loadu_ps,
        _mm512_mask_storeu_ps,
        _mm512_fmadd_ps,
        _mm512_maskz_permutex2var_ps,
        i32,
        _mm512_loadu_epi32,
        _mm512_shuffle_f32x4
    );
    two_row_kernels!(
        f64_kernels,
        f64,
        8,
        __m512d,
        __mmask8,
        _mm512_set1_pd,
        _mm512_setzero_pd,
        _mm512_maskz_loadu_pd,
        _mm512_mask_storeu_pd,
        _mm512_fmadd_pd,
        _mm512_maskz_permutex2var_pd,
        i64,
        _mm512_loadu_epi64,
        _mm512_shuffle_f64x2
    );
}
