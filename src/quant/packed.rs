//! [`PackedMatrix`]: a weight matrix exactly as the GPU kernels read it, and its CPU twins of
//! the kernels (`matvec`, `matmul`). The lossless conversion from ggml blocks is in
//! `quant::repack`, the quantizers in `quant::quantize` and `quant::gptq_grid`.
//!
//! A matrix is row-major `[rows, cols]`, rows = outputs, cols = inputs; a stacked expert tensor
//! `[E, R, C]` is packed as `rows = E * R`, so expert `e`'s rows start at row `e * R` (word
//! `e * R * row_words()` of `qs`, word `e * R * scale_words()` of the scales).
//!
//! ## The formats ([`Format`])
//! - `F32`: `qs` holds `rows * cols` f32 bit patterns; `scales` is empty.
//! - `Int8 { group }`: four signed 8-bit values per u32 along a row; element `4w + j` of a row
//!   sits in bits `8j..8j + 8` of the row's word `w` (two's complement); a row has `cols / 4`
//!   words. `scales` holds one f32 bit pattern per group of `group` consecutive elements of a
//!   row (row `r`, group `g` at `r * (cols / group) + g`); `w = s * q`.
//! - `Int4 { group, wide_scales }`: eight unsigned 4-bit values per u32 along a row; element
//!   `8w + j` sits in bits `4j..4j + 4` (low nibble first); a row has `cols / 8` words. Each
//!   group of `group` elements has a pair `(d, m)` and `w = d * q + m`, q in 0..15.
//!   With `wide_scales == false` the pair is one u32, WGSL's `pack2x16float(d, m)`: f16 `d` in
//!   the low 16 bits, f16 `m` in the high 16 bits (row `r`, group `g` at `r * (cols / group) + g`).
//!   With `wide_scales == true` it is two u32, the f32 bits of `d` then of `m` (at
//!   `2 * (r * (cols / group) + g)` and the word after).
//! - `Bits { bits, code, scales }`: each run of 32 elements of a row (a unit) takes `bits`
//!   words: first a low plane of 4-bit fields (2-bit when `bits < 4`), then a high plane of the
//!   remaining `bits - low` bits (1 or 2). Element `k` of the unit has its low bits in field
//!   `k` of the low plane (word `k * low / 32`, bit `(k * low) % 32`) and its high bits likewise
//!   in the high plane; its code is `low | high << low`. The code becomes a value `v` by
//!   `code` (`q - offset`, or a codebook level: `quant::blocks::Code`). Scales:
//!   - `Pair`: one `pack2x16float(d, m)` per unit (row `r`, unit `g` at `r * cols / 32 + g`);
//!     `w = d * v + m`.
//!   - `E8m0`: one exponent byte per unit, four per word (unit `g` in bits `8 (g % 4)` of word
//!     `g / 4` of the row's `ceil(cols / 128)`); `w = e8m0_half(e) * v`.
//!   - `Super { sub, mins }`: 5 words per 256 elements: `pack2x16float(d, dmin)`, then 16
//!     bytes (little-endian in 4 words) of integer sub-block scales for sub-blocks of `sub`
//!     elements: without mins, byte `j` is sub-block `j`'s signed scale `sc` (`mn = 0`); with
//!     mins and `sub = 16`, byte `j` holds `sc` in its low and `mn` in its high nibble; with
//!     mins and `sub = 32`, byte `j` is `sc` and byte `8 + j` is `mn`.
//!     `w = (d * sc) * v - dmin * mn`, the products in f32 in ggml's order.
//!
//! ## Exactness
//! Dequantization is f32 arithmetic: `d * q + m` (Int4) and `s * q` (Int8). For every matrix
//! that [`PackedMatrix::from_ggml`], GPTQ loading and [`PackedMatrix::quantize_int4`] produce,
//! `d * q` is exact in f32 (`d` has at most 17 significant bits, `q` at most 4), so a fused
//! multiply-add gives the same value as a multiply then an add: a kernel may use either.
//! Bits values are ggml's bit for bit ([`PackedMatrix::from_ggml`]): `d * v` is exact (at most
//! 11 + 7 + 6 significant bits), so a kernel may fold the offset into `m` and use a fused
//! multiply-add.

use super::blocks::e8m0_half;
pub use super::blocks::Code;
use crate::tensor::Tensor;
use crate::{Error, Result};
use half::f16;

