//! Register-blocked stencils: one output channel's plane from its padded
//! input planes, for square 3x3 and 5x5 kernels at unit stride and
//! dilation (depthwise layers, and any group whose output channels do not
//! fill the multi-channel tiles of `tiled.rs`).
//!
//! A tile is [`ROWS`] output rows by a vector of pixels, summed over every
//! tap and input channel in registers and stored once. With one output
//! channel a tile, the channel tiles of `tiled.rs` multiply two vectors a
//! tap for a dozen scalar instructions of addressing; here the kernel size
//! is a constant, so the taps unroll into straight runs of fused
//! multiply-adds, eight independent sums at a time, with one bounds check
//! a row of input.

use crate::algo::strided::simd::with_runtime_simd;
use crate::element::Element;
use crate::spec::Geometry;

/// Output rows a tile: eight vectors of sums, enough independent chains to
/// keep two FMA pipes busy through their latency.
const ROWS: usize = 8;

/// Whether the stencils compute `g` (at unit column stride: they read the
/// padded rows as they are): square 3x3 or 5x5 kernels, unit row stride and
/// dilation.
fn applies(g: &Geometry) -> bool {
    (g.sh, g.sw, g.dh, g.dw) == (1, 1, 1, 1) && g.kh == g.kw && matches!(g.kh, 3 | 5)
}

/// Whether the stencils compute `g`'s planes: where they [`apply`](applies),
/// on planes of at least a tile ([`ROWS`] rows, a vector of 64 bytes'
/// worth of columns).
pub(super) fn fits<T: Element>(g: &Geometry) -> bool {
    applies(g) && g.out_h >= ROWS && g.out_w >= 64 / std::mem::size_of::<T>()
}

/// Where one output plane's input lies: `c_in_g` padded planes of
/// `plane_len` elements, rows `wp` long, in `source`.
#[derive(Clone, Copy)]
pub(super) struct Planes<'a, T> {
    pub source: &'a [T],
    pub plane_len: usize,
    pub wp: usize,
    pub c_in_g: usize,
}

/// The plane `out` (`[out_h, out_w]` of `g`, which [`applies`]) of one
/// output channel: `bias` plus its `weights` (`[c_in_g, k, k]`) over
/// `planes`, in the best SIMD build the CPU runs, where `g` [`fits`].
pub(super) fn plane<T: Element>(
    planes: Planes<'_, T>,
    weights: &[T],
    bias: T,
    g: &Geometry,
    out: &mut [T],
) {
    debug_assert!(fits::<T>(g), "the caller checks the geometry");
    plane_dispatch(planes, weights, bias, g, out);
}

fn plane_dispatch<T: Element>(
    planes: Planes<'_, T>,
    weights: &[T],
    bias: T,
    g: &Geometry,
    out: &mut [T],
) {
    with_runtime_simd!(
        plane_avx512, plane_avx2, plane_body::<T, true>, plane_body::<T, false>,
        planes: Planes<'_, T>, weights: &[T], bias: T, g: &Geometry, out: &mut [T],
    );
}

#[inline(always)]
fn plane_body<T: Element, const FUSED: bool>(
    planes: Planes<'_, T>,
    weights: &[T],
    bias: T,
    g: &Geometry,
    out: &mut [T],
) {
    match (g.kh, std::mem::size_of::<T>()) {
        (3, 4) => tiles::<T, 3, 16, FUSED>(planes, weights, bias, g, out),
        (3, _) => tiles::<T, 3, 8, FUSED>(planes, weights, bias, g, out),
        (_, 4) => tiles::<T, 5, 16, FUSED>(planes, weights, bias, g, out),
        _ => tiles::<T, 5, 8, FUSED>(planes, weights, bias, g, out),
    }
}

#[inline(always)]
fn tiles<T: Element, const K: usize, const VECTOR: usize, const FUSED: bool>(
    planes: Planes<'_, T>,
    weights: &[T],
    bias: T,
    g: &Geometry,
    out: &mut [T],
) {
    let (out_h, out_w) = (g.out_h, g.out_w);
    let mut oh = 0;
    while oh < out_h {
        // The last tile of a column or row is shifted back to end on the
        // plane's edge: a few sums are computed twice, each stored with
        // the same value.
        let top = oh.min(out_h - ROWS);
        let mut ow = 0;
        while ow < out_w {
            let left = ow.min(out_w - VECTOR);
            let mut acc = [[bias; VECTOR]; ROWS];
            for cl in 0..planes.c_in_g {
                let w: [[T; K]; K] =
                    std::array::from_fn(|i| std::array::from_fn(|j| weights[(cl * K + i) * K + j]));
                let origin = cl * planes.plane_len + top * planes.wp + left;
                tile::<T, K, VECTOR, FUSED>(&planes.source[origin..], planes.wp, &w, &mut acc);
            }
            for (r, sums) in acc.iter().enumerate() {
                let at = (top + r) * out_w + left;
                out[at..at + VECTOR].copy_from_slice(sums);
            }
            ow = left + VECTOR;
        }
        oh = top + ROWS;
    }
}

/// `acc[r] += Σ_ij w[i][j] · src[(r + i)·wp + j ..][..VECTOR]`, one call
/// per kernel row with its index a constant: the compiler then unrolls
/// every row, keeps the weights in registers rather than broadcasting
/// them from memory for each multiply-add, and loads each input vector
/// once for the output rows that share it (BENCHMARKS.md, "Depthwise
/// stencils").
#[inline(always)]
fn tile<T: Element, const K: usize, const VECTOR: usize, const FUSED: bool>(
    src: &[T],
    wp: usize,
    w: &[[T; K]; K],
    acc: &mut [[T; VECTOR]; ROWS],
) {
    kernel_row::<T, K, VECTOR, FUSED, 0>(src, wp, w, acc);
    kernel_row::<T, K, VECTOR, FUSED, 1>(src, wp, w, acc);
    kernel_row::<T, K, VECTOR, FUSED, 2>(src, wp, w, acc);
    if K == 5 {
        kernel_row::<T, K, VECTOR, FUSED, 3>(src, wp, w, acc);
        kernel_row::<T, K, VECTOR, FUSED, 4>(src, wp, w, acc);
    }
}

/// Kernel row `I` of [`tile`]: a window row slid down the tile one output
/// row at a time (one address in a register rather than one per output
/// row).
#[inline(always)]
fn kernel_row<
    T: Element,
    const K: usize,
    const VECTOR: usize,
    const FUSED: bool,
    const I: usize,
>(
    src: &[T],
    wp: usize,
    w: &[[T; K]; K],
    acc: &mut [[T; VECTOR]; ROWS],
) {
    let w_row = &w[I];
    let mut start = I * wp;
    for sums in acc.iter_mut() {
        let row: &[T] = &src[start..start + VECTOR + K - 1];
        for (j, &weight) in w_row.iter().enumerate() {
            let x: &[T; VECTOR] = row[j..j + VECTOR]
                .try_into()
                .expect("a row of the window holds a vector");
            for k in 0..VECTOR {
                sums[k] = if FUSED {
                    weight.mul_add(x[k], sums[k])
                } else {
                    weight * x[k] + sums[k]
                };
            }
        }
        start += wp;
    }
}
