//! The direct kernel's backward pass on layers of one input channel a
//! group (depthwise layers, with one or more output channels a group, and
//! ungrouped layers of one input channel) with square 3x3 or 5x5 kernels
//! at unit stride and dilation, vectorised along rows:
//!
//! - input gradient: the error of each input channel's output channels,
//!   padded by `k - 1 - p` on each side, correlated with their flipped
//!   kernels, which is a forward pass of one output channel, run by the
//!   stencils of `stencil.rs`;
//! - weight gradient: the error widened to the padded input's rows, so that
//!   each tap's sum is one run over the plane, each vector of it
//!   multiplied into three kernel rows' running vector sums at once (one
//!   pass over the error for 3x3, two for 5x5; the loops of `mod.rs` read
//!   the error once per tap), in AVX-512 or AVX2 intrinsics where the CPU
//!   has them ([`tap_sums_f32`], [`tap_sums_f64`]).
//!
//! A band of output rows reads only its rows of the input and of the error,
//! and writes its sample's whole input gradient (zeros beyond its rows'
//! reach), as the scheduler's bands do. One sample of many channels is cut
//! into blocks of channels instead ([`backward_by_channels`]), whose
//! gradients are each their own. Each channel's rows are padded just
//! before its sums read them ([`PaddedPlanes`]), so the plane is in L1.

use super::stencil::{self, Planes};
use super::{PaddedPlanes, band_input, depthwise, row_band, write_gradients};
use crate::algo::strided::simd::with_runtime_simd;
use crate::element::Element;
use crate::gradients::{GradientSelection, Targets};
use crate::lanes::{Partials, Work};
use crate::nonfinite::all_finite_on_pool;
use crate::operands::Backward;
use crate::spec::{Geometry, Padding};
use crate::workspace::{Workspace, scratch};
use ndarray::{ArrayView2, ArrayView4, ArrayViewMut1, ArrayViewMut3, ArrayViewMut4, Axis, s};
use std::ops::Range;
use std::sync::Mutex;

/// Whether this backward pass computes `g`: one input channel a group
/// (depthwise layers, with any number of output channels a group, and
/// ungrouped layers of one input channel), 3x3 or 5x5 at unit stride and
/// dilation,
/// padding within the kernel's reach (so that the input gradient's
/// padding, `k - 1 - p`, is not negative), and an input plane of at least
/// a stencil tile.
pub(crate) fn applies<T: Element>(g: &Geometry) -> bool {
    let one_input_channel = g.in_channels_per_group() == 1;
    let p = g.padding;
    let within = [p.top, p.bottom, p.left, p.right]
        .iter()
        .all(|&side| side < g.kh);
    one_input_channel && within && stencil::fits::<T>(&input_gradient_geometry(g))
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
    let dx = match dx {
        Some(dx) if depthwise::splits_channels_backward(g) => {
            return backward_by_channels(op, dx, (dw, db), wanted, ws);
        }
        dx => dx,
    };
    let schedule = ws.schedule(Work::backward(g, 1));
    let (flipped_buf, lanes) = ws.memory(&schedule);
    let flipped = scratch(flipped_buf, w.len());
    flip_kernels(w, flipped);
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
                    let input = wanted.weight.then_some((x, n, &item.rows));
                    let buffers = (&mut *source_buf, &mut *plane_buf);
                    weight_gradients(input, dy_band, g, &mut partials, buffers);
                }
                if let Some(dx_item) = &mut dx_item {
                    let dx_n = dx_item.index_axis_mut(Axis(0), local);
                    let error = (dy, n, &item.rows);
                    let band = item.is_band_of(g.out_h);
                    input_gradient(error, flipped, (g, band), dx_n, (error_buf, plane_buf));
                }
            }
        },
    );
    write_gradients(sums, dw, db);
}

