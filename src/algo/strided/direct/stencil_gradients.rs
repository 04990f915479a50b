//! The direct kernel's backward pass on depthwise layers with square 3x3
//! or 5x5 kernels at unit stride and dilation, vectorised along rows:
//!
//! - input gradient: the error of each channel, padded by `k - 1 - p` on
//!   each side, correlated with the flipped kernel, which is a forward
//!   pass of the same shape, run by the stencils of `stencil.rs`;
//! - weight gradient: one pass over the error, each vector of it
//!   multiplied into the `k·k` taps' running vector sums at once (the
//!   loops of `mod.rs` read the error once per tap).
//!
//! A band of output rows reads only its rows of the input and of the error,
//! and writes its sample's whole input gradient (zeros beyond its rows'
//! reach), as the scheduler's bands do.

use super::stencil::{self, Planes};
use super::{padded_band, write_gradients};
use crate::algo::strided::simd::with_runtime_simd;
use crate::element::Element;
use crate::gradients::Targets;
use crate::lanes::{Partials, Work};
use crate::layout::nchw::pad_into;
use crate::operands::Backward;
use crate::spec::{Geometry, Padding};
use crate::workspace::{Workspace, scratch};
use ndarray::{ArrayView1, ArrayView2, ArrayView4, ArrayViewMut2, ArrayViewMut3, Axis, s};
use std::ops::Range;

/// Whether this backward pass computes `g`: depthwise (one input and one
/// output channel a group), 3x3 or 5x5 at unit stride and dilation,
/// padding within the kernel's reach (so that the input gradient's
/// padding, `k - 1 - p`, is not negative), and an input plane of at least
/// a stencil tile.
pub(crate) fn applies<T: Element>(g: &Geometry) -> bool {
    let depthwise = g.in_channels_per_group() == 1 && g.out_channels_per_group() == 1;
    let p = g.padding;
    let within = [p.top, p.bottom, p.left, p.right]
        .iter()
        .all(|&side| side < g.kh);
    depthwise && within && stencil::fits::<T>(&input_gradient_geometry(g))
}

/// The input gradient as a forward pass: the error, padded by `k - 1 - p`,
/// in; the input gradient out; the same kernel size.
fn input_gradient_geometry(g: &Geometry) -> Geometry {
    let reach = g.kh - 1;
    let p = g.padding;
    Geometry {
        in_h: g.out_h,
        in_w: g.out_w,
        out_h: g.in_h,
        out_w: g.in_w,
        padding: Padding {
            top: reach.saturating_sub(p.top),
            bottom: reach.saturating_sub(p.bottom),
            left: reach.saturating_sub(p.left),
            right: reach.saturating_sub(p.right),
        },
        ..*g
    }
}

/// The backward pass; overwrites the gradients present.
pub(crate) fn backward<T: Element>(
    op: Backward<'_, T>,
    grads: Targets<'_, T>,
    ws: &mut Workspace<T>,
) {
    let Backward { x, w, dy, g } = op;
    let wanted = grads.selection();
    let Targets { dx, dw, db } = grads;
    let k = g.kh;
    let schedule = ws.schedule(Work::backward(g, 1));
    let (flipped_buf, lanes) = ws.memory(&schedule);
    // Each channel's kernel, turned by 180°, for the input gradient.
    let flipped = scratch(flipped_buf, g.out_channels * k * k);
    for (channel, filter) in w.outer_iter().enumerate() {
        for (tap, &v) in filter.iter().enumerate() {
            flipped[channel * k * k + k * k - 1 - tap] = v;
        }
    }
    let flipped: &[T] = flipped;
    let dw_len = if wanted.weight { w.len() } else { 0 };
    let db_len = if wanted.bias { g.out_channels } else { 0 };
    let sums = schedule.run_summing(
        lanes,
        dx,
        (dw_len, db_len),
        |item, mut dx_item, buffers, mut partials| {
            let [source_buf, error_buf, plane_buf] = buffers.split();
            for (local, n) in item.samples.clone().enumerate() {
                let dy_band = dy.slice(s![n, .., item.rows.clone(), ..]);
                if wanted.weight || wanted.bias {
                    let source = wanted
                        .weight
                        .then(|| padded_band(x, n, g, &item.rows, source_buf));
                    weight_gradients(source, dy_band, g, &mut partials, plane_buf);
                }
                if let Some(dx_item) = &mut dx_item {
                    let dx_n = dx_item.index_axis_mut(Axis(0), local);
                    let error = (dy, n, &item.rows);
                    input_gradient(error, flipped, g, dx_n, (error_buf, plane_buf));
                }
            }
        },
    );
    write_gradients(sums, dw, db);
}

