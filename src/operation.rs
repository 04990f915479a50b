//! The operations of the convolution family, and what every one of them
//! shares: the checks of its operands against a plan, and the passes in
//! either rank. Each operation is a spec type ([`Conv2dSpec`],
//! [`ConvTranspose2dSpec`], [`Conv1dSpec`]) that plans itself onto the
//! convolution kernels (`plan.rs`); 1-D operations run as 2-D ones on
//! images one row high.

use crate::algo::Algorithm;
use crate::conv1d_spec::{Conv1dSpec, name_the_axis};
use crate::element::Element;
use crate::error::{ConvError, Operand};
use crate::gradients::{SelectedGradients, SelectedGradientsMut, Targets};
use crate::output::{written, written_gradients};
use crate::plan::Plan;
use crate::spec::Conv2dSpec;
use crate::transposed_spec::ConvTranspose2dSpec;
use crate::workspace::Workspace;
use ndarray::{
    Array, ArrayView, ArrayView1, ArrayView4, ArrayViewMut, ArrayViewMut4, Axis, Dimension, Ix3,
    Ix4,
};

/// An operation of the convolution family, named by its spec:
/// [`Conv2dSpec`], [`ConvTranspose2dSpec`] or [`Conv1dSpec`]. A
/// [`Layer`](crate::Layer) computes one.
///
/// ```
/// use gemmconv::{Conv1dSpec, Operation};
/// fn weight_rank<S: Operation>(_: &S) -> usize { S::RANK }
/// assert_eq!(weight_rank(&Conv1dSpec::new(1, 1, 3)), 3);
/// ```
pub trait Operation:
    sealed::Planned + Clone + std::fmt::Debug + PartialEq + Send + Sync + 'static
{
    /// The dimension of the operation's arrays (input, weight, output):
    /// `Ix4` for 2-D operations, `Ix3` for 1-D ones.
    type Dim: Dimension;
    /// The rank of the operation's arrays.
    const RANK: usize;
}

pub(crate) mod sealed {
    use super::*;

    /// What the crate needs of an operation; not implementable outside it.
    pub trait Planned {
        /// Plans the operation on inputs of `input` (as rank 4).
        fn plan<T: Element>(
            &self,
            input: [usize; 4],
            algorithm: Algorithm,
            ws: &mut Workspace<T>,
        ) -> Result<Plan, ConvError>;
        /// Checks what does not depend on the input.
        fn check(&self) -> Result<(), ConvError>;
        /// The weight shape, as rank 4.
        fn weight_shape4(&self) -> [usize; 4];
        /// Output channels: the bias length.
        fn outputs(&self) -> usize;
        /// Whether the operation has a bias.
        fn biased(&self) -> bool;
        /// PyTorch's `fan_in` of the weight: `weight.shape[1]` times the
        /// kernel's taps.
        fn fan_in(&self) -> usize {
            let [_, inputs, kh, kw] = self.weight_shape4();
            inputs * kh * kw
        }
    }
}

impl Operation for Conv2dSpec {
    type Dim = Ix4;
    const RANK: usize = 4;
}

impl sealed::Planned for Conv2dSpec {
    fn plan<T: Element>(
        &self,
        input: [usize; 4],
        algorithm: Algorithm,
        ws: &mut Workspace<T>,
    ) -> Result<Plan, ConvError> {
        Plan::new(self, input, algorithm, ws)
    }
    fn check(&self) -> Result<(), ConvError> {
        self.validate()
    }
    fn weight_shape4(&self) -> [usize; 4] {
        self.weight_shape()
    }
    fn outputs(&self) -> usize {
        self.out_channels()
    }
    fn biased(&self) -> bool {
        self.has_bias()
    }
}

impl Operation for ConvTranspose2dSpec {
    type Dim = Ix4;
    const RANK: usize = 4;
}

impl sealed::Planned for ConvTranspose2dSpec {
    fn plan<T: Element>(
        &self,
        input: [usize; 4],
        algorithm: Algorithm,
        ws: &mut Workspace<T>,
    ) -> Result<Plan, ConvError> {
        Plan::transposed(self, input, algorithm, ws)
    }
    fn check(&self) -> Result<(), ConvError> {
        self.validate()
    }
    fn weight_shape4(&self) -> [usize; 4] {
        self.weight_shape()
    }
    fn outputs(&self) -> usize {
        self.out_channels()
    }
    fn biased(&self) -> bool {
        self.has_bias()
    }
}

impl Operation for Conv1dSpec {
    type Dim = Ix3;
    const RANK: usize = 3;
}

impl sealed::Planned for Conv1dSpec {
    fn plan<T: Element>(
        &self,
        input: [usize; 4],
        algorithm: Algorithm,
        ws: &mut Workspace<T>,
    ) -> Result<Plan, ConvError> {
        Plan::new(self.to_conv2d(), input, algorithm, ws).map_err(name_the_axis)
    }
    fn check(&self) -> Result<(), ConvError> {
        self.validate()
    }
    fn weight_shape4(&self) -> [usize; 4] {
        self.to_conv2d().weight_shape()
    }
    fn outputs(&self) -> usize {
        self.out_channels()
    }
    fn biased(&self) -> bool {
        self.has_bias()
    }
}