/// Each output channel's kernel of `w`, turned by 180° (for the input
/// gradient), into `flipped`, `[c_out, k·k]`.
fn flip_kernels<T: Element>(w: ArrayView4<'_, T>, flipped: &mut [T]) {
    let taps = w.len_of(Axis(2)) * w.len_of(Axis(3));
    for (filter, out) in w.outer_iter().zip(flipped.chunks_exact_mut(taps)) {
        for (tap, &v) in filter.iter().enumerate() {
            out[taps - 1 - tap] = v;
        }
    }
}

/// What [`backward_by_channels`] divides among lanes: blocks of input
/// channels, each with its group's output channels, at the backward
/// pass's multiply-adds (twice the forward pass's).
pub(crate) fn channel_work(g: &Geometry) -> Work {
    let channel_flops = 4 * g.out_channels_per_group() * g.kh * g.kw * g.out_h * g.out_w;
    Work::channel_blocks(1, g.in_channels, depthwise::CHANNEL_GRANULE, channel_flops).of_backward()
}

/// The backward pass of one sample in blocks of input channels (where
/// [`depthwise::splits_channels_backward`] says so, as the pixel-major
/// kernel cuts it): each item computes its channels' three gradients
/// from their whole planes, with nothing to sum across lanes, where bands
/// of the sample would each sum a copy of its input gradient and compute
/// the rows around their edges twice. An item writes its output channels'
/// weight and bias gradients into their rows of one shared `[c_out, k·k +
/// 1]` table, which no other item writes (locked once an item,
/// uncontended).
fn backward_by_channels<T: Element>(
    op: Backward<'_, T>,
    dx: ArrayViewMut4<'_, T>,
    (dw, db): (Option<ArrayViewMut4<'_, T>>, Option<ArrayViewMut1<'_, T>>),
    wanted: GradientSelection,
    ws: &mut Workspace<T>,
) {
    let Backward { x, w, dy, g } = op;
    let taps = g.kh * g.kw;
    let per_group = g.out_channels_per_group();
    let schedule = ws.schedule(channel_work(g));
    let (shared_buf, lanes) = ws.memory(&schedule);
    let shared = scratch(shared_buf, g.out_channels * (2 * taps + 1));
    let (flipped, table) = shared.split_at_mut(g.out_channels * taps);
    flip_kernels(w, flipped);
    let flipped: &[T] = flipped;
    let table = Mutex::new(table);
    schedule.run(
        lanes,
        dx.permuted_axes([0, 2, 1, 3]),
        |item, dx_item, buffers| {
            let [source_buf, error_buf, plane_buf, sums_buf] = buffers.split();
            let channels = item.rows.clone();
            let outputs = channels.start * per_group..channels.end * per_group;
            let block = Geometry {
                in_channels: channels.len(),
                out_channels: outputs.len(),
                groups: channels.len(),
                ..*g
            };
            let x_block = x.slice(s![.., channels.clone(), .., ..]);
            let dy_block = dy.slice(s![.., outputs.clone(), .., ..]);
            let all_rows = 0..g.out_h;
            let sums = scratch(sums_buf, outputs.len() * (taps + 1));
            sums.fill(T::zero());
            let (weight, bias) = sums.split_at_mut(outputs.len() * taps);
            let mut partials = Partials {
                weight,
                bias: if wanted.bias { bias } else { &mut [] },
            };
            if wanted.weight || wanted.bias {
                let input = wanted.weight.then_some((x_block, 0, &all_rows));
                let error = dy_block.index_axis(Axis(0), 0);
                let buffers = (&mut *source_buf, &mut *plane_buf);
                weight_gradients(input, error, &block, &mut partials, buffers);
            }
            let mut dx_item = dx_item.permuted_axes([0, 2, 1, 3]);
            let dx_n = dx_item.index_axis_mut(Axis(0), 0);
            let flipped = &flipped[outputs.start * taps..outputs.end * taps];
            let error = (dy_block, 0, &all_rows);
            input_gradient(
                error,
                flipped,
                (&block, false),
                dx_n,
                (error_buf, plane_buf),
            );
            let mut table = table
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for (local, row) in outputs.clone().enumerate() {
                let row = &mut table[row * (taps + 1)..][..taps + 1];
                row[..taps].copy_from_slice(&partials.weight[local * taps..][..taps]);
                row[taps] = partials.bias.get(local).copied().unwrap_or(T::zero());
            }
        },
    );
    let table = table
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let finite = all_finite_on_pool(table);
    depthwise::write_channel_table(table, taps, (dw, db));
    ws.record_finite(finite);
}

