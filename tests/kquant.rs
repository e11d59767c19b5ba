//! The GGUF files people download: llama.cpp's own mixtures (Q4_K_M, Q4_K_S, Q5_K_M, Q3_K_M,
//! Q2_K, IQ4_XS, Q5_0, Q5_1, Q6_K, and gpt-oss's MXFP4 for experts), made by llama.cpp's
//! quantizer with its default rules from a small Qwen2-MoE (expert width 96, not a multiple of
//! 256, so its down projections fall back to the 32-wide types) and a dense Llama
//! (`tests/fixtures/kquant/`, made by its `make.py`; see tests/fixtures/README.md).
//!
//! - Every block type decodes bit for bit as ggml's own `to_float` does, on 64 random blocks
//!   per type, both through `quant::ggml` and through the packed GPU format's CPU twin.
//! - Every mixture's logits, on CPU and GPU, are within 1e-3 of max |logit| of llama.cpp's f32
//!   forward over its own dequantization with an F32 KV cache. The weights are the same values
//!   (bit-exact dequantization); what differs is summation order and exp/sqrt (as in
//!   gpu_parity.rs, where the CPU lands at ~1e-6).
//! - The packed matrices take about the file's size on the GPU (per tensor type, the ratio of
//!   packed bytes to file bytes).

mod common;

use common::{fixture_file, relative_error, shared_gpu};
use flint::format::gguf::GgufFile;
use flint::gpu::kernels::KvFormat;
use flint::gpu::model::GpuModel;
use flint::quant::ggml::dequantize;
use flint::quant::packed::PackedMatrix;
use flint::reference::KvCache;
use flint::tensor::ggml::block_info;
use flint::tensor::DType;
use flint::ModelFiles;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(serde::Deserialize)]
struct Reference {
    tokens: Vec<u32>,
    logits: Vec<Vec<f32>>,
}

fn dir() -> PathBuf {
    fixture_file("kquant")
}

/// The mixture folders: `<family>-<mixture>/{model.gguf, reference.json}`.
fn mixtures() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("tests/fixtures/kquant")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("model.gguf").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 18, "expected the 19 mixture fixtures, found {}", dirs.len());
    dirs
}

const BLOCK_TYPES: [DType; 13] = [
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q8_0,
    DType::Q2_K,
    DType::Q3_K,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
    DType::IQ4_NL,
    DType::IQ4_XS,
    DType::MXFP4,
];

#[test]
fn every_block_type_decodes_as_ggml_does() {
    for dtype in BLOCK_TYPES {
        let name = format!("{dtype:?}");
        let bytes = std::fs::read(dir().join(format!("blocks/{name}.bin"))).unwrap();
        let want: Vec<f32> = std::fs::read(dir().join(format!("blocks/{name}.f32")))
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let (per_block, block_bytes) = block_info(dtype).unwrap();
        assert_eq!(bytes.len() / block_bytes, 64, "{name}: 64 blocks");
        let got = dequantize(dtype, &bytes, want.len()).unwrap();
        // Bit for bit, the sign of a zero included.
        let differ = got.iter().zip(&want).position(|(a, b)| a.to_bits() != b.to_bits());
        assert!(
            differ.is_none(),
            "{name}: element {} is {} where ggml has {}",
            differ.unwrap(),
            got[differ.unwrap()],
            want[differ.unwrap()]
        );

        // The packed format's CPU twin, as rows of 4 and of 1 blocks (values equal; a packed
        // zero may differ in sign).
        for blocks_per_row in [1, 4] {
            let cols = per_block * blocks_per_row;
            let m = PackedMatrix::from_ggml(dtype, want.len() / cols, cols, &bytes).unwrap();
            let packed = m.dequantize();
            let differ = packed.iter().zip(&want).position(|(a, b)| a != b);
            assert!(differ.is_none(), "{name} packed as {:?}: element {differ:?}", m.format);
        }
    }
}

/// The histogram of a mixture's tensor types, for the messages.
fn types(gguf: &GgufFile) -> String {
    let mut counts = BTreeMap::new();
    for t in gguf.tensors() {
        *counts.entry(format!("{:?}", t.dtype)).or_insert(0) += 1;
    }
    format!("{counts:?}")
}

#[test]
fn every_mixture_matches_llama_cpp_on_cpu_and_gpu() {
    for path in mixtures() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let reference: Reference =
            serde_json::from_str(&std::fs::read_to_string(path.join("reference.json")).unwrap()).unwrap();
        let files = ModelFiles::open(&path.join("model.gguf")).unwrap_or_else(|e| panic!("{name}: {e}"));

        let model = files.load_reference().unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut cache = KvCache::new(&model.config);
        let cpu = model.forward(&mut cache, &reference.tokens).unwrap();
        let cpu_err = relative_error(&cpu, &reference.logits);

        let weights = files.load_weights().unwrap();
        let gpu_model = GpuModel::new(shared_gpu(), &files.config, &weights, 12, 64, KvFormat::F32).unwrap();
        let gpu = gpu_model.forward(&reference.tokens, 0).unwrap();
        let gpu_err = relative_error(&gpu, &reference.logits);
        let gguf = GgufFile::open(&path.join("model.gguf")).unwrap();
        println!("{name}: CPU {cpu_err:.2e}, GPU {gpu_err:.2e} of max |logit| ({})", types(&gguf));
        assert!(cpu_err < 1e-3, "{name}: CPU logits differ from llama.cpp's by {cpu_err:.2e} of max |logit|");
        assert!(gpu_err < 1e-3, "{name}: GPU logits differ from llama.cpp's by {gpu_err:.2e} of max |logit|");
    }
}

#[test]
fn packed_matrices_take_about_the_file_size() {
    // Packed bytes per file bytes, the largest each type may take: the Bits formats add a word
    // of scales per 32 elements where ggml has 2 or 3 bytes, or a word per 256 (the f16 pair
    // the k-quants keep, plus their sub-block bytes rounded to words). Q4_K is repacked to INT4
    // with f32 scales (6 bits per weight for 4.5): the fast INT4 kernel at a third more memory.
    let bound = |t: DType| match t {
        DType::Q4_K => 1.34,
        DType::IQ4_NL | DType::Q4_0 => 1.12,
        DType::Q5_0 | DType::IQ4_XS => 1.1,
        _ => 1.06,
    };
    let mut worst: BTreeMap<String, f64> = BTreeMap::new();
    for path in mixtures() {
        let gguf = GgufFile::open(&path.join("model.gguf")).unwrap();
        for t in gguf.tensors() {
            if t.dims.len() < 2 || matches!(t.dtype, DType::F32 | DType::F16) {
                continue;
            }
            let cols = t.dims[0] as usize;
            let rows = (t.n_elements / t.dims[0]) as usize;
            let (_, bytes) = gguf.tensor_bytes(&t.name).unwrap();
            let m = PackedMatrix::from_ggml(t.dtype, rows, cols, bytes).unwrap();
            let ratio = m.size_in_bytes() as f64 / bytes.len() as f64;
            let name = format!("{:?}", t.dtype);
            assert!(
                ratio <= bound(t.dtype),
                "{}: {} packed as {:?} takes {ratio:.3}x its file bytes",
                path.display(),
                t.name,
                m.format
            );
            let w = worst.entry(name).or_insert(0.0);
            *w = w.max(ratio);
        }
    }
    println!("packed / file bytes, worst per type: {worst:?}");
    assert!(worst.len() >= 10, "the mixtures hold {} quantized types", worst.len());
}
