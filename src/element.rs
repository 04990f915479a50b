//! The float types a convolution runs on.

use ndarray::NdFloat;

mod sealed {
    use crate::algo::strided::{self, Choice};
    use crate::error::ConvError;
    use crate::gradients::Targets;
    use crate::plan::Plan;
    use crate::spec::Geometry;
    use crate::workspace::Workspace;
    use ndarray::{ArrayView1, ArrayView4, ArrayViewMut4};

    /// The passes and the kernel choice, compiled here once for each float
    /// type. The generic entry points call these rather than the generic
    /// kernels, so a crate that uses the library (each test and bench
    /// crate among them) links the kernels instead of instantiating and
    /// optimising them again.
    #[allow(private_interfaces)]
    pub trait Sealed: Sized {
        /// [`Plan::forward`] for this type.
        #[allow(clippy::type_complexity)]
        fn plan_forward(
            plan: &Plan,
            operands: (
                ArrayView4<'_, Self>,
                ArrayView4<'_, Self>,
                Option<ArrayView1<'_, Self>>,
            ),
            y: ArrayViewMut4<'_, Self>,
            ws: &mut Workspace<Self>,
        ) -> Result<(), ConvError>;

        /// [`Plan::backward`] for this type.
        #[allow(clippy::type_complexity)]
        fn plan_backward(
            plan: &Plan,
            operands: (
                ArrayView4<'_, Self>,
                ArrayView4<'_, Self>,
                ArrayView4<'_, Self>,
            ),
            out: Targets<'_, Self>,
            ws: &mut Workspace<Self>,
        ) -> Result<(), ConvError>;

        /// The strided algorithm's kernel choice for this type.
        fn choose(g: &Geometry, ws: &mut Workspace<Self>) -> Result<Choice, ConvError>;
    }

