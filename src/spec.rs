//! `Conv2dSpec`, the geometry of a convolution, and its validation against
//! concrete shapes.

use crate::error::{ConvError, Operand};

/// What the padding around the input holds, PyTorch's `padding_mode`.
///
/// With a mode other than [`Zeros`](PaddingMode::Zeros) the input is
/// padded by copying its own pixels, as PyTorch's `F.pad` does, and the
/// gradients that reach the border fold back onto the pixels they were
/// copied from.
///
/// ```
/// use gemmconv::{conv2d, Algorithm, Conv2dSpec, PaddingMode};
/// use gemmconv::ndarray::{array, Array4};
/// // A 1x3 kernel summing a pixel and its neighbours, on the row [1, 2, 3].
/// let x = array![1.0, 2.0, 3.0].into_shape_with_order((1, 1, 1, 3)).unwrap();
/// let w = Array4::<f64>::ones((1, 1, 1, 3));
/// let sums = |mode| {
///     let spec = Conv2dSpec::new(1, 1, (1, 3)).padding((0, 1)).padding_mode(mode).bias(false);
///     conv2d(x.view(), w.view(), None, &spec, Algorithm::Strided).unwrap().into_raw_vec_and_offset().0
/// };
/// assert_eq!(sums(PaddingMode::Zeros), [3.0, 6.0, 5.0]);     // 0 1 2 3 0
/// assert_eq!(sums(PaddingMode::Reflect), [5.0, 6.0, 7.0]);   // 2 1 2 3 2
/// assert_eq!(sums(PaddingMode::Replicate), [4.0, 6.0, 8.0]); // 1 1 2 3 3
/// assert_eq!(sums(PaddingMode::Circular), [6.0, 6.0, 6.0]);  // 3 1 2 3 1
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum PaddingMode {
    /// Zeros (the default).
    #[default]
    Zeros,
    /// The input mirrored at its edge, the edge pixel not repeated (two
    /// pixels of it around `1 2 3` give `3 2 1 2 3 2 1`): the padding must
    /// be smaller than the input along its axis.
    Reflect,
    /// The edge pixel repeated (`1 1 1 2 3 3 3`).
    Replicate,
    /// The input wrapped around, as on a torus (`2 3 1 2 3 1 2`): the
    /// padding must be at most the input's size along its axis.
    Circular,
}

impl PaddingMode {
    /// PyTorch's name of the mode (`"zeros"`, `"reflect"`, `"replicate"`,
    /// `"circular"`).
    ///
    /// ```
    /// assert_eq!(gemmconv::PaddingMode::Reflect.name(), "reflect");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            PaddingMode::Zeros => "zeros",
            PaddingMode::Reflect => "reflect",
            PaddingMode::Replicate => "replicate",
            PaddingMode::Circular => "circular",
        }
    }
}

impl std::fmt::Display for PaddingMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Padding on the four sides of the input, in pixels.
///
/// `(ph, pw).into()` gives symmetric padding, as PyTorch's `padding=(ph, pw)`.
///
/// ```
/// use gemmconv::Padding;
/// let p: Padding = (1, 2).into();
/// assert_eq!(p, Padding { top: 1, bottom: 1, left: 2, right: 2 });
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Padding {
    /// Rows of zeros above the input.
    pub top: usize,
    /// Rows of zeros below the input.
    pub bottom: usize,
    /// Columns of zeros left of the input.
    pub left: usize,
    /// Columns of zeros right of the input.
    pub right: usize,
}

impl Padding {
    /// Whether no side is padded.
    ///
    /// ```
    /// assert!(gemmconv::Padding::default().is_zero());
    /// ```
    pub fn is_zero(&self) -> bool {
        *self == Padding::default()
    }

    /// PyTorch's `padding='same'` for a kernel of `(kh, kw)` taps spaced by
    /// `(dh, dw)`: `d·(k - 1)` pixels an axis in all, the odd one at the
    /// bottom or right.
    ///
    /// ```
    /// use gemmconv::Padding;
    /// assert_eq!(Padding::same((3, 4), (1, 1)), Padding { top: 1, bottom: 1, left: 1, right: 2 });
    /// assert_eq!(Padding::same((3, 3), (2, 1)), Padding { top: 2, bottom: 2, left: 1, right: 1 });
    /// ```
    pub fn same((kh, kw): (usize, usize), (dh, dw): (usize, usize)) -> Self {
        let total_h = dh.saturating_mul(kh.saturating_sub(1));
        let total_w = dw.saturating_mul(kw.saturating_sub(1));
        Padding {
            top: total_h / 2,
            bottom: total_h - total_h / 2,
            left: total_w / 2,
            right: total_w - total_w / 2,
        }
    }
}

