//! gemmconv against other Rust libraries' conv2d, on the suite rows, in one
//! run: candle-core, burn with its ndarray backend, burn with its flex
//! backend. Each peer's forward output and gradients are checked against
//! gemmconv's before it is timed.
//!
//! Forward is timed alone; the peers compute gradients through autodiff,
//! which runs a forward pass first, so the training step (forward, then dX,
//! dW and db) is timed for every library, gemmconv included.
//!
//! `cargo run --release` (from this directory) for every row, or
//! `cargo run --release -- r3x3 dw` for some. The medians also go to
//! `../target/peers.json`, where `benches/headline.py` finds them.

use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device as BurnDevice, Tensor as BurnTensor, TensorData};
use candle_core::{Device, Tensor as CandleTensor, Var};
use gemmconv::ndarray::{Array1, Array4};
use gemmconv::suite::{SuiteRow, rows};
use gemmconv::{Algorithm, Gradients, Workspace, conv2d_backward_into, conv2d_into};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use std::time::Instant;

/// Forward output and the three gradients, flattened, for comparison.
struct Results {
    y: Vec<f32>,
    dx: Vec<f32>,
    dw: Vec<f32>,
    db: Vec<f32>,
}

struct Problem {
    row: SuiteRow,
    x: Array4<f32>,
    w: Array4<f32>,
    b: Array1<f32>,
    dy: Array4<f32>,
}

fn problem(row: SuiteRow) -> Problem {
    let mut rng = SmallRng::seed_from_u64(3);
    let out = row.spec.output_shape(row.input).unwrap();
    let mut random4 =
        |shape| Array4::from_shape_simple_fn(shape, || rng.random_range(-1.0f32..1.0));
    let x = random4(row.input);
    let w = random4(row.spec.weight_shape());
    let dy = random4(out);
    let b = Array1::from_shape_fn(row.spec.out_channels(), |i| i as f32 * 0.01);
    Problem { row, x, w, b, dy }
}

/// Median of `reps` timings of `f`, after one warm-up call, in milliseconds
/// (3 timings when the warm-up took over a second: burn's ndarray backward
/// takes 12 s a step on the large rows).
fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    f();
    let reps = if start.elapsed().as_secs_f64() > 1.0 {
        3
    } else {
        reps
    };
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    let scale = want.iter().fold(1.0f64, |m, &v| m.max(v.abs() as f64));
    let diff = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()));
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    diff / scale
}

fn geometry(row: &SuiteRow) -> (usize, usize, usize, usize) {
    (
        row.spec.get_padding().top,
        row.spec.get_stride().0,
        row.spec.get_dilation().0,
        row.spec.get_groups(),
    )
}

// ---- gemmconv ----

fn gemmconv_run(p: &Problem, reps: usize) -> (Results, f64, f64) {
    let spec = &p.row.spec;
    let mut ws = Workspace::new();
    let mut y = Array4::zeros(spec.output_shape(p.row.input).unwrap());
    let mut g = Gradients {
        dx: Array4::zeros(p.row.input),
        dw: Array4::zeros(spec.weight_shape()),
        db: Array1::zeros(spec.out_channels()),
    };
    let forward = |y: &mut Array4<f32>, ws: &mut Workspace<f32>| {
        conv2d_into(
            p.x.view(),
            p.w.view(),
            Some(p.b.view()),
            spec,
            Algorithm::Strided,
            ws,
            y.view_mut(),
        )
        .unwrap()
    };
    let fwd = median_ms(reps, || forward(&mut y, &mut ws));
    let step = median_ms(reps, || {
        forward(&mut y, &mut ws);
        conv2d_backward_into(
            p.x.view(),
            p.w.view(),
            p.dy.view(),
            spec,
            Algorithm::Strided,
            &mut ws,
            g.view_mut(),
        )
        .unwrap();
    });
    let flat = |a: &[f32]| a.to_vec();
    let results = Results {
        y: flat(y.as_slice().unwrap()),
        dx: flat(g.dx.as_slice().unwrap()),
        dw: flat(g.dw.as_slice().unwrap()),
        db: flat(g.db.as_slice().unwrap()),
    };
    (results, fwd, step)
}

// ---- candle ----

fn candle_tensor(a: &[f32], shape: &[usize]) -> CandleTensor {
    CandleTensor::from_slice(a, shape, &Device::Cpu).unwrap()
}

fn candle_run(p: &Problem, reps: usize) -> Result<(Results, f64, f64), String> {
    let (pad, stride, dilation, groups) = geometry(&p.row);
    let c_out = p.row.spec.out_channels();
    let x = Var::from_tensor(&candle_tensor(p.x.as_slice().unwrap(), p.x.shape()))
        .map_err(|e| e.to_string())?;
    let w = Var::from_tensor(&candle_tensor(p.w.as_slice().unwrap(), p.w.shape()))
        .map_err(|e| e.to_string())?;
    let b = Var::from_tensor(&candle_tensor(p.b.as_slice().unwrap(), &[1, c_out, 1, 1]))
        .map_err(|e| e.to_string())?;
    let dy = candle_tensor(p.dy.as_slice().unwrap(), p.dy.shape());
    let forward = || -> candle_core::Result<CandleTensor> {
        x.as_tensor()
            .conv2d(w.as_tensor(), pad, stride, dilation, groups)?
            .broadcast_add(b.as_tensor())
    };
    let y = forward().map_err(|e| e.to_string())?;
    let grads = (&y * &dy)
        .and_then(|l| l.sum_all())
        .and_then(|l| l.backward())
        .map_err(|e| e.to_string())?;
    let flat = |t: &CandleTensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let grad = |v: &Var| {
        grads
            .get(v.as_tensor())
            .map(flat)
            .ok_or("no gradient".to_string())
    };
    let results = Results {
        y: flat(&y),
        dx: grad(&x)?,
        dw: grad(&w)?,
        db: grad(&b)?,
    };
    let fwd = median_ms(reps, || drop(forward().unwrap()));
    let step = median_ms(reps, || {
        let y = forward().unwrap();
        drop((&y * &dy).unwrap().sum_all().unwrap().backward().unwrap());
    });
    Ok((results, fwd, step))
}

