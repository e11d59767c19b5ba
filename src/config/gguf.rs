//! `ModelConfig` from GGUF metadata (llama.cpp's `{arch}.*` keys).

use super::{deepseek, Family, FfnKind, ModelConfig, MoeConfig, RopePairing, Routing, Scoring};
use crate::format::gguf::{GgufFile, MetaValue};
use crate::{Error, Result};

pub(super) fn gguf_err(msg: impl Into<String>) -> Error {
    Error::Gguf(msg.into())
}

/// Typed access to `{arch}.*` metadata with errors that name the key.
pub(super) struct Meta<'a> {
    pub(super) file: &'a GgufFile,
    pub(super) arch: &'a str,
}

impl Meta<'_> {
    pub(super) fn key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.arch)
    }

    fn wrong_type(key: &str, wanted: &str, v: &MetaValue) -> Error {
        gguf_err(format!("metadata key `{key}` should be {wanted}, found {}", v.type_name()))
    }

    /// A non-negative integer; a per-layer array is accepted when all its entries agree.
    pub(super) fn usize_opt(&self, suffix: &str) -> Result<Option<usize>> {
        let key = self.key(suffix);
        let Some(v) = self.file.get(&key) else { return Ok(None) };
        let one = |v: &MetaValue| {
            v.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| Self::wrong_type(&key, "a non-negative integer", v))
        };
        match v {
            MetaValue::Array(items) => {
                let values = items.iter().map(one).collect::<Result<Vec<_>>>()?;
                match values.split_first() {
                    None => Err(gguf_err(format!("metadata key `{key}` is an empty array"))),
                    Some((first, rest)) if rest.iter().all(|x| x == first) => Ok(Some(*first)),
                    Some(_) => {
                        Err(gguf_err(format!("metadata key `{key}`: per-layer values {values:?} are not supported")))
                    }
                }
            }
            v => one(v).map(Some),
        }
    }

    pub(super) fn usize(&self, suffix: &str) -> Result<usize> {
        self.usize_opt(suffix)?.ok_or_else(|| gguf_err(format!("missing metadata key `{}`", self.key(suffix))))
    }

    pub(super) fn f32_opt(&self, suffix: &str) -> Result<Option<f32>> {
        let key = self.key(suffix);
        match self.file.get(&key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(|x| Some(x as f32)).ok_or_else(|| Self::wrong_type(&key, "a number", v)),
        }
    }

    pub(super) fn f32(&self, suffix: &str) -> Result<f32> {
        self.f32_opt(suffix)?.ok_or_else(|| gguf_err(format!("missing metadata key `{}`", self.key(suffix))))
    }

    pub(super) fn bool_opt(&self, suffix: &str) -> Result<Option<bool>> {
        let key = self.key(suffix);
        match self.file.get(&key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| Self::wrong_type(&key, "a bool", v)),
        }
    }

    fn token_id(&self, key: &str) -> Result<Option<u32>> {
        match self.file.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| Self::wrong_type(key, "a token id", v)),
        }
    }
}

/// The layers whose tensors a file holds: `blk.0.*`, `blk.1.*`, ... up to the first index with
/// none (so never more than the file has tensors).
fn layers_held(file: &GgufFile) -> usize {
    let indices: std::collections::BTreeSet<usize> =
        file.tensors().iter().filter_map(|t| t.name.strip_prefix("blk.")?.split_once('.')?.0.parse().ok()).collect();
    (0..).take_while(|l| indices.contains(l)).count()
}

