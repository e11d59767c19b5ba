//! Shared by the kernel tests: one device for the whole test binary, random data, comparison.

use crate::gpu::{Backend, Gpu};
use crate::quant::packed::{Format, PackedMatrix};
use crate::tensor::ggml::block_info;
use crate::tensor::DType;
use std::sync::OnceLock;

/// The test device (lavapipe in CI). Panics with the reason when there is none.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| Gpu::new_blocking(Backend::Auto).unwrap_or_else(|e| panic!("{e}")))
}

/// Deterministic pseudo-random values in [-1, 1).
pub fn random(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64).map(|i| crate::sampler::uniform(seed, i) * 2.0 - 1.0).collect()
}

/// Largest |a - b| relative to the largest |b| (or absolute when b is all zeros).
pub fn max_relative_error(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// The ggml types whose repacking gives a `Format::Bits` matrix, one per layout.
pub const BITS_TYPES: [DType; 9] = [
    DType::Q5_0,
    DType::Q5_1,
    DType::IQ4_NL,
    DType::MXFP4,
    DType::Q2_K,
    DType::Q3_K,
    DType::Q5_K,
    DType::Q6_K,
    DType::IQ4_XS,
];

/// `rows` rows of `cols` elements of random `dtype` blocks, repacked: random codes and sub-block
/// scales, and header scales of random sign and moderate size (f16 around 2^-6, E8M0 around 2^-4).
pub fn random_ggml(dtype: DType, rows: usize, cols: usize, seed: u64) -> PackedMatrix {
    let (per_block, block_bytes) = block_info(dtype).expect("a ggml type");
    let n_blocks = rows * cols / per_block;
    let byte = |i: u64| (crate::sampler::uniform(seed, i) * 256.0) as u8;
    let mut bytes: Vec<u8> = (0..(n_blocks * block_bytes) as u64).map(byte).collect();
    // Where each block's f16 scales sit.
    let f16_at: &[usize] = match dtype {
        DType::Q5_0 | DType::IQ4_NL | DType::IQ4_XS => &[0],
        DType::Q5_1 | DType::Q4_K | DType::Q5_K => &[0, 2],
        DType::Q2_K => &[80, 82],
        DType::Q3_K => &[108],
        DType::Q6_K => &[208],
        _ => &[],
    };
    for (b, block) in bytes.chunks_exact_mut(block_bytes).enumerate() {
        for (k, &at) in f16_at.iter().enumerate() {
            let v = (crate::sampler::uniform(seed ^ 0x5eed, (4 * b + k) as u64) - 0.5) / 32.0;
            block[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
        }
        if dtype == DType::MXFP4 {
            block[0] = 120 + (block[0] % 8);
        }
    }
    PackedMatrix::from_ggml(dtype, rows, cols, &bytes).expect("random blocks repack")
}

/// The ggml type whose repacking gives Bits `format`.
pub fn bits_dtype(format: Format) -> DType {
    *BITS_TYPES
        .iter()
        .find(|&&t| random_ggml(t, 1, 256, 0).format == format)
        .unwrap_or_else(|| panic!("no ggml type repacks to {format:?}"))
}
