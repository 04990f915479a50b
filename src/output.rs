//! Zero-filled output arrays for the allocating calls.
//!
//! `Array4::zeros` fills the whole array on one thread (glibc's `calloc`
//! has to clear reused heap memory), and on the large outputs that fill
//! shows in the call's time; the pool's threads fill it faster
//! (BENCHMARKS.md, "Zero-filled outputs").

use crate::element::Element;
use ndarray::Array4;
use rayon::prelude::*;

/// Below this many elements one thread fills the array: starting rayon
/// tasks costs microseconds, clearing a megabyte about as much.
const PARALLEL_FILL_ELEMENTS: usize = 1 << 18;

/// An array of zeros of `shape`, filled by the current rayon pool's threads
/// when it is large.
/// `shape` comes from a `Geometry`, which has checked that its product fits.
pub(crate) fn zeroed<T: Element>(shape: [usize; 4]) -> Array4<T> {
    let len = shape.iter().product();
    if len < PARALLEL_FILL_ELEMENTS || rayon::current_num_threads() == 1 {
        return Array4::zeros(shape);
    }
    let data: Vec<T> = (0..len).into_par_iter().map(|_| T::zero()).collect();
    Array4::from_shape_vec(shape, data).expect("the vector holds the shape's elements")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_has_the_shape_and_only_zeros() {
        for shape in [[0, 3, 4, 5], [1, 1, 1, 1], [2, 64, 64, 33]] {
            let a = zeroed::<f32>(shape);
            assert_eq!(a.shape(), shape);
            assert!(a.is_standard_layout());
            assert!(a.iter().all(|&v| v == 0.0));
        }
    }
}
