//! The kernel's Winograd transform, `U_ξ[c, o] = (G w[o, c] Gᵀ)_ξ` laid out
//! `[point, c_in, c_out]`, and its adjoint, which maps the weight gradient
//! back from that domain: `dw[o, c] = Gᵀ dU[·, c, o] G`.
//!
//! Both go a chunk of the kernel at a time: the taps of a block of output
//! channels and a few input channels are copied between the kernel and a
//! stack array, transposed so that each tap is a run of output channels,
//! and each input channel's runs are mapped through the SIMD tile
//! transform, so that the transform domain is read and written in runs of
//! output channels too.
//!
//! Both run on the threads of the call's lanes, each claiming the next
//! block of channels until none is left: the transform blocks of input
//! channels, each point's rows for which a claim moves out of what is
//! left (an input channel's points are mapped into a stack array and
//! copied into those rows); the adjoint blocks of output channels of the
//! kernel gradient.

use super::maps::{F2, F4, MinimalFilter};
use super::{CellGrid, Filter, domain_len, point_stride, transform_tile};
use crate::algo::strided::simd::with_runtime_simd;
use crate::element::Element;
use crate::layout::transpose::transpose;
use crate::workspace::scratch;
use ndarray::iter::AxisChunksIterMut;
use ndarray::{ArrayView4, ArrayViewMut4, Axis, Ix4};
use std::iter::Enumerate;
use std::ops::Range;
use std::sync::{Mutex, PoisonError};

/// The transformed kernel, `[point, c_in, c_out]`, each point's matrix
/// [`point_stride`] elements after the last, on up to `workers` threads
/// of the pool (see [`claim_in_turn`]).
pub(super) fn transform_weights<'b, T: Element>(
    w: ArrayView4<'_, T>,
    buf: &'b mut Vec<T>,
    filter: Filter,
    workers: usize,
) -> &'b [T] {
    let (c_out, c_in, _, _) = w.dim();
    let (points, stride) = (filter.points(), point_stride::<T>(c_in, c_out));
    let u = scratch(buf, domain_len::<T>(points, (c_in, c_out)));
    let mut matrices = u.chunks_exact_mut(stride.max(1));
    let rows = std::array::from_fn(|xi| match matrices.next() {
        Some(matrix) if xi < points => &mut matrix[..c_in * c_out],
        _ => &mut [],
    });
    let unclaimed = Mutex::new(UnclaimedInputs {
        next: 0,
        c_in,
        c_out,
        rows,
    });
    let claims = c_in.div_ceil(CHANNEL_BLOCK);
    claim_in_turn(workers.min(claims), &|| {
        weights_into(&w, &unclaimed, filter)
    });
    u
}

/// Runs `work` on up to `workers` threads of the pool at once (the
/// caller's among them), each claiming parts of a transform until none is
/// left: a thread that wakes late claims what is left, not a fixed share.
/// The transforms run once a call, before (or after) the lanes; on one
/// thread they are serial time, a tenth or more of a small pass on two
/// (BENCHMARKS.md, "Winograd weight transform").
fn claim_in_turn(workers: usize, work: &(dyn Fn() + Sync)) {
    if workers <= 1 {
        return work();
    }
    let half = workers / 2;
    crate::handoff::join(
        || claim_in_turn(workers - half, work),
        || claim_in_turn(half, work),
    );
}

/// Locks `parts`, whose holder cannot leave it half-changed: a claim only
/// moves slices out.
fn lock<P>(parts: &Mutex<P>) -> std::sync::MutexGuard<'_, P> {
    parts.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The most points a transform domain has: F(4x4, 3x3)'s 6x6.
const MAX_POINTS: usize = 36;

/// The input channels of the transform domain no worker has claimed yet,
/// from `next` on, and each point's rows for them (`[c, c_out]`).
struct UnclaimedInputs<'u, T> {
    next: usize,
    c_in: usize,
    c_out: usize,
    rows: [&'u mut [T]; MAX_POINTS],
}

