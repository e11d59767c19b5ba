//! The GPU forward pass: weights uploaded once, every activation buffer allocated once, and
//! the forward of a chunk recorded as a list of [`Op`]s replayed for every chunk. Two lists
//! are built: one for decode (one token: no workgroup is dispatched for tokens that are not
//! there) and one for prefill chunks of up to `max_tokens` tokens.
//!
//! Per layer (one compute pass for the whole model; wgpu orders each op after the writes it
//! reads):
//! ```text
//! rms_norm -> q|k|v matmul (+bias) -> [q/k rms_norm] -> rope + KV append -> attention
//! -> o matmul, x += o * residual_multiplier in its epilogue
//! rms_norm -> dense: gate|up matmul with SwiGLU in its epilogue -> down matmul, x += . in its epilogue
//!          -> MoE:   router matmul (+ the shared expert's gate logit as one more row)
//!                    -> route (top-k ids + weights on the GPU)
//!                    -> expert gate|up matmul + SwiGLU (ids read on the GPU) -> expert down
//!                    [-> shared expert gate|up + SwiGLU, down] -> combine into x
//! ```
//! (q|k|v: one stacked matrix whose rows per token are `q | k | v`, read by the q/k norms and by
//! rope as columns; gate|up: one paired matrix, `layer.rs`. Matrices of different formats run
//! apart: q, k, v as three matmuls; gate and up as two and the `swiglu` kernel.)
//! then the final norm and the output matmul into `logits`, for the rows whose logits are read
//! ([`Logits`]): every row (`forward`, the parity tests), the last only (a prompt's last chunk in
//! generation: the head, the largest matrix of a small model, then runs as a matvec), or none
//! (a prompt's earlier chunks). Granite's logits multiplier is folded into the final norm's
//! weight (the output is linear in it).
//!
//! In prefill chunks the routed experts run grouped: `moe_group` sorts the chunk's (token, slot)
//! pairs by expert and cuts each expert's pairs into tiles, and the expert matmuls run one tile
//! at a time (`matmul::grouped_expert_ops`), so an expert's weights are read once per tile of its
//! tokens, not once per token. Decode (one token) runs each slot's matvec directly.

mod builder;
mod layer;
mod record;

pub use builder::GpuModelBuilder;

use crate::config::ModelConfig;
use crate::gpu::feed::{HostFeed, WeightFeed};
use crate::gpu::kernels::KvFormat;
use crate::gpu::step::Step;
use crate::gpu::{Gpu, Op};
use crate::weights::model::ModelWeights;
use crate::{Error, Result};
use std::sync::Arc;

/// Which rows of a chunk get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Every row: `logits` holds `[n, vocab]`.
    All,
    /// The chunk's last row only, written to row 0 of `logits` (what a sampler reads).
    Last,
    /// None: a prompt's chunk before the last.
    None,
}

/// A model resident on the GPU, ready to run chunks of tokens.
pub struct GpuModel {
    pub gpu: Arc<Gpu>,
    pub config: ModelConfig,
    /// Tokens per prefill chunk.
    pub max_tokens: u32,
    /// Positions the KV cache holds.
    pub max_ctx: u32,
    /// What the KV cache stores.
    pub kv: KvFormat,
    pub step: Step,
    /// `u32 [max_tokens]`: the chunk's token ids (in decode, written by the GPU sampler).
    pub token_ids: wgpu::Buffer,
    /// `f32 [max_tokens, vocab]`.
    pub logits: wgpu::Buffer,
    /// The forward of one token, its logits included (in row 0).
    pub decode_ops: Vec<Op>,
    /// The forward of a chunk of up to `max_tokens` tokens up to the final norm.
    pub prefill_ops: Vec<Op>,
    /// After `prefill_ops`: the final norm and head of every row ([`Logits::All`]).
    pub prefill_logits_all: Vec<Op>,
    /// After `prefill_ops`: the final norm and head of the last row ([`Logits::Last`]).
    pub prefill_logits_last: Vec<Op>,
    /// Bytes of weights and of KV cache on the GPU.
    pub weight_bytes: u64,
    pub kv_bytes: u64,
}

impl GpuModel {
    /// Uploads `weights` and builds the ops for prefill chunks of up to `max_tokens` tokens,
    /// for decode, and a KV cache of `max_ctx` positions in `kv`'s format.
    pub fn new(
        gpu: Arc<Gpu>,
        config: &ModelConfig,
        weights: &ModelWeights,
        max_tokens: u32,
        max_ctx: u32,
        kv: KvFormat,
    ) -> Result<Self> {
        Self::from_feed(gpu, config, &mut HostFeed::from_weights(weights), max_tokens, max_ctx, kv)
    }

