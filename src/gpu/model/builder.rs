//! [`GpuModelBuilder`]: a [`GpuModel`] from parts given in order (embeddings, each layer, the
//! head), each checked against the config as it arrives, then the ops recorded.

use super::layer::GpuLayer;
use super::record::{Recorder, Resident};
use super::{GpuModel, Logits};
use crate::config::{FfnKind, ModelConfig};
use crate::gpu::feed::{GpuFfn, GpuHead, GpuLayerWeights, GpuLinear, GpuMlp};
use crate::gpu::generated::mla_matrices;
use crate::gpu::kernels::KvFormat;
use crate::gpu::matrix::GpuMatrix;
use crate::gpu::plan::kv_buffer_bytes;
use crate::gpu::step::Step;
use crate::gpu::Gpu;
use crate::weights::tree::Attention;
use crate::{Error, Result};
use std::sync::Arc;

/// Builds a [`GpuModel`] from parts given in order: the embeddings, each layer, the head. Each
/// part is checked against the config as it arrives; a layer's KV cache is allocated with it.
pub struct GpuModelBuilder {
    gpu: Arc<Gpu>,
    config: ModelConfig,
    max_tokens: u32,
    max_ctx: u32,
    kv: KvFormat,
    embed: Option<GpuMatrix>,
    layers: Vec<GpuLayer>,
    weight_bytes: u64,
}

impl GpuModelBuilder {
    pub fn new(gpu: Arc<Gpu>, config: &ModelConfig, max_tokens: u32, max_ctx: u32, kv: KvFormat) -> Result<Self> {
        if max_tokens == 0 || max_ctx == 0 {
            return Err(Error::Gpu("a model needs room for at least one token".into()));
        }
        config.validate()?;
        let (config, layers) = (config.clone(), Vec::with_capacity(config.num_layers));
        Ok(GpuModelBuilder { gpu, config, max_tokens, max_ctx, kv, embed: None, layers, weight_bytes: 0 })
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
        let (k_bytes, v_bytes) = kv_buffer_bytes(&self.config, self.max_ctx, self.kv);
        let g = &self.gpu;
        let k_cache = g.storage_zeroed(&format!("k cache {l}"), k_bytes);
        let v_cache = g.storage_zeroed(&format!("v cache {l}"), v_bytes);
        self.layers.push(GpuLayer::new(g, w, k_cache, v_cache)?);
        Ok(())
    }

    /// The head, last: allocates the activations and records the ops.
    pub fn finish(self, head: GpuHead) -> Result<GpuModel> {
        let GpuModelBuilder { gpu, config, max_tokens, max_ctx, kv, embed, layers, mut weight_bytes } = self;
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
        let (k_bytes, v_bytes) = kv_buffer_bytes(c, max_ctx, kv);
        let kv_bytes = c.num_layers as u64 * (k_bytes + v_bytes);
        let g = &*gpu;
        let resident = Resident::new(g, c, embed, layers, head, max_tokens, max_ctx);
        let step = Step::new(g);
        let token_ids = g.storage_zeroed("token ids", u64::from(max_tokens) * 4);
        let logits = g.storage_zeroed("logits", u64::from(max_tokens) * c.vocab_size as u64 * 4);
        let builder = |t| Recorder { gpu: g, config: c, step: &step, max_tokens: t, max_ctx, kv };
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
            kv,
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
    let linear = |name: &str, lin: &GpuLinear, rows: usize, cols: usize| -> Result<()> {
        check_matrix(&at(name), &lin.weight, rows, cols)?;
        match &lin.bias {
            Some(b) => check_vector(&at(&format!("{name} bias")), b, rows),
            None => Ok(()),
        }
    };
    linear("o", &w.o, h, c.attn_out_dim())?;
    match (&w.attn, &c.mla) {
        (Attention::Gqa(a), None) => {
            for (name, lin, rows) in [("q", &a.q, q), ("k", &a.k, kv), ("v", &a.v, kv)] {
                linear(name, lin, rows, h)?;
            }
            match (&a.q_norm, &a.k_norm, c.qk_norm_dims()) {
                (Some(qn), Some(kn), Some((qw, kw))) => {
                    check_vector(&at("q norm"), qn, qw)?;
                    check_vector(&at("k norm"), kn, kw)?;
                }
                (None, None, None) => {}
                _ => return Err(Error::Gpu(at("q/k norms: in only one of the config and the weights"))),
            }
        }
        (Attention::Mla(a), Some(m)) => {
            let (q_a, rest) = mla_matrices(c, m);
            match (&a.q_a, q_a) {
                (Some((w, norm)), Some([_, rows, cols, _])) => {
                    check_matrix(&at("q_a"), w, rows, cols)?;
                    check_vector(&at("q_a norm"), norm, rows)?;
                }
                (None, None) => {}
                _ => return Err(Error::Gpu(at("q's low-rank path: in only one of the config and the weights"))),
            }
            let names = ["q nope", "q rope", "kv_a", "k_b", "v_b"];
            for ((name, m), [_, rows, cols, _]) in
                names.iter().zip([&a.q_nope, &a.q_rope, &a.kv_a, &a.k_b, &a.v_b]).zip(rest)
            {
                check_matrix(&at(name), m, rows, cols)?;
            }
            check_vector(&at("kv_a norm"), &a.kv_norm, m.kv_lora_rank)?;
        }
        _ => return Err(Error::Gpu(at("attention kind differs from the config's"))),
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
            match (&m.router_bias, mc.routing.selection_bias) {
                (Some(b), true) => check_vector(&at("router bias"), b, mc.num_experts)?,
                (None, false) => {}
                _ => return Err(Error::Gpu(at("router selection bias: in only one of the config and the weights"))),
            }
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
