//! The operands of one pass, validated against their geometry: what every
//! algorithm and kernel receives, besides where to write and its memory.

use crate::spec::Geometry;
use ndarray::{ArrayView1, ArrayView4};

/// The operands of a forward pass: input, weight, optional bias.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Forward<'a, T> {
    pub x: ArrayView4<'a, T>,
    pub w: ArrayView4<'a, T>,
    pub bias: Option<ArrayView1<'a, T>>,
    pub g: &'a Geometry,
}

/// The operands of a backward pass: input, weight, output gradient.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backward<'a, T> {
    pub x: ArrayView4<'a, T>,
    pub w: ArrayView4<'a, T>,
    pub dy: ArrayView4<'a, T>,
    pub g: &'a Geometry,
}
