//! DeepSeek-V2/V3's rules from a Hugging Face `config.json`, as transformers 5 reads them:
//! multi-head latent attention, DeepSeek routing, dense leading layers and YaRN RoPE (whose
//! `mscale_all_dim` also scales the softmax); and from GGUF's `deepseek2` keys, as llama.cpp
//! reads them (routing from `expert_gating_func`, the latent norms' eps from `rms_norm_eps`),
//! except that groups are scored by the model's own rule (see `from_gguf`).

use super::gguf::{gguf_err, Meta};
use super::hf::Fields;
use super::{ExpertGroups, Family, FfnKind, GroupScore, MlaConfig, MoeConfig, Routing, Scoring, Yarn};
use crate::{Error, Result};

/// What a DeepSeek config adds to, or decides differently from, the common keys.
pub(super) struct Deepseek {
    pub mla: MlaConfig,
    pub head_dim: usize,
    pub moe: MoeConfig,
    pub layer_ffn: Vec<FfnKind>,
    pub rope_scaling: Option<Yarn>,
    pub interleaved: bool,
    pub attention_scale: f32,
}

/// transformers' `yarn_get_mscale`.
pub(super) fn yarn_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

/// The softmax scale of a q/k head of `head_dim`: `head_dim^-0.5`, times `mscale(factor,
/// mscale_all_dim)^2` under YaRN with `mscale_all_dim` (transformers' `yarn_apply_mscale`).
pub(crate) fn attention_scale(head_dim: usize, yarn: Option<(f64, f64)>) -> f32 {
    let base = (head_dim as f64).powf(-0.5);
    match yarn {
        Some((factor, all_dim)) if all_dim != 0.0 => {
            let m = yarn_mscale(factor, all_dim);
            (base * m * m) as f32
        }
        _ => base as f32,
    }
}

pub(super) fn from_hf(f: &Fields, family: Family, num_layers: usize) -> Result<Deepseek> {
    let mla = MlaConfig {
        q_lora_rank: f.usize_opt("q_lora_rank")?,
        kv_lora_rank: f.usize("kv_lora_rank")?,
        qk_nope_head_dim: f.usize("qk_nope_head_dim")?,
        qk_rope_head_dim: f.usize("qk_rope_head_dim")?,
        v_head_dim: f.usize("v_head_dim")?,
        // transformers builds q_a_layernorm and kv_a_layernorm with RMSNorm's default eps.
        norm_eps: 1e-6,
    };
    let head_dim = mla
        .qk_nope_head_dim
        .checked_add(mla.qk_rope_head_dim)
        .ok_or_else(|| Error::field("qk_nope_head_dim", "with qk_rope_head_dim overflows a size"))?;
    let num_experts = f
        .usize_either("n_routed_experts", "num_local_experts")?
        .ok_or_else(|| Error::field("n_routed_experts", "missing"))?;
    let expert_width = f.usize("moe_intermediate_size")?;
    let groups = |score| -> Result<Option<ExpertGroups>> {
        let count = f.usize_opt("n_group")?.unwrap_or(1);
        let used = f.usize_opt("topk_group")?.unwrap_or(count);
        Ok((count > 1).then_some(ExpertGroups { count, used, score }))
    };
    let scoring = f.str_opt("scoring_func")?;
    let routing = match family {
        // transformers' DeepseekV2TopkRouter: softmax, greedy or group-limited by each group's best;
        // it never renormalises (norm_topk_prob is not read).
        Family::DeepseekV2 => {
            if scoring.is_some_and(|s| s != "softmax") {
                return Err(Error::field("scoring_func", "DeepSeek-V2 routes by softmax only"));
            }
            let groups = match f.str_opt("topk_method")?.unwrap_or("greedy") {
                "greedy" => None,
                "group_limited_greedy" => groups(GroupScore::Max)?,
                other => return Err(Error::field("topk_method", format!("`{other}` is not a DeepSeek-V2 method"))),
            };
            Routing { scoring: Scoring::Softmax, selection_bias: false, groups, renormalize: false, scale: 1.0 }
        }
        // DeepseekV3TopkRouter: sigmoid, a selection bias, groups scored by their two best.
        _ => {
            if scoring.is_some_and(|s| s != "sigmoid") {
                return Err(Error::field("scoring_func", "DeepSeek-V3 routes by sigmoid only"));
            }
            Routing {
                scoring: Scoring::Sigmoid,
                selection_bias: true,
                groups: groups(GroupScore::TopTwoSum)?,
                renormalize: f.bool_or("norm_topk_prob", true)?,
                scale: 1.0,
            }
        }
    };
    let routing = Routing { scale: f.f32_opt("routed_scaling_factor")?.unwrap_or(1.0), ..routing };
    let shared = f.usize_opt("n_shared_experts")?.unwrap_or(0);
    let shared_width =
        shared.checked_mul(expert_width).ok_or_else(|| Error::field("n_shared_experts", "overflows a size"))?;
    let moe = MoeConfig {
        num_experts,
        top_k: f.usize("num_experts_per_tok")?,
        expert_intermediate_size: expert_width,
        routing,
        shared_expert_intermediate_size: (shared > 0).then_some(shared_width),
        shared_expert_gate: false,
    };
    // The first `first_k_dense_replace` layers are dense; DeepSeek's own code also reads
    // `moe_layer_freq` (every released model has 1, the only value transformers supports).
    let first_dense = f.usize_opt("first_k_dense_replace")?.unwrap_or(0);
    let freq = f.usize_opt("moe_layer_freq")?.unwrap_or(1);
    if freq != 1 {
        return Err(Error::field("moe_layer_freq", format!("{freq} is not supported (only 1)")));
    }
    let layer_ffn = (0..num_layers).map(|l| if l < first_dense { FfnKind::Dense } else { FfnKind::Moe }).collect();

    let (rope_scaling, mscale_all_dim) = match yarn_params(f)? {
        None => (None, None),
        Some((yarn, factor, all_dim)) => (Some(yarn), Some((factor, all_dim))),
    };
    Ok(Deepseek {
        attention_scale: attention_scale(head_dim, mscale_all_dim),
        mla,
        head_dim,
        moe,
        layer_ffn,
        rope_scaling,
        // V2 rotates complex pairs; V3 too unless `rope_interleave` is false (then rotate_half).
        interleaved: family == Family::DeepseekV2 || f.bool_or("rope_interleave", true)?,
    })
}

