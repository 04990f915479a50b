//! Results independent of the thread count: the forward pass and every
//! gradient of every operation, through every algorithm and kernel, are
//! equal bit for bit on pools of 1, 2, 3 and 8 threads, and from one run to
//! the next.
//!
//! The geometries are sized so that backward passes cut into several parts
//! and bands of one sample's rows (batch 1, large images), as well as whole
//! samples, since those are where a reduction order could follow the
//! thread count.
//!
//! The promise holds for the default GEMM (the `gemm` crate), whose result
//! for each element does not depend on the shape of the product it is part
//! of. A BLAS library rounds an element by the kernel that computes it,
//! which depends on the product's shape and the library's own threads, and
//! the forward pass cuts products by thread; so with a BLAS backend these
//! tests are not built (README.md, "Guarantees").

#![cfg(not(feature = "_blas"))]

mod common;

use common::{Operands, configurations, random_array1, random_array4, rng};
use gemmconv::ndarray::{Array, Dimension, Ix3, Ix4};
use gemmconv::{
    Conv1dSpec, Conv2dSpec, ConvTranspose2dSpec, Element, Layer, Operation, PaddingMode,
};
use rayon::ThreadPool;

/// The thread counts compared.
const THREADS: [usize; 4] = [1, 2, 3, 8];

/// What one run computes: output, then each gradient, as `f64` bit patterns
/// (exact for both element types).
type Bits = [Vec<u64>; 4];

fn bits<T: Element, D: Dimension>(a: &Array<T, D>) -> Vec<u64> {
    a.iter().map(|v| v.into_f64().to_bits()).collect()
}

/// One layer's forward, inference and backward passes on `pool`.
fn run<T: Element, S: Operation>(
    pool: &ThreadPool,
    layer: &Layer<T, S>,
    x: &Array<T, S::Dim>,
    dy: &Array<T, S::Dim>,
) -> Bits {
    pool.install(|| {
        let mut layer = layer.clone();
        let inferred = layer.infer(x.view()).unwrap();
        let y = layer.forward(x.view()).unwrap();
        assert_eq!(bits(&inferred), bits(&y), "inference and training forward");
        let dx = layer.backward(dy.view()).unwrap();
        let db = layer.bias_grad().map(bits).unwrap_or_default();
        [bits(&y), bits(&dx), bits(layer.weight_grad()), db]
    })
}

/// Runs every configuration of the operation on every pool twice and
/// compares each result with the first run on one thread.
fn check<T: Element, S: Operation>(
    pools: &[ThreadPool],
    spec: S,
    (x, w, b, dy): Operands<T, S::Dim>,
    what: &str,
) {
    const NAMES: [&str; 4] = ["y", "dx", "dw", "db"];
    for (algorithm, ws, label) in configurations::<T>() {
        let layer = Layer::from_weights(spec.clone(), w.clone(), Some(b.clone()))
            .unwrap()
            .with_algorithm(algorithm)
            .with_workspace(ws);
        let first = run(&pools[0], &layer, &x, &dy);
        for (pool, threads) in pools.iter().zip(THREADS) {
            for repeat in 0..2 {
                let again = run(pool, &layer, &x, &dy);
                for (k, name) in NAMES.iter().enumerate() {
                    assert!(
                        again[k] == first[k],
                        "{what} ({}), {label}: {name} on {threads} threads (run {repeat}) \
                         differs from 1 thread",
                        T::NAME
                    );
                }
            }
        }
    }
}

fn pools() -> Vec<ThreadPool> {
    THREADS
        .iter()
        .map(|&n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        })
        .collect()
}

/// Random operands of a 2-D operation.
fn operands4<T: Element>(
    (input, weight, output): ([usize; 4], [usize; 4], [usize; 4]),
    seed: u64,
) -> Operands<T, Ix4> {
    let mut rng = rng(seed);
    (
        random_array4(&mut rng, input),
        random_array4(&mut rng, weight),
        random_array1(&mut rng, output[1]),
        random_array4(&mut rng, output),
    )
}