/// How a [`PackedMatrix`] stores its values; see the module documentation for the bit layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `qs` holds f32 bit patterns, `rows * cols` of them; `scales` is empty.
    F32,
    /// 4 signed 8-bit values per u32 along a row (element `4w + j` in bits `8j..8j + 7`, two's
    /// complement); a row has `cols / 4` words. `scales`: one f32 bit pattern per group of `group`
    /// consecutive elements of a row (row `r`, group `g` at `r * (cols / group) + g`). `w = s * q`.
    Int8 { group: usize },
    /// 8 unsigned 4-bit values per u32 along a row (element `8w + j` in bits `4j..4j + 3`, low
    /// nibble first); a row has `cols / 8` words. Per group of `group` elements: `(d, m)` with
    /// `w = d * q + m`, q in 0..15.
    /// `wide_scales == false`: one u32 per group = `pack2x16float(d, m)` (low 16 bits f16 `d`,
    /// high 16 bits f16 `m`).
    /// `wide_scales == true`: two u32 per group, f32 bits of `d` then `m` (row `r` group `g` at
    /// `2 * (r * (cols / group) + g)`).
    Int4 { group: usize, wide_scales: bool },
    /// `bits`-bit codes (2 to 6) in bit planes, 32 elements per `bits` words, decoded by `code`
    /// and scaled per `scales`: ggml's 5-, 3- and 2-bit, k-quant, IQ4 and MXFP4 blocks, repacked
    /// without loss. See the module documentation.
    Bits { bits: u32, code: Code, scales: BitScales },
}

/// Where a [`Format::Bits`] matrix keeps its scales (the module documentation has the words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BitScales {
    /// Per 32 elements, `pack2x16float(d, m)`: `w = d * v + m`.
    Pair,
    /// Per 32 elements, one E8M0 exponent byte (4 per word): `w = e8m0_half(e) * v`.
    E8m0,
    /// Per 256-element super-block, 5 words: `pack2x16float(d, dmin)` and 16 bytes of integer
    /// sub-block scales (and mins), one per `sub` elements: `w = (d * sc) * v - dmin * mn`.
    Super { sub: u32, mins: bool },
}

/// Elements per unit of a [`Format::Bits`] row: a unit takes `bits` words.
pub const BITS_UNIT: usize = 32;
/// Elements per super-block of [`BitScales::Super`], and its words of scales.
pub const SUPER_BLOCK: usize = 256;
pub const SUPER_WORDS: usize = 5;

/// The bit planes of a `bits`-bit code: `(low, high)` widths, low = 4 from 4 bits up, else 2.
pub fn bit_planes(bits: u32) -> (u32, u32) {
    let low = if bits >= 4 { 4 } else { 2 };
    (low, bits - low)
}

impl Format {
    /// Checks that a `[rows, cols]` matrix can be stored in this format: for Int8, `cols` a
    /// multiple of 4 and of `group`; for Int4, `cols` a multiple of 8 and of `group`; for Bits, of
    /// 32 (256 with super-block scales); and `rows * cols` must not overflow.
    pub fn check_shape(self, rows: usize, cols: usize) -> std::result::Result<(), String> {
        rows.checked_mul(cols).ok_or_else(|| format!("[{rows}, {cols}] has too many elements"))?;
        let (group, per_word) = match self {
            Format::F32 => return Ok(()),
            Format::Int8 { group } => (group, 4),
            Format::Int4 { group, .. } => (group, 8),
            Format::Bits { bits, scales, .. } => {
                if !(2..=6).contains(&bits) {
                    return Err(format!("{self:?}: codes of {bits} bits (2 to 6)"));
                }
                let block = if matches!(scales, BitScales::Super { .. }) { SUPER_BLOCK } else { BITS_UNIT };
                (block, BITS_UNIT)
            }
        };
        if group == 0 {
            return Err(format!("{self:?}: a group of 0 elements"));
        }
        if !cols.is_multiple_of(group) || !cols.is_multiple_of(per_word) {
            return Err(format!(
                "{self:?} needs the row length to be a multiple of {group} (the group) and of {per_word} \
                 (values per word); rows here have {cols} elements"
            ));
        }
        Ok(())
    }