/// YaRN from `rope_parameters` (transformers 5) or `rope_scaling` (hub configs), with the
/// factor and `mscale_all_dim` the softmax scale needs; `None` for plain RoPE.
fn yarn_params(f: &Fields) -> Result<Option<(Yarn, f64, f64)>> {
    let Some((key, params)) = ["rope_parameters", "rope_scaling"].iter().find_map(|k| f.get(k).map(|v| (*k, v))) else {
        return Ok(None);
    };
    let params = params.as_object().ok_or_else(|| Error::field(key, "expected an object"))?;
    let p = Fields(params);
    let kind = p.str_opt("rope_type")?.or(p.str_opt("type")?).unwrap_or("default");
    match kind {
        "default" => return Ok(None),
        "yarn" => {}
        other => return Err(Error::field(key, format!("`{other}` RoPE scaling is not supported (default or yarn)"))),
    }
    let num = |k: &str| -> Result<Option<f64>> {
        match p.get(k) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| Error::field(k, format!("expected a number, found {v}"))),
        }
    };
    let original = p.usize("original_max_position_embeddings")?;
    let factor = match num("factor")? {
        Some(x) => x,
        None => f.usize("max_position_embeddings")? as f64 / original as f64,
    };
    let (mscale, all_dim) = (num("mscale")?.unwrap_or(0.0), num("mscale_all_dim")?.unwrap_or(0.0));
    let attention_factor = match num("attention_factor")? {
        Some(a) => a,
        None if mscale != 0.0 && all_dim != 0.0 => yarn_mscale(factor, mscale) / yarn_mscale(factor, all_dim),
        None => yarn_mscale(factor, 1.0),
    };
    let beta = |k: &str, default: f64| -> Result<f64> { Ok(num(k)?.filter(|&b| b != 0.0).unwrap_or(default)) };
    let yarn = Yarn {
        factor,
        original_max_position_embeddings: original,
        beta_fast: beta("beta_fast", 32.0)?,
        beta_slow: beta("beta_slow", 1.0)?,
        truncate: p.bool_or("truncate", true)?,
        attention_factor: attention_factor as f32,
    };
    Ok(Some((yarn, factor, all_dim)))
}

