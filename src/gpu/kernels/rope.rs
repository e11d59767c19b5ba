//! RoPE of q and k, fused with the KV-cache append (`shaders/rope.wgsl`); CPU twins:
//! `ops::{rope_inv_freq, rope_angles, rope}`.
//!
//! KV cache layout (what `attention` reads): per layer, one buffer for K and one for V, each
//! `[max_ctx, n_kv_heads * head_dim]` row-major in the [`KvFormat`]'s type (f16: values rounded
//! to nearest, two per u32, the lower column in the low half); row `p` holds position `p`
//! (RoPE'd k, raw v), key head `g` at columns `g * head_dim..(g + 1) * head_dim`.

use super::{Columns, KvFormat};
use crate::config::RopePairing;
use crate::gpu::{Gpu, Op};
use crate::{Error, Result};
use bytemuck::{Pod, Zeroable};

const SOURCE: &str = include_str!("../../../shaders/rope.wgsl");
const WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    interleaved: u32,
    max_ctx: u32,
    q_offset: u32,
    q_stride: u32,
    k_offset: u32,
    k_stride: u32,
    v_offset: u32,
    v_stride: u32,
    _pad: u32,
}

/// An op that, for each of the `n_tokens` tokens of the step (at positions
/// `position + t`), rotates `q` (`n_heads * head_dim` columns) into `q_out`
/// (`[T, n_heads * head_dim]`) and writes the rotated `k` and `v` (`n_kv_heads * head_dim`
/// columns each) to row `position + t` of `k_cache` and `v_cache`
/// (`[max_ctx, n_kv_heads * head_dim]` each, this layer's, in `kv`'s format). q, k and v may be columns of one
/// buffer (the fused q|k|v projection). Rows at or past `max_ctx` are not written (the host keeps positions below it).
/// Built for up to `max_tokens` tokens.
#[allow(clippy::too_many_arguments)]
pub fn op(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    q: Columns,
    k: Columns,
    v: Columns,
    q_out: &wgpu::Buffer,
    k_cache: &wgpu::Buffer,
    v_cache: &wgpu::Buffer,
    max_tokens: u32,
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    theta: f32,
    pairing: RopePairing,
    max_ctx: u32,
    kv: KvFormat,
) -> Result<Op> {
    if head_dim == 0 || !head_dim.is_multiple_of(2) || n_heads == 0 || n_kv_heads == 0 {
        return Err(Error::Gpu(format!(
            "rope: {n_heads} heads, {n_kv_heads} kv heads of {head_dim} (need an even head_dim)"
        )));
    }
    let kernel = gpu.kernel("rope", SOURCE, &[("WG", WG as f64), kv.f16_override()])?;
    let params = Params {
        n_heads,
        n_kv_heads,
        head_dim,
        interleaved: u32::from(pairing == RopePairing::Interleaved),
        max_ctx,
        q_offset: q.offset,
        q_stride: q.stride,
        k_offset: k.offset,
        k_stride: k.stride,
        v_offset: v.offset,
        v_stride: v.stride,
        _pad: 0,
    };
    let params = gpu.uniform("rope params", &params);
    let inv_freq = gpu.storage("rope inv_freq", &crate::ops::rope_inv_freq(head_dim as usize, theta));
    let buffers = [&params, step, &inv_freq, q.buffer, k.buffer, v.buffer, q_out, k_cache, v_cache];
    Ok(gpu.op("rope", &kernel, &buffers, [n_heads + n_kv_heads, max_tokens, 1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::kernels::testing::{gpu, random};
    use crate::gpu::step::Step;
    use crate::ops::{rope, rope_angles};
    use half::f16;

    /// Exact in f16 too.
    const SENTINEL: f32 = 7.5;

    /// A cache of `values` in `kv`'s format, and one read back as f32.
    fn upload(gpu: &Gpu, label: &str, values: &[f32], kv: KvFormat) -> wgpu::Buffer {
        match kv {
            KvFormat::F32 => gpu.storage(label, values),
            KvFormat::F16 => gpu.storage(label, &values.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>()),
        }
    }

    fn download(gpu: &Gpu, cache: &wgpu::Buffer, kv: KvFormat) -> Vec<f32> {
        match kv {
            KvFormat::F32 => gpu.read(cache).unwrap(),
            KvFormat::F16 => gpu.read::<f16>(cache).unwrap().iter().map(|v| v.to_f32()).collect(),
        }
    }

    /// Runs the op once on q, k and v as columns of one fused `[T, q | k | v]` buffer and checks
    /// q_out and both caches against the twins; returns the largest error of a rotated value.
    #[allow(clippy::too_many_arguments)]
    fn check(
        heads: usize,
        kv_heads: usize,
        hd: usize,
        tokens: usize,
        position: usize,
        max_ctx: usize,
        theta: f32,
        pairing: RopePairing,
        kv: KvFormat,
    ) -> f32 {
        let gpu = gpu();
        let max_tokens = tokens + 2;
        let (q_dim, kv_dim) = (heads * hd, kv_heads * hd);
        let seed = (heads * 1000 + hd * 10 + tokens) as u64;
        let (q, k, v) = (
            random(max_tokens * q_dim, seed),
            random(max_tokens * kv_dim, seed + 1),
            random(max_tokens * kv_dim, seed + 2),
        );
        let step = Step::new(gpu);
        step.set(gpu, tokens as u32, position as u32);
        let width = q_dim + 2 * kv_dim;
        let fused: Vec<f32> = (0..max_tokens)
            .flat_map(|t| {
                let row = |m: &[f32], d: usize| m[t * d..(t + 1) * d].to_vec();
                [row(&q, q_dim), row(&k, kv_dim), row(&v, kv_dim)].concat()
            })
            .collect();
        let qkv = gpu.storage("qkv", &fused);
        let columns = |offset: usize| Columns { buffer: &qkv, offset: offset as u32, stride: width as u32 };
        let qb = gpu.storage("q out", &q);
        let cache = vec![SENTINEL; max_ctx * kv_dim];
        let (kc, vc) = (upload(gpu, "k cache", &cache, kv), upload(gpu, "v cache", &cache, kv));
        let op = op(
            gpu,
            &step.buffer,
            columns(0),
            columns(q_dim),
            columns(q_dim + kv_dim),
            &qb,
            &kc,
            &vc,
            max_tokens as u32,
            heads as u32,
            kv_heads as u32,
            hd as u32,
            theta,
            pairing,
            max_ctx as u32,
            kv,
        )
        .unwrap();
        crate::gpu::submit(gpu, &[&op]);
        let got_q: Vec<f32> = gpu.read(&qb).unwrap();
        let (got_kc, got_vc) = (download(gpu, &kc, kv), download(gpu, &vc, kv));

        let (mut want_q, mut want_k) = (q.clone(), k.clone());
        let interleaved = pairing == RopePairing::Interleaved;
        for t in 0..tokens {
            let (cos, sin) = rope_angles(position + t, hd, theta);
            for head in want_q[t * q_dim..(t + 1) * q_dim].chunks_exact_mut(hd) {
                rope(head, &cos, &sin, interleaved);
            }
            for head in want_k[t * kv_dim..(t + 1) * kv_dim].chunks_exact_mut(hd) {
                rope(head, &cos, &sin, interleaved);
            }
        }
        let mut want_kc = cache.clone();
        let mut want_vc = cache.clone();
        for t in 0..tokens {
            let p = position + t;
            if p < max_ctx {
                want_kc[p * kv_dim..(p + 1) * kv_dim].copy_from_slice(&want_k[t * kv_dim..(t + 1) * kv_dim]);
                want_vc[p * kv_dim..(p + 1) * kv_dim].copy_from_slice(&v[t * kv_dim..(t + 1) * kv_dim]);
            }
        }
        let case = format!("{heads}/{kv_heads}x{hd} T={tokens} pos={position} {pairing:?} {kv:?}");
        // Surplus tokens untouched; cache rows outside the chunk untouched.
        assert_eq!(got_q[tokens * q_dim..], q[tokens * q_dim..], "{case}: surplus q rows written");
        for (i, ((gk, wk), (gv, wv))) in got_kc.iter().zip(&want_kc).zip(got_vc.iter().zip(&want_vc)).enumerate() {
            let p = i / kv_dim;
            if p < position || p >= position + tokens {
                assert_eq!((gk.to_bits(), gv.to_bits()), (wk.to_bits(), wv.to_bits()), "{case}: row {p} touched");
            }
        }
        // An f16 cache rounds to a neighbouring f16: within 2^-11 relative when to nearest (as
        // llama.cpp's), 2^-10 for either neighbour, which is all SPIR-V's PackHalf2x16 promises.
        let rounding = |w: f32| if kv == KvFormat::F16 { w.abs() * 2f32.powi(-10) } else { 0.0 };
        for (g, w) in got_vc.iter().zip(&want_vc) {
            assert!((g - w).abs() <= rounding(*w), "{case}: v cache {g} for {w}");
        }
        // Rotated values: the angle is bit for bit the twin's (host inverse frequencies, one
        // correctly rounded multiply); the shader's cos/sin are within a few ulps (~2e-7) of
        // Rust's (libm, within an ulp), so y = x0 cos - x1 sin, with |x0|, |x1| < 1, is off by
        // at most ~(|x0| + |x1|) * 3e-7 + 2 roundings of |y| < 1.5: below 1e-6 absolute, plus the
        // f16 rounding in an f16 cache. (Measured: 1.2e-7 on lavapipe, 1.4e-7 on an H100.)
        for (g, w) in got_kc.iter().zip(&want_kc) {
            assert!((g - w).abs() < 1e-6 + rounding(*w), "{case}: k cache {g} for {w}");
        }
        // The largest error of q and of an f32 cache's k.
        let err = |a: &[f32], b: &[f32]| a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        let e = if kv == KvFormat::F32 { err(&got_kc, &want_kc) } else { 0.0 };
        let e = e.max(err(&got_q, &want_q));
        assert!(e < 1e-6, "{case}: max abs error {e:e}");
        e
    }

    #[test]
    fn matches_cpu_twin_on_awkward_sizes() {
        let mut worst = 0f32;
        for pairing in [RopePairing::Halves, RopePairing::Interleaved] {
            // (heads, kv heads, head_dim, tokens, position, theta)
            for (h, kv, hd, t, pos, theta) in [
                (9, 3, 80, 1, 0, 10000.0),
                (9, 3, 80, 5, 597, 1e6),
                (4, 2, 64, 33, 0, 10000.0),
                (4, 2, 32, 33, 300, 500000.0),
                (4, 2, 64, 1, 4095, 10000.0),
                (2, 1, 256, 3, 1000, 10000.0),
            ] {
                for format in [KvFormat::F32, KvFormat::F16] {
                    worst = worst.max(check(h, kv, hd, t, pos, 4200, theta, pairing, format));
                }
            }
        }
        eprintln!("rope: max abs error {worst:e}");
    }

    #[test]
    fn stays_accurate_at_large_positions_and_skips_rows_past_the_cache() {
        // Angles near 6e4 rad: the four-part reduction of the shader keeps the rotation exact to
        // a few ulps; the chunk lies past max_ctx = 8, so the caches must stay untouched.
        let e = check(4, 2, 64, 4, 60000, 8, 10000.0, RopePairing::Halves, KvFormat::F32);
        eprintln!("rope at position 60000: max abs error {e:e}");
    }
}
