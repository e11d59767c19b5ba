//! The operations of the forward pass, one function each, on plain f32 slices.
//! Each is the CPU twin of a GPU kernel and the definition that kernel is held to. Below both
//! engines: `reference` composes these into the forward pass, and `gpu` uses the few that set up
//! a kernel's constants (RoPE frequencies) or twin its routing.

use crate::config::{GroupScore, ModelConfig, Routing, Scoring, Yarn};

/// A dense row-major matrix `[rows, cols]`.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    /// `y[t] = W x[t]` for each of the T rows of `x` (`[T, cols]` -> `[T, rows]`).
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        self.forward_rows(x, 0..self.rows)
    }

    /// [`Matrix::forward`] with only the weight rows `rows` (one expert of a stacked matrix):
    /// `[T, cols]` -> `[T, rows.len()]`. Weight rows are the outer loop so each is read once
    /// per call, whatever T is.
    pub fn forward_rows(&self, x: &[f32], rows: std::ops::Range<usize>) -> Vec<f32> {
        let (t_count, n) = (x.len() / self.cols, rows.len());
        let mut y = vec![0.0; t_count * n];
        let weights = &self.data[rows.start * self.cols..rows.end * self.cols];
        for (o, w_row) in weights.chunks_exact(self.cols).enumerate() {
            for t in 0..t_count {
                y[t * n + o] = dot(w_row, &x[t * self.cols..(t + 1) * self.cols]);
            }
        }
        y
    }
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums: deterministic, and close to what a vectorised reduction rounds to.
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for j in 0..8 {
            acc[j] += a[i * 8 + j] * b[i * 8 + j];
        }
    }
    let mut sum = 0.0;
    for i in chunks * 8..a.len() {
        sum += a[i] * b[i];
    }
    sum + acc.iter().sum::<f32>()
}

/// RMSNorm of each `weight.len()`-wide row of `x`, in place: `x / sqrt(mean(x^2) + eps) * w`.
pub fn rms_norm(x: &mut [f32], weight: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(weight.len()) {
        let mean_square = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
        let inv = 1.0 / (mean_square + eps).sqrt();
        for (v, w) in row.iter_mut().zip(weight) {
            *v = *v * inv * w;
        }
    }
}

/// RoPE tables for one position: `(cos, sin)` of `pos * theta^(-2i/d)`, i < d/2, in f32 as
/// transformers computes them.
pub fn rope_angles(pos: usize, head_dim: usize, theta: f32) -> (Vec<f32>, Vec<f32>) {
    (0..head_dim / 2)
        .map(|i| {
            let inv_freq = 1.0 / theta.powf((2 * i) as f32 / head_dim as f32);
            let angle = pos as f32 * inv_freq;
            (angle.cos(), angle.sin())
        })
        .unzip()
}

/// Rotates one head in place. `interleaved`: pairs (2i, 2i+1); otherwise (i, i + d/2).
pub fn rope(head: &mut [f32], cos: &[f32], sin: &[f32], interleaved: bool) {
    let half = head.len() / 2;
    for i in 0..half {
        let (a, b) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0 * cos[i] - x1 * sin[i];
        head[b] = x1 * cos[i] + x0 * sin[i];
    }
}

