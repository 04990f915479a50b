//! The forward pass of depthwise 3x3 layers at stride 2 on planes at
//! least a vector wide, computed in NCHW from deinterleaved planes.
//!
//! At stride 2 an output pixel reads the columns `2j`, `2j + 1` and
//! `2j + 2` of a padded input row. Each input plane is first split into
//! its even and odd columns, after which every tap is a contiguous run
//! again: the three taps of a kernel row are `even[j]`, `odd[j]` and
//! `even[j + 1]`. A tile of output rows by a vector of pixels then sums
//! its nine taps in registers, with no transpose of the sample into
//! pixel-major order and back (BENCHMARKS.md, "Deinterleaved depthwise
//! planes"). Where the element type has a kernel for the CPU that splits
//! the rows in registers instead (`split_in_registers.rs`), a contiguous
//! plane goes through it and no split is stored.

use crate::algo::strided::simd::with_runtime_simd;
use crate::element::Element;
use crate::lanes::Work;
use crate::layout::deinterleave::for_each_piece;
use crate::operands::Forward;
use crate::spec::Geometry;
use crate::workspace::{Workspace, scratch};
use ndarray::{ArrayView2, ArrayViewMut2, Axis, s};
use std::ops::Range;

/// Pixels a tile's row holds: 64 bytes of `f32`. Planes narrower than
/// that (MobileNet-v2's 14 and 7 pixels) go to the masked vectors of
/// `split_in_registers.rs` where the CPU has them (`depthwise.rs`), else to
/// the pixel-major kernel, whose vectors run along the channels.
pub(super) const VECTOR: usize = 16;

/// Output rows a tile: four independent sums of nine multiply-adds.
const ROWS: usize = 4;

/// Whether this kernel computes the depthwise layer `g`: 3x3 at stride 2,
/// unit dilation, on output planes of at least a tile.
pub(crate) fn applies(g: &Geometry) -> bool {
    (g.kh, g.kw, g.sh, g.sw, g.dh, g.dw) == (3, 3, 2, 2, 1, 1)
        && g.out_w >= VECTOR
        && g.out_h >= ROWS
}

/// What the pass divides among lanes: bands of output rows (bound by
/// memory, nine multiply-adds an output).
pub(crate) fn work(g: &Geometry) -> Work {
    Work::forward(g, ROWS)
}

/// The forward pass of the depthwise layer `op.g` (which [`applies`]);
/// writes every element of `y`.
pub(crate) fn forward<T: Element>(
    op: Forward<'_, T>,
    y: ndarray::ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
) {
    let Forward { x, w, bias, g } = op;
    let schedule = ws.schedule(work(g));
    let (_, lanes) = ws.memory(&schedule);
    schedule.run(lanes, y, |item, mut y_item, buffers| {
        let [split_buf, plane_buf, line_buf] = buffers.split();
        let half = g.out_w + 1;
        // The padded input rows the band's windows read.
        let first = 2 * item.rows.start;
        let padded_rows = 2 * item.rows.len() + 1;
        let split = scratch(split_buf, 2 * padded_rows * half);
        for (n, mut y_n) in item.samples.clone().zip(y_item.outer_iter_mut()) {
            for (c, mut y_c) in y_n.outer_iter_mut().enumerate() {
                let x_c = x.slice(s![n, c, .., ..]);
                let taps: [T; 9] = std::array::from_fn(|t| w[[c, 0, t / 3, t % 3]]);
                let b = bias.map_or(T::zero(), |b| b[c]);
                if let (Some(plane), Some(out)) = (x_c.as_slice(), y_c.as_slice_mut()) {
                    let input = (plane, g.in_w, (g.padding.top, g.padding.left));
                    let filter = (&taps[..], Some(std::slice::from_ref(&b)));
                    if T::depthwise_stride2_rows(input, filter, item.rows.clone(), g.out_w, out) {
                        continue;
                    }
                }
                let (even, odd) = split.split_at_mut(padded_rows * half);
                let rows = first..first + padded_rows;
                deal_plane(x_c, g, rows, even, odd, line_buf);
                write_plane(split, half, (&taps, b), y_c, plane_buf);
            }
        }
    });
}

