//! Scratch memory for the strided algorithm, kept between calls so that a
//! training loop does not allocate its column matrices again every step.

/// Reusable scratch buffers for [`Algorithm::Strided`](crate::Algorithm).
///
/// One set of buffers per parallel lane (at most one lane per thread). The
/// column matrix of a lane holds one batch chunk; chunks are sized so that it
/// stays under [`column_cap_bytes`](Self::column_cap_bytes), whatever the batch
/// or image size (one sample is the least a chunk holds). The shifted and
/// Winograd kernels have no column matrix: the cap bounds the shifted
/// kernel's GEMM product (bands of output rows) and the Winograd kernel's
/// transformed tiles (bands of tiles) instead. All keep one padded copy of a
/// sample per lane (the shifted and Winograd backward passes also one of
/// its error, and Winograd's one of its input gradient).
///
/// ```
/// use gemmconv::Workspace;
/// let ws = Workspace::<f32>::new().with_column_cap_bytes(8 << 20);
/// assert_eq!(ws.column_cap_bytes(), 8 << 20);
/// ```
#[derive(Debug)]
pub struct Workspace<T> {
    pub(crate) lanes: Vec<LaneBuffers<T>>,
    /// The weights as one pass wants them: flipped and channel-swapped for
    /// the error-lowering pass, transformed for Winograd, packed tile by
    /// tile for the direct kernel's forward.
    pub(crate) flipped_weights: Vec<T>,
    cap_bytes: usize,
    input_gradient: InputGradient,
    kernel: Kernel,
}

/// Which kernel [`Algorithm::Strided`](crate::Algorithm) runs.
///
/// ```
/// use gemmconv::{Kernel, Workspace};
/// let ws = Workspace::<f32>::new().with_kernel(Kernel::Direct);
/// assert_eq!(ws.kernel(), Kernel::Direct);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Direct loops for small groups (at most 16 multiply-adds per output
    /// pixel and 4 output channels per group, as in depthwise convolutions),
    /// and for the forward pass of kernels above 1x1 with unit column
    /// stride and at most 16 output channels per group; when the input
    /// gradient method is left on `Auto` and there are at least 32 input and
    /// output channels and one group, Winograd for 3x3 kernels at stride 1
    /// (with outputs at least 8 dilations high and wide) and shifted windows
    /// for the other kernels above 1x1, at any stride; lowering and GEMM
    /// otherwise.
    #[default]
    Auto,
    /// Always lower onto GEMM through a column matrix.
    Gemm,
    /// One group, any stride, padding and dilation: GEMMs straight on
    /// shifted windows of a pixel-major copy of each sample (its rows split
    /// by the row stride), no column matrix (see the crate docs); the input
    /// gradient phase by phase of the stride, never multiplying the zeros
    /// of a dilated error. With groups the column matrix runs instead.
    Shifted,
    /// 3x3 kernels, stride 1, one group, any padding and dilation:
    /// Winograd's F(2x2, 3x3), forward and backward. 16 GEMMs on
    /// transformed 4x4 tiles of a pixel-major copy of each sample do
    /// 2.25x fewer multiply-adds than the direct sum. The transforms add a
    /// few values before and after the GEMMs, so results differ from the
    /// direct sum by a few more units in the last place (the same tolerance
    /// holds in the tests as for the other kernels). Where it does not
    /// apply the column matrix runs instead.
    Winograd,
    /// Always the direct loops (slow for large groups): forward with
    /// register tiles (a few output channels by two rows of pixels, summed
    /// over every tap) at unit column stride, backward as dot products and
    /// axpys over rows.
    Direct,
}

/// How [`Algorithm::Strided`](crate::Algorithm) computes the input gradient
/// on the column-matrix kernel ([`Kernel::Gemm`]; the shifted and Winograd
/// kernels have their own, and a method set here keeps `Kernel::Auto` on the
/// column matrix).
///
/// Both are exact; they differ in cost. `ErrorLowering` runs a forward pass
/// over the error (dilated by the stride, padded) against flipped,
/// channel-swapped weights: its GEMM grows with the stride squared and its
/// copy with the output channels. `Col2im` multiplies the error by the
/// transposed weights and adds the columns back onto the input: its GEMM
/// matches the forward pass, its scatter grows with the input channels.
///
/// ```
/// use gemmconv::{InputGradient, Workspace};
/// let ws = Workspace::<f32>::new().with_input_gradient(InputGradient::Col2im);
/// assert_eq!(ws.input_gradient(), InputGradient::Col2im);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum InputGradient {
    /// Col2im: measured clearly faster on the suite's strided rows (6.7x on
    /// the 7x7 `stem`, 1.9x on `r3x3s2`), within noise on the others.
    #[default]
    Auto,
    /// Lower the dilated, padded error against flipped, channel-swapped weights.
    ErrorLowering,
    /// `Wᵀ · dY`, then add the columns back onto the input (col2im).
    Col2im,
}

