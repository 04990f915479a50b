//! The scheduler every fast kernel runs under: it cuts a call into parts,
//! runs them on parallel lanes, each lane with its own memory, each part
//! of a backward pass with its own partial sums of the weight and bias
//! gradients, and adds the partials up once, in part order.
//!
//! A pass divides `batch` samples of `height` rows each (output rows for the
//! forward pass and the gradient passes, input rows for an input gradient
//! computed by lowering the error, output channels for a forward pass cut
//! into blocks of channels (the column matrix on small images, depthwise
//! layers across channels), whose kernel swaps its output's channel and
//! row axes before handing it over). The planner reads them as one run of
//! `batch · ⌈height / granule⌉` units, sample after sample, and deals each
//! part a contiguous, equal share (within one unit) of that run. A share
//! starts and ends anywhere, so a part's work items are at most three: the
//! tail of one sample (a band of its rows), whole samples, and the head of
//! another sample. Whatever the batch, every thread gets work, batch 1
//! included; kernels receive items and never split the batch themselves.
//!
//! A forward pass has one part per lane. A backward pass has as many parts
//! as its size allows, never as many as the threads ask for: which numbers
//! are added to which, and in what order, is then the same on any thread
//! count, and so are the results, bit for bit. Lanes run runs of whole
//! parts.
//!
//! A kernel writes the part of the pass's output (`y`, or `dx`) that its
//! item owns. A backward item that is a band of a sample's rows adds to
//! the whole sample's input gradient, which other bands add to as well: it
//! writes its contribution into its part's memory, and the scheduler adds
//! the contributions of a sample's bands into `dx` once, in part order,
//! like the weight-gradient partials, each over the input rows its band's
//! windows reach (its contribution is zero elsewhere). A kernel that
//! computes a band's contribution on those rows alone (Winograd's) gets a
//! buffer of those rows, not of the whole sample, and its pass may then be
//! cut into more bands.
//!
//! There is one level of parallelism: when a pass has fewer units (or less
//! arithmetic than a lane is woken for) than the pool has threads, the spare
//! threads go to each item's GEMMs ([`WorkItem::gemm_threads`]) instead of
//! lanes, so the two are never nested.

use crate::element::Element;
use crate::nonfinite::{all_finite, all_finite_on_pool};
use crate::output::worth_parallel_fill;
use crate::spec::Geometry;
use crate::subnormals::FlushGuard;
use crate::workspace::{Checks, LaneMemory, Memory, PartMemory, Scratch, scratch};
use ndarray::{
    ArrayView1, ArrayView2, ArrayView3, ArrayViewMut2, ArrayViewMut3, ArrayViewMut4, Axis, Zip, s,
};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

/// One piece of a lane's share of a pass: whole samples, or a band of one
/// sample's rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WorkItem {
    /// The samples of the batch this item computes, in order.
    pub samples: Range<usize>,
    /// The rows of each sample it computes: all of them unless the item is
    /// one sample's band. Band edges fall on multiples of the pass's granule.
    pub rows: Range<usize>,
    /// Threads each of the item's GEMMs may use.
    pub gemm_threads: usize,
}

impl WorkItem {
    /// Whether the item is a band of one sample of `height` rows rather
    /// than whole samples.
    pub(crate) fn is_band_of(&self, height: usize) -> bool {
        self.rows != (0..height)
    }
}

/// What a pass divides among lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Work {
    /// Samples.
    pub batch: usize,
    /// Rows of each sample.
    pub height: usize,
    /// Bands start at multiples of this many rows (a kernel that computes
    /// rows in blocks, such as Winograd's, asks for its block).
    pub granule: usize,
    /// Floating-point operations of one row of one sample, to keep lanes
    /// from being woken for less work than waking them costs.
    pub row_flops: usize,
    /// Elements of the weight and bias gradients a backward pass sums over
    /// its parts (zero for a pass that sums nothing).
    pub reduced: usize,
    /// Elements of one sample's input gradient, which a backward part
    /// holding a band of that sample keeps apart (zero for a pass that
    /// writes its output directly).
    pub banded: usize,
    /// Which rows of a sample's input gradient a band of rows reaches (a
    /// band's contribution is zero elsewhere); `None` for every row.
    pub reach: Option<Reach>,
    /// Whether a band's output holds only the input rows the band
    /// reaches ([`Schedule::gradient_rows`]) rather than the whole
    /// sample's: a part then keeps and adds up those rows alone.
    pub reached_rows_only: bool,
    /// How many times fewer FLOPs a second the pass does than a forward
    /// pass bound by arithmetic: handing a lane to another thread costs
    /// the time of that many times fewer of its FLOPs. Zero for the passes
    /// of a backward call, which lanes always pay for (BENCHMARKS.md,
    /// "Lane handoff").
    pub rate_share: usize,
}

/// The [`Work::rate_share`] of forward passes bound by memory rather than
/// arithmetic at unit stride: less than [`ARITHMETIC_BOUND_DEPTH`]
/// multiply-adds an output (depthwise layers), which do a third of the
/// handoff probe's FLOPs a second; at larger strides each output reads
/// more input and they do half that again (BENCHMARKS.md, "Lane
/// handoff").
pub(crate) const MEMORY_BOUND_RATE_SHARE: usize = 3;

/// The least multiply-adds an output element takes for a pass to be
/// bound by arithmetic: below it each is read and written for too little
/// arithmetic (BENCHMARKS.md, "Lane handoff").
const ARITHMETIC_BOUND_DEPTH: usize = 16;

/// The rate share of `g`'s forward pass, which sums `depth` products an
/// output.
fn forward_rate_share(g: &Geometry, depth: usize) -> usize {
    if depth >= ARITHMETIC_BOUND_DEPTH {
        1
    } else if g.sh * g.sw > 1 {
        2 * MEMORY_BOUND_RATE_SHARE
    } else {
        MEMORY_BOUND_RATE_SHARE
    }
}

/// The input rows that a band of output rows reads, and so the only rows
/// of its sample's input gradient that it adds to: rows `stride` apart,
/// each window `extent` rows high, `pad_top` rows above the input's first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reach {
    stride: usize,
    extent: usize,
    pad_top: usize,
    in_h: usize,
}

impl Reach {
    /// The reach of `g`'s output rows.
    pub(crate) fn of(g: &Geometry) -> Self {
        Reach {
            stride: g.sh,
            extent: (g.kh - 1) * g.dh + 1,
            pad_top: g.padding.top,
            in_h: g.in_h,
        }
    }

    /// The rows of the padded input from the first window of output rows
    /// `rows` to the last.
    pub(crate) fn padded_rows(&self, rows: &Range<usize>) -> Range<usize> {
        let first = rows.start * self.stride;
        first..first + rows.len().saturating_sub(1) * self.stride + self.extent
    }

    /// How many more input rows a band reaches than its output rows move
    /// on by: the rows it shares with the next band.
    pub(crate) fn overlap_rows(&self) -> usize {
        self.extent.saturating_sub(self.stride)
    }

    /// The input rows among [`Self::padded_rows`], which hold every row the
    /// windows read (empty where they lie in padding alone).
    pub(crate) fn input_rows(&self, rows: &Range<usize>) -> Range<usize> {
        let padded = self.padded_rows(rows);
        let start = padded.start.saturating_sub(self.pad_top).min(self.in_h);
        let end = padded.end.saturating_sub(self.pad_top).min(self.in_h);
        start..end.max(start)
    }
}

impl Work {
    /// The forward pass of `g`, over output rows cut at multiples of
    /// `granule`.
    pub(crate) fn forward(g: &Geometry, granule: usize) -> Self {
        Work {
            batch: g.batch,
            height: g.out_h,
            granule,
            row_flops: 2 * g.out_w * g.out_channels * (g.col_rows() / g.groups),
            reduced: 0,
            banded: 0,
            reach: None,
            reached_rows_only: false,
            rate_share: forward_rate_share(g, g.col_rows() / g.groups),
        }
    }

