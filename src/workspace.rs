//! Scratch memory kept between calls, so that a training loop does not
//! allocate its buffers again every step, and the options that choose the
//! strided algorithm's kernel.
//!
//! The workspace is memory with no meaning of its own: one set of scratch
//! buffers per lane of the scheduler (`lanes.rs`), one buffer of partial
//! gradient sums (and two of bands) per part of a backward pass, and one
//! buffer for the weights as the running kernel lays them out. Each kernel
//! names the buffers it borrows for what they hold in that kernel. Every
//! buffer grows fallibly ([`Workspace::fallibly`]).

use crate::algo::strided::choice::{InputGradient, Kernel};
use crate::error::ConvError;
use crate::handoff;
use crate::huge_pages;
use crate::lanes::{Schedule, Work};
use std::panic::AssertUnwindSafe;

/// Reusable scratch memory for [`Algorithm::Strided`](crate::Algorithm),
/// and the options that choose its kernel.
///
/// The work of a call is spread over parallel lanes (at most one per thread
/// of the rayon pool), each with its own buffers. A lane's largest buffer
/// (the column matrix, the shifted kernel's GEMM product, the Winograd
/// kernel's transformed tiles) covers a band of output rows sized to stay
/// under [`column_cap_bytes`](Self::column_cap_bytes), whatever the batch or
/// image size (the column matrix's weight-gradient pass gathers samples
/// whose column matrices fit under it up to the size of the weight
/// gradient); besides it a lane keeps one padded copy of a sample (and, in
/// the backward pass, of its error and input gradient).
///
/// ```
/// use gemmconv::Workspace;
/// let ws = Workspace::<f32>::new().with_column_cap_bytes(8 << 20);
/// assert_eq!(ws.column_cap_bytes(), 8 << 20);
/// ```
#[derive(Debug)]
pub struct Workspace<T> {
    lanes: Vec<LaneMemory<T>>,
    parts: Vec<PartMemory<T>>,
    /// The weights as the running kernel lays them out (reordered,
    /// transformed, packed or flipped), shared by every lane; or, where
    /// the kernel reads the weights in place, another operand the lanes
    /// share (a column matrix lowered once).
    weights: Vec<T>,
    /// The weights of an input gradient computed as a forward pass by
    /// another kernel (turned and channel-swapped), which lays out its own
    /// copy of them in `weights`.
    input_gradient_weights: Vec<T>,
    /// Whole operands an operation lays out before the kernels run: the
    /// input with its padding copied in (and its gradient), or a
    /// transposed convolution's input grown by the rows its kernels read.
    staged: [Vec<T>; 2],
    cap_bytes: usize,
    /// What passes check for NaN and ±∞, and whether all they checked
    /// since was finite.
    outputs: Option<(Checks, bool)>,
    input_gradient: InputGradient,
    kernel: Kernel,
    min_lane_flops: usize,
    /// Whether lanes also carry at least the measured handoff
    /// ([`crate::handoff`]): until the least work is set by hand.
    measured_handoff: bool,
    flush_subnormals: bool,
}

/// How many scratch buffers a lane has: the most any kernel borrows at once
/// (the Winograd backward pass).
const SCRATCH_BUFFERS: usize = 7;

/// The memory of one lane.
#[derive(Debug)]
pub(crate) struct LaneMemory<T> {
    /// Scratch buffers, named by the kernel that borrows them.
    pub(crate) scratch: Scratch<T>,
}

impl<T> Default for LaneMemory<T> {
    fn default() -> Self {
        LaneMemory {
            scratch: Scratch(std::array::from_fn(|_| Vec::new())),
        }
    }
}

/// The memory of one part of a backward pass, kept until the parts add up.
#[derive(Debug)]
pub(crate) struct PartMemory<T> {
    /// The part's partial sums of the weight and bias gradients.
    pub(crate) partial: Vec<T>,
    /// The part's contributions to the input gradients of samples whose
    /// rows other parts share: its first band's and its last band's.
    pub(crate) bands: [Vec<T>; 2],
}

impl<T> Default for PartMemory<T> {
    fn default() -> Self {
        PartMemory {
            partial: Vec::new(),
            bands: [Vec::new(), Vec::new()],
        }
    }
}

