//! Token embeddings from a packed, possibly row-split table (`shaders/embed.wgsl`); CPU twin:
//! `ops::embed` over `PackedMatrix::dequantize`.

use crate::gpu::kernels::matmul::bits_constants;
use crate::gpu::matrix::GpuMatrix;
use crate::gpu::{Gpu, Op};
use crate::quant::packed::Format;
use crate::{Error, Result};
use bytemuck::{Pod, Zeroable};

const SOURCE: &str = include_str!("../../../shaders/embed.wgsl");
const WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    cols: u32,
    row0: u32,
    rows: u32,
    row_stride: u32,
    scale_stride: u32,
    group: u32,
    zero_beyond: u32,
    multiplier: f32,
}

/// The ops (one per chunk of `table`, run them all, in any order) writing `out[t, :] =
/// table[token_ids[t], :] * multiplier` for the step's `n_tokens` tokens: `token_ids` holds at
/// least `n_tokens` u32 (prompt ids from the host, or the id the sampler wrote in decode),
/// `out` is f32 `[T, table.cols]`. An id at or past `table.rows` gives a row of zeros. Built
/// for up to `max_tokens` tokens.
pub fn ops(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    token_ids: &wgpu::Buffer,
    table: &GpuMatrix,
    out: &wgpu::Buffer,
    max_tokens: u32,
    multiplier: f32,
) -> Result<Vec<Op>> {
    let (format, group) = match table.format {
        Format::F32 => (0, 1),
        Format::Int8 { group } => (1, group),
        Format::Int4 { group, wide_scales: false } => (2, group),
        Format::Int4 { group, wide_scales: true } => (3, group),
        Format::Bits { .. } => (4, 32),
    };
    let mut constants = vec![("WG", WG as f64), ("FORMAT", format as f64)];
    constants.extend(bits_constants(table.format));
    let kernel = gpu.kernel("embed", SOURCE, &constants)?;
    let end = table.chunks.iter().map(|c| c.row0 + c.rows).max().unwrap_or(0);
    if end != table.rows {
        return Err(Error::Gpu(format!("embed: the chunks of a table of {} rows end at row {end}", table.rows)));
    }
    let mut ops = Vec::with_capacity(table.chunks.len());
    for chunk in &table.chunks {
        let params = Params {
            cols: table.cols as u32,
            row0: chunk.row0 as u32,
            rows: chunk.rows as u32,
            row_stride: 4 * table.row_vec4s as u32,
            scale_stride: table.scale_stride as u32,
            group: group as u32,
            zero_beyond: u32::from(chunk.row0 + chunk.rows == end),
            multiplier,
        };
        let params = gpu.uniform("embed params", &params);
        let buffers = [&params, step, token_ids, &chunk.qs, &chunk.scales, out];
        ops.push(gpu.op("embed", &kernel, &buffers, [max_tokens, 1, 1]));
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::kernels::testing::{bits_dtype, gpu, random, random_ggml, BITS_TYPES};
    use crate::gpu::step::Step;
    use crate::ops::embed;
    use crate::quant::packed::{pack_f16_pair, PackedMatrix};
    use crate::quant::repack::bits_format;
    use crate::tensor::ggml::block_info;
    use half::f16;

    /// A `[rows, cols]` table in `format` with random values, scales and offsets: f16 pairs,
    /// or f32 scales of at most 17 significant bits for wide Int4 (so `d * q` is exact, as the
    /// format promises) and full f32 scales for Int8.
    fn table(rows: usize, cols: usize, format: Format, seed: u64) -> PackedMatrix {
        let bits = |n: usize, s: u64| -> Vec<u32> {
            (0..n as u64).map(|i| (crate::sampler::uniform(s, i) * 65536.0) as u32).collect::<Vec<_>>()
        };
        let word = |n: usize, s: u64| -> Vec<u32> {
            bits(n, s).iter().zip(bits(n, s + 99)).map(|(&lo, hi)| lo | (hi << 16)).collect()
        };
        let r = |n: usize, s: u64| random(n, s);
        match format {
            Format::F32 => PackedMatrix::from_f32(rows, cols, &r(rows * cols, seed)),
            Format::Int8 { group } => {
                let scales = r(rows * cols / group, seed + 1).iter().map(|v| (v * 0.01).to_bits()).collect();
                PackedMatrix::new(rows, cols, format, word(rows * cols / 4, seed), scales).unwrap()
            }
            Format::Int4 { group, wide_scales } => {
                let (d, m) = (r(rows * cols / group, seed + 1), r(rows * cols / group, seed + 2));
                let scales = d
                    .iter()
                    .zip(&m)
                    .flat_map(|(&d, &m)| match wide_scales {
                        false => vec![pack_f16_pair(f16::from_f32(d * 0.1), f16::from_f32(m))],
                        true => vec![f32::from_bits((d * 0.1).to_bits() & !0x7F).to_bits(), m.to_bits()],
                    })
                    .collect();
                PackedMatrix::new(rows, cols, format, word(rows * cols / 8, seed), scales).unwrap()
            }
            Format::Bits { .. } => random_ggml(bits_dtype(format), rows, cols, seed),
        }
    }

    #[test]
    fn matches_cpu_twin_for_every_format_and_split() {
        let gpu = gpu();
        let (vocab, max_tokens) = (37usize, 40usize);
        // cols: F32 rows of 50 (padded to 52 words on the GPU); Int4 rows of 48 (6 words,
        // padded to 8) and 96; Int8 rows of 48 in groups of 16.
        let cases = [
            (Format::F32, 50),
            (Format::Int8 { group: 16 }, 48),
            (Format::Int8 { group: 32 }, 96),
            (Format::Int4 { group: 16, wide_scales: false }, 48),
            (Format::Int4 { group: 32, wide_scales: false }, 96),
            (Format::Int4 { group: 32, wide_scales: true }, 96),
        ];
        // Bits: every layout, 32-wide ones in rows of 96 (15 words at 5 bits, padded to 16).
        let bits = BITS_TYPES.map(|t| {
            let format = bits_format(t).unwrap();
            (format, if block_info(t).unwrap().0 == 32 { 96 } else { 512 })
        });
        for (n, &(format, cols)) in cases.iter().chain(&bits).enumerate() {
            let m = table(vocab, cols, format, 10 * n as u64);
            let dense = m.dequantize();
            // Token sets: one token; many, with repeats, every chunk, an id just past the table
            // and u32::MAX.
            let many: Vec<u32> = (0..33u32).map(|i| (i * 7 + 3) % 41).chain([36, 37, u32::MAX, 0, 18]).collect();
            for ids in [vec![20u32], many] {
                // Whole, and split in chunks of about 10 rows.
                for limit in [u64::MAX, (10 * 4 * 4 * m.row_words().div_ceil(4)) as u64] {
                    let gm = GpuMatrix::upload_with_limit(gpu, &m, 1, limit.min(gpu.max_binding_bytes())).unwrap();
                    let step = Step::new(gpu);
                    step.set(gpu, ids.len() as u32, 5);
                    let mut id_buf = ids.clone();
                    id_buf.resize(max_tokens, 1);
                    let idb = gpu.storage("ids", &id_buf);
                    let out = gpu.storage("out", &vec![9.0f32; max_tokens * cols]);
                    let ops = ops(gpu, &step.buffer, &idb, &gm, &out, max_tokens as u32, 0.37).unwrap();
                    crate::gpu::submit(gpu, &ops.iter().collect::<Vec<_>>());
                    let got: Vec<f32> = gpu.read(&out).unwrap();
                    let want = embed(&dense, cols, &ids, 0.37);
                    let case = format!("{format:?} cols={cols} T={} chunks={}", ids.len(), gm.chunks.len());
                    // Dequantization then one multiply, each rounded as the twin rounds them
                    // (d * q exact, so a fused d * q + m is the same): bit for bit.
                    assert_eq!(got[..want.len()], want[..], "{case}");
                    assert!(got[want.len()..].iter().all(|&v| v == 9.0), "{case}: surplus tokens written");
                    if limit != u64::MAX {
                        assert!(gm.chunks.len() >= 3, "{case}: the split did not split");
                    }
                }
            }
        }
    }
}
