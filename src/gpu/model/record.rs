//! The resident buffers (weights, caches, scratch activations) and the recording of a chunk's
//! forward as [`Op`]s: the body (embeddings and layers) and the head (final norm and logits).

mod mla;

use super::layer::{Attn, Ffn, Gates, GpuLayer, Moe, Qkv, SharedGate, SwiGlu};
use super::Logits;
use crate::config::{ModelConfig, QkNorm};
use crate::gpu::feed::{GpuHead, GpuLinear};
use crate::gpu::kernels::matmul::Out;
use crate::gpu::kernels::moe_group::{self, GroupBuffers};
use crate::gpu::kernels::{
    attention, embed, matmul, moe_combine, moe_route, rms_norm, rope, swiglu, Columns, KvFormat,
};
use crate::gpu::matrix::GpuMatrix;
use crate::gpu::plan::Scratch;
use crate::gpu::step::Step;
use crate::gpu::{Gpu, Op};
use crate::{Error, Result};

/// Everything on the GPU the ops bind: weights, caches, and the scratch activations that every
/// layer uses in turn (sized for `max_tokens`).
pub(super) struct Resident {
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
    /// `[T, q_dim + 2 kv_dim]`: the fused q|k|v projection.
    qkv: wgpu::Buffer,
    /// RoPE'd q, what attention reads.
    q_rot: wgpu::Buffer,
    attn: wgpu::Buffer,
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
    /// Decode attention's partial outputs (flash-decoding on GPUs).
    attention_partials: wgpu::Buffer,
    /// MLA: the latent projection's rows, q's normed low-rank part, and per head the latent
    /// query and attention output (4-byte placeholders without MLA).
    latent: wgpu::Buffer,
    q_latent: wgpu::Buffer,
    heads_query: wgpu::Buffer,
    heads_out: wgpu::Buffer,
    /// MLA: `u32 [max_tokens * heads]`, slot s holding head s % heads: the ids the per-head
    /// matmuls read.
    head_ids: wgpu::Buffer,
}

impl Resident {
    /// Takes the uploaded weights and allocates the scratch activations for `max_tokens` tokens.
    pub(super) fn new(
        g: &Gpu,
        c: &ModelConfig,
        embed: GpuMatrix,
        layers: Vec<GpuLayer>,
        head: GpuHead,
        max_tokens: u32,
        max_ctx: u32,
    ) -> Resident {
        let final_norm: Vec<f32> = head.final_norm.iter().map(|v| v * c.logits_multiplier).collect();
        let lm_head = head.lm_head;
        let s = Scratch::new(c, max_tokens, max_ctx);
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
            qkv: g.storage_zeroed("qkv", s.qkv),
            q_rot: g.storage_zeroed("q rotated", s.q),
            attn: g.storage_zeroed("attention", s.q),
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
            attention_partials: g.storage_zeroed("attention partials", s.attention_partials),
            latent: g.storage_zeroed("latent", s.latent),
            q_latent: g.storage_zeroed("q latent", s.q_latent),
            heads_query: g.storage_zeroed("heads' latent query", s.heads_latent),
            heads_out: g.storage_zeroed("heads' latent output", s.heads_latent),
            head_ids: match c.mla {
                Some(_) => {
                    let heads = c.num_heads as u32;
                    g.storage("head ids", &(0..max_tokens * heads).map(|s| s % heads).collect::<Vec<u32>>())
                }
                None => g.storage_zeroed("head ids", s.head_ids),
            },
        }
    }
}

/// Records the ops of one chunk size.
pub(super) struct Recorder<'a> {
    pub gpu: &'a Gpu,
    pub config: &'a ModelConfig,
    pub step: &'a Step,
    /// Tokens of the chunks these ops serve (1: decode).
    pub max_tokens: u32,
    pub max_ctx: u32,
    pub kv: KvFormat,
}

