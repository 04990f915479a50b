//! `Algorithm::Strided`, the fast path: the kernel table.
//!
//! Every kernel computes the whole convolution, forward or backward, under
//! the lane scheduler (`lanes.rs`); this file alone decides which one runs
//! for a geometry and pass, and how the column-matrix kernel computes the
//! input gradient. The kernels never look at each other or at this table.
//!
//! | kernel | file | can compute | `Kernel::Auto` takes it for |
//! |---|---|---|---|
//! | direct loops | `direct/mod.rs` | everything | small groups, forward and backward |
//! | direct across channels | `direct/depthwise.rs` | depthwise | depthwise on short or strided rows |
//! | direct deinterleaved planes | `direct/deinterleaved.rs`, `direct/deinterleaved_gradients.rs` | depthwise 3x3, stride 2, output rows of 16 pixels or more | depthwise layers it computes, forward and backward |
//! | direct stencil gradients | `direct/stencil_gradients.rs` | backward, one input channel a group, 3x3 and 5x5, unit stride | backward of the layers it computes with at most 8 output channels a group |
//! | direct register tiles | `direct/tiled.rs`, `direct/stencil.rs` | forward, any column stride (rows dealt into its phases) | forward, few output channels (without AVX-512: where the shifted windows do not suit) |
//! | direct channel vectors | `direct/channel_vectors.rs`, `direct/channel_vector_gradients.rs` | more than 16 output channels a group, group by group, AVX-512 or AVX2 with FMA; the backward pass also with groups of 8 to 16 output channels (the input gradient: by error lowering at unit stride, in the phases of the stride on the register tiles for groups of up to 16 input channels, else on shifted windows or by col2im) | kernels above 1x1 where Winograd does not suit, 512 output pixels a call or more, forward and backward; grouped or 8 to 16 output channels, backward |
//! | Winograd F(2x2, 3x3) | `winograd.rs` | 3x3, stride 1, one group | many channels, 8 output pixels a channel |
//! | Winograd F(4x4, 3x3) | `winograd.rs`, `winograd/maps.rs` | 3x3, stride 1, one group | asked for, or timed by `Kernel::Measure` on layers of at most 128 channels |
//! | shifted windows | `shifted.rs` | one group | other kernels above 1x1, 16 channels or more, a pixel a channel |
//! | column matrix | `column.rs` | everything | the rest |
//!
//! The thresholds are the measurements of BENCHMARKS.md, "Kernel choice".

pub(crate) mod choice;
mod column;
pub(crate) mod direct;
mod measure;
mod phases;
mod shifted;
pub(crate) mod simd;
mod winograd;

use crate::element::Element;
use crate::gradients::Targets;
#[cfg(test)]
use crate::lanes::Work;
use crate::operands::{Backward, Forward};
use crate::spec::Geometry;
use crate::subnormals::FlushGuard;
#[cfg(test)]
use crate::workspace::DEFAULT_COLUMN_CAP_BYTES;
use crate::workspace::Workspace;
use choice::{InputGradient, Kernel};
use ndarray::ArrayViewMut4;
use winograd::Filter;

/// The direct loops suit layers with few multiply-adds per output pixel
/// (`c_in/groups · kh · kw`) and few output channels per group, such as
/// depthwise convolutions: a column matrix would be copied for little reuse.
fn direct_suits(g: &Geometry) -> bool {
    g.in_channels_per_group() * g.kh * g.kw <= 16 && g.out_channels_per_group() <= 4
}

/// The direct kernel's stencil gradients take the backward pass of the
/// layers of one input channel a group they compute (as an `f32` pass runs
/// them; an `f64` pass computes every plane an `f32` one does), 5x5
/// kernels included, which have more taps than [`direct_suits`] allows,
/// with at most [`STENCIL_GRADIENT_MAX_ERROR_CHANNELS`] output channels a
/// group: there the column matrix runs GEMMs only as deep as a group's few
/// output channels (BENCHMARKS.md, "Depthwise stencils" and "Gradients of
/// one input channel"); more output channels a group deepen its GEMMs
/// towards their peak.
fn stencil_gradients_suit(g: &Geometry) -> bool {
    stencil_gradients_take::<f32>(g)
}

/// Whether the direct kernel's backward pass runs on the stencil
/// gradients: layers they compute in `T` with at most
/// [`STENCIL_GRADIENT_MAX_ERROR_CHANNELS`] output channels a group (more
/// go to the direct kernel's other gradients, as [`backward_kernel`]
/// chooses them).
fn stencil_gradients_take<T: Element>(g: &Geometry) -> bool {
    direct::stencil_gradients::applies::<T>(g)
        && g.out_channels_per_group() <= STENCIL_GRADIENT_MAX_ERROR_CHANNELS
}

/// Depthwise layers (one input and one output channel a group) that the
/// direct kernel computes across channels (`direct/depthwise.rs`): where
/// the image rows are too short for the register tiles (under 16 output
/// pixels, a vector of `f32`) or strided (the tiles need unit column
/// stride). On wide rows at stride 1 the tiles are up to 2x faster, the
/// transposes in and out of the channel-major layout costing more than the
/// arithmetic. Rows a stencil tile fits (8 to 15 `f32` with AVX2) take the
/// stencils instead, about 2x faster: the forward pass of wide layers
/// within `direct/depthwise.rs`, the backward pass on the stencil
/// gradients, which [`backward_with`] asks first (BENCHMARKS.md, "Stencil
/// gradients on narrow planes").
fn depthwise(g: &Geometry) -> bool {
    g.in_channels_per_group() == 1 && g.out_channels_per_group() == 1 && (g.sw > 1 || g.out_w < 16)
}

/// The direct register tiles read a contiguous run of an input row per
/// tap: of the padded row at unit column stride, of the row dealt into the
/// phases of the column stride at larger strides; kernels up to
/// [`direct::tiled::MAX_KERNEL_WIDTH`] wide.
fn direct_tiles_apply(g: &Geometry) -> bool {
    g.kw <= direct::tiled::MAX_KERNEL_WIDTH
}

