//! The AVX2 + FMA kernels of `split_in_registers.rs`, for CPUs without
//! AVX-512, for `f32`. (An `f64` build, four outputs a vector, ran slower
//! than the portable kernels' buffered split on an AMD EPYC of family 25:
//! BENCHMARKS.md, "Split in registers on AVX2".)
//!
//! AVX2 has no two-source permute: a vector of 8 outputs from column
//! `at` loads the two vectors of input pairs its taps span (the 16
//! columns from `s = 2·at − left`) and takes their even and odd elements
//! in one in-lane shuffle each (`shufps`), and the third tap the same way
//! from the two vectors two columns on. The in-lane shuffles leave the
//! outputs in the order of the 64-bit quarters `0, 2, 1, 3`: every tap of
//! a vector comes in that order, so the sums do too, and one cross-lane
//! permute (its own inverse) puts each vector of sums in order before its
//! store, or each vector of error in the taps' order before its products.
//! Loads and stores that reach past a row are masked (`vmaskmov`, whose
//! masked-off lanes neither fault nor store; a zero-padded copy of the
//! window instead ran 2–3x slower); every output's nine multiply-adds run
//! in the portable kernel's order, so both give the same bits.

use std::arch::x86_64::*;

/// Output rows a tile: two rows of nine multiply-adds an output from five
/// input rows, the middle one read once for both.
const ROWS: usize = 2;

/// Column vectors a tile: with two rows, four independent chains of
/// multiply-adds, against one (a vector of one row) or eight, whose sums
/// and taps spill AVX2's sixteen registers (BENCHMARKS.md, "Split in
/// registers on AVX2").
const VECTORS: usize = 2;

/// `a`'s and `b`'s even `f32` elements, lane by lane.
#[target_feature(enable = "avx2")]
#[inline]
fn even_f32(a: __m256, b: __m256) -> __m256 {
    _mm256_shuffle_ps::<0b10_00_10_00>(a, b)
}

/// `a`'s and `b`'s odd `f32` elements, lane by lane.
#[target_feature(enable = "avx2")]
#[inline]
fn odd_f32(a: __m256, b: __m256) -> __m256 {
    _mm256_shuffle_ps::<0b11_01_11_01>(a, b)
}

/// The kernels: see [`super::rows_f32`], [`super::weight_gradient_f32`]
/// and [`super::input_gradient_rows_f32`].
pub(super) mod f32_kernels {
    use super::super::super::narrow_planes::row_tiles;
    use super::{ROWS, VECTORS};
    use std::arch::x86_64::*;

    const LANES: usize = 8;