    /// The forward pass of `g` over blocks of output channels: each sample's
    /// "rows" are its output channels, cut at multiples of `granule`
    /// (the kernel hands the scheduler its output with the channel and row
    /// axes swapped).
    pub(crate) fn forward_by_channels(g: &Geometry, granule: usize) -> Self {
        Work {
            rate_share: forward_rate_share(g, g.col_rows() / g.groups),
            ..Self::channel_blocks(
                g.batch,
                g.out_channels,
                granule,
                2 * g.out_h * g.out_w * (g.col_rows() / g.groups),
            )
        }
    }

    /// The forward pass of `g` over blocks of output channels of the whole
    /// batch at once: one "sample" whose "rows" are the output channels,
    /// cut at multiples of `granule` (the kernel hands the scheduler its
    /// output as `(1, n, c_out, out_h·out_w)`).
    pub(crate) fn forward_by_channels_of_the_batch(g: &Geometry, granule: usize) -> Self {
        Work {
            rate_share: forward_rate_share(g, g.col_rows() / g.groups),
            ..Self::channel_blocks(
                1,
                g.out_channels,
                granule,
                2 * g.batch * g.out_h * g.out_w * (g.col_rows() / g.groups),
            )
        }
    }

    /// A pass over `channels` channels of each of `batch` samples, cut at
    /// multiples of `granule` channels, each channel `channel_flops` of
    /// arithmetic, whose items write disjoint parts of the output and sum
    /// nothing (the kernel swaps its output's channel and row axes, or
    /// hands over a weight gradient as one sample of one row of channels).
    pub(crate) fn channel_blocks(
        batch: usize,
        channels: usize,
        granule: usize,
        channel_flops: usize,
    ) -> Self {
        Work {
            batch,
            height: channels,
            granule,
            row_flops: channel_flops,
            reduced: 0,
            banded: 0,
            reach: None,
            reached_rows_only: false,
            rate_share: 1,
        }
    }

    /// The pass of `g`'s forward pass bound by memory (a depthwise layer,
    /// [`MEMORY_BOUND_RATE_SHARE`]).
    pub(crate) fn bound_by_memory(self, g: &Geometry) -> Self {
        Work {
            rate_share: forward_rate_share(g, 1),
            ..self
        }
    }

    /// The pass as a pass of a backward call, which the handoff never
    /// keeps from a lane.
    pub(crate) fn of_backward(self) -> Self {
        Work {
            rate_share: 0,
            ..self
        }
    }

    /// The backward pass of `g` (weight and input gradients), over output
    /// rows cut at multiples of `granule`. Its parts are sized by the whole
    /// gradients, whichever of them a call asks for, so that each gradient
    /// comes out the same whatever the others.
    pub(crate) fn backward(g: &Geometry, granule: usize) -> Self {
        let weight_gradient = Self::weight_gradient(g, granule);
        Work {
            row_flops: 2 * weight_gradient.row_flops,
            banded: g.in_channels * g.in_h * g.in_w,
            reach: Some(Reach::of(g)),
            ..weight_gradient
        }
    }

    /// The weight and bias gradients of `g` computed alone, without the
    /// input gradient, over output rows cut at multiples of `granule`: its
    /// parts keep only their partial sums, so a large image at batch 1
    /// still cuts into bands for every thread (the input gradient's bands
    /// would each hold a copy of the sample's gradient).
    pub(crate) fn weight_gradient(g: &Geometry, granule: usize) -> Self {
        let forward = Self::forward(g, granule);
        Work {
            reduced: g.out_channels * (g.col_rows() / g.groups + 1),
            rate_share: 0,
            ..forward
        }
    }

    /// The pass with bands whose outputs hold only the input rows they
    /// reach ([`Self::reached_rows_only`]), for a kernel that writes a
    /// band's contribution into the rows of [`Schedule::gradient_rows`].
    pub(crate) fn with_reached_rows_only(self) -> Self {
        Work {
            reached_rows_only: self.reach.is_some(),
            ..self
        }
    }

    /// The input gradient of `g` computed alone, over input rows cut at
    /// multiples of `granule`.
    pub(crate) fn input_gradient(g: &Geometry, granule: usize) -> Self {
        Work {
            batch: g.batch,
            height: g.in_h,
            granule,
            row_flops: 2 * g.in_w * g.in_channels * g.out_channels_per_group() * g.kh * g.kw,
            reduced: 0,
            banded: 0,
            reach: None,
            reached_rows_only: false,
            rate_share: 0,
        }
    }

    /// Units of one sample: its rows in granules.
    fn units_per_sample(&self) -> usize {
        self.height.div_ceil(self.granule.max(1))
    }

    /// Units of the pass.
    fn units(&self) -> usize {
        self.batch * self.units_per_sample()
    }

    /// Floating-point operations of the pass.
    fn flops(&self) -> usize {
        self.row_flops
            .saturating_mul(self.height)
            .saturating_mul(self.batch)
    }

    /// Whether the pass sums partial results of its parts.
    fn sums(&self) -> bool {
        self.reduced > 0 || self.banded > 0
    }

    /// How many parts a summing pass is cut into, a power of two: as many
    /// as the units, [`MAX_PARTS`], parts of twice `min_lane_flops` each and
    /// parts of [`PART_FLOPS_PER_SUMMED_ELEMENT`] per element of the
    /// gradients each allow (two at least, where two lanes have work), within [`PARTS_MEMORY_ELEMENTS`]. Where those parts
    /// would cut samples into bands, whose input gradients each part keeps
    /// whole, the parts are whole samples instead (as many as a power of two
    /// dividing the batch), or at most [`BANDED_PARTS`] when that is more;
    /// bands that keep only the rows they reach are as many as
    /// [`Self::reached_row_parts`] allows. None of this depends on the
    /// thread count, so neither does the order in which partial results
    /// add up.
    fn fixed_parts(&self, min_lane_flops: usize) -> usize {
        let flops = self.flops();
        let by_lane_work = flops.checked_div(min_lane_flops).unwrap_or(usize::MAX);
        let by_summing = flops
            .checked_div(PART_FLOPS_PER_SUMMED_ELEMENT.saturating_mul(self.reduced))
            .unwrap_or(usize::MAX);
        let by_memory = |elements: usize| {
            PARTS_MEMORY_ELEMENTS
                .checked_div(elements)
                .unwrap_or(usize::MAX)
        };
        // Two lanes' worth of parts wherever the pass has that much work:
        // an extra sum of partials costs less than a second lane gains.
        let at_least = self.units().min(by_lane_work).min(2);
        // Beyond that, a part carries two lanes' least work: on fewer
        // threads than parts, each part still costs an item's setup and a
        // sum of partials.
        let by_part_work = by_lane_work / 2;
        let unbanded = power_of_two_at_most(
            self.units()
                .min(MAX_PARTS)
                .min(by_part_work.max(at_least))
                .min(by_summing.max(at_least))
                .min(by_memory(self.reduced)),
        );
        if self.batch.is_multiple_of(unbanded) || self.banded == 0 {
            return unbanded;
        }
        let whole = (1 << self.batch.trailing_zeros()).min(unbanded);
        // Large partial sums keep bands off the floor of two: each band
        // streams its own copy of them through memory for a product a
        // fraction of a sample deep, which costs more than one part whose
        // GEMMs spread over the threads.
        let floor = if self.reduced <= BANDED_FLOOR_ELEMENTS {
            at_least
        } else {
            1
        };
        let banded = if self.reached_rows_only {
            self.reached_row_parts(unbanded, floor)
        } else {
            let part_elements = self.reduced.saturating_add(self.banded.saturating_mul(2));
            power_of_two_at_most(
                unbanded
                    .min(by_summing.max(floor))
                    .min(BANDED_PARTS)
                    .min(by_memory(part_elements)),
            )
        };
        whole.max(banded)
    }

