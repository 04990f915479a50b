//! A padded, pixel-major copy of one sample (`[pixel, channel]`, as HWC),
//! the layout the shifted and Winograd kernels compute on: the copy in and
//! out of NCHW is a tiled transpose (`transpose.rs`). For a row stride above
//! 1 the rows are split into phases (`PhasedImage`).

use super::transpose::transpose;
use crate::element::Element;
use crate::workspace::scratch;
use ndarray::{ArrayView1, ArrayView3, ArrayViewMut2, ArrayViewMut3, ShapeBuilder, s};
use std::ops::Range;

/// A padded, pixel-major image: `h` rows of `w` pixels of `c` channels,
/// and `tail` spare pixels after the last row, which the windows of the
/// dropped pixels of the last output row read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Image {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub tail: usize,
}

impl Image {
    /// The image of `c` planes of `(h, w)` pixels padded by `pad` (top,
    /// bottom, left, right), for windows reaching `reach_w` pixels to the
    /// right.
    ///
    /// Its rows are `w + max(left, right)` pixels apart, not `w + left +
    /// right`: a row's right padding is read from its own spare pixels and
    /// then from the next row's left padding, which are zeros too. Every
    /// output row then carries `max(left, right)` fewer dropped pixels
    /// (3% of the suite's dil product, 2% of r3x3's).
    pub(crate) fn padded(
        c: usize,
        (h, w): (usize, usize),
        pad: [usize; 4],
        reach_w: usize,
    ) -> Self {
        let [top, bottom, left, right] = pad;
        Image {
            c,
            h: top + h + bottom,
            w: w + left.max(right),
            tail: reach_w,
        }
    }

    pub(crate) fn len(&self) -> usize {
        (self.h * self.w + self.tail) * self.c
    }

