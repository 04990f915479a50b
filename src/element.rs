//! The float types a convolution runs on.

use ndarray::NdFloat;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A float type the convolutions are generic over: `f32` (SGEMM) or `f64`
/// (DGEMM). Sealed: the GEMM backends exist for these two only.
///
/// ```
/// fn zero<T: gemmconv::Element>() -> T { T::zero() }
/// assert_eq!(zero::<f32>(), 0.0);
/// assert_eq!(<f64 as gemmconv::Element>::NAME, "f64");
/// assert_eq!(gemmconv::Element::into_f64(0.5f32), 0.5f64);
/// ```
pub trait Element: NdFloat + Default + sealed::Sealed {
    /// The type's name, as used in benchmark ids and messages.
    const NAME: &'static str;

    /// Converts from `f64`, rounding to the nearest value of `Self`.
    fn from_f64(value: f64) -> Self;

    /// Converts to `f64` (exact for both types).
    fn into_f64(self) -> f64;
}

impl Element for f32 {
    const NAME: &'static str = "f32";
    fn from_f64(value: f64) -> Self {
        value as f32
    }
    fn into_f64(self) -> f64 {
        self as f64
    }
}

impl Element for f64 {
    const NAME: &'static str = "f64";
    fn from_f64(value: f64) -> Self {
        value
    }
    fn into_f64(self) -> f64 {
        self
    }
}
