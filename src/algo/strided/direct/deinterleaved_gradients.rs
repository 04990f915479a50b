//! The backward pass of depthwise 3x3 layers at stride 2 on planes at
//! least a vector wide, from deinterleaved planes, as `deinterleaved.rs`
//! computes their forward pass.
//!
//! The weight gradient's nine taps are dot products of the error's rows
//! with the runs of the dealt input that the forward pass reads (`even[j]`,
//! `odd[j]` and `even[j + 1]` of a padded row). The input gradient is built
//! in the same split layout, each error row added into the three runs its
//! taps read, and the even and odd columns are then woven back into input
//! rows. No sample goes through the pixel-major transposes
//! (BENCHMARKS.md, "Deinterleaved depthwise planes"). Where the element
//! type has kernels for the CPU that split and weave in registers
//! (`split_in_registers.rs`), they compute the weight gradient from a
//! contiguous input plane and write a contiguous input gradient plane,
//! with no split input or gradient stored; on a CPU with them, planes
//! narrower than a vector but at least half a vector wide take them too
//! (copied where their rows lie apart), on masked vectors.

use super::deinterleaved::{VECTOR, deal_plane};
use super::depthwise;
use crate::algo::strided::simd::with_runtime_simd;
use crate::element::Element;
use crate::gradients::{GradientSelection, Targets};
use crate::lanes::{Reach, Work};
use crate::layout::deinterleave::for_each_piece;
use crate::nonfinite::all_finite_on_pool;
use crate::operands::Backward;
use crate::spec::Geometry;
use crate::workspace::{Workspace, scratch};
use ndarray::{ArrayView1, ArrayView2, ArrayView4, ArrayViewMut1, ArrayViewMut2, ArrayViewMut4, s};
use std::ops::Range;
use std::sync::Mutex;

/// Whether this kernel computes the backward pass of the depthwise layer
/// `g`: where the deinterleaved forward pass applies, and on the planes
/// too narrow or too low for its tiles ([`narrow`]).
pub(crate) fn applies(g: &Geometry) -> bool {
    super::deinterleaved::applies(g) || narrow(g)
}

/// Whether `g` is a depthwise 3x3 layer at stride 2 on planes narrower than
/// the deinterleaved planes' tiles, but at least half a vector of `f32`
/// wide (MobileNet-v2's 14 output pixels), that the kernels of
/// `split_in_registers.rs` compute, on masked vectors, on this CPU: every
/// plane then goes through them, copied where it is not contiguous, rather
/// than through the pixel-major transposes. On narrower planes (7 pixels)
/// most of each vector is masked off, and the pixel-major kernel's vectors
/// of channels are faster (BENCHMARKS.md, "Narrow planes at stride 2").
fn narrow(g: &Geometry) -> bool {
    !super::deinterleaved::applies(g)
        && (g.kh, g.kw, g.sh, g.sw, g.dh, g.dw) == (3, 3, 2, 2, 1, 1)
        && 2 * g.out_w >= VECTOR
        && super::narrow_planes::available()
}

/// The backward pass of the depthwise layer `op.g` (which [`applies`]);
/// overwrites the gradients present. One sample of a wide layer is cut
/// into blocks of channels, as `depthwise.rs` cuts it
/// ([`depthwise::splits_channels_backward`]): each block's gradients are
/// its own. Other passes are cut into whole samples and bands of rows,
/// whose weight and bias gradients add up in part order.
pub(crate) fn backward<T: Element>(
    op: Backward<'_, T>,
    grads: Targets<'_, T>,
    ws: &mut Workspace<T>,
) {
    let wanted = grads.selection();
    match grads {
        Targets {
            dx: Some(dx),
            dw,
            db,
        } if depthwise::splits_channels_backward(op.g) => by_channels(op, dx, (dw, db), wanted, ws),
        grads => by_rows(op, grads, ws),
    }
}