/// Splits the padded rows `rows` of the input plane `x_c` into their even
/// columns (`even`, rows `out_w + 1` long) and odd columns (`odd`); a row
/// that is not contiguous is copied into `line_buf` first. Dispatched once
/// a plane, so that the rows' loop runs in the SIMD build.
pub(super) fn deal_plane<T: Element>(
    x_c: ArrayView2<'_, T>,
    g: &Geometry,
    rows: Range<usize>,
    even: &mut [T],
    odd: &mut [T],
    line_buf: &mut Vec<T>,
) {
    with_runtime_simd!(
        deal_plane_avx512, deal_plane_avx2, deal_rows::<T, true>, deal_rows::<T, false>,
        x_c: ArrayView2<'_, T>, g: &Geometry, rows: Range<usize>, even: &mut [T],
        odd: &mut [T], line_buf: &mut Vec<T>,
    );
}

/// [`deal_plane`]'s rows, one [`deal`] each.
#[inline(always)]
fn deal_rows<T: Element, const FUSED: bool>(
    x_c: ArrayView2<'_, T>,
    g: &Geometry,
    rows: Range<usize>,
    even: &mut [T],
    odd: &mut [T],
    line_buf: &mut Vec<T>,
) {
    let half = g.out_w + 1;
    let evens = even.chunks_exact_mut(half);
    let odds = odd.chunks_exact_mut(half);
    for ((row, e), o) in rows.zip(evens).zip(odds) {
        let line = row
            .checked_sub(g.padding.top)
            .filter(|&i| i < g.in_h)
            .map(|i| x_c.index_axis(Axis(0), i));
        match line {
            Some(line) => match line.as_slice() {
                Some(line) => deal::<T, FUSED>(line, g.padding.left, e, o),
                None => {
                    let copy = scratch(line_buf, line.len());
                    copy.iter_mut().zip(line).for_each(|(d, &v)| *d = v);
                    deal::<T, FUSED>(copy, g.padding.left, e, o);
                }
            },
            None => {
                e.fill(T::zero());
                o.fill(T::zero());
            }
        }
    }
}

/// Pairs of columns [`deal`] splits at a time: one vector of `f32`.
const DEAL_PAIRS: usize = 16;

/// Splits one input row `line`, after `left` zeros and with zeros past
/// it, into its even columns `even` and odd columns `odd`.
#[inline(always)]
fn deal<T: Element, const FUSED: bool>(line: &[T], left: usize, even: &mut [T], odd: &mut [T]) {
    let half = even.len();
    let padded = |column: usize| {
        column
            .checked_sub(left)
            .and_then(|i| line.get(i))
            .copied()
            .unwrap_or(T::zero())
    };
    // The pairs whose both columns lie in the line: `2j ≥ left` and
    // `2j + 1 < left + len`; the others, at the edges, one at a time.
    let first = left.div_ceil(2).min(half);
    let end = ((line.len() + left) / 2).clamp(first, half);
    for j in (0..first).chain(end..half) {
        even[j] = padded(2 * j);
        odd[j] = padded(2 * j + 1);
    }
    let pairs = &line[(2 * first).saturating_sub(left).min(line.len())..];
    let (even, odd) = (&mut even[first..end], &mut odd[first..end]);
    let count = even.len();
    if T::split_pairs(&pairs[..2 * count], even, odd) {
        return;
    }
    if count < DEAL_PAIRS {
        for ((pair, e), o) in pairs.chunks_exact(2).zip(even).zip(odd) {
            *e = pair[0];
            *o = pair[1];
        }
        return;
    }
    // Fixed-size pieces compile to vector shuffles; the last piece
    // overlaps the one before (writing the same values again) rather than
    // leave a remainder to split one pair at a time.
    for_each_piece(count, DEAL_PAIRS, |start| {
        let piece: &[T; 2 * DEAL_PAIRS] = pairs[2 * start..2 * (start + DEAL_PAIRS)]
            .try_into()
            .expect("a piece");
        let e: &mut [T; DEAL_PAIRS] = (&mut even[start..start + DEAL_PAIRS])
            .try_into()
            .expect("a piece");
        let o: &mut [T; DEAL_PAIRS] = (&mut odd[start..start + DEAL_PAIRS])
            .try_into()
            .expect("a piece");
        for k in 0..DEAL_PAIRS {
            e[k] = piece[2 * k];
            o[k] = piece[2 * k + 1];
        }
    });
}

