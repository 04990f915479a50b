//! Layers: an operation of the convolution family that owns its
//! parameters, their gradients, the input of the last training forward
//! pass and a reusable workspace. [`Conv2d`], [`ConvTranspose2d`] and
//! [`Conv1d`] are the one [`Layer`] type on each operation.

use crate::algo::Algorithm;
use crate::conv1d_spec::Conv1dSpec;
use crate::element::Element;
use crate::error::{ConvError, Operand};
use crate::gradients::{GradientSelection, SelectedGradientsMut};
use crate::operation::{
    Operation, check_bias, check_error, expect_shape, forward, lift, lift_mut, lower, lower_shape,
    rank, shape4,
};
use crate::output::{copied, written, written_gradients};
use crate::plan::Plan;
use crate::spec::Conv2dSpec;
use crate::transposed_spec::ConvTranspose2dSpec;
use crate::workspace::Workspace;
use ndarray::{
    Array, Array1, Array4, ArrayView, ArrayView1, ArrayViewMut, ArrayViewMut1, Dimension,
};
use rand_distr::{Distribution, Normal, Uniform};

/// A 2-D convolution layer, PyTorch `Conv2d` semantics: a [`Layer`] on a
/// [`Conv2dSpec`].
///
/// ```
/// use gemmconv::{Conv2d, Conv2dSpec};
/// use gemmconv::ndarray::Array4;
/// use rand::SeedableRng;
///
/// let spec = Conv2dSpec::new(1, 6, (5, 5));
/// let mut layer = Conv2d::<f64>::new_kaiming(spec, &mut rand::rngs::StdRng::seed_from_u64(7))?;
/// let x = Array4::from_shape_fn((16, 1, 28, 28), |(n, _, h, w)| (n * 784 + h * 28 + w) as f64);
/// let y = layer.forward(x.view())?;
/// assert_eq!(y.shape(), &[16, 6, 24, 24]);
/// let dx = layer.backward(y.view())?;
/// assert_eq!(dx.shape(), x.shape());
/// assert_eq!(layer.weight_grad().shape(), &[6, 1, 5, 5]);
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
pub type Conv2d<T> = Layer<T, Conv2dSpec>;

/// A 2-D transposed convolution layer, PyTorch `ConvTranspose2d`
/// semantics: a [`Layer`] on a [`ConvTranspose2dSpec`].
///
/// ```
/// use gemmconv::{ConvTranspose2d, ConvTranspose2dSpec};
/// use gemmconv::ndarray::Array4;
/// use rand::SeedableRng;
/// let spec = ConvTranspose2dSpec::new(8, 3, (4, 4)).stride((2, 2)).padding((1, 1));
/// let mut up = ConvTranspose2d::<f32>::new_pytorch_default(spec, &mut rand::rngs::StdRng::seed_from_u64(1))?;
/// let y = up.forward(Array4::<f32>::ones((2, 8, 16, 16)).view())?;
/// assert_eq!(y.shape(), &[2, 3, 32, 32]);
/// assert_eq!(up.backward(y.view())?.shape(), &[2, 8, 16, 16]);
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
pub type ConvTranspose2d<T> = Layer<T, ConvTranspose2dSpec>;

/// A 1-D convolution layer, PyTorch `Conv1d` semantics: a [`Layer`] on a
/// [`Conv1dSpec`], its arrays of rank 3.
///
/// ```
/// use gemmconv::{Conv1d, Conv1dSpec};
/// use gemmconv::ndarray::Array3;
/// use rand::SeedableRng;
/// let spec = Conv1dSpec::new(2, 4, 3).padding(1);
/// let mut layer = Conv1d::<f64>::new_pytorch_default(spec, &mut rand::rngs::StdRng::seed_from_u64(3))?;
/// let y = layer.forward(Array3::<f64>::ones((5, 2, 100)).view())?;
/// assert_eq!(y.shape(), &[5, 4, 100]);
/// assert_eq!(layer.weight().shape(), &[4, 2, 3]);
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
pub type Conv1d<T> = Layer<T, Conv1dSpec>;

