//! Splitting a run of column pairs into its even and odd columns, per
//! element type: the piece of the stride-2 depthwise kernels' row split
//! (`algo/strided/direct/deinterleaved.rs`) that knows the dtype, reached
//! through `Element::split_pairs`. Through two AVX-512 permutes a vector
//! when the CPU has AVX-512, else not at all (the caller's generic loop
//! runs): left to the compiler, the same split became masked loads whose
//! cost rose threefold when the row width was known only at run time
//! (BENCHMARKS.md, "Overlapping pieces").

/// Splits `pairs` (`2·n` values) into `even` and `odd` (`n` each):
/// `even[k] = pairs[2k]`, `odd[k] = pairs[2k + 1]`. Returns whether it
/// did: only on a CPU with AVX-512 F, for `n` of at least one vector (16).
pub(crate) fn split_pairs_f32(pairs: &[f32], even: &mut [f32], odd: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    return split_with(pairs, even, odd, 16, avx512::split_f32);
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// [`split_pairs_f32`] for `f64`, for `n` of at least one vector (8).
pub(crate) fn split_pairs_f64(pairs: &[f64], even: &mut [f64], odd: &mut [f64]) -> bool {
    #[cfg(target_arch = "x86_64")]
    return split_with(pairs, even, odd, 8, avx512::split_f64);
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// `split` (an AVX-512 split of `lanes` pairs a vector) on the slices,
/// where the CPU has AVX-512 F and the run fills a vector.
#[cfg(target_arch = "x86_64")]
fn split_with<T>(
    pairs: &[T],
    even: &mut [T],
    odd: &mut [T],
    lanes: usize,
    split: unsafe fn(*const T, *mut T, *mut T, usize),
) -> bool {
    let n = even.len();
    assert!(odd.len() == n && pairs.len() == 2 * n, "split_pairs sizes");
    if n < lanes || !std::arch::is_x86_feature_detected!("avx512f") {
        return false;
    }
    // SAFETY: the CPU has AVX-512 F (checked just above), `n` fills a
    // vector, and the assert above gives `pairs` 2·n values and `even`,
    // `odd` n each.
    unsafe { split(pairs.as_ptr(), even.as_mut_ptr(), odd.as_mut_ptr(), n) };
    true
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// An AVX-512 split of `n ≥ LANES` pairs of one dtype, a vector of
    /// pairs at a time, the last vector ending on the run's end
    /// (overlapping the one before, writing the same values again).
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
                let mut next = 0;
                loop {
                    let start = next.min(n - $lanes);
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
                    if start + $lanes >= n {
                        return;
                    }
                    next = start + $lanes;
                }
            }
        };
    }

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

#[cfg(test)]
mod tests {
    use super::{split_pairs_f32, split_pairs_f64};
    use std::fmt::Debug;

    /// `split` on runs of `n` pairs around its vector: every pair split,
    /// or nothing written where it declines.
    fn check<T: Copy + PartialEq + Debug + From<u16>>(split: fn(&[T], &mut [T], &mut [T]) -> bool) {
        for n in [0u16, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 50] {
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
}
