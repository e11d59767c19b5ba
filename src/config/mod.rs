//! `ModelConfig`: the single normalized description of an architecture.
//!
//! Families differ in a handful of rules; each rule is an explicit field here, and the one
//! forward pass (`crate::reference`) reads them. Builders: [`hf`] (Hugging Face `config.json`)
//! and [`gguf`] (GGUF metadata); [`presets`] for generated weights.

mod deepseek;
pub mod gguf;
pub mod hf;
pub mod presets;

use serde::Serialize;
use std::num::Saturating;

/// The model families flint knows. A family decides only how names and config keys map;
/// the maths is in the rule fields of [`ModelConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Llama,
    Mixtral,
    Qwen2Moe,
    Qwen3Moe,
    Olmoe,
    GraniteMoe,
    /// DeepSeek-V2 and -V3 (and the models of their shape: Moonlight, Kimi-VL's language model):
    /// multi-head latent attention and DeepSeek routing; GGUF's `deepseek2`.
    DeepseekV2,
    DeepseekV3,
}

impl Family {
    pub fn from_model_type(model_type: &str) -> Option<Family> {
        Some(match model_type {
            "llama" | "mistral" => Family::Llama,
            "mixtral" => Family::Mixtral,
            "qwen2_moe" => Family::Qwen2Moe,
            "qwen3_moe" => Family::Qwen3Moe,
            "olmoe" => Family::Olmoe,
            "granitemoe" => Family::GraniteMoe,
            "deepseek_v2" => Family::DeepseekV2,
            "deepseek_v3" => Family::DeepseekV3,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mixtral => "mixtral",
            Family::Qwen2Moe => "qwen2_moe",
            Family::Qwen3Moe => "qwen3_moe",
            Family::Olmoe => "olmoe",
            Family::GraniteMoe => "granitemoe",
            Family::DeepseekV2 => "deepseek_v2",
            Family::DeepseekV3 => "deepseek_v3",
        }
    }

    // The rules below are the family's whatever the file format; each config builder (`hf`,
    // `gguf`) reads the format's keys and asks these for the rest.

    /// q/k RMSNorm: per head (Qwen3-MoE), over the whole projection (OLMoE), or none.
    pub fn qk_norm(self) -> QkNorm {
        match self {
            Family::Qwen3Moe => QkNorm::PerHead,
            Family::Olmoe => QkNorm::Whole,
            _ => QkNorm::None,
        }
    }

    /// Whether the router always renormalises its top-k weights (otherwise a key decides).
    pub fn always_renormalizes(self) -> bool {
        matches!(self, Family::Mixtral | Family::GraniteMoe)
    }

    /// Whether the family has a (sigmoid-gated) shared expert beside the routed ones.
    pub fn has_shared_expert(self) -> bool {
        self == Family::Qwen2Moe
    }

    /// Whether embedding, residual, attention and logit multipliers are read (Granite's).
    pub fn has_multipliers(self) -> bool {
        self == Family::GraniteMoe
    }

    /// Whether some layers may be dense among sparse ones (Qwen's `mlp_only_layers`,
    /// `decoder_sparse_step`; llama.cpp's per-layer tensors).
    pub fn mixes_dense_layers(self) -> bool {
        matches!(self, Family::Qwen2Moe | Family::Qwen3Moe | Family::DeepseekV2 | Family::DeepseekV3)
    }

    /// Whether attention is DeepSeek's multi-head latent attention.
    pub fn is_deepseek(self) -> bool {
        matches!(self, Family::DeepseekV2 | Family::DeepseekV3)
    }
}

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RopePairing {
    /// Hugging Face `rotate_half`: dimension i rotates with i + d/2 (GPT-NeoX style).
    Halves,
    /// Adjacent pairs (2i, 2i+1): llama.cpp's layout for llama-arch GGUF files, whose
    /// converter permuted the Q/K rows to match.
    Interleaved,
}

/// Where q/k RMSNorm is applied, if at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QkNorm {
    None,
    /// One weight of `head_dim`, applied to every head (Qwen3-MoE).
    PerHead,
    /// One weight over the whole q (resp. k) projection, before splitting heads (OLMoE).
    Whole,
}

/// How a router's logits become scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scoring {
    /// Softmax over all experts.
    Softmax,
    /// Each expert's sigmoid (DeepSeek-V3).
    Sigmoid,
}

/// How a group of experts is scored for group-limited selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupScore {
    /// The group's best expert (DeepSeek-V2 `group_limited_greedy`).
    Max,
    /// The sum of its two best (DeepSeek-V3 `noaux_tc`).
    TopTwoSum,
}