/// [`backward`] over whole samples and bands of output rows.
fn by_rows<T: Element>(op: Backward<'_, T>, grads: Targets<'_, T>, ws: &mut Workspace<T>) {
    let Backward { x, w, dy, g } = op;
    let wanted = grads.selection();
    let Targets { dx, dw, db } = grads;
    let c = g.in_channels;
    let schedule = ws.schedule(Work::backward(g, 1));
    let (_, lanes) = ws.memory(&schedule);
    let dw_len = if wanted.weight { 9 * c } else { 0 };
    let db_len = if wanted.bias { c } else { 0 };
    let reach = Reach::of(g);
    let sums = schedule.run_summing(
        lanes,
        dx,
        (dw_len, db_len),
        |item, mut dx_item, buffers, partials| {
            // The padded input rows the band's windows read.
            let rows = (reach.padded_rows(&item.rows), item.is_band_of(g.out_h));
            for (local, n) in item.samples.clone().enumerate() {
                for ch in 0..c {
                    let plane = Plane {
                        x: x.slice(s![n, ch, .., ..]),
                        dy: dy.slice(s![n, ch, item.rows.clone(), ..]),
                        taps: taps_of(w, ch),
                    };
                    let dx_c = dx_item
                        .as_mut()
                        .map(|dx| dx.slice_mut(s![local, ch, .., ..]));
                    let (weight, bias) =
                        plane_gradients(plane, g, rows.clone(), wanted, dx_c, buffers.split());
                    if wanted.weight {
                        for (tap, &sum) in weight.iter().enumerate() {
                            partials.weight[tap * c + ch] += sum;
                        }
                    }
                    if wanted.bias {
                        partials.bias[ch] += bias;
                    }
                }
            }
        },
    );
    depthwise::write_tap_sums(&sums, c, (dw, db));
}

/// [`backward`] of one sample in blocks of channels, with its input
/// gradient `dx` and the other gradients `wanted`: the scheduler cuts `dx`
/// with its channel and row axes swapped, and each block writes its
/// channels' weight and bias gradients into their rows of one shared
/// `[c, 10]` table, which no other block writes (locked once a channel,
/// uncontended).
fn by_channels<T: Element>(
    op: Backward<'_, T>,
    dx: ArrayViewMut4<'_, T>,
    (dw, db): (Option<ArrayViewMut4<'_, T>>, Option<ArrayViewMut1<'_, T>>),
    wanted: GradientSelection,
    ws: &mut Workspace<T>,
) {
    let Backward { x, w, dy, g } = op;
    let c = g.in_channels;
    let schedule = ws.schedule(depthwise::backward_channel_work(g));
    let (table_buf, lanes) = ws.memory(&schedule);
    // Row `ch`: channel `ch`'s weight gradient (its taps), then its bias
    // gradient.
    let table = Mutex::new(scratch(table_buf, c * 10));
    let rows = (Reach::of(g).padded_rows(&(0..g.out_h)), false);
    schedule.run(
        lanes,
        dx.permuted_axes([0, 2, 1, 3]),
        |item, dx_item, buffers| {
            let mut dx_item = dx_item.permuted_axes([0, 2, 1, 3]);
            for ch in item.rows.clone() {
                let plane = Plane {
                    x: x.slice(s![0, ch, .., ..]),
                    dy: dy.slice(s![0, ch, .., ..]),
                    taps: taps_of(w, ch),
                };
                let dx_c = dx_item.slice_mut(s![0, ch - item.rows.start, .., ..]);
                let (weight, bias) =
                    plane_gradients(plane, g, rows.clone(), wanted, Some(dx_c), buffers.split());
                let mut table = table
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let row = &mut table[ch * 10..][..10];
                row[..9].copy_from_slice(&weight);
                row[9] = bias;
            }
        },
    );
    let table = table
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let finite = all_finite_on_pool(table);
    depthwise::write_channel_table(table, 9, (dw, db));
    ws.record_finite(finite);
}

/// Channel `ch`'s nine weights.
fn taps_of<T: Element>(w: ArrayView4<'_, T>, ch: usize) -> [T; 9] {
    std::array::from_fn(|t| w[[ch, 0, t / 3, t % 3]])
}

/// One channel of one sample: its input plane, its error's rows of the
/// band, and its weights.
struct Plane<'a, T> {
    x: ArrayView2<'a, T>,
    dy: ArrayView2<'a, T>,
    taps: [T; 9],
}

