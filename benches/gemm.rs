//! The GEMM candidates on the suite's GEMM shapes, to choose the default
//! backend by measurement: the `gemm` crate, `matrixmultiply` (ndarray's
//! own, single-threaded), and, when built with `--features openblas-system`,
//! OpenBLAS. Each on 1 and 2 threads (one GEMM using them, no outer
//! parallelism).
//!
//! Shapes, per suite row, for the whole batch (`n` or `k` = batch × output
//! pixels): `fwd` is `W[c_out, c_in·kh·kw] · cols`, `dw` is `dY · colsᵀ`
//! (the long-k reduction). Ids: `gemm/<row>-<fwd|dw>/<backend>-<threads>t`.
//!
//! `cargo bench --bench gemm` (add `--features openblas-system` for OpenBLAS).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gemmconv::ndarray::{Array2, ArrayView2, ArrayViewMut2, linalg::general_mat_mul};
use gemmconv::suite::rows;
use std::hint::black_box;
use std::time::Duration;

trait Float: gemmconv::Element {
    #[cfg(feature = "openblas-system")]
    fn openblas(a: ArrayView2<'_, Self>, b: ArrayView2<'_, Self>, c: ArrayViewMut2<'_, Self>);
}

#[cfg(feature = "openblas-system")]
unsafe extern "C" {
    fn openblas_set_num_threads(n: std::ffi::c_int);
}

/// Row-major, contiguous operands only (the bench makes them so).
#[cfg(feature = "openblas-system")]
macro_rules! openblas_with {
    ($gemm:ident) => {
        fn openblas(
            a: ArrayView2<'_, Self>,
            b: ArrayView2<'_, Self>,
            mut c: ArrayViewMut2<'_, Self>,
        ) {
            use cblas_sys::{CBLAS_LAYOUT::CblasRowMajor, CBLAS_TRANSPOSE::CblasNoTrans};
            let ((m, k), n) = (a.dim(), b.ncols());
            assert!(a.is_standard_layout() && b.is_standard_layout() && c.is_standard_layout());
            // SAFETY: three contiguous row-major matrices of the stated
            // shapes; `c` is a unique borrow.
            unsafe {
                cblas_sys::$gemm(
                    CblasRowMajor,
                    CblasNoTrans,
                    CblasNoTrans,
                    m as i32,
                    n as i32,
                    k as i32,
                    1.0,
                    a.as_ptr(),
                    k as i32,
                    b.as_ptr(),
                    n as i32,
                    0.0,
                    c.as_mut_ptr(),
                    n as i32,
                )
            }
        }
    };
}

impl Float for f32 {
    #[cfg(feature = "openblas-system")]
    openblas_with!(cblas_sgemm);
}
impl Float for f64 {
    #[cfg(feature = "openblas-system")]
    openblas_with!(cblas_dgemm);
}

fn gemm_crate<T: Float>(
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    mut c: ArrayViewMut2<'_, T>,
    threads: usize,
) {
    let ((m, k), n) = (a.dim(), b.ncols());
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let (cs, as_, bs) = (
        c.strides().to_vec(),
        a.strides().to_vec(),
        b.strides().to_vec(),
    );
    // SAFETY: pointers and strides of live views of the stated shapes; `c`
    // is a unique borrow.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            cs[1],
            cs[0],
            false,
            a.as_ptr(),
            as_[1],
            as_[0],
            b.as_ptr(),
            bs[1],
            bs[0],
            T::zero(),
            T::one(),
            false,
            false,
            false,
            par,
        )
    }
}

fn bench_shape<T: Float>(c: &mut Criterion, id: &str, (m, n, k): (usize, usize, usize)) {
    let a = Array2::from_shape_fn((m, k), |(i, j)| {
        T::from_f64(((i * 7 + j * 3) % 11) as f64 / 11.0)
    });
    let b = Array2::from_shape_fn((k, n), |(i, j)| {
        T::from_f64(((i * 5 + j) % 13) as f64 / 13.0)
    });
    let mut out = Array2::zeros((m, n));
    let mut group = c.benchmark_group("gemm");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(2 * (m * n * k) as u64));
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        group.bench_function(BenchmarkId::new(id, format!("gemm-{threads}t")), |bench| {
            pool.install(|| bench.iter(|| gemm_crate(a.view(), b.view(), out.view_mut(), threads)))
        });
        // ndarray's matrixmultiply is built without its `threading` feature:
        // one thread only.
        if threads == 1 {
            group.bench_function(BenchmarkId::new(id, "matrixmultiply-1t"), |bench| {
                bench.iter(|| general_mat_mul(T::one(), &a, &b, T::zero(), &mut out))
            });
        }
        #[cfg(feature = "openblas-system")]
        group.bench_function(
            BenchmarkId::new(id, format!("openblas-{threads}t")),
            |bench| {
                // SAFETY: takes a plain integer.
                unsafe { openblas_set_num_threads(threads as i32) };
                bench.iter(|| T::openblas(a.view(), b.view(), out.view_mut()))
            },
        );
        black_box(&out);
    }
    group.finish();
}

fn suite_gemms(c: &mut Criterion) {
    for row in rows().into_iter().filter(|r| r.id != "dw") {
        let out = row.spec.output_shape(row.input).unwrap();
        let [c_out, c_in_g, kh, kw] = row.spec.weight_shape();
        let (k, pixels) = (c_in_g * kh * kw, out[0] * out[2] * out[3]);
        for (pass, shape) in [("fwd", (c_out, pixels, k)), ("dw", (c_out, k, pixels))] {
            let id = format!("{}-{pass}", row.id);
            if row.double {
                bench_shape::<f64>(c, &id, shape);
            } else {
                bench_shape::<f32>(c, &id, shape);
            }
        }
    }
    // The square reference: what each backend reaches on a large, easy GEMM.
    bench_shape::<f32>(c, "square2048", (2048, 2048, 2048));
}

criterion_group!(benches, suite_gemms);
criterion_main!(benches);
