//! The forward pass of a depthwise 3x3 layer at stride 2 on one input
//! plane, with each input row split into its even and odd columns in
//! registers: per dtype, through AVX-512 permutes, reached through the
//! hidden `Element::depthwise_stride2_rows`.
//!
//! The portable kernel (`deinterleaved.rs`) first writes each plane's
//! rows split into even and odd columns to a buffer, then sums the taps
//! from it; the split and its stores took as long as the sums
//! (BENCHMARKS.md, "Split in registers"). Here a vector of outputs loads
//! the two vectors of input pairs its taps span and permutes out the three
//! taps of a kernel row (`even[j]`, `odd[j]`, `even[j + 1]`), so an input
//! row is read straight from the caller's plane and never stored again.
//! Columns outside the row (padding) come in as zeros through load and
//! permute masks, rows outside the plane are skipped, and each output's
//! nine multiply-adds run in the portable kernel's order, so both give the
//! same bits.

use std::ops::Range;

/// An input plane (`in_h × in_w`, rows contiguous one after another),
/// its row width `in_w` and the zero rows above and columns left of it.
pub(crate) type Plane<'a, T> = (&'a [T], usize, (usize, usize));

/// A channel's filter: its taps row by row, and its bias.
pub(crate) type Filter<'a, T> = (&'a [T; 9], T);

