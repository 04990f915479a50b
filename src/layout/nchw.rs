//! The NCHW side of the strided lowering: padded copies of the input (with
//! columns dealt into phases by the column stride), zero-copy window views
//! of them, the one copy of those views into a column matrix and its
//! adjoint, the error dilated and padded for the input-gradient pass, and
//! the flipped, channel-swapped weights that pass multiplies it by.

use crate::algo::strided::simd::with_runtime_simd;
use crate::element::Element;
use crate::spec::Geometry;
use crate::workspace::scratch;
use ndarray::{ArrayView2, ArrayView4, ArrayView5, ArrayViewMut4, Axis, ShapeBuilder, s};
use std::ops::Range;

/// Where the kernel reads in a padded source: taps, their spacing, the step
/// between output pixels, and how many output pixels there are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl Window {
    /// The forward window: over the padded input, producing the output.
    pub fn forward(g: &Geometry) -> Self {
        Window {
            kh: g.kh,
            kw: g.kw,
            sh: g.sh,
            sw: g.sw,
            dh: g.dh,
            dw: g.dw,
            out_h: g.out_h,
            out_w: g.out_w,
        }
    }

    /// The input-gradient window: stride 1 over the dilated, padded error
    /// (see [`dilate_and_pad_error`]), producing one value per input pixel.
    pub fn input_gradient(g: &Geometry) -> Self {
        Window {
            kh: g.kh,
            kw: g.kw,
            sh: 1,
            sw: 1,
            dh: g.dh,
            dw: g.dw,
            out_h: g.in_h,
            out_w: g.in_w,
        }
    }
}

/// How a prepared (padded) source lies in memory: `(n, c, h, w)`, contiguous,
/// with each row's `w` columns dealt into `phases` runs of
/// `phase_width()` — column `col` at `(col % phases) * phase_width() + col /
/// phases`. With `phases` equal to the column stride, every tap's windows
/// read a contiguous run of each row, so the copy into the column matrix is
/// a `memcpy` per line instead of a strided gather. `phases == 1` is the
/// plain NCHW layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SourceLayout {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    /// The padded width.
    pub w: usize,
    pub phases: usize,
}

impl SourceLayout {
    /// The plain NCHW layout of a `(n, c, h, w)` buffer.
    pub fn plain((n, c, h, w): (usize, usize, usize, usize)) -> Self {
        SourceLayout {
            n,
            c,
            h,
            w,
            phases: 1,
        }
    }

    pub fn phase_width(&self) -> usize {
        self.w.div_ceil(self.phases.max(1))
    }

    /// Elements per stored row: the width, rounded up to whole phases.
    pub fn row_len(&self) -> usize {
        self.phase_width() * self.phases.max(1)
    }

    pub fn len(&self) -> usize {
        self.n * self.c * self.h * self.row_len()
    }

    /// Where output column 0 of a window whose first tap reads padded column
    /// `col` lies within a stored row, and the step between output columns
    /// for column stride `sw`: `sw` in the plain layout, 1 in a phased one.
    fn window_columns(&self, col: usize, sw: usize) -> (usize, usize) {
        debug_assert!(self.phases == 1 || self.phases == sw);
        if self.phases == 1 {
            (col, sw)
        } else {
            (
                (col % self.phases) * self.phase_width() + col / self.phases,
                1,
            )
        }
    }

    /// For an image `w` columns wide stored from padded column `left` on, in
    /// the stored row starting at `row_start`: each phase's first image
    /// column and the buffer range its columns fill, one every `phases`.
    fn phase_runs(
        &self,
        left: usize,
        w: usize,
        row_start: usize,
    ) -> impl Iterator<Item = (usize, Range<usize>)> + use<> {
        let (phases, phase_width) = (self.phases, self.phase_width());
        (0..phases).filter_map(move |phase| {
            let first = (phase + phases - left % phases) % phases;
            let start = row_start + phase * phase_width + (left + first) / phases;
            (first < w).then(|| (first, start..row_start + (phase + 1) * phase_width))
        })
    }
}

