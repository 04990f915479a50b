//! Writing arrays as NumPy `.npy` files (format version 1.0), so another
//! framework (`benches/pytorch.py`) can check its results against ours on
//! exactly the same inputs.

use gemmconv::Element;
use gemmconv::ndarray::{ArrayBase, Data, Dimension};
use std::io::Write;
use std::path::Path;

/// Writes `array` to `path` in C order, little-endian, as `<f4` or `<f8`.
pub fn write<T: Element, S: Data<Elem = T>, D: Dimension>(
    path: &Path,
    array: &ArrayBase<S, D>,
) -> std::io::Result<()> {
    let single = T::NAME == "f32";
    let shape: String = array.shape().iter().map(|n| format!("{n}, ")).collect();
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': ({shape}), }}",
        if single { "<f4" } else { "<f8" }
    );
    // The magic string, version and length take 10 bytes; the format wants
    // the data to start on a multiple of 64, after a newline.
    let unpadded = 10 + header.len() + 1;
    header.extend(std::iter::repeat_n(
        ' ',
        unpadded.next_multiple_of(64) - unpadded,
    ));
    header.push('\n');
    let header_len = u16::try_from(header.len())
        .map_err(|_| std::io::Error::other("npy header longer than 65535 bytes"))?;

    let mut bytes = Vec::with_capacity(10 + header.len() + array.len() * 8);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&header_len.to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    // `iter` walks in logical (C) order whatever the memory layout.
    for v in array.iter() {
        if single {
            bytes.extend_from_slice(&(v.into_f64() as f32).to_le_bytes());
        } else {
            bytes.extend_from_slice(&v.into_f64().to_le_bytes());
        }
    }
    std::fs::File::create(path)?.write_all(&bytes)
}
