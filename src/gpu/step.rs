//! Per-step values that kernels read from the GPU, so ops built once serve every step.

use bytemuck::{Pod, Zeroable};

/// The `Step` uniform of every kernel that depends on the chunk being processed.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct StepParams {
    /// Tokens in this chunk (1 in decode).
    pub n_tokens: u32,
    /// Position of the chunk's first token; the cache holds `position` earlier ones.
    pub position: u32,
    pub _pad: [u32; 2],
}

/// The step uniform buffer; rewritten (a queued copy, no allocation) before each submission.
pub struct Step {
    pub buffer: wgpu::Buffer,
}

impl Step {
    pub fn new(gpu: &super::Gpu) -> Self {
        Step { buffer: gpu.uniform("step", &StepParams::default()) }
    }

    pub fn set(&self, gpu: &super::Gpu, n_tokens: u32, position: u32) {
        gpu.queue.write_buffer(&self.buffer, 0, bytemuck::bytes_of(&StepParams { n_tokens, position, _pad: [0; 2] }));
    }
}