/// The DeepSeek rules of a GGUF `deepseek2` file: its keys, and where keys are silent its tensors
/// (`has`: whether a tensor is in the file).
pub(super) fn from_gguf(m: &Meta, num_layers: usize, has: &dyn Fn(&str) -> bool) -> Result<Deepseek> {
    let rope = m.usize("rope.dimension_count")?;
    // Absorbed-form files give the per-head sizes as `*_mla` (their key_length is the latent's);
    // older files with a fused attn_kv_b give them as the plain lengths.
    let (qk, v) = match (m.usize_opt("attention.key_length_mla")?, m.usize_opt("attention.value_length_mla")?) {
        (Some(k), Some(v)) => (k, v),
        _ => (m.usize("attention.key_length")?, m.usize("attention.value_length")?),
    };
    if qk <= rope {
        return Err(gguf_err(format!(
            "`{}`: a head of {qk} dims cannot hold {rope} rotary dims and more",
            m.key("attention.key_length_mla")
        )));
    }
    // q's low-rank path exists where its tensors do (llama.cpp does not read the key for the
    // 27-layer "lite" models).
    let q_lora_rank = match has("blk.0.attn_q_a.weight") {
        true => Some(m.usize("attention.q_lora_rank")?),
        false => None,
    };
    let mla = MlaConfig {
        q_lora_rank,
        kv_lora_rank: m.usize("attention.kv_lora_rank")?,
        qk_nope_head_dim: qk - rope,
        qk_rope_head_dim: rope,
        v_head_dim: v,
        norm_eps: m.f32("attention.layer_norm_rms_epsilon")?,
    };
    let expert_width = m.usize("expert_feed_forward_length")?;
    let scoring = match m.usize_opt("expert_gating_func")? {
        None | Some(1) => Scoring::Softmax,
        Some(2) => Scoring::Sigmoid,
        Some(f) => {
            return Err(gguf_err(format!(
                "`{}` {f} is not supported (1 softmax, 2 sigmoid)",
                m.key("expert_gating_func")
            )))
        }
    };
    let first_moe = (0..num_layers).find(|l| has(&format!("blk.{l}.ffn_gate_inp.weight")));
    let selection_bias =
        first_moe.is_some_and(|l| has(&format!("blk.{l}.exp_probs_b.bias")) || has(&format!("blk.{l}.exp_probs_b")));
    // Groups are scored as the model's own code scores them: DeepSeek-V2 (softmax) by a group's
    // best expert, V3 (sigmoid) by its two best. (llama.cpp scores every deepseek2 file's groups
    // by their two best, which differs from DeepSeek-V2's group_limited_greedy.)
    let count = m.usize_opt("expert_group_count")?.unwrap_or(1);
    let groups = (count > 1).then_some(ExpertGroups {
        count,
        used: m.usize_opt("expert_group_used_count")?.unwrap_or(count),
        score: if scoring == Scoring::Softmax { GroupScore::Max } else { GroupScore::TopTwoSum },
    });
    // llama.cpp treats a scale of 0 as none.
    let scale = m.f32_opt("expert_weights_scale")?.filter(|&s| s != 0.0).unwrap_or(1.0);
    let routing = Routing {
        scoring,
        selection_bias,
        groups,
        renormalize: m.bool_opt("expert_weights_norm")?.unwrap_or(false),
        scale,
    };
    let shared = m.usize_opt("expert_shared_count")?.unwrap_or(0);
    let shared_width = shared
        .checked_mul(expert_width)
        .ok_or_else(|| gguf_err(format!("`{}` {shared} overflows a size", m.key("expert_shared_count"))))?;
    let moe = MoeConfig {
        num_experts: m.usize("expert_count")?,
        top_k: m.usize("expert_used_count")?,
        expert_intermediate_size: expert_width,
        routing,
        shared_expert_intermediate_size: (shared > 0).then_some(shared_width),
        shared_expert_gate: false,
    };
    let first_dense = m.usize_opt("leading_dense_block_count")?.unwrap_or(0);
    let layer_ffn = (0..num_layers).map(|l| if l < first_dense { FfnKind::Dense } else { FfnKind::Moe }).collect();

    let (rope_scaling, mscale) = match m.file.get_str(&m.key("rope.scaling.type")) {
        None | Some("none") => (None, None),
        Some("yarn") => {
            let factor = f64::from(m.f32("rope.scaling.factor")?);
            // The converter writes 0.1 * mscale_all_dim; DeepSeek's configs have mscale equal to it,
            // which is what llama.cpp assumes (cos and sin then keep a factor of 1).
            let all_dim = m.f32_opt("rope.scaling.yarn_log_multiplier")?.map_or(0.0, |x| f64::from(x) / 0.1);
            let attention_factor = if all_dim != 0.0 { 1.0 } else { yarn_mscale(factor, 1.0) };
            let beta = |k: &str, d: f64| -> Result<f64> { Ok(m.f32_opt(k)?.map_or(d, f64::from)) };
            let yarn = Yarn {
                factor,
                original_max_position_embeddings: m.usize("rope.scaling.original_context_length")?,
                beta_fast: beta("rope.scaling.yarn_beta_fast", 32.0)?,
                beta_slow: beta("rope.scaling.yarn_beta_slow", 1.0)?,
                truncate: true,
                attention_factor: attention_factor as f32,
            };
            (Some(yarn), Some((factor, all_dim)))
        }
        Some(other) => {
            return Err(gguf_err(format!("`{}` `{other}` is not supported (none or yarn)", m.key("rope.scaling.type"))))
        }
    };
    Ok(Deepseek {
        attention_scale: attention_scale(qk, mscale),
        mla,
        head_dim: qk,
        moe,
        layer_ffn,
        rope_scaling,
        interleaved: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{hf, ModelConfig, RopePairing};
    use serde_json::{json, Value};

    const V2: &str = include_str!("../../tests/fixtures/models/deepseek_v2/config.json");
    const V3: &str = include_str!("../../tests/fixtures/models/deepseek_v3/config.json");

    type Edit = Box<dyn FnOnce(&mut serde_json::Map<String, Value>)>;

    fn with(text: &str, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> crate::Result<ModelConfig> {
        let mut v: Value = serde_json::from_str(text).unwrap();
        edit(v.as_object_mut().unwrap());
        hf::parse(&v.to_string())
    }

    #[test]
    fn reads_the_fixtures_as_transformers_does() {
        let v2 = hf::parse(V2).unwrap();
        let m = v2.mla.as_ref().unwrap();
        assert_eq!(
            (m.q_lora_rank, m.kv_lora_rank, m.qk_nope_head_dim, m.qk_rope_head_dim, m.v_head_dim),
            (None, 32, 32, 16, 24)
        );
        // config.json's head_dim (the rope dims) is not the head: nope + rope is.
        assert_eq!((v2.head_dim, v2.num_kv_heads, v2.rope_pairing), (48, 4, RopePairing::Interleaved));
        assert_eq!(v2.layer_ffn, [FfnKind::Dense, FfnKind::Moe, FfnKind::Moe]);
        let r = &v2.moe.as_ref().unwrap().routing;
        assert_eq!((r.scoring, r.selection_bias, r.renormalize, r.scale), (Scoring::Softmax, false, false, 1.5));
        assert_eq!(r.groups, Some(ExpertGroups { count: 4, used: 2, score: GroupScore::Max }));
        assert_eq!(v2.moe.as_ref().unwrap().shared_expert_intermediate_size, Some(64));
        // 48^-0.5 * (0.1 * 0.707 * ln 4 + 1)^2, as the fixture generator reports it.
        assert_eq!(v2.attention_scale, 0.174_017_44);
        let y = v2.rope_scaling.as_ref().unwrap();
        assert_eq!((y.factor, y.original_max_position_embeddings, y.attention_factor), (4.0, 32, 1.0));

        let v3 = hf::parse(V3).unwrap();
        let r = &v3.moe.as_ref().unwrap().routing;
        assert_eq!((r.scoring, r.selection_bias, r.renormalize, r.scale), (Scoring::Sigmoid, true, true, 2.5));
        assert_eq!(r.groups.unwrap().score, GroupScore::TopTwoSum);
        assert_eq!(v3.mla.as_ref().unwrap().q_lora_rank, Some(96));
        assert!(v3.rope_scaling.is_none());
    }

    #[test]
    fn refuses_what_it_does_not_run_by_name() {
        let cases: [(&str, Edit, &str); 6] = [
            (
                V2,
                Box::new(|o| drop(o.insert("moe_layer_freq".into(), json!(2)))),
                "`moe_layer_freq`: 2 is not supported",
            ),
            (V3, Box::new(|o| drop(o.insert("scoring_func".into(), json!("softmax")))), "`scoring_func`"),
            (V2, Box::new(|o| drop(o.insert("topk_method".into(), json!("noaux")))), "`topk_method`: `noaux`"),
            (
                V2,
                Box::new(|o| drop(o.insert("n_group".into(), json!(3)))),
                "`n_group`: 3 does not divide the 8 experts",
            ),
            (
                V2,
                Box::new(|o| drop(o.insert("topk_group".into(), json!(1)))),
                "`topk_group`: 1 groups of 2 cannot supply 3",
            ),
            (
                V2,
                Box::new(|o| {
                    drop(o["rope_parameters"].as_object_mut().unwrap().insert("rope_type".into(), json!("longrope")))
                }),
                "`longrope` RoPE scaling is not supported",
            ),
        ];
        for (text, edit, want) in cases {
            let err = with(text, edit).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        let err = with(V2, |o| drop(o.insert("kv_lora_rank".into(), json!(0)))).unwrap_err().to_string();
        assert!(err.contains("`kv_lora_rank`: must be positive"), "{err}");
    }
}
