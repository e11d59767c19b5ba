//! One typed wrapper per WGSL kernel in `shaders/`. Each builds [`Op`](super::Op)s with its
//! buffers bound, and each has a test against its CPU twin in `crate::ops`.

pub mod attention;
pub mod embed;
pub mod generate_int4;
pub mod matmul;
pub mod mla_rope;
pub mod moe_combine;
pub mod moe_group;
pub mod moe_route;
pub mod read_bandwidth;
pub mod rms_norm;
pub mod rope;
pub mod sample;
pub mod sample_argmax;
pub mod swiglu;

#[cfg(test)]
pub(crate) mod testing;

use super::Gpu;

/// Columns `offset ..` of the f32 rows of a `[T, stride]` buffer: how a kernel finds q, k or v
/// inside the fused q|k|v projection (or a whole `[T, width]` buffer: offset 0, stride width).
#[derive(Clone, Copy)]
pub struct Columns<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: u32,
    pub stride: u32,
}

/// What the KV cache stores: f16 halves its size and the bytes attention reads per position
/// (values rounded to nearest, as llama.cpp's default cache); f32 keeps the reference's exact
/// arithmetic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(all(feature = "cli", not(target_arch = "wasm32")), derive(clap::ValueEnum))]
pub enum KvFormat {
    #[default]
    F16,
    F32,
}

impl KvFormat {
    pub fn bytes_per_value(self) -> u64 {
        match self {
            KvFormat::F16 => 2,
            KvFormat::F32 => 4,
        }
    }

    /// The kernels' `F16` override.
    pub(crate) fn f16_override(self) -> (&'static str, f64) {
        ("F16", f64::from(u8::from(self == KvFormat::F16)))
    }
}

/// Workgroups `[x, y, 1]` covering `elements` threads of `wg` each, one per thread, on a 2-D
/// grid (x at most the device's per-dimension limit) for kernels that index
/// `(wg.y * num_workgroups.x + wg.x) * WG + lid`.
pub(crate) fn grid_2d(gpu: &Gpu, elements: u64, wg: u32) -> [u32; 3] {
    let groups = elements.div_ceil(u64::from(wg)).max(1);
    let x = groups.min(u64::from(gpu.limits.max_compute_workgroups_per_dimension));
    [x as u32, groups.div_ceil(x) as u32, 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_covers_more_than_one_row_of_workgroups() {
        let gpu = testing::gpu();
        let max = gpu.limits.max_compute_workgroups_per_dimension as u64;
        let [x, y, _] = grid_2d(gpu, max * 256 + 1, 256);
        assert_eq!((x as u64, y), (max, 2));
        assert_eq!(grid_2d(gpu, 0, 256), [1, 1, 1]);
    }
}
