//! Command-line options, in the style of oneDNN's benchdnn: a suite row or a
//! geometry, dtype, algorithms, kernels and threads.

use clap::{Parser, ValueEnum};
use gemmconv::{Algorithm, Conv2dSpec, InputGradient, Kernel, Padding, Workspace};
use std::path::PathBuf;

/// The geometry flags, which a suite row excludes.
const GEOMETRY: [&str; 18] = [
    "mb", "ic", "ih", "iw", "oc", "kh", "kw", "sh", "sw", "ph", "pw", "pt", "pb", "pl", "pr", "dh",
    "dw", "g",
];

/// The notebook's comparison of naive loops, per-sample im2col and the
/// strided lowering, forward and backward, each validated against the naive
/// reference before it is timed.
///
/// With no options: the notebook's workload (input 16x1x28x28, 6 filters
/// 5x5, float64). A suite row (benches/SUITE.md) or a geometry picks another
/// problem; geometry flags not given keep the notebook's values, and a
/// width flag follows its height twin unless given.
#[derive(Parser, Debug)]
#[command(name = "gemmconv", version, max_term_width = 100)]
pub struct Cli {
    /// A row of benches/SUITE.md, of the suite or the extended suite.
    #[arg(long, value_parser = suite_row, conflicts_with_all = GEOMETRY)]
    row: Option<String>,
    /// A family row of benches/SUITE.md (a transposed or 1-D
    /// convolution): strided, checked against im2col, timed.
    #[arg(long, value_parser = family_row, conflicts_with_all = GEOMETRY, conflicts_with = "row")]
    family: Option<String>,
    /// Batch size.
    #[arg(long, help_heading = "Geometry")]
    mb: Option<usize>,
    /// Input channels.
    #[arg(long, help_heading = "Geometry")]
    ic: Option<usize>,
    /// Input height.
    #[arg(long, help_heading = "Geometry")]
    ih: Option<usize>,
    /// Input width (default: the height).
    #[arg(long, help_heading = "Geometry")]
    iw: Option<usize>,
    /// Output channels.
    #[arg(long, help_heading = "Geometry")]
    oc: Option<usize>,
    /// Kernel height.
    #[arg(long, help_heading = "Geometry")]
    kh: Option<usize>,
    /// Kernel width (default: the height).
    #[arg(long, help_heading = "Geometry")]
    kw: Option<usize>,
    /// Row stride.
    #[arg(long, help_heading = "Geometry")]
    sh: Option<usize>,
    /// Column stride (default: the row stride).
    #[arg(long, help_heading = "Geometry")]
    sw: Option<usize>,
    /// Padding of the top and bottom.
    #[arg(long, help_heading = "Geometry")]
    ph: Option<usize>,
    /// Padding of the left and right (default: --ph).
    #[arg(long, help_heading = "Geometry")]
    pw: Option<usize>,
    /// Top padding (overrides --ph).
    #[arg(long, help_heading = "Geometry")]
    pt: Option<usize>,
    /// Bottom padding (overrides --ph).
    #[arg(long, help_heading = "Geometry")]
    pb: Option<usize>,
    /// Left padding (overrides --pw).
    #[arg(long, help_heading = "Geometry")]
    pl: Option<usize>,
    /// Right padding (overrides --pw).
    #[arg(long, help_heading = "Geometry")]
    pr: Option<usize>,
    /// Row dilation.
    #[arg(long, help_heading = "Geometry")]
    dh: Option<usize>,
    /// Column dilation (default: the row dilation).
    #[arg(long, help_heading = "Geometry")]
    dw: Option<usize>,
    /// Groups.
    #[arg(long, help_heading = "Geometry")]
    g: Option<usize>,
    /// Element type (default: f64 for the notebook's workload and seed64,
    /// else f32).
    #[arg(long, value_enum)]
    dtype: Option<Dtype>,
    /// Algorithms, comma-separated (default: all; naive is left out on
    /// large problems unless asked for).
    #[arg(long, value_enum, value_delimiter = ',')]
    alg: Option<Vec<AlgorithmName>>,
    /// Rayon threads (default: all cores, or RAYON_NUM_THREADS).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    threads: Option<u32>,
    /// The strided algorithm's kernel; several, comma-separated, are timed
    /// in turns in one process (--runs rounds), the fairest A/B on a noisy
    /// machine.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "auto")]
    kernel: Vec<KernelName>,
    /// How the column-matrix kernel computes the input gradient.
    #[arg(long, value_enum, default_value = "auto")]
    dx: InputGradientName,
    /// Cap on one lane's largest buffer, in bytes.
    #[arg(long, default_value_t = gemmconv::DEFAULT_COLUMN_CAP_BYTES)]
    cap: usize,
    /// The least arithmetic (FLOPs) a pass wakes a parallel lane for; 0
    /// cuts every pass into as many lanes as threads (default: the
    /// library's, 1 MFLOP or what handing work to a thread measures to
    /// cost on this machine, whichever is more).
    #[arg(long)]
    min_lane_flops: Option<usize>,
    /// How long, in microseconds, the pool's threads keep looking for work
    /// after a parallel pass; 0 lets them sleep at once (default: the
    /// library's, gemmconv::DEFAULT_LINGER).
    #[arg(long, value_name = "MICROS")]
    linger: Option<u64>,
    /// Timing runs.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Write the inputs, naive's results (.npy), the geometry and the
    /// timings to this directory, for benches/pytorch.py to check itself
    /// and compare against.
    #[arg(long, value_name = "DIR")]
    save: Option<PathBuf>,
    /// Skip the naive reference (slow on large problems): nothing is
    /// checked before it is timed.
    #[arg(long, conflicts_with = "save")]
    no_check: bool,
    /// Measure the machine's fused multiply-add peak (f32 GFLOP/s, one
    /// thread and all) instead of running a convolution.
    #[arg(long)]
    peak: bool,
}

