//! flint's packed weight format: lossless repacking of ggml blocks and GPTQ checkpoints, the
//! CPU twins of the kernels (matvec, matmul), and the INT4 quantizer.
//!
//! "Exact" here means bit for bit, except that a zero may differ in sign: ggml's `d * (q - 8)`
//! and GPTQ's `d * (q - zero)` give -0 for a negative `d` (or a zero `d`) where `d * q + m`
//! gives +0, and no choice of `(d, m)` can make `x + (-x)` negative. The two zeros are equal
//! as numbers, and the sign of a zero term never changes a nonzero sum.

mod common;

use flint::format::gguf::GgufFile;
use flint::quant::ggml;
use flint::quant::packed::{pack_f16_pair, unpack_f16_pair, BitScales, Code, Format, PackedMatrix};
use flint::quant::quantize::INT4_GROUP_SIZES;
use flint::weights::gptq::{GptqCheckpoint, GptqConfig};
use flint::weights::safetensors::SafetensorsCheckpoint;
use flint::weights::{DType, TensorSource};
use flint::ModelFiles;
use half::f16;
use std::path::PathBuf;

// ---- helpers ----------------------------------------------------------------------------------

/// SplitMix64: a small deterministic generator (the tests need no `rand`).
struct Rng(u64);

impl Rng {
    fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn byte(&mut self) -> u8 {
        self.u64() as u8
    }
    fn coin(&mut self) -> bool {
        self.u64() >> 63 == 1
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn gaussian(&mut self) -> f32 {
        let (u1, u2) = (1.0 - self.unit(), self.unit());
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
    /// An f16 scale: mostly of weight magnitude (either sign), sometimes any finite f16
    /// (subnormals, huge values) to reach the corners.
    fn f16_scale(&mut self) -> f16 {
        if self.u64() & 7 == 0 {
            loop {
                let h = f16::from_bits(self.u64() as u16);
                if h.is_finite() {
                    return h;
                }
            }
        }
        let mag = 10f64.powf(-4.0 + 3.0 * self.unit());
        f16::from_f64(if self.coin() { mag } else { -mag })
    }
}

/// Equal bit for bit, or both zero (see the file comment).
fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a == 0.0 && b == 0.0)
}

