//! Padding modes other than zeros: the input padded by copying its own
//! pixels (reflected, replicated or wrapped) before the kernels run on it
//! with no padding, and the adjoint that folds a padded input gradient
//! back onto the pixels the padding was copied from.

use crate::element::Element;
use crate::error::ConvError;
use crate::spec::{Padding, PaddingMode};
use ndarray::{ArrayView4, ArrayViewMut4, Axis, Zip};

/// A padding mode applied to inputs of one shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Border {
    mode: PaddingMode,
    padding: Padding,
    /// The unpadded input shape, `[n, c, h, w]`.
    input: [usize; 4],
}

impl Border {
    /// The border of `padding` in `mode` around inputs of shape `input`, or
    /// why the input is too small for it. `axes` names the height and
    /// width in errors.
    pub(crate) fn new(
        mode: PaddingMode,
        padding: Padding,
        input: [usize; 4],
        axes: [&'static str; 2],
    ) -> Result<Self, ConvError> {
        let sides = [
            (axes[0], padding.top.max(padding.bottom), input[2]),
            (axes[1], padding.left.max(padding.right), input[3]),
        ];
        for (axis, pad, len) in sides {
            let fits = match mode {
                PaddingMode::Zeros => true,
                PaddingMode::Reflect => pad < len,
                PaddingMode::Replicate => pad == 0 || len > 0,
                PaddingMode::Circular => pad <= len,
            };
            if !fits {
                return Err(ConvError::PaddingTooLarge {
                    mode,
                    axis,
                    padding: pad,
                    input: len,
                });
            }
        }
        Ok(Border {
            mode,
            padding,
            input,
        })
    }

    /// The unpadded input shape.
    pub(crate) fn input(&self) -> [usize; 4] {
        self.input
    }

    /// The shape of the padded input.
    pub(crate) fn padded_shape(&self) -> Result<[usize; 4], ConvError> {
        let [n, c, h, w] = self.input;
        let p = self.padding;
        let overflow = ConvError::SizeOverflow {
            what: "padded input",
        };
        let hp = h.checked_add(p.top).and_then(|v| v.checked_add(p.bottom));
        let wp = w.checked_add(p.left).and_then(|v| v.checked_add(p.right));
        Ok([n, c, hp.ok_or(overflow.clone())?, wp.ok_or(overflow)?])
    }

    /// For each index along a padded axis, the input index it copies.
    fn sources(&self, before: usize, after: usize, len: usize) -> Vec<usize> {
        let len_i = len as isize;
        (0..before + len + after)
            .map(|i| {
                let k = i as isize - before as isize;
                let source = match self.mode {
                    PaddingMode::Reflect if k < 0 => -k,
                    PaddingMode::Reflect if k >= len_i => 2 * (len_i - 1) - k,
                    PaddingMode::Replicate => k.clamp(0, len_i - 1),
                    PaddingMode::Circular => k.rem_euclid(len_i),
                    _ => k,
                };
                source as usize
            })
            .collect()
    }

    fn row_and_column_sources(&self) -> (Vec<usize>, Vec<usize>) {
        let p = self.padding;
        (
            self.sources(p.top, p.bottom, self.input[2]),
            self.sources(p.left, p.right, self.input[3]),
        )
    }

    /// Writes `x` with its border into `out` (shaped [`Self::padded_shape`]).
    pub(crate) fn pad<T: Element>(&self, x: ArrayView4<'_, T>, mut out: ArrayViewMut4<'_, T>) {
        let (rows, columns) = self.row_and_column_sources();
        Zip::from(out.axis_iter_mut(Axis(0)))
            .and(x.axis_iter(Axis(0)))
            .par_for_each(|mut out_n, x_n| {
                for (mut out_c, x_c) in out_n.outer_iter_mut().zip(x_n.outer_iter()) {
                    for (mut out_row, &row) in out_c.outer_iter_mut().zip(&rows) {
                        let x_row = x_c.row(row);
                        for (o, &column) in out_row.iter_mut().zip(&columns) {
                            *o = x_row[column];
                        }
                    }
                }
            });
    }

    /// The adjoint of [`Self::pad`]: overwrites `dx` with `grad` (shaped
    /// [`Self::padded_shape`]) summed onto the input pixels its entries were
    /// copied from, in a fixed order.
    pub(crate) fn fold<T: Element>(&self, grad: ArrayView4<'_, T>, mut dx: ArrayViewMut4<'_, T>) {
        let (rows, columns) = self.row_and_column_sources();
        Zip::from(dx.axis_iter_mut(Axis(0)))
            .and(grad.axis_iter(Axis(0)))
            .par_for_each(|mut dx_n, grad_n| {
                dx_n.fill(T::zero());
                for (mut dx_c, grad_c) in dx_n.outer_iter_mut().zip(grad_n.outer_iter()) {
                    for (grad_row, &row) in grad_c.outer_iter().zip(&rows) {
                        let mut dx_row = dx_c.row_mut(row);
                        for (&g, &column) in grad_row.iter().zip(&columns) {
                            dx_row[column] += g;
                        }
                    }
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    fn border(mode: PaddingMode, pad: usize, len: usize) -> Border {
        Border::new(mode, (0, pad).into(), [1, 1, 1, len], ["height", "width"]).unwrap()
    }

    #[test]
    fn each_mode_copies_the_pixels_pytorch_copies() {
        let cases = [
            (PaddingMode::Reflect, [2, 1, 0, 1, 2, 1, 0]),
            (PaddingMode::Replicate, [0, 0, 0, 1, 2, 2, 2]),
            (PaddingMode::Circular, [1, 2, 0, 1, 2, 0, 1]),
        ];
        for (mode, expected) in cases {
            assert_eq!(border(mode, 2, 3).sources(2, 2, 3), expected, "{mode}");
        }
    }

    #[test]
    fn too_much_padding_is_an_error() {
        let err = |mode, pad, len| {
            Border::new(mode, (0, pad).into(), [1, 1, 1, len], ["height", "width"]).is_err()
        };
        assert!(err(PaddingMode::Reflect, 3, 3));
        assert!(!err(PaddingMode::Reflect, 2, 3));
        assert!(err(PaddingMode::Circular, 4, 3));
        assert!(!err(PaddingMode::Circular, 3, 3));
        assert!(!err(PaddingMode::Replicate, 9, 1));
        assert!(err(PaddingMode::Replicate, 1, 0));
    }

    /// `⟨pad(x), g⟩ = ⟨x, fold(g)⟩`: fold is pad's adjoint.
    #[test]
    fn fold_is_the_adjoint_of_pad() {
        let input = [2, 3, 4, 5];
        let padding = Padding {
            top: 1,
            bottom: 3,
            left: 4,
            right: 2,
        };
        for mode in [
            PaddingMode::Reflect,
            PaddingMode::Replicate,
            PaddingMode::Circular,
        ] {
            let b = Border::new(mode, padding, input, ["height", "width"]).unwrap();
            let x = Array4::from_shape_fn(input, |(n, c, h, w)| {
                ((n * 7 + c * 5 + h * 3 + w) % 11) as f64 - 5.0
            });
            let shape = b.padded_shape().unwrap();
            let g = Array4::from_shape_fn(shape, |(n, c, h, w)| {
                ((n * 3 + c * 7 + h * 5 + w * 2) % 13) as f64 - 6.0
            });
            let mut padded = Array4::zeros(shape);
            b.pad(x.view(), padded.view_mut());
            let mut folded = Array4::from_elem(input, f64::NAN);
            b.fold(g.view(), folded.view_mut());
            let left = (&padded * &g).sum();
            let right = (&x * &folded).sum();
            assert!((left - right).abs() < 1e-9, "{mode}: {left} vs {right}");
        }
    }
}
