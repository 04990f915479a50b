//! Out-of-place matrix transposition between channel-major (NCHW planes)
//! and pixel-major layouts, for the pixel-major images (`pixel_major.rs`).
//!
//! The tiles go through AVX registers when the CPU has AVX (runtime
//! detection, so library users need no flags), about 2–3x faster than the
//! best scalar loop (BENCHMARKS.md, "Transposes"). The scalar loop is the
//! fallback and handles the edges.

use crate::element::Element;
use crate::output::worth_parallel_pass;
use rayon::prelude::*;

/// `dst[j·dst_stride + i] = src[i·src_stride + j]` for `i < rows`, `j <
/// cols`.
///
/// # Panics
/// If either slice is too short for its shape and stride.
pub(crate) fn transpose<T: Element>(
    src: &[T],
    src_stride: usize,
    dst: &mut [T],
    dst_stride: usize,
    (rows, cols): (usize, usize),
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        src_stride >= cols
            && dst_stride >= rows
            && src.len() >= (rows - 1) * src_stride + cols
            && dst.len() >= (cols - 1) * dst_stride + rows,
        "transpose: {rows}x{cols} from stride {src_stride} ({} elements) to stride {dst_stride} ({} elements)",
        src.len(),
        dst.len()
    );
    let tile = T::TRANSPOSE_TILE;
    let (full_rows, full_cols) = if tile > 1 {
        (rows / tile * tile, cols / tile * tile)
    } else {
        (0, 0)
    };
    // The asserts above cover every tile: its last source element is
    // (i + tile - 1)·src_stride + j + tile - 1 < (rows - 1)·src_stride + cols,
    // and likewise for the destination.
    T::transpose_tiles(src, src_stride, dst, dst_stride, (full_rows, full_cols));
    // The edges: the last rows (all columns) and the last columns of the
    // tiled rows.
    let scalar =
        |src: &[T], dst: &mut [T], rows: std::ops::Range<usize>, cols: std::ops::Range<usize>| {
            for i in rows {
                for j in cols.clone() {
                    dst[j * dst_stride + i] = src[i * src_stride + j];
                }
            }
        };
    scalar(src, dst, full_rows..rows, 0..cols);
    scalar(src, dst, 0..full_rows, full_cols..cols);
}

/// [`transpose`] on the current rayon pool's threads when the matrix is
/// large, each a block of the destination's rows (the source's columns):
/// a weight gradient of millions of elements takes one thread a tenth of
/// a batch-1 backward pass to transpose (BENCHMARKS.md, "Weight-gradient
/// layout").
pub(crate) fn transpose_on_pool<T: Element>(
    src: &[T],
    src_stride: usize,
    dst: &mut [T],
    dst_stride: usize,
    (rows, cols): (usize, usize),
) {
    if !worth_parallel_pass(rows.saturating_mul(cols)) || dst_stride == 0 {
        return transpose(src, src_stride, dst, dst_stride, (rows, cols));
    }
    // Blocks of whole tiles, enough of them for every thread several times.
    let tile = T::TRANSPOSE_TILE.max(1);
    let block = cols
        .div_ceil(8 * rayon::current_num_threads())
        .next_multiple_of(tile);
    dst.par_chunks_mut(block * dst_stride)
        .enumerate()
        .for_each(|(index, dst)| {
            let first = index * block;
            let width = block.min(cols.saturating_sub(first));
            if width > 0 {
                transpose(&src[first..], src_stride, dst, dst_stride, (rows, width));
            }
        });
}

#[cfg(test)]
mod tests {
    use super::{transpose, transpose_on_pool};

    /// Every shape around the tile sizes and the tiles' bands of 64 rows
    /// (one band and a part, two whole bands and a part), with padded
    /// strides, against the definition; elements outside the destination's
    /// shape stay untouched.
    fn check<T: crate::Element>() {
        for rows in [1, 3, 4, 5, 8, 9, 17, 72, 141] {
            for cols in [1, 2, 4, 7, 8, 16, 19] {
                check_shape::<T>((rows, cols), (cols + 3, rows + 2));
            }
        }
    }

    /// `(rows, cols)` at strides `(src_stride, dst_stride)` against the
    /// definition, the destination's padding untouched.
    fn check_shape<T: crate::Element>(
        (rows, cols): (usize, usize),
        (src_stride, dst_stride): (usize, usize),
    ) {
        let src: Vec<T> = (0..rows * src_stride)
            .map(|v| T::from_f64(v as f64))
            .collect();
        let sentinel = T::from_f64(-1.0);
        let mut dst = vec![sentinel; cols * dst_stride];
        transpose(&src, src_stride, &mut dst, dst_stride, (rows, cols));
        for j in 0..cols {
            for k in 0..dst_stride {
                let want = if k < rows {
                    src[k * src_stride + j]
                } else {
                    sentinel
                };
                assert_eq!(dst[j * dst_stride + k], want, "{rows}x{cols} at ({k}, {j})");
            }
        }
    }

    /// Destination rows whole pages apart, which take bands of 256 rows:
    /// one band and a part, and two whole bands and a part.
    fn check_rows_pages_apart<T: crate::Element>() {
        let page = 4096 / std::mem::size_of::<T>();
        for rows in [300, 600] {
            for cols in [8, 19] {
                check_shape::<T>((rows, cols), (cols + 3, rows.next_multiple_of(page)));
            }
        }
    }

    #[test]
    fn transposes_f32() {
        check::<f32>();
    }

    #[test]
    fn transposes_f64() {
        check::<f64>();
    }

    #[test]
    fn transposes_into_rows_pages_apart() {
        check_rows_pages_apart::<f32>();
        check_rows_pages_apart::<f64>();
    }

    /// Blocks on three threads, ragged at the end, give the one-thread
    /// transpose, and leave the destination's padding alone.
    #[test]
    fn transposes_on_the_pool_as_on_one_thread() {
        let (rows, cols) = (1031, 1029);
        let (src_stride, dst_stride) = (cols + 1, rows + 3);
        let src: Vec<f32> = (0..rows * src_stride).map(|v| v as f32).collect();
        let mut serial = vec![-1.0; cols * dst_stride];
        transpose(&src, src_stride, &mut serial, dst_stride, (rows, cols));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let mut pooled = vec![-1.0; cols * dst_stride];
        pool.install(|| transpose_on_pool(&src, src_stride, &mut pooled, dst_stride, (rows, cols)));
        assert!(serial == pooled);
        assert_eq!(pooled[5 * dst_stride + 7], src[7 * src_stride + 5]);
    }

    #[test]
    #[should_panic(expected = "transpose")]
    fn rejects_a_short_destination() {
        let src = [0f32; 64];
        let mut dst = [0f32; 63];
        transpose(&src, 8, &mut dst, 8, (8, 8));
    }
}
