//! The family rows (`benches/SUITE.md`, "Family"): a transposed or 1-D
//! convolution timed as the suite rows are, checked against the im2col
//! algorithm first, and with `--save` written out for benches/pytorch.py
//! to check PyTorch and onnxruntime against and time them beside it.

use crate::timing::timeit;
use gemmconv::ndarray::{Array, Array1, Dimension, IntoDimension};
use gemmconv::suite::{FamilyOp, family_row};
use gemmconv::{Algorithm, Layer, Operation, Workspace};
use rand::{RngExt, SeedableRng};
use std::path::Path;
use std::time::Duration;

/// Runs family row `id`: checks, times and (with `save`) writes it.
pub fn run(id: &str, runs: usize, save: Option<&Path>) -> Result<(), String> {
    let row = family_row(id).ok_or_else(|| format!("{id} is not a family row"))?;
    println!(
        "gemmconv: family row {id}, f32, {} threads",
        rayon::current_num_threads()
    );
    let flops = row.forward_flops() as f64;
    let (fwd, bwd) = match row.op {
        FamilyOp::Transposed(spec, input) => {
            let text = format!(
                "op transposed\nstride {} {}\npadding {} {}\noutput_padding {} {}\ndilation {} {}\ngroups {}\n",
                spec.get_stride().0,
                spec.get_stride().1,
                spec.get_padding().0,
                spec.get_padding().1,
                spec.get_output_padding().0,
                spec.get_output_padding().1,
                spec.get_dilation().0,
                spec.get_dilation().1,
                spec.get_groups()
            );
            time(spec, input, runs, save.map(|dir| (dir, text)))?
        }
        FamilyOp::Conv1d(spec, input) => {
            let (before, after) = spec.get_padding();
            let text = format!(
                "op conv1d\nstride {}\npadding {before} {after}\ndilation {}\ngroups {}\n",
                spec.get_stride(),
                spec.get_dilation(),
                spec.get_groups()
            );
            time(spec, input, runs, save.map(|dir| (dir, text)))?
        }
    };
    println!(
        "  forward  {:.3} ms  {:.2} GFLOP/s\n  backward {:.3} ms  {:.2} GFLOP/s",
        fwd * 1e3,
        flops / fwd / 1e9,
        bwd * 1e3,
        2.0 * flops / bwd / 1e9
    );
    Ok(())
}

fn random<D: Dimension>(shape: D, rng: &mut rand::rngs::SmallRng) -> Array<f32, D> {
    Array::from_shape_simple_fn(shape, || rng.random_range(-1.0..1.0))
}

/// Median seconds of the forward pass (into a new array, the workspace
/// kept, as the suite rows' functional calls are timed) and of the backward pass (dx, dw, db) of `spec` on inputs of
/// `input`, after checking both against im2col.
fn time<S: Operation, const N: usize>(
    spec: S,
    input: [usize; N],
    runs: usize,
    save: Option<(&Path, String)>,
) -> Result<(f64, f64), String>
where
    [usize; N]: IntoDimension<Dim = S::Dim>,
{
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0);
    let mut layer =
        Layer::<f32, S>::new_pytorch_default(spec, &mut rng).map_err(|e| e.to_string())?;
    let x = random(input.into_dimension(), &mut rng);
    let y = layer.infer(x.view()).map_err(|e| e.to_string())?;
    let dy = random(y.raw_dim(), &mut rng);
    let mut results = Vec::new();
    for algorithm in [Algorithm::Im2col, Algorithm::Strided] {
        let mut l = layer.clone().with_algorithm(algorithm);
        let y = l.forward(x.view()).map_err(|e| e.to_string())?;
        let dx = l.backward(dy.view()).map_err(|e| e.to_string())?;
        let db = l.bias_grad().cloned().unwrap_or_else(|| Array1::zeros(0));
        results.push((y, dx, l.weight_grad().clone(), db));
    }
    let error = |a: &[f32], b: &[f32]| {
        let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        a.iter()
            .zip(b)
            .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()))
            / scale
    };
    let (want, got) = (&results[0], &results[1]);
    let worst = [
        error(got.0.as_slice().unwrap(), want.0.as_slice().unwrap()),
        error(got.1.as_slice().unwrap(), want.1.as_slice().unwrap()),
        error(got.2.as_slice().unwrap(), want.2.as_slice().unwrap()),
        error(got.3.as_slice().unwrap(), want.3.as_slice().unwrap()),
    ]
    .into_iter()
    .fold(0.0, f32::max);
    println!("  strided agrees with im2col: max relative error {worst:.1e}");
    if worst > 1e-4 {
        return Err("strided disagrees with im2col; not timing it".into());
    }
    let target = Duration::from_millis(200);
    let mut ws = Workspace::new();
    let fwd = timeit(runs, target, || {
        let mut y = Array::zeros(y.raw_dim());
        layer
            .infer_into(x.view(), &mut ws, y.view_mut())
            .expect("checked above");
        std::hint::black_box(y);
    });
    layer.forward(x.view()).map_err(|e| e.to_string())?;
    let bwd = timeit(runs, target, || {
        std::hint::black_box(layer.backward(dy.view()).expect("checked above"));
    });
    if let Some((dir, text)) = save {
        let write = || -> Result<(), Box<dyn std::error::Error>> {
            std::fs::create_dir_all(dir)?;
            ndarray_npy::write_npy(dir.join("x.npy"), &x)?;
            ndarray_npy::write_npy(dir.join("w.npy"), layer.weight())?;
            if let Some(b) = layer.bias() {
                ndarray_npy::write_npy(dir.join("b.npy"), b)?;
            }
            ndarray_npy::write_npy(dir.join("dy.npy"), &dy)?;
            ndarray_npy::write_npy(dir.join("y.npy"), &got.0)?;
            ndarray_npy::write_npy(dir.join("dx.npy"), &got.1)?;
            ndarray_npy::write_npy(dir.join("dw.npy"), &got.2)?;
            ndarray_npy::write_npy(dir.join("db.npy"), &got.3)?;
            std::fs::write(dir.join("spec.txt"), text)?;
            std::fs::write(
                dir.join("times.txt"),
                format!("strided {:e} {:e}\n", fwd.call_median(), bwd.call_median()),
            )?;
            Ok(())
        };
        write().map_err(|e| format!("cannot write to {}: {e}", dir.display()))?;
    }
    Ok((fwd.median(), bwd.median()))
}
