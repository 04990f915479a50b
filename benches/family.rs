//! The convolution family against the 2-D convolution it runs on, pair by
//! pair on the same geometry (`benches/SUITE.md`, "Family"):
//!
//! - `transposed/<family row>/{fwd,dx}`: the transposed convolution's forward
//!   pass, and the input gradient alone of the convolution it transposes
//!   (`conv2d_backward_selected_into` with `GradientSelection::INPUT`);
//! - `transposed/<row>/{bwd,conv-fwd-dw}`: its backward pass, and that
//!   convolution's forward pass plus its weight and bias gradients;
//! - `conv1d/<family row>/{fwd,bwd}-{1d,2d}`: a 1-D convolution, and the same as a 2-D one
//!   on images one row high, forward and backward;
//! - `infer/<row>/{infer,conv2d}`: a layer's inference call, and the
//!   allocating functional call;
//! - `padding/<row>/{zeros,reflect}`: a suite row with zero and reflect
//!   padding, forward and backward.
//!
//! `cargo bench --bench family`; `cargo bench --bench family -- conv1d/` for one group.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gemmconv::ndarray::{Array, Array1, Array4, Dimension, IntoDimension};
use gemmconv::suite::{FamilyOp, family_row, family_rows, row};
use gemmconv::{
    Algorithm, Conv1dSpec, Conv2d, Conv2dSpec, PaddingMode, SelectedGradientsMut, Workspace,
    conv_transpose2d_backward_into, conv_transpose2d_into, conv1d_backward_into, conv1d_into,
    conv2d, conv2d_backward_into, conv2d_backward_selected_into, conv2d_into,
};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use std::hint::black_box;
use std::time::Duration;

fn random<D: Dimension>(shape: impl IntoDimension<Dim = D>, seed: u64) -> Array<f32, D> {
    let mut rng = SmallRng::seed_from_u64(seed);
    Array::from_shape_simple_fn(shape, || rng.random_range(-1.0..1.0))
}

fn configure<'c>(
    c: &'c mut Criterion,
    name: &str,
    flops: u64,
) -> criterion::BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(flops));
    group
}

/// A family row's transposed convolution (a suite row read as a decoder)
/// against the convolution it transposes.
fn transposed(c: &mut Criterion, id: &str) {
    let r = family_row(id).expect("a family row");
    let FamilyOp::Transposed(spec, input) = r.op.clone() else {
        panic!("{id} is a transposed row");
    };
    let spec = spec.bias(false);
    let conv = spec.conv_spec();
    let out = spec.output_shape(input).expect("valid");
    let x = random(input, 1);
    let w = random(spec.weight_shape(), 2);
    let dy = random(out, 3);
    let mut y = Array4::<f32>::zeros(out);
    let mut dx = Array4::<f32>::zeros(input);
    let mut dw = Array4::<f32>::zeros(spec.weight_shape());
    let mut db = Array1::<f32>::zeros(spec.out_channels());
    let mut conv_y = Array4::<f32>::zeros(input);
    let mut conv_db = Array1::<f32>::zeros(conv.out_channels());
    let mut ws = Workspace::new();
    let strided = Algorithm::Strided;
    let mut group = configure(c, &format!("transposed/{id}"), r.forward_flops());
    group.bench_function("fwd", |b| {
        b.iter(|| {
            conv_transpose2d_into(
                x.view(),
                w.view(),
                None,
                &spec,
                strided,
                &mut ws,
                y.view_mut(),
            )
            .unwrap()
        })
    });
    group.bench_function("dx", |b| {
        b.iter(|| {
            let out = SelectedGradientsMut {
                dx: Some(y.view_mut()),
                dw: None,
                db: None,
            };
            conv2d_backward_selected_into(
                dy.view(),
                w.view(),
                x.view(),
                &conv,
                strided,
                &mut ws,
                out,
            )
            .unwrap()
        })
    });
    group.throughput(Throughput::Elements(2 * r.forward_flops()));
    group.bench_function("bwd", |b| {
        b.iter(|| {
            let out = SelectedGradientsMut {
                dx: Some(dx.view_mut()),
                dw: Some(dw.view_mut()),
                db: Some(db.view_mut()),
            };
            conv_transpose2d_backward_into(
                x.view(),
                w.view(),
                dy.view(),
                &spec,
                strided,
                &mut ws,
                out,
            )
            .unwrap()
        })
    });
    group.bench_function("conv-fwd-dw", |b| {
        b.iter(|| {
            conv2d_into(
                dy.view(),
                w.view(),
                None,
                &conv,
                strided,
                &mut ws,
                conv_y.view_mut(),
            )
            .unwrap();
            let out = SelectedGradientsMut {
                dx: None,
                dw: Some(dw.view_mut()),
                db: Some(conv_db.view_mut()),
            };
            conv2d_backward_selected_into(
                dy.view(),
                w.view(),
                x.view(),
                &conv,
                strided,
                &mut ws,
                out,
            )
            .unwrap()
        })
    });
    group.finish();
    black_box((y, dx, dw, db, conv_y));
}

