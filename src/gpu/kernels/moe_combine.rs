//! MoE combine: weighted routed experts + (gated) shared expert into the residual stream
//! (`shaders/moe_combine.wgsl`). CPU twin: [`combine`], the sums of `ReferenceModel::moe` and
//! the residual add of `ReferenceModel::forward`, in their order.

use super::Columns;
use crate::gpu::{Gpu, Op};
use crate::ops::sigmoid;
use crate::{Error, Result};
use bytemuck::{Pod, Zeroable};

const SOURCE: &str = include_str!("../../../shaders/moe_combine.wgsl");
const WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    dim: u32,
    top_k: u32,
    shared_mode: u32,
    residual_multiplier: f32,
    gate_offset: u32,
    gate_stride: u32,
    _pad: [u32; 2],
}

/// An op adding, for each of the step's T tokens (at most `max_tokens`),
/// `residual_multiplier * (sum_s expert_weights[t, s] * expert_out[t * top_k + s, :] + scale * shared_out[t, :])`
/// to `x[t, :]` (f32 `[T, dim]`, in place). `shared_out` (f32 `[T, dim]`) is the shared
/// expert's output, if the model has one; `shared_gate_logit` (one column of f32 rows, as the
/// router's matmul writes it beside the experts' logits) its gate's logit, if gated (scale =
/// sigmoid of it; 1 otherwise).
#[allow(clippy::too_many_arguments)]
pub fn op(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    x: &wgpu::Buffer,
    expert_out: &wgpu::Buffer,
    expert_weights: &wgpu::Buffer,
    shared_out: Option<&wgpu::Buffer>,
    shared_gate_logit: Option<Columns>,
    max_tokens: u32,
    dim: u32,
    top_k: u32,
    residual_multiplier: f32,
) -> Result<Op> {
    let shared_mode = match (shared_out, shared_gate_logit) {
        (None, None) => 0,
        (Some(_), None) => 1,
        (Some(_), Some(_)) => 2,
        (None, Some(_)) => return Err(Error::Gpu("moe_combine: a shared-expert gate without a shared expert".into())),
    };
    let kernel = gpu.kernel("moe_combine", SOURCE, &[("WG", WG as f64)])?;
    let (gate_offset, gate_stride) = shared_gate_logit.map_or((0, 0), |g| (g.offset, g.stride));
    let params = Params { dim, top_k, shared_mode, residual_multiplier, gate_offset, gate_stride, _pad: [0; 2] };
    let params = gpu.uniform("moe_combine params", &params);
    // Absent inputs are bound to a placeholder the kernel never reads.
    let placeholder = gpu.storage_zeroed("moe_combine placeholder", 4);
    let shared_out = shared_out.unwrap_or(&placeholder);
    let gate = shared_gate_logit.map_or(&placeholder, |g| g.buffer);
    Ok(gpu.op(
        "moe_combine",
        &kernel,
        &[&params, step, x, expert_out, expert_weights, shared_out, gate],
        [dim.div_ceil(WG), max_tokens, 1],
    ))
}

/// The shared expert's contribution to [`combine`].
#[derive(Debug, Clone, Copy)]
pub enum Shared<'a> {
    None,
    /// Output `[T, dim]`, scale 1.
    Ungated(&'a [f32]),
    /// Output `[T, dim]` and gate logits `[T]`, scale sigmoid(logit).
    Gated(&'a [f32], &'a [f32]),
}