impl Recorder<'_> {
    /// The embeddings and every layer, leaving the hidden state in `r.x`.
    pub(super) fn body(&self, r: &Resident, token_ids: &wgpu::Buffer) -> Result<Vec<Op>> {
        let (g, c, t, step) = (self.gpu, self.config, self.max_tokens, &self.step.buffer);
        let h = c.hidden_size as u32;
        let mut ops = embed::ops(g, step, token_ids, &r.embed, &r.x, t, c.embedding_multiplier)?;
        for layer in &r.layers {
            self.attention(&mut ops, r, layer)?;
            ops.push(rms_norm::op(g, step, &r.x, &layer.ffn_norm, &r.normed, t, 1, h, c.rms_norm_eps)?);
            match &layer.ffn {
                // The residual add is the down matmul's epilogue.
                Ffn::Dense(mlp) => self.mlp(&mut ops, r, mlp, Out::Add(&r.x, c.residual_multiplier))?,
                Ffn::Moe(moe) => self.moe(&mut ops, r, moe)?,
            }
        }
        Ok(ops)
    }

    /// The final norm and the head for the `rows` asked for.
    pub(super) fn head(&self, r: &Resident, logits: &wgpu::Buffer, rows: Logits) -> Result<Vec<Op>> {
        let (g, c, t, step) = (self.gpu, self.config, self.max_tokens, &self.step.buffer);
        let (h, eps, head) = (c.hidden_size as u32, c.rms_norm_eps, r.lm_head.as_ref().unwrap_or(&r.embed));
        let mut ops = vec![];
        match rows {
            Logits::All => {
                ops.push(rms_norm::op(g, step, &r.x, &r.final_norm, &r.normed, t, 1, h, eps)?);
                ops.extend(matmul::ops(g, step, head, &r.normed, None, Out::Set(logits), t)?);
            }
            Logits::Last => {
                // The last row alone, normalised into row 0; ops built for one token compute row 0.
                ops.push(rms_norm::last_op(g, step, &r.x, &r.final_norm, &r.normed, 1, h, eps)?);
                ops.extend(matmul::ops(g, step, head, &r.normed, None, Out::Set(logits), 1)?);
            }
            Logits::None => {}
        }
        Ok(ops)
    }

    /// Attention block: norm, the heads' outputs into `r.attn` (GQA or MLA), o + residual.
    fn attention(&self, ops: &mut Vec<Op>, r: &Resident, layer: &GpuLayer) -> Result<()> {
        let (g, c, t, step) = (self.gpu, self.config, self.max_tokens, &self.step.buffer);
        let h = c.hidden_size as u32;
        ops.push(rms_norm::op(g, step, &r.x, &layer.attn_norm, &r.normed, t, 1, h, c.rms_norm_eps)?);
        match &layer.attn {
            Attn::Gqa { qkv, q_norm, k_norm } => self.gqa(ops, r, layer, qkv, q_norm.as_ref().zip(k_norm.as_ref()))?,
            Attn::Mla(a) => self.mla(ops, r, layer, a)?,
        }
        // The residual add is o's epilogue.
        self.linear(ops, &layer.o, &r.attn, Out::Add(&r.x, c.residual_multiplier))?;
        Ok(())
    }

    /// Grouped-query attention of `r.normed` into `r.attn`: q|k|v, [q/k norms], RoPE + KV
    /// append, attention.
    fn gqa(
        &self,
        ops: &mut Vec<Op>,
        r: &Resident,
        layer: &GpuLayer,
        qkv: &Qkv,
        qk_norms: Option<(&wgpu::Buffer, &wgpu::Buffer)>,
    ) -> Result<()> {
        let (g, c, t, step) = (self.gpu, self.config, self.max_tokens, &self.step.buffer);
        let (qd, kvd) = (c.q_dim() as u32, c.kv_dim() as u32);
        let own = |buffer, stride| Columns { buffer, offset: 0, stride };
        // Where q, k and v are: columns of the fused projection's rows, or their own buffers.
        let (mut q, mut k, v) = match qkv {
            Qkv::Fused(w) => {
                self.linear(ops, w, &r.normed, Out::Set(&r.qkv))?;
                let fused = |offset| Columns { buffer: &r.qkv, offset, stride: qd + 2 * kvd };
                (fused(0), fused(qd), fused(qd + kvd))
            }
            Qkv::Split(split) => {
                for (w, out) in split.iter().zip([&r.q, &r.k, &r.v]) {
                    self.linear(ops, w, &r.normed, Out::Set(out))?;
                }
                (own(&r.q, qd), own(&r.k, kvd), own(&r.v, kvd))
            }
        };
        if let (Some((qn, kn)), mode) = (qk_norms, c.qk_norm) {
            if mode != QkNorm::None {
                // Per head: one weight of head_dim for every head; whole: one over the projection.
                let (q_rows, k_rows, q_width, k_width) = match mode {
                    QkNorm::PerHead => (c.num_heads, c.num_kv_heads, c.head_dim, c.head_dim),
                    _ => (1, 1, c.q_dim(), c.kv_dim()),
                };
                let eps = c.rms_norm_eps;
                let (qr, kr, qw, kw) = (q_rows as u32, k_rows as u32, q_width as u32, k_width as u32);
                ops.push(rms_norm::columns_op(g, step, q, qn, &r.q_normed, t, qr, qw, eps)?);
                ops.push(rms_norm::columns_op(g, step, k, kn, &r.k_normed, t, kr, kw, eps)?);
                (q, k) = (own(&r.q_normed, qd), own(&r.k_normed, kvd));
            }
        }
        let (heads, kv_heads, hd) = (c.num_heads as u32, c.num_kv_heads as u32, c.head_dim as u32);
        let (theta, pairing) = (c.rope_theta, c.rope_pairing);
        let (kc, vc) = (&layer.k_cache, &layer.v_cache);
        let (ctx, kv) = (self.max_ctx, self.kv);
        ops.push(rope::op(g, step, q, k, v, &r.q_rot, kc, vc, t, heads, kv_heads, hd, theta, pairing, ctx, kv)?);
        // Decode splits each token's keys across workgroups on GPUs (flash-decoding); prefill
        // chunks have workgroups enough.
        let splits = match t {
            1 => attention::splits_for(g, attention::workgroups_per_token(heads, kv_heads, hd), ctx),
            _ => 1,
        };
        let (scale, partials) = (c.attention_scale, &r.attention_partials);
        let attend =
            attention::ops(g, step, &r.q_rot, kc, vc, &r.attn, t, heads, kv_heads, hd, scale, kv, splits, partials);
        ops.extend(attend?);
        Ok(())
    }

    fn linear(&self, ops: &mut Vec<Op>, w: &GpuLinear, x: &wgpu::Buffer, out: Out) -> Result<()> {
        let (g, t, step) = (self.gpu, self.max_tokens, &self.step.buffer);
        ops.extend(matmul::ops(g, step, &w.weight, x, w.bias.as_ref(), out, t)?);
        Ok(())
    }

    /// The MoE FFN of `normed`, combined into `x`.
    fn moe(&self, ops: &mut Vec<Op>, r: &Resident, moe: &Moe) -> Result<()> {
        let (g, c, t, step) = (self.gpu, self.config, self.max_tokens, &self.step.buffer);
        let Moe { router, experts, shared, shared_gate, .. } = moe;
        let m = c.moe.as_ref().ok_or_else(|| Error::Gpu("an MoE layer in a dense config".into()))?;
        let (e, k, h) = (m.num_experts as u32, m.top_k as u32, c.hidden_size as u32);
        // The router's rows: E logits, and the shared expert's gate logit where it is row E.
        let rows = router.rows as u32;
        let logits = |offset| Columns { buffer: &r.router_logits, offset, stride: rows };
        ops.extend(matmul::ops(g, step, router, &r.normed, None, Out::Set(&r.router_logits), t)?);
        let (ids, weights, bias) = (&r.expert_ids, &r.expert_weights, moe.router_bias.as_ref());
        ops.push(moe_route::op(g, step, logits(0), bias, ids, weights, t, e, k, &m.routing)?);
        // Per (token, slot) for one token; grouped by expert for a chunk.
        let group = match (t, &r.group) {
            (1, _) | (_, None) => None,
            (_, Some(b)) => {
                ops.push(moe_group::op(g, step, &r.expert_ids, b, e, k, matmul::tile_for(t))?);
                Some(b)
            }
        };
        // `rows` of `m` per expert, x one row per token (or per slot), out one row per slot.
        let experts_op = |m: &GpuMatrix, rows: u32, x: &wgpu::Buffer, out: Out, x_per_slot: bool| match group {
            None => matmul::expert_ops(g, step, m, rows, &r.expert_ids, k, x, out, t, x_per_slot),
            Some(b) => matmul::grouped_expert_ops(g, step, m, rows, &b.tiles, &b.rows, k, x, out, t, x_per_slot),
        };
        self.gates(ops, r, experts, k, |m, rows, out| experts_op(m, rows, &r.normed, out, false))?;
        ops.extend(experts_op(&experts.down, h, &r.act, Out::Set(&r.expert_out), true)?);
        if let Some(mlp) = shared {
            self.mlp(ops, r, mlp, Out::Set(&r.shared_out))?;
        }
        let gate = match shared_gate {
            SharedGate::None => None,
            SharedGate::InRouter => Some(logits(e)),
            SharedGate::Own(gate) => {
                ops.extend(matmul::ops(g, step, gate, &r.normed, None, Out::Set(&r.shared_gate_logit), t)?);
                Some(Columns { buffer: &r.shared_gate_logit, offset: 0, stride: 1 })
            }
        };
        ops.push(moe_combine::op(
            g,
            step,
            &r.x,
            &r.expert_out,
            &r.expert_weights,
            shared.as_ref().map(|_| &r.shared_out),
            gate,
            t,
            h,
            k,
            c.residual_multiplier,
        )?);
        Ok(())
    }

    /// `act = silu(gate x) * up x` of `mlp`'s gates (`per_token` rows of `act` per token), with
    /// `matmul(m, rows per FFN, out)` running a matrix: paired, one matmul with the SwiGLU
    /// epilogue; split, two and the `swiglu` kernel.
    fn gates(
        &self,
        ops: &mut Vec<Op>,
        r: &Resident,
        mlp: &SwiGlu,
        per_token: u32,
        matmul: impl Fn(&GpuMatrix, u32, Out) -> Result<Vec<Op>>,
    ) -> Result<()> {
        let (g, t, step, width) = (self.gpu, self.max_tokens, &self.step.buffer, mlp.width());
        match &mlp.gates {
            Gates::Paired(m) => ops.extend(matmul(m, 2 * width, Out::SwiGlu(&r.act))?),
            Gates::Split { gate, up } => {
                ops.extend(matmul(gate, width, Out::Set(&r.gate))?);
                ops.extend(matmul(up, width, Out::Set(&r.up))?);
                ops.push(swiglu::op(g, step, &r.gate, &r.up, &r.act, t, per_token, width)?);
            }
        }
        Ok(())
    }

    /// A dense SwiGLU FFN of `normed` into `out`.
    fn mlp(&self, ops: &mut Vec<Op>, r: &Resident, mlp: &SwiGlu, out: Out) -> Result<()> {
        let (g, t, step) = (self.gpu, self.max_tokens, &self.step.buffer);
        self.gates(ops, r, mlp, 1, |m, _, out| matmul::ops(g, step, m, &r.normed, None, out, t))?;
        ops.extend(matmul::ops(g, step, &mlp.down, &r.act, None, out, t)?);
        Ok(())
    }
}