    /// u32 words of `qs` per row of `cols` elements: `cols` (F32), `cols / 4` (Int8),
    /// `cols / 8` (Int4), `cols / 32 * bits` (Bits).
    pub fn row_words(self, cols: usize) -> usize {
        match self {
            Format::F32 => cols,
            Format::Int8 { .. } => cols / 4,
            Format::Int4 { .. } => cols / 8,
            Format::Bits { bits, .. } => cols / BITS_UNIT * bits as usize,
        }
    }

    /// u32 words of `scales` per row of `cols` elements.
    pub fn scale_words(self, cols: usize) -> usize {
        match self {
            Format::F32 => 0,
            Format::Int8 { group } | Format::Int4 { group, wide_scales: false } => cols / group,
            Format::Int4 { group, wide_scales: true } => 2 * (cols / group),
            Format::Bits { scales: BitScales::Pair, .. } => cols / BITS_UNIT,
            Format::Bits { scales: BitScales::E8m0, .. } => (cols / BITS_UNIT).div_ceil(4),
            Format::Bits { scales: BitScales::Super { .. }, .. } => cols / SUPER_BLOCK * SUPER_WORDS,
        }
    }
}

/// A weight matrix as the GPU kernels read it: row-major `[rows, cols]`, rows = outputs,
/// cols = inputs. See the module documentation for the layouts.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedMatrix {
    pub rows: usize,
    pub cols: usize,
    pub format: Format,
    pub qs: Vec<u32>,
    pub scales: Vec<u32>,
}

/// WGSL's `pack2x16float(d, m)`: `d` in the low 16 bits, `m` in the high 16 bits.
pub fn pack_f16_pair(d: f16, m: f16) -> u32 {
    u32::from(d.to_bits()) | (u32::from(m.to_bits()) << 16)
}

/// WGSL's `unpack2x16float`, widened to f32 (exact): `(low half, high half)`.
pub fn unpack_f16_pair(word: u32) -> (f32, f32) {
    (f16::from_bits(word as u16).to_f32(), f16::from_bits((word >> 16) as u16).to_f32())
}

/// `x` as an f16 when the conversion is exact (a finite f16 with the same value), else `None`.
pub(crate) fn exact_f16(x: f32) -> Option<f16> {
    let h = f16::from_f32(x);
    (h.is_finite() && h.to_f32() == x).then_some(h)
}

/// The name a matrix takes in errors before the caller knows the tensor's name.
pub(crate) fn unnamed(dtype: impl std::fmt::Debug, rows: usize, cols: usize) -> String {
    format!("{dtype:?} matrix [{rows}, {cols}]")
}

/// Replaces the name in an `Error::Tensor` (raised by a constructor that did not know it).
pub(crate) fn rename(e: Error, name: &str) -> Error {
    match e {
        Error::Tensor { problem, .. } => Error::tensor(name, problem),
        other => other,
    }
}

/// Code `k` (0..32) of a Bits unit of `bits` words: its low plane's bits, then its high plane's
/// above them (see the module documentation).
pub fn bits_code(unit: &[u32], bits: u32, k: usize) -> u8 {
    let (low, high) = bit_planes(bits);
    let field = |at: usize, width: u32| {
        (unit[at + k * width as usize / 32] >> ((k * width as usize) % 32)) & ((1 << width) - 1)
    };
    let mut q = field(0, low);
    if high > 0 {
        q |= field(low as usize, high) << low;
    }
    q as u8
}

/// Packs 32 codes of `bits` bits into a Bits unit of `bits` words.
pub fn bits_unit(codes: &[u8], bits: u32) -> Vec<u32> {
    let (low, high) = bit_planes(bits);
    let mut unit = vec![0u32; bits as usize];
    for (k, &q) in codes[..BITS_UNIT].iter().enumerate() {
        let mut put = |at: usize, width: u32, v: u32| {
            unit[at + k * width as usize / 32] |= (v & ((1 << width) - 1)) << ((k * width as usize) % 32);
        };
        put(0, low, u32::from(q));
        if high > 0 {
            put(low as usize, high, u32::from(q) >> low);
        }
    }
    unit
}