/// CPU twin: `x[t] += residual_multiplier * (sum_s w[t, s] * expert_out[t * k + s] + scale_t * shared[t])`,
/// summed as the reference sums (an accumulator from 0, slots in order, shared last).
pub fn combine(
    x: &mut [f32],
    expert_out: &[f32],
    expert_weights: &[f32],
    shared: Shared<'_>,
    dim: usize,
    top_k: usize,
    residual_multiplier: f32,
) {
    for (t, row) in x.chunks_exact_mut(dim).enumerate() {
        let mut acc = vec![0.0f32; dim];
        for s in 0..top_k {
            let w = expert_weights[t * top_k + s];
            let y = &expert_out[(t * top_k + s) * dim..(t * top_k + s + 1) * dim];
            acc.iter_mut().zip(y).for_each(|(a, b)| *a += b * w);
        }
        let (scale, y) = match shared {
            Shared::None => (0.0, None),
            Shared::Ungated(out) => (1.0, Some(out)),
            Shared::Gated(out, gate) => (sigmoid(gate[t]), Some(out)),
        };
        if let Some(y) = y {
            acc.iter_mut().zip(&y[t * dim..(t + 1) * dim]).for_each(|(a, b)| *a += b * scale);
        }
        row.iter_mut().zip(&acc).for_each(|(v, a)| *v += a * residual_multiplier);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::kernels::testing::{gpu, max_relative_error, random};
    use crate::gpu::step::Step;

    #[test]
    fn matches_cpu_twin_on_awkward_sizes() {
        let gpu = gpu();
        let mut cases = 0;
        for (tokens, dim) in [(1usize, 1usize), (1, 577), (7, 64), (33, 130)] {
            for k in [1usize, 2, 4, 8] {
                for mode in 0..3 {
                    let max_tokens = tokens + 2;
                    let seed = (tokens * 1000 + dim * 10 + k + mode * 7) as u64;
                    let x = random(max_tokens * dim, seed);
                    let expert_out = random(max_tokens * k * dim, seed + 1);
                    let weights: Vec<f32> = random(max_tokens * k, seed + 2).iter().map(|v| v.abs()).collect();
                    let shared_out = random(max_tokens * dim, seed + 3);
                    let gate: Vec<f32> = random(max_tokens, seed + 4).iter().map(|v| v * 4.0).collect();
                    let rm = if k == 2 { 0.22 } else { 1.0 };

                    let step = Step::new(gpu);
                    step.set(gpu, tokens as u32, 5);
                    let xb = gpu.storage("x", &x);
                    let (eb, wb) = (gpu.storage("expert_out", &expert_out), gpu.storage("w", &weights));
                    // The gate logit as column 1 of rows of 3 (as beside a router's logits).
                    let gate_rows: Vec<f32> = gate.iter().flat_map(|&g| [-9.0, g, 9.0]).collect();
                    let (sb, gb) = (gpu.storage("shared", &shared_out), gpu.storage("gate", &gate_rows));
                    let (s, g) = match mode {
                        0 => (None, None),
                        1 => (Some(&sb), None),
                        _ => (Some(&sb), Some(Columns { buffer: &gb, offset: 1, stride: 3 })),
                    };
                    let op = op(gpu, &step.buffer, &xb, &eb, &wb, s, g, max_tokens as u32, dim as u32, k as u32, rm)
                        .unwrap();
                    crate::gpu::submit(gpu, &[&op]);
                    let got: Vec<f32> = gpu.read(&xb).unwrap();

                    let mut want = x.clone();
                    let shared = match mode {
                        0 => Shared::None,
                        1 => Shared::Ungated(&shared_out),
                        _ => Shared::Gated(&shared_out, &gate),
                    };
                    combine(&mut want[..tokens * dim], &expert_out, &weights, shared, dim, k, rm);
                    // Surplus tokens untouched, bit for bit.
                    assert_eq!(got[tokens * dim..], x[tokens * dim..], "T {tokens} dim {dim} k {k} mode {mode}");
                    // Same additions in the same order; a GPU may fuse a multiply-add (one
                    // rounding fewer) and its exp (gate) is within a few ulps: each term is off
                    // by ~1e-7 of values of order 1, over <= 10 terms.
                    let err = max_relative_error(&got, &want);
                    assert!(err < 2e-6, "T {tokens} dim {dim} k {k} mode {mode}: {err:e}");
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, 48);
    }
}
