//! RMSNorm (`shaders/rms_norm.wgsl`); CPU twin: `ops::rms_norm`.

use super::Columns;
use crate::gpu::{Gpu, Op};
use crate::Result;
use bytemuck::{Pod, Zeroable};

const SOURCE: &str = include_str!("../../../shaders/rms_norm.wgsl");
const WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows_per_token: u32,
    dim: u32,
    eps: f32,
    last: u32,
    x_offset: u32,
    x_stride: u32,
    _pad: [u32; 2],
}

impl Params {
    fn new(rows_per_token: u32, dim: u32, eps: f32, last: bool) -> Params {
        let (x_offset, x_stride, last) = (0, rows_per_token * dim, u32::from(last));
        Params { rows_per_token, dim, eps, last, x_offset, x_stride, _pad: [0; 2] }
    }
}

/// An op normalising up to `max_tokens * rows_per_token` rows of `dim` from `x` into `out`.
#[allow(clippy::too_many_arguments)]
pub fn op(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    x: &wgpu::Buffer,
    weight: &wgpu::Buffer,
    out: &wgpu::Buffer,
    max_tokens: u32,
    rows_per_token: u32,
    dim: u32,
    eps: f32,
) -> Result<Op> {
    let x = Columns { buffer: x, offset: 0, stride: rows_per_token * dim };
    columns_op(gpu, step, x, weight, out, max_tokens, rows_per_token, dim, eps)
}

/// [`op`] over the `rows_per_token * dim` columns of `x` from `x.offset` (each token's row of x
/// being `x.stride` wide): the q or k part of the fused q|k|v projection.
#[allow(clippy::too_many_arguments)]
pub fn columns_op(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    x: Columns,
    weight: &wgpu::Buffer,
    out: &wgpu::Buffer,
    max_tokens: u32,
    rows_per_token: u32,
    dim: u32,
    eps: f32,
) -> Result<Op> {
    let Columns { buffer, offset: x_offset, stride: x_stride } = x;
    let params = Params { x_offset, x_stride, ..Params::new(rows_per_token, dim, eps, false) };
    build(gpu, step, buffer, weight, out, max_tokens * rows_per_token, params)
}

/// An op normalising only the step's last token (its `rows_per_token` rows of `dim`) from `x`
/// into the first rows of `out`: where only the last position's logits are read.
#[allow(clippy::too_many_arguments)]
pub fn last_op(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    x: &wgpu::Buffer,
    weight: &wgpu::Buffer,
    out: &wgpu::Buffer,
    rows_per_token: u32,
    dim: u32,
    eps: f32,
) -> Result<Op> {
    build(gpu, step, x, weight, out, rows_per_token, Params::new(rows_per_token, dim, eps, true))
}

fn build(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    x: &wgpu::Buffer,
    weight: &wgpu::Buffer,
    out: &wgpu::Buffer,
    workgroups: u32,
    params: Params,
) -> Result<Op> {
    let kernel = gpu.kernel("rms_norm", SOURCE, &[("WG", WG as f64)])?;
    let params = gpu.uniform("rms_norm params", &params);
    Ok(gpu.op("rms_norm", &kernel, &[&params, step, x, weight, out], [workgroups, 1, 1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::kernels::testing::{gpu, max_relative_error, random};
    use crate::gpu::step::Step;
    use crate::ops::rms_norm;

    #[test]
    fn matches_cpu_twin_on_awkward_sizes() {
        let gpu = gpu();
        // (tokens, rows per token, dim): dims not multiples of the workgroup; one and many tokens.
        for (tokens, rows, dim) in [(1, 1, 1), (1, 1, 577), (7, 1, 64), (3, 5, 33), (2, 9, 130)] {
            let x = random(tokens * rows * dim, 1);
            let w = random(dim, 2);
            let step = Step::new(gpu);
            step.set(gpu, tokens as u32, 0);
            let (xb, wb) = (gpu.storage("x", &x), gpu.storage("w", &w));
            let out = gpu.storage_zeroed("out", (x.len() * 4) as u64);
            // Built for more tokens than run: the extra workgroups must not write.
            let op = op(gpu, &step.buffer, &xb, &wb, &out, tokens as u32 + 2, rows as u32, dim as u32, 1e-5).unwrap();
            crate::gpu::submit(gpu, &[&op]);
            let got: Vec<f32> = gpu.read(&out).unwrap();
            let mut want = x.clone();
            rms_norm(&mut want, &w, 1e-5);
            // f32 sums in a different order: a few ulps of values of order 1.
            let err = max_relative_error(&got, &want);
            assert!(err < 1e-5, "{tokens}x{rows}x{dim}: {err:e}");
        }
    }

    #[test]
    fn columns_of_wider_rows_match_cpu_twin() {
        // Per-head norms of k inside fused q|k|v rows: tokens x [q 40 | k 3 x 12 | v 36].
        let gpu = gpu();
        let (tokens, rows, dim, offset, stride) = (5, 3, 12, 40, 112);
        let x = random(tokens * stride, 5);
        let w = random(dim, 6);
        let step = Step::new(gpu);
        step.set(gpu, tokens as u32, 0);
        let (xb, wb) = (gpu.storage("x", &x), gpu.storage("w", &w));
        let out = gpu.storage_zeroed("out", (tokens * rows * dim * 4) as u64);
        let cols = Columns { buffer: &xb, offset: offset as u32, stride: stride as u32 };
        let op = columns_op(gpu, &step.buffer, cols, &wb, &out, tokens as u32, rows as u32, dim as u32, 1e-6).unwrap();
        crate::gpu::submit(gpu, &[&op]);
        let got: Vec<f32> = gpu.read(&out).unwrap();
        let mut want: Vec<f32> =
            (0..tokens).flat_map(|t| x[t * stride + offset..t * stride + offset + rows * dim].to_vec()).collect();
        rms_norm(&mut want, &w, 1e-6);
        let err = max_relative_error(&got, &want);
        assert!(err < 1e-5, "{err:e}");
    }

    #[test]
    fn last_token_only_matches_cpu_twin() {
        let gpu = gpu();
        for (tokens, rows, dim) in [(1, 1, 577), (7, 1, 64), (3, 5, 33), (9, 2, 130)] {
            let x = random(tokens * rows * dim, 3);
            let w = random(dim, 4);
            let step = Step::new(gpu);
            step.set(gpu, tokens as u32, 0);
            let (xb, wb) = (gpu.storage("x", &x), gpu.storage("w", &w));
            // Poisoned: only the first `rows` rows may be written.
            let out = gpu.storage("out", &vec![f32::NAN; x.len()]);
            let op = last_op(gpu, &step.buffer, &xb, &wb, &out, rows as u32, dim as u32, 1e-5).unwrap();
            crate::gpu::submit(gpu, &[&op]);
            let got: Vec<f32> = gpu.read(&out).unwrap();
            let mut want = x[(tokens - 1) * rows * dim..].to_vec();
            rms_norm(&mut want, &w, 1e-5);
            let err = max_relative_error(&got[..rows * dim], &want);
            assert!(err < 1e-5, "{tokens}x{rows}x{dim}: {err:e}");
            assert!(got[rows * dim..].iter().all(|v| v.is_nan()), "{tokens}x{rows}x{dim}: wrote past the last token");
        }
    }
}
