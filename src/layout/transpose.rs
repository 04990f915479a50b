//! Out-of-place matrix transposition between channel-major (NCHW planes)
//! and pixel-major layouts, for the pixel-major images (`pixel_major.rs`).
//!
//! The tiles go through AVX registers when the CPU has AVX (runtime
//! detection, so library users need no flags), about 2–3x faster than the
//! best scalar loop (BENCHMARKS.md, "Transposes"). The scalar loop is the
//! fallback and handles the edges.

use crate::element::Element;

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
    for i in (0..full_rows).step_by(tile.max(1)) {
        for j in (0..full_cols).step_by(tile.max(1)) {
            // The asserts above cover every tile: its last source element is
            // (i + tile - 1)·src_stride + j + tile - 1 < (rows - 1)·src_stride
            // + cols, and likewise for the destination.
            T::transpose_tile(
                &src[i * src_stride + j..],
                src_stride,
                &mut dst[j * dst_stride + i..],
                dst_stride,
            );
        }
    }
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

#[cfg(test)]
mod tests {
    use super::transpose;

    /// Every shape around the tile sizes, with padded strides, against the
    /// definition; elements outside the destination's shape stay untouched.
    fn check<T: crate::Element>() {
        for rows in [1, 3, 4, 5, 8, 9, 17] {
            for cols in [1, 2, 4, 7, 8, 16, 19] {
                let (src_stride, dst_stride) = (cols + 3, rows + 2);
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
    #[should_panic(expected = "transpose")]
    fn rejects_a_short_destination() {
        let src = [0f32; 64];
        let mut dst = [0f32; 63];
        transpose(&src, 8, &mut dst, 8, (8, 8));
    }
}
