//! Scaled residual add (`shaders/add_scaled.wgsl`); CPU twin: `ops::add_scaled`.

use crate::gpu::{Gpu, Op};
use crate::Result;
use bytemuck::{Pod, Zeroable};

const SOURCE: &str = include_str!("../../../shaders/add_scaled.wgsl");
const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    dim: u32,
    scale: f32,
    _pad: [u32; 2],
}

/// Workgroups `[x, y, 1]` covering `elements` threads of `wg` each, one per thread, on a 2-D
/// grid (x at most the device's per-dimension limit) for kernels that index
/// `(wg.y * num_workgroups.x + wg.x) * WG + lid`.
pub(crate) fn grid_2d(gpu: &Gpu, elements: u64, wg: u32) -> [u32; 3] {
    let groups = elements.div_ceil(u64::from(wg)).max(1);
    let x = groups.min(u64::from(gpu.limits.max_compute_workgroups_per_dimension));
    [x as u32, groups.div_ceil(x) as u32, 1]
}

/// An op computing `x += y * scale` over the first `n_tokens * dim` values (`n_tokens` from
/// `step`), built for up to `max_tokens` tokens.
pub fn op(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    max_tokens: u32,
    dim: u32,
    scale: f32,
) -> Result<Op> {
    let kernel = gpu.kernel("add_scaled", SOURCE, &[("WG", WG as f64)])?;
    let params = gpu.uniform("add_scaled params", &Params { dim, scale, _pad: [0; 2] });
    let grid = grid_2d(gpu, u64::from(max_tokens) * u64::from(dim), WG);
    Ok(gpu.op("add_scaled", &kernel, &[&params, step, x, y], grid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::kernels::testing::{gpu, random};
    use crate::gpu::step::Step;
    use crate::ops::add_scaled;

    #[test]
    fn matches_cpu_twin_and_leaves_surplus_tokens_alone() {
        let gpu = gpu();
        let mut worst = 0f32;
        for (tokens, dim, scale) in [(1, 1, 0.22), (1, 2049, 1.0), (5, 333, 0.5), (33, 96, -3.0)] {
            let max_tokens = tokens + 3;
            let x = random(max_tokens * dim, 1);
            let y = random(max_tokens * dim, 2);
            let step = Step::new(gpu);
            step.set(gpu, tokens as u32, 17);
            let (xb, yb) = (gpu.storage("x", &x), gpu.storage("y", &y));
            let op = op(gpu, &step.buffer, &xb, &yb, max_tokens as u32, dim as u32, scale).unwrap();
            crate::gpu::submit(gpu, &[&op]);
            let got: Vec<f32> = gpu.read(&xb).unwrap();
            let mut want = x.clone();
            add_scaled(&mut want[..tokens * dim], &y, scale);
            // One multiply and one add, each correctly rounded in WGSL as in Rust; a fused
            // multiply-add (allowed to the driver) rounds once instead: at most half an ulp
            // of |y * scale| <= 3 apart, which exact equality would reject, so allow 1 ulp of 4.
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                worst = worst.max((g - w).abs());
                assert!((g - w).abs() <= 4.0 * f32::EPSILON, "{tokens}x{dim} [{i}]: {g} vs {w}");
            }
        }
        eprintln!("add_scaled: max abs error {worst:e}");
    }

    #[test]
    fn grid_covers_more_than_one_row_of_workgroups() {
        let gpu = gpu();
        let max = gpu.limits.max_compute_workgroups_per_dimension as u64;
        let [x, y, _] = grid_2d(gpu, max * 256 + 1, 256);
        assert_eq!((x as u64, y), (max, 2));
        assert_eq!(grid_2d(gpu, 0, 256), [1, 1, 1]);
    }
}
