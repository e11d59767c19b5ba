//! The GPU memory a model takes, computed before anything is allocated: weights exactly as
//! [`GpuMatrix`](super::matrix::GpuMatrix) stores them (row padding and splits included, from the
//! same [`MatrixLayout`]), the KV cache, the scratch activations ([`Scratch`], which the model
//! allocates from), logits and the sampler. `flint info --preset` prints it; `flint bench` and
//! the tests compare it with what [`Gpu`](super::Gpu) counted.
//!
//! Not planned: the few bytes of each op's parameter uniform (tens of KB for a whole model).

use super::kernels::moe_group::GroupBuffers;
use super::kernels::{attention, matmul, sample_argmax, KvFormat};
use super::matrix::MatrixLayout;
use crate::config::{FfnKind, ModelConfig};
use crate::quant::packed::Format;
use crate::Result;
use serde::Serialize;

/// Bytes of each scratch activation buffer for chunks of up to `max_tokens` tokens (the model's
/// layers use them in turn).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Scratch {
    /// x, normed, shared expert out: `[T, H]` each.
    pub hidden: u64,
    /// q, q normed, q rotated, attention: `[T, q_dim]` each.
    pub q: u64,
    /// k, v, k normed: `[T, kv_dim]` each.
    pub kv: u64,
    /// The fused q|k|v projection: `[T, q_dim + 2 kv_dim]`.
    pub qkv: u64,
    /// gate, up, activation: `[T, widest FFN]` each (a dense FFN, k routed experts, the shared one).
    pub ffn: u64,
    /// `[T, E + 1]` (the shared expert's gate logit as one more column; at least 1).
    pub router_logits: u64,
    /// expert ids, expert weights: `[T, k]` each.
    pub slots: u64,
    /// `[T, k, H]`.
    pub expert_out: u64,
    /// The shared expert's gate logit: `[T]`.
    pub gate_logit: u64,
    /// Prefill's grouping of (token, slot) pairs by expert (`moe_group::GroupBuffers`; 0 if dense).
    pub grouping: u64,
    /// Decode attention's partial outputs, for the most splits a GPU gets at this context.
    pub attention_partials: u64,
    /// MLA: the latent projection's rows `[T, q_lora + kv_lora + rope]` and q's normed low-rank
    /// part `[T, q_lora]` (4 bytes each without MLA).
    pub latent: u64,
    pub q_latent: u64,
    /// MLA: per head a latent-space query and attention output, `[T, heads, kv_lora + rope]` each.
    pub heads_latent: u64,
    /// MLA: the per-head matmuls' head ids, `u32 [T * heads]` (4 bytes without MLA).
    pub head_ids: u64,
}

/// Attention as the kernel runs it: (query heads, key heads, head dim). MLA's heads all attend
/// over one latent "key head" of `kv_lora + rope` dims, whose first `kv_lora` are the values.
pub fn attention_dims(c: &ModelConfig) -> (u32, u32, u32) {
    match &c.mla {
        Some(m) => (c.num_heads as u32, 1, (m.kv_lora_rank + m.qk_rope_head_dim) as u32),
        None => (c.num_heads as u32, c.num_kv_heads as u32, c.head_dim as u32),
    }
}

/// A buffer's bytes as [`Gpu`](super::Gpu) allocates them: at least 4, a multiple of 4.
fn buffer(bytes: u64) -> u64 {
    bytes.max(4).next_multiple_of(4)
}

