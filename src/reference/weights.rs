//! The model's weights in f32, as the reference forward pass reads them: the packed weights of
//! [`ModelWeights`], dequantized.

use crate::ops::Linear;
use crate::quant::packed::PackedMatrix;
use crate::weights::model::{FfnWeights, LinearWeights, MlpWeights, ModelWeights};

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

impl Weights {
    /// The f32 weights of packed ones.
    pub fn from_packed(w: &ModelWeights) -> Weights {
        let linear = |l: &LinearWeights| Linear { bias: l.bias.clone(), ..dense(&l.weight) };
        let mlp = |m: &MlpWeights| Mlp { gate: dense(&m.gate), up: dense(&m.up), down: dense(&m.down) };
        let layers = w
            .layers
            .iter()
            .map(|l| Layer {
                attn_norm: l.attn_norm.clone(),
                q: linear(&l.q),
                k: linear(&l.k),
                v: linear(&l.v),
                o: linear(&l.o),
                q_norm: l.q_norm.clone(),
                k_norm: l.k_norm.clone(),
                ffn_norm: l.ffn_norm.clone(),
                ffn: match &l.ffn {
                    FfnWeights::Dense(m) => Ffn::Dense(mlp(m)),
                    FfnWeights::Moe(m) => Ffn::Moe(Moe {
                        router: dense(&m.router),
                        experts: unstack(&m.experts, m.router.rows),
                        shared: m.shared.as_ref().map(mlp),
                        shared_gate: m.shared_gate.as_ref().map(dense),
                    }),
                },
            })
            .collect();
        Weights { embed: dense(&w.embed), layers, final_norm: w.final_norm.clone(), lm_head: dense(w.output()) }
    }
}

/// A packed matrix dequantized into a bias-free linear layer.
fn dense(m: &PackedMatrix) -> Linear {
    Linear { out_dim: m.rows, in_dim: m.cols, weight: m.dequantize(), bias: None }
}

/// Per-expert FFNs from stacked ones.
fn unstack(stacked: &MlpWeights, experts: usize) -> Vec<Mlp> {
    let (gate, up, down) = (dense(&stacked.gate), dense(&stacked.up), dense(&stacked.down));
    let part = |l: &Linear, e: usize| {
        let rows = l.out_dim / experts;
        Linear {
            out_dim: rows,
            in_dim: l.in_dim,
            weight: l.weight[e * rows * l.in_dim..(e + 1) * rows * l.in_dim].to_vec(),
            bias: None,
        }
    };
    (0..experts).map(|e| Mlp { gate: part(&gate, e), up: part(&up, e), down: part(&down, e) }).collect()
}
