//! The CPU f32 forward pass: the executable spec that every GPU kernel is held to.
//!
//! One function per operation (`crate::ops`), the weights as plain f32 (`weights`), and here the
//! pass itself, readable top to bottom. `forward` takes a chunk of T tokens: prefill is one
//! call with the prompt, decode is a call with one token; both extend the same KV cache.

pub mod weights;

mod mla;

use crate::config::{ModelConfig, QkNorm, RopePairing};
use crate::ops::{add_scaled, attend, rms_norm, rope, rope_angles, route, sigmoid, silu};
use crate::weights::tree::{Attention, Ffn, Gqa};
use crate::{Error, Result};
pub use weights::{RefLayer, RefMlp, RefMoe, Weights};

/// Keys and values of every past position, per layer: `[position, kv_dim]` rows (MLA: the
/// latent and rotary key, `[position, kv_lora_rank + rope]`, and no values).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    /// Floats per position of a key row and of a value row.
    widths: (usize, usize),
    len: usize,
}

impl KvCache {
    pub fn new(config: &ModelConfig) -> Self {
        let layers = config.num_layers;
        KvCache { keys: vec![vec![]; layers], values: vec![vec![]; layers], widths: config.kv_row_floats(), len: 0 }
    }
    /// Number of positions held.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Forgets positions from `len` on (to rewind after a discarded token).
    pub fn truncate(&mut self, len: usize) {
        for layer in &mut self.keys {
            layer.truncate(len * self.widths.0);
        }
        for layer in &mut self.values {
            layer.truncate(len * self.widths.1);
        }
        self.len = self.len.min(len);
    }
}

/// A model on the CPU: its config and its f32 weights.
pub struct ReferenceModel {
    pub config: ModelConfig,
    pub weights: Weights,
}

impl ReferenceModel {
    pub fn new(config: ModelConfig, weights: Weights) -> Self {
        ReferenceModel { config, weights }
    }

    /// Runs `tokens` (T of them) at positions `cache.len()..cache.len()+T`, appends their keys
    /// and values to `cache`, and returns the logits of each position: `[T, vocab]`.
    pub fn forward(&self, cache: &mut KvCache, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        let c = &self.config;
        let (h, t_count) = (c.hidden_size, tokens.len());
        if cache.len + t_count > c.max_position_embeddings {
            return Err(Error::Request(format!(
                "{} positions exceed the model's context of {}",
                cache.len + t_count,
                c.max_position_embeddings
            )));
        }
        // Token embeddings, scaled.
        let mut x = Vec::with_capacity(t_count * h);
        for &tok in tokens {
            let tok = tok as usize;
            if tok >= c.vocab_size {
                return Err(Error::Request(format!("token id {tok} is outside the vocabulary of {}", c.vocab_size)));
            }
            x.extend(self.weights.embed.data[tok * h..(tok + 1) * h].iter().map(|v| v * c.embedding_multiplier));
        }

        for (l, layer) in self.weights.layers.iter().enumerate() {
            let mut normed = x.clone();
            rms_norm(&mut normed, &layer.attn_norm, c.rms_norm_eps);
            let heads = match &layer.attn {
                Attention::Gqa(a) => self.gqa(a, l, &normed, cache),
                Attention::Mla(a) => self.mla(a, l, &normed, cache),
            };
            let attn_out = layer.o.forward(&heads);
            add_scaled(&mut x, &attn_out, c.residual_multiplier);
            let mut normed = x.clone();
            rms_norm(&mut normed, &layer.ffn_norm, c.rms_norm_eps);
            let ffn_out = match &layer.ffn {
                Ffn::Dense(mlp) => swiglu(mlp, &normed, 0, 1),
                Ffn::Moe(moe) => normed.chunks_exact(h).flat_map(|row| self.moe(moe, row)).collect(),
            };
            add_scaled(&mut x, &ffn_out, c.residual_multiplier);
        }
        cache.len += t_count;

        rms_norm(&mut x, &self.weights.final_norm, c.rms_norm_eps);
        let logits = self.weights.output().forward(&x);
        Ok(logits.chunks_exact(c.vocab_size).map(|row| row.iter().map(|v| v * c.logits_multiplier).collect()).collect())
    }