/// A view as the operation's rank `E`, or the rank error naming `operand`.
pub(crate) fn rank<'a, T, D: Dimension, E: Dimension>(
    view: ArrayView<'a, T, D>,
    operand: Operand,
) -> Result<ArrayView<'a, T, E>, ConvError> {
    let expected = E::NDIM.expect("operations have a fixed rank");
    if view.ndim() != expected {
        return Err(ConvError::Rank {
            operand,
            expected,
            got: view.ndim(),
            shape: view.shape().to_vec(),
        });
    }
    Ok(view.into_dimensionality::<E>().expect("rank checked above"))
}

/// A view of rank 3 or 4 as rank 4: a 1-D array is an image one row high.
pub(crate) fn lift<'a, T, D: Dimension>(view: ArrayView<'a, T, D>) -> ArrayView4<'a, T> {
    let view = view.into_dyn();
    let view = if view.ndim() == 3 {
        view.insert_axis(Axis(2))
    } else {
        view
    };
    view.into_dimensionality().expect("rank 3 or 4")
}

/// [`lift`] for a mutable view.
pub(crate) fn lift_mut<'a, T, D: Dimension>(view: ArrayViewMut<'a, T, D>) -> ArrayViewMut4<'a, T> {
    let view = view.into_dyn();
    let view = if view.ndim() == 3 {
        view.insert_axis(Axis(2))
    } else {
        view
    };
    view.into_dimensionality().expect("rank 3 or 4")
}

/// A rank-4 array back as the operation's rank `D` (rank 3 drops the
/// height of one row).
pub(crate) fn lower<T, D: Dimension>(array: ndarray::Array4<T>) -> Array<T, D> {
    let array = array.into_dyn();
    let array = if D::NDIM == Some(3) {
        array.index_axis_move(Axis(2), 0)
    } else {
        array
    };
    array.into_dimensionality().expect("rank 3 or 4")
}

/// A shape of rank 3 or 4, without allocating (the warm calls allocate
/// only their outputs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    dims: [usize; 4],
    rank: usize,
}

impl std::ops::Deref for Shape {
    type Target = [usize];
    fn deref(&self) -> &[usize] {
        &self.dims[..self.rank]
    }
}

/// A rank-4 shape as the operation's rank `D`.
pub(crate) fn lower_shape<D: Dimension>(shape: [usize; 4]) -> Shape {
    if D::NDIM == Some(3) {
        Shape {
            dims: [shape[0], shape[1], shape[3], 0],
            rank: 3,
        }
    } else {
        Shape {
            dims: shape,
            rank: 4,
        }
    }
}

/// A rank-4 view's shape.
pub(crate) fn shape4<T>(view: &ArrayView4<'_, T>) -> [usize; 4] {
    let (n, c, h, w) = view.dim();
    [n, c, h, w]
}

pub(crate) fn expect_shape(
    operand: Operand,
    expected: &[usize],
    got: &[usize],
) -> Result<(), ConvError> {
    if expected == got {
        Ok(())
    } else {
        Err(ConvError::ShapeMismatch {
            operand,
            expected: expected.to_vec(),
            got: got.to_vec(),
        })
    }
}

/// Checks a bias against the operation: given exactly when it has one,
/// with one element an output channel.
pub(crate) fn check_bias<T, S: Operation>(
    bias: Option<&ArrayView1<'_, T>>,
    spec: &S,
) -> Result<(), ConvError> {
    match bias {
        Some(_) if !spec.biased() => Err(ConvError::BiasPresence { expected: false }),
        None if spec.biased() => Err(ConvError::BiasPresence { expected: true }),
        Some(b) => expect_shape(Operand::Bias, &[spec.outputs()], b.shape()),
        None => Ok(()),
    }
}

/// Input and weight of an operation, checked against its plan, as rank 4.
pub(crate) struct Checked<'a, T> {
    pub x: ArrayView4<'a, T>,
    pub w: ArrayView4<'a, T>,
    pub plan: Plan,
}

/// Checks the ranks of `x` and `w`, plans the operation on `x`'s shape,
/// and checks `w`'s shape against the plan.
pub(crate) fn check_operands<'a, S: Operation, T: Element, Dx: Dimension, Dw: Dimension>(
    spec: &S,
    (x, w): (ArrayView<'a, T, Dx>, ArrayView<'a, T, Dw>),
    algorithm: Algorithm,
    ws: &mut Workspace<T>,
) -> Result<Checked<'a, T>, ConvError> {
    let x = lift(rank::<_, _, S::Dim>(x, Operand::Input)?);
    let w = rank::<_, _, S::Dim>(w, Operand::Weight)?;
    let plan = spec.plan(shape4(&x), algorithm, ws)?;
    expect_shape(
        Operand::Weight,
        &lower_shape::<S::Dim>(plan.weight_shape()),
        w.shape(),
    )?;
    Ok(Checked {
        x,
        w: lift(w),
        plan,
    })
}