fn assert_same(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = (0..got.len()).find(|&i| !same(got[i], want[i])) {
        panic!(
            "{what}: element {i} is {} ({:#010x}), expected {} ({:#010x})",
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
}

/// Random ggml blocks of `dtype` for `n` elements.
fn random_blocks(rng: &mut Rng, dtype: DType, n: usize) -> Vec<u8> {
    let (per_block, block_bytes) = flint::tensor::ggml::block_info(dtype).unwrap();
    let mut out = Vec::with_capacity(n / per_block * block_bytes);
    for _ in 0..n / per_block {
        let mut b: Vec<u8> = (0..block_bytes).map(|_| rng.byte()).collect();
        let mut put = |b: &mut Vec<u8>, at: usize| b[at..at + 2].copy_from_slice(&rng.f16_scale().to_le_bytes());
        match dtype {
            DType::F16 | DType::BF16 | DType::F32 => {}
            DType::Q8_0 | DType::Q4_0 => put(&mut b, 0),
            DType::Q4_1 | DType::Q4_K => {
                put(&mut b, 0);
                put(&mut b, 2);
            }
            DType::Q6_K => put(&mut b, 208),
            DType::Q5_0 | DType::IQ4_NL | DType::IQ4_XS => put(&mut b, 0),
            DType::Q5_1 | DType::Q5_K => {
                put(&mut b, 0);
                put(&mut b, 2);
            }
            DType::Q2_K => {
                put(&mut b, 80);
                put(&mut b, 82);
            }
            DType::Q3_K => put(&mut b, 108),
            DType::MXFP4 => {} // every E8M0 byte is a scale, the subnormal 0 and 1 included
            DType::Int4 => unreachable!(),
        }
        out.extend(b);
    }
    if dtype == DType::F32 {
        // Finite values only; random bits would be mostly fine, but keep NaN payloads out.
        for c in out.chunks_exact_mut(4) {
            c.copy_from_slice(&(rng.gaussian()).to_le_bytes());
        }
    }
    out
}

/// For every value a packed Int4 matrix can produce, `d * q + m` with and without a fused
/// multiply-add agree (the products are exact), so a kernel may use either.
fn assert_fma_invariant(m: &PackedMatrix) {
    let Format::Int4 { group, wide_scales } = m.format else { return };
    let gpr = m.cols / group;
    for r in 0..m.rows {
        for g in 0..gpr {
            let at = r * gpr + g;
            let (d, mm) = match wide_scales {
                false => unpack_f16_pair(m.scales[at]),
                true => (f32::from_bits(m.scales[2 * at]), f32::from_bits(m.scales[2 * at + 1])),
            };
            for q in 0..16 {
                let (plain, fused) = (d * q as f32 + mm, d.mul_add(q as f32, mm));
                assert!(
                    same(plain, fused) || (plain.is_nan() && fused.is_nan()),
                    "row {r} group {g} q {q}: {plain} vs {fused}"
                );
            }
        }
    }
}

fn fixture_dirs(suffix: &str) -> Vec<PathBuf> {
    let root = common::fixture("");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().ends_with(suffix))
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no *{suffix} fixtures under {}", root.display());
    dirs
}

/// Every tensor of `src`: `load_packed(..).dequantize()` equals `load_f32(..).data`; returns
/// how many tensors took each format.
fn check_source_lossless(src: &dyn TensorSource, what: &str) -> Vec<(Format, usize)> {
    let mut formats: Vec<(Format, usize)> = vec![];
    for name in src.names() {
        let want = src.load_f32(&name).unwrap();
        let packed = src.load_packed(&name).unwrap_or_else(|e| panic!("{what} {name}: {e}"));
        packed.validate().unwrap();
        assert_eq!(packed.cols, want.shape.last().copied().unwrap_or(1), "{what} {name}: cols");
        assert_eq!(packed.rows * packed.cols, want.data.len(), "{what} {name}: rows");
        assert_same(&packed.dequantize(), &want.data, &format!("{what} {name}"));
        assert_fma_invariant(&packed);
        match formats.iter_mut().find(|(f, _)| *f == packed.format) {
            Some((_, n)) => *n += 1,
            None => formats.push((packed.format, 1)),
        }
    }
    formats
}

// ---- ggml blocks ------------------------------------------------------------------------------

#[test]
fn ggml_blocks_repack_exactly_at_awkward_shapes() {
    let mut rng = Rng(7);
    let bits = |bits, code, scales| Format::Bits { bits, code, scales };
    let linear = |offset| Code::Linear { offset };
    let sup = |sub, mins| BitScales::Super { sub, mins };
    let cases: [(DType, Format, &[usize]); 16] = [
        (DType::Q4_0, Format::Int4 { group: 32, wide_scales: false }, &[32, 96, 160]),
        (DType::Q4_1, Format::Int4 { group: 32, wide_scales: false }, &[32, 96, 160]),
        (DType::Q4_K, Format::Int4 { group: 32, wide_scales: true }, &[256, 768]),
        (DType::Q8_0, Format::Int8 { group: 32 }, &[32, 96, 160]),
        (DType::Q5_0, bits(5, linear(16), BitScales::Pair), &[32, 96, 160]),
        (DType::Q5_1, bits(5, linear(0), BitScales::Pair), &[32, 96, 160]),
        (DType::IQ4_NL, bits(4, Code::Iq4, BitScales::Pair), &[32, 96, 160]),
        // 5 blocks a row: the row's E8M0 bytes end part-way through a word.
        (DType::MXFP4, bits(4, Code::Mxfp4, BitScales::E8m0), &[32, 160, 256]),
        (DType::Q2_K, bits(2, linear(0), sup(16, true)), &[256, 768]),
        (DType::Q3_K, bits(3, linear(4), sup(16, false)), &[256, 768]),
        (DType::Q5_K, bits(5, linear(0), sup(32, true)), &[256, 768]),
        (DType::Q6_K, bits(6, linear(32), sup(16, false)), &[256, 768]),
        (DType::IQ4_XS, bits(4, Code::Iq4, sup(32, false)), &[256, 768]),
        (DType::F32, Format::F32, &[1, 5, 32]),
        (DType::F16, Format::F32, &[1, 7, 32]),
        (DType::BF16, Format::F32, &[3, 9, 32]),
    ];
    for (dtype, format, cols_list) in cases {
        for &rows in &[1usize, 3, 17] {
            for &cols in cols_list {
                let what = format!("{dtype:?} [{rows}, {cols}]");
                let mut bytes = random_blocks(&mut rng, dtype, rows * cols);
                if dtype == DType::Q4_0 {
                    // Keep -8d inside f16 here; the overflow case has its own test.
                    for b in bytes.chunks_exact_mut(18) {
                        let d = f16::from_le_bytes([b[0], b[1]]);
                        if d.to_f32().abs() > 8000.0 {
                            b[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
                        }
                    }
                }
                let want = ggml::dequantize(dtype, &bytes, rows * cols).unwrap();
                let packed = PackedMatrix::from_ggml(dtype, rows, cols, &bytes).unwrap();
                assert_eq!(packed.format, format, "{what}");
                assert_eq!((packed.rows, packed.cols), (rows, cols), "{what}");
                packed.validate().unwrap();
                assert_same(&packed.dequantize(), &want, &what);
                assert_fma_invariant(&packed);
                // Rows are independent: packing row r alone gives row r's words and scales.
                let (per_block, block_bytes) = flint::tensor::ggml::block_info(dtype).unwrap();
                let row_bytes = cols / per_block * block_bytes;
                let r = rows / 2;
                let alone =
                    PackedMatrix::from_ggml(dtype, 1, cols, &bytes[r * row_bytes..(r + 1) * row_bytes]).unwrap();
                let (rw, sw) = (packed.row_words(), packed.scales.len() / rows);
                assert_eq!(alone.qs, packed.qs[r * rw..(r + 1) * rw], "{what}: row {r} words");
                assert_eq!(alone.scales, packed.scales[r * sw..(r + 1) * sw], "{what}: row {r} scales");
            }
        }
    }
}

#[test]
fn q4_0_scales_beyond_f16_range_go_wide_and_stay_exact() {
    // d = 10000: -8d = -80000 is not an f16, so the matrix takes f32 scales.
    let mut rng = Rng(11);
    let mut bytes = random_blocks(&mut rng, DType::Q4_0, 3 * 64);
    bytes[18..20].copy_from_slice(&f16::from_f32(10000.0).to_le_bytes());
    let packed = PackedMatrix::from_ggml(DType::Q4_0, 3, 64, &bytes).unwrap();
    assert_eq!(packed.format, Format::Int4 { group: 32, wide_scales: true });
    assert_same(&packed.dequantize(), &ggml::dequantize(DType::Q4_0, &bytes, 3 * 64).unwrap(), "wide Q4_0");
}

#[test]
fn q4_0_signed_zero_is_the_only_difference() {
    // A negative d with q = 8: ggml computes d * 0 = -0, the packed form d * 8 + (-8d) = +0.
    let mut block = f16::from_f32(-0.5).to_le_bytes().to_vec();
    block.extend([0x88u8; 16]);
    let want = ggml::dequantize(DType::Q4_0, &block, 32).unwrap();
    let got = PackedMatrix::from_ggml(DType::Q4_0, 1, 32, &block).unwrap().dequantize();
    assert!(want.iter().all(|v| v.to_bits() == (-0.0f32).to_bits()));
    assert!(got.iter().all(|v| v.to_bits() == 0));
}

#[test]
fn q4_1_keeps_the_block_scale_words() {
    // The pair word is the block's first four bytes: d in the low half, m in the high half.
    let mut block = [f16::from_f32(0.25).to_le_bytes(), f16::from_f32(-1.5).to_le_bytes()].concat();
    block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let packed = PackedMatrix::from_ggml(DType::Q4_1, 1, 32, &block).unwrap();
    assert_eq!(packed.scales, vec![pack_f16_pair(f16::from_f32(0.25), f16::from_f32(-1.5))]);
    // Elements 0..8 = low nibbles 0..7, elements 16..24 = high nibbles 15..8.
    assert_eq!(packed.qs, vec![0x7654_3210, 0xFEDC_BA98, 0x89AB_CDEF, 0x0123_4567]);
}

// ---- GGUF -------------------------------------------------------------------------------------

#[test]
fn gguf_q4_0_fixtures_pack_losslessly() {
    for dir in fixture_dirs("-q4_0") {
        let file = GgufFile::open(&dir.join("model.gguf")).unwrap();
        let what = dir.file_name().unwrap().to_string_lossy().into_owned();
        let formats = check_source_lossless(&file, &what);
        assert!(
            formats.iter().any(|(f, _)| *f == Format::Int4 { group: 32, wide_scales: false }),
            "{what}: {formats:?}"
        );
        // Stacked experts [E, R, C]: expert e's words start at e * R * (C / 8).
        for info in file.tensors().iter().filter(|t| t.dims.len() == 3 && t.dtype == DType::Q4_0) {
            let (c, r, e) = (info.dims[0] as usize, info.dims[1] as usize, info.dims[2] as usize);
            let packed = file.load_packed(&info.name).unwrap();
            assert_eq!((packed.rows, packed.cols), (e * r, c));
            let (_, bytes) = file.tensor_bytes(&info.name).unwrap();
            let per_expert = bytes.len() / e;
            for x in 0..e {
                let alone =
                    PackedMatrix::from_ggml(DType::Q4_0, r, c, &bytes[x * per_expert..(x + 1) * per_expert]).unwrap();
                let words = r * (c / 8);
                assert_eq!(alone.qs, packed.qs[x * words..(x + 1) * words], "{} expert {x}", info.name);
            }
        }
    }
}

#[test]
fn real_smollm2_gguf_packs_losslessly() {
    let Some(path) = common::require_real_model() else { return };
    let file = GgufFile::open(&path).unwrap();
    let formats = check_source_lossless(&file, "SmolLM2");
    eprintln!("SmolLM2 formats: {formats:?}");
    assert!(formats.iter().any(|(f, _)| *f == Format::Int4 { group: 32, wide_scales: false }));
    assert!(formats.iter().any(|(f, _)| *f == Format::Int8 { group: 32 }));
    // The kernels' twin on a real matrix: one MLP projection.
    let m = file.load_packed("blk.0.ffn_down.weight").unwrap();
    let mut rng = Rng(5);
    let x: Vec<f32> = (0..3 * m.cols).map(|_| rng.gaussian()).collect();
    check_twins(&m, &x, "SmolLM2 blk.0.ffn_down");
}

// ---- GPTQ -------------------------------------------------------------------------------------

#[test]
fn gptq_fixtures_pack_losslessly() {
    for dir in fixture_dirs("-gptq") {
        let what = dir.file_name().unwrap().to_string_lossy().into_owned();
        let model = ModelFiles::open(&dir).unwrap();
        let src = model.tensors.as_ref();
        let quantized: Vec<String> = src.names().into_iter().filter(|n| src.dtype(n) == Some(DType::Int4)).collect();
        assert!(!quantized.is_empty(), "{what}: no quantized tensors");
        for name in &quantized {
            let packed = src.load_packed(name).unwrap();
            // The fixtures are symmetric (every qzeros nibble 7): f16 pairs (d, -8d).
            assert_eq!(packed.format, Format::Int4 { group: 32, wide_scales: false }, "{what} {name}");
        }
        let formats = check_source_lossless(src, &what);
        assert!(formats.contains(&(Format::Int4 { group: 32, wide_scales: false }, quantized.len())), "{formats:?}");
    }
}

/// A GPTQ linear, written as a safetensors file in memory.
struct GptqLinear {
    in_dim: usize,
    out_dim: usize,
    /// q[i][o], zero[g][o] as stored (0..15), scale[g][o].
    q: Vec<Vec<u8>>,
    zero: Vec<Vec<u8>>,
    scale: Vec<Vec<f16>>,
    g_idx: Option<Vec<i32>>,
}

impl GptqLinear {
    fn random(rng: &mut Rng, in_dim: usize, out_dim: usize, group: usize, symmetric: bool) -> GptqLinear {
        let groups = in_dim / group;
        GptqLinear {
            in_dim,
            out_dim,
            q: (0..in_dim).map(|_| (0..out_dim).map(|_| rng.byte() & 15).collect()).collect(),
            zero: (0..groups)
                .map(|_| (0..out_dim).map(|_| if symmetric { 7 } else { rng.byte() & 15 }).collect())
                .collect(),
            scale: (0..groups).map(|_| (0..out_dim).map(|_| rng.f16_scale()).collect()).collect(),
            g_idx: Some((0..in_dim).map(|i| (i / group) as i32).collect()),
        }
    }

    fn checkpoint(&self, group_size: Option<usize>, zero_minus_one: bool) -> GptqCheckpoint {
        let groups = self.zero.len();
        let mut qweight = vec![];
        for w in 0..self.in_dim / 8 {
            for o in 0..self.out_dim {
                let word = (0..8).fold(0u32, |acc, j| acc | (u32::from(self.q[8 * w + j][o]) << (4 * j)));
                qweight.extend(word.to_le_bytes());
            }
        }
        let mut qzeros = vec![];
        for g in 0..groups {
            for ow in 0..self.out_dim.div_ceil(8) {
                let word = (0..8)
                    .filter(|j| 8 * ow + j < self.out_dim)
                    .fold(0u32, |acc, j| acc | (u32::from(self.zero[g][8 * ow + j]) << (4 * j)));
                qzeros.extend(word.to_le_bytes());
            }
        }
        let scales: Vec<u8> = self.scale.iter().flatten().flat_map(|s| s.to_le_bytes()).collect();
        let mut tensors = vec![
            ("lin.qweight", "I32", vec![self.in_dim / 8, self.out_dim], qweight),
            ("lin.qzeros", "I32", vec![groups, self.out_dim.div_ceil(8)], qzeros),
            ("lin.scales", "F16", vec![groups, self.out_dim], scales),
        ];
        if let Some(g_idx) = &self.g_idx {
            tensors.push(("lin.g_idx", "I32", vec![self.in_dim], g_idx.iter().flat_map(|v| v.to_le_bytes()).collect()));
        }
        let file = safetensors_bytes(&tensors);
        let inner = SafetensorsCheckpoint::from_bytes(vec![("model.safetensors".into(), file.into())]).unwrap();
        GptqCheckpoint::new(inner, GptqConfig { bits: 4, group_size, zero_minus_one })
    }
}

fn safetensors_bytes(tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0;
    for (name, dtype, shape, data) in tensors {
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + data.len()]}),
        );
        offset += data.len();
    }
    let mut text = serde_json::Value::Object(header).to_string();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text.as_bytes());
    for (_, _, _, data) in tensors {
        out.extend(data);
    }
    out
}