/// Sample `n`'s input gradient from its error rows `rows` alone, into `dx`
/// (`(c, in_h, in_w)`): for a whole sample, zeros beyond their reach; for
/// a `band`, whose sum reads only the rows it reaches, nothing there.
/// Where `dx` is contiguous and the rows the band reaches fill a stencil
/// tile, only those rows are computed, from only the padded error rows
/// they read; else the whole plane is, from the padded error with zeros
/// beyond the band.
fn input_gradient<T: Element>(
    (dy, n, rows): (ArrayView4<'_, T>, usize, &Range<usize>),
    flipped: &[T],
    (g, band): (&Geometry, bool),
    mut dx: ArrayViewMut3<'_, T>,
    (error_buf, plane_buf): (&mut Vec<T>, &mut Vec<T>),
) {
    let gx = input_gradient_geometry(g);
    let p = gx.padding;
    let wp = g.out_w + p.left + p.right;
    let (reached, _) = band_input(g, rows);
    let band_gx = Geometry {
        out_h: reached.len(),
        ..gx
    };
    let by_band = dx.is_standard_layout() && stencil::fits::<T>(&band_gx);
    let (dx_rows, gx) = if by_band {
        (reached, band_gx)
    } else {
        (0..g.in_h, gx)
    };
    // The padded error rows that `dx_rows` read (dx row `r` reads padded
    // rows `r..r + k`), the band's error rows in place, zeros elsewhere.
    let (k, in_w) = (g.kh, g.in_w);
    let read = dx_rows.start..dx_rows.end + k - 1;
    let band_padding = Padding {
        top: rows.start + p.top - read.start,
        bottom: read.end - (rows.end + p.top),
        ..p
    };
    let error_band = dy.slice(s![n, .., rows.clone(), ..]);
    let shape = (rows.len(), g.out_w);
    // Input channel `c` sums the error of its group's output channels.
    let per_group = g.out_channels_per_group();
    let mut padded = PaddedPlanes::zeroed(error_buf, per_group, shape, band_padding);
    debug_assert_eq!(padded.plane_len(), read.len() * wp);
    for (c, mut dx_c) in dx.outer_iter_mut().enumerate() {
        for local in 0..per_group {
            padded.fill(local, error_band.index_axis(Axis(0), c * per_group + local));
        }
        let planes = Planes {
            source: padded.data(),
            plane_len: padded.plane_len(),
            wp,
            c_in_g: per_group,
        };
        let weights = &flipped[c * per_group * k * k..(c + 1) * per_group * k * k];
        match dx_c.as_slice_mut() {
            Some(out) => {
                if !band {
                    out[..dx_rows.start * in_w].fill(T::zero());
                    out[dx_rows.end * in_w..].fill(T::zero());
                }
                let out = &mut out[dx_rows.start * in_w..dx_rows.end * in_w];
                stencil::plane(planes, weights, T::zero(), &gx, out);
            }
            None => {
                let out = scratch(plane_buf, g.in_h * in_w);
                stencil::plane(planes, weights, T::zero(), &gx, out);
                let out = ArrayView2::from_shape((g.in_h, in_w), &*out).expect("sized above");
                dx_c.assign(&out);
            }
        }
    }
}

/// Adds a band's bias gradient, and its weight gradient where `input`
/// (the layer's input, the sample and the band's output rows) is given,
/// to `partials`: each channel's input rows padded (or read in place where
/// the layer has no padding and the sample is contiguous) just before its
/// taps are summed, so that the plane is still in L1.
fn weight_gradients<T: Element>(
    input: Option<(ArrayView4<'_, T>, usize, &Range<usize>)>,
    dy: ndarray::ArrayView3<'_, T>,
    g: &Geometry,
    partials: &mut Partials<'_, T>,
    (source_buf, plane_buf): (&mut Vec<T>, &mut Vec<T>),
) {
    let k = g.kh;
    let wp = g.in_w + g.padding.left + g.padding.right;
    let rows = dy.len_of(Axis(1));
    // Where each channel's input is: the sample in place with the band's
    // offset, or a padded copy of the rows the band reads.
    let mut source = input.map(|(x, n, band_rows)| {
        let (input_rows, band) = band_input(g, band_rows);
        let sample = x.index_axis_move(Axis(0), n);
        match sample.to_slice().filter(|_| g.padding.is_zero()) {
            Some(in_place) => {
                let (_, offset) = row_band(g, band_rows);
                Source::InPlace(in_place, offset)
            }
            None => {
                let shape = (band.in_h, band.in_w);
                let planes = PaddedPlanes::zeroed(source_buf, 1, shape, band.padding);
                Source::Padded(sample.slice_move(s![.., input_rows, ..]), planes)
            }
        }
    });
    // Output channel `c` reads input channel `c / per_group`, padded once
    // for all the output channels of its group.
    let per_group = g.out_channels_per_group();
    for (c, error) in dy.outer_iter().enumerate() {
        let widened = widen(error, wp, plane_buf);
        if !partials.bias.is_empty() {
            partials.bias[c] += sum(widened);
        }
        let input_channel = c / per_group;
        let data = match &mut source {
            None => continue,
            Some(Source::InPlace(sample, offset)) => {
                &sample[input_channel * g.in_h * wp + *offset..]
            }
            Some(Source::Padded(rows, planes)) => {
                if c % per_group == 0 {
                    planes.fill(0, rows.index_axis(Axis(0), input_channel));
                }
                planes.data()
            }
        };
        let image = Image {
            data: &data[..(rows + k - 1) * wp],
            wp,
        };
        let taps = &mut partials.weight[c * k * k..][..k * k];
        tap_sums(widened, image, taps);
    }
}

/// Where [`weight_gradients`] reads a channel's input rows.
enum Source<'a, 'b, T> {
    /// The contiguous sample, and where the band's first window starts in
    /// a channel's plane.
    InPlace(&'a [T], usize),
    /// The rows the band reads, `[c, rows, in_w]`, padded into the planes
    /// one channel at a time.
    Padded(ndarray::ArrayView3<'a, T>, PaddedPlanes<'b, T>),
}

/// The sum of `values` in sixteen running sums, which the compiler turns
/// into vectors (a float sum in order cannot be).
fn sum<T: Element>(values: &[T]) -> T {
    let mut lanes = [T::zero(); 16];
    let chunks = values.chunks_exact(16);
    let rest = chunks.remainder().iter().fold(T::zero(), |a, &v| a + v);
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lanes.iter().fold(rest, |a, &v| a + v)
}

/// The error plane with rows as long as the padded input's, `wp`, zeros
/// beyond its `out_w` columns: then error pixel `t` (flat, `oh·wp + ow`)
/// meets input pixel `t + i·wp + j` at tap `(i, j)`, so a tap's sum is one
/// run over the whole plane, and the zeros drop the pairs that wrap
/// around a row's end. Narrow planes (MobileNet's 7x7 to 28x28) would
/// otherwise spend more on each row's loop than on its few vectors.
fn widen<'a, T: Element>(
    error: ndarray::ArrayView2<'_, T>,
    wp: usize,
    buf: &'a mut Vec<T>,
) -> &'a [T] {
    let width = error.ncols();
    let widened = scratch(buf, error.nrows() * wp);
    for (line, row) in widened.chunks_exact_mut(wp).zip(error.outer_iter()) {
        let (front, back) = line.split_at_mut(width);
        match row.as_slice() {
            Some(row) => front.copy_from_slice(row),
            None => front.iter_mut().zip(row).for_each(|(d, &v)| *d = v),
        }
        back.fill(T::zero());
    }
    widened
}

/// Rows of a padded input plane, `wp` elements a row.
#[derive(Clone, Copy)]
struct Image<'a, T> {
    data: &'a [T],
    wp: usize,
}