    /// `src (c, h', w')` written into `buf` at `(top, left)`, zero elsewhere.
    pub(crate) fn fill<'b, T: Element>(
        &self,
        src: ArrayView3<'_, T>,
        (top, left): (usize, usize),
        buf: &'b mut Vec<T>,
    ) -> &'b [T] {
        let dst = scratch(buf, self.len());
        let (c, h, w) = src.dim();
        let start = |r: usize| ((top + r) * self.w + left) * c;
        // Zeros where the sample does not go: the rows above, the padding
        // between its rows, the rows below and the tail (zeroing the whole
        // image first would write it twice).
        if h == 0 || w == 0 {
            dst.fill(T::zero());
        } else {
            dst[..start(0)].fill(T::zero());
            for r in 1..h {
                dst[start(r - 1) + w * c..start(r)].fill(T::zero());
            }
            dst[start(h - 1) + w * c..].fill(T::zero());
        }
        match src.as_slice() {
            // Image rows as long as the sample's: its pixels are one run, so
            // one `[c, h·w]` transpose (row by row, a narrow image would be
            // narrower than a transpose tile).
            Some(planes) if self.w == w => {
                transpose(planes, h * w, &mut dst[start(0)..], c, (c, h * w));
            }
            // Row by row: the row's `[c, w]` block of the planes, transposed
            // into the image row's `[w, c]` pixels.
            Some(planes) => {
                for r in 0..h {
                    let pixels = &mut dst[start(r)..start(r) + w * c];
                    transpose(&planes[r * w..], h * w, pixels, c, (c, w));
                }
            }
            // A non-contiguous view: ndarray's general (slower) copy.
            None => {
                let shape = (h, w, c).strides((self.w * c, c, 1));
                ArrayViewMut3::from_shape(shape, &mut dst[start(0)..])
                    .expect("the image holds the sample at (top, left)")
                    .assign(&src.permuted_axes([1, 2, 0]));
            }
        }
        dst
    }

    /// [`Self::fill_staged`] of the rows `rows` of `sample` (`(c, h, w)`)
    /// alone, at `(top, left)`: a contiguous sample's rows are transposed
    /// row by row in place, as a view of some of its rows is not
    /// contiguous and would take ndarray's general copy.
    pub(crate) fn fill_rows<'b, T: Element>(
        &self,
        sample: ArrayView3<'_, T>,
        rows: Range<usize>,
        (top, left): (usize, usize),
        (buf, staging): (&'b mut Vec<T>, &mut Vec<T>),
    ) -> &'b [T] {
        let (c, h, w) = sample.dim();
        let planes = sample
            .as_slice()
            .filter(|_| rows.len() < h && !rows.is_empty());
        let Some(planes) = planes else {
            let band = sample.slice_move(s![.., rows, ..]);
            return self.fill_staged(band, (top, left), (buf, staging));
        };
        let dst = scratch(buf, self.len());
        let start = |r: usize| ((top + r) * self.w + left) * c;
        let band_h = rows.len();
        dst[..start(0)].fill(T::zero());
        for r in 1..band_h {
            dst[start(r - 1) + w * c..start(r)].fill(T::zero());
        }
        dst[start(band_h - 1) + w * c..].fill(T::zero());
        for (r, y) in rows.enumerate() {
            let pixels = &mut dst[start(r)..start(r) + w * c];
            transpose(&planes[y * w..], h * w, pixels, c, (c, w));
        }
        dst
    }

    /// [`Self::fill`], through `staging` for images narrower than a
    /// transpose tile is useful on (`w` under 16): the whole sample is
    /// transposed at once into `staging`, then its rows copied into place.
    pub(crate) fn fill_staged<'b, T: Element>(
        &self,
        src: ArrayView3<'_, T>,
        (top, left): (usize, usize),
        (buf, staging): (&'b mut Vec<T>, &mut Vec<T>),
    ) -> &'b [T] {
        let (c, h, w) = src.dim();
        let Some(planes) = src.as_slice().filter(|_| w < 16 && self.w != w) else {
            return self.fill(src, (top, left), buf);
        };
        let pixels = scratch(staging, h * w * c);
        transpose(planes, h * w, pixels, c, (c, h * w));
        let dst = scratch(buf, self.len());
        dst.fill(T::zero());
        for (r, row) in pixels.chunks_exact(w * c).enumerate() {
            let start = ((top + r) * self.w + left) * c;
            dst[start..start + w * c].copy_from_slice(row);
        }
        dst
    }

    /// [`Self::read`] of every row without a bias, through `staging` for
    /// images narrower than a transpose tile is useful on (`w` under 16):
    /// the rows are gathered into `staging`, then transposed at once.
    pub(crate) fn read_staged<T: Element>(
        &self,
        src: &[T],
        mut dst: ArrayViewMut3<'_, T>,
        staging: &mut Vec<T>,
    ) {
        let (c, h, w) = dst.dim();
        if w >= 16 || self.w == w || !dst.is_standard_layout() {
            return self.read(src, dst, 0..h, None);
        }
        let pixels = scratch(staging, h * w * c);
        for (r, row) in pixels.chunks_exact_mut(w * c).enumerate() {
            row.copy_from_slice(&src[r * self.w * c..][..w * c]);
        }
        let planes = dst.as_slice_mut().expect("standard layout checked above");
        transpose(pixels, c, planes, h * w, (h * w, c));
    }

    /// [`Self::read`] into a lane's band of a sample, `dst (c, rows, w)` a
    /// view whose planes are not one run of memory but each plane's rows
    /// are: the band is transposed at once into `staging` (`[c, pixels]`),
    /// and each channel's run copied into its plane with its bias, rather
    /// than element by element through a strided view (9% of the CPU time
    /// of a batch-1 Winograd forward pass; BENCHMARKS.md, "Small calls").
    /// Other views go to [`Self::read`].
    pub(crate) fn read_band<T: Element>(
        &self,
        src: &[T],
        mut dst: ArrayViewMut3<'_, T>,
        bias: Option<ArrayView1<'_, T>>,
        staging: &mut Vec<T>,
    ) {
        let (c, h, w) = dst.dim();
        let strides = dst.strides();
        let planes_of_rows = strides[2] == 1 && (h <= 1 || strides[1] == w as isize);
        if dst.is_standard_layout() || !planes_of_rows {
            return self.read(src, dst, 0..h, bias);
        }
        let pixels = h * w;
        let staged = scratch(staging, pixels * c);
        for r in 0..h {
            let start = r * self.w * c;
            transpose(
                &src[start..start + w * c],
                c,
                &mut staged[r * w..],
                pixels,
                (w, c),
            );
        }
        for (ch, mut plane) in dst.outer_iter_mut().enumerate() {
            let run = plane
                .as_slice_mut()
                .expect("a plane's rows are one run, checked above");
            let from = &staged[ch * pixels..][..pixels];
            match bias {
                Some(bias) => {
                    let b = bias[ch];
                    run.iter_mut().zip(from).for_each(|(d, &v)| *d = v + b);
                }
                None => run.copy_from_slice(from),
            }
        }
    }

    /// [`Image::read`] into rows `rows` of the sample `dst`, which may be
    /// any view: straight into its planes when it is in standard layout,
    /// through [`Image::read_band`] otherwise.
    pub(crate) fn read_rows<T: Element>(
        &self,
        src: &[T],
        mut dst: ArrayViewMut3<'_, T>,
        rows: Range<usize>,
        bias: Option<ArrayView1<'_, T>>,
        staging: &mut Vec<T>,
    ) {
        if dst.is_standard_layout() {
            self.read(src, dst, rows, bias);
        } else {
            self.read_band(src, dst.slice_mut(s![.., rows, ..]), bias, staging);
        }
    }

    /// The inverse, for rows `rows` of `dst (c, h, w)`: from `src`, whose
    /// rows are this image's (the pixels past `w` dropped), plus `bias` per
    /// channel.
    pub(crate) fn read<T: Element>(
        &self,
        src: &[T],
        mut dst: ArrayViewMut3<'_, T>,
        rows: Range<usize>,
        bias: Option<ArrayView1<'_, T>>,
    ) {
        let (c, h, w) = dst.dim();
        match dst.as_slice_mut() {
            // Image rows as long as the output's: the band is one `[pixels,
            // c]` matrix, transposed in one call (row by row, a narrow image
            // would be narrower than a transpose tile).
            Some(planes) if self.w == w => {
                let pixels = rows.len() * w;
                transpose(
                    &src[..pixels * c],
                    c,
                    &mut planes[rows.start * w..],
                    h * w,
                    (pixels, c),
                );
                for (ch, b) in bias.iter().flat_map(|b| b.iter().enumerate()) {
                    let band = &mut planes[ch * h * w + rows.start * w..][..pixels];
                    band.iter_mut().for_each(|v| *v += *b);
                }
            }
            Some(planes) => {
                for (local, r) in rows.enumerate() {
                    let start = local * self.w * c;
                    transpose(
                        &src[start..start + w * c],
                        c,
                        &mut planes[r * w..],
                        h * w,
                        (w, c),
                    );
                    for (ch, b) in bias.iter().flat_map(|b| b.iter().enumerate()) {
                        let line = &mut planes[(ch * h + r) * w..(ch * h + r + 1) * w];
                        line.iter_mut().for_each(|v| *v += *b);
                    }
                }
            }
            None => {
                let shape = (rows.len(), w, c).strides((self.w * c, c, 1));
                let pixels =
                    ArrayView3::from_shape(shape, src).expect("the product covers the rows");
                let mut band = dst.slice_mut(s![.., rows, ..]);
                band.assign(&pixels.permuted_axes([2, 0, 1]));
                for (mut plane, b) in band.outer_iter_mut().zip(bias.iter().flatten()) {
                    plane += *b;
                }
            }
        }
    }
}

