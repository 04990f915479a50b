//! Not part of the API (behind the internal `_internal` feature): the
//! benchmark suite, the shapes every speed figure of the project is
//! measured on (`benches/SUITE.md`), so that the benches, the command-line
//! tool and the peers share one definition.

use crate::spec::Conv2dSpec;

/// One row of the suite: a named convolution problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuiteRow {
    /// The row's id, used in benchmark ids.
    pub id: &'static str,
    /// The geometry.
    pub spec: Conv2dSpec,
    /// The input shape `[n, c, h, w]`.
    pub input: [usize; 4],
    /// Whether the row is measured in `f64` (`seed64`) rather than `f32`.
    pub double: bool,
}

impl SuiteRow {
    /// Forward floating-point operations: two per multiply-add.
    ///
    /// ```
    /// let seed = gemmconv::suite::row("seed").unwrap();
    /// assert_eq!(seed.forward_flops(), 2 * 16 * 6 * 24 * 24 * 25);
    /// ```
    pub fn forward_flops(&self) -> u64 {
        let out = self
            .spec
            .output_shape(self.input)
            .expect("suite rows are valid");
        let [_, c_in_g, kh, kw] = self.spec.weight_shape();
        2 * out.iter().product::<usize>() as u64 * (c_in_g * kh * kw) as u64
    }
}

/// Every row, in the order of `benches/SUITE.md`.
///
/// ```
/// let ids: Vec<_> = gemmconv::suite::rows().iter().map(|r| r.id).collect();
/// assert_eq!(ids, ["seed", "seed64", "r3x3", "r3x3s2", "r1x1", "stem", "dw", "dil"]);
/// ```
pub fn rows() -> Vec<SuiteRow> {
    let row = |id, n, c_in, hw, c_out, k, s, p, d, g, double| SuiteRow {
        id,
        spec: Conv2dSpec::new(c_in, c_out, (k, k))
            .stride((s, s))
            .padding((p, p))
            .dilation((d, d))
            .groups(g),
        input: [n, c_in, hw, hw],
        double,
    };
    vec![
        row("seed", 16, 1, 28, 6, 5, 1, 0, 1, 1, false),
        row("seed64", 16, 1, 28, 6, 5, 1, 0, 1, 1, true),
        row("r3x3", 8, 64, 56, 64, 3, 1, 1, 1, 1, false),
        row("r3x3s2", 8, 128, 56, 128, 3, 2, 1, 1, 1, false),
        row("r1x1", 8, 256, 28, 512, 1, 1, 0, 1, 1, false),
        row("stem", 8, 3, 224, 64, 7, 2, 3, 1, 1, false),
        row("dw", 8, 128, 56, 128, 3, 1, 1, 1, 128, false),
        row("dil", 8, 64, 56, 64, 3, 1, 2, 2, 1, false),
    ]
}

/// The row with id `id`.
///
/// ```
/// assert_eq!(gemmconv::suite::row("r1x1").unwrap().input, [8, 256, 28, 28]);
/// assert!(gemmconv::suite::row("nope").is_none());
/// ```
pub fn row(id: &str) -> Option<SuiteRow> {
    rows().into_iter().find(|r| r.id == id)
}