/// A 1-D convolution and the same 2-D one, forward and backward.
fn conv1d(c: &mut Criterion, name: &str, spec: Conv1dSpec, input: [usize; 3]) {
    let out = spec.output_shape(input).expect("valid");
    let flops = (2 * out.iter().product::<usize>() * spec.weight_shape()[1] * spec.kernel()) as u64;
    let x = random(input, 4);
    let w = random(spec.weight_shape(), 5);
    let b = random(spec.out_channels(), 6);
    let dy = random(out, 7);
    let mut y = Array::zeros(out);
    let mut g = gemmconv::Gradients {
        dx: Array::zeros(input),
        dw: Array::zeros(spec.weight_shape()),
        db: Array1::zeros(spec.out_channels()),
    };
    let flat = spec.to_conv2d().clone();
    let lift = |s: [usize; 3]| [s[0], s[1], 1, s[2]];
    let (x4, w4, dy4) = (
        x.view().into_shape_with_order(lift(input)).unwrap(),
        w.view()
            .into_shape_with_order(lift(spec.weight_shape()))
            .unwrap(),
        dy.view().into_shape_with_order(lift(out)).unwrap(),
    );
    let mut y4 = Array4::<f32>::zeros(lift(out));
    let mut g4 = gemmconv::Gradients {
        dx: Array4::zeros(lift(input)),
        dw: Array4::zeros(lift(spec.weight_shape())),
        db: Array1::zeros(spec.out_channels()),
    };
    let mut ws = Workspace::new();
    let strided = Algorithm::Strided;
    let mut group = configure(c, &format!("conv1d/{name}"), flops);
    group.bench_function("fwd-1d", |bench| {
        bench.iter(|| {
            conv1d_into(
                x.view(),
                w.view(),
                Some(b.view()),
                &spec,
                strided,
                &mut ws,
                y.view_mut(),
            )
            .unwrap()
        })
    });
    group.bench_function("fwd-2d", |bench| {
        bench.iter(|| {
            conv2d_into(
                x4,
                w4,
                Some(b.view()),
                &flat,
                strided,
                &mut ws,
                y4.view_mut(),
            )
            .unwrap()
        })
    });
    group.throughput(Throughput::Elements(2 * flops));
    group.bench_function("bwd-1d", |bench| {
        bench.iter(|| {
            conv1d_backward_into(
                x.view(),
                w.view(),
                dy.view(),
                &spec,
                strided,
                &mut ws,
                g.view_mut(),
            )
            .unwrap()
        })
    });
    group.bench_function("bwd-2d", |bench| {
        bench.iter(|| {
            conv2d_backward_into(x4, w4, dy4, &flat, strided, &mut ws, g4.view_mut()).unwrap()
        })
    });
    group.finish();
}

/// A layer's inference call against the allocating functional call.
fn infer(c: &mut Criterion, id: &str) {
    let r = row(id).expect("a suite row");
    let layer = Conv2d::<f32>::new_pytorch_default(r.spec.clone(), &mut SmallRng::seed_from_u64(8))
        .unwrap();
    let x = random(r.input, 9);
    let bias = layer.bias().expect("suite rows have a bias").view();
    let mut group = configure(c, &format!("infer/{id}"), r.forward_flops());
    group.bench_function("infer", |b| {
        b.iter(|| black_box(layer.infer(x.view()).unwrap()))
    });
    group.bench_function("conv2d", |b| {
        b.iter(|| {
            black_box(
                conv2d(
                    x.view(),
                    layer.weight().view(),
                    Some(bias),
                    &r.spec,
                    Algorithm::Strided,
                )
                .unwrap(),
            )
        })
    });
    group.finish();
}

/// A suite row with zero and with reflect padding.
fn padding(c: &mut Criterion, id: &str) {
    let r = row(id).expect("a suite row");
    let mut group = configure(c, &format!("padding/{id}"), r.forward_flops());
    for (name, mode) in [
        ("zeros", PaddingMode::Zeros),
        ("reflect", PaddingMode::Reflect),
    ] {
        let spec: Conv2dSpec = r.spec.clone().padding_mode(mode);
        let out = spec.output_shape(r.input).unwrap();
        let x = random(r.input, 10);
        let w = random(spec.weight_shape(), 11);
        let b = random(spec.out_channels(), 12);
        let dy = random(out, 13);
        let mut y = Array4::zeros(out);
        let mut g = gemmconv::Gradients {
            dx: Array4::zeros(r.input),
            dw: Array4::zeros(spec.weight_shape()),
            db: Array1::zeros(spec.out_channels()),
        };
        let mut ws = Workspace::new();
        group.throughput(Throughput::Elements(r.forward_flops()));
        group.bench_function(format!("fwd-{name}"), |bench| {
            bench.iter(|| {
                conv2d_into(
                    x.view(),
                    w.view(),
                    Some(b.view()),
                    &spec,
                    Algorithm::Strided,
                    &mut ws,
                    y.view_mut(),
                )
                .unwrap()
            })
        });
        group.throughput(Throughput::Elements(2 * r.forward_flops()));
        group.bench_function(format!("bwd-{name}"), |bench| {
            bench.iter(|| {
                conv2d_backward_into(
                    x.view(),
                    w.view(),
                    dy.view(),
                    &spec,
                    Algorithm::Strided,
                    &mut ws,
                    g.view_mut(),
                )
                .unwrap()
            })
        });
    }
    group.finish();
}

fn family(c: &mut Criterion) {
    for r in family_rows() {
        match r.op {
            FamilyOp::Transposed(..) => transposed(c, r.id),
            FamilyOp::Conv1d(spec, input) => conv1d(c, r.id, spec, input),
        }
    }
    for id in ["seed", "r3x3"] {
        infer(c, id);
    }
    padding(c, "r3x3");
}

criterion_group!(benches, family);
criterion_main!(benches);