/// The element types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Dtype {
    F32,
    F64,
}

/// [`Algorithm`], by its command-line name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum AlgorithmName {
    Naive,
    Im2col,
    Strided,
}

impl From<AlgorithmName> for Algorithm {
    fn from(name: AlgorithmName) -> Self {
        match name {
            AlgorithmName::Naive => Algorithm::Naive,
            AlgorithmName::Im2col => Algorithm::Im2col,
            AlgorithmName::Strided => Algorithm::Strided,
        }
    }
}

/// [`Kernel`], by its command-line name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum KernelName {
    Auto,
    Gemm,
    Direct,
    Shifted,
    Winograd,
    Winograd4x4,
    Measure,
}

impl From<KernelName> for Kernel {
    fn from(name: KernelName) -> Self {
        match name {
            KernelName::Auto => Kernel::Auto,
            KernelName::Gemm => Kernel::Gemm,
            KernelName::Direct => Kernel::Direct,
            KernelName::Shifted => Kernel::Shifted,
            KernelName::Winograd => Kernel::Winograd,
            KernelName::Winograd4x4 => Kernel::Winograd4x4,
            KernelName::Measure => Kernel::Measure,
        }
    }
}

/// [`InputGradient`], by its command-line name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum InputGradientName {
    Auto,
    Col2im,
    Lowering,
}

impl From<InputGradientName> for InputGradient {
    fn from(name: InputGradientName) -> Self {
        match name {
            InputGradientName::Auto => InputGradient::Auto,
            InputGradientName::Col2im => InputGradient::Col2im,
            InputGradientName::Lowering => InputGradient::ErrorLowering,
        }
    }
}

