//! Seeded INT4 weights: the CPU twin of `shaders/generate_int4.wgsl`, which writes the same bits
//! straight into GPU buffers (see its header for the hash). Used by presets, whose weights are
//! generated rather than loaded, so that a model of any size can be benchmarked where it fits.
//!
//! Values: `w = d * (q - 8)` with `q` uniform in 0..15 and `d` from `d0` to `d0 * 1.06`; `d0` is
//! chosen so that a row's values have a standard deviation of about `1 / sqrt(cols)`: a matrix
//! then keeps the scale of what it multiplies, and activations stay finite through any depth
//! (the norms do the rest).

use crate::quant::packed::{Format, PackedMatrix};
use crate::{Error, Result};
use half::f16;

/// lowbias32, a 32-bit integer hash.
pub fn mix(v: u32) -> u32 {
    let mut x = v;
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// The hash of counter `i` under `key`.
pub fn rnd(key: u32, i: u32) -> u32 {
    mix(mix(i ^ key).wrapping_add(key))
}

/// The key of matrix `id`'s values (`stream` 0) or scales (`stream` 1) under `seed`.
pub fn key(seed: u32, id: u32, stream: u32) -> u32 {
    mix(seed ^ mix(id.wrapping_mul(2).wrapping_add(stream)))
}

/// The f16 bits of `d0` for rows of `cols` values: the standard deviation of `q - 8` (q uniform
/// in 0..15) is sqrt(255 / 12) = 4.61, so `d0 = 1 / (4.61 sqrt(cols))`, with the low 6 mantissa
/// bits cleared (the per-group jitter adds up to 63 there without carrying into the exponent).
pub fn base_scale_bits(cols: usize) -> u16 {
    let d0 = 1.0 / ((255.0f32 / 12.0).sqrt() * (cols.max(1) as f32).sqrt());
    f16::from_f32(d0).to_bits() & !63
}

/// The scale word of a group: `pack2x16float(d, -8 d)` built on the bits (exact).
pub fn scale_word(d0_bits: u16, hash: u32) -> u32 {
    let d = u32::from(d0_bits) + (hash & 63);
    let m = (d + (3 << 10)) | 0x8000;
    d | (m << 16)
}

/// Matrix `id` of a model generated from `seed`: `[rows, cols]` INT4 with groups of `group` and
/// f16 scale pairs, exactly as the kernel writes it (without the GPU's row padding).
pub fn int4_matrix(rows: usize, cols: usize, group: usize, seed: u32, id: u32) -> Result<PackedMatrix> {
    let format = Format::Int4 { group, wide_scales: false };
    format.check_shape(rows, cols).map_err(|p| Error::tensor(format!("generated matrix {id}"), p))?;
    let (row_words, groups) = (cols / 8, cols / group);
    if rows * row_words > u32::MAX as usize {
        return Err(Error::tensor(format!("generated matrix {id}"), "more than 2^32 words: the hash counts in u32"));
    }
    let (kq, ks) = (key(seed, id, 0), key(seed, id, 1));
    let d0 = base_scale_bits(cols);
    let qs = (0..(rows * row_words) as u32).map(|i| rnd(kq, i)).collect();
    let scales = (0..(rows * groups) as u32).map(|i| scale_word(d0, rnd(ks, i))).collect();
    PackedMatrix::new(rows, cols, format, qs, scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_the_intended_spread() {
        // 64 x 1024 values: the sample deviation of 65536 draws is within 1% of the population's;
        // the population's is d0 * 4.61 * (1 + up to 6% jitter, 3% on average), and d0 is rounded
        // to f16 with 6 mantissa bits cleared (down by at most 6%): so within 10% of 1/sqrt(cols).
        let m = int4_matrix(64, 1024, 64, 7, 3).unwrap();
        let v = m.dequantize();
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let sd = (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / v.len() as f32).sqrt();
        let want = 1.0 / 32.0;
        assert!((sd - want).abs() < 0.1 * want, "sd {sd}, want {want}");
        // Different ids give different matrices; the same id the same.
        assert_ne!(m, int4_matrix(64, 1024, 64, 7, 4).unwrap());
        assert_eq!(m, int4_matrix(64, 1024, 64, 7, 3).unwrap());
    }
}