/// The direct register tiles beat the column matrix on the forward pass of
/// kernels above 1x1 (a 1x1 kernel's column matrix is often the input
/// itself) with at most 16 output channels a group, at any column stride
/// (BENCHMARKS.md, "Kernel choice" and "Dealt register tiles").
fn direct_tiles_suit(g: &Geometry) -> bool {
    direct_tiles_apply(g) && g.kh * g.kw > 1 && g.out_channels_per_group() <= 16
}

/// The direct kernel's forward pass runs its tiles of output channels in
/// vectors, group by group, on layers with more output channels a group
/// than the register tiles suit, where the CPU runs them.
fn channel_vectors_apply(g: &Geometry) -> bool {
    g.out_channels_per_group() > 16 && direct::channel_vectors::applies(g)
}

/// The direct kernel's backward pass runs its weight gradient on tiles of
/// output channels in vectors on layers with half a vector of `f32` output
/// channels a group or more, any groups, where the CPU runs them: groups
/// of 8 to 15 leave part of each tile's lanes empty and still beat the
/// column matrix, whose GEMMs a group are only as deep as those channels;
/// at 4 a group the column matrix is faster (BENCHMARKS.md,
/// "Channel-vector weight gradient on half vectors").
fn channel_vector_gradients_apply(g: &Geometry) -> bool {
    g.out_channels_per_group() >= 8 && direct::channel_vector_gradients::applies(g)
}

/// The least output pixels (over the batch) a call of the channel vectors
/// has, to spread the cost of laying out the weights, once a call, over:
/// on ResNet-50's 3x3 layers at batch 1 they lose to the column matrix on
/// 14x14 and 7x7 images (196 and 49 pixels) and are level on 28x28 (784)
/// (BENCHMARKS.md, "Channel vectors").
const CHANNEL_VECTOR_PIXELS: usize = 512;

/// The direct kernel's tiles of output channels in vectors beat the GEMM
/// kernels on both passes of kernels above 1x1 (a 1x1 kernel's column
/// matrix is the input itself) wherever Winograd does not suit, on calls
/// with [`CHANNEL_VECTOR_PIXELS`] output pixels or more, grouped layers
/// group by group (BENCHMARKS.md, "Channel vectors", "Channel-vector
/// weight gradient" and "Grouped channel vectors").
fn channel_vectors_suit(g: &Geometry) -> bool {
    channel_vectors_worth(g) && !winograd_suits(g)
}

/// The channel vectors' weight gradient suits the backward pass of
/// grouped layers, and of layers of one group with 8 to 16 output
/// channels, on the same terms as [`channel_vectors_suit`] (each group is
/// a layer of one group): half a vector of `f32` output channels a group
/// or more, a kernel above 1x1, [`CHANNEL_VECTOR_PIXELS`] output pixels a
/// call or more. The column matrix's weight gradient runs a GEMM a group,
/// as deep as the group's output channels, and neither Winograd nor the
/// shifted windows take layers of under 32 channels (BENCHMARKS.md,
/// "Channel-vector weight gradient", "Channel-vector weight gradient on
/// half vectors", "Channel-vector gradients of narrow layers").
fn narrow_channel_vectors_suit(g: &Geometry) -> bool {
    (g.groups > 1 || g.out_channels_per_group() <= 16)
        && channel_vector_gradients_apply(g)
        && g.kh * g.kw > 1
        && g.batch * g.out_h * g.out_w >= CHANNEL_VECTOR_PIXELS
}

/// The channel vectors apply to `g`, a kernel above 1x1, on a call of
/// [`CHANNEL_VECTOR_PIXELS`] output pixels or more.
fn channel_vectors_worth(g: &Geometry) -> bool {
    channel_vectors_apply(g) && large_enough_for_channel_vectors(g)
}

/// A kernel above 1x1, on a call of [`CHANNEL_VECTOR_PIXELS`] output
/// pixels or more.
fn large_enough_for_channel_vectors(g: &Geometry) -> bool {
    g.kh * g.kw > 1 && g.batch * g.out_h * g.out_w >= CHANNEL_VECTOR_PIXELS
}

/// The geometry of the column matrix's input gradient by error lowering
/// as a forward pass, where it runs on the direct kernel's channel vectors
/// instead of a column matrix: at unit stride, where the channel vectors
/// would be worth running on that forward pass (group by group), and also
/// where it has exactly one vector of `f32` output channels a group (a
/// layer of 16 input channels a group, such as k7-56x16-7x7-32): the
/// register tiles take such a forward pass, but the error lowering's runs
/// on the channel vectors faster than col2im, whose GEMM is only as deep
/// as the layer's output channels (BENCHMARKS.md, "Input gradient on one
/// vector of channels").
pub(crate) fn error_lowering_on_channel_vectors(g: &Geometry) -> Option<Geometry> {
    let flipped = g.input_gradient_as_forward()?;
    let one_vector = flipped.out_channels_per_group() == 16
        && direct::channel_vectors::applies(&flipped)
        && large_enough_for_channel_vectors(&flipped);
    (one_vector || channel_vectors_worth(&flipped)).then_some(flipped)
}

/// The shifted kernel computes any geometry with one group.
fn shifted_applies(g: &Geometry) -> bool {
    g.groups == 1
}

/// The shifted kernel beats the column matrix on kernels above 1x1 (a 1x1
/// kernel's column matrix is the input itself) with at least
/// [`SHIFTED_CHANNELS`] input and output channels, so that each GEMM has a
/// sizeable inner dimension, and at least as many output pixels as output
/// channels: its GEMMs have a row per output pixel of a band, and on small
/// images with many channels they are too short to pay for packing the
/// weights (up to 10x slower than the column matrix on ResNet-50's 7x7 and
/// 14x14 layers); at any stride.
fn shifted_suits(g: &Geometry) -> bool {
    shifted_applies(g)
        && g.kh * g.kw > 1
        && g.in_channels >= SHIFTED_CHANNELS
        && g.out_channels >= SHIFTED_CHANNELS
        && g.out_h * g.out_w >= g.out_channels
}

