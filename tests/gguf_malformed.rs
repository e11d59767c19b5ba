//! The GGUF reader against malformed files (each error names its problem), well-formed little
//! files (shapes, values, metadata, config rules), and the real SmolLM2 GGUF.
//!
//! Files are built in memory by `GgufWriter` below, a minimal writer of the GGUF v3 layout.

use flint::config::gguf::config_from_gguf;
use flint::config::{Family, FfnKind, QkNorm, RopePairing};
use flint::format::gguf::{GgufFile, MetaValue};
use flint::weights::{Bytes, DType, TensorSource};
use flint::Error;
use half::f16;
mod common;

use common::require_real_model;

// ------------------------------------------------------------------------------------------------
// A tiny GGUF writer

/// GGUF value-type numbers.
const T_U8: u32 = 0;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;

/// ggml type numbers.
const G_F32: u32 = 0;
const G_F16: u32 = 1;
const G_Q4_0: u32 = 2;
const G_Q8_0: u32 = 8;

fn gstr(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

/// A metadata value: its type number and its encoded bytes.
#[derive(Clone)]
struct Val(u32, Vec<u8>);

fn v_str(s: &str) -> Val {
    Val(T_STRING, gstr(s))
}
fn v_u32(x: u32) -> Val {
    Val(T_U32, x.to_le_bytes().to_vec())
}
fn v_f32(x: f32) -> Val {
    Val(T_F32, x.to_le_bytes().to_vec())
}
fn v_bool(b: bool) -> Val {
    Val(T_BOOL, vec![b as u8])
}
fn v_array(elem_type: u32, items: &[Val]) -> Val {
    let mut out = elem_type.to_le_bytes().to_vec();
    out.extend_from_slice(&(items.len() as u64).to_le_bytes());
    for it in items {
        assert_eq!(it.0, elem_type);
        out.extend_from_slice(&it.1);
    }
    Val(T_ARRAY, out)
}
fn v_str_array(items: &[&str]) -> Val {
    v_array(T_STRING, &items.iter().map(|s| v_str(s)).collect::<Vec<_>>())
}

struct TensorSpec {
    name: String,
    dims: Vec<u64>,
    ggml_type: u32,
    data: Vec<u8>,
    /// Written instead of the computed offset.
    offset: Option<u64>,
}

struct GgufWriter {
    magic: [u8; 4],
    version: u32,
    alignment: u64,
    kvs: Vec<(String, Val)>,
    tensors: Vec<TensorSpec>,
    tensor_count: Option<u64>,
    kv_count: Option<u64>,
}

impl GgufWriter {
    fn new() -> Self {
        GgufWriter {
            magic: *b"GGUF",
            version: 3,
            alignment: 32,
            kvs: vec![],
            tensors: vec![],
            tensor_count: None,
            kv_count: None,
        }
    }

    fn kv(mut self, key: &str, v: Val) -> Self {
        self.kvs.push((key.into(), v));
        self
    }

    fn tensor(mut self, name: &str, dims: &[u64], ggml_type: u32, data: Vec<u8>) -> Self {
        self.tensors.push(TensorSpec { name: name.into(), dims: dims.to_vec(), ggml_type, data, offset: None });
        self
    }

    fn f32_tensor(self, name: &str, dims: &[u64], values: &[f32]) -> Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, dims, G_F32, data)
    }

    /// An F32 tensor of zeros with the right size for its dims.
    fn zeros(self, name: &str, dims: &[u64]) -> Self {
        let n: u64 = dims.iter().product();
        self.tensor(name, dims, G_F32, vec![0u8; 4 * n as usize])
    }

    fn with_offset(mut self, offset: u64) -> Self {
        self.tensors.last_mut().unwrap().offset = Some(offset);
        self
    }

    fn build(&self) -> Vec<u8> {
        let mut out = self.magic.to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.tensor_count.unwrap_or(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.kv_count.unwrap_or(self.kvs.len() as u64).to_le_bytes());
        for (k, v) in &self.kvs {
            out.extend_from_slice(&gstr(k));
            out.extend_from_slice(&v.0.to_le_bytes());
            out.extend_from_slice(&v.1);
        }
        let align = |x: u64| x.div_ceil(self.alignment) * self.alignment;
        let mut next = 0u64;
        let mut offsets = vec![];
        for t in &self.tensors {
            let off = t.offset.unwrap_or(next);
            offsets.push(off);
            next = align(off.saturating_add(t.data.len() as u64).min(1 << 40));
            out.extend_from_slice(&gstr(&t.name));
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ggml_type.to_le_bytes());
            out.extend_from_slice(&off.to_le_bytes());
        }
        let data_start = align(out.len() as u64) as usize;
        out.resize(data_start, 0);
        for (t, off) in self.tensors.iter().zip(offsets) {
            // A lying offset far past the rest is written as a claim only, without its data.
            let Some(at) = (data_start as u64).checked_add(off).filter(|&a| a < 1 << 24) else { continue };
            let at = at as usize;
            if out.len() < at + t.data.len() {
                out.resize(at + t.data.len(), 0);
            }
            out[at..at + t.data.len()].copy_from_slice(&t.data);
        }
        out
    }
}

fn parse(bytes: Vec<u8>) -> flint::Result<GgufFile> {
    GgufFile::from_bytes(Bytes::from(bytes))
}

