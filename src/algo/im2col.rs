//! `Algorithm::Im2col`: the notebook's middle step, done right. One column
//! matrix per sample, built with explicit loops (padding as bounds checks,
//! not a copy: [`im2col_sample`]), and one GEMM per sample and group; the
//! input gradient goes back through col2im ([`col2im_sample_add`]).

use crate::element::Element;
use crate::gemm::matmul;
use crate::gradients::Targets;
use crate::operands::{Backward, Forward};
use crate::output::scratch_zeros;
use crate::spec::Geometry;
use ndarray::{ArrayView2, ArrayView3, ArrayViewMut2, ArrayViewMut3, ArrayViewMut4, Axis, Dim, s};

/// Per sample: `cols = im2col(x[n])`, then `y[n] (as c_out × out_pixels) =
/// W (as c_out × c_in/g·kh·kw) · cols`, group by group, plus the bias.
pub(crate) fn forward<T: Element>(op: Forward<'_, T>, mut y: ArrayViewMut4<'_, T>) {
    let Forward { x, w, bias, g } = op;
    let weights = w
        .to_shape((g.out_channels, g.col_rows() / g.groups))
        .expect("weight shape validated");
    let mut cols = scratch_zeros(Dim([g.col_rows(), g.out_pixels()]));
    let mut product = scratch_zeros(Dim([g.out_channels, g.out_pixels()]));
    let (rows_g, c_out_g) = (g.col_rows() / g.groups, g.out_channels_per_group());
    for (x_n, mut y_n) in x.outer_iter().zip(y.outer_iter_mut()) {
        im2col_sample(x_n, g, cols.view_mut());
        for group in 0..g.groups {
            let out_rows = group * c_out_g..(group + 1) * c_out_g;
            matmul(
                product.slice_mut(s![out_rows.clone(), ..]),
                false,
                weights.slice(s![out_rows, ..]),
                cols.slice(s![group * rows_g..(group + 1) * rows_g, ..]),
                1,
            );
        }
        for (co, (mut y_c, p_c)) in y_n.outer_iter_mut().zip(product.outer_iter()).enumerate() {
            let b = bias.map_or(T::zero(), |b| b[co]);
            let p_c = p_c
                .into_shape_with_order((g.out_h, g.out_w))
                .expect("row of out_pixels");
            y_c.zip_mut_with(&p_c, |y, &p| *y = p + b);
        }
    }
}

/// Per sample: `dW += dY[n] · cols^T`, `dcols = W^T · dY[n]`, then
/// `dx[n] = col2im(dcols)`; `db` is the sum of `dy` over batch and pixels.
/// Each for the gradients present in `grads`.
pub(crate) fn backward<T: Element>(op: Backward<'_, T>, grads: Targets<'_, T>) {
    let Backward { x, w, dy, g } = op;
    let Targets { mut dx, dw, db } = grads;
    if let Some(dx) = dx.as_mut() {
        dx.fill(T::zero());
    }
    let rows_g = g.col_rows() / g.groups;
    let c_out_g = g.out_channels_per_group();
    let weights = w
        .to_shape((g.out_channels, rows_g))
        .expect("weight shape validated");
    let mut dw_mat = scratch_zeros(Dim([g.out_channels, rows_g]));
    let mut cols = scratch_zeros(Dim([g.col_rows(), g.out_pixels()]));
    let mut dcols = scratch_zeros(Dim([g.col_rows(), g.out_pixels()]));
    for (n, (x_n, dy_n)) in x.outer_iter().zip(dy.outer_iter()).enumerate() {
        let dy_mat = dy_n
            .to_shape((g.out_channels, g.out_pixels()))
            .expect("output shape validated");
        if dw.is_some() {
            im2col_sample(x_n, g, cols.view_mut());
        }
        for group in 0..g.groups {
            let out_rows = group * c_out_g..(group + 1) * c_out_g;
            let col_rows = group * rows_g..(group + 1) * rows_g;
            if dw.is_some() {
                matmul(
                    dw_mat.slice_mut(s![out_rows.clone(), ..]),
                    true,
                    dy_mat.slice(s![out_rows.clone(), ..]),
                    cols.slice(s![col_rows.clone(), ..]).reversed_axes(),
                    1,
                );
            }
            if dx.is_some() {
                matmul(
                    dcols.slice_mut(s![col_rows, ..]),
                    false,
                    weights.slice(s![out_rows.clone(), ..]).reversed_axes(),
                    dy_mat.slice(s![out_rows, ..]),
                    1,
                );
            }
        }
        if let Some(dx) = dx.as_mut() {
            col2im_sample_add(dcols.view(), g, dx.index_axis_mut(Axis(0), n));
        }
    }
    if let Some(mut dw) = dw {
        let dw_shape = dw.raw_dim();
        dw.assign(
            &dw_mat
                .into_shape_with_order(dw_shape)
                .expect("weight shape validated"),
        );
    }
    if let Some(mut db) = db {
        db.assign(&dy.sum_axis(Axis(3)).sum_axis(Axis(2)).sum_axis(Axis(0)));
    }
}

/// Signed input coordinate of kernel tap `tap` at output position `out`, or
/// `None` where it falls in the padding.
#[inline]
fn input_coord(
    out: usize,
    stride: usize,
    tap: usize,
    dilation: usize,
    pad: usize,
    len: usize,
) -> Option<usize> {
    (out * stride + tap * dilation)
        .checked_sub(pad)
        .filter(|&v| v < len)
}

/// The column matrix of one sample, `[c*kh*kw, out_h*out_w]`, built with
/// explicit loops from an unpadded `(c, h, w)` sample: padding is a bounds
/// check, not a copy.
fn im2col_sample<T: Element>(x: ArrayView3<'_, T>, g: &Geometry, mut cols: ArrayViewMut2<'_, T>) {
    let (c, h, w) = x.dim();
    for ch in 0..c {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let mut row = cols.row_mut((ch * g.kh + i) * g.kw + j);
                for oh in 0..g.out_h {
                    let ih = input_coord(oh, g.sh, i, g.dh, g.padding.top, h);
                    for ow in 0..g.out_w {
                        let iw = input_coord(ow, g.sw, j, g.dw, g.padding.left, w);
                        row[oh * g.out_w + ow] = match (ih, iw) {
                            (Some(ih), Some(iw)) => x[[ch, ih, iw]],
                            _ => T::zero(),
                        };
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col_sample`]: adds each column-matrix entry back onto
/// the input pixel it was read from (entries read from padding are dropped).
fn col2im_sample_add<T: Element>(
    cols: ArrayView2<'_, T>,
    g: &Geometry,
    mut dx: ArrayViewMut3<'_, T>,
) {
    let (c, h, w) = dx.dim();
    for ch in 0..c {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = cols.row((ch * g.kh + i) * g.kw + j);
                for oh in 0..g.out_h {
                    let Some(ih) = input_coord(oh, g.sh, i, g.dh, g.padding.top, h) else {
                        continue;
                    };
                    for ow in 0..g.out_w {
                        if let Some(iw) = input_coord(ow, g.sw, j, g.dw, g.padding.left, w) {
                            dx[[ch, ih, iw]] += row[oh * g.out_w + ow];
                        }
                    }
                }
            }
        }
    }
}
