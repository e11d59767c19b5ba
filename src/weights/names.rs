//! Family tensor names: where each weight of the model lives in a checkpoint.
//!
//! Two naming schemes: Hugging Face (`model.layers.N.self_attn.q_proj.weight`, with family
//! differences in the MoE block) and llama.cpp's GGUF (`blk.N.attn_q.weight`, the same for
//! every family). Names are given without the `.weight` / `.bias` suffix.

use crate::config::Family;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    HuggingFace,
    Gguf,
}

/// How the experts of one MoE layer are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpertLayout {
    /// One gate/up/down linear per expert; the closure-free form: names per expert.
    PerExpert { gate: Vec<String>, up: Vec<String>, down: Vec<String> },
    /// Stacked `[E, I, H]` gate and up, `[E, H, I]` down (GGUF `*_exps`).
    Stacked { gate: String, up: String, down: String },
    /// Stacked `[E, 2I, H]` with gate rows first then up rows, and `[E, H, I]` down
    /// (GraniteMoE `input_linear`/`output_linear`, transformers 5 `gate_up_proj`).
    FusedGateUp { gate_up: String, down: String },
}

/// Names of one layer's tensors. Optional parts are `Some` where the scheme has a name for
/// them; whether the checkpoint holds them is for the loader to check.
#[derive(Debug, Clone)]
pub struct LayerNames {
    pub attn_norm: String,
    pub ffn_norm: String,
    pub q: String,
    pub k: String,
    pub v: String,
    pub o: String,
    pub q_norm: String,
    pub k_norm: String,
    /// Dense FFN.
    pub gate: String,
    pub up: String,
    pub down: String,
    pub router: String,
    pub shared_gate: String,
    pub shared_up: String,
    pub shared_down: String,
    pub shared_expert_gate: String,
    /// MLA (DeepSeek): q's low-rank pair and norm, the latent projection and norm, and the
    /// latent's up-projection, fused (`kv_b`) or split per head (`k_b` transposed, `v_b`: GGUF).
    pub q_a: String,
    pub q_a_norm: String,
    pub q_b: String,
    pub kv_a: String,
    pub kv_a_norm: String,
    pub kv_b: String,
    pub k_b: String,
    pub v_b: String,
    /// The router's selection bias (DeepSeek-V3 `e_score_correction_bias`).
    pub router_bias: String,
}

pub struct Names {
    pub scheme: Scheme,
    pub family: Family,
}