/// The error's message, asserting the file was rejected.
fn error_of(bytes: Vec<u8>) -> String {
    match parse(bytes) {
        Ok(_) => panic!("the malformed file was accepted"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error message {msg:?} does not mention {p:?}");
    }
}

fn valid_small() -> GgufWriter {
    GgufWriter::new()
        .kv("general.architecture", v_str("llama"))
        .kv("general.name", v_str("tiny"))
        .f32_tensor("a", &[4, 2], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
        .f32_tensor("b", &[3], &[1.5, -2.5, 3.5])
}

// ------------------------------------------------------------------------------------------------
// Malformed files

#[test]
fn empty_file() {
    assert_mentions(&error_of(vec![]), &["GGUF", "empty"]);
}

#[test]
fn bad_magic() {
    let mut w = valid_small();
    w.magic = *b"GGML";
    assert_mentions(&error_of(w.build()), &["bad magic", "GGML"]);
}

#[test]
fn version_1_and_unknown_versions() {
    let mut w = valid_small();
    w.version = 1;
    assert_mentions(&error_of(w.build()), &["unsupported GGUF version 1"]);
    w.version = 7;
    assert_mentions(&error_of(w.build()), &["unsupported GGUF version 7"]);
    w.version = 3u32.swap_bytes();
    assert_mentions(&error_of(w.build()), &["big-endian"]);
    // Version 2 has the same layout and is accepted.
    w.version = 2;
    assert_eq!(parse(w.build()).unwrap().version(), 2);
}

#[test]
fn truncated_in_the_header() {
    let bytes = valid_small().build();
    // Inside the tensor count.
    assert_mentions(&error_of(bytes[..12].to_vec()), &["truncated", "tensor count"]);
    // Inside the magic.
    assert_mentions(&error_of(bytes[..3].to_vec()), &["truncated", "magic"]);
    // Inside a tensor info (after the metadata): in the first dimension of the last tensor.
    let bytes = valid_small().zeros("blk.0.attn_q.weight", &[2]).build();
    let name_b = gstr("blk.0.attn_q.weight");
    let at = bytes.windows(name_b.len()).position(|w| w == name_b.as_slice()).unwrap();
    let cut = bytes[..at + name_b.len() + 4 + 3].to_vec();
    assert_mentions(&error_of(cut), &["truncated", "dimension 0 of tensor `blk.0.attn_q.weight`"]);
    // Cut so early that the tensor infos cannot fit: the count is refused up front.
    let cut = bytes[..at - 10].to_vec();
    assert_mentions(&error_of(cut), &["tensor count 3 is impossible", "truncated or corrupt"]);
}

#[test]
fn truncated_in_a_string() {
    let bytes = GgufWriter::new().kv("general.architecture", v_str("llama")).build();
    // 24 bytes of fixed header, 8 of key length, then the key "general.architecture" (20 bytes).
    let cut = bytes[..24 + 8 + 5].to_vec();
    assert_mentions(&error_of(cut), &["metadata key #0", "past the end of the file"]);
    // Cut inside the string value "llama" (the header ends at 24 + 28 + 4 + 13 = 69).
    let cut = bytes[..67].to_vec();
    assert_mentions(&error_of(cut), &["general.architecture", "past the end of the file"]);
}

#[test]
fn string_length_huge() {
    let mut bytes = GgufWriter::new().kv("general.architecture", v_str("llama")).build();
    bytes[24..32].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    assert_mentions(&error_of(bytes), &["metadata key #0", "claims 18446744073709551612 bytes"]);
}

#[test]
fn kv_count_huge() {
    let mut w = valid_small();
    w.kv_count = Some(u64::MAX / 2);
    assert_mentions(&error_of(w.build()), &["metadata count", "impossible"]);
}

#[test]
fn tensor_count_huge() {
    let mut w = valid_small();
    w.tensor_count = Some(1 << 40);
    assert_mentions(&error_of(w.build()), &["tensor count 1099511627776 is impossible"]);
}

#[test]
fn array_count_huge() {
    let mut arr = v_str_array(&["a", "b"]);
    arr.1[4..12].copy_from_slice(&u64::MAX.to_le_bytes());
    let w = GgufWriter::new().kv("tokenizer.ggml.tokens", arr);
    assert_mentions(&error_of(w.build()), &["tokenizer.ggml.tokens", "array count", "impossible"]);
}

#[test]
fn unknown_value_type() {
    let w = GgufWriter::new().kv("general.weird", Val(13, vec![0; 8]));
    assert_mentions(&error_of(w.build()), &["general.weird", "unknown value type 13"]);
    let w = GgufWriter::new()
        .kv("general.weird_array", Val(T_ARRAY, [42u32.to_le_bytes().to_vec(), 0u64.to_le_bytes().to_vec()].concat()));
    assert_mentions(&error_of(w.build()), &["general.weird_array", "unknown array element value type 42"]);
}

#[test]
fn invalid_bool_and_utf8() {
    let w = GgufWriter::new().kv("general.flag", Val(T_BOOL, vec![2]));
    assert_mentions(&error_of(w.build()), &["general.flag", "bool byte 2"]);
    let mut bytes = GgufWriter::new().kv("general.xx", v_u32(1)).build();
    bytes[32 + 8] = 0xFF; // the key "general.xx" starts at 32; this is its first `x`
    assert_mentions(&error_of(bytes), &["metadata key #0", "not valid UTF-8"]);
    let mut bytes = GgufWriter::new().zeros("abc", &[1]).build();
    bytes[24 + 8] = 0xC3; // first byte of the tensor name: a lone UTF-8 lead byte
    assert_mentions(&error_of(bytes), &["name of tensor #0", "not valid UTF-8"]);
}

#[test]
fn duplicate_metadata_key() {
    let w = GgufWriter::new().kv("general.name", v_str("a")).kv("general.name", v_str("b"));
    assert_mentions(&error_of(w.build()), &["duplicate metadata key `general.name`"]);
}

#[test]
fn unknown_ggml_type() {
    let w = GgufWriter::new().tensor("w", &[32], 99, vec![0; 32]);
    assert_mentions(&error_of(w.build()), &["tensor `w`", "unknown ggml type 99"]);
    // A real ggml type flint does not read is named.
    let w = GgufWriter::new().tensor("w", &[256], 16, vec![0; 66]);
    assert_mentions(
        &error_of(w.build()),
        &["tensor `w`", "ggml type 16 (IQ2_XXS) is not supported", "nearest llama.cpp mixture", "Q2_K"],
    );
    let w = GgufWriter::new().tensor("w", &[256], 18, vec![0; 98]);
    assert_mentions(&error_of(w.build()), &["ggml type 18 (IQ3_XXS) is not supported", "Q3_K_M"]);
}

#[test]
fn tensor_data_past_eof() {
    let mut bytes = valid_small().build();
    bytes.truncate(bytes.len() - 4); // `b` is the last tensor: 12 bytes at data offset 32
    assert_mentions(&error_of(bytes), &["tensor `b`", "runs past the end of the file"]);
    let w = valid_small().zeros("c", &[2]).with_offset(1 << 50);
    assert_mentions(&error_of(w.build()), &["tensor `c`", "runs past the end of the file"]);
    let w = valid_small().zeros("c", &[2]).with_offset(u64::MAX - 31);
    assert_mentions(&error_of(w.build()), &["tensor `c`", "runs past the end of the file"]);
}

#[test]
fn overlapping_tensors() {
    // `a` is 32 bytes at 0; `c` claims 0 as well.
    let w = valid_small().zeros("c", &[8]).with_offset(0);
    let msg = error_of(w.build());
    assert_mentions(&msg, &["overlaps tensor"]);
    assert!(msg.contains("`a`") && msg.contains("`c`"), "{msg}");
}

#[test]
fn misaligned_offset() {
    let w = valid_small().zeros("c", &[2]).with_offset(70);
    assert_mentions(&error_of(w.build()), &["tensor `c`", "offset 70 is not aligned to 32 bytes"]);
}

#[test]
fn alignment_not_power_of_two() {
    let w = valid_small().kv("general.alignment", v_u32(48));
    assert_mentions(&error_of(w.build()), &["general.alignment 48 is not a power of two"]);
    let w = valid_small().kv("general.alignment", v_str("32"));
    assert_mentions(&error_of(w.build()), &["general.alignment", "not an unsigned integer"]);
}

#[test]
fn n_dims_out_of_range() {
    let w = GgufWriter::new().zeros("five", &[1, 1, 1, 1, 1]);
    assert_mentions(&error_of(w.build()), &["tensor `five`", "5 dimensions (must be 1 to 4)"]);
    let w = GgufWriter::new().tensor("none", &[], G_F32, vec![]);
    assert_mentions(&error_of(w.build()), &["tensor `none`", "0 dimensions"]);
}

#[test]
fn dims_overflow() {
    let w = GgufWriter::new().tensor("big", &[1 << 32, 1 << 32, 1 << 8], G_F32, vec![]);
    assert_mentions(&error_of(w.build()), &["tensor `big`", "overflow"]);
    // Fits u64 elements but not in bytes.
    let w = GgufWriter::new().tensor("big", &[1 << 31, 1 << 31], G_F32, vec![]);
    assert_mentions(&error_of(w.build()), &["tensor `big`", "overflow"]);
}

#[test]
fn innermost_dim_not_a_block_multiple() {
    // 48 elements of Q4_0 along the row: one and a half blocks.
    let w = GgufWriter::new().tensor("q", &[48, 2], G_Q4_0, vec![0; 54]);
    assert_mentions(
        &error_of(w.build()),
        &["tensor `q`", "innermost dimension 48 is not a multiple of the Q4_0 block size 32"],
    );
    // Whole blocks in total (32 * 3 = 96 = 3 blocks) but rows of 16 still break the rule.
    let w = GgufWriter::new().tensor("q", &[16, 6], G_Q8_0, vec![0; 102]);
    assert_mentions(&error_of(w.build()), &["tensor `q`", "innermost dimension 16"]);
}

#[test]
fn duplicate_tensor_name() {
    let w = valid_small().zeros("a", &[2]);
    assert_mentions(&error_of(w.build()), &["tensor `a`", "duplicate tensor name"]);
}

#[test]
fn deep_nesting_is_bounded() {
    // 1000 nested arrays of one element each: rejected by depth, not by stack overflow.
    let mut v = v_u32(7);
    for _ in 0..1000 {
        v = v_array(v.0, &[v]);
    }
    let w = GgufWriter::new().kv("general.nested", v);
    assert_mentions(&error_of(w.build()), &["general.nested", "nested deeper than"]);
}

#[test]
fn every_prefix_of_a_valid_file_is_an_error_not_a_panic() {
    let bytes = tiny_llama().build();
    let data_offset = parse(bytes.clone()).unwrap().data_offset() as usize;
    // Every cut must fail cleanly: each byte through the header, then strides through the data.
    let cuts = (0..data_offset + 64).chain((data_offset + 64..bytes.len()).step_by(997));
    for len in cuts {
        assert!(parse(bytes[..len].to_vec()).is_err(), "prefix of {len} bytes was accepted");
    }
    assert!(parse(bytes).is_ok());
}

#[test]
fn unknown_architecture() {
    let mut w = tiny_llama();
    w.kvs.retain(|(k, _)| k != "general.architecture");
    let w = w.kv("general.architecture", v_str("mamba"));
    let file = parse(w.build()).unwrap();
    let err = config_from_gguf(&file).unwrap_err();
    assert!(matches!(&err, Error::UnknownArchitecture(a) if a == "mamba"), "{err}");
    assert_mentions(&err.to_string(), &["unknown model architecture `mamba`"]);
}

#[test]
fn missing_block_count() {
    let mut w = tiny_llama();
    w.kvs.retain(|(k, _)| k != "llama.block_count");
    let file = parse(w.build()).unwrap();
    let err = config_from_gguf(&file).unwrap_err();
    assert_mentions(&err.to_string(), &["missing metadata key `llama.block_count`"]);
    let mut w = tiny_llama();
    w.kvs.retain(|(k, _)| k != "general.architecture");
    let err = config_from_gguf(&parse(w.build()).unwrap()).unwrap_err();
    assert_mentions(&err.to_string(), &["missing metadata key `general.architecture`"]);
}

#[test]
fn block_count_past_the_layers_held() {
    // tiny_llama holds blk.0 and blk.1; a count past them is refused before anything loops over it.
    for n in [3, 1 << 31, u32::MAX] {
        let mut w = tiny_llama();
        w.kvs.retain(|(k, _)| k != "llama.block_count");
        let w = w.kv("llama.block_count", v_u32(n));
        let err = config_from_gguf(&parse(w.build()).unwrap()).unwrap_err();
        assert_mentions(&err.to_string(), &[&format!("`llama.block_count` {n} is more than the 2 layers")]);
    }
    // Layers are counted from blk.0 without a gap: a stray high index adds none.
    let mut w = tiny_llama().zeros("blk.4000000000.attn_norm.weight", &[64]);
    w.kvs.retain(|(k, _)| k != "llama.block_count");
    let err = config_from_gguf(&parse(w.kv("llama.block_count", v_u32(4_000_000_001)).build()).unwrap()).unwrap_err();
    assert_mentions(&err.to_string(), &["4000000001 is more than the 2 layers"]);
}

#[test]
fn context_length_zero() {
    // The GPU path clamps the cache to 1..=context_length: a zero is refused by the config.
    let mut w = tiny_llama();
    w.kvs.retain(|(k, _)| k != "llama.context_length");
    let err = config_from_gguf(&parse(w.kv("llama.context_length", v_u32(0)).build()).unwrap()).unwrap_err();
    assert_mentions(&err.to_string(), &["`llama.context_length` must be positive"]);
}

#[test]
fn unsupported_rope_variants() {
    let w = tiny_llama().zeros("rope_freqs.weight", &[8]);
    let err = config_from_gguf(&parse(w.build()).unwrap()).unwrap_err();
    assert_mentions(&err.to_string(), &["rope_freqs.weight", "not supported"]);
    let w = tiny_llama().kv("llama.rope.scaling.type", v_str("yarn"));
    let err = config_from_gguf(&parse(w.build()).unwrap()).unwrap_err();
    assert_mentions(&err.to_string(), &["llama.rope.scaling.type", "yarn"]);
    let w = tiny_llama().kv("llama.rope.dimension_count", v_u32(8));
    let err = config_from_gguf(&parse(w.build()).unwrap()).unwrap_err();
    assert_mentions(&err.to_string(), &["partial RoPE"]);
}

#[test]
fn wrong_metadata_type() {
    let mut w = tiny_llama();
    w.kvs.retain(|(k, _)| k != "llama.embedding_length");
    let w = w.kv("llama.embedding_length", v_str("64"));
    let err = config_from_gguf(&parse(w.build()).unwrap()).unwrap_err();
    assert_mentions(&err.to_string(), &["`llama.embedding_length`", "non-negative integer", "string"]);
}

// ------------------------------------------------------------------------------------------------
// Well-formed files

fn f16_bytes(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_bits().to_le_bytes()
}

#[test]
fn valid_file_round_trips() {
    // F32 [2, 3] (ne = [3, 2])
    let f32_vals: Vec<f32> = (0..6).map(|i| i as f32 * 0.5 - 1.0).collect();
    // F16 [2, 2]
    let f16_vals = [0.25f32, -1.5, 3.0, 65504.0];
    let f16_data: Vec<u8> = f16_vals.iter().flat_map(|&v| f16_bytes(v)).collect();
    // Q8_0 [2, 32]: row r has d = r + 1, q = j - 16.
    let mut q8 = vec![];
    let mut q8_expected = vec![];
    for r in 0..2 {
        let d = (r + 1) as f32;
        q8.extend_from_slice(&f16_bytes(d));
        for j in 0..32 {
            q8.push((j as i8 - 16) as u8);
            q8_expected.push(d * (j as f32 - 16.0));
        }
    }
    // Q4_0 [1, 64]: two blocks.
    let mut q4 = vec![];
    let mut q4_expected = vec![0.0f32; 64];
    for b in 0..2 {
        let d = 0.5 * (b + 1) as f32;
        q4.extend_from_slice(&f16_bytes(d));
        for j in 0..16u8 {
            let (lo, hi) = ((j + b as u8) % 16, (15 - j) % 16);
            q4.push(lo | (hi << 4));
            q4_expected[32 * b + j as usize] = d * (lo as f32 - 8.0);
            q4_expected[32 * b + j as usize + 16] = d * (hi as f32 - 8.0);
        }
    }
    let w = GgufWriter::new()
        .kv("general.architecture", v_str("llama"))
        .kv("general.alignment", v_u32(64))
        .kv("test.u8", Val(T_U8, vec![200]))
        .kv("test.i32", Val(T_I32, (-5i32).to_le_bytes().to_vec()))
        .kv("test.u64", Val(T_U64, (1u64 << 40).to_le_bytes().to_vec()))
        .kv("test.f32", v_f32(0.125))
        .kv("test.bool", v_bool(true))
        .kv("test.strings", v_str_array(&["x", "", "zz"]))
        .kv("test.nested", v_array(T_ARRAY, &[v_array(T_U32, &[v_u32(1), v_u32(2)]), v_array(T_U32, &[])]))
        .f32_tensor("t.f32", &[3, 2], &f32_vals)
        .tensor("t.f16", &[2, 2], G_F16, f16_data)
        .tensor("t.q8", &[32, 2], G_Q8_0, q8)
        .tensor("t.q4", &[64, 1], G_Q4_0, q4);
    let mut w = w;
    w.alignment = 64;
    let file = parse(w.build()).unwrap();

    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), 64);
    assert_eq!(file.data_offset() % 64, 0);
    assert_eq!(file.architecture(), Some("llama"));
    let md = file.metadata();
    assert_eq!(md["test.u8"], MetaValue::U8(200));
    assert_eq!(md["test.i32"].as_i64(), Some(-5));
    assert_eq!(md["test.i32"].as_u64(), None);
    assert_eq!(md["test.u64"].as_u64(), Some(1 << 40));
    assert_eq!(md["test.f32"].as_f64(), Some(0.125));
    assert_eq!(md["test.bool"].as_bool(), Some(true));
    let strings: Vec<&str> = md["test.strings"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(strings, ["x", "", "zz"]);
    assert_eq!(
        md["test.nested"],
        MetaValue::Array(vec![MetaValue::Array(vec![MetaValue::U32(1), MetaValue::U32(2)]), MetaValue::Array(vec![])])
    );

    assert_eq!(file.names(), ["t.f32", "t.f16", "t.q8", "t.q4"]);
    assert_eq!(file.shape("t.f32"), Some(vec![2, 3]));
    assert_eq!(file.shape("t.q8"), Some(vec![2, 32]));
    assert_eq!(file.shape("t.q4"), Some(vec![1, 64]));
    assert_eq!(file.dtype("t.f16"), Some(DType::F16));
    assert_eq!(file.dtype("t.q4"), Some(DType::Q4_0));
    assert_eq!(file.shape("nope"), None);
    assert!(matches!(file.load_f32("nope"), Err(Error::MissingTensor(n)) if n == "nope"));
    assert_eq!(file.size_in_bytes(), 24 + 8 + 68 + 36);

    let t = file.load_f32("t.f32").unwrap();
    assert_eq!((t.shape, t.data), (vec![2, 3], f32_vals));
    assert_eq!(file.load_f32("t.f16").unwrap().data, f16_vals);
    assert_eq!(file.load_f32("t.q8").unwrap().data, q8_expected);
    assert_eq!(file.load_f32("t.q4").unwrap().data, q4_expected);

    let (dtype, raw) = file.tensor_bytes("t.q8").unwrap();
    assert_eq!((dtype, raw.len()), (DType::Q8_0, 68));
    for info in file.tensors() {
        assert_eq!(info.offset % 64, 0, "{}", info.name);
    }
}

/// A complete little llama-arch file: 2 layers, hidden 64, 4 heads (2 kv), ffn 96, vocab 10.
fn tiny_llama() -> GgufWriter {
    let (h, ff, vocab) = (64u64, 96u64, 10u64);
    let mut w = GgufWriter::new()
        .kv("general.architecture", v_str("llama"))
        .kv("llama.block_count", v_u32(2))
        .kv("llama.context_length", v_u32(2048))
        .kv("llama.embedding_length", v_u32(h as u32))
        .kv("llama.feed_forward_length", v_u32(ff as u32))
        .kv("llama.attention.head_count", v_u32(4))
        .kv("llama.attention.head_count_kv", v_u32(2))
        .kv("llama.rope.freq_base", v_f32(500000.0))
        .kv("llama.attention.layer_norm_rms_epsilon", v_f32(1e-5))
        .kv("tokenizer.ggml.bos_token_id", v_u32(1))
        .kv("tokenizer.ggml.eos_token_id", v_u32(2))
        .zeros("token_embd.weight", &[h, vocab])
        .zeros("output_norm.weight", &[h]);
    for l in 0..2 {
        w = w.zeros(&format!("blk.{l}.attn_norm.weight"), &[h]).zeros(&format!("blk.{l}.ffn_gate.weight"), &[h, ff]);
    }
    w
}

#[test]
fn config_llama() {
    let file = parse(tiny_llama().build()).unwrap();
    let c = config_from_gguf(&file).unwrap();
    assert_eq!(c.family, Family::Llama);
    assert_eq!((c.vocab_size, c.hidden_size, c.num_layers), (10, 64, 2));
    assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (4, 2, 16));
    assert_eq!(c.rope_theta, 500000.0);
    assert_eq!(c.rope_pairing, RopePairing::Interleaved);
    assert_eq!(c.max_position_embeddings, 2048);
    assert_eq!(c.intermediate_size, 96);
    assert!(c.tie_word_embeddings);
    assert!(!c.qkv_bias);
    assert_eq!(c.qk_norm, QkNorm::None);
    assert_eq!(c.moe, None);
    assert_eq!(c.layer_ffn, vec![FfnKind::Dense; 2]);
    assert_eq!(c.bos_token_id, Some(1));
    assert_eq!(c.eos_token_ids, vec![2]);
    assert_eq!(c.attention_scale, 0.25);
    assert_eq!(file.shape("token_embd.weight"), Some(vec![10, 64]));
}