fn conv2d_cases() -> Vec<(Conv2dSpec, [usize; 4], &'static str)> {
    vec![
        (
            Conv2dSpec::new(4, 6, (3, 3)).padding((1, 1)),
            [1, 4, 70, 66],
            "3x3 on one large image",
        ),
        (
            Conv2dSpec::new(32, 32, (3, 3)).padding((1, 1)),
            [1, 32, 40, 36],
            "Winograd on one image, its bands holding the rows they reach",
        ),
        (
            Conv2dSpec::new(6, 4, (3, 3))
                .padding((1, 1))
                .dilation((2, 2)),
            [3, 6, 37, 41],
            "dilated 3x3, batch 3",
        ),
        (
            Conv2dSpec::new(6, 8, (5, 5))
                .stride((2, 2))
                .padding((2, 1))
                .groups(2),
            [2, 6, 61, 59],
            "grouped 5x5 stride 2",
        ),
        (
            Conv2dSpec::new(8, 8, (3, 3)).padding((1, 1)).groups(8),
            [1, 8, 80, 72],
            "depthwise on one large image",
        ),
        (
            Conv2dSpec::new(80, 80, (3, 3))
                .stride((2, 2))
                .padding((1, 1))
                .groups(80),
            [1, 80, 24, 26],
            "depthwise at stride 2 on 80 channels, in blocks of channels or bands of rows",
        ),
        (
            Conv2dSpec::new(8, 16, (1, 1)),
            [5, 8, 33, 31],
            "1x1, batch 5",
        ),
        (
            Conv2dSpec::new(24, 80, (3, 3)).padding((1, 1)),
            [1, 24, 7, 7],
            "one 7x7 image in blocks of channels, its GEMMs' last column split off",
        ),
        (
            Conv2dSpec::new(8, 96, (3, 3)).padding((1, 1)),
            [3, 8, 9, 9],
            "three 9x9 images in blocks of channels, one a tile, its GEMMs' last column split off",
        ),
        (
            Conv2dSpec::new(8, 96, (3, 3)).padding((1, 1)),
            [3, 8, 7, 7],
            "three 7x7 images in blocks of channels, one a tile, its GEMMs' last column split off",
        ),
        (
            Conv2dSpec::new(128, 128, (1, 1)).stride((2, 2)),
            [1, 128, 27, 27],
            "one sample with more output pixels than output channels in blocks of channels",
        ),
        (
            Conv2dSpec::new(8, 96, (3, 3)).padding((1, 1)),
            [3, 8, 6, 6],
            "three 6x6 images in blocks of channels, two a tile where the lanes' shares allow",
        ),
        (
            Conv2dSpec::new(128, 512, (3, 3)).padding((1, 1)),
            [3, 128, 4, 5],
            "three 4x5 images in blocks of channels, gathered into a tile where the lanes' \
             shares allow, products deeper than the GEMM's blocks",
        ),
        (
            Conv2dSpec::new(128, 512, (3, 3)).padding((1, 1)),
            [3, 128, 7, 7],
            "three 7x7 images with more output channels than the batch has pixels, \
             backward in blocks of channels on the batch lowered once",
        ),
        (
            Conv2dSpec::new(3, 5, (3, 3))
                .padding((2, 1))
                .padding_mode(PaddingMode::Reflect),
            [1, 3, 64, 70],
            "reflect-padded 3x3",
        ),
    ]
}

fn conv2d_all<T: Element>(pools: &[ThreadPool]) {
    for (index, (spec, input, what)) in conv2d_cases().into_iter().enumerate() {
        let shapes = (
            input,
            spec.weight_shape(),
            spec.output_shape(input).unwrap(),
        );
        let operands = operands4::<T>(shapes, index as u64);
        check(pools, spec, operands, what);
    }
}

#[test]
fn conv2d_is_the_same_on_any_thread_count_f32() {
    conv2d_all::<f32>(&pools());
}

#[test]
fn conv2d_is_the_same_on_any_thread_count_f64() {
    conv2d_all::<f64>(&pools());
}

#[test]
fn transposed_and_1d_convolutions_are_the_same_on_any_thread_count() {
    let pools = pools();
    let spec = ConvTranspose2dSpec::new(6, 4, (3, 3))
        .stride((2, 2))
        .padding((1, 1))
        .output_padding((1, 0));
    let input = [1, 6, 36, 34];
    let shapes = (
        input,
        spec.weight_shape(),
        spec.output_shape(input).unwrap(),
    );
    let operands = operands4::<f32>(shapes, 11);
    check(&pools, spec, operands, "transposed 3x3 stride 2");

    let spec = Conv1dSpec::new(4, 6, 5).padding(2).dilation(2);
    let (input, output) = ([2, 4, 3000], [2, 6, 2996]);
    assert_eq!(spec.output_shape(input).unwrap(), output);
    let mut rng = rng(12);
    let to3 = |a: Array<f64, Ix4>| -> Array<f64, Ix3> {
        let (n, c, _, l) = a.dim();
        a.into_shape_with_order((n, c, l)).unwrap()
    };
    let x = to3(random_array4(&mut rng, [input[0], input[1], 1, input[2]]));
    let w = to3(random_array4(&mut rng, [6, 4, 1, 5]));
    let b = random_array1(&mut rng, 6);
    let dy = to3(random_array4(
        &mut rng,
        [output[0], output[1], 1, output[2]],
    ));
    check(&pools, spec, (x, w, b, dy), "1-D, dilated");
}
