//! One place builds a model and its generator for every surface (`flint run/chat/serve/bench`,
//! the server's worker, the browser): prefill chunking and the KV cache's size are decided here.

use crate::config::ModelConfig;
use crate::gpu::kernels::KvFormat;
#[cfg(not(target_arch = "wasm32"))]
use {
    crate::engine::{CpuGenerator, Generator},
    crate::gpu::model::GpuModel,
    crate::gpu::Gpu,
    crate::gpu::{generator::GpuGenerator, Backend},
    crate::reference::{ReferenceModel, Weights},
    crate::weights::model::ModelWeights,
    crate::Result,
    std::sync::Arc,
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

/// What a GPU model's buffers hold: tokens per prefill chunk, and the KV cache's positions and
/// format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub chunk: u32,
    pub ctx: u32,
    pub kv: KvFormat,
}

/// The capacity for a request of `ctx` positions (at least one, at most the model's context; a
/// chunk never exceeds the cache) in `kv`'s format.
pub fn sizes(config: &ModelConfig, ctx: usize, kv: KvFormat) -> Capacity {
    let ctx = ctx.clamp(1, config.max_position_embeddings) as u32;
    Capacity { chunk: CHUNK_TOKENS.min(ctx), ctx, kv }
}

/// `weights` on a new device of `backend` (native; the browser streams its weights), with a KV
/// cache of `ctx` positions (clamped by [`sizes`]) in `kv`'s format.
#[cfg(not(target_arch = "wasm32"))]
pub fn gpu_model(
    config: &ModelConfig,
    weights: &ModelWeights,
    backend: Backend,
    ctx: usize,
    kv: KvFormat,
) -> Result<GpuModel> {
    let Capacity { chunk, ctx, kv } = sizes(config, ctx, kv);
    GpuModel::new(Arc::new(Gpu::new_blocking(backend)?), config, weights, chunk, ctx, kv)
}

/// The generator `flint run`, `serve` and `chat` share: the GPU engine or the CPU reference.
#[cfg(not(target_arch = "wasm32"))]
pub fn generator(
    config: &ModelConfig,
    weights: &ModelWeights,
    device: Device,
    backend: Backend,
    ctx: usize,
    kv: KvFormat,
) -> Result<Box<dyn Generator>> {
    Ok(match device {
        Device::Cpu => Box::new(CpuGenerator::new(ReferenceModel::new(config.clone(), Weights::from_packed(weights)))),
        Device::Gpu => Box::new(GpuGenerator::new(gpu_model(config, weights, backend, ctx, kv)?)?),
    })
}
