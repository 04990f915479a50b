//! Plans: a convolution validated, its kernels chosen and its memory kept
//! for one spec, input shape, element type and thread pool, then run any
//! number of times (the oneDNN primitive, FFTW plan, cuDNN algorithm-find
//! model).
//!
//! [`Plan`] is the choice itself, without memory; the functional calls make
//! one per call against the caller's workspace, and a [`Conv2d`](crate::Conv2d)
//! layer keeps one while its input shape stays the same. [`Conv2dPlan`] is
//! the public plan: a `Plan` with a workspace of its own.

use crate::algo::strided::Choice;
use crate::algo::{self, Algorithm};
use crate::border::Border;
use crate::element::Element;
use crate::error::{ConvError, Operand};
use crate::gradients::{
    GradientSelection, Gradients, GradientsMut, SelectedGradientsMut, Targets, add_bias_gradient,
};
use crate::operands::{Backward, Forward};
use crate::operation::{check_bias, check_error, check_targets, expect_shape, rank};
use crate::output::{written, written_gradients};
use crate::spec::{Conv2dSpec, Geometry, PaddingMode};
use crate::transposed_spec::ConvTranspose2dSpec;
use crate::workspace::{Workspace, scratch};
use crate::{InputGradient, Kernel};
use ndarray::{
    Array4, ArrayView, ArrayView1, ArrayView4, ArrayViewMut4, Axis, Dimension, Ix4, ShapeBuilder, s,
};

/// How an operation runs on the convolution kernels, which compute a
/// zero-padded 2-D convolution on [`Plan::geometry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lowering {
    /// The operation is that convolution.
    Direct,
    /// A convolution whose padding copies input pixels: the kernels run
    /// with no padding on the input padded by the border, and the gradient
    /// of the padded input folds back onto the input.
    Bordered(Border),
    /// A transposed convolution of inputs `input`: its forward pass is the
    /// kernels' input gradient (its input the kernels' error), its input
    /// gradient their forward pass, and its weight gradient theirs with
    /// input and error swapped. Where `output_padding` reaches past the
    /// stride, the kernels' error has rows or columns more than `input`,
    /// and they are zeros.
    Transposed {
        /// The transposed convolution's input shape.
        input: [usize; 4],
    },
}

/// A validated operation and what runs on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The convolution the kernels compute.
    pub(crate) geometry: Geometry,
    pub(crate) lowering: Lowering,
    pub(crate) algorithm: Algorithm,
    pub(crate) choice: Choice,
    /// The pool size the choice was made for.
    pub(crate) threads: usize,
}

/// A broadcast view of zeros: the kernels' input where a pass does not read
/// it (their input gradient alone), given for its shape.
fn unread<T: Element>(zero: &[T; 1], shape: [usize; 4]) -> ArrayView4<'_, T> {
    ArrayView4::from_shape(shape.strides([0, 0, 0, 0]), &zero[..])
        .expect("a single element broadcasts to any shape")
}

/// `data` (grown as needed) as an array of `shape`, filled by `fill`.
fn staged<'b, T: Element>(
    data: &'b mut Vec<T>,
    shape: [usize; 4],
    fill: impl FnOnce(ArrayViewMut4<'_, T>),
) -> ArrayView4<'b, T> {
    let len = shape.iter().product();
    fill(ArrayViewMut4::from_shape(shape, scratch(data, len)).expect("sized above"));
    ArrayView4::from_shape(shape, &data[..len]).expect("sized above")
}

impl Plan {
    /// Validates the convolution `spec` on inputs of `input_shape` and makes
    /// the choice under `ws`'s options. `axes` names the height and width
    /// in errors.
    pub(crate) fn new<T: Element>(
        spec: &Conv2dSpec,
        input_shape: [usize; 4],
        algorithm: Algorithm,
        ws: &mut Workspace<T>,
    ) -> Result<Self, ConvError> {
        let geometry = Geometry::new(spec, input_shape)?;
        let mode = spec.get_padding_mode();
        if mode == PaddingMode::Zeros || geometry.padding.is_zero() {
            return Self::on(geometry, Lowering::Direct, algorithm, ws);
        }
        let border = Border::new(mode, geometry.padding, input_shape, ["height", "width"])?;
        let unpadded = spec
            .clone()
            .padding((0, 0))
            .padding_mode(PaddingMode::Zeros);
        let geometry = Geometry::new(&unpadded, border.padded_shape()?)?;
        Self::on(geometry, Lowering::Bordered(border), algorithm, ws)
    }

