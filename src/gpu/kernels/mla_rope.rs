//! MLA's step before attention (`shaders/mla_rope.wgsl`): the latent's RMSNorm, RoPE of the
//! shared key and of each head's rotary query, and the cache append. CPU twins:
//! `ops::{rms_norm, rope}` as `reference::mla` composes them.
//!
//! Cache layout (what `attention` reads as one key head whose first `kv_lora` columns are also
//! the values): per layer `[max_ctx, kv_lora + rope]` in the [`KvFormat`]'s type; row `p` holds
//! position `p`'s normed latent, then its rotated key.

use super::KvFormat;
use crate::config::RopePairing;
use crate::gpu::{Gpu, Op};
use crate::{Error, Result};
use bytemuck::{Pod, Zeroable};

const SOURCE: &str = include_str!("../../../shaders/mla_rope.wgsl");
const WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n_heads: u32,
    kv_lora: u32,
    rope_dim: u32,
    interleaved: u32,
    max_ctx: u32,
    eps: f32,
    factor: f32,
    _pad: u32,
}

/// The widths and RoPE of one MLA layer.
#[derive(Clone, Copy)]
pub struct MlaShape<'a> {
    pub heads: u32,
    pub kv_lora: u32,
    pub rope_dim: u32,
    pub pairing: RopePairing,
    /// Inverse frequencies (`ops::rope_frequencies`) and the factor on cos and sin.
    pub inv_freq: &'a [f32],
    pub factor: f32,
    pub eps: f32,
}

