//! The model's weights in f32, as the reference forward pass reads them, and their loading
//! from any [`TensorSource`] under either naming scheme.

use super::ops::Linear;
use crate::config::{FfnKind, ModelConfig, QkNorm};
use crate::weights::names::{ExpertLayout, Names};
use crate::weights::{Tensor, TensorSource};
use crate::{Error, Result};

/// A SwiGLU FFN: `down(silu(gate x) * up x)`.
#[derive(Debug, Clone)]
pub struct Mlp {
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

#[derive(Debug, Clone)]
pub struct Moe {
    /// `[num_experts, hidden]`: one router logit per expert.
    pub router: Linear,
    pub experts: Vec<Mlp>,
    pub shared: Option<Mlp>,
    /// `[1, hidden]`: the shared expert's sigmoid gate.
    pub shared_gate: Option<Linear>,
}

#[derive(Debug, Clone)]
pub enum Ffn {
    Dense(Mlp),
    Moe(Moe),
}

#[derive(Debug, Clone)]
pub struct Layer {
    pub attn_norm: Vec<f32>,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub ffn: Ffn,
}

#[derive(Debug, Clone)]
pub struct Weights {
    /// `[vocab, hidden]`.
    pub embed: Linear,
    pub layers: Vec<Layer>,
    pub final_norm: Vec<f32>,
    /// `[vocab, hidden]`; a copy of `embed` when embeddings are tied.
    pub lm_head: Linear,
}

/// Reads tensors by name and checks their shapes against the config.
struct Loader<'a> {
    src: &'a dyn TensorSource,
}

impl Loader<'_> {
    /// `base.weight`, or `base` itself (transformers 5 stores fused experts as bare parameters).
    fn find(&self, base: &str) -> Option<String> {
        [format!("{base}.weight"), base.to_string()].into_iter().find(|n| self.src.contains(n))
    }

    fn tensor(&self, base: &str, shape: &[usize]) -> Result<Tensor> {
        let name = self.find(base).ok_or_else(|| Error::MissingTensor(format!("{base}.weight")))?;
        let t = self.src.load_f32(&name)?;
        if t.shape != shape {
            return Err(Error::tensor(name, format!("shape {:?}, expected {:?} from the config", t.shape, shape)));
        }
        Ok(t)
    }

    fn vector(&self, base: &str, len: usize) -> Result<Vec<f32>> {
        Ok(self.tensor(base, &[len])?.data)
    }

    /// A linear layer; its bias is loaded when `bias` says the family has one, and must exist then.
    fn linear(&self, base: &str, out_dim: usize, in_dim: usize, bias: bool) -> Result<Linear> {
        let weight = self.tensor(base, &[out_dim, in_dim])?.data;
        let bias_name = format!("{base}.bias");
        let bias = match bias {
            true => Some(self.tensor_exact(&bias_name, &[out_dim])?),
            false => None,
        };
        Ok(Linear { out_dim, in_dim, weight, bias })
    }

    fn tensor_exact(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self.src.load_f32(name)?;
        if t.shape != shape {
            return Err(Error::tensor(name, format!("shape {:?}, expected {:?}", t.shape, shape)));
        }
        Ok(t.data)
    }

    /// The shared expert's gate: `[1, hidden]`, or `[hidden]` as older GGUF files store it.
    fn shared_expert_gate(&self, base: &str, hidden: usize) -> Result<Linear> {
        let name = self.find(base).ok_or_else(|| Error::MissingTensor(format!("{base}.weight")))?;
        match self.src.shape(&name).as_deref() {
            Some([n]) if *n == hidden => {
                Ok(Linear { out_dim: 1, in_dim: hidden, weight: self.vector(base, hidden)?, bias: None })
            }
            _ => self.linear(base, 1, hidden, false),
        }
    }

    fn mlp(&self, gate: &str, up: &str, down: &str, hidden: usize, inter: usize) -> Result<Mlp> {
        Ok(Mlp {
            gate: self.linear(gate, inter, hidden, false)?,
            up: self.linear(up, inter, hidden, false)?,
            down: self.linear(down, hidden, inter, false)?,
        })
    }

    fn experts(&self, layouts: &[ExpertLayout], n: usize, hidden: usize, inter: usize) -> Result<Vec<Mlp>> {
        let present = |l: &&ExpertLayout| match l {
            ExpertLayout::PerExpert { gate, .. } => self.find(&gate[0]).is_some(),
            ExpertLayout::Stacked { gate, .. } => self.find(gate).is_some(),
            ExpertLayout::FusedGateUp { gate_up, .. } => self.find(gate_up).is_some(),
        };
        let layout = layouts.iter().find(present).unwrap_or(&layouts[0]);
        let split = |t: Tensor, rows: usize, cols: usize| -> Vec<Linear> {
            t.data
                .chunks_exact(rows * cols)
                .map(|w| Linear { out_dim: rows, in_dim: cols, weight: w.to_vec(), bias: None })
                .collect()
        };
        match layout {
            ExpertLayout::PerExpert { gate, up, down } => {
                (0..n).map(|e| self.mlp(&gate[e], &up[e], &down[e], hidden, inter)).collect()
            }
            ExpertLayout::Stacked { gate, up, down } => {
                let gate = split(self.tensor(gate, &[n, inter, hidden])?, inter, hidden);
                let up = split(self.tensor(up, &[n, inter, hidden])?, inter, hidden);
                let down = split(self.tensor(down, &[n, hidden, inter])?, hidden, inter);
                Ok(gate.into_iter().zip(up).zip(down).map(|((gate, up), down)| Mlp { gate, up, down }).collect())
            }
            ExpertLayout::FusedGateUp { gate_up, down } => {
                let gate_up = split(self.tensor(gate_up, &[n, 2 * inter, hidden])?, 2 * inter, hidden);
                let down = split(self.tensor(down, &[n, hidden, inter])?, hidden, inter);
                Ok(gate_up
                    .into_iter()
                    .zip(down)
                    .map(|(gu, down)| {
                        let (g, u) = gu.weight.split_at(inter * hidden);
                        let half =
                            |w: &[f32]| Linear { out_dim: inter, in_dim: hidden, weight: w.to_vec(), bias: None };
                        Mlp { gate: half(g), up: half(u), down }
                    })
                    .collect())
            }
        }
    }
}

