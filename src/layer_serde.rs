//! Layers saved and restored with serde (the `serde` feature): the spec,
//! the algorithm and the parameters. Gradients, the kept input and the
//! workspace are state of a training step, not of the layer, and start
//! empty; a restored layer's parameters are checked against its spec.

use crate::algo::Algorithm;
use crate::element::Element;
use crate::layer::Layer;
use crate::operation::Operation;
use ndarray::{Array, Array1};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a layer saves, borrowed from it.
#[derive(Serialize)]
#[serde(bound(serialize = "T: Serialize, S: Serialize, S::Dim: Serialize"))]
struct Saved<'a, T, S: Operation> {
    spec: &'a S,
    algorithm: Algorithm,
    weight: &'a Array<T, S::Dim>,
    bias: Option<&'a Array1<T>>,
}

/// What a layer restores from.
#[derive(Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>, S: Deserialize<'de>, S::Dim: Deserialize<'de>"))]
struct Restored<T, S: Operation> {
    spec: S,
    algorithm: Algorithm,
    weight: Array<T, S::Dim>,
    bias: Option<Array1<T>>,
}

/// Saves the spec, the algorithm, the weight and the bias.
///
/// ```
/// use gemmconv::{Conv1d, Conv1dSpec};
/// use rand::SeedableRng;
/// let layer = Conv1d::<f32>::new_pytorch_default(Conv1dSpec::new(2, 3, 5), &mut rand::rngs::StdRng::seed_from_u64(0))?;
/// let json = serde_json::to_string(&layer).unwrap();
/// let restored: Conv1d<f32> = serde_json::from_str(&json).unwrap();
/// assert_eq!((restored.spec(), restored.weight(), restored.bias()), (layer.spec(), layer.weight(), layer.bias()));
/// # Ok::<(), gemmconv::ConvError>(())
/// ```
impl<T, S> Serialize for Layer<T, S>
where
    T: Element + Serialize,
    S: Operation + Serialize,
    S::Dim: Serialize,
{
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        Saved {
            spec: self.spec(),
            algorithm: self.algorithm(),
            weight: self.weight(),
            bias: self.bias(),
        }
        .serialize(serializer)
    }
}

/// Restores a layer, checking its parameters against its spec (a
/// mismatch is an error naming what was expected).
///
/// ```
/// use gemmconv::Conv2d;
/// let json = r#"{"spec":{"in_channels":1,"out_channels":1,"kernel":[1,1],"stride":[1,1],
///   "padding":{"top":0,"bottom":0,"left":0,"right":0},"dilation":[1,1],"groups":1,"bias":false},
///   "algorithm":"Strided","weight":{"v":1,"dim":[1,1,1,2],"data":[1.0,2.0]},"bias":null}"#;
/// let err = serde_json::from_str::<Conv2d<f64>>(json).unwrap_err();
/// assert!(err.to_string().contains("weight: expected shape [1, 1, 1, 1], got [1, 1, 1, 2]"));
/// ```
impl<'de, T, S> Deserialize<'de> for Layer<T, S>
where
    T: Element + Deserialize<'de>,
    S: Operation + Deserialize<'de>,
    S::Dim: Deserialize<'de>,
{
    fn deserialize<Z: Deserializer<'de>>(deserializer: Z) -> Result<Self, Z::Error> {
        let r = Restored::<T, S>::deserialize(deserializer)?;
        Layer::from_weights(r.spec, r.weight, r.bias)
            .map(|layer| layer.with_algorithm(r.algorithm))
            .map_err(serde::de::Error::custom)
    }
}
