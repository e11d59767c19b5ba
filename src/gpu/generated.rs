//! [`GeneratedFeed`]: a preset's weights written on the device from a seed, INT4 straight into
//! the buffers the model binds (`shaders/generate_int4.wgsl`): no file, no host copy, so a 15B
//! model loads in seconds wherever it fits. Norm weights are 1, biases 0.

use super::feed::{GpuFfn, GpuHead, GpuLayerWeights, GpuLinear, GpuMlp, GpuMoe, WeightFeed};
use super::kernels::generate_int4;
use super::matrix::{GpuMatrix, MatrixLayout};
use super::Gpu;
use crate::config::presets::group_for;
use crate::config::{FfnKind, MlaConfig, ModelConfig};
use crate::quant::generated::int4_matrix;
use crate::quant::packed::Format;
use crate::weights::model::{FfnWeights, LayerWeights, LinearWeights, MlpWeights, ModelWeights, MoeWeights};
use crate::weights::tree::{Attention, Gqa, Mla};
use crate::{Error, Result};

/// Matrix ids: the embeddings and the output projection, then 16 per layer by role.
const EMBED: u32 = 0;
const LM_HEAD: u32 = 1;
const Q: u32 = 0;
const K: u32 = 1;
const V: u32 = 2;
const O: u32 = 3;
const ROUTER: u32 = 4;
const GATE: u32 = 5;
const UP: u32 = 6;
const DOWN: u32 = 7;
const SHARED_GATE: u32 = 8;
const SHARED_UP: u32 = 9;
const SHARED_DOWN: u32 = 10;
const SHARED_EXPERT_GATE: u32 = 11;
// MLA (q_nope is Q, kv_a K, v_b V).
const Q_ROPE: u32 = 12;
const Q_A: u32 = 13;
const K_B: u32 = 14;

/// An MLA layer's matrices: (role, rows, cols, units kept whole) of q_a (if any), q_nope, q_rope,
/// kv_a, k_b, v_b.
pub(crate) fn mla_matrices(c: &ModelConfig, m: &MlaConfig) -> (Option<[usize; 4]>, [[usize; 4]; 5]) {
    let (h, n, r) = (c.hidden_size, c.num_heads, m.kv_lora_rank);
    let q_in = m.q_lora_rank.unwrap_or(h);
    let q_a = m.q_lora_rank.map(|ql| [Q_A as usize, ql, h, 1]);
    let rest = [
        [Q as usize, n * m.qk_nope_head_dim, q_in, 1],
        [Q_ROPE as usize, n * m.qk_rope_head_dim, q_in, 1],
        [K as usize, r + m.qk_rope_head_dim, h, 1],
        [K_B as usize, n * r, m.qk_nope_head_dim, n],
        [V as usize, n * m.v_head_dim, r, n],
    ];
    (q_a, rest)
}

/// An MLA tree from its matrices in [`mla_matrices`]' order and vectors of ones.
fn mla_tree<M, V>(
    c: &ModelConfig,
    m: &MlaConfig,
    q_a: Option<M>,
    mut rest: Vec<M>,
    ones: impl Fn(usize) -> V,
) -> Mla<M, V> {
    let mut take = || rest.remove(0);
    let (q_nope, q_rope, kv_a, k_b, v_b) = (take(), take(), take(), take(), take());
    Mla {
        heads: c.num_heads,
        q_a: q_a.map(|w| (w, ones(m.q_lora_rank.unwrap_or(0)))),
        q_nope,
        q_rope,
        kv_a,
        kv_norm: ones(m.kv_lora_rank),
        k_b,
        v_b,
    }
}

/// The id of matrix `role` of layer `l`: what the CPU twin (`quant::generated::int4_matrix`)
/// takes to give the same matrix.
pub fn matrix_id(l: usize, role: u32) -> u32 {
    16 * (l as u32 + 1) + role
}

/// The id of the embeddings (`false`) or of the output projection (`true`).
pub fn head_id(output: bool) -> u32 {
    if output {
        LM_HEAD
    } else {
        EMBED
    }
}

/// Seeded INT4 weights (groups of `group`) for `config`, generated part by part on the device.
pub struct GeneratedFeed<'a> {
    config: &'a ModelConfig,
    group: usize,
    seed: u32,
}

impl<'a> GeneratedFeed<'a> {
    pub fn new(config: &'a ModelConfig, group: usize, seed: u32) -> Self {
        GeneratedFeed { config, group, seed }
    }

