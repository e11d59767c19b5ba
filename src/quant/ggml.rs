//! ggml block formats: dequantization to f32 (type numbering and block sizes: `tensor::ggml`).
//! Q4_0, Q4_1 and Q8_0 are decoded here; the 5-, 3- and 2-bit types, the k-quants, IQ4 and
//! MXFP4 through `quant::blocks`.
//!
//! A ggml tensor row is a run of blocks; each block holds a fixed number of elements in a fixed
//! number of bytes, little-endian. [`dequantize`] and [`dequantize_into`] check every size first,
//! so a short buffer is an error; the per-block `dequantize_block_*` functions expect one whole
//! block and room for its elements (they panic on shorter slices, never read out of bounds).
//! The layouts follow ggml's reference (`ggml-common.h`, `ggml-quants.c`); each function states
//! the one it decodes.

use crate::tensor::ggml::{block_info, QK};
use crate::tensor::DType;
use half::{bf16, f16};

/// Dequantizes `data` (a whole number of blocks of `dtype`) into `out`, which must hold exactly
/// the elements those blocks encode. The error says what did not fit.
pub fn dequantize_into(dtype: DType, data: &[u8], out: &mut [f32]) -> Result<(), String> {
    let (per_block, block_bytes) = block_info(dtype).ok_or_else(|| not_ggml(dtype))?;
    if !out.len().is_multiple_of(per_block) {
        return Err(format!("{} elements is not a whole number of {dtype:?} blocks of {per_block}", out.len()));
    }
    let expected = out.len() / per_block * block_bytes;
    if data.len() != expected {
        return Err(format!(
            "{} elements of {dtype:?} take {expected} bytes, but {} were given",
            out.len(),
            data.len()
        ));
    }
    let blocks = data.chunks_exact(block_bytes).zip(out.chunks_exact_mut(per_block));
    match dtype {
        DType::F32 => blocks.for_each(|(b, o)| o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DType::F16 => blocks.for_each(|(b, o)| o[0] = read_f16(b, 0)),
        DType::BF16 => blocks.for_each(|(b, o)| o[0] = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()),
        DType::Q8_0 => blocks.for_each(|(b, o)| dequantize_block_q8_0(b, o)),
        DType::Q4_0 => blocks.for_each(|(b, o)| dequantize_block_q4_0(b, o)),
        DType::Q4_1 => blocks.for_each(|(b, o)| dequantize_block_q4_1(b, o)),
        DType::Q5_0
        | DType::Q5_1
        | DType::Q2_K
        | DType::Q3_K
        | DType::Q4_K
        | DType::Q5_K
        | DType::Q6_K
        | DType::IQ4_NL
        | DType::IQ4_XS
        | DType::MXFP4 => super::blocks::dequantize_blocks(dtype, data, out),
        DType::Int4 => return Err(not_ggml(dtype)),
    }
    Ok(())
}

/// Dequantizes `data`, a whole number of blocks, into a new vector of `n_elements` values.
pub fn dequantize(dtype: DType, data: &[u8], n_elements: usize) -> Result<Vec<f32>, String> {
    // Check the size before allocating: `n_elements` may come from an untrusted header.
    let (per_block, block_bytes) = block_info(dtype).ok_or_else(|| not_ggml(dtype))?;
    if !n_elements.is_multiple_of(per_block) || data.len() / block_bytes * per_block != n_elements {
        return Err(format!("{n_elements} elements of {dtype:?} do not match the {} bytes given", data.len()));
    }
    let mut out = vec![0.0f32; n_elements];
    dequantize_into(dtype, data, &mut out)?;
    Ok(out)
}

fn not_ggml(dtype: DType) -> String {
    format!("{dtype:?} is not a ggml block format")
}

fn read_f16(bytes: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([bytes[at], bytes[at + 1]])).to_f32()
}

/// Q8_0, 34 bytes for 32 elements:
/// `d: f16` then `qs: [i8; 32]`; element j is `d * qs[j]`.
pub fn dequantize_block_q8_0(block: &[u8], out: &mut [f32]) {
    let d = read_f16(block, 0);
    for (o, &q) in out[..QK].iter_mut().zip(&block[2..2 + QK]) {
        *o = d * f32::from(q as i8);
    }
}

