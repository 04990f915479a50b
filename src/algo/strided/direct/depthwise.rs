//! The direct kernel on depthwise convolutions (one input channel and one
//! output channel a group): computed across channels.
//!
//! A depthwise layer has no reduction over channels, so a GEMM has nothing
//! to multiply, and NCHW loops run along rows as short as the image is
//! wide (seven pixels at the end of MobileNet-v2). Here each sample is
//! copied, padded, into a pixel-major buffer (`[pixel, channel]`, a tiled
//! transpose), and every tap is one multiply-add of three contiguous runs
//! of channels, as long as the layer is wide in channels (96 to 960 in
//! MobileNet-v2), whatever the image size, stride or dilation:
//!
//! - forward: `y[p, c] += w[tap, c] · x[p + tap, c]` into a pixel-major
//!   output row, transposed back into NCHW with the bias;
//! - weight gradient: `dw[tap, c] += dy[p, c] · x[p + tap, c]`, into the
//!   lane's partial laid out `[tap, c]`;
//! - input gradient: `dx[p + tap, c] += w[tap, c] · dy[p, c]`, into a
//!   padded pixel-major buffer cropped back into NCHW.
//!
//! Both passes of 3x3 layers at stride 2 on planes at least a vector wide
//! run in NCHW instead, from deinterleaved planes (`deinterleaved.rs`,
//! `deinterleaved_gradients.rs`); on a CPU with AVX-512, so does the
//! forward pass of 3x3 layers at unit stride and at stride 2 on narrower
//! planes, on masked vector rows (`narrow_planes.rs`,
//! `split_in_registers.rs`), and the backward pass at stride 2 on planes
//! at least half a vector wide (`deinterleaved_gradients.rs`). Without
//! those rows, the forward pass of a wide layer whose planes a register
//! stencil fits (3x3 and 5x5 at unit stride, 8 to 15 `f32` columns with
//! AVX2) runs on the stencils of `stencil.rs`.
//!
//! The passes share a sample out in blocks of channels (whole planes in and
//! out) where the layer is wide enough, else in bands of output rows; the
//! backward pass does so at batch 1 only, where no weight gradient is
//! summed across lanes.

use super::band_input;
use super::{deinterleaved, deinterleaved_gradients, narrow_planes, stencil, tiled};
use crate::algo::strided::simd::with_runtime_simd;
use crate::element::Element;
use crate::gradients::{GradientSelection, Targets};
use crate::lanes::{Sums, Work};
use crate::layout::pixel_major::Image;
use crate::nonfinite::all_finite_on_pool;
use crate::operands::{Backward, Forward};
use crate::spec::Geometry;
use crate::workspace::{Workspace, scratch};
use ndarray::{ArrayView4, Axis, s};
use std::ops::Range;
use std::sync::Mutex;

/// Channels a block of a sample holds, a multiple of: one vector of `f32`
/// (two of `f64`), so that a block's pixel-major rows start on a vector.
pub(crate) const CHANNEL_GRANULE: usize = 16;

/// Whether the layer is wide enough to cut into blocks of channels: four
/// blocks or more, so that two lanes' shares of a sample differ by at most
/// a quarter (fewer channels leave the rows to cut). A block transposes
/// whole planes of the input (one run of memory in NCHW) and writes whole
/// planes of the output, where a band transposes a few rows of every plane
/// and reads the rows around it twice (BENCHMARKS.md, "Depthwise channel
/// blocks").
fn wide_in_channels(g: &Geometry) -> bool {
    g.in_channels >= 4 * CHANNEL_GRANULE
}

/// Whether the forward pass on `threads` threads cuts each sample into
/// blocks of channels rather than bands of output rows: on a wide layer
/// ([`wide_in_channels`]) whose batch has at least two blocks a thread, as
/// a sample has fewer blocks (6 to 9 for MobileNet-v2's 96 to 144
/// channels) than rows, and bands keep many threads busy where blocks
/// would not (BENCHMARKS.md, "Scaling by simulation"). Either way each
/// channel's taps add up in the same order, so the output does not depend
/// on the choice.
pub(crate) fn splits_channels(g: &Geometry, threads: usize) -> bool {
    let blocks = g.in_channels.div_ceil(CHANNEL_GRANULE);
    wide_in_channels(g) && g.batch * blocks >= 2 * threads
}

/// What the forward pass on `threads` threads divides among lanes: blocks
/// of channels ([`splits_channels`]) or bands of output rows, each costed
/// by its multiply-adds, as every pass is (its copies in and out cost
/// more, but on small layers the lanes they would wake cost more still:
/// BENCHMARKS.md, "Depthwise channel blocks").
pub(crate) fn forward_work(g: &Geometry, threads: usize) -> Work {
    if deinterleaved::applies(g) {
        return deinterleaved::work(g);
    }
    if !narrow_in_registers(g) && on_stencils::<f32>(g) {
        return stencil_work(g);
    }
    if splits_channels(g, threads) {
        let channel_flops = 2 * g.kh * g.kw * g.out_h * g.out_w;
        return Work::channel_blocks(g.batch, g.in_channels, CHANNEL_GRANULE, channel_flops)
            .bound_by_memory(g);
    }
    Work::forward(g, 1)
}