/// Sample `n`'s input gradient from its error rows `rows` alone (the whole
/// sample's, zeros beyond their reach), into `dx` (`(c, in_h, in_w)`).
fn input_gradient<T: Element>(
    (dy, n, rows): (ArrayView4<'_, T>, usize, &Range<usize>),
    flipped: &[T],
    g: &Geometry,
    mut dx: ArrayViewMut3<'_, T>,
    (error_buf, plane_buf): (&mut Vec<T>, &mut Vec<T>),
) {
    let gx = input_gradient_geometry(g);
    let p = gx.padding;
    let (hp, wp) = (g.out_h + p.top + p.bottom, g.out_w + p.left + p.right);
    // The band's error rows where they lie in the sample's padded error,
    // zeros elsewhere.
    let band_padding = Padding {
        top: p.top + rows.start,
        bottom: p.bottom + (g.out_h - rows.end),
        ..p
    };
    let padded = scratch(error_buf, g.out_channels * hp * wp);
    pad_into(
        dy.slice(s![n..n + 1, .., rows.clone(), ..]),
        band_padding,
        1,
        padded,
    );
    let (k, plane) = (g.kh, g.in_h * g.in_w);
    for (c, mut dx_c) in dx.outer_iter_mut().enumerate() {
        let planes = Planes {
            source: &padded[c * hp * wp..(c + 1) * hp * wp],
            plane_len: hp * wp,
            wp,
            c_in_g: 1,
        };
        let weights = &flipped[c * k * k..(c + 1) * k * k];
        match dx_c.as_slice_mut() {
            Some(out) => stencil::plane(planes, weights, T::zero(), &gx, out),
            None => {
                let out = scratch(plane_buf, plane);
                stencil::plane(planes, weights, T::zero(), &gx, out);
                let out = ArrayView2::from_shape((g.in_h, g.in_w), &*out).expect("sized above");
                dx_c.assign(&out);
            }
        }
    }
}

/// Adds a band's weight gradient (where `source`, its padded input rows
/// and their geometry, is given) and bias gradient to `partials`.
fn weight_gradients<T: Element>(
    source: Option<((&[T], usize), Geometry)>,
    dy: ndarray::ArrayView3<'_, T>,
    g: &Geometry,
    partials: &mut Partials<'_, T>,
    plane_buf: &mut Vec<T>,
) {
    let k = g.kh;
    for (c, error) in dy.outer_iter().enumerate() {
        // The error plane, contiguous, copied if its view is not.
        let (rows, width) = error.dim();
        let error: &[T] = match error.to_slice() {
            Some(plane) => plane,
            None => {
                let copy = scratch(plane_buf, error.len());
                ArrayViewMut2::from_shape(error.raw_dim(), &mut *copy)
                    .expect("sized above")
                    .assign(&error);
                copy
            }
        };
        if !partials.bias.is_empty() {
            // A slice's sum runs eight partial sums, which vectorise.
            partials.bias[c] += ArrayView1::from(error).sum();
        }
        let Some(((source, offset), band)) = source else {
            continue;
        };
        // The band's input rows: its output rows and the kernel's reach
        // below them (unit stride), in a plane of `hp` rows.
        let wp = band.in_w + band.padding.left + band.padding.right;
        let hp = band.in_h + band.padding.top + band.padding.bottom;
        let start = c * hp * wp + offset;
        let image = Image {
            data: &source[start..start + (rows + k - 1) * wp],
            wp,
        };
        let taps = &mut partials.weight[c * k * k..][..k * k];
        tap_sums(Error { data: error, width }, image, taps);
    }
}

/// A contiguous error plane, `width` pixels a row.
#[derive(Clone, Copy)]
struct Error<'a, T> {
    data: &'a [T],
    width: usize,
}

/// Rows of a padded input plane, `wp` elements a row.
#[derive(Clone, Copy)]
struct Image<'a, T> {
    data: &'a [T],
    wp: usize,
}

