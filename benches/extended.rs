//! Forward and backward over every row of the extended suite
//! (`benches/SUITE.md`, "Extended suite"), on the default configuration of
//! the strided algorithm. Throughput is in FLOPs, so criterion's "elem/s"
//! reads as FLOP/s.
//!
//! Ids: `<row>/<fwd|bwd>`. `cargo bench --bench extended` runs all (about
//! ten minutes); `cargo bench --bench extended -- rn50` the ResNet-50 rows.

mod common;

use common::Problem;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gemmconv::suite::extended_rows;
use gemmconv::{Algorithm, Workspace};
use std::time::Duration;

fn suite(c: &mut Criterion) {
    for row in extended_rows() {
        let mut problem = Problem::<f32>::new(&row);
        let mut ws = Workspace::new();
        let flops = row.forward_flops();
        let mut group = c.benchmark_group(row.id);
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        group.throughput(Throughput::Elements(flops));
        group.bench_function("fwd", |b| {
            b.iter(|| problem.forward(Algorithm::Strided, &mut ws))
        });
        group.throughput(Throughput::Elements(2 * flops));
        group.bench_function("bwd", |b| {
            b.iter(|| problem.backward(Algorithm::Strided, &mut ws))
        });
        group.finish();
    }
}

criterion_group!(benches, suite);
criterion_main!(benches);