/// Whether the forward pass runs on the register stencils (`stencil.rs`),
/// whole planes in blocks of channels ([`forward_on_stencils`]): a wide
/// layer ([`wide_in_channels`]) whose planes a stencil tile fits, on a CPU
/// without the masked rows of [`narrow_in_registers`] (8 to 15 `f32`
/// columns with AVX2, as MobileNet-v2's 14x14 planes). The stencils run
/// each plane in NCHW, where this module's kernel transposes every plane in
/// and out (BENCHMARKS.md, "Stencil gradients on narrow planes"). Blocks of
/// whole planes rather than bands, whatever the threads: a band of under 8
/// rows does not fit a tile, and each plane's sums run in one order.
fn on_stencils<T: Element>(g: &Geometry) -> bool {
    wide_in_channels(g) && stencil::fits::<T>(g)
}

/// What [`forward_on_stencils`] divides among lanes: blocks of channels cut
/// at any channel (a plane in NCHW needs no vector of channels), each
/// channel costed by its multiply-adds.
fn stencil_work(g: &Geometry) -> Work {
    let channel_flops = 2 * g.kh * g.kw * g.out_h * g.out_w;
    Work::channel_blocks(g.batch, g.in_channels, 1, channel_flops).bound_by_memory(g)
}

/// [`forward`] on the register stencils ([`on_stencils`]), the scheduler
/// cutting `y` with its channel and row axes swapped into blocks of whole
/// planes.
fn forward_on_stencils<T: Element>(
    op: Forward<'_, T>,
    y: ndarray::ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
) {
    let Forward { x, w, bias, g } = op;
    let schedule = ws.schedule(stencil_work(g));
    let (_, lanes) = ws.memory(&schedule);
    schedule.run(
        lanes,
        y.permuted_axes([0, 2, 1, 3]),
        |item, y_item, buffers| {
            let [planes_buf, plane_buf, taps_buf] = buffers.split();
            let channels = item.rows.clone();
            let block = block_geometry(g, &channels);
            let taps = contiguous(w.slice(s![channels.clone(), .., .., ..]), taps_buf);
            let bias = bias.map(|b| b.slice_move(s![channels.clone()]));
            let mut y_item = y_item.permuted_axes([0, 2, 1, 3]);
            for (n, y_n) in item.samples.clone().zip(y_item.outer_iter_mut()) {
                let x_n = x.slice(s![n, channels.clone(), .., ..]);
                let buffers = (&mut *planes_buf, &mut *plane_buf);
                tiled::group_stencils(x_n, &block, taps, bias, buffers, y_n);
            }
        },
    );
}

/// The padded input of one sample, pixel-major, rows `in_w + left + right`
/// pixels long.
fn input_image(g: &Geometry) -> Image {
    let p = g.padding;
    Image {
        c: g.in_channels,
        h: g.in_h + p.top + p.bottom,
        w: g.in_w + p.left + p.right,
        tail: 0,
    }
}

/// The weights laid out `[tap, c]`.
fn taps_by_channel<'b, T: Element>(w: ArrayView4<'_, T>, buf: &'b mut Vec<T>) -> &'b [T] {
    let packed = scratch(buf, w.len());
    taps_by_channel_into(w, packed);
    packed
}

/// The weights laid out `[tap, c]` into `packed` (`w.len()` elements).
fn taps_by_channel_into<T: Element>(w: ArrayView4<'_, T>, packed: &mut [T]) {
    let (c, _, kh, kw) = w.dim();
    debug_assert_eq!(w.len(), c * kh * kw, "one input channel a group");
    for (channel, filter) in w.outer_iter().enumerate() {
        // `filter` is `(1, kh, kw)`: its elements in order are the taps.
        for (tap, &v) in filter.iter().enumerate() {
            packed[tap * c + channel] = v;
        }
    }
}

/// `acc[k] += a[k] · b[k]`, a vector at a time, fused where the caller
/// was compiled with FMA.
#[inline(always)]
fn multiply_add<T: Element, const FUSED: bool>(acc: &mut [T], a: &[T], b: &[T]) {
    for ((acc, &a), &b) in acc.iter_mut().zip(a).zip(b) {
        *acc = if FUSED {
            a.mul_add(b, *acc)
        } else {
            a * b + *acc
        };
    }
}

