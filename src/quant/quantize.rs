//! flint's own INT4 quantizer: f32 weights to `Format::Int4 { group, wide_scales: false }`.

use super::packed::{exact_f16, nibble_word, pack_f16_pair, Format, PackedMatrix};
use crate::{Error, Result};
use half::f16;

/// The group sizes [`PackedMatrix::quantize_int4`] accepts.
pub const INT4_GROUP_SIZES: [usize; 3] = [32, 64, 128];

/// Alternating-least-squares rounds after the min/max start; the iteration also stops as soon
/// as a round leaves every q unchanged.
pub const ALS_ROUNDS: usize = 8;

impl PackedMatrix {
    /// Quantizes `data` (`[rows, cols]` row-major) to INT4 with one f16 pair `(d, m)` per
    /// `group` consecutive elements of a row (`group` in [`INT4_GROUP_SIZES`]), `w = d * q + m`.
    ///
    /// ## Method
    /// Each group is fitted on its own, to minimise the squared error of the values the kernels
    /// will compute (`d * q + m` in f32 with the *stored* f16 `d` and `m`):
    /// 1. Start from min/max: `d = (max - min) / 15`, `m = min`.
    /// 2. Alternate (least squares): given the q's, the best `(d, m)` is the linear regression
    ///    of x on q (`d = cov(q, x) / var(q)`, `m = mean(x) - d * mean(q)`; `d = 0`,
    ///    `m = mean(x)` when every q is equal); given `(d, m)`, the best q is the grid point
    ///    nearest to each x, `clamp(round((x - m) / d), 0, 15)`. Stop after [`ALS_ROUNDS`] rounds
    ///    or when the q's stop changing.
    /// 3. Every candidate, the start included, is scored after rounding `d` and `m` to f16 and
    ///    re-rounding the q's for those stored values; the group keeps the lowest-error one.
    ///
    /// A constant group (all elements equal to c) gets `d = 0, m = c` when c is an f16, which
    /// is exact (so an all-zero group is exact, and no division by `d = 0` ever happens).
    /// Otherwise a search over q in 1..15 and the two f16 neighbours m of c, with
    /// `d = f16((c - m) / q)`, keeps the pair nearest to c. Not every f32 constant can be held:
    /// below 0.5 in magnitude every `d * q + m` is a multiple of 2^-24 (f16's finest step) and
    /// exact in f32, so c is exact if and only if it is such a multiple (q = 1, `m = f16(c)`,
    /// `d = c - m`, which is an f16 since |c - m| <= 2^-13); other constants come within 2^-25.
    ///
    /// ## Error bound
    /// Step 3 keeps a candidate only if it beats the min/max start, so each group's squared
    /// error is at most that of min/max with stored values `d' = f16(R / 15)`, `m' = f16(min)`
    /// (R = max - min). For those, the grid `m' + k d'` (k = 0..15) spans `[min, max]` up to
    /// the rounding of `m'` and `d'`, so every element is within `d' / 2` of a grid point or
    /// within `|m' - min| + 15 |d' - R / 15|` of an end of the grid, hence
    /// `|error| <= R / 30 * (1 + 2^-11) + 2^-11 * (|min| + R)` (f16 rounds to 11 significant
    /// bits), plus one f32 rounding of the result. That bounds the group's RMS error too.
    /// When each element's position inside its grid cell is uniform, the min/max error is
    /// uniform on `[-d / 2, d / 2]`, an RMS of `d / sqrt(12) = R / (15 sqrt(12))`; the least
    /// squares rounds only lower it (for Gaussian data they shrink the range, trading a little
    /// clipping of the two extremes for a finer grid over the bulk).
    ///
    /// Errors (`Error::Tensor`): a group size not in [`INT4_GROUP_SIZES`], `cols` not a
    /// multiple of it, a length mismatch, a non-finite value or one beyond the f16 range
    /// (|x| > 65504).
    pub fn quantize_int4(rows: usize, cols: usize, data: &[f32], group: usize) -> Result<PackedMatrix> {
        let err = |p: String| Error::tensor(format!("INT4 quantization of [{rows}, {cols}]"), p);
        if !INT4_GROUP_SIZES.contains(&group) {
            return Err(err(format!("group size {group} is not supported (32, 64 or 128 are)")));
        }
        let format = Format::Int4 { group, wide_scales: false };
        format.check_shape(rows, cols).map_err(err)?;
        if data.len() != rows * cols {
            return Err(err(format!("{} values given", data.len())));
        }
        let mut qs = Vec::with_capacity(rows * cols / 8);
        let mut scales = Vec::with_capacity(rows * cols / group);
        let mut q = [0u8; 128];
        for (i, x) in data.chunks_exact(group).enumerate() {
            if let Some(k) = x.iter().position(|v| !v.is_finite() || v.abs() > f16::MAX.to_f32()) {
                let e = i * group + k;
                return Err(err(format!(
                    "value {} at row {}, column {} is outside the f16 range",
                    x[k],
                    e / cols.max(1),
                    e % cols.max(1)
                )));
            }
            let (d, m) = quantize_group(x, &mut q[..group]);
            scales.push(pack_f16_pair(d, m));
            qs.extend(q[..group].chunks_exact(8).map(nibble_word));
        }
        PackedMatrix::new(rows, cols, format, qs, scales)
    }
}

