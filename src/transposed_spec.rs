//! `ConvTranspose2dSpec`, the geometry of a transposed convolution, and
//! the convolution whose input gradient it is.

use crate::error::{ConvError, Operand};
use crate::spec::{Conv2dSpec, check_groups, check_nonzero};

/// The geometry of a 2-D transposed convolution layer, with PyTorch
/// `ConvTranspose2d` semantics: input `[n, c_in, h, w]`, weight `[c_in,
/// c_out / groups, kh, kw]`, output `[n, c_out, ho, wo]` with `ho = (h -
/// 1)·sh - 2·ph + dh·(kh - 1) + oph + 1` (and likewise `wo`).
///
/// It is the adjoint of the convolution [`conv_spec`](Self::conv_spec)
/// (from `c_out` to `c_in` channels, same kernel, stride, padding,
/// dilation and groups): its forward pass is that convolution's input
/// gradient, so it runs on the same kernels. `output_padding` adds rows and
/// columns at the bottom and right that a strided convolution's output
/// size cannot tell apart; each must be smaller than the stride or the
/// dilation along its axis.
///
/// A builder, like [`Conv2dSpec`]: nothing is checked while building.
///
/// ```
/// use gemmconv::ConvTranspose2dSpec;
/// let spec = ConvTranspose2dSpec::new(16, 8, (3, 3)).stride((2, 2)).padding((1, 1)).output_padding((1, 1));
/// assert_eq!(spec.output_shape([4, 16, 14, 14])?, [4, 8, 28, 28]);
/// assert_eq!(spec.weight_shape(), [16, 8, 3, 3]);
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ConvTranspose2dSpec {
    in_channels: usize,
    out_channels: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    output_padding: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
    bias: bool,
}

impl ConvTranspose2dSpec {
    /// A spec with stride 1, no padding or output padding, dilation 1, one
    /// group and a bias.
    ///
    /// ```
    /// let spec = gemmconv::ConvTranspose2dSpec::new(8, 3, (4, 4));
    /// assert_eq!((spec.in_channels(), spec.out_channels(), spec.kernel()), (8, 3, (4, 4)));
    /// ```
    pub fn new(in_channels: usize, out_channels: usize, kernel: (usize, usize)) -> Self {
        ConvTranspose2dSpec {
            in_channels,
            out_channels,
            kernel,
            stride: (1, 1),
            padding: (0, 0),
            output_padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
            bias: true,
        }
    }

    /// Sets the stride `(sh, sw)`.
    ///
    /// ```
    /// let spec = gemmconv::ConvTranspose2dSpec::new(1, 1, (2, 2)).stride((2, 2));
    /// assert_eq!(spec.output_shape([1, 1, 3, 3]).unwrap(), [1, 1, 6, 6]);
    /// ```
    pub fn stride(mut self, stride: (usize, usize)) -> Self {
        self.stride = stride;
        self
    }

    /// Sets the padding `(ph, pw)`: the rows and columns taken off each
    /// side of the full output (PyTorch's `padding`).
    ///
    /// ```
    /// let spec = gemmconv::ConvTranspose2dSpec::new(1, 1, (3, 3)).padding((1, 0));
    /// assert_eq!(spec.output_shape([1, 1, 4, 4]).unwrap(), [1, 1, 4, 6]);
    /// ```
    pub fn padding(mut self, padding: (usize, usize)) -> Self {
        self.padding = padding;
        self
    }

    /// Sets the output padding `(oph, opw)`: rows and columns added at the
    /// bottom and right of the output.
    ///
    /// ```
    /// let spec = gemmconv::ConvTranspose2dSpec::new(1, 1, (3, 3)).stride((2, 2)).output_padding((1, 0));
    /// assert_eq!(spec.output_shape([1, 1, 4, 4]).unwrap(), [1, 1, 10, 9]);
    /// ```
    pub fn output_padding(mut self, output_padding: (usize, usize)) -> Self {
        self.output_padding = output_padding;
        self
    }