impl Scratch {
    /// For chunks of up to `max_tokens` and a KV cache of `max_ctx` positions.
    pub fn new(c: &ModelConfig, max_tokens: u32, max_ctx: u32) -> Scratch {
        let f32s = |n: usize| buffer(u64::from(max_tokens) * n as u64 * 4);
        let moe = c.moe.as_ref();
        let k = moe.map_or(1, |m| m.top_k);
        let ffn_width = [
            c.intermediate_size,
            moe.map_or(0, |m| m.top_k * m.expert_intermediate_size),
            moe.and_then(|m| m.shared_expert_intermediate_size).unwrap_or(0),
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        Scratch {
            hidden: f32s(c.hidden_size),
            q: f32s(c.q_dim().max(c.attn_out_dim())),
            kv: f32s(c.kv_dim()),
            qkv: f32s(c.q_dim() + 2 * c.kv_dim()),
            ffn: f32s(ffn_width),
            router_logits: f32s(moe.map_or(1, |m| m.num_experts + 1)),
            slots: f32s(k),
            expert_out: f32s(k * c.hidden_size),
            gate_logit: f32s(1),
            grouping: moe.map_or(0, |m| {
                let tile = matmul::tile_for(max_tokens);
                GroupBuffers::bytes(max_tokens, m.num_experts as u32, m.top_k as u32, tile)
            }),
            attention_partials: {
                let (heads, kv_heads, hd) = attention_dims(c);
                let splits = attention::max_splits(attention::workgroups_per_token(heads, kv_heads, hd), max_ctx);
                buffer(attention::partials_bytes(1, splits, heads, hd))
            },
            latent: f32s(
                c.mla.as_ref().map_or(0, |m| m.q_lora_rank.unwrap_or(0) + m.kv_lora_rank + m.qk_rope_head_dim),
            ),
            q_latent: f32s(c.mla.as_ref().map_or(0, |m| m.q_lora_rank.unwrap_or(0))),
            heads_latent: f32s(c.mla.as_ref().map_or(0, |m| c.num_heads * (m.kv_lora_rank + m.qk_rope_head_dim))),
            head_ids: f32s(if c.mla.is_some() { c.num_heads } else { 0 }),
        }
    }

    pub fn total(&self) -> u64 {
        3 * self.hidden
            + 4 * self.q
            + 3 * self.kv
            + self.qkv
            + 3 * self.ffn
            + self.router_logits
            + 2 * self.slots
            + self.expert_out
            + self.gate_logit
            + self.grouping
            + self.attention_partials
            + self.latent
            + self.q_latent
            + 2 * self.heads_latent
            + self.head_ids
    }
}

/// Every byte of a model on the GPU, by purpose.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryPlan {
    /// Weight matrices as uploaded or generated.
    pub weights: u64,
    /// Norm weights and biases.
    pub vectors: u64,
    /// What the cache stores.
    pub kv_format: KvFormat,
    /// Keys and values of one position, all layers.
    pub kv_per_token: u64,
    pub kv_cache: u64,
    pub max_ctx: u32,
    pub max_tokens: u32,
    pub scratch: u64,
    /// `[max_tokens, vocab]` f32.
    pub logits: u64,
    /// Token ids, the step uniform, the sampler's buffers and readbacks.
    pub io: u64,
}

impl MemoryPlan {
    /// The plan of `config` with every matrix INT4 in groups of `group` (a preset's generated
    /// weights), a KV cache of `max_ctx` positions in `kv`'s format and prefill chunks of
    /// `max_tokens`, on a device whose bindings hold `max_binding` bytes.
    pub fn int4(
        c: &ModelConfig,
        group: usize,
        max_tokens: u32,
        max_ctx: u32,
        kv: KvFormat,
        max_binding: u64,
    ) -> Result<Self> {
        let matrix = |rows: usize, cols: usize, unit: usize| -> Result<u64> {
            let format = Format::Int4 { group: crate::config::presets::group_for(cols, group), wide_scales: false };
            Ok(MatrixLayout::new(rows, cols, format, unit, max_binding)?.allocated_bytes())
        };
        let h = c.hidden_size;
        let head = matrix(c.vocab_size, h, 1)? * if c.tie_word_embeddings { 1 } else { 2 };
        let mut weights = head;
        for kind in &c.layer_ffn {
            weights += matrix(h, c.attn_out_dim(), 1)?;
            weights += match &c.mla {
                Some(m) => {
                    let (q_a, rest) = super::generated::mla_matrices(c, m);
                    let mut sum = 0;
                    for [_, rows, cols, units] in q_a.into_iter().chain(rest) {
                        sum += matrix(rows, cols, rows / units)?;
                    }
                    sum
                }
                None => matrix(c.q_dim(), h, 1)? + 2 * matrix(c.kv_dim(), h, 1)?,
            };
            let mlp = |n: usize, width: usize| -> Result<u64> {
                Ok(2 * matrix(n * width, h, width)? + matrix(n * h, width, h)?)
            };
            weights += match (kind, &c.moe) {
                (FfnKind::Moe, Some(m)) => {
                    let shared = match m.shared_expert_intermediate_size {
                        Some(s) => mlp(1, s)? + if m.shared_expert_gate { matrix(1, h, 1)? } else { 0 },
                        None => 0,
                    };
                    matrix(m.num_experts, h, 1)? + mlp(m.num_experts, m.expert_intermediate_size)? + shared
                }
                _ => mlp(1, c.intermediate_size)?,
            };
        }
        Ok(Self::with_weights(c, weights, Self::vectors(c), max_tokens, max_ctx, kv))
    }

