//! The options that choose what [`Algorithm::Strided`](crate::Algorithm)
//! runs, set on a [`Workspace`](crate::Workspace). The rules that resolve
//! them for a geometry are the kernel table, `strided/mod.rs`.

/// Which kernel [`Algorithm::Strided`](crate::Algorithm) runs.
///
/// Every kernel computes the same convolution; they differ in speed. A
/// kernel that cannot compute a geometry (for example Winograd on a 5x5
/// kernel) leaves it to the column matrix.
///
/// ```
/// use gemmconv::{Kernel, Workspace};
/// let ws = Workspace::<f32>::new().with_kernel(Kernel::Direct);
/// assert_eq!(ws.kernel(), Kernel::Direct);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// For each geometry and pass, the kernel measured fastest on such
    /// layers (BENCHMARKS.md, "Kernel choice", "Channel vectors",
    /// "Channel-vector weight gradient"): direct loops for small groups
    /// and for the forward pass of layers with few output channels,
    /// Winograd for 3x3 kernels at stride 1 (on calls of at least as many
    /// output pixels as output channels) and shifted windows for other
    /// kernels above 1x1 when both channel counts are large, the column
    /// matrix otherwise; except that on a CPU with AVX-512 both passes of
    /// layers with more than 16 output channels a group and a kernel above
    /// 1x1 that Winograd does not take run on the direct kernel's channel
    /// vectors, group by group, when the call has 512 output pixels or
    /// more, and so does the backward pass of such layers with groups of
    /// 8 to 16 output channels, grouped or not.
    #[default]
    Auto,
    /// Lowering through a column matrix and one GEMM per tile of output
    /// rows.
    Gemm,
    /// One group, any stride, padding and dilation: GEMMs straight on
    /// shifted windows of a pixel-major copy of each sample (its rows split
    /// by the row stride), no column matrix; the input gradient phase by
    /// phase of the stride, never multiplying the zeros of a dilated error.
    Shifted,
    /// 3x3 kernels, stride 1, one group, any padding and dilation:
    /// Winograd's F(2x2, 3x3), forward and backward. 16 GEMMs on
    /// transformed 4x4 tiles of a pixel-major copy of each sample do
    /// 2.25x fewer multiply-adds than the direct sum. The transforms add a
    /// few values before and after the GEMMs, so results differ from the
    /// direct sum by a few more units in the last place (the tests hold it
    /// to the same tolerance as the other kernels).
    Winograd,
    /// The layers of [`Kernel::Winograd`] in Winograd's F(4x4, 3x3): 36
    /// GEMMs on transformed 6x6 tiles do 4x fewer multiply-adds than the
    /// direct sum, and each input value is transformed for 16 output
    /// pixels, not 4. The transforms' coefficients reach 8 and 1/24, so
    /// `f32` results lie several times further from the exact sum than
    /// the other kernels' (a relative error of about 1e-5 on 128 channels,
    /// 2e-5 on 512: BENCHMARKS.md, "Winograd F(4x4, 3x3)"). `Kernel::Auto`
    /// does not take it: on 64- and 128-channel layers it runs in 0.75–0.9x
    /// of F(2x2, 3x3)'s time ("Winograd weight transform", "Winograd
    /// backward products"), and the default does not trade that much
    /// accuracy for it; ask for it, or let `Kernel::Measure`, which
    /// times it on layers of at most 128 input and output channels.
    ///
    /// ```
    /// use gemmconv::{Algorithm, Conv2dSpec, Kernel, Workspace, conv2d_with_workspace};
    /// use ndarray::Array4;
    /// let spec = Conv2dSpec::new(4, 4, (3, 3)).padding((1, 1)).bias(false);
    /// let x = Array4::<f64>::ones((1, 4, 9, 9));
    /// let w = Array4::<f64>::ones(spec.weight_shape());
    /// let mut ws = Workspace::new().with_kernel(Kernel::Winograd4x4);
    /// let y = conv2d_with_workspace(x.view(), w.view(), None, &spec, Algorithm::Strided, &mut ws)?;
    /// assert!((y[[0, 0, 4, 4]] - 36.0).abs() < 1e-12);
    /// assert!((y[[0, 0, 0, 0]] - 16.0).abs() < 1e-12);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    Winograd4x4,
    /// Direct loops, without GEMM (slow for large groups): the forward pass
    /// of layers with more than 16 output channels a group, on a CPU with
    /// AVX-512, group by group, with register tiles of six pixels by up to
    /// four vectors of output channels, summed over every input channel
    /// and tap; other forward passes with register tiles (a few output
    /// channels by two rows of pixels, or one channel by eight rows for
    /// 3x3 and 5x5 kernels, summed over every tap), at column strides
    /// above 1 on each input row dealt into the stride's phases, and with
    /// axpys over rows for kernels wider than 16. The backward pass of
    /// those same layers, and of layers with groups of 8 output channels
    /// or more, with the weight gradient (group by group) on tiles of six
    /// (input channel, tap) columns by up to four vectors of output channels, summed over the output
    /// pixels, and the input gradient on the channel vectors at unit
    /// stride (else on shifted windows or by col2im); other backward
    /// passes as dot products and axpys over rows, or, on depthwise 3x3
    /// and 5x5 layers at unit stride, as vectorised stencils.
    Direct,
    /// For each geometry and pass, the kernel (and input-gradient method)
    /// that ran fastest when every candidate was timed on this machine, in
    /// this thread pool, on operands of the layer's shapes: the first call
    /// on a geometry times them (a few runs of each pass a candidate, those
    /// far behind cut short), later calls in the process reuse the choice.
    /// An input-gradient method other than `Auto` leaves this as `Auto`.
    ///
    /// It times [`Kernel::Winograd4x4`] only on layers of at most 128 input
    /// and output channels, where its rounding stays within half the
    /// tests' tolerance. The kernels agree within rounding, not bit for
    /// bit, and the timings of a noisy machine may choose differently from
    /// one process to the next: use it where speed matters more than
    /// results that repeat to the last bit across processes.
    ///
    /// ```
    /// use gemmconv::{Algorithm, Conv2dSpec, Kernel, Workspace, conv2d_with_workspace};
    /// use ndarray::Array4;
    /// let spec = Conv2dSpec::new(8, 8, (3, 3)).padding((1, 1)).bias(false);
    /// let x = Array4::<f32>::ones((2, 8, 16, 16));
    /// let w = Array4::<f32>::ones(spec.weight_shape());
    /// let mut ws = Workspace::new().with_kernel(Kernel::Measure);
    /// let y = conv2d_with_workspace(x.view(), w.view(), None, &spec, Algorithm::Strided, &mut ws)?;
    /// assert_eq!(y[[0, 0, 8, 8]], 72.0);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    Measure,
}