    /// A `[rows, cols]` matrix split only at multiples of `unit` rows, generated as matrix `id`.
    fn matrix(&self, gpu: &Gpu, rows: usize, cols: usize, unit: usize, id: u32) -> Result<GpuMatrix> {
        let format = Format::Int4 { group: group_for(cols, self.group), wide_scales: false };
        let layout = MatrixLayout::new(rows, cols, format, unit, gpu.max_binding_bytes())?;
        let m = GpuMatrix::zeroed(gpu, &layout);
        super::submit(gpu, &generate_int4::ops(gpu, &m, self.seed, id)?.iter().collect::<Vec<_>>());
        Ok(m)
    }

    fn linear(&self, gpu: &Gpu, rows: usize, cols: usize, id: u32, bias: bool) -> Result<GpuLinear> {
        Ok(GpuLinear {
            weight: self.matrix(gpu, rows, cols, 1, id)?,
            bias: bias.then(|| gpu.storage_zeroed("bias", 4 * rows as u64)),
        })
    }

    /// `n` SwiGLU FFNs of `width` stacked (split only between them), as matrices `ids`.
    fn mlp(&self, gpu: &Gpu, n: usize, width: usize, ids: [u32; 3]) -> Result<GpuMlp> {
        let h = self.config.hidden_size;
        Ok(GpuMlp {
            gate: self.matrix(gpu, n * width, h, width, ids[0])?,
            up: self.matrix(gpu, n * width, h, width, ids[1])?,
            down: self.matrix(gpu, n * h, width, h, ids[2])?,
        })
    }
}

fn ones(gpu: &Gpu, n: usize) -> wgpu::Buffer {
    gpu.storage("norm", &vec![1.0f32; n])
}

impl WeightFeed for GeneratedFeed<'_> {
    fn embed(&mut self, gpu: &Gpu) -> Result<GpuMatrix> {
        self.matrix(gpu, self.config.vocab_size, self.config.hidden_size, 1, head_id(false))
    }

    fn layer(&mut self, gpu: &Gpu, l: usize) -> Result<GpuLayerWeights> {
        let c = self.config;
        let kind = *c.layer_ffn.get(l).ok_or_else(|| Error::Gpu(format!("no layer {l}")))?;
        let (h, q, kv, bias) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.qkv_bias);
        let id = |role| matrix_id(l, role);
        let ffn = match (kind, &c.moe) {
            (FfnKind::Moe, Some(m)) => {
                let shared = m.shared_expert_intermediate_size;
                GpuFfn::Moe(Box::new(GpuMoe {
                    router: self.matrix(gpu, m.num_experts, h, 1, id(ROUTER))?,
                    router_bias: m
                        .routing
                        .selection_bias
                        .then(|| gpu.storage_zeroed("router bias", 4 * m.num_experts as u64)),
                    experts: self.mlp(gpu, m.num_experts, m.expert_intermediate_size, [id(GATE), id(UP), id(DOWN)])?,
                    shared: shared
                        .map(|s| self.mlp(gpu, 1, s, [id(SHARED_GATE), id(SHARED_UP), id(SHARED_DOWN)]))
                        .transpose()?,
                    shared_gate: match shared.is_some() && m.shared_expert_gate {
                        true => Some(self.matrix(gpu, 1, h, 1, id(SHARED_EXPERT_GATE))?),
                        false => None,
                    },
                }))
            }
            _ => GpuFfn::Dense(self.mlp(gpu, 1, c.intermediate_size, [id(GATE), id(UP), id(DOWN)])?),
        };
        let attn = match &c.mla {
            Some(m) => {
                let (q_a, rest) = mla_matrices(c, m);
                let mut gen =
                    |[role, rows, cols, unit]: [usize; 4]| self.matrix(gpu, rows, cols, rows / unit, id(role as u32));
                let q_a = q_a.map(&mut gen).transpose()?;
                let rest = rest.into_iter().map(gen).collect::<Result<Vec<_>>>()?;
                Attention::Mla(Box::new(mla_tree(c, m, q_a, rest, |n| ones(gpu, n))))
            }
            None => Attention::Gqa(Gqa {
                q: self.linear(gpu, q, h, id(Q), bias)?,
                k: self.linear(gpu, kv, h, id(K), bias)?,
                v: self.linear(gpu, kv, h, id(V), bias)?,
                q_norm: c.qk_norm_dims().map(|(qn, _)| ones(gpu, qn)),
                k_norm: c.qk_norm_dims().map(|(_, kn)| ones(gpu, kn)),
            }),
        };
        Ok(GpuLayerWeights {
            attn_norm: ones(gpu, h),
            attn,
            o: self.linear(gpu, h, c.attn_out_dim(), id(O), false)?,
            ffn_norm: ones(gpu, h),
            ffn,
        })
    }

    fn head(&mut self, gpu: &Gpu) -> Result<GpuHead> {
        let c = self.config;
        let lm_head = match c.tie_word_embeddings {
            true => None,
            false => Some(self.matrix(gpu, c.vocab_size, c.hidden_size, 1, head_id(true))?),
        };
        // Generation is done when the model is: wait for it.
        gpu.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("device lost while generating weights: {e}")))?;
        Ok(GpuHead { final_norm: vec![1.0; c.hidden_size], lm_head })
    }
}