/// The zero-copy window view of kernel column `j` over a prepared source:
/// axes `(n, c, out_h, kh, out_w)`, element `[n, c, oh, i, ow]` being the
/// padded source's `[n, c, oh*sh + i*dh, ow*sw + j*dw]`. Windows overlap,
/// which ndarray permits for read-only views. In a phased layout
/// (`phases == sw`) the `out_w` axis has unit stride.
pub(crate) fn tap_column_view<'a, T>(
    src: &'a [T],
    layout: SourceLayout,
    win: &Window,
    j: usize,
) -> ArrayView5<'a, T> {
    let SourceLayout { n, c, h, .. } = layout;
    let row = layout.row_len();
    let (start, step) = layout.window_columns(j * win.dw, win.sw);
    let shape = (n, c, win.out_h, win.kh, win.out_w);
    let strides = (c * h * row, h * row, win.sh * row, win.dh * row, step);
    ArrayView5::from_shape(
        shape.strides(strides),
        &src[start.min(layout.len())..layout.len()],
    )
    .expect("window view lies inside its source by construction of the geometry")
}

/// Copies the windows of output rows `rows` into the column matrix `cols`
/// (row-major, `[c·kh·kw, n·rows·out_w]`): row `(c, i, j)`, column `(n, oh,
/// ow)`. This is the one copy of the strided lowering: kernel column by
/// kernel column, each [`tap_column_view`] walked line by line, a line being
/// contiguous (one copy, [`copy_line`]) unless the layout is plain and
/// `sw > 1`.
pub(crate) fn copy_windows_to_columns<T: Element>(
    src: &[T],
    layout: SourceLayout,
    win: &Window,
    rows: Range<usize>,
    cols: &mut [T],
) {
    // The short lines' blocks in the widest vectors the CPU has.
    with_runtime_simd!(
        copy_windows_avx512, copy_windows_avx2,
        copy_windows_to_columns_body::<T>, copy_windows_to_columns_body::<T>,
        src: &[T], layout: SourceLayout, win: &Window, rows: Range<usize>, cols: &mut [T],
    );
}

#[inline(always)]
fn copy_windows_to_columns_body<T: Element>(
    src: &[T],
    layout: SourceLayout,
    win: &Window,
    rows: Range<usize>,
    cols: &mut [T],
) {
    let row_len = layout.n * rows.len() * win.out_w;
    if row_len == 0 {
        return;
    }
    for j in 0..win.kw {
        // (c, kh, n, rows, out_w): lines in the order the column matrix wants.
        let view = tap_column_view(src, layout, win, j)
            .slice_move(s![.., .., rows.clone(), .., ..])
            .permuted_axes([1, 3, 0, 2, 4]);
        for (ch, per_channel) in view.outer_iter().enumerate() {
            for (i, per_tap) in per_channel.outer_iter().enumerate() {
                let row = (ch * win.kh + i) * win.kw + j;
                let dst = &mut cols[row * row_len..(row + 1) * row_len];
                for (dst, line) in dst.chunks_exact_mut(win.out_w).zip(per_tap.rows()) {
                    match line.as_slice() {
                        Some(contiguous) => copy_line(dst, contiguous),
                        None => dst.iter_mut().zip(line).for_each(|(d, &v)| *d = v),
                    }
                }
            }
        }
    }
}

/// Lines shorter than this many elements are copied in blocks inline
/// rather than by a call to `memcpy` (BENCHMARKS.md, "Short lines"): the
/// call and its dispatch cost more than moving a line of a few vectors.
const SHORT_LINE: usize = 64;

/// Elements a block of a short line's copy moves: an AVX-512 vector of
/// `f64`, half of one of `f32`.
const LINE_BLOCK: usize = 8;

/// `dst = src`, for one line of the lowering.
#[inline(always)]
fn copy_line<T: Element>(dst: &mut [T], src: &[T]) {
    if src.len() >= SHORT_LINE {
        dst.copy_from_slice(src);
        return;
    }
    let mut dst_blocks = dst.chunks_exact_mut(LINE_BLOCK);
    let mut src_blocks = src.chunks_exact(LINE_BLOCK);
    for (to, from) in dst_blocks.by_ref().zip(src_blocks.by_ref()) {
        let from: &[T; LINE_BLOCK] = from.try_into().expect("blocks of LINE_BLOCK");
        let to: &mut [T; LINE_BLOCK] = to.try_into().expect("blocks of LINE_BLOCK");
        *to = *from;
    }
    let len = src.len();
    if len.is_multiple_of(LINE_BLOCK) {
        return;
    }
    if len > LINE_BLOCK {
        // The last block ends on the line's end, over part of the one
        // before: one more vector move rather than a few scalar ones.
        let from: &[T; LINE_BLOCK] = src[len - LINE_BLOCK..].try_into().expect("one block");
        let to: &mut [T; LINE_BLOCK] = (&mut dst[len - LINE_BLOCK..len])
            .try_into()
            .expect("one block");
        *to = *from;
        return;
    }
    // Element by element: `copy_from_slice` calls `memcpy` even for none.
    let rest = dst_blocks.into_remainder().iter_mut();
    for (to, &from) in rest.zip(src_blocks.remainder()) {
        *to = from;
    }
}

