//! Not part of the API (behind the internal `_internal` feature): the
//! benchmark suite, the shapes every speed figure of the project is
//! measured on (`benches/SUITE.md`), so that the benches, the command-line
//! tool and the peers share one definition.

use crate::conv1d_spec::Conv1dSpec;
use crate::spec::Conv2dSpec;
use crate::transposed_spec::ConvTranspose2dSpec;

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
    let row = square_row;
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

/// A row with square images and kernels, and the same stride, padding and
/// dilation on both axes.
#[allow(clippy::too_many_arguments)]
fn square_row(
    id: &'static str,
    n: usize,
    c_in: usize,
    hw: usize,
    c_out: usize,
    k: usize,
    s: usize,
    p: usize,
    d: usize,
    g: usize,
    double: bool,
) -> SuiteRow {
    SuiteRow {
        id,
        spec: Conv2dSpec::new(c_in, c_out, (k, k))
            .stride((s, s))
            .padding((p, p))
            .dilation((d, d))
            .groups(g),
        input: [n, c_in, hw, hw],
        double,
    }
}

/// A square layer: (id, batch, c_in, height = width, c_out, kernel,
/// stride, padding, dilation, groups).
type Layer = (
    &'static str,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
);

/// A network's layers (`(id, c_in, height = width, c_out, kernel, stride,
/// padding, dilation, groups)`) as [`Layer`]s at batch 1, then at batch 8,
/// their ids ending in `-b1` and `-b8`.
macro_rules! at_batches_1_and_8 {
    ($( ($id:literal, $($geometry:expr),+) ),+ $(,)?) => {
        [
            $( (concat!($id, "-b1"), 1, $($geometry),+), )+
            $( (concat!($id, "-b8"), 8, $($geometry),+), )+
        ]
    };
}

