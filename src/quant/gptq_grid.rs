//! INT4 on the GPTQ grid: `w = d * (q - z)` per group of a row, `d` an f16 scale and `z` an
//! integer zero point, the form GPTQ checkpoints store (and other engines read). flint's own
//! quantizer ([`PackedMatrix::quantize_int4`]) fits a free f16 offset instead, which GPTQ
//! cannot hold; this one writes what `flint quantize` puts in a GPTQ checkpoint, and
//! [`GptqMatrix::to_packed`] gives exactly the matrix flint's GPTQ reader builds from that file.

use super::packed::{exact_f16, nibble_word, pack_f16_pair, Format, PackedMatrix};
use super::quantize::{alternate, Fit, INT4_GROUP_SIZES};
use crate::{Error, Result};
use half::f16;

/// Zero points stay in 1..=15: GPTQ's original ("v1") format stores `z - 1` in a nibble, and
/// readers that convert it add 1 per nibble with carries, so `z = 0` would not survive them.
pub const MIN_ZERO: u8 = 1;
pub const MAX_ZERO: u8 = 15;

/// Refinement rounds after the min/max start (they stop early once the q's settle).
const ROUNDS: usize = 8;

/// A matrix quantized on the GPTQ grid, `[rows, cols]` with rows = outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct GptqMatrix {
    pub rows: usize,
    pub cols: usize,
    pub group: usize,
    /// Eight q's per u32 along a row, low nibble first (as [`PackedMatrix`]'s Int4).
    pub qs: Vec<u32>,
    /// Per (row, group), at `row * (cols / group) + group`.
    pub scales: Vec<f16>,
    pub zeros: Vec<u8>,
}

impl GptqMatrix {
    /// Quantizes `data` (`[rows, cols]` row-major) with groups of `group` consecutive elements
    /// of a row. Each group starts from min/max over the range widened to hold 0 (so a zero
    /// point exists), `d = (hi - lo) / 15`, `z = round(-lo / d)`; then alternates, as the
    /// least-squares fit does in [`PackedMatrix::quantize_int4`]: given the q's, the regression
    /// of x on q gives a line whose zero crossing, rounded, is `z`; with `z` fixed the best
    /// scale is `d = sum((q - z) x) / sum((q - z)^2)`; given `(d, z)` each q is
    /// `clamp(round(x / d) + z, 0, 15)`. Candidates are scored with `d` rounded to f16, and the
    /// group keeps the lowest squared error. A group of zeros gets `d = 0`, `z = 8`.
    ///
    /// Errors (`Error::Tensor`): a group size not in 32/64/128, `cols` not a multiple of it, a
    /// length mismatch, a value that is not finite or beyond the f16 range.
    pub fn quantize(rows: usize, cols: usize, data: &[f32], group: usize) -> Result<GptqMatrix> {
        let err = |p: String| Error::tensor(format!("GPTQ quantization of [{rows}, {cols}]"), p);
        if !INT4_GROUP_SIZES.contains(&group) {
            return Err(err(format!("group size {group} is not supported (32, 64 or 128 are)")));
        }
        if !cols.is_multiple_of(group) {
            return Err(err(format!("rows of {cols} inputs are not whole groups of {group}")));
        }
        if Some(data.len()) != rows.checked_mul(cols) {
            return Err(err(format!("{} values given", data.len())));
        }
        if let Some(k) = data.iter().position(|v| !v.is_finite() || v.abs() > f16::MAX.to_f32()) {
            return Err(err(format!(
                "value {} at row {}, column {} is outside the f16 range",
                data[k],
                k / cols,
                k % cols
            )));
        }
        let groups = rows * cols / group;
        let (mut qs, mut scales, mut zeros) =
            (Vec::with_capacity(rows * cols / 8), Vec::with_capacity(groups), Vec::with_capacity(groups));
        let mut q = vec![0u8; group];
        for x in data.chunks_exact(group) {
            let (d, z) = quantize_group(x, &mut q);
            scales.push(d);
            zeros.push(z);
            qs.extend(q.chunks_exact(8).map(nibble_word));
        }
        Ok(GptqMatrix { rows, cols, group, qs, scales, zeros })
    }

    /// The packed matrix the kernels read; see [`int4_from_zero_points`].
    pub fn to_packed(&self) -> Result<PackedMatrix> {
        let params = self.scales.iter().zip(&self.zeros).map(|(&d, &z)| (d, u32::from(z)));
        int4_from_zero_points(self.rows, self.cols, self.group, self.qs.clone(), params)
    }

    /// The values `d * (q - z)` (f32, exact), row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let per_row = self.cols / self.group;
        (0..self.rows * self.cols)
            .map(|i| {
                let (r, c) = (i / self.cols, i % self.cols);
                let q = (self.qs[i / 8] >> (4 * (i % 8))) & 15;
                let g = r * per_row + c / self.group;
                self.scales[g].to_f32() * (q as f32 - f32::from(self.zeros[g]))
            })
            .collect()
    }
}

