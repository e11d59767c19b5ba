//! `ModelConfig` from a Hugging Face `config.json`.
//!
//! Accepts both spellings transformers has used: `rope_theta` or `rope_parameters.rope_theta`,
//! `num_experts` or `num_local_experts`. A key given twice with different values is an error.

use super::{deepseek, Family, FfnKind, ModelConfig, MoeConfig, RopePairing, Routing};
use crate::{Error, Result};
use serde_json::{Map, Value};

/// Parses the text of a `config.json`.
pub fn parse(text: &str) -> Result<ModelConfig> {
    let value: Value = serde_json::from_str(text)?;
    let obj = value.as_object().ok_or_else(|| Error::Config("top level is not a JSON object".into()))?;
    from_json(obj)
}

/// Reads fields with a clear error naming the field when it is missing or has the wrong type.
pub(super) struct Fields<'a>(pub(super) &'a Map<String, Value>);

impl Fields<'_> {
    pub(super) fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }
    pub(super) fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| Error::field(key, format!("expected a non-negative integer, found {v}"))),
        }
    }
    pub(super) fn usize(&self, key: &str) -> Result<usize> {
        self.usize_opt(key)?.ok_or_else(|| Error::field(key, "missing"))
    }
    pub(super) fn f32_opt(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|n| Some(n as f32))
                .ok_or_else(|| Error::field(key, format!("expected a number, found {v}"))),
        }
    }
    pub(super) fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| Error::field(key, format!("expected true or false, found {v}"))),
        }
    }
    pub(super) fn str_opt(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| Error::field(key, format!("expected a string, found {v}"))),
        }
    }
    /// One value under two accepted names; both present and different is a contradiction.
    pub(super) fn usize_either(&self, a: &str, b: &str) -> Result<Option<usize>> {
        match (self.usize_opt(a)?, self.usize_opt(b)?) {
            (Some(x), Some(y)) if x != y => Err(Error::field(a, format!("{a}={x} contradicts {b}={y}"))),
            (x, y) => Ok(x.or(y)),
        }
    }
    fn token_ids(&self, key: &str) -> Result<Vec<u32>> {
        match self.get(key) {
            None => Ok(vec![]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_u64().map(|n| n as u32).ok_or_else(|| Error::field(key, "expected token ids")))
                .collect(),
            Some(v) => Ok(vec![v.as_u64().ok_or_else(|| Error::field(key, "expected a token id"))? as u32]),
        }
    }
}

/// `rope_theta`; `scaled`: the family reads YaRN itself (DeepSeek), so any `rope_type` passes here.
fn rope_theta(f: &Fields, scaled: bool) -> Result<f32> {
    let direct = f.f32_opt("rope_theta")?;
    let mut nested = None;
    if let Some(params) = f.get("rope_parameters") {
        let params = params.as_object().ok_or_else(|| Error::field("rope_parameters", "expected an object"))?;
        let p = Fields(params);
        if let Some(kind) = p.str_opt("rope_type")? {
            if kind != "default" && !scaled {
                return Err(Error::field(
                    "rope_parameters.rope_type",
                    format!("`{kind}` RoPE scaling is not supported yet"),
                ));
            }
        }
        nested = p.f32_opt("rope_theta")?;
    }
    if let Some(scaling) = f.get("rope_scaling").filter(|_| !scaled) {
        let kind = scaling.get("rope_type").or_else(|| scaling.get("type")).and_then(Value::as_str);
        if kind != Some("default") {
            return Err(Error::field("rope_scaling", format!("RoPE scaling {scaling} is not supported yet")));
        }
    }
    match (direct, nested) {
        (Some(a), Some(b)) if a != b => {
            Err(Error::field("rope_theta", format!("rope_theta={a} contradicts rope_parameters.rope_theta={b}")))
        }
        (a, b) => Ok(a.or(b).unwrap_or(10000.0)),
    }
}

/// More layers than any checkpoint has (the deepest have a few hundred).
const MAX_LAYERS: usize = 1 << 16;

