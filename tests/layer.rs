//! The `Conv2d` layer: initialisation, gradient accumulation, agreement with
//! the functional API.

mod common;

use common::{assert_close, random_array4, rng};
use gemmconv::{Algorithm, Conv2d, Conv2dSpec, conv2d, conv2d_backward};

#[test]
fn kaiming_init_has_the_right_scale_and_is_seeded() {
    let spec = Conv2dSpec::new(16, 64, (3, 3));
    let a = Conv2d::<f64>::new_kaiming(spec.clone(), &mut rng(5)).unwrap();
    let b = Conv2d::<f64>::new_kaiming(spec.clone(), &mut rng(5)).unwrap();
    let c = Conv2d::<f64>::new_kaiming(spec, &mut rng(6)).unwrap();
    assert_eq!(a.weight(), b.weight());
    assert_ne!(a.weight(), c.weight());
    let w = a.weight();
    let n = w.len() as f64;
    let mean = w.sum() / n;
    let var = w.mapv(|v| (v - mean) * (v - mean)).sum() / n;
    let expected = 2.0 / (16.0 * 9.0);
    // 9216 samples: the sample variance is within a few percent of the truth.
    assert!(
        (var / expected - 1.0).abs() < 0.1,
        "variance {var} vs {expected}"
    );
    assert!(mean.abs() < 0.01, "mean {mean}");
    assert!(a.bias().unwrap().iter().all(|&v| v == 0.0));
}

#[test]
fn layer_matches_functional_and_accumulates_gradients() {
    let mut rng = rng(9);
    let spec = Conv2dSpec::new(4, 6, (3, 3))
        .stride((2, 1))
        .padding((1, 1))
        .groups(2);
    let mut layer = Conv2d::<f32>::new_kaiming(spec.clone(), &mut rng).unwrap();
    let x = random_array4::<f32>(&mut rng, [3, 4, 9, 8]);
    let y = layer.forward(x.view()).unwrap();
    let b = layer.bias().unwrap().clone();
    let y_ref = conv2d(
        x.view(),
        layer.weight().view(),
        Some(b.view()),
        &spec,
        Algorithm::Naive,
    )
    .unwrap();
    assert_close(&y, &y_ref, "layer forward");

    let dy = random_array4::<f32>(&mut rng, [3, 6, 5, 8]);
    let g = conv2d_backward(
        x.view(),
        layer.weight().view(),
        dy.view(),
        &spec,
        Algorithm::Naive,
    )
    .unwrap();
    let dx = layer.backward(dy.view()).unwrap();
    assert_close(&dx, &g.dx, "layer dx");
    assert_close(layer.weight_grad(), &g.dw, "layer dw");
    assert_close(layer.bias_grad().unwrap(), &g.db, "layer db");

    layer.backward(dy.view()).unwrap();
    assert_close(layer.weight_grad(), &(&g.dw * 2.0), "accumulated dw");
    assert_close(layer.bias_grad().unwrap(), &(&g.db * 2.0), "accumulated db");

    layer.zero_grad();
    assert!(layer.weight_grad().iter().all(|&v| v == 0.0));
    assert!(layer.bias_grad().unwrap().iter().all(|&v| v == 0.0));
}

#[test]
fn backward_uses_the_latest_forward_input() {
    let mut rng = rng(10);
    let spec = Conv2dSpec::new(2, 2, (2, 2)).bias(false);
    let mut layer = Conv2d::<f64>::new_kaiming(spec.clone(), &mut rng).unwrap();
    let first = random_array4::<f64>(&mut rng, [1, 2, 4, 4]);
    let second = random_array4::<f64>(&mut rng, [1, 2, 4, 4]);
    layer.forward(first.view()).unwrap();
    layer.forward(second.view()).unwrap();
    let dy = random_array4::<f64>(&mut rng, [1, 2, 3, 3]);
    layer.backward(dy.view()).unwrap();
    let g = conv2d_backward(
        second.view(),
        layer.weight().view(),
        dy.view(),
        &spec,
        Algorithm::Naive,
    )
    .unwrap();
    assert_close(layer.weight_grad(), &g.dw, "dw from the second input");
}

/// The column cap holds for an image whose one-sample column matrix would
/// take 151 MB: the workspace stays within the cap plus a few image-sized
/// buffers, forward and backward, and the result still matches a run with
/// an unbounded workspace.
#[test]
fn column_cap_bounds_the_workspace_of_a_large_image() {
    use gemmconv::{Workspace, conv2d_backward_with_workspace, conv2d_with_workspace};
    let mut rng = rng(11);
    let spec = Conv2dSpec::new(8, 8, (3, 3)).padding((1, 1)).bias(false);
    let input = [1, 8, 512, 512];
    let x = random_array4::<f64>(&mut rng, input);
    let w = random_array4::<f64>(&mut rng, spec.weight_shape());
    let dy = random_array4::<f64>(&mut rng, input);
    let cap = 1 << 20;
    let mut capped = Workspace::new().with_column_cap_bytes(cap);
    let y = conv2d_with_workspace(
        x.view(),
        w.view(),
        None,
        &spec,
        Algorithm::Strided,
        &mut capped,
    )
    .unwrap();
    let g = conv2d_backward_with_workspace(
        x.view(),
        w.view(),
        dy.view(),
        &spec,
        Algorithm::Strided,
        &mut capped,
    )
    .unwrap();
    // One image is 16 MiB; the columns of one sample would be 144 MiB.
    let image_bytes = input.iter().product::<usize>() * 8;
    let columns_unbounded = 8 * 9 * 512 * 512 * 8;
    let held = capped.allocated_bytes();
    // Per lane (one a thread of the pool): the padded input, the padded
    // input gradient, its band's contribution to the sample's input
    // gradient, and room for buffers grown past their first size.
    let lanes = rayon::current_num_threads();
    assert!(
        held <= lanes * (cap + 4 * image_bytes),
        "capped workspace holds {held} bytes; cap {cap}, image {image_bytes}"
    );
    assert!(
        held < columns_unbounded,
        "{held} bytes is not below an unbounded column matrix"
    );

    let mut unbounded = Workspace::new().with_column_cap_bytes(usize::MAX);
    let y_ref = conv2d_with_workspace(
        x.view(),
        w.view(),
        None,
        &spec,
        Algorithm::Strided,
        &mut unbounded,
    )
    .unwrap();
    let g_ref = conv2d_backward_with_workspace(
        x.view(),
        w.view(),
        dy.view(),
        &spec,
        Algorithm::Strided,
        &mut unbounded,
    )
    .unwrap();
    assert!(unbounded.allocated_bytes() >= columns_unbounded);
    assert_close(&y, &y_ref, "capped forward");
    assert_close(&g.dx, &g_ref.dx, "capped dx");
    assert_close(&g.dw, &g_ref.dw, "capped dw");
}
