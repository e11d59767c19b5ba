//! One place builds a model and its generator for every surface (`flint run/chat/serve/bench`,
//! the server's worker, the browser): prefill chunking and the KV cache's size are decided here.

use crate::config::ModelConfig;
use crate::gpu::model::GpuModel;
use crate::gpu::Gpu;
use crate::weights::model::ModelWeights;
use crate::Result;
use std::sync::Arc;
#[cfg(not(target_arch = "wasm32"))]
use {
    crate::engine::{CpuGenerator, Generator},
    crate::gpu::{generator::GpuGenerator, Backend},
    crate::reference::{ReferenceModel, Weights},
};

/// Tokens per prefill chunk on the GPU (the activations are sized for this many rows).
pub const CHUNK_TOKENS: u32 = 64;

/// Which engine computes the tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(all(feature = "cli", not(target_arch = "wasm32")), derive(clap::ValueEnum))]
pub enum Device {
    /// The WGSL engine on the GPU (native Vulkan/Metal/DX12/GL through wgpu, or WebGPU).
    #[default]
    Gpu,
    /// The f32 CPU reference.
    Cpu,
}

/// `(prefill chunk tokens, KV cache positions)` for a request of `ctx` positions: at least one,
/// at most the model's context; a chunk never exceeds the cache.
pub fn sizes(config: &ModelConfig, ctx: usize) -> (u32, u32) {
    let ctx = ctx.clamp(1, config.max_position_embeddings) as u32;
    (CHUNK_TOKENS.min(ctx), ctx)
}

/// `weights` on `gpu` with a KV cache of `ctx` positions (clamped by [`sizes`]).
pub fn gpu_model_on(gpu: Arc<Gpu>, config: &ModelConfig, weights: &ModelWeights, ctx: usize) -> Result<GpuModel> {
    let (chunk, ctx) = sizes(config, ctx);
    GpuModel::new(gpu, config, weights, chunk, ctx)
}

/// `weights` on a new device of `backend` (native; the browser awaits its device).
#[cfg(not(target_arch = "wasm32"))]
pub fn gpu_model(config: &ModelConfig, weights: &ModelWeights, backend: Backend, ctx: usize) -> Result<GpuModel> {
    gpu_model_on(Arc::new(Gpu::new_blocking(backend)?), config, weights, ctx)
}

/// The generator `flint run`, `serve` and `chat` share: the GPU engine or the CPU reference.
#[cfg(not(target_arch = "wasm32"))]
pub fn generator(
    config: &ModelConfig,
    weights: &ModelWeights,
    device: Device,
    backend: Backend,
    ctx: usize,
) -> Result<Box<dyn Generator>> {
    Ok(match device {
        Device::Cpu => Box::new(CpuGenerator::new(ReferenceModel::new(config.clone(), Weights::from_packed(weights)))),
        Device::Gpu => Box::new(GpuGenerator::new(gpu_model(config, weights, backend, ctx)?)?),
    })
}