/// `taps[i·k + j] += Σ_t error[t] · image[t + i·wp + j]` (flat indices,
/// `error` [`widen`]ed to rows of `wp`), in the best SIMD build the CPU
/// runs.
fn tap_sums<T: Element>(error: &[T], image: Image<'_, T>, taps: &mut [T]) {
    if !T::stencil_tap_sums(error, (image.data, image.wp), taps) {
        generic_tap_sums(error, image, taps);
    }
}

fn generic_tap_sums<T: Element>(error: &[T], image: Image<'_, T>, taps: &mut [T]) {
    with_runtime_simd!(
        tap_sums_avx512, tap_sums_avx2, tap_sums_body::<T, true>, tap_sums_body::<T, false>,
        error: &[T], image: Image<'_, T>, taps: &mut [T],
    );
}

#[inline(always)]
fn tap_sums_body<T: Element, const FUSED: bool>(error: &[T], image: Image<'_, T>, taps: &mut [T]) {
    match (taps.len(), std::mem::size_of::<T>()) {
        (9, 4) => tap_sums_sized::<T, 3, 16, FUSED>(error, image, taps),
        (9, _) => tap_sums_sized::<T, 3, 8, FUSED>(error, image, taps),
        (_, 4) => tap_sums_sized::<T, 5, 16, FUSED>(error, image, taps),
        _ => tap_sums_sized::<T, 5, 8, FUSED>(error, image, taps),
    }
}

