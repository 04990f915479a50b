//! Command-line options, in the style of oneDNN's benchdnn: a suite row or a
//! geometry, dtype, algorithms and threads.

use gemmconv::{Algorithm, Conv2dSpec, InputGradient, Kernel, Padding, Workspace};

pub const USAGE: &str = "\
usage: gemmconv [options]

With no options: the notebook's comparison (input 16x1x28x28, 6 filters 5x5,
float64), naive / im2col / strided, forward and backward.

  --row ID          a row of benches/SUITE.md (seed, seed64, r3x3, r3x3s2, r1x1, stem, dw, dil)
  --mb N --ic C --ih H --iw W --oc K --kh KH --kw KW
  --sh S --sw S --ph P --pw P --pt P --pb P --pl P --pr P --dh D --dw D --g G
                    a geometry (defaults: the notebook's; --iw/--kw/--sw/--pw/--dw follow
                    their height twin unless given; --pt/--pb/--pl/--pr override --ph/--pw)
  --dtype f32|f64   element type (default: f64 for the notebook and seed64, else f32)
  --alg LIST        comma-separated algorithms (default: naive,im2col,strided; naive
                    is skipped on large problems unless asked for)
  --threads N       rayon threads (default: all cores, or RAYON_NUM_THREADS)
  --kernel LIST     strided kernel: auto, gemm, direct, shifted or winograd
                    (default auto); several, comma-separated, time the strided
                    algorithm with each in turn, calls alternating in one process
                    (--runs rounds; the fairest A/B on a noisy machine)
  --dx M            strided input gradient: auto, col2im or lowering (default auto)
  --cap BYTES       strided column-matrix cap per thread (default 2 MiB)
  --runs N          timing runs (default 7)
  --save DIR        write the inputs, naive's results (.npy), the geometry and the
                    timings to DIR, for benches/pytorch.py to check and compare against
  --help            this text
";

#[derive(Debug)]
pub struct Options {
    pub title: String,
    pub spec: Conv2dSpec,
    pub input: [usize; 4],
    pub double: bool,
    pub algorithms: Option<Vec<Algorithm>>,
    pub threads: Option<usize>,
    pub runs: usize,
    /// The strided algorithm's kernels: one, or several to compare.
    pub kernels: Vec<Kernel>,
    pub input_gradient: InputGradient,
    pub cap: usize,
    /// Whether this is the notebook's workload (compare with its figures).
    pub notebook: bool,
    /// Where to write the problem, its reference results and the timings.
    pub save: Option<std::path::PathBuf>,
}

fn number(flag: &str, value: Option<String>) -> Result<usize, String> {
    let value = value.ok_or(format!("{flag} needs a value"))?;
    value
        .parse()
        .map_err(|_| format!("{flag}: expected a non-negative integer, got {value:?}"))
}

fn kernel(name: &str) -> Result<Kernel, String> {
    match name {
        "auto" => Ok(Kernel::Auto),
        "gemm" => Ok(Kernel::Gemm),
        "direct" => Ok(Kernel::Direct),
        "shifted" => Ok(Kernel::Shifted),
        "winograd" => Ok(Kernel::Winograd),
        other => Err(format!(
            "--kernel: expected auto, gemm, direct, shifted or winograd, got {other:?}"
        )),
    }
}