/// The extended suite, in the order of `benches/SUITE.md` ("Extended
/// suite"): ResNet-50's and MobileNet-v2's distinct convolution layers at
/// batch 1 and 8, some at batch 32, large single images, 5x5 and 7x7
/// kernels, and grouped convolutions. All `f32`.
///
/// ```
/// let rows = gemmconv::suite::extended_rows();
/// assert!(rows.iter().any(|r| r.id == "rn50-56x64-3x3-64-b1"));
/// assert!(rows.iter().all(|r| !r.double));
/// ```
pub fn extended_rows() -> Vec<SuiteRow> {
    let resnet50 = at_batches_1_and_8![
        ("rn50-224x3-7x7s2-64", 3, 224, 64, 7, 2, 3, 1, 1),
        ("rn50-56x64-1x1-64", 64, 56, 64, 1, 1, 0, 1, 1),
        ("rn50-56x64-3x3-64", 64, 56, 64, 3, 1, 1, 1, 1),
        ("rn50-56x64-1x1-256", 64, 56, 256, 1, 1, 0, 1, 1),
        ("rn50-56x256-1x1-64", 256, 56, 64, 1, 1, 0, 1, 1),
        ("rn50-56x256-1x1-128", 256, 56, 128, 1, 1, 0, 1, 1),
        ("rn50-56x128-3x3s2-128", 128, 56, 128, 3, 2, 1, 1, 1),
        ("rn50-28x128-1x1-512", 128, 28, 512, 1, 1, 0, 1, 1),
        ("rn50-56x256-1x1s2-512", 256, 56, 512, 1, 2, 0, 1, 1),
        ("rn50-28x512-1x1-128", 512, 28, 128, 1, 1, 0, 1, 1),
        ("rn50-28x128-3x3-128", 128, 28, 128, 3, 1, 1, 1, 1),
        ("rn50-28x512-1x1-256", 512, 28, 256, 1, 1, 0, 1, 1),
        ("rn50-28x256-3x3s2-256", 256, 28, 256, 3, 2, 1, 1, 1),
        ("rn50-14x256-1x1-1024", 256, 14, 1024, 1, 1, 0, 1, 1),
        ("rn50-28x512-1x1s2-1024", 512, 28, 1024, 1, 2, 0, 1, 1),
        ("rn50-14x1024-1x1-256", 1024, 14, 256, 1, 1, 0, 1, 1),
        ("rn50-14x256-3x3-256", 256, 14, 256, 3, 1, 1, 1, 1),
        ("rn50-14x1024-1x1-512", 1024, 14, 512, 1, 1, 0, 1, 1),
        ("rn50-14x512-3x3s2-512", 512, 14, 512, 3, 2, 1, 1, 1),
        ("rn50-7x512-1x1-2048", 512, 7, 2048, 1, 1, 0, 1, 1),
        ("rn50-14x1024-1x1s2-2048", 1024, 14, 2048, 1, 2, 0, 1, 1),
        ("rn50-7x2048-1x1-512", 2048, 7, 512, 1, 1, 0, 1, 1),
        ("rn50-7x512-3x3-512", 512, 7, 512, 3, 1, 1, 1, 1),
    ];
    let mobilenet_v2 = at_batches_1_and_8![
        ("mbv2-224x3-3x3s2-32", 3, 224, 32, 3, 2, 1, 1, 1),
        ("mbv2-112x32-dw3x3", 32, 112, 32, 3, 1, 1, 1, 32),
        ("mbv2-112x32-1x1-16", 32, 112, 16, 1, 1, 0, 1, 1),
        ("mbv2-112x16-1x1-96", 16, 112, 96, 1, 1, 0, 1, 1),
        ("mbv2-112x96-dw3x3s2", 96, 112, 96, 3, 2, 1, 1, 96),
        ("mbv2-56x96-1x1-24", 96, 56, 24, 1, 1, 0, 1, 1),
        ("mbv2-56x24-1x1-144", 24, 56, 144, 1, 1, 0, 1, 1),
        ("mbv2-56x144-dw3x3", 144, 56, 144, 3, 1, 1, 1, 144),
        ("mbv2-56x144-1x1-24", 144, 56, 24, 1, 1, 0, 1, 1),
        ("mbv2-56x144-dw3x3s2", 144, 56, 144, 3, 2, 1, 1, 144),
        ("mbv2-28x144-1x1-32", 144, 28, 32, 1, 1, 0, 1, 1),
        ("mbv2-28x32-1x1-192", 32, 28, 192, 1, 1, 0, 1, 1),
        ("mbv2-28x192-dw3x3", 192, 28, 192, 3, 1, 1, 1, 192),
        ("mbv2-28x192-1x1-32", 192, 28, 32, 1, 1, 0, 1, 1),
        ("mbv2-28x192-dw3x3s2", 192, 28, 192, 3, 2, 1, 1, 192),
        ("mbv2-14x192-1x1-64", 192, 14, 64, 1, 1, 0, 1, 1),
        ("mbv2-14x64-1x1-384", 64, 14, 384, 1, 1, 0, 1, 1),
        ("mbv2-14x384-dw3x3", 384, 14, 384, 3, 1, 1, 1, 384),
        ("mbv2-14x384-1x1-64", 384, 14, 64, 1, 1, 0, 1, 1),
        ("mbv2-14x384-1x1-96", 384, 14, 96, 1, 1, 0, 1, 1),
        ("mbv2-14x96-1x1-576", 96, 14, 576, 1, 1, 0, 1, 1),
        ("mbv2-14x576-dw3x3", 576, 14, 576, 3, 1, 1, 1, 576),
        ("mbv2-14x576-1x1-96", 576, 14, 96, 1, 1, 0, 1, 1),
        ("mbv2-14x576-dw3x3s2", 576, 14, 576, 3, 2, 1, 1, 576),
        ("mbv2-7x576-1x1-160", 576, 7, 160, 1, 1, 0, 1, 1),
        ("mbv2-7x160-1x1-960", 160, 7, 960, 1, 1, 0, 1, 1),
        ("mbv2-7x960-dw3x3", 960, 7, 960, 3, 1, 1, 1, 960),
        ("mbv2-7x960-1x1-160", 960, 7, 160, 1, 1, 0, 1, 1),
        ("mbv2-7x960-1x1-320", 960, 7, 320, 1, 1, 0, 1, 1),
        ("mbv2-7x320-1x1-1280", 320, 7, 1280, 1, 1, 0, 1, 1),
    ];
    const OTHERS: [Layer; 14] = [
        ("b32-56x64-3x3-64", 32, 64, 56, 64, 3, 1, 1, 1, 1),
        ("b32-56x256-1x1-64", 32, 256, 56, 64, 1, 1, 0, 1, 1),
        ("b32-28x128-3x3s2-128", 32, 128, 28, 128, 3, 2, 1, 1, 1),
        ("large-1024x3-3x3-16", 1, 3, 1024, 16, 3, 1, 1, 1, 1),
        ("large-1024x16-3x3-16", 1, 16, 1024, 16, 3, 1, 1, 1, 1),
        ("large-512x64-3x3-64", 1, 64, 512, 64, 3, 1, 1, 1, 1),
        ("k5-56x32-5x5-32", 8, 32, 56, 32, 5, 1, 2, 1, 1),
        ("k5-28x64-5x5s2-128", 8, 64, 28, 128, 5, 2, 2, 1, 1),
        ("k7-28x64-7x7-64", 8, 64, 28, 64, 7, 1, 3, 1, 1),
        ("k7-56x16-7x7-32", 8, 16, 56, 32, 7, 1, 3, 1, 1),
        ("g4-56x64-3x3-64", 8, 64, 56, 64, 3, 1, 1, 1, 4),
        ("rnx-56x128-3x3g32-128", 8, 128, 56, 128, 3, 1, 1, 1, 32),
        ("rnx-56x256-3x3g32s2-256", 8, 256, 56, 256, 3, 2, 1, 1, 32),
        ("rnx-14x1024-3x3g32-1024", 8, 1024, 14, 1024, 3, 1, 1, 1, 32),
    ];
    resnet50
        .into_iter()
        .chain(mobilenet_v2)
        .chain(OTHERS)
        .map(|(id, n, c_in, hw, c_out, k, s, p, d, g)| {
            square_row(id, n, c_in, hw, c_out, k, s, p, d, g, false)
        })
        .collect()
}

