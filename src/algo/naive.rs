//! `Algorithm::Naive`: the definition of the convolution as direct loops.
//! Written to be read, not to be fast: every other algorithm is tested
//! against it.

use crate::element::Element;
use crate::gradients::Targets;
use crate::operands::{Backward, Forward};
use crate::spec::Geometry;
use ndarray::ArrayViewMut4;

/// The input pixel `(ih, iw)` that kernel tap `(i, j)` reads for output pixel
/// `(oh, ow)`, or `None` where it reads padding.
fn tap(g: &Geometry, oh: usize, ow: usize, i: usize, j: usize) -> Option<(usize, usize)> {
    let ih = (oh * g.sh + i * g.dh).checked_sub(g.padding.top)?;
    let iw = (ow * g.sw + j * g.dw).checked_sub(g.padding.left)?;
    (ih < g.in_h && iw < g.in_w).then_some((ih, iw))
}

/// `y[n, co, oh, ow] = b[co] + Σ_{c in group(co), i, j} x[n, c, oh*sh + i*dh - pt, ow*sw + j*dw - pl] · w[co, c - c0, i, j]`
pub(crate) fn forward<T: Element>(op: Forward<'_, T>, mut y: ArrayViewMut4<'_, T>) {
    let Forward { x, w, bias, g } = op;
    let (c_in_g, c_out_g) = (g.in_channels_per_group(), g.out_channels_per_group());
    for n in 0..g.batch {
        for co in 0..g.out_channels {
            let c0 = co / c_out_g * c_in_g;
            for oh in 0..g.out_h {
                for ow in 0..g.out_w {
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
                    y[[n, co, oh, ow]] = acc;
                }
            }
        }
    }
}

/// The same loops as [`forward`], each product's contribution sent back to
/// the two factors it came from: `dx += dy·w`, `dw += dy·x`, `db += dy`,
/// for the gradients present in `grads`.
pub(crate) fn backward<T: Element>(op: Backward<'_, T>, grads: Targets<'_, T>) {
    let Backward { x, w, dy, g } = op;
    let Targets {
        mut dx,
        mut dw,
        mut db,
    } = grads;
    for out in [dx.as_mut(), dw.as_mut()].into_iter().flatten() {
        out.fill(T::zero());
    }
    if let Some(db) = db.as_mut() {
        db.fill(T::zero());
    }
    let (c_in_g, c_out_g) = (g.in_channels_per_group(), g.out_channels_per_group());
    for n in 0..g.batch {
        for co in 0..g.out_channels {
            let c0 = co / c_out_g * c_in_g;
            for oh in 0..g.out_h {
                for ow in 0..g.out_w {
                    let grad = dy[[n, co, oh, ow]];
                    if let Some(db) = db.as_mut() {
                        db[co] += grad;
                    }
                    for c in 0..c_in_g {
                        for i in 0..g.kh {
                            for j in 0..g.kw {
                                if let Some((ih, iw)) = tap(g, oh, ow, i, j) {
                                    if let Some(dx) = dx.as_mut() {
                                        dx[[n, c0 + c, ih, iw]] += grad * w[[co, c, i, j]];
                                    }
                                    if let Some(dw) = dw.as_mut() {
                                        dw[[co, c, i, j]] += grad * x[[n, c0 + c, ih, iw]];
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
