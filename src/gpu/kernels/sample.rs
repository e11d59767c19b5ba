//! The GPU sampler (`shaders/sample.wgsl`, after `shaders/sample_argmax.wgsl`): the next token
//! from the last logits row, written where the next step's embedding reads it and into a
//! readback ring. CPU twin: [`crate::sampler::sample`], which it matches bit for bit (integer
//! weights and sums; see `src/sampler.rs`).
//!
//! Per request: [`start`] writes the request's settings and zeroes the step counter. Per
//! generated token: the two ops of [`ops`] (or the one, slower, of [`op`]; built once) read the
//! counter n, sample with the uniform of (seed, n) and increment it, so the k-th token of a
//! request uses step k exactly as `engine::generate` calls the CPU sampler.

use super::sample_argmax;
use crate::gpu::{Gpu, Op};
use crate::sampler::{exp2_tables, Plan, SamplingParams};
use crate::{Error, Result};
use bytemuck::{Pod, Zeroable};

const SOURCE: &str = include_str!("../../../shaders/sample.wgsl");
/// Top-k candidate sets up to this size are compacted into workgroup memory.
const CAP: u32 = 1024;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    vocab: u32,
    ring_len: u32,
    last_row: u32,
    _pad: u32,
}

/// The request uniform (binding 2): a [`Plan`] as the kernel reads it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct Request {
    pub greedy: u32,
    pub top_k: u32,
    pub use_top_p: u32,
    pub top_p24: u32,
    pub scale: f32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    pub _pad: u32,
}

impl Request {
    pub fn new(params: &SamplingParams, vocab: usize) -> Request {
        let plan = Plan::new(params, vocab);
        Request {
            greedy: plan.greedy as u32,
            top_k: plan.top_k,
            use_top_p: plan.top_p24.is_some() as u32,
            top_p24: plan.top_p24.unwrap_or(0),
            scale: plan.scale,
            seed_lo: params.seed as u32,
            seed_hi: (params.seed >> 32) as u32,
            _pad: 0,
        }
    }
}

/// The buffers the sampler reads and writes besides the logits and token ids.
pub struct SamplerBuffers {
    /// Uniform [`Request`], rewritten by [`start`].
    pub request: wgpu::Buffer,
    /// u32 `[1]`: the generation step n.
    pub state: wgpu::Buffer,
    /// u32 `[ring_len]`: token of step n at `n % ring_len`.
    pub ring: wgpu::Buffer,
    pub ring_len: u32,
}

impl SamplerBuffers {
    /// For a ring of `ring_len` tokens.
    pub fn new(gpu: &Gpu, ring_len: u32) -> SamplerBuffers {
        SamplerBuffers {
            request: gpu.uniform("sample request", &Request::new(&SamplingParams::default(), 2)),
            state: gpu.storage_zeroed("sample state", 4),
            ring: gpu.storage_zeroed("sample ring", u64::from(ring_len.max(1)) * 4),
            ring_len: ring_len.max(1),
        }
    }
}

/// Starts a request: its settings for a vocabulary of `vocab`, and step 0 (queued writes,
/// ordered before the next submission).
pub fn start(gpu: &Gpu, buffers: &SamplerBuffers, params: &SamplingParams, vocab: usize) {
    gpu.queue.write_buffer(&buffers.request, 0, bytemuck::bytes_of(&Request::new(params, vocab)));
    gpu.queue.write_buffer(&buffers.state, 0, bytemuck::bytes_of(&0u32));
}

/// The two ops (sample_argmax over many workgroups, then sample in one) drawing from `logits`
/// (f32 `[vocab]`; with `last_row`, the step's last row of f32 `[n_tokens, vocab]`) into
/// `token_ids[0]` and `buffers.ring[n % ring_len]`. Encode both, in order, once per token.
pub fn ops(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    buffers: &SamplerBuffers,
    logits: &wgpu::Buffer,
    token_ids: &wgpu::Buffer,
    vocab: u32,
    last_row: bool,
) -> Result<[Op; 2]> {
    let mut ops = build(gpu, step, buffers, logits, token_ids, vocab, last_row, true, false)?;
    let second = ops.pop().expect("two ops");
    Ok([ops.pop().expect("two ops"), second])
}