/// The scratch buffers of one lane.
#[derive(Debug)]
pub(crate) struct LaneBuffers<T> {
    /// The padded input (or dilated error) of one chunk.
    pub source: Vec<T>,
    /// The column matrix of one chunk.
    pub cols: Vec<T>,
    /// The GEMM's result before it is laid out as NCHW, or the error of one
    /// chunk laid out as a matrix.
    pub product: Vec<T>,
    /// The padded input gradient of one chunk, accumulated by col2im.
    pub accumulator: Vec<T>,
    /// The output gradient of one sample, pixel-major (Winograd kernel), or
    /// its input gradient, by row phases (shifted kernel).
    pub error: Vec<T>,
    /// One tile half-way through a Winograd transform.
    pub stage: Vec<T>,
    /// This lane's partial weight gradient.
    pub dw: Vec<T>,
    /// This lane's partial bias gradient.
    pub db: Vec<T>,
}

impl<T> Default for LaneBuffers<T> {
    fn default() -> Self {
        LaneBuffers {
            source: Vec::new(),
            cols: Vec::new(),
            product: Vec::new(),
            accumulator: Vec::new(),
            error: Vec::new(),
            stage: Vec::new(),
            dw: Vec::new(),
            db: Vec::new(),
        }
    }
}

/// The default cap on one lane's column matrix: 2 MiB. Measured on the
/// suite (BENCHMARKS.md): tiles this small stay in cache between the copy
/// that writes them and the GEMM that reads them, which made r3x3 forward
/// about 25% faster than 16 MiB tiles; and a large batch or image never
/// allocates more than this per thread.
pub const DEFAULT_COLUMN_CAP_BYTES: usize = 2 << 20;

impl<T> Default for Workspace<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Workspace<T> {
    /// An empty workspace with the default cap, [`DEFAULT_COLUMN_CAP_BYTES`].
    ///
    /// ```
    /// let ws = gemmconv::Workspace::<f64>::new();
    /// assert_eq!(ws.column_cap_bytes(), gemmconv::DEFAULT_COLUMN_CAP_BYTES);
    /// ```
    pub fn new() -> Self {
        Workspace {
            lanes: Vec::new(),
            flipped_weights: Vec::new(),
            cap_bytes: DEFAULT_COLUMN_CAP_BYTES,
            input_gradient: InputGradient::Auto,
            kernel: Kernel::Auto,
        }
    }

    /// Sets the cap on one lane's column matrix, in bytes.
    ///
    /// ```
    /// let ws = gemmconv::Workspace::<f32>::new().with_column_cap_bytes(1 << 20);
    /// assert_eq!(ws.column_cap_bytes(), 1 << 20);
    /// ```
    pub fn with_column_cap_bytes(mut self, cap_bytes: usize) -> Self {
        self.cap_bytes = cap_bytes;
        self
    }

    /// Sets how the input gradient is computed.
    ///
    /// ```
    /// use gemmconv::{InputGradient, Workspace};
    /// let ws = Workspace::<f64>::new().with_input_gradient(InputGradient::ErrorLowering);
    /// assert_eq!(ws.input_gradient(), InputGradient::ErrorLowering);
    /// ```
    pub fn with_input_gradient(mut self, method: InputGradient) -> Self {
        self.input_gradient = method;
        self
    }

    /// Sets which kernel runs.
    ///
    /// ```
    /// use gemmconv::{Kernel, Workspace};
    /// let ws = Workspace::<f64>::new().with_kernel(Kernel::Gemm);
    /// assert_eq!(ws.kernel(), Kernel::Gemm);
    /// ```
    pub fn with_kernel(mut self, kernel: Kernel) -> Self {
        self.kernel = kernel;
        self
    }

    /// Which kernel runs.
    ///
    /// ```
    /// use gemmconv::{Kernel, Workspace};
    /// assert_eq!(Workspace::<f32>::new().kernel(), Kernel::Auto);
    /// ```
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// How the input gradient is computed.
    ///
    /// ```
    /// use gemmconv::{InputGradient, Workspace};
    /// assert_eq!(Workspace::<f32>::new().input_gradient(), InputGradient::Auto);
    /// ```
    pub fn input_gradient(&self) -> InputGradient {
        self.input_gradient
    }

    /// The cap on one lane's column matrix, in bytes.
    ///
    /// ```
    /// assert!(gemmconv::Workspace::<f32>::new().column_cap_bytes() > 0);
    /// ```
    pub fn column_cap_bytes(&self) -> usize {
        self.cap_bytes
    }

    /// Bytes currently held by all buffers.
    ///
    /// ```
    /// assert_eq!(gemmconv::Workspace::<f32>::new().allocated_bytes(), 0);
    /// ```
    pub fn allocated_bytes(&self) -> usize {
        let elements: usize = self
            .lanes
            .iter()
            .map(|l| {
                l.source.capacity()
                    + l.cols.capacity()
                    + l.product.capacity()
                    + l.accumulator.capacity()
                    + l.error.capacity()
                    + l.stage.capacity()
                    + l.dw.capacity()
                    + l.db.capacity()
            })
            .sum();
        (elements + self.flipped_weights.capacity()) * std::mem::size_of::<T>()
    }

    /// Makes sure at least `lanes` lane buffer sets exist.
    pub(crate) fn ensure_lanes(&mut self, lanes: usize) {
        if self.lanes.len() < lanes {
            self.lanes.resize_with(lanes, LaneBuffers::default);
        }
    }
}

/// The first `len` elements of `buf`, growing it (never shrinking) as needed.
/// Contents are unspecified: callers overwrite what they read.
pub(crate) fn scratch<T: Clone + Default>(buf: &mut Vec<T>, len: usize) -> &mut [T] {
    if buf.len() < len {
        buf.resize(len, T::default());
    }
    &mut buf[..len]
}