/// Softmax in place, max-subtracted.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// A router's choice for one token: `(experts, weights)` in top-k order, from its `logits` (one
/// per expert) and, where the routing has one, the per-expert selection `bias`.
/// Scores are softmax or sigmoid; the bias joins them only to choose; group-limited routing keeps
/// the best `used` groups (scored by their best, or their two best) and takes the top-k from
/// them; the chosen scores are renormalised if asked and scaled. The GPU twin is `moe_route.wgsl`.
pub fn route(logits: &[f32], bias: Option<&[f32]>, top: usize, r: &Routing) -> (Vec<usize>, Vec<f32>) {
    let mut scores = logits.to_vec();
    match r.scoring {
        Scoring::Softmax => softmax(&mut scores),
        Scoring::Sigmoid => scores.iter_mut().for_each(|v| *v = sigmoid(*v)),
    }
    let mut choice: Vec<f32> = match bias {
        Some(b) => scores.iter().zip(b).map(|(s, b)| s + b).collect(),
        None => scores.clone(),
    };
    if let Some(g) = r.groups {
        let size = choice.len() / g.count;
        let group_scores: Vec<f32> = choice
            .chunks_exact(size)
            .map(|group| {
                let best = top_k(group, 2.min(size));
                match g.score {
                    GroupScore::Max => group[best[0]],
                    GroupScore::TopTwoSum => best.iter().map(|&e| group[e]).sum(),
                }
            })
            .collect();
        let kept = top_k(&group_scores, g.used);
        for (gi, group) in choice.chunks_exact_mut(size).enumerate() {
            if !kept.contains(&gi) {
                group.fill(f32::NEG_INFINITY);
            }
        }
    }
    let chosen = top_k(&choice, top);
    let mut weights: Vec<f32> = chosen.iter().map(|&e| scores[e]).collect();
    if r.renormalize {
        let total: f32 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= total);
    }
    weights.iter_mut().for_each(|w| *w *= r.scale);
    (chosen, weights)
}

/// Indices of the k largest values, largest first; ties go to the lower index.
pub fn top_k(x: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[b].total_cmp(&x[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

/// Attention of one query head over `len` cached positions.
/// `keys`/`values` hold `len` rows of `stride` floats; this head's slice starts at `offset`.
pub fn attend(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    len: usize,
    stride: usize,
    offset: usize,
    scale: f32,
) -> Vec<f32> {
    let rows = |at: usize| Rows { stride, offset: at, width: q.len() };
    attend_rows(q, keys, rows(offset), values, rows(offset), len, scale)
}

/// Where one head's slice of each cached row is: `width` floats at `offset` in rows of `stride`.
#[derive(Clone, Copy)]
pub struct Rows {
    pub stride: usize,
    pub offset: usize,
    pub width: usize,
}

/// [`attend`] with keys and values of their own layouts (MLA: values narrower than keys).
pub fn attend_rows(q: &[f32], keys: &[f32], k: Rows, values: &[f32], v: Rows, len: usize, scale: f32) -> Vec<f32> {
    let mut scores: Vec<f32> =
        (0..len).map(|j| dot(q, &keys[j * k.stride + k.offset..j * k.stride + k.offset + k.width]) * scale).collect();
    softmax(&mut scores);
    let mut out = vec![0.0; v.width];
    for (j, p) in scores.iter().enumerate() {
        let v = &values[j * v.stride + v.offset..j * v.stride + v.offset + v.width];
        for (o, x) in out.iter_mut().zip(v) {
            *o += p * x;
        }
    }
    out
}

/// Token embeddings: row `id` of `table` (`[vocab, cols]` row-major) times `multiplier`, for
/// each of `ids`, giving `[ids.len(), cols]`. An id outside the table gives a row of zeros (the
/// rule of the GPU kernel, which must not read out of bounds; hosts reject such ids earlier).
pub fn embed(table: &[f32], cols: usize, ids: &[u32], multiplier: f32) -> Vec<f32> {
    let vocab = table.len() / cols.max(1);
    let mut out = Vec::with_capacity(ids.len() * cols);
    for &id in ids {
        match (id as usize) < vocab {
            true => out.extend(table[id as usize * cols..(id as usize + 1) * cols].iter().map(|v| v * multiplier)),
            false => out.resize(out.len() + cols, 0.0),
        }
    }
    out
}

/// RoPE inverse frequencies `1 / theta^(2i/d)`, i < d/2, in f32 exactly as [`rope_angles`]
/// computes them (so `pos as f32 * inv_freq[i]` is bit for bit its angle).
pub fn rope_inv_freq(head_dim: usize, theta: f32) -> Vec<f32> {
    (0..head_dim / 2).map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32)).collect()
}

/// RoPE's inverse frequencies for `config` (plain or YaRN) and the factor on cos and sin.
pub fn rope_frequencies(config: &ModelConfig) -> (Vec<f32>, f32) {
    match &config.rope_scaling {
        None => (rope_inv_freq(config.rope_dim(), config.rope_theta), 1.0),
        Some(y) => (yarn_inv_freq(config.rope_dim(), config.rope_theta, y), y.attention_factor),
    }
}

/// YaRN's inverse frequencies, in f32 step for step as transformers' `_compute_yarn_parameters`
/// (the correction range in f64 as Python computes it): interpolated `1 / (factor theta^(2i/d))`
/// and extrapolated `1 / theta^(2i/d)` blended by a linear ramp over the dims between the
/// `beta_fast` and `beta_slow` rotation counts of the original context.
pub fn yarn_inv_freq(dim: usize, theta: f32, y: &Yarn) -> Vec<f32> {
    let base = f64::from(theta);
    let correction = |rotations: f64| {
        dim as f64 * (y.original_max_position_embeddings as f64 / (rotations * 2.0 * std::f64::consts::PI)).ln()
            / (2.0 * base.ln())
    };
    let (mut low, mut high) = (correction(y.beta_fast), correction(y.beta_slow));
    if y.truncate {
        (low, high) = (low.floor(), high.ceil());
    }
    let (low, mut high) = (low.max(0.0), high.min(dim as f64 - 1.0));
    if low == high {
        high += 0.001;
    }
    let (min, span) = (low as f32, (high - low) as f32);
    let factor = y.factor as f32;
    (0..dim / 2)
        .map(|i| {
            let pos_freq = theta.powf((2 * i) as f32 / dim as f32);
            let (extrapolated, interpolated) = (1.0 / pos_freq, 1.0 / (factor * pos_freq));
            let ramp = ((i as f32 - min) / span).clamp(0.0, 1.0);
            let keep = 1.0 - ramp;
            interpolated * (1.0 - keep) + extrapolated * keep
        })
        .collect()
}

/// The residual update `x += y * scale`, elementwise.
pub fn add_scaled(x: &mut [f32], y: &[f32], scale: f32) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b * scale;
    }
}