impl From<(usize, usize)> for Padding {
    fn from((ph, pw): (usize, usize)) -> Self {
        Padding {
            top: ph,
            bottom: ph,
            left: pw,
            right: pw,
        }
    }
}

/// The geometry of a 2-D convolution layer, with PyTorch `Conv2d` semantics.
///
/// A builder: [`Conv2dSpec::new`] sets channels and kernel, the other methods
/// the rest. Nothing is checked while building; every call that uses the spec
/// validates it and returns a [`ConvError`] instead of panicking.
///
/// ```
/// use gemmconv::Conv2dSpec;
/// let spec = Conv2dSpec::new(3, 16, (3, 5)).stride((2, 2)).padding((1, 2)).dilation((1, 1));
/// assert_eq!(spec.output_shape([8, 3, 32, 32]).unwrap(), [8, 16, 16, 16]);
/// assert!(Conv2dSpec::new(3, 16, (3, 3)).groups(2).validate().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Conv2dSpec {
    in_channels: usize,
    out_channels: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: Padding,
    /// PyTorch's `padding='same'`, resolved from kernel and dilation when
    /// the spec is used (so that the builder's calls may come in any order).
    #[cfg_attr(feature = "serde", serde(default))]
    same: bool,
    #[cfg_attr(feature = "serde", serde(default))]
    padding_mode: PaddingMode,
    dilation: (usize, usize),
    groups: usize,
    bias: bool,
}

impl Conv2dSpec {
    /// A spec with stride 1, no padding, dilation 1, one group and a bias.
    ///
    /// ```
    /// let spec = gemmconv::Conv2dSpec::new(1, 6, (5, 5));
    /// assert_eq!(spec.kernel(), (5, 5));
    /// assert!(spec.has_bias());
    /// ```
    pub fn new(in_channels: usize, out_channels: usize, kernel: (usize, usize)) -> Self {
        Conv2dSpec {
            in_channels,
            out_channels,
            kernel,
            stride: (1, 1),
            padding: Padding::default(),
            same: false,
            padding_mode: PaddingMode::Zeros,
            dilation: (1, 1),
            groups: 1,
            bias: true,
        }
    }

    /// Sets the stride `(sh, sw)`.
    ///
    /// ```
    /// let spec = gemmconv::Conv2dSpec::new(1, 1, (3, 3)).stride((2, 1));
    /// assert_eq!(spec.get_stride(), (2, 1));
    /// ```
    pub fn stride(mut self, stride: (usize, usize)) -> Self {
        self.stride = stride;
        self
    }

    /// Sets the padding: `(ph, pw)` for symmetric padding, or a [`Padding`]
    /// for different amounts on each side.
    ///
    /// ```
    /// use gemmconv::{Conv2dSpec, Padding};
    /// let spec = Conv2dSpec::new(1, 1, (3, 3))
    ///     .padding(Padding { top: 0, bottom: 1, left: 2, right: 0 });
    /// assert_eq!(spec.output_shape([1, 1, 5, 5]).unwrap(), [1, 1, 4, 5]);
    /// ```
    pub fn padding(mut self, padding: impl Into<Padding>) -> Self {
        self.padding = padding.into();
        self.same = false;
        self
    }

    /// PyTorch's `padding='same'`: the output as large as the input, with
    /// `dilation · (kernel - 1)` pixels of padding an axis, the odd one at the
    /// bottom or right ([`Padding::same`]). Resolved from the kernel and
    /// dilation when the spec is used, so it may come before or after
    /// [`dilation`](Self::dilation); a later [`padding`](Self::padding)
    /// replaces it. Needs stride 1, as in PyTorch: other strides are an
    /// error ([`ConvError::SamePaddingNeedsStrideOne`]).
    ///
    /// ```
    /// use gemmconv::{Conv2dSpec, Padding};
    /// let spec = Conv2dSpec::new(1, 1, (4, 3)).same_padding().dilation((1, 2));
    /// assert_eq!(spec.get_padding(), Padding { top: 1, bottom: 2, left: 2, right: 2 });
    /// assert_eq!(spec.output_shape([1, 1, 10, 11])?, [1, 1, 10, 11]);
    /// assert!(spec.clone().stride((2, 2)).validate().is_err());
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn same_padding(mut self) -> Self {
        self.same = true;
        self
    }

