//! Shared by the kernel tests: one device for the whole test binary, random data, comparison.

use crate::gpu::{Backend, Gpu};
use crate::quant::blocks::random_blocks;
use crate::quant::packed::{Format, PackedMatrix};
use crate::quant::repack::bits_format;
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

/// `rows` rows of `cols` elements of random `dtype` blocks ([`random_blocks`]), repacked.
pub fn random_ggml(dtype: DType, rows: usize, cols: usize, seed: u64) -> PackedMatrix {
    let n_blocks = rows * cols / block_info(dtype).expect("a ggml type").0;
    PackedMatrix::from_ggml(dtype, rows, cols, &random_blocks(dtype, n_blocks, seed)).expect("random blocks repack")
}

/// The ggml type whose repacking gives Bits `format`.
pub fn bits_dtype(format: Format) -> DType {
    *BITS_TYPES
        .iter()
        .find(|&&t| bits_format(t) == Some(format))
        .unwrap_or_else(|| panic!("no ggml type repacks to {format:?}"))
}
