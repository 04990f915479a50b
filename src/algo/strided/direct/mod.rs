//! The direct kernel the strided algorithm uses for small groups (depthwise,
//! or few input channels per group and a small kernel), where lowering to a
//! GEMM costs more in copying than the GEMM saves: each column-matrix element
//! would be used by only a handful of output channels.
//!
//! Per sample and output channel, the output plane (a few KiB, in L1) is
//! built tap by tap: for every kernel tap `(c, i, j)`, each output row gets
//! `w[co, c, i, j]` times a row of the padded input added to it, an axpy over
//! contiguous memory when the stride is 1. Backward runs the same loops: the
//! weight gradient as dot products of error rows with input rows, the input
//! gradient as axpys of error rows into a padded accumulator.
//!
//! `tiled.rs` has a faster forward pass for kernels up to 16 wide, which
//! keeps a tile of outputs in registers over every tap; `stencil.rs` its
//! one-output-channel tiles (depthwise layers) for 3x3 and 5x5 kernels at
//! unit stride. A band of output rows copies, padded, only the input rows
//! its windows read ([`padded_band`]); a layer of one output channel a
//! group, all stencils, pads one group's planes at a time instead.

pub(crate) mod channel_vector_gradients;
pub(crate) mod channel_vectors;
mod deinterleaved;
pub(crate) mod deinterleaved_gradients;
pub(crate) mod depthwise;
pub(crate) mod narrow_planes;
pub(crate) mod split_in_registers;
pub(crate) mod stencil;
pub(crate) mod stencil_gradients;
pub(crate) mod tiled;
pub(crate) mod tiled_avx2;
mod two_rows;

use crate::algo::strided::simd::with_runtime_simd;
use crate::element::Element;
use crate::gradients::{GradientSelection, Targets};
use crate::lanes::{Partials, Reach, Sums, Work};
use crate::layout::nchw::{SourceLayout, crop_into, pad_into, padded_sample};
use crate::operands::{Backward, Forward};
use crate::spec::{Geometry, Padding};
use crate::workspace::{Workspace, scratch};
use ndarray::{
    ArrayView1, ArrayView2, ArrayView4, ArrayViewMut1, ArrayViewMut3, ArrayViewMut4, Axis, s,
};
use std::ops::Range;

/// Output rows `rows` of `g` as a geometry of their own, and where the
/// window of the band's first row starts in a padded input plane: the
/// loops below compute a band of a sample as if it were the whole output.
pub(super) fn row_band(g: &Geometry, rows: &Range<usize>) -> (Geometry, usize) {
    let wp = g.in_w + g.padding.left + g.padding.right;
    let band = Geometry {
        out_h: rows.len(),
        ..*g
    };
    (band, rows.start * g.sh * wp)
}

/// The padded input a band of output rows `rows` reads, for a forward
/// pass: the sample's zero-copy input with the band's offset when it needs
/// no padding, else a padded copy of the input rows the band's windows
/// cover, alone, in `buf`, with the geometry that describes that copy (its
/// `in_h` and padding the band's, `out_h` the band's rows). Each lane then
/// copies its own rows rather than the whole sample.
pub(super) fn padded_band<'a, T: Element>(
    x: ArrayView4<'a, T>,
    n: usize,
    g: &Geometry,
    rows: &Range<usize>,
    buf: &'a mut Vec<T>,
) -> ((&'a [T], usize), Geometry) {
    if g.padding.is_zero()
        && let Some(in_place) = x.slice_move(s![n..n + 1, .., .., ..]).to_slice()
    {
        let (band, offset) = row_band(g, rows);
        return ((in_place, offset), band);
    }
    let (input_rows, band) = band_input(g, rows);
    let rows_read = x.slice_move(s![n..n + 1, .., input_rows, ..]);
    let wp = g.in_w + g.padding.left + g.padding.right;
    let hp = band.in_h + band.padding.top + band.padding.bottom;
    let copy = scratch(buf, g.in_channels * hp * wp);
    pad_into(rows_read, band.padding, 1, copy);
    ((copy, 0), band)
}

/// The padded input of the whole samples `samples`, one after another:
/// the zero-copy input where the layer needs no padding and the samples
/// are contiguous, else a padded copy in `buf`; with the distance between
/// samples.
pub(super) fn padded_samples<'a, T: Element>(
    x: ArrayView4<'a, T>,
    samples: Range<usize>,
    g: &Geometry,
    buf: &'a mut Vec<T>,
) -> (&'a [T], usize) {
    let wp = g.in_w + g.padding.left + g.padding.right;
    let hp = g.in_h + g.padding.top + g.padding.bottom;
    let sample_step = g.in_channels * hp * wp;
    let x = x.slice_move(s![samples, .., .., ..]);
    if g.padding.is_zero()
        && let Some(in_place) = x.to_slice()
    {
        return (in_place, sample_step);
    }
    let copy = scratch(buf, x.len_of(Axis(0)) * sample_step);
    pad_into(x, g.padding, 1, copy);
    (copy, sample_step)
}

