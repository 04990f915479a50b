//! Forward and backward over every row of the extended suite
//! (`benches/SUITE.md`, "Extended suite"), on the default configuration of
//! the strided algorithm. Throughput is in FLOPs, so criterion's "elem/s"
//! reads as FLOP/s.
//!
//! Ids: `<row>/<fwd|bwd>`. `cargo bench --bench extended` runs all (about
//! ten minutes); `cargo bench --bench extended -- rn50` the ResNet-50 rows.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gemmconv::ndarray::{Array1, Array4};
use gemmconv::suite::{SuiteRow, extended_rows};
use gemmconv::{Algorithm, Gradients, Workspace, conv2d_backward_into, conv2d_into};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use std::hint::black_box;
use std::time::Duration;

fn bench_row(c: &mut Criterion, row: &SuiteRow) {
    let mut rng = SmallRng::seed_from_u64(1);
    let spec = &row.spec;
    let out = spec.output_shape(row.input).expect("suite rows are valid");
    let mut random4 =
        |shape| Array4::from_shape_simple_fn(shape, || rng.random_range(-1.0f32..1.0));
    let x = random4(row.input);
    let w = random4(spec.weight_shape());
    let dy = random4(out);
    let b = Array1::from_elem(spec.out_channels(), 0.1f32);
    let mut y = Array4::zeros(out);
    let mut grads = Gradients {
        dx: Array4::zeros(row.input),
        dw: Array4::zeros(spec.weight_shape()),
        db: Array1::zeros(spec.out_channels()),
    };
    let mut ws = Workspace::new();
    let flops = row.forward_flops();
    let mut group = c.benchmark_group(row.id);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(flops));
    group.bench_function("fwd", |bench| {
        bench.iter(|| {
            conv2d_into(
                x.view(),
                w.view(),
                Some(b.view()),
                spec,
                Algorithm::Strided,
                &mut ws,
                y.view_mut(),
            )
            .expect("valid");
            black_box(&y);
        })
    });
    group.throughput(Throughput::Elements(2 * flops));
    group.bench_function("bwd", |bench| {
        bench.iter(|| {
            conv2d_backward_into(
                x.view(),
                w.view(),
                dy.view(),
                spec,
                Algorithm::Strided,
                &mut ws,
                grads.view_mut(),
            )
            .expect("valid");
            black_box(&grads);
        })
    });
    group.finish();
}

fn suite(c: &mut Criterion) {
    for row in extended_rows() {
        bench_row(c, &row);
    }
}

criterion_group!(benches, suite);
criterion_main!(benches);