/// A layer of the convolution family: the operation `S` (a spec type),
/// its parameters and their accumulated gradients. Usually named by its
/// aliases [`Conv2d`], [`ConvTranspose2d`] and [`Conv1d`].
///
/// Training: [`forward`](Self::forward) keeps a copy of its input;
/// [`backward`](Self::backward) uses it to compute the input gradient
/// (returned) and the parameter gradients, which are *added* to
/// [`weight_grad`](Self::weight_grad) / [`bias_grad`](Self::bias_grad)
/// across calls until [`zero_grad`](Self::zero_grad);
/// [`backward_selected`](Self::backward_selected) computes only the
/// gradients asked for. Inference: [`infer`](Self::infer) takes `&self`,
/// keeps nothing, and may run on one layer from several threads at once.
///
/// A layer is `Clone + Send + Sync` (for `f32` and `f64`); a clone has
/// the same parameters and gradients and an empty workspace.
///
/// ```
/// use gemmconv::{Conv2d, Conv2dSpec};
/// use gemmconv::ndarray::Array4;
/// let spec = Conv2dSpec::new(1, 1, (1, 1)).bias(false);
/// let layer = Conv2d::from_weights(spec, Array4::<f32>::from_elem((1, 1, 1, 1), 2.0), None)?;
/// let x = Array4::<f32>::ones((4, 1, 3, 3));
/// let ys: Vec<_> = std::thread::scope(|s| {
///     let runs: Vec<_> = (0..2).map(|_| s.spawn(|| layer.infer(x.view()))).collect();
///     runs.into_iter().map(|r| r.join().unwrap()).collect()
/// });
/// assert!(ys.iter().all(|y| y.as_ref().unwrap()[[3, 0, 2, 2]] == 2.0));
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Layer<T: Element, S: Operation> {
    spec: S,
    algorithm: Algorithm,
    weight: Array<T, S::Dim>,
    bias: Option<Array1<T>>,
    weight_grad: Array<T, S::Dim>,
    bias_grad: Option<Array1<T>>,
    /// The input of the last training forward pass, contiguous, as rank 4.
    input: Option<Array4<T>>,
    workspace: Workspace<T>,
    /// The plan of the last input shape, kept while it stays the same.
    plan: Option<Plan>,
    /// One backward call's parameter gradients, before they are added to
    /// the totals.
    step: (Array<T, S::Dim>, Array1<T>),
}

/// A layer's parameters, mutable, and their accumulated gradients, from
/// [`Layer::parameters_mut`].
///
/// ```
/// # use gemmconv::{Conv1d, Conv1dSpec};
/// # use gemmconv::ndarray::Array3;
/// let mut layer = Conv1d::from_weights(Conv1dSpec::new(1, 1, 2).bias(false), Array3::<f32>::ones((1, 1, 2)), None)?;
/// let p = layer.parameters_mut();
/// assert_eq!((p.weight.shape(), p.weight_grad.shape()), (&[1, 1, 2][..], &[1, 1, 2][..]));
/// assert!(p.bias.is_none() && p.bias_grad.is_none());
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
#[derive(Debug)]
pub struct ParametersMut<'a, T, D: Dimension> {
    /// The weight.
    pub weight: ArrayViewMut<'a, T, D>,
    /// The weight gradient accumulated since the last `zero_grad`.
    pub weight_grad: ArrayView<'a, T, D>,
    /// The bias, if the layer has one.
    pub bias: Option<ArrayViewMut1<'a, T>>,
    /// The bias gradient, if the layer has a bias.
    pub bias_grad: Option<ArrayView1<'a, T>>,
}