#[test]
fn gptq_asymmetric_v1_v2_and_per_channel_pack_losslessly() {
    let mut rng = Rng(3);
    for (in_dim, out_dim, group) in [(64, 12, 32), (128, 17, 64), (256, 8, 128)] {
        let lin = GptqLinear::random(&mut rng, in_dim, out_dim, group, false);
        for zero_minus_one in [true, false] {
            let ckpt = lin.checkpoint(Some(group), zero_minus_one);
            let packed = ckpt.load_packed("lin.weight").unwrap();
            assert_eq!(packed.format, Format::Int4 { group, wide_scales: true });
            assert_eq!((packed.rows, packed.cols), (out_dim, in_dim));
            assert_same(&packed.dequantize(), &ckpt.load_f32("lin.weight").unwrap().data, "asymmetric GPTQ");
            assert_fma_invariant(&packed);
        }
        // Symmetric: v1 nibble 7 (zero 8) gives f16 pairs; as v2 the same nibbles mean zero 7.
        let sym = GptqLinear::random(&mut rng, in_dim, out_dim, group, true);
        for (zero_minus_one, wide_scales) in [(true, false), (false, true)] {
            let ckpt = sym.checkpoint(Some(group), zero_minus_one);
            let packed = ckpt.load_packed("lin.weight").unwrap();
            assert_eq!(packed.format, Format::Int4 { group, wide_scales });
            assert_same(&packed.dequantize(), &ckpt.load_f32("lin.weight").unwrap().data, "symmetric GPTQ");
        }
    }
    // group_size -1: one group per row.
    let mut lin = GptqLinear::random(&mut rng, 64, 9, 64, false);
    lin.g_idx = None;
    let ckpt = lin.checkpoint(None, true);
    let packed = ckpt.load_packed("lin.weight").unwrap();
    assert_eq!(packed.format, Format::Int4 { group: 64, wide_scales: true });
    assert_same(&packed.dequantize(), &ckpt.load_f32("lin.weight").unwrap().data, "per-channel GPTQ");
}

