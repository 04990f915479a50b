//! # gemmconv
//!
//! Convolution layers on [`ndarray`], forward and backward, in `f32` and
//! `f64`, with PyTorch semantics: [`conv2d`] (`Conv2d`: NCHW input, weight
//! `[c_out, c_in/groups, kh, kw]`, stride, padding symmetric, per side or
//! `'same'`, padding modes, dilation, groups, optional bias, non-square
//! kernels), [`conv_transpose2d`] (`ConvTranspose2d`) and [`conv1d`]
//! (`Conv1d`), each as a function and as a [`Layer`] with an inference path
//! and a backward pass for any subset of the gradients.
//!
//! The convolution is lowered onto matrix products. Three algorithms sit
//! behind one interface ([`Algorithm`]): direct loops (the reference),
//! per-sample im2col, and the default strided lowering, which copies
//! zero-copy window views once per tile (a sample, or a band of its output
//! rows) into a column matrix and runs one GEMM per tile, spread across
//! threads with rayon. With many channels it skips the column matrix: 3x3
//! kernels at stride 1 run Winograd's F(2x2, 3x3), 2.25x fewer
//! multiply-adds ([`Kernel::Winograd`]), other kernels above 1x1 (any
//! stride) GEMMs on overlapping windows of a pixel-major copy of each sample
//! ([`Kernel::Shifted`]). Layers with few output channels run a direct
//! forward pass with register tiles ([`Kernel::Direct`]).
//!
//! ```
//! use gemmconv::{conv2d, conv2d_backward, Algorithm, Conv2dSpec};
//! use gemmconv::ndarray::{Array1, Array4};
//!
//! let spec = Conv2dSpec::new(3, 8, (3, 3)).stride((2, 2)).padding((1, 1));
//! let x = Array4::<f32>::ones((4, 3, 16, 16));
//! let w = Array4::<f32>::from_elem((8, 3, 3, 3), 0.1);
//! let b = Array1::<f32>::zeros(8);
//! let y = conv2d(x.view(), w.view(), Some(b.view()), &spec, Algorithm::Strided)?;
//! assert_eq!(y.shape(), &[4, 8, 8, 8]);
//!
//! let grads = conv2d_backward(x.view(), w.view(), y.view(), &spec, Algorithm::Strided)?;
//! assert_eq!(grads.dx.shape(), x.shape());
//! assert_eq!(grads.dw.shape(), w.shape());
//! assert_eq!(grads.db.len(), 8);
//! # Ok::<(), gemmconv::ConvError>(())
//! ```

#![warn(missing_docs)]

#[cfg(any(
    all(
        feature = "openblas-system",
        any(
            feature = "openblas-static",
            feature = "netlib",
            feature = "intel-mkl-static",
            feature = "intel-mkl-system",
            feature = "blis",
            feature = "accelerate"
        )
    ),
    all(
        feature = "openblas-static",
        any(
            feature = "netlib",
            feature = "intel-mkl-static",
            feature = "intel-mkl-system",
            feature = "blis",
            feature = "accelerate"
        )
    ),
    all(
        feature = "netlib",
        any(
            feature = "intel-mkl-static",
            feature = "intel-mkl-system",
            feature = "blis",
            feature = "accelerate"
        )
    ),
    all(
        feature = "intel-mkl-static",
        any(feature = "intel-mkl-system", feature = "blis", feature = "accelerate")
    ),
    all(
        feature = "intel-mkl-system",
        any(feature = "blis", feature = "accelerate")
    ),
    all(feature = "blis", feature = "accelerate"),
))]
compile_error!(
    "gemmconv: more than one GEMM backend feature is on (openblas-system, openblas-static, \
     netlib, intel-mkl-static, intel-mkl-system, blis, accelerate); enable exactly one, or none \
     for the pure-Rust GEMM"
);

// Links the chosen BLAS library; its symbols are reached through cblas-sys.
#[cfg(feature = "_blas")]
extern crate blas_src;

mod algo;
mod border;
mod conv;
mod conv1d;
mod conv1d_spec;
mod element;
mod error;
mod gemm;
mod gemm_tail;
mod gradients;
mod handoff;
mod huge_pages;
mod lanes;
mod layer;
#[cfg(feature = "serde")]
mod layer_serde;
mod layout;
mod linger;
mod nonfinite;
mod operands;
mod operation;
mod output;
mod plan;
mod spec;
mod subnormals;
#[cfg(any(test, feature = "_internal"))]
#[doc(hidden)]
pub mod suite;
mod thread_workspace;
mod transposed;
mod transposed_spec;
mod workspace;

pub use algo::Algorithm;
pub use algo::strided::choice::{InputGradient, Kernel};
pub use conv::{
    conv2d, conv2d_backward, conv2d_backward_into, conv2d_backward_selected,
    conv2d_backward_selected_into, conv2d_backward_with_workspace, conv2d_into,
    conv2d_with_workspace,
};
pub use conv1d::{
    conv1d, conv1d_backward, conv1d_backward_into, conv1d_backward_selected, conv1d_into,
};
pub use conv1d_spec::Conv1dSpec;
pub use element::Element;
pub use error::{ConvError, Operand};
pub use gemm::gemm_backend;
#[cfg(feature = "_internal")]
#[doc(hidden)]
pub use gemm::inside_gemm;
pub use gradients::{
    GradientSelection, Gradients, GradientsMut, SelectedGradients, SelectedGradientsMut,
};
pub use layer::{Conv1d, Conv2d, ConvTranspose2d, Layer, ParametersMut};
pub use linger::{DEFAULT_LINGER, linger, set_linger};
pub use operation::Operation;
pub use plan::Conv2dPlan;
pub use spec::{Conv2dSpec, Padding, PaddingMode};
pub use transposed::{
    conv_transpose2d, conv_transpose2d_backward, conv_transpose2d_backward_into,
    conv_transpose2d_backward_selected, conv_transpose2d_into,
};
pub use transposed_spec::ConvTranspose2dSpec;
pub use workspace::{DEFAULT_COLUMN_CAP_BYTES, DEFAULT_MIN_LANE_FLOPS, Workspace};

/// The exact `ndarray` this crate is built on.
pub use ndarray;
/// The `rand` whose `Rng` seeds [`Conv2d::new_kaiming`].
pub use rand;

/// The README's examples, run as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