/// `planes` (a plane of `y`'s rows a channel, one after another) into
/// `y` (`[channels, rows, width]`), each channel's rows by one copy where
/// they are contiguous (a band of a standard-layout sample): ndarray's
/// assignment of the whole band goes element by element there.
pub(super) fn copy_planes<T: Element>(planes: &[T], mut y: ArrayViewMut3<'_, T>) {
    let (_, rows, width) = y.dim();
    let planes = planes.chunks_exact((rows * width).max(1));
    for (mut y_c, computed) in y.outer_iter_mut().zip(planes) {
        match y_c.as_slice_mut() {
            Some(y_c) => y_c.copy_from_slice(computed),
            None => {
                let plane = ArrayView2::from_shape((rows, width), computed).expect("one plane");
                y_c.assign(&plane);
            }
        }
    }
}

/// Zero-padded planes filled one channel (or group of channels) at a
/// time, in a buffer small enough to stay in L1 between the copy and the
/// stencil that reads it: the border is zeroed once, and each fill
/// overwrites the interior alone, since a call to `memset` and `memcpy`
/// a row costs narrow planes more than the copy.
pub(super) struct PaddedPlanes<'a, T> {
    data: &'a mut [T],
    padding: Padding,
    wp: usize,
    plane_len: usize,
}

impl<'a, T: Element> PaddedPlanes<'a, T> {
    /// `planes` planes of `rows` by `width` interior pixels, padded by
    /// `padding`, all zeros, in `buf`.
    pub(super) fn zeroed(
        buf: &'a mut Vec<T>,
        planes: usize,
        (rows, width): (usize, usize),
        padding: Padding,
    ) -> Self {
        let wp = width + padding.left + padding.right;
        let plane_len = (rows + padding.top + padding.bottom) * wp;
        let data = scratch(buf, planes * plane_len);
        data.fill(T::zero());
        PaddedPlanes {
            data,
            padding,
            wp,
            plane_len,
        }
    }

    /// Writes `image` (`[rows, width]`, any strides) into plane `index`'s
    /// interior.
    pub(super) fn fill(&mut self, index: usize, image: ArrayView2<'_, T>) {
        let (p, wp, width) = (self.padding, self.wp, image.ncols());
        let plane = &mut self.data[index * self.plane_len..(index + 1) * self.plane_len];
        let interior = plane[p.top * wp..].chunks_exact_mut(wp);
        for (line, row) in image.rows().into_iter().zip(interior) {
            copy_row(line, &mut row[p.left..p.left + width]);
        }
    }

    /// The planes, `plane_len` elements apart, rows `wp` long.
    pub(super) fn data(&self) -> &[T] {
        self.data
    }

    /// The elements of one padded plane.
    pub(super) fn plane_len(&self) -> usize {
        self.plane_len
    }

    /// The elements of one padded row.
    pub(super) fn wp(&self) -> usize {
        self.wp
    }
}

/// Copies a row into a padded plane's interior: in whole blocks of 64
/// bytes where the row holds one, the last shifted back to end on the row,
/// with no call to `memcpy`.
#[inline]
pub(super) fn copy_row<T: Element>(line: ArrayView1<'_, T>, dst: &mut [T]) {
    let Some(src) = line.as_slice() else {
        dst.iter_mut().zip(line).for_each(|(d, &v)| *d = v);
        return;
    };
    match std::mem::size_of::<T>() {
        4 => copy_in_blocks::<T, 16>(src, dst),
        _ => copy_in_blocks::<T, 8>(src, dst),
    }
}