    /// Validates the transposed convolution `spec` on inputs of
    /// `input_shape` and makes the choice under `ws`'s options.
    pub(crate) fn transposed<T: Element>(
        spec: &ConvTranspose2dSpec,
        input_shape: [usize; 4],
        algorithm: Algorithm,
        ws: &mut Workspace<T>,
    ) -> Result<Self, ConvError> {
        let output = spec.output_shape(input_shape)?;
        let geometry = Geometry::new(&spec.conv_spec(), output)?;
        let lowering = Lowering::Transposed { input: input_shape };
        Self::on(geometry, lowering, algorithm, ws)
    }

    fn on<T: Element>(
        geometry: Geometry,
        lowering: Lowering,
        algorithm: Algorithm,
        ws: &mut Workspace<T>,
    ) -> Result<Self, ConvError> {
        let choice = match algorithm {
            // `Kernel::Measure` runs the candidates on operands it allocates.
            Algorithm::Strided => T::choose(&geometry, ws)?,
            // Unused: the other algorithms have no kernels to choose.
            _ => Choice::estimate(Kernel::Auto, InputGradient::Auto, &geometry),
        };
        Ok(Plan {
            geometry,
            lowering,
            algorithm,
            choice,
            threads: rayon::current_num_threads(),
        })
    }

    /// The operation's input shape.
    pub(crate) fn input_shape(&self) -> [usize; 4] {
        match self.lowering {
            Lowering::Direct => self.geometry.input_shape(),
            Lowering::Bordered(border) => border.input(),
            Lowering::Transposed { input } => input,
        }
    }

    /// The operation's output shape.
    pub(crate) fn output_shape(&self) -> [usize; 4] {
        match self.lowering {
            Lowering::Transposed { .. } => self.geometry.input_shape(),
            _ => self.geometry.output_shape(),
        }
    }

    /// The operation's weight shape (the kernels', for every lowering).
    pub(crate) fn weight_shape(&self) -> [usize; 4] {
        self.geometry.weight_shape()
    }

    /// The length of the operation's bias: its output channels.
    pub(crate) fn bias_len(&self) -> usize {
        self.output_shape()[1]
    }

    /// The forward pass on operands that match the plan; writes every
    /// element of `y`. Fails only for memory ([`Workspace::fallibly`]).
    pub(crate) fn forward<T: Element>(
        &self,
        operands: (
            ArrayView4<'_, T>,
            ArrayView4<'_, T>,
            Option<ArrayView1<'_, T>>,
        ),
        y: ArrayViewMut4<'_, T>,
        ws: &mut Workspace<T>,
    ) -> Result<(), ConvError> {
        T::plan_forward(self, operands, y, ws)
    }

    /// The body of [`Plan::forward`], instantiated in this crate for each
    /// float type by [`Element`]'s sealed methods.
    pub(crate) fn run_forward<T: Element>(
        &self,
        (x, w, bias): (
            ArrayView4<'_, T>,
            ArrayView4<'_, T>,
            Option<ArrayView1<'_, T>>,
        ),
        mut y: ArrayViewMut4<'_, T>,
        ws: &mut Workspace<T>,
    ) {
        let g = &self.geometry;
        match self.lowering {
            Lowering::Direct => {
                let op = Forward { x, w, bias, g };
                algo::forward_with(self.algorithm, self.choice, op, y, ws);
            }
            Lowering::Bordered(border) => {
                let mut buffers = ws.take_staged();
                let padded = staged(&mut buffers[0], g.input_shape(), |p| border.pad(x, p));
                let op = Forward {
                    x: padded,
                    w,
                    bias,
                    g,
                };
                algo::forward_with(self.algorithm, self.choice, op, y, ws);
                ws.restore_staged(buffers);
            }
            Lowering::Transposed { .. } => {
                let zero = [T::zero()];
                let mut buffers = ws.take_staged();
                let op = Backward {
                    x: unread(&zero, g.input_shape()),
                    w,
                    dy: self.kernel_error(x, &mut buffers[0]),
                    g,
                };
                let targets = Targets {
                    dx: Some(y.view_mut()),
                    dw: None,
                    db: None,
                };
                algo::backward_with(self.algorithm, self.choice, op, targets, ws);
                ws.restore_staged(buffers);
                if let Some(bias) = bias {
                    for (mut channel, &b) in y.axis_iter_mut(Axis(1)).zip(&bias) {
                        channel += b;
                    }
                }
            }
        }
    }