/// The row with id `id`, from the suite or the extended suite.
///
/// ```
/// assert_eq!(gemmconv::suite::row("r1x1").unwrap().input, [8, 256, 28, 28]);
/// assert_eq!(gemmconv::suite::row("mbv2-112x32-dw3x3-b1").unwrap().spec.get_groups(), 32);
/// assert!(gemmconv::suite::row("nope").is_none());
/// ```
pub fn row(id: &str) -> Option<SuiteRow> {
    rows()
        .into_iter()
        .chain(extended_rows())
        .find(|r| r.id == id)
}

/// The operation of a family row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FamilyOp {
    /// A transposed convolution on inputs of the shape.
    Transposed(ConvTranspose2dSpec, [usize; 4]),
    /// A 1-D convolution on inputs of the shape.
    Conv1d(Conv1dSpec, [usize; 3]),
}

/// One row of the family suite (`benches/SUITE.md`, "Family").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyRow {
    /// The row's id, used in benchmark ids.
    pub id: &'static str,
    /// The operation and its input shape.
    pub op: FamilyOp,
}

impl FamilyRow {
    /// Forward floating-point operations: two per multiply-add.
    ///
    /// ```
    /// let r = gemmconv::suite::family_row("t-r3x3s2").unwrap();
    /// assert_eq!(r.forward_flops(), gemmconv::suite::row("r3x3s2").unwrap().forward_flops());
    /// ```
    pub fn forward_flops(&self) -> u64 {
        match &self.op {
            FamilyOp::Transposed(spec, input) => {
                let [_, _, kh, kw] = spec.weight_shape();
                let per_group = spec.out_channels() / spec.get_groups();
                2 * input.iter().product::<usize>() as u64 * (per_group * kh * kw) as u64
            }
            FamilyOp::Conv1d(spec, input) => {
                let out = spec.output_shape(*input).expect("family rows are valid");
                let [_, c_in_g, k] = spec.weight_shape();
                2 * out.iter().product::<usize>() as u64 * (c_in_g * k) as u64
            }
        }
    }
}

