//! `%timeit`-style timing: warm up, then several runs of a fixed number of
//! loops each, reported as the mean and standard deviation of the per-loop
//! time across runs; each call is timed too, for the median of single
//! calls that `--save` writes and the report prints, the statistic
//! `benches/pytorch.py` takes of PyTorch and onnxruntime.

use std::time::{Duration, Instant};

/// Per-loop times of each run, and each call's time, in seconds.
pub struct Timing {
    pub per_loop: Vec<f64>,
    pub loops: usize,
    pub per_call: Vec<f64>,
}

impl Timing {
    pub fn mean(&self) -> f64 {
        self.per_loop.iter().sum::<f64>() / self.per_loop.len() as f64
    }

    pub fn median(&self) -> f64 {
        median_of(&self.per_loop)
    }

    /// The median of the single calls' times (of the runs' per-loop times
    /// where the calls were not timed one by one).
    pub fn call_median(&self) -> f64 {
        if self.per_call.is_empty() {
            self.median()
        } else {
            median_of(&self.per_call)
        }
    }

    pub fn std(&self) -> f64 {
        let mean = self.mean();
        let var = self
            .per_loop
            .iter()
            .map(|t| (t - mean).powi(2))
            .sum::<f64>()
            / self.per_loop.len() as f64;
        var.sqrt()
    }
}

/// The middle value of `times` (the upper one of an even count).
fn median_of(times: &[f64]) -> f64 {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// Times `f` like IPython's `%timeit`: picks a loop count so one run takes
/// at least `run_target`, then does `runs` runs.
pub fn timeit(runs: usize, run_target: Duration, mut f: impl FnMut()) -> Timing {
    // Warm-up: caches, page faults, the thread pool, the workspace.
    let start = Instant::now();
    f();
    let once = start.elapsed().max(Duration::from_nanos(1));
    let loops = (run_target.as_secs_f64() / once.as_secs_f64()).clamp(1.0, 10_000.0) as usize;
    let mut per_call = Vec::with_capacity(runs * loops);
    let per_loop = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let mut call_start = start;
            for _ in 0..loops {
                f();
                let call_end = Instant::now();
                per_call.push((call_end - call_start).as_secs_f64());
                call_start = call_end;
            }
            start.elapsed().as_secs_f64() / loops as f64
        })
        .collect();
    Timing {
        per_loop,
        loops,
        per_call,
    }
}

/// A duration in the unit `%timeit` would pick.
pub fn format_seconds(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{seconds:.3} s")
    } else if seconds >= 1e-3 {
        format!("{:.3} ms", seconds * 1e3)
    } else {
        format!("{:.1} µs", seconds * 1e6)
    }
}

impl std::fmt::Display for Timing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ± {} per loop (mean ± std. dev. of {} runs, {} loops each; median call {})",
            format_seconds(self.mean()),
            format_seconds(self.std()),
            self.per_loop.len(),
            self.loops,
            format_seconds(self.call_median())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{Timing, timeit};
    use std::time::Duration;

    /// Every call of every run is timed, and the saved median is the
    /// single calls' rather than the runs' per-loop means.
    #[test]
    fn single_calls_are_timed_and_their_median_taken() {
        let mut calls = 0;
        let timing = timeit(3, Duration::from_micros(50), || {
            calls += 1;
            std::hint::black_box((0..200).sum::<u64>());
        });
        assert_eq!(timing.per_call.len(), 3 * timing.loops);
        assert_eq!(calls, 1 + 3 * timing.loops);
        let made = Timing {
            per_loop: vec![5.0, 6.0, 7.0],
            loops: 2,
            per_call: vec![1.0, 9.0, 2.0, 3.0, 8.0, 4.0],
        };
        assert_eq!(made.median(), 6.0);
        assert_eq!(made.call_median(), 4.0);
        assert!(
            made.to_string()
                .ends_with("2 loops each; median call 4.000 s)")
        );
        let untimed_calls = Timing {
            per_call: Vec::new(),
            ..made
        };
        assert_eq!(untimed_calls.call_median(), 6.0);
    }
}
