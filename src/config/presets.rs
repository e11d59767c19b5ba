//! Named model configs whose weights are generated (seeded INT4, written on the device), for
//! benchmarks and memory planning where no checkpoint exists or none fits.
//!
//! `muse-spark-15b` is a documented hypothetical config of the Muse Spark 15B edge model (its
//! weights are not public). It is a Qwen1.5-MoE-A2.7B-class sparse MoE, qwen2_moe family: 24
//! layers of hidden 2048, 60 routed experts of width 1408 with top-4 routing plus one
//! sigmoid-gated shared expert of width 5632, q/k/v biases, untied embeddings over Qwen's
//! 151,936-token vocabulary. It departs from Qwen1.5-MoE-A2.7B in one place, attention:
//! 4 KV heads (GQA 16/4) instead of 16, which makes its KV cache 4x smaller (96 KiB per token
//! in f32 instead of 384 KiB). Counts: 14.16B parameters, 2.54B active per token.
//!
//! The memory budget (9 GB for weights, a 4096-token KV cache and scratch, under the vendor's
//! 10 GB for the class at INT4) fixes two choices; `flint info --preset muse-spark-15b` prints
//! the exact plan:
//! - INT4 groups of 64 (4.5 bits per weight with the f16 scale pair): 7.97 GB of weights.
//!   Groups of 32 (5 bits) would take 8.85 GB, and with the cache 9.26 GB, over budget.
//! - GQA 16/4: a 4096-token cache of 0.40 GB; with 16 KV heads it would be 1.61 GB (9.66 GB
//!   in all with groups of 64).
//!
//! Siblings keep the family and the head shape at sizes this machine runs (vocabulary 32,768,
//! hidden 1024, 16 layers, GQA 16/4 of head 64, experts of width 512 top-4, shared expert 2048):
//! - `muse-spark-0.6b`: 16 experts, 0.35 GB of INT4, 0.31B active;
//! - `muse-spark-1.8b`: 64 experts, 1.03 GB, the same 0.31B active: with `muse-spark-0.6b`, the
//!   pair showing that decode cost follows the active parameters, not the total;
//! - `muse-spark-2.8b`: hidden 1280, 20 heads, 64 experts of 640, shared 2560: 1.59 GB, 0.46B
//!   active.
//!
//! A second 4x-experts pair, small (hidden 512, 8 layers, GQA 8/2 of 64, experts of width 256
//! top-4, shared 1024): `muse-spark-pair-64e` (0.14 GB, 0.064B active) and `muse-spark-pair-256e`
//! (0.48 GB, 0.065B active: the routers grow). It exists because on lavapipe the router kernel is slow with
//! 16 experts (see `gpu::kernels::moe_route`), which hides the 0.6b/1.8b comparison there.
//!
//! `deepseek-v2-lite` has DeepSeek-V2-Lite's shape exactly (deepseek_v2 family, 15.7B total,
//! 2.4B active): 27 layers of hidden 2048, the first dense (FFN 10944), then 64 routed experts
//! of 1408 top-6 (softmax, greedy) plus 2 shared; multi-head latent attention with 16 heads, no
//! q low-rank, kv_lora_rank 512, nope/rope/v head dims 128/64/128; YaRN (factor 40 over 4096
//! positions, mscale 0.707); vocabulary 102,400, untied. Its INT4 groups are 128 wide, to fit
//! 9 GB with a 4096-token cache (`flint info --preset deepseek-v2-lite`).
//!
//! Norm weights are 1, biases 0; every matrix (embeddings, output, routers and shared-expert
//! gates included) is generated INT4 with groups of [`PRESET_GROUP`].

use super::deepseek::attention_scale;
use super::{Family, FfnKind, MlaConfig, ModelConfig, MoeConfig, QkNorm, RopePairing, Routing, Yarn};
use crate::{Error, Result};

/// INT4 group of every generated matrix.
pub const PRESET_GROUP: usize = 64;