    /// Sets what the padding holds ([`PaddingMode`], default zeros).
    ///
    /// ```
    /// use gemmconv::{Conv2dSpec, PaddingMode};
    /// let spec = Conv2dSpec::new(1, 1, (3, 3)).padding((1, 1)).padding_mode(PaddingMode::Reflect);
    /// assert_eq!(spec.get_padding_mode(), PaddingMode::Reflect);
    /// ```
    pub fn padding_mode(mut self, mode: PaddingMode) -> Self {
        self.padding_mode = mode;
        self
    }

    /// Sets the dilation `(dh, dw)`: the spacing between kernel taps.
    ///
    /// ```
    /// let spec = gemmconv::Conv2dSpec::new(1, 1, (3, 3)).dilation((2, 2));
    /// assert_eq!(spec.output_shape([1, 1, 9, 9]).unwrap(), [1, 1, 5, 5]);
    /// ```
    pub fn dilation(mut self, dilation: (usize, usize)) -> Self {
        self.dilation = dilation;
        self
    }

    /// Sets the number of groups; it must divide both channel counts.
    /// `groups == in_channels` is a depthwise convolution.
    ///
    /// ```
    /// let spec = gemmconv::Conv2dSpec::new(8, 8, (3, 3)).groups(8);
    /// assert_eq!(spec.weight_shape(), [8, 1, 3, 3]);
    /// ```
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Sets whether the layer has a bias (default: yes).
    ///
    /// ```
    /// assert!(!gemmconv::Conv2dSpec::new(1, 1, (1, 1)).bias(false).has_bias());
    /// ```
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Input channels.
    ///
    /// ```
    /// assert_eq!(gemmconv::Conv2dSpec::new(3, 4, (1, 1)).in_channels(), 3);
    /// ```
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Output channels.
    ///
    /// ```
    /// assert_eq!(gemmconv::Conv2dSpec::new(3, 4, (1, 1)).out_channels(), 4);
    /// ```
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// Kernel size `(kh, kw)`.
    ///
    /// ```
    /// assert_eq!(gemmconv::Conv2dSpec::new(3, 4, (1, 7)).kernel(), (1, 7));
    /// ```
    pub fn kernel(&self) -> (usize, usize) {
        self.kernel
    }

    /// Stride `(sh, sw)`.
    ///
    /// ```
    /// assert_eq!(gemmconv::Conv2dSpec::new(3, 4, (1, 1)).get_stride(), (1, 1));
    /// ```
    pub fn get_stride(&self) -> (usize, usize) {
        self.stride
    }

    /// Padding on each side ('same' padding resolved).
    ///
    /// ```
    /// let spec = gemmconv::Conv2dSpec::new(3, 4, (3, 3)).padding((1, 1));
    /// assert_eq!(spec.get_padding().top, 1);
    /// ```
    pub fn get_padding(&self) -> Padding {
        if self.same {
            Padding::same(self.kernel, self.dilation)
        } else {
            self.padding
        }
    }

    /// Whether the padding is PyTorch's `'same'` ([`same_padding`](Self::same_padding)).
    ///
    /// ```
    /// assert!(gemmconv::Conv2dSpec::new(1, 1, (3, 3)).same_padding().is_same_padding());
    /// ```
    pub fn is_same_padding(&self) -> bool {
        self.same
    }

    /// What the padding holds.
    ///
    /// ```
    /// use gemmconv::{Conv2dSpec, PaddingMode};
    /// assert_eq!(Conv2dSpec::new(1, 1, (3, 3)).get_padding_mode(), PaddingMode::Zeros);
    /// ```
    pub fn get_padding_mode(&self) -> PaddingMode {
        self.padding_mode
    }

    /// Dilation `(dh, dw)`.
    ///
    /// ```
    /// assert_eq!(gemmconv::Conv2dSpec::new(3, 4, (1, 1)).get_dilation(), (1, 1));
    /// ```
    pub fn get_dilation(&self) -> (usize, usize) {
        self.dilation
    }

    /// Number of groups.
    ///
    /// ```
    /// assert_eq!(gemmconv::Conv2dSpec::new(4, 4, (1, 1)).get_groups(), 1);
    /// ```
    pub fn get_groups(&self) -> usize {
        self.groups
    }

    /// Whether the layer has a bias.
    ///
    /// ```
    /// assert!(gemmconv::Conv2dSpec::new(4, 4, (1, 1)).has_bias());
    /// ```
    pub fn has_bias(&self) -> bool {
        self.bias
    }

