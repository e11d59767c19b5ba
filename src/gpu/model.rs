//! The GPU forward pass: weights uploaded once, every activation buffer allocated once, and
//! the whole forward of a chunk of up to `max_tokens` tokens recorded as a list of [`Op`]s
//! that is replayed for every chunk (prefill) and every token (decode).
//!
//! Per layer (one compute pass for the whole model; wgpu orders each op after the writes it
//! reads):
//! ```text
//! rms_norm -> q/k/v matmul (+bias) -> [q/k rms_norm] -> rope + KV append -> attention
//! -> o matmul -> x += o * residual_multiplier
//! rms_norm -> dense: gate/up matmul -> swiglu -> down matmul -> x += . * residual_multiplier
//!          -> MoE:   router matmul -> route (top-k ids + weights on the GPU)
//!                    -> expert gate/up matmul (ids read on the GPU) -> swiglu -> expert down
//!                    [-> shared expert gate/up/down (+ gate logit)] -> combine into x
//! ```
//! then the final norm and the output matmul into `logits` `[T, vocab]`. Granite's logits
//! multiplier is folded into the final norm's weight (the output is linear in it).

use super::kernels::{add_scaled, attention, embed, matmul, moe_combine, moe_route, rms_norm, rope, swiglu};
use super::matrix::GpuMatrix;
use super::step::Step;
use super::{Gpu, Op};
use crate::config::{ModelConfig, QkNorm};
use crate::weights::model::{FfnWeights, LinearWeights, MlpWeights, ModelWeights};
use crate::{Error, Result};
use std::sync::Arc;

/// A model resident on the GPU, ready to run chunks of tokens.
pub struct GpuModel {
    pub gpu: Arc<Gpu>,
    pub config: ModelConfig,
    /// Tokens per chunk the ops were built for.
    pub max_tokens: u32,
    /// Positions the KV cache holds.
    pub max_ctx: u32,
    pub step: Step,
    /// `u32 [max_tokens]`: the chunk's token ids (in decode, written by the GPU sampler).
    pub token_ids: wgpu::Buffer,
    /// `f32 [max_tokens, vocab]`.
    pub logits: wgpu::Buffer,
    /// The forward of one chunk.
    pub ops: Vec<Op>,
    /// Bytes of weights and of KV cache on the GPU.
    pub weight_bytes: u64,
    pub kv_bytes: u64,
}

/// Scratch buffers shared by every layer (each layer's ops use them in turn).
struct Scratch {
    x: wgpu::Buffer,
    normed: wgpu::Buffer,
    q: wgpu::Buffer,
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    q_normed: wgpu::Buffer,
    k_normed: wgpu::Buffer,
    attn: wgpu::Buffer,
    proj: wgpu::Buffer,
    gate: wgpu::Buffer,
    up: wgpu::Buffer,
    act: wgpu::Buffer,
    router_logits: wgpu::Buffer,
    expert_ids: wgpu::Buffer,
    expert_weights: wgpu::Buffer,
    expert_out: wgpu::Buffer,
    shared_out: wgpu::Buffer,
    shared_gate_logit: wgpu::Buffer,
}

