//! The last columns of a GEMM whose output rows are a few elements longer
//! than a whole number of vectors.
//!
//! The `gemm` crate's microkernel runs along the output's rows (a layer's
//! pixels) in vectors, so a product with 49 columns (a 7x7 image) pays for
//! 64 and one with 196 (14x14) for 208, the last vector mostly idle: its
//! time is commonly 15–30% above that of 48 or 192 columns on the same
//! rows (BENCHMARKS.md, "GEMM column tails"). Here the GEMM runs on the columns
//! up to the last whole vector, and the rest, a handful of columns, are
//! dot products of `A`'s rows with `B`'s columns (vectors along the depth,
//! which has no such tail), a block of rows of `A` at a time, each read
//! from L2 right after the GEMM has read the same rows: the product runs
//! in pieces of `A` (a block of rows over a block of depth) that fit in
//! L2 (see [`matmul`]).

use crate::element::Element;
use ndarray::{ArrayView2, ArrayViewMut2, Axis, s};

/// Rows of `A` and columns of `B` one block of dot products reads: 16
/// vectors of sums, with room for the block's 8 vectors of operands.
pub(crate) const BLOCK: usize = 4;

/// The depth of a piece (the last may be shallower): deep enough that
/// each GEMM call and block of dot products amortises its start and end,
/// shallow enough for a piece of a few hundred rows of `A` to fit
/// [`PIECE_BYTES`]. The tail's columns of `B` over a piece are packed on
/// the stack.
const MOST_DEPTH: usize = 512;

/// The most bytes of `A` one piece (a block of rows over a block of depth)
/// holds: half of the smallest L2 per core among the machines measured,
/// so that the dot products find the rows the GEMM has just read still
/// there (BENCHMARKS.md, "GEMM column tails").
const PIECE_BYTES: usize = 1 << 19;

/// The most tail columns worth splitting off: past half a vector, the
/// GEMM's last vector does more useful work than the dot products would
/// save (BENCHMARKS.md, "GEMM column tails").
const MOST_TAIL_COLUMNS: usize = 8;

/// The most columns a GEMM may have for its tail to be split off: past 16
/// vectors the idle part of the last is a few percent of the work, and
/// the pieces cost about as much (the `gemm` crate packs the columns
/// before the tail again for each block of rows; BENCHMARKS.md, "GEMM
/// column tails").
const MOST_COLUMNS: usize = 256;

/// How many of `n` columns of a GEMM on `T` the dot products take: those
/// past the last whole vector of the `gemm` crate's AVX-512 kernel, where
/// that is at most [`MOST_TAIL_COLUMNS`], there is a whole vector before
/// them and at most [`MOST_COLUMNS`] in all; else none.
pub(crate) fn tail_columns<T>(n: usize) -> usize {
    let lanes = 64 / std::mem::size_of::<T>();
    let tail = n % lanes;
    if n > lanes && n <= MOST_COLUMNS && tail <= MOST_TAIL_COLUMNS && avx512() {
        tail
    } else {
        0
    }
}

