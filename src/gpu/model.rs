//! The GPU forward pass: weights uploaded once, every activation buffer allocated once, and
//! the forward of a chunk recorded as a list of [`Op`]s replayed for every chunk. Two lists
//! are built: one for decode (one token: no workgroup is dispatched for tokens that are not
//! there) and one for prefill chunks of up to `max_tokens` tokens.
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

use super::feed::{GpuFfn, GpuHead, GpuLayerWeights, GpuLinear, GpuMlp, GpuMoe, HostFeed, WeightFeed};
use super::kernels::moe_group::{self, GroupBuffers};
use super::kernels::{add_scaled, attention, embed, matmul, moe_combine, moe_route, rms_norm, rope, swiglu};
use super::matrix::GpuMatrix;
use super::plan::{kv_buffer_bytes, Scratch};
use super::step::Step;
use super::{Gpu, Op};
use crate::config::{FfnKind, ModelConfig, QkNorm};
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

struct GpuLayer {
    w: GpuLayerWeights,
    k_cache: wgpu::Buffer,
    v_cache: wgpu::Buffer,
}

/// Everything on the GPU the ops bind: weights, caches, and the scratch activations that every
/// layer uses in turn (sized for `max_tokens`).
struct Resident {
    embed: GpuMatrix,
    layers: Vec<GpuLayer>,
    /// The final norm's weight times the logits multiplier.
    final_norm: wgpu::Buffer,
    lm_head: Option<GpuMatrix>,
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
    /// Prefill's grouping of (token, slot) pairs by expert (MoE models).
    group: Option<GroupBuffers>,
}

impl GpuModel {
    /// Uploads `weights` and builds the ops for prefill chunks of up to `max_tokens` tokens,
    /// for decode, and a KV cache of `max_ctx` positions.
    pub fn new(
        gpu: Arc<Gpu>,
        config: &ModelConfig,
        weights: &ModelWeights,
        max_tokens: u32,
        max_ctx: u32,
    ) -> Result<Self> {
        Self::from_feed(gpu, config, &mut HostFeed::from_weights(weights), max_tokens, max_ctx)
    }