/// Output rows `rows` of the channel of `plane` and `filter` into `out`
/// (`rows.len()` rows of
/// `out_w` outputs), for `f32`. Returns whether it did: on a CPU with
/// AVX-512 F, for `out_w` of at least one vector (16). Panics if `out` or
/// the plane's input is not as described.
pub(crate) fn rows_f32(
    plane: Plane<'_, f32>,
    filter: Filter<'_, f32>,
    rows: Range<usize>,
    out_w: usize,
    out: &mut [f32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    return rows_with(plane, filter, rows, out_w, out, 16, avx512::rows_f32);
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// [`rows_f32`] for `f64`, for `out_w` of at least one vector (8).
pub(crate) fn rows_f64(
    plane: Plane<'_, f64>,
    filter: Filter<'_, f64>,
    rows: Range<usize>,
    out_w: usize,
    out: &mut [f64],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    return rows_with(plane, filter, rows, out_w, out, 8, avx512::rows_f64);
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// The raw form of a call: the input plane, its height, its width and its
/// padding (top, left); the filter and bias; the first output row, the
/// rows and their width; the output.
#[cfg(target_arch = "x86_64")]
type RawRows<T> = unsafe fn(
    (*const T, usize, usize, (usize, usize)),
    (&[T; 9], T),
    (usize, usize, usize),
    *mut T,
);

/// `kernel` (an AVX-512 kernel of `lanes` outputs a vector) on the call's
/// slices, where the CPU and the sizes allow it.
#[cfg(target_arch = "x86_64")]
fn rows_with<T>(
    (input, in_w, pad): Plane<'_, T>,
    filter: Filter<'_, T>,
    rows: Range<usize>,
    out_w: usize,
    out: &mut [T],
    lanes: usize,
    kernel: RawRows<T>,
) -> bool {
    let in_h = input.len().checked_div(in_w).unwrap_or(0);
    assert_eq!(in_h * in_w, input.len(), "whole input rows");
    assert_eq!(rows.len() * out_w, out.len(), "output rows");
    if out_w < lanes || rows.is_empty() || !std::arch::is_x86_feature_detected!("avx512f") {
        return false;
    }
    let input = (input.as_ptr(), in_h, in_w, pad);
    // SAFETY: the CPU has AVX-512 F; `out_w` fills a vector; the input
    // holds `in_h` rows of `in_w` and `out` `rows.len()` rows of `out_w`
    // (both checked above). The kernel loads only columns `0..in_w` of
    // rows `0..in_h`, and stores only `out`'s rows.
    unsafe {
        kernel(
            input,
            filter,
            (rows.start, rows.len(), out_w),
            out.as_mut_ptr(),
        )
    };
    true
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Output rows a tile: four independent sums of nine multiply-adds,
    /// from nine input rows.
    const ROWS: usize = 4;

    /// The lanes `l` of a vector of `lanes` for which `at + l` lies in
    /// `0..len`, as a mask: the part of a load at column `at` of a row
    /// `len` long that lies in the row.
    #[inline(always)]
    pub(super) fn lanes_within(at: isize, len: usize, lanes: usize) -> u32 {
        let lanes = lanes as isize;
        let len = isize::try_from(len).unwrap_or(isize::MAX);
        let first = (-at).clamp(0, lanes);
        let end = len.saturating_sub(at).clamp(0, lanes);
        lanes_from(first as u32, lanes as u32) & !lanes_from(end as u32, lanes as u32)
    }

    /// Where the loads of a run of pairs starting at column `s` (maybe
    /// left of the row) start, and the offset of column `s` from there.
    #[inline(always)]
    fn window(s: isize) -> (isize, isize) {
        let base = s.max(0);
        (base, s - base)
    }

    /// Lanes `first..lanes` as a mask.
    #[inline(always)]
    fn lanes_from(first: u32, lanes: u32) -> u32 {
        let all = (1u32 << lanes) - 1;
        (all << first.min(lanes)) & all
    }

    /// An AVX-512 kernel of one dtype: see [`super::rows_f32`].
    macro_rules! rows {
        ($name:ident, $t:ty, $lanes:expr, $vec:ty, $mask:ty,
         $set1:ident, $maskz_load:ident, $store:ident, $fmadd:ident, $permute:ident,
         $index:ty, $load_index:ident) => {
            /// # Safety
            /// The CPU must have AVX-512 F; `out_w ≥ LANES`; `input` valid
            /// for `in_h · in_w` reads and `out` for `count · out_w`
            /// writes.
            #[target_feature(enable = "avx512f")]
            pub(super) unsafe fn $name(
                (input, in_h, in_w, (pad_top, pad_left)): (*const $t, usize, usize, (usize, usize)),
                (taps, bias): (&[$t; 9], $t),
                (first_row, count, out_w): (usize, usize, usize),
                out: *mut $t,
            ) {
                const LANES: usize = $lanes;
                let mut w = [$set1(0.0); 9];
                for t in 0..9 {
                    w[t] = $set1(taps[t]);
                }
                let bias = $set1(bias);
                // Column vectors of outputs, the last shifted back to end
                // on the row (a few outputs computed twice, stored with
                // the same value).
                let mut left = 0;
                while left < out_w {
                    let at = left.min(out_w - LANES);
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
                    let even_lanes = lanes_from(((1 - shift) / 2) as u32, LANES as u32) as $mask;
                    let odd_lanes = lanes_from((-shift / 2) as u32, LANES as u32) as $mask;
                    let next_lanes =
                        lanes_from(((1 - shift_next) / 2) as u32, LANES as u32) as $mask;
                    let columns = Columns {
                        loads,
                        masks,
                        evens,
                        odds,
                        nexts,
                        even_lanes,
                        odd_lanes,
                        next_lanes,
                    };
                    // Tiles of `ROWS` rows (one row for a band of fewer),
                    // the last shifted back to end on the band.
                    let plane = (input, (in_h, in_w, pad_top));
                    let mut top = 0;
                    while top < count {
                        let first = if count >= ROWS {
                            top.min(count - ROWS)
                        } else {
                            top
                        };
                        let tile_out = (out.wrapping_add(first * out_w + at), out_w);
                        // SAFETY: as this function's; the tile's rows are
                        // rows of the band, its vector within `out_w`.
                        unsafe {
                            if count >= ROWS {
                                tile::<ROWS>(
                                    plane,
                                    (&w, bias),
                                    &columns,
                                    first_row + first,
                                    tile_out,
                                );
                                top = first + ROWS;
                            } else {
                                tile::<1>(plane, (&w, bias), &columns, first_row + first, tile_out);
                                top = first + 1;
                            }
                        }
                    }
                    left = at + LANES;
                }

                /// Where a column vector's taps come from in any input row.
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

                /// `R` output rows from `row` on, one vector each, stored
                /// `out_w` apart from `out`.
                ///
                /// # Safety
                /// As the kernel's, with `out` valid for the rows' vectors.
                #[target_feature(enable = "avx512f")]
                #[inline]
                unsafe fn tile<const R: usize>(
                    (input, (in_h, in_w, pad_top)): (*const $t, (usize, usize, usize)),
                    (w, bias): (&[$vec; 9], $vec),
                    c: &Columns,
                    row: usize,
                    (out, out_w): (*mut $t, usize),
                ) {
                    let mut acc = [bias; R];
                    for i in 0..2 * R + 1 {
                        let Some(ih) = (2 * row + i).checked_sub(pad_top).filter(|&ih| ih < in_h)
                        else {
                            continue;
                        };
                        let line = input.wrapping_add(ih * in_w);
                        // SAFETY: each load reads only the lanes its mask
                        // keeps, which lie in columns `0..in_w` of row
                        // `ih < in_h`.
                        let [a, b, c2, d] = unsafe {
                            [
                                $maskz_load(c.masks[0], line.wrapping_offset(c.loads[0])),
                                $maskz_load(c.masks[1], line.wrapping_offset(c.loads[1])),
                                $maskz_load(c.masks[2], line.wrapping_offset(c.loads[2])),
                                $maskz_load(c.masks[3], line.wrapping_offset(c.loads[3])),
                            ]
                        };
                        let even = $permute(c.even_lanes, a, c.evens, b);
                        let odd = $permute(c.odd_lanes, a, c.odds, b);
                        let next = $permute(c.next_lanes, c2, c.nexts, d);
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
                        // caller's rows, its vector within `out_w`.
                        unsafe { $store(out.add(r * out_w), sums) };
                    }
                }
            }
        };
    }

    rows!(
        rows_f32,
        f32,
        16,
        __m512,
        __mmask16,
        _mm512_set1_ps,
        _mm512_maskz_loadu_ps,
        _mm512_storeu_ps,
        _mm512_fmadd_ps,
        _mm512_maskz_permutex2var_ps,
        i32,
        _mm512_loadu_epi32
    );
    rows!(
        rows_f64,
        f64,
        8,
        __m512d,
        __mmask8,
        _mm512_set1_pd,
        _mm512_maskz_loadu_pd,
        _mm512_storeu_pd,
        _mm512_fmadd_pd,
        _mm512_maskz_permutex2var_pd,
        i64,
        _mm512_loadu_epi64
    );
}

#[cfg(test)]
mod tests {
    use super::{Filter, Plane, rows_f32, rows_f64};
    use num_traits::Float;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    use std::fmt::Debug;
    use std::ops::Range;

    /// [`rows_f32`] or [`rows_f64`].
    type Rows<T> = fn(Plane<'_, T>, Filter<'_, T>, Range<usize>, usize, &mut [T]) -> bool;

    /// Output rows `rows` of the layer, output by output: bias, then the
    /// taps row by row, each a fused multiply-add, in the kernel's order.
    fn reference<T: Float>(
        (input, in_w, (top, left)): Plane<'_, T>,
        (taps, bias): Filter<'_, T>,
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

    /// `rows` on random planes, paddings, widths and bands: the same bits
    /// as [`reference`] wherever it computes, and nothing written where it
    /// declines (on a CPU without AVX-512, or rows narrower than a vector).
    fn check<T: Float + Debug>(rows: Rows<T>, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let value = |rng: &mut StdRng| T::from(rng.random_range(-1.0..1.0)).expect("a value");
        for _ in 0..300 {
            let (in_h, in_w): (usize, usize) = (rng.random_range(1..=12), rng.random_range(1..=75));
            let pad: (usize, usize) = (rng.random_range(0..=3), rng.random_range(0..=3));
            let (bottom, right): (usize, usize) =
                (rng.random_range(0..=3), rng.random_range(0..=3));
            let out_h = (in_h + pad.0 + bottom).saturating_sub(3) / 2 + 1;
            let out_w = (in_w + pad.1 + right).saturating_sub(3) / 2 + 1;
            let first = rng.random_range(0..out_h);
            let band = first..rng.random_range(first + 1..=out_h);
            let input: Vec<T> = (0..in_h * in_w).map(|_| value(&mut rng)).collect();
            let taps: [T; 9] = std::array::from_fn(|_| value(&mut rng));
            let filter = (&taps, value(&mut rng));
            let unset = T::from(99).expect("a value");
            let mut out = vec![unset; band.len() * out_w];
            let plane = (&input[..], in_w, pad);
            if rows(plane, filter, band.clone(), out_w, &mut out) {
                let expected = reference(plane, filter, band.clone(), out_w);
                assert_eq!(
                    out, expected,
                    "{in_h}x{in_w}, padding {pad:?} and {right}, rows {band:?}"
                );
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
        use super::avx512::lanes_within;
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
}
