//! The forward pass of a depthwise 3x3 layer at unit stride on planes
//! narrower than a vector (MobileNet-v2's 14 and 7 pixels), in NCHW: per
//! dtype, through AVX-512 masked loads and stores, reached through the
//! hidden `Element::depthwise_narrow_rows`.
//!
//! The register stencils (`stencil.rs`) need a whole vector of outputs a
//! row; narrower planes went through the pixel-major kernel
//! (`depthwise.rs`), which transposes each sample into `[pixel, channel]`
//! and back, twice the plane's memory traffic for nine multiply-adds an
//! output (BENCHMARKS.md, "Narrow planes"). Here a vector holds a row of
//! outputs, its lanes past the row masked off: each tap loads its run of
//! an input row under a mask that keeps it within the row (a permute
//! shifts in the zeros of left padding), so no plane is copied, and each
//! output's nine multiply-adds run in the order of the taps.

use std::ops::Range;

/// Whether this machine runs the kernels: a CPU with AVX-512 F.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// Input planes (`channels × in_h × in_w`, one after another), their row
/// width `in_w` and the zero rows above and columns left of each.
pub(crate) type Planes<'a, T> = (&'a [T], usize, (usize, usize));

/// The channels' filters: nine taps each, row by row, one channel after
/// another; and their biases (one each, or none for zeros).
pub(crate) type Filters<'a, T> = (&'a [T], Option<&'a [T]>);