/// An op that, for each of the step's tokens, writes the rotated rotary query of every head
/// into the last `rope_dim` columns of its `q_out` row (`[T, heads, kv_lora + rope_dim]`) and
/// appends `[norm(c) | rope(k_pe)]` of `kv_in`'s row (`[T, kv_lora + rope_dim]`) to `cache`.
#[allow(clippy::too_many_arguments)]
pub fn op(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    shape: MlaShape,
    q_rope: &wgpu::Buffer,
    kv_in: &wgpu::Buffer,
    norm: &wgpu::Buffer,
    q_out: &wgpu::Buffer,
    cache: &wgpu::Buffer,
    max_tokens: u32,
    max_ctx: u32,
    kv: KvFormat,
) -> Result<Op> {
    let MlaShape { heads, kv_lora, rope_dim, pairing, inv_freq, factor, eps } = shape;
    if heads == 0
        || kv_lora == 0
        || !kv_lora.is_multiple_of(2)
        || !rope_dim.is_multiple_of(2)
        || rope_dim == 0
        || inv_freq.len() != rope_dim as usize / 2
    {
        return Err(Error::Gpu(format!(
            "mla_rope: {heads} heads, latent {kv_lora} + rope {rope_dim} ({} frequencies): both must be even",
            inv_freq.len()
        )));
    }
    let kernel = gpu.kernel("mla_rope", SOURCE, &[("WG", WG as f64), kv.f16_override()])?;
    let params = Params {
        n_heads: heads,
        kv_lora,
        rope_dim,
        interleaved: u32::from(pairing == RopePairing::Interleaved),
        max_ctx,
        eps,
        factor,
        _pad: 0,
    };
    let params = gpu.uniform("mla_rope params", &params);
    let inv_freq = gpu.storage("mla_rope inv_freq", inv_freq);
    let buffers = [&params, step, &inv_freq, q_rope, kv_in, norm, q_out, cache];
    Ok(gpu.op("mla_rope", &kernel, &buffers, [heads + 1, max_tokens, 1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::kernels::testing::{gpu, random};
    use crate::gpu::step::Step;
    use crate::ops::{rms_norm, rope, rope_inv_freq};
    use half::f16;

    const SENTINEL: f32 = 7.5;

    fn check(heads: usize, r: usize, d: usize, tokens: usize, position: usize, pairing: RopePairing, kv: KvFormat) {
        let gpu = gpu();
        let max_tokens = tokens + 1;
        let max_ctx = position + tokens + 3;
        let seed = (heads * 100 + r + d) as u64;
        let q_rope = random(max_tokens * heads * d, seed);
        let kv_in = random(max_tokens * (r + d), seed + 1);
        let norm: Vec<f32> = random(r, seed + 2).iter().map(|v| 1.0 + v / 2.0).collect();
        let inv_freq = rope_inv_freq(d, 10000.0);
        let (factor, eps) = (1.25, 1e-6);
        let step = Step::new(gpu);
        step.set(gpu, tokens as u32, position as u32);
        let q_out_init = vec![SENTINEL; max_tokens * heads * (r + d)];
        let q_out = gpu.storage("q out", &q_out_init);
        let cache_init = vec![SENTINEL; max_ctx * (r + d)];
        let cache = match kv {
            KvFormat::F32 => gpu.storage("cache", &cache_init),
            KvFormat::F16 => gpu.storage("cache", &cache_init.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>()),
        };
        let shape = MlaShape {
            heads: heads as u32,
            kv_lora: r as u32,
            rope_dim: d as u32,
            pairing,
            inv_freq: &inv_freq,
            factor,
            eps,
        };
        let bufs = (gpu.storage("q rope", &q_rope), gpu.storage("kv", &kv_in), gpu.storage("norm", &norm));
        let op = op(
            gpu,
            &step.buffer,
            shape,
            &bufs.0,
            &bufs.1,
            &bufs.2,
            &q_out,
            &cache,
            max_tokens as u32,
            max_ctx as u32,
            kv,
        )
        .unwrap();
        crate::gpu::submit(gpu, &[&op]);
        let got_q: Vec<f32> = gpu.read(&q_out).unwrap();
        let got_cache: Vec<f32> = match kv {
            KvFormat::F32 => gpu.read(&cache).unwrap(),
            KvFormat::F16 => gpu.read::<f16>(&cache).unwrap().iter().map(|v| v.to_f32()).collect(),
        };

        let (mut want_q, mut want_cache) = (q_out_init.clone(), cache_init.clone());
        let interleaved = pairing == RopePairing::Interleaved;
        for t in 0..tokens {
            let pos = (position + t) as f32;
            let (cos, sin): (Vec<f32>, Vec<f32>) =
                inv_freq.iter().map(|f| ((pos * f).cos() * factor, (pos * f).sin() * factor)).unzip();
            for h in 0..heads {
                let mut head = q_rope[(t * heads + h) * d..(t * heads + h + 1) * d].to_vec();
                rope(&mut head, &cos, &sin, interleaved);
                let at = (t * heads + h) * (r + d) + r;
                want_q[at..at + d].copy_from_slice(&head);
            }
            let mut row = kv_in[t * (r + d)..(t + 1) * (r + d)].to_vec();
            let (latent, k_pe) = row.split_at_mut(r);
            rms_norm(latent, &norm, eps);
            rope(k_pe, &cos, &sin, interleaved);
            want_cache[(position + t) * (r + d)..(position + t + 1) * (r + d)].copy_from_slice(&row);
        }
        let case = format!("{heads} heads, {r}+{d}, T={tokens} at {position}, {pairing:?} {kv:?}");
        for (i, (g, w)) in got_q.iter().zip(&want_q).enumerate() {
            assert!((g - w).abs() < 1e-6, "{case}: q_out[{i}] = {g}, want {w}");
        }
        let rounding = |w: f32| if kv == KvFormat::F16 { w.abs() * 2f32.powi(-10) } else { 0.0 };
        for (i, (g, w)) in got_cache.iter().zip(&want_cache).enumerate() {
            assert!((g - w).abs() <= 2e-6 + rounding(*w), "{case}: cache[{i}] = {g}, want {w}");
        }
    }

    #[test]
    fn matches_cpu_twin_on_awkward_sizes() {
        for pairing in [RopePairing::Interleaved, RopePairing::Halves] {
            for kv in [KvFormat::F32, KvFormat::F16] {
                // (heads, kv_lora, rope, tokens, position)
                for (h, r, d, t, pos) in
                    [(4, 32, 16, 1, 0), (3, 90, 6, 5, 37), (16, 512, 64, 2, 1000), (1, 130, 2, 3, 7)]
                {
                    check(h, r, d, t, pos, pairing, kv);
                }
            }
        }
    }
}
