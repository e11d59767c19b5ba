//! ggml's 5-, 3- and 2-bit, k-quant and IQ4/MXFP4 blocks taken apart into codes and scales
//! ([`Parts`]), the one decoding that both the f32 dequantization (`quant::ggml`) and the GPU
//! repacking (`quant::repack`) use.
//!
//! Every type here decodes an element as `dl * v - ml`, where
//! - `v` is the element's code `q` minus an offset (`Code::Linear`), or a codebook level of `q`
//!   (`Code::Iq4`, `Code::Mxfp4`);
//! - `dl = d * sc` and `ml = dmin * mn` are the f32 products of the block's header scales
//!   (`d`, `dmin`) and its sub-block's integer scale and min (`sc`, `mn`); blocks without
//!   sub-blocks have `sc = 1` (Q5_1's `m` is `dmin` with `mn = -1`; blocks without a min have
//!   `ml = 0`).
//!
//! This is the order in which ggml's reference (`ggml-quants.c`, `dequantize_row_*`) evaluates
//! each type, so the values are bit for bit ggml's, the sign of a zero included (`x - 0.0`
//! keeps the sign of `x`). The layouts are ggml's (`ggml-common.h`); each unpacker names its own.

use crate::tensor::ggml::{block_info, QK, QK_K};
use crate::tensor::DType;
use half::f16;

/// How a code becomes the value `v` that multiplies the sub-block scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// `v = q - offset`.
    Linear { offset: u8 },
    /// `v = IQ4_LEVELS[q]`: IQ4_NL's and IQ4_XS's non-linear codebook.
    Iq4,
    /// `v = MXFP4_LEVELS[q]`: FP4 E2M1 values, doubled (ggml halves the E8M0 scale instead).
    Mxfp4,
}

/// IQ4's 16 levels (ggml's `kvalues_iq4nl`).
pub const IQ4_LEVELS: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];
/// FP4 E2M1's 16 values times two (ggml's `kvalues_mxfp4`).
pub const MXFP4_LEVELS: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

impl Code {
    /// `v` for code `q` as an f32 (exact: small integers).
    pub fn value(self, q: u8) -> f32 {
        match self {
            Code::Linear { offset } => f32::from(i16::from(q) - i16::from(offset)),
            Code::Iq4 => f32::from(IQ4_LEVELS[usize::from(q & 15)]),
            Code::Mxfp4 => f32::from(MXFP4_LEVELS[usize::from(q & 15)]),
        }
    }
}

/// Half the value of an E8M0 exponent byte, `2^(e - 128)`, as ggml's `ggml_e8m0_to_fp32_half`
/// computes it (the two smallest are f32 subnormals).
pub fn e8m0_half(e: u8) -> f32 {
    let bits = if e < 2 { 0x0020_0000u32 << e } else { u32::from(e - 1) << 23 };
    f32::from_bits(bits)
}

/// The bits of a code, its [`Code`], and the elements per sub-block (one scale each) of the
/// types [`Parts::unpack`] reads; `None` for the others.
pub fn layout(dtype: DType) -> Option<(u32, Code, usize)> {
    let linear = |offset| Code::Linear { offset };
    Some(match dtype {
        DType::Q5_0 => (5, linear(16), QK),
        DType::Q5_1 => (5, linear(0), QK),
        DType::IQ4_NL => (4, Code::Iq4, QK),
        DType::MXFP4 => (4, Code::Mxfp4, QK),
        DType::Q2_K => (2, linear(0), 16),
        DType::Q3_K => (3, linear(4), 16),
        DType::Q4_K => (4, linear(0), 32),
        DType::Q5_K => (5, linear(0), 32),
        DType::Q6_K => (6, linear(32), 16),
        DType::IQ4_XS => (4, Code::Iq4, 32),
        _ => return None,
    })
}