/// The gradients of one channel's band (`plane`), reading the padded
/// input rows `padded`: its weight and bias gradients, returned where
/// `wanted`, and its input gradient written into `dx_c` where present
/// (every row the band reaches, zeros in the others unless it is a
/// `band`, whose sum reads only the rows it reaches).
fn plane_gradients<T: Element>(
    plane: Plane<'_, T>,
    g: &Geometry,
    (padded, band): (Range<usize>, bool),
    wanted: GradientSelection,
    dx_c: Option<ArrayViewMut2<'_, T>>,
    [split_buf, line_buf, error_buf, gradient_buf, weave_buf]: [&mut Vec<T>; 5],
) -> ([T; 9], T) {
    let half = g.out_w + 1;
    let rows = padded.len();
    let error = depthwise::contiguous(plane.dy, error_buf);
    let bias = if wanted.bias {
        // Eight running sums (ndarray's sum of a slice), which vectorise.
        ArrayView1::from(error).sum()
    } else {
        T::zero()
    };
    let (top, left) = (g.padding.top, g.padding.left);
    let first = padded.start / g.sh;
    let narrow = narrow(g);
    let weight = if wanted.weight {
        // Split in registers where the type has a kernel for the CPU (and
        // on narrow planes always, contiguous or copied).
        let x = if narrow {
            Some(depthwise::contiguous(plane.x, &mut *line_buf))
        } else {
            plane.x.as_slice()
        };
        let in_registers = x.and_then(|x| {
            T::depthwise_stride2_weight_gradient((x, g.in_w, (top, left)), (error, g.out_w, first))
        });
        debug_assert!(in_registers.is_some() || !narrow, "the CPU runs the kernel");
        in_registers.unwrap_or_else(|| {
            let split = scratch(split_buf, 2 * rows * half);
            let (even, odd) = split.split_at_mut(rows * half);
            deal_plane(plane.x, g, padded.clone(), even, odd, line_buf);
            weight_taps(split, half, error, g.out_w)
        })
    } else {
        [T::zero(); 9]
    };
    if let Some(mut dx_c) = dx_c {
        // Every row the band reaches (all of them for whole samples),
        // woven in registers where the type has a kernel for the CPU.
        let reached = if band {
            padded.start.saturating_sub(top).min(g.in_h)..padded.end.saturating_sub(top).min(g.in_h)
        } else {
            0..g.in_h
        };
        let rows_of_error = (error, g.out_w, first);
        let woven = dx_c.as_slice_mut().is_some_and(|dx| {
            let dx = (dx, g.in_w, (top, left));
            T::depthwise_stride2_input_gradient(rows_of_error, &plane.taps, dx, reached.clone())
        });
        if woven {
            return (weight, bias);
        }
        if narrow {
            // A plane whose rows lie apart: woven into a contiguous one,
            // whose reached rows are copied into place.
            let plane_len = g.in_h * g.in_w;
            let dx = (scratch(gradient_buf, plane_len), g.in_w, (top, left));
            let woven = T::depthwise_stride2_input_gradient(
                rows_of_error,
                &plane.taps,
                dx,
                reached.clone(),
            );
            debug_assert!(woven, "the CPU runs the kernel");
            let woven = ArrayView2::from_shape((g.in_h, g.in_w), &gradient_buf[..plane_len])
                .expect("sized above");
            dx_c.slice_mut(s![reached.clone(), ..])
                .assign(&woven.slice(s![reached, ..]));
            return (weight, bias);
        }
        let gradient = scratch(gradient_buf, 2 * rows * half);
        gradient.fill(T::zero());
        spread_error(error, g.out_w, &plane.taps, gradient, half);
        weave_plane(gradient, half, g, (padded.start, band), dx_c, weave_buf);
    }
    (weight, bias)
}

/// [`weight_taps_body`] in the best SIMD build the CPU runs.
fn weight_taps<T: Element>(split: &[T], half: usize, error: &[T], out_w: usize) -> [T; 9] {
    let mut taps = [T::zero(); 9];
    weight_taps_dispatch(split, half, error, out_w, &mut taps);
    taps
}

fn weight_taps_dispatch<T: Element>(
    split: &[T],
    half: usize,
    error: &[T],
    out_w: usize,
    taps: &mut [T; 9],
) {
    with_runtime_simd!(
        weight_taps_avx512, weight_taps_avx2,
        weight_taps_body::<T, true>, weight_taps_body::<T, false>,
        split: &[T], half: usize, error: &[T], out_w: usize, taps: &mut [T; 9],
    );
}