/// Writes the output plane `y_c` (the band's rows) from its dealt input
/// rows (`split`: the even rows, then the odd rows, `half` long): in place
/// when contiguous, else through `plane_buf`.
fn write_plane<T: Element>(
    split: &[T],
    half: usize,
    (taps, bias): (&[T; 9], T),
    mut y_c: ArrayViewMut2<'_, T>,
    plane_buf: &mut Vec<T>,
) {
    let (out_h, out_w) = y_c.dim();
    if let Some(out) = y_c.as_slice_mut() {
        return plane_dispatch(split, half, (taps, bias), out_w, out);
    }
    let out = scratch(plane_buf, out_h * out_w);
    plane_dispatch(split, half, (taps, bias), out_w, out);
    let plane = ArrayView2::from_shape((out_h, out_w), &*out).expect("sized above");
    y_c.assign(&plane);
}

/// [`plane_body`] in the best SIMD build the CPU runs.
fn plane_dispatch<T: Element>(
    split: &[T],
    half: usize,
    weights: (&[T; 9], T),
    out_w: usize,
    out: &mut [T],
) {
    with_runtime_simd!(
        plane_avx512, plane_avx2, plane_body::<T, true>, plane_body::<T, false>,
        split: &[T], half: usize, weights: (&[T; 9], T), out_w: usize, out: &mut [T],
    );
}

/// The output rows `out` (`out_w` wide) in tiles of [`ROWS`] rows (one
/// row for a band of fewer) by [`VECTOR`] pixels.
#[inline(always)]
fn plane_body<T: Element, const FUSED: bool>(
    split: &[T],
    half: usize,
    weights: (&[T; 9], T),
    out_w: usize,
    out: &mut [T],
) {
    if out.len() >= ROWS * out_w {
        tiles::<T, FUSED, ROWS>(split, half, weights, out_w, out);
    } else {
        tiles::<T, FUSED, 1>(split, half, weights, out_w, out);
    }
}

/// [`plane_body`] in tiles of `R` rows; a tile past the last row or
/// column is shifted back to end on it (a few sums computed twice, stored
/// with the same value).
#[inline(always)]
fn tiles<T: Element, const FUSED: bool, const R: usize>(
    split: &[T],
    half: usize,
    (taps, bias): (&[T; 9], T),
    out_w: usize,
    out: &mut [T],
) {
    let out_h = out.len() / out_w;
    let (even, odd) = split.split_at(split.len() / 2);
    let madd = |a: T, b: T, c: T| if FUSED { a.mul_add(b, c) } else { a * b + c };
    let mut oh = 0;
    while oh < out_h {
        let top = oh.min(out_h - R);
        let mut ow = 0;
        while ow < out_w {
            let left = ow.min(out_w - VECTOR);
            let mut acc = [[bias; VECTOR]; R];
            for (r, sums) in acc.iter_mut().enumerate() {
                for kh in 0..3 {
                    let at = (2 * (top + r) + kh) * half + left;
                    let e: &[T; VECTOR] = even[at..at + VECTOR].try_into().expect("a vector");
                    let o: &[T; VECTOR] = odd[at..at + VECTOR].try_into().expect("a vector");
                    let next: &[T; VECTOR] =
                        even[at + 1..at + 1 + VECTOR].try_into().expect("a vector");
                    let [w0, w1, w2] = [taps[3 * kh], taps[3 * kh + 1], taps[3 * kh + 2]];
                    for k in 0..VECTOR {
                        sums[k] = madd(w2, next[k], madd(w1, o[k], madd(w0, e[k], sums[k])));
                    }
                }
            }
            for (r, sums) in acc.iter().enumerate() {
                let at = (top + r) * out_w + left;
                out[at..at + VECTOR].copy_from_slice(sums);
            }
            ow = left + VECTOR;
        }
        oh = top + R;
    }
}