impl<'u, T> UnclaimedInputs<'u, T> {
    /// The next [`CHANNEL_BLOCK`] input channels and each point's rows for
    /// them, or `None` when all are claimed.
    fn claim(&mut self) -> Option<(Range<usize>, [&'u mut [T]; MAX_POINTS])> {
        if self.next >= self.c_in {
            return None;
        }
        let ins = self.next..(self.next + CHANNEL_BLOCK).min(self.c_in);
        self.next = ins.end;
        let len = ins.len() * self.c_out;
        let claimed = std::array::from_fn(|xi| {
            let rest = std::mem::take(&mut self.rows[xi]);
            let (claimed, rest) = rest.split_at_mut(len.min(rest.len()));
            self.rows[xi] = rest;
            claimed
        });
        Some((ins, claimed))
    }
}

/// One worker of [`transform_weights`], in the SIMD build the CPU runs.
fn weights_into<T: Element>(
    w: &ArrayView4<'_, T>,
    unclaimed: &Mutex<UnclaimedInputs<'_, T>>,
    filter: Filter,
) {
    with_runtime_simd!(
        weights_into_avx512, weights_into_avx2,
        weights_into_body::<T>, weights_into_body::<T>,
        w: &ArrayView4<'_, T>, unclaimed: &Mutex<UnclaimedInputs<'_, T>>, filter: Filter,
    );
}

/// [`weights_into`] as the SIMD builds compile it.
#[inline(always)]
fn weights_into_body<T: Element>(
    w: &ArrayView4<'_, T>,
    unclaimed: &Mutex<UnclaimedInputs<'_, T>>,
    filter: Filter,
) {
    match filter {
        Filter::F2x2 => weights_by::<T, F2, 2, 4>(w, unclaimed),
        Filter::F4x4 => weights_by::<T, F4, 4, 6>(w, unclaimed),
    }
}

/// [`weights_into_body`] by the algorithm `F`: each claimed block of
/// input channels a block of output channels at a time, each input
/// channel's points mapped into a stack array and copied into their rows.
#[inline(always)]
fn weights_by<T: Element, F: MinimalFilter<M, N>, const M: usize, const N: usize>(
    w: &ArrayView4<'_, T>,
    unclaimed: &Mutex<UnclaimedInputs<'_, T>>,
) {
    let c_out = w.dim().0;
    let memory = tap_memory(w);
    let mut block = [T::zero(); CHUNK_TAPS];
    let mut mapped = [T::zero(); MAX_POINTS * KERNEL_BLOCK];
    let mapped_grid = CellGrid {
        base: 0,
        row_step: N * KERNEL_BLOCK,
        col_step: KERNEL_BLOCK,
    };
    loop {
        let Some((ins, mut rows)) = lock(unclaimed).claim() else {
            return;
        };
        for o0 in (0..c_out).step_by(KERNEL_BLOCK) {
            let outs = o0..(o0 + KERNEL_BLOCK).min(c_out);
            let chunk = KernelChunk {
                outs: outs.clone(),
                ins: ins.clone(),
            };
            gather_taps(w, memory, &chunk, &mut block);
            for local in 0..ins.len() {
                transform_tile::<_, false, _, _, _, _>(
                    (&block, block_grid(local)),
                    (&mut mapped, mapped_grid),
                    outs.len(),
                    (&F::g, &F::g),
                );
                for (xi, row) in rows.iter_mut().take(N * N).enumerate() {
                    row[local * c_out + o0..][..outs.len()]
                        .copy_from_slice(&mapped[xi * KERNEL_BLOCK..][..outs.len()]);
                }
            }
        }
    }
}

/// The weight gradient from its transform, `du` laid out `[point, c_in,
/// c_out]` (dense), on up to `workers` threads of the pool (see
/// [`claim_in_turn`]), each claiming a block of output channels at a
/// time.
pub(super) fn weight_gradient_from_transform<T: Element>(
    du: &[T],
    mut dw: ArrayViewMut4<'_, T>,
    filter: Filter,
    workers: usize,
) {
    let (c_out, c_in, _, _) = dw.dim();
    let blocks = Mutex::new(dw.axis_chunks_iter_mut(Axis(0), KERNEL_BLOCK).enumerate());
    let claims = c_out.div_ceil(KERNEL_BLOCK);
    claim_in_turn(workers.min(claims), &|| {
        weight_gradient_blocks(du, &blocks, (c_in, c_out), filter);
    });
}

/// The blocks of output channels of a kernel gradient, claimed in turn.
type GradientBlocks<'a, T> = Enumerate<AxisChunksIterMut<'a, T, Ix4>>;

/// One worker of [`weight_gradient_from_transform`], in the SIMD build the
/// CPU runs.
fn weight_gradient_blocks<T: Element>(
    du: &[T],
    blocks: &Mutex<GradientBlocks<'_, T>>,
    channels: (usize, usize),
    filter: Filter,
) {
    with_runtime_simd!(
        weight_gradient_avx512, weight_gradient_avx2,
        weight_gradient_body::<T>, weight_gradient_body::<T>,
        du: &[T], blocks: &Mutex<GradientBlocks<'_, T>>, channels: (usize, usize), filter: Filter,
    );
}

/// [`weight_gradient_blocks`] as the SIMD builds compile it.
#[inline(always)]
fn weight_gradient_body<T: Element>(
    du: &[T],
    blocks: &Mutex<GradientBlocks<'_, T>>,
    channels: (usize, usize),
    filter: Filter,
) {
    match filter {
        Filter::F2x2 => weight_gradient_by::<T, F2, 2, 4>(du, blocks, channels),
        Filter::F4x4 => weight_gradient_by::<T, F4, 4, 6>(du, blocks, channels),
    }
}

/// [`weight_gradient_body`] by the algorithm `F`.
#[inline(always)]
fn weight_gradient_by<T: Element, F: MinimalFilter<M, N>, const M: usize, const N: usize>(
    du: &[T],
    blocks: &Mutex<GradientBlocks<'_, T>>,
    (c_in, c_out): (usize, usize),
) {
    let mut block = [T::zero(); CHUNK_TAPS];
    loop {
        let Some((index, mut dw)) = lock(blocks).next() else {
            return;
        };
        let o0 = index * KERNEL_BLOCK;
        let outs = dw.dim().0;
        for c0 in (0..c_in).step_by(CHANNEL_BLOCK) {
            let ins = c0..(c0 + CHANNEL_BLOCK).min(c_in);
            for (local, c) in ins.clone().enumerate() {
                transform_tile::<_, false, _, _, _, _>(
                    (du, domain_grid(c, o0, (c_out, c_in * c_out), N)),
                    (&mut block, block_grid(local)),
                    outs,
                    (&F::gt, &F::gt),
                );
            }
            let chunk = KernelChunk { outs: 0..outs, ins };
            scatter_taps(&block, &chunk, &mut dw);
        }
    }
}

/// Output channels a chunk of the kernel holds: a block's taps are mapped
/// a vector of output channels at a time, and the transform domain is read
/// or written in runs of this many; one kernel at a time, a kernel's points
/// are a multiple of 4 KiB apart there and evict each other from L1 and L2
/// (BENCHMARKS.md, "Winograd weight transform").
const KERNEL_BLOCK: usize = 64;

/// Input channels a chunk of the kernel holds: `9·8 = 72` taps of each
/// output channel, whole 8x8 and 4x4 tiles of the transposes that copy
/// them, read as a run of 288 bytes of each output channel's kernels in
/// `f32` (BENCHMARKS.md, "Winograd weight transform").
const CHANNEL_BLOCK: usize = 8;

/// A chunk's taps: `block[(local·9 + i·3 + j)·KERNEL_BLOCK + l]` holds tap
/// `(i, j)` of the chunk's input channel `local` and output channel `l`.
const CHUNK_TAPS: usize = 9 * CHANNEL_BLOCK * KERNEL_BLOCK;

/// Where the chunk's input channel `local` has its taps, as a tile of 3x3
/// cells of output channels.
fn block_grid(local: usize) -> CellGrid {
    CellGrid {
        base: local * 9 * KERNEL_BLOCK,
        row_step: 3 * KERNEL_BLOCK,
        col_step: KERNEL_BLOCK,
    }
}

/// Where input channel `c`'s points for the output channels from `o0` sit
/// in a transform domain of `c_out` output channels with `n x n` points,
/// `stride` apart.
fn domain_grid(c: usize, o0: usize, (c_out, stride): (usize, usize), n: usize) -> CellGrid {
    CellGrid {
        base: c * c_out + o0,
        row_step: n * stride,
        col_step: stride,
    }
}

/// A chunk of the kernel: the kernels of output channels `outs` and input
/// channels `ins`.
struct KernelChunk {
    outs: Range<usize>,
    ins: Range<usize>,
}

/// How a kernel's taps lie in its memory when each kernel's 9 taps are one
/// run: `w[o, c, i, j]` at `o·o_step + c·c_step + 3i + j`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TapRuns {
    o_step: usize,
    c_step: usize,
}