/// The forward pass; writes every element of `y`.
pub(crate) fn forward<T: Element>(
    op: Forward<'_, T>,
    y: ndarray::ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
) {
    if deinterleaved::applies(op.g) {
        return deinterleaved::forward(op, y, ws);
    }
    let threads = rayon::current_num_threads();
    if narrow_in_registers(op.g) {
        return forward_narrow(op, y, ws, threads);
    }
    if on_stencils::<T>(op.g) {
        return forward_on_stencils(op, y, ws);
    }
    if splits_channels(op.g, threads) {
        return forward_by_channels(op, y, ws, threads);
    }
    let Forward { x, w, bias, g } = op;
    let output = Image {
        c: g.out_channels,
        h: g.out_h,
        w: g.out_w,
        tail: 0,
    };
    let schedule = ws.schedule(forward_work(g, threads));
    let (weights_buf, lanes) = ws.memory(&schedule);
    let weights = taps_by_channel(w, weights_buf);
    schedule.run(lanes, y, |item, mut y_item, buffers| {
        let [image_buf, pixels_buf, staging_buf] = buffers.split();
        // Each item copies only the input rows its output rows read.
        let (input_rows, band) = band_input(g, &item.rows);
        let image = input_image(&band);
        let p = band.padding;
        for (n, y_n) in item.samples.clone().zip(y_item.outer_iter_mut()) {
            let x_n = x.index_axis(Axis(0), n);
            let at = (p.top, p.left);
            let data = image.fill_rows(x_n, input_rows.clone(), at, (image_buf, staging_buf));
            let pixels = scratch(pixels_buf, item.rows.len() * g.out_w * g.out_channels);
            forward_rows(data, weights, &band, 0..item.rows.len(), pixels);
            output.read_band(pixels, y_n, bias, staging_buf);
        }
    });
}

/// Whether the forward pass runs on masked vector rows in NCHW, on a CPU
/// that has them: 3x3 at unit dilation, at unit stride (`narrow_planes.rs`;
/// the layers this module gets at unit stride are those narrower than the
/// register stencils' vector) or at stride 2 (`split_in_registers.rs`, on
/// planes narrower than a vector or fewer rows high than the deinterleaved
/// planes' tiles: MobileNet-v2's 14 and 7 output pixels), rather than
/// through the pixel-major transposes (BENCHMARKS.md, "Narrow planes at
/// stride 2").
fn narrow_in_registers(g: &Geometry) -> bool {
    let stride = (g.sh, g.sw);
    (g.kh, g.kw, g.dh, g.dw) == (3, 3, 1, 1)
        && (stride == (1, 1) || stride == (2, 2))
        && narrow_planes::available()
}

/// [`forward`] on masked vector rows (`narrow_planes.rs` at unit stride,
/// `split_in_registers.rs` at stride 2), plane by plane in NCHW, over the
/// same items as the pixel-major kernel: blocks of channels
/// ([`splits_channels`], the scheduler cutting `y` with its channel and
/// row axes swapped) or bands of rows of every channel.
fn forward_narrow<T: Element>(
    op: Forward<'_, T>,
    y: ndarray::ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
    threads: usize,
) {
    let Forward { x, w, bias, g } = op;
    let by_channels = splits_channels(g, threads);
    let schedule = ws.schedule(forward_work(g, threads));
    let (_, lanes) = ws.memory(&schedule);
    let y = if by_channels {
        y.permuted_axes([0, 2, 1, 3])
    } else {
        y
    };
    schedule.run(lanes, y, |item, y_item, buffers| {
        let [input_buf, output_buf, taps_buf, bias_buf] = buffers.split();
        let (channels, rows, mut y_item) = if by_channels {
            (
                item.rows.clone(),
                0..g.out_h,
                y_item.permuted_axes([0, 2, 1, 3]),
            )
        } else {
            (0..g.in_channels, item.rows.clone(), y_item)
        };
        let taps = contiguous(w.slice(s![channels.clone(), .., .., ..]), taps_buf);
        let bias = bias.map(|b| contiguous(b.slice_move(s![channels.clone()]), bias_buf));
        let pad = (g.padding.top, g.padding.left);
        for (n, mut y_n) in item.samples.clone().zip(y_item.outer_iter_mut()) {
            let planes = contiguous(x.slice(s![n, channels.clone(), .., ..]), input_buf);
            let input = (planes, g.in_w, pad);
            let computed = write_through(y_n.view_mut(), output_buf, |out| {
                if g.sh == 1 {
                    return T::depthwise_narrow_rows(
                        input,
                        (taps, bias),
                        rows.clone(),
                        g.out_w,
                        out,
                    );
                }
                T::depthwise_stride2_rows(input, (taps, bias), rows.clone(), g.out_w, out)
            });
            debug_assert!(computed, "the CPU was found to run the kernel");
        }
    });
}