impl<T: Element, S: Operation> Layer<T, S> {
    /// A layer with Kaiming-normal weights (`N(0, 2 / fan_in)`, as for a
    /// ReLU network; `fan_in` is the weight's second axis times the
    /// kernel's taps, as in PyTorch) drawn from `rng`, and a zero bias if
    /// the spec has one.
    ///
    /// ```
    /// use gemmconv::{Conv2d, Conv2dSpec};
    /// use rand::SeedableRng;
    /// let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    /// let layer = Conv2d::<f32>::new_kaiming(Conv2dSpec::new(3, 8, (3, 3)), &mut rng)?;
    /// assert_eq!(layer.weight().shape(), &[8, 3, 3, 3]);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn new_kaiming<R: rand::Rng + ?Sized>(spec: S, rng: &mut R) -> Result<Self, ConvError> {
        spec.check()?;
        let std = (2.0 / spec.fan_in() as f64).sqrt();
        let normal =
            Normal::new(0.0, std).expect("fan_in >= 1, so the deviation is finite and positive");
        let weight = Self::weight_from(&spec, || T::from_f64(normal.sample(rng)));
        let bias = spec.biased().then(|| Array1::zeros(spec.outputs()));
        Self::from_weights(spec, weight, bias)
    }

    /// A layer initialised as PyTorch initialises a new one:
    /// `kaiming_uniform_(a = √5)` for the weight, which is uniform on
    /// `±1/√fan_in`, and the bias uniform on the same bound (`fan_in` is
    /// the weight's second axis times the kernel's taps).
    ///
    /// ```
    /// use gemmconv::{Conv2d, Conv2dSpec};
    /// use rand::SeedableRng;
    /// let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    /// let layer = Conv2d::<f64>::new_pytorch_default(Conv2dSpec::new(4, 8, (3, 3)), &mut rng)?;
    /// let bound = 1.0 / (4.0 * 9.0f64).sqrt();
    /// assert!(layer.weight().iter().all(|w| w.abs() <= bound));
    /// assert!(layer.bias().unwrap().iter().all(|b| b.abs() <= bound));
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn new_pytorch_default<R: rand::Rng + ?Sized>(
        spec: S,
        rng: &mut R,
    ) -> Result<Self, ConvError> {
        spec.check()?;
        let bound = 1.0 / (spec.fan_in() as f64).sqrt();
        let uniform =
            Uniform::new_inclusive(-bound, bound).expect("fan_in >= 1, so the bound is finite");
        let weight = Self::weight_from(&spec, || T::from_f64(uniform.sample(rng)));
        let bias = spec.biased().then(|| {
            Array1::from_shape_simple_fn(spec.outputs(), || T::from_f64(uniform.sample(rng)))
        });
        Self::from_weights(spec, weight, bias)
    }

    fn weight_from(spec: &S, draw: impl FnMut() -> T) -> Array<T, S::Dim> {
        lower(Array4::from_shape_simple_fn(spec.weight_shape4(), draw))
    }

    /// A layer with the given parameters, checked against the spec.
    ///
    /// ```
    /// use gemmconv::{Conv2d, Conv2dSpec};
    /// use gemmconv::ndarray::{Array1, Array4};
    /// let spec = Conv2dSpec::new(2, 4, (3, 3));
    /// let layer = Conv2d::from_weights(spec, Array4::<f64>::zeros((4, 2, 3, 3)), Some(Array1::zeros(4)))?;
    /// assert!(layer.bias().is_some());
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn from_weights(
        spec: S,
        weight: Array<T, S::Dim>,
        bias: Option<Array1<T>>,
    ) -> Result<Self, ConvError> {
        spec.check()?;
        let expected = lower_shape::<S::Dim>(spec.weight_shape4());
        expect_shape(Operand::Weight, &expected, weight.shape())?;
        check_bias(bias.as_ref().map(|b| b.view()).as_ref(), &spec)?;
        let zeros = || Array::zeros(weight.raw_dim());
        Ok(Layer {
            weight_grad: zeros(),
            bias_grad: bias.as_ref().map(|b| Array1::zeros(b.len())),
            step: (zeros(), Array1::zeros(spec.outputs())),
            spec,
            algorithm: Algorithm::default(),
            weight,
            bias,
            input: None,
            workspace: Workspace::new(),
            plan: None,
        })
    }

    /// Uses `algorithm` for later forward and backward calls.
    ///
    /// ```
    /// # use gemmconv::{Algorithm, Conv2d, Conv2dSpec};
    /// # use gemmconv::ndarray::Array4;
    /// let spec = Conv2dSpec::new(1, 1, (1, 1)).bias(false);
    /// let layer = Conv2d::from_weights(spec, Array4::<f32>::ones((1, 1, 1, 1)), None)?
    ///     .with_algorithm(Algorithm::Naive);
    /// assert_eq!(layer.algorithm(), Algorithm::Naive);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn with_algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self.plan = None;
        self
    }

    /// Replaces the workspace, for example to set its memory cap.
    ///
    /// ```
    /// # use gemmconv::{Conv2d, Conv2dSpec, Workspace};
    /// # use gemmconv::ndarray::Array4;
    /// let spec = Conv2dSpec::new(1, 1, (1, 1)).bias(false);
    /// let layer = Conv2d::from_weights(spec, Array4::<f32>::ones((1, 1, 1, 1)), None)?
    ///     .with_workspace(Workspace::new().with_column_cap_bytes(1 << 20));
    /// assert_eq!(layer.workspace().column_cap_bytes(), 1 << 20);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn with_workspace(mut self, workspace: Workspace<T>) -> Self {
        self.workspace = workspace;
        self.plan = None;
        self
    }

    /// The training forward pass; keeps a copy of `x` for
    /// [`backward`](Self::backward).
    ///
    /// ```
    /// # use gemmconv::{Conv2d, Conv2dSpec};
    /// # use gemmconv::ndarray::{Array1, Array4};
    /// let spec = Conv2dSpec::new(1, 1, (2, 2));
    /// let mut layer = Conv2d::from_weights(spec, Array4::<f32>::ones((1, 1, 2, 2)), Some(Array1::ones(1)))?;
    /// let y = layer.forward(Array4::<f32>::ones((1, 1, 3, 3)).view())?;
    /// assert_eq!(y[[0, 0, 0, 0]], 5.0);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn forward<D: Dimension>(
        &mut self,
        x: ArrayView<'_, T, D>,
    ) -> Result<Array<T, S::Dim>, ConvError> {
        let x = lift(rank::<_, _, S::Dim>(x, Operand::Input)?);
        let plan = self.plan_for(shape4(&x))?;
        let bias = self.bias.as_ref().map(|b| b.view());
        let operands = (x, lift(self.weight.view()), bias);
        let shape = ndarray::Dim(plan.output_shape());
        // SAFETY: the plan's forward pass writes every element of `y` when
        // it returns `Ok`, and reads none before writing it.
        let y = unsafe {
            written(shape, "output", |y| {
                plan.forward(operands, y, &mut self.workspace)
            })
        }?;
        match &mut self.input {
            Some(cached) if cached.shape() == x.shape() => cached.assign(&x),
            cached => *cached = Some(copied(&x, "input copy")?),
        }
        Ok(lower(y))
    }

    /// The inference forward pass: `&self`, no copy of `x` kept, scratch
    /// memory of its own, so one layer serves several threads at once. As
    /// fast as the functional call (it plans and allocates as that does);
    /// [`infer_into`](Self::infer_into) reuses the caller's memory.
    ///
    /// ```
    /// # use gemmconv::{Conv2d, Conv2dSpec};
    /// # use gemmconv::ndarray::{Array1, Array4};
    /// let spec = Conv2dSpec::new(1, 1, (2, 2));
    /// let layer = Conv2d::from_weights(spec, Array4::<f32>::ones((1, 1, 2, 2)), Some(Array1::ones(1)))?;
    /// let y = layer.infer(Array4::<f32>::ones((1, 1, 3, 3)).view())?;
    /// assert_eq!(y[[0, 0, 1, 1]], 5.0);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn infer<D: Dimension>(
        &self,
        x: ArrayView<'_, T, D>,
    ) -> Result<Array<T, S::Dim>, ConvError> {
        let mut ws = self.workspace.clone();
        let bias = self.bias.as_ref().map(|b| b.view());
        let y = forward(
            &self.spec,
            (x, self.weight.view(), bias),
            self.algorithm,
            &mut ws,
            None,
        )?;
        Ok(y.expect("no output given, so one is made"))
    }

    /// [`infer`](Self::infer) with the caller's workspace (one a thread),
    /// reused across calls: only the output is allocated. The workspace's
    /// options apply, not the layer's.
    ///
    /// ```
    /// # use gemmconv::{Conv2d, Conv2dSpec, Workspace};
    /// # use gemmconv::ndarray::Array4;
    /// let spec = Conv2dSpec::new(1, 1, (1, 1)).bias(false);
    /// let layer = Conv2d::from_weights(spec, Array4::<f64>::from_elem((1, 1, 1, 1), 3.0), None)?;
    /// let mut ws = Workspace::new();
    /// let y = layer.infer_with_workspace(Array4::<f64>::ones((2, 1, 2, 2)).view(), &mut ws)?;
    /// assert_eq!(y.sum(), 24.0);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn infer_with_workspace<D: Dimension>(
        &self,
        x: ArrayView<'_, T, D>,
        workspace: &mut Workspace<T>,
    ) -> Result<Array<T, S::Dim>, ConvError> {
        let bias = self.bias.as_ref().map(|b| b.view());
        let operands = (x, self.weight.view(), bias);
        let y = forward(&self.spec, operands, self.algorithm, workspace, None)?;
        Ok(y.expect("no output given, so one is made"))
    }

    /// [`infer`](Self::infer) into `y` (any layout), which it overwrites,
    /// with the caller's workspace (one a thread): with a warm workspace
    /// it allocates nothing. The workspace's options apply, not the
    /// layer's.
    ///
    /// ```
    /// # use gemmconv::{Conv2d, Conv2dSpec, Workspace};
    /// # use gemmconv::ndarray::Array4;
    /// let spec = Conv2dSpec::new(1, 1, (1, 1)).bias(false);
    /// let layer = Conv2d::from_weights(spec, Array4::<f64>::from_elem((1, 1, 1, 1), 3.0), None)?;
    /// let mut y = Array4::<f64>::zeros((2, 1, 2, 2));
    /// layer.infer_into(Array4::<f64>::ones((2, 1, 2, 2)).view(), &mut Workspace::new(), y.view_mut())?;
    /// assert_eq!(y.sum(), 24.0);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn infer_into<D: Dimension>(
        &self,
        x: ArrayView<'_, T, D>,
        workspace: &mut Workspace<T>,
        y: ArrayViewMut<'_, T, S::Dim>,
    ) -> Result<(), ConvError> {
        let bias = self.bias.as_ref().map(|b| b.view());
        forward(
            &self.spec,
            (x, self.weight.view(), bias),
            self.algorithm,
            workspace,
            Some(y),
        )?;
        Ok(())
    }

    /// The backward pass for the last forward call: adds the parameter
    /// gradients to [`weight_grad`](Self::weight_grad) and
    /// [`bias_grad`](Self::bias_grad) and returns the input gradient.
    ///
    /// ```
    /// # use gemmconv::{Conv2d, Conv2dSpec, ConvError};
    /// # use gemmconv::ndarray::Array4;
    /// let spec = Conv2dSpec::new(1, 1, (1, 1)).bias(false);
    /// let mut layer = Conv2d::from_weights(spec, Array4::<f64>::from_elem((1, 1, 1, 1), 2.0), None)?;
    /// assert_eq!(layer.backward(Array4::<f64>::ones((1, 1, 1, 1)).view()), Err(ConvError::BackwardBeforeForward));
    /// layer.forward(Array4::<f64>::from_elem((1, 1, 1, 1), 3.0).view())?;
    /// let dx = layer.backward(Array4::<f64>::ones((1, 1, 1, 1)).view())?;
    /// assert_eq!(dx[[0, 0, 0, 0]], 2.0);
    /// layer.backward(Array4::<f64>::ones((1, 1, 1, 1)).view())?;
    /// assert_eq!(layer.weight_grad()[[0, 0, 0, 0]], 6.0); // accumulated twice
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn backward<D: Dimension>(
        &mut self,
        dy: ArrayView<'_, T, D>,
    ) -> Result<Array<T, S::Dim>, ConvError> {
        let dx = self.backward_selected(dy, GradientSelection::ALL)?;
        Ok(dx.expect("the input gradient was selected"))
    }

    /// The backward pass for the last forward call, computing only the
    /// gradients `selection` names: the parameter gradients selected are
    /// added to the totals, the input gradient is returned if selected.
    /// A network's first layer asks for [`GradientSelection::PARAMETERS`],
    /// a frozen layer for [`GradientSelection::INPUT`].
    ///
    /// ```
    /// # use gemmconv::{Conv2d, Conv2dSpec, GradientSelection};
    /// # use gemmconv::ndarray::{Array1, Array4};
    /// let spec = Conv2dSpec::new(1, 1, (1, 1));
    /// let mut layer = Conv2d::from_weights(spec, Array4::<f64>::ones((1, 1, 1, 1)), Some(Array1::zeros(1)))?;
    /// layer.forward(Array4::<f64>::from_elem((1, 1, 2, 2), 3.0).view())?;
    /// let dx = layer.backward_selected(Array4::<f64>::ones((1, 1, 2, 2)).view(), GradientSelection::PARAMETERS)?;
    /// assert!(dx.is_none());
    /// assert_eq!((layer.weight_grad()[[0, 0, 0, 0]], layer.bias_grad().unwrap()[0]), (12.0, 4.0));
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn backward_selected<D: Dimension>(
        &mut self,
        dy: ArrayView<'_, T, D>,
        selection: GradientSelection,
    ) -> Result<Option<Array<T, S::Dim>>, ConvError> {
        let dy = rank::<_, _, S::Dim>(dy, Operand::OutputGradient)?;
        let x = self
            .input
            .as_ref()
            .ok_or(ConvError::BackwardBeforeForward)?;
        let shape = shape4(&x.view());
        let plan = match self.plan {
            Some(plan) if plan.input_shape() == shape => plan,
            _ => self.spec.plan(shape, self.algorithm, &mut self.workspace)?,
        };
        check_error(&plan, &dy)?;
        let want_bias = selection.bias && self.bias_grad.is_some();
        let (dw_step, db_step) = &mut self.step;
        let operands = (x.view(), lift(self.weight.view()), lift(dy));
        let workspace = &mut self.workspace;
        let dx_only = GradientSelection {
            input: selection.input,
            weight: false,
            bias: false,
        };
        // SAFETY: the plan's backward pass overwrites every gradient it is
        // given when it returns `Ok`, and reads no element before writing it.
        let dx = unsafe {
            written_gradients(&plan, dx_only, |new| {
                let grads = SelectedGradientsMut {
                    dx: new.dx,
                    dw: selection.weight.then(|| lift_mut(dw_step.view_mut())),
                    db: want_bias.then(|| db_step.view_mut()),
                };
                plan.backward(operands, grads, workspace)
            })
        }?
        .dx;
        if selection.weight {
            self.weight_grad += &*dw_step;
        }
        if let (true, Some(bias_grad)) = (want_bias, &mut self.bias_grad) {
            *bias_grad += &*db_step;
        }
        Ok(dx.map(lower))
    }

    /// The plan for inputs of `shape`: the kept one if made for it, else a
    /// new one, kept in its place.
    fn plan_for(&mut self, shape: [usize; 4]) -> Result<Plan, ConvError> {
        match self.plan {
            Some(plan) if plan.input_shape() == shape => Ok(plan),
            _ => {
                let plan = self.spec.plan(shape, self.algorithm, &mut self.workspace)?;
                self.plan = Some(plan);
                Ok(plan)
            }
        }
    }

    /// Sets the accumulated gradients to zero.
    ///
    /// ```
    /// # use gemmconv::{Conv2d, Conv2dSpec};
    /// # use gemmconv::ndarray::Array4;
    /// let spec = Conv2dSpec::new(1, 1, (1, 1)).bias(false);
    /// let mut layer = Conv2d::from_weights(spec, Array4::<f64>::ones((1, 1, 1, 1)), None)?;
    /// layer.forward(Array4::<f64>::ones((1, 1, 2, 2)).view())?;
    /// layer.backward(Array4::<f64>::ones((1, 1, 2, 2)).view())?;
    /// layer.zero_grad();
    /// assert_eq!(layer.weight_grad()[[0, 0, 0, 0]], 0.0);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn zero_grad(&mut self) {
        self.weight_grad.fill(T::zero());
        if let Some(bias_grad) = &mut self.bias_grad {
            bias_grad.fill(T::zero());
        }
    }

    /// The layer's geometry.
    ///
    /// ```
    /// # use gemmconv::{Conv2d, Conv2dSpec};
    /// # use gemmconv::ndarray::Array4;
    /// let spec = Conv2dSpec::new(1, 1, (1, 1)).bias(false);
    /// let layer = Conv2d::from_weights(spec.clone(), Array4::<f64>::ones((1, 1, 1, 1)), None)?;
    /// assert_eq!(layer.spec(), &spec);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn spec(&self) -> &S {
        &self.spec
    }

    /// The algorithm forward and backward use.
    ///
    /// ```
    /// # use gemmconv::{Algorithm, Conv2d, Conv2dSpec};
    /// # use gemmconv::ndarray::Array4;
    /// let spec = Conv2dSpec::new(1, 1, (1, 1)).bias(false);
    /// let layer = Conv2d::from_weights(spec, Array4::<f64>::ones((1, 1, 1, 1)), None)?;
    /// assert_eq!(layer.algorithm(), Algorithm::Strided);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The weight, shaped as the spec's `weight_shape`.
    ///
    /// ```
    /// # use gemmconv::{Conv2d, Conv2dSpec};
    /// # use gemmconv::ndarray::Array4;
    /// let spec = Conv2dSpec::new(1, 1, (1, 1)).bias(false);
    /// let layer = Conv2d::from_weights(spec, Array4::<f64>::ones((1, 1, 1, 1)), None)?;
    /// assert_eq!(layer.weight()[[0, 0, 0, 0]], 1.0);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn weight(&self) -> &Array<T, S::Dim> {
        &self.weight
    }

    /// The weight, for an optimiser step. Its shape must not change.
    ///
    /// ```
    /// # use gemmconv::{Conv2d, Conv2dSpec};
    /// # use gemmconv::ndarray::Array4;
    /// let spec = Conv2dSpec::new(1, 1, (1, 1)).bias(false);
    /// let mut layer = Conv2d::from_weights(spec, Array4::<f64>::ones((1, 1, 1, 1)), None)?;
    /// layer.weight_mut()[[0, 0, 0, 0]] -= 0.5;
    /// assert_eq!(layer.weight()[[0, 0, 0, 0]], 0.5);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn weight_mut(&mut self) -> ArrayViewMut<'_, T, S::Dim> {
        self.weight.view_mut()
    }

    /// The bias, if the spec has one.
    ///
    /// ```
    /// # use gemmconv::{Conv2d, Conv2dSpec};
    /// # use gemmconv::ndarray::Array4;
    /// let spec = Conv2dSpec::new(1, 1, (1, 1)).bias(false);
    /// let layer = Conv2d::from_weights(spec, Array4::<f64>::ones((1, 1, 1, 1)), None)?;
    /// assert!(layer.bias().is_none());
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn bias(&self) -> Option<&Array1<T>> {
        self.bias.as_ref()
    }

    /// The bias, for an optimiser step.
    ///
    /// ```
    /// # use gemmconv::{Conv2d, Conv2dSpec};
    /// # use gemmconv::ndarray::{Array1, Array4};
    /// let spec = Conv2dSpec::new(1, 1, (1, 1));
    /// let mut layer = Conv2d::from_weights(spec, Array4::<f64>::ones((1, 1, 1, 1)), Some(Array1::zeros(1)))?;
    /// if let Some(mut b) = layer.bias_mut() { b[0] = 1.0; }
    /// assert_eq!(layer.bias().unwrap()[0], 1.0);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn bias_mut(&mut self) -> Option<ArrayViewMut1<'_, T>> {
        self.bias.as_mut().map(|b| b.view_mut())
    }

    /// The parameters, mutable, beside their accumulated gradients: what an
    /// optimiser step reads and writes, borrowed together.
    ///
    /// ```
    /// # use gemmconv::{Conv2d, Conv2dSpec};
    /// # use gemmconv::ndarray::{Array1, Array4};
    /// let spec = Conv2dSpec::new(1, 1, (1, 1));
    /// let mut layer = Conv2d::from_weights(spec, Array4::<f64>::ones((1, 1, 1, 1)), Some(Array1::zeros(1)))?;
    /// layer.forward(Array4::<f64>::from_elem((1, 1, 2, 2), 3.0).view())?;
    /// layer.backward(Array4::<f64>::ones((1, 1, 2, 2)).view())?;
    /// let p = layer.parameters_mut();
    /// let learning_rate = 0.1;
    /// p.weight.into_iter().zip(p.weight_grad).for_each(|(w, g)| *w -= learning_rate * g);
    /// if let (Some(b), Some(db)) = (p.bias, p.bias_grad) {
    ///     b.into_iter().zip(db).for_each(|(b, g)| *b -= learning_rate * g);
    /// }
    /// assert_eq!(layer.weight()[[0, 0, 0, 0]], 1.0 - 0.1 * 12.0);
    /// assert_eq!(layer.bias().unwrap()[0], -0.1 * 4.0);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn parameters_mut(&mut self) -> ParametersMut<'_, T, S::Dim> {
        ParametersMut {
            weight: self.weight.view_mut(),
            weight_grad: self.weight_grad.view(),
            bias: self.bias.as_mut().map(|b| b.view_mut()),
            bias_grad: self.bias_grad.as_ref().map(|b| b.view()),
        }
    }

    /// The weight gradient accumulated since the last [`zero_grad`](Self::zero_grad).
    ///
    /// ```
    /// # use gemmconv::{Conv2d, Conv2dSpec};
    /// # use gemmconv::ndarray::Array4;
    /// let spec = Conv2dSpec::new(1, 1, (1, 1)).bias(false);
    /// let layer = Conv2d::from_weights(spec, Array4::<f64>::ones((1, 1, 1, 1)), None)?;
    /// assert_eq!(layer.weight_grad()[[0, 0, 0, 0]], 0.0);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn weight_grad(&self) -> &Array<T, S::Dim> {
        &self.weight_grad
    }

    /// The bias gradient accumulated since the last [`zero_grad`](Self::zero_grad).
    ///
    /// ```
    /// # use gemmconv::{Conv2d, Conv2dSpec};
    /// # use gemmconv::ndarray::{Array1, Array4};
    /// let spec = Conv2dSpec::new(1, 1, (1, 1));
    /// let layer = Conv2d::from_weights(spec, Array4::<f64>::ones((1, 1, 1, 1)), Some(Array1::zeros(1)))?;
    /// assert_eq!(layer.bias_grad().unwrap()[0], 0.0);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn bias_grad(&self) -> Option<&Array1<T>> {
        self.bias_grad.as_ref()
    }

    /// The layer's workspace.
    ///
    /// ```
    /// # use gemmconv::{Conv2d, Conv2dSpec};
    /// # use gemmconv::ndarray::Array4;
    /// let spec = Conv2dSpec::new(1, 1, (1, 1)).bias(false);
    /// let layer = Conv2d::from_weights(spec, Array4::<f64>::ones((1, 1, 1, 1)), None)?;
    /// assert_eq!(layer.workspace().allocated_bytes(), 0);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn workspace(&self) -> &Workspace<T> {
        &self.workspace
    }
}
