//! `--kernel A,B,...`: the strided algorithm with each kernel, timed in
//! turns in one process. On a shared machine whose speed drifts over
//! seconds, timing one kernel after another (as separate runs or separate
//! criterion benches do) can put the drift into the comparison; taking
//! every kernel's samples in alternation spreads it over all of them.

use crate::timing::{Timing, format_seconds};
use crate::{Problem, Reference, check};
use gemmconv::ndarray::Array4;
use gemmconv::{Algorithm, Element, conv2d_backward_with_workspace, conv2d_with_workspace};
use std::time::{Duration, Instant};

/// How long one sample (a fixed number of calls) of a kernel runs.
const SAMPLE: Duration = Duration::from_millis(100);

/// Validates each kernel against naive (unless told not to), then takes `options.runs` rounds of
/// one forward and one backward sample per kernel, and prints the medians
/// and each kernel's time relative to the first one listed.
pub fn kernels<T: Element>(
    options: &crate::args::Options,
    p: &Problem<T>,
    dy: &Array4<T>,
    reference: Option<&Reference<T>>,
    fwd_flops: f64,
) -> Result<(), String> {
    let spec = &options.spec;
    let bias = p.b.as_ref().map(|b| b.view());
    let forward = |ws: &mut _| {
        conv2d_with_workspace(p.x.view(), p.w.view(), bias, spec, Algorithm::Strided, ws)
    };
    let backward = |ws: &mut _| {
        conv2d_backward_with_workspace(
            p.x.view(),
            p.w.view(),
            dy.view(),
            spec,
            Algorithm::Strided,
            ws,
        )
    };
    let mut contenders = Vec::new();
    for &kernel in &options.kernels {
        let mut ws = options.workspace_with::<T>(kernel);
        let label = format!("{kernel:?}").to_lowercase();
        let y = forward(&mut ws).map_err(|e| e.to_string())?;
        let g = backward(&mut ws).map_err(|e| e.to_string())?;
        check(reference, &label, &y, &g)?;
        // Calls a sample: from one warm call of each pass.
        let loops = |once: Duration| {
            (SAMPLE.as_secs_f64() / once.as_secs_f64().max(1e-9)).clamp(1.0, 10_000.0) as usize
        };
        let start = Instant::now();
        std::hint::black_box(forward(&mut ws).map_err(|e| e.to_string())?);
        let fwd_loops = loops(start.elapsed());
        let start = Instant::now();
        std::hint::black_box(backward(&mut ws).map_err(|e| e.to_string())?);
        let bwd_loops = loops(start.elapsed());
        let empty = |loops| Timing {
            per_loop: Vec::new(),
            loops,
            per_call: Vec::new(),
        };
        contenders.push((label, ws, empty(fwd_loops), empty(bwd_loops)));
    }
    for _ in 0..options.runs {
        for (_, ws, fwd, bwd) in &mut contenders {
            let start = Instant::now();
            for _ in 0..fwd.loops {
                std::hint::black_box(forward(ws).expect("validated above"));
            }
            fwd.per_loop
                .push(start.elapsed().as_secs_f64() / fwd.loops as f64);
            let start = Instant::now();
            for _ in 0..bwd.loops {
                std::hint::black_box(backward(ws).expect("validated above"));
            }
            bwd.per_loop
                .push(start.elapsed().as_secs_f64() / bwd.loops as f64);
        }
    }
    println!(
        "\nkernels of the strided algorithm, in turns ({} rounds; medians, and each against the first):",
        options.runs
    );
    for (pass, pick, flops) in [("forward", 0, fwd_flops), ("backward", 1, 2.0 * fwd_flops)] {
        println!("{pass}:");
        let first = if pick == 0 {
            &contenders[0].2
        } else {
            &contenders[0].3
        }
        .median();
        for (label, _, fwd, bwd) in &contenders {
            let t = if pick == 0 { fwd } else { bwd };
            println!(
                "  {label:8} {:>10}  {:7.2} GFLOP/s  {:5.2}x the first's time",
                format_seconds(t.median()),
                flops / t.median() / 1e9,
                t.median() / first
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use gemmconv::Kernel;

    #[test]
    fn kernel_labels_are_their_command_line_names() {
        for (kernel, name) in [(Kernel::Gemm, "gemm"), (Kernel::Shifted, "shifted")] {
            assert_eq!(format!("{kernel:?}").to_lowercase(), name);
        }
    }
}