/// Runs `compute` on `view`'s elements in logical order: on its own
/// memory where that is contiguous, else on `buf`, then copied into
/// `view`. Returns what `compute` returns.
fn write_through<T: Element>(
    mut view: ndarray::ArrayViewMut3<'_, T>,
    buf: &mut Vec<T>,
    compute: impl FnOnce(&mut [T]) -> bool,
) -> bool {
    if let Some(out) = view.as_slice_mut() {
        return compute(out);
    }
    let out = scratch(buf, view.len());
    let computed = compute(out);
    let block = ndarray::ArrayView3::from_shape(view.dim(), &*out).expect("sized above");
    view.assign(&block);
    computed
}

/// The elements of `view` in logical order: its own memory where that is
/// contiguous, else a copy in `buf`.
pub(super) fn contiguous<'a, T: Element, D: ndarray::Dimension>(
    view: ndarray::ArrayView<'a, T, D>,
    buf: &'a mut Vec<T>,
) -> &'a [T] {
    if let Some(elements) = view.to_slice() {
        return elements;
    }
    let copy = scratch(buf, view.len());
    copy.iter_mut().zip(view.iter()).for_each(|(d, &v)| *d = v);
    copy
}

/// The layer restricted to the channels `channels` (one group each).
fn block_geometry(g: &Geometry, channels: &Range<usize>) -> Geometry {
    Geometry {
        in_channels: channels.len(),
        out_channels: channels.len(),
        groups: channels.len(),
        ..*g
    }
}

/// [`forward`] on `threads` threads over blocks of channels
/// ([`splits_channels`]): the
/// scheduler cuts `y` with its channel and row axes swapped, and each item
/// transposes its channels' input planes, computes them and transposes its
/// output planes back.
fn forward_by_channels<T: Element>(
    op: Forward<'_, T>,
    y: ndarray::ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
    threads: usize,
) {
    let Forward { x, w, bias, g } = op;
    let schedule = ws.schedule(forward_work(g, threads));
    let (_, lanes) = ws.memory(&schedule);
    let by_channel = y.permuted_axes([0, 2, 1, 3]);
    schedule.run(lanes, by_channel, |item, y_item, buffers| {
        let [image_buf, pixels_buf, staging_buf, weights_buf] = buffers.split();
        let channels = item.rows.clone();
        let block = block_geometry(g, &channels);
        let weights = taps_by_channel(w.slice(s![channels.clone(), .., .., ..]), weights_buf);
        let bias = bias.map(|bias| bias.slice_move(s![channels.clone()]));
        let image = input_image(&block);
        let output = Image {
            c: block.out_channels,
            h: g.out_h,
            w: g.out_w,
            tail: 0,
        };
        let p = g.padding;
        let mut y_item = y_item.permuted_axes([0, 2, 1, 3]);
        for (n, y_n) in item.samples.clone().zip(y_item.outer_iter_mut()) {
            let x_n = x.slice(s![n, channels.clone(), .., ..]);
            let data = image.fill_staged(x_n, (p.top, p.left), (image_buf, staging_buf));
            let pixels = scratch(pixels_buf, g.out_h * g.out_w * block.out_channels);
            forward_rows(data, weights, &block, 0..g.out_h, pixels);
            output.read_band(pixels, y_n, bias, staging_buf);
        }
    });
}

/// Output rows `rows` of one sample, pixel-major, into `out`.
fn forward_rows<T: Element>(
    data: &[T],
    weights: &[T],
    g: &Geometry,
    rows: std::ops::Range<usize>,
    out: &mut [T],
) {
    with_runtime_simd!(
        forward_rows_avx512, forward_rows_avx2, forward_rows_body::<T, true>, forward_rows_body::<T, false>,
        data: &[T], weights: &[T], g: &Geometry, rows: std::ops::Range<usize>, out: &mut [T],
    );
}

#[inline(always)]
fn forward_rows_body<T: Element, const FUSED: bool>(
    data: &[T],
    weights: &[T],
    g: &Geometry,
    rows: std::ops::Range<usize>,
    out: &mut [T],
) {
    if std::mem::size_of::<T>() == 4 {
        forward_rows_blocked::<T, 64, 16, FUSED>(data, weights, g, rows, out);
    } else {
        forward_rows_blocked::<T, 32, 8, FUSED>(data, weights, g, rows, out);
    }
}

