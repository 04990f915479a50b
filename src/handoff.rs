//! What handing half a pass to another thread of the pool costs on this
//! machine, in the arithmetic one thread does in that time: measured once
//! per process, the first time a pass could run on two lanes.
//!
//! Waking a sleeping rayon thread and collecting its result takes from a
//! few microseconds on bare metal to over a hundred on some virtual machines,
//! where an idle virtual CPU has to be scheduled back in by the host
//! (BENCHMARKS.md, "Lane handoff"). No constant holds on both: a second
//! lane pays off only on a pass of at least twice that time, so the
//! planner gives a lane no less than this much work.
//!
//! The probe times a loop of multiply-adds on one thread, then the same
//! loop cut in two halves run in parallel as the lanes are ([`join`]), in
//! turns, the pool's threads left lingering after each split as after a
//! pass, so that the next finds them awake as back-to-back calls do; the
//! handoff is the joined median less half the serial one, and the loop's
//! own rate turns it into FLOPs. The loop's rate sits among those of the forward passes
//! bound by arithmetic (from a third of it to twice it); passes bound by
//! memory weigh the handoff by their own, lower rate
//! ([`crate::lanes::Work::rate_share`]).

use crate::algo::strided::simd::with_runtime_simd;
use crate::element::Element;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Runs `a` and `b` in parallel, as `rayon::join` does, and returns when
/// both are done. Inside the pool that is `rayon::join`. A caller outside
/// the pool (the usual caller: an application's main thread) runs `a`
/// itself and hands only `b` to the pool: `rayon::join` would hand both
/// and put the caller to sleep until they are done, and waking it again
/// costs tens of microseconds on a virtual machine, where a pass of a small
/// layer takes a hundred or so (BENCHMARKS.md, "Caller's lane"). The
/// caller sleeps only if `b` is still running when `a` is done, and then
/// only after waiting for it awake for as long as `a` took
/// ([`await_awake`]): lanes are balanced, so `b` is most often a few
/// microseconds from its end, and a sleeping caller took 12–21 µs more to
/// wake (BENCHMARKS.md, "Caller's wait"). Handing `b` over allocates its
/// task, a few words, as a call from outside the pool always did in
/// rayon's queue.
pub(crate) fn join(a: impl FnOnce() + Send, b: impl FnOnce() + Send) {
    if rayon::current_thread_index().is_some() {
        rayon::join(a, b);
        return;
    }
    let b_done = AtomicBool::new(false);
    rayon::in_place_scope(|scope| {
        scope.spawn(|_| {
            b();
            b_done.store(true, Ordering::Release);
        });
        let start = Instant::now();
        a();
        await_awake(&b_done, start.elapsed());
    });
}

/// Checks of the caller's wait between two looks at the clock, each
/// followed by a yield of its CPU: the clock and the system call are read
/// seldom, and a lane the operating system put on the caller's own CPU
/// still gets to run.
const SPINS_PER_YIELD: u32 = 256;

/// Waits without sleeping until `done` is set or `budget` has passed,
/// yielding the CPU every [`SPINS_PER_YIELD`] checks in case the other
/// lane runs on this one.
fn await_awake(done: &AtomicBool, budget: Duration) {
    let start = Instant::now();
    let mut spins = 0;
    while !done.load(Ordering::Acquire) {
        spins += 1;
        if spins % SPINS_PER_YIELD == 0 {
            if start.elapsed() >= budget {
                return;
            }
            std::thread::yield_now();
        }
        std::hint::spin_loop();
    }
}

/// Rounds of each of the two timings in a burst; the median of each counts.
const ROUNDS: usize = 11;

/// Iterations of the probe loop on one thread: about 50 µs at 55 GFLOP/s,
/// halves as long as those of the small passes whose lanes the handoff
/// decides.
const PROBE_ITERATIONS: usize = 10_000;

/// f32 multiply-adds of the probe loop per iteration: 8 AVX-512 registers
/// of independent sums, or 16 AVX2 ones.
const PROBE_LANES: usize = 128;

/// Not measured yet.
const UNMEASURED: usize = usize::MAX;
/// Being measured, by one thread; the others go on without it.
const MEASURING: usize = usize::MAX - 1;

/// The measured handoff in f32 FLOPs, or one of the two states above.
static HANDOFF_F32_FLOPS: AtomicUsize = AtomicUsize::new(UNMEASURED);

/// The least arithmetic in `T` worth a second lane on the current rayon
/// pool: the handoff, measured on the first call from a pool of two
/// threads or more. Zero on a pool of one thread, and while another thread
/// measures (which never waits on this one, so a call made inside a
/// measuring join cannot deadlock).
pub(crate) fn lane_flops<T>() -> usize {
    if rayon::current_num_threads() < 2 {
        return 0;
    }
    let f32_flops = match HANDOFF_F32_FLOPS.compare_exchange(
        UNMEASURED,
        MEASURING,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => {
            let measured = measure().min(MEASURING - 1);
            HANDOFF_F32_FLOPS.store(measured, Ordering::Release);
            measured
        }
        Err(MEASURING) => return 0,
        Err(measured) => measured,
    };
    // The kernels do half as many f64 FLOPs a second as f32 ones.
    f32_flops * std::mem::size_of::<f32>() / std::mem::size_of::<T>()
}

/// The handoff in f32 FLOPs of the probe loop, measured now: the lesser
/// of two bursts of rounds, so that a moment when the machine is busy
/// elsewhere does not stand for the whole process, and at most
/// [`MAX_HANDOFF`].
fn measure() -> usize {
    let mut sums = [1.0f32; PROBE_LANES];
    let (first, rate) = burst(&mut sums);
    let (second, _) = burst(&mut sums);
    std::hint::black_box(sums);
    let handoff = first.min(second).min(MAX_HANDOFF);
    (handoff.as_secs_f64() * rate) as usize
}