    /// [`GpuModel::new`] with the weights taken part by part from `feed`.
    pub fn from_feed(
        gpu: Arc<Gpu>,
        config: &ModelConfig,
        feed: &mut dyn WeightFeed,
        max_tokens: u32,
        max_ctx: u32,
    ) -> Result<Self> {
        let mut builder = GpuModelBuilder::new(gpu, config, max_tokens, max_ctx)?;
        builder.embed(feed.embed(&builder.gpu)?)?;
        for l in 0..config.num_layers {
            let layer = feed.layer(&builder.gpu, l)?;
            builder.layer(layer)?;
        }
        let head = feed.head(&builder.gpu)?;
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

/// Builds a [`GpuModel`] from parts given in order: the embeddings, each layer, the head. Each
/// part is checked against the config as it arrives; a layer's KV cache is allocated with it.
pub struct GpuModelBuilder {
    gpu: Arc<Gpu>,
    config: ModelConfig,
    max_tokens: u32,
    max_ctx: u32,
    embed: Option<GpuMatrix>,
    layers: Vec<GpuLayer>,
    weight_bytes: u64,
}

impl GpuModelBuilder {
    pub fn new(gpu: Arc<Gpu>, config: &ModelConfig, max_tokens: u32, max_ctx: u32) -> Result<Self> {
        if max_tokens == 0 || max_ctx == 0 {
            return Err(Error::Gpu("a model needs room for at least one token".into()));
        }
        config.validate()?;
        let (config, layers) = (config.clone(), Vec::with_capacity(config.num_layers));
        Ok(GpuModelBuilder { gpu, config, max_tokens, max_ctx, embed: None, layers, weight_bytes: 0 })
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The token embeddings, `[vocab, H]`; first.
    pub fn embed(&mut self, m: GpuMatrix) -> Result<()> {
        if self.embed.is_some() {
            return Err(Error::Gpu("the embeddings were given twice".into()));
        }
        check_matrix("token embeddings", &m, self.config.vocab_size, self.config.hidden_size)?;
        self.weight_bytes += m.bytes();
        self.embed = Some(m);
        Ok(())
    }

    /// The next layer.
    pub fn layer(&mut self, w: GpuLayerWeights) -> Result<()> {
        let l = self.layers.len();
        if self.embed.is_none() || l == self.config.num_layers {
            return Err(Error::Gpu(format!(
                "layer {l} given {}",
                if self.embed.is_none() { "before the embeddings" } else { "past the last layer" }
            )));
        }
        check_layer(&self.config, l, &w)?;
        self.weight_bytes += w.matrices().iter().map(|m| m.bytes()).sum::<u64>();
        let cache_bytes = kv_buffer_bytes(&self.config, self.max_ctx);
        let g = &self.gpu;
        let k_cache = g.storage_zeroed(&format!("k cache {l}"), cache_bytes);
        let v_cache = g.storage_zeroed(&format!("v cache {l}"), cache_bytes);
        self.layers.push(GpuLayer { w, k_cache, v_cache });
        Ok(())
    }

    /// The head, last: allocates the activations and records the ops.
    pub fn finish(self, head: GpuHead) -> Result<GpuModel> {
        let GpuModelBuilder { gpu, config, max_tokens, max_ctx, embed, layers, mut weight_bytes } = self;
        let c = &config;
        let embed = embed.ok_or_else(|| Error::Gpu("the head given before the embeddings".into()))?;
        if layers.len() != c.num_layers {
            return Err(Error::Gpu(format!("the head given after {} of {} layers", layers.len(), c.num_layers)));
        }
        if head.final_norm.len() != c.hidden_size {
            return Err(Error::Gpu(format!(
                "a final norm of {} values for hidden size {}",
                head.final_norm.len(),
                c.hidden_size
            )));
        }
        match (&head.lm_head, c.tie_word_embeddings) {
            (Some(m), false) => check_matrix("output projection", m, c.vocab_size, c.hidden_size)?,
            (None, true) => {}
            (_, tied) => {
                return Err(Error::Gpu(format!(
                    "the config says the embeddings are {}tied, the weights say the opposite",
                    if tied { "" } else { "not " }
                )))
            }
        }
        weight_bytes += head.lm_head.as_ref().map_or(0, |m| m.bytes());
        let kv_bytes = 2 * c.num_layers as u64 * kv_buffer_bytes(c, max_ctx);
        let g = &*gpu;
        let resident = Resident::new(g, c, embed, layers, head, max_tokens);
        let step = Step::new(g);
        let token_ids = g.storage_zeroed("token ids", u64::from(max_tokens) * 4);
        let logits = g.storage_zeroed("logits", u64::from(max_tokens) * c.vocab_size as u64 * 4);
        let builder = |t| Builder { gpu: g, config: c, step: &step, max_tokens: t, max_ctx };
        let mut decode_ops = builder(1).body(&resident, &token_ids)?;
        decode_ops.extend(builder(1).head(&resident, &logits, Logits::All)?);
        let prefill_ops = builder(max_tokens).body(&resident, &token_ids)?;
        let prefill_logits_all = builder(max_tokens).head(&resident, &logits, Logits::All)?;
        let prefill_logits_last = builder(max_tokens).head(&resident, &logits, Logits::Last)?;
        Ok(GpuModel {
            gpu: gpu.clone(),
            config: config.clone(),
            max_tokens,
            max_ctx,
            step,
            token_ids,
            logits,
            decode_ops,
            prefill_ops,
            prefill_logits_all,
            prefill_logits_last,
            weight_bytes,
            kv_bytes,
        })
    }
}

fn check_matrix(what: &str, m: &GpuMatrix, rows: usize, cols: usize) -> Result<()> {
    match (m.rows, m.cols) == (rows, cols) {
        true => Ok(()),
        false => Err(Error::Gpu(format!(
            "{what}: a [{}, {}] matrix where the config implies [{rows}, {cols}]",
            m.rows, m.cols
        ))),
    }
}

fn check_vector(what: &str, b: &wgpu::Buffer, len: usize) -> Result<()> {
    match b.size() == (4 * len as u64).max(4) {
        true => Ok(()),
        false => Err(Error::Gpu(format!("{what}: {} bytes where the config implies {len} f32", b.size()))),
    }
}

/// Checks every shape of layer `l` against the config.
fn check_layer(c: &ModelConfig, l: usize, w: &GpuLayerWeights) -> Result<()> {
    let (h, q, kv) = (c.hidden_size, c.q_dim(), c.kv_dim());
    let at = |what: &str| format!("layer {l} {what}");
    check_vector(&at("attention norm"), &w.attn_norm, h)?;
    check_vector(&at("FFN norm"), &w.ffn_norm, h)?;
    for (name, lin, rows, cols) in [("q", &w.q, q, h), ("k", &w.k, kv, h), ("v", &w.v, kv, h), ("o", &w.o, h, q)] {
        check_matrix(&at(name), &lin.weight, rows, cols)?;
        if let Some(b) = &lin.bias {
            check_vector(&at(&format!("{name} bias")), b, rows)?;
        }
    }
    match (&w.q_norm, &w.k_norm, c.qk_norm_dims()) {
        (Some(qn), Some(kn), Some((qw, kw))) => {
            check_vector(&at("q norm"), qn, qw)?;
            check_vector(&at("k norm"), kn, kw)?;
        }
        (None, None, None) => {}
        _ => return Err(Error::Gpu(at("q/k norms: in only one of the config and the weights"))),
    }
    // `n` SwiGLU FFNs of width `width` stacked by rows.
    let mlp = |what: &str, m: &GpuMlp, n: usize, width: usize| -> Result<()> {
        check_matrix(&at(&format!("{what} gate")), &m.gate, n * width, h)?;
        check_matrix(&at(&format!("{what} up")), &m.up, n * width, h)?;
        check_matrix(&at(&format!("{what} down")), &m.down, n * h, width)
    };
    match (&w.ffn, c.layer_ffn[l], &c.moe) {
        (GpuFfn::Dense(m), FfnKind::Dense, _) => mlp("FFN", m, 1, c.intermediate_size),
        (GpuFfn::Moe(m), FfnKind::Moe, Some(mc)) => {
            check_matrix(&at("router"), &m.router, mc.num_experts, h)?;
            mlp("experts", &m.experts, mc.num_experts, mc.expert_intermediate_size)?;
            match (&m.shared, mc.shared_expert_intermediate_size) {
                (Some(s), Some(width)) => mlp("shared expert", s, 1, width)?,
                (None, None) => {}
                _ => return Err(Error::Gpu(at("shared expert: in only one of the config and the weights"))),
            }
            match (&m.shared_gate, mc.shared_expert_gate && mc.shared_expert_intermediate_size.is_some()) {
                (Some(g), true) => check_matrix(&at("shared expert gate"), g, 1, h),
                (None, false) => Ok(()),
                _ => Err(Error::Gpu(at("shared expert gate: in only one of the config and the weights"))),
            }
        }
        _ => Err(Error::Gpu(at("FFN kind differs from the config's"))),
    }
}

impl Resident {
    /// Takes the uploaded weights and allocates the scratch activations for `max_tokens` tokens.
    fn new(
        g: &Gpu,
        c: &ModelConfig,
        embed: GpuMatrix,
        layers: Vec<GpuLayer>,
        head: GpuHead,
        max_tokens: u32,
    ) -> Resident {
        let final_norm: Vec<f32> = head.final_norm.iter().map(|v| v * c.logits_multiplier).collect();
        let lm_head = head.lm_head;
        let s = Scratch::new(c, max_tokens);
        Resident {
            embed,
            layers,
            final_norm: g.storage("final norm", &final_norm),
            lm_head,
            x: g.storage_zeroed("x", s.hidden),
            normed: g.storage_zeroed("normed", s.hidden),
            q: g.storage_zeroed("q", s.q),
            k: g.storage_zeroed("k", s.kv),
            v: g.storage_zeroed("v", s.kv),
            q_normed: g.storage_zeroed("q normed", s.q),
            k_normed: g.storage_zeroed("k normed", s.kv),
            attn: g.storage_zeroed("attention", s.q),
            proj: g.storage_zeroed("projection", s.hidden),
            gate: g.storage_zeroed("gate", s.ffn),
            up: g.storage_zeroed("up", s.ffn),
            act: g.storage_zeroed("activation", s.ffn),
            router_logits: g.storage_zeroed("router logits", s.router_logits),
            expert_ids: g.storage_zeroed("expert ids", s.slots),
            expert_weights: g.storage_zeroed("expert weights", s.slots),
            expert_out: g.storage_zeroed("expert out", s.expert_out),
            shared_out: g.storage_zeroed("shared expert out", s.hidden),
            shared_gate_logit: g.storage_zeroed("shared expert gate", s.gate_logit),
            group: c.moe.as_ref().map(|m| {
                let tile = matmul::tile_for(max_tokens);
                GroupBuffers::new(g, max_tokens, m.num_experts as u32, m.top_k as u32, tile)
            }),
        }
    }
}

/// Records the ops of one chunk size.
struct Builder<'a> {
    gpu: &'a Gpu,
    config: &'a ModelConfig,
    step: &'a Step,
    max_tokens: u32,
    max_ctx: u32,
}

impl Builder<'_> {
    /// The embeddings and every layer, leaving the hidden state in `r.x`.
    fn body(&self, r: &Resident, token_ids: &wgpu::Buffer) -> Result<Vec<Op>> {
        let (g, c, t, step) = (self.gpu, self.config, self.max_tokens, &self.step.buffer);
        let h = c.hidden_size as u32;
        let mut ops = embed::ops(g, step, token_ids, &r.embed, &r.x, t, c.embedding_multiplier)?;
        for layer in &r.layers {
            self.attention(&mut ops, r, layer)?;
            ops.push(rms_norm::op(g, step, &r.x, &layer.w.ffn_norm, &r.normed, t, 1, h, c.rms_norm_eps)?);
            match &layer.w.ffn {
                GpuFfn::Dense(mlp) => {
                    self.mlp(&mut ops, r, mlp, &r.proj)?;
                    ops.push(add_scaled::op(g, step, &r.x, &r.proj, t, h, c.residual_multiplier)?);
                }
                GpuFfn::Moe(moe) => {
                    let GpuMoe { router, experts, shared, shared_gate } = &**moe;
                    let m = c.moe.as_ref().ok_or_else(|| Error::Gpu("an MoE layer in a dense config".into()))?;
                    let (e, k, ie) = (m.num_experts as u32, m.top_k as u32, m.expert_intermediate_size as u32);
                    ops.extend(matmul::ops(g, step, router, &r.normed, &r.router_logits, t)?);
                    ops.push(moe_route::op(
                        g,
                        step,
                        &r.router_logits,
                        &r.expert_ids,
                        &r.expert_weights,
                        t,
                        e,
                        k,
                        m.renormalize,
                    )?);
                    // Per (token, slot) for one token; grouped by expert for a chunk.
                    let group = match (t, &r.group) {
                        (1, _) | (_, None) => None,
                        (_, Some(b)) => {
                            ops.push(moe_group::op(g, step, &r.expert_ids, b, e, k, matmul::tile_for(t))?);
                            Some(b)
                        }
                    };
                    let experts_op = |m: &GpuMatrix,
                                      rows: u32,
                                      x: &wgpu::Buffer,
                                      out: &wgpu::Buffer,
                                      x_per_slot: bool| match group {
                        None => matmul::expert_ops(g, step, m, rows, &r.expert_ids, k, x, out, t, x_per_slot),
                        Some(b) => {
                            matmul::grouped_expert_ops(g, step, m, rows, &b.tiles, &b.rows, k, x, out, t, x_per_slot)
                        }
                    };
                    ops.extend(experts_op(&experts.gate, ie, &r.normed, &r.gate, false)?);
                    ops.extend(experts_op(&experts.up, ie, &r.normed, &r.up, false)?);
                    ops.push(swiglu::op(g, step, &r.gate, &r.up, &r.act, t, k, ie)?);
                    ops.extend(experts_op(&experts.down, h, &r.act, &r.expert_out, true)?);
                    if let Some(mlp) = shared {
                        self.mlp(&mut ops, r, mlp, &r.shared_out)?;
                    }
                    if let Some(gate) = shared_gate {
                        ops.extend(matmul::ops(g, step, gate, &r.normed, &r.shared_gate_logit, t)?);
                    }
                    ops.push(moe_combine::op(
                        g,
                        step,
                        &r.x,
                        &r.expert_out,
                        &r.expert_weights,
                        shared.as_ref().map(|_| &r.shared_out),
                        shared_gate.as_ref().map(|_| &r.shared_gate_logit),
                        t,
                        h,
                        k,
                        c.residual_multiplier,
                    )?);
                }
            }
        }
        Ok(ops)
    }

    /// The final norm and the head for the `rows` asked for.
    fn head(&self, r: &Resident, logits: &wgpu::Buffer, rows: Logits) -> Result<Vec<Op>> {
        let (g, c, t, step) = (self.gpu, self.config, self.max_tokens, &self.step.buffer);
        let (h, eps, head) = (c.hidden_size as u32, c.rms_norm_eps, r.lm_head.as_ref().unwrap_or(&r.embed));
        let mut ops = vec![];
        match rows {
            Logits::All => {
                ops.push(rms_norm::op(g, step, &r.x, &r.final_norm, &r.normed, t, 1, h, eps)?);
                ops.extend(matmul::ops(g, step, head, &r.normed, logits, t)?);
            }
            Logits::Last => {
                // The last row alone, normalised into row 0; ops built for one token compute row 0.
                ops.push(rms_norm::last_op(g, step, &r.x, &r.final_norm, &r.normed, 1, h, eps)?);
                ops.extend(matmul::ops(g, step, head, &r.normed, logits, 1)?);
            }
            Logits::None => {}
        }
        Ok(ops)
    }

    /// Attention block: norm, q/k/v, [q/k norms], RoPE + KV append, attention, o, residual.
    fn attention(&self, ops: &mut Vec<Op>, r: &Resident, layer: &GpuLayer) -> Result<()> {
        let (g, c, t, step) = (self.gpu, self.config, self.max_tokens, &self.step.buffer);
        let h = c.hidden_size as u32;
        ops.push(rms_norm::op(g, step, &r.x, &layer.w.attn_norm, &r.normed, t, 1, h, c.rms_norm_eps)?);
        for (w, out) in [(&layer.w.q, &r.q), (&layer.w.k, &r.k), (&layer.w.v, &r.v)] {
            self.linear(ops, w, &r.normed, out)?;
        }
        let (q, k) = match (&layer.w.q_norm, &layer.w.k_norm, c.qk_norm) {
            (Some(qn), Some(kn), mode) if mode != QkNorm::None => {
                // Per head: one weight of head_dim for every head; whole: one over the projection.
                let (q_rows, k_rows, q_width, k_width) = match mode {
                    QkNorm::PerHead => (c.num_heads, c.num_kv_heads, c.head_dim, c.head_dim),
                    _ => (1, 1, c.q_dim(), c.kv_dim()),
                };
                let eps = c.rms_norm_eps;
                ops.push(rms_norm::op(g, step, &r.q, qn, &r.q_normed, t, q_rows as u32, q_width as u32, eps)?);
                ops.push(rms_norm::op(g, step, &r.k, kn, &r.k_normed, t, k_rows as u32, k_width as u32, eps)?);
                (&r.q_normed, &r.k_normed)
            }
            _ => (&r.q, &r.k),
        };
        let (heads, kv_heads, hd) = (c.num_heads as u32, c.num_kv_heads as u32, c.head_dim as u32);
        ops.push(rope::op(
            g,
            step,
            q,
            k,
            &r.v,
            &layer.k_cache,
            &layer.v_cache,
            t,
            heads,
            kv_heads,
            hd,
            c.rope_theta,
            c.rope_pairing,
            self.max_ctx,
        )?);
        ops.push(attention::op(
            g,
            step,
            q,
            &layer.k_cache,
            &layer.v_cache,
            &r.attn,
            t,
            heads,
            kv_heads,
            hd,
            c.attention_scale,
        )?);
        self.linear(ops, &layer.w.o, &r.attn, &r.proj)?;
        ops.push(add_scaled::op(g, step, &r.x, &r.proj, t, h, c.residual_multiplier)?);
        Ok(())
    }

    fn linear(&self, ops: &mut Vec<Op>, w: &GpuLinear, x: &wgpu::Buffer, out: &wgpu::Buffer) -> Result<()> {
        let (g, t, step) = (self.gpu, self.max_tokens, &self.step.buffer);
        ops.extend(match &w.bias {
            Some(b) => matmul::ops_with_bias(g, step, &w.weight, x, b, out, t)?,
            None => matmul::ops(g, step, &w.weight, x, out, t)?,
        });
        Ok(())
    }

    /// A dense SwiGLU FFN of `normed` into `out`.
    fn mlp(&self, ops: &mut Vec<Op>, r: &Resident, mlp: &GpuMlp, out: &wgpu::Buffer) -> Result<()> {
        let (g, t, step) = (self.gpu, self.max_tokens, &self.step.buffer);
        ops.extend(matmul::ops(g, step, &mlp.gate, &r.normed, &r.gate, t)?);
        ops.extend(matmul::ops(g, step, &mlp.up, &r.normed, &r.up, t)?);
        ops.push(swiglu::op(g, step, &r.gate, &r.up, &r.act, t, 1, mlp.gate.rows as u32)?);
        ops.extend(matmul::ops(g, step, &mlp.down, &r.act, out, t)?);
        Ok(())
    }
}