/// Each output pixel's channels in blocks of `BLOCK` (four vectors), then
/// of `VECTOR`, each block's sums kept in registers over every tap and
/// stored once (summed in memory, the accumulator was loaded and stored
/// once a tap); the last few channels in memory.
#[inline(always)]
fn forward_rows_blocked<T: Element, const BLOCK: usize, const VECTOR: usize, const FUSED: bool>(
    data: &[T],
    weights: &[T],
    g: &Geometry,
    rows: std::ops::Range<usize>,
    out: &mut [T],
) {
    let c = g.in_channels;
    let wp = g.in_w + g.padding.left + g.padding.right;
    let blocks = c / BLOCK * BLOCK;
    let vectors = c / VECTOR * VECTOR;
    for (local, oh) in rows.enumerate() {
        for ow in 0..g.out_w {
            let sums = &mut out[(local * g.out_w + ow) * c..][..c];
            for start in (0..blocks).step_by(BLOCK) {
                let block = channel_block::<T, BLOCK, FUSED>(data, weights, g, (oh, ow), start);
                sums[start..start + BLOCK].copy_from_slice(&block);
            }
            for start in (blocks..vectors).step_by(VECTOR) {
                let block = channel_block::<T, VECTOR, FUSED>(data, weights, g, (oh, ow), start);
                sums[start..start + VECTOR].copy_from_slice(&block);
            }
            let rest = &mut sums[vectors..];
            rest.fill(T::zero());
            for i in 0..g.kh {
                let row = (oh * g.sh + i * g.dh) * wp + ow * g.sw;
                for j in 0..g.kw {
                    let pixel = (row + j * g.dw) * c;
                    let tap = (i * g.kw + j) * c;
                    let w = &weights[tap + vectors..tap + c];
                    multiply_add::<T, FUSED>(rest, w, &data[pixel + vectors..pixel + c]);
                }
            }
        }
    }
}

/// Output pixel `(oh, ow)`'s sums over every tap of the `B` channels from
/// `start`.
#[inline(always)]
fn channel_block<T: Element, const B: usize, const FUSED: bool>(
    data: &[T],
    weights: &[T],
    g: &Geometry,
    (oh, ow): (usize, usize),
    start: usize,
) -> [T; B] {
    let c = g.in_channels;
    let wp = g.in_w + g.padding.left + g.padding.right;
    let mut acc = [T::zero(); B];
    for i in 0..g.kh {
        let row = (oh * g.sh + i * g.dh) * wp + ow * g.sw;
        for j in 0..g.kw {
            let pixel = (row + j * g.dw) * c + start;
            let tap = (i * g.kw + j) * c + start;
            let w: &[T; B] = weights[tap..tap + B].try_into().expect("a block");
            let x: &[T; B] = data[pixel..pixel + B].try_into().expect("a block");
            for k in 0..B {
                acc[k] = if FUSED {
                    w[k].mul_add(x[k], acc[k])
                } else {
                    w[k] * x[k] + acc[k]
                };
            }
        }
    }
    acc
}

/// The backward pass; overwrites the gradients present, skipping the
/// multiply-adds of the others.
pub(crate) fn backward<T: Element>(
    op: Backward<'_, T>,
    grads: Targets<'_, T>,
    ws: &mut Workspace<T>,
) {
    if deinterleaved_gradients::applies(op.g) {
        return deinterleaved_gradients::backward(op, grads, ws);
    }
    let Backward { x, w, dy, g } = op;
    let wanted = grads.selection();
    let Targets { dx, dw, db } = grads;
    let dx = match dx {
        Some(dx) if splits_channels_backward(g) => {
            return backward_by_channels(op, dx, (dw, db), wanted, ws);
        }
        dx => dx,
    };
    let c = g.in_channels;
    let taps = g.kh * g.kw;
    let error = Image {
        c,
        h: g.out_h,
        w: g.out_w,
        tail: 0,
    };
    let schedule = ws.schedule(Work::backward(g, 1));
    let (weights_buf, lanes) = ws.memory(&schedule);
    let weights = taps_by_channel(w, weights_buf);
    let narrow = narrow_backward_applies(g);
    let dw_len = if wanted.weight { taps * c } else { 0 };
    let db_len = if wanted.bias { c } else { 0 };
    let sums = schedule.run_summing(
        lanes,
        dx,
        (dw_len, db_len),
        |item, mut dx_item, buffers, partials| {
            let [image_buf, error_buf, gradient_buf, staging_buf] = buffers.split();
            if narrow && !item.is_band_of(g.out_h) {
                let samples = (item.samples.clone(), dx_item);
                let weights = (w, &mut *gradient_buf);
                let planes = (x, dy, g, wanted);
                let partials = (&mut *partials.weight, &mut *partials.bias);
                return narrow_backward(
                    planes,
                    samples,
                    weights,
                    [image_buf, error_buf, staging_buf],
                    partials,
                );
            }
            // Each item reads, and adds gradient to, only the input rows its
            // output rows' windows cover.
            let (input_rows, band) = band_input(g, &item.rows);
            let image = input_image(&band);
            let p = band.padding;
            for (local, n) in item.samples.clone().enumerate() {
                let data: &[T] = if wanted.weight {
                    let x_n = x.index_axis(Axis(0), n);
                    let at = (p.top, p.left);
                    image.fill_rows(x_n, input_rows.clone(), at, (image_buf, staging_buf))
                } else {
                    &[]
                };
                let dy_band = dy.slice(s![n, .., item.rows.clone(), ..]);
                let errors = error.fill(dy_band, (0, 0), error_buf);
                let gradient = scratch(gradient_buf, if wanted.input { image.len() } else { 0 });
                gradient.fill(T::zero());
                backward_rows(
                    (data, errors, weights),
                    (&band, wanted),
                    0..item.rows.len(),
                    (gradient, &mut *partials.weight, &mut *partials.bias),
                );
                if let Some(dx_item) = &mut dx_item {
                    let start = (p.top * image.w + p.left) * c;
                    let dx_n = dx_item.index_axis_mut(Axis(0), local);
                    // (Empty where the band lies wholly in padding.)
                    let gradient = gradient.get(start..).unwrap_or_default();
                    let rows = (input_rows.clone(), item.is_band_of(g.out_h));
                    read_gradient(&image, gradient, dx_n, rows, staging_buf);
                }
            }
        },
    );
    write_tap_sums(&sums, c, (dw, db));
}