/// `(d, m)` of element `e` of a Bits row whose scale words are `s`: `w = d * v + m` (for
/// super-blocks `d = dl`, `m = -ml`; `x + -y` is `x - y` exactly, so this is ggml's `dl * v - ml`).
fn scales_of(s: &[u32], format: Format, e: usize) -> (f32, f32) {
    let Format::Bits { scales, .. } = format else { unreachable!("a Bits format") };
    let g = e / BITS_UNIT;
    match scales {
        BitScales::Pair => unpack_f16_pair(s[g]),
        BitScales::E8m0 => (e8m0_half((s[g / 4] >> (8 * (g % 4))) as u8), -0.0),
        BitScales::Super { sub, mins } => {
            let block = &s[e / SUPER_BLOCK * SUPER_WORDS..][..SUPER_WORDS];
            let (d, dmin) = unpack_f16_pair(block[0]);
            let byte = |j: usize| (block[1 + j / 4] >> (8 * (j % 4))) as u8;
            let j = (e % SUPER_BLOCK) / sub as usize;
            let (sc, mn) = match (sub, mins) {
                (_, false) => (byte(j) as i8, 0),
                (16, true) => ((byte(j) & 15) as i8, (byte(j) >> 4) as i8),
                (_, true) => (byte(j) as i8, byte(8 + j) as i8),
            };
            (d * f32::from(sc), -(dmin * f32::from(mn)))
        }
    }
}

/// Packs 8 nibbles (element order) into one word, element `j` in bits `4j..4j + 4`.
pub(crate) fn nibble_word(q: &[u8]) -> u32 {
    q.iter().take(8).enumerate().fold(0u32, |w, (j, &v)| w | (u32::from(v & 0x0F) << (4 * j)))
}

impl PackedMatrix {
    /// A matrix from its parts, checked: the shape suits the format, and `qs` and `scales`
    /// have exactly the lengths the format implies. Errors are `Error::Tensor`.
    pub fn new(rows: usize, cols: usize, format: Format, qs: Vec<u32>, scales: Vec<u32>) -> Result<PackedMatrix> {
        let m = PackedMatrix { rows, cols, format, qs, scales };
        m.validate()?;
        Ok(m)
    }

    /// Checks the invariants that [`PackedMatrix::new`] checks (the fields are public).
    pub fn validate(&self) -> Result<()> {
        let name = || unnamed(self.format, self.rows, self.cols);
        self.format.check_shape(self.rows, self.cols).map_err(|p| Error::tensor(name(), p))?;
        let words = self.rows * self.row_words();
        let scales = self.rows * self.scale_words();
        if self.qs.len() != words || self.scales.len() != scales {
            return Err(Error::tensor(
                name(),
                format!(
                    "expected {words} words of values and {scales} of scales, found {} and {}",
                    self.qs.len(),
                    self.scales.len()
                ),
            ));
        }
        Ok(())
    }

    /// An F32 matrix holding `data` (`rows * cols` values, row-major). Panics on a length mismatch.
    pub fn from_f32(rows: usize, cols: usize, data: &[f32]) -> PackedMatrix {
        assert_eq!(rows.checked_mul(cols), Some(data.len()), "from_f32: {} values for [{rows}, {cols}]", data.len());
        PackedMatrix { rows, cols, format: Format::F32, qs: data.iter().map(|v| v.to_bits()).collect(), scales: vec![] }
    }

    /// An F32 matrix from a tensor of any rank: `cols` is the last dimension, `rows` the product
    /// of the others (a 3-D stack `[E, R, C]` becomes `[E * R, C]`; a vector is one row).
    pub fn from_tensor(t: &Tensor) -> PackedMatrix {
        let cols = t.shape.last().copied().unwrap_or(1);
        let rows = t.shape.iter().rev().skip(1).product();
        PackedMatrix::from_f32(rows, cols, &t.data)
    }

    /// u32 words of `qs` per row ([`Format::row_words`]).
    pub fn row_words(&self) -> usize {
        self.format.row_words(self.cols)
    }

    /// u32 words of `scales` per row ([`Format::scale_words`]).
    pub fn scale_words(&self) -> usize {
        self.format.scale_words(self.cols)
    }

    /// Bytes the matrix takes on the GPU: `4 * (qs.len() + scales.len())`.
    pub fn size_in_bytes(&self) -> usize {
        4 * (self.qs.len() + self.scales.len())
    }