/// `dst += src`, for one line of col2im (vectorised as it stands; in
/// blocks as [`copy_line`] it is slower).
#[inline(always)]
fn add_line<T: Element>(dst: &mut [T], src: &[T]) {
    for (to, &from) in dst.iter_mut().zip(src) {
        *to += from;
    }
}

/// The adjoint of [`copy_windows_to_columns`]: adds each entry of `cols`
/// (`[c·kh·kw, n·out_h·out_w]`) onto the element of the prepared buffer
/// `dst` (in `layout`) it was read from. Used for the input gradient by
/// col2im, on a padded buffer whose border is dropped after ([`crop_into`]).
/// `cols` covers the output rows `first_row..first_row + win.out_h`. In a
/// phased layout every line adds onto a contiguous run.
pub(crate) fn add_columns_to_windows<T: Element>(
    cols: ArrayView2<'_, T>,
    dst: &mut [T],
    layout: SourceLayout,
    win: &Window,
    first_row: usize,
) {
    // The lines' adds in the widest vectors the CPU has.
    with_runtime_simd!(
        add_columns_avx512, add_columns_avx2,
        add_columns_to_windows_body::<T>, add_columns_to_windows_body::<T>,
        cols: ArrayView2<'_, T>, dst: &mut [T], layout: SourceLayout, win: &Window,
        first_row: usize,
    );
}

#[inline(always)]
fn add_columns_to_windows_body<T: Element>(
    cols: ArrayView2<'_, T>,
    dst: &mut [T],
    layout: SourceLayout,
    win: &Window,
    first_row: usize,
) {
    let SourceLayout { c, h, .. } = layout;
    let row_len = layout.row_len();
    let columns = layout.n * win.out_h * win.out_w;
    for (row, src_row) in cols.outer_iter().enumerate() {
        let (ch, i, j) = (row / (win.kh * win.kw), row / win.kw % win.kh, row % win.kw);
        let src_row = src_row.to_slice().expect("column matrices are row-major");
        debug_assert_eq!(src_row.len(), columns);
        let (offset, step) = layout.window_columns(j * win.dw, win.sw);
        // Line after line, the start stepping by rows and samples: no
        // division a line, which cost more than the adds of a short one.
        let mut lines = src_row.chunks_exact(win.out_w.max(1));
        for sample in 0..layout.n {
            let first =
                ((sample * c + ch) * h + first_row * win.sh + i * win.dh) * row_len + offset;
            for (oh, line) in (0..win.out_h).zip(lines.by_ref()) {
                let start = first + oh * win.sh * row_len;
                if step == 1 {
                    add_line(&mut dst[start..start + win.out_w], line);
                } else {
                    for (k, &v) in line.iter().enumerate() {
                        dst[start + k * step] += v;
                    }
                }
            }
        }
    }
}