/// Output rows `rows` of each channel of `planes` and `filters` at unit
/// stride into `out` (each channel's `rows.len()` rows of `out_w` outputs,
/// one channel after another), for `f32`, in vectors of 16 outputs (the
/// last masked). Returns whether it did: where [`available`]. Panics if
/// the slices do not hold what their sizes say.
pub(crate) fn rows_f32(
    planes: Planes<'_, f32>,
    filters: Filters<'_, f32>,
    rows: Range<usize>,
    out_w: usize,
    out: &mut [f32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    return rows_with(planes, filters, rows, out_w, out, avx512::f32_rows);
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// [`rows_f32`] for `f64`, in vectors of 8 outputs.
pub(crate) fn rows_f64(
    planes: Planes<'_, f64>,
    filters: Filters<'_, f64>,
    rows: Range<usize>,
    out_w: usize,
    out: &mut [f64],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    return rows_with(planes, filters, rows, out_w, out, avx512::f64_rows);
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// The raw form of a call: the input planes, their height, width and
/// padding (top, left); the channels' taps, biases (or null) and count;
/// the first output row, the rows and their width; the output.
#[cfg(target_arch = "x86_64")]
type RawRows<T> = unsafe fn(
    (*const T, usize, usize, (usize, usize)),
    (*const T, *const T, usize),
    (usize, usize, usize),
    *mut T,
);

/// `kernel` on the call's slices, where the CPU allows it.
#[cfg(target_arch = "x86_64")]
fn rows_with<T>(
    (input, in_w, pad): Planes<'_, T>,
    (taps, bias): Filters<'_, T>,
    rows: Range<usize>,
    out_w: usize,
    out: &mut [T],
    kernel: RawRows<T>,
) -> bool {
    let channels = taps.len() / 9;
    assert_eq!(channels * 9, taps.len(), "nine taps a channel");
    assert!(
        bias.is_none_or(|b| b.len() == channels),
        "one bias a channel"
    );
    let in_h = input.len().checked_div(channels * in_w).unwrap_or(0);
    assert_eq!(channels * in_h * in_w, input.len(), "whole input planes");
    assert_eq!(channels * rows.len() * out_w, out.len(), "output rows");
    if !available() {
        return false;
    }
    let bias = bias.map_or(std::ptr::null(), <[T]>::as_ptr);
    // SAFETY: the CPU has AVX-512 F; the input holds `channels` planes of
    // `in_h` rows of `in_w`, the taps nine a channel, the biases (if any)
    // one a channel, and `out` `channels` runs of `rows.len()` rows of
    // `out_w` (all checked above). The kernel loads only columns `0..in_w`
    // of rows `0..in_h` of each plane, and stores only columns `0..out_w`
    // of `out`'s rows.
    unsafe {
        kernel(
            (input.as_ptr(), in_h, in_w, pad),
            (taps.as_ptr(), bias, channels),
            (rows.start, rows.len(), out_w),
            out.as_mut_ptr(),
        )
    };
    true
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::super::split_in_registers::masks::{lanes_from, lanes_within, window};
    use std::arch::x86_64::*;

    /// Output rows a tile: four independent sums of nine multiply-adds,
    /// from six input rows.
    const ROWS: usize = 4;

    /// The AVX-512 kernel of one dtype: see [`super::rows_f32`].
    macro_rules! narrow_rows {
        ($name:ident, $t:ty, $lanes:expr, $vec:ty, $mask:ty, $set1:ident,
         $maskz_load:ident, $mask_store:ident, $fmadd:ident, $permute:ident,
         $index:ty, $load_index:ident) => {
            /// # Safety
            /// The CPU must have AVX-512 F; `input` valid for `channels ·
            /// in_h · in_w` reads, `taps` for `9 · channels`, `bias` null
            /// or valid for `channels`, and `out` for `channels · count ·
            /// out_w` writes.
            #[target_feature(enable = "avx512f")]
            pub(super) unsafe fn $name(
                (input, in_h, in_w, (pad_top, pad_left)): (*const $t, usize, usize, (usize, usize)),
                (taps, bias, channels): (*const $t, *const $t, usize),
                (first_row, count, out_w): (usize, usize, usize),
                out: *mut $t,
            ) {
                const LANES: usize = $lanes;

                /// Where a vector of outputs finds its three taps' runs in
                /// any input row: for each, the load's start and mask, and,
                /// where the run starts left of the row, the permute that
                /// shifts the zeros of the padding in.
                struct Runs {
                    loads: [isize; 3],
                    masks: [$mask; 3],
                    shifts: [Option<(__m512i, $mask)>; 3],
                }

                /// `R` output rows from `row` on, one vector each, stored
                /// under `stored` `out_w` apart from `out`.
                ///
                /// # Safety
                /// As the kernel's, with `out` valid for the rows' kept
                /// lanes.
                #[target_feature(enable = "avx512f")]
                #[inline]
                unsafe fn tile<const R: usize>(
                    (input, (in_h, in_w, pad_top)): (*const $t, (usize, usize, usize)),
                    (w, bias): (&[$vec; 9], $vec),
                    runs: &Runs,
                    row: usize,
                    (out, out_w, stored): (*mut $t, usize, $mask),
                ) {
                    let mut acc = [bias; R];
                    for i in 0..R + 2 {
                        let Some(ih) = (row + i).checked_sub(pad_top).filter(|&ih| ih < in_h)
                        else {
                            continue;
                        };
                        let line = input.wrapping_add(ih * in_w);
                        let mut taps = [acc[0]; 3];
                        for kw in 0..3 {
                            // SAFETY: the load reads only the lanes its
                            // mask keeps, columns `0..in_w` of row `ih <
                            // in_h`.
                            let run = unsafe {
                                $maskz_load(runs.masks[kw], line.wrapping_offset(runs.loads[kw]))
                            };
                            taps[kw] = match runs.shifts[kw] {
                                Some((index, lanes)) => $permute(lanes, index, run),
                                None => run,
                            };
                        }
                        for r in 0..R {
                            let Some(kh) = i.checked_sub(r).filter(|&kh| kh < 3) else {
                                continue;
                            };
                            let sum = $fmadd(w[3 * kh], taps[0], acc[r]);
                            let sum = $fmadd(w[3 * kh + 1], taps[1], sum);
                            acc[r] = $fmadd(w[3 * kh + 2], taps[2], sum);
                        }
                    }
                    for (r, sums) in acc.into_iter().enumerate() {
                        // SAFETY: row `r` of the tile is one of the
                        // caller's rows; the mask keeps its columns within
                        // `out_w`.
                        unsafe { $mask_store(out.wrapping_add(r * out_w), stored, sums) };
                    }
                }

                let mut at = 0;
                while at < out_w {
                    let stored = lanes_within(at as isize, out_w, LANES) as $mask;
                    let mut runs = Runs {
                        loads: [0; 3],
                        masks: [0; 3],
                        shifts: [None; 3],
                    };
                    for kw in 0..3 {
                        // Tap `kw` of output `at + l` reads column `s + l`.
                        let (base, shift) = window((at + kw) as isize - pad_left as isize);
                        runs.loads[kw] = base;
                        runs.masks[kw] = lanes_within(base, in_w, LANES) as $mask;
                        if shift < 0 {
                            let mut index = [0 as $index; LANES];
                            for (l, i) in index.iter_mut().enumerate() {
                                *i = (l as isize + shift) as $index;
                            }
                            // SAFETY: reads one vector of the array.
                            let index = unsafe { $load_index(index.as_ptr()) };
                            let lanes = lanes_from((-shift) as u32, LANES as u32) as $mask;
                            runs.shifts[kw] = Some((index, lanes));
                        }
                    }
                    for channel in 0..channels {
                        let mut w = [$set1(0.0); 9];
                        for t in 0..9 {
                            // SAFETY: tap `t` of channel `channel`, within
                            // the `9 · channels` taps.
                            w[t] = $set1(unsafe { *taps.add(9 * channel + t) });
                        }
                        let bias = if bias.is_null() {
                            $set1(0.0)
                        } else {
                            // SAFETY: a non-null `bias` holds one a channel.
                            $set1(unsafe { *bias.add(channel) })
                        };
                        let plane = (
                            input.wrapping_add(channel * in_h * in_w),
                            (in_h, in_w, pad_top),
                        );
                        let out = out.wrapping_add(channel * count * out_w);
                        // Tiles of `ROWS` rows (one row for fewer), the last
                        // shifted back to end on the rows.
                        let mut top = 0;
                        while top < count {
                            let first = if count >= ROWS {
                                top.min(count - ROWS)
                            } else {
                                top
                            };
                            let tile_out = (out.wrapping_add(first * out_w + at), out_w, stored);
                            // SAFETY: as this function's; the tile's rows are
                            // the caller's, its lanes kept within `out_w`.
                            unsafe {
                                if count >= ROWS {
                                    tile::<ROWS>(
                                        plane,
                                        (&w, bias),
                                        &runs,
                                        first_row + first,
                                        tile_out,
                                    );
                                    top = first + ROWS;
                                } else {
                                    tile::<1>(
                                        plane,
                                        (&w, bias),
                                        &runs,
                                        first_row + first,
                                        tile_out,
                                    );
                                    top = first + 1;
                                }
                            }
                        }
                    }
                    at += LANES;
                }
            }
        };
    }

    narrow_rows!(
        f32_rows,
        f32,
        16,
        __m512,
        __mmask16,
        _mm512_set1_ps,
        _mm512_maskz_loadu_ps,
        _mm512_mask_storeu_ps,
        _mm512_fmadd_ps,
        _mm512_maskz_permutexvar_ps,
        i32,
        _mm512_loadu_epi32
    );
    narrow_rows!(
        f64_rows,
        f64,
        8,
        __m512d,
        __mmask8,
        _mm512_set1_pd,
        _mm512_maskz_loadu_pd,
        _mm512_mask_storeu_pd,
        _mm512_fmadd_pd,
        _mm512_maskz_permutexvar_pd,
        i64,
        _mm512_loadu_epi64
    );
}

#[cfg(test)]
mod tests {
    use super::{Filters, Planes, available, rows_f32, rows_f64};
    use num_traits::Float;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    use std::fmt::Debug;
    use std::ops::Range;

    /// [`rows_f32`] or [`rows_f64`].
    type Rows<T> = fn(Planes<'_, T>, Filters<'_, T>, Range<usize>, usize, &mut [T]) -> bool;

    /// `rows` on random blocks of channels, planes, paddings and bands of
    /// rows, with biases or without: the bits of the bias then the nine
    /// taps in order, each a fused multiply-add.
    fn check<T: Float + Debug>(rows: Rows<T>, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let value = |rng: &mut StdRng| T::from(rng.random_range(-1.0..1.0)).expect("a value");
        for _ in 0..300 {
            let channels: usize = rng.random_range(1..=4);
            let (in_h, in_w): (usize, usize) = (rng.random_range(1..=12), rng.random_range(1..=40));
            let (top, left): (usize, usize) = (rng.random_range(0..=3), rng.random_range(0..=3));
            let (bottom, right): (usize, usize) =
                (rng.random_range(0..=3), rng.random_range(0..=3));
            let (out_h, out_w) = (
                (in_h + top + bottom).saturating_sub(2),
                (in_w + left + right).saturating_sub(2),
            );
            if out_h == 0 || out_w == 0 {
                continue;
            }
            let first = rng.random_range(0..out_h);
            let band = first..rng.random_range(first + 1..=out_h);
            let input: Vec<T> = (0..channels * in_h * in_w)
                .map(|_| value(&mut rng))
                .collect();
            let taps: Vec<T> = (0..9 * channels).map(|_| value(&mut rng)).collect();
            let bias: Option<Vec<T>> = rng
                .random_bool(0.5)
                .then(|| (0..channels).map(|_| value(&mut rng)).collect());
            let unset = T::from(99).expect("a value");
            let mut out = vec![unset; channels * band.len() * out_w];
            let filters = (&taps[..], bias.as_deref());
            let done = rows(
                (&input, in_w, (top, left)),
                filters,
                band.clone(),
                out_w,
                &mut out,
            );
            assert_eq!(done, available());
            if !done {
                assert!(out.iter().all(|&v| v == unset), "declined but wrote");
                continue;
            }
            for ch in 0..channels {
                let at = |r: usize, c: usize| match (r.checked_sub(top), c.checked_sub(left)) {
                    (Some(r), Some(c)) if r < in_h && c < in_w => input[(ch * in_h + r) * in_w + c],
                    _ => T::zero(),
                };
                for (r, oh) in band.clone().enumerate() {
                    for ow in 0..out_w {
                        let mut sum = bias.as_ref().map_or(T::zero(), |b| b[ch]);
                        for kh in 0..3 {
                            for kw in 0..3 {
                                sum = taps[9 * ch + 3 * kh + kw].mul_add(at(oh + kh, ow + kw), sum);
                            }
                        }
                        let got = out[(ch * band.len() + r) * out_w + ow];
                        assert_eq!(
                            got, sum,
                            "{in_h}x{in_w}, padding {top},{left}, rows {band:?}, channel {ch} at ({oh}, {ow})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn narrow_rows_give_the_bits_of_the_taps_in_order() {
        check::<f32>(rows_f32, 7);
        check::<f64>(rows_f64, 8);
    }
}