#[test]
fn config_mixtral_from_llama_with_experts() {
    let (h, ff, e) = (64u64, 32u64, 4u64);
    let mut w = tiny_llama()
        .kv("llama.expert_count", v_u32(e as u32))
        .kv("llama.expert_used_count", v_u32(2))
        .zeros("output.weight", &[h, 10]);
    for l in 0..2 {
        w = w
            .zeros(&format!("blk.{l}.ffn_gate_inp.weight"), &[h, e])
            .zeros(&format!("blk.{l}.ffn_gate_exps.weight"), &[h, ff, e]);
    }
    // The dense ffn_gate tensors of tiny_llama stay; ffn_gate_inp decides the kind.
    let file = parse(w.build()).unwrap();
    assert_eq!(file.shape("blk.0.ffn_gate_exps.weight"), Some(vec![4, 32, 64]));
    let c = config_from_gguf(&file).unwrap();
    assert_eq!(c.family, Family::Mixtral);
    assert_eq!(c.rope_pairing, RopePairing::Interleaved);
    assert!(!c.tie_word_embeddings);
    let m = c.moe.unwrap();
    // No expert_feed_forward_length: the width comes from the stacked expert tensor.
    assert_eq!((m.num_experts, m.top_k, m.expert_intermediate_size), (4, 2, 32));
    assert!(m.routing.renormalize);
    assert_eq!(c.layer_ffn, vec![FfnKind::Moe; 2]);
}

