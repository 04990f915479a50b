//! The arrays a call allocates, allocated fallibly: a size the system
//! refuses (or that overflows the address space) is
//! [`ConvError::OutOfMemory`], never an abort.
//!
//! The arrays a call hands back are left unwritten until its pass writes
//! them in full ([`written`]). Its scratch arrays are zero-filled, large
//! ones by the pool's threads: `Array4::zeros` fills the whole array on one
//! thread (glibc's `calloc` has to clear reused heap memory), and on the
//! large arrays that fill shows in the call's time (BENCHMARKS.md,
//! "Zero-filled outputs"). Arrays too large for glibc's heap come zeroed
//! from the allocator instead: the kernel maps them zeroed, and nothing
//! writes them before the convolution does (BENCHMARKS.md, "Huge pages").

use crate::element::Element;
use crate::error::ConvError;
use crate::gradients::{GradientSelection, SelectedGradients, SelectedGradientsMut};
use crate::huge_pages;
use crate::plan::Plan;
use crate::workspace::allocation_failed;
use ndarray::{Array, ArrayView, ArrayViewMut, Dim, Dimension};
use rayon::prelude::*;

/// Below this many elements one thread fills the array: starting rayon
/// tasks costs microseconds, clearing a megabyte about as much.
const PARALLEL_FILL_ELEMENTS: usize = 1 << 18;

/// Whether filling (or copying, or adding into) `len` elements is worth
/// the current rayon pool's threads.
pub(crate) fn worth_parallel_fill(len: usize) -> bool {
    len >= PARALLEL_FILL_ELEMENTS && rayon::current_num_threads() > 1
}

/// Below this many elements one thread scans or transposes a weight
/// gradient: on the batch-1 layers with large weights, the pool's threads
/// gained from a million elements on and lost a little at 400 Ki
/// (BENCHMARKS.md, "Weight-gradient layout").
const PARALLEL_PASS_ELEMENTS: usize = 1 << 20;

/// Whether a pass that reads (and writes) `len` elements once, and is as
/// cheap per element as a scan or a transpose, is worth the current rayon
/// pool's threads.
pub(crate) fn worth_parallel_pass(len: usize) -> bool {
    len >= PARALLEL_PASS_ELEMENTS && rayon::current_num_threads() > 1
}

/// An empty vector with room for `len` elements of `T`, or the error
/// naming `what` and the bytes asked for.
pub(crate) fn try_vec<T>(len: usize, what: &'static str) -> Result<Vec<T>, ConvError> {
    let mut data = Vec::new();
    data.try_reserve_exact(len)
        .map_err(|_| ConvError::OutOfMemory {
            what,
            bytes: len.saturating_mul(std::mem::size_of::<T>()),
        })?;
    huge_pages::advise_spare_capacity(&mut data);
    Ok(data)
}

/// The number of elements of shape `dim`, or the error naming `what` for
/// a shape whose count overflows the address space.
fn element_count<D: Dimension>(dim: &D, what: &'static str) -> Result<usize, ConvError> {
    dim.size_checked().ok_or(ConvError::OutOfMemory {
        what,
        bytes: usize::MAX,
    })
}

/// An array of zeros of shape `dim`, filled by the current rayon pool's
/// threads when it is large.
pub(crate) fn zeroed<T: Element, D: Dimension>(
    dim: D,
    what: &'static str,
) -> Result<Array<T, D>, ConvError> {
    let len = element_count(&dim, what)?;
    if len.saturating_mul(std::mem::size_of::<T>()) >= FRESHLY_MAPPED_BYTES {
        return zeroed_by_allocator(dim, len, what);
    }
    let mut data = try_vec(len, what)?;
    if !worth_parallel_fill(len) {
        data.resize(len, T::zero());
    } else {
        // Within the capacity reserved above: no allocation.
        data.par_extend((0..len).into_par_iter().map(|_| T::zero()));
    }
    Ok(Array::from_shape_vec(dim, data).expect("the vector holds the shape's elements"))
}

/// From this many bytes up, glibc's allocator maps every block afresh
/// (its largest `mmap` threshold on 64-bit targets, 32 MiB), so memory
/// asked for zeroed comes zeroed from the kernel at no cost until it is
/// written.
const FRESHLY_MAPPED_BYTES: usize = 32 << 20;