/// The fewest input and output channels on which the shifted windows
/// suit: at 16 they run both passes faster than the column matrix on the
/// AMD EPYC with AVX-512 (0.90x forward, 0.78x backward) and on the one
/// without it at batch 8 (0.56x–0.85x forward, 0.64x–0.84x backward;
/// backward level at batch 1); at 8 the column matrix or the register
/// tiles lead forward (BENCHMARKS.md, "Kernel choice" and "Kernel choice
/// without AVX-512").
const SHIFTED_CHANNELS: usize = 16;

/// Where the shifted windows take the forward pass from the register
/// tiles: wherever they suit, on CPUs without AVX-512, whose 16 vector
/// registers hold tiles a quarter of the AVX-512 ones (`direct/tiled.rs`);
/// there the tiles ran 1.1x–2.9x the shifted windows' time on layers of 16
/// channels or more, `f32` and `f64`, at batch 1 and 8 (BENCHMARKS.md,
/// "Kernel choice without AVX-512"). With AVX-512 the tiles stay.
fn shifted_before_the_tiles(g: &Geometry) -> bool {
    !crate::gemm_tail::avx512() && shifted_suits(g)
}

/// Winograd's F(2x2, 3x3) computes 3x3 kernels at stride 1 with one group,
/// any padding and dilation.
fn winograd_applies(g: &Geometry) -> bool {
    (g.kh, g.kw, g.sh, g.sw, g.groups) == (3, 3, 1, 1, 1)
}

/// Winograd beats the other kernels with at least 32 input and output
/// channels (its transforms cost per tile and channel what its GEMMs save
/// per channel pair), on outputs at least `8·d` pixels high and wide for a
/// dilation `d` (tiles come in blocks of `2·d` rows and columns, and the
/// pixels of the last block past the output are computed and dropped,
/// which stays under a quarter of the work there), on calls of
/// [`WINOGRAD_PIXELS_PER_CHANNEL`] output pixels an output channel or more.
fn winograd_suits(g: &Geometry) -> bool {
    winograd_applies(g)
        && g.in_channels >= 32
        && g.out_channels >= 32
        && g.out_h >= 8 * g.dh
        && g.out_w >= 8 * g.dw
        && g.batch * g.out_h * g.out_w >= WINOGRAD_PIXELS_PER_CHANNEL * g.out_channels
}

/// The fewest output pixels a call (over the batch) an output channel on
/// which Winograd runs: its weight transform costs once a call, as many
/// values as the layer's weights times its points, and its GEMMs a band
/// have a row per tile, so it needs pixels to spread them over, more on
/// layers of more channels. On ResNet-50's 14x14 layer of 256 channels
/// it takes 1.7x the column matrix's time at batch 1 (0.77 pixels a
/// channel), is level forward and ahead backward at batch 2 (1.5) and
/// ahead on both passes from batch 4. It leads the channel vectors on the
/// layers of 64 and 128 channels measured, batch 1 included, but for the
/// 28x28 layer's forward pass at batch 1, which they ran up to 8% faster
/// in one stretch of the machine (BENCHMARKS.md, "Winograd on small
/// calls").
const WINOGRAD_PIXELS_PER_CHANNEL: usize = 1;

/// The most input or output channels on which `Kernel::Measure` times
/// Winograd's F(4x4, 3x3): its `f32` results' relative error grows with
/// the channels summed, to about 1e-5 at 128 (half the tests' tolerance)
/// and 2e-5 at 512, against F(2x2, 3x3)'s 1e-6 or less (BENCHMARKS.md,
/// "Winograd F(4x4, 3x3)").
const WINOGRAD_4X4_CHANNELS: usize = 128;

/// Whether F(4x4, 3x3)'s results on `g` are as accurate as
/// [`WINOGRAD_4X4_CHANNELS`] asks.
fn winograd_4x4_accurate(g: &Geometry) -> bool {
    g.in_channels.max(g.out_channels) <= WINOGRAD_4X4_CHANNELS
}

/// The kernel that runs the backward pass: `Kernel::Auto` resolved, and a
/// kernel that cannot compute the geometry replaced by the column matrix.
/// An input-gradient method other than `Auto` keeps `Auto` on the column
/// matrix, where the method applies, unless the direct loops suit.
fn backward_kernel(kernel: Kernel, method: InputGradient, g: &Geometry) -> Kernel {
    let any_kernel = method == InputGradient::Auto;
    match kernel {
        Kernel::Auto if direct_suits(g) || stencil_gradients_suit(g) => Kernel::Direct,
        Kernel::Auto
            if any_kernel && channel_vectors_suit(g) && channel_vector_gradients_apply(g) =>
        {
            Kernel::Direct
        }
        Kernel::Auto if any_kernel && narrow_channel_vectors_suit(g) => Kernel::Direct,
        Kernel::Auto if any_kernel && winograd_suits(g) => Kernel::Winograd,
        Kernel::Auto if any_kernel && shifted_suits(g) => Kernel::Shifted,
        Kernel::Shifted if shifted_applies(g) => Kernel::Shifted,
        Kernel::Winograd if winograd_applies(g) => Kernel::Winograd,
        Kernel::Winograd4x4 if winograd_applies(g) => Kernel::Winograd4x4,
        Kernel::Direct => Kernel::Direct,
        _ => Kernel::Gemm,
    }
}

/// The kernel that runs the forward pass: as [`backward_kernel`], except
/// that `Kernel::Auto` also takes the direct register tiles where they
/// suit (the backward pass has no such tiles), or in their place the
/// shifted windows where [`shifted_before_the_tiles`], and the channel
/// vectors whatever the input-gradient method.
fn forward_kernel(kernel: Kernel, method: InputGradient, g: &Geometry) -> Kernel {
    match kernel {
        Kernel::Auto if channel_vectors_suit(g) => Kernel::Direct,
        Kernel::Auto if direct_tiles_suit(g) && shifted_before_the_tiles(g) => Kernel::Shifted,
        Kernel::Auto if direct_tiles_suit(g) => Kernel::Direct,
        _ => backward_kernel(kernel, method, g),
    }
}