/// The stored pair's squared error over `x`, with each q set to the grid point nearest its x.
fn score(x: &[f32], d: f16, m: f16, q: &mut [u8]) -> f64 {
    let (df, mf) = (d.to_f32(), m.to_f32());
    let mut err = 0.0f64;
    for (qi, &xi) in q.iter_mut().zip(x) {
        *qi = if df > 0.0 { ((xi - mf) / df).round().clamp(0.0, 15.0) as u8 } else { 0 };
        let w = df * f32::from(*qi) + mf;
        err += (f64::from(xi) - f64::from(w)).powi(2);
    }
    err
}

/// Fits one group (see [`PackedMatrix::quantize_int4`]); writes its q's and returns `(d, m)`.
fn quantize_group(x: &[f32], q_out: &mut [u8]) -> (f16, f16) {
    let (lo, hi) = x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if lo == hi {
        return constant_group(lo, q_out);
    }
    // 1. min/max; 2. the regression line of x on the latest q's; 3. scored as stored (f16).
    let start = (f16::from_f64((f64::from(hi) - f64::from(lo)) / 15.0), f16::from_f32(lo));
    let fit = |q: &[u8]| {
        let fit = Fit::new(q, x);
        let d = fit.slope().map_or(0.0, |s| s.max(0.0));
        Some((f16::from_f64(d), f16::from_f64(fit.intercept(d))))
    };
    alternate(q_out, start, ALS_ROUNDS, fit, |(d, m), q| score(x, d, m, q))
}

/// The sums of a least-squares line through the points `(q_i, x_i)`.
pub(crate) struct Fit {
    n: f64,
    sq: f64,
    sqq: f64,
    sx: f64,
    sqx: f64,
}

impl Fit {
    pub fn new(q: &[u8], x: &[f32]) -> Fit {
        let mut f = Fit { n: q.len() as f64, sq: 0.0, sqq: 0.0, sx: 0.0, sqx: 0.0 };
        for (&qi, &xi) in q.iter().zip(x) {
            let (qf, xf) = (f64::from(qi), f64::from(xi));
            f.sq += qf;
            f.sqq += qf * qf;
            f.sx += xf;
            f.sqx += qf * xf;
        }
        f
    }

    /// The slope; `None` when every q is the same.
    pub fn slope(&self) -> Option<f64> {
        let var = self.n * self.sqq - self.sq * self.sq;
        (var > 0.0).then(|| (self.n * self.sqx - self.sq * self.sx) / var)
    }

    /// The intercept of the line of `slope` through the mean point.
    pub fn intercept(&self, slope: f64) -> f64 {
        (self.sx - slope * self.sq) / self.n
    }
}

/// The alternating search both INT4 quantizers run. From `start`, `score` sets the q's nearest
/// to x for a candidate and returns its squared error; `fit` proposes the next candidate from
/// the latest q's (`None` ends the search). Runs at most `rounds` rounds, stopping once the q's
/// no longer change; the best candidate is returned and its q's are left in `q_out`.
pub(crate) fn alternate<P: Copy>(
    q_out: &mut [u8],
    start: P,
    rounds: usize,
    mut fit: impl FnMut(&[u8]) -> Option<P>,
    mut score: impl FnMut(P, &mut [u8]) -> f64,
) -> P {
    let (mut best, mut best_err) = (start, score(start, q_out));
    let mut q = q_out.to_vec();
    for _ in 0..rounds {
        let Some(candidate) = fit(&q) else { break };
        let previous = q.clone();
        let err = score(candidate, &mut q);
        if err < best_err {
            (best, best_err) = (candidate, err);
            q_out.copy_from_slice(&q);
        }
        if q == previous {
            break;
        }
    }
    best
}

/// A group whose elements all equal `c`: `(0, c)` when c is an f16, else the pair `(d, m)` and
/// common q with `d * q + m` (f32) nearest to c, searching q in 1..15 and m among c's two f16
/// neighbours, `d = f16((c - m) / q)`.
fn constant_group(c: f32, q_out: &mut [u8]) -> (f16, f16) {
    q_out.fill(0);
    if let Some(m) = exact_f16(c) {
        return (f16::ZERO, m);
    }
    let near = f16::from_f32(c);
    let other = match near.to_f32() < c {
        true => f16::from_bits(if near.is_sign_negative() { near.to_bits() - 1 } else { near.to_bits() + 1 }),
        false => f16::from_bits(if near.is_sign_negative() { near.to_bits() + 1 } else { near.to_bits() - 1 }),
    };
    let mut best = (f16::ZERO, near, 0u8, (f64::from(near.to_f32()) - f64::from(c)).abs());
    for m in [near, other].into_iter().filter(|m| m.is_finite()) {
        for q in 1..=15u8 {
            let d = f16::from_f64((f64::from(c) - f64::from(m.to_f32())) / f64::from(q));
            let w = d.to_f32() * f32::from(q) + m.to_f32();
            let err = (f64::from(w) - f64::from(c)).abs();
            if err < best.3 {
                best = (d, m, q, err);
            }
        }
        if best.3 == 0.0 {
            break;
        }
    }
    q_out.fill(best.2);
    (best.0, best.1)
}