/// The forward pass of any operation, into `y` when given (which it
/// overwrites), else into a new array.
#[allow(clippy::type_complexity)]
pub(crate) fn forward<S: Operation, T: Element, Dx: Dimension, Dw: Dimension>(
    spec: &S,
    (x, w, bias): (
        ArrayView<'_, T, Dx>,
        ArrayView<'_, T, Dw>,
        Option<ArrayView1<'_, T>>,
    ),
    algorithm: Algorithm,
    ws: &mut Workspace<T>,
    y: Option<ArrayViewMut<'_, T, S::Dim>>,
) -> Result<Option<Array<T, S::Dim>>, ConvError> {
    let Checked { x, w, plan } = check_operands(spec, (x, w), algorithm, ws)?;
    check_bias(bias.as_ref(), spec)?;
    match y {
        Some(y) => {
            let expected = lower_shape::<S::Dim>(plan.output_shape());
            expect_shape(Operand::Output, &expected, y.shape())?;
            plan.forward((x, w, bias), lift_mut(y), ws)?;
            Ok(None)
        }
        None => {
            let shape = ndarray::Dim(plan.output_shape());
            // SAFETY: the plan's forward pass writes every element of `y`
            // when it returns `Ok`, and reads none before writing it.
            let y = unsafe { written(shape, "output", |y| plan.forward((x, w, bias), y, ws)) }?;
            Ok(Some(lower(y)))
        }
    }
}

/// Checks the output gradient against the plan.
pub(crate) fn check_error<T, D: Dimension>(
    plan: &Plan,
    dy: &ArrayView<'_, T, D>,
) -> Result<(), ConvError> {
    expect_shape(
        Operand::OutputGradient,
        &lower_shape::<D>(plan.output_shape()),
        dy.shape(),
    )
}

/// Checks the caller's gradient arrays against the plan.
pub(crate) fn check_targets<T, D: Dimension>(
    plan: &Plan,
    out: &SelectedGradientsMut<'_, T, D>,
) -> Result<(), ConvError> {
    if let Some(dx) = &out.dx {
        expect_shape(
            Operand::Output,
            &lower_shape::<D>(plan.input_shape()),
            dx.shape(),
        )?;
    }
    if let Some(dw) = &out.dw {
        expect_shape(
            Operand::Output,
            &lower_shape::<D>(plan.weight_shape()),
            dw.shape(),
        )?;
    }
    if let Some(db) = &out.db {
        expect_shape(Operand::Output, &[plan.bias_len()], db.shape())?;
    }
    Ok(())
}

/// The backward pass of any operation into the caller's arrays: the
/// gradients present are overwritten, the others not computed.
#[allow(clippy::type_complexity)]
pub(crate) fn backward_into<
    S: Operation,
    T: Element,
    Dx: Dimension,
    Dw: Dimension,
    Dy: Dimension,
>(
    spec: &S,
    (x, w, dy): (
        ArrayView<'_, T, Dx>,
        ArrayView<'_, T, Dw>,
        ArrayView<'_, T, Dy>,
    ),
    algorithm: Algorithm,
    ws: &mut Workspace<T>,
    out: SelectedGradientsMut<'_, T, S::Dim>,
) -> Result<(), ConvError> {
    let Checked { x, w, plan } = check_operands(spec, (x, w), algorithm, ws)?;
    let dy = rank::<_, _, S::Dim>(dy, Operand::OutputGradient)?;
    check_error(&plan, &dy)?;
    check_targets(&plan, &out)?;
    plan.backward((x, w, lift(dy)), lift_targets(out), ws)
}

/// The backward pass of any operation into new arrays, for the gradients
/// `selection` names.
#[allow(clippy::type_complexity)]
pub(crate) fn backward<S: Operation, T: Element, Dx: Dimension, Dw: Dimension, Dy: Dimension>(
    spec: &S,
    (x, w, dy): (
        ArrayView<'_, T, Dx>,
        ArrayView<'_, T, Dw>,
        ArrayView<'_, T, Dy>,
    ),
    algorithm: Algorithm,
    ws: &mut Workspace<T>,
    selection: crate::GradientSelection,
) -> Result<SelectedGradients<T, S::Dim>, ConvError> {
    let Checked { x, w, plan } = check_operands(spec, (x, w), algorithm, ws)?;
    let dy = rank::<_, _, S::Dim>(dy, Operand::OutputGradient)?;
    check_error(&plan, &dy)?;
    // SAFETY: the plan's backward pass overwrites every gradient it is
    // given when it returns `Ok`, and reads no element before writing it.
    let grads =
        unsafe { written_gradients(&plan, selection, |g| plan.backward((x, w, lift(dy)), g, ws)) }?;
    Ok(SelectedGradients {
        dx: grads.dx.map(lower),
        dw: grads.dw.map(lower),
        db: grads.db,
    })
}

/// Caller gradients of any rank as the kernels' rank-4 targets.
pub(crate) fn lift_targets<'a, T, D: Dimension>(
    out: SelectedGradientsMut<'a, T, D>,
) -> Targets<'a, T> {
    Targets {
        dx: out.dx.map(lift_mut),
        dw: out.dw.map(lift_mut),
        db: out.db,
    }
}