/// How the column-matrix kernel ([`Kernel::Gemm`]) computes the input
/// gradient.
///
/// Both methods are exact; they differ in cost. `ErrorLowering` runs a
/// forward pass over the error (dilated by the stride, padded) against
/// flipped, channel-swapped weights: its GEMM grows with the stride squared
/// and its copy with the output channels. `Col2im` multiplies the error by
/// the transposed weights and adds the columns back onto the input: its GEMM
/// matches the forward pass, its scatter grows with the input channels.
///
/// The shifted, Winograd and direct kernels have input gradients of their
/// own. So that a method set here runs, `Kernel::Auto` then leaves the
/// shifted and Winograd kernels aside and uses the column matrix, forward
/// and backward; where the direct kernel suits the layer it still runs, and
/// the method has no effect.
///
/// ```
/// use gemmconv::{InputGradient, Workspace};
/// let ws = Workspace::<f32>::new().with_input_gradient(InputGradient::Col2im);
/// assert_eq!(ws.input_gradient(), InputGradient::Col2im);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum InputGradient {
    /// Col2im, measured faster or level on every suite row (BENCHMARKS.md,
    /// "Input gradient method"), except on grouped layers at unit stride
    /// with at most 16 input channels a group, where the error lowering's
    /// forward pass runs on the direct register tiles ("Grouped input
    /// gradients"); with it `Kernel::Auto` may pick any kernel.
    #[default]
    Auto,
    /// Lower the dilated, padded error against flipped, channel-swapped weights.
    ErrorLowering,
    /// `Wᵀ · dY`, then add the columns back onto the input (col2im).
    Col2im,
}