/// The longest a handoff is taken to be: on a virtual machine that wakes
/// threads slowly it measured 20–170 µs outside busy moments
/// (BENCHMARKS.md, "Lane handoff"); a longer one is the machine busy with
/// other work, which passes.
const MAX_HANDOFF: Duration = Duration::from_micros(200);

/// One burst of [`ROUNDS`] rounds of the probe on one thread and cut in
/// halves by [`join`], in turns: the handoff (the median joined
/// round less half the median serial one) and the probe's FLOPs a second.
fn burst(sums: &mut [f32; PROBE_LANES]) -> (Duration, f64) {
    let mut serial = Vec::with_capacity(ROUNDS);
    let mut joined = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        serial.push(timed(|| probe(PROBE_ITERATIONS, sums)));
        joined.push(timed(|| {
            let mut other = *sums;
            join(
                || probe(PROBE_ITERATIONS / 2, sums),
                || probe(PROBE_ITERATIONS / 2, &mut other),
            );
        }));
        // As a pass on several lanes does: the next round finds the
        // pool's threads awake, as back-to-back calls do.
        crate::linger::keep_awake();
    }
    let (serial, joined) = (median(serial), median(joined));
    let flops = (PROBE_ITERATIONS * PROBE_LANES * 2) as f64;
    let rate = flops / serial.as_secs_f64().max(f64::MIN_POSITIVE);
    (joined.saturating_sub(serial / 2), rate)
}

/// How long `f` takes.
fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// The middle of `times`.
fn median(mut times: Vec<Duration>) -> Duration {
    times.sort_unstable();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

/// `iterations` rounds of one multiply-add on each of `sums`.
fn probe(iterations: usize, sums: &mut [f32; PROBE_LANES]) {
    probe_in::<f32>(iterations, sums);
}

/// [`probe_body`] in the best SIMD build the CPU runs.
fn probe_in<T: Element>(iterations: usize, sums: &mut [T; PROBE_LANES]) {
    with_runtime_simd!(
        probe_avx512, probe_avx2, probe_body::<T, true>, probe_body::<T, false>,
        iterations: usize, sums: &mut [T; PROBE_LANES],
    );
}

#[inline(always)]
fn probe_body<T: Element, const FUSED: bool>(iterations: usize, sums: &mut [T; PROBE_LANES]) {
    let (scale, shift) = (T::from_f64(0.999_999), T::from_f64(1e-7));
    for _ in 0..iterations {
        for sum in sums.iter_mut() {
            *sum = if FUSED {
                sum.mul_add(scale, shift)
            } else {
                *sum * scale + shift
            };
        }
        std::hint::black_box(&mut *sums);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The caller's wait ends once the other half sets its flag, well
    /// before a budget it could not have waited out, and without the flag
    /// only after the whole budget.
    #[test]
    fn the_callers_wait_ends_at_the_flag_or_the_budget() {
        let done = AtomicBool::new(false);
        let long = Duration::from_secs(600);
        let start = Instant::now();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(5));
                done.store(true, Ordering::Release);
            });
            await_awake(&done, long);
            assert!(done.load(Ordering::Acquire), "returned before the flag");
        });
        assert!(start.elapsed() < long);

        let never = AtomicBool::new(false);
        let budget = Duration::from_millis(5);
        let start = Instant::now();
        await_awake(&never, budget);
        assert!(start.elapsed() >= budget);
    }

    /// Outside a pool the caller runs the first half itself and a pool
    /// thread the second; inside one, both run on the pool's threads. Each
    /// half runs once either way.
    #[test]
    fn join_keeps_the_first_half_on_an_outside_caller() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let halves = |outside: bool| {
            let (mut first, mut second) = (None, None);
            let mut run = || {
                join(
                    || first = Some(rayon::current_thread_index()),
                    || second = Some(rayon::current_thread_index()),
                )
            };
            if outside {
                run()
            } else {
                pool.install(run)
            }
            (first.expect("ran"), second.expect("ran"))
        };
        let (first, second) = halves(true);
        assert_eq!(first, None, "the caller's half runs on the caller");
        assert!(second.is_some(), "the other half runs in the pool");
        let (first, second) = halves(false);
        assert!(first.is_some() && second.is_some());
    }

    /// A pool of one thread has no lane to hand work to.
    #[test]
    fn one_thread_wakes_nothing() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        assert_eq!(pool.install(lane_flops::<f32>), 0);
    }

    /// The probe does the arithmetic it counts: its sums move by exactly
    /// the multiply-adds of every iteration.
    #[test]
    fn probe_does_its_iterations() {
        let mut sums = [1.0f32; PROBE_LANES];
        probe(3, &mut sums);
        let mut expected = 1.0f32;
        for _ in 0..3 {
            expected = expected.mul_add(0.999_999, 1e-7);
        }
        assert!(
            sums.iter().all(|&s| (s - expected).abs() <= 1e-6),
            "{sums:?}"
        );
    }

    /// An f64 lane needs half the FLOPs of an f32 one, and the value is
    /// measured once: two calls agree.
    #[test]
    fn measured_once_and_scaled_by_element() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        // Another test's call may be measuring: wait for its value.
        while HANDOFF_F32_FLOPS.load(Ordering::Acquire) >= MEASURING {
            pool.install(lane_flops::<f32>);
            std::thread::yield_now();
        }
        let (f32_flops, again, f64_flops) = pool.install(|| {
            (
                lane_flops::<f32>(),
                lane_flops::<f32>(),
                lane_flops::<f64>(),
            )
        });
        assert_eq!(f32_flops, again);
        assert_eq!(f64_flops, f32_flops / 2);
    }
}