/// Whether the column-matrix kernel computes the input gradient by col2im
/// rather than by lowering the error: col2im unless asked otherwise,
/// faster where the lowering's GEMM grows with the stride squared and
/// level elsewhere (BENCHMARKS.md, "Input gradient method"), except where
/// the error lowering runs on the direct register tiles
/// ([`error_lowering_on_tiles`]) or, at strides above 1, in the phases of
/// the stride ([`phases::applies`]).
fn by_col2im(method: InputGradient, g: &Geometry) -> bool {
    match method {
        InputGradient::Auto => error_lowering_on_tiles(g).is_none() && !phases::applies(g),
        InputGradient::Col2im => true,
        InputGradient::ErrorLowering => false,
    }
}

/// The geometry of the column matrix's input gradient by error lowering
/// as a forward pass, where it runs on the direct register tiles instead of
/// a column matrix: grouped layers at unit stride whose groups have at most
/// 16 input channels (the tiles' output channels there), and the layers of
/// [`one_channel_gradient_on_stencils`]. Col2im multiplies each group's
/// error by its weights in a GEMM only as deep as the group's output
/// channels, then scatters every column back; the tiles sum every tap in
/// registers (BENCHMARKS.md, "Grouped input gradients").
pub(crate) fn error_lowering_on_tiles(g: &Geometry) -> Option<Geometry> {
    let flipped = g.input_gradient_as_forward()?;
    let grouped = g.groups > 1 && direct_tiles_suit(&flipped);
    (grouped || one_channel_gradient_on_stencils(g)).then_some(flipped)
}

/// Output channels a group up to which the stencils beat col2im on the
/// input gradient of one input channel, and the stencil gradients the
/// column matrix on the whole backward pass of one input channel a group
/// (BENCHMARKS.md, "Input gradients of one input channel" and "Gradients
/// of one input channel").
const STENCIL_GRADIENT_MAX_ERROR_CHANNELS: usize = 8;

/// Whether the input gradient of an ungrouped layer of one input channel
/// (the first layer of an image network) runs as the error convolved on the
/// stencils: 5x5 kernels of at most
/// [`STENCIL_GRADIENT_MAX_ERROR_CHANNELS`] output channels that the
/// stencil gradients compute in either dtype (unit stride and dilation,
/// input planes of at least a stencil tile). There
/// col2im's GEMM is only as deep as the few channels and its scatter adds
/// 25 columns a pixel; 3x3 kernels scatter less and run level, more
/// channels deepen the GEMM, and other kernels leave the stencils for the
/// portable tiles, which lose (BENCHMARKS.md, "Input gradients of one
/// input channel").
fn one_channel_gradient_on_stencils(g: &Geometry) -> bool {
    g.groups == 1
        && g.out_channels <= STENCIL_GRADIENT_MAX_ERROR_CHANNELS
        && g.kh == 5
        && direct::stencil_gradients::applies::<f32>(g)
}

/// What the forward pass of `kernel` divides among lanes (the kernel
/// builds the same [`Work`] when it runs; an `f32` pass under the default
/// column cap).
#[cfg(test)]
fn forward_work(kernel: Kernel, g: &Geometry, threads: usize) -> Work {
    match kernel {
        Kernel::Winograd => Work::forward(g, winograd::row_granule(g, Filter::F2x2)),
        Kernel::Winograd4x4 => Work::forward(g, winograd::row_granule(g, Filter::F4x4)),
        Kernel::Gemm
            if column::forward_in_blocks_of_the_batch::<f32>(g, DEFAULT_COLUMN_CAP_BYTES) =>
        {
            Work::forward_by_channels_of_the_batch(g, column::CHANNEL_GRANULE)
        }
        Kernel::Gemm if column::splits_channels::<f32>(g, DEFAULT_COLUMN_CAP_BYTES) => {
            Work::forward_by_channels(g, column::CHANNEL_GRANULE)
        }
        Kernel::Direct if depthwise(g) => direct::depthwise::forward_work(g, threads),
        _ => Work::forward(g, 1),
    }
}

/// What the backward pass of `kernel` divides among lanes, as
/// [`forward_work`] (the column matrix's pass by col2im): one pass, or
/// the column matrix's two passes in blocks of channels.
#[cfg(test)]
fn backward_works(kernel: Kernel, g: &Geometry) -> Vec<Work> {
    match kernel {
        Kernel::Winograd => vec![winograd::backward_work(g, Filter::F2x2)],
        Kernel::Winograd4x4 => vec![winograd::backward_work(g, Filter::F4x4)],
        Kernel::Shifted => vec![Work::backward(g, shifted::backward_row_granule(g))],
        Kernel::Gemm if column::splits_channels_backward::<f32>(g, DEFAULT_COLUMN_CAP_BYTES) => {
            column::backward_channel_works(g).to_vec()
        }
        // The weight gradient's pass, then the input gradient's on the
        // tiles, in the phases of the stride above unit stride.
        Kernel::Gemm if phases::applies(g) => {
            vec![Work::backward(g, 1), Work::input_gradient(g, g.sh)]
        }
        Kernel::Gemm if error_lowering_on_tiles(g).is_some() => {
            let flipped = error_lowering_on_tiles(g).expect("matched above");
            vec![
                Work::backward(g, 1),
                Work::forward(&flipped, 1).of_backward(),
            ]
        }
        // The weight gradient's pass, then the input gradient's: by error
        // lowering on the register tiles or channel vectors, else on
        // shifted windows, else by col2im.
        Kernel::Direct if channel_vector_gradients_apply(g) => {
            let flipped = error_lowering_on_tiles(g).or(error_lowering_on_channel_vectors(g));
            let input_gradient = match flipped {
                Some(flipped) => vec![Work::forward(&flipped, 1).of_backward()],
                None if phases::applies(g) => vec![Work::input_gradient(g, g.sh)],
                None if shifted_suits(g) => {
                    vec![Work::backward(g, shifted::backward_row_granule(g))]
                }
                None if column::splits_channels_backward::<f32>(g, DEFAULT_COLUMN_CAP_BYTES) => {
                    column::backward_channel_works(g)[1..].to_vec()
                }
                None => vec![Work::backward(g, 1)],
            };
            [vec![Work::weight_gradient(g, 1)], input_gradient].concat()
        }
        // As an `f32` pass runs it (the stencils' tiles differ by dtype);
        // the stencil gradients and the deinterleaved planes' gradients cut
        // one sample as the pixel-major kernel does.
        Kernel::Direct
            if stencil_gradients_take::<f32>(g)
                && direct::depthwise::splits_channels_backward(g) =>
        {
            vec![direct::stencil_gradients::channel_work(g)]
        }
        Kernel::Direct
            if depthwise(g)
                && !direct::stencil_gradients::applies::<f32>(g)
                && direct::depthwise::splits_channels_backward(g) =>
        {
            vec![direct::depthwise::backward_channel_work(g)]
        }
        _ => vec![Work::backward(g, 1)],
    }
}