/// Group-limited selection: experts are cut into `count` equal groups, the `used` best groups are
/// kept, and the top-k is taken among their experts only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExpertGroups {
    pub count: usize,
    pub used: usize,
    pub score: GroupScore,
}

/// How the router chooses and weighs experts (the CPU twin is `ops::route`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Routing {
    pub scoring: Scoring,
    /// A per-expert bias (the `router_bias` weight) is added to the scores to choose experts, but
    /// the weights are the unbiased scores (DeepSeek-V3 `e_score_correction_bias`).
    pub selection_bias: bool,
    pub groups: Option<ExpertGroups>,
    /// After top-k, divide the weights by their sum.
    pub renormalize: bool,
    /// The weights' final factor (DeepSeek `routed_scaling_factor`).
    pub scale: f32,
}

impl Routing {
    /// Softmax over all experts, top-k, renormalised or not: every family but DeepSeek.
    pub fn softmax(renormalize: bool) -> Routing {
        Routing { scoring: Scoring::Softmax, selection_bias: false, groups: None, renormalize, scale: 1.0 }
    }
}

/// The sparse FFN's rules. A dense layer has no `MoeConfig` in play.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoeConfig {
    pub num_experts: usize,
    pub top_k: usize,
    pub expert_intermediate_size: usize,
    pub routing: Routing,
    /// Width of the always-on shared expert, if the family has one.
    pub shared_expert_intermediate_size: Option<usize>,
    /// The shared expert's output is scaled by sigmoid(gate · x) (Qwen2-MoE).
    pub shared_expert_gate: bool,
}

/// Multi-head latent attention's widths (DeepSeek-V2/V3). q and k heads are `qk_nope_head_dim +
/// qk_rope_head_dim` wide (`ModelConfig::head_dim`), values `v_head_dim`; a token's cache row is
/// its normed latent (`kv_lora_rank`) and its rotated key (`qk_rope_head_dim`), shared by all heads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MlaConfig {
    /// q's low-rank width (`None`: q is one projection of x).
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
    /// The eps of the latent's (and q's low-rank) RMSNorm.
    pub norm_eps: f32,
}

/// YaRN RoPE scaling (transformers' `_compute_yarn_parameters`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Yarn {
    pub factor: f64,
    pub original_max_position_embeddings: usize,
    pub beta_fast: f64,
    pub beta_slow: f64,
    /// Round the correction range to whole dimensions.
    pub truncate: bool,
    /// Multiplies cos and sin.
    pub attention_factor: f32,
}

/// What the FFN of one layer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FfnKind {
    Dense,
    Moe,
}