#[test]
fn gptq_act_order_g_idx_is_an_error_that_names_it() {
    let mut rng = Rng(4);
    let mut lin = GptqLinear::random(&mut rng, 64, 8, 32, true);
    let mut g_idx = lin.g_idx.clone().unwrap();
    g_idx.swap(3, 40);
    lin.g_idx = Some(g_idx);
    let ckpt = lin.checkpoint(Some(32), true);
    let e = ckpt.load_packed("lin.weight").unwrap_err().to_string();
    assert!(e.contains("lin.g_idx") && e.contains("g_idx[3] = 1"), "{e}");
    // load_f32 still reads it (it honours g_idx).
    assert!(ckpt.load_f32("lin.weight").is_ok());
}

// ---- the kernels' CPU twins -------------------------------------------------------------------

/// `matvec` and `matmul` against a dequantize-then-dot reference.
///
/// The twins compute each weight exactly as `dequantize()` does, so their only error is the f32
/// dot product: summing n products recursively in f32 is within `gamma_n * sum |w_i x_i|` of
/// the exact dot, `gamma_n = n u / (1 - n u)`, u = 2^-24 (Higham, Accuracy and Stability of
/// Numerical Algorithms, 3.1). The reference is the exact dot up to f64 rounding (each product
/// of two f32 is exact in f64; the f64 sum adds at most n 2^-53 sum |w x|, far below the
/// bound). And since the twins accumulate in increasing column order, an f32 dot in that order
/// over `dequantize()`'s values must match them bit for bit.
fn check_twins(m: &PackedMatrix, x: &[f32], what: &str) {
    let t = x.len() / m.cols;
    let w = m.dequantize();
    let y = m.matmul(x);
    assert_eq!(y.len(), t * m.rows);
    let u = f64::powi(2.0, -24);
    let n = m.cols as f64;
    let gamma = n * u / (1.0 - n * u);
    for ti in 0..t {
        let xs = &x[ti * m.cols..(ti + 1) * m.cols];
        let yv = m.matvec(xs);
        assert_eq!(
            yv.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            y[ti * m.rows..(ti + 1) * m.rows].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{what}: matmul row {ti} vs matvec"
        );
        for r in 0..m.rows {
            let row = &w[r * m.cols..(r + 1) * m.cols];
            let exact: f64 = row.iter().zip(xs).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
            let abs: f64 = row.iter().zip(xs).map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs()).sum();
            let got = yv[r];
            assert!(
                (f64::from(got) - exact).abs() <= gamma * abs,
                "{what}: row {r}: {got} vs {exact} (bound {})",
                gamma * abs
            );
            let mut acc = 0.0f32;
            for (a, b) in row.iter().zip(xs) {
                acc += a * b;
            }
            assert_eq!(got.to_bits(), acc.to_bits(), "{what}: row {r} vs an in-order f32 dot");
        }
    }
}