/// What the strided algorithm runs on one geometry: each pass's kernel,
/// and how the column matrix computes the input gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Choice {
    pub forward: Kernel,
    pub backward: Kernel,
    pub by_col2im: bool,
}

impl Choice {
    /// The column matrix both ways, the input gradient by col2im: the
    /// kernels whose products are the naive sum's, and products with
    /// padding zeros (`nonfinite.rs`).
    pub(crate) const EXACT: Choice = Choice {
        forward: Kernel::Gemm,
        backward: Kernel::Gemm,
        by_col2im: true,
    };

    /// Whether the forward pass of this choice adds pixels of the input
    /// together before it multiplies them (Winograd's transforms).
    pub(crate) fn forward_transforms(&self, g: &Geometry) -> bool {
        matches!(self.forward, Kernel::Winograd | Kernel::Winograd4x4) && winograd_applies(g)
    }

    /// Whether the backward pass of this choice adds pixels of the error
    /// together before it multiplies them (Winograd's transforms).
    pub(crate) fn backward_transforms(&self, g: &Geometry) -> bool {
        matches!(self.backward, Kernel::Winograd | Kernel::Winograd4x4) && winograd_applies(g)
    }

    /// The kernel table's choice for the options `kernel` and `method`
    /// (`Kernel::Measure` read as `Auto`).
    pub(crate) fn estimate(kernel: Kernel, method: InputGradient, g: &Geometry) -> Self {
        let kernel = match kernel {
            Kernel::Measure => Kernel::Auto,
            kernel => kernel,
        };
        Choice {
            forward: forward_kernel(kernel, method, g),
            backward: backward_kernel(kernel, method, g),
            by_col2im: by_col2im(method, g),
        }
    }
}

/// The choice for a geometry under a workspace's options: the kernel
/// table's, or with `Kernel::Measure` the fastest candidates timed on this
/// machine (once per geometry, element type, thread count and options in
/// a process).
pub(crate) fn choose<T: Element>(g: &Geometry, ws: &mut Workspace<T>) -> Choice {
    match ws.kernel() {
        Kernel::Measure if ws.input_gradient() == InputGradient::Auto => measure::choice(g, ws),
        kernel => Choice::estimate(kernel, ws.input_gradient(), g),
    }
}

/// The forward pass with the kernel `choice` names; writes every element
/// of `y`.
pub(crate) fn forward_with<T: Element>(
    choice: Choice,
    op: Forward<'_, T>,
    y: ArrayViewMut4<'_, T>,
    ws: &mut Workspace<T>,
) {
    // The calling thread's own work (weight layouts, sums of partials);
    // each lane sets its own.
    let _flush = FlushGuard::new(ws.flush_subnormals());
    match choice.forward {
        Kernel::Direct if depthwise(op.g) => direct::depthwise::forward(op, y, ws),
        Kernel::Direct if channel_vectors_apply(op.g) => {
            direct::channel_vectors::forward(op, y, ws)
        }
        Kernel::Direct if direct_tiles_apply(op.g) => direct::tiled::forward(op, y, ws),
        Kernel::Direct => direct::forward(op, y, ws),
        Kernel::Shifted if shifted_applies(op.g) => shifted::forward(op, y, ws),
        Kernel::Winograd if winograd_applies(op.g) => winograd::forward(op, y, ws, Filter::F2x2),
        Kernel::Winograd4x4 if winograd_applies(op.g) => winograd::forward(op, y, ws, Filter::F4x4),
        _ => column::forward(op, y, ws),
    }
}

/// The backward pass with the kernel and method `choice` names; overwrites
/// the gradients present.
pub(crate) fn backward_with<T: Element>(
    choice: Choice,
    op: Backward<'_, T>,
    grads: Targets<'_, T>,
    ws: &mut Workspace<T>,
) {
    let _flush = FlushGuard::new(ws.flush_subnormals());
    match choice.backward {
        Kernel::Direct if stencil_gradients_take::<T>(op.g) => {
            direct::stencil_gradients::backward(op, grads, ws)
        }
        Kernel::Direct if depthwise(op.g) => direct::depthwise::backward(op, grads, ws),
        Kernel::Direct if channel_vector_gradients_apply(op.g) => {
            channel_vector_backward(op, grads, ws)
        }
        Kernel::Direct => direct::backward(op, grads, ws),
        Kernel::Shifted if shifted_applies(op.g) => shifted::backward(op, grads, ws),
        Kernel::Winograd if winograd_applies(op.g) => {
            winograd::backward(op, grads, ws, Filter::F2x2)
        }
        Kernel::Winograd4x4 if winograd_applies(op.g) => {
            winograd::backward(op, grads, ws, Filter::F4x4)
        }
        _ if choice.by_col2im => column::backward_by_col2im(op, grads, ws),
        _ => column::backward_by_error_lowering(op, grads, ws),
    }
}