/// The inverse of [`pad_into`]: writes the interior of the prepared buffer
/// `src` (in `layout`, padded by `padding`) into `dst`, `(n, c, h, w)`.
pub(crate) fn crop_into<T: Element>(
    src: &[T],
    layout: SourceLayout,
    padding: crate::Padding,
    mut dst: ArrayViewMut4<'_, T>,
) {
    let (_, _, h, w) = dst.dim();
    let src = &src[..layout.len()];
    if layout.phases == 1 {
        let row_len = layout.row_len();
        for (index, mut line) in dst.rows_mut().into_iter().enumerate() {
            let (plane, r) = (index / h, index % h);
            let start = (plane * layout.h + padding.top + r) * row_len + padding.left;
            let run = &src[start..start + w];
            match line.as_slice_mut() {
                Some(contiguous) => contiguous.copy_from_slice(run),
                None => line.iter_mut().zip(run).for_each(|(d, &v)| *d = v),
            }
        }
        return;
    }
    let (row_len, phases) = (layout.row_len(), layout.phases);
    for (index, mut line) in dst.rows_mut().into_iter().enumerate() {
        let (plane, r) = (index / h, index % h);
        let base = (plane * layout.h + padding.top + r) * row_len;
        if let (2, Some(row)) = (phases, line.as_slice_mut()) {
            let (mut evens, mut odds): (&[T], &[T]) = (&[], &[]);
            for (first, run) in layout.phase_runs(padding.left, w, base) {
                *(if first == 0 { &mut evens } else { &mut odds }) = &src[run];
            }
            gather_pairs(evens, odds, row);
            continue;
        }
        for (first, run) in layout.phase_runs(padding.left, w, base) {
            let run = &src[run];
            match line.as_slice_mut() {
                Some(row) => {
                    for (d, &v) in row[first..].iter_mut().step_by(phases).zip(run) {
                        *d = v;
                    }
                }
                None => {
                    for (d, &v) in line.slice_mut(s![first..;phases]).iter_mut().zip(run) {
                        *d = v;
                    }
                }
            }
        }
    }
}

/// The two phase runs of a two-phase row (from [`SourceLayout::phase_runs`])
/// as mutable slices of `dst`: the run that takes the row's even columns,
/// then the one that takes its odd columns.
fn pair_runs<T>(
    dst: &mut [T],
    runs: impl Iterator<Item = (usize, Range<usize>)>,
) -> (&mut [T], &mut [T]) {
    let (mut even, mut odd) = (0..0, 0..0);
    for (first, run) in runs {
        *(if first == 0 { &mut even } else { &mut odd }) = run;
    }
    // The runs are disjoint ranges of one row, in either order (the odd
    // one empty for a one-column row).
    if even.end <= odd.start {
        let (low, high) = dst.split_at_mut(odd.start);
        (&mut low[even], &mut high[..odd.len()])
    } else {
        let (low, high) = dst.split_at_mut(even.start);
        let odd_run = &mut low[odd];
        (&mut high[..even.len()], odd_run)
    }
}

/// `evens[k] = row[2k]`, `odds[k] = row[2k + 1]`, as far as the row goes.
/// Walking the row in pairs lets the compiler use vector shuffles, which a
/// stride-2 walk per phase does not (a stride-2 walk makes the padding copy
/// and its inverse an eighth of the r3x3s2 backward pass).
pub(crate) fn deal_pairs<T: Copy>(row: &[T], evens: &mut [T], odds: &mut [T]) {
    let pairs = row.chunks_exact(2);
    if let [last] = pairs.remainder() {
        evens[row.len() / 2] = *last;
    }
    for ((pair, even), odd) in pairs.zip(evens.iter_mut()).zip(odds.iter_mut()) {
        *even = pair[0];
        *odd = pair[1];
    }
}

/// The inverse of [`deal_pairs`]: `row[2k] = evens[k]`, `row[2k + 1] = odds[k]`.
fn gather_pairs<T: Copy>(evens: &[T], odds: &[T], row: &mut [T]) {
    let len = row.len();
    let mut pairs = row.chunks_exact_mut(2);
    for ((pair, &even), &odd) in (&mut pairs).zip(evens).zip(odds) {
        pair[0] = even;
        pair[1] = odd;
    }
    if let [last] = pairs.into_remainder() {
        *last = evens[len / 2];
    }
}