/// The INT4 group of a generated matrix with rows of `cols` values: the preset's `group`, or
/// where it does not divide the rows the widest half of it (down to 32) that does.
pub fn group_for(cols: usize, group: usize) -> usize {
    let mut g = group;
    while g > 32 && !cols.is_multiple_of(g) {
        g /= 2;
    }
    g
}

/// A named config with generated weights.
#[derive(Debug, Clone)]
pub struct Preset {
    pub name: &'static str,
    pub description: &'static str,
    pub config: ModelConfig,
    /// INT4 group of its matrices.
    pub group: usize,
}

/// The shape a preset varies; everything else is the qwen2_moe family's.
struct Shape {
    vocab: usize,
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    experts: usize,
    top_k: usize,
    expert_width: usize,
    shared_width: usize,
    max_positions: usize,
}

fn qwen2_moe(s: Shape) -> ModelConfig {
    ModelConfig {
        family: Family::Qwen2Moe,
        vocab_size: s.vocab,
        hidden_size: s.hidden,
        num_layers: s.layers,
        num_heads: s.heads,
        num_kv_heads: s.kv_heads,
        head_dim: s.head_dim,
        rms_norm_eps: 1e-6,
        rope_theta: 1_000_000.0,
        rope_pairing: RopePairing::Halves,
        rope_scaling: None,
        max_position_embeddings: s.max_positions,
        qkv_bias: true,
        qk_norm: QkNorm::None,
        mla: None,
        attention_scale: 1.0 / (s.head_dim as f32).sqrt(),
        embedding_multiplier: 1.0,
        residual_multiplier: 1.0,
        logits_multiplier: 1.0,
        tie_word_embeddings: false,
        // Every layer is sparse; the dense width is unused.
        intermediate_size: 0,
        moe: Some(MoeConfig {
            num_experts: s.experts,
            top_k: s.top_k,
            expert_intermediate_size: s.expert_width,
            // Qwen1.5-MoE's norm_topk_prob = false.
            routing: Routing::softmax(false),
            shared_expert_intermediate_size: Some(s.shared_width),
            shared_expert_gate: true,
        }),
        layer_ffn: vec![FfnKind::Moe; s.layers],
        bos_token_id: None,
        eos_token_ids: vec![],
    }
}

/// DeepSeek-V2-Lite's config (its Hugging Face config.json, as transformers reads it).
fn deepseek_v2_lite() -> ModelConfig {
    let (factor, mscale) = (40.0, 0.707);
    let mla = MlaConfig {
        q_lora_rank: None,
        kv_lora_rank: 512,
        qk_nope_head_dim: 128,
        qk_rope_head_dim: 64,
        v_head_dim: 128,
        norm_eps: 1e-6,
    };
    let mut layer_ffn = vec![FfnKind::Moe; 27];
    layer_ffn[0] = FfnKind::Dense;
    ModelConfig {
        family: Family::DeepseekV2,
        vocab_size: 102_400,
        hidden_size: 2048,
        num_layers: 27,
        num_heads: 16,
        num_kv_heads: 16,
        head_dim: 192,
        rms_norm_eps: 1e-6,
        rope_theta: 10000.0,
        rope_pairing: RopePairing::Interleaved,
        rope_scaling: Some(Yarn {
            factor,
            original_max_position_embeddings: 4096,
            beta_fast: 32.0,
            beta_slow: 1.0,
            truncate: true,
            attention_factor: 1.0,
        }),
        max_position_embeddings: 163_840,
        qkv_bias: false,
        qk_norm: QkNorm::None,
        mla: Some(mla),
        attention_scale: attention_scale(192, Some((factor, mscale))),
        embedding_multiplier: 1.0,
        residual_multiplier: 1.0,
        logits_multiplier: 1.0,
        tie_word_embeddings: false,
        intermediate_size: 10_944,
        moe: Some(MoeConfig {
            num_experts: 64,
            top_k: 6,
            expert_intermediate_size: 1408,
            routing: Routing::softmax(false),
            shared_expert_intermediate_size: Some(2 * 1408),
            shared_expert_gate: false,
        }),
        layer_ffn,
        bos_token_id: None,
        eos_token_ids: vec![],
    }
}

