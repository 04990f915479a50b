//! Scratch memory for the strided algorithm, kept between calls so that a
//! training loop does not allocate its column matrices again every step.

/// Reusable scratch buffers for [`Algorithm::Strided`](crate::Algorithm).
///
/// One set of buffers per parallel lane (at most one lane per thread). The
/// column matrix of a lane holds one batch chunk; chunks are sized so that it
/// stays under [`column_cap_bytes`](Self::column_cap_bytes), whatever the batch
/// or image size (one sample is the least a chunk holds).
///
/// ```
/// use gemmconv::Workspace;
/// let ws = Workspace::<f32>::new().with_column_cap_bytes(8 << 20);
/// assert_eq!(ws.column_cap_bytes(), 8 << 20);
/// ```
#[derive(Debug)]
pub struct Workspace<T> {
    pub(crate) lanes: Vec<LaneBuffers<T>>,
    cap_bytes: usize,
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
            dw: Vec::new(),
            db: Vec::new(),
        }
    }
}

/// The default cap on one lane's column matrix: 64 MiB.
pub const DEFAULT_COLUMN_CAP_BYTES: usize = 64 << 20;

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
            cap_bytes: DEFAULT_COLUMN_CAP_BYTES,
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
                    + l.dw.capacity()
                    + l.db.capacity()
            })
            .sum();
        elements * std::mem::size_of::<T>()
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