impl GpuModel {
    /// Uploads `weights` and builds the ops for chunks of up to `max_tokens` tokens and a KV
    /// cache of `max_ctx` positions.
    pub fn new(
        gpu: Arc<Gpu>,
        config: &ModelConfig,
        weights: &ModelWeights,
        max_tokens: u32,
        max_ctx: u32,
    ) -> Result<Self> {
        let c = config;
        if max_tokens == 0 || max_ctx == 0 {
            return Err(Error::Gpu("a model needs room for at least one token".into()));
        }
        let g = &*gpu;
        let t = max_tokens as u64;
        let f32s = |n: usize| t * n as u64 * 4;
        let (h, q_dim, kv_dim) = (c.hidden_size, c.q_dim(), c.kv_dim());
        let moe = c.moe.as_ref();
        let k = moe.map_or(1, |m| m.top_k);
        // The widest FFN activation: a dense layer's, the routed experts' (k per token), the shared expert's.
        let ffn_width = [
            c.intermediate_size,
            moe.map_or(0, |m| m.top_k * m.expert_intermediate_size),
            moe.and_then(|m| m.shared_expert_intermediate_size).unwrap_or(0),
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        let s = Scratch {
            x: g.storage_zeroed("x", f32s(h)),
            normed: g.storage_zeroed("normed", f32s(h)),
            q: g.storage_zeroed("q", f32s(q_dim)),
            k: g.storage_zeroed("k", f32s(kv_dim)),
            v: g.storage_zeroed("v", f32s(kv_dim)),
            q_normed: g.storage_zeroed("q normed", f32s(q_dim)),
            k_normed: g.storage_zeroed("k normed", f32s(kv_dim)),
            attn: g.storage_zeroed("attention", f32s(q_dim)),
            proj: g.storage_zeroed("projection", f32s(h)),
            gate: g.storage_zeroed("gate", f32s(ffn_width)),
            up: g.storage_zeroed("up", f32s(ffn_width)),
            act: g.storage_zeroed("activation", f32s(ffn_width)),
            router_logits: g.storage_zeroed("router logits", f32s(moe.map_or(1, |m| m.num_experts))),
            expert_ids: g.storage_zeroed("expert ids", f32s(k)),
            expert_weights: g.storage_zeroed("expert weights", f32s(k)),
            expert_out: g.storage_zeroed("expert out", f32s(k * h)),
            shared_out: g.storage_zeroed("shared expert out", f32s(h)),
            shared_gate_logit: g.storage_zeroed("shared expert gate", f32s(1)),
        };
        let step = Step::new(g);
        let token_ids = g.storage_zeroed("token ids", t * 4);
        let logits = g.storage_zeroed("logits", f32s(c.vocab_size));
        let mut ops = Vec::new();
        let mut weight_bytes = 0u64;
        let mut kv_bytes = 0u64;
        let mut upload = |m: &crate::quant::packed::PackedMatrix, rows_per_unit: usize| -> Result<GpuMatrix> {
            let gm = GpuMatrix::upload_with_limit(g, m, rows_per_unit, g.max_binding_bytes())?;
            weight_bytes += gm.bytes();
            Ok(gm)
        };
        let vector = |label: &str, v: &[f32]| g.storage(label, v);

        // Embeddings.
        let embed_table = upload(&weights.embed, 1)?;
        ops.extend(embed::ops(g, &step.buffer, &token_ids, &embed_table, &s.x, max_tokens, c.embedding_multiplier)?);

        let linear = |ops: &mut Vec<Op>,
                      m: &GpuMatrix,
                      bias: Option<&wgpu::Buffer>,
                      x: &wgpu::Buffer,
                      out: &wgpu::Buffer|
         -> Result<()> {
            ops.extend(match bias {
                Some(b) => matmul::ops_with_bias(g, &step.buffer, m, x, b, out, max_tokens)?,
                None => matmul::ops(g, &step.buffer, m, x, out, max_tokens)?,
            });
            Ok(())
        };

        for (l, layer) in weights.layers.iter().enumerate() {
            // Attention.
            let attn_norm = vector("attn norm", &layer.attn_norm);
            ops.push(rms_norm::op(
                g,
                &step.buffer,
                &s.x,
                &attn_norm,
                &s.normed,
                max_tokens,
                1,
                h as u32,
                c.rms_norm_eps,
            )?);
            for (w, out) in [(&layer.q, &s.q), (&layer.k, &s.k), (&layer.v, &s.v)] {
                let (m, bias) = (upload(&w.weight, 1)?, bias_buffer(g, w));
                linear(&mut ops, &m, bias.as_ref(), &s.normed, out)?;
            }
            let (q, kk) = match (&layer.q_norm, &layer.k_norm, c.qk_norm) {
                (Some(qn), Some(kn), mode) if mode != QkNorm::None => {
                    // Per head: one weight of head_dim for every head; whole: one over the projection.
                    let (q_rows, k_rows, q_width, k_width) = match mode {
                        QkNorm::PerHead => (c.num_heads, c.num_kv_heads, c.head_dim, c.head_dim),
                        _ => (1, 1, q_dim, kv_dim),
                    };
                    let (qn, kn) = (vector("q norm", qn), vector("k norm", kn));
                    ops.push(rms_norm::op(
                        g,
                        &step.buffer,
                        &s.q,
                        &qn,
                        &s.q_normed,
                        max_tokens,
                        q_rows as u32,
                        q_width as u32,
                        c.rms_norm_eps,
                    )?);
                    ops.push(rms_norm::op(
                        g,
                        &step.buffer,
                        &s.k,
                        &kn,
                        &s.k_normed,
                        max_tokens,
                        k_rows as u32,
                        k_width as u32,
                        c.rms_norm_eps,
                    )?);
                    (&s.q_normed, &s.k_normed)
                }
                _ => (&s.q, &s.k),
            };
            let cache_bytes = max_ctx as u64 * kv_dim as u64 * 4;
            let k_cache = g.storage_zeroed(&format!("k cache {l}"), cache_bytes);
            let v_cache = g.storage_zeroed(&format!("v cache {l}"), cache_bytes);
            kv_bytes += 2 * cache_bytes;
            ops.push(rope::op(
                g,
                &step.buffer,
                q,
                kk,
                &s.v,
                &k_cache,
                &v_cache,
                max_tokens,
                c.num_heads as u32,
                c.num_kv_heads as u32,
                c.head_dim as u32,
                c.rope_theta,
                c.rope_pairing,
                max_ctx,
            )?);
            ops.push(attention::op(
                g,
                &step.buffer,
                q,
                &k_cache,
                &v_cache,
                &s.attn,
                max_tokens,
                c.num_heads as u32,
                c.num_kv_heads as u32,
                c.head_dim as u32,
                c.attention_scale,
            )?);
            let o = upload(&layer.o.weight, 1)?;
            linear(&mut ops, &o, bias_buffer(g, &layer.o).as_ref(), &s.attn, &s.proj)?;
            ops.push(add_scaled::op(g, &step.buffer, &s.x, &s.proj, max_tokens, h as u32, c.residual_multiplier)?);

            // FFN.
            let ffn_norm = vector("ffn norm", &layer.ffn_norm);
            ops.push(rms_norm::op(
                g,
                &step.buffer,
                &s.x,
                &ffn_norm,
                &s.normed,
                max_tokens,
                1,
                h as u32,
                c.rms_norm_eps,
            )?);
            match &layer.ffn {
                FfnWeights::Dense(mlp) => {
                    mlp_ops(&mut ops, g, &step, &s, mlp, max_tokens, &mut upload, &s.proj)?;
                    ops.push(add_scaled::op(
                        g,
                        &step.buffer,
                        &s.x,
                        &s.proj,
                        max_tokens,
                        h as u32,
                        c.residual_multiplier,
                    )?);
                }
                FfnWeights::Moe(m) => {
                    let mc = moe.ok_or_else(|| Error::Gpu("an MoE layer in a dense config".into()))?;
                    let (e, k, ie) = (mc.num_experts as u32, mc.top_k as u32, mc.expert_intermediate_size);
                    let router = upload(&m.router, 1)?;
                    linear(&mut ops, &router, None, &s.normed, &s.router_logits)?;
                    ops.push(moe_route::op(
                        g,
                        &step.buffer,
                        &s.router_logits,
                        &s.expert_ids,
                        &s.expert_weights,
                        max_tokens,
                        e,
                        k,
                        mc.renormalize,
                    )?);
                    let gate = upload(&m.experts.gate, ie)?;
                    let up = upload(&m.experts.up, ie)?;
                    let down = upload(&m.experts.down, h)?;
                    ops.extend(matmul::expert_ops(
                        g,
                        &step.buffer,
                        &gate,
                        ie as u32,
                        &s.expert_ids,
                        k,
                        &s.normed,
                        &s.gate,
                        max_tokens,
                        false,
                    )?);
                    ops.extend(matmul::expert_ops(
                        g,
                        &step.buffer,
                        &up,
                        ie as u32,
                        &s.expert_ids,
                        k,
                        &s.normed,
                        &s.up,
                        max_tokens,
                        false,
                    )?);
                    ops.push(swiglu::op(g, &step.buffer, &s.gate, &s.up, &s.act, max_tokens, k, ie as u32)?);
                    ops.extend(matmul::expert_ops(
                        g,
                        &step.buffer,
                        &down,
                        h as u32,
                        &s.expert_ids,
                        k,
                        &s.act,
                        &s.expert_out,
                        max_tokens,
                        true,
                    )?);
                    let shared = match &m.shared {
                        Some(mlp) => {
                            mlp_ops(&mut ops, g, &step, &s, mlp, max_tokens, &mut upload, &s.shared_out)?;
                            Some(&s.shared_out)
                        }
                        None => None,
                    };
                    let shared_gate = match &m.shared_gate {
                        Some(w) => {
                            let gm = upload(w, 1)?;
                            linear(&mut ops, &gm, None, &s.normed, &s.shared_gate_logit)?;
                            Some(&s.shared_gate_logit)
                        }
                        None => None,
                    };
                    ops.push(moe_combine::op(
                        g,
                        &step.buffer,
                        &s.x,
                        &s.expert_out,
                        &s.expert_weights,
                        shared,
                        shared_gate,
                        max_tokens,
                        h as u32,
                        k,
                        c.residual_multiplier,
                    )?);
                }
            }
        }

        // Output: final norm (with the logits multiplier folded in), then the vocabulary matmul.
        let final_norm: Vec<f32> = weights.final_norm.iter().map(|w| w * c.logits_multiplier).collect();
        let final_norm = vector("final norm", &final_norm);
        ops.push(rms_norm::op(g, &step.buffer, &s.x, &final_norm, &s.normed, max_tokens, 1, h as u32, c.rms_norm_eps)?);
        let output = match &weights.lm_head {
            Some(m) => upload(m, 1)?,
            None => embed_table,
        };
        linear(&mut ops, &output, None, &s.normed, &logits)?;

        Ok(GpuModel {
            gpu,
            config: config.clone(),
            max_tokens,
            max_ctx,
            step,
            token_ids,
            logits,
            ops,
            weight_bytes,
            kv_bytes,
        })
    }

    /// Runs one chunk (at most `max_tokens` ids) at `position` and submits it.
    pub fn run_chunk(&self, tokens: &[u32], position: usize) -> Result<()> {
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
        let g = &self.gpu;
        g.queue.write_buffer(&self.token_ids, 0, bytemuck::cast_slice(tokens));
        self.step.set(g, tokens.len() as u32, position as u32);
        super::submit(g, &self.ops.iter().collect::<Vec<_>>());
        Ok(())
    }

    /// The logits of every position of `tokens`, run after `position` cached ones, chunk by chunk.
    pub fn forward(&self, tokens: &[u32], position: usize) -> Result<Vec<Vec<f32>>> {
        let vocab = self.config.vocab_size;
        let mut rows = Vec::with_capacity(tokens.len());
        for (i, chunk) in tokens.chunks(self.max_tokens as usize).enumerate() {
            self.run_chunk(chunk, position + i * self.max_tokens as usize)?;
            let logits: Vec<f32> = self.gpu.read(&self.logits)?;
            rows.extend(logits.chunks_exact(vocab).take(chunk.len()).map(|r| r.to_vec()));
        }
        Ok(rows)
    }
}

fn bias_buffer(gpu: &Gpu, w: &LinearWeights) -> Option<wgpu::Buffer> {
    w.bias.as_ref().map(|b| gpu.storage("bias", b))
}

/// A dense SwiGLU FFN of `s.normed` into `out`.
#[allow(clippy::too_many_arguments)]
fn mlp_ops(
    ops: &mut Vec<Op>,
    g: &Gpu,
    step: &Step,
    s: &Scratch,
    mlp: &MlpWeights,
    max_tokens: u32,
    upload: &mut impl FnMut(&crate::quant::packed::PackedMatrix, usize) -> Result<GpuMatrix>,
    out: &wgpu::Buffer,
) -> Result<()> {
    let (gate, up, down) = (upload(&mlp.gate, 1)?, upload(&mlp.up, 1)?, upload(&mlp.down, 1)?);
    ops.extend(matmul::ops(g, &step.buffer, &gate, &s.normed, &s.gate, max_tokens)?);
    ops.extend(matmul::ops(g, &step.buffer, &up, &s.normed, &s.up, max_tokens)?);
    ops.push(swiglu::op(g, &step.buffer, &s.gate, &s.up, &s.act, max_tokens, 1, mlp.gate.rows as u32)?);
    ops.extend(matmul::ops(g, &step.buffer, &down, &s.act, out, max_tokens)?);
    Ok(())
}