#[test]
fn matvec_and_matmul_twins_agree_with_dequantize_then_dot() {
    let mut rng = Rng(9);
    let (rows, cols) = (17, 512);
    let gauss: Vec<f32> = (0..rows * cols).map(|_| rng.gaussian() * 0.05).collect();
    let mut mats = vec![
        ("F32".to_string(), PackedMatrix::from_f32(rows, cols, &gauss)),
        ("INT4 quantized".to_string(), PackedMatrix::quantize_int4(rows, cols, &gauss, 64).unwrap()),
    ];
    for dtype in [
        DType::Q4_0,
        DType::Q4_1,
        DType::Q4_K,
        DType::Q8_0,
        DType::Q6_K,
        DType::Q5_0,
        DType::Q2_K,
        DType::IQ4_XS,
        DType::MXFP4,
    ] {
        let mut bytes = random_blocks(&mut rng, dtype, rows * cols);
        if dtype == DType::Q4_0 {
            for b in bytes.chunks_exact_mut(18) {
                b[..2].copy_from_slice(&f16::from_f32(0.01).to_le_bytes());
            }
        }
        if dtype == DType::MXFP4 {
            // Scales 2^-8 .. 2^7: products stay finite.
            for b in bytes.chunks_exact_mut(17) {
                b[0] = 120 + b[0] % 16;
            }
        }
        mats.push((format!("{dtype:?}"), PackedMatrix::from_ggml(dtype, rows, cols, &bytes).unwrap()));
    }
    for (what, m) in &mats {
        let x: Vec<f32> = (0..4 * cols).map(|_| rng.gaussian()).collect();
        check_twins(m, &x, what);
    }
}