/// [`tap_sums`] for a `K`x`K` kernel, a few kernel rows a pass over the
/// error: `R·K` running sums of `VECTOR` lanes (registers). Three rows a
/// pass keep 9 to 15 independent chains of fused multiply-adds in flight,
/// where one row's `K` chains wait on the instruction's latency, and read
/// each error vector once for them all (BENCHMARKS.md, "Depthwise
/// stencils").
#[inline(always)]
fn tap_sums_sized<T: Element, const K: usize, const VECTOR: usize, const FUSED: bool>(
    error: &[T],
    image: Image<'_, T>,
    taps: &mut [T],
) {
    let mut add = |first: usize, sums: &[[T; K]]| {
        for (i, row) in sums.iter().enumerate() {
            let taps = &mut taps[(first + i) * K..(first + i + 1) * K];
            for (tap, &sum) in taps.iter_mut().zip(row) {
                *tap += sum;
            }
        }
    };
    add(
        0,
        &kernel_rows_sums::<T, K, 3, VECTOR, FUSED>(error, image, 0),
    );
    if K == 5 {
        add(
            3,
            &kernel_rows_sums::<T, K, 2, VECTOR, FUSED>(error, image, 3),
        );
    }
}

/// `Σ_t error[t] · image[t + (first + r)·wp + j]` for each `r < R` and
/// `j < K`: whole vectors of `error` while their windows lie in `image`,
/// the last few pixels one by one.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn kernel_rows_sums<
    T: Element,
    const K: usize,
    const R: usize,
    const VECTOR: usize,
    const FUSED: bool,