/// One transpose of a chunk's taps: the `[outs, 9·channels]` matrix of
/// the chunk's input channels from `local` on, which starts at `at` in the
/// kernel's memory, rows `row_step` apart.
struct TapMatrix {
    local: usize,
    channels: usize,
    at: usize,
    row_step: usize,
}

impl TapRuns {
    /// The runs of a kernel with strides `strides`, if its taps are runs.
    fn of(strides: &[isize]) -> Option<Self> {
        match *strides {
            [o, c, 3, 1] if o >= 0 && c >= 0 => Some(TapRuns {
                o_step: o.unsigned_abs(),
                c_step: c.unsigned_abs(),
            }),
            _ => None,
        }
    }

    /// The matrices a chunk's taps are copied in: one for the whole chunk
    /// where an output channel's kernels follow each other, else one an
    /// input channel; `None` where the rows would overlap (a kernel view
    /// whose strides repeat elements).
    fn matrices(self, chunk: &KernelChunk) -> Option<impl Iterator<Item = TapMatrix> + use<>> {
        let (o0, c0, outs) = (chunk.outs.start, chunk.ins.start, chunk.outs.len());
        let together = chunk.ins.len() == 1 || self.c_step == 9;
        let channels = if together { chunk.ins.len() } else { 1 };
        if outs > 1 && self.o_step < 9 * channels {
            return None;
        }
        let row_step = if outs > 1 { self.o_step } else { 9 * channels };
        let TapRuns { o_step, c_step } = self;
        Some(
            (0..chunk.ins.len())
                .step_by(channels)
                .map(move |local| TapMatrix {
                    local,
                    channels,
                    at: o0 * o_step + (c0 + local) * c_step,
                    row_step,
                }),
        )
    }
}