/// The lanes' and the parts' memory of one pass, borrowed together, and,
/// when the call asks ([`Workspace::checking_outputs`]), what the pass
/// checks for NaN and ±∞ and where it records whether all was finite.
pub(crate) struct Memory<'a, T> {
    pub(crate) lanes: &'a mut [LaneMemory<T>],
    pub(crate) parts: &'a mut [PartMemory<T>],
    pub(crate) finite: Option<(Checks, &'a mut bool)>,
}

/// What a pass checks for NaN and ±∞ as it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Checks {
    /// The sums of the weight and bias gradients' partials.
    Sums,
    /// Those, and every output element a lane writes (`y`, `dx`), while
    /// it is in cache.
    Everything,
}

/// A lane's scratch buffers, lent out by [`Scratch::split`].
#[derive(Debug)]
pub(crate) struct Scratch<T>([Vec<T>; SCRATCH_BUFFERS]);

impl<T> Scratch<T> {
    /// The first `N` buffers, each borrowed on its own, for the caller to
    /// name: `let [image, product] = scratch.split();`.
    pub(crate) fn split<const N: usize>(&mut self) -> [&mut Vec<T>; N] {
        const { assert!(N <= SCRATCH_BUFFERS, "a lane has SCRATCH_BUFFERS buffers") };
        let mut buffers = self.0.iter_mut();
        std::array::from_fn(|_| buffers.next().expect("N is at most SCRATCH_BUFFERS"))
    }
}

/// The least arithmetic a pass wakes a parallel lane for, unless the
/// workspace sets another ([`Workspace::with_min_lane_flops`]), and the
/// size the parts of a backward pass are cut from (BENCHMARKS.md, "Lane
/// size"). A forward pass bound by memory (a depthwise layer) counts its
/// FLOPs several times, as many as it does fewer of them a second. Where
/// handing work to another thread measures dearer (BENCHMARKS.md, "Lane
/// handoff"), lanes carry that much instead; the parts, and so the
/// results, stay the same.
///
/// ```
/// assert!(gemmconv::DEFAULT_MIN_LANE_FLOPS > 0);
/// ```
pub const DEFAULT_MIN_LANE_FLOPS: usize = 1 << 20;

/// The default cap on one lane's largest buffer: 2 MiB. Tiles this small
/// stay in cache between the copy that writes them and the GEMM that reads
/// them, and a large batch or image never allocates more than this per
/// thread (BENCHMARKS.md, "Column cap").
///
/// ```
/// use gemmconv::{DEFAULT_COLUMN_CAP_BYTES, Workspace};
/// let ws = Workspace::<f32>::new();
/// assert_eq!(ws.column_cap_bytes(), DEFAULT_COLUMN_CAP_BYTES);
/// ```
pub const DEFAULT_COLUMN_CAP_BYTES: usize = 2 << 20;

/// A clone has the same options and no memory of its own yet: scratch
/// contents are never carried from one call to the next.
///
/// ```
/// use gemmconv::{Kernel, Workspace};
/// let ws = Workspace::<f32>::new().with_kernel(Kernel::Gemm);
/// assert_eq!(ws.clone().kernel(), Kernel::Gemm);
/// ```
impl<T> Clone for Workspace<T> {
    fn clone(&self) -> Self {
        Workspace {
            cap_bytes: self.cap_bytes,
            input_gradient: self.input_gradient,
            kernel: self.kernel,
            min_lane_flops: self.min_lane_flops,
            measured_handoff: self.measured_handoff,
            flush_subnormals: self.flush_subnormals,
            ..Workspace::new()
        }
    }
}