/// A qwen2moe file: layer 0 sparse with a gated shared expert, layer 1 dense.
fn tiny_qwen2moe() -> GgufWriter {
    let (h, e) = (32u64, 4u64);
    GgufWriter::new()
        .kv("general.architecture", v_str("qwen2moe"))
        .kv("qwen2moe.block_count", v_u32(2))
        .kv("qwen2moe.context_length", v_u32(4096))
        .kv("qwen2moe.embedding_length", v_u32(h as u32))
        .kv("qwen2moe.feed_forward_length", v_u32(48))
        .kv("qwen2moe.attention.head_count", v_u32(2))
        .kv("qwen2moe.attention.layer_norm_rms_epsilon", v_f32(1e-6))
        .kv("qwen2moe.rope.freq_base", v_f32(1e6))
        .kv("qwen2moe.expert_count", v_u32(e as u32))
        .kv("qwen2moe.expert_used_count", v_u32(2))
        .kv("qwen2moe.expert_feed_forward_length", v_u32(16))
        .zeros("token_embd.weight", &[h, 12])
        .zeros("output.weight", &[h, 12])
        .zeros("blk.0.attn_q.bias", &[h])
        .zeros("blk.0.ffn_gate_inp.weight", &[h, e])
        .zeros("blk.0.ffn_gate_exps.weight", &[h, 16, e])
        .zeros("blk.0.ffn_gate_shexp.weight", &[h, 24])
        .zeros("blk.0.ffn_gate_inp_shexp.weight", &[h])
        .zeros("blk.1.ffn_gate.weight", &[h, 48])
}