/// The transposed convolution that takes suite row `id`'s output back to
/// its input shape: the row read as a decoder.
fn decoder(id: &'static str, of: &str) -> FamilyRow {
    let r = row(of).expect("a suite row");
    let conv = &r.spec;
    let out = conv.output_shape(r.input).expect("suite rows are valid");
    let back = |input: usize, output: usize, s: usize, p: usize, k: usize, d: usize| {
        input - ((output - 1) * s - 2 * p + d * (k - 1) + 1)
    };
    let ((sh, sw), p, (kh, kw), (dh, dw)) = (
        conv.get_stride(),
        conv.get_padding(),
        conv.kernel(),
        conv.get_dilation(),
    );
    let spec = ConvTranspose2dSpec::new(conv.out_channels(), conv.in_channels(), conv.kernel())
        .stride((sh, sw))
        .padding((p.top, p.left))
        .dilation((dh, dw))
        .output_padding((
            back(r.input[2], out[2], sh, p.top, kh, dh),
            back(r.input[3], out[3], sw, p.left, kw, dw),
        ))
        .groups(conv.get_groups());
    FamilyRow {
        id,
        op: FamilyOp::Transposed(spec, out),
    }
}

/// The family rows, in the order of `benches/SUITE.md`: suite rows read as
/// decoders (transposed convolutions back to their input shape), and 1-D
/// convolutions.
///
/// ```
/// let ids: Vec<_> = gemmconv::suite::family_rows().iter().map(|r| r.id).collect();
/// assert_eq!(ids, ["t-r3x3", "t-r3x3s2", "t-stem", "t-dw", "c1d-k3", "c1d-k3d4"]);
/// ```
pub fn family_rows() -> Vec<FamilyRow> {
    vec![
        decoder("t-r3x3", "r3x3"),
        decoder("t-r3x3s2", "r3x3s2"),
        decoder("t-stem", "stem"),
        decoder("t-dw", "dw"),
        FamilyRow {
            id: "c1d-k3",
            op: FamilyOp::Conv1d(Conv1dSpec::new(64, 64, 3).padding(1), [8, 64, 4096]),
        },
        FamilyRow {
            id: "c1d-k3d4",
            op: FamilyOp::Conv1d(
                Conv1dSpec::new(64, 64, 3).padding(4).dilation(4),
                [8, 64, 4096],
            ),
        },
    ]
}

/// The family row with id `id`.
///
/// ```
/// assert!(gemmconv::suite::family_row("c1d-k3").is_some());
/// ```
pub fn family_row(id: &str) -> Option<FamilyRow> {
    family_rows().into_iter().find(|r| r.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Every row is a valid geometry, and no id is used twice.
    #[test]
    fn rows_are_valid_and_ids_unique() {
        let all: Vec<SuiteRow> = rows().into_iter().chain(extended_rows()).collect();
        let ids: HashSet<_> = all.iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), all.len());
        for r in &all {
            assert!(r.spec.output_shape(r.input).is_ok(), "{}", r.id);
            assert!(r.forward_flops() > 0, "{}", r.id);
        }
    }

    /// A decoder row gives back its suite row's input shape.
    #[test]
    fn decoders_give_back_their_rows_input() {
        for (decoder, of) in [
            ("t-r3x3", "r3x3"),
            ("t-r3x3s2", "r3x3s2"),
            ("t-stem", "stem"),
            ("t-dw", "dw"),
        ] {
            let FamilyOp::Transposed(spec, input) = family_row(decoder).unwrap().op else {
                panic!("{decoder} is transposed");
            };
            assert_eq!(spec.output_shape(input).unwrap(), row(of).unwrap().input);
            assert_eq!(spec.conv_spec(), row(of).unwrap().spec.bias(false));
        }
    }
}
