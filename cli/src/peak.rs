//! `--peak`: the machine's measured fused multiply-add peak, in f32
//! GFLOP/s, per core and for the whole pool, the ceiling that
//! BENCHMARKS.md's efficiency figures are a fraction of.
//!
//! Each thread runs a loop of independent fused multiply-adds on as many
//! accumulator registers as hide the FMA latency, with the widest vectors
//! the CPU has (AVX-512, else AVX2), for a fixed number of iterations; the
//! best of several runs counts.

use std::time::Instant;

/// Iterations of the loop per run: about 10 ms at 200 GFLOP/s.
const ITERATIONS: u64 = 100_000;

/// Independent accumulators: FMA latency (4 cycles) times FMA units (2).
const ACCUMULATORS: usize = 12;

/// The f32 FLOPs one thread does per second, best of `runs`.
fn thread_flops(runs: usize) -> f64 {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            let (flops, sink) = fma_loop();
            std::hint::black_box(sink);
            flops as f64 / start.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

/// The loop in the widest vectors the CPU runs; returns its FLOPs and a
/// value that depends on every accumulator.
fn fma_loop() -> (u64, f32) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") {
            // SAFETY: the function only enables AVX-512 F, which the CPU
            // was just found to support.
            return (ITERATIONS * ACCUMULATORS as u64 * 32, unsafe {
                x86::fma_avx512()
            });
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: the function only enables AVX2 and FMA, which the CPU
            // was just found to support.
            return (ITERATIONS * ACCUMULATORS as u64 * 16, unsafe {
                x86::fma_avx2()
            });
        }
    }
    let mut acc = [1.0f32; ACCUMULATORS];
    for _ in 0..ITERATIONS {
        for a in &mut acc {
            *a = a.mul_add(0.999_999, 1e-7);
        }
    }
    (ITERATIONS * ACCUMULATORS as u64 * 2, acc.iter().sum())
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{ACCUMULATORS, ITERATIONS};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub(super) fn fma_avx512() -> f32 {
        let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        let mut acc = [_mm512_set1_ps(1.0); ACCUMULATORS];
        for _ in 0..ITERATIONS {
            for v in &mut acc {
                *v = _mm512_fmadd_ps(*v, a, b);
            }
        }
        let sum = acc
            .iter()
            .fold(_mm512_setzero_ps(), |s, &v| _mm512_add_ps(s, v));
        _mm512_reduce_add_ps(sum)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn fma_avx2() -> f32 {
        let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        let mut acc = [_mm256_set1_ps(1.0); ACCUMULATORS];
        for _ in 0..ITERATIONS {
            for v in &mut acc {
                *v = _mm256_fmadd_ps(*v, a, b);
            }
        }
        let sum = acc
            .iter()
            .fold(_mm256_setzero_ps(), |s, &v| _mm256_add_ps(s, v));
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds the 8 floats the store writes.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
        lanes.iter().sum()
    }
}

/// Prints the peak of one thread and of every thread of the pool at once.
pub fn print() {
    let one = thread_flops(20);
    let threads = rayon::current_num_threads();
    let all: f64 = rayon::broadcast(|_| thread_flops(20)).iter().sum();
    println!(
        "FMA peak, f32: {:.0} GFLOP/s on one thread, {:.0} GFLOP/s on {threads} threads ({:.0} each)",
        one / 1e9,
        all / 1e9,
        all / 1e9 / threads as f64
    );
}