/// Builds the config from a parsed JSON object.
pub fn from_json(obj: &Map<String, Value>) -> Result<ModelConfig> {
    let f = Fields(obj);
    let model_type = f.str_opt("model_type")?.ok_or_else(|| Error::field("model_type", "missing"))?;
    let family = Family::from_model_type(model_type).ok_or_else(|| Error::UnknownArchitecture(model_type.into()))?;

    if let Some(act) = f.str_opt("hidden_act")? {
        if act != "silu" {
            return Err(Error::field("hidden_act", format!("`{act}` is not supported (only silu)")));
        }
    }
    if family == Family::Olmoe && f.get("clip_qkv").is_some() {
        return Err(Error::field("clip_qkv", "OLMoE q/k/v clipping is not supported"));
    }
    if f.bool_or("use_sliding_window", false)? {
        return Err(Error::field("use_sliding_window", "sliding-window attention is not supported"));
    }

    let hidden_size = f.usize("hidden_size")?;
    let num_layers = f.usize("num_hidden_layers")?;
    // Layers are looped over and sized by this count before any weight is read.
    if num_layers > MAX_LAYERS {
        return Err(Error::field(
            "num_hidden_layers",
            format!("{num_layers} is more than any model has ({MAX_LAYERS})"),
        ));
    }
    let num_heads = f.usize("num_attention_heads")?;
    let num_kv_heads = f.usize_opt("num_key_value_heads")?.unwrap_or(num_heads);
    if num_heads == 0 {
        return Err(Error::field("num_attention_heads", "must be positive"));
    }
    let head_dim = match f.usize_opt("head_dim")? {
        Some(d) => d,
        None if hidden_size % num_heads == 0 => hidden_size / num_heads,
        None => {
            return Err(Error::field(
                "head_dim",
                format!("missing, and hidden_size {hidden_size} is not a multiple of num_attention_heads {num_heads}"),
            ))
        }
    };

    let deepseek = match family.is_deepseek() {
        true => Some(deepseek::from_hf(&f, family, num_layers)?),
        false => None,
    };
    let num_experts = f.usize_either("num_experts", "num_local_experts")?;
    let intermediate_size = f.usize_opt("intermediate_size")?.unwrap_or(0);
    let moe = match (family, num_experts) {
        _ if deepseek.is_some() => deepseek.as_ref().map(|d| d.moe.clone()),
        (Family::Llama, _) | (_, None) | (_, Some(0)) => None,
        (_, Some(num_experts)) => {
            let top_k = f.usize("num_experts_per_tok")?;
            let expert_intermediate_size = match family {
                Family::Qwen2Moe | Family::Qwen3Moe => f.usize("moe_intermediate_size")?,
                _ => f.usize("intermediate_size")?,
            };
            let renormalize = family.always_renormalizes() || f.bool_or("norm_topk_prob", false)?;
            let routing = Routing::softmax(renormalize);
            let shared = match family.has_shared_expert() {
                true => f.usize_opt("shared_expert_intermediate_size")?.filter(|&s| s > 0),
                false => None,
            };
            let gate = shared.is_some();
            Some(MoeConfig {
                num_experts,
                top_k,
                expert_intermediate_size,
                routing,
                shared_expert_intermediate_size: shared,
                shared_expert_gate: gate,
            })
        }
    };
    if moe.is_none() && family != Family::Llama {
        return Err(Error::field("num_experts", format!("missing: a {} model needs an expert count", family.name())));
    }

    // Which layers are sparse: Qwen's rule (mlp_only_layers, decoder_sparse_step); all others
    // are sparse everywhere.
    let mlp_only: Vec<usize> = match f.get("mlp_only_layers") {
        None => vec![],
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| Error::field("mlp_only_layers", format!("expected a list of layer indices, found {v}")))?,
    };
    if let Some(&bad) = mlp_only.iter().find(|&&l| l >= num_layers) {
        return Err(Error::field("mlp_only_layers", format!("layer {bad} does not exist ({num_layers} layers)")));
    }
    let sparse_step = f.usize_opt("decoder_sparse_step")?.unwrap_or(1);
    if sparse_step == 0 && moe.is_some() {
        return Err(Error::field("decoder_sparse_step", "must be positive"));
    }
    let layer_ffn = match &deepseek {
        Some(d) => d.layer_ffn.clone(),
        None => (0..num_layers)
            .map(|l| match (&moe, family) {
                (None, _) => FfnKind::Dense,
                (Some(_), f) if f.mixes_dense_layers() && (mlp_only.contains(&l) || (l + 1) % sparse_step != 0) => {
                    FfnKind::Dense
                }
                (Some(_), _) => FfnKind::Moe,
            })
            .collect(),
    };

    let granite = family.has_multipliers();
    let multiplier = |key: &str| -> Result<f32> { Ok(if granite { f.f32_opt(key)?.unwrap_or(1.0) } else { 1.0 }) };
    let logits_scaling = multiplier("logits_scaling")?;
    if logits_scaling == 0.0 {
        return Err(Error::field("logits_scaling", "must not be zero"));
    }
    let head_dim = deepseek.as_ref().map_or(head_dim, |d| d.head_dim);
    let attention_scale = match granite {
        true => f.f32_opt("attention_multiplier")?.unwrap_or(1.0 / (head_dim as f32).sqrt()),
        false => 1.0 / (head_dim as f32).sqrt(),
    };
    let attention_scale = deepseek.as_ref().map_or(attention_scale, |d| d.attention_scale);

    let config = ModelConfig {
        family,
        vocab_size: f.usize("vocab_size")?,
        hidden_size,
        num_layers,
        num_heads,
        // MLA's heads all read one latent: as GQA, a key head per query head.
        num_kv_heads: if deepseek.is_some() { num_heads } else { num_kv_heads },
        head_dim,
        rms_norm_eps: f.f32_opt("rms_norm_eps")?.unwrap_or(1e-6),
        rope_theta: rope_theta(&f, deepseek.is_some())?,
        rope_pairing: match &deepseek {
            Some(d) if d.interleaved => RopePairing::Interleaved,
            _ => RopePairing::Halves,
        },
        rope_scaling: deepseek.as_ref().and_then(|d| d.rope_scaling.clone()),
        max_position_embeddings: f.usize_opt("max_position_embeddings")?.unwrap_or(4096),
        qkv_bias: match family {
            Family::Qwen2Moe => f.bool_or("qkv_bias", true)?,
            _ => f.bool_or("attention_bias", false)?,
        },
        qk_norm: family.qk_norm(),
        mla: deepseek.map(|d| d.mla),
        attention_scale,
        embedding_multiplier: multiplier("embedding_multiplier")?,
        residual_multiplier: multiplier("residual_multiplier")?,
        logits_multiplier: 1.0 / logits_scaling,
        tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
        intermediate_size,
        moe,
        layer_ffn,
        bos_token_id: f.usize_opt("bos_token_id")?.map(|b| b as u32),
        eos_token_ids: f.token_ids("eos_token_id")?,
    };
    config.validate()?;
    Ok(config)
}