// ---- burn (a device of any backend) ----

fn burn_tensor(a: &Array4<f32>, device: &BurnDevice) -> BurnTensor<4> {
    let s = a.shape();
    BurnTensor::from_data(
        TensorData::new(a.as_slice().unwrap().to_vec(), [s[0], s[1], s[2], s[3]]),
        device,
    )
}

fn burn_vec<const D: usize>(t: BurnTensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn burn_run(p: &Problem, reps: usize, device: BurnDevice) -> Result<(Results, f64, f64), String> {
    let device = device.autodiff();
    let (pad, stride, dilation, groups) = geometry(&p.row);
    let options = ConvOptions::new([stride; 2], [pad; 2], [dilation; 2], groups);
    let x = burn_tensor(&p.x, &device).require_grad();
    let w = burn_tensor(&p.w, &device).require_grad();
    let b = BurnTensor::<1>::from_data(TensorData::new(p.b.to_vec(), [p.b.len()]), &device)
        .require_grad();
    let dy = burn_tensor(&p.dy, &device);
    let forward = || burn_conv2d(x.clone(), w.clone(), Some(b.clone()), options.clone());
    let y = forward();
    let grads = (y.clone() * dy.clone()).sum().backward();
    let results = Results {
        y: burn_vec(y),
        dx: x.grad(&grads).map(burn_vec).ok_or("no gradient")?,
        dw: w.grad(&grads).map(burn_vec).ok_or("no gradient")?,
        db: b.grad(&grads).map(burn_vec).ok_or("no gradient")?,
    };
    // into_data waits for the result, whatever the backend's execution model.
    let fwd = median_ms(reps, || drop(burn_vec(forward())));
    let step = median_ms(reps, || {
        let grads = (forward() * dy.clone()).sum().backward();
        drop(burn_vec(w.grad(&grads).unwrap()));
        drop(burn_vec(x.grad(&grads).unwrap()));
    });
    Ok((results, fwd, step))
}

#[allow(deprecated)] // still the ndarray backend the comparison asks for
fn burn_ndarray_run(p: &Problem, reps: usize) -> Result<(Results, f64, f64), String> {
    burn_run(p, reps, BurnDevice::ndarray())
}

fn burn_flex_run(p: &Problem, reps: usize) -> Result<(Results, f64, f64), String> {
    burn_run(p, reps, BurnDevice::flex())
}

/// A peer's run on a problem: its results, forward and step medians (ms).
type PeerRun = fn(&Problem, usize) -> Result<(Results, f64, f64), String>;

fn main() {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    let reps = 11;
    // `"row": {"library": [fwd ms, fwd+bwd ms], ...}`, one entry a row.
    let mut json = Vec::new();
    println!(
        "| row | library | fwd ms | fwd+bwd ms | fwd ratio | fwd+bwd ratio | max rel. error vs gemmconv |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in rows() {
        // The peers run f32 here; seed64 would only repeat seed.
        if row.double || (!wanted.is_empty() && !wanted.iter().any(|w| w == row.id)) {
            continue;
        }
        let p = problem(row);
        let (ours, fwd, step) = gemmconv_run(&p, reps);
        println!(
            "| {} | gemmconv | {fwd:.3} | {step:.3} | 1.00 | 1.00 | - |",
            p.row.id
        );
        let mut entries = vec![format!("\"gemmconv\": [{fwd}, {step}]")];
        let peers: [(&str, PeerRun); 3] = [
            ("candle-core 0.11", candle_run),
            ("burn 0.22 ndarray", burn_ndarray_run),
            ("burn 0.22 flex", burn_flex_run),
        ];
        for (name, run) in peers {
            match run(&p, reps) {
                Ok((theirs, pfwd, pstep)) => {
                    let err = [
                        relative_error(&theirs.y, &ours.y),
                        relative_error(&theirs.dx, &ours.dx),
                        relative_error(&theirs.dw, &ours.dw),
                        relative_error(&theirs.db, &ours.db),
                    ]
                    .into_iter()
                    .fold(0.0, f64::max);
                    let verdict = if err < 1e-3 { "" } else { " (DISAGREES)" };
                    if verdict.is_empty() {
                        entries.push(format!("\"{name}\": [{pfwd}, {pstep}]"));
                    }
                    println!(
                        "| {} | {name} | {pfwd:.3} | {pstep:.3} | {:.2} | {:.2} | {err:.1e}{verdict} |",
                        p.row.id,
                        pfwd / fwd,
                        pstep / step
                    );
                }
                Err(e) => println!("| {} | {name} | - | - | - | - | failed: {e} |", p.row.id),
            }
        }
        json.push(format!("  \"{}\": {{{}}}", p.row.id, entries.join(", ")));
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/peers.json");
    let written = std::fs::create_dir_all(path.parent().expect("a file in a directory"))
        .and_then(|()| std::fs::write(&path, format!("{{\n{}\n}}\n", json.join(",\n"))));
    match written {
        Ok(()) => println!("\nmedians written to {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}