/// SwiGLU's gating, elementwise: `silu(gate) * up`.
pub fn silu_mul(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter().zip(up).map(|(&g, &u)| silu(g) * u).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_value_then_index() {
        assert_eq!(top_k(&[0.1, 0.5, 0.5, -1.0, 0.7], 3), vec![4, 1, 2]);
    }

    #[test]
    fn rope_pairings_agree_after_permuting_dimensions() {
        // llama.cpp permutes rows so that interleaved pairs hold what rotate_half pairs held.
        let d = 8;
        let x: Vec<f32> = (0..d).map(|i| i as f32 * 0.37 - 1.0).collect();
        let (cos, sin) = rope_angles(5, d, 10000.0);
        let mut halves = x.clone();
        rope(&mut halves, &cos, &sin, false);
        let mut inter: Vec<f32> = (0..d).map(|i| x[if i % 2 == 0 { i / 2 } else { d / 2 + i / 2 }]).collect();
        rope(&mut inter, &cos, &sin, true);
        for i in 0..d / 2 {
            assert!((inter[2 * i] - halves[i]).abs() < 1e-6);
            assert!((inter[2 * i + 1] - halves[i + d / 2]).abs() < 1e-6);
        }
    }

    #[test]
    fn inverse_frequencies_give_the_angles_of_rope_angles() {
        for (d, theta) in [(64, 10000.0f32), (80, 1e6), (128, 500000.0)] {
            let inv = rope_inv_freq(d, theta);
            for pos in [0, 1, 7, 333, 4095] {
                let (cos, sin) = rope_angles(pos, d, theta);
                for i in 0..d / 2 {
                    let angle = pos as f32 * inv[i];
                    assert_eq!((angle.cos().to_bits(), angle.sin().to_bits()), (cos[i].to_bits(), sin[i].to_bits()));
                }
            }
        }
    }

    #[test]
    fn embed_scales_rows_and_zeroes_unknown_ids() {
        let table: Vec<f32> = (0..6).map(|v| v as f32).collect();
        assert_eq!(embed(&table, 2, &[2, 0, 3], 0.5), vec![2.0, 2.5, 0.0, 0.5, 0.0, 0.0]);
    }
}