    /// [`Self::fixed_parts`] that cut samples into bands holding only the
    /// rows they reach, at most `unbanded` and at least `floor`: a
    /// sample's bands then hold its input gradient once, plus each band's
    /// overlap with the next ([`Reach::overlap_rows`]), so a part costs its
    /// partial sums and its overlap. Parts carry
    /// [`PART_FLOPS_PER_SUMMED_ELEMENT`] of arithmetic for each element
    /// they add up beyond the batch's input gradient, within
    /// [`PARTS_MEMORY_ELEMENTS`].
    fn reached_row_parts(&self, unbanded: usize, floor: usize) -> usize {
        let overlap = self.reach.map_or(self.banded, |reach| {
            (self.banded / reach.in_h.max(1)).saturating_mul(reach.overlap_rows())
        });
        let per_part = self.reduced.saturating_add(overlap);
        let budget = (self.flops() / PART_FLOPS_PER_SUMMED_ELEMENT)
            .saturating_sub(self.batch.saturating_mul(self.banded));
        let by_sums = budget.checked_div(per_part).unwrap_or(usize::MAX);
        let by_memory = PARTS_MEMORY_ELEMENTS
            .checked_div(per_part)
            .unwrap_or(usize::MAX);
        power_of_two_at_most(unbanded.min(by_sums.max(floor)).min(by_memory))
    }

    /// The rows of unit `unit` within its sample.
    fn unit_rows(&self, unit: usize) -> Range<usize> {
        let start = unit * self.granule.max(1);
        start.min(self.height)..(start + self.granule.max(1)).min(self.height)
    }
}

/// Adds the partial sums of `rest`, part after part, into `sums`; on
/// `lanes` threads, each a run of the elements (which does not change the
/// order in which any one element's partials add up).
fn add_in_part_order<T: Element>(sums: &mut [T], rest: &[PartMemory<T>], lanes: usize) {
    let add = |(index, chunk): (usize, &mut [T])| {
        let start = index * SUMMING_CHUNK;
        for part in rest {
            let values = &part.partial[start..start + chunk.len()];
            for (sum, &value) in chunk.iter_mut().zip(values) {
                *sum += value;
            }
        }
    };
    if lanes > 1 && sums.len() * rest.len() >= PARALLEL_SUMMING_ELEMENTS {
        sums.par_chunks_mut(SUMMING_CHUNK).enumerate().for_each(add);
    } else {
        sums.chunks_mut(SUMMING_CHUNK).enumerate().for_each(add);
    }
}

/// Zeros into rows `rows` (axis 1) of `sample`, where there are any.
fn fill_rows<T: Element>(mut sample: ArrayViewMut3<'_, T>, rows: Range<usize>) {
    if !rows.is_empty() {
        sample.slice_mut(s![.., rows, ..]).fill(T::zero());
    }
}

/// Elements of the partial sums a task adds up: 64 KiB of `f32`, so that a
/// chunk and one part's matching chunk stay in L2.
const SUMMING_CHUNK: usize = 1 << 14;

/// Below this many additions the calling thread adds the partial sums
/// alone: waking the pool costs about what a few hundred thousand
/// additions do.
const PARALLEL_SUMMING_ELEMENTS: usize = 1 << 19;

/// The largest power of two at most `n`, and 1 for 0.
fn power_of_two_at_most(n: usize) -> usize {
    1 << n.max(1).ilog2()
}

/// The most parts a summing pass is cut into: enough for lanes of equal
/// work on 64 threads (BENCHMARKS.md, "Scaling by simulation").
const MAX_PARTS: usize = 64;

/// The least arithmetic of a part per element of the gradients it sums, so
/// that zeroing and adding the parts' partial sums costs at most about 1%
/// of the pass (BENCHMARKS.md, "Thread-count independence").
const PART_FLOPS_PER_SUMMED_ELEMENT: usize = 2048;

/// The most elements the parts of a pass keep (partial sums, and bands of
/// input gradient when they cut samples into bands): 16 Mi, 64 MiB of
/// `f32`, whatever the batch (one part alone may need more).
pub(crate) const PARTS_MEMORY_ELEMENTS: usize = 16 << 20;

/// The most parts a summing pass has when they cut samples into bands:
/// each such part keeps a whole sample's input gradient, to zero and add
/// up, which costs more than a third lane gains (BENCHMARKS.md,
/// "Thread-count independence").
const BANDED_PARTS: usize = 2;

/// The most elements of partial sums (weight and bias gradients) for
/// which a pass that sums little per element still cuts a sample into two
/// bands: 768 Ki elements, 3 MiB of `f32`. Above it, one part, its GEMMs on every thread,
/// measured faster; below it, two bands (BENCHMARKS.md, "Band parts").
const BANDED_FLOOR_ELEMENTS: usize = 3 << 18;

/// How a pass is cut into work items for a pool of threads.
///
/// A forward pass (or an input gradient computed alone, row by row) cuts
/// its units into one part per lane: each output element is one item's,
/// computed in an order its item fixes, so the thread count cannot change
/// it. A backward pass sums partial results, so its parts are fixed by the
/// pass alone ([`Work::fixed_parts`]); lanes run runs of whole parts, and
/// the parts' sums add up in part order, so results are the same bit for
/// bit on any number of threads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Schedule {
    work: Work,
    /// Pieces of the pass, each with its own items and partial results.
    parts: usize,
    lanes: usize,
    gemm_threads: usize,
    /// Whether lanes compute with subnormals flushed to zero.
    flush_subnormals: bool,
}

/// A lane's partial gradient sums, written by the kernel: the weight
/// gradient in the kernel's own layout, and the bias gradient.
pub(crate) struct Partials<'a, T> {
    pub weight: &'a mut [T],
    pub bias: &'a mut [T],
}

/// The sums of every lane's [`Partials`], in the same layouts.
pub(crate) struct Sums<'a, T> {
    pub weight: &'a [T],
    pub bias: ArrayView1<'a, T>,
}