/// The nine taps' weight gradients of a band (`error`, rows `out_w` wide)
/// from its dealt input rows (`split`: the even rows, then the odd rows,
/// `half` long), summed [`VECTOR`] pixels at a time.
#[inline(always)]
fn weight_taps_body<T: Element, const FUSED: bool>(
    split: &[T],
    half: usize,
    error: &[T],
    out_w: usize,
    taps: &mut [T; 9],
) {
    let (even, odd) = split.split_at(split.len() / 2);
    let mut acc = [[T::zero(); VECTOR]; 9];
    // Whole vectors, then one that ends on the row's last pixel, its
    // pixels before `vectors` weighted zero (they are summed already).
    let vectors = out_w / VECTOR * VECTOR;
    let tail = out_w.checked_sub(VECTOR).filter(|_| vectors < out_w);
    for (i, d) in error.chunks_exact(out_w).enumerate() {
        for kh in 0..3 {
            let at = (2 * i + kh) * half;
            let (e, o) = (&even[at..at + half], &odd[at..at + half]);
            let mut sums = [acc[3 * kh], acc[3 * kh + 1], acc[3 * kh + 2]];
            for j in (0..vectors).step_by(VECTOR) {
                let dv = d[j..j + VECTOR].try_into().expect("a vector");
                add_products::<T, FUSED>(&mut sums, dv, (e, o), j);
            }
            if let Some(j) = tail {
                let mut dv = [T::zero(); VECTOR];
                for (k, v) in dv.iter_mut().enumerate().skip(vectors - j) {
                    *v = d[j + k];
                }
                add_products::<T, FUSED>(&mut sums, &dv, (e, o), j);
            }
            let [a0, a1, a2] = sums;
            [acc[3 * kh], acc[3 * kh + 1], acc[3 * kh + 2]] = [a0, a1, a2];
        }
    }
    for (tap, lanes) in taps.iter_mut().zip(&acc) {
        *tap = lanes.iter().fold(T::zero(), |sum, &v| sum + v);
    }
}

/// Adds the products of the error's vector `dv` with the three runs its
/// taps read from pixel `j` on (`even[j..]`, `odd[j..]`, `even[j + 1..]`)
/// to `sums`.
#[inline(always)]
fn add_products<T: Element, const FUSED: bool>(
    sums: &mut [[T; VECTOR]; 3],
    dv: &[T; VECTOR],
    (even, odd): (&[T], &[T]),
    j: usize,
) {
    let ev: &[T; VECTOR] = even[j..j + VECTOR].try_into().expect("a vector");
    let ov: &[T; VECTOR] = odd[j..j + VECTOR].try_into().expect("a vector");
    let nv: &[T; VECTOR] = even[j + 1..j + 1 + VECTOR].try_into().expect("a vector");
    for k in 0..VECTOR {
        sums[0][k] = madd::<T, FUSED>(dv[k], ev[k], sums[0][k]);
        sums[1][k] = madd::<T, FUSED>(dv[k], ov[k], sums[1][k]);
        sums[2][k] = madd::<T, FUSED>(dv[k], nv[k], sums[2][k]);
    }
}

/// `a · b + c`, fused where the build has FMA.
#[inline(always)]
fn madd<T: Element, const FUSED: bool>(a: T, b: T, c: T) -> T {
    if FUSED { a.mul_add(b, c) } else { a * b + c }
}

/// [`spread_error_body`] in the best SIMD build the CPU runs.
fn spread_error<T: Element>(
    error: &[T],
    out_w: usize,
    taps: &[T; 9],
    gradient: &mut [T],
    half: usize,
) {
    with_runtime_simd!(
        spread_avx512, spread_avx2, spread_error_body::<T, true>, spread_error_body::<T, false>,
        error: &[T], out_w: usize, taps: &[T; 9], gradient: &mut [T], half: usize,
    );
}

/// Adds each error row (`error`, rows `out_w` wide), times its taps, into
/// the runs of the split input gradient (`gradient`: the even rows, then
/// the odd rows, `half` long) that those taps read.
#[inline(always)]
fn spread_error_body<T: Element, const FUSED: bool>(
    error: &[T],
    out_w: usize,
    taps: &[T; 9],
    gradient: &mut [T],
    half: usize,
) {
    let rows = gradient.len() / (2 * half);
    let (even, odd) = gradient.split_at_mut(rows * half);
    for (i, d) in error.chunks_exact(out_w).enumerate() {
        for kh in 0..3 {
            let at = (2 * i + kh) * half;
            let [w0, w1, w2] = [taps[3 * kh], taps[3 * kh + 1], taps[3 * kh + 2]];
            let e = &mut even[at..at + half];
            for (g, &v) in e[..out_w].iter_mut().zip(d) {
                *g = madd::<T, FUSED>(w0, v, *g);
            }
            for (g, &v) in e[1..].iter_mut().zip(d) {
                *g = madd::<T, FUSED>(w2, v, *g);
            }
            for (g, &v) in odd[at..at + out_w].iter_mut().zip(d) {
                *g = madd::<T, FUSED>(w1, v, *g);
            }
        }
    }
}