/// The sampler as one op (one workgroup makes every pass; greedy draws are ~2x slower than
/// with [`ops`] on a large GPU).
pub fn op(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    buffers: &SamplerBuffers,
    logits: &wgpu::Buffer,
    token_ids: &wgpu::Buffer,
    vocab: u32,
    last_row: bool,
) -> Result<Op> {
    let mut ops = build(gpu, step, buffers, logits, token_ids, vocab, last_row, false, false)?;
    Ok(ops.pop().expect("one op"))
}

/// `ops` (`split`) or `op`, with `debug` in the kernel's test mode (its workings to the ring).
#[allow(clippy::too_many_arguments)]
fn build(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    buffers: &SamplerBuffers,
    logits: &wgpu::Buffer,
    token_ids: &wgpu::Buffer,
    vocab: u32,
    last_row: bool,
    split: bool,
    debug: bool,
) -> Result<Vec<Op>> {
    if vocab == 0 {
        return Err(Error::Gpu("sample: an empty vocabulary".into()));
    }
    let mut ops = Vec::new();
    // The per-block argmaxes; a placeholder when not split.
    let partials = gpu.storage_zeroed("sample partials", u64::from(sample_argmax::blocks(vocab)) * 8);
    if split {
        ops.push(sample_argmax::op(gpu, step, logits, &partials, vocab, last_row)?);
    }
    let constants = [("CAP", CAP as f64), ("SPLIT", split as u32 as f64), ("DEBUG", debug as u32 as f64)];
    let kernel = gpu.kernel("sample", SOURCE, &constants)?;
    let params =
        gpu.uniform("sample params", &Params { vocab, ring_len: buffers.ring_len, last_row: last_row as u32, _pad: 0 });
    let tables = gpu.storage("sample exp2 tables", exp2_tables());
    let buffers =
        [&params, step, &buffers.request, logits, &tables, &buffers.state, token_ids, &buffers.ring, &partials];
    ops.push(gpu.op("sample", &kernel, &buffers, [1, 1, 1]));
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::kernels::testing::{gpu, random};
    use crate::gpu::step::Step;
    use crate::sampler::{key, sample, trace, Trace};

    /// Runs `draws` samples (steps 0..draws, one op replayed `draws` times in one submission)
    /// and returns the ring (the token of each step) and the final token_ids[0] and counter.
    fn gpu_draws(logits: &[f32], params: &SamplingParams, draws: usize) -> Vec<u32> {
        gpu_draws_with(logits, params, draws, true)
    }

    /// `gpu_draws` with the two ops (`split`) or the one.
    fn gpu_draws_with(logits: &[f32], params: &SamplingParams, draws: usize, split: bool) -> Vec<u32> {
        let gpu = gpu();
        let vocab = logits.len();
        let step = Step::new(gpu);
        step.set(gpu, 1, 0);
        let buffers = SamplerBuffers::new(gpu, draws as u32);
        let lb = gpu.storage("logits", logits);
        let ids = gpu.storage("token ids", &[u32::MAX; 4]);
        let ops = build(gpu, &step.buffer, &buffers, &lb, &ids, vocab as u32, false, split, false).unwrap();
        start(gpu, &buffers, params, vocab);
        crate::gpu::submit(gpu, &repeat(&ops.iter().collect::<Vec<_>>(), draws));
        let ring: Vec<u32> = gpu.read(&buffers.ring).unwrap();
        let ids: Vec<u32> = gpu.read(&ids).unwrap();
        let state: Vec<u32> = gpu.read(&buffers.state).unwrap();
        assert_eq!(state[0], draws as u32, "step counter");
        assert_eq!(ids, [ring[draws - 1], u32::MAX, u32::MAX, u32::MAX], "token_ids[0] holds the last token");
        ring
    }

    /// `ops` `n` times over, in order.
    fn repeat<'a>(ops: &[&'a Op], n: usize) -> Vec<&'a Op> {
        (0..n).flat_map(|_| ops.iter().copied()).collect()
    }

    /// The kernel's workings at step `s` (debug mode), as a [`Trace`].
    fn gpu_trace(logits: &[f32], params: &SamplingParams, s: u32, split: bool) -> Trace {
        let gpu = gpu();
        let step = Step::new(gpu);
        step.set(gpu, 1, 0);
        let buffers = SamplerBuffers::new(gpu, 11);
        let lb = gpu.storage("logits", logits);
        let ids = gpu.storage_zeroed("token ids", 4);
        let vocab = logits.len() as u32;
        let ops = build(gpu, &step.buffer, &buffers, &lb, &ids, vocab, false, split, true).unwrap();
        start(gpu, &buffers, params, logits.len());
        gpu.queue.write_buffer(&buffers.state, 0, bytemuck::bytes_of(&s));
        crate::gpu::submit(gpu, &ops.iter().collect::<Vec<_>>());
        let r: Vec<u32> = gpu.read(&buffers.ring).unwrap();
        let wide = |lo: u32, hi: u32| lo as u64 | (hi as u64) << 32;
        Trace {
            token: r[0],
            u: r[1],
            z: wide(r[2], r[3]),
            kept: wide(r[4], r[5]),
            target: wide(r[6], r[7]),
            kth: r[8],
            tie_last: r[9],
            tau: r[10],
        }
    }

    /// Logits like a language model's: a few strong tokens over a long tail, scaled.
    fn lm_logits(vocab: usize, seed: u64) -> Vec<f32> {
        let r = random(vocab, seed);
        let spikes = random(16, seed + 1);
        let mut l: Vec<f32> = r.iter().map(|v| v * 4.0).collect();
        for (j, s) in spikes.iter().enumerate() {
            let at = ((s.abs() * vocab as f32) as usize + j * 7919) % vocab;
            l[at] = 8.0 + s * 3.0;
        }
        l
    }

    #[test]
    fn greedy_is_the_exact_argmax() {
        for vocab in [1usize, 7, 1000, 49152, 151_936] {
            let mut logits = lm_logits(vocab, vocab as u64);
            // A tie for the maximum: the lower id wins.
            if vocab > 100 {
                logits[vocab - 3] = 20.0;
                logits[vocab / 2 + 1] = 20.0;
            }
            let want = crate::sampler::argmax(&logits);
            for params in
                [SamplingParams::default(), SamplingParams { temperature: 0.8, top_k: 1, top_p: 0.9, seed: 3 }]
            {
                for split in [true, false] {
                    let got = gpu_draws_with(&logits, &params, 2, split);
                    assert_eq!(got, vec![want; 2], "vocab {vocab} split {split}");
                }
                assert_eq!(sample(&logits, &params, 0), want);
            }
        }
    }

    #[test]
    fn draws_match_the_cpu_twin() {
        // Settings across the kernel's paths: no top-k, compacted top-k, top-k > CAP, top-p on
        // each, tiny top-p, temperatures that flatten and sharpen.
        let settings = [
            (1.0, 0, 1.0),
            (0.7, 0, 0.9),
            (1.5, 40, 1.0),
            (1.0, 40, 0.8),
            (0.5, 5, 0.95),
            (2.0, 1500, 1.0),
            (1.0, 1500, 0.5),
            (1.0, 0, 0.05),
            (3.0, 1000, 0.999),
        ];
        let mut total = 0;
        for vocab in [1000usize, 49152] {
            let logits = lm_logits(vocab, 11 + vocab as u64);
            let draws = if vocab > 10_000 { 24 } else { 64 };
            for (i, &(temperature, top_k, top_p)) in settings.iter().enumerate() {
                // Seeds with both halves set: the kernel's 64-bit arithmetic is emulated.
                let seed = 0x9E37_79B9_0000_0000u64.wrapping_mul(i as u64 + 1) ^ (vocab as u64 * 7_777_777);
                let params = SamplingParams { temperature, top_k, top_p, seed };
                let got = gpu_draws(&logits, &params, draws);
                let want: Vec<u32> = (0..draws as u64).map(|s| sample(&logits, &params, s)).collect();
                assert_eq!(got, want, "vocab {vocab} {params:?}");
                total += draws;
            }
        }
        assert_eq!(total, 9 * (64 + 24));
    }

    #[test]
    fn ties_and_infinities_match_the_cpu_twin() {
        // Logits on a coarse grid (many exact ties, at the top-k and the nucleus edges), some
        // -inf (weight 0), and a row where everything ties.
        let vocab = 3001;
        let mut grid: Vec<f32> = random(vocab, 5).iter().map(|v| (v * 8.0).round() * 0.5).collect();
        for i in (0..vocab).step_by(13) {
            grid[i] = f32::NEG_INFINITY;
        }
        let flat = vec![0.25f32; 777];
        for (logits, name) in [(&grid, "grid"), (&flat, "flat")] {
            for (j, &(temperature, top_k, top_p)) in
                [(1.0, 0, 1.0), (1.0, 37, 1.0), (0.9, 0, 0.6), (1.2, 200, 0.7), (1.0, 1200, 0.3)].iter().enumerate()
            {
                let params = SamplingParams { temperature, top_k, top_p, seed: 77 + j as u64 };
                let got = gpu_draws(logits, &params, 48);
                let want: Vec<u32> = (0..48).map(|s| sample(logits, &params, s)).collect();
                assert_eq!(got, want, "{name} {params:?}");
            }
        }
    }

    /// The smallest f32 in (lo, hi] at which `flips` holds (it must be monotone: false at lo,
    /// true at hi), found by bisection over the ordered bit patterns.
    fn flip_point(lo: f32, hi: f32, flips: impl Fn(f32) -> bool) -> f32 {
        let (mut a, mut b) = (key(lo), key(hi));
        let from_key = |k: u32| f32::from_bits(if k & 0x8000_0000 != 0 { k & 0x7fff_ffff } else { !k });
        assert!(!flips(lo) && flips(hi));
        while b - a > 1 {
            let mid = a + (b - a) / 2;
            if flips(from_key(mid)) {
                b = mid;
            } else {
                a = mid;
            }
        }
        from_key(b)
    }

    #[test]
    fn agrees_at_the_exact_edges() {
        // Random draws almost never land within one unit of an edge, so they cannot show that
        // the GPU computes the same integers. Here logits are searched (on the CPU twin) for
        // the last f32 at which the choice is still one way; both it and the next f32 must
        // give the GPU the CPU's answer. Two tokens [0, x]: token 1 is drawn at step s iff
        // floor((w0 + w(x)) * u_s / 2^24) >= w0, and with top-p it is in the nucleus iff
        // w0 < M(x).
        let mut edges = 0;
        for (i, &(temperature, top_p)) in
            [(1.0f32, 1.0f32), (0.7, 1.0), (1.9, 1.0), (1.0, 0.8), (0.6, 0.55)].iter().enumerate()
        {
            let seed = 0xF00D_0000_0000_0001u64.wrapping_mul(i as u64 + 3);
            let params = SamplingParams { temperature, top_k: 0, top_p, seed };
            for s in 0..6u64 {
                let picks_1 = |x: f32| sample(&[0.0, x], &params, s) == 1;
                if !picks_1(0.0) {
                    continue; // u_s too small: token 1 is not drawn even at equal logits
                }
                let x = flip_point(-30.0, 0.0, picks_1);
                let before = f32::from_bits(if x > 0.0 { x.to_bits() - 1 } else { x.to_bits() + 1 });
                for (v, want) in [(before, 0), (x, 1)] {
                    assert_eq!(sample(&[0.0, v], &params, s), want);
                    let got = gpu_draws(&[0.0, v], &params, s as usize + 1)[s as usize];
                    assert_eq!(got, want, "T {temperature} top_p {top_p} step {s} x {v:e}");
                }
                edges += 1;
            }
        }
        assert!(edges >= 12, "{edges}");
    }

    #[test]
    fn workings_match_the_cpu_twin_bit_for_bit() {
        // Every integer the draw is decided by (the random bits, the candidates' and the
        // nucleus' total weights, the target, the top-k and top-p thresholds): one unit off in
        // any weight would show here, where it would almost never change a drawn token.
        let mut checked = 0;
        for (vocab, seed) in [(1000usize, 1u64), (3001, 2), (49152, 3)] {
            let mut logits = lm_logits(vocab, seed);
            // Some ties and -inf.
            for i in (0..vocab).step_by(97) {
                logits[i] = logits[i / 2].max(-3.0);
            }
            for i in (5..vocab).step_by(389) {
                logits[i] = f32::NEG_INFINITY;
            }
            for (j, &(temperature, top_k, top_p)) in
                [(1.0, 0, 1.0), (0.8, 0, 0.9), (1.3, 50, 1.0), (1.0, 600, 0.85), (2.0, 1100, 0.97), (0.5, 3, 0.2)]
                    .iter()
                    .enumerate()
            {
                let params = SamplingParams { temperature, top_k, top_p, seed: u64::MAX - j as u64 * 0x1234_5678_9abc };
                for s in [0u32, 1, 0xffff_ffff] {
                    let want = trace(&logits, &params, s as u64).expect("not greedy");
                    assert_eq!(gpu_trace(&logits, &params, s, s != 1), want, "vocab {vocab} {params:?} step {s}");
                    checked += 1;
                }
            }
        }
        // Logits on a coarse grid: the k-th key is tied many times over, with top-k both
        // compacted (37) and not (1100 > CAP), and the nucleus reaching down to it.
        let grid: Vec<f32> = random(3001, 5).iter().map(|v| (v * 8.0).round() * 0.5).collect();
        for (temperature, top_k, top_p) in [(1.0, 37, 1.0), (1.0, 37, 0.999), (1.0, 1100, 1.0), (3.0, 1100, 0.999)] {
            let params = SamplingParams { temperature, top_k, top_p, seed: 42 };
            let want = trace(&grid, &params, 9).expect("not greedy");
            let k = top_k;
            let keys_at_kth = grid.iter().filter(|&&l| key(l) == want.kth).count();
            let above = grid.iter().filter(|&&l| key(l) > want.kth).count();
            assert!(above < k && above + keys_at_kth > k, "the k-th key must be tied beyond k");
            assert_eq!(gpu_trace(&grid, &params, 9, top_k != 37), want, "grid {params:?}");
            checked += 1;
        }
        assert_eq!(checked, 58);
    }

    #[test]
    fn target_exactly_on_a_boundary() {
        // A target equal to a running sum of the kept weights (the walk must then take the
        // next token) happens for one u in ~2^24 * 512: a logit is nudged until such a u
        // exists, and seeds are searched for it; then the GPU draws at that seed. Cases: the
        // whole vocabulary (5 tokens: the threads' shares meet at each boundary), compacted
        // top-k (3 of 5), and compacted top-k with 3 items per thread (600 of 700, boundary
        // inside a thread's block).
        use crate::sampler::{scale24, uniform_bits, weight, DRAW_THREADS};
        for (vocab, top_k, interior) in [(5usize, 0usize, false), (5, 3, false), (700, 600, true)] {
            let mut logits = random(vocab, 31);
            logits[..5].copy_from_slice(&[0.3, -0.2, 0.9, 0.0, -1.1]);
            let u = (0..5000)
                .find_map(|j| {
                    logits[3] = j as f32 * 1e-4;
                    let max = logits[crate::sampler::argmax(&logits) as usize];
                    let w = |i: u32| weight(logits[i as usize], max, std::f32::consts::LOG2_E) as u64;
                    // The kept tokens (top-k by key, ties to the lower id) in draw order.
                    let mut kept: Vec<u32> = (0..vocab as u32).collect();
                    kept.sort_by(|&a, &b| key(logits[b as usize]).cmp(&key(logits[a as usize])).then(a.cmp(&b)));
                    kept.truncate(if top_k == 0 { vocab } else { top_k });
                    kept.sort_by_key(|&i| (i % DRAW_THREADS, i / DRAW_THREADS));
                    let total: u64 = kept.iter().map(|&i| w(i)).sum();
                    let per_thread = (kept.len() as u32).div_ceil(DRAW_THREADS);
                    let mut acc = 0;
                    (0..kept.len() - 1).find_map(|p| {
                        acc += w(kept[p]);
                        if interior && p as u32 % per_thread == per_thread - 1 {
                            return None;
                        }
                        let u = (acc << 24).div_ceil(total);
                        (u < 1 << 24 && scale24(total, u as u32) == acc).then_some(u as u32)
                    })
                })
                .expect("some nudge puts a target on a boundary");
            let seed = (0u64..1 << 28).find(|&seed| uniform_bits(seed, 0) == u).expect("a seed for u");
            let params = SamplingParams { temperature: 1.0, top_k, top_p: 1.0, seed };
            let want = trace(&logits, &params, 0).expect("not greedy");
            assert_eq!(want.u, u);
            assert_eq!(gpu_trace(&logits, &params, 0, true), want, "vocab {vocab} top_k {top_k}");
        }
    }

    #[test]
    fn nucleus_edge_is_inclusive() {
        // Two tokens [0, x] and a top_p for which M equals the top token's weight exactly:
        // "weigh at least M" keeps the top token alone (a strict comparison would keep both).
        let w0 = 1u64 << 31;
        let mut found = 0;
        for step in 0..20_000u32 {
            let x = -0.1 - step as f32 * 1e-4;
            let z = w0 + crate::sampler::weight(x, 0.0, std::f32::consts::LOG2_E) as u64;
            let p24 = (w0 << 24).div_ceil(z);
            if crate::sampler::scale24(z, p24 as u32) != w0 {
                continue;
            }
            let params =
                SamplingParams { temperature: 1.0, top_k: 0, top_p: p24 as f32 / (1u32 << 24) as f32, seed: 8 };
            let want = trace(&[0.0, x], &params, 0).expect("not greedy");
            assert_eq!((want.z, want.kept, want.token), (z, w0, 0));
            assert_eq!(gpu_trace(&[0.0, x], &params, 0, true), want, "x {x}");
            found += 1;
            if found == 3 {
                break;
            }
        }
        assert_eq!(found, 3);
    }

    #[test]
    fn samples_the_last_row_and_wraps_the_ring() {
        let gpu = gpu();
        let (vocab, tokens) = (500usize, 3usize);
        let logits = random(vocab * tokens, 8);
        let last = &logits[(tokens - 1) * vocab..];
        let params = SamplingParams { temperature: 1.0, top_k: 50, top_p: 0.9, seed: 4 };
        let step = Step::new(gpu);
        step.set(gpu, tokens as u32, 0);
        let buffers = SamplerBuffers::new(gpu, 4);
        let lb = gpu.storage("logits", &logits);
        let ids = gpu.storage_zeroed("ids", 4);
        let [first, second] = ops(gpu, &step.buffer, &buffers, &lb, &ids, vocab as u32, true).unwrap();
        // Ten steps into a ring of four: it holds steps 8, 9, 6, 7.
        start(gpu, &buffers, &params, vocab);
        crate::gpu::submit(gpu, &repeat(&[&first, &second], 10));
        let ring: Vec<u32> = gpu.read(&buffers.ring).unwrap();
        let want: Vec<u32> = [8, 9, 6, 7].iter().map(|&s| sample(last, &params, s)).collect();
        assert_eq!(ring, want);
        // A new request restarts at step 0.
        // The one-op sampler agrees, and a new request restarts at step 0.
        let single = op(gpu, &step.buffer, &buffers, &lb, &ids, vocab as u32, true).unwrap();
        start(gpu, &buffers, &params, vocab);
        crate::gpu::submit(gpu, &[&single]);
        assert_eq!(gpu.read::<u32>(&buffers.ring).unwrap()[0], sample(last, &params, 0));
        assert_eq!(gpu.read::<u32>(&buffers.state).unwrap(), vec![1]);
    }
}
