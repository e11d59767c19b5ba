//! Causal GQA attention over the KV cache (`shaders/attention.wgsl`, and
//! `shaders/attention_combine.wgsl` where a token's keys are split across workgroups), one kernel
//! for prefill chunks and decode; CPU twin: `ops::attend` (over the cache's values: f16-rounded for an f16
//! cache). The cache layout is the one `rope` writes (see `super::rope`).

use super::KvFormat;
use crate::gpu::{Gpu, Op};
use crate::{Error, Result};
use bytemuck::{Pod, Zeroable};

const SOURCE: &str = include_str!("../../../shaders/attention.wgsl");
const COMBINE_SOURCE: &str = include_str!("../../../shaders/attention_combine.wgsl");
/// The kernel's `MAX_HEADS`.
const MAX_HEADS: u32 = 8;
/// The largest head_dim the kernel takes (one thread per vec4 column, 256 threads at most);
/// head_dim must also be a multiple of 4 (rows are read as vec4).
pub const MAX_HEAD_DIM: u32 = 1024;
/// Workgroup memory a workgroup may take: WebGPU's guaranteed minimum, so that every device
/// (and the memory plan, which sizes the partials by it) makes the same choice.
const WORKGROUP_BYTES: u32 = 16 * 1024;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    scale: f32,
}

/// Threads per workgroup (one per vec4 column) and keys per thread in a tile (tiles of at least
/// 128 keys).
fn tile(head_dim: u32) -> (u32, u32) {
    let wg = head_dim / 4;
    (wg, 128u32.div_ceil(wg))
}

/// Workgroup memory of `heads` heads of `head_dim`: their query rows, the tile's scores and the
/// reduction slots.
fn workgroup_bytes(heads: u32, head_dim: u32) -> u32 {
    let (wg, kpt) = tile(head_dim);
    heads * (4 * head_dim + 4 * wg * kpt + 4 * wg)
}

/// Query heads one workgroup serves: the largest divisor of the GQA `group` (at most
/// `MAX_HEADS`) whose workgroup memory fits [`WORKGROUP_BYTES`], so that each key and value row
/// is read once for all of them. (MLA's heads are one group over a 576-wide latent: 4 per
/// workgroup.)
fn heads_per_workgroup(group: u32, head_dim: u32) -> u32 {
    (1..=group.min(MAX_HEADS))
        .rev()
        .find(|&h| group.is_multiple_of(h) && workgroup_bytes(h, head_dim) <= WORKGROUP_BYTES)
        .unwrap_or(1)
}

/// How many workgroups share one token's keys in decode (flash-decoding) on `gpu`, for
/// `groups` workgroups per token (query heads / heads per workgroup) and a cache of `max_ctx`
/// positions: on a GPU, enough for ~128 workgroups (a few per compute unit), each split at
/// least 256 keys at full context; on a CPU (lavapipe, SwiftShader), whose few threads the
/// groups already fill, one (no combine pass).
pub fn splits_for(gpu: &Gpu, groups: u32, max_ctx: u32) -> u32 {
    match gpu.info.device_type {
        wgpu::DeviceType::Cpu => 1,
        _ => max_splits(groups, max_ctx),
    }
}

/// The splits [`splits_for`] gives a GPU: what the partials buffer is sized for everywhere.
pub fn max_splits(groups: u32, max_ctx: u32) -> u32 {
    128u32.div_ceil(groups.max(1)).min(max_ctx / 256).max(1)
}

/// Workgroups the attention kernel runs per token before splitting, for `n_heads` over
/// `n_kv_heads` of `head_dim`.
pub fn workgroups_per_token(n_heads: u32, n_kv_heads: u32, head_dim: u32) -> u32 {
    n_heads / heads_per_workgroup(n_heads / n_kv_heads.max(1), head_dim)
}

/// Bytes of the partial outputs of `splits` splits (`partials` of [`ops`]).
pub fn partials_bytes(max_tokens: u32, splits: u32, n_heads: u32, head_dim: u32) -> u64 {
    u64::from(max_tokens) * u64::from(splits) * u64::from(n_heads) * u64::from(head_dim + 4) * 4
}

