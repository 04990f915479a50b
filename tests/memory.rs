//! Memory: what a call holds beyond its operands and outputs stays under
//! the bound README.md's "Guarantees" gives, whatever the batch size,
//! forward and backward, measured by a global allocator that keeps the
//! peak of live bytes (in its own test binary, so no other test allocates
//! meanwhile); and a buffer the system refuses is `ConvError::OutOfMemory`,
//! never an abort, with the workspace usable after.

mod common;

use common::{KERNELS, random_array1, random_array4, rng};
use gemmconv::ndarray::{Array1, Array4};
use gemmconv::{
    Algorithm, Conv2dSpec, ConvError, DEFAULT_COLUMN_CAP_BYTES, Gradients, Kernel, Workspace,
    conv2d_backward_into, conv2d_into, conv2d_with_workspace,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Peak;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::SeqCst) + bytes;
    PEAK.fetch_max(live, Ordering::SeqCst);
}

// SAFETY: forwards every call to the system allocator unchanged; the
// counters are atomics that never affect the returned memory.
unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
            grew(new_size);
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Peak = Peak;

/// The most bytes live during `f` beyond those live before it.
fn peak_during(f: impl FnOnce()) -> usize {
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    f();
    PEAK.load(Ordering::SeqCst) - before
}

/// README.md's bound on what a call holds beyond operands and outputs, for
/// `threads` threads, padded samples of at most `sample` elements, the
/// column cap and `T` of `size` bytes: per thread six buffers each the cap
/// or a padded sample, 16 Mi elements of parts, and 16 MiB for the GEMM's
/// packing buffers and the weights in the kernel's layout.
fn bound(threads: usize, sample: usize, size: usize) -> usize {
    let buffer = DEFAULT_COLUMN_CAP_BYTES.max(sample * size);
    threads * 6 * buffer + (16 << 20) * size + (16 << 20)
}

/// Every kernel, forward then backward into the caller's arrays, from a
/// fresh workspace, on a batch of 4 and a batch 64 times larger: the peak
/// stays under the bound, which does not grow with the batch.
#[test]
fn memory_beyond_the_operands_does_not_grow_with_the_batch() {
    let spec = Conv2dSpec::new(16, 16, (3, 3)).padding((1, 1));
    let (h, w) = (32, 32);
    let threads = rayon::current_num_threads();
    let limit = bound(threads, 16 * (h + 2) * (w + 2), 4);
    let mut rng = rng(1);
    for batch in [4, 256] {
        let x: Array4<f32> = random_array4(&mut rng, [batch, 16, h, w]);
        let weights: Array4<f32> = random_array4(&mut rng, spec.weight_shape());
        let b: Array1<f32> = random_array1(&mut rng, 16);
        let dy: Array4<f32> = random_array4(&mut rng, [batch, 16, h, w]);
        let mut y = Array4::<f32>::zeros((batch, 16, h, w));
        let mut grads = Gradients {
            dx: Array4::zeros(x.raw_dim()),
            dw: Array4::zeros(weights.raw_dim()),
            db: Array1::zeros(16),
        };
        let operands = x.len() * 4;
        for (kernel, method) in KERNELS {
            let mut ws = Workspace::new()
                .with_kernel(kernel)
                .with_input_gradient(method);
            let peak = peak_during(|| {
                let (xv, wv) = (x.view(), weights.view());
                let spec = &spec;
                conv2d_into(
                    xv,
                    wv,
                    Some(b.view()),
                    spec,
                    Algorithm::Strided,
                    &mut ws,
                    y.view_mut(),
                )
                .unwrap();
                let ws = &mut ws;
                conv2d_backward_into(
                    xv,
                    wv,
                    dy.view(),
                    spec,
                    Algorithm::Strided,
                    ws,
                    grads.view_mut(),
                )
                .unwrap();
            });
            println!(
                "{kernel:?} {method:?}, batch {batch}: peak {peak} bytes, bound {limit}, input {operands}"
            );
            assert!(
                peak <= limit,
                "{kernel:?} {method:?}, batch {batch}: {peak} bytes beyond the operands, bound {limit}"
            );
            if batch == 256 {
                assert!(
                    peak < operands,
                    "{kernel:?} {method:?}: {peak} bytes, the input alone is {operands}"
                );
            }
        }
    }
}

/// A geometry whose buffers the system refuses, through every kernel:
/// either a kernel that needs no such buffer computes it, or the call is
/// `OutOfMemory`; never an abort. The workspace serves the next call.
#[test]
fn buffers_the_system_refuses_are_errors() {
    // One pixel padded by 2^17 on each side, a 3x3 kernel dilated by 2^17:
    // a 1x1 output (the middle tap on the pixel), but a padded copy of the
    // sample holds 2^36 elements (256 GiB of f32).
    let p = 1 << 17;
    let spec = Conv2dSpec::new(1, 1, (3, 3))
        .padding((p, p))
        .dilation((p, p));
    let x = Array4::<f32>::from_elem((1, 1, 1, 1), 2.0);
    let w = Array4::<f32>::from_elem((1, 1, 3, 3), 3.0);
    let b = Array1::<f32>::from_elem(1, 1.0);
    let mut refused = Vec::new();
    for kernel in [
        Kernel::Auto,
        Kernel::Gemm,
        Kernel::Direct,
        Kernel::Shifted,
        Kernel::Winograd,
        Kernel::Winograd4x4,
    ] {
        let mut ws = Workspace::new().with_kernel(kernel);
        match conv2d_with_workspace(
            x.view(),
            w.view(),
            Some(b.view()),
            &spec,
            Algorithm::Strided,
            &mut ws,
        ) {
            Ok(y) => {
                assert_eq!(y.shape(), [1, 1, 1, 1]);
                assert_eq!(y[[0, 0, 0, 0]], 7.0, "{kernel:?}");
            }
            Err(ConvError::OutOfMemory { what, .. }) => refused.push((kernel, what)),
            Err(err) => panic!("{kernel:?}: {err}"),
        }
        let small = Conv2dSpec::new(1, 1, (3, 3)).padding((1, 1));
        let y = conv2d_with_workspace(
            x.view(),
            w.view(),
            Some(b.view()),
            &small,
            Algorithm::Strided,
            &mut ws,
        )
        .unwrap();
        assert_eq!(y[[0, 0, 0, 0]], 7.0);
    }
    // The kernels that copy the padded sample ran out deep inside a lane.
    println!("refused: {refused:?}");
    assert!(refused.iter().any(|&(_, what)| what == "workspace"));
}
