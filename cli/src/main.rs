//! The main job: the notebook's comparison (naive / im2col / strided, forward
//! and backward) on its workload, or on any suite row or geometry, each
//! algorithm validated against the naive reference before it is timed.

mod args;
mod compare;
mod family;
mod malloc;
mod peak;
mod timing;

use clap::Parser;
use gemmconv::ndarray::{Array1, Array4};
use gemmconv::{
    Algorithm, Conv2d, Element, Gradients, conv2d, conv2d_backward, conv2d_backward_with_workspace,
    conv2d_with_workspace,
};
use rand::{RngExt, SeedableRng};
use std::process::ExitCode;
use std::time::Duration;
use timing::{Timing, format_seconds, timeit};

/// The notebook's published `%timeit` figures (numpy, float64, another
/// machine), forward and backward, in seconds.
const NOTEBOOK: [(Algorithm, f64, f64); 3] = [
    (Algorithm::Naive, 484e-3, 132e-3),
    (Algorithm::Im2col, 28.4e-3, 66.2e-3),
    (Algorithm::Strided, 3.63e-3, 19.6e-3),
];

/// Problems above this many forward FLOPs only time naive when asked to.
const NAIVE_TIMING_LIMIT: u64 = 200_000_000;

fn main() -> ExitCode {
    let options = args::Options::from(args::Cli::parse());
    let kept = malloc::keep_freed_memory();
    if let Some(threads) = options.threads
        && let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
    {
        eprintln!("cannot set up {threads} threads: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(linger) = options.linger {
        gemmconv::set_linger(linger);
    }
    if options.peak {
        peak::print();
        return ExitCode::SUCCESS;
    }
    if let Some(id) = &options.family {
        return match family::run(id, options.runs, options.save.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::FAILURE
            }
        };
    }
    if kept {
        println!(
            "(glibc malloc keeps freed memory, as a long-running process would: cli/src/malloc.rs)"
        );
    }
    let result = if options.double {
        run::<f64>(&options)
    } else {
        run::<f32>(&options)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

struct Problem<T: Element> {
    x: Array4<T>,
    w: Array4<T>,
    b: Option<Array1<T>>,
    dy: Array4<T>,
}

fn problem<T: Element>(options: &args::Options) -> Result<Problem<T>, String> {
    let spec = &options.spec;
    let out = spec
        .output_shape(options.input)
        .map_err(|e| e.to_string())?;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0);
    let x = if options.notebook {
        // np.arange(28*28*16).reshape(16,1,28,28)
        Array4::from_shape_fn(options.input, |(n, c, h, w)| {
            let [_, cs, hs, ws] = options.input;
            T::from_f64((((n * cs + c) * hs + h) * ws + w) as f64)
        })
    } else {
        Array4::from_shape_simple_fn(options.input, || T::from_f64(rng.random_range(-1.0..1.0)))
    };
    let layer = Conv2d::<T>::new_kaiming(spec.clone(), &mut rng).map_err(|e| e.to_string())?;
    let b = spec.has_bias().then(|| {
        Array1::from_shape_simple_fn(spec.out_channels(), || {
            T::from_f64(rng.random_range(-1.0..1.0))
        })
    });
    let dy = Array4::from_shape_simple_fn(out, || T::from_f64(rng.random_range(-1.0..1.0)));
    Ok(Problem {
        x,
        w: layer.weight().clone(),
        b,
        dy,
    })
}

fn relative_error<T: Element, D: gemmconv::ndarray::Dimension>(
    got: &gemmconv::ndarray::Array<T, D>,
    want: &gemmconv::ndarray::Array<T, D>,
) -> f64 {
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.into_f64().abs()));
    let diff = got.iter().zip(want).fold(0.0f64, |m, (a, b)| {
        m.max((a.into_f64() - b.into_f64()).abs())
    });
    diff / scale
}

/// Naive's results, that every other result is checked against.
struct Reference<T: Element> {
    y: Array4<T>,
    g: Gradients<T>,
    tolerance: f64,
}

/// Prints how far `y` and `g` are from the reference, if there is one; an
/// error naming `label` when beyond the tolerance.
fn check<T: Element>(
    reference: Option<&Reference<T>>,
    label: &str,
    y: &Array4<T>,
    g: &Gradients<T>,
) -> Result<(), String> {
    match reference {
        Some(reference) => reference.check(label, y, g),
        None => Ok(()),
    }
}