    /// The weight shape `[out_channels, in_channels / groups, kh, kw]`
    /// (meaningful once [`validate`](Self::validate) passes).
    ///
    /// ```
    /// assert_eq!(gemmconv::Conv2dSpec::new(4, 6, (3, 2)).groups(2).weight_shape(), [6, 2, 3, 2]);
    /// ```
    pub fn weight_shape(&self) -> [usize; 4] {
        [
            self.out_channels,
            self.in_channels / self.groups.max(1),
            self.kernel.0,
            self.kernel.1,
        ]
    }

    /// Checks the parts of the spec that do not depend on the input:
    /// non-zero sizes, and groups dividing both channel counts.
    ///
    /// ```
    /// use gemmconv::{Conv2dSpec, ConvError};
    /// let err = Conv2dSpec::new(3, 4, (3, 3)).stride((0, 1)).validate().unwrap_err();
    /// assert_eq!(err, ConvError::ZeroParameter { parameter: "stride (height)" });
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
        if self.same && self.stride != (1, 1) {
            return Err(ConvError::SamePaddingNeedsStrideOne {
                stride: self.stride,
            });
        }
        check_groups(self.groups, self.in_channels, self.out_channels)
    }

    /// The output shape `[batch, out_channels, ho, wo]` for an input of shape
    /// `[batch, in_channels, h, w]`, or why that input does not fit the spec.
    ///
    /// ```
    /// use gemmconv::{Conv2dSpec, ConvError};
    /// let spec = Conv2dSpec::new(1, 6, (5, 5));
    /// assert_eq!(spec.output_shape([16, 1, 28, 28]).unwrap(), [16, 6, 24, 24]);
    /// assert!(matches!(spec.output_shape([16, 1, 4, 28]), Err(ConvError::KernelLargerThanInput { .. })));
    /// ```
    pub fn output_shape(&self, input_shape: [usize; 4]) -> Result<[usize; 4], ConvError> {
        Geometry::new(self, input_shape).map(|g| g.output_shape())
    }
}