fn sibling(experts: usize) -> Shape {
    Shape {
        vocab: 32_768,
        hidden: 1024,
        layers: 16,
        heads: 16,
        kv_heads: 4,
        head_dim: 64,
        experts,
        top_k: 4,
        expert_width: 512,
        shared_width: 2048,
        max_positions: 8192,
    }
}

fn pair(experts: usize) -> Shape {
    Shape { hidden: 512, layers: 8, heads: 8, kv_heads: 2, expert_width: 256, shared_width: 1024, ..sibling(experts) }
}

/// Every preset, largest first.
pub fn all() -> Vec<Preset> {
    let preset = |name, description, shape| Preset { name, description, config: qwen2_moe(shape), group: PRESET_GROUP };
    vec![
        preset(
            "muse-spark-15b",
            "hypothetical Muse Spark 15B: Qwen1.5-MoE-A2.7B-class, 60 experts top-4 + shared, GQA 16/4",
            Shape {
                vocab: 151_936,
                hidden: 2048,
                layers: 24,
                heads: 16,
                kv_heads: 4,
                head_dim: 128,
                experts: 60,
                top_k: 4,
                expert_width: 1408,
                shared_width: 5632,
                max_positions: 8192,
            },
        ),
        Preset {
            name: "deepseek-v2-lite",
            description: "DeepSeek-V2-Lite's shape: 27 layers, MLA (kv_lora 512), 64 experts of 1408 top-6 + 2 shared",
            config: deepseek_v2_lite(),
            // Groups of 128 (4.25 bits per weight; 64 for the dense FFN's rows of 10944): 8.52 GB
            // in all with a 4096-token cache; groups of 64 would take 9.02 GB, over the class's 9 GB.
            group: 128,
        },
        preset(
            "muse-spark-2.8b",
            "sibling of ~1.5 GB: hidden 1280, 64 experts of 640 top-4 + shared",
            Shape { hidden: 1280, heads: 20, expert_width: 640, shared_width: 2560, ..sibling(64) },
        ),
        preset("muse-spark-1.8b", "sibling of ~1 GB: hidden 1024, 64 experts of 512 top-4 + shared", sibling(64)),
        preset(
            "muse-spark-0.6b",
            "sibling of ~0.35 GB: muse-spark-1.8b with 16 experts (the same active parameters)",
            sibling(16),
        ),
        preset("muse-spark-pair-256e", "small pair, 256 experts of 256 top-4 + shared (0.48 GB)", pair(256)),
        preset("muse-spark-pair-64e", "small pair, 64 experts of 256 top-4 + shared (0.14 GB)", pair(64)),
    ]
}

/// The preset called `name`; the error lists the known names.
pub fn find(name: &str) -> Result<Preset> {
    let all = all();
    let names: Vec<&str> = all.iter().map(|p| p.name).collect();
    all.into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| Error::Request(format!("no preset named `{name}` (presets: {})", names.join(", "))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_the_documentation() {
        let counts = |name| find(name).unwrap().config.parameter_counts();
        let (total, active) = counts("muse-spark-15b");
        // "about 14-15B total and 2.5-3B active".
        assert!((14.0e9..15.0e9).contains(&(total as f64)), "{total}");
        assert!((2.5e9..3.0e9).contains(&(active as f64)), "{active}");
        // The 4x-experts pair: the same active parameters but for the routers (E x H per layer:
        // 0.8M more of 311M).
        let (few, many) = (counts("muse-spark-0.6b"), counts("muse-spark-1.8b"));
        assert_eq!(many.1 - few.1, 16 * 48 * 1024);
        assert!(many.0 > 2 * few.0);
        let (few, many) = (counts("muse-spark-pair-64e"), counts("muse-spark-pair-256e"));
        assert_eq!(many.1 - few.1, 8 * 192 * 512);
        for p in all() {
            p.config.validate().unwrap();
        }
        assert!(find("nope").unwrap_err().to_string().contains("muse-spark-15b"));
    }
}
