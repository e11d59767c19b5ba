//! Seeded INT4 weights written on the device (`shaders/generate_int4.wgsl`); CPU twin:
//! `quant::generated::int4_matrix`.

use crate::gpu::matrix::GpuMatrix;
use crate::gpu::{Gpu, Op};
use crate::quant::generated::base_scale_bits;
use crate::quant::packed::Format;
use crate::{Error, Result};
use bytemuck::{Pod, Zeroable};

const SOURCE: &str = include_str!("../../../shaders/generate_int4.wgsl");
const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    row_words: u32,
    row_vec4s: u32,
    groups: u32,
    row0: u32,
    seed: u32,
    id: u32,
    d0_bits: u32,
    blocks_x: u32,
    _pad: [u32; 3],
}

/// The ops (one per chunk) filling `m`, a narrow-scale INT4 matrix (e.g. [`GpuMatrix::zeroed`]),
/// with matrix `id` of the model generated from `seed`.
pub fn ops(gpu: &Gpu, m: &GpuMatrix, seed: u32, id: u32) -> Result<Vec<Op>> {
    let Format::Int4 { group, wide_scales: false } = m.format else {
        return Err(Error::Gpu(format!("generated weights are INT4 with f16 scales, not {:?}", m.format)));
    };
    if (m.rows * m.cols / 8) as u64 > u64::from(u32::MAX) {
        return Err(Error::Gpu(format!("a generated [{}, {}] matrix: more than 2^32 words", m.rows, m.cols)));
    }
    let kernel = gpu.kernel("generate_int4", SOURCE, &[("WG", WG as f64)])?;
    let (row_words, groups) = (m.cols / 8, m.cols / group);
    let max_dim = gpu.limits.max_compute_workgroups_per_dimension;
    let mut ops = Vec::with_capacity(m.chunks.len());
    for chunk in &m.chunks {
        let items = (chunk.rows * (4 * m.row_vec4s).max(groups)) as u32;
        let blocks = items.div_ceil(WG).max(1);
        let blocks_x = blocks.min(max_dim);
        let params = Params {
            rows: chunk.rows as u32,
            row_words: row_words as u32,
            row_vec4s: m.row_vec4s as u32,
            groups: groups as u32,
            row0: chunk.row0 as u32,
            seed,
            id,
            d0_bits: u32::from(base_scale_bits(m.cols)),
            blocks_x,
            _pad: [0; 3],
        };
        let params = gpu.uniform("generate_int4 params", &params);
        let workgroups = [blocks_x, blocks.div_ceil(blocks_x), 1];
        ops.push(gpu.op("generate_int4", &kernel, &[&params, &chunk.qs, &chunk.scales], workgroups));
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::kernels::testing::gpu;
    use crate::gpu::matrix::MatrixLayout;
    use crate::quant::generated::int4_matrix;

    #[test]
    fn gpu_writes_the_twin_bits_across_chunks() {
        let gpu = gpu();
        // Group 16 with 16 (mod 32) columns pads every row; group 64 does not. The 8 KiB limit
        // splits the first matrices into several chunks (row0 > 0 exercises the global indices).
        for (rows, cols, group, limit) in [(301, 208, 16, 8 << 10), (70, 1024, 64, 8 << 10), (5, 64, 32, 1 << 20)] {
            let format = Format::Int4 { group, wide_scales: false };
            let layout = MatrixLayout::new(rows, cols, format, 1, limit).unwrap();
            let m = GpuMatrix::zeroed(gpu, &layout);
            crate::gpu::submit(gpu, &ops(gpu, &m, 11, 5).unwrap().iter().collect::<Vec<_>>());
            let want = int4_matrix(rows, cols, group, 11, 5).unwrap();
            let (rw, padded) = (cols / 8, 4 * m.row_vec4s);
            let (mut qs, mut scales) = (Vec::new(), Vec::new());
            for chunk in &m.chunks {
                let words: Vec<u32> = gpu.read(&chunk.qs).unwrap();
                for row in words.chunks_exact(padded) {
                    assert!(row[rw..].iter().all(|&w| w == 0), "padding words are zero");
                    qs.extend_from_slice(&row[..rw]);
                }
                scales.extend(gpu.read::<u32>(&chunk.scales).unwrap());
            }
            assert_eq!(m.chunks.len() > 1, limit < 1 << 20, "[{rows}, {cols}]: {} chunks", m.chunks.len());
            // Integer hashing and bit assembly on both sides: equal bit for bit.
            assert!(qs == want.qs, "[{rows}, {cols}] g{group}: values differ");
            assert!(scales == want.scales, "[{rows}, {cols}] g{group}: scales differ");
        }
    }
}
