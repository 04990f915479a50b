//! Errors: every way a convolution call can be wrong, as values that carry
//! what was expected and what came.

use std::fmt;

/// The array an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// The input `x`, `[batch, in_channels, height, width]`.
    Input,
    /// The weight, `[out_channels, in_channels / groups, kh, kw]`.
    Weight,
    /// The bias, `[out_channels]`.
    Bias,
    /// The gradient of the loss with respect to the output, shaped like the output.
    OutputGradient,
    /// An output array given by the caller to be written into.
    Output,
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operand::Input => "input",
            Operand::Weight => "weight",
            Operand::Bias => "bias",
            Operand::OutputGradient => "output gradient",
            Operand::Output => "output",
        })
    }
}

/// Why a convolution could not be computed.
///
/// Every variant names what was expected and what was given, so the message
/// alone is enough to fix the call.
///
/// ```
/// use gemmconv::{conv2d, Algorithm, Conv2dSpec, ConvError};
/// use gemmconv::ndarray::{Array1, Array4};
///
/// let spec = Conv2dSpec::new(3, 8, (3, 3));
/// let x = Array4::<f32>::zeros((1, 4, 8, 8)); // 4 channels, the spec says 3
/// let w = Array4::<f32>::zeros((8, 3, 3, 3));
/// let b = Array1::<f32>::zeros(8);
/// let err = conv2d(x.view(), w.view(), Some(b.view()), &spec, Algorithm::Strided).unwrap_err();
/// assert_eq!(err, ConvError::ChannelMismatch { operand: gemmconv::Operand::Input, expected: 3, got: 4 });
/// assert!(err.to_string().contains("expected 3"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConvError {
    /// An array had the wrong number of dimensions.
    #[error("{operand}: expected a rank-{expected} array, got rank {got} (shape {shape:?})")]
    Rank {
        /// Which array.
        operand: Operand,
        /// The rank the convolution needs.
        expected: usize,
        /// The rank given.
        got: usize,
        /// The shape given.
        shape: Vec<usize>,
    },
    /// An array's channel axis does not match the spec.
    #[error("{operand}: expected {expected} channels, got {got}")]
    ChannelMismatch {
        /// Which array.
        operand: Operand,
        /// The channel count the spec implies.
        expected: usize,
        /// The channel count given.
        got: usize,
    },
    /// An array has the right rank but the wrong shape.
    #[error("{operand}: expected shape {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// Which array.
        operand: Operand,
        /// The shape the spec and the other operands imply.
        expected: Vec<usize>,
        /// The shape given.
        got: Vec<usize>,
    },
    /// A size parameter of the spec that must be at least 1 was 0.
    #[error("{parameter} must be at least 1, got 0")]
    ZeroParameter {
        /// The parameter, for example `"stride (height)"`.
        parameter: &'static str,
    },
    /// `groups` does not divide both channel counts.
    #[error(
        "groups = {groups} must divide both in_channels = {in_channels} and out_channels = {out_channels}"
    )]
    GroupsDoNotDivide {
        /// The group count.
        groups: usize,
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
    },
    /// The dilated kernel does not fit in the padded input along one axis.
    #[error(
        "{axis}: the dilated kernel spans {kernel_extent} but the padded input is only {padded_input}"
    )]
    KernelLargerThanInput {
        /// `"height"` or `"width"`.
        axis: &'static str,
        /// `dilation * (kernel - 1) + 1`.
        kernel_extent: usize,
        /// `input + padding before + padding after`.
        padded_input: usize,
    },
    /// A size computed from the shapes does not fit in memory addressing.
    #[error("the size of {what} overflows the address space")]
    SizeOverflow {
        /// Which size, for example `"column matrix"`.
        what: &'static str,
    },
    /// The bias given does not agree with the spec's `bias` setting.
    #[error("the spec says bias = {expected}, but a bias was {}", if *.expected { "not given" } else { "given" })]
    BiasPresence {
        /// Whether the spec expects a bias.
        expected: bool,
    },
    /// PyTorch's `padding='same'` was asked for with a stride other than 1.
    #[error("padding 'same' needs stride (1, 1), got stride {stride:?}")]
    SamePaddingNeedsStrideOne {
        /// The stride `(sh, sw)` given.
        stride: (usize, usize),
    },
    /// A padding mode that copies input pixels was asked for more padding
    /// than the input has pixels to copy along an axis.
    #[error(
        "{axis}: {mode} padding of {padding} needs an input {} {padding} pixels, got {input}",
        if *.mode == crate::PaddingMode::Reflect { "longer than" } else { "of at least" }
    )]
    PaddingTooLarge {
        /// The padding mode.
        mode: crate::PaddingMode,
        /// `"height"`, `"width"` or `"length"`.
        axis: &'static str,
        /// The larger padding of the two sides of the axis.
        padding: usize,
        /// The input's size along the axis.
        input: usize,
    },
    /// A transposed convolution's `output_padding` is not smaller than its
    /// stride or its dilation along an axis.
    #[error(
        "{axis}: output_padding {output_padding} must be smaller than the stride ({stride}) or the dilation ({dilation})"
    )]
    OutputPaddingTooLarge {
        /// `"height"`, `"width"` or `"length"`.
        axis: &'static str,
        /// The output padding given.
        output_padding: usize,
        /// The stride along the axis.
        stride: usize,
        /// The dilation along the axis.
        dilation: usize,
    },
    /// An input with no pixels along an axis (refused, as PyTorch refuses
    /// it, even where padding would give it an output), or a transposed
    /// convolution whose output would have none: its output is `(input -
    /// 1)·stride - 2·padding + dilation·(kernel - 1) + output_padding + 1`,
    /// and both must be at least 1.
    #[error(
        "{axis}: an input of {input} pixels gives an output of {output}; both must be at least 1"
    )]
    EmptyAxis {
        /// `"height"`, `"width"` or `"length"`.
        axis: &'static str,
        /// The input's size along the axis.
        input: usize,
        /// The output size the formula gives.
        output: i128,
    },
    /// A padding mode other than zeros on an operation that only pads with
    /// zeros (PyTorch's transposed convolutions).
    #[error("{operation} only pads with zeros, got padding mode {mode}")]
    PaddingModeUnsupported {
        /// The operation, for example `"conv_transpose2d"`.
        operation: &'static str,
        /// The mode given.
        mode: crate::PaddingMode,
    },
    /// `Conv2d::backward` was called without a preceding `forward`.
    #[error("backward needs the input of a forward call, and there was none")]
    BackwardBeforeForward,
    /// A buffer the call needs could not be allocated: the system refused
    /// the memory, or its size does not fit the address space. Nothing was
    /// aborted; the call's outputs (for `_into` calls, the caller's arrays)
    /// are unspecified, and the workspace has released its buffers.
    ///
    /// ```
    /// use gemmconv::{conv2d, Algorithm, Conv2dSpec, ConvError};
    /// use gemmconv::ndarray::Array4;
    /// // Padding 2^20 on each side of one pixel: an output of 2^42 pixels,
    /// // 16 TiB of f32.
    /// let spec = Conv2dSpec::new(1, 1, (1, 1)).padding((1 << 20, 1 << 20)).bias(false);
    /// let x = Array4::<f32>::ones((1, 1, 1, 1));
    /// let w = Array4::<f32>::ones((1, 1, 1, 1));
    /// let err = conv2d(x.view(), w.view(), None, &spec, Algorithm::Strided).unwrap_err();
    /// assert!(matches!(err, ConvError::OutOfMemory { what: "output", .. }));
    /// ```
    #[error("out of memory: the {what} needs {bytes} bytes, which could not be allocated")]
    OutOfMemory {
        /// What the memory was for: `"output"`, `"gradient"`, `"input copy"`
        /// or `"workspace"`.
        what: &'static str,
        /// The size asked for, in bytes (saturating at `usize::MAX`).
        bytes: usize,
    },
}