/// Writes `x` (any strides) into `dst` padded with zeros, in the layout
/// with `phases` column phases (see [`SourceLayout`]).
pub(crate) fn pad_into<T: Element>(
    x: ArrayView4<'_, T>,
    padding: crate::Padding,
    phases: usize,
    dst: &mut [T],
) -> SourceLayout {
    let (n, c, h, w) = x.dim();
    let layout = SourceLayout {
        n,
        c,
        h: h + padding.top + padding.bottom,
        w: w + padding.left + padding.right,
        phases: phases.max(1),
    };
    let dst = &mut dst[..layout.len()];
    if dst.is_empty() {
        return layout;
    }
    if layout.phases == 1 {
        // Row by row: a memcpy per contiguous input row, zeros written only
        // in the border (ndarray's `assign` on the padded view costs a fifth
        // of the depthwise backward pass).
        let row_len = layout.row_len();
        for (plane, dst_plane) in dst.chunks_exact_mut(layout.h * row_len).enumerate() {
            let (top, rest) = dst_plane.split_at_mut(padding.top * row_len);
            top.fill(T::zero());
            let (interior, bottom) = rest.split_at_mut(h * row_len);
            bottom.fill(T::zero());
            let image = x.index_axis(Axis(0), plane / c.max(1));
            let image = image.index_axis(Axis(0), plane % c.max(1));
            for (dst_row, line) in interior.chunks_exact_mut(row_len).zip(image.rows()) {
                let (left, rest) = dst_row.split_at_mut(padding.left);
                left.fill(T::zero());
                let (middle, right) = rest.split_at_mut(w);
                right.fill(T::zero());
                match line.as_slice() {
                    Some(contiguous) => middle.copy_from_slice(contiguous),
                    None => middle.iter_mut().zip(line).for_each(|(d, &v)| *d = v),
                }
            }
        }
        return layout;
    }
    dst.fill(T::zero());
    let (row_len, phases) = (layout.row_len(), layout.phases);
    for (index, line) in x.rows().into_iter().enumerate() {
        let (plane, r) = (index / h, index % h);
        let base = (plane * layout.h + padding.top + r) * row_len;
        if let (2, Some(row)) = (phases, line.as_slice()) {
            let (evens, odds) = pair_runs(dst, layout.phase_runs(padding.left, w, base));
            deal_pairs(row, evens, odds);
            continue;
        }
        for (first, run) in layout.phase_runs(padding.left, w, base) {
            let run = &mut dst[run];
            // On a slice when the row is contiguous: slicing the ndarray row
            // per phase costs a fifth of the r3x3s2 forward pass.
            match line.as_slice() {
                Some(row) => {
                    for (d, &v) in run.iter_mut().zip(row[first..].iter().step_by(phases)) {
                        *d = v;
                    }
                }
                None => {
                    for (d, &v) in run.iter_mut().zip(line.slice(s![first..;phases])) {
                        *d = v;
                    }
                }
            }
        }
    }
    layout
}

/// One sample's padded input `(c, hp, wp)` as a contiguous slice: in place
/// when unpadded and contiguous, else copied into `buf`.
pub(crate) fn padded_sample<'a, T: Element>(
    x: ArrayView4<'a, T>,
    n: usize,
    g: &Geometry,
    buf: &'a mut Vec<T>,
) -> &'a [T] {
    let sample = x.slice_move(s![n..n + 1, .., .., ..]);
    if g.padding.is_zero()
        && let Some(in_place) = sample.to_slice()
    {
        return in_place;
    }
    let len = g.in_channels
        * (g.in_h + g.padding.top + g.padding.bottom)
        * (g.in_w + g.padding.left + g.padding.right);
    let buf = scratch(buf, len);
    pad_into(sample, g.padding, 1, buf);
    buf
}

/// The error as the input-gradient pass sees it: `dy` (`(n, c_out, out_h,
/// out_w)`) with `sh - 1` zeros between its rows and `sw - 1` between its
/// columns (undoing the stride), then shifted so that a stride-1 window of the
/// flipped kernel lands on the input pixel it came from. The result is
/// `(n, c_out, in_h + (kh-1)*dh, in_w + (kw-1)*dw)`, contiguous, in `dst`.
///
/// Entry `dy[oh, ow]` goes to `(oh*sh + (kh-1)*dh - pad_top, ...)`. When the
/// padding exceeds the kernel extent, some of those positions fall outside the
/// buffer: they are output pixels whose window saw only padding, so they
/// contribute nothing to the input gradient and are dropped.
pub(crate) fn dilate_and_pad_error<T: Element>(
    dy: ArrayView4<'_, T>,
    g: &Geometry,
    dst: &mut [T],
) -> (usize, usize, usize, usize) {
    let (n, c, oh, ow) = dy.dim();
    let hq = g.in_h + (g.kh - 1) * g.dh;
    let wq = g.in_w + (g.kw - 1) * g.dw;
    let mut out = ArrayViewMut4::from_shape((n, c, hq, wq), &mut dst[..n * c * hq * wq])
        .expect("error buffer sized by the caller");
    out.fill(T::zero());
    // First and last output row/column that lands inside the buffer.
    let offset_h = ((g.kh - 1) * g.dh) as isize - g.padding.top as isize;
    let offset_w = ((g.kw - 1) * g.dw) as isize - g.padding.left as isize;
    let landing = |offset: isize, step: usize, count: usize, len: usize| {
        let first = (0..count).find(|&o| (o * step) as isize + offset >= 0);
        let first = first.unwrap_or(count);
        let last = (first..count)
            .take_while(|&o| (o * step) as isize + offset < len as isize)
            .last()
            .map_or(first, |o| o + 1);
        first..last
    };
    let rows = landing(offset_h, g.sh, oh, hq);
    let cols = landing(offset_w, g.sw, ow, wq);
    if rows.is_empty() || cols.is_empty() {
        return (n, c, hq, wq);
    }
    let row0 = ((rows.start * g.sh) as isize + offset_h) as usize;
    let col0 = ((cols.start * g.sw) as isize + offset_w) as usize;
    let row_end = row0 + (rows.len() - 1) * g.sh + 1;
    let col_end = col0 + (cols.len() - 1) * g.sw + 1;
    out.slice_mut(s![
        ..,
        ..,
        row0..row_end;g.sh,
        col0..col_end;g.sw
    ])
    .assign(&dy.slice(s![.., .., rows, cols]));
    (n, c, hq, wq)
}

