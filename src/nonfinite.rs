//! NaN and ±∞ in operands: every algorithm and kernel poisons exactly the
//! outputs the naive sum poisons, and poisons them alike (NaN, +∞ or -∞).
//!
//! The naive sum multiplies only the input pixels a tap reads, never the
//! padding, so a non-finite weight poisons the outputs whose windows meet
//! it inside the image and no others. The fast kernels multiply zeros of
//! padding (GEMMs on zero-padded columns or copies, errors dilated with
//! zeros) and, in Winograd's transforms, add neighbouring pixels together.
//! On finite operands neither changes a result beyond rounding, but 0·∞ is
//! NaN, and ∞ - ∞ in a transform is NaN where the naive sum has ∞.
//!
//! So a pass with a non-finite weight, or whose checked results are not all
//! finite, runs again on the column matrix, whose products are the naive
//! sum's plus products with padding zeros, with the input gradient by
//! col2im, which multiplies no zeros. Then the outputs where a padding zero
//! met a non-finite factor are computed again by the naive sum: outputs
//! near the border of a channel with a non-finite weight, and
//! weight-gradient taps that an output pixel with a non-finite error reads
//! in the padding. Sums of the same products in another order are
//! non-finite alike (NaN if any product is NaN or two are infinite of
//! opposite signs, else ±∞), so nothing else changes.
//!
//! Which results are checked (`algo/mod.rs`): a non-finite weight shows in
//! the output it takes part in (`y`, or `dx`), so the smaller of the two is
//! checked. With finite weights, a non-finite input or error poisons every
//! output the naive sum poisons in every kernel, and more only through
//! Winograd's transforms (the forward pass's `y`, the backward pass's
//! `dx`) or through products with zeros in the weight and bias gradients,
//! whose sums are checked in every pass. Finite operands thus cost a scan
//! of the weights or a check of the output, a check of the gradients'
//! sums, and behind Winograd's transforms a check of what each lane writes,
//! while it is in cache.

use crate::algo::naive;
use crate::element::Element;
use crate::operands::{Backward, Forward};
use crate::output::worth_parallel_pass;
use ndarray::{ArrayView, ArrayViewMut4, Axis, Dimension};
use rayon::prelude::*;

/// Whether every element of `a` is finite, read in its contiguous runs
/// (a band of rows of a sample is one run a channel): the axes are merged
/// wherever memory allows, so a view of a whole channel's rows is one run,
/// not one sub-view per row (a lane's band of a small image with many
/// channels is thousands of short rows; BENCHMARKS.md, "Small calls").
pub(crate) fn all_finite<T: Element, D: Dimension>(a: &ArrayView<'_, T, D>) -> bool {
    if let Some(slice) = a.as_slice_memory_order() {
        return slice_is_finite(slice);
    }
    // Up to four axes stay inline in `IxDyn`: nothing is allocated.
    let mut runs = a.view().into_dyn();
    for axis in (1..runs.ndim()).rev() {
        runs.merge_axes(Axis(axis - 1), Axis(axis));
    }
    runs.rows().into_iter().all(|run| match run.as_slice() {
        Some(slice) => slice_is_finite(slice),
        None => run.iter().all(|v| v.is_finite()),
    })
}

/// Whether every element of `slice` is finite, read in runs on the current
/// rayon pool's threads when it is large (a weight gradient's summed
/// partials, millions of elements on the layers with large weights).
pub(crate) fn all_finite_on_pool<T: Element>(slice: &[T]) -> bool {
    if worth_parallel_pass(slice.len()) {
        slice.par_chunks(1 << 14).all(slice_is_finite)
    } else {
        slice_is_finite(slice)
    }
}

/// Whether every element of `slice` is finite, through the CPU's widest
/// vectors ([`finite_by_products`]).
fn slice_is_finite<T: Element>(slice: &[T]) -> bool {
    let mut finite = false;
    slice_is_finite_into(slice, &mut finite);
    finite
}

/// [`slice_is_finite`]'s answer into `finite`, in the SIMD build the CPU
/// runs.
fn slice_is_finite_into<T: Element>(slice: &[T], finite: &mut bool) {
    use crate::algo::strided::simd::with_runtime_simd;
    with_runtime_simd!(
        finite_avx512, finite_avx2,
        finite_by_products::<T>, finite_by_products::<T>,
        slice: &[T], finite: &mut bool,
    );
}

/// Whether every element of `slice` is finite, into `finite`: `v · 0` is
/// zero for a finite `v` and NaN otherwise, summed into 64 running sums,
/// which keep the loop free of branches and of one long chain of
/// additions, so that it runs at the rate the cache delivers the slice
/// (BENCHMARKS.md, "Finite checks").
#[inline(always)]
fn finite_by_products<T: Element>(slice: &[T], finite: &mut bool) {
    const LANES: usize = 64;
    let mut sums = [T::zero(); LANES];
    let chunks = slice.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (sum, &v) in sums.iter_mut().zip(chunk) {
            *sum += v * T::zero();
        }
    }
    *finite = sums.iter().all(|s| *s == T::zero()) && rest.iter().all(|v| v.is_finite());
}