/// `Int4 { group }` from row-packed q's and one `(d, z)` per (row, group) in row-major order:
/// narrow f16 pairs `(d, -8d)` when every zero point is 8 and `-8d` is an f16, else wide f32
/// pairs `(d, -(d * z))`. Either way `d * q + m` is exactly `d * (q - z)` in f32 (`d` has 11
/// significant bits and `q`, `z` at most 5, so every product is exact). The GPTQ reader and
/// [`GptqMatrix::to_packed`] both build their matrices here, so a written and re-read
/// checkpoint gives the very same matrix.
pub fn int4_from_zero_points(
    rows: usize,
    cols: usize,
    group: usize,
    qs: Vec<u32>,
    params: impl Iterator<Item = (f16, u32)> + Clone,
) -> Result<PackedMatrix> {
    let narrow: Option<Vec<u32>> = params
        .clone()
        .map(|(d, zero)| {
            let m = exact_f16(-8.0 * d.to_f32()).filter(|_| zero == 8)?;
            Some(pack_f16_pair(d, m))
        })
        .collect();
    let (wide_scales, scales) = match narrow {
        Some(scales) => (false, scales),
        None => (
            true,
            params
                .flat_map(|(d, zero)| {
                    let d = d.to_f32();
                    [d.to_bits(), (-(d * zero as f32)).to_bits()]
                })
                .collect(),
        ),
    };
    PackedMatrix::new(rows, cols, Format::Int4 { group, wide_scales }, qs, scales)
}

/// `clamp(round(x / d) + z, 0, 15)` for each x, and the squared error of `d * (q - z)`.
fn score(x: &[f32], d: f16, z: u8, q: &mut [u8]) -> f64 {
    let (df, zf) = (d.to_f32(), f32::from(z));
    let mut err = 0.0f64;
    for (qi, &xi) in q.iter_mut().zip(x) {
        *qi = if df > 0.0 { ((xi / df).round() + zf).clamp(0.0, 15.0) as u8 } else { z };
        let w = df * (f32::from(*qi) - zf);
        err += (f64::from(xi) - f64::from(w)).powi(2);
    }
    err
}

fn clamp_zero(z: f64) -> u8 {
    z.round().clamp(f64::from(MIN_ZERO), f64::from(MAX_ZERO)) as u8
}

/// Fits one group (see [`GptqMatrix::quantize`]); writes its q's and returns `(d, z)`.
fn quantize_group(x: &[f32], q_out: &mut [u8]) -> (f16, u8) {
    let (lo, hi) = x.iter().fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if lo == hi {
        q_out.fill(8);
        return (f16::ZERO, 8);
    }
    let d0 = (f64::from(hi) - f64::from(lo)) / 15.0;
    let start = (f16::from_f64(d0), clamp_zero(-f64::from(lo) / d0));
    // The regression line's zero crossing gives z; with z fixed, least squares gives d.
    let fit = |q: &[u8]| {
        let line = Fit::new(q, x);
        let slope = line.slope().filter(|&s| s > 0.0)?;
        let z = clamp_zero(-line.intercept(slope) / slope);
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for (&qi, &xi) in q.iter().zip(x) {
            let c = f64::from(qi) - f64::from(z);
            num += c * f64::from(xi);
            den += c * c;
        }
        (den > 0.0 && num > 0.0).then(|| (f16::from_f64(num / den), z))
    };
    alternate(q_out, start, ROUNDS, fit, |(d, z), q| score(x, d, z, q))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_values_equal_the_grid_values() {
        let data: Vec<f32> = (0..4 * 64).map(|i| ((i * 37 % 101) as f32 - 40.0) * 0.013).collect();
        let m = GptqMatrix::quantize(4, 64, &data, 32).unwrap();
        assert!(m.zeros.iter().all(|z| (MIN_ZERO..=MAX_ZERO).contains(z)));
        assert_eq!(m.to_packed().unwrap().dequantize(), m.dequantize());
        // The min/max start puts every element within one step d0 = range / 15 of the grid
        // (rounding the zero point shifts the grid by at most d0 / 2, f16 rounding of d adds
        // 2^-11 relative); the kept candidate never has more squared error than the start.
        let dequantized = m.dequantize();
        for (x, w) in data.chunks(32).zip(dequantized.chunks(32)) {
            let range = x.iter().fold(0f32, |a, &v| a.max(v)) - x.iter().fold(0f32, |a, &v| a.min(v));
            let d0 = f64::from(range) / 15.0 * 1.01;
            let se: f64 = x.iter().zip(w).map(|(a, b)| f64::from(a - b).powi(2)).sum();
            assert!(se <= 32.0 * d0 * d0, "squared error {se} over a group of range {range}");
        }
    }

    #[test]
    fn all_zero_groups_are_exact_and_narrow() {
        let m = GptqMatrix::quantize(2, 32, &[0.0; 64], 32).unwrap();
        let p = m.to_packed().unwrap();
        assert_eq!(p.format, Format::Int4 { group: 32, wide_scales: false });
        assert!(p.dequantize().iter().all(|&v| v == 0.0));
    }
}
