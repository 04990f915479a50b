//! The forward pass and the gradients of a depthwise 3x3 layer at stride
//! 2 plane by plane, with each row split into its even and odd columns (or
//! woven back from them) in registers: per dtype, through AVX-512
//! permutes, or on CPUs without AVX-512 through AVX2's in-lane shuffles
//! (`split_in_registers/avx2.rs`, `f32`), reached through the hidden
//! `Element::depthwise_stride2_rows`,
//! `Element::depthwise_stride2_weight_gradient` and
//! `Element::depthwise_stride2_input_gradient`.
//!
//! The portable kernels (`deinterleaved.rs`, `deinterleaved_gradients.rs`)
//! write each plane's rows split into even and odd columns to a buffer, and
//! weave the input gradient back from another; the splits, weaves and
//! their stores took as long as the arithmetic (BENCHMARKS.md, "Split in
//! registers"). Here a vector of outputs loads the two vectors of input
//! pairs its taps span and permutes out the three taps of a kernel row
//! (`even[j]`, `odd[j]`, `even[j + 1]`), so an input row is read straight
//! from the caller's plane and never stored again: the forward pass
//! multiplies them by the weights, the weight gradient by a vector of the
//! error. A vector of input gradient pairs sums its even and odd columns
//! from the error rows that reach it and weaves them in two permutes
//! before its one store. Columns outside a row (padding) come in as zeros,
//! and stay unwritten, through load, permute and store masks; rows outside
//! the plane or the band are skipped; each forward output's nine
//! multiply-adds run in the portable kernel's order, so both give the same
//! bits. The forward pass takes a sample's channels in one call, and gives
//! planes whose output rows fit in half a vector to `two_rows.rs`.

#[cfg(target_arch = "x86_64")]
use super::channel_vectors::kernel_for;
use super::narrow_planes::{Filters, Planes};
#[cfg(target_arch = "x86_64")]
use super::narrow_planes::{RawRows, rows_with};
use std::ops::Range;

/// An input plane (`in_h × in_w`, rows contiguous one after another),
/// its row width `in_w` and the zero rows above and columns left of it.
pub(crate) type Plane<'a, T> = (&'a [T], usize, (usize, usize));

/// Output rows `rows` of each channel of `planes` and `filters` at stride
/// 2 into `out` (each channel's `rows.len()` rows of `out_w` outputs, one
/// channel after another), for `f32`: two output rows a vector on planes
/// whose rows fit in one vector and whose output rows in half of one,
/// else vectors of 16 outputs (on rows narrower than that, one masked
/// vector a row); with AVX2, vectors of 8. Returns whether it did: on a
/// CPU with AVX-512 F, or AVX2 and FMA. Panics if the slices do not hold
/// what their sizes say.
pub(crate) fn rows_f32(
    planes: Planes<'_, f32>,
    filters: Filters<'_, f32>,
    rows: Range<usize>,
    out_w: usize,
    out: &mut [f32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let kernel = kernel_for::<RawRows<f32>>(avx512::f32_kernels::rows, avx2::f32_kernels::rows);
        rows_with(planes, filters, rows, out_w, out, kernel)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`rows_f32`] for `f64`, in vectors of 8 outputs, on a CPU with
/// AVX-512 F only (BENCHMARKS.md, "Split in registers on AVX2").
pub(crate) fn rows_f64(
    planes: Planes<'_, f64>,
    filters: Filters<'_, f64>,
    rows: Range<usize>,
    out_w: usize,
    out: &mut [f64],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let kernel = avx512_only(avx512::f64_kernels::rows as RawRows<f64>);
        rows_with(planes, filters, rows, out_w, out, kernel)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// An input gradient plane (`in_h × in_w`, rows contiguous one after
/// another), its row width `in_w` and the zero rows above and columns left
/// of the input it is the gradient of.
pub(crate) type GradientPlane<'a, T> = (&'a mut [T], usize, (usize, usize));

/// The error of a band of output rows (`count × out_w`, rows contiguous),
/// its row width `out_w` and the index of its first row.
pub(crate) type Error<'a, T> = (&'a [T], usize, usize);

/// Rows `rows` of the input gradient `dx` of a channel from its error rows
/// `error` (every other row's contribution counted zero) and its taps,
/// for `f32`: each written whole. Returns whether it did: on a CPU with
/// AVX-512 F, or AVX2 and FMA. Panics if the slices do not hold what
/// their sizes say.
pub(crate) fn input_gradient_rows_f32(
    error: Error<'_, f32>,
    taps: &[f32; 9],
    dx: GradientPlane<'_, f32>,
    rows: Range<usize>,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let kernel = kernel_for::<RawInputGradient<f32>>(
            avx512::input_gradient_f32,
            avx2::f32_kernels::input_gradient,
        );
        input_gradient_with(error, taps, dx, rows, kernel)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`input_gradient_rows_f32`] for `f64`, for error rows of at least one