>(
    error: &[T],
    image: Image<'_, T>,
    first: usize,
) -> [[T; K]; R] {
    let wp = image.wp;
    const { assert!(R >= 1 && R <= 3, "one to three kernel rows a pass") };
    let offsets: [usize; R] = std::array::from_fn(|r| (first + r) * wp);
    // A vector at `t` reads `image[t..t + reach]`.
    let reach = offsets[R - 1] + K - 1 + VECTOR;
    let vectors = image
        .data
        .len()
        .checked_sub(reach)
        .map_or(0, |room| room / VECTOR + 1);
    let whole = (error.len() / VECTOR).min(vectors) * VECTOR;
    // Three named sums rather than an array indexed by row: indexed, they
    // live in memory and each multiply-add stores its sum.
    let (mut acc0, mut acc1, mut acc2) = (
        [[T::zero(); VECTOR]; K],
        [[T::zero(); VECTOR]; K],
        [[T::zero(); VECTOR]; K],
    );
    for (t, e) in (0..whole).step_by(VECTOR).zip(error.chunks_exact(VECTOR)) {
        let e: &[T; VECTOR] = e.try_into().expect("chunks of a vector");
        add_vector::<T, K, VECTOR, FUSED>(e, &image.data[t + offsets[0]..], &mut acc0);
        if R > 1 {
            add_vector::<T, K, VECTOR, FUSED>(e, &image.data[t + offsets[1]..], &mut acc1);
        }
        if R > 2 {
            add_vector::<T, K, VECTOR, FUSED>(e, &image.data[t + offsets[2]..], &mut acc2);
        }
    }
    let acc = [acc0, acc1, acc2];
    let mut sums: [[T; K]; R] = std::array::from_fn(|r| {
        std::array::from_fn(|j| acc[r][j].iter().fold(T::zero(), |a, &v| a + v))
    });
    // The image ends before the last row's widened zeros meet their taps.
    for r in 0..R {
        for j in 0..K {
            let pixels = &image.data[whole + offsets[r] + j..];
            for (&e, &v) in error[whole..].iter().zip(pixels) {
                sums[r][j] += e * v;
            }
        }
    }
    sums
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

/// [`tap_sums`] for `f32` by vector intrinsics, its image raw
/// (`Element::stencil_tap_sums`): the AVX-512 sums (16 lanes a vector) on a
/// CPU with AVX-512 F, else the AVX2 ones (8 lanes) on a CPU with AVX2 and
/// FMA; returns whether one ran. LLVM turns the generic sums' overlapping
/// loads into pairs of loads, permutes and blends on the multiply-adds'
/// port (BENCHMARKS.md, "Depthwise stencils"), and the generic build's
/// 64-byte vectors spill AVX2's registers (BENCHMARKS.md, "Tap sums on
/// AVX2"); these load each vector once, in the generic sums' order at
/// their width, so the sums are the same bits as the generic ones of that
/// width. Panics if `taps` is not a 3x3 or 5x5 kernel's.
pub(crate) fn tap_sums_f32(error: &[f32], image: (&[f32], usize), taps: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if let Some(sums) = super::channel_vectors::kernel_for(
        avx512::f32_sums::tap_sums as RawTapSums<f32>,
        avx2::f32_sums::tap_sums as RawTapSums<f32>,
    ) {
        // SAFETY: the CPU runs `sums` (`kernel_for` chose it by the CPU's
        // features).
        unsafe { sums(error, image, taps) };
        return true;
    }
    false
}

/// [`tap_sums_f32`] for `f64` (8 lanes a vector with AVX-512, 4 with AVX2).
pub(crate) fn tap_sums_f64(error: &[f64], image: (&[f64], usize), taps: &mut [f64]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if let Some(sums) = super::channel_vectors::kernel_for(
        avx512::f64_sums::tap_sums as RawTapSums<f64>,
        avx2::f64_sums::tap_sums as RawTapSums<f64>,
    ) {
        // SAFETY: as in `tap_sums_f32`.
        unsafe { sums(error, image, taps) };
        return true;
    }
    false
}

/// A build of the tap sums for one instruction set; unsafe to call on a
/// CPU without it.
#[cfg(target_arch = "x86_64")]
type RawTapSums<T> = unsafe fn(&[T], (&[T], usize), &mut [T]);

/// The vector tap sums of one dtype and instruction set (`$feature`:
/// AVX-512 F, or AVX2 and FMA), in module `$module`: see [`tap_sums_f32`]
/// and, for the sums, `kernel_rows_sums`.
macro_rules! tap_sum_kernels {
    ($module:ident, $feature:literal, $t:ty, $lanes:expr, $zero:ident, $load:ident, $store:ident,
     $fmadd:ident) => {
        pub(super) mod $module {
            use std::arch::x86_64::*;

            const LANES: usize = $lanes;

            /// `taps[i·k + j] += Σ_t error[t] · image[t + i·wp + j]`,
            /// three kernel rows a pass, as `tap_sums_sized`.
            ///
            /// # Safety
            /// The CPU has the features of `$feature`.
            pub(in super::super) unsafe fn tap_sums(
                error: &[$t],
                (image, wp): (&[$t], usize),
                taps: &mut [$t],
            ) {
                // SAFETY: as the caller promises.
                unsafe {
                    match taps.len() {
                        9 => kernel_rows::<3, 3>(error, (image, wp), 0, taps),
                        25 => {
                            kernel_rows::<5, 3>(error, (image, wp), 0, taps);
                            kernel_rows::<5, 2>(error, (image, wp), 3, taps);
                        }
                        n => panic!("the taps of a 3x3 or 5x5 kernel, not {n}"),
                    }
                }
            }

            /// Kernel rows `first..first + R`: whole vectors of
            /// `error` while their windows lie in `image`, then the
            /// last few pixels one by one, added to `taps`.
            ///
            /// # Safety
            /// The CPU has the features of `$feature`.
            unsafe fn kernel_rows<const K: usize, const R: usize>(
                error: &[$t],
                (image, wp): (&[$t], usize),
                first: usize,
                taps: &mut [$t],
            ) {
                let offsets: [usize; R] = std::array::from_fn(|r| (first + r) * wp);
                // A vector at `t` reads `image[t..t + reach]`.
                let reach = offsets[R - 1] + K - 1 + LANES;
                let vectors = image
                    .len()
                    .checked_sub(reach)
                    .map_or(0, |room| room / LANES + 1);
                let whole = (error.len() / LANES).min(vectors) * LANES;
                // SAFETY: the CPU has the features of `$feature` (the caller
                // promises).
                // The vector at `t < whole` reads `error[t..t + LANES]`,
                // within `error` (`whole` is at most its whole
                // vectors), and `image[t + offsets[r] + j..][..LANES]`,
                // which ends by `t + reach <= image.len()` (`whole` is
                // at most `vectors`).
                let mut sums =
                    unsafe { vector_sums::<K, R>(error.as_ptr(), whole, image.as_ptr(), offsets) };
                for (r, row) in sums.iter_mut().enumerate() {
                    for (j, sum) in row.iter_mut().enumerate() {
                        let pixels = &image[whole + offsets[r] + j..];
                        for (&e, &v) in error[whole..].iter().zip(pixels) {
                            *sum += e * v;
                        }
                        taps[(first + r) * K + j] += *sum;
                    }
                }
            }

            /// The sums of the whole vectors, each vector's lanes added
            /// in order.
            #[target_feature(enable = $feature)]
            unsafe fn vector_sums<const K: usize, const R: usize>(
                error: *const $t,
                whole: usize,
                image: *const $t,
                offsets: [usize; R],
            ) -> [[$t; K]; R] {
                let mut acc = [[$zero(); K]; R];
                let mut t = 0;
                while t < whole {
                    // SAFETY: within `error` and `image` (the caller).
                    let e = unsafe { $load(error.add(t)) };
                    for (row, &offset) in acc.iter_mut().zip(&offsets) {
                        let base = unsafe { image.add(t + offset) };
                        for (j, sum) in row.iter_mut().enumerate() {
                            *sum = $fmadd(e, unsafe { $load(base.add(j)) }, *sum);
                        }
                    }
                    t += LANES;
                }
                std::array::from_fn(|r| {
                    std::array::from_fn(|j| {
                        let mut lanes = [0.0; LANES];
                        // SAFETY: `lanes` holds a vector.
                        unsafe { $store(lanes.as_mut_ptr(), acc[r][j]) };
                        lanes.iter().fold(0.0, |a, &v| a + v)
                    })
                })
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    tap_sum_kernels!(
        f32_sums,
        "avx512f",
        f32,
        16,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_fmadd_ps
    );
    tap_sum_kernels!(
        f64_sums,
        "avx512f",
        f64,
        8,
        _mm512_setzero_pd,
        _mm512_loadu_pd,
        _mm512_storeu_pd,
        _mm512_fmadd_pd
    );
}

/// The tap sums in AVX2 registers: 8 `f32` or 4 `f64` a vector.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    tap_sum_kernels!(
        f32_sums,
        "avx2,fma",
        f32,
        8,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_fmadd_ps
    );
    tap_sum_kernels!(
        f64_sums,
        "avx2,fma",
        f64,
        4,
        _mm256_setzero_pd,
        _mm256_loadu_pd,
        _mm256_storeu_pd,
        _mm256_fmadd_pd
    );
}

#[cfg(test)]
mod tests {
    use super::{Image, generic_tap_sums, tap_sums_f32, tap_sums_f64, tap_sums_sized};
    use crate::element::Element;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    /// [`tap_sums_f32`] or [`tap_sums_f64`].
    type RawTapSums<T> = fn(&[T], (&[T], usize), &mut [T]) -> bool;

    /// The vector kernel `raw` against the generic sums `reference` on
    /// random widened errors and images (kernel sizes, row lengths, images
    /// that end inside a vector's reach so that the last pixels go one by
    /// one): the same sums in the same order, so the same bits.
    fn check<T: Element>(
        raw: RawTapSums<T>,
        reference: fn(&[T], Image<'_, T>, &mut [T]),
        seed: u64,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        for _ in 0..200 {
            let k = if rng.random_bool(0.5) { 3 } else { 5 };
            let wp = rng.random_range(k..=70);
            let rows = rng.random_range(1..=12);
            let error_len = rows * wp;
            let image_len = (rows + k - 1) * wp - rng.random_range(0..k);
            let value = |rng: &mut StdRng| T::from_f64(rng.random_range(-1.0..1.0));
            let error: Vec<T> = (0..error_len).map(|_| value(&mut rng)).collect();
            let image: Vec<T> = (0..image_len).map(|_| value(&mut rng)).collect();
            let start: Vec<T> = (0..k * k).map(|_| value(&mut rng)).collect();
            let mut expected = start.clone();
            reference(&error, Image { data: &image, wp }, &mut expected);
            let mut got = start;
            if !raw(&error, (&image, wp), &mut got) {
                return;
            }
            assert_eq!(got, expected, "k {k}, rows of {wp}, {rows} error rows");
        }
    }

    #[test]
    fn vector_tap_sums_match_the_generic_sums() {
        if super::super::narrow_planes::available() {
            check::<f32>(tap_sums_f32, generic_tap_sums, 1);
            check::<f64>(tap_sums_f64, generic_tap_sums, 2);
        }
    }

    /// The generic sums of `VECTOR` lanes, fused, as the AVX2 sums run.
    fn generic_sums_of_width<T: Element, const VECTOR: usize>(
        error: &[T],
        image: Image<'_, T>,
        taps: &mut [T],
    ) {
        if taps.len() == 9 {
            tap_sums_sized::<T, 3, VECTOR, true>(error, image, taps);
        } else {
            tap_sums_sized::<T, 5, VECTOR, true>(error, image, taps);
        }
    }

    /// The AVX2 sums on any CPU with AVX2 and FMA, AVX-512 ones included
    /// (where `tap_sums_f32` and `tap_sums_f64` take the AVX-512 sums),
    /// against the generic sums of their width.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_tap_sums_match_the_generic_sums_of_their_width() {
        if !super::super::channel_vectors::avx2_fma() {
            return;
        }
        let f32_sums: RawTapSums<f32> = |error, image, taps| {
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            unsafe { super::avx2::f32_sums::tap_sums(error, image, taps) };
            true
        };
        let f64_sums: RawTapSums<f64> = |error, image, taps| {
            // SAFETY: as for `f32_sums`.
            unsafe { super::avx2::f64_sums::tap_sums(error, image, taps) };
            true
        };
        check::<f32>(f32_sums, generic_sums_of_width::<f32, 8>, 3);
        check::<f64>(f64_sums, generic_sums_of_width::<f64, 4>, 4);
    }
}
