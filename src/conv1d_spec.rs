//! `Conv1dSpec`, the geometry of a 1-D convolution: a 2-D convolution on
//! images one row high.

use crate::error::ConvError;
use crate::spec::{Conv2dSpec, Padding, PaddingMode};

/// The geometry of a 1-D convolution layer, with PyTorch `Conv1d`
/// semantics: input `[n, c_in, l]`, weight `[c_out, c_in / groups, k]`.
///
/// It is the 2-D convolution [`to_conv2d`](Self::to_conv2d) on inputs one
/// row high (a `1 x k` kernel), so it runs on the same kernels. A builder,
/// like [`Conv2dSpec`], with the same padding options.
///
/// ```
/// use gemmconv::Conv1dSpec;
/// let spec = Conv1dSpec::new(2, 4, 5).stride(2).padding(2);
/// assert_eq!(spec.output_shape([8, 2, 100])?, [8, 4, 50]);
/// assert_eq!(spec.weight_shape(), [4, 2, 5]);
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Conv1dSpec {
    spec: Conv2dSpec,
}

impl Conv1dSpec {
    /// A spec with stride 1, no padding, dilation 1, one group and a bias.
    ///
    /// ```
    /// let spec = gemmconv::Conv1dSpec::new(1, 6, 5);
    /// assert_eq!((spec.in_channels(), spec.out_channels(), spec.kernel()), (1, 6, 5));
    /// ```
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        Conv1dSpec {
            spec: Conv2dSpec::new(in_channels, out_channels, (1, kernel)),
        }
    }

    /// Sets the stride.
    ///
    /// ```
    /// assert_eq!(gemmconv::Conv1dSpec::new(1, 1, 3).stride(3).get_stride(), 3);
    /// ```
    pub fn stride(self, stride: usize) -> Self {
        Conv1dSpec {
            spec: self.spec.stride((1, stride)),
        }
    }

    /// Sets the padding, the same on both ends.
    ///
    /// ```
    /// assert_eq!(gemmconv::Conv1dSpec::new(1, 1, 3).padding(1).output_shape([1, 1, 10]).unwrap(), [1, 1, 10]);
    /// ```
    pub fn padding(self, padding: usize) -> Self {
        self.padding_ends(padding, padding)
    }

    /// Sets the padding before and after the sequence.
    ///
    /// ```
    /// assert_eq!(gemmconv::Conv1dSpec::new(1, 1, 3).padding_ends(2, 0).get_padding(), (2, 0));
    /// ```
    pub fn padding_ends(self, before: usize, after: usize) -> Self {
        let padding = Padding {
            left: before,
            right: after,
            ..Padding::default()
        };
        Conv1dSpec {
            spec: self.spec.padding(padding),
        }
    }

    /// PyTorch's `padding='same'`: `dilation · (kernel - 1)` in all, the odd
    /// element at the end; resolved when the spec is used, so in any order
    /// with the other calls. Needs stride 1.
    ///
    /// ```
    /// let spec = gemmconv::Conv1dSpec::new(1, 1, 4).same_padding().dilation(3);
    /// assert_eq!(spec.get_padding(), (4, 5));
    /// assert_eq!(spec.output_shape([1, 1, 20]).unwrap(), [1, 1, 20]);
    /// ```
    pub fn same_padding(self) -> Self {
        Conv1dSpec {
            spec: self.spec.same_padding(),
        }
    }

    /// Sets what the padding holds ([`PaddingMode`]).
    ///
    /// ```
    /// use gemmconv::{Conv1dSpec, PaddingMode};
    /// let spec = Conv1dSpec::new(1, 1, 3).padding(1).padding_mode(PaddingMode::Circular);
    /// assert_eq!(spec.get_padding_mode(), PaddingMode::Circular);
    /// ```
    pub fn padding_mode(self, mode: PaddingMode) -> Self {
        Conv1dSpec {
            spec: self.spec.padding_mode(mode),
        }
    }

    /// Sets the dilation.
    ///
    /// ```
    /// assert_eq!(gemmconv::Conv1dSpec::new(1, 1, 3).dilation(4).output_shape([1, 1, 9]).unwrap(), [1, 1, 1]);
    /// ```
    pub fn dilation(self, dilation: usize) -> Self {
        Conv1dSpec {
            spec: self.spec.dilation((1, dilation)),
        }
    }

    /// Sets the number of groups; it must divide both channel counts.
    ///
    /// ```
    /// assert_eq!(gemmconv::Conv1dSpec::new(4, 8, 3).groups(4).weight_shape(), [8, 1, 3]);
    /// ```
    pub fn groups(self, groups: usize) -> Self {
        Conv1dSpec {
            spec: self.spec.groups(groups),
        }
    }

    /// Sets whether the layer has a bias (default: yes).
    ///
    /// ```
    /// assert!(!gemmconv::Conv1dSpec::new(1, 1, 1).bias(false).has_bias());
    /// ```
    pub fn bias(self, bias: bool) -> Self {
        Conv1dSpec {
            spec: self.spec.bias(bias),
        }
    }

    /// Input channels.
    ///
    /// ```
    /// assert_eq!(gemmconv::Conv1dSpec::new(3, 4, 1).in_channels(), 3);
    /// ```
    pub fn in_channels(&self) -> usize {
        self.spec.in_channels()
    }

    /// Output channels.
    ///
    /// ```
    /// assert_eq!(gemmconv::Conv1dSpec::new(3, 4, 1).out_channels(), 4);
    /// ```
    pub fn out_channels(&self) -> usize {
        self.spec.out_channels()
    }

    /// Kernel size.
    ///
    /// ```
    /// assert_eq!(gemmconv::Conv1dSpec::new(3, 4, 7).kernel(), 7);
    /// ```
    pub fn kernel(&self) -> usize {
        self.spec.kernel().1
    }

    /// Stride.
    ///
    /// ```
    /// assert_eq!(gemmconv::Conv1dSpec::new(3, 4, 1).get_stride(), 1);
    /// ```
    pub fn get_stride(&self) -> usize {
        self.spec.get_stride().1
    }

    /// Padding `(before, after)` ('same' padding resolved).
    ///
    /// ```
    /// assert_eq!(gemmconv::Conv1dSpec::new(3, 4, 3).padding(1).get_padding(), (1, 1));
    /// ```
    pub fn get_padding(&self) -> (usize, usize) {
        let p = self.spec.get_padding();
        (p.left, p.right)
    }

    /// What the padding holds.
    ///
    /// ```
    /// use gemmconv::{Conv1dSpec, PaddingMode};
    /// assert_eq!(Conv1dSpec::new(1, 1, 3).get_padding_mode(), PaddingMode::Zeros);
    /// ```
    pub fn get_padding_mode(&self) -> PaddingMode {
        self.spec.get_padding_mode()
    }

    /// Dilation.
    ///
    /// ```
    /// assert_eq!(gemmconv::Conv1dSpec::new(3, 4, 1).get_dilation(), 1);
    /// ```
    pub fn get_dilation(&self) -> usize {
        self.spec.get_dilation().1
    }

    /// Number of groups.
    ///
    /// ```
    /// assert_eq!(gemmconv::Conv1dSpec::new(4, 4, 1).get_groups(), 1);
    /// ```
    pub fn get_groups(&self) -> usize {
        self.spec.get_groups()
    }

    /// Whether the layer has a bias.
    ///
    /// ```
    /// assert!(gemmconv::Conv1dSpec::new(4, 4, 1).has_bias());
    /// ```
    pub fn has_bias(&self) -> bool {
        self.spec.has_bias()
    }

    /// The weight shape `[out_channels, in_channels / groups, kernel]`.
    ///
    /// ```
    /// assert_eq!(gemmconv::Conv1dSpec::new(4, 6, 3).groups(2).weight_shape(), [6, 2, 3]);
    /// ```
    pub fn weight_shape(&self) -> [usize; 3] {
        let [o, i, _, k] = self.spec.weight_shape();
        [o, i, k]
    }

    /// The 2-D convolution this is, on inputs `[n, c, 1, l]`.
    ///
    /// ```
    /// use gemmconv::{Conv1dSpec, Conv2dSpec};
    /// let spec = Conv1dSpec::new(2, 3, 5).stride(2);
    /// assert_eq!(spec.to_conv2d(), &Conv2dSpec::new(2, 3, (1, 5)).stride((1, 2)));
    /// ```
    pub fn to_conv2d(&self) -> &Conv2dSpec {
        &self.spec
    }

    /// Checks the parts of the spec that do not depend on the input.
    ///
    /// ```
    /// assert!(gemmconv::Conv1dSpec::new(3, 4, 3).groups(2).validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), ConvError> {
        self.spec.validate().map_err(name_the_axis)
    }

    /// The output shape `[batch, out_channels, lo]` for an input of shape
    /// `[batch, in_channels, l]`, or why that input does not fit.
    ///
    /// ```
    /// use gemmconv::{Conv1dSpec, ConvError};
    /// let spec = Conv1dSpec::new(1, 2, 5);
    /// assert_eq!(spec.output_shape([3, 1, 9])?, [3, 2, 5]);
    /// assert!(matches!(spec.output_shape([3, 1, 4]), Err(ConvError::KernelLargerThanInput { axis: "length", .. })));
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn output_shape(&self, input_shape: [usize; 3]) -> Result<[usize; 3], ConvError> {
        let [n, c, l] = input_shape;
        let [n, c, _, l] = self
            .spec
            .output_shape([n, c, 1, l])
            .map_err(name_the_axis)?;
        Ok([n, c, l])
    }
}

/// An error of the 2-D convolution, told of the 1-D one: its width is the
/// sequence's length.
pub(crate) fn name_the_axis(err: ConvError) -> ConvError {
    let rename = |axis: &'static str| if axis == "width" { "length" } else { axis };
    let rename_parameter = |parameter: &'static str| match parameter {
        "kernel (width)" => "kernel",
        "stride (width)" => "stride",
        "dilation (width)" => "dilation",
        other => other,
    };
    match err {
        ConvError::KernelLargerThanInput {
            axis,
            kernel_extent,
            padded_input,
        } => ConvError::KernelLargerThanInput {
            axis: rename(axis),
            kernel_extent,
            padded_input,
        },
        ConvError::PaddingTooLarge {
            mode,
            axis,
            padding,
            input,
        } => ConvError::PaddingTooLarge {
            mode,
            axis: rename(axis),
            padding,
            input,
        },
        ConvError::EmptyAxis {
            axis,
            input,
            output,
        } => ConvError::EmptyAxis {
            axis: rename(axis),
            input,
            output,
        },
        ConvError::ZeroParameter { parameter } => ConvError::ZeroParameter {
            parameter: rename_parameter(parameter),
        },
        other => other,
    }
}