    macro_rules! compiled_here {
        ($t:ty) => {
            #[allow(private_interfaces)]
            impl Sealed for $t {
                fn plan_forward(
                    plan: &Plan,
                    operands: (
                        ArrayView4<'_, $t>,
                        ArrayView4<'_, $t>,
                        Option<ArrayView1<'_, $t>>,
                    ),
                    y: ArrayViewMut4<'_, $t>,
                    ws: &mut Workspace<$t>,
                ) -> Result<(), ConvError> {
                    ws.fallibly(|ws| plan.run_forward(operands, y, ws))
                }

                fn plan_backward(
                    plan: &Plan,
                    operands: (ArrayView4<'_, $t>, ArrayView4<'_, $t>, ArrayView4<'_, $t>),
                    out: Targets<'_, $t>,
                    ws: &mut Workspace<$t>,
                ) -> Result<(), ConvError> {
                    ws.fallibly(|ws| plan.run_backward(operands, out, ws))
                }

                fn choose(g: &Geometry, ws: &mut Workspace<$t>) -> Result<Choice, ConvError> {
                    ws.fallibly(|ws| strided::choose(g, ws))
                }
            }
        };
    }
    compiled_here!(f32);
    compiled_here!(f64);
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

    /// The side of the square tiles [`transpose_tiles`](Self::transpose_tiles)
    /// moves: one AVX register per row.
    #[doc(hidden)]
    const TRANSPOSE_TILE: usize;

    /// Transposes a `rows x cols` grid of whole `TRANSPOSE_TILE`-square
    /// tiles: `dst[j·dst_stride + i] = src[i·src_stride + j]`. Panics if
    /// a side is not a multiple of the tile or a slice is too short.
    #[doc(hidden)]
    fn transpose_tiles(
        src: &[Self],
        src_stride: usize,
        dst: &mut [Self],
        dst_stride: usize,
        shape: (usize, usize),
    );

    /// Splits `pairs` (`2·n` values) into `even[k] = pairs[2k]` and
    /// `odd[k] = pairs[2k + 1]` (`n` each) where this type has a vector
    /// split for the CPU and `n` fills a vector; returns whether it did.
    /// Panics if the lengths do not match.
    #[doc(hidden)]
    fn split_pairs(pairs: &[Self], even: &mut [Self], odd: &mut [Self]) -> bool;

    /// Weaves `even` and `odd` (`n` each) into `pairs[2k] = even[k]`,
    /// `pairs[2k + 1] = odd[k]` (`2·n`) where this type has a vector weave
    /// for the CPU and `n` fills a vector; returns whether it did. Panics
    /// if the lengths do not match.
    #[doc(hidden)]
    fn weave_pairs(even: &[Self], odd: &[Self], pairs: &mut [Self]) -> bool;

    /// Output rows `rows` of each channel of a depthwise 3x3 stride-2
    /// layer from its input plane (`input`: the channels' planes one after
    /// another, their row width and their padding at the top and left) and
    /// its filter (`filters`: nine taps a channel, and a bias a channel or
    /// none), into `out` (each channel's `rows.len()` rows of `out_w`, one
    /// channel after another), where this type has a vector kernel for the
    /// CPU that splits the input rows in registers; returns whether it
    /// did. Panics if the sizes do not match.
    #[doc(hidden)]
    fn depthwise_stride2_rows(
        input: (&[Self], usize, (usize, usize)),
        filters: (&[Self], Option<&[Self]>),
        rows: std::ops::Range<usize>,
        out_w: usize,
        out: &mut [Self],
    ) -> bool;

    /// Rows `rows` of a depthwise 3x3 stride-2 layer's input gradient `dx`
    /// (the plane, its row width and the input's padding at the top and
    /// left), each written whole, from the error rows `error` (the rows,
    /// their width and the first's index; rows outside count zero) and the
    /// channel's taps, where this type has a vector kernel for the CPU that
    /// weaves the columns in registers and an error row fills a vector;
    /// returns whether it did. Panics if the sizes do not match.
    #[doc(hidden)]
    fn depthwise_stride2_input_gradient(
        error: (&[Self], usize, usize),
        taps: &[Self; 9],
        dx: (&mut [Self], usize, (usize, usize)),
        rows: std::ops::Range<usize>,
    ) -> bool;

    /// The weight gradient of a depthwise 3x3 stride-2 layer's channel
    /// (its nine taps) from its input plane `input` (the plane, its row
    /// width and its padding at the top and left) and the error rows
    /// `error` (the rows, their width and the first's index), where this
    /// type has a vector kernel for the CPU that splits the input rows in
    /// registers and an error row fills a vector. Panics if the sizes do
    /// not match.
    #[doc(hidden)]
    fn depthwise_stride2_weight_gradient(
        input: (&[Self], usize, (usize, usize)),
        error: (&[Self], usize, usize),
    ) -> Option<[Self; 9]>;

    /// Output rows `rows` of each channel of a depthwise 3x3 unit-stride
    /// layer from its input plane (`input`: the channels' planes one after
    /// another, their row width and their padding at the top and left) and
    /// its filter (`filters`: nine taps a channel, and a bias a channel or
    /// none), into `out` (each channel's `rows.len()` rows of `out_w`, one
    /// channel after another), where this type has a masked vector kernel
    /// for the CPU; returns whether it did. Panics if the sizes do not
    /// match.
    #[doc(hidden)]
    fn depthwise_narrow_rows(
        input: (&[Self], usize, (usize, usize)),
        filters: (&[Self], Option<&[Self]>),
        rows: std::ops::Range<usize>,
        out_w: usize,
        out: &mut [Self],
    ) -> bool;

    /// The sums of a block of `vectors` vectors of output channels of a
    /// one-group layer over input channels and every tap, from the padded
    /// input `source` and weights laid out as `[tap, output channel]`,
    /// into pixel-major tiles, where this type has a vector kernel for the
    /// CPU; returns whether it did. `call` is the windows (the taps'
    /// offsets and `[pixels, out_w, start, row_step, col_step, channels,
    /// plane]`) and the start (the biases to start from, else zero, and
    /// whether to start from the output instead): `Windows` and `Start` in
    /// `direct/channel_vectors.rs`. Panics if a slice is shorter than its
    /// description.
    #[doc(hidden)]
    fn channel_vector_block(
        source: &[Self],
        call: crate::algo::strided::direct::channel_vectors::RawCall<'_, Self>,
        weights: (&[Self], usize),
        out: (&mut [Self], usize),
        vectors: usize,
    ) -> bool;

    /// Adds into `out` (`[column, output channel]` rows and their stride,
    /// a column for each channel and tap of the windows) the products of
    /// `vectors` vectors (1 to 4) of output channels of `error` (`[pixel,
    /// output channel]` rows and their stride, a row for each of the
    /// windows' pixels) with each column's input values in `source` at
    /// the windows' pixels, where the CPU has AVX-512 or AVX2 and FMA; returns whether it
    /// did. The windows are raw (`Windows` in `direct/channel_vectors.rs`).
    /// Panics if a slice is shorter than its description.
    #[doc(hidden)]
    fn channel_vector_gradient_block(
        source: &[Self],
        windows: crate::algo::strided::direct::channel_vectors::RawWindows<'_>,
        error: (&[Self], usize),
        out: (&mut [Self], usize),
        vectors: usize,
    ) -> bool;

    /// The weight gradients of a depthwise 3x3 unit-stride layer's
    /// channels from their input planes `input` (the planes, their row
    /// width and their padding at the top and left) and their error planes
    /// `error` (the planes and their row width), added into `taps` (`[tap,
    /// channel]`, nine a channel), where this type has a masked vector
    /// kernel for the CPU; returns whether it ran. Panics if the sizes do
    /// not match.
    #[doc(hidden)]
    fn depthwise_narrow_weight_gradient(
        input: (&[Self], usize, (usize, usize)),
        error: (&[Self], usize),
        taps: &mut [Self],
    ) -> bool;

    /// The stencil gradients' tap sums (`direct/stencil_gradients.rs`:
    /// `taps[i·k + j] += Σ_t error[t] · image[t + i·wp + j]` for a 3x3 or
    /// 5x5 kernel's `taps`, the image and its row length `wp`) in this
    /// type's vector kernel where the CPU has one; returns whether it ran.
    /// Panics if `taps` is not a 3x3 or 5x5 kernel's.
    #[doc(hidden)]
    fn stencil_tap_sums(error: &[Self], image: (&[Self], usize), taps: &mut [Self]) -> bool;

    /// One output plane of the direct kernel's stencils (`direct/stencil.rs`:
    /// the padded planes and their plane length, row length and count; the
    /// weights; the bias; the kernel size and the output's height and
    /// width) in this type's vector kernel where the CPU has one; returns
    /// whether it ran. Panics if a slice is shorter than the shapes read or
    /// write.
    #[doc(hidden)]
    fn stencil_plane(
        planes: (&[Self], [usize; 3]),
        weights: &[Self],
        bias: Self,
        shape: [usize; 3],
        out: &mut [Self],
    ) -> bool;

    /// The output planes (one a channel) of the direct kernel's register tiles
    /// (`direct/tiled.rs`) in this type's vector kernel where the CPU has
    /// one beside the portable tiles (AVX2 without AVX-512,
    /// `direct/tiled_avx2.rs`); returns whether it ran. Panics if a
    /// slice is shorter than the tiles read or write.
    #[doc(hidden)]
    fn register_tile_planes(
        tiles: crate::algo::strided::direct::tiled_avx2::RawTiles<'_, Self>,
        out: &mut [&mut [Self]],
    ) -> bool;

    /// The dot products of each of `rows` with each of `columns` (1 to 4),
    /// all of one length (`gemm_tail.rs`), in the CPU's vector kernel where
    /// it has one; columns past the last sum to zero. Panics if the lengths
    /// differ.
    #[doc(hidden)]
    fn dot_block(
        rows: [&[Self]; crate::gemm_tail::BLOCK],
        columns: &[&[Self]],
    ) -> [[Self; crate::gemm_tail::BLOCK]; crate::gemm_tail::BLOCK];

    /// CBLAS `?gemm` for this type: `C ← alpha·op(A)·op(B) + beta·C`,
    /// row-major. The dtype dispatch of the BLAS backends, in one place.
    ///
    /// # Safety
    /// The pointers, dimensions and leading dimensions must describe valid,
    /// non-overlapping (for `c`) matrices, as CBLAS requires.
    #[cfg(feature = "_blas")]
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn cblas_gemm(
        trans_a: cblas_sys::CBLAS_TRANSPOSE,
        trans_b: cblas_sys::CBLAS_TRANSPOSE,
        m: i32,
        n: i32,
        k: i32,
        a: *const Self,
        lda: i32,
        b: *const Self,
        ldb: i32,
        beta: Self,
        c: *mut Self,
        ldc: i32,
    );
}

/// Implements `Element::cblas_gemm` with the CBLAS routine `$gemm`.
#[cfg(feature = "_blas")]
macro_rules! cblas_gemm_with {
    ($gemm:ident) => {
        unsafe fn cblas_gemm(
            trans_a: cblas_sys::CBLAS_TRANSPOSE,
            trans_b: cblas_sys::CBLAS_TRANSPOSE,
            m: i32,
            n: i32,
            k: i32,
            a: *const Self,
            lda: i32,
            b: *const Self,
            ldb: i32,
            beta: Self,
            c: *mut Self,
            ldc: i32,
        ) {
            // SAFETY: forwarded unchanged; the caller upholds CBLAS's contract.
            unsafe {
                cblas_sys::$gemm(
                    cblas_sys::CBLAS_LAYOUT::CblasRowMajor,
                    trans_a,
                    trans_b,
                    m,
                    n,
                    k,
                    1.0,
                    a,
                    lda,
                    b,
                    ldb,
                    beta,
                    c,
                    ldc,
                )
            }
        }
    };
}

impl Element for f32 {
    const NAME: &'static str = "f32";
    fn from_f64(value: f64) -> Self {
        value as f32
    }
    fn into_f64(self) -> f64 {
        self as f64
    }
    const TRANSPOSE_TILE: usize = 8;
    fn transpose_tiles(
        src: &[Self],
        src_stride: usize,
        dst: &mut [Self],
        dst_stride: usize,
        shape: (usize, usize),
    ) {
        crate::layout::transpose_tile::transpose_tiles_f32(src, src_stride, dst, dst_stride, shape);
    }
    fn split_pairs(pairs: &[Self], even: &mut [Self], odd: &mut [Self]) -> bool {
        crate::layout::deinterleave::split_pairs_f32(pairs, even, odd)
    }
    fn weave_pairs(even: &[Self], odd: &[Self], pairs: &mut [Self]) -> bool {
        crate::layout::deinterleave::weave_pairs_f32(even, odd, pairs)
    }
    fn depthwise_stride2_rows(
        input: (&[Self], usize, (usize, usize)),
        filters: (&[Self], Option<&[Self]>),
        rows: std::ops::Range<usize>,
        out_w: usize,
        out: &mut [Self],
    ) -> bool {
        crate::algo::strided::direct::split_in_registers::rows_f32(input, filters, rows, out_w, out)
    }
    fn depthwise_stride2_input_gradient(
        error: (&[Self], usize, usize),
        taps: &[Self; 9],
        dx: (&mut [Self], usize, (usize, usize)),
        rows: std::ops::Range<usize>,
    ) -> bool {
        crate::algo::strided::direct::split_in_registers::input_gradient_rows_f32(
            error, taps, dx, rows,
        )
    }
    fn depthwise_stride2_weight_gradient(
        input: (&[Self], usize, (usize, usize)),
        error: (&[Self], usize, usize),
    ) -> Option<[Self; 9]> {
        crate::algo::strided::direct::split_in_registers::weight_gradient_f32(input, error)
    }
    fn depthwise_narrow_rows(
        input: (&[Self], usize, (usize, usize)),
        filters: (&[Self], Option<&[Self]>),
        rows: std::ops::Range<usize>,
        out_w: usize,
        out: &mut [Self],
    ) -> bool {
        crate::algo::strided::direct::narrow_planes::rows_f32(input, filters, rows, out_w, out)
    }
    fn channel_vector_block(
        source: &[Self],
        call: crate::algo::strided::direct::channel_vectors::RawCall<'_, Self>,
        weights: (&[Self], usize),
        out: (&mut [Self], usize),
        vectors: usize,
    ) -> bool {
        crate::algo::strided::direct::channel_vectors::block_f32(
            source, call, weights, out, vectors,
        )
    }
    fn channel_vector_gradient_block(
        source: &[Self],
        windows: crate::algo::strided::direct::channel_vectors::RawWindows<'_>,
        error: (&[Self], usize),
        out: (&mut [Self], usize),
        vectors: usize,
    ) -> bool {
        crate::algo::strided::direct::channel_vector_gradients::block_f32(
            source, windows, error, out, vectors,
        )
    }
    fn depthwise_narrow_weight_gradient(
        input: (&[Self], usize, (usize, usize)),
        error: (&[Self], usize),
        taps: &mut [Self],
    ) -> bool {
        crate::algo::strided::direct::narrow_planes::weight_gradient_f32(input, error, taps)
    }
    fn dot_block(
        rows: [&[Self]; crate::gemm_tail::BLOCK],
        columns: &[&[Self]],
    ) -> [[Self; crate::gemm_tail::BLOCK]; crate::gemm_tail::BLOCK] {
        crate::gemm_tail::dot_block_f32(rows, columns)
    }
    fn stencil_plane(
        planes: (&[Self], [usize; 3]),
        weights: &[Self],
        bias: Self,
        shape: [usize; 3],
        out: &mut [Self],
    ) -> bool {
        crate::algo::strided::direct::stencil::plane_f32(planes, weights, bias, shape, out)
    }
    fn stencil_tap_sums(error: &[Self], image: (&[Self], usize), taps: &mut [Self]) -> bool {
        crate::algo::strided::direct::stencil_gradients::tap_sums_f32(error, image, taps)
    }
    fn register_tile_planes(
        tiles: crate::algo::strided::direct::tiled_avx2::RawTiles<'_, Self>,
        out: &mut [&mut [Self]],
    ) -> bool {
        crate::algo::strided::direct::tiled_avx2::planes_f32(tiles, out)
    }
    #[cfg(feature = "_blas")]
    cblas_gemm_with!(cblas_sgemm);
}

impl Element for f64 {
    const NAME: &'static str = "f64";
    fn from_f64(value: f64) -> Self {
        value
    }
    fn into_f64(self) -> f64 {
        self
    }
    const TRANSPOSE_TILE: usize = 4;
    fn transpose_tiles(
        src: &[Self],
        src_stride: usize,
        dst: &mut [Self],
        dst_stride: usize,
        shape: (usize, usize),
    ) {
        crate::layout::transpose_tile::transpose_tiles_f64(src, src_stride, dst, dst_stride, shape);
    }
    fn split_pairs(pairs: &[Self], even: &mut [Self], odd: &mut [Self]) -> bool {
        crate::layout::deinterleave::split_pairs_f64(pairs, even, odd)
    }
    fn weave_pairs(even: &[Self], odd: &[Self], pairs: &mut [Self]) -> bool {
        crate::layout::deinterleave::weave_pairs_f64(even, odd, pairs)
    }
    fn depthwise_stride2_rows(
        input: (&[Self], usize, (usize, usize)),
        filters: (&[Self], Option<&[Self]>),
        rows: std::ops::Range<usize>,
        out_w: usize,
        out: &mut [Self],
    ) -> bool {
        crate::algo::strided::direct::split_in_registers::rows_f64(input, filters, rows, out_w, out)
    }
    fn depthwise_stride2_input_gradient(
        error: (&[Self], usize, usize),
        taps: &[Self; 9],
        dx: (&mut [Self], usize, (usize, usize)),
        rows: std::ops::Range<usize>,
    ) -> bool {
        crate::algo::strided::direct::split_in_registers::input_gradient_rows_f64(
            error, taps, dx, rows,
        )
    }
    fn depthwise_stride2_weight_gradient(
        input: (&[Self], usize, (usize, usize)),
        error: (&[Self], usize, usize),
    ) -> Option<[Self; 9]> {
        crate::algo::strided::direct::split_in_registers::weight_gradient_f64(input, error)
    }
    fn depthwise_narrow_rows(
        input: (&[Self], usize, (usize, usize)),
        filters: (&[Self], Option<&[Self]>),
        rows: std::ops::Range<usize>,
        out_w: usize,
        out: &mut [Self],
    ) -> bool {
        crate::algo::strided::direct::narrow_planes::rows_f64(input, filters, rows, out_w, out)
    }
    fn channel_vector_block(
        source: &[Self],
        call: crate::algo::strided::direct::channel_vectors::RawCall<'_, Self>,
        weights: (&[Self], usize),
        out: (&mut [Self], usize),
        vectors: usize,
    ) -> bool {
        crate::algo::strided::direct::channel_vectors::block_f64(
            source, call, weights, out, vectors,
        )
    }
    fn channel_vector_gradient_block(
        source: &[Self],
        windows: crate::algo::strided::direct::channel_vectors::RawWindows<'_>,
        error: (&[Self], usize),
        out: (&mut [Self], usize),
        vectors: usize,
    ) -> bool {
        crate::algo::strided::direct::channel_vector_gradients::block_f64(
            source, windows, error, out, vectors,
        )
    }
    fn depthwise_narrow_weight_gradient(
        input: (&[Self], usize, (usize, usize)),
        error: (&[Self], usize),
        taps: &mut [Self],
    ) -> bool {
        crate::algo::strided::direct::narrow_planes::weight_gradient_f64(input, error, taps)
    }
    fn dot_block(
        rows: [&[Self]; crate::gemm_tail::BLOCK],
        columns: &[&[Self]],
    ) -> [[Self; crate::gemm_tail::BLOCK]; crate::gemm_tail::BLOCK] {
        crate::gemm_tail::dot_block_f64(rows, columns)
    }
    fn stencil_plane(
        planes: (&[Self], [usize; 3]),
        weights: &[Self],
        bias: Self,
        shape: [usize; 3],
        out: &mut [Self],
    ) -> bool {
        crate::algo::strided::direct::stencil::plane_f64(planes, weights, bias, shape, out)
    }
    fn stencil_tap_sums(error: &[Self], image: (&[Self], usize), taps: &mut [Self]) -> bool {
        crate::algo::strided::direct::stencil_gradients::tap_sums_f64(error, image, taps)
    }
    fn register_tile_planes(
        tiles: crate::algo::strided::direct::tiled_avx2::RawTiles<'_, Self>,
        out: &mut [&mut [Self]],
    ) -> bool {
        crate::algo::strided::direct::tiled_avx2::planes_f64(tiles, out)
    }
    #[cfg(feature = "_blas")]
    cblas_gemm_with!(cblas_dgemm);
}