/// `dst.copy_from_slice(src)` in blocks of `N` elements, each a copy of
/// constant size that compiles to a few vector moves.
#[inline(always)]
fn copy_in_blocks<T: Copy, const N: usize>(src: &[T], dst: &mut [T]) {
    let len = src.len();
    if len < N {
        dst.copy_from_slice(src);
        return;
    }
    let mut at = 0;
    while at < len {
        let start = at.min(len - N);
        let block: &[T; N] = src[start..start + N].try_into().expect("N elements");
        dst[start..start + N].copy_from_slice(block);
        at = start + N;
    }
}

/// The input rows that the windows of output rows `rows` read, and the
/// geometry of a band made of them alone: `in_h` those rows, the padding
/// rows above and below them that the windows reach, `out_h` the band's
/// rows (so that its first output row is row 0).
pub(super) fn band_input(g: &Geometry, rows: &Range<usize>) -> (Range<usize>, Geometry) {
    let reach = Reach::of(g);
    let (padded, reached) = (reach.padded_rows(rows), reach.input_rows(rows));
    let needed = padded.len();
    let pad_top = g.padding.top.saturating_sub(padded.start).min(needed);
    let in_h = reached.len();
    let padding = Padding {
        top: pad_top,
        bottom: needed - pad_top - in_h,
        ..g.padding
    };
    let band = Geometry {
        in_h,
        out_h: rows.len(),
        padding,
        ..*g
    };
    (reached, band)
}

/// `y += alpha · x`.
#[inline(always)]
fn axpy<T: Element>(alpha: T, x: &[T], y: &mut [T]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

/// `y[k] += alpha · x[k·stride]`.
#[inline(always)]
fn axpy_strided<T: Element>(alpha: T, x: &[T], stride: usize, y: &mut [T]) {
    if stride == 1 {
        return axpy(alpha, x, y);
    }
    for (k, y) in y.iter_mut().enumerate() {
        *y += alpha * x[k * stride];
    }
}

/// `sums[k % 8] += a[k] · b[k·stride]`: eight running sums, so that the
/// compiler can vectorise (a float sum in order cannot be) and the caller
/// reduces them once, not once per row.
#[inline(always)]
fn dot_strided_into<T: Element>(a: &[T], b: &[T], stride: usize, sums: &mut [T; 8]) {
    if stride != 1 {
        for (k, &v) in a.iter().enumerate() {
            sums[k % 8] += v * b[k * stride];
        }
        return;
    }
    let b = &b[..a.len()];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    for (k, (&x, &y)) in a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .enumerate()
    {
        sums[k] += x * y;
    }
    for (ca, cb) in a_chunks.zip(b_chunks) {
        for k in 0..8 {
            sums[k] += ca[k] * cb[k];
        }
    }
}

/// The forward pass on validated operands; writes every element of `y`.
pub(crate) fn forward<T: Element>(
    op: Forward<'_, T>,
    y: ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
) {
    let Forward { x, w, bias, g } = op;
    let schedule = ws.schedule(Work::forward(g, 1));
    let (_, lanes) = ws.memory(&schedule);
    schedule.run(lanes, y, |item, mut y_item, buffers| {
        let [source_buf, plane_buf] = buffers.split();
        for (n, y_n) in item.samples.clone().zip(y_item.outer_iter_mut()) {
            let (source, band) = padded_band(x, n, g, &item.rows, source_buf);
            forward_sample(source, w, bias, &band, y_n, plane_buf);
        }
    });
}

/// One sample's output (or band, see [`row_band`]) from its padded input,
/// in the best SIMD build the CPU runs.
fn forward_sample<T: Element>(
    source: (&[T], usize),
    w: ArrayView4<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    g: &Geometry,
    y: ArrayViewMut3<'_, T>,
    plane_buf: &mut Vec<T>,
) {
    with_runtime_simd!(
        forward_sample_avx512, forward_sample_avx2, forward_sample_body, forward_sample_body,
        source: (&[T], usize), w: ArrayView4<'_, T>, bias: Option<ArrayView1<'_, T>>,
        g: &Geometry, y: ArrayViewMut3<'_, T>, plane_buf: &mut Vec<T>,
    );
}

#[inline(always)]
fn forward_sample_body<T: Element>(
    (source, offset): (&[T], usize),
    w: ArrayView4<'_, T>,
    bias: Option<ArrayView1<'_, T>>,
    g: &Geometry,
    mut y: ArrayViewMut3<'_, T>,
    plane_buf: &mut Vec<T>,
) {
    let wp = g.in_w + g.padding.left + g.padding.right;
    let hp = g.in_h + g.padding.top + g.padding.bottom;
    let (c_in_g, c_out_g) = (g.in_channels_per_group(), g.out_channels_per_group());
    let plane_len = g.out_h * g.out_w;
    for co in 0..g.out_channels {
        let c0 = co / c_out_g * c_in_g;
        // The output plane itself when contiguous, else a scratch plane
        // copied out after.
        let mut target = y.index_axis_mut(Axis(0), co);
        let in_place = target.is_standard_layout();
        let plane = match target.as_slice_mut() {
            Some(plane) if in_place => plane,
            _ => scratch(plane_buf, plane_len),
        };
        plane.fill(bias.map_or(T::zero(), |b| b[co]));
        for cl in 0..c_in_g {
            let image = &source[(c0 + cl) * hp * wp + offset..(c0 + cl + 1) * hp * wp];
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let weight = w[[co, cl, i, j]];
                    for (oh, out_row) in plane.chunks_exact_mut(g.out_w).enumerate() {
                        let start = (oh * g.sh + i * g.dh) * wp + j * g.dw;
                        axpy_strided(weight, &image[start..], g.sw, out_row);
                    }
                }
            }
        }
        if !in_place {
            let plane =
                ArrayView2::from_shape((g.out_h, g.out_w), &plane_buf[..plane_len]).expect("sized");
            y.index_axis_mut(Axis(0), co).assign(&plane);
        }
    }
}