#[cfg(test)]
impl<T: Clone + Default> Workspace<T> {
    /// Grows one buffer to `len` elements, for tests of what keeps it.
    pub(crate) fn set_test_buffer(&mut self, len: usize) {
        self.weights.resize(len, T::default());
    }
}

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
            parts: Vec::new(),
            weights: Vec::new(),
            input_gradient_weights: Vec::new(),
            staged: [Vec::new(), Vec::new()],
            cap_bytes: DEFAULT_COLUMN_CAP_BYTES,
            outputs: None,
            input_gradient: InputGradient::Auto,
            kernel: Kernel::Auto,
            min_lane_flops: DEFAULT_MIN_LANE_FLOPS,
            measured_handoff: true,
            flush_subnormals: true,
        }
    }

    /// Sets the cap on one lane's largest buffer, in bytes.
    ///
    /// ```
    /// let ws = gemmconv::Workspace::<f32>::new().with_column_cap_bytes(1 << 20);
    /// assert_eq!(ws.column_cap_bytes(), 1 << 20);
    /// ```
    pub fn with_column_cap_bytes(mut self, cap_bytes: usize) -> Self {
        self.cap_bytes = cap_bytes;
        self
    }

    /// Sets how the column-matrix kernel computes the input gradient.
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

    /// Sets the least arithmetic (in floating-point operations) a pass
    /// wakes a parallel lane for: a pass with less than `flops` per thread
    /// runs on fewer lanes, as woken threads cost time of their own. `0`
    /// cuts every pass into as many lanes as the pool has threads, down to
    /// bands of single rows. Without it, lanes carry at least
    /// [`DEFAULT_MIN_LANE_FLOPS`] or what handing work to another thread is
    /// measured to cost on this machine (once per process), whichever is
    /// more.
    ///
    /// ```
    /// use gemmconv::Workspace;
    /// let ws = Workspace::<f32>::new().with_min_lane_flops(0);
    /// assert_eq!(ws.min_lane_flops(), 0);
    /// ```
    pub fn with_min_lane_flops(mut self, flops: usize) -> Self {
        self.min_lane_flops = flops;
        self.measured_handoff = false;
        self
    }

    /// The least arithmetic a pass wakes a lane for, see
    /// [`Self::with_min_lane_flops`].
    ///
    /// ```
    /// use gemmconv::{DEFAULT_MIN_LANE_FLOPS, Workspace};
    /// assert_eq!(Workspace::<f32>::new().min_lane_flops(), DEFAULT_MIN_LANE_FLOPS);
    /// ```
    pub fn min_lane_flops(&self) -> usize {
        self.min_lane_flops
    }

    /// The schedule of a pass on the current rayon pool.
    pub(crate) fn schedule(&self, work: Work) -> Schedule {
        let handoff = if self.measured_handoff {
            handoff::lane_flops::<T>()
        } else {
            0
        };
        Schedule::handing_off(
            work,
            rayon::current_num_threads(),
            self.min_lane_flops,
            handoff,
        )
        .flushing_subnormals(self.flush_subnormals)
    }

    /// Sets whether the strided algorithm computes with subnormal numbers
    /// flushed to zero (on by default, on x86-64): each computing thread's
    /// flush-to-zero and denormals-are-zero bits are set for the call and
    /// put back after, so that subnormal weights, inputs or errors cost no
    /// more than normal ones. Subnormal operands then count as zero and
    /// results that would be subnormal are zero, a change below the
    /// smallest normal number. `false` keeps IEEE gradual underflow, at up
    /// to 20x the time where subnormals abound (BENCHMARKS.md,
    /// "Subnormals").
    ///
    /// ```
    /// use gemmconv::{Algorithm, Conv2dSpec, Workspace, conv2d_with_workspace};
    /// use gemmconv::ndarray::Array4;
    /// let spec = Conv2dSpec::new(1, 1, (1, 1)).bias(false);
    /// let x = Array4::from_elem((1, 1, 1, 1), f32::MIN_POSITIVE);
    /// let w = Array4::from_elem((1, 1, 1, 1), 0.5f32);
    /// let mut keep = Workspace::new().with_flush_subnormals(false);
    /// let y = conv2d_with_workspace(x.view(), w.view(), None, &spec, Algorithm::Strided, &mut keep)?;
    /// assert!(y[[0, 0, 0, 0]].is_subnormal());
    /// let mut flush = Workspace::new();
    /// assert!(flush.flush_subnormals());
    /// let y = conv2d_with_workspace(x.view(), w.view(), None, &spec, Algorithm::Strided, &mut flush)?;
    /// assert_eq!(y[[0, 0, 0, 0]], if cfg!(target_arch = "x86_64") { 0.0 } else { y[[0, 0, 0, 0]] });
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn with_flush_subnormals(mut self, flush: bool) -> Self {
        self.flush_subnormals = flush;
        self
    }

    /// Whether subnormals are flushed to zero, see
    /// [`Self::with_flush_subnormals`].
    ///
    /// ```
    /// assert!(gemmconv::Workspace::<f64>::new().flush_subnormals());
    /// ```
    pub fn flush_subnormals(&self) -> bool {
        self.flush_subnormals
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

    /// How the column-matrix kernel computes the input gradient.
    ///
    /// ```
    /// use gemmconv::{InputGradient, Workspace};
    /// assert_eq!(Workspace::<f32>::new().input_gradient(), InputGradient::Auto);
    /// ```
    pub fn input_gradient(&self) -> InputGradient {
        self.input_gradient
    }

    /// The cap on one lane's largest buffer, in bytes.
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
        let lanes: usize = self
            .lanes
            .iter()
            .map(|lane| lane.scratch.0.iter().map(Vec::capacity).sum::<usize>())
            .sum();
        let parts: usize = self
            .parts
            .iter()
            .map(|part| {
                part.partial.capacity() + part.bands.iter().map(Vec::capacity).sum::<usize>()
            })
            .sum();
        let elements = lanes + parts;
        let staged: usize = self.staged.iter().map(Vec::capacity).sum();
        let weights = self.weights.capacity() + self.input_gradient_weights.capacity();
        (elements + weights + staged) * std::mem::size_of::<T>()
    }

    /// Runs `work`, which grows workspace buffers as it goes, deep inside
    /// kernels and on every lane: a buffer the system refuses ends it early
    /// (by unwinding, which frees whatever the call held) and comes back as
    /// [`ConvError::OutOfMemory`], with the workspace's buffers released.
    /// Any other panic goes on unwinding.
    pub(crate) fn fallibly<R>(
        &mut self,
        work: impl FnOnce(&mut Self) -> R,
    ) -> Result<R, ConvError> {
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| work(&mut *self)));
        match outcome {
            Ok(result) => Ok(result),
            Err(payload) => match payload.downcast::<AllocationFailed>() {
                Ok(failed) => {
                    self.release();
                    Err(ConvError::OutOfMemory {
                        what: "workspace",
                        bytes: failed.0,
                    })
                }
                Err(other) => std::panic::resume_unwind(other),
            },
        }
    }

    /// Runs `work` with every pass checking what `checks` names for NaN
    /// and ±∞; returns what `work` returns and whether all was finite.
    pub(crate) fn checking_outputs<R>(
        &mut self,
        checks: Checks,
        work: impl FnOnce(&mut Self) -> R,
    ) -> (R, bool) {
        self.outputs = Some((checks, true));
        let result = work(self);
        let finite = self.outputs.take().is_none_or(|(_, finite)| finite);
        (result, finite)
    }

    /// Records, for a pass under [`Self::checking_outputs`], whether results
    /// a kernel checked itself (outside the scheduler's checks) are finite.
    pub(crate) fn record_finite(&mut self, finite: bool) {
        if let Some((_, all)) = &mut self.outputs {
            *all &= finite;
        }
    }

    /// Drops every buffer, keeping the options.
    fn release(&mut self) {
        self.lanes = Vec::new();
        self.parts = Vec::new();
        self.weights = Vec::new();
        self.input_gradient_weights = Vec::new();
        self.staged = Default::default();
    }

    /// The buffer of an input gradient's weights, taken out so that the
    /// forward kernel computing it can borrow the workspace while they are
    /// read; [`Self::restore_input_gradient_weights`] puts it back.
    pub(crate) fn take_input_gradient_weights(&mut self) -> Vec<T> {
        std::mem::take(&mut self.input_gradient_weights)
    }

    /// Puts back the buffer of [`Self::take_input_gradient_weights`].
    pub(crate) fn restore_input_gradient_weights(&mut self, weights: Vec<T>) {
        self.input_gradient_weights = weights;
    }

    /// The staged-operand buffers, taken out so that the kernels can
    /// borrow the workspace while they are read; [`Self::restore_staged`]
    /// puts them back.
    pub(crate) fn take_staged(&mut self) -> [Vec<T>; 2] {
        std::mem::take(&mut self.staged)
    }

    /// Puts back the buffers of [`Self::take_staged`].
    pub(crate) fn restore_staged(&mut self, staged: [Vec<T>; 2]) {
        self.staged = staged;
    }

    /// The weights buffer and the memory of the lanes and parts of
    /// `schedule` (one part at least, which holds the gradient sums of an
    /// empty batch), created as needed, borrowed apart.
    pub(crate) fn memory(&mut self, schedule: &Schedule) -> (&mut Vec<T>, Memory<'_, T>) {
        let (lanes, parts) = (schedule.lanes().max(1), schedule.parts().max(1));
        if self.lanes.len() < lanes {
            self.lanes.resize_with(lanes, LaneMemory::default);
        }
        if self.parts.len() < parts {
            self.parts.resize_with(parts, PartMemory::default);
        }
        let memory = Memory {
            lanes: &mut self.lanes[..lanes],
            parts: &mut self.parts[..parts],
            finite: self
                .outputs
                .as_mut()
                .map(|(checks, finite)| (*checks, finite)),
        };
        (&mut self.weights, memory)
    }
}