/// One block taken apart: see the module documentation for how these make a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Parts {
    /// Each element's code, in element order (the first `n` are used).
    pub codes: [u8; QK_K],
    /// Elements in the block: 32 or 256.
    pub n: usize,
    /// The header's scale and min scale, exactly (f16 in the file, or an E8M0 half).
    pub d: f32,
    pub dmin: f32,
    /// The header scales' f16 bits (0 where the block has none; MXFP4: the E8M0 byte in `d_bits`).
    pub d_bits: u16,
    pub dmin_bits: u16,
    /// Each sub-block's integer scale and min (`n / sub` of them).
    pub sc: [i8; 16],
    pub mn: [i8; 16],
}

fn f16_at(b: &[u8], at: usize) -> (f32, u16) {
    let bits = u16::from_le_bytes([b[at], b[at + 1]]);
    (f16::from_bits(bits).to_f32(), bits)
}

impl Parts {
    fn new(n: usize, (d, d_bits): (f32, u16), (dmin, dmin_bits): (f32, u16)) -> Parts {
        Parts { codes: [0; QK_K], n, d, dmin, d_bits, dmin_bits, sc: [1; 16], mn: [0; 16] }
    }

    /// Takes one whole block of `dtype` apart; `None` for a type [`layout`] does not list.
    /// Panics when `block` is shorter than the type's block.
    pub fn unpack(dtype: DType, b: &[u8]) -> Option<Parts> {
        let zero = (0.0, 0);
        Some(match dtype {
            // d: f16, qh: u32, qs: [u8; 16]. Element j < 16: low nibble of qs[j], element j + 16:
            // high nibble; each takes bit e of qh (e its index) as its fifth bit.
            DType::Q5_0 | DType::Q5_1 => {
                let at = if dtype == DType::Q5_0 { 2 } else { 4 };
                let dmin = if dtype == DType::Q5_0 { zero } else { f16_at(b, 2) };
                let mut p = Parts::new(QK, f16_at(b, 0), dmin);
                if dtype == DType::Q5_1 {
                    p.mn[0] = -1; // ggml adds m: `d * q + m` = `d * q - m * -1`
                }
                let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
                small_nibbles(&mut p, &b[at + 4..at + 4 + QK / 2]);
                for (e, c) in p.codes[..QK].iter_mut().enumerate() {
                    *c |= (((qh >> e) & 1) as u8) << 4;
                }
                p
            }
            // d: f16, qs: [u8; 16], nibbles as Q4_0.
            DType::IQ4_NL => {
                let mut p = Parts::new(QK, f16_at(b, 0), zero);
                small_nibbles(&mut p, &b[2..2 + QK / 2]);
                p
            }
            // e: u8 (E8M0), qs: [u8; 16], nibbles as Q4_0.
            DType::MXFP4 => {
                let mut p = Parts::new(QK, (e8m0_half(b[0]), u16::from(b[0])), zero);
                small_nibbles(&mut p, &b[1..1 + QK / 2]);
                p
            }
            // scales: [u8; 16] (scale in the low nibble, min in the high), qs: [u8; 64], d, dmin.
            // Element e: 2 bits at 2 * ((e % 128) / 32) of qs[32 * (e / 128) + e % 32].
            DType::Q2_K => {
                let mut p = Parts::new(QK_K, f16_at(b, 80), f16_at(b, 82));
                for (j, &byte) in b[..16].iter().enumerate() {
                    (p.sc[j], p.mn[j]) = ((byte & 15) as i8, (byte >> 4) as i8);
                }
                let qs = &b[16..80];
                for (e, c) in p.codes.iter_mut().enumerate() {
                    *c = (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
                }
                p
            }
            // hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12] (16 six-bit values, biased by 32),
            // d. Element e: 2 low bits as Q2_K, the third bit at e / 32 of hmask[e % 32].
            DType::Q3_K => {
                let mut p = Parts::new(QK_K, f16_at(b, 108), zero);
                let s = &b[96..108];
                for j in 0..16 {
                    let low = (s[j % 8] >> (4 * (j / 8))) & 15;
                    let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
                    p.sc[j] = (low | (high << 4)) as i8 - 32;
                }
                let (hmask, qs) = (&b[..32], &b[32..96]);
                for (e, c) in p.codes.iter_mut().enumerate() {
                    let low = (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
                    *c = low | (((hmask[e % 32] >> (e / 32)) & 1) << 2);
                }
                p
            }
            // d, dmin, scales: [u8; 12] (8 six-bit scales and mins, `q4_k_scale_min`), then
            // Q5_K: qh: [u8; 32]; then qs: [u8; 128]. Element e: nibble (e / 32) % 2 of
            // qs[32 * (e / 64) + e % 32]; Q5_K's fifth bit at e / 32 of qh[e % 32].
            DType::Q4_K | DType::Q5_K => {
                let mut p = Parts::new(QK_K, f16_at(b, 0), f16_at(b, 2));
                for j in 0..8 {
                    let (sc, mn) = super::ggml::q4_k_scale_min(j, &b[4..16]);
                    p.sc[j] = sc as i8;
                    p.mn[j] = mn as i8;
                }
                let at = if dtype == DType::Q4_K { 16 } else { 48 };
                for (e, c) in p.codes.iter_mut().enumerate() {
                    *c = (b[at + 32 * (e / 64) + e % 32] >> (4 * ((e / 32) % 2))) & 15;
                    if dtype == DType::Q5_K {
                        *c |= ((b[16 + e % 32] >> (e / 32)) & 1) << 4;
                    }
                }
                p
            }
            // ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d. In half h = e / 128, with
            // l = e % 32 and k = (e % 128) / 32: low nibble k / 2 of ql[64h + 32 (k % 2) + l],
            // top 2 bits at 2k of qh[32h + l].
            DType::Q6_K => {
                let mut p = Parts::new(QK_K, f16_at(b, 208), zero);
                for j in 0..16 {
                    p.sc[j] = b[192 + j] as i8;
                }
                for (e, c) in p.codes.iter_mut().enumerate() {
                    let (h, l, k) = (e / 128, e % 32, (e % 128) / 32);
                    let low = (b[64 * h + 32 * (k % 2) + l] >> (4 * (k / 2))) & 15;
                    *c = low | (((b[128 + 32 * h + l] >> (2 * k)) & 3) << 4);
                }
                p
            }
            // d, scales_h: u16, scales_l: [u8; 4], qs: [u8; 128]. Sub-block j's 6-bit scale:
            // nibble j % 2 of scales_l[j / 2], top bits at 2j of scales_h; biased by 32.
            // Sub-block j's 32 codes are nibbles of qs[16j..16j + 16], as Q4_0's.
            DType::IQ4_XS => {
                let mut p = Parts::new(QK_K, f16_at(b, 0), zero);
                let high = u16::from_le_bytes([b[2], b[3]]);
                for j in 0..8 {
                    let low = (b[4 + j / 2] >> (4 * (j % 2))) & 15;
                    p.sc[j] = (low | ((((high >> (2 * j)) & 3) as u8) << 4)) as i8 - 32;
                }
                let qs = &b[8..136];
                for (e, c) in p.codes.iter_mut().enumerate() {
                    *c = (qs[16 * (e / 32) + e % 16] >> (4 * ((e % 32) / 16))) & 15;
                }
                p
            }
            _ => return None,
        })
    }

    /// `(dl, ml)` of sub-block `j`, in f32 as ggml computes them.
    pub fn sub_scales(&self, j: usize) -> (f32, f32) {
        (self.d * f32::from(self.sc[j]), self.dmin * f32::from(self.mn[j]))
    }

    /// The block's values, bit for bit ggml's (see the module documentation).
    pub fn dequantize(&self, dtype: DType, out: &mut [f32]) {
        let (_, code, sub) = layout(dtype).expect("a type Parts::unpack reads");
        for (j, chunk) in out[..self.n].chunks_exact_mut(sub).enumerate() {
            let (dl, ml) = self.sub_scales(j);
            for (o, &q) in chunk.iter_mut().zip(&self.codes[j * sub..]) {
                *o = dl * code.value(q) - ml;
            }
        }
    }
}

/// Q4_0's nibble order for a block of 32: element j < 16 is the low nibble of byte j, element
/// j + 16 its high nibble.
fn small_nibbles(p: &mut Parts, qs: &[u8]) {
    for (j, &byte) in qs[..QK / 2].iter().enumerate() {
        p.codes[j] = byte & 15;
        p.codes[j + QK / 2] = byte >> 4;
    }
}

/// Dequantizes whole blocks of a type [`layout`] lists (sizes checked by the caller).
pub(crate) fn dequantize_blocks(dtype: DType, data: &[u8], out: &mut [f32]) {
    let (per_block, block_bytes) = block_info(dtype).expect("a ggml type");
    for (b, o) in data.chunks_exact(block_bytes).zip(out.chunks_exact_mut(per_block)) {
        Parts::unpack(dtype, b).expect("a type Parts::unpack reads").dequantize(dtype, o);
    }
}

/// `n_blocks` random blocks of a ggml block type, for kernel tests and benchmarks: random codes
/// and sub-block scales, header scales of random sign and moderate size (f16 below 2^-6 in
/// magnitude, E8M0 2^-8 .. 2^-1), so products stay finite. Deterministic in `seed`.
pub fn random_blocks(dtype: DType, n_blocks: usize, seed: u64) -> Vec<u8> {
    let (_, block_bytes) = block_info(dtype).expect("a ggml type");
    let byte = |i: u64| (crate::sampler::uniform(seed, i) * 256.0) as u8;
    let mut bytes: Vec<u8> = (0..(n_blocks * block_bytes) as u64).map(byte).collect();
    // Where each block's f16 scales sit.
    let f16_at: &[usize] = match dtype {
        DType::Q4_0 | DType::Q8_0 | DType::Q5_0 | DType::IQ4_NL | DType::IQ4_XS => &[0],
        DType::Q4_1 | DType::Q5_1 | DType::Q4_K | DType::Q5_K => &[0, 2],
        DType::Q2_K => &[80, 82],
        DType::Q3_K => &[108],
        DType::Q6_K => &[208],
        _ => &[],
    };
    for (b, block) in bytes.chunks_exact_mut(block_bytes).enumerate() {
        for (k, &at) in f16_at.iter().enumerate() {
            let v = (crate::sampler::uniform(seed ^ 0x5eed, (4 * b + k) as u64) - 0.5) / 32.0;
            block[at..at + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
        }
        if dtype == DType::MXFP4 {
            block[0] = 120 + (block[0] % 8);
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e8m0_halves() {
        assert_eq!(e8m0_half(127), 0.5);
        assert_eq!(e8m0_half(128), 1.0);
        assert_eq!(e8m0_half(2), 2f32.powi(-126));
        assert_eq!(e8m0_half(1), 2f32.powi(-127));
        assert_eq!(e8m0_half(0), 2f32.powi(-128));
    }

    #[test]
    fn q5_0_by_hand() {
        // d = 0.5; element 3 has nibble 7 and its qh bit set: q = 23, value 0.5 * (23 - 16).
        let mut b = vec![0u8; 22];
        b[..2].copy_from_slice(&f16::from_f32(0.5).to_bits().to_le_bytes());
        b[2] = 1 << 3;
        b[6 + 3] = 7;
        b[6 + 3] |= 2 << 4; // element 19: nibble 2, no fifth bit
        let mut out = [0.0f32; 32];
        dequantize_blocks(DType::Q5_0, &b, &mut out);
        assert_eq!(out[3], 3.5);
        assert_eq!(out[19], 0.5 * (2.0 - 16.0));
        assert_eq!(out[0], -8.0);
    }

    #[test]
    fn q3_k_scales_by_hand() {
        // Sub-block 9 = 0b10_0110: low nibble 6 in the high nibble of byte 1, top bits `10` at
        // bits 4-5 of byte 9 (8 + 9 % 4 = 9, shift 2 * (9 / 4) = 4).
        let mut b = vec![0u8; 110];
        b[96 + 1] = 6 << 4;
        b[96 + 9] = 2 << 4;
        let p = Parts::unpack(DType::Q3_K, &b).unwrap();
        assert_eq!(p.sc[9], 0b10_0110 - 32);
        assert_eq!(p.sc[0], -32);
    }
}