/// The kernel `w`'s memory and how its taps lie in it, where they are
/// runs: found once a worker, for all the chunks it copies.
fn tap_memory<'w, T>(w: &'w ArrayView4<'_, T>) -> Option<(&'w [T], TapRuns)> {
    w.as_slice_memory_order().zip(TapRuns::of(w.strides()))
}

/// Copies a chunk's taps from the kernel `w` into `block`, laid out as
/// [`CHUNK_TAPS`] says: by transposes where the taps are runs (`memory`,
/// from [`tap_memory`]), element by element otherwise.
fn gather_taps<T: Element>(
    w: &ArrayView4<'_, T>,
    memory: Option<(&[T], TapRuns)>,
    chunk: &KernelChunk,
    block: &mut [T],
) {
    let outs = chunk.outs.len();
    if let Some((memory, Some(matrices))) = memory.map(|(m, runs)| (m, runs.matrices(chunk))) {
        for m in matrices {
            transpose(
                &memory[m.at..],
                m.row_step,
                &mut block[m.local * 9 * KERNEL_BLOCK..],
                KERNEL_BLOCK,
                (outs, 9 * m.channels),
            );
        }
        return;
    }
    for (l, o) in chunk.outs.clone().enumerate() {
        for (local, c) in chunk.ins.clone().enumerate() {
            for k in 0..9 {
                block[(local * 9 + k) * KERNEL_BLOCK + l] = w[[o, c, k / 3, k % 3]];
            }
        }
    }
}