/// The first `len` elements of `buf`, growing it (never shrinking) as needed.
/// Contents are unspecified: callers overwrite what they read. Memory the
/// system refuses ends the call early, as [`Workspace::fallibly`] describes.
pub(crate) fn scratch<T: Clone + Default>(buf: &mut Vec<T>, len: usize) -> &mut [T] {
    if buf.len() < len {
        let more = len - buf.len();
        if buf.try_reserve_exact(more).is_err() {
            allocation_failed(len.saturating_mul(std::mem::size_of::<T>()));
        }
        huge_pages::advise_spare_capacity(buf);
        buf.resize(len, T::default());
    }
    &mut buf[..len]
}

/// Bytes of a cache line on the x86-64 CPUs measured, and of an AVX-512
/// vector.
pub(crate) const CACHE_LINE_BYTES: usize = 64;

/// [`scratch`] starting on a cache line: a vector load or store of the
/// slice at a multiple of a vector's width from its start never spans two
/// lines, each of which costs the core a second access (BENCHMARKS.md,
/// "Aligned buffers"). The slice may start past the buffer's first
/// element, and where by depends on where the buffer lies: callers write
/// what they read after each call, as with [`scratch`].
pub(crate) fn aligned_scratch<T: Clone + Default>(buf: &mut Vec<T>, len: usize) -> &mut [T] {
    let size = std::mem::size_of::<T>().max(1);
    let slack = CACHE_LINE_BYTES.div_ceil(size);
    let whole = scratch(buf, len + slack);
    let skip = whole.as_ptr().align_offset(CACHE_LINE_BYTES).min(slack);
    &mut whole[skip..skip + len]
}