/// One normalized description of a decoder-only transformer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub rope_pairing: RopePairing,
    pub rope_scaling: Option<Yarn>,
    pub max_position_embeddings: usize,
    /// q, k and v projections carry a bias.
    pub qkv_bias: bool,
    pub qk_norm: QkNorm,
    /// Multi-head latent attention (DeepSeek); `None`: grouped-query attention.
    pub mla: Option<MlaConfig>,
    /// Multiplies q·k (1/sqrt(head_dim) unless the family says otherwise).
    pub attention_scale: f32,
    /// Multiplies the token embeddings.
    pub embedding_multiplier: f32,
    /// Multiplies each sub-layer's output before it is added to the residual stream.
    pub residual_multiplier: f32,
    /// Multiplies the final logits.
    pub logits_multiplier: f32,
    pub tie_word_embeddings: bool,
    /// Width of the dense FFN (dense layers and dense models).
    pub intermediate_size: usize,
    pub moe: Option<MoeConfig>,
    /// The FFN kind of each layer; `layer_ffn.len() == num_layers`.
    pub layer_ffn: Vec<FfnKind>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl ModelConfig {
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// The rotated dims of a q/k head: all of it, or MLA's rotary part.
    pub fn rope_dim(&self) -> usize {
        self.mla.as_ref().map_or(self.head_dim, |m| m.qk_rope_head_dim)
    }

    /// Floats per cached position and layer: keys and values (or MLA's latent and rotary key).
    pub fn kv_row_floats(&self) -> (usize, usize) {
        match &self.mla {
            None => (self.kv_dim(), self.kv_dim()),
            Some(m) => (m.kv_lora_rank + m.qk_rope_head_dim, 0),
        }
    }

    /// Width of the attention output `o` reads: heads × value head dims.
    pub fn attn_out_dim(&self) -> usize {
        self.mla.as_ref().map_or(self.q_dim(), |m| self.num_heads * m.v_head_dim)
    }

    /// Lengths of the q and k norm weights: one head's width per head, or the whole
    /// projection's; `None` without q/k norms.
    pub fn qk_norm_dims(&self) -> Option<(usize, usize)> {
        match self.qk_norm {
            QkNorm::None => None,
            QkNorm::PerHead => Some((self.head_dim, self.head_dim)),
            QkNorm::Whole => Some((self.q_dim(), self.kv_dim())),
        }
    }

    /// Parameter counts: (total, active per token). Saturating: `flint info` reads the sizes of a
    /// file whose tensors have not been checked against them.
    pub fn parameter_counts(&self) -> (u64, u64) {
        let n = |x: usize| Saturating(x as u64);
        let h = n(self.hidden_size);
        let (q, kv) = (n(self.num_heads) * n(self.head_dim), n(self.num_kv_heads) * n(self.head_dim));
        let mlp = |i: usize| n(3) * h * n(i);
        let attn = match &self.mla {
            Some(m) => {
                let heads = n(self.num_heads);
                let (r, rope, nope, v) =
                    (n(m.kv_lora_rank), n(m.qk_rope_head_dim), n(m.qk_nope_head_dim), n(m.v_head_dim));
                let q_in = m.q_lora_rank.map_or(h, n);
                let q_a = m.q_lora_rank.map_or(n(0), |ql| n(ql) * h + n(ql));
                q_a + q * q_in + (r + rope) * h + r + heads * (nope + v) * r + heads * v * h
            }
            None => h * (q + n(2) * kv) + q * h + if self.qkv_bias { q + n(2) * kv } else { n(0) },
        } + match self.qk_norm {
            QkNorm::None => n(0),
            QkNorm::PerHead => n(2) * n(self.head_dim),
            QkNorm::Whole => q + kv,
        };
        let embed = n(self.vocab_size) * h;
        let mut total = embed + h + if self.tie_word_embeddings { n(0) } else { embed };
        let mut active = total;
        for kind in &self.layer_ffn {
            let base = attn + n(2) * h;
            total += base;
            active += base;
            match (kind, &self.moe) {
                (FfnKind::Moe, Some(m)) => {
                    let shared = m.shared_expert_intermediate_size.map_or(n(0), mlp)
                        + if m.shared_expert_gate { h } else { n(0) };
                    let router = n(m.num_experts) * h + if m.routing.selection_bias { n(m.num_experts) } else { n(0) };
                    total += router + shared + n(m.num_experts) * mlp(m.expert_intermediate_size);
                    active += router + shared + n(m.top_k) * mlp(m.expert_intermediate_size);
                }
                _ => {
                    total += mlp(self.intermediate_size);
                    active += mlp(self.intermediate_size);
                }
            }
        }
        (total.0, active.0)
    }

    /// Checks the invariants every builder must establish; names the first one broken.
    pub fn validate(&self) -> crate::Result<()> {
        use crate::Error;
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(Error::field(field.to_string(), "must be positive"));
            }
        }
        // The projections are heads × head_dim wide (the key and value ones no wider).
        if self.num_heads.checked_mul(self.head_dim).is_none() {
            return Err(Error::field(
                "head_dim",
                format!("{} × {} heads overflows a size", self.head_dim, self.num_heads),
            ));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(Error::field(
                "num_key_value_heads",
                format!("{} does not divide num_attention_heads {}", self.num_kv_heads, self.num_heads),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(Error::field("head_dim", format!("{} is odd; RoPE needs pairs", self.head_dim)));
        }
        if !(self.rms_norm_eps > 0.0 && self.rms_norm_eps.is_finite()) {
            return Err(Error::field("rms_norm_eps", "must be a positive number"));
        }
        if !(self.rope_theta > 0.0 && self.rope_theta.is_finite()) {
            return Err(Error::field("rope_theta", "must be a positive number"));
        }
        if self.layer_ffn.len() != self.num_layers {
            return Err(Error::field("num_hidden_layers", "layer kinds do not match the layer count"));
        }
        let any_dense = self.layer_ffn.contains(&FfnKind::Dense);
        if any_dense && self.intermediate_size == 0 {
            return Err(Error::field("intermediate_size", "must be positive for dense layers"));
        }
        match &self.moe {
            Some(m) => {
                if m.num_experts == 0 || m.expert_intermediate_size == 0 {
                    return Err(Error::field("num_experts", "an MoE model needs experts of positive width"));
                }
                if m.top_k == 0 || m.top_k > m.num_experts {
                    return Err(Error::field(
                        "num_experts_per_tok",
                        format!("{} is not in 1..={} (the number of experts)", m.top_k, m.num_experts),
                    ));
                }
                if let Some(g) = m.routing.groups {
                    let size = m.num_experts / g.count.max(1);
                    if g.count == 0 || !m.num_experts.is_multiple_of(g.count) {
                        return Err(Error::field(
                            "n_group",
                            format!("{} does not divide the {} experts into equal groups", g.count, m.num_experts),
                        ));
                    }
                    if g.used == 0 || g.used > g.count || m.top_k > g.used * size {
                        return Err(Error::field(
                            "topk_group",
                            format!(
                                "{} groups of {size} cannot supply {} experts (n_group {})",
                                g.used, m.top_k, g.count
                            ),
                        ));
                    }
                    if g.score == GroupScore::TopTwoSum && size < 2 {
                        return Err(Error::field("n_group", "groups scored by their two best need two experts"));
                    }
                }
                if !(m.routing.scale.is_finite() && m.routing.scale != 0.0) {
                    return Err(Error::field("routed_scaling_factor", "must be a non-zero number"));
                }
            }
            None if self.layer_ffn.contains(&FfnKind::Moe) => {
                return Err(Error::field("num_experts", "MoE layers without an expert count"));
            }
            None => {}
        }
        if let Some(m) = &self.mla {
            let widths = [
                ("kv_lora_rank", m.kv_lora_rank),
                ("qk_rope_head_dim", m.qk_rope_head_dim),
                ("qk_nope_head_dim", m.qk_nope_head_dim),
                ("v_head_dim", m.v_head_dim),
                ("q_lora_rank", m.q_lora_rank.unwrap_or(1)),
            ];
            if let Some((field, _)) = widths.iter().find(|(_, v)| *v == 0) {
                return Err(Error::field(field.to_string(), "must be positive"));
            }
            // Every per-head width times the heads (and the latent row) must be a size.
            let widths = [m.kv_lora_rank, m.v_head_dim, m.qk_nope_head_dim, m.q_lora_rank.unwrap_or(0)];
            let too_wide = widths
                .iter()
                .any(|&w| w.checked_mul(self.num_heads).and_then(|x| x.checked_mul(4)).is_none())
                || m.kv_lora_rank.checked_add(m.qk_rope_head_dim).is_none()
                || m.qk_nope_head_dim.checked_add(m.v_head_dim).and_then(|x| x.checked_mul(self.num_heads)).is_none();
            if too_wide {
                return Err(Error::field("kv_lora_rank", "the latent attention's widths overflow a size"));
            }
            if self.head_dim != m.qk_nope_head_dim + m.qk_rope_head_dim || !m.qk_rope_head_dim.is_multiple_of(2) {
                return Err(Error::field(
                    "qk_rope_head_dim",
                    format!(
                        "{} must be even, and with qk_nope_head_dim {} make the head's {}",
                        m.qk_rope_head_dim, m.qk_nope_head_dim, self.head_dim
                    ),
                ));
            }
        }
        if let Some(y) = &self.rope_scaling {
            if !(y.factor > 0.0 && y.factor.is_finite() && y.attention_factor.is_finite())
                || y.original_max_position_embeddings == 0
            {
                return Err(Error::field("rope_parameters", "YaRN needs a positive factor and original context"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preset() -> ModelConfig {
        presets::find("muse-spark-0.6b").unwrap().config
    }

    #[test]
    fn parameter_counts_saturate_on_absurd_sizes() {
        // `flint info` counts from the metadata alone, before any tensor is checked against it.
        let mut c = preset();
        c.hidden_size = 1 << 31;
        c.num_heads = 1 << 40;
        assert_eq!(c.parameter_counts(), (u64::MAX, u64::MAX));
        let mut c = preset();
        c.intermediate_size = usize::MAX;
        c.moe.as_mut().unwrap().num_experts = usize::MAX;
        c.layer_ffn[0] = FfnKind::Dense;
        assert_eq!(c.parameter_counts().0, u64::MAX);
    }

    #[test]
    fn validate_refuses_absurd_sizes() {
        let mut c = preset();
        c.num_heads = 1 << 40;
        c.num_kv_heads = 1 << 40;
        c.head_dim = 1 << 30;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("`head_dim`: 1073741824 × 1099511627776 heads overflows"), "{err}");
        let mut c = preset();
        c.max_position_embeddings = 0;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("`max_position_embeddings`: must be positive"), "{err}");
    }
}
