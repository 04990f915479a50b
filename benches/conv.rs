//! Forward and backward over every row of the suite (`benches/SUITE.md`),
//! for each algorithm where it runs in reasonable time. Throughput is in
//! FLOPs, so criterion's "elem/s" reads as FLOP/s.
//!
//! Ids: `<row>/<fwd|bwd>/<variant>`, where the variant is an algorithm
//! (`naive`, `im2col`, `strided`) or one configuration of the strided one:
//! `strided-nocap` (no column cap), `strided-1t` (one thread),
//! `strided-col2im` / `strided-lowering` (input-gradient method, on the
//! column-matrix kernel), `strided-gemm` / `strided-shifted` (the kernel).
//!
//! `cargo bench --bench conv` runs all; `cargo bench --bench conv -- r3x3/`
//! one row.

mod common;

use common::Problem;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gemmconv::suite::{SuiteRow, rows};
use gemmconv::{Algorithm, Element, InputGradient, Kernel, Workspace};
use std::time::Duration;

/// One benchmarked configuration.
struct Variant {
    name: &'static str,
    algorithm: Algorithm,
    cap: usize,
    threads: Option<usize>,
    input_gradient: InputGradient,
    kernel: Kernel,
}

fn variants(row: &SuiteRow) -> Vec<Variant> {
    let base = |name, algorithm| Variant {
        name,
        algorithm,
        cap: gemmconv::DEFAULT_COLUMN_CAP_BYTES,
        threads: None,
        input_gradient: InputGradient::Auto,
        kernel: Kernel::Auto,
    };
    let mut v = vec![
        base("strided", Algorithm::Strided),
        base("im2col", Algorithm::Im2col),
    ];
    if row.id.starts_with("seed") {
        v.push(base("naive", Algorithm::Naive));
    }
    v.push(Variant {
        cap: usize::MAX,
        ..base("strided-nocap", Algorithm::Strided)
    });
    v.push(Variant {
        threads: Some(1),
        ..base("strided-1t", Algorithm::Strided)
    });
    v.push(Variant {
        kernel: Kernel::Gemm,
        ..base("strided-gemm", Algorithm::Strided)
    });
    v.push(Variant {
        kernel: Kernel::Shifted,
        ..base("strided-shifted", Algorithm::Strided)
    });
    // Where Winograd does not apply it would time the column matrix again.
    let spec = &row.spec;
    if spec.kernel() == (3, 3) && spec.get_stride() == (1, 1) && spec.get_groups() == 1 {
        v.push(Variant {
            kernel: Kernel::Winograd,
            ..base("strided-winograd", Algorithm::Strided)
        });
    }
    v.push(Variant {
        input_gradient: InputGradient::Col2im,
        ..base("strided-col2im", Algorithm::Strided)
    });
    v.push(Variant {
        input_gradient: InputGradient::ErrorLowering,
        ..base("strided-lowering", Algorithm::Strided)
    });
    v
}

fn bench_row<T: Element>(c: &mut Criterion, row: &SuiteRow) {
    let mut problem = Problem::<T>::new(row);
    let flops = row.forward_flops();
    let mut group = c.benchmark_group(row.id);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for variant in variants(row) {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(variant.threads.unwrap_or(0))
            .build()
            .expect("thread pool");
        let mut ws = Workspace::new()
            .with_column_cap_bytes(variant.cap)
            .with_input_gradient(variant.input_gradient)
            .with_kernel(variant.kernel);
        let skip_forward = matches!(
            variant.input_gradient,
            InputGradient::Col2im | InputGradient::ErrorLowering
        );
        if !skip_forward {
            group.throughput(Throughput::Elements(flops));
            group.bench_function(BenchmarkId::new("fwd", variant.name), |bench| {
                pool.install(|| bench.iter(|| problem.forward(variant.algorithm, &mut ws)))
            });
        }
        group.throughput(Throughput::Elements(2 * flops));
        group.bench_function(BenchmarkId::new("bwd", variant.name), |bench| {
            pool.install(|| bench.iter(|| problem.backward(variant.algorithm, &mut ws)))
        });
    }
    group.finish();
}

fn suite(c: &mut Criterion) {
    for row in rows() {
        if row.double {
            bench_row::<f64>(c, &row);
        } else {
            bench_row::<f32>(c, &row);
        }
    }
}

criterion_group!(benches, suite);
criterion_main!(benches);