    /// Bytes of the norm weights and q/k/v biases (f32 buffers). An o bias, which only some
    /// checkpoints have, is not counted.
    pub fn vectors(c: &ModelConfig) -> u64 {
        let vector = |n: usize| buffer(4 * n as u64);
        let per_layer = 2 * vector(c.hidden_size)
            + if c.qkv_bias { vector(c.q_dim()) + 2 * vector(c.kv_dim()) } else { 0 }
            + c.qk_norm_dims().map_or(0, |(qn, kn)| vector(qn) + vector(kn))
            + c.mla.as_ref().map_or(0, |m| vector(m.kv_lora_rank) + m.q_lora_rank.map_or(0, vector));
        let router_bias = match &c.moe {
            Some(m) if m.routing.selection_bias => vector(m.num_experts),
            _ => 0,
        };
        let moe_layers = c.layer_ffn.iter().filter(|k| **k == FfnKind::Moe).count() as u64;
        vector(c.hidden_size) + c.num_layers as u64 * per_layer + moe_layers * router_bias
    }

    /// The plan of `config` with `weights` bytes of matrices and `vectors` of norms and biases
    /// known (a checkpoint's, whatever their formats).
    pub fn with_weights(
        c: &ModelConfig,
        weights: u64,
        vectors: u64,
        max_tokens: u32,
        max_ctx: u32,
        kv: KvFormat,
    ) -> Self {
        let (k1, v1) = kv_buffer_bytes(c, 1, kv);
        let kv_per_token = c.num_layers as u64 * (k1 + v1);
        let (keys, values) = kv_buffer_bytes(c, max_ctx, kv);
        let t = u64::from(max_tokens);
        // Token ids, the step uniform (16 B); the sampler: request uniform, state, ring and one
        // readback of 4 B per slot (3), argmax partials (8 B per block), exp2 tables (512 u32).
        let sampler = std::mem::size_of::<super::kernels::sample::Request>() as u64
            + 4
            + 3 * 4
            + 3 * 4
            + buffer(u64::from(sample_argmax::blocks(c.vocab_size as u32)) * 8)
            + 512 * 4;
        MemoryPlan {
            weights,
            vectors,
            kv_format: kv,
            kv_per_token,
            // One buffer per layer for keys and one for values (MLA: the latent rows, and 4 bytes).
            kv_cache: c.num_layers as u64 * (buffer(keys) + buffer(values)),
            max_ctx,
            max_tokens,
            scratch: Scratch::new(c, max_tokens, max_ctx).total(),
            logits: buffer(t * c.vocab_size as u64 * 4),
            io: buffer(4 * t) + 16 + sampler,
        }
    }

    pub fn total(&self) -> u64 {
        self.weights + self.vectors + self.kv_cache + self.scratch + self.logits + self.io
    }
}

/// Bytes of one layer's key and value caches of `positions` rows (MLA: latent rows, no values):
/// the one formula the plan and the allocation share.
pub fn kv_buffer_bytes(c: &ModelConfig, positions: u32, kv: KvFormat) -> (u64, u64) {
    let (k, v) = c.kv_row_floats();
    let bytes = |n: usize| u64::from(positions) * n as u64 * kv.bytes_per_value();
    (bytes(k), bytes(v))
}
