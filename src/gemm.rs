//! The one place that knows which GEMM runs. Every matrix product of the
//! crate goes through [`matmul`]; the rest of the crate never names a backend.

use crate::element::Element;
use ndarray::{ArrayView2, ArrayViewMut2};

/// The name of the GEMM this build runs.
///
/// ```
/// assert!(!gemmconv::gemm_backend().is_empty());
/// ```
pub fn gemm_backend() -> &'static str {
    "gemm crate (pure Rust, runtime CPU dispatch)"
}

#[cfg(feature = "allocation-audit")]
thread_local! {
    static INSIDE_GEMM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the current thread is inside a GEMM call. For tests that count
/// allocations: the GEMM's own packing buffers are its business (the pure-Rust
/// GEMM allocates them per call; BLAS libraries keep pools outside Rust's
/// allocator), everything else is this crate's.
#[cfg(feature = "allocation-audit")]
#[doc(hidden)]
pub fn inside_gemm() -> bool {
    INSIDE_GEMM.with(|flag| flag.get())
}

/// `C ← A·B` (or `C ← C + A·B` when `accumulate`), with `A: m×k`, `B: k×n`,
/// `C: m×n`, each with any strides. `threads` is how many threads the GEMM
/// may use itself; callers that already run one GEMM per rayon task pass 1,
/// so parallelism is never nested.
///
/// Shapes are the caller's invariant (the kernels derive them from a
/// validated geometry), so a mismatch is a bug in this crate and panics.
pub(crate) fn matmul<T: Element>(
    mut c: ArrayViewMut2<'_, T>,
    accumulate: bool,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    threads: usize,
) {
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    assert!(
        k == k2 && c.dim() == (m, n),
        "matmul shapes: A {m}x{k}, B {k2}x{n}, C {:?}",
        c.dim()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(T::zero());
        }
        return;
    }
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    #[cfg(feature = "allocation-audit")]
    INSIDE_GEMM.with(|flag| flag.set(true));
    let (c_rs, c_cs) = (c.strides()[0], c.strides()[1]);
    let (a_rs, a_cs) = (a.strides()[0], a.strides()[1]);
    let (b_rs, b_cs) = (b.strides()[0], b.strides()[1]);
    // SAFETY: the three pointers and their strides come from live ndarray
    // views whose shapes were checked above to be m×k, k×n and m×n, so every
    // element the GEMM touches is inside its view. `c` is a unique mutable
    // borrow, so it aliases neither `a` nor `b`. `T` is f32 or f64 (the trait
    // is sealed), the only types besides complex and f16 that `gemm::gemm`
    // accepts. With `read_dst` false the GEMM only writes `c`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            c_cs,
            c_rs,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
    #[cfg(feature = "allocation-audit")]
    INSIDE_GEMM.with(|flag| flag.set(false));
}