/// A row id of the suite or the extended suite.
fn suite_row(id: &str) -> Result<String, String> {
    match gemmconv::suite::row(id) {
        Some(_) => Ok(id.to_string()),
        None => Err(format!(
            "not a row of benches/SUITE.md; the suite's are {}, and the extended suite's are \
             listed there",
            gemmconv::suite::rows()
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// A row id of the family suite.
fn family_row(id: &str) -> Result<String, String> {
    match gemmconv::suite::family_row(id) {
        Some(_) => Ok(id.to_string()),
        None => Err(format!(
            "not a family row of benches/SUITE.md; they are {}",
            gemmconv::suite::family_rows()
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// What the options ask for, resolved.
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
    /// The least work of a lane, when set by hand.
    pub min_lane_flops: Option<usize>,
    /// How long the pool's threads linger after a parallel pass, when set.
    pub linger: Option<std::time::Duration>,
    /// Whether this is the notebook's workload (compare with its figures).
    pub notebook: bool,
    /// Where to write the problem, its reference results and the timings.
    pub save: Option<PathBuf>,
    /// Whether to check every result against the naive reference.
    pub check: bool,
    /// Whether to measure the FMA peak instead.
    pub peak: bool,
    /// A family row to run instead.
    pub family: Option<String>,
}

impl From<Cli> for Options {
    fn from(cli: Cli) -> Self {
        let (title, spec, input, double, notebook) = match &cli.row {
            Some(id) => {
                let r = gemmconv::suite::row(id).expect("clap checked the id");
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
                let (kh, sh) = (cli.kh.unwrap_or(5), cli.sh.unwrap_or(1));
                let (ph, dh) = (cli.ph.unwrap_or(0), cli.dh.unwrap_or(1));
                let (kw, sw) = (cli.kw.unwrap_or(kh), cli.sw.unwrap_or(sh));
                let (pw, dw) = (cli.pw.unwrap_or(ph), cli.dw.unwrap_or(dh));
                let padding = Padding {
                    top: cli.pt.unwrap_or(ph),
                    bottom: cli.pb.unwrap_or(ph),
                    left: cli.pl.unwrap_or(pw),
                    right: cli.pr.unwrap_or(pw),
                };
                let (ic, ih) = (cli.ic.unwrap_or(1), cli.ih.unwrap_or(28));
                let spec = Conv2dSpec::new(ic, cli.oc.unwrap_or(6), (kh, kw))
                    .stride((sh, sw))
                    .padding(padding)
                    .dilation((dh, dw))
                    .groups(cli.g.unwrap_or(1));
                let input = [cli.mb.unwrap_or(16), ic, ih, cli.iw.unwrap_or(ih)];
                let notebook = cli.geometry_given().is_none();
                let title = if notebook {
                    "the notebook's workload"
                } else {
                    "geometry from the command line"
                };
                // Only the notebook's own workload defaults to f64, like the notebook.
                (title.to_string(), spec, input, notebook, notebook)
            }
        };
        let double = cli.dtype.map_or(double, |d| d == Dtype::F64);
        Options {
            title,
            spec,
            input,
            double,
            algorithms: cli
                .alg
                .map(|names| names.into_iter().map(Algorithm::from).collect()),
            threads: cli.threads.map(|t| t as usize),
            runs: cli.runs as usize,
            kernels: cli.kernel.into_iter().map(Kernel::from).collect(),
            input_gradient: cli.dx.into(),
            cap: cli.cap,
            min_lane_flops: cli.min_lane_flops,
            linger: cli.linger.map(std::time::Duration::from_micros),
            notebook: notebook && double,
            save: cli.save,
            check: !cli.no_check,
            peak: cli.peak,
            family: cli.family,
        }
    }
}

impl Cli {
    /// The first geometry flag given, if any.
    fn geometry_given(&self) -> Option<&'static str> {
        let given = [
            self.mb, self.ic, self.ih, self.iw, self.oc, self.kh, self.kw, self.sh, self.sw,
            self.ph, self.pw, self.pt, self.pb, self.pl, self.pr, self.dh, self.dw, self.g,
        ];
        GEOMETRY
            .into_iter()
            .zip(given)
            .find_map(|(name, value)| value.map(|_| name))
    }
}

impl Options {
    /// The workspace the options ask for (with their first kernel).
    pub fn workspace<T>(&self) -> Workspace<T> {
        self.workspace_with(self.kernels[0])
    }

    /// The workspace the options ask for, with `kernel`.
    pub fn workspace_with<T>(&self, kernel: Kernel) -> Workspace<T> {
        let ws = Workspace::new()
            .with_kernel(kernel)
            .with_input_gradient(self.input_gradient)
            .with_column_cap_bytes(self.cap);
        match self.min_lane_flops {
            Some(flops) => ws.with_min_lane_flops(flops),
            None => ws,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        Cli::try_parse_from(std::iter::once("gemmconv").chain(args.iter().copied()))
            .map(Options::from)
    }

    #[test]
    fn no_options_is_the_notebook_in_f64() {
        let options = parse(&[]).unwrap();
        assert!(options.notebook && options.double && options.check);
        assert_eq!(options.input, [16, 1, 28, 28]);
        assert_eq!(options.kernels, [Kernel::Auto]);
    }

    /// The options that reach the workspace, and the peak probe.
    #[test]
    fn workspace_options_and_peak_parse() {
        let options = parse(&["--kernel", "measure", "--min-lane-flops", "0", "--peak"]).unwrap();
        let ws = options.workspace::<f32>();
        assert_eq!(ws.kernel(), Kernel::Measure);
        assert_eq!(ws.min_lane_flops(), 0);
        assert!(options.peak);
        let defaults = parse(&[]).unwrap();
        assert_eq!(
            defaults.workspace::<f32>().min_lane_flops(),
            gemmconv::DEFAULT_MIN_LANE_FLOPS
        );
        assert!(!defaults.peak);
        assert_eq!(defaults.linger, None);
        let lingering = parse(&["--linger", "250"]).unwrap();
        assert_eq!(
            lingering.linger,
            Some(std::time::Duration::from_micros(250))
        );
    }

    #[test]
    fn width_flags_follow_their_height_twins() {
        let options = parse(&["--ih", "9", "--kh", "3", "--sh", "2", "--ph", "1"]).unwrap();
        assert_eq!(options.input, [16, 1, 9, 9]);
        assert_eq!(options.spec.kernel(), (3, 3));
        assert_eq!(options.spec.get_stride(), (2, 2));
        assert_eq!(options.spec.get_padding().right, 1);
        assert!(!options.notebook && !options.double);
    }

    #[test]
    fn lists_and_value_enums_parse() {
        let options = parse(&[
            "--row",
            "r3x3",
            "--kernel",
            "gemm,shifted",
            "--alg",
            "strided",
            "--dx",
            "lowering",
            "--no-check",
        ])
        .unwrap();
        assert_eq!(options.kernels, [Kernel::Gemm, Kernel::Shifted]);
        assert_eq!(options.algorithms, Some(vec![Algorithm::Strided]));
        assert_eq!(options.input_gradient, InputGradient::ErrorLowering);
        assert!(!options.check);
    }

    #[test]
    fn extended_suite_rows_are_rows_too() {
        let options = parse(&["--row", "rnx-56x128-3x3g32-128"]).unwrap();
        assert_eq!(options.spec.get_groups(), 32);
        assert_eq!(options.input, [8, 128, 56, 56]);
        assert!(!options.double);
    }

    #[test]
    fn bad_input_is_refused() {
        for args in [
            &["--row", "nope"][..],
            &["--row", "r3x3", "--mb", "1"],
            &["--kernel", "fast"],
            &["--threads", "0"],
            &["--mb", "x"],
            &["--no-check", "--save", "dir"],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }
}