/// The CPU twin of [`GeneratedFeed`]: the same model's weights on the host (for tests and the
/// CPU reference; a few MB models only: every matrix is built in memory).
pub fn host_weights(c: &ModelConfig, group: usize, seed: u32) -> Result<ModelWeights> {
    let m = |rows, cols, id| int4_matrix(rows, cols, group_for(cols, group), seed, id);
    let h = c.hidden_size;
    let linear = |rows, cols, id, bias: bool| -> Result<LinearWeights> {
        Ok(LinearWeights { weight: m(rows, cols, id)?, bias: bias.then(|| vec![0.0; rows]) })
    };
    let mlp = |n: usize, width: usize, ids: [u32; 3]| -> Result<MlpWeights> {
        Ok(MlpWeights { gate: m(n * width, h, ids[0])?, up: m(n * width, h, ids[1])?, down: m(n * h, width, ids[2])? })
    };
    let mut layers = Vec::with_capacity(c.num_layers);
    for (l, kind) in c.layer_ffn.iter().enumerate() {
        let id = |role| matrix_id(l, role);
        let ffn = match (kind, &c.moe) {
            (FfnKind::Moe, Some(moe)) => {
                let shared = moe.shared_expert_intermediate_size;
                FfnWeights::Moe(Box::new(MoeWeights {
                    router: m(moe.num_experts, h, id(ROUTER))?,
                    router_bias: moe.routing.selection_bias.then(|| vec![0.0; moe.num_experts]),
                    experts: mlp(moe.num_experts, moe.expert_intermediate_size, [id(GATE), id(UP), id(DOWN)])?,
                    shared: shared.map(|s| mlp(1, s, [id(SHARED_GATE), id(SHARED_UP), id(SHARED_DOWN)])).transpose()?,
                    shared_gate: match shared.is_some() && moe.shared_expert_gate {
                        true => Some(m(1, h, id(SHARED_EXPERT_GATE))?),
                        false => None,
                    },
                }))
            }
            _ => FfnWeights::Dense(mlp(1, c.intermediate_size, [id(GATE), id(UP), id(DOWN)])?),
        };
        let attn = match &c.mla {
            Some(mla) => {
                let (q_a, rest) = mla_matrices(c, mla);
                let gen = |[role, rows, cols, _]: [usize; 4]| m(rows, cols, id(role as u32));
                let q_a = q_a.map(gen).transpose()?;
                let rest = rest.into_iter().map(gen).collect::<Result<Vec<_>>>()?;
                Attention::Mla(Box::new(mla_tree(c, mla, q_a, rest, |n| vec![1.0; n])))
            }
            None => {
                let (q_norm, k_norm) = match c.qk_norm_dims() {
                    None => (None, None),
                    Some((qn, kn)) => (Some(vec![1.0; qn]), Some(vec![1.0; kn])),
                };
                Attention::Gqa(Gqa {
                    q: linear(c.q_dim(), h, id(Q), c.qkv_bias)?,
                    k: linear(c.kv_dim(), h, id(K), c.qkv_bias)?,
                    v: linear(c.kv_dim(), h, id(V), c.qkv_bias)?,
                    q_norm,
                    k_norm,
                })
            }
        };
        layers.push(LayerWeights {
            attn_norm: vec![1.0; h],
            attn,
            o: linear(h, c.attn_out_dim(), id(O), false)?,
            ffn_norm: vec![1.0; h],
            ffn,
        });
    }
    Ok(ModelWeights {
        embed: m(c.vocab_size, h, head_id(false))?,
        layers,
        final_norm: vec![1.0; h],
        lm_head: (!c.tie_word_embeddings).then(|| m(c.vocab_size, h, head_id(true))).transpose()?,
    })
}
