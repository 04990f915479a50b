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
//! a row of input. On AVX-512 the tiles are intrinsics that load each input
//! row once for all the output rows that read it ([`plane_f32`],
//! [`plane_f64`]); the generic tiles serve other CPUs, with the same sums in
//! the same order.

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
/// on planes of at least a tile ([`ROWS`] rows, a vector of columns).
pub(super) fn fits<T: Element>(g: &Geometry) -> bool {
    applies(g) && g.out_h >= ROWS && g.out_w >= vector_bytes() / std::mem::size_of::<T>()
}

/// The bytes of a tile's vector on this CPU: 32 where the AVX2 tiles run,
/// else 64 (the AVX-512 tiles, and the generic tiles' arrays).
fn vector_bytes() -> usize {
    #[cfg(target_arch = "x86_64")]
    if let Some(bytes) = super::channel_vectors::kernel_for(64, 32) {
        return bytes;
    }
    64
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
    let layout = [planes.plane_len, planes.wp, planes.c_in_g];
    let shape = [g.kh, g.out_h, g.out_w];
    if !T::stencil_plane((planes.source, layout), weights, bias, shape, out) {
        plane_dispatch(planes, weights, bias, g, out);
    }
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

/// [`plane`] for `f32` by the vector tiles, its arguments raw
/// (`Element::stencil_plane`): the AVX-512 tiles (16 lanes a vector) on a
/// CPU with AVX-512 F, else the AVX2 ones (8 lanes) on a CPU with AVX2 and
/// FMA, whose 16 registers hold a tile's eight vectors of sums where the
/// generic tiles' sixteen spill (BENCHMARKS.md, "Stencils on AVX2");
/// returns whether it ran. Panics if the kernel size is not 3 or 5, the
/// plane is smaller than a tile, or a slice is shorter than the shapes
/// read or write.
pub(crate) fn plane_f32(
    planes: (&[f32], [usize; 3]),
    weights: &[f32],
    bias: f32,
    shape: [usize; 3],
    out: &mut [f32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    let kernel = super::channel_vectors::kernel_for(
        (avx512::f32_tiles::plane as RawPlane<f32>, 16),
        (avx2::f32_tiles::plane as RawPlane<f32>, 8),
    );
    #[cfg(not(target_arch = "x86_64"))]
    let kernel = None;
    plane_with(planes, weights, bias, shape, out, kernel)
}

/// [`plane_f32`] for `f64` (8 lanes a vector with AVX-512, 4 with AVX2).
pub(crate) fn plane_f64(
    planes: (&[f64], [usize; 3]),
    weights: &[f64],
    bias: f64,
    shape: [usize; 3],
    out: &mut [f64],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    let kernel = super::channel_vectors::kernel_for(
        (avx512::f64_tiles::plane as RawPlane<f64>, 8),
        (avx2::f64_tiles::plane as RawPlane<f64>, 4),
    );
    #[cfg(not(target_arch = "x86_64"))]
    let kernel = None;
    plane_with(planes, weights, bias, shape, out, kernel)
}

/// [`plane_f32`] or [`plane_f64`].
#[cfg(test)]
type RawPlaneCall<T> = fn((&[T], [usize; 3]), &[T], T, [usize; 3], &mut [T]) -> bool;

/// The raw form of a plane call: the planes' source, plane length, row
/// length and count, the weights, the bias, the kernel size, the output
/// plane's height and width, and the output.
type RawPlane<T> = unsafe fn(*const T, [usize; 3], *const T, T, usize, (usize, usize), *mut T);

/// `kernel` (a kernel the CPU runs, as `kernel_for` chooses it, and its
/// lanes a vector) on the call's slices, where there is one, after checking
/// that every read and write lies within them.
fn plane_with<T>(
    (source, layout): (&[T], [usize; 3]),
    weights: &[T],
    bias: T,
    [k, out_h, out_w]: [usize; 3],
    out: &mut [T],
    kernel: Option<(RawPlane<T>, usize)>,
) -> bool {
    let Some((kernel, lanes)) = kernel else {
        return false;
    };
    let [plane_len, wp, c_in_g] = layout;
    assert!(matches!(k, 3 | 5), "a 3x3 or 5x5 kernel");
    assert!(out_h >= ROWS && out_w >= lanes, "a plane of whole tiles");
    assert!(c_in_g >= 1 && out_w + k - 1 <= wp, "rows hold the windows");
    // The last tile of the last plane reads up to its row `out_h + k - 2`,
    // column `out_w + k - 2`.
    let last_read = (c_in_g - 1) * plane_len + (out_h + k - 2) * wp + out_w + k - 2;
    assert!(last_read < source.len(), "planes for every window");
    assert!(weights.len() >= c_in_g * k * k, "weights for every tap");
    assert!(out.len() >= out_h * out_w, "an output plane");
    // SAFETY: the CPU runs `kernel` (the caller's `kernel_for` chose it
    // by the CPU's features, with its `lanes`). Every tile reads rows
    // `top..top + ROWS + k - 1` of each plane from column `left` for
    // `lanes + k - 1` elements, with `top <= out_h - ROWS` and `left <=
    // out_w - lanes`, all at or before `last_read`; it reads `c_in_g·k·k`
    // weights and writes `ROWS` rows of `lanes` within the `out_h x
    // out_w` output.
    unsafe {
        kernel(
            source.as_ptr(),
            layout,
            weights.as_ptr(),
            bias,
            k,
            (out_h, out_w),
            out.as_mut_ptr(),
        )
    };
    true
}

/// The input rows `$q` of a tile (those below `ROWS + K - 1`), each
/// row's `K` shifted vectors loaded once and multiplied into output
/// row `q - i` for each kernel row `i` that reaches it within the
/// tile; with the row indices literals, the sums stay in registers.
macro_rules! input_rows {
    (($load:ident, $fmadd:ident, $vec:ty, $k:ident), ($origin:ident, $wp:ident, $w:ident,
     $acc:ident), $($q:literal)*) => {$({
        if $q < ROWS + $k - 1 {
            // SAFETY: row `$q` of the tile's rows (`plane_with`).
            let row = unsafe { $origin.add($q * $wp) };
            let x: [$vec; $k] = std::array::from_fn(|j| unsafe { $load(row.add(j)) });
            for i in 0..$k {
                if $q >= i && $q - i < ROWS {
                    let sum = &mut $acc[$q - i];
                    for j in 0..$k {
                        *sum = $fmadd($w[i][j], x[j], *sum);
                    }
                }
            }
        }
    })*};
}

/// The vector tiles of one dtype and instruction set (`$feature`: AVX-512
/// F, or AVX2 and FMA), in module `$module`: see [`plane_f32`]. Each tile
/// loads every input row's `K` shifted
/// vectors once, as unaligned loads: LLVM turns the same loads written
/// as element copies into pairs of loads and permutes, which share the
/// multiply-adds' port.
macro_rules! stencil_tiles {
    ($module:ident, $feature:literal, $t:ty, $lanes:expr, $vec:ty, $set1:ident, $load:ident,
     $store:ident, $fmadd:ident) => {
        pub(super) mod $module {
            use super::ROWS;
            use std::arch::x86_64::*;

            const LANES: usize = $lanes;

            /// Every tile of the plane; see [`super::super::plane_with`]
            /// for what the pointers must hold.
            ///
            /// # Safety
            /// The CPU has the features of `$feature`; the planes,
            /// weights and output are as `plane_with` checks them.
            pub(in super::super) unsafe fn plane(
                source: *const $t,
                layout: [usize; 3],
                weights: *const $t,
                bias: $t,
                k: usize,
                shape: (usize, usize),
                out: *mut $t,
            ) {
                // SAFETY: as the caller promises.
                unsafe {
                    if k == 3 {
                        tiles::<3>(source, layout, weights, bias, shape, out)
                    } else {
                        tiles::<5>(source, layout, weights, bias, shape, out)
                    }
                }
            }

            #[target_feature(enable = $feature)]
            unsafe fn tiles<const K: usize>(
                source: *const $t,
                [plane_len, wp, c_in_g]: [usize; 3],
                weights: *const $t,
                bias: $t,
                (out_h, out_w): (usize, usize),
                out: *mut $t,
            ) {
                let mut oh = 0;
                while oh < out_h {
                    // The last tile of a column or row is shifted back
                    // to end on the plane's edge, as in `tiles`.
                    let top = oh.min(out_h - ROWS);
                    let mut ow = 0;
                    while ow < out_w {
                        let left = ow.min(out_w - LANES);
                        let mut acc = [$set1(bias); ROWS];
                        for cl in 0..c_in_g {
                            // SAFETY: the weights of plane `cl`, and
                            // its tile's rows (`plane_with`).
                            let w: [[$vec; K]; K] = std::array::from_fn(|i| {
                                std::array::from_fn(|j| {
                                    $set1(unsafe { *weights.add((cl * K + i) * K + j) })
                                })
                            });
                            let origin = unsafe { source.add(cl * plane_len + top * wp + left) };
                            input_rows!(
                                ($load, $fmadd, $vec, K),
                                (origin, wp, w, acc),
                                0 1 2 3 4 5 6 7 8 9 10 11
                            );
                        }
                        for (r, &sum) in acc.iter().enumerate() {
                            // SAFETY: row `top + r` of the output, from
                            // column `left` (`plane_with`).
                            unsafe { $store(out.add((top + r) * out_w + left), sum) };
                        }
                        ow = left + LANES;
                    }
                    oh = top + ROWS;
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::ROWS;

    stencil_tiles!(
        f32_tiles,
        "avx512f",
        f32,
        16,
        __m512,
        _mm512_set1_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_fmadd_ps
    );
    stencil_tiles!(
        f64_tiles,
        "avx512f",
        f64,
        8,
        __m512d,
        _mm512_set1_pd,
        _mm512_loadu_pd,
        _mm512_storeu_pd,
        _mm512_fmadd_pd
    );
}

/// The tiles in AVX2 registers: 8 `f32` or 4 `f64` a vector, a tile's
/// eight vectors of sums in registers and its weights broadcast from
/// memory into each multiply-add.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::ROWS;

    stencil_tiles!(
        f32_tiles,
        "avx2,fma",
        f32,
        8,
        __m256,
        _mm256_set1_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_fmadd_ps
    );
    stencil_tiles!(
        f64_tiles,
        "avx2,fma",
        f64,
        4,
        __m256d,
        _mm256_set1_pd,
        _mm256_loadu_pd,
        _mm256_storeu_pd,
        _mm256_fmadd_pd
    );
}

#[cfg(test)]
mod tests {
    use super::{Planes, ROWS, plane_dispatch, plane_f32, plane_f64};
    use crate::element::Element;
    use crate::spec::{Geometry, Padding};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    /// A stencil geometry with `c_in_g` input channels a plane: its output
    /// plane only matters to the tiles.
    fn geometry(k: usize, c_in_g: usize, (out_h, out_w): (usize, usize)) -> Geometry {
        Geometry {
            batch: 1,
            in_channels: c_in_g,
            in_h: out_h + k - 1,
            in_w: out_w + k - 1,
            out_channels: 1,
            kh: k,
            kw: k,
            sh: 1,
            sw: 1,
            dh: 1,
            dw: 1,
            padding: Padding::default(),
            groups: 1,
            out_h,
            out_w,
        }
    }

    /// The vector kernel `raw` against the generic tiles on random planes
    /// (kernel sizes, input channels, rows longer than the windows need,
    /// outputs from one tile to ragged multiples of it): the same sums in
    /// the same order, so the same bits.
    fn check<T: Element>(raw: super::RawPlaneCall<T>, lanes: usize, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        for _ in 0..200 {
            let k = if rng.random_bool(0.5) { 3 } else { 5 };
            let c_in_g = rng.random_range(1..=4);
            // At least a vector of the generic tiles too (64 bytes).
            let narrowest = lanes.max(64 / std::mem::size_of::<T>());
            let out = (
                rng.random_range(ROWS..=3 * ROWS + 3),
                rng.random_range(narrowest..=narrowest + 2 * lanes + 5),
            );
            let g = geometry(k, c_in_g, out);
            let wp = out.1 + k - 1 + rng.random_range(0..=3);
            let plane_len = (out.0 + k - 1) * wp + rng.random_range(0..=5);
            let len = c_in_g * plane_len;
            let value = |rng: &mut StdRng| T::from_f64(rng.random_range(-1.0..1.0));
            let source: Vec<T> = (0..len).map(|_| value(&mut rng)).collect();
            let weights: Vec<T> = (0..c_in_g * k * k).map(|_| value(&mut rng)).collect();
            let bias = value(&mut rng);
            let planes = Planes {
                source: &source,
                plane_len,
                wp,
                c_in_g,
            };
            let mut expected = vec![T::zero(); out.0 * out.1];
            plane_dispatch(planes, &weights, bias, &g, &mut expected);
            let mut got = vec![T::from_f64(99.0); out.0 * out.1];
            let layout = [plane_len, wp, c_in_g];
            let shape = [k, out.0, out.1];
            if !raw((&source, layout), &weights, bias, shape, &mut got) {
                return;
            }
            assert_eq!(
                got, expected,
                "k {k}, {c_in_g} planes, out {out:?}, rows of {wp}"
            );
        }
    }

    #[test]
    fn vector_tiles_match_the_generic_tiles() {
        check::<f32>(plane_f32, 16, 1);
        check::<f64>(plane_f64, 8, 2);
    }

    /// The AVX2 tiles on any CPU with AVX2 and FMA, AVX-512 ones included
    /// (where `plane_f32` and `plane_f64` take the AVX-512 tiles).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_tiles_match_the_generic_tiles() {
        if !super::super::channel_vectors::avx2_fma() {
            return;
        }
        check::<f32>(
            |planes, weights, bias, shape, out| {
                let kernel = (super::avx2::f32_tiles::plane as super::RawPlane<f32>, 8);
                super::plane_with(planes, weights, bias, shape, out, Some(kernel))
            },
            8,
            3,
        );
        check::<f64>(
            |planes, weights, bias, shape, out| {
                let kernel = (super::avx2::f64_tiles::plane as super::RawPlane<f64>, 4);
                super::plane_with(planes, weights, bias, shape, out, Some(kernel))
            },
            4,
            4,
        );
    }
}