/// vector (8), on a CPU with AVX-512 F only.
pub(crate) fn input_gradient_rows_f64(
    error: Error<'_, f64>,
    taps: &[f64; 9],
    dx: GradientPlane<'_, f64>,
    rows: Range<usize>,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let kernel = avx512_only(avx512::input_gradient_f64 as RawInputGradient<f64>);
        input_gradient_with(error, taps, dx, rows, kernel)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The raw form of an input gradient call: the error, its rows, their
/// width and the first's index; the taps; the gradient plane, its width
/// and the padding (top, left); the rows to write.
#[cfg(target_arch = "x86_64")]
type RawInputGradient<T> = unsafe fn(
    (*const T, usize, usize, usize),
    &[T; 9],
    (*mut T, usize, (usize, usize)),
    Range<usize>,
);

/// `kernel`, an AVX-512 kernel, where the CPU runs it.
#[cfg(target_arch = "x86_64")]
fn avx512_only<K>(kernel: K) -> Option<K> {
    super::narrow_planes::available().then_some(kernel)
}

/// `kernel` (the AVX-512 or AVX2 build [`kernel_for`] gives, if any) on
/// the call's slices.
#[cfg(target_arch = "x86_64")]
fn input_gradient_with<T>(
    (error, out_w, first): Error<'_, T>,
    taps: &[T; 9],
    (dx, in_w, pad): GradientPlane<'_, T>,
    rows: Range<usize>,
    kernel: Option<RawInputGradient<T>>,
) -> bool {
    let count = error.len().checked_div(out_w).unwrap_or(0);
    assert_eq!(count * out_w, error.len(), "whole error rows");
    let in_h = dx.len().checked_div(in_w).unwrap_or(0);
    assert_eq!(in_h * in_w, dx.len(), "whole gradient rows");
    assert!(
        rows.start <= rows.end && rows.end <= in_h,
        "rows {rows:?} of {in_h}"
    );
    let Some(kernel) = kernel.filter(|_| out_w > 0) else {
        return false;
    };
    // SAFETY: the CPU has the kernel's features (`kernel_for` or
    // `avx512_only`); `out_w ≥ 1`; the error holds `count` rows of `out_w`
    // and `dx` `in_h` rows of `in_w` (checked above), of which the kernel
    // writes rows `rows`, within `in_h`. It loads only columns
    // `0..out_w` of error rows `0..count`, and stores only columns
    // `0..in_w` of those rows.
    unsafe {
        kernel(
            (error.as_ptr(), count, out_w, first),
            taps,
            (dx.as_mut_ptr(), in_w, pad),
            rows,
        )
    };
    true
}

/// The weight gradient of a channel's nine taps over the error rows
/// `error` (the band's rows, their width and the first's index) and its
/// input plane, for `f32`: each tap's products summed a vector of lanes at
/// a time, then across the lanes. Returns `None` on a CPU with neither
/// AVX-512 F nor AVX2 and FMA. Panics if the slices do not hold what
/// their sizes say.
pub(crate) fn weight_gradient_f32(
    plane: Plane<'_, f32>,
    error: Error<'_, f32>,
) -> Option<[f32; 9]> {
    #[cfg(target_arch = "x86_64")]
    {
        let kernel = kernel_for::<RawWeightGradient<f32>>(
            avx512::f32_kernels::weight_gradient,
            avx2::f32_kernels::weight_gradient,
        );
        weight_gradient_with(plane, error, kernel)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// [`weight_gradient_f32`] for `f64`, on a CPU with AVX-512 F only.
pub(crate) fn weight_gradient_f64(
    plane: Plane<'_, f64>,
    error: Error<'_, f64>,
) -> Option<[f64; 9]> {
    #[cfg(target_arch = "x86_64")]
    {
        let kernel = avx512_only(avx512::f64_kernels::weight_gradient as RawWeightGradient<f64>);
        weight_gradient_with(plane, error, kernel)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// The raw form of a weight gradient call: the input plane, its height,
/// width and padding (top, left); the error, its rows, their width and the
/// first's index.
#[cfg(target_arch = "x86_64")]
type RawWeightGradient<T> =
    unsafe fn((*const T, usize, usize, (usize, usize)), (*const T, usize, usize, usize)) -> [T; 9];

/// `kernel` (the AVX-512 or AVX2 build [`kernel_for`] gives, if any) on
/// the call's slices.
#[cfg(target_arch = "x86_64")]
fn weight_gradient_with<T>(
    (input, in_w, pad): Plane<'_, T>,
    (error, out_w, first): Error<'_, T>,
    kernel: Option<RawWeightGradient<T>>,
) -> Option<[T; 9]> {
    let in_h = input.len().checked_div(in_w).unwrap_or(0);
    assert_eq!(in_h * in_w, input.len(), "whole input rows");
    let count = error.len().checked_div(out_w).unwrap_or(0);
    assert_eq!(count * out_w, error.len(), "whole error rows");
    let kernel = kernel.filter(|_| out_w > 0)?;
    // SAFETY: the CPU has the kernel's features (`kernel_for` or
    // `avx512_only`); `out_w ≥ 1`; the input holds `in_h` rows of `in_w`
    // and the error `count` rows of `out_w` (checked above). The kernel
    // loads only columns `0..in_w` of input rows `0..in_h` and columns
    // `0..out_w` of error rows `0..count`.
    Some(unsafe {
        kernel(
            (input.as_ptr(), in_h, in_w, pad),
            (error.as_ptr(), count, out_w, first),
        )
    })
}

/// The lane masks of the AVX-512 kernels here and in `narrow_planes.rs`.
#[cfg(target_arch = "x86_64")]
pub(super) mod masks {
    /// The lanes `l` of a vector of `lanes` for which `at + l` lies in
    /// `0..len`, as a mask: the part of a load at column `at` of a row
    /// `len` long that lies in the row.
    #[inline(always)]
    pub(crate) fn lanes_within(at: isize, len: usize, lanes: usize) -> u32 {
        let lanes = lanes as isize;
        let len = isize::try_from(len).unwrap_or(isize::MAX);
        let first = (-at).clamp(0, lanes);
        let end = len.saturating_sub(at).clamp(0, lanes);
        lanes_from(first as u32, lanes as u32) & !lanes_from(end as u32, lanes as u32)
    }

    /// Where the loads of a run of pairs starting at column `s` (maybe
    /// left of the row) start, and the offset of column `s` from there.
    #[inline(always)]
    pub(crate) fn window(s: isize) -> (isize, isize) {
        let base = s.max(0);
        (base, s - base)
    }

    /// Lanes `first..lanes` as a mask.
    #[inline(always)]
    pub(crate) fn lanes_from(first: u32, lanes: u32) -> u32 {
        let all = (1u32 << lanes) - 1;
        (all << first.min(lanes)) & all
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::masks::lanes_within;
    use std::arch::x86_64::*;

    /// Output rows a tile: four independent sums of nine multiply-adds,
    /// from nine input rows.
    pub(super) const ROWS: usize = 4;

    /// The AVX-512 forward and weight gradient kernels of one dtype, in
    /// module `$module`: see [`super::rows_f32`] and
    /// [`super::weight_gradient_f32`].
    macro_rules! split_kernels {
        ($module:ident, $t:ty, $lanes:expr, $vec:ty, $mask:ty,
         $zero:ident, $maskz_load:ident, $store:ident, $fmadd:ident, $permute:ident,
         $reduce:ident, $index:ty, $load_index:ident) => {
            pub(super) mod $module {
                use super::super::super::two_rows;
                use super::super::masks::{lanes_from, lanes_within, window};
                use super::ROWS;
                use std::arch::x86_64::*;

                const LANES: usize = $lanes;

                /// Where a vector of outputs from column `at` finds its
                /// taps in any input row.
                struct Columns {
                    loads: [isize; 4],
                    masks: [$mask; 4],
                    evens: __m512i,
                    odds: __m512i,
                    nexts: __m512i,
                    even_lanes: $mask,
                    odd_lanes: $mask,
                    next_lanes: $mask,
                }

                /// The [`Columns`] of outputs `at..at + LANES` on rows
                /// `in_w` wide after `pad_left` zeros.
                #[target_feature(enable = "avx512f")]
                #[inline]
                fn columns(at: usize, pad_left: usize, in_w: usize) -> Columns {
                    // Taps of the kernel row: columns `s + 2·lane`, `s +
                    // 2·lane + 1` (both from the loads at `base`) and `s +
                    // 2·lane + 2` (from those at `base_next`) of an input row.
                    let s = (2 * at) as isize - pad_left as isize;
                    let (base, shift) = window(s);
                    let (base_next, shift_next) = window(s + 2);
                    let loads = [
                        base,
                        base + LANES as isize,
                        base_next,
                        base_next + LANES as isize,
                    ];
                    let masks = loads.map(|l| lanes_within(l, in_w, LANES) as $mask);
                    let mut even_index = [0 as $index; LANES];
                    let mut odd_index = [0 as $index; LANES];
                    let mut next_index = [0 as $index; LANES];
                    for l in 0..LANES {
                        even_index[l] = (2 * l as isize + shift) as $index;
                        odd_index[l] = (2 * l as isize + 1 + shift) as $index;
                        next_index[l] = (2 * l as isize + shift_next) as $index;
                    }
                    // SAFETY: each reads one vector of its array.
                    let (evens, odds, nexts) = unsafe {
                        (
                            $load_index(even_index.as_ptr()),
                            $load_index(odd_index.as_ptr()),
                            $load_index(next_index.as_ptr()),
                        )
                    };
                    // Lane `l` takes element `2·l + shift` (or one more) of
                    // its loads: a zero where that lies left of column 0.
                    Columns {
                        loads,
                        masks,
                        evens,
                        odds,
                        nexts,
                        even_lanes: lanes_from(((1 - shift) / 2) as u32, LANES as u32) as $mask,
                        odd_lanes: lanes_from((-shift / 2) as u32, LANES as u32) as $mask,
                        next_lanes: lanes_from(((1 - shift_next) / 2) as u32, LANES as u32)
                            as $mask,
                    }
                }

                /// The three taps of a kernel row (`even`, `odd`, `next`)
                /// for the outputs of `c` from input row `line`.
                ///
                /// # Safety
                /// `line` must be valid for reads of the row's `in_w`
                /// columns, the `in_w` that made `c`.
                #[target_feature(enable = "avx512f")]
                #[inline]
                unsafe fn taps(line: *const $t, c: &Columns) -> [$vec; 3] {
                    // SAFETY: each load reads only the lanes its mask
                    // keeps, which lie in columns `0..in_w` of the row.
                    let [a, b, c2, d] = unsafe {
                        [
                            $maskz_load(c.masks[0], line.wrapping_offset(c.loads[0])),
                            $maskz_load(c.masks[1], line.wrapping_offset(c.loads[1])),
                            $maskz_load(c.masks[2], line.wrapping_offset(c.loads[2])),
                            $maskz_load(c.masks[3], line.wrapping_offset(c.loads[3])),
                        ]
                    };
                    [
                        $permute(c.even_lanes, a, c.evens, b),
                        $permute(c.odd_lanes, a, c.odds, b),
                        $permute(c.next_lanes, c2, c.nexts, d),
                    ]
                }

                /// The forward kernel: see [`super::super::rows_f32`].
                ///
                /// # Safety
                /// The CPU must have AVX-512 F; `input` valid for `channels
                /// · in_h · in_w` reads, `taps` for `9 · channels`, `bias`
                /// null or valid for `channels`, and `out` for `channels ·
                /// count · out_w` writes.
                #[target_feature(enable = "avx512f")]
                pub(in super::super) unsafe fn rows(
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
                    if two_rows::fits(in_w, out_w, LANES) {
                        let raw = (input, in_h, in_w, (pad_top, pad_left));
                        let (filters, rows) = ((taps, bias, channels), (first_row, count, out_w));
                        // SAFETY: as this function's, on planes that fit.
                        return unsafe {
                            two_rows::avx512::$module::rows::<2>(raw, filters, rows, out)
                        };
                    }
                    let plane = |channel: usize| {
                        (
                            input.wrapping_add(channel * in_h * in_w),
                            (in_h, in_w, pad_top),
                        )
                    };
                    // Column vectors of outputs, the last shifted back to
                    // end on the row (a few outputs computed twice, stored
                    // with the same value); a row narrower than a vector
                    // is one vector whose lanes past the row are not
                    // stored. Each vector's columns serve every channel.
                    let stored = lanes_within(0, out_w, LANES) as $mask;
                    let mut left = 0;
                    while left < out_w {
                        let at = left.min(out_w.saturating_sub(LANES));
                        let columns = columns(at, pad_left, in_w);
                        for channel in 0..channels {
                            // SAFETY: channel `channel`'s, within the
                            // caller's.
                            let (w, b) =
                                unsafe { two_rows::avx512::$module::filter(taps, bias, channel) };
                            let plane = plane(channel);
                            let out = out.wrapping_add(channel * count * out_w);
                            let tiles = super::super::super::narrow_planes::row_tiles(count, ROWS);
                            for (first, height) in tiles {
                                let tile_out =
                                    (out.wrapping_add(first * out_w + at), out_w, stored);
                                // SAFETY: as this function's; the tile's
                                // rows are rows of the band, its vector
                                // within `out_w`.
                                unsafe {
                                    if height == ROWS {
                                        tile::<ROWS>(
                                            plane,
                                            (&w, b),
                                            &columns,
                                            first_row + first,
                                            tile_out,
                                        );
                                    } else {
                                        tile::<1>(
                                            plane,
                                            (&w, b),
                                            &columns,
                                            first_row + first,
                                            tile_out,
                                        );
                                    }
                                }
                            }
                        }
                        left = at + LANES;
                    }
                }

                /// `R` output rows from `row` on, one vector each, stored
                /// `out_w` apart from `out`, the lanes of `stored` alone.
                ///
                /// # Safety
                /// As [`rows`]'s, with `out` valid for the rows' vectors.
                #[target_feature(enable = "avx512f")]
                #[inline]
                unsafe fn tile<const R: usize>(
                    (input, (in_h, in_w, pad_top)): (*const $t, (usize, usize, usize)),
                    (w, bias): (&[$vec; 9], $vec),
                    c: &Columns,
                    row: usize,
                    (out, out_w, stored): (*mut $t, usize, $mask),
                ) {
                    let mut acc = [bias; R];
                    for i in 0..2 * R + 1 {
                        let Some(ih) = (2 * row + i).checked_sub(pad_top).filter(|&ih| ih < in_h)
                        else {
                            continue;
                        };
                        // SAFETY: row `ih < in_h` of the plane.
                        let [even, odd, next] = unsafe { taps(input.wrapping_add(ih * in_w), c) };
                        for r in 0..R {
                            let Some(kh) = i.checked_sub(2 * r).filter(|&kh| kh < 3) else {
                                continue;
                            };
                            let sum = $fmadd(w[3 * kh], even, acc[r]);
                            let sum = $fmadd(w[3 * kh + 1], odd, sum);
                            acc[r] = $fmadd(w[3 * kh + 2], next, sum);
                        }
                    }
                    for (r, sums) in acc.into_iter().enumerate() {
                        // SAFETY: row `r` of the tile is one of the
                        // caller's rows, its stored lanes within `out_w`.
                        unsafe { $store(out.add(r * out_w), stored, sums) };
                    }
                }

                /// The weight gradient kernel: see
                /// [`super::super::weight_gradient_f32`]. Each tap sums
                /// its products in a vector of lanes, error row after
                /// error row, then adds up the lanes.
                ///
                /// # Safety
                /// The CPU must have AVX-512 F; `out_w ≥ 1`; `input`
                /// valid for `in_h · in_w` reads and `error` for `count ·
                /// out_w`.
                #[target_feature(enable = "avx512f")]
                pub(in super::super) unsafe fn weight_gradient(
                    (input, in_h, in_w, (pad_top, pad_left)): (
                        *const $t,
                        usize,
                        usize,
                        (usize, usize),
                    ),
                    (error, count, out_w, first): (*const $t, usize, usize, usize),
                ) -> [$t; 9] {
                    let mut acc = [$zero(); 9];
                    let mut at = 0;
                    while at < out_w {
                        let columns = columns(at, pad_left, in_w);
                        // Outputs past the row's end weigh zero.
                        let outputs = lanes_within(at as isize, out_w, LANES) as $mask;
                        for r in 0..count {
                            // SAFETY: the load reads only the lanes its
                            // mask keeps, columns `0..out_w` of error row
                            // `r < count`.
                            let dy =
                                unsafe { $maskz_load(outputs, error.wrapping_add(r * out_w + at)) };
                            for kh in 0..3 {
                                let Some(ih) = (2 * (first + r) + kh)
                                    .checked_sub(pad_top)
                                    .filter(|&ih| ih < in_h)
                                else {
                                    continue;
                                };
                                // SAFETY: row `ih < in_h` of the plane.
                                let [even, odd, next] =
                                    unsafe { taps(input.wrapping_add(ih * in_w), &columns) };
                                acc[3 * kh] = $fmadd(dy, even, acc[3 * kh]);
                                acc[3 * kh + 1] = $fmadd(dy, odd, acc[3 * kh + 1]);
                                acc[3 * kh + 2] = $fmadd(dy, next, acc[3 * kh + 2]);
                            }
                        }
                        at += LANES;
                    }
                    acc.map(|lanes| $reduce(lanes))
                }
            }
        };
    }

    split_kernels!(
        f32_kernels,
        f32,
        16,
        __m512,
        __mmask16,
        _mm512_setzero_ps,
        _mm512_maskz_loadu_ps,
        _mm512_mask_storeu_ps,
        _mm512_fmadd_ps,
        _mm512_maskz_permutex2var_ps,
        _mm512_reduce_add_ps,
        i32,
        _mm512_loadu_epi32
    );
    split_kernels!(
        f64_kernels,
        f64,
        8,
        __m512d,
        __mmask8,
        _mm512_setzero_pd,
        _mm512_maskz_loadu_pd,
        _mm512_mask_storeu_pd,
        _mm512_fmadd_pd,
        _mm512_maskz_permutex2var_pd,
        _mm512_reduce_add_pd,
        i64,
        _mm512_loadu_epi64
    );

    /// An AVX-512 input gradient kernel of one dtype: see
    /// [`super::input_gradient_rows_f32`].
    ///
    /// Input column `c` is padded column `c + left`: `2·m` (even) or `2·m +
    /// 1` (odd). Error column `m` reaches even column `2·m` through the
    /// kernel row's first tap and `2·m + 2` through its third, odd column
    /// `2·m + 1` through its second. A vector of pairs of input columns
    /// from `c` on therefore sums, for each error row that reaches its
    /// input row, the error columns from `a = ⌊(c + left − 1) / 2⌋` (`d0`)
    /// and from `a + 1` (`d1`): even columns `w0·d1 + w2·d0`, odd ones
    /// `w1·d1` where the pairs start on an even column, else `w1·d0`. The
    /// two are woven into input order by two permutes.
    macro_rules! input_gradient {
        ($name:ident, $t:ty, $lanes:expr, $vec:ty, $mask:ty,
         $set1:ident, $zero:ident, $maskz_load:ident, $mask_store:ident, $fmadd:ident,
         $permute:ident, $low:expr, $high:expr) => {
            /// # Safety
            /// The CPU must have AVX-512 F; `out_w ≥ 1`; `error` valid
            /// for `count · out_w` reads and `dx` for writes of rows
            /// `rows` of `in_w`.
            #[target_feature(enable = "avx512f")]
            pub(super) unsafe fn $name(
                (error, count, out_w, first): (*const $t, usize, usize, usize),
                taps: &[$t; 9],
                (dx, in_w, (pad_top, pad_left)): (*mut $t, usize, (usize, usize)),
                rows: std::ops::Range<usize>,
            ) {
                const LANES: usize = $lanes;
                let mut w = [$set1(0.0); 9];
                for t in 0..9 {
                    w[t] = $set1(taps[t]);
                }
                let (low, high) = ($low, $high);
                // Padded rows `2·i` and `2·i + 1` take error row `i` through
                // kernel rows 0 and 1, and row `2·i + 2` through kernel row
                // 2: a vector of columns walks down the error rows, each
                // loaded once and kept for the next pair of input rows.
                let padded = rows.start + pad_top..rows.end + pad_top;
                let mut c = 0;
                while c < in_w {
                    let column = (c + pad_left) as isize;
                    let a = (column - 1).div_euclid(2);
                    let starts_even = column % 2 == 0;
                    let masks = [
                        lanes_within(a, out_w, LANES) as $mask,
                        lanes_within(a + 1, out_w, LANES) as $mask,
                    ];
                    let stores = [
                        lanes_within(c as isize, in_w, LANES) as $mask,
                        lanes_within((c + LANES) as isize, in_w, LANES) as $mask,
                    ];
                    // Error row `i`'s columns from `a` and `a + 1`, where
                    // the band holds it.
                    let load = |i: usize| -> Option<($vec, $vec)> {
                        let row = i.checked_sub(first).filter(|&r| r < count)?;
                        let from = error.wrapping_add(row * out_w);
                        // SAFETY: each load reads only the lanes its mask
                        // keeps, columns `0..out_w` of error row `row <
                        // count`.
                        Some(unsafe {
                            (
                                $maskz_load(masks[0], from.wrapping_offset(a)),
                                $maskz_load(masks[1], from.wrapping_offset(a + 1)),
                            )
                        })
                    };
                    // One input row's vectors: the sums of its kernel rows'
                    // taps `(w0, w1, w2)` times their error rows, woven
                    // and stored.
                    let row_out = |p: usize, sums: [Option<(&[$vec], ($vec, $vec))>; 2]| {
                        let (mut even, mut odd) = ($zero(), $zero());
                        for (w, (d0, d1)) in sums.into_iter().flatten() {
                            even = $fmadd(w[0], d1, even);
                            even = $fmadd(w[2], d0, even);
                            odd = $fmadd(w[1], if starts_even { d1 } else { d0 }, odd);
                        }
                        let (first_runs, second_runs) = if starts_even {
                            (even, odd)
                        } else {
                            (odd, even)
                        };
                        let line = dx.wrapping_add((p - pad_top) * in_w);
                        // SAFETY: each store writes only the lanes its
                        // mask keeps, columns `0..in_w` of row `p −
                        // pad_top`, one of `rows`.
                        unsafe {
                            $mask_store(
                                line.wrapping_add(c),
                                stores[0],
                                $permute(first_runs, low, second_runs),
                            );
                            $mask_store(
                                line.wrapping_add(c + LANES),
                                stores[1],
                                $permute(first_runs, high, second_runs),
                            );
                        }
                    };
                    if !padded.is_empty() {
                        let mut previous = (padded.start / 2).checked_sub(1).and_then(load);
                        for i in padded.start / 2..=(padded.end - 1) / 2 {
                            let current = load(i);
                            if padded.contains(&(2 * i)) {
                                let [top, bottom] = [
                                    current.map(|d| (&w[0..3], d)),
                                    previous.map(|d| (&w[6..9], d)),
                                ];
                                row_out(2 * i, [top, bottom]);
                            }
                            if padded.contains(&(2 * i + 1)) {
                                row_out(2 * i + 1, [current.map(|d| (&w[3..6], d)), None]);
                            }
                            previous = current;
                        }
                    }
                    c += 2 * LANES;
                }
            }
        };
    }

    input_gradient!(
        input_gradient_f32,
        f32,
        16,
        __m512,
        __mmask16,
        _mm512_set1_ps,
        _mm512_setzero_ps,
        _mm512_maskz_loadu_ps,
        _mm512_mask_storeu_ps,
        _mm512_fmadd_ps,
        _mm512_permutex2var_ps,
        _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23),
        _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31)
    );
    input_gradient!(
        input_gradient_f64,
        f64,
        8,
        __m512d,
        __mmask8,
        _mm512_set1_pd,
        _mm512_setzero_pd,
        _mm512_maskz_loadu_pd,
        _mm512_mask_storeu_pd,
        _mm512_fmadd_pd,
        _mm512_permutex2var_pd,
        _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11),
        _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15)
    );
}

#[cfg(test)]
pub(super) mod tests {
    use super::{
        Error, Filters, GradientPlane, Plane, Planes, input_gradient_rows_f32,
        input_gradient_rows_f64, rows_f32, rows_f64, weight_gradient_f32, weight_gradient_f64,
    };
    use num_traits::Float;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    use std::fmt::Debug;
    use std::ops::Range;

    /// A random plane of a 3x3 layer at stride `stride`, at most `max_w`
    /// wide: its input size, its padding at the top and left, and its
    /// output size (`None` where the padded plane is smaller than a
    /// window).
    pub(in super::super) fn random_plane(
        rng: &mut StdRng,
        max_w: usize,
        stride: usize,
    ) -> Option<[(usize, usize); 3]> {
        let (in_h, in_w) = (rng.random_range(1..=12), rng.random_range(1..=max_w));
        let pad = (rng.random_range(0..=3), rng.random_range(0..=3));
        let (bottom, right) = (rng.random_range(0..=3usize), rng.random_range(0..=3usize));
        let out = |len: usize| len.checked_sub(3).map(|d| d / stride + 1);
        let size = (out(in_h + pad.0 + bottom)?, out(in_w + pad.1 + right)?);
        Some([(in_h, in_w), pad, size])
    }

    /// [`rows_f32`] or [`rows_f64`].
    type Rows<T> = fn(Planes<'_, T>, Filters<'_, T>, Range<usize>, usize, &mut [T]) -> bool;

    /// Output rows `rows` of the layer, output by output: bias, then the
    /// taps row by row, each a fused multiply-add, in the kernel's order.
    fn reference<T: Float>(
        (input, in_w, (top, left)): Plane<'_, T>,
        (taps, bias): (&[T], T),
        rows: Range<usize>,
        out_w: usize,
    ) -> Vec<T> {
        let in_h = input.len() / in_w;
        let at = |r: usize, c: usize| {
            let (r, c) = (r.checked_sub(top), c.checked_sub(left));
            match (r, c) {
                (Some(r), Some(c)) if r < in_h && c < in_w => input[r * in_w + c],
                _ => T::zero(),
            }
        };
        let mut out = Vec::new();
        for oh in rows {
            for ow in 0..out_w {
                let mut sum = bias;
                for kh in 0..3 {
                    for kw in 0..3 {
                        sum = taps[3 * kh + kw].mul_add(at(2 * oh + kh, 2 * ow + kw), sum);
                    }
                }
                out.push(sum);
            }
        }
        out
    }

    /// `rows` on random channels, planes (half of them narrow enough to
    /// pair their rows up), paddings, widths and bands, with and without
    /// biases: the same bits as [`reference`] wherever it computes, nothing
    /// stored past the output, and nothing written where it declines (on a
    /// CPU without a kernel of the type).
    fn check<T: Float + Debug>(rows: Rows<T>, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let value = |rng: &mut StdRng| T::from(rng.random_range(-1.0..1.0)).expect("a value");
        for _ in 0..400 {
            let channels: usize = rng.random_range(1..=3);
            let max_w = if rng.random_bool(0.5) { 17 } else { 75 };
            let Some([(in_h, in_w), pad, (out_h, out_w)]) = random_plane(&mut rng, max_w, 2) else {
                continue;
            };
            let first = rng.random_range(0..out_h);
            let band = first..rng.random_range(first + 1..=out_h);
            let plane_len = in_h * in_w;
            let input: Vec<T> = (0..channels * plane_len).map(|_| value(&mut rng)).collect();
            let taps: Vec<T> = (0..9 * channels).map(|_| value(&mut rng)).collect();
            let bias: Option<Vec<T>> = rng
                .random_bool(0.5)
                .then(|| (0..channels).map(|_| value(&mut rng)).collect());
            let unset = T::from(99).expect("a value");
            let out_len = band.len() * out_w;
            // A row past the output, to catch a store past its end.
            let mut out = vec![unset; (channels * band.len() + 1) * out_w];
            let (out, past) = out.split_at_mut(channels * out_len);
            let filters = (&taps[..], bias.as_deref());
            let done = rows((&input, in_w, pad), filters, band.clone(), out_w, out);
            assert!(past.iter().all(|&v| v == unset), "stored past the output");
            if done {
                for ch in 0..channels {
                    let plane = (&input[ch * plane_len..(ch + 1) * plane_len], in_w, pad);
                    let b = bias.as_ref().map_or(T::zero(), |b| b[ch]);
                    let filter = (&taps[9 * ch..9 * ch + 9], b);
                    let expected = reference(plane, filter, band.clone(), out_w);
                    assert_eq!(
                        out[ch * out_len..(ch + 1) * out_len],
                        expected,
                        "{in_h}x{in_w} to {out_h}x{out_w}, padding {pad:?}, rows {band:?}, channel {ch}"
                    );
                }
            } else {
                assert!(
                    out.iter().all(|&v| v == unset),
                    "{in_h}x{in_w}: declined but wrote"
                );
            }
        }
    }

    /// The load masks, which alone keep the kernel's loads within the
    /// input (AddressSanitizer does not see masked loads): lane `l` set
    /// exactly where column `at + l` lies in the row.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn load_masks_keep_to_the_row() {
        use super::masks::lanes_within;
        for lanes in [8, 16] {
            for at in -40..80isize {
                for len in 0..70usize {
                    let mask = lanes_within(at, len, lanes);
                    for l in 0..32 {
                        let column = at + l as isize;
                        let inside = l < lanes && column >= 0 && (column as usize) < len;
                        assert_eq!(mask >> l & 1 == 1, inside, "{at} {len} {lanes} lane {l}");
                    }
                }
            }
        }
    }

    #[test]
    fn split_in_registers_gives_the_bits_of_the_taps_in_order() {
        check::<f32>(rows_f32, 1);
        check::<f64>(rows_f64, 2);
    }

    /// [`input_gradient_rows_f32`] or [`input_gradient_rows_f64`].
    type InputGradientRows<T> =
        fn(Error<'_, T>, &[T; 9], GradientPlane<'_, T>, Range<usize>) -> bool;

    /// Input gradient element `(ih, c)` of error rows `first..` (`error`,
    /// `out_w` wide), in the kernel's order: for each kernel row, the taps
    /// that reach it, each a fused multiply-add.
    fn gradient_at<T: Float>(
        (error, out_w, first): Error<'_, T>,
        taps: &[T; 9],
        (top, left): (usize, usize),
        (ih, c): (usize, usize),
    ) -> T {
        let count = error.len() / out_w;
        let dy = |row: usize, m: Option<usize>| match m {
            Some(m) if m < out_w => error[row * out_w + m],
            _ => T::zero(),
        };
        let (p, q) = (ih + top, c + left);
        let mut sum = T::zero();
        for kh in 0..3 {
            let Some(row) = p
                .checked_sub(kh)
                .filter(|p| p % 2 == 0)
                .and_then(|p| (p / 2).checked_sub(first))
                .filter(|&r| r < count)
            else {
                continue;
            };
            if q % 2 == 0 {
                sum = taps[3 * kh].mul_add(dy(row, Some(q / 2)), sum);
                sum = taps[3 * kh + 2].mul_add(dy(row, (q / 2).checked_sub(1)), sum);
            } else {
                sum = taps[3 * kh + 1].mul_add(dy(row, Some(q / 2)), sum);
            }
        }
        sum
    }

    /// The input gradient kernel on random planes, paddings, bands of
    /// error rows and rows to write: the bits of [`gradient_at`] in the
    /// rows it writes, the other rows untouched, and nothing written where
    /// it declines.
    fn check_input_gradient<T: Float + Debug>(kernel: InputGradientRows<T>, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let value = |rng: &mut StdRng| T::from(rng.random_range(-1.0..1.0)).expect("a value");
        for _ in 0..300 {
            let Some([(in_h, in_w), pad, (out_h, out_w)]) = random_plane(&mut rng, 75, 2) else {
                continue;
            };
            let first = rng.random_range(0..out_h);
            let count = rng.random_range(1..=out_h - first);
            let error: Vec<T> = (0..count * out_w).map(|_| value(&mut rng)).collect();
            let taps: [T; 9] = std::array::from_fn(|_| value(&mut rng));
            let start = rng.random_range(0..=in_h);
            let rows = start..rng.random_range(start..=in_h);
            let unset = T::from(99).expect("a value");
            let mut dx = vec![unset; in_h * in_w];
            let band = (&error[..], out_w, first);
            if kernel(band, &taps, (&mut dx, in_w, pad), rows.clone()) {
                for ih in 0..in_h {
                    for c in 0..in_w {
                        let expected = if rows.contains(&ih) {
                            gradient_at(band, &taps, pad, (ih, c))
                        } else {
                            unset
                        };
                        assert_eq!(
                            dx[ih * in_w + c],
                            expected,
                            "{in_h}x{in_w}, padding {pad:?}, error rows {first}+{count}, at ({ih}, {c})"
                        );
                    }
                }
            } else {
                assert!(
                    dx.iter().all(|&v| v == unset),
                    "{in_h}x{in_w}: declined but wrote"
                );
            }
        }
    }

    #[test]
    fn input_gradient_in_registers_gives_the_bits_of_the_taps_in_order() {
        check_input_gradient::<f32>(input_gradient_rows_f32, 3);
        check_input_gradient::<f64>(input_gradient_rows_f64, 4);
    }

    /// [`weight_gradient_f32`] or [`weight_gradient_f64`].
    type WeightGradient<T> = fn(Plane<'_, T>, Error<'_, T>) -> Option<[T; 9]>;

    /// The weight gradient kernel on random planes, paddings and bands of
    /// error rows, of small integers so that every order of summing gives
    /// the exact sum: each tap that sum. Returns how many it computed.
    fn check_weight_gradient<T: Float + Debug>(kernel: WeightGradient<T>, seed: u64) -> usize {
        let mut rng = StdRng::seed_from_u64(seed);
        let value = |rng: &mut StdRng| T::from(rng.random_range(-3i8..=3)).expect("a value");
        let mut computed = 0;
        for _ in 0..300 {
            let Some([(in_h, in_w), pad, (out_h, out_w)]) = random_plane(&mut rng, 75, 2) else {
                continue;
            };
            let first = rng.random_range(0..out_h);
            let count = rng.random_range(1..=out_h - first);
            let input: Vec<T> = (0..in_h * in_w).map(|_| value(&mut rng)).collect();
            let error: Vec<T> = (0..count * out_w).map(|_| value(&mut rng)).collect();
            let at = |r: usize, c: usize| match (r.checked_sub(pad.0), c.checked_sub(pad.1)) {
                (Some(r), Some(c)) if r < in_h && c < in_w => input[r * in_w + c],
                _ => T::zero(),
            };
            let Some(taps) = kernel((&input, in_w, pad), (&error, out_w, first)) else {
                continue;
            };
            computed += 1;
            for kh in 0..3 {
                for kw in 0..3 {
                    let mut sum = T::zero();
                    for r in 0..count {
                        for ow in 0..out_w {
                            sum =
                                sum + error[r * out_w + ow] * at(2 * (first + r) + kh, 2 * ow + kw);
                        }
                    }
                    assert_eq!(
                        taps[3 * kh + kw],
                        sum,
                        "{in_h}x{in_w}, padding {pad:?}, error rows {first}+{count}, tap {kh},{kw}"
                    );
                }
            }
        }
        computed
    }

    #[test]
    fn weight_gradient_in_registers_sums_every_product() {
        let computed = [
            check_weight_gradient::<f32>(weight_gradient_f32, 5),
            check_weight_gradient::<f64>(weight_gradient_f64, 6),
        ];
        #[cfg(target_arch = "x86_64")]
        {
            let avx512 = std::arch::is_x86_feature_detected!("avx512f");
            let cpu = avx512 || super::super::channel_vectors::avx2_fma();
            assert_eq!(
                computed.map(|c| c > 0),
                [cpu, avx512],
                "computed {computed:?} of 300"
            );
        }
    }

    /// The three checks above on the AVX2 kernels (`f32`), which a CPU
    /// with AVX-512 does not otherwise run.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_kernels_give_the_bits_of_the_taps_in_order() {
        use super::super::channel_vectors::avx2_fma;
        use super::super::narrow_planes::{RawRows, rows_with};
        use super::{RawInputGradient, RawWeightGradient, avx2};
        use super::{input_gradient_with, weight_gradient_with};
        if !avx2_fma() {
            return;
        }
        check::<f32>(
            |p, f, r, w, o| rows_with(p, f, r, w, o, Some(avx2::f32_kernels::rows as RawRows<_>)),
            7,
        );
        check_input_gradient::<f32>(
            |e, t, dx, r| {
                let kernel = avx2::f32_kernels::input_gradient as RawInputGradient<_>;
                input_gradient_with(e, t, dx, r, Some(kernel))
            },
            9,
        );
        let computed = check_weight_gradient::<f32>(
            |p, e| {
                let kernel = avx2::f32_kernels::weight_gradient as RawWeightGradient<_>;
                weight_gradient_with(p, e, Some(kernel))
            },
            11,
        );
        assert!(computed > 0, "computed {computed} of 300");
    }
}