/// Copies a chunk's taps from `block` into the kernel gradient `dw`, the
/// way back of [`gather_taps`].
fn scatter_taps<T: Element>(block: &[T], chunk: &KernelChunk, dw: &mut ArrayViewMut4<'_, T>) {
    let outs = chunk.outs.len();
    let runs = TapRuns::of(dw.strides());
    if let Some(matrices) = runs.and_then(|runs| runs.matrices(chunk))
        && let Some(memory) = dw.as_slice_memory_order_mut()
    {
        for m in matrices {
            transpose(
                &block[m.local * 9 * KERNEL_BLOCK..],
                KERNEL_BLOCK,
                &mut memory[m.at..],
                m.row_step,
                (9 * m.channels, outs),
            );
        }
        return;
    }
    for (l, o) in chunk.outs.clone().enumerate() {
        for (local, c) in chunk.ins.clone().enumerate() {
            for k in 0..9 {
                dw[[o, c, k / 3, k % 3]] = block[(local * 9 + k) * KERNEL_BLOCK + l];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array4, s};

    /// Values in [-1, 1) from a seed, without a generator.
    fn values(len: usize, seed: u64) -> Vec<f64> {
        (0..len as u64)
            .map(|k| {
                let z = (k + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
                (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
            })
            .collect()
    }

    /// The kernel maps one kernel at a time, as their definitions say.
    fn kernel_maps_one_by_one<F: MinimalFilter<M, N>, const M: usize, const N: usize>(
        w: &Array4<f64>,
        du: &[f64],
    ) -> (Vec<f64>, Array4<f64>) {
        let (c_out, c_in, _, _) = w.dim();
        let mut u = vec![0.0; N * N * c_in * c_out];
        let mut dw = Array4::zeros(w.dim());
        let at = |uu: usize, v: usize, c: usize, o: usize| ((uu * N + v) * c_in + c) * c_out + o;
        for (o, c) in (0..c_out).flat_map(|o| (0..c_in).map(move |c| (o, c))) {
            let rows: [[f64; N]; 3] =
                std::array::from_fn(|i| F::g(std::array::from_fn(|j| w[[o, c, i, j]])));
            let back: [[f64; 3]; N] =
                std::array::from_fn(|uu| F::gt(std::array::from_fn(|v| du[at(uu, v, c, o)])));
            for v in 0..N {
                let column = F::g([rows[0][v], rows[1][v], rows[2][v]]);
                for (uu, value) in column.into_iter().enumerate() {
                    u[at(uu, v, c, o)] = value;
                }
            }
            for j in 0..3 {
                let column = F::gt(std::array::from_fn(|uu| back[uu][j]));
                for (i, value) in column.into_iter().enumerate() {
                    dw[[o, c, i, j]] = value;
                }
            }
        }
        (u, dw)
    }

    /// Where a test puts its kernel: each lays the kernel out in memory in
    /// another order, so that the taps are copied by one transpose a chunk,
    /// by one an input channel, or element by element.
    #[derive(Clone, Copy, Debug)]
    enum Placement {
        /// A standard-layout array: an output channel's kernels follow each
        /// other.
        Standard,
        /// The axes-swapped view of a `[c_in, c_out, 3, 3]` array (as the
        /// backward pass reads its kernel).
        ChannelsSwapped,
        /// The odd output channels of twice as many: not contiguous.
        EveryOther,
    }

    /// `w`'s shape in memory as `placement` lays it out, NaN between the
    /// kernel's elements; `at` views the kernel in it.
    fn placed(placement: Placement, (c_out, c_in): (usize, usize)) -> Array4<f64> {
        match placement {
            Placement::Standard => Array4::from_elem((c_out, c_in, 3, 3), f64::NAN),
            Placement::ChannelsSwapped => Array4::from_elem((c_in, c_out, 3, 3), f64::NAN),
            Placement::EveryOther => Array4::from_elem((2 * c_out, c_in, 3, 3), f64::NAN),
        }
    }

    /// The kernel's view in the memory [`placed`] made.
    fn view_of(placement: Placement, memory: &mut Array4<f64>) -> ArrayViewMut4<'_, f64> {
        match placement {
            Placement::Standard => memory.view_mut(),
            Placement::ChannelsSwapped => memory.view_mut().permuted_axes([1, 0, 2, 3]),
            Placement::EveryOther => memory.slice_mut(s![1..;2, .., .., ..]),
        }
    }

    /// The kernel maps by chunks agree with the maps one kernel at a time,
    /// on channel counts around the chunks and the vectors, for kernels
    /// laid out in three ways, on one worker, two and three (on a pool of
    /// two threads); the weight gradient writes no element outside its
    /// view.
    #[test]
    fn kernel_maps_by_chunks_agree_with_one_by_one() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(kernel_maps_agree);
    }

    /// [`kernel_maps_by_chunks_agree_with_one_by_one`] on the current pool.
    fn kernel_maps_agree() {
        let shapes = [(1, 1), (17, 3), (64, 8), (65, 9), (130, 2), (9, 17)];
        for filter in [Filter::F2x2, Filter::F4x4] {
            for placement in [
                Placement::Standard,
                Placement::ChannelsSwapped,
                Placement::EveryOther,
            ] {
                for ((c_out, c_in), workers) in
                    shapes.into_iter().flat_map(|c| [(c, 1), (c, 2), (c, 3)])
                {
                    let dims = (c_out, c_in, 3, 3);
                    let w = Array4::from_shape_vec(dims, values(c_out * c_in * 9, 7)).unwrap();
                    let du = values(filter.points() * c_in * c_out, 11);
                    let (want_u, want_dw) = match filter {
                        Filter::F2x2 => kernel_maps_one_by_one::<F2, 2, 4>(&w, &du),
                        Filter::F4x4 => kernel_maps_one_by_one::<F4, 4, 6>(&w, &du),
                    };
                    let case =
                        format!("{filter:?}, {placement:?}, {c_out} x {c_in}, {workers} workers");
                    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * (1.0 + b.abs());

                    let mut memory = placed(placement, (c_out, c_in));
                    view_of(placement, &mut memory).assign(&w);
                    let mut buf = Vec::new();
                    let kernel = view_of(placement, &mut memory);
                    let u = transform_weights(kernel.view(), &mut buf, filter, workers);
                    let (len, stride) = (c_in * c_out, point_stride::<f64>(c_in, c_out));
                    assert_eq!(u.len(), filter.points() * stride, "{case}");
                    for (xi, want_xi) in want_u.chunks_exact(len).enumerate() {
                        let got_xi = &u[xi * stride..][..len];
                        for (k, (&got, &want)) in got_xi.iter().zip(want_xi).enumerate() {
                            let at = xi * len + k;
                            assert!(close(got, want), "{case}: u[{at}] {got} against {want}");
                        }
                    }

                    let mut memory = placed(placement, (c_out, c_in));
                    weight_gradient_from_transform(
                        &du,
                        view_of(placement, &mut memory),
                        filter,
                        workers,
                    );
                    let dw = view_of(placement, &mut memory);
                    for (k, (&got, &want)) in dw.iter().zip(&want_dw).enumerate() {
                        assert!(close(got, want), "{case}: dw[{k}] {got} against {want}");
                    }
                    let written = memory.iter().filter(|v| !v.is_nan()).count();
                    assert_eq!(written, c_out * c_in * 9, "{case}: elements written");
                }
            }
        }
    }

    /// The taps of a standard-layout kernel are copied one transpose a
    /// chunk, those of a channels-swapped one one an input channel, and a
    /// view whose rows would overlap is not copied by transposes.
    #[test]
    fn tap_matrices_follow_the_layout() {
        let chunk = KernelChunk {
            outs: 64..128,
            ins: 8..16,
        };
        let standard = TapRuns::of(&[9 * 20, 9, 3, 1]).unwrap();
        let matrices: Vec<_> = standard.matrices(&chunk).unwrap().collect();
        assert_eq!(matrices.len(), 1);
        assert_eq!(
            (matrices[0].at, matrices[0].row_step, matrices[0].channels),
            (64 * 180 + 8 * 9, 180, 8)
        );
        let swapped = TapRuns::of(&[9, 9 * 200, 3, 1]).unwrap();
        let matrices: Vec<_> = swapped.matrices(&chunk).unwrap().collect();
        let starts: Vec<_> = matrices.iter().map(|m| (m.local, m.at)).collect();
        let want: Vec<_> = (0..8).map(|l| (l, 64 * 9 + (8 + l) * 1800)).collect();
        assert_eq!(starts, want);
        let overlapping = TapRuns::of(&[3, 1800, 3, 1]).unwrap();
        assert!(overlapping.matrices(&chunk).is_none());
        assert_eq!(TapRuns::of(&[9, 1800, 1, 3]), None);
    }
}