/// The part of a pass's output that a run of lanes writes: a band of the
/// rows of a first sample (`head`), whole samples, and a band of the rows
/// of a last sample (`tail`), in the pass's order. A backward pass leaves
/// the banded samples out (their bands add up after the lanes run), so its
/// regions have whole samples only.
struct Region<'o, T> {
    /// The sample, its first row, and its rows from there.
    head: Option<(usize, usize, ArrayViewMut4<'o, T>)>,
    /// The first whole sample, and the whole samples from there.
    whole: (usize, ArrayViewMut4<'o, T>),
    /// The sample, and its rows from the first.
    tail: Option<(usize, ArrayViewMut4<'o, T>)>,
}

impl<'o, T> Region<'o, T> {
    /// Cuts the region where `(sample, row)` starts. With `keep_bands`
    /// false a sample cut inside (`row > 0`) goes to neither side.
    fn cut(self, (sample, row): (usize, usize), keep_bands: bool) -> (Self, Self) {
        let Region { head, whole, tail } = self;
        let (first, whole) = whole;
        let whole_end = first + whole.len_of(Axis(0));
        if let Some((n, r0, _)) = head
            && n == sample
        {
            // Inside the head band: both sides are bands of the sample.
            let (_, _, band) = head.expect("matched above");
            let (left, right) = band.split_at(Axis(2), row - r0);
            let (empty_left, rest) = whole.split_at(Axis(0), 0);
            return (
                Region {
                    head: Some((n, r0, left)),
                    whole: (first, empty_left),
                    tail: None,
                },
                Region {
                    head: Some((n, row, right)),
                    whole: (first, rest),
                    tail,
                },
            );
        }
        if let Some((n, _)) = tail
            && n == sample
            && row > 0
        {
            let (_, band) = tail.expect("matched above");
            let (left, right) = band.split_at(Axis(2), row);
            let (rest, empty_right) = whole.split_at(Axis(0), whole_end - first);
            return (
                Region {
                    head,
                    whole: (first, rest),
                    tail: Some((n, left)),
                },
                Region {
                    head: Some((n, row, right)),
                    whole: (whole_end, empty_right),
                    tail: None,
                },
            );
        }
        // Between whole samples (or at the start of the tail's sample, or,
        // without bands, around a sample already left out).
        let at = sample.clamp(first, whole_end) - first;
        let (left, rest) = whole.split_at(Axis(0), at);
        if row == 0 || !(first..whole_end).contains(&sample) {
            return (
                Region {
                    head,
                    whole: (first, left),
                    tail: None,
                },
                Region {
                    head: None,
                    whole: (first + at, rest),
                    tail,
                },
            );
        }
        let (cut_sample, right) = rest.split_at(Axis(0), 1);
        let (left_tail, right_head) = if keep_bands {
            let (top, bottom) = cut_sample.split_at(Axis(2), row);
            (Some((sample, top)), Some((sample, row, bottom)))
        } else {
            (None, None)
        };
        (
            Region {
                head,
                whole: (first, left),
                tail: left_tail,
            },
            Region {
                head: right_head,
                whole: (sample + 1, right),
                tail,
            },
        )
    }
}

impl Schedule {
    /// The schedule of a pass on `threads` threads, each lane with at least
    /// `min_lane_flops` of arithmetic where the pass has that much (a pass
    /// bound by memory counting its FLOPs [`Work::rate_share`] times).
    #[cfg(test)]
    pub(crate) fn for_threads(work: Work, threads: usize, min_lane_flops: usize) -> Self {
        Self::handing_off(work, threads, min_lane_flops, 0)
    }

    /// [`Self::for_threads`] on a machine where handing work to another
    /// thread costs the time of `handoff_flops` of arithmetic
    /// ([`crate::handoff`]): no thread, lane or GEMM thread, is given less
    /// than that. The parts of a summing pass stay those of
    /// `min_lane_flops`, so that its results do not depend on the
    /// measurement.
    pub(crate) fn handing_off(
        work: Work,
        threads: usize,
        min_lane_flops: usize,
        handoff_flops: usize,
    ) -> Self {
        let threads = threads.max(1);
        let units = work.units();
        let handoff_flops = handoff_flops
            .checked_div(work.rate_share)
            .unwrap_or_default();
        let by_handoff = work
            .flops()
            .checked_div(handoff_flops)
            .unwrap_or(usize::MAX)
            .max(1);
        let (parts, lanes) = if units == 0 {
            (0, 0)
        } else if work.sums() {
            let parts = work.fixed_parts(min_lane_flops);
            (parts, threads.min(parts).min(by_handoff))
        } else {
            // A pass bound by memory takes `rate_share` times the time of
            // as many FLOPs bound by arithmetic: the least work a lane is
            // counted in that time, as the handoff is (BENCHMARKS.md, "Lane
            // size").
            let by_work = work
                .flops()
                .saturating_mul(work.rate_share.max(1))
                .checked_div(min_lane_flops)
                .unwrap_or(usize::MAX)
                .max(1);
            let lanes = threads.min(units).min(by_work).min(by_handoff);
            (lanes, lanes)
        };
        let lanes_or_one = lanes.max(1);
        Schedule {
            work,
            parts,
            lanes,
            gemm_threads: (threads / lanes_or_one)
                .min(by_handoff / lanes_or_one)
                .max(1),
            flush_subnormals: true,
        }
    }

    /// The schedule with subnormals kept (`false`) or flushed to zero
    /// while lanes compute.
    pub(crate) fn flushing_subnormals(self, flush: bool) -> Self {
        Schedule {
            flush_subnormals: flush,
            ..self
        }
    }

    /// How many lanes run (none for an empty pass).
    pub(crate) fn lanes(&self) -> usize {
        self.lanes
    }

    /// Threads each lane's GEMMs may use.
    #[cfg(test)]
    pub(crate) fn gemm_threads(&self) -> usize {
        self.gemm_threads
    }

    /// How many parts the pass is cut into.
    pub(crate) fn parts(&self) -> usize {
        self.parts
    }

    /// The parts lane `lane` runs: an equal share, the shares differing by
    /// at most one part when the parts do not divide evenly.
    pub(crate) fn lane_parts(&self, lane: usize) -> Range<usize> {
        lane * self.parts / self.lanes..(lane + 1) * self.parts / self.lanes
    }

    /// The units of part `part`: an equal share, the shares differing by
    /// at most one unit when the units do not divide evenly.
    fn part_units(&self, part: usize) -> Range<usize> {
        let units = self.work.units();
        part * units / self.parts..(part + 1) * units / self.parts
    }

    /// The work items of part `part`, in order: at most three.
    pub(crate) fn items(&self, part: usize) -> impl Iterator<Item = WorkItem> + use<> {
        let work = self.work;
        let gemm_threads = self.gemm_threads;
        let per_sample = work.units_per_sample();
        let Range { start, end } = self.part_units(part);
        let item = |samples: Range<usize>, rows: Range<usize>| {
            (!samples.is_empty() && !rows.is_empty()).then_some(WorkItem {
                samples,
                rows,
                gemm_threads,
            })
        };
        let band = |from: usize, to: usize| work.unit_rows(from).start..work.unit_rows(to - 1).end;
        let (first, first_unit) = (start / per_sample, start % per_sample);
        let (last, last_unit) = (end / per_sample, end % per_sample);
        let items = if first == last {
            [
                (last_unit > first_unit)
                    .then(|| item(first..first + 1, band(first_unit, last_unit)))
                    .flatten(),
                None,
                None,
            ]
        } else {
            let whole_start = first + usize::from(first_unit > 0);
            [
                (first_unit > 0)
                    .then(|| item(first..first + 1, band(first_unit, per_sample)))
                    .flatten(),
                item(whole_start..last, 0..work.height),
                (last_unit > 0)
                    .then(|| item(last..last + 1, band(0, last_unit)))
                    .flatten(),
            ]
        };
        items.into_iter().flatten()
    }

    /// Whether `item` is a band of a sample rather than whole samples.
    fn is_band(&self, item: &WorkItem) -> bool {
        item.is_band_of(self.work.height)
    }

    /// Where part `part`'s units start: `(sample, row)`.
    fn part_start(&self, part: usize) -> (usize, usize) {
        let unit = self.part_units(part).start;
        let per_sample = self.work.units_per_sample();
        (
            unit / per_sample,
            self.work.unit_rows(unit % per_sample).start,
        )
    }

    /// Runs `lane(index, memory, parts, region)` for lanes `first..first +
    /// memory.len()` in parallel, each with its own memory, the memory of
    /// its parts (`parts` is empty for a pass that keeps none) and its part
    /// of `region`, by cutting all three in halves (`handoff::join`).
    fn run_lanes<'o, T: Element>(
        &self,
        first: usize,
        memory: &mut [LaneMemory<T>],
        parts: &mut [PartMemory<T>],
        region: Region<'o, T>,
        keep_bands: bool,
        lane: &(impl Fn(usize, &mut LaneMemory<T>, &mut [PartMemory<T>], Region<'o, T>) + Sync),
    ) {
        match memory.len() {
            0 => {}
            1 => {
                let _flush = FlushGuard::new(self.flush_subnormals);
                lane(first, &mut memory[0], parts, region)
            }
            len => {
                let half = len / 2;
                let middle_part = self.lane_parts(first + half).start;
                let (left, right) = region.cut(self.part_start(middle_part), keep_bands);
                let (left_memory, right_memory) = memory.split_at_mut(half);
                let part_half = if parts.is_empty() {
                    0
                } else {
                    middle_part - self.lane_parts(first).start
                };
                let (left_parts, right_parts) = parts.split_at_mut(part_half);
                crate::handoff::join(
                    || self.run_lanes(first, left_memory, left_parts, left, keep_bands, lane),
                    || {
                        let first = first + half;
                        self.run_lanes(first, right_memory, right_parts, right, keep_bands, lane)
                    },
                );
                crate::linger::keep_awake();
            }
        }
    }

    /// Runs `work(item, out[item], scratch)` for every item, in parallel,
    /// each lane with its own scratch buffers. `out` is the pass's output
    /// (`y`, or `dx`), its axis 2 the rows; `out[item]` is the item's
    /// samples and rows of it.
    pub(crate) fn run<T: Element>(
        &self,
        memory: Memory<'_, T>,
        out: ArrayViewMut4<'_, T>,
        work: impl Fn(&WorkItem, ArrayViewMut4<'_, T>, &mut Scratch<T>) + Sync,
    ) {
        self.run_checked_by_kernel(memory, out, |item, mut out, scratch, check| {
            work(item, out.view_mut(), scratch);
            !check || all_finite(&out.view())
        });
    }

    /// [`Self::run`] for a kernel that checks what it writes itself:
    /// `work(item, out[item], scratch, check)` returns whether every
    /// element it wrote is finite where `check` asks (a call that checks
    /// every output), and `true` where it does not. A kernel that writes an
    /// item's samples one by one checks each while it is still in cache,
    /// where a check of the whole item would read it again from memory.
    pub(crate) fn run_checked_by_kernel<T: Element>(
        &self,
        memory: Memory<'_, T>,
        out: ArrayViewMut4<'_, T>,
        work: impl Fn(&WorkItem, ArrayViewMut4<'_, T>, &mut Scratch<T>, bool) -> bool + Sync,
    ) {
        let region = Region {
            head: None,
            whole: (0, out),
            tail: None,
        };
        let checking = matches!(memory.finite, Some((Checks::Everything, _)));
        let finite = AtomicBool::new(true);
        let lane =
            |index: usize, memory: &mut LaneMemory<T>, _: &mut [_], region: Region<'_, T>| {
                let Region {
                    mut head,
                    whole: (_, mut whole),
                    mut tail,
                } = region;
                for item in self.lane_parts(index).flat_map(|part| self.items(part)) {
                    let mut out = if !self.is_band(&item) {
                        whole.view_mut()
                    } else if let Some((_, _, band)) = head.take() {
                        band
                    } else {
                        tail.take().expect("a lane's bands are its head and tail").1
                    };
                    if !work(&item, out.view_mut(), &mut memory.scratch, checking) {
                        finite.store(false, Ordering::Relaxed);
                    }
                }
            };
        let lanes = &mut memory.lanes[..self.lanes];
        self.run_lanes(0, lanes, &mut [], region, true, &lane);
        if let Some((_, all)) = memory.finite {
            *all &= finite.into_inner();
        }
    }

    /// The rows of each of its samples that an item's output holds in
    /// [`Self::run_summing`], of a gradient `height` rows high: all of
    /// them, except for a band of a pass whose bands hold only the input
    /// rows they reach ([`Work::reached_rows_only`]), whose output holds
    /// those rows, the first of them at its row 0.
    pub(crate) fn gradient_rows(&self, item: &WorkItem, height: usize) -> Range<usize> {
        match self.work.reach {
            Some(reach) if self.work.reached_rows_only && self.is_band(item) => {
                reach.input_rows(&item.rows)
            }
            _ => 0..height,
        }
    }

    /// [`Self::run`] for a backward pass: each part also gets [`Partials`]
    /// of `weight_len` and `bias_len` zeros to add its items' gradients
    /// into; their sums come back, added in part order. `out` may be absent
    /// (a pass that computes no input gradient); when present, `out[item]`
    /// is the item's samples' [`Self::gradient_rows`], which the kernel
    /// overwrites with the contribution of the item's rows (for a band, a
    /// part's buffer that the scheduler adds into `out`, in part order,
    /// reading only the rows the band [reaches](Work::reach)).
    pub(crate) fn run_summing<'m, T: Element>(
        &self,
        memory: Memory<'m, T>,
        out: Option<ArrayViewMut4<'_, T>>,
        lens: (usize, usize),
        work: impl Fn(&WorkItem, Option<ArrayViewMut4<'_, T>>, &mut Scratch<T>, Partials<'_, T>) + Sync,
    ) -> Sums<'m, T> {
        self.run_summing_checked_by_kernel(
            memory,
            out,
            lens,
            |item, mut out, scratch, partials, check| {
                work(
                    item,
                    out.as_mut().map(|out| out.view_mut()),
                    scratch,
                    partials,
                );
                !check || out.is_none_or(|out| all_finite(&out.view()))
            },
        )
    }

    /// [`Self::run_summing`] for a kernel that checks what it writes into
    /// `out[item]` itself, as [`Self::run_checked_by_kernel`] has it. A
    /// band is checked before it adds up: a sum of finite bands is finite
    /// but for overflow.
    pub(crate) fn run_summing_checked_by_kernel<'m, T: Element>(
        &self,
        memory: Memory<'m, T>,
        out: Option<ArrayViewMut4<'_, T>>,
        (weight_len, bias_len): (usize, usize),
        work: impl Fn(
            &WorkItem,
            Option<ArrayViewMut4<'_, T>>,
            &mut Scratch<T>,
            Partials<'_, T>,
            bool,
        ) -> bool
        + Sync,
    ) -> Sums<'m, T> {
        let Memory {
            lanes,
            parts,
            finite: all_finite_so_far,
        } = memory;
        let checking = matches!(all_finite_so_far, Some((Checks::Everything, _)));
        let finite = AtomicBool::new(true);
        let parts = &mut parts[..self.parts.max(1)];
        let len = weight_len + bias_len;
        let mut out = out;
        let sample_shape = out.as_ref().map(|o| {
            let (_, c, h, w) = o.dim();
            (1, c, h, w)
        });
        // Without an output, the region is an empty stand-in.
        let mut none: [T; 0] = [];
        let whole = match &mut out {
            Some(out) => out.view_mut(),
            None => ArrayViewMut4::from_shape((0, 0, 0, 0), &mut none[..]).expect("empty"),
        };
        let region = Region {
            head: None,
            whole: (0, whole),
            tail: None,
        };
        let lane = |index: usize,
                    memory: &mut LaneMemory<T>,
                    parts: &mut [PartMemory<T>],
                    region: Region<'_, T>| {
            let (first_whole, mut whole) = region.whole;
            for (part, memory_of_part) in self.lane_parts(index).zip(parts) {
                let partial = scratch(&mut memory_of_part.partial, len);
                partial.fill(T::zero());
                let (weight, bias) = partial.split_at_mut(weight_len);
                let mut bands = memory_of_part.bands.iter_mut();
                for item in self.items(part) {
                    let out = match sample_shape {
                        None => None,
                        Some(_) if !self.is_band(&item) => {
                            let samples =
                                item.samples.start - first_whole..item.samples.end - first_whole;
                            Some(whole.slice_mut(s![samples, .., .., ..]))
                        }
                        Some((_, c, h, w)) => {
                            let buf = bands.next().expect("a part has two bands at most");
                            let rows = self.gradient_rows(&item, h).len();
                            let buf = scratch(buf, c * rows * w);
                            Some(
                                ArrayViewMut4::from_shape((1, c, rows, w), buf)
                                    .expect("sized above"),
                            )
                        }
                    };
                    let partials = Partials {
                        weight: &mut *weight,
                        bias: &mut *bias,
                    };
                    if !work(&item, out, &mut memory.scratch, partials, checking) {
                        finite.store(false, Ordering::Relaxed);
                    }
                }
            }
        };
        if self.lanes == 0 {
            // An empty batch: the sums are zeros.
            scratch(&mut parts[0].partial, len).fill(T::zero());
        } else {
            self.run_lanes(0, &mut lanes[..self.lanes], parts, region, false, &lane);
        }
        if let Some(out) = out {
            self.add_bands(parts, out);
        }
        let (first, rest) = parts.split_first_mut().expect("at least one part");
        add_in_part_order(&mut first.partial[..len], rest, self.lanes);
        let first: &'m PartMemory<T> = first;
        if let Some((_, all)) = all_finite_so_far {
            *all &= finite.into_inner() && all_finite_on_pool(&first.partial[..len]);
        }
        let (weight, bias) = first.partial[..len].split_at(weight_len);
        Sums {
            weight,
            bias: ArrayView1::from(bias),
        }
    }

    /// Writes into each banded sample of `out` the sum of its bands'
    /// contributions, in part order. A band adds only to the rows it
    /// [reaches](Reach): the first band to reach a row sets it, the others
    /// that reach it add to it, and rows no band reaches are zeros. Bands
    /// of one sample come in row order, so their reaches start and end in
    /// order and the rows set so far are the ones above `written`.
    fn add_bands<T: Element>(&self, parts: &[PartMemory<T>], mut out: ArrayViewMut4<'_, T>) {
        let height = out.len_of(Axis(2));
        // The sample being summed, and the end of its rows set so far.
        let mut open: Option<(usize, usize)> = None;
        for (index, memory) in parts.iter().enumerate().take(self.parts) {
            let bands = self.items(index).filter(|item| self.is_band(item));
            for (item, buf) in bands.zip(&memory.bands) {
                let n = item.samples.start;
                let written = match open {
                    Some((m, end)) if m == n => end,
                    Some((m, end)) => {
                        fill_rows(out.index_axis_mut(Axis(0), m), end..height);
                        0
                    }
                    None => 0,
                };
                let reached = match self.work.reach {
                    Some(reach) => reach.input_rows(&item.rows),
                    None => 0..height,
                };
                let mut sample = out.index_axis_mut(Axis(0), n);
                let held = self.gradient_rows(&item, height);
                let (c, _, w) = sample.dim();
                let band = ArrayView3::from_shape((c, held.len(), w), &buf[..c * held.len() * w])
                    .expect("band buffers hold the rows of the item's gradient");
                fill_rows(sample.view_mut(), written..reached.start);
                let added = reached.start..reached.end.min(written);
                let set = reached.start.max(written)..reached.end;
                for (rows, first) in [(added, false), (set, true)] {
                    if !rows.is_empty() {
                        let in_band = rows.start - held.start..rows.end - held.start;
                        let band = band.slice(s![.., in_band, ..]);
                        self.add_band(sample.slice_mut(s![.., rows, ..]), band, first);
                    }
                }
                open = Some((n, written.max(reached.end)));
            }
        }
        if let Some((m, end)) = open {
            fill_rows(out.index_axis_mut(Axis(0), m), end..height);
        }
    }

    /// `sample = band` (the sample's first band) or `sample += band`, plane
    /// by plane, over the pool's threads when the sample is large: on one
    /// thread, summing a batch-1 call's bands takes a sixth of a depthwise
    /// backward pass (BENCHMARKS.md, "Band sums"). Each element's sum is the
    /// same on any number of threads.
    fn add_band<T: Element>(
        &self,
        mut sample: ArrayViewMut3<'_, T>,
        band: ArrayView3<'_, T>,
        first: bool,
    ) {
        let add = |mut plane: ArrayViewMut2<'_, T>, band: ArrayView2<'_, T>| {
            let _flush = FlushGuard::new(self.flush_subnormals);
            if first {
                plane.assign(&band);
            } else {
                Zip::from(&mut plane).and(&band).for_each(|s, &b| *s += b);
            }
        };
        let planes = sample.axis_iter_mut(Axis(0));
        if worth_parallel_fill(band.len()) {
            let bands = band.axis_iter(Axis(0)).into_par_iter();
            planes
                .into_par_iter()
                .zip(bands)
                .for_each(|(plane, band)| add(plane, band));
        } else {
            planes
                .zip(band.axis_iter(Axis(0)))
                .for_each(|(plane, band)| add(plane, band));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{BANDED_FLOOR_ELEMENTS, Schedule, Work, WorkItem};
    use crate::workspace::DEFAULT_MIN_LANE_FLOPS as MIN_LANE_FLOPS;
    use crate::workspace::{Checks, LaneMemory, Memory, PartMemory};
    use ndarray::Array4;

    fn work(batch: usize, height: usize, granule: usize) -> Work {
        Work {
            batch,
            height,
            granule,
            row_flops: MIN_LANE_FLOPS,
            reduced: 0,
            banded: 0,
            reach: None,
            reached_rows_only: false,
            rate_share: 1,
        }
    }

    /// A backward pass's work: its parts sum `reduced` elements and keep
    /// bands of `banded`.
    fn summing(batch: usize, height: usize, granule: usize) -> Work {
        Work {
            reduced: 1,
            banded: 1,
            ..work(batch, height, granule)
        }
    }

    /// Each lane's items, in order.
    fn all_items(schedule: &Schedule) -> Vec<Vec<WorkItem>> {
        (0..schedule.lanes())
            .map(|l| {
                schedule
                    .lane_parts(l)
                    .flat_map(|part| schedule.items(part))
                    .collect()
            })
            .collect()
    }

    /// Every row of every sample is in exactly one item, in order; items
    /// are whole samples or bands of one sample cut at granules, at most
    /// three a part; there are as many lanes as threads at most, and they
    /// run contiguous runs of the parts, all of them.
    #[test]
    fn items_cover_the_pass_once() {
        for batch in 0..12 {
            for height in [1, 2, 5, 7, 16] {
                for granule in [1, 2, 4] {
                    for threads in 1..=9 {
                        for w in [
                            work(batch, height, granule),
                            summing(batch, height, granule),
                        ] {
                            let schedule = Schedule::for_threads(w, threads, MIN_LANE_FLOPS);
                            assert!(schedule.lanes() <= threads);
                            assert_eq!(schedule.lanes() == 0, batch == 0);
                            let runs: Vec<usize> = (0..schedule.lanes())
                                .flat_map(|lane| schedule.lane_parts(lane))
                                .collect();
                            assert_eq!(runs, (0..schedule.parts()).collect::<Vec<_>>());
                            let mut covered = Vec::new();
                            for part in 0..schedule.parts() {
                                let items: Vec<WorkItem> = schedule.items(part).collect();
                                assert!(!items.is_empty() && items.len() <= 3);
                                for item in items {
                                    assert!(!item.samples.is_empty() && !item.rows.is_empty());
                                    if item.rows != (0..height) {
                                        assert_eq!(item.samples.len(), 1);
                                        assert_eq!(item.rows.start % granule, 0);
                                    }
                                    assert!(item.gemm_threads * schedule.lanes() <= threads);
                                    for n in item.samples.clone() {
                                        covered.extend(item.rows.clone().map(|r| (n, r)));
                                    }
                                }
                            }
                            let expected: Vec<_> = (0..batch)
                                .flat_map(|n| (0..height).map(move |r| (n, r)))
                                .collect();
                            assert_eq!(covered, expected, "{w:?} on {threads}");
                        }
                    }
                }
            }
        }
    }

    /// A summing pass is cut into the same parts, with the same items, on
    /// any number of threads: what the thread count changes is only which
    /// lane runs a part.
    #[test]
    fn summing_parts_ignore_the_thread_count() {
        for (batch, height, granule, _) in cases() {
            for (reduced, banded) in [(1, 0), (0, 1), (1 << 20, 1 << 10), (7, 1 << 23)] {
                let w = Work {
                    reduced,
                    banded,
                    ..work(batch, height, granule)
                };
                let parts = |threads| {
                    let schedule = Schedule::for_threads(w, threads, MIN_LANE_FLOPS);
                    let items: Vec<Vec<(_, _)>> = (0..schedule.parts())
                        .map(|part| {
                            schedule
                                .items(part)
                                .map(|item| (item.samples, item.rows))
                                .collect()
                        })
                        .collect();
                    items
                };
                let one = parts(1);
                for threads in [2, 3, 8, 64] {
                    assert_eq!(parts(threads), one, "{w:?} on {threads} threads");
                }
            }
        }
    }

    /// A one-sample pass that sums little per element of its gradients is
    /// cut into two bands while its partial sums are small, and left whole
    /// (its GEMMs on every thread) once they exceed
    /// `BANDED_FLOOR_ELEMENTS`; with enough arithmetic per element it is
    /// banded either way.
    #[test]
    fn large_partial_sums_keep_a_sample_whole() {
        let pass = |reduced: usize, row_flops: usize| {
            let w = Work {
                reduced,
                banded: 1 << 12,
                row_flops,
                ..work(1, 7, 1)
            };
            Schedule::for_threads(w, 2, MIN_LANE_FLOPS).parts()
        };
        let little = |reduced: usize| 100 * reduced / 7;
        assert_eq!(
            pass(BANDED_FLOOR_ELEMENTS, little(BANDED_FLOOR_ELEMENTS)),
            2
        );
        let large = BANDED_FLOOR_ELEMENTS + 1;
        assert_eq!(pass(large, little(large)), 1);
        assert_eq!(pass(large, 10_000 * large / 7), 2);
    }

    /// The parts of a summing pass keep at most `PARTS_MEMORY_ELEMENTS`
    /// (or one part's, when one part alone needs more).
    #[test]
    fn parts_memory_is_bounded() {
        let cases = [(1 << 10, 1 << 16), (1 << 22, 0), (1 << 12, 1 << 24)];
        for ((reduced, banded), batch) in cases.into_iter().flat_map(|c| [(c, 1), (c, 3), (c, 64)])
        {
            let w = Work {
                reduced,
                banded,
                ..work(batch, 256, 1)
            };
            let schedule = Schedule::for_threads(w, 8, 0);
            let bands = if w.batch.is_multiple_of(schedule.parts()) {
                0
            } else {
                banded
            };
            let kept = schedule.parts() * (reduced + 2 * bands);
            assert!(
                kept <= super::PARTS_MEMORY_ELEMENTS.max(reduced + 2 * banded),
                "{w:?}: {} parts",
                schedule.parts()
            );
        }
    }

    /// Every lane writes its items' rows, and only those, into the output.
    #[test]
    fn lanes_write_their_own_rows() {
        for (batch, height, granule, threads) in cases() {
            let schedule = Schedule::for_threads(work(batch, height, granule), threads, 0);
            let (mut lanes, mut parts) = memory(threads);
            let mut out = Array4::<f64>::from_elem((batch, 2, height, 3), -1.0);
            let mut finite = true;
            let memory = Memory {
                lanes: &mut lanes,
                parts: &mut parts,
                finite: Some((Checks::Everything, &mut finite)),
            };
            schedule.run(memory, out.view_mut(), |item, mut part, _| {
                assert_eq!(part.dim().0, item.samples.len());
                assert_eq!(part.dim().2, item.rows.len());
                for ((i, c, r, k), v) in part.indexed_iter_mut() {
                    assert_eq!(*v, -1.0, "written twice");
                    let (n, row) = (item.samples.start + i, item.rows.start + r);
                    *v = (n * 1000 + row * 10 + c + k) as f64;
                }
            });
            for ((n, c, r, k), &v) in out.indexed_iter() {
                assert_eq!(v, (n * 1000 + r * 10 + c + k) as f64);
            }
            assert!(finite);
        }
    }

    /// A pass that checks what it writes finds any non-finite value, in
    /// whole samples, bands or partial sums, and only then.
    #[test]
    fn passes_find_what_is_not_finite() {
        for (batch, height, granule, threads) in cases().filter(|c| c.0 > 0) {
            let w = summing(batch, height, granule);
            let schedule = Schedule::for_threads(w, threads, 0);
            for poisoned in [None, Some((batch - 1, height - 1)), Some((0, 0))] {
                for in_sums in [false, true] {
                    let (mut lanes, mut parts) = memory(64);
                    let mut out = Array4::<f64>::zeros((batch, 1, height, 1));
                    let mut finite = true;
                    let memory = Memory {
                        lanes: &mut lanes,
                        parts: &mut parts,
                        finite: Some((Checks::Everything, &mut finite)),
                    };
                    schedule.run_summing(
                        memory,
                        Some(out.view_mut()),
                        (1, 0),
                        |item, part, _, partials| {
                            let mut part = part.expect("an output");
                            part.fill(0.0);
                            for (i, n) in item.samples.clone().enumerate() {
                                for row in item.rows.clone() {
                                    if poisoned == Some((n, row)) {
                                        if in_sums {
                                            partials.weight[0] = f64::NAN;
                                        } else {
                                            part[[i, 0, row, 0]] = f64::INFINITY;
                                        }
                                    }
                                }
                            }
                        },
                    );
                    assert_eq!(
                        finite,
                        poisoned.is_none(),
                        "{w:?} on {threads}, {poisoned:?}"
                    );
                }
            }
        }
    }

    /// The input gradients of banded samples are their bands' sums, and
    /// every row reaches the partial sums once.
    #[test]
    fn bands_add_up_to_their_samples() {
        for (batch, height, granule, threads) in cases() {
            let schedule = Schedule::for_threads(summing(batch, height, granule), threads, 0);
            let (mut lanes, mut parts) = memory(64);
            let mut out = Array4::<f64>::from_elem((batch, 2, 1, 1), -1.0);
            let memory = Memory {
                lanes: &mut lanes,
                parts: &mut parts,
                finite: None,
            };
            let sums = schedule.run_summing(
                memory,
                Some(out.view_mut()),
                (1, 1),
                |item, part, _, partials| {
                    let mut part = part.expect("an output");
                    assert_eq!(part.dim().0, item.samples.len());
                    let rows: usize = item.rows.clone().map(|r| r + 1).sum();
                    for ((i, c, _, _), v) in part.indexed_iter_mut() {
                        *v = ((item.samples.start + i) * 1000 * usize::from(c == 1) + rows) as f64;
                    }
                    partials.weight[0] += (item.samples.len() * item.rows.len()) as f64;
                    partials.bias[0] += 1.0;
                },
            );
            assert_eq!(sums.weight[0], (batch * height) as f64);
            let full = (height * (height + 1) / 2) as f64;
            for ((n, c, _, _), &v) in out.indexed_iter() {
                let bands = schedule_bands(&schedule, n) as f64;
                let expected = full
                    + if c == 1 {
                        bands.max(1.0) * (n * 1000) as f64
                    } else {
                        0.0
                    };
                assert_eq!(
                    v, expected,
                    "sample {n} of {batch}x{height}/{granule} on {threads}"
                );
            }
        }
    }

    /// Bands that hold only the rows they reach: each band's output is
    /// those rows, and a sample's input gradient is the sum, row by row,
    /// of the bands that reach the row.
    #[test]
    fn reached_row_bands_add_up_to_their_samples() {
        for (batch, height, granule, threads) in cases() {
            for (stride, extent, pad_top) in [(1, 3, 1), (1, 3, 0), (2, 3, 1), (1, 5, 2), (2, 1, 0)]
            {
                let reach = super::Reach {
                    stride,
                    extent,
                    pad_top,
                    in_h: (height * stride + extent).saturating_sub(2 * pad_top + stride),
                };
                let work = Work {
                    reach: Some(reach),
                    banded: 1,
                    ..summing(batch, height, granule)
                }
                .with_reached_rows_only();
                let schedule = Schedule::for_threads(work, threads, 0);
                let (mut lanes, mut parts) = memory(64);
                let in_h = reach.in_h;
                let mut out = Array4::<f64>::from_elem((batch, 2, in_h, 1), -1.0);
                let memory = Memory {
                    lanes: &mut lanes,
                    parts: &mut parts,
                    finite: None,
                };
                // An item's contribution to row `r` of sample `n`, channel `c`.
                let value = |n: usize, c: usize, r: usize, rows: &std::ops::Range<usize>| {
                    (n * 1000 + c * 100 + r * 10 + rows.start + 1) as f64
                };
                schedule.run_summing(memory, Some(out.view_mut()), (1, 1), |item, part, _, _| {
                    let mut part = part.expect("an output");
                    let held = schedule.gradient_rows(item, in_h);
                    let expected_rows = if schedule.is_band(item) {
                        reach.input_rows(&item.rows)
                    } else {
                        0..in_h
                    };
                    assert_eq!(held, expected_rows);
                    assert_eq!(part.dim().2, held.len());
                    let reached = reach.input_rows(&item.rows);
                    for ((i, c, local, _), v) in part.indexed_iter_mut() {
                        let r = held.start + local;
                        let n = item.samples.start + i;
                        *v = if reached.contains(&r) {
                            value(n, c, r, &item.rows)
                        } else {
                            0.0
                        };
                    }
                });
                for ((n, c, r, _), &v) in out.indexed_iter() {
                    let expected: f64 = all_items(&schedule)
                        .iter()
                        .flatten()
                        .filter(|item| item.samples.contains(&n))
                        .filter(|item| reach.input_rows(&item.rows).contains(&r))
                        .map(|item| value(n, c, r, &item.rows))
                        .sum();
                    let case = format!("{batch}x{height}/{granule} on {threads}, {reach:?}");
                    assert_eq!(v, expected, "sample {n}, channel {c}, row {r}: {case}");
                }
            }
        }
    }

    /// A batch-1 pass over a large image whose bands hold the sample's
    /// input gradient whole gets one part (two bands would pass the
    /// parts' memory bound); with bands that hold only the rows they reach
    /// it gets parts as its overlaps allow. A pass whose input gradient
    /// outweighs its arithmetic's budget for sums keeps the floor of two.
    #[test]
    fn reached_row_bands_cut_large_samples_into_more_parts() {
        let reach = |in_h| super::Reach {
            stride: 1,
            extent: 3,
            pad_top: 1,
            in_h,
        };
        // 64 channels in and out, a 3x3 kernel, 512x512 and 56x56 pixels.
        let layer = |side: usize| Work {
            batch: 1,
            height: side,
            granule: 2,
            row_flops: 2 * 2 * side * 64 * 64 * 9,
            reduced: 64 * (64 * 9 + 1),
            banded: 64 * side * side,
            reach: Some(reach(side)),
            reached_rows_only: false,
            rate_share: 0,
        };
        let large = layer(512);
        assert_eq!(large.fixed_parts(MIN_LANE_FLOPS), 1);
        let parts = large.with_reached_rows_only().fixed_parts(MIN_LANE_FLOPS);
        // The budget: 38.7 GFLOP / 2048 less the 16.8 Mi elements of the
        // input gradient, over 37 Ki partials and 64 Ki overlap a part.
        assert_eq!(parts, 16);
        let small = layer(56).with_reached_rows_only();
        assert_eq!(small.fixed_parts(MIN_LANE_FLOPS), 2);
    }

    /// Memory for up to `count` lanes and parts.
    fn memory(count: usize) -> (Vec<LaneMemory<f64>>, Vec<PartMemory<f64>>) {
        let lanes = (0..count).map(|_| Default::default()).collect();
        let parts = (0..count).map(|_| Default::default()).collect();
        (lanes, parts)
    }

    /// The items (whole or band) that cover sample `n`.
    fn schedule_bands(schedule: &Schedule, n: usize) -> usize {
        all_items(schedule)
            .iter()
            .flatten()
            .filter(|item| item.samples.contains(&n))
            .count()
    }

    fn cases() -> impl Iterator<Item = (usize, usize, usize, usize)> {
        (0..6).flat_map(|batch| {
            [1, 3, 7].into_iter().flat_map(move |height| {
                [1, 2].into_iter().flat_map(move |granule| {
                    (1..=9).map(move |threads| (batch, height, granule, threads))
                })
            })
        })
    }

    /// A band's reach is the input rows from its first window's first row
    /// to its last window's last, counted one by one, so it holds every row
    /// a tap of the band meets.
    #[test]
    fn reach_spans_the_rows_the_windows_read() {
        for (stride, extent, pad_top, in_h) in (1..4).flat_map(|s| {
            (1..6).flat_map(move |e| (0..4).flat_map(move |p| (1..9).map(move |h| (s, e, p, h))))
        }) {
            let reach = super::Reach {
                stride,
                extent,
                pad_top,
                in_h,
            };
            let out_h = (in_h + 2 * pad_top).saturating_sub(extent) / stride + 1;
            for start in 0..out_h {
                for end in start + 1..=out_h {
                    let inside = |padded: usize| padded.checked_sub(pad_top).filter(|&r| r < in_h);
                    let spanned: Vec<usize> = (start * stride..(end - 1) * stride + extent)
                        .filter_map(inside)
                        .collect();
                    let got = reach.input_rows(&(start..end));
                    let case = format!("{stride} {extent} {pad_top} {in_h}: {start}..{end}");
                    match (spanned.first(), spanned.last()) {
                        (Some(&first), Some(&last)) => assert_eq!(got, first..last + 1, "{case}"),
                        _ => assert!(got.is_empty(), "{got:?} for {case}"),
                    }
                    let read = (start..end).flat_map(|r| (0..extent).map(move |i| r * stride + i));
                    assert!(
                        read.filter_map(inside).all(|row| got.contains(&row)),
                        "{case}"
                    );
                }
            }
        }
    }

    /// A pass with little arithmetic runs on fewer lanes.
    #[test]
    fn small_passes_wake_fewer_lanes() {
        let tiny = Work {
            row_flops: 1,
            ..work(4, 8, 1)
        };
        assert_eq!(Schedule::for_threads(tiny, 8, MIN_LANE_FLOPS).lanes(), 1);
        assert_eq!(
            Schedule::for_threads(work(4, 8, 1), 8, MIN_LANE_FLOPS).lanes(),
            8
        );
    }

    /// A pass bound by memory takes its rate share times the time of its
    /// FLOPs, and the least work a lane counts that time: it wakes lanes
    /// for fewer FLOPs than a pass bound by arithmetic.
    #[test]
    fn passes_bound_by_memory_wake_lanes_for_fewer_flops() {
        let spec = crate::Conv2dSpec::new(4, 4, (3, 3)).groups(4);
        let depthwise = crate::spec::Geometry::new(&spec, [1, 4, 8, 8]).unwrap();
        let share = super::forward_rate_share(&depthwise, 1);
        assert!(share > 1, "a depthwise layer is bound by memory");
        // Eight rows of an eighth of a lane's least work each: one lane's
        // worth by FLOPs, `share` lanes' worth by time.
        let pass = Work {
            row_flops: MIN_LANE_FLOPS / 8,
            ..work(1, 8, 1)
        };
        assert_eq!(Schedule::for_threads(pass, 8, MIN_LANE_FLOPS).lanes(), 1);
        let memory_bound = pass.bound_by_memory(&depthwise);
        let lanes = Schedule::for_threads(memory_bound, 8, MIN_LANE_FLOPS).lanes();
        assert_eq!(lanes, share.min(8));
    }

    /// A weight gradient computed alone cuts a large image at batch 1 into
    /// bands for every thread, where the backward pass with the input
    /// gradient keeps one part (each band would hold the sample's input
    /// gradient); the parts do not depend on the thread count.
    #[test]
    fn a_weight_gradient_alone_cuts_one_large_image_into_bands() {
        let spec = crate::Conv2dSpec::new(16, 16, (3, 3)).padding((1, 1));
        let g = crate::spec::Geometry::new(&spec, [1, 16, 1024, 1024]).unwrap();
        let whole = Schedule::for_threads(Work::backward(&g, 1), 8, MIN_LANE_FLOPS);
        assert_eq!((whole.parts(), whole.lanes()), (1, 1));
        let alone =
            |threads| Schedule::for_threads(Work::weight_gradient(&g, 1), threads, MIN_LANE_FLOPS);
        assert_eq!(alone(8).lanes(), 8);
        assert!(alone(8).parts() >= 8);
        assert_eq!(alone(2).parts(), alone(8).parts());
        assert_eq!(all_items(&alone(2)).concat(), all_items(&alone(8)).concat());
    }

    /// A measured handoff dearer than the least lane work caps the lanes
    /// and their GEMM threads to one thread's handoff of arithmetic each,
    /// a pass bound by memory to a share of it, leaves a summing pass's
    /// parts as they are, and leaves a backward call's passes alone.
    #[test]
    fn a_dear_handoff_wakes_fewer_threads() {
        // 32 rows of one lane's least work: 32 MIN_LANE_FLOPS in all.
        let pass = work(4, 8, 1);
        let handoff = 8 * MIN_LANE_FLOPS;
        let capped = Schedule::handing_off(pass, 8, MIN_LANE_FLOPS, handoff);
        assert_eq!((capped.lanes(), capped.gemm_threads()), (4, 1));
        let one_lane = Work { batch: 1, ..pass };
        let capped = Schedule::handing_off(one_lane, 8, MIN_LANE_FLOPS, handoff);
        assert_eq!((capped.lanes(), capped.gemm_threads()), (1, 1));
        let spec = crate::Conv2dSpec::new(4, 4, (3, 3)).groups(4);
        let depthwise = crate::spec::Geometry::new(&spec, [1, 4, 8, 8]).unwrap();
        let memory_bound =
            Schedule::handing_off(pass.bound_by_memory(&depthwise), 8, MIN_LANE_FLOPS, handoff);
        assert_eq!(memory_bound.lanes(), 8);
        let summing = summing(4, 8, 1).bound_by_memory(&depthwise);
        let backward = summing.of_backward();
        let never = Schedule::handing_off(backward, 2, MIN_LANE_FLOPS, 64 * handoff);
        assert_eq!(never.lanes(), 2);
        let cheap = Schedule::handing_off(summing, 2, MIN_LANE_FLOPS, 0);
        let dear = Schedule::handing_off(summing, 2, MIN_LANE_FLOPS, 64 * handoff);
        assert_eq!(cheap.parts(), dear.parts());
        assert_eq!((cheap.lanes(), dear.lanes()), (2, 1));
        assert_eq!(all_items(&dear).concat(), all_items(&cheap).concat());
    }
}