#[test]
fn config_qwen2moe() {
    let c = config_from_gguf(&parse(tiny_qwen2moe().build()).unwrap()).unwrap();
    assert_eq!(c.family, Family::Qwen2Moe);
    assert_eq!(c.rope_pairing, RopePairing::Halves);
    assert!(c.qkv_bias);
    assert_eq!(c.head_dim, 16);
    assert_eq!(c.num_kv_heads, 2);
    assert_eq!(c.layer_ffn, vec![FfnKind::Moe, FfnKind::Dense]);
    assert_eq!(c.intermediate_size, 48);
    let m = c.moe.unwrap();
    assert_eq!((m.num_experts, m.top_k, m.expert_intermediate_size), (4, 2, 16));
    assert!(!m.routing.renormalize);
    // Width from the tensor when the key is absent.
    assert_eq!(m.shared_expert_intermediate_size, Some(24));
    assert!(m.shared_expert_gate);

    let c = config_from_gguf(
        &parse(
            tiny_qwen2moe()
                .kv("qwen2moe.expert_weights_norm", v_bool(true))
                .kv("qwen2moe.expert_shared_feed_forward_length", v_u32(24))
                .build(),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(c.moe.as_ref().unwrap().routing.renormalize);
    assert_eq!(c.moe.unwrap().shared_expert_intermediate_size, Some(24));
}

#[test]
fn config_qwen3moe_olmoe_granitemoe() {
    let swap_arch = |w: GgufWriter, arch: &str| {
        let mut w = w;
        for (k, _) in w.kvs.iter_mut() {
            if let Some(rest) = k.strip_prefix("qwen2moe.") {
                *k = format!("{arch}.{rest}");
            }
        }
        w.kvs.retain(|(k, _)| k != "general.architecture");
        w.tensors.retain(|t| !t.name.contains("shexp"));
        w.kv("general.architecture", v_str(arch))
    };
    let c = config_from_gguf(
        &parse(swap_arch(tiny_qwen2moe(), "qwen3moe").kv("qwen3moe.attention.key_length", v_u32(8)).build()).unwrap(),
    )
    .unwrap();
    assert_eq!(c.family, Family::Qwen3Moe);
    assert_eq!(c.qk_norm, QkNorm::PerHead);
    assert_eq!(c.head_dim, 8);
    assert_eq!(c.rope_pairing, RopePairing::Halves);
    assert!(c.moe.as_ref().unwrap().routing.renormalize);
    assert_eq!(c.moe.as_ref().unwrap().shared_expert_intermediate_size, None);

    let c = config_from_gguf(&parse(swap_arch(tiny_qwen2moe(), "olmoe").build()).unwrap()).unwrap();
    assert_eq!(c.family, Family::Olmoe);
    assert_eq!(c.qk_norm, QkNorm::Whole);
    assert_eq!(c.rope_pairing, RopePairing::Halves);
    assert!(!c.moe.as_ref().unwrap().routing.renormalize);

    let w = swap_arch(tiny_qwen2moe(), "granitemoe")
        .kv("granitemoe.embedding_scale", v_f32(12.0))
        .kv("granitemoe.residual_scale", v_f32(0.22))
        .kv("granitemoe.attention.scale", v_f32(0.015625))
        .kv("granitemoe.logit_scale", v_f32(8.0));
    let c = config_from_gguf(&parse(w.build()).unwrap()).unwrap();
    assert_eq!(c.family, Family::GraniteMoe);
    assert_eq!(c.rope_pairing, RopePairing::Interleaved);
    assert_eq!((c.embedding_multiplier, c.residual_multiplier), (12.0, 0.22));
    assert_eq!((c.attention_scale, c.logits_multiplier), (0.015625, 0.125));
    assert!(c.moe.as_ref().unwrap().routing.renormalize);

    // A granitemoe file with a shared expert is refused, not misread.
    let w = swap_arch(tiny_qwen2moe(), "granitemoe").kv("granitemoe.expert_shared_feed_forward_length", v_u32(24));
    let err = config_from_gguf(&parse(w.build()).unwrap()).unwrap_err();
    assert_mentions(&err.to_string(), &["shared expert"]);

    // An MoE architecture without an expert count.
    let mut w = tiny_qwen2moe();
    w.kvs.retain(|(k, _)| k != "qwen2moe.expert_count");
    let err = config_from_gguf(&parse(w.build()).unwrap()).unwrap_err();
    assert_mentions(&err.to_string(), &["missing metadata key `qwen2moe.expert_count`"]);
}

// ------------------------------------------------------------------------------------------------
// The real SmolLM2 GGUF

#[test]
fn real_smollm2_gguf() {
    let Some(path) = require_real_model() else { return };
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.architecture(), Some("llama"));
    let c = config_from_gguf(&file).unwrap();
    println!("{c:#?}");
    assert_eq!(c.family, Family::Llama);
    assert_eq!((c.vocab_size, c.hidden_size, c.num_layers), (49152, 576, 30));
    assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (9, 3, 64));
    assert_eq!(c.intermediate_size, 1536);
    assert_eq!(c.rope_theta, 100000.0);
    assert_eq!(c.rope_pairing, RopePairing::Interleaved);
    assert_eq!(c.max_position_embeddings, 8192);
    assert!(c.tie_word_embeddings);
    assert_eq!((c.bos_token_id, c.eos_token_ids.clone()), (Some(1), vec![2]));

    // Tensor types: the embedding is Q8_0, the linears Q4_1, the norms F32.
    let names = file.names();
    assert_eq!(names.len(), 272);
    for name in &names {
        let dtype = file.dtype(name).unwrap();
        let expected = if name == "token_embd.weight" {
            DType::Q8_0
        } else if name.ends_with("norm.weight") {
            DType::F32
        } else {
            DType::Q4_1
        };
        assert_eq!(dtype, expected, "{name}");
    }
    assert_eq!(file.shape("blk.0.attn_k.weight"), Some(vec![192, 576]));
    assert_eq!(file.shape("blk.0.ffn_down.weight"), Some(vec![576, 1536]));

    // Every tensor dequantizes, to finite values.
    let mut total = 0usize;
    for name in &names {
        let t = file.load_f32(name).unwrap();
        assert_eq!(t.data.len(), t.shape.iter().product::<usize>());
        assert!(t.data.iter().all(|v| v.is_finite()), "{name} has non-finite values");
        total += t.data.len();
    }
    println!("dequantized {} tensors, {total} values", names.len());

    // Spot values computed independently (Python `struct` over the raw blocks).
    let spot = |name: &str, expected: &[(usize, f64)]| {
        let t = file.load_f32(name).unwrap();
        for &(i, want) in expected {
            assert!((f64::from(t.data[i]) - want).abs() <= 1e-6, "{name}[{i}] = {}, expected {want}", t.data[i]);
        }
    };
    spot(
        "blk.0.attn_q.weight",
        &[
            (0, -0.0963134765625),
            (1, 0.1573486328125),
            (15, 0.537841796875),
            (16, -0.22314453125),
            (17, 0.2841796875),
            (31, -0.0963134765625),
            (32, -0.34619140625),
            (100, 0.214111328125),
            (576 * 5 + 7, -0.3916015625),
            (576 * 576 - 1, -0.255859375),
        ],
    );
    spot(
        "token_embd.weight",
        &[
            (0, -0.10654449462890625),
            (5, -0.04566192626953125),
            (31, -0.20040512084960938),
            (32, -0.09348678588867188),
            (576 * 1000 + 3, -0.0179901123046875),
            (576 * 49152 - 1, -0.0417022705078125),
        ],
    );
    // RMSNorm weights of a trained model are far from zero.
    let norm = file.load_f32("output_norm.weight").unwrap();
    assert!(norm.data.iter().map(|v| v.abs()).sum::<f32>() / 576.0 > 0.1);
}

