//! Recording multi-head latent attention (DeepSeek) in absorbed form: each head's query is taken
//! into the latent space (`W_UK_h^T q_nope`), attention runs over the cache of normed latents
//! and rotated keys as one key head whose first `kv_lora` columns are also the values, and each
//! head's output leaves the latent space through `W_UV_h`. A token's cache read per layer is
//! `kv_lora + rope` values, the compressed row itself; nothing is decompressed.

use super::{Recorder, Resident};
use crate::gpu::kernels::matmul::{self, Out};
use crate::gpu::kernels::mla_rope::{self, MlaShape};
use crate::gpu::kernels::{attention, rms_norm};
use crate::gpu::model::layer::{GpuLayer, GpuMla};
use crate::gpu::Op;
use crate::ops::rope_frequencies;
use crate::{Error, Result};

impl Recorder<'_> {
    /// MLA of `r.normed` into `r.attn` (`[T, heads * v_head_dim]`): [q_a + norm], q's parts,
    /// the latent projection, `W_UK` per head, RoPE + norm + cache append, attention, `W_UV`.
    pub(super) fn mla(&self, ops: &mut Vec<Op>, r: &Resident, layer: &GpuLayer, a: &GpuMla) -> Result<()> {
        let (g, c, t, step) = (self.gpu, self.config, self.max_tokens, &self.step.buffer);
        let m = c.mla.as_ref().ok_or_else(|| Error::Gpu("an MLA layer in a config without MLA".into()))?;
        let (heads, lora, rope) = (c.num_heads as u32, m.kv_lora_rank as u32, m.qk_rope_head_dim as u32);
        let (nope, v) = (m.qk_nope_head_dim as u32, m.v_head_dim as u32);
        let row = lora + rope;
        if !row.is_multiple_of(4) || !nope.is_multiple_of(4) {
            return Err(Error::Gpu(format!(
                "MLA on the GPU needs kv_lora_rank + qk_rope_head_dim ({row}) and qk_nope_head_dim ({nope}) \
                 in multiples of 4"
            )));
        }
        let matmul = |ops: &mut Vec<Op>, w, x, out| -> Result<()> {
            ops.extend(matmul::ops(g, step, w, x, None, Out::Set(out), t)?);
            Ok(())
        };
        // q reads x directly, or through its normed low-rank projection.
        let q_in = match &a.q_a {
            Some((w, norm)) => {
                let ql = w.rows as u32;
                matmul(ops, w, &r.normed, &r.latent)?;
                ops.push(rms_norm::op(g, step, &r.latent, norm, &r.q_latent, t, 1, ql, m.norm_eps)?);
                &r.q_latent
            }
            None => &r.normed,
        };
        matmul(ops, &a.q_nope, q_in, &r.q)?;
        matmul(ops, &a.q_rope, q_in, &r.q_rot)?;
        matmul(ops, &a.kv_a, &r.normed, &r.latent)?;
        // Each head's query in the latent space: the first kv_lora columns of its query row.
        let per_head = |w, rows, x, out| matmul::head_ops(g, step, w, rows, &r.head_ids, heads, x, out, t);
        ops.extend(per_head(&a.k_b, lora, (&r.q, nope), (&r.heads_query, row))?);
        let (inv_freq, factor) = rope_frequencies(c);
        let shape = MlaShape {
            heads,
            kv_lora: lora,
            rope_dim: rope,
            pairing: c.rope_pairing,
            inv_freq: &inv_freq,
            factor,
            eps: m.norm_eps,
        };
        let (cache, ctx, kv) = (&layer.k_cache, self.max_ctx, self.kv);
        ops.push(mla_rope::op(g, step, shape, &r.q_rot, &r.latent, &a.kv_norm, &r.heads_query, cache, t, ctx, kv)?);
        // One key head of kv_lora + rope dims shared by every query head; its values are the
        // same rows (their first kv_lora columns are what W_UV reads).
        let splits = match t {
            1 => attention::splits_for(g, attention::workgroups_per_token(heads, 1, row), ctx),
            _ => 1,
        };
        let (scale, partials) = (c.attention_scale, &r.attention_partials);
        ops.extend(attention::ops(
            g,
            step,
            &r.heads_query,
            cache,
            cache,
            &r.heads_out,
            t,
            heads,
            1,
            row,
            scale,
            kv,
            splits,
            partials,
        )?);
        ops.extend(per_head(&a.v_b, v, (&r.heads_out, row), (&r.attn, v))?);
        Ok(())
    }
}