/// Whether the backward pass computes whole samples on the masked vector
/// rows of `narrow_planes.rs`: where the forward pass does at unit stride
/// ([`narrow_in_registers`]), with at most two columns and rows of padding
/// at the left and top, so that the input gradient is the forward kernel
/// over the error, padded by the rest of the window, with the taps
/// flipped.
fn narrow_backward_applies(g: &Geometry) -> bool {
    narrow_in_registers(g) && g.sh == 1 && g.padding.top <= 2 && g.padding.left <= 2
}

/// The gradients of whole samples `samples` of a layer whose backward pass
/// [`narrow_backward_applies`], in NCHW: the weight gradient a channel at a
/// time and the bias gradient added into `partials` (`[tap, c]` and
/// `[c]`), and, where present, each sample's input gradient written into
/// `dx` (the samples' input gradients) by the forward kernel.
fn narrow_backward<T: Element>(
    (x, dy, g, wanted): (
        ArrayView4<'_, T>,
        ArrayView4<'_, T>,
        &Geometry,
        GradientSelection,
    ),
    (samples, dx): (Range<usize>, Option<ndarray::ArrayViewMut4<'_, T>>),
    (w, flipped_buf): (ArrayView4<'_, T>, &mut Vec<T>),
    [input_buf, error_buf, staging_buf]: [&mut Vec<T>; 3],
    (weight, bias): (&mut [T], &mut [T]),
) {
    let c = g.in_channels;
    let (in_plane, out_plane) = (g.in_h * g.in_w, g.out_h * g.out_w);
    let pad = (g.padding.top, g.padding.left);
    // Each channel's taps turned half a turn: tap `t` of the flipped filter
    // is tap `8 − t`.
    let flipped = scratch(flipped_buf, 9 * c);
    for (ch, filter) in w.outer_iter().enumerate() {
        for (t, &v) in filter.iter().enumerate() {
            flipped[9 * ch + 8 - t] = v;
        }
    }
    let mut dx = dx;
    for (local, n) in samples.enumerate() {
        let errors = contiguous(dy.index_axis(Axis(0), n), error_buf);
        if wanted.weight || wanted.bias {
            let inputs = if wanted.weight {
                contiguous(x.index_axis(Axis(0), n), input_buf)
            } else {
                &[]
            };
            if wanted.bias {
                for (ch, error) in errors[..c * out_plane].chunks_exact(out_plane).enumerate() {
                    // Eight running sums (ndarray's sum of a slice): a float
                    // sum in order cannot vectorise, and costs a 7x7 plane
                    // as much as its weight gradient.
                    bias[ch] += ndarray::ArrayView1::from(error).sum();
                }
            }
            if wanted.weight {
                // Every channel in one call: a call a channel cost a 7x7
                // plane a tenth of its sums (BENCHMARKS.md, "Narrow planes").
                let planes = (&inputs[..c * in_plane], g.in_w, pad);
                let ran = T::depthwise_narrow_weight_gradient(
                    planes,
                    (&errors[..c * out_plane], g.out_w),
                    weight,
                );
                assert!(ran, "the CPU was found to run the kernel");
            }
        }
        if let Some(dx) = &mut dx {
            let mut dx_n = dx.index_axis_mut(Axis(0), local);
            // The error padded by the rest of each window, read by the
            // flipped taps.
            let input = (errors, g.out_w, (2 - pad.0, 2 - pad.1));
            let filters = (&flipped[..], None);
            let computed = write_through(dx_n.view_mut(), staging_buf, |out| {
                T::depthwise_narrow_rows(input, filters, 0..g.in_h, g.in_w, out)
            });
            debug_assert!(computed, "the CPU was found to run the kernel");
        }
    }
}

/// The summed partials of a backward pass over samples and bands (the
/// weight gradient laid out `[tap, c]`, for `c` channels) into `dw`
/// (`[c, 1, kh, kw]`, any layout) and `db`, where present.
pub(crate) fn write_tap_sums<T: Element>(
    sums: &Sums<'_, T>,
    c: usize,
    (dw, db): (
        Option<ndarray::ArrayViewMut4<'_, T>>,
        Option<ndarray::ArrayViewMut1<'_, T>>,
    ),
) {
    if let Some(mut dw) = dw {
        // Each filter's elements in order are the taps.
        for (channel, mut filter) in dw.outer_iter_mut().enumerate() {
            for (tap, v) in filter.iter_mut().enumerate() {
                *v = sums.weight[tap * c + channel];
            }
        }
    }
    if let Some(mut db) = db {
        db.assign(&sums.bias);
    }
}

/// Whether the backward pass cuts its sample into blocks of channels
/// ([`backward_by_channels`], and the stencil gradients' pass as it does):
/// one sample of a wide layer
/// ([`wide_in_channels`]), whatever the threads, as blocks and bands sum
/// the weight gradient in different orders and results do not depend on
/// the thread count. Each block's weight and bias gradients are then its
/// own, with nothing to sum across lanes; at larger batches the lanes have
/// whole samples, whose gradients add up.
pub(crate) fn splits_channels_backward(g: &Geometry) -> bool {
    g.batch == 1 && wide_in_channels(g)
}

/// What [`backward_by_channels`] divides among lanes: the backward pass's
/// multiply-adds (twice the forward pass's) by blocks of channels.
pub(crate) fn backward_channel_work(g: &Geometry) -> Work {
    let channel_flops = 4 * g.kh * g.kw * g.out_h * g.out_w;
    Work::channel_blocks(1, g.in_channels, CHANNEL_GRANULE, channel_flops).of_backward()
}

/// [`backward`] of one sample in blocks of channels
/// ([`splits_channels_backward`]), with its input gradient `dx` and the
/// other gradients `wanted`: the scheduler cuts `dx` with its channel and
/// row axes swapped, each item computes its channels' three gradients from
/// their planes alone and writes its weight and bias gradients into its
/// rows of one shared `[c, taps + 1]` table, which no other item writes
/// (locked once an item, uncontended).
fn backward_by_channels<T: Element>(
    op: Backward<'_, T>,
    dx: ndarray::ArrayViewMut4<'_, T>,
    (dw, db): (
        Option<ndarray::ArrayViewMut4<'_, T>>,
        Option<ndarray::ArrayViewMut1<'_, T>>,
    ),
    wanted: GradientSelection,
    ws: &mut Workspace<T>,
) {
    let Backward { x, w, dy, g } = op;
    let (c, taps) = (g.in_channels, g.kh * g.kw);
    let schedule = ws.schedule(backward_channel_work(g));
    let (table_buf, lanes) = ws.memory(&schedule);
    // Row `ch`: channel `ch`'s weight gradient (its taps), then its bias
    // gradient.
    let table = Mutex::new(scratch(table_buf, c * (taps + 1)));
    let p = g.padding;
    schedule.run(
        lanes,
        dx.permuted_axes([0, 2, 1, 3]),
        |item, dx_item, buffers| {
            let [image_buf, error_buf, gradient_buf, staging_buf, small_buf] = buffers.split();
            let channels = item.rows.clone();
            let block = block_geometry(g, &channels);
            let cb = channels.len();
            let small = scratch(small_buf, 2 * taps * cb + cb);
            let (weights, sums) = small.split_at_mut(taps * cb);
            let (dw_block, db_block) = sums.split_at_mut(taps * cb);
            taps_by_channel_into(w.slice(s![channels.clone(), .., .., ..]), weights);
            dw_block.fill(T::zero());
            db_block.fill(T::zero());
            let image = input_image(&block);
            let data: &[T] = if wanted.weight {
                let x_n = x.slice(s![0, channels.clone(), .., ..]);
                image.fill_staged(x_n, (p.top, p.left), (image_buf, staging_buf))
            } else {
                &[]
            };
            let error = Image {
                c: cb,
                h: g.out_h,
                w: g.out_w,
                tail: 0,
            };
            let errors = error.fill_staged(
                dy.slice(s![0, channels.clone(), .., ..]),
                (0, 0),
                (error_buf, staging_buf),
            );
            let gradient = scratch(gradient_buf, image.len());
            gradient.fill(T::zero());
            backward_rows(
                (data, errors, weights),
                (&block, wanted),
                0..g.out_h,
                (gradient, dw_block, db_block),
            );
            let start = (p.top * image.w + p.left) * cb;
            let mut dx_item = dx_item.permuted_axes([0, 2, 1, 3]);
            let dx_n = dx_item.index_axis_mut(Axis(0), 0);
            let gradient = gradient.get(start..).unwrap_or_default();
            read_gradient(&image, gradient, dx_n, (0..g.in_h, false), staging_buf);
            let mut table = table
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for (local, ch) in channels.enumerate() {
                let row = &mut table[ch * (taps + 1)..][..taps + 1];
                for (tap, v) in row[..taps].iter_mut().enumerate() {
                    *v = dw_block[tap * cb + local];
                }
                row[taps] = db_block[local];
            }
        },
    );
    let table = table
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let finite = all_finite_on_pool(table);
    write_channel_table(table, taps, (dw, db));
    ws.record_finite(finite);
}

/// A `[c, taps + 1]` table of each channel's weight gradient (its taps)
/// and bias gradient into `dw` (`[c, 1, kh, kw]`, any layout) and `db`,
/// where present.
pub(crate) fn write_channel_table<T: Element>(
    table: &[T],
    taps: usize,
    (dw, db): (
        Option<ndarray::ArrayViewMut4<'_, T>>,
        Option<ndarray::ArrayViewMut1<'_, T>>,
    ),
) {
    if let Some(mut dw) = dw {
        // Each filter's elements in order are its taps.
        for (mut filter, row) in dw.outer_iter_mut().zip(table.chunks_exact(taps + 1)) {
            filter.iter_mut().zip(row).for_each(|(v, &t)| *v = t);
        }
    }
    if let Some(mut db) = db {
        for (v, row) in db.iter_mut().zip(table.chunks_exact(taps + 1)) {
            *v = row[taps];
        }
    }
}

/// A band's input gradient (`gradient`, pixel-major, from its first input
/// row) into the rows `rows` of the sample's `dx` (`(c, in_h, in_w)`), and
/// for a whole sample (not a `band`, whose sum reads only the rows it
/// reaches) zeros into the rows no window reads. A contiguous `dx` is
/// filled plane by plane and row by row: a view of some of its rows would
/// take ndarray's general copy, which costs a batch-1 depthwise backward
/// pass a tenth of its time (BENCHMARKS.md, "Band sums").
fn read_gradient<T: Element>(
    image: &Image,
    gradient: &[T],
    mut dx: ndarray::ArrayViewMut3<'_, T>,
    (rows, band): (std::ops::Range<usize>, bool),
    staging_buf: &mut Vec<T>,
) {
    let (_, h, w) = dx.dim();
    if rows == (0..h) {
        image.read_staged(gradient, dx, staging_buf);
        return;
    }
    match dx.as_slice_mut() {
        // A band's sum reads only the rows it reaches.
        _ if band => {}
        Some(planes) => {
            for plane in planes.chunks_exact_mut(h * w) {
                plane[..rows.start * w].fill(T::zero());
                plane[rows.end * w..].fill(T::zero());
            }
        }
        None => {
            dx.slice_mut(s![.., ..rows.start, ..]).fill(T::zero());
            dx.slice_mut(s![.., rows.end.., ..]).fill(T::zero());
        }
    }
    if rows.is_empty() {
        return;
    }
    if dx.is_standard_layout() {
        image.read(gradient, dx, rows, None);
    } else {
        image.read_staged(gradient, dx.slice_mut(s![.., rows, ..]), staging_buf);
    }
}

/// Rows `rows` of one sample's error: their weight and bias gradients added
/// to the partials, their input gradient to `gradient` (padded like the
/// input image), each where `wanted`.
#[allow(clippy::type_complexity)]
fn backward_rows<T: Element>(
    operands: (&[T], &[T], &[T]),
    geometry: (&Geometry, GradientSelection),
    rows: std::ops::Range<usize>,
    outputs: (&mut [T], &mut [T], &mut [T]),
) {
    with_runtime_simd!(
        backward_rows_avx512, backward_rows_avx2, backward_rows_body::<T, true>, backward_rows_body::<T, false>,
        operands: (&[T], &[T], &[T]), geometry: (&Geometry, GradientSelection),
        rows: std::ops::Range<usize>, outputs: (&mut [T], &mut [T], &mut [T]),
    );
}

#[inline(always)]
fn backward_rows_body<T: Element, const FUSED: bool>(
    (data, errors, weights): (&[T], &[T], &[T]),
    (g, wanted): (&Geometry, GradientSelection),
    rows: std::ops::Range<usize>,
    (gradient, dw, db): (&mut [T], &mut [T], &mut [T]),
) {
    let c = g.in_channels;
    let wp = g.in_w + g.padding.left + g.padding.right;
    for (local, oh) in rows.enumerate() {
        for ow in 0..g.out_w {
            let e = &errors[(local * g.out_w + ow) * c..][..c];
            if wanted.bias {
                for (b, &v) in db.iter_mut().zip(e) {
                    *b += v;
                }
            }
            for i in 0..g.kh {
                let row = (oh * g.sh + i * g.dh) * wp + ow * g.sw;
                for j in 0..g.kw {
                    let pixel = (row + j * g.dw) * c;
                    let tap = (i * g.kw + j) * c;
                    if wanted.weight {
                        let dw = &mut dw[tap..tap + c];
                        multiply_add::<T, FUSED>(dw, e, &data[pixel..pixel + c]);
                    }
                    if wanted.input {
                        let gradient = &mut gradient[pixel..pixel + c];
                        multiply_add::<T, FUSED>(gradient, e, &weights[tap..tap + c]);
                    }
                }
            }
        }
    }
}
