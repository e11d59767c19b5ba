//! Shared by the kernel tests: one device for the whole test binary, random data, comparison.

use crate::gpu::{Backend, Gpu};
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