/// Ops computing, for each of the step's `n_tokens` tokens `t` and each query head, softmax
/// attention of `q` (`[T, n_heads * head_dim]`, after RoPE) over rows `0..=position + t` of
/// `k_cache` and `v_cache` (`[max_ctx, n_kv_heads * head_dim]`, the chunk's own rows already
/// appended, in `kv`'s format), scores scaled by `scale`, into `out` (`[T, n_heads * head_dim]`).
/// With `splits` > 1, that many workgroups share each token's keys, leave their partial
/// outputs in `partials` ([`partials_bytes`]) and a second op (`attention_combine.wgsl`) adds
/// them up; with one split `partials` is bound but unused (any buffer other than `out`:
/// WebGPU forbids two writable bindings of one buffer). Built for up to `max_tokens` tokens.
#[allow(clippy::too_many_arguments)]
pub fn ops(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    q: &wgpu::Buffer,
    k_cache: &wgpu::Buffer,
    v_cache: &wgpu::Buffer,
    out: &wgpu::Buffer,
    max_tokens: u32,
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    scale: f32,
    kv: KvFormat,
    splits: u32,
    partials: &wgpu::Buffer,
) -> Result<Vec<Op>> {
    if n_kv_heads == 0
        || !n_heads.is_multiple_of(n_kv_heads)
        || head_dim == 0
        || !head_dim.is_multiple_of(4)
        || head_dim > MAX_HEAD_DIM
    {
        return Err(Error::Gpu(format!(
            "attention: {n_heads} heads over {n_kv_heads} kv heads of {head_dim} (need whole groups, \
             head_dim a multiple of 4 and at most {MAX_HEAD_DIM})"
        )));
    }
    let heads = heads_per_workgroup(n_heads / n_kv_heads, head_dim);
    let (wg, kpt) = tile(head_dim);
    let splits = splits.max(1);
    if splits > 1 && partials.size() < partials_bytes(max_tokens, splits, n_heads, head_dim) {
        return Err(Error::Gpu(format!("attention: a partials buffer too small for {splits} splits")));
    }
    // TILE is passed, not derived in WGSL from WG * KPT: Tint (Chromium) mis-sized the
    // workgroup array and loop strides when an override's initializer used other overrides.
    let overrides = [
        ("WG", wg as f64),
        ("HEADS", heads as f64),
        ("KPT", kpt as f64),
        ("TILE", (wg * kpt) as f64),
        ("Q4", (heads * wg) as f64),
        ("SPLITS", splits as f64),
        kv.f16_override(),
    ];
    let kernel = gpu.kernel("attention", SOURCE, &overrides)?;
    let params = gpu.uniform("attention params", &Params { n_heads, n_kv_heads, head_dim, scale });
    let buffers = [&params, step, q, k_cache, v_cache, out, partials];
    let mut ops = vec![gpu.op("attention", &kernel, &buffers, [n_heads / heads, max_tokens, splits])];
    if splits > 1 {
        let overrides = [("WG", wg as f64), ("SPLITS", splits as f64)];
        let kernel = gpu.kernel("attention_combine", COMBINE_SOURCE, &overrides)?;
        let params = gpu.uniform("attention combine params", &[n_heads, head_dim, 0, 0]);
        let buffers = [&params, step, partials, out];
        ops.push(gpu.op("attention_combine", &kernel, &buffers, [n_heads, max_tokens, 1]));
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::kernels::testing::{gpu, random};
    use crate::gpu::step::Step;
    use crate::ops::attend;
    use half::f16;

    /// Runs the op on random q and a random cache of `position + tokens` rows (plus spare rows
    /// holding huge values that must not be read) and returns the largest error (absolute: the
    /// outputs lie in [-1, 1]).
    #[allow(clippy::too_many_arguments)]
    fn check(
        heads: usize,
        kv_heads: usize,
        hd: usize,
        tokens: usize,
        position: usize,
        q_gain: f32,
        kv: KvFormat,
        splits: u32,
    ) -> f32 {
        let gpu = gpu();
        let max_tokens = tokens + 2;
        let (q_dim, kv_dim) = (heads * hd, kv_heads * hd);
        let len = position + tokens;
        let max_ctx = len + 70;
        let seed = (heads * 100_000 + hd * 1000 + tokens * 10 + position) as u64;
        let q: Vec<f32> = random(max_tokens * q_dim, seed).iter().map(|v| v * q_gain).collect();
        let mut keys = random(max_ctx * kv_dim, seed + 1);
        let mut values = random(max_ctx * kv_dim, seed + 2);
        // Rows past the causal limit: a key this large would dominate any softmax it entered.
        keys[len * kv_dim..].fill(1e4);
        values[len * kv_dim..].fill(1e4);
        let step = Step::new(gpu);
        step.set(gpu, tokens as u32, position as u32);
        // An f16 cache holds the values rounded; the twin attends over the same values.
        let cache = |label, values: &mut Vec<f32>| match kv {
            KvFormat::F32 => gpu.storage(label, values),
            KvFormat::F16 => {
                let halves: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
                *values = halves.iter().map(|v| v.to_f32()).collect();
                gpu.storage(label, &halves)
            }
        };
        let (qb, kb, vb) = (gpu.storage("q", &q), cache("k cache", &mut keys), cache("v cache", &mut values));
        let out = gpu.storage("out", &vec![7.0f32; max_tokens * q_dim]);
        let scale = 1.0 / (hd as f32).sqrt();
        let partials =
            gpu.storage_zeroed("partials", partials_bytes(max_tokens as u32, splits, heads as u32, hd as u32));
        let ops = ops(
            gpu,
            &step.buffer,
            &qb,
            &kb,
            &vb,
            &out,
            max_tokens as u32,
            heads as u32,
            kv_heads as u32,
            hd as u32,
            scale,
            kv,
            splits,
            &partials,
        )
        .unwrap();
        assert_eq!(ops.len(), if splits > 1 { 2 } else { 1 });
        crate::gpu::submit(gpu, &ops.iter().collect::<Vec<_>>());
        let got: Vec<f32> = gpu.read(&out).unwrap();

        let group = heads / kv_heads;
        let mut want = Vec::with_capacity(tokens * q_dim);
        for t in 0..tokens {
            for h in 0..heads {
                let q_head = &q[t * q_dim + h * hd..t * q_dim + (h + 1) * hd];
                want.extend(attend(q_head, &keys, &values, position + t + 1, kv_dim, (h / group) * hd, scale));
            }
        }
        let case = format!("{heads}/{kv_heads}x{hd} T={tokens} pos={position} gain={q_gain} {kv:?} splits={splits}");
        assert!(got[tokens * q_dim..].iter().all(|&v| v == 7.0), "{case}: surplus tokens written");
        let live = &got[..tokens * q_dim];
        let abs = live.iter().zip(&want).fold(0f32, |m, (g, w)| m.max((g - w).abs()));
        // Each output is a convex combination of values in [-1, 1], so errors are absolute.
        // Scores: dot products summed in another order, ~sqrt(hd) * 6e-8 * |s| (~1e-6 at gain 8,
        // where |s| reaches ~10). Weights exp(s - max): Vulkan's exp may err by 3 + 2|x| ulp,
        // |x| <= ~20 here, so up to ~2.6e-6 relative, plus one rounding per online rescaling
        // (one per 64-key tile where the max grows); a relative error e on every weight moves a
        // convex combination by at most 2e. Weighted sums over n keys reassociate: random-sign
        // roundings grow like sqrt(n) * 6e-8 (1.5e-6 at n = 600; the linear worst case, 4e-5,
        // needs every rounding to go the same way). Together a few 1e-6; allow 1e-5.
        // (Measured: up to 9.5e-7 on lavapipe, 8.9e-7 on an H100.)
        assert!(abs < 1e-5, "{case}: max abs error {abs:e}");
        abs
    }

    #[test]
    fn matches_cpu_twin_in_decode() {
        let mut worst = 0f32;
        // (heads, kv heads, head_dim, position): context lengths 1, 2, 129 (a tile and one key),
        // several hundred; head_dim 32/64/80/256 and 8 (two threads of 64-key rows); groups of
        // 1, 2, 3, 8 and 16 heads (two workgroups of 8 per key head).
        for (h, kv, hd, pos) in [
            (9, 3, 80, 0),
            (4, 2, 64, 1),
            (4, 2, 32, 128),
            (9, 3, 80, 577),
            (2, 1, 256, 300),
            (3, 3, 8, 130),
            (16, 2, 64, 200),
            (16, 1, 32, 70),
            // MLA's shape: 16 heads over one 576-wide latent row, 4 heads per workgroup.
            (16, 1, 576, 150),
        ] {
            for gain in [1.0, 8.0] {
                for format in [KvFormat::F32, KvFormat::F16] {
                    worst = worst.max(check(h, kv, hd, 1, pos, gain, format, 1));
                }
            }
        }
        eprintln!("attention decode: max abs error {worst:e}");
    }

    #[test]
    fn split_keys_match_cpu_twin() {
        let mut worst = 0f32;
        // Flash-decoding: 2, 3 and 7 splits, with splits left empty by short contexts (pos 0: one
        // key, six empty splits), and uneven spans; prefill too (every token split alike).
        for (h, kv, hd, t, pos, splits) in [
            (9, 3, 80, 1, 577, 3),
            (4, 2, 64, 1, 0, 7),
            (4, 2, 64, 1, 5, 7),
            (16, 2, 64, 1, 300, 2),
            (4, 2, 32, 5, 200, 3),
            (16, 1, 576, 1, 300, 2),
        ] {
            for format in [KvFormat::F32, KvFormat::F16] {
                worst = worst.max(check(h, kv, hd, t, pos, 8.0, format, splits));
            }
        }
        eprintln!("attention with split keys: max abs error {worst:e}");
    }

    #[test]
    fn workgroups_serve_as_many_heads_as_16_kib_hold() {
        // Unchanged for the usual heads (a whole group up to 8); MLA's 576-wide latent: 4.
        assert_eq!([heads_per_workgroup(4, 64), heads_per_workgroup(8, 128), heads_per_workgroup(3, 80)], [4, 8, 3]);
        assert_eq!(heads_per_workgroup(16, 576), 4);
        assert!(workgroup_bytes(4, 576) <= WORKGROUP_BYTES && workgroup_bytes(8, 576) > WORKGROUP_BYTES);
    }

    #[test]
    fn rejects_head_dims_it_cannot_hold() {
        let gpu = gpu();
        let step = Step::new(gpu);
        let b = gpu.storage_zeroed("b", 1024);
        for (h, kv, hd) in [(4, 2, 66), (4, 2, 1028), (4, 3, 64), (4, 0, 64)] {
            let op = ops(gpu, &step.buffer, &b, &b, &b, &b, 1, h, kv, hd, 1.0, KvFormat::F32, 1, &b);
            assert!(op.is_err(), "{h}/{kv}x{hd}");
        }
    }

    #[test]
    fn matches_cpu_twin_in_prefill() {
        let mut worst = 0f32;
        // (heads, kv heads, head_dim, tokens, position): a first chunk, and chunks after a prefix.
        for (h, kv, hd, t, pos) in
            [(9, 3, 80, 5, 0), (4, 2, 64, 33, 0), (4, 2, 32, 33, 300), (9, 3, 64, 5, 600), (16, 1, 576, 7, 40)]
        {
            for gain in [1.0, 8.0] {
                for format in [KvFormat::F32, KvFormat::F16] {
                    worst = worst.max(check(h, kv, hd, t, pos, gain, format, 1));
                }
            }
        }
        eprintln!("attention prefill: max abs error {worst:e}");
    }
}
