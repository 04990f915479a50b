//! Speed cliffs (BENCHMARKS.md, "Subnormals" and "Double precision"): the
//! GEMM-heavy suite rows with weights and output gradient in the subnormal
//! range, flushed to zero (the default) and kept (IEEE gradual underflow),
//! against normal values; and in `f64` against `f32`.
//!
//! Ids: `<row>/<fwd|bwd>/<normal|subnormal-flushed|subnormal-kept|f64>`.

mod common;

use common::Problem;
use criterion::{Criterion, criterion_group, criterion_main};
use gemmconv::suite::row;
use gemmconv::{Algorithm, Element, Workspace};
use std::time::Duration;

/// One variant of a row: its problem and workspace.
fn bench_variant<T: Element>(
    c: &mut Criterion,
    id: &str,
    variant: &str,
    mut problem: Problem<T>,
    mut ws: Workspace<T>,
) {
    let mut group = c.benchmark_group(id);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    group.bench_function(format!("fwd/{variant}"), |b| {
        b.iter(|| problem.forward(Algorithm::Strided, &mut ws))
    });
    group.bench_function(format!("bwd/{variant}"), |b| {
        b.iter(|| problem.backward(Algorithm::Strided, &mut ws))
    });
    group.finish();
}

fn cliffs(c: &mut Criterion) {
    for id in ["r3x3", "r1x1"] {
        let row = row(id).expect("a suite row");
        let keep = || Workspace::new().with_flush_subnormals(false);
        bench_variant(c, id, "normal", Problem::<f32>::new(&row), Workspace::new());
        let subnormal = || Problem::<f32>::new(&row).subnormal();
        bench_variant(c, id, "subnormal-flushed", subnormal(), Workspace::new());
        bench_variant(c, id, "subnormal-kept", subnormal(), keep());
        bench_variant(c, id, "f64", Problem::<f64>::new(&row), Workspace::new());
    }
}

criterion_group!(benches, cliffs);
criterion_main!(benches);