/// What a workspace allocation the system refused unwinds with: the bytes
/// asked for. [`Workspace::fallibly`] catches it.
struct AllocationFailed(usize);

/// Ends the call that needs `bytes` more of workspace memory: unwinds to
/// [`Workspace::fallibly`] (without the panic hook, so nothing is printed).
pub(crate) fn allocation_failed(bytes: usize) -> ! {
    std::panic::resume_unwind(Box::new(AllocationFailed(bytes)))
}

#[cfg(test)]
mod tests {
    use super::{CACHE_LINE_BYTES, aligned_scratch};

    /// Slices of every length from buffers the allocator places anywhere
    /// (small ones seldom on a line) start on a cache line, hold `len`
    /// elements, and keep what was written while the buffer does not grow.
    fn check_alignment<T: Clone + Default + PartialEq + From<u8>>() {
        for (i, len) in [0, 1, 3, 15, 16, 17, 100, 1000, 40_000]
            .iter()
            .cycle()
            .take(90)
            .enumerate()
        {
            // A buffer of some earlier size, grown where the allocator puts it.
            let mut buf: Vec<T> = vec![T::default(); i % 7 + 1];
            let slice = aligned_scratch(&mut buf, *len);
            assert_eq!(slice.len(), *len);
            assert_eq!(slice.as_ptr() as usize % CACHE_LINE_BYTES, 0);
            for (j, value) in slice.iter_mut().enumerate() {
                *value = T::from((j % 251) as u8);
            }
            let again = aligned_scratch(&mut buf, *len);
            assert!(
                again
                    .iter()
                    .enumerate()
                    .all(|(j, value)| *value == T::from((j % 251) as u8))
            );
        }
    }

    #[test]
    fn aligned_scratch_starts_on_a_cache_line() {
        check_alignment::<f32>();
        check_alignment::<f64>();
        check_alignment::<u8>();
    }
}
