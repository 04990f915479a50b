//! `Conv2d`: a convolution layer that owns its parameters, their gradients,
//! the input of the last forward pass and a reusable workspace.

use crate::algo::Algorithm;
use crate::conv::{check_bias, expect_shape, input_shape, rank4};
use crate::element::Element;
use crate::error::{ConvError, Operand};
use crate::gradients::GradientsMut;
use crate::output::zeroed;
use crate::plan::Plan;
use crate::spec::Conv2dSpec;
use crate::workspace::Workspace;
use ndarray::{Array1, Array4, ArrayView, Dimension};
use rand_distr::{Distribution, Normal};

/// A 2-D convolution layer, PyTorch `Conv2d` semantics.
///
/// `forward` keeps a copy of its input; `backward` uses it to compute the
/// input gradient (returned) and the parameter gradients, which are *added*
/// to [`weight_grad`](Self::weight_grad) / [`bias_grad`](Self::bias_grad)
/// across calls until [`zero_grad`](Self::zero_grad).
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
#[derive(Debug)]
pub struct Conv2d<T: Element> {
    spec: Conv2dSpec,
    algorithm: Algorithm,
    weight: Array4<T>,
    bias: Option<Array1<T>>,
    weight_grad: Array4<T>,
    bias_grad: Option<Array1<T>>,
    /// The input of the last forward pass, contiguous.
    input: Option<Array4<T>>,
    workspace: Workspace<T>,
    /// The plan of the last input shape, kept while it stays the same.
    plan: Option<Plan>,
    /// One backward call's gradients, before they are added to the totals.
    step: (Array4<T>, Array1<T>),
}

impl<T: Element> Conv2d<T> {
    /// A layer with Kaiming-normal weights (`N(0, 2 / fan_in)`, `fan_in =
    /// in_channels / groups · kh · kw`, as for a ReLU network) drawn from
    /// `rng`, and a zero bias if the spec has one.
    ///
    /// ```
    /// use gemmconv::{Conv2d, Conv2dSpec};
    /// use rand::SeedableRng;
    /// let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    /// let layer = Conv2d::<f32>::new_kaiming(Conv2dSpec::new(3, 8, (3, 3)), &mut rng)?;
    /// assert_eq!(layer.weight().shape(), &[8, 3, 3, 3]);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn new_kaiming<R: rand::Rng + ?Sized>(
        spec: Conv2dSpec,
        rng: &mut R,
    ) -> Result<Self, ConvError> {
        spec.validate()?;
        let shape = spec.weight_shape();
        let fan_in = shape[1] * shape[2] * shape[3];
        let normal = Normal::new(0.0, (2.0 / fan_in as f64).sqrt())
            .expect("fan_in >= 1, so the deviation is finite and positive");
        let weight = Array4::from_shape_simple_fn(shape, || T::from_f64(normal.sample(rng)));
        let bias = spec.has_bias().then(|| Array1::zeros(spec.out_channels()));
        Self::from_weights(spec, weight, bias)
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
        spec: Conv2dSpec,
        weight: Array4<T>,
        bias: Option<Array1<T>>,
    ) -> Result<Self, ConvError> {
        spec.validate()?;
        let expected = spec.weight_shape();
        expect_shape(Operand::Weight, &expected, weight.shape())?;
        check_bias(bias.as_ref().map(|b| b.view()).as_ref(), &spec)?;
        Ok(Conv2d {
            weight_grad: Array4::zeros(expected),
            bias_grad: bias.as_ref().map(|b| Array1::zeros(b.len())),
            step: (Array4::zeros(expected), Array1::zeros(spec.out_channels())),
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

    /// The forward pass; keeps a copy of `x` for [`backward`](Self::backward).
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
    ) -> Result<Array4<T>, ConvError> {
        let x = rank4(x, Operand::Input)?;
        let plan = self.plan_for(input_shape(&x))?;
        let mut y = zeroed(plan.geometry.output_shape());
        let bias = self.bias.as_ref().map(|b| b.view());
        plan.forward(
            (x, self.weight.view(), bias),
            y.view_mut(),
            &mut self.workspace,
        );
        match &mut self.input {
            Some(cached) if cached.shape() == x.shape() => cached.assign(&x),
            cached => *cached = Some(x.as_standard_layout().into_owned()),
        }
        Ok(y)
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
    ) -> Result<Array4<T>, ConvError> {
        let dy = rank4(dy, Operand::OutputGradient)?;
        let x = self
            .input
            .as_ref()
            .ok_or(ConvError::BackwardBeforeForward)?;
        let shape = input_shape(&x.view());
        let plan = match self.plan {
            Some(plan) if plan.geometry.input_shape() == shape => plan,
            _ => Plan::new(&self.spec, shape, self.algorithm, &mut self.workspace)?,
        };
        expect_shape(
            Operand::OutputGradient,
            &plan.geometry.output_shape(),
            dy.shape(),
        )?;
        let mut dx = zeroed(plan.geometry.input_shape());
        let (dw_step, db_step) = &mut self.step;
        let grads = GradientsMut {
            dx: dx.view_mut(),
            dw: dw_step.view_mut(),
            db: db_step.view_mut(),
        };
        plan.backward(
            (x.view(), self.weight.view(), dy),
            grads,
            &mut self.workspace,
        );
        self.weight_grad += &*dw_step;
        if let Some(bias_grad) = &mut self.bias_grad {
            *bias_grad += &*db_step;
        }
        Ok(dx)
    }

    /// The plan for inputs of `shape`: the kept one if made for it, else a
    /// new one, kept in its place.
    fn plan_for(&mut self, shape: [usize; 4]) -> Result<Plan, ConvError> {
        match self.plan {
            Some(plan) if plan.geometry.input_shape() == shape => Ok(plan),
            _ => {
                let plan = Plan::new(&self.spec, shape, self.algorithm, &mut self.workspace)?;
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
    pub fn spec(&self) -> &Conv2dSpec {
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

    /// The weight, `[out_channels, in_channels / groups, kh, kw]`.
    ///
    /// ```
    /// # use gemmconv::{Conv2d, Conv2dSpec};
    /// # use gemmconv::ndarray::Array4;
    /// let spec = Conv2dSpec::new(1, 1, (1, 1)).bias(false);
    /// let layer = Conv2d::from_weights(spec, Array4::<f64>::ones((1, 1, 1, 1)), None)?;
    /// assert_eq!(layer.weight()[[0, 0, 0, 0]], 1.0);
    /// # Ok::<(), gemmconv::ConvError>(())
    /// ```
    pub fn weight(&self) -> &Array4<T> {
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
    pub fn weight_mut(&mut self) -> ndarray::ArrayViewMut4<'_, T> {
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
    pub fn bias_mut(&mut self) -> Option<ndarray::ArrayViewMut1<'_, T>> {
        self.bias.as_mut().map(|b| b.view_mut())
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
    pub fn weight_grad(&self) -> &Array4<T> {
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
