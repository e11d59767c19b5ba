//! The streaming-read bound (`shaders/read_bandwidth.wgsl`): a kernel that only reads, the
//! bandwidth a weight-streaming kernel is compared against. CPU twin: the XOR of all words
//! (equal to the XOR of the kernel's outputs).

use crate::gpu::{Gpu, Op};
use crate::{Error, Result};
use bytemuck::{Pod, Zeroable};

const SOURCE: &str = include_str!("../../../shaders/read_bandwidth.wgsl");

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    vec4s: u32,
    per_wg: u32,
    _pad: [u32; 2],
}

/// Workgroups of an op reading `vec4s` vec4s, `per_wg` per workgroup.
pub fn workgroups(vec4s: u32, per_wg: u32) -> u32 {
    vec4s.div_ceil(per_wg).max(1)
}

/// An op reading `src` (`vec4s` vec4<u32>), each workgroup of `wg` invocations streaming
/// `per_wg` of them, into `out` (u32 `[workgroups(vec4s, per_wg) * wg]`).
pub fn op(gpu: &Gpu, src: &wgpu::Buffer, out: &wgpu::Buffer, vec4s: u32, per_wg: u32, wg: u32) -> Result<Op> {
    if wg == 0 || per_wg == 0 || !per_wg.is_multiple_of(4 * wg) {
        return Err(Error::Gpu(format!(
            "read_bandwidth: {per_wg} vec4s per workgroup are not whole trips of {wg} x 4"
        )));
    }
    let n = workgroups(vec4s, per_wg);
    if out.size() < u64::from(n * wg) * 4 || src.size() < u64::from(vec4s) * 16 {
        return Err(Error::Gpu("read_bandwidth: buffers smaller than the dispatch".into()));
    }
    let kernel = gpu.kernel("read_bandwidth", SOURCE, &[("WG", f64::from(wg))])?;
    let params = gpu.uniform("read_bandwidth params", &Params { vec4s, per_wg, _pad: [0; 2] });
    Ok(gpu.op("read_bandwidth", &kernel, &[&params, src, out], [n, 1, 1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::kernels::testing::gpu;

    #[test]
    fn every_word_is_read_once() {
        let gpu = gpu();
        // Lengths that end mid-trip and mid-workgroup, and one shorter than a workgroup's step.
        for (vec4s, per_wg, wg) in [(1000u32, 256u32, 64u32), (4099, 1024, 128), (3, 256, 64)] {
            let words: Vec<u32> = (0..4 * vec4s).map(|i| i.wrapping_mul(0x9E37_79B9) ^ (i >> 3)).collect();
            let src = gpu.storage("src", &words);
            let out = gpu.storage("out", &vec![0u32; (workgroups(vec4s, per_wg) * wg) as usize]);
            crate::gpu::submit(gpu, &[&op(gpu, &src, &out, vec4s, per_wg, wg).unwrap()]);
            let got = gpu.read::<u32>(&out).unwrap().iter().fold(0, |a, b| a ^ b);
            // A word read twice cancels, a word missed is absent: either changes the XOR.
            assert_eq!(got, words.iter().fold(0, |a, b| a ^ b), "{vec4s} vec4s");
        }
    }
}
