//! The sampler's first pass (`shaders/sample_argmax.wgsl`): the argmax of each block of
//! [`BLOCK`] logits, across many workgroups. CPU twin: [`block_argmax`]. `sample::ops` pairs it
//! with `shaders/sample.wgsl`.

use crate::gpu::{Gpu, Op};
use crate::{Error, Result};
use bytemuck::{Pod, Zeroable};

const SOURCE: &str = include_str!("../../../shaders/sample_argmax.wgsl");
/// Logits per workgroup (the kernel's `BLOCK`).
pub const BLOCK: u32 = 4096;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    vocab: u32,
    last_row: u32,
    _pad: [u32; 2],
}

/// Blocks of a vocabulary of `vocab`.
pub fn blocks(vocab: u32) -> u32 {
    vocab.div_ceil(BLOCK)
}

/// An op writing, for each block b of `logits` (f32 `[vocab]`; with `last_row`, the step's
/// last row of f32 `[n_tokens, vocab]`), `partials[2b]` = the bits of its largest logit and
/// `partials[2b + 1]` = that logit's lowest id (u32 `[2 * blocks(vocab)]`).
pub fn op(
    gpu: &Gpu,
    step: &wgpu::Buffer,
    logits: &wgpu::Buffer,
    partials: &wgpu::Buffer,
    vocab: u32,
    last_row: bool,
) -> Result<Op> {
    if vocab == 0 {
        return Err(Error::Gpu("sample_argmax: an empty vocabulary".into()));
    }
    let kernel = gpu.kernel("sample_argmax", SOURCE, &[])?;
    let params = gpu.uniform("sample_argmax params", &Params { vocab, last_row: last_row as u32, _pad: [0; 2] });
    Ok(gpu.op("sample_argmax", &kernel, &[&params, step, logits, partials], [blocks(vocab), 1, 1]))
}

/// CPU twin: `(max, lowest id of it)` per block, as the kernel packs them.
pub fn block_argmax(logits: &[f32]) -> Vec<u32> {
    logits
        .chunks(BLOCK as usize)
        .enumerate()
        .flat_map(|(b, chunk)| {
            let i = crate::sampler::argmax(chunk);
            [chunk[i as usize].to_bits(), b as u32 * BLOCK + i]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::kernels::testing::{gpu, random};
    use crate::gpu::step::Step;

    #[test]
    fn matches_cpu_twin() {
        let gpu = gpu();
        for vocab in [1usize, 255, 4096, 4097, 49152, 151_936] {
            let mut logits = random(vocab, vocab as u64);
            // Ties inside a block and across blocks: the lower id wins.
            if vocab > 5000 {
                logits[4100] = 3.0;
                logits[4200] = 3.0;
                logits[vocab - 1] = 3.0;
            }
            let tokens = 2;
            let mut rows = random(vocab, 1);
            rows.extend(&logits);
            let step = Step::new(gpu);
            step.set(gpu, tokens, 0);
            let (single, both) = (gpu.storage("logits", &logits), gpu.storage("rows", &rows));
            let want = block_argmax(&logits);
            for (buffer, last_row) in [(&single, false), (&both, true)] {
                let partials = gpu.storage_zeroed("partials", u64::from(blocks(vocab as u32)) * 8);
                let op = op(gpu, &step.buffer, buffer, &partials, vocab as u32, last_row).unwrap();
                crate::gpu::submit(gpu, &[&op]);
                assert_eq!(gpu.read::<u32>(&partials).unwrap(), want, "vocab {vocab} last_row {last_row}");
            }
        }
    }
}