/// [`zeroed`] by the global allocator's zeroed allocation: a fresh mapping
/// costs nothing until the kernels write it, and its huge pages are asked
/// for before anything touches it.
fn zeroed_by_allocator<T: Element, D: Dimension>(
    dim: D,
    len: usize,
    what: &'static str,
) -> Result<Array<T, D>, ConvError> {
    let refused = ConvError::OutOfMemory {
        what,
        bytes: len.saturating_mul(std::mem::size_of::<T>()),
    };
    let layout = std::alloc::Layout::array::<T>(len).map_err(|_| refused.clone())?;
    // SAFETY: `layout` has a non-zero size (at least FRESHLY_MAPPED_BYTES).
    let pointer = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if pointer.is_null() {
        return Err(refused);
    }
    huge_pages::advise(pointer.cast(), layout.size());
    // SAFETY: `pointer` comes from the global allocator with the layout of
    // `len` elements of `T`, which is `Vec<T>`'s for that capacity, and all
    // its bytes are zero: every element is `T::zero()` (`T` is `f32` or
    // `f64`, whose zero has all bits zero).
    let data = unsafe { Vec::from_raw_parts(pointer, len, len) };
    Ok(Array::from_shape_vec(dim, data).expect("the vector holds the shape's elements"))
}

/// An array the call hands back, whose memory a pass writes in full:
/// allocated without the zero fill of [`zeroed`], which on one thread
/// costs a fifth of a depthwise batch-1 forward call, and more when the
/// pass writes the array from another core (BENCHMARKS.md, "Unwritten
/// outputs"). In builds with debug assertions its elements start as NaN
/// instead, so a pass that reads an element before writing it shows in
/// the results of every test.
struct Unwritten<T, D> {
    data: Vec<T>,
    dim: D,
}

impl<T: Element, D: Dimension> Unwritten<T, D> {
    fn new(dim: D, what: &'static str) -> Result<Self, ConvError> {
        let len = element_count(&dim, what)?;
        let mut data = try_vec(len, what)?;
        if cfg!(debug_assertions) {
            data.resize(len, T::nan());
        }
        Ok(Self { data, dim })
    }

    /// A view of the array's memory, which may be uninitialized.
    ///
    /// # Safety
    ///
    /// Nothing reads an element of the view before writing it.
    unsafe fn view_mut(&mut self) -> ArrayViewMut<'_, T, D> {
        // SAFETY: the vector's buffer holds `dim.size()` elements of `T`
        // (its capacity), aligned, and the view in standard layout spans
        // exactly them; the view borrows `self` mutably, so nothing else
        // reaches the buffer while it lives. The caller reads no element
        // before writing it.
        unsafe { ArrayViewMut::from_shape_ptr(self.dim.clone(), self.data.as_mut_ptr()) }
    }

    /// The array, its elements as written.
    ///
    /// # Safety
    ///
    /// Every element has been written through [`Unwritten::view_mut`].
    unsafe fn assume_written(mut self) -> Array<T, D> {
        let len = self.dim.size();
        // SAFETY: the capacity is `len` (`try_vec`) and the caller has
        // written all `len` elements.
        unsafe { self.data.set_len(len) };
        Array::from_shape_vec(self.dim, self.data).expect("the vector holds the shape's elements")
    }
}