    /// A kernel row's three taps and the error row it weighs: its columns
    /// from `a` and from `a + 1`.
    type KernelRowError<'a> = (&'a [__m256], (__m256, __m256));

    /// The quarters of `v` in the order `0, 2, 1, 3`: the order
    /// the in-lane shuffles leave outputs in, and back.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn reorder(v: __m256) -> __m256 {
        _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)))
    }

    /// The lanes of a vector at column `at` of a row `len` long
    /// that lie in the row, as the mask `vmaskmov` takes: lane
    /// `k` all ones where `0 ≤ at + k < len`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn within(at: isize, len: usize) -> __m256i {
        let clamp = |v: isize| v.clamp(-(1 << 30), 1 << 30) as i32;
        let index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let past_start = _mm256_cmpgt_epi32(index, _mm256_set1_epi32(clamp(-1 - at)));
        let before_end = _mm256_cmpgt_epi32(_mm256_set1_epi32(clamp(len as isize - at)), index);
        _mm256_and_si256(past_start, before_end)
    }

    /// Where a vector of outputs from column `at` finds its taps
    /// in any input row: the first column of its loads (`s`, `s +
    /// LANES`, `s + 2`, `s + 2 + LANES`), and, where some of
    /// their lanes lie outside the row, their masks.
    struct Columns {
        start: isize,
        masks: Option<[__m256i; 4]>,
    }

    /// The [`Columns`] of outputs `at..at + LANES` on rows `in_w`
    /// wide after `pad_left` zeros.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn columns(at: usize, pad_left: usize, in_w: usize) -> Columns {
        let start = (2 * at) as isize - pad_left as isize;
        let lanes = LANES as isize;
        let inside = start >= 0 && start + 2 * lanes + 2 <= in_w as isize;
        let loads = [start, start + lanes, start + 2, start + 2 + lanes];
        Columns {
            start,
            masks: (!inside).then(|| loads.map(|l| within(l, in_w))),
        }
    }

    /// The three taps of a kernel row (`even`, `odd`, `next`) for
    /// the outputs of `c` from input row `line`, in the shuffled
    /// order.
    ///
    /// # Safety
    /// The CPU must have AVX2; `line` must be valid for reads of
    /// the row's `in_w` columns, the `in_w` that made `c`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn taps(line: *const f32, c: &Columns) -> [__m256; 3] {
        let at = |offset: usize| line.wrapping_offset(c.start + offset as isize);
        // SAFETY: unmasked loads lie within the row (`columns`
        // masks every vector that reaches past it); a masked load
        // reads only the lanes its mask keeps, which lie in
        // columns `0..in_w`.
        let [a, b, c2, d] = unsafe {
            match &c.masks {
                None => [
                    _mm256_loadu_ps(at(0)),
                    _mm256_loadu_ps(at(LANES)),
                    _mm256_loadu_ps(at(2)),
                    _mm256_loadu_ps(at(2 + LANES)),
                ],
                Some(m) => [
                    _mm256_maskload_ps(at(0), m[0]),
                    _mm256_maskload_ps(at(LANES), m[1]),
                    _mm256_maskload_ps(at(2), m[2]),
                    _mm256_maskload_ps(at(2 + LANES), m[3]),
                ],
            }
        };
        [
            super::even_f32(a, b),
            super::odd_f32(a, b),
            super::even_f32(c2, d),
        ]
    }

    /// The forward kernel: see [`super::super::rows_f32`]. Tiles
    /// of rows walk the band, vectors of columns each tile's rows,
    /// so that a tile's input rows stay in the first-level cache.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `input` valid for
    /// `channels · in_h · in_w` reads, `taps` for `9 · channels`,
    /// `bias` null or valid for `channels`, and `out` for
    /// `channels · count · out_w` writes.
    #[target_feature(enable = "avx2,fma")]
    pub(in super::super) unsafe fn rows(
        (input, in_h, in_w, (pad_top, pad_left)): (*const f32, usize, usize, (usize, usize)),
        (taps, bias, channels): (*const f32, *const f32, usize),
        (first_row, count, out_w): (usize, usize, usize),
        out: *mut f32,
    ) {
        // Groups of `VECTORS` column vectors of outputs, the last
        // shifted back to end on the row (a few outputs computed
        // twice, stored with the same value); rows narrower than a
        // group go a vector at a time the same way, and a row
        // narrower than a vector is one vector whose lanes past
        // the row are not stored.
        let narrow = (out_w < LANES).then(|| within(0, out_w));
        for channel in 0..channels {
            // SAFETY: channel `channel`'s nine taps and bias, within
            // the caller's.
            let (w, b) = unsafe {
                let w: [__m256; 9] =
                    std::array::from_fn(|t| _mm256_set1_ps(*taps.add(9 * channel + t)));
                let b = if bias.is_null() {
                    0.0
                } else {
                    *bias.add(channel)
                };
                (w, _mm256_set1_ps(b))
            };
            let plane = (
                input.wrapping_add(channel * in_h * in_w),
                (in_h, in_w, pad_top),
            );
            let out = out.wrapping_add(channel * count * out_w);
            for (first, height) in row_tiles(count, ROWS) {
                let row = first_row + first;
                let out = (out.wrapping_add(first * out_w), out_w, narrow);
                let filter = (&w, b);
                // SAFETY: as this function's; the tiles' rows are
                // rows of the band, their vectors within `out_w`
                // (or masked to it).
                unsafe {
                    if height == ROWS {
                        tiles::<ROWS>(plane, filter, pad_left, row, out);
                    } else {
                        tiles::<1>(plane, filter, pad_left, row, out);
                    }
                }
            }
        }
    }

    /// The tiles of `R` output rows from `row` on along the row:
    /// groups of [`VECTORS`] vectors where the row holds one,
    /// else single vectors.
    ///
    /// # Safety
    /// As [`rows`]'s, with `out` valid for the rows.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tiles<const R: usize>(
        plane: (*const f32, (usize, usize, usize)),
        filter: (&[__m256; 9], __m256),
        pad_left: usize,
        row: usize,
        (out, out_w, narrow): (*mut f32, usize, Option<__m256i>),
    ) {
        let in_w = plane.1.1;
        let group = VECTORS * LANES;
        let mut left = 0;
        while out_w >= group && left < out_w {
            let at = left.min(out_w - group);
            let c = std::array::from_fn(|v| columns(at + v * LANES, pad_left, in_w));
            // SAFETY: as this function's, the group within `out_w`.
            unsafe {
                tile::<R, VECTORS>(plane, filter, &c, row, (out.wrapping_add(at), out_w, None))
            };
            left = at + group;
        }
        while left < out_w {
            let at = left.min(out_w.saturating_sub(LANES));
            let c = [columns(at, pad_left, in_w)];
            // SAFETY: as this function's, the vector within `out_w`
            // or masked to it.
            unsafe {
                tile::<R, 1>(
                    plane,
                    filter,
                    &c,
                    row,
                    (out.wrapping_add(at), out_w, narrow),
                )
            };
            left = at + LANES;
        }
    }

    /// `R` output rows from `row` on, `V` vectors each, stored
    /// `out_w` apart from `out` (masked where a mask is given).
    ///
    /// # Safety
    /// As [`rows`]'s, with `out` valid for the rows' vectors (or
    /// their masked lanes).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const R: usize, const V: usize>(
        (input, (in_h, in_w, pad_top)): (*const f32, (usize, usize, usize)),
        (w, bias): (&[__m256; 9], __m256),
        c: &[Columns; V],
        row: usize,
        (out, out_w, narrow): (*mut f32, usize, Option<__m256i>),
    ) {
        // Input row `i` of the tile's window, where it lies in the
        // plane.
        let line = |i: usize| {
            let ih = (2 * row + i).checked_sub(pad_top).filter(|&ih| ih < in_h)?;
            Some(input.wrapping_add(ih * in_w))
        };
        // Kernel row `kh`'s three products added to `sum`.
        let add = |sum: __m256, kh: usize, [even, odd, next]: [__m256; 3]| {
            let sum = _mm256_fmadd_ps(w[3 * kh], even, sum);
            let sum = _mm256_fmadd_ps(w[3 * kh + 1], odd, sum);
            _mm256_fmadd_ps(w[3 * kh + 2], next, sum)
        };
        // Written out row by row, the sums stay in registers: the
        // tile's second row starts at the first's third input row.
        // Each output's taps come in the kernel's order; the `R ·
        // V` sums are independent chains of multiply-adds.
        let mut acc = [[bias; V]; R];
        let mut step = |i: usize| {
            let Some(line) = line(i) else {
                return;
            };
            for v in 0..V {
                // SAFETY: `line` is a row of the plane.
                let t = unsafe { taps(line, &c[v]) };
                if i < 3 {
                    acc[0][v] = add(acc[0][v], i, t);
                }
                if R == 2 && i >= 2 {
                    acc[R - 1][v] = add(acc[R - 1][v], i - 2, t);
                }
            }
        };
        // Each step called with its constant, so that the checks
        // of `i` fold away and the sums stay in registers.
        step(0);
        step(1);
        step(2);
        if R == 2 {
            step(3);
            step(4);
        }
        for (r, sums) in acc.into_iter().enumerate() {
            for (v, sums) in sums.into_iter().enumerate() {
                let at = out.wrapping_add(r * out_w + v * LANES);
                // SAFETY: row `r` of the tile is one of the
                // caller's rows; an unmasked vector lies within
                // `out_w`, a masked one stores only the lanes
                // within it.
                unsafe {
                    match narrow {
                        None => _mm256_storeu_ps(at, reorder(sums)),
                        Some(m) => _mm256_maskstore_ps(at, m, reorder(sums)),
                    }
                }
            }
        }
    }

    /// The weight gradient kernel: see
    /// [`super::super::weight_gradient_f32`]. Each tap sums its
    /// products in a vector of lanes, error row after error row,
    /// then adds up the lanes.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `input` valid for `in_h ·
    /// in_w` reads and `error` for `count · out_w`.
    #[target_feature(enable = "avx2,fma")]
    pub(in super::super) unsafe fn weight_gradient(
        (input, in_h, in_w, (pad_top, pad_left)): (*const f32, usize, usize, (usize, usize)),
        (error, count, out_w, first): (*const f32, usize, usize, usize),
    ) -> [f32; 9] {
        let mut acc = [_mm256_setzero_ps(); 9];
        for r in 0..count {
            let mut at = 0;
            while at < out_w {
                let columns = columns(at, pad_left, in_w);
                let from = error.wrapping_add(r * out_w + at);
                // SAFETY: an unmasked load lies within the error
                // row `r < count`; a masked one reads only its
                // columns `0..out_w`. Outputs past the row weigh
                // zero.
                let dy = unsafe {
                    if at + LANES <= out_w {
                        _mm256_loadu_ps(from)
                    } else {
                        _mm256_maskload_ps(from, within(at as isize, out_w))
                    }
                };
                let dy = reorder(dy);
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
                    acc[3 * kh] = _mm256_fmadd_ps(dy, even, acc[3 * kh]);
                    acc[3 * kh + 1] = _mm256_fmadd_ps(dy, odd, acc[3 * kh + 1]);
                    acc[3 * kh + 2] = _mm256_fmadd_ps(dy, next, acc[3 * kh + 2]);
                }
                at += LANES;
            }
        }
        acc.map(|lanes| {
            let mut values = [0.0; LANES];
            // SAFETY: `values` holds one vector.
            unsafe { _mm256_storeu_ps(values.as_mut_ptr(), lanes) };
            values.into_iter().sum()
        })
    }

    /// The input gradient kernel: see
    /// [`super::super::input_gradient_rows_f32`] and the AVX-512
    /// kernel's account of which error columns reach a pair of
    /// input columns. The sums of the even and the odd columns
    /// are woven into input order by an in-lane unpack and a
    /// swap of halves.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `out_w ≥ 1`; `error` valid
    /// for `count · out_w` reads and `dx` for writes of rows
    /// `rows` of `in_w`.
    #[target_feature(enable = "avx2,fma")]
    pub(in super::super) unsafe fn input_gradient(
        (error, count, out_w, first): (*const f32, usize, usize, usize),
        taps: &[f32; 9],
        (dx, in_w, (pad_top, pad_left)): (*mut f32, usize, (usize, usize)),
        rows: std::ops::Range<usize>,
    ) {
        let w: [__m256; 9] = std::array::from_fn(|t| _mm256_set1_ps(taps[t]));
        let padded = rows.start + pad_top..rows.end + pad_top;
        let mut c = 0;
        while c < in_w {
            let column = (c + pad_left) as isize;
            let a = (column - 1).div_euclid(2);
            let starts_even = column % 2 == 0;
            // Masks only for vectors that reach past a row.
            let part = |at: isize, len: usize| {
                (at < 0 || at + LANES as isize > len as isize).then(|| within(at, len))
            };
            let loads = [part(a, out_w), part(a + 1, out_w)];
            let stores = [part(c as isize, in_w), part((c + LANES) as isize, in_w)];
            // Error row `i`'s columns from `a` and `a + 1`, where
            // the band holds it.
            let load = |i: usize| -> Option<(__m256, __m256)> {
                let row = i.checked_sub(first).filter(|&r| r < count)?;
                let from = error.wrapping_add(row * out_w);
                let one = |at: isize, m: Option<__m256i>| {
                    // SAFETY: an unmasked load lies within columns
                    // `0..out_w` of error row `row < count`; a
                    // masked one reads only the lanes its mask
                    // keeps, within them.
                    unsafe {
                        match m {
                            None => _mm256_loadu_ps(from.wrapping_offset(at)),
                            Some(m) => _mm256_maskload_ps(from.wrapping_offset(at), m),
                        }
                    }
                };
                Some((one(a, loads[0]), one(a + 1, loads[1])))
            };
            // One input row's vectors: the sums of its kernel rows'
            // taps `(w0, w1, w2)` times their error rows, woven
            // and stored.
            let row_out = |p: usize, sums: [Option<KernelRowError<'_>>; 2]| {
                let (mut even, mut odd) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                for (w, (d0, d1)) in sums.into_iter().flatten() {
                    even = _mm256_fmadd_ps(w[0], d1, even);
                    even = _mm256_fmadd_ps(w[2], d0, even);
                    odd = _mm256_fmadd_ps(w[1], if starts_even { d1 } else { d0 }, odd);
                }
                let (first_runs, second_runs) = if starts_even {
                    (even, odd)
                } else {
                    (odd, even)
                };
                let (low, high) = (
                    _mm256_unpacklo_ps(first_runs, second_runs),
                    _mm256_unpackhi_ps(first_runs, second_runs),
                );
                let woven = [
                    _mm256_permute2f128_ps::<0x20>(low, high),
                    _mm256_permute2f128_ps::<0x31>(low, high),
                ];
                let line = dx.wrapping_add((p - pad_top) * in_w);
                for (half, (woven, store)) in woven.into_iter().zip(stores).enumerate() {
                    let to = line.wrapping_add(c + half * LANES);
                    // SAFETY: an unmasked store lies within
                    // columns `0..in_w` of row `p − pad_top`, one
                    // of `rows`; a masked one writes only the
                    // lanes its mask keeps, within them, and a
                    // mask that keeps none writes nothing.
                    unsafe {
                        match store {
                            None => _mm256_storeu_ps(to, woven),
                            Some(m) => _mm256_maskstore_ps(to, m, woven),
                        }
                    }
                }
            };
            if !padded.is_empty() {
                let mut previous = (padded.start / 2).checked_sub(1).and_then(load);
                for i in padded.start / 2..=(padded.end - 1) / 2 {
                    let current = load(i);
                    if padded.contains(&(2 * i)) {
                        let top = current.map(|d| (&w[0..3], d));
                        let bottom = previous.map(|d| (&w[6..9], d));
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
}