// ---- the quantizer ----------------------------------------------------------------------------

/// Plain min/max INT4 with stored f16 values: d = f16((max - min) / 15), m = f16(min),
/// q = nearest. Returns the dequantized values.
fn minmax_int4(x: &[f32], group: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for g in x.chunks_exact(group) {
        let lo = g.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = g.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let d = f16::from_f64((f64::from(hi) - f64::from(lo)) / 15.0).to_f32();
        let m = f16::from_f32(lo).to_f32();
        for &v in g {
            let q = if d > 0.0 { ((v - m) / d).round().clamp(0.0, 15.0) } else { 0.0 };
            out.push(d * q + m);
        }
    }
    out
}

fn rms(a: &[f32], b: &[f32]) -> f64 {
    (a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum::<f64>() / a.len() as f64).sqrt()
}

/// On Gaussian data the quantizer beats plain min/max, stays under the uniform-error estimate
/// R / (15 sqrt 12) (aggregated as the root mean of R^2 over groups), and under the worst-case
/// bound of min/max in every group (see `quantize_int4`'s documentation for both).
#[test]
fn quantizer_error_on_gaussian_data() {
    let (rows, cols) = (256, 1024);
    let mut rng = Rng(42);
    let x: Vec<f32> = (0..rows * cols).map(|_| rng.gaussian()).collect();
    for group in INT4_GROUP_SIZES {
        let m = PackedMatrix::quantize_int4(rows, cols, &x, group).unwrap();
        assert_eq!(m.format, Format::Int4 { group, wide_scales: false });
        let w = m.dequantize();
        assert!(w.iter().all(|v| v.is_finite()));
        assert_fma_invariant(&m);
        let ours = rms(&x, &w);
        let plain = rms(&x, &minmax_int4(&x, group));
        let mut mean_r2 = 0.0f64;
        for (gx, gw) in x.chunks_exact(group).zip(w.chunks_exact(group)) {
            let lo = gx.iter().copied().fold(f32::INFINITY, f32::min) as f64;
            let hi = gx.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let r = hi - lo;
            mean_r2 += r * r;
            let eps = f64::powi(2.0, -11);
            let worst = r / 30.0 * (1.0 + eps) + eps * (lo.abs() + r) + 1e-6;
            assert!(rms(gx, gw) <= worst, "group {group}: a group's RMS {} above its worst case {worst}", rms(gx, gw));
        }
        let estimate = (mean_r2 / (x.len() / group) as f64).sqrt() / (15.0 * 12f64.sqrt());
        eprintln!(
            "group {group}: RMS {ours:.5} (min/max {plain:.5}, {:.1}% lower; uniform estimate {estimate:.5})",
            100.0 * (1.0 - ours / plain)
        );
        assert!(ours < plain, "group {group}: {ours} not below min/max {plain}");
        assert!(ours < estimate, "group {group}: {ours} not below the estimate {estimate}");
    }
}