impl Weights {
    /// Loads every weight named by `names`, checking each shape against `config`.
    pub fn load(config: &ModelConfig, src: &dyn TensorSource, names: &Names) -> Result<Weights> {
        let ld = Loader { src };
        let (h, vocab) = (config.hidden_size, config.vocab_size);
        let embed = ld.linear(names.embed(), vocab, h, false)?;
        let lm_head = match config.tie_word_embeddings {
            true => embed.clone(),
            false => ld.linear(names.lm_head(), vocab, h, false)?,
        };
        let mut layers = Vec::with_capacity(config.num_layers);
        for (l, kind) in config.layer_ffn.iter().enumerate() {
            let n = names.layer(l);
            let (q_dim, kv_dim) = (config.q_dim(), config.kv_dim());
            let (q_norm, k_norm) = match config.qk_norm {
                QkNorm::None => (None, None),
                QkNorm::PerHead => {
                    (Some(ld.vector(&n.q_norm, config.head_dim)?), Some(ld.vector(&n.k_norm, config.head_dim)?))
                }
                QkNorm::Whole => (Some(ld.vector(&n.q_norm, q_dim)?), Some(ld.vector(&n.k_norm, kv_dim)?)),
            };
            let o_bias = src.contains(&format!("{}.bias", n.o));
            let ffn = match (kind, &config.moe) {
                (FfnKind::Moe, Some(m)) => {
                    let (shared, shared_gate) = match m.shared_expert_intermediate_size {
                        Some(s) => (
                            Some(ld.mlp(&n.shared_gate, &n.shared_up, &n.shared_down, h, s)?),
                            match m.shared_expert_gate {
                                true => Some(ld.shared_expert_gate(&n.shared_expert_gate, h)?),
                                false => None,
                            },
                        ),
                        None => (None, None),
                    };
                    Ffn::Moe(Moe {
                        router: ld.linear(&n.router, m.num_experts, h, false)?,
                        experts: ld.experts(
                            &names.expert_layouts(l, m.num_experts),
                            m.num_experts,
                            h,
                            m.expert_intermediate_size,
                        )?,
                        shared,
                        shared_gate,
                    })
                }
                _ => Ffn::Dense(ld.mlp(&n.gate, &n.up, &n.down, h, config.intermediate_size)?),
            };
            layers.push(Layer {
                attn_norm: ld.vector(&n.attn_norm, h)?,
                q: ld.linear(&n.q, q_dim, h, config.qkv_bias)?,
                k: ld.linear(&n.k, kv_dim, h, config.qkv_bias)?,
                v: ld.linear(&n.v, kv_dim, h, config.qkv_bias)?,
                o: ld.linear(&n.o, h, q_dim, o_bias)?,
                q_norm,
                k_norm,
                ffn_norm: ld.vector(&n.ffn_norm, h)?,
                ffn,
            });
        }
        Ok(Weights { embed, layers, final_norm: ld.vector(names.final_norm(), h)?, lm_head })
    }
}
