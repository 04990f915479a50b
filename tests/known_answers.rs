//! Cases worked by hand, and the notebook's workload.

mod common;

use common::assert_close;
use gemmconv::ndarray::{Array1, Array4, array};
use gemmconv::{Algorithm, Conv2d, Conv2dSpec, conv2d, conv2d_backward};

/// x = [[1,2,3],[4,5,6],[7,8,9]], w = [[1,2],[3,4]].
fn small() -> (Array4<f64>, Array4<f64>) {
    let x = Array4::from_shape_vec((1, 1, 3, 3), (1..=9).map(f64::from).collect()).unwrap();
    let w = Array4::from_shape_vec((1, 1, 2, 2), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    (x, w)
}

#[test]
fn stride_one_by_hand() {
    let (x, w) = small();
    let spec = Conv2dSpec::new(1, 1, (2, 2));
    let b = array![0.5];
    // y[0,0] = 1·1 + 2·2 + 4·3 + 5·4 = 37, and so on, plus the bias.
    let y_want = array![[[[37.5, 47.5], [67.5, 77.5]]]];
    // With dy = 1: dW[i,j] = sum of the x under tap (i,j); dX[h,w] = sum of
    // the taps that touch (h,w); db = number of outputs.
    let dw_want = array![[[[12.0, 16.0], [24.0, 28.0]]]];
    let dx_want = array![[[[1.0, 3.0, 2.0], [4.0, 10.0, 6.0], [3.0, 7.0, 4.0]]]];
    let dy = Array4::ones((1, 1, 2, 2));
    for algo in Algorithm::ALL {
        let y = conv2d(x.view(), w.view(), Some(b.view()), &spec, algo).unwrap();
        assert_eq!(y, y_want, "{algo:?} forward");
        let g = conv2d_backward(x.view(), w.view(), dy.view(), &spec, algo).unwrap();
        assert_eq!(g.dw, dw_want, "{algo:?} dw");
        assert_eq!(g.dx, dx_want, "{algo:?} dx");
        assert_eq!(g.db, array![4.0], "{algo:?} db");
    }
}

/// Stride 2 with padding 1: the 2x2 windows tile the padded 4x4 corner
/// without overlap, so each input pixel meets exactly one tap. This is the
/// case the notebook's padded-error dX gets wrong.
#[test]
fn stride_two_padding_one_by_hand() {
    let (x, w) = small();
    let spec = Conv2dSpec::new(1, 1, (2, 2))
        .stride((2, 2))
        .padding((1, 1))
        .bias(false);
    // Window (0,0) sees only x[0,0] under tap (1,1): 1·4 = 4.
    // Window (0,1): x[0,1]·3 + x[0,2]·4 = 18. Window (1,0): x[1,0]·2 + x[2,0]·4 = 36.
    // Window (1,1): 5·1 + 6·2 + 8·3 + 9·4 = 77.
    let y_want = array![[[[4.0, 18.0], [36.0, 77.0]]]];
    let dx_want = array![[[[4.0, 3.0, 4.0], [2.0, 1.0, 2.0], [4.0, 3.0, 4.0]]]];
    let dw_want = array![[[[5.0, 10.0], [10.0, 20.0]]]];
    let dy = Array4::ones((1, 1, 2, 2));
    for algo in Algorithm::ALL {
        let y = conv2d(x.view(), w.view(), None, &spec, algo).unwrap();
        assert_eq!(y, y_want, "{algo:?} forward");
        let g = conv2d_backward(x.view(), w.view(), dy.view(), &spec, algo).unwrap();
        assert_eq!(g.dx, dx_want, "{algo:?} dx");
        assert_eq!(g.dw, dw_want, "{algo:?} dw");
    }
}

/// Two groups with different weights: channel 0 feeds output 0 only,
/// channel 1 output 1 only.
#[test]
fn groups_keep_channels_apart_by_hand() {
    let x = Array4::from_shape_vec((1, 2, 1, 2), vec![1.0, 2.0, 10.0, 20.0]).unwrap();
    let w = Array4::from_shape_vec((2, 1, 1, 1), vec![3.0, -1.0]).unwrap();
    let spec = Conv2dSpec::new(2, 2, (1, 1)).groups(2).bias(false);
    for algo in Algorithm::ALL {
        let y = conv2d(x.view(), w.view(), None, &spec, algo).unwrap();
        assert_eq!(y, array![[[[3.0, 6.0]], [[-10.0, -20.0]]]], "{algo:?}");
    }
}

/// The notebook's workload: `image = arange(28·28·16).reshape(16,1,28,28)`
/// through `Conv(1, 6, 5)`, float64; all algorithms agree, forward and
/// backward (with the output as the error, as the notebook times it).
#[test]
fn notebook_workload_all_algorithms_agree() {
    let image = Array4::from_shape_vec(
        (16, 1, 28, 28),
        (0..28 * 28 * 16).map(|v| v as f64).collect(),
    )
    .unwrap();
    let spec = Conv2dSpec::new(1, 6, (5, 5));
    let mut rng = common::rng(2024);
    let w = common::random_array4::<f64>(&mut rng, spec.weight_shape());
    let b: Array1<f64> = common::random_array1(&mut rng, 6);
    let mut layers: Vec<Conv2d<f64>> = Algorithm::ALL
        .iter()
        .map(|&algo| {
            Conv2d::from_weights(spec.clone(), w.clone(), Some(b.clone()))
                .unwrap()
                .with_algorithm(algo)
        })
        .collect();
    let outputs: Vec<_> = layers
        .iter_mut()
        .map(|l| l.forward(image.view()).unwrap())
        .collect();
    assert_eq!(outputs[0].shape(), &[16, 6, 24, 24]);
    let dxs: Vec<_> = layers
        .iter_mut()
        .zip(&outputs)
        .map(|(l, y)| l.backward(y.view()).unwrap())
        .collect();
    for i in 1..3 {
        assert_close(&outputs[i], &outputs[0], "notebook forward");
        assert_close(&dxs[i], &dxs[0], "notebook dx");
        assert_close(
            layers[i].weight_grad(),
            layers[0].weight_grad(),
            "notebook dw",
        );
        assert_close(
            layers[i].bias_grad().unwrap(),
            layers[0].bias_grad().unwrap(),
            "notebook db",
        );
    }
}