/// Whether the CPU has AVX-512 F (the `gemm` crate's 16-lane kernel, and
/// the dot products'; the direct register tiles' 64-byte rows of `f32`).
pub(crate) fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `C ← A·B` (or `C ← C + A·B` when `accumulate`) with the last `tail`
/// columns as dot products and the others by `gemm` (called as `gemm(c,
/// accumulate, a, b)` on each piece of rows and depth), for `A` with unit
/// column stride.
pub(crate) fn matmul<T: Element>(
    mut c: ArrayViewMut2<'_, T>,
    accumulate: bool,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    tail: usize,
    mut gemm: impl FnMut(ArrayViewMut2<'_, T>, bool, ArrayView2<'_, T>, ArrayView2<'_, T>),
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    assert!(
        0 < tail && tail < n && a.strides()[1] == 1,
        "a tail of {tail} of {n} columns"
    );
    let lead = n - tail;
    let size = std::mem::size_of::<T>();
    let chunk_rows = (PIECE_BYTES / (MOST_DEPTH * size)).next_multiple_of(BLOCK);
    let mut packed = [T::zero(); MOST_TAIL_COLUMNS * MOST_DEPTH];
    for i0 in (0..m).step_by(chunk_rows) {
        let rows = i0..m.min(i0 + chunk_rows);
        for k0 in (0..k).step_by(MOST_DEPTH) {
            let depth = MOST_DEPTH.min(k - k0);
            let sums_from_c = accumulate || k0 > 0;
            let a_piece = a.slice(s![rows.clone(), k0..k0 + depth]);
            gemm(
                c.slice_mut(s![rows.clone(), ..lead]),
                sums_from_c,
                a_piece,
                b.slice(s![k0..k0 + depth, ..lead]),
            );
            let b_tail = b.slice(s![k0..k0 + depth, lead..]);
            for (column, out) in b_tail
                .axis_iter(Axis(1))
                .zip(packed.chunks_exact_mut(depth))
            {
                for (o, &v) in out.iter_mut().zip(column) {
                    *o = v;
                }
            }
            let c_tail = c.slice_mut(s![rows.clone(), lead..]);
            dot_products(c_tail, sums_from_c, a_piece, &packed[..tail * depth]);
        }
    }
}

/// `C ← A·Bᵀ` (or `C ← C + A·Bᵀ`) for `A: m×depth` with unit column
/// stride and `Bᵀ` the tail's columns one after another, `depth` each.
fn dot_products<T: Element>(
    mut c: ArrayViewMut2<'_, T>,
    accumulate: bool,
    a: ArrayView2<'_, T>,
    b: &[T],
) {
    let (m, depth) = a.dim();
    let cols = c.ncols();
    let row_of = |i: usize| {
        let row = a.index_axis_move(Axis(0), i.min(m - 1));
        row.to_slice().expect("rows of A have a unit stride")
    };
    for i0 in (0..m).step_by(BLOCK) {
        // Rows past the last repeat it; their sums are dropped.
        let rows: [&[T]; BLOCK] = std::array::from_fn(|i| row_of(i0 + i));
        for j0 in (0..cols).step_by(BLOCK) {
            let count = BLOCK.min(cols - j0);
            let mut columns: [&[T]; BLOCK] = [&[]; BLOCK];
            for (j, column) in columns.iter_mut().enumerate().take(count) {
                *column = &b[(j0 + j) * depth..(j0 + j + 1) * depth];
            }
            let sums = T::dot_block(rows, &columns[..count]);
            for (i, row_sums) in sums.iter().enumerate().take(m - i0) {
                for (j, &sum) in row_sums.iter().enumerate().take(cols - j0) {
                    let out = &mut c[[i0 + i, j0 + j]];
                    *out = if accumulate { *out + sum } else { sum };
                }
            }
        }
    }
}

/// The dot products of `BLOCK` rows with 1 to `BLOCK` columns, all of one
/// length, in the AVX-512 kernel where the CPU has it (`kernel`, given the
/// number of columns), else one by one; the sums of columns past the last
/// are zero.
fn dot_block_with<T: Element>(
    rows: [&[T]; BLOCK],
    columns: &[&[T]],
    kernel: Option<DotsOf<T>>,
) -> [[T; BLOCK]; BLOCK] {
    let depth = rows[0].len();
    assert!(
        (1..=BLOCK).contains(&columns.len())
            && rows.iter().chain(columns).all(|v| v.len() == depth),
        "dot products of one length, 1 to {BLOCK} columns"
    );
    let mut pointers = [std::ptr::null(); BLOCK];
    for (p, column) in pointers.iter_mut().zip(columns) {
        *p = column.as_ptr();
    }
    if let Some(kernel) = kernel.filter(|_| avx512()) {
        // SAFETY: the CPU has AVX-512 F; each row pointer and the first
        // `columns.len()` column pointers start slices of `depth` elements
        // (checked above), which is all the kernel reads.
        return unsafe { kernel(columns.len())(rows.map(|row| row.as_ptr()), pointers, depth) };
    }
    rows.map(|row| {
        let mut sums = [T::zero(); BLOCK];
        for (sum, column) in sums.iter_mut().zip(columns) {
            *sum = row
                .iter()
                .zip(*column)
                .fold(T::zero(), |sum, (&x, &y)| x.mul_add(y, sum));
        }
        sums
    })
}

/// The raw form of a block of dot products: rows, columns (the unused
/// ones null), depth.
type RawDots<T> = unsafe fn([*const T; BLOCK], [*const T; BLOCK], usize) -> [[T; BLOCK]; BLOCK];

/// The kernel for a number of columns.
type DotsOf<T> = fn(usize) -> RawDots<T>;

/// [`dot_block_with`] for `f32`.
pub(crate) fn dot_block_f32(rows: [&[f32]; BLOCK], columns: &[&[f32]]) -> [[f32; BLOCK]; BLOCK] {
    #[cfg(target_arch = "x86_64")]
    let kernel = Some(avx512::f32_dots::of as DotsOf<f32>);
    #[cfg(not(target_arch = "x86_64"))]
    let kernel = None;
    dot_block_with(rows, columns, kernel)
}

/// [`dot_block_with`] for `f64`.
pub(crate) fn dot_block_f64(rows: [&[f64]; BLOCK], columns: &[&[f64]]) -> [[f64; BLOCK]; BLOCK] {
    #[cfg(target_arch = "x86_64")]
    let kernel = Some(avx512::f64_dots::of as DotsOf<f64>);
    #[cfg(not(target_arch = "x86_64"))]
    let kernel = None;
    dot_block_with(rows, columns, kernel)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    /// The AVX-512 dot products of one dtype, in module `$module`.
    macro_rules! dot_kernels {
        ($module:ident, $t:ty, $lanes:expr, $zero:ident, $load:ident, $fmadd:ident, $reduce:ident) => {
            pub(super) mod $module {
                use super::super::BLOCK;
                use std::arch::x86_64::*;

                const LANES: usize = $lanes;

                /// The kernel for `columns` columns (1 to `BLOCK`).
                pub(in super::super) fn of(columns: usize) -> super::super::RawDots<$t> {
                    match columns {
                        1 => dots::<1>,
                        2 => dots::<2>,
                        3 => dots::<3>,
                        _ => dots::<BLOCK>,
                    }
                }

                /// A [`super::super::RawDots`] for this dtype, of its
                /// first `C` columns.
                ///
                /// # Safety
                /// The CPU has AVX-512 F; each row pointer and the first
                /// `C` column pointers start `depth` readable elements.
                #[target_feature(enable = "avx512f")]
                unsafe fn dots<const C: usize>(
                    rows: [*const $t; BLOCK],
                    columns: [*const $t; BLOCK],
                    depth: usize,
                ) -> [[$t; BLOCK]; BLOCK] {
                    let whole = depth / LANES * LANES;
                    let mut sums = [[$zero(); C]; BLOCK];
                    for at in (0..whole).step_by(LANES) {
                        // SAFETY: `at + LANES <= depth` elements of each
                        // row and column.
                        let a: [_; BLOCK] =
                            std::array::from_fn(|i| unsafe { $load(rows[i].add(at)) });
                        let b: [_; C] =
                            std::array::from_fn(|j| unsafe { $load(columns[j].add(at)) });
                        for (sums_i, &a_i) in sums.iter_mut().zip(&a) {
                            for (sum, &b_j) in sums_i.iter_mut().zip(&b) {
                                *sum = $fmadd(a_i, b_j, *sum);
                            }
                        }
                    }
                    std::array::from_fn(|i| {
                        std::array::from_fn(|j| {
                            if j >= C {
                                return 0.0;
                            }
                            let mut sum = $reduce(sums[i][j]);
                            for at in whole..depth {
                                // SAFETY: `at < depth`.
                                let (x, y) = unsafe { (*rows[i].add(at), *columns[j].add(at)) };
                                sum = x.mul_add(y, sum);
                            }
                            sum
                        })
                    })
                }
            }
        };
    }

    dot_kernels!(
        f32_dots,
        f32,
        16,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_fmadd_ps,
        _mm512_reduce_add_ps
    );
    dot_kernels!(
        f64_dots,
        f64,
        8,
        _mm512_setzero_pd,
        _mm512_loadu_pd,
        _mm512_fmadd_pd,
        _mm512_reduce_add_pd
    );
}

#[cfg(test)]
mod tests {
    use super::{BLOCK, MOST_DEPTH, PIECE_BYTES, matmul, tail_columns};
    use crate::element::Element;
    use ndarray::{Array2, ArrayView2, ArrayViewMut2, s};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    /// `C (+)= A·B` one sum at a time, in `f64`.
    fn reference<T: Element>(
        c: &Array2<T>,
        accumulate: bool,
        a: ArrayView2<'_, T>,
        b: ArrayView2<'_, T>,
    ) -> Array2<f64> {
        Array2::from_shape_fn(c.dim(), |(i, j)| {
            let start = if accumulate {
                c[[i, j]].into_f64()
            } else {
                0.0
            };
            (0..a.ncols()).fold(start, |sum, k| {
                sum + a[[i, k]].into_f64() * b[[k, j]].into_f64()
            })
        })
    }

    fn random<T: Element>(rng: &mut StdRng, shape: (usize, usize)) -> Array2<T> {
        Array2::from_shape_fn(shape, |_| T::from_f64(rng.random_range(-1.0..1.0)))
    }

    /// The columns before the tail by a plain loop, so that a wrong tail
    /// or piece shows whatever the GEMM does.
    fn plain_gemm<T: Element>(
        mut c: ArrayViewMut2<'_, T>,
        accumulate: bool,
        a: ArrayView2<'_, T>,
        b: ArrayView2<'_, T>,
    ) {
        for ((i, j), out) in c.indexed_iter_mut() {
            let sum = (0..a.ncols()).fold(T::zero(), |sum, k| sum + a[[i, k]] * b[[k, j]]);
            *out = if accumulate { *out + sum } else { sum };
        }
    }

    /// Random shapes around every edge: rows past a block and past a
    /// piece's rows, depths past a piece and not whole vectors, every tail
    /// width, `B` transposed and `C` a window of a wider array, with and
    /// without accumulating; the pieces' GEMM as a plain loop and as the
    /// crate's GEMM. Against sums in `f64`.
    fn tails_agree<T: Element>(tolerance: f64) {
        let mut rng = StdRng::seed_from_u64(7);
        let lanes = 64 / std::mem::size_of::<T>();
        let piece_rows = PIECE_BYTES / (MOST_DEPTH * std::mem::size_of::<T>());
        for case in 0..60 {
            let m = match case % 4 {
                0 => rng.random_range(1..=BLOCK + 2),
                1 => rng.random_range(piece_rows - 3..=piece_rows + 5),
                _ => rng.random_range(1..=40),
            };
            let k = match case % 3 {
                0 => rng.random_range(1..=3 * lanes),
                1 => rng.random_range(MOST_DEPTH - 2..=2 * MOST_DEPTH + 3),
                _ => rng.random_range(1..=300),
            };
            let tail = 1 + case % 8;
            let n = lanes * rng.random_range(1..=3) + tail;
            let a = random::<T>(&mut rng, (m, k));
            let b_t = random::<T>(&mut rng, (n, k));
            let b = b_t.t();
            let mut wide = random::<T>(&mut rng, (m, n + 5));
            let accumulate = case % 2 == 0;
            let expected = reference(
                &wide.slice(s![.., 2..2 + n]).to_owned(),
                accumulate,
                a.view(),
                b,
            );
            let c = wide.slice_mut(s![.., 2..2 + n]);
            if case % 5 == 0 {
                matmul(c, accumulate, a.view(), b, tail, |c, acc, a, b| {
                    crate::gemm::matmul(c, acc, a, b, 1)
                });
            } else {
                matmul(c, accumulate, a.view(), b, tail, plain_gemm);
            }
            for ((i, j), &want) in expected.indexed_iter() {
                let got = wide[[i, 2 + j]].into_f64();
                assert!(
                    (got - want).abs() <= tolerance * (1.0 + want.abs()) * (k as f64).sqrt(),
                    "case {case}: {m}x{k}x{n}, tail {tail}, [{i}, {j}]: {got} against {want}"
                );
            }
        }
    }

    #[test]
    fn tails_agree_with_sums_in_f64() {
        tails_agree::<f32>(1e-5);
        tails_agree::<f64>(1e-13);
    }

    /// Tails are split off only past a whole vector, within the limits.
    #[test]
    fn tails_are_the_columns_past_the_last_vector() {
        if !super::avx512() {
            assert_eq!(tail_columns::<f32>(49), 0);
            return;
        }
        assert_eq!(tail_columns::<f32>(49), 1);
        assert_eq!(tail_columns::<f64>(49), 1);
        assert_eq!(tail_columns::<f32>(196), 4);
        assert_eq!(tail_columns::<f32>(48), 0);
        assert_eq!(tail_columns::<f32>(7), 0);
        assert_eq!(tail_columns::<f32>(16 + 9), 0);
        assert_eq!(tail_columns::<f32>(392), 0);
    }
}