/// Writes the input gradient plane `dx_c` from its split form (`gradient`:
/// the even rows, then the odd rows, `half` long, of the padded rows from
/// `first` on): every row the band reaches, and zeros in the others unless
/// the item is a band (`band`), whose sum reads only the rows it reaches.
fn weave_plane<T: Element>(
    gradient: &[T],
    half: usize,
    g: &Geometry,
    at: (usize, bool),
    dx_c: ArrayViewMut2<'_, T>,
    weave_buf: &mut Vec<T>,
) {
    with_runtime_simd!(
        weave_avx512, weave_avx2, weave_rows::<T, true>, weave_rows::<T, false>,
        gradient: &[T], half: usize, g: &Geometry, at: (usize, bool),
        dx_c: ArrayViewMut2<'_, T>, weave_buf: &mut Vec<T>,
    );
}

/// [`weave_plane`]'s rows, one [`weave`] each.
#[inline(always)]
fn weave_rows<T: Element, const FUSED: bool>(
    gradient: &[T],
    half: usize,
    g: &Geometry,
    (first, band): (usize, bool),
    mut dx_c: ArrayViewMut2<'_, T>,
    weave_buf: &mut Vec<T>,
) {
    let rows = gradient.len() / (2 * half);
    let (even, odd) = gradient.split_at(rows * half);
    let left = g.padding.left;
    // Input column `2k` is padded column `2k + left`: even or odd by
    // `left`'s parity, and so is column `2k + 1` by the other.
    let (first_runs, first_at, second_runs, second_at) = if left.is_multiple_of(2) {
        (even, left / 2, odd, left / 2)
    } else {
        (odd, left / 2, even, left / 2 + 1)
    };
    for (r, mut dst) in dx_c.rows_mut().into_iter().enumerate() {
        let padded = r + g.padding.top;
        let Some(pr) = padded.checked_sub(first).filter(|&pr| pr < rows) else {
            if !band {
                dst.fill(T::zero());
            }
            continue;
        };
        let row = pr * half..(pr + 1) * half;
        let a = first_runs[row.clone()].get(first_at..).unwrap_or_default();
        let b = second_runs[row].get(second_at..).unwrap_or_default();
        match dst.as_slice_mut() {
            Some(out) => weave::<T, FUSED>(a, b, out),
            None => {
                let line = scratch(weave_buf, dst.len());
                weave::<T, FUSED>(a, b, line);
                dst.assign(&ArrayView1::from(&*line));
            }
        }
    }
}

/// Pairs of columns [`weave`] joins at a time: one vector of `f32`.
const WEAVE_PAIRS: usize = 16;

/// `out[2k] = a[k]` and `out[2k + 1] = b[k]`, zero past either's end.
#[inline(always)]
fn weave<T: Element, const FUSED: bool>(a: &[T], b: &[T], out: &mut [T]) {
    let pairs = (out.len() / 2).min(a.len()).min(b.len());
    let mut done = 0;
    if T::weave_pairs(&a[..pairs], &b[..pairs], &mut out[..2 * pairs]) {
        done = 2 * pairs;
    } else if pairs >= WEAVE_PAIRS {
        // Fixed-size pieces compile to vector shuffles; the last piece
        // overlaps the one before (writing the same values again).
        for_each_piece(pairs, WEAVE_PAIRS, |start| {
            let a: &[T; WEAVE_PAIRS] = a[start..start + WEAVE_PAIRS].try_into().expect("a piece");
            let b: &[T; WEAVE_PAIRS] = b[start..start + WEAVE_PAIRS].try_into().expect("a piece");
            let piece: &mut [T; 2 * WEAVE_PAIRS] = (&mut out[2 * start..2 * (start + WEAVE_PAIRS)])
                .try_into()
                .expect("a piece");
            for k in 0..WEAVE_PAIRS {
                piece[2 * k] = a[k];
                piece[2 * k + 1] = b[k];
            }
        });
        done = 2 * pairs;
    }
    for (column, v) in out.iter_mut().enumerate().skip(done) {
        let (runs, k) = if column.is_multiple_of(2) {
            (a, column / 2)
        } else {
            (b, column / 2)
        };
        *v = runs.get(k).copied().unwrap_or(T::zero());
    }
}