// ------------------------------------------------------------------------------------------------
// The embedded tokenizer, on little synthetic vocabularies

fn tiny_tokenizer_file() -> GgufWriter {
    let types: Vec<Val> = [3i32, 1, 1, 1, 1, 1, 4, 1, 1].iter().map(|t| Val(T_I32, t.to_le_bytes().to_vec())).collect();
    GgufWriter::new()
        .kv("general.architecture", v_str("llama"))
        .kv("tokenizer.ggml.model", v_str("gpt2"))
        .kv("tokenizer.ggml.pre", v_str("smollm"))
        .kv(
            "tokenizer.ggml.tokens",
            v_str_array(&["<|im_start|>", "a", "b", "ab", "Ġ", "Ġab", "<user tok>", "1", "11"]),
        )
        .kv("tokenizer.ggml.merges", v_str_array(&["a b", "Ġ ab", "1 1"]))
        .kv("tokenizer.ggml.token_type", v_array(T_I32, &types))
        .kv("tokenizer.ggml.bos_token_id", v_u32(0))
        .kv("tokenizer.ggml.eos_token_id", v_u32(0))
        .kv("tokenizer.ggml.add_bos_token", v_bool(true))
        .kv("tokenizer.chat_template", v_str("{{ messages }}"))
}

fn replace_kv(mut w: GgufWriter, key: &str, v: Option<Val>) -> GgufWriter {
    w.kvs.retain(|(k, _)| k != key);
    match v {
        Some(v) => w.kv(key, v),
        None => w,
    }
}