    /// Sets the dilation `(dh, dw)`.
    ///
    /// ```
    /// let spec = gemmconv::ConvTranspose2dSpec::new(1, 1, (3, 3)).dilation((2, 2));
    /// assert_eq!(spec.output_shape([1, 1, 4, 4]).unwrap(), [1, 1, 8, 8]);
    /// ```
    pub fn dilation(mut self, dilation: (usize, usize)) -> Self {
        self.dilation = dilation;
        self
    }

    /// Sets the number of groups; it must divide both channel counts.
    ///
    /// ```
    /// let spec = gemmconv::ConvTranspose2dSpec::new(4, 6, (3, 3)).groups(2);
    /// assert_eq!(spec.weight_shape(), [4, 3, 3, 3]);
    /// ```
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Sets whether the layer has a bias (default: yes).
    ///
    /// ```
    /// assert!(!gemmconv::ConvTranspose2dSpec::new(1, 1, (1, 1)).bias(false).has_bias());
    /// ```
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Input channels.
    ///
    /// ```
    /// assert_eq!(gemmconv::ConvTranspose2dSpec::new(3, 4, (1, 1)).in_channels(), 3);
    /// ```
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Output channels.
    ///
    /// ```
    /// assert_eq!(gemmconv::ConvTranspose2dSpec::new(3, 4, (1, 1)).out_channels(), 4);
    /// ```
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// Kernel size `(kh, kw)`.
    ///
    /// ```
    /// assert_eq!(gemmconv::ConvTranspose2dSpec::new(3, 4, (2, 5)).kernel(), (2, 5));
    /// ```
    pub fn kernel(&self) -> (usize, usize) {
        self.kernel
    }

    /// Stride `(sh, sw)`.
    ///
    /// ```
    /// assert_eq!(gemmconv::ConvTranspose2dSpec::new(3, 4, (1, 1)).get_stride(), (1, 1));
    /// ```
    pub fn get_stride(&self) -> (usize, usize) {
        self.stride
    }

    /// Padding `(ph, pw)`.
    ///
    /// ```
    /// assert_eq!(gemmconv::ConvTranspose2dSpec::new(3, 4, (3, 3)).padding((1, 1)).get_padding(), (1, 1));
    /// ```
    pub fn get_padding(&self) -> (usize, usize) {
        self.padding
    }

    /// Output padding `(oph, opw)`.
    ///
    /// ```
    /// assert_eq!(gemmconv::ConvTranspose2dSpec::new(3, 4, (3, 3)).get_output_padding(), (0, 0));
    /// ```
    pub fn get_output_padding(&self) -> (usize, usize) {
        self.output_padding
    }

    /// Dilation `(dh, dw)`.
    ///
    /// ```
    /// assert_eq!(gemmconv::ConvTranspose2dSpec::new(3, 4, (1, 1)).get_dilation(), (1, 1));
    /// ```
    pub fn get_dilation(&self) -> (usize, usize) {
        self.dilation
    }

    /// Number of groups.
    ///
    /// ```
    /// assert_eq!(gemmconv::ConvTranspose2dSpec::new(4, 4, (1, 1)).get_groups(), 1);
    /// ```
    pub fn get_groups(&self) -> usize {
        self.groups
    }

    /// Whether the layer has a bias.
    ///
    /// ```
    /// assert!(gemmconv::ConvTranspose2dSpec::new(4, 4, (1, 1)).has_bias());
    /// ```
    pub fn has_bias(&self) -> bool {
        self.bias
    }

    /// The weight shape `[in_channels, out_channels / groups, kh, kw]`
    /// (meaningful once [`validate`](Self::validate) passes).
    ///
    /// ```
    /// assert_eq!(gemmconv::ConvTranspose2dSpec::new(4, 6, (3, 2)).groups(2).weight_shape(), [4, 3, 3, 2]);
    /// ```
    pub fn weight_shape(&self) -> [usize; 4] {
        [
            self.in_channels,
            self.out_channels / self.groups.max(1),
            self.kernel.0,
            self.kernel.1,
        ]
    }