/// Computes again, by the naive sum, each output of `y` that a tap with a
/// non-finite weight reads in the padding.
pub(crate) fn repair_output<T: Element>(op: &Forward<'_, T>, mut y: ArrayViewMut4<'_, T>) {
    let g = op.g;
    for co in 0..g.out_channels {
        let taps = taps_where(g.kh, g.kw, |i, j| {
            op.w.slice(ndarray::s![co, .., i, j])
                .iter()
                .any(|v| !v.is_finite())
        });
        if taps.is_empty() {
            continue;
        }
        for oh in 0..g.out_h {
            for ow in 0..g.out_w {
                if taps
                    .iter()
                    .any(|&tap| naive::reads_padding(g, (oh, ow), tap))
                {
                    for n in 0..g.batch {
                        y[[n, co, oh, ow]] = naive::output_at(op, [n, co, oh, ow]);
                    }
                }
            }
        }
    }
}

/// Computes again, by the naive sum, each element of the weight gradient
/// `dw` whose tap an output pixel with a non-finite error reads in the
/// padding.
pub(crate) fn repair_weight_gradient<T: Element>(
    op: &Backward<'_, T>,
    mut dw: ArrayViewMut4<'_, T>,
) {
    let g = op.g;
    for co in 0..g.out_channels {
        let mut poisoned = Vec::new();
        for ((_, oh, ow), v) in op.dy.index_axis(ndarray::Axis(1), co).indexed_iter() {
            if !v.is_finite() {
                poisoned.push((oh, ow));
            }
        }
        if poisoned.is_empty() {
            continue;
        }
        let taps = taps_where(g.kh, g.kw, |i, j| {
            poisoned
                .iter()
                .any(|&pixel| naive::reads_padding(g, pixel, (i, j)))
        });
        for (i, j) in taps {
            for c in 0..g.in_channels_per_group() {
                dw[[co, c, i, j]] = naive::weight_gradient_at(op, [co, c, i, j]);
            }
        }
    }
}

/// The taps `(i, j)` of a `kh × kw` kernel for which `keep` holds.
fn taps_where(kh: usize, kw: usize, keep: impl Fn(usize, usize) -> bool) -> Vec<(usize, usize)> {
    (0..kh)
        .flat_map(|i| (0..kw).map(move |j| (i, j)))
        .filter(|&(i, j)| keep(i, j))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{all_finite, all_finite_on_pool, slice_is_finite};
    use crate::element::Element;
    use ndarray::{Array4, s};

    /// Views that are not one run of memory (bands of rows, every other
    /// column, axes swapped, a lone row): a special value anywhere in the
    /// view is found, and one just outside it is not.
    #[test]
    fn finds_special_values_in_strided_views() {
        let mut a = Array4::<f32>::from_elem((2, 5, 7, 6), 0.25);
        type Cut = fn(&Array4<f32>) -> ndarray::ArrayView4<'_, f32>;
        let views: [(&str, Cut); 4] = [
            ("band", |a| a.slice(s![1..2, .., 2..5, ..])),
            ("columns", |a| a.slice(s![.., 1..4, .., ..;2])),
            ("swapped", |a| a.view().permuted_axes([0, 2, 1, 3])),
            ("one row", |a| a.slice(s![1..2, 3..4, 6..7, 1..5])),
        ];
        for (name, view) in views {
            let inside: Vec<usize> = {
                let base = a.as_ptr() as usize;
                let size = std::mem::size_of::<f32>();
                view(&a)
                    .iter()
                    .map(|v| (v as *const f32 as usize - base) / size)
                    .collect()
            };
            assert!(all_finite(&view(&a)), "{name}");
            for at in 0..a.len() {
                a.as_slice_mut().unwrap()[at] = f32::NAN;
                assert_eq!(
                    all_finite(&view(&a)),
                    !inside.contains(&at),
                    "{name}, NaN at {at}"
                );
                a.as_slice_mut().unwrap()[at] = 0.25;
            }
        }
    }

    /// On a pool of three threads, a large slice with one special value
    /// in any of its runs (first, a middle one, the ragged last) is found.
    #[test]
    fn finds_special_values_in_large_slices_on_the_pool() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let len = (1 << 20) + 12345;
        let mut v = vec![0.5f64; len];
        assert!(pool.install(|| all_finite_on_pool(&v)));
        for at in [0, 100_000, len - 1] {
            v[at] = f64::NAN;
            assert!(!pool.install(|| all_finite_on_pool(&v)), "NaN at {at}");
            v[at] = f64::NEG_INFINITY;
            assert!(!pool.install(|| all_finite_on_pool(&v)), "-inf at {at}");
            v[at] = 0.5;
        }
    }

    /// Lengths around the 64 running sums and their multiples, so that a
    /// special value sits in every sum and in the ragged rest.
    fn finds_every_special_value_anywhere_in<T: Element>() {
        for len in [0, 1, 7, 8, 9, 31, 63, 64, 65, 100, 128, 130, 200] {
            let ones = vec![T::one(); len];
            assert!(slice_is_finite(&ones));
            for at in 0..len {
                for special in [T::nan(), T::infinity(), T::neg_infinity()] {
                    let mut v = ones.clone();
                    v[at] = special;
                    assert!(!slice_is_finite(&v), "{special} at {at} of {len}");
                }
            }
        }
    }

    #[test]
    fn finds_every_special_value_anywhere() {
        finds_every_special_value_anywhere_in::<f32>();
        finds_every_special_value_anywhere_in::<f64>();
        assert!(slice_is_finite(&[
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE / 4.0,
            -0.0
        ]));
    }
}
