//! Keeps the rayon pool's threads awake for a moment after a parallel
//! pass, so that the next call finds them running where they ran.
//!
//! A rayon thread with nothing to do spins for a few microseconds and then
//! sleeps. Woken by the next call, it is placed by the operating system
//! wherever the scheduler finds room first; on a virtual machine, whose
//! idle virtual CPUs the host deschedules and the guest then counts as
//! busy, that is the caller's own CPU, and two lanes take longer than one
//! (BENCHMARKS.md, "Lingering threads"). OpenMP runtimes keep their
//! threads spinning for a while after a parallel region for the same
//! reason (`OMP_WAIT_POLICY`, `KMP_BLOCKTIME`).
//!
//! After a pass that ran on several threads, every thread of the pool runs
//! one lingering task ([`rayon::spawn_broadcast`]): it runs whatever work
//! the pool is given, and otherwise yields its CPU to other runnable
//! threads, until it has found nothing to do for [`linger`]'s duration.
//! Nothing waits on it, and it keeps no thread from other work of the pool
//! or of the machine. A rayon thread waiting for its half of a `join` runs
//! other tasks meanwhile, a lingering one among them: a thread inside a
//! call of this crate (the caller of `ThreadPool::install`, say) ends such
//! a task at once, so no call waits on one; a thread waiting in the
//! caller's own `join` returns at most [`linger`] late, once.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a thread keeps looking for work after its last: long enough to
/// span the gap between two calls of a network's layers, short enough to
/// burn little time after the last (BENCHMARKS.md, "Lingering threads").
pub const DEFAULT_LINGER: Duration = Duration::from_micros(300);

/// The lingering time in nanoseconds.
static LINGER_NANOS: AtomicU64 = AtomicU64::new(DEFAULT_LINGER.as_nanos() as u64);

/// Lingering tasks not yet ended, in any pool: while one pool's threads
/// linger, a pass in another pool sets none lingering (a process seldom
/// runs this crate's calls in two pools at once).
static LINGERING: AtomicUsize = AtomicUsize::new(0);

/// Sets how long the rayon pool's threads keep looking for work after a
/// parallel pass of this crate, for the whole process ([`DEFAULT_LINGER`]
/// unless set); [`Duration::ZERO`] lets them sleep at once, as rayon's own
/// threads do, to leave every CPU cycle to other work between calls.
///
/// ```
/// use std::time::Duration;
/// gemmconv::set_linger(Duration::ZERO);
/// assert_eq!(gemmconv::linger(), Duration::ZERO);
/// gemmconv::set_linger(gemmconv::DEFAULT_LINGER);
/// ```
pub fn set_linger(duration: Duration) {
    let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    LINGER_NANOS.store(nanos, Ordering::Relaxed);
}

/// How long the pool's threads keep looking for work after a parallel
/// pass ([`set_linger`]).
///
/// ```
/// assert_eq!(gemmconv::linger(), gemmconv::DEFAULT_LINGER);
/// ```
pub fn linger() -> Duration {
    Duration::from_nanos(LINGER_NANOS.load(Ordering::Relaxed))
}

/// Has every thread of the current pool linger, unless some already do or
/// lingering is off.
pub(crate) fn keep_awake() {
    let duration = linger();
    if duration.is_zero() || LINGERING.load(Ordering::Relaxed) > 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    if threads < 2
        || LINGERING
            .compare_exchange(0, threads, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    rayon::spawn_broadcast(move |_| {
        linger_for(duration);
        LINGERING.fetch_sub(1, Ordering::AcqRel);
    });
}

thread_local! {
    /// How many calls of this crate the thread is inside.
    static CALLS: Cell<usize> = const { Cell::new(0) };
}

/// Marks the current thread as inside a call of this crate while it lives:
/// a lingering task started on it meanwhile ends at once.
pub(crate) struct InsideCall(());

impl InsideCall {
    /// Marks the current thread until the guard drops.
    pub(crate) fn enter() -> Self {
        CALLS.with(|calls| calls.set(calls.get() + 1));
        InsideCall(())
    }
}

impl Drop for InsideCall {
    fn drop(&mut self) {
        CALLS.with(|calls| calls.set(calls.get().saturating_sub(1)));
    }
}

/// Runs the pool's work as it comes until none has come for `duration`;
/// returns at once on a thread inside a call of this crate.
fn linger_for(duration: Duration) {
    if CALLS.with(Cell::get) > 0 {
        return;
    }
    let mut idle_since = Instant::now();
    while idle_since.elapsed() < duration {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => idle_since = Instant::now(),
            _ => std::thread::yield_now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lingering thread runs work given to its pool meanwhile, and stops
    /// once none has come for the duration.
    #[test]
    fn lingering_runs_the_pools_work_and_stops() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let took = pool.install(move || {
            // The pool's one thread runs this, so only lingering can run
            // the spawned task before it returns.
            rayon::spawn(move || flag.store(true, Ordering::Release));
            let start = Instant::now();
            linger_for(Duration::from_millis(2));
            start.elapsed()
        });
        assert!(ran.load(Ordering::Acquire));
        assert!(took >= Duration::from_millis(2));
    }

    /// A thread inside a call does not linger.
    #[test]
    fn a_thread_inside_a_call_lingers_not() {
        let _inside = InsideCall::enter();
        let start = Instant::now();
        linger_for(Duration::from_secs(5));
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