#[test]
fn tokenizer_from_tiny_vocabulary() {
    use flint::tokenizer::gguf::from_gguf;
    let file = parse(tiny_tokenizer_file().build()).unwrap();
    let tok = from_gguf(&file).unwrap().unwrap();
    assert_eq!((tok.bos_token_id, tok.eos_token_id, tok.add_bos), (Some(0), Some(0), true));
    assert_eq!(tok.chat_template.as_deref(), Some("{{ messages }}"));
    let ids = tok.tokenizer.encode("<|im_start|>ab ab<user tok>b", false).unwrap().get_ids().to_vec();
    assert_eq!(ids, [0, 3, 5, 6, 2]);
    assert_eq!(tok.tokenizer.decode(&ids, false).unwrap(), "<|im_start|>ab ab<user tok>b");
    assert_eq!(tok.tokenizer.decode(&ids, true).unwrap(), "ab ab<user tok>b");
    // Digits are split off one by one (smollm), so the merge "1 1" never applies...
    assert_eq!(tok.tokenizer.encode("11", false).unwrap().get_ids(), [7, 7]);
    // ...while GPT-2's split alone keeps "11" together.
    let gpt2 = replace_kv(tiny_tokenizer_file(), "tokenizer.ggml.pre", Some(v_str("gpt-2")));
    let tok2 = from_gguf(&parse(gpt2.build()).unwrap()).unwrap().unwrap();
    assert_eq!(tok2.tokenizer.encode("11", false).unwrap().get_ids(), [8]);

    // No tokenizer in the file.
    let file = parse(replace_kv(tiny_tokenizer_file(), "tokenizer.ggml.model", None).build()).unwrap();
    assert!(from_gguf(&file).unwrap().is_none());
}