impl Names {
    pub fn embed(&self) -> &'static str {
        match self.scheme {
            Scheme::HuggingFace => "model.embed_tokens",
            Scheme::Gguf => "token_embd",
        }
    }
    pub fn final_norm(&self) -> &'static str {
        match self.scheme {
            Scheme::HuggingFace => "model.norm",
            Scheme::Gguf => "output_norm",
        }
    }
    pub fn lm_head(&self) -> &'static str {
        match self.scheme {
            Scheme::HuggingFace => "lm_head",
            Scheme::Gguf => "output",
        }
    }

    /// What every tensor name of layer `l` starts with.
    pub fn layer_prefix(&self, l: usize) -> String {
        match self.scheme {
            Scheme::Gguf => format!("blk.{l}."),
            Scheme::HuggingFace => format!("model.layers.{l}."),
        }
    }

    pub fn layer(&self, l: usize) -> LayerNames {
        match self.scheme {
            Scheme::Gguf => {
                let n = |s: &str| format!("blk.{l}.{s}");
                LayerNames {
                    attn_norm: n("attn_norm"),
                    ffn_norm: n("ffn_norm"),
                    q: n("attn_q"),
                    k: n("attn_k"),
                    v: n("attn_v"),
                    o: n("attn_output"),
                    q_norm: n("attn_q_norm"),
                    k_norm: n("attn_k_norm"),
                    gate: n("ffn_gate"),
                    up: n("ffn_up"),
                    down: n("ffn_down"),
                    router: n("ffn_gate_inp"),
                    shared_gate: n("ffn_gate_shexp"),
                    shared_up: n("ffn_up_shexp"),
                    shared_down: n("ffn_down_shexp"),
                    shared_expert_gate: n("ffn_gate_inp_shexp"),
                    q_a: n("attn_q_a"),
                    q_a_norm: n("attn_q_a_norm"),
                    q_b: n("attn_q_b"),
                    kv_a: n("attn_kv_a_mqa"),
                    kv_a_norm: n("attn_kv_a_norm"),
                    kv_b: n("attn_kv_b"),
                    k_b: n("attn_k_b"),
                    v_b: n("attn_v_b"),
                    router_bias: n("exp_probs_b"),
                }
            }
            Scheme::HuggingFace => {
                let n = |s: &str| format!("model.layers.{l}.{s}");
                let router = match self.family {
                    Family::Mixtral => n("block_sparse_moe.gate"),
                    Family::GraniteMoe => n("block_sparse_moe.router.layer"),
                    _ => n("mlp.gate"),
                };
                // DeepSeek's shared experts are one MLP named in the plural.
                let shared = if self.family.is_deepseek() { "shared_experts" } else { "shared_expert" };
                LayerNames {
                    attn_norm: n("input_layernorm"),
                    ffn_norm: n("post_attention_layernorm"),
                    q: n("self_attn.q_proj"),
                    k: n("self_attn.k_proj"),
                    v: n("self_attn.v_proj"),
                    o: n("self_attn.o_proj"),
                    q_norm: n("self_attn.q_norm"),
                    k_norm: n("self_attn.k_norm"),
                    gate: n("mlp.gate_proj"),
                    up: n("mlp.up_proj"),
                    down: n("mlp.down_proj"),
                    router,
                    shared_gate: n(&format!("mlp.{shared}.gate_proj")),
                    shared_up: n(&format!("mlp.{shared}.up_proj")),
                    shared_down: n(&format!("mlp.{shared}.down_proj")),
                    shared_expert_gate: n("mlp.shared_expert_gate"),
                    q_a: n("self_attn.q_a_proj"),
                    q_a_norm: n("self_attn.q_a_layernorm"),
                    q_b: n("self_attn.q_b_proj"),
                    kv_a: n("self_attn.kv_a_proj_with_mqa"),
                    kv_a_norm: n("self_attn.kv_a_layernorm"),
                    kv_b: n("self_attn.kv_b_proj"),
                    k_b: n("self_attn.k_b_proj"),
                    v_b: n("self_attn.v_b_proj"),
                    router_bias: n("mlp.gate.e_score_correction_bias"),
                }
            }
        }
    }

    /// The expert layouts this scheme and family may use for layer `l`, most usual first.
    pub fn expert_layouts(&self, l: usize, num_experts: usize) -> Vec<ExpertLayout> {
        let per_expert = |prefix: &str, g: &str, u: &str, d: &str| ExpertLayout::PerExpert {
            gate: (0..num_experts).map(|e| format!("{prefix}.{e}.{g}")).collect(),
            up: (0..num_experts).map(|e| format!("{prefix}.{e}.{u}")).collect(),
            down: (0..num_experts).map(|e| format!("{prefix}.{e}.{d}")).collect(),
        };
        match (self.scheme, self.family) {
            (Scheme::Gguf, _) => vec![ExpertLayout::Stacked {
                gate: format!("blk.{l}.ffn_gate_exps"),
                up: format!("blk.{l}.ffn_up_exps"),
                down: format!("blk.{l}.ffn_down_exps"),
            }],
            (Scheme::HuggingFace, Family::GraniteMoe) => vec![ExpertLayout::FusedGateUp {
                gate_up: format!("model.layers.{l}.block_sparse_moe.input_linear"),
                down: format!("model.layers.{l}.block_sparse_moe.output_linear"),
            }],
            (Scheme::HuggingFace, Family::Mixtral) => vec![
                per_expert(&format!("model.layers.{l}.block_sparse_moe.experts"), "w1", "w3", "w2"),
                ExpertLayout::FusedGateUp {
                    gate_up: format!("model.layers.{l}.mlp.experts.gate_up_proj"),
                    down: format!("model.layers.{l}.mlp.experts.down_proj"),
                },
            ],
            (Scheme::HuggingFace, _) => vec![
                per_expert(&format!("model.layers.{l}.mlp.experts"), "gate_proj", "up_proj", "down_proj"),
                ExpertLayout::FusedGateUp {
                    gate_up: format!("model.layers.{l}.mlp.experts.gate_up_proj"),
                    down: format!("model.layers.{l}.mlp.experts.down_proj"),
                },
            ],
        }
    }
}