    /// [`GpuModel::new`] with the weights taken part by part from `feed`.
    pub fn from_feed(
        gpu: Arc<Gpu>,
        config: &ModelConfig,
        feed: &mut dyn WeightFeed,
        max_tokens: u32,
        max_ctx: u32,
        kv: KvFormat,
    ) -> Result<Self> {
        let mut builder = GpuModelBuilder::new(gpu, config, max_tokens, max_ctx, kv)?;
        builder.embed(feed.embed(builder.gpu())?)?;
        for l in 0..config.num_layers {
            let layer = feed.layer(builder.gpu(), l)?;
            builder.layer(layer)?;
        }
        let head = feed.head(builder.gpu())?;
        builder.finish(head)
    }

    /// Weight bytes the kernels of one decode step read (routed experts: the `k` a token selects).
    pub fn decode_weight_bytes(&self) -> u64 {
        self.decode_ops.iter().map(|op| op.weight_bytes).sum()
    }

    /// Weight bytes the kernels of a full prefill chunk (`max_tokens` tokens) read when it is a
    /// prompt's last ([`Logits::Last`]): weights are read once per token tile, routed experts
    /// once per tile of their tokens (expected under uniform routing).
    pub fn prefill_weight_bytes(&self) -> u64 {
        self.ops_for(self.max_tokens as usize, Logits::Last).iter().map(|op| op.weight_bytes).sum()
    }

    /// The ops for a chunk of `n` tokens whose `logits` rows are read.
    pub fn ops_for(&self, n: usize, logits: Logits) -> Vec<&Op> {
        if n == 1 {
            // One row: all rows are the last (and decode ops end with the head).
            return self.decode_ops.iter().collect();
        }
        let head = match logits {
            Logits::All => &self.prefill_logits_all[..],
            Logits::Last => &self.prefill_logits_last[..],
            Logits::None => &[],
        };
        self.prefill_ops.iter().chain(head).collect()
    }

    /// Checks a chunk of host-given ids at `position`.
    pub fn check_chunk(&self, tokens: &[u32], position: usize) -> Result<()> {
        if tokens.is_empty() || tokens.len() > self.max_tokens as usize {
            return Err(Error::Request(format!("a chunk holds 1 to {} tokens, not {}", self.max_tokens, tokens.len())));
        }
        if position + tokens.len() > self.max_ctx as usize {
            return Err(Error::Request(format!(
                "{} positions exceed the context of {}",
                position + tokens.len(),
                self.max_ctx
            )));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.config.vocab_size) {
            return Err(Error::Request(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.config.vocab_size
            )));
        }
        Ok(())
    }

    /// Runs one chunk (at most `max_tokens` ids) at `position`, with the `logits` rows asked
    /// for, and submits it.
    pub fn run_chunk(&self, tokens: &[u32], position: usize, logits: Logits) -> Result<wgpu::SubmissionIndex> {
        self.check_chunk(tokens, position)?;
        let g = &self.gpu;
        g.queue.write_buffer(&self.token_ids, 0, bytemuck::cast_slice(tokens));
        self.step.set(g, tokens.len() as u32, position as u32);
        Ok(super::submit(g, &self.ops_for(tokens.len(), logits)))
    }

    /// The logits of every position of `tokens`, run after `position` cached ones, chunk by chunk.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward(&self, tokens: &[u32], position: usize) -> Result<Vec<Vec<f32>>> {
        pollster::block_on(self.forward_async(tokens, position))
    }

    /// [`GpuModel::forward`] for async callers (the browser).
    pub async fn forward_async(&self, tokens: &[u32], position: usize) -> Result<Vec<Vec<f32>>> {
        let vocab = self.config.vocab_size;
        let mut rows = Vec::with_capacity(tokens.len());
        for (i, chunk) in tokens.chunks(self.max_tokens as usize).enumerate() {
            self.run_chunk(chunk, position + i * self.max_tokens as usize, Logits::All)?;
            let logits: Vec<f32> = self.gpu.read_async(&self.logits).await?;
            rows.extend(logits.chunks_exact(vocab).take(chunk.len()).map(|r| r.to_vec()));
        }
        Ok(rows)
    }
}