    /// Self-attention of T new positions (the attention-normed `normed`) over the cache and
    /// themselves (causal, GQA): the heads' outputs, before `o`.
    fn gqa(
        &self,
        layer: &Gqa<crate::ops::Matrix, Vec<f32>>,
        l: usize,
        normed: &[f32],
        cache: &mut KvCache,
    ) -> Vec<f32> {
        let c = &self.config;
        let (hd, q_dim, kv_dim) = (c.head_dim, c.q_dim(), c.kv_dim());
        let mut q = layer.q.forward(normed);
        let mut k = layer.k.forward(normed);
        let v = layer.v.forward(normed);

        // q/k norms: per head (weight of head_dim) or over the whole projection.
        if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
            debug_assert!(c.qk_norm != QkNorm::None);
            rms_norm(&mut q, qn, c.rms_norm_eps);
            rms_norm(&mut k, kn, c.rms_norm_eps);
        }

        let interleaved = c.rope_pairing == RopePairing::Interleaved;
        let t_count = normed.len() / c.hidden_size;
        for t in 0..t_count {
            let (cos, sin) = rope_angles(cache.len + t, hd, c.rope_theta);
            for head in q[t * q_dim..(t + 1) * q_dim].chunks_exact_mut(hd) {
                rope(head, &cos, &sin, interleaved);
            }
            for head in k[t * kv_dim..(t + 1) * kv_dim].chunks_exact_mut(hd) {
                rope(head, &cos, &sin, interleaved);
            }
        }
        cache.keys[l].extend_from_slice(&k);
        cache.values[l].extend_from_slice(&v);

        let group = c.num_heads / c.num_kv_heads;
        let mut out = Vec::with_capacity(t_count * q_dim);
        for t in 0..t_count {
            let visible = cache.len + t + 1;
            for head in 0..c.num_heads {
                let q_head = &q[t * q_dim + head * hd..t * q_dim + (head + 1) * hd];
                let offset = (head / group) * hd;
                out.extend(attend(
                    q_head,
                    &cache.keys[l],
                    &cache.values[l],
                    visible,
                    kv_dim,
                    offset,
                    c.attention_scale,
                ));
            }
        }
        out
    }

    /// The sparse FFN for one token: the router's choice (`ops::route`),
    /// weighted sum of the selected experts, plus the (optionally gated) shared expert.
    fn moe(&self, moe: &RefMoe, x: &[f32]) -> Vec<f32> {
        let m = self.config.moe.as_ref().expect("an MoE layer implies an MoE config");
        let logits = moe.router.forward(x);
        let (chosen, weights) = route(&logits, moe.router_bias.as_deref(), m.top_k, &m.routing);
        let mut out = vec![0.0; x.len()];
        for (&e, &weight) in chosen.iter().zip(&weights) {
            add_scaled(&mut out, &swiglu(&moe.experts, x, e, m.num_experts), weight);
        }
        if let Some(shared) = &moe.shared {
            let gate = moe.shared_gate.as_ref().map_or(1.0, |g| sigmoid(g.forward(x)[0]));
            add_scaled(&mut out, &swiglu(shared, x, 0, 1), gate);
        }
        out
    }
}

/// `down(silu(gate x) * up x)` for each row of `x`, with FFN `e` of the `n` stacked in `mlp`.
fn swiglu(mlp: &RefMlp, x: &[f32], e: usize, n: usize) -> Vec<f32> {
    let block = |m: &crate::ops::Matrix| e * m.rows / n..(e + 1) * m.rows / n;
    let mut gate = mlp.gate.forward_rows(x, block(&mlp.gate));
    let up = mlp.up.forward_rows(x, block(&mlp.up));
    for (g, u) in gate.iter_mut().zip(&up) {
        *g = silu(*g) * u;
    }
    mlp.down.forward_rows(&gate, block(&mlp.down))
}