/// The backward pass on the direct kernel's channel vectors: the weight
/// and bias gradients on their tiles, then the input gradient as the
/// error convolved with the turned, channel-swapped weights on the
/// direct register tiles or channel vectors where that forward pass is
/// worth them ([`error_lowering_on_tiles`],
/// [`error_lowering_on_channel_vectors`]: unit stride; [`phases::applies`]:
/// in the phases of a larger stride, on the tiles), else on the
/// shifted kernel where it suits, else by the column matrix's col2im
/// (BENCHMARKS.md, "Channel-vector weight gradient"). Overwrites the
/// gradients present.
fn channel_vector_backward<T: Element>(
    op: Backward<'_, T>,
    grads: Targets<'_, T>,
    ws: &mut Workspace<T>,
) {
    let Targets { dx, dw, db } = grads;
    if dw.is_some() || db.is_some() {
        direct::channel_vector_gradients::weight_gradient(op, (dw, db), ws);
    }
    let input_gradient_only = Targets {
        dx: Some(match dx {
            Some(dx) => dx,
            None => return,
        }),
        dw: None,
        db: None,
    };
    let on_direct_tiles = error_lowering_on_tiles(op.g).is_some() || phases::applies(op.g);
    if on_direct_tiles || error_lowering_on_channel_vectors(op.g).is_some() {
        column::backward_by_error_lowering(op, input_gradient_only, ws);
    } else if shifted_suits(op.g) {
        shifted::backward(op, input_gradient_only, ws);
    } else {
        column::backward_by_col2im(op, input_gradient_only, ws);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lanes::Schedule;
    use crate::spec::Conv2dSpec;
    use crate::suite;

    /// What `Kernel::Auto` runs on each suite row, forward and backward, as
    /// BENCHMARKS.md measured it.
    #[test]
    fn auto_kernels_of_the_suite() {
        // The channel vectors need AVX-512, or AVX2 and FMA; so do their
        // gradients.
        let vectors_or = |kernel| {
            if direct::channel_vectors::available() {
                Kernel::Direct
            } else {
                kernel
            }
        };
        let gradients_or = |kernel| {
            if direct::channel_vector_gradients::available() {
                Kernel::Direct
            } else {
                kernel
            }
        };
        let expected = [
            ("seed", Kernel::Direct, Kernel::Direct),
            ("seed64", Kernel::Direct, Kernel::Direct),
            ("r3x3", Kernel::Winograd, Kernel::Winograd),
            (
                "r3x3s2",
                vectors_or(Kernel::Shifted),
                gradients_or(Kernel::Shifted),
            ),
            ("r1x1", Kernel::Gemm, Kernel::Gemm),
            ("stem", vectors_or(Kernel::Gemm), gradients_or(Kernel::Gemm)),
            ("dw", Kernel::Direct, Kernel::Direct),
            ("dil", Kernel::Winograd, Kernel::Winograd),
        ];
        let auto = (Kernel::Auto, InputGradient::Auto);
        for (id, forward, backward) in expected {
            let row = suite::row(id).unwrap();
            let g = Geometry::new(&row.spec, row.input).unwrap();
            assert_eq!(forward_kernel(auto.0, auto.1, &g), forward, "{id} forward");
            assert_eq!(
                backward_kernel(auto.0, auto.1, &g),
                backward,
                "{id} backward"
            );
        }
    }

    /// `Auto` runs the backward pass of layers of one group with 8 to 16
    /// output channels on the channel vectors' weight gradient, where the
    /// CPU runs them and the call has enough output pixels; not 1x1 kernels,
    /// fewer channels or small calls.
    #[test]
    fn auto_takes_the_channel_vector_gradients_for_narrow_layers() {
        let vectors_or = |kernel| {
            if direct::channel_vector_gradients::available() {
                Kernel::Direct
            } else {
                kernel
            }
        };
        let narrow = |c_out, kernel, image| {
            let spec = Conv2dSpec::new(32, c_out, kernel).padding((1, 1));
            Geometry::new(&spec, [1, 32, image, image]).unwrap()
        };
        for (g, expected) in [
            (narrow(16, (3, 3), 32), vectors_or(Kernel::Shifted)),
            (narrow(8, (5, 3), 40), vectors_or(Kernel::Gemm)),
            (narrow(7, (3, 3), 32), Kernel::Gemm),
            (narrow(16, (1, 1), 32), Kernel::Gemm),
            (narrow(16, (3, 3), 16), Kernel::Shifted),
        ] {
            let backward = backward_kernel(Kernel::Auto, InputGradient::Auto, &g);
            assert_eq!(backward, expected, "{g:?}");
        }
        let row = suite::row("large-1024x16-3x3-16").unwrap();
        let g = Geometry::new(&row.spec, row.input).unwrap();
        let backward = backward_kernel(Kernel::Auto, InputGradient::Auto, &g);
        assert_eq!(backward, vectors_or(Kernel::Shifted));
    }

    /// `Auto` runs both passes of layers of one group with 16 input and
    /// output channels or more on the shifted windows where neither
    /// Winograd nor the channel vectors take them, and not with fewer; the
    /// forward pass of such layers with up to 16 output channels on the
    /// register tiles where the CPU has AVX-512, else on the shifted
    /// windows; grouped layers never.
    #[test]
    fn auto_takes_the_shifted_windows_from_16_channels() {
        let layer = |c_in, c_out, groups| {
            let spec = Conv2dSpec::new(c_in, c_out, (5, 5))
                .padding((2, 2))
                .groups(groups);
            Geometry::new(&spec, [1, c_in, 12, 12]).unwrap()
        };
        let auto = (Kernel::Auto, InputGradient::Auto);
        let tiles_or_shifted = if crate::gemm_tail::avx512() {
            Kernel::Direct
        } else {
            Kernel::Shifted
        };
        for (g, forward, backward) in [
            (layer(16, 16, 1), tiles_or_shifted, Kernel::Shifted),
            (layer(16, 24, 1), Kernel::Shifted, Kernel::Shifted),
            (layer(24, 16, 1), tiles_or_shifted, Kernel::Shifted),
            (layer(15, 16, 1), Kernel::Direct, Kernel::Gemm),
            (layer(16, 15, 1), Kernel::Direct, Kernel::Gemm),
            (layer(32, 32, 2), Kernel::Direct, Kernel::Gemm),
        ] {
            assert_eq!(forward_kernel(auto.0, auto.1, &g), forward, "{g:?}");
            assert_eq!(backward_kernel(auto.0, auto.1, &g), backward, "{g:?}");
        }
        // The forward pass does not depend on the input-gradient method.
        let g = layer(16, 16, 1);
        let forward = forward_kernel(Kernel::Auto, InputGradient::Col2im, &g);
        assert_eq!(forward, tiles_or_shifted);
    }

    /// An input-gradient method keeps `Auto` off the kernels that ignore
    /// it, but the direct loops still take the layers they suit.
    #[test]
    fn an_input_gradient_method_keeps_auto_on_the_column_matrix() {
        for (id, expected) in [
            ("r3x3", Kernel::Gemm),
            ("r3x3s2", Kernel::Gemm),
            ("dw", Kernel::Direct),
        ] {
            let row = suite::row(id).unwrap();
            let g = Geometry::new(&row.spec, row.input).unwrap();
            for method in [InputGradient::Col2im, InputGradient::ErrorLowering] {
                assert_eq!(backward_kernel(Kernel::Auto, method, &g), expected, "{id}");
            }
        }
    }

    /// A kernel asked for where it cannot compute the geometry leaves it
    /// to the column matrix.
    #[test]
    fn kernels_that_do_not_apply_fall_back_to_the_column_matrix() {
        let grouped = Conv2dSpec::new(64, 64, (5, 5)).groups(2);
        let g = Geometry::new(&grouped, [1, 64, 20, 20]).unwrap();
        for kernel in [
            Kernel::Shifted,
            Kernel::Winograd,
            Kernel::Winograd4x4,
            Kernel::Gemm,
        ] {
            assert_eq!(
                backward_kernel(kernel, InputGradient::Auto, &g),
                Kernel::Gemm
            );
        }
        assert_eq!(
            backward_kernel(Kernel::Direct, InputGradient::Auto, &g),
            Kernel::Direct
        );
    }

    /// The planner's simulation over the extended suite: for 1 to 64
    /// threads, every pass of every row is cut into items whose lanes carry
    /// equal work (the largest at most 1.15 times the mean over the threads,
    /// a lane's work shared by its GEMM threads) wherever the pass has
    /// enough of it: at least 8 units (rows, or row blocks) and 8 lanes'
    /// least work a thread. Run with `--nocapture` for
    /// the table of BENCHMARKS.md, "Scaling by simulation".
    #[test]
    fn planner_balances_the_extended_suite() {
        use crate::workspace::DEFAULT_MIN_LANE_FLOPS;
        let auto = (Kernel::Auto, InputGradient::Auto);
        println!(
            "| threads | passes with enough work | balanced among them | mean predicted speed-up | worst |"
        );
        println!("|---|---|---|---|---|");
        for threads in [1, 2, 4, 8, 16, 32, 64] {
            let (mut passes, mut enough, mut balanced) = (0, 0, 0);
            let (mut speedups, mut worst) = (Vec::new(), f64::INFINITY);
            for row in suite::extended_rows() {
                let g = Geometry::new(&row.spec, row.input).unwrap();
                let forward = forward_kernel(auto.0, auto.1, &g);
                let mut works = vec![forward_work(forward, &g, threads)];
                works.extend(backward_works(backward_kernel(auto.0, auto.1, &g), &g));
                for work in works {
                    let schedule = Schedule::for_threads(work, threads, DEFAULT_MIN_LANE_FLOPS);
                    let loads: Vec<usize> = (0..schedule.lanes())
                        .map(|lane| {
                            schedule
                                .lane_parts(lane)
                                .flat_map(|part| schedule.items(part))
                                .map(|item| item.samples.len() * item.rows.len())
                                .sum()
                        })
                        .collect();
                    let total: usize = loads.iter().sum();
                    assert_eq!(total, work.batch * work.height, "{}", row.id);
                    assert!(loads.len() <= threads);
                    // A lane's GEMMs spread its load over its GEMM threads.
                    let largest =
                        *loads.iter().max().unwrap() as f64 / schedule.gemm_threads() as f64;
                    let balance = largest / (total as f64 / threads as f64);
                    let units = work.batch * work.height.div_ceil(work.granule);
                    let flops = work.row_flops * work.height * work.batch;
                    passes += 1;
                    if units >= 8 * threads && flops >= 8 * threads * DEFAULT_MIN_LANE_FLOPS {
                        enough += 1;
                        assert!(
                            balance <= 1.15,
                            "{} on {threads} threads: largest lane {balance:.2}x the mean",
                            row.id
                        );
                        balanced += 1;
                    }
                    let speedup = total as f64 / largest;
                    speedups.push(speedup);
                    worst = worst.min(speedup);
                }
            }
            let mean = speedups.iter().sum::<f64>() / speedups.len() as f64;
            println!("| {threads} | {enough} of {passes} | {balanced} | {mean:.1} | {worst:.1} |");
        }
    }

    /// Depthwise 5x5 layers at unit stride go to the stencil gradients as
    /// the 3x3 ones do; strided ones, and planes narrower than a stencil
    /// tile, do not.
    #[test]
    fn auto_takes_the_stencil_gradients_for_depthwise_5x5() {
        let depthwise = |stride: usize, image: usize| {
            let spec = Conv2dSpec::new(64, 64, (5, 5))
                .groups(64)
                .stride((stride, stride))
                .padding((2, 2));
            Geometry::new(&spec, [2, 64, image, image]).unwrap()
        };
        let auto = |g: &Geometry| backward_kernel(Kernel::Auto, InputGradient::Auto, g);
        assert_eq!(auto(&depthwise(1, 56)), Kernel::Direct);
        assert!(direct::stencil_gradients::applies::<f64>(&depthwise(1, 56)));
        assert_ne!(auto(&depthwise(2, 56)), Kernel::Direct);
        assert_ne!(auto(&depthwise(1, 7)), Kernel::Direct);
    }

    /// The input gradient of one input channel goes to the stencils on
    /// 5x5 kernels of at most 8 output channels and planes a stencil tile
    /// takes, and stays with col2im on 3x3 kernels, more channels, two
    /// input channels, dilation and small planes.
    #[test]
    fn one_channel_input_gradients_of_5x5_kernels_go_to_the_stencils() {
        let layer = |(c_in, c_out, k): (usize, usize, usize), dilation: usize, image: usize| {
            let spec = Conv2dSpec::new(c_in, c_out, (k, k)).dilation((dilation, dilation));
            Geometry::new(&spec, [16, c_in, image, image]).unwrap()
        };
        let on_stencils = |g: &Geometry| !by_col2im(InputGradient::Auto, g);
        assert!(on_stencils(&layer((1, 6, 5), 1, 28)));
        assert!(on_stencils(&layer((1, 8, 5), 1, 16)));
        assert!(!on_stencils(&layer((1, 9, 5), 1, 28)));
        assert!(!on_stencils(&layer((1, 6, 3), 1, 28)));
        assert!(!on_stencils(&layer((2, 6, 5), 1, 28)));
        assert!(!on_stencils(&layer((1, 6, 5), 2, 28)));
        assert!(!on_stencils(&layer((1, 6, 5), 1, 7)));
    }

    /// Layers of one input channel a group, ungrouped or grouped, go to
    /// the stencil gradients up to 8 output channels a group, and not
    /// beyond (where the channel vectors' gradients take some).
    #[test]
    fn auto_takes_the_stencil_gradients_for_few_output_channels_a_group() {
        let layer = |groups: usize, out_per_group: usize, k: usize| {
            let spec = Conv2dSpec::new(groups, groups * out_per_group, (k, k))
                .groups(groups)
                .padding((k / 2, k / 2));
            Geometry::new(&spec, [8, groups, 28, 28]).unwrap()
        };
        let auto = |g: &Geometry| backward_kernel(Kernel::Auto, InputGradient::Auto, g);
        for (groups, k) in [(1, 5), (1, 3), (32, 3), (16, 5)] {
            for out_per_group in [1, 2, 6, 8] {
                let g = layer(groups, out_per_group, k);
                assert_eq!(auto(&g), Kernel::Direct, "{g:?}");
            }
            let g = layer(groups, 9, k);
            assert!(!stencil_gradients_take::<f32>(&g) && !stencil_gradients_take::<f64>(&g));
        }
    }

    fn dilated(dilation: usize, size: usize) -> Geometry {
        let spec = Conv2dSpec::new(32, 32, (3, 3))
            .dilation((dilation, dilation))
            .padding((dilation, dilation));
        // A batch large enough for Winograd on every size tested.
        Geometry::new(&spec, [64, 32, size, size]).unwrap()
    }

    /// `Kernel::Measure` times F(4x4, 3x3) up to its channel bound, on
    /// either side of the layer, and not beyond.
    #[test]
    fn measure_keeps_winograd_4x4_to_layers_of_few_channels() {
        let layer = |c_in, c_out| {
            let spec = Conv2dSpec::new(c_in, c_out, (3, 3)).padding((1, 1));
            Geometry::new(&spec, [8, c_in, 28, 28]).unwrap()
        };
        let bound = WINOGRAD_4X4_CHANNELS;
        for (c_in, c_out, timed) in [
            (64, 64, true),
            (bound, bound, true),
            (bound + 1, bound, false),
            (bound, bound + 1, false),
        ] {
            let g = layer(c_in, c_out);
            assert_eq!(winograd_4x4_accurate(&g), timed, "{c_in} -> {c_out}");
        }
    }

    #[test]
    fn auto_leaves_large_dilations_on_small_outputs_off_winograd() {
        assert!(winograd_suits(&dilated(2, 56)));
        assert!(winograd_suits(&dilated(2, 16)));
        assert!(!winograd_suits(&dilated(2, 15)));
        assert!(!winograd_suits(&dilated(100, 10)));
        assert!(winograd_applies(&dilated(100, 10)));
    }

    /// ResNet-50's 3x3 layers: on Winograd from calls of as many output
    /// pixels as output channels (the 14x14 layer of 256 channels from batch
    /// 2, the 56x56 and 28x28 ones at any batch), both passes; never on the
    /// 7x7 layer, whose output is too small for Winograd's tiles.
    #[test]
    fn auto_takes_winograd_on_calls_of_a_pixel_a_channel() {
        let layer = |batch, channels, size| {
            let spec = Conv2dSpec::new(channels, channels, (3, 3)).padding((1, 1));
            Geometry::new(&spec, [batch, channels, size, size]).unwrap()
        };
        let auto = (Kernel::Auto, InputGradient::Auto);
        for (channels, size) in [(64, 56), (128, 28), (256, 14), (512, 7)] {
            for batch in [1, 2, 4, 8, 32] {
                let g = layer(batch, channels, size);
                let pixels = batch * size * size;
                let winograd = size >= 8 && pixels >= WINOGRAD_PIXELS_PER_CHANNEL * channels;
                let case = format!("{channels} channels, {size}x{size}, batch {batch}");
                assert_eq!(winograd_suits(&g), winograd, "{case}");
                let forward = forward_kernel(auto.0, auto.1, &g);
                let backward = backward_kernel(auto.0, auto.1, &g);
                assert_eq!(forward == Kernel::Winograd, winograd, "{case}");
                assert_eq!(backward == Kernel::Winograd, winograd, "{case}");
            }
        }
        assert!(!winograd_suits(&layer(1, 256, 14)));
        assert!(winograd_suits(&layer(2, 256, 14)));
    }
}
