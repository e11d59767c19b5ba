//! SwiGLU gating (`shaders/swiglu.wgsl`); CPU twin: `ops::silu_mul`.

use super::grid_2d;
use crate::gpu::{Gpu, Op};
use crate::Result;
use bytemuck::{Pod, Zeroable};

const SOURCE: &str = include_str!("../../../shaders/swiglu.wgsl");
const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows_per_token: u32,
    dim: u32,
    _pad: [u32; 2],
}

/// An op computing `out = silu(gate) * up` over `n_tokens * rows_per_token` rows of `dim`
/// (`n_tokens` from `step`), built for up to `max_tokens` tokens. `rows_per_token` is 1 for a
/// dense FFN and k (experts per token) for the MoE slots.
#[allow(clippy::too_many_arguments)]
pub fn op(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    gate: &wgpu::Buffer,
    up: &wgpu::Buffer,
    out: &wgpu::Buffer,
    max_tokens: u32,
    rows_per_token: u32,
    dim: u32,
) -> Result<Op> {
    let kernel = gpu.kernel("swiglu", SOURCE, &[("WG", WG as f64)])?;
    let params = gpu.uniform("swiglu params", &Params { rows_per_token, dim, _pad: [0; 2] });
    let grid = grid_2d(gpu, u64::from(max_tokens) * u64::from(rows_per_token) * u64::from(dim), WG);
    Ok(gpu.op("swiglu", &kernel, &[&params, step, gate, up, out], grid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::kernels::testing::{gpu, random};
    use crate::gpu::step::Step;
    use crate::ops::silu_mul;

    #[test]
    fn matches_cpu_twin_on_awkward_sizes() {
        let gpu = gpu();
        let mut worst = 0f32; // in units of f32::EPSILON * |want|
                              // (tokens, rows per token, dim, input magnitude): 30 drives exp(-g) to 1e13 and 1e-13.
        for (tokens, rows, dim, mag) in [(1, 1, 1, 1.0), (1, 1, 1408, 4.0), (5, 8, 77, 1.0), (33, 1, 300, 30.0)] {
            let max_tokens = tokens + 2;
            let n = max_tokens * rows * dim;
            let gate: Vec<f32> = random(n, 3).iter().map(|v| v * mag).collect();
            let up = random(n, 4);
            let step = Step::new(gpu);
            step.set(gpu, tokens as u32, 0);
            let (gb, ub) = (gpu.storage("gate", &gate), gpu.storage("up", &up));
            let out = gpu.storage("out", &vec![7.0f32; n]);
            let op = op(gpu, &step.buffer, &gb, &ub, &out, max_tokens as u32, rows as u32, dim as u32).unwrap();
            crate::gpu::submit(gpu, &[&op]);
            let got: Vec<f32> = gpu.read(&out).unwrap();
            let live = tokens * rows * dim;
            let want = silu_mul(&gate[..live], &up[..live]);
            // Elementwise: exp (Vulkan allows 3 + 2|x| ulp, so ~63 ulp at |x| = 30, relative),
            // then 1 + e, a division (2.5 ulp) and a multiply; the exp error is damped by
            // e / (1 + e) < 1. Relative to each value: 3 + 2|g| + 5 ulp, checked per element.
            for (i, (g, w)) in got[..live].iter().zip(&want).enumerate() {
                let ulps = 8.0 + 2.0 * gate[i].abs();
                worst = worst.max((g - w).abs() / (f32::EPSILON * w.abs()).max(f32::MIN_POSITIVE));
                assert!((g - w).abs() <= ulps * f32::EPSILON * w.abs(), "{tokens}x{rows}x{dim} [{i}]: {g} vs {w}");
            }
            assert!(got[live..].iter().all(|&v| v == 7.0), "surplus rows were written");
        }
        eprintln!("swiglu: max error {worst} eps relative");
    }
}