/// A new array of shape `dim` that `write` fills, without zeroing it first.
///
/// # Safety
///
/// When it returns `Ok`, `write` has written every element of the view it
/// gets, and it reads no element before writing it (the passes of
/// [`Plan`](crate::plan::Plan) promise both for their outputs).
pub(crate) unsafe fn written<T: Element, D: Dimension>(
    dim: D,
    what: &'static str,
    write: impl FnOnce(ArrayViewMut<'_, T, D>) -> Result<(), ConvError>,
) -> Result<Array<T, D>, ConvError> {
    let mut array = Unwritten::new(dim, what)?;
    // SAFETY: `write` reads no element before writing it (the caller's
    // promise), and on `Ok` it has written them all.
    unsafe {
        write(array.view_mut())?;
        Ok(array.assume_written())
    }
}

/// New gradients of the shapes of `plan`, those `selection` names, that
/// `write` fills, without zeroing them first.
///
/// # Safety
///
/// As for [`written`]: on `Ok`, `write` has written every element of each
/// gradient it gets, and it reads none before writing it.
pub(crate) unsafe fn written_gradients<T: Element>(
    plan: &Plan,
    selection: GradientSelection,
    write: impl FnOnce(SelectedGradientsMut<'_, T>) -> Result<(), ConvError>,
) -> Result<SelectedGradients<T>, ConvError> {
    let new = |wanted: bool, shape: [usize; 4]| {
        wanted
            .then(|| Unwritten::new(Dim(shape), "gradient"))
            .transpose()
    };
    let mut dx = new(selection.input, plan.input_shape())?;
    let mut dw = new(selection.weight, plan.weight_shape())?;
    let mut db = selection
        .bias
        .then(|| Unwritten::new(Dim([plan.bias_len()]), "gradient"))
        .transpose()?;
    // SAFETY: `write` reads no element before writing it (the caller's
    // promise), and on `Ok` it has written every element of the three.
    unsafe {
        write(SelectedGradientsMut {
            dx: dx.as_mut().map(|a| a.view_mut()),
            dw: dw.as_mut().map(|a| a.view_mut()),
            db: db.as_mut().map(|a| a.view_mut()),
        })?;
        Ok(SelectedGradients {
            dx: dx.map(|a| a.assume_written()),
            dw: dw.map(|a| a.assume_written()),
            db: db.map(|a| a.assume_written()),
        })
    }
}

/// [`zeroed`] for a scratch array of a call that runs inside
/// [`Workspace::fallibly`](crate::Workspace): memory the system refuses ends
/// the call there, as a workspace buffer's would.
pub(crate) fn scratch_zeros<T: Element, D: Dimension>(dim: D) -> Array<T, D> {
    match zeroed(dim, "workspace") {
        Ok(array) => array,
        Err(err) => allocation_failed(match err {
            ConvError::OutOfMemory { bytes, .. } => bytes,
            _ => usize::MAX,
        }),
    }
}

/// An owned copy of `a` in standard layout.
pub(crate) fn copied<T: Element, D: Dimension>(
    a: &ArrayView<'_, T, D>,
    what: &'static str,
) -> Result<Array<T, D>, ConvError> {
    let mut data = try_vec(a.len(), what)?;
    match a.as_slice() {
        Some(slice) => data.extend_from_slice(slice),
        None => data.extend(a.iter().copied()),
    }
    Ok(Array::from_shape_vec(a.raw_dim(), data).expect("the vector holds the view's elements"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array4, Ix4, s};

    #[test]
    fn zeroed_has_the_shape_and_only_zeros() {
        // The last shape is above FRESHLY_MAPPED_BYTES: the allocator zeroes it.
        for shape in [
            [0, 3, 4, 5],
            [1, 1, 1, 1],
            [2, 64, 64, 33],
            [1, 2, 2049, 2048],
        ] {
            let a =
                zeroed::<f32, _>(Ix4(shape[0], shape[1], shape[2], shape[3]), "output").unwrap();
            assert_eq!(a.shape(), shape);
            assert!(a.is_standard_layout());
            assert!(a.iter().all(|&v| v == 0.0));
        }
    }

    #[test]
    fn written_arrays_hold_what_the_pass_wrote() {
        let shape = Ix4(2, 3, 4, 5);
        // SAFETY: the closure writes every element and reads none first.
        let a = unsafe {
            written::<f64, _>(shape, "output", |mut y| {
                for ((n, c, h, w), v) in y.indexed_iter_mut() {
                    *v = (n * 60 + c * 20 + h * 5 + w) as f64;
                }
                Ok(())
            })
        }
        .unwrap();
        assert!(a.is_standard_layout());
        assert_eq!(
            a,
            Array4::from_shape_fn(shape, |(n, c, h, w)| (n * 60 + c * 20 + h * 5 + w) as f64)
        );
        // SAFETY: the closure writes nothing and fails.
        let failed = unsafe {
            written::<f32, _>(shape, "output", |_| Err(ConvError::BackwardBeforeForward))
        };
        assert!(matches!(failed, Err(ConvError::BackwardBeforeForward)));
        let huge = Ix4(1 << 20, 1 << 20, 1 << 10, 1);
        // SAFETY: the allocation fails before the closure runs.
        let refused = unsafe { written::<f64, _>(huge, "output", |_| unreachable!()) };
        assert!(matches!(
            refused,
            Err(ConvError::OutOfMemory { what: "output", .. })
        ));
    }

    /// With debug assertions (the tests' builds) an unwritten element reads
    /// as NaN, so a pass that reads its output before writing it fails the
    /// tests that compare its results.
    #[cfg(debug_assertions)]
    #[test]
    fn unwritten_elements_read_as_nan_in_debug_builds() {
        // SAFETY: the memory is initialized (to NaN) in builds with debug
        // assertions, so the reads are of initialized values.
        let a = unsafe {
            written::<f32, _>(Ix4(1, 2, 3, 4), "output", |mut y| {
                let first = y[[0, 0, 0, 0]];
                y.fill(first);
                Ok(())
            })
        }
        .unwrap();
        assert!(a.iter().all(|v| v.is_nan()));
    }

    #[test]
    fn sizes_beyond_memory_are_errors() {
        let huge = Ix4(1 << 20, 1 << 20, 1 << 10, 1);
        assert!(matches!(
            zeroed::<f64, _>(huge, "output"),
            Err(ConvError::OutOfMemory { what: "output", .. })
        ));
        let overflowing = Ix4(usize::MAX, 2, 1, 1);
        assert!(matches!(
            zeroed::<f32, _>(overflowing, "gradient"),
            Err(ConvError::OutOfMemory {
                bytes: usize::MAX,
                ..
            })
        ));
    }

    #[test]
    fn copies_keep_values_in_logical_order() {
        let a = Array4::from_shape_fn((2, 3, 4, 5), |(n, c, h, w)| {
            (n * 60 + c * 20 + h * 5 + w) as f32
        });
        let view = a.slice(s![.., ..;2, .., ..;-1]);
        let copy = copied(&view, "input copy").unwrap();
        assert_eq!(copy, view);
        assert!(copy.is_standard_layout());
    }
}