    /// Dequantizes row `r` into `out` (`cols` values), in f32 exactly as the kernels do:
    /// `d * q + m` for Int4, `s * q` for Int8. Panics when `r` or `out` is out of range.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let out = &mut out[..self.cols];
        let rw = self.row_words();
        let words = &self.qs[r * rw..(r + 1) * rw];
        match self.format {
            Format::F32 => out.iter_mut().zip(words).for_each(|(o, &w)| *o = f32::from_bits(w)),
            Format::Int8 { group } => {
                let gpr = self.cols / group;
                for (g, chunk) in out.chunks_exact_mut(group).enumerate() {
                    let s = f32::from_bits(self.scales[r * gpr + g]);
                    for (k, o) in chunk.iter_mut().enumerate() {
                        let e = g * group + k;
                        let q = (words[e / 4] >> (8 * (e % 4))) as u8 as i8;
                        *o = s * f32::from(q);
                    }
                }
            }
            Format::Int4 { group, wide_scales } => {
                let gpr = self.cols / group;
                for (g, chunk) in out.chunks_exact_mut(group).enumerate() {
                    let at = r * gpr + g;
                    let (d, m) = match wide_scales {
                        false => unpack_f16_pair(self.scales[at]),
                        true => (f32::from_bits(self.scales[2 * at]), f32::from_bits(self.scales[2 * at + 1])),
                    };
                    for (k, o) in chunk.iter_mut().enumerate() {
                        let e = g * group + k;
                        let q = (words[e / 8] >> (4 * (e % 8))) & 0x0F;
                        *o = d * q as f32 + m;
                    }
                }
            }
            Format::Bits { bits, code, .. } => {
                let scales = &self.scales[r * self.scale_words()..(r + 1) * self.scale_words()];
                for (u, chunk) in out.chunks_exact_mut(BITS_UNIT).enumerate() {
                    let unit = &words[u * bits as usize..(u + 1) * bits as usize];
                    for (k, o) in chunk.iter_mut().enumerate() {
                        let (d, m) = scales_of(scales, self.format, u * BITS_UNIT + k);
                        *o = d * code.value(bits_code(unit, bits, k)) + m;
                    }
                }
            }
        }
    }

    /// The size of each weight's terms as a Bits kernel may compute them (`d * q + m'`, the
    /// offset folded into `m'`, or `d * sum(q x) + m' * sum(x)`): `|d| |q| + |m'|` for row `r`,
    /// with `q` the code (linear) or its level (codebook); for the kernel tests' error bounds.
    /// Panics for other formats.
    pub fn bits_term_sizes(&self, r: usize, out: &mut [f32]) {
        let Format::Bits { bits, code, .. } = self.format else { panic!("a Bits matrix") };
        let rw = self.row_words();
        let words = &self.qs[r * rw..(r + 1) * rw];
        let scales = &self.scales[r * self.scale_words()..(r + 1) * self.scale_words()];
        let offset = if let Code::Linear { offset } = code { f32::from(offset) } else { 0.0 };
        for (e, o) in out[..self.cols].iter_mut().enumerate() {
            let unit = &words[e / BITS_UNIT * bits as usize..][..bits as usize];
            let v = code.value(bits_code(unit, bits, e % BITS_UNIT)) + offset;
            let (d, m) = scales_of(scales, self.format, e);
            *o = d.abs() * v.abs() + (m - offset * d).abs();
        }
    }

    /// Every value in f32, row-major `[rows, cols]` (see [`PackedMatrix::dequantize_row`]).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows * self.cols];
        if self.cols > 0 {
            for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
                self.dequantize_row(r, row);
            }
        }
        out
    }

    /// `y = W x`, the CPU twin of the matrix-vector kernel: each weight is dequantized in f32
    /// as [`PackedMatrix::dequantize_row`] does, and `y[r] = sum over c of w[r][c] * x[c]`
    /// accumulates in f32 in increasing `c`. `x` has `cols` values; `y` has `rows`.
    pub fn matvec(&self, x: &[f32]) -> Vec<f32> {
        assert_eq!(x.len(), self.cols, "matvec: x has {} values, the matrix {} columns", x.len(), self.cols);
        self.matmul_rows(x, 1)
    }

    /// `Y = X W^T` for `x` = `[T, cols]` row-major, giving `[T, rows]`: row `t` of the result
    /// equals `matvec(x[t])` bit for bit (the CPU twin of the batched kernel).
    pub fn matmul(&self, x: &[f32]) -> Vec<f32> {
        if self.cols == 0 {
            assert!(x.is_empty(), "matmul: a matrix without columns takes no input");
            return vec![];
        }
        assert!(
            x.len().is_multiple_of(self.cols),
            "matmul: {} input values are not whole rows of {}",
            x.len(),
            self.cols
        );
        self.matmul_rows(x, x.len() / self.cols)
    }

    fn matmul_rows(&self, x: &[f32], t: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; t * self.rows];
        let mut w = vec![0.0f32; self.cols];
        for r in 0..self.rows {
            self.dequantize_row(r, &mut w);
            for ti in 0..t {
                let xs = &x[ti * self.cols..(ti + 1) * self.cols];
                let mut acc = 0.0f32;
                for (a, b) in w.iter().zip(xs) {
                    acc += a * b;
                }
                out[ti * self.rows + r] = acc;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DType;

    #[test]
    fn f16_pair_matches_wgsl_layout() {
        let w = pack_f16_pair(f16::from_f32(1.0), f16::from_f32(-2.0));
        assert_eq!(w, 0x3C00 | (0xC000 << 16));
        assert_eq!(unpack_f16_pair(w), (1.0, -2.0));
    }

    #[test]
    fn int4_layout_by_hand() {
        // One row of 16: group 8; word 0 holds elements 0..8 (0x76543210), word 1 elements 8..16.
        let m = PackedMatrix::new(
            1,
            16,
            Format::Int4 { group: 8, wide_scales: false },
            vec![0x7654_3210, 0xFEDC_BA98],
            vec![
                pack_f16_pair(f16::from_f32(0.5), f16::from_f32(-1.0)),
                pack_f16_pair(f16::from_f32(2.0), f16::from_f32(1.0)),
            ],
        )
        .unwrap();
        let expected: Vec<f32> =
            (0..16).map(|e| if e < 8 { 0.5 * e as f32 - 1.0 } else { 2.0 * e as f32 + 1.0 }).collect();
        assert_eq!(m.dequantize(), expected);
        assert_eq!((m.row_words(), m.scale_words(), m.size_in_bytes()), (2, 2, 16));
        let wide = PackedMatrix::new(
            1,
            16,
            Format::Int4 { group: 16, wide_scales: true },
            m.qs.clone(),
            vec![0.25f32.to_bits(), 3.0f32.to_bits()],
        )
        .unwrap();
        assert_eq!(wide.dequantize(), (0..16).map(|e| 0.25 * e as f32 + 3.0).collect::<Vec<_>>());
    }

    #[test]
    fn int8_layout_by_hand() {
        // Elements 0..4 = 1, -1, 127, -128; 4..8 = 0, 2, -3, 4; one group of 8 with s = 0.5.
        let word0 = u32::from_le_bytes([1, 0xFF, 0x7F, 0x80]);
        let word1 = u32::from_le_bytes([0, 2, (-3i8) as u8, 4]);
        let m = PackedMatrix::new(1, 8, Format::Int8 { group: 8 }, vec![word0, word1], vec![0.5f32.to_bits()]).unwrap();
        assert_eq!(m.dequantize(), vec![0.5, -0.5, 63.5, -64.0, 0.0, 1.0, -1.5, 2.0]);
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(Format::Int4 { group: 32, wide_scales: false }.check_shape(2, 48).is_err());
        assert!(Format::Int4 { group: 4, wide_scales: false }.check_shape(2, 12).is_err());
        assert!(Format::Int8 { group: 4 }.check_shape(2, 12).is_ok());
        assert!(Format::Int8 { group: 0 }.check_shape(2, 12).is_err());
        assert!(PackedMatrix::new(1, 8, Format::Int8 { group: 8 }, vec![0], vec![0]).is_err());
        let e = PackedMatrix::from_ggml(DType::Q4_0, 1, 48, &[0u8; 27]).unwrap_err();
        assert!(e.to_string().contains("not whole Q4_0 blocks"), "{e}");
        assert!(PackedMatrix::from_ggml(DType::Int4, 1, 32, &[]).is_err());
        assert!(PackedMatrix::from_ggml(DType::Q4_0, 1, 32, &[0u8; 17]).is_err());
    }

    #[test]
    fn tensor_shapes_flatten_leading_dims() {
        let t = Tensor::new(vec![2, 3, 4], (0..24).map(|v| v as f32).collect());
        let m = PackedMatrix::from_tensor(&t);
        assert_eq!((m.rows, m.cols, m.format), (6, 4, Format::F32));
        assert_eq!(m.dequantize(), t.data);
        let v = PackedMatrix::from_tensor(&Tensor::new(vec![5], vec![1.0; 5]));
        assert_eq!((v.rows, v.cols), (1, 5));
    }
}