/// The first size of `sizes` that is zero, as the error naming it.
pub(crate) fn check_nonzero(sizes: &[(usize, &'static str)]) -> Result<(), ConvError> {
    match sizes.iter().find(|(value, _)| *value == 0) {
        Some(&(_, parameter)) => Err(ConvError::ZeroParameter { parameter }),
        None => Ok(()),
    }
}

/// Whether `groups` divides both channel counts, as the error saying so.
pub(crate) fn check_groups(
    groups: usize,
    in_channels: usize,
    out_channels: usize,
) -> Result<(), ConvError> {
    if in_channels.is_multiple_of(groups) && out_channels.is_multiple_of(groups) {
        Ok(())
    } else {
        Err(ConvError::GroupsDoNotDivide {
            groups,
            in_channels,
            out_channels,
        })
    }
}

/// A spec resolved against one input shape: every size a kernel needs, all
/// validated and with their products known not to overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Geometry {
    pub batch: usize,
    pub in_channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_channels: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub padding: Padding,
    pub groups: usize,
}

/// Output length along one axis, or the error for a kernel that does not fit.
fn output_len(
    axis: &'static str,
    input: usize,
    before: usize,
    after: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
) -> Result<usize, ConvError> {
    let overflow = ConvError::SizeOverflow {
        what: "padded input",
    };
    let padded_input = input
        .checked_add(before)
        .and_then(|v| v.checked_add(after))
        .ok_or(overflow.clone())?;
    let kernel_extent = (kernel - 1)
        .checked_mul(dilation)
        .and_then(|v| v.checked_add(1))
        .ok_or(overflow)?;
    if kernel_extent > padded_input {
        return Err(ConvError::KernelLargerThanInput {
            axis,
            kernel_extent,
            padded_input,
        });
    }
    Ok((padded_input - kernel_extent) / stride + 1)
}

fn checked_product(dims: &[usize], what: &'static str) -> Result<usize, ConvError> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&elements| elements <= isize::MAX as usize / 8)
        .ok_or(ConvError::SizeOverflow { what })
}

impl Geometry {
    pub fn new(spec: &Conv2dSpec, input_shape: [usize; 4]) -> Result<Self, ConvError> {
        spec.validate()?;
        let [batch, in_channels, in_h, in_w] = input_shape;
        if in_channels != spec.in_channels {
            return Err(ConvError::ChannelMismatch {
                operand: Operand::Input,
                expected: spec.in_channels,
                got: in_channels,
            });
        }
        let p = spec.get_padding();
        let (kh, kw) = spec.kernel;
        let (sh, sw) = spec.stride;
        let (dh, dw) = spec.dilation;
        let out_h = output_len("height", in_h, p.top, p.bottom, kh, sh, dh)?;
        let out_w = output_len("width", in_w, p.left, p.right, kw, sw, dw)?;
        // As in PyTorch, an image with no rows or columns is refused, even
        // where padding would give it an output.
        for (axis, input, output) in [("height", in_h, out_h), ("width", in_w, out_w)] {
            if input == 0 {
                return Err(ConvError::EmptyAxis {
                    axis,
                    input,
                    output: output as i128,
                });
            }
        }
        let g = Geometry {
            batch,
            in_channels,
            in_h,
            in_w,
            out_channels: spec.out_channels,
            out_h,
            out_w,
            kh,
            kw,
            sh,
            sw,
            dh,
            dw,
            padding: p,
            groups: spec.groups,
        };
        // Every buffer any algorithm allocates is one of these products (or
        // smaller); checking them once here keeps the kernels free of checks.
        // Sizes are bounded to isize::MAX / 8 elements, so byte counts of f64
        // buffers fit too.
        checked_product(&[batch, in_channels, in_h, in_w], "input")?;
        checked_product(
            &[
                batch,
                in_channels,
                in_h + p.top + p.bottom,
                in_w + p.left + p.right,
            ],
            "padded input",
        )?;
        checked_product(&[batch, g.out_channels, out_h, out_w], "output")?;
        checked_product(&g.weight_shape(), "weight")?;
        checked_product(&[batch, in_channels, kh, kw, out_h, out_w], "column matrix")?;
        let error_h = in_h.checked_add((kh - 1) * dh);
        let error_w = in_w.checked_add((kw - 1) * dw);
        match (error_h, error_w) {
            (Some(eh), Some(ew)) => {
                checked_product(&[batch, g.out_channels, eh, ew], "dilated output gradient")?;
                checked_product(
                    &[batch, g.out_channels, kh, kw, in_h, in_w],
                    "output gradient column matrix",
                )?;
            }
            _ => {
                return Err(ConvError::SizeOverflow {
                    what: "dilated output gradient",
                });
            }
        }
        Ok(g)
    }

    pub fn input_shape(&self) -> [usize; 4] {
        [self.batch, self.in_channels, self.in_h, self.in_w]
    }

    pub fn output_shape(&self) -> [usize; 4] {
        [self.batch, self.out_channels, self.out_h, self.out_w]
    }

    pub fn weight_shape(&self) -> [usize; 4] {
        [
            self.out_channels,
            self.in_channels / self.groups,
            self.kh,
            self.kw,
        ]
    }

    pub fn in_channels_per_group(&self) -> usize {
        self.in_channels / self.groups
    }

    pub fn out_channels_per_group(&self) -> usize {
        self.out_channels / self.groups
    }

    /// Rows of the column matrix: one per (channel, kernel row, kernel column).
    pub fn col_rows(&self) -> usize {
        self.in_channels * self.kh * self.kw
    }

    pub fn out_pixels(&self) -> usize {
        self.out_h * self.out_w
    }

    /// The input gradient of a unit-stride layer as a forward pass: the
    /// error in, padded by `d·(k - 1) - p` on each side, the input
    /// gradient out, input and output channels swapped, the same kernel,
    /// dilation and groups (its weights are the layer's turned by 180° with
    /// each group's channels swapped). `None` at a stride above 1, or where
    /// a side's padding reaches past the kernel (the padding would be
    /// negative).
    pub fn input_gradient_as_forward(&self) -> Option<Self> {
        if (self.sh, self.sw) != (1, 1) {
            return None;
        }
        let (reach_h, reach_w) = ((self.kh - 1) * self.dh, (self.kw - 1) * self.dw);
        let p = self.padding;
        Some(Geometry {
            in_channels: self.out_channels,
            in_h: self.out_h,
            in_w: self.out_w,
            out_channels: self.in_channels,
            out_h: self.in_h,
            out_w: self.in_w,
            padding: Padding {
                top: reach_h.checked_sub(p.top)?,
                bottom: reach_h.checked_sub(p.bottom)?,
                left: reach_w.checked_sub(p.left)?,
                right: reach_w.checked_sub(p.right)?,
            },
            ..*self
        })
    }
}