    /// The convolution this is the transpose of: from `out_channels` to
    /// `in_channels`, with the same kernel, stride, padding, dilation and
    /// groups, no bias. Its weight has this spec's weight shape.
    ///
    /// ```
    /// use gemmconv::{ConvTranspose2dSpec, Conv2dSpec};
    /// let t = ConvTranspose2dSpec::new(8, 4, (3, 3)).stride((2, 2)).padding((1, 1));
    /// assert_eq!(t.conv_spec(), Conv2dSpec::new(4, 8, (3, 3)).stride((2, 2)).padding((1, 1)).bias(false));
    /// assert_eq!(t.conv_spec().weight_shape(), t.weight_shape());
    /// ```
    pub fn conv_spec(&self) -> Conv2dSpec {
        Conv2dSpec::new(self.out_channels, self.in_channels, self.kernel)
            .stride(self.stride)
            .padding(self.padding)
            .dilation(self.dilation)
            .groups(self.groups)
            .bias(false)
    }

    /// Checks the parts of the spec that do not depend on the input:
    /// non-zero sizes, groups dividing both channel counts, and each output
    /// padding smaller than the stride or the dilation of its axis.
    ///
    /// ```
    /// use gemmconv::{ConvTranspose2dSpec, ConvError};
    /// let spec = ConvTranspose2dSpec::new(2, 2, (3, 3)).stride((2, 2)).output_padding((2, 0));
    /// assert!(matches!(spec.validate(), Err(ConvError::OutputPaddingTooLarge { axis: "height", .. })));
    /// ```
    pub fn validate(&self) -> Result<(), ConvError> {
        let nonzero = [
            (self.in_channels, "in_channels"),
            (self.out_channels, "out_channels"),
            (self.kernel.0, "kernel (height)"),
            (self.kernel.1, "kernel (width)"),
            (self.stride.0, "stride (height)"),
            (self.stride.1, "stride (width)"),
            (self.dilation.0, "dilation (height)"),
            (self.dilation.1, "dilation (width)"),
            (self.groups, "groups"),
        ];
        check_nonzero(&nonzero)?;
        check_groups(self.groups, self.in_channels, self.out_channels)?;
        let axes = [
            (
                "height",
                self.output_padding.0,
                self.stride.0,
                self.dilation.0,
            ),
            (
                "width",
                self.output_padding.1,
                self.stride.1,
                self.dilation.1,
            ),
        ];
        for (axis, output_padding, stride, dilation) in axes {
            if output_padding >= stride.max(dilation) {
                return Err(ConvError::OutputPaddingTooLarge {
                    axis,
                    output_padding,
                    stride,
                    dilation,
                });
            }
        }
        Ok(())
    }

    /// The output shape `[batch, out_channels, ho, wo]` for an input of
    /// shape `[batch, in_channels, h, w]`, or why that input does not fit.
    ///
    /// ```
    /// use gemmconv::{ConvTranspose2dSpec, ConvError};
    /// let spec = ConvTranspose2dSpec::new(3, 1, (3, 3)).padding((2, 2));
    /// assert_eq!(spec.output_shape([2, 3, 5, 5])?, [2, 1, 3, 3]);
    /// assert!(matches!(spec.output_shape([2, 3, 1, 5]), Err(ConvError::EmptyAxis { .. })));
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn output_shape(&self, input_shape: [usize; 4]) -> Result<[usize; 4], ConvError> {
        self.validate()?;
        let [batch, channels, h, w] = input_shape;
        if channels != self.in_channels {
            return Err(ConvError::ChannelMismatch {
                operand: Operand::Input,
                expected: self.in_channels,
                got: channels,
            });
        }
        let axes = [("height", h, 0usize), ("width", w, 1usize)];
        let mut out = [0usize; 2];
        for (axis, input, a) in axes {
            let pick = |pair: (usize, usize)| if a == 0 { pair.0 } else { pair.1 } as i128;
            let size = (input as i128 - 1) * pick(self.stride) - 2 * pick(self.padding)
                + pick(self.dilation) * (pick(self.kernel) - 1)
                + pick(self.output_padding)
                + 1;
            if input == 0 || size < 1 {
                return Err(ConvError::EmptyAxis {
                    axis,
                    input,
                    output: size,
                });
            }
            out[a] =
                usize::try_from(size).map_err(|_| ConvError::SizeOverflow { what: "output" })?;
        }
        Ok([batch, self.out_channels, out[0], out[1]])
    }
}