/// `taps[i·k + j] += Σ_(oh, ow) error[oh, ow] · image[oh + i, ow + j]`, in
/// the best SIMD build the CPU runs.
fn tap_sums<T: Element>(error: Error<'_, T>, image: Image<'_, T>, taps: &mut [T]) {
    with_runtime_simd!(
        tap_sums_avx512, tap_sums_avx2, tap_sums_body::<T, true>, tap_sums_body::<T, false>,
        error: Error<'_, T>, image: Image<'_, T>, taps: &mut [T],
    );
}

#[inline(always)]
fn tap_sums_body<T: Element, const FUSED: bool>(
    error: Error<'_, T>,
    image: Image<'_, T>,
    taps: &mut [T],
) {
    match (taps.len(), std::mem::size_of::<T>()) {
        (9, 4) => tap_sums_sized::<T, 3, 16, FUSED>(error, image, taps),
        (9, _) => tap_sums_sized::<T, 3, 8, FUSED>(error, image, taps),
        (_, 4) => tap_sums_sized::<T, 5, 16, FUSED>(error, image, taps),
        _ => tap_sums_sized::<T, 5, 8, FUSED>(error, image, taps),
    }
}

/// [`tap_sums`] for a `K`x`K` kernel, one kernel row at a time: `K`
/// running sums of `VECTOR` lanes (registers) over whole vectors of each
/// error row, the row's last few pixels one by one.
#[inline(always)]
fn tap_sums_sized<T: Element, const K: usize, const VECTOR: usize, const FUSED: bool>(
    error: Error<'_, T>,
    image: Image<'_, T>,
    taps: &mut [T],
) {
    for i in 0..K {
        let sums = kernel_row_sums::<T, K, VECTOR, FUSED>(error, image, i);
        for (tap, sum) in taps[i * K..(i + 1) * K].iter_mut().zip(sums) {
            *tap += sum;
        }
    }
}

/// `Σ_(oh, ow) error[oh, ow] · image[oh + i, ow + j]` for each `j < K`.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn kernel_row_sums<T: Element, const K: usize, const VECTOR: usize, const FUSED: bool>(
    error: Error<'_, T>,
    image: Image<'_, T>,
    i: usize,
) -> [T; K] {
    let width = error.width;
    let whole = width / VECTOR * VECTOR;
    let mut acc = [[T::zero(); VECTOR]; K];
    let mut rest = [T::zero(); K];
    let lines = image.data[i * image.wp..].chunks(image.wp);
    for (error_row, line) in error.data.chunks_exact(width).zip(lines) {
        for ow in (0..whole).step_by(VECTOR) {
            let e: &[T; VECTOR] = error_row[ow..ow + VECTOR]
                .try_into()
                .expect("a whole vector of the row");
            add_vector::<T, K, VECTOR, FUSED>(e, &line[ow..], &mut acc);
        }
        if whole < width && width >= VECTOR {
            // The row's last vector, shifted back to end on the row, its
            // lanes already summed zeroed.
            let ow = width - VECTOR;
            let mut e: [T; VECTOR] = error_row[ow..].try_into().expect("the row's last vector");
            e[..whole - ow].fill(T::zero());
            add_vector::<T, K, VECTOR, FUSED>(&e, &line[ow..], &mut acc);
        } else {
            for ow in whole..width {
                for j in 0..K {
                    rest[j] += error_row[ow] * line[ow + j];
                }
            }
        }
    }
    std::array::from_fn(|j| acc[j].iter().fold(rest[j], |a, &v| a + v))
}

/// `acc[j] += e · line[j..j + VECTOR]` for each `j < K`.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn add_vector<T: Element, const K: usize, const VECTOR: usize, const FUSED: bool>(
    e: &[T; VECTOR],
    line: &[T],
    acc: &mut [[T; VECTOR]; K],
) {
    let window = &line[..VECTOR + K - 1];
    for j in 0..K {
        let v: &[T; VECTOR] = window[j..j + VECTOR]
            .try_into()
            .expect("a window holds a vector and the kernel's reach");
        for lane in 0..VECTOR {
            acc[j][lane] = if FUSED {
                e[lane].mul_add(v[lane], acc[j][lane])
            } else {
                e[lane] * v[lane] + acc[j][lane]
            };
        }
    }
}