/// Builds the normalized [`ModelConfig`] from a GGUF file's metadata (and, where metadata is
/// silent, from its tensor shapes), then validates it.
pub fn config_from_gguf(file: &GgufFile) -> Result<ModelConfig> {
    let arch = match file.get("general.architecture") {
        None => return Err(gguf_err("missing metadata key `general.architecture`")),
        Some(v) => v.as_str().ok_or_else(|| Meta::wrong_type("general.architecture", "a string", v))?,
    };
    let m = Meta { file, arch };
    let expert_count = m.usize_opt("expert_count")?.unwrap_or(0);
    let family = match arch {
        "llama" if expert_count > 0 => Family::Mixtral,
        "llama" => Family::Llama,
        "qwen2moe" => Family::Qwen2Moe,
        "qwen3moe" => Family::Qwen3Moe,
        "olmoe" => Family::Olmoe,
        "granitemoe" => Family::GraniteMoe,
        "deepseek2" => Family::DeepseekV2,
        other => return Err(Error::UnknownArchitecture(other.into())),
    };

    let num_layers = m.usize("block_count")?;
    // Layers are looped over and sized by this count: it may not exceed the layers the file has.
    let held = layers_held(file);
    if num_layers > held {
        return Err(gguf_err(format!(
            "`{arch}.block_count` {num_layers} is more than the {held} layers whose tensors the file holds"
        )));
    }
    let hidden_size = m.usize("embedding_length")?;
    let num_heads = m.usize("attention.head_count")?;
    if num_heads == 0 {
        return Err(gguf_err(format!("metadata key `{arch}.attention.head_count` must be positive")));
    }
    let num_kv_heads = m.usize_opt("attention.head_count_kv")?.unwrap_or(num_heads);
    let context_length = m.usize("context_length")?;
    if context_length == 0 {
        return Err(gguf_err(format!("metadata key `{arch}.context_length` must be positive")));
    }
    let has = |name: &str| file.tensor_info(name).is_some();
    let deepseek = match family.is_deepseek() {
        true => Some(deepseek::from_gguf(&m, num_layers, &has)?),
        false => None,
    };
    // One GGUF architecture holds both: V3's routing is the sigmoid one.
    let family = match &deepseek {
        Some(d) if d.moe.routing.scoring == Scoring::Sigmoid => Family::DeepseekV3,
        _ => family,
    };
    let head_dim = match m.usize_opt("attention.key_length")? {
        _ if deepseek.is_some() => deepseek.as_ref().map_or(0, |d| d.head_dim),
        Some(d) => d,
        None if hidden_size.is_multiple_of(num_heads) => hidden_size / num_heads,
        None => {
            return Err(gguf_err(format!(
                "`{arch}.attention.key_length` is missing and embedding_length {hidden_size} is not a multiple of head_count {num_heads}"
            )))
        }
    };
    if let Some(v) = m.usize_opt("attention.value_length")?.filter(|_| deepseek.is_none()) {
        if v != head_dim {
            return Err(gguf_err(format!(
                "`{arch}.attention.value_length` {v} differs from the key length {head_dim}; not supported"
            )));
        }
    }
    if let Some(rot) = m.usize_opt("rope.dimension_count")?.filter(|_| deepseek.is_none()) {
        if rot != head_dim {
            return Err(gguf_err(format!(
                "`{arch}.rope.dimension_count` {rot} is not the head size {head_dim}: partial RoPE is not supported"
            )));
        }
    }
    if let Some(kind) = file.get_str(&m.key("rope.scaling.type")).filter(|_| deepseek.is_none()) {
        if kind != "none" {
            return Err(gguf_err(format!("`{arch}.rope.scaling.type` `{kind}`: RoPE scaling is not supported yet")));
        }
    }
    if let Some(f) = m.f32_opt("attn_logit_softcapping")? {
        if f != 0.0 {
            return Err(gguf_err(format!("`{arch}.attn_logit_softcapping` is not supported")));
        }
    }

    // Tensor-level facts.
    if has("rope_freqs.weight") {
        return Err(gguf_err("RoPE frequency factors (`rope_freqs.weight`, Llama 3.1 style) are not supported yet"));
    }
    let is_moe_layer = |l: usize| has(&format!("blk.{l}.ffn_gate_inp.weight"));
    let first_moe = (0..num_layers).find(|&l| is_moe_layer(l));
    let first_dense = (0..num_layers).find(|&l| !is_moe_layer(l));
    // Row-major shape entry `i` of a tensor, when the tensor exists.
    let dim = |name: String, i: usize| file.tensor_info(&name).and_then(|t| t.shape().get(i).copied());

    let feed_forward = m.usize_opt("feed_forward_length")?;
    let intermediate_size = match (feed_forward, first_dense) {
        (Some(n), _) => n,
        // ffn_gate is ne = [hidden, intermediate]: row-major [intermediate, hidden].
        (None, Some(l)) => dim(format!("blk.{l}.ffn_gate.weight"), 0).unwrap_or(0),
        (None, None) => 0,
    };

    let shared_tensor = first_moe.map(|l| format!("blk.{l}.ffn_gate_shexp.weight")).filter(|n| has(n));
    let shared_len = m.usize_opt("expert_shared_feed_forward_length")?.filter(|&n| n > 0);

    let moe = if let Some(d) = &deepseek {
        Some(d.moe.clone())
    } else if expert_count == 0 {
        if family != Family::Llama {
            return Err(gguf_err(format!(
                "missing metadata key `{arch}.expert_count`: a {} model needs an expert count",
                family.name()
            )));
        }
        None
    } else {
        let top_k = m.usize("expert_used_count")?;
        // Stacked experts: ffn_gate_exps is ne = [hidden, expert_ff, experts], row-major
        // [experts, expert_ff, hidden].
        let from_tensor = first_moe.and_then(|l| dim(format!("blk.{l}.ffn_gate_exps.weight"), 1));
        let expert_intermediate_size = match (m.usize_opt("expert_feed_forward_length")?, family) {
            (Some(n), _) => n,
            (None, f) if f.mixes_dense_layers() => from_tensor
                .ok_or_else(|| gguf_err(format!("missing metadata key `{arch}.expert_feed_forward_length`")))?,
            (None, _) => from_tensor
                .or(feed_forward)
                .ok_or_else(|| gguf_err(format!("missing metadata key `{arch}.feed_forward_length`")))?,
        };
        let norm = m.bool_opt("expert_weights_norm")?;
        // Where the file says nothing, llama.cpp's defaults: Qwen3-MoE renormalises, the others not.
        let renormalize = match family {
            f if f.always_renormalizes() => true,
            Family::Qwen3Moe => norm.unwrap_or(true),
            Family::Qwen2Moe => norm.unwrap_or(false),
            _ => false,
        };
        if let Some(func) = m.usize_opt("expert_gating_func")? {
            // llama.cpp: 1 = softmax, 2 = sigmoid.
            if func != 1 {
                return Err(gguf_err(format!("`{arch}.expert_gating_func` {func} is not supported (only softmax, 1)")));
            }
        }
        let (shared, gate) = if family.has_shared_expert() {
            let size = match (shared_len, &shared_tensor) {
                (Some(n), _) => Some(n),
                // ffn_gate_shexp is ne = [hidden, shared_ff]: row-major [shared_ff, hidden].
                (None, Some(name)) => dim(name.clone(), 0),
                (None, None) => None,
            };
            let gate = first_moe.is_some_and(|l| has(&format!("blk.{l}.ffn_gate_inp_shexp.weight")));
            (size, size.is_some() && gate)
        } else {
            if shared_len.is_some() || shared_tensor.is_some() {
                return Err(gguf_err(format!("a shared expert in a `{arch}` file is not supported")));
            }
            (None, false)
        };
        Some(MoeConfig {
            num_experts: expert_count,
            top_k,
            expert_intermediate_size,
            routing: Routing::softmax(renormalize),
            shared_expert_intermediate_size: shared,
            shared_expert_gate: gate,
        })
    };

    let layer_ffn =
        (0..num_layers).map(|l| if moe.is_some() && is_moe_layer(l) { FfnKind::Moe } else { FfnKind::Dense }).collect();

    let vocab_size = match dim("token_embd.weight".into(), 0) {
        Some(v) => v,
        None => match file.get("tokenizer.ggml.tokens").and_then(MetaValue::as_array) {
            Some(tokens) => tokens.len(),
            None => m.usize_opt("vocab_size")?.ok_or_else(|| {
                gguf_err(
                    "no vocabulary size: neither `token_embd.weight`, `tokenizer.ggml.tokens` nor a vocab_size key",
                )
            })?,
        },
    };

    let granite = family.has_multipliers();
    let granite_scale =
        |suffix: &str| -> Result<f32> { Ok(if granite { m.f32_opt(suffix)?.unwrap_or(1.0) } else { 1.0 }) };
    let logit_scale = granite_scale("logit_scale")?;
    if logit_scale == 0.0 {
        return Err(gguf_err(format!("`{arch}.logit_scale` must not be zero")));
    }
    let default_scale = 1.0 / (head_dim as f32).sqrt();
    let attention_scale = if granite { m.f32_opt("attention.scale")?.unwrap_or(default_scale) } else { default_scale };

    let config = ModelConfig {
        family,
        vocab_size,
        hidden_size,
        num_layers,
        num_heads,
        // MLA's heads all read one latent: as GQA, a key head per query head.
        num_kv_heads: if deepseek.is_some() { num_heads } else { num_kv_heads },
        head_dim,
        rms_norm_eps: m.f32("attention.layer_norm_rms_epsilon")?,
        rope_theta: m.f32_opt("rope.freq_base")?.unwrap_or(10000.0),
        // llama.cpp's converter permutes Q/K rows of llama-arch models (llama, mixtral, granite)
        // so that RoPE rotates adjacent pairs; qwen2moe/qwen3moe/olmoe keep HF's halves
        // (LLAMA_ROPE_TYPE_NEOX in llama.cpp).
        rope_pairing: match family {
            Family::Llama | Family::Mixtral | Family::GraniteMoe => RopePairing::Interleaved,
            Family::Qwen2Moe | Family::Qwen3Moe | Family::Olmoe => RopePairing::Halves,
            // llama.cpp's NORM RoPE: adjacent pairs, the layout DeepSeek's weights have.
            Family::DeepseekV2 | Family::DeepseekV3 => RopePairing::Interleaved,
        },
        rope_scaling: deepseek.as_ref().and_then(|d| d.rope_scaling.clone()),
        max_position_embeddings: context_length,
        qkv_bias: has("blk.0.attn_q.bias"),
        qk_norm: family.qk_norm(),
        attention_scale: deepseek.as_ref().map_or(attention_scale, |d| d.attention_scale),
        mla: deepseek.map(|d| d.mla),
        embedding_multiplier: granite_scale("embedding_scale")?,
        residual_multiplier: granite_scale("residual_scale")?,
        logits_multiplier: 1.0 / logit_scale,
        tie_word_embeddings: !has("output.weight"),
        intermediate_size,
        moe,
        layer_ffn,
        bos_token_id: m.token_id("tokenizer.ggml.bos_token_id")?,
        eos_token_ids: m.token_id("tokenizer.ggml.eos_token_id")?.into_iter().collect(),
    };
    config.validate()?;
    Ok(config)
}
