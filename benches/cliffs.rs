//! Speed cliffs (BENCHMARKS.md, "Subnormals" and "Double precision"): the
//! GEMM-heavy suite rows with weights and output gradient in the subnormal
//! range, flushed to zero (the default) and kept (IEEE gradual underflow),
//! against normal values; and in `f64` against `f32`.
//!
//! Also the fixed cost of a call (BENCHMARKS.md, "Small calls"): a 1x1
//! convolution of one pixel, and the seed row, through the functional call
//! (validates and plans every call) and through a plan made once.
//!
//! Ids: `<row>/<fwd|bwd>/<normal|subnormal-flushed|subnormal-kept|f64>`,
//! `fixed-cost/<pixel|seed>/<call|plan>`.

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

fn fixed_cost(c: &mut Criterion) {
    use gemmconv::ndarray::{Array1, Array4};
    use gemmconv::{Conv2dPlan, Conv2dSpec, conv2d_into};
    let mut group = c.benchmark_group("fixed-cost");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let seed = row("seed").expect("a suite row");
    let pixel = (Conv2dSpec::new(1, 1, (1, 1)), [1, 1, 1, 1]);
    for (name, (spec, input)) in [("pixel", pixel), ("seed", (seed.spec, seed.input))] {
        let x = Array4::<f32>::ones(input);
        let w = Array4::<f32>::ones(spec.weight_shape());
        let b = Array1::<f32>::zeros(spec.out_channels());
        let mut y = Array4::<f32>::zeros(spec.output_shape(input).expect("valid"));
        let mut ws = Workspace::new();
        group.bench_function(format!("{name}/call"), |bench| {
            bench.iter(|| {
                let (x, w, b) = (x.view(), w.view(), Some(b.view()));
                conv2d_into(x, w, b, &spec, Algorithm::Strided, &mut ws, y.view_mut())
                    .expect("valid")
            })
        });
        let mut plan = Conv2dPlan::new(&spec, input, Algorithm::Strided).expect("valid");
        group.bench_function(format!("{name}/plan"), |bench| {
            bench.iter(|| {
                plan.forward_into(x.view(), w.view(), Some(b.view()), y.view_mut())
                    .expect("valid")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, cliffs, fixed_cost);
criterion_main!(benches);
