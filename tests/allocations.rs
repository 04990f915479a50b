//! After a warm-up call, the strided path allocates nothing but its outputs:
//! a `Conv2d` layer allocates exactly its returned array per call, and the
//! `_into` functions allocate nothing at all. Counted with a global allocator
//! (in its own test binary, so no other test allocates meanwhile), with the
//! pool's threads not lingering after a pass (`gemmconv::set_linger`).
//!
//! The GEMM's own packing buffers are not counted: the pure-Rust `gemm` crate
//! allocates them inside every call, which this crate cannot change (BLAS
//! libraries keep theirs in pools outside Rust's allocator).

mod common;

use common::{random_array1, random_array4, rng};
use gemmconv::ndarray::{Array1, Array4};
use gemmconv::{
    Algorithm, Conv2d, Conv2dSpec, Gradients, InputGradient, Kernel, Workspace,
    conv2d_backward_into, conv2d_into,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; the counter
// is a relaxed atomic that never affects the returned memory.
fn count() {
    if !gemmconv::inside_gemm() {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    f();
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

#[test]
fn warm_calls_allocate_only_their_outputs() {
    // Calls are made from inside the pool: a call from outside hands the
    // pool its other lanes as a task that rayon allocates, and its global
    // injection queue allocates a block now and then on its own account.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    // Threads that linger after a parallel pass (`set_linger`) start with
    // one small allocation of rayon's whenever they had stopped, which
    // depends on timing: the counts here are of the calls alone.
    gemmconv::set_linger(std::time::Duration::ZERO);
    // Every thread of both pools is started (and has made its start-up
    // allocations) before anything is counted.
    rayon::broadcast(|_| ());
    pool.broadcast(|_| ());
    pool.install(|| {
        let specs = [
            // stride 1, c_in == c_out: error lowering
            Conv2dSpec::new(4, 4, (3, 3)).padding((1, 1)),
            // stride 2 with groups: col2im
            Conv2dSpec::new(4, 6, (3, 3))
                .stride((2, 2))
                .padding((1, 1))
                .groups(2),
            // stride 1, 32 channels: the shifted kernel
            Conv2dSpec::new(32, 32, (3, 3))
                .padding((2, 2))
                .dilation((2, 2)),
        ];
        for spec in specs {
            for cap in [usize::MAX, 256] {
                check(&spec, [5, spec.in_channels(), 12, 10], cap);
            }
        }
        // Outputs large enough to be zero-filled by the pool's threads: the
        // layer's output, then its input gradient.
        check(&Conv2dSpec::new(1, 64, (1, 1)), [2, 1, 64, 64], usize::MAX);
        check(&Conv2dSpec::new(64, 1, (1, 1)), [2, 64, 64, 64], usize::MAX);
    });
}

fn check(spec: &Conv2dSpec, input: [usize; 4], cap: usize) {
    let mut rng = rng(3);
    let x = random_array4::<f32>(&mut rng, input);
    let dy = random_array4::<f32>(&mut rng, spec.output_shape(input).unwrap());
    let mut layer = Conv2d::<f32>::new_kaiming(spec.clone(), &mut rng)
        .unwrap()
        .with_workspace(Workspace::new().with_column_cap_bytes(cap));
    layer.forward(x.view()).unwrap();
    layer.backward(dy.view()).unwrap();
    for _ in 0..3 {
        assert_eq!(
            allocations_during(|| drop(layer.forward(x.view()).unwrap())),
            1,
            "layer forward, cap {cap}, {spec:?}"
        );
        assert_eq!(
            allocations_during(|| drop(layer.backward(dy.view()).unwrap())),
            1,
            "layer backward, cap {cap}, {spec:?}"
        );
    }

    let w = random_array4::<f32>(&mut rng, spec.weight_shape());
    let b: Array1<f32> = random_array1(&mut rng, spec.out_channels());
    let mut y = Array4::zeros(spec.output_shape(input).unwrap());
    let mut grads = Gradients {
        dx: Array4::zeros(input),
        dw: Array4::zeros(spec.weight_shape()),
        db: Array1::zeros(spec.out_channels()),
    };
    let configurations = [
        (Kernel::Gemm, InputGradient::Col2im),
        (Kernel::Gemm, InputGradient::ErrorLowering),
        (Kernel::Shifted, InputGradient::Auto),
        (Kernel::Winograd, InputGradient::Auto),
        (Kernel::Winograd4x4, InputGradient::Auto),
    ];
    for (kernel, method) in configurations {
        let mut ws = Workspace::new()
            .with_column_cap_bytes(cap)
            .with_input_gradient(method)
            .with_kernel(kernel);
        let mut step = || {
            conv2d_into(
                x.view(),
                w.view(),
                Some(b.view()),
                spec,
                Algorithm::Strided,
                &mut ws,
                y.view_mut(),
            )
            .unwrap();
            conv2d_backward_into(
                x.view(),
                w.view(),
                dy.view(),
                spec,
                Algorithm::Strided,
                &mut ws,
                grads.view_mut(),
            )
            .unwrap();
        };
        step();
        assert_eq!(
            allocations_during(&mut step),
            0,
            "_into with {kernel:?}, {method:?}, cap {cap}, {spec:?}"
        );
    }
}
