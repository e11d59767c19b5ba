//! Multi-head latent attention (DeepSeek-V2/V3) on the CPU, as transformers computes it: the
//! cache holds each position's normed latent `c` and rotated shared key `k_pe`; every step
//! expands them into per-head keys `[W_UK_h c | k_pe]` and values `W_UV_h c` (the GPU instead
//! folds `W_UK` into the query and applies `W_UV` after attention: the same sums, reordered).

use super::{KvCache, ReferenceModel};
use crate::config::RopePairing;
use crate::ops::{attend_rows, rms_norm, rope, rope_frequencies, Matrix, Rows};
use crate::weights::tree::Mla;

impl ReferenceModel {
    /// MLA of T new positions (the attention-normed `normed`, `[T, H]`): the heads' outputs
    /// `[T, heads * v_head_dim]`, before `o`.
    pub(super) fn mla(&self, a: &Mla<Matrix, Vec<f32>>, l: usize, normed: &[f32], cache: &mut KvCache) -> Vec<f32> {
        let c = &self.config;
        let m = c.mla.as_ref().expect("an MLA layer implies an MLA config");
        let (heads, r, rope_d, nope, v_d) =
            (c.num_heads, m.kv_lora_rank, m.qk_rope_head_dim, m.qk_nope_head_dim, m.v_head_dim);
        let t_count = normed.len() / c.hidden_size;

        let q_in = match &a.q_a {
            Some((w, norm)) => {
                let mut q_a = w.forward(normed);
                rms_norm(&mut q_a, norm, m.norm_eps);
                q_a
            }
            None => normed.to_vec(),
        };
        let q_nope = a.q_nope.forward(&q_in);
        let mut q_rope = a.q_rope.forward(&q_in);
        let mut kv = a.kv_a.forward(normed);

        // RoPE (cos and sin times YaRN's attention factor), then the cache rows [c | k_pe].
        let (inv_freq, factor) = rope_frequencies(c);
        let interleaved = c.rope_pairing == RopePairing::Interleaved;
        for t in 0..t_count {
            let pos = (cache.len + t) as f32;
            let (cos, sin): (Vec<f32>, Vec<f32>) =
                inv_freq.iter().map(|f| ((pos * f).cos() * factor, (pos * f).sin() * factor)).unzip();
            for head in q_rope[t * heads * rope_d..(t + 1) * heads * rope_d].chunks_exact_mut(rope_d) {
                rope(head, &cos, &sin, interleaved);
            }
            let row = &mut kv[t * (r + rope_d)..(t + 1) * (r + rope_d)];
            let (latent, k_pe) = row.split_at_mut(r);
            rms_norm(latent, &a.kv_norm, m.norm_eps);
            rope(k_pe, &cos, &sin, interleaved);
        }
        cache.keys[l].extend_from_slice(&kv);

        // Every cached position expanded: keys [heads, nope + rope], values [heads, v].
        let len = cache.len + t_count;
        let qk = nope + rope_d;
        let mut keys = vec![0.0; len * heads * qk];
        let mut values = vec![0.0; len * heads * v_d];
        for (j, row) in cache.keys[l].chunks_exact(r + rope_d).enumerate() {
            let (latent, k_pe) = row.split_at(r);
            let v = a.v_b.forward(latent);
            values[j * heads * v_d..(j + 1) * heads * v_d].copy_from_slice(&v);
            for h in 0..heads {
                let key = &mut keys[(j * heads + h) * qk..(j * heads + h + 1) * qk];
                // k_b holds W_UK_h transposed: k_nope[i] = sum_j k_b[h*r + j, i] c[j].
                for (i, k) in key[..nope].iter_mut().enumerate() {
                    *k = (0..r).map(|jj| a.k_b.data[(h * r + jj) * nope + i] * latent[jj]).sum();
                }
                key[nope..].copy_from_slice(k_pe);
            }
        }

        let mut out = Vec::with_capacity(t_count * heads * v_d);
        for t in 0..t_count {
            let visible = cache.len + t + 1;
            for h in 0..heads {
                let mut q = q_nope[(t * heads + h) * nope..(t * heads + h + 1) * nope].to_vec();
                q.extend_from_slice(&q_rope[(t * heads + h) * rope_d..(t * heads + h + 1) * rope_d]);
                let k_rows = Rows { stride: heads * qk, offset: h * qk, width: qk };
                let v_rows = Rows { stride: heads * v_d, offset: h * v_d, width: v_d };
                out.extend(attend_rows(&q, &keys, k_rows, &values, v_rows, visible, c.attention_scale));
            }
        }
        out
    }
}
