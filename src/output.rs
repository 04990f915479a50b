//! The arrays a call allocates, allocated fallibly: a size the system
//! refuses (or that overflows the address space) is
//! [`ConvError::OutOfMemory`], never an abort.
//!
//! Large zero-filled arrays are filled by the pool's threads:
//! `Array4::zeros` fills the whole array on one thread (glibc's `calloc`
//! has to clear reused heap memory), and on the large outputs that fill
//! shows in the call's time (BENCHMARKS.md, "Zero-filled outputs").
//! Arrays too large for glibc's heap come zeroed from the allocator
//! instead: the kernel maps them zeroed, and nothing writes them before
//! the convolution does (BENCHMARKS.md, "Huge pages").

use crate::element::Element;
use crate::error::ConvError;
use crate::huge_pages;
use crate::workspace::allocation_failed;
use ndarray::{Array, ArrayView, Dimension};
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

/// An array of zeros of shape `dim`, filled by the current rayon pool's
/// threads when it is large.
pub(crate) fn zeroed<T: Element, D: Dimension>(
    dim: D,
    what: &'static str,
) -> Result<Array<T, D>, ConvError> {
    let len = dim.size_checked().ok_or(ConvError::OutOfMemory {
        what,
        bytes: usize::MAX,
    })?;
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