/// The weights of the input-gradient pass: each kernel flipped in both
/// spatial axes, and input and output channels swapped within each group.
/// `[c_out, c_in/groups, kh, kw]` becomes `[c_in, c_out/groups, kh, kw]`,
/// written contiguously into `dst`.
pub(crate) fn flip_and_swap_weights<T: Element>(
    w: ArrayView4<'_, T>,
    groups: usize,
    dst: &mut [T],
) {
    let (c_out, c_in_g, kh, kw) = w.dim();
    let c_out_g = c_out / groups;
    let mut out = ArrayViewMut4::from_shape((c_in_g * groups, c_out_g, kh, kw), dst)
        .expect("flipped-weight buffer sized by the caller");
    for (group, w_group) in w.axis_chunks_iter(Axis(0), c_out_g).enumerate() {
        let flipped = w_group.slice(s![.., .., ..;-1, ..;-1]);
        out.slice_mut(s![group * c_in_g..(group + 1) * c_in_g, .., .., ..])
            .assign(&flipped.permuted_axes([1, 0, 2, 3]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Padding;
    use ndarray::Array4;

    /// A small input whose every element is distinct, seen through a
    /// transposed view so that `pad_into` reads non-contiguous rows.
    fn input() -> Array4<f64> {
        Array4::from_shape_fn((2, 3, 7, 9), |(n, c, h, w)| {
            (((n * 3 + c) * 7 + h) * 9 + w) as f64
        })
    }

    fn padding() -> Padding {
        Padding {
            top: 2,
            bottom: 1,
            left: 3,
            right: 1,
        }
    }

    #[test]
    fn phased_padding_round_trips() {
        let x = input();
        let transposed = x.view().reversed_axes().to_owned().reversed_axes();
        for phases in 1..=4 {
            let layout = SourceLayout {
                phases,
                ..SourceLayout::plain((2, 3, 10, 13))
            };
            let mut buf = vec![f64::NAN; layout.len()];
            assert_eq!(
                pad_into(transposed.view(), padding(), phases, &mut buf),
                layout
            );
            let mut back = Array4::from_elem(x.raw_dim(), f64::NAN);
            crop_into(&buf, layout, padding(), back.view_mut());
            assert_eq!(back, x, "{phases} phases");
            // The border and the rounding columns are zeros, not left over.
            let interior: f64 = x.iter().sum();
            assert_eq!(buf.iter().sum::<f64>(), interior, "{phases} phases");
        }
    }

    /// The lowering and its adjoint on a plain source of `T`, element by
    /// element against their definitions, for lines of every length from
    /// one to past [`SHORT_LINE`]: whole blocks, blocks and a remainder, a
    /// remainder alone, and the `memcpy` of long lines.
    fn lowers_by_definition<T: Element>() {
        let (n, c, kh, kw, sh, dh) = (2, 2, 2, 3, 2, 1);
        for out_w in (1..=20).chain([23, 24, 25, 31, 32, 33, 63, 64, 65, 70]) {
            let (h, w) = (6, out_w + kw - 1);
            let win = Window {
                kh,
                kw,
                sh,
                sw: 1,
                dh,
                dw: 1,
                out_h: (h - (kh - 1) * dh - 1) / sh + 1,
                out_w,
            };
            let layout = SourceLayout::plain((n, c, h, w));
            let at = |(s, ch, y, x): (usize, usize, usize, usize)| ((s * c + ch) * h + y) * w + x;
            let src: Vec<T> = (0..layout.len()).map(|v| T::from_f64(v as f64)).collect();
            let rows = 1..win.out_h;
            let columns = n * rows.len() * out_w;
            let mut cols = vec![T::from_f64(-1.0); c * kh * kw * columns];
            copy_windows_to_columns(&src, layout, &win, rows.clone(), &mut cols);
            let mut added = vec![T::zero(); layout.len()];
            let mut expected = vec![T::zero(); layout.len()];
            for (ch, i, j) in
                (0..c).flat_map(|ch| (0..kh).flat_map(move |i| (0..kw).map(move |j| (ch, i, j))))
            {
                let row = (ch * kh + i) * kw + j;
                for (s, oh, ow) in (0..n).flat_map(|s| {
                    rows.clone()
                        .flat_map(move |oh| (0..out_w).map(move |ow| (s, oh, ow)))
                }) {
                    let column = (s * rows.len() + oh - rows.start) * out_w + ow;
                    let source = at((s, ch, oh * sh + i * dh, ow + j));
                    assert_eq!(
                        cols[row * columns + column],
                        src[source],
                        "out_w {out_w}: row {row}, column {column}"
                    );
                    expected[source] += src[source];
                }
            }
            let band = Window {
                out_h: rows.len(),
                ..win
            };
            let cols = ArrayView2::from_shape((c * kh * kw, columns), &cols[..]).unwrap();
            add_columns_to_windows(cols, &mut added, layout, &band, rows.start);
            assert_eq!(added, expected, "adjoint, out_w {out_w}");
        }
    }

    #[test]
    fn lowering_matches_its_definition_on_lines_of_any_length() {
        lowers_by_definition::<f32>();
        lowers_by_definition::<f64>();
    }

    /// The column matrix is the same whatever the layout of the source, for
    /// every band of rows, and its adjoint adds back onto the same places.
    #[test]
    fn phased_and_plain_layouts_lower_alike() {
        let x = input();
        for (sw, dw) in [(2, 1), (3, 2), (2, 2)] {
            let win = Window {
                kh: 2,
                kw: 3,
                sh: 2,
                sw,
                dh: 1,
                dw,
                out_h: (10 - 2) / 2 + 1,
                out_w: (13 - (3 - 1) * dw - 1) / sw + 1,
            };
            let plain = SourceLayout::plain((2, 3, 10, 13));
            let phased = SourceLayout {
                phases: sw,
                ..plain
            };
            let mut plain_buf = vec![0.0; plain.len()];
            let mut phased_buf = vec![0.0; phased.len()];
            pad_into(x.view(), padding(), 1, &mut plain_buf);
            pad_into(x.view(), padding(), sw, &mut phased_buf);
            for rows in [0..win.out_h, 1..3] {
                let len = 3 * 2 * 3 * 2 * rows.len() * win.out_w;
                let (mut from_plain, mut from_phased) = (vec![0.0; len], vec![0.0; len]);
                copy_windows_to_columns(&plain_buf, plain, &win, rows.clone(), &mut from_plain);
                copy_windows_to_columns(&phased_buf, phased, &win, rows.clone(), &mut from_phased);
                assert_eq!(from_plain, from_phased, "sw {sw}, dw {dw}, rows {rows:?}");
                assert!(from_plain.iter().any(|&v| v > 0.0));

                let cols = ArrayView2::from_shape((18, len / 18), &from_plain[..]).unwrap();
                let band = Window {
                    out_h: rows.len(),
                    ..win
                };
                let mut into_plain = vec![0.0; plain.len()];
                let mut into_phased = vec![0.0; phased.len()];
                add_columns_to_windows(cols, &mut into_plain, plain, &band, rows.start);
                add_columns_to_windows(cols, &mut into_phased, phased, &band, rows.start);
                let mut a = Array4::zeros(x.raw_dim());
                let mut b = Array4::zeros(x.raw_dim());
                crop_into(&into_plain, plain, padding(), a.view_mut());
                crop_into(&into_phased, phased, padding(), b.view_mut());
                assert_eq!(a, b, "adjoint, sw {sw}, dw {dw}, rows {rows:?}");
            }
        }
    }
}