/// Constant groups: exact whenever an f16 pair can hold the constant (every f16 value; every
/// multiple of 2^-24 below 0.5 in magnitude), else within 2^-25 (f16's finest step is 2^-24,
/// so below 0.5 every `d * q + m` is such a multiple); never NaN.
#[test]
fn quantizer_constant_groups_are_exact() {
    let mut rng = Rng(8);
    let step = f32::powi(2.0, -24);
    let mut consts = vec![0.0f32, -0.0, 0.75, -3.0, 1.0, 65504.0, -65504.0, step, -3.0 * step];
    // Weight-sized values on the 2^-24 grid (not f16 values): found by the (d, q, m) search.
    consts.extend((0..300).map(|_| ((rng.gaussian() * 0.05) / step).round() * step));
    let check = |c: f32, tolerance: f32| {
        for group in INT4_GROUP_SIZES {
            let x = vec![c; 2 * group];
            let w = PackedMatrix::quantize_int4(1, 2 * group, &x, group).unwrap().dequantize();
            assert!(
                w.iter().all(|&v| (v - c).abs() <= tolerance),
                "constant {c} ({:#010x}), group {group}: got {}",
                c.to_bits(),
                w[0]
            );
        }
    };
    for &c in &consts {
        check(c, 0.0);
    }
    // Arbitrary f32 constants below 0.5: the nearest multiple of 2^-24.
    for _ in 0..300 {
        check(rng.gaussian() * 0.05, step / 2.0);
    }
    // A zero group beside a busy one.
    let mut x: Vec<f32> = (0..64).map(|_| rng.gaussian()).collect();
    x[32..].fill(0.0);
    let w = PackedMatrix::quantize_int4(1, 64, &x, 32).unwrap().dequantize();
    assert!(w.iter().all(|v| v.is_finite()));
    assert!(w[32..].iter().all(|&v| v == 0.0));
}