    /// A transposed convolution's input as the kernels' error: `x` itself,
    /// or `x` with zero rows and columns after it, in `buf`.
    fn kernel_error<'b, T: Element>(
        &self,
        x: ArrayView4<'b, T>,
        buf: &'b mut Vec<T>,
    ) -> ArrayView4<'b, T> {
        let shape = self.geometry.output_shape();
        if x.shape() == shape {
            return x;
        }
        staged(buf, shape, |mut error| {
            error.fill(T::zero());
            let (_, _, h, w) = x.dim();
            error.slice_mut(s![.., .., ..h, ..w]).assign(&x);
        })
    }

    /// The backward pass on operands that match the plan; overwrites the
    /// gradients present in `out`. Fails only for memory
    /// ([`Workspace::fallibly`]).
    pub(crate) fn backward<T: Element>(
        &self,
        operands: (ArrayView4<'_, T>, ArrayView4<'_, T>, ArrayView4<'_, T>),
        out: Targets<'_, T>,
        ws: &mut Workspace<T>,
    ) -> Result<(), ConvError> {
        T::plan_backward(self, operands, out, ws)
    }

    /// The body of [`Plan::backward`], instantiated in this crate for each
    /// float type by [`Element`]'s sealed methods.
    pub(crate) fn run_backward<T: Element>(
        &self,
        (x, w, dy): (ArrayView4<'_, T>, ArrayView4<'_, T>, ArrayView4<'_, T>),
        out: Targets<'_, T>,
        ws: &mut Workspace<T>,
    ) {
        let g = &self.geometry;
        let wanted = out.selection();
        if !(wanted.input || wanted.weight || wanted.bias) {
            return;
        }
        match self.lowering {
            Lowering::Direct => {
                let op = Backward { x, w, dy, g };
                algo::backward_with(self.algorithm, self.choice, op, out, ws);
            }
            Lowering::Bordered(border) => {
                let mut buffers = ws.take_staged();
                let [input_buf, gradient_buf] = &mut buffers;
                let zero = [T::zero()];
                let padded = if wanted.weight {
                    staged(input_buf, g.input_shape(), |p| border.pad(x, p))
                } else {
                    unread(&zero, g.input_shape())
                };
                let len = g.input_shape().iter().product();
                let mut padded_dx = out.dx.is_some().then(|| {
                    ArrayViewMut4::from_shape(g.input_shape(), scratch(gradient_buf, len))
                        .expect("sized above")
                });
                let targets = Targets {
                    dx: padded_dx.as_mut().map(|d| d.view_mut()),
                    dw: out.dw,
                    db: out.db,
                };
                let op = Backward {
                    x: padded,
                    w,
                    dy,
                    g,
                };
                algo::backward_with(self.algorithm, self.choice, op, targets, ws);
                if let (Some(padded_dx), Some(dx)) = (padded_dx, out.dx) {
                    border.fold(padded_dx.view(), dx);
                }
                ws.restore_staged(buffers);
            }
            Lowering::Transposed { .. } => self.transposed_backward((x, w, dy), out, ws),
        }
    }

    /// A transposed convolution's backward pass: `dx` is the kernels'
    /// forward pass on `dy`, `dw` their weight gradient with `dy` as input
    /// and `x` as error, `db` the sum of `dy` over batch and pixels.
    fn transposed_backward<T: Element>(
        &self,
        (x, w, dy): (ArrayView4<'_, T>, ArrayView4<'_, T>, ArrayView4<'_, T>),
        out: Targets<'_, T>,
        ws: &mut Workspace<T>,
    ) {
        let g = &self.geometry;
        let mut buffers = ws.take_staged();
        let [error_buf, forward_buf] = &mut buffers;
        if let Some(mut dx) = out.dx {
            let op = Forward {
                x: dy,
                w,
                bias: None,
                g,
            };
            if dx.shape() == g.output_shape() {
                algo::forward_with(self.algorithm, self.choice, op, dx, ws);
            } else {
                let full = staged(forward_buf, g.output_shape(), |full| {
                    algo::forward_with(self.algorithm, self.choice, op, full, ws)
                });
                let (_, _, h, w) = dx.dim();
                dx.assign(&full.slice(s![.., .., ..h, ..w]));
            }
        }
        if let Some(dw) = out.dw {
            let op = Backward {
                x: dy,
                w,
                dy: self.kernel_error(x, error_buf),
                g,
            };
            let targets = Targets {
                dx: None,
                dw: Some(dw),
                db: None,
            };
            algo::backward_with(self.algorithm, self.choice, op, targets, ws);
        }
        if let Some(mut db) = out.db {
            let mut sums = vec![T::zero(); db.len()];
            for dy_n in dy.outer_iter() {
                add_bias_gradient(dy_n, &mut sums);
            }
            db.assign(&ArrayView1::from(&sums[..]));
        }
        ws.restore_staged(buffers);
    }

    /// Checks `x` and `w` against the plan.
    pub(crate) fn check_input_and_weight<T>(
        &self,
        x: &ArrayView4<'_, T>,
        w: &ArrayView4<'_, T>,
    ) -> Result<(), ConvError> {
        expect_shape(Operand::Input, &self.input_shape(), x.shape())?;
        expect_shape(Operand::Weight, &self.weight_shape(), w.shape())
    }
}

/// A convolution planned for one input shape: validated, its kernels chosen
/// and its workspace kept, so that each run only checks the operands'
/// shapes and computes.
///
/// The kernels are chosen for the rayon pool the plan is made in (its
/// thread count), by the workspace's options: [`Kernel::Auto`] by the
/// kernel table, [`Kernel::Measure`] by timing the candidates on this
/// machine. The workspace grows on the first run and is reused after.
///
/// ```
/// use gemmconv::{Algorithm, Conv2dPlan, Conv2dSpec};
/// use gemmconv::ndarray::{Array1, Array4};
/// let spec = Conv2dSpec::new(3, 8, (3, 3)).padding((1, 1));
/// let mut plan = Conv2dPlan::<f32>::new(&spec, [4, 3, 32, 32], Algorithm::Strided)?;
/// assert_eq!(plan.output_shape(), [4, 8, 32, 32]);
/// let (x, w, b) = (Array4::ones((4, 3, 32, 32)), Array4::ones((8, 3, 3, 3)), Array1::zeros(8));
/// let mut y = Array4::zeros(plan.output_shape());
/// for _ in 0..3 {
///     plan.forward_into(x.view(), w.view(), Some(b.view()), y.view_mut())?;
/// }
/// assert_eq!(y[[0, 0, 16, 16]], 27.0);
/// // A different input shape is an error, not a new plan.
/// assert!(plan.forward(Array4::ones((2, 3, 32, 32)).view(), w.view(), Some(b.view())).is_err());
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
#[derive(Debug)]
pub struct Conv2dPlan<T> {
    plan: Plan,
    spec: Conv2dSpec,
    workspace: Workspace<T>,
}

impl<T: Element> Conv2dPlan<T> {
    /// Plans `spec` on inputs of shape `input_shape` (`[n, c, h, w]`) with a
    /// default workspace.
    ///
    /// ```
    /// use gemmconv::{Algorithm, Conv2dPlan, Conv2dSpec, ConvError};
    /// let spec = Conv2dSpec::new(3, 8, (5, 5));
    /// assert!(Conv2dPlan::<f64>::new(&spec, [1, 3, 28, 28], Algorithm::Strided).is_ok());
    /// // Too small for the kernel: the error comes when planning.
    /// assert!(matches!(
    ///     Conv2dPlan::<f64>::new(&spec, [1, 3, 4, 4], Algorithm::Strided),
    ///     Err(ConvError::KernelLargerThanInput { .. })
    /// ));
    /// ```
    pub fn new(
        spec: &Conv2dSpec,
        input_shape: [usize; 4],
        algorithm: Algorithm,
    ) -> Result<Self, ConvError> {
        Self::with_workspace(spec, input_shape, algorithm, Workspace::new())
    }

    /// Plans with `workspace`, whose options (kernel, input-gradient
    /// method, cap, least lane work) the choice follows.
    ///
    /// ```
    /// use gemmconv::{Algorithm, Conv2dPlan, Conv2dSpec, Kernel, Workspace};
    /// let spec = Conv2dSpec::new(64, 64, (3, 3)).padding((1, 1));
    /// let ws = Workspace::new().with_kernel(Kernel::Gemm);
    /// let plan = Conv2dPlan::<f32>::with_workspace(&spec, [1, 64, 14, 14], Algorithm::Strided, ws)?;
    /// assert_eq!(plan.kernels(), (Kernel::Gemm, Kernel::Gemm));
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn with_workspace(
        spec: &Conv2dSpec,
        input_shape: [usize; 4],
        algorithm: Algorithm,
        mut workspace: Workspace<T>,
    ) -> Result<Self, ConvError> {
        let plan = Plan::new(spec, input_shape, algorithm, &mut workspace)?;
        Ok(Conv2dPlan {
            plan,
            spec: spec.clone(),
            workspace,
        })
    }

    /// The forward pass into a new array.
    ///
    /// ```
    /// use gemmconv::{Algorithm, Conv2dPlan, Conv2dSpec};
    /// use gemmconv::ndarray::Array4;
    /// let spec = Conv2dSpec::new(1, 1, (2, 2)).bias(false);
    /// let mut plan = Conv2dPlan::<f64>::new(&spec, [1, 1, 3, 3], Algorithm::Naive)?;
    /// let y = plan.forward(Array4::ones((1, 1, 3, 3)).view(), Array4::ones((1, 1, 2, 2)).view(), None)?;
    /// assert_eq!(y, Array4::from_elem((1, 1, 2, 2), 4.0));
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn forward<Dx: Dimension, Dw: Dimension>(
        &mut self,
        x: ArrayView<'_, T, Dx>,
        w: ArrayView<'_, T, Dw>,
        bias: Option<ArrayView1<'_, T>>,
    ) -> Result<Array4<T>, ConvError> {
        let shape = ndarray::Dim(self.output_shape());
        // SAFETY: `forward_into` writes every element of `y` when it
        // returns `Ok`, and reads none before writing it.
        unsafe { written(shape, "output", |y| self.forward_into(x, w, bias, y)) }
    }

    /// The forward pass into `y` (any layout), which it overwrites.
    ///
    /// ```
    /// use gemmconv::{Algorithm, Conv2dPlan, Conv2dSpec, ConvError, Operand};
    /// use gemmconv::ndarray::Array4;
    /// let spec = Conv2dSpec::new(1, 1, (2, 2)).bias(false);
    /// let mut plan = Conv2dPlan::<f32>::new(&spec, [1, 1, 3, 3], Algorithm::Strided)?;
    /// let (x, w) = (Array4::ones((1, 1, 3, 3)), Array4::ones((1, 1, 2, 2)));
    /// let mut wrong = Array4::zeros((1, 1, 3, 3));
    /// let err = plan.forward_into(x.view(), w.view(), None, wrong.view_mut()).unwrap_err();
    /// assert!(matches!(err, ConvError::ShapeMismatch { operand: Operand::Output, .. }));
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn forward_into<Dx: Dimension, Dw: Dimension>(
        &mut self,
        x: ArrayView<'_, T, Dx>,
        w: ArrayView<'_, T, Dw>,
        bias: Option<ArrayView1<'_, T>>,
        y: ArrayViewMut4<'_, T>,
    ) -> Result<(), ConvError> {
        let x = rank::<_, _, Ix4>(x, Operand::Input)?;
        let w = rank::<_, _, Ix4>(w, Operand::Weight)?;
        self.plan.check_input_and_weight(&x, &w)?;
        check_bias(bias.as_ref(), &self.spec)?;
        expect_shape(Operand::Output, &self.output_shape(), y.shape())?;
        self.plan.forward((x, w, bias), y, &mut self.workspace)
    }

    /// The backward pass into new arrays.
    ///
    /// ```
    /// use gemmconv::{Algorithm, Conv2dPlan, Conv2dSpec};
    /// use gemmconv::ndarray::Array4;
    /// let spec = Conv2dSpec::new(1, 1, (1, 1)).bias(false);
    /// let mut plan = Conv2dPlan::<f64>::new(&spec, [1, 1, 2, 2], Algorithm::Strided)?;
    /// let x = Array4::from_elem((1, 1, 2, 2), 3.0);
    /// let g = plan.backward(x.view(), Array4::from_elem((1, 1, 1, 1), 2.0).view(), Array4::ones((1, 1, 2, 2)).view())?;
    /// assert_eq!((g.dx[[0, 0, 1, 1]], g.dw[[0, 0, 0, 0]], g.db[0]), (2.0, 12.0, 4.0));
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn backward<Dx: Dimension, Dw: Dimension, Dy: Dimension>(
        &mut self,
        x: ArrayView<'_, T, Dx>,
        w: ArrayView<'_, T, Dw>,
        dy: ArrayView<'_, T, Dy>,
    ) -> Result<Gradients<T>, ConvError> {
        let plan = self.plan;
        // SAFETY: the backward pass overwrites every gradient it is given
        // when it returns `Ok`, and reads no element before writing it.
        let grads = unsafe {
            written_gradients(&plan, GradientSelection::ALL, |g| {
                self.selected_backward_into(x, w, dy, g)
            })
        }?;
        Ok(grads
            .into_complete()
            .expect("all three gradients are selected"))
    }

    /// The backward pass into `out` (any layouts), whose three gradients it
    /// overwrites.
    ///
    /// ```
    /// use gemmconv::{Algorithm, Conv2dPlan, Conv2dSpec, Gradients};
    /// use gemmconv::ndarray::{Array1, Array4};
    /// let spec = Conv2dSpec::new(2, 2, (3, 3)).padding((1, 1));
    /// let mut plan = Conv2dPlan::<f32>::new(&spec, [2, 2, 8, 8], Algorithm::Strided)?;
    /// let (x, w, dy) = (Array4::ones((2, 2, 8, 8)), Array4::ones((2, 2, 3, 3)), Array4::ones((2, 2, 8, 8)));
    /// let mut g = Gradients { dx: Array4::zeros((2, 2, 8, 8)), dw: Array4::zeros((2, 2, 3, 3)), db: Array1::zeros(2) };
    /// plan.backward_into(x.view(), w.view(), dy.view(), g.view_mut())?;
    /// assert_eq!(g.db[0], 128.0);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn backward_into<Dx: Dimension, Dw: Dimension, Dy: Dimension>(
        &mut self,
        x: ArrayView<'_, T, Dx>,
        w: ArrayView<'_, T, Dw>,
        dy: ArrayView<'_, T, Dy>,
        out: GradientsMut<'_, T>,
    ) -> Result<(), ConvError> {
        self.selected_backward_into(x, w, dy, out.into())
    }

    /// The backward pass into the gradients `out` holds.
    fn selected_backward_into<Dx: Dimension, Dw: Dimension, Dy: Dimension>(
        &mut self,
        x: ArrayView<'_, T, Dx>,
        w: ArrayView<'_, T, Dw>,
        dy: ArrayView<'_, T, Dy>,
        out: SelectedGradientsMut<'_, T>,
    ) -> Result<(), ConvError> {
        let x = rank::<_, _, Ix4>(x, Operand::Input)?;
        let w = rank::<_, _, Ix4>(w, Operand::Weight)?;
        let dy = rank::<_, _, Ix4>(dy, Operand::OutputGradient)?;
        self.plan.check_input_and_weight(&x, &w)?;
        check_error(&self.plan, &dy)?;
        check_targets(&self.plan, &out)?;
        self.plan.backward((x, w, dy), out, &mut self.workspace)
    }

    /// The spec the plan computes.
    ///
    /// ```
    /// use gemmconv::{Algorithm, Conv2dPlan, Conv2dSpec};
    /// let spec = Conv2dSpec::new(1, 2, (1, 1));
    /// let plan = Conv2dPlan::<f32>::new(&spec, [1, 1, 4, 4], Algorithm::Strided)?;
    /// assert_eq!(plan.spec(), &spec);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn spec(&self) -> &Conv2dSpec {
        &self.spec
    }

    /// The input shape the plan was made for.
    ///
    /// ```
    /// use gemmconv::{Algorithm, Conv2dPlan, Conv2dSpec};
    /// let plan = Conv2dPlan::<f32>::new(&Conv2dSpec::new(1, 2, (1, 1)), [3, 1, 4, 4], Algorithm::Strided)?;
    /// assert_eq!(plan.input_shape(), [3, 1, 4, 4]);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn input_shape(&self) -> [usize; 4] {
        self.plan.input_shape()
    }

    /// The output shape, `[n, c_out, out_h, out_w]`.
    ///
    /// ```
    /// use gemmconv::{Algorithm, Conv2dPlan, Conv2dSpec};
    /// let spec = Conv2dSpec::new(1, 2, (3, 3)).stride((2, 2));
    /// let plan = Conv2dPlan::<f32>::new(&spec, [3, 1, 9, 9], Algorithm::Strided)?;
    /// assert_eq!(plan.output_shape(), [3, 2, 4, 4]);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn output_shape(&self) -> [usize; 4] {
        self.plan.output_shape()
    }

    /// The algorithm the plan runs.
    ///
    /// ```
    /// use gemmconv::{Algorithm, Conv2dPlan, Conv2dSpec};
    /// let plan = Conv2dPlan::<f32>::new(&Conv2dSpec::new(1, 1, (1, 1)), [1, 1, 1, 1], Algorithm::Im2col)?;
    /// assert_eq!(plan.algorithm(), Algorithm::Im2col);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn algorithm(&self) -> Algorithm {
        self.plan.algorithm
    }

    /// The kernels [`Algorithm::Strided`] runs, forward and backward (the
    /// options resolved: never `Auto` or `Measure`).
    ///
    /// ```
    /// use gemmconv::{Algorithm, Conv2dPlan, Conv2dSpec, Kernel};
    /// // A depthwise layer: the direct loops, forward and backward.
    /// let spec = Conv2dSpec::new(32, 32, (3, 3)).padding((1, 1)).groups(32);
    /// let plan = Conv2dPlan::<f32>::new(&spec, [1, 32, 56, 56], Algorithm::Strided)?;
    /// assert_eq!(plan.kernels(), (Kernel::Direct, Kernel::Direct));
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn kernels(&self) -> (Kernel, Kernel) {
        (self.plan.choice.forward, self.plan.choice.backward)
    }

    /// How the column-matrix kernel computes the input gradient, where the
    /// backward kernel is [`Kernel::Gemm`] (never `Auto`).
    ///
    /// ```
    /// use gemmconv::{Algorithm, Conv2dPlan, Conv2dSpec, InputGradient};
    /// let plan = Conv2dPlan::<f32>::new(&Conv2dSpec::new(4, 4, (1, 1)), [1, 4, 8, 8], Algorithm::Strided)?;
    /// assert_eq!(plan.input_gradient(), InputGradient::Col2im);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn input_gradient(&self) -> InputGradient {
        if self.plan.choice.by_col2im {
            InputGradient::Col2im
        } else {
            InputGradient::ErrorLowering
        }
    }

    /// The rayon pool size the kernels were chosen for.
    ///
    /// ```
    /// use gemmconv::{Algorithm, Conv2dPlan, Conv2dSpec};
    /// let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    /// let plan = pool.install(|| Conv2dPlan::<f32>::new(&Conv2dSpec::new(1, 1, (1, 1)), [1, 1, 1, 1], Algorithm::Strided))?;
    /// assert_eq!(plan.threads(), 3);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn threads(&self) -> usize {
        self.plan.threads
    }

    /// The plan's workspace.
    ///
    /// ```
    /// use gemmconv::{Algorithm, Conv2dPlan, Conv2dSpec};
    /// let plan = Conv2dPlan::<f32>::new(&Conv2dSpec::new(1, 1, (1, 1)), [1, 1, 1, 1], Algorithm::Strided)?;
    /// assert_eq!(plan.workspace().allocated_bytes(), 0); // nothing run yet
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn workspace(&self) -> &Workspace<T> {
        &self.workspace
    }
}
