//! The UCI handwritten digits (`examples/data/digits.csv.gz`): reading them,
//! with errors that name the line, and a stratified train/test split.

use flate2::read::GzDecoder;
use gemmconv::ndarray::Array4;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::fmt;
use std::io::Read;
use std::path::Path;

/// Pixels a digit (8x8) and values a line (the pixels, then the label).
const PIXELS: usize = 64;

/// Images `[n, 1, 8, 8]` scaled to [0, 1], and their labels 0..=9.
pub struct Digits {
    pub images: Array4<f32>,
    pub labels: Vec<usize>,
}

/// Why the data could not be read.
#[derive(Debug)]
pub enum DataError {
    /// The file could not be opened or decompressed.
    Io(std::io::Error),
    /// A line is not 64 pixels of 0..=16 and a label of 0..=9.
    Line { line: usize, message: String },
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::Io(e) => write!(f, "cannot read the digits: {e}"),
            DataError::Line { line, message } => write!(f, "line {line}: {message}"),
        }
    }
}

impl std::error::Error for DataError {}

/// Reads the gzipped CSV at `path`.
pub fn load(path: &Path) -> Result<Digits, DataError> {
    let mut text = String::new();
    GzDecoder::new(std::fs::File::open(path).map_err(DataError::Io)?)
        .read_to_string(&mut text)
        .map_err(DataError::Io)?;
    parse(&text)
}

/// Parses one digit a line: 64 pixel values 0..=16 in row-major order, then
/// the label 0..=9, comma-separated.
pub fn parse(text: &str) -> Result<Digits, DataError> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_error = |message: String| DataError::Line {
            line: index + 1,
            message,
        };
        let values: Vec<&str> = line.split(',').map(str::trim).collect();
        if values.len() != PIXELS + 1 {
            return Err(line_error(format!(
                "expected {} comma-separated values (64 pixels and a label), got {}",
                PIXELS + 1,
                values.len()
            )));
        }
        for (column, value) in values.iter().enumerate() {
            let max = if column < PIXELS { 16 } else { 9 };
            let what = if column < PIXELS { "pixel" } else { "label" };
            let parsed: usize = value.parse().map_err(|_| {
                line_error(format!(
                    "value {} ({what}) is {value:?}, not an integer",
                    column + 1
                ))
            })?;
            if parsed > max {
                return Err(line_error(format!(
                    "value {} ({what}) is {parsed}, above {max}",
                    column + 1
                )));
            }
            if column < PIXELS {
                pixels.push(parsed as f32 / 16.0);
            } else {
                labels.push(parsed);
            }
        }
    }
    let images = Array4::from_shape_vec((labels.len(), 1, 8, 8), pixels)
        .expect("64 pixels were read for every label");
    Ok(Digits { images, labels })
}

/// Indices of a stratified split: from each digit's images, `test_fraction`
/// of them (rounded) go to the test set, chosen by a generator seeded with
/// `seed`; both lists are shuffled.
pub fn stratified_split(
    labels: &[usize],
    test_fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for digit in 0..10 {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == digit).collect();
        shuffle(&mut members, &mut rng);
        let held_out = (members.len() as f64 * test_fraction).round() as usize;
        test.extend_from_slice(&members[..held_out]);
        train.extend_from_slice(&members[held_out..]);
    }
    shuffle(&mut train, &mut rng);
    shuffle(&mut test, &mut rng);
    (train, test)
}

/// Fisher-Yates.
pub fn shuffle(items: &mut [usize], rng: &mut StdRng) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.random_range(0..=i));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_line_names_its_number() {
        let good = format!("{},3", vec!["0"; 64].join(","));
        let short = vec!["0"; 60].join(",");
        let err = parse(&format!("{good}\n{short}\n")).err().unwrap();
        assert_eq!(
            err.to_string(),
            "line 2: expected 65 comma-separated values (64 pixels and a label), got 60"
        );
        let err = parse(&format!("{good}\n{good}\n{}", good.replace(",3", ",x")))
            .err()
            .unwrap();
        assert!(
            err.to_string().starts_with("line 3: value 65 (label)"),
            "{err}"
        );
    }
}
