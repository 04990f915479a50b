//! The scheduler every fast kernel runs under: it cuts a call into work
//! items, runs them on parallel lanes, each lane with its own memory and
//! its own partial sums of the weight and bias gradients, and adds the
//! partials up once, in lane order.
//!
//! A work item is a contiguous range of samples, with the part of the
//! output (the forward pass's `y`, the backward pass's `dx`) that those
//! samples own. Kernels receive items and never split the batch themselves,
//! so how a call is cut (by sample, by band of output rows, by block of
//! output channels) is decided here alone.
//!
//! There is one level of parallelism: when the batch has fewer samples than
//! the pool has threads, the spare threads go to each item's GEMMs
//! ([`WorkItem::gemm_threads`]) instead of lanes, so the two are never
//! nested.

use crate::element::Element;
use crate::workspace::{LaneMemory, Scratch, scratch};
use ndarray::{ArrayView1, ArrayViewMut4, Axis};
use rayon::prelude::*;
use std::ops::Range;

/// One lane's share of a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WorkItem {
    /// The samples of the batch this item computes, in order.
    pub samples: Range<usize>,
    /// Threads each of the item's GEMMs may use.
    pub gemm_threads: usize,
}

/// How a call is cut into work items for a pool of threads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Schedule {
    batch: usize,
    lanes: usize,
    per_lane: usize,
    gemm_threads: usize,
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

impl Schedule {
    /// The schedule of a batch on the current rayon pool.
    pub(crate) fn new(batch: usize) -> Self {
        Self::for_threads(batch, rayon::current_num_threads())
    }

    /// The schedule of a batch on `threads` threads: one contiguous block
    /// of samples a lane, as many lanes as threads at most, the last block
    /// possibly shorter.
    pub(crate) fn for_threads(batch: usize, threads: usize) -> Self {
        let threads = threads.max(1);
        let per_lane = batch.div_ceil(threads.min(batch).max(1)).max(1);
        let lanes = batch.div_ceil(per_lane);
        Schedule {
            batch,
            lanes,
            per_lane,
            gemm_threads: (threads / lanes.max(1)).max(1),
        }
    }

    /// How many lanes run (none for an empty batch).
    pub(crate) fn lanes(&self) -> usize {
        self.lanes
    }

    /// The work items, lane by lane.
    #[cfg(test)]
    fn items(&self) -> impl Iterator<Item = WorkItem> + use<> {
        let schedule = *self;
        (0..self.lanes).map(move |lane| schedule.item(lane))
    }

    /// The work item of lane `lane`.
    fn item(&self, lane: usize) -> WorkItem {
        WorkItem {
            samples: lane * self.per_lane..((lane + 1) * self.per_lane).min(self.batch),
            gemm_threads: self.gemm_threads,
        }
    }

    /// Runs `work(item, out[item.samples], scratch)` for every item, in
    /// parallel, each lane with its own scratch buffers. `out` is the
    /// batch's output (`y`, or `dx`); `lanes` holds [`Self::lanes`] lanes.
    pub(crate) fn run<T: Element>(
        &self,
        lanes: &mut [LaneMemory<T>],
        out: ArrayViewMut4<'_, T>,
        work: impl Fn(&WorkItem, ArrayViewMut4<'_, T>, &mut Scratch<T>) + Sync,
    ) {
        if self.lanes == 0 {
            return;
        }
        let mut out = out;
        lanes[..self.lanes]
            .par_iter_mut()
            .zip(
                out.axis_chunks_iter_mut(Axis(0), self.per_lane)
                    .into_par_iter(),
            )
            .enumerate()
            .for_each(|(index, (lane, out))| work(&self.item(index), out, &mut lane.scratch));
    }

    /// [`Self::run`] for a backward pass: each lane also gets [`Partials`]
    /// of `weight_len` and `bias_len` zeros to add its items' gradients
    /// into; their sums come back. `out` may be absent (a pass that
    /// computes no input gradient).
    pub(crate) fn run_summing<'m, T: Element>(
        &self,
        lanes: &'m mut [LaneMemory<T>],
        out: Option<ArrayViewMut4<'_, T>>,
        (weight_len, bias_len): (usize, usize),
        work: impl Fn(&WorkItem, Option<ArrayViewMut4<'_, T>>, &mut Scratch<T>, Partials<'_, T>) + Sync,
    ) -> Sums<'m, T> {
        let lanes = &mut lanes[..self.lanes.max(1)];
        let len = weight_len + bias_len;
        let run_lane = |index: usize, lane: &mut LaneMemory<T>, out| {
            let partial = scratch(&mut lane.partial, len);
            partial.fill(T::zero());
            let (weight, bias) = partial.split_at_mut(weight_len);
            work(
                &self.item(index),
                out,
                &mut lane.scratch,
                Partials { weight, bias },
            );
        };
        match out {
            Some(mut out) if self.lanes > 0 => lanes
                .par_iter_mut()
                .zip(
                    out.axis_chunks_iter_mut(Axis(0), self.per_lane)
                        .into_par_iter(),
                )
                .enumerate()
                .for_each(|(index, (lane, out))| run_lane(index, lane, Some(out))),
            _ if self.lanes > 0 => lanes
                .par_iter_mut()
                .enumerate()
                .for_each(|(index, lane)| run_lane(index, lane, None)),
            // An empty batch: the sums are zeros.
            _ => scratch(&mut lanes[0].partial, len).fill(T::zero()),
        }
        let (first, rest) = lanes.split_first_mut().expect("at least one lane");
        for lane in rest.iter() {
            for (sum, &part) in first.partial[..len].iter_mut().zip(&lane.partial[..len]) {
                *sum += part;
            }
        }
        let first: &'m LaneMemory<T> = first;
        let (weight, bias) = first.partial[..len].split_at(weight_len);
        Sums {
            weight,
            bias: ArrayView1::from(bias),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Schedule;

    /// Every sample is in exactly one item, in order; there are as many
    /// lanes as threads at most, and as many as the batch allows.
    #[test]
    fn items_cover_the_batch_once() {
        for batch in 0..40 {
            for threads in 1..=9 {
                let schedule = Schedule::for_threads(batch, threads);
                let items: Vec<_> = schedule.items().collect();
                assert_eq!(items.len(), schedule.lanes());
                assert!(schedule.lanes() <= threads);
                assert_eq!(schedule.lanes() == 0, batch == 0);
                let covered: Vec<usize> = items.iter().flat_map(|i| i.samples.clone()).collect();
                assert_eq!(
                    covered,
                    (0..batch).collect::<Vec<_>>(),
                    "{batch} on {threads}"
                );
                assert!(items.iter().all(|i| !i.samples.is_empty()));
                // Spare threads go to the GEMMs, never beyond the pool.
                for item in &items {
                    assert!(item.gemm_threads * schedule.lanes() <= threads.max(1));
                }
            }
        }
    }
}
