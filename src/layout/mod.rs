//! How tensors lie in memory for the kernels: NCHW padded copies and the
//! strided lowering's window views (`nchw.rs`), pixel-major copies of a
//! sample (`pixel_major.rs`), and the transposes between the two
//! (`transpose.rs`, its register tile per dtype in `transpose_tile.rs`),
//! and the split of a row into its even and odd columns per dtype
//! (`deinterleave.rs`).
//! Every kernel reads and writes through these; none of them knows which
//! kernel runs.

pub(crate) mod deinterleave;
pub(crate) mod nchw;
pub(crate) mod pixel_major;
pub(crate) mod transpose;
pub(crate) mod transpose_tile;
