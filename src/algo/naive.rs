//! `Algorithm::Naive`: the definition of the convolution as direct loops.
//! Written to be read, not to be fast: every other algorithm is tested
//! against it.

use crate::element::Element;
use crate::gradients::Targets;
use crate::operands::{Backward, Forward};
use crate::spec::Geometry;
use ndarray::{ArrayViewMut4, Axis};

/// The input pixel `(ih, iw)` that kernel tap `(i, j)` reads for output pixel
/// `(oh, ow)`, or `None` where it reads padding.
fn tap(g: &Geometry, oh: usize, ow: usize, i: usize, j: usize) -> Option<(usize, usize)> {
    let ih = (oh * g.sh + i * g.dh).checked_sub(g.padding.top)?;
    let iw = (ow * g.sw + j * g.dw).checked_sub(g.padding.left)?;
    (ih < g.in_h && iw < g.in_w).then_some((ih, iw))
}

/// `y[n, co, oh, ow] = b[co] + Σ_{c in group(co), i, j} x[n, c, oh*sh + i*dh - pt, ow*sw + j*dw - pl] · w[co, c - c0, i, j]`
pub(crate) fn forward<T: Element>(op: Forward<'_, T>, mut y: ArrayViewMut4<'_, T>) {
    let g = op.g;
    for n in 0..g.batch {
        for co in 0..g.out_channels {
            for oh in 0..g.out_h {
                for ow in 0..g.out_w {
                    y[[n, co, oh, ow]] = output_at(&op, [n, co, oh, ow]);
                }
            }
        }
    }
}

/// One output of [`forward`], `y[n, co, oh, ow]`.
pub(crate) fn output_at<T: Element>(op: &Forward<'_, T>, [n, co, oh, ow]: [usize; 4]) -> T {
    let Forward { x, w, bias, g } = *op;
    let (c_in_g, c_out_g) = (g.in_channels_per_group(), g.out_channels_per_group());
    let c0 = co / c_out_g * c_in_g;
    let mut acc = bias.map_or(T::zero(), |b| b[co]);
    for c in 0..c_in_g {
        for i in 0..g.kh {
            for j in 0..g.kw {
                if let Some((ih, iw)) = tap(g, oh, ow, i, j) {
                    acc += x[[n, c0 + c, ih, iw]] * w[[co, c, i, j]];
                }
            }
        }
    }
    acc
}

/// One element of the weight gradient, `dw[co, c, i, j] = Σ_{n, oh, ow}
/// dy[n, co, oh, ow] · x[n, c0 + c, ih, iw]` over the output pixels whose
/// tap `(i, j)` reads the input, summed in that order.
pub(crate) fn weight_gradient_at<T: Element>(op: &Backward<'_, T>, [co, c, i, j]: [usize; 4]) -> T {
    let Backward { x, dy, g, .. } = *op;
    let c0 = co / g.out_channels_per_group() * g.in_channels_per_group();
    let mut acc = T::zero();
    for n in 0..g.batch {
        for oh in 0..g.out_h {
            for ow in 0..g.out_w {
                if let Some((ih, iw)) = tap(g, oh, ow, i, j) {
                    acc += dy[[n, co, oh, ow]] * x[[n, c0 + c, ih, iw]];
                }
            }
        }
    }
    acc
}

/// Whether tap `(i, j)` of output pixel `(oh, ow)` reads padding.
pub(crate) fn reads_padding(
    g: &Geometry,
    (oh, ow): (usize, usize),
    (i, j): (usize, usize),
) -> bool {
    tap(g, oh, ow, i, j).is_none()
}

/// The same sums as [`forward`], each product's contribution sent back to
/// the two factors it came from: `dx += dy·w`, `dw += dy·x`, `db += dy`,
/// for the gradients present in `grads`.
pub(crate) fn backward<T: Element>(op: Backward<'_, T>, grads: Targets<'_, T>) {
    let Backward { w, dy, g, .. } = op;
    let Targets { dx, dw, db } = grads;
    if let Some(mut db) = db {
        for (co, b) in db.iter_mut().enumerate() {
            *b = dy
                .index_axis(Axis(1), co)
                .iter()
                .fold(T::zero(), |acc, &v| acc + v);
        }
    }
    if let Some(mut dw) = dw {
        for ((co, c, i, j), v) in dw.indexed_iter_mut() {
            *v = weight_gradient_at(&op, [co, c, i, j]);
        }
    }
    let Some(mut dx) = dx else {
        return;
    };
    dx.fill(T::zero());
    let (c_in_g, c_out_g) = (g.in_channels_per_group(), g.out_channels_per_group());
    for n in 0..g.batch {
        for co in 0..g.out_channels {
            let c0 = co / c_out_g * c_in_g;
            for oh in 0..g.out_h {
                for ow in 0..g.out_w {
                    let grad = dy[[n, co, oh, ow]];
                    for c in 0..c_in_g {
                        for i in 0..g.kh {
                            for j in 0..g.kw {
                                if let Some((ih, iw)) = tap(g, oh, ow, i, j) {
                                    dx[[n, c0 + c, ih, iw]] += grad * w[[co, c, i, j]];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
