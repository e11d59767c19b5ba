//! Lossless repacking of ggml blocks into the formats the kernels read.

use super::blocks::{layout, Parts};
use super::ggml;
use super::packed::{
    bits_unit, exact_f16, nibble_word, pack_f16_pair, unnamed, BitScales, Format, PackedMatrix, BITS_UNIT,
};
use crate::tensor::ggml::{block_info, QK};
use crate::tensor::DType;
use crate::{Error, Result};
use half::f16;

impl PackedMatrix {
    /// Repacks ggml blocks (`rows` rows of `cols` elements, as a GGUF tensor with `ne[0] = cols`
    /// stores them) without loss: `dequantize()` equals `quant::ggml::dequantize` value for
    /// value (the one possible difference is the sign of a zero: ggml's `d * (q - 8)` gives -0
    /// where `d * q + m` gives +0).
    ///
    /// - Q4_0 → `Int4 { 32 }` with `(d, -8d)` as f16 pairs (exact: `-8d` only shifts the
    ///   exponent); wide scales only if some `-8d` overflows f16 (|d| > 8188).
    /// - Q4_1 → `Int4 { 32 }` with the block's f16 `(d, m)`.
    /// - Q4_K → `Int4 { 32, wide }`: per 32-element sub-block `d_sub = d * sc`,
    ///   `m_sub = -(dmin * min)` in f32, as ggml's dequantization computes them.
    /// - Q8_0 → `Int8 { 32 }` with `s = d`.
    /// - Q5_0, Q5_1, IQ4_NL → `Bits { Pair }` (the block's f16 `d` and `m`); MXFP4 → `Bits
    ///   { E8m0 }`; Q2_K, Q3_K, Q5_K, Q6_K, IQ4_XS → `Bits { Super }` (the super-block's f16
    ///   scales and its integer sub-block scales). Values are ggml's bit for bit, zero signs
    ///   included.
    /// - F32, F16, BF16 → `F32`.
    ///
    /// Errors (`Error::Tensor`): a non-ggml dtype, a row that is not whole blocks, a byte count
    /// that does not match.
    pub fn from_ggml(dtype: DType, rows: usize, cols: usize, bytes: &[u8]) -> Result<PackedMatrix> {
        let err = |p: String| Error::tensor(unnamed(dtype, rows, cols), p);
        let (per_block, block_bytes) =
            block_info(dtype).ok_or_else(|| err(format!("{dtype:?} is not a ggml block format")))?;
        let n = rows.checked_mul(cols).ok_or_else(|| err("too many elements".into()))?;
        if !cols.is_multiple_of(per_block) {
            return Err(err(format!("rows of {cols} elements are not whole {dtype:?} blocks of {per_block}")));
        }
        let expected = (n / per_block).checked_mul(block_bytes).ok_or_else(|| err("too many bytes".into()))?;
        if bytes.len() != expected {
            return Err(err(format!(
                "{n} elements of {dtype:?} take {expected} bytes, but {} were given",
                bytes.len()
            )));
        }
        let blocks = bytes.chunks_exact(block_bytes);
        let n_blocks = n / per_block;
        let (format, qs, scales) = match dtype {
            DType::F32 | DType::F16 | DType::BF16 => {
                let values = ggml::dequantize(dtype, bytes, n).map_err(err)?;
                (Format::F32, values.iter().map(|v| v.to_bits()).collect(), vec![])
            }
            DType::Q8_0 => {
                let mut qs = Vec::with_capacity(n / 4);
                let mut scales = Vec::with_capacity(n_blocks);
                for b in blocks {
                    scales.push(f16::from_bits(read_f16_bits(b, 0)).to_f32().to_bits());
                    qs.extend(b[2..2 + QK].chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])));
                }
                (Format::Int8 { group: QK }, qs, scales)
            }
            DType::Q4_0 | DType::Q4_1 => {
                let mut qs = Vec::with_capacity(n / 8);
                let mut pairs = Vec::with_capacity(n_blocks);
                for b in blocks {
                    let d = f16::from_bits(read_f16_bits(b, 0));
                    let (m, nib) = match dtype {
                        DType::Q4_0 => (-8.0 * d.to_f32(), &b[2..2 + QK / 2]),
                        _ => (f16::from_bits(read_f16_bits(b, 2)).to_f32(), &b[4..4 + QK / 2]),
                    };
                    pairs.push((d, m));
                    let mut q = [0u8; QK];
                    for (j, &byte) in nib.iter().enumerate() {
                        q[j] = byte & 0x0F;
                        q[j + QK / 2] = byte >> 4;
                    }
                    qs.extend(q.chunks_exact(8).map(nibble_word));
                }
                // Q4_1's m is an f16 already (its bits are kept as they are); Q4_0's -8d is an
                // f16 unless it overflows, and then the whole matrix takes wide scales.
                let narrow: Option<Vec<u32>> = match dtype {
                    DType::Q4_0 => pairs.iter().map(|&(d, m)| Some(pack_f16_pair(d, exact_f16(m)?))).collect(),
                    _ => Some(
                        bytes.chunks_exact(block_bytes).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
                    ),
                };
                match narrow {
                    Some(scales) => (Format::Int4 { group: QK, wide_scales: false }, qs, scales),
                    None => {
                        let scales = pairs.iter().flat_map(|&(d, m)| [d.to_f32().to_bits(), m.to_bits()]).collect();
                        (Format::Int4 { group: QK, wide_scales: true }, qs, scales)
                    }
                }
            }
            DType::Q4_K => {
                let mut qs = Vec::with_capacity(n / 8);
                let mut scales = Vec::with_capacity(n_blocks * 16);
                for b in blocks {
                    let p = Parts::unpack(dtype, b).expect("Q4_K");
                    qs.extend(p.codes.chunks_exact(8).map(nibble_word));
                    scales.extend((0..8).map(|j| p.sub_scales(j)).flat_map(|(d, m)| [d.to_bits(), (-m).to_bits()]));
                }
                (Format::Int4 { group: QK, wide_scales: true }, qs, scales)
            }
            DType::Q5_0
            | DType::Q5_1
            | DType::Q2_K
            | DType::Q3_K
            | DType::Q5_K
            | DType::Q6_K
            | DType::IQ4_NL
            | DType::IQ4_XS
            | DType::MXFP4 => bits_from_ggml(dtype, cols, blocks),
            DType::Int4 => return Err(err("Int4 is not a ggml block format".into())),
        };
        PackedMatrix::new(rows, cols, format, qs, scales)
    }
}

