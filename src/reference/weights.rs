//! The model's weights in f32, as the reference forward pass reads them: the weight tree
//! (`weights::tree`) of [`ModelWeights`], each matrix dequantized. Routed experts stay
//! stacked; the pass reads expert `e`'s rows.

use crate::ops::Matrix;
use crate::quant::packed::PackedMatrix;
use crate::weights::model::ModelWeights;
use crate::weights::tree::{Ffn, Layer, Linear, Mlp, Model, Moe};

pub type RefLinear = Linear<Matrix, Vec<f32>>;
pub type RefMlp = Mlp<Matrix>;
pub type RefMoe = Moe<Matrix, Vec<f32>>;
pub type RefFfn = Ffn<Matrix, Vec<f32>>;
pub type RefLayer = Layer<Matrix, Vec<f32>>;
/// Every weight of the model in f32.
pub type Weights = Model<Matrix, Vec<f32>>;

impl Weights {
    /// The f32 weights of packed ones.
    pub fn from_packed(w: &ModelWeights) -> Weights {
        let layers = w
            .layers
            .iter()
            .map(|l| {
                let experts = match &l.ffn {
                    Ffn::Moe(m) => m.router.rows,
                    Ffn::Dense(_) => 1,
                };
                l.map(experts, dense, Vec::clone)
            })
            .collect();
        Weights {
            embed: dense(&w.embed),
            layers,
            final_norm: w.final_norm.clone(),
            lm_head: w.lm_head.as_ref().map(dense),
        }
    }
}

impl RefLinear {
    /// `y = W x + b` for each row of `x`.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut y = self.weight.forward(x);
        if let Some(b) = &self.bias {
            for row in y.chunks_exact_mut(b.len()) {
                row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
            }
        }
        y
    }
}

/// A packed matrix dequantized.
fn dense(m: &PackedMatrix) -> Matrix {
    Matrix { rows: m.rows, cols: m.cols, data: m.dequantize() }
}
