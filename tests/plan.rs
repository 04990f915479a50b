//! Plans: errors for operands that do not match, the choice they report,
//! and the same results as the functional calls.

mod common;

use common::{random_array1, random_array4, rng};
use gemmconv::ndarray::{Array1, Array3, Array4};
use gemmconv::{
    Algorithm, Conv2dPlan, Conv2dSpec, ConvError, Gradients, Kernel, Operand, Workspace, conv2d,
    conv2d_backward,
};

fn spec() -> Conv2dSpec {
    Conv2dSpec::new(4, 6, (3, 3)).padding((1, 1)).stride((2, 1))
}

/// Every operand whose shape differs from the plan's is an error naming it,
/// and nothing is computed.
#[test]
fn operands_that_do_not_match_the_plan_are_errors() {
    let mut rng = rng(21);
    let spec = spec();
    let input = [2, 4, 9, 7];
    let mut plan = Conv2dPlan::<f64>::new(&spec, input, Algorithm::Strided).unwrap();
    let x = random_array4::<f64>(&mut rng, input);
    let w = random_array4::<f64>(&mut rng, spec.weight_shape());
    let b = random_array1::<f64>(&mut rng, 6);
    let dy = random_array4::<f64>(&mut rng, plan.output_shape());
    let other_x = random_array4::<f64>(&mut rng, [3, 4, 9, 7]);
    let mismatch = |r: Result<_, ConvError>, operand: Operand| match r {
        Err(ConvError::ShapeMismatch { operand: o, .. }) => assert_eq!(o, operand),
        other => panic!("expected a {operand:?} mismatch, got {other:?}"),
    };
    mismatch(
        plan.forward(other_x.view(), w.view(), Some(b.view()))
            .map(|_| ()),
        Operand::Input,
    );
    let other_w = Array4::<f64>::zeros((6, 4, 3, 2));
    mismatch(
        plan.forward(x.view(), other_w.view(), Some(b.view()))
            .map(|_| ()),
        Operand::Weight,
    );
    let short_b = Array1::<f64>::zeros(5);
    mismatch(
        plan.forward(x.view(), w.view(), Some(short_b.view()))
            .map(|_| ()),
        Operand::Bias,
    );
    assert!(matches!(
        plan.forward(x.view(), w.view(), None),
        Err(ConvError::BiasPresence { expected: true })
    ));
    let mut y = Array4::<f64>::zeros((2, 6, 5, 6));
    mismatch(
        plan.forward_into(x.view(), w.view(), Some(b.view()), y.view_mut()),
        Operand::Output,
    );
    let other_dy = Array4::<f64>::zeros((2, 6, 5, 6));
    mismatch(
        plan.backward(x.view(), w.view(), other_dy.view())
            .map(|_| ()),
        Operand::OutputGradient,
    );
    let mut g = Gradients {
        dx: Array4::zeros(input),
        dw: Array4::zeros((6, 4, 3, 3)),
        db: Array1::zeros(7),
    };
    mismatch(
        plan.backward_into(x.view(), w.view(), dy.view(), g.view_mut()),
        Operand::Output,
    );
    let rank3 = Array3::<f64>::zeros((4, 9, 7));
    assert!(matches!(
        plan.forward(rank3.view(), w.view(), Some(b.view())),
        Err(ConvError::Rank {
            operand: Operand::Input,
            ..
        })
    ));
    // The plan still runs after the errors.
    assert!(plan.forward(x.view(), w.view(), Some(b.view())).is_ok());
}

/// A plan gives what the functional calls give, with each kernel option,
/// and reports kernels that are resolved.
#[test]
fn plans_match_the_functional_calls() {
    let mut rng = rng(22);
    let spec = spec();
    let input = [3, 4, 11, 8];
    let x = random_array4::<f64>(&mut rng, input);
    let w = random_array4::<f64>(&mut rng, spec.weight_shape());
    let b = random_array1::<f64>(&mut rng, 6);
    let y_ref = conv2d(x.view(), w.view(), Some(b.view()), &spec, Algorithm::Naive).unwrap();
    let dy = random_array4::<f64>(&mut rng, y_ref.dim().into());
    let g_ref = conv2d_backward(x.view(), w.view(), dy.view(), &spec, Algorithm::Naive).unwrap();
    for kernel in [
        Kernel::Auto,
        Kernel::Measure,
        Kernel::Gemm,
        Kernel::Shifted,
        Kernel::Direct,
    ] {
        let ws = Workspace::new().with_kernel(kernel);
        let mut plan = Conv2dPlan::with_workspace(&spec, input, Algorithm::Strided, ws).unwrap();
        let (forward, backward) = plan.kernels();
        for resolved in [forward, backward] {
            assert!(
                !matches!(resolved, Kernel::Auto | Kernel::Measure),
                "{kernel:?}"
            );
        }
        let y = plan.forward(x.view(), w.view(), Some(b.view())).unwrap();
        let g = plan.backward(x.view(), w.view(), dy.view()).unwrap();
        common::assert_close(&y, &y_ref, &format!("{kernel:?} forward"));
        common::assert_close(&g.dx, &g_ref.dx, &format!("{kernel:?} dx"));
        common::assert_close(&g.dw, &g_ref.dw, &format!("{kernel:?} dw"));
        common::assert_close(&g.db, &g_ref.db, &format!("{kernel:?} db"));
    }
}

/// Measuring chooses once per geometry in a process: a second plan of the
/// same geometry reports the same kernels.
#[test]
fn measured_choices_are_kept() {
    let spec = Conv2dSpec::new(16, 16, (3, 3)).padding((1, 1));
    let plan = |_| {
        let ws = Workspace::<f32>::new().with_kernel(Kernel::Measure);
        Conv2dPlan::with_workspace(&spec, [2, 16, 12, 12], Algorithm::Strided, ws).unwrap()
    };
    assert_eq!(plan(0).kernels(), plan(1).kernels());
}