#[test]
fn tokenizer_errors() {
    use flint::tokenizer::gguf::from_gguf;
    let err_of = |w: GgufWriter| match from_gguf(&parse(w.build()).unwrap()) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    let msg = err_of(replace_kv(tiny_tokenizer_file(), "tokenizer.ggml.model", Some(v_str("llama"))));
    assert_mentions(&msg, &["tokenizer", "`llama`", "SentencePiece", "not supported"]);
    let msg = err_of(replace_kv(tiny_tokenizer_file(), "tokenizer.ggml.pre", Some(v_str("mystery"))));
    assert_mentions(&msg, &["pre-tokenizer `mystery`", "not supported"]);
    let msg = err_of(replace_kv(tiny_tokenizer_file(), "tokenizer.ggml.merges", None));
    assert_mentions(&msg, &["tokenizer.ggml.merges"]);
    let msg = err_of(replace_kv(tiny_tokenizer_file(), "tokenizer.ggml.merges", Some(v_str_array(&["ab"]))));
    assert_mentions(&msg, &["merges`[0] `ab`", "two tokens"]);
    let msg = err_of(replace_kv(tiny_tokenizer_file(), "tokenizer.ggml.merges", Some(v_str_array(&["a zz"]))));
    assert_mentions(&msg, &["vocabulary and merges do not fit"]);
    let msg = err_of(replace_kv(tiny_tokenizer_file(), "tokenizer.ggml.tokens", Some(v_array(T_U32, &[v_u32(1)]))));
    assert_mentions(&msg, &["tokenizer.ggml.tokens`[0] is a uint32"]);
    let msg = err_of(replace_kv(tiny_tokenizer_file(), "tokenizer.ggml.token_type", Some(v_array(T_I32, &[]))));
    assert_mentions(&msg, &["token_type", "9 entries"]);
    let msg = err_of(replace_kv(tiny_tokenizer_file(), "tokenizer.ggml.bos_token_id", Some(v_u32(99))));
    assert_mentions(&msg, &["bos_token_id` 99 is outside the vocabulary"]);
}

// ------------------------------------------------------------------------------------------------
// The committed tiny-model GGUFs (written the way llama.cpp's converter writes each family)

/// Every `tests/fixtures/models/*-q4_0/model.gguf` parses, every tensor dequantizes, and its
/// config matches the one config.json gives for the same model, except RoPE pairing, which
/// llama.cpp's Q/K permutation turns into adjacent pairs for llama-arch families.
#[test]
fn fixture_ggufs_match_their_config_json() {
    let models = common::fixture("");
    let mut seen = vec![];
    for entry in std::fs::read_dir(&models).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let Some(base) = name.strip_suffix("-q4_0") else { continue };
        let file = GgufFile::open(&dir.join("model.gguf")).unwrap();
        let config = config_from_gguf(&file).unwrap_or_else(|e| panic!("{name}: {e}"));
        let json = std::fs::read_to_string(models.join(base).join("config.json")).unwrap();
        let mut hf = flint::config::hf::parse(&json).unwrap();
        hf.rope_pairing = match hf.family {
            Family::Llama | Family::Mixtral | Family::GraniteMoe => RopePairing::Interleaved,
            Family::DeepseekV2 | Family::DeepseekV3 => RopePairing::Interleaved,
            _ => RopePairing::Halves,
        };
        // config.json may list several EOS ids; the GGUF holds one.
        assert!(config.eos_token_ids.iter().all(|e| hf.eos_token_ids.contains(e)), "{name}");
        hf.eos_token_ids = config.eos_token_ids.clone();
        assert_eq!(config, hf, "{name}");
        for t in file.names() {
            let tensor = file.load_f32(&t).unwrap();
            assert!(tensor.data.iter().all(|v| v.is_finite()), "{name}: {t}");
        }
        seen.push(base.to_string());
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "deepseek_v2",
            "deepseek_v3",
            "granitemoe",
            "llama",
            "mixtral",
            "olmoe",
            "qwen2_moe",
            "qwen2_moe_norm",
            "qwen3_moe"
        ]
    );
}
