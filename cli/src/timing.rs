//! `%timeit`-style timing: warm up, then several runs of a fixed number of
//! loops each, reported as the mean and standard deviation of the per-loop
//! time across runs.

use std::time::{Duration, Instant};

/// Per-loop times of each run, in seconds.
pub struct Timing {
    pub per_loop: Vec<f64>,
    pub loops: usize,
}

impl Timing {
    pub fn mean(&self) -> f64 {
        self.per_loop.iter().sum::<f64>() / self.per_loop.len() as f64
    }

    pub fn median(&self) -> f64 {
        let mut sorted = self.per_loop.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
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

/// Times `f` like IPython's `%timeit`: picks a loop count so one run takes
/// at least `run_target`, then does `runs` runs.
pub fn timeit(runs: usize, run_target: Duration, mut f: impl FnMut()) -> Timing {
    // Warm-up: caches, page faults, the thread pool, the workspace.
    let start = Instant::now();
    f();
    let once = start.elapsed().max(Duration::from_nanos(1));
    let loops = (run_target.as_secs_f64() / once.as_secs_f64()).clamp(1.0, 10_000.0) as usize;
    let per_loop = (0..runs)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..loops {
                f();
            }
            start.elapsed().as_secs_f64() / loops as f64
        })
        .collect();
    Timing { per_loop, loops }
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
            "{} ± {} per loop (mean ± std. dev. of {} runs, {} loops each)",
            format_seconds(self.mean()),
            format_seconds(self.std()),
            self.per_loop.len(),
            self.loops
        )
    }
}
