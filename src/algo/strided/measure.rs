//! [`Kernel::Measure`]: the kernel of each pass chosen by timing every
//! candidate on this machine, as FFTW's measure mode and cuDNN's benchmark
//! mode do, rather than by the kernel table's thresholds.
//!
//! The candidates run on operands of the geometry's shapes filled with
//! pseudo-random values, in the caller's workspace and thread pool, so what
//! is timed is what will run. The choice is kept for the process, keyed by
//! everything that changes the timings: geometry, element type, thread
//! count, and the workspace's cap and least lane work.

use super::choice::{InputGradient, Kernel};
use super::{
    Choice, backward_with, channel_vector_gradients_apply, channel_vectors_apply, direct_suits,
    direct_tiles_suit, forward_with, shifted_applies, winograd_4x4_accurate, winograd_applies,
};
use crate::element::Element;
use crate::gradients::GradientsMut;
use crate::operands::{Backward, Forward};
use crate::output::scratch_zeros;
use crate::spec::Geometry;
use crate::workspace::Workspace;
use ndarray::{Array1, Array4, Dim};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What a measured choice depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    geometry: Geometry,
    element: &'static str,
    threads: usize,
    cap_bytes: usize,
    min_lane_flops: usize,
}

/// The choices measured so far in this process.
fn choices() -> &'static Mutex<HashMap<Key, Choice>> {
    static CHOICES: OnceLock<Mutex<HashMap<Key, Choice>>> = OnceLock::new();
    CHOICES.get_or_init(Default::default)
}

/// The measured choice for `g`, timed now unless this process has timed
/// it already.
pub(super) fn choice<T: Element>(g: &Geometry, ws: &mut Workspace<T>) -> Choice {
    let key = Key {
        geometry: *g,
        element: T::NAME,
        threads: rayon::current_num_threads(),
        cap_bytes: ws.column_cap_bytes(),
        min_lane_flops: ws.min_lane_flops(),
    };
    let cached = choices().lock().map(|c| c.get(&key).copied());
    if let Ok(Some(choice)) = cached {
        return choice;
    }
    let choice = time_candidates(g, ws);
    if let Ok(mut c) = choices().lock() {
        c.insert(key, choice);
    }
    choice
}

/// Whether the direct loops are worth timing: they run every multiply-add
/// without a GEMM, so only layers with few of them per output pixel, or few
/// output channels, can gain from them.
fn direct_worth_timing(g: &Geometry) -> bool {
    direct_suits(g) || direct_tiles_suit(g) || g.in_channels_per_group() * g.kh * g.kw <= 64
}

/// What a candidate runs, and on which passes it is timed.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    choice: Choice,
    forward: bool,
    backward: bool,
}

/// The candidates of a pass: the kernels that compute `g`, and for the
/// backward pass the column matrix's two input-gradient methods. The
/// direct kernel is timed where its loops are worth it or where it runs
/// its tiles of output channels in vectors; where only its backward pass
/// runs them (grouped layers), that pass alone.
fn candidates(g: &Geometry) -> Vec<Candidate> {
    let both = |kernel, by_col2im| Candidate {
        choice: Choice {
            forward: kernel,
            backward: kernel,
            by_col2im,
        },
        forward: by_col2im,
        backward: true,
    };
    let mut candidates = vec![both(Kernel::Gemm, true)];
    if direct_worth_timing(g) || channel_vectors_apply(g) {
        candidates.push(both(Kernel::Direct, true));
    } else if channel_vector_gradients_apply(g) {
        candidates.push(Candidate {
            forward: false,
            ..both(Kernel::Direct, true)
        });
    }
    if shifted_applies(g) {
        candidates.push(both(Kernel::Shifted, true));
    }
    if winograd_applies(g) {
        candidates.push(both(Kernel::Winograd, true));
        if winograd_4x4_accurate(g) {
            candidates.push(both(Kernel::Winograd4x4, true));
        }
    }
    candidates.push(both(Kernel::Gemm, false));
    candidates
}

/// A candidate slower than this many times the fastest so far on its
/// first run is not run again.
const HOPELESS: u32 = 3;

/// Runs `pass` once, and then up to twice more while it stays within
/// [`HOPELESS`] times `best`; returns its fastest run.
fn time(mut pass: impl FnMut(), best: Duration) -> Duration {
    let mut fastest = Duration::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        pass();
        fastest = fastest.min(start.elapsed());
        if fastest > best.saturating_mul(HOPELESS) {
            break;
        }
    }
    fastest
}

/// Operands of `shape` filled with pseudo-random values in `[-1, 1)`.
fn operand<T: Element>(shape: [usize; 4], seed: u64) -> Array4<T> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut operand = scratch_zeros(Dim(shape));
    operand.iter_mut().for_each(|v| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *v = T::from_f64((state >> 11) as f64 / (1u64 << 52) as f64 - 1.0);
    });
    operand
}

/// Times every candidate on each pass; the fastest of each wins.
fn time_candidates<T: Element>(g: &Geometry, ws: &mut Workspace<T>) -> Choice {
    let _inside = crate::linger::InsideCall::enter();
    let x = operand::<T>(g.input_shape(), 1);
    let w = operand::<T>(g.weight_shape(), 2);
    let dy = operand::<T>(g.output_shape(), 3);
    let bias: Array1<T> = scratch_zeros(Dim([g.out_channels]));
    let mut y: Array4<T> = scratch_zeros(Dim(g.output_shape()));
    let mut dx: Array4<T> = scratch_zeros(Dim(g.input_shape()));
    let mut dw: Array4<T> = scratch_zeros(Dim(g.weight_shape()));
    let mut db: Array1<T> = scratch_zeros(Dim([g.out_channels]));
    let candidates = candidates(g);
    let mut best = (Duration::MAX, Duration::MAX);
    let mut chosen = Choice::estimate(Kernel::Auto, InputGradient::Auto, g);
    for &Candidate {
        choice: candidate,
        forward: timed_forward,
        backward: timed_backward,
    } in &candidates
    {
        if timed_forward {
            let forward = Forward {
                x: x.view(),
                w: w.view(),
                bias: Some(bias.view()),
                g,
            };
            let took = time(
                || forward_with(candidate, forward, y.view_mut(), ws),
                best.0,
            );
            if took < best.0 {
                (best.0, chosen.forward) = (took, candidate.forward);
            }
        }
        if !timed_backward {
            continue;
        }
        let backward = Backward {
            x: x.view(),
            w: w.view(),
            dy: dy.view(),
            g,
        };
        let took = time(
            || {
                let grads = GradientsMut {
                    dx: dx.view_mut(),
                    dw: dw.view_mut(),
                    db: db.view_mut(),
                };
                backward_with(candidate, backward, grads.into(), ws)
            },
            best.1,
        );
        if took < best.1 {
            best.1 = took;
            (chosen.backward, chosen.by_col2im) = (candidate.backward, candidate.by_col2im);
        }
    }
    chosen
}