/// The Bits format a ggml type that `blocks::layout` lists repacks to: E8M0 scales for MXFP4,
/// f16 pairs for the other 32-element blocks, super-block scales for the 256-element ones.
/// `None` for the other types.
pub fn bits_format(dtype: DType) -> Option<Format> {
    let (bits, code, sub) = layout(dtype)?;
    let scales = match (dtype, block_info(dtype)?.0) {
        (DType::MXFP4, _) => BitScales::E8m0,
        (_, QK) => BitScales::Pair,
        _ => BitScales::Super { sub: sub as u32, mins: matches!(dtype, DType::Q2_K | DType::Q4_K | DType::Q5_K) },
    };
    Some(Format::Bits { bits, code, scales })
}

/// A Bits matrix ([`bits_format`]) from the blocks of a type `blocks::layout` lists: codes into
/// bit planes, and the scales as the file has them (f16 bits, E8M0 bytes, integer sub-block
/// scales), so the matrix takes about the file's size.
fn bits_from_ggml<'a>(
    dtype: DType,
    cols: usize,
    blocks: impl Iterator<Item = &'a [u8]>,
) -> (Format, Vec<u32>, Vec<u32>) {
    let format = bits_format(dtype).expect("a Bits type");
    let Format::Bits { bits, scales, .. } = format else { unreachable!("a Bits format") };
    let (mut qs, mut words) = (vec![], vec![]);
    let mut exponents = vec![]; // E8M0: the current row's bytes
    let per_row = cols / block_info(dtype).expect("a ggml type").0;
    for (i, b) in blocks.enumerate() {
        let p = Parts::unpack(dtype, b).expect("a Bits type");
        for unit in p.codes[..p.n].chunks_exact(BITS_UNIT) {
            qs.extend(bits_unit(unit, bits));
        }
        match scales {
            // Q5_1's m is dmin (its `mn` is -1); the others have none: -0 keeps ggml's zero signs.
            BitScales::Pair => {
                let m = if dtype == DType::Q5_1 { p.dmin_bits } else { 0x8000 };
                words.push(u32::from(p.d_bits) | (u32::from(m) << 16));
            }
            BitScales::E8m0 => {
                exponents.push(p.d_bits as u8);
                if (i + 1) % per_row == 0 {
                    exponents.resize(exponents.len().next_multiple_of(4), 0);
                    words.extend(exponents.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])));
                    exponents.clear();
                }
            }
            BitScales::Super { sub, mins } => {
                let mut bytes = [0u8; 16];
                for j in 0..p.n / sub as usize {
                    match (sub, mins) {
                        (_, false) => bytes[j] = p.sc[j] as u8,
                        (16, true) => bytes[j] = (p.sc[j] as u8) | ((p.mn[j] as u8) << 4),
                        (_, true) => (bytes[j], bytes[8 + j]) = (p.sc[j] as u8, p.mn[j] as u8),
                    }
                }
                words.push(u32::from(p.d_bits) | (u32::from(p.dmin_bits) << 16));
                words.extend(bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])));
            }
        }
    }
    (format, qs, words)
}

fn read_f16_bits(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}
