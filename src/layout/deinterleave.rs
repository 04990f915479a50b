//! Splitting a run of column pairs into its even and odd columns, and
//! weaving two runs back into pairs, per element type: the pieces of the
//! stride-2 depthwise kernels (`algo/strided/direct/deinterleaved.rs` and
//! `deinterleaved_gradients.rs`) that know the dtype, reached through
//! `Element::split_pairs` and `Element::weave_pairs`. Through two AVX-512
//! permutes a vector when the CPU has AVX-512, through AVX2's in-lane
//! shuffles and a cross-lane permute when it has AVX2, else not at all
//! (the caller's generic loop runs): left to the compiler, the same split
//! became masked loads whose cost rose threefold when the row width was
//! known only at run time (BENCHMARKS.md, "Overlapping pieces"), and a
//! scalar loop on AVX2 ("Pair splits without AVX-512").

/// Calls `f(start)` for pieces of `piece` elements that cover `0..count`
/// (`count ≥ piece > 0`): every `piece`-th start, then one that ends on
/// `count`, overlapping the one before where `piece` does not divide
/// `count` (writing the same values again). A plain loop: the same starts
/// as a chained iterator cost the depthwise kernels' row splits a third of
/// their time (BENCHMARKS.md, "Overlapping pieces").
#[inline(always)]
pub(crate) fn for_each_piece(count: usize, piece: usize, mut f: impl FnMut(usize)) {
    debug_assert!(
        count >= piece && piece > 0,
        "{count} elements in pieces of {piece}"
    );
    let mut next = 0;
    loop {
        let start = next.min(count - piece);
        f(start);
        if start + piece >= count {
            return;
        }
        next = start + piece;
    }
}

