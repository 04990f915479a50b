//! Depthwise 3x3 layers at unit stride on planes narrower than a vector
//! (MobileNet-v2's 14 and 7 pixels), in NCHW: the forward pass and the
//! weight gradient per dtype, through AVX-512 masked loads and stores,
//! reached through the hidden `Element::depthwise_narrow_rows` and
//! `Element::depthwise_narrow_weight_gradient`. The input gradient is the
//! forward pass over the error with each filter turned half a turn.
//!
//! The register stencils (`stencil.rs`) need a whole vector of outputs a
//! row; narrower planes went through the pixel-major kernel
//! (`depthwise.rs`), which transposes each sample into `[pixel, channel]`
//! and back, twice the plane's memory traffic for nine multiply-adds an
//! output (BENCHMARKS.md, "Narrow planes"). Here a vector holds a row of
//! outputs, its lanes past the row masked off: each tap loads its run of
//! an input row under a mask that keeps it within the row (a permute
//! shifts in the zeros of left padding), so no plane is copied. Each
//! output's nine multiply-adds run in the order of the taps; each weight
//! gradient tap sums a vector of lanes, then the lanes. Planes whose output
//! rows fit in half a vector go to `two_rows.rs`.

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
    {
        let kernel = available().then_some(avx512::f32_kernels::rows as RawRows<f32>);
        rows_with(planes, filters, rows, out_w, out, kernel)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
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
    {
        let kernel = available().then_some(avx512::f64_kernels::rows as RawRows<f64>);
        rows_with(planes, filters, rows, out_w, out, kernel)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The weight gradients of channels' nine taps over their input planes
/// (`planes`: `channels × in_h × in_w`, their row width and padding) and
/// their errors (`errors`: `channels × out_h × out_w` and the row width) at
/// unit stride, for `f32`, added into `taps` (`[tap, channel]`, nine
/// times `channels`): each tap's products summed a vector of lanes at a
/// time, then across the lanes. Returns whether it did: where
/// [`available`]. Panics if the slices do not hold what their sizes say.
pub(crate) fn weight_gradient_f32(
    planes: Planes<'_, f32>,
    errors: (&[f32], usize),
    taps: &mut [f32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    return weight_gradient_with(planes, errors, taps, avx512::f32_kernels::weight_gradient);
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// [`weight_gradient_f32`] for `f64`.
pub(crate) fn weight_gradient_f64(
    planes: Planes<'_, f64>,
    errors: (&[f64], usize),
    taps: &mut [f64],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    return weight_gradient_with(planes, errors, taps, avx512::f64_kernels::weight_gradient);
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// The raw form of a weight gradient call: the input planes, their
/// height, width and padding (top, left); the errors, their height and
/// width; the channels and their taps.
#[cfg(target_arch = "x86_64")]
type RawWeightGradient<T> =
    unsafe fn((*const T, usize, usize, (usize, usize)), (*const T, usize, usize), (usize, *mut T));

/// `kernel` on the call's slices, where the CPU allows it.
#[cfg(target_arch = "x86_64")]
fn weight_gradient_with<T>(
    (input, in_w, pad): Planes<'_, T>,
    (errors, out_w): (&[T], usize),
    taps: &mut [T],
    kernel: RawWeightGradient<T>,
) -> bool {
    let channels = taps.len() / 9;
    assert_eq!(channels * 9, taps.len(), "nine taps a channel");
    let in_h = input.len().checked_div(channels * in_w).unwrap_or(0);
    assert_eq!(channels * in_h * in_w, input.len(), "whole input planes");
    let out_h = errors.len().checked_div(channels * out_w).unwrap_or(0);
    assert_eq!(channels * out_h * out_w, errors.len(), "whole error planes");
    if !available() {
        return false;
    }
    // SAFETY: the CPU has AVX-512 F; the input holds `channels` planes of
    // `in_h` rows of `in_w`, the errors `channels` planes of `out_h` rows
    // of `out_w`, and `taps` nine a channel (checked above). The kernel
    // loads only columns `0..in_w` of input rows `0..in_h` and columns
    // `0..out_w` of error rows `0..out_h` of each plane, and writes only
    // `taps`.
    unsafe {
        kernel(
            (input.as_ptr(), in_h, in_w, pad),
            (errors.as_ptr(), out_h, out_w),
            (channels, taps.as_mut_ptr()),
        );
    }
    true
}

/// The raw form of a call: the input planes, their height, width and
/// padding (top, left); the channels' taps, biases (or null) and count;
/// the first output row, the rows and their width; the output.
#[cfg(target_arch = "x86_64")]
pub(super) type RawRows<T> = unsafe fn(
    (*const T, usize, usize, (usize, usize)),
    (*const T, *const T, usize),
    (usize, usize, usize),
    *mut T,
);

/// `kernel` (a forward kernel the CPU runs, of this file or of
/// `split_in_registers.rs`, if any) on the call's slices.
#[cfg(target_arch = "x86_64")]
pub(super) fn rows_with<T>(
    (input, in_w, pad): Planes<'_, T>,
    (taps, bias): Filters<'_, T>,
    rows: Range<usize>,
    out_w: usize,
    out: &mut [T],
    kernel: Option<RawRows<T>>,
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
    let Some(kernel) = kernel else {
        return false;
    };
    let bias = bias.map_or(std::ptr::null(), <[T]>::as_ptr);
    // SAFETY: the CPU has the kernel's features (its callers' check:
    // [`available`], `kernel_for` or `avx512_only`); the input holds `channels` planes of
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

/// The tiles of a band of `count` output rows, `(first row, height)`:
/// tiles `rows` high, the last shifted back to end on the band (its
/// first rows computed again, to the same values), or one row high where
/// the band has fewer than `rows`. Both narrow kernels (this file's and
/// `split_in_registers.rs`') walk a band so.
#[cfg(target_arch = "x86_64")]
pub(super) fn row_tiles(count: usize, rows: usize) -> impl Iterator<Item = (usize, usize)> {
    let height = if count >= rows { rows } else { 1 };
    (0..count.div_ceil(height)).map(move |tile| ((tile * height).min(count - height), height))
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::super::split_in_registers::masks::{lanes_from, lanes_within, window};

    /// Output rows a tile: four independent sums of nine multiply-adds,
    /// from six input rows.
    const ROWS: usize = 4;

    /// The AVX-512 kernels of one dtype, in module `$module`: see
    /// [`super::rows_f32`] and [`super::weight_gradient_f32`].
    macro_rules! narrow_kernels {
        ($module:ident, $t:ty, $lanes:expr, $vec:ty, $mask:ty, $zero:ident,
         $maskz_load:ident, $mask_store:ident, $fmadd:ident, $permute:ident, $reduce:ident,
         $index:ty, $load_index:ident) => {
            pub(super) mod $module {
                use super::super::super::two_rows;
                use super::{ROWS, lanes_from, lanes_within, window};
                use std::arch::x86_64::*;

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

                /// The [`Runs`] of outputs `at..at + LANES` on rows `in_w`
                /// wide after `pad_left` zeros.
                #[target_feature(enable = "avx512f")]
                #[inline]
                fn runs(at: usize, pad_left: usize, in_w: usize) -> Runs {
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
                    runs
                }

                /// The three taps' runs of input row `line` for `runs`.
                ///
                /// # Safety
                /// `line` must be valid for reads of the row's `in_w`
                /// columns, the `in_w` that made `runs`.
                #[target_feature(enable = "avx512f")]
                #[inline]
                unsafe fn taps(line: *const $t, runs: &Runs) -> [$vec; 3] {
                    let mut taps = [$zero(); 3];
                    for kw in 0..3 {
                        // SAFETY: the load reads only the lanes its mask
                        // keeps, columns `0..in_w` of the row.
                        let run = unsafe {
                            $maskz_load(runs.masks[kw], line.wrapping_offset(runs.loads[kw]))
                        };
                        taps[kw] = match runs.shifts[kw] {
                            Some((index, lanes)) => $permute(lanes, index, run),
                            None => run,
                        };
                    }
                    taps
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
                            two_rows::avx512::$module::rows::<1>(raw, filters, rows, out)
                        };
                    }
                    let mut at = 0;
                    while at < out_w {
                        let stored = lanes_within(at as isize, out_w, LANES) as $mask;
                        let runs = runs(at, pad_left, in_w);
                        for channel in 0..channels {
                            // SAFETY: channel `channel`'s, within the
                            // caller's.
                            let (w, b) =
                                unsafe { two_rows::avx512::$module::filter(taps, bias, channel) };
                            let plane = (
                                input.wrapping_add(channel * in_h * in_w),
                                (in_h, in_w, pad_top),
                            );
                            let out = out.wrapping_add(channel * count * out_w);
                            for (first, height) in super::super::row_tiles(count, ROWS) {
                                let tile_out =
                                    (out.wrapping_add(first * out_w + at), out_w, stored);
                                // SAFETY: as this function's; the tile's
                                // rows are the caller's, its lanes kept
                                // within `out_w`.
                                unsafe {
                                    if height == ROWS {
                                        tile::<ROWS>(
                                            plane,
                                            (&w, b),
                                            &runs,
                                            first_row + first,
                                            tile_out,
                                        );
                                    } else {
                                        tile::<1>(
                                            plane,
                                            (&w, b),
                                            &runs,
                                            first_row + first,
                                            tile_out,
                                        );
                                    }
                                }
                            }
                        }
                        at += LANES;
                    }
                }

                /// `R` output rows from `row` on, one vector each, stored
                /// under `stored` `out_w` apart from `out`.
                ///
                /// # Safety
                /// As [`rows`]'s, with `out` valid for the rows' kept lanes.
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
                        // SAFETY: row `ih < in_h` of the plane.
                        let taps = unsafe { taps(input.wrapping_add(ih * in_w), runs) };
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

                /// The weight gradient kernel: see
                /// [`super::super::weight_gradient_f32`]. Each tap sums its
                /// products in a vector of lanes, error row after error
                /// row, then adds up the lanes; the loop runs over input
                /// rows, each row's three runs loaded once for the three
                /// kernel rows that read them (BENCHMARKS.md, "Narrow
                /// planes").
                ///
                /// Each channel's nine sums are added into `taps[tap ·
                /// channels + channel]`.
                ///
                /// # Safety
                /// The CPU must have AVX-512 F; `input` valid for
                /// `channels · in_h · in_w` reads, `error` for `channels ·
                /// out_h · out_w` and `taps` for `9 · channels` reads and
                /// writes.
                #[target_feature(enable = "avx512f")]
                pub(in super::super) unsafe fn weight_gradient(
                    (input, in_h, in_w, pad): (*const $t, usize, usize, (usize, usize)),
                    (error, out_h, out_w): (*const $t, usize, usize),
                    (channels, taps): (usize, *mut $t),
                ) {
                    for channel in 0..channels {
                        let plane = input.wrapping_add(channel * in_h * in_w);
                        let errors = error.wrapping_add(channel * out_h * out_w);
                        // SAFETY: plane `channel` of the input and of the
                        // errors, within the caller's.
                        let sums = unsafe {
                            channel_taps((plane, in_h, in_w, pad), (errors, out_h, out_w))
                        };
                        for (tap, sum) in sums.into_iter().flatten().enumerate() {
                            // SAFETY: tap `tap < 9` of channel `channel <
                            // channels`.
                            unsafe { *taps.add(tap * channels + channel) += sum };
                        }
                    }
                }

                /// One channel's nine sums for [`weight_gradient`], a
                /// kernel row an array.
                ///
                /// # Safety
                /// The CPU must have AVX-512 F; `input` valid for `in_h ·
                /// in_w` reads and `error` for `out_h · out_w`.
                #[target_feature(enable = "avx512f")]
                #[inline]
                unsafe fn channel_taps(
                    (input, in_h, in_w, (pad_top, pad_left)): (
                        *const $t,
                        usize,
                        usize,
                        (usize, usize),
                    ),
                    (error, out_h, out_w): (*const $t, usize, usize),
                ) -> [[$t; 3]; 3] {
                    // One array of three sums a kernel row, each indexed
                    // by constants only, so that the sums stay in
                    // registers.
                    let mut acc = [[$zero(); 3]; 3];
                    let mut at = 0;
                    while at < out_w {
                        let runs = runs(at, pad_left, in_w);
                        let outputs = lanes_within(at as isize, out_w, LANES) as $mask;
                        // Error row `oh < out_h` times `taps` into `sums`.
                        let add = |sums: &mut [$vec; 3], oh: usize, taps: &[$vec; 3]| {
                            if oh >= out_h {
                                return;
                            }
                            // SAFETY: the load reads only the lanes its mask
                            // keeps, columns `0..out_w` of error row
                            // `oh < out_h`.
                            let dy = unsafe {
                                $maskz_load(outputs, error.wrapping_add(oh * out_w + at))
                            };
                            for kw in 0..3 {
                                sums[kw] = $fmadd(dy, taps[kw], sums[kw]);
                            }
                        };
                        // Input row `ih` meets error row `ih + pad_top − kh`
                        // at kernel row `kh`: its three runs are loaded
                        // once for the three error rows that read them,
                        // and each tap still sums in the order of the
                        // error rows.
                        for ih in 0..in_h {
                            // SAFETY: row `ih < in_h` of the plane.
                            let taps = unsafe { taps(input.wrapping_add(ih * in_w), &runs) };
                            let [first, second, third] = &mut acc;
                            let r = ih + pad_top;
                            add(first, r, &taps);
                            if r >= 1 {
                                add(second, r - 1, &taps);
                            }
                            if r >= 2 {
                                add(third, r - 2, &taps);
                            }
                        }
                        at += LANES;
                    }
                    acc.map(|row| row.map(|lanes| $reduce(lanes)))
                }
            }
        };
    }

    narrow_kernels!(
        f32_kernels,
        f32,
        16,
        __m512,
        __mmask16,
        _mm512_setzero_ps,
        _mm512_maskz_loadu_ps,
        _mm512_mask_storeu_ps,
        _mm512_fmadd_ps,
        _mm512_maskz_permutexvar_ps,
        _mm512_reduce_add_ps,
        i32,
        _mm512_loadu_epi32
    );
    narrow_kernels!(
        f64_kernels,
        f64,
        8,
        __m512d,
        __mmask8,
        _mm512_setzero_pd,
        _mm512_maskz_loadu_pd,
        _mm512_mask_storeu_pd,
        _mm512_fmadd_pd,
        _mm512_maskz_permutexvar_pd,
        _mm512_reduce_add_pd,
        i64,
        _mm512_loadu_epi64
    );
}

#[cfg(test)]
mod tests {
    use super::super::split_in_registers::tests::random_plane;
    use super::{
        Filters, Planes, available, rows_f32, rows_f64, weight_gradient_f32, weight_gradient_f64,
    };
    use num_traits::Float;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    use std::fmt::Debug;
    use std::ops::Range;

    /// A band's tiles cover each of its rows, lie within it, are `rows`
    /// high (one where the band is lower), and start in order.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn row_tiles_cover_the_band() {
        for count in 0..20 {
            for rows in 1..6 {
                let tiles: Vec<(usize, usize)> = super::row_tiles(count, rows).collect();
                let height = if count < rows { 1 } else { rows };
                let mut covered = vec![false; count];
                for window in tiles.windows(2) {
                    assert!(window[0].0 < window[1].0, "{tiles:?}");
                }
                for &(first, tall) in &tiles {
                    assert_eq!(tall, height);
                    assert!(first + tall <= count);
                    covered[first..first + tall].fill(true);
                }
                assert!(covered.iter().all(|&c| c), "{count} rows, tiles of {rows}");
                assert_eq!(tiles.len(), count.div_ceil(height));
            }
        }
    }

    /// [`rows_f32`] or [`rows_f64`].
    type Rows<T> = fn(Planes<'_, T>, Filters<'_, T>, Range<usize>, usize, &mut [T]) -> bool;

    /// `rows` on random blocks of channels, planes, paddings and bands of
    /// rows (many narrow enough for two rows a vector), with biases or
    /// without: the bits of the bias then the nine taps in order, each a
    /// fused multiply-add, and nothing stored past the output.
    fn check<T: Float + Debug>(rows: Rows<T>, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let value = |rng: &mut StdRng| T::from(rng.random_range(-1.0..1.0)).expect("a value");
        for _ in 0..300 {
            let channels: usize = rng.random_range(1..=4);
            let Some([(in_h, in_w), (top, left), (out_h, out_w)]) = random_plane(&mut rng, 40, 1)
            else {
                continue;
            };
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
            // A row past the output, to catch a store past its end.
            let mut out = vec![unset; (channels * band.len() + 1) * out_w];
            let (out, past) = out.split_at_mut(channels * band.len() * out_w);
            let filters = (&taps[..], bias.as_deref());
            let done = rows(
                (&input, in_w, (top, left)),
                filters,
                band.clone(),
                out_w,
                out,
            );
            assert!(past.iter().all(|&v| v == unset), "stored past the output");
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

    /// [`weight_gradient_f32`] or [`weight_gradient_f64`].
    type WeightGradient<T> = fn(Planes<'_, T>, (&[T], usize), &mut [T]) -> bool;

    /// The weight gradient kernel on random planes, paddings and channel
    /// counts, of small integers so that every order of summing gives the
    /// exact sum: each tap that sum added to what it held.
    fn check_weight_gradient<T: Float + Debug>(kernel: WeightGradient<T>, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let value = |rng: &mut StdRng| T::from(rng.random_range(-3i8..=3)).expect("a value");
        for _ in 0..300 {
            let Some([(in_h, in_w), (top, left), (out_h, out_w)]) = random_plane(&mut rng, 40, 1)
            else {
                continue;
            };
            let channels = rng.random_range(1..=3);
            let input: Vec<T> = (0..channels * in_h * in_w)
                .map(|_| value(&mut rng))
                .collect();
            let error: Vec<T> = (0..channels * out_h * out_w)
                .map(|_| value(&mut rng))
                .collect();
            let held: Vec<T> = (0..9 * channels).map(|_| value(&mut rng)).collect();
            let mut taps = held.clone();
            let ran = kernel((&input, in_w, (top, left)), (&error, out_w), &mut taps);
            assert_eq!(ran, available());
            if !ran {
                continue;
            }
            for ch in 0..channels {
                let at = |r: usize, c: usize| match (r.checked_sub(top), c.checked_sub(left)) {
                    (Some(r), Some(c)) if r < in_h && c < in_w => input[(ch * in_h + r) * in_w + c],
                    _ => T::zero(),
                };
                for kh in 0..3 {
                    for kw in 0..3 {
                        let mut sum = T::zero();
                        for oh in 0..out_h {
                            for ow in 0..out_w {
                                sum = sum
                                    + error[(ch * out_h + oh) * out_w + ow] * at(oh + kh, ow + kw);
                            }
                        }
                        let tap = (3 * kh + kw) * channels + ch;
                        assert_eq!(
                            taps[tap],
                            held[tap] + sum,
                            "{in_h}x{in_w}, padding {top},{left}, channel {ch}, tap {kh},{kw}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn narrow_weight_gradient_sums_every_product() {
        check_weight_gradient::<f32>(weight_gradient_f32, 9);
        check_weight_gradient::<f64>(weight_gradient_f64, 10);
    }
}