pub fn parse(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut args = args.peekable();
    let mut geometry = std::collections::BTreeMap::<&'static str, usize>::new();
    let mut row = None;
    let mut dtype = None;
    let mut algorithms = None;
    let mut threads = None;
    let mut runs = 7;
    let mut kernels = vec![Kernel::Auto];
    let mut input_gradient = InputGradient::Auto;
    let mut cap = gemmconv::DEFAULT_COLUMN_CAP_BYTES;
    let mut save = None;
    const GEOMETRY: [&str; 19] = [
        "mb", "ic", "ih", "iw", "oc", "kh", "kw", "sh", "sw", "ph", "pw", "pt", "pb", "pl", "pr",
        "dh", "dw", "g", "",
    ];
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--help" | "-h" => return Err(USAGE.to_string()),
            "--row" => row = Some(args.next().ok_or("--row needs a value")?),
            "--dtype" => {
                dtype = match args.next().as_deref() {
                    Some("f32") => Some(false),
                    Some("f64") => Some(true),
                    other => return Err(format!("--dtype: expected f32 or f64, got {other:?}")),
                }
            }
            "--alg" => {
                let list = args.next().ok_or("--alg needs a value")?;
                algorithms = Some(
                    list.split(',')
                        .map(str::parse)
                        .collect::<Result<Vec<Algorithm>, _>>()?,
                );
            }
            "--threads" => threads = Some(number("--threads", args.next())?),
            "--runs" => runs = number("--runs", args.next())?.max(1),
            "--cap" => cap = number("--cap", args.next())?,
            "--save" => save = Some(args.next().ok_or("--save needs a directory")?.into()),
            "--kernel" => {
                let list = args.next().ok_or("--kernel needs a value")?;
                kernels = list.split(',').map(kernel).collect::<Result<_, _>>()?;
            }
            "--dx" => {
                input_gradient = match args.next().as_deref() {
                    Some("auto") => InputGradient::Auto,
                    Some("col2im") => InputGradient::Col2im,
                    Some("lowering") => InputGradient::ErrorLowering,
                    other => {
                        return Err(format!(
                            "--dx: expected auto, col2im or lowering, got {other:?}"
                        ));
                    }
                }
            }
            other => {
                let name = other
                    .strip_prefix("--")
                    .and_then(|n| GEOMETRY.iter().find(|g| !g.is_empty() && **g == n))
                    .ok_or(format!("unknown option {other:?}\n\n{USAGE}"))?;
                geometry.insert(name, number(other, args.next())?);
            }
        }
    }
    let (title, spec, input, double, notebook) = match row {
        Some(id) => {
            if !geometry.is_empty() {
                return Err("--row and geometry options exclude each other".into());
            }
            let r = gemmconv::suite::row(&id).ok_or(format!("unknown suite row {id:?}"))?;
            let notebook = r.id.starts_with("seed");
            (
                format!("suite row {}", r.id),
                r.spec,
                r.input,
                r.double,
                notebook,
            )
        }
        None => {
            let get = |k: &str, default: usize| geometry.get(k).copied().unwrap_or(default);
            let (kh, sh, ph, dh) = (get("kh", 5), get("sh", 1), get("ph", 0), get("dh", 1));
            let (kw, sw, pw, dw) = (get("kw", kh), get("sw", sh), get("pw", ph), get("dw", dh));
            let padding = Padding {
                top: get("pt", ph),
                bottom: get("pb", ph),
                left: get("pl", pw),
                right: get("pr", pw),
            };
            let (ic, ih) = (get("ic", 1), get("ih", 28));
            let spec = Conv2dSpec::new(ic, get("oc", 6), (kh, kw))
                .stride((sh, sw))
                .padding(padding)
                .dilation((dh, dw))
                .groups(get("g", 1));
            let input = [get("mb", 16), ic, ih, get("iw", ih)];
            let notebook = geometry.is_empty();
            let title = if notebook {
                "the notebook's workload".to_string()
            } else {
                "geometry from the command line".to_string()
            };
            // Only the notebook's own workload defaults to f64, like the notebook.
            (title, spec, input, notebook, notebook)
        }
    };
    let double = dtype.unwrap_or(double);
    Ok(Options {
        title,
        spec,
        input,
        double,
        algorithms,
        threads,
        runs,
        kernels,
        input_gradient,
        cap,
        notebook: notebook && double,
        save,
    })
}

impl Options {
    /// The workspace the options ask for (with their first kernel).
    pub fn workspace<T>(&self) -> Workspace<T> {
        self.workspace_with(self.kernels[0])
    }

    /// The workspace the options ask for, with `kernel`.
    pub fn workspace_with<T>(&self, kernel: Kernel) -> Workspace<T> {
        Workspace::new()
            .with_kernel(kernel)
            .with_input_gradient(self.input_gradient)
            .with_column_cap_bytes(self.cap)
    }
}