/// The backward pass on validated operands; overwrites the gradients
/// present, skipping the loops of the others.
pub(crate) fn backward<T: Element>(
    op: Backward<'_, T>,
    grads: Targets<'_, T>,
    ws: &mut Workspace<T>,
) {
    let Backward { x, w, dy, g } = op;
    let wanted = grads.selection();
    let Targets { dx, dw, db } = grads;
    let schedule = ws.schedule(Work::backward(g, 1));
    let (_, lanes) = ws.memory(&schedule);
    let dw_len = if wanted.weight { w.len() } else { 0 };
    let db_len = if wanted.bias { g.out_channels } else { 0 };
    let sums = schedule.run_summing(
        lanes,
        dx,
        (dw_len, db_len),
        |item, mut dx_item, buffers, mut partials| {
            let [source_buf, padded_buf, plane_buf] = buffers.split();
            let (band, offset) = row_band(g, &item.rows);
            for (local, n) in item.samples.clone().enumerate() {
                // The input is read for the weight gradient alone.
                let source: &[T] = if wanted.weight {
                    padded_sample(x, n, g, source_buf)
                } else {
                    &[]
                };
                let dy_band = dy.slice(s![n, .., item.rows.clone(), ..]);
                let dx_n = dx_item
                    .as_mut()
                    .map(|dx_item| dx_item.index_axis_mut(Axis(0), local));
                backward_sample(
                    (source, offset),
                    (w, dy_band),
                    (&band, wanted),
                    dx_n,
                    (padded_buf, plane_buf),
                    &mut partials,
                );
            }
        },
    );
    write_gradients(sums, dw, db);
}

/// The summed partials of a backward pass into the weight and bias
/// gradients asked for, the weight gradient's partials laid out as `w`.
pub(super) fn write_gradients<T: Element>(
    sums: Sums<'_, T>,
    dw: Option<ArrayViewMut4<'_, T>>,
    db: Option<ArrayViewMut1<'_, T>>,
) {
    if let Some(mut dw) = dw {
        let shape = dw.raw_dim();
        dw.assign(&ArrayView4::from_shape(shape, sums.weight).expect("sized by the schedule"));
    }
    if let Some(mut db) = db {
        db.assign(&sums.bias);
    }
}