/// A padded, pixel-major sample with its rows split by the row stride `sh`
/// into `sh` row phases, one after the other: row phase `a` holds the
/// padded rows `a + sh·u` at its row `u`, each row `phase.w` pixels long.
///
/// With rows `sw·p` pixels long, a window at column stride `sw` is a
/// matrix with rows `sw` pixels apart that moves on by `p` output pixels
/// per output row: a zero-copy `[out_h·p, c]` view, as at stride 1 (where
/// this is [`Image::padded`], one phase). Columns stay pixel-major, so the
/// taps of a kernel row are adjacent (one GEMM) whatever the stride.
///
/// Each row is `sw·p` pixels long, `p = ceil((w + max(left, right)) / sw)`
/// or more when asked: a row's right padding is shared with the next row's
/// left padding (as in [`Image::padded`]). Every phase has its own `tail`
/// of spare pixels, so that a window running off a phase's last row reads
/// zeros, not the next phase.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PhasedImage {
    /// One row phase (its `tail` included); `phase.w` is the row length.
    pub phase: Image,
    pub sh: usize,
    pub sw: usize,
    /// Where the sample's pixel `(0, 0)` lies in padded coordinates.
    pub top: usize,
    pub left: usize,
}

impl PhasedImage {
    /// The row phases of `c` planes of `(h, w)` pixels padded by `pad` (top,
    /// bottom, left, right) for stride `(sh, sw)`, with rows of at least
    /// `min_pixels·sw` pixels, and `tail` spare pixels a phase.
    pub(crate) fn padded(
        c: usize,
        (h, w): (usize, usize),
        pad: [usize; 4],
        (sh, sw): (usize, usize),
        min_pixels: usize,
        tail: usize,
    ) -> Self {
        let [top, bottom, left, right] = pad;
        PhasedImage {
            phase: Image {
                c,
                h: (top + h + bottom).div_ceil(sh),
                w: sw * (w + left.max(right)).div_ceil(sw).max(min_pixels),
                tail,
            },
            sh,
            sw,
            top,
            left,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.sh * self.phase.len()
    }

    /// Output pixels per output row of a window at column stride `sw`.
    pub(crate) fn row_outputs(&self) -> usize {
        self.phase.w / self.sw
    }

    /// Where pixel `col` of row `u` of row phase `a` starts.
    pub(crate) fn offset(&self, a: usize, (u, col): (usize, usize)) -> usize {
        a * self.phase.len() + (u * self.phase.w + col) * self.phase.c
    }

    /// Where the sample's row `y` starts (its pixel 0), in padded terms.
    fn row_start(&self, y: usize) -> usize {
        let r = y + self.top;
        self.offset(r % self.sh, (r / self.sh, self.left))
    }

    /// `src (c, h, w)` written into `buf`, zero elsewhere.
    pub(crate) fn fill<'b, T: Element>(
        &self,
        src: ArrayView3<'_, T>,
        buf: &'b mut Vec<T>,
    ) -> &'b [T] {
        if self.sh == 1 {
            return self.phase.fill(src, (self.top, self.left), buf);
        }
        let dst = scratch(buf, self.len());
        dst.fill(T::zero());
        let (c, h, w) = src.dim();
        match src.as_slice() {
            Some(planes) => {
                for y in 0..h {
                    let start = self.row_start(y);
                    transpose(&planes[y * w..], h * w, &mut dst[start..], c, (c, w));
                }
            }
            None => {
                for y in 0..h {
                    let start = self.row_start(y);
                    ArrayViewMut2::from_shape((w, c), &mut dst[start..start + w * c])
                        .expect("the row holds the sample's row")
                        .assign(&src.slice(s![.., y, ..]).t());
                }
            }
        }
        dst
    }

    /// The inverse: the sample's pixels of `src` (laid out as this image)
    /// written into `dst (c, h, w)`.
    pub(crate) fn read<T: Element>(&self, src: &[T], mut dst: ArrayViewMut3<'_, T>) {
        let (c, h, w) = dst.dim();
        for y in 0..h {
            let start = self.row_start(y);
            let row = Image {
                c,
                h: 1,
                w,
                tail: 0,
            };
            row.read(&src[start..start + w * c], dst.view_mut(), y..y + 1, None);
        }
    }
}