/// How often arbitrary constants of magnitude 0.5..64 come out exact (reported, not asserted:
/// there the pair must reach 24 significant bits with 11 + 15, which depends on c's digits).
#[test]
fn quantizer_constant_groups_above_one_half() {
    let mut rng = Rng(12);
    let (mut exact, n) = (0, 1000);
    for _ in 0..n {
        let c = (0.5 + 63.5 * rng.unit()) as f32 * if rng.coin() { 1.0 } else { -1.0 };
        let w = PackedMatrix::quantize_int4(1, 32, &[c; 32], 32).unwrap().dequantize();
        let ulp16 = f32::powi(2.0, c.abs().log2().floor() as i32 - 10);
        assert!((w[0] - c).abs() <= ulp16 / 2.0, "{c}: {}", w[0]);
        exact += usize::from(w[0] == c);
    }
    eprintln!("constants in 0.5..64: {exact} of {n} exact");
}

#[test]
fn quantizer_rejects_what_it_cannot_store() {
    let x = vec![0.5f32; 256];
    for bad_group in [0, 8, 16, 48, 256] {
        let e = PackedMatrix::quantize_int4(1, 256, &x, bad_group).unwrap_err().to_string();
        assert!(e.contains("group size"), "{e}");
    }
    assert!(PackedMatrix::quantize_int4(2, 48, &x[..96], 32).is_err());
    assert!(PackedMatrix::quantize_int4(2, 64, &x, 32).is_err());
    let mut y = vec![0.5f32; 64];
    y[37] = f32::NAN;
    let e = PackedMatrix::quantize_int4(2, 32, &y, 32).unwrap_err().to_string();
    assert!(e.contains("row 1, column 5"), "{e}");
    y[37] = 1e6;
    assert!(PackedMatrix::quantize_int4(2, 32, &y, 32).is_err());
}

#[test]
fn default_load_packed_is_f32() {
    // A plain safetensors checkpoint uses the trait's default: F32, leading dims flattened.
    let data: Vec<u8> = (0..24).flat_map(|v| (v as f32).to_le_bytes()).collect();
    let file = safetensors_bytes(&[("experts", "F32", vec![2, 3, 4], data)]);
    let ckpt = SafetensorsCheckpoint::from_bytes(vec![("model.safetensors".into(), file.into())]).unwrap();
    let m = ckpt.load_packed("experts").unwrap();
    assert_eq!((m.rows, m.cols, m.format), (6, 4, Format::F32));
    assert_eq!(m.dequantize(), (0..24).map(|v| v as f32).collect::<Vec<_>>());
}