/// One sample's input gradient (or a band's contribution to it, see
/// [`row_band`]), and its weight and bias gradients added to `partials`, in
/// the best SIMD build the CPU runs; each gradient only where `wanted`.
#[allow(clippy::type_complexity)]
fn backward_sample<T: Element>(
    source: (&[T], usize),
    operands: (ArrayView4<'_, T>, ndarray::ArrayView3<'_, T>),
    geometry: (&Geometry, GradientSelection),
    dx: Option<ArrayViewMut3<'_, T>>,
    buffers: (&mut Vec<T>, &mut Vec<T>),
    partials: &mut Partials<'_, T>,
) {
    with_runtime_simd!(
        backward_sample_avx512, backward_sample_avx2, backward_sample_body, backward_sample_body,
        source: (&[T], usize), operands: (ArrayView4<'_, T>, ndarray::ArrayView3<'_, T>),
        geometry: (&Geometry, GradientSelection),
        dx: Option<ArrayViewMut3<'_, T>>, buffers: (&mut Vec<T>, &mut Vec<T>),
        partials: &mut Partials<'_, T>,
    );
}

#[inline(always)]
fn backward_sample_body<T: Element>(
    (source, offset): (&[T], usize),
    (w, dy): (ArrayView4<'_, T>, ndarray::ArrayView3<'_, T>),
    (g, wanted): (&Geometry, GradientSelection),
    dx: Option<ArrayViewMut3<'_, T>>,
    (padded_buf, plane_buf): (&mut Vec<T>, &mut Vec<T>),
    partials: &mut Partials<'_, T>,
) {
    let wp = g.in_w + g.padding.left + g.padding.right;
    let hp = g.in_h + g.padding.top + g.padding.bottom;
    let (c_in_g, c_out_g) = (g.in_channels_per_group(), g.out_channels_per_group());
    let (kh, kw) = (g.kh, g.kw);
    let plane_len = g.out_h * g.out_w;
    // The input gradient, padded like the source.
    let want_dx = dx.is_some();
    let padded = scratch(
        padded_buf,
        if want_dx { g.in_channels * hp * wp } else { 0 },
    );
    padded.fill(T::zero());
    for co in 0..g.out_channels {
        let c0 = co / c_out_g * c_in_g;
        // The error plane: read in place when contiguous, else copied.
        let error_view = dy.slice(s![co, .., ..]);
        let error: &[T] = match error_view.to_slice() {
            Some(plane) => plane,
            None => {
                let copy = scratch(plane_buf, plane_len);
                ndarray::ArrayViewMut2::from_shape((g.out_h, g.out_w), &mut *copy)
                    .expect("sized above")
                    .assign(&error_view);
                copy
            }
        };
        // ndarray's sum runs eight partial sums on a slice; a float sum in
        // order cannot vectorise, and would cost a third of the depthwise
        // backward pass.
        if wanted.bias {
            partials.bias[co] += ArrayView1::from(error).sum();
        }
        for cl in 0..c_in_g {
            let image_range = (c0 + cl) * hp * wp + offset..(c0 + cl + 1) * hp * wp;
            let image: &[T] = if wanted.weight {
                &source[image_range.clone()]
            } else {
                &[]
            };
            let grad_image: &mut [T] = if want_dx {
                &mut padded[image_range]
            } else {
                &mut []
            };
            for i in 0..kh {
                for j in 0..kw {
                    let weight = w[[co, cl, i, j]];
                    let mut sums = [T::zero(); 8];
                    for (oh, error_row) in error.chunks_exact(g.out_w).enumerate() {
                        let start = (oh * g.sh + i * g.dh) * wp + j * g.dw;
                        if wanted.weight {
                            dot_strided_into(error_row, &image[start..], g.sw, &mut sums);
                        }
                        if !want_dx {
                            continue;
                        }
                        let end = start + (g.out_w - 1) * g.sw + 1;
                        let grad_row = &mut grad_image[start..end];
                        if g.sw == 1 {
                            axpy(weight, error_row, grad_row);
                        } else {
                            for (k, &e) in error_row.iter().enumerate() {
                                grad_row[k * g.sw] += weight * e;
                            }
                        }
                    }
                    if wanted.weight {
                        let tap_grad = sums.iter().fold(T::zero(), |acc, &v| acc + v);
                        partials.weight[((co * c_in_g + cl) * kh + i) * kw + j] += tap_grad;
                    }
                }
            }
        }
    }
    if let Some(dx) = dx {
        let layout = SourceLayout::plain((1, g.in_channels, hp, wp));
        crop_into(padded, layout, g.padding, dx.insert_axis(Axis(0)));
    }
}