/// Q4_0, 18 bytes for 32 elements:
/// `d: f16` then `qs: [u8; 16]`; element j (j < 16) is the low nibble of `qs[j]`, element j + 16
/// the high nibble; each is `d * (q - 8)`.
pub fn dequantize_block_q4_0(block: &[u8], out: &mut [f32]) {
    let d = read_f16(block, 0);
    let qs = &block[2..2 + QK / 2];
    for (j, &byte) in qs.iter().enumerate() {
        out[j] = d * (f32::from(byte & 0x0F) - 8.0);
        out[j + QK / 2] = d * (f32::from(byte >> 4) - 8.0);
    }
}

/// Q4_1, 20 bytes for 32 elements:
/// `d: f16`, `m: f16`, then `qs: [u8; 16]` packed as in Q4_0; each element is `d * q + m`.
pub fn dequantize_block_q4_1(block: &[u8], out: &mut [f32]) {
    let d = read_f16(block, 0);
    let m = read_f16(block, 2);
    let qs = &block[4..4 + QK / 2];
    for (j, &byte) in qs.iter().enumerate() {
        out[j] = d * f32::from(byte & 0x0F) + m;
        out[j + QK / 2] = d * f32::from(byte >> 4) + m;
    }
}

/// The 6-bit (scale, min) of sub-block `j` (0..8) of a Q4_K super-block, from its 12 packed bytes.
///
/// Bytes 0..4 hold the scales of sub-blocks 0..4 in their low 6 bits, bytes 4..8 the mins of
/// sub-blocks 0..4 likewise. Sub-blocks 4..8 keep their low 4 bits in bytes 8..12 (scale in the
/// low nibble, min in the high nibble) and their top 2 bits in the spare top bits of bytes 0..4
/// (scale) and 4..8 (min).
pub fn q4_k_scale_min(j: usize, scales: &[u8]) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 0x3F, scales[j + 4] & 0x3F)
    } else {
        let scale = (scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4);
        let min = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
        (scale, min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_bits().to_le_bytes()
    }

    #[test]
    fn plain_floats() {
        let mut data = vec![];
        data.extend_from_slice(&1.5f32.to_le_bytes());
        data.extend_from_slice(&(-2.25f32).to_le_bytes());
        assert_eq!(dequantize(DType::F32, &data, 2).unwrap(), vec![1.5, -2.25]);

        let data = [f16_bytes(0.5), f16_bytes(-3.0)].concat();
        assert_eq!(dequantize(DType::F16, &data, 2).unwrap(), vec![0.5, -3.0]);

        // bf16 is the top half of an f32: 1.0 = 0x3F80, -0.5 = 0xBF00.
        let data = [0x80, 0x3F, 0x00, 0xBF];
        assert_eq!(dequantize(DType::BF16, &data, 2).unwrap(), vec![1.0, -0.5]);
    }

    #[test]
    fn q8_0_block() {
        let mut block = f16_bytes(0.25).to_vec();
        block.extend((0..32).map(|j| (j as i8 - 16) as u8));
        let out = dequantize(DType::Q8_0, &block, 32).unwrap();
        for (j, v) in out.iter().enumerate() {
            assert_eq!(*v, 0.25 * (j as f32 - 16.0), "element {j}");
        }
    }

    #[test]
    fn q4_0_block() {
        // Byte j: low nibble j (element j), high nibble 15 - j (element j + 16).
        let mut block = f16_bytes(2.0).to_vec();
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let out = dequantize(DType::Q4_0, &block, 32).unwrap();
        for j in 0..16 {
            assert_eq!(out[j], 2.0 * (j as f32 - 8.0), "element {j}");
            assert_eq!(out[j + 16], 2.0 * ((15 - j) as f32 - 8.0), "element {}", j + 16);
        }
        // Two blocks in a row decode independently.
        let mut two = block.clone();
        let mut second = f16_bytes(-1.0).to_vec();
        second.extend([0x88u8; 16]); // every q = 8 -> 0
        two.extend(second);
        let out2 = dequantize(DType::Q4_0, &two, 64).unwrap();
        assert_eq!(&out2[..32], &out[..]);
        assert!(out2[32..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn q4_1_block() {
        let mut block = [f16_bytes(0.5), f16_bytes(-1.0)].concat();
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let out = dequantize(DType::Q4_1, &block, 32).unwrap();
        for j in 0..16 {
            assert_eq!(out[j], 0.5 * j as f32 - 1.0);
            assert_eq!(out[j + 16], 0.5 * (15 - j) as f32 - 1.0);
        }
    }

    /// Packs 8 six-bit scales and mins the way ggml's quantizer does.
    fn pack_q4_k_scales(sc: [u8; 8], m: [u8; 8]) -> [u8; 12] {
        let mut s = [0u8; 12];
        for j in 0..4 {
            s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            s[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
            s[j + 8] = (sc[j + 4] & 0x0F) | ((m[j + 4] & 0x0F) << 4);
        }
        s
    }

    #[test]
    fn q4_k_scale_unpacking_by_hand() {
        // Sub-block 5: scale 45 = 0b10_1101, min 58 = 0b11_1010.
        // Its low nibbles sit in byte 9 (scale low, min high): 0b1010_1101 = 0xAD.
        // Its top bits: scale's `10` in the top of byte 1, min's `11` in the top of byte 5.
        let mut s = [0u8; 12];
        s[9] = 0xAD;
        s[1] = 0b1000_0011; // low 6 bits: scale 3 for sub-block 1
        s[5] = 0b1100_0111; // low 6 bits: min 7 for sub-block 1
        assert_eq!(q4_k_scale_min(5, &s), (45, 58));
        assert_eq!(q4_k_scale_min(1, &s), (3, 7));
        assert_eq!(q4_k_scale_min(4, &s), (0, 0));
    }

    #[test]
    fn q4_k_block_all_subblocks() {
        let sc = [1, 7, 13, 63, 17, 33, 48, 62];
        let m = [2, 0, 63, 5, 31, 40, 16, 59];
        let packed = pack_q4_k_scales(sc, m);
        for j in 0..8 {
            assert_eq!(q4_k_scale_min(j, &packed), (sc[j], m[j]), "sub-block {j}");
        }
        let (d, dmin) = (0.5f32, 0.25f32);
        let mut block = [f16_bytes(d), f16_bytes(dmin)].concat();
        block.extend_from_slice(&packed);
        // qs byte i: low nibble i % 16, high nibble (i / 3) % 16.
        block.extend((0..128u32).map(|i| ((i % 16) | (((i / 3) % 16) << 4)) as u8));
        assert_eq!(block.len(), 144);
        let out = dequantize(DType::Q4_K, &block, 256).unwrap();
        for (e, v) in out.iter().enumerate() {
            let run = e / 64;
            let l = e % 32;
            let byte_index = 32 * run + l;
            let high = (e % 64) >= 32;
            let q = if high { (byte_index / 3) % 16 } else { byte_index % 16 };
            let sub = e / 32;
            let expected = d * sc[sub] as f32 * q as f32 - dmin * m[sub] as f32;
            assert_eq!(*v, expected, "element {e} (sub-block {sub})");
        }
    }

    #[test]
    fn q6_k_block() {
        // A 6-bit value per element and a scale per 16, packed by the layout's rules.
        let q: Vec<u8> = (0..256).map(|i| ((i * 7 + 3) % 64) as u8).collect();
        let scales: [i8; 16] = [1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12, 13, -14, 127, -128];
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        for half in 0..2 {
            for l in 0..32 {
                let v = |k: usize| q[128 * half + l + 32 * k];
                ql[64 * half + l] = (v(0) & 0x0F) | ((v(2) & 0x0F) << 4);
                ql[64 * half + l + 32] = (v(1) & 0x0F) | ((v(3) & 0x0F) << 4);
                qh[32 * half + l] = (v(0) >> 4) | ((v(1) >> 4) << 2) | ((v(2) >> 4) << 4) | ((v(3) >> 4) << 6);
            }
        }
        let d = 0.125f32;
        let mut block = ql.to_vec();
        block.extend_from_slice(&qh);
        block.extend(scales.iter().map(|&s| s as u8));
        block.extend_from_slice(&f16_bytes(d));
        assert_eq!(block.len(), 210);
        let out = dequantize(DType::Q6_K, &block, 256).unwrap();
        for (i, v) in out.iter().enumerate() {
            let expected = d * scales[i / 16] as f32 * (q[i] as f32 - 32.0);
            assert_eq!(*v, expected, "element {i}");
        }
        // A hand-checked element: element 0 has q = 3, scale 1: 0.125 * (3 - 32).
        assert_eq!(out[0], 0.125 * -29.0);
    }

    #[test]
    fn size_mismatch_is_an_error() {
        assert!(dequantize(DType::Q4_0, &[0u8; 17], 32).is_err());
        assert!(dequantize(DType::Q4_0, &[0u8; 18], 31).is_err());
        assert!(dequantize(DType::Q4_0, &[0u8; 18], usize::MAX - 31).is_err());
        assert!(dequantize_into(DType::F32, &[0u8; 8], &mut [0.0; 3]).is_err());
    }
}