/// Splits `pairs` (`2·n` values) into `even` and `odd` (`n` each):
/// `even[k] = pairs[2k]`, `odd[k] = pairs[2k + 1]`. Returns whether it
/// did: only on a CPU with AVX-512 F, for `n` of at least one vector
/// (16), or with AVX2, for `n` of at least one AVX2 vector (8).
pub(crate) fn split_pairs_f32(pairs: &[f32], even: &mut [f32], odd: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    return split_with(
        pairs,
        even,
        odd,
        [(16, avx512::split_f32), (8, avx2::split_f32)],
    );
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// [`split_pairs_f32`] for `f64`, for `n` of at least one vector (8 with
/// AVX-512, 4 with AVX2).
pub(crate) fn split_pairs_f64(pairs: &[f64], even: &mut [f64], odd: &mut [f64]) -> bool {
    #[cfg(target_arch = "x86_64")]
    return split_with(
        pairs,
        even,
        odd,
        [(8, avx512::split_f64), (4, avx2::split_f64)],
    );
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// Weaves `even` and `odd` (`n` each) into `pairs` (`2·n`): `pairs[2k] =
/// even[k]`, `pairs[2k + 1] = odd[k]`. Returns whether it did: on the
/// CPUs and runs [`split_pairs_f32`] takes.
pub(crate) fn weave_pairs_f32(even: &[f32], odd: &[f32], pairs: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    return weave_with(
        even,
        odd,
        pairs,
        [(16, avx512::weave_f32), (8, avx2::weave_f32)],
    );
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// [`weave_pairs_f32`] for `f64`, on the runs [`split_pairs_f64`] takes.
pub(crate) fn weave_pairs_f64(even: &[f64], odd: &[f64], pairs: &mut [f64]) -> bool {
    #[cfg(target_arch = "x86_64")]
    return weave_with(
        even,
        odd,
        pairs,
        [(8, avx512::weave_f64), (4, avx2::weave_f64)],
    );
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// A routine of the AVX-512 build and one of the AVX2 build, each with
/// the pairs a vector it takes.
#[cfg(target_arch = "x86_64")]
type Builds<F> = [(usize, F); 2];

/// The weave of `builds` that the CPU runs and the run's length allows
/// ([`vector_run`]), on the slices.
#[cfg(target_arch = "x86_64")]
fn weave_with<T>(
    even: &[T],
    odd: &[T],
    pairs: &mut [T],
    builds: Builds<unsafe fn(*const T, *const T, *mut T, usize)>,
) -> bool {
    let Some((n, weave)) = vector_run((pairs.len(), even.len(), odd.len()), builds) else {
        return false;
    };
    // SAFETY: `vector_run` found the CPU features `weave` enables, `n` at
    // least its vector, `even` and `odd` n values each and `pairs` 2·n.
    unsafe { weave(even.as_ptr(), odd.as_ptr(), pairs.as_mut_ptr(), n) };
    true
}

/// The split of `builds` that the CPU runs and the run's length allows
/// ([`vector_run`]), on the slices.
#[cfg(target_arch = "x86_64")]
fn split_with<T>(
    pairs: &[T],
    even: &mut [T],
    odd: &mut [T],
    builds: Builds<unsafe fn(*const T, *mut T, *mut T, usize)>,
) -> bool {
    let Some((n, split)) = vector_run((pairs.len(), even.len(), odd.len()), builds) else {
        return false;
    };
    // SAFETY: as in `weave_with`.
    unsafe { split(pairs.as_ptr(), even.as_mut_ptr(), odd.as_mut_ptr(), n) };
    true
}

/// The pairs `n` of a run whose lengths (`pairs`, `even`, `odd`) are
/// `2·n`, `n` and `n` (panics otherwise), and the routine of `builds`
/// that takes it: the AVX-512 one where the CPU has AVX-512 F and `n` is
/// at least its vector, else the AVX2 one where the CPU has AVX2 and `n`
/// is at least its vector.
#[cfg(target_arch = "x86_64")]
fn vector_run<F>(
    (pairs, even, odd): (usize, usize, usize),
    [(wide, wide_build), (narrow, narrow_build)]: Builds<F>,
) -> Option<(usize, F)> {
    use std::arch::is_x86_feature_detected as has;
    assert!(odd == even && pairs == 2 * even, "pair run sizes");
    if even >= wide && has!("avx512f") {
        Some((even, wide_build))
    } else if even >= narrow && has!("avx2") {
        Some((even, narrow_build))
    } else {
        None
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::for_each_piece;

    /// An AVX-512 split of `n ≥ LANES` pairs of one dtype, a vector of
    /// pairs at a time.
    macro_rules! split {
        ($name:ident, $t:ty, $lanes:expr, $load:ident, $store:ident, $permute:ident,
         $evens:expr, $odds:expr) => {
            /// # Safety
            /// The CPU must have AVX-512 F; `n` must be at least one
            /// vector, `pairs` valid for `2·n` reads, `even` and `odd` for
            /// `n` writes each.
            #[target_feature(enable = "avx512f")]
            pub(super) unsafe fn $name(pairs: *const $t, even: *mut $t, odd: *mut $t, n: usize) {
                let (evens, odds) = ($evens, $odds);
                for_each_piece(n, $lanes, |start| {
                    // SAFETY: `start + LANES ≤ n`, so the two loads read
                    // pairs `start .. start + LANES` (values `2·start ..
                    // 2·(start + LANES)`) and the stores write `start ..
                    // start + LANES` of each half.
                    unsafe {
                        let low = $load(pairs.add(2 * start));
                        let high = $load(pairs.add(2 * start + $lanes));
                        $store(even.add(start), $permute(low, evens, high));
                        $store(odd.add(start), $permute(low, odds, high));
                    }
                });
            }
        };
    }

    /// An AVX-512 weave of `n ≥ LANES` pairs of one dtype, the split's
    /// inverse.
    macro_rules! weave {
        ($name:ident, $t:ty, $lanes:expr, $load:ident, $store:ident, $permute:ident,
         $low:expr, $high:expr) => {
            /// # Safety
            /// The CPU must have AVX-512 F; `n` must be at least one
            /// vector, `even` and `odd` valid for `n` reads each, `pairs`
            /// for `2·n` writes.
            #[target_feature(enable = "avx512f")]
            pub(super) unsafe fn $name(even: *const $t, odd: *const $t, pairs: *mut $t, n: usize) {
                let (low, high) = ($low, $high);
                for_each_piece(n, $lanes, |start| {
                    // SAFETY: `start + LANES ≤ n`, so the loads read
                    // `start .. start + LANES` of each half and the stores
                    // write values `2·start .. 2·(start + LANES)`.
                    unsafe {
                        let e = $load(even.add(start));
                        let o = $load(odd.add(start));
                        $store(pairs.add(2 * start), $permute(e, low, o));
                        $store(pairs.add(2 * start + $lanes), $permute(e, high, o));
                    }
                });
            }
        };
    }

    weave!(
        weave_f32,
        f32,
        16,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_permutex2var_ps,
        _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23),
        _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31)
    );
    weave!(
        weave_f64,
        f64,
        8,
        _mm512_loadu_pd,
        _mm512_storeu_pd,
        _mm512_permutex2var_pd,
        _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11),
        _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15)
    );
    split!(
        split_f32,
        f32,
        16,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_permutex2var_ps,
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30),
        _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31)
    );
    split!(
        split_f64,
        f64,
        8,
        _mm512_loadu_pd,
        _mm512_storeu_pd,
        _mm512_permutex2var_pd,
        _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14),
        _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15)
    );
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::for_each_piece;

    /// An AVX2 split of `n ≥ 8` pairs of `f32`, 8 pairs at a time: an
    /// in-lane shuffle takes the even (odd) values of each 128-bit lane of
    /// the two loads, and a permute of 64-bit quarters puts the four
    /// quarters in order.
    ///
    /// # Safety
    /// The CPU must have AVX2; `n ≥ 8`, `pairs` valid for `2·n` reads,
    /// `even` and `odd` for `n` writes each.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn split_f32(pairs: *const f32, even: *mut f32, odd: *mut f32, n: usize) {
        for_each_piece(n, 8, |start| {
            // SAFETY: `start + 8 ≤ n`: the loads read values `2·start ..
            // 2·start + 16`, the stores write `start .. start + 8` of each
            // half.
            unsafe {
                let low = _mm256_loadu_ps(pairs.add(2 * start));
                let high = _mm256_loadu_ps(pairs.add(2 * start + 8));
                // [l0 l2 h0 h2 | l4 l6 h4 h6] → [l0 l2 l4 l6 h0 h2 h4 h6].
                let order = |v: __m256| {
                    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)))
                };
                let evens = order(_mm256_shuffle_ps::<0b10_00_10_00>(low, high));
                let odds = order(_mm256_shuffle_ps::<0b11_01_11_01>(low, high));
                _mm256_storeu_ps(even.add(start), evens);
                _mm256_storeu_ps(odd.add(start), odds);
            }
        });
    }

    /// An AVX2 split of `n ≥ 4` pairs of `f64`, 4 pairs at a time.
    ///
    /// # Safety
    /// As [`split_f32`], with `n ≥ 4`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn split_f64(pairs: *const f64, even: *mut f64, odd: *mut f64, n: usize) {
        for_each_piece(n, 4, |start| {
            // SAFETY: `start + 4 ≤ n`: the loads read values `2·start ..
            // 2·start + 8`, the stores write `start .. start + 4` of each
            // half.
            unsafe {
                let low = _mm256_loadu_pd(pairs.add(2 * start));
                let high = _mm256_loadu_pd(pairs.add(2 * start + 4));
                // [p0 p4 p2 p6] → [p0 p2 p4 p6], and the odd ones alike.
                let evens = _mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_unpacklo_pd(low, high));
                let odds = _mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_unpackhi_pd(low, high));
                _mm256_storeu_pd(even.add(start), evens);
                _mm256_storeu_pd(odd.add(start), odds);
            }
        });
    }

    /// An AVX2 weave of `n ≥ 8` pairs of `f32`, the split's inverse:
    /// in-lane unpacks pair the values, and 128-bit lane swaps put the
    /// pairs in order.
    ///
    /// # Safety
    /// The CPU must have AVX2; `n ≥ 8`, `even` and `odd` valid for `n`
    /// reads each, `pairs` for `2·n` writes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn weave_f32(even: *const f32, odd: *const f32, pairs: *mut f32, n: usize) {
        for_each_piece(n, 8, |start| {
            // SAFETY: `start + 8 ≤ n`: the loads read `start .. start + 8`
            // of each half, the stores write values `2·start .. 2·start +
            // 16`.
            unsafe {
                let e = _mm256_loadu_ps(even.add(start));
                let o = _mm256_loadu_ps(odd.add(start));
                let low = _mm256_unpacklo_ps(e, o);
                let high = _mm256_unpackhi_ps(e, o);
                _mm256_storeu_ps(
                    pairs.add(2 * start),
                    _mm256_permute2f128_ps::<0x20>(low, high),
                );
                _mm256_storeu_ps(
                    pairs.add(2 * start + 8),
                    _mm256_permute2f128_ps::<0x31>(low, high),
                );
            }
        });
    }

    /// An AVX2 weave of `n ≥ 4` pairs of `f64`.
    ///
    /// # Safety
    /// As [`weave_f32`], with `n ≥ 4`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn weave_f64(even: *const f64, odd: *const f64, pairs: *mut f64, n: usize) {
        for_each_piece(n, 4, |start| {
            // SAFETY: `start + 4 ≤ n`: the loads read `start .. start + 4`
            // of each half, the stores write values `2·start .. 2·start +
            // 8`.
            unsafe {
                let e = _mm256_loadu_pd(even.add(start));
                let o = _mm256_loadu_pd(odd.add(start));
                let low = _mm256_unpacklo_pd(e, o);
                let high = _mm256_unpackhi_pd(e, o);
                _mm256_storeu_pd(
                    pairs.add(2 * start),
                    _mm256_permute2f128_pd::<0x20>(low, high),
                );
                _mm256_storeu_pd(
                    pairs.add(2 * start + 4),
                    _mm256_permute2f128_pd::<0x31>(low, high),
                );
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{
        for_each_piece, split_pairs_f32, split_pairs_f64, weave_pairs_f32, weave_pairs_f64,
    };
    use std::fmt::Debug;

    /// `split` on runs of `n` pairs around its vector: every pair split,
    /// or nothing written where it declines.
    fn check<T: Copy + PartialEq + Debug + From<u16>>(split: fn(&[T], &mut [T], &mut [T]) -> bool) {
        for n in [0u16, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 50] {
            let pairs: Vec<T> = (0..2 * n).map(T::from).collect();
            let unset = T::from(u16::MAX);
            let n = usize::from(n);
            let (mut even, mut odd) = (vec![unset; n], vec![unset; n]);
            if split(&pairs, &mut even, &mut odd) {
                for k in 0..n {
                    assert_eq!((even[k], odd[k]), (pairs[2 * k], pairs[2 * k + 1]), "{n}");
                }
            } else {
                assert!(even.iter().chain(&odd).all(|&v| v == unset), "{n}");
            }
        }
    }

    #[test]
    fn splits_every_pair_or_declines() {
        check::<f32>(split_pairs_f32);
        check::<f64>(split_pairs_f64);
    }

    /// `weave` on runs of `n` pairs around its vector: every pair woven,
    /// or nothing written where it declines.
    fn check_weave<T: Copy + PartialEq + Debug + From<u16>>(
        weave: fn(&[T], &[T], &mut [T]) -> bool,
    ) {
        for n in [0u16, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 50] {
            let even: Vec<T> = (0..n).map(|k| T::from(2 * k)).collect();
            let odd: Vec<T> = (0..n).map(|k| T::from(2 * k + 1)).collect();
            let unset = T::from(u16::MAX);
            let mut pairs = vec![unset; 2 * usize::from(n)];
            if weave(&even, &odd, &mut pairs) {
                let expected: Vec<T> = (0..2 * n).map(T::from).collect();
                assert_eq!(pairs, expected, "{n}");
            } else {
                assert!(pairs.iter().all(|&v| v == unset), "{n}");
            }
        }
    }

    #[test]
    fn weaves_every_pair_or_declines() {
        check_weave::<f32>(weave_pairs_f32);
        check_weave::<f64>(weave_pairs_f64);
    }

    #[test]
    fn pieces_cover_every_element_and_end_on_the_last() {
        for piece in [1, 4, 16] {
            for count in piece..5 * piece + 3 {
                let mut starts = Vec::new();
                for_each_piece(count, piece, |start| starts.push(start));
                let mut covered = vec![false; count];
                for &start in &starts {
                    covered[start..start + piece].fill(true);
                }
                assert!(covered.iter().all(|&c| c), "{count} by {piece}: {starts:?}");
                assert_eq!(starts.last(), Some(&(count - piece)), "{count} by {piece}");
                assert_eq!(starts.len(), count.div_ceil(piece), "{count} by {piece}");
            }
        }
    }
}