impl<T: Element> Reference<T> {
    /// Prints how far `y` and `g` are from the reference; an error naming
    /// `label` when beyond the tolerance.
    fn check(&self, label: &str, y: &Array4<T>, g: &Gradients<T>) -> Result<(), String> {
        let errors = [
            relative_error(y, &self.y),
            relative_error(&g.dx, &self.g.dx),
            relative_error(&g.dw, &self.g.dw),
            relative_error(&g.db, &self.g.db),
        ];
        let worst = errors.iter().cloned().fold(0.0, f64::max);
        println!(
            "  {label:8} agrees with naive: max relative error {worst:.1e} (y {:.1e}, dx {:.1e}, dw {:.1e}, db {:.1e})",
            errors[0], errors[1], errors[2], errors[3]
        );
        if worst > self.tolerance {
            return Err(format!(
                "{label} disagrees with naive beyond {:e}; not timing it",
                self.tolerance
            ));
        }
        Ok(())
    }
}

fn run<T: Element + ndarray_npy::WritableElement>(options: &args::Options) -> Result<(), String> {
    let spec = &options.spec;
    let p = problem::<T>(options)?;
    let out = spec
        .output_shape(options.input)
        .map_err(|e| e.to_string())?;
    let [_, c_in_g, kh, kw] = spec.weight_shape();
    let fwd_flops = 2.0 * out.iter().product::<usize>() as f64 * (c_in_g * kh * kw) as f64;
    println!("gemmconv: {}", options.title);
    println!("  input {:?} -> output {:?}, {spec:?}", options.input, out);
    println!(
        "  {}, {} threads, GEMM: {}, forward {:.4} GFLOP, backward {:.4} GFLOP",
        T::NAME,
        rayon::current_num_threads(),
        gemmconv::gemm_backend(),
        fwd_flops / 1e9,
        2.0 * fwd_flops / 1e9
    );

    let bias = p.b.as_ref().map(|b| b.view());
    let naive = |pass: &str| {
        eprintln!(
            "(computing the naive reference {pass} to check every result against; --no-check skips it)"
        );
    };
    let y_ref = if options.check {
        naive("forward");
        Some(
            conv2d(p.x.view(), p.w.view(), bias, spec, Algorithm::Naive)
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    let dy = match (options.notebook, &y_ref) {
        // The notebook feeds its output back as the output gradient.
        (true, Some(y)) => y.clone(),
        (true, None) => conv2d(p.x.view(), p.w.view(), bias, spec, Algorithm::Strided)
            .map_err(|e| e.to_string())?,
        (false, _) => p.dy.clone(),
    };
    let reference = match y_ref {
        Some(y) => {
            naive("backward");
            let g = conv2d_backward(p.x.view(), p.w.view(), dy.view(), spec, Algorithm::Naive)
                .map_err(|e| e.to_string())?;
            Some(Reference {
                y,
                g,
                tolerance: if T::NAME == "f32" { 1e-4 } else { 1e-10 },
            })
        }
        None => None,
    };
    if options.kernels.len() > 1 {
        return compare::kernels(options, &p, &dy, reference.as_ref(), fwd_flops);
    }

    let asked = options.algorithms.clone();
    let algorithms = asked.clone().unwrap_or_else(|| {
        Algorithm::ALL
            .into_iter()
            .filter(|&a| a != Algorithm::Naive || fwd_flops < NAIVE_TIMING_LIMIT as f64)
            .collect()
    });
    let mut results: Vec<(Algorithm, Timing, Timing)> = Vec::new();
    for algo in algorithms {
        let mut ws = options.workspace();
        let y = conv2d_with_workspace(p.x.view(), p.w.view(), bias, spec, algo, &mut ws)
            .map_err(|e| e.to_string())?;
        let g: Gradients<T> =
            conv2d_backward_with_workspace(p.x.view(), p.w.view(), dy.view(), spec, algo, &mut ws)
                .map_err(|e| e.to_string())?;
        check(reference.as_ref(), algo.name(), &y, &g)?;
        // Timed as the notebook and other frameworks' functional calls are:
        // each call allocates its results (y; dx, dw, db), nothing else; the
        // workspace is kept, as a `Conv2d` layer keeps it.
        let target = Duration::from_millis(200);
        let fwd = timeit(options.runs, target, || {
            let y = conv2d_with_workspace(p.x.view(), p.w.view(), bias, spec, algo, &mut ws);
            std::hint::black_box(y.expect("validated above"));
        });
        let bwd = timeit(options.runs, target, || {
            let g = conv2d_backward_with_workspace(
                p.x.view(),
                p.w.view(),
                dy.view(),
                spec,
                algo,
                &mut ws,
            );
            std::hint::black_box(g.expect("validated above"));
        });
        results.push((algo, fwd, bwd));
    }
    if let (Some(dir), Some(reference)) = (&options.save, &reference) {
        save(dir, options, &p, &dy, &reference.y, &reference.g, &results)
            .map_err(|e| format!("cannot write to {}: {e}", dir.display()))?;
    }

    println!();
    let naive = results
        .iter()
        .find(|r| r.0 == Algorithm::Naive)
        .map(|r| (r.1.mean(), r.2.mean()));
    for (pass, pick, flops) in [
        ("forward", 0usize, fwd_flops),
        ("backward (dx, dw, db)", 1, 2.0 * fwd_flops),
    ] {
        println!("{pass}:");
        for (algo, fwd, bwd) in &results {
            let t = if pick == 0 { fwd } else { bwd };
            let mut line = format!(
                "  {:8} {t}  {:7.2} GFLOP/s",
                algo.name(),
                flops / t.mean() / 1e9
            );
            if let Some(naive) = naive {
                let base = if pick == 0 { naive.0 } else { naive.1 };
                line += &format!("  {:7.1}x naive", base / t.mean());
            }
            if options.notebook {
                let published = NOTEBOOK.iter().find(|n| n.0 == *algo).expect("all listed");
                let base = if pick == 0 { published.1 } else { published.2 };
                line += &format!(
                    "  {:7.1}x the notebook's {} ({})",
                    base / t.mean(),
                    algo.name(),
                    format_seconds(base)
                );
            }
            println!("{line}");
        }
    }
    Ok(())
}

/// Writes what another framework needs to redo this run and check itself:
/// the inputs, naive's results, the geometry (`spec.txt`) and our medians
/// (`times.txt`, seconds).
fn save<T: Element + ndarray_npy::WritableElement>(
    dir: &std::path::Path,
    options: &args::Options,
    p: &Problem<T>,
    dy: &Array4<T>,
    y: &Array4<T>,
    g: &Gradients<T>,
    results: &[(Algorithm, Timing, Timing)],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let npy = |name: &str, array: &dyn WriteNpy| {
        array
            .write_to(&dir.join(name))
            .map_err(std::io::Error::other)
    };
    npy("x.npy", &p.x)?;
    npy("w.npy", &p.w)?;
    if let Some(b) = &p.b {
        npy("b.npy", b)?;
    }
    npy("dy.npy", dy)?;
    npy("y.npy", y)?;
    npy("dx.npy", &g.dx)?;
    npy("dw.npy", &g.dw)?;
    npy("db.npy", &g.db)?;
    let spec = &options.spec;
    let (pad, stride, dilation) = (spec.get_padding(), spec.get_stride(), spec.get_dilation());
    std::fs::write(
        dir.join("spec.txt"),
        format!(
            "stride {} {}\npadding {} {} {} {}\ndilation {} {}\ngroups {}\nthreads {}\n",
            stride.0,
            stride.1,
            pad.top,
            pad.bottom,
            pad.left,
            pad.right,
            dilation.0,
            dilation.1,
            spec.get_groups(),
            rayon::current_num_threads()
        ),
    )?;
    let times: String = results
        .iter()
        .map(|(algo, fwd, bwd)| {
            let (fwd, bwd) = (fwd.call_median(), bwd.call_median());
            format!("{} {fwd:e} {bwd:e}\n", algo.name())
        })
        .collect();
    std::fs::write(dir.join("times.txt"), times)
}

/// An array that can be written as a `.npy` file (`ndarray-npy`), whatever
/// its rank and element type.
trait WriteNpy {
    fn write_to(&self, path: &std::path::Path) -> Result<(), ndarray_npy::WriteNpyError>;
}

impl<A, S, D> WriteNpy for gemmconv::ndarray::ArrayBase<S, D>
where
    A: ndarray_npy::WritableElement,
    S: gemmconv::ndarray::Data<Elem = A>,
    D: gemmconv::ndarray::Dimension,
{
    fn write_to(&self, path: &std::path::Path) -> Result<(), ndarray_npy::WriteNpyError> {
        ndarray_npy::write_npy(path, self)
    }
}
