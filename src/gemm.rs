//! The one place that knows which GEMM runs. Every matrix product of the
//! crate goes through [`matmul`]; the rest of the crate never names a backend.

use crate::element::Element;
use ndarray::{ArrayView2, ArrayViewMut2, s};

/// The name of the GEMM this build runs.
///
/// ```
/// assert!(!gemmconv::gemm_backend().is_empty());
/// ```
pub fn gemm_backend() -> &'static str {
    if cfg!(feature = "openblas-system") {
        "OpenBLAS (system)"
    } else if cfg!(feature = "openblas-static") {
        "OpenBLAS (static)"
    } else if cfg!(feature = "netlib") {
        "netlib reference BLAS"
    } else if cfg!(feature = "intel-mkl-static") {
        "Intel MKL (static, sequential)"
    } else if cfg!(feature = "intel-mkl-system") {
        "Intel MKL (system, sequential)"
    } else if cfg!(feature = "blis") {
        "BLIS"
    } else if cfg!(feature = "accelerate") {
        "Apple Accelerate"
    } else {
        "gemm crate (pure Rust, runtime CPU dispatch)"
    }
}

#[cfg(feature = "_internal")]
thread_local! {
    static INSIDE_GEMM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// How many GEMMs that run on several threads are in flight: their packing
/// buffers are allocated on the pool's other threads.
#[cfg(feature = "_internal")]
static PARALLEL_GEMMS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Whether the current thread may be inside a GEMM call: it called one, or
/// a GEMM that runs on several threads is in flight. For tests that count
/// allocations: the GEMM's own packing buffers are its business (the
/// pure-Rust GEMM allocates them per call; BLAS libraries keep pools outside
/// Rust's allocator), everything else is this crate's.
#[cfg(feature = "_internal")]
#[doc(hidden)]
pub fn inside_gemm() -> bool {
    INSIDE_GEMM.with(|flag| flag.get())
        || PARALLEL_GEMMS.load(std::sync::atomic::Ordering::SeqCst) > 0
}

/// `C ← A·B` (or `C ← C + A·B` when `accumulate`), with `A: m×k`, `B: k×n`,
/// `C: m×n`, each with any strides. `threads` is how many threads the GEMM
/// may use itself; callers that already run one GEMM per rayon task pass 1,
/// so parallelism is never nested.
///
/// Shapes are the caller's invariant (the kernels derive them from a
/// validated geometry), so a mismatch is a bug in this crate and panics.
pub(crate) fn matmul<T: Element>(
    c: ArrayViewMut2<'_, T>,
    accumulate: bool,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    threads: usize,
) {
    product(c, accumulate, a, b, threads, false);
}

/// [`matmul`] for a product whose columns are the same on any thread
/// count (one whole sample's pixels, say, rather than a lane's band of
/// them): with the pure-Rust GEMM, its last few columns may be dot
/// products instead (`gemm_tail.rs`), which round otherwise, so a product
/// whose columns the thread count cuts would not be the same on every
/// thread count.
pub(crate) fn matmul_whole_columns<T: Element>(
    c: ArrayViewMut2<'_, T>,
    accumulate: bool,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    threads: usize,
) {
    product(c, accumulate, a, b, threads, true);
}

/// [`matmul`], and with `whole_columns` [`matmul_whole_columns`].
fn product<T: Element>(
    mut c: ArrayViewMut2<'_, T>,
    accumulate: bool,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    threads: usize,
    whole_columns: bool,
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
    #[cfg(feature = "_internal")]
    INSIDE_GEMM.with(|flag| flag.set(true));
    #[cfg(feature = "_internal")]
    if threads > 1 {
        PARALLEL_GEMMS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    #[cfg(feature = "_blas")]
    let done = blas::try_matmul(&mut c, accumulate, &a, &b, threads);
    #[cfg(not(feature = "_blas"))]
    let done = false;
    if !done {
        let tail = match whole_columns {
            true => crate::gemm_tail::tail_columns::<T>(n),
            false => 0,
        };
        // Whatever the threads, so that the GEMM's pieces are the same on
        // any thread count.
        if tail > 0 && a.strides()[1] == 1 && c.strides()[1] == 1 {
            crate::gemm_tail::matmul(c, accumulate, a, b, tail, |c, accumulate, a, b| {
                pure_rust_matmul(c, accumulate, a, b, threads)
            });
        } else {
            pure_rust_matmul(c, accumulate, a, b, threads);
        }
    }
    #[cfg(feature = "_internal")]
    INSIDE_GEMM.with(|flag| flag.set(false));
    #[cfg(feature = "_internal")]
    if threads > 1 {
        PARALLEL_GEMMS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The deepest product handed to the `gemm` crate in one call. It cuts a
/// deeper product into blocks of a depth it chooses from the shapes (512
/// where both `m` and `n` are at most 64, else from the cache sizes and
/// evened out over `k`, 384 for a depth of 1152, say), and the blocks'
/// sums round differently: a channel block whose size the thread count
/// sets would then round otherwise on another pool. Products of at most
/// this depth are one block whatever the shape, and deeper ones are cut
/// here into such products at fixed depths, each added onto the last, as
/// the crate adds its blocks: every element sums its products in the same
/// order on any shape (`tests/determinism.rs`; BENCHMARKS.md, "Products
/// deeper than the GEMM's blocks").
const MAX_GEMM_DEPTH: usize = 512;

/// The `gemm` crate, in products of at most [`MAX_GEMM_DEPTH`]: any
/// strides.
fn pure_rust_matmul<T: Element>(
    mut c: ArrayViewMut2<'_, T>,
    accumulate: bool,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    threads: usize,
) {
    let k = a.ncols();
    for start in (0..k).step_by(MAX_GEMM_DEPTH) {
        let depth = start..(start + MAX_GEMM_DEPTH).min(k);
        gemm_crate_matmul(
            c.view_mut(),
            accumulate || start > 0,
            a.slice(s![.., depth.clone()]),
            b.slice(s![depth, ..]),
            threads,
        );
    }
    if threads > 1 {
        crate::linger::keep_awake();
    }
}

/// One call of the `gemm` crate: any strides.
fn gemm_crate_matmul<T: Element>(
    mut c: ArrayViewMut2<'_, T>,
    accumulate: bool,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    threads: usize,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let (c_rs, c_cs) = (c.strides()[0], c.strides()[1]);
    let (a_rs, a_cs) = (a.strides()[0], a.strides()[1]);
    let (b_rs, b_cs) = (b.strides()[0], b.strides()[1]);
    // SAFETY: the three pointers and their strides come from live ndarray
    // views whose shapes `matmul` checked to be m×k, k×n and m×n (here
    // slices of them along k, which keep that agreement), so every
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
}

/// CBLAS, for operands it can describe: each matrix with a unit stride along
/// one axis. Anything else falls back to the pure-Rust GEMM.
#[cfg(feature = "_blas")]
mod blas {
    use crate::element::Element;
    use cblas_sys::CBLAS_TRANSPOSE::{self, CblasNoTrans, CblasTrans};
    use ndarray::{ArrayView2, ArrayViewMut2};

    /// How CBLAS sees a `rows × cols` operand with strides `(rs, cs)`, in
    /// row-major terms: as is with leading dimension `rs`, or transposed with
    /// leading dimension `cs`.
    fn describe(rows: usize, cols: usize, rs: isize, cs: isize) -> Option<(CBLAS_TRANSPOSE, i32)> {
        let fits = |ld: isize, min: usize| ld >= min.max(1) as isize && ld <= i32::MAX as isize;
        if (cs == 1 || cols == 1) && fits(rs, cols) {
            Some((CblasNoTrans, rs as i32))
        } else if (rs == 1 || rows == 1) && fits(cs, rows) {
            Some((CblasTrans, cs as i32))
        } else {
            None
        }
    }

    /// Tells OpenBLAS how many threads its next calls may use, so a GEMM per
    /// rayon lane runs on one thread and a lone GEMM on all of them.
    #[cfg(any(feature = "openblas-system", feature = "openblas-static"))]
    fn set_threads(threads: usize) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static CURRENT: AtomicUsize = AtomicUsize::new(0);
        unsafe extern "C" {
            fn openblas_set_num_threads(num_threads: std::ffi::c_int);
        }
        if CURRENT.swap(threads, Ordering::Relaxed) != threads {
            // SAFETY: takes a plain integer; OpenBLAS documents it as callable
            // at any time.
            unsafe { openblas_set_num_threads(threads.min(i32::MAX as usize) as std::ffi::c_int) };
        }
    }

    /// MKL and BLIS builds are sequential; Accelerate and netlib manage
    /// their own threads.
    #[cfg(not(any(feature = "openblas-system", feature = "openblas-static")))]
    fn set_threads(_threads: usize) {}

    pub(super) fn try_matmul<T: Element>(
        c: &mut ArrayViewMut2<'_, T>,
        accumulate: bool,
        a: &ArrayView2<'_, T>,
        b: &ArrayView2<'_, T>,
        threads: usize,
    ) -> bool {
        let (m, k) = a.dim();
        let n = b.ncols();
        let small = |v: usize| i32::try_from(v).ok();
        let (Some(mi), Some(ni), Some(ki)) = (small(m), small(n), small(k)) else {
            return false;
        };
        let (Some(da), Some(db)) = (
            describe(m, k, a.strides()[0], a.strides()[1]),
            describe(k, n, b.strides()[0], b.strides()[1]),
        ) else {
            return false;
        };
        let beta = if accumulate { T::one() } else { T::zero() };
        set_threads(threads);
        match describe(m, n, c.strides()[0], c.strides()[1]) {
            Some((CblasNoTrans, ldc)) => {
                // SAFETY: `describe` checked that each operand is a row-major
                // (or transposed row-major) matrix with a unit stride and a
                // leading dimension covering its rows, so CBLAS reads exactly
                // the views' elements; `c` is a unique borrow, distinct from
                // `a` and `b`. Dimensions fit in i32 (checked above).
                unsafe {
                    T::cblas_gemm(
                        da.0,
                        db.0,
                        mi,
                        ni,
                        ki,
                        a.as_ptr(),
                        da.1,
                        b.as_ptr(),
                        db.1,
                        beta,
                        c.as_mut_ptr(),
                        ldc,
                    )
                };
                true
            }
            Some((_, ldc)) => {
                // C is column-major: compute Cᵀ = Bᵀ·Aᵀ, which is row-major.
                let flip = |t| match t {
                    CblasNoTrans => CblasTrans,
                    _ => CblasNoTrans,
                };
                // SAFETY: as above, with the roles of A and B exchanged and
                // each operation transposed; Cᵀ is n × m with leading dimension ldc.
                unsafe {
                    T::cblas_gemm(
                        flip(db.0),
                        flip(da.0),
                        ni,
                        mi,
                        ki,
                        b.as_ptr(),
                        db.1,
                        a.as_ptr(),
                        da.1,
                        beta,
                        c.as_mut_ptr(),
                        ldc,
                    )
                };
                true
            }
            None => false,
        }
    }
}
